//! Pure parsers for the CRUD and index command documents, with MongoDB's IDL rules:
//! unknown fields are `Location40415` ("BSON field 'find.foo' is an unknown field."), wrong
//! types are TypeMismatch (14) ("BSON field 'find.limit' is the wrong type 'string', expected
//! types '[long, int, decimal, double]'"), missing required fields `Location40414`, negative
//! counts `Location51024` ("BSON field 'limit' value must be >= 0, actual value '-1'").
//!
//! Generic arguments every command may carry (`$db`, `lsid`, `txnNumber`, `readConcern`,
//! `writeConcern`, `$readPreference`, `$clusterTime`, `comment`, API version fields, ...) are
//! accepted and left to the server. The parsers validate shapes only; filters, updates,
//! projections and pipelines are parsed by the `to_*` helpers (so that a caller may report
//! them as per-statement write errors).
//!
//! Drivers turn a negative `limit` into `limit: n, singleBatch: true` before sending; the find
//! command itself refuses a negative limit, as MongoDB's does.

use crate::agg::pipeline::{AggregateOptions, Pipeline};
use crate::index_keys::KeyPattern;
use crate::matcher::Matcher;
use crate::planner::{CanonicalQuery, Hint};
use crate::projection::Projection;
use crate::sort::SortSpec;
use crate::update::Update;
use crate::value::type_name;
use bson::{Bson, Document};
use cairn_types::limits::WRITE_BATCH_SIZE_MAX;
use cairn_types::{Error, ErrorCode, Result};

/// Arguments any command may carry; the server interprets them.
pub const GENERIC_ARGUMENTS: &[&str] = &[
    "$db",
    "lsid",
    "txnNumber",
    "autocommit",
    "startTransaction",
    "readConcern",
    "writeConcern",
    "$readPreference",
    "$clusterTime",
    "comment",
    "apiVersion",
    "apiStrict",
    "apiDeprecationErrors",
    "$audit",
    "$client",
    "clientOperationKey",
    "mayBypassWriteBlocking",
    "maxTimeMSOpOnly",
];

const INTEGER_TYPES: &str = "[long, int, decimal, double]";
const BOOL_TYPES: &str = "[bool, long, int, decimal, double]";

fn wrong_type(path: &str, value: &Bson, expected: &str) -> Error {
    let expected = if expected.starts_with('[') {
        format!("expected types '{expected}'")
    } else {
        format!("expected type '{expected}'")
    };
    Error::type_mismatch(format!(
        "BSON field '{path}' is the wrong type '{}', {expected}",
        type_name(value)
    ))
}

fn missing(path: &str) -> Error {
    Error::new(
        ErrorCode::Location(40414),
        format!("BSON field '{path}' is missing but a required field"),
    )
}

fn unknown(path: &str) -> Error {
    Error::new(
        ErrorCode::Location(40415),
        format!("BSON field '{path}' is an unknown field."),
    )
}

/// Typed access to one (sub)document of a command, with IDL-style errors.
struct Fields<'a> {
    prefix: String,
    document: &'a Document,
}

impl<'a> Fields<'a> {
    fn new(prefix: &str, document: &'a Document) -> Fields<'a> {
        Fields {
            prefix: prefix.to_owned(),
            document,
        }
    }

    fn path(&self, field: &str) -> String {
        format!("{}.{field}", self.prefix)
    }

    /// Refuses fields that are neither in `known` nor generic arguments (top level only).
    fn check_known(&self, known: &[&str], generic: bool, skip_first: bool) -> Result<()> {
        for (index, key) in self.document.keys().enumerate() {
            if skip_first && index == 0 {
                continue;
            }
            if known.contains(&key.as_str())
                || (generic && GENERIC_ARGUMENTS.contains(&key.as_str()))
            {
                continue;
            }
            return Err(unknown(&self.path(key)));
        }
        Ok(())
    }

    fn get(&self, field: &str) -> Option<&'a Bson> {
        self.document.get(field)
    }

    fn document(&self, field: &str) -> Result<Option<&'a Document>> {
        match self.get(field) {
            None => Ok(None),
            Some(Bson::Document(d)) => Ok(Some(d)),
            Some(other) => Err(wrong_type(&self.path(field), other, "object")),
        }
    }

    fn required_document(&self, field: &str) -> Result<&'a Document> {
        self.document(field)?
            .ok_or_else(|| missing(&self.path(field)))
    }

    fn string(&self, field: &str) -> Result<Option<&'a str>> {
        match self.get(field) {
            None => Ok(None),
            Some(Bson::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(&self.path(field), other, "string")),
        }
    }

    fn array(&self, field: &str) -> Result<Option<&'a Vec<Bson>>> {
        match self.get(field) {
            None => Ok(None),
            Some(Bson::Array(items)) => Ok(Some(items)),
            Some(other) => Err(wrong_type(&self.path(field), other, "array")),
        }
    }

    fn boolean(&self, field: &str) -> Result<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(Bson::Boolean(b)) => Ok(Some(*b)),
            Some(v) if cairn_types::order::is_number(v) => {
                Ok(Some(crate::value::as_f64(v).is_some_and(|f| f != 0.0)))
            }
            Some(other) => Err(wrong_type(&self.path(field), other, BOOL_TYPES)),
        }
    }

    fn integer(&self, field: &str) -> Result<Option<i64>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) if cairn_types::order::is_number(v) => match crate::value::as_exact_i64(v) {
                Some(n) => Ok(Some(n)),
                None => Err(Error::new(
                    ErrorCode::Location(51024),
                    format!("BSON field '{field}' value must be an integer, actual value '{v}'"),
                )),
            },
            Some(other) => Err(wrong_type(&self.path(field), other, INTEGER_TYPES)),
        }
    }

    fn non_negative(&self, field: &str) -> Result<Option<u64>> {
        match self.integer(field)? {
            None => Ok(None),
            Some(n) if n < 0 => Err(Error::new(
                ErrorCode::Location(51024),
                format!("BSON field '{field}' value must be >= 0, actual value '{n}'"),
            )),
            Some(n) => Ok(Some(n as u64)),
        }
    }
}

/// The collection a command names in its first field.
fn collection_name(command: &Document, name: &str) -> Result<String> {
    match command.iter().next() {
        Some((key, Bson::String(collection))) if key.eq_ignore_ascii_case(name) => {
            if collection.is_empty() {
                return Err(Error::new(
                    ErrorCode::InvalidNamespace,
                    format!("Invalid namespace specified '{collection}'"),
                ));
            }
            Ok(collection.clone())
        }
        Some((key, other)) if key.eq_ignore_ascii_case(name) => Err(Error::new(
            ErrorCode::InvalidNamespace,
            format!("collection name has invalid type {}", type_name(other)),
        )),
        _ => Err(Error::failed_to_parse(format!(
            "the first field of the command must be '{name}'"
        ))),
    }
}

fn max_time_ms(fields: &Fields<'_>) -> Result<Option<u64>> {
    match fields.get("maxTimeMS") {
        None => Ok(None),
        Some(v) if cairn_types::order::is_number(v) => match crate::value::as_exact_i64(v) {
            Some(n) if (0..=i32::MAX as i64).contains(&n) => Ok((n > 0).then_some(n as u64)),
            _ => Err(Error::bad_value(format!(
                "{v} value for maxTimeMS is out of range [0, 2147483647]"
            ))),
        },
        Some(other) => Err(Error::bad_value(format!(
            "maxTimeMS must be a number, not {}",
            type_name(other)
        ))),
    }
}

fn hint(fields: &Fields<'_>) -> Result<Option<Hint>> {
    match fields.get("hint") {
        None => Ok(None),
        Some(value @ (Bson::String(_) | Bson::Document(_))) => Hint::parse(value),
        Some(other) => Err(wrong_type(&fields.path("hint"), other, "[string, object]")),
    }
}

/// `find`.
#[derive(Clone, Debug, PartialEq)]
pub struct FindCommand {
    pub collection: String,
    pub filter: Document,
    pub projection: Option<Document>,
    pub sort: Option<Document>,
    pub hint: Option<Hint>,
    pub skip: u64,
    /// `None`: no limit (`limit: 0` means the same).
    pub limit: Option<u64>,
    pub batch_size: Option<u64>,
    pub single_batch: bool,
    pub max_time_ms: Option<u64>,
    pub no_cursor_timeout: bool,
    pub allow_disk_use: bool,
    pub let_variables: Option<Document>,
    pub comment: Option<Bson>,
}

impl FindCommand {
    pub fn parse(command: &Document) -> Result<FindCommand> {
        let collection = collection_name(command, "find")?;
        let fields = Fields::new("find", command);
        fields.check_known(
            &[
                "filter",
                "projection",
                "sort",
                "hint",
                "skip",
                "limit",
                "batchSize",
                "singleBatch",
                "maxTimeMS",
                "noCursorTimeout",
                "let",
                "allowDiskUse",
                "returnKey",
                "showRecordId",
                "tailable",
                "awaitData",
                "allowPartialResults",
                "collation",
                "min",
                "max",
                "readOnce",
                "term",
            ],
            true,
            true,
        )?;
        for unsupported in [
            "returnKey",
            "showRecordId",
            "tailable",
            "awaitData",
            "min",
            "max",
        ] {
            if fields.boolean(unsupported).ok().flatten() == Some(true)
                || (matches!(unsupported, "min" | "max") && fields.get(unsupported).is_some())
            {
                return Err(Error::new(
                    ErrorCode::NotImplemented,
                    format!("find.{unsupported} is not supported by cairn"),
                ));
            }
        }
        check_collation(&fields)?;
        let limit = fields.non_negative("limit")?.filter(|l| *l > 0);
        Ok(FindCommand {
            collection,
            filter: fields.document("filter")?.cloned().unwrap_or_default(),
            projection: fields.document("projection")?.cloned(),
            sort: fields.document("sort")?.cloned(),
            hint: hint(&fields)?,
            skip: fields.non_negative("skip")?.unwrap_or(0),
            limit,
            batch_size: fields.non_negative("batchSize")?,
            single_batch: fields.boolean("singleBatch")?.unwrap_or(false),
            max_time_ms: max_time_ms(&fields)?,
            no_cursor_timeout: fields.boolean("noCursorTimeout")?.unwrap_or(false),
            allow_disk_use: fields.boolean("allowDiskUse")?.unwrap_or(false),
            let_variables: fields.document("let")?.cloned(),
            comment: fields.get("comment").cloned(),
        })
    }

    /// The query to plan, with filter, sort and projection parsed. `sort: {$natural: ±1}` is
    /// a collection scan in that direction, as in MongoDB.
    pub fn to_query(&self, database: &str) -> Result<CanonicalQuery> {
        let filter = Matcher::parse_with_let(&self.filter, self.let_variables.as_ref())?;
        let mut hint = self.hint.clone();
        let sort = match &self.sort {
            Some(spec) if spec.len() == 1 && spec.contains_key("$natural") => {
                let forward = spec
                    .get("$natural")
                    .and_then(crate::value::as_f64)
                    .is_none_or(|d| d >= 0.0);
                hint = Some(Hint::Natural { forward });
                SortSpec::default()
            }
            Some(spec) => SortSpec::parse(spec)?,
            None => SortSpec::default(),
        };
        let projection = match &self.projection {
            Some(spec) if !spec.is_empty() => Some(Projection::parse(spec)?),
            _ => None,
        };
        Ok(CanonicalQuery {
            namespace: format!("{database}.{}", self.collection),
            filter,
            sort,
            projection,
            skip: self.skip,
            limit: self.limit,
            hint,
        })
    }
}

fn check_collation(fields: &Fields<'_>) -> Result<()> {
    if let Some(collation) = fields.document("collation")? {
        let simple = collation.is_empty()
            || (collation.len() == 1 && collation.get_str("locale").ok() == Some("simple"));
        if !simple {
            return Err(Error::new(
                ErrorCode::NotImplemented,
                "collations other than 'simple' are not supported by cairn",
            ));
        }
    }
    Ok(())
}

/// The `u` of an update statement.
#[derive(Clone, Debug, PartialEq)]
pub enum UpdateModification {
    /// A replacement or operator document.
    Document(Document),
    /// An aggregation pipeline (not supported for execution by cairn; parsed so the executor can
    /// refuse it per statement).
    Pipeline(Vec<Bson>),
}

/// One statement of `updates`.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateStatement {
    pub query: Document,
    pub update: UpdateModification,
    pub upsert: bool,
    pub multi: bool,
    pub array_filters: Option<Vec<Document>>,
    pub hint: Option<Hint>,
}

impl UpdateStatement {
    /// Parses the filter and the update (errors here are the statement's write error).
    pub fn to_update(&self, let_variables: Option<&Document>) -> Result<(Matcher, Update)> {
        let matcher = Matcher::parse_with_let(&self.query, let_variables)?;
        let UpdateModification::Document(update) = &self.update else {
            return Err(Error::new(
                ErrorCode::NotImplemented,
                "pipeline-style updates are not supported by cairn",
            ));
        };
        let parsed = Update::parse(update, self.array_filters.as_deref())?;
        if self.multi && parsed.is_replacement() {
            return Err(Error::failed_to_parse(
                "multi update is not supported for replacement-style update",
            ));
        }
        Ok((matcher, parsed))
    }
}

/// `update`.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateCommand {
    pub collection: String,
    pub updates: Vec<UpdateStatement>,
    pub ordered: bool,
    pub let_variables: Option<Document>,
    pub bypass_document_validation: bool,
}

fn batch_size_check(count: usize) -> Result<()> {
    if count == 0 || count > WRITE_BATCH_SIZE_MAX {
        return Err(Error::new(
            ErrorCode::InvalidLength,
            format!(
                "Write batch sizes must be between 1 and {WRITE_BATCH_SIZE_MAX}. Got {count} operations."
            ),
        ));
    }
    Ok(())
}

fn array_filters(fields: &Fields<'_>) -> Result<Option<Vec<Document>>> {
    match fields.array("arrayFilters")? {
        None => Ok(None),
        Some(items) => items
            .iter()
            .map(|item| match item {
                Bson::Document(d) => Ok(d.clone()),
                other => Err(wrong_type(&fields.path("arrayFilters"), other, "object")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
    }
}

impl UpdateCommand {
    pub fn parse(command: &Document) -> Result<UpdateCommand> {
        let collection = collection_name(command, "update")?;
        let fields = Fields::new("update", command);
        fields.check_known(
            &[
                "updates",
                "ordered",
                "let",
                "bypassDocumentValidation",
                "stmtId",
                "stmtIds",
                "maxTimeMS",
            ],
            true,
            true,
        )?;
        let items = fields
            .array("updates")?
            .ok_or_else(|| missing("update.updates"))?;
        batch_size_check(items.len())?;
        let mut updates = Vec::with_capacity(items.len());
        for item in items {
            let Bson::Document(statement) = item else {
                return Err(wrong_type("update.updates", item, "object"));
            };
            let fields = Fields::new("update.updates", statement);
            fields.check_known(
                &[
                    "q",
                    "u",
                    "upsert",
                    "multi",
                    "arrayFilters",
                    "hint",
                    "collation",
                    "c",
                    "upsertSupplied",
                    "sort",
                ],
                false,
                false,
            )?;
            check_collation(&fields)?;
            let query = fields.required_document("q")?.clone();
            let update = match fields.get("u") {
                None => return Err(missing("update.updates.u")),
                Some(Bson::Document(d)) => UpdateModification::Document(d.clone()),
                Some(Bson::Array(stages)) => UpdateModification::Pipeline(stages.clone()),
                Some(other) => {
                    return Err(wrong_type("update.updates.u", other, "[object, array]"));
                }
            };
            updates.push(UpdateStatement {
                query,
                update,
                upsert: fields.boolean("upsert")?.unwrap_or(false),
                multi: fields.boolean("multi")?.unwrap_or(false),
                array_filters: array_filters(&fields)?,
                hint: hint(&fields)?,
            });
        }
        Ok(UpdateCommand {
            collection,
            updates,
            ordered: fields.boolean("ordered")?.unwrap_or(true),
            let_variables: fields.document("let")?.cloned(),
            bypass_document_validation: fields
                .boolean("bypassDocumentValidation")?
                .unwrap_or(false),
        })
    }
}

/// One statement of `deletes`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeleteStatement {
    pub query: Document,
    /// True for `limit: 1` (delete one), false for `limit: 0` (delete all matches).
    pub just_one: bool,
    pub hint: Option<Hint>,
}

/// `delete`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeleteCommand {
    pub collection: String,
    pub deletes: Vec<DeleteStatement>,
    pub ordered: bool,
    pub let_variables: Option<Document>,
}

impl DeleteCommand {
    pub fn parse(command: &Document) -> Result<DeleteCommand> {
        let collection = collection_name(command, "delete")?;
        let fields = Fields::new("delete", command);
        fields.check_known(
            &[
                "deletes",
                "ordered",
                "let",
                "stmtId",
                "stmtIds",
                "maxTimeMS",
            ],
            true,
            true,
        )?;
        let items = fields
            .array("deletes")?
            .ok_or_else(|| missing("delete.deletes"))?;
        batch_size_check(items.len())?;
        let mut deletes = Vec::with_capacity(items.len());
        for item in items {
            let Bson::Document(statement) = item else {
                return Err(wrong_type("delete.deletes", item, "object"));
            };
            let fields = Fields::new("delete.deletes", statement);
            fields.check_known(&["q", "limit", "hint", "collation"], false, false)?;
            check_collation(&fields)?;
            let query = fields.required_document("q")?.clone();
            let limit = fields
                .integer("limit")?
                .ok_or_else(|| missing("delete.deletes.limit"))?;
            if limit != 0 && limit != 1 {
                return Err(Error::failed_to_parse(format!(
                    "The limit field in delete objects must be 0 or 1. Got {limit}"
                )));
            }
            deletes.push(DeleteStatement {
                query,
                just_one: limit == 1,
                hint: hint(&fields)?,
            });
        }
        Ok(DeleteCommand {
            collection,
            deletes,
            ordered: fields.boolean("ordered")?.unwrap_or(true),
            let_variables: fields.document("let")?.cloned(),
        })
    }
}

/// `findAndModify`.
#[derive(Clone, Debug, PartialEq)]
pub struct FindAndModifyCommand {
    pub collection: String,
    pub query: Document,
    pub sort: Option<Document>,
    /// `None` with `remove: true`.
    pub update: Option<UpdateModification>,
    pub remove: bool,
    /// Return the document after the update (`new: true`).
    pub return_new: bool,
    pub fields: Option<Document>,
    pub upsert: bool,
    pub array_filters: Option<Vec<Document>>,
    pub hint: Option<Hint>,
    pub max_time_ms: Option<u64>,
    pub let_variables: Option<Document>,
}

impl FindAndModifyCommand {
    pub fn parse(command: &Document) -> Result<FindAndModifyCommand> {
        let collection = collection_name(command, "findAndModify")?;
        let fields = Fields::new("findAndModify", command);
        fields.check_known(
            &[
                "query",
                "sort",
                "update",
                "remove",
                "new",
                "fields",
                "upsert",
                "arrayFilters",
                "hint",
                "maxTimeMS",
                "let",
                "bypassDocumentValidation",
                "collation",
                "stmtId",
            ],
            true,
            true,
        )?;
        check_collation(&fields)?;
        let update = match fields.get("update") {
            None => None,
            Some(Bson::Document(d)) => Some(UpdateModification::Document(d.clone())),
            Some(Bson::Array(stages)) => Some(UpdateModification::Pipeline(stages.clone())),
            Some(other) => {
                return Err(wrong_type("findAndModify.update", other, "[object, array]"));
            }
        };
        let remove = fields.boolean("remove")?.unwrap_or(false);
        let return_new = fields.boolean("new")?.unwrap_or(false);
        let upsert = fields.boolean("upsert")?.unwrap_or(false);
        if remove && update.is_some() {
            return Err(Error::failed_to_parse(
                "Cannot specify both an update and remove=true",
            ));
        }
        if !remove && update.is_none() {
            return Err(Error::failed_to_parse(
                "Either an update or remove=true must be specified",
            ));
        }
        if remove && return_new {
            return Err(Error::failed_to_parse(
                "Cannot specify both new=true and remove=true; 'remove' always returns the deleted document",
            ));
        }
        if remove && upsert {
            return Err(Error::failed_to_parse(
                "Cannot specify both upsert=true and remove=true",
            ));
        }
        let array_filters = array_filters(&fields)?;
        if remove && array_filters.is_some() {
            return Err(Error::failed_to_parse(
                "Cannot specify arrayFilters and remove=true",
            ));
        }
        Ok(FindAndModifyCommand {
            collection,
            query: fields.document("query")?.cloned().unwrap_or_default(),
            sort: fields.document("sort")?.cloned(),
            update,
            remove,
            return_new,
            fields: fields.document("fields")?.cloned(),
            upsert,
            array_filters,
            hint: hint(&fields)?,
            max_time_ms: max_time_ms(&fields)?,
            let_variables: fields.document("let")?.cloned(),
        })
    }

    /// Parses the query, sort, update and projection.
    pub fn to_parts(&self) -> Result<(Matcher, SortSpec, Option<Update>, Option<Projection>)> {
        let matcher = Matcher::parse_with_let(&self.query, self.let_variables.as_ref())?;
        let sort = match &self.sort {
            Some(spec) => SortSpec::parse(spec)?,
            None => SortSpec::default(),
        };
        let update = match &self.update {
            None => None,
            Some(UpdateModification::Document(d)) => {
                Some(Update::parse(d, self.array_filters.as_deref())?)
            }
            Some(UpdateModification::Pipeline(_)) => {
                return Err(Error::new(
                    ErrorCode::NotImplemented,
                    "pipeline-style updates are not supported by cairn",
                ));
            }
        };
        let projection = match &self.fields {
            Some(spec) if !spec.is_empty() => Some(Projection::parse(spec)?),
            _ => None,
        };
        Ok((matcher, sort, update, projection))
    }
}

/// `count`.
#[derive(Clone, Debug, PartialEq)]
pub struct CountCommand {
    pub collection: String,
    pub query: Document,
    pub skip: u64,
    /// `None`: no limit; a negative limit counts like its absolute value, as MongoDB does.
    pub limit: Option<u64>,
    pub hint: Option<Hint>,
    pub max_time_ms: Option<u64>,
}

impl CountCommand {
    /// The query to plan (count ignores sort and projection).
    pub fn to_query(&self, database: &str) -> Result<CanonicalQuery> {
        let mut query = CanonicalQuery::new(
            &format!("{database}.{}", self.collection),
            Matcher::parse(&self.query)?,
        );
        query.skip = self.skip;
        query.limit = self.limit;
        query.hint = self.hint.clone();
        Ok(query)
    }

    pub fn parse(command: &Document) -> Result<CountCommand> {
        let collection = collection_name(command, "count")?;
        let fields = Fields::new("count", command);
        fields.check_known(
            &[
                "query",
                "skip",
                "limit",
                "hint",
                "maxTimeMS",
                "collation",
                "fields",
            ],
            true,
            true,
        )?;
        check_collation(&fields)?;
        let limit = fields
            .integer("limit")?
            .map(|l| l.unsigned_abs())
            .filter(|l| *l > 0);
        Ok(CountCommand {
            collection,
            query: fields.document("query")?.cloned().unwrap_or_default(),
            skip: fields.non_negative("skip")?.unwrap_or(0),
            limit,
            hint: hint(&fields)?,
            max_time_ms: max_time_ms(&fields)?,
        })
    }
}

/// `distinct`.
#[derive(Clone, Debug, PartialEq)]
pub struct DistinctCommand {
    pub collection: String,
    pub key: String,
    pub query: Document,
    pub hint: Option<Hint>,
    pub max_time_ms: Option<u64>,
}

impl DistinctCommand {
    /// The query to plan; apply `agg::pipeline::distinct_values` to the matches.
    pub fn to_query(&self, database: &str) -> Result<CanonicalQuery> {
        let mut query = CanonicalQuery::new(
            &format!("{database}.{}", self.collection),
            Matcher::parse(&self.query)?,
        );
        query.hint = self.hint.clone();
        Ok(query)
    }

    pub fn parse(command: &Document) -> Result<DistinctCommand> {
        let collection = collection_name(command, "distinct")?;
        let fields = Fields::new("distinct", command);
        fields.check_known(
            &["key", "query", "hint", "maxTimeMS", "collation"],
            true,
            true,
        )?;
        check_collation(&fields)?;
        let key = fields
            .string("key")?
            .ok_or_else(|| missing("distinct.key"))?
            .to_owned();
        Ok(DistinctCommand {
            collection,
            key,
            query: fields.document("query")?.cloned().unwrap_or_default(),
            hint: hint(&fields)?,
            max_time_ms: max_time_ms(&fields)?,
        })
    }
}

/// `aggregate`.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateCommand {
    /// `None` for `aggregate: 1` (collection-less).
    pub collection: Option<String>,
    pub pipeline: Vec<Bson>,
    pub batch_size: Option<u64>,
    pub allow_disk_use: bool,
    pub explain: bool,
    pub max_time_ms: Option<u64>,
    pub hint: Option<Hint>,
    pub let_variables: Option<Document>,
}

impl AggregateCommand {
    pub fn parse(command: &Document) -> Result<AggregateCommand> {
        let collection = match command.iter().next() {
            Some((key, Bson::String(name))) if key == "aggregate" && !name.is_empty() => {
                Some(name.clone())
            }
            Some((key, value))
                if key == "aggregate" && crate::value::as_f64(value) == Some(1.0) =>
            {
                None
            }
            Some((key, _)) if key == "aggregate" => {
                return Err(Error::failed_to_parse(
                    "Invalid command format: the 'aggregate' field must specify a collection name or 1",
                ));
            }
            _ => {
                return Err(Error::failed_to_parse(
                    "the first field of the command must be 'aggregate'",
                ));
            }
        };
        let fields = Fields::new("aggregate", command);
        fields.check_known(
            &[
                "pipeline",
                "cursor",
                "allowDiskUse",
                "explain",
                "maxTimeMS",
                "hint",
                "let",
                "bypassDocumentValidation",
                "collation",
                "fromMongos",
                "needsMerge",
            ],
            true,
            true,
        )?;
        check_collation(&fields)?;
        let pipeline = fields
            .array("pipeline")?
            .ok_or_else(|| missing("aggregate.pipeline"))?
            .clone();
        let explain = fields.boolean("explain")?.unwrap_or(false);
        let cursor = fields.document("cursor")?;
        if cursor.is_none() && !explain {
            return Err(Error::failed_to_parse(
                "The 'cursor' option is required, except for aggregate with the explain argument",
            ));
        }
        let batch_size = match cursor {
            Some(cursor) => {
                let cursor_fields = Fields::new("aggregate.cursor", cursor);
                cursor_fields.check_known(&["batchSize"], false, false)?;
                cursor_fields.non_negative("batchSize")?
            }
            None => None,
        };
        Ok(AggregateCommand {
            collection,
            pipeline,
            batch_size,
            allow_disk_use: fields.boolean("allowDiskUse")?.unwrap_or(false),
            explain,
            max_time_ms: max_time_ms(&fields)?,
            hint: hint(&fields)?,
            let_variables: fields.document("let")?.cloned(),
        })
    }

    /// Parses the pipeline with this command's options.
    pub fn to_pipeline(&self) -> Result<Pipeline> {
        let options = AggregateOptions {
            allow_disk_use: self.allow_disk_use,
            variables: self.let_variables.clone().unwrap_or_default(),
            ..AggregateOptions::default()
        };
        Pipeline::parse(&self.pipeline, options)
    }
}

/// One index of `createIndexes`.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexSpec {
    pub key: KeyPattern,
    pub name: String,
    pub unique: bool,
    pub sparse: bool,
    pub partial_filter_expression: Option<Document>,
}

/// `createIndexes`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateIndexesCommand {
    pub collection: String,
    pub indexes: Vec<IndexSpec>,
}

impl CreateIndexesCommand {
    pub fn parse(command: &Document) -> Result<CreateIndexesCommand> {
        let collection = collection_name(command, "createIndexes")?;
        let fields = Fields::new("createIndexes", command);
        fields.check_known(&["indexes", "commitQuorum", "maxTimeMS"], true, true)?;
        let items = fields
            .array("indexes")?
            .ok_or_else(|| missing("createIndexes.indexes"))?;
        if items.is_empty() {
            return Err(Error::bad_value(
                "Must specify at least one index to create",
            ));
        }
        let mut indexes = Vec::with_capacity(items.len());
        for item in items {
            let Bson::Document(spec) = item else {
                return Err(wrong_type("createIndexes.indexes", item, "object"));
            };
            indexes.push(parse_index_spec(spec)?);
        }
        Ok(CreateIndexesCommand {
            collection,
            indexes,
        })
    }
}

fn parse_index_spec(spec: &Document) -> Result<IndexSpec> {
    let mut key = None;
    let mut name = None;
    let mut unique = false;
    let mut sparse = false;
    let mut partial = None;
    let invalid = |message: String| Error::new(ErrorCode::InvalidIndexSpecificationOption, message);
    for (field, value) in spec {
        match field.as_str() {
            "key" => match value {
                Bson::Document(pattern) => key = Some(KeyPattern::parse(pattern)?),
                other => return Err(wrong_type("createIndexes.indexes.key", other, "object")),
            },
            "name" => match value {
                Bson::String(n) if !n.is_empty() => name = Some(n.clone()),
                Bson::String(_) => {
                    return Err(Error::new(
                        ErrorCode::CannotCreateIndex,
                        "index name cannot be empty",
                    ));
                }
                other => return Err(wrong_type("createIndexes.indexes.name", other, "string")),
            },
            "unique" | "sparse" | "background" => {
                let flag = match value {
                    Bson::Boolean(b) => *b,
                    v if cairn_types::order::is_number(v) => {
                        crate::value::as_f64(v).is_some_and(|f| f != 0.0)
                    }
                    other => {
                        return Err(wrong_type(
                            &format!("createIndexes.indexes.{field}"),
                            other,
                            BOOL_TYPES,
                        ));
                    }
                };
                match field.as_str() {
                    "unique" => unique = flag,
                    "sparse" => sparse = flag,
                    _ => {}
                }
            }
            "v" => {
                if crate::value::as_f64(value) != Some(2.0)
                    && crate::value::as_f64(value) != Some(1.0)
                {
                    return Err(Error::new(
                        ErrorCode::CannotCreateIndex,
                        format!(
                            "Invalid index specification {spec}; cannot create an index with v={value}"
                        ),
                    ));
                }
            }
            "partialFilterExpression" => match value {
                Bson::Document(filter) => {
                    Matcher::parse(filter)?;
                    partial = Some(filter.clone());
                }
                other => {
                    return Err(wrong_type(
                        "createIndexes.indexes.partialFilterExpression",
                        other,
                        "object",
                    ));
                }
            },
            "ns" => {}
            "expireAfterSeconds"
            | "collation"
            | "hidden"
            | "weights"
            | "default_language"
            | "language_override"
            | "textIndexVersion"
            | "2dsphereIndexVersion"
            | "bits"
            | "min"
            | "max"
            | "bucketSize"
            | "wildcardProjection"
            | "storageEngine"
            | "clustered"
            | "prepareUnique" => {
                return Err(Error::new(
                    ErrorCode::CannotCreateIndex,
                    format!("cairn does not support the index option '{field}'"),
                ));
            }
            other => {
                return Err(invalid(format!(
                    "The field '{other}' is not valid for an index specification. Specification: {spec}"
                )));
            }
        }
    }
    let Some(key) = key else {
        return Err(Error::failed_to_parse(format!(
            "Error in specification {spec} :: caused by :: The 'key' field is a required property of an index specification"
        )));
    };
    let Some(name) = name else {
        return Err(Error::failed_to_parse(format!(
            "Error in specification {spec} :: caused by :: The 'name' field is a required property of an index specification"
        )));
    };
    if sparse && partial.is_some() {
        return Err(Error::new(
            ErrorCode::CannotCreateIndex,
            "cannot mix \"partialFilterExpression\" and \"sparse\" options",
        ));
    }
    if name == "_id_" && key.source() != &bson::doc! {"_id": 1} {
        return Err(Error::bad_value(
            "The index name '_id_' is reserved for the _id index, which must have key pattern {_id: 1}",
        ));
    }
    Ok(IndexSpec {
        key,
        name,
        unique,
        sparse,
        partial_filter_expression: partial,
    })
}

/// What `dropIndexes` drops.
#[derive(Clone, Debug, PartialEq)]
pub enum DropTarget {
    All,
    Name(String),
    Names(Vec<String>),
    KeyPattern(Document),
}

/// `dropIndexes`.
#[derive(Clone, Debug, PartialEq)]
pub struct DropIndexesCommand {
    pub collection: String,
    pub target: DropTarget,
}

impl DropIndexesCommand {
    pub fn parse(command: &Document) -> Result<DropIndexesCommand> {
        let collection = collection_name(command, "dropIndexes")?;
        let fields = Fields::new("dropIndexes", command);
        fields.check_known(&["index"], true, true)?;
        let target = match fields.get("index") {
            None => return Err(missing("dropIndexes.index")),
            Some(Bson::String(name)) if name == "*" => DropTarget::All,
            Some(Bson::String(name)) => DropTarget::Name(name.clone()),
            Some(Bson::Document(pattern)) => DropTarget::KeyPattern(pattern.clone()),
            Some(Bson::Array(names)) => DropTarget::Names(
                names
                    .iter()
                    .map(|n| match n {
                        Bson::String(s) => Ok(s.clone()),
                        other => Err(wrong_type("dropIndexes.index", other, "string")),
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(other) => {
                return Err(wrong_type(
                    "dropIndexes.index",
                    other,
                    "[string, object, array]",
                ));
            }
        };
        if let DropTarget::Name(name) = &target {
            if name == "_id_" {
                return Err(Error::new(
                    ErrorCode::InvalidOptions,
                    "cannot drop _id index",
                ));
            }
        }
        Ok(DropIndexesCommand { collection, target })
    }
}

/// `explain`: the explained command and the verbosity.
#[derive(Clone, Debug, PartialEq)]
pub struct ExplainCommand {
    pub command: Document,
    pub verbosity: crate::planner::Verbosity,
}

impl ExplainCommand {
    pub fn parse(command: &Document) -> Result<ExplainCommand> {
        let fields = Fields::new("explain", command);
        fields.check_known(&["explain", "verbosity"], true, false)?;
        let inner = fields.required_document("explain")?.clone();
        if inner.is_empty() {
            return Err(Error::failed_to_parse(
                "explain command requires a nested object",
            ));
        }
        let verbosity = match fields.string("verbosity")? {
            Some(text) => crate::planner::Verbosity::parse(text)?,
            None => crate::planner::Verbosity::AllPlansExecution,
        };
        Ok(ExplainCommand {
            command: inner,
            verbosity,
        })
    }

    /// The explained command's name (`find`, `aggregate`, ...).
    pub fn command_name(&self) -> &str {
        self.command
            .keys()
            .next()
            .map(String::as_str)
            .unwrap_or_default()
    }
}
