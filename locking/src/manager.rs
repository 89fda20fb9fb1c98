//! The lock manager: the lock table, the registry of live operations, tickets, deadlock
//! detection, fsyncLock, and the views serverStatus, currentOp and lockInfo are built from.
//!
//! Owns: [`LockManager`] (cheap to clone, shared by every operation), [`LockManagerConfig`], the
//! lock heads (RSTL, Global and oplog as fixed heads, databases and collections in a sharded
//! table), the registry of live [`Locker`]s by opid, and the totals of ended operations.
//!
//! Invariants:
//! - One lock head per resource: a head is created under its shard's mutex and removed only when
//!   the table holds its last reference (no operation holds, waits for or is about to use it).
//! - Lock order: detector mutex, then the registry (released again), then heads one at a time;
//!   a head's mutex, then the registry (a state transition collecting its victims), a wake-up
//!   cell or a `waiting_on`; the registry or a ticket pool's mutex, then a wake-up cell. Nobody
//!   takes a head or the detector while holding the registry, a cell, a `waiting_on` or another
//!   head, so these never form a cycle.
//! - Deadlocks are detected, not prevented (see docs/locking.md): an operation that is about to
//!   wait looks for a cycle through itself in the wait-for graph, and a cycle is reported only
//!   when every member's wait epoch was the same before and after the search, i.e. every member
//!   waited throughout and the cycle was real at the end.

use crate::head::HeadState;
use crate::locker::{Locker, LockerOptions, OpShared, Target};
use crate::mode::LockMode;
use crate::resource::{ResourceId, ResourceType, name_hash};
use crate::stats::{LockStatsSnapshot, readers_writers};
use crate::sync::{AtomicBool as ProtocolBool, AtomicU32, Mutex, store_load_fence};
use crate::tickets::{TicketKind, TicketPool, active_clients};
use bson::{Bson, Document, doc};
use cairn_types::{Clock, Error, ErrorCode, Result, SystemClock};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How a lock manager is set up. Tickets, the lock timeout and the yield settings can also be
/// changed at run time.
#[derive(Clone, Debug)]
pub struct LockManagerConfig {
    /// Read admission tickets (operations whose Global mode is IS or S).
    pub read_tickets_max: u32,
    /// Write admission tickets (operations whose Global mode is IX or X).
    pub write_tickets_max: u32,
    /// How long a lock or ticket wait may last when the operation has no earlier deadline.
    pub lock_timeout_ms: u64,
    /// A yielding operation yields at least this often (internalQueryExecYieldPeriodMS).
    pub yield_period_ms: u64,
    /// And, when set, at least every this many iterations (internalQueryExecYieldIterations).
    pub yield_iterations_max: Option<u64>,
    /// Whether a waiter searches the wait-for graph before it sleeps.
    pub deadlock_detection: bool,
    /// The longest a waiter sleeps before it looks at the clock again (a simulated clock moves
    /// without waking anyone).
    pub wait_recheck_ms: u64,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
}

impl Default for LockManagerConfig {
    fn default() -> Self {
        LockManagerConfig {
            read_tickets_max: 128,
            write_tickets_max: 128,
            lock_timeout_ms: 60_000,
            yield_period_ms: 10,
            yield_iterations_max: Some(1000),
            deadlock_detection: true,
            wait_recheck_ms: 20,
            clock: Arc::new(SystemClock::new()),
        }
    }
}

/// Partitions of the intent fast path: an operation counts its fast grants in partition
/// `opid % FAST_PARTITIONS`, so that operations on other cores touch other cache lines.
pub(crate) const FAST_PARTITIONS: usize = 8;

/// Fast-path intent grants of one partition: [IS, IX].
#[repr(align(128))]
#[derive(Default)]
struct FastPartition {
    counts: [AtomicU32; 2],
}

fn fast_index(mode: LockMode) -> usize {
    match mode {
        LockMode::IS => 0,
        LockMode::IX => 1,
        other => panic!("{other} is not an intent mode: no fast path"),
    }
}

/// One resource's lock.
///
/// Intent requests (IS, IX) are granted without the mutex while the head is not `slow`: the
/// operation adds itself to a partition counter, then checks `slow` again (and backs out if it
/// was set meanwhile). Every other request takes the mutex and first sets `slow`, then reads the
/// counters: both sides write before they read (sequentially consistent), so at least one sees
/// the other (Dekker), and no fast grant slips past a conflicting request. `slow` is cleared,
/// under the mutex, only when the queued state is quiet (nothing but IS/IX granted, nobody
/// waiting). A fast holder that releases while `slow` is set takes the mutex and grants waiters.
pub(crate) struct LockHead {
    pub resource: ResourceId,
    pub state: Mutex<HeadState<Arc<OpShared>>>,
    slow: ProtocolBool,
    fast: Box<[FastPartition]>,
    /// A collection's database head (so that a collection lock looks up one head, not two).
    pub parent: Option<Arc<LockHead>>,
}

impl LockHead {
    fn new(resource: ResourceId, parent: Option<Arc<LockHead>>) -> Arc<LockHead> {
        Arc::new(LockHead {
            resource,
            state: Mutex::new(HeadState::new()),
            slow: ProtocolBool::new(false),
            fast: (0..FAST_PARTITIONS)
                .map(|_| FastPartition::default())
                .collect(),
            parent,
        })
    }

    /// The address that identifies this head in an operation's published fast holds.
    pub fn address(&self) -> usize {
        self as *const LockHead as usize
    }

    /// Tries to grant an intent mode without the mutex.
    pub fn try_fast_acquire(&self, partition: usize, mode: LockMode) -> bool {
        if self.slow.load(Ordering::SeqCst) {
            return false;
        }
        let counter = &self.fast[partition].counts[fast_index(mode)];
        counter.fetch_add(1, Ordering::SeqCst);
        store_load_fence();
        if !self.slow.load(Ordering::SeqCst) {
            return true;
        }
        // A conflicting request arrived meanwhile: back out, and let it see the count drop.
        counter.fetch_sub(1, Ordering::SeqCst);
        let mut state = self.state.lock();
        let external = self.enter_slow();
        crate::locker::deliver_grants(state.grant_waiters(external));
        self.settle(&state);
        false
    }

    /// Releases a fast-path grant.
    pub fn fast_release(&self, partition: usize, mode: LockMode) {
        let before = self.fast[partition].counts[fast_index(mode)].fetch_sub(1, Ordering::SeqCst);
        assert!(
            before > 0,
            "releasing a fast-path {mode} grant that is not counted"
        );
        store_load_fence();
        if self.slow.load(Ordering::SeqCst) {
            let mut state = self.state.lock();
            let external = self.enter_slow();
            crate::locker::deliver_grants(state.grant_waiters(external));
            self.settle(&state);
        }
    }

    /// Moves a fast-path grant into the queued state's bookkeeping (before a conversion); call
    /// under the mutex, after [`LockHead::enter_slow`].
    pub fn take_fast(&self, partition: usize, mode: LockMode) {
        let before = self.fast[partition].counts[fast_index(mode)].fetch_sub(1, Ordering::SeqCst);
        assert!(
            before > 0,
            "moving a fast-path {mode} grant that is not counted"
        );
    }

    /// Called with the mutex held before any decision: stops fast grants and returns the modes
    /// granted on the fast path, as bits (the `external` of [`HeadState`]).
    pub fn enter_slow(&self) -> u8 {
        self.slow.store(true, Ordering::SeqCst);
        store_load_fence();
        self.fast_mask()
    }

    /// Called with the mutex held after a change: lets fast grants resume when the state is
    /// quiet.
    pub fn settle(&self, state: &HeadState<Arc<OpShared>>) {
        if state.is_quiet() {
            self.slow.store(false, Ordering::SeqCst);
        }
    }

    /// Fast-path grants per mode: [IS, IX].
    pub fn fast_counts(&self) -> [u32; 2] {
        let mut counts = [0; 2];
        for partition in self.fast.iter() {
            for (total, counter) in counts.iter_mut().zip(&partition.counts) {
                *total += counter.load(Ordering::SeqCst);
            }
        }
        counts
    }

    fn fast_mask(&self) -> u8 {
        let [is, ix] = self.fast_counts();
        let mut bits = 0;
        if is > 0 {
            bits |= LockMode::IS.bit();
        }
        if ix > 0 {
            bits |= LockMode::IX.bit();
        }
        bits
    }

    fn is_unused(&self) -> bool {
        self.state.lock().is_idle() && self.fast_counts() == [0, 0]
    }
}

/// Keys of the lock table are already hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | byte as u64;
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Bucket = HashMap<u64, Vec<Arc<LockHead>>, BuildHasherDefault<IdentityHasher>>;

/// A shard of the lock table on its own cache lines.
#[repr(align(128))]
struct Shard(Mutex<ShardState>);

struct ShardState {
    bucket: Bucket,
    heads: usize,
    /// The shard is swept of idle heads when it grows to this many: at least
    /// `SHARD_HEADS_SWEEP_MIN`, and twice what the last sweep left, so that a shard full of
    /// heads in use is not rescanned on every insert.
    sweep_at_heads: usize,
}

impl ShardState {
    /// Removes heads only the table refers to (nobody holds, waits for or is about to use
    /// them).
    fn sweep(&mut self) -> usize {
        let mut removed = 0;
        self.bucket.retain(|_, chain| {
            chain.retain(|head| {
                let idle = Arc::strong_count(head) == 1;
                if idle {
                    assert!(head.is_unused(), "an unreferenced lock head has requests");
                    removed += 1;
                }
                !idle
            });
            !chain.is_empty()
        });
        self.heads -= removed;
        self.sweep_at_heads = SHARD_HEADS_SWEEP_MIN.max(2 * self.heads);
        removed
    }
}

const SHARDS: usize = 16;
/// A shard is swept of idle heads when a new head would make it larger than this (or than twice
/// what its last sweep left).
const SHARD_HEADS_SWEEP_MIN: usize = 1024;

/// Database and collection heads.
struct LockTable {
    shards: Vec<Shard>,
}

impl LockTable {
    fn new() -> LockTable {
        let shard = || {
            Shard(Mutex::new(ShardState {
                bucket: Bucket::default(),
                heads: 0,
                sweep_at_heads: SHARD_HEADS_SWEEP_MIN,
            }))
        };
        LockTable {
            shards: (0..SHARDS).map(|_| shard()).collect(),
        }
    }

    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[(hash as usize) % SHARDS]
    }

    fn head(
        &self,
        hash: u64,
        matches: impl Fn(&ResourceId) -> bool,
        make: impl FnOnce() -> (ResourceId, Option<Arc<LockHead>>),
    ) -> Arc<LockHead> {
        let mut shard = self.shard(hash).0.lock();
        if let Some(chain) = shard.bucket.get(&hash)
            && let Some(head) = chain.iter().find(|head| matches(&head.resource))
        {
            return head.clone();
        }
        if shard.heads >= shard.sweep_at_heads {
            shard.sweep();
        }
        let (resource, parent) = make();
        let head = LockHead::new(resource, parent);
        shard.bucket.entry(hash).or_default().push(head.clone());
        shard.heads += 1;
        head
    }

    fn get(&self, hash: u64, matches: impl Fn(&ResourceId) -> bool) -> Option<Arc<LockHead>> {
        let shard = self.shard(hash).0.lock();
        shard
            .bucket
            .get(&hash)?
            .iter()
            .find(|head| matches(&head.resource))
            .cloned()
    }

    fn heads(&self) -> Vec<Arc<LockHead>> {
        let mut heads = Vec::new();
        for shard in &self.shards {
            for chain in shard.0.lock().bucket.values() {
                heads.extend(chain.iter().cloned());
            }
        }
        heads
    }

    /// Sweeps until nothing more goes (a collection head keeps its database head alive).
    fn sweep(&self) -> usize {
        let mut removed = 0;
        loop {
            let round: usize = self.shards.iter().map(|shard| shard.0.lock().sweep()).sum();
            if round == 0 {
                return removed;
            }
            removed += round;
        }
    }
}

struct FsyncState {
    holder: Option<Locker>,
    lock_count: u32,
}

pub(crate) struct Inner {
    pub clock: Arc<dyn Clock>,
    pub wait_recheck: Duration,
    pub deadlock_detection: bool,
    lock_timeout_ms: AtomicU64,
    yield_period_ms: AtomicU64,
    /// 0: no iteration limit.
    yield_iterations_max: AtomicU64,
    pub rstl: Arc<LockHead>,
    pub global: Arc<LockHead>,
    pub oplog: Arc<LockHead>,
    table: LockTable,
    read_tickets: TicketPool,
    write_tickets: TicketPool,
    registry: Mutex<HashMap<u64, Arc<OpShared>>>,
    next_opid: AtomicU64,
    ended_stats: Mutex<LockStatsSnapshot>,
    queued_readers: AtomicU64,
    queued_writers: AtomicU64,
    shutting_down: AtomicBool,
    detector: Mutex<()>,
    deadlocks_found: AtomicU64,
    fsync: Mutex<FsyncState>,
    started: Duration,
}

/// The lock manager. Clone it freely: clones share one manager.
#[derive(Clone)]
pub struct LockManager {
    inner: Arc<Inner>,
}

impl Default for LockManager {
    fn default() -> Self {
        LockManager::new(LockManagerConfig::default())
    }
}

impl LockManager {
    pub fn new(config: LockManagerConfig) -> LockManager {
        let started = config.clock.monotonic();
        LockManager {
            inner: Arc::new(Inner {
                wait_recheck: Duration::from_millis(config.wait_recheck_ms.max(1)),
                deadlock_detection: config.deadlock_detection,
                lock_timeout_ms: AtomicU64::new(config.lock_timeout_ms),
                yield_period_ms: AtomicU64::new(config.yield_period_ms),
                yield_iterations_max: AtomicU64::new(config.yield_iterations_max.unwrap_or(0)),
                rstl: LockHead::new(ResourceId::ReplicationStateTransition, None),
                global: LockHead::new(ResourceId::Global, None),
                oplog: LockHead::new(ResourceId::Oplog, None),
                table: LockTable::new(),
                read_tickets: TicketPool::new(config.read_tickets_max),
                write_tickets: TicketPool::new(config.write_tickets_max),
                registry: Mutex::new(HashMap::new()),
                next_opid: AtomicU64::new(1),
                ended_stats: Mutex::new(LockStatsSnapshot::default()),
                queued_readers: AtomicU64::new(0),
                queued_writers: AtomicU64::new(0),
                shutting_down: AtomicBool::new(false),
                detector: Mutex::new(()),
                deadlocks_found: AtomicU64::new(0),
                fsync: Mutex::new(FsyncState {
                    holder: None,
                    lock_count: 0,
                }),
                started,
                clock: config.clock,
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// A new operation with the next opid, registered for currentOp and killOp. After
    /// [`LockManager::shutdown`] it starts killed (InterruptedAtShutdown).
    pub fn new_locker(&self, options: LockerOptions) -> Locker {
        let opid = self.inner.next_opid.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(OpShared::new(opid, &options));
        {
            let mut registry = self.inner.registry.lock();
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                shared.kill(ErrorCode::InterruptedAtShutdown);
            }
            registry.insert(opid, shared.clone());
        }
        Locker::new(self.clone(), shared, &options)
    }

    /// killOp: kills operation `opid` with `code`. False when no such operation is live.
    pub fn kill_op(&self, opid: u64, code: ErrorCode) -> bool {
        let target = self.inner.registry.lock().get(&opid).cloned();
        match target {
            Some(shared) => {
                shared.kill(code);
                true
            }
            None => false,
        }
    }

    /// Kills every live operation with InterruptedAtShutdown (11600); later ones start killed.
    pub fn shutdown(&self) {
        let registry = self.inner.registry.lock();
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        for shared in registry.values() {
            shared.kill(ErrorCode::InterruptedAtShutdown);
        }
    }

    pub fn set_read_tickets_max(&self, tickets: u32) {
        self.inner.read_tickets.set_capacity(tickets);
    }

    pub fn set_write_tickets_max(&self, tickets: u32) {
        self.inner.write_tickets.set_capacity(tickets);
    }

    pub fn read_tickets_max(&self) -> u32 {
        self.inner.read_tickets.capacity()
    }

    pub fn write_tickets_max(&self) -> u32 {
        self.inner.write_tickets.capacity()
    }

    pub fn set_lock_timeout_ms(&self, lock_timeout_ms: u64) {
        self.inner
            .lock_timeout_ms
            .store(lock_timeout_ms, Ordering::Relaxed);
    }

    pub fn lock_timeout_ms(&self) -> u64 {
        self.inner.lock_timeout_ms()
    }

    pub fn set_yield_period_ms(&self, yield_period_ms: u64) {
        self.inner
            .yield_period_ms
            .store(yield_period_ms, Ordering::Relaxed);
    }

    pub fn set_yield_iterations_max(&self, iterations: Option<u64>) {
        self.inner
            .yield_iterations_max
            .store(iterations.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn yield_period_ms(&self) -> u64 {
        self.inner.yield_period_ms.load(Ordering::Relaxed)
    }

    pub fn yield_iterations_max(&self) -> Option<u64> {
        match self.inner.yield_iterations_max.load(Ordering::Relaxed) {
            0 => None,
            iterations => Some(iterations),
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Deadlocks found since start (each ended one wait with LockTimeout).
    pub fn deadlocks_found(&self) -> u64 {
        self.inner.deadlocks_found.load(Ordering::Relaxed)
    }

    /// Removes lock heads nobody uses (also done when a table shard grows past a threshold).
    /// Returns how many were removed.
    pub fn sweep_idle_lock_heads(&self) -> usize {
        self.inner.table.sweep()
    }

    /// Lock statistics of every operation, ended and live.
    pub fn lock_stats(&self) -> LockStatsSnapshot {
        let mut total = self.inner.ended_stats.lock().clone();
        let live: Vec<Arc<OpShared>> = self.inner.registry.lock().values().cloned().collect();
        for shared in live {
            total.add(&shared.stats.snapshot());
        }
        total
    }

    /// serverStatus `locks`.
    pub fn server_status_locks(&self) -> Document {
        self.lock_stats().to_document()
    }

    /// serverStatus `globalLock`: `{totalTime, currentQueue: {total, readers, writers},
    /// activeClients: {total, readers, writers}}`. currentQueue counts operations waiting for a
    /// lock or a ticket (readers: IS/S, writers: IX/X); activeClients counts tickets out.
    pub fn server_status_global_lock(&self) -> Document {
        let inner = &self.inner;
        let total_time = inner.clock.monotonic().saturating_sub(inner.started);
        doc! {
            "totalTime": total_time.as_micros() as i64,
            "currentQueue": readers_writers(
                inner.queued_readers.load(Ordering::Relaxed),
                inner.queued_writers.load(Ordering::Relaxed),
            ),
            "activeClients": active_clients(&inner.read_tickets, &inner.write_tickets),
        }
    }

    /// The admission tickets: `{write: {out, available, totalTickets, queueLength}, read: ...}`.
    pub fn server_status_tickets(&self) -> Document {
        doc! {
            "write": self.inner.write_tickets.to_document(),
            "read": self.inner.read_tickets.to_document(),
        }
    }

    /// The lock part of every live operation's currentOp entry (opid, desc, locks,
    /// waitingForLock, waitingForTicket, lockStats, numYields, killPending), by opid. With
    /// `include_idle` false, only operations that hold or wait for a lock.
    pub fn current_op(&self, include_idle: bool) -> Vec<Document> {
        let mut live: Vec<Arc<OpShared>> = self.inner.registry.lock().values().cloned().collect();
        live.sort_by_key(|shared| shared.opid);
        live.iter()
            .filter(|s| include_idle || s.holds_any() || s.waiting_for_lock.load(Ordering::Relaxed))
            .map(|shared| shared.current_op_document())
            .collect()
    }

    /// lockInfo: `{lockInfo: [{resourceId, granted: [...], pending: [...]}]}` for every resource
    /// with requests; each request is `{mode, convertMode, enqueueAtFront, compatibleFirst,
    /// clientInfo: {opid, desc}}`. compatibleFirst is always false: cairn never lets compatible
    /// newcomers pass a conflicting waiter.
    pub fn lock_info(&self) -> Document {
        let inner = &self.inner;
        let mut heads = vec![inner.rstl.clone(), inner.global.clone()];
        let mut others = inner.table.heads();
        others.sort_by(|a, b| a.resource.cmp(&b.resource));
        heads.extend(others);
        heads.push(inner.oplog.clone());
        let request = |owner: &Arc<OpShared>, mode: LockMode, convert: Option<LockMode>, front| {
            doc! {
                "mode": mode.name(),
                "convertMode": convert.map_or("NONE", LockMode::name),
                "enqueueAtFront": front,
                "compatibleFirst": false,
                "clientInfo": {"opid": owner.opid as i64, "desc": owner.desc.clone()},
            }
        };
        let mut entries = Vec::new();
        let live = inner.live_operations();
        for head in heads {
            let state = head.state.lock();
            // Fast-path grants are not in the state: every operation publishes its own.
            let fast: Vec<Bson> = live
                .iter()
                .filter_map(|op| {
                    op.fast_hold_on(&head)
                        .map(|mode| request(op, mode, None, false))
                })
                .map(Bson::Document)
                .collect();
            if state.is_idle() && fast.is_empty() {
                continue;
            }
            let mut granted: Vec<Bson> = state
                .granted()
                .map(|(_, e)| request(&e.owner, e.mode, e.convert, e.enqueue_at_front).into())
                .collect();
            granted.extend(fast);
            let pending: Vec<Bson> = state
                .pending()
                .map(|p| request(&p.owner, p.mode, None, p.enqueue_at_front).into())
                .collect();
            entries.push(Bson::Document(doc! {
                "resourceId": head.resource.to_string(),
                "granted": granted,
                "pending": pending,
            }));
        }
        doc! { "lockInfo": entries }
    }

    /// fsync with lock: takes a write-blocking Global S (reads go on), then runs `flush`. Nested
    /// calls only count (and flush again). Returns lockCount.
    pub fn fsync_lock(&self, flush: impl FnOnce() -> Result<()>) -> Result<u32> {
        let mut fsync = self.inner.fsync.lock();
        if fsync.lock_count == 0 {
            let holder = self.new_locker(LockerOptions {
                desc: "fsyncLockWorker".into(),
                admission: crate::Admission::Exempt,
                interruptible_by_state_change: false,
                takes_rstl: false,
                ..LockerOptions::default()
            });
            holder.lock_global_unguarded(LockMode::S)?;
            flush()?;
            fsync.holder = Some(holder);
        } else {
            flush()?;
        }
        fsync.lock_count += 1;
        Ok(fsync.lock_count)
    }

    /// fsyncUnlock: one unlock per lock; the last lets writes go on. Returns the lockCount left;
    /// IllegalOperation (20) when not locked.
    pub fn fsync_unlock(&self) -> Result<u32> {
        let mut fsync = self.inner.fsync.lock();
        if fsync.lock_count == 0 {
            return Err(Error::new(
                ErrorCode::IllegalOperation,
                "fsyncUnlock called when not locked",
            ));
        }
        fsync.lock_count -= 1;
        if fsync.lock_count == 0 {
            fsync.holder = None;
        }
        Ok(fsync.lock_count)
    }

    /// fsync's lockCount.
    pub fn fsync_lock_count(&self) -> u32 {
        self.inner.fsync.lock().lock_count
    }

    /// Requests and waiters on one resource now: (granted modes, pending modes). For tests and
    /// diagnostics.
    pub fn requests_on(&self, resource: &ResourceId) -> (Vec<LockMode>, Vec<LockMode>) {
        let head = match resource {
            ResourceId::ReplicationStateTransition => self.inner.rstl.clone(),
            ResourceId::Global => self.inner.global.clone(),
            ResourceId::Oplog => self.inner.oplog.clone(),
            ResourceId::Database(db) => self.inner.head(Target::Database(db)),
            ResourceId::Collection(ns) => self.inner.head(Target::Collection(ns)),
        };
        let state = head.state.lock();
        let mut granted: Vec<LockMode> = state.granted().map(|(_, e)| e.mode).collect();
        let [is, ix] = head.fast_counts();
        granted.extend(std::iter::repeat_n(LockMode::IS, is as usize));
        granted.extend(std::iter::repeat_n(LockMode::IX, ix as usize));
        granted.sort();
        (granted, state.pending().map(|p| p.mode).collect())
    }
}

impl Inner {
    pub fn lock_timeout_ms(&self) -> u64 {
        self.lock_timeout_ms.load(Ordering::Relaxed)
    }

    pub fn ticket_pool(&self, kind: TicketKind) -> &TicketPool {
        match kind {
            TicketKind::Read => &self.read_tickets,
            TicketKind::Write => &self.write_tickets,
        }
    }

    pub fn queue_counter(&self, reader: bool) -> &AtomicU64 {
        if reader {
            &self.queued_readers
        } else {
            &self.queued_writers
        }
    }

    /// The head of a resource, created on first use.
    pub fn head(&self, target: Target<'_>) -> Arc<LockHead> {
        match target {
            Target::ReplicationStateTransition => self.rstl.clone(),
            Target::Global => self.global.clone(),
            Target::Oplog => self.oplog.clone(),
            Target::Database(db) => self.table.head(
                name_hash(ResourceType::Database, db, ""),
                |resource| resource.is_database(db),
                || (ResourceId::Database(db.to_string()), None),
            ),
            Target::Collection(ns) => {
                let hash = name_hash(ResourceType::Collection, &ns.db, &ns.coll);
                let matches = |resource: &ResourceId| resource.is_collection(ns);
                if let Some(head) = self.table.get(hash, matches) {
                    return head;
                }
                // The database head is looked up before the collection's shard is locked (the
                // two may share a shard).
                let database = self.head(Target::Database(&ns.db));
                self.table.head(hash, matches, || {
                    (ResourceId::Collection(ns.clone()), Some(database))
                })
            }
        }
    }

    /// The live operations.
    pub fn live_operations(&self) -> Vec<Arc<OpShared>> {
        self.registry.lock().values().cloned().collect()
    }

    /// Forgets an ended operation and adds its statistics to the totals.
    pub fn unregister(&self, shared: &Arc<OpShared>) {
        self.registry.lock().remove(&shared.opid);
        self.ended_stats.lock().add(&shared.stats.snapshot());
    }

    /// True when `me` (which has just queued a request) is on a cycle of the wait-for graph
    /// that is real: every member waited throughout the search (same odd wait epoch before and
    /// after). Searches are serialized, so of two operations that close a cycle at once the
    /// second to search sees the first's request.
    pub fn find_deadlock(&self, me: &Arc<OpShared>) -> bool {
        let _serial = self.detector.lock();
        const ATTEMPTS: usize = 3;
        for _ in 0..ATTEMPTS {
            let waiters: HashMap<u64, (Arc<OpShared>, u64)> = self
                .registry
                .lock()
                .values()
                .filter_map(|shared| {
                    let epoch = shared.wait_epoch.load(Ordering::SeqCst);
                    (epoch % 2 == 1).then(|| (shared.opid, (shared.clone(), epoch)))
                })
                .collect();
            if !waiters.contains_key(&me.opid) {
                return false;
            }
            let Some(cycle) = find_cycle(me.opid, &waiters) else {
                return false;
            };
            let stable = cycle.iter().all(|opid| {
                let (shared, epoch) = &waiters[opid];
                shared.wait_epoch.load(Ordering::SeqCst) == *epoch
            });
            if stable {
                self.deadlocks_found.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }
}

/// The waiters a waiter waits for (only waiters can be on a cycle).
fn wait_edges(opid: u64, waiters: &HashMap<u64, (Arc<OpShared>, u64)>) -> Vec<u64> {
    let Some((shared, _)) = waiters.get(&opid) else {
        return Vec::new();
    };
    let target = shared.waiting_on.lock().clone();
    let Some(target) = target else {
        return Vec::new();
    };
    let (blockers, wanted) = {
        let state = target.head.state.lock();
        (state.blockers(target.wait), state.wanted(target.wait))
    };
    let mut edges: Vec<u64> = blockers.into_iter().map(|owner| owner.opid).collect();
    // Holders on the fast path, as they publish themselves (only waiters matter here, and a
    // waiter cannot release what it holds).
    if let Some(wanted) = wanted {
        for (other, (shared, _)) in waiters {
            if shared
                .fast_hold_on(&target.head)
                .is_some_and(|held| !wanted.is_compatible_with(held))
            {
                edges.push(*other);
            }
        }
    }
    edges.retain(|blocker| *blocker != opid && waiters.contains_key(blocker));
    edges
}

/// A cycle through `start` (its members, `start` first), by depth-first search.
fn find_cycle(start: u64, waiters: &HashMap<u64, (Arc<OpShared>, u64)>) -> Option<Vec<u64>> {
    let mut visited = HashSet::new();
    let mut path = vec![start];
    let mut stack = vec![wait_edges(start, waiters)];
    visited.insert(start);
    while let Some(edges) = stack.last_mut() {
        match edges.pop() {
            Some(next) if next == start => return Some(path),
            Some(next) => {
                if visited.insert(next) {
                    path.push(next);
                    stack.push(wait_edges(next, waiters));
                }
            }
            None => {
                stack.pop();
                path.pop();
            }
        }
    }
    None
}
