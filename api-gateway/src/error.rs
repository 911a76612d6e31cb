//! Every error the gateway answers with itself (forwarded answers pass through unchanged).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::http::JsonError;
use common::order::InvalidOrder;

use serde_json::json;
use uuid::Uuid;

use crate::proxy::ProxyError;
use crate::publisher::PublishError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    InvalidOrder(#[from] InvalidOrder),
    #[error("Idempotency-Key must be a UUID, got {0:?}")]
    InvalidIdempotencyKey(String),
    #[error("malformed path")]
    MalformedPath,
    #[error("{cause}")]
    NotPublished { order_id: Uuid, cause: PublishError },
    #[error(transparent)]
    Upstream(#[from] ProxyError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = match self {
            Self::InvalidOrder(err) => {
                JsonError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())
            }
            Self::InvalidIdempotencyKey(_) | Self::MalformedPath => {
                JsonError::new(StatusCode::BAD_REQUEST, self.to_string())
            }
            Self::NotPublished { order_id, cause } => {
                if cause.may_be_stored() {
                    tracing::warn!(%order_id, "order not confirmed: {cause:?}");
                    return may_be_stored(order_id, &cause);
                }
                // The broker's state is logged once by the connection and shown by /ready and
                // the metrics; a line per refused order would flood the log in an outage.
                tracing::debug!(%order_id, "order not accepted: {cause}");
                JsonError::new(StatusCode::SERVICE_UNAVAILABLE, cause.to_string())
            }
            Self::Upstream(err) => err.into(),
        };
        error.into_response()
    }
}

/// A 503 for an order the broker received but did not confirm: it may be stored, so the client
/// gets its id, and a retry with that id as `Idempotency-Key` cannot store it twice.
fn may_be_stored(order_id: Uuid, cause: &PublishError) -> Response {
    let body = json!({
        "error": format!(
            "{cause}; the order may still be stored: repeat the request with the header \
             Idempotency-Key: {order_id}, which cannot store it twice"
        ),
        "order_id": order_id,
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
