//! Bad input never crashes the node: random command documents (a fuzz target over the command
//! parser and every handler), random bytes, truncated BSON, and garbage over raw gRPC. Every
//! reply is a document with `ok`; a failure carries a MongoDB code other than InternalError (a
//! caught panic would be InternalError), and the node keeps serving.

mod common;

use bson::{Bson, Document, doc};
use cairn_server::{ClientInfo, Node, NodeConfig};
use proptest::prelude::*;

fn node() -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        dbpath: dir.path().to_path_buf(),
        port: 0,
        ..NodeConfig::default()
    };
    (Node::open(config).unwrap(), dir)
}

fn check_reply(reply: &Document) -> Result<(), TestCaseError> {
    let ok = reply.get("ok").cloned();
    prop_assert!(
        matches!(ok, Some(Bson::Double(_)) | Some(Bson::Int32(_))),
        "reply without ok: {reply}"
    );
    if reply.get_f64("ok").unwrap_or(1.0) == 0.0 {
        let code = reply.get_i32("code").unwrap_or(0);
        prop_assert!(code != 0, "error without a code: {reply}");
        prop_assert!(code != 1, "an internal error (a caught panic?): {reply}");
        prop_assert!(
            reply.get_str("codeName").is_ok() && reply.get_str("errmsg").is_ok(),
            "{reply}"
        );
    }
    Ok(())
}

const COMMANDS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "find",
    "getMore",
    "killCursors",
    "count",
    "distinct",
    "aggregate",
    "findAndModify",
    "create",
    "drop",
    "createIndexes",
    "listIndexes",
    "dropIndexes",
    "listCollections",
    "explain",
    "hello",
    "ping",
    "serverStatus",
    "currentOp",
    "collStats",
    "dbStats",
    "renameCollection",
    "killOp",
    "getParameter",
    "fsyncUnlock",
    "noSuchCommand",
];

const FIELDS: &[&str] = &[
    "documents",
    "updates",
    "deletes",
    "q",
    "u",
    "upsert",
    "multi",
    "limit",
    "filter",
    "sort",
    "projection",
    "skip",
    "batchSize",
    "pipeline",
    "cursor",
    "query",
    "update",
    "remove",
    "new",
    "fields",
    "indexes",
    "key",
    "name",
    "index",
    "ordered",
    "writeConcern",
    "maxTimeMS",
    "hint",
    "to",
    "collection",
    "cursors",
    "op",
    "arrayFilters",
    "singleBatch",
    "explain",
    "verbosity",
];

fn leaf() -> impl Strategy<Value = Bson> {
    prop_oneof![
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        any::<f64>().prop_map(Bson::Double),
        "[a-z$.]{0,6}".prop_map(Bson::String),
        any::<bool>().prop_map(Bson::Boolean),
        Just(Bson::Null),
        prop::sample::select(vec![
            "$set", "$inc", "$gt", "$in", "$match", "$group", "$sort", "$each", "$"
        ])
        .prop_map(|s| Bson::String(s.to_owned())),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "a", "b.c", "_id", "$set", "$inc", "$gt", "$in", "$match", "$group",
                        "$sum", "$sort", "key", "q", "u", "$each", "x.$", "$[]"
                    ]),
                    inner
                ),
                0..4,
            )
            .prop_map(|fields| {
                let mut document = Document::new();
                for (key, value) in fields {
                    document.insert(key, value);
                }
                Bson::Document(document)
            }),
        ]
    })
}

fn command() -> impl Strategy<Value = Document> {
    (
        prop::sample::select(COMMANDS.to_vec()),
        prop_oneof![Just(Bson::String("c".into())), value()],
        prop::collection::vec((prop::sample::select(FIELDS.to_vec()), value()), 0..5),
        prop_oneof![4 => Just(Some(Bson::String("fuzz".into()))), 1 => Just(None), 1 => Just(Some(Bson::Int32(1)))],
    )
        .prop_map(|(name, target, fields, db)| {
            let mut document = doc! {name: target};
            for (key, value) in fields {
                document.insert(key, value);
            }
            if let Some(db) = db {
                document.insert("$db", db);
            }
            document
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn random_commands_get_clear_replies(commands in prop::collection::vec(command(), 1..8)) {
        let (node, _dir) = node();
        node.run_command(&ClientInfo::default(), doc! {"insert": "c", "documents": [{"_id": 1, "a": [1, 2]}, {"_id": 2, "a": {"b": 1}}], "$db": "fuzz"});
        for command in commands {
            let reply = node.run_command(&ClientInfo::default(), command);
            check_reply(&reply)?;
        }
        let reply = node.run_command(&ClientInfo::default(), doc! {"ping": 1, "$db": "admin"});
        prop_assert_eq!(reply.get_f64("ok").unwrap(), 1.0);
        node.shutdown().unwrap();
    }

    #[test]
    fn random_and_truncated_bytes_get_clear_replies(bytes in prop::collection::vec(any::<u8>(), 0..64), cut in 0usize..40) {
        let (node, _dir) = node();
        let reply = node.run_command_bytes(&ClientInfo::default(), &bytes);
        check_reply(&reply)?;
        let valid = bson::serialize_to_vec(&doc! {"find": "c", "filter": {"a": 1}, "$db": "fuzz"}).unwrap();
        let reply = node.run_command_bytes(&ClientInfo::default(), &valid[..cut.min(valid.len())]);
        check_reply(&reply)?;
        node.shutdown().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_grpc_gets_an_error_reply() {
    let (node, client) = common::start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.address))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = cairn_proto::client(channel);
    for garbage in [
        &b""[..],
        b"\x00\x01\x02",
        b"\x10\x00\x00\x00\x02a\x00\xff\xff\xff\x7fxx\x00",
    ] {
        let reply = raw
            .run_command(cairn_proto::CommandRequest {
                document: garbage.to_vec().into(),
            })
            .await
            .unwrap()
            .into_inner();
        let document: Document = bson::deserialize_from_slice(&reply.document).unwrap();
        assert_eq!(document.get_f64("ok").unwrap(), 0.0, "{document}");
    }
    // An over-deep document is refused with a clear error, and the node keeps serving.
    let mut deep = doc! {"leaf": 1};
    for _ in 0..150 {
        deep = doc! {"a": deep};
    }
    let error = client
        .database("test")
        .collection::<Document>("c")
        .insert_one(deep)
        .await
        .unwrap_err();
    assert!(error.code().is_some(), "{error}");
    assert_eq!(
        client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .unwrap()
            .get_f64("ok")
            .unwrap(),
        1.0
    );
    node.stop().await.unwrap();
}

#[test]
fn a_command_nested_far_too_deep_is_refused_without_overflowing_the_stack() {
    let (node, _dir) = node();
    // 200,000 levels of {"a": {...}} written as raw bytes, outermost first (building a
    // Document this deep would itself overflow the stack). Each level is its length, the
    // embedded-document type byte, the name "a", the inner document and a closing zero.
    let depth = 200_000usize;
    let innermost = 5usize;
    let mut bytes = Vec::with_capacity(innermost + depth * 9);
    for level in (1..=depth).rev() {
        let length = innermost + level * 8;
        bytes.extend_from_slice(&(length as i32).to_le_bytes());
        bytes.extend_from_slice(&[0x03, b'a', 0]);
    }
    bytes.extend_from_slice(&[5, 0, 0, 0, 0]);
    bytes.extend(std::iter::repeat_n(0u8, depth));
    assert_eq!(bytes.len(), innermost + depth * 8);
    let reply = node.run_command_bytes(&ClientInfo::default(), &bytes);
    assert_eq!(reply.get_f64("ok").unwrap(), 0.0);
    assert_eq!(reply.get_i32("code").unwrap(), 15, "Overflow: {reply}");
    let reply = node.run_command(&ClientInfo::default(), doc! {"ping": 1, "$db": "admin"});
    assert_eq!(reply.get_f64("ok").unwrap(), 1.0);
    node.shutdown().unwrap();
}
