//! govflow-connectors: the [`Connector`] trait, the GovStack building-block connectors, Information
//! Mediator routing and the sandbox of simulated building blocks. Connectors never touch the store: they
//! receive a job's inputs and answer with an outcome; the engine shell commits it.
//!
//! Codemap:
//! - [`connector`]: the trait, its request and outcome, and the adapter that runs a connector as the
//!   engine shell's job handler.
//! - [`config`]: `govflow.toml` (building-block endpoints, the Information Mediator, credentials,
//!   timeouts) with environment overrides; secrets are never printed.
//! - [`client`]: one HTTP call to a building block, directly or through the Information Mediator, with
//!   the idempotency headers, and HTTP / X-Road failures mapped to retryable or permanent failures.
//! - [`bb`]: the GovStack connectors (Identity, Digital Registries, Payments, Messaging, generic HTTP).
//! - [`callbacks`]: the endpoint a building block calls back (payments), which completes the waiting job.
//! - [`sandbox`]: simulated building blocks for tests, `govflow sandbox` and `govflow demo`.

pub mod bb;
pub mod callbacks;
pub mod client;
pub mod config;
pub mod connector;
pub mod sandbox;

pub use connector::{Connector, ConnectorError, ConnectorFuture, ConnectorRequest, Outcome};
