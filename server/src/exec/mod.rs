//! Execution over the storage engine: collections (documents and their index entries, kept in
//! the same unit of work) and plans (scans with yielding).

pub mod collection;
pub mod plan;
