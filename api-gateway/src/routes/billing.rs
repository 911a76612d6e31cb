//! `POST /api/billing`: validate, publish with confirm, answer. `GET /api/billing/orders...`:
//! forwarded to billing-app's `/api/orders...`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::response::Response;
use common::http::{Json, REQUEST_ID};
use common::order::Order;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::SharedState;
use crate::error::ApiError;
use crate::order_id;

/// Lets a client retry an order safely: the same key (a UUID) with the same order is the same
/// order id (see [`crate::order_id`]), and billing-app stores an order id only once.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Serialize)]
pub struct Accepted {
    message: &'static str,
    order_id: Uuid,
}

/// Answers 200 only after the broker confirmed the order; 503 when it cannot take it.
pub async fn create_order(
    State(state): State<SharedState>,
    headers: OrderHeaders,
    Json(body): Json<Value>,
) -> Result<Json<Accepted>, ApiError> {
    let mut order = Order::from_request(Uuid::nil(), &body)?;
    order.order_id = order_id::for_order(headers.idempotency_key, &order);
    if let Err(cause) = state.publisher.publish(&order, &headers.request_id).await {
        return Err(ApiError::NotPublished {
            order_id: order.order_id,
            cause,
        });
    }
    tracing::info!(order_id = %order.order_id, user_id = order.user_id, "order accepted");
    Ok(Json(Accepted {
        message: "Order received and queued for billing",
        order_id: order.order_id,
    }))
}

/// What an order takes from the request headers (read in place, the header map is not copied).
pub struct OrderHeaders {
    /// The client's `Idempotency-Key`, if it sent one.
    idempotency_key: Option<Uuid>,
    /// Passed on in the message, so the order can be traced from request to row.
    request_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for OrderHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let idempotency_key = match parts.headers.get(IDEMPOTENCY_KEY) {
            None => None,
            Some(key) => {
                let key = String::from_utf8_lossy(key.as_bytes());
                let parsed = Uuid::parse_str(&key)
                    .map_err(|_| ApiError::InvalidIdempotencyKey(key.into_owned()))?;
                Some(parsed)
            }
        };
        let request_id = parts
            .headers
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            idempotency_key,
            request_id,
        })
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
    // Made of the parts of a parsed URI, so it parses again; a failure would be a bug here.
    let target = PathAndQuery::try_from(target).map_err(|_| ApiError::MalformedPath)?;
    Ok(state.billing.forward(request, client, target).await?)
}
