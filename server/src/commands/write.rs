//! Writes: insert, update, delete, findAndModify.
//!
//! Every write takes IX on its collection; a write to a missing collection creates it first
//! (under X, as MongoDB does), except a delete or a non-upsert update, which match nothing.
//! Each document is written in its own unit of work, retried on WriteConflict with a fresh
//! snapshot (never shown to the user), and committed together with its index entries (and, in
//! a replica set, its oplog entry). Updates and deletes first find the matching `_id`s at one
//! snapshot, then re-read each document for update and re-check the filter before writing it,
//! so a document that changed meanwhile is judged on its new contents, and no document is
//! visited twice. Per-document failures are `writeErrors`; an ordered write stops at the
//! first, an unordered one goes on.

use super::{Request, check_known_fields, type_name};
use crate::exec::collection::{
    check_user_document, decode_document, document_id_key, id_equality_key, with_id_first,
};
use crate::exec::plan::{EXPRESS_PLAN_SUMMARY, PlanExecutor, StillThere, Target};
use crate::opctx::OpCtx;
use bson::{Bson, Document, doc};
use cairn_locking::LockMode;
use cairn_locking::YieldPolicy;
use cairn_query::Matcher;
use cairn_query::commands::{DeleteCommand, FindAndModifyCommand, UpdateCommand, UpdateStatement};
use cairn_query::planner::{CanonicalQuery, Hint, plan};
use cairn_query::projection::Projection;
use cairn_query::sort::SortSpec;
use cairn_query::update::{Update, UpdateContext, upsert_document};
use cairn_storage::retry::{RetryOptions, write_conflict_retry};
use cairn_storage::{CollectionMeta, Durability, ReadAt, WriteUnit};
use cairn_types::{Error, ErrorCode, Namespace, Result, limits};
use std::sync::Arc;

/// What the write concern asks of this node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct WriteConcern {
    pub durability: Durability,
}

/// Parses `writeConcern` for a standalone node: `w` 0, 1 or "majority" (which waits for the
/// journal, as writeConcernMajorityJournalDefault does), `j`, `fsync`, `wtimeout`.
pub(crate) fn parse_write_concern(body: &Document) -> Result<WriteConcern> {
    let concern = match body.get("writeConcern") {
        None | Some(Bson::Null) => {
            return Ok(WriteConcern {
                durability: Durability::Visible,
            });
        }
        Some(Bson::Document(concern)) => concern,
        Some(other) => {
            return Err(Error::new(
                ErrorCode::TypeMismatch,
                format!(
                    "BSON field 'writeConcern' is the wrong type '{}', expected type 'object'",
                    type_name(other)
                ),
            ));
        }
    };
    let mut journaled = false;
    for (key, value) in concern {
        match key.as_str() {
            "w" => match value {
                Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => {
                    let w = match value {
                        Bson::Int32(v) => *v as f64,
                        Bson::Int64(v) => *v as f64,
                        Bson::Double(v) => *v,
                        _ => unreachable!("numbers only"),
                    };
                    if w < 0.0 || w.fract() != 0.0 {
                        return Err(Error::new(
                            ErrorCode::FailedToParse,
                            "w has to be a non-negative number and not greater than 50; found: "
                                .to_owned()
                                + &w.to_string(),
                        ));
                    }
                    if w > 1.0 {
                        return Err(Error::new(
                            ErrorCode::BadValue,
                            "cannot use 'w' > 1 on a standalone mongod",
                        ));
                    }
                }
                Bson::String(mode) if mode == "majority" => journaled = true,
                Bson::String(mode) => {
                    return Err(Error::new(
                        ErrorCode::UnknownReplWriteConcern,
                        format!(
                            "No write concern mode named '{mode}' found in replica set configuration"
                        ),
                    ));
                }
                Bson::Document(_) => {
                    return Err(Error::new(
                        ErrorCode::UnknownReplWriteConcern,
                        "tag sets in w need a replica set configuration",
                    ));
                }
                other => {
                    return Err(Error::new(
                        ErrorCode::FailedToParse,
                        format!(
                            "w has to be a number or string; found: {}",
                            type_name(other)
                        ),
                    ));
                }
            },
            "j" | "fsync" => match value {
                Bson::Boolean(flag) => journaled |= *flag,
                Bson::Int32(v) => journaled |= *v != 0,
                Bson::Int64(v) => journaled |= *v != 0,
                Bson::Double(v) => journaled |= *v != 0.0,
                other => {
                    return Err(Error::new(
                        ErrorCode::FailedToParse,
                        format!(
                            "{key} must be numeric or a boolean value; found: {}",
                            type_name(other)
                        ),
                    ));
                }
            },
            "wtimeout" | "wtimeoutMS" => {}
            "provenance" | "getLastError" => {}
            other => {
                return Err(Error::new(
                    ErrorCode::FailedToParse,
                    format!("unrecognized write concern field: {other}"),
                ));
            }
        }
    }
    Ok(WriteConcern {
        durability: if journaled {
            Durability::Journaled
        } else {
            Durability::Visible
        },
    })
}

/// Refuses writes to namespaces users may not write.
fn check_writable(ns: &Namespace) -> Result<()> {
    ns.validate()?;
    if ns.is_system() || ns.db == "local" && ns.coll.starts_with("oplog.") {
        return Err(Error::new(
            ErrorCode::InvalidNamespace,
            format!("cannot write to '{ns}'"),
        ));
    }
    Ok(())
}

/// Creates `ns` if it does not exist (implicit creation); true when this call created it.
pub(crate) fn ensure_collection(opctx: &OpCtx<'_>, ns: &Namespace) -> Result<bool> {
    if opctx.node.engine.latest_collection(ns).is_some() {
        return Ok(false);
    }
    ns.validate()?;
    let _lock = opctx.locker.lock_collection(ns, LockMode::X)?;
    let mut check = || opctx.check_interrupt();
    let options = RetryOptions {
        durability: Durability::Visible,
        deadline: opctx.deadline,
        check_interrupt: &mut check,
        give_up_on_conflict: false,
    };
    let (created, _) = write_conflict_retry(&opctx.node.engine, options, |unit| {
        if unit.collection(ns).is_some() {
            return Ok(false);
        }
        let meta = unit.create_collection(ns, Document::new())?;
        log_command(
            opctx,
            unit,
            &ns.db,
            &meta.uuid,
            doc! {"create": ns.coll.clone()},
        );
        Ok(true)
    })?;
    if created {
        tracing::info!(%ns, "created collection implicitly");
    }
    Ok(created)
}

/// The collection's catalog entry under the locks the caller holds.
fn current_meta(opctx: &OpCtx<'_>, ns: &Namespace) -> Option<Arc<CollectionMeta>> {
    opctx.node.engine.latest_collection(ns)
}

pub(crate) fn writes_oplog(opctx: &OpCtx<'_>) -> bool {
    opctx.node.config.repl_set.is_some()
}

/// An oplog entry (the committer fills in `ts`).
pub(crate) fn oplog_entry(
    opctx: &OpCtx<'_>,
    op: &str,
    ns: &Namespace,
    uuid: Option<&bson::Uuid>,
    object: Document,
    object2: Option<Document>,
) -> Document {
    let mut entry = doc! {"op": op, "ns": ns.to_string()};
    if let Some(uuid) = uuid {
        entry.insert("ui", *uuid);
    }
    entry.insert("o", object);
    if let Some(object2) = object2 {
        entry.insert("o2", object2);
    }
    entry.insert("t", -1i64);
    entry.insert("v", 2i64);
    entry.insert(
        "wall",
        bson::DateTime::from_millis(opctx.node.clock.wall_ms()),
    );
    entry
}

/// Appends the oplog entry of a command (DDL) on database `db`, when this node writes an oplog.
pub(crate) fn log_command(
    opctx: &OpCtx<'_>,
    unit: &mut WriteUnit,
    db: &str,
    uuid: &bson::Uuid,
    object: Document,
) {
    if writes_oplog(opctx) {
        unit.append_oplog(oplog_entry(
            opctx,
            "c",
            &Namespace::command_namespace(db),
            Some(uuid),
            object,
            None,
        ));
    }
}

fn retry_options<'a>(
    opctx: &OpCtx<'_>,
    check: &'a mut dyn FnMut() -> Result<()>,
) -> RetryOptions<'a> {
    RetryOptions {
        durability: Durability::Visible,
        deadline: opctx.deadline,
        check_interrupt: check,
        // Inline (on a transport's async worker), a conflict hands the command back instead of
        // waiting for the key; only single-document updates run inline, so nothing was done.
        give_up_on_conflict: opctx.inline,
    }
}

/// After visible commits, waits for the journal when the write concern asks for it.
fn acknowledge(opctx: &OpCtx<'_>, concern: WriteConcern, wrote: bool) -> Result<()> {
    if concern.durability == Durability::Journaled && wrote {
        opctx.node.engine.flush()?;
    }
    Ok(())
}

/// A count as MongoDB replies it: an int32, or an int64 past its range.
pub(crate) fn count_value(count: u64) -> Bson {
    i32::try_from(count).map_or(Bson::Int64(count as i64), Bson::Int32)
}

fn write_errors_reply(mut reply: Document, errors: Vec<Document>) -> Document {
    if !errors.is_empty() {
        reply.insert("writeErrors", errors);
    }
    reply.insert("ok", 1.0);
    reply
}

fn ordered(body: &Document, command: &str) -> Result<bool> {
    Ok(super::optional_bool(body, command, "ordered")?.unwrap_or(true))
}

/// Inserts one batch of documents in one unit of work.
fn insert_group(opctx: &OpCtx<'_>, ns: &Namespace, documents: &[Document]) -> Result<()> {
    let mut check = || opctx.check_interrupt();
    write_conflict_retry(
        &opctx.node.engine,
        retry_options(opctx, &mut check),
        |unit| {
            let meta = unit.collection(ns).ok_or_else(|| {
                Error::new(
                    ErrorCode::NamespaceNotFound,
                    format!("collection {ns} was dropped"),
                )
            })?;
            let mut collection = opctx.node.collections.for_writing(&meta)?;
            for document in documents {
                collection.insert(unit, document)?;
                if writes_oplog(opctx) {
                    unit.append_oplog(oplog_entry(
                        opctx,
                        "i",
                        ns,
                        Some(&meta.uuid),
                        document.clone(),
                        None,
                    ));
                }
            }
            collection.save_catalog(unit)
        },
    )?;
    Ok(())
}

/// Documents per unit of work for a batch insert, and the bytes that end a group early.
const INSERT_GROUP_DOCUMENTS_MAX: usize = 64;
const INSERT_GROUP_BYTES_MAX: usize = 1024 * 1024;

pub(crate) fn insert(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    check_known_fields(
        &request.body,
        "insert",
        &["documents", "ordered", "bypassDocumentValidation"],
    )?;
    let ns = request.namespace()?;
    check_writable(&ns)?;
    let documents = match request.body.get("documents") {
        Some(Bson::Array(documents)) => documents,
        Some(other) => {
            return Err(Error::new(
                ErrorCode::TypeMismatch,
                format!(
                    "BSON field 'insert.documents' is the wrong type '{}', expected type 'array'",
                    type_name(other)
                ),
            ));
        }
        None => {
            return Err(Error::new(
                ErrorCode::Location(40414),
                "BSON field 'insert.documents' is missing but a required field",
            ));
        }
    };
    if documents.is_empty() || documents.len() > limits::WRITE_BATCH_SIZE_MAX {
        return Err(Error::new(
            ErrorCode::InvalidLength,
            format!(
                "Write batch sizes must be between 1 and {}. Got {} operations.",
                limits::WRITE_BATCH_SIZE_MAX,
                documents.len()
            ),
        ));
    }
    let ordered = ordered(&request.body, "insert")?;
    let concern = parse_write_concern(&request.body)?;
    // Prepare every document first: per-document errors are write errors.
    let mut prepared: Vec<std::result::Result<Document, Error>> =
        Vec::with_capacity(documents.len());
    for document in documents {
        prepared.push(match document {
            Bson::Document(document) => check_user_document(document).map(|()| with_id_first(document)),
            other => Err(Error::new(
                ErrorCode::TypeMismatch,
                format!("BSON field 'insert.documents.0' is the wrong type '{}', expected type 'object'", type_name(other)),
            )),
        });
    }
    ensure_collection(opctx, &ns)?;
    let _lock = opctx.locker.lock_collection(&ns, LockMode::IX)?;
    if current_meta(opctx, &ns).is_none() {
        return Err(Error::new(
            ErrorCode::NamespaceNotFound,
            format!("collection {ns} was dropped while inserting"),
        ));
    }
    let mut inserted = 0u64;
    let mut errors = Vec::new();
    let mut index = 0;
    while index < prepared.len() {
        opctx.check_interrupt()?;
        // A group: consecutive valid documents, within the limits.
        let mut group = Vec::new();
        let mut bytes = 0;
        while index + group.len() < prepared.len()
            && group.len() < INSERT_GROUP_DOCUMENTS_MAX
            && bytes < INSERT_GROUP_BYTES_MAX
        {
            match &prepared[index + group.len()] {
                Ok(document) => {
                    bytes += cairn_query::agg::pipeline::document_size(document);
                    group.push(document.clone());
                }
                Err(_) => break,
            }
        }
        if group.is_empty() {
            let error = prepared[index]
                .as_ref()
                .expect_err("an invalid document ends a group");
            errors.push(error.to_write_error(index));
            index += 1;
            if ordered {
                break;
            }
            continue;
        }
        match insert_group(opctx, &ns, &group) {
            Ok(()) => {
                inserted += group.len() as u64;
                index += group.len();
            }
            Err(error) if group.len() == 1 || is_operation_error(&error) => {
                if is_operation_error(&error) {
                    return Err(error);
                }
                errors.push(error.to_write_error(index));
                index += 1;
                if ordered {
                    break;
                }
            }
            Err(_) => {
                // One document of the group failed: insert them one by one to find it.
                let mut stop = false;
                for (offset, document) in group.iter().enumerate() {
                    match insert_group(opctx, &ns, std::slice::from_ref(document)) {
                        Ok(()) => inserted += 1,
                        Err(error) if is_operation_error(&error) => return Err(error),
                        Err(error) => {
                            errors.push(error.to_write_error(index + offset));
                            if ordered {
                                stop = true;
                                break;
                            }
                        }
                    }
                }
                if stop {
                    break;
                }
                index += group.len();
            }
        }
    }
    crate::metrics::add(&opctx.node.metrics.documents_inserted, inserted);
    acknowledge(opctx, concern, inserted > 0)?;
    Ok(write_errors_reply(
        doc! {"n": count_value(inserted)},
        errors,
    ))
}

/// Errors that end the whole command rather than one statement (the operation was killed,
/// timed out, or the node is going away).
fn is_operation_error(error: &Error) -> bool {
    matches!(
        error.code,
        ErrorCode::Interrupted
            | ErrorCode::InterruptedAtShutdown
            | ErrorCode::InterruptedDueToReplStateChange
            | ErrorCode::MaxTimeMSExpired
            | ErrorCode::ClientDisconnect
            | ErrorCode::ShutdownInProgress
            | ErrorCode::LockTimeout
    )
}

/// How an update or delete statement finds the documents it visits.
enum Lookup {
    /// A filter that is exactly `{_id: v}`, no hint: its one key goes straight to the unit of
    /// work, whose own read of it (claimed, latest) decides whether it matches. Reading it at
    /// a snapshot first, as [`matching_ids`] does, was a second lookup per write.
    Express(Vec<u8>),
    /// Planned and run at a snapshot ([`matching_ids`]).
    Planned(Box<CanonicalQuery>),
}

impl Lookup {
    fn new(
        ns: &Namespace,
        raw_filter: &Document,
        filter: &Matcher,
        limit: Option<u64>,
        hint: Option<Hint>,
    ) -> Lookup {
        match (&hint, id_equality_key(raw_filter)) {
            (None, Some(key)) => Lookup::Express(key),
            _ => Lookup::Planned(Box::new(query_for(ns, filter, None, limit, hint))),
        }
    }

    /// The `_id` keys to visit, in order.
    fn candidates(
        &self,
        opctx: &OpCtx<'_>,
        meta: &Arc<CollectionMeta>,
        raw_filter: &Document,
    ) -> Result<Vec<Vec<u8>>> {
        match self {
            Lookup::Express(key) => {
                opctx.set_plan_summary(EXPRESS_PLAN_SUMMARY.to_owned());
                Ok(vec![key.clone()])
            }
            Lookup::Planned(query) => matching_ids(opctx, meta, query, raw_filter),
        }
    }

    /// Whether a single-document write whose candidate changed before it could be written
    /// looks again. An express write does not: the unit's read was the look.
    fn looks_again(&self) -> bool {
        matches!(self, Lookup::Planned(_))
    }
}

/// The `_id` keys of the documents matching a query, at one snapshot, in plan order.
fn matching_ids(
    opctx: &OpCtx<'_>,
    meta: &Arc<CollectionMeta>,
    query: &CanonicalQuery,
    raw_filter: &Document,
) -> Result<Vec<Vec<u8>>> {
    let engine = &opctx.node.engine;
    let snapshot = engine.snapshot(ReadAt::Latest)?;
    if let (Some(key), None) = (id_equality_key(raw_filter), &query.hint) {
        // The express path: one key, no plan.
        opctx.set_plan_summary(EXPRESS_PLAN_SUMMARY.to_owned());
        let exists = snapshot.get(meta.ident, &key)?.is_some();
        return Ok(if exists { vec![key] } else { Vec::new() });
    }
    let collection = opctx.node.collections.get(meta)?;
    let planned = plan(query, &collection.descriptors())?;
    let target = Target {
        ns: meta.ns.clone(),
        uuid: meta.uuid,
        ident: meta.ident,
    };
    let idents = |name: &str| meta.index(name).map(|index| index.ident);
    let mut executor = PlanExecutor::new(
        engine.clone(),
        target,
        snapshot.read_timestamp(),
        &planned.winning,
        &query.filter,
        false,
        &idents,
    )?;
    drop(snapshot);
    opctx.set_plan_summary(executor.summary().to_owned());
    let documents = executor.collect_all(Some(&opctx.locker))?;
    crate::metrics::add(
        &opctx.node.metrics.keys_examined,
        executor.stats.keys_examined,
    );
    crate::metrics::add(
        &opctx.node.metrics.docs_examined,
        executor.stats.docs_examined,
    );
    documents.iter().map(document_id_key).collect()
}

fn query_for(
    ns: &Namespace,
    filter: &Matcher,
    sort: Option<SortSpec>,
    limit: Option<u64>,
    hint: Option<Hint>,
) -> CanonicalQuery {
    let mut query = CanonicalQuery::new(&ns.to_string(), filter.clone());
    if let Some(sort) = sort {
        query.sort = sort;
    }
    query.limit = limit;
    query.hint = hint;
    query
}

/// The outcome of updating one matched document.
enum Touched {
    /// The document no longer exists or no longer matches.
    Gone,
    Updated {
        modified: bool,
        before: Document,
        after: Document,
    },
}

fn update_context(opctx: &OpCtx<'_>) -> UpdateContext {
    UpdateContext::new(bson::DateTime::from_millis(opctx.node.clock.wall_ms()))
}

/// Applies `update` to the document at `id_key` in `unit`, if it still matches.
fn update_one_in_unit(
    opctx: &OpCtx<'_>,
    unit: &mut WriteUnit,
    ns: &Namespace,
    id_key: &[u8],
    filter: &Matcher,
    update: &Update,
) -> Result<Touched> {
    let meta = unit
        .collection(ns)
        .ok_or_else(|| Error::new(ErrorCode::QueryPlanKilled, "collection dropped"))?;
    let Some(bytes) = unit.get_for_update(meta.ident, id_key)? else {
        return Ok(Touched::Gone);
    };
    let before = decode_document(&bytes)?;
    let Some(details) = filter.match_details(&before)? else {
        return Ok(Touched::Gone);
    };
    let mut context = update_context(opctx);
    context.matched_position = details.array_position;
    let outcome = update.apply(&before, &context)?;
    if !outcome.modified {
        return Ok(Touched::Updated {
            modified: false,
            after: before.clone(),
            before,
        });
    }
    let after = outcome.document;
    if after.get("_id") != before.get("_id") {
        return Err(Error::new(
            ErrorCode::ImmutableField,
            "Performing an update on the path '_id' would modify the immutable field '_id'",
        ));
    }
    if update.is_replacement() {
        check_user_document(&after)?;
    }
    let mut collection = opctx.node.collections.for_writing(&meta)?;
    collection.update(unit, &before, &after)?;
    if writes_oplog(opctx) {
        let id = before.get("_id").cloned().unwrap_or(Bson::Null);
        unit.append_oplog(oplog_entry(
            opctx,
            "u",
            ns,
            Some(&meta.uuid),
            after.clone(),
            Some(doc! {"_id": id}),
        ));
    }
    collection.save_catalog(unit)?;
    Ok(Touched::Updated {
        modified: true,
        before,
        after,
    })
}

/// Deletes the document at `id_key` in `unit` if it still matches; returns it and the array
/// position the filter matched (for a positional projection).
fn delete_one_in_unit(
    opctx: &OpCtx<'_>,
    unit: &mut WriteUnit,
    ns: &Namespace,
    id_key: &[u8],
    filter: &Matcher,
) -> Result<Option<(Document, Option<usize>)>> {
    let meta = unit
        .collection(ns)
        .ok_or_else(|| Error::new(ErrorCode::QueryPlanKilled, "collection dropped"))?;
    let Some(bytes) = unit.get_for_update(meta.ident, id_key)? else {
        return Ok(None);
    };
    let document = decode_document(&bytes)?;
    let Some(details) = filter.match_details(&document)? else {
        return Ok(None);
    };
    let mut collection = opctx.node.collections.for_writing(&meta)?;
    collection.delete(unit, &document)?;
    if writes_oplog(opctx) {
        let id = document.get("_id").cloned().unwrap_or(Bson::Null);
        unit.append_oplog(oplog_entry(
            opctx,
            "d",
            ns,
            Some(&meta.uuid),
            doc! {"_id": id},
            None,
        ));
    }
    Ok(Some((document, details.array_position)))
}

/// Inserts the document of an upsert; returns it.
fn upsert(
    opctx: &OpCtx<'_>,
    ns: &Namespace,
    filter: &Matcher,
    update: &Update,
) -> Result<Document> {
    let now = bson::DateTime::from_millis(opctx.node.clock.wall_ms());
    let document = with_id_first(&upsert_document(filter, update, now)?);
    check_user_document(&document)?;
    insert_group(opctx, ns, std::slice::from_ref(&document))?;
    crate::metrics::add(&opctx.node.metrics.documents_inserted, 1);
    Ok(document)
}

/// How many times a single-document write looks for its document again when the one it found
/// changed before it could be written.
const SINGLE_WRITE_ATTEMPTS_MAX: usize = 100;

struct UpdateResult {
    matched: u64,
    modified: u64,
    upserted: Option<Bson>,
}

fn run_update_statement(
    opctx: &OpCtx<'_>,
    ns: &Namespace,
    statement: &UpdateStatement,
    filter: &Matcher,
    update: &Update,
) -> Result<UpdateResult> {
    let raw_filter = &statement.query;
    let (multi, upsert_wanted, hint) = (statement.multi, statement.upsert, statement.hint.clone());
    let mut result = UpdateResult {
        matched: 0,
        modified: 0,
        upserted: None,
    };
    if upsert_wanted {
        ensure_collection(opctx, ns)?;
    }
    let _lock = opctx.locker.lock_collection(ns, LockMode::IX)?;
    let Some(meta) = current_meta(opctx, ns) else {
        return Ok(result);
    };
    let lookup = Lookup::new(
        ns,
        raw_filter,
        filter,
        if multi { None } else { Some(1) },
        hint,
    );
    let mut attempts = 0;
    let target = Target {
        ns: meta.ns.clone(),
        uuid: meta.uuid,
        ident: meta.ident,
    };
    let mut policy = YieldPolicy::for_locker(&opctx.locker);
    loop {
        let candidates = lookup.candidates(opctx, &meta, raw_filter)?;
        let mut raced = false;
        for id_key in &candidates {
            opctx.check_interrupt()?;
            if policy.should_yield() {
                // Between documents: let DDL and others in, then check the collection is there.
                policy.yield_now(
                    &opctx.locker,
                    &mut StillThere::collection(&opctx.node.engine, &target),
                )?;
            }
            let mut check = || opctx.check_interrupt();
            let (touched, _) = write_conflict_retry(
                &opctx.node.engine,
                retry_options(opctx, &mut check),
                |unit| update_one_in_unit(opctx, unit, ns, id_key, filter, update),
            )?;
            match touched {
                Touched::Gone => raced = true,
                Touched::Updated { modified, .. } => {
                    result.matched += 1;
                    if modified {
                        result.modified += 1;
                    }
                }
            }
        }
        attempts += 1;
        // A single update whose document changed under it looks again.
        if multi
            || result.matched > 0
            || !raced
            || !lookup.looks_again()
            || attempts >= SINGLE_WRITE_ATTEMPTS_MAX
        {
            break;
        }
    }
    crate::metrics::add(&opctx.node.metrics.documents_updated, result.modified);
    if result.matched == 0 && upsert_wanted {
        let document = upsert(opctx, ns, filter, update)?;
        result.upserted = document.get("_id").cloned();
    }
    Ok(result)
}

pub(crate) fn update(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let command = UpdateCommand::parse(&request.body)?;
    let ns = Namespace::new(request.db.clone(), command.collection.clone());
    check_writable(&ns)?;
    if command.updates.is_empty() || command.updates.len() > limits::WRITE_BATCH_SIZE_MAX {
        return Err(Error::new(
            ErrorCode::InvalidLength,
            format!(
                "Write batch sizes must be between 1 and {}. Got {} operations.",
                limits::WRITE_BATCH_SIZE_MAX,
                command.updates.len()
            ),
        ));
    }
    let concern = parse_write_concern(&request.body)?;
    if opctx.inline {
        // Inline only what commits at most once and cannot wait after it has written: one
        // statement on one document, no upsert (it may create the collection), no journal
        // wait, and no batch being committed that the commit would queue behind.
        // The document is found by the `_id` express path, never by a plan that could scan
        // for long on the async worker.
        let single = matches!(&command.updates[..], [statement]
            if !statement.multi && !statement.upsert && statement.hint.is_none()
                && id_equality_key(&statement.query).is_some());
        if !single {
            opctx
                .require_blocking("not one statement updating one document by _id, or an upsert")?;
        }
        if concern.durability == Durability::Journaled {
            opctx.require_blocking("j: true waits for the journal")?;
        }
        if opctx.node.engine.is_committing() {
            opctx.require_blocking("the storage engine is committing")?;
        }
    }
    let (mut matched, mut modified) = (0i64, 0i64);
    let mut upserted = Vec::new();
    let mut errors = Vec::new();
    for (index, statement) in command.updates.iter().enumerate() {
        let outcome = statement
            .to_update(command.let_variables.as_ref())
            .and_then(|(filter, update)| {
                run_update_statement(opctx, &ns, statement, &filter, &update)
            })
            .or_else(|error| {
                if opctx.inline && error.code == ErrorCode::WriteConflict {
                    // Nothing was applied: run it where it may wait for the key.
                    opctx.require_blocking("a write conflict")?;
                }
                Err(error)
            });
        match outcome {
            Ok(result) => {
                matched += result.matched as i64;
                modified += result.modified as i64;
                if let Some(id) = result.upserted {
                    upserted.push(doc! {"index": index as i32, "_id": id});
                }
            }
            Err(error) if is_operation_error(&error) => return Err(error),
            Err(error) => {
                errors.push(error.to_write_error(index));
                if command.ordered {
                    break;
                }
            }
        }
    }
    acknowledge(opctx, concern, modified > 0 || !upserted.is_empty())?;
    let mut reply = doc! {
        "n": count_value((matched + upserted.len() as i64) as u64),
        "nModified": count_value(modified as u64),
    };
    if !upserted.is_empty() {
        reply.insert("upserted", upserted);
    }
    Ok(write_errors_reply(reply, errors))
}

fn run_delete_statement(
    opctx: &OpCtx<'_>,
    ns: &Namespace,
    raw_filter: &Document,
    filter: &Matcher,
    just_one: bool,
    hint: Option<Hint>,
) -> Result<u64> {
    let _lock = opctx.locker.lock_collection(ns, LockMode::IX)?;
    let Some(meta) = current_meta(opctx, ns) else {
        return Ok(0);
    };
    let lookup = Lookup::new(
        ns,
        raw_filter,
        filter,
        if just_one { Some(1) } else { None },
        hint,
    );
    let mut deleted = 0;
    let mut attempts = 0;
    let target = Target {
        ns: meta.ns.clone(),
        uuid: meta.uuid,
        ident: meta.ident,
    };
    let mut policy = YieldPolicy::for_locker(&opctx.locker);
    loop {
        let candidates = lookup.candidates(opctx, &meta, raw_filter)?;
        let mut raced = false;
        for id_key in &candidates {
            opctx.check_interrupt()?;
            if policy.should_yield() {
                policy.yield_now(
                    &opctx.locker,
                    &mut StillThere::collection(&opctx.node.engine, &target),
                )?;
            }
            let mut check = || opctx.check_interrupt();
            let (removed, _) = write_conflict_retry(
                &opctx.node.engine,
                retry_options(opctx, &mut check),
                |unit| delete_one_in_unit(opctx, unit, ns, id_key, filter),
            )?;
            if removed.is_some() {
                deleted += 1;
            } else {
                raced = true;
            }
        }
        attempts += 1;
        if !just_one
            || deleted > 0
            || !raced
            || !lookup.looks_again()
            || attempts >= SINGLE_WRITE_ATTEMPTS_MAX
        {
            break;
        }
    }
    crate::metrics::add(&opctx.node.metrics.documents_deleted, deleted);
    Ok(deleted)
}

pub(crate) fn delete(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let command = DeleteCommand::parse(&request.body)?;
    let ns = Namespace::new(request.db.clone(), command.collection.clone());
    check_writable(&ns)?;
    if command.deletes.is_empty() || command.deletes.len() > limits::WRITE_BATCH_SIZE_MAX {
        return Err(Error::new(
            ErrorCode::InvalidLength,
            format!(
                "Write batch sizes must be between 1 and {}. Got {} operations.",
                limits::WRITE_BATCH_SIZE_MAX,
                command.deletes.len()
            ),
        ));
    }
    let concern = parse_write_concern(&request.body)?;
    let mut deleted = 0i64;
    let mut errors = Vec::new();
    for (index, statement) in command.deletes.iter().enumerate() {
        let outcome = Matcher::parse_with_let(&statement.query, command.let_variables.as_ref())
            .and_then(|filter| {
                run_delete_statement(
                    opctx,
                    &ns,
                    &statement.query,
                    &filter,
                    statement.just_one,
                    statement.hint.clone(),
                )
            });
        match outcome {
            Ok(count) => deleted += count as i64,
            Err(error) if is_operation_error(&error) => return Err(error),
            Err(error) => {
                errors.push(error.to_write_error(index));
                if command.ordered {
                    break;
                }
            }
        }
    }
    acknowledge(opctx, concern, deleted > 0)?;
    Ok(write_errors_reply(
        doc! {"n": count_value(deleted as u64)},
        errors,
    ))
}

fn project(
    projection: Option<&Projection>,
    document: &Document,
    position: Option<usize>,
) -> Result<Bson> {
    Ok(Bson::Document(match projection {
        Some(projection) => projection.apply(document, position)?,
        None => document.clone(),
    }))
}

pub(crate) fn find_and_modify(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let command = FindAndModifyCommand::parse(&request.body)?;
    let ns = Namespace::new(request.db.clone(), command.collection.clone());
    check_writable(&ns)?;
    let concern = parse_write_concern(&request.body)?;
    let (filter, sort, update, projection) = command.to_parts()?;
    if command.upsert && update.is_some() {
        ensure_collection(opctx, &ns)?;
    }
    let _lock = opctx.locker.lock_collection(&ns, LockMode::IX)?;
    let meta = current_meta(opctx, &ns);
    let query = query_for(&ns, &filter, Some(sort), Some(1), command.hint.clone());
    for _ in 0..SINGLE_WRITE_ATTEMPTS_MAX {
        let candidate = match &meta {
            Some(meta) => matching_ids(opctx, meta, &query, &command.query)?
                .into_iter()
                .next(),
            None => None,
        };
        let Some(id_key) = candidate else {
            // Nothing matches: an upsert inserts, anything else answers null.
            if let (true, Some(update)) = (command.upsert, &update) {
                let document = upsert(opctx, &ns, &filter, update)?;
                acknowledge(opctx, concern, true)?;
                let id = document.get("_id").cloned().unwrap_or(Bson::Null);
                let value = if command.return_new {
                    project(projection.as_ref(), &document, None)?
                } else {
                    Bson::Null
                };
                return Ok(doc! {
                    "lastErrorObject": {"n": 1, "updatedExisting": false, "upserted": id},
                    "value": value,
                    "ok": 1.0,
                });
            }
            return Ok(
                doc! {"lastErrorObject": {"n": 0, "updatedExisting": false}, "value": Bson::Null, "ok": 1.0},
            );
        };
        let mut check = || opctx.check_interrupt();
        let outcome = if command.remove {
            let (removed, _) = write_conflict_retry(
                &opctx.node.engine,
                retry_options(opctx, &mut check),
                |unit| delete_one_in_unit(opctx, unit, &ns, &id_key, &filter),
            )?;
            removed.map(|(document, position)| -> Result<Document> {
                crate::metrics::add(&opctx.node.metrics.documents_deleted, 1);
                Ok(doc! {
                    "lastErrorObject": {"n": 1},
                    "value": project(projection.as_ref(), &document, position)?,
                    "ok": 1.0,
                })
            })
        } else {
            let update = update.as_ref().ok_or_else(|| {
                Error::new(
                    ErrorCode::FailedToParse,
                    "Either an update or remove=true must be specified",
                )
            })?;
            let (touched, _) = write_conflict_retry(
                &opctx.node.engine,
                retry_options(opctx, &mut check),
                |unit| update_one_in_unit(opctx, unit, &ns, &id_key, &filter, update),
            )?;
            match touched {
                Touched::Gone => None,
                Touched::Updated {
                    modified,
                    before,
                    after,
                } => {
                    if modified {
                        crate::metrics::add(&opctx.node.metrics.documents_updated, 1);
                    }
                    let shown = if command.return_new { &after } else { &before };
                    let position = filter
                        .match_details(&before)?
                        .and_then(|details| details.array_position);
                    Some(Ok(doc! {
                        "lastErrorObject": {"n": 1, "updatedExisting": true},
                        "value": project(projection.as_ref(), shown, position)?,
                        "ok": 1.0,
                    }))
                }
            }
        };
        if let Some(reply) = outcome {
            let reply = reply?;
            acknowledge(opctx, concern, true)?;
            return Ok(reply);
        }
    }
    Err(Error::new(
        ErrorCode::WriteConflict,
        "findAndModify could not find a stable matching document",
    ))
}
