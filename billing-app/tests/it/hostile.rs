//! Slow, careless and hostile clients against the real billing-app server: none of them can
//! make it hold more than its limits allow (see `common::server`).

use std::time::Duration;

use billing_app::{Settings, startup};
use common::server::ServerSettings;
use testkit::{InProcess, TestDatabase, TestQueue, hostile};

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

struct Running {
    service: InProcess,
    _db: TestDatabase,
    _queue: TestQueue,
}

async fn start(server: ServerSettings) -> Running {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: db.settings(),
        broker: queue.settings(),
        prefetch: 10,
        server,
    };
    let service = InProcess::start(startup::serve, settings).await;
    testkit::wait_for_ready(&service.url(), 200).await;
    Running {
        service,
        _db: db,
        _queue: queue,
    }
}

fn limits() -> ServerSettings {
    ServerSettings {
        header_timeout: HEADER_TIMEOUT,
        ..ServerSettings::default()
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let billing = start(limits()).await;
    hostile::assert_slow_clients_are_cut_off(billing.service.addr(), HEADER_TIMEOUT).await;
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_at_once() {
    let billing = start(limits()).await;
    hostile::assert_large_heads_are_refused(billing.service.addr(), common::server::MAX_HEAD_BYTES)
        .await;
}

#[tokio::test]
async fn made_up_methods_create_no_metric_series() {
    let billing = start(limits()).await;
    hostile::assert_methods_create_no_series(billing.service.addr(), "/api/orders").await;
}

#[tokio::test]
async fn a_50_mb_body_is_refused_before_it_is_read() {
    let billing = start(limits()).await;
    hostile::assert_huge_body_refused_unread(billing.service.addr(), "/api/orders").await;
}

#[tokio::test]
async fn requests_without_host_and_connections_over_the_cap_are_refused() {
    let billing = start(ServerSettings {
        max_connections: 20,
        ..limits()
    })
    .await;
    hostile::assert_host_is_required(billing.service.addr()).await;
    hostile::assert_connections_are_capped(billing.service.addr(), 20).await;
}
