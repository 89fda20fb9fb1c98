//! Index key patterns and the index keys of a document.
//!
//! A [`KeyPattern`] is a list of `(path, direction)`; text, hashed and geo indexes are refused
//! with `CannotCreateIndex` (67). [`KeyPattern::keys`] produces a document's keys with MongoDB's
//! multikey semantics: for each field the values its path reaches (arrays at the end expanded into
//! their elements, an empty array as `undefined`, missing as null), one key per combination. The
//! combinations are the cross product of the fields' values, so bounds on two fields below a
//! shared array may be compounded; two fields that go through different arrays ("parallel
//! arrays") are refused with `CannotIndexParallelArrays` (171), as MongoDB does.
//!
//! Keys are encoded with `cairn_types::keystring` (per-field direction), so byte order is index
//! order. A key is the concatenation of the field encodings; the executor appends the record's
//! id for non-unique indexes so that entries stay distinct.

use crate::path::{FieldPath, is_array_index, key_values};
use bson::{Bson, Document};
use cairn_types::keystring::{self, Direction};
use cairn_types::{Error, ErrorCode, Result};
use std::collections::BTreeSet;

/// Most fields in a compound index (MongoDB's limit).
pub const INDEX_FIELDS_MAX: usize = 32;

/// Most keys one document may produce for one index (bounds the cross product of arrays).
pub const INDEX_KEYS_PER_DOCUMENT_MAX: usize = 100_000;

/// One field of a key pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyField {
    pub path: FieldPath,
    pub direction: Direction,
}

/// A parsed, validated key pattern (`{a: 1, "b.c": -1}`).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyPattern {
    pub fields: Vec<KeyField>,
    source: Document,
}

fn cannot_create(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::CannotCreateIndex, message)
}

impl KeyPattern {
    pub fn parse(pattern: &Document) -> Result<KeyPattern> {
        if pattern.is_empty() {
            return Err(cannot_create("Index keys cannot be empty."));
        }
        if pattern.len() > INDEX_FIELDS_MAX {
            return Err(cannot_create(format!(
                "Index key pattern has {} fields; at most {INDEX_FIELDS_MAX} are allowed",
                pattern.len()
            )));
        }
        let mut fields = Vec::with_capacity(pattern.len());
        for (name, value) in pattern {
            if name.is_empty() {
                return Err(cannot_create("Index keys cannot be an empty field."));
            }
            for part in name.split('.') {
                if part.is_empty() {
                    return Err(cannot_create(format!(
                        "Index keys cannot contain an empty field: {name}"
                    )));
                }
                if part.starts_with('$') {
                    return Err(cannot_create(format!(
                        "Index key contains an illegal field name: field name starts with '$'. ({name})"
                    )));
                }
            }
            let direction = match value {
                Bson::String(kind) => {
                    return Err(match kind.as_str() {
                        "text" | "hashed" | "2d" | "2dsphere" | "geoHaystack" | "columnstore" => {
                            cannot_create(format!("cairn does not support '{kind}' indexes"))
                        }
                        other => cannot_create(format!("Unknown index plugin '{other}'")),
                    });
                }
                number if cairn_types::order::is_number(number) => {
                    let f = crate::value::as_f64(number).unwrap_or(f64::NAN);
                    if f == 0.0 || f.is_nan() {
                        return Err(cannot_create(format!(
                            "Values in v:2 index key pattern cannot be of value 0 or NaN: {name}: {number}"
                        )));
                    }
                    if f > 0.0 {
                        Direction::Ascending
                    } else {
                        Direction::Descending
                    }
                }
                other => {
                    return Err(cannot_create(format!(
                        "Values in v:2 index key pattern are not allowed to be of type {}: {name}",
                        crate::value::type_name(other)
                    )));
                }
            };
            fields.push(KeyField {
                path: FieldPath::parse(name),
                direction,
            });
        }
        Ok(KeyPattern {
            fields,
            source: pattern.clone(),
        })
    }

    pub fn source(&self) -> &Document {
        &self.source
    }

    /// MongoDB's default index name: `a_1_b_-1`.
    pub fn default_name(&self) -> String {
        self.source
            .iter()
            .map(|(name, value)| format!("{name}_{}", render_direction(value)))
            .collect::<Vec<_>>()
            .join("_")
    }

    /// The keys of a document (see the module header).
    pub fn keys(&self, document: &Document) -> Result<IndexKeys> {
        let mut per_field: Vec<Vec<Bson>> = Vec::with_capacity(self.fields.len());
        let mut multikey_paths: Vec<BTreeSet<usize>> = Vec::with_capacity(self.fields.len());
        for field in &self.fields {
            per_field.push(key_values(document, field.path.parts()));
            multikey_paths.push(array_components(document, field.path.parts()));
        }
        // Parallel arrays: two fields through arrays on different branches.
        for i in 0..self.fields.len() {
            for j in i + 1..self.fields.len() {
                for &a in &multikey_paths[i] {
                    for &b in &multikey_paths[j] {
                        let prefix_a = &self.fields[i].path.parts()[..=a];
                        let prefix_b = &self.fields[j].path.parts()[..=b];
                        let shorter = prefix_a.len().min(prefix_b.len());
                        if prefix_a[..shorter] != prefix_b[..shorter] {
                            return Err(Error::new(
                                ErrorCode::CannotIndexParallelArrays,
                                format!(
                                    "cannot index parallel arrays [{}] [{}]",
                                    prefix_b.last().map(String::as_str).unwrap_or_default(),
                                    prefix_a.last().map(String::as_str).unwrap_or_default()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        let total: usize = per_field
            .iter()
            .map(Vec::len)
            .try_fold(1usize, |acc, n| acc.checked_mul(n))
            .unwrap_or(usize::MAX);
        if total > INDEX_KEYS_PER_DOCUMENT_MAX {
            return Err(Error::new(
                ErrorCode::CannotBuildIndexKeys,
                format!(
                    "document would produce {total} index keys; at most {INDEX_KEYS_PER_DOCUMENT_MAX} are allowed"
                ),
            ));
        }
        let mut keys: Vec<IndexKey> = Vec::with_capacity(total);
        let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut indices = vec![0usize; per_field.len()];
        loop {
            let values: Vec<Bson> = indices
                .iter()
                .zip(&per_field)
                .map(|(&i, v)| v[i].clone())
                .collect();
            let bytes = keystring::encode_compound(
                values.iter().zip(self.fields.iter().map(|f| f.direction)),
            );
            if seen.insert(bytes.clone()) {
                keys.push(IndexKey { bytes, values });
            }
            // Next combination.
            let mut position = per_field.len();
            loop {
                if position == 0 {
                    keys.sort_by(|a, b| a.bytes.cmp(&b.bytes));
                    return Ok(IndexKeys {
                        keys,
                        multikey_paths,
                    });
                }
                position -= 1;
                indices[position] += 1;
                if indices[position] < per_field[position].len() {
                    break;
                }
                indices[position] = 0;
            }
        }
    }

    /// The keys of a document for a sparse and/or partial index: none when the document is
    /// left out (sparse: every key field missing; partial: the filter does not match).
    pub fn keys_for_index(
        &self,
        document: &Document,
        sparse: bool,
        partial_filter: Option<&crate::Matcher>,
    ) -> Result<IndexKeys> {
        let excluded_by_sparse = sparse
            && self.fields.iter().all(|field| {
                crate::path::collect(
                    document,
                    field.path.parts(),
                    crate::path::LeafArrays::Traverse,
                )
                .iter()
                .all(Option::is_none)
            });
        let excluded_by_filter = match partial_filter {
            Some(filter) => !filter.matches_checked(document)?,
            None => false,
        };
        if excluded_by_sparse || excluded_by_filter {
            return Ok(IndexKeys {
                keys: Vec::new(),
                multikey_paths: vec![BTreeSet::new(); self.fields.len()],
            });
        }
        self.keys(document)
    }

    /// Encodes a tuple of values as a key of this pattern (one value per field).
    pub fn encode(&self, values: &[Bson]) -> Vec<u8> {
        assert_eq!(values.len(), self.fields.len(), "one value per key field");
        keystring::encode_compound(values.iter().zip(self.fields.iter().map(|f| f.direction)))
    }

    /// The `keyValue` document of a duplicate key error.
    pub fn key_value_document(&self, values: &[Bson]) -> Document {
        let mut document = Document::new();
        for (field, value) in self.fields.iter().zip(values) {
            document.insert(field.path.dotted(), value.clone());
        }
        document
    }

    /// MongoDB's duplicate key error for this index.
    pub fn duplicate_key_error(&self, namespace: &str, index_name: &str, values: &[Bson]) -> Error {
        let key_value = self.key_value_document(values);
        let rendered: Vec<String> = key_value
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect();
        Error::new(
            ErrorCode::DuplicateKey,
            format!(
                "E11000 duplicate key error collection: {namespace} index: {index_name} dup key: {{ {} }}",
                rendered.join(", ")
            ),
        )
        .with_info(bson::doc! {"keyPattern": self.source.clone(), "keyValue": key_value})
    }
}

fn render_direction(value: &Bson) -> String {
    match value {
        Bson::Int32(v) => v.to_string(),
        Bson::Int64(v) => v.to_string(),
        Bson::Double(v) if v.fract() == 0.0 => format!("{}", *v as i64),
        other => other.to_string(),
    }
}

/// One index key of a document: the encoded bytes and the values they encode.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexKey {
    pub bytes: Vec<u8>,
    pub values: Vec<Bson>,
}

/// The keys of a document for one index, and which path components were arrays.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexKeys {
    /// Distinct keys in byte order.
    pub keys: Vec<IndexKey>,
    /// Per key field, the indices of path components whose value was an array (the field is
    /// multikey when non-empty): `a.b` with `a` an array gives `{0}`.
    pub multikey_paths: Vec<BTreeSet<usize>>,
}

impl IndexKeys {
    pub fn is_multikey(&self) -> bool {
        self.multikey_paths.iter().any(|p| !p.is_empty())
    }
}

/// Indices of the components of `path` at which the document holds an array.
pub fn array_components(document: &Document, path: &[String]) -> BTreeSet<usize> {
    let mut found = BTreeSet::new();
    walk_document(document, path, 0, &mut found);
    found
}

fn walk_document(document: &Document, path: &[String], index: usize, found: &mut BTreeSet<usize>) {
    if index >= path.len() {
        return;
    }
    if let Some(child) = document.get(&path[index]) {
        if matches!(child, Bson::Array(_)) {
            found.insert(index);
        }
        walk_value(child, path, index + 1, found);
    }
}

/// `value` was reached by `path[..index]`; continue with `path[index..]`.
fn walk_value(value: &Bson, path: &[String], index: usize, found: &mut BTreeSet<usize>) {
    if index >= path.len() {
        return;
    }
    match value {
        Bson::Document(document) => walk_document(document, path, index, found),
        Bson::Array(items) => {
            // Elements that are documents are searched for the next component; a numeric
            // component also indexes the array.
            for (position, item) in items.iter().enumerate() {
                if let Bson::Document(document) = item {
                    walk_document(document, path, index, found);
                }
                if is_array_index(&path[index]) && path[index] == position.to_string() {
                    if matches!(item, Bson::Array(_)) {
                        found.insert(index);
                    }
                    walk_value(item, path, index + 1, found);
                }
            }
        }
        _ => {}
    }
}

/// Renders multikey paths as MongoDB's explain does: `{"a.b": ["a"]}`.
pub fn render_multikey_paths(pattern: &KeyPattern, paths: &[BTreeSet<usize>]) -> Document {
    let mut document = Document::new();
    for (field, components) in pattern.fields.iter().zip(paths) {
        let prefixes: Vec<Bson> = components
            .iter()
            .map(|&c| Bson::String(field.path.parts()[..=c].join(".")))
            .collect();
        document.insert(field.path.dotted(), Bson::Array(prefixes));
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn pattern(spec: Document) -> KeyPattern {
        KeyPattern::parse(&spec).unwrap()
    }

    #[test]
    fn single_field_and_multikey() {
        let p = pattern(doc! {"a": 1});
        let keys = p.keys(&doc! {"a": [3, 1, 3]}).unwrap();
        assert_eq!(keys.keys.len(), 2);
        assert_eq!(keys.keys[0].values, vec![Bson::Int32(1)]);
        assert!(keys.is_multikey());
        let keys = p.keys(&doc! {"b": 1}).unwrap();
        assert_eq!(keys.keys[0].values, vec![Bson::Null]);
        assert!(!keys.is_multikey());
        let keys = p.keys(&doc! {"a": []}).unwrap();
        assert_eq!(keys.keys[0].values, vec![Bson::Undefined]);
        assert_eq!(
            p.keys(&doc! {"a": 5}).unwrap().keys[0].bytes,
            p.keys(&doc! {"a": 5.0}).unwrap().keys[0].bytes
        );
    }

    #[test]
    fn compound_and_descending() {
        let p = pattern(doc! {"a": 1, "b": -1});
        let low = p.keys(&doc! {"a": 1, "b": 1}).unwrap().keys[0]
            .bytes
            .clone();
        let high = p.keys(&doc! {"a": 1, "b": 2}).unwrap().keys[0]
            .bytes
            .clone();
        assert!(high < low, "descending second field");
        let keys = p.keys(&doc! {"a": [1, 2], "b": "x"}).unwrap();
        assert_eq!(keys.keys.len(), 2);
        assert_eq!(
            keys.multikey_paths,
            vec![BTreeSet::from([0]), BTreeSet::new()]
        );
    }

    #[test]
    fn parallel_arrays_are_refused() {
        let p = pattern(doc! {"a": 1, "b": 1});
        let error = p.keys(&doc! {"a": [1], "b": [2]}).unwrap_err();
        assert_eq!(error.code, ErrorCode::CannotIndexParallelArrays);
        // Two fields below one array are fine.
        let p = pattern(doc! {"a.b": 1, "a.c": 1});
        let keys = p
            .keys(&doc! {"a": [{"b": 1, "c": 2}, {"b": 3, "c": 4}]})
            .unwrap();
        assert_eq!(keys.keys.len(), 4);
        assert_eq!(
            render_multikey_paths(&p, &keys.multikey_paths),
            doc! {"a.b": ["a"], "a.c": ["a"]}
        );
    }

    #[test]
    fn bad_patterns() {
        for spec in [
            doc! {},
            doc! {"a": "text"},
            doc! {"a": "hashed"},
            doc! {"a": "2dsphere"},
            doc! {"a": "foo"},
            doc! {"a": 0},
            doc! {"a": true},
            doc! {"$a": 1},
            doc! {"a..b": 1},
            doc! {"": 1},
        ] {
            assert_eq!(
                KeyPattern::parse(&spec).unwrap_err().code,
                ErrorCode::CannotCreateIndex,
                "{spec}"
            );
        }
        assert_eq!(
            pattern(doc! {"a": 1, "b.c": -1}).default_name(),
            "a_1_b.c_-1"
        );
    }

    #[test]
    fn sparse_and_partial_indexes_leave_documents_out() {
        let p = pattern(doc! {"a": 1, "b": 1});
        assert!(
            p.keys_for_index(&doc! {"c": 1}, true, None)
                .unwrap()
                .keys
                .is_empty()
        );
        assert_eq!(
            p.keys_for_index(&doc! {"b": null}, true, None)
                .unwrap()
                .keys
                .len(),
            1
        );
        assert_eq!(
            p.keys_for_index(&doc! {"c": 1}, false, None)
                .unwrap()
                .keys
                .len(),
            1
        );
        let filter = crate::Matcher::parse(&doc! {"a": {"$gt": 5}}).unwrap();
        assert!(
            p.keys_for_index(&doc! {"a": 1}, false, Some(&filter))
                .unwrap()
                .keys
                .is_empty()
        );
        assert_eq!(
            p.keys_for_index(&doc! {"a": 6}, false, Some(&filter))
                .unwrap()
                .keys
                .len(),
            1
        );
    }

    #[test]
    fn duplicate_key_error_shape() {
        let p = pattern(doc! {"a": 1});
        let error = p.duplicate_key_error("db.c", "a_1", &[Bson::Int32(5)]);
        assert_eq!(error.code.code(), 11000);
        assert_eq!(
            error.message,
            "E11000 duplicate key error collection: db.c index: a_1 dup key: { a: 5 }"
        );
        assert_eq!(
            error.info.unwrap().get_document("keyValue").unwrap(),
            &doc! {"a": 5}
        );
    }
}
