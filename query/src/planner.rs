//! The query planner: candidate plans from a query and the collection's indexes, one winner by
//! a documented ranking, and a plan tree that renders MongoDB's explain shapes.
//!
//! Ranking (MongoDB runs trial executions; cairn ranks statically, in this order):
//! 1. a `hint` decides (an index by name or key pattern, or `{$natural: 1|-1}` for a collection
//!    scan); an unknown hint is BadValue (2);
//! 2. otherwise each index whose first field is constrained by the filter, or that provides
//!    the requested sort, is a candidate; sparse and partial indexes are never chosen unhinted;
//! 3. candidates are ranked by: longest prefix of fields with point bounds, then whether the
//!    next field has range bounds, then whether the index provides the sort, then more
//!    constrained fields, then fewer index fields, then name;
//! 4. with no candidate the plan is a collection scan.
//!
//! A plan's leaf is a [`Access::CollectionScan`] or an [`Access::IndexScan`] whose key ranges
//! the executor scans (ascending byte order; backwards when `forward` is false), fetching each
//! record once (`dedup` when the index is multikey) and applying [`QueryPlan::residual`]. A
//! blocking sort follows when the index does not provide the order, then skip, limit and the
//! projection. Each stage holds [`StageStats`] for the executor to fill in.

use crate::bounds::{FieldBounds, IntervalList, KeyRange, combine_and, key_ranges, node_bounds};
use crate::index_keys::{KeyPattern, render_multikey_paths};
use crate::matcher::{Matcher, Node};
use crate::projection::Projection;
use crate::sort::SortSpec;
use bson::{Bson, Document};
use cairn_types::keystring::Direction;
use cairn_types::{Error, Result};
use std::collections::BTreeSet;

/// An index as the catalog describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexDescriptor {
    pub name: String,
    pub key_pattern: Document,
    pub unique: bool,
    pub sparse: bool,
    pub partial_filter: Option<Document>,
    /// Per key field, the path components that held an array in some document
    /// (`IndexKeys::multikey_paths`, unioned over the collection). `None`: unknown, every
    /// field is treated as multikey.
    pub multikey_paths: Option<Vec<BTreeSet<usize>>>,
}

impl IndexDescriptor {
    /// A plain, non-multikey index (tests and new empty collections).
    pub fn new(name: &str, key_pattern: Document) -> IndexDescriptor {
        let fields = key_pattern.len();
        IndexDescriptor {
            name: name.to_owned(),
            key_pattern,
            unique: false,
            sparse: false,
            partial_filter: None,
            multikey_paths: Some(vec![BTreeSet::new(); fields]),
        }
    }
}

/// `hint` of find/aggregate/update.
#[derive(Clone, Debug, PartialEq)]
pub enum Hint {
    Name(String),
    KeyPattern(Document),
    /// `{$natural: 1}` (forward) or `-1`.
    Natural {
        forward: bool,
    },
}

impl Hint {
    /// Parses a hint value (a string or a document).
    pub fn parse(value: &Bson) -> Result<Option<Hint>> {
        Ok(match value {
            Bson::String(name) if name.is_empty() => None,
            Bson::String(name) => Some(Hint::Name(name.clone())),
            Bson::Document(spec) if spec.is_empty() => None,
            Bson::Document(spec) => match spec.get("$natural") {
                Some(direction) if spec.len() == 1 => Some(Hint::Natural {
                    forward: crate::value::as_f64(direction).is_none_or(|d| d >= 0.0),
                }),
                _ => Some(Hint::KeyPattern(spec.clone())),
            },
            other => {
                return Err(Error::failed_to_parse(format!(
                    "hint must be a string or an object, not {}",
                    crate::value::type_name(other)
                )));
            }
        })
    }
}

/// A query ready to plan: what find (or an aggregation's leading $match/$sort) asks for.
#[derive(Clone, Debug)]
pub struct CanonicalQuery {
    pub namespace: String,
    pub filter: Matcher,
    pub sort: SortSpec,
    pub projection: Option<Projection>,
    pub skip: u64,
    pub limit: Option<u64>,
    pub hint: Option<Hint>,
}

impl CanonicalQuery {
    /// A query with only a filter.
    pub fn new(namespace: &str, filter: Matcher) -> CanonicalQuery {
        CanonicalQuery {
            namespace: namespace.to_owned(),
            filter,
            sort: SortSpec::default(),
            projection: None,
            skip: 0,
            limit: None,
            hint: None,
        }
    }
}

/// How a plan reads the collection.
#[derive(Clone, Debug, PartialEq)]
pub enum Access {
    CollectionScan {
        forward: bool,
    },
    IndexScan(Box<IndexScan>),
    /// A top-level `$or` whose every branch has an index: read every scan, fetch each record
    /// once across all of them (a record may match several branches), then apply the residual
    /// (the whole filter). Explain shows `FETCH <- OR <- [IXSCAN, ...]`.
    Union(Vec<IndexScan>),
}

/// An index scan: which index, its bounds and the key ranges to read.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexScan {
    pub index_name: String,
    pub key_pattern: KeyPattern,
    /// Per key field, ascending value order.
    pub bounds: Vec<IntervalList>,
    /// Ascending byte order, disjoint; start inclusive, end exclusive.
    pub ranges: Vec<KeyRange>,
    /// False: read the ranges (and each range) from the end.
    pub forward: bool,
    /// True when a record may have several keys in the ranges: fetch each record once.
    pub dedup: bool,
    pub is_multikey: bool,
    pub multikey_paths: Vec<BTreeSet<usize>>,
}

/// Counters one stage accumulates while the executor runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    pub n_returned: u64,
    pub works: u64,
    pub advanced: u64,
    pub keys_examined: u64,
    pub docs_examined: u64,
    pub dups_dropped: u64,
    pub execution_time_millis: u64,
}

/// The stage names of MongoDB's explain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageName {
    CollScan,
    IxScan,
    Fetch,
    Sort,
    Skip,
    Limit,
    ProjectionSimple,
    ProjectionDefault,
    Or,
}

impl StageName {
    pub fn as_str(self) -> &'static str {
        match self {
            StageName::CollScan => "COLLSCAN",
            StageName::IxScan => "IXSCAN",
            StageName::Fetch => "FETCH",
            StageName::Sort => "SORT",
            StageName::Skip => "SKIP",
            StageName::Limit => "LIMIT",
            StageName::ProjectionSimple => "PROJECTION_SIMPLE",
            StageName::ProjectionDefault => "PROJECTION_DEFAULT",
            StageName::Or => "OR",
        }
    }
}

/// One stage of a plan tree.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanStage {
    pub name: StageName,
    /// Stage-specific explain fields (filter, keyPattern, indexBounds, sortPattern, ...).
    pub details: Document,
    pub input: Option<Box<PlanStage>>,
    /// The inputs of an OR stage (`inputStages`).
    pub inputs: Vec<PlanStage>,
    pub stats: StageStats,
}

impl PlanStage {
    fn new(name: StageName, details: Document, input: Option<PlanStage>) -> PlanStage {
        PlanStage {
            name,
            details,
            input: input.map(Box::new),
            inputs: Vec::new(),
            stats: StageStats::default(),
        }
    }

    /// The first stage with this name, from the top.
    pub fn find_mut(&mut self, name: StageName) -> Option<&mut PlanStage> {
        if self.name == name {
            return Some(self);
        }
        if let Some(input) = self.input.as_deref_mut() {
            if let Some(found) = input.find_mut(name) {
                return Some(found);
            }
        }
        self.inputs
            .iter_mut()
            .find_map(|input| input.find_mut(name))
    }

    pub fn find(&self, name: StageName) -> Option<&PlanStage> {
        if self.name == name {
            return Some(self);
        }
        self.input
            .as_deref()
            .and_then(|input| input.find(name))
            .or_else(|| self.inputs.iter().find_map(|input| input.find(name)))
    }

    /// Renders the stage as explain does; with `stats`, the executionStats fields too.
    pub fn render(&self, stats: bool) -> Document {
        let mut document = bson::doc! {"stage": self.name.as_str()};
        if stats {
            document.insert("nReturned", explain_number(self.stats.n_returned));
            document.insert(
                "executionTimeMillisEstimate",
                explain_number(self.stats.execution_time_millis),
            );
            document.insert("works", explain_number(self.stats.works));
            document.insert("advanced", explain_number(self.stats.advanced));
            match self.name {
                StageName::IxScan => {
                    document.insert("keysExamined", explain_number(self.stats.keys_examined));
                    document.insert("dupsDropped", explain_number(self.stats.dups_dropped));
                }
                StageName::Fetch | StageName::CollScan => {
                    document.insert("docsExamined", explain_number(self.stats.docs_examined));
                }
                _ => {}
            }
        }
        for (key, value) in &self.details {
            document.insert(key.clone(), value.clone());
        }
        if let Some(input) = &self.input {
            document.insert("inputStage", input.render(stats));
        }
        if !self.inputs.is_empty() {
            let inputs: Vec<Bson> = self
                .inputs
                .iter()
                .map(|i| Bson::Document(i.render(stats)))
                .collect();
            document.insert("inputStages", inputs);
        }
        document
    }

    fn sum(&self, pick: fn(&StageStats) -> u64) -> u64 {
        pick(&self.stats)
            + self.input.as_ref().map_or(0, |input| input.sum(pick))
            + self.inputs.iter().map(|input| input.sum(pick)).sum::<u64>()
    }
}

/// One complete plan.
#[derive(Clone, Debug)]
pub struct QueryPlan {
    pub access: Access,
    /// The filter still to apply to each fetched document (`None`: every fetched document
    /// matches). For a collection scan it is the whole filter.
    pub residual: Option<Matcher>,
    /// A sort the executor must do after fetching (`None`: the scan order is the sort order).
    pub blocking_sort: Option<SortSpec>,
    pub skip: u64,
    pub limit: Option<u64>,
    pub projection: Option<Projection>,
    /// The stage tree, top first, for explain and counters.
    pub root: PlanStage,
    /// Ranking key, for tests and explain ordering.
    pub score: (usize, bool, bool, usize),
}

impl QueryPlan {
    /// The stats of the first stage with this name.
    pub fn stats_mut(&mut self, name: StageName) -> Option<&mut StageStats> {
        self.root.find_mut(name).map(|stage| &mut stage.stats)
    }

    pub fn index_scan(&self) -> Option<&IndexScan> {
        match &self.access {
            Access::IndexScan(scan) => Some(scan),
            Access::CollectionScan { .. } | Access::Union(_) => None,
        }
    }

    /// MongoDB's planSummary: `COLLSCAN` or `IXSCAN { a: 1 }`.
    pub fn summary(&self) -> String {
        match &self.access {
            Access::CollectionScan { .. } => "COLLSCAN".into(),
            Access::Union(scans) => scans
                .iter()
                .map(index_scan_summary)
                .collect::<Vec<_>>()
                .join(", "),
            Access::IndexScan(scan) => index_scan_summary(scan),
        }
    }
}

fn index_scan_summary(scan: &IndexScan) -> String {
    let fields: Vec<String> = scan
        .key_pattern
        .source()
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    format!("IXSCAN {{ {} }}", fields.join(", "))
}

/// The planner's answer.
#[derive(Clone, Debug)]
pub struct PlannedQuery {
    pub winning: QueryPlan,
    pub rejected: Vec<QueryPlan>,
    pub parsed_query: Document,
    pub namespace: String,
}

/// A counter as MongoDB's explain shows it: an int32, or an int64 past its range.
fn explain_number(value: u64) -> Bson {
    i32::try_from(value).map_or(Bson::Int64(value as i64), Bson::Int32)
}

/// Explain verbosity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    QueryPlanner,
    ExecutionStats,
    AllPlansExecution,
}

impl Verbosity {
    pub fn parse(value: &str) -> Result<Verbosity> {
        match value {
            "queryPlanner" => Ok(Verbosity::QueryPlanner),
            "executionStats" => Ok(Verbosity::ExecutionStats),
            "allPlansExecution" => Ok(Verbosity::AllPlansExecution),
            other => Err(Error::bad_value(format!(
                "verbosity string must be one of {{'queryPlanner', 'executionStats', 'allPlansExecution'}}, got '{other}'"
            ))),
        }
    }
}

/// What the executor measured for the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutionSummary {
    pub n_returned: u64,
    pub execution_time_millis: u64,
    pub num_yields: u64,
}

impl PlannedQuery {
    /// `{queryPlanner: {...}, executionStats?: {...}}` (without `ok`).
    pub fn explain(&self, verbosity: Verbosity, summary: Option<&ExecutionSummary>) -> Document {
        let rejected: Vec<Bson> = self
            .rejected
            .iter()
            .map(|plan| Bson::Document(plan.root.render(false)))
            .collect();
        let mut explain = bson::doc! {
            "queryPlanner": {
                "namespace": self.namespace.clone(),
                "indexFilterSet": false,
                "parsedQuery": self.parsed_query.clone(),
                "planSummary": self.winning.summary(),
                "winningPlan": self.winning.root.render(false),
                "rejectedPlans": rejected,
            }
        };
        if verbosity != Verbosity::QueryPlanner {
            let summary = summary.copied().unwrap_or_default();
            let root = &self.winning.root;
            explain.insert(
                "executionStats",
                bson::doc! {
                    "executionSuccess": true,
                    "nReturned": explain_number(summary.n_returned),
                    "executionTimeMillis": explain_number(summary.execution_time_millis),
                    "totalKeysExamined": explain_number(root.sum(|s| s.keys_examined)),
                    "totalDocsExamined": explain_number(root.sum(|s| s.docs_examined)),
                    "numYields": explain_number(summary.num_yields),
                    "executionStages": root.render(true),
                },
            );
        }
        explain
    }
}

/// Plans a query over the given indexes.
pub fn plan(query: &CanonicalQuery, indexes: &[IndexDescriptor]) -> Result<PlannedQuery> {
    let parsed_query = query.filter.to_document();
    let make = |access: Option<(&IndexDescriptor, bool)>| build_plan(query, access);
    let (winning, rejected) = match &query.hint {
        Some(Hint::Natural { forward }) => (collection_scan(query, *forward), Vec::new()),
        Some(hint) => {
            let index = indexes
                .iter()
                .find(|index| match hint {
                    Hint::Name(name) => index.name == *name,
                    Hint::KeyPattern(pattern) => index.key_pattern == *pattern,
                    Hint::Natural { .. } => false,
                })
                .ok_or_else(|| {
                    Error::bad_value("hint provided does not correspond to an existing index")
                })?;
            (
                make(Some((index, true)))?.expect("hinted plans always build"),
                Vec::new(),
            )
        }
        None => {
            let mut candidates = Vec::new();
            for index in indexes {
                if index.sparse || index.partial_filter.is_some() {
                    continue;
                }
                if let Some(plan) = make(Some((index, false)))? {
                    candidates.push((plan, index.name.clone(), index.key_pattern.len()));
                }
            }
            candidates.sort_by(|a, b| {
                b.0.score
                    .cmp(&a.0.score)
                    .then(a.2.cmp(&b.2))
                    .then(a.1.cmp(&b.1))
            });
            let constrained = candidates.iter().any(|(plan, _, _)| plan.score.3 > 0);
            let union = if constrained {
                None
            } else {
                union_plan(query, indexes)?
            };
            let mut plans = candidates.into_iter().map(|(plan, _, _)| plan);
            match (union, plans.next()) {
                (Some(union), first) => (union, first.into_iter().chain(plans).collect()),
                (None, Some(winner)) => (winner, plans.collect()),
                (None, None) => (collection_scan(query, true), Vec::new()),
            }
        }
    };
    Ok(PlannedQuery {
        winning,
        rejected,
        parsed_query,
        namespace: query.namespace.clone(),
    })
}

/// A plan for a top-level `$or` whose every branch can use an index (its first field
/// constrained): one index scan per branch under an OR stage; the whole filter is the residual.
fn union_plan(query: &CanonicalQuery, indexes: &[IndexDescriptor]) -> Result<Option<QueryPlan>> {
    let Node::Or(branches) = query.filter.root() else {
        return Ok(None);
    };
    let mut scans = Vec::with_capacity(branches.len());
    let mut stages = Vec::with_capacity(branches.len());
    for branch in branches {
        let branch_query =
            CanonicalQuery::new(&query.namespace, query.filter.with_root(branch.clone()));
        let planned = plan(&branch_query, indexes)?;
        match planned.winning.access {
            Access::IndexScan(scan) if planned.winning.score.3 > 0 => {
                let stage = planned
                    .winning
                    .root
                    .find(StageName::IxScan)
                    .expect("index plans have an IXSCAN")
                    .clone();
                scans.push(*scan);
                stages.push(stage);
            }
            _ => return Ok(None),
        }
    }
    let mut or = PlanStage::new(StageName::Or, Document::new(), None);
    or.inputs = stages;
    let fetch = PlanStage::new(
        StageName::Fetch,
        bson::doc! {"filter": query.filter.to_document()},
        Some(or),
    );
    Ok(Some(finish(
        query,
        Access::Union(scans),
        Some(query.filter.clone()),
        query.sort.clone(),
        fetch,
        (0, false, false, 1),
    )))
}

fn collection_scan(query: &CanonicalQuery, forward: bool) -> QueryPlan {
    let residual = (!query.filter.is_always_true()).then(|| query.filter.clone());
    let mut details = Document::new();
    if let Some(filter) = &residual {
        details.insert("filter", filter.to_document());
    }
    details.insert("direction", if forward { "forward" } else { "backward" });
    let scan = PlanStage::new(StageName::CollScan, details, None);
    finish(
        query,
        Access::CollectionScan { forward },
        residual,
        query.sort.clone(),
        scan,
        (0, false, false, 0),
    )
}

/// Adds SORT, SKIP, LIMIT and PROJECTION stages above `leaf`.
fn finish(
    query: &CanonicalQuery,
    access: Access,
    residual: Option<Matcher>,
    sort: SortSpec,
    leaf: PlanStage,
    score: (usize, bool, bool, usize),
) -> QueryPlan {
    let blocking_sort = (!sort.is_empty()).then_some(sort);
    let mut root = leaf;
    if let Some(sort) = &blocking_sort {
        let mut details = bson::doc! {"sortPattern": sort.to_document(), "memLimit": crate::sort::SORT_MEMORY_BYTES_MAX as i64, "type": "simple"};
        if let Some(limit) = query.limit {
            details.insert("limitAmount", (limit + query.skip) as i64);
        }
        root = PlanStage::new(StageName::Sort, details, Some(root));
    }
    if query.skip > 0 {
        root = PlanStage::new(
            StageName::Skip,
            bson::doc! {"skipAmount": query.skip as i64},
            Some(root),
        );
    }
    if let (Some(limit), None) = (query.limit, &blocking_sort) {
        root = PlanStage::new(
            StageName::Limit,
            bson::doc! {"limitAmount": limit as i64},
            Some(root),
        );
    }
    if let Some(projection) = &query.projection {
        let name = if projection.is_simple() {
            StageName::ProjectionSimple
        } else {
            StageName::ProjectionDefault
        };
        root = PlanStage::new(
            name,
            bson::doc! {"transformBy": projection.source().clone()},
            Some(root),
        );
    }
    QueryPlan {
        access,
        residual,
        blocking_sort,
        skip: query.skip,
        limit: query.limit,
        projection: query.projection.clone(),
        root,
        score,
    }
}

fn field_is_multikey(index: &IndexDescriptor, position: usize) -> bool {
    match &index.multikey_paths {
        None => true,
        Some(paths) => paths.get(position).is_none_or(|p| !p.is_empty()),
    }
}

/// Builds the plan for one index; `None` when the index is no use (and not hinted).
fn build_plan(
    query: &CanonicalQuery,
    access: Option<(&IndexDescriptor, bool)>,
) -> Result<Option<QueryPlan>> {
    let Some((index, hinted)) = access else {
        return Ok(Some(collection_scan(query, true)));
    };
    let pattern = KeyPattern::parse(&index.key_pattern)?;
    let root = query.filter.root();
    let top_children: Vec<&Node> = match root {
        Node::And(children) => children.iter().collect(),
        Node::AlwaysTrue => Vec::new(),
        other => vec![other],
    };
    // Bounds per field, and which top-level children they came from.
    let mut bounds: Vec<IntervalList> = Vec::with_capacity(pattern.fields.len());
    let mut exact_children: Vec<Vec<usize>> = Vec::with_capacity(pattern.fields.len());
    let mut constrained = Vec::with_capacity(pattern.fields.len());
    for (position, field) in pattern.fields.iter().enumerate() {
        let multikey = field_is_multikey(index, position);
        let mut parts: Vec<FieldBounds> = Vec::new();
        let mut sources = Vec::new();
        let mut all_leaf = true;
        for (child_index, child) in top_children.iter().enumerate() {
            if let Some(b) = node_bounds(child, &field.path, multikey) {
                all_leaf &= matches!(child, Node::Leaf { path, .. } if path == &field.path);
                parts.push(b);
                sources.push(child_index);
            }
        }
        match combine_and(parts, multikey) {
            Some(combined) => {
                constrained.push(!combined.list.is_all());
                exact_children.push(if combined.exact && all_leaf {
                    sources
                } else {
                    Vec::new()
                });
                bounds.push(combined.list);
            }
            None => {
                constrained.push(false);
                exact_children.push(Vec::new());
                bounds.push(IntervalList::all());
            }
        }
    }
    // Does the index give the sort order?
    let equality_prefix = bounds
        .iter()
        .take_while(|b| b.intervals.len() == 1 && b.intervals[0].is_point())
        .count();
    let (provides_sort, forward) = sort_provided(&query.sort, &pattern, index, equality_prefix);
    let first_constrained = constrained.first().copied().unwrap_or(false);
    let sort_helps = provides_sort && !query.sort.is_empty();
    if !hinted && !first_constrained && !sort_helps {
        return Ok(None);
    }
    let directions: Vec<Direction> = pattern.fields.iter().map(|f| f.direction).collect();
    let (ranges, enforced) = key_ranges(&directions, &bounds);
    // Residual: drop the top-level children whose bounds are exact and enforced.
    let mut dropped = BTreeSet::new();
    for children in exact_children.iter().take(enforced) {
        dropped.extend(children.iter().copied());
    }
    let kept: Vec<Node> = top_children
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped.contains(i))
        .map(|(_, n)| (*n).clone())
        .collect();
    let residual = match kept.len() {
        0 => None,
        1 => Some(Matcher::from_node(kept.into_iter().next().expect("one"))),
        _ => Some(Matcher::from_node(Node::And(kept))),
    };
    let residual = residual.map(|r| query.filter.with_root(r.root().clone()));
    let multikey_paths = index.multikey_paths.clone().unwrap_or_else(|| {
        pattern
            .fields
            .iter()
            .map(|f| (0..f.path.len()).collect())
            .collect()
    });
    let is_multikey = multikey_paths.iter().any(|p| !p.is_empty());
    let index_bounds = {
        let mut document = Document::new();
        for ((field, list), direction) in pattern.fields.iter().zip(&bounds).zip(&directions) {
            let reversed = (*direction == Direction::Descending) == forward;
            document.insert(field.path.dotted(), Bson::Array(list.render(reversed)));
        }
        document
    };
    let scan_details = bson::doc! {
        "keyPattern": index.key_pattern.clone(),
        "indexName": index.name.clone(),
        "isMultiKey": is_multikey,
        "multiKeyPaths": render_multikey_paths(&pattern, &multikey_paths),
        "isUnique": index.unique,
        "isSparse": index.sparse,
        "isPartial": index.partial_filter.is_some(),
        "indexVersion": 2,
        "direction": if forward { "forward" } else { "backward" },
        "indexBounds": index_bounds,
    };
    let scan = PlanStage::new(StageName::IxScan, scan_details, None);
    let mut fetch_details = Document::new();
    if let Some(filter) = &residual {
        fetch_details.insert("filter", filter.to_document());
    }
    let fetch = PlanStage::new(StageName::Fetch, fetch_details, Some(scan));
    let range_after_prefix = bounds.get(equality_prefix).is_some_and(|b| !b.is_all());
    let score = (
        equality_prefix.min(constrained.iter().take_while(|c| **c).count()),
        range_after_prefix,
        provides_sort && !query.sort.is_empty(),
        constrained.iter().filter(|c| **c).count(),
    );
    let access = Access::IndexScan(Box::new(IndexScan {
        index_name: index.name.clone(),
        key_pattern: pattern,
        bounds,
        ranges,
        forward,
        dedup: is_multikey,
        is_multikey,
        multikey_paths,
    }));
    let sort = if provides_sort {
        SortSpec::default()
    } else {
        query.sort.clone()
    };
    Ok(Some(finish(query, access, residual, sort, fetch, score)))
}

/// Whether scanning `pattern` (after `equality_prefix` single-point fields) yields documents in
/// `sort` order, and in which direction.
fn sort_provided(
    sort: &SortSpec,
    pattern: &KeyPattern,
    index: &IndexDescriptor,
    equality_prefix: usize,
) -> (bool, bool) {
    if sort.is_empty() {
        return (true, true);
    }
    // Sort keys that are also single-point prefix fields are constant and can be skipped.
    let mut keys = sort.keys.iter().peekable();
    let mut direction: Option<bool> = None;
    let mut position = 0;
    while let Some(key) = keys.peek() {
        // A sort key fixed by a single-point bound is constant, unless the field is multikey
        // (then the sort key is the smallest or largest element, not the one that matched).
        if pattern.fields[..equality_prefix.min(pattern.fields.len())]
            .iter()
            .enumerate()
            .any(|(p, f)| f.path == key.path && !field_is_multikey(index, p))
        {
            keys.next();
            continue;
        }
        if position < equality_prefix {
            position += 1;
            continue;
        }
        let Some(field) = pattern.fields.get(position) else {
            return (false, true);
        };
        if field.path != key.path || field_is_multikey(index, position) {
            return (false, true);
        }
        let same = (field.direction == Direction::Descending) == key.descending;
        match direction {
            None => direction = Some(same),
            Some(d) if d != same => return (false, true),
            Some(_) => {}
        }
        keys.next();
        position += 1;
    }
    (true, direction.unwrap_or(true))
}

impl Matcher {
    /// A matcher with another tree but this matcher's `let` variables.
    pub fn with_root(&self, root: Node) -> Matcher {
        let mut matcher = self.clone();
        matcher.set_root(root);
        matcher
    }
}
