//! The HTTP server every service runs, and the bounds on what one client can make it hold.
//!
//! - **Time to send headers** and **idle keep-alive**: a connection that has not delivered a
//!   request's headers within `HTTP_HEADER_TIMEOUT_SECONDS` is closed. hyper's header timer
//!   runs whenever a connection waits for a request, so the same bound closes idle keep-alive
//!   connections and slow-loris clients.
//! - **Connections**: at most `HTTP_MAX_CONNECTIONS` at once; one more is answered 503 and
//!   closed at once instead of waiting in the kernel's backlog.
//! - **Requests in flight**: at most `HTTP_MAX_REQUESTS_IN_FLIGHT` are handled at once; one more
//!   is answered 503 at once (load shedding, not queueing). Probes are exempt, so an overloaded
//!   service is not restarted or removed for being busy.
//! - **Time per request**: a request that has not been answered within
//!   `HTTP_REQUEST_TIMEOUT_SECONDS` (a body trickling in, say) gets 408 and its connection closes.
//! - **Time to take a response**: a write that has waited `HTTP_WRITE_TIMEOUT_SECONDS` for the
//!   client to take more of the response (a client that stopped reading) closes the connection.
//!   Without it such a client would hold its connection, and a forwarded response its upstream
//!   connection too, for as long as it liked.
//! - **Body size**: at most [`MAX_BODY_BYTES`] on every route, raw or parsed; a larger
//!   `Content-Length` is refused before a byte of the body is read.
//! - **Head size**: a request line and headers over [`MAX_HEAD_BYTES`] get hyper's 431 at once.
//!   hyper's own default buffers up to ~400 KiB per connection before refusing; with
//!   `HTTP_MAX_CONNECTIONS` connections that is more memory than a service's container has.
//!
//! A trailing slash is accepted on every path, and handlers can read the client's address
//! through `ConnectInfo<SocketAddr>`. A service may answer its busiest paths before the router
//! ([`DirectRoutes`]); they are held to the same bounds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, Version, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use hyper::body::Body as _;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_io_timeout::TimeoutWriter;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::Instrument;

use crate::config::{self, ConfigError, Env};
use crate::http::{self, JsonError, MAX_BODY_BYTES};
use crate::metrics::Metrics;

/// The largest request head (request line and headers) a service reads: 16 KiB, Node.js's
/// default, far above what any client of this API sends.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What a service's HTTP server allows each client, from `HTTP_*` and
/// `SHUTDOWN_TIMEOUT_SECONDS`. [`Default`] gives the production values.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// `HTTP_HEADER_TIMEOUT_SECONDS`: time to deliver a request's headers, on a new or an idle
    /// keep-alive connection.
    pub header_timeout: Duration,
    /// `HTTP_REQUEST_TIMEOUT_SECONDS`: time from a request's headers to its response's. Longer
    /// than the gateway's upstream and confirm timeouts, so those answer first.
    pub request_timeout: Duration,
    /// `HTTP_WRITE_TIMEOUT_SECONDS`: how long a write of a response may wait for the client to
    /// take more of it.
    pub write_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`: open connections at once.
    pub max_connections: usize,
    /// `HTTP_MAX_REQUESTS_IN_FLIGHT`: requests being handled at once, probes aside.
    pub max_requests_in_flight: usize,
    /// `SHUTDOWN_TIMEOUT_SECONDS`: after SIGTERM, how long in-flight requests may take.
    pub shutdown_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_requests_in_flight: 512,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default = Self::default();
        Ok(Self {
            header_timeout: env
                .seconds_or("HTTP_HEADER_TIMEOUT_SECONDS", default.header_timeout)?,
            request_timeout: env
                .seconds_or("HTTP_REQUEST_TIMEOUT_SECONDS", default.request_timeout)?,
            write_timeout: env.seconds_or("HTTP_WRITE_TIMEOUT_SECONDS", default.write_timeout)?,
            max_connections: env.at_least("HTTP_MAX_CONNECTIONS", default.max_connections, 1)?,
            max_requests_in_flight: env.at_least(
                "HTTP_MAX_REQUESTS_IN_FLIGHT",
                default.max_requests_in_flight,
                1,
            )?,
            shutdown_timeout: config::shutdown_timeout(env)?,
        })
    }
}

/// A service's complete HTTP application: its routes with the shared fallbacks, limits, request
/// ids, logs and metrics, behind the path normalisation. [`serve`] answers every request with
/// [`App::handle`]; tests call it in-process, without a socket.
#[derive(Clone)]
pub struct App<D = NoDirectRoutes> {
    /// The routes, their fallbacks and the [`Gate`] as a layer: the route template that the
    /// gate needs is known once a request has been routed.
    router: Router,
    gate: Arc<Gate>,
    direct: D,
}

/// Routes a service answers before its router is consulted: the few that carry most of its
/// traffic and use none of the router's extractors (the gateway's forwarded `/api/movies...`).
/// Routing, extracting and boxing through axum cost 11,500 of the 48,100 instructions the
/// gateway spent per forwarded request (`bench/instructions.sh`). Their requests pass the same
/// gate as every other: request id, limits, timeout, metrics and logs.
pub trait DirectRoutes: Clone + Send + Sync + 'static {
    /// The route template that serves `path` (its requests' metric label), or `None` to leave
    /// the request to the router. `path` has had its trailing slashes trimmed.
    fn route(&self, path: &str) -> Option<&'static str>;

    /// Answers a request for a path that [`route`](Self::route) claimed, sent by `client`.
    fn call(&self, request: Request, client: SocketAddr) -> impl Future<Output = Response> + Send;
}

/// No direct routes: the router serves every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDirectRoutes;

impl DirectRoutes for NoDirectRoutes {
    fn route(&self, _path: &str) -> Option<&'static str> {
        None
    }

    async fn call(&self, _request: Request, _client: SocketAddr) -> Response {
        http::not_found().await.into_response()
    }
}

/// Completes `router` into an [`App`] that enforces `settings` and records into `metrics`.
pub fn app(router: Router, metrics: Metrics, settings: &ServerSettings) -> App {
    let gate = Arc::new(Gate {
        metrics,
        slots: Semaphore::new(settings.max_requests_in_flight),
        request_timeout: settings.request_timeout,
    });
    let router = router
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        // One layer for all of it: axum clones a route's whole stack of layers on every request.
        .layer(middleware::from_fn_with_state(gate.clone(), pass_gate));
    App {
        router,
        gate,
        direct: NoDirectRoutes,
    }
}

impl App {
    /// This application with `direct` answering the paths it claims before the router.
    pub fn with_direct_routes<D: DirectRoutes>(self, direct: D) -> App<D> {
        App {
            router: self.router,
            gate: self.gate,
            direct,
        }
    }
}

impl<D: DirectRoutes> App<D> {
    /// Answers `request`, sent by `client`, as the server does for each request it reads.
    /// Handlers on the router read `client` through `ConnectInfo<SocketAddr>`.
    pub async fn handle(&self, request: Request, client: SocketAddr) -> Response {
        let mut request = trim_trailing_slashes(request);
        if let Some(route) = self.direct.route(request.uri().path()) {
            return self
                .gate
                .pass(route, request, |request| self.direct.call(request, client))
                .await;
        }
        request.extensions_mut().insert(ConnectInfo(client));
        match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// What every request passes through once its route is known, whether the router or a
/// [`DirectRoutes`] serves it.
struct Gate {
    metrics: Metrics,
    /// One per request being handled, probes aside.
    slots: Semaphore,
    request_timeout: Duration,
}

/// The [`Gate`] as axum middleware, for the requests that the router serves.
async fn pass_gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    // The route template, not the raw path, keeps metric labels bounded.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    gate.pass(route, request, |request| next.run(request)).await
}

impl Gate {
    /// Gives the request to `handler` (the route `route` serves it) with its id, a span naming
    /// it for every log line, a completion log line and its metrics; or refuses it, or bounds
    /// it in time and body size.
    async fn pass<F, Answer>(&self, route: &str, mut request: Request, handler: F) -> Response
    where
        F: FnOnce(Request) -> Answer,
        Answer: Future<Output = Response>,
    {
        let request_id = http::request_id(&mut request);
        let method = request.method().clone();
        let span = tracing::info_span!(
            "request",
            method = %method,
            path = %request.uri().path(),
            request_id = %String::from_utf8_lossy(request_id.as_bytes()),
        );
        async move {
            let _in_flight = self.metrics.in_flight();
            let started = Instant::now();
            let mut response = match self.admit(&request, route) {
                Ok(_slot) => self.run_bounded(request, handler).await,
                // Whatever body the request has is left unread: it must not be taken for the
                // next request on the connection.
                Err(refusal) => closing(refusal.into_response()),
            };
            response.headers_mut().insert(http::REQUEST_ID, request_id);
            let elapsed = started.elapsed();
            let status = response.status();
            self.metrics
                .observe_request(&method, route, status, elapsed);
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            if http::is_probe(route) {
                tracing::debug!(status = status.as_u16(), latency_ms, "request completed");
            } else {
                tracing::info!(status = status.as_u16(), latency_ms, "request completed");
            }
            response
        }
        .instrument(span)
        .await
    }

    /// A slot for the request (none needed for probes), or the answer refusing it: no `Host`
    /// on HTTP/1.1 (RFC 9112 §3.2), a declared body over the limit (refused unread), or every
    /// slot taken (shed at once rather than queued).
    fn admit(
        &self,
        request: &Request,
        route: &str,
    ) -> Result<Option<SemaphorePermit<'_>>, JsonError> {
        if request.version() == Version::HTTP_11 && !request.headers().contains_key(header::HOST) {
            return Err(JsonError::new(
                StatusCode::BAD_REQUEST,
                "an HTTP/1.1 request must carry a Host header",
            ));
        }
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(http::body_too_large());
        }
        if http::is_probe(route) {
            return Ok(None);
        }
        match self.slots.try_acquire() {
            Ok(slot) => Ok(Some(slot)),
            Err(_) => Err(JsonError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is at capacity; retry shortly",
            )),
        }
    }

    /// Runs the request with its body cut off past [`MAX_BODY_BYTES`] (whoever reads it: an
    /// extractor or the gateway's proxy), and answers 408 if it is not done within the request
    /// timeout, closing the connection: what is left of its body cannot be told from the next
    /// request.
    async fn run_bounded<Answer>(
        &self,
        request: Request,
        handler: impl FnOnce(Request) -> Answer,
    ) -> Response
    where
        Answer: Future<Output = Response>,
    {
        // A request without a body (most GETs) has nothing to limit, and is spared a box.
        let request = if request.body().is_end_stream() {
            request
        } else {
            request.map(|body| Body::new(Limited::new(body, MAX_BODY_BYTES)))
        };
        let limit = self.request_timeout;
        match tokio::time::timeout(limit, handler(request)).await {
            Ok(response) => response,
            Err(_) => closing(
                JsonError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request was not completed within {limit:?}"),
                )
                .into_response(),
            ),
        }
    }
}

/// `response`, with the connection closed after it.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish for at most `settings.shutdown_timeout`.
pub async fn serve<D: DirectRoutes>(
    listener: TcpListener,
    app: App<D>,
    settings: &ServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Arc::new(app);
    let connections = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_header_size(MAX_HEAD_BYTES);

    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine, so pause briefly rather than spin or stop.
                    tracing::warn!("cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        // Responses go out as soon as they are written, not held back by Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {err}");
        }
        // A write the client does not take within the write timeout fails, closing the connection.
        let mut stream = TimeoutWriter::new(stream);
        stream.set_timeout(Some(settings.write_timeout));
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(request.map(Body::new), client).await) }
        });
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(Box::pin(stream)), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%client, "connection ended with an error: {err}");
            }
            drop(slot);
        });
    }

    drop(listener);
    let grace = settings.shutdown_timeout;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "requests still in flight after the shutdown timeout; exiting anyway"
        );
    }
    Ok(())
}

/// The answer to a connection over `HTTP_MAX_CONNECTIONS`, written before reading anything.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 40\r\n\r\n\
{\"error\":\"too many connections to serve\"}";

async fn refuse(mut stream: TcpStream) {
    let answer = async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
}

/// `/api/movies/` is `/api/movies`. Only trailing slashes go: `//metrics` stays what it is (no
/// route), so a path that a reverse proxy refuses cannot be reached by doubling a slash.
fn trim_trailing_slashes(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        let mut parts = request.uri().clone().into_parts();
        // The trimmed path is a part of a path that parsed, so it parses again.
        if let Ok(path_and_query) = path_and_query.parse() {
            parts.path_and_query = Some(path_and_query);
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_after_trimming(uri: &str) -> String {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        trim_trailing_slashes(request).uri().to_string()
    }

    #[test]
    fn only_trailing_slashes_are_trimmed() {
        assert_eq!(path_after_trimming("/api/movies/"), "/api/movies");
        assert_eq!(
            path_after_trimming("/api/movies//?title=a/"),
            "/api/movies?title=a/"
        );
        assert_eq!(path_after_trimming("/"), "/");
        assert_eq!(path_after_trimming("//"), "/");
        assert_eq!(path_after_trimming("//metrics"), "//metrics");
        assert_eq!(path_after_trimming("/api/movies"), "/api/movies");
    }

    #[test]
    fn settings_come_from_the_environment() {
        let env = Env::from_pairs([
            ("HTTP_HEADER_TIMEOUT_SECONDS", "0.5"),
            ("HTTP_WRITE_TIMEOUT_SECONDS", "2"),
            ("HTTP_MAX_CONNECTIONS", "10"),
        ]);
        let settings = ServerSettings::from_env(&env).unwrap();
        assert_eq!(settings.header_timeout, Duration::from_millis(500));
        assert_eq!(settings.write_timeout, Duration::from_secs(2));
        assert_eq!(settings.max_connections, 10);
        assert_eq!(settings.max_requests_in_flight, 512);
        let zero = Env::from_pairs([("HTTP_MAX_REQUESTS_IN_FLIGHT", "0")]);
        assert!(ServerSettings::from_env(&zero).is_err());
    }
}
