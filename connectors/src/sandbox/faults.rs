//! Fault injection for the sandbox: one [`Fault`] per service, applied by a middleware on the service's
//! prefix (so it also hits requests that come through the Information Mediator). It must never use an OS
//! random source: whether a request fails under `error_rate` is a function of the seed and a per-service
//! request counter, so a test run is reproducible.
//!
//! Leaves out: faults per route (a fault hits the whole service), partial or corrupted bodies, and
//! connection resets (a "down" BB still answers 503 rather than refusing the connection).

use super::seed::{mix, unit};
use super::{json_error, lock, Fault, Service, Shared};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a `timeout` fault hangs: longer than any sane client timeout.
const HANG: Duration = Duration::from_secs(3600);

/// The faults in force and the request counters behind `error_rate`.
#[derive(Debug)]
pub(crate) struct FaultTable {
    seed: u64,
    faults: BTreeMap<Service, Fault>,
    counters: BTreeMap<Service, u64>,
}

impl FaultTable {
    pub(crate) fn new(seed: u64) -> FaultTable {
        FaultTable { seed, faults: BTreeMap::new(), counters: BTreeMap::new() }
    }

    pub(crate) fn set(&mut self, service: Service, fault: Fault) {
        self.faults.insert(service, fault);
    }

    pub(crate) fn get(&self, service: Service) -> Fault {
        self.faults.get(&service).cloned().unwrap_or_default()
    }

    pub(crate) fn clear(&mut self) {
        self.faults.clear();
    }

    /// The fault for this request to `service`, and whether `error_rate` picks it to fail.
    fn verdict(&mut self, service: Service) -> (Fault, bool) {
        let fault = self.get(service);
        let counter = self.counters.entry(service).or_insert(0);
        let n = *counter;
        *counter += 1;
        let salt = (service as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
        let fails = if fault.error_rate >= 1.0 {
            true
        } else if fault.error_rate <= 0.0 {
            false
        } else {
            unit(mix(self.seed ^ salt ^ mix(n))) < fault.error_rate
        };
        (fault, fails)
    }
}

/// Wraps `router` (the routes of `service`) in the fault middleware.
pub(crate) fn layer(router: Router, service: Service, shared: &Arc<Shared>) -> Router {
    router.layer(middleware::from_fn_with_state((shared.clone(), service), apply))
}

fn shutting_down() -> Response {
    json_error(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "the sandbox is shutting down"}))
}

async fn apply(
    State((shared, service)): State<(Arc<Shared>, Service)>,
    request: Request,
    next: Next,
) -> Response {
    let (fault, fails) = lock(&shared.faults).verdict(service);
    if !fault.latency.is_zero() && !shared.sleep(fault.latency).await {
        return shutting_down();
    }
    if fault.down {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("the {service} building block is down (sandbox fault)")}),
        );
    }
    if fault.timeout {
        shared.sleep(HANG).await;
        return shutting_down();
    }
    if fails {
        return json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("the {service} building block failed (sandbox fault: error_rate)")}),
        );
    }
    if fault.process_then_timeout {
        // The work is done and its effects kept; only the answer is lost.
        drop(next.run(request).await);
        shared.sleep(HANG).await;
        return shutting_down();
    }
    next.run(request).await
}
