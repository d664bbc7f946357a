//! Events: the persisted facts of an instance's life, in the past tense. They are the audit record and the
//! only input of `apply`, so their serialised form is a stable, versioned format: a change that breaks
//! replay of stored histories is a bug. Never put derived or wall-clock data here that `decide` did not
//! compute from its arguments.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{ElementId, ProcessId};

/// Version of the event format written by this build. Readers accept every version up to this one.
pub const EVENT_FORMAT_VERSION: u16 = 1;

/// Identifies an instance; assigned by the shell (the store's counter), never by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceKey(pub u64);

/// A key unique within one instance: element instances, jobs, timers, subscriptions and incidents all draw
/// from the instance's counter, so replay reproduces them exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(pub u64);

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Variable values by name; `BTreeMap` so serialisation and iteration are deterministic.
pub type VariableMap = BTreeMap<String, Value>;

/// Why an incident was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// An exclusive or inclusive gateway (or conditional flows) had no matching flow and no default.
    NoMatchingFlow,
    /// A FEEL expression failed to evaluate or gave a value of the wrong type.
    ExpressionFailed,
    /// A BPMN error was thrown and nothing caught it.
    UnhandledError,
    /// A job failed with no retries left.
    JobNoRetries,
    /// The element cannot run (e.g. a called decision that does not exist, an element not executed yet).
    Unsupported,
    /// A call activity's process could not be started (not deployed, or disabled).
    CalledProcessNotFound,
    /// A business rule task's decision is not deployed with the process.
    DecisionNotFound,
}

/// What resolving an incident retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Run the element's behaviour again (input mappings, then its work).
    Run,
    /// Create a new job for the element, with its configured retries.
    Job,
    /// Choose the element's outgoing flows again and leave it.
    Finish,
    /// Apply the element's output mappings again (the job's result is kept as its local variables).
    Outputs,
    /// Evaluate a loop's completion / loop condition again and continue the loop.
    ContinueLoop,
    /// Open the event sub-process triggers of the scope again.
    OpenTriggers,
}

/// What happened, with everything an auditor needs to understand the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    InstanceCreated {
        process_id: ProcessId,
        version: u32,
        business_key: Option<String>,
        /// The start event chosen (none start unless a message/timer/signal start was triggered).
        start_event: ElementId,
        variables: VariableMap,
    },
    ElementActivated {
        key: Key,
        element: ElementId,
        element_type: String,
        /// The element instance of the enclosing scope (`None` only for the process itself).
        scope: Option<Key>,
    },
    ElementCompleted {
        key: Key,
        element: ElementId,
    },
    ElementTerminated {
        key: Key,
        element: ElementId,
    },
    SequenceFlowTaken {
        flow: ElementId,
        scope: Key,
        source: ElementId,
        target: ElementId,
    },
    /// Variables set in the scope of element instance `scope` (new values; JSON null is a value).
    VariablesChanged {
        scope: Key,
        element: ElementId,
        variables: VariableMap,
    },
    JobCreated {
        job: Key,
        element_instance: Key,
        element: ElementId,
        job_type: String,
        retries: u32,
        headers: BTreeMap<String, String>,
        /// The job's own input: the element's local variables from its input mappings (the rest of what the
        /// job sees is read from the instance's variables when it is activated, so events stay small).
        variables: VariableMap,
    },
    JobCompleted {
        job: Key,
        variables: VariableMap,
    },
    JobFailed {
        job: Key,
        retries: u32,
        message: String,
        /// When the job may run again (`None`: at once).
        retry_at: Option<DateTime<FixedOffset>>,
    },
    /// An operator resolved the incident of a job that ran out of retries: the same job (same key, so
    /// the same idempotency key) runs again with `retries` attempts.
    JobRetriesUpdated {
        job: Key,
        retries: u32,
    },
    JobErrorThrown {
        job: Key,
        error_code: String,
        message: String,
    },
    JobCancelled {
        job: Key,
    },
    UserTaskOpened {
        task: Key,
        element_instance: Key,
        element: ElementId,
        name: Option<String>,
        assignee: Option<String>,
        candidate_groups: Vec<String>,
        candidate_users: Vec<String>,
        form_key: Option<String>,
        due_date: Option<String>,
        variables: VariableMap,
    },
    UserTaskCompleted {
        task: Key,
        variables: VariableMap,
    },
    UserTaskCancelled {
        task: Key,
    },
    /// An open user task's assignee changed (a claim, or `None`: given back).
    UserTaskAssigned {
        task: Key,
        assignee: Option<String>,
    },
    TimerScheduled {
        timer: Key,
        element_instance: Key,
        /// The element whose trigger this is (a catch event, a boundary event, an event-based gateway's
        /// target, or an event sub-process start).
        element: ElementId,
        due: DateTime<FixedOffset>,
        /// Repetitions already fired (cycles).
        fired: u32,
    },
    TimerFired {
        timer: Key,
    },
    TimerCancelled {
        timer: Key,
    },
    MessageSubscriptionOpened {
        subscription: Key,
        element_instance: Key,
        element: ElementId,
        message_name: String,
        correlation_key: String,
        interrupting: bool,
    },
    MessageSubscriptionClosed {
        subscription: Key,
    },
    MessageCorrelated {
        subscription: Key,
        message_name: String,
        correlation_key: String,
        message_id: Option<String>,
        variables: VariableMap,
    },
    SignalSubscriptionOpened {
        subscription: Key,
        element_instance: Key,
        element: ElementId,
        signal_name: String,
    },
    SignalSubscriptionClosed {
        subscription: Key,
    },
    SignalReceived {
        subscription: Key,
        signal_name: String,
        variables: VariableMap,
    },
    /// A signal throw event broadcast a signal; the shell delivers it to every subscribed instance.
    SignalBroadcast {
        element_instance: Key,
        signal_name: String,
        variables: VariableMap,
    },
    /// A token arrived at a joining gateway and waits for the others.
    JoinArrived {
        gateway: ElementId,
        scope: Key,
        flow: ElementId,
    },
    /// Tokens waiting at joining gateways of `scope` were discarded (an interrupting event or a terminate
    /// end event ended everything in the scope).
    JoinsDiscarded {
        scope: Key,
    },
    /// A joining gateway consumed one token per satisfied incoming flow.
    JoinConsumed {
        gateway: ElementId,
        scope: Key,
        flows: Vec<ElementId>,
    },
    ErrorThrown {
        element_instance: Key,
        error_code: String,
        message: String,
    },
    EscalationThrown {
        element_instance: Key,
        escalation_code: String,
    },
    IncidentRaised {
        incident: Key,
        element_instance: Key,
        element: ElementId,
        kind: IncidentKind,
        message: String,
        /// The job whose failure raised it, when there is one.
        job: Option<Key>,
        retry: Retry,
    },
    IncidentResolved {
        incident: Key,
    },
    /// A call activity asks the shell to start an instance of `process_id` with `variables`.
    ChildInstanceRequested {
        element_instance: Key,
        element: ElementId,
        process_id: String,
        variables: VariableMap,
    },
    /// The child instance of a call activity completed with `variables`.
    ChildInstanceCompleted {
        element_instance: Key,
        variables: VariableMap,
    },
    /// The child instance of a call activity ended with an unhandled BPMN error.
    ChildInstanceFailed {
        element_instance: Key,
        error_code: String,
    },
    /// The call activity ended before its child: the shell cancels the child instance.
    ChildInstanceCancelRequested {
        element_instance: Key,
    },
    /// Compensation thrown by `thrower` runs `handler` to undo the completed `element_instance`.
    CompensationStarted {
        thrower: Key,
        element_instance: Key,
        element: ElementId,
        handler: ElementId,
    },
    /// A completed activity with a compensation handler, recorded so compensation can undo it later.
    CompensationRecorded {
        element_instance: Key,
        element: ElementId,
        scope: Key,
    },
    InstanceCompleted {
        variables: VariableMap,
    },
    InstanceCancelled,
}

impl Event {
    /// The event's name as an auditor reads it (`ElementActivated`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Event::InstanceCreated { .. } => "InstanceCreated",
            Event::ElementActivated { .. } => "ElementActivated",
            Event::ElementCompleted { .. } => "ElementCompleted",
            Event::ElementTerminated { .. } => "ElementTerminated",
            Event::SequenceFlowTaken { .. } => "SequenceFlowTaken",
            Event::VariablesChanged { .. } => "VariablesChanged",
            Event::JobCreated { .. } => "JobCreated",
            Event::JobCompleted { .. } => "JobCompleted",
            Event::JobFailed { .. } => "JobFailed",
            Event::JobRetriesUpdated { .. } => "JobRetriesUpdated",
            Event::JobErrorThrown { .. } => "JobErrorThrown",
            Event::JobCancelled { .. } => "JobCancelled",
            Event::UserTaskOpened { .. } => "UserTaskOpened",
            Event::UserTaskCompleted { .. } => "UserTaskCompleted",
            Event::UserTaskCancelled { .. } => "UserTaskCancelled",
            Event::UserTaskAssigned { .. } => "UserTaskAssigned",
            Event::TimerScheduled { .. } => "TimerScheduled",
            Event::TimerFired { .. } => "TimerFired",
            Event::TimerCancelled { .. } => "TimerCancelled",
            Event::MessageSubscriptionOpened { .. } => "MessageSubscriptionOpened",
            Event::MessageSubscriptionClosed { .. } => "MessageSubscriptionClosed",
            Event::MessageCorrelated { .. } => "MessageCorrelated",
            Event::SignalSubscriptionOpened { .. } => "SignalSubscriptionOpened",
            Event::SignalSubscriptionClosed { .. } => "SignalSubscriptionClosed",
            Event::SignalReceived { .. } => "SignalReceived",
            Event::SignalBroadcast { .. } => "SignalBroadcast",
            Event::JoinArrived { .. } => "JoinArrived",
            Event::JoinConsumed { .. } => "JoinConsumed",
            Event::JoinsDiscarded { .. } => "JoinsDiscarded",
            Event::ErrorThrown { .. } => "ErrorThrown",
            Event::EscalationThrown { .. } => "EscalationThrown",
            Event::IncidentRaised { .. } => "IncidentRaised",
            Event::IncidentResolved { .. } => "IncidentResolved",
            Event::CompensationRecorded { .. } => "CompensationRecorded",
            Event::ChildInstanceRequested { .. } => "ChildInstanceRequested",
            Event::ChildInstanceCancelRequested { .. } => "ChildInstanceCancelRequested",
            Event::ChildInstanceCompleted { .. } => "ChildInstanceCompleted",
            Event::ChildInstanceFailed { .. } => "ChildInstanceFailed",
            Event::CompensationStarted { .. } => "CompensationStarted",
            Event::InstanceCompleted { .. } => "InstanceCompleted",
            Event::InstanceCancelled => "InstanceCancelled",
        }
    }
}
