//! Property test of the runtime core: random block-structured processes (tasks, timers, messages,
//! exclusive and parallel blocks, sub-processes, boundary events) driven by random command sequences,
//! valid and invalid. `decide` never panics, rejected commands change nothing, and replaying the
//! accumulated events from empty state always reproduces the state. The store's index changes
//! (`index_changes`), applied batch by batch, always give exactly the index the state implies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, FixedOffset};
use govflow_engine::runtime::{
    decide, Command, Event, Instance, InstanceKey, Key, ProcessDefinition, VariableMap,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Block {
    Service,
    User,
    Script,
    Timer,
    Message,
    Seq(Box<Block>, Box<Block>),
    Xor(Box<Block>, Box<Block>),
    And(Box<Block>, Box<Block>),
    Or(Box<Block>, Box<Block>),
    Sub(Box<Block>),
    /// A service task with an interrupting timer boundary and an error boundary.
    Guarded,
}

fn block() -> impl Strategy<Value = Block> {
    let leaf = prop_oneof![
        Just(Block::Service),
        Just(Block::User),
        Just(Block::Script),
        Just(Block::Timer),
        Just(Block::Message),
        Just(Block::Guarded),
    ];
    leaf.prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Block::Seq(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Block::Xor(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Block::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Block::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|a| Block::Sub(Box::new(a))),
        ]
    })
}

/// Writes a block as BPMN; returns (entry id, exit id).
struct Writer {
    xml: String,
    n: usize,
}

impl Writer {
    fn id(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}{}", self.n)
    }

    fn flow(&mut self, from: &str, to: &str, condition: Option<&str>) -> String {
        let id = self.id("f");
        match condition {
            Some(condition) => self.xml.push_str(&format!(
                "<bpmn:sequenceFlow id=\"{id}\" sourceRef=\"{from}\" targetRef=\"{to}\"><bpmn:conditionExpression>{condition}</bpmn:conditionExpression></bpmn:sequenceFlow>\n"
            )),
            None => self.xml.push_str(&format!("<bpmn:sequenceFlow id=\"{id}\" sourceRef=\"{from}\" targetRef=\"{to}\"/>\n")),
        }
        id
    }

    fn service(&mut self, id: &str) {
        self.xml.push_str(&format!(
            "<bpmn:serviceTask id=\"{id}\"><bpmn:extensionElements><zeebe:taskDefinition type=\"work\" retries=\"2\"/></bpmn:extensionElements></bpmn:serviceTask>\n"
        ));
    }

    fn block(&mut self, block: &Block) -> (String, String) {
        match block {
            Block::Service => {
                let id = self.id("service");
                self.service(&id);
                (id.clone(), id)
            }
            Block::User => {
                let id = self.id("user");
                self.xml.push_str(&format!("<bpmn:userTask id=\"{id}\"/>\n"));
                (id.clone(), id)
            }
            Block::Script => {
                let id = self.id("script");
                self.xml.push_str(&format!(
                    "<bpmn:scriptTask id=\"{id}\"><bpmn:extensionElements><zeebe:script expression=\"=if x = null then 1 else x + 1\" resultVariable=\"x\"/></bpmn:extensionElements></bpmn:scriptTask>\n"
                ));
                (id.clone(), id)
            }
            Block::Timer => {
                let id = self.id("timer");
                self.xml.push_str(&format!(
                    "<bpmn:intermediateCatchEvent id=\"{id}\"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1H</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>\n"
                ));
                (id.clone(), id)
            }
            Block::Message => {
                let id = self.id("message");
                self.xml.push_str(&format!(
                    "<bpmn:intermediateCatchEvent id=\"{id}\"><bpmn:messageEventDefinition messageRef=\"msg\"/></bpmn:intermediateCatchEvent>\n"
                ));
                (id.clone(), id)
            }
            Block::Guarded => {
                let id = self.id("guarded");
                self.service(&id);
                let timer = self.id("deadline");
                self.xml.push_str(&format!(
                    "<bpmn:boundaryEvent id=\"{timer}\" attachedToRef=\"{id}\"><bpmn:timerEventDefinition><bpmn:timeDuration>PT2H</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:boundaryEvent>\n"
                ));
                let error = self.id("failed");
                self.xml.push_str(&format!(
                    "<bpmn:boundaryEvent id=\"{error}\" attachedToRef=\"{id}\"><bpmn:errorEventDefinition errorRef=\"err\"/></bpmn:boundaryEvent>\n"
                ));
                let merge = self.id("merge");
                self.xml.push_str(&format!("<bpmn:exclusiveGateway id=\"{merge}\"/>\n"));
                self.flow(&id, &merge, None);
                self.flow(&timer, &merge, None);
                self.flow(&error, &merge, None);
                (id, merge)
            }
            Block::Seq(a, b) => {
                let (a_in, a_out) = self.block(a);
                let (b_in, b_out) = self.block(b);
                self.flow(&a_out, &b_in, None);
                (a_in, b_out)
            }
            Block::Xor(a, b) | Block::And(a, b) | Block::Or(a, b) => {
                let kind = match block {
                    Block::Xor(..) => "exclusiveGateway",
                    Block::And(..) => "parallelGateway",
                    _ => "inclusiveGateway",
                };
                let split = self.id("split");
                let join = self.id("join");
                let (a_in, a_out) = self.block(a);
                let (b_in, b_out) = self.block(b);
                if kind == "parallelGateway" {
                    self.xml.push_str(&format!("<bpmn:{kind} id=\"{split}\"/>\n"));
                    self.flow(&split, &a_in, None);
                    self.flow(&split, &b_in, None);
                } else {
                    // The default flow's id is known only after writing it: write the gateway last.
                    let conditional = self.flow(&split, &a_in, Some("=x &gt; 2"));
                    let _ = conditional;
                    let default = self.flow(&split, &b_in, None);
                    self.xml.push_str(&format!("<bpmn:{kind} id=\"{split}\" default=\"{default}\"/>\n"));
                }
                self.xml.push_str(&format!("<bpmn:{kind} id=\"{join}\"/>\n"));
                self.flow(&a_out, &join, None);
                self.flow(&b_out, &join, None);
                (split, join)
            }
            Block::Sub(inner) => {
                let id = self.id("sub");
                let start = self.id("substart");
                let end = self.id("subend");
                let outer = std::mem::take(&mut self.xml);
                self.xml
                    .push_str(&format!("<bpmn:startEvent id=\"{start}\"/>\n<bpmn:endEvent id=\"{end}\"/>\n"));
                let (i_in, i_out) = self.block(inner);
                self.flow(&start, &i_in, None);
                self.flow(&i_out, &end, None);
                let inside = std::mem::replace(&mut self.xml, outer);
                self.xml.push_str(&format!("<bpmn:subProcess id=\"{id}\">\n{inside}</bpmn:subProcess>\n"));
                (id.clone(), id)
            }
        }
    }
}

fn process_xml(block: &Block) -> String {
    let mut writer = Writer { xml: String::new(), n: 0 };
    writer.xml.push_str("<bpmn:startEvent id=\"start\"/>\n<bpmn:endEvent id=\"end\"/>\n");
    let (entry, exit) = writer.block(block);
    writer.flow("start", &entry, None);
    writer.flow(&exit, "end", None);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
<bpmn:message id="msg" name="go"><bpmn:extensionElements><zeebe:subscription correlationKey="=&quot;k&quot;"/></bpmn:extensionElements></bpmn:message>
<bpmn:error id="err" errorCode="E"/>
<bpmn:process id="random" isExecutable="true">
{}</bpmn:process>
</bpmn:definitions>"#,
        writer.xml
    )
}

/// A command chosen against the current state (`pick` selects among the open things), or a bogus one.
#[derive(Debug, Clone)]
enum Move {
    CompleteJob(usize, i64),
    FailJob(usize, u32),
    ThrowError(usize),
    CompleteTask(usize, i64),
    /// Claim (`Some`) or unclaim an open user task.
    Assign(usize, Option<u8>),
    Advance(i64),
    Correlate(bool),
    Resolve(usize, i64),
    SetX(i64),
    Cancel,
    Bogus(u64),
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    let one = prop_oneof![
        4 => (0..4usize, -2..6i64).prop_map(|(i, x)| Move::CompleteJob(i, x)),
        1 => (0..4usize, 0..2u32).prop_map(|(i, r)| Move::FailJob(i, r)),
        1 => (0..4usize).prop_map(Move::ThrowError),
        3 => (0..4usize, -2..6i64).prop_map(|(i, x)| Move::CompleteTask(i, x)),
        1 => (0..4usize, prop::option::of(0..3u8)).prop_map(|(i, u)| Move::Assign(i, u)),
        2 => (1..180i64).prop_map(Move::Advance),
        2 => any::<bool>().prop_map(Move::Correlate),
        1 => (0..4usize, 0..6i64).prop_map(|(i, x)| Move::Resolve(i, x)),
        1 => (-2..6i64).prop_map(Move::SetX),
        1 => (0..1000u64).prop_map(Move::Bogus),
        1 => Just(Move::Cancel),
    ];
    prop::collection::vec(one, 0..40)
}

fn nth<T: Copy>(items: impl Iterator<Item = T>, i: usize) -> Option<T> {
    let items: Vec<T> = items.collect();
    (!items.is_empty()).then(|| items[i % items.len()])
}

fn x(value: i64) -> VariableMap {
    VariableMap::from([("x".to_owned(), serde_json::json!(value))])
}

fn command_for(instance: &Instance, now: &mut DateTime<FixedOffset>, step: &Move) -> Option<Command> {
    Some(match step {
        Move::CompleteJob(i, v) => {
            Command::CompleteJob { job: nth(instance.jobs.keys().copied(), *i)?, variables: x(*v) }
        }
        Move::FailJob(i, retries) => Command::FailJob {
            job: nth(instance.jobs.keys().copied(), *i)?,
            retries: *retries,
            message: "failed".into(),
            backoff_ms: Some(1000),
        },
        Move::ThrowError(i) => Command::ThrowError {
            job: nth(instance.jobs.keys().copied(), *i)?,
            error_code: "E".into(),
            message: "e".into(),
        },
        Move::CompleteTask(i, v) => Command::CompleteUserTask {
            task: nth(instance.user_tasks.keys().copied(), *i)?,
            variables: x(*v),
        },
        Move::Assign(i, user) => Command::AssignUserTask {
            task: nth(instance.user_tasks.keys().copied(), *i)?,
            assignee: user.map(|u| format!("user-{u}")),
            expected: None,
        },
        Move::Advance(minutes) => {
            *now += Duration::minutes(*minutes);
            let timer = instance.timers.values().filter(|t| t.due <= *now).min_by_key(|t| (t.due, t.key))?;
            Command::FireTimer { timer: timer.key }
        }
        Move::Correlate(right_key) => Command::CorrelateMessage {
            name: "go".into(),
            correlation_key: if *right_key { "k".into() } else { "other".into() },
            variables: VariableMap::new(),
            message_id: None,
        },
        Move::Resolve(i, v) => Command::ResolveIncident {
            incident: nth(instance.incidents.keys().copied(), *i)?,
            variables: x(*v),
        },
        Move::SetX(v) => Command::SetVariables { scope: None, variables: x(*v), local: false },
        Move::Cancel => Command::Cancel,
        Move::Bogus(k) => Command::CompleteJob { job: Key(*k + 10_000), variables: VariableMap::new() },
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_commands_never_panic_and_replay_reproduces_the_state(block in block(), script in moves(), start_x in -2..6i64) {
        let xml = process_xml(&block);
        let parsed = govflow_engine::check(xml.as_bytes());
        let errors: Vec<_> = parsed.diagnostics.iter().filter(|d| d.is_error()).collect();
        prop_assert!(errors.is_empty(), "generated model is invalid: {errors:?}\n{xml}");
        let definition = ProcessDefinition::compile(parsed.definitions.as_ref().unwrap(), "random", 1).unwrap();
        let mut now = DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z").unwrap();
        let mut instance = Instance::new(InstanceKey(7));
        let mut events: Vec<Event> = Vec::new();
        let start = Command::Start { variables: x(start_x), business_key: None, start_event: None };
        let mut index = IndexModel::default();
        let start_events = decide(&definition, &instance, &start, now).unwrap();
        index.apply(&instance, &start_events, now);
        for event in start_events {
            instance.apply(&event);
            events.push(event);
        }
        prop_assert_eq!(&index, &IndexModel::of(&instance));
        for step in &script {
            let Some(command) = command_for(&instance, &mut now, step) else { continue };
            let before = instance.clone();
            match decide(&definition, &instance, &command, now) {
                Ok(new_events) => {
                    index.apply(&instance, &new_events, now);
                    for event in new_events {
                        instance.apply(&event);
                        events.push(event);
                    }
                    prop_assert_eq!(&index, &IndexModel::of(&instance), "after {:?}", command);
                }
                Err(_) => prop_assert_eq!(&before, &instance),
            }
        }
        let replayed = Instance::replay(InstanceKey(7), &events);
        prop_assert_eq!(&replayed, &instance);
        let json = serde_json::to_string(&events).unwrap();
        let decoded: Vec<Event> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(Instance::replay(InstanceKey(7), &decoded), instance);
    }
}

/// The store's indexes for one instance, as sets of keys.
#[derive(Debug, Default, PartialEq, Eq)]
struct IndexModel {
    jobs: std::collections::BTreeSet<(String, u64)>,
    timers: std::collections::BTreeSet<(DateTime<FixedOffset>, u64)>,
    subscriptions: std::collections::BTreeSet<(String, String, u64)>,
    signals: std::collections::BTreeSet<(String, u64)>,
    user_tasks: std::collections::BTreeSet<u64>,
    incidents: std::collections::BTreeSet<u64>,
}

impl IndexModel {
    /// What the index must hold for `instance`: its runnable jobs, pending timers, open subscriptions,
    /// open user tasks and incidents.
    fn of(instance: &Instance) -> IndexModel {
        IndexModel {
            jobs: instance
                .jobs
                .values()
                .filter(|job| !job.failed)
                .map(|job| (job.job_type.clone(), job.key.0))
                .collect(),
            timers: instance.timers.values().map(|timer| (timer.due, timer.key.0)).collect(),
            subscriptions: instance
                .message_subscriptions
                .values()
                .map(|s| (s.message_name.clone(), s.correlation_key.clone(), s.key.0))
                .collect(),
            signals: instance
                .signal_subscriptions
                .values()
                .map(|s| (s.signal_name.clone(), s.key.0))
                .collect(),
            user_tasks: instance.user_tasks.keys().map(|key| key.0).collect(),
            incidents: instance.incidents.keys().map(|key| key.0).collect(),
        }
    }

    /// Applies the index changes of `events` (decided on `before`), as the store does.
    fn apply(&mut self, before: &Instance, events: &[Event], now: DateTime<FixedOffset>) {
        use govflow_engine::audit::{seal_all, Actor};
        use govflow_engine::store::{index_changes, IndexOp};
        let records = seal_all(InstanceKey(7), None, now, &Actor::engine(), events.to_vec());
        for op in index_changes(InstanceKey(7), before, &records) {
            match op {
                IndexOp::PutJob(e) => {
                    self.jobs.insert((e.job_type, e.job.0));
                }
                IndexOp::DeleteJob(e) => {
                    self.jobs.remove(&(e.job_type, e.job.0));
                }
                IndexOp::PutTimer(e) => {
                    self.timers.insert((e.due, e.timer.0));
                }
                IndexOp::DeleteTimer(e) => {
                    self.timers.remove(&(e.due, e.timer.0));
                }
                IndexOp::PutSubscription(e) => {
                    self.subscriptions.insert((e.message_name, e.correlation_key, e.subscription.0));
                }
                IndexOp::DeleteSubscription(e) => {
                    self.subscriptions.remove(&(e.message_name, e.correlation_key, e.subscription.0));
                }
                IndexOp::PutSignal(e) => {
                    self.signals.insert((e.signal_name, e.subscription.0));
                }
                IndexOp::DeleteSignal(e) => {
                    self.signals.remove(&(e.signal_name, e.subscription.0));
                }
                IndexOp::PutUserTask(e) => {
                    self.user_tasks.insert(e.task.0);
                }
                IndexOp::AssignUserTask { task, .. } => {
                    assert!(self.user_tasks.contains(&task.0), "an assignment names an open task");
                }
                IndexOp::DeleteUserTask { task, .. } => {
                    self.user_tasks.remove(&task.0);
                }
                IndexOp::PutIncident(e) => {
                    self.incidents.insert(e.incident.0);
                }
                IndexOp::DeleteIncident { incident, .. } => {
                    self.incidents.remove(&incident.0);
                }
            }
        }
    }
}
