//! The sled 0.34 backend: every logical [`Tree`] is a one-byte key prefix in sled's default tree, so a
//! batch over several logical trees is one `Tree::apply_batch` (atomic, and much cheaper than sled's
//! multi-tree transactions), flushed before `apply` returns. The only module of govflow that names sled;
//! nothing sled leaks out.
//!
//! # Contract
//! - `apply` writes all its items in one sled batch, so after a crash either the whole batch is there or
//!   none of it. It then calls `Db::flush` (sled's buffers to the file) and `fdatasync`s sled's log file,
//!   and only then returns: sled's background flush (every 500 ms by default) is never relied on. A batch
//!   `apply` returned for survives `kill -9`, and power loss as far as the log goes. sled 0.34 writes page
//!   fragments (in practice: values) over about 128 KiB, a quarter of its 512 KiB segment, to separate
//!   blob files that it never fsyncs; those survive `kill -9` but not necessarily power loss.
//! - If the flush or the sync fails, `apply` returns the error, but the batch may already be visible
//!   without being durable: treat the store as failed and reopen it.
//! - Readers (`get`, `scan`) and `apply` exclude each other through `commit_lock`, held by `apply` until the
//!   sync is done. A reader therefore sees a batch either completely or not at all (sled's own iterators
//!   are not snapshots: a scan running across a commit sees part of it), and never sees a batch that is
//!   not yet durable — so nothing can act on data a crash could still take back.
//! - sled's page cache is bounded (`CACHE_CAPACITY`), so memory does not grow with the store.
//! - A directory is open in one `SledKv` at a time (sled locks it). Reopening waits up to
//!   `LOCK_RELEASE_WAIT` for the lock a just-dropped `SledKv` of this process still holds; a directory open
//!   elsewhere is refused with a backend error.
//!
//! # The record log
//! Record batches (the values of [`Tree::Records`]) are written once and never changed, and they are most
//! of what an instance writes. They are appended to a
//! file of their own, `records.log`, and sled keeps for each only a 13-byte pointer: tag `0xc1` (a byte
//! MessagePack never uses, and no JSON value starts with), offset u64 and length u32, big-endian. So
//! sled's leaves, which it copies whole on every insert and replays from its log at every open, hold
//! small values. `apply` appends a flush's values and `fdatasync`s the file *before* it writes the
//! pointers to sled, so a durable pointer never names bytes that are not durable. A crash between the two
//! leaves bytes nobody points to, and the next append writes after them. Values stored inline (by stores
//! written before the record log) are still read.
//! Readers resolve pointers, so nothing above this module sees them.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::keys::Tree;
use super::kv::{CommitConfig, Kv, KvStore, Write};
use super::{Result, StoreError};

/// A sled database holding every logical [`Tree`] under its prefix byte.
pub struct SledKv {
    db: sled::Db,
    /// sled's log file, for a real `fsync` after `Db::flush` (see `apply`).
    log: File,
    /// Makes a batch's visibility and durability one step for readers (see the module's `# Contract`).
    commit_lock: RwLock<()>,
    /// Where record batches are appended (see the module's `# The record log`).
    record_log: RecordLog,
}

/// The append-only file of record batches, and where the next append goes.
struct RecordLog {
    file: File,
    end: Mutex<u64>,
}

/// The trees whose values live in the record log: written once, never changed or deleted. (Operation-log
/// entries qualify too, and moving them cut the start-up further, but the process writing them then grew
/// to 3.7 GiB resident at 1,000,000 instances instead of 360 MiB, for a reason not found: see
/// docs/benchmarks.md.)
fn logged(tree: Tree) -> bool {
    tree == Tree::Records
}

/// The record log's file in the store directory.
const RECORD_LOG_FILE: &str = "records.log";
/// The first byte of a pointer into the record log: reserved in MessagePack, never the start of JSON.
const POINTER_TAG: u8 = 0xc1;
/// Tag, offset u64, length u32.
const POINTER_LEN: usize = 13;

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

    /// Appends `bytes` at the end and syncs them; returns where they start.
    fn append(&self, bytes: &[u8]) -> Result<u64> {
        let mut end = self.end.lock().map_err(|_| poisoned())?;
        let start = *end;
        write_all_at(&self.file, bytes, start).and_then(|()| self.file.sync_data()).map_err(|error| {
            backend(format!("cannot append {} bytes to the record log", bytes.len()), error)
        })?;
        *end = start + bytes.len() as u64;
        Ok(start)
    }

    fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        let mut out = vec![0; len as usize];
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
    /// Opens (creating if needed) the sled database in directory `path` and its trees.
    pub fn open(path: &Path) -> Result<SledKv> {
        let shown = path.display();
        std::fs::create_dir_all(path).map_err(|error| backend(format!("cannot create {shown}"), error))?;
        let db = open_db_on_own_thread(path)?;
        // Never written through: only synced. sled 0.34 keeps all its data in this one log file.
        let log_path = path.join(LOG_FILE);
        let log =
            OpenOptions::new().read(true).write(true).open(&log_path).map_err(|error| {
                backend(format!("cannot open sled's log file {}", log_path.display()), error)
            })?;
        let record_log = RecordLog::open(path)?;
        Ok(SledKv { db, log, commit_lock: RwLock::new(()), record_log })
    }

    /// A stored value as written: a record batch is read from the record log.
    fn resolve(&self, tree: Tree, value: &[u8]) -> Result<Vec<u8>> {
        match read_pointer(value) {
            Some((offset, len)) if logged(tree) => self.record_log.read(offset, len),
            _ => Ok(value.to_vec()),
        }
    }

    fn read_lock(&self) -> Result<RwLockReadGuard<'_, ()>> {
        self.commit_lock.read().map_err(|_| poisoned())
    }

    fn write_lock(&self) -> Result<RwLockWriteGuard<'_, ()>> {
        self.commit_lock.write().map_err(|_| poisoned())
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
        let _read = self.read_lock()?;
        self.db
            .get(prefixed(tree, key))
            .map_err(|error| backend(format!("cannot read from tree {}", tree.name()), error))?
            .map(|value| self.resolve(tree, &value))
            .transpose()
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
        let _read = self.read_lock()?;
        let end = to.map_or_else(|| tree_end(tree), |to| prefixed(tree, to));
        self.db
            .range(prefixed(tree, from)..end)
            .take(limit)
            .map(|entry| {
                let (key, value) =
                    entry.map_err(|error| backend(format!("cannot scan tree {}", tree.name()), error))?;
                Ok((key[1..].to_vec(), self.resolve(tree, &value)?))
            })
            .collect()
    }

    fn last_before(&self, tree: Tree, before: Option<&[u8]>) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let _read = self.read_lock()?;
        let end = before.map_or_else(|| tree_end(tree), |before| prefixed(tree, before));
        self.db
            .range(vec![tree.prefix()]..end)
            .next_back()
            .transpose()
            .map_err(|error| backend(format!("cannot scan tree {}", tree.name()), error))?
            .map(|(key, value)| Ok((key[1..].to_vec(), self.resolve(tree, &value)?)))
            .transpose()
    }

    fn apply(&self, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let n_writes = writes.len();
        // Record batches first go to the record log, durably; sled then gets pointers to them, in the
        // batch's order (a later write of a key replaces an earlier one).
        let mut appended = Vec::new();
        let mut lengths = Vec::new();
        for write in &writes {
            if let Write::Put(tree, _, value) = write {
                if logged(*tree) {
                    let len = u32::try_from(value.len()).map_err(|_| {
                        backend(format!("cannot store a value of {}", tree.name()), "larger than 4 GiB")
                    })?;
                    lengths.push(len);
                    appended.extend_from_slice(value);
                }
            }
        }
        let mut next = if appended.is_empty() { 0 } else { self.record_log.append(&appended)? };
        let mut lengths = lengths.into_iter();
        let mut batch = sled::Batch::default();
        for write in writes {
            match write {
                Write::Put(tree, key, _) if logged(tree) => {
                    // One length per logged put, in the same order.
                    let len = lengths.next().unwrap_or_default();
                    batch.insert(prefixed(tree, &key), pointer(next, len));
                    next += u64::from(len);
                }
                Write::Put(tree, key, value) => batch.insert(prefixed(tree, &key), value),
                Write::Delete(tree, key) => batch.remove(prefixed(tree, &key)),
            }
        }
        let _write = self.write_lock()?;
        self.db
            .apply_batch(batch)
            .map_err(|error| backend(format!("cannot write a batch of {n_writes} writes"), error))?;
        let not_durable = |error: &dyn fmt::Display| {
            backend(format!("cannot flush a batch of {n_writes} writes (it may not be durable)"), error)
        };
        self.db.flush().map_err(|error| not_durable(&error))?;
        // On Linux sled 0.34 ends its flush with `sync_file_range`, which neither writes the file's
        // metadata nor flushes the device's write cache; `fdatasync` on the same file does both.
        self.log.sync_data().map_err(|error| not_durable(&error))?;
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
