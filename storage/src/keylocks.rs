//! Key ownership: first updater wins, losers queue on the key, and a hot key is free for the
//! next writer as soon as its writer's commit is sealed (early lock release).
//!
//! A unit of work claims every key it stages. Definitions and invariants:
//! - a key has at most one *owner*; only the owner may stage it;
//! - a *sealed* version is the value of a key in a commit that is queued to the committer and
//!   can no longer change. At the moment its commit is queued (under the queue mutex, so queue
//!   order is commit-timestamp order), the writer seals its keys: each becomes `pending` and
//!   free. A running claimer may take it at once; the first waiter is granted it then only if
//!   its turn has come (below), and is otherwise woken when the sealed commit is visible, if
//!   the key is still free. A claimer that gets a key with a pending version receives it as
//!   its *base* and must read the key from it instead of from its snapshot; its own commit is
//!   queued after the sealed one, so it commits later and sees it. If the sealed commit fails,
//!   the engine has failed and every later commit fails too, so nothing built on it lands.
//!   Keys of the catalog and keys claimed without being written are never sealed: they are held
//!   until the commit is visible;
//! - `last_commit` is the newest commit timestamp of a key, kept while any pinned snapshot could
//!   be older than it; a claimer whose read timestamp is older would overwrite a version it
//!   never saw, so its claim fails (WriteConflict with no owner to wait for: retry);
//! - a *blind* claim (a put after a plain read) never takes a pending base: the claimer may have
//!   read the key from its snapshot already; it waits instead and retries with the base. A
//!   claim *for update* (the claim before the read) takes the base;
//! - waiters queue FIFO and sleep; they never spin in retries. A key freed by a release, or
//!   by the visible commit of its seal, wakes the first waiter (a seal alone wakes no one, see
//!   [`KeyState::grant_if_turn`]), but a running claimer may take the key before the waiter
//!   has woken (*barging*, as in parking_lot's and the kernel's mutexes): a woken waiter that
//!   finds the key owned sleeps again at the head of the queue. Handing the key to a sleeping
//!   thread costs a thread switch per update, which on a hot document costs more than the
//!   update itself.
//!   Fairness is eventual: a first waiter that has waited `FAIR_HANDOFF_AFTER_US` is granted
//!   the key directly, once as long has passed since the last such grant, so no waiter
//!   starves: in a queue of `n`, a waiter has its turn within about `n` such intervals.
//!
//! The table is sharded by key hash; every operation takes exactly one shard mutex at a time.

use cairn_types::{Error, ErrorCode, Timestamp};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Identifies whoever owns a key: the retry loop of one operation (so that a key handed over
/// while it waited stays its own across attempts), or a lone unit of work.
pub(crate) type OwnerId = u64;

/// A sealed value: `None` for a delete.
pub(crate) type SealedValue = Option<Arc<Vec<u8>>>;

const SHARDS: usize = 64;
/// A first waiter that has waited this long is granted a freed key directly (no barging), if
/// as long has passed since the key's last direct grant.
const FAIR_HANDOFF_AFTER_US: u64 = 1_000;
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

#[derive(Debug, Default)]
struct Grant {
    /// The key was handed to this waiter: it owns it.
    granted: bool,
    /// The key became free: the waiter should try to take it.
    woken: bool,
    base: Option<SealedValue>,
}

#[derive(Debug)]
struct Waiter {
    owner: OwnerId,
    since: Instant,
    grant: Mutex<Grant>,
    wake: Condvar,
}

#[derive(Debug)]
struct Pending {
    /// The owner whose queued commit holds this version.
    sealed_by: OwnerId,
    value: SealedValue,
}

#[derive(Debug, Default)]
struct KeyState {
    owner: Option<OwnerId>,
    last_commit: Timestamp,
    pending: Option<Pending>,
    waiters: VecDeque<Arc<Waiter>>,
    /// When the key was last granted directly to a waiter (the start of its turn).
    last_grant: Option<Instant>,
}

impl KeyState {
    fn removable(&self, oldest_pin: Timestamp) -> bool {
        self.owner.is_none()
            && self.waiters.is_empty()
            && self.pending.is_none()
            && self.last_commit <= oldest_pin
    }

    /// The key has just become free: wakes the first waiter to take it, or, when that waiter
    /// has waited `FAIR_HANDOFF_AFTER_US` and as long has passed since the last direct grant,
    /// grants it the key directly with the pending version as its base. (Counting from the
    /// last grant too keeps a long queue from turning every release into a grant, and so into
    /// a thread switch per update: each waiter is then granted in turn, at most one per
    /// `FAIR_HANDOFF_AFTER_US`, as parking_lot's eventual fairness does.)
    fn hand_over(&mut self) {
        self.hand_over_or_wake(true);
    }

    /// A key sealed just now: granted directly to the first waiter if its turn has come (as in
    /// [`KeyState::hand_over`]), but no waiter is woken to take it. Under contention a running
    /// writer (one just told that its own commit is visible) usually claims the key first, as
    /// a lone writer would, before a waiter woken on the other CPU could run; that waiter then
    /// found the key owned and slept again, a futile wake-up and two thread switches per
    /// update. The first waiter is woken when the sealed commit is visible (`settle`), if the
    /// key is free then.
    fn grant_if_turn(&mut self) {
        self.hand_over_or_wake(false);
    }

    fn hand_over_or_wake(&mut self, wake: bool) {
        assert!(self.owner.is_none(), "only an unowned key is handed over");
        let Some(first) = self.waiters.front() else {
            return;
        };
        let turn = Duration::from_micros(FAIR_HANDOFF_AFTER_US);
        if first.since.elapsed() >= turn && self.last_grant.is_none_or(|at| at.elapsed() >= turn) {
            let waiter = self.waiters.pop_front().expect("a first waiter");
            self.last_grant = Some(Instant::now());
            self.owner = Some(waiter.owner);
            let mut grant = waiter.grant.lock();
            grant.granted = true;
            grant.base = self.pending.as_ref().map(|pending| pending.value.clone());
            waiter.wake.notify_one();
        } else if wake {
            let mut grant = first.grant.lock();
            grant.woken = true;
            first.wake.notify_one();
        }
    }
}

/// How a key is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimMode {
    /// Before writing, possibly after reading the key from the snapshot.
    Blind,
    /// Before reading the key: a pending version may be taken as the base.
    ForUpdate,
}

/// A successful claim.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// The key was not owned by the claimer before.
    pub newly: bool,
    /// The sealed version the claimer must read the key from (`Some(None)`: deleted).
    pub base: Option<SealedValue>,
}

/// Why a claim failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimConflict {
    /// Another unit owns the key, or a blind claim met a sealed version: wait for the key.
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

    /// Claims `id` for `owner`, whose snapshot is at `read_ts`.
    pub(crate) fn claim(
        &self,
        id: &KeyId,
        owner: OwnerId,
        read_ts: Timestamp,
        mode: ClaimMode,
    ) -> Result<Claimed, ClaimConflict> {
        let mut shard = self.shard(id).lock();
        let Some(state) = shard.get_mut(id) else {
            shard.insert(
                id.clone(),
                KeyState {
                    owner: Some(owner),
                    ..KeyState::default()
                },
            );
            return Ok(Claimed {
                newly: true,
                base: None,
            });
        };
        match state.owner {
            Some(current) if current == owner => return Ok(Claimed::default()),
            Some(_) => return Err(ClaimConflict::Owned),
            // Free: taken even when waiters sleep (barging, see the module's doc).
            None => {}
        }
        match (&state.pending, mode) {
            (Some(pending), ClaimMode::ForUpdate) => {
                let base = pending.value.clone();
                state.owner = Some(owner);
                Ok(Claimed {
                    newly: true,
                    base: Some(base),
                })
            }
            (Some(_), ClaimMode::Blind) => Err(ClaimConflict::Owned),
            (None, _) if state.last_commit > read_ts => Err(ClaimConflict::CommittedAfterRead),
            (None, _) => {
                state.owner = Some(owner);
                Ok(Claimed {
                    newly: true,
                    base: None,
                })
            }
        }
    }

    /// Releases keys held by `owner` and not sealed. `committed_at` is the commit timestamp
    /// when the owner committed (its writes are visible by now), `None` on abort. `oldest_pin`
    /// is the oldest pinned read timestamp (or `Timestamp::MAX` when none): entries no snapshot
    /// can be older than are dropped.
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
            state.hand_over();
            if state.removable(oldest_pin) {
                shard.remove(id);
            }
        }
    }

    /// Seals written keys when their commit is queued: each key gets its pending version and
    /// is free (granted to its first waiter only on the waiter's turn, see
    /// [`KeyState::grant_if_turn`]). Called under the commit queue's mutex.
    pub(crate) fn seal(&self, written: &[(KeyId, SealedValue)], owner: OwnerId) {
        for (id, value) in written {
            let mut shard = self.shard(id).lock();
            let state = shard.get_mut(id).expect("a written key was claimed");
            assert_eq!(
                state.owner,
                Some(owner),
                "key sealed by a unit that does not own it"
            );
            state.pending = Some(Pending {
                sealed_by: owner,
                value: value.clone(),
            });
            state.owner = None;
            state.grant_if_turn();
        }
    }

    /// The sealed commit of `owner` is done: visible at `committed_at`, or failed (`None`).
    /// A key that no one has claimed since it was sealed goes to its first waiter.
    pub(crate) fn settle<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a KeyId>,
        owner: OwnerId,
        committed_at: Option<Timestamp>,
        oldest_pin: Timestamp,
    ) {
        for id in ids {
            let mut shard = self.shard(id).lock();
            let state = shard
                .get_mut(id)
                .expect("a sealed key stays in the table until settled");
            if let Some(ts) = committed_at {
                state.last_commit = state.last_commit.max(ts);
            }
            if state
                .pending
                .as_ref()
                .is_some_and(|pending| pending.sealed_by == owner)
            {
                state.pending = None;
            }
            if state.owner.is_none() {
                state.hand_over();
            }
            if state.removable(oldest_pin) {
                shard.remove(id);
            }
        }
    }

    /// Waits until `owner` owns `id` (handed over, or free now). Returns the sealed version the
    /// owner must read the key from, if any. Calls `check` at least every 20 ms and gives up
    /// with its error, or with WriteConflict at `deadline`; on giving up the key is not owned.
    pub(crate) fn wait_for(
        &self,
        id: &KeyId,
        owner: OwnerId,
        deadline: Instant,
        check: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<Option<SealedValue>, Error> {
        let waiter = {
            let mut shard = self.shard(id).lock();
            let state = shard.entry(id.clone()).or_default();
            match state.owner {
                Some(current) if current == owner => return Ok(None),
                None => {
                    state.owner = Some(owner);
                    return Ok(state.pending.as_ref().map(|pending| pending.value.clone()));
                }
                Some(_) => {}
            }
            let waiter = Arc::new(Waiter {
                owner,
                since: Instant::now(),
                grant: Mutex::new(Grant::default()),
                wake: Condvar::new(),
            });
            state.waiters.push_back(waiter.clone());
            waiter
        };
        loop {
            let woken = {
                let mut grant = waiter.grant.lock();
                if !grant.granted && !grant.woken {
                    let now = Instant::now();
                    let slice = Duration::from_millis(WAIT_SLICE_MS)
                        .min(deadline.saturating_duration_since(now));
                    if !slice.is_zero() {
                        waiter.wake.wait_for(&mut grant, slice);
                    }
                }
                if grant.granted {
                    return Ok(grant.base.take());
                }
                std::mem::take(&mut grant.woken)
            };
            if woken {
                // Take the key if no one barged in; else sleep again, still first in line.
                let mut shard = self.shard(id).lock();
                let state = shard
                    .get_mut(id)
                    .expect("a key with a waiter stays in the table");
                let granted = waiter.grant.lock().granted;
                if granted {
                    drop(shard);
                    return Ok(waiter.grant.lock().base.take());
                }
                if state.owner.is_none() {
                    let position = state
                        .waiters
                        .iter()
                        .position(|w| Arc::ptr_eq(w, &waiter))
                        .expect("a waiter not granted is in the queue");
                    state.waiters.remove(position);
                    state.owner = Some(owner);
                    return Ok(state.pending.as_ref().map(|pending| pending.value.clone()));
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
            // It may have been woken for a free key it will not take: wake the next one.
            if state.owner.is_none() {
                state.hand_over();
            }
            return;
        }
        // Granted in the meantime: pass the key on.
        drop(shard);
        assert!(
            waiter.grant.lock().granted,
            "a waiter left the queue without being granted"
        );
        self.release(std::iter::once(id), waiter.owner, None, Timestamp::ZERO);
    }

    /// Drops entries that no live snapshot needs.
    pub(crate) fn sweep(&self, oldest_pin: Timestamp) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = shard.lock();
            let before = shard.len();
            shard.retain(|_, state| !state.removable(oldest_pin));
            removed += before - shard.len();
        }
        removed
    }

    /// Forgets every commit timestamp (after recovering to a stable timestamp, when nothing is
    /// in flight). Owned keys stay owned.
    pub(crate) fn forget_commits(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            for state in shard.values_mut() {
                state.last_commit = Timestamp::ZERO;
            }
            shard.retain(|_, state| !state.removable(Timestamp::ZERO));
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

    const BLIND: ClaimMode = ClaimMode::Blind;
    const FOR_UPDATE: ClaimMode = ClaimMode::ForUpdate;

    fn queue_length(locks: &KeyLocks, key: &str) -> usize {
        locks
            .shard(&id(key))
            .lock()
            .get(&id(key))
            .map_or(0, |state| state.waiters.len())
    }

    type WaitResult = Result<Option<SealedValue>, Error>;

    /// `owner` waiting for `key` on a thread of its own, queued (asleep or about to be) when
    /// this returns.
    fn queue_waiter(
        locks: &Arc<KeyLocks>,
        key: &'static str,
        owner: OwnerId,
    ) -> thread::JoinHandle<WaitResult> {
        let queued = queue_length(locks, key);
        let waiter = {
            let locks = locks.clone();
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                locks.wait_for(&id(key), owner, deadline, &mut || Ok(()))
            })
        };
        while queue_length(locks, key) == queued {
            thread::yield_now();
        }
        waiter
    }

    #[test]
    fn first_claimer_wins_and_release_hands_over_in_order() {
        let locks = Arc::new(KeyLocks::new());
        let ts = Timestamp::new(1, 1);
        assert!(locks.claim(&id("a"), 1, ts, BLIND).unwrap().newly);
        assert!(!locks.claim(&id("a"), 1, ts, BLIND).unwrap().newly);
        assert_eq!(
            locks.claim(&id("a"), 2, ts, BLIND).unwrap_err(),
            ClaimConflict::Owned
        );
        assert!(locks.claim(&id("b"), 2, ts, BLIND).unwrap().newly);

        let waiter = queue_waiter(&locks, "a", 2);
        locks.release([&id("a")], 1, Some(Timestamp::new(2, 1)), Timestamp::MAX);
        assert_eq!(
            waiter.join().unwrap().unwrap(),
            None,
            "no sealed version to read"
        );
        assert!(
            !locks
                .claim(&id("a"), 2, Timestamp::new(2, 1), BLIND)
                .unwrap()
                .newly
        );
        assert_eq!(
            locks
                .claim(&id("a"), 3, Timestamp::new(2, 1), BLIND)
                .unwrap_err(),
            ClaimConflict::Owned
        );
        locks.release([&id("a"), &id("b")], 2, None, Timestamp::MAX);
    }

    #[test]
    fn a_claim_older_than_the_last_commit_conflicts() {
        let locks = KeyLocks::new();
        locks
            .claim(&id("a"), 1, Timestamp::new(1, 0), BLIND)
            .unwrap();
        // A snapshot at 1 is still pinned: the entry must stay.
        locks.release(
            [&id("a")],
            1,
            Some(Timestamp::new(5, 0)),
            Timestamp::new(1, 0),
        );
        assert_eq!(
            locks
                .claim(&id("a"), 2, Timestamp::new(4, 0), FOR_UPDATE)
                .unwrap_err(),
            ClaimConflict::CommittedAfterRead
        );
        assert!(
            locks
                .claim(&id("a"), 2, Timestamp::new(5, 0), BLIND)
                .unwrap()
                .newly
        );
        locks.release([&id("a")], 2, None, Timestamp::new(1, 0));
        assert_eq!(locks.sweep(Timestamp::new(5, 0)), 1);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn a_sealed_key_passes_on_with_its_value_as_the_base() {
        let locks = KeyLocks::new();
        let ts = Timestamp::new(1, 0);
        locks.claim(&id("hot"), 1, ts, FOR_UPDATE).unwrap();
        let sealed = Some(Arc::new(b"v1".to_vec()));
        locks.seal(&[(id("hot"), sealed.clone())], 1);
        // A blind claimer might have read the old value: it must wait (and then gets the base).
        assert_eq!(
            locks.claim(&id("hot"), 2, ts, BLIND).unwrap_err(),
            ClaimConflict::Owned
        );
        let base = locks.wait_for(
            &id("hot"),
            2,
            Instant::now() + Duration::from_secs(1),
            &mut || Ok(()),
        );
        assert_eq!(base.unwrap(), Some(sealed.clone()));
        // Owner 2 seals a delete; owner 3 claims for update and reads the delete.
        locks.seal(&[(id("hot"), None)], 2);
        let claimed = locks.claim(&id("hot"), 3, ts, FOR_UPDATE).unwrap();
        assert_eq!(claimed.base, Some(None));
        // The first commit settles: the pending version is owner 2's, which stays.
        locks.settle([&id("hot")], 1, Some(Timestamp::new(2, 0)), Timestamp::MAX);
        locks.release([&id("hot")], 3, None, Timestamp::MAX);
        assert_eq!(
            locks
                .claim(&id("hot"), 4, Timestamp::new(2, 0), FOR_UPDATE)
                .unwrap()
                .base,
            Some(None)
        );
        locks.release([&id("hot")], 4, None, Timestamp::MAX);
        locks.settle([&id("hot")], 2, Some(Timestamp::new(3, 0)), Timestamp::MAX);
        assert_eq!(
            locks.len(),
            0,
            "settled, unowned, no snapshot older: forgotten"
        );
    }

    /// Key "hot" claimed by owner 1 at `ts`, and owner 2 asleep in its queue.
    fn hot_key_with_a_waiter(ts: Timestamp) -> (Arc<KeyLocks>, thread::JoinHandle<WaitResult>) {
        let locks = Arc::new(KeyLocks::new());
        locks.claim(&id("hot"), 1, ts, FOR_UPDATE).unwrap();
        let waiter = queue_waiter(&locks, "hot", 2);
        (locks, waiter)
    }

    fn owner_of(locks: &KeyLocks, key: &str) -> Option<OwnerId> {
        locks
            .shard(&id(key))
            .lock()
            .get(&id(key))
            .and_then(|state| state.owner)
    }

    /// A seal frees the key for a running claimer but wakes no waiter (which would find the
    /// key taken again and sleep, a futile wake-up per update); the first waiter gets the key
    /// once the sealed commit is visible, if no one has claimed it meanwhile.
    #[test]
    fn a_seal_wakes_no_waiter_until_its_commit_is_visible() {
        let ts = Timestamp::new(1, 1);
        let (locks, waiter) = hot_key_with_a_waiter(ts);
        // The waiter's turn does not come during the test: the last direct grant is (said to
        // be) in the future, so the time since it stays zero.
        locks
            .shard(&id("hot"))
            .lock()
            .get_mut(&id("hot"))
            .unwrap()
            .last_grant = Some(Instant::now() + Duration::from_secs(60));
        locks.seal(&[(id("hot"), Some(Arc::new(b"v1".to_vec())))], 1);
        // Long enough for a woken waiter to have taken the free key.
        thread::sleep(Duration::from_millis(50));
        assert_eq!(queue_length(&locks, "hot"), 1, "the waiter still waits");
        assert_eq!(owner_of(&locks, "hot"), None, "the sealed key is free");
        // The commit is visible and no one took the key: it goes to the waiter, with no base
        // (the version is visible: the waiter's retry reads it from its new snapshot).
        locks.settle([&id("hot")], 1, Some(Timestamp::new(2, 0)), Timestamp::MAX);
        assert_eq!(waiter.join().unwrap().unwrap(), None);
        assert_eq!(owner_of(&locks, "hot"), Some(2));
    }

    /// A freed key may be taken by a running claimer before the woken waiter runs; the waiter
    /// then gets it at the next release. A waiter that has waited `FAIR_HANDOFF_AFTER_US` is
    /// granted a freed key directly, and a claimer can no longer barge in.
    #[test]
    fn a_running_claimer_may_barge_until_the_first_waiter_has_waited_long() {
        let ts = Timestamp::new(1, 1);
        let (locks, waiter) = hot_key_with_a_waiter(ts);
        // Released while the waiter is fresh: woken, not granted, and owner 3 barges in
        // (unless the waiter was quicker, which the release below then leaves to it).
        locks.release([&id("hot")], 1, None, Timestamp::MAX);
        let barged = locks.claim(&id("hot"), 3, ts, FOR_UPDATE).is_ok();
        if barged {
            std::thread::sleep(Duration::from_micros(2 * FAIR_HANDOFF_AFTER_US));
            assert_eq!(queue_length(&locks, "hot"), 1, "the waiter sleeps again");
            // Now the waiter has waited long: the release grants it the key directly.
            locks.release([&id("hot")], 3, None, Timestamp::MAX);
            assert_eq!(
                locks.claim(&id("hot"), 4, ts, FOR_UPDATE).unwrap_err(),
                ClaimConflict::Owned,
                "no barging past a waiter that waited long"
            );
        }
        assert_eq!(waiter.join().unwrap().unwrap(), None);
        assert!(!locks.claim(&id("hot"), 2, ts, FOR_UPDATE).unwrap().newly);
        locks.release([&id("hot")], 2, None, Timestamp::MAX);
        assert_eq!(locks.len(), 0);
    }

    /// Frees `key`, owned by `owner`, as a release does, and returns whom it went to right
    /// away (under the shard's lock, so no woken waiter can have taken it yet).
    fn free_and_see_owner(locks: &KeyLocks, key: &str, owner: OwnerId) -> Option<OwnerId> {
        let mut shard = locks.shard(&id(key)).lock();
        let state = shard.get_mut(&id(key)).expect("a claimed key");
        assert_eq!(state.owner, Some(owner));
        state.owner = None;
        state.hand_over();
        state.owner
    }

    /// In a queue of waiters that have all waited long, a direct grant happens at most once
    /// per `FAIR_HANDOFF_AFTER_US`: in between, a freed key is only offered (barging allowed),
    /// so a long queue does not make every release a thread switch.
    #[test]
    fn direct_grants_take_turns_at_most_one_per_interval() {
        let locks = Arc::new(KeyLocks::new());
        let ts = Timestamp::new(1, 1);
        locks.claim(&id("hot"), 1, ts, FOR_UPDATE).unwrap();
        let second = queue_waiter(&locks, "hot", 2);
        let third = queue_waiter(&locks, "hot", 3);
        std::thread::sleep(Duration::from_micros(2 * FAIR_HANDOFF_AFTER_US));
        assert_eq!(
            free_and_see_owner(&locks, "hot", 1),
            Some(2),
            "the first waiter waited long: granted"
        );
        // Freed again at once, as the granted waiter would after a short update.
        assert_eq!(
            free_and_see_owner(&locks, "hot", 2),
            None,
            "the next waiter waited long too, but its turn has not come: only woken"
        );
        // A claimer comes by while the woken waiter is on its way. Which of the two gets the
        // key is a race, and each outcome is checked.
        if locks.claim(&id("hot"), 4, ts, FOR_UPDATE).is_ok() {
            // The claimer barged in; once the interval has passed, freeing grants the key to
            // the waiter.
            std::thread::sleep(Duration::from_micros(2 * FAIR_HANDOFF_AFTER_US));
            assert_eq!(
                free_and_see_owner(&locks, "hot", 4),
                Some(3),
                "its turn now"
            );
        } else {
            // The woken waiter claimed the key first: it owns it, and the claimer did not
            // join the queue.
            let shard = locks.shard(&id("hot")).lock();
            let state = shard.get(&id("hot")).expect("a claimed key");
            assert_eq!(state.owner, Some(3), "the woken waiter took the key");
            assert!(state.waiters.is_empty(), "a failed claim does not wait");
        }
        assert_eq!(second.join().unwrap().unwrap(), None);
        assert_eq!(third.join().unwrap().unwrap(), None);
        locks.release([&id("hot")], 3, None, Timestamp::MAX);
        assert_eq!(locks.len(), 0);
    }

    #[test]
    fn a_cancelled_waiter_leaves_the_queue_and_passes_a_grant_on() {
        let locks = KeyLocks::new();
        locks.claim(&id("a"), 1, Timestamp::ZERO, BLIND).unwrap();
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
        assert_eq!(queue_length(&locks, "a"), 0);
        locks.release([&id("a")], 1, None, Timestamp::MAX);
        assert_eq!(locks.len(), 0);
    }
}
