//! Admission tickets: the read and write pools taken before the Global lock.
//!
//! Owns: [`TicketPool`], a counting semaphore with a FIFO queue and a capacity that can change at
//! run time. An operation whose Global mode reads (IS, S) takes a read ticket, one that writes
//! (IX, X) a write ticket; exempt operations (state transitions, fsyncLock) take none.
//!
//! Invariants: `out` never exceeds `capacity` by a grant (lowering the capacity lets the tickets
//! already out drain); a queued request is granted as soon as a ticket is free (a release that
//! sees `queued > 0`, or a capacity change, grants from the front). A waiter holds no lock while it waits, so a ticket wait
//! can never be part of a lock deadlock.

use crate::locker::{OpShared, WaitNote};
use crate::stats::readers_writers;
use crate::sync::{AtomicU32, Mutex, store_load_fence};
use bson::{Document, doc};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Which pool a ticket comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketKind {
    Read,
    Write,
}

impl TicketKind {
    pub fn for_mode(mode: crate::LockMode) -> TicketKind {
        if mode.is_read() {
            TicketKind::Read
        } else {
            TicketKind::Write
        }
    }
}

struct PoolState {
    queue: VecDeque<(u64, Arc<OpShared>)>,
    next_request_id: u64,
}

/// One pool of tickets.
///
/// Taking a free ticket when nobody queues is one compare-and-swap on `out`. A request that
/// finds none takes the mutex, counts itself in `queued`, then tries once more; a release
/// decrements `out`, then looks at `queued` and, if anyone queues, grants under the mutex.
/// Both sides write before they read (sequentially consistent), so a release never misses a
/// waiter that missed the release (Dekker).
pub(crate) struct TicketPool {
    state: Mutex<PoolState>,
    capacity: AtomicU32,
    out: AtomicU32,
    queued: AtomicU32,
}

/// What happened to a ticket request.
pub(crate) enum TicketOutcome {
    Granted,
    Queued { request_id: u64 },
}

impl TicketPool {
    pub fn new(capacity: u32) -> TicketPool {
        TicketPool {
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                next_request_id: 1,
            }),
            capacity: AtomicU32::new(capacity),
            out: AtomicU32::new(0),
            queued: AtomicU32::new(0),
        }
    }

    /// Takes a ticket if one is free (whoever queues).
    fn try_take(&self) -> bool {
        let mut out = self.out.load(Ordering::SeqCst);
        loop {
            if out >= self.capacity.load(Ordering::SeqCst) {
                return false;
            }
            match self
                .out
                .compare_exchange(out, out + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => out = now,
            }
        }
    }

    /// Takes a ticket if one is free and nobody queues, else queues `owner`.
    pub fn request(&self, owner: &Arc<OpShared>) -> TicketOutcome {
        if self.queued.load(Ordering::SeqCst) == 0 && self.try_take() {
            return TicketOutcome::Granted;
        }
        let mut state = self.state.lock();
        self.queued.fetch_add(1, Ordering::SeqCst);
        store_load_fence();
        if state.queue.is_empty() && self.try_take() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return TicketOutcome::Granted;
        }
        let request_id = state.next_request_id;
        state.next_request_id += 1;
        owner.clear_note();
        state.queue.push_back((request_id, owner.clone()));
        TicketOutcome::Queued { request_id }
    }

    /// Withdraws a queued request. False when it was granted meanwhile (the caller then holds a
    /// ticket).
    pub fn cancel(&self, request_id: u64) -> bool {
        let mut state = self.state.lock();
        let Some(position) = state.queue.iter().position(|(id, _)| *id == request_id) else {
            return false;
        };
        state.queue.remove(position);
        self.queued.fetch_sub(1, Ordering::SeqCst);
        true
    }

    pub fn release(&self) {
        let before = self.out.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "releasing a ticket that is not out");
        store_load_fence();
        if self.queued.load(Ordering::SeqCst) > 0 {
            let mut state = self.state.lock();
            self.grant_waiters(&mut state);
        }
    }

    pub fn set_capacity(&self, capacity: u32) {
        let mut state = self.state.lock();
        self.capacity.store(capacity, Ordering::SeqCst);
        self.grant_waiters(&mut state);
    }

    fn grant_waiters(&self, state: &mut PoolState) {
        while !state.queue.is_empty() && self.try_take() {
            let (request_id, owner) = state.queue.pop_front().expect("not empty");
            self.queued.fetch_sub(1, Ordering::SeqCst);
            owner.deliver(WaitNote::Ticket { request_id });
        }
    }

    pub fn out(&self) -> u32 {
        self.out.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> u32 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// `{out, available, totalTickets, queueLength}` (MongoDB's concurrentTransactions shape,
    /// plus the queue).
    pub fn to_document(&self) -> Document {
        let out = self.out();
        let capacity = self.capacity();
        doc! {
            "out": out as i32,
            "available": capacity.saturating_sub(out) as i32,
            "totalTickets": capacity as i32,
            "queueLength": self.queued.load(Ordering::Relaxed) as i32,
        }
    }
}

/// `activeClients` from the two pools.
pub(crate) fn active_clients(read: &TicketPool, write: &TicketPool) -> Document {
    readers_writers(read.out() as u64, write.out() as u64)
}
