//! Units of work: staged writes that commit atomically.
//!
//! A [`WriteUnit`] reads at the snapshot it began with (plus its own staged writes) and stages
//! puts, deletes, catalog changes and oplog entries. Staging a key claims it (see `keylocks`):
//! if another unit owns it, or it was committed after this unit's read timestamp, staging fails
//! with WriteConflict (112) and nothing of this unit will be applied.
//!
//! Timestamps: a unit commits at one timestamp per oplog entry (`ts_0 < ts_1 < ...`, consecutive
//! and assigned by the committer). Writes staged before the `k`-th call to [`WriteUnit::append_oplog`]
//! take `ts_k`, so a batch insert writes each document at the timestamp of its own oplog entry;
//! writes staged after the last entry take one more timestamp. A unit with no oplog entries
//! commits at one timestamp.

use crate::CATALOG_IDENT;
use crate::catalog::{CollectionMeta, catalog_key, encode_meta};
use crate::committer::{CommitRequest, Job, StagedWrite};
use crate::completion::Completion;
use crate::config::CommitMode;
use crate::engine::Engine;
use crate::keylocks::{ClaimConflict, ClaimMode, KeyId, OwnerId, SealedValue};
use crate::snapshot::{ReadAt, ScanDirection, Snapshot};
use crate::stats::Counters;
use bson::Document;
use cairn_types::{Error, ErrorCode, Namespace, Timestamp};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// Largest value the engine stores: a 16 MiB document plus room for internal fields.
pub const VALUE_SIZE_MAX_BYTES: usize = cairn_types::limits::BSON_OBJECT_INTERNAL_SIZE_MAX_BYTES;

/// Largest key the engine stores (an encoded `_id` or index key).
pub const KEY_SIZE_MAX_BYTES: usize = 64 * 1024;

/// How long `commit` waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Return once the commit is visible (`j: false`); on disk within `commit_interval_ms`.
    Visible,
    /// Return once the commit is on disk (`j: true`).
    Journaled,
}

/// What a commit got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The first and last commit timestamps of the unit (equal for a one-timestamp unit).
    pub first_ts: Timestamp,
    pub last_ts: Timestamp,
    /// Whether the commit was on disk when `commit` returned.
    pub durable: bool,
}

/// Where the latest staged write of a key lives.
#[derive(Debug)]
struct OverlayEntry {
    value: Option<Vec<u8>>,
    write_index: usize,
}

/// A unit of work. Dropping it without committing aborts it.
pub struct WriteUnit {
    engine: Engine,
    snapshot: Snapshot,
    owner: OwnerId,
    claimed: Vec<KeyId>,
    /// Sealed versions of claimed keys that this unit must read instead of its snapshot.
    bases: BTreeMap<(u64, Vec<u8>), SealedValue>,
    overlay: BTreeMap<(u64, Vec<u8>), OverlayEntry>,
    writes: Vec<StagedWrite>,
    oplog: Vec<Document>,
    catalog_changes: Vec<(Namespace, Option<Arc<CollectionMeta>>, u32)>,
    drop_idents: Vec<(u64, u32)>,
    max_ident: u64,
    explicit_timestamps: Option<Vec<Timestamp>>,
    conflict: Option<(KeyId, ClaimConflict)>,
    finished: bool,
    /// Counted in the engine's units being prepared (which the journal's group commit waits
    /// for) until it is queued for commit or dropped.
    active: bool,
}

impl std::fmt::Debug for WriteUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteUnit")
            .field("read_ts", &self.snapshot.read_timestamp())
            .field("writes", &self.writes.len())
            .field("oplog", &self.oplog.len())
            .finish()
    }
}

impl WriteUnit {
    /// Begins a unit owned by `owner`; `reserved` is a key `owner` already holds (handed over
    /// while it waited) with the sealed version to read it from, released with the unit.
    pub(crate) fn begin(
        engine: Engine,
        owner: OwnerId,
        reserved: Option<(KeyId, Option<SealedValue>)>,
    ) -> WriteUnit {
        engine
            .inner
            .active_units
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let snapshot = Snapshot::open(engine.inner.clone(), ReadAt::Latest)
            .expect("a snapshot at the latest timestamp can always be opened");
        let mut claimed = Vec::new();
        let mut bases = BTreeMap::new();
        if let Some((id, base)) = reserved {
            if let Some(base) = base {
                bases.insert((id.ident, id.key.to_vec()), base);
            }
            claimed.push(id);
        }
        WriteUnit {
            engine,
            snapshot,
            owner,
            claimed,
            bases,
            overlay: BTreeMap::new(),
            writes: Vec::new(),
            oplog: Vec::new(),
            catalog_changes: Vec::new(),
            drop_idents: Vec::new(),
            max_ident: 0,
            explicit_timestamps: None,
            conflict: None,
            finished: false,
            active: true,
        }
    }

    /// This unit's read timestamp.
    pub fn read_timestamp(&self) -> Timestamp {
        self.snapshot.read_timestamp()
    }

    /// The snapshot this unit reads (without its own staged writes).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether anything has been staged.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.oplog.is_empty() && self.drop_idents.is_empty()
    }

    fn slot(&self) -> u32 {
        self.oplog.len() as u32
    }

    /// Reads `key`, seeing this unit's own staged writes.
    pub fn get(&self, ident: u64, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let lookup = (ident, key.to_vec());
        if let Some(entry) = self.overlay.get(&lookup) {
            return Ok(entry.value.clone());
        }
        if let Some(base) = self.bases.get(&lookup) {
            return Ok(base.as_ref().map(|value| value.as_ref().clone()));
        }
        self.snapshot.get(ident, key)
    }

    /// Reads `key` for update: claims it first, so that a concurrent writer of the key makes
    /// this unit conflict now, before it does any work with the value (and a hot document's
    /// queue forms before the work, not after it).
    pub fn get_for_update(&mut self, ident: u64, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.claim(ident, key, ClaimMode::ForUpdate)?;
        self.get(ident, key)
    }

    /// Scans table `ident`, seeing this unit's own staged writes, in key order.
    pub fn scan(
        &self,
        ident: u64,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        direction: ScanDirection,
    ) -> Result<Vec<crate::KeyValue>, Error> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for entry in self.snapshot.scan(ident, range.clone(), direction)? {
            let (key, value) = entry?;
            merged.insert(key, Some(value));
        }
        let lower = match &range.0 {
            Bound::Included(key) => Bound::Included((ident, key.clone())),
            Bound::Excluded(key) => Bound::Excluded((ident, key.clone())),
            Bound::Unbounded => Bound::Included((ident, Vec::new())),
        };
        let within = |entry_ident: u64, key: &Vec<u8>| {
            entry_ident == ident
                && match &range.1 {
                    Bound::Included(end) => key <= end,
                    Bound::Excluded(end) => key < end,
                    Bound::Unbounded => true,
                }
        };
        for ((entry_ident, key), base) in self.bases.range((lower.clone(), Bound::Unbounded)) {
            if !within(*entry_ident, key) {
                break;
            }
            merged.insert(
                key.clone(),
                base.as_ref().map(|value| value.as_ref().clone()),
            );
        }
        for ((entry_ident, key), entry) in self.overlay.range((lower, Bound::Unbounded)) {
            if !within(*entry_ident, key) {
                break;
            }
            merged.insert(key.clone(), entry.value.clone());
        }
        let pairs = merged
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)));
        Ok(match direction {
            ScanDirection::Forward => pairs.collect(),
            ScanDirection::Backward => {
                let mut pairs: Vec<_> = pairs.collect();
                pairs.reverse();
                pairs
            }
        })
    }

    fn claim(&mut self, ident: u64, key: &[u8], mode: ClaimMode) -> Result<(), Error> {
        assert!(!self.finished, "staging into a finished unit of work");
        let id = KeyId::new(ident, key);
        match self
            .engine
            .inner
            .keylocks
            .claim(&id, self.owner, self.read_timestamp(), mode)
        {
            Ok(claimed) => {
                if let Some(base) = claimed.base {
                    self.bases.insert((ident, key.to_vec()), base);
                }
                if claimed.newly {
                    self.claimed.push(id);
                }
                Ok(())
            }
            Err(conflict) => {
                Counters::add(&self.engine.inner.counters.write_conflicts, 1);
                self.conflict = Some((id, conflict));
                Err(Error::new(
                    ErrorCode::WriteConflict,
                    "WriteConflict error: this operation conflicted with another operation. Please retry your operation or multi-document transaction.",
                ))
            }
        }
    }

    fn stage(&mut self, ident: u64, key: &[u8], value: Option<&[u8]>) -> Result<(), Error> {
        self.check_failed()?;
        self.claim(ident, key, ClaimMode::Blind)?;
        let slot = self.slot();
        let overlay_key = (ident, key.to_vec());
        if let Some(entry) = self.overlay.get_mut(&overlay_key) {
            if self.writes[entry.write_index].slot == slot {
                self.writes[entry.write_index].value = value.map(<[u8]>::to_vec);
                entry.value = value.map(<[u8]>::to_vec);
                return Ok(());
            }
        }
        self.writes.push(StagedWrite {
            ident,
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            slot,
        });
        self.overlay.insert(
            overlay_key,
            OverlayEntry {
                value: value.map(<[u8]>::to_vec),
                write_index: self.writes.len() - 1,
            },
        );
        Ok(())
    }

    fn check_failed(&self) -> Result<(), Error> {
        match &*self.engine.inner.failure.lock() {
            Some(error) => Err(Error::new(
                error.code,
                format!(
                    "the storage engine failed and accepts no writes: {}",
                    error.message
                ),
            )),
            None => Ok(()),
        }
    }

    /// Stages `key = value` in table `ident`.
    /// Values over [`VALUE_SIZE_MAX_BYTES`] are refused with BSONObjectTooLarge (10334), keys
    /// over [`KEY_SIZE_MAX_BYTES`] with KeyTooLong (17280).
    pub fn put(&mut self, ident: u64, key: &[u8], value: &[u8]) -> Result<(), Error> {
        assert_ne!(
            ident, CATALOG_IDENT,
            "the catalog is changed through the catalog methods"
        );
        if value.len() > VALUE_SIZE_MAX_BYTES {
            return Err(Error::new(
                ErrorCode::BSONObjectTooLarge,
                format!(
                    "value of {} bytes is over the limit of {VALUE_SIZE_MAX_BYTES} bytes",
                    value.len()
                ),
            ));
        }
        if key.len() > KEY_SIZE_MAX_BYTES {
            return Err(Error::new(
                ErrorCode::KeyTooLong,
                format!(
                    "key of {} bytes is over the limit of {KEY_SIZE_MAX_BYTES} bytes",
                    key.len()
                ),
            ));
        }
        self.stage(ident, key, Some(value))
    }

    /// Stages the removal of `key` from table `ident`; returns whether it existed.
    pub fn delete(&mut self, ident: u64, key: &[u8]) -> Result<bool, Error> {
        assert_ne!(
            ident, CATALOG_IDENT,
            "the catalog is changed through the catalog methods"
        );
        let existed = self.get(ident, key)?.is_some();
        if existed {
            self.stage(ident, key, None)?;
        } else {
            // Still claim it: a concurrent insert of the same key must conflict with this
            // unit's decision that the key is absent.
            self.claim(ident, key, ClaimMode::Blind)?;
        }
        Ok(existed)
    }

    /// Claims `key` without writing it: a concurrent writer of the key conflicts with this unit.
    /// (For example, a unique-index check that found the key absent.)
    pub fn claim_key(&mut self, ident: u64, key: &[u8]) -> Result<(), Error> {
        self.claim(ident, key, ClaimMode::Blind)
    }

    /// Appends an oplog entry; the committer sets its `ts` field. Writes staged so far (since the
    /// previous entry) commit at this entry's timestamp.
    pub fn append_oplog(&mut self, entry: Document) {
        assert!(!self.finished, "staging into a finished unit of work");
        self.oplog.push(entry);
    }

    /// Commits at the given timestamps instead of assigned ones (a secondary applying the
    /// primary's oplog): one per slot, increasing, all after the newest commit.
    pub fn set_commit_timestamps(&mut self, timestamps: Vec<Timestamp>) {
        assert!(
            timestamps.windows(2).all(|pair| pair[0] < pair[1]),
            "timestamps must increase"
        );
        self.explicit_timestamps = Some(timestamps);
    }

    /// The collection at `ns`, seeing this unit's own catalog changes.
    pub fn collection(&self, ns: &Namespace) -> Option<Arc<CollectionMeta>> {
        if let Some((_, meta, _)) = self
            .catalog_changes
            .iter()
            .rev()
            .find(|(changed, _, _)| changed == ns)
        {
            return meta.clone();
        }
        self.snapshot.collection(ns)
    }

    fn stage_catalog(&mut self, ns: &Namespace, meta: Option<CollectionMeta>) -> Result<(), Error> {
        let key = catalog_key(ns);
        let value = meta.as_ref().map(encode_meta);
        self.stage(CATALOG_IDENT, &key, value.as_deref())?;
        let slot = self.slot();
        self.catalog_changes
            .push((ns.clone(), meta.map(Arc::new), slot));
        Ok(())
    }

    /// Allocates a table ident for a collection or index created in this unit.
    pub fn allocate_ident(&mut self) -> u64 {
        let ident = self.engine.allocate_ident();
        self.max_ident = self.max_ident.max(ident);
        ident
    }

    /// Creates a collection. NamespaceExists (48) when it exists.
    pub fn create_collection(
        &mut self,
        ns: &Namespace,
        options: Document,
    ) -> Result<Arc<CollectionMeta>, Error> {
        ns.validate()?;
        if self.collection(ns).is_some() {
            return Err(Error::new(
                ErrorCode::NamespaceExists,
                format!("Collection {ns} already exists."),
            ));
        }
        let meta = CollectionMeta {
            ns: ns.clone(),
            uuid: bson::Uuid::new(),
            ident: self.allocate_ident(),
            options,
            indexes: Vec::new(),
        };
        self.stage_catalog(ns, Some(meta.clone()))?;
        Ok(Arc::new(meta))
    }

    /// Replaces a collection's catalog entry (for index changes). The namespace must exist.
    pub fn update_collection(&mut self, meta: CollectionMeta) -> Result<(), Error> {
        if self.collection(&meta.ns).is_none() {
            return Err(Error::new(
                ErrorCode::NamespaceNotFound,
                format!("ns not found: {}", meta.ns),
            ));
        }
        for index in &meta.indexes {
            self.max_ident = self.max_ident.max(index.ident);
        }
        let ns = meta.ns.clone();
        self.stage_catalog(&ns, Some(meta))
    }

    /// Drops a collection and schedules its tables for removal once no snapshot can see them.
    pub fn drop_collection(&mut self, ns: &Namespace) -> Result<Arc<CollectionMeta>, Error> {
        let Some(meta) = self.collection(ns) else {
            return Err(Error::new(ErrorCode::NamespaceNotFound, "ns not found"));
        };
        self.stage_catalog(ns, None)?;
        let slot = self.slot();
        for ident in meta.idents() {
            self.drop_idents.push((ident, slot));
        }
        Ok(meta)
    }

    /// Schedules one table (a dropped index) for removal once no snapshot can see it.
    pub fn drop_ident(&mut self, ident: u64) {
        let slot = self.slot();
        self.drop_idents.push((ident, slot));
    }

    /// Renames a collection, keeping its UUID, tables and indexes.
    pub fn rename_collection(&mut self, from: &Namespace, to: &Namespace) -> Result<(), Error> {
        to.validate()?;
        let Some(meta) = self.collection(from) else {
            return Err(Error::new(
                ErrorCode::NamespaceNotFound,
                "source namespace does not exist",
            ));
        };
        if self.collection(to).is_some() {
            return Err(Error::new(
                ErrorCode::NamespaceExists,
                "target namespace exists",
            ));
        }
        let mut renamed = (*meta).clone();
        renamed.ns = to.clone();
        self.stage_catalog(from, None)?;
        self.stage_catalog(to, Some(renamed))
    }

    /// Takes the conflict that made the last staging call fail, if any.
    pub(crate) fn take_conflict(&mut self) -> Option<(KeyId, ClaimConflict)> {
        self.conflict.take()
    }

    pub(crate) fn owner(&self) -> OwnerId {
        self.owner
    }

    /// Commits atomically; returns once visible (or durable, for `Journaled`).
    pub fn commit(mut self, durability: Durability) -> Result<CommitInfo, Error> {
        self.check_failed()?;
        self.finished = true;
        self.deactivate();
        if self.is_empty() && self.catalog_changes.is_empty() {
            // Nothing to write: release claims, and for j:true wait for what is visible to be
            // durable (MongoDB's j:true on a no-op write waits for the journal).
            let visible = self.engine.visible_timestamp();
            self.release_claims();
            let durable = match durability {
                Durability::Journaled => {
                    self.engine.flush()?;
                    true
                }
                Durability::Visible => false,
            };
            return Ok(CommitInfo {
                first_ts: visible,
                last_ts: visible,
                durable,
            });
        }
        let max_write_slot = self
            .writes
            .iter()
            .map(|write| write.slot + 1)
            .max()
            .unwrap_or(0);
        let max_catalog_slot = self
            .catalog_changes
            .iter()
            .map(|(_, _, slot)| slot + 1)
            .max()
            .unwrap_or(0);
        let max_drop_slot = self
            .drop_idents
            .iter()
            .map(|(_, slot)| slot + 1)
            .max()
            .unwrap_or(0);
        let slot_count = (self.oplog.len() as u32)
            .max(max_write_slot)
            .max(max_catalog_slot)
            .max(max_drop_slot)
            .max(1);
        let explicit_count = self.explicit_timestamps.as_ref().map(Vec::len);
        if let Some(count) = explicit_count.filter(|count| *count != slot_count as usize) {
            self.release_claims();
            return Err(Error::new(
                ErrorCode::BadValue,
                format!("{count} commit timestamps for {slot_count} slots"),
            ));
        }
        // Written keys are sealed when the commit is queued (early release, see `keylocks`),
        // except catalog keys (the catalog is read through its mirror, not through bases) and
        // units with explicit timestamps (a secondary applying: such a commit may be refused
        // alone, so nothing may build on it). Other claimed keys are held until visible.
        let may_seal = self.explicit_timestamps.is_none()
            && self.engine.inner.config.commit_mode == CommitMode::Background;
        let mut sealed = Vec::new();
        let mut sealed_ids = Vec::new();
        let mut held = Vec::new();
        for id in std::mem::take(&mut self.claimed) {
            let written = self.overlay.get(&(id.ident, id.key.to_vec()));
            match written {
                Some(entry) if may_seal && id.ident != CATALOG_IDENT => {
                    sealed.push((id.clone(), entry.value.clone().map(Arc::new)));
                    sealed_ids.push(id);
                }
                _ => held.push(id),
            }
        }
        let done = Completion::new();
        let owner = self.owner;
        let request = CommitRequest {
            owner,
            writes: std::mem::take(&mut self.writes),
            oplog: std::mem::take(&mut self.oplog),
            slot_count,
            explicit_timestamps: self.explicit_timestamps.take(),
            durability,
            sealed: sealed_ids,
            claimed: held,
            catalog_changes: std::mem::take(&mut self.catalog_changes),
            drop_idents: std::mem::take(&mut self.drop_idents),
            max_ident: self.max_ident,
            done: done.clone(),
        };
        let keylocks = &self.engine.inner.keylocks;
        self.engine.run_job_then(Job::Commit(request), &done, || {
            keylocks.seal(&sealed, owner)
        })
    }

    fn deactivate(&mut self) {
        if std::mem::replace(&mut self.active, false) {
            self.engine
                .inner
                .active_units
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    fn release_claims(&mut self) {
        let claimed = std::mem::take(&mut self.claimed);
        if !claimed.is_empty() {
            self.engine
                .inner
                .keylocks
                .release(&claimed, self.owner, None, Timestamp::ZERO);
        }
    }

    /// Discards everything staged.
    pub fn abort(mut self) {
        self.finished = true;
        self.release_claims();
    }
}

impl Drop for WriteUnit {
    fn drop(&mut self) {
        self.deactivate();
        self.release_claims();
    }
}
