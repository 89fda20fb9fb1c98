//! The memtable: committed batches not yet written to redb, indexed for reads.
//!
//! A batch commit appends its journal record and adds the batch to the *active layer*; it does
//! not touch redb. Readers see it at once: a snapshot consults the layers (newest first) before
//! redb. The flusher *freezes* the active layer (a new, empty one takes its place), writes the
//! frozen layers' batches into one redb write transaction, in commit order, with the same
//! `write_units` that journal replay uses, commits it, and only then retires the layers. So one
//! redb transaction, with its fixed cost (copy-on-write of every touched table's path, root
//! flushes, page checksums, allocator bookkeeping), serves many batches.
//!
//! Invariants:
//! - Layers are ordered oldest first; every batch of a layer is older than every batch of the
//!   next; only the last (active) layer takes batches, in commit order.
//! - A snapshot takes its list of layers after pinning its read timestamp and *before* opening
//!   its redb read transaction. A layer is retired only after the redb commit that holds it, so
//!   every batch at or before the read timestamp is in a listed layer or in the redb view (or in
//!   both, which resolves the same: a key's layer versions are all newer than its redb versions).
//! - Every other redb write (garbage collection, checkpoints, durable commits, recovery to
//!   stable, oplog truncation) runs with the memtable drained, under the writer mutex, so that
//!   it sees every commit and no flush follows it with older batches.

use crate::committer::{BatchUnit, CommitBase};
use cairn_types::Timestamp;
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Unflushed batches beyond this many bytes of staged values and oplog entries make the
/// committing leader flush them itself (backpressure when the flusher falls behind).
pub(crate) const MEMTABLE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// An active layer with this many units of work wakes the flusher at once.
pub(crate) const FLUSH_UNITS_MIN: usize = 128;

/// The flusher writes whatever is unflushed at least this often.
pub(crate) const FLUSH_INTERVAL_MS: u64 = 5;

/// A batch that is committed (visible, journaled) and not yet in redb.
pub(crate) struct PendingBatch {
    pub units: Vec<BatchUnit<'static>>,
    pub base: CommitBase,
}

/// Where the bytes of a version or an oplog entry are: batch, unit, and write or entry index.
#[derive(Clone, Copy, Debug)]
struct At {
    batch: u32,
    unit: u32,
    item: u32,
}

/// A table's keys in a layer, each with its versions in that layer, oldest first.
type LayerTable = BTreeMap<Vec<u8>, Vec<(Timestamp, At)>>;

#[derive(Default)]
struct LayerData {
    batches: Vec<PendingBatch>,
    /// Per table ident: key -> its versions in this layer, oldest first.
    tables: HashMap<u64, LayerTable>,
    oplog: BTreeMap<u64, At>,
    units: usize,
    bytes: usize,
}

impl LayerData {
    fn value(&self, at: At) -> Option<&[u8]> {
        self.batches[at.batch as usize].units[at.unit as usize].writes[at.item as usize]
            .value
            .as_deref()
    }

    fn oplog_entry(&self, at: At) -> &[u8] {
        &self.batches[at.batch as usize].units[at.unit as usize].oplog[at.item as usize]
    }
}

/// One layer of batches.
#[derive(Default)]
pub(crate) struct Layer {
    data: RwLock<LayerData>,
    /// Set once a redb commit holds the layer (when it is retired).
    in_redb: std::sync::atomic::AtomicBool,
}

/// `BTreeMap::range` panics on inverted ranges (and on equal excluded bounds); those ranges
/// are simply empty.
fn is_empty_range<K: Ord + ?Sized>(lower: &Bound<&K>, upper: &Bound<&K>) -> bool {
    match (lower, upper) {
        (Bound::Included(low), Bound::Included(high)) => low > high,
        (Bound::Included(low) | Bound::Excluded(low), Bound::Excluded(high))
        | (Bound::Excluded(low), Bound::Included(high)) => low >= high,
        _ => false,
    }
}

impl Layer {
    /// Whether a redb commit holds this layer: a redb transaction begun from now on sees it.
    pub(crate) fn is_in_redb(&self) -> bool {
        self.in_redb.load(Ordering::Acquire)
    }

    /// Adds a batch; returns the bytes of values, keys and oplog entries it added.
    fn add(&self, batch: PendingBatch) -> usize {
        let mut data = self.data.write();
        let batch_index = data.batches.len() as u32;
        let mut bytes = 0;
        for (unit_index, unit) in batch.units.iter().enumerate() {
            for (write_index, write) in unit.writes.iter().enumerate() {
                let ts = unit.stamps[write.slot as usize];
                bytes += write.key.len() + write.value.as_ref().map_or(0, Vec::len);
                let at = At {
                    batch: batch_index,
                    unit: unit_index as u32,
                    item: write_index as u32,
                };
                let versions = data
                    .tables
                    .entry(write.ident)
                    .or_default()
                    .entry(write.key.clone())
                    .or_default();
                assert!(
                    versions.last().is_none_or(|(last, _)| *last < ts),
                    "memtable versions of a key must be added in timestamp order"
                );
                versions.push((ts, at));
            }
            for (entry_index, entry) in unit.oplog.iter().enumerate() {
                bytes += entry.len();
                let ts = unit.stamps[entry_index].as_u64();
                let at = At {
                    batch: batch_index,
                    unit: unit_index as u32,
                    item: entry_index as u32,
                };
                assert!(
                    data.oplog.insert(ts, at).is_none(),
                    "two oplog entries at one timestamp"
                );
            }
        }
        data.units += batch.units.len();
        data.bytes += bytes;
        data.batches.push(batch);
        bytes
    }

    fn is_empty(&self) -> bool {
        self.data.read().batches.is_empty()
    }

    fn units(&self) -> usize {
        self.data.read().units
    }

    /// Whether this layer has versions in table `ident`.
    pub(crate) fn has_table(&self, ident: u64) -> bool {
        self.data.read().tables.contains_key(&ident)
    }

    pub(crate) fn has_oplog(&self) -> bool {
        !self.data.read().oplog.is_empty()
    }

    /// The version of `key` visible at `read_ts` in this layer: `None` when the layer has no
    /// version of the key at or before `read_ts` (an older layer or redb decides); `Some(None)`
    /// when that version is a delete.
    pub(crate) fn resolve(
        &self,
        ident: u64,
        key: &[u8],
        read_ts: Timestamp,
    ) -> Option<Option<Vec<u8>>> {
        let data = self.data.read();
        let versions = data.tables.get(&ident)?.get(key)?;
        let (_, at) = versions.iter().rev().find(|(ts, _)| *ts <= read_ts)?;
        Some(data.value(*at).map(<[u8]>::to_vec))
    }

    /// The first key of table `ident` within the bounds, in `forward` or backward order.
    pub(crate) fn next_key(
        &self,
        ident: u64,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        forward: bool,
    ) -> Option<Vec<u8>> {
        if is_empty_range(&lower, &upper) {
            return None;
        }
        let data = self.data.read();
        let table = data.tables.get(&ident)?;
        let mut range = table.range::<[u8], _>((lower, upper));
        let found = if forward {
            range.next()
        } else {
            range.next_back()
        };
        found.map(|(key, _)| key.clone())
    }

    /// The first oplog entry within the bounds, in `forward` or backward order.
    pub(crate) fn next_oplog(
        &self,
        lower: Bound<u64>,
        upper: Bound<u64>,
        forward: bool,
    ) -> Option<(u64, Vec<u8>)> {
        if is_empty_range(&lower.as_ref(), &upper.as_ref()) {
            return None;
        }
        let data = self.data.read();
        let mut range = data.oplog.range((lower, upper));
        let found = if forward {
            range.next()
        } else {
            range.next_back()
        };
        found.map(|(ts, at)| (*ts, data.oplog_entry(*at).to_vec()))
    }

    /// Runs `write` over the layer's batches, in commit order.
    pub(crate) fn with_batches<T>(&self, write: impl FnOnce(&[PendingBatch]) -> T) -> T {
        write(&self.data.read().batches)
    }
}

/// The layers and the flusher's coordination.
pub(crate) struct Memtable {
    /// Oldest first; the last is the active layer. Never empty.
    layers: Mutex<Vec<Arc<Layer>>>,
    /// Held by whoever writes redb from the memtable (and by every redb write that drains
    /// first). Lock order: the committer's writer mutex, then this.
    pub flush_lock: Mutex<()>,
    /// Units of work added and not yet flushed, and their bytes.
    unflushed_units: AtomicUsize,
    unflushed_bytes: AtomicUsize,
    /// Wakes the flusher thread (`true`: a flush was asked for).
    pub wake: Mutex<bool>,
    pub wake_signal: Condvar,
}

impl Default for Memtable {
    fn default() -> Self {
        Memtable {
            layers: Mutex::new(vec![Arc::new(Layer::default())]),
            flush_lock: Mutex::new(()),
            unflushed_units: AtomicUsize::new(0),
            unflushed_bytes: AtomicUsize::new(0),
            wake: Mutex::new(false),
            wake_signal: Condvar::new(),
        }
    }
}

impl Memtable {
    /// The layers a new snapshot reads (see the module's invariants for when to take them):
    /// those with batches. A layer empty now can only gain batches newer than the snapshot's
    /// read timestamp, which it does not see. Every batch at or before the read timestamp was
    /// added (and counted in `unflushed_units`) before it was visible, so a count of zero means
    /// that they are all in redb: no lock then.
    pub(crate) fn view(&self) -> Vec<Arc<Layer>> {
        if self.unflushed_units.load(Ordering::SeqCst) == 0 {
            return Vec::new();
        }
        self.layers
            .lock()
            .iter()
            .filter(|layer| !layer.is_empty())
            .cloned()
            .collect()
    }

    /// Adds a committed batch to the active layer. Called in commit order (under the
    /// committer's writer mutex), before the batch is visible.
    pub(crate) fn add(&self, batch: PendingBatch) {
        let units = batch.units.len();
        let layers = self.layers.lock();
        let added = layers
            .last()
            .expect("there is always an active layer")
            .add(batch);
        drop(layers);
        self.unflushed_units.fetch_add(units, Ordering::SeqCst);
        self.unflushed_bytes.fetch_add(added, Ordering::AcqRel);
    }

    /// Whether the active layer has enough units to flush now.
    pub(crate) fn flush_due(&self) -> bool {
        self.layers
            .lock()
            .last()
            .expect("there is always an active layer")
            .units()
            >= FLUSH_UNITS_MIN
    }

    pub(crate) fn unflushed_units(&self) -> usize {
        self.unflushed_units.load(Ordering::Acquire)
    }

    pub(crate) fn unflushed_bytes(&self) -> usize {
        self.unflushed_bytes.load(Ordering::Acquire)
    }

    /// Makes the active layer frozen (if it has batches) and starts a new one. Returns the
    /// frozen layers, oldest first.
    pub(crate) fn freeze(&self) -> Vec<Arc<Layer>> {
        let mut layers = self.layers.lock();
        if !layers
            .last()
            .expect("there is always an active layer")
            .is_empty()
        {
            layers.push(Arc::new(Layer::default()));
        }
        layers[..layers.len() - 1].to_vec()
    }

    /// Retires the oldest layers, which a committed redb transaction now holds.
    pub(crate) fn retire(&self, flushed: &[Arc<Layer>]) {
        let mut layers = self.layers.lock();
        assert!(
            layers.len() > flushed.len(),
            "the active layer is never retired"
        );
        for (layer, retired) in layers.iter().zip(flushed) {
            assert!(
                Arc::ptr_eq(layer, retired),
                "layers are retired oldest first"
            );
        }
        layers.drain(..flushed.len());
        drop(layers);
        for layer in flushed {
            layer.in_redb.store(true, Ordering::Release);
            let (units, bytes) = {
                let data = layer.data.read();
                (data.units, data.bytes)
            };
            self.unflushed_units.fetch_sub(units, Ordering::AcqRel);
            self.unflushed_bytes.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Asks the flusher thread to flush now.
    pub(crate) fn wake_flusher(&self) {
        let mut wake = self.wake.lock();
        if !*wake {
            *wake = true;
            self.wake_signal.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::committer::flush_memtable;
    use crate::{
        Backend, CommitMode, Durability, Engine, EngineConfig, FIRST_USER_IDENT, ReadAt,
        ScanDirection,
    };
    use cairn_types::{Clock, ManualClock, Timestamp};
    use std::collections::BTreeMap;
    use std::ops::Bound;
    use std::sync::Arc;

    const TABLE: u64 = FIRST_USER_IDENT;

    fn key(id: u32) -> Vec<u8> {
        format!("k{id:03}").into_bytes()
    }

    /// A key's committed versions, oldest first (`None`: deleted).
    type Versions = Vec<(Timestamp, Option<Vec<u8>>)>;

    /// The model: every committed version of every key, with its timestamp.
    #[derive(Default)]
    struct Model {
        versions: BTreeMap<Vec<u8>, Versions>,
        oplog: Vec<Timestamp>,
    }

    impl Model {
        fn at(&self, read_ts: Timestamp) -> Vec<(Vec<u8>, Vec<u8>)> {
            self.versions
                .iter()
                .filter_map(|(key, versions)| {
                    let (_, value) = versions.iter().rev().find(|(ts, _)| *ts <= read_ts)?;
                    Some((key.clone(), value.clone()?))
                })
                .collect()
        }
    }

    /// Commits a round of puts and deletes (one oplog entry per unit) and records them.
    fn commit_round(engine: &Engine, model: &mut Model, round: u32) {
        for id in 0..12u32 {
            let mut unit = engine.begin_write();
            let value = !(id + round).is_multiple_of(4);
            if value {
                let bytes = format!("{round}-{id}").into_bytes();
                unit.put(TABLE, &key(id * 2 + round % 2), &bytes).unwrap();
            } else {
                unit.delete(TABLE, &key(id * 2 + round % 2)).unwrap();
            }
            unit.append_oplog(bson::doc! { "op": "i", "round": round, "id": id });
            let info = unit.commit(Durability::Visible).unwrap();
            let entry = model.versions.entry(key(id * 2 + round % 2)).or_default();
            if value || entry.last().is_some_and(|(_, value)| value.is_some()) {
                entry.push((
                    info.last_ts,
                    value.then(|| format!("{round}-{id}").into_bytes()),
                ));
            }
            model.oplog.push(info.last_ts);
        }
    }

    /// An engine in memory that commits inline (nothing flushes unless a test does).
    fn inline_engine() -> Engine {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(1_700_000_000_000));
        let config = EngineConfig {
            commit_mode: CommitMode::Inline,
            oplog_size_bytes: Some(64 * 1024 * 1024),
            ..EngineConfig::default()
        };
        Engine::open(config, Backend::Memory, clock).unwrap()
    }

    /// Every key and value of the table, forwards.
    fn scan_all(snapshot: &crate::Snapshot) -> Vec<(Vec<u8>, Vec<u8>)> {
        snapshot
            .scan(
                TABLE,
                (Bound::Unbounded, Bound::Unbounded),
                ScanDirection::Forward,
            )
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn check(engine: &Engine, model: &Model, timestamps: &[Timestamp]) {
        for &read_ts in timestamps {
            let snapshot = engine.snapshot(ReadAt::Timestamp(read_ts)).unwrap();
            let expected = model.at(read_ts);
            for direction in [ScanDirection::Forward, ScanDirection::Backward] {
                let mut scanned: Vec<_> = snapshot
                    .scan(TABLE, (Bound::Unbounded, Bound::Unbounded), direction)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                if direction == ScanDirection::Backward {
                    scanned.reverse();
                }
                assert_eq!(scanned, expected, "scan {direction:?} at {read_ts}");
            }
            // A range that starts and ends inside the keys.
            let inner: Vec<_> = snapshot
                .scan(
                    TABLE,
                    (Bound::Excluded(key(4)), Bound::Included(key(30))),
                    ScanDirection::Forward,
                )
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let expected_inner: Vec<_> = expected
                .iter()
                .filter(|(k, _)| *k > key(4) && *k <= key(30))
                .cloned()
                .collect();
            assert_eq!(inner, expected_inner, "range scan at {read_ts}");
            for id in 0..40 {
                let want = expected
                    .iter()
                    .find(|(k, _)| *k == key(id))
                    .map(|(_, v)| v.clone());
                assert_eq!(snapshot.get(TABLE, &key(id)).unwrap(), want, "get {id}");
            }
            let oplog: Vec<Timestamp> = snapshot
                .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
                .unwrap()
                .map(|entry| entry.unwrap().0)
                .collect();
            let want: Vec<Timestamp> = model
                .oplog
                .iter()
                .copied()
                .filter(|ts| *ts <= read_ts)
                .collect();
            assert_eq!(oplog, want, "oplog at {read_ts}");
            let mut backward: Vec<Timestamp> = snapshot
                .oplog_scan(Bound::Unbounded, ScanDirection::Backward)
                .unwrap()
                .map(|entry| entry.unwrap().0)
                .collect();
            backward.reverse();
            assert_eq!(backward, want, "oplog backward at {read_ts}");
        }
    }

    /// Reads across redb, frozen layers and the active layer, before and after they are
    /// flushed, agree with the model; a snapshot opened before a flush reads the same after it.
    #[test]
    fn reads_merge_layers_and_redb_at_every_timestamp() {
        let engine = inline_engine();
        let mut model = Model::default();
        let mut timestamps = Vec::new();
        // Round 0 goes to redb; rounds 1 and 2 stay in frozen layers; round 3 is active.
        for round in 0..4 {
            commit_round(&engine, &mut model, round);
            timestamps.push(engine.visible_timestamp());
            match round {
                0 => flush_memtable(&engine.inner).unwrap(),
                1 | 2 => {
                    engine.inner.memtable.freeze();
                }
                _ => {}
            }
        }
        assert_eq!(engine.inner.memtable.layers.lock().len(), 3);
        let before_flush = engine.snapshot(ReadAt::Latest).unwrap();
        let latest = model.at(engine.visible_timestamp());
        check(&engine, &model, &timestamps);
        flush_memtable(&engine.inner).unwrap();
        assert_eq!(engine.inner.memtable.unflushed_units(), 0);
        check(&engine, &model, &timestamps);
        assert_eq!(
            scan_all(&before_flush),
            latest,
            "a snapshot opened before the flush"
        );
    }

    /// A snapshot that listed layers reads from a newer redb transaction once they are all
    /// in redb, and drops them; it still reads exactly its own timestamp, also for keys
    /// rewritten and deleted after it (found in history).
    #[test]
    fn a_snapshot_drops_its_layers_once_they_are_in_redb() {
        let engine = inline_engine();
        let mut model = Model::default();
        commit_round(&engine, &mut model, 0);
        flush_memtable(&engine.inner).unwrap();
        commit_round(&engine, &mut model, 1);
        let read_ts = engine.visible_timestamp();
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(snapshot.layer_count(), 1, "round 1 is unflushed");
        // Later rounds rewrite and delete the same keys, and everything reaches redb.
        for round in 2..6 {
            commit_round(&engine, &mut model, round);
        }
        let expected = model.at(read_ts);
        let read_all = |snapshot: &crate::Snapshot| -> Vec<(Vec<u8>, Vec<u8>)> {
            (0..30u32)
                .filter_map(|id| {
                    let value = snapshot.get(TABLE, &key(id)).unwrap()?;
                    Some((key(id), value))
                })
                .collect()
        };
        assert_eq!(read_all(&snapshot), expected, "before the flush");
        assert_eq!(snapshot.layer_count(), 1, "its layer is not in redb yet");
        flush_memtable(&engine.inner).unwrap();
        assert_eq!(read_all(&snapshot), expected, "after the flush");
        assert_eq!(snapshot.layer_count(), 0, "the layer was dropped");
        assert_eq!(scan_all(&snapshot), expected, "a scan after the refresh");
        let oplog = snapshot
            .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
            .unwrap()
            .count();
        assert_eq!(oplog, 24, "the oplog through the read timestamp");
    }
    /// Snapshots opened with no redb commit in between share one redb read transaction; a
    /// snapshot opened after a commit reaches redb gets a newer one, which has what left the
    /// memtable, while an older snapshot keeps reading exactly its own timestamp.
    #[test]
    fn snapshots_share_a_redb_transaction_until_the_next_redb_commit() {
        let engine = inline_engine();
        let mut model = Model::default();
        commit_round(&engine, &mut model, 0);
        flush_memtable(&engine.inner).unwrap();
        let first = engine.snapshot(ReadAt::Latest).unwrap();
        let second = engine.snapshot(ReadAt::Latest).unwrap();
        assert!(
            first.shares_redb_transaction_with(&second),
            "no redb commit in between"
        );
        let first_ts = first.read_timestamp();
        // A commit that stays in the memtable changes nothing in redb.
        commit_round(&engine, &mut model, 1);
        let third = engine.snapshot(ReadAt::Latest).unwrap();
        assert!(third.shares_redb_transaction_with(&first));
        assert_eq!(third.layer_count(), 1);
        // Written to redb and gone from the memtable: a new snapshot must find it in redb.
        // Also when a transaction begun before the commit is put back as the shared one
        // afterwards (a snapshot that raced the commit): it is older than the commit count.
        let raced = crate::snapshot::ReadView::latest(&engine.inner).unwrap();
        flush_memtable(&engine.inner).unwrap();
        *engine.inner.read_view.write() = Some(raced);
        let fourth = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(fourth.layer_count(), 0);
        assert!(!fourth.shares_redb_transaction_with(&first));
        assert_eq!(scan_all(&fourth), model.at(fourth.read_timestamp()));
        assert_eq!(scan_all(&first), model.at(first_ts), "the older snapshot");
        // Snapshots after it share its transaction again.
        let fifth = engine.snapshot(ReadAt::Latest).unwrap();
        assert!(fifth.shares_redb_transaction_with(&fourth));
    }
}
