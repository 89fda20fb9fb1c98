//! Reads: find, getMore, killCursors, count, distinct, aggregate, explain.
//!
//! Every read takes IS on its collection, opens one snapshot, plans over the collection's ready
//! indexes and runs the plan with yielding. A missing collection reads as empty. Results that do
//! not fit the first batch stay in a server cursor for getMore.

use super::{Request, type_name};
use crate::cursors::{CursorSource, VecSource};
use crate::exec::collection::Collection;
use crate::exec::plan::{FIRST_BATCH_DOCUMENTS_DEFAULT, PlanExecutor, Target};
use crate::opctx::OpCtx;
use bson::{Bson, Document, doc};
use cairn_locking::LockMode;
use cairn_query::Matcher;
use cairn_query::agg::pipeline::{Pipeline, PipelineSource};
use cairn_query::commands::{
    AggregateCommand, CountCommand, DistinctCommand, ExplainCommand, FindCommand,
};
use cairn_query::planner::{
    CanonicalQuery, ExecutionSummary, PlannedQuery, StageName, Verbosity, plan,
};
use cairn_storage::{CollectionMeta, Engine, ReadAt, Snapshot};
use cairn_types::{Error, ErrorCode, Namespace, Result, Timestamp};
use std::sync::Arc;
use std::time::Instant;

/// The reply of a command that opens a cursor.
pub(crate) fn cursor_reply(ns: &str, id: i64, batch: Vec<Document>, first: bool) -> Document {
    let field = if first { "firstBatch" } else { "nextBatch" };
    doc! {
        "cursor": {field: batch, "id": id, "ns": ns},
        "ok": 1.0,
    }
}

/// Returns the first batch and keeps the rest in a cursor.
pub(crate) fn first_batch(
    opctx: &OpCtx<'_>,
    ns: &str,
    mut source: Box<dyn CursorSource>,
    batch_size: Option<u64>,
    single_batch: bool,
    no_timeout: bool,
) -> Result<Document> {
    let (batch, exhausted) = source.next_batch(opctx, batch_size)?;
    let id = if exhausted || single_batch {
        0
    } else {
        crate::metrics::add(&opctx.node.metrics.cursors_opened, 1);
        opctx
            .node
            .cursors
            .register(ns.to_owned(), source, no_timeout)
    };
    Ok(cursor_reply(ns, id, batch, true))
}

/// A planned read of one collection.
pub(crate) struct PlannedRead {
    pub planned: PlannedQuery,
    pub executor: Option<PlanExecutor>,
}

/// Plans `query` over the collection at `ns` as of `snapshot` (no executor when the collection
/// does not exist).
pub(crate) fn plan_read(
    node: &crate::node::NodeInner,
    snapshot: &Snapshot,
    ns: &Namespace,
    query: &CanonicalQuery,
    allow_disk_use: bool,
) -> Result<PlannedRead> {
    let meta = snapshot.collection(ns);
    let descriptors = match &meta {
        Some(meta) => node.collections.get(meta)?.descriptors(),
        None => Collection::load(&empty_meta(ns))?.descriptors(),
    };
    let planned = plan(query, &descriptors)?;
    let executor = match meta {
        Some(meta) => Some(executor_for(
            &node.engine,
            &meta,
            snapshot.read_timestamp(),
            &planned,
            &query.filter,
            allow_disk_use,
        )?),
        None => None,
    };
    Ok(PlannedRead { planned, executor })
}

fn empty_meta(ns: &Namespace) -> CollectionMeta {
    CollectionMeta {
        ns: ns.clone(),
        uuid: bson::Uuid::from_bytes([0; 16]),
        ident: 0,
        options: Document::new(),
        indexes: Vec::new(),
    }
}

fn executor_for(
    engine: &Engine,
    meta: &Arc<CollectionMeta>,
    read_ts: Timestamp,
    planned: &PlannedQuery,
    filter: &Matcher,
    allow_disk_use: bool,
) -> Result<PlanExecutor> {
    let target = Target {
        ns: meta.ns.clone(),
        uuid: meta.uuid,
        ident: meta.ident,
    };
    let idents = |name: &str| meta.index(name).map(|index| index.ident);
    PlanExecutor::new(
        engine.clone(),
        target,
        read_ts,
        &planned.winning,
        filter,
        allow_disk_use,
        &idents,
    )
}

pub(crate) fn find(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let command = FindCommand::parse(&request.body)?;
    let ns = Namespace::new(request.db.clone(), command.collection.clone());
    ns.validate().or_else(|error| {
        if ns.is_system() || ns.db == "local" {
            Ok(())
        } else {
            Err(error)
        }
    })?;
    let query = command.to_query(&request.db)?;
    let engine = opctx.node.engine.clone();
    if let Some(key) = express_key(&command, &query) {
        return express_find(opctx, &ns, &key, query.projection.as_ref());
    }
    opctx.require_blocking("the query needs a plan")?;
    let read = {
        let _lock = opctx.locker.lock_collection(&ns, LockMode::IS)?;
        let snapshot = engine.snapshot(ReadAt::Latest)?;
        plan_read(opctx.node, &snapshot, &ns, &query, command.allow_disk_use)?
    };
    let ns_text = ns.to_string();
    let Some(executor) = read.executor else {
        return Ok(cursor_reply(&ns_text, 0, Vec::new(), true));
    };
    opctx.set_plan_summary(executor.summary().to_owned());
    let first = command.batch_size.unwrap_or(FIRST_BATCH_DOCUMENTS_DEFAULT);
    first_batch(
        opctx,
        &ns_text,
        Box::new(executor),
        Some(first),
        command.single_batch,
        command.no_cursor_timeout,
    )
}

/// The `_id` key of a find that the express path answers: a plain `{_id: value}` filter, no
/// sort, skip or hint, no positional projection, and a first batch that is not empty.
fn express_key(command: &FindCommand, query: &CanonicalQuery) -> Option<Vec<u8>> {
    let plain = command.sort.as_ref().is_none_or(Document::is_empty)
        && command.skip == 0
        && command.hint.is_none()
        && command.batch_size != Some(0)
        && command.let_variables.is_none()
        && !query
            .projection
            .as_ref()
            .is_some_and(|projection| projection.uses_positional());
    if plain {
        crate::exec::collection::id_equality_key(&command.filter)
    } else {
        None
    }
}

/// Reads one document by `_id` key without planning (MongoDB's IDHACK / EXPRESS_IXSCAN).
fn express_find(
    opctx: &OpCtx<'_>,
    ns: &Namespace,
    key: &[u8],
    projection: Option<&cairn_query::projection::Projection>,
) -> Result<Document> {
    opctx.set_plan_summary(crate::exec::plan::EXPRESS_PLAN_SUMMARY.to_owned());
    let _lock = opctx.locker.lock_collection(ns, LockMode::IS)?;
    let snapshot = opctx.node.engine.snapshot(ReadAt::Latest)?;
    let ns_text = ns.to_string();
    let Some(meta) = snapshot.collection(ns) else {
        return Ok(cursor_reply(&ns_text, 0, Vec::new(), true));
    };
    let metrics = &opctx.node.metrics;
    crate::metrics::add(&metrics.keys_examined, 1);
    let batch = match crate::exec::collection::fetch(&snapshot, meta.ident, key)? {
        Some(document) => {
            crate::metrics::add(&metrics.docs_examined, 1);
            crate::metrics::add(&metrics.documents_returned, 1);
            vec![match projection {
                Some(projection) => projection.apply(&document, None)?,
                None => document,
            }]
        }
        None => Vec::new(),
    };
    Ok(cursor_reply(&ns_text, 0, batch, true))
}

pub(crate) fn get_more(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    super::check_known_fields(
        &request.body,
        "getMore",
        &[
            "collection",
            "batchSize",
            "term",
            "lastKnownCommittedOpTime",
        ],
    )?;
    let id = match request.target() {
        Bson::Int64(id) => *id,
        other => {
            return Err(Error::new(
                ErrorCode::TypeMismatch,
                format!(
                    "BSON field 'getMore.getMore' is the wrong type '{}', expected type 'long'",
                    type_name(other)
                ),
            ));
        }
    };
    let collection = match request.body.get("collection") {
        Some(Bson::String(collection)) => collection.clone(),
        Some(other) => {
            return Err(Error::new(
                ErrorCode::TypeMismatch,
                format!(
                    "BSON field 'getMore.collection' is the wrong type '{}', expected type 'string'",
                    type_name(other)
                ),
            ));
        }
        None => {
            return Err(Error::new(
                ErrorCode::Location(40414),
                "BSON field 'getMore.collection' is missing but a required field",
            ));
        }
    };
    let batch_size = match super::optional_i64(&request.body, "getMore", "batchSize")? {
        Some(size) if size < 0 => {
            return Err(Error::new(
                ErrorCode::BadValue,
                format!("Batch size for getMore must be non-negative, but received: {size}"),
            ));
        }
        Some(0) | None => None,
        Some(size) => Some(size as u64),
    };
    let ns = format!("{}.{collection}", request.db);
    let mut source = opctx.node.cursors.check_out(id, &ns)?;
    if let Some(summary) = source.plan_summary() {
        opctx.set_plan_summary(summary);
    }
    match source.next_batch(opctx, batch_size) {
        Ok((batch, exhausted)) => {
            if exhausted {
                opctx.node.cursors.remove(id);
                Ok(cursor_reply(&ns, 0, batch, false))
            } else {
                opctx.node.cursors.check_in(id, source);
                Ok(cursor_reply(&ns, id, batch, false))
            }
        }
        Err(error) => {
            opctx.node.cursors.remove(id);
            Err(error)
        }
    }
}

pub(crate) fn kill_cursors(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let ns = request.namespace()?;
    let ids = match request.body.get("cursors") {
        Some(Bson::Array(ids)) => ids
            .iter()
            .map(|id| match id {
                Bson::Int64(id) => Ok(*id),
                Bson::Int32(id) => Ok(*id as i64),
                other => Err(Error::new(
                    ErrorCode::TypeMismatch,
                    format!("BSON field 'killCursors.cursors' contains a value of type '{}', expected type 'long'", type_name(other)),
                )),
            })
            .collect::<Result<Vec<_>>>()?,
        Some(other) => {
            return Err(Error::new(
                ErrorCode::TypeMismatch,
                format!("BSON field 'killCursors.cursors' is the wrong type '{}', expected type 'array'", type_name(other)),
            ));
        }
        None => return Err(Error::new(ErrorCode::Location(40414), "BSON field 'killCursors.cursors' is missing but a required field")),
    };
    let outcome = opctx.node.cursors.kill(&ns.to_string(), &ids);
    Ok(doc! {
        "cursorsKilled": outcome.killed,
        "cursorsNotFound": outcome.not_found,
        "cursorsAlive": outcome.alive,
        "cursorsUnknown": Vec::<i64>::new(),
        "ok": 1.0,
    })
}

/// Runs a read to the end under IS, returning every result and the executor's counters.
fn run_to_end(
    opctx: &OpCtx<'_>,
    ns: &Namespace,
    query: &CanonicalQuery,
) -> Result<(Vec<Document>, Option<PlanExecutor>, PlannedQuery)> {
    let engine = opctx.node.engine.clone();
    let _lock = opctx.locker.lock_collection(ns, LockMode::IS)?;
    let snapshot = engine.snapshot(ReadAt::Latest)?;
    let read = plan_read(opctx.node, &snapshot, ns, query, false)?;
    drop(snapshot);
    let mut executor = read.executor;
    let results = match executor.as_mut() {
        Some(executor) => {
            opctx.set_plan_summary(executor.summary().to_owned());
            executor.collect_all(Some(&opctx.locker))?
        }
        None => Vec::new(),
    };
    Ok((results, executor, read.planned))
}

pub(crate) fn count(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let command = CountCommand::parse(&request.body)?;
    let ns = Namespace::new(request.db.clone(), command.collection.clone());
    let query = command.to_query(&request.db)?;
    let (results, _, _) = run_to_end(opctx, &ns, &query)?;
    Ok(doc! {"n": super::write::count_value(results.len() as u64), "ok": 1.0})
}

pub(crate) fn distinct(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let command = DistinctCommand::parse(&request.body)?;
    let ns = Namespace::new(request.db.clone(), command.collection.clone());
    let query = command.to_query(&request.db)?;
    let (results, _, _) = run_to_end(opctx, &ns, &query)?;
    let values = cairn_query::agg::pipeline::distinct_values(results.iter(), &command.key);
    Ok(doc! {"values": values, "ok": 1.0})
}

/// `$lookup`'s reads: other collections of the database, at the aggregation's read timestamp,
/// under the locks the aggregation took at its start.
struct LookupSource<'a> {
    node: &'a crate::node::NodeInner,
    db: &'a str,
    read_ts: Timestamp,
}

impl PipelineSource for LookupSource<'_> {
    fn find(&mut self, collection: &str, filter: &Document) -> Result<Vec<Document>> {
        let ns = Namespace::new(self.db, collection);
        let snapshot = match self.node.engine.snapshot(ReadAt::Timestamp(self.read_ts)) {
            Ok(snapshot) => snapshot,
            Err(error) if error.code == ErrorCode::SnapshotTooOld => {
                self.node.engine.snapshot(ReadAt::Latest)?
            }
            Err(error) => return Err(error),
        };
        let query = CanonicalQuery::new(&ns.to_string(), Matcher::parse(filter)?);
        let read = plan_read(self.node, &snapshot, &ns, &query, false)?;
        drop(snapshot);
        match read.executor {
            Some(mut executor) => executor.collect_all(None),
            None => Ok(Vec::new()),
        }
    }
}

/// Plans the aggregation's input from the pipeline's leading `$match`/`$sort`/`$limit`.
fn aggregation_input(
    ns: &Namespace,
    pipeline: &Pipeline,
    command: &AggregateCommand,
) -> Result<(CanonicalQuery, usize)> {
    let pushdown = pipeline.pushdown();
    let mut query = CanonicalQuery::new(&ns.to_string(), Matcher::parse(&pushdown.filter)?);
    if let Some(sort) = pushdown.sort {
        query.sort = sort;
    }
    query.limit = pushdown.limit;
    query.hint = command.hint.clone();
    Ok((query, pushdown.stages_consumed))
}

/// The documents a leading `$currentOp` or `$collStats` stage produces, if the pipeline starts
/// with one (these stages read the server, not a collection).
fn server_source(
    opctx: &OpCtx<'_>,
    request: &Request,
    command: &AggregateCommand,
) -> Result<Option<Vec<Document>>> {
    let Some(Bson::Document(first)) = command.pipeline.first() else {
        return Ok(None);
    };
    let Some((name, Bson::Document(options))) = first.iter().next() else {
        return Ok(None);
    };
    match name.as_str() {
        "$currentOp" => {
            if request.db != "admin" || command.collection.is_some() {
                return Err(Error::new(
                    ErrorCode::InvalidNamespace,
                    "$currentOp must be run against the 'admin' database with {aggregate: 1}",
                ));
            }
            let include_all = options.get_bool("idleConnections").unwrap_or(false)
                || options.get_bool("idleCursors").unwrap_or(false);
            Ok(Some(super::admin::current_op_entries(opctx, include_all)?))
        }
        "$collStats" => {
            let collection = command.collection.clone().ok_or_else(|| {
                Error::new(ErrorCode::InvalidNamespace, "$collStats needs a collection")
            })?;
            let ns = Namespace::new(request.db.clone(), collection);
            let _lock = opctx.locker.lock_collection(&ns, LockMode::IS)?;
            let Some(meta) = opctx.node.engine.latest_collection(&ns) else {
                return Err(Error::new(
                    ErrorCode::NamespaceNotFound,
                    format!("Unable to find collection {ns}"),
                ));
            };
            let (count, size, storage, index_sizes) = super::ddl::collection_sizes(opctx, &meta)?;
            let mut stats = doc! {
                "ns": ns.to_string(),
                "host": super::basic::hostname(),
                "localTime": bson::DateTime::from_millis(opctx.node.clock.wall_ms()),
            };
            if options.contains_key("storageStats") {
                let mut sizes = Document::new();
                for (name, bytes) in &index_sizes {
                    sizes.insert(name.clone(), *bytes as i64);
                }
                let total_index: u64 = index_sizes.values().sum();
                stats.insert(
                    "storageStats",
                    doc! {
                        "size": size as i64,
                        "count": count as i64,
                        "avgObjSize": size.checked_div(count).unwrap_or(0) as i64,
                        "storageSize": storage as i64,
                        "freeStorageSize": 0i64,
                        "capped": false,
                        "nindexes": (meta.indexes.len() + 1) as i32,
                        "indexSizes": sizes,
                        "totalIndexSize": total_index as i64,
                        "totalSize": (storage + total_index) as i64,
                        "scaleFactor": 1,
                    },
                );
            }
            if options.contains_key("count") {
                stats.insert("count", count as i64);
            }
            if options.contains_key("latencyStats") {
                let zero = doc! {"latency": 0i64, "ops": 0i64};
                stats.insert("latencyStats", doc! {"reads": zero.clone(), "writes": zero.clone(), "commands": zero.clone(), "transactions": zero});
            }
            Ok(Some(vec![stats]))
        }
        _ => Ok(None),
    }
}

pub(crate) fn aggregate(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let mut command = AggregateCommand::parse(&request.body)?;
    if let Some(source) = server_source(opctx, request, &command)? {
        // The rest of the pipeline runs over what the server stage produced.
        command.pipeline.remove(0);
        let pipeline = command.to_pipeline()?;
        let mut lookups = LookupSource {
            node: opctx.node,
            db: &request.db,
            read_ts: opctx.node.engine.visible_timestamp(),
        };
        let results: Vec<Document> = pipeline
            .execute(0, Box::new(source.into_iter().map(Ok)), &mut lookups)
            .collect::<Result<_>>()?;
        let ns = match &command.collection {
            Some(collection) => format!("{}.{collection}", request.db),
            None => format!("{}.$cmd.aggregate", request.db),
        };
        return first_batch(
            opctx,
            &ns,
            Box::new(VecSource::new(results)),
            command.batch_size.or(Some(FIRST_BATCH_DOCUMENTS_DEFAULT)),
            false,
            false,
        );
    }
    let pipeline = command.to_pipeline()?;
    let Some(collection) = command.collection.clone() else {
        return Err(Error::new(
            ErrorCode::InvalidNamespace,
            "{aggregate: 1} is not supported by cairn: name a collection",
        ));
    };
    let ns = Namespace::new(request.db.clone(), collection);
    let (query, consumed) = aggregation_input(&ns, &pipeline, &command)?;
    let engine = opctx.node.engine.clone();
    // IS on the collection and on every collection $lookup reads, taken up front.
    let _lock = opctx.locker.lock_collection(&ns, LockMode::IS)?;
    let mut foreign_locks = Vec::new();
    for foreign in &pipeline.sources {
        if let Ok(name) = foreign.get_str("coll").or_else(|_| foreign.get_str("from")) {
            foreign_locks.push(
                opctx
                    .locker
                    .lock_collection(&Namespace::new(request.db.clone(), name), LockMode::IS)?,
            );
        }
    }
    let snapshot = engine.snapshot(ReadAt::Latest)?;
    let read_ts = snapshot.read_timestamp();
    let read = plan_read(opctx.node, &snapshot, &ns, &query, command.allow_disk_use)?;
    drop(snapshot);
    if command.explain {
        let mut explain = read.planned.explain(Verbosity::QueryPlanner, None);
        explain.insert("pipeline", pipeline_stages(&request.body));
        explain.insert("ok", 1.0);
        return Ok(explain);
    }
    let mut executor = read.executor;
    if let Some(executor) = &executor {
        opctx.set_plan_summary(executor.summary().to_owned());
    }
    let locker = &opctx.locker;
    let input: Box<dyn Iterator<Item = Result<Document>>> = match executor.as_mut() {
        Some(executor) => Box::new(ExecutorStream {
            executor,
            locker,
            buffer: std::collections::VecDeque::new(),
            failed: false,
        }),
        None => Box::new(std::iter::empty()),
    };
    let mut source = LookupSource {
        node: opctx.node,
        db: &request.db,
        read_ts,
    };
    let results: Vec<Document> = pipeline
        .execute(consumed, input, &mut source)
        .collect::<Result<_>>()?;
    drop(foreign_locks);
    let ns_text = ns.to_string();
    first_batch(
        opctx,
        &ns_text,
        Box::new(VecSource::new(results)),
        command.batch_size.or(Some(FIRST_BATCH_DOCUMENTS_DEFAULT)),
        false,
        false,
    )
}

fn pipeline_stages(body: &Document) -> Bson {
    body.get("pipeline")
        .cloned()
        .unwrap_or(Bson::Array(Vec::new()))
}

/// An executor as an iterator of documents, pulling batches (with yields) as needed.
struct ExecutorStream<'a> {
    executor: &'a mut PlanExecutor,
    locker: &'a cairn_locking::Locker,
    buffer: std::collections::VecDeque<Document>,
    failed: bool,
}

/// Documents pulled from the plan per batch while feeding a pipeline.
const PIPELINE_INPUT_BATCH_DOCUMENTS: u64 = 1024;

impl Iterator for ExecutorStream<'_> {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(document) = self.buffer.pop_front() {
                return Some(Ok(document));
            }
            if self.executor.is_exhausted() {
                return None;
            }
            match self
                .executor
                .next_batch_with(Some(self.locker), PIPELINE_INPUT_BATCH_DOCUMENTS)
            {
                Ok(batch) => self.buffer.extend(batch),
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

pub(crate) fn explain(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let command = ExplainCommand::parse(&request.body)?;
    let inner = &command.command;
    let started = Instant::now();
    let (ns, query, allow_disk_use) = match command.command_name() {
        "find" => {
            let find = FindCommand::parse(inner)?;
            (
                Namespace::new(request.db.clone(), find.collection.clone()),
                find.to_query(&request.db)?,
                find.allow_disk_use,
            )
        }
        "count" => {
            let count = CountCommand::parse(inner)?;
            (
                Namespace::new(request.db.clone(), count.collection.clone()),
                count.to_query(&request.db)?,
                false,
            )
        }
        "distinct" => {
            let distinct = DistinctCommand::parse(inner)?;
            (
                Namespace::new(request.db.clone(), distinct.collection.clone()),
                distinct.to_query(&request.db)?,
                false,
            )
        }
        "aggregate" => {
            let aggregate = AggregateCommand::parse(inner)?;
            let pipeline = aggregate.to_pipeline()?;
            let collection = aggregate.collection.clone().ok_or_else(|| {
                Error::new(
                    ErrorCode::InvalidNamespace,
                    "{aggregate: 1} is not supported by cairn: name a collection",
                )
            })?;
            let ns = Namespace::new(request.db.clone(), collection);
            let (query, _) = aggregation_input(&ns, &pipeline, &aggregate)?;
            (ns, query, aggregate.allow_disk_use)
        }
        other => {
            return Err(Error::new(
                ErrorCode::CommandNotSupported,
                format!(
                    "explain of {other} is not supported by cairn (find, count, distinct and aggregate are)"
                ),
            ));
        }
    };
    let engine = opctx.node.engine.clone();
    let _lock = opctx.locker.lock_collection(&ns, LockMode::IS)?;
    let snapshot = engine.snapshot(ReadAt::Latest)?;
    let mut read = plan_read(opctx.node, &snapshot, &ns, &query, allow_disk_use)?;
    drop(snapshot);
    let summary = if command.verbosity == Verbosity::QueryPlanner {
        None
    } else {
        let (returned, stats) = match read.executor.as_mut() {
            Some(executor) => {
                let results = executor.collect_all(Some(&opctx.locker))?;
                (results.len() as u64, executor.stats)
            }
            None => (0, crate::exec::plan::ExecStats::default()),
        };
        let winning = &mut read.planned.winning;
        if let Some(stage) = winning.stats_mut(StageName::IxScan) {
            stage.keys_examined = stats.keys_examined;
        }
        if let Some(stage) = winning.stats_mut(StageName::Fetch) {
            stage.docs_examined = stats.docs_examined;
        }
        if let Some(stage) = winning.stats_mut(StageName::CollScan) {
            stage.docs_examined = stats.docs_examined;
        }
        Some(ExecutionSummary {
            n_returned: returned,
            execution_time_millis: started.elapsed().as_millis() as u64,
            num_yields: stats.yields,
        })
    };
    let mut reply = read.planned.explain(command.verbosity, summary.as_ref());
    reply.insert("command", inner.clone());
    reply.insert(
        "serverInfo",
        doc! {
            "host": super::basic::hostname(),
            "port": opctx.node.config.port as i32,
            "version": crate::node::MONGODB_COMPATIBLE_VERSION,
        },
    );
    reply.insert("ok", 1.0);
    Ok(reply)
}
