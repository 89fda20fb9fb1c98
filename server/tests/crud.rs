//! CRUD, cursors, indexes, aggregation and DDL end to end: the cairn driver against a node over
//! gRPC.

mod common;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_find_update_delete() {
    let (node, client) = common::start().await;
    let db = client.database("shop");
    let orders = db.collection::<Document>("orders");
    let documents: Vec<Document> =
        (0..50).map(|i| doc! {"_id": i, "item": format!("item{}", i % 5), "qty": i, "tags": ["a", format!("t{}", i % 3)]}).collect();
    orders.insert_many(documents).await.unwrap();
    assert_eq!(orders.count_documents(doc! {}).await.unwrap(), 50);
    assert_eq!(
        orders
            .count_documents(doc! {"item": "item3"})
            .await
            .unwrap(),
        10
    );

    // find with sort, skip, limit, projection.
    let found: Vec<Document> = orders
        .find(doc! {"qty": {"$gte": 10}})
        .sort(doc! {"qty": -1})
        .skip(2)
        .limit(3)
        .projection(doc! {"qty": 1, "_id": 0})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![doc! {"qty": 47}, doc! {"qty": 46}, doc! {"qty": 45}]
    );
    let one = orders
        .find_one(doc! {"tags": "t2", "qty": {"$lt": 6}})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.get_i32("_id").unwrap(), 2);

    // Updates: operators, multi, upsert, replacement.
    let result = orders
        .update_many(
            doc! {"item": "item1"},
            doc! {"$inc": {"qty": 100}, "$set": {"flag": true}},
        )
        .await
        .unwrap();
    assert_eq!((result.matched_count, result.modified_count), (10, 10));
    let result = orders
        .update_one(doc! {"_id": 1}, doc! {"$set": {"flag": true}})
        .await
        .unwrap();
    assert_eq!(
        (result.matched_count, result.modified_count),
        (1, 0),
        "no change, not modified"
    );
    let result = orders
        .update_one(doc! {"_id": 999}, doc! {"$set": {"qty": 1}})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(result.upserted_id, Some(Bson::Int32(999)));
    let result = orders
        .replace_one(doc! {"_id": 999}, doc! {"item": "replaced"})
        .await
        .unwrap();
    assert_eq!(result.modified_count, 1);
    assert_eq!(
        orders.find_one(doc! {"_id": 999}).await.unwrap().unwrap(),
        doc! {"_id": 999, "item": "replaced"}
    );
    let error = orders
        .update_one(doc! {"_id": 999}, doc! {"$set": {"_id": 5}})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(66), "{error}");

    // findAndModify.
    let before = orders
        .find_one_and_update(doc! {"_id": 0}, doc! {"$inc": {"qty": 1}})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.get_i32("qty").unwrap(), 0);
    let gone = orders
        .find_one_and_delete(doc! {"_id": 0})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.get_i32("qty").unwrap(), 1);

    // Deletes.
    let result = orders.delete_many(doc! {"item": "item4"}).await.unwrap();
    assert_eq!(result.deleted_count, 10);
    let result = orders.delete_one(doc! {"qty": {"$gt": 0}}).await.unwrap();
    assert_eq!(result.deleted_count, 1);
    assert_eq!(
        orders.count_documents(doc! {}).await.unwrap(),
        50 + 1 - 1 - 10 - 1
    );

    // Duplicate keys carry MongoDB's code, keyPattern and keyValue.
    let error = orders.insert_one(doc! {"_id": 3}).await.unwrap_err();
    assert!(error.is_duplicate_key(), "{error}");
    let distinct = orders.distinct("item", doc! {}).await.unwrap();
    assert_eq!(distinct.len(), 5, "{distinct:?}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_cross_get_more_and_can_be_killed() {
    let (node, client) = common::start().await;
    let coll = client.database("test").collection::<Document>("many");
    coll.insert_many((0..1000).map(|i| doc! {"_id": i, "v": i}))
        .await
        .unwrap();
    let all: Vec<Document> = coll
        .find(doc! {})
        .batch_size(7)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 1000);
    assert!(
        all.windows(2)
            .all(|w| w[0].get_i32("_id").unwrap() < w[1].get_i32("_id").unwrap())
    );
    // A raw find leaves a cursor; killCursors removes it; getMore then fails with 43.
    let db = client.database("test");
    let reply = db
        .run_command(doc! {"find": "many", "batchSize": 2})
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    assert_ne!(id, 0);
    let more = db
        .run_command(doc! {"getMore": id, "collection": "many", "batchSize": 3})
        .await
        .unwrap();
    assert_eq!(
        more.get_document("cursor")
            .unwrap()
            .get_array("nextBatch")
            .unwrap()
            .len(),
        3
    );
    let killed = db
        .run_command(doc! {"killCursors": "many", "cursors": [id]})
        .await
        .unwrap();
    assert_eq!(
        killed.get_array("cursorsKilled").unwrap(),
        &vec![Bson::Int64(id)]
    );
    let error = db
        .run_command(doc! {"getMore": id, "collection": "many"})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(43));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_plans_and_explain() {
    let (node, client) = common::start().await;
    let db = client.database("test");
    let people = db.collection::<Document>("people");
    people.insert_many((0..200).map(|i| doc! {"_id": i, "age": i % 50, "name": format!("p{i}"), "emails": [format!("p{i}@a"), format!("p{i}@b")]})).await.unwrap();
    db.run_command(doc! {"createIndexes": "people", "indexes": [
        {"key": {"age": 1}, "name": "age_1"},
        {"key": {"emails": 1}, "name": "emails_1", "unique": true},
    ]})
    .await
    .unwrap();
    let indexes = db
        .run_command(doc! {"listIndexes": "people"})
        .await
        .unwrap();
    let names: Vec<String> = indexes
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|spec| {
            spec.as_document()
                .unwrap()
                .get_str("name")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names, vec!["_id_", "age_1", "emails_1"]);
    let explain = db.run_command(doc! {"explain": {"find": "people", "filter": {"age": 7}}, "verbosity": "executionStats"}).await.unwrap();
    let planner = explain.get_document("queryPlanner").unwrap();
    assert_eq!(
        planner
            .get_document("winningPlan")
            .unwrap()
            .get_str("stage")
            .unwrap(),
        "FETCH"
    );
    let stats = explain.get_document("executionStats").unwrap();
    assert_eq!(stats.get_i32("nReturned").unwrap(), 4);
    assert_eq!(stats.get_i32("totalKeysExamined").unwrap(), 4);
    assert_eq!(stats.get_i32("totalDocsExamined").unwrap(), 4);
    // Index results agree with a scan.
    let by_index: Vec<Document> = people
        .find(doc! {"age": {"$in": [3, 4]}})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let by_scan: Vec<Document> = people
        .find(doc! {"age": {"$in": [3, 4]}})
        .sort(doc! {"_id": 1})
        .hint(Bson::Document(doc! {"$natural": 1}))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(by_index.len(), 8);
    assert_eq!(by_index, by_scan);
    let multikey: Vec<Document> = people
        .find(doc! {"emails": "p5@b"})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(multikey.len(), 1);
    // Unique violation on a multikey unique index, with keyPattern and keyValue.
    let error = people
        .insert_one(doc! {"_id": 1000, "emails": ["p5@b"]})
        .await
        .unwrap_err();
    assert!(error.is_duplicate_key(), "{error}");
    // Maintained on update and delete.
    people
        .update_one(doc! {"_id": 5}, doc! {"$set": {"emails": ["new@x"]}})
        .await
        .unwrap();
    assert_eq!(
        people
            .count_documents(doc! {"emails": "p5@b"})
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        people
            .count_documents(doc! {"emails": "new@x"})
            .await
            .unwrap(),
        1
    );
    people
        .insert_one(doc! {"_id": 1001, "emails": ["p5@b"]})
        .await
        .unwrap();
    // A unique index build over duplicates fails and leaves nothing behind.
    let error = db.run_command(doc! {"createIndexes": "people", "indexes": [{"key": {"age": 1, "name": 1}, "name": "bad", "unique": true}, {"key": {"age": -1}, "name": "dup_age", "unique": true}]}).await.unwrap_err();
    assert_eq!(error.code(), Some(11000));
    let indexes = db
        .run_command(doc! {"listIndexes": "people"})
        .await
        .unwrap();
    assert_eq!(
        indexes
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()
            .len(),
        3
    );
    db.run_command(doc! {"dropIndexes": "people", "index": "age_1"})
        .await
        .unwrap();
    let error = db
        .run_command(doc! {"dropIndexes": "people", "index": "age_1"})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(27));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregation_and_ddl() {
    let (node, client) = common::start().await;
    let db = client.database("sales");
    let coll = db.collection::<Document>("orders");
    let regions = ["north", "south", "east"];
    coll.insert_many(
        (0..30).map(|i| doc! {"_id": i as i32, "region": regions[i % 3], "amount": i as i64}),
    )
    .await
    .unwrap();
    let totals: Vec<Document> = coll
        .aggregate(vec![
            doc! {"$match": {"amount": {"$gte": 3}}},
            doc! {"$group": {"_id": "$region", "total": {"$sum": "$amount"}}},
            doc! {"$sort": {"_id": 1}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        totals,
        vec![
            doc! {"_id": "east", "total": 2 + 5 + 8 + 11 + 14 + 17 + 20 + 23 + 26 + 29 - 2i64},
            doc! {"_id": "north", "total": 135i64},
            doc! {"_id": "south", "total": 4 + 7 + 10 + 13 + 16 + 19 + 22 + 25 + 28i64}
        ]
    );
    let names = db.list_collections().names().await.unwrap();
    assert_eq!(names, vec!["orders".to_owned()]);
    db.run_command(doc! {"create": "empty"}).await.unwrap();
    let error = db
        .run_command(doc! {"create": "capped", "capped": true, "size": 100})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(115));
    client
        .database("admin")
        .run_command(doc! {"renameCollection": "sales.orders", "to": "sales.archive"})
        .await
        .unwrap();
    let mut names = db.list_collections().names().await.unwrap();
    names.sort();
    assert_eq!(names, vec!["archive".to_owned(), "empty".to_owned()]);
    assert_eq!(
        db.collection::<Document>("archive")
            .count_documents(doc! {})
            .await
            .unwrap(),
        30
    );
    let databases = client.list_databases().names().await.unwrap();
    assert!(databases.contains(&"sales".to_owned()), "{databases:?}");
    db.run_command(doc! {"drop": "archive"}).await.unwrap();
    db.run_command(doc! {"dropDatabase": 1}).await.unwrap();
    assert!(db.list_collections().names().await.unwrap().is_empty());
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stages_and_standalone_refusals() {
    let (node, client) = common::start().await;
    let db = client.database("test");
    let coll = db.collection::<Document>("c");
    coll.insert_many((0..5).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    // $currentOp (mongosh's db.currentOp()) lists at least the aggregation itself.
    let ops = client
        .database("admin")
        .run_command(doc! {"aggregate": 1, "pipeline": [{"$currentOp": {"allUsers": true}}, {"$match": {"ns": "admin.$cmd"}}], "cursor": {}})
        .await
        .unwrap();
    let batch = ops
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    assert!(!batch.is_empty(), "{ops}");
    // $collStats (mongosh's db.c.stats()).
    let stats = db.run_command(doc! {"aggregate": "c", "pipeline": [{"$collStats": {"storageStats": {}, "count": {}}}], "cursor": {}}).await.unwrap();
    let first = stats
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()[0]
        .as_document()
        .unwrap()
        .clone();
    assert_eq!(
        first
            .get_document("storageStats")
            .unwrap()
            .get_i64("count")
            .unwrap(),
        5
    );
    assert_eq!(first.get_i64("count").unwrap(), 5);
    // Transactions and retryable writes need a replica set.
    let error = db
        .run_command(doc! {"insert": "c", "documents": [{"_id": 9}], "lsid": {"id": bson::Uuid::new()}, "txnNumber": 1i64})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(20), "{error}");
    assert_eq!(
        coll.count_documents(doc! {}).await.unwrap(),
        5,
        "the refused write did nothing"
    );
    node.stop().await.unwrap();
}
