//! Benchmark of the pure runtime core alone (no storage): a process with 10 service tasks started and
//! driven to completion by `decide` + `apply`, and the fold (`apply` only) of its recorded events.
//! Reports elements per second through criterion's throughput: events/s and instances/s.

use chrono::DateTime;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use govflow_engine::runtime::{
    decide, Command, Event, Instance, InstanceKey, ProcessDefinition, VariableMap,
};

const TASKS: usize = 10;

fn model() -> String {
    let mut xml = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="bench" targetNamespace="t">
<bpmn:process id="ten-tasks" isExecutable="true"><bpmn:startEvent id="start"/>"#,
    );
    let mut previous = "start".to_owned();
    for i in 0..TASKS {
        xml.push_str(&format!(
            r#"<bpmn:serviceTask id="t{i}"><bpmn:extensionElements><zeebe:taskDefinition type="noop"/></bpmn:extensionElements></bpmn:serviceTask>
<bpmn:sequenceFlow id="f{i}" sourceRef="{previous}" targetRef="t{i}"/>"#
        ));
        previous = format!("t{i}");
    }
    xml.push_str(&format!(
        r#"<bpmn:endEvent id="end"/><bpmn:sequenceFlow id="last" sourceRef="{previous}" targetRef="end"/></bpmn:process></bpmn:definitions>"#
    ));
    xml
}

/// Runs one instance to completion; returns its events.
fn run(definition: &ProcessDefinition, key: u64) -> Vec<Event> {
    let now = DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z").unwrap_or_default();
    let mut instance = Instance::new(InstanceKey(key));
    let mut log = Vec::new();
    let mut command = Command::Start {
        variables: VariableMap::from([("applicant".to_owned(), serde_json::json!({"id": key}))]),
        business_key: None,
        start_event: None,
    };
    while let Ok(events) = decide(definition, &instance, &command, now) {
        for event in &events {
            instance.apply(event);
        }
        log.extend(events);
        let Some(job) = instance.jobs.keys().next().copied() else { break };
        command = Command::CompleteJob { job, variables: VariableMap::new() };
    }
    log
}

fn bench(c: &mut Criterion) {
    let parsed = govflow_engine::check(model().as_bytes());
    let Some(definitions) = parsed.definitions else { return };
    let Ok(definition) = ProcessDefinition::compile(&definitions, "ten-tasks", 1) else { return };
    let events = run(&definition, 1);
    assert!(
        matches!(events.last(), Some(Event::InstanceCompleted { .. })),
        "the benchmark process must complete"
    );
    let n_events = events.len() as u64;

    let mut group = c.benchmark_group("runtime");
    group.sample_size(30);
    group.throughput(Throughput::Elements(1));
    group.bench_function("instance: start + 10 jobs to completion (decide+apply)", |b| {
        b.iter(|| run(&definition, 1))
    });
    group.throughput(Throughput::Elements(n_events));
    group.bench_function(format!("fold: apply {n_events} events of one instance"), |b| {
        b.iter(|| Instance::replay(InstanceKey(1), &events))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
