//! Where the engine's redb database lives.
//!
//! The engine reaches the disk only through redb's five-method `StorageBackend`. [`Backend`]
//! picks one: a file in the dbpath, fresh memory, or [`CrashableMemory`], which keeps *live*
//! bytes (what the process wrote) apart from *durable* bytes (what the last `sync_data` made
//! durable) so that tests can simulate a power loss, optionally with a torn tail of unsynced
//! writes, and reopen from what would have survived.

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;

/// The file name of the engine's database inside the dbpath.
pub const DATA_FILE_NAME: &str = "cairn.redb";

/// Where the engine's data lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `<dbpath>/cairn.redb` on disk.
    Disk(PathBuf),
    /// A fresh in-memory database, gone when the engine closes.
    Memory,
    /// Memory that survives engine restarts and can simulate a crash.
    Crashable(CrashableMemory),
}

#[derive(Debug, Default)]
struct CrashState {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: what a crash may or may not have persisted.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// Length set since the last sync.
    unsynced_len: Option<u64>,
    syncs: u64,
}

/// In-memory storage with separate live and durable images (see the module header).
#[derive(Debug, Clone, Default)]
pub struct CrashableMemory {
    state: Arc<Mutex<CrashState>>,
}

impl CrashableMemory {
    pub fn new() -> CrashableMemory {
        CrashableMemory::default()
    }

    /// Simulates a power loss: the live image becomes the durable one; nothing unsynced
    /// survives. Only call while no engine has the storage open.
    pub fn crash(&self) {
        let mut state = self.state.lock();
        state.live = state.durable.clone();
        state.unsynced.clear();
        state.unsynced_len = None;
    }

    /// Simulates a power loss that persisted a random part of the unsynced writes: each write
    /// survives whole, partly (a torn sector run) or not at all, chosen by `seed`.
    pub fn crash_torn(&self, seed: u64) {
        let mut random = rand::rngs::StdRng::seed_from_u64(seed);
        let mut state = self.state.lock();
        let mut image = state.durable.clone();
        if let Some(length) = state.unsynced_len {
            if random.random_bool(0.5) {
                image.resize(length as usize, 0);
            }
        }
        for (offset, data) in &state.unsynced {
            let keep = match random.random_range(0..3) {
                0 => 0,
                1 => data.len(),
                _ => random.random_range(0..=data.len()) / 512 * 512,
            };
            let end = *offset as usize + keep;
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(&data[..keep]);
        }
        state.live = image;
        state.unsynced.clear();
        state.unsynced_len = None;
    }

    /// Number of `sync_data` calls so far (each is one fsync on a real disk).
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }
}

impl redb::StorageBackend for CrashableMemory {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.state.lock().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let state = self.state.lock();
        let end = offset as usize + out.len();
        if end > state.live.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        out.copy_from_slice(&state.live[offset as usize..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut state = self.state.lock();
        state.live.resize(len as usize, 0);
        state.unsynced_len = Some(len);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut state = self.state.lock();
        state.durable = state.live.clone();
        state.unsynced.clear();
        state.unsynced_len = None;
        state.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut state = self.state.lock();
        let end = offset as usize + data.len();
        if end > state.live.len() {
            state.live.resize(end, 0);
        }
        state.live[offset as usize..end].copy_from_slice(data);
        state.unsynced.push((offset, data.to_vec()));
        Ok(())
    }
}
