//! `/api/movies` and everything under it: forwarded to inventory-app as they are.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::uri::PathAndQuery;
use axum::response::Response;

use super::SharedState;
use crate::error::ApiError;

pub async fn forward(
    State(state): State<SharedState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let target = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Ok(state.inventory.forward(request, client, target).await?)
}
