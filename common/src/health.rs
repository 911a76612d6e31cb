//! `GET /health` (liveness), `GET /ready` (readiness) and `GET /metrics`.
//!
//! Liveness never looks at dependencies: a database outage must not make Kubernetes restart
//! a healthy process. Readiness runs every check the service registered, each bounded in time.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::metrics::{self, Metrics};

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named readiness check, e.g. "database" or "broker".
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    probe: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl Check {
    /// `probe` answers `Ok(())` when the dependency is usable, or a short reason why not.
    pub fn new<F, Fut>(name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            probe: Arc::new(move || Box::pin(probe())),
        }
    }
}

/// The `/health`, `/ready` and `/metrics` routes of a service.
pub fn routes(checks: Vec<Check>, metrics: Metrics) -> Router {
    let checks: Arc<[Check]> = checks.into();
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready).with_state(checks))
        .route("/metrics", get(metrics::handler).with_state(metrics))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(checks): State<Arc<[Check]>>) -> (StatusCode, Json<Value>) {
    let mut results = BTreeMap::new();
    let mut all_ready = true;
    for check in checks.iter() {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (check.probe)()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        all_ready &= outcome.is_ok();
        results.insert(check.name, outcome.err().unwrap_or_else(|| "ok".to_owned()));
    }
    let (status, word) = if all_ready {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    (status, Json(json!({ "status": word, "checks": results })))
}
