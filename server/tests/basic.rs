//! Handshake, informational commands and bad input, end to end over gRPC.

mod common;

use bson::{Bson, doc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_and_information() {
    let (node, client) = common::start().await;
    let admin = client.database("admin");
    let reply = admin.run_command(doc! {"ping": 1}).await.unwrap();
    assert_eq!(reply.get_f64("ok").unwrap(), 1.0);
    let hello = admin
        .run_command(doc! {"hello": 1, "client": {"application": {"name": "test"}}})
        .await
        .unwrap();
    assert!(hello.get_bool("isWritablePrimary").unwrap());
    assert_eq!(
        hello.get_i32("maxBsonObjectSize").unwrap(),
        16 * 1024 * 1024
    );
    assert_eq!(hello.get_i32("maxWriteBatchSize").unwrap(), 100_000);
    let legacy = admin
        .run_command(doc! {"isMaster": 1, "helloOk": true})
        .await
        .unwrap();
    assert!(legacy.get_bool("ismaster").unwrap());
    assert!(legacy.get_bool("helloOk").unwrap());
    let build = admin.run_command(doc! {"buildInfo": 1}).await.unwrap();
    assert!(build.get_str("version").unwrap().starts_with("8."));
    assert_eq!(build.get_array("versionArray").unwrap().len(), 4);
    let parameter = admin
        .run_command(doc! {"getParameter": 1, "featureCompatibilityVersion": 1})
        .await
        .unwrap();
    assert_eq!(
        parameter
            .get_document("featureCompatibilityVersion")
            .unwrap()
            .get_str("version")
            .unwrap(),
        "8.0"
    );
    let status = admin.run_command(doc! {"serverStatus": 1}).await.unwrap();
    assert!(
        status
            .get_document("connections")
            .unwrap()
            .get_i32("current")
            .unwrap()
            >= 1
    );
    assert!(
        status
            .get_document("opcounters")
            .unwrap()
            .get_i64("command")
            .unwrap()
            >= 5
    );
    assert!(
        status
            .get_document("metrics")
            .unwrap()
            .get_document("operation")
            .unwrap()
            .contains_key("writeConflicts")
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let (node, client) = common::start().await;
    let db = client.database("test");
    let error = db.run_command(doc! {"noSuchCommand": 1}).await.unwrap_err();
    assert_eq!(error.code(), Some(59));
    assert_eq!(error.code_name().as_deref(), Some("CommandNotFound"));
    let error = client
        .database("admin")
        .run_command(doc! {"getParameter": 1, "nope": 1})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(72));
    let error = db
        .run_command(doc! {"killOp": 1, "op": 1})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(13), "killOp only on admin");
    let error = client
        .database("admin")
        .run_command(doc! {"ping": 1, "maxTimeMS": -5})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(2));
    // Malformed BSON and a missing $db straight through the node.
    let reply = node
        .node
        .run_command_bytes(&Default::default(), b"\x05\x00\x00\x00\x01garbage");
    assert_eq!(reply.get_i32("code").unwrap(), 22);
    let reply = node.node.run_command(&Default::default(), doc! {"ping": 1});
    assert_eq!(reply.get_i32("code").unwrap(), 40571);
    let reply = node
        .node
        .run_command(&Default::default(), doc! {"ping": 1, "$db": Bson::Int32(3)});
    assert_eq!(reply.get_i32("code").unwrap(), 14);
    assert_eq!(
        db.run_command(doc! {"ping": 1})
            .await
            .unwrap()
            .get_f64("ok")
            .unwrap(),
        1.0
    );
    node.stop().await.unwrap();
}
