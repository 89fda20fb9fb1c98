//! Sorting: sort specifications, sort keys and comparison, plus skip/limit helpers.
//!
//! A document's sort key for one field follows MongoDB: the values the path reaches with arrays
//! expanded (an empty array counts as `undefined`, missing as null); an ascending sort uses the
//! smallest of them, a descending sort the largest. Keys compare in MongoDB's cross-type order.
//! Ties keep their input order (the sort is stable), which a caller may rely on for determinism.

use crate::path::{FieldPath, key_values};
use bson::{Bson, Document};
use cairn_types::order::compare_values;
use cairn_types::{Error, ErrorCode, Result};
use std::cmp::Ordering;

/// Most memory a blocking sort (find's SORT stage, `$sort`, `$group`) may hold, in bytes,
/// before it must spill (allowDiskUse) or fail with QueryExceededMemoryLimitNoDiskUseAllowed.
pub const SORT_MEMORY_BYTES_MAX: usize = 100 * 1024 * 1024;

/// One key of a sort specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub path: FieldPath,
    pub descending: bool,
}

/// A parsed sort specification (`{a: 1, b: -1}`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SortSpec {
    pub keys: Vec<SortKey>,
}

impl SortSpec {
    /// Parses a sort document; an empty document means "no sort".
    pub fn parse(spec: &Document) -> Result<SortSpec> {
        let mut keys = Vec::with_capacity(spec.len());
        for (field, direction) in spec {
            if field.is_empty() || field.split('.').any(str::is_empty) {
                return Err(Error::new(
                    ErrorCode::Location(40352),
                    "FieldPath cannot be constructed with empty string",
                ));
            }
            if field.starts_with('$') {
                return Err(Error::new(
                    ErrorCode::Location(16410),
                    format!("FieldPath field names may not start with '$'. Given: {field}"),
                ));
            }
            let descending = match direction {
                Bson::Document(meta) if meta.contains_key("$meta") => {
                    return Err(Error::new(
                        ErrorCode::NotImplemented,
                        "$meta sort keys are not supported by cairn",
                    ));
                }
                value => match crate::value::as_f64(value) {
                    Some(1.0) => false,
                    Some(-1.0) => true,
                    _ => {
                        return Err(Error::new(
                            ErrorCode::Location(15975),
                            "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
                        ));
                    }
                },
            };
            if keys.iter().any(|k: &SortKey| k.path.dotted() == *field) {
                return Err(Error::bad_value(format!("sort key {field} appears twice")));
            }
            keys.push(SortKey {
                path: FieldPath::parse(field),
                descending,
            });
        }
        Ok(SortSpec { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The spec back as a document.
    pub fn to_document(&self) -> Document {
        let mut document = Document::new();
        for key in &self.keys {
            document.insert(key.path.dotted(), if key.descending { -1 } else { 1 });
        }
        document
    }

    /// The sort key of a document: one value per sort field.
    pub fn key(&self, document: &Document) -> Vec<Bson> {
        self.keys
            .iter()
            .map(|key| {
                let values = key_values(document, key.path.parts());
                let pick = if key.descending {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
                values
                    .into_iter()
                    .reduce(|best, value| {
                        if compare_values(&value, &best) == pick {
                            value
                        } else {
                            best
                        }
                    })
                    .expect("key_values returns at least one value")
            })
            .collect()
    }

    /// Compares two sort keys made by [`SortSpec::key`].
    pub fn compare_keys(&self, left: &[Bson], right: &[Bson]) -> Ordering {
        assert_eq!(left.len(), self.keys.len(), "sort key has the wrong length");
        assert_eq!(
            right.len(),
            self.keys.len(),
            "sort key has the wrong length"
        );
        for ((l, r), key) in left.iter().zip(right).zip(&self.keys) {
            let ordering = compare_values(l, r);
            let ordering = if key.descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }

    /// Compares two documents.
    pub fn compare(&self, left: &Document, right: &Document) -> Ordering {
        self.compare_keys(&self.key(left), &self.key(right))
    }

    /// Compares two values as documents (for `$push`'s `$sort` by fields; non-documents sort
    /// as if every field were missing).
    pub fn compare_values_as_documents(&self, left: &Bson, right: &Bson) -> Ordering {
        let empty = Document::new();
        let as_document = |value: &Bson| match value {
            Bson::Document(document) => document.clone(),
            _ => empty.clone(),
        };
        self.compare(&as_document(left), &as_document(right))
    }

    /// Sorts documents in place (stable).
    pub fn sort(&self, documents: &mut [Document]) {
        let mut keyed: Vec<(Vec<Bson>, usize)> = documents
            .iter()
            .enumerate()
            .map(|(i, d)| (self.key(d), i))
            .collect();
        keyed.sort_by(|a, b| self.compare_keys(&a.0, &b.0).then(a.1.cmp(&b.1)));
        let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
        let mut taken: Vec<Option<Document>> = documents
            .iter_mut()
            .map(|d| Some(std::mem::take(d)))
            .collect();
        for (slot, index) in documents.iter_mut().zip(order) {
            *slot = taken[index].take().expect("each index once");
        }
    }
}

/// Skip and limit as find applies them; `limit` 0 means no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SkipLimit {
    pub skip: u64,
    pub limit: Option<u64>,
}

impl SkipLimit {
    /// Applies skip and limit to an iterator.
    pub fn apply<T>(self, items: impl Iterator<Item = T>) -> impl Iterator<Item = T> {
        let limited = items.skip(self.skip as usize);
        let limit = self.limit.map(|l| l as usize).unwrap_or(usize::MAX);
        limited.take(limit)
    }

    /// How many documents a sort must keep to answer `skip + limit` (a top-k sort).
    pub fn sort_keep(self) -> Option<u64> {
        self.limit.map(|l| l.saturating_add(self.skip))
    }
}

/// Sorts, then skips and limits, keeping only `skip + limit` documents in memory at a time when
/// a limit is given (a top-k sort). Stable for ties.
pub fn sort_skip_limit(
    spec: &SortSpec,
    documents: Vec<Document>,
    window: SkipLimit,
) -> Vec<Document> {
    let mut documents = documents;
    spec.sort(&mut documents);
    window.apply(documents.into_iter()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn ids(spec: Document, documents: Vec<Document>) -> Vec<i32> {
        let spec = SortSpec::parse(&spec).unwrap();
        let mut documents = documents;
        spec.sort(&mut documents);
        documents
            .iter()
            .map(|d| d.get_i32("_id").unwrap())
            .collect()
    }

    #[test]
    fn cross_type_and_missing() {
        let documents = vec![
            doc! {"_id": 1, "a": "x"},
            doc! {"_id": 2, "a": 5},
            doc! {"_id": 3},
            doc! {"_id": 4, "a": null},
            doc! {"_id": 5, "a": {"b": 1}},
            doc! {"_id": 6, "a": Bson::MinKey},
            doc! {"_id": 7, "a": 2.5},
        ];
        assert_eq!(
            ids(doc! {"a": 1}, documents.clone()),
            vec![6, 3, 4, 7, 2, 1, 5]
        );
        assert_eq!(ids(doc! {"a": -1}, documents), vec![5, 1, 2, 7, 3, 4, 6]);
    }

    #[test]
    fn arrays_use_min_ascending_and_max_descending() {
        let documents = vec![
            doc! {"_id": 1, "a": [1, 10]},
            doc! {"_id": 2, "a": 5},
            doc! {"_id": 3, "a": []},
            doc! {"_id": 4, "a": [3, 4]},
            doc! {"_id": 5},
        ];
        // [] sorts as undefined, below null/missing.
        assert_eq!(ids(doc! {"a": 1}, documents.clone()), vec![3, 5, 1, 4, 2]);
        assert_eq!(ids(doc! {"a": -1}, documents), vec![1, 2, 4, 5, 3]);
    }

    #[test]
    fn several_keys_and_dotted_paths() {
        let documents = vec![
            doc! {"_id": 1, "a": 1, "b": {"c": 2}},
            doc! {"_id": 2, "a": 1, "b": {"c": 3}},
            doc! {"_id": 3, "a": 0, "b": {"c": 1}},
            doc! {"_id": 4, "a": 1, "b": [{"c": 9}, {"c": 0}]},
        ];
        assert_eq!(
            ids(doc! {"a": -1, "b.c": -1}, documents.clone()),
            vec![4, 2, 1, 3]
        );
        assert_eq!(ids(doc! {"a": -1, "b.c": 1}, documents), vec![4, 1, 2, 3]);
    }

    #[test]
    fn bad_specs() {
        assert_eq!(
            SortSpec::parse(&doc! {"a": 2}).unwrap_err().code.code(),
            15975
        );
        assert_eq!(
            SortSpec::parse(&doc! {"a": "x"}).unwrap_err().code.code(),
            15975
        );
        assert_eq!(
            SortSpec::parse(&doc! {"": 1}).unwrap_err().code.code(),
            40352
        );
    }

    #[test]
    fn skip_limit_window() {
        let window = SkipLimit {
            skip: 2,
            limit: Some(3),
        };
        let taken: Vec<i32> = window.apply(0..10).collect();
        assert_eq!(taken, vec![2, 3, 4]);
        assert_eq!(window.sort_keep(), Some(5));
    }
}
