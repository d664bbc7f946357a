//! `govflow serve` as an agency runs it: the real binary with `--sandbox` on a fresh data directory, a
//! deployment and a start over real HTTP with the token it printed, a bad configuration refused with the
//! setting named, and a graceful stop on SIGTERM that leaves a store the next run (and the auditor) opens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    base: String,
    token: String,
}

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("govflow-serve-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start(data: &PathBuf) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_govflow"))
        .args(["serve", "--sandbox", "--port", "0", "--data"])
        .arg(data)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut token) = (None, None);
    while base.is_none() || token.is_none() {
        let line = lines.next().expect("serve printed its address and token").unwrap();
        if let Some(rest) = line.strip_prefix("sandbox admin token for this run: ") {
            token = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("govflow serving on ") {
            base = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base: base.unwrap(), token: token.unwrap() }
}

/// One HTTP/1.1 request; returns (status, body).
fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

fn terminate(mut server: Server) -> std::process::ExitStatus {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "serve did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const PROCESS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" targetNamespace="t">
  <bpmn:process id="hello" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f" sourceRef="start" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#;

#[test]
fn serve_deploys_starts_and_stops_gracefully() {
    let data = data_dir("graceful");
    let server = start(&data);
    assert_eq!(http(&server.base, "GET", "/health", None, "text/plain", b"").0, 200);
    assert_eq!(
        http(&server.base, "GET", "/api/v1/definitions", None, "text/plain", b"").0,
        401,
        "no token, no API"
    );
    let (status, body) = http(
        &server.base,
        "POST",
        "/api/v1/deployments",
        Some(&server.token),
        "application/xml",
        PROCESS.as_bytes(),
    );
    assert!(status == 201 || status == 200, "deploy: {status} {body}");
    let (status, body) = http(
        &server.base,
        "POST",
        "/api/v1/instances?wait=completed&timeout=10s",
        Some(&server.token),
        "application/json",
        br#"{"processId":"hello","variables":{"who":"registrar"}}"#,
    );
    assert_eq!(status, 200, "a synchronous start of a process that ends at once: {body}");
    assert!(body.contains("registrar"), "the final variables come back: {body}");
    let status = terminate(server);
    assert!(status.success(), "a graceful stop exits 0, not {status:?}");
    // The store was closed cleanly: the auditor's command opens it and verifies every chain.
    let output = Command::new(env!("CARGO_BIN_EXE_govflow"))
        .args(["audit", "verify", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn serve_names_a_bad_setting() {
    let dir = data_dir("config");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("govflow.toml");
    std::fs::write(&config, "[connectors.payments]\nurl = 'ftp://payments'\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_govflow"))
        .args(["serve", "--port", "0", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connectors.payments.url"), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_govflow"))
        .args(["serve", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success(), "a named configuration file that is missing is an error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
    let _ = std::fs::remove_dir_all(&dir);
}
