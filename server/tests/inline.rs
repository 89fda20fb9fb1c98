//! Inline execution (`Node::try_run_command_inline`): a transport's async worker runs a command
//! itself only when it cannot wait; anything that would wait is handed back untouched, and the
//! same command then runs on a blocking thread with the usual answer.

use bson::{Bson, Document, doc};
use cairn_locking::{LockMode, LockerOptions};
use cairn_server::{ClientInfo, Node, NodeConfig};
use cairn_types::Namespace;

fn node() -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(NodeConfig {
        dbpath: dir.path().to_path_buf(),
        ..NodeConfig::default()
    })
    .unwrap();
    (node, dir)
}

fn run(node: &Node, command: Document) -> Document {
    let reply = node.run_command(&ClientInfo::default(), command);
    assert_eq!(reply.get_f64("ok").unwrap_or(0.0), 1.0, "{reply}");
    reply
}

fn first_batch(reply: &Document) -> Vec<Document> {
    reply
        .get_document("cursor")
        .unwrap()
        .get_array("firstBatch")
        .unwrap()
        .iter()
        .map(|value| value.as_document().unwrap().clone())
        .collect()
}

fn queries(node: &Node) -> i64 {
    let status = run(node, doc! {"serverStatus": 1, "$db": "admin"});
    let counters = status.get_document("opcounters").unwrap();
    counters
        .get_i64("query")
        .or_else(|_| counters.get_i32("query").map(i64::from))
        .unwrap()
}

/// `serverStatus.cairn.execution`: (inline, handedBack).
fn execution(node: &Node) -> (i64, i64) {
    let status = run(node, doc! {"serverStatus": 1, "$db": "admin"});
    let execution = status
        .get_document("cairn")
        .unwrap()
        .get_document("execution")
        .unwrap();
    (
        execution.get_i64("inline").unwrap(),
        execution.get_i64("handedBack").unwrap(),
    )
}

#[test]
fn an_id_lookup_and_a_ping_run_inline() {
    let (node, _dir) = node();
    run(
        &node,
        doc! {"insert": "c", "documents": [{"_id": 1, "v": "one"}], "$db": "app"},
    );
    let before = queries(&node);
    let (inline_before, handed_back_before) = execution(&node);
    let client = ClientInfo::default();
    let reply = node
        .try_run_command_inline(
            &client,
            doc! {"find": "c", "filter": {"_id": 1}, "$db": "app"},
        )
        .expect("an _id lookup with no contention runs inline");
    assert_eq!(first_batch(&reply), vec![doc! {"_id": 1, "v": "one"}]);
    let missing = node
        .try_run_command_inline(
            &client,
            doc! {"find": "c", "filter": {"_id": 2}, "$db": "app"},
        )
        .unwrap();
    assert!(first_batch(&missing).is_empty());
    assert_eq!(
        queries(&node),
        before + 2,
        "each inline find is counted once"
    );
    let pong = node
        .try_run_command_inline(&client, doc! {"ping": 1, "$db": "admin"})
        .unwrap();
    assert_eq!(pong.get_f64("ok").unwrap(), 1.0);
    // Errors are answered inline like any reply.
    let bad = node
        .try_run_command_inline(&client, doc! {"find": "c", "filter": 5, "$db": "app"})
        .unwrap();
    assert_eq!(bad.get_i32("code").unwrap(), 14, "{bad}");
    assert_eq!(
        execution(&node),
        (inline_before + 4, handed_back_before),
        "two finds, a ping and an error answered inline"
    );
}

#[test]
fn anything_that_could_wait_is_handed_back_untouched() {
    let (node, _dir) = node();
    run(
        &node,
        doc! {"insert": "c", "documents": [{"_id": 1, "v": 1}, {"_id": 2, "v": 2}], "$db": "app"},
    );
    let client = ClientInfo::default();
    let before = queries(&node);
    let (inline_before, handed_back_before) = execution(&node);
    let mut handed_back = 0;
    for command in [
        // Needs a plan (could scan for long).
        doc! {"find": "c", "filter": {"v": {"$gt": 0}}, "$db": "app"},
        // Writes wait for other writers and the journal (all but a single-document update,
        // which gives up at its first wait, and writes at most once).
        doc! {"insert": "c", "documents": [{"_id": 3}], "$db": "app"},
        doc! {"update": "c", "updates": [{"q": {}, "u": {"$set": {"v": 5}}, "multi": true}], "$db": "app"},
        doc! {"update": "c", "updates": [{"q": {"_id": 9}, "u": {"$set": {"v": 5}}, "upsert": true}], "$db": "app"},
        doc! {"update": "c", "updates": [{"q": {"_id": 1}, "u": {"$set": {"v": 5}}}, {"q": {"_id": 2}, "u": {"$set": {"v": 5}}}], "$db": "app"},
        doc! {"update": "c", "updates": [{"q": {"_id": 1}, "u": {"$set": {"v": 5}}}], "writeConcern": {"j": true}, "$db": "app"},
        // Needs a plan (could scan for long).
        doc! {"update": "c", "updates": [{"q": {"v": 1}, "u": {"$set": {"v": 5}}}], "$db": "app"},
        // An awaitable hello waits for a topology change.
        doc! {"hello": 1, "maxAwaitTimeMS": 100, "$db": "admin"},
        doc! {"serverStatus": 1, "$db": "admin"},
    ] {
        let back = node
            .try_run_command_inline(&client, command.clone())
            .expect_err("handed back");
        assert_eq!(back, command);
        handed_back += 1;
    }
    assert_eq!(queries(&node), before, "a handed-back find is not counted");
    assert_eq!(
        execution(&node),
        (inline_before, handed_back_before + handed_back)
    );
    let count = run(&node, doc! {"count": "c", "$db": "app"});
    assert_eq!(count.get_i32("n").unwrap(), 2, "nothing was written inline");
    let unchanged = run(
        &node,
        doc! {"find": "c", "filter": {"v": {"$gt": 2}}, "$db": "app"},
    );
    assert!(
        first_batch(&unchanged).is_empty(),
        "nothing was updated inline"
    );
}

fn value_of(node: &Node, id: i32) -> Bson {
    let reply = run(
        node,
        doc! {"find": "c", "filter": {"_id": id}, "$db": "app"},
    );
    first_batch(&reply)[0].get("v").unwrap().clone()
}

#[test]
fn a_single_document_update_runs_inline_unless_it_would_wait() {
    let (node, _dir) = node();
    run(
        &node,
        doc! {"insert": "c", "documents": [{"_id": 1, "v": 1}, {"_id": 2, "v": 2}], "$db": "app"},
    );
    let client = ClientInfo::default();
    let update = |id: i32, v: i32| {
        doc! {"update": "c", "updates": [{"q": {"_id": id}, "u": {"$set": {"v": v}}}], "$db": "app"}
    };
    let reply = node
        .try_run_command_inline(&client, update(1, 10))
        .expect("an uncontended single-document update runs inline");
    assert_eq!(reply.get_i32("nModified").unwrap(), 1, "{reply}");
    assert_eq!(value_of(&node, 1), Bson::Int32(10));

    // Another unit owns the document: the inline attempt conflicts, applies nothing and hands
    // the command back; run blocking, it waits for the owner and then applies.
    let ns = Namespace::new("app", "c");
    let ident = node.engine().latest_collection(&ns).unwrap().ident;
    let key = cairn_types::keystring::encode(&Bson::Int32(2));
    let mut owner = node.engine().begin_write();
    owner
        .put(
            ident,
            &key,
            &bson::serialize_to_vec(&doc! {"_id": 2, "v": 20}).unwrap(),
        )
        .unwrap();
    let back = node
        .try_run_command_inline(&client, update(2, 30))
        .expect_err("the document is owned by another unit: the update would wait");
    assert_eq!(back, update(2, 30));
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| node.run_command(&client, back));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "the update waits for the key's owner"
        );
        owner.commit(cairn_storage::Durability::Visible).unwrap();
        let reply = waiter.join().unwrap();
        assert_eq!(reply.get_i32("nModified").unwrap(), 1, "{reply}");
    });
    assert_eq!(
        value_of(&node, 2),
        Bson::Int32(30),
        "applied once, after the owner"
    );

    // Behind an exclusive lock: handed back before it has done anything.
    let holder = node.inner().locks.new_locker(LockerOptions::new("test"));
    let exclusive = holder.lock_collection(&ns, LockMode::X).unwrap();
    let back = node
        .try_run_command_inline(&client, update(1, 40))
        .expect_err("the collection is locked exclusively");
    assert_eq!(back, update(1, 40));
    drop(exclusive);
    assert_eq!(value_of(&node, 1), Bson::Int32(10));
}

#[test]
fn an_id_lookup_behind_an_exclusive_lock_is_handed_back_then_answered_after_it() {
    let (node, _dir) = node();
    run(
        &node,
        doc! {"insert": "c", "documents": [{"_id": 1, "v": 1}], "$db": "app"},
    );
    let ns = Namespace::new("app", "c");
    let holder = node.inner().locks.new_locker(LockerOptions::new("test"));
    let exclusive = holder.lock_collection(&ns, LockMode::X).unwrap();
    let command = doc! {"find": "c", "filter": {"_id": 1}, "$db": "app"};
    let client = ClientInfo::default();
    let back = node
        .try_run_command_inline(&client, command.clone())
        .expect_err("the collection is locked exclusively: the find would wait");
    assert_eq!(back, command);
    let lock_info = run(&node, doc! {"lockInfo": 1, "$db": "admin"});
    assert!(
        !format!("{lock_info}").contains("conn0"),
        "the inline attempt left no pending request: {lock_info}"
    );
    // The blocking run waits for the lock and answers once it is released.
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| node.run_command(&client, back));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "the find waits for the exclusive lock"
        );
        drop(exclusive);
        let reply = waiter.join().unwrap();
        assert_eq!(first_batch(&reply), vec![doc! {"_id": 1, "v": 1}]);
    });
}

/// Writes whose filter is exactly `{_id: v}` go straight to their unit of work (no snapshot
/// lookup first): what they match is decided by the unit's own read of the key.
#[test]
fn writes_by_id_match_what_the_unit_reads() {
    let (node, _dir) = node();
    run(
        &node,
        doc! {"insert": "c", "documents": [{"_id": 1, "v": 1}, {"_id": 2, "v": 2}, {"_id": "s", "v": 3}], "$db": "app"},
    );
    let update = |q: Document, u: Document, extra: Document| {
        let mut statement = doc! {"q": q, "u": u};
        statement.extend(extra);
        run(
            &node,
            doc! {"update": "c", "updates": [statement], "$db": "app"},
        )
    };
    let counts = |reply: &Document| {
        (
            reply.get_i32("n").unwrap(),
            reply.get_i32("nModified").unwrap(),
        )
    };
    // A missing document: nothing matched, nothing created.
    let reply = update(doc! {"_id": 9}, doc! {"$set": {"v": 9}}, doc! {});
    assert_eq!(counts(&reply), (0, 0), "{reply}");
    assert!(!reply.contains_key("upserted"));
    // Numbers match by value: a double finds the int32 `_id`.
    let reply = update(doc! {"_id": 1.0}, doc! {"$set": {"v": 10}}, doc! {});
    assert_eq!(counts(&reply), (1, 1), "{reply}");
    assert_eq!(value_of(&node, 1), Bson::Int32(10));
    // The same value again: matched, not modified.
    let reply = update(doc! {"_id": 1}, doc! {"$set": {"v": 10}}, doc! {});
    assert_eq!(counts(&reply), (1, 0), "{reply}");
    // `multi` by `_id` updates the one document.
    let reply = update(
        doc! {"_id": 2},
        doc! {"$inc": {"v": 1}},
        doc! {"multi": true},
    );
    assert_eq!(counts(&reply), (1, 1), "{reply}");
    assert_eq!(value_of(&node, 2), Bson::Int32(3));
    // An upsert of a missing `_id` inserts it, once.
    let reply = update(
        doc! {"_id": 7},
        doc! {"$set": {"v": 70}},
        doc! {"upsert": true},
    );
    assert_eq!(reply.get_i32("n").unwrap(), 1, "{reply}");
    assert_eq!(
        reply.get_array("upserted").unwrap()[0]
            .as_document()
            .unwrap()
            .get_i32("_id")
            .unwrap(),
        7
    );
    assert_eq!(value_of(&node, 7), Bson::Int32(70));
    // A string `_id` is not the number it might look like.
    let reply = update(doc! {"_id": "1"}, doc! {"$set": {"v": 0}}, doc! {});
    assert_eq!(counts(&reply), (0, 0), "{reply}");
    // Deletes by `_id`: a missing one deletes nothing, a present one deletes it.
    let delete = |id: Bson, limit: i32| {
        run(
            &node,
            doc! {"delete": "c", "deletes": [{"q": {"_id": id}, "limit": limit}], "$db": "app"},
        )
        .get_i32("n")
        .unwrap()
    };
    assert_eq!(delete(Bson::Int32(9), 1), 0);
    assert_eq!(delete(Bson::String("s".into()), 1), 1);
    assert_eq!(delete(Bson::Int64(2), 0), 1);
    let left = run(
        &node,
        doc! {"find": "c", "filter": {}, "sort": {"_id": 1}, "$db": "app"},
    );
    assert_eq!(
        first_batch(&left),
        vec![doc! {"_id": 1, "v": 10}, doc! {"_id": 7, "v": 70}]
    );
}
