//! Dotted field paths and how a path visits the values of a document.
//!
//! [`visit`] follows MongoDB's element iterator (`db/matcher/path.cpp`): it walks embedded
//! documents; at an array in the middle of a path it descends into every element that is a
//! document and, when the next component is a number equal to an element's index, into that
//! element as well; a scalar or a missing field in the middle of a path yields "missing" (`None`)
//! once. At the end of the path an array yields each element (nested arrays as they are) and then
//! the array itself, unless [`LeafArrays::NoTraversal`] asks for the array alone (used by
//! `$size` and `$elemMatch`). Each visited value carries the index in the outermost array that led
//! to it, which the positional `$` operator uses.

use bson::{Bson, Document};

/// A dotted path split into its components. Filters accept any component (a component that does
/// not exist simply does not match); updates and projections validate with their own rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    parts: Vec<String>,
}

impl FieldPath {
    /// Splits `a.b.c` into its components.
    pub fn parse(dotted: &str) -> FieldPath {
        FieldPath {
            parts: dotted.split('.').map(str::to_owned).collect(),
        }
    }

    pub fn from_parts(parts: Vec<String>) -> FieldPath {
        FieldPath { parts }
    }

    pub fn parts(&self) -> &[String] {
        &self.parts
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The dotted form.
    pub fn dotted(&self) -> String {
        self.parts.join(".")
    }

    /// True when `self` is a prefix of `other` (or equal), component by component.
    pub fn is_prefix_of(&self, other: &FieldPath) -> bool {
        self.parts.len() <= other.parts.len() && other.parts[..self.parts.len()] == self.parts[..]
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.dotted())
    }
}

/// What a path does with an array at its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafArrays {
    /// Visit every element, then the array itself (comparisons, equality, `$type`, ...).
    Traverse,
    /// Visit the array itself only (`$size`, `$elemMatch`).
    NoTraversal,
    /// Visit every element but not the array itself; an empty array is visited as `undefined`
    /// (index keys and sort keys, as MongoDB's key generator does).
    TraverseOmitArray,
    /// Visit every element but not the array itself, and nothing for an empty array
    /// (`distinct`).
    ElementsOnly,
}

static UNDEFINED: Bson = Bson::Undefined;

/// True for a path component that can index an array (`"0"`, `"12"`).
pub fn is_array_index(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())
}

/// Visits every value `path` reaches in `document`, stopping early when `visitor` returns true.
/// The visitor gets the value (`None` for missing) and the index in the outermost array
/// traversed, if any. Returns true when the visitor stopped the walk.
pub fn visit<'a>(
    document: &'a Document,
    path: &[String],
    leaf: LeafArrays,
    visitor: &mut dyn FnMut(Option<&'a Bson>, Option<usize>) -> bool,
) -> bool {
    assert!(!path.is_empty(), "visit needs a non-empty path");
    visit_document(document, path, leaf, None, visitor)
}

fn visit_document<'a>(
    document: &'a Document,
    path: &[String],
    leaf: LeafArrays,
    offset: Option<usize>,
    visitor: &mut dyn FnMut(Option<&'a Bson>, Option<usize>) -> bool,
) -> bool {
    let mut current = document;
    let mut index = 0;
    loop {
        let Some(value) = current.get(&path[index]) else {
            return visitor(None, offset);
        };
        let rest = &path[index + 1..];
        match value {
            Bson::Array(items) => return visit_array(items, value, rest, leaf, offset, visitor),
            _ if rest.is_empty() => return visitor(Some(value), offset),
            Bson::Document(inner) => {
                current = inner;
                index += 1;
            }
            _ => return visitor(None, offset),
        }
    }
}

fn visit_array<'a>(
    items: &'a [Bson],
    array: &'a Bson,
    rest: &[String],
    leaf: LeafArrays,
    offset: Option<usize>,
    visitor: &mut dyn FnMut(Option<&'a Bson>, Option<usize>) -> bool,
) -> bool {
    if rest.is_empty() {
        if leaf == LeafArrays::NoTraversal {
            return visitor(Some(array), offset);
        }
        for (position, item) in items.iter().enumerate() {
            if visitor(Some(item), offset.or(Some(position))) {
                return true;
            }
        }
        if leaf == LeafArrays::TraverseOmitArray {
            return items.is_empty() && visitor(Some(&UNDEFINED), offset);
        }
        if leaf == LeafArrays::ElementsOnly {
            return false;
        }
        return visitor(Some(array), offset);
    }
    let next = &rest[0];
    let next_is_index = is_array_index(next);
    for (position, item) in items.iter().enumerate() {
        let offset_match = next_is_index && *next == position.to_string();
        match item {
            Bson::Document(inner) => {
                if visit_document(inner, rest, leaf, offset.or(Some(position)), visitor) {
                    return true;
                }
                if offset_match {
                    let stop = if rest.len() == 1 {
                        visitor(Some(item), offset)
                    } else {
                        visit_document(inner, &rest[1..], leaf, offset, visitor)
                    };
                    if stop {
                        return true;
                    }
                }
            }
            _ if offset_match => {
                let stop = if rest.len() == 1 {
                    visitor(Some(item), offset)
                } else if let Bson::Array(inner) = item {
                    visit_array(inner, item, &rest[1..], leaf, offset, visitor)
                } else {
                    false
                };
                if stop {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

/// All values a path reaches (with `None` for missing), for tests and index keys.
pub fn collect<'a>(
    document: &'a Document,
    path: &[String],
    leaf: LeafArrays,
) -> Vec<Option<&'a Bson>> {
    let mut values = Vec::new();
    visit(document, path, leaf, &mut |value, _| {
        values.push(value);
        false
    });
    values
}

/// The values an index or a sort uses for `path`: every value reached, arrays at the end
/// expanded into their elements (an empty one as `undefined`), missing as null; at least one.
pub fn key_values(document: &Document, path: &[String]) -> Vec<Bson> {
    let mut values: Vec<Bson> = Vec::new();
    visit(
        document,
        path,
        LeafArrays::TraverseOmitArray,
        &mut |value, _| {
            values.push(value.cloned().unwrap_or(Bson::Null));
            false
        },
    );
    if values.is_empty() {
        values.push(Bson::Null);
    }
    values
}

/// The value at a dotted path without array expansion: documents by field name, arrays by
/// numeric index. Used by updates and projections, which address one position.
pub fn get_exact<'a>(document: &'a Document, path: &[String]) -> Option<&'a Bson> {
    let (first, rest) = path.split_first()?;
    let mut current = document.get(first)?;
    for part in rest {
        current = match current {
            Bson::Document(inner) => inner.get(part)?,
            Bson::Array(items) if is_array_index(part) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn values(document: &Document, path: &str) -> Vec<Option<Bson>> {
        collect(
            document,
            FieldPath::parse(path).parts(),
            LeafArrays::Traverse,
        )
        .into_iter()
        .map(|v| v.cloned())
        .collect()
    }

    #[test]
    fn embedded_and_missing() {
        let document = doc! {"a": {"b": 1}, "c": 5};
        assert_eq!(values(&document, "a.b"), vec![Some(Bson::Int32(1))]);
        assert_eq!(values(&document, "a.x"), vec![None]);
        assert_eq!(values(&document, "c.d"), vec![None]);
        assert_eq!(values(&document, "z"), vec![None]);
    }

    #[test]
    fn arrays_in_the_middle_and_at_the_end() {
        let document = doc! {"a": [{"b": 1}, {}, 5, {"b": [2, 3]}]};
        assert_eq!(
            values(&document, "a.b"),
            vec![
                Some(Bson::Int32(1)),
                None,
                Some(Bson::Int32(2)),
                Some(Bson::Int32(3)),
                Some(Bson::Array(vec![Bson::Int32(2), Bson::Int32(3)]))
            ]
        );
        // Scalars and empty arrays yield nothing for a sub-path.
        assert!(values(&doc! {"a": [5]}, "a.b").is_empty());
        assert!(values(&doc! {"a": []}, "a.b").is_empty());
    }

    #[test]
    fn numeric_components_index_arrays() {
        let document = doc! {"a": [[1, 2], {"b": 7}]};
        // The document element is also searched for a field "0" (missing), as MongoDB does.
        assert_eq!(
            values(&document, "a.0"),
            vec![Some(Bson::Array(vec![1.into(), 2.into()])), None]
        );
        assert_eq!(values(&document, "a.1.b"), vec![None, Some(Bson::Int32(7))]);
        let nested = doc! {"a": [[{"b": 1}]]};
        assert_eq!(values(&nested, "a.0.b"), vec![Some(Bson::Int32(1))]);
        assert!(values(&nested, "a.b").is_empty());
    }

    #[test]
    fn outermost_offset_is_reported() {
        let document = doc! {"a": [{"b": [1, 2]}, {"b": [3]}]};
        let mut seen = Vec::new();
        visit(
            &document,
            FieldPath::parse("a.b").parts(),
            LeafArrays::Traverse,
            &mut |v, o| {
                seen.push((v.cloned(), o));
                false
            },
        );
        assert_eq!(seen[1], (Some(Bson::Int32(2)), Some(0)));
        assert_eq!(seen[3], (Some(Bson::Int32(3)), Some(1)));
    }

    #[test]
    fn exact_lookup() {
        let document = doc! {"a": [{"b": 1}, {"b": 2}]};
        assert_eq!(
            get_exact(&document, FieldPath::parse("a.1.b").parts()),
            Some(&Bson::Int32(2))
        );
        assert_eq!(get_exact(&document, FieldPath::parse("a.b").parts()), None);
    }
}
