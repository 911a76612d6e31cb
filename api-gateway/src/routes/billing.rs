//! `POST /api/billing`: validate, publish with confirm, answer. `GET /api/billing/orders...`:
//! forwarded to billing-app's `/api/orders...`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::http::uri::PathAndQuery;
use axum::response::Response;
use common::http::{Json, REQUEST_ID};
use common::order::Order;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::SharedState;
use crate::error::ApiError;

/// Lets a client retry an order safely: the same key (a UUID) becomes the same order id, and
/// billing-app stores an order id only once.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Serialize)]
pub struct Accepted {
    message: &'static str,
    order_id: Uuid,
}

/// Answers 200 only after the broker confirmed the order; 503 when it cannot take it.
pub async fn create_order(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Accepted>, ApiError> {
    let order = Order::from_request(order_id(&headers)?, &body)?;
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    state.publisher.publish(&order, request_id).await?;
    tracing::info!(order_id = %order.order_id, user_id = order.user_id, "order accepted");
    Ok(Json(Accepted {
        message: "Order received and queued for billing",
        order_id: order.order_id,
    }))
}

/// The client's `Idempotency-Key`, or a new time-ordered id.
fn order_id(headers: &HeaderMap) -> Result<Uuid, ApiError> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(Uuid::now_v7()),
        Some(key) => {
            let key = String::from_utf8_lossy(key.as_bytes());
            Uuid::parse_str(&key).map_err(|_| ApiError::InvalidIdempotencyKey(key.into_owned()))
        }
    }
}

/// `/api/billing/orders[/{order_id}][?query]` → billing-app's `/api/orders[/{order_id}][?query]`.
pub async fn forward_orders(
    State(state): State<SharedState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let original = request.uri();
    let rest = original.path().trim_start_matches("/api/billing");
    let target = match original.query() {
        Some(query) => format!("/api{rest}?{query}"),
        None => format!("/api{rest}"),
    };
    // The path came from a parsed URI, so it is a valid path again.
    let target =
        PathAndQuery::try_from(target).unwrap_or_else(|_| PathAndQuery::from_static("/api/orders"));
    Ok(state.billing.forward(request, client, target).await?)
}
