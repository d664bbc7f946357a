//! Property tests: `check` never panics, whatever is done to a BPMN file — truncated, bytes mutated, or
//! edited at the XML level (ids removed, references bent, elements duplicated or renamed, DTDs, entities,
//! deep nesting, huge values, hostile FEEL and timers). Every result keeps the parse contract (no model ⇒ an
//! error diagnostic; positions inside the document; a model can be outlined and validated; `check` is
//! deterministic). These tests never write anywhere but proptest's regression file.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::OnceLock;

use govflow_engine::outline::outline;
use govflow_engine::{check, parse, validate};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------------------

/// A Camunda Modeler 5 style executable process: zeebe extensions, timers, gateways, boundary events, an
/// embedded sub-process, and its diagram.
const EXECUTABLE: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" xmlns:di="http://www.omg.org/spec/DD/20100524/DI" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" xmlns:modeler="http://camunda.org/schema/modeler/1.0" id="Definitions_1x2y3z" targetNamespace="http://bpmn.io/schema/bpmn" exporter="Camunda Modeler" exporterVersion="5.20.0" modeler:executionPlatform="Camunda Cloud" modeler:executionPlatformVersion="8.4.0">
  <bpmn:process id="farmer-subsidy" name="Farmer subsidy application" isExecutable="true">
    <bpmn:extensionElements>
      <zeebe:versionTag value="1.2" />
    </bpmn:extensionElements>
    <bpmn:startEvent id="StartEvent_1" name="Application received">
      <bpmn:extensionElements>
        <zeebe:formDefinition formId="subsidy-application" />
      </bpmn:extensionElements>
      <bpmn:outgoing>Flow_0a1</bpmn:outgoing>
    </bpmn:startEvent>
    <bpmn:sequenceFlow id="Flow_0a1" sourceRef="StartEvent_1" targetRef="Activity_verify" />
    <bpmn:serviceTask id="Activity_verify" name="Verify identity">
      <bpmn:extensionElements>
        <zeebe:taskDefinition type="govstack.identity.verify" retries="3" />
        <zeebe:taskHeaders>
          <zeebe:header key="registry" value="national-id" />
        </zeebe:taskHeaders>
        <zeebe:ioMapping>
          <zeebe:input source="=applicant.nationalId" target="nationalId" />
          <zeebe:input source="=string length(applicant.name) &gt; 0" target="hasName" />
          <zeebe:output source="=verified" target="identityVerified" />
        </zeebe:ioMapping>
      </bpmn:extensionElements>
      <bpmn:incoming>Flow_0a1</bpmn:incoming>
      <bpmn:outgoing>Flow_0b2</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:boundaryEvent id="Event_verify_error" name="Registry down" attachedToRef="Activity_verify">
      <bpmn:outgoing>Flow_0err</bpmn:outgoing>
      <bpmn:errorEventDefinition id="ErrorEventDefinition_1" errorRef="Error_registry" />
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="Flow_0err" sourceRef="Event_verify_error" targetRef="Event_failed" />
    <bpmn:endEvent id="Event_failed" name="Failed">
      <bpmn:incoming>Flow_0err</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="Flow_0b2" sourceRef="Activity_verify" targetRef="Gateway_eligible" />
    <bpmn:exclusiveGateway id="Gateway_eligible" name="Eligible?" default="Flow_reject">
      <bpmn:incoming>Flow_0b2</bpmn:incoming>
      <bpmn:outgoing>Flow_accept</bpmn:outgoing>
      <bpmn:outgoing>Flow_reject</bpmn:outgoing>
    </bpmn:exclusiveGateway>
    <bpmn:sequenceFlow id="Flow_accept" name="yes" sourceRef="Gateway_eligible" targetRef="Gateway_fork">
      <bpmn:conditionExpression xsi:type="bpmn:tFormalExpression" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">=identityVerified and farm.hectares &lt;= 10 and count(farm.crops) &gt;= 1</bpmn:conditionExpression>
    </bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="Flow_reject" name="no" sourceRef="Gateway_eligible" targetRef="Activity_notify_reject" />
    <bpmn:sendTask id="Activity_notify_reject" name="Notify rejection">
      <bpmn:extensionElements>
        <zeebe:taskDefinition type="govstack.messaging.send" />
      </bpmn:extensionElements>
      <bpmn:incoming>Flow_reject</bpmn:incoming>
      <bpmn:outgoing>Flow_0rj</bpmn:outgoing>
    </bpmn:sendTask>
    <bpmn:sequenceFlow id="Flow_0rj" sourceRef="Activity_notify_reject" targetRef="Event_rejected" />
    <bpmn:endEvent id="Event_rejected" name="Rejected">
      <bpmn:incoming>Flow_0rj</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:parallelGateway id="Gateway_fork">
      <bpmn:incoming>Flow_accept</bpmn:incoming>
      <bpmn:outgoing>Flow_p1</bpmn:outgoing>
      <bpmn:outgoing>Flow_p2</bpmn:outgoing>
    </bpmn:parallelGateway>
    <bpmn:sequenceFlow id="Flow_p1" sourceRef="Gateway_fork" targetRef="Activity_review" />
    <bpmn:sequenceFlow id="Flow_p2" sourceRef="Gateway_fork" targetRef="Activity_inspect" />
    <bpmn:userTask id="Activity_review" name="Review application">
      <bpmn:extensionElements>
        <zeebe:assignmentDefinition candidateGroups="extension-officers" />
        <zeebe:taskSchedule dueDate="=now() + duration(&quot;P5D&quot;)" />
        <zeebe:formDefinition formId="review-form" />
      </bpmn:extensionElements>
      <bpmn:incoming>Flow_p1</bpmn:incoming>
      <bpmn:outgoing>Flow_p3</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:boundaryEvent id="Event_remind" name="Daily reminder" cancelActivity="false" attachedToRef="Activity_review">
      <bpmn:outgoing>Flow_remind</bpmn:outgoing>
      <bpmn:timerEventDefinition id="TimerEventDefinition_remind">
        <bpmn:timeCycle xsi:type="bpmn:tFormalExpression" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">R/PT24H</bpmn:timeCycle>
      </bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="Flow_remind" sourceRef="Event_remind" targetRef="Activity_reminder" />
    <bpmn:serviceTask id="Activity_reminder" name="Send reminder">
      <bpmn:extensionElements>
        <zeebe:taskDefinition type="govstack.messaging.send" />
      </bpmn:extensionElements>
      <bpmn:incoming>Flow_remind</bpmn:incoming>
      <bpmn:outgoing>Flow_remind_end</bpmn:outgoing>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="Flow_remind_end" sourceRef="Activity_reminder" targetRef="Event_reminded" />
    <bpmn:endEvent id="Event_reminded">
      <bpmn:incoming>Flow_remind_end</bpmn:incoming>
    </bpmn:endEvent>
    <bpmn:subProcess id="Activity_inspect" name="Field inspection">
      <bpmn:incoming>Flow_p2</bpmn:incoming>
      <bpmn:outgoing>Flow_p4</bpmn:outgoing>
      <bpmn:multiInstanceLoopCharacteristics>
        <bpmn:extensionElements>
          <zeebe:loopCharacteristics inputCollection="=farm.plots" inputElement="plot" outputCollection="reports" outputElement="=report" />
        </bpmn:extensionElements>
      </bpmn:multiInstanceLoopCharacteristics>
      <bpmn:startEvent id="Event_inspect_start">
        <bpmn:outgoing>Flow_i1</bpmn:outgoing>
      </bpmn:startEvent>
      <bpmn:sequenceFlow id="Flow_i1" sourceRef="Event_inspect_start" targetRef="Event_wait" />
      <bpmn:intermediateCatchEvent id="Event_wait" name="Wait for visit slot">
        <bpmn:incoming>Flow_i1</bpmn:incoming>
        <bpmn:outgoing>Flow_i2</bpmn:outgoing>
        <bpmn:timerEventDefinition id="TimerEventDefinition_wait">
          <bpmn:timeDuration xsi:type="bpmn:tFormalExpression" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">P2DT4H</bpmn:timeDuration>
        </bpmn:timerEventDefinition>
      </bpmn:intermediateCatchEvent>
      <bpmn:sequenceFlow id="Flow_i2" sourceRef="Event_wait" targetRef="Activity_visit" />
      <bpmn:scriptTask id="Activity_visit" name="Score plot">
        <bpmn:extensionElements>
          <zeebe:script expression="=if plot.irrigated then plot.area * 2 else plot.area" resultVariable="report" />
        </bpmn:extensionElements>
        <bpmn:incoming>Flow_i2</bpmn:incoming>
        <bpmn:outgoing>Flow_i3</bpmn:outgoing>
      </bpmn:scriptTask>
      <bpmn:sequenceFlow id="Flow_i3" sourceRef="Activity_visit" targetRef="Event_inspect_end" />
      <bpmn:endEvent id="Event_inspect_end">
        <bpmn:incoming>Flow_i3</bpmn:incoming>
      </bpmn:endEvent>
    </bpmn:subProcess>
    <bpmn:boundaryEvent id="Event_inspect_timeout" name="30 days" attachedToRef="Activity_inspect">
      <bpmn:outgoing>Flow_timeout</bpmn:outgoing>
      <bpmn:timerEventDefinition id="TimerEventDefinition_timeout">
        <bpmn:timeDuration xsi:type="bpmn:tFormalExpression" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">P30D</bpmn:timeDuration>
      </bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="Flow_timeout" sourceRef="Event_inspect_timeout" targetRef="Event_failed_timeout" />
    <bpmn:endEvent id="Event_failed_timeout">
      <bpmn:incoming>Flow_timeout</bpmn:incoming>
      <bpmn:terminateEventDefinition id="TerminateEventDefinition_1" />
    </bpmn:endEvent>
    <bpmn:sequenceFlow id="Flow_p3" sourceRef="Activity_review" targetRef="Gateway_join" />
    <bpmn:sequenceFlow id="Flow_p4" sourceRef="Activity_inspect" targetRef="Gateway_join" />
    <bpmn:parallelGateway id="Gateway_join">
      <bpmn:incoming>Flow_p3</bpmn:incoming>
      <bpmn:incoming>Flow_p4</bpmn:incoming>
      <bpmn:outgoing>Flow_pay</bpmn:outgoing>
    </bpmn:parallelGateway>
    <bpmn:sequenceFlow id="Flow_pay" sourceRef="Gateway_join" targetRef="Activity_payment" />
    <bpmn:receiveTask id="Activity_payment" name="Await payment confirmation" messageRef="Message_paid">
      <bpmn:incoming>Flow_pay</bpmn:incoming>
      <bpmn:outgoing>Flow_done</bpmn:outgoing>
    </bpmn:receiveTask>
    <bpmn:sequenceFlow id="Flow_done" sourceRef="Activity_payment" targetRef="Event_paid" />
    <bpmn:endEvent id="Event_paid" name="Subsidy paid">
      <bpmn:incoming>Flow_done</bpmn:incoming>
    </bpmn:endEvent>
  </bpmn:process>
  <bpmn:error id="Error_registry" name="Registry unavailable" errorCode="REGISTRY_DOWN" />
  <bpmn:message id="Message_paid" name="payment-confirmed">
    <bpmn:extensionElements>
      <zeebe:subscription correlationKey="=applicationId" />
    </bpmn:extensionElements>
  </bpmn:message>
  <bpmndi:BPMNDiagram id="BPMNDiagram_1">
    <bpmndi:BPMNPlane id="BPMNPlane_1" bpmnElement="farmer-subsidy">
      <bpmndi:BPMNShape id="_BPMNShape_StartEvent_2" bpmnElement="StartEvent_1">
        <dc:Bounds x="179" y="159" width="36" height="36" />
        <bpmndi:BPMNLabel>
          <dc:Bounds x="160" y="202" width="75" height="27" />
        </bpmndi:BPMNLabel>
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="Activity_verify_di" bpmnElement="Activity_verify">
        <dc:Bounds x="270" y="137" width="100" height="80" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="Gateway_eligible_di" bpmnElement="Gateway_eligible" isMarkerVisible="true">
        <dc:Bounds x="425" y="152" width="50" height="50" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="Activity_inspect_di" bpmnElement="Activity_inspect" isExpanded="true">
        <dc:Bounds x="620" y="300" width="420" height="160" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNEdge id="Flow_0a1_di" bpmnElement="Flow_0a1">
        <di:waypoint x="215" y="177" />
        <di:waypoint x="270" y="177" />
      </bpmndi:BPMNEdge>
      <bpmndi:BPMNEdge id="Flow_accept_di" bpmnElement="Flow_accept">
        <di:waypoint x="475" y="177" />
        <di:waypoint x="535" y="177" />
        <bpmndi:BPMNLabel>
          <dc:Bounds x="496" y="159" width="18" height="14" />
        </bpmndi:BPMNLabel>
      </bpmndi:BPMNEdge>
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</bpmn:definitions>
"##;

/// A collaboration of two pools with lanes, message flows, data objects and artifacts; one process is
/// executable, the other (the citizen's) is not.
const COLLABORATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" xmlns:di="http://www.omg.org/spec/DD/20100524/DI" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" xmlns:tns="http://govflow.example/birth" id="birth-registration" targetNamespace="http://govflow.example/birth" exporter="bpmn-js (https://demo.bpmn.io)" exporterVersion="17.0.2">
  <collaboration id="Collaboration_birth">
    <participant id="Participant_citizen" name="Parent" processRef="Process_citizen" />
    <participant id="Participant_registry" name="Civil registry" processRef="tns:Process_registry" />
    <messageFlow id="MessageFlow_apply" name="application" sourceRef="Task_submit" targetRef="StartEvent_registry" />
    <messageFlow id="MessageFlow_certificate" sourceRef="Task_issue" targetRef="Event_certificate" />
    <textAnnotation id="TextAnnotation_sla">
      <text>Certificates are issued within 5 working days</text>
    </textAnnotation>
    <association id="Association_sla" sourceRef="Participant_registry" targetRef="TextAnnotation_sla" />
  </collaboration>
  <process id="Process_citizen" name="Parent" isExecutable="false">
    <startEvent id="StartEvent_citizen" name="Child born" />
    <sequenceFlow id="Flow_c1" sourceRef="StartEvent_citizen" targetRef="Task_submit" />
    <task id="Task_submit" name="Submit application" />
    <sequenceFlow id="Flow_c2" sourceRef="Task_submit" targetRef="Event_certificate" />
    <intermediateCatchEvent id="Event_certificate" name="Certificate received">
      <messageEventDefinition id="MessageEventDefinition_cert" />
    </intermediateCatchEvent>
    <sequenceFlow id="Flow_c3" sourceRef="Event_certificate" targetRef="EndEvent_citizen" />
    <endEvent id="EndEvent_citizen" />
  </process>
  <process id="Process_registry" name="Civil registry" isExecutable="true">
    <laneSet id="LaneSet_registry">
      <lane id="Lane_clerk" name="Clerk">
        <flowNodeRef>StartEvent_registry</flowNodeRef>
        <flowNodeRef>Task_check</flowNodeRef>
        <flowNodeRef>Gateway_complete</flowNodeRef>
        <flowNodeRef>Task_request_info</flowNodeRef>
        <flowNodeRef>Event_info_received</flowNodeRef>
      </lane>
      <lane id="Lane_registrar" name="Registrar">
        <flowNodeRef>Task_issue</flowNodeRef>
        <flowNodeRef>EndEvent_registry</flowNodeRef>
        <childLaneSet id="LaneSet_nested">
          <lane id="Lane_deputy" name="Deputy registrar" />
        </childLaneSet>
      </lane>
    </laneSet>
    <startEvent id="StartEvent_registry" name="Application received">
      <messageEventDefinition id="MessageEventDefinition_apply" messageRef="Message_application" />
    </startEvent>
    <sequenceFlow id="Flow_r1" sourceRef="StartEvent_registry" targetRef="Task_check" />
    <userTask id="Task_check" name="Check documents">
      <extensionElements>
        <zeebe:assignmentDefinition assignee="=clerk" candidateGroups="clerks, supervisors" />
        <zeebe:ioMapping>
          <zeebe:output source="=documents.complete" target="complete" />
        </zeebe:ioMapping>
      </extensionElements>
      <dataInputAssociation id="DataInputAssociation_form">
        <sourceRef>DataObjectReference_form</sourceRef>
      </dataInputAssociation>
    </userTask>
    <dataObjectReference id="DataObjectReference_form" name="Application form" dataObjectRef="DataObject_form" />
    <dataObject id="DataObject_form" />
    <sequenceFlow id="Flow_r2" sourceRef="Task_check" targetRef="Gateway_complete" />
    <exclusiveGateway id="Gateway_complete" name="Complete?" default="Flow_r_incomplete" />
    <sequenceFlow id="Flow_r_complete" sourceRef="Gateway_complete" targetRef="Task_issue">
      <conditionExpression>=complete = true</conditionExpression>
    </sequenceFlow>
    <sequenceFlow id="Flow_r_incomplete" sourceRef="Gateway_complete" targetRef="Task_request_info" />
    <sendTask id="Task_request_info" name="Request missing documents">
      <extensionElements>
        <zeebe:taskDefinition type="govstack.messaging.send" retries="=3" />
      </extensionElements>
    </sendTask>
    <sequenceFlow id="Flow_r3" sourceRef="Task_request_info" targetRef="Event_info_received" />
    <intermediateCatchEvent id="Event_info_received" name="Documents received">
      <messageEventDefinition id="MessageEventDefinition_docs" messageRef="Message_documents" />
    </intermediateCatchEvent>
    <sequenceFlow id="Flow_r4" sourceRef="Event_info_received" targetRef="Task_check" />
    <serviceTask id="Task_issue" name="Issue certificate">
      <extensionElements>
        <zeebe:taskDefinition type="govstack.registration.issue" />
      </extensionElements>
    </serviceTask>
    <sequenceFlow id="Flow_r5" sourceRef="Task_issue" targetRef="EndEvent_registry" />
    <endEvent id="EndEvent_registry" name="Registered" />
  </process>
  <message id="Message_application" name="birth-application">
    <extensionElements>
      <zeebe:subscription correlationKey="=applicationId" />
    </extensionElements>
  </message>
  <message id="Message_documents" name="documents-submitted">
    <extensionElements>
      <zeebe:subscription correlationKey="=applicationId" />
    </extensionElements>
  </message>
  <bpmndi:BPMNDiagram id="BPMNDiagram_birth">
    <bpmndi:BPMNPlane id="BPMNPlane_birth" bpmnElement="Collaboration_birth">
      <bpmndi:BPMNShape id="Participant_citizen_di" bpmnElement="Participant_citizen" isHorizontal="true">
        <dc:Bounds x="120" y="60" width="900" height="160" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="Participant_registry_di" bpmnElement="Participant_registry" isHorizontal="true">
        <dc:Bounds x="120" y="280" width="900" height="360" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="Lane_clerk_di" bpmnElement="Lane_clerk" isHorizontal="true">
        <dc:Bounds x="150" y="280" width="870" height="180" />
      </bpmndi:BPMNShape>
      <bpmndi:BPMNEdge id="MessageFlow_apply_di" bpmnElement="MessageFlow_apply">
        <di:waypoint x="300" y="180" />
        <di:waypoint x="300" y="342" />
      </bpmndi:BPMNEdge>
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</definitions>
"#;

/// Small and FEEL/timer heavy: every timer form, an event-based gateway, a call activity, a business
/// rule task, signal/escalation definitions and an event sub-process.
const EXPRESSIONS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn2:definitions xmlns:bpmn2="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="Definitions_expr" targetNamespace="http://govflow.example/expr">
  <bpmn2:process id="expressions" isExecutable="true">
    <bpmn2:startEvent id="start">
      <bpmn2:timerEventDefinition id="start_timer"><bpmn2:timeCycle>0 0 9 * * MON-FRI@Africa/Nairobi</bpmn2:timeCycle></bpmn2:timerEventDefinition>
    </bpmn2:startEvent>
    <bpmn2:sequenceFlow id="f1" sourceRef="start" targetRef="rule" />
    <bpmn2:businessRuleTask id="rule" name="Decide">
      <bpmn2:extensionElements>
        <zeebe:calledDecision decisionId="eligibility" resultVariable="decision" />
        <zeebe:ioMapping>
          <zeebe:input source="={name: applicant.name, age: years and months duration(date(applicant.born), today()).years}" target="input" />
          <zeebe:input source="=for i in 1..3 return i * 2" target="doubles" />
          <zeebe:input source="=some x in [1, 2, 3] satisfies x &gt; 2" target="any" />
          <zeebe:input source="=list[item.amount &gt; 100].id" target="big.ids" />
        </zeebe:ioMapping>
      </bpmn2:extensionElements>
    </bpmn2:businessRuleTask>
    <bpmn2:sequenceFlow id="f2" sourceRef="rule" targetRef="split" />
    <bpmn2:inclusiveGateway id="split" default="f_other" />
    <bpmn2:sequenceFlow id="f_a" sourceRef="split" targetRef="call">
      <bpmn2:conditionExpression>=decision.score &gt;= 0.5 and not(decision.flagged)</bpmn2:conditionExpression>
    </bpmn2:sequenceFlow>
    <bpmn2:sequenceFlow id="f_other" sourceRef="split" targetRef="wait" />
    <bpmn2:callActivity id="call" name="Pay">
      <bpmn2:extensionElements>
        <zeebe:calledElement processId="=&quot;payment-&quot; + country" propagateAllChildVariables="false" />
      </bpmn2:extensionElements>
      <bpmn2:multiInstanceLoopCharacteristics isSequential="true">
        <bpmn2:loopCardinality>=count(payees)</bpmn2:loopCardinality>
        <bpmn2:completionCondition>=numberOfCompletedInstances &gt;= 2</bpmn2:completionCondition>
      </bpmn2:multiInstanceLoopCharacteristics>
    </bpmn2:callActivity>
    <bpmn2:boundaryEvent id="call_reminder" cancelActivity="false" attachedToRef="call">
      <bpmn2:timerEventDefinition id="reminder_timer"><bpmn2:timeCycle>R3/2027-01-31T09:00:00+03:00/P1M</bpmn2:timeCycle></bpmn2:timerEventDefinition>
    </bpmn2:boundaryEvent>
    <bpmn2:sequenceFlow id="f_reminder" sourceRef="call_reminder" targetRef="reminded" />
    <bpmn2:endEvent id="reminded" />
    <bpmn2:sequenceFlow id="f3" sourceRef="call" targetRef="end" />
    <bpmn2:eventBasedGateway id="wait" />
    <bpmn2:sequenceFlow id="f4" sourceRef="wait" targetRef="deadline" />
    <bpmn2:sequenceFlow id="f5" sourceRef="wait" targetRef="signal" />
    <bpmn2:intermediateCatchEvent id="deadline">
      <bpmn2:timerEventDefinition id="deadline_timer"><bpmn2:timeDate>2027-03-28T03:30:00@Europe/Berlin</bpmn2:timeDate></bpmn2:timerEventDefinition>
    </bpmn2:intermediateCatchEvent>
    <bpmn2:intermediateCatchEvent id="signal">
      <bpmn2:signalEventDefinition id="signal_def" signalRef="Signal_recall" />
    </bpmn2:intermediateCatchEvent>
    <bpmn2:sequenceFlow id="f6" sourceRef="deadline" targetRef="escalate" />
    <bpmn2:sequenceFlow id="f7" sourceRef="signal" targetRef="end" />
    <bpmn2:intermediateThrowEvent id="escalate">
      <bpmn2:escalationEventDefinition id="esc_def" escalationRef="Escalation_late" />
    </bpmn2:intermediateThrowEvent>
    <bpmn2:sequenceFlow id="f8" sourceRef="escalate" targetRef="end" />
    <bpmn2:endEvent id="end" />
    <bpmn2:subProcess id="on_late" triggeredByEvent="true">
      <bpmn2:startEvent id="late_start" isInterrupting="false">
        <bpmn2:escalationEventDefinition id="late_def" escalationRef="Escalation_late" />
      </bpmn2:startEvent>
      <bpmn2:sequenceFlow id="l1" sourceRef="late_start" targetRef="late_wait" />
      <bpmn2:intermediateCatchEvent id="late_wait">
        <bpmn2:timerEventDefinition id="late_timer"><bpmn2:timeDuration>PT1H30M</bpmn2:timeDuration></bpmn2:timerEventDefinition>
      </bpmn2:intermediateCatchEvent>
      <bpmn2:sequenceFlow id="l2" sourceRef="late_wait" targetRef="late_end" />
      <bpmn2:endEvent id="late_end" />
    </bpmn2:subProcess>
  </bpmn2:process>
  <bpmn2:signal id="Signal_recall" name="recall" />
  <bpmn2:escalation id="Escalation_late" name="late" escalationCode="LATE" />
</bpmn2:definitions>
"#;

struct Seed {
    name: String,
    bytes: Vec<u8>,
    /// The document as text, when it is UTF-8 (structure-aware edits and position checks need it).
    text: Option<String>,
}

/// The embedded seeds, then every `*.bpmn` under `engine/test_data/parse/ok/` (when the folder exists).
fn seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<Seed> =
            [("EXECUTABLE", EXECUTABLE), ("COLLABORATION", COLLABORATION), ("EXPRESSIONS", EXPRESSIONS)]
                .into_iter()
                .map(|(name, text)| Seed {
                    name: name.to_owned(),
                    bytes: text.as_bytes().to_vec(),
                    text: Some(text.to_owned()),
                })
                .collect();
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/parse/ok");
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .map(|entries| entries.filter_map(|entry| Some(entry.ok()?.path())).collect())
            .unwrap_or_default();
        files.retain(|path| path.extension().is_some_and(|ext| ext == "bpmn"));
        files.sort();
        for path in files {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let text = String::from_utf8(bytes.clone()).ok();
            seeds.push(Seed { name: path.display().to_string(), bytes, text });
        }
        seeds
    })
}

#[test]
fn embedded_seeds_are_valid_models() {
    for (name, text) in
        [("EXECUTABLE", EXECUTABLE), ("COLLABORATION", COLLABORATION), ("EXPRESSIONS", EXPRESSIONS)]
    {
        let parsed = check(text.as_bytes());
        let errors: Vec<String> =
            parsed.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
        assert!(parsed.definitions.is_some(), "{name}: no model");
        assert!(
            errors.is_empty(),
            "{name}: seeds should be clean so mutations start from a valid file:\n{}",
            errors.join("\n")
        );
    }
}

/// `cases` by default; `PROPTEST_CASES=n` runs n cases instead (for a long hunt: see docs/testing.md).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------------------------------------
// The contract every input must keep
// ---------------------------------------------------------------------------------------------------------

/// Runs `check` and asserts the parse contract. `text` is the document as the engine will decode it
/// (UTF-8), when known, to check positions.
fn assert_contract(bytes: &[u8], text: Option<&str>) {
    let parsed = check(bytes);
    if parsed.definitions.is_none() {
        assert!(
            parsed.diagnostics.iter().any(|d| d.is_error()),
            "no model but no error diagnostic: {:?}",
            parsed.diagnostics
        );
    }
    if let Some(text) = text {
        let lines: Vec<&str> = text.split('\n').collect();
        for diagnostic in &parsed.diagnostics {
            let pos = diagnostic.pos;
            if !pos.is_known() {
                assert_eq!(pos.column, 0, "unknown position with a column: {diagnostic}");
                continue;
            }
            let line = usize::try_from(pos.line).unwrap();
            assert!(
                line <= lines.len(),
                "line {line} beyond the {} lines of the document: {diagnostic}",
                lines.len()
            );
            let n_chars = lines[line - 1].chars().count();
            let column = usize::try_from(pos.column).unwrap();
            assert!(
                (1..=n_chars + 1).contains(&column),
                "column {column} outside line {line} ({n_chars} chars): {diagnostic}"
            );
        }
    }
    if let Some(definitions) = &parsed.definitions {
        let first = outline(definitions);
        assert_eq!(first, outline(definitions), "outline is not deterministic");
        // `check` is `parse` followed by `validate`, and both are deterministic.
        let parse_only = parse(bytes);
        assert_eq!(parse_only.definitions.as_ref(), Some(definitions), "parse is not deterministic");
        let mut expected = parse_only.diagnostics;
        expected.extend(validate(definitions));
        assert_eq!(expected, parsed.diagnostics, "check != parse + validate, or not deterministic");
        let again = check(bytes);
        assert_eq!(again.diagnostics, parsed.diagnostics, "check is not deterministic");
    }
}

// ---------------------------------------------------------------------------------------------------------
// (a) truncation
// ---------------------------------------------------------------------------------------------------------

/// Every prefix of the small seeds; for larger ones, every prefix near both ends and a spread between
/// (reading a prefix costs its length, so all prefixes of every seed would take a minute in debug).
#[test]
fn every_truncation_is_answered_with_diagnostics() {
    const ALL_PREFIXES_UP_TO: usize = 5 * 1024;
    const ENDS: usize = 64;
    const SPREAD: usize = 97;
    for seed in seeds() {
        let len = seed.bytes.len();
        let cuts: Vec<usize> = if len <= ALL_PREFIXES_UP_TO {
            (0..=len).collect()
        } else {
            let step = (len - 2 * ENDS) / SPREAD;
            (0..ENDS).chain((ENDS..len - ENDS).step_by(step)).chain(len - ENDS..=len).collect()
        };
        for cut in cuts {
            let prefix = &seed.bytes[..cut];
            let text = std::str::from_utf8(prefix).ok().filter(|_| seed.text.is_some());
            let result = std::panic::catch_unwind(|| assert_contract(prefix, text));
            assert!(result.is_ok(), "{}: truncation at byte {cut} of {len} broke the contract", seed.name);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// (b) byte mutations
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum ByteEdit {
    Flip { at: Index, bit: u8 },
    Insert { at: Index, byte: u8 },
    Delete { at: Index, len: usize },
    Duplicate { from: Index, len: usize, to: Index },
    Swap { a: Index, b: Index, len: usize },
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| ByteEdit::Flip { at, bit }),
        (
            any::<Index>(),
            prop_oneof![any::<u8>(), Just(b'<'), Just(b'>'), Just(b'"'), Just(b'&'), Just(b'/')]
        )
            .prop_map(|(at, byte)| ByteEdit::Insert { at, byte }),
        (any::<Index>(), 1..64usize).prop_map(|(at, len)| ByteEdit::Delete { at, len }),
        (any::<Index>(), 1..256usize, any::<Index>()).prop_map(|(from, len, to)| ByteEdit::Duplicate {
            from,
            len,
            to
        }),
        (any::<Index>(), any::<Index>(), 1..128usize).prop_map(|(a, b, len)| ByteEdit::Swap { a, b, len }),
    ]
}

fn apply_byte_edit(bytes: &mut Vec<u8>, edit: &ByteEdit) {
    if bytes.is_empty() {
        bytes.push(b'<');
        return;
    }
    let n = bytes.len();
    match *edit {
        ByteEdit::Flip { ref at, bit } => bytes[at.index(n)] ^= 1 << bit,
        ByteEdit::Insert { ref at, byte } => bytes.insert(at.index(n + 1), byte),
        ByteEdit::Delete { ref at, len } => {
            let start = at.index(n);
            bytes.drain(start..(start + len).min(n));
        }
        ByteEdit::Duplicate { ref from, len, ref to } => {
            let start = from.index(n);
            let span = bytes[start..(start + len).min(n)].to_vec();
            let to = to.index(n + 1);
            bytes.splice(to..to, span);
        }
        ByteEdit::Swap { ref a, ref b, len } => {
            let (a, b) = (a.index(n), b.index(n));
            let (first, second) = (a.min(b), a.max(b));
            let len = len.min(second - first).min(n - second);
            if len > 0 {
                let (left, right) = bytes.split_at_mut(second);
                left[first..first + len].swap_with_slice(&mut right[..len]);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn byte_mutations_never_panic(seed in any::<Index>(), edits in prop::collection::vec(byte_edit(), 1..6)) {
        let seed = seed.get(seeds());
        let mut bytes = seed.bytes.clone();
        for edit in &edits {
            apply_byte_edit(&mut bytes, edit);
        }
        // Positions are checked only when the engine will read the bytes as the same UTF-8 text (a
        // mutation may have changed the declared encoding or produced a byte-order mark).
        let same_encoding = seed.text.is_some() && bytes.get(..60) == seed.bytes.get(..60);
        let text = std::str::from_utf8(&bytes).ok().filter(|_| same_encoding);
        assert_contract(&bytes, text);
    }
}

// ---------------------------------------------------------------------------------------------------------
// (c) structure-aware mutations
// ---------------------------------------------------------------------------------------------------------

/// One XML-level edit. Indexes pick among the candidates present in the current text (attributes, ids,
/// references, lines, elements, ...); an edit with no candidate leaves the text as it is.
#[derive(Debug, Clone)]
enum Edit {
    RemoveAttribute(Index),
    RemoveId(Index),
    /// Points a reference attribute at another element's id (possibly of the wrong kind).
    Retarget {
        reference: Index,
        id: Index,
    },
    /// Gives a reference or id attribute an arbitrary value.
    Rename {
        attribute: Index,
        value: String,
    },
    DuplicateLine(Index),
    DeleteLine(Index),
    DuplicateElement(Index),
    DeleteElement(Index),
    /// Renames every tag `prefix:from` to `prefix:to` (start and end tags alike).
    RenameElement {
        element: Index,
        to: &'static str,
    },
    MoveElement {
        element: Index,
        to: Index,
    },
    InjectDoctype {
        at: Index,
        doctype: &'static str,
    },
    InjectEntity {
        at: Index,
        entity: &'static str,
    },
    InjectNesting {
        at: Index,
        depth: usize,
        name: &'static str,
    },
    HugeAttribute {
        attribute: Index,
        fill: char,
        len: usize,
    },
    InsertUnicode {
        at: Index,
        text: String,
    },
    ReplaceFeel {
        target: Index,
        feel: String,
        escape: bool,
    },
    ReplaceTimer {
        target: Index,
        timer: String,
    },
    SetAttribute {
        element: Index,
        name: &'static str,
        value: String,
    },
}

const REFERENCE_ATTRIBUTES: &[&str] = &[
    "sourceRef",
    "targetRef",
    "attachedToRef",
    "default",
    "messageRef",
    "processRef",
    "bpmnElement",
    "signalRef",
    "errorRef",
    "escalationRef",
    "dataObjectRef",
    "calledElement",
];

const ELEMENT_NAMES: &[&str] = &[
    "task",
    "serviceTask",
    "userTask",
    "scriptTask",
    "sendTask",
    "receiveTask",
    "businessRuleTask",
    "manualTask",
    "callActivity",
    "subProcess",
    "transaction",
    "adHocSubProcess",
    "startEvent",
    "endEvent",
    "intermediateCatchEvent",
    "intermediateThrowEvent",
    "boundaryEvent",
    "exclusiveGateway",
    "parallelGateway",
    "inclusiveGateway",
    "eventBasedGateway",
    "complexGateway",
    "sequenceFlow",
    "messageFlow",
    "process",
    "collaboration",
    "participant",
    "lane",
    "laneSet",
    "extensionElements",
    "conditionExpression",
    "timerEventDefinition",
    "messageEventDefinition",
    "errorEventDefinition",
    "signalEventDefinition",
    "compensateEventDefinition",
    "linkEventDefinition",
    "multiInstanceLoopCharacteristics",
    "standardLoopCharacteristics",
    "timeDate",
    "timeDuration",
    "timeCycle",
    "taskDefinition",
    "ioMapping",
    "input",
    "output",
    "subscription",
    "calledElement",
    "loopCharacteristics",
    "definitions",
    "BPMNShape",
    "Bounds",
    "waypoint",
    "noSuchElement",
];

/// Attributes worth setting anywhere: booleans, numbers and references with a meaning to the parser.
const SET_ATTRIBUTES: &[&str] = &[
    "isExecutable",
    "cancelActivity",
    "isInterrupting",
    "triggeredByEvent",
    "isSequential",
    "default",
    "attachedToRef",
    "sourceRef",
    "targetRef",
    "id",
    "x",
    "width",
    "isHorizontal",
    "type",
    "retries",
    "source",
    "target",
    "inputCollection",
    "correlationKey",
    "processId",
    "expression",
    "resultVariable",
    "decisionId",
];

const DOCTYPES: &[&str] = &[
    "<!DOCTYPE definitions>",
    "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>",
    "<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>",
    "<!DOCTYPE foo SYSTEM \"http://example.invalid/x.dtd\">",
    "<!DOCTYPE",
];

const ENTITIES: &[&str] = &[
    "&x;",
    "&lol2;",
    "&amp;",
    "&lt;",
    "&#0;",
    "&#x110000;",
    "&#xD800;",
    "&#65;",
    "&#x1F600;",
    "&",
    "&#;",
    "&#x;",
    "&amp",
];

const NESTING_NAMES: &[&str] =
    &["a", "bpmn:subProcess", "bpmn:extensionElements", "zeebe:ioMapping", "bpmn:documentation"];

fn edit() -> impl Strategy<Value = Edit> {
    let short_value = prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        Just("tns:".to_owned()),
        Just("a:b:c".to_owned()),
        "[A-Za-z_][A-Za-z0-9_.:-]{0,12}",
        "\\PC{0,6}",
    ];
    prop_oneof![
        any::<Index>().prop_map(Edit::RemoveAttribute),
        any::<Index>().prop_map(Edit::RemoveId),
        (any::<Index>(), any::<Index>()).prop_map(|(reference, id)| Edit::Retarget { reference, id }),
        (any::<Index>(), short_value.clone())
            .prop_map(|(attribute, value)| Edit::Rename { attribute, value }),
        any::<Index>().prop_map(Edit::DuplicateLine),
        any::<Index>().prop_map(Edit::DeleteLine),
        any::<Index>().prop_map(Edit::DuplicateElement),
        any::<Index>().prop_map(Edit::DeleteElement),
        (any::<Index>(), prop::sample::select(ELEMENT_NAMES))
            .prop_map(|(element, to)| Edit::RenameElement { element, to }),
        (any::<Index>(), any::<Index>()).prop_map(|(element, to)| Edit::MoveElement { element, to }),
        (any::<Index>(), prop::sample::select(DOCTYPES))
            .prop_map(|(at, doctype)| Edit::InjectDoctype { at, doctype }),
        (any::<Index>(), prop::sample::select(ENTITIES))
            .prop_map(|(at, entity)| Edit::InjectEntity { at, entity }),
        (
            any::<Index>(),
            prop_oneof![1..8usize, Just(255usize), Just(256usize), Just(2000usize)],
            prop::sample::select(NESTING_NAMES)
        )
            .prop_map(|(at, depth, name)| Edit::InjectNesting { at, depth, name }),
        (
            any::<Index>(),
            prop::sample::select(vec!['a', '(', '-', ' ', '1', '\u{540d}', '=', '[']),
            prop_oneof![Just(4096usize), Just(70_000usize), Just(1_000_000usize)]
        )
            .prop_map(|(attribute, fill, len)| Edit::HugeAttribute { attribute, fill, len }),
        (
            any::<Index>(),
            "\\PC{1,8}|[\u{0}-\u{1f}\u{7f}-\u{9f}\u{fffe}\u{feff}\u{200b}-\u{200f}\u{2028}\u{2029}]{1,3}"
        )
            .prop_map(|(at, text)| Edit::InsertUnicode { at, text }),
        (any::<Index>(), feel(), any::<bool>()).prop_map(|(target, feel, escape)| Edit::ReplaceFeel {
            target,
            feel,
            escape
        }),
        (any::<Index>(), timer()).prop_map(|(target, timer)| Edit::ReplaceTimer { target, timer }),
        (any::<Index>(), prop::sample::select(SET_ATTRIBUTES), short_value.clone())
            .prop_map(|(element, name, value)| Edit::SetAttribute { element, name, value }),
    ]
}

/// FEEL-ish token soup, short: the dsntk parser is slow on long expressions with many names (see
/// docs/testing.md), and short soups reach its error paths just as well.
fn feel() -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        "a",
        "b",
        "x",
        "order",
        "total",
        "item",
        "?",
        "0",
        "1",
        "-1",
        "1.5",
        ".5",
        "1e400",
        "99999999999999999999999999",
        "\"s\"",
        "\"",
        "\"\\u0000\"",
        "\"\\\"",
        "+",
        "-",
        "*",
        "/",
        "**",
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "..",
        "if",
        "then",
        "else",
        "for",
        "in",
        "return",
        "some",
        "every",
        "satisfies",
        "and",
        "or",
        "not",
        "between",
        "instance of",
        "function",
        "external",
        "null",
        "true",
        "false",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        ".",
        "@",
        "#",
        "@\"2027-01-01\"",
        "@\"P1D\"",
        "@\"\"",
        "date(\"2027-01-01\")",
        "date and time(",
        "duration(\"P1D\")",
        "string length(",
        "sum(",
        "count(",
        "now()",
        "today()",
        "get value(",
        "é",
        "名",
        "\u{1F600}",
        "\\",
        "'",
        "`",
        "\u{0}",
        "\t",
        "\n",
        "x.y",
        "[1, 2, 3]",
        "{a: 1}",
        "{\"k\": {",
        "f(a: 1)",
        "list[item > 2]",
        "a.b.c",
        "years and months duration(",
    ];
    prop::collection::vec(prop::sample::select(TOKENS), 0..14)
        .prop_map(|tokens| format!("={}", tokens.join(" ")))
}

/// Timer-ish text: ISO 8601 pieces, cron fields, zones, and numbers at the edge of u32.
fn timer() -> impl Strategy<Value = String> {
    const TOKENS: &[&str] = &[
        "P",
        "T",
        "R",
        "R0",
        "R5",
        "R4294967295",
        "R4294967296",
        "/",
        "Y",
        "M",
        "W",
        "D",
        "H",
        "S",
        "0",
        "1",
        "12",
        "4294967295",
        "4294967296",
        "99999999999999999999",
        ".",
        ",",
        ".5",
        ",250",
        "-",
        "+",
        ":",
        "Z",
        "z",
        "@",
        "@Europe/Berlin",
        "@No/Zone",
        "[Europe/Paris]",
        "[",
        "]",
        "2027-01-01T09:00:00",
        "2027-03-28T02:30:00",
        "9999-12-31T23:59:59",
        "+262143-12-31T23:59:59",
        "0000-01-01T00:00:00",
        "2027-02-30T00:00",
        "+03:00",
        "+99:99",
        "-00:00",
        "+0300",
        "+03",
        " ",
        "*",
        "?",
        "L",
        "#",
        "1-5",
        "*/0",
        "*/2",
        "0/0",
        "SUN-SAT",
        "7-1",
        "MON-FRI",
        "0 0 9 * * MON-FRI",
        "0 0 0 30 2 *",
        "* * * * * * 2101",
        "@daily",
        "@hourly",
        "@every",
        "P1D",
        "PT1S",
        "P0D",
        "PT0.0001S",
        "PT1,5S",
        "é",
    ];
    prop::collection::vec(prop::sample::select(TOKENS), 0..10).prop_map(|tokens| tokens.concat())
}

/// `name="value"` occurrences: (start of the name, start of the value, end of the value (the quote)).
fn attributes(text: &str) -> Vec<(usize, usize, usize)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("=\"") {
        let equals = from + offset;
        let value_start = equals + 2;
        let Some(length) = text[value_start..].find('"') else { break };
        let mut name_start = equals;
        while name_start > 0
            && (bytes[name_start - 1].is_ascii_alphanumeric() || b"_:.-".contains(&bytes[name_start - 1]))
        {
            name_start -= 1;
        }
        if name_start < equals && name_start > 0 && bytes[name_start - 1].is_ascii_whitespace() {
            found.push((name_start, value_start, value_start + length));
        }
        from = value_start + length + 1;
    }
    found
}

fn attribute_name(text: &str, attribute: (usize, usize, usize)) -> &str {
    let name = &text[attribute.0..attribute.1 - 2];
    name.rsplit(':').next().unwrap_or(name)
}

/// Start tags of elements: (start of `<`, end after `>`, name, self-closing).
fn start_tags(text: &str) -> Vec<(usize, usize, &str, bool)> {
    let mut tags = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find('<') {
        let start = from + offset;
        let Some(length) = text[start..].find('>') else { break };
        let end = start + length + 1;
        let inner = &text[start + 1..end - 1];
        if inner.starts_with(|c: char| c.is_alphabetic() || c == '_') {
            let name = inner.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or(inner);
            tags.push((start, end, name, inner.ends_with('/')));
        }
        from = end;
    }
    tags
}

/// The byte range of the whole element whose start tag is `tag`, found by counting tags; `None` when the
/// text is no longer balanced.
fn element_span(text: &str, tag: (usize, usize, &str, bool)) -> Option<std::ops::Range<usize>> {
    let (start, end, _, self_closing) = tag;
    if self_closing {
        return Some(start..end);
    }
    let mut depth = 1usize;
    let mut from = end;
    while let Some(offset) = text[from..].find('<') {
        let at = from + offset;
        let length = text[at..].find('>')?;
        let tag_end = at + length + 1;
        let inner = &text[at + 1..tag_end - 1];
        if inner.starts_with('/') {
            depth -= 1;
            if depth == 0 {
                return Some(start..tag_end);
            }
        } else if !inner.starts_with(['?', '!']) && !inner.ends_with('/') {
            depth += 1;
        }
        from = tag_end;
    }
    None
}

/// Text contents (between `>` and `<`) that are not only whitespace: expressions, timers, refs.
fn text_contents(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut contents = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find('>') {
        let start = from + offset + 1;
        let Some(length) = text[start..].find('<') else { break };
        if !text[start..start + length].trim().is_empty() {
            contents.push(start..start + length);
        }
        from = start + length;
    }
    contents
}

/// Offsets right after a `>`: places where new elements can go.
fn between_tags(text: &str) -> Vec<usize> {
    text.match_indices('>').map(|(at, _)| at + 1).collect()
}

fn char_boundary(text: &str, at: &Index) -> usize {
    let mut offset = at.index(text.len() + 1);
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('"', "&quot;")
}

fn apply_edit(text: &mut String, edit: &Edit) {
    fn pick<'a, T>(items: &'a [T], index: &Index) -> Option<&'a T> {
        (!items.is_empty()).then(|| index.get(items))
    }
    match edit {
        Edit::RemoveAttribute(index) => {
            if let Some(&(start, _, end)) = pick(&attributes(text), index) {
                text.replace_range(start - 1..end + 1, "");
            }
        }
        Edit::RemoveId(index) => {
            let ids: Vec<_> =
                attributes(text).into_iter().filter(|a| attribute_name(text, *a) == "id").collect();
            if let Some(&(start, _, end)) = pick(&ids, index) {
                text.replace_range(start - 1..end + 1, "");
            }
        }
        Edit::Retarget { reference, id } => {
            let all = attributes(text);
            let ids: Vec<String> = all
                .iter()
                .filter(|a| attribute_name(text, **a) == "id")
                .map(|a| text[a.1..a.2].to_owned())
                .collect();
            let references: Vec<_> = all
                .into_iter()
                .filter(|a| REFERENCE_ATTRIBUTES.contains(&attribute_name(text, *a)))
                .collect();
            if let (Some(&(_, start, end)), Some(id)) = (pick(&references, reference), pick(&ids, id)) {
                text.replace_range(start..end, id);
            }
        }
        Edit::Rename { attribute, value } => {
            let targets: Vec<_> = attributes(text)
                .into_iter()
                .filter(|a| {
                    let name = attribute_name(text, *a);
                    name == "id" || REFERENCE_ATTRIBUTES.contains(&name)
                })
                .collect();
            if let Some(&(_, start, end)) = pick(&targets, attribute) {
                text.replace_range(start..end, &xml_escape(value));
            }
        }
        Edit::DuplicateLine(index) | Edit::DeleteLine(index) => {
            let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
            if lines.is_empty() {
                return;
            }
            let at = index.index(lines.len());
            if matches!(edit, Edit::DuplicateLine(_)) {
                let line = lines[at].clone();
                lines.insert(at, line);
            } else {
                lines.remove(at);
            }
            *text = lines.concat();
        }
        Edit::DuplicateElement(index) | Edit::DeleteElement(index) => {
            let tags = start_tags(text);
            let Some(span) = pick(&tags, index).and_then(|tag| element_span(text, *tag)) else { return };
            if matches!(edit, Edit::DuplicateElement(_)) {
                let copy = text[span.clone()].to_owned();
                text.insert_str(span.end, &copy);
            } else {
                text.replace_range(span, "");
            }
        }
        Edit::RenameElement { element, to } => {
            let tags = start_tags(text);
            let Some(&(_, _, qname, _)) = pick(&tags, element) else { return };
            let renamed = match qname.split_once(':') {
                Some((prefix, _)) => format!("{prefix}:{to}"),
                None => (*to).to_owned(),
            };
            let qname = qname.to_owned();
            for (open, close) in [
                (format!("<{qname} "), format!("<{renamed} ")),
                (format!("<{qname}>"), format!("<{renamed}>")),
            ] {
                *text = text.replace(&open, &close);
            }
            *text = text.replace(&format!("<{qname}/"), &format!("<{renamed}/"));
            *text = text.replace(&format!("</{qname}>"), &format!("</{renamed}>"));
        }
        Edit::MoveElement { element, to } => {
            let tags = start_tags(text);
            let Some(span) = pick(&tags, element).and_then(|tag| element_span(text, *tag)) else { return };
            let moved = text[span.clone()].to_owned();
            text.replace_range(span, "");
            let places = between_tags(text);
            if let Some(&at) = pick(&places, to) {
                text.insert_str(at, &moved);
            }
        }
        Edit::InjectDoctype { at, doctype } => {
            // Mostly right after the XML declaration, where a DTD belongs; sometimes anywhere.
            let places = between_tags(text);
            let offset =
                if at.index(4) == 0 { char_boundary(text, at) } else { places.first().copied().unwrap_or(0) };
            text.insert_str(offset, doctype);
        }
        Edit::InjectEntity { at, entity } => {
            // Half in text content, half inside an attribute value.
            let attrs = attributes(text);
            let offset = match pick(&attrs, at) {
                Some(&(_, start, _)) if at.index(2) == 0 => start,
                _ => char_boundary(text, at),
            };
            text.insert_str(offset, entity);
        }
        Edit::InjectNesting { at, depth, name } => {
            let places = between_tags(text);
            let Some(&offset) = pick(&places, at) else { return };
            let local = name.split(':').next_back().unwrap_or(name);
            let open = if name.contains(':') { format!("<{name} id=\"n\">") } else { format!("<{local}>") };
            let nested = format!("{}{}", open.repeat(*depth), format!("</{name}>").repeat(*depth));
            text.insert_str(offset, &nested);
        }
        Edit::HugeAttribute { attribute, fill, len } => {
            if let Some(&(_, start, end)) = pick(&attributes(text), attribute) {
                let huge: String = std::iter::repeat_n(*fill, *len).collect();
                let value = if attribute.index(2) == 0 { format!("={huge}") } else { huge };
                text.replace_range(start..end, &xml_escape(&value));
            }
        }
        Edit::InsertUnicode { at, text: inserted } => {
            let offset = char_boundary(text, at);
            text.insert_str(offset, inserted);
        }
        Edit::ReplaceFeel { target, feel, escape } => {
            // FEEL lives in `=...` attribute values and in expression texts.
            let attrs: Vec<_> = attributes(text)
                .into_iter()
                .filter(|a| text[a.1..a.2].starts_with('='))
                .map(|a| a.1..a.2)
                .collect();
            let mut targets = attrs.clone();
            targets.extend(text_contents(text));
            let Some(range) = pick(&targets, target).cloned() else { return };
            let in_attribute = attrs.contains(&range);
            let value = match (escape, in_attribute) {
                (false, _) => feel.clone(),
                (true, true) => xml_escape(feel),
                (true, false) => feel.replace('&', "&amp;").replace('<', "&lt;"),
            };
            text.replace_range(range, &value);
        }
        Edit::ReplaceTimer { target, timer } => {
            let timers: Vec<_> = ["timeDate>", "timeDuration>", "timeCycle>"]
                .iter()
                .flat_map(|tag| text.match_indices(tag).map(|(at, _)| at + tag.len()).collect::<Vec<_>>())
                .filter_map(|start| Some(start..start + text[start..].find('<')?))
                .collect();
            if let Some(range) = pick(&timers, target).cloned() {
                text.replace_range(range, &xml_escape(timer));
            }
        }
        Edit::SetAttribute { element, name, value } => {
            let tags = start_tags(text);
            if let Some(&(start, _, qname, _)) = pick(&tags, element) {
                let at = start + 1 + qname.len();
                text.insert_str(at, &format!(" {name}=\"{}\"", xml_escape(value)));
            }
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn structural_edits_never_panic(seed in any::<Index>(), edits in prop::collection::vec(edit(), 1..5)) {
        let texts: Vec<&Seed> = seeds().iter().filter(|seed| seed.text.is_some()).collect();
        let mut text = seed.get(&texts).text.clone().unwrap();
        for edit in &edits {
            apply_edit(&mut text, edit);
        }
        assert_contract(text.as_bytes(), Some(&text));
    }

    /// Only FEEL and timers: the seeds' expressions replaced by token soup, many at once.
    #[test]
    fn hostile_expressions_never_panic(
        seed in any::<Index>(),
        feels in prop::collection::vec((any::<Index>(), feel()), 1..6),
        timers in prop::collection::vec((any::<Index>(), timer()), 0..4),
    ) {
        let texts: Vec<&Seed> = seeds().iter().filter(|seed| seed.text.is_some()).collect();
        let mut text = seed.get(&texts).text.clone().unwrap();
        for (target, feel) in feels {
            apply_edit(&mut text, &Edit::ReplaceFeel { target, feel, escape: true });
        }
        for (target, timer) in timers {
            apply_edit(&mut text, &Edit::ReplaceTimer { target, timer });
        }
        assert_contract(text.as_bytes(), Some(&text));
    }
}

// ---------------------------------------------------------------------------------------------------------
// (d) the pure parsers validation relies on, called directly
// ---------------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn timer_parsers_never_panic(text in prop_oneof![timer(), "\\PC{0,24}"], anchor in 0..4_102_444_800i64, step in 0..100_000_000i64, fired in any::<u32>()) {
        use govflow_engine::timer::{parse_date_time, Cycle, IsoDuration};
        let anchor = chrono::DateTime::from_timestamp(anchor, 0).unwrap();
        let _ = parse_date_time(&text);
        if let Ok(duration) = IsoDuration::parse(&text) {
            let _ = duration.add_to(&anchor);
            // What Display prints, parse reads back.
            prop_assert_eq!(IsoDuration::parse(&duration.to_string()), Ok(duration));
        }
        if let Ok(cycle) = Cycle::parse(&text) {
            let after = anchor + chrono::TimeDelta::seconds(step);
            if let Some(due) = cycle.next_after(anchor, fired, after) {
                prop_assert!(due > after, "{text}: next_after({after}) = {due}");
            }
        }
    }

    #[test]
    fn feel_parser_never_panics(source in prop_oneof![feel(), "\\PC{0,24}"]) {
        let _ = govflow_engine::feel::parse_expression(source.trim_start_matches('='));
    }
}

// ---------------------------------------------------------------------------------------------------------
// Regressions: shrunk failures, kept as named tests
// ---------------------------------------------------------------------------------------------------------

/// A minimal executable process whose start event has the given timer definition.
fn timer_start_event(definition: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" targetNamespace="t">
  <bpmn:process id="p" isExecutable="true">
    <bpmn:startEvent id="s">
      <bpmn:timerEventDefinition>{definition}</bpmn:timerEventDefinition>
    </bpmn:startEvent>
  </bpmn:process>
</bpmn:definitions>
"#
    )
}

/// Found by `timer_parsers_never_panic` ("𞗿0 A￼-𐭸"): a four-byte offset whose second byte is inside a
/// character was split with `str::split_at(2)` in `timer::parse_offset` (fixed in 70211ec).
#[test]
fn timer_offset_with_a_multibyte_character_is_a_diagnostic() {
    for definition in [
        "<bpmn:timeDate>2027-01-01T09:00:00+€1</bpmn:timeDate>",
        "<bpmn:timeCycle>R/2027-01-01T09:00:00-€1/PT1H</bpmn:timeCycle>",
    ] {
        let text = timer_start_event(definition);
        let result = std::panic::catch_unwind(|| check(text.as_bytes()));
        let parsed = result.unwrap_or_else(|_| panic!("check panicked on {definition}"));
        assert!(
            parsed.diagnostics.iter().any(|d| d.code == govflow_engine::Code::InvalidTimer),
            "{definition}: {:?}",
            parsed.diagnostics
        );
    }
}
