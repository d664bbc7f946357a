//! Tidy checks over the repository's own sources (rust-analyzer's habit): every Rust file opens with a
//! `//!` line saying what it is for. Reads files only.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "examples", "engine", "connectors", "designer-api"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() >= 10, "found only {} Rust files", files.len());
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .map(|path| path.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert!(offenders.is_empty(), "files without a leading //! line: {offenders:#?}");
}

#[test]
fn docs_list_every_diagnostic_code_with_its_summary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/diagnostics.md")).unwrap();
    for code in govflow_engine::Code::ALL {
        let row = format!("| `{code}` |");
        let line = docs.lines().find(|line| line.starts_with(&row));
        let line = line.unwrap_or_else(|| panic!("docs/diagnostics.md has no row for {code}"));
        assert!(line.contains(code.summary()), "docs/diagnostics.md: summary of {code} is out of date");
        let rule = if code.is_execution_rule() { "| execution |" } else { "| model |" };
        assert!(line.contains(rule), "docs/diagnostics.md: {code} should be marked {rule}");
    }
}

/// The runtime core (and the FEEL and timer code it calls) is pure: no async runtime, no store, no clock,
/// no randomness, no I/O, no hash-ordered iteration. `decide` must give the same events for the same
/// arguments, forever.
#[test]
fn runtime_core_is_pure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/src");
    let mut files = Vec::new();
    rust_files(&root.join("runtime"), &mut files);
    files.push(root.join("feel/eval.rs"));
    files.push(root.join("timer.rs"));
    assert!(files.len() >= 7, "the runtime core files moved: {files:?}");
    let forbidden = [
        "tokio",
        "sled",
        "SystemTime",
        "Instant",
        "Utc::now",
        "Local::now",
        "uuid",
        "rand::",
        "std::fs",
        "std::net",
        "std::thread",
        "HashMap",
        "HashSet",
        "std::env",
    ];
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // Only the core's own code: unit tests (after `#[cfg(test)]`) may read fixtures; comments are skipped.
        let code_end = text.find("#[cfg(test)]").unwrap_or(text.len());
        for (n, line) in text[..code_end].lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) && !code.trim_start().starts_with('"') {
                    offences.push(format!("{}:{}: {word}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(offences.is_empty(), "the runtime core must stay pure:\n{}", offences.join("\n"));
}

/// docs/bpmn-coverage.md names the scenario behind every executed element: each name must exist, so the
/// page cannot claim coverage that is not there.
#[test]
fn coverage_page_names_only_existing_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/bpmn-coverage.md")).unwrap();
    let scenarios: Vec<String> = std::fs::read_dir(root.join("engine/test_data/runtime/scenarios"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|name| name.strip_suffix(".scenario").map(str::to_owned))
        .collect();
    let mut n_checked = 0;
    for (i, token) in page.split('`').enumerate() {
        // Odd pieces are inside backticks; scenario names are lowercase words joined by dashes.
        let looks_like_scenario = i % 2 == 1
            && token.contains('-')
            && token.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*');
        if !looks_like_scenario {
            continue;
        }
        n_checked += 1;
        let exists = match token.strip_suffix('*') {
            Some(prefix) => scenarios.iter().any(|name| name.starts_with(prefix)),
            None => scenarios.iter().any(|name| name == token),
        };
        assert!(exists, "docs/bpmn-coverage.md names scenario '{token}', which does not exist");
    }
    assert!(n_checked >= 40, "only {n_checked} scenario names found on the coverage page");
}
