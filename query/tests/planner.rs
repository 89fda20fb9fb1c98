//! Planner choices and explain shapes.

use bson::{Bson, doc};
use cairn_query::Matcher;
use cairn_query::planner::{
    Access, CanonicalQuery, ExecutionSummary, Hint, IndexDescriptor, StageName, Verbosity, plan,
};
use cairn_query::projection::Projection;
use cairn_query::sort::SortSpec;

fn query(filter: bson::Document) -> CanonicalQuery {
    CanonicalQuery::new("test.c", Matcher::parse(&filter).unwrap())
}

fn indexes() -> Vec<IndexDescriptor> {
    vec![
        IndexDescriptor::new("_id_", doc! {"_id": 1}),
        IndexDescriptor::new("a_1", doc! {"a": 1}),
        IndexDescriptor::new("a_1_b_-1", doc! {"a": 1, "b": -1}),
        IndexDescriptor::new("c_1", doc! {"c": 1}),
    ]
}

#[test]
fn equality_uses_the_index_without_residual() {
    let planned = plan(&query(doc! {"c": 5}), &indexes()).unwrap();
    let winning = planned.winning.root.render(false);
    assert_eq!(
        winning,
        doc! {
            "stage": "FETCH",
            "inputStage": {
                "stage": "IXSCAN",
                "keyPattern": {"c": 1},
                "indexName": "c_1",
                "isMultiKey": false,
                "multiKeyPaths": {"c": []},
                "isUnique": false,
                "isSparse": false,
                "isPartial": false,
                "indexVersion": 2,
                "direction": "forward",
                "indexBounds": {"c": ["[5, 5]"]},
            }
        }
    );
    assert!(planned.winning.residual.is_none());
    assert_eq!(planned.winning.summary(), "IXSCAN { c: 1 }");
}

#[test]
fn longest_equality_prefix_wins() {
    let planned = plan(&query(doc! {"a": 1, "b": {"$gt": 2}}), &indexes()).unwrap();
    let scan = planned.winning.index_scan().unwrap();
    assert_eq!(scan.index_name, "a_1_b_-1");
    let rendered = planned.winning.root.render(false);
    let bounds = rendered
        .get_document("inputStage")
        .unwrap()
        .get_document("indexBounds")
        .unwrap();
    assert_eq!(bounds, &doc! {"a": ["[1, 1]"], "b": ["[inf.0, 2)"]});
    assert_eq!(planned.rejected.len(), 1);
    assert_eq!(planned.rejected[0].index_scan().unwrap().index_name, "a_1");
}

#[test]
fn sort_by_index_scans_backward() {
    let mut q = query(doc! {});
    q.sort = SortSpec::parse(&doc! {"c": -1}).unwrap();
    q.limit = Some(3);
    let planned = plan(&q, &indexes()).unwrap();
    let scan = planned.winning.index_scan().unwrap();
    assert_eq!(scan.index_name, "c_1");
    assert!(!scan.forward);
    assert!(planned.winning.blocking_sort.is_none());
    let rendered = planned.winning.root.render(false);
    assert_eq!(rendered.get_str("stage").unwrap(), "LIMIT");
    let ixscan = planned.winning.root.find(StageName::IxScan).unwrap();
    assert_eq!(ixscan.details.get_str("direction").unwrap(), "backward");
    assert_eq!(
        ixscan.details.get_document("indexBounds").unwrap(),
        &doc! {"c": ["[MaxKey, MinKey]"]}
    );
}

#[test]
fn blocking_sort_skip_limit_projection() {
    let mut q = query(doc! {"x": 1});
    q.sort = SortSpec::parse(&doc! {"y": 1}).unwrap();
    q.skip = 2;
    q.limit = Some(5);
    q.projection = Some(Projection::parse(&doc! {"y": 1}).unwrap());
    let planned = plan(&q, &indexes()).unwrap();
    assert!(matches!(
        planned.winning.access,
        Access::CollectionScan { forward: true }
    ));
    let rendered = planned.winning.root.render(false);
    assert_eq!(rendered.get_str("stage").unwrap(), "PROJECTION_SIMPLE");
    let skip = rendered.get_document("inputStage").unwrap();
    assert_eq!(skip.get_str("stage").unwrap(), "SKIP");
    let sort = skip.get_document("inputStage").unwrap();
    assert_eq!(sort.get_str("stage").unwrap(), "SORT");
    assert_eq!(sort.get_i64("limitAmount").unwrap(), 7);
    let scan = sort.get_document("inputStage").unwrap();
    assert_eq!(
        scan,
        &doc! {"stage": "COLLSCAN", "filter": {"x": {"$eq": 1}}, "direction": "forward"}
    );
}

#[test]
fn hints() {
    let mut q = query(doc! {"c": 5});
    q.hint = Some(Hint::Name("a_1".into()));
    let planned = plan(&q, &indexes()).unwrap();
    let scan = planned.winning.index_scan().unwrap();
    assert_eq!(scan.index_name, "a_1");
    assert!(planned.winning.residual.is_some());
    q.hint = Some(Hint::Natural { forward: true });
    assert!(matches!(
        plan(&q, &indexes()).unwrap().winning.access,
        Access::CollectionScan { .. }
    ));
    q.hint = Some(Hint::Name("nope".into()));
    assert_eq!(plan(&q, &indexes()).unwrap_err().code.code(), 2);
    assert_eq!(
        Hint::parse(&Bson::Document(doc! {"a": 1})).unwrap(),
        Some(Hint::KeyPattern(doc! {"a": 1}))
    );
}

#[test]
fn execution_stats_shape() {
    let mut planned = plan(&query(doc! {"c": {"$gte": 1}}), &indexes()).unwrap();
    planned
        .winning
        .stats_mut(StageName::IxScan)
        .unwrap()
        .keys_examined = 10;
    planned
        .winning
        .stats_mut(StageName::Fetch)
        .unwrap()
        .docs_examined = 9;
    planned
        .winning
        .stats_mut(StageName::Fetch)
        .unwrap()
        .n_returned = 9;
    let summary = ExecutionSummary {
        n_returned: 9,
        execution_time_millis: 3,
        num_yields: 1,
    };
    let explain = planned.explain(Verbosity::ExecutionStats, Some(&summary));
    let stats = explain.get_document("executionStats").unwrap();
    assert_eq!(stats.get_i32("totalKeysExamined").unwrap(), 10);
    assert_eq!(stats.get_i32("totalDocsExamined").unwrap(), 9);
    assert_eq!(stats.get_i32("nReturned").unwrap(), 9);
    let stages = stats.get_document("executionStages").unwrap();
    assert_eq!(stages.get_str("stage").unwrap(), "FETCH");
    assert_eq!(
        stages
            .get_document("inputStage")
            .unwrap()
            .get_i32("keysExamined")
            .unwrap(),
        10
    );
    let planner = explain.get_document("queryPlanner").unwrap();
    assert_eq!(planner.get_str("namespace").unwrap(), "test.c");
    assert_eq!(
        planner.get_document("parsedQuery").unwrap(),
        &doc! {"c": {"$gte": 1}}
    );
}

#[test]
fn multikey_unknown_keeps_residual() {
    let mut index = IndexDescriptor::new("a_1", doc! {"a": 1});
    index.multikey_paths = None;
    let planned = plan(&query(doc! {"a": {"$gt": 1, "$lt": 5}}), &[index]).unwrap();
    assert!(planned.winning.residual.is_some());
    assert!(planned.winning.index_scan().unwrap().dedup);
}

#[test]
fn or_over_indexed_fields_is_a_union_of_index_scans() {
    let planned = plan(
        &query(doc! {"$or": [{"a": 1}, {"c": {"$gt": 5}}]}),
        &indexes(),
    )
    .unwrap();
    let Access::Union(scans) = &planned.winning.access else {
        panic!("expected a union: {}", planned.winning.summary())
    };
    assert_eq!(
        scans
            .iter()
            .map(|s| s.index_name.as_str())
            .collect::<Vec<_>>(),
        vec!["a_1", "c_1"]
    );
    assert_eq!(
        planned.winning.summary(),
        "IXSCAN { a: 1 }, IXSCAN { c: 1 }"
    );
    let rendered = planned.winning.root.render(false);
    assert_eq!(rendered.get_str("stage").unwrap(), "FETCH");
    let or = rendered.get_document("inputStage").unwrap();
    assert_eq!(or.get_str("stage").unwrap(), "OR");
    let inputs = or.get_array("inputStages").unwrap();
    assert_eq!(inputs.len(), 2);
    assert_eq!(
        inputs[1]
            .as_document()
            .unwrap()
            .get_document("indexBounds")
            .unwrap(),
        &doc! {"c": ["(5, inf.0]"]}
    );
    // One branch without an index: collection scan.
    let planned = plan(&query(doc! {"$or": [{"a": 1}, {"zz": 1}]}), &indexes()).unwrap();
    assert!(matches!(
        planned.winning.access,
        Access::CollectionScan { .. }
    ));
    // Both branches on one field: a single scan with the union of the bounds.
    let planned = plan(&query(doc! {"$or": [{"c": 1}, {"c": 3}]}), &indexes()).unwrap();
    assert_eq!(planned.winning.summary(), "IXSCAN { c: 1 }");
}
