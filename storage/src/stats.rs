//! Engine counters, for serverStatus and the benchmarks.

use bson::{Document, doc};
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters (relaxed atomics: statistics, not synchronisation).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub commits: AtomicU64,
    pub commit_batches: AtomicU64,
    pub durable_commits: AtomicU64,
    pub flushes: AtomicU64,
    pub flushes_shared: AtomicU64,
    pub write_conflicts: AtomicU64,
    pub write_conflict_waits: AtomicU64,
    pub versions_written: AtomicU64,
    pub history_versions_written: AtomicU64,
    pub gc_passes: AtomicU64,
    pub gc_entries: AtomicU64,
    pub oplog_entries_written: AtomicU64,
    pub oplog_entries_truncated: AtomicU64,
    pub checkpoints: AtomicU64,
    pub snapshots_opened: AtomicU64,
    pub largest_batch: AtomicU64,
    pub journal_records: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub journal_syncs: AtomicU64,
    pub memtable_flushes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

/// A point-in-time copy of the engine's counters and timestamps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub commits: u64,
    pub commit_batches: u64,
    pub durable_commits: u64,
    /// Journal flushes asked for (`Engine::flush`, as `j: true` writes do).
    pub flushes: u64,
    /// Flushes answered by the durable commit of another flush in the same batch.
    pub flushes_shared: u64,
    pub write_conflicts: u64,
    pub write_conflict_waits: u64,
    pub versions_written: u64,
    pub history_versions_written: u64,
    pub gc_passes: u64,
    pub gc_entries: u64,
    pub oplog_entries_written: u64,
    pub oplog_entries_truncated: u64,
    pub oplog_bytes: u64,
    pub oplog_cap_bytes: u64,
    pub checkpoints: u64,
    pub snapshots_opened: u64,
    pub pinned_snapshots: u64,
    pub tracked_keys: u64,
    pub largest_batch: u64,
    /// Journal records (one per batch not committed durably to redb) and their bytes.
    pub journal_records: u64,
    pub journal_bytes: u64,
    /// fdatasyncs of the journal.
    pub journal_syncs: u64,
    /// Records applied from the journal when the engine opened (crash recovery).
    pub journal_replayed_records: u64,
    /// redb transactions that wrote memtable layers, and the units of work and bytes that are
    /// committed but not yet written to redb.
    pub memtable_flushes: u64,
    pub memtable_units: u64,
    pub memtable_bytes: u64,
    pub visible_ts: cairn_types::Timestamp,
    pub stable_ts: cairn_types::Timestamp,
    pub oldest_ts: cairn_types::Timestamp,
    pub durable_ts: cairn_types::Timestamp,
    pub checkpoint_ts: cairn_types::Timestamp,
}

impl Counters {
    pub(crate) fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl EngineStats {
    /// The `storageEngine`-style section of serverStatus.
    pub fn to_document(&self) -> Document {
        let ts = |ts: cairn_types::Timestamp| bson::Bson::from(ts);
        doc! {
            "name": "cairn",
            "commits": self.commits as i64,
            "commitBatches": self.commit_batches as i64,
            "durableCommits": self.durable_commits as i64,
            "flushes": self.flushes as i64,
            "flushesShared": self.flushes_shared as i64,
            "largestCommitBatch": self.largest_batch as i64,
            "journalRecords": self.journal_records as i64,
            "journalBytes": self.journal_bytes as i64,
            "journalSyncs": self.journal_syncs as i64,
            "journalRecordsReplayed": self.journal_replayed_records as i64,
            "memtableFlushes": self.memtable_flushes as i64,
            "memtableUnits": self.memtable_units as i64,
            "memtableBytes": self.memtable_bytes as i64,
            "writeConflicts": self.write_conflicts as i64,
            "writeConflictWaits": self.write_conflict_waits as i64,
            "versionsWritten": self.versions_written as i64,
            "historyVersionsWritten": self.history_versions_written as i64,
            "gcPasses": self.gc_passes as i64,
            "gcEntriesCollected": self.gc_entries as i64,
            "oplogEntriesWritten": self.oplog_entries_written as i64,
            "oplogEntriesTruncated": self.oplog_entries_truncated as i64,
            "oplogBytes": self.oplog_bytes as i64,
            "oplogCapBytes": self.oplog_cap_bytes as i64,
            "checkpoints": self.checkpoints as i64,
            "snapshotsOpened": self.snapshots_opened as i64,
            "pinnedSnapshots": self.pinned_snapshots as i64,
            "trackedKeys": self.tracked_keys as i64,
            "visibleTimestamp": ts(self.visible_ts),
            "stableTimestamp": ts(self.stable_ts),
            "oldestTimestamp": ts(self.oldest_ts),
            "durableTimestamp": ts(self.durable_ts),
            "checkpointTimestamp": ts(self.checkpoint_ts),
        }
    }
}
