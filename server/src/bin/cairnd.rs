//! cairnd: the cairn database server.
//!
//! `cairnd --dbpath DIR [--port 27027] [--bind_ip 127.0.0.1] [--replSet NAME] [--config FILE]`.
//! SIGTERM or SIGINT shuts down gracefully: running operations are interrupted, a checkpoint is
//! taken, the process exits 0. Exit codes as mongod's where they apply: 2 bad options, 48 the
//! port is in use, 100 the data files cannot be used (in use by another process, damaged).

use cairn_server::{Arguments, LogFormat, Node, NodeConfig};

/// mimalloc: a command allocates many small BSON values, and glibc's malloc spent a quarter of
/// a point read's time in a profile (`perf record` on the server benchmark's round trips).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;

fn init_logging(config: &NodeConfig) {
    let default_level = match config.verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    use std::io::IsTerminal;
    // Colour only on a terminal: piped and redirected logs stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
        _ = terminate.recv() => tracing::info!("received SIGTERM"),
    }
}

fn main() {
    let arguments = Arguments::parse();
    let config = match NodeConfig::from_arguments(&arguments) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("cairnd: {error}");
            std::process::exit(2);
        }
    };
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairnd-main")
        .build()
        .expect("tokio runtime");
    let node = match Node::open(config.clone()) {
        Ok(node) => node,
        Err(error) => {
            tracing::error!(%error, "cannot open the data files");
            eprintln!("cairnd: cannot start: {error}");
            std::process::exit(100);
        }
    };
    let listeners = match runtime.block_on(cairn_server::bind(&config)) {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!(%error, "cannot listen");
            eprintln!("cairnd: {error}");
            let _ = node.shutdown();
            std::process::exit(48);
        }
    };
    let served = runtime.block_on(cairn_server::serve(
        node.clone(),
        listeners,
        shutdown_signal(),
    ));
    if let Err(error) = served {
        tracing::error!(%error, "serving failed");
    }
    match node.shutdown() {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            tracing::error!(%error, "shutdown failed");
            std::process::exit(1);
        }
    }
}
