//! The synchronization primitives the lock manager is built on, swappable for model checking.
//!
//! Owns: `Mutex` (and its guard), `Condvar`, the atomics of the lock-free fast paths (intent
//! grants, tickets) and `store_load_fence`, with one API. Normal builds use parking_lot (no
//! poisoning, small and fast uncontended) and std's atomics; with the `loom` feature they are
//! loom's, so the model tests in `tests/loom.rs` explore the interleavings of the real
//! grant/wait/wake code.
//!
//! Invariant: every blocking wait in the crate goes through `Condvar::wait_for`. Under loom a
//! timed wait never times out, so a lost wake-up shows as a deadlock that loom reports instead of
//! being papered over by a timeout.

use std::time::Duration;

#[cfg(not(feature = "loom"))]
mod imp {
    use std::time::Duration;

    pub use parking_lot::{Mutex, MutexGuard};
    pub use std::sync::atomic::{AtomicBool, AtomicU32};

    #[derive(Default)]
    pub struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub fn new() -> Condvar {
            Condvar(parking_lot::Condvar::new())
        }

        pub fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration) {
            self.0.wait_for(guard, timeout);
        }

        pub fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}

#[cfg(feature = "loom")]
mod imp {
    use std::ops::{Deref, DerefMut};
    use std::time::Duration;

    pub use loom::sync::atomic::{AtomicBool, AtomicU32};

    pub struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().expect("loom mutex poisoned")))
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Mutex::new(T::default())
        }
    }

    /// loom's guard, in an `Option` so that a condition variable can take it by value.
    pub struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("guard present")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("guard present")
        }
    }

    #[derive(Default)]
    pub struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub fn new() -> Condvar {
            Condvar(loom::sync::Condvar::new())
        }

        pub fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration) {
            let inner = guard.0.take().expect("guard present");
            let (inner, _) = self
                .0
                .wait_timeout(inner, timeout)
                .expect("loom mutex poisoned");
            guard.0 = Some(inner);
        }

        pub fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}

pub(crate) use imp::{AtomicBool, AtomicU32, Condvar, Mutex};

/// Orders a store before a later load of another location, as the Dekker-style handshakes of
/// the fast paths need (each side writes, then reads what the other wrote).
///
/// In normal builds the accesses on both sides are sequentially consistent (read-modify-writes
/// and loads with `SeqCst`), which already puts them in one total order: nothing more is
/// needed, and this is empty. loom models `SeqCst` accesses only as acquire/release (its README,
/// "Unsupported features") but does model `fence(SeqCst)`, so under loom this is that fence:
/// the model then checks the algorithm with exactly the ordering the real build has.
#[inline(always)]
pub(crate) fn store_load_fence() {
    #[cfg(feature = "loom")]
    loom::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

/// The longest a waiter sleeps before it looks at the clock again, whatever its deadline: a
/// simulated clock moves without notifying anyone.
pub(crate) fn wait_slice(remaining: Duration, recheck: Duration) -> Duration {
    remaining.min(recheck).max(Duration::from_micros(1))
}
