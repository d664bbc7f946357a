//! The sled 0.34 backend: a write-ahead log of its own (`records.log`) in front of sled, where every
//! logical [`Tree`] is a one-byte key prefix in sled's default tree (so writes over several logical trees
//! are one `Tree::apply_batch`, much cheaper than sled's multi-tree transactions). The only module of
//! govflow that names sled; nothing sled leaks out.
//!
//! # Contract
//! - `apply` makes a batch durable before it returns: it appends the batch as one checksummed frame to the
//!   store's log (`records.log`, see below) and `fdatasync`s it. Only then does the batch become visible,
//!   all of it at once, to readers (`get`, `scan`, `last_before`), so nothing can act on data a crash could
//!   still take back. After a crash either the whole frame is there or the torn tail is cut off at the
//!   next open, and nothing that `apply` returned for is lost (`kill -9`, and power loss as far as
//!   `fdatasync` goes).
//! - If the append or the sync fails, `apply` returns the error and the batch is not visible; the store
//!   refuses every later batch (treat it as failed and reopen it).
//! - sled is the index of what the log holds, brought up to date behind the log: see `# The write-ahead log`.
//! - sled's page cache is bounded (`CACHE_CAPACITY`), and so is the part of the log sled has not caught up
//!   with (`OVERLAY_ENTRIES`, `OVERLAY_BYTES`), so memory does not grow with the store.
//! - A directory is open in one `SledKv` at a time (sled locks it). Reopening waits up to
//!   `LOCK_RELEASE_WAIT` for the lock a just-dropped `SledKv` of this process still holds; a directory open
//!   elsewhere is refused with a backend error.
//!
//! # The write-ahead log
//! Every batch is appended to `records.log` as a frame: length u32, CRC-32 of the payload u32, then the
//! writes (tag 1: put, key and value; tag 2: delete, key; lengths u32; keys with their tree's prefix;
//! numbers big-endian). That append and its `fdatasync` are the commit: one sync per group commit. The
//! writes then go into an in-memory overlay (an ordered map, newest write of a key wins, a delete kept as
//! a tombstone) that readers consult before sled. When the overlay holds `OVERLAY_ENTRIES` keys or
//! `OVERLAY_BYTES` bytes, it is frozen and a background thread writes it to sled as one batch, together
//! with the log offset it reaches (key [`APPLIED_KEY`], outside every tree), and flushes sled; readers
//! keep consulting the frozen overlay until sled has it. So a key written and deleted again within the
//! overlay's life (a job, the indexes of a short instance) costs sled one lookup instead of two inserts,
//! and sled's own log is flushed a few times a second instead of at every commit.
//!
//! At open, the frames after sled's applied offset are read back, checked and written to sled; a frame
//! cut short or failing its checksum is where the last append was torn by a crash (the log is written
//! by one thread, each append synced before the next starts), and the file is cut there. A log shorter
//! than the offset sled has applied is corrupt and refused. Closing the store writes the overlay to sled
//! and flushes it, so a cleanly closed store's sled holds everything.
//!
//! If writing to sled fails (an IO error: a full disk, the directory removed), the store refuses every
//! later batch, and the close does not wait for sled: sled 0.34 then leaves a reservation in its own log
//! open, and every later flush of that database, the one in its drop included, waits forever while
//! holding a lock all sled databases of the process share. The close hands sled to a thread of its own
//! and returns; the log holds every batch, and the next open replays what sled lacks. Restart the
//! process: its other sled stores cannot write either.
//!
//! # Record batches
//! Record batches (the values of [`Tree::Records`]) are written once and never changed, and they are most
//! of what an instance writes. sled keeps for each only a 13-byte pointer to where the value lies in its
//! frame: tag `0xc1` (a byte MessagePack never uses, and no JSON value starts with), offset u64 and length
//! u32, big-endian. So sled's leaves, which it copies whole on every insert and replays from its log at
//! every open, hold small values. Record values stored inline by stores written before the record log,
//! and the unframed values stores of format 4 and before appended, are still read through their pointers.
//! Readers resolve pointers, so nothing above this module sees them.
//!
//! # Packed runs
//! Most sled inserts were record pointers (11 of 16 per instance of a ten-task process), and sled's insert
//! costs the same whatever the value's size. So when the applier (or the open's replay) writes several
//! record keys of one instance that are adjacent in its overlay, it stores them as one sled value, a
//! packed run, under the key of the last: tag `0xc1`, count u32, then per entry its sequence number u64,
//! offset u64 and length u32 (5 + 20 × count bytes, never the 13 of a pointer). Records are keyed by
//! their last sequence number and read by range from a sequence number on, so a run under its last key is
//! found by the same scans. Readers unpack runs, and the run at or after a range's end is read as well.
//! The invariant every writer keeps: a run's span (its first key to its own) holds no other sled key. A
//! run is written only over a free span; writing or deleting a key inside a run first rewrites the run
//! as single pointers (one sled batch). A crash part-way through writing an overlay replays all of its
//! frames, which writes each key of its runs again.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::keys::Tree;
use super::kv::{CommitConfig, Kv, KvStore, Write};
use super::{Result, StoreError};

/// A sled database holding every logical [`Tree`] under its prefix byte, behind the write-ahead log.
pub struct SledKv {
    shared: Arc<Shared>,
    /// Writes frozen overlays to sled (see the module's `# The write-ahead log`).
    applier: Option<JoinHandle<()>>,
}

/// What the committing thread, the readers and the applier thread share.
struct Shared {
    db: sled::Db,
    /// sled's log file, for a real `fsync` after `Db::flush` (see `write_to_sled`).
    sled_log: File,
    /// The write-ahead log (see the module's `# The write-ahead log`).
    log: RecordLog,
    /// What sled does not hold yet. Readers hold its read lock for a whole read, so a read sees a batch
    /// completely or not at all, and the frozen overlay cannot leave before sled has it.
    overlay: RwLock<Overlay>,
    /// Held through a whole `apply`, so batches reach the log and the overlay in the same order.
    commit: Mutex<()>,
    limits: OverlayLimits,
    /// Signals the applier that an overlay was frozen, and the committer that the frozen one is in sled.
    applied: Condvar,
    /// The applier's side of `applied`.
    applier: Mutex<ApplierState>,
    /// Where the log ended once the open had replayed it.
    opened_end: u64,
    /// Declared last, so it runs after `db` has closed.
    snapshot_on_close: SnapshotOnClose,
}

/// Has sled write a fresh snapshot after a clean close that followed much writing: sled 0.34 writes its
/// snapshot only when it opens, and until then an open replays every byte its log took since the previous
/// snapshot. The next start after a long run would pay for the whole run (1,000,000 instances waiting on
/// timers: 3.8–4.1 s, and 247–259 MiB resident where a start from a fresh snapshot leaves 184–185 MiB,
/// because the memory the replay frees stays with the allocator). So the close opens sled again and closes
/// it (`SNAPSHOT_REOPENS` times), the way a database takes a checkpoint at shutdown; the cost moves from
/// the next start to this close. After a crash the next start still replays.
struct SnapshotOnClose {
    path: PathBuf,
    armed: AtomicBool,
}

/// Log bytes written since the open past which a clean close has sled write a fresh snapshot.
const SNAPSHOT_AFTER_LOG_BYTES: u64 = 64 << 20;

/// How many times the close reopens sled. Measured, not derived: after one reopen (replaying the whole
/// run, writing the snapshot) the next start of a store holding 1,000,000 waiting instances still kept
/// 259–271 MiB resident 3 s after it (3 runs); after two, 177 MiB (3 runs), the same as any later start.
/// The second reopen replays only what the first wrote, in about 0.5 s.
const SNAPSHOT_REOPENS: usize = 2;

impl Drop for SnapshotOnClose {
    fn drop(&mut self) {
        if !*self.armed.get_mut() {
            return;
        }
        let path = self.path.clone();
        // On a thread that ends with it, like the open (see `open_db_on_own_thread`).
        let reopened = std::thread::Builder::new()
            .name("govflow-sled-snapshot".to_owned())
            .stack_size(8 * 1024 * 1024)
            .spawn(move || (0..SNAPSHOT_REOPENS).try_for_each(|_| open_db(&path).map(drop)))
            .map(|thread| thread.join());
        match reopened {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, path = %self.path.display(), "could not reopen sled for a fresh snapshot at close; the next open replays its log");
            }
            Ok(Err(_)) => {
                tracing::warn!(path = %self.path.display(), "sled panicked writing a fresh snapshot at close; the next open replays its log");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start a thread to write sled's snapshot at close");
            }
        }
    }
}

#[derive(Default)]
struct ApplierState {
    /// An overlay frozen and waiting for the applier.
    work: Option<Arc<Frozen>>,
    /// The applier is writing an overlay to sled.
    busy: bool,
    closing: bool,
    /// Writing to sled failed: every later `apply` fails too.
    failed: Option<String>,
}

/// The writes sled does not hold yet, by sled key (tree prefix and key); `None` deletes.
#[derive(Default)]
struct Overlay {
    active: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Bytes of keys and values in `active`.
    active_bytes: usize,
    /// The overlay the applier is writing to sled, consulted after `active`.
    frozen: Option<Arc<Frozen>>,
    /// The log offset after the last frame whose writes are in `active`.
    end: u64,
}

/// An overlay handed to the applier, and the log offset its last frame ends at.
struct Frozen {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    end: u64,
}

/// When the overlay is frozen and written to sled: when it holds `entries` keys or `bytes` bytes of keys
/// and values. The default, `OVERLAY_ENTRIES` and `OVERLAY_BYTES`, bounds it to a few tens of MiB. And
/// `snapshot_after_log_bytes`: how much a session must append to the log before its clean close has sled
/// write a fresh snapshot (see `SnapshotOnClose`; default `SNAPSHOT_AFTER_LOG_BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayLimits {
    pub entries: usize,
    pub bytes: usize,
    pub snapshot_after_log_bytes: u64,
}

impl Default for OverlayLimits {
    fn default() -> OverlayLimits {
        OverlayLimits {
            entries: OVERLAY_ENTRIES,
            bytes: OVERLAY_BYTES,
            snapshot_after_log_bytes: SNAPSHOT_AFTER_LOG_BYTES,
        }
    }
}

const OVERLAY_ENTRIES: usize = 32 * 1024;
/// Writes per group when the open replays the log into sled (see `Shared::recover`): each group ends with
/// the log offset it reaches, so a crash during the replay resumes there.
const SLED_BATCH: usize = 512;
const OVERLAY_BYTES: usize = 8 * 1024 * 1024;

/// The sled key holding the log offset up to which sled holds the log's frames: outside every tree's
/// prefix range (prefixes are below 255).
pub const APPLIED_KEY: &[u8] = b"\xffapplied";

/// The append-only log, and where the next append goes.
struct RecordLog {
    file: File,
    end: Mutex<u64>,
}

/// What the log holds at an offset (see `RecordLog::next_frame`).
enum NextFrame {
    /// A frame's writes and its length.
    Frame(Vec<SledWrite>, u64),
    /// The torn end of the last append.
    Torn,
    Corrupt(String),
}

/// The first store format whose log holds frames (see `store::STORE_FORMAT_VERSION`).
const FIRST_FRAMED_FORMAT: u32 = 5;

/// The trees whose values live in the log only, sled holding a pointer: written once, never changed or
/// deleted. (Operation-log entries qualify too, and moving them cut the start-up further, but the process
/// writing them then grew to 3.7 GiB resident at 1,000,000 instances instead of 360 MiB, for a reason not
/// found: see docs/benchmarks.md.)
fn logged(prefix: u8) -> bool {
    prefix == Tree::Records.prefix()
}

/// The log's file in the store directory.
const RECORD_LOG_FILE: &str = "records.log";
/// The first byte of a pointer into the record log: reserved in MessagePack, never the start of JSON.
const POINTER_TAG: u8 = 0xc1;
/// Tag, offset u64, length u32.
const POINTER_LEN: usize = 13;
/// A frame's header: payload length u32, CRC-32 u32.
const FRAME_HEADER: usize = 8;
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

/// A write as sled gets it: the key with its tree's prefix, and the value (`None`: delete).
type SledWrite = (Vec<u8>, Option<Vec<u8>>);

fn pointer(offset: u64, len: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(POINTER_LEN);
    out.push(POINTER_TAG);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out
}

/// The (offset, length) a stored record value points to, or `None` for a value stored inline.
fn read_pointer(value: &[u8]) -> Option<(u64, u32)> {
    if value.len() != POINTER_LEN || value[0] != POINTER_TAG {
        return None;
    }
    let offset = u64::from_be_bytes(value[1..9].try_into().ok()?);
    let len = u32::from_be_bytes(value[9..13].try_into().ok()?);
    Some((offset, len))
}

/// A record key in sled: the tree's prefix, instance u64, last sequence number u64. Keys of one run share
/// the first `RUN_SHARED` bytes.
const RECORD_KEY_LEN: usize = 17;
const RUN_SHARED: usize = 9;
/// Entries per packed run at most: a run is one sled value, which sled copies whole with its leaf.
const MAX_RUN: usize = 64;
/// A packed run: tag, count u32, then per entry sequence number u64, offset u64, length u32.
const RUN_HEADER: usize = 5;
const RUN_ENTRY: usize = 20;

/// The pointer a write of `key` stores, if the write may go into a packed run: a record key, put with a
/// pointer into the log.
fn run_entry<'a>(key: &[u8], value: Option<&'a [u8]>) -> Option<&'a [u8]> {
    let value = value?;
    (key.len() == RECORD_KEY_LEN && key[0] == Tree::Records.prefix() && read_pointer(value).is_some())
        .then_some(value)
}

/// The value of a packed run of (record key, pointer) entries of one instance, in key order.
fn pack_run(run: &[(&Vec<u8>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RUN_HEADER + RUN_ENTRY * run.len());
    out.push(POINTER_TAG);
    out.extend_from_slice(&u32::try_from(run.len()).unwrap_or(u32::MAX).to_be_bytes());
    for (key, pointer) in run {
        out.extend_from_slice(&key[RUN_SHARED..]);
        out.extend_from_slice(&pointer[1..]);
    }
    out
}

/// How many entries `value` packs, if it is a packed run (a pointer is shorter; an inline record value
/// never starts with the tag).
fn run_len(value: &[u8]) -> Option<usize> {
    if value.len() < RUN_HEADER || value[0] != POINTER_TAG || value.len() == POINTER_LEN {
        return None;
    }
    let count = u32::from_be_bytes(value[1..RUN_HEADER].try_into().ok()?) as usize;
    (count >= 1 && value.len() == RUN_HEADER + RUN_ENTRY * count).then_some(count)
}

/// The sled key of entry `i` of the run stored under `run_key`.
fn run_key_of(run_key: &[u8], value: &[u8], i: usize) -> Vec<u8> {
    let at = RUN_HEADER + RUN_ENTRY * i;
    let mut key = Vec::with_capacity(RECORD_KEY_LEN);
    key.extend_from_slice(&run_key[..RUN_SHARED]);
    key.extend_from_slice(&value[at..at + 8]);
    key
}

/// The key of a packed run's first entry, or `None` if `value` is no packed run.
fn run_first_key(run_key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    run_len(value).filter(|_| run_key.len() == RECORD_KEY_LEN).map(|_| run_key_of(run_key, value, 0))
}

/// The (sled key, pointer) entries of the run stored under `run_key`, in key order; a value that is no
/// packed run is the one entry it is.
fn unpack_run(run_key: &[u8], value: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(count) = run_len(value).filter(|_| run_key.len() == RECORD_KEY_LEN) else {
        return vec![(run_key.to_vec(), value.to_vec())];
    };
    (0..count)
        .map(|i| {
            let at = RUN_HEADER + RUN_ENTRY * i + 8;
            let mut pointer = Vec::with_capacity(POINTER_LEN);
            pointer.push(POINTER_TAG);
            pointer.extend_from_slice(&value[at..at + 12]);
            (run_key_of(run_key, value, i), pointer)
        })
        .collect()
}

/// sled's entries from `start` (inclusive) to `end` (exclusive) of the records tree, packed runs unpacked,
/// in key order or (`reverse`) the opposite. A run is stored under its last entry's key, so the first run
/// at or after `end` may hold entries before it.
///
/// sled's iterators are not snapshots: the applier may pack a run, or unpack one, while a reader walks past
/// it, and the reader would then meet entries it has passed. Those are in the overlay the reader also
/// consults (the applier is writing them from there), so an entry not beyond the last one yielded is
/// skipped, which keeps this source in order for [`Merge`].
struct Unpacked<I> {
    inner: I,
    start: Vec<u8>,
    end: Vec<u8>,
    reverse: bool,
    buffer: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    done: bool,
    last: Option<Vec<u8>>,
}

impl<I: Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> Iterator for Unpacked<I> {
    type Item = sled::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.buffer.pop_front() {
                let beyond = self.last.as_ref().is_none_or(|last| {
                    if self.reverse {
                        entry.0 < *last
                    } else {
                        entry.0 > *last
                    }
                });
                if beyond {
                    self.last = Some(entry.0.clone());
                    return Some(Ok(entry));
                }
                continue;
            }
            if self.done {
                return None;
            }
            let (key, value) = match self.inner.next()? {
                Ok(entry) => entry,
                Err(error) => return Some(Err(error)),
            };
            if !self.reverse && key.as_ref() >= self.end.as_slice() {
                self.done = true;
            }
            let mut entries = unpack_run(&key, &value);
            entries.retain(|(key, _)| {
                key.as_slice() >= self.start.as_slice() && key.as_slice() < self.end.as_slice()
            });
            if self.reverse {
                entries.reverse();
            }
            self.buffer.extend(entries);
        }
    }
}

/// A frame of `writes` to append at log offset `at`, and the sled entries it stands for (values of logged
/// trees replaced by pointers into the frame), in the writes' order.
fn encode_frame(writes: Vec<Write>, at: u64) -> Result<(Vec<u8>, Vec<SledWrite>)> {
    let too_large =
        |what: &str| backend("cannot write a batch to the log", format!("{what} larger than 4 GiB"));
    let mut frame = vec![0; FRAME_HEADER];
    let mut entries = Vec::with_capacity(writes.len());
    for write in writes {
        match write {
            Write::Put(tree, key, value) => {
                let key = prefixed(tree, &key);
                let value_len = u32::try_from(value.len()).map_err(|_| too_large("a value"))?;
                frame.push(TAG_PUT);
                frame.extend_from_slice(
                    &u32::try_from(key.len()).map_err(|_| too_large("a key"))?.to_be_bytes(),
                );
                frame.extend_from_slice(&key);
                frame.extend_from_slice(&value_len.to_be_bytes());
                let value_at = at + frame.len() as u64;
                frame.extend_from_slice(&value);
                let stored = if logged(tree.prefix()) { pointer(value_at, value_len) } else { value };
                entries.push((key, Some(stored)));
            }
            Write::Delete(tree, key) => {
                let key = prefixed(tree, &key);
                frame.push(TAG_DELETE);
                frame.extend_from_slice(
                    &u32::try_from(key.len()).map_err(|_| too_large("a key"))?.to_be_bytes(),
                );
                frame.extend_from_slice(&key);
                entries.push((key, None));
            }
        }
    }
    let payload_len = u32::try_from(frame.len() - FRAME_HEADER).map_err(|_| too_large("a batch"))?;
    let crc = crc32fast::hash(&frame[FRAME_HEADER..]);
    frame[..4].copy_from_slice(&payload_len.to_be_bytes());
    frame[4..FRAME_HEADER].copy_from_slice(&crc.to_be_bytes());
    Ok((frame, entries))
}

/// The sled entries of the frame at the start of `bytes` (which starts at log offset `at`) and the frame's
/// length, or `None` when no whole frame with a matching checksum is there.
fn decode_frame(bytes: &[u8], at: u64) -> Option<(Vec<SledWrite>, usize)> {
    let header = bytes.get(..FRAME_HEADER)?;
    let payload_len = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(payload_len)?)?;
    // `apply` never writes an empty batch, and eight zero bytes would pass the checksum.
    if payload.is_empty() || crc32fast::hash(payload) != crc {
        return None;
    }
    let mut entries = Vec::new();
    let mut rest = payload;
    let take = |rest: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        *rest = tail;
        Some(head.to_vec())
    };
    let read_len = |rest: &mut &[u8]| -> Option<usize> {
        let (head, tail) = (rest.get(..4)?, rest.get(4..)?);
        *rest = tail;
        Some(u32::from_be_bytes(head.try_into().ok()?) as usize)
    };
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        let key_len = read_len(&mut rest)?;
        let key = take(&mut rest, key_len)?;
        match tag {
            TAG_PUT => {
                let value_len = read_len(&mut rest)?;
                let value_at = at + (FRAME_HEADER + payload.len() - rest.len()) as u64;
                let value = take(&mut rest, value_len)?;
                let stored = if key.first().copied().is_some_and(logged) {
                    pointer(value_at, u32::try_from(value_len).ok()?)
                } else {
                    value
                };
                entries.push((key, Some(stored)));
            }
            TAG_DELETE => entries.push((key, None)),
            _ => return None,
        }
    }
    Some((entries, FRAME_HEADER + payload_len))
}

impl RecordLog {
    fn open(dir: &Path) -> Result<RecordLog> {
        let path = dir.join(RECORD_LOG_FILE);
        let shown = path.display();
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| backend(format!("cannot open the record log {shown}"), error))?;
        if created {
            // The new file's directory entry must survive a crash as well as its contents.
            File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|error| backend(format!("cannot sync the directory of {shown}"), error))?;
        }
        let end = file.metadata().map_err(|error| backend(format!("cannot read {shown}"), error))?.len();
        Ok(RecordLog { file, end: Mutex::new(end) })
    }

    fn end(&self) -> Result<u64> {
        Ok(*self.end.lock().map_err(|_| poisoned())?)
    }

    /// Appends `bytes` at offset `at` (the end) and syncs them.
    fn append(&self, bytes: &[u8], at: u64) -> Result<()> {
        let mut end = self.end.lock().map_err(|_| poisoned())?;
        if *end != at {
            return Err(backend(
                "cannot append to the record log",
                format!("at {at}, but it ends at {}", *end),
            ));
        }
        write_all_at(&self.file, bytes, at).and_then(|()| self.file.sync_data()).map_err(|error| {
            backend(format!("cannot append {} bytes to the record log", bytes.len()), error)
        })?;
        *end = at + bytes.len() as u64;
        Ok(())
    }

    /// The frame at offset `at` of a log `len` bytes long.
    ///
    /// A frame that does not decode is the torn last append of a crash when it reaches the end of the file
    /// (its length, or its header, runs past it) or when only zeros follow (the file grew, its blocks were
    /// never written); anywhere else it is corruption: the log is written by one thread, each append
    /// synced before the next starts, so no whole frame can follow a torn one.
    fn next_frame(&self, at: u64, len: u64) -> Result<NextFrame> {
        let rest = len - at;
        if rest < FRAME_HEADER as u64 {
            return Ok(NextFrame::Torn);
        }
        let header = self.read_range(at, FRAME_HEADER as u64)?;
        let payload_len = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
        let frame_len = FRAME_HEADER as u64 + payload_len;
        if frame_len > rest {
            return Ok(NextFrame::Torn);
        }
        let frame = self.read_range(at, frame_len)?;
        if let Some((entries, _)) = decode_frame(&frame, at) {
            return Ok(NextFrame::Frame(entries, frame_len));
        }
        if frame_len == rest || self.only_zeros(at, len)? {
            return Ok(NextFrame::Torn);
        }
        Ok(NextFrame::Corrupt(if payload_len == 0 {
            "an empty frame".to_owned()
        } else {
            format!("a frame of {payload_len} bytes fails its checksum or does not decode")
        }))
    }

    fn only_zeros(&self, from: u64, len: u64) -> Result<bool> {
        const CHUNK: u64 = 1 << 20;
        let mut at = from;
        while at < len {
            let n = CHUNK.min(len - at);
            if self.read_range(at, n)?.iter().any(|&byte| byte != 0) {
                return Ok(false);
            }
            at += n;
        }
        Ok(true)
    }

    /// Cuts the log at `len` (a torn last append), durably.
    fn truncate(&self, len: u64) -> Result<()> {
        let mut end = self.end.lock().map_err(|_| poisoned())?;
        self.file.set_len(len).and_then(|()| self.file.sync_all()).map_err(|error| {
            backend(format!("cannot cut the record log's torn end at offset {len}"), error)
        })?;
        *end = len;
        Ok(())
    }

    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        self.read_range(offset, u64::from(len))
    }

    fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let size = usize::try_from(len).map_err(|_| {
            StoreError::Corrupt(format!("cannot read {len} bytes at offset {offset} of the record log"))
        })?;
        let mut out = vec![0; size];
        read_exact_at(&self.file, &mut out, offset).map_err(|error| {
            StoreError::Corrupt(format!(
                "cannot read {len} bytes at offset {offset} of the record log: {error}"
            ))
        })?;
        Ok(out)
    }
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(unix)]
fn read_exact_at(file: &File, out: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, out, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, bytes, offset)?;
        bytes = &bytes[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut out: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !out.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(file, out, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        out = &mut out[n..];
        offset += n as u64;
    }
    Ok(())
}

impl fmt::Debug for SledKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // sled's own `Debug` prints every key and value of every tree.
        f.debug_struct("SledKv").field("trees", &Tree::ALL.map(Tree::name)).finish_non_exhaustive()
    }
}

fn backend(what: impl fmt::Display, error: impl fmt::Display) -> StoreError {
    StoreError::Backend(format!("sled: {what}: {error}"))
}

/// `key` under `tree`'s prefix.
fn prefixed(tree: Tree, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(tree.prefix());
    out.extend_from_slice(key);
    out
}

/// The first key after every key of `tree`.
fn tree_end(tree: Tree) -> Vec<u8> {
    // Prefixes are below 255 (checked by a test of `keys`), so the next prefix exists.
    vec![tree.prefix().saturating_add(1)]
}

/// sled's page cache: bounded so that memory stays flat however large the store grows.
const CACHE_CAPACITY: u64 = 32 * 1024 * 1024;

impl SledKv {
    /// Opens (creating if needed) the sled database in directory `path` and its trees, and brings sled up
    /// to the end of the log (see the module's `# The write-ahead log`).
    pub fn open(path: &Path) -> Result<SledKv> {
        SledKv::open_with(path, OverlayLimits::default())
    }

    /// [`SledKv::open`] with the overlay frozen at other limits (tests make it tiny).
    pub fn open_with(path: &Path, limits: OverlayLimits) -> Result<SledKv> {
        let shown = path.display();
        std::fs::create_dir_all(path).map_err(|error| backend(format!("cannot create {shown}"), error))?;
        let db = open_db_on_own_thread(path)?;
        // Never written through: only synced. sled 0.34 keeps all its data in this one log file.
        let log_path = path.join(LOG_FILE);
        let sled_log =
            OpenOptions::new().read(true).write(true).open(&log_path).map_err(|error| {
                backend(format!("cannot open sled's log file {}", log_path.display()), error)
            })?;
        let log = RecordLog::open(path)?;
        let mut shared = Shared {
            db,
            sled_log,
            log,
            commit: Mutex::new(()),
            limits,
            overlay: RwLock::new(Overlay::default()),
            applied: Condvar::new(),
            applier: Mutex::new(ApplierState::default()),
            opened_end: 0,
            snapshot_on_close: SnapshotOnClose { path: path.to_path_buf(), armed: AtomicBool::new(false) },
        };
        shared.recover(&shown.to_string())?;
        shared.opened_end = shared.overlay.read().map_err(|_| poisoned())?.end;
        let shared = Arc::new(shared);
        let worker = Arc::clone(&shared);
        let applier = std::thread::Builder::new()
            .name("govflow-sled-apply".to_owned())
            .spawn(move || worker.run_applier())
            .map_err(|error| {
                backend(format!("cannot start the thread writing to sled for {shown}"), error)
            })?;
        Ok(SledKv { shared, applier: Some(applier) })
    }

    /// A stored value as written: a record batch is read from the log.
    fn resolve(&self, tree: Tree, value: &[u8]) -> Result<Vec<u8>> {
        match read_pointer(value) {
            Some((offset, len)) if logged(tree.prefix()) => self.shared.log.read(offset, len),
            _ => Ok(value.to_vec()),
        }
    }

    fn read_lock(&self) -> Result<RwLockReadGuard<'_, Overlay>> {
        self.shared.overlay.read().map_err(|_| poisoned())
    }

    /// sled's entries of the records tree with `start <= key < end`, packed runs unpacked (see
    /// `# Packed runs`).
    fn records_on_disk<'a>(&'a self, start: &[u8], end: &[u8], reverse: bool) -> Source<'a> {
        let db = &self.shared.db;
        let tree_end = tree_end(Tree::Records);
        let inner: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a> = if reverse {
            // The run stored at or after `end` first: its entries before `end` are the last ones.
            let after = db.range(end.to_vec()..tree_end).next();
            Box::new(after.into_iter().chain(db.range(start.to_vec()..end.to_vec()).rev()))
        } else {
            Box::new(db.range(start.to_vec()..tree_end))
        };
        let unpacked = Unpacked {
            inner,
            start: start.to_vec(),
            end: end.to_vec(),
            reverse,
            buffer: std::collections::VecDeque::new(),
            done: false,
            last: None,
        };
        Box::new(unpacked.map(|entry| {
            entry
                .map(|(key, value)| (Cow::Owned(key), Some(Cow::Owned(value))))
                .map_err(|error| backend("cannot scan the database", error))
        }))
    }

    /// sled's value of sled key `key`, found inside its packed run if it is a record key in one.
    fn sled_get(&self, key: &[u8]) -> sled::Result<Option<Vec<u8>>> {
        if key.first() != Some(&Tree::Records.prefix()) {
            return Ok(self.shared.db.get(key)?.map(|value| value.to_vec()));
        }
        let Some((found, value)) =
            self.shared.db.range(key..&tree_end(Tree::Records)[..]).next().transpose()?
        else {
            return Ok(None);
        };
        if run_first_key(&found, &value).is_none() {
            return Ok((found.as_ref() == key).then(|| value.to_vec()));
        }
        Ok(unpack_run(&found, &value)
            .into_iter()
            .find(|(entry, _)| entry.as_slice() == key)
            .map(|(_, pointer)| pointer))
    }

    /// Entries of sled and the overlay with `start <= key < end` (sled keys), newest write winning and
    /// deleted keys left out, in key order or (`reverse`) the opposite.
    fn merged<'a>(
        &'a self,
        overlay: &'a Overlay,
        start: &[u8],
        end: &[u8],
        reverse: bool,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a {
        fn from_map<'a>(
            map: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
            start: &[u8],
            end: &[u8],
            reverse: bool,
        ) -> Source<'a> {
            let range = map
                .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
                .map(|(key, value)| Ok((Cow::Borrowed(key.as_slice()), value.as_deref().map(Cow::Borrowed))));
            if reverse {
                Box::new(range.rev())
            } else {
                Box::new(range)
            }
        }
        let frozen: Source<'a> = match &overlay.frozen {
            Some(frozen) => from_map(&frozen.writes, start, end, reverse),
            None => Box::new(std::iter::empty()),
        };
        let disk: Source<'a> = if start.first() == Some(&Tree::Records.prefix()) {
            self.records_on_disk(start, end, reverse)
        } else {
            let disk = self.shared.db.range(start.to_vec()..end.to_vec());
            let entry = |entry: sled::Result<(sled::IVec, sled::IVec)>| {
                entry
                    .map(|(key, value)| (Cow::Owned(key.to_vec()), Some(Cow::Owned(value.to_vec()))))
                    .map_err(|error| backend("cannot scan the database", error))
            };
            if reverse {
                Box::new(disk.rev().map(entry))
            } else {
                Box::new(disk.map(entry))
            }
        };
        let sources = vec![
            from_map(&overlay.active, start, end, reverse).peekable(),
            frozen.peekable(),
            disk.peekable(),
        ];
        Merge { sources, reverse }
            .map(|entry| entry.map(|(key, value)| (key[1..].to_vec(), value.into_owned())))
    }
}

impl SledKv {
    /// Closes the store as `kill -9` would leave it: what sled has not applied yet stays only in the log,
    /// for the next open to replay. For tests of recovery.
    pub fn close_as_if_killed(mut self) {
        {
            let mut state = lock(&self.shared.applier);
            state.work = None;
            state.closing = true;
        }
        self.stop_applier();
        if lock(&self.shared.applier).failed.is_some() {
            self.release_failed_sled();
        }
    }

    /// After writing to sled failed: sled 0.34 leaves a log reservation open when `apply_batch` fails with
    /// an IO error (seen with the directory removed under it), and every later flush, the one in its own
    /// drop included, then waits forever. The log holds every batch, so nothing depends on that flush:
    /// sled is dropped on a thread of its own once this handle is gone, and the close returns. Without
    /// that thread, sled is leaked rather than closed here.
    fn release_failed_sled(&self) {
        let mut shared = Arc::clone(&self.shared);
        let kept = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new().name("govflow-sled-close".to_owned()).spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match Arc::try_unwrap(shared) {
                    Ok(last) => return drop(last),
                    Err(other) => shared = other,
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        match spawned {
            Ok(_) => drop(kept),
            Err(error) => {
                tracing::warn!(%error, "cannot start a thread to close sled after its failure; leaving it open until the process ends");
                std::mem::forget(kept);
            }
        }
    }

    fn stop_applier(&mut self) {
        lock(&self.shared.applier).closing = true;
        self.shared.applied.notify_all();
        if let Some(applier) = self.applier.take() {
            let _ = applier.join();
        }
    }
}

impl Drop for SledKv {
    fn drop(&mut self) {
        if self.applier.is_none() {
            return; // closed by `close_as_if_killed`
        }
        // A cleanly closed store's sled holds everything; if this fails, the next open replays the log.
        if let Err(error) = self.shared.drain() {
            tracing::warn!(%error, "could not write the last batches to sled at close; the next open replays them");
        }
        self.stop_applier();
        let failed = lock(&self.shared.applier).failed.is_some();
        let written = self
            .shared
            .overlay
            .read()
            .map_or(0, |overlay| overlay.end.saturating_sub(self.shared.opened_end));
        if !failed && written >= self.shared.limits.snapshot_after_log_bytes {
            self.shared.snapshot_on_close.armed.store(true, Ordering::Release);
        }
        if failed {
            self.release_failed_sled();
        }
    }
}

/// One input of [`Merge`]: entries in order, a value of `None` deleting the key.
type Source<'a> = Box<dyn Iterator<Item = Result<(Cow<'a, [u8]>, Option<Cow<'a, [u8]>>)>> + 'a>;

/// Merges ordered sources, the first holding the newest writes: of equal keys the earliest source wins,
/// and a deletion hides the key.
struct Merge<'a> {
    sources: Vec<std::iter::Peekable<Source<'a>>>,
    reverse: bool,
}

impl<'a> Iterator for Merge<'a> {
    type Item = Result<(Vec<u8>, Cow<'a, [u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut best: Option<(usize, Vec<u8>)> = None;
            for (i, source) in self.sources.iter_mut().enumerate() {
                match source.peek() {
                    None => {}
                    Some(Err(_)) => {
                        if let Some(Err(error)) = source.next() {
                            return Some(Err(error));
                        }
                    }
                    Some(Ok((key, _))) => {
                        let better = match &best {
                            None => true,
                            Some((_, best)) if self.reverse => key.as_ref() > best.as_slice(),
                            Some((_, best)) => key.as_ref() < best.as_slice(),
                        };
                        if better {
                            best = Some((i, key.to_vec()));
                        }
                    }
                }
            }
            let (i, key) = best?;
            let value = match self.sources[i].next() {
                Some(Ok((_, value))) => value,
                Some(Err(error)) => return Some(Err(error)),
                None => return None,
            };
            for source in &mut self.sources[i + 1..] {
                if matches!(source.peek(), Some(Ok((other, _))) if other.as_ref() == key.as_slice()) {
                    source.next();
                }
            }
            if let Some(value) = value {
                return Some(Ok((key, value)));
            }
        }
    }
}

impl Shared {
    /// Brings sled up to the end of the log's valid frames, cutting a torn last append off; the overlay
    /// starts there.
    fn recover(&self, shown: &str) -> Result<()> {
        let len = self.log.end()?;
        let read = |error: sled::Error| backend(format!("cannot read the database at {shown}"), error);
        let format_key = [&[Tree::Meta.prefix()][..], super::keys::FORMAT_VERSION].concat();
        let format = self.db.get(format_key).map_err(read)?;
        let format =
            format.and_then(|bytes| <[u8; 4]>::try_from(bytes.as_ref()).ok()).map(u32::from_be_bytes);
        let applied = match self.db.get(APPLIED_KEY).map_err(read)? {
            // A store still marked with a format before the framed log: a build that ignores the log may have
            // written to it since an offset was recorded, so the offset is stale.
            Some(_) if format.is_some_and(|format| format < FIRST_FRAMED_FORMAT) => None,
            Some(bytes) => Some(u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt(format!(
                    "the log offset sled has applied up to, in {shown}, is malformed"
                ))
            })?)),
            None => None,
        };
        let Some(applied) = applied else {
            // A new store, or one written before the log held frames (its bytes are record values sled
            // points to): frames start at the end.
            self.db.insert(APPLIED_KEY, &len.to_be_bytes()).map_err(read)?;
            self.flush_sled()?;
            return self.set_end(len);
        };
        if len < applied {
            return Err(StoreError::Corrupt(format!(
                "the record log of {shown} ends at offset {len}, before offset {applied} that sled has \
                 applied: the log was cut short"
            )));
        }
        // Frame by frame, in groups of about SLED_BATCH writes (newest write per key), each written with the
        // offset after its last frame: memory stays bounded, and a crash during the replay resumes where it
        // stopped.
        let mut at = applied;
        let mut group = BTreeMap::new();
        let mut in_group = 0;
        let mut replayed = false;
        let mut write = |group: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>, at: u64| {
            replayed = true;
            self.write_entries(group, at).map_err(|error| {
                backend(format!("cannot replay the record log into the database at {shown}"), error)
            })?;
            group.clear();
            Ok::<(), StoreError>(())
        };
        while at < len {
            match self.log.next_frame(at, len)? {
                NextFrame::Frame(entries, frame_len) => {
                    in_group += entries.len();
                    group.extend(entries);
                    at += frame_len;
                    if in_group >= SLED_BATCH {
                        write(&mut group, at)?;
                        in_group = 0;
                    }
                }
                NextFrame::Torn => break,
                NextFrame::Corrupt(reason) => {
                    return Err(StoreError::Corrupt(format!(
                    "the record log of {shown} is corrupt at offset {at}, with {} bytes after it: {reason}",
                    len - at
                )))
                }
            }
        }
        if in_group > 0 || at > applied {
            write(&mut group, at)?;
        }
        if replayed {
            self.flush_sled()?;
        }
        if at < len {
            tracing::warn!(
                store = shown,
                offset = at,
                bytes = len - at,
                "cutting off the torn end of the record log (an append a crash interrupted, never acknowledged)"
            );
            self.log.truncate(at)?;
        }
        self.set_end(at)
    }

    fn set_end(&self, end: u64) -> Result<()> {
        self.overlay.write().map_err(|_| poisoned())?.end = end;
        Ok(())
    }

    /// sled's buffers to its log file, and that file synced (sled 0.34 ends its flush with
    /// `sync_file_range` on Linux, which neither writes the file's metadata nor flushes the device's write
    /// cache; `fdatasync` does both).
    fn flush_sled(&self) -> Result<()> {
        let not_durable = |error: &dyn fmt::Display| backend("cannot flush the database", error);
        self.db.flush().map_err(|error| not_durable(&error))?;
        self.sled_log.sync_data().map_err(|error| not_durable(&error))
    }

    /// Writes `frozen` to sled, the log offset it reaches after its writes, and flushes sled (see
    /// `write_entries`; not one sled batch: a batch of 32,768 writes made the process grow by gigabytes).
    fn write_to_sled(&self, frozen: &Frozen) -> Result<()> {
        self.write_entries(&frozen.writes, frozen.end).map_err(|error| {
            backend(format!("cannot write {} keys to the database", frozen.writes.len()), error)
        })?;
        self.flush_sled()
    }

    /// Writes `writes` (by sled key, newest write per key, `None` deleting) to sled, then the log offset
    /// `end` they reach. Key by key, not in one sled batch: a batch pins sled's log and its epoch while it
    /// runs. A crash part-way leaves sled with some of the writes and the offset before them; the open
    /// replays the same frames over it, and since each frame's writes are whole values, that ends in the
    /// same state. The record pointers of one instance go in as one packed run (see `# Packed runs`).
    fn write_entries(&self, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>, end: u64) -> sled::Result<()> {
        let mut entries = writes.iter().peekable();
        while let Some((key, value)) = entries.next() {
            let Some(first) = run_entry(key, value.as_deref()) else {
                self.write_plain(key, value.as_deref())?;
                continue;
            };
            let mut run = vec![(key, first)];
            while let Some((next_key, next_value)) = entries.peek() {
                match run_entry(next_key, next_value.as_deref()) {
                    Some(entry) if next_key[..RUN_SHARED] == key[..RUN_SHARED] && run.len() < MAX_RUN => {
                        run.push((next_key, entry));
                        entries.next();
                    }
                    _ => break,
                }
            }
            let (first_key, last_key) = (run[0].0, run[run.len() - 1].0);
            if run.len() > 1 && self.span_is_free(first_key, last_key)? {
                self.db.insert(last_key.as_slice(), pack_run(&run))?;
            } else {
                for (key, pointer) in &run {
                    self.write_plain(key, Some(pointer))?;
                }
            }
        }
        self.db.insert(APPLIED_KEY, &end.to_be_bytes())?;
        Ok(())
    }

    /// Writes one key as it is. A record key inside a packed run's span unpacks that run first, so no run
    /// ever spans a key stored on its own, and a write or delete of an entry packed in a run takes effect.
    fn write_plain(&self, key: &[u8], value: Option<&[u8]>) -> sled::Result<()> {
        if key.first() == Some(&Tree::Records.prefix()) {
            if let Some((run_key, run)) = self.run_covering(key)? {
                let mut batch = sled::Batch::default();
                for (entry_key, pointer) in unpack_run(&run_key, &run) {
                    batch.insert(entry_key, pointer);
                }
                self.db.apply_batch(batch)?;
            }
        }
        match value {
            Some(value) => drop(self.db.insert(key, value)?),
            None => drop(self.db.remove(key)?),
        }
        Ok(())
    }

    /// The packed run whose span (its first entry to its key) holds `key`, if any: by the invariant that no
    /// run spans another sled key, it is the first sled key at or after `key`.
    fn run_covering(&self, key: &[u8]) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
        let Some((next_key, value)) = self.db.range(key..&tree_end(Tree::Records)[..]).next().transpose()?
        else {
            return Ok(None);
        };
        let covers = run_first_key(&next_key, &value).is_some_and(|first| first.as_slice() <= key);
        Ok(covers.then_some((next_key, value)))
    }

    /// Whether a run from `first` to `last` may be stored packed: sled holds no key in between, and no run
    /// of sled's spans into it.
    fn span_is_free(&self, first: &[u8], last: &[u8]) -> sled::Result<bool> {
        let Some((next_key, value)) =
            self.db.range(first..&tree_end(Tree::Records)[..]).next().transpose()?
        else {
            return Ok(true);
        };
        Ok(next_key.as_ref() > last
            && run_first_key(&next_key, &value).is_none_or(|run_first| run_first.as_slice() > last))
    }

    /// The applier thread: writes each frozen overlay to sled, then lets readers stop consulting it.
    fn run_applier(&self) {
        loop {
            let frozen = {
                let mut state = lock(&self.applier);
                loop {
                    if let Some(work) = state.work.take() {
                        state.busy = true;
                        break work;
                    }
                    if state.closing {
                        return;
                    }
                    state = self.applied.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.write_to_sled(&frozen)))
                    .unwrap_or_else(|_| {
                        Err(backend("cannot write the log's batches to sled", "the writer panicked"))
                    });
            if result.is_ok() {
                let mut overlay = self.overlay.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                if overlay.frozen.as_ref().is_some_and(|current| Arc::ptr_eq(current, &frozen)) {
                    overlay.frozen = None;
                }
            }
            let mut state = lock(&self.applier);
            state.busy = false;
            if let Err(error) = result {
                tracing::error!(%error, "writing the log's batches to sled failed; the store refuses writes");
                state.failed = Some(error.to_string());
            }
            drop(state);
            self.applied.notify_all();
        }
    }

    /// Hands the active overlay to the applier, if the applier has none.
    fn freeze(&self, overlay: &mut Overlay) {
        if overlay.frozen.is_some() || overlay.active.is_empty() {
            return;
        }
        let frozen = Arc::new(Frozen { writes: std::mem::take(&mut overlay.active), end: overlay.end });
        overlay.active_bytes = 0;
        overlay.frozen = Some(Arc::clone(&frozen));
        lock(&self.applier).work = Some(frozen);
        self.applied.notify_all();
    }

    /// Waits until the applier has nothing to do; an error if it failed.
    fn wait_idle(&self) -> Result<()> {
        let mut state = lock(&self.applier);
        while state.failed.is_none() && (state.busy || state.work.is_some()) {
            state = self.applied.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        match &state.failed {
            Some(message) => Err(backend("cannot write the log's batches to sled", message)),
            None => Ok(()),
        }
    }

    /// Writes everything the overlay holds to sled and waits until sled has it.
    fn drain(&self) -> Result<()> {
        loop {
            self.wait_idle()?;
            let mut overlay = self.overlay.write().map_err(|_| poisoned())?;
            if overlay.frozen.is_none() && overlay.active.is_empty() {
                return Ok(());
            }
            self.freeze(&mut overlay);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Overlay {
    /// The newest write of sled key `key` the overlay holds (`Some(None)`: deleted).
    fn lookup(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.active.get(key).or_else(|| self.frozen.as_ref().and_then(|frozen| frozen.writes.get(key)))
    }
}
/// The file in the store directory where sled 0.34 writes its log (and takes its lock).
const LOG_FILE: &str = "db";

/// How long `open` waits for a directory lock that sled itself still holds (see [`open_db`]).
const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(1);

/// Opens the sled database, waiting a bounded time for sled 0.34 to release its own directory lock.
///
/// Dropping the last `Db` handle does not release the lock at once: sled's IO threads still hold the file
/// until they finish (spacejam/sled#1234, #1289), so reopening a store this process has just closed can
/// fail with "could not acquire lock". Only that error is retried, with backoff; a store held by another
/// live process keeps its lock for far longer than the wait and is still refused.
///
/// Public for tools and tests that read or alter sled's files directly (the audit's tamper tests); the
/// engine opens stores with [`open_sled`].
pub fn open_db(path: &Path) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_RELEASE_WAIT;
    let mut backoff = Duration::from_millis(1);
    loop {
        match sled::Config::new().path(path).cache_capacity(CACHE_CAPACITY).flush_every_ms(None).open() {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// [`open_db`] on a thread of its own that ends with it.
///
/// sled's recovery allocates, and frees again, a lot: it reads its snapshot whole and replays its log.
/// Done on the caller's thread, the allocator keeps that memory cached for that thread (mimalloc in the
/// `govflow` binary, until the thread allocates enough again, which the main thread of a server never
/// does): 1,000,000 pending instances measured 252 MiB resident after 10 s of a running shell, against
/// 182 MiB when the recovery ran on a thread that ended (`bench-timers --cold-start-only`).
fn open_db_on_own_thread(path: &Path) -> Result<sled::Db> {
    let shown = path.display();
    let owned = path.to_path_buf();
    let opened = std::thread::Builder::new()
        .name("govflow-sled-open".to_owned())
        // The main thread's stack size: sled's recovery runs there when embedded without this thread.
        .stack_size(8 * 1024 * 1024)
        .spawn(move || open_db(&owned))
        .map_err(|error| backend(format!("cannot start a thread to open the database at {shown}"), error))?
        .join()
        .map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            backend(format!("sled panicked while opening the database at {shown}"), message)
        })?;
    opened.map_err(|error| backend(format!("cannot open the database at {shown}"), error))
}

fn poisoned() -> StoreError {
    StoreError::Backend("sled: a writer panicked while holding the commit lock".to_owned())
}

impl Kv for SledKv {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let overlay = self.read_lock()?;
        let key = prefixed(tree, key);
        let value = match overlay.lookup(&key) {
            Some(value) => value.clone(),
            None => self
                .sled_get(&key)
                .map_err(|error| backend(format!("cannot read from tree {}", tree.name()), error))?,
        };
        value.map(|value| self.resolve(tree, &value)).transpose()
    }

    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if limit == 0 || to.is_some_and(|to| to <= from) {
            return Ok(Vec::new());
        }
        let overlay = self.read_lock()?;
        let end = to.map_or_else(|| tree_end(tree), |to| prefixed(tree, to));
        self.merged(&overlay, &prefixed(tree, from), &end, false)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key, self.resolve(tree, &value)?))
            })
            .collect()
    }

    fn last_before(&self, tree: Tree, before: Option<&[u8]>) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let overlay = self.read_lock()?;
        let end = before.map_or_else(|| tree_end(tree), |before| prefixed(tree, before));
        let last = self.merged(&overlay, &[tree.prefix()], &end, true).next();
        last.map(|entry| {
            let (key, value) = entry?;
            Ok((key, self.resolve(tree, &value)?))
        })
        .transpose()
    }

    fn apply(&self, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        let _commit = lock(&shared.commit);
        if let Some(message) = &lock(&shared.applier).failed {
            return Err(backend("the store failed writing to sled and must be reopened", message));
        }
        // The format version must be in sled itself at once: a build from before the log would ignore it.
        let format_changed = writes.iter().any(
            |write| matches!(write, Write::Put(Tree::Meta, key, _) if key.as_slice() == super::keys::FORMAT_VERSION),
        );
        let at = shared.log.end()?;
        let (frame, entries) = encode_frame(writes, at)?;
        if let Err(error) = shared.log.append(&frame, at) {
            // Part of the frame may be in the file: nothing may be appended after it in this process.
            lock(&shared.applier).failed = Some(error.to_string());
            return Err(error);
        }
        // The batch is committed from here on: whatever fails below fails the next batch, not this one.
        let behind = {
            let mut overlay = shared.overlay.write().map_err(|_| poisoned())?;
            for (key, value) in entries {
                let bytes = key.len() + value.as_ref().map_or(0, Vec::len);
                overlay.active_bytes += bytes;
                overlay.active.insert(key, value);
            }
            overlay.end = at + frame.len() as u64;
            let (entries, bytes) = (overlay.active.len(), overlay.active_bytes);
            if entries >= shared.limits.entries || bytes >= shared.limits.bytes {
                shared.freeze(&mut overlay);
            }
            // Still full: the applier is writing the previous one.
            overlay.active.len() >= 2 * shared.limits.entries
                || overlay.active_bytes >= 2 * shared.limits.bytes
        };
        let waited = if format_changed {
            shared.drain()
        } else if behind {
            // sled falls behind the log: commits wait for it, so the overlay (memory, and what an open
            // replays) stays bounded.
            shared.wait_idle().and_then(|()| {
                let mut overlay = shared.overlay.write().map_err(|_| poisoned())?;
                shared.freeze(&mut overlay);
                Ok(())
            })
        } else {
            Ok(())
        };
        if let Err(error) = waited {
            tracing::error!(%error, "sled cannot catch up with the record log; the store refuses further writes");
        }
        Ok(())
    }
}

/// Opens (creating if needed) the sled store in directory `path`, checking or writing its format version.
pub fn open_sled(path: &Path) -> Result<KvStore<SledKv>> {
    open_sled_with(path, CommitConfig::default())
}

/// Opens the sled store with explicit group-commit settings.
pub fn open_sled_with(path: &Path, config: CommitConfig) -> Result<KvStore<SledKv>> {
    KvStore::open_with(SledKv::open(path)?, &path.display().to_string(), config)
}
