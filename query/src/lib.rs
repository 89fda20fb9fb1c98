//! cairn-query: MongoDB's query semantics as pure functions on `bson::Document`.
//!
//! Nothing here does I/O (except the opt-in spilling of a large aggregation `$sort` to temporary
//! files), reads a clock or takes a lock: the executor that runs plans over the storage engine
//! under the lock manager calls into this crate.
//!
//! - [`path`]: dotted paths and how they reach values through documents and arrays.
//! - [`matcher`]: filters (`Matcher::parse`, `matches`, positional match details).
//! - [`commands`]: parsers for find, update, delete, findAndModify, count, distinct, aggregate,
//!   createIndexes and dropIndexes with MongoDB's IDL errors.
//! - [`bounds`]: index bounds (interval lists) and encoded key ranges.
//! - [`index_keys`]: key patterns and a document's index keys (multikey, keystring).
//! - [`update`]: update operators and replacements (`Update::parse`, `apply`, upserts).
//! - [`planner`]: candidate plans, the winning plan, explain trees with per-stage counters.
//! - [`projection`]: find and `$project` projections.
//! - [`shaper`]: residual filter, blocking sort, skip, limit and projection after the fetch.
//! - [`sort`]: sort specifications, sort keys, skip/limit.
//! - [`agg`]: aggregation expressions and pipeline stages.

pub mod agg;
pub mod bounds;
pub mod commands;
pub mod index_keys;
pub mod matcher;
pub mod path;
pub mod planner;
pub mod projection;
pub mod shaper;
pub mod sort;
pub mod update;
pub mod value;

pub use matcher::{MatchDetails, Matcher};

#[cfg(test)]
mod tests {
    /// The executor keeps parsed queries across threads (cursors, yields).
    #[test]
    fn parsed_forms_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Matcher>();
        check::<crate::update::Update>();
        check::<crate::projection::Projection>();
        check::<crate::sort::SortSpec>();
        check::<crate::index_keys::KeyPattern>();
        check::<crate::planner::PlannedQuery>();
        check::<crate::agg::pipeline::Pipeline>();
        check::<crate::commands::FindCommand>();
        // A cursor's shaper moves between threads with its cursor.
        fn send<T: Send>() {}
        send::<crate::shaper::ResultShaper>();
    }
}
