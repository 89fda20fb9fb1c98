//! Key ownership: first updater wins, and losers queue on the key instead of spinning.
//!
//! A unit of work claims every key it stages. Invariants:
//! - a key has at most one owner; the owner keeps it until its commit is *visible* (or it
//!   aborts), so a later writer that claims the key always reads the committed version;
//! - `last_commit` is the newest commit timestamp of a key, kept while any pinned snapshot could
//!   be older than it; a writer whose read timestamp is older than `last_commit` would overwrite
//!   a version it never saw, so its claim fails (WriteConflict, no owner to wait for);
//! - waiters queue FIFO; on release the key passes directly to the first waiter's owner token
//!   (handoff), so a hot document is served in arrival order and throughput does not collapse
//!   into retry storms.
//!
//! The table is sharded by key hash; every operation takes exactly one shard mutex.

use cairn_types::{Error, ErrorCode, Timestamp};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Identifies whoever owns a key: a unit of work, or the retry loop of one operation (so that a
/// key handed over while the operation waited stays its own across attempts).
pub(crate) type OwnerId = u64;

const SHARDS: usize = 64;
/// A waiter wakes at least this often to check for interruption.
const WAIT_SLICE_MS: u64 = 20;

/// A key of a table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KeyId {
    pub ident: u64,
    pub key: Box<[u8]>,
}

impl KeyId {
    pub(crate) fn new(ident: u64, key: &[u8]) -> KeyId {
        KeyId {
            ident,
            key: key.into(),
        }
    }
}

#[derive(Debug)]
struct Waiter {
    owner: OwnerId,
    granted: Mutex<bool>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct KeyState {
    owner: Option<OwnerId>,
    last_commit: Timestamp,
    waiters: VecDeque<Arc<Waiter>>,
}

/// Why a claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimConflict {
    /// Another unit of work owns the key: wait for it.
    Owned,
    /// The key was committed after the claimer's read timestamp: retry with a new snapshot.
    CommittedAfterRead,
}

type Shard = Mutex<HashMap<KeyId, KeyState, ahash::RandomState>>;

/// The key ownership table.
#[derive(Debug)]
pub(crate) struct KeyLocks {
    shards: Vec<Shard>,
    hasher: ahash::RandomState,
}

impl KeyLocks {
    pub(crate) fn new() -> KeyLocks {
        // Fixed seeds: the shard of a key is the same in every run (simulation replays).
        let seeded = || ahash::RandomState::with_seeds(1, 2, 3, 4);
        KeyLocks {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(seeded())))
                .collect(),
            hasher: seeded(),
        }
    }

    fn shard(&self, id: &KeyId) -> &Shard {
        let mut hasher = self.hasher.build_hasher();
        id.hash(&mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        &self.shards[(hash as usize) % SHARDS]
    }

    /// Claims `id` for `owner`, whose snapshot is at `read_ts`. Ok(true) when newly claimed,
    /// Ok(false) when the owner already held it.
    pub(crate) fn claim(
        &self,
        id: &KeyId,
        owner: OwnerId,
        read_ts: Timestamp,
    ) -> Result<bool, ClaimConflict> {
        let mut shard = self.shard(id).lock();
        let state = match shard.get_mut(id) {
            Some(state) => state,
            None => {
                shard.insert(
                    id.clone(),
                    KeyState {
                        owner: Some(owner),
                        ..KeyState::default()
                    },
                );
                return Ok(true);
            }
        };
        match state.owner {
            Some(current) if current == owner => Ok(false),
            Some(_) => Err(ClaimConflict::Owned),
            None if state.last_commit > read_ts => Err(ClaimConflict::CommittedAfterRead),
            None if !state.waiters.is_empty() => Err(ClaimConflict::Owned),
            None => {
                state.owner = Some(owner);
                Ok(true)
            }
        }
    }

    /// Releases keys held by `owner`. `committed_at` is the commit timestamp when the owner
    /// committed (its writes are visible by now), `None` on abort. `oldest_pin` is the oldest
    /// pinned read timestamp (or `Timestamp::MAX` when none): entries no snapshot can be older
    /// than are dropped.
    pub(crate) fn release<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a KeyId>,
        owner: OwnerId,
        committed_at: Option<Timestamp>,
        oldest_pin: Timestamp,
    ) {
        for id in ids {
            let mut shard = self.shard(id).lock();
            let Some(state) = shard.get_mut(id) else {
                panic!("released key {id:?} that was never claimed");
            };
            assert_eq!(
                state.owner,
                Some(owner),
                "key released by a unit that does not own it"
            );
            if let Some(ts) = committed_at {
                state.last_commit = state.last_commit.max(ts);
            }
            state.owner = None;
            if let Some(waiter) = state.waiters.pop_front() {
                state.owner = Some(waiter.owner);
                let mut granted = waiter.granted.lock();
                *granted = true;
                waiter.wake.notify_one();
            } else if state.last_commit <= oldest_pin {
                shard.remove(id);
            }
        }
    }

    /// Waits until `owner` owns `id` (handed over by the previous owner, or free now). Calls
    /// `check` at least every 20 ms and gives up with its error, or with WriteConflict at
    /// `deadline`; on giving up the key is not owned.
    pub(crate) fn wait_for(
        &self,
        id: &KeyId,
        owner: OwnerId,
        deadline: Instant,
        check: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let waiter = {
            let mut shard = self.shard(id).lock();
            let state = shard.entry(id.clone()).or_default();
            match state.owner {
                Some(current) if current == owner => return Ok(()),
                None if state.waiters.is_empty() => {
                    state.owner = Some(owner);
                    return Ok(());
                }
                _ => {}
            }
            let waiter = Arc::new(Waiter {
                owner,
                granted: Mutex::new(false),
                wake: Condvar::new(),
            });
            state.waiters.push_back(waiter.clone());
            waiter
        };
        loop {
            {
                let mut granted = waiter.granted.lock();
                if *granted {
                    return Ok(());
                }
                let now = Instant::now();
                let slice = Duration::from_millis(WAIT_SLICE_MS)
                    .min(deadline.saturating_duration_since(now));
                if !slice.is_zero() {
                    waiter.wake.wait_for(&mut granted, slice);
                }
                if *granted {
                    return Ok(());
                }
            }
            let failure = match check() {
                Err(error) => Some(error),
                Ok(()) if Instant::now() >= deadline => Some(Error::new(
                    ErrorCode::WriteConflict,
                    "timed out waiting for a write conflict on a hot document to clear",
                )),
                Ok(()) => None,
            };
            if let Some(error) = failure {
                self.cancel_wait(id, &waiter);
                return Err(error);
            }
        }
    }

    fn cancel_wait(&self, id: &KeyId, waiter: &Arc<Waiter>) {
        let mut shard = self.shard(id).lock();
        let state = shard
            .get_mut(id)
            .expect("a key with a waiter stays in the table");
        if let Some(position) = state.waiters.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            state.waiters.remove(position);
            return;
        }
        // Granted in the meantime: pass the key on.
        drop(shard);
        assert!(
            *waiter.granted.lock(),
            "a waiter left the queue without being granted"
        );
        self.release(std::iter::once(id), waiter.owner, None, Timestamp::ZERO);
    }

    /// Drops entries that no live snapshot needs: unowned, no waiters, committed at or before
    /// `oldest_pin`.
    pub(crate) fn sweep(&self, oldest_pin: Timestamp) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock();
            let before = shard.len();
            shard.retain(|_, state| {
                state.owner.is_some() || !state.waiters.is_empty() || state.last_commit > oldest_pin
            });
            removed += before - shard.len();
        }
        removed
    }

    /// Forgets every commit timestamp (after recovering to a stable timestamp, when nothing is
    /// in flight). Owned keys stay owned.
    pub(crate) fn forget_commits(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard.retain(|_, state| state.owner.is_some() || !state.waiters.is_empty());
            for state in shard.values_mut() {
                state.last_commit = Timestamp::ZERO;
            }
        }
    }

    /// Number of tracked keys (for statistics).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn id(key: &str) -> KeyId {
        KeyId::new(1, key.as_bytes())
    }

    #[test]
    fn first_claimer_wins_and_release_hands_over_in_order() {
        let locks = Arc::new(KeyLocks::new());
        let ts = Timestamp::new(1, 1);
        assert_eq!(locks.claim(&id("a"), 1, ts), Ok(true));
        assert_eq!(locks.claim(&id("a"), 1, ts), Ok(false));
        assert_eq!(locks.claim(&id("a"), 2, ts), Err(ClaimConflict::Owned));
        assert_eq!(locks.claim(&id("b"), 2, ts), Ok(true));

        let waiter = {
            let locks = locks.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                locks.wait_for(&id("a"), 2, deadline, &mut || Ok(()))
            })
        };
        // Let the waiter queue, then commit.
        while locks
            .shard(&id("a"))
            .lock()
            .get(&id("a"))
            .unwrap()
            .waiters
            .is_empty()
        {
            thread::yield_now();
        }
        locks.release([&id("a")], 1, Some(Timestamp::new(2, 1)), Timestamp::MAX);
        waiter.join().unwrap().unwrap();
        // Handed over: owner 2 holds it, a third claimer conflicts.
        assert_eq!(locks.claim(&id("a"), 2, Timestamp::new(2, 1)), Ok(false));
        assert_eq!(
            locks.claim(&id("a"), 3, Timestamp::new(2, 1)),
            Err(ClaimConflict::Owned)
        );
        locks.release([&id("a"), &id("b")], 2, None, Timestamp::MAX);
    }

    #[test]
    fn a_claim_older_than_the_last_commit_conflicts() {
        let locks = KeyLocks::new();
        locks.claim(&id("a"), 1, Timestamp::new(1, 0)).unwrap();
        // A snapshot at 1 is still pinned: the entry must stay.
        locks.release(
            [&id("a")],
            1,
            Some(Timestamp::new(5, 0)),
            Timestamp::new(1, 0),
        );
        assert_eq!(
            locks.claim(&id("a"), 2, Timestamp::new(4, 0)),
            Err(ClaimConflict::CommittedAfterRead)
        );
        assert_eq!(locks.claim(&id("a"), 2, Timestamp::new(5, 0)), Ok(true));
        locks.release([&id("a")], 2, None, Timestamp::new(1, 0));
        assert_eq!(locks.sweep(Timestamp::new(5, 0)), 1);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn a_cancelled_waiter_leaves_the_queue_and_passes_a_grant_on() {
        let locks = KeyLocks::new();
        locks.claim(&id("a"), 1, Timestamp::ZERO).unwrap();
        let deadline = Instant::now() + Duration::from_millis(30);
        let error = locks
            .wait_for(&id("a"), 2, deadline, &mut || Ok(()))
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::WriteConflict);
        let error = locks
            .wait_for(
                &id("a"),
                3,
                Instant::now() + Duration::from_secs(5),
                &mut || Err(Error::new(ErrorCode::Interrupted, "killed")),
            )
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Interrupted);
        assert!(
            locks
                .shard(&id("a"))
                .lock()
                .get(&id("a"))
                .unwrap()
                .waiters
                .is_empty()
        );
        locks.release([&id("a")], 1, None, Timestamp::MAX);
        assert_eq!(locks.len(), 0);
    }
}
