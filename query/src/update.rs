//! Updates: replacement documents and update operators, applied to a copy of a document.
//!
//! [`Update::parse`] validates the whole update up front (unknown modifiers, argument types,
//! conflicting paths, array filters); [`Update::apply`] works on a clone, so the input is never
//! modified, and on error nothing is returned but the error. The result says whether the
//! document changed (`nModified`).
//!
//! Invariants and MongoDB rules kept here:
//! - fields are updated in path order (lexicographic, numeric components numerically), as
//!   MongoDB 5.0+ does, so new fields appear in that order;
//! - `_id` never changes (`ImmutableField` 66), and a replacement keeps the original `_id` first;
//! - two operations on the same path or on a path and its prefix conflict
//!   (`ConflictingUpdateOperators` 40: "Updating the path 'a.b' would create a conflict at 'a'");
//! - `$` takes the array position the query matched; `$[]` every element; `$[id]` the elements
//!   that the array filter `id` matches;
//! - the current time is a parameter ([`UpdateContext::now`]); nothing here reads a clock.

use crate::matcher::{Matcher, Node, Predicate};
use crate::path::{FieldPath, is_array_index};
use crate::value::{Arithmetic, ArithmeticOverflow, arithmetic, type_name};
use bson::{Bson, Document};
use cairn_types::order::{compare_values, is_number};
use cairn_types::{Error, ErrorCode, Result};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// One component of an update path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPart {
    Field(String),
    /// `$`: the position the query matched.
    Positional,
    /// `$[]`: every element.
    AllElements,
    /// `$[id]`: the elements matching array filter `id`.
    Filtered(String),
}

/// An update path, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdatePath {
    pub dotted: String,
    pub parts: Vec<PathPart>,
}

impl UpdatePath {
    fn parse(dotted: &str) -> Result<UpdatePath> {
        if dotted.is_empty() {
            return Err(Error::new(
                ErrorCode::EmptyFieldName,
                "An empty update path is not valid.",
            ));
        }
        let mut parts = Vec::new();
        let mut positional = 0;
        for part in dotted.split('.') {
            if part.is_empty() {
                return Err(Error::new(
                    ErrorCode::EmptyFieldName,
                    format!(
                        "The update path '{dotted}' contains an empty field name, which is not allowed."
                    ),
                ));
            }
            parts.push(if part == "$" {
                positional += 1;
                PathPart::Positional
            } else if part == "$[]" {
                PathPart::AllElements
            } else if let Some(identifier) = part
                .strip_prefix("$[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                PathPart::Filtered(identifier.to_owned())
            } else {
                PathPart::Field(part.to_owned())
            });
        }
        if positional > 1 {
            return Err(Error::bad_value(format!(
                "Too many positional (i.e. '$') elements found in path '{dotted}'"
            )));
        }
        Ok(UpdatePath {
            dotted: dotted.to_owned(),
            parts,
        })
    }

    fn is_dynamic(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, PathPart::Field(_)))
    }

    fn components(&self) -> Vec<&str> {
        self.dotted.split('.').collect()
    }
}

/// `$push`'s modifiers.
#[derive(Clone, Debug, PartialEq)]
pub struct PushSpec {
    pub each: Vec<Bson>,
    pub slice: Option<i64>,
    pub sort: Option<PushSort>,
    pub position: Option<i64>,
}

/// `$push`'s `$sort`: whole elements or by fields of embedded documents.
#[derive(Clone, Debug, PartialEq)]
pub enum PushSort {
    Whole { descending: bool },
    Fields(crate::sort::SortSpec),
}

/// What `$pull` removes.
#[derive(Clone, Debug, PartialEq)]
pub enum PullCondition {
    /// A scalar or array: elements equal to it.
    Equals(Bson),
    /// A document of operators: elements matching them as values; or a document query: elements
    /// that are documents matching it.
    Matches(Box<Matcher>, bool),
}

/// One update operation on one path.
#[derive(Clone, Debug, PartialEq)]
pub enum Operation {
    Set(Bson),
    SetOnInsert(Bson),
    Unset,
    Inc(Bson),
    Mul(Bson),
    Min(Bson),
    Max(Bson),
    CurrentDate {
        timestamp: bool,
    },
    Push(PushSpec),
    AddToSet(Vec<Bson>),
    Pop {
        first: bool,
    },
    Pull(PullCondition),
    PullAll(Vec<Bson>),
    /// `$rename` recorded on the source path; the destination is here.
    Rename(UpdatePath),
}

/// A parsed update.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// A replacement document (no operators).
    Replacement(Document),
    /// Operators, sorted by path.
    Operators {
        operations: Vec<(UpdatePath, Operation)>,
        array_filters: BTreeMap<String, Matcher>,
    },
}

/// Inputs of [`Update::apply`] besides the document.
#[derive(Clone, Copy, Debug)]
pub struct UpdateContext {
    /// The time `$currentDate` writes (a date), taken by the caller from its clock.
    pub now: bson::DateTime,
    /// The timestamp `$currentDate: {$type: "timestamp"}` writes.
    pub now_timestamp: bson::Timestamp,
    /// The array position the query matched (`Matcher::match_details`), for `$`.
    pub matched_position: Option<usize>,
    /// True when applying to a new document of an upsert ($setOnInsert applies).
    pub is_insert: bool,
}

impl UpdateContext {
    pub fn new(now: bson::DateTime) -> UpdateContext {
        let seconds = (now.timestamp_millis() / 1000).max(0) as u32;
        UpdateContext {
            now,
            now_timestamp: bson::Timestamp {
                time: seconds,
                increment: 1,
            },
            matched_position: None,
            is_insert: false,
        }
    }
}

/// The result of applying an update.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateOutcome {
    pub document: Document,
    /// False when the update left the document as it was (it does not count in nModified).
    pub modified: bool,
}

fn failed_to_parse(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::FailedToParse, message)
}

fn conflict(path: &str, at: &str) -> Error {
    Error::new(
        ErrorCode::ConflictingUpdateOperators,
        format!("Updating the path '{path}' would create a conflict at '{at}'"),
    )
}

/// Orders two path strings as MongoDB applies them: component by component, numeric
/// components numerically.
fn compare_paths(left: &str, right: &str) -> Ordering {
    let mut l = left.split('.');
    let mut r = right.split('.');
    loop {
        match (l.next(), r.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(a), Some(b)) => {
                let ordering =
                    if is_array_index(a) && is_array_index(b) && a.len() < 19 && b.len() < 19 {
                        a.parse::<u64>()
                            .unwrap_or(0)
                            .cmp(&b.parse::<u64>().unwrap_or(0))
                    } else {
                        a.cmp(b)
                    };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
        }
    }
}

impl Update {
    /// Parses an update document (`u` of the update command) with its `arrayFilters`.
    pub fn parse(update: &Document, array_filters: Option<&[Document]>) -> Result<Update> {
        let is_operators = update.keys().next().is_some_and(|k| k.starts_with('$'));
        if !is_operators {
            if array_filters.is_some_and(|f| !f.is_empty()) {
                return Err(failed_to_parse(
                    "arrayFilters may not be specified for replacement-style updates",
                ));
            }
            validate_replacement(update)?;
            validate_stored_names(update)?;
            return Ok(Update::Replacement(update.clone()));
        }
        let array_filters = parse_array_filters(array_filters.unwrap_or(&[]))?;
        let mut operations: Vec<(UpdatePath, Operation)> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        let record = |path: &str, seen: &mut Vec<String>| -> Result<()> {
            for earlier in seen.iter() {
                let earlier_parts: Vec<&str> = earlier.split('.').collect();
                let path_parts: Vec<&str> = path.split('.').collect();
                let (short, short_parts, long_parts) = if earlier_parts.len() <= path_parts.len() {
                    (earlier.as_str(), earlier_parts, path_parts)
                } else {
                    (path, path_parts, earlier_parts)
                };
                if long_parts[..short_parts.len()] == short_parts[..] {
                    return Err(conflict(path, short));
                }
            }
            seen.push(path.to_owned());
            Ok(())
        };
        for (modifier, argument) in update {
            let Bson::Document(fields) = argument else {
                if !modifier.starts_with('$') {
                    return Err(failed_to_parse(format!(
                        "Unknown modifier: {modifier}. Expected a valid update modifier or pipeline-style update specified as an array"
                    )));
                }
                return Err(failed_to_parse(format!(
                    "Modifiers operate on fields but we found type {} instead. For example: {{$mod: {{<field>: ...}}}} not {{{modifier}: {}}}",
                    type_name(argument),
                    argument
                )));
            };
            if !is_known_modifier(modifier) {
                return Err(failed_to_parse(format!(
                    "Unknown modifier: {modifier}. Expected a valid update modifier or pipeline-style update specified as an array"
                )));
            }
            if fields.is_empty() {
                return Err(failed_to_parse(format!(
                    "'{modifier}' is empty. You must specify a field like so: {{{modifier}: {{<field>: ...}}}}"
                )));
            }
            for (field, value) in fields {
                let path = UpdatePath::parse(field)?;
                for part in &path.parts {
                    if let PathPart::Filtered(identifier) = part
                        && !array_filters.contains_key(identifier)
                    {
                        return Err(Error::bad_value(format!(
                            "No array filter found for identifier '{identifier}' in path '{field}'"
                        )));
                    }
                }
                let operation = parse_operation(modifier, field, &path, value)?;
                record(field, &mut seen)?;
                if let Operation::Rename(destination) = &operation {
                    record(&destination.dotted, &mut seen)?;
                }
                operations.push((path, operation));
            }
        }
        // Every array filter must be used.
        for identifier in array_filters.keys() {
            let used = operations.iter().any(|(path, _)| {
                path.parts
                    .iter()
                    .any(|p| matches!(p, PathPart::Filtered(id) if id == identifier))
            });
            if !used {
                return Err(failed_to_parse(format!(
                    "The array filter for identifier '{identifier}' was not used in the update {update}"
                )));
            }
        }
        operations.sort_by(|a, b| compare_paths(&a.0.dotted, &b.0.dotted));
        Ok(Update::Operators {
            operations,
            array_filters,
        })
    }

    /// True for a replacement-style update.
    pub fn is_replacement(&self) -> bool {
        matches!(self, Update::Replacement(_))
    }

    /// True when the update uses the positional `$` operator.
    pub fn uses_positional(&self) -> bool {
        match self {
            Update::Replacement(_) => false,
            Update::Operators { operations, .. } => operations
                .iter()
                .any(|(path, _)| path.parts.contains(&PathPart::Positional)),
        }
    }

    /// Applies the update to a copy of `document`.
    pub fn apply(&self, document: &Document, context: &UpdateContext) -> Result<UpdateOutcome> {
        let result = match self {
            Update::Replacement(replacement) => {
                let mut result = Document::new();
                match (document.get("_id"), replacement.get("_id")) {
                    (Some(old), Some(new)) if !values_identical(old, new) => {
                        return Err(Error::new(
                            ErrorCode::ImmutableField,
                            format!(
                                "After applying the update, the (immutable) field '_id' was found to have been altered to _id: {new}"
                            ),
                        ));
                    }
                    (Some(old), _) => {
                        result.insert("_id", old.clone());
                    }
                    (None, Some(new)) => {
                        result.insert("_id", new.clone());
                    }
                    (None, None) => {}
                }
                for (key, value) in replacement {
                    if key != "_id" {
                        result.insert(key.clone(), value.clone());
                    }
                }
                result
            }
            Update::Operators {
                operations,
                array_filters,
            } => {
                let mut result = document.clone();
                for (path, operation) in operations {
                    let mut applier = Applier {
                        context,
                        array_filters,
                        document_for_errors: document,
                    };
                    applier.apply(&mut result, path, operation)?;
                }
                let id_changed = match (document.get("_id"), result.get("_id")) {
                    (Some(old), Some(new)) => !values_identical(old, new),
                    (Some(_), None) => true,
                    _ => false,
                };
                if id_changed {
                    return Err(Error::new(
                        ErrorCode::ImmutableField,
                        "Performing an update on the path '_id' would modify the immutable field '_id'",
                    ));
                }
                validate_stored_names(&result)?;
                result
            }
        };
        let modified = !documents_identical(&result, document);
        Ok(UpdateOutcome {
            document: result,
            modified,
        })
    }
}

fn is_known_modifier(name: &str) -> bool {
    matches!(
        name,
        "$set"
            | "$unset"
            | "$inc"
            | "$mul"
            | "$min"
            | "$max"
            | "$rename"
            | "$currentDate"
            | "$setOnInsert"
            | "$push"
            | "$addToSet"
            | "$pop"
            | "$pull"
            | "$pullAll"
    )
}

/// Byte-for-byte equality (types and field order count), as nModified uses.
fn documents_identical(left: &Document, right: &Document) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right.iter())
            .all(|((lk, lv), (rk, rv))| lk == rk && values_identical(lv, rv))
}

fn values_identical(left: &Bson, right: &Bson) -> bool {
    match (left, right) {
        (Bson::Double(a), Bson::Double(b)) => a.to_bits() == b.to_bits(),
        (Bson::Document(a), Bson::Document(b)) => documents_identical(a, b),
        (Bson::Array(a), Bson::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| values_identical(x, y))
        }
        _ => left == right,
    }
}

fn validate_replacement(replacement: &Document) -> Result<()> {
    for key in replacement.keys() {
        if key.starts_with('$') {
            return Err(Error::new(
                ErrorCode::DollarPrefixedFieldName,
                format!(
                    "The dollar ($) prefixed field '{key}' in '{key}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith."
                ),
            ));
        }
    }
    Ok(())
}

/// Stored documents may not have `$`-prefixed field names (DBRef fields aside).
fn validate_stored_names(document: &Document) -> Result<()> {
    fn walk(document: &Document, prefix: &str) -> Result<()> {
        for (key, value) in document {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if key.starts_with('$') && !matches!(key.as_str(), "$ref" | "$id" | "$db") {
                return Err(Error::new(
                    ErrorCode::DollarPrefixedFieldName,
                    format!(
                        "The dollar ($) prefixed field '{key}' in '{path}' is not valid for storage."
                    ),
                ));
            }
            match value {
                Bson::Document(inner) => walk(inner, &path)?,
                Bson::Array(items) => {
                    for (index, item) in items.iter().enumerate() {
                        if let Bson::Document(inner) = item {
                            walk(inner, &format!("{path}.{index}"))?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
    walk(document, "")
}

fn parse_array_filters(filters: &[Document]) -> Result<BTreeMap<String, Matcher>> {
    let mut parsed = BTreeMap::new();
    for filter in filters {
        let mut identifier: Option<String> = None;
        for key in filter.keys() {
            if key.starts_with('$') {
                // $and/$or inside an array filter: take the identifier from their leaves.
                continue;
            }
            let top = key.split('.').next().unwrap_or_default().to_owned();
            let valid = top.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && top.chars().all(|c| c.is_ascii_alphanumeric());
            if !valid {
                return Err(Error::bad_value(format!(
                    "Error parsing array filter :: caused by :: The top-level field name must be an alphanumeric string beginning with a lowercase letter, found '{top}'"
                )));
            }
            match &identifier {
                Some(existing) if *existing != top => {
                    return Err(failed_to_parse(format!(
                        "Error parsing array filter :: caused by :: Expected a single top-level field name, found '{existing}' and '{top}'"
                    )));
                }
                _ => identifier = Some(top),
            }
        }
        let Some(identifier) = identifier else {
            return Err(failed_to_parse(
                "Cannot use an expression without a top-level field name in arrayFilters",
            ));
        };
        if parsed.contains_key(&identifier) {
            return Err(failed_to_parse(format!(
                "Found multiple array filters with the same top-level field name {identifier}"
            )));
        }
        parsed.insert(identifier, Matcher::parse(filter)?);
    }
    Ok(parsed)
}

fn parse_operation(
    modifier: &str,
    field: &str,
    path: &UpdatePath,
    value: &Bson,
) -> Result<Operation> {
    Ok(match modifier {
        "$set" => Operation::Set(value.clone()),
        "$setOnInsert" => Operation::SetOnInsert(value.clone()),
        "$unset" => Operation::Unset,
        "$inc" | "$mul" => {
            if !is_number(value) {
                let verb = if modifier == "$inc" {
                    "increment"
                } else {
                    "multiply"
                };
                return Err(Error::type_mismatch(format!(
                    "Cannot {verb} with non-numeric argument: {{{field}: {value}}}"
                )));
            }
            if modifier == "$inc" {
                Operation::Inc(value.clone())
            } else {
                Operation::Mul(value.clone())
            }
        }
        "$min" => Operation::Min(value.clone()),
        "$max" => Operation::Max(value.clone()),
        "$currentDate" => match value {
            Bson::Boolean(_) => Operation::CurrentDate { timestamp: false },
            Bson::Document(spec) => {
                let kind = spec.get("$type");
                if spec.len() != 1 || kind.is_none() {
                    return Err(Error::bad_value(
                        "The only valid field of the option is '$type': {$currentDate: {field : {$type: 'date/timestamp'}}}",
                    ));
                }
                match kind {
                    Some(Bson::String(kind)) if kind == "date" => {
                        Operation::CurrentDate { timestamp: false }
                    }
                    Some(Bson::String(kind)) if kind == "timestamp" => {
                        Operation::CurrentDate { timestamp: true }
                    }
                    _ => {
                        return Err(Error::bad_value(
                            "The '$type' string field is required to be 'date' or 'timestamp': {$currentDate: {field : {$type: 'date'}}}",
                        ));
                    }
                }
            }
            other => {
                return Err(Error::bad_value(format!(
                    "{} is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({{$type: 'timestamp/date'}}).",
                    type_name(other)
                )));
            }
        },
        "$push" => Operation::Push(parse_push(value)?),
        "$addToSet" => Operation::AddToSet(match value {
            Bson::Document(spec) if spec.contains_key("$each") => {
                if spec.len() != 1 {
                    let other = spec
                        .keys()
                        .find(|k| *k != "$each")
                        .cloned()
                        .unwrap_or_default();
                    return Err(Error::bad_value(format!(
                        "Found unexpected fields after $each in $addToSet: {other}"
                    )));
                }
                match spec.get("$each") {
                    Some(Bson::Array(items)) => items.clone(),
                    Some(other) => {
                        return Err(Error::type_mismatch(format!(
                            "The argument to $each in $addToSet must be an array but it was of type {}",
                            type_name(other)
                        )));
                    }
                    None => unreachable!("checked"),
                }
            }
            other => vec![other.clone()],
        }),
        "$pop" => {
            let direction = crate::value::as_f64(value).filter(|_| is_number(value));
            match direction {
                Some(1.0) => Operation::Pop { first: false },
                Some(-1.0) => Operation::Pop { first: true },
                _ => {
                    return Err(failed_to_parse(format!(
                        "$pop expects 1 or -1, found: {value}"
                    )));
                }
            }
        }
        "$pull" => Operation::Pull(match value {
            Bson::Document(query) => {
                let is_operators = query.keys().next().is_some_and(|k| k.starts_with('$'))
                    && !matches!(
                        query.keys().next().map(String::as_str),
                        Some("$and" | "$or" | "$nor")
                    );
                if is_operators {
                    // Operators on each element itself, without expanding nested arrays: a
                    // value $elemMatch over a one-element array holding the element.
                    let wrapped = bson::doc! {"e": {"$elemMatch": Bson::Document(query.clone())}};
                    PullCondition::Matches(Box::new(Matcher::parse(&wrapped)?), true)
                } else {
                    PullCondition::Matches(Box::new(Matcher::parse(query)?), false)
                }
            }
            Bson::RegularExpression(_) => {
                let wrapped = bson::doc! {"e": {"$elemMatch": {"$regex": value.clone()}}};
                PullCondition::Matches(Box::new(Matcher::parse(&wrapped)?), true)
            }
            other => PullCondition::Equals(other.clone()),
        }),
        "$pullAll" => match value {
            Bson::Array(items) => Operation::PullAll(items.clone()),
            other => {
                return Err(Error::bad_value(format!(
                    "$pullAll requires an array argument but was given a {}",
                    type_name(other)
                )));
            }
        },
        "$rename" => {
            let Bson::String(destination) = value else {
                return Err(Error::bad_value(format!(
                    "The 'to' field for $rename must be a string: {field}: {value}"
                )));
            };
            let destination_path = UpdatePath::parse(destination)?;
            if path.is_dynamic() {
                return Err(Error::bad_value(format!(
                    "The source field for $rename may not be dynamic: {field}"
                )));
            }
            if destination_path.is_dynamic() {
                return Err(Error::bad_value(format!(
                    "The destination field for $rename may not be dynamic: {destination}"
                )));
            }
            if field == destination {
                return Err(Error::bad_value(format!(
                    "The source and target field for $rename must differ: {field}: \"{destination}\""
                )));
            }
            let (a, b) = (path.components(), destination_path.components());
            let shorter = a.len().min(b.len());
            if a[..shorter] == b[..shorter] {
                return Err(Error::bad_value(format!(
                    "The source and target field for $rename must not be on the same path: {field}: \"{destination}\""
                )));
            }
            Operation::Rename(destination_path)
        }
        _ => unreachable!("modifiers are checked before"),
    })
}

fn parse_push(value: &Bson) -> Result<PushSpec> {
    let Bson::Document(spec) = value else {
        return Ok(PushSpec {
            each: vec![value.clone()],
            slice: None,
            sort: None,
            position: None,
        });
    };
    if !spec.contains_key("$each") {
        return Ok(PushSpec {
            each: vec![value.clone()],
            slice: None,
            sort: None,
            position: None,
        });
    }
    let mut push = PushSpec {
        each: Vec::new(),
        slice: None,
        sort: None,
        position: None,
    };
    for (key, argument) in spec {
        match key.as_str() {
            "$each" => match argument {
                Bson::Array(items) => push.each = items.clone(),
                other => {
                    return Err(Error::bad_value(format!(
                        "The argument to $each in $push must be an array but it was of type: {}",
                        type_name(other)
                    )));
                }
            },
            "$slice" => {
                match crate::value::as_exact_i64(argument).filter(|_| is_number(argument)) {
                    Some(n) => push.slice = Some(n),
                    None => {
                        return Err(Error::bad_value(format!(
                            "The value for $slice must be an integer value but was given type: {}",
                            type_name(argument)
                        )));
                    }
                }
            }
            "$position" => {
                match crate::value::as_exact_i64(argument).filter(|_| is_number(argument)) {
                    Some(n) => push.position = Some(n),
                    None => {
                        return Err(Error::bad_value(format!(
                            "The value for $position must be an integer value, not of type: {}",
                            type_name(argument)
                        )));
                    }
                }
            }
            "$sort" => {
                let invalid = || {
                    Error::bad_value(
                        "The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields",
                    )
                };
                push.sort = Some(match argument {
                    value if is_number(value) => match crate::value::as_f64(value) {
                        Some(1.0) => PushSort::Whole { descending: false },
                        Some(-1.0) => PushSort::Whole { descending: true },
                        _ => return Err(invalid()),
                    },
                    Bson::Document(fields) if !fields.is_empty() => {
                        for key in fields.keys() {
                            if key.starts_with('$')
                                || key.is_empty()
                                || key.split('.').any(str::is_empty)
                            {
                                return Err(Error::bad_value(format!(
                                    "The $sort field is a special identifier, which is not allowed: {key}"
                                )));
                            }
                        }
                        let spec = crate::sort::SortSpec::parse(fields).map_err(|_| invalid())?;
                        PushSort::Fields(spec)
                    }
                    _ => return Err(invalid()),
                });
            }
            other => {
                return Err(Error::bad_value(format!(
                    "Unrecognized clause in $push: {other}"
                )));
            }
        }
    }
    Ok(push)
}

/// Applies operations; holds what every operation needs.
struct Applier<'a> {
    context: &'a UpdateContext,
    array_filters: &'a BTreeMap<String, Matcher>,
    document_for_errors: &'a Document,
}

/// Whether an operation creates missing fields on its way.
fn creates_path(operation: &Operation) -> bool {
    !matches!(
        operation,
        Operation::Unset
            | Operation::Pop { .. }
            | Operation::Pull(_)
            | Operation::PullAll(_)
            | Operation::Rename(_)
    )
}

/// A container a path step lands in.
enum Slot<'a> {
    Field(&'a mut Document, String),
    Element(&'a mut Vec<Bson>, usize),
}

impl Slot<'_> {
    fn get(&self) -> Option<&Bson> {
        match self {
            Slot::Field(document, key) => document.get(key.as_str()),
            Slot::Element(items, index) => items.get(*index),
        }
    }

    fn set(&mut self, value: Bson) {
        match self {
            Slot::Field(document, key) => {
                document.insert(key.clone(), value);
            }
            Slot::Element(items, index) => {
                while items.len() <= *index {
                    items.push(Bson::Null);
                }
                items[*index] = value;
            }
        }
    }

    fn remove(&mut self) {
        match self {
            Slot::Field(document, key) => {
                document.remove(key.as_str());
            }
            Slot::Element(items, index) => {
                if *index < items.len() {
                    items[*index] = Bson::Null;
                }
            }
        }
    }
}

/// Largest array index an update may create by padding, in elements (MongoDB: 1,500,000).
const UPDATE_ARRAY_PADDING_ELEMENTS_MAX: usize = 1_500_000;

impl Applier<'_> {
    fn apply(
        &mut self,
        document: &mut Document,
        path: &UpdatePath,
        operation: &Operation,
    ) -> Result<()> {
        if let Operation::SetOnInsert(_) = operation
            && !self.context.is_insert
        {
            return Ok(());
        }
        if let Operation::Rename(destination) = operation {
            return self.rename(document, path, destination);
        }
        let mut parts = path.parts.clone();
        for part in &mut parts {
            if *part == PathPart::Positional {
                match self.context.matched_position {
                    Some(position) if !self.context.is_insert => {
                        *part = PathPart::Field(position.to_string());
                    }
                    _ => {
                        return Err(Error::bad_value(
                            "The positional operator did not find the match needed from the query.",
                        ));
                    }
                }
            }
        }
        self.walk_document(document, &parts, 0, path, operation)
    }

    fn walk_document(
        &mut self,
        document: &mut Document,
        parts: &[PathPart],
        index: usize,
        path: &UpdatePath,
        operation: &Operation,
    ) -> Result<()> {
        let PathPart::Field(name) = &parts[index] else {
            return Err(Error::bad_value(format!(
                "Cannot apply array updates to non-array element {}",
                Bson::Document(document.clone())
            )));
        };
        if index + 1 == parts.len() {
            return self.leaf(Slot::Field(document, name.clone()), path, operation);
        }
        if !document.contains_key(name.as_str()) {
            if !creates_path(operation) {
                return Ok(());
            }
            if !matches!(parts[index + 1], PathPart::Field(_)) {
                return Err(Error::bad_value(format!(
                    "The path '{}' must exist in the document in order to apply array updates.",
                    path.dotted
                        .split('.')
                        .take(index + 1)
                        .collect::<Vec<_>>()
                        .join(".")
                )));
            }
            document.insert(name.clone(), Bson::Document(Document::new()));
        }
        let child = document.get_mut(name.as_str()).expect("present");
        self.walk_value(child, parts, index + 1, path, operation)
    }

    /// `value` is the container reached before `parts[index]`.
    fn walk_value(
        &mut self,
        value: &mut Bson,
        parts: &[PathPart],
        index: usize,
        path: &UpdatePath,
        operation: &Operation,
    ) -> Result<()> {
        match value {
            Bson::Document(inner) => self.walk_document(inner, parts, index, path, operation),
            Bson::Array(items) => {
                let positions: Vec<usize> = match &parts[index] {
                    PathPart::Field(name) if is_array_index(name) => {
                        let position = name.parse::<usize>().unwrap_or(usize::MAX);
                        if position >= items.len() && !creates_path(operation) {
                            return Ok(());
                        }
                        if position > UPDATE_ARRAY_PADDING_ELEMENTS_MAX {
                            return Err(Error::bad_value(format!(
                                "can't backfill array to larger than 1500000 elements: {}",
                                path.dotted
                            )));
                        }
                        vec![position]
                    }
                    PathPart::Field(name) => {
                        if !creates_path(operation) {
                            return Ok(());
                        }
                        return Err(Error::new(
                            ErrorCode::PathNotViable,
                            format!(
                                "Cannot create field '{name}' in element {{{}: {}}}",
                                parts_name(parts, index),
                                Bson::Array(items.clone())
                            ),
                        ));
                    }
                    PathPart::AllElements => (0..items.len()).collect(),
                    PathPart::Filtered(identifier) => {
                        let filter = &self.array_filters[identifier];
                        let mut positions = Vec::new();
                        for (position, item) in items.iter().enumerate() {
                            let wrapped = bson::doc! {identifier.clone(): item.clone()};
                            if filter.matches_checked(&wrapped)? {
                                positions.push(position);
                            }
                        }
                        positions
                    }
                    PathPart::Positional => unreachable!("resolved before walking"),
                };
                for position in positions {
                    if index + 1 == parts.len() {
                        self.leaf(Slot::Element(items, position), path, operation)?;
                        continue;
                    }
                    if position >= items.len() {
                        while items.len() < position {
                            items.push(Bson::Null);
                        }
                        items.push(Bson::Document(Document::new()));
                    }
                    let item = &mut items[position];
                    if matches!(item, Bson::Null)
                        && creates_path(operation)
                        && matches!(parts[index + 1], PathPart::Field(_))
                    {
                        *item = Bson::Document(Document::new());
                    }
                    self.walk_value(item, parts, index + 1, path, operation)?;
                }
                Ok(())
            }
            other => {
                if !creates_path(operation) {
                    return Ok(());
                }
                match &parts[index] {
                    PathPart::Field(name) => Err(Error::new(
                        ErrorCode::PathNotViable,
                        format!(
                            "Cannot create field '{name}' in element {{{}: {}}}",
                            parts_name(parts, index),
                            other
                        ),
                    )),
                    _ => Err(Error::bad_value(format!(
                        "Cannot apply array updates to non-array element {}: {}",
                        parts_name(parts, index),
                        other
                    ))),
                }
            }
        }
    }

    fn leaf(&mut self, mut slot: Slot<'_>, path: &UpdatePath, operation: &Operation) -> Result<()> {
        let field = path.dotted.as_str();
        let existing = slot.get().cloned();
        match operation {
            Operation::Set(value) | Operation::SetOnInsert(value) => slot.set(value.clone()),
            Operation::Unset => {
                if existing.is_some() {
                    slot.remove();
                }
            }
            Operation::Inc(delta) | Operation::Mul(delta) => {
                let is_inc = matches!(operation, Operation::Inc(_));
                let result = match &existing {
                    None => {
                        if is_inc {
                            delta.clone()
                        } else {
                            arithmetic(
                                Arithmetic::Multiply,
                                &Bson::Int32(0),
                                delta,
                                ArithmeticOverflow::Fail,
                            )
                            .expect("zero times anything fits")
                        }
                    }
                    Some(current) if is_number(current) => {
                        let op = if is_inc {
                            Arithmetic::Add
                        } else {
                            Arithmetic::Multiply
                        };
                        match arithmetic(op, current, delta, ArithmeticOverflow::Fail) {
                            Some(v) => v,
                            None => {
                                return Err(Error::bad_value(format!(
                                    "Failed to apply {} operations to current value ({}) for document {{_id: {}}}",
                                    if is_inc { "$inc" } else { "$mul" },
                                    current,
                                    self.id_for_errors()
                                )));
                            }
                        }
                    }
                    Some(current) => {
                        return Err(Error::type_mismatch(format!(
                            "Cannot apply {} to a value of non-numeric type. {{_id: {}}} has the field '{}' of non-numeric type {}",
                            if is_inc { "$inc" } else { "$mul" },
                            self.id_for_errors(),
                            last_name(field),
                            type_name(current)
                        )));
                    }
                };
                slot.set(result);
            }
            Operation::Min(value) | Operation::Max(value) => {
                let replace = match &existing {
                    None => true,
                    Some(current) => {
                        let ordering = compare_values(value, current);
                        if matches!(operation, Operation::Min(_)) {
                            ordering == Ordering::Less
                        } else {
                            ordering == Ordering::Greater
                        }
                    }
                };
                if replace {
                    slot.set(value.clone());
                }
            }
            Operation::CurrentDate { timestamp } => slot.set(if *timestamp {
                Bson::Timestamp(self.context.now_timestamp)
            } else {
                Bson::DateTime(self.context.now)
            }),
            Operation::Push(spec) => {
                let mut items = match existing {
                    None => Vec::new(),
                    Some(Bson::Array(items)) => items,
                    Some(other) => {
                        return Err(Error::bad_value(format!(
                            "The field '{}' must be an array but is of type {} in document {{_id: {}}}",
                            last_name(field),
                            type_name(&other),
                            self.id_for_errors()
                        )));
                    }
                };
                let position = match spec.position {
                    None => items.len(),
                    Some(p) if p >= 0 => (p as usize).min(items.len()),
                    Some(p) => items.len().saturating_sub(p.unsigned_abs() as usize),
                };
                items.splice(position..position, spec.each.iter().cloned());
                if let Some(sort) = &spec.sort {
                    match sort {
                        PushSort::Whole { descending } => items.sort_by(|a, b| {
                            let ordering = compare_values(a, b);
                            if *descending {
                                ordering.reverse()
                            } else {
                                ordering
                            }
                        }),
                        PushSort::Fields(spec) => {
                            items.sort_by(|a, b| spec.compare_values_as_documents(a, b))
                        }
                    }
                }
                if let Some(slice) = spec.slice {
                    if slice >= 0 {
                        items.truncate(slice as usize);
                    } else {
                        let keep = slice.unsigned_abs() as usize;
                        if items.len() > keep {
                            items.drain(..items.len() - keep);
                        }
                    }
                }
                slot.set(Bson::Array(items));
            }
            Operation::AddToSet(values) => {
                let mut items = match existing {
                    None => Vec::new(),
                    Some(Bson::Array(items)) => items,
                    Some(other) => {
                        return Err(Error::bad_value(format!(
                            "Cannot apply $addToSet to non-array field. Field named '{}' has non-array type {}",
                            last_name(field),
                            type_name(&other)
                        )));
                    }
                };
                for value in values {
                    if !items
                        .iter()
                        .any(|item| compare_values(item, value) == Ordering::Equal)
                    {
                        items.push(value.clone());
                    }
                }
                slot.set(Bson::Array(items));
            }
            Operation::Pop { first } => match existing {
                None => {}
                Some(Bson::Array(mut items)) if !items.is_empty() => {
                    if *first {
                        items.remove(0);
                    } else {
                        items.pop();
                    }
                    slot.set(Bson::Array(items));
                }
                Some(other) => {
                    return Err(Error::type_mismatch(format!(
                        "Path '{field}' contains an element of non-array type '{}'",
                        type_name(&other)
                    )));
                }
            },
            Operation::Pull(condition) => match existing {
                None => {}
                Some(Bson::Array(items)) => {
                    let mut kept = Vec::with_capacity(items.len());
                    for item in items {
                        if !pull_matches(condition, &item)? {
                            kept.push(item);
                        }
                    }
                    slot.set(Bson::Array(kept));
                }
                Some(_) => return Err(Error::bad_value("Cannot apply $pull to a non-array value")),
            },
            Operation::PullAll(values) => match existing {
                None => {}
                Some(Bson::Array(items)) => {
                    let kept: Vec<Bson> = items
                        .into_iter()
                        .filter(|item| {
                            !values
                                .iter()
                                .any(|v| compare_values(v, item) == Ordering::Equal)
                        })
                        .collect();
                    slot.set(Bson::Array(kept));
                }
                Some(_) => return Err(Error::bad_value("Cannot apply $pull to a non-array value")),
            },
            Operation::Rename(_) => unreachable!("renames are applied separately"),
        }
        Ok(())
    }

    fn id_for_errors(&self) -> String {
        self.document_for_errors
            .get("_id")
            .map(|id| id.to_string())
            .unwrap_or_else(|| "null".into())
    }

    fn rename(
        &mut self,
        document: &mut Document,
        source: &UpdatePath,
        destination: &UpdatePath,
    ) -> Result<()> {
        let source_parts: Vec<String> = source.dotted.split('.').map(str::to_owned).collect();
        // The source may not go through an array.
        let mut current = document as &Document;
        for (index, part) in source_parts.iter().enumerate() {
            match current.get(part) {
                None => return Ok(()),
                Some(Bson::Document(inner)) if index + 1 < source_parts.len() => current = inner,
                Some(Bson::Array(_)) if index + 1 < source_parts.len() => {
                    return Err(Error::bad_value(format!(
                        "The source field cannot be an array element, '{}' in doc with {} being an array",
                        source.dotted, part
                    )));
                }
                Some(_) if index + 1 < source_parts.len() => return Ok(()),
                Some(_) => {}
            }
        }
        let destination_parts: Vec<String> =
            destination.dotted.split('.').map(str::to_owned).collect();
        let mut probe = document as &Document;
        for part in &destination_parts[..destination_parts.len() - 1] {
            match probe.get(part) {
                Some(Bson::Document(inner)) => probe = inner,
                Some(Bson::Array(_)) => {
                    return Err(Error::bad_value(format!(
                        "The destination field cannot be an array element, '{}' in doc with {} being an array",
                        destination.dotted, part
                    )));
                }
                _ => break,
            }
        }
        let value = crate::path::get_exact(document, &source_parts)
            .cloned()
            .expect("checked above");
        // Remove the source, then set the destination.
        let unset = Operation::Unset;
        self.walk_document(document, &field_parts(&source_parts), 0, source, &unset)?;
        let set = Operation::Set(value);
        self.walk_document(
            document,
            &field_parts(&destination_parts),
            0,
            destination,
            &set,
        )
    }
}

fn field_parts(parts: &[String]) -> Vec<PathPart> {
    parts.iter().map(|p| PathPart::Field(p.clone())).collect()
}

fn parts_name(parts: &[PathPart], index: usize) -> String {
    match index.checked_sub(1).map(|i| &parts[i]) {
        Some(PathPart::Field(name)) => name.clone(),
        Some(PathPart::AllElements) => "$[]".into(),
        Some(PathPart::Filtered(id)) => format!("$[{id}]"),
        _ => String::new(),
    }
}

fn last_name(dotted: &str) -> &str {
    dotted.rsplit('.').next().unwrap_or(dotted)
}

fn pull_matches(condition: &PullCondition, item: &Bson) -> Result<bool> {
    match condition {
        PullCondition::Equals(value) => Ok(compare_values(value, item) == Ordering::Equal),
        PullCondition::Matches(matcher, true) => {
            matcher.matches_checked(&bson::doc! {"e": [item.clone()]})
        }
        PullCondition::Matches(matcher, false) => match item {
            Bson::Document(document) => matcher.matches_checked(document),
            _ => Ok(false),
        },
    }
}

/// The document an upsert starts from: the equality fields of the query (`{a: 1, "b.c": 2}`
/// becomes `{a: 1, b: {c: 2}}`), `$and` children included.
pub fn upsert_seed(query: &Matcher) -> Result<Document> {
    let mut seed = Document::new();
    let mut paths: Vec<String> = Vec::new();
    collect_equalities(query.root(), &mut seed, &mut paths)?;
    Ok(seed)
}

fn collect_equalities(node: &Node, seed: &mut Document, paths: &mut Vec<String>) -> Result<()> {
    match node {
        Node::And(children) => {
            for child in children {
                collect_equalities(child, seed, paths)?;
            }
        }
        Node::Leaf { path, predicate } => {
            let value = match predicate {
                Predicate::Eq(value) => value.clone(),
                Predicate::In(list) if list.values.len() == 1 && list.regexes.is_empty() => {
                    list.values[0].clone()
                }
                _ => return Ok(()),
            };
            if path
                .parts()
                .iter()
                .any(|p| p.starts_with('$') || p.is_empty())
            {
                return Ok(());
            }
            let dotted = path.dotted();
            for existing in paths.iter() {
                let existing_path = FieldPath::parse(existing);
                if existing_path.is_prefix_of(path) || path.is_prefix_of(&existing_path) {
                    return Err(Error::new(
                        ErrorCode::NotSingleValueField,
                        format!(
                            "cannot infer query fields to set, path '{dotted}' is matched twice"
                        ),
                    ));
                }
            }
            paths.push(dotted);
            let set = Update::Operators {
                operations: vec![(UpdatePath::parse(&path.dotted())?, Operation::Set(value))],
                array_filters: BTreeMap::new(),
            };
            let context = UpdateContext::new(bson::DateTime::from_millis(0));
            *seed = set.apply(seed, &context)?.document;
        }
        _ => {}
    }
    Ok(())
}

/// The document an upsert inserts: the seed from the query with the update applied
/// (`$setOnInsert` included); for a replacement, the replacement with the query's `_id`.
/// `_id` is left missing when neither gives one: the caller generates an ObjectId.
pub fn upsert_document(query: &Matcher, update: &Update, now: bson::DateTime) -> Result<Document> {
    let seed = upsert_seed(query)?;
    match update {
        Update::Replacement(replacement) => {
            let mut document = Document::new();
            if let Some(id) = replacement.get("_id").or_else(|| seed.get("_id")) {
                document.insert("_id", id.clone());
            }
            for (key, value) in replacement {
                if key != "_id" {
                    document.insert(key.clone(), value.clone());
                }
            }
            Ok(document)
        }
        Update::Operators { .. } => {
            let mut context = UpdateContext::new(now);
            context.is_insert = true;
            let mut document = update.apply(&seed, &context)?.document;
            // _id first, as MongoDB stores it.
            if let Some(id) = document.remove("_id") {
                let mut ordered = bson::doc! {"_id": id};
                ordered.extend(document);
                document = ordered;
            }
            Ok(document)
        }
    }
}
