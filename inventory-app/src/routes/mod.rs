//! The API's routes. Probes and metrics come from `common::health`.

mod movies;

use axum::Router;
use axum::routing::get;
use common::db::Database;

pub fn router(db: Database) -> Router {
    Router::new()
        .route(
            "/api/movies",
            get(movies::list)
                .post(movies::create)
                .delete(movies::delete_all),
        )
        .route(
            "/api/movies/{id}",
            get(movies::show).put(movies::update).delete(movies::delete),
        )
        .with_state(db)
}
