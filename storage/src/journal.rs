//! The journal: one checksummed record per commit batch, so that a `j: true` commit needs one
//! sequential write and one fdatasync instead of a durable redb commit.
//!
//! How it fits (docs/storage.md, "Durability"):
//! - Every batch commits to redb without durability, then its record is appended here, then the
//!   batch becomes visible. A record holds each unit's commit timestamps and staged writes,
//!   stamped oplog entries, drops and idents: everything needed to apply the batch again.
//! - A `j: true` commit returns once the journal is synced through its record. The sync runs
//!   after the leader has handed the writer over, so the next batch is applied while this one
//!   syncs, and every record written by then shares the fdatasync.
//! - The journal has two files; generation `g` is written to file `g % 2` from offset 0.
//! - The periodic durable redb commit (every `data_sync_interval_ms`, and the periodic
//!   checkpoint) holds up no commit. It first *switches* the journal to the next generation, in
//!   the other file ([`Journal::switch`]); commits go on appending there. Then it writes the
//!   memtable to redb and commits durably, recording the new generation. Once that commit is on
//!   disk, the old generation's records are not needed ([`Journal::closed`]), and its file is
//!   free for the generation after next.
//! - Until then the old generation *closes*: nothing of the new generation is written to its
//!   file before the old file is written out and fdatasynced through its last record. So records
//!   of the new generation on disk mean the old generation's records are all on disk too.
//! - Other durable redb commits (a checkpoint that is asked for, shutdown, a batch that finds the
//!   journal full, recovery to stable, oplog truncation) run under the writer mutex: no commit
//!   runs meanwhile, and the journal restarts in the next generation's file ([`Journal::restart`]).
//! - Recovery: redb returns to its last durable commit; the records of the generation it names
//!   are read from offset 0 of its file, then those of the next generation from the other file
//!   (a switch whose durable commit did not complete). Each file is read until the first record
//!   that is not whole: bad magic, another generation (bytes of an older one), a length past the
//!   end, or a checksum mismatch (a torn tail). Nothing of a record that is not whole is applied,
//!   and records redb already holds are skipped.
//!
//! Record layout (little-endian): `magic u32 | crc32c u32 (of everything after it) | generation
//! u64 | payload length u32 | unit count u32 | last commit timestamp u64 | payload`.

use crate::committer::{BatchUnit, StagedWrite};
use crate::engine::storage_error;
use cairn_types::{Error, ErrorCode, Timestamp};
use parking_lot::Mutex;
use std::borrow::Cow;

/// The journal's two file names inside the dbpath: generation `g` is in file `g % 2`.
pub const JOURNAL_FILE_NAMES: [&str; 2] = ["cairn.journal.0", "cairn.journal.1"];

/// The index of the file that holds `generation`'s records.
fn file_index(generation: u64) -> usize {
    (generation % 2) as usize
}

const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"CJRN");
/// Bytes of a record header.
pub(crate) const RECORD_HEADER_BYTES: usize = 32;
/// The file grows by zero-filled chunks of this size, so that an fdatasync after an append
/// usually has no file size to write.
const JOURNAL_GROW_BYTES: u64 = 4 * 1024 * 1024;
/// A value length meaning "delete".
const DELETE_MARKER: u32 = u32::MAX;

/// Where the journal's bytes live: the redb storage-backend interface (a file, memory, or the
/// crashable memory of the tests).
pub(crate) type JournalFile = Box<dyn redb::StorageBackend>;

/// The end of the journal.
#[derive(Debug)]
struct Tail {
    generation: u64,
    /// File offset after the newest record (written or buffered).
    offset: u64,
    /// Records appended and not yet written to the file, which start at `offset -
    /// buffer.len()`. Written (and synced) by `sync_through`, outside the writer mutex.
    buffer: Vec<u8>,
    /// Journal sequence number: bytes appended since the engine opened, across generations.
    lsn: u64,
    /// Commit timestamp of the newest record appended.
    last_ts: Timestamp,
    /// The previous generation, after a [`Journal::switch`], until its file is synced through
    /// its last record or a durable redb commit holds its records ([`Journal::closed`]).
    closing: Option<Closing>,
}

/// The end of a generation that a switch left: what remains to write and sync of it.
#[derive(Debug)]
struct Closing {
    generation: u64,
    /// Records not yet written to the file, which start at `start`.
    buffer: Vec<u8>,
    start: u64,
    /// The journal sequence number and the commit timestamp of its last record.
    lsn: u64,
    last_ts: Timestamp,
}

/// What is known to be on disk.
#[derive(Debug, Clone, Copy)]
struct Synced {
    lsn: u64,
    ts: Timestamp,
}

pub(crate) struct Journal {
    files: [JournalFile; 2],
    tail: Mutex<Tail>,
    synced: Mutex<Synced>,
    /// Held by the one thread that writes out and syncs (so the file is written only in order,
    /// and a caller that waited here finds its record already synced).
    writer: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    /// Bytes each file has (written or zero-filled).
    allocated: [u64; 2],
    /// The first write or sync error. It sticks: after a failed write the file has a gap, and
    /// after a failed fdatasync Linux may report the lost pages clean, so no later sync may
    /// claim that anything after it is durable.
    failed: Option<Error>,
    /// The buffer written out last, emptied, kept for the tail to fill next: appends then
    /// copy into memory that is already there, instead of growing a new buffer (each growth a
    /// reallocation and page faults on fresh pages, 5% of a network thread's time in YCSB A).
    spare: Vec<u8>,
}

/// A written-out buffer larger than this is dropped rather than kept as the spare.
const SPARE_BUFFER_BYTES_MAX: usize = 8 * 1024 * 1024;

/// What recovery read from the journal.
#[derive(Debug, Default)]
pub(crate) struct JournalScan {
    /// Each record's last commit timestamp and where its payload (the units of one batch) is in
    /// `image`.
    pub records: Vec<(Timestamp, std::ops::Range<usize>)>,
    /// The files as read, one after the other: payloads are decoded from it in place.
    pub image: Vec<u8>,
    /// The newest generation that has records (the one asked for if none has).
    pub generation: u64,
    pub bytes: u64,
    /// Why reading stopped before the end of the file at a record that was not whole, if it
    /// did (a torn or damaged tail).
    pub cut: Option<String>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("tail", &*self.tail.lock())
            .finish_non_exhaustive()
    }
}

fn io_error(context: &str, error: impl std::fmt::Display) -> Error {
    storage_error(context, error)
}

impl Journal {
    /// A journal over its two `files`, appending records of `generation` from offset 0 of its
    /// file. `durable_ts` is the newest commit already durable without it.
    pub(crate) fn new(
        files: [JournalFile; 2],
        generation: u64,
        durable_ts: Timestamp,
    ) -> Result<Journal, Error> {
        let mut allocated = [0; 2];
        for (index, file) in files.iter().enumerate() {
            allocated[index] = file
                .len()
                .map_err(|error| io_error("reading the journal's length", error))?;
        }
        Ok(Journal {
            files,
            tail: Mutex::new(Tail {
                generation,
                offset: 0,
                buffer: Vec::new(),
                lsn: 0,
                last_ts: durable_ts,
                closing: None,
            }),
            synced: Mutex::new(Synced {
                lsn: 0,
                ts: durable_ts,
            }),
            writer: Mutex::new(FileState {
                allocated,
                failed: None,
                spare: Vec::new(),
            }),
        })
    }

    /// Reads the whole records of `generation` from the start of its file, then those of the
    /// next generation from the start of the other file (the records after a switch whose
    /// durable commit did not complete).
    pub(crate) fn scan(files: &[JournalFile; 2], generation: u64) -> Result<JournalScan, Error> {
        let mut scan = JournalScan {
            generation,
            ..JournalScan::default()
        };
        Self::scan_file(&files[file_index(generation)], generation, &mut scan)?;
        let first = scan.records.len();
        let cut = scan.cut.take();
        let next = generation.wrapping_add(1);
        Self::scan_file(&files[file_index(next)], next, &mut scan)?;
        if scan.records.len() > first {
            if let Some(cut) = cut {
                // The next generation is written only after the previous one is synced whole.
                return Err(Error::new(
                    ErrorCode::DataCorruptionDetected,
                    format!(
                        "journal generation {generation} is damaged ({cut}) but the next generation has records after it: restore from a backup or resync this member"
                    ),
                ));
            }
            scan.generation = next;
        } else {
            scan.cut = scan.cut.take().or(cut);
        }
        Ok(scan)
    }

    /// Appends the whole records of `generation` at the start of `file` to `scan`.
    fn scan_file(file: &JournalFile, generation: u64, scan: &mut JournalScan) -> Result<(), Error> {
        let length = file
            .len()
            .map_err(|error| io_error("reading the journal's length", error))?;
        let base = scan.image.len();
        scan.image.resize(base + length as usize, 0);
        file.read(0, &mut scan.image[base..])
            .map_err(|error| io_error("reading the journal", error))?;
        let bytes = &scan.image[base..];
        let mut offset = 0usize;
        while offset + RECORD_HEADER_BYTES <= bytes.len() {
            let header = &bytes[offset..offset + RECORD_HEADER_BYTES];
            let magic = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
            let record_generation = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
            if magic != RECORD_MAGIC || record_generation != generation {
                // Zero fill or an older generation's bytes: the end of this generation.
                break;
            }
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let payload_len = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
            let last_ts =
                Timestamp::from_u64(u64::from_le_bytes(header[24..32].try_into().expect("8")));
            let end = offset + RECORD_HEADER_BYTES + payload_len as usize;
            if end > bytes.len() {
                scan.cut = Some(format!(
                    "the record at offset {offset} of generation {generation} runs past the end of its file"
                ));
                break;
            }
            if crc32c::crc32c(&bytes[offset + 8..end]) != crc {
                scan.cut = Some(format!(
                    "checksum mismatch in the record at offset {offset} of generation {generation}"
                ));
                break;
            }
            scan.records
                .push((last_ts, base + offset + RECORD_HEADER_BYTES..base + end));
            scan.bytes += (end - offset) as u64;
            offset = end;
        }
        Ok(())
    }

    pub(crate) fn generation(&self) -> u64 {
        self.tail.lock().generation
    }

    /// Bytes appended since the engine opened.
    pub(crate) fn written_lsn(&self) -> u64 {
        self.tail.lock().lsn
    }

    /// Bytes of the current generation.
    pub(crate) fn generation_bytes(&self) -> u64 {
        self.tail.lock().offset
    }

    /// Whether records were appended that are not yet synced.
    pub(crate) fn unsynced(&self) -> bool {
        let lsn = self.tail.lock().lsn;
        self.synced.lock().lsn < lsn
    }

    /// Bytes appended and not yet written to the file.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.tail.lock().buffer.len()
    }

    /// Appends a record (built by [`encode_record`], header left to fill) for a batch whose
    /// newest commit timestamp is `last_ts`, to the buffer: no system call. Returns the journal
    /// sequence number after it. Called by the committer only (under the writer mutex), so
    /// records are in commit order.
    pub(crate) fn append(&self, mut record: Vec<u8>, last_ts: Timestamp) -> u64 {
        let mut tail = self.tail.lock();
        assert!(
            last_ts > tail.last_ts,
            "journal records must be appended in commit order"
        );
        let payload_len = record.len() - RECORD_HEADER_BYTES;
        record[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        record[8..16].copy_from_slice(&tail.generation.to_le_bytes());
        record[16..20].copy_from_slice(
            &u32::try_from(payload_len)
                .expect("a journal record is under 4 GiB")
                .to_le_bytes(),
        );
        record[24..32].copy_from_slice(&last_ts.as_u64().to_le_bytes());
        let crc = crc32c::crc32c(&record[8..]);
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        tail.offset += record.len() as u64;
        tail.lsn += record.len() as u64;
        tail.last_ts = last_ts;
        if tail.buffer.capacity() == 0 {
            tail.buffer = record;
        } else {
            tail.buffer.extend_from_slice(&record);
        }
        tail.lsn
    }

    /// Writes the buffered records to the file and, if `sync`, makes the journal durable
    /// through `lsn`. Returns the newest commit timestamp known to be durable through the
    /// journal and whether this call ran an fdatasync.
    pub(crate) fn sync_through(&self, lsn: u64, sync: bool) -> Result<(Timestamp, bool), Error> {
        {
            let synced = self.synced.lock();
            if synced.lsn >= lsn {
                return Ok((synced.ts, false));
            }
        }
        let mut file = self.writer.lock();
        if let Some(error) = &file.failed {
            return Err(error.clone());
        }
        {
            let synced = self.synced.lock();
            if synced.lsn >= lsn {
                return Ok((synced.ts, false));
            }
        }
        // A closing generation first: nothing of the next reaches the disk before it is synced.
        let closing = self.tail.lock().closing.take();
        if let Some(closing) = closing {
            let index = file_index(closing.generation);
            let closed = self.write_and_sync(
                &mut file.allocated[index],
                index,
                &closing.buffer,
                closing.start,
                true,
            );
            if let Err(error) = closed {
                file.failed = Some(error.clone());
                return Err(error);
            }
            let mut synced = self.synced.lock();
            if closing.lsn > synced.lsn {
                *synced = Synced {
                    lsn: closing.lsn,
                    ts: closing.last_ts,
                };
            }
            if synced.lsn >= lsn {
                return Ok((synced.ts, true));
            }
        }
        // Everything appended before the fdatasync starts is covered by it.
        let (mut chunk, start, target_lsn, target_ts, index) = {
            let mut tail = self.tail.lock();
            let spare = std::mem::take(&mut file.spare);
            let chunk = std::mem::replace(&mut tail.buffer, spare);
            let start = tail.offset - chunk.len() as u64;
            (
                chunk,
                start,
                tail.lsn,
                tail.last_ts,
                file_index(tail.generation),
            )
        };
        match self.write_and_sync(&mut file.allocated[index], index, &chunk, start, sync) {
            Ok(()) => {}
            Err(error) => {
                file.failed = Some(error.clone());
                return Err(error);
            }
        }
        if chunk.capacity() <= SPARE_BUFFER_BYTES_MAX {
            chunk.clear();
            file.spare = chunk;
        }
        if !sync {
            return Ok((self.synced.lock().ts, false));
        }
        let mut synced = self.synced.lock();
        if target_lsn > synced.lsn {
            *synced = Synced {
                lsn: target_lsn,
                ts: target_ts,
            };
        }
        Ok((synced.ts, true))
    }

    fn write_and_sync(
        &self,
        allocated: &mut u64,
        index: usize,
        chunk: &[u8],
        start: u64,
        sync: bool,
    ) -> Result<(), Error> {
        if !chunk.is_empty() {
            let end = start + chunk.len() as u64;
            if end > *allocated {
                // Zeros written, not a hole: writing into a hole allocates blocks, and the
                // fdatasync after it would have to write that metadata too.
                let grown = end.div_ceil(JOURNAL_GROW_BYTES) * JOURNAL_GROW_BYTES;
                let zeros = vec![0u8; (grown - *allocated) as usize];
                self.files[index]
                    .set_len(grown)
                    .and_then(|()| self.files[index].write(*allocated, &zeros))
                    .map_err(|error| io_error("growing the journal", error))?;
                *allocated = grown;
            }
            self.files[index]
                .write(start, chunk)
                .map_err(|error| io_error("writing the journal", error))?;
        }
        if sync {
            self.files[index]
                .sync_data()
                .map_err(|error| io_error("syncing the journal", error))?;
        }
        Ok(())
    }

    /// Starts `generation` at offset 0 of its file, after a durable redb commit that recorded
    /// it and holds every commit through `durable_ts` (so every record appended so far, whose
    /// buffered bytes are dropped). Called with no commit running (under the writer mutex).
    pub(crate) fn restart(&self, generation: u64, durable_ts: Timestamp) {
        let mut tail = self.tail.lock();
        assert!(
            generation > tail.generation,
            "journal generations only increase"
        );
        tail.generation = generation;
        tail.offset = 0;
        tail.buffer = Vec::new();
        tail.last_ts = durable_ts;
        tail.closing = None;
        let mut synced = self.synced.lock();
        *synced = Synced {
            lsn: tail.lsn,
            ts: durable_ts,
        };
    }

    /// Starts the next generation in the other file while commits go on appending: the
    /// current generation closes (see the module header). Returns the new generation and the
    /// commit timestamp of the closed generation's last record. One generation closes at a
    /// time: the caller makes the durable redb commit that records the new generation, and
    /// calls [`Journal::closed`], before it switches again.
    pub(crate) fn switch(&self) -> (u64, Timestamp) {
        let mut tail = self.tail.lock();
        assert!(
            tail.closing.is_none(),
            "a generation closes only after the previous one has"
        );
        let buffer = std::mem::take(&mut tail.buffer);
        let unsynced = self.synced.lock().lsn < tail.lsn;
        if unsynced {
            tail.closing = Some(Closing {
                generation: tail.generation,
                start: tail.offset - buffer.len() as u64,
                buffer,
                lsn: tail.lsn,
                last_ts: tail.last_ts,
            });
        }
        tail.generation += 1;
        tail.offset = 0;
        (tail.generation, tail.last_ts)
    }

    /// A durable redb commit that records `generation` (after [`Journal::switch`] to it) is on
    /// disk: it holds every record of the generations before, so the closing one needs neither
    /// writing nor syncing, and counts as durable.
    pub(crate) fn closed(&self, generation: u64) {
        // Waits out a write of the closing records that is under way, so that none lands in
        // the file after the generation after next has started there.
        let _file = self.writer.lock();
        let mut tail = self.tail.lock();
        assert_eq!(
            tail.generation, generation,
            "closing the switched generation"
        );
        if let Some(closing) = tail.closing.take() {
            let mut synced = self.synced.lock();
            if closing.lsn > synced.lsn {
                *synced = Synced {
                    lsn: closing.lsn,
                    ts: closing.last_ts,
                };
            }
        }
    }
}

/// Largest payload of one record (its length is a u32).
pub(crate) const RECORD_PAYLOAD_BYTES_MAX: usize = u32::MAX as usize;

/// The payload bytes of a record for these units.
pub(crate) fn payload_size(units: &[BatchUnit<'_>]) -> usize {
    8 + units
        .iter()
        .map(|unit| {
            32 + unit.stamps.len() * 8
                + unit
                    .writes
                    .iter()
                    .map(|write| {
                        20 + write.key.len() + write.value.as_ref().map_or(0, |value| value.len())
                    })
                    .sum::<usize>()
                + unit
                    .oplog
                    .iter()
                    .map(|entry| 4 + entry.len())
                    .sum::<usize>()
                + unit.drops.len() * 12
        })
        .sum::<usize>()
}

/// The payload's stable timestamp when stable follows the newest commit.
const STABLE_FOLLOWS_NEWEST: u64 = u64::MAX;

/// Encodes the units of one batch, and the stable timestamp its commit recorded (`None`:
/// stable follows the newest commit), as a record whose header [`Journal::append`] fills in.
/// `size` is [`payload_size`] of the units (which the caller has already computed).
pub(crate) fn encode_record(
    units: &[BatchUnit<'_>],
    stable: Option<Timestamp>,
    size: usize,
) -> Vec<u8> {
    assert!(
        size <= RECORD_PAYLOAD_BYTES_MAX,
        "the committer commits a batch this large durably instead"
    );
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + size);
    out.resize(RECORD_HEADER_BYTES, 0);
    out.extend_from_slice(
        &stable
            .map_or(STABLE_FOLLOWS_NEWEST, Timestamp::as_u64)
            .to_le_bytes(),
    );
    out[20..24].copy_from_slice(
        &u32::try_from(units.len())
            .expect("unit count fits u32")
            .to_le_bytes(),
    );
    let u32_of = |value: usize| u32::try_from(value).expect("journal field fits u32");
    for unit in units {
        out.extend_from_slice(&u32_of(unit.stamps.len()).to_le_bytes());
        for stamp in unit.stamps.iter() {
            out.extend_from_slice(&stamp.as_u64().to_le_bytes());
        }
        out.extend_from_slice(&unit.max_ident.to_le_bytes());
        out.extend_from_slice(&u32_of(unit.writes.len()).to_le_bytes());
        for write in unit.writes.iter() {
            out.extend_from_slice(&write.ident.to_le_bytes());
            out.extend_from_slice(&write.slot.to_le_bytes());
            out.extend_from_slice(&u32_of(write.key.len()).to_le_bytes());
            out.extend_from_slice(&write.key);
            match &write.value {
                Some(value) => {
                    let length = u32_of(value.len());
                    assert!(length != DELETE_MARKER, "value length is below 4 GiB");
                    out.extend_from_slice(&length.to_le_bytes());
                    out.extend_from_slice(value);
                }
                None => out.extend_from_slice(&DELETE_MARKER.to_le_bytes()),
            }
        }
        out.extend_from_slice(&u32_of(unit.oplog.len()).to_le_bytes());
        for entry in &unit.oplog {
            out.extend_from_slice(&u32_of(entry.len()).to_le_bytes());
            out.extend_from_slice(entry);
        }
        out.extend_from_slice(&u32_of(unit.drops.len()).to_le_bytes());
        for (ident, slot) in unit.drops.iter() {
            out.extend_from_slice(&ident.to_le_bytes());
            out.extend_from_slice(&slot.to_le_bytes());
        }
    }
    out
}

/// Reads a whole (checksummed) record's payload. A payload that does not parse is damage the
/// checksum did not catch: DataCorruptionDetected.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], Error> {
        let end = self
            .at
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::new(
                ErrorCode::DataCorruptionDetected,
                "a journal record is malformed (shorter than its contents)",
            ));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn count(&mut self, min_item_bytes: usize) -> Result<usize, Error> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_item_bytes) > self.bytes.len() - self.at {
            return Err(Error::new(
                ErrorCode::DataCorruptionDetected,
                "a journal record is malformed (a count past its end)",
            ));
        }
        Ok(count)
    }
}

/// A decoded record: the units of its batch and the stable timestamp its commit recorded.
pub(crate) struct DecodedRecord {
    pub units: Vec<BatchUnit<'static>>,
    pub stable: Option<Timestamp>,
}

/// Decodes a record's payload.
pub(crate) fn decode_payload(payload: &[u8]) -> Result<DecodedRecord, Error> {
    let mut reader = Reader {
        bytes: payload,
        at: 0,
    };
    let stable = match reader.u64()? {
        STABLE_FOLLOWS_NEWEST => None,
        ts => Some(Timestamp::from_u64(ts)),
    };
    let mut units = Vec::new();
    while reader.at < payload.len() {
        let slots = reader.count(8)?;
        let stamps = (0..slots)
            .map(|_| reader.u64().map(Timestamp::from_u64))
            .collect::<Result<Vec<_>, Error>>()?;
        let max_ident = reader.u64()?;
        let write_count = reader.count(20)?;
        let mut writes = Vec::with_capacity(write_count);
        for _ in 0..write_count {
            let ident = reader.u64()?;
            let slot = reader.u32()?;
            let key_len = reader.u32()? as usize;
            let key = reader.take(key_len)?.to_vec();
            let value_len = reader.u32()?;
            let value = if value_len == DELETE_MARKER {
                None
            } else {
                Some(reader.take(value_len as usize)?.to_vec())
            };
            writes.push(StagedWrite {
                ident,
                key,
                value,
                slot,
            });
        }
        let oplog_count = reader.count(4)?;
        let mut oplog = Vec::with_capacity(oplog_count);
        for _ in 0..oplog_count {
            let length = reader.u32()? as usize;
            oplog.push(reader.take(length)?.to_vec());
        }
        let drop_count = reader.count(12)?;
        let mut drops = Vec::with_capacity(drop_count);
        for _ in 0..drop_count {
            let ident = reader.u64()?;
            let slot = reader.u32()?;
            drops.push((ident, slot));
        }
        let slot_ok = |slot: u32| (slot as usize) < stamps.len();
        if stamps.is_empty()
            || stamps.windows(2).any(|pair| pair[0] >= pair[1])
            || !writes.iter().all(|write| slot_ok(write.slot))
            || oplog.len() > stamps.len()
            || !drops.iter().all(|(_, slot)| slot_ok(*slot))
        {
            return Err(Error::new(
                ErrorCode::DataCorruptionDetected,
                "a journal record is malformed (timestamps or slots out of order)",
            ));
        }
        units.push(BatchUnit {
            stamps,
            writes: Cow::Owned(writes),
            oplog,
            drops: Cow::Owned(drops),
            max_ident,
        });
    }
    if units.is_empty() {
        return Err(Error::new(
            ErrorCode::DataCorruptionDetected,
            "a journal record is malformed (no units of work)",
        ));
    }
    Ok(DecodedRecord { units, stable })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(first: u64, writes: usize) -> BatchUnit<'static> {
        let stamps = vec![
            Timestamp::new(100, first as u32),
            Timestamp::new(100, first as u32 + 1),
        ];
        let writes = (0..writes)
            .map(|index| StagedWrite {
                ident: 16 + index as u64,
                key: vec![index as u8; index + 1],
                value: (index % 3 != 2).then(|| vec![0xAB; index * 7]),
                slot: (index % 2) as u32,
            })
            .collect::<Vec<_>>();
        BatchUnit {
            stamps,
            writes: Cow::Owned(writes),
            oplog: vec![b"entry".to_vec()],
            drops: Cow::Owned(vec![(17, 1)]),
            max_ident: 40 + first,
        }
    }

    fn memory() -> [JournalFile; 2] {
        [
            Box::new(redb::backends::InMemoryBackend::new()),
            Box::new(redb::backends::InMemoryBackend::new()),
        ]
    }

    /// One file with `bytes` as journal file `index`, the other empty.
    fn files_with(index: usize, bytes: &[u8]) -> [JournalFile; 2] {
        let files = memory();
        files[index].set_len(bytes.len() as u64).unwrap();
        files[index].write(0, bytes).unwrap();
        files
    }

    fn same(left: &BatchUnit<'_>, right: &BatchUnit<'_>) -> bool {
        left.stamps == right.stamps
            && left.oplog == right.oplog
            && left.drops == right.drops
            && left.max_ident == right.max_ident
            && left.writes.len() == right.writes.len()
            && left.writes.iter().zip(right.writes.iter()).all(|(a, b)| {
                a.ident == b.ident && a.key == b.key && a.value == b.value && a.slot == b.slot
            })
    }

    /// Appends records of `generation` for units starting at the given increments, and syncs.
    fn write(journal: &Journal, firsts: &[u64]) {
        for first in firsts {
            let units = [unit(*first, 5)];
            let last = Timestamp::new(100, *first as u32 + 1);
            journal.append(
                encode_record(&units, Some(Timestamp::new(99, 1)), payload_size(&units)),
                last,
            );
        }
        journal.sync_through(journal.written_lsn(), true).unwrap();
    }

    #[test]
    fn appends_refill_the_buffer_written_out_before_last() {
        let journal = Journal::new(memory(), 7, Timestamp::ZERO).unwrap();
        let firsts: Vec<u64> = (0..40).map(|index| 1 + 2 * index).collect();
        let (first_half, second_half) = firsts.split_at(20);
        write(&journal, first_half);
        let written = journal.written_lsn() as usize;
        // The first buffer is now the spare; the next write-out swaps it in as the tail's.
        write(&journal, &second_half[..1]);
        assert!(
            journal.tail.lock().buffer.capacity() >= written,
            "the tail fills the buffer written out before, with room for what it held"
        );
        write(&journal, &second_half[1..]);
        let scan = Journal::scan(&journal.files, 7).unwrap();
        assert_eq!(scan.cut, None);
        assert_eq!(scan.records.len(), 40, "no record lost or repeated");
        for ((last, _), first) in scan.records.iter().zip(&firsts) {
            assert_eq!(*last, Timestamp::new(100, *first as u32 + 1));
        }
    }

    #[test]
    fn a_written_out_buffer_over_the_limit_is_not_kept() {
        let journal = Journal::new(memory(), 7, Timestamp::ZERO).unwrap();
        let mut units = [unit(1, 1)];
        units[0].writes.to_mut()[0].value = Some(vec![0xCD; SPARE_BUFFER_BYTES_MAX + 1]);
        journal.append(
            encode_record(&units, Some(Timestamp::new(99, 1)), payload_size(&units)),
            Timestamp::new(100, 2),
        );
        journal.sync_through(journal.written_lsn(), true).unwrap();
        assert_eq!(
            journal.writer.lock().spare.capacity(),
            0,
            "a buffer past SPARE_BUFFER_BYTES_MAX is dropped, not held"
        );
        // A small one is kept.
        write(&journal, &[3]);
        assert!(journal.writer.lock().spare.capacity() > 0);
        let scan = Journal::scan(&journal.files, 7).unwrap();
        assert_eq!(scan.records.len(), 2);
    }

    #[test]
    fn records_round_trip_in_order() {
        let journal = Journal::new(memory(), 7, Timestamp::ZERO).unwrap();
        write(&journal, &[1, 3, 5]);
        let scan = Journal::scan(&journal.files, 7).unwrap();
        assert_eq!(scan.cut, None);
        assert_eq!(scan.records.len(), 3);
        for ((last, payload), first) in scan.records.iter().zip([1u64, 3, 5]) {
            let payload = &scan.image[payload.clone()];
            assert_eq!(*last, Timestamp::new(100, first as u32 + 1));
            let decoded = decode_payload(payload).unwrap();
            assert_eq!(decoded.stable, Some(Timestamp::new(99, 1)));
            assert_eq!(decoded.units.len(), 1);
            assert!(same(&decoded.units[0], &unit(first, 5)));
        }
        assert_eq!(scan.generation, 7);
        // A reader of the generation before reads them as the next generation's; one of an
        // older generation sees nothing.
        let before = Journal::scan(&journal.files, 6).unwrap();
        assert_eq!((before.records.len(), before.generation), (3, 7));
        let older = Journal::scan(&journal.files, 5).unwrap();
        assert_eq!((older.records.len(), older.generation), (0, 5));
    }

    #[test]
    fn a_new_generation_ignores_the_older_records_it_did_not_overwrite() {
        let journal = Journal::new(memory(), 1, Timestamp::ZERO).unwrap();
        write(&journal, &[1, 3, 5, 7]);
        journal.restart(2, Timestamp::new(100, 8));
        write(&journal, &[9]);
        let scan = Journal::scan(&journal.files, 2).unwrap();
        assert_eq!(
            scan.records.len(),
            1,
            "older records after the new one end the scan"
        );
        assert_eq!(scan.cut, None, "an older generation is an end, not damage");
        assert_eq!(scan.records[0].0, Timestamp::new(100, 10));
    }

    #[test]
    fn a_torn_or_damaged_tail_is_cut_at_the_last_whole_record() {
        let journal = Journal::new(memory(), 1, Timestamp::ZERO).unwrap();
        write(&journal, &[1, 3, 5]);
        let whole = Journal::scan(&journal.files, 1).unwrap();
        let second_end = RECORD_HEADER_BYTES as u64 * 2
            + (whole.records[0].1.len() + whole.records[1].1.len()) as u64;
        let file = &journal.files[file_index(1)];
        let length = file.len().unwrap();
        let mut image = vec![0u8; length as usize];
        file.read(0, &mut image).unwrap();

        // Every single-byte change inside the third record cuts it, never the first two.
        let third_end = second_end as usize + RECORD_HEADER_BYTES + whole.records[2].1.len();
        for at in (second_end as usize..third_end).step_by(13) {
            let mut bytes = image.clone();
            bytes[at] ^= 0x40;
            let scan = Journal::scan(&files_with(file_index(1), &bytes), 1).unwrap();
            assert_eq!(scan.records.len(), 2, "damage at byte {at}");
            assert_eq!(scan.records[..], whole.records[..2]);
            // A changed magic or generation reads as the end; anything else as damage.
            if at >= second_end as usize + 16 || (4..8).contains(&(at - second_end as usize)) {
                assert!(scan.cut.is_some(), "damage at byte {at} is reported");
            }
        }

        // A file cut inside the third record (a torn append) keeps the first two.
        for cut in [second_end + 10, second_end + 40, third_end as u64 - 1] {
            let torn = files_with(file_index(1), &image[..cut as usize]);
            let scan = Journal::scan(&torn, 1).unwrap();
            assert_eq!(scan.records[..], whole.records[..2], "cut at {cut}");
        }
    }

    #[test]
    fn malformed_payloads_are_refused_not_applied() {
        let units = [unit(1, 4)];
        let record = encode_record(&units, None, payload_size(&units));
        let payload = &record[RECORD_HEADER_BYTES..];
        assert!(decode_payload(payload).is_ok());
        for length in [0, 8, 12, payload.len() / 2, payload.len() - 1] {
            if length == 0 {
                continue;
            }
            let error = decode_payload(&payload[..length]).err();
            assert_eq!(
                error.map(|error| error.code),
                Some(ErrorCode::DataCorruptionDetected),
                "a payload cut at {length} bytes"
            );
        }
        // Timestamps out of order.
        let mut swapped = payload.to_vec();
        let (first, second) = (12..20, 20..28);
        let a = swapped[first.clone()].to_vec();
        let b = swapped[second.clone()].to_vec();
        swapped[first].copy_from_slice(&b);
        swapped[second].copy_from_slice(&a);
        assert_eq!(
            decode_payload(&swapped).err().map(|error| error.code),
            Some(ErrorCode::DataCorruptionDetected)
        );
    }

    #[test]
    fn a_sync_covers_every_record_appended_before_it() {
        let journal = Journal::new(memory(), 1, Timestamp::ZERO).unwrap();
        let units = [unit(1, 2)];
        let lsn = journal.append(
            encode_record(&units, None, payload_size(&units)),
            Timestamp::new(100, 2),
        );
        assert!(journal.unsynced());
        let units = [unit(3, 2)];
        journal.append(
            encode_record(&units, None, payload_size(&units)),
            Timestamp::new(100, 4),
        );
        let (durable, synced) = journal.sync_through(lsn, true).unwrap();
        assert!(synced);
        assert_eq!(
            durable,
            Timestamp::new(100, 4),
            "the second record shared the sync"
        );
        assert!(!journal.unsynced());
        let (_, synced_again) = journal.sync_through(journal.written_lsn(), true).unwrap();
        assert!(!synced_again, "nothing new: no second fdatasync");
    }

    /// Memory whose writes fail while `failing` is set.
    #[derive(Debug)]
    struct Flaky {
        memory: redb::backends::InMemoryBackend,
        failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl redb::StorageBackend for Flaky {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.memory.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.memory.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.memory.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.memory.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::other("injected write failure"));
            }
            self.memory.write(offset, data)
        }
    }

    #[test]
    fn a_failed_write_fails_every_later_sync() {
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flaky = |failing: &std::sync::Arc<std::sync::atomic::AtomicBool>| -> JournalFile {
            Box::new(Flaky {
                memory: redb::backends::InMemoryBackend::new(),
                failing: failing.clone(),
            })
        };
        let journal = Journal::new([flaky(&failing), flaky(&failing)], 1, Timestamp::ZERO).unwrap();
        write(&journal, &[1]);
        failing.store(true, std::sync::atomic::Ordering::SeqCst);
        let units = [unit(3, 2)];
        let lost = journal.append(
            encode_record(&units, None, payload_size(&units)),
            Timestamp::new(100, 4),
        );
        assert!(journal.sync_through(lost, true).is_err());
        // The disk recovers, but the record is gone: nothing after it may be called durable.
        failing.store(false, std::sync::atomic::Ordering::SeqCst);
        let units = [unit(5, 2)];
        let later = journal.append(
            encode_record(&units, None, payload_size(&units)),
            Timestamp::new(100, 6),
        );
        assert!(journal.sync_through(later, true).is_err());
        assert!(journal.sync_through(later, false).is_err());
    }
}
