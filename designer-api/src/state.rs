//! What every handler shares: the engine, the shell, the authenticator, the waiters of synchronous
//! starts, the metrics and the configuration. It holds no engine state of its own: everything a
//! response says is read from the engine or its store, so a restart loses nothing but in-flight waits.
//!
//! # Construction order
//! The waiters of synchronous starts (`?wait=completed`) are told by the shell's
//! `on_instance_ended` hook, which must be given to the `ShellBuilder` before the shell starts, while
//! `AppState` needs the started shell. So the [`Waiters`] handle comes first:
//! ```text
//! let engine = Arc::new(Engine::open(store, clock)?);
//! let waiters = Waiters::new();
//! let shell = Shell::builder(Arc::clone(&engine)).on_instance_ended(waiters.hook()).start().await?;
//! let state = AppState::with_waiters(engine, Arc::new(shell), config, waiters);
//! let router = govflow_designer_api::app(state);
//! ```
//! `AppState::new` makes its own `Waiters`; its `on_instance_ended()` is then only useful for a shell
//! built afterwards (without it, synchronous starts answer 202 at their timeout instead of at the end).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use govflow_engine::engine::{Engine, EngineError};
use govflow_engine::runtime::{InstanceKey, InstanceStatus};
use govflow_engine::shell::Shell;
use govflow_engine::store::{Deployment, Store, StoreError};
use tokio::sync::oneshot;

use crate::auth::Authenticator;
use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;

type ProcessLookup = Arc<dyn Fn(InstanceKey) -> Option<String> + Send + Sync>;

#[derive(Default)]
struct WaitersInner {
    waiting: Mutex<HashMap<InstanceKey, Vec<oneshot::Sender<InstanceStatus>>>>,
    metrics: Arc<Metrics>,
    /// Finds an ended instance's process (for the metrics), once the engine is known.
    lookup: OnceLock<ProcessLookup>,
}

/// The requests waiting for instances to end (synchronous starts), told by the shell's hook.
#[derive(Clone, Default)]
pub struct Waiters {
    inner: Arc<WaitersInner>,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters").field("n_waiting", &self.n_waiting()).finish()
    }
}

impl Waiters {
    pub fn new() -> Waiters {
        Waiters::default()
    }

    /// The hook to pass to `ShellBuilder::on_instance_ended`: wakes the waiters of the instance and
    /// counts the ending in the metrics.
    pub fn hook(&self) -> impl Fn(InstanceKey, InstanceStatus) + Send + Sync + 'static {
        let inner = Arc::clone(&self.inner);
        move |instance, status| {
            let senders = lock(&inner.waiting).remove(&instance).unwrap_or_default();
            for sender in senders {
                let _ = sender.send(status);
            }
            let process = inner.lookup.get().and_then(|lookup| lookup(instance));
            inner.metrics.instance_ended(process.as_deref().unwrap_or("unknown"), status);
        }
    }

    /// Registers a wait for `instance` to end. Register before checking whether it has ended already,
    /// so that an ending in between is not missed.
    pub fn register(&self, instance: InstanceKey) -> oneshot::Receiver<InstanceStatus> {
        let (sender, receiver) = oneshot::channel();
        lock(&self.inner.waiting).entry(instance).or_default().push(sender);
        receiver
    }

    /// Drops the waits of `instance` whose receivers are gone (a wait that timed out).
    pub fn forget(&self, instance: InstanceKey) {
        let mut waiting = lock(&self.inner.waiting);
        if let Some(senders) = waiting.get_mut(&instance) {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                waiting.remove(&instance);
            }
        }
    }

    pub fn n_waiting(&self) -> usize {
        lock(&self.inner.waiting).values().map(Vec::len).sum()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.inner.metrics)
    }
}

/// What the Workflow BB shows of a process version, read once from its stored XML.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessInfo {
    pub name: Option<String>,
    pub description: Option<String>,
    pub is_executable: bool,
    pub is_closed: bool,
    pub process_type: Option<String>,
    /// Embedded forms (`zeebe:userTaskForm`) by id.
    pub forms: BTreeMap<String, String>,
}

struct Shared<S: Store + 'static> {
    engine: Arc<Engine<S>>,
    shell: Arc<Shell<S>>,
    config: ApiConfig,
    authenticator: Authenticator,
    waiters: Waiters,
    metrics: Arc<Metrics>,
    infos: Mutex<HashMap<(String, u32), Arc<ProcessInfo>>>,
}

/// The state every handler receives (cheap to clone).
pub struct AppState<S: Store + 'static> {
    shared: Arc<Shared<S>>,
}

impl<S: Store + 'static> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState { shared: Arc::clone(&self.shared) }
    }
}

impl<S: Store + 'static> std::fmt::Debug for AppState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

impl<S: Store + 'static> AppState<S> {
    /// State with its own [`Waiters`] (see the module docs for wiring synchronous starts).
    pub fn new(engine: Arc<Engine<S>>, shell: Arc<Shell<S>>, config: ApiConfig) -> Self {
        AppState::with_waiters(engine, shell, config, Waiters::new())
    }

    /// State whose `waiters` were given to the shell's `on_instance_ended` hook.
    pub fn with_waiters(
        engine: Arc<Engine<S>>,
        shell: Arc<Shell<S>>,
        config: ApiConfig,
        waiters: Waiters,
    ) -> Self {
        let lookup_engine = Arc::clone(&engine);
        let lookup: ProcessLookup = Arc::new(move |instance| {
            lookup_engine.store().instance_meta(instance).ok().flatten().map(|meta| meta.process_id)
        });
        let _ = waiters.inner.lookup.set(lookup);
        let metrics = waiters.metrics();
        AppState {
            shared: Arc::new(Shared {
                authenticator: Authenticator::new(&config.auth),
                engine,
                shell,
                config,
                waiters,
                metrics,
                infos: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The hook for `ShellBuilder::on_instance_ended` (the same as `Waiters::hook` of this state's
    /// waiters).
    pub fn on_instance_ended(&self) -> impl Fn(InstanceKey, InstanceStatus) + Send + Sync + 'static {
        self.shared.waiters.hook()
    }

    pub fn engine(&self) -> &Arc<Engine<S>> {
        &self.shared.engine
    }

    pub fn shell(&self) -> &Arc<Shell<S>> {
        &self.shared.shell
    }

    pub fn config(&self) -> &ApiConfig {
        &self.shared.config
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.shared.authenticator
    }

    pub fn waiters(&self) -> &Waiters {
        &self.shared.waiters
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The page size for a `limit` parameter: the default when absent; 422 above the cap or zero.
    pub fn page_size(&self, limit: Option<usize>) -> Result<usize, ApiError> {
        match limit {
            None => Ok(self.shared.config.default_page_size),
            Some(0) => Err(ApiError::invalid_field("limit", "limit must be at least 1")),
            Some(n) if n > self.shared.config.max_page_size => Err(ApiError::invalid_field(
                "limit",
                format!("limit must be at most {}", self.shared.config.max_page_size),
            )),
            Some(n) => Ok(n),
        }
    }

    /// A wait asked for by the caller, capped below the request timeout.
    pub fn wait_for(&self, requested: Option<Duration>, default: Duration) -> Duration {
        requested.unwrap_or(default).min(self.shared.config.max_wait())
    }

    /// Runs engine work that blocks on the disk off the async threads, in a task that finishes even if
    /// the request is dropped (a command half-way through its commit must complete its follow-ups).
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Engine<S>) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let engine = Arc::clone(&self.shared.engine);
        match tokio::task::spawn_blocking(move || work(&engine)).await {
            Ok(result) => result.map_err(ApiError::from),
            Err(error) => {
                tracing::error!(%error, "an engine task failed");
                Err(ApiError::Internal)
            }
        }
    }

    /// Runs an engine future to its end even if the request is dropped (timeout, client gone): the
    /// engine's async commands must not be cancelled between their commit and their follow-ups.
    pub async fn detached<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, ApiError> {
        match tokio::spawn(work).await {
            Ok(result) => result.map_err(ApiError::from),
            Err(error) => {
                tracing::error!(%error, "an engine task failed");
                Err(ApiError::Internal)
            }
        }
    }

    /// The Workflow BB view of a deployed version (name, description, forms), cached.
    pub fn process_info(&self, deployment: &Deployment) -> Arc<ProcessInfo> {
        let key = (deployment.process_id.clone(), deployment.version);
        if let Some(info) = lock(&self.shared.infos).get(&key) {
            return Arc::clone(info);
        }
        let info = Arc::new(read_process_info(deployment));
        lock(&self.shared.infos).insert(key, Arc::clone(&info));
        info
    }

    /// Forgets the cached view of a deleted version.
    pub fn forget_process_info(&self, process_id: &str, version: u32) {
        lock(&self.shared.infos).remove(&(process_id.to_owned(), version));
    }
}

fn read_process_info(deployment: &Deployment) -> ProcessInfo {
    if deployment.resource_name.ends_with(".dmn") {
        return ProcessInfo { name: Some(deployment.process_id.clone()), ..ProcessInfo::default() };
    }
    let parsed = govflow_engine::parse(&deployment.xml);
    let Some(definitions) = parsed.definitions else { return ProcessInfo::default() };
    let Some(process) = definitions.process(&deployment.process_id) else { return ProcessInfo::default() };
    let description = (!process.documentation.is_empty()).then(|| process.documentation.join("\n"));
    ProcessInfo {
        name: process.name.clone(),
        description,
        is_executable: process.is_executable,
        is_closed: process.is_closed,
        process_type: process.process_type.clone(),
        forms: process
            .extensions
            .zeebe
            .user_task_forms
            .iter()
            .map(|form| (form.id.clone(), form.body.clone()))
            .collect(),
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A store error met outside the engine (reads through `engine.store()`).
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::from(EngineError::Store(error))
    }
}
