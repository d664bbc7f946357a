//! The tokio shell end to end: jobs reach in-process handlers only after their batch is durable, failures
//! are retried then become incidents, business errors are caught by BPMN, a job whose completion was not
//! committed is handed out again after a restart with the same idempotency key, timers fire on the real
//! clock never before they are due (also on a demo clock running 3,600× faster), and shutdown waits for
//! handlers in flight. No test sleeps to synchronise: each waits for the engine to report what it expects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, JobHandle, SystemClock};
use govflow_engine::runtime::{Event, InstanceKey, InstanceStatus, VariableMap};
use govflow_engine::shell::{JobOutcome, Shell, ShellConfig};
use govflow_engine::store::memory::memory_store;
use govflow_engine::store::sled::open_sled;
use govflow_engine::store::Store;
use tokio::sync::mpsc;

fn process(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="shell-test" targetNamespace="http://govflow.example/test">
  <bpmn:error id="not-verified" errorCode="ID_NOT_VERIFIED" />
  <bpmn:process id="p" isExecutable="true">{body}</bpmn:process>
</bpmn:definitions>"#
    )
}

/// start → verify (retries 3) → end, with an error boundary on verify leading to `rejected`.
fn verify_process() -> String {
    process(
        r#"<bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="verify" />
    <bpmn:serviceTask id="verify"><bpmn:extensionElements><zeebe:taskDefinition type="verify" retries="3" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:boundaryEvent id="caught" attachedToRef="verify"><bpmn:errorEventDefinition errorRef="not-verified" /></bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f2" sourceRef="verify" targetRef="end" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f3" sourceRef="caught" targetRef="rejected" />
    <bpmn:endEvent id="rejected" />"#,
    )
}

/// Waits (without sleeping) until `n` instances have ended, returning them in order of ending.
async fn ended(
    receiver: &mut mpsc::UnboundedReceiver<(InstanceKey, InstanceStatus)>,
    n: usize,
) -> Vec<InstanceKey> {
    let mut keys = Vec::new();
    while keys.len() < n {
        let (key, _) = tokio::time::timeout(Duration::from_secs(20), receiver.recv())
            .await
            .expect("instances end within 20 s")
            .expect("the shell is running");
        keys.push(key);
    }
    keys
}

fn ended_channel() -> (
    impl Fn(InstanceKey, InstanceStatus) + Send + Sync + 'static,
    mpsc::UnboundedReceiver<(InstanceKey, InstanceStatus)>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (
        move |key, status| {
            let _ = sender.send((key, status));
        },
        receiver,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_complete_fail_and_throw_as_told() {
    let engine = Arc::new(Engine::open(memory_store().unwrap(), Arc::new(SystemClock)).unwrap());
    engine.deploy("p.bpmn", verify_process().as_bytes(), &Actor::engine()).unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let (hook, mut receiver) = ended_channel();
    let seen = Arc::clone(&attempts);
    let shell = Shell::builder(Arc::clone(&engine))
        .handler("verify", move |job: JobHandle| {
            let seen = Arc::clone(&seen);
            async move {
                let outcome = match job.variables.get("mode").and_then(|m| m.as_str()) {
                    // Fails twice with a short back-off, then succeeds on the third attempt.
                    Some("flaky") if seen.fetch_add(1, Ordering::AcqRel) < 2 => JobOutcome::Fail {
                        message: "503 from the registry".into(),
                        backoff: Some(Duration::from_millis(20)),
                    },
                    Some("broken") => {
                        JobOutcome::Fail { message: "connection refused".into(), backoff: None }
                    }
                    Some("unknown-person") => {
                        JobOutcome::Error { code: "ID_NOT_VERIFIED".into(), message: "no such person".into() }
                    }
                    _ => JobOutcome::Complete(VariableMap::from([(
                        "verified".into(),
                        serde_json::json!(true),
                    )])),
                };
                outcome
            }
        })
        .on_instance_ended(hook)
        .start()
        .await
        .unwrap();
    let start = |mode: &str| {
        let variables = VariableMap::from([("mode".to_owned(), serde_json::json!(mode))]);
        shell.start_instance("p", variables, None, Actor::engine())
    };
    let ok = start("ok").await.unwrap();
    let flaky = start("flaky").await.unwrap();
    let unknown = start("unknown-person").await.unwrap();
    let broken = start("broken").await.unwrap();
    let mut done = ended(&mut receiver, 3).await;
    done.sort_unstable();
    assert_eq!(done, [ok, flaky, unknown]);

    let events = |key| -> Vec<Event> {
        engine.store().records(key, 1, usize::MAX).unwrap().into_iter().map(|r| r.event).collect()
    };
    let n_failed = events(flaky).iter().filter(|e| matches!(e, Event::JobFailed { .. })).count();
    assert_eq!(n_failed, 2, "two failures, then the third attempt completed");
    assert!(events(unknown)
        .iter()
        .any(|e| matches!(e, Event::ElementCompleted { element, .. } if element.0 == "rejected")));
    // The broken job exhausts its three retries and becomes an incident an operator can see.
    let incidents = loop {
        let incidents = engine.store().incidents(None, 10).unwrap();
        if !incidents.is_empty() {
            break incidents;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].instance, broken);
    assert!(incidents[0].message.contains("connection refused"), "{:?}", incidents[0]);
    shell.shutdown().await;
    for key in [ok, flaky, unknown, broken] {
        engine.verify(key).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_job_is_handed_out_again_after_a_restart_with_the_same_key() {
    let dir = std::env::temp_dir().join(format!("govflow-shell-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (instance, key_before) = {
        let engine = Arc::new(Engine::open(open_sled(&dir).unwrap(), Arc::new(SystemClock)).unwrap());
        engine.deploy("p.bpmn", verify_process().as_bytes(), &Actor::engine()).unwrap();
        // No handler for "verify" in this run: the job stays open, as if the process died mid-call.
        let shell = Shell::builder(Arc::clone(&engine)).start().await.unwrap();
        let instance = shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
        let jobs = engine.jobs("verify", 10).unwrap();
        shell.shutdown().await;
        (instance, jobs[0].idempotency_key.clone())
    };
    let engine = Arc::new(Engine::open(open_sled(&dir).unwrap(), Arc::new(SystemClock)).unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let (hook, mut receiver) = ended_channel();
    let seen = Arc::clone(&received);
    let shell = Shell::builder(Arc::clone(&engine))
        .handler("verify", move |job: JobHandle| {
            seen.lock().unwrap().push((job.idempotency_key.clone(), job.attempt, job.redelivered));
            async { JobOutcome::Complete(VariableMap::new()) }
        })
        .on_instance_ended(hook)
        .start()
        .await
        .unwrap();
    assert_eq!(ended(&mut receiver, 1).await, [instance]);
    // Still attempt 1 (nothing failed), but marked: it may have run before the restart.
    assert_eq!(*received.lock().unwrap(), [(key_before, 1, true)]);
    // A job created after the restart is a first delivery.
    let second = shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    assert_eq!(ended(&mut receiver, 1).await, [second]);
    let fresh = received.lock().unwrap()[1].clone();
    assert!(!fresh.2, "{fresh:?}");
    shell.shutdown().await;
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_on_the_real_clock_never_early() {
    let engine = Arc::new(Engine::open(memory_store().unwrap(), Arc::new(SystemClock)).unwrap());
    let bpmn = process(
        r#"<bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition><bpmn:timeDuration>=duration(delay)</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="end" />
    <bpmn:endEvent id="end" />"#,
    );
    engine.deploy("p.bpmn", bpmn.as_bytes(), &Actor::engine()).unwrap();
    let (hook, mut receiver) = ended_channel();
    let shell = Shell::builder(Arc::clone(&engine)).on_instance_ended(hook).start().await.unwrap();
    let mut keys = Vec::new();
    for delay in ["PT0.3S", "PT0.1S", "PT0.5S", "PT0.2S"] {
        let variables = VariableMap::from([("delay".to_owned(), serde_json::json!(delay))]);
        keys.push(shell.start_instance("p", variables, None, Actor::engine()).await.unwrap());
    }
    let order = ended(&mut receiver, 4).await;
    assert_eq!(order, [keys[1], keys[3], keys[0], keys[2]], "timers fire in due order");
    for key in keys {
        let records = engine.store().records(key, 1, usize::MAX).unwrap();
        let due = records
            .iter()
            .find_map(|r| match &r.event {
                Event::TimerScheduled { due, .. } => Some(*due),
                _ => None,
            })
            .unwrap();
        let fired = records.iter().find(|r| matches!(r.event, Event::TimerFired { .. })).unwrap();
        assert!(fired.at >= due, "instance {key}: fired at {} before its due time {due}", fired.at);
    }
    shell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_handlers_in_flight_and_commits_their_outcome() {
    let engine = Arc::new(Engine::open(memory_store().unwrap(), Arc::new(SystemClock)).unwrap());
    engine.deploy("p.bpmn", verify_process().as_bytes(), &Actor::engine()).unwrap();
    let (entered_sender, mut entered) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::clone(&release);
    let shell = Shell::builder(Arc::clone(&engine))
        .config(ShellConfig { max_concurrent_jobs: 4, ..ShellConfig::default() })
        .handler("verify", move |_job: JobHandle| {
            let (gate, entered) = (Arc::clone(&gate), entered_sender.clone());
            async move {
                let _ = entered.send(());
                gate.notified().await;
                JobOutcome::Complete(VariableMap::new())
            }
        })
        .start()
        .await
        .unwrap();
    let instance = shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    entered.recv().await.unwrap();
    assert_eq!(shell.jobs_in_flight(), 1);
    let shell = Arc::new(shell);
    let stopping = {
        let shell = Arc::clone(&shell);
        tokio::spawn(async move { shell.shutdown().await })
    };
    tokio::task::yield_now().await;
    assert!(!stopping.is_finished(), "shutdown waits for the handler");
    release.notify_one();
    stopping.await.unwrap();
    assert_eq!(engine.instance(instance).unwrap().meta.status, InstanceStatus::Completed);
}

/// A demo clock running 3,600× faster: a one-hour timer fires after about one real second, never before
/// its due time in engine time, and not a real hour later (the shell converts its waits to real time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_clock_fires_an_hour_timer_in_about_a_second() {
    use govflow_engine::engine::{Clock, ScaledClock};
    use govflow_engine::store::TimeScale;
    let now = chrono::Utc::now().fixed_offset();
    let clock =
        Arc::new(ScaledClock { scale: TimeScale { scale: 3600.0, origin_real: now, origin_engine: now } });
    let engine = Arc::new(Engine::open(memory_store().unwrap(), clock.clone()).unwrap());
    let bpmn = process(
        r#"<bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1H</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="end" />
    <bpmn:endEvent id="end" />"#,
    );
    engine.deploy("p.bpmn", bpmn.as_bytes(), &Actor::engine()).unwrap();
    let (hook, mut receiver) = ended_channel();
    let shell = Shell::builder(Arc::clone(&engine)).on_instance_ended(hook).start().await.unwrap();
    let real_start = std::time::Instant::now();
    let key = shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    assert_eq!(ended(&mut receiver, 1).await, [key]);
    let real = real_start.elapsed();
    assert!(real < Duration::from_secs(5), "an engine hour took {real:?} of real time");
    let records = engine.store().records(key, 1, usize::MAX).unwrap();
    let due = records
        .iter()
        .find_map(|r| match &r.event {
            Event::TimerScheduled { due, .. } => Some(*due),
            _ => None,
        })
        .unwrap();
    let fired = records.iter().find(|r| matches!(r.event, Event::TimerFired { .. })).unwrap();
    assert!(fired.at >= due, "fired at {} before its due time {due}", fired.at);
    assert!(clock.now() >= due);
    shell.shutdown().await;
}

/// start → a → b → c → end: `a` and `b` have handlers, `c` only external workers.
fn chain_process() -> String {
    process(
        r#"<bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="a" />
    <bpmn:serviceTask id="a"><bpmn:extensionElements><zeebe:taskDefinition type="a" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="a" targetRef="b" />
    <bpmn:serviceTask id="b"><bpmn:extensionElements><zeebe:taskDefinition type="b" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f3" sourceRef="b" targetRef="c" />
    <bpmn:serviceTask id="c"><bpmn:extensionElements><zeebe:taskDefinition type="c" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f4" sourceRef="c" targetRef="end" />
    <bpmn:endEvent id="end" />"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_made_runnable_by_a_handlers_outcome_run_after_their_commit_within_their_limits() {
    // The shell runs the next job of an instance in the task whose commit created it: each job must still
    // be durable before its handler sees it, a type's limit must hold, and a job no handler takes must
    // still reach the external workers.
    let engine = Arc::new(Engine::open(memory_store().unwrap(), Arc::new(SystemClock)).unwrap());
    engine.deploy("p.bpmn", chain_process().as_bytes(), &Actor::engine()).unwrap();
    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let not_durable: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler = |engine: Arc<
        Engine<govflow_engine::store::kv::KvStore<govflow_engine::store::memory::MemoryKv>>,
    >| {
        let (running, most, not_durable) =
            (Arc::clone(&running), Arc::clone(&most), Arc::clone(&not_durable));
        move |job: JobHandle| {
            let (engine, running, most, not_durable) =
                (Arc::clone(&engine), Arc::clone(&running), Arc::clone(&most), Arc::clone(&not_durable));
            async move {
                let durable = engine.store().records(job.instance, 1, usize::MAX).unwrap().iter().any(
                    |record| matches!(record.event, Event::JobCreated { job: created, .. } if created == job.job),
                );
                if !durable {
                    not_durable.lock().unwrap().push(job.job_type.clone());
                }
                let now = running.fetch_add(1, Ordering::AcqRel) + 1;
                most.fetch_max(now, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(2)).await;
                running.fetch_sub(1, Ordering::AcqRel);
                JobOutcome::Complete(VariableMap::new())
            }
        }
    };
    let (hook, mut receiver) = ended_channel();
    let limit = govflow_engine::shell::JobLimits { max_concurrent: Some(1), timeout: None };
    let shell = Shell::builder(Arc::clone(&engine))
        .handler_with("a", handler(Arc::clone(&engine)), limit)
        .handler_with("b", handler(Arc::clone(&engine)), limit)
        .on_instance_ended(hook)
        .start()
        .await
        .unwrap();
    let mut started = Vec::new();
    for _ in 0..8 {
        started.push(shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap());
    }
    // Every instance reaches `c`, which only a worker takes.
    let mut activated = Vec::new();
    while activated.len() < started.len() {
        let jobs =
            shell.activate_jobs("c", 8, Duration::from_secs(60), Duration::from_millis(200)).await.unwrap();
        activated.extend(jobs);
    }
    assert_eq!(not_durable.lock().unwrap().len(), 0, "handlers saw jobs not yet durable");
    assert!(most.load(Ordering::Acquire) <= 2, "one `a` and one `b` at a time at most");
    for job in activated {
        shell.complete_job(job.instance, job.job, VariableMap::new(), Actor::engine()).await.unwrap();
    }
    let mut done = ended(&mut receiver, started.len()).await;
    done.sort_unstable();
    assert_eq!(done, started);
    shell.shutdown().await;
}
