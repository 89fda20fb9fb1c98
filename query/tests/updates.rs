//! Table tests for updates, from MongoDB's manual, plus bad-input tests.

use bson::{Bson, Document, doc};
use cairn_query::Matcher;
use cairn_query::update::{Update, UpdateContext, upsert_document};

fn now() -> bson::DateTime {
    bson::DateTime::from_millis(1_700_000_000_000)
}

fn apply_with(
    document: &Document,
    update: &Document,
    filters: Option<&[Document]>,
    position: Option<usize>,
) -> cairn_types::Result<(Document, bool)> {
    let parsed = Update::parse(update, filters)?;
    let mut context = UpdateContext::new(now());
    context.matched_position = position;
    let outcome = parsed.apply(document, &context)?;
    Ok((outcome.document, outcome.modified))
}

fn check(cases: &[(Document, Document, Document)]) {
    for (document, update, expected) in cases {
        let (result, modified) = apply_with(document, update, None, None)
            .unwrap_or_else(|e| panic!("{update} on {document}: {e}"));
        assert_eq!(&result, expected, "{update} on {document}");
        assert_eq!(
            modified,
            result != *document,
            "nModified for {update} on {document}"
        );
    }
}

#[test]
fn set_unset_and_paths() {
    check(&[
        (
            doc! {"_id": 1, "a": 1},
            doc! {"$set": {"a": 2}},
            doc! {"_id": 1, "a": 2},
        ),
        (
            doc! {"_id": 1},
            doc! {"$set": {"b.c": 1}},
            doc! {"_id": 1, "b": {"c": 1}},
        ),
        (
            doc! {"_id": 1, "a": [1, 2]},
            doc! {"$set": {"a.1": 5}},
            doc! {"_id": 1, "a": [1, 5]},
        ),
        (
            doc! {"_id": 1, "a": [1]},
            doc! {"$set": {"a.3": 5}},
            doc! {"_id": 1, "a": [1, null, null, 5]},
        ),
        (
            doc! {"_id": 1, "a": [{"b": 1}]},
            doc! {"$set": {"a.0.c": 2}},
            doc! {"_id": 1, "a": [{"b": 1, "c": 2}]},
        ),
        (
            doc! {"_id": 1},
            doc! {"$set": {"z": 1, "a": 1, "m.10": 1, "m.9": 2}},
            doc! {"_id": 1, "a": 1, "m": {"9": 2, "10": 1}, "z": 1},
        ),
        (
            doc! {"_id": 1, "a": 1, "b": 2},
            doc! {"$unset": {"a": ""}},
            doc! {"_id": 1, "b": 2},
        ),
        (
            doc! {"_id": 1, "a": [1, 2]},
            doc! {"$unset": {"a.0": ""}},
            doc! {"_id": 1, "a": [null, 2]},
        ),
        (
            doc! {"_id": 1},
            doc! {"$unset": {"a.b": ""}},
            doc! {"_id": 1},
        ),
        (
            doc! {"_id": 1, "a": 1},
            doc! {"$set": {"a": 1}},
            doc! {"_id": 1, "a": 1},
        ),
        (
            doc! {"_id": 1, "a": 1},
            doc! {"$set": {"a": 1.0}},
            doc! {"_id": 1, "a": 1.0},
        ),
    ]);
}

#[test]
fn arithmetic_and_comparison_operators() {
    check(&[
        (
            doc! {"_id": 1, "q": 10, "m": {"o": 0}},
            doc! {"$inc": {"q": -2, "m.o": 1}},
            doc! {"_id": 1, "q": 8, "m": {"o": 1}},
        ),
        (
            doc! {"_id": 1},
            doc! {"$inc": {"q": 5}},
            doc! {"_id": 1, "q": 5},
        ),
        (
            doc! {"_id": 1, "q": i32::MAX},
            doc! {"$inc": {"q": 1}},
            doc! {"_id": 1, "q": Bson::Int64(i32::MAX as i64 + 1)},
        ),
        (
            doc! {"_id": 1, "q": 1},
            doc! {"$inc": {"q": 0.5}},
            doc! {"_id": 1, "q": 1.5},
        ),
        (
            doc! {"_id": 1, "price": 10.99, "q": 25},
            doc! {"$mul": {"price": 1.25, "q": 2}},
            doc! {"_id": 1, "price": 13.7375, "q": 50},
        ),
        (
            doc! {"_id": 1},
            doc! {"$mul": {"price": Bson::Int64(100)}},
            doc! {"_id": 1, "price": Bson::Int64(0)},
        ),
        (
            doc! {"_id": 1, "lo": 200},
            doc! {"$min": {"lo": 150}},
            doc! {"_id": 1, "lo": 150},
        ),
        (
            doc! {"_id": 1, "lo": 200},
            doc! {"$min": {"lo": 250}},
            doc! {"_id": 1, "lo": 200},
        ),
        (
            doc! {"_id": 1, "hi": 800},
            doc! {"$max": {"hi": 950}},
            doc! {"_id": 1, "hi": 950},
        ),
        (
            doc! {"_id": 1, "hi": 800},
            doc! {"$max": {"hi": "a"}},
            doc! {"_id": 1, "hi": "a"},
        ),
        (
            doc! {"_id": 1},
            doc! {"$max": {"hi": 1}},
            doc! {"_id": 1, "hi": 1},
        ),
        (
            doc! {"_id": 1},
            doc! {"$currentDate": {"d": true, "t": {"$type": "timestamp"}}},
            doc! {"_id": 1, "d": now(), "t": Bson::Timestamp(bson::Timestamp { time: 1_700_000_000, increment: 1 })},
        ),
    ]);
}

#[test]
fn rename() {
    check(&[
        (
            doc! {"_id": 1, "nickname": "x", "b": 1},
            doc! {"$rename": {"nickname": "alias"}},
            doc! {"_id": 1, "b": 1, "alias": "x"},
        ),
        (
            doc! {"_id": 1, "name": {"first": "a"}},
            doc! {"$rename": {"name.first": "fname"}},
            doc! {"_id": 1, "name": {}, "fname": "a"},
        ),
        (
            doc! {"_id": 1},
            doc! {"$rename": {"x": "y"}},
            doc! {"_id": 1},
        ),
        (
            doc! {"_id": 1, "a": 1, "b": 2},
            doc! {"$rename": {"a": "b"}},
            doc! {"_id": 1, "b": 1},
        ),
    ]);
}

#[test]
fn array_operators() {
    check(&[
        (
            doc! {"_id": 1, "s": [44, 78]},
            doc! {"$push": {"s": 89}},
            doc! {"_id": 1, "s": [44, 78, 89]},
        ),
        (
            doc! {"_id": 1},
            doc! {"$push": {"s": 1}},
            doc! {"_id": 1, "s": [1]},
        ),
        (
            doc! {"_id": 1, "s": [44, 78]},
            doc! {"$push": {"s": {"$each": [90, 92, 85]}}},
            doc! {"_id": 1, "s": [44, 78, 90, 92, 85]},
        ),
        (
            doc! {"_id": 1, "s": [100]},
            doc! {"$push": {"s": {"$each": [50, 60, 70], "$position": 0}}},
            doc! {"_id": 1, "s": [50, 60, 70, 100]},
        ),
        (
            doc! {"_id": 1, "s": [100, 20]},
            doc! {"$push": {"s": {"$each": [50], "$position": -1}}},
            doc! {"_id": 1, "s": [100, 50, 20]},
        ),
        (
            doc! {"_id": 1, "s": [40, 50, 60]},
            doc! {"$push": {"s": {"$each": [80, 78, 86], "$slice": -5}}},
            doc! {"_id": 1, "s": [50, 60, 80, 78, 86]},
        ),
        (
            doc! {"_id": 1, "s": [89, 90]},
            doc! {"$push": {"s": {"$each": [100, 20], "$sort": 1, "$slice": 3}}},
            doc! {"_id": 1, "s": [20, 89, 90]},
        ),
        (
            doc! {"_id": 1, "q": [{"id": 3, "s": 4}, {"id": 4, "s": 2}]},
            doc! {"$push": {"q": {"$each": [{"id": 5, "s": 6}, {"id": 6, "s": 1}], "$sort": {"s": -1}, "$slice": 3}}},
            doc! {"_id": 1, "q": [{"id": 5, "s": 6}, {"id": 3, "s": 4}, {"id": 4, "s": 2}]},
        ),
        (
            doc! {"_id": 1, "s": [1]},
            doc! {"$push": {"s": {"$each": [], "$slice": 0}}},
            doc! {"_id": 1, "s": []},
        ),
        (
            doc! {"_id": 1, "t": ["a", "b"]},
            doc! {"$addToSet": {"t": "c"}},
            doc! {"_id": 1, "t": ["a", "b", "c"]},
        ),
        (
            doc! {"_id": 1, "t": ["a", "b"]},
            doc! {"$addToSet": {"t": "a"}},
            doc! {"_id": 1, "t": ["a", "b"]},
        ),
        (
            doc! {"_id": 1, "t": [1]},
            doc! {"$addToSet": {"t": {"$each": [1.0, 2, 2]}}},
            doc! {"_id": 1, "t": [1, 2]},
        ),
        (
            doc! {"_id": 1, "t": [1]},
            doc! {"$addToSet": {"t": [2, 3]}},
            doc! {"_id": 1, "t": [1, [2, 3]]},
        ),
        (
            doc! {"_id": 1, "s": [8, 9, 10]},
            doc! {"$pop": {"s": -1}},
            doc! {"_id": 1, "s": [9, 10]},
        ),
        (
            doc! {"_id": 1, "s": [8, 9, 10]},
            doc! {"$pop": {"s": 1}},
            doc! {"_id": 1, "s": [8, 9]},
        ),
        (
            doc! {"_id": 1, "f": ["apples", "pears", "grapes"], "v": ["carrots"]},
            doc! {"$pull": {"f": {"$in": ["apples", "oranges"]}, "v": "carrots"}},
            doc! {"_id": 1, "f": ["pears", "grapes"], "v": []},
        ),
        (
            doc! {"_id": 1, "v": [2, 5, 8, 9]},
            doc! {"$pull": {"v": {"$gte": 6}}},
            doc! {"_id": 1, "v": [2, 5]},
        ),
        (
            doc! {"_id": 1, "r": [{"item": "A", "score": 5}, {"item": "B", "score": 8}]},
            doc! {"$pull": {"r": {"score": 8, "item": "B"}}},
            doc! {"_id": 1, "r": [{"item": "A", "score": 5}]},
        ),
        (
            doc! {"_id": 1, "s": [0, 2, 5, 5, 1, 0]},
            doc! {"$pullAll": {"s": [0, 5]}},
            doc! {"_id": 1, "s": [2, 1]},
        ),
        (
            doc! {"_id": 1, "g": [95, 92, 90]},
            doc! {"$set": {"g.$[]": 0}},
            doc! {"_id": 1, "g": [0, 0, 0]},
        ),
        (
            doc! {"_id": 1, "g": [{"x": 1}, {"x": 2}]},
            doc! {"$inc": {"g.$[].x": 10}},
            doc! {"_id": 1, "g": [{"x": 11}, {"x": 12}]},
        ),
    ]);
}

#[test]
fn positional_and_array_filters() {
    let document = doc! {"_id": 1, "grades": [85, 80, 80]};
    let (result, _) =
        apply_with(&document, &doc! {"$set": {"grades.$": 82}}, None, Some(1)).unwrap();
    assert_eq!(result, doc! {"_id": 1, "grades": [85, 82, 80]});
    let error = apply_with(&document, &doc! {"$set": {"grades.$": 82}}, None, None).unwrap_err();
    assert_eq!(error.code.code(), 2);
    // The positional position comes from the matcher.
    let matcher = Matcher::parse(&doc! {"grades": 80}).unwrap();
    let position = matcher
        .match_details(&document)
        .unwrap()
        .unwrap()
        .array_position;
    assert_eq!(position, Some(1));

    let filters = [doc! {"element": {"$gte": 100}}];
    let (result, modified) = apply_with(
        &doc! {"_id": 1, "grades": [95, 102, 90, 150]},
        &doc! {"$set": {"grades.$[element]": 100}},
        Some(&filters),
        None,
    )
    .unwrap();
    assert_eq!(result, doc! {"_id": 1, "grades": [95, 100, 90, 100]});
    assert!(modified);
    let filters = [doc! {"elem.grade": {"$gte": 85}}];
    let (result, _) = apply_with(
        &doc! {"_id": 1, "grades": [{"grade": 80, "mean": 75}, {"grade": 85, "mean": 90}]},
        &doc! {"$set": {"grades.$[elem].mean": 100}},
        Some(&filters),
        None,
    )
    .unwrap();
    assert_eq!(
        result,
        doc! {"_id": 1, "grades": [{"grade": 80, "mean": 75}, {"grade": 85, "mean": 100}]}
    );
    // Nested: $[] then $[t].
    let filters = [doc! {"t": {"$gte": 8}}];
    let (result, _) = apply_with(
        &doc! {"_id": 1, "d": [{"q": [7, 8]}, {"q": [9]}]},
        &doc! {"$inc": {"d.$[].q.$[t]": 1}},
        Some(&filters),
        None,
    )
    .unwrap();
    assert_eq!(result, doc! {"_id": 1, "d": [{"q": [7, 9]}, {"q": [10]}]});
}

#[test]
fn replacement_keeps_id() {
    let (result, modified) =
        apply_with(&doc! {"_id": 1, "a": 1}, &doc! {"b": 2}, None, None).unwrap();
    assert_eq!(result, doc! {"_id": 1, "b": 2});
    assert!(modified);
    let (result, modified) = apply_with(
        &doc! {"_id": 1, "a": 1},
        &doc! {"a": 1, "_id": 1},
        None,
        None,
    )
    .unwrap();
    assert_eq!(result, doc! {"_id": 1, "a": 1});
    assert!(!modified);
    let error = apply_with(&doc! {"_id": 1, "a": 1}, &doc! {"_id": 2}, None, None).unwrap_err();
    assert_eq!(error.code.code(), 66);
}

#[test]
fn upserts_seed_from_the_query() {
    let query =
        Matcher::parse(&doc! {"_id": 7, "a": 1, "b.c": "x", "n": {"$gt": 1}, "$and": [{"d": 2}]})
            .unwrap();
    let update = Update::parse(
        &doc! {"$set": {"e": 1}, "$setOnInsert": {"f": 2}, "$inc": {"a": 1}},
        None,
    )
    .unwrap();
    let document = upsert_document(&query, &update, now()).unwrap();
    assert_eq!(
        document,
        doc! {"_id": 7, "a": 2, "b": {"c": "x"}, "d": 2, "e": 1, "f": 2}
    );
    let replacement = Update::parse(&doc! {"z": 1}, None).unwrap();
    assert_eq!(
        upsert_document(&query, &replacement, now()).unwrap(),
        doc! {"_id": 7, "z": 1}
    );
    let twice = Matcher::parse(&doc! {"a": 1, "a.b": 2}).unwrap();
    assert_eq!(
        upsert_document(&twice, &update, now())
            .unwrap_err()
            .code
            .code(),
        54
    );
    // $setOnInsert does nothing on an update.
    let (result, modified) = apply_with(
        &doc! {"_id": 1},
        &doc! {"$setOnInsert": {"f": 2}},
        None,
        None,
    )
    .unwrap();
    assert_eq!(result, doc! {"_id": 1});
    assert!(!modified);
}

fn error(document: Document, update: Document) -> (i32, String) {
    let error = apply_with(&document, &update, None, None).unwrap_err();
    (error.code.code(), error.message)
}

#[test]
fn bad_updates() {
    let base = doc! {"_id": 1, "a": 1, "s": "x", "arr": [1, 2], "big": i64::MAX};
    assert_eq!(
        error(base.clone(), doc! {"$set": {"a": 1}, "$inc": {"a": 1}}),
        (
            40,
            "Updating the path 'a' would create a conflict at 'a'".into()
        )
    );
    assert_eq!(error(base.clone(), doc! {"$set": {"a": 1, "a.b": 1}}).0, 40);
    assert_eq!(
        error(base.clone(), doc! {"$set": {"a.b": 1}, "$unset": {"a": 1}}),
        (
            40,
            "Updating the path 'a' would create a conflict at 'a'".into()
        )
    );
    assert_eq!(error(base.clone(), doc! {"$set": {"_id": 2}}).0, 66);
    assert_eq!(error(base.clone(), doc! {"$foo": {"a": 1}}).0, 9);
    assert_eq!(error(base.clone(), doc! {"$set": 1}).0, 9);
    assert_eq!(error(base.clone(), doc! {"$set": {}}).0, 9);
    assert_eq!(error(base.clone(), doc! {"$set": {"a": 1}, "b": 1}).0, 9);
    assert_eq!(error(base.clone(), doc! {"b": 1, "$set": {"a": 1}}).0, 52);
    assert_eq!(error(base.clone(), doc! {"b": {"$x": 1}}).0, 52);
    assert_eq!(error(base.clone(), doc! {"$set": {"b": {"$x": 1}}}).0, 52);
    assert!(apply_with(&base, &doc! {"b": {"$ref": "c", "$id": 1}}, None, None).is_ok());
    assert_eq!(error(base.clone(), doc! {"$set": {"": 1}}).0, 56);
    assert_eq!(error(base.clone(), doc! {"$set": {"a..b": 1}}).0, 56);
    assert_eq!(error(base.clone(), doc! {"$set": {"a.b": 1}}).0, 28);
    assert_eq!(error(base.clone(), doc! {"$set": {"arr.x": 1}}).0, 28);
    assert_eq!(error(base.clone(), doc! {"$set": {"$x": 1}}).0, 52);
    assert_eq!(error(base.clone(), doc! {"$inc": {"a": "1"}}).0, 14);
    assert_eq!(error(base.clone(), doc! {"$inc": {"s": 1}}).0, 14);
    assert_eq!(error(base.clone(), doc! {"$inc": {"big": 1}}).0, 2);
    assert_eq!(error(base.clone(), doc! {"$push": {"a": 1}}).0, 2);
    assert_eq!(
        error(base.clone(), doc! {"$push": {"arr": {"$each": 1}}}).0,
        2
    );
    assert_eq!(
        error(
            base.clone(),
            doc! {"$push": {"arr": {"$each": [1], "$bad": 1}}}
        )
        .0,
        2
    );
    assert_eq!(
        error(
            base.clone(),
            doc! {"$push": {"arr": {"$each": [1], "$sort": 2}}}
        )
        .0,
        2
    );
    assert_eq!(error(base.clone(), doc! {"$addToSet": {"a": 1}}).0, 2);
    assert_eq!(error(base.clone(), doc! {"$pop": {"arr": 2}}).0, 9);
    assert_eq!(error(base.clone(), doc! {"$pop": {"a": 1}}).0, 14);
    assert_eq!(error(base.clone(), doc! {"$pull": {"a": 1}}).0, 2);
    assert_eq!(error(base.clone(), doc! {"$pullAll": {"arr": 1}}).0, 2);
    assert_eq!(error(base.clone(), doc! {"$rename": {"a": 1}}).0, 2);
    assert_eq!(error(base.clone(), doc! {"$rename": {"a": "a"}}).0, 2);
    assert_eq!(error(base.clone(), doc! {"$rename": {"a": "a.b"}}).0, 2);
    assert_eq!(error(base.clone(), doc! {"$rename": {"arr.0": "b"}}).0, 2);
    assert_eq!(
        error(base.clone(), doc! {"$currentDate": {"d": {"$type": "x"}}}).0,
        2
    );
    assert_eq!(error(base.clone(), doc! {"$set": {"a.$[x]": 1}}).0, 2);
    assert_eq!(error(base.clone(), doc! {"$set": {"arr.$.x.$": 1}}).0, 2);
    assert_eq!(error(base.clone(), doc! {"$set": {"a.$[]": 1}}).0, 2);
    let unused = [doc! {"x": 1}];
    assert_eq!(
        apply_with(&base, &doc! {"$set": {"a": 1}}, Some(&unused), None)
            .unwrap_err()
            .code
            .code(),
        9
    );
    let bad_identifier = [doc! {"X": 1}];
    assert_eq!(
        apply_with(
            &base,
            &doc! {"$set": {"arr.$[X]": 1}},
            Some(&bad_identifier),
            None
        )
        .unwrap_err()
        .code
        .code(),
        2
    );
}

#[test]
fn errors_leave_the_input_alone() {
    let document = doc! {"_id": 1, "a": 1, "s": "x"};
    let before = document.clone();
    // The first operation succeeds on the copy, the second fails.
    assert!(
        apply_with(
            &document,
            &doc! {"$set": {"a": 5}, "$inc": {"s": 1}},
            None,
            None
        )
        .is_err()
    );
    assert_eq!(document, before);
}
