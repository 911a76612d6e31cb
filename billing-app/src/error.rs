//! Every error billing-app's HTTP API answers with, and its status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::db::{self, NotReady};
use common::http::JsonError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("order {0} not found")]
    OrderNotFound(uuid::Uuid),
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = match self {
            Self::BadRequest(message) => JsonError::new(StatusCode::BAD_REQUEST, message),
            Self::OrderNotFound(_) => JsonError::new(StatusCode::NOT_FOUND, self.to_string()),
            Self::NotReady(not_ready) => JsonError::dependency(true, not_ready.to_string()),
            Self::Database(err) => {
                tracing::error!("database error: {err}");
                let retryable = db::is_transient(&err);
                JsonError::dependency(retryable, "the database is unavailable; retry later")
            }
        };
        error.into_response()
    }
}
