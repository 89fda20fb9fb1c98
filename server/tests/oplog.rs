//! With `--replSet`, every write appends its oplog entry in the same unit of work as the data:
//! inserts, updates, deletes and DDL, in commit order, with MongoDB's entry shape.

use bson::{Document, doc};
use cairn_server::{ClientInfo, Node, NodeConfig};
use cairn_storage::{ReadAt, ScanDirection};
use std::ops::Bound;

fn run(node: &Node, command: Document) -> Document {
    let reply = node.run_command(&ClientInfo::default(), command);
    assert_eq!(reply.get_f64("ok").unwrap_or(0.0), 1.0, "{reply}");
    reply
}

#[test]
fn writes_append_oplog_entries_with_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        dbpath: dir.path().to_path_buf(),
        repl_set: Some("rs0".into()),
        ..NodeConfig::default()
    };
    let node = Node::open(config).unwrap();
    run(
        &node,
        doc! {"insert": "c", "documents": [{"_id": 1, "v": 1}, {"_id": 2, "v": 2}], "$db": "app"},
    );
    run(
        &node,
        doc! {"update": "c", "updates": [{"q": {"_id": 1}, "u": {"$inc": {"v": 10}}}], "$db": "app"},
    );
    run(
        &node,
        doc! {"delete": "c", "deletes": [{"q": {"_id": 2}, "limit": 1}], "$db": "app"},
    );
    run(
        &node,
        doc! {"createIndexes": "c", "indexes": [{"key": {"v": 1}, "name": "v_1"}], "$db": "app"},
    );
    run(&node, doc! {"drop": "c", "$db": "app"});

    let snapshot = node.engine().snapshot(ReadAt::Latest).unwrap();
    let entries: Vec<Document> = snapshot
        .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
        .unwrap()
        .map(|entry| bson::deserialize_from_slice(&entry.unwrap().1).unwrap())
        .collect();
    let shapes: Vec<(String, String)> = entries
        .iter()
        .map(|entry| {
            (
                entry.get_str("op").unwrap().to_owned(),
                entry.get_str("ns").unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("c", "app.$cmd"), // the implicit create
        ("i", "app.c"),
        ("i", "app.c"),
        ("u", "app.c"),
        ("d", "app.c"),
        ("c", "app.$cmd"), // createIndexes
        ("c", "app.$cmd"), // drop
    ]
    .iter()
    .map(|(op, ns)| ((*op).to_owned(), (*ns).to_owned()))
    .collect();
    assert_eq!(shapes, expected);
    let mut last = None;
    for entry in &entries {
        let ts = entry.get_timestamp("ts").unwrap();
        assert!(
            last.is_none_or(
                |last: bson::Timestamp| (last.time, last.increment) < (ts.time, ts.increment)
            ),
            "timestamps increase"
        );
        last = Some(ts);
        assert!(
            entry.get("ui").is_some() && entry.get_datetime("wall").is_ok(),
            "{entry}"
        );
    }
    assert_eq!(
        entries[1].get_document("o").unwrap(),
        &doc! {"_id": 1, "v": 1}
    );
    assert_eq!(
        entries[3].get_document("o").unwrap(),
        &doc! {"_id": 1, "v": 11},
        "updates log the whole new document (idempotent)"
    );
    assert_eq!(entries[3].get_document("o2").unwrap(), &doc! {"_id": 1});
    assert_eq!(entries[4].get_document("o").unwrap(), &doc! {"_id": 2});
    assert_eq!(
        entries[5]
            .get_document("o")
            .unwrap()
            .get_str("createIndexes")
            .unwrap(),
        "c"
    );
    drop(snapshot);
    node.shutdown().unwrap();

    // A standalone writes no oplog.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(NodeConfig {
        dbpath: dir.path().to_path_buf(),
        ..NodeConfig::default()
    })
    .unwrap();
    run(
        &node,
        doc! {"insert": "c", "documents": [{"_id": 1}], "$db": "app"},
    );
    let snapshot = node.engine().snapshot(ReadAt::Latest).unwrap();
    assert_eq!(
        snapshot
            .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
            .unwrap()
            .count(),
        0
    );
    drop(snapshot);
    node.shutdown().unwrap();
}
