//! The sandbox: simulated GovStack building blocks in one process ("GovTest in one binary"), used by the
//! tests, `govflow sandbox` and `govflow demo`. It must never be mistaken for, or pointed at, a real
//! building block: its keys are published test keys and its data is fictional.
//!
//! One axum listener serves every simulated BB under its own prefix:
//!
//! | prefix | simulates | spec |
//! |---|---|---|
//! | `/identity` | Identity BB, eSignet-like OIDC provider (`identity.rs`) | `identity/Identity-Provider.yaml` |
//! | `/registries` | Digital Registries BB, Data API 1.3.0 (`registries.rs`) | `digital-registries/…Data_API…-1.3.0.yaml` |
//! | `/payments` | Payments BB: batch transactions, ID account mapper (`payments.rs`) | `payments/api/G2P-API-YAMLs` |
//! | `/messaging` | Messaging BB: e-mail (spec) and SMS (our extension) (`messaging.rs`) | `messaging/swagger.yaml` |
//! | `/im` | Information Mediator security server, X-Road style (`mediator.rs`) | `information-mediator/` |
//! | `/sandbox` | admin routes of the sandbox itself (no spec) | – |
//!
//! Admin routes: `GET /sandbox` (index of base URLs), `GET /sandbox/messages`, `GET /sandbox/disbursements`,
//! `GET /sandbox/beneficiaries`, `GET /sandbox/mediator-log`, `GET /sandbox/seed`,
//! `GET /sandbox/registries/{name}`, `GET /sandbox/faults`, `DELETE /sandbox/faults` (clear all),
//! `GET|PUT /sandbox/faults/{service}` with a JSON fault
//! `{"latency_ms": 0, "error_rate": 0.0, "down": false, "timeout": false, "process_then_timeout": false}`
//! (every field optional on `PUT`; camelCase spellings accepted too).
//!
//! Each submodule's header documents its routes, status codes and what it leaves out; the two shapes
//! that are ours rather than a spec's:
//!
//! # Payment callback
//! `payment_callback_delay` after `202 {batchId}`, the Payments BB posts to `X-Callback-URL` (headers
//! `X-CorrelationID`, `Platform-TenantId`) the fields of the spec's BulkPaymentStatusUpdate
//! (`requestId` = the correlation id, `TotalTransactions`, `ongoing`, `completed`, `failed`,
//! `totalAmount`, `completed_amount`, `ongoing_amount`, `failed_amount`, `result_file`,
//! `resultGeneratedAt`, `note`) plus
//! `{batchId, correlationId, status: "COMPLETED" | "FAILED", transactions: [{requestId, status, amount,
//! currency, reason?}]}` — `status` is `COMPLETED` only when no transaction failed. It is retried with
//! back-off while the target refuses or answers 5xx, sent again when the same `X-CorrelationID` is
//! submitted again, and a `requestId` is never paid twice.
//!
//! # SMS (Messaging extension)
//! `POST /messaging/send/sms/single` `{recipientInfo:{phoneNumber}, smsContent:{content}}` (or
//! `{to, message}`), `POST /messaging/send/sms/batch` (`recipientInfo.batchSmsAsBase64` or
//! `{to:[…], message}`), `GET /messaging/status/sms`; same headers and answers as e-mail.
//!
//! Faults ([`Fault`]) are applied by a middleware per service prefix, so they also hit requests that
//! arrive through the Information Mediator. The data starts from [`SeedData`], generated from
//! [`SandboxConfig::seed`]; equal seeds give equal data.
//!
//! Leaves out: TLS, persistence (everything is in memory and lost at shutdown), the Registration and
//! Consent BBs, and the parts of each spec listed in the submodule docs.

mod faults;
mod identity;
mod mediator;
mod messaging;
mod payments;
mod registries;
mod seed;

pub use identity::{
    SANDBOX_CLIENT_ID, SANDBOX_CLIENT_PRIVATE_KEY_PEM, SANDBOX_CLIENT_PUBLIC_KEY_PEM,
    SANDBOX_IDENTITY_PUBLIC_KEY_PEM,
};
pub use mediator::MediatedRequest;
pub use messaging::{Channel, SentMessage};
pub use payments::Disbursement;
pub use seed::{
    is_well_formed_national_id, BirthRecord, Farmer, Household, Licence, Person, SeedData,
    SEED_REFERENCE_DATE,
};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A simulated building block (or the mediator in front of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Identity,
    Registries,
    Payments,
    Messaging,
    Mediator,
}

impl Service {
    /// Every service, in a fixed order.
    pub const ALL: [Service; 5] =
        [Service::Identity, Service::Registries, Service::Payments, Service::Messaging, Service::Mediator];

    /// The lowercase name (`"identity"`, …), also accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Registries => "registries",
            Service::Payments => "payments",
            Service::Messaging => "messaging",
            Service::Mediator => "mediator",
        }
    }

    /// The URL path prefix the service is served under.
    fn prefix(self) -> &'static str {
        match self {
            Service::Identity => "/identity",
            Service::Registries => "/registries",
            Service::Payments => "/payments",
            Service::Messaging => "/messaging",
            Service::Mediator => "/im",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Service::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownService(pub String);

impl fmt::Display for UnknownService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown sandbox service {:?} (expected identity, registries, payments, messaging or mediator)",
            self.0
        )
    }
}

impl std::error::Error for UnknownService {}

impl FromStr for Service {
    type Err = UnknownService;

    fn from_str(s: &str) -> Result<Service, UnknownService> {
        Service::ALL
            .into_iter()
            .find(|service| service.as_str().eq_ignore_ascii_case(s.trim()))
            .or_else(|| {
                let alias = s.trim().to_ascii_lowercase();
                matches!(alias.as_str(), "im" | "information-mediator").then_some(Service::Mediator)
            })
            .ok_or_else(|| UnknownService(s.to_string()))
    }
}

/// A fault injected into one service; the default is "healthy".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    /// Added to every answer.
    pub latency: Duration,
    /// 0.0..=1.0: share of requests answered 500. Deterministic: decided from the sandbox seed and a
    /// per-service request counter, never from an OS random source.
    pub error_rate: f64,
    /// Every request answered 503 (the BB is down).
    pub down: bool,
    /// Never answers within any sane client timeout (sleeps about an hour), and does nothing.
    pub timeout: bool,
    /// Does the work (records the payment, creates the record), then hangs as `timeout`.
    pub process_then_timeout: bool,
}

/// The JSON form of a [`Fault`] on the admin routes: durations in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FaultJson {
    #[serde(alias = "latencyMs")]
    latency_ms: u64,
    #[serde(alias = "errorRate")]
    error_rate: f64,
    down: bool,
    timeout: bool,
    #[serde(alias = "processThenTimeout")]
    process_then_timeout: bool,
}

impl From<&Fault> for FaultJson {
    fn from(fault: &Fault) -> FaultJson {
        FaultJson {
            latency_ms: u64::try_from(fault.latency.as_millis()).unwrap_or(u64::MAX),
            error_rate: fault.error_rate,
            down: fault.down,
            timeout: fault.timeout,
            process_then_timeout: fault.process_then_timeout,
        }
    }
}

impl From<FaultJson> for Fault {
    fn from(json: FaultJson) -> Fault {
        Fault {
            latency: Duration::from_millis(json.latency_ms),
            error_rate: json.error_rate,
            down: json.down,
            timeout: json.timeout,
            process_then_timeout: json.process_then_timeout,
        }
    }
}

/// How to start a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where to listen; default `127.0.0.1:0` (any free port).
    pub addr: SocketAddr,
    /// Seed of the [`SeedData`] and of every deterministic choice (ids, fault decisions).
    pub seed: u64,
    /// How long after a `202` the Payments BB posts the batch outcome; default 200 ms.
    pub payment_callback_delay: Duration,
    /// How many times the Payments BB tries a callback whose target refuses or answers 5xx; default 5.
    pub callback_attempts: u32,
    /// Client ids `INSTANCE/CLASS/MEMBER/SUBSYSTEM` the mediator lets through;
    /// default `["GOV/GOV/WORKFLOW/GOVFLOW"]`.
    pub mediator_allow_list: Vec<String>,
    /// The `apiKey` header the Messaging BB expects; default `"sandbox-api-key"`.
    pub messaging_api_key: String,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            seed: 0,
            payment_callback_delay: Duration::from_millis(200),
            callback_attempts: 5,
            mediator_allow_list: vec!["GOV/GOV/WORKFLOW/GOVFLOW".to_string()],
            messaging_api_key: "sandbox-api-key".to_string(),
        }
    }
}

/// State shared by every simulated BB.
pub(crate) struct Shared {
    /// `http://HOST:PORT`, the root every base URL hangs from.
    base: String,
    config: SandboxConfig,
    seed: SeedData,
    faults: Mutex<faults::FaultTable>,
    registries: Mutex<registries::Store>,
    identity: identity::Identity,
    payments: Mutex<payments::Ledger>,
    messaging: Mutex<messaging::Outbox>,
    mediator_log: Mutex<Vec<MediatedRequest>>,
    /// Deterministic ids (batch ids, request uids) drawn in request order.
    ids: Mutex<seed::Rng>,
    /// Flips to `true` at shutdown; hanging requests and pending callbacks end on it.
    shutdown: watch::Receiver<bool>,
    /// Background work (payment callbacks), aborted at shutdown.
    tasks: Mutex<JoinSet<()>>,
    /// `true` while payment callbacks are held back ([`Sandbox::hold_callbacks`]).
    callbacks_held: watch::Sender<bool>,
    http: reqwest::Client,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("base", &self.base).finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the data consistent before any
/// operation that could panic, and a sandbox must keep answering.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// A deterministic id of `len` characters from `alphabet`.
    pub(crate) fn next_id(&self, alphabet: &[u8], len: usize) -> String {
        let mut rng = lock(&self.ids);
        (0..len)
            .map(|_| {
                let n = u64::try_from(alphabet.len()).unwrap_or(1);
                let i = usize::try_from(rng.below(n)).unwrap_or(0);
                char::from(alphabet.get(i).copied().unwrap_or(b'0'))
            })
            .collect()
    }

    /// Sleeps `duration`, or less if the sandbox shuts down (then `false`).
    pub(crate) async fn sleep(&self, duration: Duration) -> bool {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            _ = shutdown.wait_for(|stopping| *stopping) => false,
        }
    }

    /// Waits while payment callbacks are held; `false` if the sandbox shuts down meanwhile.
    pub(crate) async fn callbacks_released(&self) -> bool {
        let mut held = self.callbacks_held.subscribe();
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            released = held.wait_for(|held| !*held) => released.is_ok(),
            _ = shutdown.wait_for(|stopping| *stopping) => false,
        }
    }

    /// Runs `task` in the background until it ends or the sandbox shuts down.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// The direct base URL of `service`.
    pub(crate) fn base_url(&self, service: Service) -> String {
        format!("{}{}", self.base, service.prefix())
    }
}

/// A JSON error answer.
pub(crate) fn json_error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// An error answer: a status and a JSON body. Small, so `Result<_, ApiError>` stays cheap to return.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, body: Value) -> ApiError {
        ApiError { status, body }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_error(self.status, self.body)
    }
}

/// Parses a request body as JSON, answering `status` with `{<key>: message}` when it is not.
pub(crate) fn parse_json(bytes: &[u8], status: StatusCode, key: &str) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(status, json!({ key: "request body is required (JSON)" })));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(status, json!({ key: format!("request body is not valid JSON: {e}") })))
}

/// A running sandbox. Dropping it stops the server too, but [`Sandbox::shutdown`] waits for it.
#[derive(Debug)]
pub struct Sandbox {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<io::Result<()>>,
}

impl Sandbox {
    /// Binds `config.addr` and serves every simulated BB from one listener.
    pub async fn start(config: SandboxConfig) -> io::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let bound = listener.local_addr()?;
        let host = match bound.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let addr = SocketAddr::new(host, bound.port());
        let base = format!("http://{addr}");
        let identity = identity::Identity::new(&format!("{base}/identity"))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let seed = SeedData::generate(config.seed);
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(io::Error::other)?;
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            base,
            faults: Mutex::new(faults::FaultTable::new(config.seed)),
            registries: Mutex::new(registries::Store::seeded(&seed)),
            identity,
            payments: Mutex::new(payments::Ledger::seeded(&seed)),
            messaging: Mutex::new(messaging::Outbox::default()),
            mediator_log: Mutex::new(Vec::new()),
            ids: Mutex::new(seed::Rng::new(config.seed ^ 0x0001_D50F_5A2D_B0C5)),
            shutdown: shutdown.clone(),
            callbacks_held: watch::Sender::new(false),
            tasks: Mutex::new(JoinSet::new()),
            http,
            seed,
            config,
        });
        let app = router(shared.clone());
        let mut until = shutdown;
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // An error means the sender is gone, which is a shutdown too.
                    let _ = until.wait_for(|stopping| *stopping).await;
                })
                .await
        });
        Ok(Sandbox { shared, addr, stop, server })
    }

    /// The address the sandbox listens on (loopback when bound to an unspecified address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The direct base URL of `service`, e.g. `http://127.0.0.1:PORT/registries`. For
    /// [`Service::Mediator`] it is the security server base: `/r1/{instance}/…` paths go beneath it.
    pub fn base_url(&self, service: Service) -> String {
        self.shared.base_url(service)
    }

    /// Injects `fault` into `service`; it takes effect for the next request.
    pub fn set_fault(&self, service: Service, fault: Fault) {
        lock(&self.shared.faults).set(service, fault);
    }

    /// The fault currently set for `service` (the default when healthy).
    pub fn fault(&self, service: Service) -> Fault {
        lock(&self.shared.faults).get(service)
    }

    /// Makes every service healthy again.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Holds back (`true`) or releases (`false`) the Payments BB's callbacks: while held, a batch is paid
    /// and answered `202` as usual, and its callback waits. A test's way of keeping a payment in flight.
    pub fn hold_callbacks(&self, hold: bool) {
        self.shared.callbacks_held.send_replace(hold);
    }

    /// Every transaction actually paid, once each (after deduplication by `requestId`), in payment order.
    pub fn disbursements(&self) -> Vec<Disbursement> {
        lock(&self.shared.payments).disbursements()
    }

    /// The beneficiaries of the Payments ID account mapper, as JSON
    /// `{payeeIdentity, paymentModality, financialAddress, bankingInstitutionCode, registeringInstitutionId}`.
    pub fn beneficiaries(&self) -> Vec<Value> {
        lock(&self.shared.payments).beneficiaries()
    }

    /// Every e-mail and SMS sent, in sending order.
    pub fn messages(&self) -> Vec<SentMessage> {
        lock(&self.shared.messaging).messages()
    }

    /// The current records of registry `name` (empty for a registry that does not exist).
    pub fn registry(&self, name: &str) -> Vec<Value> {
        lock(&self.shared.registries).records(name)
    }

    /// Every request the Information Mediator saw, allowed or not, in arrival order.
    pub fn mediator_log(&self) -> Vec<MediatedRequest> {
        lock(&self.shared.mediator_log).clone()
    }

    /// The deterministic data the sandbox started with.
    pub fn seed_data(&self) -> &SeedData {
        &self.shared.seed
    }

    /// A connector configuration pointing at this sandbox: Identity, Payments and Messaging directly, the
    /// Digital Registries through the sandbox's Information Mediator (so the mediated path runs too), and
    /// payment callbacks to `callback_url`. Writes the sandbox's client key (the Identity BB's registered
    /// client) to `key_file`, where the Identity connector reads it.
    pub fn connectors_config(
        &self,
        callback_url: &str,
        key_file: &std::path::Path,
    ) -> Result<crate::config::ConnectorsConfig, crate::config::ConfigError> {
        use crate::config::{BbConfig, ConnectorsConfig, MediatorConfig, Secret};
        if let Some(dir) = key_file.parent() {
            std::fs::create_dir_all(dir).map_err(|error| {
                crate::config::ConfigError(format!("cannot create {}: {error}", dir.display()))
            })?;
        }
        std::fs::write(key_file, SANDBOX_CLIENT_PRIVATE_KEY_PEM).map_err(|error| {
            crate::config::ConfigError(format!("cannot write {}: {error}", key_file.display()))
        })?;
        let config = ConnectorsConfig {
            callback_url: Some(callback_url.to_owned()),
            timeout_ms: Some(5000),
            mediator: Some(MediatorConfig {
                url: self.base_url(Service::Mediator),
                client: "GOV/GOV/WORKFLOW/GOVFLOW".to_owned(),
                client_header: Default::default(),
            }),
            identity: BbConfig {
                url: Some(self.base_url(Service::Identity)),
                client_id: Some(SANDBOX_CLIENT_ID.to_owned()),
                private_key_file: Some(key_file.to_owned()),
                redirect_uri: Some(format!("{callback_url}/identity")),
                ..BbConfig::default()
            },
            registries: BbConfig {
                service: Some("GOV/GOV/SANDBOX/REGISTRIES/registries".to_owned()),
                ..BbConfig::default()
            },
            payments: BbConfig {
                url: Some(self.base_url(Service::Payments)),
                tenant: Some("govflow".to_owned()),
                ..BbConfig::default()
            },
            messaging: BbConfig {
                url: Some(self.base_url(Service::Messaging)),
                api_key: Some(Secret::new(self.shared.config.messaging_api_key.clone())),
                ..BbConfig::default()
            },
            limits: Default::default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Stops the server: hanging requests end, pending callbacks are dropped, open connections close.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.server).await.is_err() {
            self.server.abort();
        }
    }

    fn signal_stop(&self) {
        self.stop.send_replace(true);
        lock(&self.shared.tasks).abort_all();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let bbs = Router::new()
        .nest(
            Service::Identity.prefix(),
            faults::layer(identity::router(shared.clone()), Service::Identity, &shared),
        )
        .nest(
            Service::Registries.prefix(),
            faults::layer(registries::router(shared.clone()), Service::Registries, &shared),
        )
        .nest(
            Service::Payments.prefix(),
            faults::layer(payments::router(shared.clone()), Service::Payments, &shared),
        )
        .nest(
            Service::Messaging.prefix(),
            faults::layer(messaging::router(shared.clone()), Service::Messaging, &shared),
        );
    // The mediator forwards in-process into `bbs` only: never into itself or the admin routes.
    let mediator = faults::layer(mediator::router(shared.clone(), bbs.clone()), Service::Mediator, &shared);
    bbs.nest(Service::Mediator.prefix(), mediator).nest("/sandbox", admin_router(shared)).fallback(|| async {
        json_error(StatusCode::NOT_FOUND, json!({"error": "no such route in the sandbox; see GET /sandbox"}))
    })
}

fn admin_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(admin_index))
        .route(
            "/messages",
            get(|State(s): State<Arc<Shared>>| async move { Json(lock(&s.messaging).messages()) }),
        )
        .route(
            "/disbursements",
            get(|State(s): State<Arc<Shared>>| async move { Json(lock(&s.payments).disbursements()) }),
        )
        .route(
            "/beneficiaries",
            get(|State(s): State<Arc<Shared>>| async move { Json(lock(&s.payments).beneficiaries()) }),
        )
        .route(
            "/mediator-log",
            get(|State(s): State<Arc<Shared>>| async move { Json(lock(&s.mediator_log).clone()) }),
        )
        .route("/seed", get(admin_seed))
        .route("/registries/{name}", get(admin_registry))
        .route("/faults", get(admin_faults).delete(admin_clear_faults))
        .route("/faults/{service}", get(admin_fault).put(admin_put_fault))
        .with_state(shared)
}

async fn admin_index(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let services: BTreeMap<&str, String> =
        Service::ALL.into_iter().map(|service| (service.as_str(), shared.base_url(service))).collect();
    Json(json!({
        "services": services,
        "admin": [
            "GET /sandbox/messages", "GET /sandbox/disbursements", "GET /sandbox/beneficiaries",
            "GET /sandbox/mediator-log", "GET /sandbox/seed", "GET /sandbox/registries/{name}",
            "GET /sandbox/faults", "DELETE /sandbox/faults", "GET|PUT /sandbox/faults/{service}",
        ],
        "registries": lock(&shared.registries).names(),
        "identityClientId": SANDBOX_CLIENT_ID,
        "mediatorAllowList": shared.config.mediator_allow_list,
        "seed": shared.config.seed,
    }))
}

/// The seed data, with the people tests and demos usually want named up front.
async fn admin_seed(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let seed = &shared.seed;
    let (mother, birth) = seed.registered_birth();
    let mut body = serde_json::to_value(seed).unwrap_or(Value::Null);
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "examples".to_string(),
            json!({
                "verifiedMother": seed.verified_mother().national_id,
                "registeredBirth": {"motherId": mother.national_id, "certificateNumber": birth.certificate_number},
                "deceasedPerson": seed.deceased_person().national_id,
                "unknownNationalId": seed.unknown_national_id(),
                "farmerWithBankAccount": seed.farmer_with_bank_account().national_id,
                "farmerWithoutBankAccount": seed.farmer_without_bank_account().national_id,
            }),
        );
    }
    Json(body)
}

async fn admin_registry(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let store = lock(&shared.registries);
    if store.exists(&name) {
        Json(store.records(&name)).into_response()
    } else {
        json_error(
            StatusCode::NOT_FOUND,
            json!({"error": format!("no registry named {name:?}"), "registries": store.names()}),
        )
    }
}

async fn admin_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let table = lock(&shared.faults);
    let faults: BTreeMap<&str, FaultJson> = Service::ALL
        .into_iter()
        .map(|service| (service.as_str(), FaultJson::from(&table.get(service))))
        .collect();
    Json(json!(faults))
}

async fn admin_clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.faults).clear();
    StatusCode::NO_CONTENT
}

fn service_param(name: &str) -> Result<Service, ApiError> {
    name.parse::<Service>().map_err(|e| ApiError::new(StatusCode::NOT_FOUND, json!({"error": e.to_string()})))
}

async fn admin_fault(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match service_param(&name) {
        Ok(service) => Json(FaultJson::from(&lock(&shared.faults).get(service))).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn admin_put_fault(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let service = match service_param(&name) {
        Ok(service) => service,
        Err(e) => return e.into_response(),
    };
    let json = if body.iter().all(u8::is_ascii_whitespace) {
        FaultJson::default()
    } else {
        match serde_json::from_slice::<FaultJson>(&body) {
            Ok(json) => json,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("invalid fault: {e}; fields: latency_ms, error_rate, down, timeout, process_then_timeout")}),
                )
            }
        }
    };
    if !(0.0..=1.0).contains(&json.error_rate) {
        return json_error(
            StatusCode::BAD_REQUEST,
            json!({"error": "error_rate must be between 0.0 and 1.0"}),
        );
    }
    let fault = Fault::from(json);
    lock(&shared.faults).set(service, fault.clone());
    Json(FaultJson::from(&fault)).into_response()
}
