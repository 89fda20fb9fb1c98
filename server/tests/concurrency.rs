//! Concurrent writers end to end: no lost increments on a hot document, one winner among
//! concurrent inserts of a unique key, and an index built while writes go on agrees with a
//! collection scan afterwards.

mod common;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_document_increments_are_not_lost() {
    let (node, client) = common::start().await;
    let coll = client.database("test").collection::<Document>("counters");
    coll.insert_one(doc! {"_id": "hot", "n": 0}).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let coll = coll.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                coll.update_one(doc! {"_id": "hot"}, doc! {"$inc": {"n": 1}})
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let hot = coll.find_one(doc! {"_id": "hot"}).await.unwrap().unwrap();
    assert_eq!(hot.get_i32("n").unwrap(), 16 * 25);
    let status = client
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap();
    let conflicts = status
        .get_document("metrics")
        .unwrap()
        .get_document("operation")
        .unwrap()
        .get_i64("writeConflicts")
        .unwrap();
    assert!(conflicts >= 0);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_among_concurrent_inserts_of_a_unique_key() {
    let (node, client) = common::start().await;
    let db = client.database("test");
    db.run_command(doc! {"createIndexes": "users", "indexes": [{"key": {"email": 1}, "name": "email_1", "unique": true}]}).await.unwrap();
    for round in 0..10 {
        let mut tasks = Vec::new();
        for writer in 0..8 {
            let coll = db.collection::<Document>("users");
            tasks.push(tokio::spawn(async move {
                coll.insert_one(doc! {"email": format!("user{round}@x"), "writer": writer})
                    .await
            }));
        }
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => winners += 1,
                Err(error) => assert!(error.is_duplicate_key(), "{error}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    assert_eq!(
        db.collection::<Document>("users")
            .count_documents(doc! {})
            .await
            .unwrap(),
        10
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_built_while_writes_go_on_matches_a_scan() {
    let (node, client) = common::start().await;
    let db = client.database("test");
    let coll = db.collection::<Document>("items");
    for chunk in 0..10 {
        coll.insert_many((0..1000).map(|i| doc! {"_id": chunk * 1000 + i, "k": (chunk * 1000 + i) % 97, "tags": [i % 5, i % 7]})).await.unwrap();
    }
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let coll = coll.clone();
            tokio::spawn(async move {
                for step in 0..150 {
                    let id = (writer * 3331 + step * 67) % 10_000;
                    match step % 3 {
                        0 => {
                            coll.update_one(doc! {"_id": id}, doc! {"$set": {"k": step % 97, "tags": [step % 11]}}).await.unwrap();
                        }
                        1 => {
                            coll.insert_one(doc! {"_id": 100_000 + writer * 1000 + step, "k": step % 97, "tags": [step]}).await.unwrap();
                        }
                        _ => {
                            coll.delete_one(doc! {"_id": id + 1}).await.unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    let built = db
        .run_command(doc! {"createIndexes": "items", "indexes": [{"key": {"k": 1}, "name": "k_1"}, {"key": {"tags": 1, "k": -1}, "name": "tags_1_k_-1"}]})
        .await
        .unwrap();
    assert_eq!(built.get_i32("numIndexesAfter").unwrap(), 3);
    for writer in writers {
        writer.await.unwrap();
    }
    for (filter, index) in [
        (doc! {"k": {"$gte": 10, "$lt": 30}}, "k_1"),
        (doc! {"k": 5}, "k_1"),
        (doc! {"tags": 3}, "tags_1_k_-1"),
        (
            doc! {"tags": {"$in": [1, 8]}, "k": {"$lt": 50}},
            "tags_1_k_-1",
        ),
    ] {
        let by_index: Vec<Document> = coll
            .find(filter.clone())
            .sort(doc! {"_id": 1})
            .hint(Bson::String(index.into()))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let by_scan: Vec<Document> = coll
            .find(filter.clone())
            .sort(doc! {"_id": 1})
            .hint(Bson::Document(doc! {"$natural": 1}))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(by_index, by_scan, "{filter} through {index}");
        assert!(!by_scan.is_empty(), "{filter}");
    }
    node.stop().await.unwrap();
}
