//! Databases, collections and indexes: listDatabases, dropDatabase, create, drop,
//! listCollections, renameCollection, createIndexes, listIndexes, dropIndexes, collStats,
//! dbStats.
//!
//! DDL takes X on the collection (or the database): it waits for, and excludes, the readers and
//! writers of the collection. An index build holds X only to register the index (not ready) and
//! to mark it ready; in between it copies the existing documents under IX while writes go on:
//! every writer that starts after the registration maintains the new index itself, and the
//! build claims each document key before indexing it, so a concurrent writer of that document
//! conflicts and retries instead of leaving a stale entry. No update is lost.

use super::{Request, check_known_fields, type_name};
use crate::cursors::VecSource;
use crate::exec::collection::decode_document;
use crate::opctx::OpCtx;
use bson::{Bson, Document, doc};
use cairn_locking::LockMode;
use cairn_query::commands::{CreateIndexesCommand, DropIndexesCommand, DropTarget, IndexSpec};
use cairn_storage::retry::{RetryOptions, write_conflict_retry};
use cairn_storage::{CollectionMeta, Durability, IndexMeta, ReadAt, ScanDirection};
use cairn_types::{Error, ErrorCode, Namespace, Result};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

fn retry<'a>(opctx: &OpCtx<'_>, check: &'a mut dyn FnMut() -> Result<()>) -> RetryOptions<'a> {
    RetryOptions {
        durability: Durability::Visible,
        deadline: opctx.deadline,
        check_interrupt: check,
        give_up_on_conflict: false,
    }
}

fn id_index_spec() -> Document {
    doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}
}

/// An index as listIndexes shows it.
fn index_spec(index: &IndexMeta) -> Document {
    let mut spec = doc! {"v": 2, "key": index.key.clone(), "name": index.name.clone()};
    if index.unique {
        spec.insert("unique", true);
    }
    for option in [
        "sparse",
        "partialFilterExpression",
        "expireAfterSeconds",
        "collation",
    ] {
        if let Some(value) = index.spec.get(option) {
            spec.insert(option, value.clone());
        }
    }
    spec
}

/// Collection options cairn does not support, refused with a clear error.
const UNSUPPORTED_CREATE_OPTIONS: &[(&str, &str)] = &[
    ("capped", "capped collections"),
    ("size", "capped collections"),
    ("max", "capped collections"),
    ("viewOn", "views"),
    ("pipeline", "views"),
    ("timeseries", "time-series collections"),
    ("expireAfterSeconds", "TTL collections"),
    (
        "clusteredIndex",
        "clustered index options (collections are always clustered by _id)",
    ),
    ("validator", "document validation"),
    ("validationLevel", "document validation"),
    ("validationAction", "document validation"),
    ("collation", "collations"),
    ("changeStreamPreAndPostImages", "change streams"),
    ("encryptedFields", "queryable encryption"),
];

pub(super) fn create(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let ns = request.namespace()?;
    ns.validate()?;
    let mut options = Document::new();
    for (key, value) in request.body.iter().skip(1) {
        if super::GENERIC_FIELDS.contains(&key.as_str()) {
            continue;
        }
        if let Some((_, feature)) = UNSUPPORTED_CREATE_OPTIONS
            .iter()
            .find(|(option, _)| option == key)
        {
            let enabled = !matches!(value, Bson::Boolean(false) | Bson::Null);
            if enabled {
                return Err(Error::new(
                    ErrorCode::CommandNotSupported,
                    format!("cairn does not support {feature} (option '{key}')"),
                ));
            }
            continue;
        }
        match key.as_str() {
            "idIndex" | "storageEngine" | "indexOptionDefaults" | "autoIndexId" | "flags" => {
                options.insert(key.clone(), value.clone());
            }
            other => {
                return Err(Error::new(
                    ErrorCode::Location(40415),
                    format!("BSON field 'create.{other}' is an unknown field."),
                ));
            }
        }
    }
    let _lock = opctx.locker.lock_collection(&ns, LockMode::X)?;
    let mut check = || opctx.check_interrupt();
    write_conflict_retry(&opctx.node.engine, retry(opctx, &mut check), |unit| {
        if let Some(existing) = unit.collection(&ns) {
            // MongoDB: creating an existing collection with the same options succeeds.
            if existing.options == options {
                return Ok(());
            }
            return Err(Error::new(
                ErrorCode::NamespaceExists,
                format!("Collection {ns} already exists."),
            ));
        }
        let meta = unit.create_collection(&ns, options.clone())?;
        super::write::log_command(
            opctx,
            unit,
            &ns.db,
            &meta.uuid,
            doc! {"create": ns.coll.clone()},
        );
        Ok(())
    })?;
    Ok(doc! {"ok": 1.0})
}

pub(super) fn drop(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let ns = request.namespace()?;
    let _lock = opctx.locker.lock_collection(&ns, LockMode::X)?;
    let mut check = || opctx.check_interrupt();
    let (dropped, _) =
        write_conflict_retry(&opctx.node.engine, retry(opctx, &mut check), |unit| {
            if unit.collection(&ns).is_none() {
                return Ok(None);
            }
            let meta = unit.drop_collection(&ns)?;
            super::write::log_command(
                opctx,
                unit,
                &ns.db,
                &meta.uuid,
                doc! {"drop": ns.coll.clone()},
            );
            Ok(Some(meta))
        })?;
    match dropped {
        Some(meta) => {
            tracing::info!(%ns, "dropped collection");
            Ok(
                doc! {"nIndexesWas": (meta.indexes.len() + 1) as i32, "ns": ns.to_string(), "ok": 1.0},
            )
        }
        // MongoDB 7.0+: dropping a collection that does not exist succeeds.
        None => Ok(doc! {"ok": 1.0}),
    }
}

pub(super) fn drop_database(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let db = request.db.clone();
    let _lock = opctx.locker.lock_database(&db, LockMode::X)?;
    let mut check = || opctx.check_interrupt();
    write_conflict_retry(&opctx.node.engine, retry(opctx, &mut check), |unit| {
        let names: Vec<Namespace> = unit
            .snapshot()
            .collections()
            .iter()
            .filter(|meta| meta.ns.db == db)
            .map(|meta| meta.ns.clone())
            .collect();
        for ns in &names {
            let meta = unit.drop_collection(ns)?;
            super::write::log_command(opctx, unit, &db, &meta.uuid, doc! {"drop": ns.coll.clone()});
        }
        Ok(())
    })?;
    tracing::info!(%db, "dropped database");
    Ok(doc! {"dropped": db, "ok": 1.0})
}

/// `(documents, data bytes)` of a collection at the newest snapshot, counted exactly, and the
/// stored bytes of its tables.
pub(crate) fn collection_sizes(
    opctx: &OpCtx<'_>,
    meta: &CollectionMeta,
) -> Result<(u64, u64, u64, BTreeMap<String, u64>)> {
    let snapshot = opctx.node.engine.snapshot(ReadAt::Latest)?;
    let mut documents = 0u64;
    let mut data_bytes = 0u64;
    for entry in snapshot.scan(
        meta.ident,
        (Bound::Unbounded, Bound::Unbounded),
        ScanDirection::Forward,
    )? {
        let (_, value) = entry?;
        documents += 1;
        data_bytes += value.len() as u64;
    }
    let (_, storage_bytes) = snapshot.table_stats(meta.ident)?;
    let mut index_sizes = BTreeMap::new();
    index_sizes.insert("_id_".to_owned(), 0u64);
    for index in &meta.indexes {
        let (_, bytes) = snapshot.table_stats(index.ident)?;
        index_sizes.insert(index.name.clone(), bytes);
    }
    Ok((documents, data_bytes, storage_bytes, index_sizes))
}

pub(super) fn list_databases(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    if request.db != "admin" {
        return Err(Error::new(
            ErrorCode::Unauthorized,
            "listDatabases may only be run against the admin database.",
        ));
    }
    check_known_fields(
        &request.body,
        "listDatabases",
        &["filter", "nameOnly", "authorizedDatabases"],
    )?;
    let name_only =
        super::optional_bool(&request.body, "listDatabases", "nameOnly")?.unwrap_or(false);
    let filter = super::optional_document(&request.body, "listDatabases", "filter")?
        .map(cairn_query::Matcher::parse)
        .transpose()?;
    let _lock = opctx.locker.lock_global(LockMode::IS)?;
    let snapshot = opctx.node.engine.snapshot(ReadAt::Latest)?;
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for meta in snapshot.collections() {
        let mut bytes = 0;
        for ident in meta.idents() {
            bytes += snapshot.table_stats(ident)?.1;
        }
        *sizes.entry(meta.ns.db.clone()).or_default() += bytes;
    }
    let mut databases = Vec::new();
    let mut total = 0u64;
    for (name, bytes) in sizes {
        let entry = if name_only {
            doc! {"name": name}
        } else {
            doc! {"name": name, "sizeOnDisk": bytes.max(4096) as i64, "empty": false}
        };
        if filter
            .as_ref()
            .is_some_and(|filter| !filter.matches(&entry))
        {
            continue;
        }
        total += bytes.max(4096);
        databases.push(Bson::Document(entry));
    }
    let mut reply = doc! {"databases": databases};
    if !name_only {
        reply.insert("totalSize", total as i64);
        reply.insert("totalSizeMb", (total / (1024 * 1024)) as i64);
    }
    reply.insert("ok", 1.0);
    Ok(reply)
}

pub(super) fn list_collections(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    check_known_fields(
        &request.body,
        "listCollections",
        &[
            "filter",
            "nameOnly",
            "authorizedCollections",
            "cursor",
            "includePendingDrops",
        ],
    )?;
    let name_only =
        super::optional_bool(&request.body, "listCollections", "nameOnly")?.unwrap_or(false);
    let filter = super::optional_document(&request.body, "listCollections", "filter")?
        .map(cairn_query::Matcher::parse)
        .transpose()?;
    let batch_size = match super::optional_document(&request.body, "listCollections", "cursor")? {
        Some(cursor) => super::optional_i64(cursor, "listCollections.cursor", "batchSize")?
            .map(|size| size.max(0) as u64),
        None => None,
    };
    let db = request.db.clone();
    let _lock = opctx.locker.lock_database(&db, LockMode::IS)?;
    let mut entries = Vec::new();
    for meta in opctx
        .node
        .engine
        .latest_collections()
        .iter()
        .filter(|meta| meta.ns.db == db)
    {
        let full = doc! {
            "name": meta.ns.coll.clone(),
            "type": "collection",
            "options": meta.options.clone(),
            "info": {"readOnly": false, "uuid": meta.uuid},
            "idIndex": id_index_spec(),
        };
        if filter.as_ref().is_some_and(|filter| !filter.matches(&full)) {
            continue;
        }
        entries.push(if name_only {
            doc! {"name": meta.ns.coll.clone(), "type": "collection"}
        } else {
            full
        });
    }
    let ns = format!("{db}.$cmd.listCollections");
    super::read::first_batch(
        opctx,
        &ns,
        Box::new(VecSource::new(entries)),
        batch_size,
        false,
        false,
    )
}

fn namespace_field(request: &Request, field: &str) -> Result<Namespace> {
    match request.body.get(field) {
        Some(Bson::String(full)) => {
            let ns = Namespace::parse(full)?;
            ns.validate()?;
            Ok(ns)
        }
        Some(other) => Err(Error::new(
            ErrorCode::TypeMismatch,
            format!(
                "BSON field 'renameCollection.{field}' is the wrong type '{}', expected type 'string'",
                type_name(other)
            ),
        )),
        None => Err(Error::new(
            ErrorCode::Location(40414),
            format!("BSON field 'renameCollection.{field}' is missing but a required field"),
        )),
    }
}

pub(super) fn rename_collection(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    check_known_fields(
        &request.body,
        "renameCollection",
        &["to", "dropTarget", "stayTemp"],
    )?;
    let from = namespace_field(request, "renameCollection")?;
    let to = namespace_field(request, "to")?;
    let drop_target =
        super::optional_bool(&request.body, "renameCollection", "dropTarget")?.unwrap_or(false);
    if from.db != to.db {
        return Err(Error::new(
            ErrorCode::CommandNotSupported,
            "cairn does not rename collections across databases",
        ));
    }
    if from == to {
        return Err(Error::new(
            ErrorCode::IllegalOperation,
            "Can't rename a collection to itself",
        ));
    }
    let _lock = opctx.locker.lock_database(&from.db, LockMode::X)?;
    let mut check = || opctx.check_interrupt();
    write_conflict_retry(&opctx.node.engine, retry(opctx, &mut check), |unit| {
        let Some(source) = unit.collection(&from) else {
            return Err(Error::new(
                ErrorCode::NamespaceNotFound,
                "source namespace does not exist",
            ));
        };
        if unit.collection(&to).is_some() {
            if !drop_target {
                return Err(Error::new(
                    ErrorCode::NamespaceExists,
                    "target namespace exists",
                ));
            }
            unit.drop_collection(&to)?;
        }
        unit.rename_collection(&from, &to)?;
        super::write::log_command(
            opctx,
            unit,
            &from.db,
            &source.uuid,
            doc! {"renameCollection": from.to_string(), "to": to.to_string(), "dropTarget": drop_target},
        );
        Ok(())
    })?;
    tracing::info!(%from, %to, "renamed collection");
    Ok(doc! {"ok": 1.0})
}

/// How an existing index relates to a requested one.
fn check_against_existing(meta: &CollectionMeta, spec: &IndexSpec) -> Result<bool> {
    let requested_key = spec.key.source();
    if requested_key == &doc! {"_id": 1} {
        // The clustered _id index always exists.
        return Ok(true);
    }
    if spec.name == "_id_" {
        return Err(Error::new(
            ErrorCode::IndexKeySpecsConflict,
            format!(
                "An existing index has the same name as the requested index. Requested index: {{ v: 2, key: {requested_key}, name: \"_id_\" }}, existing index: {{ v: 2, key: {{ _id: 1 }}, name: \"_id_\" }}"
            ),
        ));
    }
    for existing in &meta.indexes {
        let same_key = &existing.key == requested_key;
        let same_name = existing.name == spec.name;
        let same_options = existing.unique == spec.unique
            && existing.spec.get_bool("sparse").unwrap_or(false) == spec.sparse
            && existing.spec.get_document("partialFilterExpression").ok()
                == spec.partial_filter_expression.as_ref();
        if same_name && same_key && same_options {
            return Ok(true);
        }
        if same_name {
            return Err(Error::new(
                ErrorCode::IndexKeySpecsConflict,
                format!(
                    "An existing index has the same name as the requested index. When index names are not specified, they are auto generated and can cause conflicts. Please refer to our documentation. Requested index: {{ v: 2, key: {requested_key}, name: \"{}\" }}, existing index: {{ v: 2, key: {}, name: \"{}\" }}",
                    spec.name, existing.key, existing.name
                ),
            ));
        }
        if same_key && same_options {
            return Err(Error::new(
                ErrorCode::IndexOptionsConflict,
                format!(
                    "Index already exists with a different name: {}",
                    existing.name
                ),
            ));
        }
    }
    Ok(false)
}

fn spec_document(spec: &IndexSpec) -> Document {
    let mut document = doc! {"v": 2, "key": spec.key.source().clone(), "name": spec.name.clone()};
    if spec.unique {
        document.insert("unique", true);
    }
    if spec.sparse {
        document.insert("sparse", true);
    }
    if let Some(filter) = &spec.partial_filter_expression {
        document.insert("partialFilterExpression", filter.clone());
    }
    document
}

/// Documents indexed per unit of work during a build.
const INDEX_BUILD_BATCH_DOCUMENTS: usize = 256;

/// Copies every existing document into a registered (not yet ready) index.
fn build_index(opctx: &OpCtx<'_>, ns: &Namespace, index_name: &str) -> Result<()> {
    let engine = opctx.node.engine.clone();
    // The _id keys to index, from a snapshot taken after the index was registered: documents
    // written later are indexed by their writers.
    let (ident, id_keys) = {
        let _lock = opctx.locker.lock_collection(ns, LockMode::IS)?;
        let snapshot = engine.snapshot(ReadAt::Latest)?;
        let meta = snapshot.collection(ns).ok_or_else(|| {
            Error::new(
                ErrorCode::QueryPlanKilled,
                "collection dropped during the index build",
            )
        })?;
        let mut keys = Vec::new();
        for entry in snapshot.scan(
            meta.ident,
            (Bound::Unbounded, Bound::Unbounded),
            ScanDirection::Forward,
        )? {
            keys.push(entry?.0);
        }
        (meta.ident, keys)
    };
    let total = id_keys.len() as u64;
    let mut done = 0u64;
    opctx.set_progress(0, total);
    for chunk in id_keys.chunks(INDEX_BUILD_BATCH_DOCUMENTS) {
        opctx.check_interrupt()?;
        let _lock = opctx.locker.lock_collection(ns, LockMode::IX)?;
        let mut check = || opctx.check_interrupt();
        write_conflict_retry(&engine, retry(opctx, &mut check), |unit| {
            let meta = unit.collection(ns).ok_or_else(|| {
                Error::new(
                    ErrorCode::QueryPlanKilled,
                    "collection dropped during the index build",
                )
            })?;
            let mut collection = opctx.node.collections.for_writing(&meta)?;
            let position = collection
                .indexes
                .iter()
                .position(|index| index.meta.name == index_name)
                .ok_or_else(|| {
                    Error::new(
                        ErrorCode::IndexNotFound,
                        format!("index {index_name} was dropped during its build"),
                    )
                })?;
            for id_key in chunk {
                // Claiming the document makes a concurrent writer of it conflict and retry.
                if let Some(bytes) = unit.get_for_update(ident, id_key)? {
                    collection.index_document(unit, position, &decode_document(&bytes)?)?;
                }
            }
            collection.save_catalog(unit)
        })?;
        done += chunk.len() as u64;
        opctx.set_progress(done, total);
    }
    Ok(())
}

/// Removes a failed build's index from the catalog.
fn abandon_index(opctx: &OpCtx<'_>, ns: &Namespace, index_name: &str) -> Result<()> {
    let _lock = opctx.locker.lock_collection(ns, LockMode::X)?;
    let mut check = || Ok(());
    write_conflict_retry(&opctx.node.engine, retry(opctx, &mut check), |unit| {
        let Some(meta) = unit.collection(ns) else {
            return Ok(());
        };
        let mut meta = (*meta).clone();
        if let Some(position) = meta
            .indexes
            .iter()
            .position(|index| index.name == index_name)
        {
            let removed = meta.indexes.remove(position);
            unit.update_collection(meta)?;
            unit.drop_ident(removed.ident);
        }
        Ok(())
    })?;
    Ok(())
}

pub(super) fn create_indexes(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let command = CreateIndexesCommand::parse(&request.body)?;
    let ns = Namespace::new(request.db.clone(), command.collection.clone());
    ns.validate()?;
    let created_collection = super::write::ensure_collection(opctx, &ns)?;
    // Register every new index, not ready, under X.
    let (before, to_build) = {
        let _lock = opctx.locker.lock_collection(&ns, LockMode::X)?;
        let mut check = || opctx.check_interrupt();
        let (result, _) =
            write_conflict_retry(&opctx.node.engine, retry(opctx, &mut check), |unit| {
                let meta = unit.collection(&ns).ok_or_else(|| {
                    Error::new(
                        ErrorCode::NamespaceNotFound,
                        format!("ns does not exist: {ns}"),
                    )
                })?;
                let before = meta.indexes.len() + 1;
                let mut updated = (*meta).clone();
                let mut to_build = Vec::new();
                for spec in &command.indexes {
                    if check_against_existing(&updated, spec)? {
                        continue;
                    }
                    let ident = unit.allocate_ident();
                    updated.indexes.push(IndexMeta {
                        name: spec.name.clone(),
                        key: spec.key.source().clone(),
                        unique: spec.unique,
                        ident,
                        ready: false,
                        multikey_paths: Vec::new(),
                        spec: spec_document(spec),
                    });
                    to_build.push(spec.name.clone());
                }
                if !to_build.is_empty() {
                    unit.update_collection(updated)?;
                }
                Ok((before, to_build))
            })?;
        result
    };
    if to_build.is_empty() {
        return Ok(doc! {
            "numIndexesBefore": before as i32,
            "numIndexesAfter": before as i32,
            "note": "all indexes already exist",
            "createdCollectionAutomatically": created_collection,
            "ok": 1.0,
        });
    }
    // Copy the documents in, while writes go on.
    for name in &to_build {
        if let Err(error) = build_index(opctx, &ns, name) {
            for abandoned in &to_build {
                abandon_index(opctx, &ns, abandoned)?;
            }
            tracing::info!(%ns, index = %name, %error, "index build failed");
            return Err(error);
        }
    }
    // Mark them ready, under X.
    let after = {
        let _lock = opctx.locker.lock_collection(&ns, LockMode::X)?;
        let mut check = || opctx.check_interrupt();
        let (after, _) =
            write_conflict_retry(&opctx.node.engine, retry(opctx, &mut check), |unit| {
                let meta = unit.collection(&ns).ok_or_else(|| {
                    Error::new(
                        ErrorCode::QueryPlanKilled,
                        "collection dropped during the index build",
                    )
                })?;
                let mut updated = (*meta).clone();
                for index in &mut updated.indexes {
                    if to_build.contains(&index.name) {
                        index.ready = true;
                    }
                }
                let after = updated.indexes.len() + 1;
                unit.update_collection(updated)?;
                for spec in command
                    .indexes
                    .iter()
                    .filter(|spec| to_build.contains(&spec.name))
                {
                    let mut object = doc! {"createIndexes": ns.coll.clone()};
                    object.extend(spec_document(spec));
                    super::write::log_command(opctx, unit, &ns.db, &meta.uuid, object);
                }
                Ok(after)
            })?;
        after
    };
    tracing::info!(%ns, indexes = ?to_build, "index build complete");
    Ok(doc! {
        "numIndexesBefore": before as i32,
        "numIndexesAfter": after as i32,
        "createdCollectionAutomatically": created_collection,
        "ok": 1.0,
    })
}

pub(super) fn list_indexes(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    check_known_fields(
        &request.body,
        "listIndexes",
        &["cursor", "includeBuildUUIDs", "includeIndexBuildInfo"],
    )?;
    let ns = request.namespace()?;
    let batch_size = match super::optional_document(&request.body, "listIndexes", "cursor")? {
        Some(cursor) => super::optional_i64(cursor, "listIndexes.cursor", "batchSize")?
            .map(|size| size.max(0) as u64),
        None => None,
    };
    let _lock = opctx.locker.lock_collection(&ns, LockMode::IS)?;
    let Some(meta) = opctx.node.engine.latest_collection(&ns) else {
        return Err(Error::new(
            ErrorCode::NamespaceNotFound,
            format!("ns does not exist: {ns}"),
        ));
    };
    let mut specs = vec![id_index_spec()];
    specs.extend(
        meta.indexes
            .iter()
            .filter(|index| index.ready)
            .map(index_spec),
    );
    super::read::first_batch(
        opctx,
        &ns.to_string(),
        Box::new(VecSource::new(specs)),
        batch_size,
        false,
        false,
    )
}

pub(super) fn drop_indexes(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let mut body = request.body.clone();
    if request.name == "deleteIndexes" {
        // The old name of dropIndexes.
        let target = request.target().clone();
        let mut renamed = doc! {"dropIndexes": target};
        renamed.extend(
            body.iter()
                .skip(1)
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        body = renamed;
    }
    let command = DropIndexesCommand::parse(&body)?;
    let ns = Namespace::new(request.db.clone(), command.collection.clone());
    let _lock = opctx.locker.lock_collection(&ns, LockMode::X)?;
    let mut check = || opctx.check_interrupt();
    let (was, _) = write_conflict_retry(&opctx.node.engine, retry(opctx, &mut check), |unit| {
        let meta = unit.collection(&ns).ok_or_else(|| {
            Error::new(ErrorCode::NamespaceNotFound, format!("ns not found {ns}"))
        })?;
        let was = meta.indexes.len() + 1;
        let mut updated = (*meta).clone();
        let find = |updated: &CollectionMeta,
                    matches: &dyn Fn(&IndexMeta) -> bool,
                    shown: String|
         -> Result<usize> {
            updated.indexes.iter().position(matches).ok_or_else(|| {
                Error::new(
                    ErrorCode::IndexNotFound,
                    format!("index not found with name [{shown}]"),
                )
            })
        };
        let mut positions = Vec::new();
        match &command.target {
            DropTarget::All => positions.extend(0..updated.indexes.len()),
            DropTarget::Name(name) => {
                if name == "_id_" {
                    return Err(Error::new(
                        ErrorCode::InvalidOptions,
                        "cannot drop _id index",
                    ));
                }
                positions.push(find(&updated, &|index| &index.name == name, name.clone())?);
            }
            DropTarget::Names(names) => {
                for name in names {
                    if name == "_id_" {
                        return Err(Error::new(
                            ErrorCode::InvalidOptions,
                            "cannot drop _id index",
                        ));
                    }
                    positions.push(find(&updated, &|index| &index.name == name, name.clone())?);
                }
            }
            DropTarget::KeyPattern(key) => {
                if key == &doc! {"_id": 1} {
                    return Err(Error::new(
                        ErrorCode::InvalidOptions,
                        "cannot drop _id index",
                    ));
                }
                positions.push(find(&updated, &|index| &index.key == key, key.to_string())?);
            }
        }
        positions.sort_unstable();
        positions.dedup();
        for position in positions.into_iter().rev() {
            let removed = updated.indexes.remove(position);
            unit.drop_ident(removed.ident);
        }
        let uuid = updated.uuid;
        unit.update_collection(updated)?;
        super::write::log_command(
            opctx,
            unit,
            &ns.db,
            &uuid,
            doc! {"dropIndexes": ns.coll.clone()},
        );
        Ok(was)
    })?;
    Ok(doc! {"nIndexesWas": was as i32, "ok": 1.0})
}

pub(super) fn coll_stats(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let ns = request.namespace()?;
    let _lock = opctx.locker.lock_collection(&ns, LockMode::IS)?;
    let Some(meta) = opctx.node.engine.latest_collection(&ns) else {
        return Err(Error::new(
            ErrorCode::NamespaceNotFound,
            format!("Collection [{ns}] not found."),
        ));
    };
    let (count, size, storage, index_sizes) = collection_sizes(opctx, &meta)?;
    let total_index: u64 = index_sizes.values().sum();
    let mut sizes = Document::new();
    for (name, bytes) in index_sizes {
        sizes.insert(name, bytes as i64);
    }
    Ok(doc! {
        "ns": ns.to_string(),
        "count": count as i64,
        "size": size as i64,
        "avgObjSize": size.checked_div(count).unwrap_or(0) as i64,
        "storageSize": storage as i64,
        "nindexes": (meta.indexes.len() + 1) as i32,
        "totalIndexSize": total_index as i64,
        "indexSizes": sizes,
        "totalSize": (storage + total_index) as i64,
        "scaleFactor": 1,
        "ok": 1.0,
    })
}

pub(super) fn db_stats(opctx: &mut OpCtx<'_>, request: &Request) -> Result<Document> {
    let db = request.db.clone();
    let _lock = opctx.locker.lock_database(&db, LockMode::IS)?;
    let collections: Vec<Arc<CollectionMeta>> = opctx
        .node
        .engine
        .latest_collections()
        .into_iter()
        .filter(|meta| meta.ns.db == db)
        .collect();
    let (mut objects, mut data, mut storage, mut indexes, mut index_bytes) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for meta in &collections {
        let (count, size, stored, index_sizes) = collection_sizes(opctx, meta)?;
        objects += count;
        data += size;
        storage += stored;
        indexes += index_sizes.len() as u64;
        index_bytes += index_sizes.values().sum::<u64>();
    }
    Ok(doc! {
        "db": db,
        "collections": collections.len() as i32,
        "views": 0,
        "objects": objects as i64,
        "avgObjSize": if objects == 0 { 0.0 } else { data as f64 / objects as f64 },
        "dataSize": data as i64,
        "storageSize": storage as i64,
        "indexes": indexes as i64,
        "indexSize": index_bytes as i64,
        "totalSize": (storage + index_bytes) as i64,
        "scaleFactor": 1,
        "ok": 1.0,
    })
}
