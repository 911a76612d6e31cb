//! Slow, careless and hostile clients against the real gateway: none of them can make it hold
//! more than its limits allow (see `common::server`), and none of them reaches what it should not.

use std::time::{Duration, Instant};

use common::server::ServerSettings;
use testkit::hostile;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A gateway with no inventory-app, billing-app or broker behind it, and these server limits.
async fn gateway_with(server: ServerSettings) -> InProcess {
    let nowhere = dead_url().await;
    let mut settings = gateway_settings(&nowhere, &nowhere, no_broker());
    settings.server = server;
    start_gateway(settings).await
}

fn limits() -> ServerSettings {
    ServerSettings {
        header_timeout: HEADER_TIMEOUT,
        write_timeout: WRITE_TIMEOUT,
        ..ServerSettings::default()
    }
}

/// An upstream that accepts connections and never answers.
async fn silent_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

#[tokio::test]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let gateway = gateway_with(limits()).await;
    hostile::assert_slow_clients_are_cut_off(gateway.addr(), HEADER_TIMEOUT).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_a_forwarded_list_is_given_up() {
    let db = testkit::TestDatabase::create().await;
    let inventory = start_inventory(db.settings()).await;
    // ~20 MB of JSON.
    db.insert_large_movies(5_000).await;
    let mut settings = gateway_settings(&inventory.url(), &dead_url().await, no_broker());
    settings.server = limits();
    let gateway = start_gateway(settings).await;
    hostile::assert_stalled_readers_are_cut_off(gateway.addr(), "/api/movies", WRITE_TIMEOUT).await;
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_at_once() {
    let gateway = gateway_with(limits()).await;
    hostile::assert_large_heads_are_refused(gateway.addr(), common::server::MAX_HEAD_BYTES).await;
}

/// 200 connections each sending 300 KB of one header that never ends: the real gateway binary
/// refuses each head at the limit, so its resident memory grows by a few MiB, not by the
/// 60 MB that buffering every head up to hyper's default (~400 KiB) cost.
#[tokio::test]
async fn endless_request_heads_cost_the_gateway_little_memory() {
    const CONNECTIONS: usize = 200;
    const GROWTH_BOUND_KIB: u64 = 16 * 1024;
    let nowhere = dead_url().await;
    let dead_port = nowhere.rsplit(':').next().unwrap().to_owned();
    let env: Vec<(String, String)> = [
        ("API_GATEWAY_PORT", "0"),
        ("INVENTORY_APP_URL", nowhere.as_str()),
        ("BILLING_APP_URL", nowhere.as_str()),
        ("RABBITMQ_HOST", "127.0.0.1"),
        ("RABBITMQ_PORT", dead_port.as_str()),
        ("RUST_LOG", "warn,common::cli=info"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    let gateway = testkit::ServiceProcess::start(env!("CARGO_BIN_EXE_api-gateway"), &env).await;
    let before = gateway.resident_kib().unwrap();
    let _held = hostile::endless_heads(gateway.addr(), CONNECTIONS, 300_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let growth = gateway.resident_kib().unwrap().saturating_sub(before);
    assert!(
        growth < GROWTH_BOUND_KIB,
        "{CONNECTIONS} endless heads grew the gateway by {growth} KiB"
    );
}

#[tokio::test]
async fn made_up_methods_create_no_metric_series() {
    let gateway = gateway_with(limits()).await;
    // On a route, where a method is matched against the route's, and outside any.
    hostile::assert_methods_create_no_series(gateway.addr(), "/api/billing").await;
    hostile::assert_methods_create_no_series(gateway.addr(), "/nowhere").await;
}

#[tokio::test]
async fn requests_without_host_and_connections_over_the_cap_are_refused() {
    let gateway = gateway_with(ServerSettings {
        max_connections: 20,
        ..limits()
    })
    .await;
    hostile::assert_host_is_required(gateway.addr()).await;
    hostile::assert_connections_are_capped(gateway.addr(), 20).await;
}

#[tokio::test]
async fn a_doubled_slash_reaches_no_route() {
    let gateway = gateway_with(limits()).await;
    for path in ["//metrics", "//health", "/api//billing"] {
        let (status, _) = json_of(
            reqwest::get(format!("{}{path}", gateway.url()))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404, "{path}");
    }
    let response = reqwest::get(format!("{}/metrics/", gateway.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a trailing slash is still accepted");
}

#[tokio::test]
async fn requests_over_the_in_flight_bound_are_shed_at_once_and_probes_still_answer() {
    let silent = silent_upstream().await;
    let mut settings = gateway_settings(&silent, &silent, no_broker());
    settings.upstream_timeout = Duration::from_secs(20);
    settings.server = ServerSettings {
        max_requests_in_flight: 4,
        ..limits()
    };
    let gateway = start_gateway(settings).await;
    let http = reqwest::Client::new();
    let stuck: Vec<_> = (0..4)
        .map(|_| tokio::spawn(http.get(format!("{}/api/movies", gateway.url())).send()))
        .collect();
    testkit::eventually(Duration::from_secs(5), "4 requests in flight", || async {
        testkit::metric(&gateway.url(), "http_requests_in_flight").await >= 4.0
    })
    .await;

    let started = Instant::now();
    let (status, error) = json_of(
        http.get(format!("{}/api/movies/1", gateway.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{error}");
    assert!(started.elapsed() < Duration::from_secs(1), "shed at once");
    let health = http
        .get(format!("{}/health", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "liveness is never shed");
    for request in stuck {
        request.abort();
    }
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_after_the_request_timeout() {
    let gateway = gateway_with(ServerSettings {
        request_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut stream = TcpStream::connect(gateway.addr()).await.unwrap();
    stream
        .write_all(
            b"POST /api/billing HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"user_id\": ",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let response = hostile::read_response(&mut stream).await;
    assert_eq!(response.status, 408, "{response:?}");
    assert!(response.body.contains("\"error\""), "{response:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}
