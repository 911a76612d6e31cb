//! The gateway's routes. Probes and metrics come from `common::health`; every route here and
//! there is described in `openapi.json`, which a test holds to this router.

mod billing;
mod movies;
mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post};

use crate::proxy::Upstream;
use crate::publisher::Publisher;

/// What the handlers share, behind one `Arc` so each request clones a pointer, not three
/// connection pools.
pub type SharedState = Arc<AppState>;

pub struct AppState {
    pub inventory: Upstream,
    pub billing: Upstream,
    pub publisher: Publisher,
}

pub fn router(state: AppState) -> Router {
    let state: SharedState = Arc::new(state);
    Router::new()
        .route("/api/movies", any(movies::forward))
        .route("/api/movies/{*rest}", any(movies::forward))
        .route("/api/billing", post(billing::create_order))
        .route("/api/billing/orders", get(billing::forward_orders))
        .route(
            "/api/billing/orders/{order_id}",
            get(billing::forward_orders),
        )
        .route("/api/openapi.json", get(openapi::document))
        .with_state(state)
}
