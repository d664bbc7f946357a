//! Embedding govflow as a library: open an engine on a data directory (sled), start the sandbox building
//! blocks (in production: their URLs or Information Mediator services in `[connectors]` of govflow.toml,
//! read with `ConnectorsConfig::from_toml`), register the real GovStack connectors (and the engine's own `govflow.message.publish`), serve the
//! payment callback route, deploy the journeys, register a birth, wait for it to end, then query instances,
//! the history and the operation log and verify the audit chain. The birth starts a maternity benefit by
//! message, which enrols the mother and pays the first month through the Payments BB's callback.
//!
//! Run with `cargo run --example embed [DATA_DIR]`; without a directory it uses a fresh one under the system
//! temp dir and removes it afterwards.

use std::sync::Arc;
use std::time::Duration;

use govflow_connectors::callbacks::{self, ShellSink};
use govflow_connectors::sandbox::{Sandbox, SandboxConfig};
use govflow_engine::audit::Actor;
use govflow_engine::engine::{Engine, SystemClock};
use govflow_engine::runtime::{InstanceStatus, VariableMap};
use govflow_engine::shell::Shell;
use govflow_engine::store::sled::open_sled;
use govflow_engine::store::{InstanceFilter, OperationFilter, Store};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (dir, temporary) = match std::env::args().nth(1) {
        Some(dir) => (std::path::PathBuf::from(dir), false),
        None => (std::env::temp_dir().join(format!("govflow-embed-{}", std::process::id())), true),
    };
    let sandbox = Sandbox::start(SandboxConfig::default()).await?;
    let callback_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback_base = format!("http://{}", callback_listener.local_addr()?);
    let config = sandbox.connectors_config(&callback_base, &dir.join("identity-client.pem"))?;
    let connectors = govflow_connectors::bb::all(Arc::new(config))?;

    let engine = Arc::new(Engine::open(open_sled(&dir)?, Arc::new(SystemClock))?);
    let designer = Actor::user("designer-1", Some("Civil Registry".to_owned()));
    for file in ["birth-registration.bpmn", "maternity-benefit.bpmn"] {
        let bpmn = std::fs::read(format!("{}/processes/{file}", env!("CARGO_MANIFEST_DIR")))?;
        for deployed in engine.deploy(file, &bpmn, &designer)? {
            println!("deployed {} version {}", deployed.process_id, deployed.version);
        }
    }

    let (ended_sender, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let builder = Shell::builder(Arc::clone(&engine))
        .on_instance_ended(move |key, status| {
            let _ = ended_sender.send((key, status));
        })
        .with_builtins();
    let shell = Arc::new(govflow_connectors::connector::register(builder, &connectors).start().await?);
    let callbacks = callbacks::router(Arc::new(ShellSink(Arc::clone(&shell))));
    tokio::spawn(async move { axum::serve(callback_listener, callbacks).await });

    let seed = sandbox.seed_data();
    let mother = seed.verified_mother();
    let variables: VariableMap = serde_json::from_value(json!({
        "mother": {"nationalId": mother.national_id, "firstName": mother.first_name, "lastName": mother.last_name, "phone": mother.phone},
        "father": null,
        "child": {"firstName": "Zawadi", "lastName": mother.last_name, "birthDate": chrono::Utc::now().date_naive().to_string(),
                  "gender": "female", "placeOfBirth": "District Hospital"},
    }))?;
    let parent = Actor::user("parent-portal", Some("eCitizen".to_owned()));
    let instance = shell.start_instance("birth-registration", variables, None, parent).await?;
    println!("started birth registration {instance}; the connectors call the sandbox:");
    while let Some((key, status)) = ended.recv().await {
        if key == instance {
            println!("instance {instance} ended: {status:?}");
            break;
        }
    }
    // The maternity benefit started by the birthRegistered message pays its first month at once.
    let maternity =
        InstanceFilter { process_id: Some("maternity-benefit".to_owned()), ..InstanceFilter::default() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sandbox.disbursements().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for meta in engine.instances(&maternity, None, 10)? {
        println!("maternity benefit {} (business key {:?}): {:?}", meta.key, meta.business_key, meta.status);
    }
    for payment in sandbox.disbursements() {
        println!(
            "  paid {} {} to {} (request {})",
            payment.amount, payment.currency, payment.payee_value, payment.request_id
        );
    }
    for message in sandbox.messages() {
        println!("  {:?} to {}: {}", message.channel, message.to, message.body);
    }
    shell.shutdown().await;

    let history = engine.store().records(instance, 1, usize::MAX)?;
    println!(
        "history: {} events; the last: {}",
        history.len(),
        history.last().map_or("-", |r| r.event.name())
    );
    let n = engine.verify(instance)?;
    println!("audit chain of instance {instance}: {n} records verified");
    for operation in engine.operations(&OperationFilter::default(), 0, 10)? {
        println!(
            "operation {}: {:?} {:?} by {:?}",
            operation.seq, operation.kind, operation.target, operation.actor
        );
    }
    let status = engine.instance(instance)?.meta.status;
    drop(shell);
    drop(engine);
    sandbox.shutdown().await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    anyhow::ensure!(status == InstanceStatus::Completed, "the birth registration did not complete");
    Ok(())
}
