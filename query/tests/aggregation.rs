//! Aggregation stages from MongoDB's manual, memory limits and spilling, and bad stages.

use bson::{Bson, Document, doc};
use cairn_query::Matcher;
use cairn_query::agg::pipeline::{
    AggregateOptions, NoSource, Pipeline, PipelineSource, distinct_values,
};

fn run(pipeline: Vec<Document>, input: Vec<Document>) -> Vec<Document> {
    run_with(pipeline, input, AggregateOptions::default()).unwrap()
}

fn run_with(
    pipeline: Vec<Document>,
    input: Vec<Document>,
    options: AggregateOptions,
) -> cairn_types::Result<Vec<Document>> {
    let stages: Vec<Bson> = pipeline.into_iter().map(Bson::Document).collect();
    let parsed = Pipeline::parse(&stages, options)?;
    parsed.run(input, &mut NoSource)
}

fn sales() -> Vec<Document> {
    vec![
        doc! {"_id": 1, "item": "abc", "price": 10, "quantity": 2},
        doc! {"_id": 2, "item": "jkl", "price": 20, "quantity": 1},
        doc! {"_id": 3, "item": "xyz", "price": 5, "quantity": 10},
        doc! {"_id": 4, "item": "xyz", "price": 5, "quantity": 20},
        doc! {"_id": 5, "item": "abc", "price": 10, "quantity": 10},
    ]
}

#[test]
fn group_with_accumulators() {
    let result = run(
        vec![
            doc! {"$group": {
                "_id": "$item",
                "total": {"$sum": {"$multiply": ["$price", "$quantity"]}},
                "avgQty": {"$avg": "$quantity"},
                "count": {"$sum": 1},
                "n": {"$count": {}},
                "first": {"$first": "$_id"},
                "last": {"$last": "$_id"},
                "min": {"$min": "$quantity"},
                "max": {"$max": "$quantity"},
                "ids": {"$push": "$_id"},
                "prices": {"$addToSet": "$price"},
            }},
            doc! {"$sort": {"total": -1}},
        ],
        sales(),
    );
    let expected = vec![
        doc! {"_id": "xyz", "total": 150, "avgQty": 15.0, "count": 2, "n": 2, "first": 3, "last": 4, "min": 10, "max": 20, "ids": [3, 4], "prices": [5]},
        doc! {"_id": "abc", "total": 120, "avgQty": 6.0, "count": 2, "n": 2, "first": 1, "last": 5, "min": 2, "max": 10, "ids": [1, 5], "prices": [10]},
        doc! {"_id": "jkl", "total": 20, "avgQty": 1.0, "count": 1, "n": 1, "first": 2, "last": 2, "min": 1, "max": 1, "ids": [2], "prices": [20]},
    ];
    assert_eq!(result, expected);
}

#[test]
fn group_null_id_and_compound_id() {
    let result = run(
        vec![
            doc! {"$group": {"_id": null, "qty": {"$sum": "$quantity"}, "avg": {"$avg": "$nope"}, "mx": {"$max": "$nope"}}},
        ],
        sales(),
    );
    assert_eq!(
        result,
        vec![doc! {"_id": null, "qty": 43, "avg": null, "mx": null}]
    );
    let result = run(
        vec![
            doc! {"$group": {"_id": {"item": "$item", "price": "$price"}, "n": {"$sum": 1}}},
            doc! {"$match": {"n": {"$gt": 1}}},
            doc! {"$sort": {"_id.item": 1}},
        ],
        sales(),
    );
    assert_eq!(
        result,
        vec![
            doc! {"_id": {"item": "abc", "price": 10}, "n": 2},
            doc! {"_id": {"item": "xyz", "price": 5}, "n": 2},
        ]
    );
    // Numbers that compare equal fall into one group.
    let result = run(
        vec![doc! {"$group": {"_id": "$k", "n": {"$sum": 1}}}],
        vec![doc! {"k": 1}, doc! {"k": 1.0}, doc! {"k": Bson::Int64(1)}],
    );
    assert_eq!(result, vec![doc! {"_id": 1, "n": 3}]);
}

#[test]
fn match_project_addfields_unset() {
    let result = run(
        vec![
            doc! {"$match": {"price": {"$gte": 10}}},
            doc! {"$project": {"item": 1, "revenue": {"$multiply": ["$price", "$quantity"]}}},
            doc! {"$addFields": {"double": {"$multiply": ["$revenue", 2]}, "meta.source": "sales"}},
            doc! {"$set": {"tag": {"$concat": ["$item", "!"]}}},
            doc! {"$unset": ["revenue"]},
        ],
        sales(),
    );
    assert_eq!(
        result,
        vec![
            doc! {"_id": 1, "item": "abc", "double": 40, "meta": {"source": "sales"}, "tag": "abc!"},
            doc! {"_id": 2, "item": "jkl", "double": 40, "meta": {"source": "sales"}, "tag": "jkl!"},
            doc! {"_id": 5, "item": "abc", "double": 200, "meta": {"source": "sales"}, "tag": "abc!"},
        ]
    );
    // $addFields merges an object into an embedded document; $$REMOVE removes.
    let result = run(
        vec![doc! {"$addFields": {"specs": {"fuel": "unleaded"}, "gone": "$$REMOVE"}}],
        vec![doc! {"_id": 1, "specs": {"doors": 4}, "gone": 1}],
    );
    assert_eq!(
        result,
        vec![doc! {"_id": 1, "specs": {"doors": 4, "fuel": "unleaded"}}]
    );
}

#[test]
fn sort_skip_limit_count() {
    let result = run(
        vec![
            doc! {"$sort": {"quantity": -1, "_id": 1}},
            doc! {"$skip": 1},
            doc! {"$limit": 2},
        ],
        sales(),
    );
    let ids: Vec<i32> = result.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    assert_eq!(ids, vec![3, 5]);
    assert_eq!(
        run(
            vec![doc! {"$match": {"price": 5}}, doc! {"$count": "cheap"}],
            sales()
        ),
        vec![doc! {"cheap": 2}]
    );
    assert!(
        run(
            vec![doc! {"$match": {"price": 99}}, doc! {"$count": "none"}],
            sales()
        )
        .is_empty()
    );
}

#[test]
fn unwind_forms() {
    let input = vec![
        doc! {"_id": 1, "item": "A", "sizes": ["S", "M"]},
        doc! {"_id": 2, "item": "B", "sizes": []},
        doc! {"_id": 3, "item": "C", "sizes": "M"},
        doc! {"_id": 4, "item": "D"},
        doc! {"_id": 5, "item": "E", "sizes": null},
    ];
    assert_eq!(
        run(vec![doc! {"$unwind": "$sizes"}], input.clone()),
        vec![
            doc! {"_id": 1, "item": "A", "sizes": "S"},
            doc! {"_id": 1, "item": "A", "sizes": "M"},
            doc! {"_id": 3, "item": "C", "sizes": "M"},
        ]
    );
    let preserved = run(
        vec![
            doc! {"$unwind": {"path": "$sizes", "includeArrayIndex": "idx", "preserveNullAndEmptyArrays": true}},
        ],
        input,
    );
    assert_eq!(
        preserved,
        vec![
            doc! {"_id": 1, "item": "A", "sizes": "S", "idx": Bson::Int64(0)},
            doc! {"_id": 1, "item": "A", "sizes": "M", "idx": Bson::Int64(1)},
            doc! {"_id": 2, "item": "B", "idx": null},
            doc! {"_id": 3, "item": "C", "sizes": "M", "idx": null},
            doc! {"_id": 4, "item": "D", "idx": null},
            doc! {"_id": 5, "item": "E", "sizes": null, "idx": null},
        ]
    );
    assert_eq!(
        run(
            vec![doc! {"$unwind": "$a.b"}],
            vec![doc! {"_id": 1, "a": {"b": [1, 2], "c": 3}}]
        ),
        vec![
            doc! {"_id": 1, "a": {"b": 1, "c": 3}},
            doc! {"_id": 1, "a": {"b": 2, "c": 3}}
        ]
    );
}

#[test]
fn replace_root() {
    let input = vec![doc! {"_id": 1, "name": {"first": "John", "last": "Backus"}}];
    assert_eq!(
        run(
            vec![doc! {"$replaceRoot": {"newRoot": "$name"}}],
            input.clone()
        ),
        vec![doc! {"first": "John", "last": "Backus"}]
    );
    assert_eq!(
        run(
            vec![doc! {"$replaceWith": {"full": {"$concat": ["$name.first", " ", "$name.last"]}}}],
            input.clone()
        ),
        vec![doc! {"full": "John Backus"}]
    );
    let error = run_with(
        vec![doc! {"$replaceRoot": {"newRoot": "$missing"}}],
        input,
        AggregateOptions::default(),
    )
    .unwrap_err();
    assert_eq!(error.code.code(), 40228);
}

/// An in-memory "database" for $lookup, answering with the matcher.
struct Collections(Vec<(String, Vec<Document>)>);

impl PipelineSource for Collections {
    fn find(&mut self, collection: &str, filter: &Document) -> cairn_types::Result<Vec<Document>> {
        let matcher = Matcher::parse(filter)?;
        Ok(self
            .0
            .iter()
            .filter(|(name, _)| name == collection)
            .flat_map(|(_, documents)| documents.iter().filter(|d| matcher.matches(d)).cloned())
            .collect())
    }
}

#[test]
fn lookup_equality() {
    let orders = vec![
        doc! {"_id": 1, "item": "almonds", "price": 12},
        doc! {"_id": 2, "item": "pecans", "price": 20},
        doc! {"_id": 3},
    ];
    let inventory = vec![
        doc! {"_id": 1, "sku": "almonds", "instock": 120},
        doc! {"_id": 2, "sku": "bread", "instock": 80},
        doc! {"_id": 3, "sku": "cashews", "instock": 60},
        doc! {"_id": 4, "sku": "pecans", "instock": 70},
        doc! {"_id": 5, "sku": null},
        doc! {"_id": 6},
    ];
    let stages = vec![Bson::Document(
        doc! {"$lookup": {"from": "inventory", "localField": "item", "foreignField": "sku", "as": "inventory_docs"}},
    )];
    let pipeline = Pipeline::parse(&stages, AggregateOptions::default()).unwrap();
    let mut source = Collections(vec![("inventory".into(), inventory)]);
    let result = pipeline.run(orders, &mut source).unwrap();
    assert_eq!(
        result[0].get_array("inventory_docs").unwrap(),
        &vec![Bson::Document(
            doc! {"_id": 1, "sku": "almonds", "instock": 120}
        )]
    );
    assert_eq!(result[1].get_array("inventory_docs").unwrap().len(), 1);
    // A missing localField matches null and missing foreign fields.
    assert_eq!(result[2].get_array("inventory_docs").unwrap().len(), 2);
}

fn big_input(count: usize) -> Vec<Document> {
    (0..count as i32)
        .map(|i| doc! {"_id": i, "k": (i * 7919) % 1000, "pad": "x".repeat(100)})
        .collect()
}

#[test]
fn sort_over_the_memory_limit_fails_or_spills() {
    let small = AggregateOptions {
        memory_bytes_max: 20_000,
        ..AggregateOptions::default()
    };
    let error = run_with(
        vec![doc! {"$sort": {"k": 1}}],
        big_input(500),
        small.clone(),
    )
    .unwrap_err();
    assert_eq!(error.code.code(), 292);
    let spilled = run_with(
        vec![doc! {"$sort": {"k": 1, "_id": -1}}],
        big_input(500),
        AggregateOptions {
            allow_disk_use: true,
            ..small
        },
    )
    .unwrap();
    let in_memory = run(vec![doc! {"$sort": {"k": 1, "_id": -1}}], big_input(500));
    assert_eq!(spilled.len(), 500);
    assert_eq!(spilled, in_memory);
}

#[test]
fn spilled_sort_is_stable() {
    let small = AggregateOptions {
        memory_bytes_max: 5_000,
        allow_disk_use: true,
        ..AggregateOptions::default()
    };
    let input = big_input(300);
    let spilled = run_with(vec![doc! {"$sort": {"k": 1}}], input.clone(), small).unwrap();
    let mut expected = input;
    expected.sort_by_key(|d| d.get_i32("k").unwrap());
    assert_eq!(spilled, expected);
}

#[test]
fn group_over_the_memory_limit_fails_or_spills() {
    let small = AggregateOptions {
        memory_bytes_max: 10_000,
        ..AggregateOptions::default()
    };
    let pipeline = vec![
        doc! {"$group": {
            "_id": {"$mod": ["$_id", 37]},
            "n": {"$sum": 1}, "total": {"$sum": "$k"}, "avg": {"$avg": "$k"}, "count": {"$count": {}},
            "lo": {"$min": "$k"}, "hi": {"$max": "$k"}, "first": {"$first": "$_id"}, "last": {"$last": "$_id"},
            "ids": {"$push": "$_id"}, "ks": {"$addToSet": {"$mod": ["$k", 5]}}, "pads": {"$push": "$pad"},
        }},
        doc! {"$project": {"pads": 0}},
        doc! {"$sort": {"_id": 1}},
    ];
    let error = run_with(pipeline.clone(), big_input(500), small.clone()).unwrap_err();
    assert_eq!(error.code.code(), 292);
    let spilled = run_with(
        pipeline.clone(),
        big_input(500),
        AggregateOptions {
            allow_disk_use: true,
            ..small
        },
    )
    .unwrap();
    let in_memory = run(pipeline, big_input(500));
    assert_eq!(spilled.len(), 37);
    // $addToSet order is unspecified: compare as sets.
    let normalize = |documents: Vec<Document>| -> Vec<Document> {
        documents
            .into_iter()
            .map(|mut d| {
                let mut ks: Vec<i32> = d
                    .get_array("ks")
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i32().unwrap())
                    .collect();
                ks.sort_unstable();
                d.insert("ks", ks);
                d
            })
            .collect()
    };
    assert_eq!(normalize(spilled), normalize(in_memory));
}

#[test]
fn pushdown_takes_leading_match_sort_limit() {
    let stages: Vec<Bson> = vec![
        doc! {"$match": {"a": 1}},
        doc! {"$match": {"b": 2}},
        doc! {"$sort": {"c": -1}},
        doc! {"$limit": 5},
        doc! {"$project": {"c": 1}},
    ]
    .into_iter()
    .map(Bson::Document)
    .collect();
    let pipeline = Pipeline::parse(&stages, AggregateOptions::default()).unwrap();
    let pushdown = pipeline.pushdown();
    assert_eq!(pushdown.filter, doc! {"$and": [{"a": 1}, {"b": 2}]});
    assert_eq!(pushdown.sort.unwrap().to_document(), doc! {"c": -1});
    assert_eq!(pushdown.limit, Some(5));
    assert_eq!(pushdown.stages_consumed, 4);
    let rest: Vec<Document> = pipeline
        .execute(
            pushdown.stages_consumed,
            Box::new(vec![Ok(doc! {"_id": 1, "c": 3, "d": 4})].into_iter()),
            &mut NoSource,
        )
        .collect::<cairn_types::Result<_>>()
        .unwrap();
    assert_eq!(rest, vec![doc! {"_id": 1, "c": 3}]);
}

#[test]
fn distinct() {
    let documents = [
        doc! {"a": [1, 2, []]},
        doc! {"a": 1.0},
        doc! {"a": "x"},
        doc! {"b": 1},
        doc! {"a": [[3]]},
    ];
    assert_eq!(
        distinct_values(documents.iter(), "a"),
        vec![
            Bson::Int32(1),
            Bson::Int32(2),
            Bson::String("x".into()),
            Bson::Array(vec![]),
            Bson::Array(vec![3.into()])
        ]
    );
}

fn code(stage: Document) -> i32 {
    Pipeline::parse(&[Bson::Document(stage)], AggregateOptions::default())
        .unwrap_err()
        .code
        .code()
}

#[test]
fn bad_stages() {
    assert_eq!(code(doc! {"$foo": 1}), 40324);
    assert_eq!(code(doc! {"$match": 1}), 15959);
    assert_eq!(code(doc! {"$match": {"$foo": 1}}), 2);
    assert_eq!(code(doc! {"$project": {}}), 51272);
    assert_eq!(code(doc! {"$group": {"n": {"$sum": 1}}}), 15955);
    assert_eq!(code(doc! {"$group": {"_id": 1, "n": 1}}), 40234);
    assert_eq!(code(doc! {"$group": {"_id": 1, "n": {"$foo": 1}}}), 15952);
    assert_eq!(code(doc! {"$group": {"_id": 1, "a.b": {"$sum": 1}}}), 40235);
    assert_eq!(
        code(doc! {"$group": {"_id": 1, "n": {"$sum": [1, 2]}}}),
        40237
    );
    assert_eq!(code(doc! {"$sort": {}}), 15976);
    assert_eq!(code(doc! {"$sort": 1}), 15973);
    assert_eq!(code(doc! {"$sort": {"a": 0}}), 15975);
    assert_eq!(code(doc! {"$skip": -1}), 5107200);
    assert_eq!(code(doc! {"$skip": "a"}), 15972);
    assert_eq!(code(doc! {"$limit": 0}), 15958);
    assert_eq!(code(doc! {"$unwind": "a"}), 28818);
    assert_eq!(code(doc! {"$unwind": {"includeArrayIndex": "i"}}), 28812);
    assert_eq!(code(doc! {"$unwind": {"path": "$a", "foo": 1}}), 28811);
    assert_eq!(
        code(doc! {"$unwind": {"path": "$a", "includeArrayIndex": "$i"}}),
        28822
    );
    assert_eq!(code(doc! {"$count": ""}), 40157);
    assert_eq!(code(doc! {"$count": "$x"}), 40158);
    assert_eq!(code(doc! {"$count": "a.b"}), 40160);
    assert_eq!(
        code(doc! {"$lookup": {"from": "x", "localField": "a", "foreignField": "b"}}),
        9
    );
    assert_eq!(
        code(
            doc! {"$lookup": {"from": "x", "localField": "a", "foreignField": "b", "as": "c", "bad": "d"}}
        ),
        9
    );
    assert_eq!(code(doc! {"$replaceRoot": {}}), 40414);
    assert_eq!(code(doc! {"$project": {"a": {"$nope": 1}}}), 168);
    assert_eq!(code(doc! {"$unset": 1}), 31002);
    assert_eq!(code(doc! {"$match": {"a": 1}, "$limit": 1}), 40323);
    assert_eq!(
        Pipeline::parse(&[Bson::Int32(1)], AggregateOptions::default())
            .unwrap_err()
            .code
            .code(),
        14
    );
}

#[test]
fn expression_errors_surface_at_run_time() {
    let error = run_with(
        vec![doc! {"$project": {"x": {"$divide": ["$price", 0]}}}],
        sales(),
        AggregateOptions::default(),
    )
    .unwrap_err();
    assert_eq!(error.code.code(), 16608);
}
