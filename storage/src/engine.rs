//! The engine: opening and closing, timestamps, snapshots, units of work, and the job queue to
//! the committer.
//!
//! Timestamps (all [`Timestamp`]s, see docs/storage.md):
//! - *visible*: the newest commit a new snapshot sees. Published only after the memtable (or a
//!   redb commit) holds it and its journal record is appended, and after the catalog mirror has
//!   its catalog changes; never moves backwards except in `recover_to_stable_timestamp`.
//! - *stable*: the newest timestamp that must survive a rollback (the majority commit point, set
//!   by replication; until then it follows the newest commit). Never ahead of *visible*.
//! - *oldest*: history older than it may be discarded; never passes a pinned read timestamp,
//!   never ahead of *stable*, never moves backwards.
//! - *durable*: the newest commit known to be on disk.
//! - *checkpoint*: the stable timestamp recorded by the last checkpoint.

use crate::backend::{Backend, DATA_FILE_NAME};
use crate::catalog::{CatalogMirror, decode_meta};
use crate::committer::{self, Job};
use crate::completion::{Completion, Wake};
use crate::config::{CommitMode, EngineConfig, OPLOG_DEFAULT_BYTES_MAX, OPLOG_DEFAULT_BYTES_MIN};
use crate::format::{self, META};
use crate::journal::{Journal, JournalFile};
use crate::keylocks::{KeyLocks, OwnerId};
use crate::pins::Pins;
use crate::snapshot::{ReadAt, Snapshot};
use crate::stats::{Counters, EngineStats};
use crate::write::WriteUnit;
use crate::{CATALOG_IDENT, FIRST_USER_IDENT};
use cairn_types::{Clock, Error, ErrorCode, Timestamp};
use parking_lot::{Condvar, Mutex, RwLock};
use redb::{ReadableDatabase, ReadableTable};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The engine's timestamps and durability bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimestampState {
    /// The newest commit timestamp handed out (and committed).
    pub last_assigned: Timestamp,
    pub stable: Timestamp,
    /// Whether stable follows the newest commit (no replication layer has set it).
    pub stable_follows_newest: bool,
    pub oldest: Timestamp,
    pub durable: Timestamp,
    pub checkpoint: Timestamp,
    pub oplog_bytes: u64,
    /// Commits that are visible but not yet durable exist.
    pub dirty: bool,
    /// Monotonic time of the last durable redb commit, journal sync, checkpoint and garbage
    /// collection pass.
    pub last_durable_at: Duration,
    pub last_journal_sync_at: Duration,
    pub last_checkpoint_at: Duration,
    pub last_gc_at: Duration,
}

pub(crate) struct JobQueue {
    pub jobs: VecDeque<Job>,
    /// A caller is running a batch (see `committer::lead`).
    pub leader_active: bool,
    pub shutdown: bool,
}

/// Shared state of one engine instance.
pub(crate) struct Inner {
    /// Dropped (closing redb, which makes pending commits durable) unless the engine was
    /// crashed on purpose by [`Engine::simulate_crash`].
    pub db: std::mem::ManuallyDrop<redb::Database>,
    pub crashed: AtomicBool,
    pub config: EngineConfig,
    pub clock: Arc<dyn Clock>,
    /// Newest visible commit timestamp, as `Timestamp::as_u64`.
    pub visible: AtomicU64,
    pub pins: Arc<Pins>,
    pub keylocks: KeyLocks,
    pub catalog: RwLock<CatalogMirror>,
    pub timestamps: Mutex<TimestampState>,
    pub counters: Counters,
    pub next_ident: AtomicU64,
    pub next_owner: AtomicU64,
    pub queue: Mutex<JobQueue>,
    pub queue_signal: Condvar,
    /// Held while a batch is applied: only one redb write transaction at a time, and in
    /// `Inline` mode this is what callers take.
    pub writer: Mutex<()>,
    /// Held across a durable redb commit and the journal generation change that goes with it,
    /// so that one runs at a time: the periodic one, which holds up no commit, or one of those
    /// made under the writer mutex (lock order: writer, then this, then the memtable's
    /// `flush_lock`).
    pub marker: Mutex<()>,
    /// Set when a commit failed with an I/O error: the engine refuses further writes.
    pub failure: Mutex<Option<Error>>,
    pub oplog_cap_bytes: u64,
    pub journal: Journal,
    /// Starts the data file's write-back between durable commits (disk only).
    pub writeback: Option<crate::backend::DataFileWriteback>,
    /// `j: true` commits and flushes waiting for a journal sync (`committer::settle_sync`).
    pub sync_group: Mutex<committer::SyncGroup>,
    pub sync_wake: Condvar,
    /// Units of work begun and not yet queued for commit or aborted.
    pub active_units: std::sync::atomic::AtomicUsize,
    /// Journal records applied when the engine opened.
    pub journal_replayed_records: u64,
    /// Committed batches not yet written to redb (`memtable`).
    pub memtable: crate::memtable::Memtable,
    /// redb write transactions committed since the engine opened (`committer::commit_txn`):
    /// a snapshot's shared redb read transaction is as new as the count it was taken at.
    pub redb_commits: AtomicU64,
    /// The redb read transaction that snapshots share (`snapshot::ReadView`).
    pub read_view: RwLock<Option<Arc<crate::snapshot::ReadView>>>,
    /// Committers yet to be told their outcome (`committer::tell`).
    pub tells: committer::Tells,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Its read transaction goes before the database.
        self.read_view.get_mut().take();
        if !self.crashed.load(Ordering::SeqCst) {
            drop_database(&mut self.db);
        }
    }
}

#[allow(unsafe_code)]
fn drop_database(db: &mut std::mem::ManuallyDrop<redb::Database>) {
    // SAFETY: called once, from `Inner::drop`, after which `db` is not touched again.
    unsafe { std::mem::ManuallyDrop::drop(db) }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "visible",
                &Timestamp::from_u64(self.visible.load(Ordering::Relaxed)),
            )
            .finish_non_exhaustive()
    }
}

/// Stops the background threads when the last engine handle goes away.
struct Lifecycle {
    inner: Arc<Inner>,
    committer: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        stop_committer(&self.inner, &self.committer);
        if !self.inner.crashed.load(Ordering::SeqCst) {
            // Dropped without `close`: closing redb makes its non-durable commits durable, so
            // the memtable goes there first (as every commit did before the memtable).
            let writer = self.inner.writer.lock();
            if let Err(error) = committer::flush_memtable(&self.inner) {
                tracing::error!(%error, "writing the memtable at shutdown failed");
            }
            drop(writer);
        }
    }
}

fn stop_committer(inner: &Arc<Inner>, committer: &Mutex<Vec<JoinHandle<()>>>) {
    {
        let mut queue = inner.queue.lock();
        queue.shutdown = true;
        inner.queue_signal.notify_all();
    }
    inner.memtable.wake_flusher();
    for handle in std::mem::take(&mut *committer.lock()) {
        // A panic in a background thread has already been reported by the panic hook.
        let _ = handle.join();
    }
}

/// A storage engine instance. Cheap to clone; the committer stops when the last clone is
/// dropped (without a checkpoint: use [`Engine::close`] for a clean shutdown).
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    lifecycle: Arc<Lifecycle>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

pub(crate) fn storage_error(context: &str, error: impl std::fmt::Display) -> Error {
    let text = error.to_string();
    if text.to_lowercase().contains("corrupt") {
        Error::new(
            ErrorCode::DataCorruptionDetected,
            format!("{context}: {text}"),
        )
    } else {
        Error::new(ErrorCode::InternalError, format!("{context}: {text}"))
    }
}

fn open_database(config: &EngineConfig, backend: &Backend) -> Result<redb::Database, Error> {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(config.cache_size_bytes);
    // Verify every page checksum on open: a damaged file is reported, never used (redb may
    // panic on a page damaged outside it otherwise).
    builder.set_check_integrity_on_open(config.verify_checksums_on_open);
    let result = match backend {
        Backend::Disk(dbpath) => {
            std::fs::create_dir_all(dbpath).map_err(|error| {
                Error::new(
                    ErrorCode::InternalError,
                    format!("cannot create dbpath {}: {error}", dbpath.display()),
                )
            })?;
            builder.create(dbpath.join(DATA_FILE_NAME))
        }
        Backend::Memory => builder.create_with_backend(redb::backends::InMemoryBackend::new()),
        Backend::Crashable(memory) => builder.create_with_backend(memory.clone()),
    };
    result.map_err(|error| match error {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            let location = match backend {
                Backend::Disk(dbpath) => dbpath.display().to_string(),
                _ => "memory".into(),
            };
            Error::new(
                ErrorCode::DBPathInUse,
                format!(
                    "Unable to lock the data file in {location}: another cairnd process is using this dbpath"
                ),
            )
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(message)) => Error::new(
            ErrorCode::DataCorruptionDetected,
            format!(
                "The data file is damaged and will not be used ({message}); restore it from a backup or resync this member"
            ),
        ),
        other => storage_error("cannot open the data file", other),
    })
}

/// Sets the calling thread's nice value (Linux: a thread's own scheduling priority). Raising it
/// needs no privilege; a failure (lowering it again without CAP_SYS_NICE) is logged and the
/// thread runs on at the priority it had.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_thread_nice(nice: i32) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority only reads its arguments; PRIO_PROCESS with a thread id sets that
    // thread's nice value on Linux.
    let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if status != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(nice, %error, "could not set the flusher thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_thread_nice(nice: i32) {
    tracing::warn!(
        nice,
        "per-thread priorities are Linux only: the flusher's is unchanged"
    );
}

/// Free space of the filesystem holding `path`, in bytes.
#[allow(unsafe_code)]
fn free_disk_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stats` points to writable memory of
    // the right type; statvfs fills it completely when it returns 0.
    let status = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if status != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so `stats` is initialised.
    let stats = unsafe { stats.assume_init() };
    Some(stats.f_bavail * stats.f_frsize)
}

fn default_oplog_cap(backend: &Backend) -> u64 {
    let free = match backend {
        Backend::Disk(dbpath) => free_disk_bytes(dbpath).unwrap_or(0),
        _ => 0,
    };
    (free / 20).clamp(OPLOG_DEFAULT_BYTES_MIN, OPLOG_DEFAULT_BYTES_MAX)
}

fn read_meta_u64(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<u64>, Error> {
    let value = table
        .get(name)
        .map_err(|error| storage_error("reading metadata", error))?;
    Ok(value.map(|guard| format::decode_u64(guard.value())))
}

impl Engine {
    /// Opens (or creates) an engine. After a crash this is recovery: redb returns to its last
    /// durable commit, which is a consistent state of data, write log, oplog and catalog.
    pub fn open(
        config: EngineConfig,
        backend: Backend,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, Error> {
        assert!(
            config.commit_batch_requests_max > 0,
            "commit_batch_requests_max must be > 0"
        );
        assert!(
            config.gc_batch_entries_max > 0,
            "gc_batch_entries_max must be > 0"
        );
        let db = open_database(&config, &backend)?;
        let journal_files = crate::backend::open_journal_files(&backend)?;
        let replay = replay_journal(&db, &journal_files)?;
        let oplog_cap_bytes = config
            .oplog_size_bytes
            .unwrap_or_else(|| default_oplog_cap(&backend));

        // Create the fixed tables, check the format, and mark the shutdown as not clean until
        // `close` says otherwise.
        let txn = db
            .begin_write()
            .map_err(|error| storage_error("opening", error))?;
        let state = {
            let mut meta = txn
                .open_table(META)
                .map_err(|error| storage_error("opening", error))?;
            txn.open_table(format::WRITELOG)
                .map_err(|error| storage_error("opening", error))?;
            txn.open_table(format::OPLOG)
                .map_err(|error| storage_error("opening", error))?;
            txn.open_table(format::DROP_PENDING)
                .map_err(|error| storage_error("opening", error))?;
            for name in [
                format::current_table_name(CATALOG_IDENT),
                format::history_table_name(CATALOG_IDENT),
            ] {
                txn.open_table(redb::TableDefinition::<&[u8], &[u8]>::new(&name))
                    .map_err(|error| storage_error("opening", error))?;
            }
            match read_meta_u64(&meta, format::META_FORMAT_VERSION)? {
                None => {
                    meta.insert(
                        format::META_FORMAT_VERSION,
                        &format::FORMAT_VERSION.to_be_bytes()[..],
                    )
                    .map_err(|error| storage_error("initialising", error))?;
                }
                Some(version) if version != format::FORMAT_VERSION => {
                    return Err(Error::new(
                        ErrorCode::DataCorruptionDetected,
                        format!(
                            "The data file has format version {version}; this cairn reads version {}",
                            format::FORMAT_VERSION
                        ),
                    ));
                }
                Some(_) => {}
            }
            let clean = read_meta_u64(&meta, format::META_CLEAN_SHUTDOWN)?.unwrap_or(1) == 1;
            if !clean {
                tracing::warn!(
                    "the last shutdown was not clean: recovered to the last durable commit"
                );
            }
            meta.insert(format::META_CLEAN_SHUTDOWN, &0u64.to_be_bytes()[..])
                .map_err(|error| storage_error("initialising", error))?;
            let ts = |name| -> Result<Timestamp, Error> {
                Ok(Timestamp::from_u64(
                    read_meta_u64(&meta, name)?.unwrap_or(0),
                ))
            };
            let record = meta
                .get(format::META_COMMIT_STATE)
                .map_err(|error| storage_error("reading metadata", error))?
                .map(|guard| format::CommitState::decode(guard.value()))
                .unwrap_or_default();
            let last = record.last_ts;
            TimestampState {
                last_assigned: last,
                stable: record.stable_ts.min(last),
                stable_follows_newest: true,
                oldest: ts(format::META_OLDEST_TS)?.min(last),
                durable: last,
                checkpoint: ts(format::META_CHECKPOINT_TS)?,
                oplog_bytes: record.oplog_bytes,
                dirty: false,
                last_durable_at: clock.monotonic(),
                last_journal_sync_at: clock.monotonic(),
                last_checkpoint_at: clock.monotonic(),
                last_gc_at: Duration::ZERO,
            }
        };
        let stored_next_ident = {
            let meta = txn
                .open_table(META)
                .map_err(|error| storage_error("opening", error))?;
            meta.get(format::META_COMMIT_STATE)
                .map_err(|error| storage_error("reading metadata", error))?
                .map_or(FIRST_USER_IDENT, |guard| {
                    format::CommitState::decode(guard.value()).next_ident
                })
        };
        // This durable commit holds the replayed records and starts a journal generation that
        // no file can hold records of: redb named `replay.generation`, so a switch may have
        // started the next one (whose records were replayed if any were whole), never the one
        // after.
        let journal_generation = replay.generation + 2;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|error| storage_error("opening", error))?;
            meta.insert(
                format::META_JOURNAL_GENERATION,
                &journal_generation.to_be_bytes()[..],
            )
            .map_err(|error| storage_error("initialising", error))?;
        }
        let mut txn = txn;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|error| storage_error("opening", error))?;
        txn.commit()
            .map_err(|error| storage_error("opening", error))?;
        let journal = Journal::new(journal_files, journal_generation, state.last_assigned)?;

        let catalog = load_catalog(&db)?;
        let next_ident = stored_next_ident
            .max(FIRST_USER_IDENT)
            .max(catalog.max_ident() + 1);
        let stable_follows = state.stable_follows_newest;
        let inner = Arc::new(Inner {
            db: std::mem::ManuallyDrop::new(db),
            crashed: AtomicBool::new(false),
            visible: AtomicU64::new(state.last_assigned.as_u64()),
            pins: Pins::new(state.oldest),
            keylocks: KeyLocks::new(),
            catalog: RwLock::new(catalog),
            timestamps: Mutex::new(TimestampState {
                stable_follows_newest: stable_follows,
                ..state
            }),
            counters: Counters::default(),
            next_ident: AtomicU64::new(next_ident),
            next_owner: AtomicU64::new(1),
            queue: Mutex::new(JobQueue {
                jobs: VecDeque::new(),
                leader_active: false,
                shutdown: false,
            }),
            queue_signal: Condvar::new(),
            writer: Mutex::new(()),
            marker: Mutex::new(()),
            failure: Mutex::new(None),
            oplog_cap_bytes,
            journal,
            writeback: crate::backend::DataFileWriteback::open(&backend),
            sync_group: Mutex::new(committer::SyncGroup::default()),
            sync_wake: Condvar::new(),
            active_units: std::sync::atomic::AtomicUsize::new(0),
            journal_replayed_records: replay.records,
            memtable: crate::memtable::Memtable::default(),
            redb_commits: AtomicU64::new(0),
            read_view: RwLock::new(None),
            tells: committer::Tells::default(),
            clock,
            config,
        });
        let committer = match inner.config.commit_mode {
            CommitMode::Background => {
                let periodic = inner.clone();
                let flusher = inner.clone();
                vec![
                    std::thread::Builder::new()
                        .name("cairn-storage-periodic".into())
                        .spawn(move || committer::run_periodic(periodic))
                        .map_err(|error| storage_error("starting the committer", error))?,
                    std::thread::Builder::new()
                        .name("cairn-storage-flush".into())
                        .spawn(move || {
                            if let Some(nice) = flusher.config.flusher_nice {
                                set_thread_nice(nice);
                            }
                            committer::run_flusher(flusher)
                        })
                        .map_err(|error| storage_error("starting the flusher", error))?,
                ]
            }
            CommitMode::Inline => Vec::new(),
        };
        tracing::info!(
            visible = %Timestamp::from_u64(inner.visible.load(Ordering::Relaxed)),
            oplog_cap_bytes,
            "storage engine open"
        );
        Ok(Engine {
            lifecycle: Arc::new(Lifecycle {
                inner: inner.clone(),
                committer: Mutex::new(committer),
                closed: AtomicBool::new(false),
            }),
            inner,
        })
    }

    /// Opens a snapshot for reading.
    pub fn snapshot(&self, at: ReadAt) -> Result<Snapshot, Error> {
        Snapshot::open(self.inner.clone(), at)
    }

    /// Begins a unit of work reading at the newest visible commit.
    pub fn begin_write(&self) -> WriteUnit {
        let owner = self.new_owner();
        WriteUnit::begin(self.clone(), owner, None)
    }

    pub(crate) fn new_owner(&self) -> OwnerId {
        self.inner.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    /// The collection at `ns` as of the newest visible commit (no snapshot needed: the catalog
    /// mirror answers).
    pub fn latest_collection(
        &self,
        ns: &cairn_types::Namespace,
    ) -> Option<Arc<crate::CollectionMeta>> {
        self.inner
            .catalog
            .read()
            .lookup(ns, self.visible_timestamp())
    }

    /// The collection with this UUID as of the newest visible commit.
    pub fn latest_collection_by_uuid(
        &self,
        uuid: &bson::Uuid,
    ) -> Option<Arc<crate::CollectionMeta>> {
        let at = self.visible_timestamp();
        self.inner
            .catalog
            .read()
            .list(at)
            .into_iter()
            .find(|meta| meta.uuid == *uuid)
    }

    /// Every collection as of the newest visible commit.
    pub fn latest_collections(&self) -> Vec<Arc<crate::CollectionMeta>> {
        self.inner.catalog.read().list(self.visible_timestamp())
    }

    /// The newest visible commit timestamp.
    pub fn visible_timestamp(&self) -> Timestamp {
        Timestamp::from_u64(self.inner.visible.load(Ordering::Acquire))
    }

    /// A copy of the engine's timestamps.
    pub fn timestamps(&self) -> TimestampState {
        *self.inner.timestamps.lock()
    }

    /// Sets the stable timestamp (the replication layer's majority commit point). From now on
    /// stable no longer follows the newest commit. It never moves backwards and never passes
    /// the newest visible commit.
    pub fn set_stable_timestamp(&self, ts: Timestamp) {
        let mut timestamps = self.inner.timestamps.lock();
        let visible = self.visible_timestamp();
        timestamps.stable_follows_newest = false;
        let target = ts.min(visible);
        if target > timestamps.stable {
            timestamps.stable = target;
        }
    }

    /// Lets stable follow the newest commit again (a standalone node).
    pub fn set_stable_follows_newest(&self) {
        let mut timestamps = self.inner.timestamps.lock();
        timestamps.stable_follows_newest = true;
        timestamps.stable = timestamps.last_assigned;
    }

    /// Makes every visible commit durable (one fsync); returns the durable timestamp.
    pub fn flush(&self) -> Result<Timestamp, Error> {
        Counters::add(&self.inner.counters.flushes, 1);
        let done = Completion::new();
        self.run_job(Job::Flush(done.clone()), &done)
    }

    /// Takes a checkpoint: a durable commit that records the stable timestamp.
    pub fn checkpoint(&self) -> Result<Timestamp, Error> {
        let done = Completion::new();
        self.run_job(
            Job::Checkpoint {
                clean_shutdown: false,
                done: done.clone(),
            },
            &done,
        )
    }

    /// Runs one garbage-collection pass now; returns how many write-log entries it collected.
    pub fn collect_garbage(&self) -> Result<usize, Error> {
        let done = Completion::new();
        self.run_job(Job::CollectGarbage(done.clone()), &done)
    }

    /// Discards every write after the stable timestamp (the basis of rollback): data, catalog
    /// changes and oplog entries. No snapshot may be open above the stable timestamp and no
    /// unit of work may be in flight (the caller holds the global lock exclusively).
    pub fn recover_to_stable_timestamp(&self) -> Result<Timestamp, Error> {
        let done = Completion::new();
        self.run_job(Job::RecoverToStable(done.clone()), &done)
    }

    /// Removes oplog entries after `ts`, leaving data untouched.
    pub fn truncate_oplog_after(&self, ts: Timestamp) -> Result<u64, Error> {
        let done = Completion::new();
        self.run_job(Job::TruncateOplogAfter(ts, done.clone()), &done)
    }

    /// Queues a job and waits for its result, leading the batch when no one else does.
    pub(crate) fn run_job<T: Send>(&self, job: Job, done: &Arc<Completion<T>>) -> T {
        self.run_job_then(job, done, || {})
    }

    /// As [`Engine::run_job`], calling `on_queued` under the queue mutex right after the job is
    /// queued (so nothing queued later can be ordered before it). Not called in `Inline` mode
    /// or when the engine is shutting down.
    pub(crate) fn run_job_then<T: Send>(
        &self,
        job: Job,
        done: &Arc<Completion<T>>,
        on_queued: impl FnOnce(),
    ) -> T {
        match self.inner.config.commit_mode {
            CommitMode::Background => {
                let lead_now = {
                    let mut queue = self.inner.queue.lock();
                    if queue.shutdown {
                        drop(queue);
                        job.fail(Error::new(
                            ErrorCode::ShutdownInProgress,
                            "the storage engine is shutting down",
                        ));
                        return done.take();
                    }
                    queue.jobs.push_back(job);
                    on_queued();
                    !std::mem::replace(&mut queue.leader_active, true)
                };
                let own = done.identity();
                if lead_now {
                    committer::lead(&self.inner, own);
                }
                loop {
                    match done.wait() {
                        Wake::Done(value) => {
                            committer::help_tell(&self.inner);
                            return value;
                        }
                        Wake::Lead => committer::lead(&self.inner, own),
                        Wake::Sync => committer::run_syncer(&self.inner, own),
                    }
                }
            }
            CommitMode::Inline => {
                let writer = self.inner.writer.lock();
                let awaiting = committer::process(&self.inner, vec![job]);
                drop(writer);
                committer::finish_sync(&self.inner, awaiting);
                committer::write_out_large_buffer(&self.inner);
                done.take()
            }
        }
    }

    /// Runs the periodic work that is due (journal flush, garbage collection, checkpoint). The
    /// committer does this by itself in `Background` mode; in `Inline` mode the caller drives it.
    pub fn run_periodic_work(&self) {
        committer::sync_journal_if_due(&self.inner);
        committer::periodic(&self.inner);
    }

    /// Whether a batch is being committed or queued right now (a commit would wait for it). A
    /// hint: the answer may change at once.
    pub fn is_committing(&self) -> bool {
        let queue = self.inner.queue.lock();
        queue.leader_active || !queue.jobs.is_empty()
    }

    /// Counters and timestamps.
    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
        let timestamps = self.timestamps();
        EngineStats {
            commits: Counters::load(&c.commits),
            commit_batches: Counters::load(&c.commit_batches),
            durable_commits: Counters::load(&c.durable_commits),
            flushes: Counters::load(&c.flushes),
            flushes_shared: Counters::load(&c.flushes_shared),
            write_conflicts: Counters::load(&c.write_conflicts),
            write_conflict_waits: Counters::load(&c.write_conflict_waits),
            versions_written: Counters::load(&c.versions_written),
            history_versions_written: Counters::load(&c.history_versions_written),
            gc_passes: Counters::load(&c.gc_passes),
            gc_entries: Counters::load(&c.gc_entries),
            oplog_entries_written: Counters::load(&c.oplog_entries_written),
            oplog_entries_truncated: Counters::load(&c.oplog_entries_truncated),
            oplog_bytes: timestamps.oplog_bytes,
            oplog_cap_bytes: self.inner.oplog_cap_bytes,
            checkpoints: Counters::load(&c.checkpoints),
            snapshots_opened: Counters::load(&c.snapshots_opened),
            pinned_snapshots: self.inner.pins.pinned_count() as u64,
            tracked_keys: self.inner.keylocks.len() as u64,
            largest_batch: Counters::load(&c.largest_batch),
            journal_records: Counters::load(&c.journal_records),
            journal_bytes: Counters::load(&c.journal_bytes),
            journal_syncs: Counters::load(&c.journal_syncs),
            journal_replayed_records: self.inner.journal_replayed_records,
            memtable_flushes: Counters::load(&c.memtable_flushes),
            memtable_units: self.inner.memtable.unflushed_units() as u64,
            memtable_bytes: self.inner.memtable.unflushed_bytes() as u64,
            visible_ts: self.visible_timestamp(),
            stable_ts: timestamps.stable,
            oldest_ts: timestamps.oldest,
            durable_ts: timestamps.durable,
            checkpoint_ts: timestamps.checkpoint,
        }
    }

    /// The number of write conflicts so far (serverStatus.metrics.operation.writeConflicts).
    pub fn write_conflicts(&self) -> u64 {
        Counters::load(&self.inner.counters.write_conflicts)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Allocates a table ident for a new collection or index.
    pub fn allocate_ident(&self) -> u64 {
        self.inner.next_ident.fetch_add(1, Ordering::Relaxed)
    }

    /// Simulates a crash for tests: stops the committer and abandons redb without closing it
    /// (closing would make pending non-durable commits durable). The abandoned database is
    /// leaked, and on disk keeps its file lock: use with [`crate::CrashableMemory`], then call
    /// its `crash` to drop what was never synced.
    pub fn simulate_crash(self) {
        self.inner.crashed.store(true, Ordering::SeqCst);
        self.lifecycle.closed.store(true, Ordering::SeqCst);
        stop_committer(&self.inner, &self.lifecycle.committer);
    }

    /// Clean shutdown: waits for queued commits, takes a checkpoint marked clean, stops the
    /// committer. Other clones of this engine must not be used afterwards.
    pub fn close(self) -> Result<(), Error> {
        if self.lifecycle.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let done = Completion::new();
        let result = self.run_job(
            Job::Checkpoint {
                clean_shutdown: true,
                done: done.clone(),
            },
            &done,
        );
        stop_committer(&self.inner, &self.lifecycle.committer);
        result.map(|_| ())
    }
}

/// What recovery took from the journal.
struct Replay {
    /// The generation redb's last durable commit named.
    generation: u64,
    /// The newest generation whose records were read (this one or the next).
    newest_generation: u64,
    records: u64,
}

/// Crash recovery's second half: applies the journal records that follow redb's last durable
/// commit (those of the generation it names, then of the next), in order, up to the first that
/// is not whole.
fn replay_journal(db: &redb::Database, files: &[JournalFile; 2]) -> Result<Replay, Error> {
    let (generation, durable) = {
        let txn = db
            .begin_read()
            .map_err(|error| storage_error("reading the journal generation", error))?;
        match txn.open_table(META) {
            Ok(meta) => {
                // Nothing of a file in another format is applied (the open refuses it below).
                match read_meta_u64(&meta, format::META_FORMAT_VERSION)? {
                    Some(version) if version != format::FORMAT_VERSION => {
                        return Ok(Replay {
                            generation: 0,
                            newest_generation: 0,
                            records: 0,
                        });
                    }
                    _ => {}
                }
                let generation = read_meta_u64(&meta, format::META_JOURNAL_GENERATION)?;
                let state = meta
                    .get(format::META_COMMIT_STATE)
                    .map_err(|error| storage_error("reading metadata", error))?
                    .map(|guard| format::CommitState::decode(guard.value()))
                    .unwrap_or_default();
                (generation.unwrap_or_else(first_generation), state)
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {
                (first_generation(), format::CommitState::default())
            }
            Err(error) => return Err(storage_error("reading metadata", error)),
        }
    };
    let scan = Journal::scan(files, generation)?;
    if let Some(reason) = &scan.cut {
        tracing::warn!(
            %reason,
            whole_records = scan.records.len(),
            "the journal ends in a record that is not whole (a torn write at a crash): recovery stops before it"
        );
    }
    let mut replay = Replay {
        generation,
        newest_generation: scan.generation,
        records: 0,
    };
    if scan.records.is_empty() {
        return Ok(replay);
    }
    let mut txn = db
        .begin_write()
        .map_err(|error| storage_error("replaying the journal", error))?;
    txn.set_durability(redb::Durability::None)
        .map_err(|error| storage_error("replaying the journal", error))?;
    let mut state = durable;
    for (last_ts, payload) in &scan.records {
        let payload = &scan.image[payload.clone()];
        if *last_ts <= state.last_ts {
            // Already in redb: closing redb without a checkpoint (a dropped engine) makes its
            // non-durable commits durable without starting a new generation.
            continue;
        }
        let crate::journal::DecodedRecord { units, stable } =
            crate::journal::decode_payload(payload)?;
        let first = units.first().map(|unit| unit.stamps[0]);
        if first.is_none_or(|first| first <= state.last_ts) || units_last(&units) != *last_ts {
            return Err(Error::new(
                ErrorCode::DataCorruptionDetected,
                format!(
                    "a journal record (commits through {last_ts}) does not follow the durable commit at {}; restore from a backup or resync this member",
                    state.last_ts
                ),
            ));
        }
        let totals = committer::write_units(
            &txn,
            &units,
            &committer::CommitBase {
                stable,
                next_ident: state.next_ident,
            },
        )?;
        state.last_ts = totals.last;
        state.oplog_bytes = totals.oplog_bytes;
        state.next_ident = totals.next_ident;
        replay.records += 1;
    }
    txn.commit()
        .map_err(|error| storage_error("replaying the journal", error))?;
    tracing::info!(
        records = replay.records,
        bytes = scan.bytes,
        generations = ?(replay.generation..=replay.newest_generation),
        through = %state.last_ts,
        "replayed the journal"
    );
    Ok(replay)
}

/// The generation a new data file starts from: random, so that the records of a journal left
/// over from another data file in the same dbpath can never pass for this one's.
fn first_generation() -> u64 {
    rand::random::<u64>() >> 2
}

fn units_last(units: &[committer::BatchUnit<'_>]) -> Timestamp {
    units
        .last()
        .and_then(|unit| unit.stamps.last().copied())
        .unwrap_or(Timestamp::ZERO)
}

/// Decodes a catalog key (the keystring of a namespace string) back into the string.
fn decode_catalog_key(key: &[u8]) -> Option<String> {
    let (&type_byte, rest) = key.split_first()?;
    if type_byte != 0x3C {
        return None;
    }
    let mut bytes = Vec::with_capacity(rest.len());
    let mut index = 0;
    while index < rest.len() {
        let byte = rest[index];
        if byte == 0x00 {
            match rest.get(index + 1) {
                Some(0xFF) => {
                    bytes.push(0x00);
                    index += 2;
                    continue;
                }
                Some(0x00) => return String::from_utf8(bytes).ok(),
                _ => return None,
            }
        }
        bytes.push(byte);
        index += 1;
    }
    None
}

/// Reads every version of every catalog entry.
pub(crate) fn load_catalog(db: &redb::Database) -> Result<CatalogMirror, Error> {
    let txn = db
        .begin_read()
        .map_err(|error| storage_error("loading the catalog", error))?;
    let current_name = format::current_table_name(CATALOG_IDENT);
    let history_name = format::history_table_name(CATALOG_IDENT);
    let current = txn
        .open_table(redb::TableDefinition::<&[u8], &[u8]>::new(&current_name))
        .map_err(|error| storage_error("loading the catalog", error))?;
    let history = txn
        .open_table(redb::TableDefinition::<&[u8], &[u8]>::new(&history_name))
        .map_err(|error| storage_error("loading the catalog", error))?;
    type Versions = Vec<(Timestamp, Option<Vec<u8>>)>;
    let mut versions_by_key: std::collections::BTreeMap<Vec<u8>, Versions> = Default::default();
    for entry in history
        .iter()
        .map_err(|error| storage_error("loading the catalog", error))?
    {
        let (key, value) = entry.map_err(|error| storage_error("loading the catalog", error))?;
        let key = key.value();
        assert!(key.len() > 8, "catalog history key too short");
        let user_key = key[..key.len() - 8].to_vec();
        let version = format::decode_version(value.value());
        versions_by_key
            .entry(user_key)
            .or_default()
            .push((version.ts, version.payload.map(<[u8]>::to_vec)));
    }
    for entry in current
        .iter()
        .map_err(|error| storage_error("loading the catalog", error))?
    {
        let (key, value) = entry.map_err(|error| storage_error("loading the catalog", error))?;
        let version = format::decode_version(value.value());
        versions_by_key
            .entry(key.value().to_vec())
            .or_default()
            .push((version.ts, version.payload.map(<[u8]>::to_vec)));
    }
    let mut mirror = CatalogMirror::default();
    for (key, mut versions) in versions_by_key {
        let name = decode_catalog_key(&key).ok_or_else(|| {
            Error::new(
                ErrorCode::DataCorruptionDetected,
                "catalog key is not a namespace",
            )
        })?;
        let ns = cairn_types::Namespace::parse(&name)?;
        versions.sort_by_key(|(ts, _)| *ts);
        for (ts, payload) in versions {
            let meta = match payload {
                Some(bytes) => Some(Arc::new(decode_meta(&bytes)?)),
                None => None,
            };
            mirror.apply(&ns, ts, meta);
        }
    }
    Ok(mirror)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_keys_decode() {
        let ns = cairn_types::Namespace::new("db", "a\0b.c");
        let key = crate::catalog::catalog_key(&ns);
        assert_eq!(decode_catalog_key(&key).as_deref(), Some("db.a\0b.c"));
        assert_eq!(decode_catalog_key(b"\x01abc"), None);
    }
}
