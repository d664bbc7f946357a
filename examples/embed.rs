//! Embedding govflow as a library: open an engine on a data directory (sled), register in-process job
//! handlers that play the identity, registry and messaging building blocks, deploy the birth-registration
//! journey, start an instance, wait for it to end, then query instances, the history and the operation log
//! and verify the audit chain. Run with `cargo run --example embed [DATA_DIR]`; without a directory it
//! uses a fresh one under the system temp dir and removes it afterwards.

use std::sync::Arc;

use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, JobHandle, SystemClock};
use govflow_engine::runtime::{InstanceStatus, VariableMap};
use govflow_engine::shell::{JobOutcome, Shell};
use govflow_engine::store::sled::open_sled;
use govflow_engine::store::{InstanceFilter, OperationFilter, Store};
use serde_json::json;

/// What the sandbox building blocks would answer (the connectors issue replaces this with real calls).
async fn building_block(job: JobHandle) -> JobOutcome {
    let answer = match job.job_type.as_str() {
        "govstack.identity.verify" => json!({"verified": true}),
        "govstack.registries.exists" => json!({"answer": {"status": false}}),
        "govstack.registries.create" => json!({"record": {"certificateNumber": "BC-2026-000123"}}),
        _ => json!({}),
    };
    println!("  {} ({}), idempotency key {} -> {answer}", job.element, job.job_type, job.idempotency_key);
    JobOutcome::Complete(serde_json::from_value(answer).unwrap_or_default())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (dir, temporary) = match std::env::args().nth(1) {
        Some(dir) => (std::path::PathBuf::from(dir), false),
        None => (std::env::temp_dir().join(format!("govflow-embed-{}", std::process::id())), true),
    };
    let engine = Arc::new(Engine::open(open_sled(&dir)?, Arc::new(SystemClock))?);
    let designer = Actor::user("designer-1", Some("Civil Registry".to_owned()));
    let bpmn = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/processes/birth-registration.bpmn"))?;
    for deployed in engine.deploy("birth-registration.bpmn", &bpmn, &designer)? {
        println!("deployed {} version {}", deployed.process_id, deployed.version);
    }

    let (ended_sender, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let mut builder = Shell::builder(Arc::clone(&engine)).on_instance_ended(move |key, status| {
        let _ = ended_sender.send((key, status));
    });
    for job_type in [
        "govstack.identity.verify",
        "govstack.registries.exists",
        "govstack.registries.create",
        "govstack.messaging.send",
        "govflow.message.publish",
    ] {
        builder = builder.handler(job_type, building_block);
    }
    let shell = builder.start().await?;

    let variables: VariableMap = serde_json::from_value(json!({
        "mother": {"nationalId": "KE-19870412-F-0042", "name": "Amina Otieno", "phone": "+254700000001"},
        "father": {"nationalId": "KE-19850301-M-0117", "name": "Brian Otieno", "phone": "+254700000002"},
        "child": {"name": "Zawadi Otieno", "birthDate": chrono::Utc::now().date_naive().to_string(), "sex": "F"},
    }))?;
    let parent = Actor::user("parent-portal", Some("eCitizen".to_owned()));
    let instance = shell
        .start_instance("birth-registration", variables, Some("BR-2026-0001".to_owned()), parent)
        .await?;
    println!("started instance {instance}; the shell runs its jobs:");
    while let Some((key, status)) = ended.recv().await {
        if key == instance {
            println!("instance {instance} ended: {status:?}");
            break;
        }
    }
    shell.shutdown().await;

    let filter =
        InstanceFilter { business_key: Some("BR-2026-0001".to_owned()), ..InstanceFilter::default() };
    for meta in engine.instances(&filter, None, 10)? {
        println!(
            "found by business key: instance {} of {} v{}, {:?}",
            meta.key, meta.process_id, meta.version, meta.status
        );
    }
    let stored = engine.instance(instance)?;
    assert_eq!(stored.meta.status, InstanceStatus::Completed);
    println!("history: {} events; the last three:", stored.last_seq);
    for record in engine.store().records(instance, stored.last_seq.saturating_sub(2), 3)? {
        println!("  {} {} {} {:?}", record.seq, record.at.to_rfc3339(), record.actor, record.event);
    }
    let operations = engine.operations(&OperationFilter::default(), 0, 5)?;
    println!("operation log (first {}):", operations.len());
    for operation in operations {
        println!("  {} {} {:?} {:?}", operation.seq, operation.actor, operation.kind, operation.target);
    }
    println!("audit chain verified: {} records, replay equals the stored state", engine.verify(instance)?);
    drop(engine);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
