//! Snapshots: reads as of one read timestamp.
//!
//! A snapshot pins its read timestamp (so the history it can see stays), holds a redb read
//! transaction opened *after* the pin (so redb holds at least every commit up to the read
//! timestamp), and resolves each key to the newest version at or before the read timestamp:
//! the current version if it is old enough, else the history entry whose
//! `[start, stop)` interval contains the read timestamp.
//!
//! Commits not yet written to redb are in the memtable's layers (`memtable`): a snapshot takes
//! the list of layers after its pin and before its redb read transaction, and resolves a key
//! in the layers first (newest layer first), then in redb. Scans merge the layers' keys with
//! redb's in key order.
//!
//! Dropping and re-opening a snapshot at the same read timestamp gives the same view (what a
//! yielding query does), as long as the pin is kept or the timestamp stays within history.

use crate::catalog::CollectionMeta;
use crate::engine::{Inner, storage_error};
use crate::format::{self, decode_version, history_key};
use crate::memtable::Layer;
use crate::pins::PinGuard;
use crate::stats::Counters;
use cairn_types::{Error, Namespace, Timestamp};
use redb::{ReadOnlyTable, ReadableDatabase, TableDefinition, TableError};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::OnceLock;

/// Where a snapshot reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAt {
    /// The newest visible commit.
    Latest,
    /// A given timestamp inside the history window.
    Timestamp(Timestamp),
}

/// Scan order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanDirection {
    Forward,
    Backward,
}

type RawTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The tables of one ident; the history table is opened only when an old version is needed.
struct Tables {
    current: RawTable,
    /// `None` inside: no version of this table was ever replaced, so it has no history table.
    history: OnceLock<Option<Arc<RawTable>>>,
}

/// A redb read transaction shared by the snapshots that open while no redb commit has happened
/// since it began, with the tables they opened in it. Opening a redb read transaction, and
/// dropping one, takes a mutex of redb's that every snapshot on every thread contends for;
/// opening a table looks its root up in redb's table tree. With a shared view a snapshot pays
/// neither, except the first after each commit (the flusher's, every few milliseconds under
/// load).
pub(crate) struct ReadView {
    /// `Inner::redb_commits` read before the transaction began: it holds every redb commit
    /// counted up to there (and maybe later ones).
    version: u64,
    txn: redb::ReadTransaction,
    tables: parking_lot::Mutex<HashMap<u64, Option<Arc<Tables>>>>,
}

impl ReadView {
    /// The newest view: the shared one if no redb commit was counted since it began, else a new
    /// one, which becomes the shared one.
    ///
    /// Why this is enough for a snapshot (see `memtable`): a commit written to redb leaves the
    /// memtable's layers only after the redb commit is counted, and a snapshot lists the layers
    /// before it takes a view. So a commit a snapshot does not find in its layers was counted
    /// before the snapshot read the count, and is in any view of that version.
    pub(crate) fn latest(inner: &Inner) -> Result<Arc<ReadView>, Error> {
        let version = inner
            .redb_commits
            .load(std::sync::atomic::Ordering::Acquire);
        if let Some(view) = inner.read_view.read().as_ref() {
            if view.version == version {
                return Ok(view.clone());
            }
        }
        let txn = inner
            .db
            .begin_read()
            .map_err(|error| storage_error("opening a snapshot", error))?;
        let view = Arc::new(ReadView {
            version,
            txn,
            tables: parking_lot::Mutex::new(HashMap::new()),
        });
        // Never waits: a writer waiting for the slot would park every snapshot that came to
        // read it meanwhile. If the slot is busy, a later snapshot installs its view.
        if let Some(mut shared) = inner.read_view.try_write() {
            if shared
                .as_ref()
                .is_none_or(|newest| newest.version < version)
            {
                let replaced = shared.replace(view.clone());
                drop(shared);
                drop(replaced);
            }
        }
        Ok(view)
    }

    fn tables(&self, ident: u64) -> Result<Option<Arc<Tables>>, Error> {
        let mut tables = self.tables.lock();
        if let Some(found) = tables.get(&ident) {
            return Ok(found.clone());
        }
        let current = open_raw(&self.txn, &format::current_table_name(ident))?;
        let found = current.map(|current| {
            Arc::new(Tables {
                current,
                history: OnceLock::new(),
            })
        });
        tables.insert(ident, found.clone());
        Ok(found)
    }
}

/// A consistent view of the engine as of one read timestamp.
pub struct Snapshot {
    inner: Arc<Inner>,
    pin: PinGuard,
    /// The memtable's layers as of the pin, oldest first, and the redb transaction they
    /// complete. Once every listed layer is in redb, a newer redb transaction replaces both
    /// ([`Snapshot::refresh`]).
    layers: RefCell<Vec<Arc<Layer>>>,
    view: RefCell<Arc<ReadView>>,
    /// Table handles used so far (`None`: the table does not exist in this snapshot).
    tables: RefCell<HashMap<u64, Option<Arc<Tables>>>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("read_ts", &self.pin.ts())
            .finish()
    }
}

fn open_raw(txn: &redb::ReadTransaction, name: &str) -> Result<Option<RawTable>, Error> {
    match txn.open_table(TableDefinition::<&[u8], &[u8]>::new(name)) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(error) => Err(storage_error("opening a table", error)),
    }
}

/// The version of `key` visible at `read_ts`, given its current version.
fn resolve(
    history: Option<&RawTable>,
    key: &[u8],
    current: &[u8],
    read_ts: Timestamp,
) -> Result<Option<Vec<u8>>, Error> {
    let version = decode_version(current);
    if version.ts <= read_ts {
        return Ok(version.payload.map(<[u8]>::to_vec));
    }
    match history {
        Some(history) => history_lookup(history, key, read_ts),
        None => Ok(None),
    }
}

/// The history version of `key` whose interval contains `read_ts`: the first entry with a stop
/// timestamp after `read_ts`, if it started at or before `read_ts`.
pub(crate) fn history_lookup(
    history: &RawTable,
    key: &[u8],
    read_ts: Timestamp,
) -> Result<Option<Vec<u8>>, Error> {
    let lower = history_key(key, read_ts.successor());
    let upper = history_key(key, Timestamp::MAX);
    let mut range = history
        .range(lower.as_slice()..=upper.as_slice())
        .map_err(|error| storage_error("reading history", error))?;
    let Some(entry) = range.next() else {
        return Ok(None);
    };
    let (found_key, value) = entry.map_err(|error| storage_error("reading history", error))?;
    let found_key = found_key.value();
    assert!(
        found_key.len() == key.len() + 8 && found_key.starts_with(key),
        "history key of another key in range: keys must be prefix-free"
    );
    let version = decode_version(value.value());
    if version.ts <= read_ts {
        Ok(version.payload.map(<[u8]>::to_vec))
    } else {
        Ok(None)
    }
}

impl Snapshot {
    pub(crate) fn open(inner: Arc<Inner>, at: ReadAt) -> Result<Snapshot, Error> {
        let pin = match at {
            ReadAt::Latest => inner.pins.pin_latest(&inner.visible),
            ReadAt::Timestamp(ts) => inner.pins.pin_at(ts, &inner.visible)?,
        };
        // After the pin and before the redb transaction (see `memtable`).
        let layers = inner.memtable.view();
        let view = ReadView::latest(&inner)?;
        Counters::add(&inner.counters.snapshots_opened, 1);
        Ok(Snapshot {
            inner,
            pin,
            layers: RefCell::new(layers),
            view: RefCell::new(view),
            tables: RefCell::new(HashMap::new()),
        })
    }

    /// Whether both snapshots read the same redb read transaction.
    #[cfg(test)]
    pub(crate) fn shares_redb_transaction_with(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.view.borrow(), &other.view.borrow())
    }

    /// How many memtable layers this snapshot reads before redb.
    #[cfg(test)]
    pub(crate) fn layer_count(&self) -> usize {
        self.layers.borrow().len()
    }

    /// Once every memtable layer this snapshot listed has been written to redb, reads from a
    /// newer redb transaction instead, and drops the layers: a long-lived snapshot would
    /// otherwise search them before redb on every read for its whole life. The newer
    /// transaction also holds commits after the read timestamp, which reads skip as they do
    /// in any snapshot (the current version, else history), and the pin keeps every version
    /// visible at the read timestamp from garbage collection. Scans already open keep what they
    /// started with.
    fn refresh(&self) -> Result<(), Error> {
        let stale = {
            let layers = self.layers.borrow();
            !layers.is_empty() && layers.iter().all(|layer| layer.is_in_redb())
        };
        if stale {
            *self.view.borrow_mut() = ReadView::latest(&self.inner)?;
            self.layers.borrow_mut().clear();
            self.tables.borrow_mut().clear();
        }
        Ok(())
    }

    /// The read timestamp: this snapshot sees exactly the commits at or before it.
    pub fn read_timestamp(&self) -> Timestamp {
        self.pin.ts()
    }

    fn tables(&self, ident: u64) -> Result<Option<Arc<Tables>>, Error> {
        if let Some(tables) = self.tables.borrow().get(&ident) {
            return Ok(tables.clone());
        }
        let tables = self.view.borrow().tables(ident)?;
        self.tables.borrow_mut().insert(ident, tables.clone());
        Ok(tables)
    }

    fn history(&self, ident: u64, tables: &Tables) -> Result<Option<Arc<RawTable>>, Error> {
        if let Some(history) = tables.history.get() {
            return Ok(history.clone());
        }
        let history =
            open_raw(&self.view.borrow().txn, &format::history_table_name(ident))?.map(Arc::new);
        Ok(tables.history.get_or_init(|| history).clone())
    }

    /// The value of `key` in table `ident` as of the read timestamp.
    pub fn get(&self, ident: u64, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let read_ts = self.read_timestamp();
        self.refresh()?;
        for layer in self.layers.borrow().iter().rev() {
            if let Some(found) = layer.resolve(ident, key, read_ts) {
                return Ok(found);
            }
        }
        let Some(tables) = self.tables(ident)? else {
            return Ok(None);
        };
        let current = tables
            .current
            .get(key)
            .map_err(|error| storage_error("reading", error))?;
        let Some(guard) = current else {
            return Ok(None);
        };
        let version = decode_version(guard.value());
        if version.ts <= self.read_timestamp() {
            return Ok(version.payload.map(<[u8]>::to_vec));
        }
        match self.history(ident, &tables)? {
            Some(history) => history_lookup(&history, key, self.read_timestamp()),
            None => Ok(None),
        }
    }

    /// Key-value pairs of table `ident` in `range` as of the read timestamp, in key order.
    pub fn scan(
        &self,
        ident: u64,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: ScanDirection,
    ) -> Result<ScanIter, Error> {
        let as_slices = (bound_as_slice(&range.0), bound_as_slice(&range.1));
        if range_is_empty(&as_slices) {
            return Ok(ScanIter { state: None });
        }
        self.refresh()?;
        let layers: Vec<Arc<Layer>> = self
            .layers
            .borrow()
            .iter()
            .filter(|layer| layer.has_table(ident))
            .cloned()
            .collect();
        let memtable = (!layers.is_empty()).then(|| MemtableKeys {
            layers,
            ident,
            lower: range.0.clone(),
            upper: range.1.clone(),
            next: None,
            done: false,
        });
        let tables = self.tables(ident)?;
        if tables.is_none() && memtable.is_none() {
            return Ok(ScanIter { state: None });
        }
        let (redb_range, history) = match &tables {
            Some(tables) => (
                Some(
                    tables
                        .current
                        .range::<&[u8]>(as_slices)
                        .map_err(|error| storage_error("scanning", error))?,
                ),
                self.history(ident, tables)?,
            ),
            None => (None, None),
        };
        Ok(ScanIter {
            state: Some(ScanState {
                range: redb_range,
                peeked: None,
                memtable,
                history,
                read_ts: self.read_timestamp(),
                direction,
            }),
        })
    }

    /// Approximate size of table `ident`: `(current entries, stored bytes)`. Entries count
    /// every key with a current version, including tombstones not yet collected and versions
    /// newer than the read timestamp: for statistics, not for counting documents.
    pub fn table_stats(&self, ident: u64) -> Result<(u64, u64), Error> {
        use redb::ReadableTableMetadata;
        let Some(tables) = self.tables(ident)? else {
            return Ok((0, 0));
        };
        let entries = tables
            .current
            .len()
            .map_err(|error| storage_error("table stats", error))?;
        let stats = tables
            .current
            .stats()
            .map_err(|error| storage_error("table stats", error))?;
        Ok((entries, stats.stored_bytes()))
    }

    /// The collection at `ns` as of the read timestamp.
    pub fn collection(&self, ns: &Namespace) -> Option<Arc<CollectionMeta>> {
        self.inner.catalog.read().lookup(ns, self.read_timestamp())
    }

    /// Every collection as of the read timestamp, in namespace order.
    pub fn collections(&self) -> Vec<Arc<CollectionMeta>> {
        self.inner.catalog.read().list(self.read_timestamp())
    }

    /// The collection with this UUID as of the read timestamp.
    pub fn collection_by_uuid(&self, uuid: &bson::Uuid) -> Option<Arc<CollectionMeta>> {
        self.collections()
            .into_iter()
            .find(|meta| meta.uuid == *uuid)
    }

    /// Oplog entries with timestamps in `range`, up to the read timestamp, in timestamp order.
    pub fn oplog_scan(
        &self,
        from: Bound<Timestamp>,
        direction: ScanDirection,
    ) -> Result<OplogIter, Error> {
        self.refresh()?;
        let table = self
            .view
            .borrow()
            .txn
            .open_table(format::OPLOG)
            .map_err(|error| storage_error("opening the oplog", error))?;
        let read_ts = self.read_timestamp();
        let lower = match from {
            Bound::Included(ts) => Bound::Included(ts.as_u64()),
            Bound::Excluded(ts) => Bound::Excluded(ts.as_u64()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let upper = Bound::Included(read_ts.as_u64());
        if let (Bound::Included(low) | Bound::Excluded(low), Bound::Included(high)) = (lower, upper)
        {
            if low > high || (matches!(lower, Bound::Excluded(_)) && low == high) {
                return Ok(OplogIter {
                    range: None,
                    direction,
                    peeked: None,
                    memtable: None,
                });
            }
        }
        let range = table
            .range::<u64>((lower, upper))
            .map_err(|error| storage_error("scanning the oplog", error))?;
        let layers: Vec<Arc<Layer>> = self
            .layers
            .borrow()
            .iter()
            .filter(|layer| layer.has_oplog())
            .cloned()
            .collect();
        Ok(OplogIter {
            range: Some(range),
            direction,
            peeked: None,
            memtable: (!layers.is_empty()).then_some(MemtableOplog {
                layers,
                lower,
                upper,
                next: None,
                done: false,
            }),
        })
    }
}

fn bound_as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// redb panics on inverted ranges; an inverted or empty range simply has no keys.
fn range_is_empty(range: &(Bound<&[u8]>, Bound<&[u8]>)) -> bool {
    match range {
        (Bound::Included(low), Bound::Included(high)) => low > high,
        (Bound::Included(low) | Bound::Excluded(low), Bound::Excluded(high))
        | (Bound::Excluded(low), Bound::Included(high)) => low >= high,
        _ => false,
    }
}

/// The keys of a scan's range in the memtable's layers, in scan order, each once.
struct MemtableKeys {
    /// The layers that have the table, oldest first.
    layers: Vec<Arc<Layer>>,
    ident: u64,
    /// What is left of the range: the side behind the scan moves past each key returned.
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    next: Option<Vec<u8>>,
    done: bool,
}

impl MemtableKeys {
    /// The next key in scan order across the layers (looked up again after each key taken:
    /// the active layer may gain keys meanwhile, all with versions newer than the read
    /// timestamp, which resolve to nothing).
    fn peek(&mut self, forward: bool) -> Option<&Vec<u8>> {
        if self.next.is_none() && !self.done {
            let lower = bound_as_slice(&self.lower);
            let upper = bound_as_slice(&self.upper);
            self.next = self
                .layers
                .iter()
                .filter_map(|layer| layer.next_key(self.ident, lower, upper, forward))
                .reduce(|a, b| match (forward, a <= b) {
                    (true, true) | (false, false) => a,
                    _ => b,
                });
            self.done = self.next.is_none();
        }
        self.next.as_ref()
    }

    fn take(&mut self, forward: bool) -> Vec<u8> {
        let key = self.next.take().expect("peeked first");
        if forward {
            self.lower = Bound::Excluded(key.clone());
        } else {
            self.upper = Bound::Excluded(key.clone());
        }
        key
    }

    /// `key`'s version at `read_ts` in the layers (newest first); `None`: redb decides.
    fn resolve(&self, key: &[u8], read_ts: Timestamp) -> Option<Option<Vec<u8>>> {
        self.layers
            .iter()
            .rev()
            .find_map(|layer| layer.resolve(self.ident, key, read_ts))
    }
}

/// A key and its stored version, read from redb.
type RawEntry = (Vec<u8>, Vec<u8>);

struct ScanState {
    /// `None`: the table is not (yet) in redb.
    range: Option<redb::Range<'static, &'static [u8], &'static [u8]>>,
    /// The next redb entry, read ahead to merge with the memtable's keys.
    peeked: Option<RawEntry>,
    memtable: Option<MemtableKeys>,
    history: Option<Arc<RawTable>>,
    read_ts: Timestamp,
    direction: ScanDirection,
}

impl ScanState {
    fn peek_redb(&mut self) -> Result<Option<&RawEntry>, Error> {
        if self.peeked.is_none() {
            if let Some(range) = self.range.as_mut() {
                let entry = match self.direction {
                    ScanDirection::Forward => range.next(),
                    ScanDirection::Backward => range.next_back(),
                };
                match entry {
                    Some(Ok((key, value))) => {
                        self.peeked = Some((key.value().to_vec(), value.value().to_vec()));
                    }
                    Some(Err(error)) => return Err(storage_error("scanning", error)),
                    None => self.range = None,
                }
            }
        }
        Ok(self.peeked.as_ref())
    }
}

/// Iterates visible key-value pairs of a scan.
pub struct ScanIter {
    state: Option<ScanState>,
}

impl Iterator for ScanIter {
    type Item = Result<(Vec<u8>, Vec<u8>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let state = self.state.as_mut()?;
        let forward = state.direction == ScanDirection::Forward;
        if state.memtable.is_none() && state.peeked.is_none() {
            // Nothing to merge (the memtable has no version in this table): straight from redb.
            let range = state.range.as_mut()?;
            loop {
                let entry = if forward {
                    range.next()
                } else {
                    range.next_back()
                }?;
                let (key, value) = match entry {
                    Ok(pair) => pair,
                    Err(error) => return Some(Err(storage_error("scanning", error))),
                };
                match resolve(
                    state.history.as_deref(),
                    key.value(),
                    value.value(),
                    state.read_ts,
                ) {
                    Ok(Some(payload)) => return Some(Ok((key.value().to_vec(), payload))),
                    Ok(None) => continue,
                    Err(error) => return Some(Err(error)),
                }
            }
        }
        loop {
            let redb_key = match state.peek_redb() {
                Ok(entry) => entry.map(|(key, _)| key.clone()),
                Err(error) => return Some(Err(error)),
            };
            let memtable_key = state
                .memtable
                .as_mut()
                .and_then(|memtable| memtable.peek(forward).cloned());
            let from_memtable = match (&memtable_key, &redb_key) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(memtable), Some(redb)) => {
                    if forward {
                        memtable <= redb
                    } else {
                        memtable >= redb
                    }
                }
            };
            let (key, redb_value) = if from_memtable {
                let memtable = state.memtable.as_mut().expect("a memtable key was peeked");
                let key = memtable.take(forward);
                if let Some(found) = memtable.resolve(&key, state.read_ts) {
                    if redb_key.as_ref() == Some(&key) {
                        state.peeked = None;
                    }
                    match found {
                        Some(value) => return Some(Ok((key, value))),
                        None => continue,
                    }
                }
                if redb_key.as_ref() != Some(&key) {
                    // Only versions newer than the read timestamp, and none in redb.
                    continue;
                }
                let (_, value) = state.peeked.take().expect("peeked above");
                (key, value)
            } else {
                state.peeked.take().expect("peeked above")
            };
            match resolve(state.history.as_deref(), &key, &redb_value, state.read_ts) {
                Ok(Some(payload)) => return Some(Ok((key, payload))),
                Ok(None) => continue,
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

/// The oplog entries of a scan's range in the memtable's layers.
struct MemtableOplog {
    layers: Vec<Arc<Layer>>,
    lower: Bound<u64>,
    upper: Bound<u64>,
    next: Option<(u64, Vec<u8>)>,
    done: bool,
}

impl MemtableOplog {
    fn peek(&mut self, forward: bool) -> Option<u64> {
        if self.next.is_none() && !self.done {
            self.next = self
                .layers
                .iter()
                .filter_map(|layer| layer.next_oplog(self.lower, self.upper, forward))
                .reduce(|a, b| match (forward, a.0 <= b.0) {
                    (true, true) | (false, false) => a,
                    _ => b,
                });
            self.done = self.next.is_none();
        }
        self.next.as_ref().map(|(ts, _)| *ts)
    }

    fn take(&mut self, forward: bool) -> (u64, Vec<u8>) {
        let entry = self.next.take().expect("peeked first");
        if forward {
            self.lower = Bound::Excluded(entry.0);
        } else {
            self.upper = Bound::Excluded(entry.0);
        }
        entry
    }
}

/// Iterates oplog entries: `(timestamp, BSON bytes)`.
pub struct OplogIter {
    range: Option<redb::Range<'static, u64, &'static [u8]>>,
    direction: ScanDirection,
    peeked: Option<(u64, Vec<u8>)>,
    memtable: Option<MemtableOplog>,
}

impl Iterator for OplogIter {
    type Item = Result<(Timestamp, Vec<u8>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let forward = self.direction == ScanDirection::Forward;
        if self.peeked.is_none() {
            if let Some(range) = self.range.as_mut() {
                let entry = if forward {
                    range.next()
                } else {
                    range.next_back()
                };
                match entry {
                    Some(Ok((key, value))) => {
                        self.peeked = Some((key.value(), value.value().to_vec()));
                    }
                    Some(Err(error)) => {
                        return Some(Err(storage_error("reading the oplog", error)));
                    }
                    None => self.range = None,
                }
            }
        }
        let redb_ts = self.peeked.as_ref().map(|(ts, _)| *ts);
        let memtable_ts = self
            .memtable
            .as_mut()
            .and_then(|memtable| memtable.peek(forward));
        let from_memtable = match (memtable_ts, redb_ts) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(memtable), Some(redb)) => {
                if memtable == redb {
                    // A layer being retired: the same entry in both.
                    self.peeked = None;
                }
                if forward {
                    memtable <= redb
                } else {
                    memtable >= redb
                }
            }
        };
        let (ts, bytes) = if from_memtable {
            self.memtable
                .as_mut()
                .expect("a memtable entry was peeked")
                .take(forward)
        } else {
            self.peeked.take().expect("peeked above")
        };
        Some(Ok((Timestamp::from_u64(ts), bytes)))
    }
}
