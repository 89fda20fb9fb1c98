//! Admission tickets: the read and write pools taken before the Global lock.
//!
//! Owns: [`TicketPool`], a counting semaphore with a FIFO queue and a capacity that can change at
//! run time. An operation whose Global mode reads (IS, S) takes a read ticket, one that writes
//! (IX, X) a write ticket; exempt operations (state transitions, fsyncLock) take none.
//!
//! Invariants: `out` never exceeds `capacity` by a grant (lowering the capacity lets the tickets
//! already out drain); whenever `out < capacity` the queue is empty (a release or a capacity
//! change grants from the front at once). A waiter holds no lock while it waits, so a ticket wait
//! can never be part of a lock deadlock.

use crate::locker::{OpShared, WaitNote};
use crate::stats::readers_writers;
use crate::sync::Mutex;
use bson::{Document, doc};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

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
    capacity: u32,
    out: u32,
    queue: VecDeque<(u64, Arc<OpShared>)>,
    next_request_id: u64,
}

/// One pool of tickets.
pub(crate) struct TicketPool {
    state: Mutex<PoolState>,
    /// A mirror of `out`, for activeClients without the mutex.
    out: AtomicU32,
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
                capacity,
                out: 0,
                queue: VecDeque::new(),
                next_request_id: 1,
            }),
            out: AtomicU32::new(0),
        }
    }

    /// Takes a ticket if one is free and nobody queues, else queues `owner`.
    pub fn request(&self, owner: &Arc<OpShared>) -> TicketOutcome {
        let mut state = self.state.lock();
        if state.out < state.capacity && state.queue.is_empty() {
            state.out += 1;
            self.out.store(state.out, Ordering::Relaxed);
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
        true
    }

    pub fn release(&self) {
        let mut state = self.state.lock();
        assert!(state.out > 0, "releasing a ticket that is not out");
        state.out -= 1;
        self.grant_waiters(&mut state);
    }

    pub fn set_capacity(&self, capacity: u32) {
        let mut state = self.state.lock();
        state.capacity = capacity;
        self.grant_waiters(&mut state);
    }

    fn grant_waiters(&self, state: &mut PoolState) {
        while state.out < state.capacity {
            let Some((request_id, owner)) = state.queue.pop_front() else {
                break;
            };
            state.out += 1;
            owner.deliver(WaitNote::Ticket { request_id });
        }
        assert!(
            state.out >= state.capacity || state.queue.is_empty(),
            "a free ticket is left while operations queue"
        );
        self.out.store(state.out, Ordering::Relaxed);
    }

    pub fn out(&self) -> u32 {
        self.out.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> u32 {
        self.state.lock().capacity
    }

    /// `{out, available, totalTickets, queueLength}` (MongoDB's concurrentTransactions shape,
    /// plus the queue).
    pub fn to_document(&self) -> Document {
        let state = self.state.lock();
        doc! {
            "out": state.out as i32,
            "available": state.capacity.saturating_sub(state.out) as i32,
            "totalTickets": state.capacity as i32,
            "queueLength": state.queue.len() as i32,
        }
    }
}

/// `activeClients` from the two pools.
pub(crate) fn active_clients(read: &TicketPool, write: &TicketPool) -> Document {
    readers_writers(read.out() as u64, write.out() as u64)
}
