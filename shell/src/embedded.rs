//! The embedded default deployment: what `cairn` without `--host` connects to.
//!
//! DESIGN.md: `cairn` with no `--host` starts an embedded default in the same process (for now
//! a single node on a temporary dbpath; the replica-set issue makes it three members). The node
//! lives in the server crate (`cairn-server`), which the shell does not depend on yet.
//! [`start_default`] is the single hook: it must start the node(s) on the given tokio runtime
//! and return the `host:port` to connect to, plus a guard that keeps them running (and removes a
//! temporary dbpath) until it is dropped. Until the server crate is wired in here, it returns
//! [`EmbeddedError::Unavailable`] and `cairn` exits with a clear message.

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

/// Starts the embedded default deployment and returns the address to connect to.
pub fn start_default(
    _runtime: &tokio::runtime::Handle,
    _options: &EmbeddedOptions,
) -> Result<EmbeddedDeployment, EmbeddedError> {
    Err(EmbeddedError::Unavailable(
        "this build of cairn has no embedded server yet (the server crate is not wired in); \
         start cairnd and connect with `cairn --host HOST:PORT`"
            .to_string(),
    ))
}
