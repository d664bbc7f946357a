//! govflow-engine: the BPMN 2.0 model, its parser and validator, FEEL and DMN, the pure runtime core,
//! storage (trait + sled), the durable engine and its tokio shell, and audit. The parser and validator
//! never panic: bad input becomes [`Diagnostic`]s.

pub mod audit;
pub mod builtin;
pub mod diagnostics;
pub mod dmn;
pub mod engine;
pub mod feel;
pub mod model;
pub mod outline;
pub mod parse;
pub mod retry;
pub mod runtime;
pub mod shell;
pub mod store;
pub mod support;
pub mod timer;
pub mod validate;
pub mod workers;
mod xml;

pub use diagnostics::{has_errors, Code, Diagnostic, Severity};
pub use parse::{parse, parse_with, Parsed};
pub use validate::validate;
pub use xml::Limits;

/// Parses and validates a BPMN file: the model (when one could be built) and every diagnostic, parse
/// diagnostics first, then validation diagnostics in document order.
pub fn check(bytes: &[u8]) -> Parsed {
    check_with(bytes, Limits::default())
}

pub fn check_with(bytes: &[u8], limits: Limits) -> Parsed {
    let mut parsed = parse_with(bytes, limits);
    if let Some(definitions) = &parsed.definitions {
        parsed.diagnostics.extend(validate(definitions));
    }
    parsed
}
