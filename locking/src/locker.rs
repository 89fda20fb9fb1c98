//! The per-operation lock state: [`Locker`], its guards, and the kill handle.
//!
//! Owns: what one operation holds (resource, mode, recursion count, and either its request's
//! slot in the head or its fast-path grant, which it publishes for lockInfo), its admission
//! ticket, its deadline (maxTimeMS) and lock timeout, waiting (bounded, interruptible), saving and
//! restoring its locks around a yield, and [`OpShared`], the part other threads see (kill state,
//! the wake-up cell, what it waits for, statistics, numYields).
//!
//! Invariants:
//! - An operation has at most one request per resource; a second acquisition of a covered mode
//!   only counts, an allowed upgrade converts the one request, anything else is refused.
//! - Ancestors are taken before descendants in the canonical order (ticket, RSTL, Global,
//!   Database, Collection, oplog), and restored in that order after a yield.
//! - Every wait ends: by a grant, by a kill (the killer wakes the waiter through its cell), by a
//!   deadlock found in the wait-for graph, or at `min(deadline, now + lock timeout)`.
//! - The wait epoch is odd exactly while the operation waits for a lock; it changes only under
//!   the mutex of the lock head waited on. The deadlock detector relies on this.
//! - The ticket is held exactly while the Global lock is (except between taking the ticket and
//!   the Global lock, and while yielded, when neither is held).

use crate::head::{ConvertOutcome, Owner, RequestOutcome, WaitRef};
use crate::manager::{FAST_PARTITIONS, Inner, LockHead, LockManager};
use crate::mode::LockMode;
use crate::resource::{RESOURCE_TYPES, ResourceId, ResourceType};
use crate::stats::LockStats;
use crate::sync::{Condvar, Mutex, wait_slice};
use crate::tickets::{TicketKind, TicketOutcome};
use bson::{Document, doc};
use cairn_types::{Error, ErrorCode, Namespace, Result};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Whether an operation takes an admission ticket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Admission {
    /// Takes a read or write ticket before the Global lock.
    #[default]
    Normal,
    /// Takes no ticket: state transitions, fsyncLock, internal work that must not queue behind
    /// user operations.
    Exempt,
}

/// How an operation is set up.
#[derive(Clone, Debug)]
pub struct LockerOptions {
    /// Shown as `clientInfo.desc` in lockInfo and `desc` in currentOp (e.g. "conn12").
    pub desc: String,
    /// maxTimeMS: the operation's deadline, from now.
    pub max_time_ms: Option<u64>,
    /// Overrides the manager's lock timeout for this operation (transactions use 5 ms).
    pub lock_timeout_ms: Option<u64>,
    pub admission: Admission,
    /// Whether a replica-set state transition interrupts this operation when it conflicts.
    pub interruptible_by_state_change: bool,
    /// Whether the Global lock comes with the RSTL in IX (true for every operation except the
    /// fsyncLock holder, which must not block state transitions).
    pub takes_rstl: bool,
}

impl Default for LockerOptions {
    fn default() -> Self {
        LockerOptions {
            desc: String::new(),
            max_time_ms: None,
            lock_timeout_ms: None,
            admission: Admission::Normal,
            interruptible_by_state_change: true,
            takes_rstl: true,
        }
    }
}

impl LockerOptions {
    pub fn new(desc: impl Into<String>) -> LockerOptions {
        LockerOptions {
            desc: desc.into(),
            ..LockerOptions::default()
        }
    }
}

/// What a granter leaves in a waiter's cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitNote {
    Lock { request_id: u64, slot: usize },
    Conversion { slot: usize },
    Ticket { request_id: u64 },
}

#[derive(Default)]
pub(crate) struct WaitCell {
    note: Option<WaitNote>,
}

/// What an operation waits for, for the deadlock detector.
#[derive(Clone)]
pub(crate) struct WaitTarget {
    pub head: Arc<LockHead>,
    pub wait: WaitRef,
}

/// The part of an operation other threads see.
pub(crate) struct OpShared {
    pub opid: u64,
    pub desc: String,
    /// 0, or the code the operation was killed with (first kill wins).
    kill_code: AtomicI32,
    cell: Mutex<WaitCell>,
    wake: Condvar,
    /// Odd while waiting for a lock (see the module invariants).
    pub wait_epoch: AtomicU64,
    pub waiting_on: Mutex<Option<WaitTarget>>,
    pub waiting_for_lock: AtomicBool,
    pub waiting_for_ticket: AtomicBool,
    /// Per resource type: 0, or 1 + the strongest mode held.
    held_modes: [AtomicU8; RESOURCE_TYPES],
    pub stats: LockStats,
    pub num_yields: AtomicU64,
    pub interruptible_by_state_change: bool,
    /// The intent grants this operation holds on the fast path (which no lock head lists), for
    /// lockInfo and the deadlock detector. Written only by the operation.
    fast_holds: [FastHold; FAST_HOLDS_MAX],
}

/// Most fast-path grants one operation holds at once; more go through the mutex.
const FAST_HOLDS_MAX: usize = 8;

/// One published fast-path grant: the head's address (0: free) and the mode.
#[derive(Default)]
struct FastHold {
    head: AtomicUsize,
    mode: AtomicU8,
}

impl Owner for Arc<OpShared> {
    fn owner_id(&self) -> u64 {
        self.opid
    }
}

impl OpShared {
    pub fn new(opid: u64, options: &LockerOptions) -> OpShared {
        OpShared {
            opid,
            desc: options.desc.clone(),
            kill_code: AtomicI32::new(0),
            cell: Mutex::new(WaitCell::default()),
            wake: Condvar::new(),
            wait_epoch: AtomicU64::new(0),
            waiting_on: Mutex::new(None),
            waiting_for_lock: AtomicBool::new(false),
            waiting_for_ticket: AtomicBool::new(false),
            held_modes: Default::default(),
            stats: LockStats::default(),
            num_yields: AtomicU64::new(0),
            interruptible_by_state_change: options.interruptible_by_state_change,
            fast_holds: Default::default(),
        }
    }

    fn publish_fast(&self, index: usize, head: &LockHead, mode: LockMode) {
        self.fast_holds[index]
            .mode
            .store(mode.index() as u8, Ordering::Relaxed);
        self.fast_holds[index]
            .head
            .store(head.address(), Ordering::Release);
    }

    fn unpublish_fast(&self, index: usize) {
        self.fast_holds[index].head.store(0, Ordering::Release);
    }

    /// The mode this operation holds on `head` through the fast path, if any.
    pub fn fast_hold_on(&self, head: &LockHead) -> Option<LockMode> {
        let address = head.address();
        self.fast_holds
            .iter()
            .find(|hold| hold.head.load(Ordering::Acquire) == address)
            .map(|hold| LockMode::from_index(hold.mode.load(Ordering::Relaxed) as usize))
    }

    /// Marks the operation killed with `code` (the first kill wins) and wakes it if it waits.
    pub fn kill(&self, code: ErrorCode) {
        let _ = self
            .kill_code
            .compare_exchange(0, code.code(), Ordering::SeqCst, Ordering::SeqCst);
        // Taking the cell's mutex orders the store above before the waiter's next look at it:
        // either the waiter sees the code, or it is inside `wait_for` and gets this notify.
        let _cell = self.cell.lock();
        self.wake.notify_one();
    }

    pub fn kill_code(&self) -> Option<ErrorCode> {
        match self.kill_code.load(Ordering::SeqCst) {
            0 => None,
            code => Some(ErrorCode::from_code(code)),
        }
    }

    /// Called by a granter (under the mutex of the head or pool granted): records the grant in
    /// the waiter's cell and wakes it.
    pub fn deliver(&self, note: WaitNote) {
        if !matches!(note, WaitNote::Ticket { .. }) {
            let before = self.wait_epoch.fetch_add(1, Ordering::SeqCst);
            assert!(
                before % 2 == 1,
                "lock granted to an operation that was not waiting"
            );
        }
        let mut cell = self.cell.lock();
        cell.note = Some(note);
        self.wake.notify_one();
    }

    /// Forgets an earlier grant note, before a new request is queued.
    pub fn clear_note(&self) {
        self.cell.lock().note = None;
    }

    /// Records that a mode of `kind` is held (only the operation writes these: no
    /// read-modify-write needed).
    fn raise_held_mode(&self, kind: ResourceType, mode: LockMode) {
        let value = mode.index() as u8 + 1;
        let cell = &self.held_modes[kind.index()];
        if cell.load(Ordering::Relaxed) < value {
            cell.store(value, Ordering::Relaxed);
        }
    }

    fn set_held_mode(&self, kind: ResourceType, mode: Option<LockMode>) {
        let value = mode.map_or(0, |m| m.index() as u8 + 1);
        self.held_modes[kind.index()].store(value, Ordering::Relaxed);
    }

    /// currentOp `locks`: `{Global: "w", Database: "w", Collection: "w"}`.
    pub fn held_locks_document(&self) -> Document {
        let mut locks = Document::new();
        for kind in ResourceType::ALL {
            let value = self.held_modes[kind.index()].load(Ordering::Relaxed);
            if value > 0 {
                locks.insert(
                    kind.name(),
                    LockMode::from_index(value as usize - 1).legacy_letter(),
                );
            }
        }
        locks
    }

    pub fn holds_any(&self) -> bool {
        self.held_modes
            .iter()
            .any(|m| m.load(Ordering::Relaxed) > 0)
    }

    /// The currentOp fields this crate knows.
    pub fn current_op_document(&self) -> Document {
        let mut document = doc! {
            "opid": self.opid as i64,
            "desc": self.desc.clone(),
            "locks": self.held_locks_document(),
            "waitingForLock": self.waiting_for_lock.load(Ordering::Relaxed),
            "waitingForTicket": self.waiting_for_ticket.load(Ordering::Relaxed),
            "lockStats": self.stats.snapshot().to_document(),
            "numYields": self.num_yields.load(Ordering::Relaxed) as i64,
            "killPending": self.kill_code().is_some(),
        };
        if let Some(waiting) = self.waiting_for_document() {
            document.insert("waitingFor", waiting);
        }
        document
    }

    /// `{resourceId, mode}` of the lock this operation waits for (a cairn addition to currentOp).
    fn waiting_for_document(&self) -> Option<Document> {
        // The target is cloned first: a head's mutex is never taken under `waiting_on`.
        let target = self.waiting_on.lock().clone()?;
        let mode = target.head.state.lock().wanted(target.wait)?;
        Some(doc! { "resourceId": target.head.resource.to_string(), "mode": mode.name() })
    }
}

/// The error an operation killed with `code` reports.
pub(crate) fn kill_error(code: ErrorCode) -> Error {
    let message = match code {
        ErrorCode::Interrupted => "operation was interrupted".to_string(),
        ErrorCode::InterruptedAtShutdown => "interrupted at shutdown".to_string(),
        ErrorCode::InterruptedDueToReplStateChange => {
            "operation was interrupted because a replica set state change occurred".to_string()
        }
        ErrorCode::MaxTimeMSExpired => "operation exceeded time limit".to_string(),
        other => format!("operation was killed: {other}"),
    };
    Error::new(code, message)
}

/// A handle another thread uses to kill an operation (killOp, shutdown, a state transition).
#[derive(Clone)]
pub struct KillHandle {
    shared: Arc<OpShared>,
}

impl KillHandle {
    /// Kills the operation: a wait ends at once with `code`, and every later lock request and
    /// interrupt check fails with it. Usual codes: Interrupted (11601), InterruptedAtShutdown
    /// (11600), InterruptedDueToReplStateChange (11602), MaxTimeMSExpired (50).
    pub fn kill(&self, code: ErrorCode) {
        self.shared.kill(code);
    }

    pub fn opid(&self) -> u64 {
        self.shared.opid
    }

    pub fn is_killed(&self) -> bool {
        self.shared.kill_code().is_some()
    }
}

/// A resource named without allocating, to look it up.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    ReplicationStateTransition,
    Global,
    Database(&'a str),
    Collection(&'a Namespace),
    Oplog,
}

impl Target<'_> {
    fn resource_type(self) -> ResourceType {
        match self {
            Target::ReplicationStateTransition => ResourceType::ReplicationStateTransition,
            Target::Global => ResourceType::Global,
            Target::Database(_) => ResourceType::Database,
            Target::Collection(_) => ResourceType::Collection,
            Target::Oplog => ResourceType::Oplog,
        }
    }

    fn matches(self, resource: &ResourceId) -> bool {
        match self {
            Target::ReplicationStateTransition => {
                matches!(resource, ResourceId::ReplicationStateTransition)
            }
            Target::Global => matches!(resource, ResourceId::Global),
            Target::Database(db) => resource.is_database(db),
            Target::Collection(ns) => resource.is_collection(ns),
            Target::Oplog => matches!(resource, ResourceId::Oplog),
        }
    }
}

/// Which head: the fixed ones are reached through the manager, so that taking them touches no
/// shared reference count.
enum HeadRef {
    ReplicationStateTransition,
    Global,
    Oplog,
    Table(Arc<LockHead>),
    /// The database head of this collection head: a database lock taken with a collection
    /// lock holds the collection's head, whose reference count is not shared with every
    /// operation in the database.
    ParentOf(Arc<LockHead>),
}

impl HeadRef {
    fn get<'a>(&'a self, inner: &'a Inner) -> &'a LockHead {
        match self {
            HeadRef::ReplicationStateTransition => &inner.rstl,
            HeadRef::Global => &inner.global,
            HeadRef::Oplog => &inner.oplog,
            HeadRef::Table(head) => head,
            HeadRef::ParentOf(head) => head
                .parent
                .as_ref()
                .expect("a collection head has a parent"),
        }
    }

    fn arc(&self, inner: &Inner) -> Arc<LockHead> {
        match self {
            HeadRef::ReplicationStateTransition => inner.rstl.clone(),
            HeadRef::Global => inner.global.clone(),
            HeadRef::Oplog => inner.oplog.clone(),
            HeadRef::Table(head) => head.clone(),
            HeadRef::ParentOf(head) => head.parent.clone().expect("a collection head has a parent"),
        }
    }
}

/// How a held resource was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeldGrant {
    /// A request in the head's state, in this slot.
    Slot(usize),
    /// A fast-path intent grant, published in this index of `OpShared::fast_holds`.
    Fast { publish: usize },
}

/// One resource an operation holds.
struct Held {
    head: HeadRef,
    kind: ResourceType,
    /// Meaningful while `in_manager`.
    grant: HeldGrant,
    mode: LockMode,
    /// Recursive acquisitions not yet released (one per guard).
    count: u32,
    /// False while yielded (or after a failed restore): remembered, not held.
    in_manager: bool,
}

/// The locks an operation held when it yielded, in canonical order.
#[derive(Debug)]
#[must_use = "pass it to Locker::restore_lock_state"]
pub struct SavedLockState {
    pub locks: Vec<(ResourceId, LockMode)>,
    pub ticket: Option<TicketKind>,
}

/// One operation's locks. Created by [`LockManager::new_locker`]; used from one thread at a time
/// (it is `Send`, not `Sync`). Dropping it releases whatever it still holds.
pub struct Locker {
    manager: LockManager,
    shared: Arc<OpShared>,
    held: RefCell<Vec<Option<Held>>>,
    ticket: Cell<Option<TicketKind>>,
    deadline: Cell<Option<Duration>>,
    lock_timeout_ms: Cell<Option<u64>>,
    admission: Admission,
    takes_rstl: bool,
    yielded: Cell<bool>,
    /// This operation's partition of the intent fast path.
    partition: usize,
    /// Bits of `OpShared::fast_holds` in use.
    publish_used: Cell<u8>,
}

/// Up to this many resources under one guard (RSTL, Global, Database, Collection).
const GUARD_RESOURCES_MAX: usize = 4;

/// Locks taken by one call (a resource and its ancestors), released in reverse order on drop.
#[must_use = "the locks are released when the guard is dropped"]
pub struct LockGuard<'l> {
    locker: &'l Locker,
    indices: [usize; GUARD_RESOURCES_MAX],
    len: usize,
}

impl<'l> LockGuard<'l> {
    fn new(locker: &'l Locker) -> LockGuard<'l> {
        LockGuard {
            locker,
            indices: [0; GUARD_RESOURCES_MAX],
            len: 0,
        }
    }

    fn push(&mut self, index: usize) {
        assert!(
            self.len < GUARD_RESOURCES_MAX,
            "too many resources under one guard"
        );
        self.indices[self.len] = index;
        self.len += 1;
    }

    /// The resources this guard holds, ancestors first.
    pub fn resources(&self) -> Vec<(ResourceId, LockMode)> {
        let held = self.locker.held.borrow();
        self.indices[..self.len]
            .iter()
            .map(|&i| {
                let entry = held[i].as_ref().expect("guarded entry");
                (
                    entry.head.get(self.locker.inner()).resource.clone(),
                    entry.mode,
                )
            })
            .collect()
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        for &index in self.indices[..self.len].iter().rev() {
            self.locker.release_index(index);
        }
    }
}

impl Locker {
    pub(crate) fn new(
        manager: LockManager,
        shared: Arc<OpShared>,
        options: &LockerOptions,
    ) -> Self {
        let opid = shared.opid;
        let locker = Locker {
            deadline: Cell::new(None),
            lock_timeout_ms: Cell::new(options.lock_timeout_ms),
            admission: options.admission,
            takes_rstl: options.takes_rstl,
            manager,
            shared,
            held: RefCell::new(Vec::with_capacity(GUARD_RESOURCES_MAX)),
            ticket: Cell::new(None),
            yielded: Cell::new(false),
            partition: opid as usize % FAST_PARTITIONS,
            publish_used: Cell::new(0),
        };
        locker.set_max_time_ms(options.max_time_ms);
        locker
    }

    fn inner(&self) -> &Inner {
        self.manager.inner()
    }

    pub fn opid(&self) -> u64 {
        self.shared.opid
    }

    pub fn manager(&self) -> &LockManager {
        &self.manager
    }

    pub fn kill_handle(&self) -> KillHandle {
        KillHandle {
            shared: self.shared.clone(),
        }
    }

    /// Sets maxTimeMS from now (`None`: no deadline).
    pub fn set_max_time_ms(&self, max_time_ms: Option<u64>) {
        let now = self.inner().clock.monotonic();
        self.deadline
            .set(max_time_ms.map(|ms| now + Duration::from_millis(ms)));
    }

    /// Sets this operation's lock timeout (`None`: the manager's).
    pub fn set_lock_timeout_ms(&self, lock_timeout_ms: Option<u64>) {
        self.lock_timeout_ms.set(lock_timeout_ms);
    }

    /// The error to stop with, if the operation was killed or is past its deadline. Call it
    /// after every restore from a yield (the yield policy does).
    pub fn check_for_interrupt(&self) -> Result<()> {
        if let Some(code) = self.shared.kill_code() {
            return Err(kill_error(code));
        }
        if let Some(deadline) = self.deadline.get()
            && self.inner().clock.monotonic() >= deadline
        {
            return Err(kill_error(ErrorCode::MaxTimeMSExpired));
        }
        Ok(())
    }

    fn check_killed(&self) -> Result<()> {
        match self.shared.kill_code() {
            Some(code) => Err(kill_error(code)),
            None => Ok(()),
        }
    }

    /// Takes the Global lock in `mode` (with its admission ticket and the RSTL in IX).
    pub fn lock_global(&self, mode: LockMode) -> Result<LockGuard<'_>> {
        let mut guard = LockGuard::new(self);
        let took_ticket = self.ensure_ticket(mode)?;
        let result = (|| {
            if self.takes_rstl {
                let rstl = Target::ReplicationStateTransition;
                guard.push(self.acquire(rstl, LockMode::IX, false, None)?);
            }
            guard.push(self.acquire(Target::Global, mode, false, None)?);
            Ok(())
        })();
        match result {
            Ok(()) => Ok(guard),
            Err(error) => {
                drop(guard);
                if took_ticket && self.find_held(Target::Global).is_none() {
                    self.release_ticket();
                }
                Err(error)
            }
        }
    }

    /// Takes database `db` in `mode`, and Global in the intent mode.
    pub fn lock_database(&self, db: &str, mode: LockMode) -> Result<LockGuard<'_>> {
        let mut guard = self.lock_global(mode.intent())?;
        guard.push(self.acquire(Target::Database(db), mode, false, None)?);
        Ok(guard)
    }

    /// Takes collection `ns` in `mode`, and its database and Global in the intent mode. The
    /// oplog namespace takes the oplog resource (see [`Locker::lock_oplog`]).
    pub fn lock_collection(&self, ns: &Namespace, mode: LockMode) -> Result<LockGuard<'_>> {
        if ns.is_oplog() {
            return self.lock_oplog(mode);
        }
        // One table lookup: the collection's head knows its database's head.
        let target = Target::Collection(ns);
        let head = match self.find_held(target) {
            Some(_) => None,
            None => Some(self.inner().head(target)),
        };
        let database = head.clone().map(HeadRef::ParentOf);
        let mut guard = self.lock_global(mode.intent())?;
        guard.push(self.acquire(Target::Database(&ns.db), mode.intent(), false, database)?);
        guard.push(self.acquire(target, mode, false, head.map(HeadRef::Table))?);
        Ok(guard)
    }

    /// Takes the oplog in `mode`, and Global in the intent mode (not the `local` database: the
    /// oplog is its own resource so that writers of every database share only it).
    pub fn lock_oplog(&self, mode: LockMode) -> Result<LockGuard<'_>> {
        let mut guard = self.lock_global(mode.intent())?;
        guard.push(self.acquire(Target::Oplog, mode, false, None)?);
        Ok(guard)
    }

    /// For a replica-set state transition: takes the RSTL in X, queued at the front, and
    /// interrupts every operation that holds or waits for the RSTL (they all conflict with X)
    /// with InterruptedDueToReplStateChange (11602), then waits for them to let go (bounded as
    /// every wait). The operation must hold nothing yet.
    pub fn lock_replication_state_transition(&self) -> Result<LockGuard<'_>> {
        self.check_killed()?;
        if self.held.borrow().iter().any(Option::is_some) {
            return Err(Error::new(
                ErrorCode::IllegalOperation,
                "a state transition must take the replication state transition lock first",
            ));
        }
        let mode = LockMode::X;
        let kind = ResourceType::ReplicationStateTransition;
        self.shared.stats.record_acquire(kind, mode);
        let inner = self.inner();
        let mut state = inner.rstl.state.lock();
        let external = inner.rstl.enter_slow();
        let slot = match state.request(self.shared.clone(), mode, true, external) {
            RequestOutcome::Granted { slot } => {
                drop(state);
                slot
            }
            RequestOutcome::Queued { request_id } => {
                // Holders are in the state or on the fast path (seen through what every
                // operation publishes); waiters are in the queue.
                let mut victims: Vec<Arc<OpShared>> = state
                    .pending()
                    .map(|request| request.owner.clone())
                    .collect();
                victims.extend(state.granted().map(|(_, entry)| entry.owner.clone()));
                victims.extend(
                    inner
                        .live_operations()
                        .into_iter()
                        .filter(|op| op.fast_hold_on(&inner.rstl).is_some()),
                );
                victims
                    .retain(|op| op.opid != self.shared.opid && op.interruptible_by_state_change);
                let wait = WaitRef::Request { request_id };
                self.begin_lock_wait(inner.rstl.clone(), wait);
                drop(state);
                for victim in victims {
                    victim.kill(ErrorCode::InterruptedDueToReplStateChange);
                }
                self.wait_for_lock(&inner.rstl, wait, mode)?
            }
        };
        let entry = Held {
            head: HeadRef::ReplicationStateTransition,
            kind,
            grant: HeldGrant::Slot(slot),
            mode,
            count: 1,
            in_manager: true,
        };
        let index = self.insert_held(entry);
        let mut guard = LockGuard::new(self);
        guard.push(index);
        Ok(guard)
    }

    /// Takes a ticket for a first Global acquisition. True when one was taken now.
    fn ensure_ticket(&self, mode: LockMode) -> Result<bool> {
        if self.admission == Admission::Exempt
            || self.ticket.get().is_some()
            || self.find_held(Target::Global).is_some()
        {
            return Ok(false);
        }
        self.check_killed()?;
        let kind = TicketKind::for_mode(mode);
        self.take_ticket(kind)?;
        Ok(true)
    }

    fn take_ticket(&self, kind: TicketKind) -> Result<()> {
        let pool = self.inner().ticket_pool(kind);
        match pool.request(&self.shared) {
            TicketOutcome::Granted => {}
            TicketOutcome::Queued { request_id } => {
                let start = self.inner().clock.monotonic();
                let (wait_until, timeout_code) = self.wait_limit(start);
                self.shared
                    .waiting_for_ticket
                    .store(true, Ordering::Relaxed);
                self.shared.waiting_for_lock.store(true, Ordering::Relaxed);
                let queue = self.inner().queue_counter(kind == TicketKind::Read);
                queue.fetch_add(1, Ordering::Relaxed);
                let expected = WaitNote::Ticket { request_id };
                let outcome = self.wait_for_note(|note| note == expected, wait_until);
                queue.fetch_sub(1, Ordering::Relaxed);
                self.shared
                    .waiting_for_ticket
                    .store(false, Ordering::Relaxed);
                self.shared.waiting_for_lock.store(false, Ordering::Relaxed);
                if let Err(stop) = outcome
                    && pool.cancel(request_id)
                {
                    let what = match kind {
                        TicketKind::Read => "a read ticket",
                        TicketKind::Write => "a write ticket",
                    };
                    return Err(self.stop_error(stop, timeout_code, what));
                }
                // Granted (perhaps just as the wait ended): the ticket is ours.
            }
        }
        self.ticket.set(Some(kind));
        Ok(())
    }

    fn release_ticket(&self) {
        if let Some(kind) = self.ticket.take() {
            self.inner().ticket_pool(kind).release();
        }
    }

    fn find_held_head(&self, head: &LockHead) -> Option<usize> {
        let inner = self.inner();
        let address = head.address();
        let held = self.held.borrow();
        held.iter().position(|entry| {
            entry
                .as_ref()
                .is_some_and(|e| e.head.get(inner).address() == address)
        })
    }

    fn find_held(&self, target: Target<'_>) -> Option<usize> {
        let held = self.held.borrow();
        held.iter()
            .position(|entry| match (entry.as_ref().map(|e| &e.head), target) {
                (Some(HeadRef::ReplicationStateTransition), Target::ReplicationStateTransition)
                | (Some(HeadRef::Global), Target::Global)
                | (Some(HeadRef::Oplog), Target::Oplog) => true,
                (
                    Some(head @ (HeadRef::Table(_) | HeadRef::ParentOf(_))),
                    Target::Database(_) | Target::Collection(_),
                ) => target.matches(&head.get(self.inner()).resource),
                _ => false,
            })
    }

    fn insert_held(&self, entry: Held) -> usize {
        let (kind, mode) = (entry.kind, entry.mode);
        let mut held = self.held.borrow_mut();
        let index = match held.iter().position(Option::is_none) {
            Some(index) => {
                held[index] = Some(entry);
                index
            }
            None => {
                held.push(Some(entry));
                held.len() - 1
            }
        };
        self.shared.raise_held_mode(kind, mode);
        index
    }

    fn refresh_held_mode(&self, held: &[Option<Held>], kind: ResourceType) {
        let strongest = held
            .iter()
            .flatten()
            .filter(|e| e.in_manager && e.kind == kind)
            .map(|e| e.mode)
            .max();
        self.shared.set_held_mode(kind, strongest);
    }

    /// Acquires one resource (recursively, by conversion, or anew) and returns its index in
    /// `held`. `resolved`: the resource's head when the caller already looked it up.
    fn acquire(
        &self,
        target: Target<'_>,
        mode: LockMode,
        enqueue_at_front: bool,
        resolved: Option<HeadRef>,
    ) -> Result<usize> {
        self.check_killed()?;
        let kind = target.resource_type();
        self.shared.stats.record_acquire(kind, mode);
        // A head already looked up is found by address (one head per resource), else by name.
        let found = match &resolved {
            Some(head) => self.find_held_head(head.get(self.inner())),
            None => self.find_held(target),
        };
        if let Some(index) = found {
            let (held_mode, in_manager) = {
                let held = self.held.borrow();
                let entry = held[index].as_ref().expect("found entry");
                (entry.mode, entry.in_manager)
            };
            if !in_manager {
                return Err(Error::new(
                    ErrorCode::IllegalOperation,
                    "the operation's locks are not restored (yielded, or the restore failed)",
                ));
            }
            if !held_mode.covers(mode) {
                if !held_mode.can_upgrade_to(mode) {
                    let resource = self.held.borrow()[index]
                        .as_ref()
                        .map(|e| e.head.get(self.inner()).resource.to_string())
                        .unwrap_or_default();
                    return Err(Error::new(
                        ErrorCode::IllegalOperation,
                        format!("cannot convert the {held_mode} lock on {resource} to {mode}"),
                    ));
                }
                self.convert(index, mode)?;
            }
            let mut held = self.held.borrow_mut();
            let entry = held[index].as_mut().expect("found entry");
            entry.count += 1;
            self.shared.raise_held_mode(kind, entry.mode);
            return Ok(index);
        }
        let head = match target {
            Target::ReplicationStateTransition => HeadRef::ReplicationStateTransition,
            Target::Global => HeadRef::Global,
            Target::Oplog => HeadRef::Oplog,
            Target::Database(_) | Target::Collection(_) => {
                resolved.unwrap_or_else(|| HeadRef::Table(self.inner().head(target)))
            }
        };
        let grant = self.grant_on(&head, mode, enqueue_at_front)?;
        Ok(self.insert_held(Held {
            head,
            kind,
            grant,
            mode,
            count: 1,
            in_manager: true,
        }))
    }

    /// Gets `mode` on `head` (which this operation does not hold): on the fast path when it
    /// can, else as a request that may wait.
    fn grant_on(
        &self,
        head: &HeadRef,
        mode: LockMode,
        enqueue_at_front: bool,
    ) -> Result<HeldGrant> {
        let lock_head = head.get(self.inner());
        let used = self.publish_used.get();
        if matches!(mode, LockMode::IS | LockMode::IX) && !enqueue_at_front && used != u8::MAX {
            // Published before the attempt: whoever sees the fast-path count (the slow path
            // reads it after an acquire load of the same counter) also sees who holds it, so
            // a state transition cannot miss a holder it must interrupt.
            let publish = used.trailing_ones() as usize;
            self.shared.publish_fast(publish, lock_head, mode);
            if lock_head.try_fast_acquire(self.partition, mode) {
                self.publish_used.set(used | (1 << publish));
                return Ok(HeldGrant::Fast { publish });
            }
            self.shared.unpublish_fast(publish);
        }
        let mut state = lock_head.state.lock();
        let external = lock_head.enter_slow();
        match state.request(self.shared.clone(), mode, enqueue_at_front, external) {
            RequestOutcome::Granted { slot } => {
                lock_head.settle(&state);
                Ok(HeldGrant::Slot(slot))
            }
            RequestOutcome::Queued { request_id } => {
                let wait = WaitRef::Request { request_id };
                let head = head.arc(self.inner());
                self.begin_lock_wait(head.clone(), wait);
                drop(state);
                Ok(HeldGrant::Slot(self.wait_for_lock(&head, wait, mode)?))
            }
        }
    }

    fn unpublish(&self, publish: usize) {
        self.shared.unpublish_fast(publish);
        self.publish_used
            .set(self.publish_used.get() & !(1 << publish));
    }

    /// Upgrades the held entry `index` to `to`. A fast-path grant first becomes a request in
    /// the head's state (conversions are decided under the mutex).
    fn convert(&self, index: usize, to: LockMode) -> Result<()> {
        let inner = self.inner();
        let (head, grant, from) = {
            let held = self.held.borrow();
            let entry = held[index].as_ref().expect("held entry");
            (entry.head.arc(inner), entry.grant, entry.mode)
        };
        let mut state = head.state.lock();
        let mut external = head.enter_slow();
        let slot = match grant {
            HeldGrant::Slot(slot) => slot,
            HeldGrant::Fast { publish } => {
                head.take_fast(self.partition, from);
                external = head.enter_slow();
                let slot = state.adopt(self.shared.clone(), from, external);
                self.unpublish(publish);
                self.held.borrow_mut()[index]
                    .as_mut()
                    .expect("held entry")
                    .grant = HeldGrant::Slot(slot);
                slot
            }
        };
        if state.convert(slot, to, external) == ConvertOutcome::Waiting {
            let wait = WaitRef::Conversion { slot };
            self.begin_lock_wait(head.clone(), wait);
            drop(state);
            self.wait_for_lock(&head, wait, to)?;
        } else {
            head.settle(&state);
            drop(state);
        }
        self.held.borrow_mut()[index]
            .as_mut()
            .expect("held entry")
            .mode = to;
        Ok(())
    }

    /// Publishes that this operation waits (called under the head's mutex, right after the
    /// request was queued).
    fn begin_lock_wait(&self, head: Arc<LockHead>, wait: WaitRef) {
        self.shared.clear_note();
        let before = self.shared.wait_epoch.fetch_add(1, Ordering::SeqCst);
        assert!(
            before.is_multiple_of(2),
            "an operation waits for one lock at a time"
        );
        *self.shared.waiting_on.lock() = Some(WaitTarget { head, wait });
        self.shared.waiting_for_lock.store(true, Ordering::Relaxed);
    }

    /// `min(deadline, start + lock timeout)` and the code a wait ending there reports.
    fn wait_limit(&self, start: Duration) -> (Duration, ErrorCode) {
        let timeout_ms = self
            .lock_timeout_ms
            .get()
            .unwrap_or_else(|| self.inner().lock_timeout_ms());
        let lock_deadline = start.saturating_add(Duration::from_millis(timeout_ms));
        match self.deadline.get() {
            Some(deadline) if deadline <= lock_deadline => (deadline, ErrorCode::MaxTimeMSExpired),
            _ => (lock_deadline, ErrorCode::LockTimeout),
        }
    }

    /// Waits until the cell holds a note `accept` takes, the operation is killed, or
    /// `wait_until`. Returns the note, or why the wait stopped.
    fn wait_for_note(
        &self,
        accept: impl Fn(WaitNote) -> bool,
        wait_until: Duration,
    ) -> std::result::Result<WaitNote, WaitStop> {
        let clock = &self.inner().clock;
        let recheck = self.inner().wait_recheck;
        let mut cell = self.shared.cell.lock();
        loop {
            if let Some(note) = cell.note
                && accept(note)
            {
                return Ok(note);
            }
            if let Some(code) = self.shared.kill_code() {
                return Err(WaitStop::Killed(code));
            }
            let now = clock.monotonic();
            if now >= wait_until {
                return Err(WaitStop::TimedOut);
            }
            self.shared
                .wake
                .wait_for(&mut cell, wait_slice(wait_until - now, recheck));
        }
    }

    fn stop_error(&self, stop: WaitStop, timeout_code: ErrorCode, what: &str) -> Error {
        match stop {
            WaitStop::Killed(code) => kill_error(code),
            WaitStop::Deadlock => Error::new(
                ErrorCode::LockTimeout,
                format!("Unable to acquire {what}: deadlock detected, this operation was chosen"),
            ),
            WaitStop::TimedOut => match timeout_code {
                ErrorCode::MaxTimeMSExpired => kill_error(ErrorCode::MaxTimeMSExpired),
                code => Error::new(
                    code,
                    format!("Unable to acquire {what} within the lock timeout"),
                ),
            },
        }
    }

    /// Waits for a queued request or conversion on `head`; returns the granted slot. On any
    /// stop the request is withdrawn, unless it was granted meanwhile: then the grant stands
    /// (a kill is seen at the next interruption point).
    fn wait_for_lock(&self, head: &Arc<LockHead>, wait: WaitRef, mode: LockMode) -> Result<usize> {
        let inner = self.inner();
        let start = inner.clock.monotonic();
        let (wait_until, timeout_code) = self.wait_limit(start);
        let queue = inner.queue_counter(mode.is_read());
        queue.fetch_add(1, Ordering::Relaxed);
        let accept = |note: WaitNote| match (wait, note) {
            (
                WaitRef::Request { request_id },
                WaitNote::Lock {
                    request_id: granted,
                    ..
                },
            ) => request_id == granted,
            (WaitRef::Conversion { slot }, WaitNote::Conversion { slot: granted }) => {
                slot == granted
            }
            _ => false,
        };
        let mut outcome = Err(WaitStop::Deadlock);
        if !(inner.deadlock_detection && inner.find_deadlock(&self.shared)) {
            outcome = self.wait_for_note(accept, wait_until);
        }
        let result = match outcome {
            Ok(note) => Ok(note),
            Err(stop) => {
                let mut state = head.state.lock();
                let external = head.enter_slow();
                let withdrawn = match wait {
                    WaitRef::Request { request_id } => state.cancel_request(request_id, external),
                    WaitRef::Conversion { slot } => state.cancel_conversion(slot, external),
                };
                match withdrawn {
                    Some(grants) => {
                        let before = self.shared.wait_epoch.fetch_add(1, Ordering::SeqCst);
                        assert!(before % 2 == 1, "withdrawing a wait that was not published");
                        deliver_grants(grants);
                        head.settle(&state);
                        drop(state);
                        let what = format!("{mode} lock on '{}'", head.resource);
                        Err(self.stop_error(stop, timeout_code, &what))
                    }
                    None => {
                        head.settle(&state);
                        drop(state);
                        // Granted meanwhile: the granter left the note in the cell under the
                        // head's mutex, which this thread has held since.
                        let cell_note = self.shared.cell.lock().note;
                        let note = cell_note.filter(|n| accept(*n));
                        Ok(note.expect("a withdrawn-too-late request has its grant note"))
                    }
                }
            }
        };
        queue.fetch_sub(1, Ordering::Relaxed);
        *self.shared.waiting_on.lock() = None;
        self.shared.waiting_for_lock.store(false, Ordering::Relaxed);
        let waited = inner.clock.monotonic().saturating_sub(start);
        let kind = head.resource.resource_type();
        self.shared
            .stats
            .record_wait(kind, mode, waited.as_micros() as u64);
        match result? {
            WaitNote::Lock { slot, .. } | WaitNote::Conversion { slot } => Ok(slot),
            WaitNote::Ticket { .. } => unreachable!("a lock wait accepts lock notes only"),
        }
    }

    /// Gives back a held resource's grant to its head (the entry stays as it is).
    fn release_grant(&self, entry: &Held) {
        let head = entry.head.get(self.inner());
        match entry.grant {
            HeldGrant::Fast { publish } => {
                head.fast_release(self.partition, entry.mode);
                self.unpublish(publish);
            }
            HeldGrant::Slot(slot) => {
                let mut state = head.state.lock();
                let external = head.enter_slow();
                deliver_grants(state.release(slot, external));
                head.settle(&state);
            }
        }
    }

    /// Releases one acquisition of the held entry `index` (the resource when the count ends).
    fn release_index(&self, index: usize) {
        let mut held = self.held.borrow_mut();
        let entry = held[index]
            .as_mut()
            .expect("releasing an entry that is not held");
        assert!(entry.count > 0);
        entry.count -= 1;
        if entry.count > 0 {
            return;
        }
        let entry = held[index].take().expect("entry");
        let kind = entry.kind;
        if entry.in_manager {
            self.release_grant(&entry);
        }
        self.refresh_held_mode(&held, kind);
        drop(held);
        if kind == ResourceType::Global {
            self.release_ticket();
        }
    }

    /// Indices of held entries in canonical order.
    fn canonical_order(&self) -> Vec<usize> {
        let held = self.held.borrow();
        let inner = self.inner();
        let mut order: Vec<usize> = (0..held.len()).filter(|&i| held[i].is_some()).collect();
        order.sort_by(|&a, &b| {
            let resource = |i: usize| &held[i].as_ref().expect("entry").head.get(inner).resource;
            resource(a).cmp(resource(b))
        });
        order
    }

    /// Yield, first half: releases every lock and the ticket, remembering them. The guards
    /// stay valid; [`Locker::restore_lock_state`] takes the same locks again.
    pub fn save_lock_state(&self) -> SavedLockState {
        assert!(
            !self.yielded.get(),
            "save_lock_state twice without a restore"
        );
        let order = self.canonical_order();
        let mut held = self.held.borrow_mut();
        let mut locks = Vec::with_capacity(order.len());
        for &index in order.iter().rev() {
            let entry = held[index].as_mut().expect("entry");
            if entry.in_manager {
                self.release_grant(entry);
                entry.in_manager = false;
            }
            locks.push((entry.head.get(self.inner()).resource.clone(), entry.mode));
        }
        locks.reverse();
        for kind in ResourceType::ALL {
            self.refresh_held_mode(&held, kind);
        }
        drop(held);
        let ticket = self.ticket.get();
        self.release_ticket();
        self.yielded.set(true);
        SavedLockState { locks, ticket }
    }

    /// Yield, second half: takes the ticket and the saved locks again, in canonical order, each
    /// wait bounded as usual. On error the locks not retaken stay released; the operation must
    /// stop (its guards can still be dropped).
    pub fn restore_lock_state(&self, saved: SavedLockState) -> Result<()> {
        assert!(
            self.yielded.get(),
            "restore_lock_state without save_lock_state"
        );
        self.yielded.set(false);
        self.check_killed()?;
        if let Some(kind) = saved.ticket {
            self.take_ticket(kind)?;
        }
        for index in self.canonical_order() {
            self.check_killed()?;
            // Take the head out of the entry while waiting (the guards do not touch it).
            let (head, mode) = {
                let mut held = self.held.borrow_mut();
                let entry = held[index].as_mut().expect("entry");
                let head = std::mem::replace(&mut entry.head, HeadRef::Global);
                (head, entry.mode)
            };
            let kind = head.get(self.inner()).resource.resource_type();
            self.shared.stats.record_acquire(kind, mode);
            let outcome = self.grant_on(&head, mode, false);
            let mut held = self.held.borrow_mut();
            let entry = held[index].as_mut().expect("entry");
            entry.head = head;
            entry.grant = outcome?;
            entry.in_manager = true;
            self.refresh_held_mode(&held, kind);
        }
        Ok(())
    }

    /// Counts a yield (numYields in currentOp).
    pub(crate) fn record_yield(&self) {
        self.shared.num_yields.fetch_add(1, Ordering::Relaxed);
    }

    pub fn num_yields(&self) -> u64 {
        self.shared.num_yields.load(Ordering::Relaxed)
    }

    /// This operation's currentOp fields: opid, desc, locks, waitingForLock, lockStats,
    /// numYields, killPending.
    pub fn current_op(&self) -> Document {
        self.shared.current_op_document()
    }

    /// The locks this operation holds now (resource, mode, recursion count), in canonical order.
    pub fn held_locks(&self) -> Vec<(ResourceId, LockMode, u32)> {
        let held = self.held.borrow();
        let inner = self.inner();
        let mut locks: Vec<(ResourceId, LockMode, u32)> = held
            .iter()
            .flatten()
            .filter(|e| e.in_manager)
            .map(|e| (e.head.get(inner).resource.clone(), e.mode, e.count))
            .collect();
        locks.sort();
        locks
    }

    /// Takes `mode` on the Global lock without a guard (for holders that outlive a call, such as
    /// fsyncLock); released when the locker is dropped.
    pub(crate) fn lock_global_unguarded(&self, mode: LockMode) -> Result<()> {
        let guard = self.lock_global(mode)?;
        std::mem::forget(guard);
        Ok(())
    }
}

/// Why a wait stopped without a grant.
#[derive(Clone, Copy, Debug)]
enum WaitStop {
    Killed(ErrorCode),
    TimedOut,
    Deadlock,
}

/// Wakes the owners of grants (called under the mutex of the head that made them).
pub(crate) fn deliver_grants(grants: Vec<crate::head::Grant<Arc<OpShared>>>) {
    for grant in grants {
        match grant {
            crate::head::Grant::New {
                owner,
                request_id,
                slot,
            } => owner.deliver(WaitNote::Lock { request_id, slot }),
            crate::head::Grant::Conversion { owner, slot } => {
                owner.deliver(WaitNote::Conversion { slot })
            }
        }
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        let order = self.canonical_order();
        for index in order.into_iter().rev() {
            let entry = self.held.borrow_mut()[index].take().expect("entry");
            if entry.in_manager {
                self.release_grant(&entry);
            }
        }
        for kind in ResourceType::ALL {
            self.shared.set_held_mode(kind, None);
        }
        self.release_ticket();
        self.manager.inner().unregister(&self.shared);
    }
}
