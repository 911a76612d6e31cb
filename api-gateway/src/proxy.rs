//! Forwarding a request to a backing service and streaming its answer back.
//!
//! The request keeps its method, path, query, headers and body; the response comes back with
//! its status, headers and body. Both bodies stream through without being buffered whole.
//! Hop-by-hop headers (RFC 9110 §7.6.1) are dropped in both directions, and the client's
//! address is added as `X-Forwarded-For`. Redirects are passed back, never followed, and no
//! proxy setting of the environment is read: the gateway only ever talks to the configured
//! service, over the keep-alive connections of its [`ConnectionPool`].

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::{StatusCode, Uri, Version};
use axum::response::Response;
use common::http::{JsonError, MAX_BODY_BYTES};
use http_body_util::LengthLimitError;
use hyper::body::{Body as _, Frame, SizeHint};

use crate::connection_pool::{ConnectionPool, SendError};

/// Headers that describe one connection, not the message: never forwarded.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Why a request could not be forwarded. Messages name the service, never its address.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    #[error("{0} did not answer in time")]
    Timeout(&'static str),
    #[error("{0} failed to answer")]
    BadGateway(&'static str),
    /// The client's body broke off or was malformed (a bad chunk, say): the client's fault.
    #[error("the request body could not be read: it is malformed or was cut off")]
    UnreadableBody,
    /// The client's body grew past [`MAX_BODY_BYTES`] while it was being forwarded.
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    /// The client's body was still arriving when the time for the service's answer ran out.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
}

impl From<ProxyError> for JsonError {
    fn from(err: ProxyError) -> Self {
        let status = match err {
            ProxyError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UnreadableBody => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        };
        JsonError::new(status, err.to_string())
    }
}

/// A backing service the gateway forwards to, with its own connection pool.
pub struct Upstream {
    name: &'static str,
    /// The service's `Host`, as the requests sent to it carry it.
    host: HeaderValue,
    connections: ConnectionPool,
    timeout: Duration,
}

impl Upstream {
    /// `base` is the service's `http://host[:port]` (the settings accept no other scheme);
    /// `timeout` bounds the wait for response headers (a slow body after that keeps streaming).
    /// Running out of it is the service's 504, or the client's 408 while its body is still
    /// arriving.
    pub fn new(name: &'static str, base: &Uri, timeout: Duration) -> Self {
        let authority = base
            .authority()
            .map_or("127.0.0.1", |authority| authority.as_str());
        let host = base.host().unwrap_or("127.0.0.1");
        let port = base.port_u16().unwrap_or(80);
        Self {
            name,
            host: HeaderValue::from_str(authority)
                .unwrap_or_else(|_| HeaderValue::from_static("127.0.0.1")),
            connections: ConnectionPool::new(format!("{host}:{port}")),
            timeout,
        }
    }

    /// Sends `request` to `path_and_query` on this service on behalf of `client`.
    pub async fn forward(
        &self,
        mut request: Request,
        client: SocketAddr,
        path_and_query: PathAndQuery,
    ) -> Result<Response, ProxyError> {
        // Origin form (`/path?query`): the connection already says which server it is.
        *request.uri_mut() = Uri::from(path_and_query);
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        remove_hop_by_hop(headers);
        add_forwarded(headers, client, self.host.clone());
        // Raised once the client's body has been read to the end; `None` for a request without
        // one. Until then, running out of time is the client's fault, not the service's.
        let mut body_finished = None;
        let request = request.map(|body| {
            // Nothing of an empty body can fail: it is sent as one, without a wrapper to poll.
            if body.is_end_stream() {
                return Body::empty();
            }
            let finished = Arc::new(AtomicBool::new(false));
            body_finished = Some(finished.clone());
            Body::new(ClientBody { body, finished })
        });

        let Ok(sent) = tokio::time::timeout(self.timeout, self.connections.send(request)).await
        else {
            let client_still_sending =
                body_finished.is_some_and(|finished| !finished.load(Ordering::Acquire));
            return Err(if client_still_sending {
                ProxyError::BodyTimeout
            } else {
                ProxyError::Timeout(self.name)
            });
        };
        let response = sent.map_err(|err| {
            if let Some(body_error) = find_cause::<ClientBodyError>(&err) {
                return if find_cause::<LengthLimitError>(body_error).is_some() {
                    ProxyError::BodyTooLarge
                } else {
                    ProxyError::UnreadableBody
                };
            }
            tracing::warn!(upstream = self.name, "forwarding failed: {err:?}");
            match err {
                SendError::Connect(_) => ProxyError::Unavailable(self.name),
                SendError::Request(_) => ProxyError::BadGateway(self.name),
            }
        })?;
        let mut response = response.map(Body::new);
        remove_hop_by_hop(response.headers_mut());
        Ok(response)
    }
}

/// The client's request body on its way to the service. Its failures become
/// [`ClientBodyError`]s, and `finished` is raised once it has been read to the end: a timeout
/// can then tell a client that stopped sending from a service that stopped answering.
struct ClientBody {
    body: Body,
    finished: Arc<AtomicBool>,
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let polled = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if polled.is_none() || self.body.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        Poll::Ready(polled.map(|frame| frame.map_err(ClientBodyError)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A failure of the client's request body while it is forwarded, so that it can be told apart
/// from the upstream's failures in the error the HTTP client returns.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed: {0}")]
struct ClientBodyError(#[source] axum::Error);

/// The first error of type `E` in `err`'s chain of causes.
fn find_cause<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    std::iter::successors(Some(err), |cause| cause.source()).find_map(|cause| cause.downcast_ref())
}

/// Drops the standard hop-by-hop headers and any header that `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names costs less than nine removals.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Appends the client to `X-Forwarded-For`, and says how the request first arrived: the
/// `X-Forwarded-Proto` and `X-Forwarded-Host` of a reverse proxy in front (the Compose entry
/// terminates TLS) are kept, otherwise this hop's own are set. `Host` becomes the upstream's,
/// `upstream_host`.
fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, upstream_host: HeaderValue) {
    let client_ip = ip_text(client.ip());
    let forwarded_for = match headers.get(X_FORWARDED_FOR).map(HeaderValue::to_str) {
        Some(Ok(earlier)) => HeaderValue::try_from(format!("{earlier}, {client_ip}")),
        _ => HeaderValue::try_from(client_ip),
    };
    if let Ok(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto_given = headers
        .get(X_FORWARDED_PROTO)
        .is_some_and(|proto| proto == "https" || proto == "http");
    if !proto_given {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(host) = headers.insert(header::HOST, upstream_host)
        && !headers.contains_key(X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// An address as text. IPv4, the common case, is written by hand: this runs on every forwarded
/// request, and the formatting machinery was a visible part of its cost.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_host() -> HeaderValue {
        HeaderValue::from_static("inventory-app:8080")
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
            ("x-kept", "yes"),
            ("content-type", "application/json"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn addresses_are_written_as_usual() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "127.0.0.1",
            "192.168.100.255",
            "::1",
            "2001:db8::7",
        ] {
            assert_eq!(ip_text(ip.parse().unwrap()), ip);
        }
    }

    #[test]
    fn the_client_is_appended_to_x_forwarded_for() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
        add_forwarded(
            &mut headers,
            "10.1.2.3:4567".parse().unwrap(),
            upstream_host(),
        );
        assert_eq!(headers[X_FORWARDED_FOR], "203.0.113.9, 10.1.2.3");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "shop.example");
        assert_eq!(headers[header::HOST], "inventory-app:8080");
    }

    #[test]
    fn what_a_reverse_proxy_in_front_says_of_the_original_request_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        headers.insert(X_FORWARDED_HOST, HeaderValue::from_static("shop.example"));
        headers.insert(header::HOST, HeaderValue::from_static("api-gateway:3000"));
        add_forwarded(
            &mut headers,
            "172.18.0.5:4567".parse().unwrap(),
            upstream_host(),
        );
        assert_eq!(headers[X_FORWARDED_FOR], "203.0.113.9, 172.18.0.5");
        assert_eq!(headers[X_FORWARDED_PROTO], "https");
        assert_eq!(headers[X_FORWARDED_HOST], "shop.example");

        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("gopher"));
        add_forwarded(
            &mut headers,
            "10.1.2.3:4567".parse().unwrap(),
            upstream_host(),
        );
        assert_eq!(
            headers[X_FORWARDED_PROTO], "http",
            "only http or https is passed on"
        );
    }
}
