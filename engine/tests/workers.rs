//! Job execution beyond plain handlers: external workers (activation with a lease and long polling,
//! completion, failure with back-off, BPMN errors, lease expiry, two workers never holding the same job),
//! back-off from task headers, per-type limits, handlers that hand a job off to a callback (`Pending`) or
//! declare it unfixable (`Incident`). No test sleeps to synchronise; the only time bounds asserted are
//! lower bounds (a retry never comes before its back-off) and "woken long before the poll's deadline".

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, JobHandle, SystemClock};
use govflow_engine::runtime::{Command, Event, InstanceKey, InstanceStatus, VariableMap};
use govflow_engine::shell::{JobLimits, JobOutcome, Shell};
use govflow_engine::store::memory::memory_store;
use govflow_engine::store::sled::open_sled;
use govflow_engine::store::Store;
use serde_json::json;
use tokio::sync::mpsc;

fn process(task: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="workers-test" targetNamespace="http://govflow.example/test">
  <bpmn:error id="dup" errorCode="DUPLICATE_RECORD" />
  <bpmn:process id="p" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:serviceTask id="work"><bpmn:extensionElements>{task}</bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:boundaryEvent id="caught" attachedToRef="work"><bpmn:errorEventDefinition errorRef="dup" /></bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f3" sourceRef="caught" targetRef="duplicate" />
    <bpmn:endEvent id="duplicate" />
  </bpmn:process>
</bpmn:definitions>"#
    )
}

const EXTERNAL: &str = r#"<zeebe:taskDefinition type="ext.work" retries="2" />"#;

type Ended = mpsc::UnboundedReceiver<(InstanceKey, InstanceStatus)>;

async fn shell_with<S: Store + 'static>(
    engine: Arc<Engine<S>>,
    configure: impl FnOnce(govflow_engine::shell::ShellBuilder<S>) -> govflow_engine::shell::ShellBuilder<S>,
) -> (Shell<S>, Ended) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let builder = Shell::builder(engine).on_instance_ended(move |key, status| {
        let _ = sender.send((key, status));
    });
    (configure(builder).start().await.unwrap(), receiver)
}

async fn next_ended(ended: &mut Ended) -> (InstanceKey, InstanceStatus) {
    tokio::time::timeout(Duration::from_secs(20), ended.recv())
        .await
        .expect("an instance ends within 20 s")
        .unwrap()
}

fn memory_engine(task: &str) -> Arc<Engine<impl Store>> {
    let engine = Arc::new(Engine::open(memory_store().unwrap(), Arc::new(SystemClock)).unwrap());
    engine.deploy("p.bpmn", process(task).as_bytes(), &Actor::engine()).unwrap();
    engine
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_activates_and_completes_a_job() {
    let engine = memory_engine(EXTERNAL);
    let (shell, mut ended) = shell_with(Arc::clone(&engine), |b| b).await;
    let instance = shell
        .start_instance(
            "p",
            VariableMap::from([("nationalId".into(), json!("NID-1"))]),
            None,
            Actor::engine(),
        )
        .await
        .unwrap();
    let jobs = shell.activate_jobs("ext.work", 10, LEASE, Duration::from_secs(10)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!((job.instance, job.job_type.as_str(), job.attempt), (instance, "ext.work", 1));
    assert_eq!(job.variables.get("nationalId"), Some(&json!("NID-1")));
    assert_eq!(job.idempotency_key, format!("{}-{}", instance, job.job));
    // Leased: nobody else gets it meanwhile.
    assert!(shell.activate_jobs("ext.work", 10, LEASE, Duration::ZERO).await.unwrap().is_empty());
    shell
        .complete_job(
            instance,
            job.job,
            VariableMap::from([("done".into(), json!(true))]),
            Actor::user("w", None),
        )
        .await
        .unwrap();
    assert_eq!(next_ended(&mut ended).await, (instance, InstanceStatus::Completed));
    let state = engine.instance(instance).unwrap().state;
    assert!(
        state.variables.values().any(|scope| scope.get("done") == Some(&json!(true))),
        "the worker's variables arrived"
    );
    // A second completion is refused: the job is gone.
    let again = shell.complete_job(instance, job.job, VariableMap::new(), Actor::engine()).await;
    assert!(again.is_err(), "a completed job cannot be completed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_hold_the_same_job() {
    let engine = memory_engine(EXTERNAL);
    let (shell, mut ended) = shell_with(Arc::clone(&engine), |b| b).await;
    let shell = Arc::new(shell);
    const N: usize = 60;
    for _ in 0..N {
        shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (shell, seen) = (Arc::clone(&shell), Arc::clone(&seen));
        workers.push(tokio::spawn(async move {
            loop {
                let jobs =
                    shell.activate_jobs("ext.work", 7, LEASE, Duration::from_millis(200)).await.unwrap();
                if jobs.is_empty() {
                    return;
                }
                seen.lock().unwrap().extend(jobs.iter().map(|job| (job.instance, job.job)));
                for job in jobs {
                    tokio::task::yield_now().await;
                    shell
                        .complete_job(job.instance, job.job, VariableMap::new(), Actor::engine())
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let distinct: BTreeSet<_> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "a job was handed to two workers");
    assert_eq!(distinct.len(), N);
    for _ in 0..N {
        assert_eq!(next_ended(&mut ended).await.1, InstanceStatus::Completed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_makes_the_job_available_again_with_the_same_key() {
    let engine = memory_engine(EXTERNAL);
    let (shell, _ended) = shell_with(Arc::clone(&engine), |b| b).await;
    shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    let first = shell
        .activate_jobs("ext.work", 1, Duration::from_millis(150), Duration::from_secs(10))
        .await
        .unwrap();
    let taken = Instant::now();
    assert_eq!(first.len(), 1);
    assert!(!first[0].redelivered, "a first activation");
    let second = shell.activate_jobs("ext.work", 1, LEASE, Duration::from_secs(10)).await.unwrap();
    assert!(taken.elapsed() >= Duration::from_millis(150), "handed out again before the lease ran out");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].idempotency_key, first[0].idempotency_key);
    assert!(second[0].redelivered, "the first worker may have done the work: the job says so");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_when_a_job_arrives() {
    let engine = memory_engine(EXTERNAL);
    let (shell, _ended) = shell_with(Arc::clone(&engine), |b| b).await;
    let shell = Arc::new(shell);
    let polling = {
        let shell = Arc::clone(&shell);
        tokio::spawn(async move { shell.activate_jobs("ext.work", 5, LEASE, Duration::from_secs(600)).await })
    };
    tokio::task::yield_now().await;
    let instance = shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    // Woken by the arrival, long before the ten-minute deadline.
    let jobs = tokio::time::timeout(Duration::from_secs(20), polling)
        .await
        .expect("the poll was not woken")
        .unwrap()
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].instance, instance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_failure_backs_off_then_becomes_an_incident_an_operator_retries() {
    let engine = memory_engine(EXTERNAL);
    let (shell, mut ended) = shell_with(Arc::clone(&engine), |b| b).await;
    let instance = shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    let job = shell.activate_jobs("ext.work", 1, LEASE, Duration::from_secs(10)).await.unwrap().remove(0);
    let failed_at = Instant::now();
    shell
        .fail_job(
            instance,
            job.job,
            None,
            "registry answered 503".into(),
            Some(Duration::from_millis(300)),
            Actor::engine(),
        )
        .await
        .unwrap();
    let retry = shell.activate_jobs("ext.work", 1, LEASE, Duration::from_secs(10)).await.unwrap().remove(0);
    assert!(failed_at.elapsed() >= Duration::from_millis(300), "handed out before its back-off");
    assert_eq!((retry.attempt, retry.retries, &retry.idempotency_key), (2, 1, &job.idempotency_key));
    // The last retry fails: an incident, and the job is no longer handed out.
    shell.fail_job(instance, retry.job, None, "still 503".into(), None, Actor::engine()).await.unwrap();
    let incidents = engine.store().incidents(None, 10).unwrap();
    assert_eq!(incidents.len(), 1);
    assert!(incidents[0].message.contains("still 503"), "{}", incidents[0].message);
    assert!(shell.activate_jobs("ext.work", 1, LEASE, Duration::from_millis(300)).await.unwrap().is_empty());
    // The operator retries; the job comes back and completes.
    shell
        .command(
            instance,
            Command::ResolveIncident { incident: incidents[0].incident, variables: VariableMap::new() },
            Actor::user("operator", None),
        )
        .await
        .unwrap();
    let again = shell.activate_jobs("ext.work", 1, LEASE, Duration::from_secs(10)).await.unwrap().remove(0);
    assert_eq!(again.idempotency_key, job.idempotency_key);
    shell.complete_job(instance, again.job, VariableMap::new(), Actor::engine()).await.unwrap();
    assert_eq!(next_ended(&mut ended).await, (instance, InstanceStatus::Completed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_error_is_caught_by_the_boundary_event() {
    let engine = memory_engine(EXTERNAL);
    let (shell, mut ended) = shell_with(Arc::clone(&engine), |b| b).await;
    let instance = shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    let job = shell.activate_jobs("ext.work", 1, LEASE, Duration::from_secs(10)).await.unwrap().remove(0);
    shell
        .throw_job_error(
            instance,
            job.job,
            "DUPLICATE_RECORD".into(),
            "already registered".into(),
            Actor::engine(),
        )
        .await
        .unwrap();
    assert_eq!(next_ended(&mut ended).await, (instance, InstanceStatus::Completed));
    let completed: Vec<String> = engine
        .store()
        .records(instance, 1, usize::MAX)
        .unwrap()
        .into_iter()
        .filter_map(|record| match record.event {
            Event::ElementCompleted { element, .. } => Some(element.0),
            _ => None,
        })
        .collect();
    assert!(completed.iter().any(|e| e == "duplicate"), "the error path was taken: {completed:?}");
    assert!(!completed.iter().any(|e| e == "end"));
}

/// Records when each attempt of a handler that always fails without naming a back-off ran.
async fn attempt_times(headers: &str, attempts: usize) -> Vec<Instant> {
    let task = format!(
        r#"<zeebe:taskDefinition type="flaky" retries="{attempts}" /><zeebe:taskHeaders>{headers}</zeebe:taskHeaders>"#
    );
    let engine = memory_engine(&task);
    let times = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&times);
    let (shell, _ended) = shell_with(Arc::clone(&engine), move |b| {
        b.handler("flaky", move |_job: JobHandle| {
            let recorded = Arc::clone(&recorded);
            async move {
                recorded.lock().unwrap().push(Instant::now());
                JobOutcome::Fail { message: "down".into(), backoff: None }
            }
        })
    })
    .await;
    shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.store().incidents(None, 1).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no incident after {attempts} attempts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), attempts);
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_off_comes_from_the_task_headers() {
    let fixed = attempt_times(r#"<zeebe:header key="retryBackoff" value="PT0.2S" />"#, 3).await;
    for pair in fixed.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(200),
            "a fixed back-off was cut short: {:?}",
            pair[1] - pair[0]
        );
    }
    let exponential = attempt_times(
        r#"<zeebe:header key="retryBackoff" value="PT0.1S" /><zeebe:header key="retryBackoffPolicy" value="exponential" />"#,
        3,
    )
    .await;
    assert!(exponential[1] - exponential[0] >= Duration::from_millis(100));
    assert!(exponential[2] - exponential[1] >= Duration::from_millis(200), "the second wait doubles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_back_off_header_is_named_in_the_incident() {
    let task = r#"<zeebe:taskDefinition type="flaky" retries="1" /><zeebe:taskHeaders><zeebe:header key="retryBackoff" value="10 seconds" /></zeebe:taskHeaders>"#;
    let engine = memory_engine(task);
    let (shell, _ended) = shell_with(Arc::clone(&engine), |b| {
        b.handler("flaky", |_job: JobHandle| async {
            JobOutcome::Fail { message: "down".into(), backoff: None }
        })
    })
    .await;
    shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let incident = loop {
        if let Some(incident) = engine.store().incidents(None, 1).unwrap().pop() {
            break incident;
        }
        assert!(Instant::now() < deadline, "no incident");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(incident.message.contains("retryBackoff"), "{}", incident.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_outcome_skips_the_retries() {
    let engine = memory_engine(r#"<zeebe:taskDefinition type="misconfigured" retries="5" />"#);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let (shell, _ended) = shell_with(Arc::clone(&engine), move |b| {
        b.handler("misconfigured", move |_job: JobHandle| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { JobOutcome::Incident { message: "header 'registry' is missing".into() } }
        })
    })
    .await;
    shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.store().incidents(None, 1).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no incident");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no retry after an incident outcome");
    assert!(engine.store().incidents(None, 1).unwrap()[0].message.contains("registry"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_type_limit_bounds_concurrency() {
    let engine = memory_engine(r#"<zeebe:taskDefinition type="slow" />"#);
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, p) = (Arc::clone(&running), Arc::clone(&peak));
    let (shell, mut ended) = shell_with(Arc::clone(&engine), move |b| {
        b.handler_with(
            "slow",
            move |_job: JobHandle| {
                let (running, peak) = (Arc::clone(&r), Arc::clone(&p));
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    JobOutcome::Complete(VariableMap::new())
                }
            },
            JobLimits { max_concurrent: Some(2), timeout: None },
        )
    })
    .await;
    for _ in 0..8 {
        shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    }
    for _ in 0..8 {
        next_ended(&mut ended).await;
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2, "at most two at once, and the limit was reached");
    let (runs, seconds) = shell.handler_latency()["slow"];
    assert_eq!(runs, 8);
    assert!(seconds >= 8.0 * 0.02, "each run took at least its 20 ms sleep: {seconds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_type_timeout_fails_the_attempt() {
    let engine = memory_engine(r#"<zeebe:taskDefinition type="hangs" retries="1" />"#);
    let (shell, _ended) = shell_with(Arc::clone(&engine), |b| {
        b.handler_with(
            "hangs",
            |_job: JobHandle| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                JobOutcome::Complete(VariableMap::new())
            },
            JobLimits { max_concurrent: None, timeout: Some(Duration::from_millis(100)) },
        )
    })
    .await;
    shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.store().incidents(None, 1).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the hanging handler was never timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(engine.store().incidents(None, 1).unwrap()[0].message.contains("did not finish"));
}

/// A handler that hands the job off (a payment awaiting its callback): the job stays open, is completed
/// later by its id, and after a restart before that, is handed to the handler again with the same key.
#[test]
fn a_pending_job_waits_for_its_callback_across_a_restart() {
    let dir = common::TestDir::new("workers", "pending");
    let handed = Arc::new(Mutex::new(Vec::new()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pending_handler = |handed: Arc<Mutex<Vec<String>>>| {
        move |job: JobHandle| {
            handed.lock().unwrap().push(job.idempotency_key.clone());
            async { JobOutcome::Pending }
        }
    };
    let instance = runtime.block_on(async {
        let engine = Arc::new(Engine::open(open_sled(&dir.0).unwrap(), Arc::new(SystemClock)).unwrap());
        engine
            .deploy("p.bpmn", process(r#"<zeebe:taskDefinition type="pay" />"#).as_bytes(), &Actor::engine())
            .unwrap();
        let (shell, _ended) =
            shell_with(Arc::clone(&engine), |b| b.handler("pay", pending_handler(Arc::clone(&handed)))).await;
        let instance = shell.start_instance("p", VariableMap::new(), None, Actor::engine()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while handed.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the job never reached its handler");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shell.shutdown().await;
        assert_eq!(engine.instance(instance).unwrap().meta.status, InstanceStatus::Active, "still waiting");
        instance
    });
    runtime.block_on(async {
        let engine = Arc::new(Engine::open(open_sled(&dir.0).unwrap(), Arc::new(SystemClock)).unwrap());
        let (shell, mut ended) =
            shell_with(Arc::clone(&engine), |b| b.handler("pay", pending_handler(Arc::clone(&handed)))).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while handed.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline, "the pending job was not handed out again after the restart");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let keys = handed.lock().unwrap().clone();
        assert_eq!(keys[0], keys[1], "the same idempotency key after a restart");
        let (i, job) = govflow_engine::engine::parse_idempotency_key(&keys[0]).unwrap();
        assert_eq!(i, instance);
        shell
            .complete_job(i, job, VariableMap::from([("paid".into(), json!(true))]), Actor::engine())
            .await
            .unwrap();
        assert_eq!(next_ended(&mut ended).await, (instance, InstanceStatus::Completed));
    });
}

/// `govflow.message.publish`: a message end event starts another process, once, even when the job is
/// handed to the publisher twice (a crash between the publish and the job's completion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_end_event_starts_the_receiving_process_once() {
    use govflow_engine::builtin::{MessagePublisher, PUBLISH_MESSAGE};
    use govflow_engine::shell::JobHandler;
    let bpmn = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:message id="m-registered" name="registered" />
  <bpmn:process id="sender" isExecutable="true">
    <bpmn:startEvent id="s-start" />
    <bpmn:sequenceFlow id="s1" sourceRef="s-start" targetRef="s-end" />
    <bpmn:endEvent id="s-end"><bpmn:extensionElements><zeebe:taskDefinition type="govflow.message.publish" /><zeebe:ioMapping>
      <zeebe:input source="=&quot;registered&quot;" target="messageName" />
      <zeebe:input source="=certificate" target="correlationKey" />
      <zeebe:input source="={certificate: certificate}" target="variables" />
    </zeebe:ioMapping></bpmn:extensionElements><bpmn:messageEventDefinition messageRef="m-registered" /></bpmn:endEvent>
  </bpmn:process>
  <bpmn:process id="receiver" isExecutable="true">
    <bpmn:startEvent id="r-start"><bpmn:messageEventDefinition messageRef="m-registered" /></bpmn:startEvent>
    <bpmn:sequenceFlow id="r1" sourceRef="r-start" targetRef="r-wait" />
    <bpmn:userTask id="r-wait" />
    <bpmn:sequenceFlow id="r2" sourceRef="r-wait" targetRef="r-end" />
    <bpmn:endEvent id="r-end" />
  </bpmn:process>
</bpmn:definitions>"#;
    let engine = Arc::new(Engine::open(memory_store().unwrap(), Arc::new(SystemClock)).unwrap());
    engine.deploy("pair.bpmn", bpmn.as_bytes(), &Actor::engine()).unwrap();
    // No shell handler: the job waits, so the test can hand it to the publisher itself, twice.
    let (shell, _ended) = shell_with(Arc::clone(&engine), |b| b).await;
    let sender = shell
        .start_instance(
            "sender",
            VariableMap::from([("certificate".into(), json!("BC-1"))]),
            None,
            Actor::engine(),
        )
        .await
        .unwrap();
    let job =
        shell.activate_jobs(PUBLISH_MESSAGE, 1, LEASE, Duration::from_secs(10)).await.unwrap().remove(0);
    assert_eq!(job.instance, sender);
    let publisher = MessagePublisher::new(Arc::clone(&engine));
    assert_eq!(publisher.handle(job.clone()).await, JobOutcome::Complete(VariableMap::new()));
    assert_eq!(
        publisher.handle(job.clone()).await,
        JobOutcome::Complete(VariableMap::new()),
        "a repeat is done"
    );
    let receivers = engine
        .instances(
            &govflow_engine::store::InstanceFilter {
                process_id: Some("receiver".into()),
                ..Default::default()
            },
            None,
            10,
        )
        .unwrap();
    assert_eq!(receivers.len(), 1, "the receiving process started once");
    let state = engine.instance(receivers[0].key).unwrap().state;
    assert!(state.variables.values().any(|scope| scope.get("certificate") == Some(&json!("BC-1"))));
    // A job without a message name is an incident that names the input.
    let mut broken = job;
    broken.variables.remove("messageName");
    match publisher.handle(broken).await {
        JobOutcome::Incident { message } => assert!(message.contains("messageName"), "{message}"),
        other => panic!("expected an incident, got {other:?}"),
    }
}
