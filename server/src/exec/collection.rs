//! A collection as the executor sees it: documents clustered by the keystring of `_id`, and
//! secondary index entries kept in the same unit of work as the document they index.
//!
//! Index entries: a unique index maps `key` to the document's `_id` key; a non-unique index maps
//! `key ++ _id key` to the `_id` key (so equal keys of different documents are distinct entries
//! and one range covers them all). Invariants: after every committed unit, each document has
//! exactly the entries its index keys give (in ready and building indexes alike), and no unique
//! index holds two documents under one key. An index's multikey paths only grow; they are
//! written to the catalog in the unit that first needed them.

use bson::{Bson, Document, doc};
use cairn_query::Matcher;
use cairn_query::index_keys::{IndexKey, KeyPattern};
use cairn_query::planner::IndexDescriptor;
use cairn_storage::{CollectionMeta, IndexMeta, Snapshot, WriteUnit};
use cairn_types::{Error, ErrorCode, Result, keystring, limits};
use std::collections::BTreeSet;

/// Per key field, the path components along which some document had an array.
pub type MultikeyPaths = Vec<BTreeSet<usize>>;

/// A secondary index, parsed.
#[derive(Debug, Clone)]
pub struct Index {
    pub meta: IndexMeta,
    pub pattern: KeyPattern,
    pub sparse: bool,
    pub partial: Option<Matcher>,
    pub multikey: MultikeyPaths,
}

impl Index {
    pub fn load(meta: &IndexMeta) -> Result<Index> {
        let pattern = KeyPattern::parse(&meta.key)?;
        let sparse = meta.spec.get_bool("sparse").unwrap_or(false);
        let partial = match meta.spec.get_document("partialFilterExpression") {
            Ok(filter) => Some(Matcher::parse(filter)?),
            Err(_) => None,
        };
        let multikey = decode_multikey_paths(&pattern, &meta.multikey_paths);
        Ok(Index {
            meta: meta.clone(),
            pattern,
            sparse,
            partial,
            multikey,
        })
    }

    /// The keys of `document` in this index (none when sparse/partial leave it out).
    pub fn keys(&self, document: &Document) -> Result<(Vec<IndexKey>, MultikeyPaths)> {
        let keys = self
            .pattern
            .keys_for_index(document, self.sparse, self.partial.as_ref())?;
        Ok((keys.keys, keys.multikey_paths))
    }

    /// The storage key of one entry.
    pub fn entry_key(&self, key: &IndexKey, id_key: &[u8]) -> Vec<u8> {
        if self.meta.unique {
            key.bytes.clone()
        } else {
            let mut entry = Vec::with_capacity(key.bytes.len() + id_key.len());
            entry.extend_from_slice(&key.bytes);
            entry.extend_from_slice(id_key);
            entry
        }
    }

    /// What the planner needs to know of this index.
    pub fn descriptor(&self) -> IndexDescriptor {
        let mut descriptor = IndexDescriptor::new(&self.meta.name, self.meta.key.clone());
        descriptor.unique = self.meta.unique;
        descriptor.sparse = self.sparse;
        descriptor.partial_filter = self
            .meta
            .spec
            .get_document("partialFilterExpression")
            .ok()
            .cloned();
        descriptor.multikey_paths = Some(self.multikey.clone());
        descriptor
    }
}

/// Multikey paths as the catalog stores them: the dotted prefixes that held arrays.
fn encode_multikey_paths(pattern: &KeyPattern, paths: &MultikeyPaths) -> Vec<String> {
    let mut prefixes = BTreeSet::new();
    for (field, components) in pattern.fields.iter().zip(paths) {
        let parts = field.path.parts();
        for &component in components {
            prefixes.insert(parts[..=component].join("."));
        }
    }
    prefixes.into_iter().collect()
}

fn decode_multikey_paths(pattern: &KeyPattern, prefixes: &[String]) -> MultikeyPaths {
    pattern
        .fields
        .iter()
        .map(|field| {
            let parts = field.path.parts();
            (0..parts.len())
                .filter(|&index| prefixes.contains(&parts[..=index].join(".")))
                .collect()
        })
        .collect()
}

/// The storage key of an `_id` value, with MongoDB's rules for what `_id` may be.
pub fn id_key(id: &Bson) -> Result<Vec<u8>> {
    match id {
        Bson::Array(_) => Err(Error::new(
            ErrorCode::InvalidIdField,
            "The '_id' value cannot be of type array",
        )),
        Bson::RegularExpression(_) => Err(Error::new(
            ErrorCode::InvalidIdField,
            "The '_id' value cannot be of type regex",
        )),
        Bson::Undefined => Err(Error::new(
            ErrorCode::InvalidIdField,
            "can't use a undefined for _id",
        )),
        Bson::Document(inner) if inner.keys().any(|key| key.starts_with('$')) => Err(Error::new(
            ErrorCode::DollarPrefixedFieldName,
            "_id fields may not contain '$'-prefixed fields",
        )),
        other => Ok(keystring::encode(other)),
    }
}

/// The `_id` key a filter asks for by plain equality (`{_id: <value>}`), if that is all it
/// asks: the express path (MongoDB's IDHACK / EXPRESS_IXSCAN) reads that one key instead of
/// planning. Operator documents, regexes, arrays and undefined go through the planner.
pub fn id_equality_key(filter: &Document) -> Option<Vec<u8>> {
    if filter.len() != 1 {
        return None;
    }
    let value = filter.get("_id")?;
    match value {
        Bson::Document(inner) if inner.keys().next().is_some_and(|key| key.starts_with('$')) => {
            None
        }
        Bson::RegularExpression(_) | Bson::Array(_) | Bson::Undefined => None,
        other => id_key(other).ok(),
    }
}

/// The `_id` key of a stored document.
pub fn document_id_key(document: &Document) -> Result<Vec<u8>> {
    match document.get("_id") {
        Some(id) => id_key(id),
        None => Err(Error::internal("a stored document has no _id")),
    }
}

/// Serializes a document for storage, enforcing the size and nesting limits.
pub fn encode_document(document: &Document) -> Result<Vec<u8>> {
    let bytes = bson::serialize_to_vec(document).map_err(|error| {
        Error::new(
            ErrorCode::BadValue,
            format!("document does not serialize: {error}"),
        )
    })?;
    limits::check_document(document, bytes.len())?;
    Ok(bytes)
}

pub fn decode_document(bytes: &[u8]) -> Result<Document> {
    bson::deserialize_from_slice(bytes).map_err(|error| {
        Error::new(
            ErrorCode::DataCorruptionDetected,
            format!("a stored document is not BSON: {error}"),
        )
    })
}

/// Reads one document by `_id` key in a snapshot.
pub fn fetch(snapshot: &Snapshot, ident: u64, id_key: &[u8]) -> Result<Option<Document>> {
    snapshot
        .get(ident, id_key)?
        .map(|bytes| decode_document(&bytes))
        .transpose()
}

/// A collection open for writing in one unit of work.
#[derive(Debug, Clone)]
pub struct Collection {
    pub meta: CollectionMeta,
    pub indexes: Vec<Index>,
    /// Multikey paths grew: the catalog entry must be rewritten before commit.
    catalog_dirty: bool,
}

impl Collection {
    pub fn load(meta: &CollectionMeta) -> Result<Collection> {
        let indexes = meta
            .indexes
            .iter()
            .map(Index::load)
            .collect::<Result<Vec<_>>>()?;
        Ok(Collection {
            meta: meta.clone(),
            indexes,
            catalog_dirty: false,
        })
    }

    pub fn ns(&self) -> String {
        self.meta.ns.to_string()
    }

    /// The planner's view: the clustered `_id_` index and every ready secondary index.
    pub fn descriptors(&self) -> Vec<IndexDescriptor> {
        let mut id_index = IndexDescriptor::new("_id_", doc! {"_id": 1});
        id_index.unique = true;
        id_index.multikey_paths = Some(vec![BTreeSet::new()]);
        let mut descriptors = vec![id_index];
        descriptors.extend(
            self.indexes
                .iter()
                .filter(|index| index.meta.ready)
                .map(Index::descriptor),
        );
        descriptors
    }

    pub fn index(&self, name: &str) -> Option<&Index> {
        self.indexes.iter().find(|index| index.meta.name == name)
    }

    fn duplicate_id(&self, id: &Bson) -> Error {
        let pattern = KeyPattern::parse(&doc! {"_id": 1}).expect("the _id pattern parses");
        pattern.duplicate_key_error(&self.ns(), "_id_", std::slice::from_ref(id))
    }

    fn note_multikey(&mut self, index_position: usize, found: &MultikeyPaths) {
        let index = &mut self.indexes[index_position];
        for (known, new) in index.multikey.iter_mut().zip(found) {
            for component in new {
                if known.insert(*component) {
                    self.catalog_dirty = true;
                }
            }
        }
    }

    fn add_entries(
        &mut self,
        unit: &mut WriteUnit,
        position: usize,
        keys: &[IndexKey],
        id_key: &[u8],
    ) -> Result<()> {
        let index = &self.indexes[position];
        for key in keys {
            let entry = index.entry_key(key, id_key);
            if index.meta.unique {
                if let Some(existing) = unit.get(index.meta.ident, &entry)? {
                    if existing != id_key {
                        return Err(index.pattern.duplicate_key_error(
                            &self.ns(),
                            &index.meta.name,
                            &key.values,
                        ));
                    }
                }
            }
            unit.put(index.meta.ident, &entry, id_key)?;
        }
        Ok(())
    }

    fn remove_entries(
        &self,
        unit: &mut WriteUnit,
        position: usize,
        keys: &[IndexKey],
        id_key: &[u8],
    ) -> Result<()> {
        let index = &self.indexes[position];
        for key in keys {
            let entry = index.entry_key(key, id_key);
            if index.meta.unique {
                // Only the entry that points at this document.
                match unit.get(index.meta.ident, &entry)? {
                    Some(existing) if existing == id_key => {
                        unit.delete(index.meta.ident, &entry)?;
                    }
                    _ => {}
                }
            } else {
                unit.delete(index.meta.ident, &entry)?;
            }
        }
        Ok(())
    }

    /// Inserts a document that has an `_id`. DuplicateKey (11000) when the `_id` or a unique
    /// index key is taken.
    pub fn insert(&mut self, unit: &mut WriteUnit, document: &Document) -> Result<()> {
        let id = document
            .get("_id")
            .ok_or_else(|| Error::internal("insert without _id"))?;
        let id_key = id_key(id)?;
        let bytes = encode_document(document)?;
        if unit.get(self.meta.ident, &id_key)?.is_some() {
            return Err(self.duplicate_id(id));
        }
        unit.put(self.meta.ident, &id_key, &bytes)?;
        for position in 0..self.indexes.len() {
            let (keys, multikey) = self.indexes[position].keys(document)?;
            self.note_multikey(position, &multikey);
            self.add_entries(unit, position, &keys, &id_key)?;
        }
        Ok(())
    }

    /// Replaces `old` by `new` (same `_id`), changing only the index entries that differ.
    pub fn update(&mut self, unit: &mut WriteUnit, old: &Document, new: &Document) -> Result<()> {
        let id_key = document_id_key(old)?;
        assert_eq!(id_key, document_id_key(new)?, "an update never changes _id");
        let bytes = encode_document(new)?;
        unit.put(self.meta.ident, &id_key, &bytes)?;
        for position in 0..self.indexes.len() {
            let (old_keys, _) = self.indexes[position].keys(old)?;
            let (new_keys, multikey) = self.indexes[position].keys(new)?;
            self.note_multikey(position, &multikey);
            let old_set: BTreeSet<&Vec<u8>> = old_keys.iter().map(|key| &key.bytes).collect();
            let new_set: BTreeSet<&Vec<u8>> = new_keys.iter().map(|key| &key.bytes).collect();
            let removed: Vec<IndexKey> = old_keys
                .iter()
                .filter(|key| !new_set.contains(&key.bytes))
                .cloned()
                .collect();
            let added: Vec<IndexKey> = new_keys
                .iter()
                .filter(|key| !old_set.contains(&key.bytes))
                .cloned()
                .collect();
            self.remove_entries(unit, position, &removed, &id_key)?;
            self.add_entries(unit, position, &added, &id_key)?;
        }
        Ok(())
    }

    /// Deletes a stored document and its index entries.
    pub fn delete(&mut self, unit: &mut WriteUnit, document: &Document) -> Result<()> {
        let id_key = document_id_key(document)?;
        unit.delete(self.meta.ident, &id_key)?;
        for position in 0..self.indexes.len() {
            let (keys, _) = self.indexes[position].keys(document)?;
            self.remove_entries(unit, position, &keys, &id_key)?;
        }
        Ok(())
    }

    /// Adds one document's entries to one index (an index build).
    pub fn index_document(
        &mut self,
        unit: &mut WriteUnit,
        position: usize,
        document: &Document,
    ) -> Result<()> {
        let id_key = document_id_key(document)?;
        let (keys, multikey) = self.indexes[position].keys(document)?;
        self.note_multikey(position, &multikey);
        self.add_entries(unit, position, &keys, &id_key)
    }

    /// Writes grown multikey paths to the catalog (call before committing the unit).
    pub fn save_catalog(&mut self, unit: &mut WriteUnit) -> Result<()> {
        if !self.catalog_dirty {
            return Ok(());
        }
        let mut meta = unit
            .collection(&self.meta.ns)
            .map(|current| (*current).clone())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::NamespaceNotFound,
                    format!("collection {} was dropped", self.meta.ns),
                )
            })?;
        for stored in &mut meta.indexes {
            if let Some(index) = self
                .indexes
                .iter()
                .find(|index| index.meta.ident == stored.ident)
            {
                let mut paths: BTreeSet<String> = stored.multikey_paths.iter().cloned().collect();
                paths.extend(encode_multikey_paths(&index.pattern, &index.multikey));
                stored.multikey_paths = paths.into_iter().collect();
            }
        }
        unit.update_collection(meta.clone())?;
        self.meta = meta;
        self.catalog_dirty = false;
        Ok(())
    }
}

/// Parsed collections by table ident, so that a command does not parse key patterns and
/// partial filters again: an entry is reused while its catalog entry is the same version (the
/// catalog mirror hands out one `Arc` per version).
#[derive(Debug, Default)]
pub struct CollectionCache {
    entries: parking_lot::Mutex<std::collections::HashMap<u64, CachedCollection>>,
}

/// A catalog version and the collection parsed from it.
type CachedCollection = (std::sync::Arc<CollectionMeta>, std::sync::Arc<Collection>);

/// Entries the cache holds before it starts over (collections are few; this bounds the
/// leftovers of dropped ones).
const COLLECTION_CACHE_ENTRIES_MAX: usize = 10_000;

impl CollectionCache {
    /// The parsed collection for this catalog version.
    pub fn get(&self, meta: &std::sync::Arc<CollectionMeta>) -> Result<std::sync::Arc<Collection>> {
        if let Some((cached_meta, collection)) = self.entries.lock().get(&meta.ident) {
            if std::sync::Arc::ptr_eq(cached_meta, meta) {
                return Ok(collection.clone());
            }
        }
        let collection = std::sync::Arc::new(Collection::load(meta)?);
        let mut entries = self.entries.lock();
        if entries.len() >= COLLECTION_CACHE_ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(meta.ident, (meta.clone(), collection.clone()));
        Ok(collection)
    }

    /// A copy to write through (it records multikey paths as it goes).
    pub fn for_writing(&self, meta: &std::sync::Arc<CollectionMeta>) -> Result<Collection> {
        Ok((*self.get(meta)?).clone())
    }
}

/// Checks a document a user inserts or replaces with: top-level field names may not start with
/// `$`, and `_id` must be a legal `_id`.
pub fn check_user_document(document: &Document) -> Result<()> {
    for key in document.keys() {
        if key.starts_with('$') {
            return Err(Error::new(
                ErrorCode::BadValue,
                format!("Document can't have $ prefixed field names: {key}"),
            ));
        }
    }
    if let Some(id) = document.get("_id") {
        id_key(id)?;
    }
    Ok(())
}

/// Puts `_id` first, generating an ObjectId when missing (MongoDB stores `_id` first).
pub fn with_id_first(document: &Document) -> Document {
    let mut result = Document::new();
    match document.get("_id") {
        Some(id) => result.insert("_id", id.clone()),
        None => result.insert("_id", bson::oid::ObjectId::new()),
    };
    for (key, value) in document {
        if key != "_id" {
            result.insert(key.clone(), value.clone());
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multikey_paths_round_trip_through_the_catalog_form() {
        let pattern = KeyPattern::parse(&doc! {"a.b.c": 1, "d": -1}).unwrap();
        let paths: MultikeyPaths = vec![BTreeSet::from([0, 2]), BTreeSet::from([0])];
        let encoded = encode_multikey_paths(&pattern, &paths);
        assert_eq!(
            encoded,
            vec!["a".to_owned(), "a.b.c".to_owned(), "d".to_owned()]
        );
        assert_eq!(decode_multikey_paths(&pattern, &encoded), paths);
    }

    #[test]
    fn id_equality_is_recognised_only_when_plain() {
        assert_eq!(
            id_equality_key(&doc! {"_id": 5}),
            Some(keystring::encode(&Bson::Int32(5)))
        );
        assert_eq!(
            id_equality_key(&doc! {"_id": {"a": 1}}),
            Some(keystring::encode(&Bson::Document(doc! {"a": 1})))
        );
        assert_eq!(id_equality_key(&doc! {"_id": {"$gt": 5}}), None);
        assert_eq!(id_equality_key(&doc! {"_id": [1]}), None);
        assert_eq!(id_equality_key(&doc! {"_id": 5, "a": 1}), None);
        assert_eq!(id_equality_key(&doc! {"a": 5}), None);
    }

    #[test]
    fn id_rules() {
        assert_eq!(
            id_key(&Bson::Array(vec![])).unwrap_err().code,
            ErrorCode::InvalidIdField
        );
        assert!(id_key(&Bson::Int32(1)).is_ok());
        assert_eq!(
            id_key(&Bson::Int32(1)).unwrap(),
            id_key(&Bson::Double(1.0)).unwrap()
        );
        let moved = with_id_first(&doc! {"a": 1, "_id": 2});
        assert_eq!(moved.keys().next().unwrap(), "_id");
        assert!(with_id_first(&doc! {"a": 1}).get_object_id("_id").is_ok());
        assert!(check_user_document(&doc! {"$set": 1}).is_err());
        assert!(check_user_document(&doc! {"a": {"$b": 1}}).is_ok());
    }
}
