//! Shared harness of the journey end-to-end tests: the four journeys of `processes/` deployed as an agency
//! would, on a real engine and shell with every GovStack connector (`bb::all`) and the built-in message
//! publisher, against the sandbox of simulated building blocks over HTTP (directly or through its
//! Information Mediator), with the whole HTTP API — payment callbacks included — served on a local socket,
//! and a manual clock. It never sleeps to synchronise: every wait polls with a deadline.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use govflow_connectors::bb;
use govflow_connectors::config::{BbConfig, ConnectorsConfig, MediatorConfig, Secret};
use govflow_connectors::sandbox::{
    Channel, Disbursement, Person, Sandbox, SandboxConfig, SeedData, Service, SANDBOX_CLIENT_ID,
};
use govflow_designer_api::{app, hash_token, ApiConfig, AppState, Role, TokenEntry, Waiters};
use govflow_engine::audit::Actor;
use govflow_engine::engine::{Clock, Engine, ManualClock};
use govflow_engine::runtime::{Command, Event, InstanceKey, InstanceStatus, Key, VariableMap};
use govflow_engine::shell::Shell;
use govflow_engine::store::kv::KvStore;
use govflow_engine::store::memory::{memory_store, MemoryKv};
use govflow_engine::store::{IncidentEntry, InstanceFilter, InstanceMeta, Store, StoredInstance};
use serde_json::{json, Value};

pub use reqwest::Method;

pub type Mem = KvStore<MemoryKv>;

/// The sandbox seed of every journey test: the same persons, births and farmers on every run.
pub const SEED: u64 = 2025;

/// How long any one asynchronous effect (a callback, a chain of connector calls) may take on a loaded
/// two-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The mediator client the sandbox allows by default.
pub const CLIENT: &str = "GOV/GOV/WORKFLOW/GOVFLOW";

/// API tokens of the people who work the journeys (all with the `operator` role).
pub const REGISTRAR_TOKEN: &str = "journey-registrar-token";
pub const SUPERVISOR_TOKEN: &str = "journey-supervisor-token";
pub const OPERATOR_TOKEN: &str = "journey-operator-token";

/// The journeys' clock: manual — it moves only when a test advances it, so SLA timers and monthly
/// payments happen exactly when the test says — but with real waits shortened a thousandfold (at most
/// 50 ms). The shell sleeps `Clock::real(back-off)` before retrying a job, and `ManualClock::real` is the
/// identity, so on a plain `ManualClock` the payments tasks' `PT30S` exponential back-off would take
/// 7.5 minutes of real time to reach the incident.
#[derive(Debug)]
pub struct JourneyClock(ManualClock);

impl JourneyClock {
    pub fn advance(&self, by: chrono::Duration) {
        self.0.advance(by);
    }
}

impl Clock for JourneyClock {
    fn now(&self) -> DateTime<FixedOffset> {
        self.0.now()
    }

    fn real(&self, engine: Duration) -> Duration {
        (engine / 1000).min(Duration::from_millis(50))
    }
}

/// How the connectors reach the building blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Each BB at its own URL.
    Direct,
    /// Identity, registries and payments through the sandbox's Information Mediator (X-Road style);
    /// messaging directly (it has no mediated service in the sandbox configuration of `govflow serve`).
    Mediator,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn connectors_config(sandbox: &Sandbox, callback_url: &str, route: Route) -> ConnectorsConfig {
    let mut config = ConnectorsConfig {
        callback_url: Some(callback_url.to_owned()),
        timeout_ms: Some(5000),
        identity: BbConfig {
            url: Some(sandbox.base_url(Service::Identity)),
            client_id: Some(SANDBOX_CLIENT_ID.to_owned()),
            private_key_file: Some(repo().join("connectors/sandbox-keys/client-private.pem")),
            // Never contacted: the connector reads the redirect instead of following it.
            redirect_uri: Some("http://127.0.0.1:9/identity/callback".to_owned()),
            ..BbConfig::default()
        },
        registries: BbConfig {
            url: Some(sandbox.base_url(Service::Registries)),
            client_id: Some(CLIENT.to_owned()),
            ..BbConfig::default()
        },
        payments: BbConfig { url: Some(sandbox.base_url(Service::Payments)), ..BbConfig::default() },
        messaging: BbConfig {
            url: Some(sandbox.base_url(Service::Messaging)),
            api_key: Some(Secret::new("sandbox-api-key")),
            ..BbConfig::default()
        },
        ..ConnectorsConfig::default()
    };
    if route == Route::Mediator {
        config.mediator = Some(MediatorConfig {
            url: sandbox.base_url(Service::Mediator),
            client: CLIENT.to_owned(),
            client_header: Default::default(),
        });
        config.identity.url = None;
        config.identity.service = Some("GOV/GOV/IDP/IDENTITY/identity".to_owned());
        config.registries.url = None;
        config.registries.service = Some("GOV/GOV/REG/REGISTRY/registries".to_owned());
        config.payments.url = None;
        config.payments.service = Some("GOV/GOV/TREASURY/PAYMENTS/payments".to_owned());
    }
    config
}

fn api_config() -> ApiConfig {
    let mut config = ApiConfig { request_timeout: Duration::from_secs(20), ..ApiConfig::default() };
    let token = |token: &str, user: &str, affiliation: &str| TokenEntry {
        sha256: hash_token(token),
        role: Role::Operator,
        user: user.to_owned(),
        affiliation: Some(affiliation.to_owned()),
    };
    config.auth.tokens = vec![
        token(REGISTRAR_TOKEN, "registrar-1", "Civil Registry"),
        token(SUPERVISOR_TOKEN, "supervisor-1", "Civil Registry"),
        token(OPERATOR_TOKEN, "operator-1", "Ministry of Social Protection"),
    ];
    config
}

/// A running deployment: sandbox, engine, shell with connectors and built-ins, the API on a socket.
pub struct Journey {
    pub sandbox: Sandbox,
    pub engine: Arc<Engine<Mem>>,
    pub shell: Arc<Shell<Mem>>,
    pub clock: Arc<JourneyClock>,
    /// `http://127.0.0.1:PORT`: the API, and the payment callbacks under `/api/v1/callbacks`.
    pub base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Journey {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Journey {
    /// Starts everything with the clock at `now` (RFC 3339) and deploys every file of `processes/`.
    pub async fn start(now: &str, route: Route) -> Journey {
        Journey::start_with_callback_delay(now, route, Duration::from_millis(20)).await
    }

    /// [`Journey::start`] with a Payments BB that calls back `delay` (real time) after accepting a batch.
    pub async fn start_with_callback_delay(now: &str, route: Route, delay: Duration) -> Journey {
        let sandbox = Sandbox::start(SandboxConfig {
            seed: SEED,
            payment_callback_delay: delay,
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = connectors_config(&sandbox, &format!("{base}/api/v1/callbacks"), route);
        let connectors = bb::all(Arc::new(config)).unwrap();
        let clock = Arc::new(JourneyClock(ManualClock::new(
            DateTime::parse_from_rfc3339(now).expect("an RFC 3339 time"),
        )));
        let engine = Arc::new(Engine::open(memory_store().unwrap(), clock.clone()).unwrap());
        deploy_processes(&engine);
        let waiters = Waiters::new();
        let builder = Shell::builder(Arc::clone(&engine)).on_instance_ended(waiters.hook()).with_builtins();
        let builder = govflow_connectors::connector::register(builder, &connectors);
        let shell = Arc::new(builder.start().await.unwrap());
        let state = AppState::with_waiters(Arc::clone(&engine), Arc::clone(&shell), api_config(), waiters);
        let router = app(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let http = reqwest::Client::builder().timeout(DEADLINE).build().unwrap();
        Journey { sandbox, engine, shell, clock, base, http, server }
    }

    pub fn seed(&self) -> &SeedData {
        self.sandbox.seed_data()
    }

    pub fn now(&self) -> DateTime<FixedOffset> {
        self.engine.now()
    }

    // ----- the engine, as the test acting as a person or a portal -----

    /// Starts `process` at its none start event, as a citizen portal would.
    pub async fn start_instance(&self, process: &str, variables: Value) -> InstanceKey {
        self.shell
            .start_instance(process, vars(variables), None, Actor::user("citizen-portal", None))
            .await
            .unwrap()
    }

    /// Moves the clock and fires every timer then due; returns how many this call fired (the shell may
    /// fire some of them itself).
    pub fn advance(&self, by: chrono::Duration) -> usize {
        self.clock.advance(by);
        self.engine.fire_due_timers().unwrap()
    }

    /// Moves the clock to `at` (RFC 3339) and fires what is due.
    pub fn advance_to(&self, at: &str) -> usize {
        let at = DateTime::parse_from_rfc3339(at).unwrap();
        let by = at - self.now();
        assert!(by >= chrono::Duration::zero(), "the clock only moves forward ({} → {at})", self.now());
        self.advance(by)
    }

    /// Polls `probe` until it answers, failing after [`DEADLINE`] with `what` and the open incidents.
    /// Between probes it fires the timers due by the manual clock: a timer that an instance schedules
    /// already due (a payment date in the past) fires as the shell would fire it on a real clock, whose
    /// in-memory window of timers never lags behind a clock that jumps.
    pub async fn until<T>(&self, what: impl Display, mut probe: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = probe() {
                return found;
            }
            self.engine.fire_due_timers().unwrap();
            assert!(
                started.elapsed() < DEADLINE,
                "{what}: not within {DEADLINE:?}; open incidents: {:?}",
                self.engine.store().incidents(None, usize::MAX).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn stored(&self, key: InstanceKey) -> StoredInstance {
        self.engine.instance(key).unwrap()
    }

    pub fn status(&self, key: InstanceKey) -> InstanceStatus {
        self.stored(key).meta.status
    }

    /// Waits until the instance has ended; returns it.
    pub async fn ended(&self, key: InstanceKey) -> StoredInstance {
        self.until(format!("instance {key} ends"), || {
            let stored = self.stored(key);
            (stored.meta.status != InstanceStatus::Active).then_some(stored)
        })
        .await
    }

    /// The process-scope variables.
    pub fn variables(&self, key: InstanceKey) -> VariableMap {
        let stored = self.stored(key);
        stored.state.root.and_then(|root| stored.state.variables.get(&root).cloned()).unwrap_or_default()
    }

    pub fn var(&self, key: InstanceKey, name: &str) -> Value {
        self.variables(key).get(name).cloned().unwrap_or(Value::Null)
    }

    pub fn events(&self, key: InstanceKey) -> Vec<Event> {
        self.engine.store().records(key, 1, usize::MAX).unwrap().into_iter().map(|r| r.event).collect()
    }

    /// The ids of the end events the instance completed, in order (inner scopes included).
    pub fn end_events(&self, key: InstanceKey) -> Vec<String> {
        let events = self.events(key);
        let ends: BTreeSet<Key> = events
            .iter()
            .filter_map(|event| match event {
                Event::ElementActivated { key, element_type, .. } if element_type == "endEvent" => Some(*key),
                _ => None,
            })
            .collect();
        events
            .iter()
            .filter_map(|event| match event {
                Event::ElementCompleted { key, element } if ends.contains(key) => Some(element.0.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many times element `id` completed.
    pub fn n_completed(&self, key: InstanceKey, id: &str) -> usize {
        self.events(key)
            .iter()
            .filter(|event| matches!(event, Event::ElementCompleted { element, .. } if element.0 == id))
            .count()
    }

    /// The open user task of `element`, once it is open.
    pub async fn task(&self, key: InstanceKey, element: &str) -> Key {
        self.until(format!("user task {element} of instance {key} opens"), || {
            self.stored(key)
                .state
                .user_tasks
                .values()
                .find(|task| task.element.0 == element)
                .map(|task| task.key)
        })
        .await
    }

    /// The open user tasks of an instance, by element id.
    pub fn open_tasks(&self, key: InstanceKey) -> Vec<String> {
        self.stored(key).state.user_tasks.values().map(|task| task.element.0.clone()).collect()
    }

    /// The open timers of an instance: (element, due).
    pub fn open_timers(&self, key: InstanceKey) -> Vec<(String, DateTime<FixedOffset>)> {
        self.stored(key).state.timers.values().map(|timer| (timer.element.0.clone(), timer.due)).collect()
    }

    /// Waits until the instance waits at timer `element`; returns its due time.
    pub async fn timer(&self, key: InstanceKey, element: &str) -> DateTime<FixedOffset> {
        self.until(format!("instance {key} waits at timer {element}"), || {
            self.open_timers(key).into_iter().find(|(id, _)| id == element).map(|(_, due)| due)
        })
        .await
    }

    /// Completes user task `element` as `user`.
    pub async fn complete_task(&self, key: InstanceKey, element: &str, user: &str, variables: Value) {
        let task = self.task(key, element).await;
        let command = Command::CompleteUserTask { task, variables: vars(variables) };
        self.shell.command(key, command, Actor::user(user, None)).await.unwrap();
    }

    /// Waits until the instance has an open incident; returns it.
    pub async fn incident(&self, key: InstanceKey) -> IncidentEntry {
        self.until(format!("instance {key} raises an incident"), || {
            let incidents = self.engine.store().incidents(None, usize::MAX).unwrap();
            incidents.into_iter().find(|incident| incident.instance == key)
        })
        .await
    }

    pub fn n_incidents(&self) -> usize {
        self.engine.store().incidents(None, usize::MAX).unwrap().len()
    }

    /// Every instance of `process`, oldest first.
    pub fn instances(&self, process: &str) -> Vec<InstanceMeta> {
        let filter = InstanceFilter { process_id: Some(process.to_owned()), ..InstanceFilter::default() };
        self.engine.instances(&filter, None, usize::MAX).unwrap()
    }

    /// Verifies the audit chain of every instance in the store (each recomputed and replayed); returns
    /// how many there are. Call it when nothing is in flight.
    pub fn verify_all(&self) -> usize {
        let all = self.engine.instances(&InstanceFilter::default(), None, usize::MAX).unwrap();
        for meta in &all {
            let n = self.engine.verify(meta.key).unwrap_or_else(|error| {
                panic!("audit chain of instance {} ({}): {error}", meta.key, meta.process_id)
            });
            assert!(n > 0, "instance {} has no recorded events", meta.key);
        }
        all.len()
    }

    // ----- the HTTP API, as a registrar, supervisor or operator -----

    /// One API call with `token`; answers the status and the JSON body (`null` when empty).
    pub async fn api_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// An API call as the operator, expecting `status`.
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>, status: u16) -> Value {
        let (got, json) = self.api_as(OPERATOR_TOKEN, method.clone(), path, body).await;
        assert_eq!(got, status, "{method} {path}: {json}");
        json
    }

    // ----- the sandbox -----

    /// Every disbursement, checked to be paid once per `requestId`, grouped by who was credited
    /// (`financialAddress`).
    pub fn paid_once(&self) -> BTreeMap<String, Vec<Disbursement>> {
        let disbursements = self.sandbox.disbursements();
        let mut request_ids = BTreeSet::new();
        for d in &disbursements {
            assert!(
                request_ids.insert(d.request_id.clone()),
                "requestId {} paid twice: {disbursements:#?}",
                d.request_id
            );
        }
        let mut by_account: BTreeMap<String, Vec<Disbursement>> = BTreeMap::new();
        for d in disbursements {
            by_account.entry(d.financial_address.clone()).or_default().push(d);
        }
        by_account
    }

    /// The SMS texts sent to `phone`, in order.
    pub fn sms_to(&self, phone: &str) -> Vec<String> {
        self.sandbox
            .messages()
            .into_iter()
            .filter(|m| m.channel == Channel::Sms && m.to == phone)
            .map(|m| m.body)
            .collect()
    }

    /// The records of `registry` whose `field` is `value`.
    pub fn records(&self, registry: &str, field: &str, value: &str) -> Vec<Value> {
        self.sandbox.registry(registry).into_iter().filter(|record| record[field] == value).collect()
    }
}

/// Deploys every `.dmn` and `.bpmn` file of `processes/`, as `govflow demo` does.
pub fn deploy_processes<S: Store + 'static>(engine: &Engine<S>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("processes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bpmn" || ext == "dmn"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the four journeys and the decision: {files:?}");
    let designer = Actor::user("designer-1", Some("e-Services Agency".to_owned()));
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        engine.deploy(&name, &bytes, &designer).unwrap_or_else(|error| panic!("deploying {name}: {error}"));
    }
}

pub fn vars(value: Value) -> VariableMap {
    match value {
        Value::Object(object) => object.into_iter().collect(),
        other => panic!("variables must be a JSON object, not {other}"),
    }
}

/// A person as the journeys' start variables name them: `{nationalId, firstName, lastName, phone}`.
pub fn person_json(person: &Person) -> Value {
    json!({
        "nationalId": person.national_id,
        "firstName": person.first_name,
        "lastName": person.last_name,
        "phone": person.phone,
    })
}
