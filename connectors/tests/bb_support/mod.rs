//! Shared harness of the connector integration tests: a sandbox of simulated building blocks, a real
//! engine and shell with the GovStack connectors registered, a callback router on its own listener, and
//! small BPMN builders. Every wait polls the engine with a deadline; nothing sleeps and hopes.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use govflow_connectors::bb;
use govflow_connectors::callbacks::{router, ShellSink};
use govflow_connectors::config::{BbConfig, ConnectorsConfig, Secret};
use govflow_connectors::sandbox::{Sandbox, SandboxConfig, Service, SANDBOX_CLIENT_ID};
use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, SystemClock};
use govflow_engine::runtime::{Command, Event, InstanceKey, InstanceStatus, VariableMap};
use govflow_engine::shell::Shell;
use govflow_engine::store::kv::KvStore;
use govflow_engine::store::memory::{memory_store, MemoryKv};
use govflow_engine::store::{IncidentEntry, Store, StoredInstance};
use serde_json::Value;

pub type Mem = KvStore<MemoryKv>;

/// How long any one thing may take on a loaded two-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The mediator client the sandbox allows by default.
pub const CLIENT: &str = "GOV/GOV/WORKFLOW/GOVFLOW";

pub fn key_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sandbox-keys/client-private.pem")
}

/// Direct routes to every simulated BB, the sandbox Identity client, and the callback base URL.
pub fn direct_config(sandbox: &Sandbox, callback_url: &str) -> ConnectorsConfig {
    ConnectorsConfig {
        callback_url: Some(callback_url.to_owned()),
        timeout_ms: Some(3000),
        identity: BbConfig {
            url: Some(sandbox.base_url(Service::Identity)),
            client_id: Some(SANDBOX_CLIENT_ID.to_owned()),
            private_key_file: Some(key_file()),
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
    }
}

/// A sandbox, an engine on the memory store, a shell running every connector, and the callback router.
pub struct World {
    pub sandbox: Sandbox,
    pub engine: Arc<Engine<Mem>>,
    pub shell: Arc<Shell<Mem>>,
    pub callback_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub fn sandbox_config() -> SandboxConfig {
    SandboxConfig { payment_callback_delay: Duration::from_millis(20), ..SandboxConfig::default() }
}

/// Starts a world; `adjust` may change the connector configuration (e.g. route through the mediator).
pub async fn world(adjust: impl FnOnce(&mut ConnectorsConfig, &Sandbox)) -> World {
    let sandbox = Sandbox::start(sandbox_config()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback_url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = direct_config(&sandbox, &callback_url);
    adjust(&mut config, &sandbox);
    let connectors = bb::all(Arc::new(config)).unwrap();
    let engine = Arc::new(Engine::open(memory_store().unwrap(), Arc::new(SystemClock)).unwrap());
    let builder = govflow_connectors::connector::register(Shell::builder(Arc::clone(&engine)), &connectors);
    let shell = Arc::new(builder.start().await.unwrap());
    let app = router(Arc::new(ShellSink(Arc::clone(&shell))));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    World { sandbox, engine, shell, callback_url, server }
}

/// One service task in a process.
#[derive(Debug, Clone, Default)]
pub struct Task {
    pub job_type: String,
    pub retries: u32,
    pub headers: Vec<(String, String)>,
    /// (FEEL source, target variable).
    pub inputs: Vec<(String, String)>,
    /// (FEEL source, target variable).
    pub outputs: Vec<(String, String)>,
    /// The BPMN error code an error boundary event catches (to the end event `rejected`).
    pub catches: Option<String>,
    /// `serviceTask` (default) or `sendTask`.
    pub element: String,
}

impl Task {
    pub fn new(job_type: &str) -> Task {
        Task {
            job_type: job_type.to_owned(),
            retries: 3,
            element: "serviceTask".to_owned(),
            ..Task::default()
        }
    }

    pub fn header(mut self, key: &str, value: &str) -> Task {
        self.headers.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn input(mut self, source: &str, target: &str) -> Task {
        self.inputs.push((source.to_owned(), target.to_owned()));
        self
    }

    pub fn output(mut self, source: &str, target: &str) -> Task {
        self.outputs.push((source.to_owned(), target.to_owned()));
        self
    }

    pub fn catches(mut self, code: &str) -> Task {
        self.catches = Some(code.to_owned());
        self
    }

    pub fn send_task(mut self) -> Task {
        self.element = "sendTask".to_owned();
        self
    }

    /// Two attempts, 50 ms apart, then an incident.
    pub fn fragile(mut self) -> Task {
        self.retries = 2;
        self.header("retryBackoff", "PT0.05S")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// `start → task → done`, with an error boundary `caught → rejected` when the task catches a code.
pub fn process(id: &str, task: &Task) -> String {
    let headers: String = task
        .headers
        .iter()
        .map(|(k, v)| format!(r#"<zeebe:header key="{}" value="{}" />"#, escape(k), escape(v)))
        .collect();
    let inputs: String = task
        .inputs
        .iter()
        .map(|(s, t)| format!(r#"<zeebe:input source="{}" target="{}" />"#, escape(s), escape(t)))
        .collect();
    let outputs: String = task
        .outputs
        .iter()
        .map(|(s, t)| format!(r#"<zeebe:output source="{}" target="{}" />"#, escape(s), escape(t)))
        .collect();
    let (error, boundary) = match &task.catches {
        Some(code) => (
            format!(r#"<bpmn:error id="error" errorCode="{}" />"#, escape(code)),
            r#"<bpmn:boundaryEvent id="caught" attachedToRef="task"><bpmn:errorEventDefinition errorRef="error" /></bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="caught" targetRef="rejected" />
    <bpmn:endEvent id="rejected" />"#
                .to_owned(),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="defs-{id}" targetNamespace="http://govflow.example/connectors">
  {error}
  <bpmn:process id="{id}" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="task" />
    <bpmn:{element} id="task">
      <bpmn:extensionElements>
        <zeebe:taskDefinition type="{job_type}" retries="{retries}" />
        <zeebe:taskHeaders>{headers}</zeebe:taskHeaders>
        <zeebe:ioMapping>{inputs}{outputs}</zeebe:ioMapping>
      </bpmn:extensionElements>
    </bpmn:{element}>
    <bpmn:sequenceFlow id="f2" sourceRef="task" targetRef="done" />
    <bpmn:endEvent id="done" />
    {boundary}
  </bpmn:process>
</bpmn:definitions>"#,
        job_type = escape(&task.job_type),
        retries = task.retries,
        element = task.element,
    )
}

pub fn vars(value: Value) -> VariableMap {
    match value {
        Value::Object(object) => object.into_iter().collect(),
        _ => VariableMap::new(),
    }
}

impl World {
    /// Deploys the process of `task` as `id` and starts one instance with `variables`.
    pub async fn start(&self, id: &str, task: &Task, variables: Value) -> InstanceKey {
        self.engine.deploy(&format!("{id}.bpmn"), process(id, task).as_bytes(), &Actor::engine()).unwrap();
        self.shell.start_instance(id, vars(variables), None, Actor::engine()).await.unwrap()
    }

    /// Waits until the instance ended; returns it.
    pub async fn finished(&self, key: InstanceKey) -> StoredInstance {
        finished(&self.engine, key).await
    }

    /// Waits until the instance has an open incident; returns it.
    pub async fn incident(&self, key: InstanceKey) -> IncidentEntry {
        let started = std::time::Instant::now();
        loop {
            let incidents = self.engine.store().incidents(None, usize::MAX).unwrap();
            if let Some(incident) = incidents.into_iter().find(|incident| incident.instance == key) {
                return incident;
            }
            assert!(started.elapsed() < DEADLINE, "instance {key} raised no incident within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An operator retries the step that raised the incident.
    pub async fn resolve(&self, incident: &IncidentEntry) {
        let command = Command::ResolveIncident { incident: incident.incident, variables: VariableMap::new() };
        self.shell.command(incident.instance, command, Actor::user("operator", None)).await.unwrap();
    }

    /// The instance's events.
    pub fn events(&self, key: InstanceKey) -> Vec<Event> {
        events(&self.engine, key)
    }

    /// Whether the instance completed element `id`.
    pub fn reached(&self, key: InstanceKey, id: &str) -> bool {
        self.events(key)
            .iter()
            .any(|event| matches!(event, Event::ElementCompleted { element, .. } if element.0 == id))
    }

    /// The job failures recorded (each failed attempt).
    pub fn n_failures(&self, key: InstanceKey) -> usize {
        self.events(key).iter().filter(|event| matches!(event, Event::JobFailed { .. })).count()
    }
}

pub async fn finished<S: Store>(engine: &Engine<S>, key: InstanceKey) -> StoredInstance {
    let started = std::time::Instant::now();
    loop {
        let stored = engine.instance(key).unwrap();
        if stored.meta.status != InstanceStatus::Active {
            return stored;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "instance {key} did not end within {DEADLINE:?}; incidents: {:?}",
            engine.store().incidents(None, usize::MAX).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn events<S: Store>(engine: &Engine<S>, key: InstanceKey) -> Vec<Event> {
    engine.store().records(key, 1, usize::MAX).unwrap().into_iter().map(|record| record.event).collect()
}

/// The process-scope variables of an instance.
pub fn variables(stored: &StoredInstance) -> VariableMap {
    stored.state.root.and_then(|root| stored.state.variables.get(&root).cloned()).unwrap_or_default()
}
