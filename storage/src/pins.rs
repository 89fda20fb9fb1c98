//! Read-timestamp pins and the garbage-collection horizon.
//!
//! Every snapshot and every unit of work pins its read timestamp here. Invariants:
//! - the horizon (the published oldest timestamp) never moves backwards;
//! - the horizon never passes a pinned timestamp: `advance_horizon` takes the minimum, and a pin
//!   below the horizon is refused (SnapshotTooOld), both under one mutex, so a reader can never
//!   pin history that a concurrent garbage collection pass is about to remove;
//! - a pin at "latest" reads the visible timestamp under the same mutex, so the key-lock table's
//!   cleanup (which asks for the oldest pin) never forgets a commit that a new writer may not
//!   have seen.

use cairn_types::{Error, ErrorCode, Timestamp};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
struct PinState {
    counts: BTreeMap<Timestamp, usize>,
    horizon: Timestamp,
}

/// The registry of pinned read timestamps.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    state: Mutex<PinState>,
}

/// Holds a pin until dropped.
#[derive(Debug)]
pub(crate) struct PinGuard {
    pins: Arc<Pins>,
    ts: Timestamp,
}

impl PinGuard {
    pub(crate) fn ts(&self) -> Timestamp {
        self.ts
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut state = self.pins.state.lock();
        let count = state.counts.get_mut(&self.ts).expect("pin registered");
        *count -= 1;
        if *count == 0 {
            state.counts.remove(&self.ts);
        }
    }
}

impl Pins {
    pub(crate) fn new(horizon: Timestamp) -> Arc<Pins> {
        Arc::new(Pins {
            state: Mutex::new(PinState {
                counts: BTreeMap::new(),
                horizon,
            }),
        })
    }

    /// Pins the newest visible timestamp.
    pub(crate) fn pin_latest(self: &Arc<Self>, visible: &AtomicU64) -> PinGuard {
        let mut state = self.state.lock();
        let ts = Timestamp::from_u64(visible.load(Ordering::Acquire));
        *state.counts.entry(ts).or_insert(0) += 1;
        PinGuard {
            pins: self.clone(),
            ts,
        }
    }

    /// Pins a given timestamp: refused below the horizon (SnapshotTooOld) or above the newest
    /// visible commit (SnapshotUnavailable).
    pub(crate) fn pin_at(
        self: &Arc<Self>,
        ts: Timestamp,
        visible: &AtomicU64,
    ) -> Result<PinGuard, Error> {
        let mut state = self.state.lock();
        if ts < state.horizon {
            return Err(Error::new(
                ErrorCode::SnapshotTooOld,
                format!(
                    "Read timestamp {ts} is older than the oldest available timestamp {}",
                    state.horizon
                ),
            ));
        }
        let visible = Timestamp::from_u64(visible.load(Ordering::Acquire));
        if ts > visible {
            return Err(Error::new(
                ErrorCode::SnapshotUnavailable,
                format!("Read timestamp {ts} is newer than the newest commit {visible}"),
            ));
        }
        *state.counts.entry(ts).or_insert(0) += 1;
        Ok(PinGuard {
            pins: self.clone(),
            ts,
        })
    }

    /// The oldest pinned timestamp, if any.
    pub(crate) fn oldest_pinned(&self) -> Option<Timestamp> {
        self.state.lock().counts.keys().next().copied()
    }

    /// Moves the horizon towards `candidate`, never past a pin and never backwards; returns it.
    pub(crate) fn advance_horizon(&self, candidate: Timestamp) -> Timestamp {
        let mut state = self.state.lock();
        let mut target = candidate;
        if let Some(&oldest_pin) = state.counts.keys().next() {
            target = target.min(oldest_pin);
        }
        if target > state.horizon {
            state.horizon = target;
        }
        state.horizon
    }

    /// Number of live pins (for statistics).
    pub(crate) fn pinned_count(&self) -> usize {
        self.state.lock().counts.values().sum()
    }

    /// The newest pinned timestamp, if any.
    pub(crate) fn newest_pinned(&self) -> Option<Timestamp> {
        self.state.lock().counts.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizon_never_passes_a_pin() {
        let pins = Pins::new(Timestamp::ZERO);
        let visible = AtomicU64::new(Timestamp::new(10, 0).as_u64());
        let pin = pins.pin_at(Timestamp::new(5, 0), &visible).unwrap();
        assert_eq!(
            pins.advance_horizon(Timestamp::new(8, 0)),
            Timestamp::new(5, 0)
        );
        drop(pin);
        assert_eq!(
            pins.advance_horizon(Timestamp::new(8, 0)),
            Timestamp::new(8, 0)
        );
        // Never backwards.
        assert_eq!(
            pins.advance_horizon(Timestamp::new(2, 0)),
            Timestamp::new(8, 0)
        );
        let error = pins.pin_at(Timestamp::new(7, 0), &visible).unwrap_err();
        assert_eq!(error.code, ErrorCode::SnapshotTooOld);
        let error = pins.pin_at(Timestamp::new(11, 0), &visible).unwrap_err();
        assert_eq!(error.code, ErrorCode::SnapshotUnavailable);
        let latest = pins.pin_latest(&visible);
        assert_eq!(latest.ts(), Timestamp::new(10, 0));
        assert_eq!(pins.pinned_count(), 1);
    }
}
