//! A one-shot rendezvous between the committer and a waiting caller.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

/// Carries one value from the thread that completes a job to the thread that waits for it.
pub(crate) struct Completion<T> {
    slot: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Completion<T> {
    pub(crate) fn new() -> Arc<Completion<T>> {
        Arc::new(Completion {
            slot: Mutex::new(None),
            ready: Condvar::new(),
        })
    }

    /// Completes the job. Completing twice is a bug.
    pub(crate) fn complete(&self, value: T) {
        let mut slot = self.slot.lock();
        assert!(slot.is_none(), "job completed twice");
        *slot = Some(value);
        self.ready.notify_one();
    }

    /// Waits until the job is complete.
    pub(crate) fn wait(&self) -> T {
        let mut slot = self.slot.lock();
        loop {
            if let Some(value) = slot.take() {
                return value;
            }
            self.ready.wait(&mut slot);
        }
    }
}
