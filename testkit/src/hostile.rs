//! Careless and hostile clients, spoken as raw HTTP/1.1 over TCP, and the checks every service
//! must pass against them: a slow or idle client is cut off, a flood of made-up methods creates
//! no metric series, a huge body is refused before it is read, a request without `Host` is
//! refused, connections over the cap are answered at once, a client that stops reading its
//! response is given up, and a request head larger than the limit is refused at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::service::metrics_text;

/// An answer read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `request` on a new connection and reads the answer until the server closes the
/// connection or the body announced by `Content-Length` has arrived.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send the request");
    read_response(&mut stream).await
}

/// Reads one response from `stream`, within 10 s.
pub async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            if let Some(response) = parse(&received)
                && response.body.len() >= content_length(&response.head)
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    parse(&received).unwrap_or_else(|| {
        panic!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&received)
        )
    })
}

fn parse(bytes: &[u8]) -> Option<RawResponse> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(RawResponse {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Whether the server closes `stream` within `limit` (a read sees the end or an error).
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let until_closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, until_closed).await.is_ok()
}

/// Opens `count` connections that each send the start of a request's headers, then nothing.
pub async fn slow_clients(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    endless_heads(addr, count, 0).await
}

/// The slowest of `count` sequential `GET {url}/health` on new connections.
pub async fn slowest_health_check(url: &str, count: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..count {
        let http = reqwest::Client::new();
        let started = Instant::now();
        let response = http
            .get(format!("{url}/health"))
            .send()
            .await
            .expect("GET /health");
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

/// 300 connections sending their headers byte by never: a normal client is served meanwhile
/// within `LATENCY_BOUND`, and every one of them is closed once `header_timeout` has passed
/// (plus 2 s of slack for a loaded machine).
pub async fn assert_slow_clients_are_cut_off(addr: SocketAddr, header_timeout: Duration) {
    /// What a health check may take while the server holds 300 stalled connections: far above
    /// the ~1 ms it takes on an idle machine, far below a client's patience.
    const LATENCY_BOUND: Duration = Duration::from_millis(500);
    let url = format!("http://{addr}");
    let mut stalled = slow_clients(addr, 300).await;
    let slowest = slowest_health_check(&url, 20).await;
    assert!(
        slowest < LATENCY_BOUND,
        "a normal client waited {slowest:?} with 300 stalled connections open"
    );
    let deadline = header_timeout + Duration::from_secs(2);
    for (index, stream) in stalled.iter_mut().enumerate() {
        assert!(
            closed_within(stream, deadline).await,
            "stalled connection {index} still open {deadline:?} after it stopped sending"
        );
    }
}

/// A `GET path` whose client stops reading at once: once a write of the response has waited
/// `write_timeout` for the client, the server closes the connection. `path` must answer a
/// streamed (chunked) response of many megabytes, more than the socket buffers between the
/// two hold, so that the server's writes do wait; the client reads again after three times
/// `write_timeout`, and must then see the connection end short of the whole response.
pub async fn assert_stalled_readers_are_cut_off(
    addr: SocketAddr,
    path: &str,
    write_timeout: Duration,
) {
    let socket = TcpSocket::new_v4().expect("a socket");
    // A small receive window, so that the server's writes have to wait soon.
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    tokio::time::sleep(write_timeout * 3).await;

    let mut received = Vec::new();
    let until_closed = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(10), until_closed)
        .await
        .is_ok();
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "not the response asked for: {:?}",
        String::from_utf8_lossy(&received[..received.len().min(200)])
    );
    assert!(
        !received.ends_with(b"\r\n0\r\n\r\n"),
        "the server waited for a client that stopped reading, then sent all {} bytes",
        received.len()
    );
    assert!(
        closed,
        "the connection stayed open after the response was cut short"
    );
}

/// Sends, on each of `count` connections, the start of a request whose one header goes on for
/// `header_bytes` without ever ending, and returns the connections.
pub async fn endless_heads(addr: SocketAddr, count: usize, header_bytes: usize) -> Vec<TcpStream> {
    let mut head = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Endless: ".to_vec();
    head.resize(head.len() + header_bytes, b'a');
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // The server may refuse the head before all of it is written: that is the point.
        let _ = stream.write_all(&head).await;
        streams.push(stream);
    }
    streams
}

/// A request head of 12 KiB is served; one that grows past `max_head_bytes` is answered 431
/// at once and its connection closed, instead of being buffered up to hyper's default of
/// ~400 KiB until the header timeout.
pub async fn assert_large_heads_are_refused(addr: SocketAddr, max_head_bytes: usize) {
    let padding = "p".repeat(12 * 1024);
    let request = format!("GET /health HTTP/1.1\r\nHost: test\r\nX-Padding: {padding}\r\n\r\n");
    let response = exchange(addr, request.as_bytes()).await;
    assert_eq!(response.status, 200, "a 12 KiB head: {:?}", response.head);

    let started = Instant::now();
    let mut stream = endless_heads(addr, 1, max_head_bytes + 4096)
        .await
        .pop()
        .expect("one connection");
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 431, "{response:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusing a head over the limit took {:?}",
        started.elapsed()
    );
    assert!(
        closed_within(&mut stream, Duration::from_secs(1)).await,
        "the connection of a refused head stays open"
    );
}

/// The number of `http_requests_total` series in `/metrics`.
async fn request_series(url: &str) -> usize {
    metrics_text(url)
        .await
        .lines()
        .filter(|line| line.starts_with("http_requests_total{"))
        .count()
}

/// 1,000 requests with made-up methods on `path` leave the number of metric series as it was
/// after the first one.
pub async fn assert_methods_create_no_series(addr: SocketAddr, path: &str) {
    let url = format!("http://{addr}");
    let send = |method: String| async move {
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        exchange(addr, request.as_bytes()).await.status
    };
    let first = send("MADEUP".to_owned()).await;
    assert!((400..500).contains(&first), "a made-up method got {first}");
    // A scrape is counted once answered: this one makes the scrapes' own series exist.
    metrics_text(&url).await;
    let before = request_series(&url).await;
    for i in 0..1000 {
        send(format!("M{i}")).await;
    }
    let after = request_series(&url).await;
    assert_eq!(
        after,
        before,
        "1,000 made-up methods created {} series",
        after.saturating_sub(before)
    );
}

/// A `POST` declaring a 50 MB body is answered 413, as JSON, without the server waiting for a
/// byte of it, and within a second.
pub async fn assert_huge_body_refused_unread(addr: SocketAddr, path: &str) {
    let started = Instant::now();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: 52428800\r\n\r\n"
    );
    let response = exchange(addr, request.as_bytes()).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status, 413, "{response:?}");
    assert!(response.body.contains("\"error\""), "{response:?}");
    assert!(
        elapsed < Duration::from_secs(1),
        "refusing a 50 MB body took {elapsed:?}"
    );
}

/// An HTTP/1.1 request without `Host` is answered 400 (RFC 9112 §3.2), as JSON.
pub async fn assert_host_is_required(addr: SocketAddr) {
    let response = exchange(addr, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(response.body.contains("Host"), "{response:?}");
    // HTTP/1.0 has no Host requirement: the container healthchecks speak it.
    let response = exchange(addr, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert_eq!(response.status, 200, "{response:?}");
}

/// With `cap` connections open, one more is answered 503 at once and closed, and a slot freed
/// is usable again.
pub async fn assert_connections_are_capped(addr: SocketAddr, cap: usize) {
    let mut held = slow_clients(addr, cap).await;
    let started = Instant::now();
    let response = exchange(addr, b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert_eq!(response.status, 503, "{response:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the connection over the cap waited {:?}",
        started.elapsed()
    );
    held.pop();
    crate::eventually(Duration::from_secs(5), "a freed slot is usable", || async {
        exchange(
            addr,
            b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        )
        .await
        .status
            == 200
    })
    .await;
}
