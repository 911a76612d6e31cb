//! HTTP plumbing every service shares: the JSON error body, a JSON extractor whose rejections
//! are JSON errors too, the 404/405 fallbacks, and the outer layers (request ids, request logs,
//! metrics).

use std::time::Instant;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;

use crate::metrics::Metrics;

/// The header carrying a request's id, accepted from the client or created here.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
                format!("request body is larger than {MAX_BODY_BYTES} bytes")
            }
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

/// Completes a service's router: JSON 404/405 fallbacks, a request body limit, and around
/// every route the request id, a span naming it for every log line, a completion log line,
/// and the request metrics.
pub fn finish(router: Router, metrics: Metrics) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(metrics, observe))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Probes and scrapes are logged at debug level so they do not drown the request log.
fn is_probe(route: &str) -> bool {
    matches!(route, "/health" | "/ready" | "/metrics")
}

async fn observe(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    // The route template, not the raw path, keeps metric labels bounded.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "request",
        method = %method,
        path = %request.uri().path(),
        request_id = %request_id,
    );
    async move {
        let _in_flight = metrics.in_flight();
        let started = Instant::now();
        let response = next.run(request).await;
        let elapsed = started.elapsed();
        let status = response.status();
        metrics.observe_request(method.as_str(), route, status, elapsed);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if is_probe(route) {
            tracing::debug!(status = status.as_u16(), latency_ms, "request completed");
        } else {
            tracing::info!(status = status.as_u16(), latency_ms, "request completed");
        }
        response
    }
    .instrument(span)
    .await
}
