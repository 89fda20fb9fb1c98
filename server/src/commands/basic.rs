//! Handshake and informational commands: hello (isMaster), ping, buildInfo, getParameter,
//! setParameter, whatsmyuri, connectionStatus, endSessions, getLog, hostInfo, listCommands,
//! getCmdLineOpts.

use super::{COMMANDS, Request, type_name};
use crate::node::{MAX_WIRE_VERSION, MIN_WIRE_VERSION, MONGODB_COMPATIBLE_VERSION, VERSION};
use crate::opctx::OpCtx;
use bson::{Bson, Document, doc};
use cairn_types::{Error, ErrorCode, Result, limits};

pub(super) fn ping(_opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    Ok(doc! {"ok": 1.0})
}

/// The fields of hello that do not depend on the command's name.
pub(crate) fn hello_fields(opctx: &OpCtx<'_>) -> Document {
    doc! {
        "topologyVersion": {"processId": process_id(), "counter": 0i64},
        "maxBsonObjectSize": limits::BSON_OBJECT_SIZE_MAX_BYTES as i32,
        "maxMessageSizeBytes": limits::MESSAGE_SIZE_MAX_BYTES as i32,
        "maxWriteBatchSize": limits::WRITE_BATCH_SIZE_MAX as i32,
        "localTime": bson::DateTime::from_millis(opctx.node.clock.wall_ms()),
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": opctx.info.client.connection_id as i32,
        "minWireVersion": MIN_WIRE_VERSION,
        "maxWireVersion": MAX_WIRE_VERSION,
        "readOnly": false,
    }
}

/// One ObjectId per process, as MongoDB's topologyVersion.processId.
fn process_id() -> bson::oid::ObjectId {
    static PROCESS_ID: std::sync::OnceLock<bson::oid::ObjectId> = std::sync::OnceLock::new();
    *PROCESS_ID.get_or_init(bson::oid::ObjectId::new)
}

pub(super) fn hello(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    if let Some(client) = request.body.get("client") {
        match client {
            Bson::Document(metadata) => {
                opctx
                    .node
                    .client_metadata
                    .lock()
                    .insert(opctx.info.client.connection_id, metadata.clone());
                tracing::info!(connection = opctx.info.client.connection_id, client = %metadata, "client metadata");
            }
            other => {
                return Err(Error::new(
                    ErrorCode::TypeMismatch,
                    format!(
                        "BSON field '{}.client' is the wrong type '{}', expected type 'object'",
                        request.name,
                        type_name(other)
                    ),
                ));
            }
        }
    }
    let mut reply = Document::new();
    if request.name == "hello" {
        reply.insert("isWritablePrimary", true);
    } else {
        reply.insert("ismaster", true);
        if matches!(request.body.get("helloOk"), Some(Bson::Boolean(true))) {
            reply.insert("helloOk", true);
        }
    }
    reply.extend(hello_fields(opctx));
    reply.insert("ok", 1.0);
    Ok(reply)
}

pub(super) fn build_info(_opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    let numbers: Vec<i32> = MONGODB_COMPATIBLE_VERSION
        .split('.')
        .filter_map(|part| part.parse().ok())
        .collect();
    let mut version_array = numbers.clone();
    version_array.resize(4, 0);
    Ok(doc! {
        "version": MONGODB_COMPATIBLE_VERSION,
        "gitVersion": format!("cairn-{VERSION}"),
        "versionArray": version_array,
        "cairnVersion": VERSION,
        "storageEngines": ["cairn"],
        "javascriptEngine": "none",
        "bits": 64,
        "debug": cfg!(debug_assertions),
        "maxBsonObjectSize": limits::BSON_OBJECT_SIZE_MAX_BYTES as i32,
        "modules": [],
        "openssl": {"running": "disabled", "compiled": "disabled"},
        "buildEnvironment": {"target_arch": std::env::consts::ARCH, "target_os": std::env::consts::OS},
        "ok": 1.0,
    })
}

/// The parameters getParameter knows, with their current values.
fn parameters(opctx: &OpCtx<'_>) -> Document {
    let locks = &opctx.node.locks;
    let config = &opctx.node.config;
    doc! {
        "featureCompatibilityVersion": {"version": "8.0"},
        "cursorTimeoutMillis": config.cursor_timeout_ms as i64,
        "internalQueryExecYieldPeriodMS": locks.yield_period_ms() as i32,
        "internalQueryExecYieldIterations": locks.yield_iterations_max().map_or(-1, |max| max as i64),
        "storageEngineConcurrentReadTransactions": locks.read_tickets_max() as i32,
        "storageEngineConcurrentWriteTransactions": locks.write_tickets_max() as i32,
        "maxTransactionLockRequestTimeoutMillis": 5,
        "minSnapshotHistoryWindowInSeconds": config.history_window_secs as i32,
        "journalCommitInterval": config.commit_interval_ms as i32,
        "syncdelay": config.checkpoint_interval_secs as i32,
        "maxIncomingConnections": config.connections_max as i32,
        "logLevel": config.verbosity as i32,
        // mongosh's db.getLogComponents().
        "logComponentVerbosity": {"verbosity": config.verbosity as i32},
    }
}

pub(super) fn get_parameter(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let all = parameters(opctx);
    let wants_all = matches!(request.target(), Bson::String(star) if star == "*")
        || matches!(request.target(), Bson::Document(options) if options.get_bool("allParameters").unwrap_or(false));
    let mut reply = Document::new();
    if wants_all {
        reply.extend(all);
    } else {
        for (key, _) in request.body.iter().skip(1) {
            if super::GENERIC_FIELDS.contains(&key.as_str()) {
                continue;
            }
            if let Some(value) = all.get(key) {
                reply.insert(key.clone(), value.clone());
            }
        }
        if reply.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidOptions,
                "no option found to get",
            ));
        }
    }
    reply.insert("ok", 1.0);
    Ok(reply)
}

fn positive_u32(name: &str, value: &Bson) -> Result<u32> {
    let number = match value {
        Bson::Int32(v) => *v as i64,
        Bson::Int64(v) => *v,
        Bson::Double(v) if v.fract() == 0.0 => *v as i64,
        other => {
            return Err(Error::new(
                ErrorCode::BadValue,
                format!("{name} must be a number, not {}", type_name(other)),
            ));
        }
    };
    if number <= 0 || number > u32::MAX as i64 {
        return Err(Error::new(
            ErrorCode::BadValue,
            format!("{name} must be positive"),
        ));
    }
    Ok(number as u32)
}

pub(super) fn set_parameter(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    if request.db != "admin" {
        return Err(Error::new(
            ErrorCode::Unauthorized,
            "setParameter may only be run against the admin database.",
        ));
    }
    let before = parameters(opctx);
    let mut reply = Document::new();
    let locks = &opctx.node.locks;
    for (key, value) in request.body.iter().skip(1) {
        if super::GENERIC_FIELDS.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "storageEngineConcurrentReadTransactions" => {
                locks.set_read_tickets_max(positive_u32(key, value)?)
            }
            "storageEngineConcurrentWriteTransactions" => {
                locks.set_write_tickets_max(positive_u32(key, value)?)
            }
            "internalQueryExecYieldPeriodMS" => {
                locks.set_yield_period_ms(positive_u32(key, value)? as u64)
            }
            "internalQueryExecYieldIterations" => {
                locks.set_yield_iterations_max(Some(positive_u32(key, value)? as u64))
            }
            other => {
                return Err(Error::new(
                    ErrorCode::InvalidOptions,
                    format!("attempted to set unrecognized or read-only parameter [{other}]"),
                ));
            }
        }
        if let Some(was) = before.get(key) {
            reply.insert("was", was.clone());
        }
    }
    if reply.is_empty() {
        return Err(Error::new(
            ErrorCode::InvalidOptions,
            "no option found to set, use help:true to see options ",
        ));
    }
    reply.insert("ok", 1.0);
    Ok(reply)
}

pub(super) fn whatsmyuri(opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    Ok(doc! {"you": opctx.info.client.remote.clone(), "ok": 1.0})
}

pub(super) fn connection_status(_opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    Ok(doc! {
        "authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []},
        "ok": 1.0,
    })
}

pub(super) fn end_sessions(_opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    // Sessions arrive with the replica set; until then there is nothing to end.
    Ok(doc! {"ok": 1.0})
}

pub(super) fn get_log(_opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    match request.target() {
        Bson::String(name) if name == "*" => {
            Ok(doc! {"names": ["global", "startupWarnings"], "ok": 1.0})
        }
        Bson::String(name) if name == "global" || name == "startupWarnings" => {
            Ok(doc! {"totalLinesWritten": 0, "log": [], "ok": 1.0})
        }
        Bson::String(name) => Err(Error::new(
            ErrorCode::InvalidOptions,
            format!("no RamLog named: {name}"),
        )),
        other => Err(Error::new(
            ErrorCode::TypeMismatch,
            format!(
                "Argument to getLog must be of type String; found {other} of type {}",
                type_name(other)
            ),
        )),
    }
}

pub(super) fn host_info(opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i32;
    Ok(doc! {
        "system": {
            "currentTime": bson::DateTime::from_millis(opctx.node.clock.wall_ms()),
            "hostname": hostname(),
            "cpuAddrSize": 64,
            "numCores": cores,
            "cpuArch": std::env::consts::ARCH,
        },
        "os": {"type": std::env::consts::OS, "name": std::env::consts::OS},
        "extra": {},
        "ok": 1.0,
    })
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

pub(super) fn list_commands(_opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    let mut commands = Document::new();
    for command in COMMANDS {
        commands.insert(
            command.name,
            doc! {"adminOnly": command.admin_only, "help": ""},
        );
    }
    Ok(doc! {"commands": commands, "ok": 1.0})
}

pub(super) fn get_cmd_line_opts(opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    let config = &opctx.node.config;
    Ok(doc! {
        "argv": std::env::args().collect::<Vec<_>>(),
        "parsed": {
            "storage": {"dbPath": config.dbpath.display().to_string()},
            "net": {"port": config.port as i32, "bindIp": config.bind_ip.join(",")},
        },
        "ok": 1.0,
    })
}
