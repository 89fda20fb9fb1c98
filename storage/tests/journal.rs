//! The journal through the engine: `j: true` commits that only the journal holds survive a
//! crash (redb's last durable commit plus replay), a torn journal tail never loses an
//! acknowledged commit nor applies part of one, and a durable redb commit starts the journal
//! over.

mod common;

use cairn_storage::{
    Backend, CrashableMemory, Durability, Engine, EngineConfig, ReadAt, ScanDirection,
};
use cairn_types::{ManualClock, Namespace, Timestamp};
use common::{clock, key, open_with};
use std::sync::Arc;

const TABLE: u64 = 100;

/// No durable redb commit after opening unless asked: the journal alone holds the commits.
fn journal_only() -> EngineConfig {
    EngineConfig {
        data_sync_interval_ms: u64::MAX / 4,
        checkpoint_interval_secs: u64::MAX / 4_000,
        ..common::config()
    }
}

/// Commits inline, and the periodic work (`run_periodic_work`) always finds the durable
/// commit due.
fn periodic_on_demand() -> EngineConfig {
    EngineConfig {
        commit_mode: cairn_storage::CommitMode::Inline,
        data_sync_interval_ms: 0,
        ..journal_only()
    }
}

fn value(id: i64, round: u32) -> Vec<u8> {
    format!("value {id} round {round}").into_bytes()
}

/// Writes `key(id)` and `key(id + 1_000)` in one unit (so a half-applied unit shows).
fn commit_pair(engine: &Engine, id: i64, round: u32, durability: Durability) -> Timestamp {
    let mut unit = engine.begin_write();
    unit.put(TABLE, &key(id), &value(id, round)).unwrap();
    unit.put(TABLE, &key(id + 1_000), &value(id, round))
        .unwrap();
    unit.append_oplog(bson::doc! { "op": "i", "id": id, "round": round as i64 });
    unit.commit(durability).unwrap().last_ts
}

fn reopen(memory: &CrashableMemory, clock: &Arc<ManualClock>) -> Engine {
    open_with(&Backend::Crashable(memory.clone()), clock, journal_only())
}

#[test]
fn journaled_commits_survive_a_crash_by_replay() {
    let memory = CrashableMemory::new();
    let clock = clock();
    let engine = reopen(&memory, &clock);
    let mut unit = engine.begin_write();
    unit.create_collection(&Namespace::new("db", "c"), bson::doc! {})
        .unwrap();
    unit.commit(Durability::Journaled).unwrap();
    let mut last = Timestamp::ZERO;
    for id in 0..50 {
        let durability = if id % 3 == 0 {
            Durability::Journaled
        } else {
            Durability::Visible
        };
        last = commit_pair(&engine, id, 1, durability);
    }
    // The last commit was j:false: flush so everything is acknowledged as durable.
    assert!(engine.flush().unwrap() >= last);
    let stats = engine.stats();
    assert_eq!(stats.durable_commits, 0, "redb was not committed durably");
    assert!(stats.journal_syncs > 0);
    engine.simulate_crash();
    memory.crash();

    let engine = reopen(&memory, &clock);
    assert_eq!(engine.visible_timestamp(), last);
    assert_eq!(engine.stats().journal_replayed_records, 51);
    assert!(
        engine
            .latest_collection(&Namespace::new("db", "c"))
            .is_some(),
        "the catalog change was replayed"
    );
    let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
    for id in 0..50 {
        assert_eq!(snapshot.get(TABLE, &key(id)).unwrap(), Some(value(id, 1)));
        assert_eq!(
            snapshot.get(TABLE, &key(id + 1_000)).unwrap(),
            Some(value(id, 1))
        );
    }
    let oplog = snapshot
        .oplog_scan(std::ops::Bound::Unbounded, ScanDirection::Forward)
        .unwrap()
        .count();
    assert_eq!(oplog, 50, "every unit's oplog entry was replayed");
    drop(snapshot);

    // Replayed records are not replayed twice: opening made them durable in redb and started
    // a new journal generation.
    engine.simulate_crash();
    memory.crash();
    let engine = reopen(&memory, &clock);
    assert_eq!(engine.visible_timestamp(), last);
    assert_eq!(engine.stats().journal_replayed_records, 0);

    // A checkpoint holds everything: nothing to replay after it.
    commit_pair(&engine, 60, 2, Durability::Journaled);
    engine.checkpoint().unwrap();
    engine.simulate_crash();
    memory.crash();
    let engine = reopen(&memory, &clock);
    assert_eq!(engine.stats().journal_replayed_records, 0);
    assert_eq!(
        engine
            .snapshot(ReadAt::Latest)
            .unwrap()
            .get(TABLE, &key(60))
            .unwrap(),
        Some(value(60, 2))
    );
    engine.close().unwrap();
}

#[test]
fn a_torn_journal_tail_keeps_every_acknowledged_commit_and_no_partial_one() {
    let mut beyond_durable = 0;
    for seed in 0..24u64 {
        let memory = CrashableMemory::new();
        let clock = clock();
        let engine = reopen(&memory, &clock);
        // Acknowledged durable: rounds 1..=3 of ids 0..10, each its own j:true unit.
        let mut acknowledged = Vec::new();
        for round in 1..=3u32 {
            for id in 0..10 {
                acknowledged.push(commit_pair(&engine, id, round, Durability::Journaled));
            }
        }
        let durable = *acknowledged.last().unwrap();
        // Visible only: round 4, whose records are written out (the buffer passes its limit
        // with large values) but never synced: a crash may keep any prefix of them.
        let mut visible_only = Vec::new();
        for id in 0..10 {
            let mut unit = engine.begin_write();
            let big = vec![id as u8; 300 * 1024];
            unit.put(TABLE, &key(id), &big).unwrap();
            unit.put(TABLE, &key(id + 1_000), &big).unwrap();
            visible_only.push(unit.commit(Durability::Visible).unwrap().last_ts);
        }
        engine.simulate_crash();
        memory.crash_torn(seed);

        let engine = reopen(&memory, &clock);
        let recovered = engine.visible_timestamp();
        assert!(
            recovered >= durable,
            "seed {seed}: lost an acknowledged commit"
        );
        if recovered > durable {
            beyond_durable += 1;
        }
        assert!(
            recovered == durable || visible_only.contains(&recovered),
            "seed {seed}: recovered to {recovered}, not a commit boundary"
        );
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        for (index, id) in (0..10).enumerate() {
            let first = snapshot.get(TABLE, &key(id)).unwrap();
            let second = snapshot.get(TABLE, &key(id + 1_000)).unwrap();
            assert_eq!(first, second, "seed {seed}: unit {id} half applied");
            let expected = if visible_only[index] <= recovered {
                vec![id as u8; 300 * 1024]
            } else {
                value(id, 3)
            };
            assert_eq!(first, Some(expected), "seed {seed}: key {id}");
        }
        drop(snapshot);
        engine.close().unwrap();
    }
    // The torn crashes kept some written-out records and not others: both paths ran.
    assert!(
        beyond_durable > 0 && beyond_durable < 24,
        "{beyond_durable} of 24 crashes recovered past the last sync"
    );
}

#[test]
fn a_journal_left_over_from_another_data_file_is_never_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Disk(dir.path().join("db"));
    let clock = clock();
    // An engine whose journal holds synced records, dropped without a checkpoint.
    let first = open_with(&backend, &clock, journal_only());
    commit_pair(&first, 1, 1, Durability::Journaled);
    drop(first);
    // The data file is replaced by a new one; the journal stays.
    std::fs::remove_file(
        dir.path()
            .join("db")
            .join(cairn_storage::backend::DATA_FILE_NAME),
    )
    .unwrap();
    let second = open_with(&backend, &clock, journal_only());
    assert_eq!(second.visible_timestamp(), Timestamp::ZERO);
    drop(second);
    // Reopening the new data file reads the journal for its own generation: the old records,
    // whatever generation they carry, are not its own.
    let third = open_with(&backend, &clock, journal_only());
    assert_eq!(third.stats().journal_replayed_records, 0);
    assert_eq!(
        third
            .snapshot(ReadAt::Latest)
            .unwrap()
            .get(TABLE, &key(1))
            .unwrap(),
        None,
        "a record of another data file was applied"
    );
    third.close().unwrap();
}

/// The periodic durable commit holds up no commit: it switches the journal to its other file
/// first, and commits go on there. A crash while its redb commit is still syncing recovers
/// from the previous durable commit and both generations: the records of the old one (synced
/// before anything of the new one was written, `j: false` ones included) and of the new one.
#[test]
fn commits_during_a_durable_commit_that_never_lands_survive_by_replay_of_both_files() {
    let memory = CrashableMemory::new();
    let clock = clock();
    let config = periodic_on_demand();
    let engine = open_with(&Backend::Crashable(memory.clone()), &clock, config.clone());
    // Before the switch: j:true commits, then j:false ones that are never synced by
    // themselves.
    let mut expected = Vec::new();
    for id in 0..10 {
        commit_pair(&engine, id, 1, Durability::Journaled);
        expected.push((id, 1));
    }
    for id in 10..20 {
        commit_pair(&engine, id, 1, Durability::Visible);
        expected.push((id, 1));
    }
    let before = engine.stats();

    // The periodic work switches the journal, writes the memtable, and waits for good in the
    // durable redb commit's sync.
    memory.hold_data_syncs();
    let periodic = engine.clone();
    std::thread::spawn(move || periodic.run_periodic_work());
    memory.wait_for_a_held_sync();

    // Commits go on meanwhile (the writer mutex is free), into the new generation.
    let mut last = Timestamp::ZERO;
    for id in 0..30 {
        last = commit_pair(&engine, id, 2, Durability::Journaled);
        if let Some(entry) = expected.iter_mut().find(|(key, _)| *key == id) {
            entry.1 = 2;
        } else {
            expected.push((id, 2));
        }
    }
    assert_eq!(
        engine.stats().durable_commits,
        before.durable_commits,
        "the durable commit has not completed"
    );
    engine.simulate_crash();
    memory.crash();

    let engine = open_with(&Backend::Crashable(memory.clone()), &clock, config);
    assert_eq!(
        engine.visible_timestamp(),
        last,
        "every acknowledged commit"
    );
    assert_eq!(
        engine.stats().journal_replayed_records,
        50,
        "the 20 records of the old generation and the 30 of the new one"
    );
    let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
    for (id, round) in expected {
        for stored in [key(id), key(id + 1_000)] {
            assert_eq!(
                snapshot.get(TABLE, &stored).unwrap(),
                Some(value(id, round)),
                "key {id}"
            );
        }
    }
    let oplog = snapshot
        .oplog_scan(std::ops::Bound::Unbounded, ScanDirection::Forward)
        .unwrap()
        .count();
    assert_eq!(oplog, 50);
    drop(snapshot);
    engine.close().unwrap();
}

/// Once the periodic durable commit lands, the old generation's records are not replayed
/// again; commits after its switch are, from the other file.
#[test]
fn after_a_periodic_durable_commit_only_the_new_generation_is_replayed() {
    let memory = CrashableMemory::new();
    let clock = clock();
    let config = periodic_on_demand();
    let engine = open_with(&Backend::Crashable(memory.clone()), &clock, config.clone());
    for round in 1..=3 {
        for id in 0..10 {
            commit_pair(&engine, id, round, Durability::Journaled);
        }
        // Three switches: the generations go back and forth between the two files.
        let durable_commits = engine.stats().durable_commits;
        engine.run_periodic_work();
        assert_eq!(engine.stats().durable_commits, durable_commits + 1);
    }
    let mut last = Timestamp::ZERO;
    for id in 0..5 {
        last = commit_pair(&engine, id, 4, Durability::Journaled);
    }
    engine.simulate_crash();
    memory.crash();
    let engine = open_with(&Backend::Crashable(memory.clone()), &clock, config);
    assert_eq!(engine.visible_timestamp(), last);
    assert_eq!(engine.stats().journal_replayed_records, 5);
    let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
    for id in 0..10 {
        let round = if id < 5 { 4 } else { 3 };
        assert_eq!(
            snapshot.get(TABLE, &key(id)).unwrap(),
            Some(value(id, round))
        );
    }
    drop(snapshot);
    engine.close().unwrap();
}
