//! Where the engine's redb database lives.
//!
//! The engine reaches the disk only through redb's five-method `StorageBackend`. [`Backend`]
//! picks one: a file in the dbpath, fresh memory, or [`CrashableMemory`], which keeps *live*
//! bytes (what the process wrote) apart from *durable* bytes (what the last `sync_data` made
//! durable) so that tests can simulate a power loss, optionally with a torn tail of unsynced
//! writes, and reopen from what would have survived.

use cairn_types::{Error, ErrorCode};
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

/// In-memory storage with separate live and durable images (see the module header), for the
/// data file and for the journal.
#[derive(Debug, Clone)]
pub struct CrashableMemory {
    state: Arc<Mutex<CrashState>>,
    /// The images of the two journal files (none in a journal image itself).
    journals: Vec<Arc<Mutex<CrashState>>>,
    /// Whether this image's syncs are held ([`CrashableMemory::hold_data_syncs`]), and how
    /// many are waiting.
    hold: Arc<(Mutex<SyncHold>, parking_lot::Condvar)>,
}

#[derive(Debug, Default)]
struct SyncHold {
    held: bool,
    waiting: u64,
}

impl Default for CrashableMemory {
    fn default() -> Self {
        CrashableMemory::new()
    }
}

impl CrashState {
    fn crash(&mut self) {
        self.live = self.durable.clone();
        self.unsynced.clear();
        self.unsynced_len = None;
    }

    fn crash_torn(&mut self, seed: u64) {
        let mut random = rand::rngs::StdRng::seed_from_u64(seed);
        let mut image = self.durable.clone();
        if let Some(length) = self.unsynced_len {
            if random.random_bool(0.5) {
                image.resize(length as usize, 0);
            }
        }
        for (offset, data) in &self.unsynced {
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
        self.live = image;
        self.unsynced.clear();
        self.unsynced_len = None;
    }
}

impl CrashableMemory {
    pub fn new() -> CrashableMemory {
        CrashableMemory {
            state: Arc::default(),
            journals: (0..crate::journal::JOURNAL_FILE_NAMES.len())
                .map(|_| Arc::default())
                .collect(),
            hold: Arc::default(),
        }
    }

    /// From now until the next simulated crash the data file's syncs never complete: the
    /// thread that asks for one waits for good, as if the power went out while the disk was
    /// writing, and the crash finds what was being synced not on disk. (The journal's syncs go
    /// on.)
    pub fn hold_data_syncs(&self) {
        self.hold.0.lock().held = true;
    }

    /// Waits until a sync of the data file is held ([`CrashableMemory::hold_data_syncs`]).
    pub fn wait_for_a_held_sync(&self) {
        let (lock, signal) = &*self.hold;
        let mut hold = lock.lock();
        while hold.waiting == 0 {
            signal.wait(&mut hold);
        }
    }

    /// The image of journal file `index`, crashed together with the data's.
    pub(crate) fn journal_image(&self, index: usize) -> CrashableMemory {
        CrashableMemory {
            state: self.journals[index].clone(),
            journals: Vec::new(),
            hold: Arc::default(),
        }
    }

    fn images(&self) -> impl Iterator<Item = &Arc<Mutex<CrashState>>> {
        std::iter::once(&self.state).chain(self.journals.iter())
    }

    /// Simulates a power loss: the live images become the durable ones; nothing unsynced
    /// survives. Only call while no engine has the storage open.
    pub fn crash(&self) {
        for image in self.images() {
            image.lock().crash();
        }
        self.release_held_syncs();
    }

    /// After a crash, syncs complete again; one that was held never does.
    fn release_held_syncs(&self) {
        self.hold.0.lock().held = false;
    }

    /// Simulates a power loss that persisted a random part of the unsynced writes (of the data
    /// file and of the journal): each write survives whole, partly (a torn sector run) or not
    /// at all, chosen by `seed`.
    pub fn crash_torn(&self, seed: u64) {
        for (index, image) in self.images().enumerate() {
            image
                .lock()
                .crash_torn(seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        }
        self.release_held_syncs();
    }

    /// Number of `sync_data` calls so far, data file and journal (each is one fsync on a real
    /// disk).
    pub fn syncs(&self) -> u64 {
        self.images().map(|image| image.lock().syncs).sum()
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
        {
            let (lock, signal) = &*self.hold;
            let mut hold = lock.lock();
            if hold.held {
                hold.waiting += 1;
                signal.notify_all();
                loop {
                    signal.wait(&mut hold);
                }
            }
        }
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

/// The journal's two files for a backend (see [`crate::journal`]): `<dbpath>/cairn.journal.0`
/// and `.1` on disk (created, and made to survive a crash, on first use), fresh memory, or the
/// crashable memory's journal images.
pub(crate) fn open_journal_files(
    backend: &Backend,
) -> Result<[crate::journal::JournalFile; 2], Error> {
    let open = |index: usize| -> Result<crate::journal::JournalFile, Error> {
        match backend {
            Backend::Disk(dbpath) => {
                let path = dbpath.join(crate::journal::JOURNAL_FILE_NAMES[index]);
                let existed = path.exists();
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|error| {
                        Error::new(
                            ErrorCode::InternalError,
                            format!("cannot open the journal {}: {error}", path.display()),
                        )
                    })?;
                if !existed {
                    // The new file's directory entry must survive a crash as its contents do.
                    std::fs::File::open(dbpath)
                        .and_then(|directory| directory.sync_all())
                        .map_err(|error| {
                            Error::new(
                                ErrorCode::InternalError,
                                format!("cannot sync the dbpath {}: {error}", dbpath.display()),
                            )
                        })?;
                }
                Ok(Box::new(DiskFile(file)))
            }
            Backend::Memory => Ok(Box::new(redb::backends::InMemoryBackend::new())),
            Backend::Crashable(memory) => Ok(Box::new(memory.journal_image(index))),
        }
    };
    Ok([open(0)?, open(1)?])
}

/// A plain file behind redb's storage-backend interface (no locking: the data file's lock
/// already keeps other processes out of the dbpath).
#[derive(Debug)]
struct DiskFile(std::fs::File);

impl redb::StorageBackend for DiskFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, data, offset)
    }
}

/// A second handle on the data file, used only to start the kernel's write-back of pages redb
/// has written but not yet synced (see [`DataFileWriteback::start`]).
#[derive(Debug)]
pub(crate) struct DataFileWriteback(std::fs::File);

impl DataFileWriteback {
    /// For a disk backend: a read-only handle on `<dbpath>/cairn.redb`.
    pub(crate) fn open(backend: &Backend) -> Option<DataFileWriteback> {
        match backend {
            Backend::Disk(dbpath) => std::fs::File::open(dbpath.join(DATA_FILE_NAME))
                .ok()
                .map(DataFileWriteback),
            _ => None,
        }
    }

    /// Starts writing the file's dirty pages back without waiting for them
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that the next durable redb commit's
    /// fdatasync, which runs under the writer mutex, finds little left to write. It changes
    /// nothing about what is durable: the kernel writes dirty pages back on its own schedule in
    /// any case, and redb's commit protocol only trusts what its durable commits synced.
    #[allow(unsafe_code)]
    pub(crate) fn start(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the life of `self`; the call only reads it and
        // touches no memory of ours.
        let status =
            unsafe { libc::sync_file_range(self.0.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        if status != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "starting the data file's write-back failed"
            );
        }
    }
}
