//! cairnd's settings: command-line flags, a TOML config file, defaults.
//!
//! Flags (DESIGN.md): `--dbpath DIR`, `--port N` (27027), `--bind_ip ADDR` (127.0.0.1),
//! `--replSet NAME`, `--config FILE`; every setting is also in the config file, laid out as
//! MongoDB's YAML configuration is (`storage.dbPath`, `net.port`, `net.bindIp`,
//! `replication.replSetName`, `systemLog.format`, ...). A flag given on the command line wins
//! over the file, which wins over the default.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The default port (DESIGN.md).
pub const DEFAULT_PORT: u16 = 27027;
/// The default bind address.
pub const DEFAULT_BIND_IP: &str = "127.0.0.1";
/// The default dbpath, as mongod's.
pub const DEFAULT_DBPATH: &str = "/data/db";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub dbpath: PathBuf,
    pub port: u16,
    /// Addresses to listen on.
    pub bind_ip: Vec<String>,
    pub repl_set: Option<String>,
    pub log_format: LogFormat,
    /// 0 = info, 1 = debug, 2+ = trace.
    pub verbosity: u8,
    /// `j: false` writes are on disk within this interval.
    pub commit_interval_ms: u64,
    /// Checkpoint interval (MongoDB's syncdelay / storage.syncPeriodSecs).
    pub checkpoint_interval_secs: u64,
    /// How long history stays readable (minSnapshotHistoryWindowInSeconds).
    pub history_window_secs: u32,
    /// Oplog cap; `None`: MongoDB's default (5% of free disk, 990 MB to 50 GB).
    pub oplog_size_mb: Option<u64>,
    pub read_tickets: u32,
    pub write_tickets: u32,
    /// Idle cursors are closed after this long (cursorTimeoutMillis).
    pub cursor_timeout_ms: u64,
    /// The most connections served at once.
    pub connections_max: u32,
    /// Verify every page checksum of the data file when starting.
    pub verify_checksums_on_open: bool,
    /// Threads that serve connections (`network`); 0: one per core.
    pub network_threads: usize,
    /// How long the network threads poll for work after a request before they sleep
    /// (`net.idlePollMicros`; 0: never poll). See `network`.
    pub idle_poll_micros: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            dbpath: PathBuf::from(DEFAULT_DBPATH),
            port: DEFAULT_PORT,
            bind_ip: vec![DEFAULT_BIND_IP.to_owned()],
            repl_set: None,
            log_format: LogFormat::Text,
            verbosity: 0,
            commit_interval_ms: 100,
            checkpoint_interval_secs: 60,
            history_window_secs: 300,
            oplog_size_mb: None,
            read_tickets: 128,
            write_tickets: 128,
            cursor_timeout_ms: 10 * 60 * 1000,
            connections_max: 1_000_000,
            verify_checksums_on_open: true,
            network_threads: 0,
            idle_poll_micros: crate::network::IDLE_POLL_DEFAULT_MICROS,
        }
    }
}

/// The command line of cairnd.
#[derive(clap::Parser, Debug, Default)]
#[command(name = "cairnd", version, about = "cairn's database server")]
pub struct Arguments {
    /// Directory for the data files.
    #[arg(long = "dbpath")]
    pub dbpath: Option<PathBuf>,
    /// Port to listen on (gRPC).
    #[arg(long)]
    pub port: Option<u16>,
    /// Comma-separated addresses to listen on.
    #[arg(long = "bind_ip")]
    pub bind_ip: Option<String>,
    /// Replica set name.
    #[arg(long = "replSet")]
    pub repl_set: Option<String>,
    /// A TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long = "logFormat", value_enum)]
    pub log_format: Option<LogFormat>,
    /// More verbose logging (-v, -vv).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileConfig {
    #[serde(default)]
    storage: FileStorage,
    #[serde(default)]
    net: FileNet,
    #[serde(default)]
    replication: FileReplication,
    #[serde(default)]
    system_log: FileSystemLog,
    #[serde(default)]
    set_parameter: FileParameters,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileStorage {
    db_path: Option<PathBuf>,
    commit_interval_ms: Option<u64>,
    sync_period_secs: Option<u64>,
    history_window_secs: Option<u32>,
    oplog_size_mb: Option<u64>,
    verify_checksums_on_open: Option<bool>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileNet {
    port: Option<u16>,
    bind_ip: Option<String>,
    max_incoming_connections: Option<u32>,
    idle_poll_micros: Option<u64>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileReplication {
    repl_set_name: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileSystemLog {
    format: Option<LogFormat>,
    verbosity: Option<u8>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileParameters {
    #[serde(rename = "cursorTimeoutMillis")]
    cursor_timeout_millis: Option<u64>,
    #[serde(rename = "storageEngineConcurrentReadTransactions")]
    read_tickets: Option<u32>,
    #[serde(rename = "storageEngineConcurrentWriteTransactions")]
    write_tickets: Option<u32>,
}

fn split_bind_ip(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .map(str::to_owned)
        .collect()
}

impl NodeConfig {
    /// Builds the configuration from the command line and, when given, its config file.
    pub fn from_arguments(arguments: &Arguments) -> anyhow::Result<NodeConfig> {
        let mut config = NodeConfig::default();
        if let Some(path) = &arguments.config {
            config.apply_file(path)?;
        }
        if let Some(dbpath) = &arguments.dbpath {
            config.dbpath = dbpath.clone();
        }
        if let Some(port) = arguments.port {
            config.port = port;
        }
        if let Some(bind_ip) = &arguments.bind_ip {
            config.bind_ip = split_bind_ip(bind_ip);
        }
        if let Some(name) = &arguments.repl_set {
            config.repl_set = Some(name.clone());
        }
        if let Some(format) = arguments.log_format {
            config.log_format = format;
        }
        if arguments.verbose > 0 {
            config.verbosity = arguments.verbose;
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            anyhow::anyhow!("cannot read the config file {}: {error}", path.display())
        })?;
        let file: FileConfig = toml::from_str(&text)
            .map_err(|error| anyhow::anyhow!("bad config file {}: {error}", path.display()))?;
        let FileConfig {
            storage,
            net,
            replication,
            system_log,
            set_parameter,
        } = file;
        if let Some(dbpath) = storage.db_path {
            self.dbpath = dbpath;
        }
        self.commit_interval_ms = storage
            .commit_interval_ms
            .unwrap_or(self.commit_interval_ms);
        self.checkpoint_interval_secs = storage
            .sync_period_secs
            .unwrap_or(self.checkpoint_interval_secs);
        self.history_window_secs = storage
            .history_window_secs
            .unwrap_or(self.history_window_secs);
        self.oplog_size_mb = storage.oplog_size_mb.or(self.oplog_size_mb);
        self.verify_checksums_on_open = storage
            .verify_checksums_on_open
            .unwrap_or(self.verify_checksums_on_open);
        self.port = net.port.unwrap_or(self.port);
        if let Some(bind_ip) = net.bind_ip {
            self.bind_ip = split_bind_ip(&bind_ip);
        }
        self.connections_max = net.max_incoming_connections.unwrap_or(self.connections_max);
        self.idle_poll_micros = net.idle_poll_micros.unwrap_or(self.idle_poll_micros);
        self.repl_set = replication.repl_set_name.or(self.repl_set.take());
        self.log_format = system_log.format.unwrap_or(self.log_format);
        self.verbosity = system_log.verbosity.unwrap_or(self.verbosity);
        self.cursor_timeout_ms = set_parameter
            .cursor_timeout_millis
            .unwrap_or(self.cursor_timeout_ms);
        self.read_tickets = set_parameter.read_tickets.unwrap_or(self.read_tickets);
        self.write_tickets = set_parameter.write_tickets.unwrap_or(self.write_tickets);
        Ok(())
    }

    /// Checks settings that would otherwise fail later and less clearly.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.bind_ip.is_empty(),
            "--bind_ip needs at least one address"
        );
        anyhow::ensure!(
            self.commit_interval_ms >= 1 && self.commit_interval_ms <= 500,
            "commitIntervalMs must be between 1 and 500"
        );
        anyhow::ensure!(
            self.read_tickets > 0 && self.write_tickets > 0,
            "ticket counts must be positive"
        );
        anyhow::ensure!(
            self.connections_max > 0,
            "maxIncomingConnections must be positive"
        );
        anyhow::ensure!(
            self.idle_poll_micros <= crate::network::IDLE_POLL_MAX_MICROS,
            "idlePollMicros must be between 0 and {}",
            crate::network::IDLE_POLL_MAX_MICROS
        );
        Ok(())
    }

    /// The storage engine settings this node runs with.
    pub fn engine_config(&self) -> cairn_storage::EngineConfig {
        cairn_storage::EngineConfig {
            history_window_secs: self.history_window_secs,
            commit_interval_ms: self.commit_interval_ms,
            checkpoint_interval_secs: self.checkpoint_interval_secs,
            oplog_size_bytes: self.oplog_size_mb.map(|megabytes| megabytes * 1024 * 1024),
            verify_checksums_on_open: self.verify_checksums_on_open,
            ..cairn_storage::EngineConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cairnd.toml");
        std::fs::write(
            &file,
            "[storage]\ndbPath = \"/srv/cairn\"\ncommitIntervalMs = 50\n[net]\nport = 30000\nbindIp = \"127.0.0.1, ::1\"\n[replication]\nreplSetName = \"rs0\"\n[systemLog]\nformat = \"json\"\n",
        )
        .unwrap();
        let arguments = Arguments::parse_from([
            "cairnd",
            "--config",
            file.to_str().unwrap(),
            "--port",
            "31000",
        ]);
        let config = NodeConfig::from_arguments(&arguments).unwrap();
        assert_eq!(config.dbpath, PathBuf::from("/srv/cairn"));
        assert_eq!(config.port, 31000);
        assert_eq!(
            config.bind_ip,
            vec!["127.0.0.1".to_owned(), "::1".to_owned()]
        );
        assert_eq!(config.repl_set.as_deref(), Some("rs0"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.commit_interval_ms, 50);
        let defaults = NodeConfig::from_arguments(&Arguments::parse_from(["cairnd"])).unwrap();
        assert_eq!(defaults.port, DEFAULT_PORT);
        assert_eq!(
            defaults.idle_poll_micros,
            crate::network::IDLE_POLL_DEFAULT_MICROS
        );
    }

    #[test]
    fn the_idle_poll_is_set_in_the_file_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cairnd.toml");
        let parse = |text: &str| {
            std::fs::write(&file, text).unwrap();
            let arguments = Arguments::parse_from(["cairnd", "--config", file.to_str().unwrap()]);
            NodeConfig::from_arguments(&arguments)
        };
        assert_eq!(
            parse("[net]\nidlePollMicros = 0\n")
                .unwrap()
                .idle_poll_micros,
            0
        );
        assert_eq!(
            parse("[net]\nidlePollMicros = 250\n")
                .unwrap()
                .idle_poll_micros,
            250
        );
        let error = parse("[net]\nidlePollMicros = 10001\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("idlePollMicros"), "{error}");
    }

    #[test]
    fn unknown_settings_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[net]\nprot = 1\n").unwrap();
        let arguments = Arguments::parse_from(["cairnd", "--config", file.to_str().unwrap()]);
        let error = NodeConfig::from_arguments(&arguments)
            .unwrap_err()
            .to_string();
        assert!(error.contains("prot"), "{error}");
    }
}
