//! Fuzz target: any bytes through `check` (parse + validate) and, when a model is built, `outline`.
//! It must never panic; it asserts only what every input guarantees (no model ⇒ an error diagnostic).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let parsed = govflow_engine::check(bytes);
    match &parsed.definitions {
        Some(definitions) => {
            let _ = govflow_engine::outline::outline(definitions);
        }
        None => assert!(
            govflow_engine::has_errors(&parsed.diagnostics),
            "no model and no error diagnostic: {:?}",
            parsed.diagnostics
        ),
    }
});
