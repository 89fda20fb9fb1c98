//! `EngineConfig::flusher_nice`: the flusher keeps the priority it inherits by default and
//! takes the configured one otherwise. In a test binary of its own, so that every flusher
//! thread of the process is one this test opened.
#![cfg(target_os = "linux")]

mod common;

use cairn_storage::{Backend, EngineConfig};
use common::{clock, open_with};
use std::time::{Duration, Instant};

/// The nice value in a `/proc/.../stat` line: field 19 of proc(5), counted after the name.
fn nice_of(stat: &str) -> i32 {
    let (_, rest) = stat.rsplit_once(") ").expect("pid (comm) fields");
    // After the name comes field 3 (the state).
    let nice = rest.split_whitespace().nth(19 - 3).expect("a nice field");
    nice.parse().expect("a number")
}

/// The nice values of this process's flusher threads (`cairn-storage-flush`, which /proc cuts
/// to 15 bytes).
fn flusher_nices() -> Vec<i32> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        if stat.contains("(cairn-storage-f) ") {
            nices.push(nice_of(&stat));
        }
    }
    nices
}

/// Waits until this process has exactly `count` flusher threads, all at nice `nice`.
fn wait_for_flushers(count: usize, nice: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nices = flusher_nices();
        if nices.len() == count && nices.iter().all(|&seen| seen == nice) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} flusher thread(s) at nice {nice}, found {nices:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_flusher_keeps_its_priority_unless_configured() {
    let inherited = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    let clock = clock();
    let engine = open_with(&Backend::Memory, &clock, common::config());
    wait_for_flushers(1, inherited);
    engine.close().unwrap();
    wait_for_flushers(0, inherited);

    let lowest = 19;
    assert_ne!(inherited, lowest, "run this test above the lowest priority");
    let config = EngineConfig {
        flusher_nice: Some(lowest),
        ..common::config()
    };
    let engine = open_with(&Backend::Memory, &clock, config);
    wait_for_flushers(1, lowest);
    engine.close().unwrap();
}
