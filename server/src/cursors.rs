//! Server cursors: what `find` and `aggregate` leave open for `getMore`.
//!
//! A cursor is checked out while a getMore runs (a second concurrent getMore gets CursorInUse
//! 143), belongs to one namespace, and is closed after `cursorTimeoutMillis` (10 minutes) idle
//! unless it was opened with `noCursorTimeout`. Cursor ids are positive, never 0 (0 means
//! "exhausted" in replies), and not reused.

use crate::opctx::OpCtx;
use bson::Document;
use cairn_types::{Error, ErrorCode, Result};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// What a cursor produces batches from.
pub trait CursorSource: Send {
    /// Up to `batch_size` documents (all when `None`) and at most about 16 MiB; `true` when the
    /// source is exhausted.
    fn next_batch(
        &mut self,
        opctx: &OpCtx<'_>,
        batch_size: Option<u64>,
    ) -> Result<(Vec<Document>, bool)>;

    /// The plan summary for currentOp, if any.
    fn plan_summary(&self) -> Option<String> {
        None
    }
}

/// A batch of documents from plain memory (listCollections, listIndexes, small results).
pub struct VecSource {
    documents: std::vec::IntoIter<Document>,
}

impl VecSource {
    pub fn new(documents: Vec<Document>) -> VecSource {
        VecSource {
            documents: documents.into_iter(),
        }
    }
}

/// Bytes a reply batch may hold (MongoDB: 16 MiB of documents per batch).
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

impl CursorSource for VecSource {
    fn next_batch(
        &mut self,
        _opctx: &OpCtx<'_>,
        batch_size: Option<u64>,
    ) -> Result<(Vec<Document>, bool)> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let limit = batch_size.unwrap_or(u64::MAX);
        while (batch.len() as u64) < limit {
            let Some(next) = self.documents.as_slice().first() else {
                break;
            };
            let size = bson::serialize_to_vec(next).map(|b| b.len()).unwrap_or(0);
            if !batch.is_empty() && bytes + size > BATCH_BYTES_MAX {
                break;
            }
            bytes += size;
            batch.push(self.documents.next().expect("peeked"));
        }
        let exhausted = self.documents.as_slice().is_empty();
        Ok((batch, exhausted))
    }
}

struct Entry {
    ns: String,
    /// `None` while checked out by a getMore.
    source: Option<Box<dyn CursorSource>>,
    last_used: Instant,
    no_timeout: bool,
}

/// The node's open cursors.
pub struct CursorManager {
    cursors: Mutex<HashMap<i64, Entry>>,
    next_id: AtomicI64,
    timeout: Duration,
}

/// The outcome of killCursors.
#[derive(Debug, Default, PartialEq)]
pub struct KillOutcome {
    pub killed: Vec<i64>,
    pub not_found: Vec<i64>,
    pub alive: Vec<i64>,
}

impl CursorManager {
    pub fn new(timeout_ms: u64) -> CursorManager {
        // Ids start from the wall clock so that a restarted node does not hand out the ids of
        // its previous life to clients that still hold them.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as i64)
            .unwrap_or(1)
            .rem_euclid(1 << 52)
            + 1;
        CursorManager {
            cursors: Mutex::new(HashMap::new()),
            next_id: AtomicI64::new(seed),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// Registers an open cursor; returns its id.
    pub fn register(&self, ns: String, source: Box<dyn CursorSource>, no_timeout: bool) -> i64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        assert!(id > 0, "cursor ids are positive");
        self.cursors.lock().insert(
            id,
            Entry {
                ns,
                source: Some(source),
                last_used: Instant::now(),
                no_timeout,
            },
        );
        id
    }

    /// Takes a cursor out for a getMore on `ns`.
    pub fn check_out(&self, id: i64, ns: &str) -> Result<Box<dyn CursorSource>> {
        let mut cursors = self.cursors.lock();
        let Some(entry) = cursors.get_mut(&id) else {
            return Err(Error::new(
                ErrorCode::CursorNotFound,
                format!("cursor id {id} not found"),
            ));
        };
        if entry.ns != ns {
            return Err(Error::new(
                ErrorCode::Unauthorized,
                format!(
                    "Requested getMore on namespace '{ns}', but cursor belongs to a different namespace {}",
                    entry.ns
                ),
            ));
        }
        entry.source.take().ok_or_else(|| {
            Error::new(
                ErrorCode::CursorInUse,
                format!("cursor id {id} is already in use"),
            )
        })
    }

    /// Puts a cursor back after a getMore that left it open.
    pub fn check_in(&self, id: i64, source: Box<dyn CursorSource>) {
        if let Some(entry) = self.cursors.lock().get_mut(&id) {
            entry.source = Some(source);
            entry.last_used = Instant::now();
        }
    }

    /// Forgets a cursor (exhausted, failed or killed).
    pub fn remove(&self, id: i64) {
        self.cursors.lock().remove(&id);
    }

    /// killCursors on `ns`.
    pub fn kill(&self, ns: &str, ids: &[i64]) -> KillOutcome {
        let mut outcome = KillOutcome::default();
        let mut cursors = self.cursors.lock();
        for &id in ids {
            match cursors.get(&id) {
                Some(entry) if entry.ns == ns => {
                    cursors.remove(&id);
                    outcome.killed.push(id);
                }
                _ => outcome.not_found.push(id),
            }
        }
        outcome
    }

    /// Closes cursors idle for longer than the timeout; returns how many.
    pub fn reap(&self) -> usize {
        let mut cursors = self.cursors.lock();
        let before = cursors.len();
        let timeout = self.timeout;
        cursors.retain(|_, entry| {
            entry.no_timeout || entry.source.is_none() || entry.last_used.elapsed() < timeout
        });
        before - cursors.len()
    }

    pub fn close_all(&self) {
        self.cursors.lock().clear();
    }

    /// Open cursors: `(total, noTimeout)`.
    pub fn counts(&self) -> (u64, u64) {
        let cursors = self.cursors.lock();
        let no_timeout = cursors.values().filter(|entry| entry.no_timeout).count();
        (cursors.len() as u64, no_timeout as u64)
    }
}
