//! Command parsing: shapes, defaults and MongoDB's IDL errors.

use bson::{Bson, doc};
use cairn_query::commands::{
    AggregateCommand, CountCommand, CreateIndexesCommand, DeleteCommand, DistinctCommand,
    DropIndexesCommand, DropTarget, ExplainCommand, FindAndModifyCommand, FindCommand,
    UpdateCommand, UpdateModification,
};
use cairn_query::planner::{Hint, Verbosity};

fn error<T: std::fmt::Debug>(result: cairn_types::Result<T>) -> (i32, String) {
    let error = result.unwrap_err();
    (error.code.code(), error.message)
}

#[test]
fn find_parses_every_field() {
    let find = FindCommand::parse(&doc! {
        "find": "c", "filter": {"a": 1}, "projection": {"a": 1}, "sort": {"a": -1}, "hint": "a_1",
        "skip": 2, "limit": Bson::Int64(5), "batchSize": 10, "singleBatch": true, "maxTimeMS": 100,
        "noCursorTimeout": true, "let": {"x": 1}, "comment": "hi", "$db": "test", "lsid": {"id": 1},
        "readConcern": {"level": "majority"},
    })
    .unwrap();
    assert_eq!(find.collection, "c");
    assert_eq!(find.limit, Some(5));
    assert_eq!(find.skip, 2);
    assert_eq!(find.hint, Some(Hint::Name("a_1".into())));
    assert!(find.single_batch && find.no_cursor_timeout);
    assert_eq!(find.max_time_ms, Some(100));
    let query = find.to_query("test").unwrap();
    assert_eq!(query.namespace, "test.c");
    assert_eq!(query.limit, Some(5));
    let defaults = FindCommand::parse(&doc! {"find": "c", "limit": 0}).unwrap();
    assert_eq!(defaults.limit, None);
    assert_eq!(defaults.filter, doc! {});
}

#[test]
fn find_errors() {
    assert_eq!(
        error(FindCommand::parse(&doc! {"find": "c", "limit": "x"})),
        (14, "BSON field 'find.limit' is the wrong type 'string', expected types '[long, int, decimal, double]'".into())
    );
    assert_eq!(
        error(FindCommand::parse(&doc! {"find": "c", "foo": 1})),
        (40415, "BSON field 'find.foo' is an unknown field.".into())
    );
    assert_eq!(
        error(FindCommand::parse(&doc! {"find": "c", "filter": 1})),
        (
            14,
            "BSON field 'find.filter' is the wrong type 'int', expected type 'object'".into()
        )
    );
    assert_eq!(
        error(FindCommand::parse(&doc! {"find": "c", "limit": -1})),
        (
            51024,
            "BSON field 'limit' value must be >= 0, actual value '-1'".into()
        )
    );
    assert_eq!(
        error(FindCommand::parse(&doc! {"find": "c", "skip": -1})).0,
        51024
    );
    assert_eq!(
        error(FindCommand::parse(&doc! {"find": "c", "batchSize": -1})).0,
        51024
    );
    assert_eq!(
        error(FindCommand::parse(
            &doc! {"find": "c", "singleBatch": "yes"}
        ))
        .0,
        14
    );
    assert_eq!(
        error(FindCommand::parse(&doc! {"find": "c", "maxTimeMS": -5})).0,
        2
    );
    assert_eq!(
        error(FindCommand::parse(&doc! {"find": "c", "hint": 1})).0,
        14
    );
    assert_eq!(error(FindCommand::parse(&doc! {"find": 1})).0, 73);
    assert_eq!(
        error(FindCommand::parse(&doc! {"find": "c", "tailable": true})).0,
        238
    );
    assert_eq!(
        error(
            FindCommand::parse(&doc! {"find": "c", "filter": {"$foo": 1}})
                .unwrap()
                .to_query("d")
        )
        .0,
        2
    );
    assert_eq!(
        error(
            FindCommand::parse(&doc! {"find": "c", "sort": {"a": 3}})
                .unwrap()
                .to_query("d")
        )
        .0,
        15975
    );
}

#[test]
fn update_and_delete() {
    let update = UpdateCommand::parse(&doc! {
        "update": "c", "ordered": false,
        "updates": [
            {"q": {"a": 1}, "u": {"$set": {"b": 1}}, "upsert": true, "multi": true, "arrayFilters": [{"x": 1}]},
            {"q": {}, "u": [{"$set": {"b": 1}}]},
        ],
        "writeConcern": {"w": "majority"},
    })
    .unwrap();
    assert!(!update.ordered);
    assert_eq!(update.updates.len(), 2);
    assert!(update.updates[0].upsert && update.updates[0].multi);
    assert!(matches!(
        update.updates[1].update,
        UpdateModification::Pipeline(_)
    ));
    assert_eq!(error(update.updates[1].to_update(None)).0, 238);
    let replacement_multi = UpdateCommand::parse(
        &doc! {"update": "c", "updates": [{"q": {}, "u": {"a": 1}, "multi": true}]},
    )
    .unwrap();
    assert_eq!(error(replacement_multi.updates[0].to_update(None)).0, 9);
    assert_eq!(
        error(UpdateCommand::parse(&doc! {"update": "c", "updates": []})).0,
        16
    );
    assert_eq!(
        error(UpdateCommand::parse(
            &doc! {"update": "c", "updates": [{"u": {}}]}
        )),
        (
            40414,
            "BSON field 'update.updates.q' is missing but a required field".into()
        )
    );
    assert_eq!(
        error(UpdateCommand::parse(
            &doc! {"update": "c", "updates": [{"q": {}, "u": 1}]}
        ))
        .0,
        14
    );
    assert_eq!(
        error(UpdateCommand::parse(
            &doc! {"update": "c", "updates": [{"q": {}, "u": {}, "z": 1}]}
        ))
        .0,
        40415
    );
    assert_eq!(error(UpdateCommand::parse(&doc! {"update": "c"})).0, 40414);

    let delete = DeleteCommand::parse(
        &doc! {"delete": "c", "deletes": [{"q": {"a": 1}, "limit": 1}, {"q": {}, "limit": 0}]},
    )
    .unwrap();
    assert!(delete.deletes[0].just_one && !delete.deletes[1].just_one);
    assert_eq!(
        error(DeleteCommand::parse(
            &doc! {"delete": "c", "deletes": [{"q": {}, "limit": 2}]}
        )),
        (
            9,
            "The limit field in delete objects must be 0 or 1. Got 2".into()
        )
    );
    assert_eq!(
        error(DeleteCommand::parse(
            &doc! {"delete": "c", "deletes": [{"q": {}}]}
        ))
        .0,
        40414
    );
}

#[test]
fn find_and_modify() {
    let command = FindAndModifyCommand::parse(&doc! {
        "findAndModify": "c", "query": {"a": 1}, "sort": {"b": 1}, "update": {"$inc": {"n": 1}},
        "new": true, "fields": {"n": 1}, "upsert": true,
    })
    .unwrap();
    assert!(command.return_new && command.upsert && !command.remove);
    let (matcher, sort, update, projection) = command.to_parts().unwrap();
    assert!(matcher.matches(&doc! {"a": 1}));
    assert!(!sort.is_empty() && update.is_some() && projection.is_some());
    let base = |extra: bson::Document| {
        let mut command = doc! {"findAndModify": "c", "query": {}};
        command.extend(extra);
        FindAndModifyCommand::parse(&command)
    };
    assert_eq!(
        error(base(doc! {"remove": true, "update": {"$set": {"a": 1}}})).0,
        9
    );
    assert_eq!(
        error(base(doc! {})),
        (
            9,
            "Either an update or remove=true must be specified".into()
        )
    );
    assert_eq!(error(base(doc! {"remove": true, "new": true})).0, 9);
    assert_eq!(error(base(doc! {"remove": true, "upsert": true})).0, 9);
    assert!(base(doc! {"remove": true}).unwrap().remove);
    assert!(FindAndModifyCommand::parse(&doc! {"findandmodify": "c", "remove": true}).is_ok());
}

#[test]
fn count_distinct_aggregate() {
    let count =
        CountCommand::parse(&doc! {"count": "c", "query": {"a": 1}, "limit": -3, "skip": 1})
            .unwrap();
    assert_eq!(count.limit, Some(3));
    assert_eq!(
        error(CountCommand::parse(&doc! {"count": "c", "skip": -1})).0,
        51024
    );
    let distinct =
        DistinctCommand::parse(&doc! {"distinct": "c", "key": "a.b", "query": {"x": 1}}).unwrap();
    assert_eq!(distinct.key, "a.b");
    assert_eq!(
        error(DistinctCommand::parse(&doc! {"distinct": "c"})).0,
        40414
    );
    assert_eq!(
        error(DistinctCommand::parse(&doc! {"distinct": "c", "key": 1})).0,
        14
    );

    let aggregate = AggregateCommand::parse(&doc! {"aggregate": "c", "pipeline": [{"$match": {"a": 1}}], "cursor": {"batchSize": 5}, "allowDiskUse": true}).unwrap();
    assert_eq!(aggregate.batch_size, Some(5));
    assert!(aggregate.allow_disk_use);
    assert!(aggregate.to_pipeline().unwrap().options.allow_disk_use);
    assert_eq!(
        AggregateCommand::parse(&doc! {"aggregate": 1, "pipeline": [], "cursor": {}})
            .unwrap()
            .collection,
        None
    );
    assert!(
        AggregateCommand::parse(&doc! {"aggregate": "c", "pipeline": [], "explain": true})
            .unwrap()
            .explain
    );
    assert_eq!(
        error(AggregateCommand::parse(
            &doc! {"aggregate": "c", "pipeline": []}
        ))
        .0,
        9
    );
    assert_eq!(
        error(AggregateCommand::parse(
            &doc! {"aggregate": "c", "pipeline": {}, "cursor": {}}
        ))
        .0,
        14
    );
    assert_eq!(
        error(AggregateCommand::parse(
            &doc! {"aggregate": "c", "pipeline": [], "cursor": {"bogus": 1}}
        ))
        .0,
        40415
    );
    assert_eq!(
        error(
            AggregateCommand::parse(
                &doc! {"aggregate": "c", "pipeline": [{"$bogus": 1}], "cursor": {}}
            )
            .unwrap()
            .to_pipeline()
        )
        .0,
        40324
    );
}

#[test]
fn create_and_drop_indexes() {
    let command = CreateIndexesCommand::parse(&doc! {
        "createIndexes": "c",
        "indexes": [
            {"key": {"a": 1}, "name": "a_1", "unique": true},
            {"key": {"b": -1, "c": 1}, "name": "b_-1_c_1", "sparse": true, "background": true},
            {"key": {"d": 1}, "name": "d_1", "partialFilterExpression": {"d": {"$gt": 5}}},
        ],
    })
    .unwrap();
    assert!(command.indexes[0].unique);
    assert!(command.indexes[1].sparse);
    assert!(command.indexes[2].partial_filter_expression.is_some());
    let one = |spec: bson::Document| {
        CreateIndexesCommand::parse(&doc! {"createIndexes": "c", "indexes": [spec]})
    };
    assert_eq!(error(one(doc! {"key": {"a": "text"}, "name": "t"})).0, 67);
    assert_eq!(error(one(doc! {"key": {"a": 1}})).0, 9);
    assert_eq!(error(one(doc! {"name": "x"})).0, 9);
    assert_eq!(
        error(one(doc! {"key": {"a": 1}, "name": "x", "bogus": 1})).0,
        197
    );
    assert_eq!(
        error(one(
            doc! {"key": {"a": 1}, "name": "x", "expireAfterSeconds": 5}
        ))
        .0,
        67
    );
    assert_eq!(
        error(one(
            doc! {"key": {"a": 1}, "name": "x", "sparse": true, "partialFilterExpression": {"a": 1}}
        ))
        .0,
        67
    );
    assert_eq!(
        error(one(
            doc! {"key": {"a": 1}, "name": "x", "partialFilterExpression": {"$foo": 1}}
        ))
        .0,
        2
    );
    assert_eq!(
        error(CreateIndexesCommand::parse(
            &doc! {"createIndexes": "c", "indexes": []}
        ))
        .0,
        2
    );

    assert_eq!(
        DropIndexesCommand::parse(&doc! {"dropIndexes": "c", "index": "*"})
            .unwrap()
            .target,
        DropTarget::All
    );
    assert_eq!(
        DropIndexesCommand::parse(&doc! {"dropIndexes": "c", "index": {"a": 1}})
            .unwrap()
            .target,
        DropTarget::KeyPattern(doc! {"a": 1})
    );
    assert_eq!(
        error(DropIndexesCommand::parse(&doc! {"dropIndexes": "c"})).0,
        40414
    );
    assert_eq!(
        error(DropIndexesCommand::parse(
            &doc! {"dropIndexes": "c", "index": "_id_"}
        ))
        .0,
        72
    );
}

#[test]
fn explain_and_natural_sort() {
    let explain = ExplainCommand::parse(
        &doc! {"explain": {"find": "c", "filter": {}}, "verbosity": "executionStats", "$db": "d"},
    )
    .unwrap();
    assert_eq!(explain.command_name(), "find");
    assert_eq!(explain.verbosity, Verbosity::ExecutionStats);
    assert_eq!(
        ExplainCommand::parse(&doc! {"explain": {"find": "c"}})
            .unwrap()
            .verbosity,
        Verbosity::AllPlansExecution
    );
    assert_eq!(
        error(ExplainCommand::parse(
            &doc! {"explain": {"find": "c"}, "verbosity": "loud"}
        ))
        .0,
        2
    );
    assert_eq!(error(ExplainCommand::parse(&doc! {"explain": 1})).0, 14);
    let query = FindCommand::parse(&doc! {"find": "c", "sort": {"$natural": -1}})
        .unwrap()
        .to_query("d")
        .unwrap();
    assert_eq!(query.hint, Some(Hint::Natural { forward: false }));
    assert!(query.sort.is_empty());
    let count = CountCommand::parse(&doc! {"count": "c", "query": {"a": 1}, "limit": 2})
        .unwrap()
        .to_query("d")
        .unwrap();
    assert_eq!((count.namespace.as_str(), count.limit), ("d.c", Some(2)));
}
