//! Engine settings. Every limit is named with its unit last.

/// How commits reach redb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// One committer thread batches concurrent commits into one redb transaction (group commit)
    /// and runs the periodic work (journal flush, garbage collection, checkpoints).
    Background,
    /// Each commit runs on the caller's thread under the writer mutex, one redb transaction per
    /// unit of work, and periodic work runs only when asked: deterministic, for simulation.
    Inline,
}

/// Settings of one engine instance.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// How long history stays readable (MongoDB's minSnapshotHistoryWindowInSeconds).
    pub history_window_secs: u32,
    /// `j: false` commits are on disk within this interval (MongoDB's commitIntervalMs).
    pub commit_interval_ms: u64,
    /// The data itself (redb) is committed durably at least this often; the journal makes the
    /// commits in between durable, and starts over after each such commit.
    pub data_sync_interval_ms: u64,
    /// A batch that finds the journal this full commits durably to redb instead (which starts
    /// the journal over), bounding the journal's size and the replay after a crash.
    pub journal_bytes_max: u64,
    /// A checkpoint (durable commit that records the stable timestamp) at least this often.
    pub checkpoint_interval_secs: u64,
    /// Garbage collection runs at least this often.
    pub gc_interval_ms: u64,
    /// At most this many write-log entries are collected per pass, so a pass never stalls
    /// commits for long.
    pub gc_batch_entries_max: usize,
    /// At most this many units of work share one redb transaction.
    pub commit_batch_requests_max: usize,
    /// Oplog cap. `None`: 5% of the free disk space, at least 990 MB, at most 50 GB (MongoDB's
    /// default).
    pub oplog_size_bytes: Option<u64>,
    /// redb page cache.
    pub cache_size_bytes: usize,
    /// A write that keeps conflicting gives up with WriteConflict after this many attempts.
    pub write_conflict_retries_max: u32,
    /// Longest wait for a hot key held by another writer before giving up with WriteConflict.
    pub write_conflict_wait_ms_max: u64,
    pub commit_mode: CommitMode,
    /// Verify every page checksum when opening (reads the whole file once; redb checks after a
    /// crash in any case). A damaged file is then refused with DataCorruptionDetected.
    pub verify_checksums_on_open: bool,
    /// The flusher thread's nice value (Linux keeps one per thread; 19 is the lowest
    /// priority), or `None` to leave it as inherited (the default). Lowering it keeps the
    /// flusher's wake-ups from preempting a writer that owns a hot key or leads a batch, which
    /// stalls every writer queued behind it: at nice 19, 64 writers of one document did about
    /// 10% more updates a second (docs/storage.md, "Results"). It is off by default because it
    /// is a priority inversion waiting to happen: the leader past `MEMTABLE_BYTES_MAX`, the
    /// periodic durable commit (and with it the journal syncs behind it), garbage collection
    /// and checkpoints wait for the flusher's `flush_lock`, and `j: true` syncers for the
    /// journal writes it does; on a saturated machine a nice-19 thread gets about 1.5% of a CPU
    /// beside a busy one, and an unprivileged thread cannot raise its priority again.
    pub flusher_nice: Option<i32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            history_window_secs: 300,
            commit_interval_ms: 100,
            data_sync_interval_ms: 1_000,
            journal_bytes_max: 256 * 1024 * 1024,
            checkpoint_interval_secs: 60,
            gc_interval_ms: 1_000,
            gc_batch_entries_max: 20_000,
            commit_batch_requests_max: 1_024,
            oplog_size_bytes: None,
            cache_size_bytes: 512 * 1024 * 1024,
            write_conflict_retries_max: 100_000,
            write_conflict_wait_ms_max: 60_000,
            commit_mode: CommitMode::Background,
            verify_checksums_on_open: true,
            flusher_nice: None,
        }
    }
}

/// Smallest default oplog (MongoDB: 990 MB).
pub(crate) const OPLOG_DEFAULT_BYTES_MIN: u64 = 990 * 1024 * 1024;
/// Largest default oplog (MongoDB: 50 GB).
pub(crate) const OPLOG_DEFAULT_BYTES_MAX: u64 = 50 * 1024 * 1024 * 1024;
