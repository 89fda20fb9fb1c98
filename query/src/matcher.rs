//! Filters: parsing a filter document into a [`Matcher`] and matching documents against it.
//!
//! The parsed form is a tree of [`Node`]s whose leaves pair a [`FieldPath`] with a [`Predicate`].
//! Negations are explicit: `$ne` is `Not(Eq)`, `$nin` is `Not(In)`, `$exists: false` is
//! `Not(Exists)`, so that "no element equals" has MongoDB's meaning on arrays. The planner reads
//! the same tree to derive index bounds.
//!
//! Semantics (MongoDB's, see `path` for how a path visits values):
//! - a leaf matches when any visited value matches; missing is visited as `None`;
//! - `{a: null}` (and `$in: [null]`, `$gte/$lte: null`) matches null and missing, not undefined;
//! - comparisons are type-bracketed: `$gt: 5` only matches numbers; MinKey/MaxKey operands
//!   compare across types; NaN equals NaN and compares false with everything else;
//! - `$size` and `$elemMatch` look at arrays at the end of the path, not into their elements.

use crate::agg::expression::{Expression, ParseContext, Variables};
use crate::path::{FieldPath, LeafArrays, visit};
use crate::value::{
    as_exact_i64, is_nan, is_valid_type_code, truthy, type_code, type_code_for_alias,
};
use bson::{Bson, Document};
use cairn_types::order::{canonical_rank, compare_values, is_number};
use cairn_types::{Error, ErrorCode, Result};
use std::cmp::Ordering;

/// A compiled regular expression with MongoDB's options (`i`, `m`, `s`, `x`, `u`).
#[derive(Clone, Debug)]
pub struct RegexPredicate {
    pub pattern: String,
    pub options: String,
    compiled: regex::Regex,
}

impl PartialEq for RegexPredicate {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.options == other.options
    }
}

/// Largest compiled regex program, in bytes (the `regex` crate's size limit).
const REGEX_PROGRAM_BYTES_MAX: usize = 10 * 1024 * 1024;

impl RegexPredicate {
    /// Compiles a pattern with MongoDB's option letters.
    pub fn new(pattern: &str, options: &str) -> Result<RegexPredicate> {
        let mut builder = regex::RegexBuilder::new(pattern);
        builder.size_limit(REGEX_PROGRAM_BYTES_MAX);
        for flag in options.chars() {
            match flag {
                'i' => builder.case_insensitive(true),
                'm' => builder.multi_line(true),
                's' => builder.dot_matches_new_line(true),
                'x' => builder.ignore_whitespace(true),
                'u' => builder.unicode(true),
                other => {
                    return Err(Error::new(
                        ErrorCode::Location(51108),
                        format!("invalid flag in regex options: {other}"),
                    ));
                }
            };
        }
        if pattern.contains('\0') {
            return Err(Error::new(
                ErrorCode::Location(51091),
                "Regular expression is invalid: embedded null byte",
            ));
        }
        let compiled = builder.build().map_err(|error| {
            Error::new(
                ErrorCode::Location(51091),
                format!("Regular expression is invalid: {error}"),
            )
        })?;
        Ok(RegexPredicate {
            pattern: pattern.to_owned(),
            options: options.to_owned(),
            compiled,
        })
    }

    /// True when the regex matches a string value, or equals a regex value.
    pub fn matches_value(&self, value: &Bson) -> bool {
        match value {
            Bson::String(text) | Bson::Symbol(text) => self.compiled.is_match(text),
            Bson::RegularExpression(regex) => {
                regex.pattern.as_str() == self.pattern && regex.options.as_str() == self.options
            }
            _ => false,
        }
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.compiled.is_match(text)
    }

    /// The regex as a BSON value.
    pub fn to_bson(&self) -> Bson {
        let mut options: Vec<char> = self.options.chars().collect();
        options.sort_unstable();
        let options: String = options.into_iter().collect();
        match (
            bson::raw::CString::try_from(self.pattern.clone()),
            bson::raw::CString::try_from(options),
        ) {
            (Ok(pattern), Ok(options)) => Bson::RegularExpression(bson::Regex { pattern, options }),
            _ => Bson::String(self.pattern.clone()),
        }
    }

    /// The literal prefix every match starts with, when the regex is anchored (`^abc`), has no
    /// case-insensitive or multi-line flag and no alternation. Used for index bounds.
    pub fn literal_prefix(&self) -> Option<String> {
        if self.options.contains('i') || self.options.contains('m') || self.options.contains('x') {
            return None;
        }
        let rest = self
            .pattern
            .strip_prefix('^')
            .or_else(|| self.pattern.strip_prefix("\\A"))?;
        if self.pattern.contains('|') {
            return None;
        }
        let mut prefix = String::new();
        let chars: Vec<char> = rest.chars().collect();
        let mut index = 0;
        while index < chars.len() {
            let c = chars[index];
            if "\\^$.[]|()?*+{}".contains(c) {
                break;
            }
            // A quantifier after this character would make it optional.
            if let Some(next) = chars.get(index + 1)
                && "?*{".contains(*next)
            {
                break;
            }
            prefix.push(c);
            index += 1;
        }
        Some(prefix)
    }
}

/// A set of BSON types for `$type`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeSet {
    pub codes: Vec<i32>,
    pub all_numbers: bool,
}

impl TypeSet {
    pub fn matches(&self, value: &Bson) -> bool {
        (self.all_numbers && is_number(value)) || self.codes.contains(&type_code(value))
    }
}

/// Values of `$in` (equality values and regexes).
#[derive(Clone, Debug, PartialEq)]
pub struct InList {
    /// Sorted in MongoDB's order, duplicates removed.
    pub values: Vec<Bson>,
    pub regexes: Vec<RegexPredicate>,
}

impl InList {
    pub fn contains_null(&self) -> bool {
        self.values.iter().any(|v| matches!(v, Bson::Null))
    }
}

/// A predicate on one value reached by a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Predicate {
    Eq(Bson),
    Lt(Bson),
    Lte(Bson),
    Gt(Bson),
    Gte(Bson),
    Regex(RegexPredicate),
    In(InList),
    Exists,
    Type(TypeSet),
    Mod {
        divisor: i64,
        remainder: i64,
    },
    Size(i64),
    /// `$elemMatch` with a query on the elements as documents.
    ElemMatchObject(Box<Node>),
    /// `$elemMatch` with operators on the elements as values (leaves with an empty path).
    ElemMatchValue(Box<Node>),
}

/// A node of a parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Nor(Vec<Node>),
    Not(Box<Node>),
    AlwaysTrue,
    AlwaysFalse,
    /// A predicate on the values a path reaches; an empty path is the element itself (inside
    /// a value `$elemMatch`).
    Leaf {
        path: FieldPath,
        predicate: Predicate,
    },
    /// `$expr`, with its source for explain.
    Expr {
        expression: Box<Expression>,
        source: Bson,
    },
}

/// The subject a node is evaluated against.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Document(&'a Document),
    Value(&'a Bson),
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Matcher {
    root: Node,
    /// `let` variables for `$expr`.
    variables: Document,
}

/// Where a document matched: the index in the outermost array that satisfied the filter, which
/// the positional `$` operator of updates and projections uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MatchDetails {
    pub array_position: Option<usize>,
}

fn bad_value(message: impl Into<String>) -> Error {
    Error::new(ErrorCode::BadValue, message)
}

impl Matcher {
    /// Parses a filter document.
    pub fn parse(filter: &Document) -> Result<Matcher> {
        Matcher::parse_with_let(filter, None)
    }

    /// Parses a filter whose `$expr` may use the `let` variables of the command.
    pub fn parse_with_let(filter: &Document, variables: Option<&Document>) -> Result<Matcher> {
        let variables = variables.cloned().unwrap_or_default();
        let context = ParseContext::with_variables(variables.keys().cloned().collect());
        let root = parse_top(filter, &context, 0)?;
        Ok(Matcher { root, variables })
    }

    /// A matcher from an already built tree.
    pub fn from_node(root: Node) -> Matcher {
        Matcher {
            root,
            variables: Document::new(),
        }
    }

    pub(crate) fn set_root(&mut self, root: Node) {
        self.root = root;
    }

    pub fn root(&self) -> &Node {
        &self.root
    }

    /// True when the filter matches every document.
    pub fn is_always_true(&self) -> bool {
        self.root == Node::AlwaysTrue
    }

    /// Matches a document; an `$expr` that fails to evaluate counts as no match (use
    /// [`Matcher::matches_checked`] to see the error).
    pub fn matches(&self, document: &Document) -> bool {
        self.matches_checked(document).unwrap_or(false)
    }

    /// Matches a document, reporting `$expr` evaluation errors.
    pub fn matches_checked(&self, document: &Document) -> Result<bool> {
        Ok(self.match_details(document)?.is_some())
    }

    /// Matches a document and reports where: `Ok(None)` when it does not match.
    pub fn match_details(&self, document: &Document) -> Result<Option<MatchDetails>> {
        let mut details = MatchDetails::default();
        let environment = Environment {
            root: document,
            variables: &self.variables,
        };
        let matched = evaluate(
            &self.root,
            Subject::Document(document),
            &environment,
            &mut details,
        )?;
        Ok(matched.then_some(details))
    }

    /// The filter back as a document (MongoDB's `parsedQuery` shape).
    pub fn to_document(&self) -> Document {
        node_to_document(&self.root)
    }
}

const FILTER_DEPTH_MAX: usize = 100;

fn parse_top(filter: &Document, context: &ParseContext, depth: usize) -> Result<Node> {
    if depth > FILTER_DEPTH_MAX {
        return Err(bad_value(format!(
            "exceeded depth limit of {FILTER_DEPTH_MAX} when parsing filter"
        )));
    }
    let mut children = Vec::new();
    for (key, value) in filter {
        if let Some(operator) = key.strip_prefix('$') {
            match operator {
                "and" | "or" | "nor" => {
                    let Bson::Array(items) = value else {
                        return Err(bad_value(format!("${operator} must be an array")));
                    };
                    if items.is_empty() {
                        return Err(bad_value("$and/$or/$nor must be a nonempty array"));
                    }
                    let mut parsed = Vec::with_capacity(items.len());
                    for item in items {
                        let Bson::Document(inner) = item else {
                            return Err(bad_value("$or/$and/$nor entries need to be full objects"));
                        };
                        parsed.push(parse_top(inner, context, depth + 1)?);
                    }
                    children.push(match operator {
                        "and" => Node::And(parsed),
                        "or" => Node::Or(parsed),
                        _ => Node::Nor(parsed),
                    });
                }
                "expr" => children.push(Node::Expr {
                    expression: Box::new(Expression::parse_with(value, context)?),
                    source: value.clone(),
                }),
                "comment" => {}
                "alwaysTrue" => children.push(Node::AlwaysTrue),
                "alwaysFalse" => children.push(Node::AlwaysFalse),
                "where" | "text" | "jsonSchema" | "geoNear" | "near" | "sampleRate" => {
                    return Err(Error::new(
                        ErrorCode::NotImplemented,
                        format!("${operator} is not supported by cairn"),
                    ));
                }
                _ => {
                    return Err(bad_value(format!(
                        "unknown top level operator: {key}. If you have a field name that starts with a '$' symbol, consider using $getField or $setField."
                    )));
                }
            }
        } else {
            children.push(parse_path(&FieldPath::parse(key), value, context, depth)?);
        }
    }
    Ok(simplify_and(children))
}

fn simplify_and(children: Vec<Node>) -> Node {
    // Nested ANDs flatten into one, as MongoDB's parsedQuery shows them.
    let mut children: Vec<Node> = children
        .into_iter()
        .flat_map(|child| match child {
            Node::And(inner) => inner,
            other => vec![other],
        })
        .collect();
    children.retain(|child| *child != Node::AlwaysTrue);
    match children.len() {
        0 => Node::AlwaysTrue,
        1 => children.pop().expect("one child"),
        _ => Node::And(children),
    }
}

fn is_operator_document(value: &Bson) -> bool {
    matches!(value, Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')))
}

fn leaf(path: &FieldPath, predicate: Predicate) -> Node {
    Node::Leaf {
        path: path.clone(),
        predicate,
    }
}

fn parse_path(
    path: &FieldPath,
    value: &Bson,
    context: &ParseContext,
    depth: usize,
) -> Result<Node> {
    match value {
        Bson::Document(operators) if is_operator_document(value) => {
            parse_operators(path, operators, context, depth)
        }
        Bson::RegularExpression(regex) => Ok(leaf(
            path,
            Predicate::Regex(RegexPredicate::new(
                regex.pattern.as_str(),
                regex.options.as_str(),
            )?),
        )),
        other => Ok(leaf(path, Predicate::Eq(check_comparable(other)?))),
    }
}

fn check_comparable(value: &Bson) -> Result<Bson> {
    if matches!(value, Bson::Undefined) {
        return Err(bad_value("cannot compare to undefined"));
    }
    Ok(value.clone())
}

/// Parses `{$op: arg, ...}` for one path (an empty path inside a value `$elemMatch`).
fn parse_operators(
    path: &FieldPath,
    operators: &Document,
    context: &ParseContext,
    depth: usize,
) -> Result<Node> {
    let mut children = Vec::new();
    let regex_options = operators.get("$options");
    if regex_options.is_some() && !operators.contains_key("$regex") {
        return Err(bad_value("$options needs a $regex"));
    }
    for (operator, argument) in operators {
        let node = match operator.as_str() {
            "$eq" => leaf(path, Predicate::Eq(check_comparable(argument)?)),
            "$ne" => {
                if matches!(argument, Bson::RegularExpression(_)) {
                    return Err(bad_value("Can't have regex as arg to $ne."));
                }
                Node::Not(Box::new(leaf(
                    path,
                    Predicate::Eq(check_comparable(argument)?),
                )))
            }
            "$lt" => leaf(path, Predicate::Lt(check_comparable(argument)?)),
            "$lte" => leaf(path, Predicate::Lte(check_comparable(argument)?)),
            "$gt" => leaf(path, Predicate::Gt(check_comparable(argument)?)),
            "$gte" => leaf(path, Predicate::Gte(check_comparable(argument)?)),
            "$in" => leaf(path, Predicate::In(parse_in_list(argument, "$in")?)),
            "$nin" => Node::Not(Box::new(leaf(
                path,
                Predicate::In(parse_in_list(argument, "$nin")?),
            ))),
            "$exists" => {
                let exists = leaf(path, Predicate::Exists);
                if truthy(Some(argument)) {
                    exists
                } else {
                    Node::Not(Box::new(exists))
                }
            }
            "$type" => leaf(path, Predicate::Type(parse_type_set(argument)?)),
            "$mod" => parse_mod(path, argument)?,
            "$size" => parse_size(path, argument)?,
            "$regex" => {
                let (pattern, mut options) = match argument {
                    Bson::String(pattern) => (pattern.clone(), String::new()),
                    Bson::RegularExpression(regex) => (
                        regex.pattern.as_str().to_owned(),
                        regex.options.as_str().to_owned(),
                    ),
                    _ => return Err(bad_value("$regex has to be a string")),
                };
                if let Some(extra) = regex_options {
                    let Bson::String(extra) = extra else {
                        return Err(bad_value("$options has to be a string"));
                    };
                    if !options.is_empty() && !extra.is_empty() {
                        return Err(bad_value("options set in both $regex and $options"));
                    }
                    if options.is_empty() {
                        options = extra.clone();
                    }
                }
                leaf(
                    path,
                    Predicate::Regex(RegexPredicate::new(&pattern, &options)?),
                )
            }
            "$options" => continue,
            "$all" => parse_all(path, argument, context, depth)?,
            "$elemMatch" => parse_elem_match(path, argument, context, depth)?,
            "$not" => Node::Not(Box::new(match argument {
                Bson::RegularExpression(regex) => leaf(
                    path,
                    Predicate::Regex(RegexPredicate::new(
                        regex.pattern.as_str(),
                        regex.options.as_str(),
                    )?),
                ),
                Bson::Document(inner) => {
                    if inner.is_empty() {
                        return Err(bad_value("$not cannot be empty"));
                    }
                    if !is_operator_document(argument) {
                        return Err(bad_value(format!(
                            "unknown operator: {}",
                            inner.keys().next().map(String::as_str).unwrap_or_default()
                        )));
                    }
                    parse_operators(path, inner, context, depth + 1)?
                }
                _ => return Err(bad_value("$not needs a regex or a document")),
            })),
            "$where" | "$text" | "$near" | "$nearSphere" | "$geoWithin" | "$geoIntersects"
            | "$bitsAllSet" | "$bitsAnySet" | "$bitsAllClear" | "$bitsAnyClear" => {
                return Err(Error::new(
                    ErrorCode::NotImplemented,
                    format!("{operator} is not supported by cairn"),
                ));
            }
            _ => return Err(bad_value(format!("unknown operator: {operator}"))),
        };
        children.push(node);
    }
    Ok(match children.len() {
        1 => children.pop().expect("one child"),
        _ => Node::And(children),
    })
}

fn parse_in_list(argument: &Bson, name: &str) -> Result<InList> {
    let Bson::Array(items) = argument else {
        return Err(bad_value(format!("{name} needs an array")));
    };
    let mut values = Vec::new();
    let mut regexes = Vec::new();
    for item in items {
        match item {
            Bson::RegularExpression(regex) => regexes.push(RegexPredicate::new(
                regex.pattern.as_str(),
                regex.options.as_str(),
            )?),
            Bson::Document(_) if is_operator_document(item) => {
                return Err(bad_value("cannot nest $ under $in"));
            }
            Bson::Undefined => {
                return Err(bad_value("InMatchExpression equality cannot be undefined"));
            }
            other => values.push(other.clone()),
        }
    }
    values.sort_by(compare_values);
    values.dedup_by(|a, b| compare_values(a, b) == Ordering::Equal && type_code(a) == type_code(b));
    Ok(InList { values, regexes })
}

fn parse_type_set(argument: &Bson) -> Result<TypeSet> {
    let mut set = TypeSet {
        codes: Vec::new(),
        all_numbers: false,
    };
    let items: Vec<&Bson> = match argument {
        Bson::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        return Err(bad_value("$type must match at least one type"));
    }
    for item in items {
        match item {
            Bson::String(alias) if alias == "number" => set.all_numbers = true,
            Bson::String(alias) => match type_code_for_alias(alias) {
                Some(code) => set.codes.push(code),
                None => return Err(bad_value(format!("Unknown type name alias: {alias}"))),
            },
            number if is_number(number) => match as_exact_i64(number) {
                Some(code) if is_valid_type_code(code) => set.codes.push(code as i32),
                _ => {
                    return Err(bad_value(format!("Invalid numerical type code: {number}")));
                }
            },
            _ => {
                return Err(Error::new(
                    ErrorCode::TypeMismatch,
                    "type must be represented as a number or a string",
                ));
            }
        }
    }
    Ok(set)
}

fn parse_mod(path: &FieldPath, argument: &Bson) -> Result<Node> {
    let Bson::Array(items) = argument else {
        return Err(bad_value("malformed mod, needs to be an array"));
    };
    if items.len() < 2 {
        return Err(bad_value("malformed mod, not enough elements"));
    }
    if items.len() > 2 {
        return Err(bad_value("malformed mod, too many elements"));
    }
    let as_integer = |value: &Bson, what: &str| -> Result<i64> {
        if !is_number(value) {
            return Err(bad_value(format!("malformed mod, {what} not a number")));
        }
        let f = crate::value::as_f64(value).unwrap_or(f64::NAN);
        if !f.is_finite() {
            return Err(bad_value(format!(
                "malformed mod, {what} value is invalid :: caused by :: Unable to coerce NaN/Inf to integral type"
            )));
        }
        Ok(match value {
            Bson::Int32(v) => *v as i64,
            Bson::Int64(v) => *v,
            _ => f.trunc() as i64,
        })
    };
    let divisor = as_integer(&items[0], "divisor")?;
    let remainder = as_integer(&items[1], "remainder")?;
    if divisor == 0 {
        return Err(bad_value("divisor cannot be 0"));
    }
    Ok(leaf(path, Predicate::Mod { divisor, remainder }))
}

fn parse_size(path: &FieldPath, argument: &Bson) -> Result<Node> {
    if !is_number(argument) {
        return Err(bad_value("$size needs a number"));
    }
    let f = crate::value::as_f64(argument).unwrap_or(f64::NAN);
    if f.is_nan() || f.fract() != 0.0 {
        return Err(bad_value("$size must be a whole number"));
    }
    if f < 0.0 {
        return Err(bad_value("$size may not be negative"));
    }
    Ok(leaf(path, Predicate::Size(f.min(i64::MAX as f64) as i64)))
}

fn parse_all(
    path: &FieldPath,
    argument: &Bson,
    context: &ParseContext,
    depth: usize,
) -> Result<Node> {
    let Bson::Array(items) = argument else {
        return Err(bad_value("$all needs an array"));
    };
    if items.is_empty() {
        return Ok(Node::AlwaysFalse);
    }
    let is_elem_match = |item: &Bson| matches!(item, Bson::Document(d) if d.keys().next().map(String::as_str) == Some("$elemMatch"));
    let elem_matches = is_elem_match(&items[0]);
    let mut children = Vec::new();
    for item in items {
        if is_elem_match(item) != elem_matches {
            return Err(bad_value("$all/$elemMatch has to be consistent"));
        }
        children.push(match item {
            Bson::Document(inner) if elem_matches => parse_elem_match(
                path,
                inner.get("$elemMatch").expect("checked"),
                context,
                depth,
            )?,
            Bson::RegularExpression(regex) => leaf(
                path,
                Predicate::Regex(RegexPredicate::new(
                    regex.pattern.as_str(),
                    regex.options.as_str(),
                )?),
            ),
            Bson::Document(_) if is_operator_document(item) => {
                return Err(bad_value("no $ expressions in $all"));
            }
            other => leaf(path, Predicate::Eq(check_comparable(other)?)),
        });
    }
    Ok(Node::And(children))
}

fn parse_elem_match(
    path: &FieldPath,
    argument: &Bson,
    context: &ParseContext,
    depth: usize,
) -> Result<Node> {
    let Bson::Document(inner) = argument else {
        return Err(bad_value("$elemMatch needs an Object"));
    };
    let first = inner.keys().next().map(String::as_str).unwrap_or_default();
    let value_form = first.starts_with('$')
        && !matches!(
            first,
            "$and"
                | "$or"
                | "$nor"
                | "$expr"
                | "$where"
                | "$text"
                | "$comment"
                | "$alwaysTrue"
                | "$alwaysFalse"
        );
    let predicate = if value_form {
        Predicate::ElemMatchValue(Box::new(parse_operators(
            &FieldPath::from_parts(Vec::new()),
            inner,
            context,
            depth + 1,
        )?))
    } else {
        if inner.keys().any(|k| k == "$expr") {
            return Err(bad_value(
                "$expr can only be applied to the top-level document",
            ));
        }
        Predicate::ElemMatchObject(Box::new(parse_top(inner, context, depth + 1)?))
    };
    Ok(leaf(path, predicate))
}

/// Everything evaluation needs besides the subject.
struct Environment<'a> {
    root: &'a Document,
    variables: &'a Document,
}

fn evaluate(
    node: &Node,
    subject: Subject<'_>,
    environment: &Environment<'_>,
    details: &mut MatchDetails,
) -> Result<bool> {
    Ok(match node {
        Node::AlwaysTrue => true,
        Node::AlwaysFalse => false,
        Node::And(children) => {
            for child in children {
                if !evaluate(child, subject, environment, details)? {
                    return Ok(false);
                }
            }
            true
        }
        Node::Or(children) => {
            for child in children {
                if evaluate(child, subject, environment, details)? {
                    return Ok(true);
                }
            }
            false
        }
        Node::Nor(children) => {
            let mut scratch = MatchDetails::default();
            for child in children {
                if evaluate(child, subject, environment, &mut scratch)? {
                    return Ok(false);
                }
            }
            true
        }
        Node::Not(child) => {
            let mut scratch = MatchDetails::default();
            !evaluate(child, subject, environment, &mut scratch)?
        }
        Node::Expr { expression, .. } => {
            let variables = Variables::with_bound(environment.root, environment.variables);
            truthy(expression.evaluate(&variables)?.as_ref())
        }
        Node::Leaf { path, predicate } => match subject {
            Subject::Value(value) if path.is_empty() => {
                let (matched, _) = matches_single(predicate, Some(value), environment)?;
                matched
            }
            Subject::Value(Bson::Document(document)) => {
                evaluate_leaf(path, predicate, document, environment, details)?
            }
            Subject::Value(_) => false,
            Subject::Document(document) => {
                if path.is_empty() {
                    let value = Bson::Document(document.clone());
                    matches_single(predicate, Some(&value), environment)?.0
                } else {
                    evaluate_leaf(path, predicate, document, environment, details)?
                }
            }
        },
    })
}

fn evaluate_leaf(
    path: &FieldPath,
    predicate: &Predicate,
    document: &Document,
    environment: &Environment<'_>,
    details: &mut MatchDetails,
) -> Result<bool> {
    let leaf_arrays = match predicate {
        Predicate::Size(_) | Predicate::ElemMatchObject(_) | Predicate::ElemMatchValue(_) => {
            LeafArrays::NoTraversal
        }
        _ => LeafArrays::Traverse,
    };
    let mut failure = None;
    let mut position = None;
    let matched =
        visit(
            document,
            path.parts(),
            leaf_arrays,
            &mut |value, offset| match matches_single(predicate, value, environment) {
                Ok((true, inner)) => {
                    position = offset.or(inner);
                    true
                }
                Ok((false, _)) => false,
                Err(error) => {
                    failure = Some(error);
                    true
                }
            },
        );
    if let Some(error) = failure {
        return Err(error);
    }
    if matched && position.is_some() {
        details.array_position = position;
    }
    Ok(matched)
}

fn compare_matches(predicate: &Predicate, value: Option<&Bson>) -> bool {
    let (operand, accepts): (&Bson, fn(Ordering) -> bool) = match predicate {
        Predicate::Lt(v) => (v, |o| o == Ordering::Less),
        Predicate::Lte(v) => (v, |o| o != Ordering::Greater),
        Predicate::Gt(v) => (v, |o| o == Ordering::Greater),
        Predicate::Gte(v) => (v, |o| o != Ordering::Less),
        _ => unreachable!("comparison predicates only"),
    };
    let Some(value) = value else {
        // Missing compares like null for the inclusive operators.
        return matches!(operand, Bson::Null) && accepts(Ordering::Equal);
    };
    if canonical_rank(value) != canonical_rank(operand) {
        if matches!(operand, Bson::MinKey | Bson::MaxKey) {
            return accepts(compare_values(value, operand));
        }
        return false;
    }
    if is_nan(value) || is_nan(operand) {
        let both = is_nan(value) && is_nan(operand);
        return both && accepts(Ordering::Equal);
    }
    accepts(compare_values(value, operand))
}

/// Equality as a filter means it: null also matches missing; otherwise same canonical type and
/// equal in MongoDB's order.
pub fn equality_matches(operand: &Bson, value: Option<&Bson>) -> bool {
    match (operand, value) {
        (Bson::Null, None) | (Bson::Null, Some(Bson::Null)) => true,
        (_, None) => false,
        (operand, Some(value)) => {
            canonical_rank(operand) == canonical_rank(value)
                && compare_values(operand, value) == Ordering::Equal
        }
    }
}

/// Evaluates a predicate on one value; the second result is the matching element's index for
/// `$elemMatch`.
fn matches_single(
    predicate: &Predicate,
    value: Option<&Bson>,
    environment: &Environment<'_>,
) -> Result<(bool, Option<usize>)> {
    let plain = |matched: bool| Ok((matched, None));
    match predicate {
        Predicate::Eq(operand) => plain(equality_matches(operand, value)),
        Predicate::Lt(_) | Predicate::Lte(_) | Predicate::Gt(_) | Predicate::Gte(_) => {
            plain(compare_matches(predicate, value))
        }
        Predicate::Regex(regex) => plain(value.is_some_and(|v| regex.matches_value(v))),
        Predicate::In(list) => plain(
            list.values
                .iter()
                .any(|operand| equality_matches(operand, value))
                || value.is_some_and(|v| list.regexes.iter().any(|r| r.matches_value(v))),
        ),
        Predicate::Exists => plain(value.is_some()),
        Predicate::Type(set) => plain(value.is_some_and(|v| set.matches(v))),
        Predicate::Mod { divisor, remainder } => plain(value.is_some_and(|v| {
            if !is_number(v) {
                return false;
            }
            let number = match v {
                Bson::Int32(i) => *i as i64,
                Bson::Int64(i) => *i,
                other => {
                    let f = crate::value::as_f64(other).unwrap_or(f64::NAN);
                    if !f.is_finite() {
                        return false;
                    }
                    f.trunc() as i64
                }
            };
            number.wrapping_rem(*divisor) == *remainder
        })),
        Predicate::Size(size) => {
            plain(matches!(value, Some(Bson::Array(items)) if items.len() as i64 == *size))
        }
        Predicate::ElemMatchObject(node) => {
            let Some(Bson::Array(items)) = value else {
                return plain(false);
            };
            for (index, item) in items.iter().enumerate() {
                let document = match item {
                    Bson::Document(document) => std::borrow::Cow::Borrowed(document),
                    Bson::Array(inner) => std::borrow::Cow::Owned(array_as_document(inner)),
                    _ => continue,
                };
                let mut scratch = MatchDetails::default();
                if evaluate(
                    node,
                    Subject::Document(&document),
                    environment,
                    &mut scratch,
                )? {
                    return Ok((true, Some(index)));
                }
            }
            plain(false)
        }
        Predicate::ElemMatchValue(node) => {
            let Some(Bson::Array(items)) = value else {
                return plain(false);
            };
            for (index, item) in items.iter().enumerate() {
                let mut scratch = MatchDetails::default();
                if evaluate(node, Subject::Value(item), environment, &mut scratch)? {
                    return Ok((true, Some(index)));
                }
            }
            plain(false)
        }
    }
}

/// An array seen as a document with fields "0", "1", ...
pub fn array_as_document(items: &[Bson]) -> Document {
    let mut document = Document::new();
    for (index, item) in items.iter().enumerate() {
        document.insert(index.to_string(), item.clone());
    }
    document
}

fn predicate_to_bson(predicate: &Predicate) -> Bson {
    let single = |name: &str, value: Bson| Bson::Document(bson::doc! {name: value});
    match predicate {
        Predicate::Eq(v) => single("$eq", v.clone()),
        Predicate::Lt(v) => single("$lt", v.clone()),
        Predicate::Lte(v) => single("$lte", v.clone()),
        Predicate::Gt(v) => single("$gt", v.clone()),
        Predicate::Gte(v) => single("$gte", v.clone()),
        Predicate::Regex(r) => single("$regex", r.to_bson()),
        Predicate::In(list) => {
            let mut items = list.values.clone();
            items.extend(list.regexes.iter().map(RegexPredicate::to_bson));
            single("$in", Bson::Array(items))
        }
        Predicate::Exists => single("$exists", Bson::Boolean(true)),
        Predicate::Type(set) => {
            let mut items: Vec<Bson> = set.codes.iter().map(|c| Bson::Int32(*c)).collect();
            if set.all_numbers {
                items.push(Bson::String("number".into()));
            }
            single("$type", Bson::Array(items))
        }
        Predicate::Mod { divisor, remainder } => single(
            "$mod",
            Bson::Array(vec![Bson::Int64(*divisor), Bson::Int64(*remainder)]),
        ),
        Predicate::Size(n) => single("$size", Bson::Int64(*n)),
        Predicate::ElemMatchObject(node) => {
            single("$elemMatch", Bson::Document(node_to_document(node)))
        }
        Predicate::ElemMatchValue(node) => {
            single("$elemMatch", Bson::Document(value_node_to_document(node)))
        }
    }
}

/// Renders the operators of a value `$elemMatch` (leaves with an empty path).
fn value_node_to_document(node: &Node) -> Document {
    let mut document = Document::new();
    let mut add = |rendered: Document| {
        for (key, value) in rendered {
            if document.contains_key(&key) {
                let existing = document.remove(&key).expect("present");
                let and = document
                    .entry("$and".to_owned())
                    .or_insert_with(|| Bson::Array(Vec::new()));
                if let Bson::Array(items) = and {
                    items.push(Bson::Document(bson::doc! {key.clone(): existing}));
                }
            }
            document.insert(key, value);
        }
    };
    match node {
        Node::And(children) => {
            for child in children {
                add(value_node_to_document(child));
            }
        }
        Node::Leaf { predicate, .. } => {
            if let Bson::Document(rendered) = predicate_to_bson(predicate) {
                add(rendered);
            }
        }
        Node::Not(inner) => add(bson::doc! {"$not": value_node_to_document(inner)}),
        other => add(node_to_document(other)),
    }
    document
}

/// Renders a node as a filter document (explain's `parsedQuery`, `filter`).
pub fn node_to_document(node: &Node) -> Document {
    let list = |children: &[Node]| {
        Bson::Array(
            children
                .iter()
                .map(|c| Bson::Document(node_to_document(c)))
                .collect(),
        )
    };
    match node {
        Node::And(children) => bson::doc! {"$and": list(children)},
        Node::Or(children) => bson::doc! {"$or": list(children)},
        Node::Nor(children) => bson::doc! {"$nor": list(children)},
        Node::Not(child) => match child.as_ref() {
            Node::Leaf { path, predicate } => {
                let inner = predicate_to_bson(predicate);
                bson::doc! {path.dotted(): {"$not": inner}}
            }
            other => bson::doc! {"$nor": [node_to_document(other)]},
        },
        Node::AlwaysTrue => Document::new(),
        Node::AlwaysFalse => bson::doc! {"$alwaysFalse": 1},
        Node::Leaf { path, predicate } => bson::doc! {path.dotted(): predicate_to_bson(predicate)},
        Node::Expr { source, .. } => bson::doc! {"$expr": source.clone()},
    }
}
