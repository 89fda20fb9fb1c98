//! Behaviour of the lock manager between real threads: matrix, upgrades, grant order,
//! starvation, timeouts, kills, state transitions, tickets, fsyncLock, deadlocks, yielding and
//! the statistics documents.

#![cfg(not(feature = "loom"))]

use bson::doc;
use cairn_locking::{
    Admission, LockManager, LockManagerConfig, LockMode, Locker, LockerOptions, RecordingYieldable,
    ResourceId, YieldPolicy,
};
use cairn_types::{Error, ErrorCode, ManualClock, Namespace};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use LockMode::{IS, IX, S, X};

fn manager() -> LockManager {
    LockManager::new(LockManagerConfig {
        wait_recheck_ms: 5,
        ..LockManagerConfig::default()
    })
}

fn ns(coll: &str) -> Namespace {
    Namespace::new("shop", coll)
}

fn locker(manager: &LockManager, desc: &str, lock_timeout_ms: u64) -> Locker {
    manager.new_locker(LockerOptions {
        lock_timeout_ms: Some(lock_timeout_ms),
        ..LockerOptions::new(desc)
    })
}

/// Polls `condition` for up to 5 s.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for: {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn pending_on(manager: &LockManager, resource: &ResourceId) -> usize {
    manager.requests_on(resource).1.len()
}

fn code(result: Result<impl Sized, Error>) -> ErrorCode {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(error) => error.code,
    }
}

#[test]
fn matrix_between_two_operations_on_every_level() {
    let manager = manager();
    for held in LockMode::ALL {
        for wanted in LockMode::ALL {
            let holder = locker(&manager, "holder", 1_000);
            let other = locker(&manager, "other", 20);
            let _held = holder.lock_collection(&ns("orders"), held).unwrap();
            let outcome = other.lock_collection(&ns("orders"), wanted).map(|_| ());
            assert_eq!(
                outcome.is_ok(),
                held.is_compatible_with(wanted),
                "{held} then {wanted}"
            );
            if let Err(error) = outcome {
                assert_eq!(error.code, ErrorCode::LockTimeout);
                assert!(
                    error.message.contains("Collection: shop.orders"),
                    "{}",
                    error.message
                );
            }
            // The intent locks above never conflict with each other.
            drop(other);
            let global = locker(&manager, "global", 20);
            let outcome = global.lock_global(wanted);
            assert_eq!(
                outcome.is_ok(),
                held.intent().is_compatible_with(wanted),
                "global {wanted}"
            );
        }
    }
}

#[test]
fn upgrades_convert_and_refusals_are_errors() {
    let manager = manager();
    for (from, to) in [(IS, IX), (IS, S), (IS, X), (IX, X), (S, X)] {
        let op = locker(&manager, "op", 100);
        let first = op.lock_collection(&ns("c"), from).unwrap();
        let second = op.lock_collection(&ns("c"), to).unwrap();
        let held = op.held_locks();
        let collection = held
            .iter()
            .find(|(r, _, _)| matches!(r, ResourceId::Collection(_)));
        assert_eq!(
            collection.map(|(_, m, c)| (*m, *c)),
            Some((to, 2)),
            "{from}->{to}"
        );
        drop(second);
        // No downgrade on release: the stronger mode stays until the last release.
        assert!(op.held_locks().iter().any(|(_, m, c)| *m == to && *c == 1));
        drop(first);
        assert!(op.held_locks().is_empty());
    }
    for (from, to) in [(S, IX), (IX, S)] {
        let op = locker(&manager, "op", 100);
        let _first = op.lock_collection(&ns("c"), from).unwrap();
        let error = op.lock_collection(&ns("c"), to).map(|_| ()).unwrap_err();
        assert_eq!(error.code, ErrorCode::IllegalOperation, "{from}->{to}");
    }
    // A covered mode only counts.
    let op = locker(&manager, "op", 100);
    let _x = op.lock_collection(&ns("c"), X).unwrap();
    let _is = op.lock_collection(&ns("c"), IS).unwrap();
    let collection = ResourceId::Collection(ns("c"));
    assert_eq!(
        manager.requests_on(&collection).0,
        vec![X],
        "one request, still X"
    );
}

#[test]
fn a_conversion_jumps_the_queue() {
    let manager = manager();
    let a = locker(&manager, "a", 2_000);
    let b = locker(&manager, "b", 2_000);
    let _a = a.lock_collection(&ns("c"), IS).unwrap();
    let _b = b.lock_collection(&ns("c"), IS).unwrap();
    let collection = ResourceId::Collection(ns("c"));
    thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let c = locker(&manager, "c", 2_000);
            let _x = c.lock_collection(&ns("c"), X).unwrap();
        });
        eventually("X queued", || pending_on(&manager, &collection) == 1);
        let started = Instant::now();
        let upgraded = a.lock_collection(&ns("c"), IX).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "IS->IX waited behind X"
        );
        assert_eq!(pending_on(&manager, &collection), 1);
        drop(upgraded);
        drop(_a);
        drop(_b);
        waiter.join().unwrap();
    });
}

#[test]
fn grant_order_is_fifo_with_compatible_batches() {
    let manager = manager();
    let collection = ResourceId::Collection(ns("c"));
    let holder = locker(&manager, "holder", 5_000);
    let held = holder.lock_collection(&ns("c"), X).unwrap();
    let granted = Arc::new(Mutex::new(Vec::<usize>::new()));
    let modes = [IS, IS, X, X, S, IS];
    thread::scope(|scope| {
        let mut releases = Vec::new();
        for (index, mode) in modes.into_iter().enumerate() {
            let (release, released) = mpsc::channel::<()>();
            releases.push(release);
            let manager = &manager;
            let granted = granted.clone();
            scope.spawn(move || {
                let op = locker(manager, &format!("w{index}"), 5_000);
                let _guard = op.lock_collection(&ns("c"), mode).unwrap();
                granted.lock().unwrap().push(index);
                released.recv().unwrap();
            });
            eventually("queued in order", || {
                pending_on(manager, &collection) == index + 1
            });
        }
        let settle = |count: usize| {
            eventually("batch granted", || granted.lock().unwrap().len() == count);
            thread::sleep(Duration::from_millis(30));
            let mut batch = granted.lock().unwrap().clone();
            assert_eq!(batch.len(), count, "nothing past the batch: {batch:?}");
            batch.sort_unstable();
            batch
        };
        drop(held);
        assert_eq!(settle(2), [0, 1], "IS, IS");
        releases[0].send(()).unwrap();
        thread::sleep(Duration::from_millis(20));
        assert_eq!(
            granted.lock().unwrap().len(),
            2,
            "X waits for the second IS"
        );
        releases[1].send(()).unwrap();
        assert_eq!(settle(3), [0, 1, 2], "then X");
        releases[2].send(()).unwrap();
        assert_eq!(settle(4), [0, 1, 2, 3], "then the second X");
        releases[3].send(()).unwrap();
        assert_eq!(settle(6), [0, 1, 2, 3, 4, 5], "then S and IS together");
        releases[4].send(()).unwrap();
        releases[5].send(()).unwrap();
    });
}

#[test]
fn a_waiting_x_is_not_starved_by_a_stream_of_readers() {
    let manager = manager();
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    thread::scope(|scope| {
        for reader in 0..3 {
            let (manager, stop, reads) = (&manager, &stop, &reads);
            scope.spawn(move || {
                let op = locker(manager, &format!("reader{reader}"), 10_000);
                while !stop.load(Ordering::Relaxed) {
                    let _guard = op.lock_collection(&ns("hot"), IS).unwrap();
                    reads.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_micros(200));
                }
            });
        }
        eventually("readers running", || reads.load(Ordering::Relaxed) > 50);
        let writer = locker(&manager, "writer", 10_000);
        for _ in 0..5 {
            let started = Instant::now();
            let guard = writer.lock_collection(&ns("hot"), X).unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "X starved: {:?}",
                started.elapsed()
            );
            drop(guard);
            thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn waits_end_with_lock_timeout_or_max_time_ms() {
    let manager = manager();
    let holder = locker(&manager, "holder", 1_000);
    let _held = holder.lock_collection(&ns("c"), X).unwrap();

    let op = locker(&manager, "lock-timeout", 40);
    let started = Instant::now();
    let error = op.lock_collection(&ns("c"), IS).map(|_| ()).unwrap_err();
    assert_eq!(error.code, ErrorCode::LockTimeout);
    assert!(started.elapsed() >= Duration::from_millis(40));
    assert!(op.held_locks().is_empty(), "the ancestors were released");

    let op = manager.new_locker(LockerOptions {
        max_time_ms: Some(30),
        lock_timeout_ms: Some(10_000),
        ..LockerOptions::new("max-time")
    });
    let started = Instant::now();
    assert_eq!(
        code(op.lock_collection(&ns("c"), IX)),
        ErrorCode::MaxTimeMSExpired
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(code(op.check_for_interrupt()), ErrorCode::MaxTimeMSExpired);
    // The withdrawn requests are gone from the queue.
    assert_eq!(pending_on(&manager, &ResourceId::Collection(ns("c"))), 0);
}

#[test]
fn a_simulated_clock_ends_waits_when_it_moves() {
    let clock = Arc::new(ManualClock::new(0));
    let manager = LockManager::new(LockManagerConfig {
        clock: clock.clone(),
        wait_recheck_ms: 2,
        ..LockManagerConfig::default()
    });
    let holder = locker(&manager, "holder", 1_000);
    let _held = holder.lock_global(X).unwrap();
    thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let op = manager.new_locker(LockerOptions {
                max_time_ms: Some(1_000),
                ..LockerOptions::new("waiter")
            });
            op.lock_global(IS).map(|_| ()).unwrap_err().code
        });
        eventually("waiting", || pending_on(&manager, &ResourceId::Global) == 1);
        thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "the simulated clock has not moved");
        clock.advance(Duration::from_millis(1_001));
        assert_eq!(waiter.join().unwrap(), ErrorCode::MaxTimeMSExpired);
    });
}

#[test]
fn a_kill_wakes_a_waiting_operation_at_once() {
    let manager = manager();
    let holder = locker(&manager, "holder", 1_000);
    let _held = holder.lock_collection(&ns("c"), X).unwrap();
    thread::scope(|scope| {
        let (opid_sender, opid) = mpsc::channel();
        let manager = &manager;
        let waiter = scope.spawn(move || {
            let op = locker(manager, "victim", 60_000);
            opid_sender.send(op.opid()).unwrap();
            let started = Instant::now();
            let error = op.lock_collection(&ns("c"), IS).map(|_| ()).unwrap_err();
            let later = op.lock_global(IS).map(|_| ()).unwrap_err();
            (error.code, later.code, started.elapsed(), op.current_op())
        });
        let opid = opid.recv().unwrap();
        eventually("waiting", || {
            pending_on(manager, &ResourceId::Collection(ns("c"))) == 1
        });
        let killed_at = Instant::now();
        assert!(manager.kill_op(opid, ErrorCode::Interrupted));
        let (error, later, _, current_op) = waiter.join().unwrap();
        assert!(
            killed_at.elapsed() < Duration::from_secs(2),
            "woken at once"
        );
        assert_eq!(error, ErrorCode::Interrupted);
        assert_eq!(
            later,
            ErrorCode::Interrupted,
            "a killed operation stays killed"
        );
        assert!(current_op.get_bool("killPending").unwrap());
    });
    assert!(!manager.kill_op(999_999, ErrorCode::Interrupted));

    // Shutdown kills live operations and every later one.
    let live = locker(&manager, "live", 1_000);
    manager.shutdown();
    assert_eq!(code(live.lock_global(IS)), ErrorCode::InterruptedAtShutdown);
    let later = locker(&manager, "later", 1_000);
    assert_eq!(
        code(later.check_for_interrupt()),
        ErrorCode::InterruptedAtShutdown
    );
}

#[test]
fn a_state_transition_interrupts_conflicting_operations() {
    let manager = manager();
    let writer = locker(&manager, "writer", 10_000);
    let writes = writer.lock_collection(&ns("c"), IX).unwrap();
    let system = manager.new_locker(LockerOptions {
        interruptible_by_state_change: false,
        lock_timeout_ms: Some(10_000),
        ..LockerOptions::new("system")
    });
    let system_reads = system.lock_global(IS).unwrap();
    thread::scope(|scope| {
        // A second writer waits for X on the collection the first holds: it holds the RSTL in
        // IX while it waits, so the transition must wake it with 11602.
        let waiter = scope.spawn(|| {
            let op = locker(&manager, "waiter", 10_000);
            op.lock_collection(&ns("c"), X)
                .map(|_| ())
                .unwrap_err()
                .code
        });
        eventually("X queued", || {
            pending_on(&manager, &ResourceId::Collection(ns("c"))) == 1
        });
        let transition = scope.spawn(|| {
            let op = manager.new_locker(LockerOptions {
                admission: Admission::Exempt,
                lock_timeout_ms: Some(10_000),
                ..LockerOptions::new("stepdown")
            });
            let guard = op.lock_replication_state_transition().unwrap();
            // New operations queue behind the transition.
            let late = locker(&manager, "late", 30);
            let late_code = late.lock_global(IS).map(|_| ()).unwrap_err().code;
            drop(guard);
            late_code
        });
        let started = Instant::now();
        assert_eq!(
            waiter.join().unwrap(),
            ErrorCode::InterruptedDueToReplStateChange
        );
        assert!(started.elapsed() < Duration::from_secs(2), "woken at once");
        // The idle writer learns at its next interruption point.
        eventually("writer killed", || writer.check_for_interrupt().is_err());
        assert_eq!(
            code(writer.check_for_interrupt()),
            ErrorCode::InterruptedDueToReplStateChange
        );
        // The system operation is not interrupted; the transition waits for it.
        assert!(system.check_for_interrupt().is_ok());
        let rstl = ResourceId::ReplicationStateTransition;
        assert_eq!(
            manager.requests_on(&rstl).1,
            vec![X],
            "the transition waits"
        );
        drop(system_reads);
        drop(writes);
        assert_eq!(transition.join().unwrap(), ErrorCode::LockTimeout);
    });
    let after = locker(&manager, "after", 100);
    assert!(
        after.lock_collection(&ns("c"), IX).is_ok(),
        "the transition is over"
    );
}

#[test]
fn tickets_bound_admission_and_waiting_is_visible() {
    let manager = manager();
    manager.set_write_tickets_max(2);
    assert_eq!(manager.write_tickets_max(), 2);
    let first = locker(&manager, "w1", 1_000);
    let second = locker(&manager, "w2", 1_000);
    let _a = first.lock_collection(&ns("a"), IX).unwrap();
    let _b = second.lock_collection(&ns("b"), IX).unwrap();
    // Re-entering the Global lock takes no second ticket.
    let _again = first.lock_collection(&ns("c"), IX).unwrap();

    let third = locker(&manager, "w3", 30);
    assert_eq!(
        code(third.lock_collection(&ns("d"), IX)),
        ErrorCode::LockTimeout
    );
    // Readers have their own pool.
    let reader = locker(&manager, "r", 30);
    assert!(reader.lock_collection(&ns("d"), IS).is_ok());

    let tickets = manager.server_status_tickets();
    let write = tickets.get_document("write").unwrap();
    assert_eq!(write.get_i32("out").unwrap(), 2);
    assert_eq!(write.get_i32("available").unwrap(), 0);
    assert_eq!(write.get_i32("totalTickets").unwrap(), 2);

    thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let op = locker(&manager, "w4", 10_000);
            op.lock_collection(&ns("d"), IX)
                .map(|_| ())
                .map_err(|e| e.code)
        });
        eventually("writer queued for a ticket", || {
            let status = manager.server_status_global_lock();
            let queue = status.get_document("currentQueue").unwrap().clone();
            queue == doc! {"total": 1_i64, "readers": 0_i64, "writers": 1_i64}
        });
        let waiting: Vec<_> = manager
            .current_op(false)
            .into_iter()
            .filter(|op| op.get_bool("waitingForTicket").unwrap())
            .collect();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].get_str("desc").unwrap(), "w4");
        // Raising the pool at run time admits the waiter.
        manager.set_write_tickets_max(3);
        assert_eq!(waiter.join().unwrap(), Ok(()));
    });
    let active = manager.server_status_global_lock();
    assert_eq!(
        active
            .get_document("activeClients")
            .unwrap()
            .get_i64("writers")
            .unwrap(),
        2
    );
}

#[test]
fn a_kill_ends_a_ticket_wait_and_the_queue_moves_on() {
    let manager = manager();
    manager.set_read_tickets_max(1);
    let holder = locker(&manager, "holder", 1_000);
    let held = holder.lock_collection(&ns("c"), IS).unwrap();
    thread::scope(|scope| {
        let (opid_sender, opid) = mpsc::channel();
        let manager = &manager;
        let victim = scope.spawn(move || {
            let op = locker(manager, "victim", 60_000);
            opid_sender.send(op.opid()).unwrap();
            op.lock_collection(&ns("c"), IS)
                .map(|_| ())
                .map_err(|e| e.code)
        });
        let opid = opid.recv().unwrap();
        eventually("victim queued for a ticket", || {
            manager
                .server_status_tickets()
                .get_document("read")
                .unwrap()
                .get_i32("queueLength")
                .ok()
                == Some(1)
        });
        let behind = scope.spawn(move || {
            let op = locker(manager, "behind", 60_000);
            op.lock_collection(&ns("c"), IS)
                .map(|_| ())
                .map_err(|e| e.code)
        });
        eventually("two queued", || {
            manager
                .server_status_tickets()
                .get_document("read")
                .unwrap()
                .get_i32("queueLength")
                .ok()
                == Some(2)
        });
        assert!(manager.kill_op(opid, ErrorCode::Interrupted));
        assert_eq!(victim.join().unwrap(), Err(ErrorCode::Interrupted));
        drop(held);
        assert_eq!(
            behind.join().unwrap(),
            Ok(()),
            "the ticket went to the next in line"
        );
    });
    let read = manager
        .server_status_tickets()
        .get_document("read")
        .unwrap()
        .clone();
    assert_eq!(
        read,
        doc! {"out": 0, "available": 1, "totalTickets": 1, "queueLength": 0}
    );
}

#[test]
fn fsync_lock_nests_blocks_writes_and_lets_reads_go_on() {
    let manager = manager();
    let mut flushes = 0;
    assert_eq!(
        manager
            .fsync_lock(|| {
                flushes += 1;
                Ok(())
            })
            .unwrap(),
        1
    );
    assert_eq!(
        manager
            .fsync_lock(|| {
                flushes += 1;
                Ok(())
            })
            .unwrap(),
        2
    );
    assert_eq!(flushes, 2);
    assert_eq!(manager.fsync_lock_count(), 2);

    let reader = locker(&manager, "reader", 30);
    assert!(reader.lock_collection(&ns("c"), IS).is_ok(), "reads go on");
    let writer = locker(&manager, "writer", 30);
    assert_eq!(
        code(writer.lock_collection(&ns("c"), IX)),
        ErrorCode::LockTimeout
    );

    assert_eq!(manager.fsync_unlock().unwrap(), 1);
    assert_eq!(
        code(writer.lock_collection(&ns("c"), IX)),
        ErrorCode::LockTimeout,
        "still locked"
    );
    assert_eq!(manager.fsync_unlock().unwrap(), 0);
    assert!(writer.lock_collection(&ns("c"), IX).is_ok(), "writes go on");
    assert_eq!(code(manager.fsync_unlock()), ErrorCode::IllegalOperation);

    // A failed flush leaves nothing locked.
    let failed = manager.fsync_lock(|| Err(Error::internal("disk gone")));
    assert_eq!(code(failed), ErrorCode::InternalError);
    assert_eq!(manager.fsync_lock_count(), 0);
    let writer = locker(&manager, "writer2", 30);
    assert!(writer.lock_collection(&ns("c"), IX).is_ok());
}

#[test]
fn a_deadlock_is_detected_not_waited_out() {
    let manager = manager();
    let barrier = std::sync::Barrier::new(2);
    let outcomes = thread::scope(|scope| {
        let run = |first: &'static str, second: &'static str| {
            let (manager, barrier) = (&manager, &barrier);
            scope.spawn(move || {
                let op = locker(manager, first, 30_000);
                let _a = op.lock_collection(&ns(first), X).unwrap();
                barrier.wait();
                let started = Instant::now();
                let outcome = op.lock_collection(&ns(second), X).map(|_| ());
                (outcome, started.elapsed())
            })
        };
        let one = run("left", "right");
        let two = run("right", "left");
        [one.join().unwrap(), two.join().unwrap()]
    });
    let failures: Vec<&Error> = outcomes
        .iter()
        .filter_map(|(o, _)| o.as_ref().err())
        .collect();
    assert_eq!(failures.len(), 1, "exactly one victim: {outcomes:?}");
    assert_eq!(failures[0].code, ErrorCode::LockTimeout);
    assert!(
        failures[0].message.contains("deadlock"),
        "{}",
        failures[0].message
    );
    for (_, waited) in &outcomes {
        assert!(
            *waited < Duration::from_secs(5),
            "waited out instead of detected: {waited:?}"
        );
    }
    assert!(manager.deadlocks_found() >= 1);

    // Two S holders that both convert to X.
    let barrier = std::sync::Barrier::new(2);
    let outcomes = thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (manager, barrier) = (&manager, &barrier);
                scope.spawn(move || {
                    let op = locker(manager, &format!("s{i}"), 30_000);
                    let _s = op.lock_collection(&ns("shared"), S).unwrap();
                    barrier.wait();
                    op.lock_collection(&ns("shared"), X)
                        .map(|_| ())
                        .map_err(|e| e.code)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        outcomes.iter().filter(|o| o.is_err()).count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&Err(ErrorCode::LockTimeout)));
}

#[test]
fn a_deadlock_through_fast_path_intent_locks_is_detected() {
    // Each operation holds IX on its collection (granted on the fast path, so no lock head
    // lists it) and then asks for X on the other's: the cycle is only visible through what the
    // operations publish about their fast-path grants.
    let manager = manager();
    let barrier = std::sync::Barrier::new(2);
    let outcomes = thread::scope(|scope| {
        let run = |mine: &'static str, theirs: &'static str| {
            let (manager, barrier) = (&manager, &barrier);
            scope.spawn(move || {
                let op = locker(manager, mine, 30_000);
                let _ix = op.lock_collection(&ns(mine), IX).unwrap();
                barrier.wait();
                let started = Instant::now();
                let outcome = op
                    .lock_collection(&ns(theirs), X)
                    .map(|_| ())
                    .map_err(|e| e.code);
                (outcome, started.elapsed())
            })
        };
        let one = run("east", "west");
        let two = run("west", "east");
        [one.join().unwrap(), two.join().unwrap()]
    });
    let victims = outcomes.iter().filter(|(o, _)| o.is_err()).count();
    assert_eq!(victims, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|(o, _)| *o == Err(ErrorCode::LockTimeout))
    );
    assert!(
        outcomes
            .iter()
            .all(|(_, waited)| *waited < Duration::from_secs(5)),
        "{outcomes:?}"
    );
}

#[test]
fn lock_info_lists_fast_path_holders() {
    let manager = manager();
    let op = locker(&manager, "conn7", 1_000);
    let _guard = op.lock_collection(&ns("c"), IS).unwrap();
    let info = manager.lock_info();
    let entries = info.get_array("lockInfo").unwrap();
    let global = entries
        .iter()
        .map(|e| e.as_document().unwrap())
        .find(|e| e.get_str("resourceId").unwrap() == "{Global}")
        .expect("Global is listed");
    assert_eq!(
        global.get_array("granted").unwrap()[0]
            .as_document()
            .unwrap(),
        &doc! {
            "mode": "IS", "convertMode": "NONE", "enqueueAtFront": false,
            "compatibleFirst": false, "clientInfo": {"opid": op.opid() as i64, "desc": "conn7"},
        }
    );
    let resources: Vec<&str> = entries
        .iter()
        .map(|e| e.as_document().unwrap().get_str("resourceId").unwrap())
        .collect();
    assert_eq!(
        resources,
        [
            "{ReplicationStateTransition}",
            "{Global}",
            "{Database: shop}",
            "{Collection: shop.c}"
        ]
    );
}

#[test]
fn a_yielding_scan_lets_a_waiting_writer_in() {
    let manager = manager();
    let writer_done = AtomicBool::new(false);
    let scan_started = AtomicBool::new(false);
    thread::scope(|scope| {
        let scan = scope.spawn(|| {
            let op = locker(&manager, "scan", 10_000);
            let _guard = op.lock_collection(&ns("big"), IS).unwrap();
            let mut policy = YieldPolicy::for_locker(&op);
            let mut executor = RecordingYieldable::default();
            scan_started.store(true, Ordering::SeqCst);
            let started = Instant::now();
            // The "scan": work until the writer got in between two yields.
            while !writer_done.load(Ordering::SeqCst) {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the writer never got in"
                );
                thread::sleep(Duration::from_micros(100));
                policy.yield_if_needed(&op, &mut executor).unwrap();
            }
            assert!(
                op.held_locks()
                    .iter()
                    .any(|(r, m, _)| *r == ResourceId::Collection(ns("big")) && *m == IS)
            );
            (
                op.num_yields(),
                executor.saves,
                executor.restores,
                op.current_op(),
            )
        });
        eventually("scan running", || scan_started.load(Ordering::SeqCst));
        let writer = locker(&manager, "ddl", 10_000);
        let guard = writer.lock_collection(&ns("big"), X).unwrap();
        writer_done.store(true, Ordering::SeqCst);
        drop(guard);
        let (yields, saves, restores, current_op) = scan.join().unwrap();
        assert!(yields >= 1);
        assert_eq!((saves, restores), (yields, yields));
        assert_eq!(current_op.get_i64("numYields").unwrap(), yields as i64);
    });
}

#[test]
fn a_yield_reports_kills_and_dropped_collections() {
    let manager = manager();
    let op = locker(&manager, "scan", 1_000);
    let _guard = op.lock_collection(&ns("c"), IS).unwrap();
    let mut policy = YieldPolicy::new(manager.clock().clone(), Duration::from_secs(3600), Some(3));
    let mut executor = RecordingYieldable::default();
    assert!(!policy.yield_if_needed(&op, &mut executor).unwrap());
    assert!(!policy.yield_if_needed(&op, &mut executor).unwrap());
    assert!(
        policy.yield_if_needed(&op, &mut executor).unwrap(),
        "every 3 iterations"
    );

    // The collection was dropped while the locks were released.
    executor.fail_next_restore = Some(Error::new(ErrorCode::QueryPlanKilled, "collection dropped"));
    assert_eq!(
        code(policy.yield_now(&op, &mut executor)),
        ErrorCode::QueryPlanKilled
    );

    // A kill while yielded is reported by the restore.
    let saved = op.save_lock_state();
    assert!(
        saved
            .locks
            .iter()
            .any(|(r, m)| *r == ResourceId::Collection(ns("c")) && *m == IS)
    );
    assert!(
        op.held_locks().is_empty(),
        "everything released while yielded"
    );
    assert_eq!(manager.requests_on(&ResourceId::Global).0.len(), 0);
    op.kill_handle().kill(ErrorCode::Interrupted);
    assert_eq!(code(op.restore_lock_state(saved)), ErrorCode::Interrupted);
    assert_eq!(code(op.lock_global(IS)), ErrorCode::Interrupted);
}

#[test]
fn run_time_settings_take_effect() {
    let clock = Arc::new(ManualClock::new(0));
    let manager = LockManager::new(LockManagerConfig {
        clock: clock.clone(),
        wait_recheck_ms: 2,
        ..LockManagerConfig::default()
    });
    let holder = manager.new_locker(LockerOptions::new("holder"));
    let _held = holder.lock_global(X).unwrap();
    // The manager's lock timeout applies to operations without their own.
    manager.set_lock_timeout_ms(30);
    assert_eq!(manager.lock_timeout_ms(), 30);
    thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let op = manager.new_locker(LockerOptions::new("waiter"));
            op.lock_global(IS).map(|_| ()).unwrap_err().code
        });
        eventually("waiting", || pending_on(&manager, &ResourceId::Global) == 1);
        clock.advance(Duration::from_millis(31));
        assert_eq!(waiter.join().unwrap(), ErrorCode::LockTimeout);
    });
    // Yield settings reach policies made afterwards.
    manager.set_yield_period_ms(50);
    manager.set_yield_iterations_max(None);
    assert_eq!(
        (manager.yield_period_ms(), manager.yield_iterations_max()),
        (50, None)
    );
    let mut policy = YieldPolicy::for_locker(&holder);
    for _ in 0..5_000 {
        assert!(
            !policy.should_yield(),
            "no iteration limit, and the clock has not moved"
        );
    }
    clock.advance(Duration::from_millis(50));
    assert!(policy.should_yield());
    manager.set_read_tickets_max(7);
    assert_eq!(manager.read_tickets_max(), 7);
}

#[test]
fn idle_lock_heads_are_swept_as_the_table_grows() {
    let manager = manager();
    let op = locker(&manager, "ddl", 1_000);
    const COLLECTIONS: usize = 20_000;
    for index in 0..COLLECTIONS {
        drop(op.lock_collection(&ns(&format!("c{index}")), IX).unwrap());
    }
    // Shards sweep themselves past 1024 heads, so fewer than all remain for a full sweep.
    let left = manager.sweep_idle_lock_heads();
    assert!(
        left < COLLECTIONS,
        "{left} heads left of {COLLECTIONS}: no automatic sweep"
    );
    assert!(left > 0);
    assert_eq!(manager.sweep_idle_lock_heads(), 0);
}

#[test]
fn oplog_is_its_own_resource() {
    let manager = manager();
    let op = locker(&manager, "op", 100);
    let guard = op
        .lock_collection(&Namespace::new("local", "oplog.rs"), IX)
        .unwrap();
    assert_eq!(
        guard.resources(),
        [
            (ResourceId::ReplicationStateTransition, IX),
            (ResourceId::Global, IX),
            (ResourceId::Oplog, IX)
        ]
    );
    let held: Vec<ResourceId> = op.held_locks().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(
        held,
        [
            ResourceId::ReplicationStateTransition,
            ResourceId::Global,
            ResourceId::Oplog
        ]
    );
    let locks = manager.server_status_locks();
    assert_eq!(
        locks.get_document("oplog").unwrap(),
        &doc! {"acquireCount": {"w": 1_i64}}
    );
}

#[test]
fn statistics_and_views_have_mongodbs_shapes() {
    let manager = manager();
    let holder = locker(&manager, "conn1", 1_000);
    let held = holder.lock_collection(&ns("c"), X).unwrap();
    thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let op = locker(&manager, "conn2", 5_000);
            let _guard = op.lock_collection(&ns("c"), IS).unwrap();
            op.current_op()
        });
        eventually("waiting", || {
            pending_on(&manager, &ResourceId::Collection(ns("c"))) == 1
        });

        let info = manager.lock_info();
        let entries = info.get_array("lockInfo").unwrap();
        let collection = entries
            .iter()
            .map(|e| e.as_document().unwrap())
            .find(|e| e.get_str("resourceId").unwrap() == "{Collection: shop.c}")
            .expect("the collection is listed");
        let granted = collection.get_array("granted").unwrap();
        assert_eq!(
            granted[0].as_document().unwrap(),
            &doc! {
                "mode": "X", "convertMode": "NONE", "enqueueAtFront": false,
                "compatibleFirst": false,
                "clientInfo": {"opid": holder.opid() as i64, "desc": "conn1"},
            }
        );
        let pending = collection.get_array("pending").unwrap();
        assert_eq!(
            pending[0].as_document().unwrap().get_str("mode").unwrap(),
            "IS"
        );

        let ops = manager.current_op(false);
        let waiting = ops
            .iter()
            .find(|op| op.get_str("desc").unwrap() == "conn2")
            .unwrap();
        assert!(waiting.get_bool("waitingForLock").unwrap());
        assert_eq!(
            waiting.get_document("waitingFor").unwrap(),
            &doc! {"resourceId": "{Collection: shop.c}", "mode": "IS"}
        );
        assert_eq!(
            waiting.get_document("locks").unwrap(),
            &doc! {
                "ReplicationStateTransition": "w", "Global": "r", "Database": "r",
            }
        );
        let holding = ops
            .iter()
            .find(|op| op.get_str("desc").unwrap() == "conn1")
            .unwrap();
        assert_eq!(
            holding.get_document("locks").unwrap(),
            &doc! {
                "ReplicationStateTransition": "w", "Global": "w", "Database": "w", "Collection": "W",
            }
        );
        assert_eq!(
            manager
                .server_status_global_lock()
                .get_document("currentQueue")
                .unwrap(),
            &doc! {"total": 1_i64, "readers": 1_i64, "writers": 0_i64}
        );
        drop(held);
        let waited = waiter.join().unwrap();
        assert!(!waited.get_bool("waitingForLock").unwrap());
        assert!(!waited.contains_key("waitingFor"));
        let stats = waited
            .get_document("lockStats")
            .unwrap()
            .get_document("Collection")
            .unwrap();
        assert_eq!(
            stats.get_document("acquireWaitCount").unwrap(),
            &doc! {"r": 1_i64}
        );
        assert!(
            stats
                .get_document("timeAcquiringMicros")
                .unwrap()
                .get_i64("r")
                .unwrap()
                > 0
        );
    });
    let locks = manager.server_status_locks();
    assert_eq!(
        locks
            .get_document("Collection")
            .unwrap()
            .get_document("acquireCount")
            .unwrap(),
        &doc! {"r": 1_i64, "W": 1_i64},
        "ended operations are in the totals, zero values omitted"
    );
    assert_eq!(
        locks
            .get_document("Global")
            .unwrap()
            .get_document("acquireCount")
            .unwrap(),
        &doc! {"r": 1_i64, "w": 1_i64}
    );
    assert!(!locks.contains_key("oplog"));
    drop(holder);
    assert!(
        manager
            .lock_info()
            .get_array("lockInfo")
            .unwrap()
            .is_empty()
    );
    assert!(
        manager.sweep_idle_lock_heads() >= 2,
        "database and collection heads were idle"
    );
}
