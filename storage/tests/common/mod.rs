//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use bson::Bson;
use cairn_storage::{Backend, CommitMode, CrashableMemory, Engine, EngineConfig};
use cairn_types::{Clock, ManualClock, keystring};
use std::sync::Arc;

/// A backend under test, with whatever keeps it alive.
pub struct TestBackend {
    pub name: &'static str,
    pub backend: Backend,
    pub _dir: Option<tempfile::TempDir>,
}

/// Every backend the engine supports: the shared suite runs over each.
pub fn backends() -> Vec<TestBackend> {
    let dir = tempfile::tempdir().expect("temporary directory");
    vec![
        TestBackend {
            name: "memory",
            backend: Backend::Memory,
            _dir: None,
        },
        TestBackend {
            name: "crashable",
            backend: Backend::Crashable(CrashableMemory::new()),
            _dir: None,
        },
        TestBackend {
            name: "disk",
            backend: Backend::Disk(dir.path().join("db")),
            _dir: Some(dir),
        },
    ]
}

/// A clock at a fixed, realistic wall time that moves only when told to.
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

pub fn config() -> EngineConfig {
    EngineConfig {
        oplog_size_bytes: Some(64 * 1024 * 1024),
        cache_size_bytes: 16 * 1024 * 1024,
        commit_mode: CommitMode::Background,
        ..EngineConfig::default()
    }
}

pub fn open(backend: &Backend, clock: &Arc<ManualClock>) -> Engine {
    open_with(backend, clock, config())
}

pub fn open_with(backend: &Backend, clock: &Arc<ManualClock>, config: EngineConfig) -> Engine {
    let clock: Arc<dyn Clock> = clock.clone();
    Engine::open(config, backend.clone(), clock).expect("engine opens")
}

/// The storage key of an integer `_id`.
pub fn key(id: i64) -> Vec<u8> {
    keystring::encode(&Bson::Int64(id))
}
