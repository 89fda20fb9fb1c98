//! The embedded default deployment: what `cairn` without `--host` connects to.
//!
//! DESIGN.md: `cairn` with no `--host` starts an embedded default in the same process (for now
//! a single node; the replica-set issue makes it three members). [`start_default`] starts a
//! [`cairn_server::EmbeddedNode`] on the shell's tokio runtime and returns the `host:port` to
//! connect to, plus a guard that keeps the node running until it is dropped.
//!
//! - Data: a temporary directory (removed when the node stops) unless `--dbpath` names one.
//! - Address: loopback only. The default port (27027) when it is free, so that other tools
//!   (`cairn --host localhost`, mongosh) reach the shell's node as they would a cairnd; any free
//!   port otherwise.
//! - Shutdown: dropping the guard stops serving and shuts the node down cleanly (operations
//!   interrupted, final checkpoint), blocking until it is done. The guard must be dropped on a
//!   thread that is not a worker of the runtime (the shell drops it on its main thread).

use cairn_server::{EmbeddedNode, NodeConfig};
use std::path::PathBuf;

/// How the embedded default is started.
#[derive(Clone, Debug, Default)]
pub struct EmbeddedOptions {
    /// Data directory; a temporary one when `None`.
    pub dbpath: Option<PathBuf>,
}

/// A running embedded deployment.
pub struct EmbeddedDeployment {
    /// `host:port` of the embedded node.
    pub address: String,
    /// Keeps the node(s) alive; dropping it shuts them down.
    pub guard: Box<dyn std::any::Any>,
}

/// Why the embedded default could not start.
#[derive(Debug)]
pub enum EmbeddedError {
    /// This build has no embedded server.
    Unavailable(String),
    /// The node failed to start.
    Failed(String),
}

impl std::fmt::Display for EmbeddedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmbeddedError::Unavailable(message) | EmbeddedError::Failed(message) => {
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for EmbeddedError {}

/// The loopback address the embedded node listens on.
const EMBEDDED_BIND_IP: &str = "127.0.0.1";

/// Keeps an embedded node running; shuts it down when dropped.
struct NodeGuard {
    node: Option<EmbeddedNode>,
    runtime: tokio::runtime::Handle,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            if let Err(error) = self.runtime.block_on(node.stop()) {
                eprintln!("cairn: the embedded node did not shut down cleanly: {error:#}");
            }
        }
    }
}

/// The default port if nothing listens on it on loopback, else 0 (any free port).
fn embedded_port() -> u16 {
    let default = cairn_server::config::DEFAULT_PORT;
    match std::net::TcpListener::bind((EMBEDDED_BIND_IP, default)) {
        Ok(_probe) => default,
        Err(_) => 0,
    }
}

/// Starts the embedded default deployment and returns the address to connect to.
pub fn start_default(
    runtime: &tokio::runtime::Handle,
    options: &EmbeddedOptions,
) -> Result<EmbeddedDeployment, EmbeddedError> {
    let temporary = options.dbpath.is_none();
    let mut config = NodeConfig {
        port: embedded_port(),
        bind_ip: vec![EMBEDDED_BIND_IP.to_owned()],
        ..NodeConfig::default()
    };
    if let Some(dbpath) = &options.dbpath {
        config.dbpath = dbpath.clone();
    }
    let started = runtime.block_on(async {
        match EmbeddedNode::start(config.clone(), temporary).await {
            // The default port was taken between the probe and the bind: any free port will do.
            // (Only with a temporary dbpath: a given one may still be held by the failed try.)
            Err(error)
                if temporary && config.port != 0 && error.to_string().contains("cannot listen") =>
            {
                config.port = 0;
                EmbeddedNode::start(config, temporary).await
            }
            other => other,
        }
    });
    let node = started.map_err(|error| EmbeddedError::Failed(format!("{error:#}")))?;
    assert!(
        node.address.ip().is_loopback(),
        "the embedded node listens on loopback only"
    );
    Ok(EmbeddedDeployment {
        address: node.address.to_string(),
        guard: Box::new(NodeGuard {
            node: Some(node),
            runtime: runtime.clone(),
        }),
    })
}
