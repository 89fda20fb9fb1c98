//! The command dispatcher: one implementation of every command, whatever the transport.
//!
//! A request is a BSON command document whose first field names the command and whose `$db`
//! names the database. Fields every command accepts (and ignores until sessions and replica sets
//! use them): `lsid`, `txnNumber`, `$clusterTime`, `$readPreference`, `apiVersion`,
//! `apiStrict`, `apiDeprecationErrors`, `comment`, `$audit`, `$client`. Unknown commands get
//! CommandNotFound (59); a missing `$db` is an error; a panic in a handler is an InternalError
//! reply and the node keeps serving.

pub(crate) mod admin;
mod basic;
pub(crate) mod ddl;
pub(crate) mod read;
pub(crate) mod write;

use crate::node::{ClientInfo, NodeInner};
use crate::opctx::OpCtx;
use bson::{Bson, Document};
use cairn_types::{Error, ErrorCode, Namespace, Result};
use std::sync::atomic::Ordering;

/// A parsed request.
pub(crate) struct Request {
    pub db: String,
    /// The command name as given (first field).
    pub name: String,
    pub body: Document,
}

impl Request {
    /// The value of the command field (usually the collection name).
    pub fn target(&self) -> &Bson {
        self.body
            .iter()
            .next()
            .map(|(_, value)| value)
            .expect("requests have a first field")
    }

    /// The namespace named by the command field: `db.<string>`.
    pub fn namespace(&self) -> Result<Namespace> {
        match self.target() {
            Bson::String(coll) => {
                let ns = Namespace::new(self.db.clone(), coll.clone());
                cairn_types::namespace::validate_db_name(&ns.db)?;
                if coll.is_empty() {
                    return Err(Error::new(
                        ErrorCode::InvalidNamespace,
                        format!("Invalid namespace specified '{ns}'"),
                    ));
                }
                Ok(ns)
            }
            other => Err(Error::new(
                ErrorCode::InvalidNamespace,
                format!("collection name has invalid type {}", type_name(other)),
            )),
        }
    }
}

/// MongoDB's type alias of a value (`$type` names), for messages.
pub(crate) use cairn_query::value::type_name;

/// What kind of operation a command is, for opcounters and currentOp.op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Query,
    Insert,
    Update,
    Delete,
    GetMore,
    Command,
}

impl OpKind {
    fn name(self) -> &'static str {
        match self {
            OpKind::Query => "query",
            OpKind::Insert => "insert",
            OpKind::Update => "update",
            OpKind::Delete => "remove",
            OpKind::GetMore => "getmore",
            OpKind::Command => "command",
        }
    }
}

type Handler = fn(&mut OpCtx<'_>, &Request) -> Result<Document>;

/// A command the node runs.
pub(crate) struct Command {
    pub name: &'static str,
    pub handler: Handler,
    pub kind: OpKind,
    /// Runs only against the `admin` database.
    pub admin_only: bool,
    /// Its command field names a collection (for currentOp.ns).
    pub on_collection: bool,
}

const fn command(name: &'static str, handler: Handler, kind: OpKind) -> Command {
    Command {
        name,
        handler,
        kind,
        admin_only: false,
        on_collection: false,
    }
}

const fn on_collection(name: &'static str, handler: Handler, kind: OpKind) -> Command {
    Command {
        name,
        handler,
        kind,
        admin_only: false,
        on_collection: true,
    }
}

const fn admin(name: &'static str, handler: Handler) -> Command {
    Command {
        name,
        handler,
        kind: OpKind::Command,
        admin_only: true,
        on_collection: false,
    }
}

/// Every command, by name (`isMaster` and `ismaster` are `hello`'s old names).
pub(crate) static COMMANDS: &[Command] = &[
    command("ping", basic::ping, OpKind::Command),
    command("hello", basic::hello, OpKind::Command),
    command("isMaster", basic::hello, OpKind::Command),
    command("ismaster", basic::hello, OpKind::Command),
    command("buildInfo", basic::build_info, OpKind::Command),
    command("buildinfo", basic::build_info, OpKind::Command),
    command("getParameter", basic::get_parameter, OpKind::Command),
    command("setParameter", basic::set_parameter, OpKind::Command),
    command("whatsmyuri", basic::whatsmyuri, OpKind::Command),
    command(
        "connectionStatus",
        basic::connection_status,
        OpKind::Command,
    ),
    command("endSessions", basic::end_sessions, OpKind::Command),
    command("getLog", basic::get_log, OpKind::Command),
    command("hostInfo", basic::host_info, OpKind::Command),
    command("listCommands", basic::list_commands, OpKind::Command),
    command("getCmdLineOpts", basic::get_cmd_line_opts, OpKind::Command),
    command("serverStatus", admin::server_status, OpKind::Command),
    command("currentOp", admin::current_op, OpKind::Command),
    admin("killOp", admin::kill_op),
    command("lockInfo", admin::lock_info, OpKind::Command),
    admin("fsync", admin::fsync),
    admin("fsyncUnlock", admin::fsync_unlock),
    command("listDatabases", ddl::list_databases, OpKind::Command),
    command("dropDatabase", ddl::drop_database, OpKind::Command),
    on_collection("create", ddl::create, OpKind::Command),
    on_collection("drop", ddl::drop, OpKind::Command),
    command("listCollections", ddl::list_collections, OpKind::Command),
    admin("renameCollection", ddl::rename_collection),
    on_collection("createIndexes", ddl::create_indexes, OpKind::Command),
    on_collection("listIndexes", ddl::list_indexes, OpKind::Command),
    on_collection("dropIndexes", ddl::drop_indexes, OpKind::Command),
    on_collection("deleteIndexes", ddl::drop_indexes, OpKind::Command),
    on_collection("collStats", ddl::coll_stats, OpKind::Command),
    command("dbStats", ddl::db_stats, OpKind::Command),
    on_collection("insert", write::insert, OpKind::Insert),
    on_collection("update", write::update, OpKind::Update),
    on_collection("delete", write::delete, OpKind::Delete),
    on_collection("findAndModify", write::find_and_modify, OpKind::Command),
    on_collection("findandmodify", write::find_and_modify, OpKind::Command),
    on_collection("find", read::find, OpKind::Query),
    command("getMore", read::get_more, OpKind::GetMore),
    on_collection("killCursors", read::kill_cursors, OpKind::Command),
    on_collection("count", read::count, OpKind::Command),
    on_collection("distinct", read::distinct, OpKind::Command),
    on_collection("aggregate", read::aggregate, OpKind::Command),
    command("explain", read::explain, OpKind::Command),
];

/// Fields any command may carry.
pub(crate) const GENERIC_FIELDS: &[&str] = &[
    "$db",
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "$clusterTime",
    "$readPreference",
    "readConcern",
    "writeConcern",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "comment",
    "maxTimeMS",
    "$audit",
    "$client",
    "$configServerState",
    "mayBypassWriteBlocking",
];

pub(crate) fn find_command(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|command| command.name == name)
}

fn parse_request(body: Document) -> Result<Request> {
    let Some((name, _)) = body.iter().next() else {
        return Err(Error::new(
            ErrorCode::FailedToParse,
            "Empty command document",
        ));
    };
    let name = name.clone();
    let db = match body.get("$db") {
        Some(Bson::String(db)) => db.clone(),
        Some(other) => {
            return Err(Error::new(
                ErrorCode::TypeMismatch,
                format!(
                    "BSON field '$db' is the wrong type '{}', expected type 'string'",
                    type_name(other)
                ),
            ));
        }
        None => {
            return Err(Error::new(
                ErrorCode::Location(40571),
                "OP_MSG requests require a $db argument",
            ));
        }
    };
    cairn_types::namespace::validate_db_name(&db)?;
    Ok(Request { db, name, body })
}

/// maxTimeMS: a non-negative integer; 0 means none.
pub(crate) fn parse_max_time_ms(body: &Document) -> Result<Option<u64>> {
    let Some(value) = body.get("maxTimeMS") else {
        return Ok(None);
    };
    let millis = match value {
        Bson::Int32(v) => *v as i64,
        Bson::Int64(v) => *v,
        Bson::Double(v) if v.fract() == 0.0 => *v as i64,
        Bson::Null => return Ok(None),
        other => {
            return Err(Error::new(
                ErrorCode::BadValue,
                format!("maxTimeMS must be a number, not {}", type_name(other)),
            ));
        }
    };
    if millis < 0 || millis > i32::MAX as i64 {
        return Err(Error::new(
            ErrorCode::BadValue,
            format!(
                "{millis} value for maxTimeMS is out of range [0, {}]",
                i32::MAX
            ),
        ));
    }
    Ok((millis > 0).then_some(millis as u64))
}

fn ensure_ok(mut reply: Document) -> Document {
    if !reply.contains_key("ok") {
        reply.insert("ok", 1.0);
    }
    reply
}

/// Where a command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Execution {
    /// On a thread that may block (a blocking-pool thread): waits for locks, tickets, other
    /// writers and the disk as long as the operation's limits allow.
    Blocking,
    /// On the transport's own async worker, only if it can finish without waiting: commands
    /// that never wait ([`INLINE_COMMANDS`]), and finds answered by the `_id` express path,
    /// with every lock and ticket taken without waiting. Anything that would wait hands the
    /// command back ([`Ran::WouldBlock`]) before it has had any effect, to run it `Blocking`.
    /// This saves a short read the two thread hand-offs of a blocking-pool round trip, which
    /// cost more than the read itself (docs/benchmarks.md).
    Inline,
}

/// Commands that may run [`Execution::Inline`]: they never wait (for a lock, the disk or
/// another operation), or (`find`, a single-document `update`) give up at the first wait,
/// before they have had any effect.
const INLINE_COMMANDS: &[&str] = &[
    "ping",
    "hello",
    "isMaster",
    "ismaster",
    "buildInfo",
    "buildinfo",
    "whatsmyuri",
    "find",
    "update",
];

/// What an attempt to run a command produced.
pub(crate) enum Ran {
    Reply(Document),
    /// An inline attempt that would have waited: the command, untouched, to run `Blocking`.
    WouldBlock(Document),
}

/// Runs one command document on a thread that may block.
pub(crate) fn run(node: &NodeInner, client: &ClientInfo, body: Document) -> Document {
    match run_as(node, client, body, Execution::Blocking) {
        Ran::Reply(reply) => reply,
        Ran::WouldBlock(_) => unreachable!("a blocking execution does not hand its command back"),
    }
}

/// Runs one command document as `execution` allows.
pub(crate) fn run_as(
    node: &NodeInner,
    client: &ClientInfo,
    body: Document,
    execution: Execution,
) -> Ran {
    let inline = execution == Execution::Inline;
    if inline && !inline_candidate(&body) {
        return Ran::WouldBlock(body);
    }
    run_request(node, client, body, inline)
}

/// Whether a command is worth an inline attempt: its name is one of [`INLINE_COMMANDS`] and,
/// for hello, it does not ask to wait for a topology change.
fn inline_candidate(body: &Document) -> bool {
    let Some((name, _)) = body.iter().next() else {
        return false;
    };
    INLINE_COMMANDS.contains(&name.as_str()) && !body.contains_key("maxAwaitTimeMS")
}

/// Runs a request; when `inline` and it would have waited, nothing was done and the request
/// is handed back as it came.
fn run_request(node: &NodeInner, client: &ClientInfo, body: Document, inline: bool) -> Ran {
    let request = match parse_request(body) {
        Ok(request) => request,
        Err(error) => {
            crate::metrics::add(&node.metrics.commands_failed, 1);
            return Ran::Reply(error.to_reply());
        }
    };
    let Some(spec) = find_command(&request.name) else {
        crate::metrics::add(&node.metrics.commands_failed, 1);
        return Ran::Reply(
            Error::new(
                ErrorCode::CommandNotFound,
                format!("no such command: '{}'", request.name),
            )
            .to_reply(),
        );
    };
    if node.shutting_down.load(Ordering::SeqCst) {
        return Ran::Reply(
            Error::new(
                ErrorCode::ShutdownInProgress,
                "The server is in quiesce mode and will shut down",
            )
            .to_reply(),
        );
    }
    // Transactions and retryable writes need a replica set, as on a standalone mongod.
    if ["txnNumber", "startTransaction", "autocommit"]
        .iter()
        .any(|field| request.body.contains_key(field))
    {
        return Ran::Reply(
            Error::new(
                ErrorCode::IllegalOperation,
                "Transaction numbers are only allowed on a replica set member or mongos",
            )
            .to_reply(),
        );
    }
    if spec.admin_only && request.db != "admin" {
        return Ran::Reply(
            Error::new(
                ErrorCode::Unauthorized,
                format!("{} may only be run against the admin database.", spec.name),
            )
            .to_reply(),
        );
    }
    let counter = match spec.kind {
        OpKind::Query => &node.metrics.op_query,
        OpKind::Insert => &node.metrics.op_insert,
        OpKind::Update => &node.metrics.op_update,
        OpKind::Delete => &node.metrics.op_delete,
        OpKind::GetMore => &node.metrics.op_getmore,
        OpKind::Command => &node.metrics.op_command,
    };
    // An inline attempt is counted once it is known not to hand the command back.
    if !inline {
        crate::metrics::add(counter, 1);
    }
    let result = (|| -> Result<Document> {
        let max_time_ms = parse_max_time_ms(&request.body)?;
        let ns = match (spec.on_collection, request.target()) {
            (true, Bson::String(coll)) => format!("{}.{coll}", request.db),
            _ => format!("{}.$cmd", request.db),
        };
        let mut opctx = OpCtx::new(
            node,
            client,
            spec.kind.name(),
            ns,
            &request.body,
            max_time_ms,
            inline,
        );
        let handler = spec.handler;
        let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handler(&mut opctx, &request)
        })) {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(command = %request.name, %message, "command panicked");
                Err(Error::new(
                    ErrorCode::InternalError,
                    format!("internal error running {}: {message}", request.name),
                ))
            }
        };
        if !(inline && outcome.as_ref().is_err_and(would_wait)) {
            log_if_slow(&opctx, &request, &outcome);
        }
        outcome
    })();
    if inline && result.as_ref().is_err_and(would_wait) {
        return Ran::WouldBlock(request.body);
    }
    if inline {
        crate::metrics::add(counter, 1);
    }
    Ran::Reply(match result {
        Ok(reply) => ensure_ok(reply),
        Err(error) => {
            crate::metrics::add(&node.metrics.commands_failed, 1);
            tracing::debug!(command = %request.name, %error, "command failed");
            error.to_reply()
        }
    })
}

/// Whether an inline attempt ended because it would have waited: its locker's lock timeout is
/// zero, so any wait for a lock or ticket ends at once with LockTimeout; the express find
/// gives up with the same code when its query needs a plan.
fn would_wait(error: &Error) -> bool {
    error.code == ErrorCode::LockTimeout
}

/// Operations slower than this are logged (MongoDB's slowms).
const SLOW_OPERATION_MS: u128 = 100;

/// MongoDB's "Slow query" log line: the command, how long it took, its plan and yields.
fn log_if_slow(opctx: &OpCtx<'_>, request: &Request, outcome: &Result<Document>) {
    let duration = opctx.info.started.elapsed();
    if duration.as_millis() < SLOW_OPERATION_MS {
        return;
    }
    let plan = opctx.info.plan_summary.lock().clone().unwrap_or_default();
    tracing::info!(
        command = %request.name,
        ns = %opctx.info.ns,
        duration_millis = duration.as_millis() as u64,
        plan_summary = %plan,
        num_yields = opctx.locker.num_yields(),
        ok = outcome.is_ok(),
        client = %opctx.info.client.desc(),
        "Slow query"
    );
}

/// Reads an optional field of a given shape, with MongoDB's IDL type error.
pub(crate) fn optional_bool(body: &Document, command: &str, field: &str) -> Result<Option<bool>> {
    match body.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Boolean(value)) => Ok(Some(*value)),
        Some(Bson::Int32(value)) => Ok(Some(*value != 0)),
        Some(Bson::Int64(value)) => Ok(Some(*value != 0)),
        Some(Bson::Double(value)) => Ok(Some(*value != 0.0)),
        Some(other) => Err(Error::new(
            ErrorCode::TypeMismatch,
            format!(
                "BSON field '{command}.{field}' is the wrong type '{}', expected types '[bool, long, int, decimal, double]'",
                type_name(other)
            ),
        )),
    }
}

pub(crate) fn optional_document<'a>(
    body: &'a Document,
    command: &str,
    field: &str,
) -> Result<Option<&'a Document>> {
    match body.get(field) {
        None => Ok(None),
        Some(Bson::Document(document)) => Ok(Some(document)),
        Some(other) => Err(Error::new(
            ErrorCode::TypeMismatch,
            format!(
                "BSON field '{command}.{field}' is the wrong type '{}', expected type 'object'",
                type_name(other)
            ),
        )),
    }
}

pub(crate) fn optional_i64(body: &Document, command: &str, field: &str) -> Result<Option<i64>> {
    match body.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Int32(value)) => Ok(Some(*value as i64)),
        Some(Bson::Int64(value)) => Ok(Some(*value)),
        Some(Bson::Double(value)) if value.fract() == 0.0 => Ok(Some(*value as i64)),
        Some(other) => Err(Error::new(
            ErrorCode::TypeMismatch,
            format!(
                "BSON field '{command}.{field}' is the wrong type '{}', expected types '[long, int, decimal, double]'",
                type_name(other)
            ),
        )),
    }
}

/// Refuses fields a command does not know (MongoDB's IDL strictness: Location40415).
pub(crate) fn check_known_fields(body: &Document, command: &str, known: &[&str]) -> Result<()> {
    for (index, key) in body.keys().enumerate() {
        if index == 0 || known.contains(&key.as_str()) || GENERIC_FIELDS.contains(&key.as_str()) {
            continue;
        }
        return Err(Error::new(
            ErrorCode::Location(40415),
            format!("BSON field '{command}.{key}' is an unknown field."),
        ));
    }
    Ok(())
}
