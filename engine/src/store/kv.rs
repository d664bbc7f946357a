//! The `Store` contract implemented once over any ordered key-value backend ([`Kv`]): the memory backend
//! for tests and the sled backend. Backends only provide ordered trees and an atomic, durable write of a
//! batch; encodings live in `keys.rs`, the index rules in `index_changes`.

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
    fn apply(&self, writes: Vec<Write>) -> Result<()>;
}

/// A `Store` over a `Kv`.
#[derive(Debug)]
pub struct KvStore<K> {
    kv: K,
    /// Serialises instance-key allocation (read, then write) so no key is handed out twice.
    keys: std::sync::Mutex<()>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|error| StoreError::Corrupt(format!("cannot encode: {error}")))
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
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

impl<K: Kv> KvStore<K> {
    /// Wraps a backend, writing the format version into an empty store and refusing another version.
    pub fn open(kv: K, path: &str) -> Result<KvStore<K>> {
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
                if found != STORE_FORMAT_VERSION {
                    return Err(StoreError::FormatVersion {
                        path: path.to_owned(),
                        found,
                        expected: STORE_FORMAT_VERSION,
                    });
                }
            }
        }
        Ok(KvStore { kv, keys: std::sync::Mutex::new(()) })
    }

    pub fn kv(&self) -> &K {
        &self.kv
    }

    fn scan_prefix(&self, tree: Tree, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.kv.scan(tree, prefix, prefix_end(prefix).as_deref(), limit)
    }
}

impl<K: Kv> Store for KvStore<K> {
    fn put_deployment(&self, deployment: &Deployment) -> Result<()> {
        self.kv.apply(vec![Write::Put(
            Tree::Deployments,
            keys::deployment(&deployment.process_id, deployment.version),
            encode(deployment)?,
        )])
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
        // Read-then-write under this store's key lock; the durable write happens before the key is used,
        // so neither a concurrent caller nor a crash ever reuses one.
        let _keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = match self.kv.get(Tree::Meta, keys::NEXT_INSTANCE)? {
            Some(bytes) => {
                keys::read_u64(&bytes, 0).ok_or_else(|| StoreError::Corrupt("instance counter".into()))?
            }
            None => 1,
        };
        self.kv.apply(vec![Write::Put(
            Tree::Meta,
            keys::NEXT_INSTANCE.to_vec(),
            (current + 1).to_be_bytes().to_vec(),
        )])?;
        Ok(InstanceKey(current))
    }

    fn commit(&self, batch: &Batch) -> Result<()> {
        let instance = batch.meta.key;
        let mut writes =
            Vec::with_capacity(batch.records.len() + batch.index_ops.len() + batch.outbox.len() + 1);
        for record in &batch.records {
            writes.push(Write::Put(Tree::Records, keys::record(instance, record.seq), encode(record)?));
        }
        let (last_seq, last_hash) = match batch.records.last() {
            Some(record) => (record.seq, record.hash),
            None => match self.instance(instance)? {
                Some(stored) => (stored.last_seq, stored.last_hash),
                None => (0, Digest256::GENESIS),
            },
        };
        let stored =
            StoredInstance { meta: batch.meta.clone(), state: batch.snapshot.clone(), last_seq, last_hash };
        writes.push(Write::Put(Tree::Instances, keys::instance(instance), encode(&stored)?));
        for op in &batch.index_ops {
            writes.push(match op {
                IndexOp::PutJob(e) => {
                    Write::Put(Tree::Jobs, keys::job(&e.job_type, e.instance, e.job), Vec::new())
                }
                IndexOp::DeleteJob(e) => Write::Delete(Tree::Jobs, keys::job(&e.job_type, e.instance, e.job)),
                IndexOp::PutTimer(e) => {
                    Write::Put(Tree::Timers, keys::timer(&e.due, e.instance, e.timer), encode(e)?)
                }
                IndexOp::DeleteTimer(e) => {
                    Write::Delete(Tree::Timers, keys::timer(&e.due, e.instance, e.timer))
                }
                IndexOp::PutSubscription(e) => Write::Put(
                    Tree::Subscriptions,
                    keys::subscription(&e.message_name, &e.correlation_key, e.instance, e.subscription),
                    Vec::new(),
                ),
                IndexOp::DeleteSubscription(e) => Write::Delete(
                    Tree::Subscriptions,
                    keys::subscription(&e.message_name, &e.correlation_key, e.instance, e.subscription),
                ),
            });
        }
        for entry in &batch.outbox {
            writes.push(Write::Put(Tree::Outbox, keys::outbox(entry.id), encode(entry)?));
        }
        self.kv.apply(writes)
    }

    fn records(&self, instance: InstanceKey, from: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let start = keys::record(instance, from);
        let end = keys::record(InstanceKey(instance.0.saturating_add(1)), 0);
        let end = (instance.0 < u64::MAX).then_some(end);
        self.kv
            .scan(Tree::Records, &start, end.as_deref(), limit)?
            .iter()
            .map(|(key, value)| {
                let seq = keys::read_u64(key, 8).unwrap_or(0);
                decode(&format!("record {seq} of instance {instance}"), value)
            })
            .collect()
    }

    fn instance(&self, instance: InstanceKey) -> Result<Option<StoredInstance>> {
        self.kv
            .get(Tree::Instances, &keys::instance(instance))?
            .map(|bytes| decode(&format!("instance {instance}"), &bytes))
            .transpose()
    }

    fn instances(
        &self,
        filter: &InstanceFilter,
        after: Option<InstanceKey>,
        limit: usize,
    ) -> Result<Vec<InstanceMeta>> {
        let start = after.map(|key| keys::instance(InstanceKey(key.0.saturating_add(1)))).unwrap_or_default();
        let mut out = Vec::new();
        // Filtering by scanning snapshots' metadata; secondary indexes come with the API issue.
        for (_, value) in self.kv.scan(Tree::Instances, &start, None, usize::MAX)? {
            let stored: StoredInstance = decode("instance", &value)?;
            if filter.matches(&stored.meta) {
                out.push(stored.meta);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
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

    fn jobs(&self, job_type: Option<&str>, limit: usize) -> Result<Vec<JobEntry>> {
        let prefix = job_type.map(keys::job_prefix).unwrap_or_default();
        let entries = self.scan_prefix(Tree::Jobs, &prefix, limit)?;
        let mut jobs = Vec::with_capacity(entries.len());
        for (key, _) in entries {
            let len =
                key.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0) as usize;
            let job_type = String::from_utf8_lossy(key.get(4..4 + len).unwrap_or_default()).into_owned();
            let instance =
                keys::read_u64(&key, 4 + len).ok_or_else(|| StoreError::Corrupt("job key".into()))?;
            let job = keys::read_u64(&key, 12 + len).ok_or_else(|| StoreError::Corrupt("job key".into()))?;
            jobs.push(JobEntry { job_type, instance: InstanceKey(instance), job: Key(job) });
        }
        Ok(jobs)
    }

    fn subscriptions(&self, message_name: &str, correlation_key: &str) -> Result<Vec<SubscriptionEntry>> {
        let prefix = keys::subscription_prefix(message_name, correlation_key);
        let entries = self.scan_prefix(Tree::Subscriptions, &prefix, usize::MAX)?;
        let mut subscriptions = Vec::with_capacity(entries.len());
        for (key, _) in entries {
            let instance = keys::read_u64(&key, prefix.len())
                .ok_or_else(|| StoreError::Corrupt("subscription key".into()))?;
            let subscription = keys::read_u64(&key, prefix.len() + 8)
                .ok_or_else(|| StoreError::Corrupt("subscription key".into()))?;
            subscriptions.push(SubscriptionEntry {
                message_name: message_name.to_owned(),
                correlation_key: correlation_key.to_owned(),
                instance: InstanceKey(instance),
                subscription: Key(subscription),
            });
        }
        Ok(subscriptions)
    }

    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.kv
            .scan(Tree::Outbox, &[], None, limit)?
            .iter()
            .map(|(_, value)| decode("outbox entry", value))
            .collect()
    }

    fn ack(&self, id: (InstanceKey, u64, u32)) -> Result<()> {
        self.kv.apply(vec![Write::Delete(Tree::Outbox, keys::outbox(id))])
    }
}
