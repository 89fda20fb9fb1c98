//! Crash tests with real crashes: a child process writes (j:true and j:false, from several
//! threads, each unit two documents and one oplog entry) and reports every acknowledged commit;
//! the parent kills it with SIGKILL at a random moment, reopens the data files and checks:
//! every j:true-acknowledged commit is present; nothing is half-applied (both documents of a
//! unit or neither); the oplog and the data agree. Iterations accumulate on one dbpath, so
//! recovery after recovery is tested too.

mod common;

use bson::doc;
use cairn_storage::{Backend, Durability, ReadAt, ScanDirection};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::ops::Bound;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DATA: u64 = 300;
const MIRROR: u64 = 301;
const CHILD_ENV: &str = "CAIRN_CRASH_CHILD_DBPATH";
const SEED_ENV: &str = "CAIRN_CRASH_CHILD_SEED";
const ITERATIONS: u64 = 12;

/// The child's workload; runs only when started by the parent (it is ignored otherwise).
#[test]
#[ignore = "started as a child process by crash_recovery_keeps_every_journaled_commit"]
fn child_process_writer() {
    let Ok(dbpath) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let clock: std::sync::Arc<dyn cairn_types::Clock> =
        std::sync::Arc::new(cairn_types::SystemClock::new());
    let engine =
        cairn_storage::Engine::open(common::config(), Backend::Disk(dbpath.into()), clock).unwrap();
    let stdout = std::sync::Mutex::new(std::io::stdout());
    println!("READY");
    std::io::stdout().flush().unwrap();
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            let (engine, stdout) = (&engine, &stdout);
            scope.spawn(move || {
                let mut random = rand::rngs::StdRng::seed_from_u64(seed * 100 + thread);
                for n in 0.. {
                    let id = (seed * 10 + thread) * 1_000_000 + n;
                    let value = random.random::<u32>();
                    let journaled = random.random_bool(0.5);
                    let mut unit = engine.begin_write();
                    let bytes = value.to_be_bytes();
                    unit.put(DATA, &common::key(id as i64), &bytes).unwrap();
                    unit.put(MIRROR, &common::key(id as i64), &bytes).unwrap();
                    unit.append_oplog(doc! {"op": "i", "id": id as i64, "value": value as i64});
                    let durability = if journaled {
                        Durability::Journaled
                    } else {
                        Durability::Visible
                    };
                    unit.commit(durability).unwrap();
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ACK {id} {value} {}", u8::from(journaled)).unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn crash_recovery_keeps_every_journaled_commit() {
    let dir = tempfile::tempdir().unwrap();
    let dbpath = dir.path().join("db");
    let mut random = rand::rngs::StdRng::seed_from_u64(7);
    let started = Instant::now();
    let mut journaled_total = 0usize;
    let mut rows_total = 0usize;
    for iteration in 0..ITERATIONS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process_writer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dbpath)
            .env(SEED_ENV, iteration.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let fields: Vec<u64> = rest
                        .split(' ')
                        .map(|field| field.parse().unwrap())
                        .collect();
                    acks.push((fields[0], fields[1] as u32, fields[2] == 1));
                }
            }
            acks
        });
        // Kill at a random moment after the child started writing.
        std::thread::sleep(Duration::from_millis(random.random_range(150..700)));
        child.kill().unwrap();
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        assert!(
            !acks.is_empty(),
            "iteration {iteration}: the child acknowledged nothing"
        );

        let clock = common::clock();
        let engine = common::open(&Backend::Disk(dbpath.clone()), &clock);
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        let read_all = |table| -> BTreeMap<Vec<u8>, Vec<u8>> {
            snapshot
                .scan(
                    table,
                    (Bound::Unbounded, Bound::Unbounded),
                    ScanDirection::Forward,
                )
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let data = read_all(DATA);
        let mirror = read_all(MIRROR);
        assert_eq!(
            data, mirror,
            "iteration {iteration}: a unit was half-applied"
        );
        let oplog: Vec<bson::Document> = snapshot
            .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
            .unwrap()
            .map(|entry| bson::deserialize_from_slice(&entry.unwrap().1).unwrap())
            .collect();
        assert_eq!(
            oplog.len(),
            data.len(),
            "iteration {iteration}: oplog and data disagree"
        );
        let mut seen = HashSet::new();
        for entry in &oplog {
            let id = entry.get_i64("id").unwrap();
            let value = entry.get_i64("value").unwrap() as u32;
            assert!(seen.insert(id));
            assert_eq!(
                data.get(&common::key(id)),
                Some(&value.to_be_bytes().to_vec()),
                "oplog entry without its data"
            );
        }
        for (id, value, journaled) in &acks {
            let stored = data.get(&common::key(*id as i64));
            if *journaled {
                assert_eq!(
                    stored,
                    Some(&value.to_be_bytes().to_vec()),
                    "iteration {iteration}: lost j:true commit {id}"
                );
                journaled_total += 1;
            } else if let Some(stored) = stored {
                assert_eq!(stored, &value.to_be_bytes().to_vec());
            }
        }
        rows_total = data.len();
        drop(snapshot);
        engine.close().unwrap();
    }
    assert!(journaled_total > 0);
    assert!(rows_total > 0);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the crash loop must stay under a minute"
    );
}
