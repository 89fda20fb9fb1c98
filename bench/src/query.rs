//! `cairn-bench query`: queries through a cairn node's command path (`Node::run_command`, in
//! process, no network), over one collection of `N` documents (1,000,000; 20,000 with
//! `--quick`):
//!
//! `{_id: i (long), k: (i * 7919) mod N (a permutation: unique), cat: i mod 100, v: i mod 1000,
//! s: 64 bytes}`, with one secondary index `{k: 1}`.
//!
//! Workloads (`workload`; `system` is `cairn`; `plan` is the winning plan's summary):
//! - `point_id` / `point_secondary`: `find {_id: r}` / `find {k: r}`, one document each, 1 and 2
//!   threads;
//! - `range_id_100` / `range_secondary_100`: 100 consecutive `_id`s (the clustered table) /
//!   100 consecutive `k`s (index scan and a fetch per document), 1 and 2 threads;
//! - `sort_indexed_10k` / `sort_blocking_10k`: 10,000 documents of a `k` range read through the
//!   index (and fetched), in `k` order, which the index provides / in `v` order, sorted in memory
//!   (SORT stage) after the same scan; `sort_blocking_id_range_10k`: 10,000 consecutive `_id`s
//!   (sequential reads of the clustered table) sorted by `k` in memory;
//! - `topk_indexed` / `topk_blocking`: the 10 largest `k` (index, backwards) / the 10 largest `v`
//!   of the whole collection (COLLSCAN + top-k SORT);
//! - `group_all`: `$group` by `cat` with `$sum`s over every document (`ops` = runs,
//!   `docs_per_sec` in extra);
//! - `writers_alone`, `writers_with_scan`, `writers_with_scan_no_yield`: one writer updating
//!   random documents by `_id` (`$inc`), alone / while another thread runs full collection
//!   scans (a filter that matches nothing) with the default yielding (every 10 ms or 1000
//!   documents) / with yielding turned off; `writers_with_spinner`: while another thread only
//!   spins (the control: what a busy core alone does to the writer). `p99_ratio` compares with
//!   `writers_alone`. These run three times as long as the other measurements.

use crate::Settings;
use crate::report::{Latencies, Record, Reporter, sum_threads};
use bson::{Bson, Document, doc};
use cairn_server::{ClientInfo, Node, NodeConfig};
use serde_json::{Map, Value};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const SUITE: &str = "query";
const DB: &str = "bench";
const COLLECTION: &str = "docs";
/// Multiplier of the `k` permutation (prime, and prime to every `N` used here).
const K_FACTOR: i64 = 7919;

/// A node on a temporary dbpath, loaded with the documents.
struct Loaded {
    node: Node,
    documents: i64,
    load_seconds: f64,
}

fn execute(node: &Node, mut command: Document) -> anyhow::Result<Document> {
    command.insert("$db", DB);
    let reply = node.run_command(&ClientInfo::default(), command);
    let ok = match reply.get("ok") {
        Some(Bson::Double(ok)) => *ok == 1.0,
        Some(Bson::Int32(ok)) => *ok == 1,
        _ => false,
    };
    if !ok || reply.get_array("writeErrors").is_ok_and(|e| !e.is_empty()) {
        anyhow::bail!("command failed: {reply}");
    }
    Ok(reply)
}

/// Runs a command that opens a cursor and reads it to the end; returns the document count.
fn drain(node: &Node, command: Document) -> anyhow::Result<usize> {
    let reply = execute(node, command)?;
    let cursor = reply.get_document("cursor")?;
    let mut count = cursor.get_array("firstBatch")?.len();
    let mut id = cursor.get_i64("id")?;
    while id != 0 {
        let reply = execute(
            node,
            doc! {"getMore": id, "collection": COLLECTION, "batchSize": 10_000i64},
        )?;
        let cursor = reply.get_document("cursor")?;
        count += cursor.get_array("nextBatch")?.len();
        id = cursor.get_i64("id")?;
    }
    Ok(count)
}

fn document(id: i64, documents: i64) -> Document {
    doc! {
        "_id": id,
        "k": (id * K_FACTOR) % documents,
        "cat": (id % 100) as i32,
        "v": (id % 1000) as i32,
        "s": format!("{id:064}"),
    }
}

fn load(documents: i64) -> anyhow::Result<Loaded> {
    let dir = tempfile::Builder::new()
        .prefix("cairn-bench-query-")
        .tempdir()?;
    let node = Node::open(NodeConfig {
        dbpath: dir.path().to_path_buf(),
        port: 0,
        ..NodeConfig::default()
    })
    .map_err(|error| anyhow::anyhow!("{error}"))?;
    node.hold_temporary_dbpath(dir);
    let started = Instant::now();
    const BATCH: i64 = 1_000;
    let mut next = 0;
    while next < documents {
        let end = (next + BATCH).min(documents);
        let batch: Vec<Document> = (next..end).map(|id| document(id, documents)).collect();
        execute(
            &node,
            doc! {"insert": COLLECTION, "documents": batch, "ordered": true},
        )?;
        next = end;
    }
    execute(
        &node,
        doc! {"createIndexes": COLLECTION, "indexes": [{"key": {"k": 1}, "name": "k_1"}]},
    )?;
    Ok(Loaded {
        node,
        documents,
        load_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The winning plan's summary (explain), e.g. `IXSCAN { k: 1 }`.
fn plan_summary(node: &Node, find: &Document) -> String {
    execute(
        node,
        doc! {"explain": find.clone(), "verbosity": "queryPlanner"},
    )
    .ok()
    .and_then(|reply| {
        reply
            .get_document("queryPlanner")
            .ok()?
            .get_str("planSummary")
            .ok()
            .map(str::to_owned)
    })
    .unwrap_or_default()
}

fn record(workload: &str, threads: usize, ops: u64, elapsed: Duration) -> Record {
    Record {
        suite: SUITE.into(),
        workload: workload.into(),
        system: "cairn".into(),
        threads,
        ops,
        seconds: elapsed.as_secs_f64(),
        latencies: None,
        extra: Map::new(),
    }
}

/// A tiny deterministic generator per thread (xorshift).
struct Random(u64);

impl Random {
    fn below(&mut self, bound: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as i64
    }
}

/// Runs `threads` threads issuing `make(random)` finds for `run_for`; each find must return
/// `expected` documents.
fn find_workload(
    loaded: &Loaded,
    workload: &str,
    threads: usize,
    run_for: Duration,
    expected: usize,
    make: &(dyn Fn(&mut Random) -> Document + Sync),
) -> anyhow::Result<Record> {
    let node = &loaded.node;
    let barrier = Barrier::new(threads);
    let results: Vec<anyhow::Result<(u64, Latencies)>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let barrier = &barrier;
                scope.spawn(move || -> anyhow::Result<(u64, Latencies)> {
                    let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
                    let mut latencies = Latencies::new();
                    let mut ops = 0;
                    barrier.wait();
                    let started = Instant::now();
                    while started.elapsed() < run_for {
                        let command = make(&mut random);
                        let began = Instant::now();
                        let returned = drain(node, command)?;
                        latencies.record(began.elapsed());
                        anyhow::ensure!(
                            returned == expected,
                            "{workload}: {returned} documents, expected {expected}"
                        );
                        ops += 1;
                    }
                    Ok((ops, latencies))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a query thread"))
            .collect()
    });
    let (ops, latencies) = sum_threads(results.into_iter().collect::<anyhow::Result<Vec<_>>>()?);
    let mut record = record(workload, threads, ops, run_for);
    record.latencies = Some(latencies);
    record
        .extra
        .insert("documents".into(), Value::from(loaded.documents));
    record
        .extra
        .insert("returned_per_op".into(), Value::from(expected));
    let sample = make(&mut Random(1));
    record
        .extra
        .insert("plan".into(), Value::from(plan_summary(node, &sample)));
    Ok(record)
}

fn find(filter: Document) -> Document {
    doc! {"find": COLLECTION, "filter": filter}
}

pub fn run(settings: &Settings, reporter: &mut Reporter) -> anyhow::Result<()> {
    let documents: i64 = if settings.quick { 20_000 } else { 1_000_000 };
    let run_for = Duration::from_secs_f64(if settings.quick { 0.3 } else { 3.0 });
    if !settings.wants_system("cairn") {
        return Ok(());
    }
    let loaded = load(documents)?;
    eprintln!(
        "query: loaded {documents} documents and built k_1 in {:.1} s",
        loaded.load_seconds
    );
    let n = documents;
    type Make = Box<dyn Fn(&mut Random) -> Document + Sync>;
    let point: Vec<(&str, usize, Make)> = vec![
        (
            "point_id",
            1,
            Box::new(move |r: &mut Random| find(doc! {"_id": r.below(n)})),
        ),
        (
            "point_secondary",
            1,
            Box::new(move |r: &mut Random| find(doc! {"k": r.below(n)})),
        ),
        (
            "range_id_100",
            100,
            Box::new(move |r: &mut Random| {
                let start = r.below(n - 100);
                find(doc! {"_id": {"$gte": start, "$lt": start + 100}})
            }),
        ),
        (
            "range_secondary_100",
            100,
            Box::new(move |r: &mut Random| {
                let start = r.below(n - 100);
                find(doc! {"k": {"$gte": start, "$lt": start + 100}})
            }),
        ),
    ];
    for (workload, expected, make) in &point {
        if !settings.wants_workload(workload) {
            continue;
        }
        for threads in [1, 2] {
            let record = find_workload(&loaded, workload, threads, run_for, *expected, make)?;
            reporter.emit(&record)?;
        }
    }
    const SORTED: i64 = 10_000;
    let sorts: Vec<(&str, usize, Make)> = vec![
        (
            "sort_indexed_10k",
            SORTED as usize,
            Box::new(move |r: &mut Random| {
                let start = r.below(n - SORTED);
                doc! {"find": COLLECTION, "filter": {"k": {"$gte": start, "$lt": start + SORTED}}, "sort": {"k": 1}, "batchSize": 10_000i64}
            }),
        ),
        (
            "sort_blocking_10k",
            SORTED as usize,
            Box::new(move |r: &mut Random| {
                let start = r.below(n - SORTED);
                doc! {"find": COLLECTION, "filter": {"k": {"$gte": start, "$lt": start + SORTED}}, "sort": {"v": 1, "k": 1}, "batchSize": 10_000i64}
            }),
        ),
        (
            "sort_blocking_id_range_10k",
            SORTED as usize,
            Box::new(move |r: &mut Random| {
                let start = r.below(n - SORTED);
                doc! {"find": COLLECTION, "filter": {"_id": {"$gte": start, "$lt": start + SORTED}}, "sort": {"k": 1}, "batchSize": 10_000i64}
            }),
        ),
        (
            "topk_indexed",
            10,
            Box::new(|_: &mut Random| {
                doc! {"find": COLLECTION, "filter": {}, "sort": {"k": -1}, "limit": 10i64}
            }),
        ),
        (
            "topk_blocking",
            10,
            Box::new(|_: &mut Random| {
                doc! {"find": COLLECTION, "filter": {}, "sort": {"v": -1}, "limit": 10i64}
            }),
        ),
    ];
    for (workload, expected, make) in &sorts {
        if settings.wants_workload(workload) {
            let record = find_workload(&loaded, workload, 1, run_for, *expected, make)?;
            reporter.emit(&record)?;
        }
    }
    if settings.wants_workload("group_all") {
        reporter.emit(&group_all(&loaded, run_for)?)?;
    }
    let writer_workloads = [
        ("writers_alone", Background::Nothing),
        ("writers_with_scan", Background::Scans { yielding: true }),
        (
            "writers_with_scan_no_yield",
            Background::Scans { yielding: false },
        ),
        ("writers_with_spinner", Background::Spinner),
    ];
    // The writers' baseline runs whenever any of them does (the others report a ratio to it).
    let mut alone_p99 = None;
    for (workload, background) in writer_workloads {
        let baseline = background == Background::Nothing
            && writer_workloads
                .iter()
                .any(|(name, _)| settings.wants_workload(name));
        if !settings.wants_workload(workload) && !baseline {
            continue;
        }
        let mut record = writers(&loaded, workload, background, run_for * 3)?;
        let p99 = record
            .latencies
            .as_ref()
            .map_or(0.0, |latencies| latencies.quantile_us(0.99));
        match alone_p99 {
            None => alone_p99 = Some(p99),
            Some(alone) if alone > 0.0 => {
                record.extra.insert(
                    "p99_ratio".into(),
                    Value::from((p99 / alone * 100.0).round() / 100.0),
                );
            }
            Some(_) => {}
        }
        reporter.emit(&record)?;
    }
    loaded
        .node
        .shutdown()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(())
}

fn group_all(loaded: &Loaded, run_for: Duration) -> anyhow::Result<Record> {
    let node = &loaded.node;
    let command = doc! {
        "aggregate": COLLECTION,
        "pipeline": [{"$group": {"_id": "$cat", "n": {"$sum": 1}, "total": {"$sum": "$v"}}}],
        "cursor": {},
    };
    let mut latencies = Latencies::new();
    let mut runs = 0u64;
    let started = Instant::now();
    // At least three runs, however long they take.
    while runs < 3 || started.elapsed() < run_for {
        let began = Instant::now();
        let groups = drain(node, command.clone())?;
        latencies.record(began.elapsed());
        anyhow::ensure!(groups == 100, "group_all: {groups} groups, expected 100");
        runs += 1;
    }
    let elapsed = started.elapsed();
    let mut record = record("group_all", 1, runs, elapsed);
    record.latencies = Some(latencies);
    record
        .extra
        .insert("documents".into(), Value::from(loaded.documents));
    record.extra.insert(
        "docs_per_sec".into(),
        Value::from((loaded.documents as f64 * runs as f64 / elapsed.as_secs_f64()).round()),
    );
    Ok(record)
}

/// What runs next to the writer.
#[derive(Clone, Copy, PartialEq)]
enum Background {
    Nothing,
    /// Full collection scans, one after another, yielding (MongoDB's defaults) or not.
    Scans {
        yielding: bool,
    },
    /// A thread that only spins: the share of the scans' effect that is just a busy core.
    Spinner,
}

/// Reads an integer field that may be stored as int32 or int64.
fn integer(document: &Document, field: &str) -> u64 {
    match document.get(field) {
        Some(Bson::Int32(n)) => *n as u64,
        Some(Bson::Int64(n)) => *n as u64,
        _ => 0,
    }
}

/// One writer updating random documents by `_id` for `run_for`, with `background` on another
/// thread meanwhile.
fn writers(
    loaded: &Loaded,
    workload: &str,
    background: Background,
    run_for: Duration,
) -> anyhow::Result<Record> {
    let node = &loaded.node;
    let admin = |mut command: Document| -> anyhow::Result<Document> {
        command.insert("$db", "admin");
        let reply = node.run_command(&ClientInfo::default(), command);
        anyhow::ensure!(reply.get_f64("ok").ok() == Some(1.0), "{reply}");
        Ok(reply)
    };
    // MongoDB's defaults, or (no yield) a period and a count no scan here reaches.
    let (period_ms, iterations) = match background {
        Background::Scans { yielding: false } => (i32::MAX, i32::MAX),
        _ => (10, 1000),
    };
    admin(doc! {
        "setParameter": 1,
        "internalQueryExecYieldPeriodMS": period_ms,
        "internalQueryExecYieldIterations": iterations,
    })?;
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(1 + usize::from(background != Background::Nothing));
    let documents = loaded.documents;
    let outcome = thread::scope(|scope| -> anyhow::Result<(u64, Latencies, u64, u64)> {
        let helper = (background != Background::Nothing).then(|| {
            let (stop, barrier) = (&stop, &barrier);
            scope.spawn(move || -> anyhow::Result<(u64, u64)> {
                barrier.wait();
                let (mut scans, mut yields) = (0u64, 0u64);
                if background == Background::Spinner {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                    return Ok((0, 0));
                }
                while !stop.load(Ordering::Relaxed) {
                    let explain = execute(
                        node,
                        doc! {
                            "explain": {"find": COLLECTION, "filter": {"s": "none"}},
                            "verbosity": "executionStats",
                        },
                    )?;
                    yields += integer(explain.get_document("executionStats")?, "numYields");
                    scans += 1;
                }
                Ok((scans, yields))
            })
        });
        let mut random = Random(0x2545_f491_4f6c_dd1d);
        let mut latencies = Latencies::new();
        let mut ops = 0;
        barrier.wait();
        let started = Instant::now();
        while started.elapsed() < run_for {
            let id = random.below(documents);
            let began = Instant::now();
            execute(
                node,
                doc! {"update": COLLECTION, "updates": [{"q": {"_id": id}, "u": {"$inc": {"v": 1}}}]},
            )?;
            latencies.record(began.elapsed());
            ops += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let (scans, yields) = match helper {
            Some(helper) => helper.join().expect("the background thread")?,
            None => (0, 0),
        };
        Ok((ops, latencies, scans, yields))
    });
    admin(doc! {
        "setParameter": 1,
        "internalQueryExecYieldPeriodMS": 10,
        "internalQueryExecYieldIterations": 1000,
    })?;
    let (ops, latencies, scans, yields) = outcome?;
    let mut record = record(workload, 1, ops, run_for);
    record.latencies = Some(latencies);
    record
        .extra
        .insert("documents".into(), Value::from(documents));
    if let Background::Scans { .. } = background {
        record.extra.insert("full_scans".into(), Value::from(scans));
        record
            .extra
            .insert("scan_yields".into(), Value::from(yields));
    }
    Ok(record)
}
