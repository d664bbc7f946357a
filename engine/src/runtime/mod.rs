//! The runtime core: a pure, deterministic token engine. `decide(definition, instance, command, now)`
//! returns the events a command causes (or a typed rejection); `Instance::apply` folds events into state.
//! Side effects leave as [`Action`]s derived from the events, for the shell to perform after the events
//! are durable.
//!
//! # Contract
//! This module and everything under it does no I/O, reads no clock (time is the `now` argument), makes no
//! random ids (keys come from the instance's counter) and iterates only ordered collections. The tidy
//! test `runtime_core_is_pure` enforces the imports.

mod action;
mod decide;
mod definition;
mod event;
pub mod schedule;
mod state;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

pub use action::{actions_of, Action};
pub use decide::decide;
pub use definition::{
    CompiledMapping, Expr, Flow, JobSpec, MessageSpec, Node, ProcessDefinition, ScopeDef, TimerExpr,
};
pub use event::{Event, IncidentKind, InstanceKey, Key, Retry, VariableMap, EVENT_FORMAT_VERSION};
pub use state::{
    Compensation, ElementInstance, Incident, Instance, InstanceStatus, Job, MessageSubscription,
    SignalSubscription, Timer, UserTask,
};

use crate::model::ElementId;

/// A request to change an instance. It may be rejected; if accepted it becomes events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Command {
    /// Start the instance at `start_event` (default: the process's none start event).
    Start {
        variables: VariableMap,
        business_key: Option<String>,
        start_event: Option<ElementId>,
    },
    Cancel,
    /// Set variables in scope `scope` (default: the process). `local` sets them on that scope only;
    /// otherwise each variable goes to the nearest scope that has it, or the process scope.
    SetVariables {
        scope: Option<Key>,
        variables: VariableMap,
        local: bool,
    },
    CompleteJob {
        job: Key,
        variables: VariableMap,
    },
    /// A failed attempt: `retries` left (0 raises an incident), retry not before `now + backoff_ms`.
    FailJob {
        job: Key,
        retries: u32,
        message: String,
        backoff_ms: Option<u64>,
    },
    /// The job's work ended in a business error, caught by BPMN error events with this code.
    ThrowError {
        job: Key,
        error_code: String,
        message: String,
    },
    CompleteUserTask {
        task: Key,
        variables: VariableMap,
    },
    /// Claims (`Some(user)`) or unclaims (`None`) an open user task: who works on it now.
    AssignUserTask {
        task: Key,
        assignee: Option<String>,
        /// Compare-and-set: applies only while the task's assignee is this (`Some(None)`: unassigned);
        /// `None` applies whoever holds it. Two claims racing for a task: one wins, one is rejected.
        #[serde(default)]
        expected: Option<Option<String>>,
    },
    CorrelateMessage {
        name: String,
        correlation_key: String,
        variables: VariableMap,
        message_id: Option<String>,
    },
    TriggerSignal {
        name: String,
        variables: VariableMap,
    },
    FireTimer {
        timer: Key,
    },
    /// The child instance of call activity `element_instance` completed with `variables`.
    CompleteCallActivity {
        element_instance: Key,
        variables: VariableMap,
    },
    /// The child instance of call activity `element_instance` ended with an unhandled BPMN error: it is
    /// thrown again from the call activity, where boundary events may catch it.
    CallActivityFailed {
        element_instance: Key,
        error_code: String,
        message: String,
    },
    /// The shell could not start the child instance of call activity `element_instance` (e.g. no such
    /// process is deployed): an incident; resolving it asks for the child again.
    CallActivityNotStarted {
        element_instance: Key,
        message: String,
    },
    /// Retry the step that raised the incident, after setting `variables` (process scope, propagated).
    ResolveIncident {
        incident: Key,
        variables: VariableMap,
    },
}

/// Why a command does not apply to the instance in its current state. Never a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the instance has already been started")]
    AlreadyStarted,
    #[error("the instance is not active")]
    NotActive,
    #[error("start event '{0}' is not a start event of this process")]
    NoSuchStartEvent(ElementId),
    #[error("the process has no none start event; name the start event to use")]
    NoNoneStartEvent,
    #[error("there is no open job {0}: it was completed, cancelled or never existed")]
    NoSuchJob(Key),
    #[error("job {0} has no retries left; resolve its incident instead")]
    JobFailed(Key),
    #[error("there is no open user task {0}")]
    NoSuchUserTask(Key),
    #[error("user task {task} is {}", match .assignee { Some(user) => format!("claimed by '{user}'"), None => "not claimed by anyone".to_owned() })]
    UserTaskAssigneeChanged { task: Key, assignee: Option<String> },
    #[error("no subscription of this instance waits for message '{name}' with correlation key '{correlation_key}'")]
    NoMatchingSubscription { name: String, correlation_key: String },
    #[error("no subscription of this instance waits for signal '{0}'")]
    NoSignalSubscription(String),
    #[error("there is no pending timer {0}")]
    NoSuchTimer(Key),
    #[error("timer {timer} is due at {due}; it cannot fire before then")]
    TimerNotDue { timer: Key, due: DateTime<FixedOffset> },
    #[error("there is no open incident {0}")]
    NoSuchIncident(Key),
    #[error("there is no element instance {0} to hold variables")]
    NoSuchScope(Key),
    #[error("element instance {0} is not a call activity waiting for its child")]
    NoSuchCall(Key),
}
