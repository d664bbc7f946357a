//! Instance state: the fold of an instance's events. `apply` is infallible and total — it never panics,
//! never fails, never looks at anything but the state and the event — so replaying a history always
//! reproduces the state exactly. Collections are `BTreeMap`s so iteration order is deterministic.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::event::{Event, IncidentKind, InstanceKey, Key, Retry, VariableMap};
use crate::model::{ElementId, ProcessId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Created in memory by the shell, no event applied yet.
    #[default]
    NotStarted,
    Active,
    Completed,
    Cancelled,
}

/// One process instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub key: Option<InstanceKey>,
    pub process_id: Option<ProcessId>,
    pub version: u32,
    pub business_key: Option<String>,
    pub status: InstanceStatus,
    /// The next free key; every keyed event moves it past its key.
    pub next_key: u64,
    /// The element instance of the process itself.
    pub root: Option<Key>,
    pub elements: BTreeMap<Key, ElementInstance>,
    /// Variables by the element instance that owns the scope.
    pub variables: BTreeMap<Key, VariableMap>,
    pub jobs: BTreeMap<Key, Job>,
    pub user_tasks: BTreeMap<Key, UserTask>,
    pub timers: BTreeMap<Key, Timer>,
    pub message_subscriptions: BTreeMap<Key, MessageSubscription>,
    pub signal_subscriptions: BTreeMap<Key, SignalSubscription>,
    /// Tokens waiting at joining gateways: scope → gateway → incoming flow → count.
    pub joins: BTreeMap<Key, BTreeMap<ElementId, BTreeMap<ElementId, u32>>>,
    pub incidents: BTreeMap<Key, Incident>,
    /// Completed activities with compensation handlers, in completion order.
    pub compensations: Vec<Compensation>,
    /// Call activities waiting for their child instance: element instance → called process id.
    pub calls: BTreeMap<Key, String>,
    /// Number of events applied.
    pub n_events: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElementInstance {
    pub key: Key,
    pub element: ElementId,
    pub element_type: String,
    pub scope: Option<Key>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub key: Key,
    pub element_instance: Key,
    pub element: ElementId,
    pub job_type: String,
    pub retries: u32,
    pub headers: BTreeMap<String, String>,
    pub variables: VariableMap,
    pub retry_at: Option<DateTime<FixedOffset>>,
    /// A job with no retries left waits for an incident to be resolved.
    pub failed: bool,
    /// Failed attempts so far (an exponential back-off grows with it).
    #[serde(default)]
    pub failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserTask {
    pub key: Key,
    pub element_instance: Key,
    pub element: ElementId,
    pub assignee: Option<String>,
    pub candidate_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timer {
    pub key: Key,
    pub element_instance: Key,
    pub element: ElementId,
    pub due: DateTime<FixedOffset>,
    pub fired: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageSubscription {
    pub key: Key,
    pub element_instance: Key,
    pub element: ElementId,
    pub message_name: String,
    pub correlation_key: String,
    pub interrupting: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalSubscription {
    pub key: Key,
    pub element_instance: Key,
    pub element: ElementId,
    pub signal_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub key: Key,
    pub element_instance: Key,
    pub element: ElementId,
    pub kind: IncidentKind,
    pub message: String,
    pub job: Option<Key>,
    pub retry: Retry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compensation {
    pub element_instance: Key,
    pub element: ElementId,
    pub scope: Key,
}

impl Instance {
    /// An empty instance the shell is about to start.
    pub fn new(key: InstanceKey) -> Instance {
        Instance { key: Some(key), next_key: 1, ..Instance::default() }
    }

    pub fn is_active(&self) -> bool {
        self.status == InstanceStatus::Active
    }

    /// Children (direct) of a scope element instance, in key order.
    pub fn children(&self, scope: Key) -> impl Iterator<Item = &ElementInstance> {
        self.elements.values().filter(move |element| element.scope == Some(scope))
    }

    /// The variables visible from element instance `key`: every enclosing scope's, inner ones winning;
    /// engine bookkeeping (`_govflow*`) left out. What a job or user task sees when it is activated.
    pub fn visible_variables(&self, key: Key) -> serde_json::Map<String, serde_json::Value> {
        let mut chain = Vec::new();
        let mut current = Some(key);
        while let Some(k) = current {
            chain.push(k);
            current = self.elements.get(&k).and_then(|e| e.scope);
        }
        let mut visible = serde_json::Map::new();
        for scope in chain.iter().rev() {
            if let Some(variables) = self.variables.get(scope) {
                for (name, value) in variables.iter().filter(|(name, _)| !name.starts_with("_govflow")) {
                    visible.insert(name.clone(), value.clone());
                }
            }
        }
        visible
    }

    fn claim(&mut self, key: Key) {
        self.next_key = self.next_key.max(key.0.saturating_add(1));
    }

    /// Folds one event into the state. Infallible: an event that refers to something absent changes
    /// nothing (it cannot happen for histories written by `decide`).
    pub fn apply(&mut self, event: &Event) {
        self.n_events += 1;
        match event {
            Event::InstanceCreated { process_id, version, business_key, .. } => {
                self.process_id = Some(process_id.clone());
                self.version = *version;
                self.business_key = business_key.clone();
                self.status = InstanceStatus::Active;
            }
            Event::ElementActivated { key, element, element_type, scope } => {
                self.claim(*key);
                if scope.is_none() {
                    self.root = Some(*key);
                }
                self.elements.insert(
                    *key,
                    ElementInstance {
                        key: *key,
                        element: element.clone(),
                        element_type: element_type.clone(),
                        scope: *scope,
                    },
                );
            }
            Event::ElementCompleted { key, .. } | Event::ElementTerminated { key, .. } => {
                let removed = self.elements.remove(key);
                self.calls.remove(key);
                if Some(*key) != self.root {
                    self.variables.remove(key);
                    self.joins.remove(key);
                    match (event, removed.and_then(|element| element.scope)) {
                        // A completed sub-process's activities stay compensable from its enclosing scope.
                        (Event::ElementCompleted { .. }, Some(parent)) => {
                            for compensation in self.compensations.iter_mut().filter(|c| c.scope == *key) {
                                compensation.scope = parent;
                            }
                        }
                        _ => self.compensations.retain(|compensation| compensation.scope != *key),
                    }
                }
            }
            Event::SequenceFlowTaken { .. } => {}
            Event::VariablesChanged { scope, variables, .. } => {
                let target = self.variables.entry(*scope).or_default();
                for (name, value) in variables {
                    target.insert(name.clone(), value.clone());
                }
            }
            Event::JobCreated { job, element_instance, element, job_type, retries, headers, variables } => {
                self.claim(*job);
                self.jobs.insert(
                    *job,
                    Job {
                        key: *job,
                        element_instance: *element_instance,
                        element: element.clone(),
                        job_type: job_type.clone(),
                        retries: *retries,
                        headers: headers.clone(),
                        variables: variables.clone(),
                        retry_at: None,
                        failed: false,
                        failures: 0,
                    },
                );
            }
            Event::JobCompleted { job, .. }
            | Event::JobCancelled { job }
            | Event::JobErrorThrown { job, .. } => {
                self.jobs.remove(job);
            }
            Event::JobFailed { job, retries, retry_at, .. } => {
                if let Some(job) = self.jobs.get_mut(job) {
                    job.retries = *retries;
                    job.retry_at = *retry_at;
                    job.failed = *retries == 0;
                    job.failures = job.failures.saturating_add(1);
                }
            }
            Event::JobRetriesUpdated { job, retries } => {
                if let Some(job) = self.jobs.get_mut(job) {
                    job.retries = *retries;
                    job.retry_at = None;
                    job.failed = false;
                }
            }
            Event::UserTaskOpened { task, element_instance, element, assignee, candidate_groups, .. } => {
                self.claim(*task);
                self.user_tasks.insert(
                    *task,
                    UserTask {
                        key: *task,
                        element_instance: *element_instance,
                        element: element.clone(),
                        assignee: assignee.clone(),
                        candidate_groups: candidate_groups.clone(),
                    },
                );
            }
            Event::UserTaskCompleted { task, .. } | Event::UserTaskCancelled { task } => {
                self.user_tasks.remove(task);
            }
            Event::UserTaskAssigned { task, assignee } => {
                if let Some(task) = self.user_tasks.get_mut(task) {
                    task.assignee = assignee.clone();
                }
            }
            Event::TimerScheduled { timer, element_instance, element, due, fired } => {
                self.claim(*timer);
                self.timers.insert(
                    *timer,
                    Timer {
                        key: *timer,
                        element_instance: *element_instance,
                        element: element.clone(),
                        due: *due,
                        fired: *fired,
                    },
                );
            }
            Event::TimerFired { timer } | Event::TimerCancelled { timer } => {
                self.timers.remove(timer);
            }
            Event::MessageSubscriptionOpened {
                subscription,
                element_instance,
                element,
                message_name,
                correlation_key,
                interrupting,
            } => {
                self.claim(*subscription);
                self.message_subscriptions.insert(
                    *subscription,
                    MessageSubscription {
                        key: *subscription,
                        element_instance: *element_instance,
                        element: element.clone(),
                        message_name: message_name.clone(),
                        correlation_key: correlation_key.clone(),
                        interrupting: *interrupting,
                    },
                );
            }
            Event::MessageSubscriptionClosed { subscription } => {
                self.message_subscriptions.remove(subscription);
            }
            Event::MessageCorrelated { subscription, .. } => {
                // A non-interrupting subscription stays open for the next message; the decider closes the
                // others explicitly with MessageSubscriptionClosed.
                let _ = subscription;
            }
            Event::SignalSubscriptionOpened { subscription, element_instance, element, signal_name } => {
                self.claim(*subscription);
                self.signal_subscriptions.insert(
                    *subscription,
                    SignalSubscription {
                        key: *subscription,
                        element_instance: *element_instance,
                        element: element.clone(),
                        signal_name: signal_name.clone(),
                    },
                );
            }
            Event::SignalSubscriptionClosed { subscription } => {
                self.signal_subscriptions.remove(subscription);
            }
            Event::SignalReceived { .. } | Event::SignalBroadcast { .. } => {}
            Event::JoinArrived { gateway, scope, flow } => {
                *self
                    .joins
                    .entry(*scope)
                    .or_default()
                    .entry(gateway.clone())
                    .or_default()
                    .entry(flow.clone())
                    .or_default() += 1;
            }
            Event::JoinsDiscarded { scope } => {
                self.joins.remove(scope);
            }
            Event::JoinConsumed { gateway, scope, flows } => {
                if let Some(gateways) = self.joins.get_mut(scope) {
                    if let Some(arrivals) = gateways.get_mut(gateway) {
                        for flow in flows {
                            if let Some(count) = arrivals.get_mut(flow) {
                                *count = count.saturating_sub(1);
                                if *count == 0 {
                                    arrivals.remove(flow);
                                }
                            }
                        }
                        if arrivals.is_empty() {
                            gateways.remove(gateway);
                        }
                    }
                    if gateways.is_empty() {
                        self.joins.remove(scope);
                    }
                }
            }
            Event::ErrorThrown { .. } | Event::EscalationThrown { .. } => {}
            Event::IncidentRaised { incident, element_instance, element, kind, message, job, retry } => {
                if *kind == IncidentKind::CalledProcessNotFound {
                    // The call no longer waits for a child until the incident's retry asks again.
                    self.calls.remove(element_instance);
                }
                self.claim(*incident);
                self.incidents.insert(
                    *incident,
                    Incident {
                        key: *incident,
                        element_instance: *element_instance,
                        element: element.clone(),
                        kind: *kind,
                        message: message.clone(),
                        job: *job,
                        retry: *retry,
                    },
                );
            }
            Event::IncidentResolved { incident } => {
                self.incidents.remove(incident);
            }
            Event::ChildInstanceRequested { element_instance, process_id, .. } => {
                self.calls.insert(*element_instance, process_id.clone());
            }
            Event::ChildInstanceCancelRequested { element_instance }
            | Event::ChildInstanceCompleted { element_instance, .. }
            | Event::ChildInstanceFailed { element_instance, .. } => {
                self.calls.remove(element_instance);
            }
            Event::CompensationStarted { element_instance, .. } => {
                self.compensations.retain(|compensation| compensation.element_instance != *element_instance);
            }
            Event::CompensationRecorded { element_instance, element, scope } => {
                self.compensations.push(Compensation {
                    element_instance: *element_instance,
                    element: element.clone(),
                    scope: *scope,
                });
            }
            Event::InstanceCompleted { .. } => {
                self.status = InstanceStatus::Completed;
            }
            Event::InstanceCancelled => {
                self.status = InstanceStatus::Cancelled;
            }
        }
    }

    /// The state after `events`, from empty.
    pub fn replay<'a>(key: InstanceKey, events: impl IntoIterator<Item = &'a Event>) -> Instance {
        let mut instance = Instance::new(key);
        for event in events {
            instance.apply(event);
        }
        instance
    }
}
