//! `cairn-bench <suite> [--quick] [--json FILE]`: contention benchmarks that measure cairn side
//! by side with peers in the same run and print one JSON object per measurement.

/// mimalloc, as cairnd: commands allocate many small BSON values (the node runs in this
/// process).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod locking;
#[cfg(feature = "peers")]
mod peers;
mod platform;
#[cfg(feature = "postgres")]
mod postgres;
mod query;
mod report;
mod roundtrip;
mod server;
mod storage;
mod ycsb;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "cairn-bench", about = "cairn's contention benchmarks")]
struct Arguments {
    /// The suite to run.
    suite: String,
    /// A short run (seconds instead of minutes), for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Also write the JSON lines to this file.
    #[arg(long)]
    json: Option<String>,
    /// Run only workloads whose name contains this (or one of these, separated by commas).
    #[arg(long)]
    workload: Option<String>,
    /// Run only systems whose name contains this.
    #[arg(long)]
    system: Option<String>,
    /// The server suite's transports to cairn: grpc (cairn-driver), wire (MongoDB's wire
    /// protocol through the official `mongodb` driver) or both.
    #[arg(long, default_value = "both", value_parser = ["grpc", "wire", "both"])]
    protocol: String,
    /// Run only measurements with one of these client or writer thread counts (separated by
    /// commas), e.g. `--threads 16` (the server suite).
    #[arg(long, value_delimiter = ',')]
    threads: Option<Vec<usize>>,
    /// The server suite: the node's idle poll (`net.idlePollMicros`; 0 turns it off). By
    /// default cairnd's.
    #[arg(long)]
    idle_poll_micros: Option<u64>,
}

/// What every suite receives.
pub struct Settings {
    pub quick: bool,
    pub workload: Option<String>,
    pub system: Option<String>,
    /// `grpc`, `wire` or `both` (the server suite).
    pub protocol: String,
    /// Thread counts to run (all when `None`).
    pub threads: Option<Vec<usize>>,
    /// The node's idle poll in the server suite (cairnd's default when `None`).
    pub idle_poll_micros: Option<u64>,
}

impl Settings {
    /// Whether a workload passes the `--workload` filter.
    pub fn wants_workload(&self, name: &str) -> bool {
        self.workload
            .as_deref()
            .is_none_or(|filter| filter.split(',').any(|part| name.contains(part)))
    }

    /// Whether a system passes the `--system` filter.
    pub fn wants_system(&self, name: &str) -> bool {
        self.system
            .as_deref()
            .is_none_or(|filter| name.contains(filter))
    }

    /// Whether a thread count passes the `--threads` filter.
    pub fn wants_threads(&self, threads: usize) -> bool {
        self.threads
            .as_ref()
            .is_none_or(|wanted| wanted.contains(&threads))
    }
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let mut reporter = report::Reporter::new(arguments.json.as_deref())?;
    let settings = Settings {
        quick: arguments.quick,
        workload: arguments.workload,
        system: arguments.system,
        protocol: arguments.protocol,
        threads: arguments.threads,
        idle_poll_micros: arguments.idle_poll_micros,
    };
    match arguments.suite.as_str() {
        "storage" => storage::run(&settings, &mut reporter),
        "locking" => locking::run(&settings, &mut reporter),
        "query" => query::run(&settings, &mut reporter),
        "server" => server::run(&settings, &mut reporter),
        "platform" => platform::run(&settings, &mut reporter),
        other => anyhow::bail!("unknown suite '{other}'"),
    }
}
