//! The one real-socket smoke test: the app on the sled store, served by `axum::serve` on
//! 127.0.0.1:0, driven over HTTP/1.1 with keep-alive by reqwest: health, a deployment, a synchronous
//! start that completes through an in-process handler, the Workflow BB list, and the error shape of
//! a refused request. Then the server shuts down gracefully.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{test_config, token, QUICK};
use govflow_designer_api::{app, AppState, Role, Waiters};
use govflow_engine::engine::{Engine, SystemClock};
use govflow_engine::runtime::VariableMap;
use govflow_engine::shell::{JobOutcome, Shell};
use govflow_engine::store::sled::open_sled;
use serde_json::{json, Value};

/// A data directory removed when dropped.
struct TestDir(std::path::PathBuf);

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_a_real_socket_on_sled() {
    let dir = TestDir(std::env::temp_dir().join(format!("govflow-api-socket-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let engine = Arc::new(Engine::open(open_sled(&dir.0).unwrap(), Arc::new(SystemClock)).unwrap());
    let waiters = Waiters::new();
    let shell = Shell::builder(Arc::clone(&engine))
        .handler("auto", |_job| async {
            JobOutcome::Complete(VariableMap::from([("autoDone".to_owned(), json!(true))]))
        })
        .on_instance_ended(waiters.hook())
        .start()
        .await
        .unwrap();
    let state = AppState::with_waiters(Arc::clone(&engine), Arc::new(shell), test_config(), waiters);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let client = reqwest::Client::new();
    let health: Value = client.get(format!("{base}/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");

    let deployed = client
        .post(format!("{base}/api/v1/deployments?name=quick.bpmn"))
        .bearer_auth(token(Role::Designer))
        .header("content-type", "application/xml")
        .body(QUICK)
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 201);

    let started = client
        .post(format!("{base}/api/v1/instances?wait=completed&timeout=10s"))
        .bearer_auth(token(Role::Operator))
        .json(&json!({"processId": "quick", "variables": {"who": "socket"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let started: Value = started.json().await.unwrap();
    assert_eq!(started["state"], "completed");
    assert_eq!(started["variables"], json!({"who": "socket", "autoDone": true}));

    let processes: Value = client
        .get(format!("{base}/GOV/GOV/1234/WORKFLOW/processes"))
        .bearer_auth(token(Role::Auditor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(processes[0]["id"], "quick");

    let refused =
        client.get(format!("{base}/api/v1/instances")).bearer_auth(token(Role::Worker)).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["code"], "FORBIDDEN");

    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("govflow_instances_ended_total{process=\"quick\",status=\"completed\"} 1"));

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
