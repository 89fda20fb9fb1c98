//! Operations under the lock manager, end to end: currentOp and killOp of a waiting operation,
//! fsyncLock blocking writes while reads go on, maxTimeMS, a cursor whose collection is dropped,
//! many concurrent clients.

mod common;

use bson::{Bson, Document, doc};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_lock_blocks_writes_reads_go_on_and_kill_op_ends_a_waiter() {
    let (node, client) = common::start().await;
    let admin = client.database("admin");
    let coll = client.database("test").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    let locked = admin
        .run_command(doc! {"fsync": 1, "lock": true})
        .await
        .unwrap();
    assert_eq!(locked.get_i64("lockCount").unwrap(), 1);
    let nested = admin
        .run_command(doc! {"fsync": 1, "lock": true})
        .await
        .unwrap();
    assert_eq!(nested.get_i64("lockCount").unwrap(), 2);

    // Reads go on.
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
    // A write waits; currentOp shows it waiting for a lock.
    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move { coll.insert_one(doc! {"_id": 2}).await })
    };
    let opid = loop {
        let ops = admin
            .run_command(doc! {"currentOp": 1, "waitingForLock": true})
            .await
            .unwrap();
        let inprog = ops.get_array("inprog").unwrap();
        if let Some(Bson::Document(op)) = inprog.first() {
            assert_eq!(op.get_str("op").unwrap(), "insert");
            assert_eq!(op.get_str("ns").unwrap(), "test.c");
            assert!(op.get_document("locks").is_ok());
            break op.get_i64("opid").unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let lock_info = admin.run_command(doc! {"lockInfo": 1}).await.unwrap();
    assert!(!lock_info.get_array("lockInfo").unwrap().is_empty());
    admin
        .run_command(doc! {"killOp": 1, "op": opid})
        .await
        .unwrap();
    let error = writer.await.unwrap().unwrap_err();
    assert_eq!(error.code(), Some(11601), "{error}");

    // maxTimeMS bounds a wait.
    let error = client
        .database("test")
        .run_command(doc! {"insert": "c", "documents": [{"_id": 3}], "maxTimeMS": 50})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(50), "{error}");

    assert_eq!(
        admin
            .run_command(doc! {"fsyncUnlock": 1})
            .await
            .unwrap()
            .get_i64("lockCount")
            .unwrap(),
        1
    );
    assert_eq!(
        admin
            .run_command(doc! {"fsyncUnlock": 1})
            .await
            .unwrap()
            .get_i64("lockCount")
            .unwrap(),
        0
    );
    coll.insert_one(doc! {"_id": 4}).await.unwrap();
    assert_eq!(
        coll.count_documents(doc! {}).await.unwrap(),
        2,
        "the killed and timed-out writes did nothing"
    );
    let error = admin
        .run_command(doc! {"fsyncUnlock": 1})
        .await
        .unwrap_err();
    assert!(error.code().is_some());
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_whose_collection_is_dropped_is_killed() {
    let (node, client) = common::start().await;
    let db = client.database("test");
    db.collection::<Document>("c")
        .insert_many((0..10).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    let reply = db
        .run_command(doc! {"find": "c", "batchSize": 2})
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    db.run_command(doc! {"drop": "c"}).await.unwrap();
    let error = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(175), "{error}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_keeps_its_point_in_time_across_get_more() {
    let (node, client) = common::start().await;
    let db = client.database("test");
    let coll = db.collection::<Document>("c");
    coll.insert_many((0..10).map(|i| doc! {"_id": i, "v": 0}))
        .await
        .unwrap();
    let reply = db
        .run_command(doc! {"find": "c", "batchSize": 3})
        .await
        .unwrap();
    let id = reply.get_document("cursor").unwrap().get_i64("id").unwrap();
    coll.update_many(doc! {}, doc! {"$set": {"v": 1}})
        .await
        .unwrap();
    coll.insert_one(doc! {"_id": 100, "v": 1}).await.unwrap();
    let rest = db
        .run_command(doc! {"getMore": id, "collection": "c"})
        .await
        .unwrap();
    let batch = rest
        .get_document("cursor")
        .unwrap()
        .get_array("nextBatch")
        .unwrap();
    assert_eq!(batch.len(), 7, "the insert after the find is not seen");
    assert!(
        batch
            .iter()
            .all(|document| document.as_document().unwrap().get_i32("v").unwrap() == 0)
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients() {
    let (node, _client) = common::start().await;
    let address = format!("cairn://{}", node.address);
    let clients = 1000;
    let mut tasks = Vec::new();
    for client_number in 0..clients {
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            let client = cairn_driver::Client::connect(&address).await.unwrap();
            let coll = client.database("load").collection::<Document>("c");
            for i in 0..2 {
                coll.insert_one(doc! {"client": client_number, "i": i})
                    .await
                    .unwrap();
            }
            coll.count_documents(doc! {"client": client_number})
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 2);
    }
    let status = node.node.run_command(
        &Default::default(),
        doc! {"serverStatus": 1, "$db": "admin"},
    );
    assert!(
        status
            .get_document("connections")
            .unwrap()
            .get_i64("totalCreated")
            .unwrap()
            >= clients as i64
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_multi_update_yields_to_a_drop() {
    let (node, client) = common::start().await;
    let db = client.database("test");
    let coll = db.collection::<Document>("big");
    for chunk in 0..20 {
        coll.insert_many((0..1000).map(|i| doc! {"_id": chunk * 1000 + i, "v": 0}))
            .await
            .unwrap();
    }
    let updater = {
        let coll = coll.clone();
        tokio::spawn(async move { coll.update_many(doc! {}, doc! {"$inc": {"v": 1}}).await })
    };
    // Let the update get going, then drop the collection under it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    db.run_command(doc! {"drop": "big"}).await.unwrap();
    let drop_took = started.elapsed();
    match updater.await.unwrap() {
        Err(error) => assert_eq!(error.code(), Some(175), "{error}"),
        Ok(result) => panic!(
            "the update finished ({} matched) before the drop; make the collection bigger",
            result.matched_count
        ),
    }
    assert!(
        drop_took < Duration::from_secs(5),
        "the drop waited {drop_took:?}: the update did not yield"
    );
    node.stop().await.unwrap();
}
