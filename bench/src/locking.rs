//! `cairn-bench locking`: the lock manager's costs and fairness.
//!
//! Workloads (the `workload` field; `system` is `cairn`, or `mutex_baseline` for one plain
//! std mutex per resource level taken and released in the same order, as the floor
//! any lock manager is measured against):
//! - `uncontended_ix_chain` / `uncontended_is_chain`: one thread, `lock_collection(ns, IX|IS)`
//!   and release: ticket + RSTL + Global + Database + Collection. `ns_per_op` is one whole chain.
//! - `uncontended_collection_ix`: one thread holding Global and Database, one Collection IX
//!   acquire and release: the cost of a single intent lock.
//! - `ix_distinct` / `ix_same`: N threads (1, 2, 4, 8) taking the IX chain on their own
//!   collection / one shared collection; nothing inside the lock. `ix_distinct` also has
//!   `system: private_mutexes`: each thread locks five mutexes of its own, the machine's
//!   ceiling for a workload that shares nothing.
//! - `ix_distinct_periodic_x` / `ix_same_periodic_x`: the same while one more thread takes X on
//!   collection 0 every 5 ms and holds it 1 ms.
//! - `readers_alone` / `readers_waiting_writer`: 4 readers take IS on one collection and hold it
//!   50 us; in the second, a writer also asks for X every 10 ms. Reported twice: the readers' throughput (`readers`) and the
//!   writer's wait (`writer_wait`, p50/p99 in us): bounded waits show that X is not starved.

use crate::Settings;
use crate::report::{Latencies, Record, Reporter, sum_threads};
use cairn_locking::{LockManager, LockManagerConfig, LockMode, Locker, LockerOptions};
use cairn_types::Namespace;
use serde_json::{Map, Value};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const SUITE: &str = "locking";
/// One latency sample per this many operations (timing every one would cost more than a lock).
const SAMPLE_EVERY: u64 = 16;

pub fn run(settings: &Settings, reporter: &mut Reporter) -> anyhow::Result<()> {
    let seconds = if settings.quick { 0.2 } else { 2.0 };
    let run_for = Duration::from_secs_f64(seconds);
    uncontended(settings, reporter, run_for)?;
    for (workload, same, periodic_x) in [
        ("ix_distinct", false, false),
        ("ix_same", true, false),
        ("ix_distinct_periodic_x", false, true),
        ("ix_same_periodic_x", true, true),
    ] {
        if !settings.wants_workload(workload) {
            continue;
        }
        for threads in [1, 2, 4, 8] {
            if settings.wants_system("cairn") {
                let record = intent_throughput(workload, threads, same, periodic_x, run_for);
                reporter.emit(&record)?;
            }
            if workload == "ix_distinct" && settings.wants_system("private_mutexes") {
                reporter.emit(&private_mutexes(threads, run_for))?;
            }
        }
    }
    for (workload, with_writer) in [("readers_alone", false), ("readers_waiting_writer", true)] {
        if !settings.wants_workload(workload) || !settings.wants_system("cairn") {
            continue;
        }
        for record in readers_with_waiting_writer(run_for, with_writer) {
            reporter.emit(&record)?;
        }
    }
    Ok(())
}

fn manager() -> LockManager {
    LockManager::new(LockManagerConfig::default())
}

fn collection(index: usize) -> Namespace {
    Namespace::new("bench", format!("c{index}"))
}

fn record(workload: &str, system: &str, threads: usize, ops: u64, elapsed: Duration) -> Record {
    Record {
        suite: SUITE.into(),
        workload: workload.into(),
        system: system.into(),
        threads,
        ops,
        seconds: elapsed.as_secs_f64(),
        latencies: None,
        extra: Map::new(),
    }
}

/// Runs `operation` in batches until `run_for` has passed; returns (operations, elapsed).
fn repeat(run_for: Duration, mut operation: impl FnMut()) -> (u64, Duration) {
    const BATCH: u64 = 1_000;
    let started = Instant::now();
    let mut ops = 0;
    while started.elapsed() < run_for {
        for _ in 0..BATCH {
            operation();
        }
        ops += BATCH;
    }
    (ops, started.elapsed())
}

fn emit_uncontended(
    reporter: &mut Reporter,
    workload: &str,
    system: &str,
    (ops, elapsed): (u64, Duration),
) -> anyhow::Result<()> {
    let mut record = record(workload, system, 1, ops, elapsed);
    let ns_per_op = elapsed.as_nanos() as f64 / ops as f64;
    record.extra.insert(
        "ns_per_op".into(),
        Value::from((ns_per_op * 10.0).round() / 10.0),
    );
    reporter.emit(&record)
}

fn uncontended(
    settings: &Settings,
    reporter: &mut Reporter,
    run_for: Duration,
) -> anyhow::Result<()> {
    let manager = manager();
    let locker = manager.new_locker(LockerOptions::new("bench"));
    let ns = collection(0);
    // Warm the lock table.
    drop(locker.lock_collection(&ns, LockMode::IX)?);
    for (workload, mode) in [
        ("uncontended_ix_chain", LockMode::IX),
        ("uncontended_is_chain", LockMode::IS),
    ] {
        if !settings.wants_workload(workload) || !settings.wants_system("cairn") {
            continue;
        }
        let measured = repeat(run_for, || {
            let guard = locker.lock_collection(&ns, mode).expect("uncontended lock");
            black_box(&guard);
        });
        emit_uncontended(reporter, workload, "cairn", measured)?;
    }
    let collection_only = "uncontended_collection_ix";
    if settings.wants_workload(collection_only) && settings.wants_system("cairn") {
        let _database = locker.lock_database(&ns.db, LockMode::IX)?;
        let measured = repeat(run_for, || {
            let guard = locker
                .lock_collection(&ns, LockMode::IX)
                .expect("uncontended lock");
            black_box(&guard);
        });
        emit_uncontended(reporter, collection_only, "cairn", measured)?;
    }
    if !settings.wants_workload("uncontended_ix_chain") || !settings.wants_system("mutex_baseline")
    {
        return Ok(());
    }
    // The floor: five plain mutexes (ticket, RSTL, Global, Database, Collection).
    let mutexes: Vec<std::sync::Mutex<u64>> = (0..5).map(|_| std::sync::Mutex::new(0)).collect();
    let measured = repeat(run_for, || {
        for mutex in &mutexes {
            *mutex.lock().expect("not poisoned") += 1;
        }
        for mutex in mutexes.iter().rev() {
            *mutex.lock().expect("not poisoned") += 1;
        }
    });
    emit_uncontended(reporter, "uncontended_ix_chain", "mutex_baseline", measured)?;
    Ok(())
}

/// One thread's loop: the IX chain on `ns` until `stop`; returns (ops, sampled latencies).
fn intent_loop(locker: &Locker, ns: &Namespace, stop: &AtomicBool) -> (u64, Latencies) {
    let mut latencies = Latencies::new();
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..SAMPLE_EVERY - 1 {
            let guard = locker.lock_collection(ns, LockMode::IX).expect("IX chain");
            black_box(&guard);
        }
        let started = Instant::now();
        let guard = locker.lock_collection(ns, LockMode::IX).expect("IX chain");
        black_box(&guard);
        drop(guard);
        latencies.record(started.elapsed());
        ops += SAMPLE_EVERY;
    }
    (ops, latencies)
}

fn intent_throughput(
    workload: &str,
    threads: usize,
    same: bool,
    periodic_x: bool,
    run_for: Duration,
) -> Record {
    let manager = manager();
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|index| {
            let (manager, stop, barrier) = (manager.clone(), stop.clone(), barrier.clone());
            thread::spawn(move || {
                let locker = manager.new_locker(LockerOptions::new(format!("ix{index}")));
                let ns = collection(if same { 0 } else { index });
                barrier.wait();
                intent_loop(&locker, &ns, &stop)
            })
        })
        .collect();
    let exclusive = periodic_x.then(|| {
        let (manager, stop) = (manager.clone(), stop.clone());
        thread::spawn(move || {
            let locker = manager.new_locker(LockerOptions::new("periodic-x"));
            let mut taken = 0u64;
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(5));
                let guard = locker
                    .lock_collection(&collection(0), LockMode::X)
                    .expect("X");
                thread::sleep(Duration::from_millis(1));
                drop(guard);
                taken += 1;
            }
            taken
        })
    });
    barrier.wait();
    let started = Instant::now();
    thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    let (ops, latencies) = sum_threads(
        workers
            .into_iter()
            .map(|worker| worker.join().expect("worker")),
    );
    let elapsed = started.elapsed();
    let mut record = record(workload, "cairn", threads, ops, elapsed);
    record.latencies = Some(latencies);
    if let Some(exclusive) = exclusive {
        let taken = exclusive.join().expect("periodic X");
        record
            .extra
            .insert("x_acquisitions".into(), Value::from(taken));
    }
    record
}

/// The machine's ceiling for `ix_distinct`: each thread locks and unlocks five mutexes of its
/// own (nothing shared), timed the same way.
fn private_mutexes(threads: usize, run_for: Duration) -> Record {
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, barrier) = (stop.clone(), barrier.clone());
            thread::spawn(move || {
                let mutexes: Vec<std::sync::Mutex<u64>> =
                    (0..5).map(|_| std::sync::Mutex::new(0)).collect();
                let mut latencies = Latencies::new();
                let mut ops = 0u64;
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    for _ in 0..SAMPLE_EVERY {
                        let guards: Vec<_> = mutexes
                            .iter()
                            .map(|m| m.lock().expect("not poisoned"))
                            .collect();
                        black_box(&guards);
                    }
                    latencies.record(started.elapsed() / SAMPLE_EVERY as u32);
                    ops += SAMPLE_EVERY;
                }
                (ops, latencies)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    let (ops, latencies) = sum_threads(
        workers
            .into_iter()
            .map(|worker| worker.join().expect("worker")),
    );
    let mut record = record(
        "ix_distinct",
        "private_mutexes",
        threads,
        ops,
        started.elapsed(),
    );
    record.latencies = Some(latencies);
    record
}

/// Readers on one collection, with or without a writer that asks for X every 10 ms.
fn readers_with_waiting_writer(run_for: Duration, with_writer: bool) -> Vec<Record> {
    const READERS: usize = 4;
    let manager = manager();
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(READERS + 1 + usize::from(with_writer)));
    let readers: Vec<_> = (0..READERS)
        .map(|index| {
            let (manager, stop, barrier) = (manager.clone(), stop.clone(), barrier.clone());
            thread::spawn(move || {
                let locker = manager.new_locker(LockerOptions::new(format!("reader{index}")));
                let ns = collection(0);
                let mut latencies = Latencies::new();
                let mut ops = 0u64;
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let guard = locker.lock_collection(&ns, LockMode::IS).expect("IS");
                    latencies.record(started.elapsed());
                    // The read itself.
                    let hold = Instant::now();
                    while hold.elapsed() < Duration::from_micros(50) {
                        std::hint::spin_loop();
                    }
                    drop(guard);
                    ops += 1;
                }
                (ops, latencies)
            })
        })
        .collect();
    let writer = with_writer.then(|| {
        let (manager, stop, barrier) = (manager.clone(), stop.clone(), barrier.clone());
        thread::spawn(move || {
            let locker = manager.new_locker(LockerOptions::new("writer"));
            let mut waits = Latencies::new();
            barrier.wait();
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(10));
                let started = Instant::now();
                let guard = locker
                    .lock_collection(&collection(0), LockMode::X)
                    .expect("X");
                waits.record(started.elapsed());
                drop(guard);
            }
            waits
        })
    });
    barrier.wait();
    let started = Instant::now();
    thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    let (ops, latencies) = sum_threads(
        readers
            .into_iter()
            .map(|reader| reader.join().expect("reader")),
    );
    let elapsed = started.elapsed();
    let workload = if with_writer {
        "readers_waiting_writer"
    } else {
        "readers_alone"
    };
    let mut readers_record = record(workload, "cairn", READERS, ops, elapsed);
    readers_record.latencies = Some(latencies);
    readers_record
        .extra
        .insert("role".into(), Value::from("readers"));
    let Some(writer) = writer else {
        return vec![readers_record];
    };
    let waits = writer.join().expect("writer");
    let mut writer_record = record("readers_waiting_writer", "cairn", 1, waits.count(), elapsed);
    writer_record
        .extra
        .insert("role".into(), Value::from("writer_wait"));
    writer_record
        .extra
        .insert("max_wait_us".into(), Value::from(waits.quantile_us(1.0)));
    writer_record.latencies = Some(waits);
    vec![readers_record, writer_record]
}
