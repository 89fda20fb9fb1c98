//! The path an executor takes, end to end, over in-memory "storage": parse a find command,
//! plan it over the collection's indexes, scan the key ranges, fetch, shape (residual, sort,
//! skip, limit, projection), and render explain with execution stats. docs/query.md quotes it.

use bson::{Bson, Document, doc};
use cairn_query::commands::FindCommand;
use cairn_query::index_keys::KeyPattern;
use cairn_query::planner::{Access, ExecutionSummary, IndexDescriptor, StageName, Verbosity, plan};
use cairn_query::shaper::ResultShaper;
use cairn_types::keystring;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

#[test]
fn find_through_an_index_with_explain() {
    // Storage: documents by _id and one secondary index {qty: 1} as key bytes ++ _id -> _id.
    let documents: BTreeMap<i32, Document> = (0..20)
        .map(|i| {
            (
                i,
                doc! {"_id": i, "qty": i % 7, "tags": ["a", "b"], "item": format!("item{i}")},
            )
        })
        .collect();
    let pattern = KeyPattern::parse(&doc! {"qty": 1}).unwrap();
    let mut entries: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    let mut multikey_paths = vec![BTreeSet::new(); 1];
    for (id, document) in &documents {
        let keys = pattern.keys(document).unwrap();
        for (all, found) in multikey_paths.iter_mut().zip(&keys.multikey_paths) {
            all.extend(found.iter().copied());
        }
        for key in keys.keys {
            let mut entry = key.bytes;
            entry.extend(keystring::encode(&Bson::Int32(*id)));
            entries.insert(entry, *id);
        }
    }
    let mut index = IndexDescriptor::new("qty_1", doc! {"qty": 1});
    index.multikey_paths = Some(multikey_paths);
    let indexes = vec![IndexDescriptor::new("_id_", doc! {"_id": 1}), index];

    // 1. Parse the command; 2. plan.
    let command = FindCommand::parse(&doc! {
        "find": "inventory", "filter": {"qty": {"$gte": 2, "$lt": 5}, "item": {"$ne": "item3"}},
        "sort": {"qty": -1}, "skip": 1, "limit": 4, "projection": {"item": 1, "_id": 0}, "$db": "shop",
    })
    .unwrap();
    let query = command.to_query("shop").unwrap();
    let mut planned = plan(&query, &indexes).unwrap();
    let winning = &planned.winning;
    assert_eq!(winning.summary(), "IXSCAN { qty: 1 }");
    assert!(
        winning.blocking_sort.is_none(),
        "the index gives the order (scanned backward)"
    );

    // 3. Scan the key ranges; 4. fetch each record once; 5. shape.
    let Access::IndexScan(scan) = &winning.access else {
        panic!("expected an index scan")
    };
    let mut shaper = ResultShaper::new(winning, &query.filter, command.allow_disk_use);
    let (mut keys_examined, mut docs_examined) = (0u64, 0u64);
    let mut seen = BTreeSet::new();
    let mut results = Vec::new();
    let ranges: Vec<_> = if scan.forward {
        scan.ranges.clone()
    } else {
        scan.ranges.iter().rev().cloned().collect()
    };
    'scan: for range in ranges {
        let end = range.end.clone().map_or(Bound::Unbounded, Bound::Excluded);
        let in_range: Vec<i32> = if scan.forward {
            entries
                .range((Bound::Included(range.start.clone()), end))
                .map(|(_, id)| *id)
                .collect()
        } else {
            entries
                .range((Bound::Included(range.start.clone()), end))
                .rev()
                .map(|(_, id)| *id)
                .collect()
        };
        for id in in_range {
            keys_examined += 1;
            if scan.dedup && !seen.insert(id) {
                continue;
            }
            docs_examined += 1;
            if let Some(result) = shaper.offer(documents[&id].clone()).unwrap() {
                results.push(result);
            }
            if shaper.is_done() {
                break 'scan;
            }
        }
    }
    results.extend(shaper.finish().unwrap());
    assert_eq!(
        results,
        // qty 4 (ids 18, 11, 4: ties come in reverse key order on a backward scan), skip 1,
        // then qty 3 (ids 17, 10; item3 is filtered out).
        vec![
            doc! {"item": "item11"},
            doc! {"item": "item4"},
            doc! {"item": "item17"},
            doc! {"item": "item10"}
        ]
    );

    // 6. Explain with the counters the executor kept.
    planned
        .winning
        .stats_mut(StageName::IxScan)
        .unwrap()
        .keys_examined = keys_examined;
    planned
        .winning
        .stats_mut(StageName::Fetch)
        .unwrap()
        .docs_examined = docs_examined;
    let summary = ExecutionSummary {
        n_returned: results.len() as u64,
        execution_time_millis: 0,
        num_yields: 0,
    };
    let explain = planned.explain(Verbosity::ExecutionStats, Some(&summary));
    let winning_plan = explain
        .get_document("queryPlanner")
        .unwrap()
        .get_document("winningPlan")
        .unwrap();
    assert_eq!(winning_plan.get_str("stage").unwrap(), "PROJECTION_SIMPLE");
    let fetch = winning_plan
        .get_document("inputStage")
        .unwrap()
        .get_document("inputStage")
        .unwrap()
        .get_document("inputStage")
        .unwrap();
    assert_eq!(fetch.get_str("stage").unwrap(), "FETCH");
    assert_eq!(
        fetch.get_document("filter").unwrap(),
        &doc! {"item": {"$not": {"$eq": "item3"}}}
    );
    let ixscan = fetch.get_document("inputStage").unwrap();
    assert_eq!(
        ixscan.get_document("indexBounds").unwrap(),
        &doc! {"qty": ["(5, 2]"]}
    );
    assert_eq!(ixscan.get_str("direction").unwrap(), "backward");
    let stats = explain.get_document("executionStats").unwrap();
    assert_eq!(stats.get_i32("nReturned").unwrap(), 4);
    assert_eq!(
        stats.get_i32("totalKeysExamined").unwrap() as u64,
        keys_examined
    );
}
