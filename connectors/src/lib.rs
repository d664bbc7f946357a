//! govflow-connectors: the Connector trait, the GovStack building-block connectors, Information Mediator
//! routing and the sandbox of simulated building blocks. It must never touch the store.
//!
//! Empty until the connectors issue lands; the crate exists so the workspace has its final shape.
