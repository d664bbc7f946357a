//! Exactly-once payment across `kill -9`: a child process (this test binary, re-executed) runs a
//! sled-backed engine, the shell with the GovStack connectors and the payment callback router on a port
//! the parent chose, and starts N instances of a one-payment process. The sandbox runs in the parent, so
//! it outlives every child: its Payments BB first records each payment and then never answers
//! (`process_then_timeout`), so the connector times out and retries while the callbacks complete the
//! jobs. Calls go through the sandbox's Information Mediator, whose log counts the requests per job. The parent kills the child with SIGKILL a few times while payments are in flight, clears the
//! fault, and lets a last run finish. Every instance must complete, and the Payments BB must have paid
//! each beneficiary once, under the job's idempotency key. The kill points are printed with their seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bb_support;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bb_support::{finished, variables, Task};
use govflow_connectors::bb::{self, payments};
use govflow_connectors::callbacks::{router, ShellSink};
use govflow_connectors::config::{BbConfig, ConnectorsConfig, MediatorConfig};
use govflow_connectors::sandbox::{Fault, Sandbox, SandboxConfig, SeedData, Service};
use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, SystemClock};
use govflow_engine::runtime::{Event, InstanceStatus};
use govflow_engine::shell::Shell;
use govflow_engine::store::sled::open_sled;
use govflow_engine::store::InstanceFilter;
use serde_json::json;

const CHILD_DIR: &str = "GOVFLOW_BB_ONCE_DIR";
const CHILD_MEDIATOR_URL: &str = "GOVFLOW_BB_ONCE_MEDIATOR_URL";
const PAYMENTS_SERVICE: &str = "GOV/GOV/TREASURY/PAYMENTS/payments";
const CHILD_PORT: &str = "GOVFLOW_BB_ONCE_PORT";
const CHILD_N: &str = "GOVFLOW_BB_ONCE_N";
const TEST_NAME: &str = "each_beneficiary_is_paid_exactly_once_across_kill_9";
const N_INSTANCES: usize = 40;
const N_KILLS: usize = 3;
/// The sandbox's seed: the child derives the same beneficiaries from it.
const SEED: u64 = 0;

/// The beneficiaries: farmers registered with a bank account in the Payments BB's account mapper.
fn payees(n: usize) -> Vec<String> {
    let seed = SeedData::generate(SEED);
    let payees: Vec<String> = seed
        .farmers()
        .iter()
        .filter(|f| f.bank_account.is_some())
        .map(|f| f.national_id.clone())
        .take(n)
        .collect();
    assert_eq!(payees.len(), n, "the seed has {} farmers with an account", payees.len());
    payees
}

fn pay_task() -> Task {
    // Never an incident while the fault lasts: retries outnumber what the test can use up.
    let mut task = Task::new(payments::DISBURSE)
        .header("programmeAccount", "PROG-RELIEF")
        .header("retryBackoff", "PT0.1S")
        .input("=payee", "payee")
        .input("=amount", "amount")
        .input("=\"USD\"", "currency")
        .output("=payment", "payment");
    task.retries = 10_000;
    task
}

/// The child: runs until every instance has completed, printing `started {n}` after each start.
fn child(dir: &Path, mediator_url: &str, port: u16, n: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        // Through the Information Mediator, whose log shows every request the Payments BB received.
        let config = ConnectorsConfig {
            mediator: Some(MediatorConfig {
                url: mediator_url.to_owned(),
                client: bb_support::CLIENT.to_owned(),
                client_header: Default::default(),
            }),
            payments: BbConfig {
                service: Some(PAYMENTS_SERVICE.to_owned()),
                timeout_ms: Some(300),
                ..BbConfig::default()
            },
            callback_url: Some(format!("http://127.0.0.1:{port}")),
            ..ConnectorsConfig::default()
        };
        let connectors = bb::all(Arc::new(config)).unwrap();
        let listener = bind(port).await;
        let engine = Arc::new(Engine::open(open_sled(dir).unwrap(), Arc::new(SystemClock)).unwrap());
        engine
            .deploy("pay.bpmn", bb_support::process("pay", &pay_task()).as_bytes(), &Actor::engine())
            .unwrap();
        let builder =
            govflow_connectors::connector::register(Shell::builder(Arc::clone(&engine)), &connectors);
        let shell = Arc::new(builder.start().await.unwrap());
        let app = router(Arc::new(ShellSink(Arc::clone(&shell))));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut out = std::io::stdout();
        for (n, payee) in payees(n).into_iter().enumerate() {
            let business_key = format!("pay-{n}");
            let filter =
                InstanceFilter { business_key: Some(business_key.clone()), ..InstanceFilter::default() };
            if !engine.instances(&filter, None, 1).unwrap().is_empty() {
                continue;
            }
            let variables = bb_support::vars(json!({"payee": payee, "amount": 10 * (n + 1)}));
            shell.start_instance("pay", variables, Some(business_key), Actor::engine()).await.unwrap();
            out.write_all(format!("started {n}\n").as_bytes()).unwrap();
            out.flush().unwrap();
            // Pace the starts, so the parent's kills land while payments are in flight.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let completed =
            InstanceFilter { status: Some(InstanceStatus::Completed), ..InstanceFilter::default() };
        let started = Instant::now();
        while engine.instances(&completed, None, usize::MAX).unwrap().len() < n {
            assert!(started.elapsed() < Duration::from_secs(60), "the instances did not complete");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        out.write_all(b"all completed\n").unwrap();
        out.flush().unwrap();
    });
}

/// Binds the callback port; a killed predecessor's socket may take a moment to go.
async fn bind(port: u16) -> tokio::net::TcpListener {
    let started = Instant::now();
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(error) if started.elapsed() < Duration::from_secs(10) => {
                eprintln!("callback port {port} not free yet: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("cannot bind the callback port {port}: {error}"),
        }
    }
}

/// A small deterministic generator, so a failing run can be repeated from its printed seed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn spawn_child(dir: &Path, mediator_url: &str, port: u16) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .env(CHILD_MEDIATOR_URL, mediator_url)
        .env(CHILD_PORT, port.to_string())
        .env(CHILD_N, N_INSTANCES.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads the child's lines until `n` more instances were started (or it ended); returns the lines.
fn read_until_started(lines: &mut impl Iterator<Item = std::io::Result<String>>, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut n_started = 0;
    for line in lines {
        let line = line.unwrap();
        // libtest's own "test … ... " may share a line with the first one.
        if line.contains("started ") {
            n_started += 1;
        }
        seen.push(line);
        if n_started == n {
            break;
        }
    }
    seen
}

#[test]
fn each_beneficiary_is_paid_exactly_once_across_kill_9() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let mediator_url = std::env::var(CHILD_MEDIATOR_URL).unwrap();
        let port = std::env::var(CHILD_PORT).unwrap().parse().unwrap();
        let n = std::env::var(CHILD_N).unwrap().parse().unwrap();
        child(Path::new(&dir), &mediator_url, port, n);
        return;
    }
    let seed =
        std::env::var("GOVFLOW_BB_ONCE_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
    println!("exactly-once test: {N_INSTANCES} payments, {N_KILLS} kills, GOVFLOW_BB_ONCE_SEED={seed}");
    let mut random = XorShift(seed);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Callbacks come after the connector's 300 ms timeout: every payment call times out and is retried.
    let config = SandboxConfig {
        seed: SEED,
        payment_callback_delay: Duration::from_millis(400),
        ..SandboxConfig::default()
    };
    let sandbox: Sandbox = runtime.block_on(Sandbox::start(config)).unwrap();
    sandbox.set_fault(Service::Payments, Fault { process_then_timeout: true, ..Fault::default() });
    let mediator_url = sandbox.base_url(Service::Mediator);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir: PathBuf = std::env::temp_dir().join(format!("govflow-bb-once-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();

    for kill in 0..N_KILLS {
        if kill == N_KILLS - 1 {
            sandbox.clear_faults();
        }
        let mut child = spawn_child(&dir, &mediator_url, port);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a few more starts, and a moment more: amid calls, timeouts and callbacks. The first
        // run lives past the first calls' 300 ms timeout (12 or 13 starts, 30 ms apart), so timed-out
        // attempts are retried; at most 18 + 10 + 10 starts in all: the kills end before all 40 started.
        let n_starts = if kill == 0 { 12 + random.below(2) } else { 2 + random.below(4) } as usize;
        let seen = read_until_started(&mut lines, n_starts);
        std::thread::sleep(Duration::from_millis(random.below(150)));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(!finished, "the child ended before kill {kill}: {seen:?}");
        assert!(
            !seen.iter().any(|line| line == "all completed"),
            "kill {kill} came too late to test anything"
        );
        println!("kill {kill} after {} more starts ({:.1} s)", n_starts, started.elapsed().as_secs_f64());
    }
    let mut last = spawn_child(&dir, &mediator_url, port);
    let lines: Vec<String> =
        BufReader::new(last.stdout.take().unwrap()).lines().map_while(Result::ok).collect();
    assert!(last.wait().unwrap().success(), "the last run failed: {lines:?}");
    assert!(lines.iter().any(|line| line == "all completed"), "{lines:?}");
    println!("exactly-once test: kills and a final run took {:.1} s", started.elapsed().as_secs_f64());

    let engine = Engine::open(open_sled(&dir).unwrap(), Arc::new(SystemClock)).unwrap();
    let instances = engine.instances(&InstanceFilter::default(), None, usize::MAX).unwrap();
    assert_eq!(instances.len(), N_INSTANCES, "each instance started once");
    let mut job_keys = BTreeSet::new();
    let mut n_failed_attempts = 0;
    for meta in &instances {
        let stored = runtime.block_on(finished(&engine, meta.key));
        assert_eq!(stored.meta.status, InstanceStatus::Completed, "instance {} did not complete", meta.key);
        engine.verify(meta.key).unwrap();
        let events = bb_support::events(&engine, meta.key);
        let job = events
            .iter()
            .find_map(|event| match event {
                Event::JobCreated { job, .. } => Some(*job),
                _ => None,
            })
            .unwrap();
        let key = format!("{}-{job}", meta.key);
        assert_eq!(variables(&stored)["payment"]["requestId"], key.as_str(), "instance {}", meta.key);
        assert_eq!(variables(&stored)["payment"]["status"], "COMPLETED");
        let n_completed = events.iter().filter(|event| matches!(event, Event::JobCompleted { .. })).count();
        assert_eq!(n_completed, 1, "instance {}: the job completed once", meta.key);
        n_failed_attempts += events.iter().filter(|event| matches!(event, Event::JobFailed { .. })).count();
        job_keys.insert(key);
    }

    assert!(n_failed_attempts > 0, "no payment call timed out and was retried: the fault tested nothing");

    let disbursements = sandbox.disbursements();
    let request_ids: BTreeSet<String> = disbursements.iter().map(|d| d.request_id.clone()).collect();
    let paid: BTreeSet<String> = disbursements.iter().map(|d| d.payee_value.clone()).collect();
    assert_eq!(disbursements.len(), N_INSTANCES, "one payment per instance: {disbursements:#?}");
    assert_eq!(request_ids, job_keys, "each payment under its job's idempotency key, once");
    assert_eq!(paid, payees(N_INSTANCES).into_iter().collect::<BTreeSet<_>>(), "each beneficiary paid once");
    // The Payments BB saw some jobs' requests more than once (handed out again after a kill, or retried
    // after a timeout), and paid each once all the same.
    let mut requests: std::collections::BTreeMap<String, usize> = Default::default();
    for entry in sandbox.mediator_log().into_iter().filter(|entry| entry.service == "payments") {
        assert!(job_keys.contains(&entry.x_road_id), "a request for no job: {entry:?}");
        *requests.entry(entry.x_road_id).or_default() += 1;
    }
    assert_eq!(requests.len(), N_INSTANCES);
    let n_repeated = requests.values().filter(|n| **n > 1).count();
    assert!(n_repeated > 0, "no payment request was repeated: the kills tested nothing");
    for (n, payee) in payees(N_INSTANCES).iter().enumerate() {
        let d = disbursements.iter().find(|d| &d.payee_value == payee).unwrap();
        assert_eq!(d.amount, (10 * (n + 1)) as f64, "beneficiary {n} paid the amount of their instance");
    }
    println!(
        "exactly-once test: {N_INSTANCES} beneficiaries paid once each; {} requests for {n_repeated} jobs \
         sent more than once; {n_failed_attempts} attempts timed out",
        requests.values().sum::<usize>()
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
