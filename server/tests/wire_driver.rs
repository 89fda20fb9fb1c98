//! The official MongoDB Rust driver (crate `mongodb`) against a cairn node over MongoDB's wire
//! protocol, on the same port as gRPC: handshake, admin commands, CRUD, cursors across getMore,
//! indexes and DuplicateKey, aggregation, documents near 16 MiB, and a driver's monitor that
//! does not spin. (This driver refuses w:0 write concerns, "Unacknowledged write concerns are not
//! supported", so moreToCome writes are tested with raw messages in wire_protocol.rs and with
//! pymongo in wire_clients.rs.)

use bson::{Bson, Document, doc};
use cairn_server::{EmbeddedNode, NodeConfig};
use futures::TryStreamExt;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, IndexModel};

async fn start() -> EmbeddedNode {
    let config = NodeConfig {
        port: 0,
        ..NodeConfig::default()
    };
    EmbeddedNode::start(config, true)
        .await
        .expect("node starts")
}

async fn driver(node: &EmbeddedNode, app_name: &str) -> Client {
    let uri = format!(
        "mongodb://{}/?appName={app_name}&serverSelectionTimeoutMS=5000",
        node.address
    );
    let options = ClientOptions::parse(&uri).await.expect("uri parses");
    Client::with_options(options).expect("client")
}

fn as_i64(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Double(v)) => *v as i64,
        other => panic!("not a number: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_and_admin_commands() {
    let node = start().await;
    let client = driver(&node, "wire-test").await;
    let admin = client.database("admin");

    let ping = admin.run_command(doc! {"ping": 1}).await.unwrap();
    assert_eq!(as_i64(ping.get("ok")), 1);

    let hello = admin.run_command(doc! {"hello": 1}).await.unwrap();
    assert_eq!(hello.get_bool("isWritablePrimary").ok(), Some(true));
    assert_eq!(hello.get_i32("maxWireVersion").ok(), Some(25));
    assert_eq!(
        hello.get_i32("maxBsonObjectSize").ok(),
        Some(16 * 1024 * 1024)
    );
    assert_eq!(hello.get_i32("maxMessageSizeBytes").ok(), Some(48_000_000));
    assert_eq!(hello.get_i32("maxWriteBatchSize").ok(), Some(100_000));
    assert!(hello.get_i32("connectionId").unwrap() > 0);
    assert!(
        !hello.contains_key("compression"),
        "no compressor is advertised"
    );

    let build_info = admin.run_command(doc! {"buildInfo": 1}).await.unwrap();
    assert_eq!(build_info.get_str("version").ok(), Some("8.0.0"));
    assert_eq!(
        build_info.get_array("versionArray").unwrap().len(),
        4,
        "{build_info}"
    );

    let status = admin.run_command(doc! {"serverStatus": 1}).await.unwrap();
    let connections = status.get_document("connections").unwrap();
    assert!(as_i64(connections.get("current")) >= 1, "{connections}");

    // The driver's handshake metadata shows in currentOp, per connection.
    let current = admin
        .run_command(doc! {"currentOp": 1, "$all": true})
        .await
        .unwrap();
    let entries = current.get_array("inprog").unwrap();
    let ours = entries
        .iter()
        .filter_map(Bson::as_document)
        .find(|entry| {
            entry
                .get_document("command")
                .is_ok_and(|command| command.contains_key("currentOp"))
        })
        .unwrap_or_else(|| panic!("currentOp lists itself: {current}"));
    let metadata = ours.get_document("clientMetadata").unwrap();
    assert_eq!(
        metadata
            .get_document("driver")
            .unwrap()
            .get_str("name")
            .ok(),
        Some("mongo-rust-driver"),
        "{metadata}"
    );
    assert_eq!(
        metadata
            .get_document("application")
            .unwrap()
            .get_str("name")
            .ok(),
        Some("wire-test")
    );

    // Generic fields drivers add are accepted; unknown commands are CommandNotFound.
    let error = admin
        .run_command(doc! {"noSuchCommand": 1})
        .await
        .unwrap_err();
    match *error.kind {
        ErrorKind::Command(ref command) => assert_eq!(command.code, 59),
        ref other => panic!("unexpected error {other:?}"),
    }
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_cursors_indexes_and_aggregation() {
    let node = start().await;
    let client = driver(&node, "wire-crud").await;
    let db = client.database("app");
    let items = db.collection::<Document>("items");

    let documents: Vec<Document> = (0..250)
        .map(|i| doc! {"_id": i, "group": i % 5, "name": format!("item-{i}")})
        .collect();
    let inserted = items.insert_many(documents).await.unwrap();
    assert_eq!(inserted.inserted_ids.len(), 250);
    assert_eq!(items.count_documents(doc! {}).await.unwrap(), 250);

    // A cursor across several getMores.
    let all: Vec<Document> = items
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .batch_size(40)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    assert!(
        all.windows(2)
            .all(|pair| pair[0].get_i32("_id").unwrap() < pair[1].get_i32("_id").unwrap())
    );
    let top: Vec<Document> = items
        .find(doc! {"group": 3})
        .sort(doc! {"_id": -1})
        .limit(3)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<i32> = top.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    assert_eq!(ids, vec![248, 243, 238]);

    let updated = items
        .update_many(doc! {"group": 0}, doc! {"$set": {"flag": true}})
        .await
        .unwrap();
    assert_eq!((updated.matched_count, updated.modified_count), (50, 50));
    let deleted = items.delete_many(doc! {"group": 4}).await.unwrap();
    assert_eq!(deleted.deleted_count, 50);
    let one = items.find_one(doc! {"_id": 10}).await.unwrap().unwrap();
    assert_eq!(one.get_bool("flag").ok(), Some(true));

    // A unique index and DuplicateKey (11000) as the driver's write error.
    items
        .create_index(
            IndexModel::builder()
                .keys(doc! {"name": 1})
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap();
    let names = items.list_index_names().await.unwrap();
    assert!(names.contains(&"name_1".to_owned()), "{names:?}");
    let error = items
        .insert_one(doc! {"_id": 1000, "name": "item-1"})
        .await
        .unwrap_err();
    match *error.kind {
        ErrorKind::Write(WriteFailure::WriteError(ref write_error)) => {
            assert_eq!(write_error.code, 11000, "{write_error:?}")
        }
        ref other => panic!("expected a duplicate key error, got {other:?}"),
    }

    let groups: Vec<Document> = items
        .aggregate(vec![
            doc! {"$group": {"_id": "$group", "count": {"$sum": 1}}},
            doc! {"$sort": {"_id": 1}},
        ])
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let counts: Vec<(i64, i64)> = groups
        .iter()
        .map(|group| (as_i64(group.get("_id")), as_i64(group.get("count"))))
        .collect();
    assert_eq!(counts, vec![(0, 50), (1, 50), (2, 50), (3, 50)]);

    let collections = db.list_collection_names().await.unwrap();
    assert_eq!(collections, vec!["items".to_owned()]);
    let databases = client.list_database_names().await.unwrap();
    assert!(databases.contains(&"app".to_owned()), "{databases:?}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_near_the_16_mib_limit() {
    let node = start().await;
    let client = driver(&node, "wire-large").await;
    let large = client.database("app").collection::<Document>("large");
    let limit = 16 * 1024 * 1024;
    let text = "x".repeat(limit - 1024);
    large
        .insert_one(doc! {"_id": 1, "text": text.clone()})
        .await
        .unwrap();
    let back = large.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(back.get_str("text").unwrap().len(), text.len());

    // Over the limit: refused (by the driver or the server), and the client goes on.
    let too_large = "x".repeat(limit + 1);
    assert!(
        large
            .insert_one(doc! {"_id": 2, "text": too_large})
            .await
            .is_err()
    );
    assert_eq!(large.count_documents(doc! {}).await.unwrap(), 1);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_wire_clients_share_the_port_and_the_data() {
    let node = start().await;
    let mongo = driver(&node, "wire-shared").await;
    let cairn = cairn_driver::Client::connect(&format!("cairn://{}", node.address))
        .await
        .expect("gRPC client connects");
    mongo
        .database("app")
        .collection::<Document>("shared")
        .insert_one(doc! {"_id": "from-wire"})
        .await
        .unwrap();
    let reply = cairn
        .database("app")
        .run_command(doc! {"find": "shared", "filter": {}})
        .await
        .unwrap();
    let batch = reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap();
    assert_eq!(batch, &vec![Bson::Document(doc! {"_id": "from-wire"})]);
    let status = cairn
        .database("admin")
        .run_command(doc! {"serverStatus": 1})
        .await
        .unwrap();
    let current = as_i64(status.get_document("connections").unwrap().get("current"));
    assert!(current >= 2, "both clients are counted: {status}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_driver_does_not_spin_its_monitor() {
    let node = start().await;
    let client = driver(&node, "wire-idle").await;
    let admin = client.database("admin");
    admin.run_command(doc! {"ping": 1}).await.unwrap();
    let commands =
        |status: &Document| as_i64(status.get_document("opcounters").unwrap().get("command"));
    let before = commands(&admin.run_command(doc! {"serverStatus": 1}).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after = commands(&admin.run_command(doc! {"serverStatus": 1}).await.unwrap());
    // The streaming monitor's awaitable hello waits (10 s) instead of returning at once; the
    // round-trip-time monitor sends one hello per heartbeat (10 s). Allow a little slack.
    assert!(
        after - before <= 5,
        "{} commands in 1.5 s of idleness",
        after - before
    );
    node.stop().await.unwrap();
}

/// The Rust example of docs/tools.md, as written there (with the node's address for
/// `localhost:27027`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_page_example() {
    let node = start().await;
    let uri = format!("mongodb://{}", node.address);
    let result: mongodb::error::Result<()> = async {
        use mongodb::{Client, bson::Document, bson::doc};
        let client = Client::with_uri_str(&uri).await?;
        let items = client.database("shop").collection::<Document>("items");
        items.insert_one(doc! {"name": "pear", "qty": 3}).await?;
        let pear = items.find_one(doc! {"name": "pear"}).await?;
        println!("{pear:?}");
        assert_eq!(pear.unwrap().get_i32("qty").ok(), Some(3));
        Ok(())
    }
    .await;
    result.unwrap();
    node.stop().await.unwrap();
}
