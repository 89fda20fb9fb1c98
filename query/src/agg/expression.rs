//! Aggregation expressions: parsing and evaluation.
//!
//! An [`Expression`] is parsed once from its BSON form and evaluated per document. Evaluation
//! returns `Ok(None)` for MongoDB's "missing" value (a field path that leads nowhere, `$$REMOVE`);
//! missing is distinct from null: `$ifNull` treats both as null, comparisons order missing below
//! null, and an object expression omits a field whose value is missing.
//!
//! Field paths (`"$a.b"`) follow aggregation's rules, not the matcher's: an array in the path
//! maps the rest of the path over its elements (documents only; nested arrays map recursively)
//! and collects the results that are not missing.
//!
//! Errors carry MongoDB's codes: unknown operators are `InvalidPipelineOperator` (168), wrong
//! argument counts 16020, wrong types the operator's own location code.

use crate::value::{
    Arithmetic, ArithmeticOverflow, arithmetic, as_exact_i32, as_exact_i64, as_f64, truthy,
    type_name, values_equal,
};
use bson::{Bson, Document};
use cairn_types::order::{Number, compare_values, is_number};
use cairn_types::{Error, ErrorCode, Result};
use std::cmp::Ordering;

/// A parsed aggregation expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expression {
    /// A constant.
    Literal(Bson),
    /// `"$a.b"`: a path from `$$CURRENT`.
    FieldPath(Vec<String>),
    /// `"$$name.a.b"`: a variable and an optional path into it.
    Variable { name: String, path: Vec<String> },
    /// `{a: <expr>, b: <expr>}`.
    Object(Vec<(String, Expression)>),
    /// `[<expr>, ...]`.
    Array(Vec<Expression>),
    /// `{$op: [args]}`.
    Operator { op: Operator, args: Vec<Expression> },
    /// `{$cond: ...}` in either form.
    Cond {
        condition: Box<Expression>,
        then: Box<Expression>,
        otherwise: Box<Expression>,
    },
}

/// The expression operators cairn evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Add,
    Subtract,
    Multiply,
    Divide,
    Mod,
    Concat,
    ToUpper,
    ToLower,
    SubstrBytes,
    SubstrCP,
    IfNull,
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    Cmp,
    And,
    Or,
    Not,
    In,
    Size,
    ArrayElemAt,
    Type,
    Abs,
    Max,
    Min,
    Sum,
    Avg,
}

impl Operator {
    fn from_name(name: &str) -> Option<Operator> {
        Some(match name {
            "$add" => Operator::Add,
            "$subtract" => Operator::Subtract,
            "$multiply" => Operator::Multiply,
            "$divide" => Operator::Divide,
            "$mod" => Operator::Mod,
            "$concat" => Operator::Concat,
            "$toUpper" => Operator::ToUpper,
            "$toLower" => Operator::ToLower,
            "$substr" | "$substrBytes" => Operator::SubstrBytes,
            "$substrCP" => Operator::SubstrCP,
            "$ifNull" => Operator::IfNull,
            "$eq" => Operator::Eq,
            "$ne" => Operator::Ne,
            "$gt" => Operator::Gt,
            "$gte" => Operator::Gte,
            "$lt" => Operator::Lt,
            "$lte" => Operator::Lte,
            "$cmp" => Operator::Cmp,
            "$and" => Operator::And,
            "$or" => Operator::Or,
            "$not" => Operator::Not,
            "$in" => Operator::In,
            "$size" => Operator::Size,
            "$arrayElemAt" => Operator::ArrayElemAt,
            "$type" => Operator::Type,
            "$abs" => Operator::Abs,
            "$max" => Operator::Max,
            "$min" => Operator::Min,
            "$sum" => Operator::Sum,
            "$avg" => Operator::Avg,
            _ => return None,
        })
    }

    /// MongoDB's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Operator::Add => "$add",
            Operator::Subtract => "$subtract",
            Operator::Multiply => "$multiply",
            Operator::Divide => "$divide",
            Operator::Mod => "$mod",
            Operator::Concat => "$concat",
            Operator::ToUpper => "$toUpper",
            Operator::ToLower => "$toLower",
            Operator::SubstrBytes => "$substrBytes",
            Operator::SubstrCP => "$substrCP",
            Operator::IfNull => "$ifNull",
            Operator::Eq => "$eq",
            Operator::Ne => "$ne",
            Operator::Gt => "$gt",
            Operator::Gte => "$gte",
            Operator::Lt => "$lt",
            Operator::Lte => "$lte",
            Operator::Cmp => "$cmp",
            Operator::And => "$and",
            Operator::Or => "$or",
            Operator::Not => "$not",
            Operator::In => "$in",
            Operator::Size => "$size",
            Operator::ArrayElemAt => "$arrayElemAt",
            Operator::Type => "$type",
            Operator::Abs => "$abs",
            Operator::Max => "$max",
            Operator::Min => "$min",
            Operator::Sum => "$sum",
            Operator::Avg => "$avg",
        }
    }

    /// The exact number of arguments, when fixed.
    fn arity(self) -> Option<usize> {
        match self {
            Operator::Subtract
            | Operator::Divide
            | Operator::Mod
            | Operator::Eq
            | Operator::Ne
            | Operator::Gt
            | Operator::Gte
            | Operator::Lt
            | Operator::Lte
            | Operator::Cmp
            | Operator::In
            | Operator::ArrayElemAt => Some(2),
            Operator::SubstrBytes | Operator::SubstrCP => Some(3),
            Operator::ToUpper
            | Operator::ToLower
            | Operator::Not
            | Operator::Size
            | Operator::Type
            | Operator::Abs => Some(1),
            _ => None,
        }
    }
}

/// Variables visible to an expression: `$$ROOT`/`$$CURRENT` and those bound by `let`.
#[derive(Clone, Copy, Debug)]
pub struct Variables<'a> {
    pub root: &'a Document,
    /// User variables (`let`), by name without `$$`.
    pub bound: Option<&'a Document>,
}

impl<'a> Variables<'a> {
    pub fn new(root: &'a Document) -> Variables<'a> {
        Variables { root, bound: None }
    }

    pub fn with_bound(root: &'a Document, bound: &'a Document) -> Variables<'a> {
        Variables {
            root,
            bound: Some(bound),
        }
    }
}

/// Which variable names an expression may use besides the built-in ones.
#[derive(Clone, Debug, Default)]
pub struct ParseContext {
    pub variable_names: Vec<String>,
    /// Nesting depth of the expression being parsed (bounded by `EXPRESSION_DEPTH_MAX`).
    depth: std::cell::Cell<usize>,
}

impl ParseContext {
    pub fn with_variables(variable_names: Vec<String>) -> ParseContext {
        ParseContext {
            variable_names,
            depth: std::cell::Cell::new(0),
        }
    }
}

/// Deepest expression nesting accepted (documents are at most 100 deep anyway).
pub const EXPRESSION_DEPTH_MAX: usize = 150;

fn location(code: i32, message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Location(code), message)
}

impl Expression {
    /// Parses an expression with no user variables.
    pub fn parse(value: &Bson) -> Result<Expression> {
        Expression::parse_with(value, &ParseContext::default())
    }

    /// Parses an expression that may use the variables in `context`.
    pub fn parse_with(value: &Bson, context: &ParseContext) -> Result<Expression> {
        let depth = context.depth.get() + 1;
        if depth > EXPRESSION_DEPTH_MAX {
            return Err(Error::new(
                ErrorCode::Overflow,
                format!("expression nesting exceeds the limit of {EXPRESSION_DEPTH_MAX}"),
            ));
        }
        context.depth.set(depth);
        let parsed = Expression::parse_at_depth(value, context);
        context.depth.set(depth - 1);
        parsed
    }

    fn parse_at_depth(value: &Bson, context: &ParseContext) -> Result<Expression> {
        match value {
            Bson::String(text) if text.starts_with("$$") => parse_variable(&text[2..], context),
            Bson::String(text) if text.starts_with('$') => {
                Ok(Expression::FieldPath(parse_field_path(&text[1..])?))
            }
            Bson::Array(items) => Ok(Expression::Array(
                items
                    .iter()
                    .map(|item| Expression::parse_with(item, context))
                    .collect::<Result<_>>()?,
            )),
            Bson::Document(document) => parse_object(document, context),
            other => Ok(Expression::Literal(other.clone())),
        }
    }

    /// True when the expression is a constant (used by `$project` to tell `{a: 1}` apart).
    pub fn as_literal(&self) -> Option<&Bson> {
        match self {
            Expression::Literal(value) => Some(value),
            _ => None,
        }
    }

    /// Evaluates against `variables`; `Ok(None)` is missing.
    pub fn evaluate(&self, variables: &Variables<'_>) -> Result<Option<Bson>> {
        match self {
            Expression::Literal(value) => Ok(Some(value.clone())),
            Expression::FieldPath(path) => Ok(field_path_value(variables.root, path)),
            Expression::Variable { name, path } => {
                let base = match name.as_str() {
                    "ROOT" | "CURRENT" => Some(Bson::Document(variables.root.clone())),
                    "REMOVE" => None,
                    "NOW" | "CLUSTER_TIME" => {
                        match variables.bound.and_then(|b| b.get(name.as_str())) {
                            Some(value) => Some(value.clone()),
                            None => {
                                return Err(location(
                                    51144,
                                    format!("Builtin variable '$${name}' is not available"),
                                ));
                            }
                        }
                    }
                    other => variables.bound.and_then(|bound| bound.get(other)).cloned(),
                };
                Ok(match base {
                    None => None,
                    Some(value) if path.is_empty() => Some(value),
                    Some(Bson::Document(document)) => field_path_value(&document, path),
                    Some(Bson::Array(items)) => {
                        let holder = bson::doc! {"v": items};
                        let mut full = vec!["v".to_owned()];
                        full.extend(path.iter().cloned());
                        field_path_value(&holder, &full)
                    }
                    Some(_) => None,
                })
            }
            Expression::Object(fields) => {
                let mut document = Document::new();
                for (name, expression) in fields {
                    if let Some(value) = expression.evaluate(variables)? {
                        document.insert(name.clone(), value);
                    }
                }
                Ok(Some(Bson::Document(document)))
            }
            Expression::Array(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    // Missing values inside an array literal become null, as in MongoDB.
                    values.push(item.evaluate(variables)?.unwrap_or(Bson::Null));
                }
                Ok(Some(Bson::Array(values)))
            }
            Expression::Cond {
                condition,
                then,
                otherwise,
            } => {
                if truthy(condition.evaluate(variables)?.as_ref()) {
                    then.evaluate(variables)
                } else {
                    otherwise.evaluate(variables)
                }
            }
            Expression::Operator { op, args } => evaluate_operator(*op, args, variables),
        }
    }

    /// The field paths (from `$$CURRENT`/`$$ROOT`) the expression reads, for dependency checks.
    pub fn field_paths(&self, out: &mut Vec<Vec<String>>) {
        match self {
            Expression::Literal(_) => {}
            Expression::FieldPath(path) => out.push(path.clone()),
            Expression::Variable { name, path } if name == "ROOT" || name == "CURRENT" => {
                out.push(path.clone())
            }
            Expression::Variable { .. } => {}
            Expression::Object(fields) => fields.iter().for_each(|(_, e)| e.field_paths(out)),
            Expression::Array(items) => items.iter().for_each(|e| e.field_paths(out)),
            Expression::Operator { args, .. } => args.iter().for_each(|e| e.field_paths(out)),
            Expression::Cond {
                condition,
                then,
                otherwise,
            } => {
                condition.field_paths(out);
                then.field_paths(out);
                otherwise.field_paths(out);
            }
        }
    }
}

/// Parses the part of a field path after `$`.
pub fn parse_field_path(text: &str) -> Result<Vec<String>> {
    if text.is_empty() {
        return Err(location(16872, "'$' by itself is not a valid FieldPath"));
    }
    let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
    for part in &parts {
        if part.is_empty() {
            return Err(location(
                15998,
                "FieldPath field names may not be empty strings.",
            ));
        }
        if part.starts_with('$') {
            return Err(location(
                16410,
                "FieldPath field names may not start with '$'. Consider using $getField or $setField.".to_string(),
            ));
        }
    }
    Ok(parts)
}

fn parse_variable(text: &str, context: &ParseContext) -> Result<Expression> {
    let mut parts = text.split('.');
    let name = parts.next().unwrap_or_default().to_owned();
    let path: Vec<String> = parts.map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(location(
            15998,
            "FieldPath field names may not be empty strings.",
        ));
    }
    let builtin = matches!(
        name.as_str(),
        "ROOT" | "CURRENT" | "REMOVE" | "NOW" | "CLUSTER_TIME"
    );
    if !builtin && !context.variable_names.contains(&name) {
        if name.is_empty() {
            return Err(location(16869, "empty variable names are not allowed"));
        }
        return Err(location(
            17276,
            format!("Use of undefined variable: {name}"),
        ));
    }
    Ok(Expression::Variable { name, path })
}

fn parse_object(document: &Document, context: &ParseContext) -> Result<Expression> {
    let first_is_operator = document
        .keys()
        .next()
        .is_some_and(|key| key.starts_with('$'));
    if first_is_operator {
        if document.len() != 1 {
            return Err(location(
                15983,
                format!(
                    "an expression specification must contain exactly one field, the name of the expression. Found {} fields in {}",
                    document.len(),
                    document
                ),
            ));
        }
        let (name, argument) = document.iter().next().expect("one field");
        return parse_operator(name, argument, context);
    }
    let mut fields = Vec::with_capacity(document.len());
    for (name, value) in document {
        if name.starts_with('$') {
            return Err(location(
                16404,
                "FieldPath field names may not start with '$'. Consider using $getField or $setField.".to_string(),
            ));
        }
        if name.contains('.') {
            return Err(location(
                16412,
                "FieldPath field names may not contain '.'. Consider using $getField or $setField."
                    .to_string(),
            ));
        }
        if name.is_empty() {
            return Err(location(
                16410,
                "FieldPath field names may not be empty strings.",
            ));
        }
        fields.push((name.clone(), Expression::parse_with(value, context)?));
    }
    Ok(Expression::Object(fields))
}

fn parse_operator(name: &str, argument: &Bson, context: &ParseContext) -> Result<Expression> {
    if name == "$literal" {
        return Ok(Expression::Literal(argument.clone()));
    }
    if name == "$cond" {
        return parse_cond(argument, context);
    }
    let Some(op) = Operator::from_name(name) else {
        return Err(Error::new(
            ErrorCode::InvalidPipelineOperator,
            format!("Unrecognized expression '{name}'"),
        ));
    };
    let args: Vec<Expression> = match argument {
        Bson::Array(items) => items
            .iter()
            .map(|item| Expression::parse_with(item, context))
            .collect::<Result<_>>()?,
        other => vec![Expression::parse_with(other, context)?],
    };
    if let Some(arity) = op.arity()
        && args.len() != arity
    {
        return Err(location(
            16020,
            format!(
                "Expression {} takes exactly {} arguments. {} were passed in.",
                op.name(),
                arity,
                args.len()
            ),
        ));
    }
    if op == Operator::IfNull && args.len() < 2 {
        return Err(location(
            1257300,
            format!("$ifNull needs at least two arguments, had: {}", args.len()),
        ));
    }
    Ok(Expression::Operator { op, args })
}

fn parse_cond(argument: &Bson, context: &ParseContext) -> Result<Expression> {
    let (condition, then, otherwise) = match argument {
        Bson::Array(items) => {
            if items.len() != 3 {
                return Err(location(
                    16020,
                    format!(
                        "Expression $cond takes exactly 3 arguments. {} were passed in.",
                        items.len()
                    ),
                ));
            }
            (&items[0], &items[1], &items[2])
        }
        Bson::Document(document) => {
            for key in document.keys() {
                if !matches!(key.as_str(), "if" | "then" | "else") {
                    return Err(location(
                        17083,
                        format!("Unrecognized parameter to $cond: {key}"),
                    ));
                }
            }
            let get = |key: &str, code: i32| {
                document
                    .get(key)
                    .ok_or_else(|| location(code, format!("Missing '{key}' parameter to $cond")))
            };
            (get("if", 17080)?, get("then", 17081)?, get("else", 17082)?)
        }
        other => {
            return Err(location(
                16020,
                format!(
                    "Expression $cond takes exactly 3 arguments. 1 were passed in. ({})",
                    type_name(other)
                ),
            ));
        }
    };
    Ok(Expression::Cond {
        condition: Box::new(Expression::parse_with(condition, context)?),
        then: Box::new(Expression::parse_with(then, context)?),
        otherwise: Box::new(Expression::parse_with(otherwise, context)?),
    })
}

/// Aggregation's field path lookup (arrays map the rest of the path over their elements).
pub fn field_path_value(document: &Document, path: &[String]) -> Option<Bson> {
    let (first, rest) = path.split_first()?;
    let value = document.get(first)?;
    path_in_value(value, rest)
}

fn path_in_value(value: &Bson, rest: &[String]) -> Option<Bson> {
    if rest.is_empty() {
        return Some(value.clone());
    }
    match value {
        Bson::Document(inner) => field_path_value(inner, rest),
        Bson::Array(items) => Some(Bson::Array(
            items
                .iter()
                .filter_map(|item| match item {
                    Bson::Document(_) | Bson::Array(_) => path_in_value(item, rest),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

/// Compares two evaluated values in aggregation's order (missing below null).
pub fn compare_optional(left: Option<&Bson>, right: Option<&Bson>) -> Ordering {
    let undefined = Bson::Undefined;
    compare_values(left.unwrap_or(&undefined), right.unwrap_or(&undefined))
}

fn nullish(value: Option<&Bson>) -> bool {
    matches!(value, None | Some(Bson::Null) | Some(Bson::Undefined))
}

fn display_type(value: Option<&Bson>) -> &'static str {
    value.map(type_name).unwrap_or("missing")
}

fn evaluate_operator(
    op: Operator,
    args: &[Expression],
    variables: &Variables<'_>,
) -> Result<Option<Bson>> {
    // Short-circuiting operators first.
    match op {
        Operator::And => {
            for arg in args {
                if !truthy(arg.evaluate(variables)?.as_ref()) {
                    return Ok(Some(Bson::Boolean(false)));
                }
            }
            return Ok(Some(Bson::Boolean(true)));
        }
        Operator::Or => {
            for arg in args {
                if truthy(arg.evaluate(variables)?.as_ref()) {
                    return Ok(Some(Bson::Boolean(true)));
                }
            }
            return Ok(Some(Bson::Boolean(false)));
        }
        Operator::IfNull => {
            let (last, candidates) = args.split_last().expect("parsed with at least two args");
            for arg in candidates {
                let value = arg.evaluate(variables)?;
                if !nullish(value.as_ref()) {
                    return Ok(value);
                }
            }
            return last.evaluate(variables);
        }
        _ => {}
    }
    let values: Vec<Option<Bson>> = args
        .iter()
        .map(|arg| arg.evaluate(variables))
        .collect::<Result<_>>()?;
    let arg = |index: usize| values[index].as_ref();
    Ok(match op {
        Operator::Add => add(&values)?,
        Operator::Subtract => subtract(arg(0), arg(1))?,
        Operator::Multiply => multiply(&values)?,
        Operator::Divide => divide(arg(0), arg(1))?,
        Operator::Mod => modulo(arg(0), arg(1))?,
        Operator::Concat => {
            let mut out = String::new();
            for value in &values {
                match value {
                    None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(Bson::String(text)) => out.push_str(text),
                    Some(other) => {
                        return Err(location(
                            16702,
                            format!("$concat only supports strings, not {}", type_name(other)),
                        ));
                    }
                }
            }
            Some(Bson::String(out))
        }
        Operator::ToUpper | Operator::ToLower => {
            let text = coerce_to_string(arg(0), op)?;
            Some(Bson::String(if op == Operator::ToUpper {
                text.to_ascii_uppercase()
            } else {
                text.to_ascii_lowercase()
            }))
        }
        Operator::SubstrBytes => substr_bytes(arg(0), arg(1), arg(2))?,
        Operator::SubstrCP => substr_code_points(arg(0), arg(1), arg(2))?,
        Operator::Eq
        | Operator::Ne
        | Operator::Gt
        | Operator::Gte
        | Operator::Lt
        | Operator::Lte => {
            let ordering = compare_optional(arg(0), arg(1));
            Some(Bson::Boolean(match op {
                Operator::Eq => ordering == Ordering::Equal,
                Operator::Ne => ordering != Ordering::Equal,
                Operator::Gt => ordering == Ordering::Greater,
                Operator::Gte => ordering != Ordering::Less,
                Operator::Lt => ordering == Ordering::Less,
                _ => ordering != Ordering::Greater,
            }))
        }
        Operator::Cmp => Some(Bson::Int32(match compare_optional(arg(0), arg(1)) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        })),
        Operator::Not => Some(Bson::Boolean(!truthy(arg(0)))),
        Operator::In => match arg(1) {
            Some(Bson::Array(items)) => {
                let needle = arg(0).cloned().unwrap_or(Bson::Undefined);
                Some(Bson::Boolean(
                    items.iter().any(|item| values_equal(item, &needle)),
                ))
            }
            other => {
                return Err(location(
                    40081,
                    format!(
                        "$in requires an array as a second argument, found: {}",
                        display_type(other)
                    ),
                ));
            }
        },
        Operator::Size => match arg(0) {
            Some(Bson::Array(items)) => Some(Bson::Int32(items.len() as i32)),
            other => {
                return Err(location(
                    17124,
                    format!(
                        "The argument to $size must be an array. Type of argument was: {}",
                        display_type(other)
                    ),
                ));
            }
        },
        Operator::ArrayElemAt => array_elem_at(arg(0), arg(1))?,
        Operator::Type => Some(Bson::String(display_type(arg(0)).to_owned())),
        Operator::Abs => match arg(0) {
            None | Some(Bson::Null) | Some(Bson::Undefined) => Some(Bson::Null),
            Some(Bson::Int32(v)) => Some(match v.checked_abs() {
                Some(a) => Bson::Int32(a),
                None => Bson::Int64((*v as i64).abs()),
            }),
            Some(Bson::Int64(v)) => match v.checked_abs() {
                Some(a) => Some(Bson::Int64(a)),
                None => return Err(location(28680, "can't take $abs of long long min")),
            },
            Some(Bson::Double(v)) => Some(Bson::Double(v.abs())),
            Some(Bson::Decimal128(d)) => {
                let mut bytes = d.bytes();
                bytes[15] &= 0x7f;
                Some(Bson::Decimal128(bson::Decimal128::from_bytes(bytes)))
            }
            Some(other) => {
                return Err(location(
                    28765,
                    format!("$abs only supports numeric types, not {}", type_name(other)),
                ));
            }
        },
        Operator::Max | Operator::Min | Operator::Sum | Operator::Avg => {
            // One array argument: over its elements; several arguments: over them.
            let items: Vec<Bson> = if values.len() == 1 {
                match &values[0] {
                    Some(Bson::Array(items)) => items.clone(),
                    Some(other) => vec![other.clone()],
                    None => vec![],
                }
            } else {
                values.iter().flatten().cloned().collect()
            };
            match op {
                Operator::Max | Operator::Min => {
                    let mut best: Option<Bson> = None;
                    for item in items.into_iter().filter(|v| !nullish(Some(v))) {
                        best = Some(match best {
                            None => item,
                            Some(current) => {
                                let ordering = compare_values(&item, &current);
                                let better = if op == Operator::Max {
                                    ordering == Ordering::Greater
                                } else {
                                    ordering == Ordering::Less
                                };
                                if better { item } else { current }
                            }
                        });
                    }
                    Some(best.unwrap_or(Bson::Null))
                }
                Operator::Sum => Some(sum_numbers(items.iter())),
                _ => {
                    let numbers: Vec<&Bson> = items.iter().filter(|v| is_number(v)).collect();
                    if numbers.is_empty() {
                        Some(Bson::Null)
                    } else {
                        let total = sum_numbers(numbers.iter().copied());
                        Some(divide_for_average(&total, numbers.len()))
                    }
                }
            }
        }
        Operator::And | Operator::Or | Operator::IfNull => unreachable!("handled above"),
    })
}

/// Sums the numbers among `values` (others ignored), as `$sum` does; int when all fit.
pub fn sum_numbers<'a>(values: impl Iterator<Item = &'a Bson>) -> Bson {
    let mut total = Bson::Int32(0);
    for value in values.filter(|v| is_number(v)) {
        total = arithmetic(Arithmetic::Add, &total, value, ArithmeticOverflow::ToDouble)
            .expect("ToDouble never fails");
    }
    total
}

/// `total / count` for `$avg`: double, or decimal when the total is decimal.
pub fn divide_for_average(total: &Bson, count: usize) -> Bson {
    match total {
        Bson::Decimal128(_) => divide(Some(total), Some(&Bson::Int64(count as i64)))
            .ok()
            .flatten()
            .unwrap_or(Bson::Null),
        other => Bson::Double(as_f64(other).unwrap_or(f64::NAN) / count as f64),
    }
}

fn add(values: &[Option<Bson>]) -> Result<Option<Bson>> {
    let mut total = Bson::Int32(0);
    let mut date: Option<i64> = None;
    for value in values {
        match value {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
            Some(Bson::DateTime(d)) => {
                if date.is_some() {
                    return Err(location(
                        16612,
                        "only one date allowed in an $add expression",
                    ));
                }
                date = Some(d.timestamp_millis());
            }
            Some(v) if is_number(v) => {
                total = arithmetic(Arithmetic::Add, &total, v, ArithmeticOverflow::ToDouble)
                    .expect("ToDouble never fails");
            }
            Some(other) => {
                return Err(location(
                    16554,
                    format!(
                        "$add only supports numeric or date types, not {}",
                        type_name(other)
                    ),
                ));
            }
        }
    }
    Ok(Some(match date {
        Some(millis) => {
            let offset = match &total {
                Bson::Int32(v) => *v as i64,
                Bson::Int64(v) => *v,
                other => as_f64(other).unwrap_or(0.0).round() as i64,
            };
            Bson::DateTime(bson::DateTime::from_millis(millis.wrapping_add(offset)))
        }
        None => total,
    }))
}

fn subtract(left: Option<&Bson>, right: Option<&Bson>) -> Result<Option<Bson>> {
    if nullish(left) || nullish(right) {
        return Ok(Some(Bson::Null));
    }
    let (l, r) = (left.expect("checked"), right.expect("checked"));
    Ok(Some(match (l, r) {
        (Bson::DateTime(a), Bson::DateTime(b)) => {
            Bson::Int64(a.timestamp_millis().wrapping_sub(b.timestamp_millis()))
        }
        (Bson::DateTime(a), n) if is_number(n) => {
            let offset = as_f64(n).unwrap_or(0.0).round() as i64;
            Bson::DateTime(bson::DateTime::from_millis(
                a.timestamp_millis().wrapping_sub(offset),
            ))
        }
        (a, b) if is_number(a) && is_number(b) => {
            arithmetic(Arithmetic::Subtract, a, b, ArithmeticOverflow::ToDouble)
                .expect("ToDouble never fails")
        }
        (a, b) => {
            return Err(location(
                16556,
                format!("can't $subtract {} from {}", type_name(b), type_name(a)),
            ));
        }
    }))
}

fn multiply(values: &[Option<Bson>]) -> Result<Option<Bson>> {
    let mut product = Bson::Int32(1);
    for value in values {
        match value {
            None | Some(Bson::Null) | Some(Bson::Undefined) => return Ok(Some(Bson::Null)),
            Some(v) if is_number(v) => {
                product = arithmetic(
                    Arithmetic::Multiply,
                    &product,
                    v,
                    ArithmeticOverflow::ToDouble,
                )
                .expect("ToDouble never fails");
            }
            Some(other) => {
                return Err(location(
                    16555,
                    format!(
                        "$multiply only supports numeric types, not {}",
                        type_name(other)
                    ),
                ));
            }
        }
    }
    Ok(Some(product))
}

fn divide(left: Option<&Bson>, right: Option<&Bson>) -> Result<Option<Bson>> {
    if nullish(left) || nullish(right) {
        return Ok(Some(Bson::Null));
    }
    let (l, r) = (left.expect("checked"), right.expect("checked"));
    if !is_number(l) || !is_number(r) {
        return Err(location(
            16609,
            format!(
                "$divide only supports numeric types, not {} and {}",
                type_name(l),
                type_name(r)
            ),
        ));
    }
    if Number::of(r).to_f64() == 0.0 && !Number::of(r).is_nan() {
        return Err(location(16608, "can't $divide by zero"));
    }
    if matches!(l, Bson::Decimal128(_)) || matches!(r, Bson::Decimal128(_)) {
        // Decimal division through doubles would lose digits; compute to 34 digits by long
        // division on the decoded coefficients.
        return Ok(Some(decimal_divide(l, r)));
    }
    Ok(Some(Bson::Double(
        as_f64(l).unwrap_or(f64::NAN) / as_f64(r).unwrap_or(f64::NAN),
    )))
}

fn decimal_divide(left: &Bson, right: &Bson) -> Bson {
    use cairn_types::order::Decimal;
    let decode = |v: &Bson| match v {
        Bson::Decimal128(d) => Decimal::decode(d),
        other => {
            let text = match other {
                Bson::Int32(i) => i.to_string(),
                Bson::Int64(i) => i.to_string(),
                o => format!("{:.14e}", as_f64(o).unwrap_or(f64::NAN)),
            };
            text.parse::<bson::Decimal128>()
                .map(|d| Decimal::decode(&d))
                .unwrap_or(Decimal::NaN)
        }
    };
    match (decode(left), decode(right)) {
        (
            Decimal::Finite {
                negative: ln,
                coefficient: lc,
                exponent: le,
            },
            Decimal::Finite {
                negative: rn,
                coefficient: rc,
                exponent: re,
            },
        ) if rc != 0 => {
            // Long division producing up to 34 significant digits.
            let mut digits = String::new();
            let mut remainder = lc;
            let mut exponent = le as i64 - re as i64;
            let quotient = remainder / rc;
            remainder %= rc;
            digits.push_str(&quotient.to_string());
            while remainder != 0 && digits.trim_start_matches('0').len() < 34 {
                remainder *= 10;
                digits.push(char::from(b'0' + (remainder / rc) as u8));
                remainder %= rc;
                exponent -= 1;
            }
            let sign = if ln != rn { "-" } else { "" };
            format!("{sign}{digits}E{exponent}")
                .parse::<bson::Decimal128>()
                .map(Bson::Decimal128)
                .unwrap_or(Bson::Null)
        }
        _ => Bson::Double(as_f64(left).unwrap_or(f64::NAN) / as_f64(right).unwrap_or(f64::NAN)),
    }
}

fn modulo(left: Option<&Bson>, right: Option<&Bson>) -> Result<Option<Bson>> {
    if nullish(left) || nullish(right) {
        return Ok(Some(Bson::Null));
    }
    let (l, r) = (left.expect("checked"), right.expect("checked"));
    if !is_number(l) || !is_number(r) {
        return Err(location(
            16611,
            format!(
                "$mod only supports numeric types, not {} and {}",
                type_name(l),
                type_name(r)
            ),
        ));
    }
    if Number::of(r).to_f64() == 0.0 {
        return Err(location(16610, "can't $mod by zero"));
    }
    Ok(Some(match (l, r) {
        (Bson::Int32(a), Bson::Int32(b)) => Bson::Int32(a.wrapping_rem(*b)),
        (Bson::Int32(_) | Bson::Int64(_), Bson::Int32(_) | Bson::Int64(_)) => {
            let (a, b) = (as_exact_i64(l).unwrap_or(0), as_exact_i64(r).unwrap_or(1));
            Bson::Int64(a.wrapping_rem(b))
        }
        _ => Bson::Double(as_f64(l).unwrap_or(f64::NAN) % as_f64(r).unwrap_or(f64::NAN)),
    }))
}

fn coerce_to_string(value: Option<&Bson>, op: Operator) -> Result<String> {
    Ok(match value {
        None | Some(Bson::Null) | Some(Bson::Undefined) => String::new(),
        Some(Bson::String(text)) | Some(Bson::Symbol(text)) => text.clone(),
        Some(Bson::Int32(v)) => v.to_string(),
        Some(Bson::Int64(v)) => v.to_string(),
        Some(Bson::Double(v)) => v.to_string(),
        Some(Bson::Decimal128(v)) => v.to_string(),
        Some(Bson::DateTime(d)) => d.try_to_rfc3339_string().unwrap_or_default(),
        Some(Bson::Timestamp(ts)) => format!("Timestamp({}, {})", ts.time, ts.increment),
        Some(other) => {
            let _ = op;
            return Err(location(
                16007,
                format!(
                    "can't convert from BSON type {} to String",
                    type_name(other)
                ),
            ));
        }
    })
}

fn substr_bytes(
    text: Option<&Bson>,
    start: Option<&Bson>,
    length: Option<&Bson>,
) -> Result<Option<Bson>> {
    let text = coerce_to_string(text, Operator::SubstrBytes)?;
    let start = match start {
        Some(v) if is_number(v) => as_f64(v).unwrap_or(0.0),
        other => {
            return Err(location(
                16034,
                format!(
                    "$substrBytes: starting index must be a numeric type (is BSON type {})",
                    display_type(other)
                ),
            ));
        }
    };
    let length = match length {
        Some(v) if is_number(v) => as_f64(v).unwrap_or(0.0),
        other => {
            return Err(location(
                16035,
                format!(
                    "$substrBytes: length must be a numeric type (is BSON type {})",
                    display_type(other)
                ),
            ));
        }
    };
    let bytes = text.as_bytes();
    let start = if start < 0.0 {
        bytes.len()
    } else {
        (start as usize).min(bytes.len())
    };
    let end = if length < 0.0 {
        bytes.len()
    } else {
        start.saturating_add(length as usize).min(bytes.len())
    };
    if start < bytes.len() && (bytes[start] & 0xC0) == 0x80 {
        return Err(location(
            28656,
            "$substrBytes: Invalid range, starting index is a UTF-8 continuation byte.",
        ));
    }
    if end < bytes.len() && (bytes[end] & 0xC0) == 0x80 {
        return Err(location(
            28657,
            "$substrBytes: Invalid range, ending index is in the middle of a UTF-8 character.",
        ));
    }
    Ok(Some(Bson::String(
        String::from_utf8_lossy(&bytes[start..end]).into_owned(),
    )))
}

fn substr_code_points(
    text: Option<&Bson>,
    start: Option<&Bson>,
    length: Option<&Bson>,
) -> Result<Option<Bson>> {
    let text = coerce_to_string(text, Operator::SubstrCP)?;
    let check = |value: Option<&Bson>,
                 what: &str,
                 type_code: i32,
                 int_code: i32,
                 negative_code: i32|
     -> Result<usize> {
        let v = match value {
            Some(v) if is_number(v) => v,
            other => {
                return Err(location(
                    type_code,
                    format!(
                        "$substrCP: {what} must be a numeric type (is BSON type {})",
                        display_type(other)
                    ),
                ));
            }
        };
        let Some(n) = as_exact_i32(v) else {
            return Err(location(
                int_code,
                format!(
                    "$substrCP: {what} must be a value that can be represented as a 32-bit integral value"
                ),
            ));
        };
        if n < 0 {
            return Err(location(
                negative_code,
                format!("$substrCP: {what} must be non-negative (got: {n})"),
            ));
        }
        Ok(n as usize)
    };
    let start = check(start, "starting index", 34450, 34451, 34455)?;
    let length = check(length, "length", 34452, 34453, 34454)?;
    Ok(Some(Bson::String(
        text.chars().skip(start).take(length).collect(),
    )))
}

fn array_elem_at(array: Option<&Bson>, index: Option<&Bson>) -> Result<Option<Bson>> {
    if nullish(array) || nullish(index) {
        return Ok(Some(Bson::Null));
    }
    let Some(Bson::Array(items)) = array else {
        return Err(location(
            28689,
            format!(
                "$arrayElemAt's first argument must be an array, but is {}",
                display_type(array)
            ),
        ));
    };
    let index = index.expect("checked");
    if !is_number(index) {
        return Err(location(
            28690,
            format!(
                "$arrayElemAt's second argument must be a numeric value, but is {}",
                type_name(index)
            ),
        ));
    }
    let Some(position) = as_exact_i32(index) else {
        return Err(location(
            28691,
            format!(
                "$arrayElemAt's second argument must be representable as a 32-bit integer: {index}"
            ),
        ));
    };
    let position = if position < 0 {
        items.len() as i64 + position as i64
    } else {
        position as i64
    };
    Ok(if position < 0 {
        None
    } else {
        items.get(position as usize).cloned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn eval(expression: Bson, document: &Document) -> Result<Option<Bson>> {
        Expression::parse(&expression)?.evaluate(&Variables::new(document))
    }

    fn eval_ok(expression: Bson, document: &Document) -> Option<Bson> {
        eval(expression, document).unwrap()
    }

    fn code(expression: Bson) -> i32 {
        eval(expression, &doc! {"s": "x", "n": 1})
            .unwrap_err()
            .code
            .code()
    }

    #[test]
    fn manual_examples() {
        let document = doc! {"price": 10, "fee": 2, "qty": 3, "item": "abc", "a": [1, 2, 3],
        "d": bson::DateTime::from_millis(1000), "name": "Hello"};
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$add": ["$price", "$fee"]}), &document),
            Some(Bson::Int32(12))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$add": ["$d", 500]}), &document),
            Some(Bson::DateTime(bson::DateTime::from_millis(1500)))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$subtract": ["$price", "$fee"]}),
                &document
            ),
            Some(Bson::Int32(8))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$multiply": ["$price", "$qty"]}),
                &document
            ),
            Some(Bson::Int32(30))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$divide": ["$price", 4]}), &document),
            Some(Bson::Double(2.5))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$mod": ["$price", 3]}), &document),
            Some(Bson::Int32(1))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$concat": ["$item", " - ", "x"]}),
                &document
            ),
            Some(Bson::String("abc - x".into()))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$concat": ["$item", "$nope"]}),
                &document
            ),
            Some(Bson::Null)
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$toUpper": "$item"}), &document),
            Some(Bson::String("ABC".into()))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$toLower": "$name"}), &document),
            Some(Bson::String("hello".into()))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$substrBytes": ["$name", 1, 3]}),
                &document
            ),
            Some(Bson::String("ell".into()))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$substrCP": ["héllo", 1, 2]}),
                &document
            ),
            Some(Bson::String("él".into()))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(
                    doc! {"$cond": {"if": {"$gte": ["$qty", 3]}, "then": 30, "else": 20}}
                ),
                &document
            ),
            Some(Bson::Int32(30))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$cond": [{"$lt": ["$qty", 3]}, 30, 20]}),
                &document
            ),
            Some(Bson::Int32(20))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$ifNull": ["$missing", "$other", "Unspecified"]}),
                &document
            ),
            Some(Bson::String("Unspecified".into()))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$cmp": ["$qty", 250]}), &document),
            Some(Bson::Int32(-1))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$in": [2, "$a"]}), &document),
            Some(Bson::Boolean(true))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$size": "$a"}), &document),
            Some(Bson::Int32(3))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$arrayElemAt": ["$a", -1]}), &document),
            Some(Bson::Int32(3))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$arrayElemAt": ["$a", 15]}), &document),
            None
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$type": "$nope"}), &document),
            Some(Bson::String("missing".into()))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$type": "$a"}), &document),
            Some(Bson::String("array".into()))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$abs": -5}), &document),
            Some(Bson::Int32(5))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$max": "$a"}), &document),
            Some(Bson::Int32(3))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$min": [5, "$price", null]}),
                &document
            ),
            Some(Bson::Int32(5))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$literal": {"$add": 1}}), &document),
            Some(Bson::Document(doc! {"$add": 1}))
        );
        assert_eq!(
            eval_ok(
                Bson::Document(doc! {"$and": [1, "$item", {"$not": [false]}]}),
                &document
            ),
            Some(Bson::Boolean(true))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$or": [0, null]}), &document),
            Some(Bson::Boolean(false))
        );
        assert_eq!(
            eval_ok(Bson::String("$$ROOT.item".into()), &document),
            Some(Bson::String("abc".into()))
        );
    }

    #[test]
    fn now_comes_from_the_caller() {
        let root = doc! {};
        let bound = doc! {"NOW": bson::DateTime::from_millis(7)};
        let expression = Expression::parse(&Bson::String("$$NOW".into())).unwrap();
        assert_eq!(
            expression
                .evaluate(&Variables::with_bound(&root, &bound))
                .unwrap(),
            Some(Bson::DateTime(bson::DateTime::from_millis(7)))
        );
    }

    #[test]
    fn missing_is_below_null_in_comparisons() {
        let document = doc! {"n": null};
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$eq": ["$missing", null]}), &document),
            Some(Bson::Boolean(false))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$eq": ["$n", null]}), &document),
            Some(Bson::Boolean(true))
        );
        assert_eq!(
            eval_ok(Bson::Document(doc! {"$lt": ["$missing", null]}), &document),
            Some(Bson::Boolean(true))
        );
    }

    #[test]
    fn field_paths_map_over_arrays() {
        let document = doc! {"a": [{"b": 1}, {"c": 2}, 7, {"b": [3]}, [{"b": 4}]]};
        assert_eq!(
            eval_ok(Bson::String("$a.b".into()), &document),
            Some(Bson::Array(vec![
                Bson::Int32(1),
                Bson::Array(vec![3.into()]),
                Bson::Array(vec![4.into()])
            ]))
        );
    }

    #[test]
    fn errors_carry_mongodb_codes() {
        assert_eq!(code(Bson::Document(doc! {"$foo": 1})), 168);
        assert_eq!(code(Bson::Document(doc! {"$subtract": [1]})), 16020);
        assert_eq!(code(Bson::Document(doc! {"$add": ["$s", 1]})), 16554);
        assert_eq!(code(Bson::Document(doc! {"$divide": [1, 0]})), 16608);
        assert_eq!(code(Bson::Document(doc! {"$mod": [1, 0]})), 16610);
        assert_eq!(code(Bson::Document(doc! {"$concat": ["a", 1]})), 16702);
        assert_eq!(code(Bson::Document(doc! {"$size": "$s"})), 17124);
        assert_eq!(
            code(Bson::Document(doc! {"$arrayElemAt": ["$s", 0]})),
            28689
        );
        assert_eq!(code(Bson::Document(doc! {"$in": [1, "$s"]})), 40081);
        assert_eq!(code(Bson::Document(doc! {"$abs": "$s"})), 28765);
        assert_eq!(
            code(Bson::Document(doc! {"$cond": {"if": true, "then": 1}})),
            17082
        );
        assert_eq!(code(Bson::Document(doc! {"$ifNull": ["$s"]})), 1257300);
        assert_eq!(code(Bson::String("$".into())), 16872);
        assert_eq!(code(Bson::String("$$nope".into())), 17276);
        assert_eq!(code(Bson::Document(doc! {"$add": [1], "x": 1})), 15983);
        assert_eq!(
            code(Bson::Document(doc! {"$substrCP": ["abc", -1, 1]})),
            34455
        );
        assert_eq!(code(Bson::Document(doc! {"$abs": i64::MIN})), 28680);
        assert_eq!(code(Bson::String("$$NOW".into())), 51144);
        let mut deep = Bson::Int32(1);
        for _ in 0..200 {
            deep = Bson::Document(doc! {"$abs": deep});
        }
        assert_eq!(
            Expression::parse(&deep).unwrap_err().code,
            ErrorCode::Overflow
        );
    }
}
