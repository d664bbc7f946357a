//! A stable, human-readable outline of a [`Definitions`]: one line per element, indented by nesting.
//! Used by `govflow inspect` and by the golden parser tests, so its format changes only on purpose.
//! It reads the model only; it never fails.

use std::fmt::Write;

use crate::model::*;

pub fn outline(definitions: &Definitions) -> String {
    let mut out = Outline { text: String::new() };
    out.definitions(definitions);
    out.text
}

struct Outline {
    text: String,
}

fn quoted(name: &Option<String>) -> String {
    name.as_ref().map(|name| format!(" {name:?}")).unwrap_or_default()
}

fn opt<T: std::fmt::Display>(label: &str, value: &Option<T>) -> String {
    value.as_ref().map(|value| format!(" {label}={value}")).unwrap_or_default()
}

impl Outline {
    fn line(&mut self, depth: usize, text: impl AsRef<str>) {
        let _ = writeln!(self.text, "{}{}", "  ".repeat(depth), text.as_ref());
    }

    fn definitions(&mut self, definitions: &Definitions) {
        self.line(
            0,
            format!(
                "definitions{}{}{}{}",
                opt("id", &definitions.id),
                opt("exporter", &definitions.exporter),
                opt("version", &definitions.exporter_version),
                opt("targetNamespace", &definitions.target_namespace),
            ),
        );
        for message in &definitions.messages {
            let key = message.extensions.zeebe.subscription.as_ref().map(|s| s.correlation_key.clone());
            self.line(
                1,
                format!("message {}{}{}", message.id, quoted(&message.name), opt("correlationKey", &key)),
            );
        }
        for signal in &definitions.signals {
            self.line(1, format!("signal {}{}", signal.id, quoted(&signal.name)));
        }
        for error in &definitions.errors {
            self.line(
                1,
                format!("error {}{}{}", error.id, quoted(&error.name), opt("code", &error.error_code)),
            );
        }
        for escalation in &definitions.escalations {
            self.line(
                1,
                format!(
                    "escalation {}{}{}",
                    escalation.id,
                    quoted(&escalation.name),
                    opt("code", &escalation.escalation_code)
                ),
            );
        }
        for store in &definitions.data_stores {
            self.line(1, format!("dataStore {}{}", store.id, quoted(&store.name)));
        }
        for item in &definitions.item_definitions {
            self.line(1, format!("itemDefinition {}{}", item.id, opt("structure", &item.structure_ref)));
        }
        for collaboration in &definitions.collaborations {
            self.line(1, format!("collaboration {}{}", collaboration.id, quoted(&collaboration.name)));
            for participant in &collaboration.participants {
                self.line(
                    2,
                    format!(
                        "participant {}{}{}",
                        participant.id,
                        quoted(&participant.name),
                        opt("process", &participant.process_ref)
                    ),
                );
            }
            for flow in &collaboration.message_flows {
                self.line(
                    2,
                    format!(
                        "messageFlow {} {} -> {}{}",
                        flow.id,
                        flow.source,
                        flow.target,
                        opt("message", &flow.message_ref)
                    ),
                );
            }
            self.artifacts(2, &collaboration.artifacts);
        }
        for process in &definitions.processes {
            self.line(
                1,
                format!(
                    "process {}{}{}",
                    process.id,
                    quoted(&process.name),
                    if process.is_executable { " executable" } else { "" }
                ),
            );
            self.extensions(2, &process.extensions);
            self.scope(2, &process.scope);
        }
        for other in &definitions.other_roots {
            self.line(1, format!("other <{}>{}", other.name, xml_id(other)));
        }
        for diagram in &definitions.diagrams {
            for plane in &diagram.planes {
                let n_labels = plane.shapes.iter().filter(|s| s.label.is_some()).count()
                    + plane.edges.iter().filter(|e| e.label.is_some()).count();
                let n_waypoints: usize = plane.edges.iter().map(|e| e.waypoints.len()).sum();
                self.line(
                    1,
                    format!(
                        "diagram plane{}: {} shapes, {} edges, {} waypoints, {} labels",
                        opt("of", &plane.bpmn_element),
                        plane.shapes.len(),
                        plane.edges.len(),
                        n_waypoints,
                        n_labels
                    ),
                );
            }
        }
    }

    fn scope(&mut self, depth: usize, scope: &Scope) {
        for lane_set in &scope.lane_sets {
            self.lanes(depth, lane_set);
        }
        for node in &scope.flow_nodes {
            self.flow_node(depth, node);
        }
        for flow in &scope.sequence_flows {
            let condition = flow.condition.as_ref().map(|c| format!(" [{}]", c.text)).unwrap_or_default();
            self.line(
                depth,
                format!("sequenceFlow {} {} -> {}{condition}", flow.id, flow.source, flow.target),
            );
        }
        for data in &scope.data {
            let kind = match &data.kind {
                DataKind::DataObject { is_collection } => {
                    format!("dataObject{}", if *is_collection { " collection" } else { "" })
                }
                DataKind::DataObjectReference { data_object_ref } => {
                    format!("dataObjectReference{}", opt("ref", data_object_ref))
                }
                DataKind::DataStoreReference { data_store_ref } => {
                    format!("dataStoreReference{}", opt("ref", data_store_ref))
                }
                DataKind::Other { element } => element.clone(),
            };
            self.line(depth, format!("{kind} {}{}", data.id, quoted(&data.name)));
        }
        self.artifacts(depth, &scope.artifacts);
        for unknown in &scope.unknown {
            self.line(depth, format!("kept <{}>{}", unknown.name, xml_id(unknown)));
        }
    }

    fn lanes(&mut self, depth: usize, lane_set: &LaneSet) {
        for lane in &lane_set.lanes {
            let refs: Vec<&str> = lane.flow_node_refs.iter().map(ElementId::as_str).collect();
            self.line(depth, format!("lane {}{} [{}]", lane.id, quoted(&lane.name), refs.join(", ")));
            if let Some(child) = &lane.child_lane_set {
                self.lanes(depth + 1, child);
            }
        }
    }

    fn artifacts(&mut self, depth: usize, artifacts: &[Artifact]) {
        for artifact in artifacts {
            let text = match &artifact.kind {
                ArtifactKind::TextAnnotation { text } => format!("textAnnotation {} {text:?}", artifact.id),
                ArtifactKind::Association { source, target, .. } => {
                    format!("association {} {source} -> {target}", artifact.id)
                }
                ArtifactKind::Group { .. } => format!("group {}", artifact.id),
            };
            self.line(depth, text);
        }
    }

    fn flow_node(&mut self, depth: usize, node: &FlowNode) {
        let mut head = format!("{} {}{}", node.type_name(), node.id, quoted(&node.name));
        match &node.kind {
            FlowNodeKind::Event(event) => {
                match &event.position {
                    EventPosition::Start { interrupting: false } => head.push_str(" non-interrupting"),
                    EventPosition::Boundary { attached_to, cancel_activity } => {
                        let _ = write!(head, " on={attached_to}");
                        if !cancel_activity {
                            head.push_str(" non-interrupting");
                        }
                    }
                    _ => {}
                }
                if event.parallel_multiple {
                    head.push_str(" parallelMultiple");
                }
                for definition in &event.definitions {
                    let _ = write!(head, " [{}]", event_definition(&definition.kind));
                }
            }
            FlowNodeKind::Gateway(gateway) => {
                let _ = write!(head, "{}", opt("default", &gateway.default_flow));
                if let GatewayKind::EventBased { instantiate: true, .. } = gateway.kind {
                    head.push_str(" instantiate");
                }
            }
            FlowNodeKind::Activity(activity) => {
                let _ = write!(head, "{}", opt("default", &activity.default_flow));
                if activity.is_for_compensation {
                    head.push_str(" forCompensation");
                }
                match &activity.kind {
                    ActivityKind::Task(
                        TaskKind::Send { message_ref } | TaskKind::Receive { message_ref, .. },
                    ) => {
                        let _ = write!(head, "{}", opt("message", message_ref));
                    }
                    ActivityKind::CallActivity(call) => {
                        let _ = write!(head, "{}", opt("calledElement", &call.called_element));
                    }
                    _ => {}
                }
                match &activity.loop_characteristics {
                    Some(LoopCharacteristics::Standard(standard)) => {
                        let condition = standard.loop_condition.as_ref().map(|c| c.text.clone());
                        let _ = write!(head, " loop{}", opt("condition", &condition));
                    }
                    Some(LoopCharacteristics::MultiInstance(multi)) => {
                        let _ = write!(
                            head,
                            " multiInstance({})",
                            if multi.is_sequential { "sequential" } else { "parallel" }
                        );
                    }
                    None => {}
                }
            }
        }
        self.line(depth, head);
        if let Some(LoopCharacteristics::MultiInstance(multi)) =
            node.as_activity().and_then(|activity| activity.loop_characteristics.as_ref())
        {
            if let Some(cardinality) = &multi.loop_cardinality {
                self.line(depth + 1, format!("loopCardinality {}", cardinality.text));
            }
            if let Some(condition) = &multi.completion_condition {
                self.line(depth + 1, format!("completionCondition {}", condition.text));
            }
            if let Some(zeebe) = &multi.zeebe {
                self.line(
                    depth + 1,
                    format!(
                        "zeebe:loopCharacteristics{}{}{}{}",
                        opt("inputCollection", &zeebe.input_collection),
                        opt("inputElement", &zeebe.input_element),
                        opt("outputCollection", &zeebe.output_collection),
                        opt("outputElement", &zeebe.output_element)
                    ),
                );
            }
        }
        self.extensions(depth + 1, &node.extensions);
        if let Some(inner) = node.inner_scope() {
            self.scope(depth + 1, inner);
        }
    }

    fn extensions(&mut self, depth: usize, extensions: &Extensions) {
        let zeebe = &extensions.zeebe;
        if let Some(definition) = &zeebe.task_definition {
            self.line(
                depth,
                format!(
                    "zeebe:taskDefinition type={}{}",
                    definition.job_type,
                    opt("retries", &definition.retries)
                ),
            );
        }
        if let Some(mapping) = &zeebe.io_mapping {
            for input in &mapping.inputs {
                self.line(depth, format!("zeebe:input {} -> {}", input.source, input.target));
            }
            for output in &mapping.outputs {
                self.line(depth, format!("zeebe:output {} -> {}", output.source, output.target));
            }
        }
        for header in &zeebe.task_headers {
            self.line(depth, format!("zeebe:header {}={}", header.key, header.value));
        }
        if let Some(called) = &zeebe.called_element {
            self.line(
                depth,
                format!(
                    "zeebe:calledElement processId={} propagateAllChildVariables={} propagateAllParentVariables={}",
                    called.process_id, called.propagate_all_child_variables, called.propagate_all_parent_variables
                ),
            );
        }
        if let Some(decision) = &zeebe.called_decision {
            self.line(
                depth,
                format!(
                    "zeebe:calledDecision decisionId={} resultVariable={}",
                    decision.decision_id, decision.result_variable
                ),
            );
        }
        if let Some(script) = &zeebe.script {
            self.line(depth, format!("zeebe:script {} -> {}", script.expression, script.result_variable));
        }
        if let Some(form) = &zeebe.form_definition {
            self.line(
                depth,
                format!(
                    "zeebe:formDefinition{}{}{}",
                    opt("formKey", &form.form_key),
                    opt("formId", &form.form_id),
                    opt("externalReference", &form.external_reference)
                ),
            );
        }
        for form in &zeebe.user_task_forms {
            self.line(depth, format!("zeebe:userTaskForm {} ({} bytes)", form.id, form.body.len()));
        }
        if let Some(assignment) = &zeebe.assignment_definition {
            self.line(
                depth,
                format!(
                    "zeebe:assignmentDefinition{}{}{}",
                    opt("assignee", &assignment.assignee),
                    opt("candidateGroups", &assignment.candidate_groups),
                    opt("candidateUsers", &assignment.candidate_users)
                ),
            );
        }
        if let Some(schedule) = &zeebe.task_schedule {
            self.line(
                depth,
                format!(
                    "zeebe:taskSchedule{}{}",
                    opt("dueDate", &schedule.due_date),
                    opt("followUpDate", &schedule.follow_up_date)
                ),
            );
        }
        for property in &zeebe.properties {
            self.line(depth, format!("zeebe:property {}={}", property.name, property.value));
        }
        if let Some(tag) = &zeebe.version_tag {
            self.line(depth, format!("zeebe:versionTag {tag}"));
        }
        for other in &extensions.other {
            self.line(depth, format!("extension <{}>", other.name));
        }
    }
}

fn event_definition(kind: &EventDefinitionKind) -> String {
    match kind {
        EventDefinitionKind::Message { message_ref } => format!("message{}", opt("ref", message_ref)),
        EventDefinitionKind::Timer(timer) => match timer {
            TimerDefinition::Date(e) => format!("timer date={}", e.text),
            TimerDefinition::Duration(e) => format!("timer duration={}", e.text),
            TimerDefinition::Cycle(e) => format!("timer cycle={}", e.text),
            TimerDefinition::Unspecified => "timer".to_owned(),
        },
        EventDefinitionKind::Signal { signal_ref } => format!("signal{}", opt("ref", signal_ref)),
        EventDefinitionKind::Error { error_ref } => format!("error{}", opt("ref", error_ref)),
        EventDefinitionKind::Escalation { escalation_ref } => {
            format!("escalation{}", opt("ref", escalation_ref))
        }
        EventDefinitionKind::Conditional { condition } => {
            format!("conditional{}", opt("condition", &condition.as_ref().map(|c| c.text.clone())))
        }
        EventDefinitionKind::Link { name } => format!("link{}", opt("name", name)),
        EventDefinitionKind::Compensate { activity_ref, .. } => {
            format!("compensate{}", opt("activity", activity_ref))
        }
        EventDefinitionKind::Cancel => "cancel".to_owned(),
        EventDefinitionKind::Terminate => "terminate".to_owned(),
    }
}

fn xml_id(element: &XmlElement) -> String {
    element
        .attributes
        .iter()
        .find(|(name, _)| name == "id")
        .map(|(_, id)| format!(" {id}"))
        .unwrap_or_default()
}
