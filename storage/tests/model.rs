//! Model-based test: random interleavings of commits, snapshot reads at random timestamps,
//! scans, conflicts, checkpoints, garbage collection, recovery to the stable timestamp, clean
//! restarts and crashes (also with torn unsynced writes), checked against a naive model of
//! timestamped versions.

mod common;

use bson::doc;
use cairn_storage::{Backend, CrashableMemory, Durability, Engine, ReadAt, ScanDirection};
use cairn_types::{ErrorCode, ManualClock, Namespace, Timestamp};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

const TABLES: [u64; 2] = [100, 101];

#[derive(Clone, Debug)]
enum Op {
    Commit {
        writes: Vec<(usize, i64, Option<u8>)>,
        oplog_entries: usize,
        journaled: bool,
    },
    Read {
        commit: usize,
        table: usize,
        key: i64,
    },
    Scan {
        commit: usize,
        table: usize,
        low: i64,
        high: i64,
        backward: bool,
    },
    OwnedConflict {
        table: usize,
        key: i64,
    },
    StaleConflict {
        table: usize,
        key: i64,
    },
    CreateOrDrop,
    Checkpoint,
    /// The periodic work, due: the durable commit that switches the journal to its other
    /// file while commits may go on, then garbage collection.
    Periodic,
    Flush,
    AdvanceClock {
        secs: u64,
    },
    Collect,
    SetStable {
        commit: usize,
    },
    RecoverToStable,
    Restart,
    Crash {
        torn_seed: Option<u64>,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let write = (
        0..TABLES.len(),
        0i64..6,
        prop::option::weighted(0.8, any::<u8>()),
    );
    prop_oneof![
        10 => (prop::collection::vec(write, 1..4), 0usize..3, any::<bool>())
            .prop_map(|(writes, oplog_entries, journaled)| Op::Commit { writes, oplog_entries, journaled }),
        6 => (any::<usize>(), 0..TABLES.len(), 0i64..6).prop_map(|(commit, table, key)| Op::Read { commit, table, key }),
        3 => (any::<usize>(), 0..TABLES.len(), 0i64..6, 0i64..6, any::<bool>())
            .prop_map(|(commit, table, low, high, backward)| Op::Scan { commit, table, low, high, backward }),
        1 => (0..TABLES.len(), 0i64..6).prop_map(|(table, key)| Op::OwnedConflict { table, key }),
        1 => (0..TABLES.len(), 0i64..6).prop_map(|(table, key)| Op::StaleConflict { table, key }),
        1 => Just(Op::CreateOrDrop),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Periodic),
        1 => Just(Op::Flush),
        2 => (0u64..200).prop_map(|secs| Op::AdvanceClock { secs }),
        1 => Just(Op::Collect),
        1 => any::<usize>().prop_map(|commit| Op::SetStable { commit }),
        1 => Just(Op::RecoverToStable),
        1 => Just(Op::Restart),
        1 => prop::option::of(any::<u64>()).prop_map(|torn_seed| Op::Crash { torn_seed }),
    ]
}

type Versions = BTreeMap<Timestamp, Option<Vec<u8>>>;

/// Timestamped versions of every key, the oplog, and one namespace's existence.
#[derive(Default)]
struct Model {
    versions: BTreeMap<(u64, Vec<u8>), Versions>,
    oplog: BTreeMap<Timestamp, i64>,
    namespace: BTreeMap<Timestamp, bool>,
    commits: Vec<Timestamp>,
    durable: Timestamp,
    next_marker: i64,
}

impl Model {
    fn value_at(&self, table: u64, key: &[u8], at: Timestamp) -> Option<Vec<u8>> {
        self.versions
            .get(&(table, key.to_vec()))
            .and_then(|versions| versions.range(..=at).next_back())
            .and_then(|(_, value)| value.clone())
    }

    fn namespace_exists_at(&self, at: Timestamp) -> bool {
        self.namespace
            .range(..=at)
            .next_back()
            .is_some_and(|(_, exists)| *exists)
    }

    fn newest(&self) -> Timestamp {
        self.commits.last().copied().unwrap_or(Timestamp::ZERO)
    }

    /// Forgets everything after `ts`.
    fn truncate_after(&mut self, ts: Timestamp) {
        for versions in self.versions.values_mut() {
            versions.retain(|version_ts, _| *version_ts <= ts);
        }
        self.oplog.retain(|entry_ts, _| *entry_ts <= ts);
        self.namespace.retain(|version_ts, _| *version_ts <= ts);
        self.commits.retain(|commit| *commit <= ts);
        self.durable = self.durable.min(ts);
    }
}

struct Harness {
    memory: CrashableMemory,
    clock: Arc<ManualClock>,
    engine: Option<Engine>,
    model: Model,
    stable: Option<Timestamp>,
}

fn key(id: i64) -> Vec<u8> {
    common::key(id)
}

impl Harness {
    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine open")
    }

    fn reopen(&mut self) {
        let engine = common::open(&Backend::Crashable(self.memory.clone()), &self.clock);
        if let Some(stable) = self.stable {
            engine.set_stable_timestamp(stable);
        }
        self.engine = Some(engine);
    }

    fn pick_commit(&self, index: usize) -> Timestamp {
        if self.model.commits.is_empty() {
            return self.engine().visible_timestamp();
        }
        self.model.commits[index % self.model.commits.len()]
    }

    fn check_read_at(&self, at: Timestamp, table: u64, key_id: i64) {
        match self.engine().snapshot(ReadAt::Timestamp(at)) {
            Ok(snapshot) => {
                let actual = snapshot.get(table, &key(key_id)).unwrap();
                assert_eq!(
                    actual,
                    self.model.value_at(table, &key(key_id), at),
                    "read {table}/{key_id} at {at}"
                );
                let ns = Namespace::new("db", "c");
                assert_eq!(
                    snapshot.collection(&ns).is_some(),
                    self.model.namespace_exists_at(at),
                    "catalog at {at}"
                );
            }
            Err(error) => {
                assert_eq!(error.code, ErrorCode::SnapshotTooOld, "{error}");
                assert!(
                    at < self.engine().timestamps().oldest,
                    "SnapshotTooOld at {at} above oldest"
                );
            }
        }
    }

    fn check_everything(&self) {
        let newest = self.model.newest();
        assert_eq!(
            self.engine().visible_timestamp().max(newest),
            self.engine().visible_timestamp()
        );
        for &at in self.model.commits.iter().rev().take(6) {
            for table in TABLES {
                for key_id in 0..6 {
                    self.check_read_at(at, table, key_id);
                }
            }
        }
        let snapshot = self.engine().snapshot(ReadAt::Latest).unwrap();
        let entries: Vec<Timestamp> = snapshot
            .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
            .unwrap()
            .map(|entry| entry.unwrap().0)
            .collect();
        let expected: Vec<Timestamp> = self.model.oplog.keys().copied().collect();
        assert_eq!(entries, expected, "oplog");
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Commit {
                writes,
                oplog_entries,
                journaled,
            } => {
                let mut unit = self.engine().begin_write();
                let mut staged = Vec::new();
                let mut markers = Vec::new();
                // Spread the writes over the oplog entries: writes before entry k take slot k.
                let per_slot = writes.len().div_ceil(oplog_entries.max(1));
                for (index, (table, key_id, value)) in writes.into_iter().enumerate() {
                    if oplog_entries > 0
                        && index > 0
                        && index % per_slot == 0
                        && markers.len() < oplog_entries
                    {
                        let marker = self.model.next_marker;
                        self.model.next_marker += 1;
                        unit.append_oplog(doc! {"marker": marker});
                        markers.push(marker);
                    }
                    let table = TABLES[table];
                    match value {
                        Some(byte) => unit.put(table, &key(key_id), &[byte]).unwrap(),
                        None => {
                            unit.delete(table, &key(key_id)).unwrap();
                        }
                    }
                    staged.push((markers.len(), table, key_id, value));
                }
                while markers.len() < oplog_entries {
                    let marker = self.model.next_marker;
                    self.model.next_marker += 1;
                    unit.append_oplog(doc! {"marker": marker});
                    markers.push(marker);
                }
                let durability = if journaled {
                    Durability::Journaled
                } else {
                    Durability::Visible
                };
                let info = unit.commit(durability).unwrap();
                let slots = info.last_ts.as_u64() - info.first_ts.as_u64() + 1;
                let slot_ts =
                    |slot: usize| Timestamp::from_u64(info.first_ts.as_u64() + slot as u64);
                for (slot, table, key_id, value) in staged {
                    assert!((slot as u64) < slots);
                    let versions = self.model.versions.entry((table, key(key_id))).or_default();
                    let existed = versions.values().next_back().is_some_and(Option::is_some);
                    if value.is_some() || existed {
                        versions.insert(slot_ts(slot), value.map(|byte| vec![byte]));
                    }
                }
                for (index, marker) in markers.into_iter().enumerate() {
                    self.model.oplog.insert(slot_ts(index), marker);
                }
                for slot in 0..slots as usize {
                    self.model.commits.push(slot_ts(slot));
                }
                if info.durable {
                    self.model.durable = info.last_ts;
                }
                assert!(!journaled || info.durable);
            }
            Op::Read { commit, table, key } => {
                let at = self.pick_commit(commit);
                self.check_read_at(at, TABLES[table], key);
            }
            Op::Scan {
                commit,
                table,
                low,
                high,
                backward,
            } => {
                let at = self.pick_commit(commit);
                let table = TABLES[table];
                let Ok(snapshot) = self.engine().snapshot(ReadAt::Timestamp(at)) else {
                    return;
                };
                let direction = if backward {
                    ScanDirection::Backward
                } else {
                    ScanDirection::Forward
                };
                let actual: Vec<(Vec<u8>, Vec<u8>)> = snapshot
                    .scan(
                        table,
                        (Bound::Included(key(low)), Bound::Excluded(key(high))),
                        direction,
                    )
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let mut expected: Vec<(Vec<u8>, Vec<u8>)> = (low..high)
                    .filter_map(|id| {
                        self.model
                            .value_at(table, &key(id), at)
                            .map(|value| (key(id), value))
                    })
                    .collect();
                if backward {
                    expected.reverse();
                }
                assert_eq!(actual, expected, "scan {table} [{low}, {high}) at {at}");
            }
            Op::OwnedConflict { table, key: key_id } => {
                let table = TABLES[table];
                let mut first = self.engine().begin_write();
                let mut second = self.engine().begin_write();
                first.put(table, &key(key_id), b"first").unwrap();
                let error = second.put(table, &key(key_id), b"second").unwrap_err();
                assert_eq!(error.code, ErrorCode::WriteConflict);
                second.abort();
                first.abort();
            }
            Op::StaleConflict { table, key: key_id } => {
                let table = TABLES[table];
                let mut stale = self.engine().begin_write();
                self.apply(Op::Commit {
                    writes: vec![(
                        TABLES.iter().position(|t| *t == table).unwrap(),
                        key_id,
                        Some(42),
                    )],
                    oplog_entries: 0,
                    journaled: false,
                });
                let error = stale.put(table, &key(key_id), b"stale").unwrap_err();
                assert_eq!(error.code, ErrorCode::WriteConflict);
                stale.abort();
            }
            Op::CreateOrDrop => {
                let ns = Namespace::new("db", "c");
                let mut unit = self.engine().begin_write();
                let exists = unit.collection(&ns).is_some();
                if exists {
                    unit.drop_collection(&ns).unwrap();
                } else {
                    unit.create_collection(&ns, doc! {}).unwrap();
                }
                let info = unit.commit(Durability::Visible).unwrap();
                self.model.namespace.insert(info.last_ts, !exists);
                self.model.commits.push(info.last_ts);
                if info.durable {
                    self.model.durable = info.last_ts;
                }
            }
            Op::Checkpoint => {
                self.engine().checkpoint().unwrap();
                self.model.durable = self.model.newest();
            }
            Op::Periodic => {
                self.clock.advance(Duration::from_secs(1));
                self.engine().run_periodic_work();
            }
            Op::Flush => {
                self.engine().flush().unwrap();
                self.model.durable = self.model.newest();
            }
            Op::AdvanceClock { secs } => self.clock.advance(Duration::from_secs(secs)),
            Op::Collect => {
                self.engine().collect_garbage().unwrap();
            }
            Op::SetStable { commit } => {
                if !self.model.commits.is_empty() {
                    let ts = self
                        .pick_commit(commit)
                        .max(self.stable.unwrap_or(Timestamp::ZERO));
                    self.engine().set_stable_timestamp(ts);
                    self.stable = Some(self.engine().timestamps().stable);
                }
            }
            Op::RecoverToStable => {
                let Some(_) = self.stable else {
                    return;
                };
                let stable = self.engine().recover_to_stable_timestamp().unwrap();
                assert_eq!(Some(stable), self.stable);
                self.model.truncate_after(stable);
                self.model.durable = stable;
            }
            Op::Restart => {
                self.engine.take().unwrap().close().unwrap();
                self.model.durable = self.model.newest();
                self.reopen();
            }
            Op::Crash { torn_seed } => {
                self.engine.take().unwrap().simulate_crash();
                match torn_seed {
                    Some(seed) => self.memory.crash_torn(seed),
                    None => self.memory.crash(),
                }
                self.reopen();
                let recovered = self.engine().visible_timestamp();
                assert!(
                    recovered >= self.model.durable,
                    "lost a durable commit: recovered to {recovered}, durable {}",
                    self.model.durable
                );
                assert!(
                    recovered <= self.model.newest(),
                    "recovered past the newest commit"
                );
                assert!(
                    recovered == Timestamp::ZERO || self.model.commits.contains(&recovered),
                    "recovered to a timestamp that was never a commit"
                );
                self.model.truncate_after(recovered);
                if let Some(stable) = self.stable {
                    if stable > recovered {
                        self.stable = None;
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let mut harness = Harness {
            memory: CrashableMemory::new(),
            clock: common::clock(),
            engine: None,
            model: Model::default(),
            stable: None,
        };
        harness.reopen();
        for op in ops {
            harness.apply(op);
            harness.check_everything();
        }
        harness.engine.take().unwrap().close().unwrap();
    }
}
