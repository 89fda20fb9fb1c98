//! `cairn-bench platform`: what the machine itself allows. The storage suite's contention goals
//! compare cairn with itself (64 writers against one), so their ceilings are the machine's, and
//! this suite measures them in the same way on the same machine:
//! - `fdatasync` (system `disk`, 1 thread): append 4 KiB to a zero-filled file in the
//!   benchmark's temporary directory and fdatasync it, as the journal does for a lone `j: true`
//!   writer. The rate of `insert_j1` with one writer cannot pass it.
//! - `handoff` (2 and 64 threads): threads in a ring pass one token; each pass wakes the next
//!   thread, asleep on a parking_lot `Condvar` (what cairn's committers and key waiters sleep
//!   on), so the rate is one over the time a wake-up takes on the critical path. System
//!   `any_cpu`: the threads run where the kernel puts them; `one_cpu`: all of them are pinned
//!   to the first CPU they may use. One token, not several: tokens passed faster than the
//!   threads wake bunch up, and a thread that finds the next token already there passes it
//!   without sleeping, which no longer measures a wake-up.
//!
//! Each record carries `switches_per_op`, the process's context switches per operation, as the
//! storage suite's do.

use crate::Settings;
use crate::report::{Record, Reporter, SwitchCount};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Pins the calling thread to the first CPU it may run on. Returns whether it did.
#[allow(unsafe_code)]
fn pin_to_first_cpu() -> bool {
    // SAFETY: `set` is a plain bit set that the calls below only read and write; the affinity
    // calls take its size and a pointer to it, and affect only the calling thread (pid 0).
    unsafe {
        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return false;
        }
        let Some(first) = (0..libc::CPU_SETSIZE as usize).find(|&cpu| libc::CPU_ISSET(cpu, &set))
        else {
            return false;
        };
        let mut only = std::mem::zeroed::<libc::cpu_set_t>();
        libc::CPU_SET(first, &mut only);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &only) == 0
    }
}

pub fn run(settings: &Settings, reporter: &mut Reporter) -> anyhow::Result<()> {
    let duration = if settings.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(3)
    };
    if settings.wants_workload("fdatasync") && settings.wants_system("disk") {
        let (ops, seconds, switches) = fdatasync(duration)?;
        emit(reporter, "fdatasync", "disk", 1, ops, seconds, switches)?;
    }
    if settings.wants_workload("handoff") {
        for threads in [2, 64] {
            if !settings.wants_threads(threads) {
                continue;
            }
            for (system, pinned) in [("any_cpu", false), ("one_cpu", true)] {
                if !settings.wants_system(system) {
                    continue;
                }
                let switches = SwitchCount::start();
                let (passes, seconds) = handoff(threads, pinned, duration)?;
                emit(
                    reporter, "handoff", system, threads, passes, seconds, switches,
                )?;
            }
        }
    }
    Ok(())
}

fn emit(
    reporter: &mut Reporter,
    workload: &str,
    system: &str,
    threads: usize,
    ops: u64,
    seconds: f64,
    switches: SwitchCount,
) -> anyhow::Result<()> {
    let mut extra = serde_json::Map::new();
    if let Some(per_op) = switches.per_op(ops) {
        extra.insert("switches_per_op".into(), per_op.into());
    }
    reporter.emit(&Record {
        suite: "platform".into(),
        workload: workload.into(),
        system: system.into(),
        threads,
        ops,
        seconds,
        latencies: None,
        extra,
    })
}

/// Bytes appended before each fdatasync: one page, about what a lone writer's journal record
/// dirties.
const FDATASYNC_APPEND_BYTES: usize = 4096;
/// The zero-filled file the appends go into (written zeros, as the journal grows its files, so
/// that an fdatasync has no block allocation to persist).
const FDATASYNC_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Returns the appends, the seconds they took, and the context switches counted from the first
/// (after the file was filled).
fn fdatasync(duration: Duration) -> anyhow::Result<(u64, f64, SwitchCount)> {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir()?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("appends"))?;
    let zeros = vec![0u8; 4 * 1024 * 1024];
    let mut offset = 0;
    while offset < FDATASYNC_FILE_BYTES {
        file.write_all_at(&zeros, offset)?;
        offset += zeros.len() as u64;
    }
    file.sync_all()?;
    let page = vec![0xA5u8; FDATASYNC_APPEND_BYTES];
    let switches = SwitchCount::start();
    let started = Instant::now();
    let mut ops = 0u64;
    let mut offset = 0u64;
    while started.elapsed() < duration && offset + page.len() as u64 <= FDATASYNC_FILE_BYTES {
        file.write_all_at(&page, offset)?;
        file.sync_data()?;
        offset += page.len() as u64;
        ops += 1;
    }
    Ok((ops, started.elapsed().as_secs_f64(), switches))
}

/// One ring position: whether it holds the token, and where its thread sleeps.
#[derive(Default)]
struct Slot {
    token: Mutex<bool>,
    wake: Condvar,
}

/// Passes one token around a ring of `threads` threads for `duration`; returns the passes and
/// the seconds they took.
fn handoff(threads: usize, pinned: bool, duration: Duration) -> anyhow::Result<(u64, f64)> {
    assert!(threads >= 2, "a ring has two threads or more");
    let slots: Vec<Slot> = (0..threads).map(|_| Slot::default()).collect();
    *slots[0].token.lock() = true;
    let stop = AtomicBool::new(false);
    let passes = AtomicU64::new(0);
    let pinned_all = AtomicBool::new(true);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for index in 0..threads {
            let (slots, stop, passes, pinned_all) = (&slots, &stop, &passes, &pinned_all);
            scope.spawn(move || {
                if pinned && !pin_to_first_cpu() {
                    pinned_all.store(false, Ordering::Relaxed);
                }
                let mut passed = 0u64;
                let next = &slots[(index + 1) % slots.len()];
                loop {
                    {
                        let mut token = slots[index].token.lock();
                        while !*token && !stop.load(Ordering::Acquire) {
                            slots[index].wake.wait(&mut token);
                        }
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        *token = false;
                    }
                    passed += 1;
                    let mut token = next.token.lock();
                    assert!(!*token, "one token: the next thread holds none");
                    *token = true;
                    next.wake.notify_one();
                }
                passes.fetch_add(passed, Ordering::Relaxed);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Release);
        for slot in &slots {
            let _token = slot.token.lock();
            slot.wake.notify_one();
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        pinned_all.into_inner(),
        "could not pin the ring's threads to one CPU"
    );
    Ok((passes.into_inner(), seconds))
}
