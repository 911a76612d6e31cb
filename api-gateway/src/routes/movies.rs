//! `/api/movies` and everything under it: forwarded to inventory-app as they are.
//!
//! These are the gateway's busiest routes, and forwarding needs nothing of the router, so they
//! are answered before it (see `common::server::DirectRoutes`); every method passes through,
//! and inventory-app answers 404 and 405 itself.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::response::{IntoResponse, Response};
use common::server::DirectRoutes;

use super::SharedState;
use crate::error::ApiError;

/// The routes' templates, as metrics and logs name them.
const LIST: &str = "/api/movies";
const UNDER: &str = "/api/movies/{*rest}";

/// `/api/movies...`, answered with what inventory-app answers (or the gateway's own 502, 503 or
/// 504 when it cannot).
#[derive(Clone)]
pub struct MovieRoutes(pub SharedState);

impl DirectRoutes for MovieRoutes {
    fn route(&self, path: &str) -> Option<&'static str> {
        template(path)
    }

    async fn call(&self, request: Request, client: SocketAddr) -> Response {
        let target = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match self.0.inventory.forward(request, client, target).await {
            Ok(response) => response,
            Err(err) => ApiError::from(err).into_response(),
        }
    }
}

/// The template of the route serving `path`: the list itself or anything under it.
fn template(path: &str) -> Option<&'static str> {
    match path.strip_prefix(LIST)? {
        "" => Some(LIST),
        rest if rest.starts_with('/') => Some(UNDER),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_and_every_path_under_it_are_claimed_and_nothing_else() {
        assert_eq!(template("/api/movies"), Some(LIST));
        assert_eq!(template("/api/movies/42"), Some(UNDER));
        assert_eq!(template("/api/movies//42/x"), Some(UNDER));
        assert_eq!(template("/api/moviesx"), None);
        assert_eq!(template("//api/movies"), None);
        assert_eq!(template("/api/billing"), None);
    }
}
