//! Keep-alive HTTP/1.1 connections to one backing service, each carrying one request at a time.
//!
//! hyper-util's general-purpose client did this before, and for a gateway that talks to one
//! address per service it cost a sixth of the gateway's instructions per forwarded request
//! (`bench/instructions.sh`): a pool keyed by scheme and host behind a hash map, a task spawned
//! per response to give its connection back, a `Host` header formatted per request. Here the pool is a stack of idle connections (the
//! most recently used first, so a quiet period lets the others expire); a connection goes back
//! once its response body has been read to the end, and one whose response was abandoned
//! halfway is closed, since it cannot carry another request.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept per service: more than the requests one gateway has in flight to it
/// under the benchmark's heaviest load, few enough that their sockets cost nothing.
const MAX_IDLE: usize = 256;

/// How long an idle connection is reused. Below the 10 s after which the services close a
/// keep-alive connection that sends nothing (`HTTP_HEADER_TIMEOUT_SECONDS`), so that the
/// gateway gives a connection up before the service does, in all but a race (retried below).
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: the service is down, unknown or unreachable.
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    /// The request failed on an open connection: its body failed, or the service broke the
    /// connection or answered something that is not HTTP.
    #[error("the request failed: {0}")]
    Request(#[source] hyper::Error),
}

/// Connections to one `host:port`. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct ConnectionPool {
    shared: Arc<Shared>,
}

struct Shared {
    address: String,
    idle: Mutex<Vec<IdleConnection>>,
}

struct IdleConnection {
    sender: SendRequest<Body>,
    since: Instant,
}

impl ConnectionPool {
    /// A pool for `address` (`host:port`, resolved at each new connection). Opens nothing yet.
    pub fn new(address: String) -> Self {
        Self {
            shared: Arc::new(Shared {
                address,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sends `request` (its URI in origin form, its `Host` set) on an idle connection or a new
    /// one, and returns the response once its head has arrived.
    pub async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.take_idle().await {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.pooled(response, sender)),
                Err(mut failed) => match failed.take_message() {
                    // The service closed an idle connection just as the request was handed to
                    // it: nothing of the request was written, so it is safe to send again, on
                    // another connection.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Request(failed.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open and ready.
    async fn take_idle(&self) -> Option<SendRequest<Body>> {
        loop {
            // The lock is held for the pop only, never across an await.
            let idle = self.shared.idle.lock().ok()?.pop()?;
            if idle.since.elapsed() > IDLE_TIMEOUT || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Ready at once unless the connection is still finishing its last response, and an
            // error if the service closed it meanwhile.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(self.shared.address.as_str()),
        )
        .await
        .map_err(|_| SendError::Connect(io::ErrorKind::TimedOut.into()))?
        .map_err(SendError::Connect)?;
        // A request is sent as soon as it is written, not held back by Nagle's algorithm.
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("upstream connection ended with an error: {err}");
            }
        });
        Ok(sender)
    }

    /// `response` with a body that gives `sender`'s connection back when it has been read.
    fn pooled(
        &self,
        response: Response<Incoming>,
        sender: SendRequest<Body>,
    ) -> Response<PooledBody> {
        let (head, body) = response.into_parts();
        let mut body = PooledBody {
            body,
            connection: Some((sender, self.shared.clone())),
        };
        // A response without a body (HEAD, 204, 304) may never be polled.
        if body.body.is_end_stream() {
            body.give_back();
        }
        Response::from_parts(head, body)
    }
}

impl Shared {
    fn put(&self, sender: SendRequest<Body>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// A response body from the service; its connection returns to the pool at the body's end.
pub struct PooledBody {
    body: Incoming,
    connection: Option<(SendRequest<Body>, Arc<Shared>)>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((sender, pool)) = self.connection.take() {
            pool.put(sender);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            // A connection whose response broke off carries nothing more.
            Poll::Ready(Some(Err(_))) => self.connection = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
