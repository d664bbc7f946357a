//! Corpus test: runs `check` over every real-world BPMN file in the shared corpus (MIWG suite, bpmn-engine
//! models) and asserts the engine never panics, answers every unusable file with an error, and reads the
//! MIWG reference models without model-rule errors. It must never write to the corpus; it skips (passes)
//! when the corpus is absent.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use govflow_engine::{check, Code, Parsed};

/// Below this many files the corpus is not the one this test was written for.
const MIN_FILES: usize = 800;
/// Share of corpus files that must yield a model (the rest are deliberately broken or not BPMN).
const MIN_MODEL_SHARE: f64 = 0.95;
/// Folder of the MIWG reference models, relative to the corpus root.
const MIWG_REFERENCE: &str = "miwg/Reference";
const MIWG_REFERENCE_FILES: usize = 21;

/// Diagnostics that mean "this is not a well-formed BPMN document": only these may leave no model.
const NOT_WELL_FORMED: &[Code] = &[Code::MalformedXml, Code::NotBpmn, Code::DtdRefused];

fn corpus_root() -> PathBuf {
    match std::env::var_os("GOVFLOW_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bpmn"),
    }
}

/// Every `*.bpmn` file under `dir`, recursively, sorted by path so the output is stable.
fn bpmn_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("bpmn")) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Checks every file, on all cores (a debug build of the FEEL parser is slow), each inside
/// `catch_unwind`; `None` for a file whose check panicked. Results come back in `files` order.
fn check_all(files: &[PathBuf]) -> Vec<Option<Parsed>> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new((0..files.len()).map(|_| None).collect::<Vec<_>>());
    let n_workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..n_workers {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.get(index) else { break };
                let bytes =
                    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                let parsed = catch_unwind(AssertUnwindSafe(|| check(&bytes))).ok();
                results.lock().unwrap()[index] = parsed;
            });
        }
    });
    results.into_inner().unwrap()
}

#[derive(Default)]
struct Tally {
    n_files: usize,
    n_models: usize,
    n_with_error: usize,
    errors: BTreeMap<&'static str, usize>,
    warnings: BTreeMap<&'static str, usize>,
}

impl Tally {
    fn add(&mut self, parsed: &Parsed) {
        self.n_files += 1;
        self.n_models += usize::from(parsed.definitions.is_some());
        self.n_with_error += usize::from(parsed.diagnostics.iter().any(|d| d.is_error()));
        for diagnostic in &parsed.diagnostics {
            let by_code = if diagnostic.is_error() { &mut self.errors } else { &mut self.warnings };
            *by_code.entry(diagnostic.code.as_str()).or_default() += 1;
        }
    }

    fn print(&self, title: &str) {
        eprintln!(
            "{title}: {} files, {} parsed to a model, {} with any error",
            self.n_files, self.n_models, self.n_with_error
        );
        let table = |map: &BTreeMap<&str, usize>| {
            map.iter().map(|(code, n)| format!("{code}={n}")).collect::<Vec<_>>().join(" ")
        };
        eprintln!("  errors by code:   {}", table(&self.errors));
        eprintln!("  warnings by code: {}", table(&self.warnings));
    }
}

#[test]
fn corpus_never_panics_and_reads_real_files() {
    let root = corpus_root();
    if !root.is_dir() {
        eprintln!(
            "corpus not found at {}, skipped (set GOVFLOW_CORPUS to a folder of .bpmn files)",
            root.display()
        );
        return;
    }
    let started = Instant::now();
    let files = bpmn_files(&root);

    let mut all = Tally::default();
    let mut reference = Tally::default();
    let mut reference_model_errors = Vec::new();
    let mut panicked = Vec::new();
    let mut failures = Vec::new();

    for (path, parsed) in files.iter().zip(check_all(&files)) {
        let relative = path.strip_prefix(&root).unwrap_or(path);
        let Some(parsed) = parsed else {
            panicked.push(relative.display().to_string());
            continue;
        };
        all.add(&parsed);

        let not_well_formed = parsed.diagnostics.iter().any(|d| NOT_WELL_FORMED.contains(&d.code));
        if !not_well_formed && parsed.definitions.is_none() {
            failures.push(format!("{}: well-formed BPMN but no model", relative.display()));
        }
        if parsed.definitions.is_none() && !parsed.diagnostics.iter().any(|d| d.is_error()) {
            failures.push(format!("{}: no model and no error diagnostic", relative.display()));
        }

        if relative.parent() == Some(Path::new(MIWG_REFERENCE)) {
            reference.add(&parsed);
            for diagnostic in parsed.diagnostics.iter().filter(|d| d.is_error()) {
                if !diagnostic.code.is_execution_rule() {
                    reference_model_errors.push(format!("{}:{diagnostic}", relative.display()));
                }
            }
        }
    }

    all.print(&format!("corpus {}", root.display()));
    reference.print(MIWG_REFERENCE);
    let n_reference_execution_errors: usize = reference
        .errors
        .iter()
        .filter(|(code, _)| Code::ALL.iter().any(|c| c.as_str() == **code && c.is_execution_rule()))
        .map(|(_, n)| n)
        .sum();
    eprintln!("  execution-rule errors in {MIWG_REFERENCE}: {n_reference_execution_errors} (reported, not asserted)");
    eprintln!("corpus checked in {:.2?}", started.elapsed());

    assert!(panicked.is_empty(), "check panicked on {} file(s):\n{}", panicked.len(), panicked.join("\n"));
    assert!(
        failures.is_empty(),
        "{} file(s) broke the parse contract:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The bounds below describe the shared corpus (recognised by its MIWG reference folder); a folder of
    // other files named by GOVFLOW_CORPUS is held to the contracts above only.
    if !root.join(MIWG_REFERENCE).is_dir() {
        eprintln!("no {MIWG_REFERENCE} under {}: file-count and MIWG assertions skipped", root.display());
        return;
    }
    assert!(
        files.len() >= MIN_FILES,
        "only {} .bpmn files under {}; expected at least {MIN_FILES}",
        files.len(),
        root.display()
    );
    let model_share = all.n_models as f64 / all.n_files as f64;
    assert!(
        model_share >= MIN_MODEL_SHARE,
        "only {}/{} files ({:.1}%) yield a model; expected at least {:.0}%",
        all.n_models,
        all.n_files,
        model_share * 100.0,
        MIN_MODEL_SHARE * 100.0
    );
    assert_eq!(reference.n_files, MIWG_REFERENCE_FILES, "files in {MIWG_REFERENCE}");
    assert!(
        reference_model_errors.is_empty(),
        "{} model-rule error(s) in the MIWG reference models:\n{}",
        reference_model_errors.len(),
        reference_model_errors.join("\n")
    );
}
