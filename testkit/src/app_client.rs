//! A service's complete HTTP application ([`App`]) driven in this process without a socket, for
//! tests of what the routes answer rather than of how the server handles connections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use common::server::App;
use serde_json::Value;

use crate::eventually;

/// Where in-process requests come from, for handlers that read the client's address: the
/// loopback address, as for a test client on this machine (port 0: there is no connection).
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// Sends requests to an [`App`] with [`App::handle`], each as `common::server::serve` would
/// hand it over from a connection.
#[derive(Clone)]
pub struct AppClient {
    app: App,
}

impl AppClient {
    /// A client of `app`, e.g. a service's `startup::app(...)`.
    pub fn new(app: App) -> Self {
        Self { app }
    }

    /// `GET {path_and_query}`.
    pub async fn get(&self, path_and_query: &str) -> AppResponse {
        let request = Request::get(path_and_query)
            .body(Body::empty())
            .expect("a valid request");
        self.send(request).await
    }

    /// Waits until `GET /ready` answers `status`, as [`crate::wait_for_ready`] does for a
    /// service on a socket.
    pub async fn wait_for_ready(&self, status: u16) {
        eventually(
            Duration::from_secs(30),
            &format!("/ready answers {status}"),
            || async { self.get("/ready").await.status() == status },
        )
        .await;
    }

    /// Sends `request` with what a client and its connection would add: a `Host` header
    /// (the application refuses HTTP/1.1 without one), the `Content-Length` of a non-empty
    /// body of known size (the application refuses a declared oversized body unread), and the
    /// client's address. Returns the answer once its whole body has arrived.
    pub async fn send(&self, mut request: Request<Body>) -> AppResponse {
        let headers = request.headers_mut();
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, HeaderValue::from_static("localhost"));
        }
        if let Some(length) = request.body().size_hint().exact()
            && length > 0
            && !request.headers().contains_key(header::CONTENT_LENGTH)
        {
            request
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        let response = self.app.handle(request, CLIENT).await;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_else(|err| panic!("the response body broke off: {err}"));
        AppResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

/// An answer from an [`App`], its body complete.
#[derive(Debug)]
pub struct AppResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl AppResponse {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers the application set (not those a server adds on the wire, such as `date`
    /// or `content-length` for a streamed body).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics, showing the body, when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not a JSON body ({err}): {}", self.text()))
    }
}
