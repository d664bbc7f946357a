//! The engine's API over every store backend (memory and sled), with a manual clock: publishing messages
//! (once per process, message start events, buffering with a time to live, de-duplication), enabling,
//! disabling and deleting definitions, the operation log, call activities and signals — and every instance
//! these tests touch verifies (chain and replay). It must never sleep (time moves only by the manual clock),
//! touch the default store location or depend on test order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDir;
use std::sync::Arc;

use chrono::{DateTime, Duration, FixedOffset};
use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, EngineError, ManualClock, Message, Published};
use govflow_engine::runtime::{Command, IncidentKind, InstanceKey, InstanceStatus, VariableMap};
use govflow_engine::store::kv::KvStore;
use govflow_engine::store::memory::{memory_store, MemoryKv};
use govflow_engine::store::sled::{open_sled, SledKv};
use govflow_engine::store::{
    InstanceFilter, Operation, OperationFilter, OperationKind, OperationTarget, Store, StoreError,
};
use serde_json::json;

// ---------------------------------------------------------------------------------------------------
// Backends

/// An engine under test with its clock. Fields drop in order: the engine (and its store) before the
/// directory it lives in.
struct Harness<S: Store> {
    engine: Engine<S>,
    clock: Arc<ManualClock>,
    _dir: Option<TestDir>,
}

fn start_of_day() -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2027-01-04T09:00:00+03:00").unwrap()
}

impl Harness<KvStore<MemoryKv>> {
    fn memory() -> Self {
        let clock = Arc::new(ManualClock::new(start_of_day()));
        let engine = Engine::open(memory_store().unwrap(), clock.clone()).unwrap();
        Harness { engine, clock, _dir: None }
    }
}

impl Harness<KvStore<SledKv>> {
    fn sled(name: &str) -> Self {
        let dir = TestDir::new("engine-api", name);
        let clock = Arc::new(ManualClock::new(start_of_day()));
        let engine = Engine::open(open_sled(&dir.0).unwrap(), clock.clone()).unwrap();
        Harness { engine, clock, _dir: Some(dir) }
    }
}

/// Runs each named test (a `fn(Harness<S>)` generic over the store) once per backend.
macro_rules! for_every_backend {
    ($($test:ident),* $(,)?) => {
        mod on_memory {
            $( #[test] fn $test() { super::$test(super::Harness::memory()); } )*
        }
        mod on_sled {
            $( #[test] fn $test() { super::$test(super::Harness::sled(stringify!($test))); } )*
        }
    };
}

for_every_backend!(
    several_files_deploy_all_or_nothing,
    a_message_correlates_to_one_waiting_instance_per_process,
    a_message_starts_a_process_with_a_matching_message_start_event,
    a_buffered_message_reaches_a_later_subscription_until_its_time_to_live_ends,
    a_message_id_is_refused_while_its_message_is_buffered,
    a_disabled_definition_cannot_be_started,
    a_definition_in_use_cannot_be_deleted,
    a_deletion_racing_starts_never_leaves_an_instance_without_its_definition,
    a_refused_deletion_of_the_latest_version_never_sends_starts_to_an_older_one,
    the_operation_log_records_who_changed_definitions_instances_and_variables,
    a_call_activity_starts_a_child_and_completes_when_it_does,
    a_call_activity_to_a_missing_process_raises_an_incident,
    a_signal_reaches_every_waiting_instance,
    regression_a_message_id_is_free_once_its_message_expired_even_if_not_yet_removed,
    regression_a_time_to_live_out_of_range_is_refused_before_anything_correlates,
);

// ---------------------------------------------------------------------------------------------------
// Processes

/// Two processes waiting for the same message (correlated by `applicationId`), and one started by a
/// message.
const MESSAGES: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="engine-api-messages" targetNamespace="http://govflow.example/test">
  <bpmn:message id="msg-docs" name="documents-received">
    <bpmn:extensionElements><zeebe:subscription correlationKey="=applicationId" /></bpmn:extensionElements>
  </bpmn:message>
  <bpmn:message id="m" name="claim-filed" />
  <bpmn:process id="await-docs" isExecutable="true">
    <bpmn:startEvent id="ad-start" />
    <bpmn:sequenceFlow id="ad1" sourceRef="ad-start" targetRef="ad-wait" />
    <bpmn:intermediateCatchEvent id="ad-wait"><bpmn:messageEventDefinition messageRef="msg-docs" /></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="ad2" sourceRef="ad-wait" targetRef="ad-end" />
    <bpmn:endEvent id="ad-end" />
  </bpmn:process>
  <bpmn:process id="archive-docs" isExecutable="true">
    <bpmn:startEvent id="ar-start" />
    <bpmn:sequenceFlow id="ar1" sourceRef="ar-start" targetRef="ar-wait" />
    <bpmn:intermediateCatchEvent id="ar-wait"><bpmn:messageEventDefinition messageRef="msg-docs" /></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="ar2" sourceRef="ar-wait" targetRef="ar-end" />
    <bpmn:endEvent id="ar-end" />
  </bpmn:process>
  <bpmn:process id="claim" isExecutable="true">
    <bpmn:startEvent id="s"><bpmn:messageEventDefinition messageRef="m"/></bpmn:startEvent>
    <bpmn:sequenceFlow id="cl1" sourceRef="s" targetRef="assess" />
    <bpmn:serviceTask id="assess"><bpmn:extensionElements><zeebe:taskDefinition type="claims.assess" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="cl2" sourceRef="assess" targetRef="cl-end" />
    <bpmn:endEvent id="cl-end" />
  </bpmn:process>
</bpmn:definitions>
"#;

/// One service task: the smallest process that stays active until a worker completes it.
fn one_task(process_id: &str, job_type: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="engine-api-{process_id}" targetNamespace="http://govflow.example/test">
  <bpmn:process id="{process_id}" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:serviceTask id="work"><bpmn:extensionElements><zeebe:taskDefinition type="{job_type}" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"#
    )
}

/// A parent whose call activity starts `child`, and one whose call activity names a process nobody
/// deployed.
const CALLS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="engine-api-calls" targetNamespace="http://govflow.example/test">
  <bpmn:process id="parent" isExecutable="true">
    <bpmn:startEvent id="p-start" />
    <bpmn:sequenceFlow id="p1" sourceRef="p-start" targetRef="call-child" />
    <bpmn:callActivity id="call-child"><bpmn:extensionElements><zeebe:calledElement processId="child" /></bpmn:extensionElements></bpmn:callActivity>
    <bpmn:sequenceFlow id="p2" sourceRef="call-child" targetRef="p-end" />
    <bpmn:endEvent id="p-end" />
  </bpmn:process>
  <bpmn:process id="orphan" isExecutable="true">
    <bpmn:startEvent id="o-start" />
    <bpmn:sequenceFlow id="o1" sourceRef="o-start" targetRef="call-missing" />
    <bpmn:callActivity id="call-missing"><bpmn:extensionElements><zeebe:calledElement processId="never-deployed" /></bpmn:extensionElements></bpmn:callActivity>
    <bpmn:sequenceFlow id="o2" sourceRef="call-missing" targetRef="o-end" />
    <bpmn:endEvent id="o-end" />
  </bpmn:process>
</bpmn:definitions>
"#;

/// A process waiting for a signal, and one that throws it.
const SIGNALS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="engine-api-signals" targetNamespace="http://govflow.example/test">
  <bpmn:signal id="sig-open" name="registry-open" />
  <bpmn:process id="wait-signal" isExecutable="true">
    <bpmn:startEvent id="w-start" />
    <bpmn:sequenceFlow id="w1" sourceRef="w-start" targetRef="w-wait" />
    <bpmn:intermediateCatchEvent id="w-wait"><bpmn:signalEventDefinition signalRef="sig-open" /></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="w2" sourceRef="w-wait" targetRef="w-end" />
    <bpmn:endEvent id="w-end" />
  </bpmn:process>
  <bpmn:process id="throw-signal" isExecutable="true">
    <bpmn:startEvent id="t-start" />
    <bpmn:sequenceFlow id="t1" sourceRef="t-start" targetRef="t-announce" />
    <bpmn:intermediateThrowEvent id="t-announce"><bpmn:signalEventDefinition signalRef="sig-open" /></bpmn:intermediateThrowEvent>
    <bpmn:sequenceFlow id="t2" sourceRef="t-announce" targetRef="t-end" />
    <bpmn:endEvent id="t-end" />
  </bpmn:process>
</bpmn:definitions>
"#;

// ---------------------------------------------------------------------------------------------------
// Helpers

fn admin() -> Actor {
    Actor::user("admin-1", Some("Ministry of Interior".to_owned()))
}

fn registrar() -> Actor {
    Actor::user("registrar-1", Some("Civil Registry".to_owned()))
}

fn vars(value: serde_json::Value) -> VariableMap {
    serde_json::from_value(value).unwrap()
}

fn docs(application_id: &str) -> Message {
    Message {
        name: "documents-received".to_owned(),
        correlation_key: application_id.to_owned(),
        variables: vars(json!({"nDocuments": 3})),
        ..Message::default()
    }
}

/// Starts `process_id` waiting for documents of `application_id`.
fn waiting<S: Store>(h: &Harness<S>, process_id: &str, application_id: &str) -> InstanceKey {
    let variables = vars(json!({ "applicationId": application_id }));
    h.engine.start(process_id, variables, None, &registrar()).unwrap()
}

fn status<S: Store>(h: &Harness<S>, instance: InstanceKey) -> InstanceStatus {
    h.engine.instance(instance).unwrap().meta.status
}

/// The process-scope variables of an instance.
fn variables<S: Store>(h: &Harness<S>, instance: InstanceKey) -> VariableMap {
    let stored = h.engine.instance(instance).unwrap();
    stored.state.variables.get(&stored.state.root.unwrap()).cloned().unwrap_or_default()
}

/// Every stored instance verifies (its chain, and its replay equals its snapshot); returns how many.
fn verify_all<S: Store>(h: &Harness<S>) -> usize {
    let instances = h.engine.instances(&InstanceFilter::default(), None, usize::MAX).unwrap();
    for meta in &instances {
        let n_records = h.engine.verify(meta.key).unwrap();
        assert!(n_records > 0, "instance {} has records", meta.key);
    }
    instances.len()
}

/// Nothing is left to perform: every follow-up (child start, signal, parent notification) ran.
fn assert_outbox_empty<S: Store>(h: &Harness<S>) {
    assert_eq!(h.engine.store().outbox(usize::MAX).unwrap(), []);
}

// ---------------------------------------------------------------------------------------------------
// Messages

fn a_message_correlates_to_one_waiting_instance_per_process<S: Store>(h: Harness<S>) {
    h.engine.deploy("messages.bpmn", MESSAGES.as_bytes(), &admin()).unwrap();
    let first = waiting(&h, "await-docs", "APP-1");
    let second = waiting(&h, "await-docs", "APP-1");
    let archive = waiting(&h, "archive-docs", "APP-1");
    let elsewhere = waiting(&h, "await-docs", "APP-2");

    let published = h.engine.publish(docs("APP-1"), &registrar()).unwrap();
    assert_eq!(published, Published { correlated: vec![first, archive], started: vec![], buffered: None });
    assert_eq!(status(&h, first), InstanceStatus::Completed);
    assert_eq!(status(&h, archive), InstanceStatus::Completed);
    assert_eq!(status(&h, second), InstanceStatus::Active, "one instance per process takes a message");
    assert_eq!(status(&h, elsewhere), InstanceStatus::Active);
    assert_eq!(variables(&h, first)["nDocuments"], json!(3));

    // The next message goes to the instance still waiting; a third finds nobody and, without a time
    // to live, is gone.
    let published = h.engine.publish(docs("APP-1"), &registrar()).unwrap();
    assert_eq!(published.correlated, [second]);
    assert_eq!(status(&h, second), InstanceStatus::Completed);
    assert_eq!(h.engine.publish(docs("APP-1"), &registrar()).unwrap(), Published::default());
    assert_eq!(h.engine.store().messages("documents-received", "APP-1").unwrap(), []);
    assert_eq!(status(&h, elsewhere), InstanceStatus::Active);
    assert_eq!(verify_all(&h), 4);
}

fn a_message_starts_a_process_with_a_matching_message_start_event<S: Store>(h: Harness<S>) {
    h.engine.deploy("messages.bpmn", MESSAGES.as_bytes(), &admin()).unwrap();
    let claim = |key: &str| Message {
        name: "claim-filed".to_owned(),
        correlation_key: key.to_owned(),
        variables: vars(json!({"amount": 120})),
        ..Message::default()
    };
    let published = h.engine.publish(claim("C-7"), &registrar()).unwrap();
    assert_eq!(published.correlated, []);
    assert_eq!(published.buffered, None);
    let [started] = published.started[..] else { panic!("one instance starts: {published:?}") };
    let stored = h.engine.instance(started).unwrap();
    assert_eq!(stored.meta.process_id, "claim");
    assert_eq!(stored.meta.business_key.as_deref(), Some("C-7"), "the correlation key is the business key");
    assert_eq!(stored.meta.status, InstanceStatus::Active);
    assert_eq!(variables(&h, started)["amount"], json!(120));
    let jobs = h.engine.jobs("claims.assess", 10).unwrap();
    assert_eq!(jobs.iter().map(|job| job.instance).collect::<Vec<_>>(), [started]);

    // Every publication starts another instance; other message names start nothing.
    let again = h.engine.publish(claim("C-8"), &registrar()).unwrap();
    assert_eq!(again.started.len(), 1);
    assert_ne!(again.started[0], started);
    assert_eq!(h.engine.publish(docs("C-9"), &registrar()).unwrap(), Published::default());
    // A disabled process is not started by its message.
    h.engine.set_enabled("claim", 1, false, &admin()).unwrap();
    assert_eq!(h.engine.publish(claim("C-10"), &registrar()).unwrap(), Published::default());
    assert_eq!(verify_all(&h), 2);
}

fn a_buffered_message_reaches_a_later_subscription_until_its_time_to_live_ends<S: Store>(h: Harness<S>) {
    h.engine.deploy("messages.bpmn", MESSAGES.as_bytes(), &admin()).unwrap();
    let buffered = Message { ttl: Duration::hours(1), ..docs("APP-9") };
    let published = h.engine.publish(buffered, &registrar()).unwrap();
    assert_eq!(published.correlated, []);
    let key = published.buffered.expect("buffered for its time to live");
    let [message] = &h.engine.store().messages("documents-received", "APP-9").unwrap()[..] else {
        panic!("one buffered message")
    };
    assert_eq!(message.key, key);
    assert_eq!(message.expires_at, start_of_day() + Duration::hours(1));

    // Half an hour later an instance starts waiting: it takes the message at once. So does an instance of
    // another process, but not a second one of the first process.
    h.clock.advance(Duration::minutes(30));
    let first = waiting(&h, "await-docs", "APP-9");
    assert_eq!(status(&h, first), InstanceStatus::Completed);
    assert_eq!(variables(&h, first)["nDocuments"], json!(3));
    let archive = waiting(&h, "archive-docs", "APP-9");
    assert_eq!(status(&h, archive), InstanceStatus::Completed);
    let second = waiting(&h, "await-docs", "APP-9");
    assert_eq!(status(&h, second), InstanceStatus::Active, "a message is correlated once per process");
    let stored = h.engine.store().messages("documents-received", "APP-9").unwrap();
    assert_eq!(stored[0].correlated, ["await-docs", "archive-docs"]);
    assert_eq!(stored[0].key, key);
    // Another correlation key is not served by it.
    let other = waiting(&h, "archive-docs", "APP-10");
    assert_eq!(status(&h, other), InstanceStatus::Active);

    // A second message with the same time to live: one second before its end it is still delivered; at
    // its end, never.
    h.engine.publish(Message { ttl: Duration::hours(1), ..docs("APP-11") }, &registrar()).unwrap();
    h.clock.advance(Duration::hours(1) - Duration::seconds(1));
    let in_time = waiting(&h, "await-docs", "APP-11");
    assert_eq!(status(&h, in_time), InstanceStatus::Completed);
    h.clock.advance(Duration::seconds(1));
    let too_late = waiting(&h, "archive-docs", "APP-11");
    assert_eq!(status(&h, too_late), InstanceStatus::Active, "the message expired");
    h.clock.advance(Duration::days(1));
    let much_later = waiting(&h, "archive-docs", "APP-11");
    assert_eq!(status(&h, much_later), InstanceStatus::Active);
    assert_eq!(verify_all(&h), 7);
}

fn a_message_id_is_refused_while_its_message_is_buffered<S: Store>(h: Harness<S>) {
    h.engine.deploy("messages.bpmn", MESSAGES.as_bytes(), &admin()).unwrap();
    let with_id = |application_id: &str| Message {
        ttl: Duration::hours(1),
        message_id: Some("upload-77".to_owned()),
        ..docs(application_id)
    };
    h.engine.publish(with_id("APP-1"), &registrar()).unwrap();
    let instance = waiting(&h, "await-docs", "APP-2");
    h.clock.advance(Duration::minutes(59));
    // The same id, even with another correlation key, is refused and changes nothing.
    match h.engine.publish(with_id("APP-2"), &registrar()) {
        Err(EngineError::Store(StoreError::Conflict(message))) => {
            assert!(message.contains("upload-77"), "{message}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(status(&h, instance), InstanceStatus::Active, "a refused message correlates nothing");
    assert_eq!(h.engine.store().messages("documents-received", "APP-2").unwrap(), []);
    // Without an id, the same message is published.
    let published = h.engine.publish(docs("APP-2"), &registrar()).unwrap();
    assert_eq!(published.correlated, [instance]);
    assert_eq!(verify_all(&h), 1);
}

/// Fixed: a message id published again after its message's time to live had ended, but before anything
/// removed the expired message, passed the duplicate check, correlated to a waiting instance, and then
/// failed with a conflict when it was buffered: an error returned for a correlation already committed.
/// Publishing now removes expired messages first.
fn regression_a_message_id_is_free_once_its_message_expired_even_if_not_yet_removed<S: Store>(h: Harness<S>) {
    h.engine.deploy("messages.bpmn", MESSAGES.as_bytes(), &admin()).unwrap();
    let with_id = |application_id: &str| Message {
        ttl: Duration::hours(1),
        message_id: Some("upload-77".to_owned()),
        ..docs(application_id)
    };
    let first = h.engine.publish(with_id("APP-1"), &registrar()).unwrap().buffered.expect("buffered");
    let instance = waiting(&h, "await-docs", "APP-2");
    // At the end of its time to live the message is expired, but nothing has removed it yet.
    h.clock.advance(Duration::hours(1));
    let stale = h.engine.store().message_by_id("upload-77").unwrap().expect("not removed yet");
    assert_eq!((stale.key, stale.expires_at), (first, start_of_day() + Duration::hours(1)));

    let published = h.engine.publish(with_id("APP-2"), &registrar()).unwrap();
    assert_eq!(published.correlated, [instance]);
    let second = published.buffered.expect("buffered");
    assert!(second > first, "{second} after {first}");
    assert_eq!(status(&h, instance), InstanceStatus::Completed);
    assert_eq!(h.engine.store().messages("documents-received", "APP-1").unwrap(), []);
    let [buffered] = &h.engine.store().messages("documents-received", "APP-2").unwrap()[..] else {
        panic!("one buffered message")
    };
    assert_eq!((buffered.key, &buffered.correlated[..]), (second, &["await-docs".to_owned()][..]));
    assert_eq!(h.engine.store().message_by_id("upload-77").unwrap().map(|message| message.key), Some(second));
    // While the new message is buffered, its id is refused again.
    h.clock.advance(Duration::minutes(59));
    assert!(matches!(
        h.engine.publish(with_id("APP-3"), &registrar()),
        Err(EngineError::Store(StoreError::Conflict(_)))
    ));
    assert_eq!(verify_all(&h), 1);
}

// ---------------------------------------------------------------------------------------------------
// Definitions and the operation log

fn a_disabled_definition_cannot_be_started<S: Store>(h: Harness<S>) {
    h.engine.deploy("payment.bpmn", one_task("payment", "pay").as_bytes(), &admin()).unwrap();
    let before = h.engine.start("payment", VariableMap::new(), None, &registrar()).unwrap();
    h.engine.set_enabled("payment", 1, false, &admin()).unwrap();
    assert!(!h.engine.store().deployment("payment", 1).unwrap().unwrap().enabled);
    match h.engine.start("payment", VariableMap::new(), None, &registrar()) {
        Err(EngineError::Disabled(process_id)) => assert_eq!(process_id, "payment"),
        other => panic!("expected Disabled, got {other:?}"),
    }
    // Instances already running go on.
    let job = h.engine.jobs("pay", 10).unwrap()[0].job;
    h.engine
        .command(before, &Command::CompleteJob { job, variables: VariableMap::new() }, &registrar())
        .unwrap();
    assert_eq!(status(&h, before), InstanceStatus::Completed);
    // Disabling twice changes nothing; enabling makes it startable again.
    h.engine.set_enabled("payment", 1, false, &admin()).unwrap();
    h.engine.set_enabled("payment", 1, true, &admin()).unwrap();
    let after = h.engine.start("payment", VariableMap::new(), None, &registrar()).unwrap();
    assert_eq!(status(&h, after), InstanceStatus::Active);
    assert!(matches!(
        h.engine.set_enabled("payment", 2, false, &admin()),
        Err(EngineError::UnknownProcess(_))
    ));
    assert_eq!(verify_all(&h), 2);
}

fn a_definition_in_use_cannot_be_deleted<S: Store>(h: Harness<S>) {
    h.engine.deploy("payment.bpmn", one_task("payment", "pay").as_bytes(), &admin()).unwrap();
    let instance = h.engine.start("payment", VariableMap::new(), None, &registrar()).unwrap();
    // Version 2 (other content) has no instances; version 1 has one, finished or not.
    let deployed =
        h.engine.deploy("payment.bpmn", one_task("payment", "pay.v2").as_bytes(), &admin()).unwrap();
    assert_eq!(deployed[0].version, 2);
    match h.engine.delete_definition("payment", 1, &admin()) {
        Err(EngineError::InUse { process_id, version: 1, n_instances: 1 }) => {
            assert_eq!(process_id, "payment")
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    let job = h.engine.jobs("pay", 10).unwrap()[0].job;
    h.engine
        .command(instance, &Command::CompleteJob { job, variables: VariableMap::new() }, &registrar())
        .unwrap();
    assert!(matches!(
        h.engine.delete_definition("payment", 1, &admin()),
        Err(EngineError::InUse { n_instances: 1, .. })
    ));
    h.engine.delete_definition("payment", 2, &admin()).unwrap();
    assert_eq!(h.engine.store().deployment("payment", 2).unwrap(), None);
    assert!(h.engine.store().deployment("payment", 1).unwrap().is_some());
    assert!(matches!(
        h.engine.delete_definition("payment", 2, &admin()),
        Err(EngineError::UnknownProcess(_))
    ));
    // Starting uses the latest version left.
    let next = h.engine.start("payment", VariableMap::new(), None, &registrar()).unwrap();
    assert_eq!(h.engine.instance(next).unwrap().meta.version, 1);

    // A process never started is deleted whole: it cannot be started any more.
    h.engine.deploy("refund.bpmn", one_task("refund", "refund").as_bytes(), &admin()).unwrap();
    h.engine.delete_definition("refund", 1, &admin()).unwrap();
    assert!(matches!(
        h.engine.start("refund", VariableMap::new(), None, &registrar()),
        Err(EngineError::UnknownProcess(_))
    ));
    assert_eq!(verify_all(&h), 2);
}

/// A deletion racing starts of the same process: either an instance got in first and the deletion is
/// refused, or every start after it fails; never an instance of a deleted version.
fn a_deletion_racing_starts_never_leaves_an_instance_without_its_definition<S: Store>(h: Harness<S>) {
    let (mut refused, mut done) = (0, 0);
    for round in 0..40 {
        let process_id = format!("race-{round}");
        let bpmn = one_task(&process_id, "pay");
        h.engine.deploy(&format!("{process_id}.bpmn"), bpmn.as_bytes(), &admin()).unwrap();
        let (started, deleted) = std::thread::scope(|scope| {
            let starter = scope.spawn(|| {
                let mut started = Vec::new();
                for _ in 0..5 {
                    match h.engine.start(&process_id, VariableMap::new(), None, &registrar()) {
                        Ok(key) => started.push(key),
                        Err(EngineError::UnknownProcess(_)) => break,
                        Err(other) => panic!("round {round}: {other:?}"),
                    }
                }
                started
            });
            let deleted = h.engine.delete_definition(&process_id, 1, &admin());
            (starter.join().unwrap(), deleted)
        });
        let listed = h
            .engine
            .store()
            .instances(
                &InstanceFilter { process_id: Some(process_id.clone()), ..InstanceFilter::default() },
                None,
                100,
            )
            .unwrap();
        assert_eq!(listed.len(), started.len(), "round {round}");
        match deleted {
            Ok(()) => {
                assert_eq!(started, [], "round {round}: instances started on a deleted definition");
                assert_eq!(h.engine.store().deployment(&process_id, 1).unwrap(), None);
                done += 1;
            }
            Err(EngineError::InUse { n_instances, .. }) => {
                assert!(n_instances >= 1 && !started.is_empty(), "round {round}");
                assert!(h.engine.store().deployment(&process_id, 1).unwrap().is_some());
                // The definition is still there for its instances, and for new starts.
                for key in &started {
                    assert_eq!(h.engine.instance(*key).unwrap().meta.process_id, process_id);
                }
                h.engine.start(&process_id, VariableMap::new(), None, &registrar()).unwrap();
                refused += 1;
            }
            Err(other) => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(refused + done, 40);
}

/// Deleting the latest version while it has instances is refused, and starts running meanwhile keep
/// getting that version: the refusal never takes it away, not even for a moment.
fn a_refused_deletion_of_the_latest_version_never_sends_starts_to_an_older_one<S: Store>(h: Harness<S>) {
    h.engine.deploy("permit.bpmn", one_task("permit", "pay").as_bytes(), &admin()).unwrap();
    h.engine.deploy("permit.bpmn", one_task("permit", "pay-v2").as_bytes(), &admin()).unwrap();
    h.engine.start("permit", VariableMap::new(), None, &registrar()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let versions = std::thread::scope(|scope| {
        let starter = scope.spawn(|| {
            let mut versions = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = h.engine.start("permit", VariableMap::new(), None, &registrar()).unwrap();
                versions.push(h.engine.instance(key).unwrap().meta.version);
            }
            versions
        });
        for attempt in 0..200 {
            match h.engine.delete_definition("permit", 2, &admin()) {
                Err(EngineError::InUse { version: 2, .. }) => {}
                other => panic!("attempt {attempt}: expected InUse, got {other:?}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        starter.join().unwrap()
    });
    assert!(!versions.is_empty());
    assert!(versions.iter().all(|&version| version == 2), "a start got version 1: {versions:?}");
}

fn several_files_deploy_all_or_nothing<S: Store>(h: Harness<S>) {
    let payment = one_task("payment", "pay");
    let refund = one_task("refund", "refund");
    // The second file is broken: neither is deployed, and nothing is in the operation log.
    let broken = one_task("broken", "x").replace("<bpmn:endEvent", "<bpmn:nonsense");
    let refused = h
        .engine
        .deploy_all(&[("payment.bpmn", payment.as_bytes()), ("broken.bpmn", broken.as_bytes())], &admin());
    assert!(matches!(refused, Err(EngineError::Invalid(_))), "{refused:?}");
    assert_eq!(h.engine.store().deployments().unwrap(), []);
    assert_eq!(h.engine.operations(&OperationFilter::default(), 0, 100).unwrap(), []);
    assert!(matches!(
        h.engine.start("payment", VariableMap::new(), None, &registrar()),
        Err(EngineError::UnknownProcess(_))
    ));
    // Both valid: one write, two versions; the same content twice in one call is one version.
    let deployed = h
        .engine
        .deploy_all(
            &[
                ("payment.bpmn", payment.as_bytes()),
                ("refund.bpmn", refund.as_bytes()),
                ("payment-copy.bpmn", payment.as_bytes()),
            ],
            &admin(),
        )
        .unwrap();
    let shown: Vec<(&str, u32, bool, &str)> = deployed
        .iter()
        .map(|d| (d.process_id.as_str(), d.version, d.new, d.resource_name.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("payment", 1, true, "payment.bpmn"),
            ("refund", 1, true, "refund.bpmn"),
            ("payment", 1, false, "payment-copy.bpmn")
        ]
    );
    assert_eq!(h.engine.store().deployments().unwrap().len(), 2);
    assert_eq!(h.engine.operations(&OperationFilter::default(), 0, 100).unwrap().len(), 2);
    h.engine.start("refund", VariableMap::new(), None, &registrar()).unwrap();

    // Deleting versions is all or none too: version 1 of refund has an instance, so version 2 stays.
    h.engine.deploy("refund.bpmn", one_task("refund", "refund.v2").as_bytes(), &admin()).unwrap();
    let refused = h.engine.delete_definitions("refund", &[2, 1], &admin());
    assert!(matches!(refused, Err(EngineError::InUse { version: 1, .. })), "{refused:?}");
    assert!(h.engine.store().deployment("refund", 2).unwrap().is_some());
    h.engine.delete_definitions("payment", &[1], &admin()).unwrap();
    h.engine.deploy("payment.bpmn", one_task("payment", "pay.v2").as_bytes(), &admin()).unwrap();
    h.engine.deploy("payment.bpmn", one_task("payment", "pay.v3").as_bytes(), &admin()).unwrap();
    h.engine.delete_definitions("payment", &[2, 3], &admin()).unwrap();
    assert!(h.engine.store().deployments().unwrap().iter().all(|d| d.process_id == "refund"));
    let deletes = h
        .engine
        .operations(&OperationFilter::default(), 0, 100)
        .unwrap()
        .into_iter()
        .filter(|op| op.kind == OperationKind::Delete)
        .count();
    assert_eq!(deletes, 3);
}

/// (kind, target, actor user) of each operation, for compact comparison.
fn summary(operations: &[Operation]) -> Vec<(OperationKind, String, String)> {
    operations
        .iter()
        .map(|operation| {
            let target = match &operation.target {
                OperationTarget::Definition { process_id, version } => {
                    format!("definition {process_id} v{version}")
                }
                OperationTarget::Instance { instance, process_id } => {
                    format!("instance {instance} of {process_id}")
                }
                OperationTarget::Variable { instance, name, .. } => format!("variable {name} of {instance}"),
            };
            (operation.kind, target, operation.actor.user.clone())
        })
        .collect()
}

fn the_operation_log_records_who_changed_definitions_instances_and_variables<S: Store>(h: Harness<S>) {
    use OperationKind::{Create, Delete, Update};
    let (admin, registrar) = (admin(), registrar());
    h.engine.deploy("payment.bpmn", one_task("payment", "pay").as_bytes(), &admin).unwrap();
    h.clock.advance(Duration::minutes(1));
    let instance =
        h.engine.start("payment", vars(json!({"amount": 10})), Some("B-1".into()), &registrar).unwrap();
    h.clock.advance(Duration::minutes(1));
    let set = Command::SetVariables {
        scope: None,
        variables: vars(json!({"amount": 20, "note": "x"})),
        local: false,
    };
    h.engine.command(instance, &set, &registrar).unwrap();
    h.engine.set_enabled("payment", 1, false, &admin).unwrap();
    h.clock.advance(Duration::minutes(1));
    let job = h.engine.open_jobs(Some("pay"), 10, false).unwrap()[0].job;
    h.engine
        .command(instance, &Command::CompleteJob { job, variables: VariableMap::new() }, &Actor::engine())
        .unwrap();
    h.engine.deploy("refund.bpmn", one_task("refund", "refund").as_bytes(), &admin).unwrap();
    h.engine.delete_definition("refund", 1, &admin).unwrap();

    let all = h.engine.operations(&OperationFilter::default(), 0, usize::MAX).unwrap();
    let i = instance;
    assert_eq!(
        summary(&all),
        [
            (Create, "definition payment v1".to_owned(), "admin-1".to_owned()),
            (Create, format!("instance {i} of payment"), "registrar-1".to_owned()),
            (Create, format!("variable amount of {i}"), "registrar-1".to_owned()),
            (Update, format!("variable amount of {i}"), "registrar-1".to_owned()),
            (Create, format!("variable note of {i}"), "registrar-1".to_owned()),
            (Update, "definition payment v1".to_owned(), "admin-1".to_owned()),
            (Update, format!("instance {i} of payment"), "engine".to_owned()),
            (Create, "definition refund v1".to_owned(), "admin-1".to_owned()),
            (Delete, "definition refund v1".to_owned(), "admin-1".to_owned()),
        ]
    );
    assert_eq!(all.iter().map(|operation| operation.seq).collect::<Vec<_>>(), (1..=9).collect::<Vec<u64>>());
    assert_eq!(all[0].actor, admin, "the actor's affiliation is kept");
    assert_eq!(all[1].actor, registrar);
    assert_eq!(all[1].detail.as_deref(), Some("B-1"));
    assert_eq!(all[5].detail.as_deref(), Some("disabled"));
    assert_eq!(all[6].detail.as_deref(), Some("completed"));
    assert_eq!(all[0].at, start_of_day());
    assert_eq!(all[1].at, start_of_day() + Duration::minutes(1));

    let seqs = |filter: OperationFilter| -> Vec<u64> {
        h.engine.operations(&filter, 0, usize::MAX).unwrap().iter().map(|operation| operation.seq).collect()
    };
    assert_eq!(
        seqs(OperationFilter { user: Some("admin-1".into()), ..OperationFilter::default() }),
        [1, 6, 8, 9]
    );
    assert_eq!(
        seqs(OperationFilter { instance: Some(instance), ..OperationFilter::default() }),
        [2, 3, 4, 5, 7]
    );
    assert_eq!(seqs(OperationFilter { kind: Some(Delete), ..OperationFilter::default() }), [9]);
    assert_eq!(
        seqs(OperationFilter { process_id: Some("payment".into()), ..OperationFilter::default() }),
        [1, 2, 6, 7]
    );
    let later =
        OperationFilter { from: Some(start_of_day() + Duration::minutes(2)), ..OperationFilter::default() };
    assert_eq!(seqs(later), [4, 5, 6, 7, 8, 9]);
    assert_eq!(h.engine.operations(&OperationFilter::default(), 7, 1).unwrap(), all[7..8]);
    assert_eq!(verify_all(&h), 1);
}

// ---------------------------------------------------------------------------------------------------
// Call activities and signals

fn a_call_activity_starts_a_child_and_completes_when_it_does<S: Store>(h: Harness<S>) {
    h.engine.deploy("calls.bpmn", CALLS.as_bytes(), &admin()).unwrap();
    h.engine.deploy("child.bpmn", one_task("child", "child.work").as_bytes(), &admin()).unwrap();
    let parent = h.engine.start("parent", vars(json!({"caseNo": 5})), None, &registrar()).unwrap();

    let stored = h.engine.instance(parent).unwrap();
    let [(&call, called)] = &stored.state.calls.iter().collect::<Vec<_>>()[..] else {
        panic!("the parent waits at one call activity: {:?}", stored.state.calls)
    };
    assert_eq!(called.as_str(), "child");
    let [child] = h.engine.store().children(parent, call).unwrap()[..] else { panic!("one child") };
    let child_meta = h.engine.instance(child).unwrap().meta;
    assert_eq!(child_meta.parent, Some((parent, call)));
    assert_eq!(child_meta.process_id, "child");
    assert_eq!(child_meta.status, InstanceStatus::Active);
    assert_outbox_empty(&h);

    let jobs = h.engine.jobs("child.work", 10).unwrap();
    assert_eq!(jobs.iter().map(|job| job.instance).collect::<Vec<_>>(), [child]);
    let complete = Command::CompleteJob { job: jobs[0].job, variables: vars(json!({"approved": true})) };
    h.engine.command(child, &complete, &Actor::engine()).unwrap();
    assert_eq!(status(&h, child), InstanceStatus::Completed);
    assert_eq!(status(&h, parent), InstanceStatus::Completed, "the child's end completes the call activity");
    assert_outbox_empty(&h);
    assert_eq!(verify_all(&h), 2);
}

fn a_call_activity_to_a_missing_process_raises_an_incident<S: Store>(h: Harness<S>) {
    h.engine.deploy("calls.bpmn", CALLS.as_bytes(), &admin()).unwrap();
    let orphan = h.engine.start("orphan", VariableMap::new(), None, &registrar()).unwrap();
    assert_eq!(status(&h, orphan), InstanceStatus::Active);
    let stored = h.engine.instance(orphan).unwrap();
    let [incident] = &stored.state.incidents.values().collect::<Vec<_>>()[..] else {
        panic!("one incident: {:?}", stored.state.incidents)
    };
    assert_eq!(incident.kind, IncidentKind::CalledProcessNotFound);
    assert_eq!(incident.element.0, "call-missing");
    assert!(incident.message.contains("never-deployed"), "{}", incident.message);
    let listed = h.engine.store().incidents(None, usize::MAX).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].instance, listed[0].incident), (orphan, incident.key));
    assert_eq!(listed[0].kind, IncidentKind::CalledProcessNotFound);
    assert_outbox_empty(&h);

    // Deployed later, resolving the incident starts the child.
    h.engine
        .deploy("never-deployed.bpmn", one_task("never-deployed", "late.work").as_bytes(), &admin())
        .unwrap();
    let resolve = Command::ResolveIncident { incident: incident.key, variables: VariableMap::new() };
    h.engine.command(orphan, &resolve, &admin()).unwrap();
    assert_eq!(h.engine.store().incidents(None, usize::MAX).unwrap(), []);
    let jobs = h.engine.jobs("late.work", 10).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        h.engine.instance(jobs[0].instance).unwrap().meta.parent.map(|(parent, _)| parent),
        Some(orphan)
    );
    assert_eq!(verify_all(&h), 2);
}

fn a_signal_reaches_every_waiting_instance<S: Store>(h: Harness<S>) {
    h.engine.deploy("signals.bpmn", SIGNALS.as_bytes(), &admin()).unwrap();
    let start =
        |process_id: &str| h.engine.start(process_id, VariableMap::new(), None, &registrar()).unwrap();
    let (one, two) = (start("wait-signal"), start("wait-signal"));
    assert_eq!(h.engine.store().signal_subscriptions("registry-open").unwrap().len(), 2);
    assert_eq!(h.engine.broadcast("registry-opens", VariableMap::new(), &admin()).unwrap(), 0);
    assert_eq!(h.engine.broadcast("registry-open", vars(json!({"office": "north"})), &admin()).unwrap(), 2);
    assert_eq!((status(&h, one), status(&h, two)), (InstanceStatus::Completed, InstanceStatus::Completed));
    assert_eq!(variables(&h, one)["office"], json!("north"));
    assert_eq!(h.engine.broadcast("registry-open", VariableMap::new(), &admin()).unwrap(), 0);

    // A throw event in one instance reaches an instance waiting in another.
    let three = start("wait-signal");
    let thrower = start("throw-signal");
    assert_eq!(status(&h, thrower), InstanceStatus::Completed);
    assert_eq!(status(&h, three), InstanceStatus::Completed, "the thrown signal was delivered");
    assert_eq!(h.engine.store().signal_subscriptions("registry-open").unwrap(), []);
    assert_outbox_empty(&h);
    assert_eq!(verify_all(&h), 4);
}

/// Fixed: a time to live so large that the expiry time overflowed panicked after the message had already
/// correlated. It is now refused first, and nothing happens.
fn regression_a_time_to_live_out_of_range_is_refused_before_anything_correlates<S: Store>(h: Harness<S>) {
    h.engine.deploy("messages.bpmn", MESSAGES.as_bytes(), &admin()).unwrap();
    let instance = waiting(&h, "await-docs", "APP-9");
    for ttl in [Duration::MAX, Duration::seconds(-1)] {
        match h.engine.publish(Message { ttl, ..docs("APP-9") }, &registrar()) {
            Err(EngineError::InvalidMessage(message)) => {
                assert!(message.contains("time to live"), "{message}")
            }
            other => panic!("expected an invalid message, got {other:?}"),
        }
    }
    assert_eq!(status(&h, instance), InstanceStatus::Active, "nothing correlated");
    assert_eq!(h.engine.publish(docs("APP-9"), &registrar()).unwrap().correlated, [instance]);
    assert_eq!(verify_all(&h), 1);
}
