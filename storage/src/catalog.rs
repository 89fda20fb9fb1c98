//! The catalog: collections (each with a UUID and a table ident) and their index definitions.
//!
//! The catalog is the versioned table [`crate::CATALOG_IDENT`], keyed by the keystring of the
//! namespace, so creating, dropping and renaming are timestamped writes like any other and a
//! snapshot sees the catalog as of its read timestamp. [`CatalogMirror`] keeps every live version
//! in memory for lookups; it is updated by the committer before a commit becomes visible and
//! reloaded from disk after recovery.
//!
//! The `_id` index is the collection's own table (documents are clustered by the keystring of
//! `_id`), so it has no entry here; callers list it as `_id_`.

use bson::{Bson, Document, doc};
use cairn_types::{Error, ErrorCode, Namespace, Timestamp};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// A collection as the catalog records it.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionMeta {
    pub ns: Namespace,
    pub uuid: bson::Uuid,
    /// The table holding the documents, keyed by the keystring of `_id`.
    pub ident: u64,
    /// Options given to `create` (capped, validator, ...), as given.
    pub options: Document,
    /// Secondary indexes (not `_id`).
    pub indexes: Vec<IndexMeta>,
}

/// A secondary index as the catalog records it.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexMeta {
    pub name: String,
    /// The key pattern, e.g. `{a: 1, b: -1}`.
    pub key: Document,
    pub unique: bool,
    /// The table holding the index entries.
    pub ident: u64,
    /// False while the index is being built.
    pub ready: bool,
    /// Key-pattern paths along which some document had an array.
    pub multikey_paths: Vec<String>,
    /// The full specification as given to createIndexes (sparse, partialFilterExpression, ...).
    pub spec: Document,
}

impl CollectionMeta {
    pub fn index(&self, name: &str) -> Option<&IndexMeta> {
        self.indexes.iter().find(|index| index.name == name)
    }

    /// Every ident this collection owns: its table and its index tables.
    pub fn idents(&self) -> Vec<u64> {
        let mut idents = vec![self.ident];
        idents.extend(self.indexes.iter().map(|index| index.ident));
        idents
    }

    pub fn to_document(&self) -> Document {
        doc! {
            "ns": self.ns.to_string(),
            "uuid": self.uuid,
            "ident": self.ident as i64,
            "options": self.options.clone(),
            "indexes": self.indexes.iter().map(|index| Bson::Document(index.to_document())).collect::<Vec<_>>(),
        }
    }

    pub fn from_document(document: &Document) -> Result<CollectionMeta, Error> {
        let corrupt = |what: &str| {
            Error::new(
                ErrorCode::DataCorruptionDetected,
                format!("catalog entry: bad {what}"),
            )
        };
        let ns = Namespace::parse(document.get_str("ns").map_err(|_| corrupt("ns"))?)?;
        let uuid = match document.get("uuid") {
            Some(Bson::Binary(binary)) => bson::Uuid::from_bytes(
                binary
                    .bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("uuid"))?,
            ),
            _ => return Err(corrupt("uuid")),
        };
        let ident = document.get_i64("ident").map_err(|_| corrupt("ident"))? as u64;
        let options = document
            .get_document("options")
            .map_err(|_| corrupt("options"))?
            .clone();
        let mut indexes = Vec::new();
        for entry in document
            .get_array("indexes")
            .map_err(|_| corrupt("indexes"))?
        {
            match entry {
                Bson::Document(index) => indexes.push(IndexMeta::from_document(index)?),
                _ => return Err(corrupt("index")),
            }
        }
        Ok(CollectionMeta {
            ns,
            uuid,
            ident,
            options,
            indexes,
        })
    }
}

impl IndexMeta {
    pub fn to_document(&self) -> Document {
        doc! {
            "name": self.name.clone(),
            "key": self.key.clone(),
            "unique": self.unique,
            "ident": self.ident as i64,
            "ready": self.ready,
            "multikeyPaths": self.multikey_paths.clone(),
            "spec": self.spec.clone(),
        }
    }

    pub fn from_document(document: &Document) -> Result<IndexMeta, Error> {
        let corrupt = |what: &str| {
            Error::new(
                ErrorCode::DataCorruptionDetected,
                format!("catalog index entry: bad {what}"),
            )
        };
        let multikey_paths = document
            .get_array("multikeyPaths")
            .map_err(|_| corrupt("multikeyPaths"))?
            .iter()
            .map(|path| {
                path.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| corrupt("multikeyPaths"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IndexMeta {
            name: document
                .get_str("name")
                .map_err(|_| corrupt("name"))?
                .to_owned(),
            key: document
                .get_document("key")
                .map_err(|_| corrupt("key"))?
                .clone(),
            unique: document.get_bool("unique").map_err(|_| corrupt("unique"))?,
            ident: document.get_i64("ident").map_err(|_| corrupt("ident"))? as u64,
            ready: document.get_bool("ready").map_err(|_| corrupt("ready"))?,
            multikey_paths,
            spec: document
                .get_document("spec")
                .map_err(|_| corrupt("spec"))?
                .clone(),
        })
    }
}

/// The catalog key of a namespace: the keystring of its full name (prefix-free).
pub(crate) fn catalog_key(ns: &Namespace) -> Vec<u8> {
    cairn_types::keystring::encode(&Bson::String(ns.to_string()))
}

/// Encodes a catalog value.
pub(crate) fn encode_meta(meta: &CollectionMeta) -> Vec<u8> {
    bson::serialize_to_vec(&meta.to_document()).expect("catalog entries serialize")
}

pub(crate) fn decode_meta(bytes: &[u8]) -> Result<CollectionMeta, Error> {
    let document = bson::deserialize_from_slice::<Document>(bytes).map_err(|error| {
        Error::new(
            ErrorCode::DataCorruptionDetected,
            format!("catalog entry is not BSON: {error}"),
        )
    })?;
    CollectionMeta::from_document(&document)
}

type Versions = Vec<(Timestamp, Option<Arc<CollectionMeta>>)>;

/// Every live version of every catalog entry, in memory.
#[derive(Debug, Default, Clone)]
pub(crate) struct CatalogMirror {
    /// Keyed by the full namespace; versions in ascending timestamp order.
    entries: BTreeMap<String, Versions>,
}

impl CatalogMirror {
    /// The collection at `ns` as of `at`.
    pub(crate) fn lookup(&self, ns: &Namespace, at: Timestamp) -> Option<Arc<CollectionMeta>> {
        let versions = self.entries.get(&ns.to_string())?;
        visible(versions, at)
    }

    /// Every collection as of `at`, in namespace order.
    pub(crate) fn list(&self, at: Timestamp) -> Vec<Arc<CollectionMeta>> {
        self.entries
            .values()
            .filter_map(|versions| visible(versions, at))
            .collect()
    }

    /// Records a committed version. Versions of one entry arrive in timestamp order.
    pub(crate) fn apply(
        &mut self,
        ns: &Namespace,
        ts: Timestamp,
        meta: Option<Arc<CollectionMeta>>,
    ) {
        let versions = self.entries.entry(ns.to_string()).or_default();
        if let Some((last, _)) = versions.last() {
            assert!(
                *last < ts,
                "catalog versions must be applied in timestamp order"
            );
        }
        versions.push((ts, meta));
    }

    /// Drops versions no reader at or after `oldest` can see.
    pub(crate) fn prune(&mut self, oldest: Timestamp) {
        self.entries.retain(|_, versions| {
            // Keep the newest version at or before `oldest` and everything after it.
            let first_needed = versions
                .iter()
                .rposition(|(ts, _)| *ts <= oldest)
                .unwrap_or(0);
            versions.drain(..first_needed);
            !(versions.len() == 1 && versions[0].1.is_none() && versions[0].0 <= oldest)
        });
    }

    /// Every ident referenced by any live version.
    pub(crate) fn referenced_idents(&self) -> HashSet<u64> {
        let mut idents = HashSet::new();
        for versions in self.entries.values() {
            for (_, meta) in versions {
                if let Some(meta) = meta {
                    idents.extend(meta.idents());
                }
            }
        }
        idents
    }

    /// The largest ident referenced by any version.
    pub(crate) fn max_ident(&self) -> u64 {
        self.referenced_idents().into_iter().max().unwrap_or(0)
    }
}

fn visible(versions: &Versions, at: Timestamp) -> Option<Arc<CollectionMeta>> {
    versions
        .iter()
        .rev()
        .find(|(ts, _)| *ts <= at)
        .and_then(|(_, meta)| meta.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(coll: &str, ident: u64) -> Arc<CollectionMeta> {
        Arc::new(CollectionMeta {
            ns: Namespace::new("db", coll),
            uuid: bson::Uuid::new(),
            ident,
            options: doc! {},
            indexes: vec![IndexMeta {
                name: "a_1".into(),
                key: doc! {"a": 1},
                unique: false,
                ident: ident + 1,
                ready: true,
                multikey_paths: vec!["a".into()],
                spec: doc! {"key": {"a": 1}, "name": "a_1", "v": 2},
            }],
        })
    }

    #[test]
    fn meta_round_trips_through_bson() {
        let original = meta("c", 20);
        let decoded = decode_meta(&encode_meta(&original)).unwrap();
        assert_eq!(decoded, *original);
    }

    #[test]
    fn mirror_answers_as_of_a_timestamp_and_prunes() {
        let ns = Namespace::new("db", "c");
        let mut mirror = CatalogMirror::default();
        mirror.apply(&ns, Timestamp::new(1, 0), Some(meta("c", 20)));
        mirror.apply(&ns, Timestamp::new(5, 0), None);
        mirror.apply(&ns, Timestamp::new(9, 0), Some(meta("c", 30)));
        assert!(mirror.lookup(&ns, Timestamp::new(0, 5)).is_none());
        assert_eq!(mirror.lookup(&ns, Timestamp::new(3, 0)).unwrap().ident, 20);
        assert!(mirror.lookup(&ns, Timestamp::new(6, 0)).is_none());
        assert_eq!(mirror.lookup(&ns, Timestamp::new(9, 0)).unwrap().ident, 30);
        assert_eq!(mirror.referenced_idents().len(), 4);
        mirror.prune(Timestamp::new(6, 0));
        assert!(mirror.lookup(&ns, Timestamp::new(6, 0)).is_none());
        assert_eq!(mirror.referenced_idents(), HashSet::from([30, 31]));
        mirror.prune(Timestamp::new(10, 0));
        assert_eq!(mirror.list(Timestamp::new(10, 0)).len(), 1);
    }
}
