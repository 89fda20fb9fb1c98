//! Running a query plan over the storage engine, with yielding.
//!
//! A [`PlanExecutor`] reads one collection at one read timestamp: a collection scan, a scan of
//! the clustered `_id_` index (the collection table itself, over key ranges), or a secondary
//! index scan that fetches each document by `_id` (once, for a multikey index). Documents go
//! through the query layer's `ResultShaper` (residual filter, blocking sort, skip, limit,
//! projection).
//!
//! Yielding: every `yield_period_ms` (or N iterations) the executor lets go of its locks and
//! ticket, checks for kill and maxTimeMS, takes them back, and checks by UUID that its
//! collection (and index) still exist: if not, QueryPlanKilled (175). It keeps its snapshot
//! across a yield, so one batch is one point in time. Between batches (getMore) it keeps only
//! its position (the last key read) and its read timestamp, and reopens a snapshot there; when
//! that timestamp has left the history window it continues at the newest one, as MongoDB's
//! cursors do.

use crate::cursors::{BATCH_BYTES_MAX, CursorSource};
use crate::exec::collection::{decode_document, fetch};
use crate::opctx::OpCtx;
use bson::Document;
use cairn_locking::{LockMode, Locker, YieldPolicy, Yieldable};
use cairn_query::Matcher;
use cairn_query::bounds::KeyRange;
use cairn_query::planner::{Access, QueryPlan};
use cairn_query::shaper::ResultShaper;
use cairn_storage::{Engine, ReadAt, ScanDirection, Snapshot};
use cairn_types::{Error, ErrorCode, Namespace, Result, Timestamp};
use std::collections::{HashSet, VecDeque};
use std::ops::Bound;

/// The plan summary of a read by `_id` equality that skips planning (MongoDB 8.0's name).
pub const EXPRESS_PLAN_SUMMARY: &str = "EXPRESS_IXSCAN { _id: 1 }";

/// Default size of a find's first batch (MongoDB: 101 documents).
pub const FIRST_BATCH_DOCUMENTS_DEFAULT: u64 = 101;

/// One index scan of a plan: key ranges of the clustered `_id_` index (the collection table,
/// `ident: None`) or of a secondary index (then a fetch by `_id`).
#[derive(Debug, Clone)]
struct Scan {
    index_name: String,
    ident: Option<u64>,
    /// In reading order.
    ranges: Vec<KeyRange>,
    forward: bool,
}

#[derive(Debug, Clone)]
enum Path {
    /// Every document in `_id` order.
    CollectionScan { forward: bool },
    /// One scan, or the scans of a `$or` union; `dedup`: fetch each document once.
    Scans { scans: Vec<Scan>, dedup: bool },
}

/// Counters for explain and serverStatus.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExecStats {
    pub keys_examined: u64,
    pub docs_examined: u64,
    pub returned: u64,
    pub yields: u64,
}

/// The collection a plan reads.
#[derive(Debug, Clone)]
pub struct Target {
    pub ns: Namespace,
    pub uuid: bson::Uuid,
    pub ident: u64,
}

/// A running plan (also a cursor's source between getMores).
pub struct PlanExecutor {
    engine: Engine,
    target: Target,
    read_ts: Timestamp,
    path: Path,
    /// Position: the scan being read, the index of its range being read (in reading order),
    /// and the last key read.
    scan_position: usize,
    range_position: usize,
    resume_after: Option<Vec<u8>>,
    seen: HashSet<Vec<u8>>,
    shaper: Option<ResultShaper>,
    pending: VecDeque<Document>,
    scan_done: bool,
    pub stats: ExecStats,
    summary: String,
}

/// What a yield re-checks: the collection (by UUID) and the indexes still exist.
pub struct StillThere<'a> {
    engine: &'a Engine,
    target: &'a Target,
    index_names: &'a [String],
}

impl<'a> StillThere<'a> {
    /// Checks only the collection (a multi-document write between its documents).
    pub fn collection(engine: &'a Engine, target: &'a Target) -> StillThere<'a> {
        StillThere {
            engine,
            target,
            index_names: &[],
        }
    }
}

impl Yieldable for StillThere<'_> {
    fn save_state(&mut self) {}

    fn restore_state(&mut self, _locker: &Locker) -> Result<()> {
        check_still_there(self.engine, self.target, self.index_names)
    }
}

fn check_still_there(engine: &Engine, target: &Target, index_names: &[String]) -> Result<()> {
    let Some(meta) = engine.latest_collection_by_uuid(&target.uuid) else {
        return Err(Error::new(ErrorCode::QueryPlanKilled, "collection dropped"));
    };
    for name in index_names {
        if meta.index(name).is_none() {
            return Err(Error::new(
                ErrorCode::QueryPlanKilled,
                format!("index '{name}' dropped"),
            ));
        }
    }
    Ok(())
}

fn in_reading_order(ranges: &[KeyRange], forward: bool) -> Vec<KeyRange> {
    if forward {
        ranges.to_vec()
    } else {
        ranges.iter().rev().cloned().collect()
    }
}

impl PlanExecutor {
    /// A plan over `target` at `read_ts`; `filter` is the query's whole filter (for positional
    /// projections).
    pub fn new(
        engine: Engine,
        target: Target,
        read_ts: Timestamp,
        plan: &QueryPlan,
        filter: &Matcher,
        allow_disk_use: bool,
        index_idents: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<PlanExecutor> {
        let scan_of = |scan: &cairn_query::planner::IndexScan| -> Result<Scan> {
            let ident = if scan.index_name == "_id_" {
                None
            } else {
                Some(index_idents(&scan.index_name).ok_or_else(|| {
                    Error::new(
                        ErrorCode::QueryPlanKilled,
                        format!("index '{}' dropped", scan.index_name),
                    )
                })?)
            };
            Ok(Scan {
                index_name: scan.index_name.clone(),
                ident,
                ranges: in_reading_order(&scan.ranges, scan.forward),
                forward: scan.forward,
            })
        };
        let path = match &plan.access {
            Access::CollectionScan { forward } => Path::CollectionScan { forward: *forward },
            Access::IndexScan(scan) => Path::Scans {
                scans: vec![scan_of(scan)?],
                dedup: scan.dedup,
            },
            Access::Union(scans) => Path::Scans {
                scans: scans.iter().map(scan_of).collect::<Result<Vec<_>>>()?,
                dedup: true,
            },
        };
        Ok(PlanExecutor {
            engine,
            target,
            read_ts,
            path,
            scan_position: 0,
            range_position: 0,
            resume_after: None,
            seen: HashSet::new(),
            shaper: Some(ResultShaper::new(plan, filter, allow_disk_use)),
            pending: VecDeque::new(),
            scan_done: false,
            stats: ExecStats::default(),
            summary: plan.summary(),
        })
    }

    pub fn summary(&self) -> &str {
        &self.summary
    }

    pub fn read_timestamp(&self) -> Timestamp {
        self.read_ts
    }

    /// The secondary indexes the plan reads (a yield checks they still exist).
    fn index_names(&self) -> Vec<String> {
        match &self.path {
            Path::Scans { scans, .. } => scans
                .iter()
                .filter(|scan| scan.ident.is_some())
                .map(|scan| scan.index_name.clone())
                .collect(),
            Path::CollectionScan { .. } => Vec::new(),
        }
    }

    /// Whether every result has been produced.
    pub fn is_exhausted(&self) -> bool {
        self.scan_done && self.shaper.is_none() && self.pending.is_empty()
    }

    /// Opens the scan of the current range from the resume position; `None` when every range
    /// has been read.
    fn open_scan(&self, snapshot: &Snapshot) -> Result<Option<cairn_storage::ScanIter>> {
        let (ident, range, forward) = match &self.path {
            Path::CollectionScan { forward } => {
                if self.scan_position > 0 {
                    return Ok(None);
                }
                (self.target.ident, None, *forward)
            }
            Path::Scans { scans, .. } => {
                let Some(scan) = scans.get(self.scan_position) else {
                    return Ok(None);
                };
                let range = scan
                    .ranges
                    .get(self.range_position)
                    .expect("positions stay in range");
                (
                    scan.ident.unwrap_or(self.target.ident),
                    Some(range),
                    scan.forward,
                )
            }
        };
        let (start, end) = match range {
            None => (Bound::Unbounded, Bound::Unbounded),
            Some(range) => (
                Bound::Included(range.start.clone()),
                range.end.clone().map_or(Bound::Unbounded, Bound::Excluded),
            ),
        };
        let (start, end) = match (&self.resume_after, forward) {
            (None, _) => (start, end),
            (Some(last), true) => (Bound::Excluded(last.clone()), end),
            (Some(last), false) => (start, Bound::Excluded(last.clone())),
        };
        let direction = if forward {
            ScanDirection::Forward
        } else {
            ScanDirection::Backward
        };
        Ok(Some(snapshot.scan(ident, (start, end), direction)?))
    }

    /// Moves to the next range (or scan); false when there is none.
    fn advance_range(&mut self) -> bool {
        self.resume_after = None;
        match &self.path {
            Path::CollectionScan { .. } => {
                self.scan_position += 1;
                false
            }
            Path::Scans { scans, .. } => {
                self.range_position += 1;
                while let Some(scan) = scans.get(self.scan_position) {
                    if self.range_position < scan.ranges.len() {
                        return true;
                    }
                    self.scan_position += 1;
                    self.range_position = 0;
                }
                false
            }
        }
    }

    /// Skips scans without ranges so that the position names a real range.
    fn settle_position(&mut self) {
        if let Path::Scans { scans, .. } = &self.path {
            while let Some(scan) = scans.get(self.scan_position) {
                if self.range_position < scan.ranges.len() {
                    return;
                }
                self.scan_position += 1;
                self.range_position = 0;
            }
        }
    }

    fn open_snapshot(&mut self) -> Result<Snapshot> {
        match self.engine.snapshot(ReadAt::Timestamp(self.read_ts)) {
            Ok(snapshot) => Ok(snapshot),
            Err(error) if error.code == ErrorCode::SnapshotTooOld => {
                // The cursor outlived the history window: go on at the newest data.
                let snapshot = self.engine.snapshot(ReadAt::Latest)?;
                self.read_ts = snapshot.read_timestamp();
                Ok(snapshot)
            }
            Err(error) => Err(error),
        }
    }

    /// Produces up to `documents_max` results (and at most about 16 MiB). With a locker, runs
    /// under an IS lock on the collection and yields; without one (a sub-read such as `$lookup`
    /// that runs under its caller's locks), never yields.
    pub fn next_batch_with(
        &mut self,
        locker: Option<&Locker>,
        documents_max: u64,
    ) -> Result<Vec<Document>> {
        let _guard = match locker {
            Some(locker) => Some(locker.lock_collection(&self.target.ns, LockMode::IS)?),
            None => None,
        };
        let index_names = self.index_names();
        check_still_there(&self.engine, &self.target, &index_names)?;
        let snapshot = self.open_snapshot()?;
        self.settle_position();
        let mut policy = locker.map(YieldPolicy::for_locker);
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut scan = if self.scan_done {
            None
        } else {
            self.open_scan(&snapshot)?
        };
        while (batch.len() as u64) < documents_max && bytes < BATCH_BYTES_MAX {
            if let Some(document) = self.pending.pop_front() {
                bytes += cairn_query::agg::pipeline::document_size(&document);
                batch.push(document);
                continue;
            }
            if self.scan_done {
                match self.shaper.take() {
                    Some(shaper) => {
                        self.pending.extend(shaper.finish()?);
                        continue;
                    }
                    None => break,
                }
            }
            if let (Some(policy), Some(locker)) = (policy.as_mut(), locker) {
                if policy.should_yield() {
                    drop(scan.take());
                    let mut still_there = StillThere {
                        engine: &self.engine,
                        target: &self.target,
                        index_names: &index_names,
                    };
                    policy.yield_now(locker, &mut still_there)?;
                    self.stats.yields += 1;
                    scan = self.open_scan(&snapshot)?;
                }
            }
            let Some(iterator) = scan.as_mut() else {
                self.scan_done = true;
                continue;
            };
            let Some(entry) = iterator.next() else {
                // This range is done: on to the next one, if any.
                scan = if self.advance_range() {
                    self.open_scan(&snapshot)?
                } else {
                    None
                };
                if scan.is_none() {
                    self.scan_done = true;
                }
                continue;
            };
            let (key, value) = entry?;
            self.stats.keys_examined += 1;
            let document = match &self.path {
                Path::CollectionScan { .. } => Some(decode_document(&value)?),
                Path::Scans { scans, dedup } => {
                    let clustered = scans[self.scan_position].ident.is_none();
                    let id_key = if clustered { &key } else { &value };
                    if *dedup && !self.seen.insert(id_key.clone()) {
                        None
                    } else if clustered {
                        Some(decode_document(&value)?)
                    } else {
                        fetch(&snapshot, self.target.ident, &value)?
                    }
                }
            };
            self.resume_after = Some(key);
            let Some(document) = document else { continue };
            self.stats.docs_examined += 1;
            let shaper = self
                .shaper
                .as_mut()
                .expect("the shaper lives until the scan is done");
            if let Some(result) = shaper.offer(document)? {
                bytes += cairn_query::agg::pipeline::document_size(&result);
                batch.push(result);
            }
            if shaper.is_done() {
                self.scan_done = true;
            }
        }
        self.stats.returned += batch.len() as u64;
        Ok(batch)
    }

    /// Runs to the end (explain, count, distinct, aggregation input).
    pub fn collect_all(&mut self, locker: Option<&Locker>) -> Result<Vec<Document>> {
        let mut all = Vec::new();
        while !self.is_exhausted() {
            all.extend(self.next_batch_with(locker, u64::MAX)?);
        }
        Ok(all)
    }
}

impl CursorSource for PlanExecutor {
    fn next_batch(
        &mut self,
        opctx: &OpCtx<'_>,
        batch_size: Option<u64>,
    ) -> Result<(Vec<Document>, bool)> {
        opctx.set_plan_summary(self.summary.clone());
        let before = self.stats;
        let batch = self.next_batch_with(Some(&opctx.locker), batch_size.unwrap_or(u64::MAX))?;
        let metrics = &opctx.node.metrics;
        crate::metrics::add(
            &metrics.keys_examined,
            self.stats.keys_examined - before.keys_examined,
        );
        crate::metrics::add(
            &metrics.docs_examined,
            self.stats.docs_examined - before.docs_examined,
        );
        crate::metrics::add(&metrics.documents_returned, batch.len() as u64);
        Ok((batch, self.is_exhausted()))
    }

    fn plan_summary(&self) -> Option<String> {
        Some(self.summary.clone())
    }
}
