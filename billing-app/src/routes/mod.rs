//! The read API. Probes and metrics come from `common::health`.

mod orders;

use axum::Router;
use axum::routing::get;
use common::db::Database;

pub fn router(db: Database) -> Router {
    Router::new()
        .route("/api/orders", get(orders::list))
        .route("/api/orders/{order_id}", get(orders::show))
        .with_state(db)
}
