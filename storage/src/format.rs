//! The physical layout in redb.
//!
//! | redb table | key | value |
//! |---|---|---|
//! | `meta` | name | bytes (u64 big-endian for numbers) |
//! | `c.<ident>` current | user key | version: `ts(8) kind(1) payload` |
//! | `h.<ident>` history | user key ++ stop ts(8) | version: `start ts(8) kind(1) payload` |
//! | `writelog` | `ts(8) ident(8) key` | () |
//! | `oplog` | ts (u64) | BSON entry |
//! | `droppending` | `ts(8) ident(8)` | () |
//!
//! A history entry is the version that was current from its start timestamp up to (not
//! including) its stop timestamp, when a newer version replaced it. Timestamps are big-endian
//! [`Timestamp::as_u64`], so byte order is time order.

use cairn_types::Timestamp;
use redb::TableDefinition;

pub(crate) const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
pub(crate) const WRITELOG: TableDefinition<'static, &[u8], ()> = TableDefinition::new("writelog");
pub(crate) const OPLOG: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("oplog");
pub(crate) const DROP_PENDING: TableDefinition<'static, &[u8], ()> =
    TableDefinition::new("droppending");

pub(crate) const META_FORMAT_VERSION: &str = "format_version";
/// The [`CommitState`] record, rewritten by every batch.
pub(crate) const META_COMMIT_STATE: &str = "commit_state";
pub(crate) const META_OLDEST_TS: &str = "oldest_ts";
pub(crate) const META_CHECKPOINT_TS: &str = "checkpoint_ts";
pub(crate) const META_CLEAN_SHUTDOWN: &str = "clean_shutdown";
/// The journal generation whose records follow this durable commit (see `journal`).
pub(crate) const META_JOURNAL_GENERATION: &str = "journal_generation";

/// What every commit updates, in one 32-byte record (one redb insert per batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CommitState {
    pub last_ts: Timestamp,
    pub stable_ts: Timestamp,
    pub oplog_bytes: u64,
    pub next_ident: u64,
}

impl CommitState {
    pub(crate) fn encode(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&self.last_ts.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.stable_ts.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.oplog_bytes.to_be_bytes());
        bytes[24..].copy_from_slice(&self.next_ident.to_be_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> CommitState {
        assert_eq!(bytes.len(), 32, "commit state record is 32 bytes");
        let word = |index: usize| {
            u64::from_be_bytes(bytes[index * 8..index * 8 + 8].try_into().expect("8 bytes"))
        };
        CommitState {
            last_ts: Timestamp::from_u64(word(0)),
            stable_ts: Timestamp::from_u64(word(1)),
            oplog_bytes: word(2),
            next_ident: word(3),
        }
    }
}

/// Bumped whenever the layout changes incompatibly.
pub(crate) const FORMAT_VERSION: u64 = 1;

/// A table name without an allocation: `c.` or `h.` and 16 hex digits.
pub(crate) struct TableName([u8; 18]);

impl TableName {
    fn new(prefix: u8, ident: u64) -> TableName {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; 18];
        bytes[0] = prefix;
        bytes[1] = b'.';
        for (index, byte) in bytes[2..].iter_mut().enumerate() {
            *byte = HEX[((ident >> (60 - 4 * index)) & 0xf) as usize];
        }
        TableName(bytes)
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII")
    }
}

impl std::ops::Deref for TableName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

pub(crate) fn current_table_name(ident: u64) -> TableName {
    TableName::new(b'c', ident)
}

pub(crate) fn history_table_name(ident: u64) -> TableName {
    TableName::new(b'h', ident)
}

pub(crate) const KIND_VALUE: u8 = 0;
pub(crate) const KIND_TOMBSTONE: u8 = 1;

/// A decoded version: its timestamp (commit or start), and its payload (`None` for a tombstone).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Version<'a> {
    pub ts: Timestamp,
    pub payload: Option<&'a [u8]>,
}

pub(crate) fn encode_version(ts: Timestamp, payload: Option<&[u8]>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + payload.map_or(0, <[u8]>::len));
    bytes.extend_from_slice(&ts.to_be_bytes());
    match payload {
        Some(payload) => {
            bytes.push(KIND_VALUE);
            bytes.extend_from_slice(payload);
        }
        None => bytes.push(KIND_TOMBSTONE),
    }
    bytes
}

pub(crate) fn decode_version(bytes: &[u8]) -> Version<'_> {
    assert!(
        bytes.len() >= 9,
        "version record too short: {} bytes",
        bytes.len()
    );
    let ts = Timestamp::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let payload = match bytes[8] {
        KIND_VALUE => Some(&bytes[9..]),
        KIND_TOMBSTONE => None,
        other => panic!("unknown version kind {other}"),
    };
    Version { ts, payload }
}

pub(crate) fn history_key(key: &[u8], stop: Timestamp) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(key.len() + 8);
    bytes.extend_from_slice(key);
    bytes.extend_from_slice(&stop.to_be_bytes());
    bytes
}

pub(crate) fn writelog_key(ts: Timestamp, ident: u64, key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + key.len());
    bytes.extend_from_slice(&ts.to_be_bytes());
    bytes.extend_from_slice(&ident.to_be_bytes());
    bytes.extend_from_slice(key);
    bytes
}

/// `(ts, ident, key)` of a write-log key.
pub(crate) fn decode_writelog_key(bytes: &[u8]) -> (Timestamp, u64, &[u8]) {
    assert!(bytes.len() >= 16, "write-log key too short");
    let ts = Timestamp::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let ident = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
    (ts, ident, &bytes[16..])
}

pub(crate) fn drop_pending_key(ts: Timestamp, ident: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&ts.to_be_bytes());
    bytes[8..].copy_from_slice(&ident.to_be_bytes());
    bytes
}

pub(crate) fn decode_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().expect("meta numbers are 8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert_eq!(current_table_name(0x2a).as_str(), "c.000000000000002a");
        assert_eq!(history_table_name(u64::MAX).as_str(), "h.ffffffffffffffff");
    }

    #[test]
    fn version_round_trip() {
        let ts = Timestamp::new(7, 3);
        let bytes = encode_version(ts, Some(b"abc"));
        let version = decode_version(&bytes);
        assert_eq!(version.ts, ts);
        assert_eq!(version.payload, Some(&b"abc"[..]));
        let tombstone = encode_version(ts, None);
        assert_eq!(decode_version(&tombstone).payload, None);
        let empty = encode_version(ts, Some(b""));
        assert_eq!(decode_version(&empty).payload, Some(&b""[..]));
    }

    #[test]
    fn writelog_key_round_trip_and_order() {
        let a = writelog_key(Timestamp::new(1, 2), 5, b"k");
        let b = writelog_key(Timestamp::new(1, 3), 1, b"a");
        assert!(a < b);
        assert_eq!(
            decode_writelog_key(&a),
            (Timestamp::new(1, 2), 5, &b"k"[..])
        );
    }
}
