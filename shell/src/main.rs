//! `cairn`: the shell's command line.
//!
//! ```text
//! cairn                          # the embedded default deployment (see embedded.rs)
//! cairn --host HOST[:PORT]       # a running cairnd (default port 27027)
//! cairn cairn://h1,h2/?replicaSet=rs0
//! cairn --eval 'db.c.countDocuments()' [--host ...]
//! cairn script.js [more.js ...]  # run files, then exit (--shell: stay in the REPL)
//! ```
//!
//! Exit codes: 0 success; 1 an uncaught error in `--eval` or a script; 2 bad arguments;
//! 3 cannot connect (no server reachable, or the embedded default could not start);
//! 130 interrupted by Ctrl-C; `quit(n)` exits with n.

/// mimalloc, as cairnd: commands allocate many small BSON values (the node runs in this
/// process).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use cairn_driver::{Client, ClientOptions};
use cairn_shell::embedded::{self, EmbeddedOptions};
use cairn_shell::{EvalError, Interrupt, Output, Shell, ShellOptions};
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

const EXIT_SCRIPT_ERROR: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_CONNECT: i32 = 3;
const EXIT_INTERRUPTED: i32 = 130;

/// Server selection timeout of the shell when the connection string sets none: a shell should
/// say quickly that nothing is listening.
const SHELL_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    version,
    about = "The cairn shell: a JavaScript REPL with mongosh's vocabulary"
)]
struct Args {
    /// A connection string (cairn://... or mongodb://...) and/or JavaScript files to run.
    #[arg(value_name = "URI | FILE.js")]
    positional: Vec<String>,
    /// Server to connect to, HOST or HOST:PORT (default port 27027).
    #[arg(long)]
    host: Option<String>,
    /// Port, with --host.
    #[arg(long)]
    port: Option<u16>,
    /// JavaScript to evaluate; its last value is printed. May be given more than once.
    #[arg(long, value_name = "JS")]
    eval: Vec<String>,
    /// Stay in the interactive shell after --eval and files.
    #[arg(long)]
    shell: bool,
    /// No banner.
    #[arg(long)]
    quiet: bool,
    /// No colours, even on a terminal.
    #[arg(long = "no-color")]
    no_color: bool,
    /// Data directory of the embedded default (when no --host is given).
    #[arg(long)]
    dbpath: Option<PathBuf>,
}

fn main() {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            std::process::exit(code);
        }
    };
    let code = match run(args) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("{:#}", failure.error);
            failure.code
        }
    };
    std::process::exit(code);
}

struct Failure {
    code: i32,
    error: anyhow::Error,
}

fn fail(code: i32) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { code, error }
}

fn run(args: Args) -> Result<i32, Failure> {
    let mut files = Vec::new();
    let mut uri = None;
    for argument in &args.positional {
        if argument.starts_with("cairn://") || argument.starts_with("mongodb://") {
            if uri.replace(argument.clone()).is_some() {
                return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
                    "more than one connection string given"
                )));
            }
        } else if argument.ends_with(".js") {
            files.push(PathBuf::from(argument));
        } else {
            return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
                "'{argument}' is neither a connection string (cairn://...) nor a .js file"
            )));
        }
    }
    if uri.is_some() && args.host.is_some() {
        return Err(fail(EXIT_USAGE)(anyhow::anyhow!(
            "give either a connection string or --host, not both"
        )));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("cairn-shell-io")
        .build()
        .context("cannot start the I/O runtime")
        .map_err(fail(EXIT_SCRIPT_ERROR))?;
    let interrupt = Interrupt::new();
    {
        let interrupt = interrupt.clone();
        runtime.spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                interrupt.trigger();
            }
        });
    }

    // Where to connect: a connection string, --host, or the embedded default.
    let mut _embedded = None;
    let uri = match (uri, &args.host) {
        (Some(uri), _) => uri,
        (None, Some(host)) => {
            let host = match args.port {
                Some(port) if !host.contains(':') => format!("{host}:{port}"),
                _ => host.clone(),
            };
            format!("cairn://{host}/")
        }
        (None, None) => {
            let options = EmbeddedOptions {
                dbpath: args.dbpath.clone(),
            };
            let deployment = embedded::start_default(runtime.handle(), &options)
                .context("cannot start the embedded default deployment")
                .map_err(fail(EXIT_CONNECT))?;
            let uri = format!("cairn://{}/", deployment.address);
            _embedded = Some(deployment);
            uri
        }
    };
    let mut options = ClientOptions::parse(&uri)
        .context("bad connection string")
        .map_err(fail(EXIT_USAGE))?;
    if !uri
        .to_ascii_lowercase()
        .contains("serverselectiontimeoutms")
    {
        options.server_selection_timeout = SHELL_SERVER_SELECTION_TIMEOUT;
    }
    let client = runtime
        .block_on(async {
            let client = Client::with_options(options)?;
            client.ping().await?;
            Ok::<_, cairn_driver::Error>(client)
        })
        .with_context(|| format!("cannot connect to {uri}"))
        .map_err(fail(EXIT_CONNECT))?;

    let interactive = (args.eval.is_empty() && files.is_empty()) || args.shell;
    let colour =
        !args.no_color && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let shell = Shell::new(
        client,
        runtime.handle().clone(),
        interrupt,
        ShellOptions {
            colour,
            output: Output::Stdout,
        },
    )
    .map_err(|e| fail(EXIT_SCRIPT_ERROR)(e.into()))?;
    if let Some(database) = ClientOptions::parse(&uri)
        .ok()
        .and_then(|o| o.default_database)
    {
        shell
            .evaluate(&format!("use({database:?})"), "<startup>")
            .map_err(|e| fail(EXIT_USAGE)(anyhow::anyhow!("{e}")))?;
    }

    for source in &args.eval {
        match shell.run_input(source) {
            Ok(Some(text)) => shell.print(&text),
            Ok(None) => {}
            Err(error) => return Ok(report(error)),
        }
    }
    for file in &files {
        if let Err(error) = shell.run_file(file) {
            return Ok(report(error));
        }
    }
    if !interactive {
        return Ok(0);
    }
    if !args.quiet {
        let version = shell
            .run_input("db.version()")
            .ok()
            .flatten()
            .unwrap_or_else(|| "unknown".into());
        println!("Current cairn shell: {}", env!("CARGO_PKG_VERSION"));
        println!("Connecting to: {uri}");
        println!("Using cairnd: {version}");
        println!("Type \"help\" for help.");
    }
    Ok(cairn_shell::repl::run(Rc::new(shell), colour))
}

/// Prints an uncaught error of a script and gives its exit code.
fn report(error: EvalError) -> i32 {
    match error {
        EvalError::Exit(code) => code,
        EvalError::Interrupted => {
            eprintln!("interrupted");
            EXIT_INTERRUPTED
        }
        EvalError::Exception(message) => {
            eprintln!("{message}");
            EXIT_SCRIPT_ERROR
        }
    }
}
