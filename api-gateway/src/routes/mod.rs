//! The gateway's routes. Probes and metrics come from `common::health`; every route here and
//! there is described in `openapi.json` (but for the docs page's own files), which a test
//! holds to this router.

mod billing;
mod docs;
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
        .route("/api/docs", get(docs::page))
        // The page's own files: not part of the API, so not in openapi.json.
        .route("/api/docs/{*file}", get(docs::file))
        .with_state(state)
}
