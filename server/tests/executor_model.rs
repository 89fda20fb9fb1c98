//! Model-based test of the real executor: random collections (documents with nested documents,
//! arrays, mixed types, missing fields and nulls), random secondary indexes (single, compound,
//! descending, multikey, unique, sparse, partial; built before the documents arrive, on the
//! populated collection, and between writes), random reads (find with filter, sort, skip,
//! limit, projection and a small batchSize drained through getMore, hinted through every index
//! and `$natural`; count; distinct; aggregate) and random writes (update, delete, upsert,
//! findAndModify), all through `Node::run_command`, against brute force over a model of the
//! collection with cairn-query's `Matcher`, `SortSpec`, `Projection`, `Update` and `Pipeline`.
//!
//! After every write the collection and every index are checked: a `$natural` scan returns the
//! model's documents in `_id` order (the collection is clustered by `_id`), each index table
//! holds exactly the entries the model's documents give (read straight from the storage engine),
//! its catalog multikey paths cover every array the model's documents put under its fields, and a
//! scan hinted through it returns the documents it indexes.
//!
//! Where MongoDB leaves a choice (ties in a sort, the document an updateOne or a limit picks, the
//! documents a multi-update wrote before it failed), any allowed outcome is accepted and the
//! model adopts it.
//!
//! `PROPTEST_CASES=N` changes the number of cases (default 1000, about 10 s in the dev profile).

use bson::{Bson, Document, doc};
use cairn_query::Matcher;
use cairn_query::agg::pipeline::{AggregateOptions, NoSource, Pipeline, distinct_values};
use cairn_query::commands::{FindAndModifyCommand, UpdateCommand};
use cairn_query::index_keys::{IndexKeys, KeyPattern};
use cairn_query::projection::Projection;
use cairn_query::sort::SortSpec;
use cairn_query::update::{Update, UpdateContext, upsert_document};
use cairn_server::{ClientInfo, Node, NodeConfig};
use cairn_storage::{ReadAt, ScanDirection};
use cairn_types::{Namespace, keystring};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const DB: &str = "model";

// ---------------------------------------------------------------------------------------------
// The node.

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        // A static is never dropped, so this node's directory outlives the test process: it
        // goes under the target directory (cleaned with it, not left in /tmp), and directories
        // that earlier runs left there are removed first.
        let parent = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(parent) {
            for entry in entries.flatten() {
                let stale = entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("cairn-executor-model-")
                    && entry
                        .metadata()
                        .and_then(|metadata| metadata.modified())
                        .is_ok_and(|modified| {
                            modified.elapsed().unwrap_or_default()
                                > std::time::Duration::from_secs(3600)
                        });
                if stale {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("cairn-executor-model-")
            .tempdir_in(parent)
            .expect("a temporary directory");
        let node = Node::open(NodeConfig {
            dbpath: dir.path().to_path_buf(),
            port: 0,
            ..NodeConfig::default()
        })
        .expect("the node opens");
        node.hold_temporary_dbpath(dir);
        node
    })
}

static COMMANDS: AtomicU64 = AtomicU64::new(0);

/// Counters of what the cases exercised (printed with `MODEL_STATS=1 ... -- --nocapture`).
#[derive(Clone, Copy)]
enum Stat {
    Finds,
    FindsWithResults,
    WritesApplied,
    WritesRefused,
    Upserts,
    IndexesBuilt,
    BuildsRefused,
    UniqueIndexes,
    MultikeyIndexes,
}

const STAT_NAMES: [&str; 9] = [
    "finds",
    "finds with results",
    "writes applied",
    "writes refused",
    "upserts",
    "indexes built",
    "builds refused",
    "unique indexes",
    "multikey indexes",
];

static STATS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

fn count(stat: Stat) {
    STATS[stat as usize].fetch_add(1, Ordering::Relaxed);
}

fn run(mut command: Document) -> Document {
    COMMANDS.fetch_add(1, Ordering::Relaxed);
    command.insert("$db", DB);
    node().run_command(&ClientInfo::default(), command)
}

fn is_ok(reply: &Document) -> bool {
    match reply.get("ok") {
        Some(Bson::Double(ok)) => *ok == 1.0,
        Some(Bson::Int32(ok)) => *ok == 1,
        _ => false,
    }
}

fn fresh_collection_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("c{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn id_key(document: &Document) -> Vec<u8> {
    keystring::encode(document.get("_id").expect("documents have an _id"))
}

fn bytes(document: &Document) -> Vec<u8> {
    bson::serialize_to_vec(document).expect("documents serialize")
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// Drains the cursor a reply opened with getMore; `Err(reply)` when a reply fails.
fn drain(
    collection: &str,
    reply: Document,
    batch_size: Option<u64>,
) -> Result<Vec<Document>, Document> {
    drain_with(collection, reply, batch_size, &mut || {})
}

/// Like `drain`, running `between` after the first batch when a cursor stays open.
fn drain_with(
    collection: &str,
    reply: Document,
    batch_size: Option<u64>,
    between: &mut dyn FnMut(),
) -> Result<Vec<Document>, Document> {
    if !is_ok(&reply) {
        return Err(reply);
    }
    let cursor = reply.get_document("cursor").expect("a cursor").clone();
    let mut documents: Vec<Document> = cursor
        .get_array("firstBatch")
        .expect("a first batch")
        .iter()
        .map(|d| d.as_document().expect("documents").clone())
        .collect();
    if let Some(size) = batch_size {
        assert!(documents.len() as u64 <= size, "first batch over batchSize");
    }
    // batchSize 0 asks for an empty first batch; a getMore's 0 means no limit.
    let batch_size = batch_size.filter(|size| *size > 0);
    let mut id = cursor.get_i64("id").expect("a cursor id");
    if id != 0 {
        between();
    }
    let mut rounds = 0;
    while id != 0 {
        rounds += 1;
        assert!(rounds < 10_000, "getMore never ends");
        let mut get_more = doc! {"getMore": id, "collection": collection};
        if let Some(size) = batch_size {
            get_more.insert("batchSize", size as i64);
        }
        let reply = run(get_more);
        if !is_ok(&reply) {
            return Err(reply);
        }
        let cursor = reply.get_document("cursor").expect("a cursor");
        let batch = cursor.get_array("nextBatch").expect("a next batch");
        if let Some(size) = batch_size {
            assert!(batch.len() as u64 <= size, "batch over batchSize");
        }
        documents.extend(
            batch
                .iter()
                .map(|d| d.as_document().expect("documents").clone()),
        );
        id = cursor.get_i64("id").expect("a cursor id");
    }
    Ok(documents)
}

// ---------------------------------------------------------------------------------------------
// Generators (after cairn-query's tests/model.rs).

fn scalar() -> impl Strategy<Value = Bson> {
    prop_oneof![
        4 => (-2i32..4).prop_map(Bson::Int32),
        1 => (-2i64..4).prop_map(Bson::Int64),
        1 => prop_oneof![Just(0.5), Just(2.0), Just(-1.5), Just(f64::NAN), Just(f64::INFINITY)].prop_map(Bson::Double),
        2 => prop_oneof![Just("x"), Just("xy"), Just("y"), Just("")].prop_map(|s| Bson::String(s.into())),
        1 => Just(Bson::Null),
        1 => any::<bool>().prop_map(Bson::Boolean),
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
        prop::option::weighted(0.8, 0i32..40),
    )
        .prop_map(move |(a, b, c, u)| {
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
            if let Some(u) = u {
                document.insert("u", u);
            }
            document
        })
}

fn documents() -> impl Strategy<Value = Vec<Document>> {
    (0usize..24).prop_flat_map(|n| (0..n as i32).map(document).collect::<Vec<_>>())
}

fn path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        3 => Just("a"),
        2 => Just("b"),
        1 => Just("c"),
        2 => Just("a.d"),
        2 => Just("c.d"),
        1 => Just("a.0"),
        2 => Just("_id"),
        1 => Just("u"),
    ]
}

fn operand() -> impl Strategy<Value = Bson> {
    prop_oneof![
        8 => scalar(),
        1 => (0i32..40).prop_map(Bson::Int32),
    ]
}

fn leaf() -> impl Strategy<Value = Document> {
    (
        path(),
        0..20usize,
        operand(),
        prop::collection::vec(operand(), 0..3),
    )
        .prop_map(|(path, op, operand, list)| {
            let condition: Bson = match op {
                0 | 1 => operand,
                2 => Bson::Document(doc! {"$gt": operand}),
                3 => Bson::Document(doc! {"$gte": operand}),
                4 => Bson::Document(doc! {"$lt": operand}),
                5 => Bson::Document(doc! {"$lte": operand}),
                6 => Bson::Document(doc! {"$in": list}),
                7 => Bson::Document(doc! {"$ne": operand}),
                8 => Bson::Document(doc! {"$nin": list}),
                9 => Bson::Document(doc! {"$exists": matches!(operand, Bson::Int32(v) if v > 0)}),
                10 => Bson::Document(doc! {"$regex": "^x"}),
                11 => Bson::Document(doc! {"$elemMatch": {"$gte": operand.clone(), "$lte": 3}}),
                12 => Bson::Document(doc! {"$gt": operand.clone(), "$lt": 3}),
                13 => Bson::Document(doc! {"$not": {"$gt": operand}}),
                14 => Bson::Document(doc! {"$type": "number"}),
                15 => Bson::Document(doc! {"$size": 1}),
                16 => Bson::Document(doc! {"$all": list}),
                17 => Bson::Document(doc! {"$mod": [2, 0]}),
                18 => return doc! {"$expr": {"$lt": [format!("${path}"), operand]}},
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
        2 => Just(doc! {}),
    ]
}

fn sort_spec() -> impl Strategy<Value = Document> {
    let field = prop_oneof![Just("a"), Just("b"), Just("c.d"), Just("u"), Just("_id")];
    let direction = prop_oneof![Just(1), Just(-1)];
    prop::collection::vec((field, direction), 1..3).prop_map(|fields| {
        let mut spec = Document::new();
        for (field, direction) in fields {
            if !spec.contains_key(field) {
                spec.insert(field, direction);
            }
        }
        spec
    })
}

/// A find's sort: none, fields, or `$natural`.
fn find_sort() -> impl Strategy<Value = Option<Document>> {
    prop_oneof![
        3 => Just(None),
        5 => sort_spec().prop_map(Some),
        1 => prop_oneof![Just(1), Just(-1)].prop_map(|d| Some(doc! {"$natural": d})),
    ]
}

/// Projections that cannot fail at run time.
fn projection() -> impl Strategy<Value = Option<Document>> {
    prop_oneof![
        6 => Just(None),
        1 => Just(Some(doc! {"a": 1})),
        1 => Just(Some(doc! {"a": 0, "u": 0})),
        1 => Just(Some(doc! {"_id": 0, "b": 1, "c.d": 1})),
        1 => Just(Some(doc! {"a.d": 0})),
        1 => Just(Some(doc! {"a": {"$slice": 1}, "b": 1})),
        1 => Just(Some(doc! {"a": {"$slice": [-2, 1]}})),
        1 => Just(Some(doc! {"a": {"$elemMatch": {"$gte": 1}}, "u": 1})),
        1 => Just(Some(doc! {"x": "$b", "u": 1})),
    ]
}

#[derive(Debug, Clone)]
struct IndexChoice {
    key: Document,
    unique: bool,
    sparse: bool,
    partial: Option<Document>,
    /// Created on the empty collection (else on the populated one).
    early: bool,
}

fn key_pattern() -> impl Strategy<Value = Document> {
    let field = prop_oneof![
        Just("a"),
        Just("b"),
        Just("c.d"),
        Just("a.d"),
        Just("u"),
        Just("c")
    ];
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

fn index_choice() -> impl Strategy<Value = IndexChoice> {
    prop_oneof![
        // Plain (single, compound, descending; multikey when the data has arrays).
        6 => (key_pattern(), any::<bool>()).prop_map(|(key, early)| IndexChoice { key, unique: false, sparse: false, partial: None, early }),
        // Unique on u (collides now and then; sparse lets documents without u in).
        2 => (prop_oneof![Just(doc! {"u": 1}), Just(doc! {"u": -1, "b": 1})], any::<bool>(), any::<bool>())
            .prop_map(|(key, sparse, early)| IndexChoice { key, unique: true, sparse, partial: None, early }),
        // Unique on anything (mostly refused by the build).
        1 => key_pattern().prop_map(|key| IndexChoice { key, unique: true, sparse: false, partial: None, early: false }),
        1 => (key_pattern(), any::<bool>()).prop_map(|(key, early)| IndexChoice { key, unique: false, sparse: true, partial: None, early }),
        1 => (key_pattern(), prop_oneof![Just(doc! {"b": {"$exists": true}}), Just(doc! {"u": {"$gte": 10}})], any::<bool>())
            .prop_map(|(key, partial, early)| IndexChoice { key, unique: false, sparse: false, partial: Some(partial), early }),
    ]
}

#[derive(Debug, Clone)]
struct FindSpec {
    filter: Document,
    sort: Option<Document>,
    skip: u64,
    limit: u64,
    projection: Option<Document>,
    batch_size: Option<u64>,
}

fn find_spec() -> impl Strategy<Value = FindSpec> {
    (
        filter(),
        find_sort(),
        prop_oneof![3 => Just(0u64), 1 => 1u64..4],
        prop_oneof![2 => Just(0u64), 1 => 1u64..6],
        projection(),
        prop::option::of(0u64..4),
    )
        .prop_map(
            |(filter, sort, skip, limit, projection, batch_size)| FindSpec {
                filter,
                sort,
                skip,
                limit,
                projection,
                batch_size,
            },
        )
}

fn update_document() -> impl Strategy<Value = Document> {
    let set_path = prop_oneof![
        Just("a"),
        Just("b"),
        Just("c"),
        Just("c.d"),
        Just("a.d"),
        Just("u"),
        Just("a.0"),
        Just("a.$"),
        Just("a.$[]"),
        Just("e")
    ];
    let number = prop_oneof![(-1i32..3).prop_map(Bson::Int32), Just(Bson::Double(0.5))];
    let operation = prop_oneof![
        4 => (set_path.clone(), value()).prop_map(|(p, v)| ("$set", p, v)),
        2 => set_path.prop_map(|p| ("$unset", p, Bson::String(String::new()))),
        2 => (prop_oneof![Just("a"), Just("u"), Just("c.d")], number.clone()).prop_map(|(p, v)| ("$inc", p, v)),
        1 => (prop_oneof![Just("a"), Just("u")], number).prop_map(|(p, v)| ("$mul", p, v)),
        2 => (prop_oneof![Just("a"), Just("c")], scalar()).prop_map(|(p, v)| ("$push", p, v)),
        1 => (prop_oneof![Just("a"), Just("c")], scalar()).prop_map(|(p, v)| ("$addToSet", p, v)),
        1 => (prop_oneof![Just("a"), Just("c")], operand()).prop_map(|(p, v)| ("$pull", p, v)),
        1 => (prop_oneof![Just("a"), Just("c")], prop_oneof![Just(1), Just(-1)]).prop_map(|(p, v)| ("$pop", p, Bson::Int32(v))),
        1 => prop_oneof![Just(("b", "e")), Just(("e", "b")), Just(("c.d", "b")), Just(("a", "c"))]
            .prop_map(|(from, to)| ("$rename", from, Bson::String(to.into()))),
        1 => (prop_oneof![Just("u"), Just("a")], (0i32..40).prop_map(Bson::Int32)).prop_map(|(p, v)| ("$min", p, v)),
        1 => (prop_oneof![Just("u"), Just("a")], (0i32..40).prop_map(Bson::Int32)).prop_map(|(p, v)| ("$max", p, v)),
        1 => value().prop_map(|v| ("$setOnInsert", "b", v)),
    ];
    prop_oneof![
        5 => prop::collection::vec(operation, 1..3).prop_map(|operations| {
            let mut update = Document::new();
            for (operator, path, value) in operations {
                match update.get_mut(operator) {
                    Some(Bson::Document(fields)) => {
                        fields.insert(path, value);
                    }
                    _ => {
                        update.insert(operator, doc! {path: value});
                    }
                }
            }
            update
        }),
        1 => (value(), prop::option::of(0i32..40)).prop_map(|(a, u)| {
            let mut replacement = doc! {"a": a};
            if let Some(u) = u {
                replacement.insert("u", u);
            }
            replacement
        }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Find(FindSpec),
    Count {
        filter: Document,
        skip: u64,
        limit: u64,
        hint: usize,
    },
    Distinct {
        key: &'static str,
        filter: Document,
    },
    Aggregate {
        kind: usize,
        filter: Document,
        sort: Document,
        skip: u64,
        limit: u64,
        hint: usize,
    },
    Update {
        filter: Document,
        update: Document,
        multi: bool,
        upsert: bool,
    },
    Delete {
        filter: Document,
        one: bool,
    },
    FindAndModify {
        filter: Document,
        sort: Option<Document>,
        update: Option<Document>,
        new: bool,
        upsert: bool,
        fields: Option<Document>,
    },
    CreateIndex(IndexChoice),
    DropIndex(usize),
    /// A find whose cursor stays open across a write: its getMores still read the collection as
    /// it was when the find started.
    FindAcrossWrite(FindSpec, Box<Op>),
}

fn write_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (filter(), update_document(), any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(filter, update, multi, upsert)| Op::Update { filter, update, multi, upsert }),
        2 => (filter(), any::<bool>()).prop_map(|(filter, one)| Op::Delete { filter, one }),
        2 => (filter(), prop::option::of(sort_spec()), prop::option::weighted(0.8, update_document()), any::<bool>(), prop::bool::weighted(0.3), projection())
            .prop_map(|(filter, sort, update, new, upsert, fields)| Op::FindAndModify {
                filter, sort, upsert: upsert && update.is_some(), update, new, fields,
            }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => find_spec().prop_map(Op::Find),
        1 => (filter(), 0u64..3, 0u64..5, 0usize..8).prop_map(|(filter, skip, limit, hint)| Op::Count { filter, skip, limit, hint }),
        1 => (prop_oneof![Just("a"), Just("b"), Just("c.d"), Just("a.d"), Just("u")], filter())
            .prop_map(|(key, filter)| Op::Distinct { key, filter }),
        2 => (0usize..5, filter(), sort_spec(), 0u64..3, 1u64..6, 0usize..8)
            .prop_map(|(kind, filter, sort, skip, limit, hint)| Op::Aggregate { kind, filter, sort, skip, limit, hint }),
        8 => write_op(),
        2 => (find_spec(), write_op()).prop_map(|(spec, write)| Op::FindAcrossWrite(spec, Box::new(write))),
        1 => index_choice().prop_map(Op::CreateIndex),
        1 => (0usize..8).prop_map(Op::DropIndex),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model.

struct ModelIndex {
    name: String,
    pattern: KeyPattern,
    unique: bool,
    sparse: bool,
    partial: Option<Matcher>,
    spec: Document,
}

impl ModelIndex {
    fn new(name: String, choice: &IndexChoice) -> ModelIndex {
        let mut spec = doc! {"key": choice.key.clone(), "name": name.clone()};
        if choice.unique {
            spec.insert("unique", true);
        }
        if choice.sparse {
            spec.insert("sparse", true);
        }
        if let Some(partial) = &choice.partial {
            spec.insert("partialFilterExpression", partial.clone());
        }
        ModelIndex {
            name,
            pattern: KeyPattern::parse(&choice.key).expect("generated key patterns parse"),
            unique: choice.unique,
            sparse: choice.sparse,
            partial: choice
                .partial
                .as_ref()
                .map(|p| Matcher::parse(p).expect("generated partial filters parse")),
            spec,
        }
    }

    fn keys(&self, document: &Document) -> cairn_types::Result<IndexKeys> {
        self.pattern
            .keys_for_index(document, self.sparse, self.partial.as_ref())
    }

    /// Whether the index holds the document (sparse and partial indexes leave some out).
    fn holds(&self, document: &Document) -> bool {
        self.keys(document).is_ok_and(|keys| !keys.keys.is_empty())
    }

    /// Whether a hinted scan of this index answers queries the way brute force over the
    /// documents it holds does. A partial index is hinted only in the consistency check.
    fn hintable(&self) -> bool {
        self.partial.is_none()
    }

    /// Whether the planner may choose it unhinted (and so whether a hint is complete).
    fn complete(&self) -> bool {
        !self.sparse && self.partial.is_none()
    }
}

struct Model {
    collection: String,
    documents: BTreeMap<Vec<u8>, Document>,
    indexes: Vec<ModelIndex>,
    next_index: usize,
}

impl Model {
    fn ns(&self) -> Namespace {
        Namespace::new(DB, self.collection.as_str())
    }

    fn sorted(&self) -> Vec<Document> {
        self.documents.values().cloned().collect()
    }
}

/// Why `document` has no keys in some index (parallel arrays), if it has none.
fn key_refusal(indexes: &[ModelIndex], document: &Document) -> Option<String> {
    indexes.iter().find_map(|index| {
        index
            .keys(document)
            .err()
            .map(|error| format!("index {}: {error}", index.name))
    })
}

/// Why `document` cannot stand next to `others` in a unique index, if it cannot (documents with
/// its own `_id` are not others).
fn unique_refusal<'a>(
    indexes: &[ModelIndex],
    document: &Document,
    others: impl Iterator<Item = &'a Document> + Clone,
) -> Option<String> {
    let own_id = id_key(document);
    for index in indexes.iter().filter(|index| index.unique) {
        let Ok(keys) = index.keys(document) else {
            continue;
        };
        for other in others.clone() {
            if id_key(other) == own_id {
                continue;
            }
            let Ok(other_keys) = index.keys(other) else {
                continue;
            };
            if keys
                .keys
                .iter()
                .any(|key| other_keys.keys.iter().any(|o| o.bytes == key.bytes))
            {
                return Some(format!("unique index {} ({other})", index.name));
            }
        }
    }
    None
}

fn refusal<'a>(
    indexes: &[ModelIndex],
    document: &Document,
    others: impl Iterator<Item = &'a Document> + Clone,
) -> Option<String> {
    key_refusal(indexes, document).or_else(|| unique_refusal(indexes, document, others))
}

/// Documents compared byte for byte (NaN equals itself).
fn same_documents(left: &BTreeMap<Vec<u8>, Document>, right: &BTreeMap<Vec<u8>, Document>) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .all(|((lk, l), (rk, r))| lk == rk && bytes(l) == bytes(r))
}

/// Values compared byte for byte (NaN equals itself).
fn same_value(left: &Bson, right: &Bson) -> bool {
    bytes(&doc! {"v": left.clone()}) == bytes(&doc! {"v": right.clone()})
}

fn int(reply: &Document, field: &str) -> Option<i64> {
    match reply.get(field) {
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Int64(n)) => Some(*n),
        _ => None,
    }
}

/// The model's view of a write that may touch a document: its new version, or why it fails.
fn apply_update(
    update: &Update,
    filter: &Matcher,
    document: &Document,
) -> Result<(Document, bool), String> {
    let details = filter
        .match_details(document)
        .map_err(|e| e.to_string())?
        .ok_or("no longer matches")?;
    let mut context = UpdateContext::new(bson::DateTime::now());
    context.matched_position = details.array_position;
    let outcome = update
        .apply(document, &context)
        .map_err(|e| e.to_string())?;
    if !outcome.modified {
        return Ok((document.clone(), false));
    }
    if outcome.document.get("_id") != document.get("_id") {
        return Err("_id changed".into());
    }
    if outcome.document.keys().any(|k| k.starts_with('$')) {
        return Err("$ field".into());
    }
    Ok((outcome.document, true))
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// `actual` must be a legal answer for `ordered` (every matching document in sort order, ties
/// grouped by `same`) windowed by skip and limit and shaped by `shape`: the right length, and
/// each run of tied documents answered by a sub-multiset of that run's shaped documents
/// (`shape` for the expected documents, `compared` for the actual ones).
fn check_window(
    actual: &[Document],
    ordered: &[Document],
    same: &dyn Fn(&Document, &Document) -> bool,
    (skip, limit): (u64, u64),
    shape: &dyn Fn(&Document) -> Vec<u8>,
    compared: &dyn Fn(&Document) -> Vec<u8>,
) -> Result<(), String> {
    let start = (skip as usize).min(ordered.len());
    let end = if limit == 0 {
        ordered.len()
    } else {
        (start + limit as usize).min(ordered.len())
    };
    if actual.len() != end - start {
        return Err(format!(
            "{} results, expected {} (of {} matching)",
            actual.len(),
            end - start,
            ordered.len()
        ));
    }
    let mut group_start = 0;
    while group_start < ordered.len() {
        let mut group_end = group_start + 1;
        while group_end < ordered.len() && same(&ordered[group_start], &ordered[group_end]) {
            group_end += 1;
        }
        let from = group_start.max(start);
        let to = group_end.min(end);
        if from < to {
            let mut available: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
            for document in &ordered[group_start..group_end] {
                *available.entry(shape(document)).or_default() += 1;
            }
            for position in from..to {
                let got = compared(&actual[position - start]);
                match available.get_mut(&got) {
                    Some(count) if *count > 0 => *count -= 1,
                    _ => {
                        return Err(format!(
                            "result {} is {}, not one of the tied expected documents {:?}",
                            position - start,
                            actual[position - start],
                            ordered[group_start..group_end]
                                .iter()
                                .map(|d| d.to_string())
                                .collect::<Vec<_>>()
                        ));
                    }
                }
            }
        }
        group_start = group_end;
    }
    Ok(())
}

fn canonical(document: &Document) -> Vec<u8> {
    keystring::encode(&Bson::Document(document.clone()))
}

/// Every document through `$natural` (small batches, so getMore runs).
fn scan_natural(collection: &str, forward: bool) -> Vec<Document> {
    let reply = run(doc! {
        "find": collection,
        "sort": {"$natural": if forward { 1 } else { -1 }},
        "batchSize": 5,
    });
    drain(collection, reply, Some(5)).expect("a $natural scan succeeds")
}

/// The collection and every index agree with the model.
fn check_consistency(model: &Model, context: &str) -> Result<(), TestCaseError> {
    let expected = model.sorted();
    let actual = scan_natural(&model.collection, true);
    prop_assert_eq!(
        actual.iter().map(bytes).collect::<Vec<_>>(),
        expected.iter().map(bytes).collect::<Vec<_>>(),
        "$natural scan after {}: {:?}",
        context,
        actual
    );
    let backward = scan_natural(&model.collection, false);
    prop_assert_eq!(
        backward.iter().rev().map(bytes).collect::<Vec<_>>(),
        expected.iter().map(bytes).collect::<Vec<_>>(),
        "$natural: -1 scan after {}",
        context
    );
    let engine = node().engine();
    let meta = engine
        .latest_collection(&model.ns())
        .expect("the collection exists");
    let catalog: BTreeSet<String> = meta.indexes.iter().map(|i| i.name.clone()).collect();
    let modelled: BTreeSet<String> = model.indexes.iter().map(|i| i.name.clone()).collect();
    prop_assert_eq!(
        catalog,
        modelled,
        "indexes in the catalog after {}",
        context
    );
    let snapshot = engine.snapshot(ReadAt::Latest).expect("a snapshot");
    for index in &model.indexes {
        let stored = meta.index(&index.name).expect("checked above");
        prop_assert!(stored.ready, "index {} not ready", index.name);
        prop_assert_eq!(stored.unique, index.unique);
        // The entries, straight from the index table.
        let mut entries = Vec::new();
        for entry in snapshot
            .scan(
                stored.ident,
                (Bound::Unbounded, Bound::Unbounded),
                ScanDirection::Forward,
            )
            .expect("the index table scans")
        {
            entries.push(entry.expect("index entries read"));
        }
        let mut wanted = Vec::new();
        let mut multikey = BTreeSet::new();
        for document in &expected {
            let id = id_key(document);
            let keys = index.keys(document).expect("stored documents have keys");
            for (field, components) in index.pattern.fields.iter().zip(&keys.multikey_paths) {
                for &component in components {
                    multikey.insert(field.path.parts()[..=component].join("."));
                }
            }
            for key in keys.keys {
                let mut entry = key.bytes.clone();
                if !index.unique {
                    entry.extend_from_slice(&id);
                }
                wanted.push((entry, id.clone()));
            }
        }
        wanted.sort();
        prop_assert!(
            entries == wanted,
            "index {} {} after {}: {} entries, expected {}",
            index.name,
            index.spec,
            context,
            entries.len(),
            wanted.len()
        );
        let recorded: BTreeSet<String> = stored.multikey_paths.iter().cloned().collect();
        prop_assert!(
            multikey.is_subset(&recorded),
            "index {} multikey paths {:?} miss some of {:?}",
            index.name,
            recorded,
            multikey
        );
        // A scan hinted through it fetches the documents it holds.
        let reply = run(doc! {"find": &model.collection, "hint": &index.name, "batchSize": 4});
        let hinted = drain(&model.collection, reply, Some(4))
            .map_err(|reply| TestCaseError::fail(format!("hinted scan failed: {reply}")))?;
        let mut hinted: Vec<Vec<u8>> = hinted.iter().map(bytes).collect();
        hinted.sort();
        let mut held: Vec<Vec<u8>> = expected
            .iter()
            .filter(|d| index.holds(d))
            .map(bytes)
            .collect();
        held.sort();
        prop_assert_eq!(
            hinted,
            held,
            "scan hinted through {} after {}",
            index.name,
            context
        );
    }
    Ok(())
}

/// Reads the collection back (checked by the caller against the model's allowed outcomes).
fn server_documents(collection: &str) -> BTreeMap<Vec<u8>, Document> {
    scan_natural(collection, true)
        .into_iter()
        .map(|d| (id_key(&d), d))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Reads.

/// Runs the find hinted every way (or, with `between`, unhinted only, running `between` after
/// its first batch) and checks each answer against brute force.
fn check_find(
    model: &Model,
    spec: &FindSpec,
    mut between: Option<&mut dyn FnMut()>,
) -> Result<(), TestCaseError> {
    let matcher = Matcher::parse(&spec.filter).expect("generated filters parse");
    let projection = spec
        .projection
        .as_ref()
        .map(|p| Projection::parse(p).expect("generated projections parse"));
    let shape = |document: &Document| -> Vec<u8> {
        match &projection {
            Some(projection) => {
                bytes(&projection.apply(document, None).expect("projections apply"))
            }
            None => bytes(document),
        }
    };
    let natural = spec
        .sort
        .as_ref()
        .and_then(|s| s.get("$natural"))
        .map(|d| d.as_i32() != Some(-1));
    let sort = match (&spec.sort, natural) {
        (Some(sort), None) => Some(SortSpec::parse(sort).expect("generated sorts parse")),
        _ => None,
    };
    // Hints: none, $natural both ways, every index (sparse ones answer for what they hold).
    let mut hints: Vec<(Option<Bson>, Option<&ModelIndex>)> = vec![(None, None)];
    if natural.is_none() && between.is_none() {
        hints.push((Some(Bson::Document(doc! {"$natural": 1})), None));
        hints.push((Some(Bson::Document(doc! {"$natural": -1})), None));
        hints.push((Some(Bson::String("_id_".into())), None));
        hints.push((Some(Bson::Document(doc! {"_id": 1})), None));
        for index in model.indexes.iter().filter(|i| i.hintable()) {
            hints.push((Some(Bson::String(index.name.clone())), Some(index)));
            hints.push((
                Some(Bson::Document(index.pattern.source().clone())),
                Some(index),
            ));
        }
    }
    for (hint, through) in hints {
        let mut ordered: Vec<Document> = model
            .documents
            .values()
            .filter(|d| through.is_none_or(|index| index.holds(d)))
            .filter(|d| matcher.matches(d))
            .cloned()
            .collect();
        if let Some(sort) = &sort {
            sort.sort(&mut ordered);
        }
        if natural == Some(false) {
            ordered.reverse();
        }
        let same = |a: &Document, b: &Document| match (&sort, natural) {
            (Some(sort), _) => sort.compare(a, b) == std::cmp::Ordering::Equal,
            (None, Some(_)) => false,
            (None, None) => true,
        };
        let mut command = doc! {"find": &model.collection, "filter": spec.filter.clone()};
        if let Some(sort) = &spec.sort {
            command.insert("sort", sort.clone());
        }
        if spec.skip > 0 {
            command.insert("skip", spec.skip as i64);
        }
        if spec.limit > 0 {
            command.insert("limit", spec.limit as i64);
        }
        if let Some(projection) = &spec.projection {
            command.insert("projection", projection.clone());
        }
        if let Some(size) = spec.batch_size {
            command.insert("batchSize", size as i64);
        }
        if let Some(hint) = &hint {
            command.insert("hint", hint.clone());
        }
        let reply = run(command.clone());
        let actual = match between.as_mut() {
            Some(between) => drain_with(&model.collection, reply, spec.batch_size, *between),
            None => drain(&model.collection, reply, spec.batch_size),
        }
        .map_err(|reply| TestCaseError::fail(format!("{command} failed: {reply}")))?;
        count(Stat::Finds);
        if !actual.is_empty() {
            count(Stat::FindsWithResults);
        }
        if let Err(message) = check_window(
            &actual,
            &ordered,
            &same,
            (spec.skip, spec.limit),
            &shape,
            &bytes,
        ) {
            let explain = run(doc! {"explain": command.clone(), "verbosity": "queryPlanner"});
            return Err(TestCaseError::fail(format!(
                "{command}: {message}\nactual {actual:?}\nplan {}",
                explain
                    .get_document("queryPlanner")
                    .map(|q| q.get("winningPlan").cloned().unwrap_or(Bson::Null))
                    .unwrap_or(Bson::Null)
            )));
        }
    }
    Ok(())
}

/// A hint for count or aggregate: none, `$natural` or a complete index.
fn pick_hint(model: &Model, choice: usize) -> Option<Bson> {
    let complete: Vec<&ModelIndex> = model.indexes.iter().filter(|i| i.complete()).collect();
    match choice {
        0 | 1 => None,
        2 => Some(Bson::Document(doc! {"$natural": 1})),
        n if !complete.is_empty() => Some(Bson::String(complete[n % complete.len()].name.clone())),
        _ => None,
    }
}

fn check_count(
    model: &Model,
    filter: &Document,
    skip: u64,
    limit: u64,
    hint: usize,
) -> Result<(), TestCaseError> {
    let matcher = Matcher::parse(filter).expect("generated filters parse");
    let matching = model
        .documents
        .values()
        .filter(|d| matcher.matches(d))
        .count() as u64;
    let mut expected = matching.saturating_sub(skip);
    if limit > 0 {
        expected = expected.min(limit);
    }
    let mut command = doc! {"count": &model.collection, "query": filter.clone(), "skip": skip as i64, "limit": limit as i64};
    if let Some(hint) = pick_hint(model, hint) {
        command.insert("hint", hint);
    }
    let reply = run(command.clone());
    prop_assert!(is_ok(&reply), "{} failed: {}", command, reply);
    prop_assert_eq!(int(&reply, "n"), Some(expected as i64), "{}", command);
    Ok(())
}

fn check_distinct(model: &Model, key: &str, filter: &Document) -> Result<(), TestCaseError> {
    let matcher = Matcher::parse(filter).expect("generated filters parse");
    let matching: Vec<&Document> = model
        .documents
        .values()
        .filter(|d| matcher.matches(d))
        .collect();
    let expected: Vec<Vec<u8>> = distinct_values(matching.into_iter(), key)
        .iter()
        .map(keystring::encode)
        .collect();
    let command = doc! {"distinct": &model.collection, "key": key, "query": filter.clone()};
    let reply = run(command.clone());
    prop_assert!(is_ok(&reply), "{} failed: {}", command, reply);
    let mut actual: Vec<Vec<u8>> = reply
        .get_array("values")
        .expect("values")
        .iter()
        .map(keystring::encode)
        .collect();
    actual.sort();
    let mut expected = expected;
    expected.sort();
    prop_assert_eq!(actual, expected, "{}", command);
    Ok(())
}

fn check_aggregate(
    model: &Model,
    kind: usize,
    filter: &Document,
    sort: &Document,
    skip: u64,
    limit: u64,
    hint: usize,
) -> Result<(), TestCaseError> {
    let group = doc! {"$group": {"_id": "$b", "n": {"$sum": 1}, "total": {"$sum": "$u"}, "low": {"$min": "$u"}, "high": {"$max": "$u"}}};
    let pipeline: Vec<Document> = match kind {
        0 => vec![
            doc! {"$match": filter.clone()},
            group,
            doc! {"$sort": {"_id": 1}},
        ],
        1 => vec![
            doc! {"$match": filter.clone()},
            doc! {"$sort": sort.clone()},
            doc! {"$skip": skip as i64},
            doc! {"$limit": limit as i64},
        ]
        .into_iter()
        .filter(|stage| stage.get_i64("$skip").ok() != Some(0))
        .collect(),
        2 => vec![
            doc! {"$match": filter.clone()},
            doc! {"$project": {"a": 1, "c.d": 1}},
        ],
        3 => vec![
            doc! {"$unwind": "$a"},
            doc! {"$group": {"_id": "$a", "n": {"$sum": 1}}},
            doc! {"$sort": {"_id": -1}},
        ],
        _ => vec![doc! {"$match": filter.clone()}, doc! {"$count": "n"}],
    };
    let stages: Vec<Bson> = pipeline.iter().cloned().map(Bson::Document).collect();
    let parsed = Pipeline::parse(&stages, AggregateOptions::default()).expect("pipelines parse");
    let expected = parsed
        .run(model.sorted(), &mut NoSource)
        .expect("pipelines run");
    let mut command = doc! {"aggregate": &model.collection, "pipeline": stages.clone(), "cursor": {"batchSize": 2}};
    if let Some(hint) = pick_hint(model, hint) {
        command.insert("hint", hint);
    }
    let actual = drain(&model.collection, run(command.clone()), Some(2))
        .map_err(|reply| TestCaseError::fail(format!("{command} failed: {reply}")))?;
    match kind {
        // Full documents in sort order, ties in any order.
        1 => {
            let spec = SortSpec::parse(sort).expect("generated sorts parse");
            let matcher = Matcher::parse(filter).expect("generated filters parse");
            let mut ordered: Vec<Document> = model
                .documents
                .values()
                .filter(|d| matcher.matches(d))
                .cloned()
                .collect();
            spec.sort(&mut ordered);
            let same = |a: &Document, b: &Document| spec.compare(a, b) == std::cmp::Ordering::Equal;
            check_window(&actual, &ordered, &same, (skip, limit), &bytes, &bytes)
                .map_err(|message| TestCaseError::fail(format!("{command}: {message}")))?;
        }
        // Unordered output: compare as multisets.
        2 => {
            let mut got: Vec<Vec<u8>> = actual.iter().map(bytes).collect();
            let mut wanted: Vec<Vec<u8>> = expected.iter().map(bytes).collect();
            got.sort();
            wanted.sort();
            prop_assert_eq!(got, wanted, "{}", command);
        }
        // Groups in _id order (arrays sort by an element, so two groups may tie); the
        // representative of equal numbers may differ, so compare by value.
        _ => {
            let order = match kind {
                0 => doc! {"_id": 1},
                3 => doc! {"_id": -1},
                _ => Document::new(),
            };
            let spec = SortSpec::parse(&order).expect("sorts parse");
            let same = |a: &Document, b: &Document| {
                !spec.is_empty() && spec.compare(a, b) == std::cmp::Ordering::Equal
            };
            check_window(&actual, &expected, &same, (0, 0), &canonical, &canonical).map_err(
                |message| {
                    TestCaseError::fail(format!(
                        "{command}: {message}\nactual {actual:?}\nexpected {expected:?}"
                    ))
                },
            )?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Writes.

fn write_error_count(reply: &Document) -> usize {
    reply.get_array("writeErrors").map_or(0, Vec::len)
}

fn failed(reply: &Document) -> bool {
    !is_ok(reply) || write_error_count(reply) > 0
}

/// What the model allows a write to do to one document it may touch: its new version (and
/// whether that is a change), or why the write fails on it.
type Candidates = BTreeMap<Vec<u8>, Result<(Document, bool), String>>;

/// Each candidate's outcome. `single`: the write touches one document, so a unique clash with
/// the other documents as they are is certain; a multi-update's clashes depend on the order it
/// visits documents in and are judged by `error_explained` and the index check.
fn candidates_for(
    model: &Model,
    filter: &Matcher,
    update: &Update,
    among: impl Iterator<Item = Vec<u8>>,
    single: bool,
) -> Candidates {
    among
        .map(|key| {
            let document = &model.documents[&key];
            let outcome = apply_update(update, filter, document).and_then(|(new, modified)| {
                if !modified {
                    return Ok((new, false));
                }
                let reason = if single {
                    let others = model.documents.values().filter(|d| id_key(d) != key);
                    refusal(&model.indexes, &new, others)
                } else {
                    key_refusal(&model.indexes, &new)
                };
                match reason {
                    Some(reason) => Err(reason),
                    None => Ok((new, true)),
                }
            });
            (key, outcome)
        })
        .collect()
}

/// Whether a write error is explained: some candidate fails on its own, or its new version
/// cannot stand next to another document (old or new version) in a unique index.
fn error_explained(model: &Model, candidates: &Candidates) -> bool {
    let mut everyone: Vec<Document> = model.sorted();
    everyone.extend(
        candidates
            .values()
            .filter_map(|c| c.as_ref().ok())
            .map(|(d, _)| d.clone()),
    );
    candidates.values().any(|candidate| match candidate {
        Err(_) => true,
        Ok((new, true)) => unique_refusal(&model.indexes, new, everyone.iter()).is_some(),
        Ok((_, false)) => false,
    })
}

/// Checks the server's documents after a write that may change `candidates` (into their new
/// versions, nothing else) and adopts them. Returns the `_id` keys that changed.
fn adopt_after_write(
    model: &mut Model,
    candidates: &Candidates,
    context: &str,
) -> Result<BTreeSet<Vec<u8>>, TestCaseError> {
    let server = server_documents(&model.collection);
    prop_assert_eq!(
        server.keys().collect::<Vec<_>>(),
        model.documents.keys().collect::<Vec<_>>(),
        "documents appeared or disappeared: {}",
        context
    );
    let mut changed = BTreeSet::new();
    for (key, document) in &server {
        let old = &model.documents[key];
        if bytes(document) == bytes(old) {
            continue;
        }
        match candidates.get(key) {
            Some(Ok((new, true))) if bytes(new) == bytes(document) => {
                changed.insert(key.clone());
            }
            other => {
                return Err(TestCaseError::fail(format!(
                    "{context}: {old} became {document}; allowed: {other:?}"
                )));
            }
        }
    }
    model.documents = server;
    Ok(changed)
}

/// The document an upsert inserts (`_id` left to the server when the query gives none), or
/// why it cannot.
fn upsert_candidate(model: &Model, filter: &Matcher, update: &Update) -> Result<Document, String> {
    let seed = upsert_document(filter, update, bson::DateTime::now()).map_err(|e| e.to_string())?;
    if seed.keys().any(|k| k.starts_with('$')) {
        return Err("$ field".into());
    }
    let probe = match seed.get("_id") {
        Some(id) => {
            if matches!(
                id,
                Bson::Array(_) | Bson::RegularExpression(_) | Bson::Undefined
            ) {
                return Err("bad _id".into());
            }
            if model.documents.contains_key(&keystring::encode(id)) {
                return Err("duplicate _id".into());
            }
            seed.clone()
        }
        // A fresh ObjectId stands in for the server's.
        None => with_id(&seed, &Bson::ObjectId(bson::oid::ObjectId::new())),
    };
    match refusal(&model.indexes, &probe, model.documents.values()) {
        Some(reason) => Err(reason),
        None => Ok(seed),
    }
}

/// `_id` first, then the rest, as the server stores an upserted document.
fn with_id(seed: &Document, id: &Bson) -> Document {
    let mut document = doc! {"_id": id.clone()};
    for (key, value) in seed {
        if key != "_id" {
            document.insert(key.clone(), value.clone());
        }
    }
    document
}

/// Adopts an upsert: exactly one new document, the model's seed with the server's `_id`.
fn adopt_upsert(
    model: &mut Model,
    seed: &Document,
    id: &Bson,
    context: &str,
) -> Result<Document, TestCaseError> {
    count(Stat::Upserts);
    let expected = with_id(seed, id);
    let key = keystring::encode(id);
    let server = server_documents(&model.collection);
    prop_assert_eq!(
        server.len(),
        model.documents.len() + 1,
        "{}: one document more",
        context
    );
    let inserted = server
        .get(&key)
        .ok_or_else(|| TestCaseError::fail(format!("{context}: upserted {id} missing")))?;
    prop_assert_eq!(
        bytes(inserted),
        bytes(&expected),
        "{}: upserted document",
        context
    );
    for (key, document) in &model.documents {
        prop_assert_eq!(
            server.get(key).map(bytes),
            Some(bytes(document)),
            "{}: other documents unchanged",
            context
        );
    }
    model.documents = server;
    Ok(expected)
}

fn assert_unchanged(model: &Model, context: &str) -> Result<(), TestCaseError> {
    let server = server_documents(&model.collection);
    prop_assert!(
        same_documents(&server, &model.documents),
        "{}: the documents changed",
        context
    );
    Ok(())
}

fn run_update(
    model: &mut Model,
    filter: &Document,
    update: &Document,
    multi: bool,
    upsert: bool,
) -> Result<(), TestCaseError> {
    let command = doc! {
        "update": &model.collection,
        "updates": [{"q": filter.clone(), "u": update.clone(), "multi": multi, "upsert": upsert}],
    };
    let context = command.to_string();
    let reply = run(command.clone());
    let parsed = UpdateCommand::parse(&command).and_then(|c| c.updates[0].to_update(None));
    let Ok((matcher, update)) = parsed else {
        prop_assert!(
            failed(&reply),
            "{}: accepted an update the model refuses: {}",
            context,
            reply
        );
        return assert_unchanged(model, &context);
    };
    let matched: Vec<Vec<u8>> = model
        .documents
        .iter()
        .filter(|(_, d)| matcher.matches(d))
        .map(|(k, _)| k.clone())
        .collect();
    if matched.is_empty() {
        if !upsert {
            prop_assert!(!failed(&reply), "{}: {}", context, reply);
            prop_assert_eq!(int(&reply, "n"), Some(0), "{}", context);
            return assert_unchanged(model, &context);
        }
        match upsert_candidate(model, &matcher, &update) {
            Err(reason) => {
                prop_assert!(
                    failed(&reply),
                    "{}: the upsert should fail ({}): {}",
                    context,
                    reason,
                    reply
                );
                assert_unchanged(model, &context)?;
            }
            Ok(seed) => {
                prop_assert!(!failed(&reply), "{}: upsert failed: {}", context, reply);
                prop_assert_eq!(int(&reply, "n"), Some(1), "{}", context);
                let upserted = reply.get_array("upserted").expect("an upserted entry");
                let id = upserted[0]
                    .as_document()
                    .and_then(|u| u.get("_id"))
                    .expect("an upserted _id");
                adopt_upsert(model, &seed, id, &context)?;
            }
        }
        return Ok(());
    }
    let candidates = candidates_for(model, &matcher, &update, matched.iter().cloned(), !multi);
    let explained = error_explained(model, &candidates);
    let changed = adopt_after_write(model, &candidates, &context)?;
    count(if failed(&reply) {
        Stat::WritesRefused
    } else {
        Stat::WritesApplied
    });
    if failed(&reply) {
        prop_assert!(explained, "{}: unexplained error {}", context, reply);
        if !multi {
            prop_assert!(
                changed.is_empty(),
                "{}: a failed single update wrote",
                context
            );
        }
        return Ok(());
    }
    let n = int(&reply, "n").expect("n");
    let modified = int(&reply, "nModified").expect("nModified");
    if multi {
        prop_assert!(
            candidates.values().all(Result::is_ok),
            "{}: succeeded where the model fails: {:?}",
            context,
            candidates
        );
        let wanted: BTreeSet<Vec<u8>> = candidates
            .iter()
            .filter(|(_, c)| matches!(c, Ok((_, true))))
            .map(|(k, _)| k.clone())
            .collect();
        prop_assert_eq!(&changed, &wanted, "{}", context);
        prop_assert_eq!(n, matched.len() as i64, "{}", context);
        prop_assert_eq!(modified, wanted.len() as i64, "{}", context);
    } else {
        prop_assert_eq!(n, 1, "{}", context);
        prop_assert!(
            changed.len() <= 1,
            "{}: a single update wrote {:?}",
            context,
            changed
        );
        prop_assert_eq!(modified, changed.len() as i64, "{}", context);
        if changed.is_empty() {
            prop_assert!(
                candidates.values().any(|c| matches!(c, Ok((_, false)))),
                "{}: nothing written but every candidate changes",
                context
            );
        }
    }
    Ok(())
}

fn run_delete(model: &mut Model, filter: &Document, one: bool) -> Result<(), TestCaseError> {
    let command = doc! {
        "delete": &model.collection,
        "deletes": [{"q": filter.clone(), "limit": if one { 1 } else { 0 }}],
    };
    let context = command.to_string();
    let reply = run(command);
    prop_assert!(!failed(&reply), "{}: {}", context, reply);
    let matcher = Matcher::parse(filter).expect("generated filters parse");
    let matched: BTreeSet<Vec<u8>> = model
        .documents
        .iter()
        .filter(|(_, d)| matcher.matches(d))
        .map(|(k, _)| k.clone())
        .collect();
    let server = server_documents(&model.collection);
    let removed: BTreeSet<Vec<u8>> = model
        .documents
        .keys()
        .filter(|k| !server.contains_key(*k))
        .cloned()
        .collect();
    prop_assert!(
        removed.is_subset(&matched),
        "{}: removed a document that does not match",
        context
    );
    let expected = if one {
        matched.len().min(1)
    } else {
        matched.len()
    };
    prop_assert_eq!(removed.len(), expected, "{}", context);
    prop_assert_eq!(int(&reply, "n"), Some(expected as i64), "{}", context);
    for (key, document) in &server {
        prop_assert_eq!(
            bytes(document),
            bytes(&model.documents[key]),
            "{}: a kept document changed",
            context
        );
    }
    model.documents = server;
    Ok(())
}

struct FindAndModifySpec<'a> {
    filter: &'a Document,
    sort: &'a Option<Document>,
    update: &'a Option<Document>,
    new: bool,
    upsert: bool,
    fields: &'a Option<Document>,
}

fn run_find_and_modify(
    model: &mut Model,
    spec: FindAndModifySpec<'_>,
) -> Result<(), TestCaseError> {
    let mut command =
        doc! {"findAndModify": &model.collection, "query": spec.filter.clone(), "new": spec.new};
    if let Some(sort) = spec.sort {
        command.insert("sort", sort.clone());
    }
    match spec.update {
        Some(update) => {
            command.insert("update", update.clone());
            command.insert("upsert", spec.upsert);
        }
        None => {
            command.insert("remove", true);
        }
    }
    if let Some(fields) = spec.fields {
        command.insert("fields", fields.clone());
    }
    let context = command.to_string();
    let reply = run(command.clone());
    let parts = FindAndModifyCommand::parse(&command).and_then(|c| c.to_parts());
    let Ok((matcher, sort, update, projection)) = parts else {
        prop_assert!(
            !is_ok(&reply),
            "{}: accepted what the model refuses: {}",
            context,
            reply
        );
        return assert_unchanged(model, &context);
    };
    let shape = |document: &Document| -> Bson {
        Bson::Document(match &projection {
            Some(projection) => projection.apply(document, None).expect("projections apply"),
            None => document.clone(),
        })
    };
    let mut ordered: Vec<Document> = model
        .documents
        .values()
        .filter(|d| matcher.matches(d))
        .cloned()
        .collect();
    sort.sort(&mut ordered);
    // The documents findAndModify may pick: the first run of ties.
    let first: Vec<Vec<u8>> = match ordered.first() {
        Some(head) => ordered
            .iter()
            .take_while(|d| sort.compare(head, d) == std::cmp::Ordering::Equal)
            .map(id_key)
            .collect(),
        None => Vec::new(),
    };
    let value = reply.get("value").cloned().unwrap_or(Bson::Null);
    if first.is_empty() {
        match (&update, spec.upsert) {
            (Some(update), true) => match upsert_candidate(model, &matcher, update) {
                Err(reason) => {
                    prop_assert!(
                        !is_ok(&reply),
                        "{}: the upsert should fail ({}): {}",
                        context,
                        reason,
                        reply
                    );
                    assert_unchanged(model, &context)?;
                }
                Ok(seed) => {
                    prop_assert!(is_ok(&reply), "{}: {}", context, reply);
                    let last = reply
                        .get_document("lastErrorObject")
                        .expect("lastErrorObject");
                    prop_assert_eq!(last.get_bool("updatedExisting").ok(), Some(false));
                    let id = last.get("upserted").expect("upserted").clone();
                    let inserted = adopt_upsert(model, &seed, &id, &context)?;
                    let wanted = if spec.new {
                        shape(&inserted)
                    } else {
                        Bson::Null
                    };
                    prop_assert!(
                        same_value(&value, &wanted),
                        "{}: value {} instead of {}",
                        context,
                        value,
                        wanted
                    );
                }
            },
            _ => {
                prop_assert!(is_ok(&reply), "{}: {}", context, reply);
                prop_assert!(value == Bson::Null, "{}: value {}", context, value);
                assert_unchanged(model, &context)?;
            }
        }
        return Ok(());
    }
    match &update {
        None => {
            prop_assert!(is_ok(&reply), "{}: {}", context, reply);
            let server = server_documents(&model.collection);
            let removed: Vec<Vec<u8>> = model
                .documents
                .keys()
                .filter(|k| !server.contains_key(*k))
                .cloned()
                .collect();
            prop_assert_eq!(removed.len(), 1, "{}: one document removed", context);
            prop_assert_eq!(server.len() + 1, model.documents.len(), "{}", context);
            prop_assert!(
                first.contains(&removed[0]),
                "{}: removed a document the sort does not put first",
                context
            );
            let wanted = shape(&model.documents[&removed[0]]);
            prop_assert!(
                same_value(&value, &wanted),
                "{}: value {} instead of {}",
                context,
                value,
                wanted
            );
            model.documents = server;
        }
        Some(update) => {
            let candidates = candidates_for(model, &matcher, update, first.iter().cloned(), true);
            let explained = error_explained(model, &candidates);
            let before = model.documents.clone();
            let changed = adopt_after_write(model, &candidates, &context)?;
            prop_assert!(changed.len() <= 1, "{}: wrote {:?}", context, changed);
            if !is_ok(&reply) {
                prop_assert!(changed.is_empty(), "{}: failed but wrote", context);
                prop_assert!(explained, "{}: unexplained error {}", context, reply);
                return Ok(());
            }
            // The reply shows one of the first ties, written as the model says.
            let fits = candidates.iter().any(|(key, candidate)| {
                let Ok((after, modified)) = candidate else {
                    return false;
                };
                let written = if *modified {
                    changed.contains(key)
                } else {
                    changed.is_empty()
                };
                let shown = if spec.new { after } else { &before[key] };
                written && same_value(&shape(shown), &value)
            });
            prop_assert!(
                fits,
                "{}: reply {} fits no candidate {:?}",
                context,
                reply,
                candidates
            );
        }
    }
    Ok(())
}

fn create_index(model: &mut Model, choice: &IndexChoice) -> Result<(), TestCaseError> {
    if model
        .indexes
        .iter()
        .any(|i| i.pattern.source() == &choice.key)
    {
        return Ok(());
    }
    let name = format!("i{}", model.next_index);
    model.next_index += 1;
    let index = ModelIndex::new(name, choice);
    let command = doc! {"createIndexes": &model.collection, "indexes": [index.spec.clone()]};
    let reply = run(command.clone());
    // The build succeeds when every document has keys and unique keys do not clash.
    let mut refused = None;
    let mut seen: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for document in model.documents.values() {
        match index.keys(document) {
            Err(error) => {
                refused = Some(error.to_string());
                break;
            }
            Ok(keys) if index.unique => {
                for key in keys.keys {
                    if seen.insert(key.bytes, id_key(document)).is_some() {
                        refused = Some("duplicate key".into());
                    }
                }
            }
            Ok(_) => {}
        }
    }
    match refused {
        Some(reason) => {
            prop_assert!(
                !is_ok(&reply),
                "{}: the build should fail ({}): {}",
                command,
                reason,
                reply
            );
            count(Stat::BuildsRefused);
        }
        None => {
            prop_assert!(is_ok(&reply), "{}: {}", command, reply);
            count(Stat::IndexesBuilt);
            if index.unique {
                count(Stat::UniqueIndexes);
            }
            if model.documents.values().any(|d| {
                index
                    .keys(d)
                    .is_ok_and(|k| k.multikey_paths.iter().any(|p| !p.is_empty()))
            }) {
                count(Stat::MultikeyIndexes);
            }
            model.indexes.push(index);
        }
    }
    Ok(())
}

fn drop_index(model: &mut Model, which: usize) -> Result<(), TestCaseError> {
    if model.indexes.is_empty() {
        return Ok(());
    }
    let index = model.indexes.remove(which % model.indexes.len());
    let reply = run(doc! {"dropIndexes": &model.collection, "index": &index.name});
    prop_assert!(is_ok(&reply), "dropping {}: {}", index.name, reply);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The property.

/// Runs a write (or an index operation) on the server and the model, then checks both agree.
fn run_write(model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Update {
            filter,
            update,
            multi,
            upsert,
        } => run_update(model, filter, update, *multi, *upsert)?,
        Op::Delete { filter, one } => run_delete(model, filter, *one)?,
        Op::FindAndModify {
            filter,
            sort,
            update,
            new,
            upsert,
            fields,
        } => {
            let spec = FindAndModifySpec {
                filter,
                sort,
                update,
                new: *new,
                upsert: *upsert,
                fields,
            };
            run_find_and_modify(model, spec)?;
        }
        Op::CreateIndex(choice) => create_index(model, choice)?,
        Op::DropIndex(which) => drop_index(model, *which)?,
        read => panic!("not a write: {read:?}"),
    }
    check_consistency(model, &format!("{op:?}"))
}

fn check_case(
    documents: Vec<Document>,
    indexes: Vec<IndexChoice>,
    ops: Vec<Op>,
    yield_every: u32,
) -> Result<(), TestCaseError> {
    // Plans yield (and reopen their scans at the last key) every `yield_every` documents.
    let reply = node().run_command(
        &ClientInfo::default(),
        doc! {"setParameter": 1, "internalQueryExecYieldIterations": yield_every as i32, "$db": "admin"},
    );
    prop_assert!(is_ok(&reply), "{}", reply);
    let mut model = Model {
        collection: fresh_collection_name(),
        documents: BTreeMap::new(),
        indexes: Vec::new(),
        next_index: 0,
    };
    let created = run(doc! {"create": &model.collection});
    prop_assert!(is_ok(&created), "{}", created);
    for choice in indexes.iter().filter(|c| c.early) {
        create_index(&mut model, choice)?;
    }
    // Unordered insert: each document is refused on its own (parallel arrays, unique keys).
    if !documents.is_empty() {
        let reply = run(
            doc! {"insert": &model.collection, "documents": documents.clone(), "ordered": false},
        );
        prop_assert!(is_ok(&reply), "{}", reply);
        let mut refused = BTreeSet::new();
        for (position, document) in documents.iter().enumerate() {
            if refusal(&model.indexes, document, model.documents.values()).is_some() {
                refused.insert(position as i32);
            } else {
                model.documents.insert(id_key(document), document.clone());
            }
        }
        let errors: BTreeSet<i32> = reply
            .get_array("writeErrors")
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        e.as_document()
                            .expect("a write error")
                            .get_i32("index")
                            .expect("an index")
                    })
                    .collect()
            })
            .unwrap_or_default();
        prop_assert_eq!(errors, refused, "insert write errors: {}", reply);
        prop_assert_eq!(int(&reply, "n"), Some(model.documents.len() as i64));
    }
    for choice in indexes.iter().filter(|c| !c.early) {
        create_index(&mut model, choice)?;
    }
    check_consistency(&model, "setup")?;
    for op in &ops {
        match op {
            Op::Find(spec) => check_find(&model, spec, None)?,
            Op::Count {
                filter,
                skip,
                limit,
                hint,
            } => check_count(&model, filter, *skip, *limit, *hint)?,
            Op::Distinct { key, filter } => check_distinct(&model, key, filter)?,
            Op::Aggregate {
                kind,
                filter,
                sort,
                skip,
                limit,
                hint,
            } => check_aggregate(&model, *kind, filter, sort, *skip, *limit, *hint)?,
            Op::FindAcrossWrite(spec, write) => {
                let frozen = Model {
                    collection: model.collection.clone(),
                    documents: model.documents.clone(),
                    indexes: Vec::new(),
                    next_index: 0,
                };
                let mut outcome = Ok(());
                let mut between = || outcome = run_write(&mut model, write);
                check_find(&frozen, spec, Some(&mut between))?;
                outcome?;
            }
            write => run_write(&mut model, write)?,
        }
    }
    if std::env::var_os("MODEL_STATS").is_some() {
        let stats: Vec<String> = STAT_NAMES
            .iter()
            .zip(&STATS)
            .map(|(name, value)| format!("{name} {}", value.load(Ordering::Relaxed)))
            .collect();
        eprintln!(
            "so far: {} commands, {}",
            COMMANDS.load(Ordering::Relaxed),
            stats.join(", ")
        );
    }
    let dropped = run(doc! {"drop": &model.collection});
    prop_assert!(is_ok(&dropped), "{}", dropped);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(1000),
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn executor_agrees_with_brute_force(
        documents in documents(),
        indexes in prop::collection::vec(index_choice(), 0..4),
        ops in prop::collection::vec(op(), 1..16),
        yield_every in prop_oneof![Just(1u32), Just(2), Just(3), Just(1000)],
    ) {
        check_case(documents, indexes, ops, yield_every)?;
    }
}

/// Writers update, insert and delete while reads scan indexes with a yield after every
/// document and index builds copy the collection: every document a read returns satisfies its
/// filter (index entry and document come from one snapshot) and comes once; a sort through an
/// index is in order; and once the writers stop, every index (the ones built meanwhile too)
/// holds exactly the entries of the documents.
#[test]
fn reads_and_index_builds_under_concurrent_writers() {
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};
    const DOCUMENTS: i32 = 3000;
    let collection = fresh_collection_name();
    let shaped =
        |id: i32, x: i32| doc! {"_id": id, "x": x, "y": -x, "tags": [x % 7, x % 11, 20 + x % 3]};
    let mut batch = Vec::new();
    for id in 0..DOCUMENTS {
        batch.push(shaped(id, id % 100));
        if batch.len() == 500 {
            let reply = run(doc! {"insert": &collection, "documents": std::mem::take(&mut batch)});
            assert!(is_ok(&reply) && write_error_count(&reply) == 0, "{reply}");
        }
    }
    let reply = run(doc! {"createIndexes": &collection, "indexes": [
        {"key": {"x": 1}, "name": "x"},
        {"key": {"tags": 1}, "name": "tags"},
    ]});
    assert!(is_ok(&reply), "{reply}");
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_millis(1500);
    std::thread::scope(|scope| {
        let mut writers = Vec::new();
        for writer in 0..2 {
            let (collection, stop) = (&collection, &stop);
            writers.push(scope.spawn(move || {
                let mut state = 0x9e37_79b9_u64 + writer;
                let mut next = || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let mut inserted = 0;
                let mut writes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = (next() % DOCUMENTS as u64) as i32;
                    let x = (next() % 100) as i32;
                    let reply = match next() % 6 {
                        0 => run(doc! {"delete": collection, "deletes": [{"q": {"_id": id}, "limit": 1}]}),
                        1 => {
                            inserted += 1;
                            let id = DOCUMENTS * 100 * (writer as i32 + 1) + inserted;
                            run(doc! {"insert": collection, "documents": [shaped(id, x)]})
                        }
                        2 => run(doc! {"update": collection, "updates": [{"q": {"x": x}, "u": {"$inc": {"x": 1, "y": -1}, "$set": {"tags": [(x + 1) % 7, (x + 1) % 11, 20 + (x + 1) % 3]}}, "multi": true}]}),
                        _ => run(doc! {"update": collection, "updates": [{"q": {"_id": id}, "u": shaped(id, x)}]}),
                    };
                    assert!(is_ok(&reply) && write_error_count(&reply) == 0, "{reply}");
                    writes += 1;
                }
                writes
            }));
        }
        let builder = {
            let collection = &collection;
            scope.spawn(move || {
                let mut built = 0;
                while built < 6 {
                    let name = format!("built{built}");
                    let key = if built % 2 == 0 {
                        doc! {"x": -1, "tags": 1}
                    } else {
                        doc! {"tags": -1, "y": 1}
                    };
                    let reply = run(doc! {"createIndexes": collection, "indexes": [{"key": key, "name": &name}]});
                    assert!(is_ok(&reply), "{reply}");
                    if built < 4 {
                        let reply = run(doc! {"dropIndexes": collection, "index": &name});
                        assert!(is_ok(&reply), "{reply}");
                    }
                    built += 1;
                }
            })
        };
        let mut reads = 0;
        while Instant::now() < deadline || !builder.is_finished() {
            reads += 1;
            let reply = node().run_command(
                &ClientInfo::default(),
                doc! {"setParameter": 1, "internalQueryExecYieldIterations": 1, "$db": "admin"},
            );
            assert!(is_ok(&reply), "{reply}");
            let low = reads % 90;
            let filter = doc! {"x": {"$gte": low, "$lt": low + 10}};
            let found = drain(&collection, run(doc! {"find": &collection, "filter": filter.clone(), "hint": "x", "batchSize": 50}), Some(50)).expect("a find through x");
            let mut ids = BTreeSet::new();
            for document in &found {
                let x = document.get_i32("x").expect("x");
                assert!(
                    (low..low + 10).contains(&x),
                    "{document} does not match {filter}"
                );
                assert_eq!(document.get_i32("y").ok(), Some(-x), "{document} is torn");
                assert!(ids.insert(id_key(document)), "{document} twice");
            }
            let tag = reads % 7;
            let found = drain(&collection, run(doc! {"find": &collection, "filter": {"tags": tag}, "hint": "tags", "batchSize": 100}), Some(100)).expect("a find through tags");
            let mut ids = BTreeSet::new();
            for document in &found {
                let tags = document.get_array("tags").expect("tags");
                assert!(
                    tags.contains(&Bson::Int32(tag)),
                    "{document} does not have tag {tag}"
                );
                assert!(ids.insert(id_key(document)), "{document} twice");
            }
            let sorted = drain(&collection, run(doc! {"find": &collection, "sort": {"x": -1}, "projection": {"x": 1}, "batchSize": 400}), Some(400)).expect("a sorted find");
            let xs: Vec<i32> = sorted.iter().map(|d| d.get_i32("x").expect("x")).collect();
            assert!(
                xs.windows(2).all(|w| w[0] >= w[1]),
                "a sort through x out of order"
            );
            let ids: BTreeSet<Vec<u8>> = sorted.iter().map(id_key).collect();
            assert_eq!(
                ids.len(),
                sorted.len(),
                "a sorted scan returned a document twice"
            );
        }
        stop.store(true, Ordering::Relaxed);
        builder.join().expect("the builder");
        for writer in writers {
            let writes = writer.join().expect("a writer");
            assert!(writes > 10, "a writer wrote only {writes} times");
        }
    });
    // The writers stopped: every index agrees with the documents.
    let documents = server_documents(&collection);
    let meta = node()
        .engine()
        .latest_collection(&Namespace::new(DB, collection.as_str()))
        .expect("the collection");
    let indexes = meta
        .indexes
        .iter()
        .map(|stored| {
            ModelIndex::new(
                stored.name.clone(),
                &IndexChoice {
                    key: stored.key.clone(),
                    unique: false,
                    sparse: false,
                    partial: None,
                    early: false,
                },
            )
        })
        .collect();
    let model = Model {
        collection: collection.clone(),
        documents,
        indexes,
        next_index: 0,
    };
    assert!(model.indexes.len() >= 3, "an index was built meanwhile");
    check_consistency(&model, "concurrent writers").expect("indexes agree with the documents");
    let reply = run(doc! {"drop": &collection});
    assert!(is_ok(&reply), "{reply}");
}

/// A cursor reading through an index that is dropped between getMores ends with
/// QueryPlanKilled (175); one scanning the collection goes on.
#[test]
fn a_cursor_through_a_dropped_index_is_killed() {
    let collection = fresh_collection_name();
    let documents: Vec<Document> = (0..20).map(|i| doc! {"_id": i, "a": i % 4}).collect();
    assert!(is_ok(&run(
        doc! {"insert": &collection, "documents": documents}
    )));
    assert!(is_ok(&run(
        doc! {"createIndexes": &collection, "indexes": [{"key": {"a": 1}, "name": "a"}]}
    )));
    let through_index = run(doc! {"find": &collection, "hint": "a", "batchSize": 2});
    let scan = run(
        doc! {"find": &collection, "filter": {"a": 1}, "hint": {"$natural": 1}, "batchSize": 2},
    );
    let cursor = |reply: &Document| reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert!(is_ok(&run(doc! {"dropIndexes": &collection, "index": "a"})));
    let reply = run(doc! {"getMore": cursor(&through_index), "collection": &collection});
    assert_eq!(reply.get_i32("code").ok(), Some(175), "{reply}");
    let rest = run(doc! {"getMore": cursor(&scan), "collection": &collection});
    assert!(is_ok(&rest), "{rest}");
    let batch = rest
        .get_document("cursor")
        .unwrap()
        .get_array("nextBatch")
        .unwrap();
    assert_eq!(batch.len(), 3, "{rest}");
    assert!(is_ok(&run(doc! {"drop": &collection})));
}
