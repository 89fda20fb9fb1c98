//! The built `cairn` binary, run with `--eval` and script files against the test double:
//! output, and exit codes scripts can rely on.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use support::double::Server;

struct Double {
    server: Server,
    _runtime: tokio::runtime::Runtime,
}

fn start() -> Double {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(Server::start());
    Double {
        server,
        _runtime: runtime,
    }
}

fn cairn(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn eval_prints_results_without_colour_and_exits_zero() {
    let double = start();
    let host = double.server.address.to_string();
    let output = cairn(
        &[
            "--host",
            &host,
            "--eval",
            "db.c.insertOne({_id: 1, n: NumberLong(5)}); db.c.find().toArray()",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "[ { _id: 1, n: Long('5') } ]\n");
    assert!(
        !text(&output.stdout).contains('\u{1b}'),
        "no colour when piped"
    );
    assert_eq!(double.server.double.documents("test.c").len(), 1);

    // Several --eval, shell commands included.
    let output = cairn(
        &[
            "--host",
            &host,
            "--eval",
            "use app",
            "--eval",
            "db.getName()",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "switched to db app\napp\n");
}

#[test]
fn uncaught_errors_exit_one_with_the_error_on_stderr() {
    let double = start();
    let host = double.server.address.to_string();
    let output = cairn(
        &[
            "--host",
            &host,
            "--eval",
            "db.c.insertOne({_id: 1}); db.c.insertOne({_id: 1})",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("MongoServerError[DuplicateKey]: E11000 duplicate key error"),
        "{}",
        text(&output.stderr)
    );
    let output = cairn(
        &["--host", &host, "--eval", "throw new Error('boom')"],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(text(&output.stderr), "Error: boom\n");
    let output = cairn(&["--host", &host, "--eval", "quit(7)"], None);
    assert_eq!(output.status.code(), Some(7));
}

#[test]
fn script_files_and_connection_strings() {
    let double = start();
    let directory = std::env::temp_dir().join(format!("cairn-shell-test-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let script = directory.join("script.js");
    std::fs::write(&script, "use app\nfor (let i = 0; i < 3; i++) {\n  db.items.insertOne({_id: i});\n}\nprint(db.getName(), db.items.countDocuments({}));\n").unwrap();
    let uri = format!("cairn://{}/", double.server.address);
    let output = cairn(&[&uri, script.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "app 3\n");
    let failing = directory.join("failing.js");
    std::fs::write(
        &failing,
        "db.nosuch.aggregate([{$bogus: 1}]).toArray();\nundefinedFunction();\n",
    )
    .unwrap();
    let output = cairn(&[&uri, failing.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("ReferenceError: undefinedFunction is not defined"),
        "{}",
        text(&output.stderr)
    );
    // The database in the connection string's path is the current one.
    let output = cairn(&[&format!("{uri}app"), "--eval", "db.getName()"], None);
    assert_eq!(text(&output.stdout), "app\n");
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn piped_input_runs_as_a_repl() {
    let double = start();
    let host = double.server.address.to_string();
    let output = cairn(
        &["--host", &host, "--quiet"],
        Some("x = {\n  a: 1\n}\nuse other\ndb.getName()\n"),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("{ a: 1 }")
            && stdout.contains("switched to db other")
            && stdout.contains("other"),
        "{stdout}"
    );
}

#[test]
fn connection_failures_and_bad_arguments() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = cairn(
        &[
            &format!("cairn://127.0.0.1:{port}/?serverSelectionTimeoutMS=300"),
            "--eval",
            "1",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(
        text(&output.stderr).contains("cannot connect"),
        "{}",
        text(&output.stderr)
    );
    let output = cairn(&["notafile"], None);
    assert_eq!(output.status.code(), Some(2));
    let output = cairn(&["--bogus"], None);
    assert_eq!(output.status.code(), Some(2));
    let output = cairn(&["cairn://h/?nonsense=1", "--eval", "1"], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("unknown option 'nonsense'"),
        "{}",
        text(&output.stderr)
    );
}

/// Runs `cairn` with `TMPDIR` set to `tmpdir`, so that the embedded default's temporary dbpath
/// is made (and must be removed) there.
fn cairn_in(tmpdir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env("HOME", tmpdir)
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Entries of a directory, history files of the REPL aside.
fn entries(directory: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with(".cairn"))
        .collect()
}

#[test]
fn without_host_the_embedded_default_serves_and_is_removed_at_exit() {
    let tmpdir = tempfile::tempdir().unwrap();
    let output = cairn_in(tmpdir.path(), &["--eval", "db.runCommand({ping: 1})"], None);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "{ ok: 1 }\n");
    assert_eq!(
        entries(tmpdir.path()),
        Vec::<String>::new(),
        "the temporary dbpath is removed when the shell exits"
    );

    // The interactive prompt (piped) works on the embedded default too; `quit(n)` still exits n.
    let output = cairn_in(
        tmpdir.path(),
        &["--quiet"],
        Some("db.runCommand({hello: 1}).isWritablePrimary\nquit(4)\n"),
    );
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("true"),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(entries(tmpdir.path()), Vec::<String>::new());
}

#[test]
fn without_host_a_given_dbpath_is_used_and_kept() {
    let tmpdir = tempfile::tempdir().unwrap();
    let dbpath = tmpdir.path().join("data");
    let dbpath_text = dbpath.to_str().unwrap();
    let output = cairn_in(
        tmpdir.path(),
        &[
            "--dbpath",
            dbpath_text,
            "--eval",
            "db.runCommand({buildInfo: 1}).ok",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "1\n");
    assert!(
        std::fs::read_dir(&dbpath).unwrap().next().is_some(),
        "the node's files stay in the given dbpath"
    );
    // The node was shut down cleanly: the same dbpath opens again.
    let output = cairn_in(
        tmpdir.path(),
        &[
            "--dbpath",
            dbpath_text,
            "--eval",
            "db.runCommand({ping: 1}).ok",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "1\n");
}
