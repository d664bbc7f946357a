//! A deployed process, compiled for execution: every flow node indexed by id with its scope, flows,
//! boundary events and parsed FEEL, so `decide` never parses or searches the model. Built once at deploy
//! time from a validated model; immutable afterwards, shared by every instance of the version.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::dmn::DecisionModel;

use crate::diagnostics::{has_errors, Diagnostic};
use crate::feel::{self, FeelExpression, Value};
use crate::model::*;

/// A Zeebe value compiled: a literal, or FEEL parsed once.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(String),
    Feel(FeelExpression),
}

impl Expr {
    /// Compiles a value; the model was validated, so a FEEL error here means an unvalidated model.
    pub fn compile(text: &str) -> Result<Expr, feel::FeelError> {
        match Value::classify(text) {
            Value::Feel(body) => feel::parse_expression(body).map(Expr::Feel),
            Value::Literal(literal) => Ok(Expr::Literal(literal.to_owned())),
        }
    }

    pub fn source(&self) -> String {
        match self {
            Expr::Literal(text) => text.clone(),
            Expr::Feel(expression) => format!("={}", expression.source),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompiledMapping {
    pub source: Expr,
    pub target: String,
}

/// What a job-based element asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub job_type: Expr,
    pub retries: Expr,
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageSpec {
    pub name: Expr,
    pub correlation_key: Option<Expr>,
}

/// One flow node with everything execution needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The model node; a sub-process's inner scope is emptied here (its nodes have their own entries).
    pub node: FlowNode,
    /// The id of the enclosing scope: the process id or a sub-process id.
    pub scope: ElementId,
    pub incoming: Vec<ElementId>,
    pub outgoing: Vec<ElementId>,
    /// Boundary events attached to this activity, in document order.
    pub boundaries: Vec<ElementId>,
    pub inputs: Vec<CompiledMapping>,
    pub outputs: Vec<CompiledMapping>,
    pub job: Option<JobSpec>,
    pub script: Option<(Expr, String)>,
    pub timer: Option<TimerExpr>,
    pub message: Option<MessageSpec>,
    pub signal: Option<String>,
    pub error_code: Option<String>,
    pub escalation_code: Option<String>,
    pub link: Option<String>,
    /// For an activity with a compensation boundary event: the handler activity associated with it.
    pub compensation_handler: Option<ElementId>,
}

/// A timer definition, as written: ISO text or FEEL evaluated when the timer is scheduled.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerExpr {
    Date(Expr),
    Duration(Expr),
    Cycle(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub flow: SequenceFlow,
    pub condition: Option<FeelExpression>,
}

/// A process or sub-process seen as a container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeDef {
    /// None start events (how the scope is entered by a token).
    pub none_starts: Vec<ElementId>,
    /// Event sub-processes directly in this scope.
    pub event_subprocesses: Vec<ElementId>,
    pub nodes: Vec<ElementId>,
}

#[derive(Debug, Clone)]
pub struct ProcessDefinition {
    pub process_id: ProcessId,
    pub version: u32,
    pub name: Option<String>,
    pub nodes: BTreeMap<ElementId, Node>,
    pub flows: BTreeMap<ElementId, Flow>,
    pub scopes: BTreeMap<ElementId, ScopeDef>,
    /// For each joining inclusive gateway: the nodes from which a token can still reach one of its
    /// incoming flows without passing through it (the OR-join's "can a token still arrive" set).
    pub inclusive_upstream: BTreeMap<ElementId, BTreeSet<ElementId>>,
    /// Decisions deployed with the process, by decision id, for business rule tasks.
    pub decisions: BTreeMap<String, Arc<DecisionModel>>,
    /// Every other FEEL-bearing value of the process (assignments, schedules, loop collections and
    /// conditions, called element and decision ids), compiled once at deploy time, by source text.
    pub expressions: BTreeMap<String, Expr>,
}

impl ProcessDefinition {
    /// Compiles process `process_id` of a file. Fails with the file's error diagnostics when the file
    /// does not validate: only valid models run.
    pub fn compile(
        definitions: &Definitions,
        process_id: &str,
        version: u32,
    ) -> Result<ProcessDefinition, Vec<Diagnostic>> {
        let diagnostics = crate::validate(definitions);
        if has_errors(&diagnostics) {
            return Err(diagnostics.into_iter().filter(Diagnostic::is_error).collect());
        }
        let Some(process) = definitions.process(process_id) else {
            return Err(vec![Diagnostic::error(
                crate::Code::DanglingReference,
                format!("the file has no process '{process_id}'"),
            )]);
        };
        let mut compiler = Compiler {
            definitions,
            errors: Vec::new(),
            definition: ProcessDefinition::empty(process, version),
        };
        compiler.scope(&process.scope, &process.id);
        compiler.definition.compute_inclusive_upstream();
        if compiler.errors.is_empty() {
            Ok(compiler.definition)
        } else {
            Err(compiler.errors)
        }
    }

    fn empty(process: &Process, version: u32) -> ProcessDefinition {
        ProcessDefinition {
            process_id: ProcessId(process.id.0.clone()),
            version,
            name: process.name.clone(),
            nodes: BTreeMap::new(),
            flows: BTreeMap::new(),
            scopes: BTreeMap::new(),
            inclusive_upstream: BTreeMap::new(),
            decisions: BTreeMap::new(),
            expressions: BTreeMap::new(),
        }
    }

    /// The compiled form of a value of this process: from the deploy-time cache, or compiled now for a
    /// value the cache does not know (never the case for values read from the process's own model).
    pub fn expression(&self, text: &str) -> Result<std::borrow::Cow<'_, Expr>, feel::FeelError> {
        match self.expressions.get(text) {
            Some(expr) => Ok(std::borrow::Cow::Borrowed(expr)),
            None => Expr::compile(text).map(std::borrow::Cow::Owned),
        }
    }

    /// Makes the decisions of `models` callable by business rule tasks (the first model naming a
    /// decision id wins).
    pub fn with_decisions(
        mut self,
        models: impl IntoIterator<Item = Arc<DecisionModel>>,
    ) -> ProcessDefinition {
        for model in models {
            for id in model.decision_ids() {
                self.decisions.entry(id).or_insert_with(|| Arc::clone(&model));
            }
        }
        self
    }

    /// The process itself as a scope id.
    pub fn root_id(&self) -> ElementId {
        ElementId(self.process_id.0.clone())
    }

    pub fn node(&self, id: &ElementId) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn flow(&self, id: &ElementId) -> Option<&Flow> {
        self.flows.get(id)
    }

    pub fn scope(&self, id: &ElementId) -> Option<&ScopeDef> {
        self.scopes.get(id)
    }

    /// The process's own start events (not an event sub-process's) that a message named `name` triggers.
    pub fn message_start_events(&self, name: &str) -> Vec<ElementId> {
        let Some(root) = self.scope(&self.root_id()) else { return Vec::new() };
        root.nodes
            .iter()
            .filter(|id| {
                self.node(id).is_some_and(|node| {
                    matches!(node.node.as_event().map(|e| &e.position), Some(EventPosition::Start { .. }))
                        && node.message.as_ref().is_some_and(|message| match &message.name {
                            Expr::Literal(text) => text == name,
                            Expr::Feel(expression) => expression.source.trim_matches('"') == name,
                        })
                })
            })
            .cloned()
            .collect()
    }

    fn compute_inclusive_upstream(&mut self) {
        let joins: Vec<ElementId> = self
            .nodes
            .values()
            .filter(|node| {
                matches!(node.node.as_gateway().map(|g| &g.kind), Some(GatewayKind::Inclusive))
                    && node.incoming.len() > 1
            })
            .map(|node| node.node.id.clone())
            .collect();
        for join in joins {
            let mut upstream = BTreeSet::new();
            let mut queue: VecDeque<ElementId> = VecDeque::new();
            if let Some(node) = self.nodes.get(&join) {
                for flow in &node.incoming {
                    if let Some(flow) = self.flows.get(flow) {
                        queue.push_back(flow.flow.source.clone());
                    }
                }
            }
            while let Some(id) = queue.pop_front() {
                if id == join || !upstream.insert(id.clone()) {
                    continue;
                }
                let Some(node) = self.nodes.get(&id) else { continue };
                for flow in &node.incoming {
                    if let Some(flow) = self.flows.get(flow) {
                        queue.push_back(flow.flow.source.clone());
                    }
                }
                // A link catch's token comes from the link throws of the same name in its scope.
                if let (Some(name), Some(Event { position: EventPosition::IntermediateCatch, .. })) =
                    (&node.link, node.node.as_event())
                {
                    for other in self.nodes.values() {
                        let is_throw = matches!(
                            other.node.as_event().map(|e| &e.position),
                            Some(EventPosition::IntermediateThrow)
                        );
                        if is_throw && other.scope == node.scope && other.link.as_ref() == Some(name) {
                            queue.push_back(other.node.id.clone());
                        }
                    }
                }
                // A boundary event's token comes from its host activity.
                if let Some(Event { position: EventPosition::Boundary { attached_to, .. }, .. }) =
                    node.node.as_event()
                {
                    queue.push_back(attached_to.clone());
                }
            }
            self.inclusive_upstream.insert(join, upstream);
        }
    }
}

struct Compiler<'a> {
    definitions: &'a Definitions,
    errors: Vec<Diagnostic>,
    definition: ProcessDefinition,
}

impl Compiler<'_> {
    /// Compiles every FEEL-bearing value `decide` evaluates from the model at run time into the cache.
    fn cache_values(&mut self, node: &FlowNode) {
        let zeebe = &node.extensions.zeebe;
        let mut texts: Vec<String> = Vec::new();
        if let Some(assignment) = &zeebe.assignment_definition {
            texts.extend(
                [&assignment.assignee, &assignment.candidate_groups, &assignment.candidate_users]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        if let Some(schedule) = &zeebe.task_schedule {
            texts.extend([&schedule.due_date, &schedule.follow_up_date].into_iter().flatten().cloned());
        }
        if let Some(called) = &zeebe.called_element {
            texts.push(called.process_id.clone());
        }
        if let Some(decision) = &zeebe.called_decision {
            texts.push(decision.decision_id.clone());
        }
        match node.as_activity().and_then(|activity| activity.loop_characteristics.as_ref()) {
            Some(LoopCharacteristics::MultiInstance(multi)) => {
                texts.extend(multi.loop_cardinality.iter().map(|e| e.text.clone()));
                texts.extend(multi.completion_condition.iter().map(|e| e.text.clone()));
                if let Some(z) = &multi.zeebe {
                    texts.extend([&z.input_collection, &z.output_element].into_iter().flatten().cloned());
                }
            }
            Some(LoopCharacteristics::Standard(standard)) => {
                texts.extend(standard.loop_condition.iter().map(|e| e.text.clone()));
            }
            None => {}
        }
        for text in texts {
            if !self.definition.expressions.contains_key(&text) {
                let expr = self.expr(&node.id, &text);
                self.definition.expressions.insert(text, expr);
            }
        }
    }

    fn expr(&mut self, owner: &ElementId, text: &str) -> Expr {
        match Expr::compile(text) {
            Ok(expr) => expr,
            Err(error) => {
                self.errors.push(Diagnostic::error(crate::Code::InvalidFeel, error.to_string()).on(owner));
                Expr::Literal(String::new())
            }
        }
    }

    fn scope(&mut self, scope: &Scope, scope_id: &ElementId) {
        let mut scope_def = ScopeDef::default();
        for flow in &scope.sequence_flows {
            let condition = match &flow.condition {
                None => None,
                Some(condition) => match self.expr(&flow.id, &condition.text) {
                    Expr::Feel(expression) => Some(expression),
                    // Validation requires '=' or text that parses as FEEL.
                    Expr::Literal(text) => feel::parse_expression(&text).ok(),
                },
            };
            self.definition.flows.insert(flow.id.clone(), Flow { flow: flow.clone(), condition });
        }
        for node in &scope.flow_nodes {
            scope_def.nodes.push(node.id.clone());
            if let Some(Event { position: EventPosition::Start { .. }, definitions, .. }) = node.as_event() {
                if definitions.is_empty() {
                    scope_def.none_starts.push(node.id.clone());
                }
            }
            if let Some(Activity { kind: ActivityKind::SubProcess(sub), .. }) = node.as_activity() {
                if sub.kind == SubProcessKind::Event {
                    scope_def.event_subprocesses.push(node.id.clone());
                }
            }
            let compiled = self.node(node, scope, scope_id);
            self.definition.nodes.insert(node.id.clone(), compiled);
            if let Some(inner) = node.inner_scope() {
                self.scope(inner, &node.id);
            }
        }
        self.definition.scopes.insert(scope_id.clone(), scope_def);
    }

    fn node(&mut self, node: &FlowNode, scope: &Scope, scope_id: &ElementId) -> Node {
        let zeebe = &node.extensions.zeebe;
        let mut shallow = node.clone();
        if let FlowNodeKind::Activity(Activity { kind: ActivityKind::SubProcess(sub), .. }) =
            &mut shallow.kind
        {
            sub.scope = Scope::default();
        }
        let (inputs, outputs) = match &zeebe.io_mapping {
            Some(mapping) => (
                mapping
                    .inputs
                    .iter()
                    .map(|m| CompiledMapping {
                        source: self.expr(&node.id, &m.source),
                        target: m.target.clone(),
                    })
                    .collect(),
                mapping
                    .outputs
                    .iter()
                    .map(|m| CompiledMapping {
                        source: self.expr(&node.id, &m.source),
                        target: m.target.clone(),
                    })
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let job = zeebe.task_definition.as_ref().map(|definition| JobSpec {
            job_type: self.expr(&node.id, &definition.job_type),
            retries: self.expr(&node.id, definition.retries.as_deref().unwrap_or("3")),
            headers: zeebe.task_headers.iter().map(|h| (h.key.clone(), h.value.clone())).collect(),
        });
        let script = zeebe
            .script
            .as_ref()
            .map(|script| (self.expr(&node.id, &script.expression), script.result_variable.clone()));
        self.cache_values(node);
        let mut compiled = Node {
            node: shallow,
            scope: scope_id.clone(),
            incoming: scope.sequence_flows.iter().filter(|f| f.target == node.id).map(|f| f.id.clone()).collect(),
            outgoing: scope.sequence_flows.iter().filter(|f| f.source == node.id).map(|f| f.id.clone()).collect(),
            boundaries: scope
                .flow_nodes
                .iter()
                .filter(|other| {
                    matches!(other.as_event(), Some(Event { position: EventPosition::Boundary { attached_to, .. }, .. }) if attached_to == &node.id)
                })
                .map(|other| other.id.clone())
                .collect(),
            inputs,
            outputs,
            job,
            script,
            timer: None,
            message: None,
            signal: None,
            error_code: None,
            escalation_code: None,
            link: None,
            compensation_handler: None,
        };
        compiled.compensation_handler = compiled.boundaries.iter().find_map(|boundary| {
            let is_compensation = scope.flow_node(boundary).and_then(|b| b.as_event()).is_some_and(|event| {
                matches!(event.definition(), Some(EventDefinitionKind::Compensate { .. }))
            });
            if !is_compensation {
                return None;
            }
            scope.artifacts.iter().find_map(|artifact| match &artifact.kind {
                ArtifactKind::Association { source, target, .. } if source == boundary => {
                    Some(target.clone())
                }
                _ => None,
            })
        });
        let message_ref = match &node.kind {
            FlowNodeKind::Event(event) => {
                for definition in &event.definitions {
                    match &definition.kind {
                        EventDefinitionKind::Timer(timer) => {
                            compiled.timer = match timer {
                                TimerDefinition::Date(e) => {
                                    Some(TimerExpr::Date(self.expr(&node.id, &e.text)))
                                }
                                TimerDefinition::Duration(e) => {
                                    Some(TimerExpr::Duration(self.expr(&node.id, &e.text)))
                                }
                                TimerDefinition::Cycle(e) => {
                                    Some(TimerExpr::Cycle(self.expr(&node.id, &e.text)))
                                }
                                TimerDefinition::Unspecified => None,
                            }
                        }
                        EventDefinitionKind::Signal { signal_ref: Some(signal) } => {
                            compiled.signal = self.definitions.signal(signal).and_then(|s| s.name.clone());
                        }
                        EventDefinitionKind::Error { error_ref: Some(error) } => {
                            compiled.error_code =
                                self.definitions.error(error).and_then(|e| e.error_code.clone());
                        }
                        EventDefinitionKind::Escalation { escalation_ref: Some(escalation) } => {
                            compiled.escalation_code = self
                                .definitions
                                .escalation(escalation)
                                .and_then(|e| e.escalation_code.clone());
                        }
                        EventDefinitionKind::Link { name } => compiled.link = name.clone(),
                        _ => {}
                    }
                }
                event.definitions.iter().find_map(|d| match &d.kind {
                    EventDefinitionKind::Message { message_ref } => message_ref.clone(),
                    _ => None,
                })
            }
            FlowNodeKind::Activity(Activity {
                kind: ActivityKind::Task(TaskKind::Receive { message_ref, .. }),
                ..
            }) => message_ref.clone(),
            _ => None,
        };
        if let Some(message) = message_ref.and_then(|id| self.definitions.message(&id)) {
            let name = message.name.clone().unwrap_or_default();
            compiled.message = Some(MessageSpec {
                name: self.expr(&node.id, &name),
                correlation_key: message
                    .extensions
                    .zeebe
                    .subscription
                    .as_ref()
                    .map(|s| s.correlation_key.clone())
                    .map(|key| self.expr(&node.id, &key)),
            });
        }
        compiled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_values_are_compiled_once_at_deploy_time() {
        let bytes =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/runtime/models/events.bpmn"))
                .unwrap();
        let definitions = crate::check(&bytes).definitions.unwrap();
        let definition = ProcessDefinition::compile(&definitions, "relief", 1).unwrap();
        assert!(matches!(definition.expressions.get("=farmers"), Some(Expr::Feel(_))));
        assert!(matches!(definition.expressions.get("=receipt"), Some(Expr::Feel(_))));
        assert!(matches!(definition.expression("=farmers").unwrap(), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(definition.expression("=other").unwrap(), std::borrow::Cow::Owned(_)));
    }

    #[test]
    fn an_invalid_model_does_not_compile() {
        let bytes =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/four-problems.bpmn")).unwrap();
        let definitions = crate::check(&bytes).definitions.unwrap();
        let errors = ProcessDefinition::compile(&definitions, "late-registration", 1).unwrap_err();
        assert!(errors.iter().all(Diagnostic::is_error) && errors.len() >= 3, "{errors:?}");
    }
}
