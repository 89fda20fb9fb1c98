//! Concurrency stress: many threads transfer money between accounts (overlapping documents,
//! so they conflict) while readers check, under snapshots at the newest and at older
//! timestamps, that the total never changes; garbage collection runs throughout.

mod common;

use cairn_storage::retry::{RetryOptions, write_conflict_retry};
use cairn_storage::{Backend, Durability, Engine, ReadAt, ScanDirection};
use cairn_types::Timestamp;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const ACCOUNTS: i64 = 16;
const OPENING_BALANCE: u64 = 1_000;
const TABLE: u64 = 200;
const WRITERS: usize = 6;
const TRANSFERS_PER_WRITER: usize = 400;
/// The whole test stops after this long even if the writers are not done.
const TIME_LIMIT: Duration = Duration::from_secs(20);

fn balance(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

fn total(engine: &Engine, at: ReadAt) -> Option<(u64, usize)> {
    let snapshot = engine.snapshot(at).ok()?;
    let mut sum = 0;
    let mut count = 0;
    for entry in snapshot
        .scan(
            TABLE,
            (Bound::Unbounded, Bound::Unbounded),
            ScanDirection::Forward,
        )
        .unwrap()
    {
        sum += balance(&entry.unwrap().1);
        count += 1;
    }
    Some((sum, count))
}

#[test]
fn transfers_never_change_the_total_under_snapshot_reads() {
    let dir = tempfile::tempdir().unwrap();
    let clock = common::clock();
    let engine = common::open(&Backend::Disk(dir.path().to_path_buf()), &clock);
    let mut unit = engine.begin_write();
    for account in 0..ACCOUNTS {
        unit.put(TABLE, &common::key(account), &OPENING_BALANCE.to_be_bytes())
            .unwrap();
    }
    unit.commit(Durability::Journaled).unwrap();
    let expected = (ACCOUNTS as u64 * OPENING_BALANCE, ACCOUNTS as usize);
    let history: Mutex<Vec<Timestamp>> = Mutex::new(Vec::new());
    let writers_done = AtomicBool::new(false);
    let started = Instant::now();

    std::thread::scope(|scope| {
        let mut writers = Vec::new();
        for seed in 0..WRITERS as u64 {
            let (engine, history) = (&engine, &history);
            writers.push(scope.spawn(move || {
                let mut random = rand::rngs::StdRng::seed_from_u64(seed);
                for _ in 0..TRANSFERS_PER_WRITER {
                    if started.elapsed() > TIME_LIMIT {
                        break;
                    }
                    let from = random.random_range(0..ACCOUNTS);
                    let to = (from + random.random_range(1..ACCOUNTS)) % ACCOUNTS;
                    let amount = random.random_range(1..20u64);
                    let durability = if random.random_bool(0.1) {
                        Durability::Journaled
                    } else {
                        Durability::Visible
                    };
                    let options = RetryOptions {
                        durability,
                        deadline: None,
                        check_interrupt: &mut || Ok(()),
                        give_up_on_conflict: false,
                    };
                    let (_, info) = write_conflict_retry(engine, options, |unit| {
                        // Even writers read for update (building on sealed versions), odd ones
                        // read plainly and claim when they write.
                        let (from_bytes, to_bytes) = if seed % 2 == 0 {
                            (
                                unit.get_for_update(TABLE, &common::key(from))?,
                                unit.get_for_update(TABLE, &common::key(to))?,
                            )
                        } else {
                            (
                                unit.get(TABLE, &common::key(from))?,
                                unit.get(TABLE, &common::key(to))?,
                            )
                        };
                        let from_balance = balance(&from_bytes.unwrap());
                        let to_balance = balance(&to_bytes.unwrap());
                        if from_balance < amount {
                            return Ok(());
                        }
                        unit.put(
                            TABLE,
                            &common::key(from),
                            &(from_balance - amount).to_be_bytes(),
                        )?;
                        unit.put(
                            TABLE,
                            &common::key(to),
                            &(to_balance + amount).to_be_bytes(),
                        )?;
                        Ok(())
                    })
                    .unwrap();
                    history.lock().push(info.last_ts);
                }
            }));
        }
        for reader in 0..2u64 {
            let (engine, history, writers_done) = (&engine, &history, &writers_done);
            scope.spawn(move || {
                let mut random = rand::rngs::StdRng::seed_from_u64(100 + reader);
                let mut checks = 0;
                while !writers_done.load(Ordering::Acquire) || checks < 10 {
                    assert_eq!(total(engine, ReadAt::Latest), Some(expected));
                    let older = {
                        let history = history.lock();
                        (!history.is_empty())
                            .then(|| history[random.random_range(0..history.len())])
                    };
                    if let Some(at) = older {
                        // Inside the history window every past commit is readable.
                        assert_eq!(
                            total(engine, ReadAt::Timestamp(at)),
                            Some(expected),
                            "at {at}"
                        );
                    }
                    checks += 1;
                }
            });
        }
        {
            let (engine, writers_done) = (&engine, &writers_done);
            scope.spawn(move || {
                while !writers_done.load(Ordering::Acquire) {
                    engine.collect_garbage().unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        for writer in writers {
            writer.join().unwrap();
        }
        writers_done.store(true, Ordering::Release);
    });
    assert_eq!(total(&engine, ReadAt::Latest), Some(expected));
    let stats = engine.stats();
    assert!(stats.commits as usize >= history.lock().len());
    engine.close().unwrap();
    let engine = common::open(&Backend::Disk(dir.path().to_path_buf()), &clock);
    assert_eq!(
        total(&engine, ReadAt::Latest),
        Some(expected),
        "after restart"
    );
    engine.close().unwrap();
}
