//! Projections of find and `$project`: inclusion, exclusion, `_id` rules, dotted paths through
//! arrays, `$slice`, `$elemMatch`, the positional `$`, and (MongoDB 4.4+) computed fields.
//!
//! Rules kept here (MongoDB's):
//! - `_id` is included unless excluded explicitly; it is the only field an inclusion projection
//!   may exclude. Mixing inclusion and exclusion otherwise fails (Location31253/31254).
//! - Inclusion keeps the document's field order; computed fields replace a field in place or are
//!   appended. Through arrays, inclusion keeps the documents (projected) and drops scalars;
//!   exclusion keeps scalars.
//! - `$slice` and exclusion-only projections keep every other field; `$elemMatch`, positional
//!   and computed fields make the projection an inclusion.
//! - `{a: 1, "a.b": 1}` is a path collision (Location31250).

use crate::agg::expression::{Expression, ParseContext, Variables};
use crate::matcher::Matcher;
use crate::value::type_name;
use bson::{Bson, Document};
use cairn_types::{Error, ErrorCode, Result};

/// What a projection does with one field.
#[derive(Clone, Debug, PartialEq)]
enum Action {
    Include,
    Exclude,
    Computed(Expression),
    Slice {
        skip: i64,
        limit: Option<i64>,
    },
    ElemMatch(Box<Matcher>),
    /// `a.$`: the element the query matched.
    Positional,
    Nested(Tree),
}

/// A level of the projection tree, fields in specification order.
#[derive(Clone, Debug, PartialEq, Default)]
struct Tree {
    fields: Vec<(String, Action)>,
}

impl Tree {
    fn get(&self, name: &str) -> Option<&Action> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Action> {
        self.fields
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }
}

/// The kind of a projection, as explain names the stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectionKind {
    Inclusion,
    Exclusion,
}

/// A parsed projection.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    kind: ProjectionKind,
    tree: Tree,
    include_id: bool,
    /// Only top-level includes/excludes: explain's PROJECTION_SIMPLE.
    simple: bool,
    uses_positional: bool,
    source: Document,
}

fn location(code: i32, message: impl Into<String>) -> Error {
    Error::new(ErrorCode::Location(code), message)
}

fn is_truthy_number_or_bool(value: &Bson) -> Option<bool> {
    match value {
        Bson::Boolean(b) => Some(*b),
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
            Some(crate::value::as_f64(value).is_some_and(|f| f != 0.0))
        }
        _ => None,
    }
}

impl Projection {
    /// Parses a find projection.
    pub fn parse(spec: &Document) -> Result<Projection> {
        Projection::parse_with(spec, &ParseContext::default(), true)
    }

    /// Parses a projection; `find` allows `$elemMatch`, `$slice` and positional `$`, `$project`
    /// does not.
    pub fn parse_with(spec: &Document, context: &ParseContext, find: bool) -> Result<Projection> {
        let mut tree = Tree::default();
        let mut kind: Option<ProjectionKind> = None;
        let mut include_id = true;
        let mut simple = true;
        let mut uses_positional = false;
        let mut set_kind = |wanted: ProjectionKind, field: &str| -> Result<()> {
            match kind {
                Some(existing) if existing != wanted => {
                    if wanted == ProjectionKind::Exclusion {
                        Err(location(
                            31253,
                            format!("Cannot do exclusion on field {field} in inclusion projection"),
                        ))
                    } else {
                        Err(location(
                            31254,
                            format!("Cannot do inclusion on field {field} in exclusion projection"),
                        ))
                    }
                }
                _ => {
                    kind = Some(wanted);
                    Ok(())
                }
            }
        };
        for (field, value) in spec {
            if field.is_empty() || field.split('.').any(str::is_empty) {
                return Err(location(
                    40352,
                    "FieldPath cannot be constructed with empty string",
                ));
            }
            let mut parts: Vec<&str> = field.split('.').collect();
            let positional = parts.last() == Some(&"$");
            if positional {
                parts.pop();
                if !find {
                    return Err(location(
                        31324,
                        "Cannot use positional projection in aggregation projection",
                    ));
                }
                if uses_positional {
                    return Err(location(
                        31276,
                        "Cannot specify more than one positional projection per query.",
                    ));
                }
                if parts.is_empty() {
                    return Err(location(
                        16410,
                        "FieldPath field names may not start with '$'.",
                    ));
                }
            }
            if parts.iter().any(|p| p.starts_with('$')) {
                return Err(location(
                    16410,
                    format!(
                        "FieldPath field names may not start with '$'. Consider using $getField or $setField. ({field})"
                    ),
                ));
            }
            let action = if positional {
                if is_truthy_number_or_bool(value) != Some(true) {
                    return Err(location(
                        31395,
                        "positional projection must be an inclusion",
                    ));
                }
                uses_positional = true;
                simple = false;
                set_kind(ProjectionKind::Inclusion, field)?;
                Action::Positional
            } else if let Some(include) = is_truthy_number_or_bool(value) {
                if parts.len() > 1 {
                    simple = false;
                }
                if field == "_id" {
                    include_id = include;
                    if include {
                        Action::Include
                    } else {
                        Action::Exclude
                    }
                } else if include {
                    set_kind(ProjectionKind::Inclusion, field)?;
                    Action::Include
                } else {
                    set_kind(ProjectionKind::Exclusion, field)?;
                    Action::Exclude
                }
            } else {
                simple = false;
                match value {
                    Bson::Document(operator)
                        if operator.keys().next().map(String::as_str) == Some("$slice") && find =>
                    {
                        parse_slice(operator.get("$slice").expect("checked"))?
                    }
                    Bson::Document(operator)
                        if operator.keys().next().map(String::as_str) == Some("$elemMatch")
                            && find =>
                    {
                        if parts.len() > 1 {
                            return Err(location(
                                31275,
                                "Cannot use $elemMatch projection on a nested field.",
                            ));
                        }
                        let Some(Bson::Document(query)) = operator.get("$elemMatch") else {
                            return Err(Error::bad_value(
                                "elemMatch: Invalid argument, object required.",
                            ));
                        };
                        set_kind(ProjectionKind::Inclusion, field)?;
                        let wrapped = bson::doc! {field: {"$elemMatch": query.clone()}};
                        Action::ElemMatch(Box::new(Matcher::parse(&wrapped)?))
                    }
                    Bson::Document(nested)
                        if !nested.keys().next().is_some_and(|k| k.starts_with('$'))
                            && !nested.is_empty() =>
                    {
                        // {a: {b: 1}} is the same as {"a.b": 1}.
                        let inner = Projection::parse_with(nested, context, find)?;
                        let inner_kind = if inner
                            .tree
                            .fields
                            .iter()
                            .all(|(_, a)| matches!(a, Action::Exclude))
                        {
                            ProjectionKind::Exclusion
                        } else {
                            ProjectionKind::Inclusion
                        };
                        set_kind(inner_kind, field)?;
                        let mut nested_tree = inner.tree;
                        if !inner.include_id && inner_kind == ProjectionKind::Inclusion {
                            nested_tree.fields.retain(|(n, _)| n != "_id");
                        }
                        Action::Nested(nested_tree)
                    }
                    other => {
                        set_kind(ProjectionKind::Inclusion, field)?;
                        Action::Computed(Expression::parse_with(other, context)?)
                    }
                }
            };
            insert(&mut tree, &parts, action, field)?;
        }
        // `{_id: 1}` alone is an inclusion (only _id); `{_id: 0}` alone an exclusion.
        let kind = kind.unwrap_or(if include_id && spec.contains_key("_id") {
            ProjectionKind::Inclusion
        } else {
            ProjectionKind::Exclusion
        });
        if kind == ProjectionKind::Inclusion && !include_id {
            tree.fields.retain(|(n, _)| n != "_id");
        }
        Ok(Projection {
            kind,
            tree,
            include_id,
            simple,
            uses_positional,
            source: spec.clone(),
        })
    }

    pub fn kind(&self) -> ProjectionKind {
        self.kind
    }

    /// True for explain's PROJECTION_SIMPLE (top-level inclusion/exclusion only).
    pub fn is_simple(&self) -> bool {
        self.simple
    }

    /// True when the projection has a positional `$` (it needs the query's match position).
    pub fn uses_positional(&self) -> bool {
        self.uses_positional
    }

    pub fn source(&self) -> &Document {
        &self.source
    }

    /// Projects a document. `matched_position` is the query's array position for `a.$`.
    pub fn apply(&self, document: &Document, matched_position: Option<usize>) -> Result<Document> {
        self.apply_with(document, matched_position, None)
    }

    /// Projects with `let` variables for computed fields.
    pub fn apply_with(
        &self,
        document: &Document,
        matched_position: Option<usize>,
        variables: Option<&Document>,
    ) -> Result<Document> {
        let context = ApplyContext {
            root: document,
            matched_position,
            variables,
        };
        let mut out = match self.kind {
            ProjectionKind::Inclusion => {
                include(document, &self.tree, &context, true, self.include_id)?
            }
            ProjectionKind::Exclusion => exclude(document, &self.tree, &context, true)?,
        };
        if self.kind == ProjectionKind::Inclusion {
            add_computed(&mut out, &self.tree, &context)?;
        }
        Ok(out)
    }
}

fn parse_slice(argument: &Bson) -> Result<Action> {
    let integer = |value: &Bson| -> Option<i64> {
        crate::value::as_f64(value).map(|f| f.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
    };
    match argument {
        Bson::Array(items) => {
            if items.len() != 2 {
                return Err(location(
                    28724,
                    "First argument to $slice must be an array of 2 elements",
                ));
            }
            let (Some(skip), Some(limit)) = (integer(&items[0]), integer(&items[1])) else {
                return Err(location(28724, "$slice arguments must be numeric"));
            };
            if limit <= 0 {
                return Err(location(
                    28724,
                    format!("$slice limit must be positive, got {limit}"),
                ));
            }
            Ok(Action::Slice {
                skip,
                limit: Some(limit),
            })
        }
        value => match integer(value) {
            Some(n) if n >= 0 => Ok(Action::Slice {
                skip: 0,
                limit: Some(n),
            }),
            Some(n) => Ok(Action::Slice {
                skip: n,
                limit: None,
            }),
            None => Err(location(
                28667,
                format!(
                    "Invalid $slice syntax. The given syntax did not match the find() syntax because :: Location31273: $slice only supports numbers and [skip, limit] arrays :: got {}",
                    type_name(value)
                ),
            )),
        },
    }
}

fn insert(tree: &mut Tree, parts: &[&str], action: Action, full: &str) -> Result<()> {
    let collision = || location(31250, format!("Path collision at {full}"));
    let (first, rest) = parts.split_first().expect("non-empty path");
    if rest.is_empty() {
        if tree.get(first).is_some() {
            return Err(collision());
        }
        tree.fields.push(((*first).to_owned(), action));
        return Ok(());
    }
    match tree.get_mut(first) {
        Some(Action::Nested(inner)) => insert(inner, rest, action, full),
        Some(_) => Err(collision()),
        None => {
            let mut inner = Tree::default();
            insert(&mut inner, rest, action, full)?;
            tree.fields
                .push(((*first).to_owned(), Action::Nested(inner)));
            Ok(())
        }
    }
}

struct ApplyContext<'a> {
    root: &'a Document,
    matched_position: Option<usize>,
    variables: Option<&'a Document>,
}

fn slice(value: &Bson, skip: i64, limit: Option<i64>) -> Bson {
    let Bson::Array(items) = value else {
        return value.clone();
    };
    let len = items.len() as i64;
    let (start, end) = match limit {
        None => ((len + skip).max(0), len),
        Some(limit) => {
            let start = if skip >= 0 {
                skip.min(len)
            } else {
                (len + skip).max(0)
            };
            (start, start.saturating_add(limit).min(len))
        }
    };
    Bson::Array(items[start as usize..end as usize].to_vec())
}

fn include(
    document: &Document,
    tree: &Tree,
    context: &ApplyContext<'_>,
    top: bool,
    include_id: bool,
) -> Result<Document> {
    let mut out = Document::new();
    for (name, value) in document {
        let action = match tree.get(name) {
            Some(action) => action,
            None if top && name == "_id" && include_id => &Action::Include,
            None => continue,
        };
        match action {
            Action::Include => {
                out.insert(name.clone(), value.clone());
            }
            Action::Exclude | Action::Computed(_) => {}
            Action::Slice { skip, limit } => {
                out.insert(name.clone(), slice(value, *skip, *limit));
            }
            Action::ElemMatch(matcher) => {
                if let Some(details) =
                    matcher.match_details(&bson::doc! {name.clone(): value.clone()})?
                {
                    if let (Bson::Array(items), Some(position)) = (value, details.array_position) {
                        out.insert(name.clone(), Bson::Array(vec![items[position].clone()]));
                    }
                }
            }
            Action::Positional => {
                let Bson::Array(items) = value else {
                    out.insert(name.clone(), value.clone());
                    continue;
                };
                match context.matched_position.and_then(|p| items.get(p)) {
                    Some(item) => {
                        out.insert(name.clone(), Bson::Array(vec![item.clone()]));
                    }
                    None => {
                        return Err(location(
                            51246,
                            "Executor error during find command :: caused by :: positional operator '.$' couldn't find a matching element in the array",
                        ));
                    }
                }
            }
            Action::Nested(inner) => {
                if let Some(projected) = include_value(value, inner, context)? {
                    out.insert(name.clone(), projected);
                }
            }
        }
    }
    Ok(out)
}

fn include_value(value: &Bson, tree: &Tree, context: &ApplyContext<'_>) -> Result<Option<Bson>> {
    Ok(match value {
        Bson::Document(inner) => Some(Bson::Document(include(inner, tree, context, false, false)?)),
        Bson::Array(items) => {
            let mut projected = Vec::new();
            for item in items {
                if let Some(value) = include_value(item, tree, context)? {
                    projected.push(value);
                }
            }
            Some(Bson::Array(projected))
        }
        _ => None,
    })
}

fn exclude(
    document: &Document,
    tree: &Tree,
    context: &ApplyContext<'_>,
    top: bool,
) -> Result<Document> {
    let mut out = Document::new();
    for (name, value) in document {
        match tree.get(name) {
            None | Some(Action::Include) => {
                out.insert(name.clone(), value.clone());
            }
            Some(Action::Exclude) => {}
            Some(Action::Slice { skip, limit }) => {
                out.insert(name.clone(), slice(value, *skip, *limit));
            }
            Some(Action::Nested(inner)) => {
                out.insert(name.clone(), exclude_value(value, inner, context)?);
            }
            Some(Action::Computed(_) | Action::ElemMatch(_) | Action::Positional) => {
                unreachable!("inclusion-only actions in an exclusion projection")
            }
        }
    }
    let _ = top;
    Ok(out)
}

fn exclude_value(value: &Bson, tree: &Tree, context: &ApplyContext<'_>) -> Result<Bson> {
    Ok(match value {
        Bson::Document(inner) => Bson::Document(exclude(inner, tree, context, false)?),
        Bson::Array(items) => Bson::Array(
            items
                .iter()
                .map(|item| exclude_value(item, tree, context))
                .collect::<Result<_>>()?,
        ),
        other => other.clone(),
    })
}

fn add_computed(out: &mut Document, tree: &Tree, context: &ApplyContext<'_>) -> Result<()> {
    for (name, action) in &tree.fields {
        match action {
            Action::Computed(expression) => {
                let variables = match context.variables {
                    Some(bound) => Variables::with_bound(context.root, bound),
                    None => Variables::new(context.root),
                };
                if let Some(value) = expression.evaluate(&variables)? {
                    out.insert(name.clone(), value);
                }
            }
            Action::Nested(inner) if has_computed(inner) => {
                let child = match out.get_mut(name.as_str()) {
                    Some(Bson::Document(child)) => child,
                    Some(Bson::Array(items)) => {
                        for item in items.iter_mut() {
                            if let Bson::Document(child) = item {
                                add_computed(child, inner, context)?;
                            }
                        }
                        continue;
                    }
                    _ => {
                        out.insert(name.clone(), Document::new());
                        match out.get_mut(name.as_str()) {
                            Some(Bson::Document(child)) => child,
                            _ => unreachable!("just inserted"),
                        }
                    }
                };
                add_computed(child, inner, context)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn has_computed(tree: &Tree) -> bool {
    tree.fields.iter().any(|(_, action)| match action {
        Action::Computed(_) => true,
        Action::Nested(inner) => has_computed(inner),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn project(spec: Document, document: Document) -> Document {
        Projection::parse(&spec)
            .unwrap()
            .apply(&document, None)
            .unwrap()
    }

    #[test]
    fn manual_examples() {
        let inventory = doc! {"_id": 1, "item": "journal", "status": "A", "size": {"h": 14, "w": 21, "uom": "cm"}, "instock": [{"warehouse": "A", "qty": 5}, {"warehouse": "C", "qty": 15}]};
        assert_eq!(
            project(doc! {"item": 1, "status": 1}, inventory.clone()),
            doc! {"_id": 1, "item": "journal", "status": "A"}
        );
        assert_eq!(
            project(doc! {"item": 1, "status": 1, "_id": 0}, inventory.clone()),
            doc! {"item": "journal", "status": "A"}
        );
        assert_eq!(
            project(
                doc! {"status": 0, "instock": 0, "size": 0},
                inventory.clone()
            ),
            doc! {"_id": 1, "item": "journal"}
        );
        assert_eq!(
            project(doc! {"item": 1, "size.uom": 1}, inventory.clone()),
            doc! {"_id": 1, "item": "journal", "size": {"uom": "cm"}}
        );
        assert_eq!(
            project(doc! {"size.uom": 0}, inventory.clone()),
            doc! {"_id": 1, "item": "journal", "status": "A", "size": {"h": 14, "w": 21}, "instock": [{"warehouse": "A", "qty": 5}, {"warehouse": "C", "qty": 15}]}
        );
        assert_eq!(
            project(doc! {"item": 1, "instock.qty": 1}, inventory.clone()),
            doc! {"_id": 1, "item": "journal", "instock": [{"qty": 5}, {"qty": 15}]}
        );
        assert_eq!(
            project(
                doc! {"item": 1, "instock": {"$slice": -1}},
                inventory.clone()
            ),
            doc! {"_id": 1, "item": "journal", "instock": [{"warehouse": "C", "qty": 15}]}
        );
        assert_eq!(
            project(doc! {"instock": {"$slice": [1, 5]}}, inventory.clone()),
            doc! {"_id": 1, "item": "journal", "status": "A", "size": {"h": 14, "w": 21, "uom": "cm"}, "instock": [{"warehouse": "C", "qty": 15}]}
        );
        assert_eq!(
            project(
                doc! {"instock": {"$elemMatch": {"qty": {"$gt": 10}}}},
                inventory.clone()
            ),
            doc! {"_id": 1, "instock": [{"warehouse": "C", "qty": 15}]}
        );
        assert_eq!(
            project(
                doc! {"_id": 0, "item": 1, "h2": {"$multiply": ["$size.h", 2]}, "tag": {"$literal": 1}},
                inventory.clone()
            ),
            doc! {"item": "journal", "h2": 28, "tag": 1}
        );
        assert_eq!(project(doc! {}, inventory.clone()), inventory);
        assert_eq!(project(doc! {"_id": 1}, inventory.clone()), doc! {"_id": 1});
        assert_eq!(
            project(doc! {"_id": 0}, doc! {"_id": 1, "a": 2}),
            doc! {"a": 2}
        );
        assert_eq!(
            project(
                doc! {"a": {"b": 1}},
                doc! {"_id": 1, "a": [{"b": 1, "c": 2}, 5, [{"b": 3}]]}
            ),
            doc! {"_id": 1, "a": [{"b": 1}, [{"b": 3}]]}
        );
        assert_eq!(
            project(doc! {"a.b": 0}, doc! {"_id": 1, "a": [{"b": 1, "c": 2}, 5]}),
            doc! {"_id": 1, "a": [{"c": 2}, 5]}
        );
    }

    #[test]
    fn positional() {
        let projection = Projection::parse(&doc! {"grades.$": 1}).unwrap();
        let document = doc! {"_id": 1, "semester": 1, "grades": [70, 87, 90]};
        assert_eq!(
            projection.apply(&document, Some(1)).unwrap(),
            doc! {"_id": 1, "grades": [87]}
        );
        assert_eq!(
            projection.apply(&document, None).unwrap_err().code.code(),
            51246
        );
    }

    fn code(spec: Document) -> i32 {
        Projection::parse(&spec).unwrap_err().code.code()
    }

    #[test]
    fn bad_projections() {
        assert_eq!(code(doc! {"a": 1, "b": 0}), 31253);
        assert_eq!(code(doc! {"a": 0, "b": 1}), 31254);
        assert_eq!(code(doc! {"a": 1, "a.b": 1}), 31250);
        assert_eq!(code(doc! {"a.$": 1, "b.$": 1}), 31276);
        assert_eq!(code(doc! {"a.b": {"$elemMatch": {"x": 1}}}), 31275);
        assert_eq!(code(doc! {"$a": 1}), 16410);
        assert_eq!(code(doc! {"a": {"$foo": 1}}), 168);
        assert_eq!(code(doc! {"a": {"$slice": [1, 0]}}), 28724);
        assert_eq!(code(doc! {"a": {"$slice": "x"}}), 28667);
        assert_eq!(code(doc! {"a..b": 1}), 40352);
        assert_eq!(code(doc! {"a": 0, "b": "$x"}), 31254);
    }
}
