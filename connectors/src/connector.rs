//! The connector contract. A BPMN service task names a job type (`zeebe:taskDefinition type`); the
//! connector registered for that type receives the job's input-mapped variables, its task headers (the
//! designer's static configuration: registry name, message template, ...) and its idempotency key, and
//! answers with variables, a BPMN error, or a failure.
//!
//! # Contract
//! - A connector never touches the store and keeps no state that must survive a restart: the engine may
//!   call it again for the same job, with the same idempotency key, after a crash. Every call that has an
//!   effect on the far side passes that key on, so the far side can deduplicate.
//! - [`ConnectorError::Business`] is an outcome the journey models (caught by an error boundary event by
//!   its code); [`ConnectorError::Retryable`] is retried with back-off while retries last, then becomes an
//!   incident; [`ConnectorError::Permanent`] is an incident at once (retrying cannot fix it).
//! - Messages name the building block, the operation and what was wrong, never a secret.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use govflow_engine::engine::JobHandle;
use govflow_engine::runtime::VariableMap;
use govflow_engine::shell::{HandlerFuture, JobHandler, JobOutcome};
use serde_json::Value;

/// What a connector is asked to do: one job.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorRequest {
    pub job_type: String,
    /// The BPMN element the job belongs to (for messages).
    pub element: String,
    /// The job's variables: its input mappings, and what else is visible to the task.
    pub variables: VariableMap,
    /// The task headers (`zeebe:taskHeaders`): the connector's static configuration in the diagram.
    pub headers: BTreeMap<String, String>,
    /// Stable across retries and restarts; pass it to the far side (request id, `X-Road-Id`, ...).
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The job may have been handed out before without its outcome being committed (delivered again
    /// after a restart of govflow): its effect may already have happened, even on attempt 1.
    pub redelivered: bool,
    /// The acting user, when the journey names one (the `actingUser` variable): `X-Road-UserId`.
    pub user: Option<String>,
}

/// The variable naming the acting user of a call (sent as `X-Road-UserId`).
pub const ACTING_USER: &str = "actingUser";

impl ConnectorRequest {
    /// The request for an engine job.
    pub fn from_job(job: JobHandle) -> ConnectorRequest {
        let user = job.variables.get(ACTING_USER).and_then(Value::as_str).map(str::to_owned);
        ConnectorRequest {
            job_type: job.job_type,
            element: job.element,
            variables: job.variables,
            headers: job.headers,
            idempotency_key: job.idempotency_key,
            attempt: job.attempt,
            redelivered: job.redelivered,
            user,
        }
    }

    /// A variable, if set and not null.
    pub fn variable(&self, name: &str) -> Option<&Value> {
        self.variables.get(name).filter(|value| !value.is_null())
    }

    /// A required variable; its absence is a permanent failure naming it and the task.
    pub fn require(&self, name: &str) -> Result<&Value, ConnectorError> {
        self.variable(name).ok_or_else(|| {
            ConnectorError::Permanent(format!(
                "task '{}' ({}): input variable '{name}' is missing; map it in the task's inputs",
                self.element, self.job_type
            ))
        })
    }

    /// A required string variable (numbers are accepted and written out).
    pub fn require_str(&self, name: &str) -> Result<String, ConnectorError> {
        match self.require(name)? {
            Value::String(text) => Ok(text.clone()),
            Value::Number(number) => Ok(number.to_string()),
            other => Err(ConnectorError::Permanent(format!(
                "task '{}' ({}): input variable '{name}' must be a string, not {other}",
                self.element, self.job_type
            ))),
        }
    }

    /// A header, or else a variable of the same name (a designer may set either).
    pub fn setting(&self, name: &str) -> Option<String> {
        self.headers.get(name).cloned().or_else(|| match self.variable(name) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        })
    }

    /// A required setting (header or variable); its absence is a permanent failure naming it.
    pub fn require_setting(&self, name: &str) -> Result<String, ConnectorError> {
        self.setting(name).ok_or_else(|| {
            ConnectorError::Permanent(format!(
                "task '{}' ({}): set the task header '{name}' (or an input variable of that name)",
                self.element, self.job_type
            ))
        })
    }
}

/// A connector's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: these variables go back to the instance (through the task's output mappings).
    Complete(VariableMap),
    /// Accepted by the far side, which answers later by callback (a payment): the job stays open until
    /// the callback completes it or throws its error. Calling again with the same idempotency key must
    /// be safe (the far side repeats its answer).
    AwaitCallback,
}

/// Why a connector did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectorError {
    /// A business outcome the BPMN models, by error code (`ID_NOT_VERIFIED`, `RECORD_NOT_FOUND`, ...).
    #[error("BPMN error {code}: {message}")]
    Business { code: String, message: String },
    /// A technical failure that may pass (timeout, 5xx, connection refused): retried with back-off.
    #[error("{message}")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// A failure no retry can fix (bad configuration, refused credentials, a 4xx): an incident at once.
    #[error("{0}")]
    Permanent(String),
}

impl ConnectorError {
    pub fn business(code: &str, message: impl Into<String>) -> ConnectorError {
        ConnectorError::Business { code: code.to_owned(), message: message.into() }
    }

    pub fn retryable(message: impl Into<String>) -> ConnectorError {
        ConnectorError::Retryable { message: message.into(), retry_after: None }
    }
}

/// The future a connector returns.
pub type ConnectorFuture = Pin<Box<dyn Future<Output = Result<Outcome, ConnectorError>> + Send + 'static>>;

/// Runs jobs of one or more job types against an external system.
pub trait Connector: Send + Sync + 'static {
    /// The job types it serves (e.g. `govstack.registries.read`).
    fn job_types(&self) -> Vec<String>;

    fn invoke(&self, request: ConnectorRequest) -> ConnectorFuture;
}

/// Runs a connector as the engine shell's job handler.
#[derive(Clone)]
pub struct ConnectorHandler {
    connector: Arc<dyn Connector>,
}

impl std::fmt::Debug for ConnectorHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorHandler").field("job_types", &self.connector.job_types()).finish()
    }
}

impl ConnectorHandler {
    pub fn new(connector: Arc<dyn Connector>) -> ConnectorHandler {
        ConnectorHandler { connector }
    }
}

/// The shell's outcome for a connector's answer.
pub fn job_outcome(result: Result<Outcome, ConnectorError>) -> JobOutcome {
    match result {
        Ok(Outcome::Complete(variables)) => JobOutcome::Complete(variables),
        Ok(Outcome::AwaitCallback) => JobOutcome::Pending,
        Err(ConnectorError::Business { code, message }) => JobOutcome::Error { code, message },
        Err(ConnectorError::Retryable { message, retry_after }) => {
            JobOutcome::Fail { message, backoff: retry_after }
        }
        Err(ConnectorError::Permanent(message)) => JobOutcome::Incident { message },
    }
}

impl JobHandler for ConnectorHandler {
    fn handle(&self, job: JobHandle) -> HandlerFuture {
        let future = self.connector.invoke(ConnectorRequest::from_job(job));
        Box::pin(async move { job_outcome(future.await) })
    }
}

/// Registers every job type of every connector with a shell builder, within the shell's default limits.
pub fn register<S: govflow_engine::store::Store + 'static>(
    builder: govflow_engine::shell::ShellBuilder<S>,
    connectors: &[Arc<dyn Connector>],
) -> govflow_engine::shell::ShellBuilder<S> {
    register_with_limits(builder, connectors, &BTreeMap::new())
}

/// Registers every job type of every connector, each within its configured limits (`[connectors.limits]`).
pub fn register_with_limits<S: govflow_engine::store::Store + 'static>(
    mut builder: govflow_engine::shell::ShellBuilder<S>,
    connectors: &[Arc<dyn Connector>],
    limits: &BTreeMap<String, crate::config::LimitConfig>,
) -> govflow_engine::shell::ShellBuilder<S> {
    for connector in connectors {
        for job_type in connector.job_types() {
            let limit = limits.get(&job_type).map(crate::config::LimitConfig::job_limits).unwrap_or_default();
            builder = builder.handler_with(&job_type, ConnectorHandler::new(Arc::clone(connector)), limit);
        }
    }
    builder
}
