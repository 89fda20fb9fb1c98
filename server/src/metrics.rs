//! Server counters for serverStatus (relaxed atomics: statistics, not synchronisation).

use bson::{Document, doc};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// serverStatus.opcounters, metrics.document and friends.
#[derive(Debug, Default)]
pub struct Metrics {
    pub op_insert: AtomicU64,
    pub op_query: AtomicU64,
    pub op_update: AtomicU64,
    pub op_delete: AtomicU64,
    pub op_getmore: AtomicU64,
    pub op_command: AtomicU64,
    pub documents_inserted: AtomicU64,
    pub documents_returned: AtomicU64,
    pub documents_updated: AtomicU64,
    pub documents_deleted: AtomicU64,
    pub keys_examined: AtomicU64,
    pub docs_examined: AtomicU64,
    pub cursors_opened: AtomicU64,
    pub cursors_timed_out: AtomicU64,
    pub commands_failed: AtomicU64,
    /// Commands answered inline on a network thread (`commands::Execution::Inline`).
    pub inline_ran: AtomicU64,
    /// Inline attempts handed back to run on a blocking thread (they would have waited).
    pub inline_handed_back: AtomicU64,
    /// CPU time the network threads spent polling with nothing to do (`network`), in
    /// nanoseconds; shared with the network threads.
    pub idle_polled_nanos: Arc<AtomicU64>,
}

pub fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

fn load(counter: &AtomicU64) -> i64 {
    counter.load(Ordering::Relaxed) as i64
}

impl Metrics {
    /// serverStatus.cairn.execution: where commands ran.
    pub fn execution(&self) -> Document {
        doc! {
            "inline": load(&self.inline_ran),
            "handedBack": load(&self.inline_handed_back),
        }
    }

    /// serverStatus.cairn.network: the network threads' idle poll (`network`).
    pub fn network(&self, idle_poll_micros: u64) -> Document {
        doc! {
            "idlePollMicros": idle_poll_micros as i64,
            "idlePolledMicros": load(&self.idle_polled_nanos) / 1000,
        }
    }

    /// serverStatus.opcounters.
    pub fn opcounters(&self) -> Document {
        doc! {
            "insert": load(&self.op_insert),
            "query": load(&self.op_query),
            "update": load(&self.op_update),
            "delete": load(&self.op_delete),
            "getmore": load(&self.op_getmore),
            "command": load(&self.op_command),
        }
    }

    /// serverStatus.metrics.document.
    pub fn document(&self) -> Document {
        doc! {
            "deleted": load(&self.documents_deleted),
            "inserted": load(&self.documents_inserted),
            "returned": load(&self.documents_returned),
            "updated": load(&self.documents_updated),
        }
    }

    /// serverStatus.metrics.queryExecutor.scanned / scannedObjects.
    pub fn query_executor(&self) -> Document {
        doc! { "scanned": load(&self.keys_examined), "scannedObjects": load(&self.docs_examined) }
    }
}
