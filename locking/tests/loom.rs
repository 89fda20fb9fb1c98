//! Model checking of the real grant / wait / wake code under loom: every interleaving of the
//! mutexes and condition variables (up to a preemption bound) is run.
//!
//! Run with `cargo test -p cairn-locking --features loom --test loom --release`. Under loom a
//! timed wait never times out, so a lost wake-up, a request left in a queue or a deadlock the
//! detector misses shows up as loom's "deadlock" failure instead of a slow test.

#![cfg(feature = "loom")]

use cairn_locking::{Admission, LockManager, LockManagerConfig, LockMode, LockerOptions};
use cairn_types::{ErrorCode, ManualClock, Namespace};
use loom::thread;
use std::sync::Arc;

fn model(test: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(test);
}

fn manager(deadlock_detection: bool, tickets: u32) -> LockManager {
    LockManager::new(LockManagerConfig {
        clock: Arc::new(ManualClock::new(0)),
        deadlock_detection,
        read_tickets_max: tickets,
        write_tickets_max: tickets,
        ..LockManagerConfig::default()
    })
}

/// An operation with the fewest moving parts: no ticket, no RSTL.
fn bare(desc: &str) -> LockerOptions {
    LockerOptions {
        admission: Admission::Exempt,
        takes_rstl: false,
        ..LockerOptions::new(desc)
    }
}

/// Who holds the Global lock, as the holders say: a check of the matrix from outside the
/// manager (the fast path has no mutex under which the manager could assert it).
#[derive(Default)]
struct Shadow {
    readers: loom::sync::atomic::AtomicUsize,
    writer: loom::sync::atomic::AtomicBool,
}

impl Shadow {
    fn enter(&self, mode: LockMode) {
        use std::sync::atomic::Ordering::SeqCst;
        if mode == LockMode::X {
            self.writer.store(true, SeqCst);
            assert_eq!(
                self.readers.load(SeqCst),
                0,
                "X granted while an intent lock is held"
            );
        } else {
            self.readers.fetch_add(1, SeqCst);
            assert!(!self.writer.load(SeqCst), "{mode} granted while X is held");
        }
    }

    fn leave(&self, mode: LockMode) {
        use std::sync::atomic::Ordering::SeqCst;
        if mode == LockMode::X {
            self.writer.store(false, SeqCst);
        } else {
            self.readers.fetch_sub(1, SeqCst);
        }
    }
}

#[test]
fn a_release_wakes_a_queued_waiter_and_the_fast_path_keeps_the_matrix() {
    model(|| {
        let manager = manager(false, 128);
        let shadow = Arc::new(Shadow::default());
        let threads: Vec<_> = [LockMode::X, LockMode::IS, LockMode::IX]
            .into_iter()
            .map(|mode| {
                let locker = manager.new_locker(bare(mode.name()));
                let shadow = shadow.clone();
                thread::spawn(move || {
                    let guard = locker.lock_global(mode).unwrap();
                    shadow.enter(mode);
                    shadow.leave(mode);
                    drop(guard);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let after = manager.new_locker(bare("after"));
        assert!(after.lock_global(LockMode::X).is_ok());
    });
}

#[test]
fn a_kill_racing_a_grant_leaves_a_consistent_queue() {
    model(|| {
        let manager = manager(false, 128);
        let holder = manager.new_locker(bare("holder"));
        let held = holder.lock_global(LockMode::X).unwrap();
        std::mem::forget(held);
        let victim = manager.new_locker(bare("victim"));
        let kill = victim.kill_handle();
        let waiter = thread::spawn(move || {
            let outcome = victim.lock_global(LockMode::IS).map(|_| ());
            outcome.map_err(|e| e.code)
        });
        let killer = thread::spawn(move || kill.kill(ErrorCode::Interrupted));
        drop(holder);
        let outcome = waiter.join().unwrap();
        killer.join().unwrap();
        assert!(
            matches!(outcome, Ok(()) | Err(ErrorCode::Interrupted)),
            "{outcome:?}"
        );
        // Nothing is left behind: an X is granted at once (a leftover would hang loom).
        let after = manager.new_locker(bare("after"));
        assert!(after.lock_global(LockMode::X).is_ok());
    });
}

#[test]
fn a_conversion_waits_for_the_other_holder_and_is_woken() {
    model(|| {
        let manager = manager(false, 128);
        let converter = manager.new_locker(bare("converter"));
        let other = manager.new_locker(bare("other"));
        let other_guard_taken = other.lock_global(LockMode::IS).unwrap();
        std::mem::forget(other_guard_taken);
        let one = thread::spawn(move || {
            let shared = converter.lock_global(LockMode::IS).unwrap();
            let exclusive = converter.lock_global(LockMode::X).unwrap();
            drop(exclusive);
            drop(shared);
        });
        drop(other);
        one.join().unwrap();
    });
}

#[test]
fn a_single_ticket_is_passed_on() {
    model(|| {
        let manager = manager(false, 1);
        let ns = Namespace::new("d", "c");
        let lockers: Vec<_> = (0..2)
            .map(|i| {
                manager.new_locker(LockerOptions {
                    takes_rstl: false,
                    ..LockerOptions::new(format!("w{i}"))
                })
            })
            .collect();
        let threads: Vec<_> = lockers
            .into_iter()
            .map(|locker| {
                let ns = ns.clone();
                thread::spawn(move || {
                    let guard = locker.lock_collection(&ns, LockMode::IX).unwrap();
                    drop(guard);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let tickets = manager.server_status_tickets();
        assert_eq!(
            tickets
                .get_document("write")
                .unwrap()
                .get_i32("out")
                .unwrap(),
            0
        );
    });
}

#[test]
fn a_deadlock_is_broken_by_the_detector() {
    model(|| {
        let manager = manager(true, 128);
        let run = |first: &'static str, second: &'static str| {
            let locker = manager.new_locker(bare(first));
            thread::spawn(move || {
                let _a = locker.lock_database(first, LockMode::X).unwrap();
                locker
                    .lock_database(second, LockMode::X)
                    .map(|_| ())
                    .map_err(|e| e.code)
            })
        };
        let one = run("a", "b");
        let two = run("b", "a");
        let outcomes = [one.join().unwrap(), two.join().unwrap()];
        // Either the threads did not overlap (both succeed) or the detector chose one victim.
        let victims = outcomes.iter().filter(|o| o.is_err()).count();
        assert!(victims <= 1, "{outcomes:?}");
        for outcome in outcomes {
            assert!(matches!(outcome, Ok(()) | Err(ErrorCode::LockTimeout)));
        }
    });
}

#[test]
fn a_state_transition_interrupts_a_fast_path_rstl_holder() {
    model(|| {
        let manager = manager(false, 128);
        let done = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let writer = manager.new_locker(LockerOptions {
            admission: Admission::Exempt,
            ..LockerOptions::new("writer")
        });
        let transition = manager.new_locker(LockerOptions {
            admission: Admission::Exempt,
            ..LockerOptions::new("stepdown")
        });
        let writer_done = done.clone();
        let one = thread::spawn(move || {
            use std::sync::atomic::Ordering::SeqCst;
            // Holds the RSTL in IX (fast path) until it is interrupted or the transition is
            // over: if the transition missed it, neither would ever happen and loom reports it.
            if let Ok(guard) = writer.lock_global(LockMode::IX) {
                while writer.check_for_interrupt().is_ok() && !writer_done.load(SeqCst) {
                    thread::yield_now();
                }
                drop(guard);
            }
        });
        let two = thread::spawn(move || {
            let guard = transition.lock_replication_state_transition().unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(guard);
        });
        one.join().unwrap();
        two.join().unwrap();
    });
}
