//! A one-shot rendezvous between the thread that runs a job and the thread that waits for it,
//! which can also be told to take over as the committer (leader hand-over, see `committer`).

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

struct Slot<T> {
    value: Option<T>,
    lead: bool,
    sync: bool,
}

/// Carries one value to the waiting thread, or the request to lead.
pub(crate) struct Completion<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// What a waiter is woken for.
pub(crate) enum Wake<T> {
    Done(T),
    Lead,
    /// Run the journal sync of the group this waiter is in (`committer::run_syncer`).
    Sync,
}

/// Something whose waiter can be asked to become the leader.
pub(crate) trait Leadable: Send + Sync {
    fn offer_lead(&self);
}

impl<T> Completion<T> {
    pub(crate) fn new() -> Arc<Completion<T>> {
        Arc::new(Completion {
            slot: Mutex::new(Slot {
                value: None,
                lead: false,
                sync: false,
            }),
            ready: Condvar::new(),
        })
    }

    /// Completes the job. Completing twice is a bug.
    pub(crate) fn complete(&self, value: T) {
        let mut slot = self.slot.lock();
        assert!(slot.value.is_none(), "job completed twice");
        slot.value = Some(value);
        self.ready.notify_one();
    }

    /// Waits until the job is complete or this waiter is asked to lead.
    pub(crate) fn wait(&self) -> Wake<T> {
        let mut slot = self.slot.lock();
        loop {
            if let Some(value) = slot.value.take() {
                return Wake::Done(value);
            }
            if slot.lead {
                slot.lead = false;
                return Wake::Lead;
            }
            if slot.sync {
                slot.sync = false;
                return Wake::Sync;
            }
            self.ready.wait(&mut slot);
        }
    }

    /// Asks the waiter to run its sync group's journal sync.
    pub(crate) fn offer_sync(&self) {
        let mut slot = self.slot.lock();
        slot.sync = true;
        self.ready.notify_one();
    }

    /// Whether this is the completion at `identity` (see [`Completion::identity`]).
    pub(crate) fn is(&self, identity: usize) -> bool {
        self.identity() == identity
    }

    /// An identity of this completion that does not depend on its value type.
    pub(crate) fn identity(&self) -> usize {
        std::ptr::from_ref(self) as *const () as usize
    }

    /// Whether the job is complete and its value not yet taken.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.slot.lock().value.is_some()
    }

    /// The value, which must be there (a job run on this thread).
    pub(crate) fn take(&self) -> T {
        self.slot
            .lock()
            .value
            .take()
            .expect("the job ran on this thread")
    }
}

impl<T: Send> Leadable for Completion<T> {
    fn offer_lead(&self) {
        let mut slot = self.slot.lock();
        slot.lead = true;
        self.ready.notify_one();
    }
}
