//! The committer: the only writer of redb.
//!
//! It takes queued jobs in order. Consecutive commits form one batch (group commit):
//! timestamps are assigned in queue order and oplog entries are stamped. The batch's journal
//! record is appended and the batch joins the memtable (`memtable`); only then does it become
//! visible: catalog mirror first, then the visible timestamp, then the key claims are released
//! and the committers told; `j: true` committers once the journal is synced through their
//! record (`settle_sync`). The flusher (`flush_memtable`) writes the memtable's batches to redb
//! in one transaction: every write moves the version it replaces into history and is logged in
//! the write log, oplog entries are stored. The periodic durable commit (every
//! `data_sync_interval_ms`) drains the memtable, commits redb durably, and the journal starts
//! over.
//!
//! Invariants (asserted): commit timestamps strictly increase; a new version's timestamp is
//! greater than the version it replaces; undo in `recover_to_stable` finds each logged version
//! still current.

use crate::catalog::CollectionMeta;
use crate::completion::{Completion, Leadable};
use crate::engine::{Inner, storage_error};
use crate::format::{
    self, DROP_PENDING, META, OPLOG, WRITELOG, decode_version, decode_writelog_key,
    drop_pending_key, history_key, writelog_key,
};
use crate::journal::RECORD_PAYLOAD_BYTES_MAX;
use crate::keylocks::{KeyId, OwnerId};
use crate::stats::Counters;
use crate::write::{CommitInfo, Durability};
use bson::Document;
use cairn_types::{Error, ErrorCode, Namespace, Timestamp};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// One staged write: `value` `None` is a delete.
#[derive(Debug, Clone)]
pub(crate) struct StagedWrite {
    pub ident: u64,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub slot: u32,
}

/// A unit of work on its way to disk.
pub(crate) struct CommitRequest {
    pub owner: OwnerId,
    pub writes: Vec<StagedWrite>,
    pub oplog: Vec<Document>,
    pub slot_count: u32,
    pub explicit_timestamps: Option<Vec<Timestamp>>,
    pub durability: Durability,
    /// Written keys released when the commit was queued (see `keylocks`).
    pub sealed: Vec<KeyId>,
    /// Claimed keys held until the commit is visible.
    pub claimed: Vec<KeyId>,
    pub catalog_changes: Vec<(Namespace, Option<Arc<CollectionMeta>>, u32)>,
    pub drop_idents: Vec<(u64, u32)>,
    pub max_ident: u64,
    pub done: Arc<Completion<Result<CommitInfo, Error>>>,
}

/// One unit of work of a batch with its commit timestamps assigned and its oplog entries
/// stamped: what is applied to redb, and what a journal record holds (borrowed when
/// committing, owned when replayed).
#[derive(Debug)]
pub(crate) struct BatchUnit<'a> {
    pub stamps: Vec<Timestamp>,
    pub writes: Cow<'a, [StagedWrite]>,
    /// Serialized oplog entries, `ts` filled in; entry `k` is at `stamps[k]`.
    pub oplog: Vec<Vec<u8>>,
    pub drops: Cow<'a, [(u64, u32)]>,
    pub max_ident: u64,
}

/// Where a committer waits for its commit.
type CommitDone = Arc<Completion<Result<CommitInfo, Error>>>;

/// Commits and flushes of a processed batch that wait for the journal to be synced through
/// `lsn`. The leader syncs after handing the writer over (`lead`), so that the next batch is
/// applied while this one syncs.
#[derive(Default)]
pub(crate) struct AwaitingSync {
    lsn: u64,
    /// When the oldest waiter joined its sync group (`settle_sync`).
    since: Option<std::time::Instant>,
    commits: Vec<(CommitDone, CommitInfo)>,
    flushes: Vec<Arc<Completion<Result<Timestamp, Error>>>>,
    /// Commits that are done once visible (`j: false`, or durable in redb): told by the leader
    /// after it has handed the writer over (`tell_visible`), so that waking their threads, a
    /// few microseconds each, does not hold up the next batch.
    visible: Vec<(CommitDone, CommitInfo)>,
}

impl AwaitingSync {
    fn is_empty(&self) -> bool {
        self.commits.is_empty() && self.flushes.is_empty()
    }

    /// Tells the commits that were done once visible (see [`tell`]).
    fn tell_visible(&mut self, inner: &Inner, own: usize) {
        if !self.visible.is_empty() {
            tell(
                inner,
                self.visible.drain(..).map(|(done, info)| (done, Ok(info))),
                own,
            );
        }
    }
}

/// The outcome of a commit on its way to the committer that waits for it.
type Outcome = (CommitDone, Result<CommitInfo, Error>);

/// Committers yet to be told their outcome (see [`tell`]).
#[derive(Default)]
pub(crate) struct Tells {
    queue: parking_lot::Mutex<std::collections::VecDeque<Outcome>>,
    queued: std::sync::atomic::AtomicUsize,
}

/// How many queued outcomes a committer tells when it has been told its own.
const TELL_FAN_OUT: usize = 2;

/// Tells many committers their outcome without one thread waking them all: waking a
/// sleeping thread costs the waker several microseconds (a futex wake, often an
/// inter-processor interrupt, and on a busy machine the woken thread preempting it), so
/// the leader or syncer that woke a whole group held up the next batch or fdatasync by
/// that much per member. The outcomes are queued; `own` (the caller's own commit, if
/// among them) is told at once, the caller tells `TELL_FAN_OUT` more, and every committer
/// that is told tells `TELL_FAN_OUT` of the rest before it returns ([`help_tell`]), so a
/// group of `n` is woken in about `log2(n)` rounds spread over every core. In `Inline` mode
/// no committer waits to pass outcomes on, so all are told at once.
fn tell(inner: &Inner, outcomes: impl IntoIterator<Item = Outcome>, own: usize) {
    if inner.config.commit_mode == crate::config::CommitMode::Inline {
        for (done, outcome) in outcomes {
            done.complete(outcome);
        }
        return;
    }
    {
        let mut queue = inner.tells.queue.lock();
        let before = queue.len();
        for (done, outcome) in outcomes {
            if done.is(own) {
                done.complete(outcome);
            } else {
                queue.push_back((done, outcome));
            }
        }
        inner
            .tells
            .queued
            .fetch_add(queue.len() - before, Ordering::Release);
    }
    help_tell(inner);
}

/// Tells up to `TELL_FAN_OUT` queued committers their outcome (see [`tell`]).
pub(crate) fn help_tell(inner: &Inner) {
    if inner.tells.queued.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut told = [const { None }; TELL_FAN_OUT];
    {
        let mut queue = inner.tells.queue.lock();
        for slot in &mut told {
            *slot = queue.pop_front();
        }
        let taken = told.iter().filter(|slot| slot.is_some()).count();
        inner.tells.queued.fetch_sub(taken, Ordering::Release);
    }
    for (done, outcome) in told.into_iter().flatten() {
        done.complete(outcome);
    }
}

/// Journal records buffered in memory beyond this are written out by the next leader (a
/// backstop: the flusher thread writes them out from `JOURNAL_WRITE_OUT_BYTES`).
const JOURNAL_BUFFER_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The flusher thread writes buffered journal records out (without an fdatasync) once they
/// pass this, so that committing threads rarely pay for the write.
const JOURNAL_WRITE_OUT_BYTES: usize = 256 * 1024;

/// Longest a `j: true` commit's journal sync waits for more batches to share its fdatasync.
const SYNC_DEFER_MAX: Duration = Duration::from_micros(1_000);

/// A sync group this large syncs without waiting for more: with many writers, one fdatasync
/// running while the next group forms beats one group of everyone (measured with
/// `cairn-bench storage --workload insert_j1`: 8 writers gain from waiting, 64 lose).
const SYNC_GROUP_ENOUGH: usize = 16;

/// Most fdatasyncs one syncer runs in a row (see [`run_syncer`]).
const SYNC_ROUNDS_MAX: usize = 4;

/// Work for the committer.
pub(crate) enum Job {
    Commit(CommitRequest),
    Flush(Arc<Completion<Result<Timestamp, Error>>>),
    Checkpoint {
        clean_shutdown: bool,
        done: Arc<Completion<Result<Timestamp, Error>>>,
    },
    CollectGarbage(Arc<Completion<Result<usize, Error>>>),
    RecoverToStable(Arc<Completion<Result<Timestamp, Error>>>),
    TruncateOplogAfter(Timestamp, Arc<Completion<Result<u64, Error>>>),
}

impl Job {
    /// The waiter of this job, which can be asked to lead.
    pub(crate) fn waiter(&self) -> &dyn Leadable {
        match self {
            Job::Commit(request) => request.done.as_ref(),
            Job::Flush(done) | Job::Checkpoint { done, .. } | Job::RecoverToStable(done) => {
                done.as_ref()
            }
            Job::CollectGarbage(done) => done.as_ref(),
            Job::TruncateOplogAfter(_, done) => done.as_ref(),
        }
    }

    /// Fails the job without running it.
    pub(crate) fn fail(self, error: Error) {
        match self {
            Job::Commit(request) => request.done.complete(Err(error)),
            Job::Flush(done) | Job::Checkpoint { done, .. } | Job::RecoverToStable(done) => {
                done.complete(Err(error))
            }
            Job::CollectGarbage(done) => done.complete(Err(error)),
            Job::TruncateOplogAfter(_, done) => done.complete(Err(error)),
        }
    }
}

/// Group commit by leader hand-over (as LevelDB's and RocksDB's write groups): a caller that
/// queues a job when no leader is active becomes the leader and runs one batch itself, with no
/// thread switch: the batch is the run of commits and journal flushes at the head of the queue
/// (up to `commit_batch_requests_max`), or one other job. Callers that queue while a batch runs
/// wait; when the leader finishes, it asks the waiter of the next queued job to lead.
/// Invariant: no leader active implies an empty queue.
///
/// `own` is the identity of the leader's own completion (`Completion::identity`): the leader
/// runs its batch's journal sync itself only when it waits for it.
pub(crate) fn lead(inner: &Inner, own: usize) {
    let jobs = {
        let mut queue = inner.queue.lock();
        assert!(queue.leader_active, "only the leader takes jobs");
        let mut jobs = Vec::new();
        while let Some(job) = queue.jobs.front() {
            let batches = matches!(job, Job::Commit(_) | Job::Flush(_));
            if !jobs.is_empty()
                && (!batches || jobs.len() >= inner.config.commit_batch_requests_max)
            {
                break;
            }
            jobs.push(queue.jobs.pop_front().expect("front exists"));
            if !batches {
                break;
            }
        }
        jobs
    };
    assert!(!jobs.is_empty(), "a leader always has its own job queued");
    let awaiting = {
        let writer = inner.writer.lock();
        let awaiting = process(inner, jobs);
        drop(writer);
        awaiting
    };
    {
        let mut queue = inner.queue.lock();
        match queue.jobs.front() {
            Some(next) => next.waiter().offer_lead(),
            None => queue.leader_active = false,
        }
    }
    settle_sync(inner, awaiting, own);
    write_out_large_buffer(inner);
}

/// After a run of `j: false` commits, writes their buffered journal records out (without an
/// fdatasync) once they pass `JOURNAL_BUFFER_BYTES_MAX`, so that the buffer stays small (the
/// flusher thread usually has, from `JOURNAL_WRITE_OUT_BYTES`).
pub(crate) fn write_out_large_buffer(inner: &Inner) {
    write_out_journal(inner, JOURNAL_BUFFER_BYTES_MAX);
}

/// Writes buffered journal records out, without an fdatasync, once they pass `min_bytes`. A
/// failed write is the engine's failure (see `Journal`: a journal error sticks).
fn write_out_journal(inner: &Inner, min_bytes: usize) {
    if inner.journal.buffered_bytes() >= min_bytes {
        if let Err(error) = inner
            .journal
            .sync_through(inner.journal.written_lsn(), false)
        {
            record_failure(inner, &error);
        }
    }
}

/// Syncs the journal when records are unsynced and `commit_interval_ms` has passed since the
/// last sync (`j: false` commits are durable within that interval).
pub(crate) fn sync_journal_if_due(inner: &Inner) {
    let now = inner.clock.monotonic();
    let last_sync = inner.timestamps.lock().last_journal_sync_at;
    if inner.journal.unsynced()
        && now.saturating_sub(last_sync) >= Duration::from_millis(inner.config.commit_interval_ms)
    {
        if let Err(error) = sync_journal(inner, inner.journal.written_lsn()) {
            tracing::error!(%error, "journal sync failed");
            record_failure(inner, &error);
        }
    }
}

/// The `j: true` commits and flushes waiting for a journal sync, and whether a thread has
/// taken the job of syncing for them (the *syncer*).
#[derive(Default)]
pub(crate) struct SyncGroup {
    awaiting: AwaitingSync,
    /// The completion identity (`Completion::identity`) of the committer that runs the group's
    /// sync.
    syncer: Option<usize>,
    /// A group's fdatasync is running. The next group keeps forming until it ends: it could
    /// not sync before anyway (one fdatasync at a time), and everyone who commits meanwhile
    /// shares its fdatasync instead of queueing one of their own behind it.
    in_flight: bool,
}

/// Group commit of the journal. The waiters of a batch join the current group; the first
/// leader to find no syncer makes one: itself when it waits for the sync too (a `j: true` commit
/// of its own), otherwise the first waiter of the group, woken to do it (so that a `j: false`
/// caller never waits for others' fdatasync). While the previous group's fdatasync runs, the
/// group only grows; then the syncer runs its fdatasync once no more records are coming soon
/// (no unit of work is being prepared and no batch is queued or running), once
/// `SYNC_GROUP_ENOUGH` wait, or once the oldest has waited `SYNC_DEFER_MAX`: one fdatasync then
/// covers every batch applied meanwhile. A lone writer syncs at once.
/// (PostgreSQL's `commit_delay` with `commit_siblings`, decided by what is in flight.)
fn settle_sync(inner: &Inner, mut awaiting: AwaitingSync, own: usize) {
    awaiting.tell_visible(inner, own);
    let mut group = inner.sync_group.lock();
    if !awaiting.is_empty() {
        let pending = &mut group.awaiting;
        pending.lsn = pending.lsn.max(awaiting.lsn);
        pending.commits.extend(awaiting.commits);
        pending.flushes.extend(awaiting.flushes);
        if pending.since.is_none() {
            pending.since = Some(std::time::Instant::now());
        }
    }
    if group.syncer.is_some() {
        // A batch finished: the syncer checks again whether more are coming (unless it waits
        // for the fdatasync in flight, which wakes it when it ends).
        if !group.in_flight {
            inner.sync_wake.notify_one();
        }
        return;
    }
    if group.awaiting.is_empty() {
        return;
    }
    let mine = group.awaiting.commits.iter().any(|(done, _)| done.is(own))
        || group.awaiting.flushes.iter().any(|done| done.is(own));
    if !mine {
        let syncer = match (
            group.awaiting.commits.first(),
            group.awaiting.flushes.first(),
        ) {
            (Some((done, _)), _) => {
                done.offer_sync();
                done.identity()
            }
            (None, Some(done)) => {
                done.offer_sync();
                done.identity()
            }
            (None, None) => unreachable!("the group is not empty"),
        };
        group.syncer = Some(syncer);
        return;
    }
    group.syncer = Some(own);
    drop(group);
    run_syncer(inner, own);
}

/// Runs the journal sync of the current group as its syncer (see [`settle_sync`]).
pub(crate) fn run_syncer(inner: &Inner, own: usize) {
    let mut group = inner.sync_group.lock();
    for round in 1.. {
        loop {
            if group.syncer != Some(own) {
                // The syncer of the previous group took this one over (below).
                return;
            }
            if group.in_flight {
                inner.sync_wake.wait(&mut group);
                continue;
            }
            // Real time, not the engine's clock: this bounds a wait of real threads, and
            // decides only when an fdatasync runs, never what it makes durable.
            let deadline = group
                .awaiting
                .since
                .expect("a group with a syncer has waiters")
                + SYNC_DEFER_MAX;
            if group.awaiting.commits.len() + group.awaiting.flushes.len() >= SYNC_GROUP_ENOUGH
                || !more_records_coming(inner)
                || std::time::Instant::now() >= deadline
            {
                break;
            }
            inner.sync_wake.wait_until(&mut group, deadline);
        }
        let all = std::mem::take(&mut group.awaiting);
        group.syncer = None;
        group.in_flight = true;
        drop(group);
        let synced = sync_for(inner, &all);
        group = inner.sync_group.lock();
        group.in_flight = false;
        // A group that formed during this fdatasync is synced by this thread, which is
        // running, rather than by its syncer once that thread has been woken and scheduled
        // (80-130 us with 64 writers on two cores, while the group just synced is being
        // woken), for at most `SYNC_ROUNDS_MAX` rounds, so that this committer returns soon.
        let chain = round < SYNC_ROUNDS_MAX && !group.awaiting.is_empty();
        if chain {
            group.syncer = Some(own);
        }
        drop(group);
        // Wakes the next group's syncer: to start its fdatasync, or to leave it to this one.
        inner.sync_wake.notify_all();
        tell_synced(inner, all, synced, own);
        if !chain {
            return;
        }
        group = inner.sync_group.lock();
    }
}

/// Whether a journal record is likely to be appended soon: a unit of work is being prepared,
/// or a batch is queued or being applied.
fn more_records_coming(inner: &Inner) -> bool {
    inner.active_units.load(Ordering::Acquire) > 0 || {
        let queue = inner.queue.lock();
        queue.leader_active || !queue.jobs.is_empty()
    }
}

/// `Inline` mode: syncs the journal for the commits and flushes that wait for it, then tells
/// them. Runs without the writer mutex; concurrent callers share one fdatasync
/// (`Journal::sync_through`).
pub(crate) fn finish_sync(inner: &Inner, mut awaiting: AwaitingSync) {
    awaiting.tell_visible(inner, 0);
    if !awaiting.is_empty() {
        let synced = sync_for(inner, &awaiting);
        tell_synced(inner, awaiting, synced, 0);
    }
}

/// The journal sync that `awaiting` waits for (or the engine's failure).
fn sync_for(inner: &Inner, awaiting: &AwaitingSync) -> Result<(Timestamp, Timestamp), Error> {
    let failure = inner.failure.lock().clone();
    match failure {
        Some(error) => Err(error),
        None => sync_journal(inner, awaiting.lsn),
    }
}

/// Tells the commits and flushes of `awaiting` the outcome of their journal sync.
fn tell_synced(
    inner: &Inner,
    awaiting: AwaitingSync,
    synced: Result<(Timestamp, Timestamp), Error>,
    own: usize,
) {
    match synced {
        Ok((synced_ts, durable)) => {
            for done in awaiting.flushes {
                done.complete(Ok(durable));
            }
            let outcomes = awaiting.commits.into_iter().map(|(done, info)| {
                if info.last_ts <= synced_ts {
                    let info = CommitInfo {
                        durable: true,
                        ..info
                    };
                    (done, Ok(info))
                } else {
                    // Only when recovery to the stable timestamp discarded the commit while it
                    // waited (which its caller's exclusive lock is meant to prevent).
                    let error = Error::new(
                        ErrorCode::InterruptedDueToReplStateChange,
                        format!(
                            "the commit at {} was rolled back before it was durable",
                            info.last_ts
                        ),
                    );
                    (done, Err(error))
                }
            });
            tell(inner, outcomes, own);
        }
        Err(error) => {
            record_failure(inner, &error);
            for (done, _) in awaiting.commits {
                done.complete(Err(error.clone()));
            }
            for done in awaiting.flushes {
                done.complete(Err(error.clone()));
            }
        }
    }
}

/// The background thread: runs the periodic work (journal flush, garbage collection,
/// checkpoints) every tick.
pub(crate) fn run_periodic(inner: Arc<Inner>) {
    let tick = Duration::from_millis(
        inner
            .config
            .commit_interval_ms
            .min(inner.config.gc_interval_ms)
            .max(1),
    );
    let mut behind = false;
    loop {
        {
            let mut queue = inner.queue.lock();
            if queue.shutdown {
                break;
            }
            // A garbage-collection pass that was full means more is due: go on at once (the
            // writer mutex is released in between, so commits interleave with the passes).
            if !behind {
                inner.queue_signal.wait_for(&mut queue, tick);
            }
            if queue.shutdown {
                break;
            }
        }
        // Outside the writer mutex: commits go on while the journal syncs and the kernel
        // writes data pages back.
        sync_journal_if_due(&inner);
        if let Some(writeback) = &inner.writeback {
            writeback.start();
        }
        behind = periodic(&inner);
        if behind {
            std::thread::yield_now();
        }
    }
}

/// Syncs the journal through `lsn` (sharing a concurrent caller's fdatasync); returns the
/// durable timestamp.
/// Returns the newest commit timestamp the journal has made durable (which may belong to a batch
/// not yet visible) and the engine's durable timestamp after it (never past the newest commit).
fn sync_journal(inner: &Inner, lsn: u64) -> Result<(Timestamp, Timestamp), Error> {
    let (synced_ts, synced_now) = inner.journal.sync_through(lsn, true)?;
    if synced_now {
        Counters::add(&inner.counters.journal_syncs, 1);
    }
    let mut timestamps = inner.timestamps.lock();
    let durable = synced_ts.min(timestamps.last_assigned);
    if durable > timestamps.durable {
        timestamps.durable = durable;
    }
    if synced_now {
        timestamps.last_journal_sync_at = inner.clock.monotonic();
    }
    Ok((synced_ts, timestamps.durable))
}

/// Processes jobs: a run of commits and journal flushes as one batch, or one other job. The
/// caller holds the writer mutex, and afterwards (without it) passes what is returned to
/// [`finish_sync`].
///
/// The commits of a batch commit first; then its `j: true` commits and every flush of the batch
/// wait for one journal sync through the batch's record (concurrent `j: true` writers share
/// one fdatasync). A flush promises that every commit visible when it was asked for is durable
/// when it returns; syncing through commits queued behind it only makes more durable.
pub(crate) fn process(inner: &Inner, jobs: Vec<Job>) -> AwaitingSync {
    let mut commits = Vec::new();
    let mut flushes = Vec::new();
    let mut awaiting = AwaitingSync::default();
    for job in jobs {
        match job {
            Job::Commit(request) => commits.push(request),
            Job::Flush(done) => flushes.push(done),
            other => {
                assert!(
                    commits.is_empty() && flushes.is_empty(),
                    "jobs other than commits and flushes run alone"
                );
                run_job(inner, other);
            }
        }
    }
    if !commits.is_empty() {
        commit_batch(inner, commits, &mut awaiting);
        let memtable = &inner.memtable;
        let inline = inner.config.commit_mode == crate::config::CommitMode::Inline;
        let due = memtable.flush_due();
        if memtable.unflushed_bytes() > crate::memtable::MEMTABLE_BYTES_MAX || (inline && due) {
            // The flusher fell behind (or there is none): the leader writes the memtable
            // itself, which holds back further commits until it is done.
            if let Err(error) = flush_memtable(inner) {
                tracing::error!(%error, "writing the memtable to the data file failed");
            }
        } else if due {
            memtable.wake_flusher();
        }
    }
    if !flushes.is_empty() {
        Counters::add(&inner.counters.flushes_shared, flushes.len() as u64 - 1);
        awaiting.flushes = flushes;
    }
    awaiting.lsn = inner.journal.written_lsn();
    awaiting
}

fn run_job(inner: &Inner, job: Job) {
    match job {
        Job::Commit(_) | Job::Flush(_) => unreachable!("commits and flushes are batched"),
        Job::Checkpoint {
            clean_shutdown,
            done,
        } => done.complete(durable_marker(inner, Some(clean_shutdown))),
        Job::CollectGarbage(done) => done.complete(collect_garbage(inner)),
        Job::RecoverToStable(done) => done.complete(recover_to_stable(inner)),
        Job::TruncateOplogAfter(ts, done) => done.complete(truncate_oplog_after(inner, ts)),
    }
}

/// The periodic work that is due: the data's durable commit or the checkpoint
/// ([`background_durable_commit`]), then garbage collection ([`collect_garbage`]), both made
/// while commits go on. (The journal's sync runs before: [`sync_journal_if_due`].) Returns true
/// when garbage collection is behind (its pass was full).
pub(crate) fn periodic(inner: &Inner) -> bool {
    if inner.failure.lock().is_some() {
        return false;
    }
    let mut behind = false;
    let now = inner.clock.monotonic();
    let state = *inner.timestamps.lock();
    let checkpoint_due = now.saturating_sub(state.last_checkpoint_at)
        >= Duration::from_secs(inner.config.checkpoint_interval_secs);
    let sync_due = state.dirty
        && now.saturating_sub(state.last_durable_at)
            >= Duration::from_millis(inner.config.data_sync_interval_ms);
    if checkpoint_due || sync_due {
        if let Err(error) = background_durable_commit(inner, checkpoint_due) {
            tracing::error!(%error, checkpoint = checkpoint_due, "durable commit failed");
        }
    }
    if now.saturating_sub(state.last_gc_at) >= Duration::from_millis(inner.config.gc_interval_ms) {
        match collect_garbage(inner) {
            Ok(collected) => behind = collected >= inner.config.gc_batch_entries_max,
            Err(error) => tracing::error!(%error, "garbage collection failed"),
        }
    }
    behind
}

/// The periodic durable commit (and, with `checkpoint`, the periodic checkpoint), made without
/// the writer mutex, so that commits go on meanwhile:
/// 1. the journal switches to the next generation, in its other file ([`Journal::switch`]);
///    commits from here on append their records there;
/// 2. the memtable is written to redb (commits after the switch too, which is harmless:
///    recovery skips records redb holds);
/// 3. a durable redb commit records the new generation (and the checkpoint's timestamp: the
///    stable timestamp at the switch, which redb now holds);
/// 4. the old generation's records are no longer needed ([`Journal::closed`]).
///
/// A crash before 3 completes recovers from the previous durable commit and replays both
/// generations.
///
/// [`Journal::switch`]: crate::journal::Journal::switch
/// [`Journal::closed`]: crate::journal::Journal::closed
fn background_durable_commit(inner: &Inner, checkpoint: bool) -> Result<(), Error> {
    let _marker = inner.marker.lock();
    if let Some(error) = inner.failure.lock().clone() {
        return Err(error);
    }
    // Cleared before the switch: a commit after it leaves the next durable commit due.
    let stable = {
        let mut timestamps = inner.timestamps.lock();
        timestamps.dirty = false;
        timestamps.stable
    };
    let (generation, closed_ts) = inner.journal.switch();
    assert!(
        stable <= closed_ts,
        "the stable timestamp is at or before the newest commit"
    );
    flush_memtable(inner)?;
    let oldest = inner.timestamps.lock().oldest;
    let committed = (|| {
        let txn = begin(inner, true)?;
        // The flushes wrote the commit state of what redb holds; the stable timestamp may have
        // moved on since without a commit.
        let stored = stored_commit_state(&txn)?;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|error| storage_error("opening metadata", error))?;
            put_meta(&mut meta, format::META_JOURNAL_GENERATION, generation)?;
            put_meta(&mut meta, format::META_OLDEST_TS, oldest.as_u64())?;
            assert!(
                stored.last_ts >= closed_ts,
                "redb holds every commit of the closed generation"
            );
            if stable > stored.stable_ts {
                put_commit_state(
                    &mut meta,
                    &format::CommitState {
                        stable_ts: stable,
                        ..stored
                    },
                )?;
            }
            if checkpoint {
                put_meta(&mut meta, format::META_CHECKPOINT_TS, stable.as_u64())?;
                put_meta(&mut meta, format::META_CLEAN_SHUTDOWN, 0)?;
            }
        }
        commit_txn(inner, txn).map_err(|error| storage_error("durable commit", error))
    })();
    if let Err(error) = committed {
        record_failure(inner, &error);
        return Err(error);
    }
    inner.journal.closed(generation);
    let now = inner.clock.monotonic();
    let mut timestamps = inner.timestamps.lock();
    if closed_ts > timestamps.durable {
        timestamps.durable = closed_ts;
    }
    timestamps.last_durable_at = now;
    Counters::add(&inner.counters.durable_commits, 1);
    if checkpoint {
        timestamps.checkpoint = stable;
        timestamps.last_checkpoint_at = now;
        Counters::add(&inner.counters.checkpoints, 1);
    }
    Ok(())
}

fn next_timestamp(last: Timestamp, wall_secs: u32) -> Timestamp {
    if wall_secs > last.secs {
        Timestamp::new(wall_secs, 1)
    } else {
        last.successor()
    }
}

type RawTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// The redb tables one write transaction touches, opened once each.
struct BatchTables<'txn> {
    txn: &'txn WriteTransaction,
    current: HashMap<u64, RawTable<'txn>>,
    history: HashMap<u64, RawTable<'txn>>,
}

fn open_raw<'txn>(txn: &'txn WriteTransaction, name: &str) -> Result<RawTable<'txn>, Error> {
    txn.open_table(TableDefinition::<&[u8], &[u8]>::new(name))
        .map_err(|error| storage_error("opening a table", error))
}

impl<'txn> BatchTables<'txn> {
    fn new(txn: &'txn WriteTransaction) -> BatchTables<'txn> {
        BatchTables {
            txn,
            current: HashMap::new(),
            history: HashMap::new(),
        }
    }

    fn current(&mut self, ident: u64) -> Result<&mut RawTable<'txn>, Error> {
        if !self.current.contains_key(&ident) {
            let table = open_raw(self.txn, &format::current_table_name(ident))?;
            self.current.insert(ident, table);
        }
        Ok(self.current.get_mut(&ident).expect("just inserted"))
    }

    fn history(&mut self, ident: u64) -> Result<&mut RawTable<'txn>, Error> {
        if !self.history.contains_key(&ident) {
            let table = open_raw(self.txn, &format::history_table_name(ident))?;
            self.history.insert(ident, table);
        }
        Ok(self.history.get_mut(&ident).expect("just inserted"))
    }
}

/// What [`apply_write`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Applied {
    /// A delete of a key that does not exist: nothing written.
    Nothing,
    /// The key's first version.
    Inserted,
    /// A version replaced: the old one moved to history.
    Replaced,
}

/// Writes one version: the replaced version moves to history, the write is logged.
///
/// A write that replaces nothing is logged only when `stable_lags` (stable does not follow the
/// newest commit). The write log serves two walks: garbage collection, which removes the
/// history version a write replaced (there is none), and recovery to the stable timestamp,
/// which undoes writes after stable. A batch committed while stable follows the newest commit
/// is at or before stable from its commit on, and stable never moves back, so no recovery ever
/// undoes it. That saves a first insert of a key (the common write of a standalone node) one
/// of its two B-tree inserts.
fn apply_write(
    tables: &mut BatchTables<'_>,
    writelog: &mut redb::Table<'_, &'static [u8], ()>,
    ident: u64,
    key: &[u8],
    value: Option<&[u8]>,
    ts: Timestamp,
    stable_lags: bool,
) -> Result<Applied, Error> {
    let current = tables.current(ident)?;
    if value.is_none()
        && current
            .get(key)
            .map_err(|error| storage_error("reading", error))?
            .is_none()
    {
        // Deleting a key that never existed leaves nothing to version.
        return Ok(Applied::Nothing);
    }
    // One descent: the insert hands back the version it replaces.
    let replaced = current
        .insert(key, format::encode_version(ts, value).as_slice())
        .map_err(|error| storage_error("writing", error))?
        .map(|guard| guard.value().to_vec());
    if let Some(old) = &replaced {
        to_history(tables, ident, key, ts, decode_version(old).ts, old)?;
    }
    if replaced.is_some() || stable_lags {
        log_write(writelog, ts, ident, key)?;
    }
    Ok(if replaced.is_some() {
        Applied::Replaced
    } else {
        Applied::Inserted
    })
}

/// `key`'s version `old`, committed at `old_ts`, replaced by a write at `ts`: it moves to
/// history, keyed by the time it stopped being current.
fn to_history(
    tables: &mut BatchTables<'_>,
    ident: u64,
    key: &[u8],
    ts: Timestamp,
    old_ts: Timestamp,
    old: &[u8],
) -> Result<(), Error> {
    assert!(
        old_ts < ts,
        "new version {ts} is not newer than the version {old_ts} it replaces"
    );
    tables
        .history(ident)?
        .insert(history_key(key, ts).as_slice(), old)
        .map_err(|error| storage_error("writing history", error))?;
    Ok(())
}

/// Logs a write at `ts` in the write log (for garbage collection and recovery to stable).
fn log_write(
    writelog: &mut redb::Table<'_, &'static [u8], ()>,
    ts: Timestamp,
    ident: u64,
    key: &[u8],
) -> Result<(), Error> {
    writelog
        .insert(writelog_key(ts, ident, key).as_slice(), ())
        .map_err(|error| storage_error("writing the write log", error))?;
    Ok(())
}

/// Consecutive writes of one key (a hot document's updates, one unit after another): the
/// newest version, which the current table does not hold yet when `deferred`.
///
/// Applying each write in turn would insert every version into the current table, only for
/// the next write to move it to history. Within a run the replaced version is known without
/// reading it (it is the previous write's), so it goes straight to history, and the current
/// table is written twice per run (its first write, through [`apply_write`], and its last, by
/// [`Run::end`]) instead of once per write. The tables end up exactly as if each write had
/// been applied in turn.
struct Run<'w> {
    ident: u64,
    key: &'w [u8],
    ts: Timestamp,
    value: Option<&'w [u8]>,
    deferred: bool,
}

impl<'w> Run<'w> {
    /// Whether `ident`/`key` continues this run.
    fn continues(&self, ident: u64, key: &[u8]) -> bool {
        self.ident == ident && self.key == key
    }

    /// One more write of the run's key, at `ts`: the run's version moves to history, the
    /// write is logged (it replaces a version, so it is logged whatever the stable timestamp).
    fn extend(
        &mut self,
        tables: &mut BatchTables<'_>,
        writelog: &mut redb::Table<'_, &'static [u8], ()>,
        ts: Timestamp,
        value: Option<&'w [u8]>,
    ) -> Result<(), Error> {
        let version = format::encode_version(self.ts, self.value);
        to_history(tables, self.ident, self.key, ts, self.ts, &version)?;
        log_write(writelog, ts, self.ident, self.key)?;
        self.ts = ts;
        self.value = value;
        self.deferred = true;
        Ok(())
    }

    /// Writes the run's newest version to the current table, if it is not there yet.
    fn end(self, tables: &mut BatchTables<'_>) -> Result<(), Error> {
        if !self.deferred {
            return Ok(());
        }
        let replaced = tables
            .current(self.ident)?
            .insert(
                self.key,
                format::encode_version(self.ts, self.value).as_slice(),
            )
            .map_err(|error| storage_error("writing", error))?;
        // What it replaces is the run's first version, already in history.
        let old_ts = replaced.map(|guard| decode_version(guard.value()).ts);
        assert!(
            old_ts.is_some_and(|old_ts| old_ts < self.ts),
            "a run's last version {} replaced {old_ts:?}, not its first",
            self.ts
        );
        Ok(())
    }
}

fn put_commit_state(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    state: &format::CommitState,
) -> Result<(), Error> {
    meta.insert(format::META_COMMIT_STATE, &state.encode()[..])
        .map_err(|error| storage_error("writing metadata", error))?;
    Ok(())
}

/// The commit state record for the engine's current state with the given overrides.
fn commit_state(
    inner: &Inner,
    last_ts: Timestamp,
    stable_ts: Timestamp,
    oplog_bytes: u64,
) -> format::CommitState {
    format::CommitState {
        last_ts,
        stable_ts,
        oplog_bytes,
        next_ident: inner.next_ident.load(Ordering::Relaxed),
    }
}

/// The commit state a write transaction holds (what redb holds, with its own writes so far).
fn stored_commit_state(txn: &WriteTransaction) -> Result<format::CommitState, Error> {
    let meta = txn
        .open_table(META)
        .map_err(|error| storage_error("opening metadata", error))?;
    let state = meta
        .get(format::META_COMMIT_STATE)
        .map_err(|error| storage_error("reading metadata", error))?
        .map(|guard| format::CommitState::decode(guard.value()))
        .unwrap_or_default();
    Ok(state)
}

fn put_meta(
    meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
    name: &str,
    value: u64,
) -> Result<(), Error> {
    meta.insert(name, &value.to_be_bytes()[..])
        .map_err(|error| storage_error("writing metadata", error))?;
    Ok(())
}

/// Commits a redb write transaction and counts it, so that snapshots opened from here on read
/// a newer redb transaction than the shared one (`snapshot::ReadView`), which is let go.
fn commit_txn(inner: &Inner, txn: WriteTransaction) -> Result<(), redb::CommitError> {
    txn.commit()?;
    inner.redb_commits.fetch_add(1, Ordering::AcqRel);
    // Let go at once unless a snapshot is reading the slot right now (never waits, see
    // `ReadView::latest`); then the next snapshot replaces it.
    let replaced = inner
        .read_view
        .try_write()
        .and_then(|mut shared| shared.take());
    drop(replaced);
    Ok(())
}

fn begin(inner: &Inner, durable: bool) -> Result<WriteTransaction, Error> {
    let mut txn = inner
        .db
        .begin_write()
        .map_err(|error| storage_error("beginning a commit", error))?;
    txn.set_durability(if durable {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    })
    .map_err(|error| storage_error("beginning a commit", error))?;
    Ok(txn)
}

fn record_failure(inner: &Inner, error: &Error) {
    tracing::error!(%error, "commit failed: the storage engine stops accepting writes");
    let mut failure = inner.failure.lock();
    if failure.is_none() {
        *failure = Some(error.clone());
    }
}

/// Commits a run of requests. Requests with explicit timestamps (a secondary applying) and
/// requests with assigned ones go in separate redb transactions, so that explicit timestamps can
/// be checked exactly before anything is applied.
fn commit_batch(inner: &Inner, batch: Vec<CommitRequest>, awaiting: &mut AwaitingSync) {
    let mut group: Vec<CommitRequest> = Vec::new();
    for request in batch {
        let explicit = request.explicit_timestamps.is_some();
        if group
            .first()
            .is_some_and(|first| first.explicit_timestamps.is_some() != explicit)
        {
            commit_group(inner, std::mem::take(&mut group), awaiting);
        }
        group.push(request);
    }
    if !group.is_empty() {
        commit_group(inner, group, awaiting);
    }
}

fn commit_group(inner: &Inner, mut batch: Vec<CommitRequest>, awaiting: &mut AwaitingSync) {
    if let Some(error) = inner.failure.lock().clone() {
        for request in batch {
            release(inner, &request, None);
            request.done.complete(Err(error.clone()));
        }
        return;
    }
    let state = *inner.timestamps.lock();
    // Requests with explicit timestamps that are not after the newest commit fail alone.
    let mut last = state.last_assigned;
    batch.retain(|request| {
        if let Some(timestamps) = &request.explicit_timestamps {
            if timestamps[0] <= last {
                release(inner, request, None);
                request.done.complete(Err(Error::new(
                    ErrorCode::OplogOutOfOrder,
                    format!(
                        "commit timestamp {} is not after the newest commit {last}",
                        timestamps[0]
                    ),
                )));
                return false;
            }
            last = *timestamps.last().expect("at least one timestamp");
        }
        true
    });
    if batch.is_empty() {
        return;
    }
    let now = inner.clock.monotonic();
    // The batch commits durably to redb (draining the memtable, and starting a new journal
    // generation) when the journal is full; otherwise its journal record makes it durable, and
    // the periodic durable commit (`periodic`) syncs the data file.
    let durable = inner.journal.generation_bytes() >= inner.config.journal_bytes_max;
    let outcome = apply_batch(inner, &mut batch, &state, durable);
    match outcome {
        Ok(outcome) => {
            {
                let mut catalog = inner.catalog.write();
                for (request, stamps) in batch.iter().zip(&outcome.stamps) {
                    for (ns, meta, slot) in &request.catalog_changes {
                        catalog.apply(ns, stamps[*slot as usize], meta.clone());
                    }
                }
            }
            {
                let mut timestamps = inner.timestamps.lock();
                assert!(
                    outcome.last > timestamps.last_assigned,
                    "commit timestamps must increase"
                );
                timestamps.last_assigned = outcome.last;
                if timestamps.stable_follows_newest {
                    timestamps.stable = outcome.last;
                }
                // Added, not set from a total taken before: garbage collection subtracts what it
                // truncates without the writer mutex.
                timestamps.oplog_bytes += outcome.oplog_added;
                if durable {
                    timestamps.durable = outcome.last;
                    timestamps.last_durable_at = now;
                    timestamps.dirty = false;
                } else {
                    timestamps.dirty = true;
                }
                let previous = inner.visible.swap(outcome.last.as_u64(), Ordering::AcqRel);
                assert!(
                    previous < outcome.last.as_u64(),
                    "the visible timestamp must increase"
                );
            }
            let counters = &inner.counters;
            Counters::add(&counters.commits, batch.len() as u64);
            Counters::add(&counters.commit_batches, 1);
            if durable {
                Counters::add(&counters.durable_commits, 1);
            } else {
                Counters::add(&counters.journal_records, 1);
                Counters::add(&counters.journal_bytes, outcome.journal_bytes);
            }
            Counters::add(&counters.versions_written, outcome.versions);
            // Histories are counted when a batch reaches redb (mostly by `flush_memtable`).
            Counters::add(&counters.history_versions_written, outcome.histories);
            Counters::add(&counters.oplog_entries_written, outcome.oplog_entries);
            counters
                .largest_batch
                .fetch_max(batch.len() as u64, Ordering::Relaxed);
            let oldest_pin = inner.pins.oldest_pinned().unwrap_or(Timestamp::MAX);
            for (request, stamps) in batch.into_iter().zip(outcome.stamps) {
                let last_ts = *stamps.last().expect("at least one timestamp");
                inner
                    .keylocks
                    .settle(&request.sealed, request.owner, Some(last_ts), oldest_pin);
                inner
                    .keylocks
                    .release(&request.claimed, request.owner, Some(last_ts), oldest_pin);
                let info = CommitInfo {
                    first_ts: stamps[0],
                    last_ts,
                    durable,
                };
                if request.durability == Durability::Journaled && !durable {
                    awaiting.commits.push((request.done, info));
                } else {
                    awaiting.visible.push((request.done, info));
                }
            }
        }
        Err(error) => {
            record_failure(inner, &error);
            for request in batch {
                release(inner, &request, None);
                request.done.complete(Err(error.clone()));
            }
        }
    }
}

fn release(inner: &Inner, request: &CommitRequest, committed_at: Option<Timestamp>) {
    inner.keylocks.settle(
        &request.sealed,
        request.owner,
        committed_at,
        Timestamp::ZERO,
    );
    inner.keylocks.release(
        &request.claimed,
        request.owner,
        committed_at,
        Timestamp::ZERO,
    );
}

struct BatchOutcome {
    last: Timestamp,
    stamps: Vec<Vec<Timestamp>>,
    /// Bytes of the batch's oplog entries.
    oplog_added: u64,
    histories: u64,
    versions: u64,
    oplog_entries: u64,
    journal_bytes: u64,
}

/// Assigns the batch's commit timestamps and stamps its oplog entries. The units take the
/// requests' writes and drops (the memtable keeps them until they are flushed).
fn prepare_units(
    batch: &mut [CommitRequest],
    mut last: Timestamp,
    wall_secs: u32,
) -> Result<Vec<BatchUnit<'static>>, Error> {
    let mut units = Vec::with_capacity(batch.len());
    for request in batch {
        let stamps: Vec<Timestamp> = match &request.explicit_timestamps {
            Some(timestamps) => {
                assert!(timestamps[0] > last, "explicit timestamps were checked");
                timestamps.clone()
            }
            None => (0..request.slot_count)
                .map(|_| {
                    last = next_timestamp(last, wall_secs);
                    last
                })
                .collect(),
        };
        last = *stamps.last().expect("at least one slot");
        let mut oplog = Vec::with_capacity(request.oplog.len());
        for (index, entry) in request.oplog.iter().enumerate() {
            let mut entry = entry.clone();
            entry.insert("ts", bson::Bson::from(stamps[index]));
            oplog.push(bson::serialize_to_vec(&entry).map_err(|error| {
                Error::new(ErrorCode::BadValue, format!("oplog entry: {error}"))
            })?);
        }
        units.push(BatchUnit {
            stamps,
            writes: Cow::Owned(std::mem::take(&mut request.writes)),
            oplog,
            drops: Cow::Owned(std::mem::take(&mut request.drop_idents)),
            max_ident: request.max_ident,
        });
    }
    Ok(units)
}

/// What a batch's commit-state record starts from (besides the oplog's bytes, which
/// [`write_units`] continues from the commit state the transaction holds).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CommitBase {
    /// `None`: stable follows the newest commit.
    pub stable: Option<Timestamp>,
    pub next_ident: u64,
}

/// What writing units added.
pub(crate) struct UnitTotals {
    pub last: Timestamp,
    pub oplog_bytes: u64,
    /// The commit state's next ident after these units.
    pub next_ident: u64,
    pub histories: u64,
    pub versions: u64,
    pub oplog_entries: u64,
}

/// The table in `slot`, opened on first use.
fn opened<'s, T>(
    slot: &'s mut Option<T>,
    open: impl FnOnce() -> Result<T, redb::TableError>,
    context: &str,
) -> Result<&'s mut T, Error> {
    if slot.is_none() {
        *slot = Some(open().map_err(|error| storage_error(context, error))?);
    }
    Ok(slot.as_mut().expect("opened above"))
}

/// Writes units into a redb transaction at their timestamps: versions (the replaced ones into
/// history) and write-log entries, oplog entries, drop-pending entries, and the commit state.
/// What a batch commit and journal replay both do.
pub(crate) fn write_units<'u, 'a: 'u>(
    txn: &WriteTransaction,
    units: impl IntoIterator<Item = &'u BatchUnit<'a>>,
    base: &CommitBase,
) -> Result<UnitTotals, Error> {
    let mut totals = UnitTotals {
        last: Timestamp::ZERO,
        // From what redb holds, not from a total taken when the units committed: garbage
        // collection may have truncated the oplog since (it runs beside commits).
        oplog_bytes: stored_commit_state(txn)?.oplog_bytes,
        next_ident: base.next_ident,
        histories: 0,
        versions: 0,
        oplog_entries: 0,
    };
    let mut tables = BatchTables::new(txn);
    let mut writelog = txn
        .open_table(WRITELOG)
        .map_err(|error| storage_error("opening the write log", error))?;
    // Opened only when a batch has oplog entries or drops.
    let mut oplog = None;
    let mut drop_pending = None;
    let mut run: Option<Run<'u>> = None;
    for unit in units {
        totals.last = *unit.stamps.last().expect("at least one slot");
        for write in unit.writes.iter() {
            let ts = unit.stamps[write.slot as usize];
            let value = write.value.as_deref();
            totals.versions += 1;
            if let Some(run) = run
                .as_mut()
                .filter(|run| run.continues(write.ident, &write.key))
            {
                run.extend(&mut tables, &mut writelog, ts, value)?;
                totals.histories += 1;
                continue;
            }
            if let Some(ended) = run.take() {
                ended.end(&mut tables)?;
            }
            let applied = apply_write(
                &mut tables,
                &mut writelog,
                write.ident,
                &write.key,
                value,
                ts,
                base.stable.is_some(),
            )?;
            if applied == Applied::Replaced {
                totals.histories += 1;
            }
            if applied != Applied::Nothing {
                run = Some(Run {
                    ident: write.ident,
                    key: &write.key,
                    ts,
                    value,
                    deferred: false,
                });
            }
        }
        for (index, bytes) in unit.oplog.iter().enumerate() {
            let ts = unit.stamps[index];
            totals.oplog_bytes += bytes.len() as u64;
            opened(&mut oplog, || txn.open_table(OPLOG), "opening the oplog")?
                .insert(ts.as_u64(), bytes.as_slice())
                .map_err(|error| storage_error("writing the oplog", error))?;
            totals.oplog_entries += 1;
        }
        for (ident, slot) in unit.drops.iter() {
            opened(
                &mut drop_pending,
                || txn.open_table(DROP_PENDING),
                "opening drop-pending",
            )?
            .insert(
                &drop_pending_key(unit.stamps[*slot as usize], *ident)[..],
                (),
            )
            .map_err(|error| storage_error("writing drop-pending", error))?;
        }
        totals.next_ident = totals.next_ident.max(unit.max_ident + 1);
    }
    if let Some(ended) = run.take() {
        ended.end(&mut tables)?;
    }
    let mut meta = txn
        .open_table(META)
        .map_err(|error| storage_error("opening metadata", error))?;
    put_commit_state(
        &mut meta,
        &format::CommitState {
            last_ts: totals.last,
            stable_ts: base.stable.unwrap_or(totals.last),
            oplog_bytes: totals.oplog_bytes,
            next_ident: totals.next_ident,
        },
    )?;
    Ok(totals)
}

/// Commits a batch: its journal record is appended and it joins the memtable, from where the
/// flusher writes it to redb (`flush_memtable`). A batch whose record would be too large, or
/// that finds the journal full (`durable`), drains the memtable and commits durably to redb
/// itself instead, which starts a new journal generation.
fn apply_batch(
    inner: &Inner,
    batch: &mut [CommitRequest],
    state: &crate::engine::TimestampState,
    durable: bool,
) -> Result<BatchOutcome, Error> {
    let units = prepare_units(batch, state.last_assigned, inner.clock.wall_secs())?;
    let payload_size = crate::journal::payload_size(&units);
    let durable = durable || payload_size > RECORD_PAYLOAD_BYTES_MAX;
    let stable = (!state.stable_follows_newest).then_some(state.stable);
    let base = CommitBase {
        stable,
        next_ident: inner.next_ident.load(Ordering::Relaxed),
    };
    let stamps: Vec<Vec<Timestamp>> = units.iter().map(|unit| unit.stamps.clone()).collect();
    let last = *stamps
        .last()
        .and_then(|unit| unit.last())
        .expect("a batch has a unit with a timestamp");
    let versions = units.iter().map(|unit| unit.writes.len() as u64).sum();
    let oplog_entries = units.iter().map(|unit| unit.oplog.len() as u64).sum();
    let oplog_added = units
        .iter()
        .flat_map(|unit| unit.oplog.iter())
        .map(|entry| entry.len() as u64)
        .sum::<u64>();
    let mut journal_bytes = 0;
    let mut histories = 0;
    if durable {
        let _marker = inner.marker.lock();
        flush_memtable(inner)?;
        let txn = begin(inner, true)?;
        let totals = write_units(&txn, &units, &base)?;
        assert_eq!(
            totals.last, last,
            "the units end at the batch's last timestamp"
        );
        histories = totals.histories;
        commit_durable(inner, txn, totals.last, "committing")?;
    } else {
        // Journaled before the batch joins the memtable and becomes visible: every visible
        // commit has its record written.
        let record = crate::journal::encode_record(&units, stable, payload_size);
        journal_bytes = record.len() as u64;
        inner.journal.append(record, last);
        inner
            .memtable
            .add(crate::memtable::PendingBatch { units, base });
    }
    Ok(BatchOutcome {
        last,
        stamps,
        oplog_added,
        histories,
        versions,
        oplog_entries,
        journal_bytes,
    })
}

/// Writes the memtable's batches to redb: freezes the active layer and writes every frozen
/// layer, in commit order, in one non-durable redb transaction, then retires them. Runs on the
/// flusher thread, and first in every other redb write (under the writer mutex, so that no
/// batch joins meanwhile and the memtable is empty afterwards: a drain).
pub(crate) fn flush_memtable(inner: &Inner) -> Result<(), Error> {
    let flushing = inner.memtable.flush_lock.lock();
    flush_memtable_locked(inner, &flushing)
}

/// [`flush_memtable`] for a caller that holds the memtable's `flush_lock` (`_flushing`).
fn flush_memtable_locked(
    inner: &Inner,
    _flushing: &parking_lot::MutexGuard<'_, ()>,
) -> Result<(), Error> {
    let frozen = inner.memtable.freeze();
    if frozen.is_empty() {
        return Ok(());
    }
    if let Some(error) = inner.failure.lock().clone() {
        return Err(error);
    }
    let written = (|| {
        let txn = begin(inner, false)?;
        let mut histories = 0;
        for layer in &frozen {
            histories += layer.with_batches(|batches| -> Result<u64, Error> {
                let mut histories = 0;
                // Consecutive batches committed under the same stable timestamp share one
                // `write_units` (which opens the tables once).
                for group in batches.chunk_by(|a, b| a.base.stable == b.base.stable) {
                    let base = CommitBase {
                        next_ident: group
                            .iter()
                            .map(|batch| batch.base.next_ident)
                            .max()
                            .expect("a group has a batch"),
                        ..group[0].base
                    };
                    let totals = write_units(
                        &txn,
                        group.iter().flat_map(|batch| batch.units.iter()),
                        &base,
                    )?;
                    histories += totals.histories;
                }
                Ok(histories)
            })?;
        }
        commit_txn(inner, txn).map_err(|error| storage_error("committing the memtable", error))?;
        Ok(histories)
    })();
    match written {
        Ok(histories) => {
            inner.memtable.retire(&frozen);
            Counters::add(&inner.counters.history_versions_written, histories);
            Counters::add(&inner.counters.memtable_flushes, 1);
            Ok(())
        }
        Err(error) => {
            record_failure(inner, &error);
            Err(error)
        }
    }
}

/// The flusher thread: writes the memtable to redb when asked (a full active layer) and at
/// least every `FLUSH_INTERVAL_MS`, and buffered journal records to the journal file once they
/// pass `JOURNAL_WRITE_OUT_BYTES`.
pub(crate) fn run_flusher(inner: Arc<Inner>) {
    let interval = Duration::from_millis(crate::memtable::FLUSH_INTERVAL_MS);
    loop {
        {
            let mut wake = inner.memtable.wake.lock();
            if !*wake {
                inner.memtable.wake_signal.wait_for(&mut wake, interval);
            }
            *wake = false;
        }
        if inner.queue.lock().shutdown {
            break;
        }
        // After a failure the engine accepts no writes; what the memtable holds stays readable
        // and its journal records are replayed on the next open.
        if inner.failure.lock().is_some() {
            continue;
        }
        write_out_journal(&inner, JOURNAL_WRITE_OUT_BYTES);
        if inner.memtable.unflushed_units() == 0 || inner.failure.lock().is_some() {
            continue;
        }
        if let Err(error) = flush_memtable(&inner) {
            tracing::error!(%error, "writing the memtable to the data file failed");
        }
    }
}

/// Commits a durable redb transaction that holds every commit through `durable_ts`, and starts
/// a new journal generation with it: the transaction records the generation, so recovery
/// ignores the records of the older one, which the commit already holds.
fn commit_durable(
    inner: &Inner,
    txn: WriteTransaction,
    durable_ts: Timestamp,
    context: &str,
) -> Result<(), Error> {
    assert!(
        inner.marker.is_locked(),
        "a durable commit holds the marker lock"
    );
    let generation = inner.journal.generation() + 1;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|error| storage_error("opening metadata", error))?;
        put_meta(&mut meta, format::META_JOURNAL_GENERATION, generation)?;
    }
    commit_txn(inner, txn).map_err(|error| storage_error(context, error))?;
    inner.journal.restart(generation, durable_ts);
    Ok(())
}

/// A durable commit that records timestamps: the periodic sync of the data (`checkpoint: None`)
/// or a checkpoint (records the stable timestamp as the checkpoint timestamp, and whether this
/// is a clean shutdown). It starts a new journal generation.
fn durable_marker(inner: &Inner, checkpoint: Option<bool>) -> Result<Timestamp, Error> {
    let _marker = inner.marker.lock();
    if let Some(error) = inner.failure.lock().clone() {
        return Err(error);
    }
    flush_memtable(inner)?;
    let state = *inner.timestamps.lock();
    let txn = begin(inner, true)?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|error| storage_error("opening metadata", error))?;
        put_commit_state(
            &mut meta,
            &commit_state(inner, state.last_assigned, state.stable, state.oplog_bytes),
        )?;
        put_meta(&mut meta, format::META_OLDEST_TS, state.oldest.as_u64())?;
        if let Some(clean) = checkpoint {
            put_meta(&mut meta, format::META_CHECKPOINT_TS, state.stable.as_u64())?;
            put_meta(&mut meta, format::META_CLEAN_SHUTDOWN, u64::from(clean))?;
        }
    }
    if let Err(error) = commit_durable(inner, txn, state.last_assigned, "durable commit") {
        record_failure(inner, &error);
        return Err(error);
    }
    let now = inner.clock.monotonic();
    let mut timestamps = inner.timestamps.lock();
    timestamps.durable = state.last_assigned;
    timestamps.last_durable_at = now;
    timestamps.dirty = false;
    Counters::add(&inner.counters.durable_commits, 1);
    if checkpoint.is_some() {
        timestamps.checkpoint = state.stable;
        timestamps.last_checkpoint_at = now;
        Counters::add(&inner.counters.checkpoints, 1);
    }
    Ok(state.last_assigned)
}

/// One bounded garbage-collection pass: advances the oldest timestamp, removes history that no
/// reader at or after it can see, tombstones that are the last version of their key, tables
/// dropped before it, and oplog entries beyond the cap.
///
/// It runs beside commits (which do not write redb: they join the memtable), so a long pass
/// holds none up; it holds the memtable's `flush_lock`, so the flusher waits, and the memtable
/// grows meanwhile. It writes the memtable first, so redb holds every commit at or before the
/// oldest timestamp: commits after that are newer than anything the pass removes.
fn collect_garbage(inner: &Inner) -> Result<usize, Error> {
    let flushing = inner.memtable.flush_lock.lock();
    flush_memtable_locked(inner, &flushing)?;
    let state = *inner.timestamps.lock();
    let window_start = Timestamp::new(
        inner
            .clock
            .wall_secs()
            .saturating_sub(inner.config.history_window_secs),
        0,
    );
    let oldest = inner.pins.advance_horizon(window_start.min(state.stable));
    // Published at once: readers below it are refused from now on (the pins saw to that).
    inner.timestamps.lock().oldest = oldest;
    let limit = inner.config.gc_batch_entries_max;
    let txn = begin(inner, false)?;
    let mut collected = 0usize;
    let mut oplog_bytes = state.oplog_bytes;
    let mut truncated = 0u64;
    let mut truncated_bytes = 0u64;
    let mut changed = false;
    {
        let mut writelog = txn
            .open_table(WRITELOG)
            .map_err(|error| storage_error("opening the write log", error))?;
        let upper = writelog_key(oldest.successor(), 0, &[]);
        let entries: Vec<Vec<u8>> = writelog
            .range::<&[u8]>(..upper.as_slice())
            .map_err(|error| storage_error("scanning the write log", error))?
            .take(limit)
            .map(|entry| entry.map(|(key, _)| key.value().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|error| storage_error("scanning the write log", error))?;
        let mut tables = BatchTables::new(&txn);
        for entry in &entries {
            let (ts, ident, key) = decode_writelog_key(entry);
            assert!(
                ts <= oldest,
                "collecting a write newer than the oldest timestamp"
            );
            tables
                .history(ident)?
                .remove(history_key(key, ts).as_slice())
                .map_err(|error| storage_error("collecting history", error))?;
            let current = tables.current(ident)?;
            let last_is_tombstone_at_ts = current
                .get(key)
                .map_err(|error| storage_error("collecting", error))?
                .map(|guard| {
                    let version = decode_version(guard.value());
                    version.ts == ts && version.payload.is_none()
                })
                .unwrap_or(false);
            if last_is_tombstone_at_ts {
                current
                    .remove(key)
                    .map_err(|error| storage_error("collecting", error))?;
            }
            writelog
                .remove(entry.as_slice())
                .map_err(|error| storage_error("collecting", error))?;
            collected += 1;
        }
        drop(tables);
        // Dropped tables go once the write log has been collected past their drop.
        let first_remaining = writelog
            .first()
            .map_err(|error| storage_error("scanning the write log", error))?
            .map(|(key, _)| decode_writelog_key(key.value()).0);
        let mut drop_pending = txn
            .open_table(DROP_PENDING)
            .map_err(|error| storage_error("opening drop-pending", error))?;
        let due: Vec<Vec<u8>> = drop_pending
            .iter()
            .map_err(|error| storage_error("scanning drop-pending", error))?
            .map(|entry| entry.map(|(key, _)| key.value().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| storage_error("scanning drop-pending", error))?
            .into_iter()
            .filter(|key| {
                let dropped_at = Timestamp::from_be_bytes(key[..8].try_into().expect("8 bytes"));
                dropped_at <= oldest && first_remaining.is_none_or(|first| first > dropped_at)
            })
            .collect();
        for key in &due {
            let ident = u64::from_be_bytes(key[8..16].try_into().expect("8 bytes"));
            for name in [
                format::current_table_name(ident),
                format::history_table_name(ident),
            ] {
                txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(&name))
                    .map_err(|error| storage_error("deleting a dropped table", error))?;
            }
            drop_pending
                .remove(key.as_slice())
                .map_err(|error| storage_error("drop-pending", error))?;
        }
        // The oplog cap: remove the oldest entries, never one at or after the stable timestamp.
        let mut oplog = txn
            .open_table(OPLOG)
            .map_err(|error| storage_error("opening the oplog", error))?;
        while oplog_bytes > inner.oplog_cap_bytes && (truncated as usize) < limit {
            let Some((ts, length)) = oplog
                .first()
                .map_err(|error| storage_error("reading the oplog", error))?
                .map(|(key, value)| (key.value(), value.value().len() as u64))
            else {
                break;
            };
            if Timestamp::from_u64(ts) >= state.stable {
                break;
            }
            oplog
                .remove(ts)
                .map_err(|error| storage_error("truncating the oplog", error))?;
            oplog_bytes -= length;
            truncated_bytes += length;
            truncated += 1;
        }
        if collected > 0 || !due.is_empty() || truncated > 0 {
            let stored = stored_commit_state(&txn)?;
            let mut meta = txn
                .open_table(META)
                .map_err(|error| storage_error("opening metadata", error))?;
            put_meta(&mut meta, format::META_OLDEST_TS, oldest.as_u64())?;
            put_commit_state(
                &mut meta,
                &format::CommitState {
                    oplog_bytes: stored
                        .oplog_bytes
                        .checked_sub(truncated_bytes)
                        .expect("redb's oplog byte count covers the entries truncated from it"),
                    ..stored
                },
            )?;
            changed = true;
        }
    }
    if changed {
        commit_txn(inner, txn)
            .map_err(|error| storage_error("committing garbage collection", error))?;
    } else {
        txn.abort()
            .map_err(|error| storage_error("garbage collection", error))?;
    }
    inner.catalog.write().prune(oldest);
    inner
        .keylocks
        .sweep(inner.pins.oldest_pinned().unwrap_or(Timestamp::MAX));
    drop(flushing);
    {
        let mut timestamps = inner.timestamps.lock();
        // Subtracted, not set: commits went on adding meanwhile.
        timestamps.oplog_bytes -= truncated_bytes;
        // A full pass leaves the next one due at once.
        if collected < limit {
            timestamps.last_gc_at = inner.clock.monotonic();
        }
        timestamps.dirty |= changed;
    }
    Counters::add(&inner.counters.gc_passes, 1);
    Counters::add(&inner.counters.gc_entries, collected as u64);
    Counters::add(&inner.counters.oplog_entries_truncated, truncated);
    Ok(collected)
}

/// Undoes every write after the stable timestamp.
fn recover_to_stable(inner: &Inner) -> Result<Timestamp, Error> {
    let state = *inner.timestamps.lock();
    let stable = state.stable;
    if let Some(pinned) = inner.pins.newest_pinned() {
        if pinned > stable {
            return Err(Error::new(
                ErrorCode::ConflictingOperationInProgress,
                format!("a snapshot at {pinned} is open above the stable timestamp {stable}"),
            ));
        }
    }
    let _marker = inner.marker.lock();
    flush_memtable(inner)?;
    let txn = begin(inner, true)?;
    let mut oplog_bytes = state.oplog_bytes;
    let mut undone = 0u64;
    {
        let mut writelog = txn
            .open_table(WRITELOG)
            .map_err(|error| storage_error("opening the write log", error))?;
        let lower = writelog_key(stable.successor(), 0, &[]);
        let entries: Vec<Vec<u8>> = writelog
            .range::<&[u8]>(lower.as_slice()..)
            .map_err(|error| storage_error("scanning the write log", error))?
            .map(|entry| entry.map(|(key, _)| key.value().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|error| storage_error("scanning the write log", error))?;
        let mut tables = BatchTables::new(&txn);
        for entry in entries.iter().rev() {
            let (ts, ident, key) = decode_writelog_key(entry);
            let restored = tables
                .history(ident)?
                .remove(history_key(key, ts).as_slice())
                .map_err(|error| storage_error("undoing", error))?
                .map(|guard| guard.value().to_vec());
            let current = tables.current(ident)?;
            let current_ts = current
                .get(key)
                .map_err(|error| storage_error("undoing", error))?
                .map(|guard| decode_version(guard.value()).ts);
            assert_eq!(
                current_ts,
                Some(ts),
                "the logged version must still be current when undone"
            );
            match restored {
                Some(previous) => {
                    current
                        .insert(key, previous.as_slice())
                        .map_err(|error| storage_error("undoing", error))?;
                }
                None => {
                    current
                        .remove(key)
                        .map_err(|error| storage_error("undoing", error))?;
                }
            }
            writelog
                .remove(entry.as_slice())
                .map_err(|error| storage_error("undoing", error))?;
            undone += 1;
        }
        drop(tables);
        let mut oplog = txn
            .open_table(OPLOG)
            .map_err(|error| storage_error("opening the oplog", error))?;
        let removed: Vec<(u64, u64)> = oplog
            .range(stable.successor().as_u64()..)
            .map_err(|error| storage_error("scanning the oplog", error))?
            .map(|entry| entry.map(|(key, value)| (key.value(), value.value().len() as u64)))
            .collect::<Result<_, _>>()
            .map_err(|error| storage_error("scanning the oplog", error))?;
        for (ts, length) in removed {
            oplog
                .remove(ts)
                .map_err(|error| storage_error("truncating the oplog", error))?;
            oplog_bytes -= length;
        }
        let mut drop_pending = txn
            .open_table(DROP_PENDING)
            .map_err(|error| storage_error("opening drop-pending", error))?;
        let lower = drop_pending_key(stable.successor(), 0);
        let undone_drops: Vec<Vec<u8>> = drop_pending
            .range::<&[u8]>(&lower[..]..)
            .map_err(|error| storage_error("scanning drop-pending", error))?
            .map(|entry| entry.map(|(key, _)| key.value().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|error| storage_error("scanning drop-pending", error))?;
        for key in undone_drops {
            drop_pending
                .remove(key.as_slice())
                .map_err(|error| storage_error("undoing", error))?;
        }
        let mut meta = txn
            .open_table(META)
            .map_err(|error| storage_error("opening metadata", error))?;
        put_commit_state(&mut meta, &commit_state(inner, stable, stable, oplog_bytes))?;
    }
    commit_durable(inner, txn, stable, "committing the recovery")?;

    // Tables of collections created after the stable timestamp are now empty and no longer
    // referenced by any catalog version.
    let mut catalog = inner.catalog.write();
    let referenced_before = catalog.referenced_idents();
    *catalog = crate::engine::load_catalog(&inner.db)?;
    let referenced_after = catalog.referenced_idents();
    let orphaned: Vec<u64> = referenced_before
        .difference(&referenced_after)
        .copied()
        .collect();
    delete_orphaned_tables(inner, &orphaned, stable)?;
    drop(catalog);
    {
        let mut timestamps = inner.timestamps.lock();
        timestamps.last_assigned = stable;
        timestamps.durable = stable;
        timestamps.oplog_bytes = oplog_bytes;
        timestamps.dirty = false;
        inner.visible.store(stable.as_u64(), Ordering::Release);
    }
    inner.keylocks.forget_commits();
    tracing::info!(%stable, undone, "recovered to the stable timestamp");
    Ok(stable)
}

fn delete_orphaned_tables(
    inner: &Inner,
    orphaned: &[u64],
    durable_ts: Timestamp,
) -> Result<(), Error> {
    if orphaned.is_empty() {
        return Ok(());
    }
    let txn = begin(inner, true)?;
    for ident in orphaned {
        for name in [
            format::current_table_name(*ident),
            format::history_table_name(*ident),
        ] {
            txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(&name))
                .map_err(|error| storage_error("deleting a table", error))?;
        }
    }
    commit_durable(inner, txn, durable_ts, "deleting tables")?;
    Ok(())
}

fn truncate_oplog_after(inner: &Inner, after: Timestamp) -> Result<u64, Error> {
    let _marker = inner.marker.lock();
    flush_memtable(inner)?;
    let state = *inner.timestamps.lock();
    let txn = begin(inner, true)?;
    let mut oplog_bytes = state.oplog_bytes;
    let mut removed_count = 0;
    {
        let mut oplog = txn
            .open_table(OPLOG)
            .map_err(|error| storage_error("opening the oplog", error))?;
        let removed: Vec<(u64, u64)> = oplog
            .range(after.successor().as_u64()..)
            .map_err(|error| storage_error("scanning the oplog", error))?
            .map(|entry| entry.map(|(key, value)| (key.value(), value.value().len() as u64)))
            .collect::<Result<_, _>>()
            .map_err(|error| storage_error("scanning the oplog", error))?;
        for (ts, length) in removed {
            oplog
                .remove(ts)
                .map_err(|error| storage_error("truncating the oplog", error))?;
            oplog_bytes -= length;
            removed_count += 1;
        }
        let mut meta = txn
            .open_table(META)
            .map_err(|error| storage_error("opening metadata", error))?;
        put_commit_state(
            &mut meta,
            &commit_state(inner, state.last_assigned, state.stable, oplog_bytes),
        )?;
    }
    commit_durable(inner, txn, state.last_assigned, "truncating the oplog")?;
    inner.timestamps.lock().oplog_bytes = oplog_bytes;
    Counters::add(&inner.counters.oplog_entries_truncated, removed_count);
    Ok(removed_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, Engine, EngineConfig};
    use rand::{Rng, SeedableRng};
    use redb::ReadableDatabase;

    type Dump = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

    /// Every key and value of the tables `write_units` writes for tables `idents`.
    fn dump(db: &redb::Database, idents: &[u64]) -> Dump {
        let txn = db.begin_read().unwrap();
        let mut tables = Vec::new();
        for ident in idents {
            for name in [
                format::current_table_name(*ident).to_string(),
                format::history_table_name(*ident).to_string(),
            ] {
                let rows = match txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)) {
                    Ok(table) => table
                        .iter()
                        .unwrap()
                        .map(|row| {
                            let (key, value) = row.unwrap();
                            (key.value().to_vec(), value.value().to_vec())
                        })
                        .collect(),
                    Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
                    Err(error) => panic!("{error}"),
                };
                tables.push((name, rows));
            }
        }
        let writelog = txn.open_table(WRITELOG).unwrap();
        let rows = writelog
            .iter()
            .unwrap()
            .map(|row| (row.unwrap().0.value().to_vec(), Vec::new()))
            .collect();
        tables.push(("writelog".into(), rows));
        tables
    }

    fn memory_db() -> redb::Database {
        redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap()
    }

    /// Runs of one key (`Run`) are an optimisation only: a batch written by one `write_units`
    /// leaves the tables exactly as `apply_write` called for each write in turn does (the
    /// oracle, which has no runs). Random units over few keys and two tables, with one to three
    /// timestamps (slots) each and a key written at several of them (as when oplog entries are
    /// applied), deletes (of keys that exist and of keys that do not), with stable following
    /// the newest commit and lagging.
    #[test]
    fn runs_of_one_key_write_exactly_what_one_write_at_a_time_writes() {
        let idents = [7, 8];
        let mut next_ts = 0;
        for seed in 0..300 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let units: Vec<BatchUnit<'static>> = (0..rng.random_range(1..40u32))
                .map(|_| {
                    let slots = rng.random_range(1..4u32);
                    let stamps: Vec<Timestamp> = (0..slots)
                        .map(|_| {
                            next_ts += 1;
                            Timestamp::new(10, next_ts)
                        })
                        .collect();
                    let mut writes = Vec::new();
                    for slot in 0..slots {
                        let mut keys: Vec<(u64, u8)> = (0..rng.random_range(1..3))
                            .map(|_| (idents[rng.random_range(0..2)], rng.random_range(0..3u8)))
                            .collect();
                        keys.sort();
                        keys.dedup();
                        writes.extend(keys.into_iter().map(|(ident, key)| StagedWrite {
                            ident,
                            key: vec![key],
                            value: rng.random_bool(0.8).then(|| vec![key, slot as u8]),
                            slot,
                        }));
                    }
                    BatchUnit {
                        stamps,
                        writes: Cow::Owned(writes),
                        oplog: Vec::new(),
                        drops: Cow::Owned(Vec::new()),
                        max_ident: 8,
                    }
                })
                .collect();
            for stable in [None, Some(Timestamp::new(1, 1))] {
                let base = CommitBase {
                    stable,
                    next_ident: 9,
                };
                let together = memory_db();
                let txn = together.begin_write().unwrap();
                let totals = write_units(&txn, &units, &base).unwrap();
                txn.commit().unwrap();
                let oracle = memory_db();
                let txn = oracle.begin_write().unwrap();
                let mut histories = 0;
                {
                    let mut tables = BatchTables::new(&txn);
                    let mut writelog = txn.open_table(WRITELOG).unwrap();
                    for unit in &units {
                        for write in unit.writes.iter() {
                            let applied = apply_write(
                                &mut tables,
                                &mut writelog,
                                write.ident,
                                &write.key,
                                write.value.as_deref(),
                                unit.stamps[write.slot as usize],
                                stable.is_some(),
                            )
                            .unwrap();
                            histories += u64::from(applied == Applied::Replaced);
                        }
                    }
                }
                txn.commit().unwrap();
                assert_eq!(
                    dump(&together, &idents),
                    dump(&oracle, &idents),
                    "seed {seed}, stable {stable:?}"
                );
                assert_eq!(totals.histories, histories, "seed {seed}");
            }
        }
    }

    fn info() -> CommitInfo {
        CommitInfo {
            first_ts: Timestamp::new(1, 1),
            last_ts: Timestamp::new(1, 1),
            durable: false,
        }
    }

    /// A told group is woken a few at a time: the caller's own commit at once, `TELL_FAN_OUT`
    /// by the caller, and the rest by the committers told before them; every one exactly once.
    #[test]
    fn a_group_is_told_a_few_at_a_time_by_its_own_members() {
        let clock: Arc<dyn cairn_types::Clock> =
            Arc::new(cairn_types::ManualClock::new(1_700_000_000_000));
        let engine = Engine::open(EngineConfig::default(), Backend::Memory, clock).unwrap();
        let inner = &engine.inner;
        let group: Vec<CommitDone> = (0..10).map(|_| Completion::new()).collect();
        let own = group[3].identity();
        tell(
            inner,
            group.iter().map(|done| (done.clone(), Ok(info()))),
            own,
        );
        let told = |group: &[CommitDone]| group.iter().filter(|done| done.is_done()).count();
        assert!(
            group[3].is_done(),
            "the caller's own commit is told at once"
        );
        assert_eq!(told(&group), 1 + TELL_FAN_OUT);
        assert_eq!(
            inner.tells.queued.load(Ordering::Acquire),
            10 - 1 - TELL_FAN_OUT
        );
        // Each committer told passes the news on before it returns.
        help_tell(inner);
        assert_eq!(told(&group), 1 + 2 * TELL_FAN_OUT);
        while inner.tells.queued.load(Ordering::Acquire) > 0 {
            help_tell(inner);
        }
        assert_eq!(told(&group), 10);
        for done in &group {
            assert_eq!(done.take().unwrap().last_ts, info().last_ts);
        }
        help_tell(inner);
    }
}
