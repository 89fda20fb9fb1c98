//! Model-based tests: planned execution over an in-memory index (a BTreeMap of encoded keys)
//! must agree with a brute-force evaluation (match every document, sort, skip, limit).
//!
//! The "planned execution" follows the path the real executor takes: generate every index's keys
//! with `KeyPattern::keys`, plan with `planner::plan` (hinting each index in turn, and once
//! unhinted), scan the plan's key ranges in order, fetch each record once, apply the residual
//! filter, sort when the plan says so, then skip and limit.

use bson::{Bson, Document, doc};
use cairn_query::Matcher;
use cairn_query::index_keys::KeyPattern;
use cairn_query::planner::{
    Access, CanonicalQuery, Hint, IndexDescriptor, IndexScan, QueryPlan, plan,
};
use cairn_query::shaper::ResultShaper;
use cairn_query::sort::SortSpec;
use cairn_types::keystring;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn scalar() -> impl Strategy<Value = Bson> {
    prop_oneof![
        4 => (-2i32..4).prop_map(Bson::Int32),
        1 => (-2i64..4).prop_map(Bson::Int64),
        1 => prop_oneof![Just(0.5), Just(2.0), Just(-1.5), Just(f64::NAN), Just(f64::INFINITY)].prop_map(Bson::Double),
        2 => prop_oneof![Just("x"), Just("xy"), Just("y"), Just("")].prop_map(|s| Bson::String(s.into())),
        1 => Just(Bson::Null),
        1 => any::<bool>().prop_map(Bson::Boolean),
        1 => Just(Bson::Undefined),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    prop_oneof![
        6 => scalar(),
        2 => prop::collection::vec(scalar(), 0..4).prop_map(Bson::Array),
        2 => scalar().prop_map(|d| Bson::Document(doc! {"d": d})),
        1 => prop::collection::vec(scalar().prop_map(|d| Bson::Document(doc! {"d": d})), 0..3).prop_map(Bson::Array),
        1 => prop::collection::vec(prop::collection::vec(scalar(), 0..2).prop_map(Bson::Array), 0..2).prop_map(Bson::Array),
    ]
}

fn document(id: i32) -> impl Strategy<Value = Document> {
    (
        prop::option::of(value()),
        prop::option::of(value()),
        prop::option::of(value()),
    )
        .prop_map(move |(a, b, c)| {
            let mut document = doc! {"_id": id};
            if let Some(a) = a {
                document.insert("a", a);
            }
            if let Some(b) = b {
                document.insert("b", b);
            }
            if let Some(c) = c {
                document.insert("c", c);
            }
            document
        })
}

fn documents() -> impl Strategy<Value = Vec<Document>> {
    (0usize..24).prop_flat_map(|n| (0..n as i32).map(document).collect::<Vec<_>>())
}

fn path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("a"),
        Just("b"),
        Just("c"),
        Just("a.d"),
        Just("c.d"),
        Just("a.0")
    ]
}

fn operand() -> impl Strategy<Value = Bson> {
    prop_oneof![
        6 => scalar().prop_filter("undefined is not a filter operand", |v| !matches!(v, Bson::Undefined)),
        1 => Just(Bson::Null),
    ]
}

fn leaf() -> impl Strategy<Value = Document> {
    (
        path(),
        0..14usize,
        operand(),
        prop::collection::vec(operand(), 0..3),
    )
        .prop_map(|(path, op, operand, list)| {
            let condition: Bson = match op {
                0 => operand,
                1 => Bson::Document(doc! {"$gt": operand}),
                2 => Bson::Document(doc! {"$gte": operand}),
                3 => Bson::Document(doc! {"$lt": operand}),
                4 => Bson::Document(doc! {"$lte": operand}),
                5 => Bson::Document(doc! {"$in": list}),
                6 => Bson::Document(doc! {"$ne": operand}),
                7 => Bson::Document(doc! {"$nin": list}),
                8 => Bson::Document(doc! {"$exists": matches!(operand, Bson::Int32(v) if v > 0)}),
                9 => Bson::Document(doc! {"$regex": "^x"}),
                10 => Bson::Document(doc! {"$elemMatch": {"$gte": operand.clone(), "$lte": 3}}),
                11 => Bson::Document(doc! {"$gt": operand.clone(), "$lt": 3}),
                12 => Bson::Document(doc! {"$not": {"$gt": operand}}),
                _ => Bson::Array(list),
            };
            doc! {path: condition}
        })
}

fn filter() -> impl Strategy<Value = Document> {
    let leaves = || prop::collection::vec(leaf(), 1..3);
    prop_oneof![
        4 => leaves().prop_map(|leaves| {
            let mut merged = Document::new();
            let mut extra = Vec::new();
            for leaf in leaves {
                for (key, value) in leaf {
                    if merged.contains_key(&key) {
                        extra.push(Bson::Document(doc! {key: value}));
                    } else {
                        merged.insert(key, value);
                    }
                }
            }
            if !extra.is_empty() {
                merged.insert("$and", extra);
            }
            merged
        }),
        1 => leaves().prop_map(|leaves| doc! {"$or": leaves.into_iter().map(Bson::Document).collect::<Vec<_>>()}),
        1 => leaves().prop_map(|leaves| doc! {"$nor": leaves.into_iter().map(Bson::Document).collect::<Vec<_>>()}),
        1 => Just(doc! {}),
    ]
}

fn key_pattern() -> impl Strategy<Value = Document> {
    let field = prop_oneof![Just("a"), Just("b"), Just("c.d"), Just("a.d")];
    let direction = prop_oneof![Just(1), Just(-1)];
    prop::collection::vec((field, direction), 1..3).prop_map(|fields| {
        let mut pattern = Document::new();
        for (field, direction) in fields {
            if !pattern.contains_key(field) {
                pattern.insert(field, direction);
            }
        }
        pattern
    })
}

fn sort() -> impl Strategy<Value = Document> {
    let field = prop_oneof![Just("a"), Just("b"), Just("c.d")];
    let direction = prop_oneof![Just(1), Just(-1)];
    prop::collection::vec((field, direction), 0..3).prop_map(|fields| {
        let mut spec = Document::new();
        for (field, direction) in fields {
            if !spec.contains_key(field) {
                spec.insert(field, direction);
            }
        }
        spec
    })
}

/// An in-memory collection with indexes, as the executor would keep them.
struct Collection {
    documents: BTreeMap<i32, Document>,
    indexes: Vec<(IndexDescriptor, KeyPattern, BTreeMap<Vec<u8>, i32>)>,
}

impl Collection {
    fn new(documents: Vec<Document>, patterns: &[Document]) -> Collection {
        let patterns: Vec<KeyPattern> = patterns
            .iter()
            .map(|p| KeyPattern::parse(p).unwrap())
            .collect();
        // Documents with parallel arrays cannot be inserted: leave them out.
        let documents: BTreeMap<i32, Document> = documents
            .into_iter()
            .filter(|d| patterns.iter().all(|p| p.keys(d).is_ok()))
            .map(|d| (d.get_i32("_id").unwrap(), d))
            .collect();
        let mut indexes = Vec::new();
        for (number, pattern) in patterns.into_iter().enumerate() {
            let mut entries = BTreeMap::new();
            let mut multikey: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); pattern.fields.len()];
            for (id, document) in &documents {
                let keys = pattern.keys(document).unwrap();
                for (field, paths) in multikey.iter_mut().zip(&keys.multikey_paths) {
                    field.extend(paths.iter().copied());
                }
                for key in keys.keys {
                    let mut entry = key.bytes.clone();
                    entry.extend(keystring::encode(&Bson::Int32(*id)));
                    entries.insert(entry, *id);
                }
            }
            let mut descriptor =
                IndexDescriptor::new(&format!("index{number}"), pattern.source().clone());
            descriptor.multikey_paths = Some(multikey);
            indexes.push((descriptor, pattern, entries));
        }
        Collection { documents, indexes }
    }

    fn descriptors(&self) -> Vec<IndexDescriptor> {
        self.indexes.iter().map(|(d, _, _)| d.clone()).collect()
    }

    /// Reads one index scan's ranges; returns record ids not seen before.
    fn scan(&self, scan: &IndexScan, seen: &mut BTreeSet<i32>) -> Vec<i32> {
        let entries = &self
            .indexes
            .iter()
            .find(|(d, _, _)| d.name == scan.index_name)
            .unwrap()
            .2;
        let mut ids = Vec::new();
        let mut seen_here = BTreeSet::new();
        let ranges: Vec<_> = if scan.forward {
            scan.ranges.clone()
        } else {
            scan.ranges.iter().rev().cloned().collect()
        };
        for range in ranges {
            let upper = match &range.end {
                Some(end) => std::ops::Bound::Excluded(end.clone()),
                None => std::ops::Bound::Unbounded,
            };
            let bounds = (std::ops::Bound::Included(range.start.clone()), upper);
            let items: Vec<i32> = if scan.forward {
                entries.range(bounds).map(|(_, id)| *id).collect()
            } else {
                entries.range(bounds).rev().map(|(_, id)| *id).collect()
            };
            for id in items {
                assert!(
                    scan.dedup || seen_here.insert(id),
                    "duplicate record without dedup"
                );
                if seen.insert(id) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Runs a plan the way the executor does.
    fn run(&self, plan: &QueryPlan, filter: &Matcher) -> Vec<Document> {
        let mut fetched: Vec<Document> = Vec::new();
        match &plan.access {
            Access::CollectionScan { forward } => {
                let mut all: Vec<&Document> = self.documents.values().collect();
                if !forward {
                    all.reverse();
                }
                fetched.extend(all.into_iter().cloned());
            }
            Access::IndexScan(scan) => {
                let mut seen = BTreeSet::new();
                let ids = self.scan(scan, &mut seen);
                fetched.extend(ids.into_iter().map(|id| self.documents[&id].clone()));
            }
            Access::Union(scans) => {
                // One fetch per record across all the scans.
                let mut seen = BTreeSet::new();
                for scan in scans {
                    let ids = self.scan(scan, &mut seen);
                    fetched.extend(ids.into_iter().map(|id| self.documents[&id].clone()));
                }
            }
        }
        // Residual, blocking sort, skip and limit through the executor's helper.
        let mut shaper = ResultShaper::new(plan, filter, false);
        let mut output = Vec::new();
        for document in fetched {
            if shaper.is_done() {
                break;
            }
            if let Some(result) = shaper.offer(document).unwrap() {
                output.push(result);
            }
        }
        output.extend(shaper.finish().unwrap());
        output
    }
}

fn ids(documents: &[Document]) -> Vec<i32> {
    let mut ids: Vec<i32> = documents
        .iter()
        .map(|d| d.get_i32("_id").unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

fn check(
    documents: Vec<Document>,
    patterns: Vec<Document>,
    filter: Document,
    sort_spec: Document,
    window: Option<(u64, u64)>,
) -> Result<(), TestCaseError> {
    let collection = Collection::new(documents, &patterns);
    let matcher = Matcher::parse(&filter).unwrap();
    let sort = SortSpec::parse(&sort_spec).unwrap();
    let mut expected: Vec<Document> = collection
        .documents
        .values()
        .filter(|d| matcher.matches(d))
        .cloned()
        .collect();
    sort.sort(&mut expected);
    let (skip, limit) = window.unwrap_or((0, u64::MAX));
    let expected: Vec<Document> = expected
        .into_iter()
        .skip(skip as usize)
        .take(limit as usize)
        .collect();
    let descriptors = collection.descriptors();
    let mut hints: Vec<Option<Hint>> = vec![None, Some(Hint::Natural { forward: false })];
    hints.extend(descriptors.iter().map(|d| Some(Hint::Name(d.name.clone()))));
    for hint in hints {
        let mut query = CanonicalQuery::new("db.c", matcher.clone());
        query.sort = sort.clone();
        if let Some((skip, limit)) = window {
            query.skip = skip;
            query.limit = Some(limit);
        }
        query.hint = hint.clone();
        let planned = plan(&query, &descriptors).unwrap();
        let mut plans = vec![planned.winning.clone()];
        plans.extend(planned.rejected.iter().cloned());
        for candidate in plans {
            let actual = collection.run(&candidate, &matcher);
            if std::env::var("MODEL_DEBUG").is_ok() {
                eprintln!(
                    "DEBUG {} docs={} expected={} actual={} ranges={}",
                    candidate.summary(),
                    collection.documents.len(),
                    expected.len(),
                    actual.len(),
                    candidate.index_scan().map_or(0, |s| s.ranges.len())
                );
            }
            let context = format!(
                "filter {filter} sort {sort_spec} window {window:?} hint {hint:?} plan {}\nexplain {}",
                candidate.summary(),
                candidate.root.render(false)
            );
            if sort.is_empty() || window.is_none() {
                prop_assert_eq!(ids(&actual), ids(&expected), "{}", context);
            }
            if !sort.is_empty() {
                let actual_keys: Vec<Vec<Bson>> = actual.iter().map(|d| sort.key(d)).collect();
                let expected_keys: Vec<Vec<Bson>> = expected.iter().map(|d| sort.key(d)).collect();
                prop_assert_eq!(actual_keys.len(), expected_keys.len(), "{}", context);
                for (a, e) in actual_keys.iter().zip(&expected_keys) {
                    prop_assert_eq!(
                        sort.compare_keys(a, e),
                        std::cmp::Ordering::Equal,
                        "{}",
                        context
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn planned_execution_agrees_with_brute_force(
        documents in documents(),
        patterns in prop::collection::vec(key_pattern(), 1..3),
        filter in filter(),
        sort_spec in sort(),
        window in prop::option::of((0u64..3, 1u64..5)),
    ) {
        let window = if sort_spec.is_empty() { None } else { window };
        check(documents, patterns, filter, sort_spec, window)?;
    }
}

fn indexed_leaf() -> impl Strategy<Value = Document> {
    (prop_oneof![Just("a"), Just("b"), Just("c.d")], leaf()).prop_map(|(path, leaf)| {
        let condition = leaf
            .into_iter()
            .next()
            .map(|(_, c)| c)
            .unwrap_or(Bson::Null);
        doc! {path: condition}
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// `$or` over indexed fields: union plans (one index scan per branch).
    #[test]
    fn union_plans_agree_with_brute_force(
        documents in documents(),
        branches in prop::collection::vec(indexed_leaf(), 1..4),
        sort_spec in sort(),
    ) {
        let filter = doc! {"$or": branches.into_iter().map(Bson::Document).collect::<Vec<_>>()};
        let patterns = vec![doc! {"a": 1}, doc! {"b": -1}, doc! {"c.d": 1}];
        check(documents, patterns, filter, sort_spec, None)?;
    }
}

#[test]
fn equality_on_a_multikey_field_does_not_fix_its_sort_key() {
    let documents = vec![
        doc! {"_id": 0},
        doc! {"_id": 1, "b": [null, Bson::Undefined]},
    ];
    check(
        documents,
        vec![doc! {"b": 1}],
        doc! {"b": null},
        doc! {"b": 1},
        None,
    )
    .unwrap();
}

#[test]
fn regression_examples() {
    let documents = vec![
        doc! {"_id": 0, "a": [1, 5]},
        doc! {"_id": 1, "a": 3},
        doc! {"_id": 2},
        doc! {"_id": 3, "a": null},
        doc! {"_id": 4, "a": []},
        doc! {"_id": 5, "a": [{"d": 1}, 2]},
        doc! {"_id": 6, "a": "x"},
        doc! {"_id": 7, "a": [5]},
        doc! {"_id": 8, "a": [[]]},
    ];
    for filter in [
        doc! {"a": {"$gt": 2, "$lt": 4}},
        doc! {"a": null},
        doc! {"a": {"$ne": null}},
        doc! {"a": {"$ne": 3}},
        doc! {"a.d": {"$exists": false}},
        doc! {"a": []},
        doc! {"a": {"$in": [[], 3]}},
        doc! {"a": {"$nin": [1, "x"]}},
        doc! {"a.d": null},
        doc! {"a.d": {"$ne": null}},
        doc! {"a.d": {"$in": [null, 1]}},
        doc! {"a": {"$gte": null}},
    ] {
        check(
            documents.clone(),
            vec![doc! {"a": 1}, doc! {"a.d": -1, "b": 1}],
            filter,
            doc! {"a": 1},
            None,
        )
        .unwrap();
    }
}
