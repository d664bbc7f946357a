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

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
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
        let db =
            open_db(path).map_err(|error| backend(format!("cannot open the database at {shown}"), error))?;
        // Never written through: only synced. sled 0.34 keeps all its data in this one log file.
        let log_path = path.join(LOG_FILE);
        let log =
            OpenOptions::new().read(true).write(true).open(&log_path).map_err(|error| {
                backend(format!("cannot open sled's log file {}", log_path.display()), error)
            })?;
        Ok(SledKv { db, log, commit_lock: RwLock::new(()) })
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
fn open_db(path: &Path) -> sled::Result<sled::Db> {
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

fn poisoned() -> StoreError {
    StoreError::Backend("sled: a writer panicked while holding the commit lock".to_owned())
}

impl Kv for SledKv {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _read = self.read_lock()?;
        self.db
            .get(prefixed(tree, key))
            .map(|value| value.map(|value| value.to_vec()))
            .map_err(|error| backend(format!("cannot read from tree {}", tree.name()), error))
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
                entry
                    .map(|(key, value)| (key[1..].to_vec(), value.to_vec()))
                    .map_err(|error| backend(format!("cannot scan tree {}", tree.name()), error))
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
            .map(|last| last.map(|(key, value)| (key[1..].to_vec(), value.to_vec())))
            .map_err(|error| backend(format!("cannot scan tree {}", tree.name()), error))
    }

    fn apply(&self, writes: Vec<Write>) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let n_writes = writes.len();
        let mut batch = sled::Batch::default();
        for write in writes {
            match write {
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
