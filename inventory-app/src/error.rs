//! Every error an inventory handler answers with, and its status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::db::{self, NotReady};
use common::http::JsonError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path's id is not a positive 64-bit integer.
    #[error("movie id must be a whole number between 1 and {max}, got {0:?}", max = i64::MAX)]
    InvalidId(String),
    /// A field breaks a rule of [`crate::model`].
    #[error("{0}")]
    Invalid(String),
    #[error("movie {0} not found")]
    MovieNotFound(i64),
    #[error(transparent)]
    NotReady(#[from] NotReady),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = match self {
            Self::InvalidId(_) => JsonError::new(StatusCode::BAD_REQUEST, self.to_string()),
            Self::Invalid(message) => JsonError::new(StatusCode::UNPROCESSABLE_ENTITY, message),
            Self::MovieNotFound(_) => JsonError::new(StatusCode::NOT_FOUND, self.to_string()),
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
