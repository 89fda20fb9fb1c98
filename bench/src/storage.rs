//! `cairn-bench storage`: the storage engine against plain redb and, with the `peers` feature,
//! PoloDB (an embedded MongoDB-like engine on RocksDB) and SQLite (a JSON column), in one run.
//!
//! Every system stores the same documents (about 230 bytes of BSON, or its JSON for SQLite)
//! under the same integer keys. Plain redb runs one redb transaction per operation. cairn runs
//! one unit of work per operation through its group-commit committer, as a standalone node does
//! (no oplog entry). Workloads (the `workload` field):
//! - `insert_j0` / `insert_j1`: new documents, `j: false` / `j: true`, with 1, 8 and 64 writers;
//! - `point_read`: random reads of preloaded documents, 1 and 64 readers;
//! - `range_scan`: 100 consecutive documents from a random start, 1 and 64 readers;
//! - `snapshot_read`: point reads in snapshots opened before 4 writers start rewriting the
//!   documents the readers read, 1 and 64 readers (`writer_ops_per_sec`: the writers' rate);
//! - `hot_doc`: read-modify-write increments of one document, 1 and 64 writers.

use crate::Settings;
use crate::report::{Latencies, Record, Reporter, SwitchCount, sum_threads};
use bson::{Document, doc};
use cairn_storage::retry::{RetryOptions, write_conflict_retry};
use cairn_storage::{Backend, Durability, Engine, EngineConfig, ReadAt, ScanDirection, Snapshot};
use cairn_types::{SystemClock, keystring};
use redb::{ReadableDatabase, ReadableTable};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Operations one measurement thread performs.
pub trait Worker {
    fn insert(&mut self, id: i64, document: &Document, journaled: bool) -> anyhow::Result<()>;
    fn get(&mut self, id: i64) -> anyhow::Result<bool>;
    fn scan(&mut self, from: i64, count: usize) -> anyhow::Result<usize>;
    fn increment(&mut self, id: i64) -> anyhow::Result<()>;
    /// Replaces a document (the background writers of `snapshot_read`).
    fn replace(&mut self, id: i64, document: &Document) -> anyhow::Result<()>;
}

/// A point-in-time reader opened before the writers of `snapshot_read` start.
pub trait SnapshotReader {
    fn get(&mut self, id: i64) -> anyhow::Result<bool>;
}

/// A system under test.
pub trait System: Sync {
    fn name(&self) -> &'static str;
    fn worker(&self) -> anyhow::Result<Box<dyn Worker + '_>>;
    fn snapshot_reader(&self) -> anyhow::Result<Box<dyn SnapshotReader + '_>>;
    /// Whether the system can make a single commit durable (j: true).
    fn has_journaled_commits(&self) -> bool {
        true
    }
    /// fdatasyncs so far, where the system counts them (cairn: journal syncs and durable redb
    /// commits), so that a run can report how many commits shared each.
    fn syncs(&self) -> Option<u64> {
        None
    }
    /// Finishes the work that earlier measurements left behind (cairn's memtable and its
    /// durable redb commit, redb's and SQLite's deferred syncs), before the next measurement
    /// starts, so that no measurement pays for the one before it. Untimed.
    fn settle(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

pub fn document(id: i64) -> Document {
    doc! {
        "_id": id,
        "name": format!("user{id:08}"),
        "email": format!("user{id:08}@example.com"),
        "age": (id % 90) as i32,
        "active": id % 3 == 0,
        "payload": "x".repeat(128),
    }
}

fn encode(document: &Document) -> Vec<u8> {
    bson::serialize_to_vec(document).expect("documents serialize")
}

fn key(id: i64) -> Vec<u8> {
    keystring::encode(&bson::Bson::Int64(id))
}

// ---- cairn ----

pub struct Cairn {
    engine: Engine,
    _dir: tempfile::TempDir,
}

const CAIRN_TABLE: u64 = 1_000;

impl Cairn {
    pub fn open() -> anyhow::Result<Cairn> {
        let dir = tempfile::tempdir()?;
        let config = EngineConfig {
            oplog_size_bytes: Some(1 << 30),
            ..EngineConfig::default()
        };
        let engine = Engine::open(
            config,
            Backend::Disk(dir.path().join("db")),
            Arc::new(SystemClock::new()),
        )
        .map_err(|error| anyhow::anyhow!("{error}"))?;
        Ok(Cairn { engine, _dir: dir })
    }
}

struct CairnWorker<'a> {
    engine: &'a Engine,
}

fn cairn_error(error: cairn_types::Error) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}

impl Worker for CairnWorker<'_> {
    fn insert(&mut self, id: i64, document: &Document, journaled: bool) -> anyhow::Result<()> {
        let mut unit = self.engine.begin_write();
        unit.put(CAIRN_TABLE, &key(id), &encode(document))
            .map_err(cairn_error)?;
        let durability = if journaled {
            Durability::Journaled
        } else {
            Durability::Visible
        };
        unit.commit(durability).map_err(cairn_error)?;
        Ok(())
    }

    fn get(&mut self, id: i64) -> anyhow::Result<bool> {
        let snapshot = self.engine.snapshot(ReadAt::Latest).map_err(cairn_error)?;
        Ok(snapshot
            .get(CAIRN_TABLE, &key(id))
            .map_err(cairn_error)?
            .is_some())
    }

    fn scan(&mut self, from: i64, count: usize) -> anyhow::Result<usize> {
        let snapshot = self.engine.snapshot(ReadAt::Latest).map_err(cairn_error)?;
        let range = (Bound::Included(key(from)), Bound::Unbounded);
        let mut seen = 0;
        for entry in snapshot
            .scan(CAIRN_TABLE, range, ScanDirection::Forward)
            .map_err(cairn_error)?
            .take(count)
        {
            entry.map_err(cairn_error)?;
            seen += 1;
        }
        Ok(seen)
    }

    fn increment(&mut self, id: i64) -> anyhow::Result<()> {
        let options = RetryOptions {
            durability: Durability::Visible,
            deadline: None,
            check_interrupt: &mut || Ok(()),
            give_up_on_conflict: false,
        };
        write_conflict_retry(self.engine, options, |unit| {
            let current = unit
                .get_for_update(CAIRN_TABLE, &key(id))?
                .expect("the hot document exists");
            let mut current: Document = bson::deserialize_from_slice(&current).expect("BSON");
            let counter = current.get_i64("counter").unwrap_or(0);
            current.insert("counter", counter + 1);
            unit.put(CAIRN_TABLE, &key(id), &encode(&current))
        })
        .map_err(cairn_error)?;
        Ok(())
    }

    fn replace(&mut self, id: i64, document: &Document) -> anyhow::Result<()> {
        let options = RetryOptions {
            durability: Durability::Visible,
            deadline: None,
            check_interrupt: &mut || Ok(()),
            give_up_on_conflict: false,
        };
        write_conflict_retry(self.engine, options, |unit| {
            unit.put(CAIRN_TABLE, &key(id), &encode(document))
        })
        .map_err(cairn_error)?;
        Ok(())
    }
}

struct CairnSnapshotReader {
    snapshot: Snapshot,
}

impl SnapshotReader for CairnSnapshotReader {
    fn get(&mut self, id: i64) -> anyhow::Result<bool> {
        Ok(self
            .snapshot
            .get(CAIRN_TABLE, &key(id))
            .map_err(cairn_error)?
            .is_some())
    }
}

impl System for Cairn {
    fn name(&self) -> &'static str {
        "cairn"
    }

    fn syncs(&self) -> Option<u64> {
        let stats = self.engine.stats();
        Some(stats.journal_syncs + stats.durable_commits)
    }

    /// A checkpoint: the memtable written to redb and a durable redb commit. Without it, a
    /// measurement after `snapshot_read` ran beside that workload's backlog (a checkpoint
    /// right after it took 2.5 s): a lone `hot_doc` writer did 148k updates/s, against
    /// 286k/s after a checkpoint.
    fn settle(&self) -> anyhow::Result<()> {
        self.engine.checkpoint().map_err(cairn_error)?;
        Ok(())
    }

    fn worker(&self) -> anyhow::Result<Box<dyn Worker + '_>> {
        Ok(Box::new(CairnWorker {
            engine: &self.engine,
        }))
    }

    fn snapshot_reader(&self) -> anyhow::Result<Box<dyn SnapshotReader + '_>> {
        let snapshot = self.engine.snapshot(ReadAt::Latest).map_err(cairn_error)?;
        Ok(Box::new(CairnSnapshotReader { snapshot }))
    }
}

// ---- plain redb ----

pub struct PlainRedb {
    db: redb::Database,
    _dir: tempfile::TempDir,
}

const REDB_TABLE: redb::TableDefinition<'static, &[u8], &[u8]> = redb::TableDefinition::new("docs");

impl PlainRedb {
    pub fn open() -> anyhow::Result<PlainRedb> {
        let dir = tempfile::tempdir()?;
        let db = redb::Builder::new()
            .set_cache_size(512 * 1024 * 1024)
            .create(dir.path().join("plain.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(REDB_TABLE)?;
        txn.commit()?;
        Ok(PlainRedb { db, _dir: dir })
    }
}

struct RedbWorker<'a> {
    db: &'a redb::Database,
}

impl RedbWorker<'_> {
    fn write(&self, id: i64, bytes: &[u8], journaled: bool) -> anyhow::Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if journaled {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        {
            let mut table = txn.open_table(REDB_TABLE)?;
            table.insert(key(id).as_slice(), bytes)?;
        }
        txn.commit()?;
        Ok(())
    }
}

impl Worker for RedbWorker<'_> {
    fn insert(&mut self, id: i64, document: &Document, journaled: bool) -> anyhow::Result<()> {
        self.write(id, &encode(document), journaled)
    }

    fn get(&mut self, id: i64) -> anyhow::Result<bool> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        Ok(table
            .get(key(id).as_slice())?
            .map(|guard| guard.value().to_vec())
            .is_some())
    }

    fn scan(&mut self, from: i64, count: usize) -> anyhow::Result<usize> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        let start = key(from);
        let mut seen = 0;
        for entry in table.range::<&[u8]>(start.as_slice()..)?.take(count) {
            let (_, value) = entry?;
            std::hint::black_box(value.value().to_vec());
            seen += 1;
        }
        Ok(seen)
    }

    fn increment(&mut self, id: i64) -> anyhow::Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        {
            let mut table = txn.open_table(REDB_TABLE)?;
            let current = table
                .get(key(id).as_slice())?
                .expect("the hot document exists")
                .value()
                .to_vec();
            let mut current: Document = bson::deserialize_from_slice(&current)?;
            let counter = current.get_i64("counter").unwrap_or(0);
            current.insert("counter", counter + 1);
            table.insert(key(id).as_slice(), encode(&current).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn replace(&mut self, id: i64, document: &Document) -> anyhow::Result<()> {
        self.write(id, &encode(document), false)
    }
}

struct RedbSnapshotReader {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl SnapshotReader for RedbSnapshotReader {
    fn get(&mut self, id: i64) -> anyhow::Result<bool> {
        Ok(self
            .table
            .get(key(id).as_slice())?
            .map(|guard| guard.value().to_vec())
            .is_some())
    }
}

impl System for PlainRedb {
    fn name(&self) -> &'static str {
        "redb"
    }

    /// A durable commit of nothing: it syncs what the non-durable commits left.
    fn settle(&self) -> anyhow::Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    fn worker(&self) -> anyhow::Result<Box<dyn Worker + '_>> {
        Ok(Box::new(RedbWorker { db: &self.db }))
    }

    fn snapshot_reader(&self) -> anyhow::Result<Box<dyn SnapshotReader + '_>> {
        let txn = self.db.begin_read()?;
        Ok(Box::new(RedbSnapshotReader {
            table: txn.open_table(REDB_TABLE)?,
        }))
    }
}

// ---- the measurement loop ----

struct Plan {
    duration: Duration,
    preload: i64,
}

/// What one measurement did.
struct Measured {
    ops: u64,
    seconds: f64,
    latencies: Latencies,
    /// fdatasyncs meanwhile, where the system counts them (`System::syncs`).
    syncs: Option<u64>,
    /// The process's context switches per operation meanwhile ([`SwitchCount`]): on a VM a
    /// wake-up on another CPU costs far more than the switch itself (`cairn-bench platform`,
    /// `handoff`).
    switches_per_op: Option<f64>,
}

impl Measured {
    /// Operations per fdatasync, to one decimal: commits per sync where the operations are
    /// commits.
    fn ops_per_sync(&self) -> Option<f64> {
        let syncs = self.syncs.filter(|syncs| *syncs > 0)?;
        Some((self.ops as f64 / syncs as f64 * 10.0).round() / 10.0)
    }
}

/// What is counted across a measurement, from before its threads start.
struct Counts {
    syncs: Option<u64>,
    switches: SwitchCount,
}

impl Counts {
    /// Settles `system` first (untimed): no measurement pays for the one before it.
    fn start(system: &dyn System) -> anyhow::Result<Counts> {
        system.settle()?;
        Ok(Counts {
            syncs: system.syncs(),
            switches: SwitchCount::start(),
        })
    }

    /// Sums the threads' results of the measurement.
    fn finish(
        self,
        system: &dyn System,
        results: Vec<anyhow::Result<(u64, Latencies)>>,
        seconds: f64,
    ) -> anyhow::Result<Measured> {
        let syncs = system
            .syncs()
            .zip(self.syncs)
            .map(|(after, before)| after - before);
        let (ops, latencies) =
            sum_threads(results.into_iter().collect::<anyhow::Result<Vec<_>>>()?);
        Ok(Measured {
            ops,
            seconds,
            latencies,
            syncs,
            switches_per_op: self.switches.per_op(ops),
        })
    }
}

/// One measurement of `system`: settled, then `run` on `threads` threads for `duration`.
fn measure(
    system: &dyn System,
    threads: usize,
    duration: Duration,
    run: impl Fn(usize, &AtomicBool) -> anyhow::Result<(u64, Latencies)> + Sync,
) -> anyhow::Result<Measured> {
    let counts = Counts::start(system)?;
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let results: Vec<anyhow::Result<(u64, Latencies)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (run, stop) = (&run, &stop);
                scope.spawn(move || run(thread, stop))
            })
            .collect();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Release);
        handles
            .into_iter()
            .map(|handle| handle.join().expect("worker thread"))
            .collect()
    });
    counts.finish(system, results, started.elapsed().as_secs_f64())
}

fn timed_loop(
    stop: &AtomicBool,
    mut op: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, Latencies)> {
    let mut latencies = Latencies::new();
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        op(count)?;
        latencies.record(started.elapsed());
        count += 1;
    }
    Ok((count, latencies))
}

/// A cheap per-thread pseudo-random sequence (splitmix64).
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn emit(
    reporter: &mut Reporter,
    system: &dyn System,
    workload: &str,
    threads: usize,
    result: Measured,
) -> anyhow::Result<()> {
    emit_with(
        reporter,
        system,
        workload,
        threads,
        result,
        Default::default(),
    )
}

fn emit_with(
    reporter: &mut Reporter,
    system: &dyn System,
    workload: &str,
    threads: usize,
    result: Measured,
    mut extra: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let Measured {
        ops,
        seconds,
        latencies,
        syncs,
        switches_per_op,
    } = result;
    if let Some(syncs) = syncs {
        extra.insert("syncs".into(), syncs.into());
    }
    if let Some(per_op) = switches_per_op {
        extra.insert("switches_per_op".into(), per_op.into());
    }
    reporter.emit(&Record {
        suite: "storage".into(),
        workload: workload.into(),
        system: system.name().into(),
        threads,
        ops,
        seconds,
        latencies: Some(latencies),
        extra,
    })
}

fn preload(system: &dyn System, count: i64) -> anyhow::Result<()> {
    let mut worker = system.worker()?;
    for id in 0..count {
        worker.insert(id, &document(id), false)?;
    }
    worker.insert(count, &document(count), true)?;
    Ok(())
}

fn run_system(
    system: &dyn System,
    plan: &Plan,
    settings: &Settings,
    reporter: &mut Reporter,
) -> anyhow::Result<()> {
    let next_id = AtomicU64::new(10_000_000);
    for (workload, journaled) in [("insert_j0", false), ("insert_j1", true)] {
        if (journaled && !system.has_journaled_commits()) || !settings.wants_workload(workload) {
            continue;
        }
        for threads in [1, 8, 64] {
            if !settings.wants_threads(threads) {
                continue;
            }
            let result = measure(system, threads, plan.duration, |_, stop| {
                let mut worker = system.worker()?;
                timed_loop(stop, |_| {
                    let id = next_id.fetch_add(1, Ordering::Relaxed) as i64;
                    worker.insert(id, &document(id), journaled)
                })
            })?;
            let mut extra = serde_json::Map::new();
            if let Some(per_sync) = result.ops_per_sync() {
                // Group commit at work: how many commits shared each fdatasync.
                extra.insert("ops_per_sync".into(), per_sync.into());
            }
            emit_with(reporter, system, workload, threads, result, extra)?;
        }
    }
    let reads = ["point_read", "range_scan", "snapshot_read"];
    if reads
        .iter()
        .any(|workload| settings.wants_workload(workload))
    {
        preload(system, plan.preload)?;
    }
    for threads in [1, 64] {
        if !settings.wants_workload("point_read") {
            break;
        }
        if !settings.wants_threads(threads) {
            continue;
        }
        let result = measure(system, threads, plan.duration, |thread, stop| {
            let mut worker = system.worker()?;
            timed_loop(stop, |n| {
                let id = (mix((thread as u64) << 32 | n) % plan.preload as u64) as i64;
                anyhow::ensure!(worker.get(id)?, "document {id} missing");
                Ok(())
            })
        })?;
        emit(reporter, system, "point_read", threads, result)?;
    }
    for threads in [1, 64] {
        if !settings.wants_workload("range_scan") {
            break;
        }
        if !settings.wants_threads(threads) {
            continue;
        }
        let result = measure(system, threads, plan.duration, |thread, stop| {
            let mut worker = system.worker()?;
            timed_loop(stop, |n| {
                let from = (mix((thread as u64) << 32 | n) % (plan.preload as u64 - 100)) as i64;
                anyhow::ensure!(worker.scan(from, 100)? == 100, "short scan");
                Ok(())
            })
        })?;
        emit(reporter, system, "range_scan", threads, result)?;
    }
    for threads in [1, 64] {
        if !settings.wants_workload("snapshot_read") {
            break;
        }
        if !settings.wants_threads(threads) {
            continue;
        }
        let (result, replaced) = snapshot_read(system, plan, threads)?;
        // The writers share the machine with the readers: how much they did shows how much of
        // it they took.
        let mut extra = serde_json::Map::new();
        extra.insert(
            "writer_ops_per_sec".into(),
            serde_json::json!((replaced as f64 / result.seconds).round()),
        );
        emit_with(reporter, system, "snapshot_read", threads, result, extra)?;
    }
    for threads in [1, 64] {
        if !settings.wants_workload("hot_doc") {
            break;
        }
        if !settings.wants_threads(threads) {
            continue;
        }
        let hot_id = -1 - threads as i64;
        system.worker()?.insert(hot_id, &document(hot_id), true)?;
        let result = measure(system, threads, plan.duration, |_, stop| {
            let mut worker = system.worker()?;
            timed_loop(stop, |_| worker.increment(hot_id))
        })?;
        emit(reporter, system, "hot_doc", threads, result)?;
    }
    Ok(())
}

/// Readers open their snapshots, then 4 writers rewrite documents while the readers read.
fn snapshot_read(
    system: &dyn System,
    plan: &Plan,
    readers: usize,
) -> anyhow::Result<(Measured, u64)> {
    const WRITERS: usize = 4;
    let opened = Barrier::new(readers + WRITERS);
    let stop = AtomicBool::new(false);
    let replaced = std::sync::atomic::AtomicU64::new(0);
    let counts = Counts::start(system)?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<(u64, Latencies)>> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for reader in 0..readers {
            let (opened, stop) = (&opened, &stop);
            handles.push(scope.spawn(move || {
                let mut snapshot = system.snapshot_reader();
                opened.wait();
                let snapshot = snapshot
                    .as_mut()
                    .map_err(|error| anyhow::anyhow!("{error}"))?;
                timed_loop(stop, |n| {
                    let id = (mix((reader as u64) << 32 | n) % plan.preload as u64) as i64;
                    anyhow::ensure!(snapshot.get(id)?, "document {id} missing in the snapshot");
                    Ok(())
                })
            }));
        }
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let (opened, stop, replaced) = (&opened, &stop, &replaced);
            writers.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut worker = system.worker()?;
                opened.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = (mix((1000 + writer as u64) << 32 | n) % plan.preload as u64) as i64;
                    let mut replacement = document(id);
                    replacement.insert("version", n as i64);
                    worker.replace(id, &replacement)?;
                    n += 1;
                }
                replaced.fetch_add(n, Ordering::Relaxed);
                Ok(())
            }));
        }
        std::thread::sleep(plan.duration);
        stop.store(true, Ordering::Release);
        for writer in writers {
            if let Err(error) = writer.join().expect("writer thread") {
                return vec![Err(error)];
            }
        }
        handles
            .into_iter()
            .map(|handle| handle.join().expect("reader thread"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        counts.finish(system, results, seconds)?,
        replaced.into_inner(),
    ))
}

pub fn run(settings: &Settings, reporter: &mut Reporter) -> anyhow::Result<()> {
    let plan = if settings.quick {
        Plan {
            duration: Duration::from_millis(400),
            preload: 5_000,
        }
    } else {
        Plan {
            duration: Duration::from_secs(3),
            preload: 100_000,
        }
    };
    #[cfg_attr(not(feature = "peers"), allow(unused_mut))]
    let mut systems: Vec<Box<dyn System>> =
        vec![Box::new(Cairn::open()?), Box::new(PlainRedb::open()?)];
    #[cfg(feature = "peers")]
    {
        systems.push(Box::new(crate::peers::PoloDb::open()?));
        systems.push(Box::new(crate::peers::Sqlite::open()?));
    }
    for system in systems
        .iter()
        .filter(|system| settings.wants_system(system.name()))
    {
        eprintln!("storage: measuring {}", system.name());
        run_system(system.as_ref(), &plan, settings, reporter)?;
    }
    Ok(())
}
