//! The `Store` contract implemented once over any ordered key-value backend ([`Kv`]): the memory backend
//! for tests and the sled backend. Backends only provide ordered trees and an atomic, durable write of a
//! batch; encodings live in `keys.rs`, the index rules in `index_changes`, group commit here.
//!
//! # Group commit
//! Every write goes through one queue to a flusher thread: it takes everything queued — what arrived while
//! the previous flush ran, optionally waiting `window` for more — writes it as one atomic, durable
//! `Kv::apply`, and resolves each writer's [`CommitTicket`]. So with many concurrent commands one fsync
//! serves many commits, callers can decide their next command while a flush runs (`Store::submit`), and
//! no write is acknowledged before the flush that carries it. Writes become durable in queue order.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::keys::{self, Tree};
use super::*;

/// One write of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Tree, Vec<u8>, Vec<u8>),
    Delete(Tree, Vec<u8>),
}

/// An ordered key-value backend.
///
/// # Contract
/// `apply` writes every item or none, and is durable when it returns; `scan` returns entries with
/// `from <= key < to` (no upper bound when `to` is `None`) in byte order.
pub trait Kv: Send + Sync {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn scan(
        &self,
        tree: Tree,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// The last entry with `key < before` (no bound when `None`).
    fn last_before(&self, tree: Tree, before: Option<&[u8]>) -> Result<Option<(Vec<u8>, Vec<u8>)>>;
    fn apply(&self, writes: Vec<Write>) -> Result<()>;
}

/// How many instance keys one durable reservation hands out (a crash skips at most this many).
const KEY_BLOCK: u64 = 1024;

/// How a store is opened: group commit, and the time scale a new store records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitConfig {
    /// When false every commit has its own flush (for comparison in benchmarks).
    pub group: bool,
    /// How long the flusher waits for more commits before flushing (zero: only what queued meanwhile).
    pub window: Duration,
    /// How many times faster than real time the engine's clock runs (1 in production). A new store
    /// records it; an existing store of another scale is refused.
    pub time_scale: f64,
    /// Open an existing store at whatever scale it recorded (tools that only read it: the auditor's).
    pub any_recorded_scale: bool,
}

impl Default for CommitConfig {
    fn default() -> CommitConfig {
        CommitConfig { group: true, window: Duration::ZERO, time_scale: 1.0, any_recorded_scale: false }
    }
}

/// Writes waiting for a flush, with the operation-log entries whose sequence numbers the flusher assigns.
#[derive(Debug)]
struct Pending {
    writes: Vec<Write>,
    operations: Vec<Operation>,
    ticket: CommitTicket,
}

#[derive(Debug, Default)]
struct FlushQueue {
    pending: Vec<Pending>,
    /// The store is closing: the flusher drains the queue and stops.
    closing: bool,
    /// A flush failed: every later write fails too, so nothing lands after a gap.
    failed: Option<String>,
    /// The flusher is waiting on `queued`: only then does a submitter signal it (a signal is a futex
    /// syscall even with nobody waiting, and the flusher looks at the queue again after every flush).
    flusher_waiting: bool,
    n_flushes: u64,
    n_commits: u64,
    flush_nanos: u64,
}

/// The queue between submitters and the flusher thread.
#[derive(Debug, Default)]
struct Flusher {
    queue: Mutex<FlushQueue>,
    queued: Condvar,
}

/// Counters of the group commit: flushes done and commits they carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    pub n_flushes: u64,
    pub n_commits: u64,
    /// Time spent writing and syncing flushes, in total (divide by `n_flushes` for the mean).
    pub flush_nanos: u64,
}

/// A `Store` over a `Kv`.
#[derive(Debug)]
pub struct KvStore<K: Kv + 'static> {
    kv: Arc<K>,
    flusher: Arc<Flusher>,
    /// The flusher thread, joined when the store is dropped.
    flush_thread: Option<std::thread::JoinHandle<()>>,
    /// Instance keys reserved durably but not handed out yet: (next, end).
    keys: Mutex<(u64, u64)>,
    /// The next buffered-message key, and the message-id check, serialised.
    messages: Mutex<()>,
}

/// The metadata of a stored instance, read without building its state (serde skips the other fields).
#[derive(Debug, Deserialize)]
struct MetaOnly {
    meta: InstanceMeta,
}

/// How one command's records are stored: what they share (instance, time, actor, format, the hash before
/// the first) once, then each record's sequence number, event and hash. Unpacking gives back exactly the
/// sealed records, so verification recomputes every record's hash as it was sealed.
#[derive(Debug, Serialize, Deserialize)]
struct RecordBatch {
    instance: InstanceKey,
    at: DateTime<FixedOffset>,
    actor: Actor,
    format: u16,
    prev_hash: Digest256,
    records: Vec<(u64, Event, Digest256)>,
}

/// A [`RecordBatch`] borrowing the sealed records it packs: serialises to the same bytes, without copying
/// every event first.
#[derive(Debug, Serialize)]
struct RecordBatchRef<'a> {
    instance: InstanceKey,
    at: &'a DateTime<FixedOffset>,
    actor: &'a Actor,
    format: u16,
    prev_hash: Digest256,
    records: Vec<(u64, &'a Event, Digest256)>,
}

impl RecordBatch {
    fn pack(records: &[RecordedEvent]) -> Result<RecordBatchRef<'_>> {
        let Some(first) = records.first() else {
            return Err(StoreError::Conflict("an empty record batch".to_owned()));
        };
        let shared = |record: &RecordedEvent| {
            record.instance == first.instance
                && record.at == first.at
                && record.actor == first.actor
                && record.format == first.format
        };
        let chained = records
            .windows(2)
            .all(|pair| pair[1].prev_hash == pair[0].hash && pair[1].seq == pair[0].seq + 1);
        if !records.iter().all(shared) || !chained {
            return Err(StoreError::Conflict(format!(
                "the records of one commit of instance {} must share time and actor and form a chain",
                first.instance
            )));
        }
        Ok(RecordBatchRef {
            instance: first.instance,
            at: &first.at,
            actor: &first.actor,
            format: first.format,
            prev_hash: first.prev_hash,
            records: records.iter().map(|record| (record.seq, &record.event, record.hash)).collect(),
        })
    }

    fn unpack(self) -> Vec<RecordedEvent> {
        let mut prev_hash = self.prev_hash;
        self.records
            .into_iter()
            .map(|(seq, event, hash)| {
                let record = RecordedEvent {
                    instance: self.instance,
                    seq,
                    at: self.at,
                    actor: self.actor.clone(),
                    format: self.format,
                    event,
                    prev_hash,
                    hash,
                };
                prev_hash = hash;
                record
            })
            .collect()
    }
}

/// Values are MessagePack with field names (`rmp_serde::to_vec_named`): self-describing like JSON, so
/// variables (`serde_json::Value`) and `#[serde(default)]` fields round-trip, but a third smaller and
/// cheaper to write (hashes are 32 raw bytes, numbers binary, no quoting).
fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    encode_into(Vec::new(), value)
}

/// [`encode`] into `out` (a buffer sized for the value).
fn encode_into<T: Serialize>(mut out: Vec<u8>, value: &T) -> Result<Vec<u8>> {
    rmp_serde::encode::write_named(&mut out, value)
        .map_err(|error| StoreError::Corrupt(format!("cannot encode: {error}")))?;
    Ok(out)
}

/// Reads a value written by [`encode`], or a JSON value of a store written before MessagePack: every
/// value is a struct, so JSON starts with `{` (or `[`), which no MessagePack map or array does.
fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    if matches!(bytes.first(), Some(b'{' | b'[')) {
        return serde_json::from_slice(bytes)
            .map_err(|error| StoreError::Corrupt(format!("{what}: {error}")));
    }
    rmp_serde::from_slice(bytes).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

/// Most entries of the start-time index an instance listing reads and sorts; a wider window is answered
/// by scanning instances in key order instead.
const TIME_WINDOW_CANDIDATES: usize = 10_000;

/// Index entries an [`IndexStream`] reads first, and at most at once: each next page is twice as large (a
/// page of 20 seldom needs more than the first; a merge across many versions opens a stream per version).
const INDEX_PAGES: [usize; 2] = [32, 256];

/// The instance keys of one index prefix whose entries end in the instance key, in order, from a cursor
/// on, read a page at a time.
struct IndexStream {
    tree: Tree,
    /// Where the next page starts; `None` once the prefix is exhausted.
    from: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    page: std::collections::VecDeque<InstanceKey>,
    /// Entries the next page reads.
    page_size: usize,
}

impl IndexStream {
    /// The entries under `prefix` for instances after `after` (all when none).
    fn after(tree: Tree, prefix: Vec<u8>, after: Option<InstanceKey>) -> IndexStream {
        let end = prefix_end(&prefix);
        let mut from = prefix;
        if let Some(after) = after {
            match after.0.checked_add(1) {
                Some(next) => from.extend_from_slice(&next.to_be_bytes()),
                None => return IndexStream { tree, from: None, end, page: Default::default(), page_size: 0 },
            }
        }
        IndexStream { tree, from: Some(from), end, page: Default::default(), page_size: INDEX_PAGES[0] }
    }

    fn next(&mut self, kv: &(impl Kv + ?Sized)) -> Result<Option<InstanceKey>> {
        while self.page.is_empty() {
            let Some(from) = self.from.take() else { return Ok(None) };
            let entries = kv.scan(self.tree, &from, self.end.as_deref(), self.page_size)?;
            if let (Some((last, _)), true) = (entries.last(), entries.len() == self.page_size) {
                let mut next = last.clone();
                next.push(0);
                self.from = Some(next);
            }
            self.page_size = (self.page_size * 2).min(INDEX_PAGES[1]);
            self.page.extend(entries.iter().filter_map(|(key, _)| keys::trailing_u64(key).map(InstanceKey)));
        }
        Ok(self.page.pop_front())
    }
}

/// Operations per entry of the operation log (one flush's operations fill as many entries as they need).
const OPERATIONS_PER_ENTRY: usize = 256;

/// The most bytes an operation-log entry holds when it has more than one operation: long details or names
/// split a flush's operations further, so an entry stays far below the size sled moves to a blob file.
const OPERATION_ENTRY_BYTES: usize = 64 * 1024;

/// Entries the operation-log query reads first; each next page is twice as large, up to the last.
const OPERATION_ENTRIES_PER_PAGE: [usize; 2] = [16, 1024];

/// The writes for `operations` (one flush's, in seq order): one entry, keyed by its last seq, or halves
/// of them when the entry would pass `OPERATION_ENTRY_BYTES`.
fn operation_entries(operations: &[Operation], writes: &mut Vec<Write>) -> Result<()> {
    let Some(last) = operations.last() else { return Ok(()) };
    let value = encode(&operations)?;
    if value.len() > OPERATION_ENTRY_BYTES && operations.len() > 1 {
        let (first, second) = operations.split_at(operations.len() / 2);
        operation_entries(first, writes)?;
        return operation_entries(second, writes);
    }
    writes.push(Write::Put(Tree::Operations, keys::operation(last.seq), value));
    Ok(())
}

/// The operations of one entry of the operation log: an array of them (format 4), or one operation alone
/// (formats before; MessagePack or JSON).
fn decode_operations(key: &[u8], value: &[u8]) -> Result<Vec<Operation>> {
    let seq = keys::read_u64(key, 0).unwrap_or(0);
    let what = format!("the operation-log entry ending at {seq}");
    match value.first() {
        // MessagePack array markers: fixarray, array 16, array 32.
        Some(0x90..=0x9f | 0xdc | 0xdd) => decode(&what, value),
        _ => Ok(vec![decode(&what, value)?]),
    }
}

/// The key just after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data is only ever replaced whole; a panic elsewhere leaves it consistent.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<K: Kv + 'static> Drop for KvStore<K> {
    fn drop(&mut self) {
        lock(&self.flusher.queue).closing = true;
        self.flusher.queued.notify_one();
        if let Some(thread) = self.flush_thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flusher: takes everything queued (waiting `window` after the first arrival when set), writes it as
/// one atomic, durable `apply`, resolves the tickets; in submission order, one flush at a time.
fn flush_loop(kv: &dyn Kv, flusher: &Flusher, config: CommitConfig, mut next_operation: u64) {
    loop {
        let batch = {
            let mut queue = lock(&flusher.queue);
            while queue.pending.is_empty() && !queue.closing {
                queue.flusher_waiting = true;
                queue = flusher.queued.wait(queue).unwrap_or_else(std::sync::PoisonError::into_inner);
                queue.flusher_waiting = false;
            }
            if queue.pending.is_empty() {
                return;
            }
            if !config.window.is_zero() {
                drop(queue);
                std::thread::sleep(config.window);
                queue = lock(&flusher.queue);
            }
            if config.group {
                std::mem::take(&mut queue.pending)
            } else {
                vec![queue.pending.remove(0)]
            }
        };
        let mut writes = Vec::new();
        let mut tickets = Vec::with_capacity(batch.len());
        let mut operations = Vec::new();
        for pending in batch {
            writes.extend(pending.writes);
            for mut operation in pending.operations {
                operation.seq = next_operation;
                next_operation += 1;
                operations.push(operation);
            }
            tickets.push(pending.ticket);
        }
        // The flush's operations go in entries of up to OPERATIONS_PER_ENTRY, each keyed by its last seq:
        // one key per entry rather than per operation keeps the backend's page table small.
        let mut outcome = Ok(());
        for chunk in operations.chunks(OPERATIONS_PER_ENTRY) {
            if let Err(error) = operation_entries(chunk, &mut writes) {
                outcome = Err(error);
            }
        }
        let flush_started = std::time::Instant::now();
        let outcome = outcome.and_then(|()| kv.apply(writes)).map_err(|error| error.to_string());
        let flush_nanos = u64::try_from(flush_started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        {
            let mut queue = lock(&flusher.queue);
            queue.n_flushes += 1;
            queue.flush_nanos = queue.flush_nanos.saturating_add(flush_nanos);
            queue.n_commits += tickets.len() as u64;
            if let Err(message) = &outcome {
                queue.failed = Some(message.clone());
                for pending in queue.pending.drain(..) {
                    pending.ticket.resolve(Err(format!("the store failed and must be reopened: {message}")));
                }
            }
        }
        for ticket in tickets {
            ticket.resolve(outcome.clone());
        }
    }
}

fn read_counter(kv: &(impl Kv + ?Sized), key: &[u8]) -> Result<Option<u64>> {
    kv.get(Tree::Meta, key)?
        .map(|bytes| {
            keys::read_u64(&bytes, 0).ok_or_else(|| {
                StoreError::Corrupt(format!("counter {} is malformed", String::from_utf8_lossy(key)))
            })
        })
        .transpose()
}

impl<K: Kv + 'static> KvStore<K> {
    /// Wraps a backend, writing the format version into an empty store and refusing another version.
    pub fn open(kv: K, path: &str) -> Result<KvStore<K>> {
        KvStore::open_with(kv, path, CommitConfig::default())
    }

    pub fn open_with(kv: K, path: &str, config: CommitConfig) -> Result<KvStore<K>> {
        match kv.get(Tree::Meta, keys::FORMAT_VERSION)? {
            None => kv.apply(vec![Write::Put(
                Tree::Meta,
                keys::FORMAT_VERSION.to_vec(),
                STORE_FORMAT_VERSION.to_be_bytes().to_vec(),
            )])?,
            Some(bytes) => {
                let found = bytes
                    .as_slice()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("the format version key is malformed".to_owned()))?;
                if UPGRADABLE_FORMAT_VERSIONS.contains(&found) {
                    kv.apply(vec![Write::Put(
                        Tree::Meta,
                        keys::FORMAT_VERSION.to_vec(),
                        STORE_FORMAT_VERSION.to_be_bytes().to_vec(),
                    )])?;
                } else if found != STORE_FORMAT_VERSION {
                    return Err(StoreError::FormatVersion {
                        path: path.to_owned(),
                        found,
                        expected: STORE_FORMAT_VERSION,
                    });
                }
            }
        }
        match kv.get(Tree::Meta, keys::TIME_SCALE)? {
            None => {
                let now = chrono::Utc::now().fixed_offset();
                let scale = TimeScale { scale: config.time_scale, origin_real: now, origin_engine: now };
                kv.apply(vec![Write::Put(Tree::Meta, keys::TIME_SCALE.to_vec(), encode(&scale)?)])?;
            }
            Some(bytes) => {
                let recorded: TimeScale = decode("time scale", &bytes)?;
                if recorded.scale != config.time_scale && !config.any_recorded_scale {
                    return Err(StoreError::TimeScale {
                        path: path.to_owned(),
                        found: recorded.scale,
                        requested: config.time_scale,
                    });
                }
            }
        }
        let next_operation = match kv.last_before(Tree::Operations, None)? {
            Some((key, _)) => keys::read_u64(&key, 0).map_or(1, |seq| seq + 1),
            None => 1,
        };
        // Keys reserved by an earlier run and not used are skipped: start at the reservation's end.
        let next_key = read_counter(&kv, keys::NEXT_INSTANCE)?.unwrap_or(1);
        let kv = Arc::new(kv);
        let flusher = Arc::new(Flusher::default());
        let flush_thread = {
            let (kv, flusher) = (Arc::clone(&kv), Arc::clone(&flusher));
            std::thread::Builder::new()
                .name("govflow-flusher".to_owned())
                .spawn(move || flush_loop(&*kv, &flusher, config, next_operation))
                .map_err(|error| StoreError::Backend(format!("cannot start the flusher thread: {error}")))?
        };
        Ok(KvStore {
            kv,
            flusher,
            flush_thread: Some(flush_thread),
            keys: Mutex::new((next_key, next_key)),
            messages: Mutex::new(()),
        })
    }

    pub fn kv(&self) -> &K {
        &self.kv
    }

    pub fn commit_stats(&self) -> CommitStats {
        let queue = lock(&self.flusher.queue);
        CommitStats { n_flushes: queue.n_flushes, n_commits: queue.n_commits, flush_nanos: queue.flush_nanos }
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.kv.scan(tree, prefix, prefix_end(prefix).as_deref(), limit)
    }

    /// Queues `writes` (and `operations`, sequenced by the flusher) for the next flush.
    fn enqueue(&self, writes: Vec<Write>, operations: Vec<Operation>) -> CommitTicket {
        let ticket = CommitTicket::new();
        let mut queue = lock(&self.flusher.queue);
        if let Some(failed) = &queue.failed {
            ticket.resolve(Err(format!("the store failed earlier and must be reopened: {failed}")));
            return ticket;
        }
        queue.pending.push(Pending { writes, operations, ticket: ticket.clone() });
        if queue.flusher_waiting {
            self.flusher.queued.notify_one();
        }
        ticket
    }

    /// Writes `writes` durably (sharing a flush with concurrent callers) and waits for it.
    fn write(&self, writes: Vec<Write>, operations: Vec<Operation>) -> Result<()> {
        self.enqueue(writes, operations).wait()
    }

    /// The write for `op`; `earlier` are the ops before it in the same batch (an assignment reads the
    /// task's entry there, else in the store; none when the task is not open).
    fn index_write(&self, earlier: &[IndexOp], op: &IndexOp) -> Result<Option<Write>> {
        Ok(Some(match op {
            IndexOp::PutJob(e) => {
                Write::Put(Tree::Jobs, keys::job(&e.job_type, e.instance, e.job), Vec::new())
            }
            IndexOp::DeleteJob(e) => Write::Delete(Tree::Jobs, keys::job(&e.job_type, e.instance, e.job)),
            IndexOp::PutTimer(e) => {
                Write::Put(Tree::Timers, keys::timer(&e.due, e.instance, e.timer), encode(e)?)
            }
            IndexOp::DeleteTimer(e) => Write::Delete(Tree::Timers, keys::timer(&e.due, e.instance, e.timer)),
            IndexOp::PutSubscription(e) => Write::Put(
                Tree::Subscriptions,
                keys::subscription(&e.message_name, &e.correlation_key, e.instance, e.subscription),
                Vec::new(),
            ),
            IndexOp::DeleteSubscription(e) => Write::Delete(
                Tree::Subscriptions,
                keys::subscription(&e.message_name, &e.correlation_key, e.instance, e.subscription),
            ),
            IndexOp::PutUserTask(e) => {
                Write::Put(Tree::UserTasks, keys::owned(e.instance, e.task), encode(e)?)
            }
            IndexOp::AssignUserTask { instance, task, assignee } => {
                let key = keys::owned(*instance, *task);
                let put = earlier.iter().rev().find_map(|op| match op {
                    IndexOp::PutUserTask(e) if e.instance == *instance && e.task == *task => Some(e.clone()),
                    _ => None,
                });
                let entry = match put {
                    Some(entry) => Some(entry),
                    None => match self.kv.get(Tree::UserTasks, &key)? {
                        Some(bytes) => Some(decode::<UserTaskEntry>("user task", &bytes)?),
                        None => None,
                    },
                };
                let Some(mut entry) = entry else { return Ok(None) };
                entry.assignee = assignee.clone();
                Write::Put(Tree::UserTasks, key, encode(&entry)?)
            }
            IndexOp::DeleteUserTask { instance, task } => {
                Write::Delete(Tree::UserTasks, keys::owned(*instance, *task))
            }
            IndexOp::PutIncident(e) => {
                Write::Put(Tree::Incidents, keys::owned(e.instance, e.incident), encode(e)?)
            }
            IndexOp::DeleteIncident { instance, incident } => {
                Write::Delete(Tree::Incidents, keys::owned(*instance, *incident))
            }
            IndexOp::PutSignal(e) => Write::Put(
                Tree::Signals,
                keys::signal(&e.signal_name, e.instance, e.subscription),
                Vec::new(),
            ),
            IndexOp::DeleteSignal(e) => {
                Write::Delete(Tree::Signals, keys::signal(&e.signal_name, e.instance, e.subscription))
            }
        }))
    }

    /// The secondary-index writes that move an instance from `previous` to `meta`.
    fn meta_index_writes(previous: Option<&InstanceMeta>, meta: &InstanceMeta, writes: &mut Vec<Write>) {
        let key = meta.key;
        match previous {
            None => {
                writes.push(Write::Put(
                    Tree::ByProcess,
                    keys::by_process(&meta.process_id, meta.version, key),
                    Vec::new(),
                ));
                writes.push(Write::Put(Tree::ByStart, keys::by_start(&meta.started_at, key), Vec::new()));
                if let Some(business_key) = &meta.business_key {
                    writes.push(Write::Put(
                        Tree::ByBusinessKey,
                        keys::by_business_key(business_key, key),
                        Vec::new(),
                    ));
                }
                writes.push(Write::Put(Tree::ByStatus, keys::by_status(meta.status, key), Vec::new()));
                if let Some((parent, element_instance)) = meta.parent {
                    writes.push(Write::Put(
                        Tree::ByParent,
                        keys::by_parent(parent, element_instance, key),
                        Vec::new(),
                    ));
                }
            }
            Some(previous) => {
                if previous.status != meta.status {
                    writes.push(Write::Delete(Tree::ByStatus, keys::by_status(previous.status, key)));
                    writes.push(Write::Put(Tree::ByStatus, keys::by_status(meta.status, key), Vec::new()));
                }
                if previous.business_key != meta.business_key {
                    if let Some(old) = &previous.business_key {
                        writes.push(Write::Delete(Tree::ByBusinessKey, keys::by_business_key(old, key)));
                    }
                    if let Some(new) = &meta.business_key {
                        writes.push(Write::Put(
                            Tree::ByBusinessKey,
                            keys::by_business_key(new, key),
                            Vec::new(),
                        ));
                    }
                }
            }
        }
    }

    /// Instance keys from an index scan of `prefix`, after `after`, in key order.
    fn keys_from_index(
        &self,
        tree: Tree,
        prefix: &[u8],
        after: Option<InstanceKey>,
    ) -> Result<Vec<InstanceKey>> {
        let mut start = prefix.to_vec();
        if let Some(after) = after {
            start.extend_from_slice(&after.0.saturating_add(1).to_be_bytes());
        }
        let end = prefix_end(prefix);
        Ok(self
            .kv
            .scan(tree, &start, end.as_deref(), usize::MAX)?
            .iter()
            .filter_map(|(key, _)| keys::trailing_u64(key).map(InstanceKey))
            .collect())
    }

    /// The metadata of the candidates `next` yields that match `filter`, up to `limit`; stops asking for
    /// candidates once it has them.
    fn metas_matching(
        &self,
        mut next: impl FnMut() -> Result<Option<InstanceKey>>,
        filter: &InstanceFilter,
        limit: usize,
    ) -> Result<Vec<InstanceMeta>> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(key) = next()? else { break };
            if let Some(meta) = self.instance_meta(key)? {
                if filter.matches(&meta) {
                    out.push(meta);
                }
            }
        }
        Ok(out)
    }

    /// Instances after `after` in key order whose metadata matches `filter`, up to `limit`, looking at
    /// no more than `max_scanned` instances when given. Also says whether the answer is complete (the
    /// limit reached or every instance seen).
    fn scan_instances(
        &self,
        filter: &InstanceFilter,
        after: Option<InstanceKey>,
        limit: usize,
        max_scanned: Option<usize>,
    ) -> Result<(Vec<InstanceMeta>, bool)> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok((out, true));
        }
        let mut start = match after {
            None => Vec::new(),
            Some(after) => match after.0.checked_add(1) {
                Some(next) => keys::instance(InstanceKey(next)),
                None => return Ok((out, true)),
            },
        };
        let mut scanned = 0_usize;
        loop {
            let page = self.kv.scan(Tree::Instances, &start, None, 1024)?;
            for (_, value) in &page {
                if max_scanned.is_some_and(|max| scanned >= max) {
                    return Ok((out, false));
                }
                scanned += 1;
                let meta = decode::<MetaOnly>("instance", value)?.meta;
                if filter.matches(&meta) {
                    out.push(meta);
                    if out.len() >= limit {
                        return Ok((out, true));
                    }
                }
            }
            match page.last() {
                Some((key, _)) if page.len() == 1024 => {
                    let mut next = key.clone();
                    next.push(0);
                    start = next;
                }
                _ => return Ok((out, true)),
            }
        }
    }

    /// The `limit` smallest instance keys after `after` whose start time lies in the window `filter`
    /// names, from the start-time index between `from` and `to`, in order. Entries in the window's first
    /// and last millisecond are checked against the metadata (keys keep milliseconds).
    fn smallest_in_time_window(
        &self,
        filter: &InstanceFilter,
        from: &[u8],
        to: Option<&[u8]>,
        after: Option<InstanceKey>,
        limit: usize,
    ) -> Result<Vec<InstanceKey>> {
        let millisecond = |at: &DateTime<FixedOffset>| keys::by_start_from(at)[..8].to_vec();
        let edges: Vec<Vec<u8>> =
            filter.started_after.iter().chain(&filter.started_before).map(millisecond).collect();
        let mut kept: std::collections::BinaryHeap<InstanceKey> = std::collections::BinaryHeap::new();
        let mut start = from.to_vec();
        loop {
            let page = self.kv.scan(Tree::ByStart, &start, to, 1024)?;
            for (key, _) in &page {
                let Some(instance) = keys::trailing_u64(key).map(InstanceKey) else { continue };
                if after.is_some_and(|after| instance <= after)
                    || (kept.len() >= limit && kept.peek().is_some_and(|largest| instance >= *largest))
                {
                    continue;
                }
                if edges.iter().any(|edge| key.starts_with(edge))
                    && !self.instance_meta(instance)?.is_some_and(|meta| filter.matches(&meta))
                {
                    continue;
                }
                kept.push(instance);
                if kept.len() > limit {
                    kept.pop();
                }
            }
            match page.last() {
                Some((key, _)) if page.len() == 1024 => {
                    let mut next = key.clone();
                    next.push(0);
                    start = next;
                }
                _ => return Ok(kept.into_sorted_vec()),
            }
        }
    }

    fn message_writes(message: &BufferedMessage, writes: &mut Vec<Write>) -> Result<()> {
        let key = keys::message(&message.name, &message.correlation_key, message.key);
        writes.push(Write::Put(Tree::Messages, key.clone(), encode(message)?));
        writes.push(Write::Put(
            Tree::MessageExpiry,
            keys::message_expiry(&message.expires_at, message.key),
            key.clone(),
        ));
        if let Some(id) = &message.message_id {
            writes.push(Write::Put(Tree::MessageIds, id.as_bytes().to_vec(), key));
        }
        Ok(())
    }
}

impl<K: Kv + 'static> Store for KvStore<K> {
    fn put_deployments(&self, deployments: &[Deployment], operations: Vec<Operation>) -> Result<()> {
        let mut writes = deployments
            .iter()
            .map(|deployment| {
                Ok(Write::Put(
                    Tree::Deployments,
                    keys::deployment(&deployment.process_id, deployment.version),
                    encode(deployment)?,
                ))
            })
            .collect::<Result<Vec<Write>>>()?;
        let mut last: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
        for deployment in deployments {
            let seen = last.entry(deployment.process_id.as_str()).or_insert(0);
            *seen = (*seen).max(deployment.version);
        }
        for (process_id, version) in last {
            if version > self.last_version(process_id)? {
                writes.push(Write::Put(
                    Tree::Meta,
                    keys::last_version(process_id),
                    version.to_be_bytes().to_vec(),
                ));
            }
        }
        self.write(writes, operations)
    }

    fn last_version(&self, process_id: &str) -> Result<u32> {
        let recorded = match self.kv.get(Tree::Meta, &keys::last_version(process_id))? {
            Some(bytes) => u32::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("last version of '{process_id}'")))?,
            ),
            None => 0,
        };
        // Stores written before the key existed: the highest deployment left.
        let prefix = keys::deployment_prefix(process_id);
        let deployed = self
            .scan_prefix(Tree::Deployments, &prefix, usize::MAX)?
            .iter()
            .filter_map(|(key, _)| {
                key.get(prefix.len()..).and_then(|v| v.try_into().ok()).map(u32::from_be_bytes)
            })
            .max()
            .unwrap_or(0);
        Ok(recorded.max(deployed))
    }

    fn delete_deployments(&self, versions: &[(String, u32)], operations: Vec<Operation>) -> Result<()> {
        let writes = versions
            .iter()
            .map(|(process_id, version)| {
                Write::Delete(Tree::Deployments, keys::deployment(process_id, *version))
            })
            .collect();
        self.write(writes, operations)
    }

    fn deployments(&self) -> Result<Vec<Deployment>> {
        let mut deployments = self
            .kv
            .scan(Tree::Deployments, &[], None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode("deployment", v))
            .collect::<Result<Vec<Deployment>>>()?;
        // Keys order by id length first (length-prefixed strings); the contract is text order.
        deployments.sort_by(|a, b| (&a.process_id, a.version).cmp(&(&b.process_id, b.version)));
        Ok(deployments)
    }

    fn deployment(&self, process_id: &str, version: u32) -> Result<Option<Deployment>> {
        self.kv
            .get(Tree::Deployments, &keys::deployment(process_id, version))?
            .map(|bytes| decode("deployment", &bytes))
            .transpose()
    }

    fn next_instance_key(&self) -> Result<InstanceKey> {
        // Keys are reserved durably in blocks before any is handed out, so neither a concurrent caller nor a
        // crash ever reuses one; a crash skips the rest of a block.
        let mut keys = lock(&self.keys);
        if keys.0 >= keys.1 {
            let end = keys.0 + KEY_BLOCK;
            self.write(
                vec![Write::Put(Tree::Meta, keys::NEXT_INSTANCE.to_vec(), end.to_be_bytes().to_vec())],
                Vec::new(),
            )?;
            keys.1 = end;
        }
        let key = keys.0;
        keys.0 += 1;
        Ok(InstanceKey(key))
    }

    fn submit(&self, batch: &Batch) -> Result<CommitTicket> {
        let instance = batch.meta.key;
        let mut writes = Vec::with_capacity(batch.index_ops.len() + batch.outbox.len() + 8);
        if let (Some(first), Some(last)) = (batch.records.first(), batch.records.last()) {
            if first.instance != instance || last.instance != instance {
                return Err(StoreError::Conflict(format!(
                    "a batch of instance {instance} holds another's records"
                )));
            }
            writes.push(Write::Put(
                Tree::Records,
                keys::record(instance, last.seq),
                // A command's records take a few hundred bytes: one allocation rather than several (the
                // value only passes through on its way to the log).
                encode_into(Vec::with_capacity(1024), &RecordBatch::pack(&batch.records)?)?,
            ));
        }
        let (last_seq, last_hash) = match batch.records.last() {
            Some(record) => (record.seq, record.hash),
            None if batch.write_snapshot || batch.previous.is_none() => match self.instance(instance)? {
                Some(stored) => (stored.last_seq, stored.last_hash),
                None => (0, Digest256::GENESIS),
            },
            None => (0, Digest256::GENESIS),
        };
        if batch.write_snapshot {
            let stored = StoredInstance {
                meta: batch.meta.clone(),
                state: batch.snapshot.clone(),
                last_seq,
                last_hash,
            };
            writes.push(Write::Put(Tree::Instances, keys::instance(instance), encode(&stored)?));
        } else if batch.previous.is_none() {
            // A new instance without a snapshot yet: its metadata (for listing) and the empty state its
            // records fold from, so its first state is stored once, in its records.
            let stored = StoredInstance {
                meta: batch.meta.clone(),
                state: Instance::new(instance),
                last_seq: 0,
                last_hash: Digest256::GENESIS,
            };
            writes.push(Write::Put(Tree::Instances, keys::instance(instance), encode(&stored)?));
        }
        Self::meta_index_writes(batch.previous.as_ref(), &batch.meta, &mut writes);
        for (i, op) in batch.index_ops.iter().enumerate() {
            writes.extend(self.index_write(&batch.index_ops[..i], op)?);
        }
        for entry in &batch.outbox {
            writes.push(Write::Put(Tree::Outbox, keys::outbox(entry.id), encode(entry)?));
        }
        for id in &batch.acks {
            writes.push(Write::Delete(Tree::Outbox, keys::outbox(*id)));
        }
        Ok(self.enqueue(writes, batch.operations.clone()))
    }

    fn records(&self, instance: InstanceKey, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        // Batches are keyed by their last seq: the one holding `from` is the first at or after it.
        let start = keys::record(instance, from);
        let end = (instance.0 < u64::MAX).then(|| keys::record(InstanceKey(instance.0 + 1), 0));
        let mut out = Vec::new();
        for (key, value) in self.kv.scan(Tree::Records, &start, end.as_deref(), usize::MAX)? {
            let last = keys::read_u64(&key, 8).unwrap_or(0);
            let batch: RecordBatch =
                decode(&format!("the records of instance {instance} up to sequence number {last}"), &value)?;
            out.extend(batch.unpack().into_iter().filter(|record| record.seq >= from));
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
        Ok(out)
    }

    fn instance(&self, instance: InstanceKey) -> Result<Option<StoredInstance>> {
        let Some(bytes) = self.kv.get(Tree::Instances, &keys::instance(instance))? else { return Ok(None) };
        let mut stored: StoredInstance = decode(&format!("instance {instance}"), &bytes)?;
        // The snapshot may lag: fold the records committed after it.
        for record in self.records(instance, stored.last_seq.saturating_add(1), usize::MAX)? {
            stored.state.apply(&record.event);
            stored.last_seq = record.seq;
            stored.last_hash = record.hash;
            stored.meta.updated_at = record.at;
        }
        Ok(Some(stored))
    }

    fn instance_meta(&self, instance: InstanceKey) -> Result<Option<InstanceMeta>> {
        self.kv
            .get(Tree::Instances, &keys::instance(instance))?
            .map(|bytes| decode::<MetaOnly>(&format!("instance {instance}"), &bytes).map(|only| only.meta))
            .transpose()
    }

    fn instances(
        &self,
        filter: &InstanceFilter,
        after: Option<InstanceKey>,
        limit: usize,
    ) -> Result<Vec<InstanceMeta>> {
        // The most selective index the filter names, read in pages from the cursor on and only as far as
        // `limit` matches need; the full filter is applied to each candidate.
        if let Some(business_key) = &filter.business_key {
            let mut keys =
                IndexStream::after(Tree::ByBusinessKey, keys::by_business_key_prefix(business_key), after);
            return self.metas_matching(|| keys.next(&*self.kv), filter, limit);
        }
        if let Some(process_id) = &filter.process_id {
            if filter.version.is_some() {
                let prefix = keys::by_process_prefix(process_id, filter.version);
                let mut keys = IndexStream::after(Tree::ByProcess, prefix, after);
                return self.metas_matching(|| keys.next(&*self.kv), filter, limit);
            }
            // The index orders by version first: merge one stream per version, in instance order.
            let mut streams = Vec::new();
            let mut from = keys::by_process_prefix(process_id, None);
            let end = prefix_end(&from);
            while let Some((key, _)) = self.kv.scan(Tree::ByProcess, &from, end.as_deref(), 1)?.pop() {
                let Some(version) = keys::by_process_version(&key) else {
                    return Err(StoreError::Corrupt(format!(
                        "instance index entry of {process_id} is malformed"
                    )));
                };
                let prefix = keys::by_process_prefix(process_id, Some(version));
                streams.push(IndexStream::after(Tree::ByProcess, prefix, after));
                match version.checked_add(1) {
                    Some(next) => from = keys::by_process_prefix(process_id, Some(next)),
                    None => break,
                }
            }
            let mut heads: Vec<Option<InstanceKey>> =
                streams.iter_mut().map(|stream| stream.next(&*self.kv)).collect::<Result<_>>()?;
            let next = || -> Result<Option<InstanceKey>> {
                let Some((i, key)) = heads
                    .iter()
                    .enumerate()
                    .filter_map(|(i, head)| head.map(|key| (i, key)))
                    .min_by_key(|(_, key)| *key)
                else {
                    return Ok(None);
                };
                heads[i] = streams[i].next(&*self.kv)?;
                Ok(Some(key))
            };
            return self.metas_matching(next, filter, limit);
        }
        if let Some(status) = filter.status {
            let mut keys = IndexStream::after(Tree::ByStatus, vec![keys::status_code(status)], after);
            return self.metas_matching(|| keys.next(&*self.kv), filter, limit);
        }
        if filter.started_after.is_some() || filter.started_before.is_some() {
            let from = filter.started_after.map(|at| keys::by_start_from(&at)).unwrap_or_default();
            // Keys keep milliseconds: take the whole last millisecond; the full filter trims it.
            let to = filter
                .started_before
                .and_then(|at| at.checked_add_signed(chrono::Duration::milliseconds(1)))
                .map(|at| keys::by_start_from(&at));
            // The index orders by start time, pages go by instance key. A narrow window is read whole and
            // sorted.
            let entries = self.kv.scan(Tree::ByStart, &from, to.as_deref(), TIME_WINDOW_CANDIDATES + 1)?;
            if entries.len() <= TIME_WINDOW_CANDIDATES {
                let mut keys: Vec<InstanceKey> = entries
                    .iter()
                    .filter_map(|(key, _)| keys::trailing_u64(key).map(InstanceKey))
                    .filter(|key| after.is_none_or(|after| *key > after))
                    .collect();
                keys.sort_unstable();
                let mut keys = keys.into_iter();
                return self.metas_matching(|| Ok(keys.next()), filter, limit);
            }
            // A wide one: first the scan in instance order, which is quick when matches are dense after
            // the cursor (a window reaching far back); when it has not found the page within
            // TIME_WINDOW_CANDIDATES instances, the window's index entries are read in pages, keeping
            // only the `limit` smallest instance keys (memory bounded by the page, not the window).
            if let (found, true) = self.scan_instances(filter, after, limit, Some(TIME_WINDOW_CANDIDATES))? {
                return Ok(found);
            }
            if filter.version.is_none() {
                let keys = self.smallest_in_time_window(filter, &from, to.as_deref(), after, limit)?;
                let mut keys = keys.into_iter();
                return self.metas_matching(|| Ok(keys.next()), filter, limit);
            }
        }
        // No index applies (at most a version without a process): scan in pages, filtering.
        Ok(self.scan_instances(filter, after, limit, None)?.0)
    }

    fn due_timers(&self, until: DateTime<FixedOffset>, limit: usize) -> Result<Vec<TimerEntry>> {
        let entries: Vec<TimerEntry> = self
            .kv
            .scan(Tree::Timers, &[], Some(&keys::timers_until(&until)), limit)?
            .iter()
            .map(|(_, value)| decode("timer", value))
            .collect::<Result<_>>()?;
        // Keys keep milliseconds; a timer due later within the same millisecond is not due yet.
        Ok(entries.into_iter().filter(|entry| entry.due <= until).collect())
    }

    fn timers_between(
        &self,
        after: Option<DateTime<FixedOffset>>,
        until: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<TimerEntry>> {
        // Keys keep milliseconds: scan from `after`'s millisecond and filter exactly.
        let from = after.map(|after| keys::timer(&after, InstanceKey(0), Key(0))).unwrap_or_default();
        let mut out = Vec::new();
        for (_, value) in self.kv.scan(Tree::Timers, &from, Some(&keys::timers_until(&until)), usize::MAX)? {
            let entry: TimerEntry = decode("timer", &value)?;
            if after.is_none_or(|after| entry.due > after) && entry.due <= until {
                out.push(entry);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn jobs(&self, job_type: Option<&str>, limit: usize) -> Result<Vec<JobEntry>> {
        let prefix = job_type.map(keys::job_prefix).unwrap_or_default();
        let entries = self.scan_prefix(Tree::Jobs, &prefix, limit)?;
        let mut jobs = Vec::with_capacity(entries.len());
        for (key, _) in entries {
            let corrupt = || StoreError::Corrupt("job key".into());
            let (job_type, at) = keys::read_string(&key, 0).ok_or_else(corrupt)?;
            let instance = keys::read_u64(&key, at).ok_or_else(corrupt)?;
            let job = keys::read_u64(&key, at + 8).ok_or_else(corrupt)?;
            jobs.push(JobEntry { job_type, instance: InstanceKey(instance), job: Key(job) });
        }
        Ok(jobs)
    }

    fn subscriptions(&self, message_name: &str, correlation_key: &str) -> Result<Vec<SubscriptionEntry>> {
        let prefix = keys::name_and_key(message_name, correlation_key);
        let entries = self.scan_prefix(Tree::Subscriptions, &prefix, usize::MAX)?;
        let mut subscriptions = Vec::with_capacity(entries.len());
        for (key, _) in entries {
            let corrupt = || StoreError::Corrupt("subscription key".into());
            let instance = keys::read_u64(&key, prefix.len()).ok_or_else(corrupt)?;
            let subscription = keys::read_u64(&key, prefix.len() + 8).ok_or_else(corrupt)?;
            subscriptions.push(SubscriptionEntry {
                message_name: message_name.to_owned(),
                correlation_key: correlation_key.to_owned(),
                instance: InstanceKey(instance),
                subscription: Key(subscription),
            });
        }
        Ok(subscriptions)
    }

    fn signal_subscriptions(&self, signal_name: &str) -> Result<Vec<SignalEntry>> {
        let prefix = keys::signal_prefix(signal_name);
        let mut out = Vec::new();
        for (key, _) in self.scan_prefix(Tree::Signals, &prefix, usize::MAX)? {
            let corrupt = || StoreError::Corrupt("signal subscription key".into());
            let instance = keys::read_u64(&key, prefix.len()).ok_or_else(corrupt)?;
            let subscription = keys::read_u64(&key, prefix.len() + 8).ok_or_else(corrupt)?;
            out.push(SignalEntry {
                signal_name: signal_name.to_owned(),
                instance: InstanceKey(instance),
                subscription: Key(subscription),
            });
        }
        Ok(out)
    }

    fn schedules(&self) -> Result<Vec<ScheduleEntry>> {
        self.kv
            .scan(Tree::Schedules, &[], None, usize::MAX)?
            .iter()
            .map(|(_, v)| decode("schedule", v))
            .collect()
    }

    fn replace_schedules(&self, remove: &[ScheduleEntry], put: &[ScheduleEntry]) -> Result<()> {
        let mut writes = Vec::new();
        for entry in remove {
            writes.push(Write::Delete(Tree::Schedules, keys::schedule(&entry.process_id, &entry.element)));
        }
        for entry in put {
            writes.push(Write::Put(
                Tree::Schedules,
                keys::schedule(&entry.process_id, &entry.element),
                encode(entry)?,
            ));
        }
        if writes.is_empty() {
            return Ok(());
        }
        self.write(writes, Vec::new())
    }

    fn sync(&self) -> Result<()> {
        // Writes become durable in queue order: an empty one is durable after everything before it.
        self.write(Vec::new(), Vec::new())
    }

    fn commit_counters(&self) -> Option<CommitStats> {
        Some(self.commit_stats())
    }

    fn time_scale(&self) -> Result<TimeScale> {
        match self.kv.get(Tree::Meta, keys::TIME_SCALE)? {
            Some(bytes) => decode("time scale", &bytes),
            None => Err(StoreError::Corrupt("the store has no time scale".to_owned())),
        }
    }

    fn children(&self, parent: InstanceKey, element_instance: Key) -> Result<Vec<InstanceKey>> {
        self.keys_from_index(Tree::ByParent, &keys::by_parent_prefix(parent, element_instance), None)
    }

    fn user_tasks(&self, after: Option<(InstanceKey, Key)>, limit: usize) -> Result<Vec<UserTaskEntry>> {
        let start = after.map(|(i, k)| keys::owned(i, Key(k.0.saturating_add(1)))).unwrap_or_default();
        self.kv
            .scan(Tree::UserTasks, &start, None, limit)?
            .iter()
            .map(|(_, v)| decode("user task", v))
            .collect()
    }

    fn incidents(&self, after: Option<(InstanceKey, Key)>, limit: usize) -> Result<Vec<IncidentEntry>> {
        let start = after.map(|(i, k)| keys::owned(i, Key(k.0.saturating_add(1)))).unwrap_or_default();
        self.kv
            .scan(Tree::Incidents, &start, None, limit)?
            .iter()
            .map(|(_, v)| decode("incident", v))
            .collect()
    }

    fn put_message(&self, mut message: BufferedMessage) -> Result<BufferedMessage> {
        let _messages = lock(&self.messages);
        if let Some(id) = &message.message_id {
            if self.kv.get(Tree::MessageIds, id.as_bytes())?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "a message with id '{id}' is already buffered; it is published only once"
                )));
            }
        }
        let key = read_counter(&*self.kv, keys::NEXT_MESSAGE)?.unwrap_or(1);
        message.key = key;
        let mut writes =
            vec![Write::Put(Tree::Meta, keys::NEXT_MESSAGE.to_vec(), (key + 1).to_be_bytes().to_vec())];
        Self::message_writes(&message, &mut writes)?;
        self.write(writes, Vec::new())?;
        Ok(message)
    }

    fn update_message(&self, message: &BufferedMessage) -> Result<()> {
        let _messages = lock(&self.messages);
        let key = keys::message(&message.name, &message.correlation_key, message.key);
        // An expired (removed) message stays removed.
        if self.kv.get(Tree::Messages, &key)?.is_none() {
            return Ok(());
        }
        self.write(vec![Write::Put(Tree::Messages, key, encode(message)?)], Vec::new())
    }

    fn messages(&self, name: &str, correlation_key: &str) -> Result<Vec<BufferedMessage>> {
        self.scan_prefix(Tree::Messages, &keys::name_and_key(name, correlation_key), usize::MAX)?
            .iter()
            .map(|(_, value)| decode("buffered message", value))
            .collect()
    }

    fn message_by_id(&self, message_id: &str) -> Result<Option<BufferedMessage>> {
        let Some(key) = self.kv.get(Tree::MessageIds, message_id.as_bytes())? else { return Ok(None) };
        self.kv.get(Tree::Messages, &key)?.map(|value| decode("buffered message", &value)).transpose()
    }

    fn expire_messages(&self, until: DateTime<FixedOffset>) -> Result<usize> {
        let _messages = lock(&self.messages);
        let expired =
            self.kv.scan(Tree::MessageExpiry, &[], Some(&keys::message_expiry_until(&until)), usize::MAX)?;
        let mut writes = Vec::new();
        let mut n_expired = 0;
        for (expiry_key, message_key) in &expired {
            if let Some(value) = self.kv.get(Tree::Messages, message_key)? {
                let message: BufferedMessage = decode("buffered message", &value)?;
                // Keys keep milliseconds: one expiring later within `until`'s millisecond stays.
                if message.expires_at > until {
                    continue;
                }
                if let Some(id) = &message.message_id {
                    writes.push(Write::Delete(Tree::MessageIds, id.as_bytes().to_vec()));
                }
            }
            n_expired += 1;
            writes.push(Write::Delete(Tree::Messages, message_key.clone()));
            writes.push(Write::Delete(Tree::MessageExpiry, expiry_key.clone()));
        }
        if !writes.is_empty() {
            self.write(writes, Vec::new())?;
        }
        Ok(n_expired)
    }

    fn operations(&self, filter: &OperationFilter, after: u64, limit: usize) -> Result<Vec<Operation>> {
        let mut out = Vec::new();
        // Entries are keyed by their last seq: the one holding `after + 1` is the first at or after it.
        let mut from = keys::operation(after.saturating_add(1));
        // Scan in pages so a selective filter does not load the whole log at once; small first, since
        // an unfiltered page is often satisfied by the first entries.
        let [mut page_size, max_page_size] = OPERATION_ENTRIES_PER_PAGE;
        loop {
            let page = self.kv.scan(Tree::Operations, &from, None, page_size)?;
            let Some((last, _)) = page.last() else { break };
            from = keys::operation(keys::read_u64(last, 0).unwrap_or(u64::MAX).saturating_add(1));
            for (key, value) in &page {
                for operation in decode_operations(key, value)? {
                    if operation.seq > after && filter.matches(&operation) {
                        out.push(operation);
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
            if page.len() < page_size {
                break;
            }
            page_size = (page_size * 2).min(max_page_size);
        }
        Ok(out)
    }

    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.kv
            .scan(Tree::Outbox, &[], None, limit)?
            .iter()
            .map(|(_, value)| decode("outbox entry", value))
            .collect()
    }

    fn ack(&self, ids: &[OutboxId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(ids.iter().map(|id| Write::Delete(Tree::Outbox, keys::outbox(*id))).collect(), Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{seal_all, Actor};
    use crate::runtime::Event;

    fn sealed() -> Vec<RecordedEvent> {
        let at = DateTime::parse_from_rfc3339("2027-01-04T09:00:00+01:00").unwrap_or_default();
        let variables: VariableMap = serde_json::from_value(
            serde_json::json!({"amount": 40.5, "child": {"name": "Amina", "ids": [1, 2]}}),
        )
        .unwrap_or_default();
        let events = vec![
            Event::VariablesChanged { scope: Key(1), element: "pay".into(), variables },
            Event::ElementCompleted { key: Key(2), element: "pay".into() },
        ];
        seal_all(InstanceKey(7), None, at, &Actor::user("registrar-1", Some("MOH".into())), events)
    }

    #[test]
    fn values_round_trip_in_messagepack_and_json_written_by_earlier_stores_still_reads() -> Result<()> {
        let records = sealed();
        let batch = RecordBatch::pack(&records)?;
        let binary = encode(&batch)?;
        let json = serde_json::to_vec(&batch).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        assert!(binary.len() < json.len() * 3 / 4, "{} bytes against {} in JSON", binary.len(), json.len());
        for bytes in [&binary, &json] {
            let back: RecordBatch = decode("records", bytes)?;
            assert_eq!(back.unpack(), records);
        }
        let garbled = [0xc1, 0x00];
        assert!(matches!(decode::<RecordBatch>("records", &garbled), Err(StoreError::Corrupt(_))));
        Ok(())
    }
}
