//! cairnd as a real process: graceful shutdown (SIGTERM) and restart with data intact, SIGKILL
//! and restart with every j:true-acknowledged write intact, a second cairnd refused on a dbpath
//! in use.

use bson::{Document, doc};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cairnd child process and the address it listens on.
struct Cairnd {
    child: Child,
    address: String,
}

fn start(dbpath: &Path) -> Cairnd {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairnd"))
        .args([
            "--dbpath",
            dbpath.to_str().unwrap(),
            "--port",
            "0",
            "--bind_ip",
            "127.0.0.1",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("cairnd starts");
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(position) = line.find("address=") {
                let address = line[position + "address=".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let _ = sender.send(address);
            }
        }
    });
    let address = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("cairnd reports its address");
    Cairnd { child, address }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY-free: kill(1) through the command line keeps the tests free of unsafe code.
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "cairnd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn connect(address: &str) -> cairn_driver::Client {
    cairn_driver::Client::connect(&format!("cairn://{address}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_and_restart_keep_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut cairnd = start(dir.path());
    let client = connect(&cairnd.address).await;
    let coll = client.database("app").collection::<Document>("items");
    coll.insert_many((0..100).map(|i| doc! {"_id": i, "v": i}))
        .await
        .unwrap();
    client
        .database("app")
        .run_command(doc! {"createIndexes": "items", "indexes": [{"key": {"v": 1}, "name": "v_1"}]})
        .await
        .unwrap();
    signal(&cairnd.child, 15);
    let status = wait_exit(&mut cairnd.child);
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");

    let cairnd = start(dir.path());
    let client = connect(&cairnd.address).await;
    let coll = client.database("app").collection::<Document>("items");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 100);
    assert_eq!(
        coll.count_documents(doc! {"v": {"$gte": 90}})
            .await
            .unwrap(),
        10
    );
    let mut child = cairnd.child;
    signal(&child, 2);
    assert_eq!(
        wait_exit(&mut child).code(),
        Some(0),
        "SIGINT also shuts down cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_journaled_write() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3i64 {
        let mut cairnd = start(dir.path());
        let client = connect(&cairnd.address).await;
        let coll = client.database("app").collection::<Document>("journal");
        let mut acknowledged = Vec::new();
        let started = Instant::now();
        let kill_after = Duration::from_millis(200 + 150 * round as u64);
        let mut next = round * 1_000_000;
        while started.elapsed() < kill_after {
            let id = next;
            next += 1;
            let reply = client
                .database("app")
                .run_command(doc! {"insert": "journal", "documents": [{"_id": id}], "writeConcern": {"j": true}})
                .await
                .unwrap();
            assert_eq!(reply.get_i32("n").unwrap(), 1);
            acknowledged.push(id);
        }
        signal(&cairnd.child, 9);
        wait_exit(&mut cairnd.child);
        drop(coll);

        let mut cairnd = start(dir.path());
        let client = connect(&cairnd.address).await;
        let coll = client.database("app").collection::<Document>("journal");
        for id in &acknowledged {
            assert!(
                coll.find_one(doc! {"_id": id}).await.unwrap().is_some(),
                "round {round}: lost j:true write {id}"
            );
        }
        assert!(!acknowledged.is_empty());
        signal(&cairnd.child, 15);
        assert_eq!(wait_exit(&mut cairnd.child).code(), Some(0));
    }
}

#[test]
fn a_second_cairnd_on_the_same_dbpath_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_cairnd"))
        .args(["--dbpath", dir.path().to_str().unwrap(), "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(100));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another cairnd"), "{stderr}");
    signal(&first.child, 15);
    assert_eq!(wait_exit(&mut first.child).code(), Some(0));
}
