//! The Camunda 8 (Zeebe) extension dialect, `xmlns:zeebe="http://camunda.org/schema/zeebe/1.0"`, as
//! Camunda Modeler writes it: govflow's configuration language. Values are kept as written (`=...` is
//! FEEL, anything else a literal); validation checks the FEEL, the runtime evaluates it.

use serde::{Deserialize, Serialize};

use super::Position;

/// Every typed `zeebe:` extension an element may carry. Fields are `None`/empty when absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Zeebe {
    pub task_definition: Option<TaskDefinition>,
    pub io_mapping: Option<IoMapping>,
    pub task_headers: Vec<Header>,
    pub subscription: Option<Subscription>,
    pub called_element: Option<CalledElement>,
    pub called_decision: Option<CalledDecision>,
    pub script: Option<ZeebeScript>,
    pub form_definition: Option<FormDefinition>,
    /// Process-level embedded forms (`zeebe:userTaskForm`), referenced by `formKey`.
    pub user_task_forms: Vec<UserTaskForm>,
    pub assignment_definition: Option<AssignmentDefinition>,
    pub task_schedule: Option<TaskSchedule>,
    pub properties: Vec<Property>,
    pub version_tag: Option<String>,
}

/// `zeebe:taskDefinition type="..." retries="..."`: the job type a connector or worker serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinition {
    pub job_type: String,
    pub retries: Option<String>,
    pub pos: Position,
}

/// `zeebe:ioMapping` with its `zeebe:input` / `zeebe:output` mappings, in document order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IoMapping {
    pub inputs: Vec<Mapping>,
    pub outputs: Vec<Mapping>,
}

/// One `source → target` mapping; `source` is FEEL (`=...`) or a literal, `target` a variable path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub source: String,
    pub target: String,
    pub pos: Position,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub key: String,
    pub value: String,
}

/// `zeebe:subscription correlationKey="=..."` on message catch events and receive tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub correlation_key: String,
    pub pos: Position,
}

/// `zeebe:calledElement` of a call activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalledElement {
    pub process_id: String,
    /// `bindingType`: `latest` (default), `deployment` or `versionTag`.
    pub binding_type: Option<String>,
    pub version_tag: Option<String>,
    /// Default true, as in Zeebe.
    pub propagate_all_child_variables: bool,
    /// Default true, as in Zeebe.
    pub propagate_all_parent_variables: bool,
    pub pos: Position,
}

/// `zeebe:loopCharacteristics` inside a `multiInstanceLoopCharacteristics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZeebeLoop {
    pub input_collection: Option<String>,
    pub input_element: Option<String>,
    pub output_collection: Option<String>,
    pub output_element: Option<String>,
    pub pos: Position,
}

/// `zeebe:calledDecision decisionId="..." resultVariable="..."` of a business rule task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalledDecision {
    pub decision_id: String,
    pub result_variable: String,
    pub pos: Position,
}

/// `zeebe:script expression="=..." resultVariable="..."` of a script task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeebeScript {
    pub expression: String,
    pub result_variable: String,
    pub pos: Position,
}

/// `zeebe:formDefinition` (formKey, formId or externalReference) of a user task or start event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FormDefinition {
    pub form_key: Option<String>,
    pub form_id: Option<String>,
    pub external_reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserTaskForm {
    pub id: String,
    pub body: String,
}

/// `zeebe:assignmentDefinition`; candidate lists are comma-separated literals or FEEL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssignmentDefinition {
    pub assignee: Option<String>,
    pub candidate_groups: Option<String>,
    pub candidate_users: Option<String>,
    pub pos: Position,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSchedule {
    pub due_date: Option<String>,
    pub follow_up_date: Option<String>,
    pub pos: Position,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property {
    pub name: String,
    pub value: String,
}
