//! The engine's shared test suite: every test runs over every backend (memory, crashable
//! memory, disk).

mod common;

use bson::doc;
use cairn_storage::retry::{RetryOptions, write_conflict_retry};
use cairn_storage::{Durability, ReadAt, ScanDirection};
use cairn_types::{ErrorCode, Namespace, Timestamp};
use common::{backends, clock, key, open};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

const TABLE: u64 = 100;

fn value(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

#[test]
fn snapshots_see_exactly_what_was_committed_at_or_before_them() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(1), &value("one")).unwrap();
        unit.put(TABLE, &key(2), &value("two")).unwrap();
        let first = unit.commit(Durability::Visible).unwrap();
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(1), &value("uno")).unwrap();
        assert!(unit.delete(TABLE, &key(2)).unwrap());
        let second = unit.commit(Durability::Journaled).unwrap();
        assert!(second.durable);
        assert!(first.last_ts < second.first_ts);

        let old = engine.snapshot(ReadAt::Timestamp(first.last_ts)).unwrap();
        let new = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(new.read_timestamp(), second.last_ts, "{}", backend.name);
        assert_eq!(
            old.get(TABLE, &key(1)).unwrap(),
            Some(value("one")),
            "{}",
            backend.name
        );
        assert_eq!(old.get(TABLE, &key(2)).unwrap(), Some(value("two")));
        assert_eq!(new.get(TABLE, &key(1)).unwrap(), Some(value("uno")));
        assert_eq!(new.get(TABLE, &key(2)).unwrap(), None);
        let before_everything = engine.snapshot(ReadAt::Timestamp(first.first_ts.predecessor()));
        let before_everything = before_everything.unwrap();
        assert_eq!(before_everything.get(TABLE, &key(1)).unwrap(), None);

        let scan = |snapshot: &cairn_storage::Snapshot, direction| {
            snapshot
                .scan(TABLE, (Bound::Unbounded, Bound::Unbounded), direction)
                .unwrap()
                .map(|entry| entry.unwrap().1)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            scan(&old, ScanDirection::Forward),
            vec![value("one"), value("two")]
        );
        assert_eq!(
            scan(&old, ScanDirection::Backward),
            vec![value("two"), value("one")]
        );
        assert_eq!(scan(&new, ScanDirection::Forward), vec![value("uno")]);
        // A range that excludes its own start is empty, not a panic.
        let empty = new
            .scan(
                TABLE,
                (Bound::Excluded(key(1)), Bound::Excluded(key(1))),
                ScanDirection::Forward,
            )
            .unwrap();
        assert_eq!(empty.count(), 0);
        // Reads in the future are refused.
        let error = engine
            .snapshot(ReadAt::Timestamp(second.last_ts.successor()))
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::SnapshotUnavailable);
        engine.close().unwrap();
    }
}

#[test]
fn a_unit_reads_its_own_writes_and_commits_all_or_nothing() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(1), &value("a")).unwrap();
        unit.put(TABLE, &key(3), &value("c")).unwrap();
        assert_eq!(unit.get(TABLE, &key(1)).unwrap(), Some(value("a")));
        let scanned = unit
            .scan(
                TABLE,
                (Bound::Included(key(0)), Bound::Unbounded),
                ScanDirection::Forward,
            )
            .unwrap();
        assert_eq!(scanned.len(), 2);
        unit.abort();
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(
            snapshot.get(TABLE, &key(1)).unwrap(),
            None,
            "{}",
            backend.name
        );
        drop(snapshot);

        // Dropping a unit aborts it and frees its keys.
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(1), &value("a")).unwrap();
        drop(unit);
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(1), &value("b")).unwrap();
        unit.put(TABLE, &key(1), &value("b2")).unwrap();
        unit.commit(Durability::Visible).unwrap();
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(snapshot.get(TABLE, &key(1)).unwrap(), Some(value("b2")));
        drop(snapshot);
        engine.close().unwrap();
    }
}

#[test]
fn first_updater_wins() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let mut first = engine.begin_write();
        let mut second = engine.begin_write();
        first.put(TABLE, &key(1), &value("first")).unwrap();
        let error = second.put(TABLE, &key(1), &value("second")).unwrap_err();
        assert_eq!(error.code, ErrorCode::WriteConflict, "{}", backend.name);
        // Writers of different keys never conflict.
        second.put(TABLE, &key(2), &value("other")).unwrap();
        first.commit(Durability::Visible).unwrap();
        second.abort();
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(snapshot.get(TABLE, &key(1)).unwrap(), Some(value("first")));
        assert_eq!(
            snapshot.get(TABLE, &key(2)).unwrap(),
            None,
            "nothing of the loser applies"
        );
        drop(snapshot);

        // A unit that began before a commit of a key cannot overwrite it.
        let mut stale = engine.begin_write();
        let mut fresh = engine.begin_write();
        fresh.put(TABLE, &key(5), &value("fresh")).unwrap();
        fresh.commit(Durability::Visible).unwrap();
        let error = stale.put(TABLE, &key(5), &value("stale")).unwrap_err();
        assert_eq!(error.code, ErrorCode::WriteConflict);
        stale.abort();
        assert_eq!(engine.write_conflicts(), 2);
        engine.close().unwrap();
    }
}

#[test]
fn hot_document_increments_are_never_lost() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let threads = 8;
        let increments = 50;
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let engine = &engine;
                scope.spawn(move || {
                    // Half read for update (and may build on sealed versions), half read plainly
                    // and claim blind when they write.
                    let for_update = thread % 2 == 0;
                    for _ in 0..increments {
                        let options = RetryOptions {
                            durability: Durability::Visible,
                            deadline: None,
                            check_interrupt: &mut || Ok(()),
                            give_up_on_conflict: false,
                        };
                        write_conflict_retry(engine, options, |unit| {
                            let current = if for_update {
                                unit.get_for_update(TABLE, &key(0))?
                            } else {
                                unit.get(TABLE, &key(0))?
                            };
                            let current = current
                                .map(|bytes| u64::from_be_bytes(bytes.try_into().unwrap()))
                                .unwrap_or(0);
                            unit.put(TABLE, &key(0), &(current + 1).to_be_bytes())?;
                            Ok(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        let total = u64::from_be_bytes(
            snapshot
                .get(TABLE, &key(0))
                .unwrap()
                .unwrap()
                .try_into()
                .unwrap(),
        );
        assert_eq!(total, (threads * increments) as u64, "{}", backend.name);
        drop(snapshot);
        engine.close().unwrap();
    }
}

#[test]
fn the_oplog_commits_with_the_data_one_timestamp_per_entry() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let mut unit = engine.begin_write();
        for id in 0..3 {
            unit.put(TABLE, &key(id), &value(&format!("doc{id}")))
                .unwrap();
            unit.append_oplog(doc! {"op": "i", "ns": "db.c", "o": {"_id": id}});
        }
        let info = unit.commit(Durability::Journaled).unwrap();
        assert_eq!(
            info.last_ts.as_u64() - info.first_ts.as_u64(),
            2,
            "{}",
            backend.name
        );

        // Each document became visible at its own entry's timestamp.
        let snapshot = engine.snapshot(ReadAt::Timestamp(info.first_ts)).unwrap();
        assert!(snapshot.get(TABLE, &key(0)).unwrap().is_some());
        assert!(snapshot.get(TABLE, &key(1)).unwrap().is_none());
        drop(snapshot);
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        let entries: Vec<(Timestamp, bson::Document)> = snapshot
            .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
            .unwrap()
            .map(|entry| {
                let (ts, bytes) = entry.unwrap();
                (ts, bson::deserialize_from_slice(&bytes).unwrap())
            })
            .collect();
        assert_eq!(entries.len(), 3);
        for (index, (ts, entry)) in entries.iter().enumerate() {
            assert_eq!(Timestamp::from(entry.get_timestamp("ts").unwrap()), *ts);
            assert_eq!(
                entry.get_document("o").unwrap().get_i64("_id").unwrap(),
                index as i64
            );
        }
        let from_second: Vec<_> = snapshot
            .oplog_scan(Bound::Excluded(entries[0].0), ScanDirection::Forward)
            .unwrap()
            .collect();
        assert_eq!(from_second.len(), 2);
        drop(snapshot);
        assert_eq!(engine.truncate_oplog_after(entries[0].0).unwrap(), 2);
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(
            snapshot
                .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
                .unwrap()
                .count(),
            1
        );
        drop(snapshot);
        engine.close().unwrap();
    }
}

#[test]
fn catalog_changes_are_timestamped_like_data() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let ns = Namespace::new("shop", "orders");
        let mut unit = engine.begin_write();
        let meta = unit.create_collection(&ns, doc! {}).unwrap();
        let created = unit.commit(Durability::Visible).unwrap();
        let mut unit = engine.begin_write();
        assert_eq!(
            unit.create_collection(&ns, doc! {}).unwrap_err().code,
            ErrorCode::NamespaceExists
        );
        unit.put(meta.ident, &key(1), &value("order")).unwrap();
        unit.commit(Durability::Visible).unwrap();
        let renamed_ns = Namespace::new("shop", "archive");
        let mut unit = engine.begin_write();
        unit.rename_collection(&ns, &renamed_ns).unwrap();
        let renamed = unit.commit(Durability::Visible).unwrap();
        let mut unit = engine.begin_write();
        unit.drop_collection(&renamed_ns).unwrap();
        let dropped = unit.commit(Durability::Visible).unwrap();

        let at = |ts| engine.snapshot(ReadAt::Timestamp(ts)).unwrap();
        assert_eq!(
            at(created.last_ts).collection(&ns).unwrap().uuid,
            meta.uuid,
            "{}",
            backend.name
        );
        assert!(at(created.last_ts.predecessor()).collection(&ns).is_none());
        let after_rename = at(renamed.last_ts);
        assert!(after_rename.collection(&ns).is_none());
        let archive = after_rename.collection(&renamed_ns).unwrap();
        assert_eq!(archive.uuid, meta.uuid);
        assert_eq!(
            after_rename.get(archive.ident, &key(1)).unwrap(),
            Some(value("order"))
        );
        assert!(after_rename.collection_by_uuid(&meta.uuid).is_some());
        assert!(at(dropped.last_ts).collection(&renamed_ns).is_none());
        assert!(at(dropped.last_ts).collections().is_empty());
        // An old snapshot still reads the dropped collection's data.
        assert_eq!(
            after_rename.get(archive.ident, &key(1)).unwrap(),
            Some(value("order"))
        );
        drop(after_rename);
        engine.close().unwrap();
        // The catalog survives a restart with its history.
        let engine = open(&backend.backend, &clock);
        if !matches!(backend.backend, cairn_storage::Backend::Memory) {
            let snapshot = engine.snapshot(ReadAt::Timestamp(renamed.last_ts)).unwrap();
            assert_eq!(
                snapshot.collection(&renamed_ns).unwrap().uuid,
                meta.uuid,
                "{}",
                backend.name
            );
            assert!(
                engine
                    .snapshot(ReadAt::Latest)
                    .unwrap()
                    .collection(&renamed_ns)
                    .is_none()
            );
        }
        engine.close().unwrap();
    }
}

#[test]
fn history_is_collected_once_no_reader_can_see_it() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(1), &value("v1")).unwrap();
        unit.put(TABLE, &key(2), &value("doomed")).unwrap();
        let first = unit.commit(Durability::Visible).unwrap();
        clock.advance(Duration::from_secs(1));
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(1), &value("v2")).unwrap();
        unit.delete(TABLE, &key(2)).unwrap();
        let second = unit.commit(Durability::Visible).unwrap();

        // Within the window nothing is collected.
        assert_eq!(engine.collect_garbage().unwrap(), 0, "{}", backend.name);
        let pinned = engine.snapshot(ReadAt::Timestamp(first.last_ts)).unwrap();
        clock.advance(Duration::from_secs(301));
        // The pinned reader holds the oldest timestamp back.
        // (The committer also collects by itself now that the clock moved: count them all.)
        engine.collect_garbage().unwrap();
        assert!(engine.timestamps().oldest <= first.last_ts);
        assert_eq!(pinned.get(TABLE, &key(1)).unwrap(), Some(value("v1")));
        drop(pinned);
        engine.collect_garbage().unwrap();
        let collected = engine.stats().gc_entries;
        // The two writes that replaced a version; the first versions were never in the write
        // log (stable follows the newest commit, and they replaced nothing).
        assert_eq!(
            collected, 2,
            "{}: the second versions of both keys",
            backend.name
        );
        assert_eq!(engine.timestamps().oldest, second.last_ts);
        let error = engine
            .snapshot(ReadAt::Timestamp(first.last_ts))
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::SnapshotTooOld);
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(snapshot.get(TABLE, &key(1)).unwrap(), Some(value("v2")));
        assert_eq!(snapshot.get(TABLE, &key(2)).unwrap(), None);
        assert_eq!(
            snapshot
                .scan(
                    TABLE,
                    (Bound::Unbounded, Bound::Unbounded),
                    ScanDirection::Forward
                )
                .unwrap()
                .count(),
            1
        );
        drop(snapshot);
        engine.close().unwrap();
    }
}

#[test]
fn dropped_tables_are_removed_after_the_oldest_timestamp_passes_the_drop() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let ns = Namespace::new("db", "gone");
        let mut unit = engine.begin_write();
        let meta = unit.create_collection(&ns, doc! {}).unwrap();
        unit.commit(Durability::Visible).unwrap();
        let mut unit = engine.begin_write();
        unit.put(meta.ident, &key(1), &value("x")).unwrap();
        let written = unit.commit(Durability::Visible).unwrap();
        let mut unit = engine.begin_write();
        unit.drop_collection(&ns).unwrap();
        unit.commit(Durability::Visible).unwrap();
        clock.advance(Duration::from_secs(400));
        engine.collect_garbage().unwrap();
        engine.collect_garbage().unwrap();
        let error = engine
            .snapshot(ReadAt::Timestamp(written.last_ts))
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::SnapshotTooOld, "{}", backend.name);
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(snapshot.get(meta.ident, &key(1)).unwrap(), None);
        drop(snapshot);
        engine.close().unwrap();
    }
}

#[test]
fn recover_to_stable_discards_everything_after_it() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let ns = Namespace::new("db", "kept");
        let mut unit = engine.begin_write();
        let kept = unit.create_collection(&ns, doc! {}).unwrap();
        unit.put(TABLE, &key(1), &value("stable")).unwrap();
        unit.append_oplog(doc! {"op": "i"});
        let stable = unit.commit(Durability::Journaled).unwrap();
        engine.set_stable_timestamp(stable.last_ts);

        let later_ns = Namespace::new("db", "later");
        let mut unit = engine.begin_write();
        let later = unit.create_collection(&later_ns, doc! {}).unwrap();
        unit.put(later.ident, &key(1), &value("later")).unwrap();
        unit.put(TABLE, &key(1), &value("unstable")).unwrap();
        unit.put(TABLE, &key(2), &value("new")).unwrap();
        unit.append_oplog(doc! {"op": "i"});
        unit.commit(Durability::Visible).unwrap();
        let mut unit = engine.begin_write();
        unit.drop_collection(&ns).unwrap();
        unit.delete(TABLE, &key(1)).unwrap();
        unit.append_oplog(doc! {"op": "c"});
        unit.commit(Durability::Visible).unwrap();
        assert_eq!(
            engine.timestamps().stable,
            stable.last_ts,
            "stable does not follow now"
        );

        assert_eq!(
            engine.recover_to_stable_timestamp().unwrap(),
            stable.last_ts,
            "{}",
            backend.name
        );
        assert_eq!(engine.visible_timestamp(), stable.last_ts);
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(snapshot.get(TABLE, &key(1)).unwrap(), Some(value("stable")));
        assert_eq!(snapshot.get(TABLE, &key(2)).unwrap(), None);
        assert_eq!(snapshot.collection(&ns).unwrap().uuid, kept.uuid);
        assert!(snapshot.collection(&later_ns).is_none());
        assert_eq!(snapshot.get(later.ident, &key(1)).unwrap(), None);
        assert_eq!(
            snapshot
                .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
                .unwrap()
                .count(),
            1
        );
        drop(snapshot);
        // Writing goes on after the recovery, with timestamps after the stable one.
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(3), &value("after")).unwrap();
        let after = unit.commit(Durability::Journaled).unwrap();
        assert!(after.first_ts > stable.last_ts);
        engine.close().unwrap();
    }
}

#[test]
fn first_versions_written_while_stable_follows_are_never_undone() {
    // Such writes are not in the write log; stable never moves back below them.
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(10), &value("first")).unwrap();
        let first = unit.commit(Durability::Visible).unwrap();
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(11), &value("second")).unwrap();
        let second = unit.commit(Durability::Journaled).unwrap();
        // An explicit stable timestamp below the one that followed: stable stays put.
        engine.set_stable_timestamp(first.last_ts);
        assert_eq!(
            engine.timestamps().stable,
            second.last_ts,
            "{}",
            backend.name
        );
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(12), &value("after")).unwrap();
        unit.commit(Durability::Visible).unwrap();
        assert_eq!(
            engine.recover_to_stable_timestamp().unwrap(),
            second.last_ts,
            "{}",
            backend.name
        );
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(snapshot.get(TABLE, &key(10)).unwrap(), Some(value("first")));
        assert_eq!(
            snapshot.get(TABLE, &key(11)).unwrap(),
            Some(value("second"))
        );
        assert_eq!(
            snapshot.get(TABLE, &key(12)).unwrap(),
            None,
            "{}",
            backend.name
        );
        drop(snapshot);
        engine.close().unwrap();
    }
}

#[test]
fn recover_to_stable_refuses_while_a_snapshot_is_open_above_it() {
    let clock = clock();
    let engine = open(&cairn_storage::Backend::Memory, &clock);
    engine.set_stable_timestamp(Timestamp::ZERO);
    let mut unit = engine.begin_write();
    unit.put(TABLE, &key(1), &value("x")).unwrap();
    unit.commit(Durability::Visible).unwrap();
    let reader = engine.snapshot(ReadAt::Latest).unwrap();
    let error = engine.recover_to_stable_timestamp().unwrap_err();
    assert_eq!(error.code, ErrorCode::ConflictingOperationInProgress);
    drop(reader);
    engine.recover_to_stable_timestamp().unwrap();
    engine.close().unwrap();
}

#[test]
fn data_survives_a_clean_restart_and_journaled_commits_survive_a_crash() {
    for backend in backends() {
        if matches!(backend.backend, cairn_storage::Backend::Memory) {
            continue;
        }
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(1), &value("clean")).unwrap();
        unit.commit(Durability::Visible).unwrap();
        engine.close().unwrap();
        let engine = open(&backend.backend, &clock);
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(
            snapshot.get(TABLE, &key(1)).unwrap(),
            Some(value("clean")),
            "{}",
            backend.name
        );
        drop(snapshot);
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(2), &value("journaled")).unwrap();
        let journaled = unit.commit(Durability::Journaled).unwrap();
        if let cairn_storage::Backend::Crashable(memory) = &backend.backend {
            let mut unit = engine.begin_write();
            unit.put(TABLE, &key(3), &value("lost")).unwrap();
            unit.commit(Durability::Visible).unwrap();
            engine.simulate_crash();
            memory.crash();
            let engine = open(&backend.backend, &clock);
            assert_eq!(engine.visible_timestamp(), journaled.last_ts);
            let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
            assert_eq!(
                snapshot.get(TABLE, &key(2)).unwrap(),
                Some(value("journaled"))
            );
            assert_eq!(snapshot.get(TABLE, &key(3)).unwrap(), None);
            drop(snapshot);
            engine.close().unwrap();
        } else {
            drop(engine);
            let engine = open(&backend.backend, &clock);
            let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
            assert_eq!(
                snapshot.get(TABLE, &key(2)).unwrap(),
                Some(value("journaled"))
            );
            drop(snapshot);
            engine.close().unwrap();
        }
    }
}

#[test]
fn concurrent_flushes_share_durable_commits_and_every_flushed_commit_survives_a_crash() {
    for backend in backends() {
        let clock = clock();
        let engine = open(&backend.backend, &clock);
        let threads = 8i64;
        let rounds = 25i64;
        let before = engine.stats();
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let engine = &engine;
                scope.spawn(move || {
                    for round in 0..rounds {
                        let mut unit = engine.begin_write();
                        unit.put(TABLE, &key(thread * rounds + round), &value("flushed"))
                            .unwrap();
                        let committed = unit.commit(Durability::Visible).unwrap();
                        let durable = engine.flush().unwrap();
                        assert!(
                            durable >= committed.last_ts,
                            "a flush covers every commit visible before it"
                        );
                    }
                });
            }
        });
        let after = engine.stats();
        let flushes = after.flushes - before.flushes;
        assert_eq!(flushes, (threads * rounds) as u64, "{}", backend.name);
        assert!(after.durable_ts >= after.visible_ts, "{}", backend.name);
        if backend.name == "disk" {
            // Eight threads flushing at once queue behind each other's fdatasync: some share
            // one (in one batch, or in one sync group).
            let syncs = after.journal_syncs - before.journal_syncs;
            assert!(
                syncs < flushes,
                "no flush shared an fdatasync: {syncs} for {flushes} flushes"
            );
        }
        if let cairn_storage::Backend::Crashable(memory) = &backend.backend {
            engine.simulate_crash();
            memory.crash();
            let engine = open(&backend.backend, &clock);
            let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
            for id in 0..threads * rounds {
                assert_eq!(
                    snapshot.get(TABLE, &key(id)).unwrap(),
                    Some(value("flushed")),
                    "key {id} was flushed before the crash"
                );
            }
            drop(snapshot);
            engine.close().unwrap();
        } else {
            engine.close().unwrap();
        }
    }
}

#[test]
fn a_second_engine_on_the_same_dbpath_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = cairn_storage::Backend::Disk(dir.path().to_path_buf());
    let clock = clock();
    let engine = open(&backend, &clock);
    let clock_dyn: Arc<dyn cairn_types::Clock> = clock.clone();
    let error =
        cairn_storage::Engine::open(common::config(), backend.clone(), clock_dyn).unwrap_err();
    assert_eq!(error.code, ErrorCode::DBPathInUse);
    engine.close().unwrap();
}

#[test]
fn a_damaged_data_file_is_reported_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let backend = cairn_storage::Backend::Disk(dir.path().to_path_buf());
    let clock = clock();
    let engine = open(&backend, &clock);
    let mut unit = engine.begin_write();
    for id in 0..200 {
        unit.put(TABLE, &key(id), &[7u8; 200]).unwrap();
    }
    unit.commit(Durability::Journaled).unwrap();
    engine.close().unwrap();
    let path = dir.path().join(cairn_storage::backend::DATA_FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    // Overwrite everything after the header region with garbage.
    for byte in bytes.iter_mut().skip(4096) {
        *byte = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    let clock_dyn: Arc<dyn cairn_types::Clock> = clock.clone();
    match cairn_storage::Engine::open(common::config(), backend, clock_dyn) {
        Err(error) => assert!(
            matches!(
                error.code,
                ErrorCode::DataCorruptionDetected | ErrorCode::InternalError
            ),
            "{error}"
        ),
        Ok(engine) => {
            // If redb could open the header, reading the damaged pages must fail clearly.
            let snapshot = engine.snapshot(ReadAt::Latest);
            let failed = match snapshot {
                Err(_) => true,
                Ok(snapshot) => snapshot.get(TABLE, &key(1)).is_err(),
            };
            assert!(failed, "damaged data must never be read as valid");
        }
    }
}

#[test]
fn snapshots_and_units_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<cairn_storage::Snapshot>();
    assert_send::<cairn_storage::WriteUnit>();
    assert_send::<cairn_storage::Engine>();
}

#[test]
fn oversized_values_and_keys_are_refused_and_the_engine_keeps_serving() {
    let clock = clock();
    let engine = open(&cairn_storage::Backend::Memory, &clock);
    let mut unit = engine.begin_write();
    let huge = vec![0u8; cairn_storage::VALUE_SIZE_MAX_BYTES + 1];
    assert_eq!(
        unit.put(TABLE, &key(1), &huge).unwrap_err().code,
        ErrorCode::BSONObjectTooLarge
    );
    let long_key = vec![1u8; cairn_storage::KEY_SIZE_MAX_BYTES + 1];
    assert_eq!(
        unit.put(TABLE, &long_key, b"v").unwrap_err().code,
        ErrorCode::KeyTooLong
    );
    // The largest allowed value is stored and read back whole.
    let largest = vec![7u8; cairn_types::limits::BSON_OBJECT_SIZE_MAX_BYTES];
    unit.put(TABLE, &key(2), &largest).unwrap();
    unit.commit(Durability::Journaled).unwrap();
    let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
    assert_eq!(
        snapshot
            .get(TABLE, &key(2))
            .unwrap()
            .map(|value| value.len()),
        Some(largest.len())
    );
    drop(snapshot);
    engine.close().unwrap();
}

#[test]
fn garbage_collection_keeps_up_with_more_than_one_pass_of_history() {
    let clock = clock();
    let config = cairn_storage::EngineConfig {
        gc_batch_entries_max: 100,
        ..common::config()
    };
    let engine = common::open_with(&cairn_storage::Backend::Memory, &clock, config);
    for round in 0..10u8 {
        let mut unit = engine.begin_write();
        for id in 0..100 {
            unit.put(TABLE, &key(id), &[round]).unwrap();
        }
        unit.commit(Durability::Visible).unwrap();
    }
    clock.advance(Duration::from_secs(400));
    // The background passes run back to back while each is full.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Every round after the first replaced a version (the first was never in the write log).
    while engine.stats().gc_entries < 900 {
        assert!(
            std::time::Instant::now() < deadline,
            "collected only {}",
            engine.stats().gc_entries
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    engine.close().unwrap();
}

#[test]
fn the_oplog_is_capped_by_size_but_never_below_the_stable_timestamp() {
    for backend in backends() {
        let clock = clock();
        let config = cairn_storage::EngineConfig {
            oplog_size_bytes: Some(4096),
            ..common::config()
        };
        let engine = common::open_with(&backend.backend, &clock, config);
        let mut last = None;
        for id in 0..100 {
            let mut unit = engine.begin_write();
            unit.put(TABLE, &key(id), b"x").unwrap();
            unit.append_oplog(doc! {"op": "i", "o": {"_id": id, "pad": "0123456789012345678901234567890123456789"}});
            last = Some(unit.commit(Durability::Visible).unwrap());
        }
        engine.set_stable_timestamp(last.unwrap().last_ts.predecessor().predecessor());
        engine.collect_garbage().unwrap();
        let stats = engine.stats();
        assert!(
            stats.oplog_bytes <= 4096 + 200,
            "{}: {} bytes",
            backend.name,
            stats.oplog_bytes
        );
        assert!(stats.oplog_entries_truncated > 0);
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        let remaining: Vec<Timestamp> = snapshot
            .oplog_scan(Bound::Unbounded, ScanDirection::Forward)
            .unwrap()
            .map(|entry| entry.unwrap().0)
            .collect();
        assert!(remaining.len() < 100);
        assert_eq!(
            *remaining.last().unwrap(),
            last.unwrap().last_ts,
            "the newest entries stay"
        );
        drop(snapshot);
        engine.close().unwrap();
    }
    // Entries at or after the stable timestamp are never truncated, whatever the cap (a
    // replica set whose majority lags keeps what it may need to roll back or replay).
    let clock = clock();
    let config = cairn_storage::EngineConfig {
        oplog_size_bytes: Some(1024),
        ..common::config()
    };
    let engine = common::open_with(&cairn_storage::Backend::Memory, &clock, config);
    engine.set_stable_timestamp(Timestamp::ZERO);
    for id in 0..50 {
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(id), b"x").unwrap();
        unit.append_oplog(
            doc! {"op": "i", "o": {"_id": id, "pad": "0123456789012345678901234567890123456789"}},
        );
        unit.commit(Durability::Visible).unwrap();
    }
    engine.collect_garbage().unwrap();
    assert!(engine.stats().oplog_bytes > 1024);
    assert_eq!(engine.stats().oplog_entries_truncated, 0);
    engine.close().unwrap();
}

/// An engine dropped without `close` writes what its memtable holds to redb before closing it
/// (closing redb makes its non-durable commits durable): a `j: false` commit that no journal
/// sync has reached survives the drop.
#[test]
fn an_engine_dropped_without_close_keeps_its_unflushed_commits() {
    let dir = tempfile::tempdir().unwrap();
    let backend = cairn_storage::Backend::Disk(dir.path().join("db"));
    let clock = clock();
    {
        let engine = open(&backend, &clock);
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(1), &value("unsynced")).unwrap();
        unit.commit(Durability::Visible).unwrap();
        // The clock does not move, so no periodic journal sync runs before the drop.
    }
    let engine = open(&backend, &clock);
    let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
    assert_eq!(
        snapshot.get(TABLE, &key(1)).unwrap(),
        Some(value("unsynced"))
    );
    drop(snapshot);
    engine.close().unwrap();
}

/// A batch that finds the journal full commits durably to redb itself; the batches still in
/// the memtable, which are older, go to redb first, so versions land in commit order and a
/// crash afterwards loses nothing acknowledged.
#[test]
fn a_batch_that_finds_the_journal_full_writes_the_memtable_first() {
    let memory = cairn_storage::CrashableMemory::new();
    let backend = cairn_storage::Backend::Crashable(memory.clone());
    let clock = clock();
    let config = cairn_storage::EngineConfig {
        journal_bytes_max: 1,
        ..common::config()
    };
    let engine = common::open_with(&backend, &clock, config.clone());
    for round in 0..6 {
        let mut unit = engine.begin_write();
        unit.put(TABLE, &key(0), &value(&format!("v{round}")))
            .unwrap();
        unit.commit(Durability::Journaled).unwrap();
        let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
        assert_eq!(
            snapshot.get(TABLE, &key(0)).unwrap(),
            Some(value(&format!("v{round}"))),
            "round {round}"
        );
    }
    let durable_commits = engine.stats().durable_commits;
    assert!(durable_commits >= 3, "{durable_commits} durable commits");
    engine.simulate_crash();
    memory.crash();
    let engine = common::open_with(&backend, &clock, config);
    let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
    assert_eq!(snapshot.get(TABLE, &key(0)).unwrap(), Some(value("v5")));
}

/// A unit whose key was committed after its snapshot queues for the key (taken at once, as it
/// is free) and retries owning it, with a new snapshot, instead of retrying with backoff and
/// competing for the key again.
#[test]
fn a_key_committed_after_the_snapshot_is_claimed_through_its_queue() {
    let clock = clock();
    let engine = open(&cairn_storage::Backend::Memory, &clock);
    let waits_before = engine.stats().write_conflict_waits;
    let mut attempts = 0;
    let options = RetryOptions {
        durability: Durability::Visible,
        deadline: None,
        check_interrupt: &mut || Ok(()),
        give_up_on_conflict: false,
    };
    write_conflict_retry(&engine, options, |unit| {
        attempts += 1;
        if attempts == 1 {
            // Another writer commits the key after this attempt's snapshot was taken.
            let mut other = engine.begin_write();
            other.put(TABLE, &key(7), &value("other")).unwrap();
            other.commit(Durability::Visible).unwrap();
        }
        let current = unit.get_for_update(TABLE, &key(7))?;
        assert_eq!(current, Some(value("other")).filter(|_| attempts > 1));
        unit.put(TABLE, &key(7), &value("mine"))
    })
    .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(engine.stats().write_conflict_waits, waits_before + 1);
    let snapshot = engine.snapshot(ReadAt::Latest).unwrap();
    assert_eq!(snapshot.get(TABLE, &key(7)).unwrap(), Some(value("mine")));
}

/// Garbage collection runs beside commits and truncates the capped oplog while they append to
/// it: the oplog's byte count (in memory, and as redb stores it for the next open) stays the
/// sum of the entries actually there. (It was set from totals taken before the other side's
/// change, which lost what one side did while the other ran.)
#[test]
fn the_oplog_byte_count_stays_exact_while_collection_truncates_beside_commits() {
    let memory = cairn_storage::CrashableMemory::new();
    let backend = cairn_storage::Backend::Crashable(memory);
    let clock = common::clock();
    let config = cairn_storage::EngineConfig {
        commit_mode: cairn_storage::CommitMode::Inline,
        oplog_size_bytes: Some(16 * 1024),
        gc_interval_ms: 1,
        ..common::config()
    };
    let oplog_sum = |engine: &cairn_storage::Engine| -> u64 {
        engine
            .snapshot(ReadAt::Latest)
            .unwrap()
            .oplog_scan(std::ops::Bound::Unbounded, ScanDirection::Forward)
            .unwrap()
            .map(|entry| entry.unwrap().1.len() as u64)
            .sum()
    };
    let engine = common::open_with(&backend, &clock, config.clone());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..2i64)
            .map(|writer| {
                let engine = engine.clone();
                scope.spawn(move || {
                    for n in 0..1_500i64 {
                        let mut unit = engine.begin_write();
                        unit.put(100, &key(writer * 10_000 + n), b"v").unwrap();
                        unit.append_oplog(doc! { "op": "i", "n": n, "pad": "x".repeat(64) });
                        unit.commit(Durability::Visible).unwrap();
                    }
                })
            })
            .collect();
        let collector = scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                clock.advance(Duration::from_millis(2));
                engine.run_periodic_work();
            }
        });
        for writer in writers {
            writer.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        collector.join().unwrap();
    });
    clock.advance(Duration::from_millis(2));
    engine.run_periodic_work();
    assert!(
        engine.stats().oplog_entries_truncated > 0,
        "the cap truncated the oplog"
    );
    assert_eq!(
        engine.timestamps().oplog_bytes,
        oplog_sum(&engine),
        "in memory"
    );
    engine.close().unwrap();
    let engine = common::open_with(&backend, &clock, config);
    assert_eq!(
        engine.timestamps().oplog_bytes,
        oplog_sum(&engine),
        "as stored"
    );
    engine.close().unwrap();
}
