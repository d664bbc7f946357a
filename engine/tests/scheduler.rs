//! The scheduler: timer start events (cycles, dates, redeployment, disabling, catch-up after downtime
//! without a burst), intermediate and boundary timers across restarts, flow triggers (a process started
//! when another completes, is cancelled or fails), the store's time scale with its `ScaledClock`, and the
//! tokio shell starting scheduled processes on the real clock. It must never start or fire anything before
//! its due time, never sleep to synchronise (time moves by a manual clock; the one real-clock test waits for
//! the engine to report), and never leave a store directory behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestDir;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, FixedOffset, Utc};
use govflow_engine::audit::Actor;
use govflow_engine::engine::{flow_trigger, Clock, Engine, FlowEvent, ManualClock, ScaledClock, SystemClock};
use govflow_engine::runtime::{Command, Event, InstanceKey, InstanceStatus, VariableMap};
use govflow_engine::shell::Shell;
use govflow_engine::store::kv::{CommitConfig, KvStore};
use govflow_engine::store::memory::memory_store;
use govflow_engine::store::sled::{open_sled, open_sled_with, SledKv};
use govflow_engine::store::{InstanceFilter, InstanceMeta, ScheduleEntry, Store, StoreError};
use serde_json::json;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------------
// Harness

type SledEngine = Engine<KvStore<SledKv>>;

/// A sled engine with its manual clock. Fields drop in order: the engine (and its store) before the
/// directory it lives in.
struct Harness {
    engine: SledEngine,
    clock: Arc<ManualClock>,
    dir: TestDir,
}

fn t0() -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339("2027-01-04T09:00:00+03:00").unwrap()
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> SledEngine {
    Engine::open(open_sled(dir).unwrap(), Arc::clone(clock) as Arc<dyn Clock>).unwrap()
}

impl Harness {
    fn new(name: &str) -> Harness {
        let dir = TestDir::new("scheduler", name);
        let clock = Arc::new(ManualClock::new(t0()));
        Harness { engine: open(&dir.0, &clock), clock, dir }
    }

    /// Closes the engine (as a process exit would) and opens it again on the same store and clock;
    /// `downtime` passes while it is closed.
    fn restart(self, downtime: Duration) -> Harness {
        let Harness { engine, clock, dir } = self;
        drop(engine);
        clock.advance(downtime);
        Harness { engine: open(&dir.0, &clock), clock, dir }
    }

    /// Every stored instance verifies (chain, and replay equals snapshot); returns how many there are.
    fn verify_all(&self) -> usize {
        let instances = self.engine.instances(&InstanceFilter::default(), None, usize::MAX).unwrap();
        for meta in &instances {
            assert!(self.engine.verify(meta.key).unwrap() > 0, "instance {} has records", meta.key);
        }
        instances.len()
    }

    fn instances_of(&self, process_id: &str) -> Vec<InstanceMeta> {
        let filter = InstanceFilter { process_id: Some(process_id.to_owned()), ..InstanceFilter::default() };
        self.engine.instances(&filter, None, usize::MAX).unwrap()
    }

    fn events(&self, instance: InstanceKey) -> Vec<Event> {
        records(&self.engine, instance).into_iter().map(|record| record.event).collect()
    }

    /// The start event named by the instance's `InstanceCreated`.
    fn start_event(&self, instance: InstanceKey) -> String {
        start_event(&self.events(instance))
    }

    fn business_key(&self, instance: InstanceKey) -> Option<String> {
        self.engine.instance(instance).unwrap().meta.business_key
    }

    /// The process-scope variables of an instance.
    fn variables(&self, instance: InstanceKey) -> VariableMap {
        let stored = self.engine.instance(instance).unwrap();
        stored.state.variables.get(&stored.state.root.unwrap()).cloned().unwrap_or_default()
    }
}

fn records<S: Store>(engine: &Engine<S>, instance: InstanceKey) -> Vec<govflow_engine::audit::RecordedEvent> {
    engine.store().records(instance, 1, usize::MAX).unwrap()
}

fn start_event(events: &[Event]) -> String {
    match events.first() {
        Some(Event::InstanceCreated { start_event, .. }) => start_event.0.clone(),
        other => panic!("an instance's first event is InstanceCreated, not {other:?}"),
    }
}

fn admin() -> Actor {
    Actor::user("admin-1", Some("Ministry of Interior".to_owned()))
}

fn vars(value: serde_json::Value) -> VariableMap {
    serde_json::from_value(value).unwrap()
}

// ---------------------------------------------------------------------------------------------------
// Processes

fn definitions(id: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="scheduler-{id}" targetNamespace="http://govflow.example/test">
{body}
</bpmn:definitions>
"#
    )
}

/// Process `process_id` started only by timer start event `s` (`timer`: the definition's inner XML),
/// which goes straight to its end.
fn timer_start(process_id: &str, timer: &str) -> String {
    definitions(
        process_id,
        &format!(
            r#"  <bpmn:process id="{process_id}" isExecutable="true">
    <bpmn:startEvent id="s"><bpmn:timerEventDefinition>{timer}</bpmn:timerEventDefinition></bpmn:startEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="done" />
    <bpmn:endEvent id="done" />
  </bpmn:process>"#
        ),
    )
}

fn cycle(expression: &str) -> String {
    format!("<bpmn:timeCycle>{expression}</bpmn:timeCycle>")
}

/// The business key of start number `n` of timer start event `s` of `process_id` version `version`.
/// The business key of scheduled start `n` of a schedule anchored at `anchor` (the documented format).
fn scheduled_key(process_id: &str, version: u32, anchor: DateTime<FixedOffset>, n: u32) -> String {
    let anchor = anchor.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!("{process_id}:v{version}/s/{anchor}/{n}")
}

/// start → wait (PT1H) → end.
const WAIT_AN_HOUR: &str = r#"  <bpmn:process id="wait" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="pause" />
    <bpmn:intermediateCatchEvent id="pause"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1H</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f2" sourceRef="pause" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>"#;

/// A user task with a daily, non-interrupting reminder (to end event `reminded`).
const DAILY_REMINDER: &str = r#"  <bpmn:process id="review" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="decide" />
    <bpmn:userTask id="decide" />
    <bpmn:boundaryEvent id="remind" attachedToRef="decide" cancelActivity="false">
      <bpmn:timerEventDefinition><bpmn:timeCycle>R/P1D</bpmn:timeCycle></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f2" sourceRef="decide" targetRef="end" />
    <bpmn:sequenceFlow id="f3" sourceRef="remind" targetRef="reminded" />
    <bpmn:endEvent id="end" />
    <bpmn:endEvent id="reminded" />
  </bpmn:process>"#;

/// Process `A` (one service task, type `a.work`), and process `B` started by A's completion
/// (`after-a`), cancellation (`after-a-cancelled`) or failure (`after-a-failed`).
fn flow_triggers() -> String {
    let completed = flow_trigger(FlowEvent::Completed, "A");
    let cancelled = flow_trigger(FlowEvent::Cancelled, "A");
    let failed = flow_trigger(FlowEvent::Failed, "A");
    definitions(
        "flow-triggers",
        &format!(
            r#"  <bpmn:message id="m-a" name="{completed}" />
  <bpmn:message id="m-a-cancelled" name="{cancelled}" />
  <bpmn:message id="m-a-failed" name="{failed}" />
  <bpmn:process id="A" isExecutable="true">
    <bpmn:startEvent id="a-start" />
    <bpmn:sequenceFlow id="a1" sourceRef="a-start" targetRef="a-work" />
    <bpmn:serviceTask id="a-work"><bpmn:extensionElements><zeebe:taskDefinition type="a.work" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="a2" sourceRef="a-work" targetRef="a-end" />
    <bpmn:endEvent id="a-end" />
  </bpmn:process>
  <bpmn:process id="B" isExecutable="true">
    <bpmn:startEvent id="after-a"><bpmn:messageEventDefinition messageRef="m-a"/></bpmn:startEvent>
    <bpmn:startEvent id="after-a-cancelled"><bpmn:messageEventDefinition messageRef="m-a-cancelled"/></bpmn:startEvent>
    <bpmn:startEvent id="after-a-failed"><bpmn:messageEventDefinition messageRef="m-a-failed"/></bpmn:startEvent>
    <bpmn:sequenceFlow id="b1" sourceRef="after-a" targetRef="b-end" />
    <bpmn:sequenceFlow id="b2" sourceRef="after-a-cancelled" targetRef="b-end" />
    <bpmn:sequenceFlow id="b3" sourceRef="after-a-failed" targetRef="b-end" />
    <bpmn:endEvent id="b-end" />
  </bpmn:process>"#
        ),
    )
}

// ---------------------------------------------------------------------------------------------------
// Timer start events

#[test]
fn a_bounded_cycle_starts_once_per_repetition_never_early_then_is_spent() {
    let h = Harness::new("bounded-cycle");
    h.engine.deploy("tick.bpmn", timer_start("tick", &cycle("R3/PT1H")).as_bytes(), &admin()).unwrap();
    assert_eq!(h.engine.next_schedule_due().unwrap(), Some(t0() + Duration::hours(1)));
    assert_eq!(h.engine.fire_due_schedules().unwrap(), [], "nothing is due at deployment");
    h.clock.advance(Duration::hours(1) - Duration::seconds(1));
    assert_eq!(h.engine.fire_due_schedules().unwrap(), [], "never early");

    let mut started = Vec::new();
    for n in 1..=3 {
        if n == 1 {
            h.clock.advance(Duration::seconds(1));
        } else {
            h.clock.advance(Duration::hours(1));
        }
        assert_eq!(h.engine.now(), t0() + Duration::hours(n.into()));
        let [instance] = h.engine.fire_due_schedules().unwrap()[..] else {
            panic!("start {n}: one instance")
        };
        assert_eq!(h.business_key(instance), Some(scheduled_key("tick", 1, t0(), n)));
        assert_eq!(h.start_event(instance), "s", "InstanceCreated names the timer start event");
        assert_eq!(h.engine.instance(instance).unwrap().meta.started_at, h.engine.now());
        assert_eq!(h.engine.fire_due_schedules().unwrap(), [], "a start is made once");
        let next = (n < 3).then(|| t0() + Duration::hours(i64::from(n) + 1));
        assert_eq!(h.engine.next_schedule_due().unwrap(), next);
        started.push(instance);
    }
    let [schedule] = &h.engine.store().schedules().unwrap()[..] else { panic!("one schedule") };
    assert!(schedule.spent && schedule.fired == 3, "R3 is spent after three starts: {schedule:?}");
    // A spent schedule stays spent across a restart (it is not made again).
    let h = h.restart(Duration::zero());
    assert_eq!(h.engine.next_schedule_due().unwrap(), None);
    h.clock.advance(Duration::days(30));
    assert_eq!(h.engine.fire_due_schedules().unwrap(), []);
    assert_eq!(h.instances_of("tick").len(), 3);
    for instance in &started {
        assert_eq!(h.engine.instance(*instance).unwrap().meta.status, InstanceStatus::Completed);
    }
    assert_eq!(h.verify_all(), 3);
}

#[test]
fn a_redeployment_replaces_the_schedule_of_the_previous_version() {
    let h = Harness::new("redeploy");
    h.engine.deploy("tick.bpmn", timer_start("tick", &cycle("R/PT1H")).as_bytes(), &admin()).unwrap();
    h.clock.advance(Duration::hours(1));
    let [first] = h.engine.fire_due_schedules().unwrap()[..] else { panic!("v1 starts once") };
    assert_eq!(h.engine.instance(first).unwrap().meta.version, 1);

    let redeployed = t0() + Duration::hours(1);
    let deployed =
        h.engine.deploy("tick.bpmn", timer_start("tick", &cycle("R/PT2H")).as_bytes(), &admin()).unwrap();
    assert_eq!(deployed[0].version, 2);
    assert_eq!(
        h.engine.store().schedules().unwrap(),
        [ScheduleEntry {
            process_id: "tick".to_owned(),
            version: 2,
            element: "s".to_owned(),
            due: redeployed + Duration::hours(2),
            fired: 0,
            anchor: redeployed,
            spent: false,
        }],
        "only v2's schedule is left"
    );
    // When v1 would have started again, nothing does.
    h.clock.advance(Duration::hours(1));
    assert_eq!(h.engine.fire_due_schedules().unwrap(), []);
    h.clock.advance(Duration::hours(1));
    let [second] = h.engine.fire_due_schedules().unwrap()[..] else { panic!("v2 starts once") };
    let meta = h.engine.instance(second).unwrap().meta;
    assert_eq!((meta.version, meta.business_key), (2, Some(scheduled_key("tick", 2, redeployed, 1))));
    assert_eq!(h.engine.next_schedule_due().unwrap(), Some(redeployed + Duration::hours(4)));
    assert_eq!(h.verify_all(), 2);
}

/// Disabled before its first start, nothing starts; enabled again, a new schedule counts from then.
#[test]
fn disabling_stops_the_schedule_and_enabling_anchors_a_new_one_at_that_time() {
    let h = Harness::new("disable");
    h.engine.deploy("tick.bpmn", timer_start("tick", &cycle("R/PT1H")).as_bytes(), &admin()).unwrap();
    h.clock.advance(Duration::minutes(30));
    h.engine.set_enabled("tick", 1, false, &admin()).unwrap();
    assert_eq!(h.engine.next_schedule_due().unwrap(), None);
    h.clock.advance(Duration::hours(2));
    assert_eq!(h.engine.fire_due_schedules().unwrap(), [], "a disabled process is not started when due");

    let enabled = t0() + Duration::minutes(150);
    h.engine.set_enabled("tick", 1, true, &admin()).unwrap();
    let live: Vec<ScheduleEntry> =
        h.engine.store().schedules().unwrap().into_iter().filter(|entry| !entry.spent).collect();
    let [schedule] = &live[..] else { panic!("one live schedule: {live:?}") };
    assert_eq!((schedule.anchor, schedule.due, schedule.fired), (enabled, enabled + Duration::hours(1), 0));
    assert_eq!(h.engine.fire_due_schedules().unwrap(), [], "the new schedule is not due at once");
    h.clock.advance(Duration::hours(1) - Duration::seconds(1));
    assert_eq!(h.engine.fire_due_schedules().unwrap(), []);
    h.clock.advance(Duration::seconds(1));
    let [instance] = h.engine.fire_due_schedules().unwrap()[..] else { panic!("one start after enabling") };
    assert_eq!(h.business_key(instance), Some(scheduled_key("tick", 1, enabled, 1)));
    assert_eq!(h.engine.instance(instance).unwrap().meta.started_at, enabled + Duration::hours(1));
    assert_eq!(h.engine.next_schedule_due().unwrap(), Some(enabled + Duration::hours(2)));
    assert_eq!(h.verify_all(), 1);
}

#[test]
fn after_downtime_an_overdue_cycle_starts_once_and_resumes_after_now() {
    let h = Harness::new("downtime-cycle");
    h.engine.deploy("tick.bpmn", timer_start("tick", &cycle("R/PT1H")).as_bytes(), &admin()).unwrap();
    let h = h.restart(Duration::minutes(5 * 60 + 30));
    assert_eq!(h.engine.next_schedule_due().unwrap(), Some(t0() + Duration::hours(1)), "kept across restart");

    let [instance] = h.engine.fire_due_schedules().unwrap()[..] else {
        panic!("exactly one start, no burst")
    };
    assert_eq!(h.business_key(instance), Some(scheduled_key("tick", 1, t0(), 1)));
    assert_eq!(h.engine.next_schedule_due().unwrap(), Some(t0() + Duration::hours(6)), "the next after now");
    assert_eq!(h.engine.fire_due_schedules().unwrap(), []);
    h.clock.advance(Duration::minutes(30) - Duration::seconds(1));
    assert_eq!(h.engine.fire_due_schedules().unwrap(), []);
    h.clock.advance(Duration::seconds(1));
    let [next] = h.engine.fire_due_schedules().unwrap()[..] else { panic!("one start at T0+6h") };
    assert_eq!(h.business_key(next), Some(scheduled_key("tick", 1, t0(), 2)));
    assert_eq!(h.engine.next_schedule_due().unwrap(), Some(t0() + Duration::hours(7)));
    assert_eq!(h.verify_all(), 2);
}

#[test]
fn a_date_in_the_past_starts_once_at_once_then_the_schedule_is_gone() {
    let h = Harness::new("past-date");
    let timer = "<bpmn:timeDate>2020-01-01T00:00:00Z</bpmn:timeDate>";
    h.engine.deploy("once.bpmn", timer_start("once", timer).as_bytes(), &admin()).unwrap();
    let past = DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z").unwrap();
    assert_eq!(h.engine.next_schedule_due().unwrap(), Some(past));

    let [instance] = h.engine.fire_due_schedules().unwrap()[..] else { panic!("one start, at once") };
    assert_eq!(h.business_key(instance), Some(scheduled_key("once", 1, t0(), 1)));
    assert_eq!(h.start_event(instance), "s");
    let [schedule] = &h.engine.store().schedules().unwrap()[..] else { panic!("one schedule") };
    assert!(schedule.spent && schedule.fired == 1, "a date starts once: {schedule:?}");
    assert_eq!(h.engine.next_schedule_due().unwrap(), None);
    h.clock.advance(Duration::days(365));
    assert_eq!(h.engine.fire_due_schedules().unwrap(), []);
    // Nor does a restart bring the schedule back.
    let h = h.restart(Duration::zero());
    assert_eq!(h.engine.next_schedule_due().unwrap(), None);
    assert_eq!(h.engine.fire_due_schedules().unwrap(), []);
    assert_eq!(h.verify_all(), 1);
}

// ---------------------------------------------------------------------------------------------------
// Instance timers

#[test]
fn timers_due_during_downtime_fire_exactly_once_after_restart() {
    const N: usize = 20;
    let h = Harness::new("downtime-timers");
    h.engine.deploy("wait.bpmn", definitions("wait", WAIT_AN_HOUR).as_bytes(), &admin()).unwrap();
    let instances: Vec<InstanceKey> =
        (0..N).map(|_| h.engine.start("wait", VariableMap::new(), None, &admin()).unwrap()).collect();
    assert_eq!(h.engine.fire_due_timers().unwrap(), 0);

    let h = h.restart(Duration::hours(2));
    assert_eq!(h.engine.fire_due_timers().unwrap(), N);
    assert_eq!(h.engine.fire_due_timers().unwrap(), 0, "each timer fires once");
    assert_eq!(h.engine.store().due_timers(h.engine.now() + Duration::days(1), usize::MAX).unwrap(), []);
    for instance in &instances {
        assert_eq!(h.engine.instance(*instance).unwrap().meta.status, InstanceStatus::Completed);
        let records = records(&h.engine, *instance);
        let due = records
            .iter()
            .find_map(|record| match &record.event {
                Event::TimerScheduled { due, .. } => Some(*due),
                _ => None,
            })
            .unwrap();
        assert_eq!(due, t0() + Duration::hours(1));
        let fired: Vec<_> =
            records.iter().filter(|record| matches!(record.event, Event::TimerFired { .. })).collect();
        assert_eq!(fired.len(), 1, "instance {instance}");
        assert!(fired[0].at >= due, "instance {instance}: fired at {} before {due}", fired[0].at);
    }
    assert_eq!(h.verify_all(), N);
}

#[test]
fn a_cycle_boundary_reminds_daily_while_the_task_is_open_and_stops_when_it_is_done() {
    let h = Harness::new("boundary-cycle");
    h.engine.deploy("review.bpmn", definitions("review", DAILY_REMINDER).as_bytes(), &admin()).unwrap();
    let instance = h.engine.start("review", VariableMap::new(), None, &admin()).unwrap();
    let reminders = || {
        h.events(instance)
            .iter()
            .filter(
                |event| matches!(event, Event::ElementCompleted { element, .. } if element.0 == "reminded"),
            )
            .count()
    };
    for day in 1..=3 {
        h.clock.advance(Duration::days(1) - Duration::seconds(1));
        assert_eq!(h.engine.fire_due_timers().unwrap(), 0, "day {day}: never early");
        h.clock.advance(Duration::seconds(1));
        assert_eq!(h.engine.fire_due_timers().unwrap(), 1, "day {day}");
        assert_eq!(h.engine.fire_due_timers().unwrap(), 0);
        assert_eq!(reminders(), day);
    }
    let stored = h.engine.instance(instance).unwrap();
    assert_eq!(stored.meta.status, InstanceStatus::Active);
    let [timer] = &stored.state.timers.values().collect::<Vec<_>>()[..] else { panic!("one pending timer") };
    assert_eq!(timer.due, t0() + Duration::days(4));
    let [task] = stored.state.user_tasks.keys().copied().collect::<Vec<_>>()[..] else { panic!("one task") };

    let complete = Command::CompleteUserTask { task, variables: vars(json!({"decision": "approved"})) };
    h.engine.command(instance, &complete, &admin()).unwrap();
    let stored = h.engine.instance(instance).unwrap();
    assert_eq!(stored.meta.status, InstanceStatus::Completed);
    assert!(stored.state.timers.is_empty());
    assert!(h.events(instance).iter().any(|event| matches!(event, Event::TimerCancelled { .. })));
    let pending = h.engine.store().due_timers(h.engine.now() + Duration::days(365), usize::MAX).unwrap();
    assert!(pending.iter().all(|entry| entry.instance != instance), "the reminder is cancelled: {pending:?}");
    h.clock.advance(Duration::days(10));
    assert_eq!(h.engine.fire_due_timers().unwrap(), 0);
    assert_eq!(reminders(), 3);
    assert_eq!(h.verify_all(), 1);
}

// ---------------------------------------------------------------------------------------------------
// Flow triggers

#[test]
fn flow_triggers_start_a_process_when_another_completes_is_cancelled_or_fails() {
    let h = Harness::new("flow-triggers");
    h.engine.deploy("flow.bpmn", flow_triggers().as_bytes(), &admin()).unwrap();
    let start_a =
        |applicant: &str| h.engine.start("A", vars(json!({"applicant": applicant})), None, &admin()).unwrap();
    let job_of = |instance: InstanceKey| {
        let jobs = h.engine.jobs("a.work", usize::MAX).unwrap();
        jobs.iter().find(|job| job.instance == instance).expect("A waits at its job").job
    };
    // The one instance of B that `a` triggered.
    let b_of = |a: InstanceKey| -> InstanceKey {
        let started: Vec<_> = h
            .instances_of("B")
            .into_iter()
            .filter(|meta| h.variables(meta.key)["triggeredBy"]["instance"] == json!(a.0))
            .collect();
        let [meta] = &started[..] else { panic!("one B for A {a}: {started:?}") };
        meta.key
    };

    // Completed.
    let a = start_a("Amina");
    assert_eq!(h.instances_of("B"), [], "nothing is triggered while A runs");
    let complete = Command::CompleteJob { job: job_of(a), variables: vars(json!({"approved": true})) };
    h.engine.command(a, &complete, &Actor::engine()).unwrap();
    assert_eq!(h.engine.instance(a).unwrap().meta.status, InstanceStatus::Completed);
    let b = b_of(a);
    assert_eq!(h.start_event(b), "after-a");
    let variables = h.variables(b);
    assert_eq!(variables["applicant"], json!("Amina"), "A's variables are passed on");
    assert_eq!(variables["approved"], json!(true));
    let triggered_by = &variables["triggeredBy"];
    assert_eq!(triggered_by["processId"], json!("A"));
    assert_eq!(triggered_by["instance"], json!(a.0));
    assert_eq!(triggered_by["event"], json!(flow_trigger(FlowEvent::Completed, "A")));
    assert_eq!(h.engine.recover().unwrap(), 0, "nothing is left to perform");
    assert_eq!(h.instances_of("B").len(), 1, "recovering starts no second B");

    // Cancelled.
    let cancelled = start_a("Baraka");
    h.engine.command(cancelled, &Command::Cancel, &admin()).unwrap();
    assert_eq!(h.engine.instance(cancelled).unwrap().meta.status, InstanceStatus::Cancelled);
    let b = b_of(cancelled);
    assert_eq!(h.start_event(b), "after-a-cancelled");
    assert_eq!(h.variables(b)["applicant"], json!("Baraka"));
    assert_eq!(h.variables(b)["triggeredBy"]["event"], json!(flow_trigger(FlowEvent::Cancelled, "A")));

    // Failed: the job fails with no retries left, raising an incident.
    let failed = start_a("Chidi");
    let fail = Command::FailJob {
        job: job_of(failed),
        retries: 0,
        message: "the registry is down".to_owned(),
        backoff_ms: None,
    };
    h.engine.command(failed, &fail, &Actor::engine()).unwrap();
    let incidents = h.engine.store().incidents(None, usize::MAX).unwrap();
    assert_eq!(incidents.iter().map(|incident| incident.instance).collect::<Vec<_>>(), [failed]);
    assert_eq!(h.engine.instance(failed).unwrap().meta.status, InstanceStatus::Active, "an incident waits");
    let b = b_of(failed);
    assert_eq!(h.start_event(b), "after-a-failed");
    assert_eq!(h.variables(b)["applicant"], json!("Chidi"));
    assert_eq!(h.variables(b)["triggeredBy"]["event"], json!(flow_trigger(FlowEvent::Failed, "A")));

    assert_eq!(h.engine.recover().unwrap(), 0);
    assert_eq!(h.instances_of("B").len(), 3);
    assert_eq!(h.engine.store().outbox(usize::MAX).unwrap(), []);
    assert_eq!(h.verify_all(), 6);
}

// ---------------------------------------------------------------------------------------------------
// Time scale

#[test]
fn a_store_keeps_its_time_scale_and_refuses_another() {
    let fast = TestDir::new("scheduler", "scale-3600");
    let config = CommitConfig { time_scale: 3600.0, ..CommitConfig::default() };
    let recorded = {
        let store = open_sled_with(&fast.0, config).unwrap();
        let recorded = store.time_scale().unwrap();
        assert_eq!(recorded.scale, 3600.0);
        recorded
    };
    match open_sled(&fast.0) {
        Err(StoreError::TimeScale { path, found, requested }) => {
            assert_eq!(path, fast.0.display().to_string());
            assert_eq!((found, requested), (3600.0, 1.0));
        }
        other => panic!("expected a time-scale refusal, got {other:?}"),
    }
    let store = open_sled_with(&fast.0, config).unwrap();
    assert_eq!(store.time_scale().unwrap(), recorded, "the origin is kept across reopening");

    // Engine time runs 3600× faster than real time from the recorded origin.
    let clock = ScaledClock { scale: store.time_scale().unwrap() };
    assert_eq!(clock.scale(), 3600.0);
    assert_eq!(clock.real(std::time::Duration::from_secs(3600)), std::time::Duration::from_secs(1));
    let expected = |real: DateTime<FixedOffset>| {
        let elapsed = (real - recorded.origin_real).num_nanoseconds().unwrap() as f64 * 3600.0;
        recorded.origin_engine + Duration::nanoseconds(elapsed as i64)
    };
    let tolerance = Duration::milliseconds(1);
    let before = Utc::now().fixed_offset();
    let now = clock.now();
    let after = Utc::now().fixed_offset();
    assert!(
        expected(before) - tolerance <= now && now <= expected(after) + tolerance,
        "{now} is not within [{}, {}]",
        expected(before),
        expected(after)
    );
    assert!(now - recorded.origin_engine >= (before - recorded.origin_real) * 3599);
    drop(store);

    let normal = TestDir::new("scheduler", "scale-1");
    assert_eq!(open_sled(&normal.0).unwrap().time_scale().unwrap().scale, 1.0);
    match open_sled_with(&normal.0, config) {
        Err(StoreError::TimeScale { path, found, requested }) => {
            assert_eq!(path, normal.0.display().to_string());
            assert_eq!((found, requested), (1.0, 3600.0));
        }
        other => panic!("expected a time-scale refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// The shell on the real clock

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_starts_scheduled_processes_on_the_real_clock_never_early() {
    let engine = Arc::new(Engine::open(memory_store().unwrap(), Arc::new(SystemClock)).unwrap());
    let (sender, mut ended) = mpsc::unbounded_channel();
    let shell = Shell::builder(Arc::clone(&engine))
        .on_instance_ended(move |key: InstanceKey, status: InstanceStatus| {
            let _ = sender.send((key, status));
        })
        .start()
        .await
        .unwrap();
    // Deployed while the shell runs: it learns of the new schedule from the engine.
    let deployed_at = Utc::now().fixed_offset();
    engine.deploy("tick.bpmn", timer_start("tick", &cycle("R2/PT0.3S")).as_bytes(), &admin()).unwrap();

    let wait = std::time::Duration::from_secs(3);
    let mut started = Vec::new();
    while started.len() < 2 {
        let (key, status) = tokio::time::timeout(wait, ended.recv())
            .await
            .expect("two scheduled instances end within a few seconds")
            .expect("the shell is running");
        assert_eq!(status, InstanceStatus::Completed);
        started.push(key);
    }
    // The schedule is spent once the second start has moved it on.
    tokio::time::timeout(wait, async {
        while engine.next_schedule_due().unwrap().is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the schedule is spent after two starts");
    shell.shutdown().await;

    let period = Duration::milliseconds(300);
    let anchor = engine.store().schedules().unwrap()[0].anchor;
    assert!(anchor >= deployed_at);
    for (n, key) in (1..).zip(&started) {
        let records = records(&engine, *key);
        let created = &records[0];
        let events: Vec<Event> = records.iter().map(|record| record.event.clone()).collect();
        assert_eq!(start_event(&events), "s");
        assert_eq!(
            engine.instance(*key).unwrap().meta.business_key,
            Some(scheduled_key("tick", 1, anchor, n))
        );
        let due = deployed_at + period * i32::try_from(n).unwrap();
        assert!(created.at >= due, "start {n} at {} before its due time {due}", created.at);
    }
    let all = engine.instances(&InstanceFilter::default(), None, usize::MAX).unwrap();
    assert_eq!(all.len(), 2, "R2 starts twice");
    for meta in &all {
        engine.verify(meta.key).unwrap();
    }
}

/// Fixed: a schedule made again after it had started the process (re-enabled, or its version latest again
/// after a newer one was deleted) lost its first start, because that start's business key (`…/1`) was
/// already taken by the earlier schedule's first start. The key now carries the schedule's anchor.
#[test]
fn regression_a_schedule_made_again_keeps_its_first_start() {
    let h = Harness::new("made-again");
    h.engine.deploy("tick.bpmn", timer_start("tick", &cycle("R/PT1H")).as_bytes(), &admin()).unwrap();
    h.clock.advance(Duration::hours(1));
    assert_eq!(h.engine.fire_due_schedules().unwrap().len(), 1);
    h.clock.advance(Duration::minutes(30));
    h.engine.set_enabled("tick", 1, false, &admin()).unwrap();
    h.clock.advance(Duration::hours(1));
    h.engine.set_enabled("tick", 1, true, &admin()).unwrap();
    h.clock.advance(Duration::hours(1));
    let [again] = h.engine.fire_due_schedules().unwrap()[..] else {
        panic!("the re-enabled schedule starts")
    };
    let enabled = t0() + Duration::minutes(150);
    assert_eq!(h.business_key(again), Some(scheduled_key("tick", 1, enabled, 1)));

    // The same when a newer version is deleted and the older one is latest again.
    h.engine.deploy("tick.bpmn", timer_start("tick", &cycle("R/PT2H")).as_bytes(), &admin()).unwrap();
    h.engine.delete_definition("tick", 2, &admin()).unwrap();
    h.clock.advance(Duration::hours(1));
    let [back] = h.engine.fire_due_schedules().unwrap()[..] else { panic!("v1 is latest again and starts") };
    assert_eq!(h.engine.instance(back).unwrap().meta.version, 1);
    assert_eq!(h.verify_all(), 3);
}
