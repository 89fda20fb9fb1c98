//! Administration: serverStatus, currentOp, killOp, lockInfo, fsync (lock) and fsyncUnlock.

use super::{Request, type_name};
use crate::opctx::OpCtx;
use bson::{Bson, Document, doc};
use cairn_types::{Error, ErrorCode, Result};
use std::sync::atomic::Ordering;

fn resident_memory_mb() -> (i64, i64) {
    // /proc/self/statm: size and resident, in pages.
    let text = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|field| field.parse::<i64>().unwrap_or(0));
    let page_kb = 4;
    let virtual_pages = fields.next().unwrap_or(0);
    let resident_pages = fields.next().unwrap_or(0);
    (
        virtual_pages * page_kb / 1024,
        resident_pages * page_kb / 1024,
    )
}

pub(super) fn server_status(opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    let node = opctx.node;
    let uptime = node.started.elapsed();
    let (virtual_mb, resident_mb) = resident_memory_mb();
    let engine = node.engine.stats();
    let mut cairn = engine.to_document();
    cairn.insert("execution", node.metrics.execution());
    cairn.insert(
        "network",
        node.metrics.network(crate::network::idle_poll_in_force(
            node.config.idle_poll_micros,
        )),
    );
    let (open_cursors, no_timeout_cursors) = node.cursors.counts();
    Ok(doc! {
        "host": super::basic::hostname(),
        "version": crate::node::MONGODB_COMPATIBLE_VERSION,
        "cairnVersion": crate::node::VERSION,
        "process": "cairnd",
        "pid": std::process::id() as i64,
        "uptime": uptime.as_secs_f64().floor(),
        "uptimeMillis": uptime.as_millis() as i64,
        "uptimeEstimate": uptime.as_secs() as i64,
        "localTime": bson::DateTime::from_millis(node.clock.wall_ms()),
        "locks": node.locks.server_status_locks(),
        "globalLock": node.locks.server_status_global_lock(),
        "admission": {"execution": node.locks.server_status_tickets()},
        "connections": {
            "current": node.connections_current.load(Ordering::Relaxed) as i32,
            "available": (node.config.connections_max as u64)
                .saturating_sub(node.connections_current.load(Ordering::Relaxed)) as i32,
            "totalCreated": node.connections_total.load(Ordering::Relaxed) as i64,
            "active": node.operations.lock().len() as i32,
        },
        "mem": {"bits": 64, "resident": resident_mb, "virtual": virtual_mb, "supported": true},
        "opcounters": node.metrics.opcounters(),
        "metrics": {
            "operation": {"writeConflicts": node.engine.write_conflicts() as i64},
            "document": node.metrics.document(),
            "queryExecutor": node.metrics.query_executor(),
            "cursor": {
                "timedOut": node.metrics.cursors_timed_out.load(Ordering::Relaxed) as i64,
                "totalOpened": node.metrics.cursors_opened.load(Ordering::Relaxed) as i64,
                "open": {"total": open_cursors as i64, "noTimeout": no_timeout_cursors as i64, "pinned": 0i64},
            },
            "commands": {"failed": node.metrics.commands_failed.load(Ordering::Relaxed) as i64},
        },
        "storageEngine": {
            "name": "cairn",
            "supportsCommittedReads": true,
            "persistent": true,
            "backupCursorOpen": false,
        },
        "cairn": cairn,
        "ok": 1.0,
    })
}

/// Whether an entry matches a currentOp filter: top-level equality on fields (enough for
/// `{waitingForLock: true}`, `{op: "query"}`, `{ns: "db.c"}`, `{opid: n}`), or any matcher
/// expression the query layer understands.
fn matches_filter(entry: &Document, filter: &Document) -> Result<bool> {
    if filter.is_empty() {
        return Ok(true);
    }
    let matcher = cairn_query::Matcher::parse(filter)?;
    Ok(matcher.matches(entry))
}

pub(super) fn current_op(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    if request.db != "admin" {
        return Err(Error::new(
            ErrorCode::Unauthorized,
            "currentOp may only be run against the admin database.",
        ));
    }
    // Every registered operation is active; `$all` adds idle cursors.
    let include_all = matches!(request.body.get("$all"), Some(Bson::Boolean(true)));
    let mut filter = Document::new();
    for (key, value) in request.body.iter().skip(1) {
        if key.starts_with('$') || super::GENERIC_FIELDS.contains(&key.as_str()) {
            continue;
        }
        filter.insert(key.clone(), value.clone());
    }
    let inprog: Vec<Bson> = current_op_entries(opctx, include_all)?
        .into_iter()
        .filter_map(|entry| match matches_filter(&entry, &filter) {
            Ok(true) => Some(Ok(Bson::Document(entry))),
            Ok(false) => None,
            Err(error) => Some(Err(error)),
        })
        .collect::<Result<_>>()?;
    Ok(doc! {"inprog": inprog, "ok": 1.0})
}

/// Every operation's currentOp entry (op-level fields and its locks); with `include_all`,
/// idle cursors too. Shared by the currentOp command and the `$currentOp` stage.
pub(crate) fn current_op_entries(opctx: &OpCtx<'_>, include_all: bool) -> Result<Vec<Document>> {
    let node = opctx.node;
    let lock_parts: std::collections::HashMap<i64, Document> = node
        .locks
        .current_op(true)
        .into_iter()
        .filter_map(|entry| entry.get_i64("opid").ok().map(|opid| (opid, entry)))
        .collect();
    let operations: Vec<_> = node.operations.lock().values().cloned().collect();
    let mut entries = Vec::new();
    for info in operations {
        let mut entry = info.current_op_fields();
        if let Some(locks) = lock_parts.get(&(info.opid as i64)) {
            for (key, value) in locks {
                if key != "opid" {
                    entry.insert(key.clone(), value.clone());
                }
            }
        } else {
            entry.insert("locks", Document::new());
            entry.insert("waitingForLock", false);
        }
        entries.push(entry);
    }
    if include_all {
        let (open, _) = node.cursors.counts();
        if open > 0 {
            entries.push(doc! {"type": "idleCursor", "active": false, "openCursors": open as i64});
        }
    }
    Ok(entries)
}

pub(super) fn kill_op(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let opid = match request.body.get("op") {
        Some(Bson::Int32(opid)) => *opid as i64,
        Some(Bson::Int64(opid)) => *opid,
        Some(Bson::Double(opid)) if opid.fract() == 0.0 => *opid as i64,
        Some(other) => {
            return Err(Error::new(
                ErrorCode::TypeMismatch,
                format!(
                    "Illegal attempt to kill operation of type {}",
                    type_name(other)
                ),
            ));
        }
        None => {
            return Err(Error::new(
                ErrorCode::BadValue,
                "Did not provide \"op\" field",
            ));
        }
    };
    if opid < 0 {
        return Err(Error::new(
            ErrorCode::BadValue,
            format!("invalid opid {opid}"),
        ));
    }
    let killed = opctx
        .node
        .locks
        .kill_op(opid as u64, ErrorCode::Interrupted);
    tracing::info!(opid, killed, "killOp");
    // MongoDB answers {info: "attempting to kill op", ok: 1} whether or not the op exists.
    Ok(doc! {"info": "attempting to kill op", "ok": 1.0})
}

pub(super) fn lock_info(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    if request.db != "admin" {
        return Err(Error::new(
            ErrorCode::Unauthorized,
            "lockInfo may only be run against the admin database.",
        ));
    }
    let mut reply = opctx.node.locks.lock_info();
    reply.insert("ok", 1.0);
    Ok(reply)
}

pub(super) fn fsync(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let lock = super::optional_bool(&request.body, "fsync", "lock")?.unwrap_or(false);
    let engine = opctx.node.engine.clone();
    if lock {
        let count = opctx
            .node
            .locks
            .fsync_lock(|| engine.checkpoint().map(|_| ()))?;
        tracing::info!(lock_count = count, "fsyncLock: writes are blocked");
        Ok(doc! {
            "info": "now locked against writes, use db.fsyncUnlock() to unlock",
            "lockCount": count as i64,
            "seeAlso": "http://dochub.mongodb.org/core/fsynccommand",
            "ok": 1.0,
        })
    } else {
        engine.checkpoint()?;
        Ok(doc! {"numFiles": 1, "ok": 1.0})
    }
}

pub(super) fn fsync_unlock(opctx: &mut OpCtx<'_>, _request: &Request) -> Result<Document> {
    let left = opctx.node.locks.fsync_unlock()?;
    tracing::info!(lock_count = left, "fsyncUnlock");
    Ok(doc! {"info": "fsyncUnlock completed", "lockCount": left as i64, "ok": 1.0})
}
