//! MongoDB's own clients against a real `cairnd` process over the wire protocol: pymongo
//! (`clients/pymongo_suite.py`), mongosh running a script (`clients/mongosh_suite.js`) and
//! mongosh as an interactive shell fed through a pipe (`clients/mongosh_session.js`: `show dbs`,
//! `show collections`, `find().sort().limit()`, `it`, errors as mongosh shows them).
//!
//! The clients come from PyPI and npm (`.ci/install-clients`). A test whose client is missing
//! prints a notice and passes, so that `cargo test` runs anywhere; with
//! `CAIRN_REQUIRE_CLIENTS=1` (CI) a missing client fails the test instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one client run may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long cairnd may take to listen, and to shut down.
const CAIRND_TIMEOUT: Duration = Duration::from_secs(30);

/// A cairnd process on a free loopback port with a temporary dbpath.
struct Cairnd {
    child: Child,
    port: u16,
    log: PathBuf,
    _directory: tempfile::TempDir,
}

impl Cairnd {
    fn start() -> Cairnd {
        let directory = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = directory.path().join("cairnd.log");
        let child = Command::new(env!("CARGO_BIN_EXE_cairnd"))
            .arg("--dbpath")
            .arg(directory.path().join("data"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--bind_ip")
            .arg("127.0.0.1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cairnd starts");
        let deadline = Instant::now() + CAIRND_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "cairnd listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Cairnd {
            child,
            port,
            log,
            _directory: directory,
        }
    }

    fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code of a graceful shutdown.
    fn stop(mut self) -> Option<i32> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + CAIRND_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "cairnd shuts down in time");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cairnd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `program args` runs and exits 0.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `true` when the client is there; otherwise a notice (or a failure under
/// `CAIRN_REQUIRE_CLIENTS=1`).
fn client_available(name: &str, program: &str, args: &[&str]) -> bool {
    if runs(program, args) {
        return true;
    }
    let required = std::env::var("CAIRN_REQUIRE_CLIENTS").is_ok_and(|value| value == "1");
    assert!(
        !required,
        "{name} is not installed and CAIRN_REQUIRE_CLIENTS=1: run .ci/install-clients"
    );
    // Straight to the process's stderr, past the test harness's capture, so the skip shows.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {name} is not installed; run .ci/install-clients to include this test"
    );
    false
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs a client to completion (bounded by [`CLIENT_TIMEOUT`]), feeding it `stdin`.
fn run_client(command: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let id = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(CLIENT_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(id.to_string())
                .status();
            panic!("the client did not finish within {CLIENT_TIMEOUT:?}");
        }
    }
}

/// mongosh with a fresh home, no telemetry, no update check, no greeting.
fn mongosh(home: &Path) -> Command {
    let config = home.join("mongosh-global.json");
    std::fs::write(
        &config,
        r#"{"forceDisableTelemetry": true, "updateURL": "", "disableGreetingMessage": true}"#,
    )
    .unwrap();
    let mut command = Command::new("mongosh");
    command
        .env("HOME", home)
        .env("MONGOSH_GLOBAL_CONFIG_FILE_FOR_TESTING", &config)
        .arg("--quiet")
        .arg("--norc");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn pymongo_suite() {
    if !client_available("pymongo", "python3", &["-c", "import pymongo"]) {
        return;
    }
    let cairnd = Cairnd::start();
    let output = run_client(
        Command::new("python3")
            .arg(clients_dir().join("pymongo_suite.py"))
            .arg(cairnd.uri()),
        None,
    );
    let stdout = text(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(" 0 failed"),
        "pymongo suite failed:\n{stdout}\n{}\ncairnd log:\n{}",
        text(&output.stderr),
        cairnd.log()
    );
    let log = cairnd.log();
    assert!(
        log.contains("client metadata") && log.contains("PyMongo"),
        "the handshake's client metadata is logged:\n{log}"
    );
    assert_eq!(cairnd.stop(), Some(0), "cairnd shuts down cleanly");
}

#[test]
fn mongosh_suite() {
    if !client_available("mongosh", "mongosh", &["--version"]) {
        return;
    }
    let cairnd = Cairnd::start();
    let home = tempfile::tempdir().unwrap();
    let output = run_client(
        mongosh(home.path())
            .arg(cairnd.uri())
            .arg(clients_dir().join("mongosh_suite.js")),
        None,
    );
    let stdout = text(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(" 0 failed"),
        "mongosh suite failed:\n{stdout}\n{}\ncairnd log:\n{}",
        text(&output.stderr),
        cairnd.log()
    );
    assert_eq!(cairnd.stop(), Some(0), "cairnd shuts down cleanly");
}

#[test]
fn mongosh_interactive_session() {
    if !client_available("mongosh", "mongosh", &["--version"]) {
        return;
    }
    let cairnd = Cairnd::start();
    let home = tempfile::tempdir().unwrap();
    let session = std::fs::read_to_string(clients_dir().join("mongosh_session.js")).unwrap();
    let output = run_client(mongosh(home.path()).arg(cairnd.uri()), Some(&session));
    // mongosh writes "Uncaught \r" before an error when its input is a pipe.
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    let expected = [
        "switched to db mongosh_repl",
        // show dbs
        "mongosh_repl ",
        // show collections
        "mongosh_repl> things\n",
        // find().sort().limit()
        "[ { _id: 29 }, { _id: 28 } ]",
        // the first batch of 20, then `it`
        "{ _id: 18 }, { _id: 19 }\n]\nType \"it\" for more",
        "{ _id: 20 }, { _id: 21 },",
        "MongoServerError[DuplicateKey]: E11000 duplicate key error collection: mongosh_repl.things index: _id_ dup key: { _id: 3 }",
        "MongoServerError[CommandNotFound]: no such command: 'noSuchCommand'",
        "mongosh_repl> 30\n",
    ];
    for fragment in expected {
        assert!(
            stdout.contains(fragment) || stderr.contains(fragment),
            "mongosh output lacks {fragment:?}:\n{stdout}\n{stderr}"
        );
    }
    assert_eq!(cairnd.stop(), Some(0), "cairnd shuts down cleanly");
}
