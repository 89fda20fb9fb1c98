//! Time as an injected dependency.
//!
//! The cores never read the system clock: they are handed a [`Clock`]. Production uses
//! [`SystemClock`]; tests and the simulator use [`ManualClock`], which moves only when told to.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of wall-clock and monotonic time.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch. May jump (NTP, a simulated clock jump).
    fn wall_ms(&self) -> i64;

    /// Time since this clock's origin; never goes backwards.
    fn monotonic(&self) -> Duration;

    /// Whole seconds since the Unix epoch, as timestamps use them.
    fn wall_secs(&self) -> u32 {
        (self.wall_ms().max(0) / 1000).min(u32::MAX as i64) as u32
    }
}

/// The operating system's clocks.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn wall_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(elapsed) => elapsed.as_millis() as i64,
            Err(before) => -(before.duration().as_millis() as i64),
        }
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to: for tests and deterministic simulation.
#[derive(Debug)]
pub struct ManualClock {
    wall_ms: AtomicI64,
    monotonic_ns: AtomicU64,
}

impl ManualClock {
    pub fn new(wall_ms: i64) -> ManualClock {
        ManualClock {
            wall_ms: AtomicI64::new(wall_ms),
            monotonic_ns: AtomicU64::new(0),
        }
    }

    /// Moves both clocks forward.
    pub fn advance(&self, by: Duration) {
        self.wall_ms
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        self.monotonic_ns
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Sets the wall clock (a jump, forwards or backwards); the monotonic clock is unchanged.
    pub fn set_wall_ms(&self, wall_ms: i64) {
        self.wall_ms.store(wall_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn wall_ms(&self) -> i64 {
        self.wall_ms.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.monotonic_ns.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(5_000);
        assert_eq!(clock.wall_secs(), 5);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.wall_ms(), 6_500);
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
        clock.set_wall_ms(0);
        assert_eq!(clock.wall_secs(), 0);
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
    }
}
