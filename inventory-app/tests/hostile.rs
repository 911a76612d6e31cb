//! Slow, careless and hostile clients against the real inventory-app server: none of them can
//! make it hold more than its limits allow (see `common::server`).

use std::time::Duration;

use common::server::ServerSettings;
use inventory_app::{Settings, startup};
use testkit::{InProcess, TestDatabase, hostile};

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

async fn start(db: &TestDatabase, server: ServerSettings) -> InProcess {
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: db.settings(),
        server,
    };
    let service = InProcess::start(startup::serve, settings).await;
    testkit::wait_for_ready(&service.url(), 200).await;
    service
}

fn limits() -> ServerSettings {
    ServerSettings {
        header_timeout: HEADER_TIMEOUT,
        write_timeout: WRITE_TIMEOUT,
        ..ServerSettings::default()
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let db = TestDatabase::create().await;
    let service = start(&db, limits()).await;
    hostile::assert_slow_clients_are_cut_off(service.addr(), HEADER_TIMEOUT).await;
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_at_once() {
    let db = TestDatabase::create().await;
    let service = start(&db, limits()).await;
    hostile::assert_large_heads_are_refused(service.addr(), common::server::MAX_HEAD_BYTES).await;
}

#[tokio::test]
async fn made_up_methods_create_no_metric_series() {
    let db = TestDatabase::create().await;
    let service = start(&db, limits()).await;
    hostile::assert_methods_create_no_series(service.addr(), "/api/movies").await;
}

#[tokio::test]
async fn a_50_mb_body_is_refused_before_it_is_read() {
    let db = TestDatabase::create().await;
    let service = start(&db, limits()).await;
    hostile::assert_huge_body_refused_unread(service.addr(), "/api/movies").await;
}

#[tokio::test]
async fn requests_without_host_and_connections_over_the_cap_are_refused() {
    let db = TestDatabase::create().await;
    let server = ServerSettings {
        max_connections: 20,
        ..limits()
    };
    let service = start(&db, server).await;
    hostile::assert_host_is_required(service.addr()).await;
    hostile::assert_connections_are_capped(service.addr(), 20).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_given_up() {
    let db = TestDatabase::create().await;
    let service = start(&db, limits()).await;
    // ~20 MB of JSON.
    db.insert_large_movies(5_000).await;
    hostile::assert_stalled_readers_are_cut_off(service.addr(), "/api/movies", WRITE_TIMEOUT).await;
}
