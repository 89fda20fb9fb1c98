//! cairn-types: the vocabulary every cairn crate shares.
//!
//! Nothing here does I/O or reads a clock of its own; [`Clock`] is the narrow trait through which
//! time enters the cores, so simulation can substitute a [`ManualClock`].
//!
//! - [`Timestamp`] and [`OpTime`]: commit timestamps (seconds + increment, as in the oplog) and
//!   `{ts, t}` optimes.
//! - [`Namespace`]: `db.collection` with MongoDB's naming rules.
//! - [`ErrorCode`] and [`Error`]: MongoDB's numeric codes and code names, as values.
//! - [`limits`]: named limits with units (16 MiB documents, nesting depth 100, 48 MB messages).
//! - [`order`]: MongoDB's total order over BSON values (canonical type order, numbers by value).
//! - [`keystring`]: an order-preserving, prefix-free byte encoding of BSON values whose byte order
//!   is exactly [`order::compare_values`].

pub mod clock;
pub mod error;
pub mod keystring;
pub mod limits;
pub mod namespace;
pub mod order;
pub mod timestamp;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorCode, Result};
pub use namespace::Namespace;
pub use timestamp::{OpTime, Timestamp};
