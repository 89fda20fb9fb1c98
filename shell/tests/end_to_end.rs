//! `cairn --host ... --eval` against a real cairn node (in this process, on loopback): CRUD,
//! cursors across getMore, indexes and explain, currentOp, errors shown as mongosh shows them,
//! and exit codes.

use std::process::{Command, Output};

struct Node {
    runtime: tokio::runtime::Runtime,
    node: Option<cairn_server::EmbeddedNode>,
    address: String,
}

impl Node {
    fn start() -> Node {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = cairn_server::NodeConfig {
            port: 0,
            ..cairn_server::NodeConfig::default()
        };
        let node = runtime
            .block_on(cairn_server::EmbeddedNode::start(config, true))
            .unwrap();
        let address = node.address.to_string();
        Node {
            runtime,
            node: Some(node),
            address,
        }
    }

    fn eval(&self, script: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["--host", &self.address, "--eval", script])
            .env("HOME", std::env::temp_dir())
            .output()
            .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            self.runtime.block_on(node.stop()).unwrap();
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn crud_cursors_indexes_and_explain_through_the_shell() {
    let node = Node::start();
    let output = node.eval(
        r#"
        db = db.getSiblingDB("shop");
        db.orders.insertMany([...Array(60).keys()].map(i => ({_id: i, qty: i % 7, item: "item" + i})));
        print("count", db.orders.countDocuments({qty: 3}));
        const sorted = db.orders.find({qty: {$gte: 5}}).sort({_id: -1}).limit(3).toArray();
        print("sorted", sorted.map(d => d._id).join(","));
        print("all", db.orders.find().batchSize(7).toArray().length);
        db.orders.updateMany({qty: 0}, {$set: {zero: true}});
        print("zeros", db.orders.countDocuments({zero: true}));
        db.orders.createIndex({qty: 1});
        const plan = db.orders.find({qty: 2}).explain("executionStats");
        print("stage", plan.queryPlanner.winningPlan.inputStage.stage, plan.executionStats.nReturned);
        print("indexes", db.orders.getIndexes().map(i => i.name).join(","));
        const groups = db.orders.aggregate([{$group: {_id: "$qty", n: {$sum: 1}}}, {$sort: {_id: 1}}]).toArray();
        print("groups", groups.length, groups[0].n);
        print("deleted", db.orders.deleteMany({qty: {$lt: 2}}).deletedCount);
        print("ops", db.currentOp().inprog.length >= 1);
        "#,
    );
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "count 9",
        "sorted 55,54,48",
        "all 60",
        "zeros 9",
        "stage IXSCAN 9",
        "indexes _id_,qty_1",
        "groups 7 9",
        "deleted 18",
        "ops true",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn server_errors_show_as_mongosh_shows_them_and_fail_the_script() {
    let node = Node::start();
    let output = node.eval("db.c.insertOne({_id: 1}); db.c.insertOne({_id: 1})");
    assert_eq!(output.status.code(), Some(1));
    let all = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        all.contains("DuplicateKey") && all.contains("E11000"),
        "{all}"
    );
    let output = node.eval("db.runCommand({noSuchCommand: 1})");
    let all = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        all.contains("CommandNotFound") || all.contains("no such command"),
        "{all}"
    );
}
