//! The typed BPMN 2.0 model: everything a `bpmn:definitions` file can say, including elements the runtime
//! does not execute. It is plain data: building it is the parser's job, judging it the validator's; the
//! model itself never panics, never does I/O and never drops what it does not understand (unknown
//! elements are kept as [`XmlElement`]s).

mod diagram;
mod ids;
mod zeebe;

use serde::{Deserialize, Serialize};

pub use diagram::{Bounds, Diagram, DiagramEdge, DiagramPlane, DiagramShape, Point};
pub use ids::{ElementId, Position, ProcessId};
pub use zeebe::{
    AssignmentDefinition, CalledDecision, CalledElement, FormDefinition, Header, IoMapping, Mapping,
    Property, Subscription, TaskDefinition, TaskSchedule, UserTaskForm, Zeebe, ZeebeLoop, ZeebeScript,
};

/// A whole BPMN file: the `bpmn:definitions` root with its root elements and diagrams.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    pub id: Option<ElementId>,
    pub name: Option<String>,
    pub target_namespace: Option<String>,
    pub exporter: Option<String>,
    pub exporter_version: Option<String>,
    pub processes: Vec<Process>,
    pub collaborations: Vec<Collaboration>,
    pub messages: Vec<Message>,
    pub signals: Vec<Signal>,
    pub errors: Vec<ErrorDefinition>,
    pub escalations: Vec<Escalation>,
    pub data_stores: Vec<DataStore>,
    pub item_definitions: Vec<ItemDefinition>,
    /// Root elements govflow does not model (interfaces, categories, choreographies, global tasks...).
    pub other_roots: Vec<XmlElement>,
    pub diagrams: Vec<Diagram>,
    pub extensions: Extensions,
}

impl Definitions {
    pub fn process(&self, id: &str) -> Option<&Process> {
        self.processes.iter().find(|process| process.id.as_str() == id)
    }

    pub fn message(&self, id: &ElementId) -> Option<&Message> {
        self.messages.iter().find(|message| &message.id == id)
    }

    pub fn signal(&self, id: &ElementId) -> Option<&Signal> {
        self.signals.iter().find(|signal| &signal.id == id)
    }

    pub fn error(&self, id: &ElementId) -> Option<&ErrorDefinition> {
        self.errors.iter().find(|error| &error.id == id)
    }

    pub fn escalation(&self, id: &ElementId) -> Option<&Escalation> {
        self.escalations.iter().find(|escalation| &escalation.id == id)
    }
}

/// `bpmn:process`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
    pub is_executable: bool,
    pub is_closed: bool,
    pub process_type: Option<String>,
    pub documentation: Vec<String>,
    pub scope: Scope,
    pub extensions: Extensions,
}

/// The contents of a process or sub-process: its flow nodes, sequence flows, data and artifacts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    pub flow_nodes: Vec<FlowNode>,
    pub sequence_flows: Vec<SequenceFlow>,
    pub data: Vec<DataElement>,
    pub artifacts: Vec<Artifact>,
    pub lane_sets: Vec<LaneSet>,
    /// Elements found in this scope that govflow does not recognise; each also got a diagnostic.
    pub unknown: Vec<XmlElement>,
}

impl Scope {
    pub fn flow_node(&self, id: &ElementId) -> Option<&FlowNode> {
        self.flow_nodes.iter().find(|node| &node.id == id)
    }

    pub fn sequence_flow(&self, id: &ElementId) -> Option<&SequenceFlow> {
        self.sequence_flows.iter().find(|flow| &flow.id == id)
    }

    /// This scope's flow nodes followed by those of every nested sub-process, depth first.
    pub fn all_flow_nodes(&self) -> Vec<&FlowNode> {
        let mut out = Vec::new();
        self.collect_flow_nodes(&mut out);
        out
    }

    fn collect_flow_nodes<'a>(&'a self, out: &mut Vec<&'a FlowNode>) {
        for node in &self.flow_nodes {
            out.push(node);
            if let Some(inner) = node.inner_scope() {
                inner.collect_flow_nodes(out);
            }
        }
    }

    /// Every scope: this one and the scopes of nested sub-processes, depth first.
    pub fn all_scopes(&self) -> Vec<&Scope> {
        let mut out = vec![self];
        for node in &self.flow_nodes {
            if let Some(inner) = node.inner_scope() {
                out.extend(inner.all_scopes());
            }
        }
        out
    }
}

/// An element that takes part in the sequence flow: an event, an activity or a gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowNode {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
    pub documentation: Vec<String>,
    /// `bpmn:incoming` / `bpmn:outgoing` as written; files may omit them, so the sequence flows are the
    /// source of truth.
    pub incoming: Vec<ElementId>,
    pub outgoing: Vec<ElementId>,
    pub kind: FlowNodeKind,
    pub data_associations: Vec<DataAssociation>,
    /// Ids of the node's data inputs and outputs (direct, in `ioSpecification`, or `property`): the
    /// ends of its data associations.
    pub data_io: Vec<ElementId>,
    pub extensions: Extensions,
}

impl FlowNode {
    pub fn inner_scope(&self) -> Option<&Scope> {
        match &self.kind {
            FlowNodeKind::Activity(Activity { kind: ActivityKind::SubProcess(sub), .. }) => Some(&sub.scope),
            _ => None,
        }
    }

    pub fn as_activity(&self) -> Option<&Activity> {
        match &self.kind {
            FlowNodeKind::Activity(activity) => Some(activity),
            _ => None,
        }
    }

    pub fn as_event(&self) -> Option<&Event> {
        match &self.kind {
            FlowNodeKind::Event(event) => Some(event),
            _ => None,
        }
    }

    pub fn as_gateway(&self) -> Option<&Gateway> {
        match &self.kind {
            FlowNodeKind::Gateway(gateway) => Some(gateway),
            _ => None,
        }
    }

    /// The default sequence flow of a gateway or activity.
    pub fn default_flow(&self) -> Option<&ElementId> {
        match &self.kind {
            FlowNodeKind::Gateway(gateway) => gateway.default_flow.as_ref(),
            FlowNodeKind::Activity(activity) => activity.default_flow.as_ref(),
            FlowNodeKind::Event(_) => None,
        }
    }

    /// The BPMN element name of this node, e.g. `serviceTask` or `boundaryEvent`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }
}

// Definitions are built once per deployment and read many times; boxing would only complicate patterns.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FlowNodeKind {
    Event(Event),
    Activity(Activity),
    Gateway(Gateway),
}

impl FlowNodeKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            FlowNodeKind::Event(event) => event.position.type_name(),
            FlowNodeKind::Activity(activity) => activity.kind.type_name(),
            FlowNodeKind::Gateway(gateway) => gateway.kind.type_name(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Events

/// Any BPMN event: where it sits (start, end, intermediate, boundary) and what triggers or results
/// from it (its event definitions; none = a "none" event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub position: EventPosition,
    pub definitions: Vec<EventDefinition>,
    /// `parallelMultiple`: with several definitions, all must occur (catch events only).
    pub parallel_multiple: bool,
}

impl Event {
    /// The single event definition, or `None` for a none event and for multiple events.
    pub fn definition(&self) -> Option<&EventDefinitionKind> {
        match self.definitions.as_slice() {
            [single] => Some(&single.kind),
            _ => None,
        }
    }

    pub fn is_none_event(&self) -> bool {
        self.definitions.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventPosition {
    /// `startEvent`; `interrupting` only matters in event sub-processes.
    Start {
        interrupting: bool,
    },
    End,
    IntermediateCatch,
    IntermediateThrow,
    /// `boundaryEvent`, attached to an activity; `cancel_activity = false` is non-interrupting.
    Boundary {
        attached_to: ElementId,
        cancel_activity: bool,
    },
}

impl EventPosition {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventPosition::Start { .. } => "startEvent",
            EventPosition::End => "endEvent",
            EventPosition::IntermediateCatch => "intermediateCatchEvent",
            EventPosition::IntermediateThrow => "intermediateThrowEvent",
            EventPosition::Boundary { .. } => "boundaryEvent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDefinition {
    pub id: Option<ElementId>,
    pub pos: Position,
    pub kind: EventDefinitionKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventDefinitionKind {
    Message { message_ref: Option<ElementId> },
    Timer(TimerDefinition),
    Signal { signal_ref: Option<ElementId> },
    Error { error_ref: Option<ElementId> },
    Escalation { escalation_ref: Option<ElementId> },
    Conditional { condition: Option<Expression> },
    Link { name: Option<String> },
    Compensate { activity_ref: Option<ElementId>, wait_for_completion: bool },
    Cancel,
    Terminate,
}

impl EventDefinitionKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventDefinitionKind::Message { .. } => "messageEventDefinition",
            EventDefinitionKind::Timer(_) => "timerEventDefinition",
            EventDefinitionKind::Signal { .. } => "signalEventDefinition",
            EventDefinitionKind::Error { .. } => "errorEventDefinition",
            EventDefinitionKind::Escalation { .. } => "escalationEventDefinition",
            EventDefinitionKind::Conditional { .. } => "conditionalEventDefinition",
            EventDefinitionKind::Link { .. } => "linkEventDefinition",
            EventDefinitionKind::Compensate { .. } => "compensateEventDefinition",
            EventDefinitionKind::Cancel => "cancelEventDefinition",
            EventDefinitionKind::Terminate => "terminateEventDefinition",
        }
    }
}

/// The body of a `timerEventDefinition`: at most one of timeDate, timeDuration, timeCycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TimerDefinition {
    Date(Expression),
    Duration(Expression),
    Cycle(Expression),
    /// No time was given (allowed in non-executable models).
    Unspecified,
}

/// A `tFormalExpression` (condition, timer value...) as written: text, optional language, position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expression {
    pub text: String,
    pub language: Option<String>,
    pub pos: Position,
}

// ---------------------------------------------------------------------------------------------------
// Activities

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub kind: ActivityKind,
    pub loop_characteristics: Option<LoopCharacteristics>,
    pub is_for_compensation: bool,
    pub default_flow: Option<ElementId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ActivityKind {
    Task(TaskKind),
    SubProcess(SubProcess),
    CallActivity(CallActivity),
}

impl ActivityKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ActivityKind::Task(task) => task.type_name(),
            ActivityKind::SubProcess(sub) => sub.kind.type_name(),
            ActivityKind::CallActivity(_) => "callActivity",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskKind {
    /// The abstract `bpmn:task` (undefined task): passes through.
    Task,
    Service {
        implementation: Option<String>,
    },
    Send {
        message_ref: Option<ElementId>,
    },
    Receive {
        message_ref: Option<ElementId>,
        instantiate: bool,
    },
    User {
        implementation: Option<String>,
    },
    Manual,
    Script {
        script_format: Option<String>,
        script: Option<String>,
    },
    BusinessRule {
        implementation: Option<String>,
    },
}

impl TaskKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            TaskKind::Task => "task",
            TaskKind::Service { .. } => "serviceTask",
            TaskKind::Send { .. } => "sendTask",
            TaskKind::Receive { .. } => "receiveTask",
            TaskKind::User { .. } => "userTask",
            TaskKind::Manual => "manualTask",
            TaskKind::Script { .. } => "scriptTask",
            TaskKind::BusinessRule { .. } => "businessRuleTask",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubProcess {
    pub kind: SubProcessKind,
    pub scope: Scope,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SubProcessKind {
    Embedded,
    /// `triggeredByEvent="true"`: started by its start event, not by sequence flow.
    Event,
    Transaction {
        method: Option<String>,
    },
    AdHoc {
        ordering: Option<String>,
        completion_condition: Option<Expression>,
        cancel_remaining_instances: bool,
    },
}

impl SubProcessKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SubProcessKind::Embedded => "subProcess",
            SubProcessKind::Event => "subProcess(event)",
            SubProcessKind::Transaction { .. } => "transaction",
            SubProcessKind::AdHoc { .. } => "adHocSubProcess",
        }
    }
}

/// `callActivity`. The BPMN `calledElement` attribute; Zeebe's `zeebe:calledElement` lives in the
/// extensions and takes precedence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallActivity {
    pub called_element: Option<String>,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LoopCharacteristics {
    Standard(StandardLoop),
    MultiInstance(MultiInstance),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandardLoop {
    pub loop_condition: Option<Expression>,
    pub loop_maximum: Option<u64>,
    pub test_before: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiInstance {
    pub is_sequential: bool,
    pub loop_cardinality: Option<Expression>,
    pub completion_condition: Option<Expression>,
    pub loop_data_input_ref: Option<String>,
    pub loop_data_output_ref: Option<String>,
    pub input_data_item: Option<String>,
    pub output_data_item: Option<String>,
    /// `zeebe:loopCharacteristics` (inputCollection, inputElement, outputCollection, outputElement).
    pub zeebe: Option<ZeebeLoop>,
    pub pos: Position,
}

// ---------------------------------------------------------------------------------------------------
// Gateways

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gateway {
    pub kind: GatewayKind,
    pub default_flow: Option<ElementId>,
    pub direction: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GatewayKind {
    Exclusive,
    Parallel,
    Inclusive,
    EventBased { instantiate: bool, event_gateway_type: Option<String> },
    Complex { activation_condition: Option<Expression> },
}

impl GatewayKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            GatewayKind::Exclusive => "exclusiveGateway",
            GatewayKind::Parallel => "parallelGateway",
            GatewayKind::Inclusive => "inclusiveGateway",
            GatewayKind::EventBased { .. } => "eventBasedGateway",
            GatewayKind::Complex { .. } => "complexGateway",
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Sequence flow, data, artifacts, lanes, collaboration, root elements

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceFlow {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
    pub source: ElementId,
    pub target: ElementId,
    pub condition: Option<Expression>,
    pub documentation: Vec<String>,
    pub extensions: Extensions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataElement {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
    pub kind: DataKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataKind {
    DataObject {
        is_collection: bool,
    },
    DataObjectReference {
        data_object_ref: Option<ElementId>,
    },
    DataStoreReference {
        data_store_ref: Option<ElementId>,
    },
    /// A process-level `dataInput` / `dataOutput` / `property`.
    Other {
        element: String,
    },
}

/// `dataInputAssociation` / `dataOutputAssociation` of an activity or event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataAssociation {
    pub id: Option<ElementId>,
    pub pos: Position,
    pub direction: DataDirection,
    pub sources: Vec<ElementId>,
    pub target: Option<ElementId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataDirection {
    Input,
    Output,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub id: ElementId,
    pub pos: Position,
    pub kind: ArtifactKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArtifactKind {
    TextAnnotation { text: String },
    Association { source: ElementId, target: ElementId, direction: Option<String> },
    Group { category_value_ref: Option<ElementId> },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaneSet {
    pub id: Option<ElementId>,
    pub lanes: Vec<Lane>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lane {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
    pub flow_node_refs: Vec<ElementId>,
    pub child_lane_set: Option<LaneSet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collaboration {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
    pub participants: Vec<Participant>,
    pub message_flows: Vec<MessageFlow>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
    pub process_ref: Option<ElementId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageFlow {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
    pub source: ElementId,
    pub target: ElementId,
    pub message_ref: Option<ElementId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
    pub item_ref: Option<ElementId>,
    pub extensions: Extensions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
}

/// A root `bpmn:error`: a business error code thrown by error end events and caught by boundaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDefinition {
    pub id: ElementId,
    pub name: Option<String>,
    pub error_code: Option<String>,
    pub pos: Position,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub id: ElementId,
    pub name: Option<String>,
    pub escalation_code: Option<String>,
    pub pos: Position,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataStore {
    pub id: ElementId,
    pub name: Option<String>,
    pub pos: Position,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemDefinition {
    pub id: ElementId,
    pub structure_ref: Option<String>,
    pub is_collection: bool,
    pub pos: Position,
}

// ---------------------------------------------------------------------------------------------------
// Extensions

/// The `extensionElements` of an element: the Zeebe dialect, typed, and everything else kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extensions {
    pub zeebe: Zeebe,
    pub other: Vec<XmlElement>,
}

impl Extensions {
    pub fn is_empty(&self) -> bool {
        self.zeebe == Zeebe::default() && self.other.is_empty()
    }
}

/// An XML element kept as written because govflow does not model it (foreign extensions, unknown
/// BPMN elements). Round-trips its namespace, attributes, text and children.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct XmlElement {
    pub namespace: Option<String>,
    /// The name as written, with its prefix (`camunda:properties`).
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<XmlElement>,
    pub pos: Position,
}
