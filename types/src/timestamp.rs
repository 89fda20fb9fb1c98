//! Commit timestamps and optimes.
//!
//! A [`Timestamp`] is MongoDB's BSON timestamp: seconds since the Unix epoch and an increment that
//! orders events within one second. Every committed write carries one; the oplog is keyed by them.
//! As a `u64` the seconds are the high 32 bits, so integer order is timestamp order.

use std::fmt;

/// A commit timestamp: `(secs, inc)`, ordered by seconds then increment.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub secs: u32,
    /// Orders events within one second; starts at 1 for real commits.
    pub inc: u32,
}

impl Timestamp {
    /// The null timestamp: before every commit.
    pub const ZERO: Timestamp = Timestamp { secs: 0, inc: 0 };
    /// The largest timestamp.
    pub const MAX: Timestamp = Timestamp {
        secs: u32::MAX,
        inc: u32::MAX,
    };

    pub const fn new(secs: u32, inc: u32) -> Timestamp {
        Timestamp { secs, inc }
    }

    /// The timestamp as one integer whose order is timestamp order.
    pub const fn as_u64(self) -> u64 {
        ((self.secs as u64) << 32) | self.inc as u64
    }

    pub const fn from_u64(value: u64) -> Timestamp {
        Timestamp {
            secs: (value >> 32) as u32,
            inc: value as u32,
        }
    }

    pub const fn is_null(self) -> bool {
        self.secs == 0 && self.inc == 0
    }

    /// The next timestamp after `self`: the same second with the increment advanced, or the next
    /// second when the increment is exhausted.
    pub fn successor(self) -> Timestamp {
        assert!(self != Timestamp::MAX, "timestamp space exhausted");
        Timestamp::from_u64(self.as_u64() + 1)
    }

    /// The timestamp just before `self` (`ZERO` stays `ZERO`).
    pub fn predecessor(self) -> Timestamp {
        Timestamp::from_u64(self.as_u64().saturating_sub(1))
    }

    /// The big-endian bytes of [`Timestamp::as_u64`]: their byte order is timestamp order.
    pub const fn to_be_bytes(self) -> [u8; 8] {
        self.as_u64().to_be_bytes()
    }

    pub fn from_be_bytes(bytes: [u8; 8]) -> Timestamp {
        Timestamp::from_u64(u64::from_be_bytes(bytes))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}, {})", self.secs, self.inc)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}, {})", self.secs, self.inc)
    }
}

impl From<bson::Timestamp> for Timestamp {
    fn from(value: bson::Timestamp) -> Timestamp {
        Timestamp {
            secs: value.time,
            inc: value.increment,
        }
    }
}

impl From<Timestamp> for bson::Timestamp {
    fn from(value: Timestamp) -> bson::Timestamp {
        bson::Timestamp {
            time: value.secs,
            increment: value.inc,
        }
    }
}

impl From<Timestamp> for bson::Bson {
    fn from(value: Timestamp) -> bson::Bson {
        bson::Bson::Timestamp(value.into())
    }
}

/// An optime: the timestamp of an oplog entry and the election term in which it was written.
/// Ordered by term first, then timestamp, as MongoDB's `OpTime` is.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Debug)]
pub struct OpTime {
    pub ts: Timestamp,
    /// The election term; -1 for entries written before any term (MongoDB's uninitialized term).
    pub term: i64,
}

impl OpTime {
    pub const NULL: OpTime = OpTime {
        ts: Timestamp::ZERO,
        term: -1,
    };

    pub const fn new(ts: Timestamp, term: i64) -> OpTime {
        OpTime { ts, term }
    }

    /// `{ts: Timestamp, t: NumberLong}` as in replSetGetStatus.
    pub fn to_document(self) -> bson::Document {
        bson::doc! { "ts": bson::Bson::from(self.ts), "t": self.term }
    }
}

impl PartialOrd for OpTime {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OpTime {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.term.cmp(&other.term).then(self.ts.cmp(&other.ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_order_is_timestamp_order() {
        let a = Timestamp::new(1, u32::MAX);
        let b = Timestamp::new(2, 0);
        assert!(a < b);
        assert!(a.as_u64() < b.as_u64());
        assert_eq!(a.successor(), b);
        assert_eq!(b.predecessor(), a);
        assert_eq!(Timestamp::from_u64(a.as_u64()), a);
        assert_eq!(Timestamp::from_be_bytes(b.to_be_bytes()), b);
    }

    #[test]
    fn optime_orders_by_term_first() {
        let older_term = OpTime::new(Timestamp::new(100, 1), 1);
        let newer_term = OpTime::new(Timestamp::new(50, 1), 2);
        assert!(older_term < newer_term);
    }
}
