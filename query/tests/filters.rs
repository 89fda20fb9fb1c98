//! Table tests for filters, from MongoDB's manual and jstests, plus bad-input tests.

use bson::{Bson, Document, doc};
use cairn_query::Matcher;

fn check(cases: &[(Document, Document, bool)]) {
    for (filter, document, expected) in cases {
        let matcher = Matcher::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(
            matcher.matches(document),
            *expected,
            "filter {filter} on {document} should be {expected}"
        );
    }
}

#[test]
fn equality_and_arrays() {
    check(&[
        (doc! {"a": 1}, doc! {"a": 1}, true),
        (doc! {"a": 1}, doc! {"a": 1.0}, true),
        (doc! {"a": 1}, doc! {"a": "1"}, false),
        (doc! {"a": 1}, doc! {"a": [2, 1]}, true),
        (doc! {"a": [1, 2]}, doc! {"a": [1, 2]}, true),
        (doc! {"a": [1, 2]}, doc! {"a": [2, 1]}, false),
        (doc! {"a": [1, 2]}, doc! {"a": [[1, 2], 3]}, true),
        (doc! {"a": {"b": 1}}, doc! {"a": {"b": 1}}, true),
        (doc! {"a": {"b": 1}}, doc! {"a": {"b": 1, "c": 2}}, false),
        (doc! {"a.b": 1}, doc! {"a": [{"b": 2}, {"b": 1}]}, true),
        (doc! {"a.b": 1}, doc! {"a": [{"b": [0, 1]}]}, true),
        (doc! {"a.b": 1}, doc! {"a": [[{"b": 1}]]}, false),
        (doc! {"a.1": 5}, doc! {"a": [4, 5]}, true),
        (doc! {"a.1": 5}, doc! {"a": [5, 4]}, false),
        (doc! {"a.0.b": 1}, doc! {"a": [{"b": 1}]}, true),
        (doc! {"a.1.b": 2}, doc! {"a": [{"b": 1}, {"b": 2}]}, true),
        (doc! {"a.b.c": 1}, doc! {"a": {"b": {"c": 1}}}, true),
        (doc! {"tags": "red"}, doc! {"tags": ["blank", "red"]}, true),
        (doc! {}, doc! {"x": 1}, true),
    ]);
}

#[test]
fn explicit_eq() {
    check(&[
        // Manual: $eq examples.
        (doc! {"qty": {"$eq": 20}}, doc! {"qty": 20}, true),
        (
            doc! {"item.name": {"$eq": "ab"}},
            doc! {"item": {"name": "ab", "code": "123"}},
            true,
        ),
        (doc! {"tags": {"$eq": "B"}}, doc! {"tags": ["A", "B"]}, true),
        (
            doc! {"tags": {"$eq": ["A", "B"]}},
            doc! {"tags": ["A", "B"]},
            true,
        ),
        (
            doc! {"tags": {"$eq": ["A", "B"]}},
            doc! {"tags": [["A", "B"], "C"]},
            true,
        ),
        (
            doc! {"tags": {"$eq": ["A", "B"]}},
            doc! {"tags": ["B", "A"]},
            false,
        ),
        (
            doc! {"a": {"$eq": {"$gt": 1}}},
            doc! {"a": {"$gt": 1}},
            true,
        ),
        (doc! {"a": {"$eq": null}}, doc! {}, true),
    ]);
}

#[test]
fn null_and_missing() {
    check(&[
        (doc! {"a": null}, doc! {"a": null}, true),
        (doc! {"a": null}, doc! {}, true),
        (doc! {"a": null}, doc! {"a": Bson::Undefined}, false),
        (doc! {"a": null}, doc! {"a": 0}, false),
        (doc! {"a": {"$ne": null}}, doc! {}, false),
        (doc! {"a": {"$ne": null}}, doc! {"a": 1}, true),
        (doc! {"a": {"$gte": null}}, doc! {}, true),
        (doc! {"a": {"$lt": null}}, doc! {}, false),
        (doc! {"a": {"$in": [null]}}, doc! {}, true),
        // jstests/core/null2.js
        (doc! {"a.b": null}, doc! {"a": [{"b": 5}]}, false),
        (doc! {"a.b": null}, doc! {"a": [{}]}, true),
        (doc! {"a.b": null}, doc! {"a": []}, false),
        (doc! {"a.b": null}, doc! {"a": [{}, {"b": 5}]}, true),
        (doc! {"a.b": null}, doc! {"a": [5, {"b": 5}]}, false),
        (doc! {"a.b": null}, doc! {"a": 5}, true),
        (doc! {"a.b": {"$in": [null]}}, doc! {"a": [{}]}, true),
        (
            doc! {"a": {"$elemMatch": {"b": null}}},
            doc! {"a": [{}, {"b": 1}]},
            true,
        ),
    ]);
}

#[test]
fn comparisons_are_type_bracketed() {
    check(&[
        (doc! {"a": {"$gt": 5}}, doc! {"a": 6}, true),
        (doc! {"a": {"$gt": 5}}, doc! {"a": "6"}, false),
        (doc! {"a": {"$gt": 5}}, doc! {"a": [1, 7]}, true),
        (doc! {"a": {"$gt": 5, "$lt": 7}}, doc! {"a": [4, 8]}, true),
        (
            doc! {"a": {"$elemMatch": {"$gt": 5, "$lt": 7}}},
            doc! {"a": [4, 8]},
            false,
        ),
        (
            doc! {"a": {"$elemMatch": {"$gt": 5, "$lt": 7}}},
            doc! {"a": [4, 6]},
            true,
        ),
        (doc! {"a": {"$lte": "b"}}, doc! {"a": "a"}, true),
        (doc! {"a": {"$lt": 2}}, doc! {"a": Bson::Int64(1)}, true),
        (doc! {"a": {"$gt": Bson::MinKey}}, doc! {"a": "x"}, true),
        (
            doc! {"a": {"$lt": Bson::MaxKey}},
            doc! {"a": {"x": 1}},
            true,
        ),
        (doc! {"a": {"$lt": 5}}, doc! {"a": f64::NAN}, false),
        (doc! {"a": {"$gte": f64::NAN}}, doc! {"a": f64::NAN}, true),
        (doc! {"a": f64::NAN}, doc! {"a": f64::NAN}, true),
        (doc! {"a": {"$gt": [1]}}, doc! {"a": [2]}, true),
        (doc! {"a": {"$gte": {"x": 1}}}, doc! {"a": {"x": 2}}, true),
        (
            doc! {"a": {"$gt": bson::DateTime::from_millis(5)}},
            doc! {"a": 10},
            false,
        ),
    ]);
}

#[test]
fn in_nin_ne() {
    check(&[
        (doc! {"qty": {"$in": [5, 15]}}, doc! {"qty": 15}, true),
        (doc! {"qty": {"$in": [5, 15]}}, doc! {"qty": 10}, false),
        (
            doc! {"tags": {"$in": [Bson::RegularExpression(bson::Regex { pattern: "^be".try_into().unwrap(), options: "".try_into().unwrap() })]}},
            doc! {"tags": ["best"]},
            true,
        ),
        (doc! {"qty": {"$nin": [5, 15]}}, doc! {}, true),
        (doc! {"qty": {"$nin": [5, 15]}}, doc! {"qty": [1, 5]}, false),
        (doc! {"qty": {"$ne": 5}}, doc! {"qty": [1, 5]}, false),
        (doc! {"qty": {"$ne": 5}}, doc! {"qty": [1, 6]}, true),
        (doc! {"qty": {"$in": []}}, doc! {"qty": 1}, false),
    ]);
}

#[test]
fn exists_type_size_mod_all() {
    check(&[
        (doc! {"a": {"$exists": true}}, doc! {"a": null}, true),
        (doc! {"a": {"$exists": false}}, doc! {"b": 1}, true),
        (doc! {"a.b": {"$exists": false}}, doc! {"a": [1, 2]}, true),
        (
            doc! {"a.b": {"$exists": true}},
            doc! {"a": [{"b": 1}, {}]},
            true,
        ),
        (doc! {"a": {"$type": "string"}}, doc! {"a": "x"}, true),
        (doc! {"a": {"$type": 2}}, doc! {"a": ["x"]}, true),
        (doc! {"a": {"$type": "array"}}, doc! {"a": []}, true),
        (
            doc! {"a": {"$type": "number"}},
            doc! {"a": Bson::Int64(3)},
            true,
        ),
        (
            doc! {"a": {"$type": ["string", "double"]}},
            doc! {"a": 1.5},
            true,
        ),
        (doc! {"a": {"$type": "null"}}, doc! {}, false),
        (doc! {"a": {"$size": 2}}, doc! {"a": [1, 2]}, true),
        (doc! {"a": {"$size": 1}}, doc! {"a": [[1, 2]]}, true),
        (doc! {"a": {"$size": 0}}, doc! {"a": []}, true),
        (doc! {"a": {"$size": 0}}, doc! {}, false),
        (doc! {"a.b": {"$size": 1}}, doc! {"a": [{"b": [1]}]}, true),
        (doc! {"qty": {"$mod": [4, 0]}}, doc! {"qty": 12}, true),
        (doc! {"qty": {"$mod": [4, 0]}}, doc! {"qty": 13}, false),
        (doc! {"qty": {"$mod": [4, 1]}}, doc! {"qty": 5.9}, true),
        (doc! {"qty": {"$mod": [4, -1]}}, doc! {"qty": -5}, true),
        (
            doc! {"tags": {"$all": ["ssl", "security"]}},
            doc! {"tags": ["ssl", "x", "security"]},
            true,
        ),
        (
            doc! {"tags": {"$all": ["ssl", "security"]}},
            doc! {"tags": ["ssl"]},
            false,
        ),
        (doc! {"tags": {"$all": []}}, doc! {"tags": []}, false),
        (
            doc! {"tags": {"$all": [["ssl", "x"]]}},
            doc! {"tags": ["ssl", "x"]},
            true,
        ),
        (
            doc! {"qty": {"$all": [{"$elemMatch": {"size": "M", "num": {"$gt": 50}}}, {"$elemMatch": {"num": 100, "color": "green"}}]}},
            doc! {"qty": [{"size": "M", "num": 100, "color": "green"}]},
            true,
        ),
    ]);
}

#[test]
fn logical_operators() {
    check(&[
        (doc! {"$or": [{"a": 1}, {"b": 2}]}, doc! {"b": 2}, true),
        (doc! {"$and": [{"a": 1}, {"b": 2}]}, doc! {"b": 2}, false),
        (doc! {"$nor": [{"a": 1}, {"b": 2}]}, doc! {"c": 2}, true),
        (doc! {"$nor": [{"a": 1}, {"b": 2}]}, doc! {"a": 1}, false),
        (doc! {"price": {"$not": {"$gt": 1.99}}}, doc! {}, true),
        (
            doc! {"price": {"$not": {"$gt": 1.99}}},
            doc! {"price": 2},
            false,
        ),
        (
            doc! {"item": {"$not": Bson::RegularExpression(bson::Regex { pattern: "^p.*".try_into().unwrap(), options: "".try_into().unwrap() })}},
            doc! {"item": "pen"},
            false,
        ),
        (doc! {"$comment": "hi", "a": 1}, doc! {"a": 1}, true),
        (
            doc! {"a": 1, "$or": [{"b": 1}, {"c": 1}]},
            doc! {"a": 1, "c": 1},
            true,
        ),
    ]);
}

#[test]
fn elem_match_forms() {
    check(&[
        (
            doc! {"results": {"$elemMatch": {"$gte": 80, "$lt": 85}}},
            doc! {"results": [82, 85, 88]},
            true,
        ),
        (
            doc! {"results": {"$elemMatch": {"$gte": 80, "$lt": 85}}},
            doc! {"results": [75, 88, 89]},
            false,
        ),
        (
            doc! {"results": {"$elemMatch": {"product": "xyz", "score": {"$gte": 8}}}},
            doc! {"results": [{"product": "abc", "score": 10}, {"product": "xyz", "score": 5}]},
            false,
        ),
        (
            doc! {"results": {"$elemMatch": {"product": "xyz", "score": {"$gte": 8}}}},
            doc! {"results": [{"product": "abc", "score": 8}, {"product": "xyz", "score": 9}]},
            true,
        ),
        (
            doc! {"a": {"$elemMatch": {"$or": [{"b": 1}, {"c": 1}]}}},
            doc! {"a": [{"c": 1}]},
            true,
        ),
        (
            doc! {"a": {"$elemMatch": {"0": 1}}},
            doc! {"a": [[1, 2]]},
            true,
        ),
        (
            doc! {"a": {"$elemMatch": {"$not": {"$gt": 5}}}},
            doc! {"a": [6, 3]},
            true,
        ),
        (doc! {"a": {"$elemMatch": {"$gt": 5}}}, doc! {"a": 6}, false),
        (
            doc! {"a": {"$elemMatch": {"$elemMatch": {"$gt": 5}}}},
            doc! {"a": [[1], [6]]},
            true,
        ),
    ]);
}

fn regex(pattern: &str, options: &str) -> Bson {
    Bson::RegularExpression(bson::Regex {
        pattern: pattern.try_into().unwrap(),
        options: options.try_into().unwrap(),
    })
}

#[test]
fn regexes() {
    check(&[
        (
            doc! {"sku": {"$regex": "789$"}},
            doc! {"sku": "abc789"},
            true,
        ),
        (
            doc! {"sku": {"$regex": "^ABC", "$options": "i"}},
            doc! {"sku": "abc789"},
            true,
        ),
        (
            doc! {"sku": {"$regex": regex("^ABC", "i")}},
            doc! {"sku": "abc789"},
            true,
        ),
        (
            doc! {"sku": regex("^abc", "")},
            doc! {"sku": ["x", "abc"]},
            true,
        ),
        (doc! {"sku": regex("^abc", "")}, doc! {"sku": 1}, false),
        (
            doc! {"d": {"$regex": "^S", "$options": "m"}},
            doc! {"d": "First line\nSecond line"},
            true,
        ),
        (
            doc! {"d": {"$regex": "^S"}},
            doc! {"d": "First line\nSecond line"},
            false,
        ),
        (
            doc! {"d": {"$regex": "line.Second", "$options": "s"}},
            doc! {"d": "First line\nSecond line"},
            true,
        ),
        (
            doc! {"d": {"$regex": " a b # comment", "$options": "x"}},
            doc! {"d": "ab"},
            true,
        ),
        (doc! {"d": regex("x", "")}, doc! {"d": regex("x", "")}, true),
    ]);
}

#[test]
fn expr() {
    let with_let = Matcher::parse_with_let(
        &doc! {"$expr": {"$eq": ["$a", "$$target"]}},
        Some(&doc! {"target": 3}),
    )
    .unwrap();
    assert!(with_let.matches(&doc! {"a": 3}));
    assert!(!with_let.matches(&doc! {"a": 4}));
    let failing = Matcher::parse(&doc! {"$expr": {"$divide": [1, "$z"]}}).unwrap();
    assert_eq!(
        failing
            .matches_checked(&doc! {"z": 0})
            .unwrap_err()
            .code
            .code(),
        16608
    );
}

#[test]
fn expr_table() {
    check(&[
        (
            doc! {"$expr": {"$gt": ["$spent", "$budget"]}},
            doc! {"spent": 400, "budget": 200},
            true,
        ),
        (
            doc! {"$expr": {"$gt": ["$spent", "$budget"]}},
            doc! {"spent": 100, "budget": 200},
            false,
        ),
        (
            doc! {"$expr": {"$lt": [{"$cond": {"if": {"$gte": ["$qty", 100]}, "then": {"$multiply": ["$price", 0.5]}, "else": {"$multiply": ["$price", 0.75]}}}, 5]}},
            doc! {"qty": 200, "price": 8},
            true,
        ),
    ]);
}

#[test]
fn positional_details() {
    let matcher = Matcher::parse(&doc! {"grades": {"$gte": 85}}).unwrap();
    let details = matcher
        .match_details(&doc! {"grades": [80, 85, 90]})
        .unwrap()
        .unwrap();
    assert_eq!(details.array_position, Some(1));
    let matcher = Matcher::parse(&doc! {"a.b": 2}).unwrap();
    let details = matcher
        .match_details(&doc! {"a": [{"b": 1}, {"b": [5, 2]}]})
        .unwrap()
        .unwrap();
    assert_eq!(details.array_position, Some(1));
    let matcher = Matcher::parse(&doc! {"a": {"$elemMatch": {"x": 2}}}).unwrap();
    let details = matcher
        .match_details(&doc! {"a": [{"x": 1}, {"x": 2}]})
        .unwrap()
        .unwrap();
    assert_eq!(details.array_position, Some(1));
    assert_eq!(
        matcher.match_details(&doc! {"a": [{"x": 1}]}).unwrap(),
        None
    );
}

fn error_code(filter: Document) -> i32 {
    match Matcher::parse(&filter) {
        Ok(_) => panic!("{filter} should fail"),
        Err(error) => error.code.code(),
    }
}

#[test]
fn bad_input() {
    assert_eq!(error_code(doc! {"$foo": 1}), 2);
    assert_eq!(error_code(doc! {"a": {"$foo": 1}}), 2);
    assert_eq!(error_code(doc! {"a": {"$gt": 1, "b": 1}}), 2);
    assert_eq!(error_code(doc! {"$and": []}), 2);
    assert_eq!(error_code(doc! {"$or": 1}), 2);
    assert_eq!(error_code(doc! {"$or": [1]}), 2);
    assert_eq!(error_code(doc! {"a": {"$in": 1}}), 2);
    assert_eq!(error_code(doc! {"a": {"$nin": {"x": 1}}}), 2);
    assert_eq!(error_code(doc! {"a": {"$in": [{"$gt": 1}]}}), 2);
    assert_eq!(error_code(doc! {"a": {"$size": -1}}), 2);
    assert_eq!(error_code(doc! {"a": {"$size": 1.5}}), 2);
    assert_eq!(error_code(doc! {"a": {"$size": "1"}}), 2);
    assert_eq!(error_code(doc! {"a": {"$mod": [0, 1]}}), 2);
    assert_eq!(error_code(doc! {"a": {"$mod": [1]}}), 2);
    assert_eq!(error_code(doc! {"a": {"$mod": 1}}), 2);
    assert_eq!(error_code(doc! {"a": {"$type": "foo"}}), 2);
    assert_eq!(error_code(doc! {"a": {"$type": 99}}), 2);
    assert_eq!(error_code(doc! {"a": {"$type": {}}}), 14);
    assert_eq!(error_code(doc! {"a": {"$not": {}}}), 2);
    assert_eq!(error_code(doc! {"a": {"$not": 1}}), 2);
    assert_eq!(error_code(doc! {"a": {"$elemMatch": 1}}), 2);
    assert_eq!(error_code(doc! {"a": {"$all": 1}}), 2);
    assert_eq!(error_code(doc! {"a": {"$all": [{"$gt": 1}]}}), 2);
    assert_eq!(error_code(doc! {"a": {"$options": "i"}}), 2);
    assert_eq!(error_code(doc! {"a": {"$regex": 1}}), 2);
    assert_eq!(
        error_code(doc! {"a": {"$regex": "x", "$options": "z"}}),
        51108
    );
    assert_eq!(error_code(doc! {"a": {"$regex": "(?<=x)y"}}), 51091);
    assert_eq!(error_code(doc! {"a": {"$ne": regex("x", "")}}), 2);
    assert_eq!(error_code(doc! {"a": Bson::Undefined}), 2);
    assert_eq!(error_code(doc! {"$expr": {"$nope": 1}}), 168);
    assert_eq!(error_code(doc! {"$where": "true"}), 238);
    let message = Matcher::parse(&doc! {"a": {"$foo": 1}})
        .unwrap_err()
        .message;
    assert_eq!(message, "unknown operator: $foo");
}

#[test]
fn deep_filters_fail_cleanly() {
    let mut filter = doc! {"a": 1};
    for _ in 0..200 {
        filter = doc! {"$and": [filter]};
    }
    assert_eq!(error_code(filter), 2);
}

#[test]
fn parsed_query_round_trips() {
    let matcher = Matcher::parse(&doc! {"a": {"$gt": 1, "$ne": 3}, "b": "x"}).unwrap();
    let rendered = matcher.to_document();
    let reparsed = Matcher::parse(&rendered).unwrap();
    for document in [
        doc! {"a": 2, "b": "x"},
        doc! {"a": 3, "b": "x"},
        doc! {"a": 0, "b": "x"},
    ] {
        assert_eq!(
            matcher.matches(&document),
            reparsed.matches(&document),
            "{rendered}"
        );
    }
}
