//! The storage contract suite: every contract test runs against every backend (memory and sled), on
//! batches built by the real runtime (decide → seal → index changes → outbox); then sled alone is checked
//! for its on-disk promises — format version, random Kv operations with restarts against a `BTreeMap`
//! model, and batches that survive `kill -9` whole. It must never sleep or depend on test order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, FixedOffset};
use govflow_engine::audit::{self, Actor, Digest256, RecordedEvent};
use govflow_engine::runtime::{
    actions_of, decide, Action, Command, Instance, InstanceKey, InstanceStatus, Key, ProcessDefinition,
    VariableMap,
};
use govflow_engine::store::keys::{self, Tree};
use govflow_engine::store::kv::{Kv, KvStore, Write};
use govflow_engine::store::memory::{memory_store, MemoryKv};
use govflow_engine::store::sled::{open_sled, SledKv};
use govflow_engine::store::{
    index_changes, Batch, Deployment, IndexOp, InstanceMeta, JobEntry, Operation, OperationKind,
    OperationTarget, OutboxEntry, Store, StoreError, SubscriptionEntry, TimerEntry, STORE_FORMAT_VERSION,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------------
// Backends

/// A directory under the system temp dir, unique per process and per use, removed when dropped.
#[derive(Debug)]
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("govflow-store-contract-{}-{n}-{name}", std::process::id()));
        // A leftover of a killed run whose process id came round again.
        let _ = std::fs::remove_dir_all(&path);
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store under test. Fields drop in order: the sled store closes before its directory goes.
enum Backend {
    Memory(KvStore<MemoryKv>),
    Sled { store: Option<KvStore<SledKv>>, dir: TestDir },
}

impl Backend {
    fn memory() -> Backend {
        Backend::Memory(memory_store().unwrap())
    }

    fn sled(name: &str) -> Backend {
        let dir = TestDir::new(name);
        Backend::Sled { store: Some(open_sled(&dir.0).unwrap()), dir }
    }

    fn store(&self) -> &dyn Store {
        match self {
            Backend::Memory(store) => store,
            Backend::Sled { store, .. } => store.as_ref().expect("the sled store is open"),
        }
    }

    fn kv(&self) -> &dyn Kv {
        match self {
            Backend::Memory(store) => store.kv(),
            Backend::Sled { store, .. } => store.as_ref().expect("the sled store is open").kv(),
        }
    }

    /// Closes the store and opens it again from disk. The memory store lives as long as the process, so a
    /// restart keeps it as it is.
    fn restart(&mut self) {
        if let Backend::Sled { store, dir } = self {
            *store = None;
            *store = Some(open_sled(&dir.0).unwrap());
        }
    }
}

/// Runs each named contract test (a `fn(Backend)`) once per backend: `on_memory::NAME`, `on_sled::NAME`.
macro_rules! for_every_backend {
    ($($test:ident),* $(,)?) => {
        mod on_memory {
            $( #[test] fn $test() { super::$test(super::Backend::memory()); } )*
        }
        mod on_sled {
            $( #[test] fn $test() { super::$test(super::Backend::sled(stringify!($test))); } )*
        }
    };
}

for_every_backend!(
    deployments_are_listed_by_process_then_version,
    instance_keys_never_repeat_even_after_a_restart,
    a_commit_reads_back_as_records_in_order_and_the_snapshot,
    indexes_and_outbox_follow_the_journey,
    a_committed_batch_is_all_there_after_a_restart,
    readers_never_see_half_a_batch,
);

// ---------------------------------------------------------------------------------------------------
// Realistic batches: the runtime decides, the audit seals, `index_changes` and `actions_of` derive.

const PROCESS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="store-contract" targetNamespace="http://govflow.example/test">
  <bpmn:message id="msg-docs" name="document-uploaded">
    <bpmn:extensionElements><zeebe:subscription correlationKey="=applicationId" /></bpmn:extensionElements>
  </bpmn:message>
  <bpmn:process id="certificate" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="verify" />
    <bpmn:serviceTask id="verify"><bpmn:extensionElements><zeebe:taskDefinition type="verify-id" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:boundaryEvent id="verify-timeout" attachedToRef="verify">
      <bpmn:timerEventDefinition><bpmn:timeDuration>PT2H</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f2" sourceRef="verify" targetRef="wait-docs" />
    <bpmn:intermediateCatchEvent id="wait-docs"><bpmn:messageEventDefinition messageRef="msg-docs" /></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait-docs" targetRef="issue" />
    <bpmn:serviceTask id="issue"><bpmn:extensionElements><zeebe:taskDefinition type="issue-certificate" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f4" sourceRef="issue" targetRef="end" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f5" sourceRef="verify-timeout" targetRef="timed-out" />
    <bpmn:endEvent id="timed-out" />
  </bpmn:process>
</bpmn:definitions>
"#;

const MESSAGE: &str = "document-uploaded";

fn definition() -> ProcessDefinition {
    let parsed = govflow_engine::check(PROCESS.as_bytes());
    let definitions = parsed.definitions.unwrap_or_else(|| panic!("{:?}", parsed.diagnostics));
    ProcessDefinition::compile(&definitions, "certificate", 1).unwrap()
}

fn at(text: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(text).unwrap()
}

/// One instance driven through the runtime as the engine shell would, producing the batches to commit.
struct Journey {
    key: InstanceKey,
    state: Instance,
    meta: InstanceMeta,
    last: Option<(u64, Digest256)>,
    records: Vec<RecordedEvent>,
}

impl Journey {
    /// Starts an instance for application `application_id` at `now`.
    fn start(
        definition: &ProcessDefinition,
        key: InstanceKey,
        application_id: &str,
        now: DateTime<FixedOffset>,
    ) -> (Journey, Batch) {
        let meta = InstanceMeta {
            key,
            parent: None,
            process_id: "certificate".to_owned(),
            version: 1,
            business_key: Some(format!("BK-{application_id}")),
            status: InstanceStatus::NotStarted,
            started_at: now,
            updated_at: now,
        };
        let mut journey = Journey { key, state: Instance::new(key), meta, last: None, records: Vec::new() };
        let variables = VariableMap::from([("applicationId".to_owned(), serde_json::json!(application_id))]);
        let batch = journey.step(
            definition,
            &Command::Start {
                variables,
                business_key: Some(format!("BK-{application_id}")),
                start_event: None,
            },
            now,
        );
        (journey, batch)
    }

    fn step(
        &mut self,
        definition: &ProcessDefinition,
        command: &Command,
        now: DateTime<FixedOffset>,
    ) -> Batch {
        let events = decide(definition, &self.state, command, now).unwrap();
        let actor = Actor::user("registrar-1", Some("Civil Registry".to_owned()));
        let records = audit::seal_all(self.key, self.last, now, &actor, events);
        let index_ops = index_changes(self.key, &self.state, &records);
        let mut outbox = Vec::new();
        for record in &records {
            self.state.apply(&record.event);
            // Each action is keyed by the record that caused it and its place in the batch.
            for action in actions_of(std::slice::from_ref(&record.event)) {
                let index = u32::try_from(outbox.len()).unwrap();
                outbox.push(OutboxEntry { id: (self.key, record.seq, index), action });
            }
        }
        if let Some(last) = records.last() {
            self.last = Some((last.seq, last.hash));
        }
        self.records.extend(records.iter().cloned());
        let previous = (self.meta.status != InstanceStatus::NotStarted).then(|| self.meta.clone());
        self.meta.status = self.state.status;
        self.meta.updated_at = now;
        Batch {
            meta: self.meta.clone(),
            previous,
            records,
            snapshot: self.state.clone(),
            index_ops,
            outbox,
            acks: Vec::new(),
            operations: Vec::new(),
        }
    }

    fn job(&self, job_type: &str) -> Key {
        self.state.jobs.values().find(|job| job.job_type == job_type).map(|job| job.key).unwrap()
    }

    fn timer(&self) -> Key {
        *self.state.timers.keys().next().unwrap()
    }

    fn complete(
        &mut self,
        definition: &ProcessDefinition,
        job_type: &str,
        now: DateTime<FixedOffset>,
    ) -> Batch {
        let job = self.job(job_type);
        self.step(definition, &Command::CompleteJob { job, variables: VariableMap::new() }, now)
    }
}

// ---------------------------------------------------------------------------------------------------
// The contract, once per backend

fn deployment(process_id: &str, version: u32) -> Deployment {
    Deployment {
        process_id: process_id.to_owned(),
        version,
        content_hash: format!("{process_id}-{version}-hash"),
        resource_name: format!("{process_id}.bpmn"),
        xml: PROCESS.as_bytes().to_vec(),
        deployed_at: at("2027-01-04T09:00:00+03:00"),
        deployed_by: Actor::user("admin", None),
        enabled: version % 2 == 1,
    }
}

/// The operation-log entry of a deployment's creation.
fn creation(deployment: &Deployment) -> Operation {
    Operation {
        seq: 0,
        at: deployment.deployed_at,
        actor: deployment.deployed_by.clone(),
        kind: OperationKind::Create,
        target: OperationTarget::Definition {
            process_id: deployment.process_id.clone(),
            version: deployment.version,
        },
        detail: None,
    }
}

fn deployments_are_listed_by_process_then_version(mut backend: Backend) {
    // Written out of order; versions 2 and 10 catch a textual (not numeric) version order. The ids have
    // the same length: keys.rs length-prefixes strings, so ids of different lengths list shortest first.
    let written = [
        deployment("death-registration", 1),
        deployment("birth-registration", 10),
        deployment("birth-registration", 2),
        deployment("birth-registration", 1),
    ];
    for deployment in &written {
        backend.store().put_deployment(deployment, creation(deployment)).unwrap();
    }
    let expected = vec![written[3].clone(), written[2].clone(), written[1].clone(), written[0].clone()];
    assert_eq!(backend.store().deployments().unwrap(), expected);
    assert_eq!(backend.store().deployment("birth-registration", 2).unwrap(), Some(written[2].clone()));
    assert_eq!(backend.store().deployment("birth-registration", 3).unwrap(), None);
    assert_eq!(backend.store().deployment("birth", 1).unwrap(), None);
    backend.restart();
    assert_eq!(backend.store().deployments().unwrap(), expected);
}

fn instance_keys_never_repeat_even_after_a_restart(mut backend: Backend) {
    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.push(backend.store().next_instance_key().unwrap());
    }
    backend.restart();
    for _ in 0..5 {
        keys.push(backend.store().next_instance_key().unwrap());
    }
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "keys must increase: {keys:?}");
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), keys.len());
}

fn a_commit_reads_back_as_records_in_order_and_the_snapshot(mut backend: Backend) {
    let definition = definition();
    let store = backend.store();
    let (key, other_key) = (store.next_instance_key().unwrap(), store.next_instance_key().unwrap());
    let (mut journey, start) = Journey::start(&definition, key, "APP-1", at("2027-01-04T09:00:00+03:00"));
    let (mut other, other_start) =
        Journey::start(&definition, other_key, "APP-2", at("2027-01-04T09:01:00+03:00"));
    store.commit(&start).unwrap();
    store.commit(&other_start).unwrap();
    store.commit(&journey.complete(&definition, "verify-id", at("2027-01-04T09:30:00+03:00"))).unwrap();
    store.commit(&other.complete(&definition, "verify-id", at("2027-01-04T09:31:00+03:00"))).unwrap();
    assert!(journey.records.len() > 5, "a realistic history: {:?}", journey.records);

    for _ in 0..2 {
        let store = backend.store();
        for (journey, key) in [(&journey, key), (&other, other_key)] {
            let all = &journey.records;
            let n = all.len() as u64;
            for from in 0..=n + 1 {
                let skip = usize::try_from(from.saturating_sub(1)).unwrap().min(all.len());
                assert_eq!(store.records(key, from, usize::MAX).unwrap(), all[skip..], "from {from}");
            }
            assert_eq!(store.records(key, 2, 3).unwrap(), all[1..4]);
            assert_eq!(store.records(key, 1, 0).unwrap(), []);
            let read = store.records(key, 0, usize::MAX).unwrap();
            audit::verify_chain(key, &read).unwrap();
            assert_eq!(audit::replay(key, &read), journey.state);

            let stored = store.instance(key).unwrap().expect("the instance is stored");
            assert_eq!(stored.meta, journey.meta);
            assert_eq!(stored.state, journey.state);
            assert_eq!(stored.last_seq, n);
            assert_eq!(stored.last_hash, all.last().unwrap().hash);
        }
        assert_eq!(store.instance(InstanceKey(other_key.0 + 1)).unwrap(), None);
        assert_eq!(store.records(InstanceKey(other_key.0 + 1), 0, usize::MAX).unwrap(), []);
        backend.restart();
    }
}

/// What the outbox must hold: every committed entry not yet acknowledged, in id order.
#[derive(Default)]
struct OutboxModel(BTreeMap<(InstanceKey, u64, u32), OutboxEntry>);

impl OutboxModel {
    fn commit(&mut self, store: &dyn Store, batch: &Batch) {
        store.commit(batch).unwrap();
        self.0.extend(batch.outbox.iter().map(|entry| (entry.id, entry.clone())));
    }

    fn check(&self, store: &dyn Store) {
        let expected: Vec<OutboxEntry> = self.0.values().cloned().collect();
        assert_eq!(store.outbox(usize::MAX).unwrap(), expected);
        assert_eq!(store.outbox(2).unwrap(), expected[..expected.len().min(2)]);
    }

    fn ack(&mut self, store: &dyn Store, n: usize) {
        let ids: Vec<_> = self.0.keys().take(n).copied().collect();
        for id in ids {
            store.ack(&[id]).unwrap();
            self.0.remove(&id);
        }
    }
}

fn job(journey: &Journey, job_type: &str) -> JobEntry {
    JobEntry { job_type: job_type.to_owned(), instance: journey.key, job: journey.job(job_type) }
}

fn timer(journey: &Journey) -> TimerEntry {
    let timer = journey.timer();
    TimerEntry { due: journey.state.timers[&timer].due, instance: journey.key, timer }
}

fn subscription(journey: &Journey, correlation_key: &str) -> SubscriptionEntry {
    let (key, _) = journey.state.message_subscriptions.iter().next().unwrap();
    SubscriptionEntry {
        message_name: MESSAGE.to_owned(),
        correlation_key: correlation_key.to_owned(),
        instance: journey.key,
        subscription: *key,
    }
}

/// Timers as the scheduler sees them, with the offset each was scheduled in.
fn shown(timers: &[TimerEntry]) -> Vec<(InstanceKey, String)> {
    timers.iter().map(|timer| (timer.instance, timer.due.to_rfc3339())).collect()
}

fn sorted(mut jobs: Vec<JobEntry>) -> Vec<JobEntry> {
    jobs.sort_by_key(|job| (job.instance, job.job));
    jobs
}

fn indexes_and_outbox_follow_the_journey(mut backend: Backend) {
    let definition = definition();
    let mut outbox = OutboxModel::default();
    let far = at("2030-01-01T00:00:00Z");
    // Started in three offsets, so the order of local times (1 at 05:30, 3 at 07:00, 2 at 09:00) is not
    // the due order: instance 2 is due first (08:00Z), then 3 (09:00Z), then 1 (09:30Z).
    let (mut one, batch) =
        Journey::start(&definition, InstanceKey(1), "APP-1", at("2027-01-04T05:30:00-02:00"));
    outbox.commit(backend.store(), &batch);
    let (mut two, batch) =
        Journey::start(&definition, InstanceKey(2), "APP-2", at("2027-01-04T09:00:00+03:00"));
    outbox.commit(backend.store(), &batch);
    let (mut three, batch) =
        Journey::start(&definition, InstanceKey(3), "APP-2", at("2027-01-04T07:00:00+00:00"));
    outbox.commit(backend.store(), &batch);

    let store = backend.store();
    let verify = vec![job(&one, "verify-id"), job(&two, "verify-id"), job(&three, "verify-id")];
    assert_eq!(store.jobs(Some("verify-id"), usize::MAX).unwrap(), verify);
    assert_eq!(store.jobs(Some("verify-id"), 2).unwrap(), verify[..2]);
    assert_eq!(store.jobs(None, usize::MAX).unwrap(), verify);
    assert_eq!(store.jobs(Some("verify"), usize::MAX).unwrap(), []);
    assert_eq!(store.jobs(Some("issue-certificate"), usize::MAX).unwrap(), []);

    let timers = [timer(&two), timer(&three), timer(&one)];
    assert_eq!(
        shown(&store.due_timers(far, usize::MAX).unwrap()),
        [
            (InstanceKey(2), "2027-01-04T11:00:00+03:00".to_owned()),
            (InstanceKey(3), "2027-01-04T09:00:00+00:00".to_owned()),
            (InstanceKey(1), "2027-01-04T07:30:00-02:00".to_owned()),
        ]
    );
    assert_eq!(store.due_timers(far, usize::MAX).unwrap(), timers);
    // `until` in yet another offset; a timer due exactly then is due.
    assert_eq!(store.due_timers(at("2027-01-04T14:00:00+05:00"), usize::MAX).unwrap(), timers[..2]);
    assert_eq!(store.due_timers(at("2027-01-04T08:59:59.999Z"), usize::MAX).unwrap(), timers[..1]);
    assert_eq!(store.due_timers(at("2027-01-04T07:59:59.999Z"), usize::MAX).unwrap(), []);
    assert_eq!(store.due_timers(far, 1).unwrap(), timers[..1]);
    assert_eq!(store.subscriptions(MESSAGE, "APP-2").unwrap(), []);
    outbox.check(store);

    // Two applicants' identities verified: their jobs and timers go, they wait for documents.
    outbox.commit(store, &two.complete(&definition, "verify-id", at("2027-01-04T07:45:00Z")));
    outbox.commit(store, &three.complete(&definition, "verify-id", at("2027-01-04T07:46:00Z")));
    assert_eq!(store.jobs(Some("verify-id"), usize::MAX).unwrap(), verify[..1]);
    assert_eq!(store.due_timers(far, usize::MAX).unwrap(), timers[2..]);
    let waiting = vec![subscription(&two, "APP-2"), subscription(&three, "APP-2")];
    assert_eq!(store.subscriptions(MESSAGE, "APP-2").unwrap(), waiting);
    assert_eq!(store.subscriptions(MESSAGE, "APP-1").unwrap(), []);
    assert_eq!(store.subscriptions(MESSAGE, "APP-").unwrap(), []);
    assert_eq!(store.subscriptions("document", "APP-2").unwrap(), []);
    assert_eq!(store.subscriptions("other-message", "APP-2").unwrap(), []);
    outbox.check(store);
    outbox.ack(store, 3);
    outbox.check(store);

    backend.restart();
    let store = backend.store();
    outbox.check(store);
    assert_eq!(store.subscriptions(MESSAGE, "APP-2").unwrap(), waiting);

    // Instance 2's documents arrive: its subscription closes and the certificate job is created.
    let correlate = Command::CorrelateMessage {
        name: MESSAGE.to_owned(),
        correlation_key: "APP-2".to_owned(),
        variables: VariableMap::new(),
        message_id: None,
    };
    outbox.commit(store, &two.step(&definition, &correlate, at("2027-01-04T08:10:00Z")));
    assert_eq!(store.subscriptions(MESSAGE, "APP-2").unwrap(), waiting[1..]);
    let issue = job(&two, "issue-certificate");
    assert_eq!(store.jobs(Some("issue-certificate"), usize::MAX).unwrap(), std::slice::from_ref(&issue));
    assert_eq!(store.jobs(Some("verify-id"), usize::MAX).unwrap(), verify[..1]);
    // Across types the order is not by age (see the report on keys.rs); only the set is the contract here.
    assert_eq!(sorted(store.jobs(None, usize::MAX).unwrap()), [verify[0].clone(), issue.clone()]);

    // Instance 1 times out: the timer fires, the boundary event cancels its job.
    let fire = Command::FireTimer { timer: one.timer() };
    outbox.commit(store, &one.step(&definition, &fire, at("2027-01-04T09:30:00Z")));
    assert_eq!(one.state.status, InstanceStatus::Completed);
    assert_eq!(store.due_timers(far, usize::MAX).unwrap(), []);
    assert_eq!(store.jobs(Some("verify-id"), usize::MAX).unwrap(), []);

    outbox.commit(store, &two.complete(&definition, "issue-certificate", at("2027-01-04T10:00:00Z")));
    assert_eq!(two.state.status, InstanceStatus::Completed);
    assert_eq!(store.jobs(None, usize::MAX).unwrap(), []);
    outbox.check(store);
    assert!(outbox.0.values().any(|entry| entry.action == Action::InstanceEnded { completed: true }));

    outbox.ack(store, usize::MAX);
    outbox.check(store);
    assert_eq!(store.outbox(usize::MAX).unwrap(), []);
    backend.restart();
    assert_eq!(backend.store().outbox(usize::MAX).unwrap(), []);
}

fn a_committed_batch_is_all_there_after_a_restart(mut backend: Backend) {
    let definition = definition();
    let key = backend.store().next_instance_key().unwrap();
    let (journey, batch) = Journey::start(&definition, key, "APP-7", at("2027-01-04T09:00:00+03:00"));
    // The batch touches every kind of write: records, snapshot, job and timer indexes, outbox.
    assert!(batch.index_ops.iter().any(|op| matches!(op, IndexOp::PutJob(_))));
    assert!(batch.index_ops.iter().any(|op| matches!(op, IndexOp::PutTimer(_))));
    assert!(!batch.outbox.is_empty());
    backend.store().commit(&batch).unwrap();
    backend.restart();
    let store = backend.store();
    assert_eq!(store.records(key, 0, usize::MAX).unwrap(), batch.records);
    assert_eq!(store.instance(key).unwrap().map(|stored| stored.state), Some(journey.state.clone()));
    assert_eq!(store.jobs(Some("verify-id"), usize::MAX).unwrap(), [job(&journey, "verify-id")]);
    assert_eq!(store.due_timers(at("2030-01-01T00:00:00Z"), usize::MAX).unwrap(), [timer(&journey)]);
    assert_eq!(store.outbox(usize::MAX).unwrap(), batch.outbox);
}

/// Keys in generation `generation`: (generation, j) for j below `GENERATION_SIZE`, big-endian.
fn generation_keys(generation: u64) -> impl Iterator<Item = Vec<u8>> {
    (0..GENERATION_SIZE).map(move |j| [generation.to_be_bytes(), j.to_be_bytes()].concat())
}

const GENERATION_SIZE: u64 = 32;

/// A writer replaces a whole generation of keys in two trees with the next one, one batch per
/// generation; a reader scanning either tree meanwhile must always find exactly one whole generation
/// (half a batch shows two generations, or too few keys). Each scan spans many keys so that a commit
/// landing in the middle of one is likely, and the writer keeps going until the reader has scanned a lot.
fn readers_never_see_half_a_batch(backend: Backend) {
    let kv = backend.kv();
    let first = generation_keys(0).flat_map(|key| {
        [Write::Put(Tree::Jobs, key.clone(), b"0".to_vec()), Write::Put(Tree::Outbox, key, b"0".to_vec())]
    });
    kv.apply(first.collect()).unwrap();
    let done = AtomicBool::new(false);
    let n_scans = AtomicUsize::new(0);
    let n_generations = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                for tree in [Tree::Jobs, Tree::Outbox] {
                    let entries = kv.scan(tree, &[], None, usize::MAX).unwrap();
                    let generations: BTreeSet<String> = entries
                        .iter()
                        .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
                        .collect();
                    assert!(
                        generations.len() == 1 && entries.len() == GENERATION_SIZE as usize,
                        "{} holds {} keys of generations {generations:?}",
                        tree.name(),
                        entries.len()
                    );
                }
                n_scans.fetch_add(1, Ordering::Release);
            }
        });
        let mut generation = 0;
        while (generation < 100 || n_scans.load(Ordering::Acquire) < 300)
            && generation < 100_000
            && !reader.is_finished()
        {
            generation += 1;
            let value = generation.to_string().into_bytes();
            let mut writes = Vec::new();
            for tree in [Tree::Jobs, Tree::Outbox] {
                writes.extend(generation_keys(generation - 1).map(|key| Write::Delete(tree, key)));
                writes.extend(generation_keys(generation).map(|key| Write::Put(tree, key, value.clone())));
            }
            kv.apply(writes).unwrap();
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap();
        generation
    });
    assert!(n_scans.load(Ordering::Acquire) >= 300, "the reader stopped early");
    let last: Vec<_> =
        generation_keys(n_generations).map(|key| (key, n_generations.to_string().into_bytes())).collect();
    assert_eq!(kv.scan(Tree::Jobs, &[], None, usize::MAX).unwrap(), last);
}

// ---------------------------------------------------------------------------------------------------
// sled on disk

#[test]
fn sled_refuses_a_store_of_another_format_version_naming_path_and_versions() {
    let dir = TestDir::new("format");
    drop(open_sled(&dir.0).unwrap());
    {
        // Pins the on-disk layout too: sled's default tree, the `meta` prefix byte, key `format_version`,
        // a big-endian u32.
        let db = sled::open(&dir.0).unwrap();
        let key = [&[Tree::Meta.prefix()][..], keys::FORMAT_VERSION].concat();
        assert_eq!(db.get(&key).unwrap().unwrap(), STORE_FORMAT_VERSION.to_be_bytes());
        db.insert(key, &99_u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let error = open_sled(&dir.0).unwrap_err();
    let path = dir.0.display().to_string();
    match &error {
        StoreError::FormatVersion { path: found_path, found: 99, expected } => {
            assert_eq!(found_path, &path);
            assert_eq!(*expected, STORE_FORMAT_VERSION);
        }
        other => panic!("expected a format version error, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&path), "{message}");
    assert!(message.contains("99") && message.contains(&STORE_FORMAT_VERSION.to_string()), "{message}");
}

#[test]
fn sled_reports_a_malformed_format_version_as_corrupt() {
    let dir = TestDir::new("malformed");
    drop(open_sled(&dir.0).unwrap());
    let kv = SledKv::open(&dir.0).unwrap();
    kv.apply(vec![Write::Put(Tree::Meta, keys::FORMAT_VERSION.to_vec(), b"v1".to_vec())]).unwrap();
    drop(kv);
    assert!(matches!(open_sled(&dir.0), Err(StoreError::Corrupt(_))));
}

#[test]
fn sled_fails_with_a_backend_error_naming_the_path_when_a_file_is_in_the_way() {
    let dir = TestDir::new("file");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    match open_sled(&file) {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains(&file.display().to_string()), "{message}")
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[test]
fn sled_refuses_a_store_that_is_already_open_after_a_bounded_wait() {
    let dir = TestDir::new("open-twice");
    let store = open_sled(&dir.0).unwrap();
    let started = std::time::Instant::now();
    match open_sled(&dir.0) {
        Err(StoreError::Backend(message)) => {
            assert!(message.contains("could not acquire lock"), "{message}");
            assert!(message.contains(&dir.0.display().to_string()), "{message}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the wait for the lock is bounded");
    assert!(store.next_instance_key().is_ok(), "the open store still works");
}

// ---------------------------------------------------------------------------------------------------
// Random Kv operations with restarts, compared with a BTreeMap (sled's `prop_tree_matches_btreemap`)

#[derive(Debug, Clone)]
enum Op {
    Apply(Vec<Write>),
    Get(Tree, Vec<u8>),
    Scan {
        tree: Tree,
        from: Vec<u8>,
        to: Option<Vec<u8>>,
        limit: usize,
    },
    /// Drop the sled database and open it again from its directory.
    Restart,
}

type Model = BTreeMap<Tree, BTreeMap<Vec<u8>, Vec<u8>>>;

fn model_scan(
    model: &Model,
    tree: Tree,
    from: &[u8],
    to: Option<&[u8]>,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    model
        .get(&tree)
        .into_iter()
        .flat_map(|map| map.range(from.to_vec()..))
        .take_while(|(key, _)| to.is_none_or(|to| key.as_slice() < to))
        .take(limit)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Runs `ops` on a fresh sled directory and on the model; after every step every tree must match.
fn sled_matches_model(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = TestDir::new("prop");
    let mut kv = Some(SledKv::open(&dir.0).unwrap());
    let mut model = Model::new();
    for (step, op) in ops.iter().enumerate() {
        let sled = kv.as_ref().unwrap();
        match op {
            Op::Apply(writes) => {
                sled.apply(writes.clone()).unwrap();
                for write in writes {
                    match write {
                        Write::Put(tree, key, value) => {
                            model.entry(*tree).or_default().insert(key.clone(), value.clone());
                        }
                        Write::Delete(tree, key) => {
                            model.entry(*tree).or_default().remove(key);
                        }
                    }
                }
            }
            Op::Get(tree, key) => {
                let expected = model.get(tree).and_then(|map| map.get(key)).cloned();
                prop_assert_eq!(sled.get(*tree, key).unwrap(), expected, "step {}: {:?}", step, op);
            }
            Op::Scan { tree, from, to, limit } => {
                let expected = model_scan(&model, *tree, from, to.as_deref(), *limit);
                let found = sled.scan(*tree, from, to.as_deref(), *limit).unwrap();
                prop_assert_eq!(found, expected, "step {}: {:?}", step, op);
            }
            Op::Restart => {
                // Close before opening again: sled locks its directory.
                drop(kv.take());
                kv = Some(SledKv::open(&dir.0).unwrap());
            }
        }
        let sled = kv.as_ref().unwrap();
        for tree in Tree::ALL {
            let expected = model_scan(&model, tree, &[], None, usize::MAX);
            prop_assert_eq!(
                sled.scan(tree, &[], None, usize::MAX).unwrap(),
                expected,
                "step {}: {:?}",
                step,
                op
            );
        }
    }
    Ok(())
}

fn small_key() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct, short keys, with 0x00 and 0xff, so puts, deletes and bounds collide often.
    prop::collection::vec(prop::sample::select(vec![0_u8, 1, 2, 0xff]), 0..3)
}

fn some_tree() -> impl Strategy<Value = Tree> {
    prop::sample::select(vec![Tree::Meta, Tree::Jobs, Tree::Outbox])
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => (some_tree(), small_key(), prop::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(tree, key, value)| Write::Put(tree, key, value)),
        2 => (some_tree(), small_key()).prop_map(|(tree, key)| Write::Delete(tree, key)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(write(), 0..6).prop_map(Op::Apply),
        1 => (some_tree(), small_key()).prop_map(|(tree, key)| Op::Get(tree, key)),
        2 => (some_tree(), small_key(), prop::option::of(small_key()), prop_oneof![0_usize..4, Just(usize::MAX)])
            .prop_map(|(tree, from, to, limit)| Op::Scan { tree, from, to, limit }),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn sled_kv_matches_a_btreemap_across_restarts(ops in prop::collection::vec(op(), 1..32)) {
        sled_matches_model(&ops)?;
    }
}

/// Shrunk from `sled_kv_matches_a_btreemap_across_restarts`: reopening a store right after closing it
/// failed with "could not acquire lock", sled's IO threads still holding the directory after the last
/// handle dropped (sled#1234). A race, so the case runs many times.
#[test]
fn regression_reopening_right_after_writing_and_closing() {
    let ops = [
        Op::Apply(vec![
            Write::Put(Tree::Jobs, vec![2, 1], vec![201, 196]),
            Write::Put(Tree::Jobs, vec![], vec![189]),
            Write::Put(Tree::Jobs, vec![255], vec![5, 101, 180]),
        ]),
        Op::Scan { tree: Tree::Meta, from: vec![], to: None, limit: usize::MAX },
        Op::Restart,
    ];
    for _ in 0..60 {
        sled_matches_model(&ops).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------------
// kill -9

const CRASH_CHILD_DIR: &str = "GOVFLOW_STORE_CONTRACT_CRASH_CHILD_DIR";
const CRASH_TEST: &str = "sled_batches_survive_kill_9_whole";
const N_ACKNOWLEDGED: u64 = 40;

/// The child: applies numbered batches to every tree, reporting each once `apply` has returned.
fn crash_child(dir: &Path) {
    let kv = SledKv::open(dir).unwrap();
    let mut stdout = std::io::stdout();
    for i in 1..=10_000_u64 {
        let key = i.to_be_bytes().to_vec();
        let mut writes: Vec<Write> = Tree::ALL
            .iter()
            .map(|tree| Write::Put(*tree, key.clone(), format!("batch {i}").into_bytes()))
            .collect();
        writes.push(Write::Delete(Tree::Jobs, (i - 1).to_be_bytes().to_vec()));
        kv.apply(writes).unwrap();
        // The parent went away: stop.
        if writeln!(stdout, "applied {i}").and_then(|()| stdout.flush()).is_err() {
            return;
        }
    }
}

/// A real process applies batches and is killed with SIGKILL at an arbitrary point: every batch it was
/// told is applied must be there (durable on return, not 500 ms later), and no batch may be there in part.
#[test]
fn sled_batches_survive_kill_9_whole() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_DIR) {
        crash_child(Path::new(&dir));
        return;
    }
    let dir = TestDir::new("crash");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CRASH_TEST, "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_DIR, &dir.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acknowledged = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        if let Some(n) = line.unwrap().strip_prefix("applied ") {
            acknowledged = n.parse().unwrap();
            if acknowledged >= N_ACKNOWLEDGED {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    assert_eq!(acknowledged, N_ACKNOWLEDGED, "the child stopped before it was killed");

    let kv = SledKv::open(&dir.0).unwrap();
    let records = kv.scan(Tree::Records, &[], None, usize::MAX).unwrap();
    let last = records.len() as u64;
    assert!(last >= acknowledged, "batches {} to {acknowledged} were acknowledged but are lost", last + 1);
    for tree in Tree::ALL {
        let found = kv.scan(tree, &[], None, usize::MAX).unwrap();
        let batches = if tree == Tree::Jobs { last..=last } else { 1..=last };
        let expected: Vec<(Vec<u8>, Vec<u8>)> =
            batches.map(|i| (i.to_be_bytes().to_vec(), format!("batch {i}").into_bytes())).collect();
        assert_eq!(found, expected, "tree {} after batch {last}", tree.name());
    }
}
