//! Lock statistics in MongoDB's shapes.
//!
//! Owns: `LockStats`, the per-operation counters (acquireCount, acquireWaitCount,
//! timeAcquiringMicros per resource type and mode), and [`LockStatsSnapshot`], their plain sum
//! that serverStatus `locks` and currentOp `lockStats` are rendered from.
//!
//! Invariants: only the owning operation's thread writes its `LockStats` (plain load + store, no
//! read-modify-write on the fast path); other threads only read them. The manager adds an ended
//! operation's counters to its totals exactly once, when the operation's `Locker` is dropped.

use crate::mode::{LOCK_MODES, LockMode};
use crate::resource::{RESOURCE_TYPES, ResourceType};
use bson::{Document, doc};
use std::sync::atomic::{AtomicU64, Ordering};

const COUNTERS: usize = 3;
const ACQUIRE: usize = 0;
const WAIT: usize = 1;
const MICROS: usize = 2;
const COUNTER_NAMES: [&str; COUNTERS] = ["acquireCount", "acquireWaitCount", "timeAcquiringMicros"];

/// One operation's lock counters.
#[derive(Default)]
pub(crate) struct LockStats {
    counters: [[[AtomicU64; LOCK_MODES]; RESOURCE_TYPES]; COUNTERS],
}

impl LockStats {
    /// Adds to a counter. Single writer: a load and a store, not an atomic add.
    fn bump(&self, counter: usize, kind: ResourceType, mode: LockMode, by: u64) {
        let cell = &self.counters[counter][kind.index()][mode.index()];
        cell.store(cell.load(Ordering::Relaxed) + by, Ordering::Relaxed);
    }

    pub fn record_acquire(&self, kind: ResourceType, mode: LockMode) {
        self.bump(ACQUIRE, kind, mode, 1);
    }

    pub fn record_wait(&self, kind: ResourceType, mode: LockMode, micros: u64) {
        self.bump(WAIT, kind, mode, 1);
        self.bump(MICROS, kind, mode, micros);
    }

    pub fn snapshot(&self) -> LockStatsSnapshot {
        let mut snapshot = LockStatsSnapshot::default();
        for counter in 0..COUNTERS {
            for kind in 0..RESOURCE_TYPES {
                for mode in 0..LOCK_MODES {
                    snapshot.counters[counter][kind][mode] =
                        self.counters[counter][kind][mode].load(Ordering::Relaxed);
                }
            }
        }
        snapshot
    }
}

/// Plain lock counters: one operation's, or the sum over many.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockStatsSnapshot {
    counters: [[[u64; LOCK_MODES]; RESOURCE_TYPES]; COUNTERS],
}

impl LockStatsSnapshot {
    pub fn add(&mut self, other: &LockStatsSnapshot) {
        for counter in 0..COUNTERS {
            for kind in 0..RESOURCE_TYPES {
                for mode in 0..LOCK_MODES {
                    self.counters[counter][kind][mode] += other.counters[counter][kind][mode];
                }
            }
        }
    }

    pub fn acquire_count(&self, kind: ResourceType, mode: LockMode) -> u64 {
        self.counters[ACQUIRE][kind.index()][mode.index()]
    }

    pub fn acquire_wait_count(&self, kind: ResourceType, mode: LockMode) -> u64 {
        self.counters[WAIT][kind.index()][mode.index()]
    }

    pub fn time_acquiring_micros(&self, kind: ResourceType, mode: LockMode) -> u64 {
        self.counters[MICROS][kind.index()][mode.index()]
    }

    /// serverStatus `locks` / currentOp `lockStats`: `{Global: {acquireCount: {r: 5, w: 2},
    /// acquireWaitCount: {...}, timeAcquiringMicros: {...}}, Database: ..., ...}` with values as
    /// Int64, keyed by legacy letters; zero values, empty counters and unused types are omitted.
    pub fn to_document(&self) -> Document {
        let mut locks = Document::new();
        for kind in ResourceType::ALL {
            let mut per_type = Document::new();
            for (counter, name) in COUNTER_NAMES.iter().enumerate() {
                let mut per_mode = Document::new();
                for mode in LockMode::ALL {
                    let value = self.counters[counter][kind.index()][mode.index()];
                    if value > 0 {
                        per_mode.insert(mode.legacy_letter(), value as i64);
                    }
                }
                if !per_mode.is_empty() {
                    per_type.insert(*name, per_mode);
                }
            }
            if !per_type.is_empty() {
                locks.insert(kind.name(), per_type);
            }
        }
        locks
    }
}

/// `{total, readers, writers}` as globalLock shows them.
pub(crate) fn readers_writers(readers: u64, writers: u64) -> Document {
    doc! {
        "total": (readers + writers) as i64,
        "readers": readers as i64,
        "writers": writers as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_uses_letters_and_omits_zeros() {
        let stats = LockStats::default();
        stats.record_acquire(ResourceType::Global, LockMode::IX);
        stats.record_acquire(ResourceType::Global, LockMode::IX);
        stats.record_acquire(ResourceType::Collection, LockMode::X);
        stats.record_wait(ResourceType::Collection, LockMode::X, 250);
        let document = stats.snapshot().to_document();
        assert_eq!(
            document,
            doc! {
                "Global": {"acquireCount": {"w": 2_i64}},
                "Collection": {
                    "acquireCount": {"W": 1_i64},
                    "acquireWaitCount": {"W": 1_i64},
                    "timeAcquiringMicros": {"W": 250_i64},
                },
            }
        );
        let mut total = LockStatsSnapshot::default();
        total.add(&stats.snapshot());
        total.add(&stats.snapshot());
        assert_eq!(total.acquire_count(ResourceType::Global, LockMode::IX), 4);
        assert_eq!(
            total.time_acquiring_micros(ResourceType::Collection, LockMode::X),
            500
        );
    }
}
