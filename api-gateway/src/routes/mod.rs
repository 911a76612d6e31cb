//! The gateway's routes. Probes and metrics come from `common::health`; every route here and
//! there is described in `openapi.json` (but for the docs page's own files), which a test
//! holds to what the gateway serves.

mod billing;
mod docs;
mod movies;
mod openapi;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

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

pub use movies::MovieRoutes;

/// Every route but `/api/movies...`, which [`MovieRoutes`] answers before the router.
pub fn router(state: SharedState) -> Router {
    Router::new()
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
