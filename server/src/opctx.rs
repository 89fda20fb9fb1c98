//! Operation contexts: one per running command.
//!
//! An [`OpCtx`] owns the operation's [`Locker`] (its locks, ticket, deadline and kill state),
//! and registers an [`OpInfo`] in the node's operation table for currentOp and killOp. The opid
//! is the lock manager's, so killOp reaches waits inside the lock manager and checks at yields.

use crate::node::{ClientInfo, NodeInner};
use bson::{Bson, Document, doc};
use cairn_locking::{Locker, LockerOptions};
use cairn_types::{Error, ErrorCode, Result};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a transport learns the opid of the command it is running, to kill it when its client
/// goes away, its deadline passes or the server shuts down. A kill asked for before the command
/// has started (it is still on its way to a blocking thread, say) is kept and applied when the
/// command starts, so it is never lost.
#[derive(Debug, Default)]
pub struct OpSlot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    opid: Option<u64>,
    /// The first kill asked for before the command started.
    pending_kill: Option<ErrorCode>,
}

impl OpSlot {
    /// Records the opid of the command as it starts; returns a kill asked for before.
    pub fn set(&self, opid: u64) -> Option<ErrorCode> {
        let mut state = self.state.lock();
        state.opid = Some(opid);
        state.pending_kill.take()
    }

    /// The opid, once the command has started.
    pub fn opid(&self) -> Option<u64> {
        self.state.lock().opid
    }

    /// Kills the command with `code`: now if it is running, else as it starts. (A command that
    /// an inline attempt handed back starts again under a new opid.)
    pub fn kill(&self, locks: &cairn_locking::LockManager, code: ErrorCode) {
        let mut state = self.state.lock();
        let killed = state.opid.is_some_and(|opid| locks.kill_op(opid, code));
        if !killed {
            state.pending_kill.get_or_insert(code);
        }
    }
}

/// What currentOp shows of an operation beyond its locks.
#[derive(Debug)]
pub struct OpInfo {
    pub opid: u64,
    pub client: ClientInfo,
    /// MongoDB's op type: "query", "insert", "update", "remove", "getmore", "command".
    pub op: &'static str,
    pub ns: String,
    /// The command document, for currentOp (large fields trimmed).
    pub command: Document,
    pub started: Instant,
    pub plan_summary: Mutex<Option<String>>,
    /// Progress of a long command (`{done, total}`), shown as currentOp.progress.
    pub progress: Mutex<Option<(u64, u64)>>,
}

impl OpInfo {
    /// The op-level fields of this operation's currentOp entry.
    pub fn current_op_fields(&self) -> Document {
        let running = self.started.elapsed();
        let mut entry = doc! {
            "type": "op",
            "opid": self.opid as i64,
            "active": true,
            "op": self.op,
            "ns": self.ns.clone(),
            "command": self.command.clone(),
            "client": self.client.remote.clone(),
            "desc": self.client.desc(),
            "connectionId": self.client.connection_id as i64,
            "secs_running": running.as_secs() as i64,
            "microsecs_running": running.as_micros() as i64,
        };
        if let Some(metadata) = &self.client.metadata {
            entry.insert("clientMetadata", metadata.clone());
        }
        if let Some(summary) = self.plan_summary.lock().clone() {
            entry.insert("planSummary", summary);
        }
        if let Some((done, total)) = *self.progress.lock() {
            entry.insert(
                "progress",
                doc! {"done": done as i64, "total": total as i64},
            );
            entry.insert("msg", format!("{done}/{total}"));
        }
        entry
    }
}

/// Trims a command for currentOp: long strings and big documents are summarised.
fn trimmed_command(command: &Document) -> Document {
    // MongoDB shows at most about 1 KB of a command in currentOp. Fields are copied while they
    // fit; a large value (the documents of an insert, say) is summarised, never copied.
    const COMMAND_BYTES_MAX: usize = 1024;
    let mut trimmed = Document::new();
    let mut budget = COMMAND_BYTES_MAX;
    for (key, value) in command {
        let size = cairn_query::agg::pipeline::approximate_size(value);
        let shown = if size <= budget {
            budget -= size;
            value.clone()
        } else {
            match value {
                Bson::Array(items) => Bson::String(format!("[ {} elements ]", items.len())),
                Bson::String(text) => Bson::String(format!(
                    "{}...",
                    &text[..text.floor_char_boundary(budget.min(text.len()))]
                )),
                other => Bson::String(format!(
                    "<{} of about {size} bytes>",
                    crate::commands::type_name(other)
                )),
            }
        };
        trimmed.insert(key.clone(), shown);
    }
    trimmed
}

/// A running operation.
pub struct OpCtx<'a> {
    pub node: &'a NodeInner,
    pub locker: Locker,
    pub info: Arc<OpInfo>,
    /// maxTimeMS as an instant, for waits outside the lock manager.
    pub deadline: Option<Instant>,
    /// Running inline on a transport's async worker (`commands::Execution::Inline`): every
    /// lock and ticket is taken without waiting (a wait ends at once with LockTimeout), and
    /// handlers give up with LockTimeout before anything that could wait.
    pub inline: bool,
}

impl<'a> OpCtx<'a> {
    /// Starts an operation and registers it.
    pub fn new(
        node: &'a NodeInner,
        client: &ClientInfo,
        op: &'static str,
        ns: String,
        command: &Document,
        max_time_ms: Option<u64>,
        inline: bool,
    ) -> OpCtx<'a> {
        let locker = node.locks.new_locker(LockerOptions {
            max_time_ms,
            lock_timeout_ms: inline.then_some(0),
            ..LockerOptions::new(client.desc())
        });
        let mut client = client.clone();
        if client.metadata.is_none() {
            client.metadata = node
                .client_metadata
                .lock()
                .get(&client.connection_id)
                .cloned();
        }
        let info = Arc::new(OpInfo {
            opid: locker.opid(),
            client,
            op,
            ns,
            command: trimmed_command(command),
            started: Instant::now(),
            plan_summary: Mutex::new(None),
            progress: Mutex::new(None),
        });
        node.operations.lock().insert(info.opid, info.clone());
        if let Some(slot) = &info.client.op_slot {
            if let Some(code) = slot.set(info.opid) {
                node.locks.kill_op(info.opid, code);
            }
        }
        OpCtx {
            node,
            locker,
            info,
            deadline: max_time_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
            inline,
        }
    }

    /// Stops with the operation's error if it was killed or is past maxTimeMS.
    pub fn check_interrupt(&self) -> Result<()> {
        self.locker.check_for_interrupt()?;
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(Error::new(
                ErrorCode::MaxTimeMSExpired,
                "operation exceeded time limit",
            ));
        }
        Ok(())
    }

    /// In an inline attempt, the error that hands the command back to run it on a thread that
    /// may block (see `commands::Execution::Inline`).
    pub fn require_blocking(&self, why: &str) -> Result<()> {
        if self.inline {
            return Err(Error::new(
                ErrorCode::LockTimeout,
                format!("an inline attempt would wait: {why}"),
            ));
        }
        Ok(())
    }

    pub fn set_plan_summary(&self, summary: String) {
        *self.info.plan_summary.lock() = Some(summary);
    }

    pub fn set_progress(&self, done: u64, total: u64) {
        *self.info.progress.lock() = Some((done, total));
    }
}

impl Drop for OpCtx<'_> {
    fn drop(&mut self) {
        self.node.operations.lock().remove(&self.info.opid);
    }
}
