//! The validator: judges a parsed [`Definitions`] and returns diagnostics, never panics, never changes
//! the model. Two families of rules:
//! - **model rules**, for every process: references resolve, boundary events sit on activities, event
//!   definitions fit their event, every node is reachable and leads somewhere, structural soundness;
//! - **execution rules**, only for `isExecutable="true"` processes: a start event, FEEL that parses,
//!   timers that parse, job types, messages with names and correlation keys, elements the runtime can
//!   execute. Interchange-only models (most of the MIWG suite) are not held to these.

mod structure;

use std::collections::{BTreeMap, HashMap};

use crate::diagnostics::{Code, Diagnostic};
use crate::feel::{self, Value};
use crate::model::*;
use crate::support;
use crate::timer;

/// Validates a whole file. Diagnostics come out in document order.
pub fn validate(definitions: &Definitions) -> Vec<Diagnostic> {
    let index = Index::build(definitions);
    let mut validator = Validator { definitions, index, diagnostics: Vec::new(), feel_cache: HashMap::new() };
    validator.run();
    let mut diagnostics = validator.diagnostics;
    diagnostics.sort_by_key(|diagnostic| (diagnostic.pos, diagnostic.code));
    diagnostics.dedup();
    diagnostics
}

/// What kind of element an id names; enough to check references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    FlowNode,
    SequenceFlow,
    Process,
    Collaboration,
    Participant,
    MessageFlow,
    Message,
    Signal,
    Error,
    Escalation,
    DataStore,
    DataObject,
    DataReference,
    Artifact,
    Lane,
    ItemDefinition,
    /// ioSpecification inputs/outputs, event definitions, unmodelled elements with ids.
    Other,
}

struct Index<'a> {
    kinds: HashMap<&'a str, Kind>,
    /// For each flow node id: the node and the id of the scope (process or sub-process) holding it.
    flow_nodes: HashMap<&'a str, (&'a FlowNode, &'a str)>,
}

impl<'a> Index<'a> {
    fn build(definitions: &'a Definitions) -> Index<'a> {
        let mut index = Index { kinds: HashMap::new(), flow_nodes: HashMap::new() };
        let add = |kinds: &mut HashMap<&'a str, Kind>, id: &'a ElementId, kind: Kind| {
            kinds.entry(id.as_str()).or_insert(kind);
        };
        for process in &definitions.processes {
            add(&mut index.kinds, &process.id, Kind::Process);
            index.add_scope(&process.scope, process.id.as_str());
        }
        for collaboration in &definitions.collaborations {
            add(&mut index.kinds, &collaboration.id, Kind::Collaboration);
            for participant in &collaboration.participants {
                add(&mut index.kinds, &participant.id, Kind::Participant);
            }
            for flow in &collaboration.message_flows {
                add(&mut index.kinds, &flow.id, Kind::MessageFlow);
            }
            for artifact in &collaboration.artifacts {
                add(&mut index.kinds, &artifact.id, Kind::Artifact);
            }
        }
        for message in &definitions.messages {
            add(&mut index.kinds, &message.id, Kind::Message);
        }
        for signal in &definitions.signals {
            add(&mut index.kinds, &signal.id, Kind::Signal);
        }
        for error in &definitions.errors {
            add(&mut index.kinds, &error.id, Kind::Error);
        }
        for escalation in &definitions.escalations {
            add(&mut index.kinds, &escalation.id, Kind::Escalation);
        }
        for store in &definitions.data_stores {
            add(&mut index.kinds, &store.id, Kind::DataStore);
        }
        for item in &definitions.item_definitions {
            add(&mut index.kinds, &item.id, Kind::ItemDefinition);
        }
        for other in &definitions.other_roots {
            index.add_xml(other);
        }
        index
    }

    fn add_scope(&mut self, scope: &'a Scope, scope_id: &'a str) {
        for node in &scope.flow_nodes {
            self.kinds.entry(node.id.as_str()).or_insert(Kind::FlowNode);
            self.flow_nodes.entry(node.id.as_str()).or_insert((node, scope_id));
            if let FlowNodeKind::Event(event) = &node.kind {
                for definition in &event.definitions {
                    if let Some(id) = &definition.id {
                        self.kinds.entry(id.as_str()).or_insert(Kind::Other);
                    }
                }
            }
            for association in &node.data_associations {
                if let Some(id) = &association.id {
                    self.kinds.entry(id.as_str()).or_insert(Kind::Other);
                }
            }
            for id in &node.data_io {
                self.kinds.entry(id.as_str()).or_insert(Kind::Other);
            }
            if let Some(inner) = node.inner_scope() {
                self.add_scope(inner, node.id.as_str());
            }
        }
        for flow in &scope.sequence_flows {
            self.kinds.entry(flow.id.as_str()).or_insert(Kind::SequenceFlow);
        }
        for data in &scope.data {
            let kind = match data.kind {
                DataKind::DataObject { .. } => Kind::DataObject,
                DataKind::DataObjectReference { .. } | DataKind::DataStoreReference { .. } => {
                    Kind::DataReference
                }
                DataKind::Other { .. } => Kind::Other,
            };
            self.kinds.entry(data.id.as_str()).or_insert(kind);
        }
        for artifact in &scope.artifacts {
            self.kinds.entry(artifact.id.as_str()).or_insert(Kind::Artifact);
        }
        for lane_set in &scope.lane_sets {
            self.add_lanes(lane_set);
        }
        for unknown in &scope.unknown {
            self.add_xml(unknown);
        }
    }

    fn add_lanes(&mut self, lane_set: &'a LaneSet) {
        for lane in &lane_set.lanes {
            self.kinds.entry(lane.id.as_str()).or_insert(Kind::Lane);
            if let Some(child) = &lane.child_lane_set {
                self.add_lanes(child);
            }
        }
    }

    fn add_xml(&mut self, element: &'a XmlElement) {
        if let Some((_, id)) = element.attributes.iter().find(|(name, _)| name == "id") {
            self.kinds.entry(id.as_str()).or_insert(Kind::Other);
        }
        for child in &element.children {
            self.add_xml(child);
        }
    }

    fn kind(&self, id: &ElementId) -> Option<Kind> {
        self.kinds.get(id.as_str()).copied()
    }
}

struct Validator<'a> {
    definitions: &'a Definitions,
    index: Index<'a>,
    diagnostics: Vec<Diagnostic>,
    /// FEEL parse results by source: models repeat the same expressions many times.
    feel_cache: HashMap<String, Result<(), feel::FeelError>>,
}

/// Where a scope sits, for rules that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScopeKind {
    Process,
    Embedded,
    EventSubProcess,
    AdHoc,
    Transaction,
}

impl<'a> Validator<'a> {
    fn run(&mut self) {
        for process in &self.definitions.processes {
            self.scope(process, &process.scope, ScopeKind::Process);
            if process.is_executable {
                let has_start = process.scope.flow_nodes.iter().any(|node| {
                    matches!(node.as_event(), Some(Event { position: EventPosition::Start { .. }, .. }))
                });
                if !has_start {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::NoStartEvent,
                            format!(
                                "executable process '{}' has no start event, so it can never be started",
                                process.id
                            ),
                        )
                        .on(&process.id)
                        .at(process.pos),
                    );
                }
            }
            for lane_set in &process.scope.lane_sets {
                self.lanes(lane_set);
            }
        }
        self.collaborations();
        self.diagrams();
    }

    fn parse_feel(&mut self, source: &str) -> Result<(), feel::FeelError> {
        if let Some(result) = self.feel_cache.get(source) {
            return result.clone();
        }
        let result = feel::parse_expression(source).map(|_| ());
        self.feel_cache.insert(source.to_owned(), result.clone());
        result
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn dangling(
        &mut self,
        owner: &ElementId,
        pos: Position,
        field: &str,
        target: &ElementId,
        expected: &str,
    ) {
        self.push(
            Diagnostic::error(
                Code::DanglingReference,
                format!("{field} '{target}' does not name any {expected} in this file"),
            )
            .on(owner)
            .at(pos),
        );
    }

    /// Checks that `target` names an element of one of the `expected` kinds.
    fn reference(
        &mut self,
        owner: &ElementId,
        pos: Position,
        field: &str,
        target: &ElementId,
        expected: &[Kind],
        expected_name: &str,
    ) {
        match self.index.kind(target) {
            Some(kind) if expected.contains(&kind) => {}
            Some(kind) => self.push(
                Diagnostic::error(
                    Code::DanglingReference,
                    format!("{field} '{target}' names a {kind:?}, not a {expected_name}"),
                )
                .on(owner)
                .at(pos),
            ),
            None => self.dangling(owner, pos, field, target, expected_name),
        }
    }

    // ---------------------------------------------------------------------------------------------
    // scopes

    fn scope(&mut self, process: &'a Process, scope: &'a Scope, scope_kind: ScopeKind) {
        let executable = process.is_executable;
        let local: HashMap<&str, &FlowNode> =
            scope.flow_nodes.iter().map(|node| (node.id.as_str(), node)).collect();
        let mut outgoing: BTreeMap<&str, Vec<&SequenceFlow>> = BTreeMap::new();

        for flow in &scope.sequence_flows {
            let mut ends_ok = true;
            for (field, end) in [("sourceRef", &flow.source), ("targetRef", &flow.target)] {
                if local.contains_key(end.as_str()) {
                    continue;
                }
                ends_ok = false;
                if self.index.flow_nodes.contains_key(end.as_str()) {
                    self.push(
                        Diagnostic::error(
                            Code::CrossScopeFlow,
                            format!(
                                "sequence flow {field} '{end}' is in another process or sub-process; sequence \
                                 flows cannot cross scope boundaries"
                            ),
                        )
                        .on(&flow.id)
                        .at(flow.pos),
                    );
                } else {
                    self.reference(&flow.id, flow.pos, field, end, &[Kind::FlowNode], "flow node");
                }
            }
            if ends_ok {
                outgoing.entry(flow.source.as_str()).or_default().push(flow);
            }
            if executable {
                if let Some(condition) = &flow.condition {
                    self.condition(&flow.id, condition);
                }
            }
        }

        for node in &scope.flow_nodes {
            let node_outgoing = outgoing.get(node.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            self.flow_node(process, scope, scope_kind, node, node_outgoing, &local);
            if executable {
                self.execution(process, scope_kind, node, node_outgoing, &local);
            }
            if let Some(inner) = node.inner_scope() {
                let inner_kind = match node.as_activity().map(|activity| &activity.kind) {
                    Some(ActivityKind::SubProcess(SubProcess { kind: SubProcessKind::Event, .. })) => {
                        ScopeKind::EventSubProcess
                    }
                    Some(ActivityKind::SubProcess(SubProcess {
                        kind: SubProcessKind::AdHoc { .. }, ..
                    })) => ScopeKind::AdHoc,
                    Some(ActivityKind::SubProcess(SubProcess {
                        kind: SubProcessKind::Transaction { .. },
                        ..
                    })) => ScopeKind::Transaction,
                    _ => ScopeKind::Embedded,
                };
                self.scope(process, inner, inner_kind);
            }
        }

        for data in &scope.data {
            match &data.kind {
                DataKind::DataObjectReference { data_object_ref: Some(target) } => self.reference(
                    &data.id,
                    data.pos,
                    "dataObjectRef",
                    target,
                    &[Kind::DataObject],
                    "data object",
                ),
                DataKind::DataStoreReference { data_store_ref: Some(target) } => self.reference(
                    &data.id,
                    data.pos,
                    "dataStoreRef",
                    target,
                    &[Kind::DataStore],
                    "data store",
                ),
                _ => {}
            }
        }
        self.artifacts(&scope.artifacts);
        for lane_set in &scope.lane_sets {
            if scope_kind != ScopeKind::Process {
                self.lanes(lane_set);
            }
        }

        let is_ad_hoc = scope_kind == ScopeKind::AdHoc;
        self.links(scope);
        let graph = structure::ScopeGraph::new(scope);
        if !is_ad_hoc {
            for node in graph.unreachable() {
                let message = format!(
                    "{} '{}' cannot be reached from any start event of its {}",
                    node.type_name(),
                    node.id,
                    if scope_kind == ScopeKind::Process { "process" } else { "sub-process" }
                );
                let diagnostic = if executable {
                    Diagnostic::error(Code::Unreachable, message)
                } else {
                    Diagnostic::warning(Code::Unreachable, message)
                };
                self.push(diagnostic.on(&node.id).at(node.pos));
            }
        }
        self.diagnostics.extend(graph.structural_warnings());
    }

    /// Every link throw event needs a link catch event of the same name in its scope.
    fn links(&mut self, scope: &Scope) {
        let link_name = |node: &FlowNode, catch: bool| -> Option<String> {
            let event = node.as_event()?;
            let position_fits = match event.position {
                EventPosition::IntermediateCatch => catch,
                EventPosition::IntermediateThrow => !catch,
                _ => false,
            };
            match event.definition() {
                Some(EventDefinitionKind::Link { name }) if position_fits => name.clone(),
                _ => None,
            }
        };
        let catches: Vec<String> = scope.flow_nodes.iter().filter_map(|node| link_name(node, true)).collect();
        for node in &scope.flow_nodes {
            let Some(name) = link_name(node, false) else { continue };
            if !catches.contains(&name) {
                self.push(
                    Diagnostic::error(
                        Code::DanglingReference,
                        format!(
                            "link throw event '{}' jumps to link '{name}', but no link catch event of that name is in its scope",
                            node.id
                        ),
                    )
                    .on(&node.id)
                    .at(node.pos),
                );
            }
        }
    }

    fn artifacts(&mut self, artifacts: &[Artifact]) {
        for artifact in artifacts {
            if let ArtifactKind::Association { source, target, .. } = &artifact.kind {
                for (field, end) in [("sourceRef", source), ("targetRef", target)] {
                    if self.index.kind(end).is_none() {
                        self.dangling(&artifact.id, artifact.pos, field, end, "element");
                    }
                }
            }
        }
    }

    fn lanes(&mut self, lane_set: &LaneSet) {
        for lane in &lane_set.lanes {
            for node in &lane.flow_node_refs {
                match self.index.kind(node) {
                    Some(Kind::FlowNode) => {}
                    // Some modellers put data objects in lanes; harmless for execution and rendering.
                    Some(kind) => self.push(
                        Diagnostic::warning(
                            Code::DanglingReference,
                            format!("flowNodeRef '{node}' names a {kind:?}, not a flow node; it is ignored"),
                        )
                        .on(&lane.id)
                        .at(lane.pos),
                    ),
                    None => self.dangling(&lane.id, lane.pos, "flowNodeRef", node, "flow node"),
                }
            }
            if let Some(child) = &lane.child_lane_set {
                self.lanes(child);
            }
        }
    }

    fn collaborations(&mut self) {
        for collaboration in &self.definitions.collaborations {
            for participant in &collaboration.participants {
                if let Some(process) = &participant.process_ref {
                    self.reference(
                        &participant.id,
                        participant.pos,
                        "processRef",
                        process,
                        &[Kind::Process],
                        "process",
                    );
                }
            }
            for flow in &collaboration.message_flows {
                let ends = [Kind::FlowNode, Kind::Participant];
                self.reference(
                    &flow.id,
                    flow.pos,
                    "sourceRef",
                    &flow.source,
                    &ends,
                    "flow node or participant",
                );
                self.reference(
                    &flow.id,
                    flow.pos,
                    "targetRef",
                    &flow.target,
                    &ends,
                    "flow node or participant",
                );
                if let Some(message) = &flow.message_ref {
                    self.reference(&flow.id, flow.pos, "messageRef", message, &[Kind::Message], "message");
                }
            }
            self.artifacts(&collaboration.artifacts);
        }
    }

    fn diagrams(&mut self) {
        let mut pending = Vec::new();
        for diagram in &self.definitions.diagrams {
            for plane in &diagram.planes {
                let items = plane
                    .shapes
                    .iter()
                    .map(|shape| (shape.bpmn_element.as_ref(), shape.id.as_ref(), shape.pos))
                    .chain(
                        plane
                            .edges
                            .iter()
                            .map(|edge| (edge.bpmn_element.as_ref(), edge.id.as_ref(), edge.pos)),
                    );
                for (element, id, pos) in items {
                    if let Some(element) = element {
                        if self.index.kind(element).is_none() {
                            pending.push((element.clone(), id.cloned(), pos));
                        }
                    }
                }
            }
        }
        for (element, id, pos) in pending {
            let mut diagnostic = Diagnostic::warning(
                Code::DanglingReference,
                format!(
                    "diagram element draws '{element}', which is not in this file; it will not be rendered"
                ),
            )
            .at(pos);
            if let Some(id) = id {
                diagnostic = diagnostic.on(&id);
            }
            self.push(diagnostic);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // model rules for one flow node

    fn flow_node(
        &mut self,
        process: &Process,
        scope: &Scope,
        scope_kind: ScopeKind,
        node: &'a FlowNode,
        outgoing: &[&SequenceFlow],
        local: &HashMap<&str, &FlowNode>,
    ) {
        if let Some(default) = node.default_flow() {
            match scope.sequence_flow(default) {
                Some(flow) if flow.source == node.id => {
                    if flow.condition.is_some() && process.is_executable {
                        self.push(
                            Diagnostic::warning(
                                Code::InvalidDefaultFlow,
                                format!("default flow '{default}' has a condition, which is ignored"),
                            )
                            .on(&node.id)
                            .at(node.pos),
                        );
                    }
                }
                Some(_) => self.push(
                    Diagnostic::error(
                        Code::InvalidDefaultFlow,
                        format!("default flow '{default}' does not leave {} '{}'", node.type_name(), node.id),
                    )
                    .on(&node.id)
                    .at(node.pos),
                ),
                None => self.reference(
                    &node.id,
                    node.pos,
                    "default",
                    default,
                    &[Kind::SequenceFlow],
                    "sequence flow",
                ),
            }
        }

        if let FlowNodeKind::Event(event) = &node.kind {
            if let EventPosition::Boundary { attached_to, .. } = &event.position {
                match local.get(attached_to.as_str()) {
                    Some(host) if host.as_activity().is_some() => {}
                    Some(host) => self.push(
                        Diagnostic::error(
                            Code::BoundaryOnNonActivity,
                            format!(
                                "boundary event is attached to {} '{}'; boundary events attach to activities only",
                                host.type_name(),
                                host.id
                            ),
                        )
                        .on(&node.id)
                        .at(node.pos),
                    ),
                    None => match self.index.flow_nodes.get(attached_to.as_str()) {
                        Some(_) => self.push(
                            Diagnostic::error(
                                Code::CrossScopeFlow,
                                format!("boundary event is attached to '{attached_to}', which is in another scope"),
                            )
                            .on(&node.id)
                            .at(node.pos),
                        ),
                        None => self.dangling(&node.id, node.pos, "attachedToRef", attached_to, "activity"),
                    },
                }
            }
            self.event_definitions(node, event, scope_kind);
        }

        match &node.kind {
            FlowNodeKind::Activity(Activity {
                kind:
                    ActivityKind::Task(
                        TaskKind::Send { message_ref: Some(message) }
                        | TaskKind::Receive { message_ref: Some(message), .. },
                    ),
                ..
            }) => {
                self.reference(&node.id, node.pos, "messageRef", message, &[Kind::Message], "message");
            }
            FlowNodeKind::Activity(Activity { kind: ActivityKind::CallActivity(call), .. }) => {
                if let Some(called) = &call.called_element {
                    let called = called.rsplit(':').next().unwrap_or(called);
                    if self.index.kind(&ElementId::from(called)).is_none() {
                        self.push(
                            Diagnostic::warning(
                                Code::DanglingReference,
                                format!(
                                    "calledElement '{called}' is not defined in this file; it must be deployed \
                                     before this call activity runs"
                                ),
                            )
                            .on(&node.id)
                            .at(node.pos),
                        );
                    }
                }
            }
            _ => {}
        }

        for association in &node.data_associations {
            let ends = association
                .sources
                .iter()
                .map(|s| ("sourceRef", s))
                .chain(association.target.iter().map(|t| ("targetRef", t)));
            for (field, end) in ends {
                if self.index.kind(end).is_none() {
                    self.dangling(&node.id, association.pos, field, end, "data element");
                }
            }
        }

        // Flows with a dangling target still leave the node (BPMN0007 reports the target).
        let declares_outgoing = scope.sequence_flows.iter().any(|flow| flow.source == node.id);
        if !declares_outgoing && outgoing.is_empty() && scope_kind != ScopeKind::AdHoc && needs_outgoing(node)
        {
            self.push(
                Diagnostic::warning(
                    Code::NoOutgoing,
                    format!(
                        "{} '{}' has no outgoing sequence flow; its path ends here (use an end event to say so)",
                        node.type_name(),
                        node.id
                    ),
                )
                .on(&node.id)
                .at(node.pos),
            );
        }
    }

    fn event_definitions(&mut self, node: &FlowNode, event: &Event, scope_kind: ScopeKind) {
        for definition in &event.definitions {
            let pos = definition.pos;
            match &definition.kind {
                EventDefinitionKind::Message { message_ref: Some(target) } => {
                    self.reference(&node.id, pos, "messageRef", target, &[Kind::Message], "message")
                }
                EventDefinitionKind::Signal { signal_ref: Some(target) } => {
                    self.reference(&node.id, pos, "signalRef", target, &[Kind::Signal], "signal")
                }
                EventDefinitionKind::Error { error_ref: Some(target) } => {
                    self.reference(&node.id, pos, "errorRef", target, &[Kind::Error], "error")
                }
                EventDefinitionKind::Escalation { escalation_ref: Some(target) } => {
                    self.reference(&node.id, pos, "escalationRef", target, &[Kind::Escalation], "escalation")
                }
                EventDefinitionKind::Compensate { activity_ref: Some(target), .. } => {
                    self.reference(&node.id, pos, "activityRef", target, &[Kind::FlowNode], "activity")
                }
                _ => {}
            }
            let misplaced = misplaced_definition(&event.position, &definition.kind, scope_kind).or(
                match (&event.position, &definition.kind) {
                    (EventPosition::Start { interrupting: false }, EventDefinitionKind::Error { .. }) => {
                        Some("an error start event always interrupts (isInterrupting must be true)")
                    }
                    (
                        EventPosition::Boundary { cancel_activity: false, .. },
                        EventDefinitionKind::Error { .. } | EventDefinitionKind::Cancel,
                    ) => Some(
                        "error and cancel boundary events always interrupt (cancelActivity must be true)",
                    ),
                    (EventPosition::End | EventPosition::Boundary { .. }, EventDefinitionKind::Cancel)
                        if scope_kind != ScopeKind::Transaction
                            && !matches!(event.position, EventPosition::Boundary { .. }) =>
                    {
                        Some("cancel end events belong inside a transaction sub-process")
                    }
                    _ => None,
                },
            );
            if let Some(reason) = misplaced {
                self.push(
                    Diagnostic::error(
                        Code::InvalidEventDefinition,
                        format!(
                            "{} cannot be used on {}: {reason}",
                            definition.kind.type_name(),
                            node.type_name()
                        ),
                    )
                    .on(&node.id)
                    .at(pos),
                );
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // execution rules (executable processes only)

    fn execution(
        &mut self,
        process: &Process,
        scope_kind: ScopeKind,
        node: &'a FlowNode,
        outgoing: &[&SequenceFlow],
        local: &HashMap<&str, &FlowNode>,
    ) {
        if let Some(reason) = support::unsupported_reason(node) {
            self.push(
                Diagnostic::error(
                    Code::Unsupported,
                    format!(
                        "{} '{}' cannot run in executable process '{}': {reason}",
                        node.type_name(),
                        node.id,
                        process.id
                    ),
                )
                .on(&node.id)
                .at(node.pos),
            );
        }
        self.zeebe(node);
        match &node.kind {
            FlowNodeKind::Gateway(gateway) => self.gateway(node, gateway, outgoing, local),
            FlowNodeKind::Activity(activity) => self.activity(node, activity),
            FlowNodeKind::Event(event) => self.event(node, event, scope_kind),
        }
    }

    fn gateway(
        &mut self,
        node: &FlowNode,
        gateway: &Gateway,
        outgoing: &[&SequenceFlow],
        local: &HashMap<&str, &FlowNode>,
    ) {
        match gateway.kind {
            GatewayKind::Exclusive | GatewayKind::Inclusive if outgoing.len() > 1 => {
                let unconditioned: Vec<String> = outgoing
                    .iter()
                    .filter(|flow| {
                        flow.condition.is_none() && gateway.default_flow.as_ref() != Some(&flow.id)
                    })
                    .map(|flow| format!("'{}'", flow.id))
                    .collect();
                if !unconditioned.is_empty() {
                    let (subject, verb) = match unconditioned.len() {
                        1 => ("flow", "has"),
                        _ => ("flows", "have"),
                    };
                    self.push(
                        Diagnostic::error(
                            Code::MissingCondition,
                            format!(
                                "{} '{}' has {} outgoing flows, but {subject} {} {verb} no condition and {} not the \
                                 default flow: add conditions (e.g. '=age >= 18') or mark one flow as the default",
                                node.type_name(),
                                node.id,
                                outgoing.len(),
                                unconditioned.join(", "),
                                if unconditioned.len() == 1 { "is" } else { "are" },
                            ),
                        )
                        .on(&node.id)
                        .at(node.pos),
                    );
                }
            }
            GatewayKind::EventBased { .. } => {
                if outgoing.len() < 2 {
                    self.push(
                        Diagnostic::error(
                            Code::InvalidEventGateway,
                            format!("event-based gateway '{}' needs at least two outgoing flows", node.id),
                        )
                        .on(&node.id)
                        .at(node.pos),
                    );
                }
                for flow in outgoing {
                    let Some(target) = local.get(flow.target.as_str()) else { continue };
                    let fits = match &target.kind {
                        FlowNodeKind::Event(Event {
                            position: EventPosition::IntermediateCatch,
                            definitions,
                            ..
                        }) => {
                            matches!(
                                definitions.as_slice(),
                                [EventDefinition {
                                    kind: EventDefinitionKind::Message { .. }
                                        | EventDefinitionKind::Timer(_)
                                        | EventDefinitionKind::Signal { .. },
                                    ..
                                }]
                            )
                        }
                        FlowNodeKind::Activity(Activity {
                            kind: ActivityKind::Task(TaskKind::Receive { .. }),
                            ..
                        }) => true,
                        _ => false,
                    };
                    if !fits {
                        self.push(
                            Diagnostic::error(
                                Code::InvalidEventGateway,
                                format!(
                                    "event-based gateway '{}' leads to {} '{}'; it may only lead to message, timer or \
                                     signal catch events and receive tasks",
                                    node.id,
                                    target.type_name(),
                                    target.id
                                ),
                            )
                            .on(&node.id)
                            .at(node.pos),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn activity(&mut self, node: &FlowNode, activity: &Activity) {
        let zeebe = &node.extensions.zeebe;
        match &activity.kind {
            ActivityKind::Task(TaskKind::Service { .. } | TaskKind::Send { .. }) => self.job_type(node),
            ActivityKind::Task(TaskKind::BusinessRule { .. })
                if zeebe.called_decision.is_none() && zeebe.task_definition.is_none() =>
            {
                self.push(
                        Diagnostic::error(
                            Code::MissingDecision,
                            format!(
                                "business rule task '{}' needs a zeebe:calledDecision (decisionId, resultVariable) \
                                 or a zeebe:taskDefinition",
                                node.id
                            ),
                        )
                        .on(&node.id)
                        .at(node.pos),
                    );
            }
            ActivityKind::Task(TaskKind::Script { .. })
                if zeebe.script.is_none() && zeebe.task_definition.is_none() =>
            {
                self.push(
                    Diagnostic::error(
                        Code::MissingDecision,
                        format!(
                            "script task '{}' needs a zeebe:script (FEEL expression, resultVariable) or a \
                                 zeebe:taskDefinition",
                            node.id
                        ),
                    )
                    .on(&node.id)
                    .at(node.pos),
                );
            }
            ActivityKind::Task(TaskKind::Receive { message_ref, .. }) => {
                self.message(node, message_ref.as_ref(), true, node.pos);
            }
            ActivityKind::CallActivity(call) => {
                let zeebe_id =
                    zeebe.called_element.as_ref().map(|called| called.process_id.as_str()).unwrap_or("");
                if zeebe_id.is_empty() && call.called_element.is_none() {
                    self.push(
                        Diagnostic::error(
                            Code::MissingCalledElement,
                            format!(
                                "call activity '{}' names no process: add zeebe:calledElement processId",
                                node.id
                            ),
                        )
                        .on(&node.id)
                        .at(node.pos),
                    );
                }
            }
            _ => {}
        }
        match &activity.loop_characteristics {
            Some(LoopCharacteristics::MultiInstance(multi)) => {
                let has_collection = multi.zeebe.as_ref().is_some_and(|z| z.input_collection.is_some());
                if !has_collection && multi.loop_cardinality.is_none() {
                    self.push(
                        Diagnostic::error(
                            Code::InvalidMultiInstance,
                            format!(
                                "multi-instance '{}' has neither zeebe:loopCharacteristics inputCollection nor a \
                                 loopCardinality, so the number of instances is unknown",
                                node.id
                            ),
                        )
                        .on(&node.id)
                        .at(multi.pos),
                    );
                }
                if let Some(cardinality) = &multi.loop_cardinality {
                    self.feel_or_literal(&node.id, "loopCardinality", &cardinality.text, cardinality.pos);
                }
                if let Some(condition) = &multi.completion_condition {
                    self.feel_required(&node.id, "completionCondition", &condition.text, condition.pos);
                }
                if let Some(zeebe_loop) = &multi.zeebe {
                    if let Some(collection) = &zeebe_loop.input_collection {
                        self.feel_required(&node.id, "inputCollection", collection, zeebe_loop.pos);
                    }
                    if let Some(element) = &zeebe_loop.output_element {
                        self.feel_required(&node.id, "outputElement", element, zeebe_loop.pos);
                    }
                    for (field, name) in [
                        ("inputElement", &zeebe_loop.input_element),
                        ("outputCollection", &zeebe_loop.output_collection),
                    ] {
                        if let Some(name) = name {
                            self.variable_name(&node.id, field, name, zeebe_loop.pos);
                        }
                    }
                }
            }
            Some(LoopCharacteristics::Standard(standard)) => {
                if let Some(condition) = &standard.loop_condition {
                    self.feel_required(&node.id, "loopCondition", &condition.text, condition.pos);
                }
            }
            None => {}
        }
    }

    fn event(&mut self, node: &FlowNode, event: &Event, scope_kind: ScopeKind) {
        let Some(definition) = event.definitions.first() else { return };
        let is_throw = matches!(event.position, EventPosition::End | EventPosition::IntermediateThrow);
        let is_process_start =
            matches!(event.position, EventPosition::Start { .. }) && scope_kind == ScopeKind::Process;
        match &definition.kind {
            EventDefinitionKind::Message { message_ref } => {
                if is_throw {
                    self.job_type(node);
                } else {
                    self.message(node, message_ref.as_ref(), !is_process_start, definition.pos);
                }
            }
            EventDefinitionKind::Timer(timer) => self.timer(node, event, timer, definition.pos),
            EventDefinitionKind::Signal { signal_ref } => match signal_ref {
                None => self.missing_reference(node, definition, "signalRef", "a signal to throw or catch"),
                Some(signal) => {
                    let named = self.definitions.signal(signal).is_some_and(|signal| signal.name.is_some());
                    if !named && self.definitions.signal(signal).is_some() {
                        self.push(
                            Diagnostic::error(
                                Code::MissingReference,
                                format!("signal '{signal}' has no name"),
                            )
                            .on(&node.id)
                            .at(definition.pos),
                        );
                    }
                }
            },
            EventDefinitionKind::Error { error_ref } if is_throw => {
                let code = error_ref
                    .as_ref()
                    .and_then(|error| self.definitions.error(error))
                    .and_then(|e| e.error_code.as_ref());
                if code.is_none() {
                    self.missing_reference(
                        node,
                        definition,
                        "errorRef",
                        "an error with an errorCode to throw",
                    );
                }
            }
            EventDefinitionKind::Escalation { escalation_ref } if is_throw => {
                let code = escalation_ref
                    .as_ref()
                    .and_then(|escalation| self.definitions.escalation(escalation))
                    .and_then(|e| e.escalation_code.as_ref());
                if code.is_none() {
                    self.missing_reference(
                        node,
                        definition,
                        "escalationRef",
                        "an escalation with an escalationCode to throw",
                    );
                }
            }
            EventDefinitionKind::Link { name: None } => {
                self.missing_reference(
                    node,
                    definition,
                    "name",
                    "a link name shared by the throw and catch events",
                );
            }
            _ => {}
        }
    }

    fn missing_reference(&mut self, node: &FlowNode, definition: &EventDefinition, field: &str, what: &str) {
        self.push(
            Diagnostic::error(
                Code::MissingReference,
                format!("{} '{}' needs {what} ({field})", node.type_name(), node.id),
            )
            .on(&node.id)
            .at(definition.pos),
        );
    }

    fn job_type(&mut self, node: &FlowNode) {
        match &node.extensions.zeebe.task_definition {
            None => self.push(
                Diagnostic::error(
                    Code::MissingTaskType,
                    format!(
                        "{} '{}' has no zeebe:taskDefinition type, so no connector or worker can run it",
                        node.type_name(),
                        node.id
                    ),
                )
                .on(&node.id)
                .at(node.pos),
            ),
            Some(definition) => {
                self.feel_or_literal(&node.id, "taskDefinition type", &definition.job_type, definition.pos);
                if let Some(retries) = &definition.retries {
                    match Value::classify(retries) {
                        Value::Feel(_) => self.feel_or_literal(&node.id, "retries", retries, definition.pos),
                        Value::Literal(text) => {
                            if text.trim().parse::<u32>().is_err() {
                                self.push(
                                    Diagnostic::error(
                                        Code::InvalidAttribute,
                                        format!("retries must be a whole number or FEEL, not '{text}'"),
                                    )
                                    .on(&node.id)
                                    .at(definition.pos),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn message(&mut self, node: &FlowNode, message_ref: Option<&ElementId>, needs_key: bool, pos: Position) {
        let Some(message_ref) = message_ref else {
            self.push(
                Diagnostic::error(
                    Code::MissingMessage,
                    format!("{} '{}' names no message (messageRef)", node.type_name(), node.id),
                )
                .on(&node.id)
                .at(pos),
            );
            return;
        };
        let Some(message) = self.definitions.message(message_ref) else { return };
        match &message.name {
            None => self.push(
                Diagnostic::error(
                    Code::MissingMessage,
                    format!("message '{}' used by '{}' has no name to correlate on", message.id, node.id),
                )
                .on(&node.id)
                .at(pos),
            ),
            Some(name) => self.feel_or_literal(&message.id, "message name", name, message.pos),
        }
        match &message.extensions.zeebe.subscription {
            Some(subscription) => {
                self.feel_or_literal(&message.id, "correlationKey", &subscription.correlation_key, subscription.pos)
            }
            None if needs_key => self.push(
                Diagnostic::error(
                    Code::MissingMessage,
                    format!(
                        "message '{}' caught by '{}' has no zeebe:subscription correlationKey, so a published \
                         message cannot be matched to an instance",
                        message.id, node.id
                    ),
                )
                .on(&node.id)
                .at(pos),
            ),
            None => {}
        }
    }

    fn timer(&mut self, node: &FlowNode, event: &Event, definition: &TimerDefinition, pos: Position) {
        let (what, expression) = match definition {
            TimerDefinition::Date(expression) => ("timeDate", expression),
            TimerDefinition::Duration(expression) => ("timeDuration", expression),
            TimerDefinition::Cycle(expression) => ("timeCycle", expression),
            TimerDefinition::Unspecified => {
                self.push(
                    Diagnostic::error(
                        Code::InvalidTimer,
                        format!("timer '{}' has no timeDate, timeDuration or timeCycle", node.id),
                    )
                    .on(&node.id)
                    .at(pos),
                );
                return;
            }
        };
        let is_cycle = matches!(definition, TimerDefinition::Cycle(_));
        let cycle_allowed = match &event.position {
            EventPosition::Start { .. } => true,
            EventPosition::Boundary { cancel_activity, .. } => !cancel_activity,
            _ => false,
        };
        if is_cycle && !cycle_allowed {
            self.push(
                Diagnostic::error(
                    Code::InvalidTimer,
                    format!(
                        "{} '{}' cannot use a timeCycle; cycles are for timer start events and non-interrupting \
                         boundary events (use timeDuration or timeDate)",
                        node.type_name(),
                        node.id
                    ),
                )
                .on(&node.id)
                .at(expression.pos),
            );
        }
        let text = expression.text.as_str();
        if let Value::Feel(body) = Value::classify(text) {
            if let Err(error) = self.parse_feel(body) {
                self.push(
                    Diagnostic::error(Code::InvalidFeel, format!("{what}: {error}"))
                        .on(&node.id)
                        .at(expression.pos),
                );
            }
            return;
        }
        let result = match definition {
            TimerDefinition::Date(_) => timer::parse_date_time(text).map(|_| ()),
            TimerDefinition::Duration(_) => timer::IsoDuration::parse(text).map(|_| ()),
            _ => timer::Cycle::parse(text).map(|_| ()),
        };
        if let Err(error) = result {
            // The timer error names the text; say which field only when it does not.
            let message = error.to_string();
            let message = if message.contains(what) { message } else { format!("{what}: {message}") };
            self.push(Diagnostic::error(Code::InvalidTimer, message).on(&node.id).at(expression.pos));
        }
    }

    /// Every FEEL-bearing zeebe attribute of `node`.
    fn zeebe(&mut self, node: &FlowNode) {
        let zeebe = &node.extensions.zeebe;
        if let Some(mapping) = &zeebe.io_mapping {
            for (direction, items) in [("input", &mapping.inputs), ("output", &mapping.outputs)] {
                for item in items {
                    if item.source.trim().is_empty() {
                        self.push(
                            Diagnostic::error(
                                Code::InvalidMapping,
                                format!("{direction} mapping to '{}' has no source", item.target),
                            )
                            .on(&node.id)
                            .at(item.pos),
                        );
                    } else {
                        self.feel_or_literal(
                            &node.id,
                            &format!("{direction} mapping source"),
                            &item.source,
                            item.pos,
                        );
                    }
                    self.variable_path(
                        &node.id,
                        &format!("{direction} mapping target"),
                        &item.target,
                        item.pos,
                    );
                }
            }
        }
        if let Some(called) = &zeebe.called_element {
            if !called.process_id.is_empty() {
                self.feel_or_literal(&node.id, "calledElement processId", &called.process_id, called.pos);
            }
        }
        if let Some(decision) = &zeebe.called_decision {
            self.feel_or_literal(&node.id, "calledDecision decisionId", &decision.decision_id, decision.pos);
            self.variable_name(&node.id, "resultVariable", &decision.result_variable, decision.pos);
        }
        if let Some(script) = &zeebe.script {
            self.feel_required(&node.id, "script expression", &script.expression, script.pos);
            self.variable_name(&node.id, "resultVariable", &script.result_variable, script.pos);
        }
        if let Some(assignment) = &zeebe.assignment_definition {
            for (field, value) in [
                ("assignee", &assignment.assignee),
                ("candidateGroups", &assignment.candidate_groups),
                ("candidateUsers", &assignment.candidate_users),
            ] {
                if let Some(value) = value {
                    self.feel_or_literal(&node.id, field, value, assignment.pos);
                }
            }
        }
        if let Some(schedule) = &zeebe.task_schedule {
            for (field, value) in
                [("dueDate", &schedule.due_date), ("followUpDate", &schedule.follow_up_date)]
            {
                if let Some(value) = value {
                    self.feel_or_literal(&node.id, field, value, schedule.pos);
                }
            }
        }
    }

    fn condition(&mut self, flow_id: &ElementId, condition: &Expression) {
        if let Some(language) = &condition.language {
            let lower = language.to_ascii_lowercase();
            if !(lower.contains("feel") || lower == "http://www.omg.org/spec/feel/20140401") {
                self.push(
                    Diagnostic::error(
                        Code::InvalidFeel,
                        format!(
                            "condition language '{language}' is not supported; govflow conditions are FEEL"
                        ),
                    )
                    .on(flow_id)
                    .at(condition.pos),
                );
                return;
            }
        }
        self.feel_required(flow_id, "condition", &condition.text, condition.pos);
    }

    /// A value that must be a FEEL expression (`=...`).
    fn feel_required(&mut self, owner: &ElementId, field: &str, text: &str, pos: Position) {
        match Value::classify(text) {
            Value::Feel(body) => {
                if let Err(error) = self.parse_feel(body) {
                    self.push(
                        Diagnostic::error(Code::InvalidFeel, format!("{field}: {error}")).on(owner).at(pos),
                    );
                }
            }
            Value::Literal(literal) => {
                // Zeebe accepts a few of these without '=' and treats them as FEEL; we keep the rule simple:
                // a missing '=' is reported, with the fix, unless the text itself parses as FEEL.
                if self.parse_feel(literal).is_err() || literal.trim().is_empty() {
                    self.push(
                        Diagnostic::error(
                            Code::InvalidFeel,
                            format!("{field} '{literal}' must be a FEEL expression written '=...'"),
                        )
                        .on(owner)
                        .at(pos),
                    );
                } else {
                    self.push(
                        Diagnostic::warning(
                            Code::InvalidFeel,
                            format!("{field} '{literal}' is read as FEEL; write it as '={literal}' to make that explicit"),
                        )
                        .on(owner)
                        .at(pos),
                    );
                }
            }
        }
    }

    /// A value that is FEEL when it starts with `=` and a literal otherwise.
    fn feel_or_literal(&mut self, owner: &ElementId, field: &str, text: &str, pos: Position) {
        let checked = match Value::classify(text) {
            Value::Feel(body) => self.parse_feel(body),
            Value::Literal(_) => Ok(()),
        };
        if let Err(error) = checked {
            self.push(Diagnostic::error(Code::InvalidFeel, format!("{field}: {error}")).on(owner).at(pos));
        }
    }

    fn variable_name(&mut self, owner: &ElementId, field: &str, name: &str, pos: Position) {
        if !is_identifier(name) {
            self.push(
                Diagnostic::error(
                    Code::InvalidMapping,
                    format!("{field} '{name}' is not a valid variable name (letters, digits, '_', not starting with a digit)"),
                )
                .on(owner)
                .at(pos),
            );
        }
    }

    fn variable_path(&mut self, owner: &ElementId, field: &str, path: &str, pos: Position) {
        if !path.split('.').all(is_identifier) {
            self.push(
                Diagnostic::error(
                    Code::InvalidMapping,
                    format!(
                        "{field} '{path}' is not a variable name or dotted path such as 'applicant.address'"
                    ),
                )
                .on(owner)
                .at(pos),
            );
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// Nodes that should have an outgoing sequence flow (a warning when they have none).
fn needs_outgoing(node: &FlowNode) -> bool {
    match &node.kind {
        FlowNodeKind::Event(event) => match &event.position {
            EventPosition::End => false,
            EventPosition::IntermediateThrow => {
                !matches!(event.definition(), Some(EventDefinitionKind::Link { .. }))
            }
            EventPosition::Boundary { .. } => {
                !matches!(event.definition(), Some(EventDefinitionKind::Compensate { .. }))
            }
            _ => true,
        },
        FlowNodeKind::Activity(activity) => {
            !activity.is_for_compensation
                && !matches!(
                    activity.kind,
                    ActivityKind::SubProcess(SubProcess { kind: SubProcessKind::Event, .. })
                )
        }
        FlowNodeKind::Gateway(_) => true,
    }
}

/// Why an event definition does not fit where it is used (BPMN 2.0.2 §10.5, tables 10.84–10.93).
fn misplaced_definition(
    position: &EventPosition,
    kind: &EventDefinitionKind,
    scope_kind: ScopeKind,
) -> Option<&'static str> {
    use EventDefinitionKind as K;
    match position {
        EventPosition::Start { .. } => match kind {
            K::Message { .. } | K::Timer(_) | K::Signal { .. } | K::Conditional { .. } => {
                (scope_kind == ScopeKind::Embedded).then_some("a start event of an embedded sub-process must be a none start event")
            }
            K::Error { .. } | K::Escalation { .. } | K::Compensate { .. } => (scope_kind != ScopeKind::EventSubProcess)
                .then_some("error, escalation and compensation start events belong in event sub-processes"),
            _ => Some("start events are none, message, timer, signal or conditional (plus error, escalation, compensation in event sub-processes)"),
        },
        EventPosition::End => match kind {
            K::Timer(_) | K::Conditional { .. } | K::Link { .. } => Some("an end event only throws"),
            _ => None,
        },
        EventPosition::IntermediateCatch => match kind {
            K::Message { .. } | K::Timer(_) | K::Signal { .. } | K::Conditional { .. } | K::Link { .. } => None,
            _ => Some("intermediate catch events are message, timer, signal, conditional or link events"),
        },
        EventPosition::IntermediateThrow => match kind {
            K::Message { .. } | K::Signal { .. } | K::Escalation { .. } | K::Link { .. } | K::Compensate { .. } => None,
            _ => Some("intermediate throw events are none, message, signal, escalation, link or compensation events"),
        },
        EventPosition::Boundary { .. } => match kind {
            K::Link { .. } | K::Terminate => Some("boundary events cannot be link or terminate events"),
            _ => None,
        },
    }
}
