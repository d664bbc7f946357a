//! govflow-designer-api: the axum HTTP API (native `/api/v1` and the GovStack Workflow BB API).
//! DTOs live only here; the engine never sees HTTP types.
//!
//! Empty until the API issue lands; the crate exists so the workspace has its final shape.
