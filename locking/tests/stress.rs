//! Stress: threads take random lock sets in random orders (so deadlocks happen), upgrade, yield
//! and get killed, for a bounded time. Every holding is published in a shadow table right after
//! it is granted and withdrawn right before it is released, and checked against every other
//! operation's holdings there (the manager also asserts the matrix on every grant). Every wait
//! must end within the lock timeout plus slack, and at the end nothing is held or queued.

#![cfg(not(feature = "loom"))]

use cairn_locking::{
    LockGuard, LockManager, LockManagerConfig, LockMode, Locker, LockerOptions, ResourceId,
};
use cairn_types::{ErrorCode, Namespace};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const THREADS: usize = 6;
const RUN_MS: u64 = 1_500;
const LOCK_TIMEOUT_MS: u64 = 200;
/// A wait may overrun its timeout by scheduling noise, never by more than this.
const WAIT_SLACK_MS: u64 = 2_000;

/// Who holds what, as the operations themselves report it.
#[derive(Default)]
struct Shadow {
    holdings: Mutex<HashMap<u64, Vec<(ResourceId, LockMode)>>>,
}

impl Shadow {
    fn publish(&self, locker: &Locker) {
        let mine: Vec<(ResourceId, LockMode)> = locker
            .held_locks()
            .into_iter()
            .map(|(r, m, _)| (r, m))
            .collect();
        let mut holdings = self.holdings.lock().unwrap();
        for (opid, theirs) in holdings.iter() {
            if *opid == locker.opid() {
                continue;
            }
            for (resource, mode) in &mine {
                for (other_resource, other_mode) in theirs {
                    assert!(
                        resource != other_resource || mode.is_compatible_with(*other_mode),
                        "matrix violated on {resource}: op {} holds {mode}, op {opid} holds \
                         {other_mode}",
                        locker.opid()
                    );
                }
            }
        }
        holdings.insert(locker.opid(), mine);
    }

    fn withdraw(&self, locker: &Locker) {
        self.holdings.lock().unwrap().remove(&locker.opid());
    }
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn mode(&mut self) -> LockMode {
        // Mostly intent modes, as real traffic.
        [
            LockMode::IS,
            LockMode::IX,
            LockMode::IS,
            LockMode::IX,
            LockMode::S,
            LockMode::X,
        ][self.below(6) as usize]
    }
}

#[derive(Default)]
struct Counts {
    grants: AtomicU64,
    timeouts: AtomicU64,
    kills: AtomicU64,
    refused: AtomicU64,
    yields: AtomicU64,
}

fn acquire<'l>(
    locker: &'l Locker,
    random: &mut SplitMix,
    counts: &Counts,
) -> Result<LockGuard<'l>, cairn_types::Error> {
    let mode = random.mode();
    let started = Instant::now();
    let outcome = match random.below(10) {
        0 => locker.lock_global(mode),
        1 => locker.lock_database(["a", "b"][random.below(2) as usize], mode),
        2 => locker.lock_oplog(mode),
        _ => {
            let db = ["a", "b"][random.below(2) as usize];
            let coll = ["x", "y", "z"][random.below(3) as usize];
            locker.lock_collection(&Namespace::new(db, coll), mode)
        }
    };
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(LOCK_TIMEOUT_MS + WAIT_SLACK_MS),
        "a wait overran its bound: {waited:?}"
    );
    match &outcome {
        Ok(_) => counts.grants.fetch_add(1, Ordering::Relaxed),
        Err(error) => match error.code {
            ErrorCode::LockTimeout => counts.timeouts.fetch_add(1, Ordering::Relaxed),
            ErrorCode::Interrupted => counts.kills.fetch_add(1, Ordering::Relaxed),
            ErrorCode::IllegalOperation => counts.refused.fetch_add(1, Ordering::Relaxed),
            other => panic!("unexpected error {other}: {error}"),
        },
    };
    outcome
}

fn worker(manager: &LockManager, shadow: &Shadow, counts: &Counts, seed: u64, stop: &AtomicBool) {
    let mut random = SplitMix(seed);
    while !stop.load(Ordering::Relaxed) {
        let locker = manager.new_locker(LockerOptions {
            lock_timeout_ms: Some(LOCK_TIMEOUT_MS),
            ..LockerOptions::new(format!("stress{seed}"))
        });
        let mut guards = Vec::new();
        let wanted = 1 + random.below(3);
        for _ in 0..wanted {
            match acquire(&locker, &mut random, counts) {
                Ok(guard) => {
                    guards.push(guard);
                    shadow.publish(&locker);
                }
                Err(_) => break,
            }
        }
        if !guards.is_empty() && random.below(4) == 0 {
            shadow.withdraw(&locker);
            let saved = locker.save_lock_state();
            counts.yields.fetch_add(1, Ordering::Relaxed);
            if locker.restore_lock_state(saved).is_ok() {
                shadow.publish(&locker);
            }
        }
        if random.below(3) == 0 {
            thread::sleep(Duration::from_micros(random.below(300)));
        }
        shadow.withdraw(&locker);
        while let Some(guard) = guards.pop() {
            drop(guard);
        }
    }
}

#[test]
fn random_lock_sets_keep_the_matrix_and_every_wait_ends() {
    let manager = LockManager::new(LockManagerConfig {
        read_tickets_max: 4,
        write_tickets_max: 3,
        lock_timeout_ms: LOCK_TIMEOUT_MS,
        wait_recheck_ms: 5,
        ..LockManagerConfig::default()
    });
    let shadow = Shadow::default();
    let counts = Counts::default();
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        for seed in 0..THREADS as u64 {
            let (manager, shadow, counts, stop) = (&manager, &shadow, &counts, &stop);
            scope.spawn(move || worker(manager, shadow, counts, seed, stop));
        }
        // The killer: now and then kills an operation that waits.
        let started = Instant::now();
        let mut random = SplitMix(99);
        while started.elapsed() < Duration::from_millis(RUN_MS) {
            thread::sleep(Duration::from_millis(3));
            let waiting: Vec<u64> = manager
                .current_op(false)
                .into_iter()
                .filter(|op| op.get_bool("waitingForLock").unwrap())
                .map(|op| op.get_i64("opid").unwrap() as u64)
                .collect();
            if !waiting.is_empty() && random.below(3) == 0 {
                let victim = waiting[random.below(waiting.len() as u64) as usize];
                manager.kill_op(victim, ErrorCode::Interrupted);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let grants = counts.grants.load(Ordering::Relaxed);
    eprintln!(
        "stress: {grants} grants, {} timeouts ({} deadlocks), {} kills, {} refused upgrades, {} yields",
        counts.timeouts.load(Ordering::Relaxed),
        manager.deadlocks_found(),
        counts.kills.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        counts.yields.load(Ordering::Relaxed),
    );
    assert!(grants > 1_000, "too little progress: {grants} grants");
    assert!(
        manager
            .lock_info()
            .get_array("lockInfo")
            .unwrap()
            .is_empty(),
        "nothing left held"
    );
    let global = manager.server_status_global_lock();
    let queue = global.get_document("currentQueue").unwrap();
    assert_eq!(queue.get_i64("total").unwrap(), 0);
    let active = global.get_document("activeClients").unwrap();
    assert_eq!(
        active.get_i64("total").unwrap(),
        0,
        "every ticket came back"
    );
}
