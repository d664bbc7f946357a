//! The runtime support table: which BPMN elements an executable process may contain. One place, so the
//! validator (BPMN0018), docs/bpmn-coverage.md and the runtime agree. It must never claim support the
//! runtime does not have: an element listed as supported here must have a runtime scenario behind it
//! once the runtime lands.

use crate::model::{
    ActivityKind, EventDefinitionKind, FlowNode, FlowNodeKind, GatewayKind, SubProcessKind, TaskKind,
};

/// Why the runtime cannot execute `node`, or `None` when it can.
pub fn unsupported_reason(node: &FlowNode) -> Option<&'static str> {
    match &node.kind {
        FlowNodeKind::Gateway(gateway) => match &gateway.kind {
            GatewayKind::Complex { .. } => {
                Some("complex gateways are not executed; use an inclusive or parallel gateway")
            }
            GatewayKind::EventBased { instantiate: true, .. } => {
                Some("event-based gateways that instantiate a process are not executed; use message or timer start events")
            }
            _ => None,
        },
        FlowNodeKind::Activity(activity) => match &activity.kind {
            ActivityKind::SubProcess(sub) => match sub.kind {
                SubProcessKind::AdHoc { .. } => Some("ad-hoc sub-processes are not executed yet"),
                SubProcessKind::Transaction { .. } => {
                    Some("transaction sub-processes (cancel semantics) are not executed yet; use an embedded sub-process with compensation")
                }
                SubProcessKind::Embedded | SubProcessKind::Event => None,
            },
            ActivityKind::Task(TaskKind::Receive { instantiate: true, .. }) => {
                Some("receive tasks that instantiate a process are not executed; use a message start event")
            }
            _ => None,
        },
        FlowNodeKind::Event(event) => {
            if event.definitions.len() > 1 {
                return Some("events with several event definitions (multiple / parallel multiple) are not executed");
            }
            match event.definition() {
                Some(EventDefinitionKind::Conditional { .. }) => Some("conditional events are not executed yet"),
                Some(EventDefinitionKind::Cancel) => {
                    Some("cancel events belong to transactions, which are not executed yet")
                }
                _ => None,
            }
        }
    }
}
