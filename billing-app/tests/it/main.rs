//! billing-app's integration tests, against the real PostgreSQL and RabbitMQ with a fresh
//! database and queue per test. `consumer` runs the real binary (to kill it), `db_crash` the
//! same on a private PostgreSQL (to crash that); `api` runs the real router in-process.

mod api;
mod consumer;
mod db_crash;

use std::time::Duration;

use common::order::Order;
use rust_decimal::Decimal;
use testkit::{ServiceProcess, TestDatabase, TestQueue, eventually};
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_billing-app");

/// A valid order for `user_id`.
fn order(user_id: i64) -> Order {
    Order {
        order_id: Uuid::new_v4(),
        user_id,
        number_of_items: 3,
        total_amount: Decimal::new(1999, 2),
    }
}

/// The environment of a billing-app process using `db` and `queue`, reaching the broker on
/// `broker_port` and PostgreSQL on `db_port` (proxies, or the real ports).
fn env(
    db: &TestDatabase,
    queue: &TestQueue,
    broker_port: u16,
    db_port: u16,
) -> Vec<(String, String)> {
    let mut env = db.env("BILLING");
    env.retain(|(name, _)| name != "BILLING_DB_PORT");
    env.push(("BILLING_DB_PORT".into(), db_port.to_string()));
    env.extend(queue.env_via(broker_port));
    env.push(("BILLING_APP_PORT".into(), "0".into()));
    env.push(("SHUTDOWN_TIMEOUT_SECONDS".into(), "5".into()));
    env
}

/// Starts billing-app and waits until `/ready` answers 200.
async fn start_ready(env: &[(String, String)]) -> ServiceProcess {
    let service = ServiceProcess::start(BINARY, env).await;
    wait_for_ready(&service, 200).await;
    service
}

async fn ready_status(service: &ServiceProcess) -> u16 {
    match reqwest::get(format!("{}/ready", service.url())).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn wait_for_ready(service: &ServiceProcess, status: u16) {
    eventually(
        Duration::from_secs(30),
        &format!("/ready answers {status}"),
        || async { ready_status(service).await == status },
    )
    .await;
}

/// Rows in `orders`.
async fn stored(db: &TestDatabase) -> i64 {
    let pool = db.pool().await;
    let count = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    pool.close().await;
    count
}

async fn wait_for_stored(db: &TestDatabase, expected: i64) {
    eventually(
        Duration::from_secs(30),
        &format!("{expected} stored orders"),
        || async { stored(db).await == expected },
    )
    .await;
}

/// The value of a metric sample (a line of `/metrics` starting with `sample`), or 0.
async fn metric(service: &ServiceProcess, sample: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", service.url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}
