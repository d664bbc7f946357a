//! The storage contract suite: every contract test runs against every backend (memory and sled), on
//! batches built by the real runtime (decide → seal → index changes → outbox) — records and snapshots,
//! job / timer / subscription / user-task / incident / signal / child indexes, instance listings by every
//! secondary index with cursor paging, buffered messages, the operation log, group commit under concurrent
//! writers and instance keys reserved in blocks; then sled alone is checked for its on-disk promises —
//! format version, random Kv operations with restarts against a `BTreeMap` model, and batches that survive
//! `kill -9` whole. It must never sleep or depend on test order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDir;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, FixedOffset};
use govflow_engine::audit::{self, Actor, Digest256, RecordedEvent};
use govflow_engine::runtime::{
    actions_of, decide, Action, Command, IncidentKind, Instance, InstanceKey, InstanceStatus, Key,
    ProcessDefinition, VariableMap,
};
use govflow_engine::store::keys::{self, Tree};
use govflow_engine::store::kv::{CommitConfig, CommitStats, Kv, KvStore, Write};
use govflow_engine::store::memory::{memory_store, MemoryKv};
use govflow_engine::store::sled::{open_sled, open_sled_with, OverlayLimits, SledKv, APPLIED_KEY};
use govflow_engine::store::{
    index_changes, Batch, BufferedMessage, Deployment, IncidentEntry, IndexOp, InstanceFilter, InstanceMeta,
    JobEntry, Operation, OperationFilter, OperationKind, OperationTarget, OutboxEntry, SignalEntry, Store,
    StoreError, StoredInstance, SubscriptionEntry, TimerEntry, UserTaskEntry, STORE_FORMAT_VERSION,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------------
// Backends

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
        let dir = TestDir::new("store-contract", name);
        Backend::Sled { store: Some(open_sled(&dir.0).unwrap()), dir }
    }

    fn store(&self) -> &dyn Store {
        match self {
            Backend::Memory(store) => store,
            Backend::Sled { store, .. } => store.as_ref().expect("the sled store is open"),
        }
    }

    fn commit_stats(&self) -> CommitStats {
        match self {
            Backend::Memory(store) => store.commit_stats(),
            Backend::Sled { store, .. } => store.as_ref().expect("the sled store is open").commit_stats(),
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
    an_instance_reads_whole_when_its_snapshot_lags,
    a_new_instance_without_a_snapshot_is_listed_and_reads_whole,
    timers_between_reads_a_slice_of_the_due_index,
    readers_never_see_half_a_batch,
    instances_are_listed_through_every_secondary_index_with_cursor_paging,
    listings_larger_than_an_index_page_keep_instance_order_across_versions,
    an_instance_moves_from_the_active_listing_to_the_completed_one,
    user_tasks_and_incidents_are_listed_while_open,
    signal_subscriptions_and_children_are_listed,
    buffered_messages_have_increasing_keys_unique_ids_and_expire_in_time,
    operations_are_sequenced_from_one_across_restarts_and_filtered,
    a_flush_with_more_operations_than_one_entry_holds_reads_back_whole_and_in_order,
    concurrent_commits_share_flushes_and_lose_nothing,
    instance_keys_are_reserved_in_blocks_and_a_restart_skips_ahead,
    regression_a_version_alone_filters_the_instance_listing,
    regression_started_before_lists_instances_earlier_in_its_millisecond,
    regression_expiry_keeps_messages_expiring_later_in_the_same_millisecond,
    regression_updating_an_expired_message_does_not_bring_it_back,
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
        let variables = VariableMap::from([("applicationId".to_owned(), serde_json::json!(application_id))]);
        let business_key = format!("BK-{application_id}");
        Journey::begin(definition, key, Some(&business_key), None, variables, now)
    }

    /// Starts an instance of `definition` (its process id and version go into the metadata), as the child
    /// of call activity `parent` when given.
    fn begin(
        definition: &ProcessDefinition,
        key: InstanceKey,
        business_key: Option<&str>,
        parent: Option<(InstanceKey, Key)>,
        variables: VariableMap,
        now: DateTime<FixedOffset>,
    ) -> (Journey, Batch) {
        let meta = InstanceMeta {
            key,
            parent,
            process_id: definition.process_id.0.clone(),
            version: definition.version,
            business_key: business_key.map(str::to_owned),
            status: InstanceStatus::NotStarted,
            started_at: now,
            updated_at: now,
        };
        let mut journey = Journey { key, state: Instance::new(key), meta, last: None, records: Vec::new() };
        let business_key = business_key.map(str::to_owned);
        let batch =
            journey.step(definition, &Command::Start { variables, business_key, start_event: None }, now);
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
            write_snapshot: true,
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

    // Deleting the highest version keeps its number taken, across a restart; two deletions and a save of
    // two processes are one write each.
    assert_eq!(backend.store().last_version("birth-registration").unwrap(), 10);
    let gone = [("birth-registration".to_owned(), 10), ("birth-registration".to_owned(), 2)];
    let operations = vec![creation(&written[1]), creation(&written[2])];
    backend.store().delete_deployments(&gone, operations).unwrap();
    backend.restart();
    assert_eq!(backend.store().deployments().unwrap(), [written[3].clone(), written[0].clone()]);
    assert_eq!(backend.store().last_version("birth-registration").unwrap(), 10);
    assert_eq!(backend.store().last_version("death-registration").unwrap(), 1);
    assert_eq!(backend.store().last_version("marriage-registration").unwrap(), 0);
    let both = [deployment("marriage-registration", 1), deployment("death-registration", 2)];
    let operations = both.iter().map(creation).collect();
    backend.store().put_deployments(&both, operations).unwrap();
    assert_eq!(backend.store().last_version("death-registration").unwrap(), 2);
    assert_eq!(backend.store().deployments().unwrap().len(), 4);
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

/// The shell reads the timer index in slices: after one instant (exclusive) up to another (inclusive),
/// exact to the nanosecond although keys keep milliseconds.
fn timers_between_reads_a_slice_of_the_due_index(backend: Backend) {
    let definition = definition();
    let store = backend.store();
    let mut timers = Vec::new();
    for (i, start) in ["2027-01-04T09:00:00.000100Z", "2027-01-04T09:00:00.000900Z", "2027-01-04T09:30:00Z"]
        .into_iter()
        .enumerate()
    {
        let key = store.next_instance_key().unwrap();
        let (journey, batch) = Journey::start(&definition, key, &format!("APP-{i}"), at(start));
        store.commit(&batch).unwrap();
        timers.push(timer(&journey));
    }
    let due = |i: usize| timers[i].due;
    let end = at("2030-01-01T00:00:00Z");
    assert_eq!(store.timers_between(None, end, usize::MAX).unwrap(), timers);
    assert_eq!(store.timers_between(Some(due(0)), end, usize::MAX).unwrap(), timers[1..]);
    assert_eq!(store.timers_between(Some(due(0)), due(1), usize::MAX).unwrap(), timers[1..2]);
    assert_eq!(store.timers_between(None, due(1), 1).unwrap(), timers[..1]);
    assert_eq!(store.timers_between(Some(due(2)), end, usize::MAX).unwrap(), []);
}

/// The engine stores a snapshot only now and then; between snapshots `instance` folds the records after the
/// stored one, so a reader always gets the state after every committed record, with the chain head.
fn an_instance_reads_whole_when_its_snapshot_lags(mut backend: Backend) {
    let definition = definition();
    let key = backend.store().next_instance_key().unwrap();
    let (mut journey, batch) = Journey::start(&definition, key, "APP-8", at("2027-01-04T09:00:00Z"));
    backend.store().commit(&batch).unwrap();
    let snapshot_seq = batch.records.last().unwrap().seq;
    let mut lagging = journey.complete(&definition, "verify-id", at("2027-01-04T09:10:00Z"));
    lagging.write_snapshot = false;
    backend.store().commit(&lagging).unwrap();
    for _ in 0..2 {
        let store = backend.store();
        let stored = store.instance(key).unwrap().unwrap();
        assert_eq!(stored.state, journey.state, "the records after the snapshot are folded in");
        assert_eq!(stored.last_seq, lagging.records.last().unwrap().seq);
        assert!(stored.last_seq > snapshot_seq);
        assert_eq!(stored.last_hash, lagging.records.last().unwrap().hash);
        assert_eq!(stored.meta.updated_at, at("2027-01-04T09:10:00Z"));
        backend.restart();
    }
    // The next batch chains on the folded head, as the engine would.
    let next = journey.step(
        &definition,
        &Command::SetVariables { scope: None, variables: VariableMap::new(), local: false },
        at("2027-01-04T09:20:00Z"),
    );
    backend.store().commit(&next).unwrap();
    assert_eq!(backend.store().instance(key).unwrap().unwrap().state, journey.state);
    let records = backend.store().records(key, 1, usize::MAX).unwrap();
    audit::verify_chain(key, &records).unwrap();
    assert_eq!(audit::replay(key, &records), journey.state);
}

/// The engine stores no snapshot for a new instance that is still running after its first command: the
/// store keeps its metadata (so listings find it) and the empty state, and readers fold all its records.
fn a_new_instance_without_a_snapshot_is_listed_and_reads_whole(mut backend: Backend) {
    let definition = definition();
    let key = backend.store().next_instance_key().unwrap();
    let (mut journey, mut first) = Journey::start(&definition, key, "APP-9", at("2027-01-05T09:00:00Z"));
    first.write_snapshot = false;
    backend.store().commit(&first).unwrap();
    let metadata_only = decode_stored(backend.kv(), key);
    assert_eq!(
        (metadata_only.last_seq, metadata_only.state),
        (0, Instance::new(key)),
        "no snapshot was stored"
    );
    for _ in 0..2 {
        let store = backend.store();
        let stored = store.instance(key).unwrap().unwrap();
        assert_eq!(stored.state, journey.state, "the first records are folded onto the empty state");
        assert_eq!(stored.last_seq, first.records.last().unwrap().seq);
        assert_eq!(stored.last_hash, first.records.last().unwrap().hash);
        assert_eq!(store.instance_meta(key).unwrap().unwrap().status, InstanceStatus::Active);
        let listed = store.instances(&by_process(&definition.process_id.0, None), None, 10).unwrap();
        assert_eq!(keys_of(&listed), vec![key.0]);
        backend.restart();
    }
    // Its next batch chains on the folded head and, storing a snapshot, replaces the metadata-only entry.
    let next = journey.complete(&definition, "verify-id", at("2027-01-05T09:10:00Z"));
    backend.store().commit(&next).unwrap();
    assert_eq!(decode_stored(backend.kv(), key).last_seq, next.records.last().unwrap().seq);
    let records = backend.store().records(key, 1, usize::MAX).unwrap();
    audit::verify_chain(key, &records).unwrap();
    assert_eq!(audit::replay(key, &records), journey.state);
    assert_eq!(backend.store().instance(key).unwrap().unwrap().state, journey.state);
}

/// The instance entry exactly as stored, without folding the records after it.
fn decode_stored(kv: &dyn Kv, key: InstanceKey) -> StoredInstance {
    let bytes = kv.get(Tree::Instances, &keys::instance(key)).unwrap().expect("an instance entry");
    rmp_serde::from_slice(&bytes).unwrap()
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
// Secondary indexes, user tasks, incidents, signals, children: built by the runtime like the journey

/// Processes with the other things the store indexes: a user task, a job that can fail into an incident,
/// a signal catch, and a call activity.
const MORE_PROCESSES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="store-contract-more" targetNamespace="http://govflow.example/test">
  <bpmn:signal id="sig-open" name="registry-open" />
  <bpmn:process id="review" isExecutable="true">
    <bpmn:startEvent id="r-start" />
    <bpmn:sequenceFlow id="r1" sourceRef="r-start" targetRef="review-task" />
    <bpmn:userTask id="review-task" name="Review the application">
      <bpmn:extensionElements><zeebe:assignmentDefinition assignee="clerk-1" candidateGroups="registrars" /></bpmn:extensionElements>
    </bpmn:userTask>
    <bpmn:sequenceFlow id="r2" sourceRef="review-task" targetRef="r-end" />
    <bpmn:endEvent id="r-end" />
  </bpmn:process>
  <bpmn:process id="notify" isExecutable="true">
    <bpmn:startEvent id="n-start" />
    <bpmn:sequenceFlow id="n1" sourceRef="n-start" targetRef="send" />
    <bpmn:serviceTask id="send"><bpmn:extensionElements><zeebe:taskDefinition type="notify.send" retries="1" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="n2" sourceRef="send" targetRef="n-end" />
    <bpmn:endEvent id="n-end" />
  </bpmn:process>
  <bpmn:process id="wait-signal" isExecutable="true">
    <bpmn:startEvent id="w-start" />
    <bpmn:sequenceFlow id="w1" sourceRef="w-start" targetRef="w-wait" />
    <bpmn:intermediateCatchEvent id="w-wait"><bpmn:signalEventDefinition signalRef="sig-open" /></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="w2" sourceRef="w-wait" targetRef="w-end" />
    <bpmn:endEvent id="w-end" />
  </bpmn:process>
  <bpmn:process id="caller" isExecutable="true">
    <bpmn:startEvent id="c-start" />
    <bpmn:sequenceFlow id="c1" sourceRef="c-start" targetRef="call-review" />
    <bpmn:callActivity id="call-review"><bpmn:extensionElements><zeebe:calledElement processId="review" /></bpmn:extensionElements></bpmn:callActivity>
    <bpmn:sequenceFlow id="c2" sourceRef="call-review" targetRef="c-end" />
    <bpmn:endEvent id="c-end" />
  </bpmn:process>
</bpmn:definitions>
"#;

/// `process_id` at `version`, from `PROCESS` (certificate) or `MORE_PROCESSES` (the rest).
fn definition_of(process_id: &str, version: u32) -> ProcessDefinition {
    let xml = if process_id == "certificate" { PROCESS } else { MORE_PROCESSES };
    let parsed = govflow_engine::check(xml.as_bytes());
    let definitions = parsed.definitions.unwrap_or_else(|| panic!("{:?}", parsed.diagnostics));
    ProcessDefinition::compile(&definitions, process_id, version).unwrap()
}

/// Starts `definition` as instance `key` with `business_key` at `started`, committing the start batch.
fn begin(
    store: &dyn Store,
    definition: &ProcessDefinition,
    key: u64,
    business_key: Option<&str>,
    started: &str,
) -> Journey {
    let (journey, batch) =
        Journey::begin(definition, InstanceKey(key), business_key, None, VariableMap::new(), at(started));
    store.commit(&batch).unwrap();
    journey
}

/// Every instance matching `filter`, read page by page with the `after` cursor.
fn every_page(store: &dyn Store, filter: &InstanceFilter, page: usize) -> Vec<InstanceMeta> {
    let mut out: Vec<InstanceMeta> = Vec::new();
    let mut after = None;
    loop {
        let found = store.instances(filter, after, page).unwrap();
        assert!(found.len() <= page, "a page of {page} held {}: {filter:?}", found.len());
        let Some(last) = found.last() else { return out };
        assert!(after.is_none_or(|after| last.key > after), "the cursor went back: {filter:?}");
        after = Some(last.key);
        out.extend(found);
    }
}

fn keys_of(metas: &[InstanceMeta]) -> Vec<u64> {
    metas.iter().map(|meta| meta.key.0).collect()
}

/// Checks the listing of `filter` against the expected keys, and against the metadata of `population`
/// that the filter matches, read whole and in pages of several sizes.
fn check_listing(store: &dyn Store, population: &[InstanceMeta], filter: &InstanceFilter, expected: &[u64]) {
    let mut model: Vec<InstanceMeta> =
        population.iter().filter(|meta| filter.matches(meta)).cloned().collect();
    model.sort_by_key(|meta| meta.key);
    assert_eq!(keys_of(&model), expected, "the model disagrees with the expected keys: {filter:?}");
    assert_eq!(store.instances(filter, None, usize::MAX).unwrap(), model, "{filter:?}");
    for page in [1, 2, 3] {
        assert_eq!(every_page(store, filter, page), model, "pages of {page}: {filter:?}");
    }
    // A cursor that is not itself a match resumes after it.
    if let Some(middle) = model.get(model.len() / 2) {
        let after = InstanceKey(middle.key.0 - 1);
        let rest: Vec<InstanceMeta> = model.iter().filter(|meta| meta.key > after).cloned().collect();
        assert_eq!(
            store.instances(filter, Some(after), usize::MAX).unwrap(),
            rest,
            "after {after}: {filter:?}"
        );
    }
    if let Some(last) = model.last() {
        assert_eq!(store.instances(filter, Some(last.key), usize::MAX).unwrap(), [], "{filter:?}");
    }
}

fn by_business_key(business_key: &str) -> InstanceFilter {
    InstanceFilter { business_key: Some(business_key.to_owned()), ..InstanceFilter::default() }
}

fn by_process(process_id: &str, version: Option<u32>) -> InstanceFilter {
    InstanceFilter { process_id: Some(process_id.to_owned()), version, ..InstanceFilter::default() }
}

fn by_status(status: InstanceStatus) -> InstanceFilter {
    InstanceFilter { status: Some(status), ..InstanceFilter::default() }
}

fn started(after: Option<&str>, before: Option<&str>) -> InstanceFilter {
    InstanceFilter {
        started_after: after.map(at),
        started_before: before.map(at),
        ..InstanceFilter::default()
    }
}

/// 700 instances over three versions (interleaved keys), started in reverse key order: every index
/// holds more entries than one page the store reads at a time (256), and listings still come in instance
/// order with exact cursors.
fn listings_larger_than_an_index_page_keep_instance_order_across_versions(mut backend: Backend) {
    let versions =
        [definition_of("certificate", 1), definition_of("certificate", 2), definition_of("certificate", 7)];
    let store = backend.store();
    let base = at("2027-01-04T09:00:00Z");
    let population: Vec<InstanceMeta> = (1..=700_u64)
        .map(|key| {
            let business_key = (key % 4 == 0).then_some("BK-FOUR");
            let started = base - chrono::Duration::seconds(i64::try_from(key).unwrap());
            let definition = &versions[usize::try_from(key % 3).unwrap()];
            let (journey, batch) =
                Journey::begin(definition, InstanceKey(key), business_key, None, VariableMap::new(), started);
            store.commit(&batch).unwrap();
            journey.meta
        })
        .collect();
    backend.restart();
    let store = backend.store();
    let all: Vec<u64> = (1..=700).collect();
    let every_third =
        |first: u64| -> Vec<u64> { all.iter().copied().filter(|key| key % 3 == first % 3).collect() };
    check_listing(store, &population, &by_process("certificate", None), &all);
    check_listing(store, &population, &by_process("certificate", Some(2)), &every_third(1));
    check_listing(store, &population, &by_process("certificate", Some(7)), &every_third(2));
    check_listing(store, &population, &by_status(InstanceStatus::Active), &all);
    let fours: Vec<u64> = all.iter().copied().filter(|key| key % 4 == 0).collect();
    check_listing(store, &population, &by_business_key("BK-FOUR"), &fours);
    // Started in the last 100 seconds before `base`: keys 1 to 100 (a narrow window, read whole).
    let window = started(Some("2027-01-04T08:58:20Z"), Some("2027-01-04T09:00:00Z"));
    check_listing(store, &population, &window, &(1..=100).collect::<Vec<u64>>());
    let both = InstanceFilter { status: Some(InstanceStatus::Active), ..by_process("certificate", Some(1)) };
    check_listing(store, &population, &both, &every_third(3));
    // A small page of a large listing: the first 5 after a cursor.
    let page = store.instances(&by_process("certificate", None), Some(InstanceKey(600)), 5).unwrap();
    assert_eq!(keys_of(&page), [601, 602, 603, 604, 605]);
}

#[test]
fn start_time_windows_wider_than_the_index_read_are_answered_in_instance_order() {
    // Above the 10,000 index entries a listing sorts, the store first scans instances in key order (quick
    // when a window reaches back over the cursor), then reads the window's index keeping the smallest
    // keys (a window of recent instances, far from the cursor). Pairs of keys start in swapped order.
    let backend = Backend::memory();
    let definition = definition_of("certificate", 1);
    let store = backend.store();
    let base = at("2027-01-04T09:00:00Z");
    let start_of = |key: u64| base + chrono::Duration::seconds(i64::try_from(key ^ 1).unwrap());
    let population: Vec<InstanceMeta> = (1..=20_050_u64)
        .map(|key| {
            let (journey, batch) =
                Journey::begin(&definition, InstanceKey(key), None, None, VariableMap::new(), start_of(key));
            store.commit(&batch).unwrap();
            journey.meta
        })
        .collect();
    let rfc = |key: u64| start_of(key).to_rfc3339();
    let windows = [
        // Everything from key 2 on: dense after any cursor.
        (Some(rfc(2)), None),
        // Keys 10,000 to 20,049 started in [start of 10,001, start of 20,048): recent, wide, exact edges.
        (Some(rfc(10_001)), Some(rfc(20_048))),
        (Some(rfc(10_001)), None),
    ];
    for (after, before) in windows {
        let window = started(after.as_deref(), before.as_deref());
        let model: Vec<InstanceMeta> =
            population.iter().filter(|meta| window.matches(meta)).cloned().collect();
        assert!(model.len() > 10_000, "{window:?}");
        assert_eq!(store.instances(&window, None, usize::MAX).unwrap(), model, "{window:?}");
        assert_eq!(every_page(store, &window, 1000), model, "{window:?}");
        let page = store.instances(&window, Some(InstanceKey(15_000)), 3).unwrap();
        assert_eq!(keys_of(&page), [15_001, 15_002, 15_003], "{window:?}");
        assert_eq!(store.instances(&window, None, 0).unwrap(), [], "{window:?}");
    }
    let recent = started(Some(&rfc(10_001)), Some(&rfc(20_048)));
    let first = store.instances(&recent, None, 2).unwrap();
    assert_eq!(keys_of(&first), [10_000, 10_001], "10,001 starts at the inclusive start, 10,000 after it");
    let last = store.instances(&recent, Some(InstanceKey(20_045)), 10).unwrap();
    assert_eq!(
        keys_of(&last),
        [20_046, 20_047, 20_049],
        "20,048 starts at the exclusive end, 20,049 before it"
    );
}

fn instances_are_listed_through_every_secondary_index_with_cursor_paging(mut backend: Backend) {
    let (cert_1, cert_2, cert_10) =
        (definition_of("certificate", 1), definition_of("certificate", 2), definition_of("certificate", 10));
    let review = definition_of("review", 1);
    let store = backend.store();
    // Keys are not in start-time order; 257 is past one byte. 7 and 13 start at the same instant.
    let mut journeys = [
        begin(store, &cert_1, 2, Some("BK-A"), "2027-01-04T09:00:00+03:00"),
        begin(store, &cert_2, 3, Some("BK-B"), "2027-01-04T08:00:00Z"),
        begin(store, &review, 5, Some("BK-A"), "2027-01-04T05:00:00-02:00"),
        begin(store, &cert_1, 7, None, "2027-01-04T06:30:00Z"),
        begin(store, &cert_10, 11, Some("BK-A"), "2027-01-04T05:00:00Z"),
        begin(store, &review, 13, Some("BK-B"), "2027-01-04T06:30:00Z"),
        begin(store, &cert_2, 257, Some("BK-AB"), "2027-01-04T09:00:00Z"),
    ];
    // Two instances complete: the review by its user task, certificate 7 by its timeout.
    let task = *journeys[2].state.user_tasks.keys().next().unwrap();
    let complete_task = Command::CompleteUserTask { task, variables: VariableMap::new() };
    store.commit(&journeys[2].step(&review, &complete_task, at("2027-01-04T10:00:00Z"))).unwrap();
    let fire = Command::FireTimer { timer: journeys[3].timer() };
    store.commit(&journeys[3].step(&cert_1, &fire, at("2027-01-04T08:30:00Z"))).unwrap();
    assert_eq!(journeys[2].state.status, InstanceStatus::Completed);
    assert_eq!(journeys[3].state.status, InstanceStatus::Completed);
    let population: Vec<InstanceMeta> = journeys.iter().map(|journey| journey.meta.clone()).collect();

    for _ in 0..2 {
        let store = backend.store();
        for meta in &population {
            assert_eq!(store.instance_meta(meta.key).unwrap().as_ref(), Some(meta));
        }
        let all = [2, 3, 5, 7, 11, 13, 257];
        check_listing(store, &population, &InstanceFilter::default(), &all);

        check_listing(store, &population, &by_business_key("BK-A"), &[2, 5, 11]);
        check_listing(store, &population, &by_business_key("BK-B"), &[3, 13]);
        check_listing(store, &population, &by_business_key("BK-AB"), &[257]);
        check_listing(store, &population, &by_business_key("BK-"), &[]);

        check_listing(store, &population, &by_process("certificate", None), &[2, 3, 7, 11, 257]);
        check_listing(store, &population, &by_process("certificate", Some(1)), &[2, 7]);
        check_listing(store, &population, &by_process("certificate", Some(2)), &[3, 257]);
        check_listing(store, &population, &by_process("certificate", Some(10)), &[11]);
        check_listing(store, &population, &by_process("certificate", Some(3)), &[]);
        check_listing(store, &population, &by_process("review", None), &[5, 13]);
        check_listing(store, &population, &by_process("cert", None), &[]);
        check_listing(store, &population, &by_process("review", Some(2)), &[]);

        check_listing(store, &population, &by_status(InstanceStatus::Active), &[2, 3, 11, 13, 257]);
        check_listing(store, &population, &by_status(InstanceStatus::Completed), &[5, 7]);
        check_listing(store, &population, &by_status(InstanceStatus::Cancelled), &[]);

        // After is inclusive, before exclusive; offsets do not matter, instants do.
        check_listing(store, &population, &started(Some("2027-01-04T06:30:00Z"), None), &[3, 5, 7, 13, 257]);
        check_listing(store, &population, &started(None, Some("2027-01-04T06:30:00Z")), &[2, 11]);
        check_listing(
            store,
            &population,
            &started(Some("2027-01-04T08:30:00+02:00"), Some("2027-01-04T09:00:00+01:00")),
            &[5, 7, 13],
        );
        check_listing(
            store,
            &population,
            &started(Some("2027-01-04T06:00:00Z"), Some("2027-01-04T06:00:00Z")),
            &[],
        );
        check_listing(
            store,
            &population,
            &started(Some("2027-01-04T06:00:00Z"), Some("2027-01-04T06:00:00.001Z")),
            &[2],
        );
        check_listing(store, &population, &started(Some("2028-01-01T00:00:00Z"), None), &[]);

        // Combined filters: the index narrows, the whole filter decides.
        let combined =
            |filter: InstanceFilter, expected: &[u64]| check_listing(store, &population, &filter, expected);
        combined(InstanceFilter { process_id: Some("review".into()), ..by_business_key("BK-A") }, &[5]);
        combined(
            InstanceFilter { status: Some(InstanceStatus::Active), ..by_business_key("BK-A") },
            &[2, 11],
        );
        combined(InstanceFilter { version: Some(1), ..by_business_key("BK-A") }, &[2, 5]);
        combined(
            InstanceFilter { started_after: Some(at("2027-01-04T06:00:00Z")), ..by_business_key("BK-A") },
            &[2, 5],
        );
        combined(
            InstanceFilter { status: Some(InstanceStatus::Completed), ..by_process("certificate", None) },
            &[7],
        );
        combined(
            InstanceFilter {
                started_before: Some(at("2027-01-04T07:00:00Z")),
                ..by_process("certificate", Some(1))
            },
            &[2, 7],
        );
        combined(
            InstanceFilter {
                started_after: Some(at("2027-01-04T07:00:00Z")),
                ..by_status(InstanceStatus::Active)
            },
            &[3, 257],
        );
        combined(
            InstanceFilter {
                process_id: Some("certificate".into()),
                version: Some(2),
                status: Some(InstanceStatus::Active),
                business_key: Some("BK-AB".into()),
                started_after: Some(at("2027-01-04T09:00:00Z")),
                started_before: Some(at("2027-01-04T09:00:00.001Z")),
            },
            &[257],
        );
        backend.restart();
    }
}

fn an_instance_moves_from_the_active_listing_to_the_completed_one(mut backend: Backend) {
    let definition = definition();
    let store = backend.store();
    let (mut journey, batch) =
        Journey::start(&definition, InstanceKey(4), "APP-4", at("2027-01-04T09:00:00Z"));
    store.commit(&batch).unwrap();
    let (other, batch) = Journey::start(&definition, InstanceKey(9), "APP-9", at("2027-01-04T09:05:00Z"));
    store.commit(&batch).unwrap();
    let active = by_status(InstanceStatus::Active);
    let completed = by_status(InstanceStatus::Completed);
    assert_eq!(keys_of(&store.instances(&active, None, usize::MAX).unwrap()), [4, 9]);
    assert_eq!(keys_of(&store.instances(&completed, None, usize::MAX).unwrap()), Vec::<u64>::new());

    // A step that keeps the instance active moves nothing.
    store.commit(&journey.complete(&definition, "verify-id", at("2027-01-04T09:10:00Z"))).unwrap();
    assert_eq!(keys_of(&store.instances(&active, None, usize::MAX).unwrap()), [4, 9]);
    let correlate = Command::CorrelateMessage {
        name: MESSAGE.to_owned(),
        correlation_key: "APP-4".to_owned(),
        variables: VariableMap::new(),
        message_id: None,
    };
    store.commit(&journey.step(&definition, &correlate, at("2027-01-04T09:20:00Z"))).unwrap();
    store.commit(&journey.complete(&definition, "issue-certificate", at("2027-01-04T09:30:00Z"))).unwrap();
    assert_eq!(journey.state.status, InstanceStatus::Completed);

    for _ in 0..2 {
        let store = backend.store();
        assert_eq!(store.instances(&active, None, usize::MAX).unwrap(), std::slice::from_ref(&other.meta));
        assert_eq!(store.instances(&completed, None, usize::MAX).unwrap(), [journey.meta.clone()]);
        assert_eq!(journey.meta.status, InstanceStatus::Completed);
        // The other indexes still list it, once.
        assert_eq!(keys_of(&store.instances(&by_business_key("BK-APP-4"), None, usize::MAX).unwrap()), [4]);
        assert_eq!(keys_of(&store.instances(&by_process("certificate", Some(1)), None, 10).unwrap()), [4, 9]);
        let from_nine = started(Some("2027-01-04T09:00:00Z"), Some("2027-01-04T09:01:00Z"));
        assert_eq!(keys_of(&store.instances(&from_nine, None, usize::MAX).unwrap()), [4]);
        backend.restart();
    }
}

fn user_tasks_and_incidents_are_listed_while_open(mut backend: Backend) {
    let (review, notify) = (definition_of("review", 1), definition_of("notify", 1));
    let store = backend.store();
    let mut first = begin(store, &review, 1, None, "2027-01-04T09:00:00Z");
    let mut second = begin(store, &review, 2, None, "2027-01-04T09:01:00Z");
    let task_entry = |journey: &Journey| UserTaskEntry {
        instance: journey.key,
        task: *journey.state.user_tasks.keys().next().unwrap(),
        element: "review-task".to_owned(),
        name: Some("Review the application".to_owned()),
        assignee: Some("clerk-1".to_owned()),
        candidate_groups: vec!["registrars".to_owned()],
        candidate_users: Vec::new(),
        form_key: None,
        due_date: None,
    };
    let tasks = vec![task_entry(&first), task_entry(&second)];
    assert_eq!(store.user_tasks(None, usize::MAX).unwrap(), tasks);
    assert_eq!(store.user_tasks(None, 1).unwrap(), tasks[..1]);
    assert_eq!(store.user_tasks(Some((tasks[0].instance, tasks[0].task)), usize::MAX).unwrap(), tasks[1..]);
    assert_eq!(store.user_tasks(Some((tasks[1].instance, tasks[1].task)), usize::MAX).unwrap(), []);

    // The second review is claimed by someone else, then given back: the entry keeps every other field.
    let claim =
        Command::AssignUserTask { task: tasks[1].task, assignee: Some("clerk-2".to_owned()), expected: None };
    store.commit(&second.step(&review, &claim, at("2027-01-04T09:05:00Z"))).unwrap();
    let claimed = UserTaskEntry { assignee: Some("clerk-2".to_owned()), ..tasks[1].clone() };
    for _ in 0..2 {
        let store = backend.store();
        assert_eq!(store.user_tasks(None, usize::MAX).unwrap(), [tasks[0].clone(), claimed.clone()]);
        backend.restart();
    }
    let store = backend.store();
    let unclaim = Command::AssignUserTask { task: tasks[1].task, assignee: None, expected: None };
    store.commit(&second.step(&review, &unclaim, at("2027-01-04T09:06:00Z"))).unwrap();
    let unclaimed = UserTaskEntry { assignee: None, ..tasks[1].clone() };
    assert_eq!(store.user_tasks(None, usize::MAX).unwrap(), [tasks[0].clone(), unclaimed.clone()]);
    let tasks = vec![tasks[0].clone(), unclaimed];

    // Two notifications fail with no retries left: two incidents, and their jobs leave the runnable index.
    let mut failing = Vec::new();
    for key in [3, 4] {
        let mut journey = begin(store, &notify, key, None, "2027-01-04T09:02:00Z");
        let job = journey.job("notify.send");
        let fail = Command::FailJob { job, retries: 0, message: "mail server down".into(), backoff_ms: None };
        store.commit(&journey.step(&notify, &fail, at("2027-01-04T09:03:00Z"))).unwrap();
        failing.push(journey);
    }
    let incident_entry = |journey: &Journey| {
        let incident = journey.state.incidents.values().next().unwrap();
        assert_eq!(incident.kind, IncidentKind::JobNoRetries);
        IncidentEntry {
            instance: journey.key,
            incident: incident.key,
            element: "send".to_owned(),
            kind: IncidentKind::JobNoRetries,
            message: incident.message.clone(),
            job: incident.job,
        }
    };
    let incidents = vec![incident_entry(&failing[0]), incident_entry(&failing[1])];
    assert!(incidents.iter().all(|incident| incident.job.is_some()));
    assert_eq!(store.incidents(None, usize::MAX).unwrap(), incidents);
    assert_eq!(store.incidents(None, 1).unwrap(), incidents[..1]);
    assert_eq!(
        store.incidents(Some((incidents[0].instance, incidents[0].incident)), 5).unwrap(),
        incidents[1..]
    );
    assert_eq!(store.jobs(Some("notify.send"), usize::MAX).unwrap(), []);
    // User tasks and incidents do not show in each other's listing.
    assert_eq!(store.user_tasks(None, usize::MAX).unwrap(), tasks);

    // The first review is done and the first incident resolved: both leave their listings.
    let complete = Command::CompleteUserTask { task: tasks[0].task, variables: VariableMap::new() };
    store.commit(&first.step(&review, &complete, at("2027-01-04T10:00:00Z"))).unwrap();
    let resolve = Command::ResolveIncident { incident: incidents[0].incident, variables: VariableMap::new() };
    store.commit(&failing[0].step(&notify, &resolve, at("2027-01-04T10:01:00Z"))).unwrap();
    assert_eq!(first.state.status, InstanceStatus::Completed);
    let retried = JobEntry {
        job_type: "notify.send".to_owned(),
        instance: failing[0].key,
        job: failing[0].job("notify.send"),
    };
    for _ in 0..2 {
        let store = backend.store();
        assert_eq!(store.user_tasks(None, usize::MAX).unwrap(), tasks[1..]);
        assert_eq!(store.incidents(None, usize::MAX).unwrap(), incidents[1..]);
        assert_eq!(store.jobs(Some("notify.send"), usize::MAX).unwrap(), std::slice::from_ref(&retried));
        backend.restart();
    }
}

fn signal_subscriptions_and_children_are_listed(mut backend: Backend) {
    let (wait, caller, review) =
        (definition_of("wait-signal", 1), definition_of("caller", 1), definition_of("review", 1));
    let store = backend.store();
    let mut waiting: Vec<Journey> =
        [1, 2].into_iter().map(|key| begin(store, &wait, key, None, "2027-01-04T09:00:00Z")).collect();
    let signal_entry = |journey: &Journey| SignalEntry {
        signal_name: "registry-open".to_owned(),
        instance: journey.key,
        subscription: *journey.state.signal_subscriptions.keys().next().unwrap(),
    };
    let signals = vec![signal_entry(&waiting[0]), signal_entry(&waiting[1])];
    assert_eq!(store.signal_subscriptions("registry-open").unwrap(), signals);
    assert_eq!(store.signal_subscriptions("registry").unwrap(), []);
    assert_eq!(store.signal_subscriptions("registry-open-late").unwrap(), []);
    let trigger = Command::TriggerSignal { name: "registry-open".into(), variables: VariableMap::new() };
    store.commit(&waiting[0].step(&wait, &trigger, at("2027-01-04T09:10:00Z"))).unwrap();
    assert_eq!(waiting[0].state.status, InstanceStatus::Completed);

    // Two callers; the first call activity's child is started twice (as after a crash between a child's
    // start and its parent's acknowledgement), so its listing holds two children.
    let callers: Vec<Journey> =
        [10, 20].into_iter().map(|key| begin(store, &caller, key, None, "2027-01-04T09:00:00Z")).collect();
    let call = |journey: &Journey| *journey.state.calls.keys().next().unwrap();
    let mut children = Vec::new();
    for (parent, child) in [(&callers[0], 11), (&callers[0], 12), (&callers[1], 21)] {
        let (journey, batch) = Journey::begin(
            &review,
            InstanceKey(child),
            None,
            Some((parent.key, call(parent))),
            VariableMap::new(),
            at("2027-01-04T09:00:01Z"),
        );
        store.commit(&batch).unwrap();
        children.push(journey);
    }
    for _ in 0..2 {
        let store = backend.store();
        assert_eq!(store.signal_subscriptions("registry-open").unwrap(), signals[1..]);
        assert_eq!(
            store.children(callers[0].key, call(&callers[0])).unwrap(),
            [InstanceKey(11), InstanceKey(12)]
        );
        assert_eq!(store.children(callers[1].key, call(&callers[1])).unwrap(), [InstanceKey(21)]);
        assert_eq!(store.children(callers[0].key, Key(call(&callers[0]).0 + 1)).unwrap(), []);
        assert_eq!(store.children(InstanceKey(11), call(&callers[0])).unwrap(), []);
        let meta = store.instance_meta(InstanceKey(12)).unwrap().unwrap();
        assert_eq!(meta.parent, Some((callers[0].key, call(&callers[0]))));
        assert_eq!(meta, children[1].meta);
        backend.restart();
    }
}

/// Fixed: a listing filtered by a version alone (no process id, so no index applies and the store scans
/// every instance) ignored the version and listed every instance. The scan now filters, in pages of 1024:
/// 1100 instances put matches at both ends of the first page and in the second.
fn regression_a_version_alone_filters_the_instance_listing(mut backend: Backend) {
    let (cert_1, cert_2, review_2) =
        (definition_of("certificate", 1), definition_of("certificate", 2), definition_of("review", 2));
    let store = backend.store();
    let mut population = Vec::new();
    let mut tickets = Vec::new();
    for key in 1..=1100 {
        let definition = match key {
            1025 => &review_2,
            3 | 1024 | 1100 => &cert_2,
            _ => &cert_1,
        };
        let (journey, batch) = Journey::begin(
            definition,
            InstanceKey(key),
            None,
            None,
            VariableMap::new(),
            at("2027-01-04T09:00:00Z"),
        );
        // Submitted together, so the 1100 starts share a few flushes.
        tickets.push(store.submit(&batch).unwrap());
        population.push(journey.meta);
    }
    for ticket in tickets {
        ticket.wait().unwrap();
    }
    let version = |version: u32| InstanceFilter { version: Some(version), ..InstanceFilter::default() };

    for _ in 0..2 {
        let store = backend.store();
        check_listing(store, &population, &version(2), &[3, 1024, 1025, 1100]);
        check_listing(store, &population, &version(3), &[]);
        // Version 1 has too many matches to page one by one: whole, in large pages, past one scan page.
        let ones: Vec<InstanceMeta> = population.iter().filter(|meta| meta.version == 1).cloned().collect();
        assert_eq!(ones.len(), 1096);
        assert_eq!(store.instances(&version(1), None, usize::MAX).unwrap(), ones);
        assert_eq!(every_page(store, &version(1), 500), ones);
        assert_eq!(store.instances(&version(1), None, 1030).unwrap(), ones[..1030]);
        assert_eq!(keys_of(&store.instances(&version(1), Some(InstanceKey(1023)), 2).unwrap()), [1026, 1027]);
        backend.restart();
    }
}

/// Fixed: `started_before` missed instances started earlier within the bound's own millisecond: the
/// start-time index keeps milliseconds and its scan ended, exclusive, at the bound's millisecond.
fn regression_started_before_lists_instances_earlier_in_its_millisecond(mut backend: Backend) {
    let review = definition_of("review", 1);
    let store = backend.store();
    let journeys = [
        begin(store, &review, 1, None, "2027-01-04T09:00:00.000400Z"),
        // 09:00:00.000900Z, in another offset: the same millisecond as 1.
        begin(store, &review, 2, None, "2027-01-04T12:00:00.000900+03:00"),
        begin(store, &review, 3, None, "2027-01-04T09:00:00.001Z"),
        begin(store, &review, 4, None, "2027-01-04T08:59:59.999700Z"),
    ];
    let population: Vec<InstanceMeta> = journeys.iter().map(|journey| journey.meta.clone()).collect();

    for _ in 0..2 {
        let store = backend.store();
        let check = |after: Option<&str>, before: Option<&str>, expected: &[u64]| {
            check_listing(store, &population, &started(after, before), expected)
        };
        check(None, Some("2027-01-04T09:00:00.0009Z"), &[1, 4]);
        check(None, Some("2027-01-04T09:00:00.000400001Z"), &[1, 4]);
        check(None, Some("2027-01-04T09:00:00.0004Z"), &[4]);
        check(None, Some("2027-01-04T06:00:00.001-03:00"), &[1, 2, 4]);
        check(None, Some("2027-01-04T09:00:00.0010001Z"), &[1, 2, 3, 4]);
        check(Some("2027-01-04T09:00:00.0004Z"), Some("2027-01-04T09:00:00.0009Z"), &[1]);
        check(Some("2027-01-04T09:00:00.0005Z"), Some("2027-01-04T09:00:00.0009Z"), &[]);
        check(Some("2027-01-04T09:00:00.0009Z"), None, &[2, 3]);
        // A window that ends before it starts, within one millisecond, holds nothing.
        check(Some("2027-01-04T09:00:00.0009Z"), Some("2027-01-04T09:00:00.0005Z"), &[]);
        // The latest representable bound (the +1 ms used to have overflowed and panicked).
        let latest = InstanceFilter {
            started_before: Some(chrono::DateTime::<chrono::Utc>::MAX_UTC.fixed_offset()),
            ..InstanceFilter::default()
        };
        check_listing(store, &population, &latest, &[1, 2, 3, 4]);
        backend.restart();
    }
}

// ---------------------------------------------------------------------------------------------------
// Buffered messages

fn message(name: &str, correlation_key: &str, id: Option<&str>, expires_at: &str) -> BufferedMessage {
    BufferedMessage {
        key: 0,
        name: name.to_owned(),
        correlation_key: correlation_key.to_owned(),
        variables: VariableMap::from([("expires".to_owned(), serde_json::json!(expires_at))]),
        message_id: id.map(str::to_owned),
        published_at: at("2027-01-04T09:00:00Z"),
        expires_at: at(expires_at),
        correlated: Vec::new(),
    }
}

fn buffered_messages_have_increasing_keys_unique_ids_and_expire_in_time(mut backend: Backend) {
    let store = backend.store();
    let one = store.put_message(message("docs", "APP-1", Some("m-1"), "2027-01-04T10:00:00Z")).unwrap();
    let two = store.put_message(message("docs", "APP-1", None, "2027-01-04T11:00:00Z")).unwrap();
    // Expires first, but is the newest of its (name, key): listings stay oldest first.
    let three = store.put_message(message("docs", "APP-1", Some("m-3"), "2027-01-04T09:30:00Z")).unwrap();
    let other = store.put_message(message("docs", "APP-2", Some("m-4"), "2027-01-04T09:30:00.001Z")).unwrap();
    assert!(
        one.key < two.key && two.key < three.key && three.key < other.key,
        "{one:?} {two:?} {three:?} {other:?}"
    );
    assert_eq!(
        BufferedMessage { key: 0, ..one.clone() },
        message("docs", "APP-1", Some("m-1"), "2027-01-04T10:00:00Z")
    );

    let duplicate = store.put_message(message("other-name", "APP-9", Some("m-1"), "2027-01-05T00:00:00Z"));
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");
    assert_eq!(store.messages("other-name", "APP-9").unwrap(), []);
    assert_eq!(store.message_by_id("m-1").unwrap(), Some(one.clone()));
    assert_eq!(store.message_by_id("m-2").unwrap(), None);
    assert_eq!(store.messages("docs", "APP-1").unwrap(), [one.clone(), two.clone(), three.clone()]);
    assert_eq!(store.messages("docs", "APP-").unwrap(), []);
    assert_eq!(store.messages("doc", "sAPP-1").unwrap(), []);

    let mut one = one;
    one.correlated.push("certificate".to_owned());
    store.update_message(&one).unwrap();
    assert_eq!(store.messages("docs", "APP-1").unwrap(), [one.clone(), two.clone(), three.clone()]);
    assert_eq!(store.message_by_id("m-1").unwrap(), Some(one.clone()));

    backend.restart();
    let store = backend.store();
    assert_eq!(store.messages("docs", "APP-1").unwrap(), [one.clone(), two.clone(), three.clone()]);
    let five = store.put_message(message("docs", "APP-1", Some("m-5"), "2027-01-04T12:00:00Z")).unwrap();
    assert!(five.key > other.key, "a key is never reused after a restart: {} after {}", five.key, other.key);

    // Nothing expired yet; then exactly the message expiring at `until` goes, and its id is free again.
    assert_eq!(store.expire_messages(at("2027-01-04T09:29:59.999Z")).unwrap(), 0);
    assert_eq!(store.expire_messages(at("2027-01-04T09:30:00Z")).unwrap(), 1);
    assert_eq!(store.messages("docs", "APP-1").unwrap(), [one.clone(), two.clone(), five.clone()]);
    assert_eq!(store.messages("docs", "APP-2").unwrap(), std::slice::from_ref(&other));
    assert_eq!(store.message_by_id("m-3").unwrap(), None);
    assert_eq!(store.message_by_id("m-4").unwrap(), Some(other.clone()));
    let reused = store.put_message(message("docs", "APP-3", Some("m-3"), "2027-01-05T00:00:00Z")).unwrap();
    assert!(reused.key > five.key);
    assert!(matches!(
        store.put_message(message("docs", "APP-3", Some("m-4"), "2027-01-05T00:00:00Z")),
        Err(StoreError::Conflict(_))
    ));

    backend.restart();
    let store = backend.store();
    // A later `until` in another offset: APP-2's message and the first two of APP-1.
    assert_eq!(store.expire_messages(at("2027-01-04T14:00:00+03:00")).unwrap(), 3);
    assert_eq!(store.messages("docs", "APP-1").unwrap(), std::slice::from_ref(&five));
    assert_eq!(store.messages("docs", "APP-2").unwrap(), []);
    assert_eq!(store.message_by_id("m-1").unwrap(), None);
    assert_eq!(store.expire_messages(at("2027-01-04T11:00:00Z")).unwrap(), 0);
    store.put_message(message("docs", "APP-1", Some("m-1"), "2027-01-05T00:00:00Z")).unwrap();
    backend.restart();
    let store = backend.store();
    assert_eq!(store.messages("docs", "APP-3").unwrap(), [reused]);
    assert_eq!(store.message_by_id("m-1").unwrap().map(|m| m.correlation_key), Some("APP-1".to_owned()));
}

/// Fixed: `expire_messages(until)` also removed messages expiring later within `until`'s millisecond
/// (expiry keys keep milliseconds), and freed their ids: a message still in its time to live was lost.
fn regression_expiry_keeps_messages_expiring_later_in_the_same_millisecond(mut backend: Backend) {
    let store = backend.store();
    let early = "2027-01-04T10:00:00.000300Z";
    let early = store.put_message(message("docs", "APP-1", Some("m-early"), early)).unwrap();
    // 10:00:00.000700Z, in another offset.
    let late = "2027-01-04T13:00:00.000700+03:00";
    let late = store.put_message(message("docs", "APP-1", Some("m-late"), late)).unwrap();
    assert_eq!(store.expire_messages(at("2027-01-04T10:00:00.000299Z")).unwrap(), 0);
    assert_eq!(store.messages("docs", "APP-1").unwrap(), [early.clone(), late.clone()]);
    assert_eq!(store.expire_messages(at("2027-01-04T10:00:00.0003Z")).unwrap(), 1);

    backend.restart();
    let store = backend.store();
    assert_eq!(store.messages("docs", "APP-1").unwrap(), std::slice::from_ref(&late));
    assert_eq!(store.message_by_id("m-early").unwrap(), None);
    assert_eq!(store.message_by_id("m-late").unwrap(), Some(late.clone()));
    let duplicate = store.put_message(message("docs", "APP-2", Some("m-late"), "2027-01-05T00:00:00Z"));
    assert!(matches!(duplicate, Err(StoreError::Conflict(_))), "{duplicate:?}");
    assert_eq!(store.expire_messages(at("2027-01-04T10:00:00.000699999Z")).unwrap(), 0);
    assert_eq!(store.messages("docs", "APP-1").unwrap(), std::slice::from_ref(&late));
    assert_eq!(store.expire_messages(at("2027-01-04T10:00:00.0007Z")).unwrap(), 1);
    assert_eq!(store.messages("docs", "APP-1").unwrap(), []);
    assert_eq!(store.message_by_id("m-late").unwrap(), None);
}

/// Fixed: `update_message` on a message that had expired since it was read (a caller recording a
/// correlation while expiry ran) wrote it back: listed again, with no expiry entry, so it never expired.
fn regression_updating_an_expired_message_does_not_bring_it_back(mut backend: Backend) {
    let store = backend.store();
    let mut read = store.put_message(message("docs", "APP-1", Some("m-1"), "2027-01-04T10:00:00Z")).unwrap();
    let kept = store.put_message(message("docs", "APP-1", None, "2027-01-04T11:00:00Z")).unwrap();
    assert_eq!(store.expire_messages(at("2027-01-04T10:00:00Z")).unwrap(), 1);
    read.correlated.push("certificate".to_owned());
    store.update_message(&read).unwrap();

    for _ in 0..2 {
        let store = backend.store();
        assert_eq!(store.messages("docs", "APP-1").unwrap(), std::slice::from_ref(&kept));
        assert_eq!(store.message_by_id("m-1").unwrap(), None);
        backend.restart();
    }
    // Its id is free, and every message left expires.
    let store = backend.store();
    let again = store.put_message(message("docs", "APP-1", Some("m-1"), "2027-01-05T00:00:00Z")).unwrap();
    assert!(again.key > kept.key, "{again:?} after {kept:?}");
    assert_eq!(store.expire_messages(at("2030-01-01T00:00:00Z")).unwrap(), 2);
    assert_eq!(store.messages("docs", "APP-1").unwrap(), []);
}

// ---------------------------------------------------------------------------------------------------
// The operation log

fn operation(
    at_text: &str,
    user: &str,
    kind: OperationKind,
    target: OperationTarget,
    detail: &str,
) -> Operation {
    Operation {
        seq: 0,
        at: at(at_text),
        actor: Actor::user(user, Some("Civil Registry".to_owned())),
        kind,
        target,
        detail: Some(detail.to_owned()),
    }
}

fn definition_target(process_id: &str, version: u32) -> OperationTarget {
    OperationTarget::Definition { process_id: process_id.to_owned(), version }
}

fn instance_target(instance: InstanceKey) -> OperationTarget {
    OperationTarget::Instance { instance, process_id: "certificate".to_owned() }
}

fn variable_target(instance: InstanceKey, name: &str) -> OperationTarget {
    OperationTarget::Variable { instance, scope: Key(1), name: name.to_owned() }
}

/// Every operation matching `filter`, read in pages of `page` with the `after` cursor.
fn every_operation_page(store: &dyn Store, filter: &OperationFilter, page: usize) -> Vec<Operation> {
    let mut out: Vec<Operation> = Vec::new();
    loop {
        let after = out.last().map_or(0, |operation| operation.seq);
        let found = store.operations(filter, after, page).unwrap();
        assert!(found.len() <= page);
        if found.is_empty() {
            return out;
        }
        out.extend(found);
    }
}

fn operations_are_sequenced_from_one_across_restarts_and_filtered(mut backend: Backend) {
    let definition = definition();
    let cert = deployment("certificate", 1);
    let (one, two) = (InstanceKey(1), InstanceKey(2));
    let mut written = Vec::new();

    let store = backend.store();
    let create = operation(
        "2027-01-04T09:00:00Z",
        "admin",
        OperationKind::Create,
        definition_target("certificate", 1),
        "certificate.bpmn",
    );
    store.put_deployment(&cert, create.clone()).unwrap();
    written.push(create);
    let (mut journey, mut batch) = Journey::start(&definition, one, "APP-1", at("2027-01-04T09:05:00Z"));
    batch.operations = vec![
        operation(
            "2027-01-04T09:05:00Z",
            "registrar-1",
            OperationKind::Create,
            instance_target(one),
            "BK-APP-1",
        ),
        operation(
            "2027-01-04T09:05:00Z",
            "registrar-1",
            OperationKind::Create,
            variable_target(one, "applicationId"),
            "start",
        ),
    ];
    store.commit(&batch).unwrap();
    written.extend(batch.operations);
    let disable = operation(
        "2027-01-04T09:10:00Z",
        "admin",
        OperationKind::Update,
        definition_target("certificate", 1),
        "disabled",
    );
    store.put_deployment(&Deployment { enabled: false, ..cert.clone() }, disable.clone()).unwrap();
    written.push(disable);
    let (_, mut batch) = Journey::start(&definition, two, "APP-2", at("2027-01-04T09:20:00Z"));
    batch.operations = vec![operation(
        "2027-01-04T09:20:00Z",
        "clerk-2",
        OperationKind::Create,
        instance_target(two),
        "BK-APP-2",
    )];
    store.commit(&batch).unwrap();
    written.extend(batch.operations);
    let n_before_restart = written.len();

    backend.restart();
    let store = backend.store();
    let delete = operation(
        "2027-01-04T09:30:00Z",
        "admin",
        OperationKind::Delete,
        definition_target("review", 1),
        "review.bpmn",
    );
    store.delete_deployment("review", 1, delete.clone()).unwrap();
    written.push(delete);
    let mut batch = journey.complete(&definition, "verify-id", at("2027-01-04T09:40:00Z"));
    batch.operations = vec![
        operation(
            "2027-01-04T09:40:00Z",
            "engine",
            OperationKind::Update,
            variable_target(one, "applicationId"),
            "verify",
        ),
        operation("2027-01-04T09:40:00Z", "engine", OperationKind::Update, instance_target(one), "waiting"),
    ];
    store.commit(&batch).unwrap();
    written.extend(batch.operations);
    // A batch with no operations takes no sequence number.
    store
        .commit(&journey.step(
            &definition,
            &Command::SetVariables { scope: None, variables: VariableMap::new(), local: false },
            at("2027-01-04T09:45:00Z"),
        ))
        .unwrap();

    let expected: Vec<Operation> =
        written.iter().zip(1..).map(|(operation, seq)| Operation { seq, ..operation.clone() }).collect();
    for _ in 0..2 {
        let store = backend.store();
        let all = store.operations(&OperationFilter::default(), 0, usize::MAX).unwrap();
        assert_eq!(all, expected);
        assert_eq!(
            all[n_before_restart].seq,
            n_before_restart as u64 + 1,
            "numbering goes on after a restart"
        );
        let seqs = |filter: OperationFilter| -> Vec<u64> {
            let found = store.operations(&filter, 0, usize::MAX).unwrap();
            let model: Vec<Operation> =
                expected.iter().filter(|operation| filter.matches(operation)).cloned().collect();
            assert_eq!(found, model, "{filter:?}");
            for page in [1, 2, 3] {
                assert_eq!(every_operation_page(store, &filter, page), model, "pages of {page}: {filter:?}");
            }
            found.iter().map(|operation| operation.seq).collect()
        };
        assert_eq!(seqs(OperationFilter::default()), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            seqs(OperationFilter { user: Some("admin".into()), ..OperationFilter::default() }),
            [1, 4, 6]
        );
        assert_eq!(
            seqs(OperationFilter { user: Some("admi".into()), ..OperationFilter::default() }),
            Vec::<u64>::new()
        );
        assert_eq!(seqs(OperationFilter { instance: Some(one), ..OperationFilter::default() }), [2, 3, 7, 8]);
        assert_eq!(seqs(OperationFilter { instance: Some(two), ..OperationFilter::default() }), [5]);
        // Variables carry no process id; definitions and instances do.
        assert_eq!(
            seqs(OperationFilter { process_id: Some("certificate".into()), ..OperationFilter::default() }),
            [1, 2, 4, 5, 8]
        );
        assert_eq!(
            seqs(OperationFilter { process_id: Some("review".into()), ..OperationFilter::default() }),
            [6]
        );
        assert_eq!(
            seqs(OperationFilter { kind: Some(OperationKind::Create), ..OperationFilter::default() }),
            [1, 2, 3, 5]
        );
        assert_eq!(
            seqs(OperationFilter { kind: Some(OperationKind::Update), ..OperationFilter::default() }),
            [4, 7, 8]
        );
        assert_eq!(
            seqs(OperationFilter { kind: Some(OperationKind::Delete), ..OperationFilter::default() }),
            [6]
        );
        // From is inclusive, to exclusive.
        let window = OperationFilter {
            from: Some(at("2027-01-04T12:05:00+03:00")),
            to: Some(at("2027-01-04T09:30:00Z")),
            ..OperationFilter::default()
        };
        assert_eq!(seqs(window.clone()), [2, 3, 4, 5]);
        assert_eq!(seqs(OperationFilter { user: Some("registrar-1".into()), ..window.clone() }), [2, 3]);
        assert_eq!(
            seqs(OperationFilter { kind: Some(OperationKind::Create), instance: Some(one), ..window }),
            [2, 3]
        );
        // `after` skips by sequence number, `limit` counts matches.
        let admin = OperationFilter { user: Some("admin".into()), ..OperationFilter::default() };
        assert_eq!(store.operations(&admin, 1, 1).unwrap(), [expected[3].clone()]);
        assert_eq!(store.operations(&admin, 6, usize::MAX).unwrap(), []);
        assert_eq!(store.operations(&OperationFilter::default(), 8, usize::MAX).unwrap(), []);
        assert_eq!(store.operations(&OperationFilter::default(), u64::MAX, usize::MAX).unwrap(), []);
        backend.restart();
    }
    let store = backend.store();
    let late = operation(
        "2027-01-04T10:00:00Z",
        "admin",
        OperationKind::Create,
        definition_target("review", 2),
        "review.bpmn",
    );
    store.put_deployment(&deployment("review", 2), late).unwrap();
    let last = store.operations(&OperationFilter::default(), 8, usize::MAX).unwrap();
    assert_eq!(last.iter().map(|operation| operation.seq).collect::<Vec<_>>(), [9]);
}

/// One commit with 600 operations: the log stores them in entries of up to 256, and every read, cursor
/// and page sees the 600 in order, across a restart.
fn a_flush_with_more_operations_than_one_entry_holds_reads_back_whole_and_in_order(mut backend: Backend) {
    let definition = definition();
    let key = InstanceKey(1);
    let store = backend.store();
    let (mut journey, mut batch) = Journey::start(&definition, key, "APP-1", at("2027-01-04T09:05:00Z"));
    batch.operations = (0..600)
        .map(|i| {
            let user = if i % 7 == 0 { "clerk-7" } else { "registrar-1" };
            let name = format!("field{i}");
            operation(
                "2027-01-04T09:05:00Z",
                user,
                OperationKind::Create,
                variable_target(key, &name),
                "start",
            )
        })
        .collect();
    store.commit(&batch).unwrap();
    let mut next = journey.complete(&definition, "verify-id", at("2027-01-04T09:10:00Z"));
    next.operations = vec![operation(
        "2027-01-04T09:10:00Z",
        "clerk-7",
        OperationKind::Update,
        instance_target(key),
        "waiting",
    )];
    store.commit(&next).unwrap();
    let written: Vec<Operation> = batch.operations.iter().chain(&next.operations).cloned().collect();
    let expected: Vec<Operation> =
        written.iter().zip(1..).map(|(operation, seq)| Operation { seq, ..operation.clone() }).collect();
    for _ in 0..2 {
        let store = backend.store();
        assert_eq!(store.operations(&OperationFilter::default(), 0, usize::MAX).unwrap(), expected);
        for page in [1, 100, 255, 256, 257, 1000] {
            assert_eq!(
                every_operation_page(store, &OperationFilter::default(), page),
                expected,
                "pages of {page}"
            );
        }
        // A cursor inside an entry, at its end, and at the start of the next.
        for after in [1_u64, 100, 255, 256, 257, 511, 512, 599, 600, 601] {
            let found = store.operations(&OperationFilter::default(), after, 3).unwrap();
            let model: Vec<Operation> =
                expected.iter().filter(|operation| operation.seq > after).take(3).cloned().collect();
            assert_eq!(found, model, "after {after}");
        }
        let clerk = OperationFilter { user: Some("clerk-7".into()), ..OperationFilter::default() };
        let model: Vec<Operation> =
            expected.iter().filter(|operation| clerk.matches(operation)).cloned().collect();
        assert_eq!(model.len(), 87);
        assert_eq!(every_operation_page(store, &clerk, 10), model);
        backend.restart();
    }
    let store = backend.store();
    store
        .put_deployment(
            &deployment("review", 1),
            operation(
                "2027-01-04T10:00:00Z",
                "admin",
                OperationKind::Create,
                definition_target("review", 1),
                "r",
            ),
        )
        .unwrap();
    let last = store.operations(&OperationFilter::default(), 600, usize::MAX).unwrap();
    assert_eq!(last.iter().map(|operation| operation.seq).collect::<Vec<_>>(), [601, 602]);
}

// ---------------------------------------------------------------------------------------------------
// Group commit

/// Every thread drives its own instance through `n_commits` batches (a start, then variable changes),
/// each with one operation-log entry, all through the one store at once. Returns the journeys.
fn commit_concurrently(store: &dyn Store, n_threads: usize, n_commits: usize) -> Vec<Journey> {
    let definition = definition();
    let keys: Vec<InstanceKey> = (0..n_threads).map(|_| store.next_instance_key().unwrap()).collect();
    std::thread::scope(|scope| {
        let threads: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(thread, &key)| {
                let definition = &definition;
                scope.spawn(move || {
                    let start = at("2027-01-04T09:00:00Z");
                    let with_operation = |mut batch: Batch, i: usize| {
                        batch.operations = vec![Operation {
                            seq: 0,
                            at: start,
                            actor: Actor::user(format!("worker-{thread}"), None),
                            kind: if i == 0 { OperationKind::Create } else { OperationKind::Update },
                            target: OperationTarget::Variable {
                                instance: key,
                                scope: Key(1),
                                name: "step".into(),
                            },
                            detail: Some(i.to_string()),
                        }];
                        batch
                    };
                    let (mut journey, batch) =
                        Journey::start(definition, key, &format!("APP-{thread}"), start);
                    store.commit(&with_operation(batch, 0)).unwrap();
                    for i in 1..n_commits {
                        let variables = VariableMap::from([("step".to_owned(), serde_json::json!(i))]);
                        let set = Command::SetVariables { scope: None, variables, local: false };
                        let batch = journey.step(definition, &set, start);
                        store.commit(&with_operation(batch, i)).unwrap();
                    }
                    journey
                })
            })
            .collect();
        threads.into_iter().map(|thread| thread.join().unwrap()).collect()
    })
}

/// Everything `commit_concurrently` wrote reads back, and the operation log is gapless.
fn check_concurrent_commits(store: &dyn Store, journeys: &[Journey], n_commits: usize) {
    for journey in journeys {
        let records = store.records(journey.key, 1, usize::MAX).unwrap();
        assert_eq!(records, journey.records);
        audit::verify_chain(journey.key, &records).unwrap();
        let stored = store.instance(journey.key).unwrap().unwrap();
        assert_eq!(stored.state, journey.state);
        assert_eq!(stored.meta, journey.meta);
    }
    let operations = store.operations(&OperationFilter::default(), 0, usize::MAX).unwrap();
    let seqs: Vec<u64> = operations.iter().map(|operation| operation.seq).collect();
    let n = (journeys.len() * n_commits) as u64;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "sequence numbers are unique and gapless");
    for thread in 0..journeys.len() {
        let filter = OperationFilter { user: Some(format!("worker-{thread}")), ..OperationFilter::default() };
        let details: Vec<String> = store
            .operations(&filter, 0, usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|operation| operation.detail)
            .collect();
        let expected: Vec<String> = (0..n_commits).map(|i| i.to_string()).collect();
        assert_eq!(details, expected, "worker {thread}'s operations in its commit order");
    }
}

const N_THREADS: usize = 16;
const N_COMMITS: usize = 50;

fn concurrent_commits_share_flushes_and_lose_nothing(mut backend: Backend) {
    // Reserves the block of keys the threads' instances come from, so no reservation is counted below.
    backend.store().next_instance_key().unwrap();
    let before = backend.commit_stats();
    let journeys = commit_concurrently(backend.store(), N_THREADS, N_COMMITS);
    let after = backend.commit_stats();
    let n_commits = after.n_commits - before.n_commits;
    let n_flushes = after.n_flushes - before.n_flushes;
    assert_eq!(n_commits, (N_THREADS * N_COMMITS) as u64, "{before:?} → {after:?}");
    assert!(n_flushes >= 1 && n_flushes <= n_commits, "{before:?} → {after:?}");
    if matches!(backend, Backend::Sled { .. }) {
        assert!(n_flushes < n_commits, "concurrent commits share flushes: {before:?} → {after:?}");
    }
    check_concurrent_commits(backend.store(), &journeys, N_COMMITS);
    backend.restart();
    check_concurrent_commits(backend.store(), &journeys, N_COMMITS);
}

fn commits_without_grouping<K: Kv>(store: &KvStore<K>) {
    let before = store.commit_stats();
    let journeys = commit_concurrently(store, 8, 20);
    let after = store.commit_stats();
    check_concurrent_commits(store, &journeys, 20);
    let n_commits = after.n_commits - before.n_commits;
    assert_eq!(n_commits, 8 * 20 + 1, "the commits and one key reservation: {before:?} → {after:?}");
    assert_eq!(after.n_flushes - before.n_flushes, n_commits, "each its own flush: {before:?} → {after:?}");
}

#[test]
fn sled_without_group_commit_flushes_every_commit_on_its_own() {
    let dir = TestDir::new("store-contract", "no-group");
    let config = CommitConfig { group: false, window: std::time::Duration::ZERO, ..CommitConfig::default() };
    commits_without_grouping(&open_sled_with(&dir.0, config).unwrap());
}

#[test]
fn memory_without_group_commit_flushes_every_commit_on_its_own() {
    let config = CommitConfig { group: false, window: std::time::Duration::ZERO, ..CommitConfig::default() };
    commits_without_grouping(&KvStore::open_with(MemoryKv::default(), "memory", config).unwrap());
}

#[test]
fn sled_group_commit_with_a_window_loses_nothing() {
    let dir = TestDir::new("store-contract", "window");
    let config =
        CommitConfig { group: true, window: std::time::Duration::from_millis(1), ..CommitConfig::default() };
    let store = open_sled_with(&dir.0, config).unwrap();
    let journeys = commit_concurrently(&store, 8, 10);
    check_concurrent_commits(&store, &journeys, 10);
    let stats = store.commit_stats();
    assert_eq!(stats.n_commits, 8 * 10 + 1);
    assert!(stats.n_flushes < stats.n_commits, "{stats:?}");
}

// ---------------------------------------------------------------------------------------------------
// Instance keys in blocks

fn reserved_instance_keys(backend: &Backend) -> u64 {
    let bytes = backend.kv().get(Tree::Meta, keys::NEXT_INSTANCE).unwrap().expect("a reservation is stored");
    keys::read_u64(&bytes, 0).unwrap()
}

fn instance_keys_are_reserved_in_blocks_and_a_restart_skips_ahead(mut backend: Backend) {
    let before = backend.commit_stats();
    let first: Vec<InstanceKey> = (0..2000).map(|_| backend.store().next_instance_key().unwrap()).collect();
    let after = backend.commit_stats();
    assert!(first.windows(2).all(|pair| pair[0].0 + 1 == pair[1].0), "one run hands out consecutive keys");
    let n_reservations = after.n_commits - before.n_commits;
    assert!((1..=4).contains(&n_reservations), "2000 keys took {n_reservations} durable writes");
    let last = *first.last().unwrap();
    let reserved = reserved_instance_keys(&backend);
    assert!(reserved > last.0, "the key handed out ({last}) is reserved durably (up to {reserved})");

    let mut previous = last;
    for _ in 0..3 {
        let reserved = reserved_instance_keys(&backend);
        backend.restart();
        let next = backend.store().next_instance_key().unwrap();
        assert!(next > previous, "{next} after {previous}");
        if matches!(backend, Backend::Sled { .. }) {
            // The unused rest of the block is skipped, never handed out again.
            assert!(
                next.0 >= reserved,
                "{next} is inside the block reserved before the restart ({reserved})"
            );
        }
        previous = next;
    }
}

// ---------------------------------------------------------------------------------------------------
// sled on disk

#[test]
fn sled_refuses_a_store_of_another_format_version_naming_path_and_versions() {
    let dir = TestDir::new("store-contract", "format");
    drop(open_sled(&dir.0).unwrap());
    {
        // Pins the on-disk layout too: sled's default tree, the `meta` prefix byte, key `format_version`,
        // a big-endian u32.
        let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
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
    let dir = TestDir::new("store-contract", "malformed");
    drop(open_sled(&dir.0).unwrap());
    let kv = SledKv::open(&dir.0).unwrap();
    kv.apply(vec![Write::Put(Tree::Meta, keys::FORMAT_VERSION.to_vec(), b"v1".to_vec())]).unwrap();
    drop(kv);
    assert!(matches!(open_sled(&dir.0), Err(StoreError::Corrupt(_))));
}

#[test]
fn sled_fails_with_a_backend_error_naming_the_path_when_a_file_is_in_the_way() {
    let dir = TestDir::new("store-contract", "file");
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
    let dir = TestDir::new("store-contract", "open-twice");
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
    LastBefore(Tree, Option<Vec<u8>>),
    /// Drop the sled database and open it again from its directory.
    Restart,
    /// Close it as `kill -9` would leave it (what sled has not applied is only in the log), and open it.
    Crash,
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

/// Runs `ops` on a fresh sled directory and on the model; after every step every tree must match. The
/// overlay in front of sled is frozen every `overlay_entries` keys.
fn sled_matches_model(ops: &[Op], overlay_entries: usize) -> Result<(), TestCaseError> {
    let dir = TestDir::new("store-contract", "prop");
    let limits = OverlayLimits { entries: overlay_entries, ..OverlayLimits::default() };
    let mut kv = Some(SledKv::open_with(&dir.0, limits).unwrap());
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
            Op::LastBefore(tree, before) => {
                let expected = model.get(tree).and_then(|map| match before {
                    Some(before) => map.range(..before.clone()).next_back(),
                    None => map.iter().next_back(),
                });
                let expected = expected.map(|(key, value)| (key.clone(), value.clone()));
                let found = sled.last_before(*tree, before.as_deref()).unwrap();
                prop_assert_eq!(found, expected, "step {}: {:?}", step, op);
            }
            Op::Restart => {
                // Close before opening again: sled locks its directory.
                drop(kv.take());
                kv = Some(SledKv::open_with(&dir.0, limits).unwrap());
            }
            Op::Crash => {
                kv.take().unwrap().close_as_if_killed();
                kv = Some(SledKv::open_with(&dir.0, limits).unwrap());
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

fn small_key() -> impl Strategy<Value = Vec<u8>> + Clone {
    // Few distinct, short keys, with 0x00 and 0xff, so puts, deletes and bounds collide often.
    prop::collection::vec(prop::sample::select(vec![0_u8, 1, 2, 0xff]), 0..3)
}

/// A key shaped like a record key (instance u64, sequence number u64), from a small space, so record
/// pointers of one instance land next to each other in an overlay and sled packs them into runs; and
/// sometimes an instance alone, as a bound that falls between runs.
fn record_key() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop_oneof![
        4 => (0_u64..3, 0_u64..8).prop_map(|(instance, seq)| [instance.to_be_bytes(), seq.to_be_bytes()].concat()),
        1 => (0_u64..4).prop_map(|instance| instance.to_be_bytes().to_vec()),
    ]
}

fn any_key() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop_oneof![small_key(), record_key()]
}

fn some_tree() -> impl Strategy<Value = Tree> + Clone {
    // Records: values in the log, pointers in sled.
    prop::sample::select(vec![Tree::Meta, Tree::Records, Tree::Jobs, Tree::Outbox])
}

fn write_in(
    tree: impl Strategy<Value = Tree> + Clone,
    key: impl Strategy<Value = Vec<u8>> + Clone,
) -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => (tree.clone(), key.clone(), prop::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(tree, key, value)| Write::Put(tree, key, value)),
        2 => (tree, key).prop_map(|(tree, key)| Write::Delete(tree, key)),
    ]
}

fn op_in(
    tree: impl Strategy<Value = Tree> + Clone,
    key: impl Strategy<Value = Vec<u8>> + Clone,
) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => prop::collection::vec(write_in(tree.clone(), key.clone()), 0..6).prop_map(Op::Apply),
        1 => (tree.clone(), key.clone()).prop_map(|(tree, key)| Op::Get(tree, key)),
        2 => (tree.clone(), key.clone(), prop::option::of(key.clone()), prop_oneof![0_usize..4, Just(usize::MAX)])
            .prop_map(|(tree, from, to, limit)| Op::Scan { tree, from, to, limit }),
        1 => (tree, prop::option::of(key)).prop_map(|(tree, before)| Op::LastBefore(tree, before)),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    op_in(some_tree(), any_key())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn sled_kv_matches_a_btreemap_across_restarts(
        ops in prop::collection::vec(op(), 1..32),
        overlay_entries in prop_oneof![1_usize..6, Just(OverlayLimits::default().entries)],
    ) {
        sled_matches_model(&ops, overlay_entries)?;
    }

    /// Record pointers only, of three instances: sled packs adjacent ones into runs, and later writes and
    /// deletes land inside runs, before and after them, across restarts and crashes.
    #[test]
    fn sled_record_pointers_packed_into_runs_match_a_btreemap(
        ops in prop::collection::vec(op_in(Just(Tree::Records), record_key()), 1..40),
        overlay_entries in prop_oneof![2_usize..8, Just(OverlayLimits::default().entries)],
    ) {
        sled_matches_model(&ops, overlay_entries)?;
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
        sled_matches_model(&ops, OverlayLimits::default().entries).unwrap();
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
    let dir = TestDir::new("store-contract", "crash");
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

/// The record values of `instance` exactly as sled holds them (pointers into the record log, or inline).
fn raw_records(db: &sled::Db, instance: InstanceKey) -> Vec<(sled::IVec, sled::IVec)> {
    db.scan_prefix([&[Tree::Records.prefix()][..], &instance.0.to_be_bytes()].concat())
        .map(Result::unwrap)
        .collect()
}

/// The record pointers of `instance` in sled, packed runs unpacked: (last sequence number of the batch,
/// offset, length). A pointer is tag 0xc1, offset u64, length u32; a packed run is tag 0xc1, count u32,
/// then per entry sequence number u64, offset u64, length u32, stored under its last entry's key.
fn raw_pointers(db: &sled::Db, instance: InstanceKey) -> Vec<(u64, u64, u64)> {
    let mut pointers = Vec::new();
    for (key, value) in raw_records(db, instance) {
        assert_eq!(value[0], 0xc1, "a pointer or a packed run");
        let seq = u64::from_be_bytes(key[9..17].try_into().unwrap());
        let offset = u64::from_be_bytes(value[1..9].try_into().unwrap());
        if value.len() == 13 {
            pointers.push((seq, offset, u64::from(u32::from_be_bytes(value[9..13].try_into().unwrap()))));
            continue;
        }
        let count = u32::from_be_bytes(value[1..5].try_into().unwrap()) as usize;
        assert_eq!(value.len(), 5 + 20 * count, "a packed run of {count}");
        for entry in value[5..].chunks(20) {
            let offset = u64::from_be_bytes(entry[8..16].try_into().unwrap());
            let len = u64::from(u32::from_be_bytes(entry[16..20].try_into().unwrap()));
            pointers.push((u64::from_be_bytes(entry[..8].try_into().unwrap()), offset, len));
        }
        assert_eq!(pointers.last().unwrap().0, seq, "a run is stored under its last entry's key");
    }
    pointers
}

/// The (start, length) of every frame of the record log from offset `from` to its end, read from the
/// frames' headers (payload length u32, CRC-32 u32); panics unless they end exactly at the end.
fn frames_from(log: &[u8], from: u64) -> Vec<(u64, u64)> {
    let mut frames = Vec::new();
    let mut at = usize::try_from(from).unwrap();
    while at < log.len() {
        let payload = u32::from_be_bytes(log[at..at + 4].try_into().unwrap()) as usize;
        assert!(payload > 0, "an empty frame at {at}");
        frames.push((at as u64, (8 + payload) as u64));
        at += 8 + payload;
    }
    assert_eq!(at, log.len(), "the frames end where the log ends");
    frames
}

/// The log offset sled has applied up to.
fn applied_offset(db: &sled::Db) -> u64 {
    u64::from_be_bytes(db.get(APPLIED_KEY).unwrap().unwrap().as_ref().try_into().unwrap())
}

#[test]
fn sled_keeps_record_batches_in_the_record_log_and_only_pointers_in_sled() {
    let dir = TestDir::new("store-contract", "record-log");
    let definition = definition();
    let deployment = deployment("verify", 1);
    let (key, journey) = {
        let store = open_sled(&dir.0).unwrap();
        store.put_deployments(std::slice::from_ref(&deployment), vec![creation(&deployment)]).unwrap();
        let key = store.next_instance_key().unwrap();
        let (mut journey, first) = Journey::start(&definition, key, "APP-10", at("2027-01-06T09:00:00Z"));
        store.commit(&first).unwrap();
        let second = journey.complete(&definition, "verify-id", at("2027-01-06T09:10:00Z"));
        store.commit(&second).unwrap();
        (key, journey)
    };
    let log_len = std::fs::metadata(dir.0.join("records.log")).unwrap().len();
    {
        let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
        assert_eq!(raw_records(&db, key).len(), 1, "the instance's two batches packed into one sled value");
        let pointers = raw_pointers(&db, key);
        assert_eq!(pointers.len(), 2, "one pointer per committed batch");
        assert!(pointers[0].0 < pointers[1].0, "in sequence order");
        assert_eq!(pointers[1].0, journey.records.last().unwrap().seq, "keyed by each batch's last record");
        // The two batches, in their frames one after the other, inside the log.
        let mut pointed = 0;
        for (_, offset, len) in &pointers {
            assert!(*offset >= pointed, "the second batch lies after the first");
            pointed = offset + len;
        }
        assert!(pointed <= log_len);
        assert_eq!(applied_offset(&db), log_len, "closed cleanly: sled holds every frame of the log");
        // The deployment and the operation-log entry stay in sled.
        for tree in [Tree::Deployments, Tree::Operations] {
            let entries: Vec<_> = db.scan_prefix([tree.prefix()]).map(Result::unwrap).collect();
            assert!(entries.len() == 1 && entries[0].1.len() > 13, "{}", tree.name());
        }
    }
    // Read back through the store, after a restart: every record, chained, folding to the state.
    let store = open_sled(&dir.0).unwrap();
    let records = store.records(key, 1, usize::MAX).unwrap();
    assert_eq!(records, journey.records);
    audit::verify_chain(key, &records).unwrap();
    assert_eq!(store.instance(key).unwrap().unwrap().state, journey.state);
    let logged = store.operations(&OperationFilter::default(), 0, 10).unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!((logged[0].seq, &logged[0].target), (1, &creation(&deployment).target));
}

/// A sled store in `dir` with one instance started (its first batch committed), closed again.
fn one_started_instance(
    dir: &std::path::Path,
    definition: &ProcessDefinition,
    business_key: &str,
) -> InstanceKey {
    let store = open_sled(dir).unwrap();
    let key = store.next_instance_key().unwrap();
    let (_, first) = Journey::start(definition, key, business_key, at("2027-01-06T09:00:00Z"));
    store.commit(&first).unwrap();
    key
}

#[test]
fn sled_cuts_a_torn_append_off_the_log_and_appends_after_the_last_frame() {
    let dir = TestDir::new("store-contract", "record-log-tail");
    let definition = definition();
    let key = one_started_instance(&dir.0, &definition, "APP-11");
    // A crash in the middle of an append: bytes that are no whole frame (never acknowledged).
    let log = dir.0.join("records.log");
    let before = std::fs::metadata(&log).unwrap().len();
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(&[0xde; 1000]).unwrap();
    drop(file);
    let store = open_sled(&dir.0).unwrap();
    assert_eq!(std::fs::metadata(&log).unwrap().len(), before, "the torn end is cut off at the open");
    let other = store.next_instance_key().unwrap();
    let (journey, first) = Journey::start(&definition, other, "APP-12", at("2027-01-06T09:05:00Z"));
    store.commit(&first).unwrap();
    assert_eq!(store.records(other, 1, usize::MAX).unwrap(), journey.records);
    audit::verify_chain(key, &store.records(key, 1, usize::MAX).unwrap()).unwrap();
    drop(store);
    // The new frames start where the torn bytes did, and the new batch lies inside the last of them.
    let frames = frames_from(&std::fs::read(&log).unwrap(), before);
    let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
    let offset = u64::from_be_bytes(raw_records(&db, other)[0].1[1..9].try_into().unwrap());
    let (last, len) = *frames.last().unwrap();
    assert!(offset > last && offset < last + len, "the batch at {offset} lies in the frame at {last}");
}

#[test]
fn sled_cuts_a_zero_filled_end_of_the_log_off() {
    let dir = TestDir::new("store-contract", "record-log-zeros");
    let definition = definition();
    let key = one_started_instance(&dir.0, &definition, "APP-19");
    // A crash after the file grew and before its blocks were written: zeros, which are no frame (an empty
    // frame's checksum would match).
    let log = dir.0.join("records.log");
    let before = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(before + 4096).unwrap();
    let store = open_sled(&dir.0).unwrap();
    assert_eq!(std::fs::metadata(&log).unwrap().len(), before);
    audit::verify_chain(key, &store.records(key, 1, usize::MAX).unwrap()).unwrap();
}

#[test]
fn sled_refuses_a_log_with_a_bad_frame_before_good_ones_naming_the_offset() {
    let dir = TestDir::new("store-contract", "record-log-middle");
    let definition = definition();
    let deployment = deployment("verify", 1);
    let applied_before = {
        let store = open_sled(&dir.0).unwrap();
        store.put_deployments(std::slice::from_ref(&deployment), vec![creation(&deployment)]).unwrap();
        let applied_before = std::fs::metadata(dir.0.join("records.log")).unwrap().len();
        for business_key in ["APP-20", "APP-21"] {
            let key = store.next_instance_key().unwrap();
            let (_, first) = Journey::start(&definition, key, business_key, at("2027-01-06T09:00:00Z"));
            store.commit(&first).unwrap();
        }
        applied_before
    };
    // A crash left sled behind the log, and a byte of the first frame it must replay went bad.
    let log = dir.0.join("records.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let frames = frames_from(&bytes, applied_before);
    assert!(frames.len() >= 2, "frames after the bad one: {frames:?}");
    let (start, _) = frames[0];
    bytes[usize::try_from(start).unwrap() + 12] ^= 0x01;
    std::fs::write(&log, &bytes).unwrap();
    {
        let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
        db.insert(APPLIED_KEY, &applied_before.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    match open_sled(&dir.0) {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains(&format!("corrupt at offset {start}")), "{message}");
            assert!(message.contains("fails its checksum"), "{message}");
        }
        Err(other) => panic!("expected a corrupt-store error, got {other:?}"),
        Ok(_) => panic!("opened a log with a bad frame before good ones"),
    }
    assert_eq!(std::fs::read(&log).unwrap(), bytes, "nothing was cut off");
}

#[test]
fn sled_ignores_a_stale_applied_offset_in_a_store_a_build_before_the_framed_log_wrote_to() {
    let dir = TestDir::new("store-contract", "record-log-stale");
    let definition = definition();
    let key = one_started_instance(&dir.0, &definition, "APP-22");
    // Rolled back to a format-4 build after an upgrade: it marks the store 4 again and appends unframed
    // record values the offset sled recorded knows nothing of.
    let log = dir.0.join("records.log");
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.write_all(&[0x93; 100]).unwrap();
    drop(file);
    let len = std::fs::metadata(&log).unwrap().len();
    {
        let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
        let version_key = [&[Tree::Meta.prefix()][..], keys::FORMAT_VERSION].concat();
        db.insert(version_key, &4_u32.to_be_bytes()).unwrap();
        db.insert(APPLIED_KEY, &0_u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = open_sled(&dir.0).unwrap();
    audit::verify_chain(key, &store.records(key, 1, usize::MAX).unwrap()).unwrap();
    drop(store);
    let log_bytes = std::fs::read(&log).unwrap();
    assert!(log_bytes.len() as u64 > len && log_bytes[..len as usize].ends_with(&[0x93; 100]), "not cut");
    let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
    assert!(applied_offset(&db) >= len, "frames start after the old build's bytes");
}

#[test]
fn sled_replays_the_frames_sled_had_not_applied_when_the_process_died() {
    let dir = TestDir::new("store-contract", "record-log-replay");
    let definition = definition();
    let deployment = deployment("verify", 1);
    let (key, journey, applied_before) = {
        let store = open_sled(&dir.0).unwrap();
        store.put_deployments(std::slice::from_ref(&deployment), vec![creation(&deployment)]).unwrap();
        let applied_before = std::fs::metadata(dir.0.join("records.log")).unwrap().len();
        let key = store.next_instance_key().unwrap();
        let (mut journey, first) = Journey::start(&definition, key, "APP-18", at("2027-01-06T09:00:00Z"));
        store.commit(&first).unwrap();
        let second = journey.complete(&definition, "verify-id", at("2027-01-06T09:10:00Z"));
        store.commit(&second).unwrap();
        (key, journey, applied_before)
    };
    {
        // As a process killed before its applier ran would leave sled: without the instance's writes and
        // with the applied offset before them.
        let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
        for tree in
            [Tree::Records, Tree::Instances, Tree::ByProcess, Tree::ByStatus, Tree::ByStart, Tree::Jobs]
        {
            for entry in db.scan_prefix([tree.prefix()]) {
                db.remove(entry.unwrap().0).unwrap();
            }
        }
        db.insert(APPLIED_KEY, &applied_before.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = open_sled(&dir.0).unwrap();
    let records = store.records(key, 1, usize::MAX).unwrap();
    assert_eq!(records, journey.records);
    audit::verify_chain(key, &records).unwrap();
    assert_eq!(store.instance(key).unwrap().unwrap().state, journey.state);
    let listed = store.instances(&by_process(&definition.process_id.0, None), None, 10).unwrap();
    assert_eq!(listed.iter().map(|meta| meta.key).collect::<Vec<_>>(), [key], "the indexes are back too");
    drop(store);
    let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
    assert_eq!(raw_pointers(&db, key).len(), 2, "replayed into sled");
    assert_eq!(raw_records(&db, key).len(), 1, "as one packed run");
}

#[test]
fn sled_opens_a_format_2_store_with_inline_records_and_upgrades_it() {
    let dir = TestDir::new("store-contract", "format-2");
    let definition = definition();
    let (key, mut journey) = {
        let store = open_sled(&dir.0).unwrap();
        let key = store.next_instance_key().unwrap();
        let (journey, first) = Journey::start(&definition, key, "APP-13", at("2027-01-06T09:00:00Z"));
        store.commit(&first).unwrap();
        (key, journey)
    };
    {
        // Rewrite it as a build before the record log left it: records inline, format 2, no record log.
        let log = std::fs::read(dir.0.join("records.log")).unwrap();
        let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
        for (raw_key, value) in raw_records(&db, key) {
            let offset = usize::try_from(u64::from_be_bytes(value[1..9].try_into().unwrap())).unwrap();
            let len = usize::try_from(u32::from_be_bytes(value[9..13].try_into().unwrap())).unwrap();
            db.insert(raw_key, &log[offset..offset + len]).unwrap();
        }
        let version_key = [&[Tree::Meta.prefix()][..], keys::FORMAT_VERSION].concat();
        db.insert(version_key, &2_u32.to_be_bytes()).unwrap();
        db.remove(APPLIED_KEY).unwrap();
        db.flush().unwrap();
        drop(db);
        std::fs::remove_file(dir.0.join("records.log")).unwrap();
    }
    let store = open_sled(&dir.0).unwrap();
    assert_eq!(store.records(key, 1, usize::MAX).unwrap(), journey.records, "inline records still read");
    let second = journey.complete(&definition, "verify-id", at("2027-01-06T09:10:00Z"));
    store.commit(&second).unwrap();
    assert_eq!(store.records(key, 1, usize::MAX).unwrap(), journey.records, "inline and logged, in order");
    assert_eq!(store.instance(key).unwrap().unwrap().state, journey.state);
    drop(store);
    let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
    let version_key = [&[Tree::Meta.prefix()][..], keys::FORMAT_VERSION].concat();
    assert_eq!(db.get(version_key).unwrap().unwrap(), STORE_FORMAT_VERSION.to_be_bytes(), "marked upgraded");
    let kinds: Vec<bool> = raw_records(&db, key).iter().map(|(_, value)| value.len() == 13).collect();
    assert_eq!(kinds, [false, true], "the old batch stays inline; the new one is in the log");
}

/// The seqs that key the raw operation-log entries of a sled store.
fn raw_operation_keys(dir: &std::path::Path) -> Vec<u64> {
    let db = govflow_engine::store::sled::open_db(dir).unwrap();
    db.scan_prefix([Tree::Operations.prefix()])
        .map(|entry| keys::read_u64(&entry.unwrap().0, 1).unwrap())
        .collect()
}

/// `operations` numbered from 1, as the store numbers them.
fn sequenced<'a>(operations: impl Iterator<Item = &'a Operation>) -> Vec<Operation> {
    operations.zip(1..).map(|(operation, seq)| Operation { seq, ..operation.clone() }).collect()
}

/// `n` operations creating variables `field0`.. of instance `key`, as one start would log them.
fn variables_created(key: InstanceKey, n: usize) -> Vec<Operation> {
    (0..n)
        .map(|i| {
            let name = format!("field{i}");
            operation(
                "2027-01-06T09:00:00Z",
                "registrar-1",
                OperationKind::Create,
                variable_target(key, &name),
                "s",
            )
        })
        .collect()
}

#[test]
fn sled_splits_a_flush_of_operations_by_count_and_by_size() {
    let dir = TestDir::new("store-contract", "operation-entries");
    let definition = definition();
    let key = InstanceKey(1);
    let (mut journey, mut first) = Journey::start(&definition, key, "APP-16", at("2027-01-06T09:00:00Z"));
    first.operations = variables_created(key, 600);
    // Then ten operations with 20 KB details each: more than one entry of at most 64 KiB holds them.
    let mut second = journey.complete(&definition, "verify-id", at("2027-01-06T09:10:00Z"));
    second.operations = (0..10)
        .map(|i| {
            let detail = format!("{i}").repeat(20_000);
            operation("2027-01-06T09:10:00Z", "clerk-2", OperationKind::Update, instance_target(key), &detail)
        })
        .collect();
    {
        let store = open_sled(&dir.0).unwrap();
        store.commit(&first).unwrap();
        store.commit(&second).unwrap();
        let expected = sequenced(first.operations.iter().chain(&second.operations));
        assert_eq!(store.operations(&OperationFilter::default(), 0, usize::MAX).unwrap(), expected);
    }
    let keys = raw_operation_keys(&dir.0);
    assert_eq!(keys[..3], [256, 512, 600], "600 operations of one flush: entries of 256");
    assert_eq!(keys.last(), Some(&610));
    assert!(keys.len() >= 3 + 4, "10 operations of 20 KB: at least 4 entries, got keys {keys:?}");
    let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
    for entry in db.scan_prefix([Tree::Operations.prefix()]) {
        let value = entry.unwrap().1;
        let operations: Vec<Operation> = rmp_serde::from_slice(&value).unwrap();
        assert!(value.len() <= 64 * 1024 || operations.len() == 1, "an entry of {} bytes", value.len());
    }
}

#[test]
fn sled_reports_an_unreadable_operation_log_entry_naming_it() {
    let dir = TestDir::new("store-contract", "operation-entry-corrupt");
    let definition = definition();
    let key = InstanceKey(1);
    let (_, mut first) = Journey::start(&definition, key, "APP-17", at("2027-01-06T09:00:00Z"));
    first.operations = variables_created(key, 3);
    open_sled(&dir.0).unwrap().commit(&first).unwrap();
    {
        let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
        let raw_key = [&[Tree::Operations.prefix()][..], &keys::operation(3)].concat();
        assert!(db.get(&raw_key).unwrap().is_some(), "one entry, keyed by its last seq");
        db.insert(raw_key, &[0x93, 0xc1, 0xc1, 0xc1]).unwrap();
        db.flush().unwrap();
    }
    let store = open_sled(&dir.0).unwrap();
    let error = store.operations(&OperationFilter::default(), 0, usize::MAX).unwrap_err().to_string();
    assert!(error.contains("the operation-log entry ending at 3"), "{error}");
}

#[test]
fn sled_opens_a_format_3_store_with_one_operation_per_entry_and_upgrades_it() {
    let dir = TestDir::new("store-contract", "format-3");
    let definition = definition();
    let key = InstanceKey(1);
    let (mut journey, mut first) = Journey::start(&definition, key, "APP-15", at("2027-01-06T09:00:00Z"));
    first.operations = variables_created(key, 3);
    open_sled(&dir.0).unwrap().commit(&first).unwrap();
    {
        // Rewrite it as format 3 left it: each operation its own entry, keyed by its seq.
        let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
        let prefix = [Tree::Operations.prefix()];
        let entries: Vec<(sled::IVec, sled::IVec)> = db.scan_prefix(prefix).map(Result::unwrap).collect();
        assert_eq!(entries.len(), 1, "format 4 keeps one flush's operations in one entry");
        let operations: Vec<Operation> = rmp_serde::from_slice(&entries[0].1).unwrap();
        db.remove(&entries[0].0).unwrap();
        for operation in &operations {
            let raw_key = [&prefix[..], &keys::operation(operation.seq)].concat();
            db.insert(raw_key, rmp_serde::to_vec_named(operation).unwrap()).unwrap();
        }
        let version_key = [&[Tree::Meta.prefix()][..], keys::FORMAT_VERSION].concat();
        db.insert(version_key, &3_u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = open_sled(&dir.0).unwrap();
    let mut second = journey.complete(&definition, "verify-id", at("2027-01-06T09:10:00Z"));
    second.operations = vec![operation(
        "2027-01-06T09:10:00Z",
        "clerk-2",
        OperationKind::Update,
        instance_target(key),
        "waiting",
    )];
    store.commit(&second).unwrap();
    let expected = sequenced(first.operations.iter().chain(&second.operations));
    assert_eq!(store.operations(&OperationFilter::default(), 0, usize::MAX).unwrap(), expected);
    assert_eq!(every_operation_page(&store, &OperationFilter::default(), 1), expected);
    assert_eq!(store.operations(&OperationFilter::default(), 2, usize::MAX).unwrap(), expected[2..]);
    drop(store);
    let db = govflow_engine::store::sled::open_db(&dir.0).unwrap();
    let version_key = [&[Tree::Meta.prefix()][..], keys::FORMAT_VERSION].concat();
    assert_eq!(db.get(version_key).unwrap().unwrap(), STORE_FORMAT_VERSION.to_be_bytes(), "marked upgraded");
}

#[test]
fn sled_refuses_a_record_log_cut_short_naming_the_offsets() {
    let dir = TestDir::new("store-contract", "record-log-short");
    let definition = definition();
    let key = one_started_instance(&dir.0, &definition, "APP-14");
    let log = dir.0.join("records.log");
    let len = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(len / 2).unwrap();
    match open_sled(&dir.0) {
        Err(StoreError::Corrupt(message)) => {
            let expected = format!("ends at offset {}, before offset {len} that sled has applied", len / 2);
            assert!(message.contains(&expected), "{message}");
        }
        Err(other) => panic!("expected a corrupt-store error, got {other:?}"),
        Ok(store) => {
            panic!("opened a store whose log was cut short: {:?}", store.records(key, 1, usize::MAX))
        }
    }
}

/// The stable log position of sled's newest snapshot in `dir` (file `snap.` and 16 hex digits), 0 if none.
fn snapshot_lsn(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_prefix("snap.")?, 16).ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn sled_writes_a_fresh_snapshot_at_a_clean_close_after_much_writing() {
    // sled 0.34 writes its snapshot only when it opens; a close after a session that appended at least
    // `snapshot_after_log_bytes` to the log reopens it, so the next start replays nothing of that session.
    let session = |dir: &Path, snapshot_after_log_bytes: u64| {
        let limits = OverlayLimits { snapshot_after_log_bytes, ..OverlayLimits::default() };
        let kv = SledKv::open_with(dir, limits).unwrap();
        let at_open = snapshot_lsn(dir);
        for i in 0..64u32 {
            kv.apply(vec![Write::Put(Tree::Meta, i.to_be_bytes().to_vec(), vec![i as u8; 16 << 10])])
                .unwrap();
        }
        drop(kv);
        (at_open, snapshot_lsn(dir))
    };
    let dir = TestDir::new("store-contract", "snapshot-on-close");
    let (at_open, at_close) = session(&dir.0, 1 << 20);
    assert!(at_close > at_open, "1 MiB written: a fresh snapshot at close ({at_open:X} → {at_close:X})");
    let (at_open, at_close) = session(&dir.0, u64::MAX);
    assert_eq!(at_close, at_open, "below the threshold the close leaves sled's snapshot alone");
    let kv = SledKv::open(&dir.0).unwrap();
    assert_eq!(kv.get(Tree::Meta, &63u32.to_be_bytes()).unwrap(), Some(vec![63; 16 << 10]));
}
