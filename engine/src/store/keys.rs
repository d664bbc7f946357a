//! Every key encoding of the key-value backends, in one place. Integers are big-endian and strings are
//! length-prefixed, so byte order is the order the engine scans in.
//!
//! # Invariants
//! For every index, the byte order of encoded keys equals the order of the decoded tuples: records of an
//! instance by sequence number, timers by (due time, instance, timer), jobs by (type, instance, job). A
//! change here is a store format change (bump `STORE_FORMAT_VERSION`).

use chrono::{DateTime, FixedOffset};

use crate::runtime::{InstanceKey, Key};

/// The logical trees (sled trees; maps in the memory backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    /// `format_version`, `time_scale`, counters.
    Meta,
    /// (process id, version) → Deployment JSON.
    Deployments,
    /// (instance, seq) → RecordedEvent JSON.
    Records,
    /// instance → StoredInstance JSON (snapshot + meta + chain head).
    Instances,
    /// (job type, instance, job) → ().
    Jobs,
    /// (due, instance, timer) → ().
    Timers,
    /// (message name, correlation key, instance, subscription) → ().
    Subscriptions,
    /// (instance, seq, index) → Action JSON.
    Outbox,
}

impl Tree {
    pub const ALL: [Tree; 8] = [
        Tree::Meta,
        Tree::Deployments,
        Tree::Records,
        Tree::Instances,
        Tree::Jobs,
        Tree::Timers,
        Tree::Subscriptions,
        Tree::Outbox,
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
        }
    }
}

pub const FORMAT_VERSION: &[u8] = b"format_version";
pub const TIME_SCALE: &[u8] = b"time_scale";
pub const NEXT_INSTANCE: &[u8] = b"next_instance";

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
    let mut key = Vec::new();
    string(&mut key, process_id);
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

pub fn record(instance: InstanceKey, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    u64_be(&mut key, instance.0);
    u64_be(&mut key, seq);
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
    let mut key = subscription_prefix(name, correlation_key);
    u64_be(&mut key, instance.0);
    u64_be(&mut key, subscription.0);
    key
}

pub fn subscription_prefix(name: &str, correlation_key: &str) -> Vec<u8> {
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

pub fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
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
    }
}
