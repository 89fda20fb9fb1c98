//! Index bounds: ordered interval lists per index field, derived from a filter, and their
//! conversion to encoded key ranges that the executor scans.
//!
//! Intervals are kept in ascending value order (MongoDB's order); a descending index field
//! flips them only when encoded and when rendered for explain. An [`IntervalList`] is sorted,
//! disjoint and merged.
//!
//! Soundness: the bounds of a field always contain every key of every matching document
//! (a superset); predicates whose bounds are also *exact* (every key inside belongs to a match)
//! can be dropped from the residual filter when the key ranges enforce them. In particular:
//! - `{a: null}` gets `[null, null]`: missing fields are indexed as null;
//! - comparisons are type-bracketed (`$gt: 5` is `(5, inf.0]`), NaN has its own point;
//! - `$ne`/`$nin`/`$not` take the complement of exact bounds that contain neither null nor
//!   undefined (a document whose path reaches nothing is indexed as null and matches a
//!   negation); otherwise they do not constrain the field;
//! - on a multikey field, bounds of different predicates are not intersected (different
//!   elements may satisfy them); inside one `$elemMatch` they are.

use crate::matcher::{InList, Node, Predicate, RegexPredicate};
use crate::path::FieldPath;
use bson::{Bson, Document};
use cairn_types::keystring::{self, Direction};
use cairn_types::order::{canonical_rank, compare_values};
use std::cmp::Ordering;

/// One interval of values.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub start: Bson,
    pub start_inclusive: bool,
    pub end: Bson,
    pub end_inclusive: bool,
}

impl Interval {
    pub fn new(start: Bson, start_inclusive: bool, end: Bson, end_inclusive: bool) -> Interval {
        Interval {
            start,
            start_inclusive,
            end,
            end_inclusive,
        }
    }

    pub fn point(value: Bson) -> Interval {
        Interval::new(value.clone(), true, value, true)
    }

    /// `[MinKey, MaxKey]`.
    pub fn all() -> Interval {
        Interval::new(Bson::MinKey, true, Bson::MaxKey, true)
    }

    pub fn is_point(&self) -> bool {
        self.start_inclusive
            && self.end_inclusive
            && compare_values(&self.start, &self.end) == Ordering::Equal
    }

    pub fn is_empty(&self) -> bool {
        match compare_values(&self.start, &self.end) {
            Ordering::Greater => true,
            Ordering::Equal => !(self.start_inclusive && self.end_inclusive),
            Ordering::Less => false,
        }
    }

    pub fn contains(&self, value: &Bson) -> bool {
        let after_start = match compare_values(value, &self.start) {
            Ordering::Greater => true,
            Ordering::Equal => self.start_inclusive,
            Ordering::Less => false,
        };
        let before_end = match compare_values(value, &self.end) {
            Ordering::Less => true,
            Ordering::Equal => self.end_inclusive,
            Ordering::Greater => false,
        };
        after_start && before_end
    }

    fn intersect(&self, other: &Interval) -> Option<Interval> {
        let (start, start_inclusive) = match compare_values(&self.start, &other.start) {
            Ordering::Greater => (self.start.clone(), self.start_inclusive),
            Ordering::Less => (other.start.clone(), other.start_inclusive),
            Ordering::Equal => (
                self.start.clone(),
                self.start_inclusive && other.start_inclusive,
            ),
        };
        let (end, end_inclusive) = match compare_values(&self.end, &other.end) {
            Ordering::Less => (self.end.clone(), self.end_inclusive),
            Ordering::Greater => (other.end.clone(), other.end_inclusive),
            Ordering::Equal => (self.end.clone(), self.end_inclusive && other.end_inclusive),
        };
        let interval = Interval::new(start, start_inclusive, end, end_inclusive);
        (!interval.is_empty()).then_some(interval)
    }

    /// MongoDB's rendering: `[1, 1]`, `(5, inf.0]`, with the ends swapped for a reversed scan.
    pub fn render(&self, reversed: bool) -> String {
        if reversed {
            format!(
                "{}{}, {}{}",
                if self.end_inclusive { "[" } else { "(" },
                render_value(&self.end),
                render_value(&self.start),
                if self.start_inclusive { "]" } else { ")" }
            )
        } else {
            format!(
                "{}{}, {}{}",
                if self.start_inclusive { "[" } else { "(" },
                render_value(&self.start),
                render_value(&self.end),
                if self.end_inclusive { "]" } else { ")" }
            )
        }
    }
}

/// Renders a bound value as MongoDB's explain prints it.
pub fn render_value(value: &Bson) -> String {
    match value {
        Bson::MinKey => "MinKey".into(),
        Bson::MaxKey => "MaxKey".into(),
        Bson::Null => "null".into(),
        Bson::Undefined => "undefined".into(),
        Bson::Double(d) if d.is_nan() => "nan.0".into(),
        Bson::Double(d) if d.is_infinite() => {
            if *d > 0.0 {
                "inf.0".into()
            } else {
                "-inf.0".into()
            }
        }
        Bson::Double(d) if d.fract() == 0.0 && d.abs() < 1e15 => format!("{d:.1}"),
        Bson::Double(d) => d.to_string(),
        Bson::Int32(v) => v.to_string(),
        Bson::Int64(v) => v.to_string(),
        Bson::String(s) => format!("{s:?}"),
        Bson::Boolean(b) => b.to_string(),
        Bson::ObjectId(id) => format!("ObjectId('{id}')"),
        Bson::DateTime(d) => format!("new Date({})", d.timestamp_millis()),
        Bson::Timestamp(t) => format!("Timestamp({}, {})", t.time, t.increment),
        Bson::RegularExpression(r) => format!("/{}/{}", r.pattern, r.options),
        other => other.to_string(),
    }
}

fn compare_starts(a: &Interval, b: &Interval) -> Ordering {
    compare_values(&a.start, &b.start).then_with(|| b.start_inclusive.cmp(&a.start_inclusive))
}

/// A sorted, disjoint, merged list of intervals.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct IntervalList {
    pub intervals: Vec<Interval>,
}

impl IntervalList {
    pub fn all() -> IntervalList {
        IntervalList {
            intervals: vec![Interval::all()],
        }
    }

    pub fn empty() -> IntervalList {
        IntervalList {
            intervals: Vec::new(),
        }
    }

    /// Normalizes any intervals into a list: drops empty ones, sorts, merges overlaps.
    pub fn from_intervals(mut intervals: Vec<Interval>) -> IntervalList {
        intervals.retain(|i| !i.is_empty());
        intervals.sort_by(compare_starts);
        let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
        for interval in intervals {
            if let Some(last) = merged.last_mut() {
                let touches = match compare_values(&last.end, &interval.start) {
                    Ordering::Greater => true,
                    Ordering::Equal => last.end_inclusive || interval.start_inclusive,
                    Ordering::Less => false,
                };
                if touches {
                    match compare_values(&interval.end, &last.end) {
                        Ordering::Greater => {
                            last.end = interval.end;
                            last.end_inclusive = interval.end_inclusive;
                        }
                        Ordering::Equal => last.end_inclusive |= interval.end_inclusive,
                        Ordering::Less => {}
                    }
                    continue;
                }
            }
            merged.push(interval);
        }
        IntervalList { intervals: merged }
    }

    pub fn is_all(&self) -> bool {
        self.intervals.len() == 1 && self.intervals[0] == Interval::all()
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// True when every interval is a single value.
    pub fn is_points(&self) -> bool {
        self.intervals.iter().all(Interval::is_point)
    }

    pub fn contains(&self, value: &Bson) -> bool {
        self.intervals.iter().any(|i| i.contains(value))
    }

    pub fn union(&self, other: &IntervalList) -> IntervalList {
        let mut intervals = self.intervals.clone();
        intervals.extend(other.intervals.iter().cloned());
        IntervalList::from_intervals(intervals)
    }

    pub fn intersect(&self, other: &IntervalList) -> IntervalList {
        let mut intervals = Vec::new();
        for a in &self.intervals {
            for b in &other.intervals {
                if let Some(i) = a.intersect(b) {
                    intervals.push(i);
                }
            }
        }
        IntervalList::from_intervals(intervals)
    }

    /// Everything in `[MinKey, MaxKey]` outside this list.
    pub fn complement(&self) -> IntervalList {
        let mut gaps = Vec::new();
        let mut cursor = (Bson::MinKey, true);
        for interval in &self.intervals {
            gaps.push(Interval::new(
                cursor.0.clone(),
                cursor.1,
                interval.start.clone(),
                !interval.start_inclusive,
            ));
            cursor = (interval.end.clone(), !interval.end_inclusive);
        }
        gaps.push(Interval::new(cursor.0, cursor.1, Bson::MaxKey, true));
        IntervalList::from_intervals(gaps)
    }

    /// Rendered for explain's `indexBounds`.
    pub fn render(&self, reversed: bool) -> Vec<Bson> {
        let mut rendered: Vec<Bson> = self
            .intervals
            .iter()
            .map(|i| Bson::String(i.render(reversed)))
            .collect();
        if reversed {
            rendered.reverse();
        }
        rendered
    }
}

/// Bounds of one field and whether they are exact for the predicates they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldBounds {
    pub list: IntervalList,
    pub exact: bool,
}

impl FieldBounds {
    fn inexact(list: IntervalList) -> FieldBounds {
        FieldBounds { list, exact: false }
    }
}

/// The bracket `[start, end)` of a value's canonical type, for type-bracketed comparisons;
/// `None` for types without a simple bracket.
fn type_bracket(value: &Bson) -> Option<(Bson, bool, Bson, bool)> {
    Some(match canonical_rank(value) {
        10 => (
            Bson::Double(f64::NEG_INFINITY),
            true,
            Bson::Double(f64::INFINITY),
            true,
        ),
        15 => (
            Bson::String(String::new()),
            true,
            Bson::Document(Document::new()),
            false,
        ),
        20 => (
            Bson::Document(Document::new()),
            true,
            Bson::Array(Vec::new()),
            false,
        ),
        35 => (
            Bson::ObjectId(bson::oid::ObjectId::from_bytes([0; 12])),
            true,
            Bson::ObjectId(bson::oid::ObjectId::from_bytes([0xFF; 12])),
            true,
        ),
        40 => (Bson::Boolean(false), true, Bson::Boolean(true), true),
        45 => (
            Bson::DateTime(bson::DateTime::from_millis(i64::MIN)),
            true,
            Bson::DateTime(bson::DateTime::from_millis(i64::MAX)),
            true,
        ),
        47 => (
            Bson::Timestamp(bson::Timestamp {
                time: 0,
                increment: 0,
            }),
            true,
            Bson::Timestamp(bson::Timestamp {
                time: u32::MAX,
                increment: u32::MAX,
            }),
            true,
        ),
        _ => return None,
    })
}

fn single(interval: Interval, exact: bool) -> FieldBounds {
    FieldBounds {
        list: IntervalList::from_intervals(vec![interval]),
        exact,
    }
}

/// Bounds of an equality (also used by `$in`).
fn equality_bounds(value: &Bson) -> FieldBounds {
    match value {
        Bson::Null => single(Interval::point(Bson::Null), false),
        Bson::Array(items) => {
            let first = items.first().cloned().unwrap_or(Bson::Undefined);
            FieldBounds::inexact(IntervalList::from_intervals(vec![
                Interval::point(value.clone()),
                Interval::point(first),
            ]))
        }
        other => single(Interval::point(other.clone()), true),
    }
}

fn comparison_bounds(predicate: &Predicate) -> FieldBounds {
    let (value, lower, inclusive) = match predicate {
        Predicate::Lt(v) => (v, false, false),
        Predicate::Lte(v) => (v, false, true),
        Predicate::Gt(v) => (v, true, false),
        Predicate::Gte(v) => (v, true, true),
        _ => unreachable!("comparisons only"),
    };
    match value {
        Bson::Null => {
            return if inclusive {
                single(Interval::point(Bson::Null), false)
            } else {
                FieldBounds {
                    list: IntervalList::empty(),
                    exact: true,
                }
            };
        }
        Bson::MinKey | Bson::MaxKey => {
            let interval = if lower {
                Interval::new(value.clone(), inclusive, Bson::MaxKey, true)
            } else {
                Interval::new(Bson::MinKey, true, value.clone(), inclusive)
            };
            return single(interval, true);
        }
        _ => {}
    }
    if crate::value::is_nan(value) {
        let list = if inclusive {
            IntervalList::from_intervals(vec![Interval::point(Bson::Double(f64::NAN))])
        } else {
            IntervalList::empty()
        };
        return FieldBounds { list, exact: true };
    }
    let Some((bracket_start, start_inclusive, bracket_end, end_inclusive)) = type_bracket(value)
    else {
        return FieldBounds::inexact(IntervalList::all());
    };
    let interval = if lower {
        Interval::new(value.clone(), inclusive, bracket_end, end_inclusive)
    } else {
        Interval::new(bracket_start, start_inclusive, value.clone(), inclusive)
    };
    single(interval, true)
}

/// The smallest string greater than every string starting with `prefix`, if any.
fn string_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        // Skip the surrogate range.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn regex_bounds(regex: &RegexPredicate) -> IntervalList {
    let strings = match regex.literal_prefix() {
        Some(prefix) if !prefix.is_empty() => match string_successor(&prefix) {
            Some(next) => Interval::new(Bson::String(prefix), true, Bson::String(next), false),
            None => Interval::new(
                Bson::String(prefix),
                true,
                Bson::Document(Document::new()),
                false,
            ),
        },
        _ => Interval::new(
            Bson::String(String::new()),
            true,
            Bson::Document(Document::new()),
            false,
        ),
    };
    IntervalList::from_intervals(vec![strings, Interval::point(regex.to_bson())])
}

fn in_bounds(list: &InList) -> FieldBounds {
    let mut result = IntervalList::empty();
    let mut exact = list.regexes.is_empty();
    for value in &list.values {
        let bounds = equality_bounds(value);
        exact &= bounds.exact;
        result = result.union(&bounds.list);
    }
    for regex in &list.regexes {
        result = result.union(&regex_bounds(regex));
    }
    FieldBounds {
        list: result,
        exact,
    }
}

/// Bounds of one predicate on the field it names.
pub fn predicate_bounds(predicate: &Predicate) -> FieldBounds {
    match predicate {
        Predicate::Eq(value) => equality_bounds(value),
        Predicate::Lt(_) | Predicate::Lte(_) | Predicate::Gt(_) | Predicate::Gte(_) => {
            comparison_bounds(predicate)
        }
        Predicate::Regex(regex) => FieldBounds::inexact(regex_bounds(regex)),
        Predicate::In(list) => in_bounds(list),
        Predicate::Mod { .. } => {
            FieldBounds::inexact(IntervalList::from_intervals(vec![Interval::new(
                Bson::Double(f64::NEG_INFINITY),
                true,
                Bson::Double(f64::INFINITY),
                true,
            )]))
        }
        Predicate::ElemMatchValue(node) => {
            // All leaves inside apply to one element: intersect freely.
            FieldBounds::inexact(
                node_bounds(node, &FieldPath::from_parts(Vec::new()), false)
                    .map(|b| b.list)
                    .unwrap_or_else(IntervalList::all),
            )
        }
        Predicate::Exists
        | Predicate::Type(_)
        | Predicate::Size(_)
        | Predicate::ElemMatchObject(_) => FieldBounds::inexact(IntervalList::all()),
    }
}

/// Bounds a filter node puts on `field`; `None` when it does not constrain it. `multikey`
/// forbids intersecting bounds of different predicates.
pub fn node_bounds(node: &Node, field: &FieldPath, multikey: bool) -> Option<FieldBounds> {
    match node {
        Node::Leaf { path, predicate } if path == field => Some(predicate_bounds(predicate)),
        Node::Leaf {
            path,
            predicate: Predicate::ElemMatchObject(inner),
        } if path.is_prefix_of(field) && path.len() < field.len() => {
            let rest = FieldPath::from_parts(field.parts()[path.len()..].to_vec());
            node_bounds(inner, &rest, true).map(|b| FieldBounds::inexact(b.list))
        }
        Node::Not(inner) => match inner.as_ref() {
            Node::Leaf { path, predicate } if path == field => {
                let positive = predicate_bounds(predicate);
                let safe = positive.exact
                    && !positive.list.contains(&Bson::Null)
                    && !positive.list.contains(&Bson::Undefined);
                safe.then(|| FieldBounds::inexact(positive.list.complement()))
            }
            _ => None,
        },
        Node::And(children) => {
            let parts: Vec<FieldBounds> = children
                .iter()
                .filter_map(|child| node_bounds(child, field, multikey))
                .collect();
            combine_and(parts, multikey)
        }
        Node::Or(children) => {
            let mut result = IntervalList::empty();
            for child in children {
                result = result.union(&node_bounds(child, field, multikey)?.list);
            }
            Some(FieldBounds::inexact(result))
        }
        Node::AlwaysFalse => Some(FieldBounds {
            list: IntervalList::empty(),
            exact: false,
        }),
        _ => None,
    }
}

/// Combines the bounds of several ANDed predicates on one field.
pub fn combine_and(parts: Vec<FieldBounds>, multikey: bool) -> Option<FieldBounds> {
    if parts.is_empty() {
        return None;
    }
    if multikey {
        // Pick one: the first with point bounds, else the first.
        let chosen = parts.iter().position(|b| b.list.is_points()).unwrap_or(0);
        let exact = parts.len() == 1 && parts[chosen].exact;
        return Some(FieldBounds {
            list: parts[chosen].list.clone(),
            exact,
        });
    }
    let exact = parts.iter().all(|b| b.exact);
    let mut list = parts[0].list.clone();
    for part in &parts[1..] {
        list = list.intersect(&part.list);
    }
    Some(FieldBounds { list, exact })
}

/// A contiguous range of encoded keys: `start` inclusive, `end` exclusive (`None`: no end).
/// Keys are compared as byte strings; a key that continues past a bound (more fields, a record
/// id) compares as the longer string it is, which is what the ranges are built for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_ref().is_none_or(|end| key < end.as_slice())
    }
}

/// Most key ranges one scan is split into; point lists beyond it become one range per interval.
pub const INDEX_RANGES_MAX: usize = 4096;

/// Converts per-field bounds to key ranges. Returns the ranges in ascending byte order
/// (disjoint) and how many leading fields the ranges enforce exactly: fields after them are
/// not constrained by the ranges and their predicates must stay in the residual filter.
pub fn key_ranges(directions: &[Direction], bounds: &[IntervalList]) -> (Vec<KeyRange>, usize) {
    assert_eq!(
        directions.len(),
        bounds.len(),
        "one interval list per key field"
    );
    if bounds.iter().any(IntervalList::is_empty) {
        return (Vec::new(), bounds.len());
    }
    let mut prefixes: Vec<Vec<u8>> = vec![Vec::new()];
    for (index, (direction, list)) in directions.iter().zip(bounds).enumerate() {
        let fits = prefixes.len().saturating_mul(list.intervals.len()) <= INDEX_RANGES_MAX;
        if list.is_points() && fits {
            let mut next = Vec::with_capacity(prefixes.len() * list.intervals.len());
            for prefix in &prefixes {
                for interval in &list.intervals {
                    let mut key = prefix.clone();
                    keystring::append(&mut key, &interval.start, *direction);
                    next.push(key);
                }
            }
            prefixes = next;
            continue;
        }
        let mut ranges = Vec::new();
        for prefix in &prefixes {
            for interval in &list.intervals {
                ranges.push(interval_range(prefix, interval, *direction));
            }
        }
        ranges.sort();
        return (ranges, index + 1);
    }
    let mut ranges: Vec<KeyRange> = prefixes
        .into_iter()
        .map(|prefix| KeyRange {
            end: keystring::prefix_successor(&prefix),
            start: prefix,
        })
        .collect();
    ranges.sort();
    (ranges, bounds.len())
}

fn interval_range(prefix: &[u8], interval: &Interval, direction: Direction) -> KeyRange {
    // In byte order a descending field runs from the interval's end to its start.
    let (low, low_inclusive, high, high_inclusive) = match direction {
        Direction::Ascending => (
            &interval.start,
            interval.start_inclusive,
            &interval.end,
            interval.end_inclusive,
        ),
        Direction::Descending => (
            &interval.end,
            interval.end_inclusive,
            &interval.start,
            interval.start_inclusive,
        ),
    };
    let mut low_key = prefix.to_vec();
    keystring::append(&mut low_key, low, direction);
    let mut high_key = prefix.to_vec();
    keystring::append(&mut high_key, high, direction);
    let start = if low_inclusive {
        low_key
    } else {
        // Every key starting with low_key is excluded.
        keystring::prefix_successor(&low_key).unwrap_or(low_key)
    };
    let end = if high_inclusive {
        keystring::prefix_successor(&high_key)
    } else {
        Some(high_key)
    };
    KeyRange { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Matcher;
    use bson::doc;

    fn bounds(filter: Document, field: &str, multikey: bool) -> Option<FieldBounds> {
        let matcher = Matcher::parse(&filter).unwrap();
        node_bounds(matcher.root(), &FieldPath::parse(field), multikey)
    }

    fn rendered(filter: Document, field: &str) -> Vec<String> {
        bounds(filter, field, false)
            .map(|b| {
                b.list
                    .render(false)
                    .into_iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn mongodb_shapes() {
        assert_eq!(rendered(doc! {"a": 1}, "a"), vec!["[1, 1]"]);
        assert_eq!(rendered(doc! {"a": {"$gt": 5}}, "a"), vec!["(5, inf.0]"]);
        assert_eq!(
            rendered(doc! {"a": {"$lte": 5.0}}, "a"),
            vec!["[-inf.0, 5.0]"]
        );
        assert_eq!(
            rendered(doc! {"a": {"$gt": 1, "$lt": 5}}, "a"),
            vec!["(1, 5)"]
        );
        assert_eq!(rendered(doc! {"a": {"$gt": "b"}}, "a"), vec!["(\"b\", {})"]);
        assert_eq!(
            rendered(doc! {"a": {"$in": [3, 1, 2]}}, "a"),
            vec!["[1, 1]", "[2, 2]", "[3, 3]"]
        );
        assert_eq!(rendered(doc! {"a": null}, "a"), vec!["[null, null]"]);
        assert_eq!(
            rendered(doc! {"a": {"$ne": 5}}, "a"),
            vec!["[MinKey, 5)", "(5, MaxKey]"]
        );
        assert_eq!(
            rendered(doc! {"a": {"$exists": true}}, "a"),
            vec!["[MinKey, MaxKey]"]
        );
        assert_eq!(
            rendered(doc! {"a": {"$regex": "^ab"}}, "a"),
            vec!["[\"ab\", \"ac\")", "[/^ab/, /^ab/]"]
        );
        assert_eq!(
            rendered(doc! {"$or": [{"a": 1}, {"a": {"$gt": 10}}]}, "a"),
            vec!["[1, 1]", "(10, inf.0]"]
        );
        assert_eq!(
            rendered(doc! {"a": {"$elemMatch": {"$gt": 1, "$lt": 3}}}, "a"),
            vec!["(1, 3)"]
        );
        assert_eq!(
            rendered(doc! {"a": {"$elemMatch": {"b": 2}}}, "a.b"),
            vec!["[2, 2]"]
        );
        assert!(bounds(doc! {"b": 1}, "a", false).is_none());
        assert!(bounds(doc! {"$or": [{"a": 1}, {"b": 1}]}, "a", false).is_none());
        assert!(bounds(doc! {"a": {"$ne": null}}, "a", false).is_none());
        assert!(bounds(doc! {"a": {"$not": {"$regex": "x"}}}, "a", false).is_none());
    }

    #[test]
    fn multikey_does_not_intersect() {
        let b = bounds(doc! {"a": {"$gt": 1, "$lt": 5}}, "a", true).unwrap();
        assert_eq!(b.list.intervals.len(), 1);
        assert!(!b.exact);
        assert_eq!(
            b.list.render(false),
            vec![Bson::String("(1, inf.0]".into())]
        );
        let b = bounds(doc! {"a": 5}, "a", true).unwrap();
        assert!(b.exact);
    }

    #[test]
    fn list_algebra() {
        let a = IntervalList::from_intervals(vec![
            Interval::new(Bson::Int32(1), true, Bson::Int32(5), false),
            Interval::new(Bson::Int32(5), true, Bson::Int32(7), true),
            Interval::point(Bson::Int32(10)),
        ]);
        assert_eq!(a.intervals.len(), 2);
        assert!(a.contains(&Bson::Int32(5)));
        assert!(!a.contains(&Bson::Int32(8)));
        let complement = a.complement();
        assert!(complement.contains(&Bson::Int32(8)));
        assert!(!complement.contains(&Bson::Int32(6)));
        assert!(complement.contains(&Bson::String("x".into())));
        assert_eq!(complement.complement(), a);
        let empty = a.intersect(&IntervalList::from_intervals(vec![Interval::point(
            Bson::Int32(8),
        )]));
        assert!(empty.is_empty());
    }

    #[test]
    fn ranges_cover_exactly_the_bounds() {
        let directions = [Direction::Ascending, Direction::Descending];
        let bounds = [
            IntervalList::from_intervals(vec![
                Interval::point(Bson::Int32(1)),
                Interval::point(Bson::Int32(2)),
            ]),
            IntervalList::from_intervals(vec![Interval::new(
                Bson::Int32(3),
                false,
                Bson::Int32(6),
                true,
            )]),
        ];
        let (ranges, enforced) = key_ranges(&directions, &bounds);
        assert_eq!(enforced, 2);
        assert_eq!(ranges.len(), 2);
        let key = |a: i32, b: i32| {
            keystring::encode_compound([
                (&Bson::Int32(a), directions[0]),
                (&Bson::Int32(b), directions[1]),
            ])
        };
        for a in 0..4 {
            for b in 0..8 {
                let expected = (a == 1 || a == 2) && b > 3 && b <= 6;
                let mut with_suffix = key(a, b);
                with_suffix.extend_from_slice(&[0x64, 1, 2, 3]);
                let inside = ranges.iter().any(|r| r.contains(&with_suffix));
                assert_eq!(inside, expected, "a={a} b={b}");
            }
        }
    }
}
