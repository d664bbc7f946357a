//! Actions: the side effects an accepted command asks the shell to perform once its events are durable —
//! run a job, open a user task, schedule or cancel a timer, open or close a subscription, broadcast a
//! signal. Derived from events by a pure function, so the outbox can always be rebuilt from the log.

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::event::{Event, Key, VariableMap};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Action {
    /// Make job `job` available to its connector or workers.
    RunJob {
        job: Key,
        job_type: String,
    },
    /// Make a failed job with retries left available again, not before `retry_at`.
    RetryJob {
        job: Key,
        retry_at: Option<DateTime<FixedOffset>>,
    },
    CancelJob {
        job: Key,
    },
    OpenUserTask {
        task: Key,
    },
    CloseUserTask {
        task: Key,
    },
    ScheduleTimer {
        timer: Key,
        due: DateTime<FixedOffset>,
    },
    CancelTimer {
        timer: Key,
    },
    OpenMessageSubscription {
        subscription: Key,
        message_name: String,
        correlation_key: String,
    },
    CloseMessageSubscription {
        subscription: Key,
    },
    OpenSignalSubscription {
        subscription: Key,
        signal_name: String,
    },
    CloseSignalSubscription {
        subscription: Key,
    },
    BroadcastSignal {
        signal_name: String,
        variables: VariableMap,
    },
    /// Start a child instance for a call activity; its end is reported back with
    /// `Command::CompleteCallActivity` (or `Command::ThrowError`-like `CallActivityFailed`).
    StartChildInstance {
        element_instance: Key,
        process_id: String,
        variables: VariableMap,
    },
    CancelChildInstance {
        element_instance: Key,
    },
    /// The instance ended (completed or cancelled): notify parents, flow triggers, waiting callers.
    InstanceEnded {
        completed: bool,
    },
    /// An incident stopped part of the instance: flow triggers on failure.
    IncidentRaised {
        incident: Key,
        message: String,
    },
}

/// The actions that `events` call for, in event order.
pub fn actions_of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<Action> {
    let mut actions = Vec::new();
    for event in events {
        let action = match event {
            Event::JobCreated { job, job_type, .. } => {
                Action::RunJob { job: *job, job_type: job_type.clone() }
            }
            Event::JobFailed { job, retries, retry_at, .. } if *retries > 0 => {
                Action::RetryJob { job: *job, retry_at: *retry_at }
            }
            Event::JobRetriesUpdated { job, .. } => Action::RetryJob { job: *job, retry_at: None },
            Event::JobCancelled { job } => Action::CancelJob { job: *job },
            Event::UserTaskOpened { task, .. } => Action::OpenUserTask { task: *task },
            Event::UserTaskCompleted { task, .. } | Event::UserTaskCancelled { task } => {
                Action::CloseUserTask { task: *task }
            }
            Event::TimerScheduled { timer, due, .. } => Action::ScheduleTimer { timer: *timer, due: *due },
            Event::TimerCancelled { timer } => Action::CancelTimer { timer: *timer },
            Event::MessageSubscriptionOpened { subscription, message_name, correlation_key, .. } => {
                Action::OpenMessageSubscription {
                    subscription: *subscription,
                    message_name: message_name.clone(),
                    correlation_key: correlation_key.clone(),
                }
            }
            Event::MessageSubscriptionClosed { subscription } => {
                Action::CloseMessageSubscription { subscription: *subscription }
            }
            Event::SignalSubscriptionOpened { subscription, signal_name, .. } => {
                Action::OpenSignalSubscription {
                    subscription: *subscription,
                    signal_name: signal_name.clone(),
                }
            }
            Event::SignalSubscriptionClosed { subscription } => {
                Action::CloseSignalSubscription { subscription: *subscription }
            }
            Event::SignalBroadcast { signal_name, variables, .. } => {
                Action::BroadcastSignal { signal_name: signal_name.clone(), variables: variables.clone() }
            }
            Event::ChildInstanceRequested { element_instance, process_id, variables, .. } => {
                Action::StartChildInstance {
                    element_instance: *element_instance,
                    process_id: process_id.clone(),
                    variables: variables.clone(),
                }
            }
            Event::ChildInstanceCancelRequested { element_instance } => {
                Action::CancelChildInstance { element_instance: *element_instance }
            }
            Event::InstanceCompleted { .. } => Action::InstanceEnded { completed: true },
            Event::InstanceCancelled => Action::InstanceEnded { completed: false },
            Event::IncidentRaised { incident, message, .. } => {
                Action::IncidentRaised { incident: *incident, message: message.clone() }
            }
            _ => continue,
        };
        actions.push(action);
    }
    actions
}
