//! HTTP plumbing every service shares: the JSON error body, a JSON extractor whose rejections
//! are JSON errors too, the 404/405 fallbacks, and request ids.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The header carrying a request's id, accepted from the client or created here.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id accepted from a client; a longer one is replaced, since the id is
/// logged with every line and travels with every order.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// The request's id: the client's `x-request-id` if it sent a reasonable one, else a new UUID,
/// which is then set on the request so that handlers and forwarded requests carry it.
pub fn request_id(request: &mut Request) -> HeaderValue {
    let given = request.headers().get(REQUEST_ID).filter(|id| {
        (1..=MAX_REQUEST_ID_BYTES).contains(&id.len())
            && id.as_bytes().iter().all(u8::is_ascii_graphic)
    });
    if let Some(id) = given {
        return id.clone();
    }
    let mut buffer = uuid::Uuid::encode_buffer();
    let created = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    let id = HeaderValue::from_str(created).unwrap_or_else(|_| HeaderValue::from_static("-"));
    request.headers_mut().insert(REQUEST_ID, id.clone());
    id
}

/// The largest request body a service reads (64 KiB); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answered as `{"error": "..."}` with its status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub status: StatusCode,
    pub message: String,
}

impl JsonError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A failure of one of the service's own dependencies, whose details belong in the log,
    /// never to the client: 503 with `message` when retrying later may succeed, else a bare
    /// 500.
    pub fn dependency(retryable: bool, message: impl Into<String>) -> Self {
        if retryable {
            Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        } else {
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for JsonError {
    /// A 503 also carries `Retry-After: 1`: every 503 here is a passing condition.
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<JsonRejection> for JsonError {
    /// Keeps axum's statuses (400 syntax, 415 content type, 413 too large, 422 wrong shape)
    /// and its precise message, which names the offending field.
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "expected a request body with Content-Type: application/json".to_owned()
            }
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => return body_too_large(),
            _ => rejection.body_text(),
        };
        Self::new(status, message)
    }
}

impl From<QueryRejection> for JsonError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

/// `axum::Json`, but a body that cannot be read answers with a [`JsonError`].
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(JsonError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query`, but a malformed query string answers with a [`JsonError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(JsonError))]
pub struct Query<T>(pub T);

/// The answer to a request body over [`MAX_BODY_BYTES`].
pub fn body_too_large() -> JsonError {
    JsonError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// Fallback for paths no route serves.
pub async fn not_found() -> JsonError {
    JsonError::new(StatusCode::NOT_FOUND, "no such route")
}

/// Fallback for a known path with a method it does not serve (axum adds the `Allow` header).
pub async fn method_not_allowed() -> JsonError {
    JsonError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// Probes and scrapes: never shed, and logged at debug level so they do not drown the
/// request log.
pub(crate) fn is_probe(route: &str) -> bool {
    matches!(route, "/health" | "/ready" | "/metrics")
}
