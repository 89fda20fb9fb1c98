//! Protocol tests: the driver against an in-process test double of cairnd (tests/support).
//! They check the exact command documents sent, cursors across getMore, killCursors on drop,
//! error decoding, concern inheritance, cluster time gossip and 48 MB messages.

#[path = "support/double.rs"]
mod double;

use bson::{Bson, Document, doc};
use cairn_driver::action::ReturnDocument;
use cairn_driver::concern::Inherited;
use cairn_driver::{Client, ErrorKind, IndexModel, ReadConcern, ReadPreference, WriteConcern};
use double::Server;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Person {
    #[serde(rename = "_id")]
    id: i32,
    name: String,
    age: i32,
}

fn person(id: i32, age: i32) -> Person {
    Person {
        id,
        name: format!("p{id}"),
        age,
    }
}

async fn connect(server: &Server) -> Client {
    Client::connect(&server.uri()).await.unwrap()
}

#[tokio::test]
async fn typed_crud_sends_mongodb_commands() {
    let server = Server::start().await;
    let client = connect(&server).await;
    let people = client.database("app").collection::<Person>("people");

    let inserted = people.insert_one(person(1, 30)).await.unwrap();
    assert_eq!(inserted.inserted_id, Bson::Int32(1));
    let many = people
        .insert_many([person(2, 20), person(3, 40)])
        .await
        .unwrap();
    assert_eq!(many.inserted_ids.len(), 2);
    assert_eq!(many.inserted_ids[&1], Bson::Int32(3));

    let found: Vec<Person> = people
        .find(doc! {"age": {"$gte": 25}})
        .sort(doc! {"age": -1})
        .limit(5)
        .projection(doc! {"name": 1, "age": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found, vec![person(3, 40), person(1, 30)]);
    assert_eq!(
        server.double.commands_named("find").last().unwrap(),
        &doc! {"find": "people", "filter": {"age": {"$gte": 25}}, "sort": {"age": -1},
        "projection": {"name": 1, "age": 1}, "limit": 5_i64, "$db": "app"}
    );
    assert_eq!(
        server.double.commands_named("insert")[0],
        doc! {"insert": "people", "documents": [{"_id": 1, "name": "p1", "age": 30}], "$db": "app"}
    );
    assert!(
        server.double.commands_named("insert")[1]
            .get_bool("ordered")
            .unwrap()
    );

    assert_eq!(
        people.find_one(doc! {"_id": 2}).await.unwrap(),
        Some(person(2, 20))
    );
    assert_eq!(
        server.double.commands_named("find").last().unwrap(),
        &doc! {"find": "people", "filter": {"_id": 2}, "limit": 1_i64, "singleBatch": true, "$db": "app"}
    );
    assert_eq!(people.find_one(doc! {"_id": 99}).await.unwrap(), None);

    let updated = people
        .update_one(doc! {"_id": 2}, doc! {"$set": {"age": 21}})
        .upsert(true)
        .await
        .unwrap();
    assert_eq!(
        (
            updated.matched_count,
            updated.modified_count,
            updated.upserted_id
        ),
        (1, 1, None)
    );
    assert_eq!(
        server.double.commands_named("update")[0],
        doc! {"update": "people", "updates": [{"q": {"_id": 2}, "u": {"$set": {"age": 21}}, "upsert": true}],
        "ordered": true, "$db": "app"}
    );
    let replaced = people
        .replace_one(doc! {"_id": 3}, person(3, 41))
        .await
        .unwrap();
    assert_eq!(replaced.modified_count, 1);
    let error = people
        .update_many(doc! {}, doc! {"age": 1})
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::InvalidArgument { .. }),
        "{error}"
    );

    let before = people
        .find_one_and_update(doc! {"_id": 1}, doc! {"$set": {"age": 31}})
        .return_document(ReturnDocument::After)
        .await
        .unwrap();
    assert_eq!(before, Some(person(1, 31)));
    assert_eq!(
        server.double.commands_named("findAndModify")[0],
        doc! {"findAndModify": "people", "query": {"_id": 1}, "update": {"$set": {"age": 31}}, "new": true, "$db": "app"}
    );
    let deleted = people.find_one_and_delete(doc! {"_id": 1}).await.unwrap();
    assert_eq!(deleted, Some(person(1, 31)));

    assert_eq!(people.count_documents(doc! {}).await.unwrap(), 2);
    assert_eq!(
        server.double.commands_named("aggregate").last().unwrap(),
        &doc! {"aggregate": "people", "pipeline": [{"$match": {}}, {"$group": {"_id": 1, "n": {"$sum": 1}}}],
        "cursor": {}, "$db": "app"}
    );
    assert_eq!(people.estimated_document_count().await.unwrap(), 2);
    let ages = people.distinct("age", doc! {}).await.unwrap();
    assert_eq!(ages, vec![Bson::Int32(21), Bson::Int32(41)]);

    let deleted = people.delete_many(doc! {}).await.unwrap();
    assert_eq!(deleted.deleted_count, 2);
    assert_eq!(
        server.double.commands_named("delete")[0],
        doc! {"delete": "people", "deletes": [{"q": {}, "limit": 0}], "ordered": true, "$db": "app"}
    );
}

#[tokio::test]
async fn indexes_collections_and_databases() {
    let server = Server::start().await;
    let client = connect(&server).await;
    let database = client.database("app");
    let things = database.collection::<Document>("things");
    let name = things
        .create_index(IndexModel::new(doc! {"a": 1, "b": -1}))
        .one()
        .await
        .unwrap();
    assert_eq!(name.index_name, "a_1_b_-1");
    assert_eq!(
        server.double.commands_named("createIndexes")[0],
        doc! {"createIndexes": "things", "indexes": [{"key": {"a": 1, "b": -1}, "name": "a_1_b_-1"}], "$db": "app"}
    );
    assert_eq!(
        things.list_indexes().names().await.unwrap(),
        vec!["_id_", "a_1_b_-1"]
    );
    things.drop_index("a_1_b_-1").await.unwrap();
    database.create_collection("other").await.unwrap();
    assert_eq!(
        database.list_collections().names().await.unwrap(),
        vec!["other", "things"]
    );
    assert_eq!(client.list_databases().names().await.unwrap(), vec!["app"]);
    things.drop().await.unwrap();
    things
        .drop()
        .await
        .expect("dropping a missing collection is not an error");
    database.drop().await.unwrap();
    assert!(client.list_databases().await.unwrap().is_empty());
}

#[tokio::test]
async fn cursor_crosses_get_more_batches() {
    let server = Server::start().await;
    server
        .double
        .seed("app.c", (0..250).map(|i| doc! {"_id": i}).collect());
    let client = connect(&server).await;
    let c = client.database("app").collection::<Document>("c");
    let cursor = c.find(doc! {}).batch_size(100).await.unwrap();
    assert_ne!(cursor.id(), 0);
    assert_eq!(cursor.buffered_len(), 100);
    let all: Vec<Document> = cursor.try_collect().await.unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!(all[249], doc! {"_id": 249});
    let get_mores = server.double.commands_named("getMore");
    assert_eq!(get_mores.len(), 2);
    let id = get_mores[0].get_i64("getMore").unwrap();
    assert_eq!(
        get_mores[0],
        doc! {"getMore": id, "collection": "c", "batchSize": 100_i64, "$db": "app"}
    );
    assert_eq!(server.double.open_cursors(), 0);
    assert!(
        server.double.killed_cursors().is_empty(),
        "an exhausted cursor is not killed"
    );

    // aggregate cursors too.
    let all: Vec<Document> = c
        .aggregate([doc! {"$match": {}}])
        .batch_size(60)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!(server.double.commands_named("getMore").len(), 2 + 4);
}

#[tokio::test]
async fn dropping_a_cursor_early_kills_it() {
    let server = Server::start().await;
    server
        .double
        .seed("app.c", (0..50).map(|i| doc! {"_id": i}).collect());
    let client = connect(&server).await;
    let c = client.database("app").collection::<Document>("c");
    let mut cursor = c.find(doc! {}).batch_size(10).await.unwrap();
    let id = cursor.id();
    assert_eq!(cursor.next().await.unwrap().unwrap(), doc! {"_id": 0});
    drop(cursor);
    for _ in 0..200 {
        if !server.double.killed_cursors().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.double.killed_cursors(), vec![id]);
    assert_eq!(
        server.double.commands_named("killCursors")[0],
        doc! {"killCursors": "c", "cursors": [id], "$db": "app"}
    );
    assert_eq!(server.double.open_cursors(), 0);

    // close() kills at once and waits for the reply.
    server
        .double
        .seed("app.d", (0..50).map(|i| doc! {"_id": i}).collect());
    let cursor = client
        .database("app")
        .collection::<Document>("d")
        .find(doc! {})
        .batch_size(10)
        .await
        .unwrap();
    let id = cursor.id();
    cursor.close().await.unwrap();
    assert_eq!(
        server.double.killed_cursors(),
        vec![killed_first(&server), id]
    );
}

fn killed_first(server: &Server) -> i64 {
    server.double.killed_cursors()[0]
}

#[tokio::test]
async fn errors_are_decoded_with_codes_labels_and_write_errors() {
    let server = Server::start().await;
    let client = connect(&server).await;
    let database = client.database("app");
    let c = database.collection::<Document>("c");

    // Duplicate key as a write error, with the partial result of an unordered insert_many.
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    let error = c.insert_one(doc! {"_id": 1}).await.unwrap_err();
    assert!(error.is_duplicate_key(), "{error}");
    assert_eq!(error.code(), Some(11000));
    assert_eq!(error.code_name().as_deref(), Some("DuplicateKey"));
    assert!(
        error.message().starts_with("E11000 duplicate key error"),
        "{}",
        error.message()
    );
    let error = c
        .insert_many([doc! {"_id": 2}, doc! {"_id": 1}, doc! {"_id": 3}])
        .ordered(false)
        .await
        .unwrap_err();
    let failure = error.write_failure().unwrap();
    assert_eq!(failure.write_errors.len(), 1);
    assert_eq!(failure.write_errors[0].index, 1);
    assert_eq!(
        failure.inserted_ids.keys().copied().collect::<Vec<_>>(),
        vec![0, 2]
    );

    // A command error with labels.
    server.double.script(
        "find",
        doc! {"ok": 0.0, "errmsg": "operation exceeded time limit", "code": 50,
        "codeName": "MaxTimeMSExpired", "errorLabels": ["TransientTransactionError"]},
    );
    let error = c.find(doc! {}).await.unwrap_err();
    assert_eq!(error.code(), Some(50));
    assert_eq!(
        error.error_code(),
        Some(cairn_types::ErrorCode::MaxTimeMSExpired)
    );
    assert!(error.has_label("TransientTransactionError"));
    assert_eq!(
        error.to_string(),
        "MaxTimeMSExpired (50): operation exceeded time limit"
    );

    // A write concern error on an acknowledged write.
    server.double.script(
        "insert",
        doc! {"n": 1, "writeConcernError": {"code": 64, "codeName": "WriteConcernTimeout",
        "errmsg": "waiting for replication timed out", "errInfo": {"wtimeout": true}}, "ok": 1.0},
    );
    let error = c.insert_one(doc! {"x": 1}).await.unwrap_err();
    assert!(error.is_write_concern_error());
    assert_eq!(error.code_name().as_deref(), Some("WriteConcernTimeout"));

    // Unknown commands through run_command.
    let error = database
        .run_command(doc! {"frobnicate": 1})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(59));
    assert_eq!(error.code_name().as_deref(), Some("CommandNotFound"));

    // A getMore on a cursor the server lost ends the stream with the error.
    server
        .double
        .seed("app.d", (0..5).map(|i| doc! {"_id": i}).collect());
    let mut cursor = database
        .collection::<Document>("d")
        .find(doc! {})
        .batch_size(2)
        .await
        .unwrap();
    server.double.script("getMore", doc! {"ok": 0.0, "errmsg": "cursor id 1 not found", "code": 43, "codeName": "CursorNotFound"});
    assert!(cursor.next().await.unwrap().is_ok());
    assert!(cursor.next().await.unwrap().is_ok());
    assert_eq!(cursor.next().await.unwrap().unwrap_err().code(), Some(43));
    assert!(cursor.next().await.is_none());
}

#[tokio::test]
async fn concerns_follow_the_most_specific_setting() {
    let server = Server::start().await;
    let uri = format!(
        "{}&w=majority&readConcernLevel=local&readPreference=secondaryPreferred",
        server.uri()
    );
    let client = Client::connect(&uri).await.unwrap();
    let database = client.database_with_options(
        "app",
        Inherited {
            write_concern: Some(WriteConcern::nodes(2)),
            ..Default::default()
        },
    );
    let c = database.collection::<Document>("c");
    c.insert_one(doc! {"_id": 1}).await.unwrap();
    c.insert_one(doc! {"_id": 2})
        .write_concern(WriteConcern::majority().with_journal(true))
        .await
        .unwrap();
    let default_db = client.database("app").collection::<Document>("c");
    default_db.insert_one(doc! {"_id": 3}).await.unwrap();
    let inserts = server.double.commands_named("insert");
    assert_eq!(
        inserts[0].get_document("writeConcern").unwrap(),
        &doc! {"w": 2}
    );
    assert_eq!(
        inserts[1].get_document("writeConcern").unwrap(),
        &doc! {"w": "majority", "j": true}
    );
    assert_eq!(
        inserts[2].get_document("writeConcern").unwrap(),
        &doc! {"w": "majority"}
    );

    let _ = c.find(doc! {}).await.unwrap();
    let majority = c.with_options(Inherited {
        read_concern: Some(ReadConcern::majority()),
        ..Default::default()
    });
    let _ = majority
        .find(doc! {})
        .read_preference(ReadPreference::nearest())
        .await
        .unwrap();
    let finds = server.double.commands_named("find");
    assert_eq!(
        finds[0].get_document("readConcern").unwrap(),
        &doc! {"level": "local"}
    );
    assert_eq!(
        finds[0].get_document("$readPreference").unwrap(),
        &doc! {"mode": "secondaryPreferred"}
    );
    assert!(!finds[0].contains_key("writeConcern"));
    assert_eq!(
        finds[1].get_document("readConcern").unwrap(),
        &doc! {"level": "majority"}
    );
    assert_eq!(
        finds[1].get_document("$readPreference").unwrap(),
        &doc! {"mode": "nearest"}
    );
    assert!(!inserts[0].contains_key("readConcern") && !inserts[0].contains_key("$readPreference"));
    assert_eq!(majority.read_concern(), Some(ReadConcern::majority()));
    assert_eq!(majority.write_concern(), Some(WriteConcern::nodes(2)));
}

#[tokio::test]
async fn cluster_time_is_gossiped() {
    let server = Server::start().await;
    let client = connect(&server).await;
    let cluster_time = doc! {"clusterTime": bson::Timestamp { time: 100, increment: 2 }, "signature": {"hash": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 20] }, "keyId": 0_i64}};
    let mut reply = doc! {"ok": 1.0};
    reply.insert("$clusterTime", cluster_time.clone());
    server.double.script("ping", reply);
    client.ping().await.unwrap();
    client.ping().await.unwrap();
    let pings = server.double.commands_named("ping");
    assert!(!pings[0].contains_key("$clusterTime"));
    assert_eq!(
        pings[1].get_document("$clusterTime").unwrap(),
        &cluster_time
    );
    assert_eq!(client.cluster_time(), Some(cluster_time));
}

#[tokio::test]
async fn messages_of_48_mb_pass_both_ways() {
    let server = Server::start().await;
    let client = connect(&server).await;
    let c = client.database("app").collection::<Document>("big");
    // Three documents just under 16 MB each: one insert command and one find reply of ~47.9 MB.
    let payload = vec![7u8; 15_900_000];
    let documents: Vec<Document> = (0..3)
        .map(|i| doc! {"_id": i, "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: payload.clone() }})
        .collect();
    c.insert_many(documents).await.unwrap();
    assert_eq!(
        server.double.commands_named("insert").len(),
        1,
        "one message carries all three"
    );
    let found: Vec<Document> = c.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(
        found[2].get_binary_generic("payload").unwrap().len(),
        15_900_000
    );
    assert!(
        server.double.commands_named("getMore").is_empty(),
        "the whole reply came in one message"
    );

    // A fourth document makes the batch too large for one message: the driver splits it.
    let documents: Vec<Document> = (10..14)
        .map(|i| doc! {"_id": i, "payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: payload.clone() }})
        .collect();
    c.insert_many(documents).await.unwrap();
    assert_eq!(server.double.commands_named("insert").len(), 3);

    // A command over the limit is refused before it is sent.
    let huge = doc! {"payload": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 48_100_000] }};
    let error = c.insert_one(huge).await.unwrap_err();
    assert!(
        matches!(error.kind(), ErrorKind::InvalidArgument { .. }),
        "{error}"
    );
    assert!(error.message().contains("48000000"), "{error}");
}

#[tokio::test]
async fn unreachable_servers_fail_server_selection() {
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = Client::connect(&format!(
        "cairn://127.0.0.1:{port}/?serverSelectionTimeoutMS=300&connectTimeoutMS=200"
    ))
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let error = client.ping().await.unwrap_err();
    assert!(error.is_server_selection_error(), "{error}");
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_server_that_goes_away_fails_the_next_operation() {
    let mut server = Server::start().await;
    let client = connect(&server).await;
    client.ping().await.unwrap();
    assert_eq!(
        client.topology_description().topology_type,
        cairn_driver::topology::TopologyType::Single
    );
    server.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let error = client.ping().await.unwrap_err();
    assert!(
        error.is_network_error() || error.is_server_selection_error(),
        "{error}"
    );
}

#[tokio::test]
async fn the_monitor_discovers_the_replica_set_from_hello() {
    let server = Server::start().await;
    let me = server.address.to_string();
    server.double.set_hello(doc! {
        "isWritablePrimary": true, "secondary": false, "setName": "rs0", "hosts": [me.clone()],
        "me": me.clone(), "primary": me.clone(), "setVersion": 1,
        "electionId": bson::oid::ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), "ok": 1.0,
    });
    let client = Client::connect(&format!(
        "{}&replicaSet=rs0&readPreference=secondaryPreferred",
        server.uri()
    ))
    .await
    .unwrap();
    client.ping().await.unwrap();
    let description = client.topology_description();
    assert_eq!(
        description.topology_type,
        cairn_driver::topology::TopologyType::ReplicaSetWithPrimary
    );
    assert_eq!(description.set_name.as_deref(), Some("rs0"));
    assert_eq!(description.primary().unwrap().address.to_string(), me);
    // secondaryPreferred with no secondary reads from the primary, and says so.
    let _ = client
        .database("app")
        .collection::<Document>("c")
        .find(doc! {})
        .await
        .unwrap();
    let find = server.double.commands_named("find").pop().unwrap();
    assert_eq!(
        find.get_document("$readPreference").unwrap(),
        &doc! {"mode": "secondaryPreferred"}
    );
}

#[tokio::test]
async fn a_member_of_another_set_is_never_selected() {
    let server = Server::start().await;
    // The double answers hello as a standalone: not a member of rs0.
    let client = Client::connect(&format!(
        "cairn://{}/?replicaSet=rs0&serverSelectionTimeoutMS=300",
        server.address
    ))
    .await
    .unwrap();
    let error = client.ping().await.unwrap_err();
    assert!(error.is_server_selection_error(), "{error}");
    assert!(
        client.topology_description().servers.is_empty(),
        "the standalone was removed"
    );
    assert!(server.double.commands_named("ping").is_empty());
}
