//! Every key encoding of the key-value backends, in one place. Integers are big-endian and strings are
//! length-prefixed, so byte order is the order the engine scans in.
//!
//! # Invariants
//! For every index, the byte order of encoded keys equals the order of the decoded tuples: record batches
//! of an instance by their last sequence number, timers by (due time, instance, timer), jobs by (type,
//! instance, job), the operation log by the last sequence number of each entry. A change here is a store format change (bump
//! `STORE_FORMAT_VERSION`).
//!
//! # Layout
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `format_version`, `time_scale`, `next_instance`; `last_version` + process id (added in format 2, read as "none" when absent) | u32 / f64 / u64 / u32, big-endian |
//! | `deployments` | (process id, version u32) | `Deployment` |
//! | `records` | (instance u64, last seq u64 of the batch) | the batch's `RecordedEvent`s (`RecordBatch`); the sled backend keeps them in its record log and stores a pointer here |
//! | `instances` | instance u64 | `StoredInstance` (snapshot, chain head) |
//! | `jobs` | (job type, instance u64, job u64) | empty |
//! | `timers` | (due ms, instance u64, timer u64) | `TimerEntry` |
//! | `subscriptions` | (message name, correlation key, instance u64, subscription u64) | empty |
//! | `outbox` | (instance u64, seq u64, index u32) | `OutboxEntry` |
//! | `by_process` | (process id, version u32, instance u64) | empty |
//! | `by_status` | (status u8, instance u64) | empty |
//! | `by_business_key` | (business key, instance u64) | empty |
//! | `by_start` | (started ms, instance u64) | empty |
//! | `user_tasks` | (instance u64, task u64) | `UserTaskEntry` |
//! | `incidents` | (instance u64, incident u64) | `IncidentEntry` |
//! | `messages` | (message name, correlation key, message u64) | `BufferedMessage` |
//! | `message_ids` | message id | message key: (name, correlation key, message u64) |
//! | `message_expiry` | (expires ms, message u64) | message key |
//! | `operations` | last seq u64 of the entry | the `Operation`s of one flush, up to 256 (format 4; one `Operation` alone before) |
//! | `signal_subscriptions` | (signal name, instance u64, subscription u64) | empty |
//! | `schedules` | (process id, start event id) | `ScheduleEntry` (a timer start event's next start) |
//! | `by_parent` | (parent instance u64, call activity element instance u64, child instance u64) | empty |
//!
//! Times are milliseconds since the epoch with the sign bit flipped, so instants before 1970 sort first.
//!
//! Values are MessagePack with field names (`kv::encode`); values of stores written before are JSON and
//! still read (`kv::decode` tells them by their first byte), so the value encoding is not a format change.

use chrono::{DateTime, FixedOffset};

use crate::runtime::{InstanceKey, InstanceStatus, Key};

/// The logical trees (key prefixes of the one sled tree; maps in the memory backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    Meta,
    Deployments,
    Records,
    Instances,
    Jobs,
    Timers,
    Subscriptions,
    Outbox,
    ByProcess,
    ByStatus,
    ByBusinessKey,
    ByStart,
    UserTasks,
    Incidents,
    Messages,
    MessageIds,
    MessageExpiry,
    Operations,
    Signals,
    ByParent,
    Schedules,
}

impl Tree {
    pub const ALL: [Tree; 21] = [
        Tree::Meta,
        Tree::Deployments,
        Tree::Records,
        Tree::Instances,
        Tree::Jobs,
        Tree::Timers,
        Tree::Subscriptions,
        Tree::Outbox,
        Tree::ByProcess,
        Tree::ByStatus,
        Tree::ByBusinessKey,
        Tree::ByStart,
        Tree::UserTasks,
        Tree::Incidents,
        Tree::Messages,
        Tree::MessageIds,
        Tree::MessageExpiry,
        Tree::Operations,
        Tree::Signals,
        Tree::ByParent,
        Tree::Schedules,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Deployments => "deployments",
            Tree::Records => "records",
            Tree::Instances => "instances",
            Tree::Jobs => "jobs",
            Tree::Timers => "timers",
            Tree::Subscriptions => "subscriptions",
            Tree::Outbox => "outbox",
            Tree::ByProcess => "by_process",
            Tree::ByStatus => "by_status",
            Tree::ByBusinessKey => "by_business_key",
            Tree::ByStart => "by_start",
            Tree::UserTasks => "user_tasks",
            Tree::Incidents => "incidents",
            Tree::Messages => "messages",
            Tree::MessageIds => "message_ids",
            Tree::MessageExpiry => "message_expiry",
            Tree::Operations => "operations",
            Tree::Signals => "signal_subscriptions",
            Tree::ByParent => "by_parent",
            Tree::Schedules => "schedules",
        }
    }

    /// The one-byte prefix of this tree's keys in a backend that keeps every tree in one keyspace. Fixed
    /// per tree (never the position in `ALL`), so adding a tree does not move the others.
    pub fn prefix(self) -> u8 {
        match self {
            // 4 was a separate instance-metadata tree in development; listing now reads `instances`.
            Tree::Meta => 0,
            Tree::Deployments => 1,
            Tree::Records => 2,
            Tree::Instances => 3,
            Tree::Jobs => 5,
            Tree::Timers => 6,
            Tree::Subscriptions => 7,
            Tree::Outbox => 8,
            Tree::ByProcess => 9,
            Tree::ByStatus => 10,
            Tree::ByBusinessKey => 11,
            Tree::ByStart => 12,
            Tree::UserTasks => 13,
            Tree::Incidents => 14,
            Tree::Messages => 15,
            Tree::MessageIds => 16,
            Tree::MessageExpiry => 17,
            Tree::Operations => 18,
            Tree::Signals => 19,
            Tree::ByParent => 20,
            Tree::Schedules => 21,
        }
    }
}

pub const FORMAT_VERSION: &[u8] = b"format_version";
pub const TIME_SCALE: &[u8] = b"time_scale";
/// The first instance key not yet reserved (keys are reserved in blocks; see `KvStore`).
pub const NEXT_INSTANCE: &[u8] = b"next_instance";
/// The first buffered-message key not yet reserved.
pub const NEXT_MESSAGE: &[u8] = b"next_message";

/// (In `Meta`) the highest version ever deployed of a process, kept when versions are deleted so that
/// a number is never given twice: `last_version` + length-prefixed process id → big-endian u32.
pub fn last_version(process_id: &str) -> Vec<u8> {
    let mut key = b"last_version".to_vec();
    string(&mut key, process_id);
    key
}

fn string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn u64_be(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// Milliseconds since the epoch, offset so that instants before 1970 still sort first.
fn instant(out: &mut Vec<u8>, at: &DateTime<FixedOffset>) {
    let millis = at.timestamp_millis();
    u64_be(out, (millis as u64) ^ (1 << 63));
}

pub fn deployment(process_id: &str, version: u32) -> Vec<u8> {
    let mut key = deployment_prefix(process_id);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub fn deployment_prefix(process_id: &str) -> Vec<u8> {
    let mut key = Vec::new();
    string(&mut key, process_id);
    key
}

pub fn instance(instance: InstanceKey) -> Vec<u8> {
    instance.0.to_be_bytes().to_vec()
}

/// The key of the record batch of `instance` whose last record is `last_seq`.
pub fn record(instance: InstanceKey, last_seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    u64_be(&mut key, instance.0);
    u64_be(&mut key, last_seq);
    key
}

pub fn job(job_type: &str, instance: InstanceKey, job: Key) -> Vec<u8> {
    let mut key = job_prefix(job_type);
    u64_be(&mut key, instance.0);
    u64_be(&mut key, job.0);
    key
}

pub fn job_prefix(job_type: &str) -> Vec<u8> {
    let mut key = Vec::new();
    string(&mut key, job_type);
    key
}

pub fn timer(due: &DateTime<FixedOffset>, instance: InstanceKey, timer: Key) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    self::instant(&mut key, due);
    u64_be(&mut key, instance.0);
    u64_be(&mut key, timer.0);
    key
}

/// The first key after every timer due at or before `until`.
pub fn timers_until(until: &DateTime<FixedOffset>) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    instant(&mut key, until);
    u64_be(&mut key, u64::MAX);
    u64_be(&mut key, u64::MAX);
    key
}

pub fn subscription(name: &str, correlation_key: &str, instance: InstanceKey, subscription: Key) -> Vec<u8> {
    let mut key = name_and_key(name, correlation_key);
    u64_be(&mut key, instance.0);
    u64_be(&mut key, subscription.0);
    key
}

/// The prefix shared by subscriptions and buffered messages of (name, correlation key).
pub fn name_and_key(name: &str, correlation_key: &str) -> Vec<u8> {
    let mut key = Vec::new();
    string(&mut key, name);
    string(&mut key, correlation_key);
    key
}

pub fn outbox(id: (InstanceKey, u64, u32)) -> Vec<u8> {
    let mut key = Vec::with_capacity(20);
    u64_be(&mut key, id.0 .0);
    u64_be(&mut key, id.1);
    key.extend_from_slice(&id.2.to_be_bytes());
    key
}

pub fn by_process_prefix(process_id: &str, version: Option<u32>) -> Vec<u8> {
    let mut key = Vec::new();
    string(&mut key, process_id);
    if let Some(version) = version {
        key.extend_from_slice(&version.to_be_bytes());
    }
    key
}

pub fn by_process(process_id: &str, version: u32, instance: InstanceKey) -> Vec<u8> {
    let mut key = by_process_prefix(process_id, Some(version));
    u64_be(&mut key, instance.0);
    key
}

pub fn status_code(status: InstanceStatus) -> u8 {
    match status {
        InstanceStatus::NotStarted => 0,
        InstanceStatus::Active => 1,
        InstanceStatus::Completed => 2,
        InstanceStatus::Cancelled => 3,
    }
}

/// The version of a `by_process` entry: the u32 between the process id and the instance key.
pub fn by_process_version(key: &[u8]) -> Option<u32> {
    let at = key.len().checked_sub(12)?;
    Some(u32::from_be_bytes(key.get(at..at + 4)?.try_into().ok()?))
}

pub fn by_status(status: InstanceStatus, instance: InstanceKey) -> Vec<u8> {
    let mut key = vec![status_code(status)];
    u64_be(&mut key, instance.0);
    key
}

pub fn by_business_key(business_key: &str, instance: InstanceKey) -> Vec<u8> {
    let mut key = by_business_key_prefix(business_key);
    u64_be(&mut key, instance.0);
    key
}

pub fn by_business_key_prefix(business_key: &str) -> Vec<u8> {
    let mut key = Vec::new();
    string(&mut key, business_key);
    key
}

pub fn by_start(started_at: &DateTime<FixedOffset>, instance: InstanceKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    self::instant(&mut key, started_at);
    u64_be(&mut key, instance.0);
    key
}

/// The first `by_start` key at or after `at` (with `InstanceKey(0)`).
pub fn by_start_from(at: &DateTime<FixedOffset>) -> Vec<u8> {
    by_start(at, InstanceKey(0))
}

/// The key of an entry owned by an instance: user tasks, incidents.
pub fn owned(instance: InstanceKey, key: Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    u64_be(&mut out, instance.0);
    u64_be(&mut out, key.0);
    out
}

pub fn message(name: &str, correlation_key: &str, message: u64) -> Vec<u8> {
    let mut key = name_and_key(name, correlation_key);
    u64_be(&mut key, message);
    key
}

pub fn message_expiry(expires: &DateTime<FixedOffset>, message: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    self::instant(&mut key, expires);
    u64_be(&mut key, message);
    key
}

/// The first key after every message expiring at or before `until`.
pub fn message_expiry_until(until: &DateTime<FixedOffset>) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    instant(&mut key, until);
    u64_be(&mut key, u64::MAX);
    key
}

pub fn signal(name: &str, instance: InstanceKey, subscription: Key) -> Vec<u8> {
    let mut key = signal_prefix(name);
    u64_be(&mut key, instance.0);
    u64_be(&mut key, subscription.0);
    key
}

pub fn signal_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::new();
    string(&mut key, name);
    key
}

pub fn by_parent(parent: InstanceKey, element_instance: Key, child: InstanceKey) -> Vec<u8> {
    let mut key = by_parent_prefix(parent, element_instance);
    u64_be(&mut key, child.0);
    key
}

pub fn by_parent_prefix(parent: InstanceKey, element_instance: Key) -> Vec<u8> {
    owned(parent, element_instance)
}

pub fn schedule(process_id: &str, element: &str) -> Vec<u8> {
    let mut key = Vec::new();
    string(&mut key, process_id);
    string(&mut key, element);
    key
}

pub fn operation(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

pub fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Reads a length-prefixed string at `at`; returns it and the offset after it.
pub fn read_string(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    let len = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
    let text = std::str::from_utf8(bytes.get(at + 4..at + 4 + len)?).ok()?;
    Some((text.to_owned(), at + 4 + len))
}

/// The last eight bytes as a big-endian u64 (the instance of an index key ending in one).
pub fn trailing_u64(bytes: &[u8]) -> Option<u64> {
    read_u64(bytes, bytes.len().checked_sub(8)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_numeric_and_time_order() {
        assert!(record(InstanceKey(1), 2) < record(InstanceKey(1), 10));
        assert!(record(InstanceKey(1), u64::MAX) < record(InstanceKey(2), 0));
        let early = DateTime::parse_from_rfc3339("1969-12-31T23:59:59Z").unwrap();
        let late = DateTime::parse_from_rfc3339("2027-01-01T00:00:00+03:00").unwrap();
        let later = DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z").unwrap();
        assert!(timer(&early, InstanceKey(9), Key(9)) < timer(&late, InstanceKey(1), Key(1)));
        assert!(timer(&late, InstanceKey(9), Key(9)) < timer(&later, InstanceKey(1), Key(1)));
        assert!(timer(&later, InstanceKey(9), Key(9)) < timers_until(&later));
        assert!(job("a", InstanceKey(2), Key(1)) < job("b", InstanceKey(1), Key(1)));
        // Length prefixes keep "ab" from sorting into the range of "a".
        assert!(!job("ab", InstanceKey(1), Key(1)).starts_with(&job_prefix("a")));
        assert!(by_start(&early, InstanceKey(9)) < by_start(&late, InstanceKey(1)));
        assert!(by_process("p", 2, InstanceKey(1)) < by_process("p", 10, InstanceKey(1)));
        assert!(message_expiry(&later, 3) < message_expiry_until(&later));
        assert!(operation(255) < operation(256));
    }

    #[test]
    fn tree_prefixes_are_distinct() {
        let mut prefixes: Vec<u8> = Tree::ALL.iter().map(|tree| tree.prefix()).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        assert_eq!(prefixes.len(), Tree::ALL.len());
    }

    #[test]
    fn strings_read_back() {
        let key = by_business_key("B-7", InstanceKey(42));
        assert_eq!(read_string(&key, 0), Some(("B-7".to_owned(), 7)));
        assert_eq!(trailing_u64(&key), Some(42));
    }
}
