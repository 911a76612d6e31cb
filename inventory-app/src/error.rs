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
        let status = match &self {
            Self::InvalidId(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MovieNotFound(_) => StatusCode::NOT_FOUND,
            Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(err) if db::is_transient(err) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            Self::Database(err) => {
                // Details go to the log; the client learns only whether to retry.
                tracing::error!("{err}");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "the database is unavailable; retry later".to_owned()
                } else {
                    "internal error".to_owned()
                }
            }
            other => other.to_string(),
        };
        let mut response = JsonError::new(status, message).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
