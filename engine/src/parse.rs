//! The BPMN reader: XML tree → typed [`Definitions`]. Elements are matched by namespace URI, never by
//! prefix (`bpmn:`, `bpmn2:`, `semantic:` and the default namespace all work). It records what the file
//! says and the problems of form it finds (missing or malformed attributes, duplicate ids, unknown
//! elements); judging the model (references, reachability, FEEL, execution readiness) is `validate`'s
//! job. It never panics and never drops an element silently: what it does not model it keeps.

use std::collections::HashMap;

use crate::diagnostics::{Code, Diagnostic};
use crate::model::*;
use crate::xml::{self, Limits, Node};

pub const BPMN_NS: &str = "http://www.omg.org/spec/BPMN/20100524/MODEL";
pub const BPMNDI_NS: &str = "http://www.omg.org/spec/BPMN/20100524/DI";
pub const DC_NS: &str = "http://www.omg.org/spec/DD/20100524/DC";
pub const DI_NS: &str = "http://www.omg.org/spec/DD/20100524/DI";
pub const ZEEBE_NS: &str = "http://camunda.org/schema/zeebe/1.0";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// What parsing produced: the model when one could be built, and every diagnostic found on the way.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub definitions: Option<Definitions>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses a BPMN file with the default [`Limits`]. Only reads form; see [`crate::check`] for parse +
/// validate.
pub fn parse(bytes: &[u8]) -> Parsed {
    parse_with(bytes, Limits::default())
}

pub fn parse_with(bytes: &[u8], limits: Limits) -> Parsed {
    let mut diagnostics = Vec::new();
    let Some(root) = xml::read(bytes, limits, &mut diagnostics) else {
        return Parsed { definitions: None, diagnostics };
    };
    if !root.is(BPMN_NS, "definitions") {
        let found = match &root.ns {
            Some(ns) => format!("<{}> in namespace '{ns}'", root.local),
            None => format!("<{}> in no namespace", root.qname),
        };
        diagnostics.push(
            Diagnostic::error(
                Code::NotBpmn,
                format!(
                    "not a BPMN 2.0 file: the root element is {found}, expected <definitions> in '{BPMN_NS}'"
                ),
            )
            .at(root.pos),
        );
        return Parsed { definitions: None, diagnostics };
    }
    let mut reader = Reader { diagnostics, ids: HashMap::new(), scope_depth: 0 };
    reader.collect_ids(&root);
    let definitions = reader.definitions(&root);
    Parsed { definitions: Some(definitions), diagnostics: reader.diagnostics }
}

struct Reader {
    diagnostics: Vec<Diagnostic>,
    /// Every BPMN/DI id seen, with the position of its first use (for BPMN0006).
    ids: HashMap<String, Position>,
    /// How many sub-processes enclose the scope being read.
    scope_depth: usize,
}

/// Deepest accepted nesting of sub-processes. Every stage (reader, validator, compiler, outline) walks
/// scopes recursively; this bound keeps their stacks small whatever the file (real models nest a few).
pub const MAX_SCOPE_DEPTH: usize = 32;

/// BPMN elements govflow knows but does not model; kept in `unknown` without a warning.
const KNOWN_UNMODELLED: &[&str] = &[
    "ioSpecification",
    "ioBinding",
    "property",
    "monitoring",
    "auditing",
    "performer",
    "humanPerformer",
    "potentialOwner",
    "resourceRole",
    "supportedInterfaceRef",
    "correlationSubscription",
    "rendering",
    "dataInput",
    "dataOutput",
    "inputSet",
    "outputSet",
    "dataState",
    "categoryValue",
    "eventDefinitionRef",
    "correlationKey",
    "conversation",
    "subConversation",
    "callConversation",
    "conversationLink",
    "conversationAssociation",
    "participantAssociation",
    "messageFlowAssociation",
    "correlationProperty",
    "interface",
    "category",
    "resource",
    "partnerEntity",
    "partnerRole",
    "globalTask",
    "globalUserTask",
    "globalScriptTask",
    "globalManualTask",
    "globalBusinessRuleTask",
    "choreography",
    "globalChoreographyTask",
    "globalConversation",
    "endPoint",
    "import",
    "extension",
    "relationship",
    "messageEventDefinition",
    "timerEventDefinition",
    "signalEventDefinition",
    "errorEventDefinition",
    "escalationEventDefinition",
    "conditionalEventDefinition",
    "linkEventDefinition",
    "compensateEventDefinition",
    "cancelEventDefinition",
    "terminateEventDefinition",
    "choreographyTask",
    "subChoreography",
    "callChoreography",
    "implicitThrowEvent",
];

impl Reader {
    fn collect_ids(&mut self, node: &Node) {
        let own_namespace = matches!(node.ns.as_deref(), Some(BPMN_NS | BPMNDI_NS | DC_NS | DI_NS));
        if own_namespace {
            if let Some(id) = node.attr("id").filter(|id| !id.is_empty()) {
                if let Some(first) = self.ids.get(id) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::DuplicateId,
                            format!("id '{id}' is already used by the element at {first}"),
                        )
                        .on(&ElementId::from(id))
                        .at(node.pos),
                    );
                } else {
                    self.ids.insert(id.to_owned(), node.pos);
                }
            }
        }
        for child in &node.children {
            // Extension elements live in their own id space.
            if !child.is(BPMN_NS, "extensionElements") {
                self.collect_ids(child);
            }
        }
    }

    // -------------------------------------------------------------------------------------------
    // attribute helpers

    fn id(&mut self, node: &Node) -> Option<ElementId> {
        match node.attr("id").map(str::trim).filter(|id| !id.is_empty()) {
            Some(id) => Some(ElementId::from(id)),
            None => {
                self.diagnostics.push(
                    Diagnostic::error(Code::MissingAttribute, format!("<{}> has no 'id'", node.local))
                        .at(node.pos),
                );
                None
            }
        }
    }

    fn bool_attr(&mut self, node: &Node, name: &str, default: bool) -> bool {
        match node.attr(name).map(str::trim) {
            None => default,
            Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(other) => {
                let mut diagnostic = Diagnostic::error(
                    Code::InvalidAttribute,
                    format!("'{name}' of <{}> must be true or false, not '{other}'", node.local),
                )
                .at(node.pos);
                if let Some(id) = node.attr("id") {
                    diagnostic = diagnostic.on(&ElementId::from(id));
                }
                self.diagnostics.push(diagnostic);
                default
            }
        }
    }

    fn required_ref(&mut self, node: &Node, owner: &ElementId, name: &str) -> Option<ElementId> {
        let reference = reference(node.attr(name));
        if reference.is_none() {
            self.diagnostics.push(
                Diagnostic::error(Code::MissingAttribute, format!("<{}> has no '{name}'", node.local))
                    .on(owner)
                    .at(node.pos),
            );
        }
        reference
    }

    fn zeebe_attr(&mut self, node: &Node, owner: Option<&ElementId>, name: &str) -> Option<String> {
        let value = node.attr(name).map(str::trim).filter(|value| !value.is_empty()).map(str::to_owned);
        if value.is_none() {
            let mut diagnostic =
                Diagnostic::error(Code::MissingAttribute, format!("<{}> has no '{name}'", node.qname))
                    .at(node.pos);
            if let Some(owner) = owner {
                diagnostic = diagnostic.on(owner);
            }
            self.diagnostics.push(diagnostic);
        }
        value
    }

    // -------------------------------------------------------------------------------------------
    // definitions and root elements

    fn definitions(&mut self, root: &Node) -> Definitions {
        let mut definitions = Definitions {
            id: reference(root.attr("id")),
            name: text_attr(root, "name"),
            target_namespace: text_attr(root, "targetNamespace"),
            exporter: text_attr(root, "exporter"),
            exporter_version: text_attr(root, "exporterVersion"),
            ..Definitions::default()
        };
        for child in &root.children {
            if child.is(BPMNDI_NS, "BPMNDiagram") {
                definitions.diagrams.push(self.diagram(child));
                continue;
            }
            if child.ns.as_deref() != Some(BPMN_NS) {
                definitions.other_roots.push(keep(child));
                continue;
            }
            match child.local.as_str() {
                "process" => {
                    if let Some(process) = self.process(child) {
                        definitions.processes.push(process);
                    }
                }
                "collaboration" => {
                    if let Some(collaboration) = self.collaboration(child) {
                        definitions.collaborations.push(collaboration);
                    }
                }
                "message" => {
                    if let Some(id) = self.id(child) {
                        definitions.messages.push(Message {
                            id,
                            name: text_attr(child, "name"),
                            pos: child.pos,
                            item_ref: reference(child.attr("itemRef")),
                            extensions: self.extensions(child, None),
                        });
                    }
                }
                "signal" => {
                    if let Some(id) = self.id(child) {
                        definitions.signals.push(Signal {
                            id,
                            name: text_attr(child, "name"),
                            pos: child.pos,
                        });
                    }
                }
                "error" => {
                    if let Some(id) = self.id(child) {
                        definitions.errors.push(ErrorDefinition {
                            id,
                            name: text_attr(child, "name"),
                            error_code: text_attr(child, "errorCode"),
                            pos: child.pos,
                        });
                    }
                }
                "escalation" => {
                    if let Some(id) = self.id(child) {
                        definitions.escalations.push(Escalation {
                            id,
                            name: text_attr(child, "name"),
                            escalation_code: text_attr(child, "escalationCode"),
                            pos: child.pos,
                        });
                    }
                }
                "dataStore" => {
                    if let Some(id) = self.id(child) {
                        definitions.data_stores.push(DataStore {
                            id,
                            name: text_attr(child, "name"),
                            pos: child.pos,
                        });
                    }
                }
                "itemDefinition" => {
                    if let Some(id) = self.id(child) {
                        let is_collection = self.bool_attr(child, "isCollection", false);
                        definitions.item_definitions.push(ItemDefinition {
                            id,
                            structure_ref: text_attr(child, "structureRef"),
                            is_collection,
                            pos: child.pos,
                        });
                    }
                }
                "extensionElements" => definitions.extensions = self.extensions(root, None),
                "documentation" => {}
                other => {
                    self.unknown_bpmn(child, other);
                    definitions.other_roots.push(keep(child));
                }
            }
        }
        definitions
    }

    fn unknown_bpmn(&mut self, node: &Node, local: &str) {
        if !KNOWN_UNMODELLED.contains(&local) {
            let mut diagnostic = Diagnostic::warning(
                Code::UnknownElement,
                format!("<{}> is not a BPMN 2.0 element govflow knows; it is kept but ignored", node.qname),
            )
            .at(node.pos);
            if let Some(id) = node.attr("id") {
                diagnostic = diagnostic.on(&ElementId::from(id));
            }
            self.diagnostics.push(diagnostic);
        }
    }

    fn process(&mut self, node: &Node) -> Option<Process> {
        let id = self.id(node)?;
        let is_executable = self.bool_attr(node, "isExecutable", false);
        let is_closed = self.bool_attr(node, "isClosed", false);
        let mut process = Process {
            name: text_attr(node, "name"),
            pos: node.pos,
            is_executable,
            is_closed,
            process_type: text_attr(node, "processType"),
            documentation: documentation(node),
            scope: Scope::default(),
            extensions: self.extensions(node, Some(&id)),
            id,
        };
        process.scope = self.scope(node);
        Some(process)
    }

    fn collaboration(&mut self, node: &Node) -> Option<Collaboration> {
        let id = self.id(node)?;
        let mut collaboration = Collaboration {
            id,
            name: text_attr(node, "name"),
            pos: node.pos,
            participants: Vec::new(),
            message_flows: Vec::new(),
            artifacts: Vec::new(),
        };
        for child in bpmn_children(node) {
            match child.local.as_str() {
                "participant" => {
                    if let Some(id) = self.id(child) {
                        collaboration.participants.push(Participant {
                            id,
                            name: text_attr(child, "name"),
                            pos: child.pos,
                            process_ref: reference(child.attr("processRef")),
                        });
                    }
                }
                "messageFlow" => {
                    let Some(id) = self.id(child) else { continue };
                    let source = self.required_ref(child, &id, "sourceRef");
                    let target = self.required_ref(child, &id, "targetRef");
                    if let (Some(source), Some(target)) = (source, target) {
                        collaboration.message_flows.push(MessageFlow {
                            id,
                            name: text_attr(child, "name"),
                            pos: child.pos,
                            source,
                            target,
                            message_ref: reference(child.attr("messageRef")),
                        });
                    }
                }
                "textAnnotation" | "association" | "group" => {
                    if let Some(artifact) = self.artifact(child) {
                        collaboration.artifacts.push(artifact);
                    }
                }
                "documentation" | "extensionElements" => {}
                other => self.unknown_bpmn(child, other),
            }
        }
        Some(collaboration)
    }

    // -------------------------------------------------------------------------------------------
    // scopes and flow nodes

    fn scope(&mut self, node: &Node) -> Scope {
        let mut scope = Scope::default();
        if self.scope_depth >= MAX_SCOPE_DEPTH {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::TooDeep,
                    format!("sub-processes are nested more than {MAX_SCOPE_DEPTH} deep; the inner ones are ignored"),
                )
                .at(node.pos),
            );
            return scope;
        }
        self.scope_depth += 1;
        scope = self.scope_contents(node, scope);
        self.scope_depth -= 1;
        scope
    }

    fn scope_contents(&mut self, node: &Node, mut scope: Scope) -> Scope {
        for child in &node.children {
            if child.ns.as_deref() != Some(BPMN_NS) {
                // Vendor elements placed directly in a process: kept, not judged.
                scope.unknown.push(keep(child));
                continue;
            }
            let local = child.local.as_str();
            match local {
                // The owning element's own children (for sub-processes), read by `flow_node`/`activity`.
                "documentation"
                | "extensionElements"
                | "incoming"
                | "outgoing"
                | "standardLoopCharacteristics"
                | "multiInstanceLoopCharacteristics"
                | "dataInputAssociation"
                | "dataOutputAssociation"
                | "completionCondition"
                | "resourceRole"
                | "performer"
                | "humanPerformer"
                | "potentialOwner"
                | "ioBinding"
                | "auditing"
                | "monitoring"
                | "categoryValueRef"
                | "supportedInterfaceRef"
                | "correlationSubscription" => {}
                "ioSpecification" => {
                    // The scope's own data inputs and outputs: targets of data associations inside it.
                    for io in bpmn_children(child)
                        .filter(|io| matches!(io.local.as_str(), "dataInput" | "dataOutput"))
                    {
                        if let Some(data) = self.data_element(io) {
                            scope.data.push(data);
                        }
                    }
                }
                "sequenceFlow" => {
                    if let Some(flow) = self.sequence_flow(child) {
                        scope.sequence_flows.push(flow);
                    }
                }
                "laneSet" => scope.lane_sets.push(self.lane_set(child)),
                "dataObject" | "dataObjectReference" | "dataStoreReference" | "property" => {
                    if let Some(data) = self.data_element(child) {
                        scope.data.push(data);
                    }
                }
                "textAnnotation" | "association" | "group" => {
                    if let Some(artifact) = self.artifact(child) {
                        scope.artifacts.push(artifact);
                    }
                }
                _ => match self.flow_node(child) {
                    Some(Ok(flow_node)) => scope.flow_nodes.push(flow_node),
                    Some(Err(())) => {}
                    None => {
                        self.unknown_bpmn(child, local);
                        scope.unknown.push(keep(child));
                    }
                },
            }
        }
        scope
    }

    /// `None` when `node` is not a flow node; `Some(Err)` when it is one but unusable (diagnosed).
    fn flow_node(&mut self, node: &Node) -> Option<Result<FlowNode, ()>> {
        let local = node.local.as_str();
        let is_flow_node = matches!(
            local,
            "startEvent"
                | "endEvent"
                | "intermediateCatchEvent"
                | "intermediateThrowEvent"
                | "boundaryEvent"
                | "task"
                | "serviceTask"
                | "sendTask"
                | "receiveTask"
                | "userTask"
                | "manualTask"
                | "scriptTask"
                | "businessRuleTask"
                | "subProcess"
                | "transaction"
                | "adHocSubProcess"
                | "callActivity"
                | "exclusiveGateway"
                | "parallelGateway"
                | "inclusiveGateway"
                | "eventBasedGateway"
                | "complexGateway"
        );
        if !is_flow_node {
            return None;
        }
        let Some(id) = self.id(node) else { return Some(Err(())) };
        let kind = match local {
            "startEvent" => {
                let interrupting = self.bool_attr(node, "isInterrupting", true);
                self.event(node, EventPosition::Start { interrupting })
            }
            "endEvent" => self.event(node, EventPosition::End),
            "intermediateCatchEvent" => self.event(node, EventPosition::IntermediateCatch),
            "intermediateThrowEvent" => self.event(node, EventPosition::IntermediateThrow),
            "boundaryEvent" => {
                let Some(attached_to) = self.required_ref(node, &id, "attachedToRef") else {
                    return Some(Err(()));
                };
                let cancel_activity = self.bool_attr(node, "cancelActivity", true);
                self.event(node, EventPosition::Boundary { attached_to, cancel_activity })
            }
            "exclusiveGateway" => self.gateway(node, GatewayKind::Exclusive),
            "parallelGateway" => self.gateway(node, GatewayKind::Parallel),
            "inclusiveGateway" => self.gateway(node, GatewayKind::Inclusive),
            "eventBasedGateway" => {
                let instantiate = self.bool_attr(node, "instantiate", false);
                let event_gateway_type = text_attr(node, "eventGatewayType");
                self.gateway(node, GatewayKind::EventBased { instantiate, event_gateway_type })
            }
            "complexGateway" => {
                let activation_condition = child(node, "activationCondition").map(expression);
                self.gateway(node, GatewayKind::Complex { activation_condition })
            }
            _ => {
                let kind = self.activity_kind(node, local);
                FlowNodeKind::Activity(self.activity(node, kind))
            }
        };
        let mut data_associations = Vec::new();
        for child in bpmn_children(node) {
            let direction = match child.local.as_str() {
                "dataInputAssociation" => DataDirection::Input,
                "dataOutputAssociation" => DataDirection::Output,
                _ => continue,
            };
            data_associations.push(DataAssociation {
                id: reference(child.attr("id")),
                pos: child.pos,
                direction,
                sources: bpmn_children(child)
                    .filter(|c| c.local == "sourceRef")
                    .filter_map(|c| reference(Some(&c.text)))
                    .collect(),
                target: bpmn_children(child)
                    .find(|c| c.local == "targetRef")
                    .and_then(|c| reference(Some(&c.text))),
            });
        }
        let mut data_io = Vec::new();
        for child in bpmn_children(node) {
            let items: Box<dyn Iterator<Item = &Node>> = match child.local.as_str() {
                "dataInput" | "dataOutput" | "property" => Box::new(std::iter::once(child)),
                "ioSpecification" => Box::new(
                    bpmn_children(child).filter(|io| matches!(io.local.as_str(), "dataInput" | "dataOutput")),
                ),
                _ => continue,
            };
            data_io.extend(items.filter_map(|io| reference(io.attr("id"))));
        }
        Some(Ok(FlowNode {
            name: text_attr(node, "name"),
            pos: node.pos,
            documentation: documentation(node),
            incoming: refs_of(node, "incoming"),
            outgoing: refs_of(node, "outgoing"),
            kind,
            data_associations,
            data_io,
            extensions: self.extensions(node, Some(&id)),
            id,
        }))
    }

    fn event(&mut self, node: &Node, position: EventPosition) -> FlowNodeKind {
        let parallel_multiple = self.bool_attr(node, "parallelMultiple", false);
        let mut definitions = Vec::new();
        for child in bpmn_children(node) {
            let kind = match child.local.as_str() {
                "messageEventDefinition" => {
                    EventDefinitionKind::Message { message_ref: reference(child.attr("messageRef")) }
                }
                "timerEventDefinition" => EventDefinitionKind::Timer(timer(child)),
                "signalEventDefinition" => {
                    EventDefinitionKind::Signal { signal_ref: reference(child.attr("signalRef")) }
                }
                "errorEventDefinition" => {
                    EventDefinitionKind::Error { error_ref: reference(child.attr("errorRef")) }
                }
                "escalationEventDefinition" => {
                    EventDefinitionKind::Escalation { escalation_ref: reference(child.attr("escalationRef")) }
                }
                "conditionalEventDefinition" => EventDefinitionKind::Conditional {
                    condition: self::child(child, "condition").map(expression),
                },
                "linkEventDefinition" => EventDefinitionKind::Link { name: text_attr(child, "name") },
                "compensateEventDefinition" => EventDefinitionKind::Compensate {
                    activity_ref: reference(child.attr("activityRef")),
                    wait_for_completion: self.bool_attr(child, "waitForCompletion", true),
                },
                "cancelEventDefinition" => EventDefinitionKind::Cancel,
                "terminateEventDefinition" => EventDefinitionKind::Terminate,
                _ => continue,
            };
            definitions.push(EventDefinition { id: reference(child.attr("id")), pos: child.pos, kind });
        }
        FlowNodeKind::Event(Event { position, definitions, parallel_multiple })
    }

    fn gateway(&mut self, node: &Node, kind: GatewayKind) -> FlowNodeKind {
        FlowNodeKind::Gateway(Gateway {
            kind,
            default_flow: reference(node.attr("default")),
            direction: text_attr(node, "gatewayDirection"),
        })
    }

    fn activity_kind(&mut self, node: &Node, local: &str) -> ActivityKind {
        let task = |kind: TaskKind| ActivityKind::Task(kind);
        match local {
            "serviceTask" => task(TaskKind::Service { implementation: text_attr(node, "implementation") }),
            "sendTask" => task(TaskKind::Send { message_ref: reference(node.attr("messageRef")) }),
            "receiveTask" => task(TaskKind::Receive {
                message_ref: reference(node.attr("messageRef")),
                instantiate: self.bool_attr(node, "instantiate", false),
            }),
            "userTask" => task(TaskKind::User { implementation: text_attr(node, "implementation") }),
            "manualTask" => task(TaskKind::Manual),
            "scriptTask" => task(TaskKind::Script {
                script_format: text_attr(node, "scriptFormat"),
                script: child(node, "script").map(|script| script.text.trim().to_owned()),
            }),
            "businessRuleTask" => {
                task(TaskKind::BusinessRule { implementation: text_attr(node, "implementation") })
            }
            "callActivity" => {
                ActivityKind::CallActivity(CallActivity { called_element: text_attr(node, "calledElement") })
            }
            "subProcess" => {
                let kind = if self.bool_attr(node, "triggeredByEvent", false) {
                    SubProcessKind::Event
                } else {
                    SubProcessKind::Embedded
                };
                ActivityKind::SubProcess(SubProcess { kind, scope: self.scope(node) })
            }
            "transaction" => ActivityKind::SubProcess(SubProcess {
                kind: SubProcessKind::Transaction { method: text_attr(node, "method") },
                scope: self.scope(node),
            }),
            "adHocSubProcess" => ActivityKind::SubProcess(SubProcess {
                kind: SubProcessKind::AdHoc {
                    ordering: text_attr(node, "ordering"),
                    completion_condition: child(node, "completionCondition").map(expression),
                    cancel_remaining_instances: self.bool_attr(node, "cancelRemainingInstances", true),
                },
                scope: self.scope(node),
            }),
            _ => task(TaskKind::Task),
        }
    }

    fn activity(&mut self, node: &Node, kind: ActivityKind) -> Activity {
        let mut loop_characteristics = None;
        for child in bpmn_children(node) {
            match child.local.as_str() {
                "standardLoopCharacteristics" => {
                    let loop_maximum = match child.attr("loopMaximum").map(str::trim) {
                        None => None,
                        Some(text) => match text.parse::<u64>() {
                            Ok(max) => Some(max),
                            Err(_) => {
                                self.diagnostics.push(
                                    Diagnostic::error(
                                        Code::InvalidAttribute,
                                        format!("'loopMaximum' must be a whole number, not '{text}'"),
                                    )
                                    .on(&ElementId::from(node.attr("id").unwrap_or_default()))
                                    .at(child.pos),
                                );
                                None
                            }
                        },
                    };
                    loop_characteristics = Some(LoopCharacteristics::Standard(StandardLoop {
                        loop_condition: self::child(child, "loopCondition").map(expression),
                        loop_maximum,
                        test_before: self.bool_attr(child, "testBefore", false),
                    }));
                }
                "multiInstanceLoopCharacteristics" => {
                    let zeebe = extension_children(child)
                        .find(|c| c.is(ZEEBE_NS, "loopCharacteristics"))
                        .map(|c| ZeebeLoop {
                            input_collection: text_attr(c, "inputCollection"),
                            input_element: text_attr(c, "inputElement"),
                            output_collection: text_attr(c, "outputCollection"),
                            output_element: text_attr(c, "outputElement"),
                            pos: c.pos,
                        });
                    loop_characteristics = Some(LoopCharacteristics::MultiInstance(MultiInstance {
                        is_sequential: self.bool_attr(child, "isSequential", false),
                        loop_cardinality: self::child(child, "loopCardinality").map(expression),
                        completion_condition: self::child(child, "completionCondition").map(expression),
                        loop_data_input_ref: self::child(child, "loopDataInputRef")
                            .map(|c| c.text.trim().to_owned()),
                        loop_data_output_ref: self::child(child, "loopDataOutputRef")
                            .map(|c| c.text.trim().to_owned()),
                        input_data_item: self::child(child, "inputDataItem").and_then(|c| text_attr(c, "id")),
                        output_data_item: self::child(child, "outputDataItem")
                            .and_then(|c| text_attr(c, "id")),
                        zeebe,
                        pos: child.pos,
                    }));
                }
                _ => {}
            }
        }
        Activity {
            kind,
            loop_characteristics,
            is_for_compensation: self.bool_attr(node, "isForCompensation", false),
            default_flow: reference(node.attr("default")),
        }
    }

    fn sequence_flow(&mut self, node: &Node) -> Option<SequenceFlow> {
        let id = self.id(node)?;
        let source = self.required_ref(node, &id, "sourceRef");
        let target = self.required_ref(node, &id, "targetRef");
        Some(SequenceFlow {
            name: text_attr(node, "name"),
            pos: node.pos,
            source: source?,
            target: target?,
            condition: child(node, "conditionExpression").map(expression),
            documentation: documentation(node),
            extensions: self.extensions(node, Some(&id)),
            id,
        })
    }

    fn lane_set(&mut self, node: &Node) -> LaneSet {
        let mut lane_set = LaneSet { id: reference(node.attr("id")), lanes: Vec::new() };
        for lane in bpmn_children(node).filter(|c| c.local == "lane") {
            let Some(id) = self.id(lane) else { continue };
            let child_lane_set = child(lane, "childLaneSet").map(|c| self.lane_set(c));
            lane_set.lanes.push(Lane {
                id,
                name: text_attr(lane, "name"),
                pos: lane.pos,
                flow_node_refs: refs_of(lane, "flowNodeRef"),
                child_lane_set,
            });
        }
        lane_set
    }

    fn data_element(&mut self, node: &Node) -> Option<DataElement> {
        let id = self.id(node)?;
        let kind = match node.local.as_str() {
            "dataObject" => {
                DataKind::DataObject { is_collection: self.bool_attr(node, "isCollection", false) }
            }
            "dataObjectReference" => {
                DataKind::DataObjectReference { data_object_ref: reference(node.attr("dataObjectRef")) }
            }
            "dataStoreReference" => {
                DataKind::DataStoreReference { data_store_ref: reference(node.attr("dataStoreRef")) }
            }
            other => DataKind::Other { element: other.to_owned() },
        };
        Some(DataElement { id, name: text_attr(node, "name"), pos: node.pos, kind })
    }

    fn artifact(&mut self, node: &Node) -> Option<Artifact> {
        let id = self.id(node)?;
        let kind = match node.local.as_str() {
            "textAnnotation" => ArtifactKind::TextAnnotation {
                text: child(node, "text").map(|text| text.text.trim().to_owned()).unwrap_or_default(),
            },
            "association" => {
                let source = self.required_ref(node, &id, "sourceRef")?;
                let target = self.required_ref(node, &id, "targetRef")?;
                ArtifactKind::Association {
                    source,
                    target,
                    direction: text_attr(node, "associationDirection"),
                }
            }
            _ => ArtifactKind::Group { category_value_ref: reference(node.attr("categoryValueRef")) },
        };
        Some(Artifact { id, pos: node.pos, kind })
    }

    // -------------------------------------------------------------------------------------------
    // extension elements: the zeebe dialect, and everything else kept

    fn extensions(&mut self, node: &Node, owner: Option<&ElementId>) -> Extensions {
        let mut extensions = Extensions::default();
        for ext in extension_children(node) {
            if ext.ns.as_deref() != Some(ZEEBE_NS) {
                extensions.other.push(keep(ext));
                continue;
            }
            let zeebe = &mut extensions.zeebe;
            match ext.local.as_str() {
                "taskDefinition" => {
                    if let Some(job_type) = self.zeebe_attr(ext, owner, "type") {
                        zeebe.task_definition = Some(TaskDefinition {
                            job_type,
                            retries: text_attr(ext, "retries"),
                            pos: ext.pos,
                        });
                    }
                }
                "ioMapping" => {
                    let mut mapping = IoMapping::default();
                    for entry in ext.children.iter().filter(|c| c.ns.as_deref() == Some(ZEEBE_NS)) {
                        let source = text_attr(entry, "source").unwrap_or_default();
                        let Some(target) = self.zeebe_attr(entry, owner, "target") else { continue };
                        let item = Mapping { source, target, pos: entry.pos };
                        match entry.local.as_str() {
                            "input" => mapping.inputs.push(item),
                            "output" => mapping.outputs.push(item),
                            _ => {}
                        }
                    }
                    zeebe.io_mapping = Some(mapping);
                }
                "taskHeaders" => {
                    for header in ext.children.iter().filter(|c| c.is(ZEEBE_NS, "header")) {
                        if let Some(key) = self.zeebe_attr(header, owner, "key") {
                            let value = header.attr("value").unwrap_or_default().to_owned();
                            zeebe.task_headers.push(Header { key, value });
                        }
                    }
                }
                "subscription" => {
                    zeebe.subscription = text_attr(ext, "correlationKey")
                        .map(|correlation_key| Subscription { correlation_key, pos: ext.pos });
                }
                "calledElement" => {
                    let process_id = self.zeebe_attr(ext, owner, "processId").unwrap_or_default();
                    let propagate_all_child_variables =
                        self.bool_attr(ext, "propagateAllChildVariables", true);
                    let propagate_all_parent_variables =
                        self.bool_attr(ext, "propagateAllParentVariables", true);
                    zeebe.called_element = Some(CalledElement {
                        process_id,
                        binding_type: text_attr(ext, "bindingType"),
                        version_tag: text_attr(ext, "versionTag"),
                        propagate_all_child_variables,
                        propagate_all_parent_variables,
                        pos: ext.pos,
                    });
                }
                "calledDecision" => {
                    let decision_id = self.zeebe_attr(ext, owner, "decisionId");
                    let result_variable = self.zeebe_attr(ext, owner, "resultVariable");
                    if let (Some(decision_id), Some(result_variable)) = (decision_id, result_variable) {
                        zeebe.called_decision =
                            Some(CalledDecision { decision_id, result_variable, pos: ext.pos });
                    }
                }
                "script" => {
                    let expression = self.zeebe_attr(ext, owner, "expression");
                    let result_variable = self.zeebe_attr(ext, owner, "resultVariable");
                    if let (Some(expression), Some(result_variable)) = (expression, result_variable) {
                        zeebe.script = Some(ZeebeScript { expression, result_variable, pos: ext.pos });
                    }
                }
                "formDefinition" => {
                    zeebe.form_definition = Some(FormDefinition {
                        form_key: text_attr(ext, "formKey"),
                        form_id: text_attr(ext, "formId"),
                        external_reference: text_attr(ext, "externalReference"),
                    });
                }
                "userTaskForm" => {
                    zeebe.user_task_forms.push(UserTaskForm {
                        id: ext.attr("id").unwrap_or_default().to_owned(),
                        body: ext.text.trim().to_owned(),
                    });
                }
                "assignmentDefinition" => {
                    zeebe.assignment_definition = Some(AssignmentDefinition {
                        assignee: text_attr(ext, "assignee"),
                        candidate_groups: text_attr(ext, "candidateGroups"),
                        candidate_users: text_attr(ext, "candidateUsers"),
                        pos: ext.pos,
                    });
                }
                "taskSchedule" => {
                    zeebe.task_schedule = Some(TaskSchedule {
                        due_date: text_attr(ext, "dueDate"),
                        follow_up_date: text_attr(ext, "followUpDate"),
                        pos: ext.pos,
                    });
                }
                "properties" => {
                    for property in ext.children.iter().filter(|c| c.is(ZEEBE_NS, "property")) {
                        zeebe.properties.push(Property {
                            name: property.attr("name").unwrap_or_default().to_owned(),
                            value: property.attr("value").unwrap_or_default().to_owned(),
                        });
                    }
                }
                "versionTag" => zeebe.version_tag = text_attr(ext, "value"),
                _ => extensions.other.push(keep(ext)),
            }
        }
        extensions
    }

    // -------------------------------------------------------------------------------------------
    // diagram interchange

    fn diagram(&mut self, node: &Node) -> Diagram {
        let mut diagram =
            Diagram { id: reference(node.attr("id")), name: text_attr(node, "name"), planes: Vec::new() };
        for plane in node.children.iter().filter(|c| c.is(BPMNDI_NS, "BPMNPlane")) {
            let mut diagram_plane = DiagramPlane {
                id: reference(plane.attr("id")),
                bpmn_element: reference(plane.attr("bpmnElement")),
                shapes: Vec::new(),
                edges: Vec::new(),
            };
            for element in &plane.children {
                if element.is(BPMNDI_NS, "BPMNShape") {
                    let is_horizontal = self.optional_bool(element, "isHorizontal");
                    let is_expanded = self.optional_bool(element, "isExpanded");
                    let is_marker_visible = self.optional_bool(element, "isMarkerVisible");
                    diagram_plane.shapes.push(DiagramShape {
                        id: reference(element.attr("id")),
                        bpmn_element: reference(element.attr("bpmnElement")),
                        pos: element.pos,
                        bounds: element
                            .children
                            .iter()
                            .find(|c| c.is(DC_NS, "Bounds"))
                            .and_then(|b| self.bounds(b)),
                        label: self.label(element),
                        is_horizontal,
                        is_expanded,
                        is_marker_visible,
                    });
                } else if element.is(BPMNDI_NS, "BPMNEdge") {
                    let waypoints = element
                        .children
                        .iter()
                        .filter(|c| c.is(DI_NS, "waypoint"))
                        .filter_map(|w| Some(Point { x: self.number(w, "x")?, y: self.number(w, "y")? }))
                        .collect();
                    diagram_plane.edges.push(DiagramEdge {
                        id: reference(element.attr("id")),
                        bpmn_element: reference(element.attr("bpmnElement")),
                        pos: element.pos,
                        waypoints,
                        label: self.label(element),
                    });
                }
            }
            diagram.planes.push(diagram_plane);
        }
        diagram
    }

    fn label(&mut self, element: &Node) -> Option<Bounds> {
        let label = element.children.iter().find(|c| c.is(BPMNDI_NS, "BPMNLabel"))?;
        let bounds = label.children.iter().find(|c| c.is(DC_NS, "Bounds"))?;
        self.bounds(bounds)
    }

    fn bounds(&mut self, node: &Node) -> Option<Bounds> {
        Some(Bounds {
            x: self.number(node, "x")?,
            y: self.number(node, "y")?,
            width: self.number(node, "width")?,
            height: self.number(node, "height")?,
        })
    }

    fn number(&mut self, node: &Node, name: &str) -> Option<f64> {
        let text = node.attr(name)?.trim();
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Some(value),
            _ => {
                self.diagnostics.push(
                    Diagnostic::warning(
                        Code::InvalidAttribute,
                        format!("diagram attribute '{name}' of <{}> is not a number: '{text}'", node.qname),
                    )
                    .at(node.pos),
                );
                None
            }
        }
    }

    /// A diagram boolean: a bad value is a warning (diagrams never affect execution).
    fn optional_bool(&mut self, node: &Node, name: &str) -> Option<bool> {
        match node.attr(name)?.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            other => {
                self.diagnostics.push(
                    Diagnostic::warning(
                        Code::InvalidAttribute,
                        format!(
                            "diagram attribute '{name}' of <{}> must be true or false, not '{other}'",
                            node.qname
                        ),
                    )
                    .at(node.pos),
                );
                None
            }
        }
    }
}

// -----------------------------------------------------------------------------------------------
// free helpers

/// A reference attribute or element text as an id: trimmed, namespace prefix (`tns:`) dropped.
fn reference(text: Option<&str>) -> Option<ElementId> {
    let text = text?.trim();
    let local = text.rsplit(':').next().unwrap_or(text);
    (!local.is_empty()).then(|| ElementId::from(local))
}

fn text_attr(node: &Node, name: &str) -> Option<String> {
    node.attr(name).map(str::trim).filter(|value| !value.is_empty()).map(str::to_owned)
}

fn bpmn_children(node: &Node) -> impl Iterator<Item = &Node> {
    node.children.iter().filter(|c| c.ns.as_deref() == Some(BPMN_NS))
}

fn child<'a>(node: &'a Node, local: &str) -> Option<&'a Node> {
    bpmn_children(node).find(|c| c.local == local)
}

fn extension_children(node: &Node) -> impl Iterator<Item = &Node> {
    bpmn_children(node).filter(|c| c.local == "extensionElements").flat_map(|c| c.children.iter())
}

fn refs_of(node: &Node, local: &str) -> Vec<ElementId> {
    bpmn_children(node).filter(|c| c.local == local).filter_map(|c| reference(Some(&c.text))).collect()
}

fn documentation(node: &Node) -> Vec<String> {
    bpmn_children(node).filter(|c| c.local == "documentation").map(|c| c.text.trim().to_owned()).collect()
}

fn expression(node: &Node) -> Expression {
    Expression { text: node.text.trim().to_owned(), language: text_attr(node, "language"), pos: node.pos }
}

fn timer(node: &Node) -> TimerDefinition {
    if let Some(date) = child(node, "timeDate") {
        TimerDefinition::Date(expression(date))
    } else if let Some(duration) = child(node, "timeDuration") {
        TimerDefinition::Duration(expression(duration))
    } else if let Some(cycle) = child(node, "timeCycle") {
        TimerDefinition::Cycle(expression(cycle))
    } else {
        TimerDefinition::Unspecified
    }
}

fn keep(node: &Node) -> XmlElement {
    XmlElement {
        namespace: node.ns.clone(),
        name: node.qname.clone(),
        attributes: node
            .attrs
            .iter()
            .filter(|attr| attr.ns.as_deref() != Some(XSI_NS) || attr.local != "schemaLocation")
            .map(|attr| (attr.qname.clone(), attr.value.clone()))
            .collect(),
        text: node.text.trim().to_owned(),
        children: node.children.iter().map(keep).collect(),
        pos: node.pos,
    }
}
