//! Embedding govflow as a library: open an engine on a store, deploy the birth-registration journey, start
//! an instance, play the identity and registry connectors by completing their jobs, and verify the audit
//! chain. Run with `cargo run --example embed`. Uses the in-memory store, so it leaves nothing behind.

use std::sync::Arc;

use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, SystemClock};
use govflow_engine::runtime::{Command, VariableMap};
use govflow_engine::store::memory::memory_store;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let engine = Engine::open(memory_store()?, Arc::new(SystemClock))?;
    let designer = Actor::user("designer-1", Some("Civil Registry".to_owned()));
    let bpmn = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/processes/birth-registration.bpmn"))?;
    for deployed in engine.deploy("birth-registration.bpmn", &bpmn, &designer)? {
        println!("deployed {} version {}", deployed.process_id, deployed.version);
    }

    let variables: VariableMap = serde_json::from_value(json!({
        "mother": {"nationalId": "KE-19870412-F-0042", "name": "Amina Otieno", "phone": "+254700000001"},
        "father": {"nationalId": "KE-19850301-M-0117", "name": "Brian Otieno", "phone": "+254700000002"},
        "child": {"name": "Zawadi Otieno", "birthDate": "2026-11-20", "sex": "F", "placeOfBirth": "Nairobi"},
    }))?;
    let parent = Actor::user("parent-portal", Some("eCitizen".to_owned()));
    let instance = engine.start("birth-registration", variables, Some("BR-2026-0001".to_owned()), &parent)?;
    println!("started instance {instance}");

    // Act as the connectors: complete each job with what the building block would answer.
    for _ in 0..20 {
        let state = engine.instance(instance)?.state;
        let Some(job) = state.jobs.values().next().cloned() else { break };
        let answer = match job.job_type.as_str() {
            "govstack.identity.verify" => json!({"verified": true}),
            "govstack.registries.exists" => json!({"answer": {"status": false}}),
            "govstack.registries.create" => json!({"record": {"certificateNumber": "BC-2026-000123"}}),
            _ => json!({}),
        };
        println!("job {} ({}) -> {answer}", job.key, job.job_type);
        let variables: VariableMap = serde_json::from_value(answer)?;
        engine.command(instance, &Command::CompleteJob { job: job.key, variables }, &Actor::engine())?;
    }

    let stored = engine.instance(instance)?;
    println!("instance {instance} is {:?} after {} events", stored.meta.status, stored.last_seq);
    println!("audit chain verified: {} records, replay equals the stored state", engine.verify(instance)?);
    Ok(())
}
