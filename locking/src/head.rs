//! The grant and queue logic of one resource, as a state machine without threads or time.
//!
//! Owns: [`HeadState`], the granted requests (with their conversions) and the FIFO queue of one
//! resource, and every decision about who gets the lock: an immediate grant, a conversion, the
//! batch granted when a holder leaves. The manager wraps a `HeadState` in a mutex and wakes the
//! owners of the [`Grant`]s it returns; the model tests drive it directly against a naive oracle.
//!
//! Rules (MongoDB's, `lock_manager.cpp`):
//! - A new request is granted at once when its mode is compatible with every granted mode and
//!   with every waiting mode (queued requests and conversion targets); otherwise it queues at the
//!   back (or, with `enqueue_at_front`, at the front, and then only granted modes and conversion
//!   targets are checked). Because a newcomer is granted past a waiter only when it is
//!   compatible with that waiter, a waiting X is never overtaken forever.
//! - A conversion (an allowed upgrade of a granted request) jumps the queue: it is granted at once
//!   when its new mode is compatible with the other granted modes, and it is retried before the
//!   queue on every change.
//! - When the granted set shrinks, waiting conversions are granted first, then the queue is
//!   granted from the front while each request is compatible with the granted modes and the
//!   remaining conversion targets; the first that is not stops the batch (strict FIFO).
//!
//! Intent grants made on the manager's fast path (IS/IX without this state's mutex, see
//! `manager.rs`) are not requests here; every method takes them as `external`, the set of modes
//! they hold, and treats them as granted.
//!
//! Invariants (asserted on every grant, in release builds too): every pair of granted modes is
//! compatible, counting the external ones. Checked by [`HeadState::check_invariants`] (O(n), used by tests): the counts match
//! the requests, and no waiter is left that the rules would grant now.

use crate::mode::{LOCK_MODES, LockMode, conflicts_with_any};
use std::collections::VecDeque;

/// Who made a request: the manager uses its per-operation shared state, the model tests a number.
pub(crate) trait Owner: Clone {
    /// Identifies the owner in invariant checks.
    #[cfg_attr(not(test), allow(dead_code))]
    fn owner_id(&self) -> u64;
}

impl Owner for u64 {
    fn owner_id(&self) -> u64 {
        *self
    }
}

/// A granted request. `convert` is set while the holder waits to upgrade it.
#[derive(Clone, Debug)]
pub(crate) struct GrantedRequest<O> {
    pub owner: O,
    pub mode: LockMode,
    pub convert: Option<LockMode>,
    pub enqueue_at_front: bool,
}

/// A queued request.
#[derive(Clone, Debug)]
pub(crate) struct PendingRequest<O> {
    pub request_id: u64,
    pub owner: O,
    pub mode: LockMode,
    pub enqueue_at_front: bool,
}

/// What happened to a new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestOutcome {
    /// Granted at once; the request lives in this granted slot.
    Granted { slot: usize },
    /// Queued; a later [`Grant::New`] with this id reports the grant.
    Queued { request_id: u64 },
}

/// What happened to a conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvertOutcome {
    Granted,
    Waiting,
}

/// What a waiter is waiting for, to find its request again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitRef {
    Request { request_id: u64 },
    Conversion { slot: usize },
}

/// A grant made while the granted set changed: the manager wakes `owner`.
#[derive(Clone, Debug)]
pub(crate) enum Grant<O> {
    New {
        owner: O,
        request_id: u64,
        slot: usize,
    },
    Conversion {
        owner: O,
        slot: usize,
    },
}

#[cfg(test)]
impl<O> Grant<O> {
    pub fn owner(&self) -> &O {
        match self {
            Grant::New { owner, .. } | Grant::Conversion { owner, .. } => owner,
        }
    }
}

/// A vector of optional entries with stable indices and a free list.
#[derive(Clone, Debug)]
struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Slab<T> {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(index) => {
                assert!(
                    self.entries[index].is_none(),
                    "free slab slot {index} is occupied"
                );
                self.entries[index] = Some(value);
                index
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, index: usize) -> T {
        let value = self.entries[index]
            .take()
            .expect("removing an empty slab slot");
        self.free.push(index);
        self.len -= 1;
        value
    }

    fn get(&self, index: usize) -> Option<&T> {
        self.entries.get(index).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.entries.get_mut(index).and_then(Option::as_mut)
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| entry.as_ref().map(|e| (index, e)))
    }
}

/// The state of one resource's lock.
#[derive(Clone, Debug)]
pub(crate) struct HeadState<O> {
    granted: Slab<GrantedRequest<O>>,
    /// Granted requests per mode (a converting request counts in its current mode).
    granted_counts: [u32; LOCK_MODES],
    /// Slots of granted requests waiting to convert, oldest first.
    converting: Vec<usize>,
    pending: VecDeque<PendingRequest<O>>,
    /// Queued requests per mode.
    pending_counts: [u32; LOCK_MODES],
    next_request_id: u64,
}

impl<O: Owner> Default for HeadState<O> {
    fn default() -> Self {
        HeadState::new()
    }
}

impl<O: Owner> HeadState<O> {
    pub fn new() -> HeadState<O> {
        HeadState {
            granted: Slab::new(),
            granted_counts: [0; LOCK_MODES],
            converting: Vec::new(),
            pending: VecDeque::new(),
            pending_counts: [0; LOCK_MODES],
            next_request_id: 1,
        }
    }

    /// True when nobody holds or waits for this resource.
    pub fn is_idle(&self) -> bool {
        self.granted.len == 0 && self.pending.is_empty()
    }

    fn mask(counts: &[u32; LOCK_MODES]) -> u8 {
        let mut bits = 0;
        for mode in LockMode::ALL {
            if counts[mode.index()] > 0 {
                bits |= mode.bit();
            }
        }
        bits
    }

    /// The granted modes, as bits.
    pub fn granted_mask(&self) -> u8 {
        Self::mask(&self.granted_counts)
    }

    /// True when intent requests may be granted without this state: nothing but IS and IX is
    /// granted and nobody waits.
    pub fn is_quiet(&self) -> bool {
        self.pending.is_empty()
            && self.converting.is_empty()
            && self.granted_mask() & (LockMode::S.bit() | LockMode::X.bit()) == 0
    }

    fn conversion_targets_mask(&self) -> u8 {
        let mut bits = 0;
        for &slot in &self.converting {
            let entry = self.granted.get(slot).expect("converting slot is granted");
            bits |= entry.convert.expect("converting slot has a target").bit();
        }
        bits
    }

    /// The granted modes without one request's own contribution, plus `external`.
    fn granted_mask_without(&self, slot: usize, external: u8) -> u8 {
        let own = self.granted.get(slot).expect("granted slot").mode;
        let mut counts = self.granted_counts;
        counts[own.index()] -= 1;
        Self::mask(&counts) | external
    }

    /// Grants a request: the one place a new granted entry is made. Asserts the matrix against
    /// the granted requests and the `external` modes (intent grants made outside this state).
    fn grant_new(
        &mut self,
        owner: O,
        mode: LockMode,
        enqueue_at_front: bool,
        external: u8,
    ) -> usize {
        let granted = self.granted_mask() | external;
        assert!(
            !conflicts_with_any(mode, granted),
            "lock matrix violated: granting {mode} while {granted:04b} is granted"
        );
        self.granted_counts[mode.index()] += 1;
        self.granted.insert(GrantedRequest {
            owner,
            mode,
            convert: None,
            enqueue_at_front,
        })
    }

    /// Changes a granted request's mode: the one place a conversion is applied. Asserts the
    /// matrix against the other granted requests.
    fn apply_conversion(&mut self, slot: usize, to: LockMode, external: u8) {
        let others = self.granted_mask_without(slot, external);
        assert!(
            !conflicts_with_any(to, others),
            "lock matrix violated: converting to {to} while {others:04b} is granted to others"
        );
        let entry = self.granted.get_mut(slot).expect("granted slot");
        let from = entry.mode;
        assert!(
            from.can_upgrade_to(to),
            "conversion {from}->{to} is not an upgrade"
        );
        entry.mode = to;
        entry.convert = None;
        self.granted_counts[from.index()] -= 1;
        self.granted_counts[to.index()] += 1;
    }

    /// A new request by an owner that holds nothing here. `external`: the modes granted outside
    /// this state (the intent fast path), as bits; the same in every method below.
    pub fn request(
        &mut self,
        owner: O,
        mode: LockMode,
        enqueue_at_front: bool,
        external: u8,
    ) -> RequestOutcome {
        let mut blocking = self.granted_mask() | self.conversion_targets_mask() | external;
        if !enqueue_at_front {
            blocking |= Self::mask(&self.pending_counts);
        }
        if !conflicts_with_any(mode, blocking) {
            let slot = self.grant_new(owner, mode, enqueue_at_front, external);
            return RequestOutcome::Granted { slot };
        }
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let request = PendingRequest {
            request_id,
            owner,
            mode,
            enqueue_at_front,
        };
        if enqueue_at_front {
            self.pending.push_front(request);
        } else {
            self.pending.push_back(request);
        }
        self.pending_counts[mode.index()] += 1;
        RequestOutcome::Queued { request_id }
    }

    /// An upgrade of the granted request in `slot` to `to` (which must be an allowed upgrade).
    pub fn convert(&mut self, slot: usize, to: LockMode, external: u8) -> ConvertOutcome {
        let entry = self
            .granted
            .get(slot)
            .expect("converting a slot that is not granted");
        assert!(entry.convert.is_none(), "a request converts once at a time");
        assert!(
            entry.mode.can_upgrade_to(to),
            "conversion {}->{to} is not allowed",
            entry.mode
        );
        if !conflicts_with_any(to, self.granted_mask_without(slot, external)) {
            self.apply_conversion(slot, to, external);
            return ConvertOutcome::Granted;
        }
        self.granted.get_mut(slot).expect("granted slot").convert = Some(to);
        self.converting.push(slot);
        ConvertOutcome::Waiting
    }

    /// Releases the granted request in `slot` and returns the grants this makes.
    pub fn release(&mut self, slot: usize, external: u8) -> Vec<Grant<O>> {
        let entry = self.granted.remove(slot);
        assert!(
            entry.convert.is_none(),
            "releasing a request that is still converting"
        );
        self.granted_counts[entry.mode.index()] -= 1;
        self.grant_waiters(external)
    }

    /// Records a grant made elsewhere (an intent fast-path grant moved in before a conversion).
    /// Asserts the matrix like any grant.
    pub fn adopt(&mut self, owner: O, mode: LockMode, external: u8) -> usize {
        self.grant_new(owner, mode, false, external)
    }

    /// Withdraws a queued request (timeout, kill, deadlock). `None` when it is no longer queued:
    /// it was granted, and the caller finds its slot in the grant it was sent.
    pub fn cancel_request(&mut self, request_id: u64, external: u8) -> Option<Vec<Grant<O>>> {
        let position = self
            .pending
            .iter()
            .position(|p| p.request_id == request_id)?;
        let request = self
            .pending
            .remove(position)
            .expect("position is in the queue");
        self.pending_counts[request.mode.index()] -= 1;
        // The withdrawn request may have been the one that stopped the batch.
        Some(self.grant_waiters(external))
    }

    /// Withdraws a waiting conversion; the request keeps its current mode. `None` when the
    /// conversion was already granted.
    pub fn cancel_conversion(&mut self, slot: usize, external: u8) -> Option<Vec<Grant<O>>> {
        let position = self.converting.iter().position(|&s| s == slot)?;
        self.converting.remove(position);
        self.granted
            .get_mut(slot)
            .expect("converting slot is granted")
            .convert = None;
        Some(self.grant_waiters(external))
    }

    /// Grants every waiter the rules allow now: conversions first, then the queue from the front.
    pub fn grant_waiters(&mut self, external: u8) -> Vec<Grant<O>> {
        let mut grants = Vec::new();
        let mut index = 0;
        while index < self.converting.len() {
            let slot = self.converting[index];
            let to = self
                .granted
                .get(slot)
                .and_then(|e| e.convert)
                .expect("converting");
            if conflicts_with_any(to, self.granted_mask_without(slot, external)) {
                index += 1;
                continue;
            }
            self.converting.remove(index);
            self.apply_conversion(slot, to, external);
            let owner = self.granted.get(slot).expect("granted slot").owner.clone();
            grants.push(Grant::Conversion { owner, slot });
            // A granted conversion only strengthens the granted set: conversions skipped
            // before it stay blocked, so the scan goes on from here.
        }
        while let Some(front) = self.pending.front() {
            let blocking = self.granted_mask() | self.conversion_targets_mask() | external;
            if conflicts_with_any(front.mode, blocking) {
                break;
            }
            let request = self.pending.pop_front().expect("front exists");
            self.pending_counts[request.mode.index()] -= 1;
            let slot = self.grant_new(
                request.owner.clone(),
                request.mode,
                request.enqueue_at_front,
                external,
            );
            grants.push(Grant::New {
                owner: request.owner,
                request_id: request.request_id,
                slot,
            });
        }
        grants
    }

    /// The owners a waiter waits for (edges of the wait-for graph): holders whose mode conflicts
    /// with what it wants, owners of conflicting conversion targets, and, for a queued request,
    /// every request ahead of it (strict FIFO: it is granted only after them).
    pub fn blockers(&self, wait: WaitRef) -> Vec<O> {
        let mut blockers = Vec::new();
        let (wanted, own_slot, ahead) = match wait {
            WaitRef::Request { request_id } => {
                let Some(position) = self.pending.iter().position(|p| p.request_id == request_id)
                else {
                    return blockers;
                };
                (self.pending[position].mode, None, position)
            }
            WaitRef::Conversion { slot } => match self.granted.get(slot).and_then(|e| e.convert) {
                Some(to) => (to, Some(slot), 0),
                None => return blockers,
            },
        };
        for (slot, entry) in self.granted.iter() {
            if Some(slot) == own_slot {
                continue;
            }
            let conflicting_target = own_slot.is_none()
                && entry
                    .convert
                    .is_some_and(|to| !wanted.is_compatible_with(to));
            if !wanted.is_compatible_with(entry.mode) || conflicting_target {
                blockers.push(entry.owner.clone());
            }
        }
        for request in self.pending.iter().take(ahead) {
            blockers.push(request.owner.clone());
        }
        blockers
    }

    /// The mode a waiter waits for; `None` when it no longer waits.
    pub fn wanted(&self, wait: WaitRef) -> Option<LockMode> {
        match wait {
            WaitRef::Request { request_id } => self
                .pending
                .iter()
                .find(|p| p.request_id == request_id)
                .map(|p| p.mode),
            WaitRef::Conversion { slot } => self.granted.get(slot).and_then(|e| e.convert),
        }
    }

    /// The granted requests (slot order), for lockInfo.
    pub fn granted(&self) -> impl Iterator<Item = (usize, &GrantedRequest<O>)> {
        self.granted.iter()
    }

    /// The queued requests, front first, for lockInfo.
    pub fn pending(&self) -> impl Iterator<Item = &PendingRequest<O>> {
        self.pending.iter()
    }

    /// The granted request in `slot`.
    #[cfg(test)]
    pub fn granted_at(&self, slot: usize) -> Option<&GrantedRequest<O>> {
        self.granted.get(slot)
    }

    /// Checks every invariant; O(n), for tests.
    #[cfg(test)]
    pub fn check_invariants(&self, external: u8) {
        let mut counts = [0u32; LOCK_MODES];
        let mut owners = Vec::new();
        for (slot, entry) in self.granted.iter() {
            counts[entry.mode.index()] += 1;
            owners.push(entry.owner.owner_id());
            assert_eq!(
                entry.convert.is_some(),
                self.converting.contains(&slot),
                "slot {slot}"
            );
        }
        assert_eq!(counts, self.granted_counts, "granted counts");
        assert_eq!(self.granted.len, owners.len());
        let granted: Vec<LockMode> = self.granted.iter().map(|(_, e)| e.mode).collect();
        for (i, a) in granted.iter().enumerate() {
            for b in &granted[i + 1..] {
                assert!(a.is_compatible_with(*b), "granted {a} with {b}");
            }
        }
        let mut pending_counts = [0u32; LOCK_MODES];
        for request in &self.pending {
            pending_counts[request.mode.index()] += 1;
            owners.push(request.owner.owner_id());
        }
        assert_eq!(pending_counts, self.pending_counts, "pending counts");
        owners.sort_unstable();
        let before = owners.len();
        owners.dedup();
        assert_eq!(
            before,
            owners.len(),
            "an owner has one request per resource"
        );
        for &slot in &self.converting {
            let to = self
                .granted
                .get(slot)
                .and_then(|e| e.convert)
                .expect("converting");
            assert!(
                conflicts_with_any(to, self.granted_mask_without(slot, external)),
                "conversion in slot {slot} to {to} could be granted but waits"
            );
        }
        if let Some(front) = self.pending.front() {
            let blocking = self.granted_mask() | self.conversion_targets_mask() | external;
            assert!(
                conflicts_with_any(front.mode, blocking),
                "front request {} could be granted but waits",
                front.mode
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockMode::{IS, IX, S, X};

    fn granted_slot(outcome: RequestOutcome) -> usize {
        match outcome {
            RequestOutcome::Granted { slot } => slot,
            RequestOutcome::Queued { .. } => panic!("expected a grant, got {outcome:?}"),
        }
    }

    fn queued_id(outcome: RequestOutcome) -> u64 {
        match outcome {
            RequestOutcome::Queued { request_id } => request_id,
            RequestOutcome::Granted { .. } => panic!("expected to queue, got {outcome:?}"),
        }
    }

    fn granted_owners(grants: &[Grant<u64>]) -> Vec<u64> {
        grants.iter().map(|g| *g.owner()).collect()
    }

    #[test]
    fn matrix_decides_immediate_grants() {
        for held in LockMode::ALL {
            for wanted in LockMode::ALL {
                let mut head = HeadState::<u64>::new();
                granted_slot(head.request(1, held, false, 0));
                let outcome = head.request(2, wanted, false, 0);
                let was_granted = matches!(outcome, RequestOutcome::Granted { .. });
                assert_eq!(
                    was_granted,
                    held.is_compatible_with(wanted),
                    "{held} then {wanted}"
                );
                head.check_invariants(0);
            }
        }
    }

    #[test]
    fn grant_order_is_fifo_with_compatible_batches() {
        // X held; the queue IS, IS, X, X, S, IS.
        let mut head = HeadState::<u64>::new();
        let holder = granted_slot(head.request(0, X, false, 0));
        for (owner, mode) in [(1, IS), (2, IS), (3, X), (4, X), (5, S), (6, IS)] {
            queued_id(head.request(owner, mode, false, 0));
        }
        head.check_invariants(0);
        let batch = head.release(holder, 0);
        assert_eq!(
            granted_owners(&batch),
            [1, 2],
            "both IS, then stop at the first X"
        );
        let slots: Vec<usize> = batch
            .iter()
            .map(|g| match g {
                Grant::New { slot, .. } => *slot,
                Grant::Conversion { .. } => panic!("no conversion here"),
            })
            .collect();
        assert!(
            head.release(slots[0], 0).is_empty(),
            "X waits for the second IS"
        );
        let batch = head.release(slots[1], 0);
        assert_eq!(granted_owners(&batch), [3]);
        let Grant::New { slot: x3, .. } = batch[0] else {
            panic!()
        };
        let batch = head.release(x3, 0);
        assert_eq!(granted_owners(&batch), [4]);
        let Grant::New { slot: x4, .. } = batch[0] else {
            panic!()
        };
        let batch = head.release(x4, 0);
        assert_eq!(granted_owners(&batch), [5, 6], "S and IS together");
        head.check_invariants(0);
    }

    #[test]
    fn waiting_x_is_not_overtaken_by_new_readers() {
        let mut head = HeadState::<u64>::new();
        let reader = granted_slot(head.request(1, IS, false, 0));
        queued_id(head.request(2, X, false, 0));
        // A new IS is compatible with the granted IS but not with the waiting X: it queues.
        queued_id(head.request(3, IS, false, 0));
        let batch = head.release(reader, 0);
        assert_eq!(granted_owners(&batch), [2]);
        head.check_invariants(0);
    }

    #[test]
    fn compatible_newcomer_passes_a_waiter_it_does_not_delay() {
        let mut head = HeadState::<u64>::new();
        granted_slot(head.request(1, IX, false, 0));
        queued_id(head.request(2, S, false, 0));
        // IS is compatible with IX (granted) and S (waiting): granted at once, as in MongoDB.
        granted_slot(head.request(3, IS, false, 0));
        head.check_invariants(0);
    }

    #[test]
    fn conversions_jump_the_queue() {
        let mut head = HeadState::<u64>::new();
        let a = granted_slot(head.request(1, IS, false, 0));
        let b = granted_slot(head.request(2, IS, false, 0));
        queued_id(head.request(3, X, false, 0));
        // IS->IX is compatible with the other IS: granted at once although X waits.
        assert_eq!(head.convert(a, IX, 0), ConvertOutcome::Granted);
        // IS->S conflicts with the IX now held by owner 1: waits, ahead of the queued X.
        assert_eq!(head.convert(b, S, 0), ConvertOutcome::Waiting);
        head.check_invariants(0);
        let grants = head.release(a, 0);
        assert_eq!(granted_owners(&grants), [2], "the conversion, not the X");
        assert!(matches!(grants[0], Grant::Conversion { slot, .. } if slot == b));
        assert_eq!(head.granted_at(b).map(|e| e.mode), Some(S));
        let grants = head.release(b, 0);
        assert_eq!(granted_owners(&grants), [3]);
        head.check_invariants(0);
    }

    #[test]
    fn cancelled_front_request_unblocks_the_batch_behind_it() {
        let mut head = HeadState::<u64>::new();
        granted_slot(head.request(1, IX, false, 0));
        let x = queued_id(head.request(2, X, false, 0));
        queued_id(head.request(3, IS, false, 0));
        let grants = head.cancel_request(x, 0).expect("queued");
        assert_eq!(granted_owners(&grants), [3]);
        assert!(head.cancel_request(x, 0).is_none(), "already gone");
        head.check_invariants(0);
    }

    #[test]
    fn enqueue_at_front_goes_before_the_queue() {
        let mut head = HeadState::<u64>::new();
        let holder = granted_slot(head.request(1, IX, false, 0));
        queued_id(head.request(2, X, false, 0));
        queued_id(head.request(3, X, true, 0));
        let grants = head.release(holder, 0);
        assert_eq!(granted_owners(&grants), [3]);
        head.check_invariants(0);
    }

    #[test]
    fn blockers_are_conflicting_holders_and_requests_ahead() {
        let mut head = HeadState::<u64>::new();
        let a = granted_slot(head.request(1, S, false, 0));
        granted_slot(head.request(2, S, false, 0));
        let x = queued_id(head.request(3, X, false, 0));
        let is = queued_id(head.request(4, IS, false, 0));
        let mut blockers = head.blockers(WaitRef::Request { request_id: x });
        blockers.sort_unstable();
        assert_eq!(blockers, [1, 2]);
        assert_eq!(head.blockers(WaitRef::Request { request_id: is }), [3]);
        // Two S holders that both convert to X wait for each other.
        assert_eq!(head.convert(a, X, 0), ConvertOutcome::Waiting);
        assert_eq!(head.blockers(WaitRef::Conversion { slot: a }), [2]);
    }
}
