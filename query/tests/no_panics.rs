//! Random, mostly malformed input to every parser and applier: errors are fine, panics are not.
//! Field names and values are drawn from the operator vocabulary so that parsing gets deep.

use bson::{Bson, Document, doc};
use cairn_query::Matcher;
use cairn_query::agg::expression::{Expression, Variables};
use cairn_query::agg::pipeline::{AggregateOptions, NoSource, Pipeline};
use cairn_query::commands::{
    AggregateCommand, CreateIndexesCommand, FindAndModifyCommand, FindCommand, UpdateCommand,
};
use cairn_query::index_keys::KeyPattern;
use cairn_query::planner::{CanonicalQuery, IndexDescriptor, plan};
use cairn_query::projection::Projection;
use cairn_query::sort::SortSpec;
use cairn_query::update::{Update, UpdateContext, upsert_document};
use proptest::prelude::*;

const NAMES: &[&str] = &[
    "a",
    "b",
    "a.b",
    "a.0",
    "a.$",
    "a.$[]",
    "a.$[x]",
    "x",
    "",
    "_id",
    "$eq",
    "$ne",
    "$gt",
    "$lt",
    "$in",
    "$nin",
    "$exists",
    "$type",
    "$size",
    "$all",
    "$elemMatch",
    "$not",
    "$regex",
    "$options",
    "$mod",
    "$and",
    "$or",
    "$nor",
    "$expr",
    "$set",
    "$unset",
    "$inc",
    "$push",
    "$each",
    "$slice",
    "$sort",
    "$position",
    "$pull",
    "$addToSet",
    "$rename",
    "$min",
    "$currentDate",
    "$add",
    "$cond",
    "$ifNull",
    "$concat",
    "$substrCP",
    "$arrayElemAt",
    "$match",
    "$group",
    "$project",
    "$unwind",
    "$count",
    "$lookup",
    "$replaceRoot",
    "newRoot",
    "path",
    "find",
    "filter",
    "limit",
    "updates",
    "q",
    "u",
    "key",
    "name",
    "$sum",
    "$literal",
    "$$ROOT",
    "$a",
    "if",
    "then",
    "else",
];

fn leaf() -> impl Strategy<Value = Bson> {
    prop_oneof![
        (-3i32..4).prop_map(Bson::Int32),
        Just(Bson::Int64(i64::MAX)),
        Just(Bson::Double(f64::NAN)),
        Just(Bson::Double(1.5)),
        Just(Bson::Null),
        Just(Bson::Undefined),
        Just(Bson::Boolean(true)),
        prop::sample::select(NAMES).prop_map(|s| Bson::String(s.to_owned())),
        Just(Bson::MinKey),
        Just(Bson::RegularExpression(bson::Regex {
            pattern: "^a".try_into().unwrap(),
            options: "i".try_into().unwrap()
        })),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    leaf().prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
            prop::collection::vec((prop::sample::select(NAMES), inner), 0..4).prop_map(|fields| {
                let mut document = Document::new();
                for (name, value) in fields {
                    document.insert(name, value);
                }
                Bson::Document(document)
            }),
        ]
    })
}

fn document() -> impl Strategy<Value = Document> {
    prop::collection::vec((prop::sample::select(NAMES), value()), 0..4).prop_map(|fields| {
        let mut document = Document::new();
        for (name, value) in fields {
            document.insert(name, value);
        }
        document
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn parsers_and_appliers_never_panic(spec in document(), target in document(), filters in prop::collection::vec(document(), 0..2)) {
        let now = bson::DateTime::from_millis(0);
        if let Ok(matcher) = Matcher::parse(&spec) {
            let _ = matcher.match_details(&target);
            let _ = matcher.to_document();
            let _ = plan(&CanonicalQuery::new("d.c", matcher.clone()), &[IndexDescriptor::new("a_1", doc! {"a": 1}), IndexDescriptor::new("ab", doc! {"a.b": -1, "x": 1})]);
            if let Ok(update) = Update::parse(&target, None) {
                let _ = upsert_document(&matcher, &update, now);
            }
        }
        if let Ok(update) = Update::parse(&spec, Some(&filters)) {
            let mut context = UpdateContext::new(now);
            context.matched_position = Some(0);
            if let Ok(outcome) = update.apply(&target, &context) {
                // _id never changes (compared as bytes: NaN equals itself there).
                if let Some(id) = target.get("_id") {
                    let bytes = |v: &Bson| bson::serialize_to_vec(&doc! {"v": v.clone()}).unwrap();
                    prop_assert_eq!(outcome.document.get("_id").map(bytes), Some(bytes(id)));
                }
            }
        }
        if let Ok(projection) = Projection::parse(&spec) {
            let _ = projection.apply(&target, Some(1));
        }
        if let Ok(sort) = SortSpec::parse(&spec) {
            let _ = sort.key(&target);
        }
        if let Ok(pattern) = KeyPattern::parse(&spec) {
            let _ = pattern.keys(&target);
        }
        if let Ok(expression) = Expression::parse(&Bson::Document(spec.clone())) {
            let _ = expression.evaluate(&Variables::new(&target));
        }
        let stages: Vec<Bson> = std::iter::once(Bson::Document(spec.clone())).chain(filters.iter().cloned().map(Bson::Document)).collect();
        if let Ok(pipeline) = Pipeline::parse(&stages, AggregateOptions::default()) {
            let _ = pipeline.run(vec![target.clone(), spec.clone()], &mut NoSource);
        }
        for name in ["find", "update", "findAndModify", "aggregate", "createIndexes"] {
            let mut command = doc! {name: "c"};
            command.extend(spec.clone());
            let _ = FindCommand::parse(&command);
            let _ = UpdateCommand::parse(&command);
            let _ = FindAndModifyCommand::parse(&command);
            let _ = AggregateCommand::parse(&command);
            let _ = CreateIndexesCommand::parse(&command);
        }
    }
}

const OPERATORS: &[&str] = &[
    "$set",
    "$unset",
    "$inc",
    "$mul",
    "$min",
    "$max",
    "$rename",
    "$currentDate",
    "$setOnInsert",
    "$push",
    "$addToSet",
    "$pop",
    "$pull",
    "$pullAll",
];
const PATHS: &[&str] = &[
    "a",
    "b",
    "a.b",
    "a.0",
    "a.1.b",
    "a.$",
    "a.$[]",
    "a.$[]. b",
    "a.$[x]",
    "a.$[x].b",
    "a.$[].$[x]",
    "c.d.e",
    "a.10",
    "_id",
    "b.$[x]",
];

fn target_value() -> impl Strategy<Value = Bson> {
    leaf().prop_recursive(3, 20, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Bson::Array),
            prop::collection::vec((prop::sample::select(&["a", "b", "x"][..]), inner), 0..3)
                .prop_map(|fields| {
                    let mut document = Document::new();
                    for (name, value) in fields {
                        document.insert(name, value);
                    }
                    Bson::Document(document)
                }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn updates_never_panic(
        operations in prop::collection::vec((prop::sample::select(OPERATORS), prop::sample::select(PATHS), value()), 1..3),
        fields in prop::collection::vec((prop::sample::select(&["a", "b", "c"][..]), target_value()), 0..3),
        position in prop::option::of(0usize..3),
    ) {
        let mut update = Document::new();
        for (operator, path, value) in operations {
            let entry = update.entry(operator.to_owned()).or_insert_with(|| Bson::Document(Document::new()));
            if let Bson::Document(inner) = entry {
                inner.insert(path, value);
            }
        }
        let mut target = doc! {"_id": 1};
        for (name, value) in fields {
            target.insert(name, value);
        }
        let filters = [doc! {"x": {"$gt": 0}}];
        for array_filters in [None, Some(&filters[..])] {
            if let Ok(parsed) = Update::parse(&update, array_filters) {
                let mut context = UpdateContext::new(bson::DateTime::from_millis(0));
                context.matched_position = position;
                if let Ok(outcome) = parsed.apply(&target, &context) {
                    prop_assert_eq!(outcome.document.get("_id"), Some(&Bson::Int32(1)));
                    let bytes = |d: &Document| bson::serialize_to_vec(d).unwrap();
                    prop_assert_eq!(outcome.modified, bytes(&outcome.document) != bytes(&target));
                }
            }
        }
    }
}
