//! Every error the gateway answers with itself (forwarded answers pass through unchanged).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::http::JsonError;
use common::order::InvalidOrder;

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
    #[error(transparent)]
    NotPublished(#[from] PublishError),
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
            Self::NotPublished(err) => {
                tracing::warn!("order not accepted: {err:?}");
                JsonError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
            }
            Self::Upstream(err) => err.into(),
        };
        error.into_response()
    }
}
