//! Yielding: when a long operation lets go of its locks, and what it re-checks after.
//!
//! Owns: [`YieldPolicy`] (yield every `yield_period_ms`, and optionally every N iterations,
//! counting numYields) and [`Yieldable`], what the yielding code itself saves and restores (the
//! query executor: its snapshot, keeping the read timestamp; its cursors; the collection, looked
//! up again by UUID). [`RecordingYieldable`] is a test double for executors not written yet.
//!
//! Order of one yield (MongoDB's, `plan_yield_policy.cpp`): check for interrupt, save the
//! executor, release every lock and the ticket, give other threads a chance, take the ticket and
//! the locks again in canonical order, check for interrupt (kill, maxTimeMS, a state change),
//! restore the executor (which re-checks that its collection still exists). An error at any
//! step ends the operation with that error.

use crate::locker::Locker;
use cairn_types::{Clock, Error, Result};
use std::sync::Arc;
use std::time::Duration;

/// What a yielding operation saves before its locks go and restores after they are back.
pub trait Yieldable {
    /// Called with the locks still held.
    fn save_state(&mut self);
    /// Called with the locks held again; returns e.g. QueryPlanKilled (175) when the
    /// collection was dropped meanwhile.
    fn restore_state(&mut self, locker: &Locker) -> Result<()>;
}

/// Nothing to save: for operations whose only state is their locks.
impl Yieldable for () {
    fn save_state(&mut self) {}
    fn restore_state(&mut self, _locker: &Locker) -> Result<()> {
        Ok(())
    }
}

/// A test double: counts saves and restores and fails the next restore with a given error (for
/// example "collection dropped" while the operation was yielded).
#[derive(Debug, Default)]
pub struct RecordingYieldable {
    pub saves: u64,
    pub restores: u64,
    pub fail_next_restore: Option<Error>,
}

impl Yieldable for RecordingYieldable {
    fn save_state(&mut self) {
        self.saves += 1;
    }

    fn restore_state(&mut self, _locker: &Locker) -> Result<()> {
        self.restores += 1;
        match self.fail_next_restore.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// When to yield. One per operation; ask [`YieldPolicy::should_yield`] once per unit of work.
#[derive(Debug)]
pub struct YieldPolicy {
    clock: Arc<dyn Clock>,
    period: Duration,
    iterations_max: Option<u64>,
    last_yield: Duration,
    iterations: u64,
    yields: u64,
}

impl YieldPolicy {
    /// A policy with the manager's current yield settings.
    pub fn for_locker(locker: &Locker) -> YieldPolicy {
        let manager = locker.manager();
        YieldPolicy::new(
            manager.clock().clone(),
            Duration::from_millis(manager.yield_period_ms()),
            manager.yield_iterations_max(),
        )
    }

    pub fn new(clock: Arc<dyn Clock>, period: Duration, iterations_max: Option<u64>) -> Self {
        let last_yield = clock.monotonic();
        YieldPolicy {
            clock,
            period,
            iterations_max,
            last_yield,
            iterations: 0,
            yields: 0,
        }
    }

    /// Counts one unit of work; true when it is time to yield.
    pub fn should_yield(&mut self) -> bool {
        self.iterations += 1;
        if self
            .iterations_max
            .is_some_and(|max| self.iterations >= max)
        {
            return true;
        }
        self.clock.monotonic().saturating_sub(self.last_yield) >= self.period
    }

    /// Yields now (see the module header for the steps).
    pub fn yield_now(&mut self, locker: &Locker, yieldable: &mut dyn Yieldable) -> Result<()> {
        locker.check_for_interrupt()?;
        yieldable.save_state();
        let saved = locker.save_lock_state();
        std::thread::yield_now();
        locker.restore_lock_state(saved)?;
        self.yields += 1;
        locker.record_yield();
        self.iterations = 0;
        self.last_yield = self.clock.monotonic();
        locker.check_for_interrupt()?;
        yieldable.restore_state(locker)
    }

    /// Counts one unit of work and yields when due. True when it yielded.
    pub fn yield_if_needed(
        &mut self,
        locker: &Locker,
        yieldable: &mut dyn Yieldable,
    ) -> Result<bool> {
        if !self.should_yield() {
            return Ok(false);
        }
        self.yield_now(locker, yieldable)?;
        Ok(true)
    }

    /// Yields done through this policy.
    pub fn yields(&self) -> u64 {
        self.yields
    }
}
