//! Golden tests of the parser and validator: each `.bpmn` under `test_data/parse/{ok,err}` is checked and
//! its outline plus diagnostics must equal the sibling `.txt`. Refresh those with
//! `UPDATE_EXPECT=1 cargo test -p govflow-engine --test golden` and read the diff; nothing else is ever
//! written. The rules a golden cannot state are asserted here: `ok/` files have no errors,
//! `err/bpmnNNNN-*` files report code BPMNNNNN, and every diagnostic code has such a file.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use expect_test::expect_file;
use govflow_engine::outline::outline;
use govflow_engine::{check, check_with, Code, Limits, Parsed};

/// Codes no committed file triggers, with the reason and the test that covers them instead.
const NOT_FROM_A_FILE: &[(Code, &str)] = &[
    (
        Code::TooLarge,
        "needs a document over the 10 MiB default limit; `too_large_document_is_refused` uses small Limits",
    ),
    (Code::NotDmn, "a DMN code: DMN files are tested in engine/src/dmn.rs"),
    (Code::InvalidDecision, "a DMN code: DMN files are tested in engine/src/dmn.rs"),
];

fn folder(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/parse").join(name)
}

/// The files of `dir` whose name ends with `.{extension}`, sorted.
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    paths.sort();
    paths
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The golden text: the outline when a model was built, then one diagnostic per line.
fn golden_text(parsed: &Parsed) -> String {
    let mut text = parsed.definitions.as_ref().map(outline).unwrap_or_default();
    text.push_str("--- diagnostics ---\n");
    for diagnostic in &parsed.diagnostics {
        text.push_str(&format!("{diagnostic}\n"));
    }
    text
}

/// Checks every `.bpmn` of the folder against its `.txt` golden and returns the results, in file order.
/// Callers assert their own rules afterwards, so that `UPDATE_EXPECT=1` refreshes every golden even when
/// one of those rules fails.
fn check_folder(name: &str) -> Vec<(String, Parsed)> {
    let dir = folder(name);
    let bpmn_files = files(&dir, "bpmn");
    assert!(!bpmn_files.is_empty(), "no .bpmn files in {}", dir.display());
    for golden in files(&dir, "txt") {
        assert!(
            golden.with_extension("bpmn").exists(),
            "{} has no .bpmn file; delete it or restore the file it describes",
            golden.display()
        );
    }
    let checked: Vec<(PathBuf, Parsed)> =
        bpmn_files.into_iter().map(|path| (path.clone(), check(&std::fs::read(&path).unwrap()))).collect();
    for (path, parsed) in &checked {
        expect_file![path.with_extension("txt")].assert_eq(&golden_text(parsed));
    }
    checked.into_iter().map(|(path, parsed)| (file_name(&path), parsed)).collect()
}

/// `bpmn0007-dangling-target-ref.bpmn` → BPMN0007; `None` for files not named after a code.
fn code_in_name(name: &str) -> Option<Code> {
    let prefix = name.get(..9).filter(|prefix| prefix.starts_with("bpmn") && prefix.ends_with('-'))?;
    let printed = prefix[..8].to_ascii_uppercase();
    let code = Code::ALL.iter().copied().find(|code| code.as_str() == printed);
    assert!(code.is_some(), "{name} is named after {printed}, which is not a diagnostic code");
    code
}

#[test]
fn ok_files_match_their_goldens_and_have_no_errors() {
    let checked = check_folder("ok");
    let failures: Vec<String> = checked
        .iter()
        .filter(|(_, parsed)| parsed.definitions.is_none() || parsed.diagnostics.iter().any(|d| d.is_error()))
        .map(|(name, parsed)| {
            let errors: Vec<String> =
                parsed.diagnostics.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
            format!("{name}:\n  {}", errors.join("\n  "))
        })
        .collect();
    assert!(failures.is_empty(), "files in ok/ must build a model without errors:\n{}", failures.join("\n"));
}

#[test]
fn err_files_match_their_goldens_and_report_their_code() {
    let checked = check_folder("err");
    let mut failures = Vec::new();
    for (name, parsed) in &checked {
        if parsed.diagnostics.is_empty() {
            failures.push(format!("{name}: no diagnostic at all"));
        }
        if let Some(code) = code_in_name(name) {
            if !parsed.diagnostics.iter().any(|diagnostic| diagnostic.code == code) {
                failures.push(format!("{name}: no {code} diagnostic"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn four_problems_file_reports_exactly_its_four_problems() {
    let bytes = std::fs::read(folder("err").join("four-problems.bpmn")).unwrap();
    let parsed = check(&bytes);
    let found: Vec<(Code, String)> = parsed
        .diagnostics
        .iter()
        .map(|d| (d.code, d.element.as_ref().map(ToString::to_string).unwrap_or_default()))
        .collect();
    let expected = [
        (Code::MissingTaskType, "Activity_CheckRegistry"),
        (Code::MissingCondition, "Gateway_Late"),
        (Code::InvalidFeel, "Activity_Review"),
        (Code::DanglingReference, "Flow_Registered"),
    ]
    .map(|(code, element)| (code, element.to_owned()));
    assert_eq!(found, expected, "{:#?}", parsed.diagnostics);
    assert!(parsed.diagnostics.iter().all(|d| d.is_error()), "{:#?}", parsed.diagnostics);
}

#[test]
fn every_code_has_an_err_file() {
    let named: BTreeSet<Code> =
        files(&folder("err"), "bpmn").iter().filter_map(|path| code_in_name(&file_name(path))).collect();
    let exempt: BTreeSet<Code> = NOT_FROM_A_FILE.iter().map(|(code, _)| *code).collect();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|code| !named.contains(code) && !exempt.contains(code))
        .map(|code| code.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "no test_data/parse/err/bpmnNNNN-*.bpmn file for {missing:?}: add one (or list the code in \
         NOT_FROM_A_FILE with the test that covers it)"
    );
    let stale: Vec<&str> = exempt.intersection(&named).map(|code| code.as_str()).collect();
    assert!(stale.is_empty(), "{stale:?} now have a file; remove them from NOT_FROM_A_FILE");
}

#[test]
fn too_large_document_is_refused() {
    let bytes = std::fs::read(folder("ok").join("zeebe-dialect.bpmn")).unwrap();
    let limits = Limits { max_bytes: bytes.len() - 1, ..Limits::default() };
    let parsed = check_with(&bytes, limits);
    assert!(parsed.definitions.is_none());
    let codes: Vec<Code> = parsed.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, [Code::TooLarge], "{:#?}", parsed.diagnostics);
    let message = &parsed.diagnostics[0].message;
    assert!(message.contains(&format!("{} bytes", bytes.len())), "{message}");
    assert!(message.contains(&format!("{} bytes", bytes.len() - 1)), "{message}");

    let at_the_limit = check_with(&bytes, Limits { max_bytes: bytes.len(), ..Limits::default() });
    assert!(at_the_limit.definitions.is_some());
    assert!(at_the_limit.diagnostics.is_empty(), "{:#?}", at_the_limit.diagnostics);
}

#[test]
fn nesting_limit_is_configurable() {
    // Line 8 of zeebe-dialect.bpmn is the first element five deep:
    // definitions > process > extensionElements > zeebe:properties > zeebe:property.
    let bytes = std::fs::read(folder("ok").join("zeebe-dialect.bpmn")).unwrap();
    let parsed = check_with(&bytes, Limits { max_depth: 4, ..Limits::default() });
    assert!(parsed.definitions.is_none());
    let found: Vec<String> = parsed.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(found, ["8:9: error[BPMN0005]: elements are nested more than 4 deep"]);
}
