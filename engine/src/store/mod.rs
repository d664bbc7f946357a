//! Storage behind a trait: deployments, each instance's audit log and state snapshot, and the indexes the
//! engine needs (runnable jobs by type, timers by due time, message subscriptions by name and correlation
//! key, open user tasks and incidents, instances by process / status / business key / start time), buffered
//! messages with their time to live, the operation log, and the outbox of actions. One implementation per backend (`memory` for tests,
//! `sled` the embedded default); no backend type leaks through this module.
//!
//! # Contract
//! `commit` writes everything one command changed — records, snapshot, index changes, outbox — in one
//! atomic batch, and returns only once it is durable (flushed); commits that arrive together share one
//! flush (group commit), but none is answered before its flush. `submit` is the same write, pipelined:
//! it queues the batch and returns a ticket that resolves when the batch is durable, so the caller can
//! decide the next command meanwhile. Batches become durable in submission order. A reader never sees
//! half a batch, nor a batch that is not durable yet.
//! Index changes are derived from the events by [`index_changes`], the same for every backend.

pub mod keys;
pub mod kv;
pub mod memory;
pub mod sled;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::audit::{Actor, Digest256, RecordedEvent};
use crate::runtime::{Action, Event, IncidentKind, Instance, InstanceKey, InstanceStatus, Key, VariableMap};

/// The store format written by this build; opening a store of another format is an error, never a guess,
/// except the formats in [`UPGRADABLE_FORMAT_VERSIONS`].
///
/// 3: the sled backend may store record batches in its record log (`store::sled`), which builds before
/// cannot read.
/// 4: an operation-log entry holds the operations of one flush (up to 256), not one operation.
/// 5: the sled backend's log holds every batch as a frame, and sled may lag behind it (`store::sled`): a
///    build before cannot read it.
/// 6: the sled backend may pack the record pointers of one instance into one sled value (`store::sled`,
///    `# Packed runs`), which a build before would take for a damaged record batch.
pub const STORE_FORMAT_VERSION: u32 = 6;

/// Older formats this build reads as they are and marks as the current one when it opens them: format 2
/// keeps every record batch inline and formats 2 and 3 one operation per operation-log entry, which this
/// build still reads; format 4 is format 5 with no frames in the log yet, and format 5 is format 6 with no
/// packed runs.
pub const UPGRADABLE_FORMAT_VERSIONS: &[u32] = &[2, 3, 4, 5];

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} has format version {found}; this govflow reads version {expected}")]
    FormatVersion { path: String, found: u32, expected: u32 },
    #[error("the store at {path} was opened with time scale {found}; refusing to open it with {requested}")]
    TimeScale { path: String, found: f64, requested: f64 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("conflict: {0}")]
    Conflict(String),
}

/// Resolves when a submitted batch is durable (or failed). Wait for it (`wait`) or await it.
#[derive(Debug, Clone)]
pub struct CommitTicket(Arc<TicketSlot>);

#[derive(Debug, Default)]
struct TicketSlot {
    outcome: Mutex<Outcome>,
    waker: Mutex<Option<Waker>>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct Outcome {
    result: Option<std::result::Result<(), String>>,
    /// A thread blocks in `wait`: only then is `done` signalled (a signal is a futex syscall even with
    /// nobody waiting, and most tickets are awaited, not waited on).
    blocked: bool,
}

fn lock_slot<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CommitTicket {
    pub fn new() -> CommitTicket {
        CommitTicket(Arc::default())
    }

    /// Resolves the ticket (the flusher calls this once the batch is durable, or failed).
    pub fn resolve(&self, outcome: std::result::Result<(), String>) {
        let blocked = {
            let mut slot = lock_slot(&self.0.outcome);
            slot.result = Some(outcome);
            slot.blocked
        };
        if blocked {
            self.0.done.notify_all();
        }
        if let Some(waker) = lock_slot(&self.0.waker).take() {
            waker.wake();
        }
    }

    /// Blocks until the batch is durable.
    pub fn wait(self) -> Result<()> {
        let mut slot = lock_slot(&self.0.outcome);
        loop {
            if let Some(outcome) = slot.result.take() {
                return outcome.map_err(StoreError::Backend);
            }
            // Set under the lock that `resolve` takes to store the outcome, so it sees the flag or we
            // see the outcome.
            slot.blocked = true;
            slot = self.0.done.wait(slot).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Default for CommitTicket {
    fn default() -> CommitTicket {
        CommitTicket::new()
    }
}

impl Future for CommitTicket {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // The waker is stored before the outcome is checked, so a resolve in between still wakes us.
        *lock_slot(&self.0.waker) = Some(cx.waker().clone());
        match lock_slot(&self.0.outcome).result.take() {
            Some(outcome) => Poll::Ready(outcome.map_err(StoreError::Backend)),
            None => Poll::Pending,
        }
    }
}

/// A deployed process version with its source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub process_id: String,
    pub version: u32,
    /// SHA-256 of the file's bytes, hex; redeploying identical content finds the existing version.
    pub content_hash: String,
    pub resource_name: String,
    pub xml: Vec<u8>,
    pub deployed_at: DateTime<FixedOffset>,
    pub deployed_by: Actor,
    pub enabled: bool,
}

/// What is listed and filtered about an instance without reading its snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceMeta {
    pub key: InstanceKey,
    /// The call activity that started this instance: (parent instance, its element instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<(InstanceKey, Key)>,
    pub process_id: String,
    pub version: u32,
    pub business_key: Option<String>,
    pub status: InstanceStatus,
    pub started_at: DateTime<FixedOffset>,
    pub updated_at: DateTime<FixedOffset>,
}

/// An instance as stored: its state, where its log ends, and its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredInstance {
    pub meta: InstanceMeta,
    pub state: Instance,
    pub last_seq: u64,
    pub last_hash: Digest256,
}

/// An entry of the runnable-jobs index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEntry {
    pub job_type: String,
    pub instance: InstanceKey,
    pub job: Key,
}

/// An entry of the timer index, ordered by due time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerEntry {
    pub due: DateTime<FixedOffset>,
    pub instance: InstanceKey,
    pub timer: Key,
}

/// An entry of the message-subscription index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionEntry {
    pub message_name: String,
    pub correlation_key: String,
    pub instance: InstanceKey,
    pub subscription: Key,
}

/// The next start of a process by one of its timer start events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    pub process_id: String,
    /// The version whose timer start event this is (only the latest enabled version has schedules).
    pub version: u32,
    pub element: String,
    pub due: DateTime<FixedOffset>,
    /// Starts made so far.
    pub fired: u32,
    /// When the schedule was made: a cycle's repetitions count from here.
    pub anchor: DateTime<FixedOffset>,
    /// No start is left (a date or duration that fired, a cycle's last repetition). Kept, so that the
    /// version's schedule is not made again when the engine reopens.
    #[serde(default)]
    pub spent: bool,
}

/// How the engine's clock relates to real time, recorded by the store when it is created: a demo store
/// runs N× faster, and a store is never opened with another scale than it was created with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeScale {
    pub scale: f64,
    /// The real instant at which engine time was `origin_engine`.
    pub origin_real: DateTime<FixedOffset>,
    pub origin_engine: DateTime<FixedOffset>,
}

/// An open user task, as listed for task inboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTaskEntry {
    pub instance: InstanceKey,
    pub task: Key,
    pub element: String,
    pub name: Option<String>,
    pub assignee: Option<String>,
    pub candidate_groups: Vec<String>,
    pub candidate_users: Vec<String>,
    pub form_key: Option<String>,
    pub due_date: Option<String>,
}

/// An open incident, as listed for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentEntry {
    pub instance: InstanceKey,
    pub incident: Key,
    pub element: String,
    pub kind: IncidentKind,
    pub message: String,
    pub job: Option<Key>,
}

/// A published message kept for its time to live, for subscriptions that open later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferedMessage {
    /// Allocated by the store (`put_message`); unique, increasing.
    pub key: u64,
    pub name: String,
    pub correlation_key: String,
    pub variables: VariableMap,
    /// For de-duplication: a second message with the same id is refused while this one is buffered.
    pub message_id: Option<String>,
    pub published_at: DateTime<FixedOffset>,
    pub expires_at: DateTime<FixedOffset>,
    /// The processes it was correlated to: a message is correlated at most once per process.
    pub correlated: Vec<String>,
}

/// What an operation did to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    Create,
    Update,
    Delete,
}

/// What an operation changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OperationTarget {
    Definition { process_id: String, version: u32 },
    Instance { instance: InstanceKey, process_id: String },
    Variable { instance: InstanceKey, scope: Key, name: String },
}

/// One entry of the operation log (GovStack Workflow BB §5): who created, updated or deleted which
/// definition, instance or variable, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Assigned by the store when the operation is committed; unique and increasing.
    pub seq: u64,
    pub at: DateTime<FixedOffset>,
    pub actor: Actor,
    pub kind: OperationKind,
    pub target: OperationTarget,
    /// A short note: the new state, "enabled", the command that set a variable.
    pub detail: Option<String>,
}

/// Filters for the operation log; `None` means any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationFilter {
    pub user: Option<String>,
    pub instance: Option<InstanceKey>,
    pub process_id: Option<String>,
    pub kind: Option<OperationKind>,
    pub from: Option<DateTime<FixedOffset>>,
    pub to: Option<DateTime<FixedOffset>>,
}

impl OperationFilter {
    pub fn matches(&self, operation: &Operation) -> bool {
        let (instance, process_id) = match &operation.target {
            OperationTarget::Definition { process_id, .. } => (None, Some(process_id)),
            OperationTarget::Instance { instance, process_id } => (Some(*instance), Some(process_id)),
            OperationTarget::Variable { instance, .. } => (Some(*instance), None),
        };
        self.user.as_ref().is_none_or(|user| user == &operation.actor.user)
            && self.instance.is_none_or(|wanted| Some(wanted) == instance)
            && self.process_id.as_ref().is_none_or(|wanted| Some(wanted) == process_id)
            && self.kind.is_none_or(|kind| kind == operation.kind)
            && self.from.is_none_or(|from| operation.at >= from)
            && self.to.is_none_or(|to| operation.at < to)
    }
}

/// One change to an index, derived from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp {
    PutJob(JobEntry),
    DeleteJob(JobEntry),
    PutTimer(TimerEntry),
    DeleteTimer(TimerEntry),
    PutSubscription(SubscriptionEntry),
    DeleteSubscription(SubscriptionEntry),
    PutUserTask(UserTaskEntry),
    /// The open task's entry, with a new assignee (the store has the rest of the entry).
    AssignUserTask {
        instance: InstanceKey,
        task: Key,
        assignee: Option<String>,
    },
    DeleteUserTask {
        instance: InstanceKey,
        task: Key,
    },
    PutIncident(IncidentEntry),
    DeleteIncident {
        instance: InstanceKey,
        incident: Key,
    },
    PutSignal(SignalEntry),
    DeleteSignal(SignalEntry),
}

/// An entry of the signal-subscription index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalEntry {
    pub signal_name: String,
    pub instance: InstanceKey,
    pub subscription: Key,
}

/// The id of an outbox entry: (instance, seq of the record that caused it, index within the batch).
pub type OutboxId = (InstanceKey, u64, u32);

/// An action waiting in the outbox to be performed after its batch is durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Unique and increasing.
    pub id: OutboxId,
    pub action: Action,
}

/// Everything one command changed on one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub meta: InstanceMeta,
    /// The metadata before this command (`None` for a new instance), to move secondary index entries.
    pub previous: Option<InstanceMeta>,
    pub records: Vec<RecordedEvent>,
    /// The instance's state after this batch.
    pub snapshot: Instance,
    /// Whether to store `snapshot` now. When false the stored snapshot lags behind the records and
    /// `Store::instance` folds the records after it; a new instance's first batch then stores its
    /// metadata with the empty state (`Instance::new`), so readers fold all its records.
    pub write_snapshot: bool,
    pub index_ops: Vec<IndexOp>,
    pub outbox: Vec<OutboxEntry>,
    /// Outbox entries performed by now, removed in the same batch.
    pub acks: Vec<OutboxId>,
    /// Operation-log entries (their `seq` is assigned by the store).
    pub operations: Vec<Operation>,
}

/// Filters for listing instances; `None` means any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceFilter {
    pub process_id: Option<String>,
    pub version: Option<u32>,
    pub status: Option<InstanceStatus>,
    pub business_key: Option<String>,
    pub started_after: Option<DateTime<FixedOffset>>,
    pub started_before: Option<DateTime<FixedOffset>>,
}

impl InstanceFilter {
    pub fn matches(&self, meta: &InstanceMeta) -> bool {
        self.process_id.as_ref().is_none_or(|p| p == &meta.process_id)
            && self.version.is_none_or(|v| v == meta.version)
            && self.status.is_none_or(|s| s == meta.status)
            && self.business_key.as_ref().is_none_or(|b| Some(b) == meta.business_key.as_ref())
            && self.started_after.is_none_or(|t| meta.started_at >= t)
            && self.started_before.is_none_or(|t| meta.started_at < t)
    }
}

/// The storage contract every backend meets (see the module's `# Contract`).
pub trait Store: Send + Sync {
    /// Saves a new deployment, or replaces one (enable / disable), with its operation-log entry.
    fn put_deployment(&self, deployment: &Deployment, operation: Operation) -> Result<()> {
        self.put_deployments(std::slice::from_ref(deployment), vec![operation])
    }
    /// Saves several deployments and their operation-log entries in one atomic write: all or none.
    fn put_deployments(&self, deployments: &[Deployment], operations: Vec<Operation>) -> Result<()>;
    /// The highest version of `process_id` ever saved, deleted ones included (0: none): a new version
    /// is numbered after it, so no number is given twice.
    fn last_version(&self, process_id: &str) -> Result<u32>;
    /// Removes a deployment (the caller checked that no instance uses it).
    fn delete_deployment(&self, process_id: &str, version: u32, operation: Operation) -> Result<()> {
        self.delete_deployments(&[(process_id.to_owned(), version)], vec![operation])
    }
    /// Removes several deployments and logs their operations in one atomic write: all or none.
    fn delete_deployments(&self, versions: &[(String, u32)], operations: Vec<Operation>) -> Result<()>;
    /// Every deployment, ordered by process id, then version.
    fn deployments(&self) -> Result<Vec<Deployment>>;
    fn deployment(&self, process_id: &str, version: u32) -> Result<Option<Deployment>>;
    /// Allocates the next instance key (durable: never handed out twice, even after a crash).
    fn next_instance_key(&self) -> Result<InstanceKey>;
    /// Queues one command's batch to be written atomically and durably, in submission order; the ticket
    /// resolves once it is. Batches submitted together share one flush (group commit). Once a flush
    /// fails, every later batch fails too (nothing is written after a gap) until the store is reopened.
    fn submit(&self, batch: &Batch) -> Result<CommitTicket>;
    /// Writes one command's batch atomically and durably: `submit`, then wait for the ticket.
    fn commit(&self, batch: &Batch) -> Result<()> {
        self.submit(batch)?.wait()
    }
    /// Records of an instance from sequence number `from` (inclusive), in order, at most `limit`.
    fn records(&self, instance: InstanceKey, from: u64, limit: usize) -> Result<Vec<RecordedEvent>>;
    /// An instance's state after every committed record: the stored snapshot, with the records after it
    /// folded in.
    fn instance(&self, instance: InstanceKey) -> Result<Option<StoredInstance>>;
    fn instance_meta(&self, instance: InstanceKey) -> Result<Option<InstanceMeta>>;
    /// Instances matching `filter`, by key, after `after` (cursor paging), at most `limit`. Uses the
    /// secondary indexes (business key, process, status, start time) where the filter allows.
    fn instances(
        &self,
        filter: &InstanceFilter,
        after: Option<InstanceKey>,
        limit: usize,
    ) -> Result<Vec<InstanceMeta>>;
    /// Timers due at or before `until`, earliest first.
    fn due_timers(&self, until: DateTime<FixedOffset>, limit: usize) -> Result<Vec<TimerEntry>>;
    /// Timers due after `after` (from the start when `None`) and at or before `until`, earliest first.
    fn timers_between(
        &self,
        after: Option<DateTime<FixedOffset>>,
        until: DateTime<FixedOffset>,
        limit: usize,
    ) -> Result<Vec<TimerEntry>>;
    /// Runnable jobs of `job_type` (every type when `None`), by (type, instance, job).
    fn jobs(&self, job_type: Option<&str>, limit: usize) -> Result<Vec<JobEntry>>;
    fn subscriptions(&self, message_name: &str, correlation_key: &str) -> Result<Vec<SubscriptionEntry>>;
    /// Instances subscribed to signal `signal_name`.
    fn signal_subscriptions(&self, signal_name: &str) -> Result<Vec<SignalEntry>>;
    /// Every timer-start schedule.
    fn schedules(&self) -> Result<Vec<ScheduleEntry>>;
    /// Removes the schedules `remove` and writes `put`, in one durable write.
    fn replace_schedules(&self, remove: &[ScheduleEntry], put: &[ScheduleEntry]) -> Result<()>;
    /// The time scale the store was created with.
    fn time_scale(&self) -> Result<TimeScale>;
    /// Waits until every commit submitted before this call is durable, and so visible to readers.
    fn sync(&self) -> Result<()>;
    /// Group-commit counters (flushes, commits, time flushing), when the backend keeps them.
    fn commit_counters(&self) -> Option<kv::CommitStats> {
        None
    }
    /// The child instances a call activity started.
    fn children(&self, parent: InstanceKey, element_instance: Key) -> Result<Vec<InstanceKey>>;
    /// Open user tasks, by (instance, task), after `after`, at most `limit`.
    fn user_tasks(&self, after: Option<(InstanceKey, Key)>, limit: usize) -> Result<Vec<UserTaskEntry>>;
    /// Open incidents, by (instance, incident), after `after`, at most `limit`.
    fn incidents(&self, after: Option<(InstanceKey, Key)>, limit: usize) -> Result<Vec<IncidentEntry>>;
    /// Buffers a message (its `key` is allocated here; the stored message is returned). Refuses, with
    /// `StoreError::Conflict`, a message whose id is already buffered.
    fn put_message(&self, message: BufferedMessage) -> Result<BufferedMessage>;
    /// Replaces a buffered message (after a correlation), keeping its key.
    fn update_message(&self, message: &BufferedMessage) -> Result<()>;
    /// Buffered messages of (name, correlation key), oldest first, expired ones included.
    fn messages(&self, name: &str, correlation_key: &str) -> Result<Vec<BufferedMessage>>;
    fn message_by_id(&self, message_id: &str) -> Result<Option<BufferedMessage>>;
    /// Removes every message that expired at or before `until`; returns how many.
    fn expire_messages(&self, until: DateTime<FixedOffset>) -> Result<usize>;
    /// The operation log, oldest first, after sequence number `after`, at most `limit` matches.
    fn operations(&self, filter: &OperationFilter, after: u64, limit: usize) -> Result<Vec<Operation>>;
    /// Actions not yet acknowledged, oldest first.
    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>>;
    /// The actions ran; they leave the outbox.
    fn ack(&self, ids: &[OutboxId]) -> Result<()>;
}

/// The index changes that `records` imply, given the instance state `before` they were applied (to find
/// what a deletion refers to: a cancelled timer's due time, a closed subscription's name).
pub fn index_changes(instance: InstanceKey, before: &Instance, records: &[RecordedEvent]) -> Vec<IndexOp> {
    // An entry a deletion names is in `before`, or was put earlier in this same batch: look in both rather
    // than folding a copy of the whole state.
    let mut ops: Vec<IndexOp> = Vec::new();
    let state = Lookup { before };
    for record in records {
        match &record.event {
            Event::JobCreated { job, job_type, .. } => {
                ops.push(IndexOp::PutJob(JobEntry { job_type: job_type.clone(), instance, job: *job }));
            }
            Event::JobCompleted { job, .. }
            | Event::JobCancelled { job }
            | Event::JobErrorThrown { job, .. } => {
                if let Some(job_type) = state.job_type(&ops, *job) {
                    ops.push(IndexOp::DeleteJob(JobEntry { job_type, instance, job: *job }));
                }
            }
            Event::JobFailed { job, retries: 0, .. } => {
                if let Some(job_type) = state.job_type(&ops, *job) {
                    ops.push(IndexOp::DeleteJob(JobEntry { job_type, instance, job: *job }));
                }
            }
            Event::JobRetriesUpdated { job, .. } => {
                if let Some(job_type) = state.job_type(&ops, *job) {
                    ops.push(IndexOp::PutJob(JobEntry { job_type, instance, job: *job }));
                }
            }
            Event::TimerScheduled { timer, due, .. } => {
                ops.push(IndexOp::PutTimer(TimerEntry { due: *due, instance, timer: *timer }));
            }
            Event::TimerFired { timer } | Event::TimerCancelled { timer } => {
                if let Some(due) = state.timer_due(&ops, *timer) {
                    ops.push(IndexOp::DeleteTimer(TimerEntry { due, instance, timer: *timer }));
                }
            }
            Event::MessageSubscriptionOpened { subscription, message_name, correlation_key, .. } => {
                ops.push(IndexOp::PutSubscription(SubscriptionEntry {
                    message_name: message_name.clone(),
                    correlation_key: correlation_key.clone(),
                    instance,
                    subscription: *subscription,
                }));
            }
            Event::UserTaskOpened {
                task,
                element,
                name,
                assignee,
                candidate_groups,
                candidate_users,
                form_key,
                due_date,
                ..
            } => ops.push(IndexOp::PutUserTask(UserTaskEntry {
                instance,
                task: *task,
                element: element.0.clone(),
                name: name.clone(),
                assignee: assignee.clone(),
                candidate_groups: candidate_groups.clone(),
                candidate_users: candidate_users.clone(),
                form_key: form_key.clone(),
                due_date: due_date.clone(),
            })),
            Event::UserTaskCompleted { task, .. } | Event::UserTaskCancelled { task } => {
                ops.push(IndexOp::DeleteUserTask { instance, task: *task });
            }
            Event::UserTaskAssigned { task, assignee } => {
                ops.push(IndexOp::AssignUserTask { instance, task: *task, assignee: assignee.clone() });
            }
            Event::IncidentRaised { incident, element, kind, message, job, .. } => {
                ops.push(IndexOp::PutIncident(IncidentEntry {
                    instance,
                    incident: *incident,
                    element: element.0.clone(),
                    kind: *kind,
                    message: message.clone(),
                    job: *job,
                }));
            }
            Event::SignalSubscriptionOpened { subscription, signal_name, .. } => {
                ops.push(IndexOp::PutSignal(SignalEntry {
                    signal_name: signal_name.clone(),
                    instance,
                    subscription: *subscription,
                }));
            }
            Event::SignalSubscriptionClosed { subscription } => {
                if let Some(signal_name) = state.signal(&ops, *subscription) {
                    ops.push(IndexOp::DeleteSignal(SignalEntry {
                        signal_name,
                        instance,
                        subscription: *subscription,
                    }));
                }
            }
            Event::IncidentResolved { incident } => {
                ops.push(IndexOp::DeleteIncident { instance, incident: *incident });
            }
            Event::MessageSubscriptionClosed { subscription } => {
                if let Some((message_name, correlation_key)) = state.message(&ops, *subscription) {
                    ops.push(IndexOp::DeleteSubscription(SubscriptionEntry {
                        message_name,
                        correlation_key,
                        instance,
                        subscription: *subscription,
                    }));
                }
            }
            _ => {}
        }
    }
    ops
}

/// Finds what a deletion refers to, in the state before the batch or among the entries the batch put.
struct Lookup<'a> {
    before: &'a Instance,
}

impl Lookup<'_> {
    fn job_type(&self, ops: &[IndexOp], job: Key) -> Option<String> {
        self.before.jobs.get(&job).map(|existing| existing.job_type.clone()).or_else(|| {
            ops.iter().rev().find_map(|op| match op {
                IndexOp::PutJob(entry) if entry.job == job => Some(entry.job_type.clone()),
                _ => None,
            })
        })
    }

    fn timer_due(&self, ops: &[IndexOp], timer: Key) -> Option<DateTime<FixedOffset>> {
        self.before.timers.get(&timer).map(|existing| existing.due).or_else(|| {
            ops.iter().rev().find_map(|op| match op {
                IndexOp::PutTimer(entry) if entry.timer == timer => Some(entry.due),
                _ => None,
            })
        })
    }

    fn message(&self, ops: &[IndexOp], subscription: Key) -> Option<(String, String)> {
        self.before
            .message_subscriptions
            .get(&subscription)
            .map(|existing| (existing.message_name.clone(), existing.correlation_key.clone()))
            .or_else(|| {
                ops.iter().rev().find_map(|op| match op {
                    IndexOp::PutSubscription(entry) if entry.subscription == subscription => {
                        Some((entry.message_name.clone(), entry.correlation_key.clone()))
                    }
                    _ => None,
                })
            })
    }

    fn signal(&self, ops: &[IndexOp], subscription: Key) -> Option<String> {
        self.before
            .signal_subscriptions
            .get(&subscription)
            .map(|existing| existing.signal_name.clone())
            .or_else(|| {
                ops.iter().rev().find_map(|op| match op {
                    IndexOp::PutSignal(entry) if entry.subscription == subscription => {
                        Some(entry.signal_name.clone())
                    }
                    _ => None,
                })
            })
    }
}
