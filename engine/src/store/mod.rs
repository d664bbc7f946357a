//! Storage behind a trait: deployments, each instance's audit log and state snapshot, and the indexes the
//! engine needs (runnable jobs by type, timers by due time, message subscriptions by name and correlation
//! key, open incidents), plus the outbox of actions. One implementation per backend (`memory` for tests,
//! `sled` the embedded default); no backend type leaks through this module.
//!
//! # Contract
//! `commit` writes everything one command changed — records, snapshot, index changes, outbox — in one
//! atomic batch, and returns only once it is durable (flushed). A reader never sees half a batch.
//! Index changes are derived from the events by [`index_changes`], the same for every backend.

pub mod keys;
pub mod kv;
pub mod memory;
pub mod sled;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::audit::{Actor, Digest256, RecordedEvent};
use crate::runtime::{Action, Event, Instance, InstanceKey, InstanceStatus, Key};

/// The store format written by this build; opening a store of another format is an error, never a guess.
pub const STORE_FORMAT_VERSION: u32 = 1;

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

/// One change to an index, derived from an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOp {
    PutJob(JobEntry),
    DeleteJob(JobEntry),
    PutTimer(TimerEntry),
    DeleteTimer(TimerEntry),
    PutSubscription(SubscriptionEntry),
    DeleteSubscription(SubscriptionEntry),
}

/// An action waiting in the outbox to be performed after its batch is durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Unique and increasing: (instance, seq of the record that caused it, index within the batch).
    pub id: (InstanceKey, u64, u32),
    pub action: Action,
}

/// Everything one command changed on one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub meta: InstanceMeta,
    pub records: Vec<RecordedEvent>,
    pub snapshot: Instance,
    pub index_ops: Vec<IndexOp>,
    pub outbox: Vec<OutboxEntry>,
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
    /// Saves a deployment (a new version of a process).
    fn put_deployment(&self, deployment: &Deployment) -> Result<()>;
    /// Every deployment, ordered by process id, then version.
    fn deployments(&self) -> Result<Vec<Deployment>>;
    fn deployment(&self, process_id: &str, version: u32) -> Result<Option<Deployment>>;
    /// Allocates the next instance key (durable: never handed out twice, even after a crash).
    fn next_instance_key(&self) -> Result<InstanceKey>;
    /// Writes one command's batch atomically and durably.
    fn commit(&self, batch: &Batch) -> Result<()>;
    /// Records of an instance from sequence number `from` (inclusive), in order, at most `limit`.
    fn records(&self, instance: InstanceKey, from: u64, limit: usize) -> Result<Vec<RecordedEvent>>;
    fn instance(&self, instance: InstanceKey) -> Result<Option<StoredInstance>>;
    /// Instances matching `filter`, by key, after `after` (cursor paging), at most `limit`.
    fn instances(
        &self,
        filter: &InstanceFilter,
        after: Option<InstanceKey>,
        limit: usize,
    ) -> Result<Vec<InstanceMeta>>;
    /// Timers due at or before `until`, earliest first.
    fn due_timers(&self, until: DateTime<FixedOffset>, limit: usize) -> Result<Vec<TimerEntry>>;
    /// Runnable jobs of `job_type` (every type when `None`), oldest first.
    fn jobs(&self, job_type: Option<&str>, limit: usize) -> Result<Vec<JobEntry>>;
    fn subscriptions(&self, message_name: &str, correlation_key: &str) -> Result<Vec<SubscriptionEntry>>;
    /// Actions not yet acknowledged, oldest first.
    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>>;
    /// The action ran; it leaves the outbox.
    fn ack(&self, id: (InstanceKey, u64, u32)) -> Result<()>;
}

/// The index changes that `records` imply, given the instance state `before` they were applied (to find
/// what a deletion refers to: a cancelled timer's due time, a closed subscription's name).
pub fn index_changes(instance: InstanceKey, before: &Instance, records: &[RecordedEvent]) -> Vec<IndexOp> {
    let mut state = before.clone();
    let mut ops = Vec::new();
    for record in records {
        match &record.event {
            Event::JobCreated { job, job_type, .. } => {
                ops.push(IndexOp::PutJob(JobEntry { job_type: job_type.clone(), instance, job: *job }));
            }
            Event::JobCompleted { job, .. }
            | Event::JobCancelled { job }
            | Event::JobErrorThrown { job, .. } => {
                if let Some(existing) = state.jobs.get(job) {
                    ops.push(IndexOp::DeleteJob(JobEntry {
                        job_type: existing.job_type.clone(),
                        instance,
                        job: *job,
                    }));
                }
            }
            Event::JobFailed { job, retries: 0, .. } => {
                if let Some(existing) = state.jobs.get(job) {
                    ops.push(IndexOp::DeleteJob(JobEntry {
                        job_type: existing.job_type.clone(),
                        instance,
                        job: *job,
                    }));
                }
            }
            Event::TimerScheduled { timer, due, .. } => {
                ops.push(IndexOp::PutTimer(TimerEntry { due: *due, instance, timer: *timer }));
            }
            Event::TimerFired { timer } | Event::TimerCancelled { timer } => {
                if let Some(existing) = state.timers.get(timer) {
                    ops.push(IndexOp::DeleteTimer(TimerEntry { due: existing.due, instance, timer: *timer }));
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
            Event::MessageSubscriptionClosed { subscription } => {
                if let Some(existing) = state.message_subscriptions.get(subscription) {
                    ops.push(IndexOp::DeleteSubscription(SubscriptionEntry {
                        message_name: existing.message_name.clone(),
                        correlation_key: existing.correlation_key.clone(),
                        instance,
                        subscription: *subscription,
                    }));
                }
            }
            _ => {}
        }
        state.apply(&record.event);
    }
    ops
}
