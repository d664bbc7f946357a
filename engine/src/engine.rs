//! The engine shell, as a library: deploy processes, start instances and send them commands, durably. Each
//! command runs the pure core (`runtime::decide`) on the instance's stored state, seals the events into the
//! audit chain and commits events, snapshot, index changes and outbox in one atomic batch before anything
//! is answered or performed. It must never apply a command's effects before its batch is durable, and
//! never let two commands of one instance interleave.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, FixedOffset, Utc};
use sha2::{Digest, Sha256};

use crate::audit::{self, Actor, ChainError, RecordedEvent};
use crate::diagnostics::{has_errors, Diagnostic};
use crate::dmn::DecisionModel;
use crate::model::ElementId;
use crate::runtime::schedule;
use crate::runtime::{
    actions_of, decide, Action, Command, Event, Instance, InstanceKey, InstanceStatus, Key,
    ProcessDefinition, Rejection, VariableMap,
};
use crate::store::{
    self, Batch, BufferedMessage, Deployment, InstanceFilter, InstanceMeta, Operation, OperationFilter,
    OperationKind, OperationTarget, OutboxEntry, ScheduleEntry, Store, StoredInstance,
};

/// Where "now" comes from: the real clock in production, a manual clock in tests (no sleeping in tests).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<FixedOffset>;

    /// How long to wait in real time for `engine` of this clock's time to pass.
    fn real(&self, engine: std::time::Duration) -> std::time::Duration {
        engine
    }

    /// How many times faster than real time this clock runs.
    fn scale(&self) -> f64 {
        1.0
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<FixedOffset> {
        Utc::now().fixed_offset()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<FixedOffset>>,
}

impl ManualClock {
    pub fn new(start: DateTime<FixedOffset>) -> ManualClock {
        ManualClock { now: Mutex::new(start) }
    }

    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<FixedOffset> {
        self.now.lock().map(|now| *now).unwrap_or_default()
    }
}

/// A clock that runs `scale` times faster than real time, from the origin its store recorded (for demos:
/// `--time-scale 3600` shows a monthly cycle in minutes). Engine time keeps running across restarts, and
/// a store is only ever opened with the scale it was created with (`store::TimeScale`).
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    pub scale: store::TimeScale,
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime<FixedOffset> {
        let real = Utc::now().fixed_offset() - self.scale.origin_real;
        let nanos = real.num_nanoseconds().map_or(f64::MAX, |n| n as f64) * self.scale.scale;
        let elapsed = if nanos.is_finite() && nanos.abs() < i64::MAX as f64 {
            chrono::Duration::nanoseconds(nanos as i64)
        } else {
            chrono::Duration::MAX
        };
        self.scale.origin_engine.checked_add_signed(elapsed).unwrap_or(self.scale.origin_engine)
    }

    fn scale(&self) -> f64 {
        self.scale.scale
    }

    fn real(&self, engine: std::time::Duration) -> std::time::Duration {
        if self.scale.scale > 0.0 && self.scale.scale.is_finite() {
            engine.div_f64(self.scale.scale)
        } else {
            engine
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the file is not a valid process: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Diagnostic>),
    #[error("no process '{0}' is deployed")]
    UnknownProcess(String),
    #[error("process '{0}' is disabled")]
    Disabled(String),
    #[error(
        "process '{process_id}' version {version} still has {n_instances} instance(s); it cannot be deleted"
    )]
    InUse { process_id: String, version: u32, n_instances: usize },
    #[error("no instance {0}")]
    UnknownInstance(InstanceKey),
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("replaying instance {0}'s events does not reproduce its stored state")]
    ReplayMismatch(InstanceKey),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A process version made runnable by a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub process_id: String,
    pub version: u32,
    /// False when identical content was already deployed and that version is returned.
    pub new: bool,
    /// The file of the call it came from.
    pub resource_name: String,
}

/// A job as handed to a connector or worker.
#[derive(Debug, Clone, PartialEq)]
pub struct JobHandle {
    pub instance: InstanceKey,
    pub job: Key,
    pub job_type: String,
    pub element: String,
    pub retries: u32,
    pub headers: BTreeMap<String, String>,
    pub variables: VariableMap,
    /// Not to run before this time (a retry's back-off).
    pub not_before: Option<DateTime<FixedOffset>>,
    /// Which attempt this is: 1, then one more after each failure.
    pub attempt: u32,
    /// Stable across retries and restarts: the far side deduplicates on it.
    pub idempotency_key: String,
    /// This job may have been handed out before without its outcome being committed: it is delivered
    /// again after a restart, or after an external worker's lease ran out. Its effect may already have
    /// happened even when `attempt` is 1; a connector whose far side cannot deduplicate on the
    /// idempotency key checks first.
    pub redelivered: bool,
}

/// The idempotency key of a job: the same for every attempt, before and after a restart.
pub fn idempotency_key(instance: InstanceKey, job: Key) -> String {
    format!("{instance}-{job}")
}

/// The instance and job an idempotency key names (the job id of the worker and callback APIs).
pub fn parse_idempotency_key(key: &str) -> Option<(InstanceKey, Key)> {
    let (instance, job) = key.split_once('-')?;
    Some((InstanceKey(instance.parse().ok()?), Key(job.parse().ok()?)))
}

/// A message to publish: correlated to waiting instances (once per process), starting processes with a
/// matching message start event, and buffered for `ttl` for subscriptions that open later.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub name: String,
    pub correlation_key: String,
    pub variables: VariableMap,
    /// Zero: correlate now or never.
    pub ttl: chrono::Duration,
    /// De-duplication: a second message with the same id is refused while the first is buffered.
    pub message_id: Option<String>,
}

/// What publishing a message did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    pub correlated: Vec<InstanceKey>,
    pub started: Vec<InstanceKey>,
    /// The buffered message's key, when it was buffered.
    pub buffered: Option<u64>,
}

/// What a committed command asks the shell to do: runnable jobs (with everything a handler needs) and
/// timers to watch. Sent to the listener after the batch is durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub instance: InstanceKey,
    pub status: InstanceStatus,
    pub jobs: Vec<JobHandle>,
    pub timers: Vec<(DateTime<FixedOffset>, Key)>,
}

/// Told about every commit that leaves the shell something to do (runnable jobs, timers, an instance that
/// ended), after it is durable.
type Listener = Box<dyn Fn(Committed) + Send + Sync>;

/// A command decided and queued for commit; durable once its ticket resolves.
struct Submitted {
    key: InstanceKey,
    records: Vec<RecordedEvent>,
    outbox: Vec<OutboxEntry>,
    actions: Vec<Action>,
    stored: Arc<StoredInstance>,
    ticket: store::CommitTicket,
}

/// How many records may follow an instance's stored snapshot before the next is written.
const SNAPSHOT_EVERY: u64 = 32;

/// How many instance states the engine keeps in memory between commands (the rest are read from the store).
const CACHE_CAPACITY: usize = 16_384;

/// The durable engine over a store.
pub struct Engine<S: Store> {
    store: S,
    clock: Arc<dyn Clock>,
    definitions: Mutex<BTreeMap<(String, u32), Arc<ProcessDefinition>>>,
    decisions: Mutex<Vec<Arc<DecisionModel>>>,
    /// One lock per instance in use: commands on one instance never interleave.
    locks: Mutex<HashMap<InstanceKey, Arc<Mutex<()>>>>,
    /// The last committed state of recently used active instances (written under the instance's lock).
    cache: Mutex<HashMap<InstanceKey, Arc<StoredInstance>>>,
    /// Disabled process versions (they cannot be started).
    disabled: Mutex<std::collections::BTreeSet<(String, u32)>>,
    /// Serialises deployments and message publication.
    admin: Mutex<()>,
    /// Held (shared) by a start from finding its definition to submitting its first batch, and
    /// (exclusive) by a deletion while it takes definitions away: after that no start can still be about
    /// to use them, so the deletion's check for instances misses none.
    start_gate: std::sync::RwLock<()>,
    listener: Mutex<Option<Listener>>,
    schedule_listener: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl<S: Store> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The operation-log entries implied by `records`, given the state `before` them.
fn operations_of(meta: &InstanceMeta, before: &Instance, records: &[RecordedEvent]) -> Vec<Operation> {
    let mut operations = Vec::new();
    let instance_target =
        || OperationTarget::Instance { instance: meta.key, process_id: meta.process_id.clone() };
    for record in records {
        let (kind, target, detail) = match &record.event {
            Event::InstanceCreated { business_key, .. } => {
                (OperationKind::Create, instance_target(), business_key.clone())
            }
            Event::InstanceCompleted { .. } => {
                (OperationKind::Update, instance_target(), Some("completed".to_owned()))
            }
            Event::InstanceCancelled => {
                (OperationKind::Update, instance_target(), Some("cancelled".to_owned()))
            }
            Event::VariablesChanged { scope, element, variables } => {
                let existing = before.variables.get(scope);
                for name in variables.keys() {
                    let kind = if existing.is_some_and(|vars| vars.contains_key(name)) {
                        OperationKind::Update
                    } else {
                        OperationKind::Create
                    };
                    operations.push(Operation {
                        seq: 0,
                        at: record.at,
                        actor: record.actor.clone(),
                        kind,
                        target: OperationTarget::Variable {
                            instance: meta.key,
                            scope: *scope,
                            name: name.clone(),
                        },
                        detail: Some(element.0.clone()),
                    });
                }
                continue;
            }
            _ => continue,
        };
        operations.push(Operation {
            seq: 0,
            at: record.at,
            actor: record.actor.clone(),
            kind,
            target,
            detail,
        });
    }
    operations
}

/// The business key of start `n` of a timer-start schedule: `{process}:v{version}/{start event}/{anchor}/{n}`
/// (the anchor in UTC, to the millisecond). The anchor tells a schedule made again (re-enabled, or its
/// version latest again) from the one before, so numbering starts afresh without colliding.
pub fn scheduled_business_key(entry: &ScheduleEntry, n: u32) -> String {
    let anchor = entry.anchor.with_timezone(&Utc).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!("{}:v{}/{}/{anchor}/{n}", entry.process_id, entry.version, entry.element)
}

/// The message names of flow triggers (GovStack Workflow BB §6.2): a process whose message start event
/// has one of these names starts when an instance of `process_id` completes, is cancelled, or raises an
/// incident, with that instance's variables.
pub fn flow_trigger(event: FlowEvent, process_id: &str) -> String {
    let what = match event {
        FlowEvent::Completed => "completed",
        FlowEvent::Cancelled => "cancelled",
        FlowEvent::Failed => "failed",
    };
    format!("process-{what}:{process_id}")
}

/// What happened to an instance, for flow triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEvent {
    Completed,
    Cancelled,
    /// An incident was raised.
    Failed,
}

impl<S: Store> Engine<S> {
    /// Opens the engine on a store, compiling every deployed process (nothing lives only in memory).
    pub fn open(store: S, clock: Arc<dyn Clock>) -> Result<Engine<S>> {
        let engine = Engine {
            store,
            clock,
            definitions: Mutex::new(BTreeMap::new()),
            decisions: Mutex::new(Vec::new()),
            locks: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            disabled: Mutex::new(std::collections::BTreeSet::new()),
            admin: Mutex::new(()),
            start_gate: std::sync::RwLock::new(()),
            listener: Mutex::new(None),
            schedule_listener: Mutex::new(None),
        };
        let deployments = engine.store.deployments()?;
        // Decisions first, so that every process sees every deployed decision.
        for deployment in deployments.iter().filter(|d| d.resource_name.ends_with(".dmn")) {
            engine.load(deployment)?;
        }
        for deployment in deployments.iter().filter(|d| !d.resource_name.ends_with(".dmn")) {
            engine.load(deployment)?;
        }
        engine.reconcile_schedules()?;
        Ok(engine)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn now(&self) -> DateTime<FixedOffset> {
        self.clock.now()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// Sets the function told about every commit that leaves something to do, after it is durable (see
    /// `Listener`). The tokio shell listens here.
    pub fn set_listener(&self, listener: impl Fn(Committed) + Send + Sync + 'static) {
        *lock(&self.listener) = Some(Box::new(listener));
    }

    fn load(&self, deployment: &Deployment) -> Result<()> {
        if deployment.resource_name.ends_with(".dmn") {
            let model = Arc::new(DecisionModel::parse(&deployment.xml).map_err(EngineError::Invalid)?);
            if lock(&self.decisions).iter().any(|known| known.decision_ids() == model.decision_ids()) {
                return Ok(());
            }
            lock(&self.decisions).push(Arc::clone(&model));
            // Processes deployed earlier can call the new decisions too.
            let mut definitions = lock(&self.definitions);
            for definition in definitions.values_mut() {
                *definition =
                    Arc::new(ProcessDefinition::clone(definition).with_decisions([Arc::clone(&model)]));
            }
            return Ok(());
        }
        let id = (deployment.process_id.clone(), deployment.version);
        if deployment.enabled {
            lock(&self.disabled).remove(&id);
        } else {
            lock(&self.disabled).insert(id);
        }
        let parsed = crate::check(&deployment.xml);
        let definitions = parsed.definitions.ok_or(EngineError::Invalid(parsed.diagnostics))?;
        let decisions = lock(&self.decisions).clone();
        let definition = ProcessDefinition::compile(&definitions, &deployment.process_id, deployment.version)
            .map_err(EngineError::Invalid)?
            .with_decisions(decisions);
        lock(&self.definitions)
            .insert((deployment.process_id.clone(), deployment.version), Arc::new(definition));
        Ok(())
    }

    /// Deploys a `.bpmn` (every executable process in it) or `.dmn` file. Invalid files are refused with
    /// their diagnostics; identical content returns the existing versions.
    pub fn deploy(&self, resource_name: &str, bytes: &[u8], actor: &Actor) -> Result<Vec<Deployed>> {
        self.deploy_all(&[(resource_name, bytes)], actor)
    }

    /// Deploys several files at once, all or nothing: each is validated (and each process compiled)
    /// first, then every new version is written in one atomic store write, and only then loaded. A file
    /// whose content is deployed already (or repeats an earlier file of the same call) returns its
    /// versions. Put `.dmn` files before the processes that call their decisions.
    pub fn deploy_all(&self, files: &[(&str, &[u8])], actor: &Actor) -> Result<Vec<Deployed>> {
        let _admin = lock(&self.admin);
        let existing = self.store.deployments()?;
        let mut planned: Vec<Deployment> = Vec::new();
        let mut deployed = Vec::new();
        for (resource_name, bytes) in files {
            let hash = content_hash(bytes);
            let same: Vec<Deployed> = existing
                .iter()
                .chain(&planned)
                .filter(|d| d.content_hash == hash)
                .map(|d| Deployed {
                    process_id: d.process_id.clone(),
                    version: d.version,
                    new: false,
                    resource_name: (*resource_name).to_owned(),
                })
                .collect();
            if !same.is_empty() {
                deployed.extend(same);
                continue;
            }
            let process_ids: Vec<String> = if resource_name.ends_with(".dmn") {
                let model = DecisionModel::parse(bytes).map_err(EngineError::Invalid)?;
                model.decision_ids()
            } else {
                let parsed = crate::check(bytes);
                if has_errors(&parsed.diagnostics) {
                    return Err(EngineError::Invalid(
                        parsed.diagnostics.into_iter().filter(Diagnostic::is_error).collect(),
                    ));
                }
                let definitions = parsed.definitions.ok_or(EngineError::Invalid(Vec::new()))?;
                let ids: Vec<String> = definitions
                    .processes
                    .iter()
                    .filter(|p| p.is_executable)
                    .map(|p| p.id.0.clone())
                    .collect();
                for id in &ids {
                    ProcessDefinition::compile(&definitions, id, 1).map_err(EngineError::Invalid)?;
                }
                ids
            };
            for process_id in process_ids {
                let planned_before =
                    planned.iter().filter(|d| d.process_id == process_id).map(|d| d.version).max();
                let version = match planned_before {
                    Some(version) => version,
                    None => self.store.last_version(&process_id)?,
                } + 1;
                planned.push(Deployment {
                    process_id: process_id.clone(),
                    version,
                    content_hash: hash.clone(),
                    resource_name: (*resource_name).to_owned(),
                    xml: bytes.to_vec(),
                    deployed_at: self.now(),
                    deployed_by: actor.clone(),
                    enabled: true,
                });
                deployed.push(Deployed {
                    process_id,
                    version,
                    new: true,
                    resource_name: (*resource_name).to_owned(),
                });
            }
        }
        if planned.is_empty() {
            return Ok(deployed);
        }
        let operations = planned
            .iter()
            .map(|deployment| self.definition_operation(deployment, OperationKind::Create, None, actor))
            .collect();
        self.store.put_deployments(&planned, operations)?;
        for deployment in &planned {
            self.load(deployment)?;
        }
        self.reconcile_schedules()?;
        Ok(deployed)
    }

    fn definition_operation(
        &self,
        deployment: &Deployment,
        kind: OperationKind,
        detail: Option<String>,
        actor: &Actor,
    ) -> Operation {
        Operation {
            seq: 0,
            at: self.now(),
            actor: actor.clone(),
            kind,
            target: OperationTarget::Definition {
                process_id: deployment.process_id.clone(),
                version: deployment.version,
            },
            detail: detail.or_else(|| Some(deployment.resource_name.clone())),
        }
    }

    /// Enables or disables a deployed process version: a disabled version cannot be started.
    pub fn set_enabled(&self, process_id: &str, version: u32, enabled: bool, actor: &Actor) -> Result<()> {
        let _admin = lock(&self.admin);
        let mut deployment = self
            .store
            .deployment(process_id, version)?
            .ok_or_else(|| EngineError::UnknownProcess(format!("{process_id} version {version}")))?;
        if deployment.enabled == enabled {
            return Ok(());
        }
        deployment.enabled = enabled;
        let detail = Some(if enabled { "enabled" } else { "disabled" }.to_owned());
        let operation = self.definition_operation(&deployment, OperationKind::Update, detail, actor);
        self.store.put_deployment(&deployment, operation)?;
        let id = (process_id.to_owned(), version);
        if enabled {
            lock(&self.disabled).remove(&id);
        } else {
            lock(&self.disabled).insert(id);
        }
        self.reconcile_schedules()?;
        Ok(())
    }

    /// Deletes a deployed process version that no instance uses.
    pub fn delete_definition(&self, process_id: &str, version: u32, actor: &Actor) -> Result<()> {
        self.delete_definitions(process_id, &[version], actor)
    }

    /// Deletes deployed versions of a process, all or none: each must exist and no instance may use
    /// any of them; then one atomic store write removes them all.
    pub fn delete_definitions(&self, process_id: &str, versions: &[u32], actor: &Actor) -> Result<()> {
        let _admin = lock(&self.admin);
        let mut deployments = Vec::with_capacity(versions.len());
        for &version in versions {
            let deployment = self
                .store
                .deployment(process_id, version)?
                .ok_or_else(|| EngineError::UnknownProcess(format!("{process_id} version {version}")))?;
            deployments.push(deployment);
        }
        // A version with instances is refused before anything is taken away, so starts meanwhile never
        // notice a refused deletion. The check is repeated below, where it is exact.
        for deployment in &deployments {
            self.refuse_if_in_use(process_id, deployment.version, |error| error)?;
        }
        let keys: Vec<(String, u32)> = versions.iter().map(|&v| (process_id.to_owned(), v)).collect();
        // Take the definitions away first, so no new instance can start on them; once the gate is ours,
        // every start that found one has submitted its first batch, and `sync` makes those durable, so
        // the check below sees them.
        let removed: Vec<((String, u32), Arc<ProcessDefinition>)> = {
            let _gate = self.start_gate.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut definitions = lock(&self.definitions);
            keys.iter().filter_map(|key| definitions.remove(key).map(|d| (key.clone(), d))).collect()
        };
        let restore = |error: EngineError| {
            lock(&self.definitions).extend(removed.iter().cloned());
            error
        };
        self.store.sync().map_err(|error| restore(error.into()))?;
        let mut operations = Vec::with_capacity(versions.len());
        for deployment in &deployments {
            self.refuse_if_in_use(process_id, deployment.version, restore)?;
            operations.push(self.definition_operation(deployment, OperationKind::Delete, None, actor));
        }
        self.store.delete_deployments(&keys, operations).map_err(|error| restore(error.into()))?;
        self.reconcile_schedules()?;
        Ok(())
    }

    /// `InUse` (passed through `on_error`, as is a store error) when instances of the version exist.
    fn refuse_if_in_use(
        &self,
        process_id: &str,
        version: u32,
        on_error: impl Fn(EngineError) -> EngineError,
    ) -> Result<()> {
        let filter = InstanceFilter {
            process_id: Some(process_id.to_owned()),
            version: Some(version),
            ..InstanceFilter::default()
        };
        let n_instances =
            self.store.instances(&filter, None, usize::MAX).map_err(|e| on_error(e.into()))?.len();
        if n_instances > 0 {
            return Err(on_error(EngineError::InUse {
                process_id: process_id.to_owned(),
                version,
                n_instances,
            }));
        }
        Ok(())
    }

    /// The latest version of each process, when it is enabled: the only versions a schedule or a message
    /// start event starts.
    fn latest_enabled(&self) -> Vec<Arc<ProcessDefinition>> {
        let definitions = lock(&self.definitions);
        let mut latest: BTreeMap<&str, &Arc<ProcessDefinition>> = BTreeMap::new();
        for ((process_id, _), definition) in definitions.iter() {
            latest.insert(process_id, definition);
        }
        let disabled = lock(&self.disabled);
        latest
            .into_values()
            .filter(|d| !disabled.contains(&(d.process_id.0.clone(), d.version)))
            .cloned()
            .collect()
    }

    /// Makes the stored schedules match the deployments: one per timer start event of each process's latest
    /// enabled version (a redeployment replaces the old version's schedule; disabling stops it). Keeps the
    /// progress of schedules that stay. Idempotent: run at open, so a crash between a deployment and its
    /// schedules heals.
    fn reconcile_schedules(&self) -> Result<()> {
        let now = self.now();
        let existing = self.store.schedules()?;
        let mut wanted = Vec::new();
        for definition in self.latest_enabled() {
            for element in schedule::timer_start_events(&definition) {
                let process_id = definition.process_id.0.clone();
                let kept = existing.iter().find(|entry| {
                    entry.process_id == process_id
                        && entry.version == definition.version
                        && entry.element == element.0
                });
                if let Some(kept) = kept {
                    wanted.push(kept.clone());
                    continue;
                }
                // A start event whose timer cannot be computed was refused at deployment (validation);
                // one with no due time left (a past cycle window) has no schedule.
                if let Ok(Some(due)) = schedule::first_due(&definition, &element, now) {
                    wanted.push(ScheduleEntry {
                        process_id,
                        version: definition.version,
                        element: element.0.clone(),
                        due,
                        fired: 0,
                        anchor: now,
                        spent: false,
                    });
                }
            }
        }
        let remove: Vec<ScheduleEntry> = existing.iter().filter(|e| !wanted.contains(e)).cloned().collect();
        let put: Vec<ScheduleEntry> = wanted.iter().filter(|e| !existing.contains(e)).cloned().collect();
        if remove.is_empty() && put.is_empty() {
            return Ok(());
        }
        self.store.replace_schedules(&remove, &put)?;
        if let Some(hook) = lock(&self.schedule_listener).as_ref() {
            hook();
        }
        Ok(())
    }

    /// The earliest due time of any timer-start schedule.
    pub fn next_schedule_due(&self) -> Result<Option<DateTime<FixedOffset>>> {
        Ok(self.store.schedules()?.iter().filter(|entry| !entry.spent).map(|entry| entry.due).min())
    }

    /// Starts the processes whose timer start events are due (never before), then moves each schedule to
    /// its next due time or marks it spent. Exactly once: the instance a start makes carries the
    /// business key `scheduled_business_key` gives, so a start repeated after a crash (before
    /// its schedule moved on) finds it and starts nothing. Returns the instances started.
    pub fn fire_due_schedules(&self) -> Result<Vec<InstanceKey>> {
        let now = self.now();
        let mut started = Vec::new();
        for entry in self.store.schedules()? {
            if entry.spent || entry.due > now {
                continue;
            }
            let Ok(definition) = self.definition(&entry.process_id, Some(entry.version)) else { continue };
            let n = entry.fired + 1;
            let business_key = scheduled_business_key(&entry, n);
            let filter =
                InstanceFilter { business_key: Some(business_key.clone()), ..InstanceFilter::default() };
            if self.store.instances(&filter, None, 1)?.is_empty() {
                let key = self.start_at(
                    &entry.process_id,
                    Some(ElementId(entry.element.clone())),
                    VariableMap::new(),
                    Some(business_key),
                    None,
                    &Actor::engine(),
                )?;
                started.push(key);
            }
            let element = ElementId(entry.element.clone());
            let next = schedule::next_due(&definition, &element, entry.anchor, n, now).ok().flatten();
            let moved = match next {
                Some(due) => ScheduleEntry { due, fired: n, ..entry.clone() },
                None => ScheduleEntry { fired: n, spent: true, ..entry.clone() },
            };
            self.store.replace_schedules(std::slice::from_ref(&entry), &[moved])?;
        }
        Ok(started)
    }

    /// Sets the function told when the schedules change (a deployment), so the shell can re-read them.
    pub fn set_schedule_listener(&self, listener: impl Fn() + Send + Sync + 'static) {
        *lock(&self.schedule_listener) = Some(Box::new(listener));
    }

    /// The compiled definition of a process version (the latest when `version` is `None`).
    pub fn definition(&self, process_id: &str, version: Option<u32>) -> Result<Arc<ProcessDefinition>> {
        let definitions = lock(&self.definitions);
        let found = match version {
            Some(version) => definitions.get(&(process_id.to_owned(), version)),
            None => definitions
                .range((process_id.to_owned(), 0)..=(process_id.to_owned(), u32::MAX))
                .next_back()
                .map(|(_, d)| d),
        };
        found.cloned().ok_or_else(|| EngineError::UnknownProcess(process_id.to_owned()))
    }

    fn instance_lock(&self, instance: InstanceKey) -> Arc<Mutex<()>> {
        Arc::clone(lock(&self.locks).entry(instance).or_default())
    }

    /// Drops the instance's lock entry when nobody else holds or waits for it (the map stays small).
    fn release_lock(&self, instance: InstanceKey, guard: Arc<Mutex<()>>) {
        let mut locks = lock(&self.locks);
        // Ours and the map's: nobody else can clone it while we hold the map.
        if Arc::strong_count(&guard) == 2 {
            locks.remove(&instance);
        }
    }

    /// Starts an instance of the latest version of `process_id`.
    pub fn start(
        &self,
        process_id: &str,
        variables: VariableMap,
        business_key: Option<String>,
        actor: &Actor,
    ) -> Result<InstanceKey> {
        self.start_at(process_id, None, variables, business_key, None, actor)
    }

    /// Starts an instance at a given start event (`None`: the none start event), optionally as the child
    /// of a call activity.
    pub fn start_at(
        &self,
        process_id: &str,
        start_event: Option<ElementId>,
        variables: VariableMap,
        business_key: Option<String>,
        parent: Option<(InstanceKey, Key)>,
        actor: &Actor,
    ) -> Result<InstanceKey> {
        let submitted = self.submit_start(process_id, start_event, variables, business_key, parent, actor)?;
        let key = submitted.key;
        let outcome = submitted.ticket.clone().wait();
        self.finish(submitted, outcome)?;
        Ok(key)
    }

    /// `start`, awaiting durability instead of blocking on it (for the tokio shell).
    pub async fn start_async(
        &self,
        process_id: &str,
        variables: VariableMap,
        business_key: Option<String>,
        actor: &Actor,
    ) -> Result<InstanceKey> {
        let submitted = self.submit_start(process_id, None, variables, business_key, None, actor)?;
        let key = submitted.key;
        let outcome = submitted.ticket.clone().await;
        self.finish(submitted, outcome)?;
        Ok(key)
    }

    fn submit_start(
        &self,
        process_id: &str,
        start_event: Option<ElementId>,
        variables: VariableMap,
        business_key: Option<String>,
        parent: Option<(InstanceKey, Key)>,
        actor: &Actor,
    ) -> Result<Submitted> {
        let _gate = self.start_gate.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let definition = self.definition(process_id, None)?;
        if lock(&self.disabled).contains(&(process_id.to_owned(), definition.version)) {
            return Err(EngineError::Disabled(process_id.to_owned()));
        }
        let key = self.store.next_instance_key()?;
        let now = self.now();
        let meta = InstanceMeta {
            key,
            parent,
            process_id: process_id.to_owned(),
            version: definition.version,
            business_key: business_key.clone(),
            status: InstanceStatus::Active,
            started_at: now,
            updated_at: now,
        };
        let empty = StoredInstance {
            meta,
            state: Instance::new(key),
            last_seq: 0,
            last_hash: audit::Digest256::GENESIS,
        };
        let command = Command::Start { variables, business_key, start_event };
        let guard = self.instance_lock(key);
        let submitted = {
            let _guard = lock(&guard);
            self.submit_locked(&definition, Arc::new(empty), None, &command, actor)
        };
        self.release_lock(key, guard);
        submitted
    }

    /// Sends a command to an instance; returns the records it appended (durable when this returns). What
    /// the command asks of other instances (child instances, signals) is done before this returns.
    pub fn command(
        &self,
        instance: InstanceKey,
        command: &Command,
        actor: &Actor,
    ) -> Result<Vec<RecordedEvent>> {
        let submitted = self.submit_command(instance, command, actor)?;
        let outcome = submitted.ticket.clone().wait();
        self.finish(submitted, outcome)
    }

    /// `command`, awaiting durability instead of blocking on it (for the tokio shell).
    pub async fn command_async(
        &self,
        instance: InstanceKey,
        command: &Command,
        actor: &Actor,
    ) -> Result<Vec<RecordedEvent>> {
        let submitted = self.submit_command(instance, command, actor)?;
        let outcome = submitted.ticket.clone().await;
        self.finish(submitted, outcome)
    }

    /// `command_async`, keeping back from the listener the first job the command made runnable that
    /// `claim` accepts, and returning it: the caller runs it itself, once the command is durable like any
    /// job (the shell's handler task goes on with the instance's next job rather than handing it to a new
    /// task).
    pub async fn command_async_claiming(
        &self,
        instance: InstanceKey,
        command: &Command,
        actor: &Actor,
        claim: &(dyn Fn(&JobHandle) -> bool + Sync),
    ) -> Result<(Vec<RecordedEvent>, Option<JobHandle>)> {
        let submitted = self.submit_command(instance, command, actor)?;
        let outcome = submitted.ticket.clone().await;
        self.finish_claiming(submitted, outcome, claim)
    }

    fn submit_command(&self, instance: InstanceKey, command: &Command, actor: &Actor) -> Result<Submitted> {
        let guard = self.instance_lock(instance);
        let submitted = {
            let _guard = lock(&guard);
            self.submit_command_locked(instance, command, actor)
        };
        self.release_lock(instance, guard);
        submitted
    }

    fn submit_command_locked(
        &self,
        instance: InstanceKey,
        command: &Command,
        actor: &Actor,
    ) -> Result<Submitted> {
        let cached = lock(&self.cache).get(&instance).cloned();
        let stored = match cached {
            Some(stored) => stored,
            None => Arc::new(self.store.instance(instance)?.ok_or(EngineError::UnknownInstance(instance))?),
        };
        let definition = self.definition(&stored.meta.process_id, Some(stored.meta.version))?;
        let previous = Some(stored.meta.clone());
        self.submit_locked(&definition, stored, previous, command, actor)
    }

    /// decide → seal → one atomic batch, submitted for commit. The caller holds the instance's lock. The
    /// new state goes into the cache at once, so the instance's next command decides on it; that
    /// command's batch is queued after this one, so it can never be durable without this one.
    fn submit_locked(
        &self,
        definition: &ProcessDefinition,
        stored: Arc<StoredInstance>,
        previous: Option<InstanceMeta>,
        command: &Command,
        actor: &Actor,
    ) -> Result<Submitted> {
        let now = self.now();
        let events = decide(definition, &stored.state, command, now)?;
        let last = (stored.last_seq > 0).then_some((stored.last_seq, stored.last_hash));
        let records = audit::seal_all(stored.meta.key, last, now, actor, events);
        let key = stored.meta.key;
        let index_ops = store::index_changes(key, &stored.state, &records);
        let operations = operations_of(&stored.meta, &stored.state, &records);
        let (previous_seq, previous_hash) = (stored.last_seq, stored.last_hash);
        // The state is taken from the cache rather than copied: nobody else holds it between commands
        // (a reader missing it meanwhile reads the store), and a failed submit drops it from the cache
        // anyway.
        lock(&self.cache).remove(&key);
        let (mut snapshot, meta) = match Arc::try_unwrap(stored) {
            Ok(owned) => (owned.state, owned.meta),
            Err(shared) => (shared.state.clone(), shared.meta.clone()),
        };
        for record in &records {
            snapshot.apply(&record.event);
        }
        let meta = InstanceMeta { status: snapshot.status, updated_at: now, ..meta };
        let actions = actions_of(records.iter().map(|record| &record.event));
        let last_seq = records.last().map_or(previous_seq, |r| r.seq);
        let outbox: Vec<OutboxEntry> = actions
            .iter()
            .enumerate()
            .filter(|(_, action)| self.needs_outbox(action, &meta))
            .map(|(i, action)| OutboxEntry {
                id: (key, last_seq, u32::try_from(i).unwrap_or(u32::MAX)),
                action: action.clone(),
            })
            .collect();
        // A snapshot when the instance changes status (listing reads status from it), and every
        // SNAPSHOT_EVERY records; in between, readers fold the records after the last one. A new instance
        // still active stores only its metadata (see `Batch::write_snapshot`): its records hold its state.
        let write_snapshot = match &previous {
            None => meta.status != InstanceStatus::Active,
            Some(previous) => previous.status != meta.status,
        } || previous_seq / SNAPSHOT_EVERY != last_seq / SNAPSHOT_EVERY;
        let batch = Batch {
            meta: meta.clone(),
            previous,
            records,
            snapshot,
            write_snapshot,
            index_ops,
            outbox,
            acks: Vec::new(),
            operations,
        };
        let ticket = self.store.submit(&batch)?;
        let Batch { records, snapshot, outbox, .. } = batch;
        let stored = Arc::new(StoredInstance {
            meta,
            state: snapshot,
            last_seq,
            last_hash: records.last().map_or(previous_hash, |r| r.hash),
        });
        lock(&self.cache).insert(key, Arc::clone(&stored));
        Ok(Submitted { key, records, outbox, actions, stored, ticket })
    }

    /// Actions that no index represents: kept in the outbox until performed (jobs, timers, subscriptions
    /// and user tasks are rebuilt from their indexes instead).
    fn needs_outbox(&self, action: &Action, meta: &InstanceMeta) -> bool {
        let triggered = |event| !self.message_starts(&flow_trigger(event, &meta.process_id)).is_empty();
        match action {
            Action::StartChildInstance { .. }
            | Action::CancelChildInstance { .. }
            | Action::BroadcastSignal { .. } => true,
            Action::InstanceEnded { completed: true } => {
                meta.parent.is_some() || triggered(FlowEvent::Completed)
            }
            Action::InstanceEnded { completed: false } => {
                meta.parent.is_some() || triggered(FlowEvent::Cancelled)
            }
            Action::IncidentRaised { .. } => triggered(FlowEvent::Failed),
            _ => false,
        }
    }

    /// Starts the processes triggered by `event` of `instance`, once each (the started instance's business
    /// key `{trigger}/{instance}` makes a repeat after a crash find it and start nothing).
    fn run_flow_triggers(&self, instance: InstanceKey, event: FlowEvent, detail: Option<&str>) -> Result<()> {
        let Some(stored) = self.store.instance(instance)? else { return Ok(()) };
        let name = flow_trigger(event, &stored.meta.process_id);
        let starts = self.message_starts(&name);
        if starts.is_empty() {
            return Ok(());
        }
        let mut variables: VariableMap =
            stored.state.root.and_then(|root| stored.state.variables.get(&root).cloned()).unwrap_or_default();
        variables.insert(
            "triggeredBy".to_owned(),
            serde_json::json!({
                "processId": stored.meta.process_id,
                "instance": instance.0,
                "businessKey": stored.meta.business_key,
                "event": name,
                "detail": detail,
            }),
        );
        for (process_id, start_event) in starts {
            let business_key =
                format!("{name}/{instance}{}", detail.map(|d| format!("/{d}")).unwrap_or_default());
            let filter =
                InstanceFilter { business_key: Some(business_key.clone()), ..InstanceFilter::default() };
            if !self.store.instances(&filter, None, 1)?.is_empty() {
                continue;
            }
            self.start_at(
                &process_id,
                Some(start_event),
                variables.clone(),
                Some(business_key),
                None,
                &Actor::engine(),
            )?;
        }
        Ok(())
    }

    /// After a submitted batch's flush: on success, tell the listener, trim the cache, do the follow-ups.
    fn finish(&self, submitted: Submitted, outcome: store::Result<()>) -> Result<Vec<RecordedEvent>> {
        self.finish_claiming(submitted, outcome, &|_| false).map(|(records, _)| records)
    }

    /// `finish`, keeping back the first runnable job `claim` accepts (see `command_async_claiming`).
    fn finish_claiming(
        &self,
        submitted: Submitted,
        outcome: store::Result<()>,
        claim: &(dyn Fn(&JobHandle) -> bool + Sync),
    ) -> Result<(Vec<RecordedEvent>, Option<JobHandle>)> {
        let Submitted { key, records, outbox, actions, stored, .. } = submitted;
        if let Err(error) = outcome {
            // What the store holds is uncertain now (and it refuses further writes): read it again.
            lock(&self.cache).remove(&key);
            return Err(error.into());
        }
        let claimed = self.notify(&stored, &actions, claim);
        {
            let mut cache = lock(&self.cache);
            let ended = stored.meta.status != InstanceStatus::Active;
            // Only an entry whose state is durable may go (no newer command of the instance is in flight).
            if (ended || cache.len() > CACHE_CAPACITY)
                && cache.get(&key).is_some_and(|cached| cached.last_seq == stored.last_seq)
            {
                cache.remove(&key);
            }
        }
        let needs_follow_up = !outbox.is_empty()
            || records.iter().any(|r| matches!(r.event, Event::MessageSubscriptionOpened { .. }));
        if needs_follow_up {
            // Follow-ups are further commands that wait for their flush; on a tokio worker, let the runtime
            // move its other tasks elsewhere meanwhile.
            blocking_section(|| self.follow_up(key, &records, outbox))?;
        }
        Ok((records, claimed))
    }

    /// Tells the listener what the commit left to do, but for the first runnable job `claim` accepts,
    /// which it returns instead.
    fn notify(
        &self,
        stored: &StoredInstance,
        actions: &[Action],
        claim: &(dyn Fn(&JobHandle) -> bool + Sync),
    ) -> Option<JobHandle> {
        let listener = lock(&self.listener);
        let listener = listener.as_ref()?;
        let mut committed = Committed {
            instance: stored.meta.key,
            status: stored.meta.status,
            jobs: Vec::new(),
            timers: Vec::new(),
        };
        let mut claimed = None;
        for action in actions {
            match action {
                Action::RunJob { job, .. } | Action::RetryJob { job, .. } => {
                    if let Some(handle) = job_handle(stored, *job) {
                        if claimed.is_none() && claim(&handle) {
                            claimed = Some(handle);
                        } else {
                            committed.jobs.push(handle);
                        }
                    }
                }
                Action::ScheduleTimer { timer, due } => committed.timers.push((*due, *timer)),
                _ => {}
            }
        }
        let idle = committed.jobs.is_empty()
            && committed.timers.is_empty()
            && committed.status == InstanceStatus::Active;
        if !idle {
            listener(committed);
        }
        claimed
    }

    /// What a command leads to once its lock is released: outbox entries, and buffered messages for
    /// subscriptions it opened.
    fn follow_up(
        &self,
        instance: InstanceKey,
        records: &[RecordedEvent],
        outbox: Vec<OutboxEntry>,
    ) -> Result<()> {
        self.perform(outbox)?;
        if records.iter().any(|r| matches!(r.event, Event::MessageSubscriptionOpened { .. })) {
            self.correlate_buffered(instance)?;
        }
        Ok(())
    }

    /// Performs outbox entries (after the command that wrote them released its lock), then acknowledges
    /// them. Each is idempotent, so performing one again after a crash changes nothing.
    fn perform(&self, entries: Vec<OutboxEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut done = Vec::with_capacity(entries.len());
        for entry in entries {
            self.perform_one(&entry)?;
            done.push(entry.id);
        }
        Ok(self.store.ack(&done)?)
    }

    fn perform_one(&self, entry: &OutboxEntry) -> Result<()> {
        let instance = entry.id.0;
        let engine = Actor::engine();
        let ignore_rejection = |outcome: Result<Vec<RecordedEvent>>| match outcome {
            Ok(_) | Err(EngineError::Rejected(_)) | Err(EngineError::UnknownInstance(_)) => Ok(()),
            Err(error) => Err(error),
        };
        match &entry.action {
            Action::StartChildInstance { element_instance, process_id, variables } => {
                if !self.store.children(instance, *element_instance)?.is_empty() {
                    return Ok(()); // started before a crash
                }
                let started = self.start_at(
                    process_id,
                    None,
                    variables.clone(),
                    None,
                    Some((instance, *element_instance)),
                    &engine,
                );
                match started {
                    Ok(_) => Ok(()),
                    Err(
                        error @ (EngineError::UnknownProcess(_)
                        | EngineError::Disabled(_)
                        | EngineError::Rejected(_)),
                    ) => {
                        let command = Command::CallActivityNotStarted {
                            element_instance: *element_instance,
                            message: error.to_string(),
                        };
                        ignore_rejection(self.command(instance, &command, &engine))
                    }
                    Err(error) => Err(error),
                }
            }
            Action::CancelChildInstance { element_instance } => {
                for child in self.store.children(instance, *element_instance)? {
                    ignore_rejection(self.command(child, &Command::Cancel, &engine))?;
                }
                Ok(())
            }
            Action::BroadcastSignal { signal_name, variables } => {
                self.broadcast(signal_name, variables.clone(), &engine).map(|_| ())
            }
            Action::IncidentRaised { incident, .. } => {
                self.run_flow_triggers(instance, FlowEvent::Failed, Some(&incident.to_string()))
            }
            Action::InstanceEnded { completed } => {
                let event = if *completed { FlowEvent::Completed } else { FlowEvent::Cancelled };
                self.run_flow_triggers(instance, event, None)?;
                let Some(meta) = self.store.instance_meta(instance)? else { return Ok(()) };
                let Some((parent, element_instance)) = meta.parent else { return Ok(()) };
                if !completed {
                    return Ok(()); // a cancelled child was cancelled by its parent's call activity
                }
                let stored = self.instance(instance)?;
                let variables = stored
                    .state
                    .root
                    .and_then(|root| stored.state.variables.get(&root).cloned())
                    .unwrap_or_default();
                let command = Command::CompleteCallActivity { element_instance, variables };
                ignore_rejection(self.command(parent, &command, &engine))
            }
            _ => Ok(()),
        }
    }

    /// Performs what the outbox still holds (after a crash between a commit and its follow-ups).
    pub fn recover(&self) -> Result<usize> {
        let mut n = 0;
        loop {
            let entries = self.store.outbox(256)?;
            if entries.is_empty() {
                return Ok(n);
            }
            n += entries.len();
            self.perform(entries)?;
        }
    }

    /// Delivers a signal to every subscribed instance; returns how many took it.
    pub fn broadcast(&self, signal_name: &str, variables: VariableMap, actor: &Actor) -> Result<usize> {
        let mut instances: Vec<InstanceKey> =
            self.store.signal_subscriptions(signal_name)?.into_iter().map(|entry| entry.instance).collect();
        instances.dedup();
        let mut n = 0;
        for instance in instances {
            let command =
                Command::TriggerSignal { name: signal_name.to_owned(), variables: variables.clone() };
            match self.command(instance, &command, actor) {
                Ok(_) => n += 1,
                Err(EngineError::Rejected(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(n)
    }

    pub fn instance(&self, instance: InstanceKey) -> Result<StoredInstance> {
        self.store.instance(instance)?.ok_or(EngineError::UnknownInstance(instance))
    }

    pub fn instances(
        &self,
        filter: &InstanceFilter,
        after: Option<InstanceKey>,
        limit: usize,
    ) -> Result<Vec<InstanceMeta>> {
        Ok(self.store.instances(filter, after, limit)?)
    }

    /// Open jobs of `job_type` that may run now, with their idempotency keys (from the durable index).
    pub fn jobs(&self, job_type: &str, limit: usize) -> Result<Vec<JobHandle>> {
        self.open_jobs(Some(job_type), limit, true)
    }

    /// Open job `job` of `instance` as it stands now (the newest decided state), or `None` when it has
    /// ended or waits for an incident to be resolved.
    pub fn job(&self, instance: InstanceKey, job: Key) -> Result<Option<JobHandle>> {
        let cached = lock(&self.cache).get(&instance).cloned();
        let stored = match cached {
            Some(stored) => stored,
            None => match self.store.instance(instance)? {
                Some(stored) => Arc::new(stored),
                None => return Ok(None),
            },
        };
        Ok(job_handle(&stored, job))
    }

    /// Every open job (of `job_type`, or of any type), including those waiting for a retry's back-off.
    pub fn open_jobs(
        &self,
        job_type: Option<&str>,
        limit: usize,
        runnable_now: bool,
    ) -> Result<Vec<JobHandle>> {
        let mut handles = Vec::new();
        let now = self.now();
        for entry in self.store.jobs(job_type, usize::MAX)? {
            if handles.len() >= limit {
                break;
            }
            let Some(stored) = self.store.instance(entry.instance)? else { continue };
            let Some(handle) = job_handle(&stored, entry.job) else { continue };
            if runnable_now && handle.not_before.is_some_and(|at| at > now) {
                continue;
            }
            handles.push(handle);
        }
        Ok(handles)
    }

    /// Fires every timer due now (never before its due time), as the engine.
    pub fn fire_due_timers(&self) -> Result<usize> {
        let mut fired = 0;
        for entry in self.store.due_timers(self.now(), usize::MAX)? {
            if self.fire_timer(entry.instance, entry.timer)? {
                fired += 1;
            }
        }
        Ok(fired)
    }

    /// Fires one timer; false when it had fired or been cancelled meanwhile, or is not due.
    pub fn fire_timer(&self, instance: InstanceKey, timer: Key) -> Result<bool> {
        match self.command(instance, &Command::FireTimer { timer }, &Actor::engine()) {
            Ok(_) => Ok(true),
            Err(EngineError::Rejected(_) | EngineError::UnknownInstance(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// `fire_timer`, awaiting durability instead of blocking on it (for the tokio shell).
    pub async fn fire_timer_async(&self, instance: InstanceKey, timer: Key) -> Result<bool> {
        match self.command_async(instance, &Command::FireTimer { timer }, &Actor::engine()).await {
            Ok(_) => Ok(true),
            Err(EngineError::Rejected(_) | EngineError::UnknownInstance(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The message start events named `name` of the latest version of each deployed, enabled process.
    fn message_starts(&self, name: &str) -> Vec<(String, ElementId)> {
        let mut starts = Vec::new();
        for definition in self.latest_enabled() {
            for id in definition.message_start_events(name) {
                starts.push((definition.process_id.0.clone(), id));
            }
        }
        starts
    }

    /// Publishes a message: correlates it to waiting instances (at most one per process), starts the
    /// processes whose message start event it matches, and buffers it for `ttl` for subscriptions that open
    /// later. A message id already buffered is refused (`StoreError::Conflict`).
    pub fn publish(&self, message: Message, actor: &Actor) -> Result<Published> {
        let _admin = lock(&self.admin);
        let now = self.now();
        // Refused before anything is correlated: a publish happens whole or not at all.
        let expires_at = now
            .checked_add_signed(message.ttl)
            .filter(|_| message.ttl >= chrono::Duration::zero())
            .ok_or_else(|| {
                EngineError::InvalidMessage(format!("time to live {} is out of range", message.ttl))
            })?;
        // Expired messages go first, so an id whose message expired can be used again.
        self.store.expire_messages(self.now())?;
        if let Some(id) = &message.message_id {
            if self.store.message_by_id(id)?.is_some_and(|buffered| buffered.expires_at > self.now()) {
                return Err(store::StoreError::Conflict(format!(
                    "a message with id '{id}' was published already; it is correlated only once"
                ))
                .into());
            }
        }
        let mut published = Published::default();
        let mut served: Vec<String> = Vec::new();
        for entry in self.store.subscriptions(&message.name, &message.correlation_key)? {
            let Some(meta) = self.store.instance_meta(entry.instance)? else { continue };
            if served.contains(&meta.process_id) {
                continue;
            }
            if self.correlate_one(entry.instance, &message, actor)? {
                served.push(meta.process_id);
                published.correlated.push(entry.instance);
            }
        }
        for (process_id, start_event) in self.message_starts(&message.name) {
            if served.contains(&process_id) {
                continue;
            }
            let business_key = (!message.correlation_key.is_empty()).then(|| message.correlation_key.clone());
            let key = self.start_at(
                &process_id,
                Some(start_event),
                message.variables.clone(),
                business_key,
                None,
                actor,
            )?;
            served.push(process_id);
            published.started.push(key);
        }
        if message.ttl > chrono::Duration::zero() {
            let buffered = self.store.put_message(BufferedMessage {
                key: 0,
                name: message.name,
                correlation_key: message.correlation_key,
                variables: message.variables,
                message_id: message.message_id,
                published_at: now,
                expires_at,
                correlated: served,
            })?;
            published.buffered = Some(buffered.key);
        }
        Ok(published)
    }

    fn correlate_one(&self, instance: InstanceKey, message: &Message, actor: &Actor) -> Result<bool> {
        let command = Command::CorrelateMessage {
            name: message.name.clone(),
            correlation_key: message.correlation_key.clone(),
            variables: message.variables.clone(),
            message_id: message.message_id.clone(),
        };
        match self.command(instance, &command, actor) {
            Ok(_) => Ok(true),
            Err(EngineError::Rejected(_) | EngineError::UnknownInstance(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Correlates buffered, unexpired messages to an instance whose subscriptions just opened (each message
    /// once per process). Returns how many were correlated.
    pub fn correlate_buffered(&self, instance: InstanceKey) -> Result<usize> {
        let Some(stored) = self.store.instance(instance)? else { return Ok(0) };
        let now = self.now();
        let mut n = 0;
        let wanted: Vec<(String, String)> = stored
            .state
            .message_subscriptions
            .values()
            .map(|s| (s.message_name.clone(), s.correlation_key.clone()))
            .collect();
        for (name, correlation_key) in wanted {
            for mut buffered in self.store.messages(&name, &correlation_key)? {
                if buffered.expires_at <= now || buffered.correlated.contains(&stored.meta.process_id) {
                    continue;
                }
                let message = Message {
                    name: buffered.name.clone(),
                    correlation_key: buffered.correlation_key.clone(),
                    variables: buffered.variables.clone(),
                    ttl: chrono::Duration::zero(),
                    message_id: buffered.message_id.clone(),
                };
                if self.correlate_one(instance, &message, &Actor::engine())? {
                    buffered.correlated.push(stored.meta.process_id.clone());
                    self.store.update_message(&buffered)?;
                    n += 1;
                    break;
                }
            }
        }
        Ok(n)
    }

    /// The operation log (GovStack Workflow BB §5).
    pub fn operations(&self, filter: &OperationFilter, after: u64, limit: usize) -> Result<Vec<Operation>> {
        Ok(self.store.operations(filter, after, limit)?)
    }

    /// Recomputes an instance's chain and replays it; the replay must equal the stored snapshot.
    pub fn verify(&self, instance: InstanceKey) -> Result<usize> {
        let records = self.store.records(instance, 1, usize::MAX)?;
        audit::verify_chain(instance, &records)?;
        let stored = self.instance(instance)?;
        if audit::replay(instance, &records) != stored.state {
            return Err(EngineError::ReplayMismatch(instance));
        }
        Ok(records.len())
    }
}

/// Runs `work`, which blocks on the disk, telling a multi-threaded tokio runtime (when called from one) so
/// that it moves its other tasks to another thread meanwhile.
fn blocking_section<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// The handle of open job `job` of a stored instance: what a connector or worker needs.
fn job_handle(stored: &StoredInstance, job: Key) -> Option<JobHandle> {
    let found = stored.state.jobs.get(&job)?;
    if found.failed {
        return None;
    }
    Some(JobHandle {
        instance: stored.meta.key,
        job,
        job_type: found.job_type.clone(),
        element: found.element.0.clone(),
        retries: found.retries,
        headers: found.headers.clone(),
        // Everything visible to the job now (input-mapped locals included), read at activation.
        variables: stored.state.visible_variables(found.element_instance).into_iter().collect(),
        not_before: found.retry_at,
        attempt: found.failures.saturating_add(1),
        idempotency_key: idempotency_key(stored.meta.key, job),
        redelivered: false,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the data it guards is still consistent (we never hold a
    // lock across a partial update), so carry on.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::memory_store;

    const PROCESS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:message id="m" name="settled"><bpmn:extensionElements><zeebe:subscription correlationKey="=batch" /></bpmn:extensionElements></bpmn:message>
  <bpmn:process id="pay" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="disburse" />
    <bpmn:serviceTask id="disburse"><bpmn:extensionElements><zeebe:taskDefinition type="payments.disburse" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="disburse" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1H</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait" targetRef="settled" />
    <bpmn:intermediateCatchEvent id="settled"><bpmn:messageEventDefinition messageRef="m" /></bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f4" sourceRef="settled" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#;

    fn engine() -> (Engine<store::kv::KvStore<store::memory::MemoryKv>>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(DateTime::parse_from_rfc3339("2027-01-04T09:00:00Z").unwrap()));
        (Engine::open(memory_store().unwrap(), clock.clone()).unwrap(), clock)
    }

    #[test]
    fn a_journey_runs_durably_and_verifies() {
        let (engine, clock) = engine();
        let registrar = Actor::user("registrar-1", Some("Civil Registry".to_owned()));
        let deployed = engine.deploy("pay.bpmn", PROCESS.as_bytes(), &registrar).unwrap();
        assert_eq!(
            deployed,
            [Deployed { process_id: "pay".into(), version: 1, new: true, resource_name: "pay.bpmn".into() }]
        );
        assert!(!engine.deploy("pay.bpmn", PROCESS.as_bytes(), &registrar).unwrap()[0].new);

        let instance = engine.start("pay", VariableMap::new(), Some("B-1".into()), &registrar).unwrap();
        let jobs = engine.jobs("payments.disburse", 10).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].idempotency_key, format!("{instance}-{}", jobs[0].job));
        let complete = Command::CompleteJob {
            job: jobs[0].job,
            variables: VariableMap::from([("batch".into(), "B-1".into())]),
        };
        engine.command(instance, &complete, &Actor::engine()).unwrap();
        assert!(engine.jobs("payments.disburse", 10).unwrap().is_empty());
        // A second completion is a rejection and changes nothing.
        assert!(matches!(
            engine.command(instance, &complete, &Actor::engine()),
            Err(EngineError::Rejected(_))
        ));

        assert_eq!(engine.fire_due_timers().unwrap(), 0, "never early");
        clock.advance(chrono::Duration::hours(1));
        assert_eq!(engine.fire_due_timers().unwrap(), 1);
        let message =
            |key: &str| Message { name: "settled".into(), correlation_key: key.into(), ..Message::default() };
        assert!(engine.publish(message("B-2"), &Actor::engine()).unwrap().correlated.is_empty());
        assert_eq!(engine.publish(message("B-1"), &Actor::engine()).unwrap().correlated, [instance]);

        let stored = engine.instance(instance).unwrap();
        assert_eq!(stored.meta.status, InstanceStatus::Completed);
        let n = engine.verify(instance).unwrap();
        assert_eq!(n as u64, stored.last_seq);
        let records = engine.store().records(instance, 1, usize::MAX).unwrap();
        assert_eq!(records[0].actor, registrar);
        // Nothing waits in the outbox: this process has no child instances or signals.
        assert!(engine.store().outbox(100).unwrap().is_empty());
    }

    #[test]
    fn decisions_deployed_after_a_process_are_callable() {
        let (engine, _) = engine();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/runtime/models/");
        let bpmn = std::fs::read(format!("{root}relief-decision.bpmn")).unwrap();
        let dmn = std::fs::read(format!("{root}farmer-relief-eligibility.dmn")).unwrap();
        engine.deploy("relief-decision.bpmn", &bpmn, &Actor::engine()).unwrap();
        engine.deploy("farmer-relief-eligibility.dmn", &dmn, &Actor::engine()).unwrap();
        let variables: VariableMap = serde_json::from_value(serde_json::json!(
            {"income": 45000, "householdSize": 4, "damageLevel": "total"}
        ))
        .unwrap();
        let instance = engine.start("eligibility", variables, None, &Actor::engine()).unwrap();
        let stored = engine.instance(instance).unwrap();
        let root_vars = stored.state.variables.get(&stored.state.root.unwrap()).unwrap();
        assert_eq!(root_vars["decision"], serde_json::json!({"eligible": true, "amount": 28000}));
    }

    #[test]
    fn invalid_files_are_refused_with_diagnostics() {
        let (engine, _) = engine();
        let bytes =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/four-problems.bpmn")).unwrap();
        match engine.deploy("four-problems.bpmn", &bytes, &Actor::engine()) {
            Err(EngineError::Invalid(diagnostics)) => assert_eq!(diagnostics.len(), 4),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            engine.start("late-registration", VariableMap::new(), None, &Actor::engine()),
            Err(EngineError::UnknownProcess(_))
        ));
    }
}
