//! End-to-end tests of the `govflow` binary: what a user sees from `govflow validate`. They run the real
//! executable and never touch engine internals.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn govflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_govflow"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn validate_prints_four_compiler_style_diagnostics_and_exits_1() {
    let output = govflow(&["validate", "tests/data/four-problems.bpmn"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let expected = [
        ("tests/data/four-problems.bpmn:2:1: error[BPMN0003]:", "DOCTYPE"),
        ("tests/data/four-problems.bpmn:9:5: error[BPMN0013]:", "(element 'Gateway_late')"),
        ("tests/data/four-problems.bpmn:15:11: error[BPMN0014]:", "'child.birthDate >' is not valid FEEL"),
        ("tests/data/four-problems.bpmn:19:5: error[BPMN0007]:", "targetRef 'Registered'"),
    ];
    for (line, (prefix, words)) in lines.iter().zip(expected) {
        assert!(line.starts_with(prefix), "{line}");
        assert!(line.contains(words), "{line}");
    }
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("4 error(s), 0 warning(s)"), "{stderr}");
}

#[test]
fn validate_json_lists_each_file_with_its_diagnostics() {
    let output = govflow(&["validate", "--format", "json", "tests/data/four-problems.bpmn"]);
    assert_eq!(output.status.code(), Some(1));
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["file"], "tests/data/four-problems.bpmn");
    assert_eq!(report["valid"], false);
    let codes: Vec<&str> =
        report["diagnostics"].as_array().unwrap().iter().map(|d| d["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["BPMN0003", "BPMN0013", "BPMN0014", "BPMN0007"]);
    assert_eq!(report["diagnostics"][3]["element"], "Flow_review");
    assert_eq!(report["diagnostics"][3]["pos"]["line"], 19);
}

#[test]
fn validate_accepts_the_journeys_in_processes() {
    let journeys: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("processes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bpmn"))
        .map(|path| path.display().to_string())
        .collect();
    assert!(!journeys.is_empty(), "processes/ holds no .bpmn file");
    let mut args = vec!["validate", "--deny-warnings"];
    args.extend(journeys.iter().map(String::as_str));
    let output = govflow(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn unreadable_file_is_a_clear_error_not_a_panic() {
    let output = govflow(&["validate", "tests/data/does-not-exist.bpmn"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot read tests/data/does-not-exist.bpmn"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn codes_lists_every_diagnostic_code() {
    let output = govflow(&["codes"]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.lines().count() >= 30, "{stdout}");
    assert!(stdout.contains("BPMN0003  DTD and entity declarations are refused"));
}

#[test]
fn every_journey_and_decision_validates_without_warnings() {
    let mut files: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("processes"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bpmn" || ext == "dmn"))
        .map(|path| format!("processes/{}", path.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "four journeys and a decision: {files:?}");
    let mut args = vec!["validate", "--deny-warnings"];
    args.extend(files.iter().map(String::as_str));
    let output = govflow(&args);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{}{stderr}", String::from_utf8_lossy(&output.stdout));
    assert!(
        stderr.contains(&format!("{} file(s) checked: 0 error(s), 0 warning(s)", files.len())),
        "{stderr}"
    );
}

#[test]
fn validate_checks_a_dmn_file_as_a_decision_model() {
    let dir = std::env::temp_dir().join(format!("govflow-cli-dmn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.dmn");
    std::fs::write(
        &file,
        r#"<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="x" name="x" namespace="t"><decision id="eligible"><decisionTable><input id="i"><inputExpression><text>income +</text></inputExpression></input><output id="o" name="ok" /></decisionTable></decision></definitions>"#,
    )
    .unwrap();
    let output = govflow(&["validate", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("decision 'eligible'") && stdout.contains("income +"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
