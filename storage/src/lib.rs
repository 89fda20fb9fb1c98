//! cairn-storage: the engine every cairn node stands on.
//!
//! Timestamped multi-version concurrency control over redb. See `docs/storage.md` for the design,
//! its definitions and invariants; in short:
//!
//! - **Tables** are identified by an *ident* (`u64`). Every table is versioned: its *current*
//!   redb table holds the newest version of each key, stamped with its commit timestamp; its
//!   *history* redb table holds older versions keyed by `key ++ stop timestamp`. A tombstone is a
//!   version too. Keys must be prefix-free (the keystring encoding is).
//! - **Reads** open a [`Snapshot`] at a read timestamp and see exactly the versions committed at or
//!   before it. A snapshot pins its timestamp, so history it can see is never collected.
//! - **Writes** are staged in a [`WriteUnit`] and committed atomically with one or more commit
//!   timestamps (one per oplog entry), together with their oplog entries. The first writer of a
//!   key owns it until its commit is visible; a second writer gets `WriteConflict` (112) and, in
//!   [`retry::write_conflict_retry`], queues on the key instead of spinning.
//! - **Commit** goes through a leader that turns many units of work into one redb transaction
//!   (group commit), committed without durability and then recorded in the journal (`journal`):
//!   `j: true` commits wait for a journal fdatasync, which concurrent committers share; `j: false`
//!   commits return once visible and are made durable within `commit_interval_ms`. A durable redb
//!   commit every `data_sync_interval_ms` starts the journal over; recovery is redb's last
//!   durable commit plus journal replay.
//! - **The write log** records `(ts, ident, key)` for every version written. Garbage collection
//!   walks it forwards from the oldest timestamp; `recover_to_stable_timestamp` walks it backwards
//!   from the newest to undo everything after the stable timestamp.
//! - **The catalog** (databases, collections with UUIDs, index definitions) is itself a versioned
//!   table, so create, drop and rename are timestamped like data; an in-memory mirror of all its
//!   versions serves lookups.

mod catalog;
mod committer;
mod completion;
mod config;
mod engine;
mod format;
mod journal;
mod keylocks;
mod memtable;
mod pins;
pub mod retry;
mod snapshot;
mod stats;
mod write;

pub mod backend;

pub use backend::{Backend, CrashableMemory};
pub use catalog::{CollectionMeta, IndexMeta};
pub use config::{CommitMode, EngineConfig};
pub use engine::{Engine, TimestampState};
pub use journal::JOURNAL_FILE_NAMES;
pub use snapshot::{OplogIter, ReadAt, ScanDirection, ScanIter, Snapshot};
pub use stats::EngineStats;
pub use write::{CommitInfo, Durability, KEY_SIZE_MAX_BYTES, VALUE_SIZE_MAX_BYTES, WriteUnit};

/// A key and its value, as scans return them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The ident of the catalog's own versioned table.
pub const CATALOG_IDENT: u64 = 0;

/// The first ident handed to a collection or index table.
pub const FIRST_USER_IDENT: u64 = 16;
