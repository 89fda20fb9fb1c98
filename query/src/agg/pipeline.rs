//! Aggregation pipelines: parsing the stages and running them over an iterator of documents.
//!
//! Stages: `$match $project $addFields/$set $unset $group $sort $skip $limit $unwind $count
//! $lookup` (equality form) `$replaceRoot/$replaceWith`. Streaming stages are lazy iterator
//! adaptors; `$sort` and `$group` drain their input on first use.
//!
//! The executor supplies the input (a collection scan or the result of a planned find: see
//! [`Pipeline::pushdown`], which hands the leading `$match`, `$sort` and `$limit` to the planner)
//! and implements [`PipelineSource`] for `$lookup`'s reads.
//!
//! Memory: `$sort` and `$group` count the approximate bytes they hold. Past
//! [`AggregateOptions::memory_bytes_max`] (100 MB by default) they fail with
//! QueryExceededMemoryLimitNoDiskUseAllowed (292), unless `allowDiskUse`: then `$sort` spills
//! sorted runs to anonymous temporary files and merges them, and `$group` spills its partial
//! groups as key-ordered runs and merges them (its output is then in key order, which MongoDB
//! leaves unspecified anyway).

use crate::agg::expression::{
    Expression, ParseContext, Variables, divide_for_average, sum_numbers,
};
use crate::matcher::Matcher;
use crate::path::FieldPath;
use crate::projection::Projection;
use crate::sort::{SORT_MEMORY_BYTES_MAX, SortSpec};
use crate::value::type_name;
use bson::{Bson, Document};
use cairn_types::order::{compare_values, is_number};
use cairn_types::{Error, ErrorCode, Result};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};

/// A stream of documents between stages.
pub type DocumentStream<'a> = Box<dyn Iterator<Item = Result<Document>> + 'a>;

/// Reads the executor does on behalf of a pipeline.
pub trait PipelineSource {
    /// The documents of `collection` (same database) matching `filter`. `$lookup` asks for
    /// `{foreignField: {$in: [values]}}`, which an index on `foreignField` can answer.
    fn find(&mut self, collection: &str, filter: &Document) -> Result<Vec<Document>>;
}

/// A source for pipelines without `$lookup` (it fails if asked).
pub struct NoSource;

impl PipelineSource for NoSource {
    fn find(&mut self, collection: &str, _filter: &Document) -> Result<Vec<Document>> {
        Err(Error::internal(format!(
            "no source to read '{collection}' from"
        )))
    }
}

/// Options of the aggregate command that change execution.
#[derive(Clone, Debug)]
pub struct AggregateOptions {
    pub allow_disk_use: bool,
    /// Memory a blocking stage may hold, in bytes (100 MB, MongoDB's default).
    pub memory_bytes_max: usize,
    /// `let` variables.
    pub variables: Document,
}

impl Default for AggregateOptions {
    fn default() -> AggregateOptions {
        AggregateOptions {
            allow_disk_use: false,
            memory_bytes_max: SORT_MEMORY_BYTES_MAX,
            variables: Document::new(),
        }
    }
}

/// A `$group` accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accumulator {
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    Push,
    AddToSet,
    Count,
}

/// One parsed stage.
#[derive(Clone, Debug)]
pub enum Stage {
    Match(Box<Matcher>),
    Project(Box<Projection>),
    AddFields(Vec<(Vec<String>, Expression)>),
    Unset(Box<Projection>),
    Group {
        id: Expression,
        fields: Vec<(String, Accumulator, Expression)>,
    },
    Sort(SortSpec),
    Skip(u64),
    Limit(u64),
    Unwind {
        path: Vec<String>,
        include_array_index: Option<String>,
        preserve_null_and_empty_arrays: bool,
    },
    Count(String),
    Lookup {
        from: String,
        local_field: FieldPath,
        foreign_field: String,
        as_field: Vec<String>,
    },
    ReplaceRoot(Expression),
}

impl Stage {
    /// The stage's name, as explain prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Match(_) => "$match",
            Stage::Project(_) => "$project",
            Stage::AddFields(_) => "$addFields",
            Stage::Unset(_) => "$project",
            Stage::Group { .. } => "$group",
            Stage::Sort(_) => "$sort",
            Stage::Skip(_) => "$skip",
            Stage::Limit(_) => "$limit",
            Stage::Unwind { .. } => "$unwind",
            Stage::Count(_) => "$count",
            Stage::Lookup { .. } => "$lookup",
            Stage::ReplaceRoot(_) => "$replaceRoot",
        }
    }
}

/// A parsed pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub stages: Vec<Stage>,
    pub sources: Vec<Document>,
    pub options: AggregateOptions,
}

/// What the planner can take over from the front of a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Pushdown {
    /// The leading `$match` filters, ANDed (empty: none).
    pub filter: Document,
    /// A `$sort` right after them.
    pub sort: Option<SortSpec>,
    /// A `$limit` right after that sort.
    pub limit: Option<u64>,
    /// How many stages the pushdown covers; run the pipeline from this stage on.
    pub stages_consumed: usize,
}

fn location(code: i32, message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Location(code), message)
}

fn memory_exceeded(stage: &str) -> Error {
    Error::new(
        ErrorCode::QueryExceededMemoryLimitNoDiskUseAllowed,
        format!(
            "Exceeded memory limit for {stage}, but didn't allow external sort. Pass allowDiskUse:true to opt in."
        ),
    )
}

/// Approximate bytes a value holds in memory (for the blocking stages' limits).
pub fn approximate_size(value: &Bson) -> usize {
    match value {
        Bson::String(s) | Bson::Symbol(s) | Bson::JavaScriptCode(s) => 24 + s.len(),
        Bson::Document(d) => document_size(d),
        Bson::Array(items) => 24 + items.iter().map(approximate_size).sum::<usize>(),
        Bson::Binary(b) => 32 + b.bytes.len(),
        _ => 16,
    }
}

/// Approximate bytes a document holds in memory.
pub fn document_size(document: &Document) -> usize {
    48 + document
        .iter()
        .map(|(k, v)| 24 + k.len() + approximate_size(v))
        .sum::<usize>()
}

impl Pipeline {
    /// Parses a pipeline (the `pipeline` array of aggregate).
    pub fn parse(pipeline: &[Bson], options: AggregateOptions) -> Result<Pipeline> {
        let context = ParseContext::with_variables(options.variables.keys().cloned().collect());
        let mut stages = Vec::with_capacity(pipeline.len());
        let mut sources = Vec::with_capacity(pipeline.len());
        for entry in pipeline {
            let Bson::Document(stage) = entry else {
                return Err(Error::type_mismatch(
                    "Each element of the 'pipeline' array must be an object",
                ));
            };
            if stage.len() != 1 {
                return Err(location(
                    40323,
                    "A pipeline stage specification object must contain exactly one field.",
                ));
            }
            let (name, argument) = stage.iter().next().expect("one field");
            stages.push(parse_stage(name, argument, &context, &options)?);
            sources.push(stage.clone());
        }
        Ok(Pipeline {
            stages,
            sources,
            options,
        })
    }

    /// The leading `$match` stages, a `$sort` after them and a `$limit` after that, for the
    /// planner. A `$match` that uses `$expr` with `let` variables is still pushed down: the
    /// executor parses the filter with the same `let`.
    pub fn pushdown(&self) -> Pushdown {
        let mut filters: Vec<Bson> = Vec::new();
        let mut index = 0;
        while let Some(Stage::Match(_)) = self.stages.get(index) {
            filters.push(
                self.sources[index]
                    .get("$match")
                    .cloned()
                    .unwrap_or_default(),
            );
            index += 1;
        }
        let filter = match filters.len() {
            0 => Document::new(),
            1 => match filters.pop() {
                Some(Bson::Document(d)) => d,
                _ => Document::new(),
            },
            _ => bson::doc! {"$and": filters},
        };
        let mut sort = None;
        let mut limit = None;
        if let Some(Stage::Sort(spec)) = self.stages.get(index) {
            sort = Some(spec.clone());
            index += 1;
            if let Some(Stage::Limit(n)) = self.stages.get(index) {
                limit = Some(*n);
                index += 1;
            }
        }
        Pushdown {
            filter,
            sort,
            limit,
            stages_consumed: index,
        }
    }

    /// Runs the stages from `first_stage` on over `input`.
    pub fn execute<'a>(
        &'a self,
        first_stage: usize,
        input: DocumentStream<'a>,
        source: &'a mut dyn PipelineSource,
    ) -> DocumentStream<'a> {
        let mut stream = input;
        let source_cell = std::rc::Rc::new(std::cell::RefCell::new(source));
        for stage in &self.stages[first_stage.min(self.stages.len())..] {
            stream = self.apply(stage, stream, source_cell.clone());
        }
        stream
    }

    /// Runs the whole pipeline over `input` and collects the result.
    pub fn run(
        &self,
        input: Vec<Document>,
        source: &mut dyn PipelineSource,
    ) -> Result<Vec<Document>> {
        self.execute(0, Box::new(input.into_iter().map(Ok)), source)
            .collect()
    }

    fn variables(&self) -> &Document {
        &self.options.variables
    }

    fn apply<'a>(
        &'a self,
        stage: &'a Stage,
        input: DocumentStream<'a>,
        source: std::rc::Rc<std::cell::RefCell<&'a mut dyn PipelineSource>>,
    ) -> DocumentStream<'a> {
        match stage {
            Stage::Match(matcher) => Box::new(input.filter_map(move |item| match item {
                Ok(document) => match matcher.matches_checked(&document) {
                    Ok(true) => Some(Ok(document)),
                    Ok(false) => None,
                    Err(error) => Some(Err(error)),
                },
                Err(error) => Some(Err(error)),
            })),
            Stage::Project(projection) | Stage::Unset(projection) => Box::new(input.map(move |item| {
                item.and_then(|document| projection.apply_with(&document, None, Some(self.variables())))
            })),
            Stage::AddFields(fields) => Box::new(input.map(move |item| {
                let document = item?;
                let variables = Variables::with_bound(&document, self.variables());
                let mut values = Vec::with_capacity(fields.len());
                for (_, expression) in fields {
                    values.push(expression.evaluate(&variables)?);
                }
                let mut output = document.clone();
                for ((path, expression), value) in fields.iter().zip(values) {
                    add_field(&mut output, path, expression, value, &document, self.variables())?;
                }
                Ok(output)
            })),
            Stage::Skip(n) => Box::new(input.skip(*n as usize)),
            Stage::Limit(n) => Box::new(input.take(*n as usize)),
            Stage::Unwind { path, include_array_index, preserve_null_and_empty_arrays } => {
                Box::new(input.flat_map(move |item| -> Vec<Result<Document>> {
                    match item {
                        Ok(document) => unwind(&document, path, include_array_index.as_deref(), *preserve_null_and_empty_arrays)
                            .into_iter()
                            .map(Ok)
                            .collect(),
                        Err(error) => vec![Err(error)],
                    }
                }))
            }
            Stage::Count(field) => {
                let mut input = Some(input);
                Box::new(std::iter::from_fn(move || {
                    let input = input.take()?;
                    let mut count: i64 = 0;
                    for item in input {
                        if let Err(error) = item {
                            return Some(Err(error));
                        }
                        count += 1;
                    }
                    (count > 0).then(|| Ok(bson::doc! {field.clone(): if let Ok(small) = i32::try_from(count) { Bson::Int32(small) } else { Bson::Int64(count) }}))
                }))
            }
            Stage::ReplaceRoot(expression) => Box::new(input.map(move |item| {
                let document = item?;
                let variables = Variables::with_bound(&document, self.variables());
                match expression.evaluate(&variables)? {
                    Some(Bson::Document(root)) => Ok(root),
                    other => Err(location(
                        40228,
                        format!(
                            "'newRoot' expression must evaluate to an object, but resulting value was: {}. Type of resulting value: '{}'. Input document: {}",
                            other.as_ref().map_or("MISSING".to_owned(), |v| v.to_string()),
                            other.as_ref().map_or("missing", type_name),
                            document
                        ),
                    )),
                }
            })),
            Stage::Lookup { from, local_field, foreign_field, as_field } => {
                Box::new(input.map(move |item| {
                    let mut document = item?;
                    let mut values: Vec<Bson> = crate::path::key_values(&document, local_field.parts());
                    values.retain(|v| !matches!(v, Bson::Undefined));
                    if values.is_empty() {
                        values.push(Bson::Null);
                    }
                    let filter = bson::doc! {foreign_field.clone(): {"$in": values}};
                    let matches = source.borrow_mut().find(from, &filter)?;
                    let joined = Bson::Array(matches.into_iter().map(Bson::Document).collect());
                    set_path(&mut document, as_field, joined);
                    Ok(document)
                }))
            }
            Stage::Sort(spec) => {
                let mut input = Some(input);
                let mut output: Option<Box<dyn Iterator<Item = Result<Document>>>> = None;
                let options = &self.options;
                Box::new(std::iter::from_fn(move || {
                    if let Some(input) = input.take() {
                        output = Some(match sort_stream(spec, input, options) {
                            Ok(sorted) => sorted,
                            Err(error) => Box::new(std::iter::once(Err(error))),
                        });
                    }
                    output.as_mut()?.next()
                }))
            }
            Stage::Group { id, fields } => {
                let mut input = Some(input);
                let mut output: Option<std::vec::IntoIter<Result<Document>>> = None;
                Box::new(std::iter::from_fn(move || {
                    if let Some(input) = input.take() {
                        output = Some(match group(id, fields, input, &self.options) {
                            Ok(groups) => groups.into_iter().map(Ok).collect::<Vec<_>>().into_iter(),
                            Err(error) => vec![Err(error)].into_iter(),
                        });
                    }
                    output.as_mut()?.next()
                }))
            }
        }
    }
}

fn parse_stage(
    name: &str,
    argument: &Bson,
    context: &ParseContext,
    options: &AggregateOptions,
) -> Result<Stage> {
    Ok(match name {
        "$match" => {
            let Bson::Document(filter) = argument else {
                return Err(location(
                    15959,
                    "the match filter must be an expression in an object",
                ));
            };
            Stage::Match(Box::new(Matcher::parse_with_let(
                filter,
                Some(&options.variables),
            )?))
        }
        "$project" => {
            let Bson::Document(spec) = argument else {
                return Err(location(15969, "$project specification must be an object"));
            };
            if spec.is_empty() {
                return Err(location(
                    51272,
                    "Invalid $project :: caused by :: projection specification must have at least one field",
                ));
            }
            Stage::Project(Box::new(Projection::parse_with(spec, context, false)?))
        }
        "$addFields" | "$set" => {
            let Bson::Document(spec) = argument else {
                return Err(location(
                    40272,
                    format!(
                        "{name} specification stage must be an object, got {}",
                        type_name(argument)
                    ),
                ));
            };
            let mut fields = Vec::with_capacity(spec.len());
            for (field, value) in spec {
                if field.is_empty() || field.split('.').any(|p| p.is_empty() || p.starts_with('$'))
                {
                    return Err(location(
                        16410,
                        format!(
                            "FieldPath field names may not be empty or start with '$': '{field}'"
                        ),
                    ));
                }
                fields.push((
                    field.split('.').map(str::to_owned).collect(),
                    Expression::parse_with(value, context)?,
                ));
            }
            Stage::AddFields(fields)
        }
        "$unset" => {
            let names: Vec<&str> = match argument {
                Bson::String(name) => vec![name.as_str()],
                Bson::Array(items) if !items.is_empty() => {
                    let mut names = Vec::new();
                    for item in items {
                        let Bson::String(name) = item else {
                            return Err(location(
                                31120,
                                "$unset specification must be a string or an array containing only string values",
                            ));
                        };
                        names.push(name.as_str());
                    }
                    names
                }
                _ => {
                    return Err(location(
                        31002,
                        "$unset specification must be a string or an array with at least one field",
                    ));
                }
            };
            let mut spec = Document::new();
            for name in names {
                spec.insert(name, 0);
            }
            Stage::Unset(Box::new(Projection::parse_with(&spec, context, false)?))
        }
        "$group" => parse_group(argument, context)?,
        "$sort" => {
            let Bson::Document(spec) = argument else {
                return Err(location(
                    15973,
                    "the $sort key specification must be an object",
                ));
            };
            if spec.is_empty() {
                return Err(location(
                    15976,
                    "$sort stage must have at least one sort key",
                ));
            }
            Stage::Sort(SortSpec::parse(spec)?)
        }
        "$skip" | "$limit" => {
            let value = crate::value::as_exact_i64(argument).filter(|_| is_number(argument));
            match (name, value) {
                (_, None) => {
                    return Err(location(
                        if name == "$skip" { 15972 } else { 15957 },
                        format!(
                            "invalid argument to {name} stage: Expected an integer: {name}: {argument}"
                        ),
                    ));
                }
                ("$skip", Some(n)) if n < 0 => {
                    return Err(location(
                        5107200,
                        format!(
                            "invalid argument to $skip stage: Expected a non-negative number in: $skip: {n}"
                        ),
                    ));
                }
                ("$skip", Some(n)) => Stage::Skip(n as u64),
                (_, Some(n)) if n <= 0 => {
                    return Err(location(15958, "the limit must be positive"));
                }
                (_, Some(n)) => Stage::Limit(n as u64),
            }
        }
        "$unwind" => parse_unwind(argument)?,
        "$count" => {
            let Bson::String(field) = argument else {
                return Err(location(
                    40156,
                    "the count field must be a non-empty string",
                ));
            };
            if field.is_empty() {
                return Err(location(
                    40157,
                    "the count field must be a non-empty string",
                ));
            }
            if field.starts_with('$') {
                return Err(location(
                    40158,
                    "the count field cannot be a $-prefixed path",
                ));
            }
            if field.contains('.') {
                return Err(location(40160, "the count field cannot contain '.'"));
            }
            Stage::Count(field.clone())
        }
        "$lookup" => parse_lookup(argument)?,
        "$replaceRoot" => {
            let Bson::Document(spec) = argument else {
                return Err(location(
                    40229,
                    "expected an object as specification for $replaceRoot stage",
                ));
            };
            for key in spec.keys() {
                if key != "newRoot" {
                    return Err(location(
                        40415,
                        format!("BSON field '$replaceRoot.{key}' is an unknown field."),
                    ));
                }
            }
            let Some(root) = spec.get("newRoot") else {
                return Err(location(
                    40414,
                    "BSON field '$replaceRoot.newRoot' is missing but a required field",
                ));
            };
            Stage::ReplaceRoot(Expression::parse_with(root, context)?)
        }
        "$replaceWith" => Stage::ReplaceRoot(Expression::parse_with(argument, context)?),
        "$out" | "$merge" | "$facet" | "$bucket" | "$bucketAuto" | "$graphLookup" | "$sample"
        | "$geoNear" | "$sortByCount" | "$redact" | "$unionWith" | "$densify" | "$fill"
        | "$setWindowFields" => {
            return Err(Error::new(
                ErrorCode::NotImplemented,
                format!("{name} is not supported by cairn"),
            ));
        }
        other => {
            return Err(location(
                40324,
                format!("Unrecognized pipeline stage name: '{other}'"),
            ));
        }
    })
}

fn parse_group(argument: &Bson, context: &ParseContext) -> Result<Stage> {
    let Bson::Document(spec) = argument else {
        return Err(location(
            15947,
            "a group's fields must be specified in an object",
        ));
    };
    let mut id = None;
    let mut fields = Vec::new();
    for (name, value) in spec {
        if name == "_id" {
            id = Some(Expression::parse_with(value, context)?);
            continue;
        }
        if name.starts_with('$') {
            return Err(location(
                40236,
                format!("The field name '{name}' cannot be an operator name"),
            ));
        }
        if name.contains('.') {
            return Err(location(
                40235,
                format!("The field name '{name}' cannot contain '.'"),
            ));
        }
        let Bson::Document(accumulator) = value else {
            return Err(location(
                40234,
                format!("The field '{name}' must be an accumulator object"),
            ));
        };
        if accumulator.len() != 1 {
            return Err(location(
                40238,
                format!("The field '{name}' must specify one accumulator"),
            ));
        }
        let (operator, operand) = accumulator.iter().next().expect("one field");
        let kind = match operator.as_str() {
            "$sum" => Accumulator::Sum,
            "$avg" => Accumulator::Avg,
            "$min" => Accumulator::Min,
            "$max" => Accumulator::Max,
            "$first" => Accumulator::First,
            "$last" => Accumulator::Last,
            "$push" => Accumulator::Push,
            "$addToSet" => Accumulator::AddToSet,
            "$count" => {
                if !matches!(operand, Bson::Document(d) if d.is_empty()) {
                    return Err(location(
                        4544702,
                        "$count takes no arguments, i.e. $count:{}",
                    ));
                }
                Accumulator::Count
            }
            other => return Err(location(15952, format!("unknown group operator '{other}'"))),
        };
        if matches!(operand, Bson::Array(_)) && kind != Accumulator::Count {
            return Err(location(
                40237,
                format!("The {operator} accumulator is a unary operator"),
            ));
        }
        let expression = if kind == Accumulator::Count {
            Expression::Literal(Bson::Int32(1))
        } else {
            Expression::parse_with(operand, context)?
        };
        fields.push((name.clone(), kind, expression));
    }
    let Some(id) = id else {
        return Err(location(15955, "a group specification must include an _id"));
    };
    Ok(Stage::Group { id, fields })
}

fn parse_unwind(argument: &Bson) -> Result<Stage> {
    let (path, include_array_index, preserve) = match argument {
        Bson::String(path) => (path.clone(), None, false),
        Bson::Document(spec) => {
            let mut path = None;
            let mut include = None;
            let mut preserve = false;
            for (key, value) in spec {
                match key.as_str() {
                    "path" => match value {
                        Bson::String(p) => path = Some(p.clone()),
                        other => {
                            return Err(location(
                                28808,
                                format!(
                                    "expected a string as the path for $unwind stage, got {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    },
                    "includeArrayIndex" => match value {
                        Bson::String(name) if name.starts_with('$') => {
                            return Err(location(
                                28822,
                                format!(
                                    "includeArrayIndex option to $unwind stage should not be prefixed with a '$': {name}"
                                ),
                            ));
                        }
                        Bson::String(name) if !name.is_empty() => include = Some(name.clone()),
                        other => {
                            return Err(location(
                                28810,
                                format!(
                                    "expected a non-empty string for the includeArrayIndex option to $unwind stage, got {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    },
                    "preserveNullAndEmptyArrays" => match value {
                        Bson::Boolean(b) => preserve = *b,
                        other => {
                            return Err(location(
                                28809,
                                format!(
                                    "expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage, got {}",
                                    type_name(other)
                                ),
                            ));
                        }
                    },
                    other => {
                        return Err(location(
                            28811,
                            format!("unrecognized option to $unwind stage: {other}"),
                        ));
                    }
                }
            }
            let Some(path) = path else {
                return Err(location(28812, "no path specified to $unwind stage"));
            };
            (path, include, preserve)
        }
        other => {
            return Err(location(
                15981,
                format!(
                    "expected either a string or an object as specification for $unwind stage, got {}",
                    type_name(other)
                ),
            ));
        }
    };
    let Some(stripped) = path.strip_prefix('$') else {
        return Err(location(
            28818,
            format!("path option to $unwind stage should be prefixed with a '$': {path}"),
        ));
    };
    let parts = crate::agg::expression::parse_field_path(stripped)?;
    Ok(Stage::Unwind {
        path: parts,
        include_array_index,
        preserve_null_and_empty_arrays: preserve,
    })
}

fn parse_lookup(argument: &Bson) -> Result<Stage> {
    let Bson::Document(spec) = argument else {
        return Err(Error::failed_to_parse(
            "the $lookup specification must be an Object",
        ));
    };
    let mut from = None;
    let mut local = None;
    let mut foreign = None;
    let mut as_field = None;
    for (key, value) in spec {
        let text = match value {
            Bson::String(text) => text.clone(),
            Bson::Document(_) if key == "from" => {
                return Err(Error::new(
                    ErrorCode::NotImplemented,
                    "$lookup from another database is not supported by cairn",
                ));
            }
            other => {
                if matches!(key.as_str(), "pipeline" | "let") {
                    return Err(Error::new(
                        ErrorCode::NotImplemented,
                        "$lookup with 'pipeline' or 'let' is not supported by cairn",
                    ));
                }
                return Err(Error::failed_to_parse(format!(
                    "$lookup argument '{key}: {other}' must be a string, is type {}",
                    type_name(other)
                )));
            }
        };
        match key.as_str() {
            "from" => from = Some(text),
            "localField" => local = Some(text),
            "foreignField" => foreign = Some(text),
            "as" => as_field = Some(text),
            "pipeline" | "let" => {
                return Err(Error::new(
                    ErrorCode::NotImplemented,
                    "$lookup with 'pipeline' or 'let' is not supported by cairn",
                ));
            }
            other => {
                return Err(Error::failed_to_parse(format!(
                    "unknown argument to $lookup: {other}"
                )));
            }
        }
    }
    let Some(as_field) = as_field else {
        return Err(Error::failed_to_parse(
            "must specify 'as' field for a $lookup",
        ));
    };
    let (Some(from), Some(local), Some(foreign)) = (from, local, foreign) else {
        return Err(Error::failed_to_parse(
            "$lookup requires either 'pipeline' or both 'localField' and 'foreignField' to be specified, and 'from'",
        ));
    };
    for path in [&local, &foreign, &as_field] {
        if path.is_empty() || path.starts_with('$') || path.split('.').any(str::is_empty) {
            return Err(location(
                16410,
                format!("FieldPath '{path}' is not valid in $lookup"),
            ));
        }
    }
    Ok(Stage::Lookup {
        from,
        local_field: FieldPath::parse(&local),
        foreign_field: foreign,
        as_field: as_field.split('.').map(str::to_owned).collect(),
    })
}

/// Sets a dotted path, creating (or replacing non-document values with) documents.
fn set_path(document: &mut Document, path: &[String], value: Bson) {
    let (first, rest) = path.split_first().expect("non-empty path");
    if rest.is_empty() {
        document.insert(first.clone(), value);
        return;
    }
    match document.get_mut(first.as_str()) {
        Some(Bson::Document(inner)) => set_path(inner, rest, value),
        Some(Bson::Array(items)) => {
            for item in items.iter_mut() {
                match item {
                    Bson::Document(inner) => set_path(inner, rest, value.clone()),
                    other => {
                        let mut inner = Document::new();
                        set_path(&mut inner, rest, value.clone());
                        *other = Bson::Document(inner);
                    }
                }
            }
        }
        _ => {
            let mut inner = Document::new();
            set_path(&mut inner, rest, value);
            document.insert(first.clone(), inner);
        }
    }
}

fn remove_path(document: &mut Document, path: &[String]) {
    let (first, rest) = path.split_first().expect("non-empty path");
    if rest.is_empty() {
        document.remove(first.as_str());
        return;
    }
    if let Some(Bson::Document(inner)) = document.get_mut(first.as_str()) {
        remove_path(inner, rest);
    }
}

/// `$addFields` of one field: an object expression merges into an existing embedded document.
fn add_field(
    output: &mut Document,
    path: &[String],
    expression: &Expression,
    value: Option<Bson>,
    root: &Document,
    variables: &Document,
) -> Result<()> {
    if let Expression::Object(fields) = expression {
        if let Some(Bson::Document(existing)) = crate::path::get_exact(output, path).cloned() {
            let mut merged = existing;
            let bound = Variables::with_bound(root, variables);
            for (name, inner) in fields {
                let inner_value = inner.evaluate(&bound)?;
                add_field(
                    &mut merged,
                    std::slice::from_ref(name),
                    inner,
                    inner_value,
                    root,
                    variables,
                )?;
            }
            set_path(output, path, Bson::Document(merged));
            return Ok(());
        }
    }
    match value {
        Some(value) => set_path(output, path, value),
        None => remove_path(output, path),
    }
    Ok(())
}

fn unwind(
    document: &Document,
    path: &[String],
    include_array_index: Option<&str>,
    preserve: bool,
) -> Vec<Document> {
    let value = crate::agg::expression::field_path_value(document, path);
    let with = |value: Option<Bson>, index: Option<i64>| {
        let mut output = document.clone();
        match value {
            Some(v) => set_path(&mut output, path, v),
            None => remove_path(&mut output, path),
        }
        if let Some(name) = include_array_index {
            output.insert(name, index.map_or(Bson::Null, Bson::Int64));
        }
        output
    };
    match value {
        Some(Bson::Array(items)) if !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| with(Some(item), Some(i as i64)))
            .collect(),
        Some(Bson::Array(_)) => {
            if preserve {
                vec![with(None, None)]
            } else {
                Vec::new()
            }
        }
        None | Some(Bson::Null) | Some(Bson::Undefined) => {
            if preserve {
                vec![document.clone()]
                    .into_iter()
                    .map(|d| {
                        let mut d = d;
                        if let Some(name) = include_array_index {
                            d.insert(name, Bson::Null);
                        }
                        d
                    })
                    .collect()
            } else {
                Vec::new()
            }
        }
        Some(other) => vec![with(Some(other), None)],
    }
}

/// An external merge sort's sorted run on disk.
struct Run {
    reader: BufReader<std::fs::File>,
    remaining: usize,
}

impl Run {
    fn next(&mut self) -> Result<Option<Document>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        Document::from_reader(&mut self.reader)
            .map(Some)
            .map_err(|e| Error::internal(format!("reading a sort spill file: {e}")))
    }
}

fn write_run(buffer: &mut Vec<(Vec<Bson>, u64, Document)>) -> Result<Run> {
    let file = tempfile::tempfile()
        .map_err(|e| Error::internal(format!("creating a sort spill file: {e}")))?;
    let mut writer = BufWriter::new(file);
    let remaining = buffer.len();
    for (_, _, document) in buffer.drain(..) {
        let bytes = bson::serialize_to_vec(&document)
            .map_err(|e| Error::internal(format!("serializing a spilled document: {e}")))?;
        writer
            .write_all(&bytes)
            .map_err(|e| Error::internal(format!("writing a sort spill file: {e}")))?;
    }
    let mut file = writer
        .into_inner()
        .map_err(|e| Error::internal(format!("flushing a sort spill file: {e}")))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::internal(format!("rewinding a sort spill file: {e}")))?;
    Ok(Run {
        reader: BufReader::new(file),
        remaining,
    })
}

/// Sorts documents within a memory limit: in memory while they fit, else (with allowDiskUse)
/// as sorted runs in anonymous temporary files merged at the end. With `keep` (a top-k sort for
/// `sort + limit`), only the first `keep` documents are kept. Stable: ties keep input order.
pub struct ExternalSorter {
    spec: SortSpec,
    memory_bytes_max: usize,
    allow_disk_use: bool,
    keep: Option<usize>,
    buffer: Vec<(Vec<Bson>, u64, Document)>,
    bytes: usize,
    sequence: u64,
    runs: Vec<Run>,
    /// Whose error to report: `$sort` or `find`.
    for_find: bool,
}

/// Smallest buffer a top-k sort lets grow before it truncates, in documents.
const TOP_K_BUFFER_DOCUMENTS_MIN: usize = 64;

impl ExternalSorter {
    pub fn new(
        spec: SortSpec,
        memory_bytes_max: usize,
        allow_disk_use: bool,
        keep: Option<usize>,
    ) -> ExternalSorter {
        ExternalSorter {
            spec,
            memory_bytes_max,
            allow_disk_use,
            keep,
            buffer: Vec::new(),
            bytes: 0,
            sequence: 0,
            runs: Vec::new(),
            for_find: false,
        }
    }

    /// Reports a memory overflow as find's SORT stage does.
    pub fn for_find(mut self) -> ExternalSorter {
        self.for_find = true;
        self
    }

    fn sort_buffer(&mut self) {
        let spec = &self.spec;
        self.buffer
            .sort_by(|a, b| spec.compare_keys(&a.0, &b.0).then(a.1.cmp(&b.1)));
    }

    pub fn push(&mut self, document: Document) -> Result<()> {
        self.bytes += document_size(&document);
        let key = self.spec.key(&document);
        self.buffer.push((key, self.sequence, document));
        self.sequence += 1;
        if let Some(keep) = self.keep {
            if self.buffer.len() >= (2 * keep).max(TOP_K_BUFFER_DOCUMENTS_MIN) {
                self.sort_buffer();
                self.buffer.truncate(keep);
                self.bytes = self.buffer.iter().map(|(_, _, d)| document_size(d)).sum();
            }
        }
        if self.bytes > self.memory_bytes_max {
            if !self.allow_disk_use {
                return Err(if self.for_find {
                    Error::new(
                        ErrorCode::QueryExceededMemoryLimitNoDiskUseAllowed,
                        format!(
                            "Executor error during find command :: caused by :: Sort exceeded memory limit of {} bytes, but did not opt in to external sorting.",
                            self.memory_bytes_max
                        ),
                    )
                } else {
                    memory_exceeded("$sort")
                });
            }
            self.sort_buffer();
            self.runs.push(write_run(&mut self.buffer)?);
            self.bytes = 0;
        }
        Ok(())
    }

    /// The sorted documents.
    pub fn finish(mut self) -> Result<Box<dyn Iterator<Item = Result<Document>>>> {
        let keep = self.keep.unwrap_or(usize::MAX);
        self.sort_buffer();
        if self.runs.is_empty() {
            return Ok(Box::new(
                self.buffer.into_iter().map(|(_, _, d)| Ok(d)).take(keep),
            ));
        }
        if !self.buffer.is_empty() {
            self.runs.push(write_run(&mut self.buffer)?);
        }
        let spec = self.spec;
        let mut runs = self.runs;
        // k-way merge; ties go to the earlier run, which holds earlier input (stable).
        let mut heads: Vec<Option<(Vec<Bson>, Document)>> = Vec::with_capacity(runs.len());
        for run in &mut runs {
            heads.push(run.next()?.map(|d| (spec.key(&d), d)));
        }
        Ok(Box::new(
            std::iter::from_fn(move || {
                let mut best: Option<usize> = None;
                for (index, head) in heads.iter().enumerate() {
                    if let Some((key, _)) = head {
                        let better = match best {
                            None => true,
                            Some(b) => {
                                spec.compare_keys(key, &heads[b].as_ref().expect("present").0)
                                    == Ordering::Less
                            }
                        };
                        if better {
                            best = Some(index);
                        }
                    }
                }
                let index = best?;
                let (_, document) = heads[index].take().expect("present");
                match runs[index].next() {
                    Ok(next) => heads[index] = next.map(|d| (spec.key(&d), d)),
                    Err(error) => return Some(Err(error)),
                }
                Some(Ok(document))
            })
            .take(keep),
        ))
    }
}

/// Sorts a stream within the memory limit, spilling sorted runs when allowed.
pub fn sort_stream(
    spec: &SortSpec,
    input: DocumentStream<'_>,
    options: &AggregateOptions,
) -> Result<Box<dyn Iterator<Item = Result<Document>>>> {
    let mut sorter = ExternalSorter::new(
        spec.clone(),
        options.memory_bytes_max,
        options.allow_disk_use,
        None,
    );
    for item in input {
        sorter.push(item?)?;
    }
    sorter.finish()
}

/// The running state of one accumulator for one group.
#[derive(Clone, Debug)]
enum State {
    Sum(Bson),
    Avg { total: Bson, count: usize },
    Extreme(Option<Bson>),
    First(Option<Option<Bson>>),
    Last(Option<Bson>),
    Push(Vec<Bson>),
    Set(BTreeMap<Vec<u8>, Bson>),
}

impl State {
    fn new(kind: Accumulator) -> State {
        match kind {
            Accumulator::Sum | Accumulator::Count => State::Sum(Bson::Int32(0)),
            Accumulator::Avg => State::Avg {
                total: Bson::Int32(0),
                count: 0,
            },
            Accumulator::Min | Accumulator::Max => State::Extreme(None),
            Accumulator::First => State::First(None),
            Accumulator::Last => State::Last(None),
            Accumulator::Push => State::Push(Vec::new()),
            Accumulator::AddToSet => State::Set(BTreeMap::new()),
        }
    }

    /// Adds a value; returns the bytes added (approximately).
    fn add(&mut self, kind: Accumulator, value: Option<Bson>) -> usize {
        match self {
            State::Sum(total) => {
                if let Some(v) = value.filter(is_number) {
                    *total = sum_numbers([&*total, &v].into_iter());
                }
                0
            }
            State::Avg { total, count } => {
                if let Some(v) = value.filter(is_number) {
                    *total = sum_numbers([&*total, &v].into_iter());
                    *count += 1;
                }
                0
            }
            State::Extreme(current) => {
                let Some(v) = value.filter(|v| !matches!(v, Bson::Null | Bson::Undefined)) else {
                    return 0;
                };
                let replace = match current {
                    None => true,
                    Some(c) => {
                        let ordering = compare_values(&v, c);
                        if kind == Accumulator::Min {
                            ordering == Ordering::Less
                        } else {
                            ordering == Ordering::Greater
                        }
                    }
                };
                if replace {
                    let size = approximate_size(&v);
                    *current = Some(v);
                    return size;
                }
                0
            }
            State::First(first) => {
                if first.is_none() {
                    let size = value.as_ref().map_or(0, approximate_size);
                    *first = Some(value);
                    return size;
                }
                0
            }
            State::Last(last) => {
                let size = value.as_ref().map_or(0, approximate_size);
                *last = Some(value.unwrap_or(Bson::Null));
                size
            }
            State::Push(items) => match value {
                Some(v) => {
                    let size = approximate_size(&v);
                    items.push(v);
                    size
                }
                None => 0,
            },
            State::Set(items) => match value {
                Some(v) => {
                    let key = cairn_types::keystring::encode(&v);
                    let size = approximate_size(&v) + key.len();
                    if items.contains_key(&key) {
                        return 0;
                    }
                    items.insert(key, v);
                    size
                }
                None => 0,
            },
        }
    }

    fn finish(self) -> Bson {
        match self {
            State::Sum(total) => total,
            State::Avg { total, count } => {
                if count == 0 {
                    Bson::Null
                } else {
                    divide_for_average(&total, count)
                }
            }
            State::Extreme(value) => value.unwrap_or(Bson::Null),
            State::First(value) => value.flatten().unwrap_or(Bson::Null),
            State::Last(value) => value.unwrap_or(Bson::Null),
            State::Push(items) => Bson::Array(items),
            State::Set(items) => Bson::Array(items.into_values().collect()),
        }
    }
}

impl State {
    /// The state as a document, for a spilled run.
    fn to_document(&self) -> Document {
        match self {
            State::Sum(total) => bson::doc! {"t": total.clone()},
            State::Avg { total, count } => bson::doc! {"t": total.clone(), "c": *count as i64},
            State::Extreme(value) | State::Last(value) => match value {
                Some(v) => bson::doc! {"v": v.clone()},
                None => Document::new(),
            },
            State::First(value) => match value {
                None => Document::new(),
                Some(None) => bson::doc! {"set": true},
                Some(Some(v)) => bson::doc! {"set": true, "v": v.clone()},
            },
            State::Push(items) => bson::doc! {"v": items.clone()},
            State::Set(items) => bson::doc! {"v": items.values().cloned().collect::<Vec<_>>()},
        }
    }

    fn from_document(kind: Accumulator, document: &Document) -> State {
        let value = document.get("v").cloned();
        let items = || match document.get("v") {
            Some(Bson::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        match kind {
            Accumulator::Sum | Accumulator::Count => {
                State::Sum(document.get("t").cloned().unwrap_or(Bson::Int32(0)))
            }
            Accumulator::Avg => State::Avg {
                total: document.get("t").cloned().unwrap_or(Bson::Int32(0)),
                count: document.get_i64("c").unwrap_or(0) as usize,
            },
            Accumulator::Min | Accumulator::Max => State::Extreme(value),
            Accumulator::Last => State::Last(value),
            Accumulator::First => {
                if document.contains_key("set") {
                    State::First(Some(value))
                } else {
                    State::First(None)
                }
            }
            Accumulator::Push => State::Push(items()),
            Accumulator::AddToSet => State::Set(
                items()
                    .into_iter()
                    .map(|v| (cairn_types::keystring::encode(&v), v))
                    .collect(),
            ),
        }
    }

    /// Combines with the state of the same group from later input.
    fn merge(&mut self, kind: Accumulator, later: State) {
        match (self, later) {
            (State::Sum(total), State::Sum(other)) => {
                *total = sum_numbers([&*total, &other].into_iter());
            }
            (
                State::Avg { total, count },
                State::Avg {
                    total: other_total,
                    count: other_count,
                },
            ) => {
                *total = sum_numbers([&*total, &other_total].into_iter());
                *count += other_count;
            }
            (this @ State::Extreme(_), State::Extreme(Some(other))) => {
                this.add(kind, Some(other));
            }
            (State::First(first), State::First(other)) if first.is_none() => *first = other,
            (State::Last(last), State::Last(other)) if other.is_some() => *last = other,
            (State::Push(items), State::Push(other)) => items.extend(other),
            (State::Set(items), State::Set(other)) => {
                for (key, value) in other {
                    items.entry(key).or_insert(value);
                }
            }
            _ => {}
        }
    }
}

/// One group: its key bytes, its `_id` and its accumulator states.
type GroupEntry = (Vec<u8>, Bson, Vec<State>);

/// A spilled run of `$group`: groups in key order.
struct GroupRun {
    run: Run,
}

impl GroupRun {
    fn next(&mut self, fields: &[(String, Accumulator, Expression)]) -> Result<Option<GroupEntry>> {
        let Some(record) = self.run.next()? else {
            return Ok(None);
        };
        let key = match record.get("k") {
            Some(Bson::Binary(binary)) => binary.bytes.clone(),
            _ => return Err(Error::internal("corrupt $group spill record")),
        };
        let id = record.get("_id").cloned().unwrap_or(Bson::Null);
        let states = match record.get("s") {
            Some(Bson::Array(items)) => fields
                .iter()
                .zip(items)
                .map(|((_, kind, _), item)| match item {
                    Bson::Document(d) => State::from_document(*kind, d),
                    _ => State::new(*kind),
                })
                .collect(),
            _ => return Err(Error::internal("corrupt $group spill record")),
        };
        Ok(Some((key, id, states)))
    }
}

fn spill_groups(groups: &mut BTreeMap<Vec<u8>, (Bson, Vec<State>)>) -> Result<GroupRun> {
    let mut buffer: Vec<(Vec<Bson>, u64, Document)> = Vec::with_capacity(groups.len());
    for (key, (id, states)) in std::mem::take(groups) {
        let record = bson::doc! {
            "k": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: key },
            "_id": id,
            "s": states.iter().map(|s| Bson::Document(s.to_document())).collect::<Vec<_>>(),
        };
        buffer.push((Vec::new(), 0, record));
    }
    Ok(GroupRun {
        run: write_run(&mut buffer)?,
    })
}

fn finish_group(
    id: Bson,
    states: Vec<State>,
    fields: &[(String, Accumulator, Expression)],
) -> Document {
    let mut document = bson::doc! {"_id": id};
    for ((name, _, _), state) in fields.iter().zip(states) {
        document.insert(name.clone(), state.finish());
    }
    document
}

/// `$group`: groups in order of first appearance; past the memory limit with allowDiskUse, the
/// groups are spilled as key-ordered runs and merged (the output is then in key order).
fn group(
    id: &Expression,
    fields: &[(String, Accumulator, Expression)],
    input: DocumentStream<'_>,
    options: &AggregateOptions,
) -> Result<Vec<Document>> {
    let mut order: Vec<Vec<u8>> = Vec::new();
    let mut groups: BTreeMap<Vec<u8>, (Bson, Vec<State>)> = BTreeMap::new();
    let mut runs: Vec<GroupRun> = Vec::new();
    let mut bytes = 0usize;
    for item in input {
        let document = item?;
        let variables = Variables::with_bound(&document, &options.variables);
        let key_value = id.evaluate(&variables)?.unwrap_or(Bson::Null);
        let key = cairn_types::keystring::encode(&key_value);
        if !groups.contains_key(&key) {
            bytes += approximate_size(&key_value) + key.len() + 64 * fields.len();
            if runs.is_empty() {
                order.push(key.clone());
            }
            let states = fields
                .iter()
                .map(|(_, kind, _)| State::new(*kind))
                .collect();
            groups.insert(key.clone(), (key_value, states));
        }
        let (_, states) = groups.get_mut(&key).expect("inserted above");
        for ((_, kind, expression), state) in fields.iter().zip(states.iter_mut()) {
            let value = expression.evaluate(&variables)?;
            bytes += state.add(*kind, value);
        }
        if bytes > options.memory_bytes_max {
            if !options.allow_disk_use {
                return Err(memory_exceeded("$group"));
            }
            runs.push(spill_groups(&mut groups)?);
            order.clear();
            bytes = 0;
        }
    }
    if runs.is_empty() {
        let mut output = Vec::with_capacity(order.len());
        for key in order {
            let (id_value, states) = groups.remove(&key).expect("every key has a group");
            output.push(finish_group(id_value, states, fields));
        }
        return Ok(output);
    }
    if !groups.is_empty() {
        runs.push(spill_groups(&mut groups)?);
    }
    // Merge the runs by key; for one key, earlier runs hold earlier input.
    let mut heads: Vec<Option<GroupEntry>> = Vec::with_capacity(runs.len());
    for run in &mut runs {
        heads.push(run.next(fields)?);
    }
    let mut output = Vec::new();
    loop {
        let Some(smallest) = heads.iter().flatten().map(|(key, _, _)| key.clone()).min() else {
            return Ok(output);
        };
        let mut merged: Option<(Bson, Vec<State>)> = None;
        for (head, run) in heads.iter_mut().zip(runs.iter_mut()) {
            if head.as_ref().is_some_and(|(key, _, _)| *key == smallest) {
                let (_, id_value, states) = head.take().expect("checked");
                match &mut merged {
                    None => merged = Some((id_value, states)),
                    Some((_, existing)) => {
                        for (((_, kind, _), state), later) in
                            fields.iter().zip(existing.iter_mut()).zip(states)
                        {
                            state.merge(*kind, later);
                        }
                    }
                }
                *head = run.next(fields)?;
            }
        }
        let (id_value, states) = merged.expect("the smallest key came from a run");
        output.push(finish_group(id_value, states, fields));
    }
}

/// `distinct`: the distinct values a path reaches (arrays expanded) in MongoDB's order.
pub fn distinct_values<'a>(documents: impl Iterator<Item = &'a Document>, key: &str) -> Vec<Bson> {
    let path = FieldPath::parse(key);
    let mut seen: BTreeMap<Vec<u8>, Bson> = BTreeMap::new();
    for document in documents {
        crate::path::visit(
            document,
            path.parts(),
            crate::path::LeafArrays::ElementsOnly,
            &mut |value, _| {
                if let Some(value) = value {
                    seen.entry(cairn_types::keystring::encode(value))
                        .or_insert_with(|| value.clone());
                }
                false
            },
        );
    }
    seen.into_values().collect()
}
