//! cairn-locking: the lock manager between operations and the storage engine.
//!
//! Operations run on blocking worker threads; each has a [`Locker`] from a shared
//! [`LockManager`]. A locker takes IS/IX/S/X locks on the replication state transition lock,
//! Global, databases, collections and the oplog, always ancestors first with intent modes
//! (`lock_collection(ns, IX)` takes RSTL IX, Global IX, Database IX, Collection IX), after an
//! admission ticket; it gets RAII guards back. Waits are FIFO with compatible batches, bounded by
//! maxTimeMS (MaxTimeMSExpired 50) or the lock timeout (LockTimeout 24), ended at once by a kill
//! (killOp 11601, shutdown 11600, a state transition 11602) and by the deadlock detector.
//! Long operations yield through a [`YieldPolicy`]. Statistics come out as MongoDB's serverStatus,
//! currentOp and lockInfo documents. `docs/locking.md` has the design, the rules and the
//! measured costs.
//!
//! Modules: [`mode`] (matrix), [`resource`] (what is locked, canonical order), `head` (grant and
//! queue state machine of one resource), `locker` (one operation), `manager` (table, registry,
//! detector, views), `tickets`, [`stats`], [`yielding`], `sync` (parking_lot or loom).
//!
//! ```
//! use cairn_locking::{LockManager, LockManagerConfig, LockMode, LockerOptions};
//! use cairn_types::Namespace;
//!
//! let manager = LockManager::new(LockManagerConfig::default());
//! let locker = manager.new_locker(LockerOptions { max_time_ms: Some(1_000), ..LockerOptions::new("conn1") });
//! let ns = Namespace::new("shop", "orders");
//! {
//!     let _guard = locker.lock_collection(&ns, LockMode::IX)?;
//!     // ... write to shop.orders ...
//!     assert_eq!(locker.current_op().get_document("locks")?.get_str("Collection")?, "w");
//! }
//! assert!(locker.held_locks().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod head;
mod locker;
mod manager;
pub mod mode;
#[cfg(test)]
mod model_tests;
pub mod resource;
pub mod stats;
mod sync;
mod tickets;
pub mod yielding;

pub use locker::{Admission, KillHandle, LockGuard, Locker, LockerOptions, SavedLockState};
pub use manager::{LockManager, LockManagerConfig};
pub use mode::LockMode;
pub use resource::{ResourceId, ResourceType};
pub use stats::LockStatsSnapshot;
pub use tickets::TicketKind;
pub use yielding::{RecordingYieldable, YieldPolicy, Yieldable};
