//! The engine shell, as a library: deploy processes, start instances and send them commands, durably. Each
//! command runs the pure core (`runtime::decide`) on the instance's stored state, seals the events into the
//! audit chain and commits events, snapshot, index changes and outbox in one atomic batch before anything
//! is answered or performed. It must never apply a command's effects before its batch is durable, and
//! never let two commands of one instance interleave.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, FixedOffset, Utc};
use sha2::{Digest, Sha256};

use crate::audit::{self, Actor, ChainError, RecordedEvent};
use crate::diagnostics::{has_errors, Diagnostic};
use crate::dmn::DecisionModel;
use crate::runtime::{
    actions_of, decide, Command, Instance, InstanceKey, InstanceStatus, Key, ProcessDefinition, Rejection,
    VariableMap,
};
use crate::store::{
    self, Batch, Deployment, InstanceFilter, InstanceMeta, OutboxEntry, Store, StoredInstance,
};

/// Where "now" comes from: the real clock in production, a manual clock in tests (no sleeping in tests).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<FixedOffset>;
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

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the file is not a valid process: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Diagnostic>),
    #[error("no process '{0}' is deployed")]
    UnknownProcess(String),
    #[error("process '{0}' is disabled")]
    Disabled(String),
    #[error("no instance {0}")]
    UnknownInstance(InstanceKey),
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
}

/// A job as handed to a connector or worker.
#[derive(Debug, Clone, PartialEq)]
pub struct JobHandle {
    pub instance: InstanceKey,
    pub job: Key,
    pub job_type: String,
    pub retries: u32,
    pub headers: BTreeMap<String, String>,
    pub variables: VariableMap,
    /// Stable across retries and restarts: the far side deduplicates on it.
    pub idempotency_key: String,
}

/// The durable engine over a store.
pub struct Engine<S: Store> {
    store: S,
    clock: Arc<dyn Clock>,
    definitions: Mutex<BTreeMap<(String, u32), Arc<ProcessDefinition>>>,
    decisions: Mutex<Vec<Arc<DecisionModel>>>,
    /// One lock per instance: commands on one instance never interleave.
    locks: Mutex<BTreeMap<InstanceKey, Arc<Mutex<()>>>>,
    /// Serialises key allocation and deployments.
    admin: Mutex<()>,
}

impl<S: Store> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl<S: Store> Engine<S> {
    /// Opens the engine on a store, compiling every deployed process (nothing lives only in memory).
    pub fn open(store: S, clock: Arc<dyn Clock>) -> Result<Engine<S>> {
        let engine = Engine {
            store,
            clock,
            definitions: Mutex::new(BTreeMap::new()),
            decisions: Mutex::new(Vec::new()),
            locks: Mutex::new(BTreeMap::new()),
            admin: Mutex::new(()),
        };
        for deployment in engine.store.deployments()? {
            engine.load(&deployment)?;
        }
        Ok(engine)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn now(&self) -> DateTime<FixedOffset> {
        self.clock.now()
    }

    fn load(&self, deployment: &Deployment) -> Result<()> {
        if deployment.resource_name.ends_with(".dmn") {
            let model = Arc::new(DecisionModel::parse(&deployment.xml).map_err(EngineError::Invalid)?);
            lock(&self.decisions).push(Arc::clone(&model));
            // Processes deployed earlier can call the new decisions too.
            let mut definitions = lock(&self.definitions);
            for definition in definitions.values_mut() {
                *definition =
                    Arc::new(ProcessDefinition::clone(definition).with_decisions([Arc::clone(&model)]));
            }
            return Ok(());
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
        let _admin = lock(&self.admin);
        let hash = content_hash(bytes);
        let existing = self.store.deployments()?;
        let same: Vec<Deployed> = existing
            .iter()
            .filter(|d| d.content_hash == hash)
            .map(|d| Deployed { process_id: d.process_id.clone(), version: d.version, new: false })
            .collect();
        if !same.is_empty() {
            return Ok(same);
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
            definitions.processes.iter().filter(|p| p.is_executable).map(|p| p.id.0.clone()).collect()
        };
        let mut deployed = Vec::new();
        for process_id in process_ids {
            let version =
                existing.iter().filter(|d| d.process_id == process_id).map(|d| d.version).max().unwrap_or(0)
                    + 1;
            let deployment = Deployment {
                process_id: process_id.clone(),
                version,
                content_hash: hash.clone(),
                resource_name: resource_name.to_owned(),
                xml: bytes.to_vec(),
                deployed_at: self.now(),
                deployed_by: actor.clone(),
                enabled: true,
            };
            self.load(&deployment)?;
            self.store.put_deployment(&deployment)?;
            deployed.push(Deployed { process_id, version, new: true });
        }
        Ok(deployed)
    }

    fn definition(&self, process_id: &str, version: Option<u32>) -> Result<Arc<ProcessDefinition>> {
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

    /// Starts an instance of the latest version of `process_id`.
    pub fn start(
        &self,
        process_id: &str,
        variables: VariableMap,
        business_key: Option<String>,
        actor: &Actor,
    ) -> Result<InstanceKey> {
        let definition = self.definition(process_id, None)?;
        let key = {
            let _admin = lock(&self.admin);
            self.store.next_instance_key()?
        };
        let now = self.now();
        let meta = InstanceMeta {
            key,
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
        let guard = self.instance_lock(key);
        let _guard = lock(&guard);
        self.run(&definition, empty, &Command::Start { variables, business_key, start_event: None }, actor)?;
        Ok(key)
    }

    /// Sends a command to an instance; returns the records it appended (durable when this returns).
    pub fn command(
        &self,
        instance: InstanceKey,
        command: &Command,
        actor: &Actor,
    ) -> Result<Vec<RecordedEvent>> {
        let guard = self.instance_lock(instance);
        let _guard = lock(&guard);
        let stored = self.store.instance(instance)?.ok_or(EngineError::UnknownInstance(instance))?;
        let definition = self.definition(&stored.meta.process_id, Some(stored.meta.version))?;
        self.run(&definition, stored, command, actor)
    }

    /// decide → seal → one atomic, durable batch. The caller holds the instance's lock.
    fn run(
        &self,
        definition: &ProcessDefinition,
        stored: StoredInstance,
        command: &Command,
        actor: &Actor,
    ) -> Result<Vec<RecordedEvent>> {
        let now = self.now();
        let events = decide(definition, &stored.state, command, now)?;
        let last = (stored.last_seq > 0).then_some((stored.last_seq, stored.last_hash));
        let records = audit::seal_all(stored.meta.key, last, now, actor, events.clone());
        let mut snapshot = stored.state.clone();
        for event in &events {
            snapshot.apply(event);
        }
        let index_ops = store::index_changes(stored.meta.key, &stored.state, &records);
        let outbox = actions_of(&events)
            .into_iter()
            .enumerate()
            .map(|(i, action)| OutboxEntry {
                id: (
                    stored.meta.key,
                    records.last().map_or(0, |r| r.seq),
                    u32::try_from(i).unwrap_or(u32::MAX),
                ),
                action,
            })
            .collect();
        let meta = InstanceMeta { status: snapshot.status, updated_at: now, ..stored.meta };
        self.store.commit(&Batch { meta, records: records.clone(), snapshot, index_ops, outbox })?;
        Ok(records)
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

    /// Open jobs of `job_type`, with their idempotency keys.
    pub fn jobs(&self, job_type: &str, limit: usize) -> Result<Vec<JobHandle>> {
        let mut handles = Vec::new();
        for entry in self.store.jobs(Some(job_type), limit)? {
            let Some(stored) = self.store.instance(entry.instance)? else { continue };
            let Some(job) = stored.state.jobs.get(&entry.job) else { continue };
            if job.retry_at.is_some_and(|at| at > self.now()) {
                continue;
            }
            handles.push(JobHandle {
                instance: entry.instance,
                job: entry.job,
                job_type: job.job_type.clone(),
                retries: job.retries,
                headers: job.headers.clone(),
                // Everything visible to the job now (input-mapped locals included), read at activation.
                variables: stored.state.visible_variables(job.element_instance).into_iter().collect(),
                idempotency_key: format!("{}-{}", entry.instance, entry.job),
            });
        }
        Ok(handles)
    }

    /// Fires every timer due now (never before its due time), as the engine.
    pub fn fire_due_timers(&self) -> Result<usize> {
        let mut fired = 0;
        for entry in self.store.due_timers(self.now(), usize::MAX)? {
            match self.command(entry.instance, &Command::FireTimer { timer: entry.timer }, &Actor::engine()) {
                Ok(_) => fired += 1,
                // Fired or cancelled meanwhile: nothing to do.
                Err(EngineError::Rejected(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(fired)
    }

    /// Correlates a message to the instances waiting for it (one subscription per instance).
    pub fn correlate(
        &self,
        name: &str,
        correlation_key: &str,
        variables: VariableMap,
        actor: &Actor,
    ) -> Result<usize> {
        let mut n = 0;
        let mut seen = Vec::new();
        for entry in self.store.subscriptions(name, correlation_key)? {
            if seen.contains(&entry.instance) {
                continue;
            }
            seen.push(entry.instance);
            let command = Command::CorrelateMessage {
                name: name.to_owned(),
                correlation_key: correlation_key.to_owned(),
                variables: variables.clone(),
                message_id: None,
            };
            match self.command(entry.instance, &command, actor) {
                Ok(_) => n += 1,
                Err(EngineError::Rejected(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(n)
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
        assert_eq!(deployed, [Deployed { process_id: "pay".into(), version: 1, new: true }]);
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
        assert_eq!(engine.correlate("settled", "B-2", VariableMap::new(), &Actor::engine()).unwrap(), 0);
        assert_eq!(engine.correlate("settled", "B-1", VariableMap::new(), &Actor::engine()).unwrap(), 1);

        let stored = engine.instance(instance).unwrap();
        assert_eq!(stored.meta.status, InstanceStatus::Completed);
        let n = engine.verify(instance).unwrap();
        assert_eq!(n as u64, stored.last_seq);
        let records = engine.store().records(instance, 1, usize::MAX).unwrap();
        assert_eq!(records[0].actor, registrar);
        assert!(!engine.store().outbox(100).unwrap().is_empty());
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
