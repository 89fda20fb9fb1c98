//! The JavaScript engine of the shell: one QuickJS runtime and context (rquickjs), the prelude
//! (mongosh's vocabulary, in `prelude.js`), and the Rust natives it calls.
//!
//! Threading: QuickJS is single-threaded, so the shell runs JavaScript on the calling thread and
//! every driver call blocks that thread on the tokio runtime (`Handle::block_on`) until the reply
//! arrives or Ctrl-C is pressed: the call then returns an `Interrupted` error and its future is
//! dropped, which cancels the gRPC call (and a dropped cursor is killed on the server). Pure
//! JavaScript loops are stopped by QuickJS's interrupt handler, which polls the same flag. The
//! shell must therefore not be used from inside the tokio runtime's own threads.
//!
//! Server cursors live on the Rust side in a table of driver cursors; JavaScript holds handles.

use crate::convert::{self, ConversionError, base64_decode, base64_encode, hex_decode, hex_encode};
use crate::inspect::inspect;
use bson::Document;
use cairn_driver::{Client, Cursor, ErrorKind};
use futures::StreamExt;
use rquickjs::context::EvalOptions;
use rquickjs::function::Opt;
use rquickjs::{Context, Ctx, Function, Object, Runtime, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

const PRELUDE: &str = include_str!("prelude.js");

/// Limit on open cursors held by one shell (each pins a server cursor).
pub const SHELL_CURSORS_MAX: usize = 1024;

/// Memory limit of the JavaScript heap.
pub const JS_MEMORY_MAX_BYTES: usize = 1 << 30;

/// Ctrl-C: set by the signal listener, polled by the JS interrupt handler and by blocked
/// driver calls.
#[derive(Default)]
pub struct Interrupt {
    flag: AtomicBool,
    notify: Notify,
}

impl Interrupt {
    pub fn new() -> Arc<Interrupt> {
        Arc::new(Interrupt::default())
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn clear(&self) {
        self.flag.store(false, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    async fn triggered(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// Where `print` and results go.
#[derive(Clone)]
pub enum Output {
    Stdout,
    /// Collected in memory (tests).
    Buffer(Rc<RefCell<String>>),
}

impl Output {
    pub fn line(&self, text: &str) {
        match self {
            Output::Stdout => {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{text}");
                let _ = stdout.flush();
            }
            Output::Buffer(buffer) => {
                let mut buffer = buffer.borrow_mut();
                buffer.push_str(text);
                buffer.push('\n');
            }
        }
    }
}

/// How a shell is set up.
pub struct ShellOptions {
    /// ANSI colours in results (on a terminal, not when piped).
    pub colour: bool,
    pub output: Output,
}

/// Why an evaluation did not produce a value.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// An uncaught exception, formatted as mongosh does (`MongoServerError[DuplicateKey]: ...`).
    Exception(String),
    /// `quit(code)` / `exit`.
    Exit(i32),
    /// Ctrl-C.
    Interrupted,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Exception(message) => f.write_str(message),
            EvalError::Exit(code) => write!(f, "exit with code {code}"),
            EvalError::Interrupted => f.write_str("execution was interrupted"),
        }
    }
}

/// A failure to set the engine up.
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot start the JavaScript engine: {}", self.0)
    }
}

impl std::error::Error for SetupError {}

enum Blocked {
    Driver(cairn_driver::Error),
    Interrupted,
}

/// State shared by the natives.
struct State {
    client: Client,
    tokio: tokio::runtime::Handle,
    interrupt: Arc<Interrupt>,
    cursors: RefCell<HashMap<u32, Cursor<Document>>>,
    next_cursor: Cell<u32>,
    colour: bool,
    output: Output,
    exit_code: Rc<Cell<Option<i32>>>,
}

/// How long closing one cursor may wait for the server.
const CURSOR_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl State {
    /// Kills a server cursor and waits (briefly) for the reply; on timeout or Ctrl-C the cursor
    /// is left to the server's cursor timeout.
    fn close_cursor(&self, cursor: Cursor<Document>) {
        let _ = self.block_on(async move {
            let _ = tokio::time::timeout(CURSOR_CLOSE_TIMEOUT, cursor.close()).await;
            Ok(())
        });
    }

    fn block_on<T>(
        &self,
        future: impl Future<Output = cairn_driver::Result<T>>,
    ) -> Result<T, Blocked> {
        let interrupt = self.interrupt.clone();
        self.tokio.block_on(async move {
            tokio::select! {
                outcome = future => outcome.map_err(Blocked::Driver),
                _ = interrupt.triggered() => Err(Blocked::Interrupted),
            }
        })
    }
}

/// The shell's JavaScript engine, connected to a deployment.
pub struct Shell {
    runtime: Runtime,
    context: Context,
    state: Rc<State>,
}

fn js_error<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    message: &str,
    props: Option<Object<'js>>,
) -> rquickjs::Error {
    let made: rquickjs::Result<Value<'js>> = ctx
        .globals()
        .get::<_, Function<'js>>("__cairnError")
        .and_then(|make| make.call((name, message, props)));
    match made {
        Ok(error) => ctx.throw(error),
        Err(error) => error,
    }
}

fn conversion_error(ctx: &Ctx<'_>, error: ConversionError) -> rquickjs::Error {
    js_error(ctx, "BSONError", &error.0, None)
}

/// A driver error as a mongosh-style JS error (`MongoServerError` with code, codeName, ...).
fn driver_error(ctx: &Ctx<'_>, error: Blocked) -> rquickjs::Error {
    let error = match error {
        Blocked::Interrupted => {
            return js_error(
                ctx,
                "MongoshInterruptedError",
                "execution was interrupted",
                None,
            );
        }
        Blocked::Driver(error) => error,
    };
    let props = match Object::new(ctx.clone()) {
        Ok(props) => props,
        Err(e) => return e,
    };
    let name = match error.kind() {
        ErrorKind::Command(command) => {
            for (key, value) in &command.reply {
                if matches!(
                    key.as_str(),
                    "ok" | "errmsg" | "$clusterTime" | "operationTime"
                ) {
                    continue;
                }
                if let Ok(value) = convert::to_js(ctx, value) {
                    let _ = props.set(key.as_str(), value);
                }
            }
            "MongoServerError"
        }
        ErrorKind::Write(_) => "MongoServerError",
        ErrorKind::Network { .. } => "MongoNetworkError",
        ErrorKind::ServerSelection { .. } => "MongoServerSelectionError",
        ErrorKind::InvalidReply { .. } => "MongoRuntimeError",
        ErrorKind::Serialization { .. } => "BSONError",
        ErrorKind::InvalidUri { .. } => "MongoParseError",
        ErrorKind::InvalidArgument { .. } => "MongoInvalidArgumentError",
        _ => "MongoError",
    };
    if let Some(code) = error.code() {
        let _ = props.set("code", code);
    }
    if let Some(code_name) = error.code_name() {
        let _ = props.set("codeName", code_name);
    }
    if !error.labels().is_empty() {
        let _ = props.set("errorLabels", error.labels().to_vec());
    }
    js_error(ctx, name, &error.message(), Some(props))
}

impl Shell {
    /// A shell over `client`; driver calls run on `tokio` (a multi-threaded runtime whose
    /// threads are not this one).
    pub fn new(
        client: Client,
        tokio: tokio::runtime::Handle,
        interrupt: Arc<Interrupt>,
        options: ShellOptions,
    ) -> Result<Shell, SetupError> {
        let runtime = Runtime::new().map_err(|e| SetupError(e.to_string()))?;
        runtime.set_memory_limit(JS_MEMORY_MAX_BYTES);
        let context = Context::full(&runtime).map_err(|e| SetupError(e.to_string()))?;
        let exit_code = Rc::new(Cell::new(None));
        let state = Rc::new(State {
            client,
            tokio,
            interrupt: interrupt.clone(),
            cursors: RefCell::new(HashMap::new()),
            next_cursor: Cell::new(1),
            colour: options.colour,
            output: options.output,
            exit_code: exit_code.clone(),
        });
        {
            let interrupt = interrupt.clone();
            let exit_code = exit_code.clone();
            runtime.set_interrupt_handler(Some(Box::new(move || {
                interrupt.is_set() || exit_code.get().is_some()
            })));
        }
        context.with(|ctx| -> Result<(), SetupError> {
            install_natives(&ctx, &state).map_err(|e| SetupError(format!("natives: {e}")))?;
            let options = eval_options("prelude.js");
            ctx.eval_with_options::<(), _>(PRELUDE, options)
                .map_err(|e| {
                    let thrown = ctx.catch();
                    SetupError(format!("prelude: {e}: {}", format_exception(&ctx, &thrown)))
                })
        })?;
        Ok(Shell {
            runtime,
            context,
            state,
        })
    }

    pub fn client(&self) -> &Client {
        &self.state.client
    }

    /// Evaluates JavaScript source in the global scope and returns what the REPL would print
    /// for its value (`None` for undefined or an empty display).
    pub fn evaluate(&self, source: &str, file_name: &str) -> Result<Option<String>, EvalError> {
        self.state.interrupt.clear();
        let outcome = self.context.with(|ctx| {
            let options = eval_options(file_name);
            let result = ctx
                .eval_with_options::<Value<'_>, _>(source, options)
                .and_then(|value| {
                    let display: Function<'_> = ctx.globals().get("__display")?;
                    display.call::<_, Option<String>>((value,))
                });
            result.map_err(|_| format_exception(&ctx, &ctx.catch()))
        });
        // Jobs (promise callbacks) run to completion after each evaluation.
        while self.runtime.is_job_pending() {
            if self.runtime.execute_pending_job().is_err() {
                break;
            }
        }
        if let Some(code) = self.state.exit_code.take() {
            return Err(EvalError::Exit(code));
        }
        if self.state.interrupt.is_set() {
            self.state.interrupt.clear();
            return Err(EvalError::Interrupted);
        }
        match outcome {
            Ok(Some(text)) if !text.is_empty() => Ok(Some(text)),
            Ok(_) => Ok(None),
            Err(message) => Err(EvalError::Exception(message)),
        }
    }

    /// Evaluates one REPL input: shell commands (`use`, `show`, `it`, `exit`) first.
    pub fn run_input(&self, input: &str) -> Result<Option<String>, EvalError> {
        self.evaluate(&crate::input::translate(input), "<repl>")
    }

    /// Runs a script file (shell commands on lines of their own are understood too).
    pub fn run_file(&self, path: &std::path::Path) -> Result<(), EvalError> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            EvalError::Exception(format!("Error: cannot read {}: {e}", path.display()))
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.evaluate(&crate::input::translate(&source), &name)
            .map(|_| ())
    }

    /// Prints a line to the shell's output.
    pub fn print(&self, text: &str) {
        self.state.output.line(text);
    }

    /// The current database (`db.getName()`).
    pub fn current_database(&self) -> String {
        self.context.with(|ctx| {
            let database: rquickjs::Result<Object<'_>> = ctx.globals().get("db");
            database
                .and_then(|db| {
                    db.get::<_, Function<'_>>("getName")
                        .and_then(|f| f.call::<_, String>((rquickjs::function::This(db),)))
                })
                .unwrap_or_else(|_| "test".into())
        })
    }

    /// Names of the global variables (for completion).
    pub fn global_names(&self) -> Vec<String> {
        self.context.with(|ctx| {
            ctx.globals()
                .keys::<String>()
                .filter_map(Result::ok)
                .filter(|name| !name.starts_with("__"))
                .collect()
        })
    }

    /// Collection names of the current database, waiting at most `timeout` (for completion).
    pub fn collection_names(&self, timeout: std::time::Duration) -> Vec<String> {
        let database = self.state.client.database(&self.current_database());
        self.state
            .tokio
            .block_on(async move {
                tokio::time::timeout(timeout, database.list_collections().names()).await
            })
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Open server cursors held by JavaScript cursors.
    pub fn open_cursors(&self) -> usize {
        self.state.cursors.borrow().len()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let cursors: Vec<Cursor<Document>> = self
            .state
            .cursors
            .borrow_mut()
            .drain()
            .map(|(_, c)| c)
            .collect();
        for cursor in cursors {
            self.state.close_cursor(cursor);
        }
    }
}

/// Global, sloppy-mode scripts (as mongosh's: `x = 1` without a declaration works).
fn eval_options(file_name: &str) -> EvalOptions {
    let mut options = EvalOptions::default();
    options.global = true;
    options.strict = false;
    options.filename = Some(file_name.to_string());
    options
}

/// An uncaught exception as mongosh prints it.
pub fn format_exception<'js>(ctx: &Ctx<'js>, thrown: &Value<'js>) -> String {
    let Some(object) = thrown.as_object() else {
        return format!("Uncaught {}", inspect(ctx, thrown, false));
    };
    if !thrown.is_error() && !convert::instance_of(ctx, thrown, "Error") {
        return format!("Uncaught {}", inspect(ctx, thrown, false));
    }
    let name: String = object.get("name").unwrap_or_else(|_| "Error".into());
    let message: String = object.get("message").unwrap_or_default();
    let code_name: Option<String> = object.get("codeName").ok().flatten();
    let mut text = match code_name {
        Some(code_name) if name.starts_with("Mongo") => format!("{name}[{code_name}]: {message}"),
        _ => format!("{name}: {message}"),
    };
    if name == "SyntaxError" || name == "ReferenceError" || name == "TypeError" {
        let stack: String = object.get("stack").unwrap_or_default();
        let location = stack
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with("at ") && !line.contains("prelude.js"))
            .map(|line| {
                line.rsplit_once('(')
                    .map_or(line, |(_, inner)| inner.trim_end_matches(')'))
            })
            .map(|line| line.trim_start_matches("at ").to_string());
        if let Some(location) = location {
            text.push_str(&format!(" ({location})"));
        }
    }
    text
}

fn install_natives<'js>(ctx: &Ctx<'js>, state: &Rc<State>) -> rquickjs::Result<()> {
    let natives = Object::new(ctx.clone())?;

    let s = state.clone();
    natives.set(
        "runCommand",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  db: String,
                  command: Value<'js>,
                  is_read: bool|
                  -> rquickjs::Result<Value<'js>> {
                let command =
                    convert::to_document(&ctx, &command).map_err(|e| conversion_error(&ctx, e))?;
                let database = s.client.database(&db);
                let mut action = database.run_command(command);
                if is_read && let Some(preference) = s.client.read_preference() {
                    action = action.read_preference(preference.clone());
                }
                let reply = s
                    .block_on(async move { action.await })
                    .map_err(|e| driver_error(&ctx, e))?;
                Ok(convert::document_to_js(&ctx, &reply)?.into_value())
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "openCursor",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>, db: String, command: Value<'js>, is_read: bool, batch_size: f64| -> rquickjs::Result<u32> {
            if s.cursors.borrow().len() >= SHELL_CURSORS_MAX {
                return Err(js_error(&ctx, "MongoshRuntimeError", &format!("too many open cursors (limit {SHELL_CURSORS_MAX}); exhaust or close() some"), None));
            }
            let command = convert::to_document(&ctx, &command).map_err(|e| conversion_error(&ctx, e))?;
            let database = s.client.database(&db);
            let mut action = database.run_cursor_command(command);
            if batch_size >= 1.0 {
                action = action.batch_size(batch_size as u32);
            }
            if is_read && let Some(preference) = s.client.read_preference() {
                action = action.read_preference(preference.clone());
            }
            let cursor = s.block_on(async move { action.await }).map_err(|e| driver_error(&ctx, e))?;
            let handle = s.next_cursor.get();
            s.next_cursor.set(handle.wrapping_add(1).max(1));
            s.cursors.borrow_mut().insert(handle, cursor);
            Ok(handle)
        })?,
    )?;

    let s = state.clone();
    natives.set(
        "cursorNext",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, handle: u32, max: u32| -> rquickjs::Result<Value<'js>> {
                let mut documents = Vec::new();
                let mut failure = None;
                let mut finished = false;
                {
                    let mut cursors = s.cursors.borrow_mut();
                    if let Some(cursor) = cursors.get_mut(&handle) {
                        while documents.len() < max.max(1) as usize {
                            if cursor.buffered_len() == 0 && !documents.is_empty() {
                                break; // hand over what we have before waiting for a getMore
                            }
                            match s.block_on(async { Ok(cursor.next().await) }) {
                                Ok(Some(Ok(document))) => documents.push(document),
                                Ok(Some(Err(error))) => {
                                    failure = Some(Blocked::Driver(error));
                                    finished = true;
                                    break;
                                }
                                Ok(None) => {
                                    finished = true;
                                    break;
                                }
                                Err(interrupted) => {
                                    failure = Some(interrupted);
                                    break;
                                }
                            }
                        }
                        finished |= cursor.is_exhausted();
                    }
                    if finished {
                        cursors.remove(&handle);
                    }
                }
                if let Some(error) = failure {
                    return Err(driver_error(&ctx, error));
                }
                let array = rquickjs::Array::new(ctx.clone())?;
                for (index, document) in documents.iter().enumerate() {
                    array.set(index, convert::document_to_js(&ctx, document)?)?;
                }
                Ok(array.into_value())
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "cursorExhausted",
        Function::new(ctx.clone(), move |handle: u32| -> bool {
            s.cursors
                .borrow()
                .get(&handle)
                .is_none_or(|c| c.is_exhausted())
        })?,
    )?;

    let s = state.clone();
    natives.set(
        "cursorClose",
        Function::new(ctx.clone(), move |handle: u32| {
            let cursor = s.cursors.borrow_mut().remove(&handle);
            if let Some(cursor) = cursor {
                s.close_cursor(cursor);
            }
        })?,
    )?;

    let s = state.clone();
    natives.set(
        "inspect",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, value: Value<'js>| -> String { inspect(&ctx, &value, s.colour) },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "print",
        Function::new(ctx.clone(), move |text: String| s.output.line(&text))?,
    )?;

    natives.set(
        "newObjectId",
        Function::new(ctx.clone(), || bson::oid::ObjectId::new().to_hex())?,
    )?;

    natives.set(
        "decimalCanonical",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, text: String| -> rquickjs::Result<String> {
                text.trim()
                    .parse::<bson::Decimal128>()
                    .map(|d| d.to_string())
                    .map_err(|_| {
                        js_error(
                            &ctx,
                            "BSONError",
                            &format!("'{text}' is not a valid Decimal128 string"),
                            None,
                        )
                    })
            },
        )?,
    )?;

    natives.set(
        "uuidBase64",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, text: Opt<String>| -> rquickjs::Result<String> {
                let uuid = match text.0 {
                    None => bson::Uuid::new(),
                    Some(text) => bson::Uuid::parse_str(text.trim()).map_err(|_| {
                        js_error(
                            &ctx,
                            "BSONError",
                            &format!("'{text}' is not a valid UUID string"),
                            None,
                        )
                    })?,
                };
                Ok(base64_encode(&bson::Binary::from_uuid(uuid).bytes))
            },
        )?,
    )?;

    natives.set(
        "base64ToHex",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, text: String| -> rquickjs::Result<String> {
                base64_decode(&text)
                    .map(|bytes| hex_encode(&bytes))
                    .map_err(|e| conversion_error(&ctx, e))
            },
        )?,
    )?;

    natives.set(
        "hexToBase64",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, text: String| -> rquickjs::Result<String> {
                hex_decode(&text)
                    .map(|bytes| base64_encode(&bytes))
                    .map_err(|e| conversion_error(&ctx, e))
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "sleep",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, millis: f64| -> rquickjs::Result<()> {
                let duration = std::time::Duration::from_millis(millis.max(0.0) as u64);
                s.block_on(async move {
                    tokio::time::sleep(duration).await;
                    Ok(())
                })
                .map_err(|e| driver_error(&ctx, e))
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "quit",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, code: f64| -> rquickjs::Result<()> {
                s.exit_code.set(Some(code as i32));
                // The interrupt handler stops the script even if this exception is caught.
                Err(js_error(&ctx, "MongoshExit", "exit", None))
            },
        )?,
    )?;

    natives.set(
        "load",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, path: String| -> rquickjs::Result<bool> {
                let source = std::fs::read_to_string(&path).map_err(|e| {
                    js_error(
                        &ctx,
                        "MongoshLoadError",
                        &format!("cannot read {path}: {e}"),
                        None,
                    )
                })?;
                let options = eval_options(&path);
                ctx.eval_with_options::<(), _>(crate::input::translate(&source), options)?;
                Ok(true)
            },
        )?,
    )?;

    ctx.globals().set("__cairn", natives)?;
    Ok(())
}
