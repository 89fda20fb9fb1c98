//! The node: one cairnd's storage engine, lock manager, cursors and operation registry, and the
//! entry point every transport calls, [`Node::run_command`].
//!
//! Invariants: every command runs under an [`crate::opctx::OpCtx`] registered for currentOp and
//! killOp from before it takes its first lock until after it releases its last; a failing or
//! panicking command becomes an `{ok: 0}` reply and the node keeps serving.

use crate::commands;
use crate::config::NodeConfig;
use crate::cursors::CursorManager;
use crate::metrics::Metrics;
use crate::opctx::OpInfo;
use bson::Document;
use cairn_locking::{LockManager, LockManagerConfig};
use cairn_storage::{Backend, Engine};
use cairn_types::{Clock, Error, ErrorCode, SystemClock};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The cairn version this build reports (buildInfo).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The MongoDB release whose behaviour cairn implements (buildInfo.version, wire versions).
pub const MONGODB_COMPATIBLE_VERSION: &str = "8.0.0";
/// Wire protocol versions (hello.minWireVersion / maxWireVersion) of MongoDB 8.0.
pub const MIN_WIRE_VERSION: i32 = 0;
pub const MAX_WIRE_VERSION: i32 = 25;

/// Who sent a command.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    /// Per transport connection; 0 for in-process callers.
    pub connection_id: u64,
    /// `host:port` of the peer.
    pub remote: String,
    /// The `client` document of the connection's handshake (hello), if any.
    pub metadata: Option<Document>,
    /// Where the transport learns the opid of the running command.
    pub op_slot: Option<Arc<crate::opctx::OpSlot>>,
}

impl ClientInfo {
    /// `conn<id>`, as MongoDB names clients in currentOp and the log.
    pub fn desc(&self) -> String {
        format!("conn{}", self.connection_id)
    }
}

/// Shared state of a node.
pub struct NodeInner {
    pub config: NodeConfig,
    pub engine: Engine,
    pub locks: LockManager,
    pub cursors: CursorManager,
    pub collections: crate::exec::collection::CollectionCache,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
    pub shutting_down: AtomicBool,
    /// Live operations by opid (the lock manager's opid).
    pub operations: Mutex<BTreeMap<u64, Arc<OpInfo>>>,
    pub connections_current: AtomicU64,
    pub connections_total: AtomicU64,
    /// Client metadata by connection, from the handshake.
    pub client_metadata: Mutex<BTreeMap<u64, Document>>,
    /// Keeps a temporary dbpath alive for as long as the node lives (embedded nodes).
    pub temporary_dbpath: Mutex<Option<tempfile::TempDir>>,
}

/// A node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("dbpath", &self.inner.config.dbpath)
            .finish()
    }
}

impl Node {
    /// Opens the node's storage (recovering it after a crash) and lock manager.
    pub fn open(config: NodeConfig) -> Result<Node, Error> {
        Node::open_with_clock(config, Arc::new(SystemClock::new()))
    }

    pub fn open_with_clock(config: NodeConfig, clock: Arc<dyn Clock>) -> Result<Node, Error> {
        let engine = Engine::open(
            config.engine_config(),
            Backend::Disk(config.dbpath.clone()),
            clock.clone(),
        )?;
        let locks = LockManager::new(LockManagerConfig {
            read_tickets_max: config.read_tickets,
            write_tickets_max: config.write_tickets,
            clock: clock.clone(),
            ..LockManagerConfig::default()
        });
        let cursors = CursorManager::new(config.cursor_timeout_ms);
        tracing::info!(dbpath = %config.dbpath.display(), "node open");
        let node = Node {
            inner: Arc::new(NodeInner {
                config,
                engine,
                locks,
                cursors,
                collections: Default::default(),
                metrics: Metrics::default(),
                clock,
                started: Instant::now(),
                shutting_down: AtomicBool::new(false),
                operations: Mutex::new(BTreeMap::new()),
                connections_current: AtomicU64::new(0),
                connections_total: AtomicU64::new(0),
                client_metadata: Mutex::new(BTreeMap::new()),
                temporary_dbpath: Mutex::new(None),
            }),
        };
        node.start_cursor_reaper();
        Ok(node)
    }

    /// Closes idle cursors every second, for as long as the node lives.
    fn start_cursor_reaper(&self) {
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("cairn-cursor-reaper".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    let Some(inner) = weak.upgrade() else { break };
                    if inner.shutting_down.load(Ordering::Relaxed) {
                        break;
                    }
                    let reaped = inner.cursors.reap();
                    if reaped > 0 {
                        crate::metrics::add(&inner.metrics.cursors_timed_out, reaped as u64);
                        tracing::info!(reaped, "closed idle cursors");
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the cursor reaper: idle cursors stay open");
        }
    }

    /// Runs one command document (with `$db`) and returns its reply document. Never panics:
    /// a failure is an `{ok: 0, errmsg, code, codeName}` reply.
    pub fn run_command(&self, client: &ClientInfo, command: Document) -> Document {
        commands::run(&self.inner, client, command)
    }

    /// Runs a command on the caller's thread only if it can finish without waiting (for a
    /// lock, a ticket, another operation or the disk): a transport's async worker calls this
    /// first and runs the command on a blocking thread when it gets it back (`Err`). See
    /// `commands::Execution::Inline`.
    pub fn try_run_command_inline(
        &self,
        client: &ClientInfo,
        command: Document,
    ) -> Result<Document, Document> {
        match commands::run_as(&self.inner, client, command, commands::Execution::Inline) {
            commands::Ran::Reply(reply) => {
                crate::metrics::add(&self.inner.metrics.inline_ran, 1);
                Ok(reply)
            }
            commands::Ran::WouldBlock(command) => {
                crate::metrics::add(&self.inner.metrics.inline_handed_back, 1);
                Err(command)
            }
        }
    }

    /// Parses a command given as BSON bytes, or answers it with the error reply.
    pub fn parse_command_bytes(&self, bytes: &[u8]) -> Result<Document, Document> {
        if bytes.len() > cairn_types::limits::MESSAGE_SIZE_MAX_BYTES {
            return Err(Error::new(
                ErrorCode::BSONObjectTooLarge,
                format!(
                    "command of {} bytes is over the message limit of {} bytes",
                    bytes.len(),
                    cairn_types::limits::MESSAGE_SIZE_MAX_BYTES
                ),
            )
            .to_reply());
        }
        parse_command(bytes).map_err(|error| error.to_reply())
    }

    /// Runs a command given as BSON bytes (what the transports receive): malformed BSON is an
    /// error reply, not a crash.
    pub fn run_command_bytes(&self, client: &ClientInfo, bytes: &[u8]) -> Document {
        match self.parse_command_bytes(bytes) {
            Ok(command) => self.run_command(client, command),
            Err(reply) => reply,
        }
    }

    pub fn inner(&self) -> &NodeInner {
        &self.inner
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Keeps a temporary directory (the dbpath of an embedded node) until the node is dropped.
    pub fn hold_temporary_dbpath(&self, dir: tempfile::TempDir) {
        *self.inner.temporary_dbpath.lock() = Some(dir);
    }

    /// Counts a transport connection; the returned guard uncounts it when dropped.
    pub fn connection_opened(&self, remote: String) -> ConnectionGuard {
        let id = self.inner.connections_total.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner
            .connections_current
            .fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            node: self.clone(),
            info: ClientInfo {
                connection_id: id,
                remote,
                ..ClientInfo::default()
            },
        }
    }

    /// Graceful shutdown: refuses new operations, interrupts running ones
    /// (InterruptedAtShutdown), closes cursors and takes a final checkpoint.
    pub fn shutdown(&self) -> Result<(), Error> {
        if self.inner.shutting_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        tracing::info!("shutting down: interrupting operations");
        self.inner.locks.shutdown();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !self.inner.operations.lock().is_empty() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.inner.cursors.close_all();
        self.inner.engine.clone().close()?;
        tracing::info!("shutdown complete: checkpoint taken");
        Ok(())
    }
}

/// Parses a command document from bytes, validating every element and the nesting depth
/// without recursion first: the bson crate builds documents recursively, so a few megabytes of
/// nesting would otherwise overflow the stack (an abort, not a panic).
fn parse_command(bytes: &[u8]) -> Result<Document, Error> {
    let invalid = |error: &dyn std::fmt::Display| {
        Error::new(
            ErrorCode::InvalidBSON,
            format!("invalid BSON in the command: {error}"),
        )
    };
    let raw = bson::RawDocument::from_bytes(bytes).map_err(|error| invalid(&error))?;
    crate::wire::document::check_elements(raw, crate::wire::document::COMMAND_DEPTH_MAX)?;
    Document::try_from(raw).map_err(|error| invalid(&error))
}

/// A counted transport connection.
pub struct ConnectionGuard {
    node: Node,
    info: ClientInfo,
}

impl ConnectionGuard {
    pub fn client(&self) -> &ClientInfo {
        &self.info
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.node
            .inner
            .connections_current
            .fetch_sub(1, Ordering::Relaxed);
        self.node
            .inner
            .client_metadata
            .lock()
            .remove(&self.info.connection_id);
    }
}
