//! Prometheus metrics: one registry per service, HTTP request metrics recorded by route
//! template, and the `GET /metrics` handler.
//!
//! Each service instance owns its registry (no global default registry), so tests can start
//! many instances in one process without clashing registrations.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds: from sub-millisecond (a cached lookup) to the 5 s upstream bound.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A service's metrics registry with the HTTP metrics every service records.
/// Cheap to clone; clones share the same registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http: Arc<HttpMetrics>,
}

struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
}

impl Metrics {
    /// A fresh registry holding the HTTP metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let http = HttpMetrics {
            requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests answered"),
                &["method", "route", "status"],
            )
            .expect("valid metric definition"),
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time from request to response headers",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["method", "route"],
            )
            .expect("valid metric definition"),
            in_flight: IntGauge::new("http_requests_in_flight", "HTTP requests being served")
                .expect("valid metric definition"),
        };
        let metrics = Self {
            registry,
            http: Arc::new(http),
        };
        metrics.register(metrics.http.requests.clone());
        metrics.register(metrics.http.latency.clone());
        metrics.register(metrics.http.in_flight.clone());
        metrics
    }

    /// Adds a service-specific collector to this registry and hands it back, so a metric can
    /// be defined and registered in one expression.
    ///
    /// # Panics
    /// When a metric of the same name is already registered: a programming error that the
    /// first test run reveals.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, collector: C) -> C {
        self.registry
            .register(Box::new(collector.clone()))
            .expect("metric names are unique within a service");
        collector
    }

    /// Records one answered request. `route` is a route template or "unmatched", never a raw
    /// path, and a method outside the standard ones counts as "other": no client can create
    /// series.
    pub(crate) fn observe_request(
        &self,
        method: &Method,
        route: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let method = method_label(method);
        self.http
            .requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.http
            .latency
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a request as in flight until the returned guard is dropped, even if the client
    /// goes away and the handler's future is cancelled.
    pub(crate) fn in_flight(&self) -> InFlightGuard {
        self.http.in_flight.inc();
        InFlightGuard(self.http.in_flight.clone())
    }

    /// The registry in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The methods of RFC 9110 (and PATCH) by name; any other token is "other".
fn method_label(method: &Method) -> &'static str {
    static KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::CONNECT, "CONNECT"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, label)| label)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) struct InFlightGuard(IntGauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics`.
pub async fn handler(State(metrics): State<Metrics>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        metrics.render(),
    )
        .into_response()
}
