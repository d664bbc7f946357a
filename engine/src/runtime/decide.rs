//! `decide`: from a command and the current state, the events that follow (BPMN 2.0.2 §13 token semantics,
//! Zeebe's behaviour where BPMN leaves room). Works on a copy of the state, applying each event as it is
//! emitted so later steps see earlier ones; the caller's state is untouched. Never panics, never reads a
//! clock, never loops forever (a step budget turns a wait-state-free cycle into an incident).

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, FixedOffset};
use serde_json::Value as Json;

use super::definition::{Expr, Node, ProcessDefinition, TimerExpr};
use super::event::{Event, IncidentKind, Key, Retry, VariableMap};
use super::state::{Instance, InstanceStatus};
use super::{Command, Rejection};
use crate::feel::eval::{self, Variables};
use crate::model::Event as BpmnEvent;
use crate::model::*;
use crate::timer::{parse_date_time, Cycle, IsoDuration};

/// The element type of a loop's body instance (its iterations have the activity's own type).
const BODY: &str = "multiInstanceBody";
/// The body-local variable holding a multi-instance's input collection, evaluated once at the start.
const ITEMS: &str = "_govflow_items";
/// A compensation thrower's local list of element instances still to compensate.
const COMPENSATING: &str = "_govflow_compensating";
/// A compensation handler's local pointer to the thrower waiting for it.
const COMPENSATION_FOR: &str = "_govflow_compensation_for";
/// Variables whose name starts with this are the engine's bookkeeping: recorded, never visible to FEEL
/// or jobs.
const INTERNAL_PREFIX: &str = "_govflow";

/// Loop bookkeeping, kept in the body's (and iteration's) internal variables: counted by the engine,
/// never by data a worker returns. FEEL sees them as `numberOfInstances` etc. (see `loop_view`).
const N_INSTANCES: &str = "_govflow_instances";
const N_COMPLETED: &str = "_govflow_completed";
const N_ACTIVE: &str = "_govflow_active";
const INDEX: &str = "_govflow_index";

/// Most instances one multi-instance activity may create (a cardinality from data must not exhaust
/// memory or the step budget).
const MAX_INSTANCES: usize = 10_000;

/// Steps one command may take before the instance is judged to be looping without a wait state.
const STEP_BUDGET: usize = 100_000;

/// The events that `command` causes on `instance`, or why it does not apply.
pub fn decide(
    definition: &ProcessDefinition,
    instance: &Instance,
    command: &Command,
    now: DateTime<FixedOffset>,
) -> Result<Vec<Event>, Rejection> {
    let mut run = Run {
        definition,
        state: instance.clone(),
        events: Vec::new(),
        now,
        queue: VecDeque::new(),
        steps: 0,
        compensation_thrower: BTreeMap::new(),
    };
    run.command(command)?;
    run.drain();
    Ok(run.events)
}

/// A unit of work inside one command.
#[derive(Debug, Clone)]
enum Step {
    /// A token arrives at `element` in scope instance `scope` (over `via`, when it came by a flow).
    /// `triggered`: the element's event already happened (start events, triggered catch events).
    Arrive { element: ElementId, scope: Key, via: Option<ElementId>, triggered: Option<VariableMap> },
    /// Run the behaviour of an activated element instance (also the retry after an incident).
    Run { key: Key },
    /// The element instance finished its work with `result` variables: map outputs, leave.
    Complete { key: Key, result: VariableMap },
    /// Choose the outgoing flows of an element whose work is done, then complete and leave it (also the
    /// retry after a failed condition).
    Finish { key: Key },
    /// Leave a completed element over the chosen flows.
    Leave { key: Key, element: ElementId, scope: Key, flows: Vec<ElementId> },
    /// Complete `scope` if nothing is left running in it.
    CheckScope { scope: Key },
}

impl Step {
    /// The scope instance a queued token movement belongs to (`Arrive`, `Leave`), if any.
    fn scope(&self) -> Option<Key> {
        match self {
            Step::Arrive { scope, .. } | Step::Leave { scope, .. } => Some(*scope),
            _ => None,
        }
    }
}

struct Run<'a> {
    definition: &'a ProcessDefinition,
    state: Instance,
    events: Vec<Event>,
    now: DateTime<FixedOffset>,
    queue: VecDeque<Step>,
    steps: usize,
    /// Compensation handlers that completed in this command, with the thrower waiting for them.
    compensation_thrower: BTreeMap<Key, Key>,
}

/// A failure inside a step that becomes an incident on the element instance.
struct Failure {
    kind: IncidentKind,
    message: String,
}

impl Failure {
    fn expression(error: impl std::fmt::Display) -> Failure {
        Failure { kind: IncidentKind::ExpressionFailed, message: error.to_string() }
    }
}

impl<'a> Run<'a> {
    fn emit(&mut self, event: Event) {
        self.state.apply(&event);
        self.events.push(event);
    }

    fn next_key(&self) -> Key {
        Key(self.state.next_key)
    }

    fn node(&self, id: &ElementId) -> Option<&'a Node> {
        self.definition.node(id)
    }

    // -------------------------------------------------------------------------------------------------
    // commands

    fn command(&mut self, command: &Command) -> Result<(), Rejection> {
        if !matches!(command, Command::Start { .. }) && !self.state.is_active() {
            return Err(Rejection::NotActive);
        }
        match command {
            Command::Start { variables, business_key, start_event } => {
                self.start(variables, business_key, start_event)
            }
            Command::Cancel => {
                if let Some(root) = self.state.root {
                    self.terminate(root);
                }
                self.emit(Event::InstanceCancelled);
                Ok(())
            }
            Command::SetVariables { scope, variables, local } => {
                let scope = match scope {
                    Some(scope) if self.state.elements.contains_key(scope) => *scope,
                    Some(scope) => return Err(Rejection::NoSuchScope(*scope)),
                    None => self.state.root.ok_or(Rejection::NotActive)?,
                };
                if *local {
                    let variables: VariableMap = variables
                        .iter()
                        .filter(|(name, _)| !name.starts_with(INTERNAL_PREFIX))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    self.set_local(scope, variables);
                } else {
                    self.propagate(scope, variables.clone());
                }
                Ok(())
            }
            Command::CompleteJob { job, variables } => {
                let job_state = self.state.jobs.get(job).ok_or(Rejection::NoSuchJob(*job))?;
                if job_state.failed {
                    return Err(Rejection::JobFailed(*job));
                }
                let element_instance = job_state.element_instance;
                self.emit(Event::JobCompleted { job: *job, variables: variables.clone() });
                self.queue.push_back(Step::Complete { key: element_instance, result: variables.clone() });
                Ok(())
            }
            Command::FailJob { job, retries, message, backoff_ms } => {
                let job_state = self.state.jobs.get(job).ok_or(Rejection::NoSuchJob(*job))?;
                if job_state.failed {
                    return Err(Rejection::JobFailed(*job));
                }
                let (element_instance, element) = (job_state.element_instance, job_state.element.clone());
                let retry_at = backoff_ms.filter(|_| *retries > 0).and_then(|ms| {
                    self.now.checked_add_signed(chrono::Duration::milliseconds(
                        i64::try_from(ms).unwrap_or(i64::MAX),
                    ))
                });
                self.emit(Event::JobFailed {
                    job: *job,
                    retries: *retries,
                    message: message.clone(),
                    retry_at,
                });
                if *retries == 0 {
                    let incident = self.next_key();
                    self.emit(Event::IncidentRaised {
                        incident,
                        element_instance,
                        element,
                        kind: IncidentKind::JobNoRetries,
                        message: format!("the job failed and has no retries left: {message}"),
                        job: Some(*job),
                        retry: Retry::Job,
                    });
                }
                Ok(())
            }
            Command::ThrowError { job, error_code, message } => {
                let job_state = self.state.jobs.get(job).ok_or(Rejection::NoSuchJob(*job))?;
                if job_state.failed {
                    return Err(Rejection::JobFailed(*job));
                }
                let element_instance = job_state.element_instance;
                self.emit(Event::JobErrorThrown {
                    job: *job,
                    error_code: error_code.clone(),
                    message: message.clone(),
                });
                self.throw_error(element_instance, error_code, message);
                Ok(())
            }
            Command::CompleteUserTask { task, variables } => {
                let user_task = self.state.user_tasks.get(task).ok_or(Rejection::NoSuchUserTask(*task))?;
                let element_instance = user_task.element_instance;
                self.emit(Event::UserTaskCompleted { task: *task, variables: variables.clone() });
                self.queue.push_back(Step::Complete { key: element_instance, result: variables.clone() });
                Ok(())
            }
            Command::AssignUserTask { task, assignee, expected } => {
                let current =
                    &self.state.user_tasks.get(task).ok_or(Rejection::NoSuchUserTask(*task))?.assignee;
                if expected.as_ref().is_some_and(|expected| expected != current) {
                    return Err(Rejection::UserTaskAssigneeChanged {
                        task: *task,
                        assignee: current.clone(),
                    });
                }
                self.emit(Event::UserTaskAssigned { task: *task, assignee: assignee.clone() });
                Ok(())
            }
            Command::CorrelateMessage { name, correlation_key, variables, message_id } => {
                let subscription = self
                    .state
                    .message_subscriptions
                    .values()
                    .find(|s| &s.message_name == name && &s.correlation_key == correlation_key)
                    .cloned()
                    .ok_or_else(|| Rejection::NoMatchingSubscription {
                        name: name.clone(),
                        correlation_key: correlation_key.clone(),
                    })?;
                self.emit(Event::MessageCorrelated {
                    subscription: subscription.key,
                    message_name: name.clone(),
                    correlation_key: correlation_key.clone(),
                    message_id: message_id.clone(),
                    variables: variables.clone(),
                });
                self.trigger(
                    subscription.element_instance,
                    &subscription.element,
                    variables.clone(),
                    Trigger::Other,
                );
                Ok(())
            }
            Command::TriggerSignal { name, variables } => {
                let subscriptions: Vec<_> = self
                    .state
                    .signal_subscriptions
                    .values()
                    .filter(|s| &s.signal_name == name)
                    .cloned()
                    .collect();
                if subscriptions.is_empty() {
                    return Err(Rejection::NoSignalSubscription(name.clone()));
                }
                for subscription in subscriptions {
                    // An earlier trigger of this command may have closed it (interrupting).
                    if !self.state.signal_subscriptions.contains_key(&subscription.key) {
                        continue;
                    }
                    self.emit(Event::SignalReceived {
                        subscription: subscription.key,
                        signal_name: name.clone(),
                        variables: variables.clone(),
                    });
                    self.trigger(
                        subscription.element_instance,
                        &subscription.element,
                        variables.clone(),
                        Trigger::Other,
                    );
                    self.drain();
                }
                Ok(())
            }
            Command::FireTimer { timer } => {
                let timer_state =
                    self.state.timers.get(timer).cloned().ok_or(Rejection::NoSuchTimer(*timer))?;
                if self.now < timer_state.due {
                    return Err(Rejection::TimerNotDue { timer: *timer, due: timer_state.due });
                }
                self.emit(Event::TimerFired { timer: *timer });
                let (owner, element) = (timer_state.element_instance, timer_state.element.clone());
                self.trigger(owner, &element, VariableMap::new(), Trigger::Timer(timer_state));
                Ok(())
            }
            Command::CompleteCallActivity { element_instance, variables } => {
                if !self.state.calls.contains_key(element_instance) {
                    return Err(Rejection::NoSuchCall(*element_instance));
                }
                let propagate_all = self
                    .state
                    .elements
                    .get(element_instance)
                    .and_then(|e| self.node(&e.element))
                    .and_then(|n| n.node.extensions.zeebe.called_element.as_ref())
                    .is_none_or(|z| z.propagate_all_child_variables);
                let has_outputs = self
                    .state
                    .elements
                    .get(element_instance)
                    .and_then(|e| self.node(&e.element))
                    .is_some_and(|n| !n.outputs.is_empty());
                let result =
                    if propagate_all || has_outputs { variables.clone() } else { VariableMap::new() };
                // The child is done: the call no longer waits (a second completion is rejected).
                self.emit(Event::ChildInstanceCompleted {
                    element_instance: *element_instance,
                    variables: variables.clone(),
                });
                self.queue.push_back(Step::Complete { key: *element_instance, result });
                Ok(())
            }
            Command::CallActivityNotStarted { element_instance, message } => {
                if !self.state.calls.contains_key(element_instance) {
                    return Err(Rejection::NoSuchCall(*element_instance));
                }
                self.incident(*element_instance, IncidentKind::CalledProcessNotFound, message.clone());
                Ok(())
            }
            Command::CallActivityFailed { element_instance, error_code, message } => {
                if !self.state.calls.contains_key(element_instance) {
                    return Err(Rejection::NoSuchCall(*element_instance));
                }
                // The child is over: the call no longer waits (a late completion is rejected).
                self.emit(Event::ChildInstanceFailed {
                    element_instance: *element_instance,
                    error_code: error_code.clone(),
                });
                self.throw_error(*element_instance, error_code, message);
                Ok(())
            }
            Command::ResolveIncident { incident, variables } => {
                let incident_state = self
                    .state
                    .incidents
                    .get(incident)
                    .cloned()
                    .ok_or(Rejection::NoSuchIncident(*incident))?;
                if !variables.is_empty() {
                    let scope = self
                        .state
                        .elements
                        .get(&incident_state.element_instance)
                        .and_then(|element| element.scope)
                        .or(self.state.root);
                    if let Some(scope) = scope {
                        self.propagate(scope, variables.clone());
                    }
                }
                self.emit(Event::IncidentResolved { incident: *incident });
                let resolved_on = incident_state.element_instance;
                let is_scope = Some(resolved_on) == self.state.root
                    || self
                        .state
                        .elements
                        .get(&resolved_on)
                        .is_some_and(|e| e.element_type.starts_with("subProcess"));
                match incident_state.retry {
                    Retry::Job => {
                        // The same job runs again (same key: the far side can still deduplicate), with
                        // the element's configured retries.
                        if let Some(job) =
                            incident_state.job.and_then(|job| self.state.jobs.get(&job).cloned())
                        {
                            let retries = self.configured_retries(job.element_instance, &job.element);
                            self.emit(Event::JobRetriesUpdated { job: job.key, retries });
                        }
                    }
                    Retry::Run => {
                        // Whatever the failed run had opened is closed first, so the retry opens it once.
                        self.close_triggers(incident_state.element_instance);
                        self.queue.push_back(Step::Run { key: incident_state.element_instance })
                    }
                    Retry::Outputs => self.queue.push_back(Step::Complete {
                        key: incident_state.element_instance,
                        result: VariableMap::new(),
                    }),
                    Retry::OpenTriggers => {
                        let scope = incident_state.element_instance;
                        let scope_id = if Some(scope) == self.state.root {
                            Some(self.definition.root_id())
                        } else {
                            self.state.elements.get(&scope).map(|e| e.element.clone())
                        };
                        if let Some(scope_id) = scope_id {
                            self.open_event_subprocess_triggers(scope, &scope_id);
                        }
                    }
                    Retry::ContinueLoop => {
                        let body = incident_state.element_instance;
                        if let Some(node) = self.state.elements.get(&body).and_then(|e| self.node(&e.element))
                        {
                            if let Err(failure) = self.continue_loop(body, node, None) {
                                self.incident_then(body, failure.kind, failure.message, Retry::ContinueLoop);
                            }
                        }
                    }
                    Retry::Finish => {
                        self.queue.push_back(Step::Finish { key: incident_state.element_instance })
                    }
                }
                if is_scope && !matches!(incident_state.retry, Retry::Run | Retry::Outputs | Retry::Finish) {
                    self.queue.push_back(Step::CheckScope { scope: resolved_on });
                }
                Ok(())
            }
        }
    }

    fn start(
        &mut self,
        variables: &VariableMap,
        business_key: &Option<String>,
        start_event: &Option<ElementId>,
    ) -> Result<(), Rejection> {
        if self.state.status != InstanceStatus::NotStarted {
            return Err(Rejection::AlreadyStarted);
        }
        let root_id = self.definition.root_id();
        let root_scope = self.definition.scope(&root_id);
        let start = match start_event {
            Some(id) => {
                let is_root_start = root_scope.is_some_and(|scope| scope.nodes.contains(id))
                    && matches!(
                        self.node(id).and_then(|n| n.node.as_event()).map(|e| &e.position),
                        Some(EventPosition::Start { .. })
                    );
                if !is_root_start {
                    return Err(Rejection::NoSuchStartEvent(id.clone()));
                }
                id.clone()
            }
            None => root_scope
                .and_then(|scope| scope.none_starts.first().cloned())
                .ok_or(Rejection::NoNoneStartEvent)?,
        };
        self.emit(Event::InstanceCreated {
            process_id: self.definition.process_id.clone(),
            version: self.definition.version,
            business_key: business_key.clone(),
            start_event: start.clone(),
            variables: variables.clone(),
        });
        let root = self.next_key();
        self.emit(Event::ElementActivated {
            key: root,
            element: root_id.clone(),
            element_type: "process".to_owned(),
            scope: None,
        });
        if !variables.is_empty() {
            self.emit(Event::VariablesChanged {
                scope: root,
                element: root_id.clone(),
                variables: variables.clone(),
            });
        }
        self.open_event_subprocess_triggers(root, &root_id);
        self.queue.push_back(Step::Arrive {
            element: start,
            scope: root,
            via: None,
            triggered: Some(VariableMap::new()),
        });
        Ok(())
    }

    // -------------------------------------------------------------------------------------------------
    // the step loop

    fn drain(&mut self) {
        loop {
            while let Some(step) = self.queue.pop_front() {
                self.steps += 1;
                if self.steps > STEP_BUDGET {
                    self.stop_looping(step);
                    return;
                }
                self.step(step);
            }
            // Tokens may have disappeared: an inclusive join may now know that nothing more can arrive.
            if !self.fire_ready_inclusive_joins() {
                break;
            }
        }
    }

    /// The step budget ran out: the process loops without a wait state. Every token still on its way is
    /// parked with an incident so an operator can fix the data and retry; none is lost. Token movements
    /// (arrivals, leaving, scope checks) still go through the normal steps — they know joins, loop bodies
    /// and scopes — but no element's work runs: each `Run`, `Complete` or `Finish` becomes an incident that
    /// retries exactly it. Movement alone cannot loop, so parking ends.
    fn stop_looping(&mut self, next: Step) {
        let message = format!(
            "more than {STEP_BUDGET} steps without reaching a wait state: the process loops without a task, timer \
             or message to wait for"
        );
        self.queue.push_front(next);
        while let Some(step) = self.queue.pop_front() {
            match step {
                Step::Arrive { .. } | Step::Leave { .. } | Step::CheckScope { .. } => self.step(step),
                Step::Run { key } if self.state.elements.contains_key(&key) => {
                    self.incident_then(key, IncidentKind::Unsupported, message.clone(), Retry::Run)
                }
                Step::Complete { key, result } if self.state.elements.contains_key(&key) => {
                    // Keep what the element produced: the retry applies its outputs again.
                    let result: VariableMap =
                        result.into_iter().filter(|(name, _)| !name.starts_with(INTERNAL_PREFIX)).collect();
                    if !result.is_empty() {
                        self.set_local(key, result);
                    }
                    self.incident_then(key, IncidentKind::Unsupported, message.clone(), Retry::Outputs)
                }
                Step::Finish { key } if self.state.elements.contains_key(&key) => {
                    self.incident_then(key, IncidentKind::Unsupported, message.clone(), Retry::Finish)
                }
                _ => {}
            }
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Arrive { element, scope, via, triggered } => self.arrive(&element, scope, via, triggered),
            Step::Run { key } => self.run_element(key),
            Step::Complete { key, result } => self.complete(key, result),
            Step::Finish { key } => self.finish_evaluating_flows(key),
            Step::Leave { key, element, scope, flows } => self.leave(key, &element, scope, flows),
            Step::CheckScope { scope } => self.check_scope(scope),
        }
    }

    fn arrive(
        &mut self,
        element: &ElementId,
        scope: Key,
        via: Option<ElementId>,
        triggered: Option<VariableMap>,
    ) {
        if !self.state.elements.contains_key(&scope) {
            return; // the scope ended meanwhile (terminated)
        }
        let Some(node) = self.node(element) else { return };
        if let (Some(flow), FlowNodeKind::Gateway(gateway)) = (&via, &node.node.kind) {
            let joins = node.incoming.len() > 1
                && matches!(gateway.kind, GatewayKind::Parallel | GatewayKind::Inclusive);
            if joins {
                self.emit(Event::JoinArrived { gateway: element.clone(), scope, flow: flow.clone() });
                self.try_join(element, scope);
                return;
            }
        }
        let key = self.next_key();
        let is_loop = node.node.as_activity().is_some_and(|activity| activity.loop_characteristics.is_some());
        let element_type = if is_loop { BODY } else { node.node.type_name() };
        self.emit(Event::ElementActivated {
            key,
            element: element.clone(),
            element_type: element_type.to_owned(),
            scope: Some(scope),
        });
        match triggered {
            // The event already happened: its payload is the element's result.
            Some(payload) => self.queue.push_back(Step::Complete { key, result: payload }),
            None => self.queue.push_back(Step::Run { key }),
        }
    }

    /// Parallel join: one token on every incoming flow. Inclusive join: waits in `fire_ready_inclusive_joins`.
    fn try_join(&mut self, gateway: &ElementId, scope: Key) {
        let Some(node) = self.node(gateway) else { return };
        if !matches!(node.node.as_gateway().map(|g| &g.kind), Some(GatewayKind::Parallel)) {
            return;
        }
        let arrivals = self.arrivals(scope, gateway);
        if node.incoming.iter().all(|flow| arrivals.get(flow).copied().unwrap_or(0) > 0) {
            self.fire_join(gateway, scope, node.incoming.clone());
        }
    }

    fn arrivals(&self, scope: Key, gateway: &ElementId) -> BTreeMap<ElementId, u32> {
        self.state.joins.get(&scope).and_then(|g| g.get(gateway)).cloned().unwrap_or_default()
    }

    fn fire_join(&mut self, gateway: &ElementId, scope: Key, flows: Vec<ElementId>) {
        self.emit(Event::JoinConsumed { gateway: gateway.clone(), scope, flows });
        let key = self.next_key();
        let element_type = self.node(gateway).map_or("gateway", |n| n.node.type_name()).to_owned();
        self.emit(Event::ElementActivated {
            key,
            element: gateway.clone(),
            element_type,
            scope: Some(scope),
        });
        self.queue.push_back(Step::Run { key });
    }

    /// Fires every inclusive join that has tokens and to which no other token of its scope can still
    /// come. Returns whether one fired.
    fn fire_ready_inclusive_joins(&mut self) -> bool {
        let mut ready = Vec::new();
        for (scope, gateways) in &self.state.joins {
            for (gateway, arrivals) in gateways {
                let Some(upstream) = self.definition.inclusive_upstream.get(gateway) else { continue };
                let active_upstream =
                    self.state.children(*scope).any(|child| upstream.contains(&child.element));
                let waiting_upstream = gateways.iter().any(|(other, tokens)| {
                    other != gateway && upstream.contains(other) && !tokens.is_empty()
                });
                if !active_upstream && !waiting_upstream && !arrivals.is_empty() {
                    ready.push((*scope, gateway.clone(), arrivals.keys().cloned().collect::<Vec<_>>()));
                }
            }
        }
        let fired = !ready.is_empty();
        for (scope, gateway, flows) in ready {
            self.fire_join(&gateway, scope, flows);
        }
        fired
    }

    // -------------------------------------------------------------------------------------------------
    // element behaviour

    fn run_element(&mut self, key: Key) {
        let Some(instance) = self.state.elements.get(&key).cloned() else { return };
        let Some(node) = self.node(&instance.element) else { return };
        let scope = instance.scope;
        if instance.element_type == BODY {
            if let Err(failure) = self.run_body(key, node) {
                self.incident(key, failure.kind, failure.message);
            }
            return;
        }
        if let Err(failure) = self.apply_inputs(key, node) {
            self.incident(key, failure.kind, failure.message);
            return;
        }
        let result = match &node.node.kind {
            FlowNodeKind::Gateway(gateway) => self.run_gateway(key, node, gateway),
            FlowNodeKind::Activity(activity) => self.run_activity(key, node, activity),
            FlowNodeKind::Event(event) => self.run_event(key, node, event, scope),
        };
        if let Err(failure) = result {
            self.incident(key, failure.kind, failure.message);
        }
    }

    fn apply_inputs(&mut self, key: Key, node: &Node) -> Result<(), Failure> {
        if node.inputs.is_empty() {
            return Ok(());
        }
        let mut locals = VariableMap::new();
        for mapping in &node.inputs {
            let mut visible = self.visible(key);
            visible.extend(locals.iter().map(|(k, v)| (k.clone(), v.clone())));
            let value = self.eval(&mapping.source, &visible)?;
            set_path(&mut locals, &mapping.target, value);
        }
        self.emit(Event::VariablesChanged { scope: key, element: node.node.id.clone(), variables: locals });
        Ok(())
    }

    fn run_gateway(&mut self, key: Key, node: &Node, gateway: &Gateway) -> Result<(), Failure> {
        let scope = self.scope_of(key);
        match &gateway.kind {
            GatewayKind::Parallel => {
                self.finish(key, node, scope, node.outgoing.clone());
            }
            GatewayKind::Exclusive => {
                let flows = self.choose_flows(key, node, gateway.default_flow.as_ref(), true)?;
                self.finish(key, node, scope, flows);
            }
            GatewayKind::Inclusive => {
                let flows = self.choose_flows(key, node, gateway.default_flow.as_ref(), false)?;
                self.finish(key, node, scope, flows);
            }
            GatewayKind::EventBased { .. } => {
                for flow in &node.outgoing {
                    let Some(target) = self.definition.flow(flow).map(|f| f.flow.target.clone()) else {
                        continue;
                    };
                    if let Some(target_node) = self.node(&target) {
                        if let Err(failure) = self.open_trigger(key, target_node, true) {
                            // All or none: no trigger may fire while the gateway waits in an incident.
                            self.close_triggers(key);
                            return Err(failure);
                        }
                    }
                }
            }
            GatewayKind::Complex { .. } => {
                return Err(Failure {
                    kind: IncidentKind::Unsupported,
                    message: "complex gateways are not executed".to_owned(),
                })
            }
        }
        Ok(())
    }

    /// Evaluates outgoing conditions: the first true one (exclusive) or all true ones (inclusive); the
    /// default flow when none is true; an incident when there is no default either.
    fn choose_flows(
        &mut self,
        key: Key,
        node: &Node,
        default: Option<&ElementId>,
        first_only: bool,
    ) -> Result<Vec<ElementId>, Failure> {
        if node.outgoing.len() == 1 && default.is_none() {
            let only = &node.outgoing[0];
            if self.definition.flow(only).is_some_and(|flow| flow.condition.is_none()) {
                return Ok(vec![only.clone()]);
            }
        }
        let visible = self.visible(key);
        let mut chosen = Vec::new();
        for flow_id in &node.outgoing {
            if Some(flow_id) == default {
                continue;
            }
            let Some(flow) = self.definition.flow(flow_id) else { continue };
            let taken = match &flow.condition {
                None => true,
                Some(condition) => {
                    eval::evaluate_condition(condition, &visible, self.now).map_err(|error| Failure {
                        kind: IncidentKind::ExpressionFailed,
                        message: format!("condition of flow '{flow_id}': {error}"),
                    })?
                }
            };
            if taken {
                chosen.push(flow_id.clone());
                if first_only {
                    break;
                }
            }
        }
        if chosen.is_empty() {
            match default {
                Some(default) => chosen.push(default.clone()),
                None => {
                    return Err(Failure {
                        kind: IncidentKind::NoMatchingFlow,
                        message: format!(
                            "no outgoing flow of '{}' has a true condition and there is no default flow",
                            node.node.id
                        ),
                    })
                }
            }
        }
        Ok(chosen)
    }

    fn run_activity(&mut self, key: Key, node: &Node, activity: &Activity) -> Result<(), Failure> {
        // Boundary events of a loop belong to its body, not to each iteration.
        let is_iteration = self.is_iteration(key);
        match &activity.kind {
            ActivityKind::Task(task) => {
                if !is_iteration {
                    self.open_boundaries(key, node)?;
                }
                match task {
                    TaskKind::Task | TaskKind::Manual => {
                        self.queue.push_back(Step::Complete { key, result: VariableMap::new() })
                    }
                    TaskKind::Service { .. } | TaskKind::Send { .. } => self.create_job(key, &node.node.id),
                    TaskKind::Script { .. } | TaskKind::BusinessRule { .. } if node.job.is_some() => {
                        self.create_job(key, &node.node.id)
                    }
                    TaskKind::Script { .. } => {
                        let Some((expression, result_variable)) = &node.script else {
                            return Err(Failure {
                                kind: IncidentKind::Unsupported,
                                message: "script task without zeebe:script".to_owned(),
                            });
                        };
                        let value = self.eval(expression, &self.visible(key))?;
                        let mut result = VariableMap::new();
                        result.insert(result_variable.clone(), value);
                        self.queue.push_back(Step::Complete { key, result });
                    }
                    TaskKind::BusinessRule { .. } => {
                        let Some(called) = &node.node.extensions.zeebe.called_decision else {
                            return Err(Failure {
                                kind: IncidentKind::Unsupported,
                                message:
                                    "business rule task without zeebe:calledDecision or zeebe:taskDefinition"
                                        .to_owned(),
                            });
                        };
                        let visible = self.visible(key);
                        let expression =
                            self.definition.expression(&called.decision_id).map_err(Failure::expression)?;
                        let decision_id = match self.eval(&expression, &visible)? {
                            Json::String(id) => id,
                            other => other.to_string(),
                        };
                        let Some(model) = self.definition.decisions.get(&decision_id) else {
                            return Err(Failure {
                                kind: IncidentKind::DecisionNotFound,
                                message: format!("no decision '{decision_id}' is deployed with this process"),
                            });
                        };
                        let value = model.evaluate(&decision_id, &visible).map_err(|message| Failure {
                            kind: IncidentKind::ExpressionFailed,
                            message: format!("decision '{decision_id}': {message}"),
                        })?;
                        let result = VariableMap::from([(called.result_variable.clone(), value)]);
                        self.queue.push_back(Step::Complete { key, result });
                    }
                    TaskKind::User { .. } => self.open_user_task(key, node)?,
                    TaskKind::Receive { .. } => self.open_trigger(key, node, false)?,
                }
            }
            ActivityKind::SubProcess(sub) => {
                if !is_iteration {
                    self.open_boundaries(key, node)?;
                }
                let starts =
                    self.definition.scope(&node.node.id).map(|s| s.none_starts.clone()).unwrap_or_default();
                if sub.kind != SubProcessKind::Embedded || starts.is_empty() {
                    return Err(Failure {
                        kind: IncidentKind::Unsupported,
                        message: format!("{} is not executed yet", sub.kind.type_name()),
                    });
                }
                self.open_event_subprocess_triggers(key, &node.node.id);
                for start in starts {
                    self.queue.push_back(Step::Arrive {
                        element: start,
                        scope: key,
                        via: None,
                        triggered: Some(VariableMap::new()),
                    });
                }
            }
            ActivityKind::CallActivity(call) => {
                if !is_iteration {
                    self.open_boundaries(key, node)?;
                }
                let zeebe = node.node.extensions.zeebe.called_element.as_ref();
                let visible = self.visible(key);
                let process_id = match zeebe.map(|z| z.process_id.as_str()).filter(|id| !id.is_empty()) {
                    Some(text) => {
                        match self.eval(
                            &*self.definition.expression(text).map_err(Failure::expression)?,
                            &visible,
                        )? {
                            Json::String(id) => id,
                            other => other.to_string(),
                        }
                    }
                    None => call.called_element.clone().unwrap_or_default(),
                };
                // Zeebe: all visible variables by default; with propagateAllParentVariables=false only the
                // input mappings' (local) variables.
                let variables: VariableMap = if zeebe.is_none_or(|z| z.propagate_all_parent_variables) {
                    visible.into_iter().collect()
                } else {
                    self.input_locals(key)
                };
                self.emit(Event::ChildInstanceRequested {
                    element_instance: key,
                    element: node.node.id.clone(),
                    process_id,
                    variables,
                });
            }
        }
        Ok(())
    }

    fn run_event(
        &mut self,
        key: Key,
        node: &Node,
        event: &BpmnEvent,
        scope: Option<Key>,
    ) -> Result<(), Failure> {
        let scope = scope.unwrap_or(key);
        let definition = event.definition();
        match (&event.position, definition) {
            (EventPosition::Start { .. }, _) => {
                self.queue.push_back(Step::Complete { key, result: VariableMap::new() })
            }
            (EventPosition::IntermediateCatch, Some(EventDefinitionKind::Link { .. })) => {
                self.queue.push_back(Step::Complete { key, result: VariableMap::new() })
            }
            (EventPosition::IntermediateCatch, _) => self.open_trigger(key, node, false)?,
            (EventPosition::Boundary { .. }, _) => {
                self.queue.push_back(Step::Complete { key, result: VariableMap::new() })
            }
            (EventPosition::End | EventPosition::IntermediateThrow, None) => {
                self.queue.push_back(Step::Complete { key, result: VariableMap::new() })
            }
            (EventPosition::End | EventPosition::IntermediateThrow, Some(kind)) => match kind {
                EventDefinitionKind::Message { .. } => self.create_job(key, &node.node.id),
                EventDefinitionKind::Signal { .. } => {
                    let variables = self.input_locals(key);
                    self.emit(Event::SignalBroadcast {
                        element_instance: key,
                        signal_name: node.signal.clone().unwrap_or_default(),
                        variables,
                    });
                    self.queue.push_back(Step::Complete { key, result: VariableMap::new() });
                }
                EventDefinitionKind::Terminate => {
                    for child in
                        self.state.children(scope).map(|c| c.key).filter(|c| *c != key).collect::<Vec<_>>()
                    {
                        self.terminate(child);
                    }
                    if self.state.joins.contains_key(&scope) {
                        self.emit(Event::JoinsDiscarded { scope });
                    }
                    self.queue.retain(|step| step.scope() != Some(scope));
                    // The scope ends: its own open incidents (e.g. a failed trigger) end with it.
                    let incidents: Vec<Key> = self
                        .state
                        .incidents
                        .values()
                        .filter(|i| i.element_instance == scope)
                        .map(|i| i.key)
                        .collect();
                    for incident in incidents {
                        self.emit(Event::IncidentResolved { incident });
                    }
                    self.emit(Event::ElementCompleted { key, element: node.node.id.clone() });
                    self.complete_scope(scope);
                }
                EventDefinitionKind::Error { .. } => {
                    let code = node.error_code.clone().unwrap_or_default();
                    self.throw_error(key, &code, &format!("error end event '{}'", node.node.id));
                }
                EventDefinitionKind::Escalation { .. } => {
                    let code = node.escalation_code.clone().unwrap_or_default();
                    if !self.throw_escalation(key, &code) {
                        self.queue.push_back(Step::Complete { key, result: VariableMap::new() });
                    }
                }
                EventDefinitionKind::Link { .. } => {
                    let target = node.link.as_ref().and_then(|name| self.link_catch(&node.scope, name));
                    self.emit(Event::ElementCompleted { key, element: node.node.id.clone() });
                    match target {
                        Some(target) => self.queue.push_back(Step::Arrive {
                            element: target,
                            scope,
                            via: None,
                            triggered: None,
                        }),
                        None => self.queue.push_back(Step::CheckScope { scope }),
                    }
                }
                EventDefinitionKind::Compensate { activity_ref, .. } => {
                    self.start_compensation(key, scope, activity_ref.as_ref());
                }
                _ => {
                    return Err(Failure {
                        kind: IncidentKind::Unsupported,
                        message: format!("{} is not executed on {}", kind.type_name(), node.node.type_name()),
                    })
                }
            },
        }
        Ok(())
    }

    fn link_catch(&self, scope: &ElementId, name: &str) -> Option<ElementId> {
        let scope_def = self.definition.scope(scope)?;
        scope_def
            .nodes
            .iter()
            .find(|id| {
                self.node(id).is_some_and(|node| {
                    node.link.as_deref() == Some(name)
                        && matches!(
                            node.node.as_event().map(|e| &e.position),
                            Some(EventPosition::IntermediateCatch)
                        )
                })
            })
            .cloned()
    }

    /// The local variables an element's input mappings produced (a throw event's payload).
    fn input_locals(&self, key: Key) -> VariableMap {
        self.state.variables.get(&key).cloned().unwrap_or_default()
    }

    /// The retries `element`'s task definition configures (1 when it cannot be evaluated now: the job
    /// runs once more and, failing, raises a new incident).
    fn configured_retries(&mut self, key: Key, element: &ElementId) -> u32 {
        let Some(spec) = self.node(element).and_then(|node| node.job.clone()) else { return 1 };
        let visible = self.visible(key);
        let retries = match self.eval(&spec.retries, &visible) {
            Ok(Json::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Ok(Json::String(text)) => text.trim().parse().ok(),
            _ => None,
        };
        retries.filter(|retries| *retries > 0).unwrap_or(1)
    }

    fn create_job(&mut self, key: Key, element: &ElementId) {
        let Some(node) = self.node(element) else { return };
        let Some(spec) = &node.job else {
            self.incident(key, IncidentKind::Unsupported, format!("'{element}' has no zeebe:taskDefinition"));
            return;
        };
        let visible = self.visible(key);
        let job_type = match self.eval(&spec.job_type, &visible) {
            Ok(Json::String(job_type)) => job_type,
            Ok(other) => {
                return self.incident(
                    key,
                    IncidentKind::ExpressionFailed,
                    format!("job type evaluated to {other}, not a string"),
                )
            }
            Err(failure) => return self.incident(key, failure.kind, failure.message),
        };
        let retries = match self.eval(&spec.retries, &visible) {
            Ok(Json::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Ok(Json::String(text)) => text.trim().parse().ok(),
            _ => None,
        };
        let Some(retries) = retries else {
            return self.incident(
                key,
                IncidentKind::ExpressionFailed,
                "job retries are not a whole number".to_owned(),
            );
        };
        let job = self.next_key();
        self.emit(Event::JobCreated {
            job,
            element_instance: key,
            element: element.clone(),
            job_type,
            retries,
            headers: spec.headers.clone(),
            variables: self.input_locals(key),
        });
    }

    fn open_user_task(&mut self, key: Key, node: &Node) -> Result<(), Failure> {
        let zeebe = &node.node.extensions.zeebe;
        let visible = self.visible(key);
        let text = |run: &Self, value: &Option<String>| -> Result<Option<String>, Failure> {
            match value {
                None => Ok(None),
                Some(value) => {
                    match run
                        .eval(&*run.definition.expression(value).map_err(Failure::expression)?, &visible)?
                    {
                        Json::Null => Ok(None),
                        Json::String(text) => Ok(Some(text)),
                        other => Ok(Some(other.to_string())),
                    }
                }
            }
        };
        let list = |run: &Self, value: &Option<String>| -> Result<Vec<String>, Failure> {
            match value {
                None => Ok(Vec::new()),
                Some(value) => match run
                    .eval(&*run.definition.expression(value).map_err(Failure::expression)?, &visible)?
                {
                    Json::Array(items) => Ok(items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect()),
                    Json::String(text) => {
                        Ok(text.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                    }
                    Json::Null => Ok(Vec::new()),
                    other => Ok(vec![other.to_string()]),
                },
            }
        };
        let assignment = zeebe.assignment_definition.clone().unwrap_or_default();
        let schedule = zeebe.task_schedule.clone().unwrap_or_default();
        let task = self.next_key();
        let event = Event::UserTaskOpened {
            task,
            element_instance: key,
            element: node.node.id.clone(),
            name: node.node.name.clone(),
            assignee: text(self, &assignment.assignee)?,
            candidate_groups: list(self, &assignment.candidate_groups)?,
            candidate_users: list(self, &assignment.candidate_users)?,
            form_key: zeebe.form_definition.as_ref().and_then(|f| f.form_key.clone().or(f.form_id.clone())),
            due_date: text(self, &schedule.due_date)?,
            variables: self.input_locals(key),
        };
        self.emit(event);
        Ok(())
    }

    // -------------------------------------------------------------------------------------------------
    // triggers: timers, message and signal subscriptions

    /// Opens the trigger of catch event `node` for element instance `owner` (the event itself, a
    /// receive task, a boundary host, an event-based gateway, or a scope for event sub-process starts).
    fn open_trigger(&mut self, owner: Key, node: &Node, interrupting: bool) -> Result<(), Failure> {
        if let Some(timer) = &node.timer {
            let due = self.due(owner, timer, 0)?;
            let timer_key = self.next_key();
            self.emit(Event::TimerScheduled {
                timer: timer_key,
                element_instance: owner,
                element: node.node.id.clone(),
                due,
                fired: 0,
            });
        } else if let Some(message) = &node.message {
            let visible = self.visible(owner);
            let name = match self.eval(&message.name, &visible)? {
                Json::String(name) => name,
                other => other.to_string(),
            };
            let correlation_key = match &message.correlation_key {
                Some(expression) => match self.eval(expression, &visible)? {
                    Json::String(text) => text,
                    Json::Null => {
                        return Err(Failure {
                            kind: IncidentKind::ExpressionFailed,
                            message: format!(
                                "correlation key {} of message '{name}' evaluated to null",
                                expression.source()
                            ),
                        })
                    }
                    other => other.to_string(),
                },
                None => String::new(),
            };
            let subscription = self.next_key();
            self.emit(Event::MessageSubscriptionOpened {
                subscription,
                element_instance: owner,
                element: node.node.id.clone(),
                message_name: name,
                correlation_key,
                interrupting,
            });
        } else if let Some(signal) = &node.signal {
            let subscription = self.next_key();
            self.emit(Event::SignalSubscriptionOpened {
                subscription,
                element_instance: owner,
                element: node.node.id.clone(),
                signal_name: signal.clone(),
            });
        }
        Ok(())
    }

    fn open_boundaries(&mut self, key: Key, node: &Node) -> Result<(), Failure> {
        for boundary in &node.boundaries {
            let Some(boundary_node) = self.node(boundary) else { continue };
            let interrupting = matches!(
                boundary_node.node.as_event().map(|e| &e.position),
                Some(EventPosition::Boundary { cancel_activity: true, .. })
            );
            if let Err(failure) = self.open_trigger(key, boundary_node, interrupting) {
                self.close_triggers(key);
                return Err(failure);
            }
        }
        Ok(())
    }

    fn open_event_subprocess_triggers(&mut self, scope: Key, scope_id: &ElementId) {
        let subprocesses =
            self.definition.scope(scope_id).map(|s| s.event_subprocesses.clone()).unwrap_or_default();
        for subprocess in subprocesses {
            let starts = self.definition.scope(&subprocess).map(|s| s.nodes.clone()).unwrap_or_default();
            for start in starts {
                let Some(node) = self.node(&start) else { continue };
                let Some(BpmnEvent { position: EventPosition::Start { interrupting }, .. }) =
                    node.node.as_event()
                else {
                    continue;
                };
                if let Err(failure) = self.open_trigger(scope, node, *interrupting) {
                    // None of the scope's event sub-process triggers stay half-open; the retry opens all.
                    self.close_event_subprocess_triggers(scope);
                    self.incident_then(scope, failure.kind, failure.message, Retry::OpenTriggers);
                    return;
                }
            }
        }
    }

    /// Closes the triggers of event sub-process start events opened for scope instance `scope`.
    fn close_event_subprocess_triggers(&mut self, scope: Key) {
        self.close_triggers_where(scope, |run, element| {
            matches!(
                run.node(element).and_then(|n| n.node.as_event()).map(|e| &e.position),
                Some(EventPosition::Start { .. })
            )
        });
    }

    fn due(&self, owner: Key, timer: &TimerExpr, fired: u32) -> Result<DateTime<FixedOffset>, Failure> {
        let visible = self.visible(owner);
        let text = |expr: &Expr| -> Result<String, Failure> {
            match self.eval(expr, &visible)? {
                Json::String(text) => Ok(text),
                other => Ok(other.to_string()),
            }
        };
        let bad = |error: crate::timer::TimerError| Failure {
            kind: IncidentKind::ExpressionFailed,
            message: error.to_string(),
        };
        let due = match timer {
            TimerExpr::Date(expr) => Some(parse_date_time(&text(expr)?).map_err(bad)?),
            TimerExpr::Duration(expr) => IsoDuration::parse(&text(expr)?).map_err(bad)?.add_to(&self.now),
            TimerExpr::Cycle(expr) => {
                let cycle = Cycle::parse(&text(expr)?).map_err(bad)?;
                let anchor = self.now.with_timezone(&chrono::Utc);
                cycle.next_after(anchor, fired, anchor).map(|due| due.with_timezone(&self.now.timezone()))
            }
        };
        due.ok_or_else(|| Failure {
            kind: IncidentKind::ExpressionFailed,
            message: "the timer has no next due time".to_owned(),
        })
    }

    fn close_triggers(&mut self, owner: Key) {
        self.close_triggers_where(owner, |_, _| true);
    }

    /// Closes the timers and subscriptions of element instance `owner` whose element `only` accepts.
    fn close_triggers_where(&mut self, owner: Key, only: impl Fn(&Self, &ElementId) -> bool) {
        let timers: Vec<Key> = self
            .state
            .timers
            .values()
            .filter(|t| t.element_instance == owner && only(self, &t.element))
            .map(|t| t.key)
            .collect();
        for timer in timers {
            self.emit(Event::TimerCancelled { timer });
        }
        let messages: Vec<Key> = self
            .state
            .message_subscriptions
            .values()
            .filter(|s| s.element_instance == owner && only(self, &s.element))
            .map(|s| s.key)
            .collect();
        for subscription in messages {
            self.emit(Event::MessageSubscriptionClosed { subscription });
        }
        let signals: Vec<Key> = self
            .state
            .signal_subscriptions
            .values()
            .filter(|s| s.element_instance == owner && only(self, &s.element))
            .map(|s| s.key)
            .collect();
        for subscription in signals {
            self.emit(Event::SignalSubscriptionClosed { subscription });
        }
    }

    /// An awaited event happened: `element` (a trigger of element instance `owner`) fired.
    fn trigger(&mut self, owner: Key, element: &ElementId, payload: VariableMap, how: Trigger) {
        let Some(owner_instance) = self.state.elements.get(&owner).cloned() else { return };
        let Some(node) = self.node(element) else { return };
        // The subscription itself is spent, except a non-interrupting trigger that may fire again.
        let event = node.node.as_event();
        let position = event.map(|e| e.position.clone());
        if owner_instance.element == *element {
            // A catch event or receive task waiting for itself: its own subscription ends now; its boundary
            // events stay until it has completed (an output-mapping incident keeps them armed).
            let own = element.clone();
            self.close_triggers_where(owner, move |_, trigger| *trigger == own);
            self.queue.push_back(Step::Complete { key: owner, result: payload });
            return;
        }
        match position {
            Some(EventPosition::Boundary { cancel_activity, .. }) => {
                let Some(scope) = owner_instance.scope else { return };
                if cancel_activity {
                    self.terminate(owner);
                } else {
                    self.spend_or_repeat(owner, node, &how);
                }
                self.queue.push_back(Step::Arrive {
                    element: element.clone(),
                    scope,
                    via: None,
                    triggered: Some(payload),
                });
            }
            Some(EventPosition::Start { interrupting }) => {
                // An event sub-process start in scope `owner`.
                let subprocess = node.scope.clone();
                if interrupting {
                    for child in self.state.children(owner).map(|c| c.key).collect::<Vec<_>>() {
                        self.terminate(child);
                    }
                    if self.state.joins.contains_key(&owner) {
                        self.emit(Event::JoinsDiscarded { scope: owner });
                    }
                    // Tokens of the scope already on their way (queued steps) are interrupted too.
                    self.queue.retain(|step| step.scope() != Some(owner));
                    // The scope's other event sub-process triggers end; its own boundary events stay.
                    self.close_event_subprocess_triggers(owner);
                } else {
                    self.spend_or_repeat(owner, node, &how);
                }
                self.enter_event_subprocess(owner, &subprocess, element, payload);
            }
            // A target of an event-based gateway: the gateway completes towards it.
            Some(EventPosition::IntermediateCatch) | None
                if owner_instance.element_type == "eventBasedGateway" =>
            {
                self.close_triggers(owner);
                self.emit(Event::ElementCompleted { key: owner, element: owner_instance.element.clone() });
                let Some(scope) = owner_instance.scope else { return };
                let flow = self.node(&owner_instance.element).and_then(|gateway| {
                    gateway
                        .outgoing
                        .iter()
                        .find(|f| self.definition.flow(f).is_some_and(|f| &f.flow.target == element))
                        .cloned()
                });
                if let Some(flow) = flow {
                    self.emit(Event::SequenceFlowTaken {
                        flow,
                        scope,
                        source: owner_instance.element.clone(),
                        target: element.clone(),
                    });
                }
                self.queue.push_back(Step::Arrive {
                    element: element.clone(),
                    scope,
                    via: None,
                    triggered: Some(payload),
                });
            }
            _ => {}
        }
    }

    /// After a non-interrupting trigger fired: a timer cycle schedules its next repetition; a message or
    /// signal subscription stays open.
    fn spend_or_repeat(&mut self, owner: Key, node: &Node, how: &Trigger) {
        if let (Trigger::Timer(timer), Some(TimerExpr::Cycle(_))) = (how, &node.timer) {
            let fired = timer.fired + 1;
            if let Some(TimerExpr::Cycle(expr)) = &node.timer {
                let visible = self.visible(owner);
                let text = match self.eval(expr, &visible) {
                    Ok(Json::String(text)) => text,
                    _ => return,
                };
                let Ok(cycle) = Cycle::parse(&text) else { return };
                // The anchor is when the first repetition was scheduled: due of the first = anchor + interval.
                let anchor = timer.due.with_timezone(&chrono::Utc);
                let after = self.now.with_timezone(&chrono::Utc).max(anchor);
                if let Some(next) = cycle.next_after(anchor, fired, after) {
                    let next = if next <= anchor { anchor } else { next };
                    let key = self.next_key();
                    self.emit(Event::TimerScheduled {
                        timer: key,
                        element_instance: owner,
                        element: node.node.id.clone(),
                        due: next.with_timezone(&self.now.timezone()),
                        fired,
                    });
                }
            }
        }
    }

    fn enter_event_subprocess(
        &mut self,
        scope: Key,
        subprocess: &ElementId,
        start: &ElementId,
        payload: VariableMap,
    ) {
        let Some(node) = self.node(subprocess) else { return };
        let key = self.next_key();
        self.emit(Event::ElementActivated {
            key,
            element: subprocess.clone(),
            element_type: node.node.type_name().to_owned(),
            scope: Some(scope),
        });
        self.queue.push_back(Step::Arrive {
            element: start.clone(),
            scope: key,
            via: None,
            triggered: Some(payload),
        });
    }

    // -------------------------------------------------------------------------------------------------
    // compensation: undo completed activities, most recent first, one handler at a time

    /// A compensation throw in `scope`: the handlers of the activities completed in it (only
    /// `activity_ref` when given) run in reverse completion order; the thrower waits for them.
    fn start_compensation(&mut self, thrower: Key, scope: Key, activity_ref: Option<&ElementId>) {
        // Thrown inside an event sub-process, compensation is for the scope the event sub-process is in.
        let scope = match self.state.elements.get(&scope) {
            Some(element) if element.element_type == "subProcess(event)" => element.scope.unwrap_or(scope),
            _ => scope,
        };
        let pending: Vec<Json> = self
            .state
            .compensations
            .iter()
            .rev()
            .filter(|c| c.scope == scope && activity_ref.is_none_or(|a| a == &c.element))
            .map(|c| Json::from(c.element_instance.0))
            .collect();
        self.set_local(thrower, VariableMap::from([(COMPENSATING.to_owned(), Json::Array(pending))]));
        self.next_compensation(thrower);
    }

    /// Runs the next pending handler of `thrower`, or completes the thrower when none is left.
    fn next_compensation(&mut self, thrower: Key) {
        let Some(instance) = self.state.elements.get(&thrower).cloned() else { return };
        let scope = instance.scope.unwrap_or(thrower);
        let mut pending = self.body_var(thrower, COMPENSATING).unwrap_or_default();
        while !pending.is_empty() {
            let next = Key(pending.remove(0).as_u64().unwrap_or(0));
            self.set_local(
                thrower,
                VariableMap::from([(COMPENSATING.to_owned(), Json::Array(pending.clone()))]),
            );
            let Some(record) = self.state.compensations.iter().find(|c| c.element_instance == next).cloned()
            else {
                continue;
            };
            let Some(handler) = self.node(&record.element).and_then(|n| n.compensation_handler.clone())
            else {
                continue;
            };
            self.emit(Event::CompensationStarted {
                thrower,
                element_instance: record.element_instance,
                element: record.element.clone(),
                handler: handler.clone(),
            });
            let key = self.next_key();
            let handler_node = self.node(&handler);
            let is_loop = handler_node
                .and_then(|n| n.node.as_activity())
                .is_some_and(|activity| activity.loop_characteristics.is_some());
            let element_type =
                if is_loop { BODY } else { handler_node.map_or("task", |n| n.node.type_name()) };
            let element_type = element_type.to_owned();
            self.emit(Event::ElementActivated { key, element: handler, element_type, scope: Some(scope) });
            self.set_local(key, VariableMap::from([(COMPENSATION_FOR.to_owned(), Json::from(thrower.0))]));
            self.queue.push_back(Step::Run { key });
            return;
        }
        self.queue.push_back(Step::Complete { key: thrower, result: VariableMap::new() });
    }

    // -------------------------------------------------------------------------------------------------
    // multi-instance and standard loops: a body element instance holding one instance per iteration

    fn is_iteration(&self, key: Key) -> bool {
        self.state
            .elements
            .get(&key)
            .and_then(|element| element.scope)
            .and_then(|scope| self.state.elements.get(&scope))
            .is_some_and(|scope| scope.element_type == BODY)
    }

    fn run_body(&mut self, body: Key, node: &Node) -> Result<(), Failure> {
        self.open_boundaries(body, node)?;
        let Some(activity) = node.node.as_activity() else { return Ok(()) };
        match &activity.loop_characteristics {
            Some(LoopCharacteristics::MultiInstance(multi)) => {
                let visible = self.visible(body);
                let items: Vec<Json> = match (
                    &multi.zeebe.as_ref().and_then(|z| z.input_collection.as_ref()),
                    &multi.loop_cardinality,
                ) {
                    (Some(collection), _) => {
                        match self.eval(
                            &*self.definition.expression(collection).map_err(Failure::expression)?,
                            &visible,
                        )? {
                            Json::Array(items) => items,
                            other => {
                                return Err(Failure {
                                    kind: IncidentKind::ExpressionFailed,
                                    message: format!(
                                        "inputCollection {collection} evaluated to {other}, not a list"
                                    ),
                                })
                            }
                        }
                    }
                    (None, Some(cardinality)) => {
                        let n = match self.eval(
                            &*self.definition.expression(&cardinality.text).map_err(Failure::expression)?,
                            &visible,
                        )? {
                            Json::Number(n) => n.as_u64(),
                            Json::String(text) => text.trim().parse().ok(),
                            _ => None,
                        }
                        .ok_or_else(|| Failure {
                            kind: IncidentKind::ExpressionFailed,
                            message: format!("loopCardinality {} is not a whole number", cardinality.text),
                        })?;
                        if n > MAX_INSTANCES as u64 {
                            return Err(Failure {
                                kind: IncidentKind::ExpressionFailed,
                                message: format!(
                                    "loopCardinality {} is {n}; at most {MAX_INSTANCES} instances are allowed",
                                    cardinality.text
                                ),
                            });
                        }
                        vec![Json::Null; usize::try_from(n).unwrap_or(0)]
                    }
                    (None, None) => Vec::new(),
                };
                if items.len() > MAX_INSTANCES {
                    return Err(Failure {
                        kind: IncidentKind::ExpressionFailed,
                        message: format!(
                            "the multi-instance would create {} instances; at most {MAX_INSTANCES} are allowed",
                            items.len()
                        ),
                    });
                }
                let mut counters = VariableMap::new();
                counters.insert(N_INSTANCES.to_owned(), Json::from(items.len()));
                counters.insert(N_COMPLETED.to_owned(), Json::from(0));
                counters.insert(N_ACTIVE.to_owned(), Json::from(0));
                if let Some(output) = multi.zeebe.as_ref().and_then(|z| z.output_collection.clone()) {
                    counters.insert(output, Json::Array(vec![Json::Null; items.len()]));
                }
                counters.insert(ITEMS.to_owned(), Json::Array(items.clone()));
                self.set_local(body, counters);
                if items.is_empty() {
                    return self.body_done(body, node);
                }
                let first_batch = if multi.is_sequential { 1 } else { items.len() };
                for index in 0..first_batch {
                    self.start_iteration(body, node, index)?;
                }
            }
            Some(LoopCharacteristics::Standard(standard)) => {
                if standard.test_before && !self.loop_condition(body, standard)? {
                    return self.body_done(body, node);
                }
                self.set_local(body, VariableMap::from([(N_COMPLETED.to_owned(), Json::from(0))]));
                self.start_iteration(body, node, 0)?;
            }
            None => {}
        }
        Ok(())
    }

    fn start_iteration(&mut self, body: Key, node: &Node, index: usize) -> Result<(), Failure> {
        let key = self.next_key();
        self.emit(Event::ElementActivated {
            key,
            element: node.node.id.clone(),
            element_type: node.node.type_name().to_owned(),
            scope: Some(body),
        });
        let mut locals = VariableMap::from([
            ("loopCounter".to_owned(), Json::from(index + 1)),
            (INDEX.to_owned(), Json::from(index + 1)),
        ]);
        if let Some(LoopCharacteristics::MultiInstance(multi)) =
            node.node.as_activity().and_then(|a| a.loop_characteristics.as_ref())
        {
            if let Some(element) = multi.zeebe.as_ref().and_then(|z| z.input_element.clone()) {
                let item = self
                    .body_var(body, ITEMS)
                    .and_then(|items| items.get(index).cloned())
                    .unwrap_or(Json::Null);
                locals.insert(element, item);
            }
            // As in Zeebe, an output element naming a variable (`=verdict`) starts as a null local of each
            // iteration, so results land there and never in the process's own variable of that name.
            if let Some(output) = multi.zeebe.as_ref().and_then(|z| z.output_element.as_deref()) {
                let name = output.trim_start().trim_start_matches('=').trim();
                let is_name = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_');
                if is_name && !locals.contains_key(name) {
                    locals.insert(name.to_owned(), Json::Null);
                }
            }
            self.bump(body, N_ACTIVE, 1);
        }
        self.set_local(key, locals);
        self.queue.push_back(Step::Run { key });
        Ok(())
    }

    /// The variables a loop's conditions see: the body's, plus the counters under Zeebe's names.
    fn loop_view(&self, base: Key, body: Key) -> Variables {
        let mut visible = self.visible(base);
        let completed = self.counter(body, N_COMPLETED);
        visible.insert("numberOfInstances".to_owned(), Json::from(self.counter(body, N_INSTANCES)));
        visible.insert("numberOfCompletedInstances".to_owned(), Json::from(completed));
        visible.insert("numberOfActiveInstances".to_owned(), Json::from(self.counter(body, N_ACTIVE)));
        // An iteration's own loopCounter wins; for the body alone, the number of iterations done.
        visible.entry("loopCounter".to_owned()).or_insert_with(|| Json::from(completed));
        visible
    }

    fn body_var(&self, body: Key, name: &str) -> Option<Vec<Json>> {
        match self.state.variables.get(&body)?.get(name)? {
            Json::Array(items) => Some(items.clone()),
            _ => None,
        }
    }

    fn counter(&self, body: Key, name: &str) -> i64 {
        self.state.variables.get(&body).and_then(|vars| vars.get(name)).and_then(Json::as_i64).unwrap_or(0)
    }

    fn bump(&mut self, body: Key, name: &str, by: i64) {
        let value = self.counter(body, name).saturating_add(by);
        self.set_local(body, VariableMap::from([(name.to_owned(), Json::from(value))]));
    }

    /// One iteration finished (its outputs already applied): collect its output element and end it, then
    /// continue the loop. A failing output element leaves the iteration active with an incident that
    /// re-applies its outputs; a failing condition leaves the body with one that continues the loop.
    fn iteration_done(&mut self, key: Key, node: &Node, body: Key) {
        let Some(activity) = node.node.as_activity() else { return };
        let loop_counter =
            self.state.variables.get(&key).and_then(|v| v.get(INDEX)).and_then(Json::as_u64).unwrap_or(1);
        match &activity.loop_characteristics {
            Some(LoopCharacteristics::MultiInstance(multi)) => {
                let zeebe = multi.zeebe.as_ref();
                if let (Some(collection), Some(element)) = (
                    zeebe.and_then(|z| z.output_collection.clone()),
                    zeebe.and_then(|z| z.output_element.clone()),
                ) {
                    let value = self
                        .definition
                        .expression(&element)
                        .map_err(Failure::expression)
                        .and_then(|expression| self.eval(&expression, &self.visible(key)));
                    let value = match value {
                        Ok(value) => value,
                        Err(failure) => {
                            return self.incident_then(
                                key,
                                failure.kind,
                                format!("outputElement: {}", failure.message),
                                Retry::Outputs,
                            )
                        }
                    };
                    let mut items = self.body_var(body, &collection).unwrap_or_default();
                    let index = usize::try_from(loop_counter.saturating_sub(1)).unwrap_or(0);
                    if index < items.len() {
                        items[index] = value;
                    }
                    self.set_local(body, VariableMap::from([(collection, Json::Array(items))]));
                }
                let active = self.counter(body, N_ACTIVE).saturating_sub(1);
                let completed = self.counter(body, N_COMPLETED).saturating_add(1);
                self.set_local(
                    body,
                    VariableMap::from([
                        (N_ACTIVE.to_owned(), Json::from(active)),
                        (N_COMPLETED.to_owned(), Json::from(completed)),
                    ]),
                );
                // As in Zeebe, the completion condition reads the iteration that just finished.
                let condition = self.completion_condition(multi, key, body);
                self.close_triggers(key);
                self.emit(Event::ElementCompleted { key, element: node.node.id.clone() });
                let result = condition.and_then(|met| self.continue_loop(body, node, Some(met)));
                if let Err(failure) = result {
                    self.incident_then(body, failure.kind, failure.message, Retry::ContinueLoop);
                }
                return;
            }
            Some(LoopCharacteristics::Standard(_)) => {
                self.close_triggers(key);
                self.emit(Event::ElementCompleted { key, element: node.node.id.clone() });
                let done = self.counter(body, N_COMPLETED).saturating_add(1);
                self.set_local(body, VariableMap::from([(N_COMPLETED.to_owned(), Json::from(done))]));
            }
            None => return,
        }
        if let Err(failure) = self.continue_loop(body, node, None) {
            self.incident_then(body, failure.kind, failure.message, Retry::ContinueLoop);
        }
    }

    /// Evaluates a multi-instance completion condition over `base`'s variables and the body's counters.
    fn completion_condition(&self, multi: &MultiInstance, base: Key, body: Key) -> Result<bool, Failure> {
        let Some(condition) = &multi.completion_condition else { return Ok(false) };
        match &*self.definition.expression(&condition.text).map_err(Failure::expression)? {
            Expr::Feel(expression) => {
                eval::evaluate_condition(expression, &self.loop_view(base, body), self.now).map_err(|error| {
                    Failure {
                        kind: IncidentKind::ExpressionFailed,
                        message: format!("completionCondition: {error}"),
                    }
                })
            }
            Expr::Literal(_) => Ok(false),
        }
    }

    /// After an iteration ended: complete the body when all are done or the condition says so, else start
    /// the next iteration (sequential multi-instance, standard loop).
    fn continue_loop(&mut self, body: Key, node: &Node, evaluated: Option<bool>) -> Result<(), Failure> {
        let Some(activity) = node.node.as_activity() else { return Ok(()) };
        match &activity.loop_characteristics {
            Some(LoopCharacteristics::MultiInstance(multi)) => {
                let total = self.counter(body, N_INSTANCES);
                let completed = self.counter(body, N_COMPLETED);
                let condition_met = match evaluated {
                    Some(met) => met,
                    None => self.completion_condition(multi, body, body)?,
                };
                if condition_met || completed >= total {
                    for other in self.state.children(body).map(|c| c.key).collect::<Vec<_>>() {
                        self.terminate(other);
                    }
                    return self.body_done(body, node);
                }
                let running = self.state.children(body).next().is_some();
                if multi.is_sequential && !running {
                    self.start_iteration(body, node, usize::try_from(completed).unwrap_or(0))?;
                }
            }
            Some(LoopCharacteristics::Standard(standard)) => {
                let done = u64::try_from(self.counter(body, N_COMPLETED)).unwrap_or(0);
                let under_maximum = standard.loop_maximum.is_none_or(|max| done < max);
                if under_maximum && self.loop_condition(body, standard)? {
                    self.start_iteration(body, node, usize::try_from(done).unwrap_or(0))?;
                } else {
                    return self.body_done(body, node);
                }
            }
            None => {}
        }
        Ok(())
    }

    fn loop_condition(&self, body: Key, standard: &StandardLoop) -> Result<bool, Failure> {
        let Some(condition) = &standard.loop_condition else { return Ok(false) };
        let compiled = self.definition.expression(&condition.text).map_err(Failure::expression)?;
        let Expr::Feel(expression) = &*compiled else {
            return Ok(false);
        };
        eval::evaluate_condition(expression, &self.loop_view(body, body), self.now).map_err(|error| Failure {
            kind: IncidentKind::ExpressionFailed,
            message: format!("loopCondition: {error}"),
        })
    }

    /// All iterations are done: the output collection goes to the flow scope, the body leaves.
    fn body_done(&mut self, body: Key, node: &Node) -> Result<(), Failure> {
        let Some(scope) = self.state.elements.get(&body).and_then(|b| b.scope) else { return Ok(()) };
        if let Some(LoopCharacteristics::MultiInstance(multi)) =
            node.node.as_activity().and_then(|a| a.loop_characteristics.as_ref())
        {
            if let Some(collection) = multi.zeebe.as_ref().and_then(|z| z.output_collection.clone()) {
                let items = self.body_var(body, &collection).unwrap_or_default();
                self.propagate(scope, VariableMap::from([(collection, Json::Array(items))]));
            }
        }
        self.finish_evaluating_flows(body);
        Ok(())
    }

    // -------------------------------------------------------------------------------------------------
    // completion, leaving, scopes

    fn complete(&mut self, key: Key, result: VariableMap) {
        let Some(instance) = self.state.elements.get(&key).cloned() else { return };
        let Some(node) = self.node(&instance.element) else { return };
        let scope = instance.scope.unwrap_or(key);
        // An iteration's outputs start from the iteration itself (Zeebe), so its output element sees them.
        let outputs_from = if self.is_iteration(key) { key } else { scope };
        if let Err(failure) = self.apply_outputs(key, node, outputs_from, result) {
            self.incident_then(key, failure.kind, failure.message, Retry::Outputs);
            return;
        }
        if self.is_iteration(key) {
            self.iteration_done(key, node, scope);
            return;
        }
        self.finish_evaluating_flows(key);
    }

    /// Completes an element whose work is done, over its outgoing flows; conditional flows out of a
    /// non-gateway are evaluated first (every true one, else the default), and a failure leaves the element
    /// active with an incident whose resolution comes back here.
    fn finish_evaluating_flows(&mut self, key: Key) {
        let Some(instance) = self.state.elements.get(&key).cloned() else { return };
        let Some(node) = self.node(&instance.element) else { return };
        let scope = instance.scope.unwrap_or(key);
        let has_conditions =
            node.outgoing.iter().any(|f| self.definition.flow(f).is_some_and(|f| f.condition.is_some()));
        let flows = if has_conditions {
            let default = node.node.default_flow().cloned();
            match self.choose_conditional(node, key, default.as_ref()) {
                Ok(flows) => flows,
                Err(failure) => {
                    self.incident_then(key, failure.kind, failure.message, Retry::Finish);
                    return;
                }
            }
        } else {
            node.outgoing.clone()
        };
        self.finish(key, node, scope, flows);
    }

    /// Output mappings into the flow scope, or (none) the result propagated as Zeebe does.
    fn apply_outputs(
        &mut self,
        key: Key,
        node: &Node,
        scope: Key,
        result: VariableMap,
    ) -> Result<(), Failure> {
        if node.outputs.is_empty() {
            // Zeebe's propagation starts at the element's own scope: a local of the same name (from an
            // input mapping) takes the value; everything else travels outward.
            if !result.is_empty() {
                self.propagate(key, result);
            }
            return Ok(());
        }
        // With output mappings the result becomes the element's local variables (kept for a retry), and
        // only the mapped values leave.
        let result: VariableMap =
            result.into_iter().filter(|(name, _)| !name.starts_with(INTERNAL_PREFIX)).collect();
        if !result.is_empty() {
            self.set_local(key, result);
        }
        let visible = self.visible(key);
        let mut outputs = VariableMap::new();
        for mapping in &node.outputs {
            let value = self.eval(&mapping.source, &visible)?;
            let top = mapping.target.split('.').next().unwrap_or(&mapping.target).to_owned();
            if mapping.target.contains('.') && !outputs.contains_key(&top) {
                // A nested target updates the existing variable (from the flow scope outward).
                if let Some(existing) = self.visible(scope).get(&top) {
                    outputs.insert(top.clone(), existing.clone());
                }
            }
            set_path(&mut outputs, &mapping.target, value);
        }
        self.propagate(scope, outputs);
        Ok(())
    }

    /// Ends element instance `key` and leaves it over `flows`.
    fn finish(&mut self, key: Key, node: &Node, scope: Key, flows: Vec<ElementId>) {
        if let Some(thrower) =
            self.state.variables.get(&key).and_then(|v| v.get(COMPENSATION_FOR)).and_then(Json::as_u64)
        {
            self.compensation_thrower.insert(key, Key(thrower));
        }
        self.close_triggers(key);
        self.emit(Event::ElementCompleted { key, element: node.node.id.clone() });
        let has_compensation = node.boundaries.iter().any(|b| {
            self.node(b)
                .and_then(|n| n.node.as_event())
                .is_some_and(|e| matches!(e.definition(), Some(EventDefinitionKind::Compensate { .. })))
        });
        if has_compensation {
            self.emit(Event::CompensationRecorded {
                element_instance: key,
                element: node.node.id.clone(),
                scope,
            });
        }
        self.queue.push_back(Step::Leave { key, element: node.node.id.clone(), scope, flows });
    }

    fn leave(&mut self, key: Key, element: &ElementId, scope: Key, flows: Vec<ElementId>) {
        if Some(key) == self.state.root || !self.state.elements.contains_key(&scope) {
            return;
        }
        if let Some(thrower) = self.compensation_thrower.remove(&key) {
            self.next_compensation(thrower);
            return;
        }
        if flows.is_empty() {
            self.queue.push_back(Step::CheckScope { scope });
            return;
        }
        for flow_id in flows {
            let Some(flow) = self.definition.flow(&flow_id) else { continue };
            self.emit(Event::SequenceFlowTaken {
                flow: flow_id.clone(),
                scope,
                source: element.clone(),
                target: flow.flow.target.clone(),
            });
            self.queue.push_back(Step::Arrive {
                element: flow.flow.target.clone(),
                scope,
                via: Some(flow_id),
                triggered: None,
            });
        }
    }

    fn choose_conditional(
        &self,
        node: &Node,
        key: Key,
        default: Option<&ElementId>,
    ) -> Result<Vec<ElementId>, Failure> {
        let visible = self.visible(key);
        let mut chosen = Vec::new();
        for flow_id in &node.outgoing {
            if Some(flow_id) == default {
                continue;
            }
            let Some(flow) = self.definition.flow(flow_id) else { continue };
            let taken = match &flow.condition {
                None => true,
                Some(condition) => {
                    eval::evaluate_condition(condition, &visible, self.now).map_err(|error| Failure {
                        kind: IncidentKind::ExpressionFailed,
                        message: format!("condition of flow '{flow_id}': {error}"),
                    })?
                }
            };
            if taken {
                chosen.push(flow_id.clone());
            }
        }
        if chosen.is_empty() {
            match default {
                Some(default) => chosen.push(default.clone()),
                None => {
                    return Err(Failure {
                        kind: IncidentKind::NoMatchingFlow,
                        message: format!(
                            "no conditional flow out of '{}' is true and there is no default flow",
                            node.node.id
                        ),
                    })
                }
            }
        }
        Ok(chosen)
    }

    fn check_scope(&mut self, scope: Key) {
        if !self.state.elements.contains_key(&scope) {
            return;
        }
        let busy = self.state.children(scope).next().is_some()
            || self.state.joins.get(&scope).is_some_and(|gateways| !gateways.is_empty())
            || self.state.incidents.values().any(|incident| incident.element_instance == scope);
        if !busy {
            self.complete_scope(scope);
        }
    }

    /// Completes a scope whose work is done: the process (the instance completes) or a sub-process.
    fn complete_scope(&mut self, scope: Key) {
        let Some(instance) = self.state.elements.get(&scope).cloned() else { return };
        if Some(scope) == self.state.root {
            self.close_triggers(scope);
            let variables = self.state.variables.get(&scope).cloned().unwrap_or_default();
            self.emit(Event::ElementCompleted { key: scope, element: instance.element.clone() });
            self.emit(Event::InstanceCompleted { variables });
            return;
        }
        let Some(node) = self.node(&instance.element) else { return };
        let parent = instance.scope.unwrap_or(scope);
        let is_event_subprocess = matches!(
            node.node.as_activity().map(|a| &a.kind),
            Some(ActivityKind::SubProcess(SubProcess { kind: SubProcessKind::Event, .. }))
        );
        if let Err(failure) = self.apply_outputs(scope, node, parent, VariableMap::new()) {
            self.incident_then(scope, failure.kind, failure.message, Retry::Outputs);
            return;
        }
        if is_event_subprocess {
            self.close_triggers(scope);
            self.emit(Event::ElementCompleted { key: scope, element: instance.element.clone() });
            self.queue.push_back(Step::CheckScope { scope: parent });
        } else if self.is_iteration(scope) {
            self.iteration_done(scope, node, parent);
        } else {
            self.finish_evaluating_flows(scope);
        }
    }

    /// Terminates an element instance and everything inside it: jobs, tasks and triggers are cancelled,
    /// open incidents on it resolved, children terminated first.
    fn terminate(&mut self, key: Key) {
        let children: Vec<Key> = self.state.children(key).map(|c| c.key).collect();
        for child in children {
            self.terminate(child);
        }
        let jobs: Vec<Key> =
            self.state.jobs.values().filter(|j| j.element_instance == key).map(|j| j.key).collect();
        for job in jobs {
            self.emit(Event::JobCancelled { job });
        }
        let tasks: Vec<Key> =
            self.state.user_tasks.values().filter(|t| t.element_instance == key).map(|t| t.key).collect();
        for task in tasks {
            self.emit(Event::UserTaskCancelled { task });
        }
        if self.state.calls.contains_key(&key) {
            self.emit(Event::ChildInstanceCancelRequested { element_instance: key });
        }
        self.close_triggers(key);
        let incidents: Vec<Key> =
            self.state.incidents.values().filter(|i| i.element_instance == key).map(|i| i.key).collect();
        for incident in incidents {
            self.emit(Event::IncidentResolved { incident });
        }
        if let Some(element) = self.state.elements.get(&key).map(|e| e.element.clone()) {
            self.emit(Event::ElementTerminated { key, element });
        }
    }

    // -------------------------------------------------------------------------------------------------
    // errors and escalations

    /// Throws a BPMN error from element instance `from`: the nearest catching boundary event or event
    /// sub-process, outward through the scopes; an incident when nothing catches it.
    fn throw_error(&mut self, from: Key, code: &str, message: &str) {
        self.emit(Event::ErrorThrown {
            element_instance: from,
            error_code: code.to_owned(),
            message: message.to_owned(),
        });
        match self.find_catcher(from, code, CatchKind::Error) {
            Some(catcher) => self.catch(catcher, VariableMap::new()),
            None => self.incident(
                from,
                IncidentKind::UnhandledError,
                format!("error '{code}' was thrown ({message}) and no boundary event or event sub-process catches it"),
            ),
        }
    }

    /// Throws an escalation; returns whether the thrower was interrupted (so it must not complete).
    fn throw_escalation(&mut self, from: Key, code: &str) -> bool {
        self.emit(Event::EscalationThrown { element_instance: from, escalation_code: code.to_owned() });
        let Some(catcher) = self.find_catcher(from, code, CatchKind::Escalation) else { return false };
        let interrupting = catcher.interrupting;
        self.catch(catcher, VariableMap::new());
        interrupting && !self.state.elements.contains_key(&from)
    }

    fn find_catcher(&self, from: Key, code: &str, kind: CatchKind) -> Option<Catcher> {
        let fit = |node: &Node| -> Option<Fit> {
            let event = node.node.as_event()?;
            let catch_code = match (kind, event.definition()) {
                (CatchKind::Error, Some(EventDefinitionKind::Error { .. })) => node.error_code.as_deref(),
                (CatchKind::Escalation, Some(EventDefinitionKind::Escalation { .. })) => {
                    node.escalation_code.as_deref()
                }
                _ => return None,
            };
            match catch_code {
                None => Some(Fit::CatchAll),
                Some(catch_code) if catch_code == code => Some(Fit::Code),
                Some(_) => None,
            }
        };
        // The elements of the thrower's ancestors: an event sub-process that is running one of them does
        // not catch what is thrown inside itself (the error goes further out).
        let mut running = Vec::new();
        let mut walk = Some(from);
        while let Some(k) = walk {
            let Some(element) = self.state.elements.get(&k) else { break };
            running.push(element.element.clone());
            walk = element.scope;
        }
        let mut current = Some(from);
        while let Some(key) = current {
            let instance = self.state.elements.get(&key)?;
            let node = self.node(&instance.element);
            // At each level, the best fit in document order: event sub-processes of this scope first (the
            // process or a sub-process instance), then boundary events of this activity (for a loop: on
            // its body, not on each iteration).
            let mut best: Option<(Fit, Catcher)> = None;
            let scope_id = if Some(key) == self.state.root {
                Some(self.definition.root_id())
            } else {
                node.map(|n| n.node.id.clone())
            };
            if let Some(scope_def) = scope_id
                .as_ref()
                .and_then(|id| self.definition.scope(id))
                .filter(|_| key != from && !self.interrupted(key))
            {
                for subprocess in scope_def.event_subprocesses.iter().filter(|id| !running.contains(id)) {
                    for start in
                        self.definition.scope(subprocess).map(|s| s.nodes.clone()).unwrap_or_default()
                    {
                        let Some(start_node) = self.node(&start) else { continue };
                        let Some(BpmnEvent { position: EventPosition::Start { interrupting }, .. }) =
                            start_node.node.as_event()
                        else {
                            continue;
                        };
                        if let Some(fit) = fit(start_node) {
                            consider(
                                &mut best,
                                fit,
                                Catcher { owner: key, element: start.clone(), interrupting: *interrupting },
                            );
                        }
                    }
                }
            }
            if best.is_none() {
                if let Some(node) = node.filter(|_| !self.is_iteration(key)) {
                    for boundary in &node.boundaries {
                        let Some(boundary_node) = self.node(boundary) else { continue };
                        if let Some(fit) = fit(boundary_node) {
                            let interrupting = matches!(
                                boundary_node.node.as_event().map(|e| &e.position),
                                Some(EventPosition::Boundary { cancel_activity: true, .. })
                            );
                            consider(
                                &mut best,
                                fit,
                                Catcher { owner: key, element: boundary.clone(), interrupting },
                            );
                        }
                    }
                }
            }
            if let Some((_, catcher)) = best {
                return Some(catcher);
            }
            current = instance.scope;
        }
        None
    }

    /// Whether an interrupting event sub-process of scope `scope` is running: the scope is already
    /// interrupted and its event sub-processes catch nothing more.
    fn interrupted(&self, scope: Key) -> bool {
        self.state.children(scope).any(|child| {
            child.element_type == "subProcess(event)"
                && self.definition.scope(&child.element).is_some_and(|sub| {
                    sub.nodes.iter().any(|start| {
                        matches!(
                            self.node(start).and_then(|n| n.node.as_event()).map(|e| &e.position),
                            Some(EventPosition::Start { interrupting: true })
                        )
                    })
                })
        })
    }

    fn catch(&mut self, catcher: Catcher, payload: VariableMap) {
        self.trigger(catcher.owner, &catcher.element, payload, Trigger::Other);
    }

    // -------------------------------------------------------------------------------------------------
    // variables and expressions

    /// The variables visible from element instance `key`: every enclosing scope, inner ones winning.
    fn visible(&self, key: Key) -> Variables {
        self.state.visible_variables(key)
    }

    fn set_local(&mut self, scope: Key, variables: VariableMap) {
        let element = self.state.elements.get(&scope).map(|e| e.element.clone()).unwrap_or_default();
        self.emit(Event::VariablesChanged { scope, element, variables });
    }

    /// Zeebe's propagation: each variable is set in the nearest scope (from `scope` outward) that already
    /// has it, or in the process scope.
    fn propagate(&mut self, scope: Key, variables: VariableMap) {
        let mut by_scope: BTreeMap<Key, VariableMap> = BTreeMap::new();
        // Engine bookkeeping is never written by data from outside.
        for (name, value) in variables.into_iter().filter(|(name, _)| !name.starts_with(INTERNAL_PREFIX)) {
            let mut current = Some(scope);
            let mut target = self.state.root.unwrap_or(scope);
            while let Some(k) = current {
                if self.state.variables.get(&k).is_some_and(|vars| vars.contains_key(&name)) {
                    target = k;
                    break;
                }
                current = self.state.elements.get(&k).and_then(|e| e.scope);
            }
            by_scope.entry(target).or_default().insert(name, value);
        }
        for (target, variables) in by_scope {
            self.set_local(target, variables);
        }
    }

    fn eval(&self, expr: &Expr, variables: &Variables) -> Result<Json, Failure> {
        match expr {
            Expr::Literal(text) => Ok(Json::String(text.clone())),
            Expr::Feel(expression) => {
                eval::evaluate(expression, variables, self.now).map_err(Failure::expression)
            }
        }
    }

    fn scope_of(&self, key: Key) -> Key {
        self.state.elements.get(&key).and_then(|e| e.scope).unwrap_or(key)
    }

    fn incident(&mut self, element_instance: Key, kind: IncidentKind, message: String) {
        self.incident_then(element_instance, kind, message, Retry::Run);
    }

    fn incident_then(&mut self, element_instance: Key, kind: IncidentKind, message: String, retry: Retry) {
        let element =
            self.state.elements.get(&element_instance).map(|e| e.element.clone()).unwrap_or_default();
        let incident = self.next_key();
        self.emit(Event::IncidentRaised {
            incident,
            element_instance,
            element,
            kind,
            message,
            job: None,
            retry,
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatchKind {
    Error,
    Escalation,
}

struct Catcher {
    owner: Key,
    element: ElementId,
    interrupting: bool,
}

/// How well a catch event matches a thrown code: by its code (preferred, as in Zeebe), or as a catch-all.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Fit {
    CatchAll,
    Code,
}

/// Keeps the better-fitting catcher; on a tie the first in document order.
fn consider(best: &mut Option<(Fit, Catcher)>, fit: Fit, catcher: Catcher) {
    if best.as_ref().is_none_or(|(best_fit, _)| fit > *best_fit) {
        *best = Some((fit, catcher));
    }
}

/// How a trigger fired (a timer carries its repetition count for cycles).
enum Trigger {
    Timer(super::state::Timer),
    Other,
}

/// Sets `value` at a dotted `path` (`applicant.address.city`) in `variables`, creating objects on the way.
fn set_path(variables: &mut VariableMap, path: &str, value: Json) {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else { return };
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        variables.insert(first.to_owned(), value);
        return;
    }
    let entry = variables.entry(first.to_owned()).or_insert_with(|| Json::Object(serde_json::Map::new()));
    if !entry.is_object() {
        *entry = Json::Object(serde_json::Map::new());
    }
    let mut current = entry;
    for (i, part) in rest.iter().enumerate() {
        let Json::Object(map) = current else { return };
        if i + 1 == rest.len() {
            map.insert((*part).to_owned(), value);
            return;
        }
        let next = map.entry((*part).to_owned()).or_insert_with(|| Json::Object(serde_json::Map::new()));
        if !next.is_object() {
            *next = Json::Object(serde_json::Map::new());
        }
        current = next;
    }
}
