//! The proxy in front of inventory-app: what is forwarded, what comes back, and what happens
//! when the upstream is down or slow.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use testkit::TestDatabase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;

/// A gateway in front of the real inventory-app with a fresh database.
async fn with_inventory() -> (InProcess, InProcess, TestDatabase) {
    let db = TestDatabase::create().await;
    let inventory = start_inventory(db.settings()).await;
    let gateway = start_gateway(gateway_settings(
        &inventory.url(),
        &dead_url().await,
        no_broker(),
    ))
    .await;
    (gateway, inventory, db)
}

/// An HTTP/1.1 upstream written by hand, to control every byte: it answers each request
/// with `response` after `delay`, and hands the request head it received to the test.
async fn raw_upstream(
    response: &'static str,
    delay: Duration,
) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (heads, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let head = read_head(&mut socket).await;
                let _ = heads.send(head);
                tokio::time::sleep(delay).await;
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, received)
}

async fn read_head(socket: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

/// Sends `request` as raw bytes to `url` and returns the whole raw response, lowercased.
async fn raw_request(url: &str, request: &str) -> String {
    let mut socket = TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).to_lowercase()
}

#[tokio::test]
async fn method_path_query_and_headers_are_forwarded_without_hop_by_hop_headers() {
    let upstream_answer = "HTTP/1.1 418 I'm a teapot\r\n\
        Content-Type: application/json\r\n\
        Content-Length: 2\r\n\
        Connection: close, X-Upstream-Hop\r\n\
        X-Upstream-Hop: secret\r\n\
        Keep-Alive: timeout=5\r\n\
        X-Upstream-Custom: kept\r\n\r\n{}";
    let (upstream, mut heads) = raw_upstream(upstream_answer, Duration::ZERO).await;
    let gateway = start_gateway(gateway_settings(&upstream, &dead_url().await, no_broker())).await;

    let response = raw_request(
        &gateway.url(),
        "DELETE /api/movies/7?title=a%20b&x=1 HTTP/1.1\r\n\
         Host: shop.example\r\n\
         Connection: close, X-Drop-Me\r\n\
         X-Drop-Me: secret\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Authorization: Basic eA==\r\n\
         X-Custom: kept\r\n\
         Content-Length: 0\r\n\r\n",
    )
    .await;

    let head = heads.recv().await.unwrap();
    assert!(
        head.starts_with("delete /api/movies/7?title=a%20b&x=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("x-custom: kept"), "{head}");
    assert!(head.contains("x-forwarded-for: 127.0.0.1"), "{head}");
    assert!(head.contains("x-forwarded-proto: http"), "{head}");
    assert!(head.contains("x-forwarded-host: shop.example"), "{head}");
    assert!(head.contains("x-request-id: "), "{head}");
    for hop in ["x-drop-me", "keep-alive", "te:", "proxy-authorization"] {
        assert!(!head.contains(hop), "{hop} was forwarded:\n{head}");
    }

    assert!(response.starts_with("http/1.1 418"), "{response}");
    assert!(response.contains("x-upstream-custom: kept"), "{response}");
    for hop in ["x-upstream-hop", "keep-alive"] {
        assert!(!response.contains(hop), "{hop} came back:\n{response}");
    }
}

#[tokio::test]
async fn redirects_are_passed_back_not_followed() {
    let (upstream, mut heads) = raw_upstream(
        "HTTP/1.1 302 Found\r\nLocation: http://example.invalid/elsewhere\r\nContent-Length: 0\r\n\r\n",
        Duration::ZERO,
    )
    .await;
    let gateway = start_gateway(gateway_settings(&upstream, &dead_url().await, no_broker())).await;
    let response = raw_request(
        &gateway.url(),
        "GET /api/movies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("http/1.1 302"), "{response}");
    assert!(response.contains("location: http://example.invalid/elsewhere"));
    assert_eq!(
        heads.recv().await.unwrap().lines().next(),
        Some("get /api/movies http/1.1")
    );
}

#[tokio::test]
async fn inventory_answers_pass_through_unchanged() {
    let (gateway, inventory, _db) = with_inventory().await;
    let movie = json!({"title": "Heat", "description": "1995"});
    let (status, created) =
        json_of(post_json(&format!("{}/api/movies", gateway.url()), &movie).await).await;
    assert_eq!(status, 200);

    let (status, found) = json_of(
        reqwest::get(format!("{}/api/movies?title=HEA", gateway.url()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, found), (200, json!([created])));

    let (status, missing) = json_of(
        reqwest::get(format!("{}/api/movies/999", gateway.url()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, missing),
        (404, json!({"error": "movie 999 not found"}))
    );

    let response = reqwest::Client::new()
        .patch(format!("{}/api/movies", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET,HEAD,POST,DELETE");
    assert_eq!(json_of(response).await.0, 405);

    // The same bytes as straight from inventory-app.
    let through = reqwest::get(format!("{}/api/movies", gateway.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let direct = reqwest::get(format!("{}/api/movies", inventory.url()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(through, direct);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let (gateway, inventory, _db) = with_inventory().await;
    let http = reqwest::Client::new();
    let description = "x".repeat(3_900);
    for n in 0..100 {
        let movie = json!({"title": format!("Movie {n}"), "description": description});
        let response = http
            .post(format!("{}/api/movies", gateway.url()))
            .json(&movie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let through = http
        .get(format!("{}/api/movies", gateway.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let direct = http
        .get(format!("{}/api/movies", inventory.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(through.len() > 390_000);
    assert_eq!(through, direct);

    // A request body over inventory-app's limit reaches it and its 413 comes back.
    let huge = json!({"title": "big", "description": "y".repeat(200_000)});
    let (status, _) = json_of(
        http.post(format!("{}/api/movies", gateway.url()))
            .json(&huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn inventory_down_is_503_and_slow_is_504_without_leaking_addresses() {
    let down = dead_url().await;
    let gateway = start_gateway(gateway_settings(&down, &down, no_broker())).await;
    let (status, error) = json_of(
        reqwest::get(format!("{}/api/movies", gateway.url()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &error),
        (503, &json!({"error": "inventory-app is unavailable"}))
    );
    let (status, error) = json_of(
        reqwest::get(format!("{}/api/billing/orders", gateway.url()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &error),
        (503, &json!({"error": "billing-app is unavailable"}))
    );
    assert!(!error.to_string().contains("127.0.0.1"));

    let (slow, _heads) = raw_upstream(
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    let mut settings = gateway_settings(&slow, &down, no_broker());
    settings.upstream_timeout = Duration::from_millis(300);
    let gateway = start_gateway(settings).await;
    let (status, error) = json_of(
        reqwest::get(format!("{}/api/movies", gateway.url()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error),
        (
            504,
            json!({"error": "inventory-app did not answer in time"})
        )
    );
}

#[tokio::test]
async fn paths_outside_the_api_are_404_json() {
    let (gateway, _inventory, _db) = with_inventory().await;
    for path in [
        "/",
        "/api",
        "/api/other",
        "/apimovies",
        "/api/billing/nothing",
        "/movies",
    ] {
        let (status, error) = json_of(
            reqwest::get(format!("{}{path}", gateway.url()))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, error),
            (404, json!({"error": "no such route"})),
            "{path}"
        );
    }
}

/// The head of a chunked `POST /api/movies`.
const CHUNKED_POST: &str = "POST /api/movies HTTP/1.1\r\nHost: test\r\n\
    Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

#[tokio::test]
async fn a_chunked_body_that_is_not_chunked_is_the_clients_400_not_a_502() {
    let (gateway, _inventory, db) = with_inventory().await;
    for _ in 0..5 {
        let request = format!("{CHUNKED_POST}ZZ\r\n{{\"title\": \"x\"}}\r\n0\r\n\r\n");
        let response = testkit::hostile::exchange(gateway.addr(), request.as_bytes()).await;
        assert_eq!(response.status, 400, "{response:?}");
        assert!(response.head.contains("application/json"), "{response:?}");
        assert!(!response.body.contains("inventory-app"), "{response:?}");
    }
    let pool = db.pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM movies")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing was stored");
}

#[tokio::test]
async fn an_oversized_chunked_body_is_the_clients_413_not_a_502() {
    let (gateway, _inventory, _db) = with_inventory().await;
    for _ in 0..10 {
        let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
        stream.write_all(CHUNKED_POST.as_bytes()).await.unwrap();
        let chunk = format!("2000\r\n{}\r\n", "y".repeat(0x2000));
        // 200 KiB, more than any service takes. The gateway may stop reading (and answer)
        // before all of it is sent; the answer is read either way.
        for _ in 0..25 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n").await;
        let response = testkit::hostile::read_response(&mut stream).await;
        assert_eq!(response.status, 413, "{response:?}");
        assert!(response.body.contains("larger than"), "{response:?}");
    }
}

#[tokio::test]
async fn a_declared_50_mb_body_is_refused_by_the_gateway_unread() {
    let (gateway, _inventory, _db) = with_inventory().await;
    testkit::hostile::assert_huge_body_refused_unread(gateway.addr(), "/api/movies").await;
    testkit::hostile::assert_huge_body_refused_unread(gateway.addr(), "/api/billing").await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_the_clients_408_not_a_504() {
    let db = TestDatabase::create().await;
    let inventory = start_inventory(db.settings()).await;
    let mut settings = gateway_settings(&inventory.url(), &dead_url().await, no_broker());
    settings.upstream_timeout = Duration::from_millis(500);
    let gateway = start_gateway(settings).await;

    let body = r#"{"title": "Stalled", "description": "Its last bytes never come"}"#;
    let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
    let head = format!(
        "POST /api/movies HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..20]).await.unwrap();
    let response = testkit::hostile::read_response(&mut stream).await;
    assert_eq!(response.status, 408, "{response:?}");
    assert!(response.head.contains("application/json"), "{response:?}");
    assert!(!response.body.contains("inventory-app"), "{response:?}");
    assert!(
        testkit::hostile::closed_within(&mut stream, Duration::from_secs(2)).await,
        "the rest of the body cannot be told from a next request: the connection closes"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM movies")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing was stored");
}

/// An upstream written by hand that answers every request on a connection with `200 {}` and
/// counts the connections it accepted. With `close_after_each` it closes every connection
/// right after its answer without saying so, as a service does when it times out an idle
/// keep-alive connection.
async fn counting_upstream(close_after_each: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while !read_head(&mut socket).await.is_empty() {
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
                    if socket.write_all(answer).await.is_err() || close_after_each {
                        break;
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn forwarded_requests_reuse_one_keep_alive_connection() {
    let (upstream, accepted) = counting_upstream(false).await;
    let gateway = start_gateway(gateway_settings(&upstream, &dead_url().await, no_broker())).await;
    let http = reqwest::Client::new();
    for _ in 0..50 {
        let response = http
            .get(format!("{}/api/movies/1", gateway.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "{}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_that_closes_its_idle_connections_fails_no_request() {
    let (upstream, accepted) = counting_upstream(true).await;
    let gateway = start_gateway(gateway_settings(&upstream, &dead_url().await, no_broker())).await;
    let http = reqwest::Client::new();
    for n in 0..200 {
        let response = http
            .get(format!("{}/api/movies/1", gateway.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "request {n}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 200);
}

#[tokio::test]
async fn forwarded_requests_are_counted_by_route_template_with_a_request_id() {
    let (upstream, _accepted) = counting_upstream(false).await;
    let gateway = start_gateway(gateway_settings(&upstream, &dead_url().await, no_broker())).await;
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/api/movies"),
        ("GET", "/api/movies/"),
        ("GET", "/api/movies?title=x"),
        ("GET", "/api/movies/1"),
        ("DELETE", "/api/movies/2/"),
        ("GET", "/api/movies/3/reviews"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = http
            .request(method, format!("{}{path}", gateway.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers().contains_key("x-request-id"), "{path}");
    }
    let count = |route: &str, method: &str| {
        let series =
            format!(r#"http_requests_total{{method="{method}",route="{route}",status="200"}}"#);
        let url = gateway.url();
        async move { testkit::metric(&url, &series).await }
    };
    assert_eq!(count("/api/movies", "GET").await, 3.0);
    assert_eq!(count("/api/movies/{*rest}", "GET").await, 2.0);
    assert_eq!(count("/api/movies/{*rest}", "DELETE").await, 1.0);
    let metrics = testkit::metrics_text(&gateway.url()).await;
    assert!(
        !metrics.contains(r#"route="/api/movies/1""#),
        "a path became a label:\n{metrics}"
    );
}
