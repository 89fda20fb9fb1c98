//! What happens to a fetched document after the scan: the residual filter, a blocking sort
//! within the memory limit, skip, limit and the projection, in the order of the plan's stages.
//!
//! The executor feeds each fetched document to [`ResultShaper::offer`]. Without a blocking sort
//! the document comes back at once (projected) or is dropped, and [`ResultShaper::is_done`] says
//! when the limit is reached, so the scan can stop. With a blocking sort, documents are held (a
//! top-k of `skip + limit` when a limit is given; spilled to disk past 100 MB when allowDiskUse,
//! else QueryExceededMemoryLimitNoDiskUseAllowed 292) and [`ResultShaper::finish`] returns them.
//! The shaper also counts what explain reports per stage.

use crate::agg::pipeline::ExternalSorter;
use crate::matcher::Matcher;
use crate::planner::QueryPlan;
use crate::projection::Projection;
use crate::sort::SORT_MEMORY_BYTES_MAX;
use bson::Document;
use cairn_types::Result;

/// Post-fetch processing of one plan.
pub struct ResultShaper {
    residual: Option<Matcher>,
    /// The whole filter, for the positional projection's match position.
    filter: Matcher,
    projection: Option<Projection>,
    sorter: Option<ExternalSorter>,
    skip_remaining: u64,
    limit_remaining: Option<u64>,
    /// Documents that passed the residual filter.
    pub matched: u64,
    /// Documents returned so far.
    pub returned: u64,
}

impl ResultShaper {
    /// `filter` is the query's whole filter (the plan's residual may be only part of it).
    pub fn new(plan: &QueryPlan, filter: &Matcher, allow_disk_use: bool) -> ResultShaper {
        ResultShaper::with_memory_limit(plan, filter, allow_disk_use, SORT_MEMORY_BYTES_MAX)
    }

    /// As [`ResultShaper::new`] with another memory limit for the sort, in bytes.
    pub fn with_memory_limit(
        plan: &QueryPlan,
        filter: &Matcher,
        allow_disk_use: bool,
        sort_memory_bytes_max: usize,
    ) -> ResultShaper {
        let sorter = plan.blocking_sort.as_ref().map(|spec| {
            let keep = plan.limit.map(|l| (l + plan.skip) as usize);
            ExternalSorter::new(spec.clone(), sort_memory_bytes_max, allow_disk_use, keep)
                .for_find()
        });
        ResultShaper {
            residual: plan.residual.clone(),
            filter: filter.clone(),
            projection: plan.projection.clone(),
            sorter,
            skip_remaining: plan.skip,
            limit_remaining: plan.limit,
            matched: 0,
            returned: 0,
        }
    }

    /// True when no more documents can be returned (the limit is reached without a blocking
    /// sort): the executor may stop scanning.
    pub fn is_done(&self) -> bool {
        self.sorter.is_none() && self.limit_remaining == Some(0)
    }

    /// Offers a fetched document; returns it (projected) when it is a result right away.
    pub fn offer(&mut self, document: Document) -> Result<Option<Document>> {
        if let Some(residual) = &self.residual {
            if !residual.matches_checked(&document)? {
                return Ok(None);
            }
        }
        self.matched += 1;
        if let Some(sorter) = &mut self.sorter {
            sorter.push(document)?;
            return Ok(None);
        }
        self.emit(document)
    }

    fn emit(&mut self, document: Document) -> Result<Option<Document>> {
        if self.limit_remaining == Some(0) {
            return Ok(None);
        }
        if self.skip_remaining > 0 {
            self.skip_remaining -= 1;
            return Ok(None);
        }
        if let Some(limit) = &mut self.limit_remaining {
            *limit -= 1;
        }
        self.returned += 1;
        Ok(Some(self.project(document)?))
    }

    fn project(&self, document: Document) -> Result<Document> {
        match &self.projection {
            None => Ok(document),
            Some(projection) => {
                let position = if projection.uses_positional() {
                    self.filter
                        .match_details(&document)?
                        .and_then(|d| d.array_position)
                } else {
                    None
                };
                projection.apply(&document, position)
            }
        }
    }

    /// The documents a blocking sort held, sorted, skipped, limited and projected (empty
    /// without a blocking sort).
    pub fn finish(mut self) -> Result<Vec<Document>> {
        let Some(sorter) = self.sorter.take() else {
            return Ok(Vec::new());
        };
        let mut output = Vec::new();
        for document in sorter.finish()? {
            if let Some(result) = self.emit(document?)? {
                output.push(result);
            }
        }
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{CanonicalQuery, plan};
    use crate::sort::SortSpec;
    use bson::doc;

    fn shaped(
        filter: Document,
        sort: Document,
        skip: u64,
        limit: Option<u64>,
        projection: Option<Document>,
        memory: usize,
        allow_disk_use: bool,
    ) -> Result<Vec<Document>> {
        let matcher = Matcher::parse(&filter)?;
        let mut query = CanonicalQuery::new("d.c", matcher.clone());
        query.sort = SortSpec::parse(&sort)?;
        query.skip = skip;
        query.limit = limit;
        query.projection = projection.map(|p| Projection::parse(&p)).transpose()?;
        let planned = plan(&query, &[])?;
        let mut shaper =
            ResultShaper::with_memory_limit(&planned.winning, &matcher, allow_disk_use, memory);
        let mut output = Vec::new();
        for i in 0..200 {
            if shaper.is_done() {
                break;
            }
            let document =
                doc! {"_id": i, "k": (i * 17) % 10, "a": [i, i + 1], "pad": "x".repeat(50)};
            if let Some(result) = shaper.offer(document)? {
                output.push(result);
            }
        }
        output.extend(shaper.finish()?);
        Ok(output)
    }

    fn ids(documents: &[Document]) -> Vec<i32> {
        documents
            .iter()
            .map(|d| d.get_i32("_id").unwrap())
            .collect()
    }

    #[test]
    fn streaming_skip_limit_and_projection() {
        let result = shaped(
            doc! {"k": {"$lt": 5}},
            doc! {},
            2,
            Some(3),
            Some(doc! {"k": 1}),
            SORT_MEMORY_BYTES_MAX,
            false,
        )
        .unwrap();
        assert_eq!(ids(&result), vec![3, 6, 9]);
        assert_eq!(result[0], doc! {"_id": 3, "k": 1});
    }

    #[test]
    fn top_k_sort() {
        let result = shaped(
            doc! {},
            doc! {"k": -1, "_id": 1},
            1,
            Some(4),
            None,
            SORT_MEMORY_BYTES_MAX,
            false,
        )
        .unwrap();
        let keys: Vec<(i32, i32)> = result
            .iter()
            .map(|d| (d.get_i32("k").unwrap(), d.get_i32("_id").unwrap()))
            .collect();
        assert_eq!(keys, vec![(9, 17), (9, 27), (9, 37), (9, 47)]);
    }

    #[test]
    fn sort_memory_limit() {
        let error = shaped(doc! {}, doc! {"k": 1}, 0, None, None, 2_000, false).unwrap_err();
        assert_eq!(error.code.code(), 292);
        let spilled = shaped(doc! {}, doc! {"k": 1, "_id": 1}, 0, None, None, 2_000, true).unwrap();
        let in_memory = shaped(
            doc! {},
            doc! {"k": 1, "_id": 1},
            0,
            None,
            None,
            SORT_MEMORY_BYTES_MAX,
            false,
        )
        .unwrap();
        assert_eq!(spilled.len(), 200);
        assert_eq!(spilled, in_memory);
    }

    #[test]
    fn positional_projection_uses_the_whole_filter() {
        let result = shaped(
            doc! {"a": 7},
            doc! {},
            0,
            None,
            Some(doc! {"a.$": 1}),
            SORT_MEMORY_BYTES_MAX,
            false,
        )
        .unwrap();
        assert_eq!(
            result,
            vec![doc! {"_id": 6, "a": [7]}, doc! {"_id": 7, "a": [7]}]
        );
    }
}
