//! billing-app's own PostgreSQL failing, on a private cluster: crashed (`pg_ctl stop -m
//! immediate`) while billing-app drains a backlog, or down when billing-app starts. billing-app
//! must recover by itself, storing every order exactly once and dead-lettering nothing.

use std::time::{Duration, Instant};

use sqlx::Connection;
use testkit::{PrivatePostgres, ServiceProcess, TestQueue, eventually};

use super::*;

/// billing-app's environment: the private cluster, `queue` on the shared broker, and
/// `prefetch` deliveries in hand at most (batches of half that).
fn env_on(postgres: &PrivatePostgres, queue: &TestQueue, prefetch: u16) -> Vec<(String, String)> {
    let mut env = postgres.env("BILLING");
    env.extend(queue.env());
    env.push(("BILLING_APP_PORT".into(), "0".into()));
    env.push(("BILLING_PREFETCH".into(), prefetch.to_string()));
    env.push(("SHUTDOWN_TIMEOUT_SECONDS".into(), "5".into()));
    env
}

/// Rows in `orders` and distinct order ids among them (0, 0 while the table is missing).
async fn rows(postgres: &PrivatePostgres) -> (i64, i64) {
    let pool = postgres.pool().await;
    let counts = sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap_or((0, 0));
    pool.close().await;
    counts
}

#[tokio::test]
async fn postgres_crashing_mid_drain_loses_nothing_and_stores_nothing_twice() {
    const BACKLOG: i64 = 5000;
    let mut postgres = PrivatePostgres::start().await;
    let queue = TestQueue::new();
    queue.declare().await;
    queue
        .publish_orders(&(1..=BACKLOG).map(order).collect::<Vec<_>>())
        .await;

    // Small batches (10 per transaction) so that the drain takes long enough to be caught in
    // the middle; the retry counter below proves it was.
    let service = ServiceProcess::start(BINARY, &env_on(&postgres, &queue, 20)).await;
    let mut watcher = sqlx::PgConnection::connect_with(
        &postgres
            .settings()
            .connect_options()
            .database(postgres.database()),
    )
    .await
    .unwrap();
    // Polled on one open connection, so that the crash comes as soon as rows appear.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM orders")
        .fetch_one(&mut watcher)
        .await
        .map_or(true, |count| count == 0)
    {
        assert!(
            Instant::now() < deadline,
            "the drain did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(watcher);

    postgres.stop_immediate().await;
    wait_for_ready(&service.url(), 503).await;
    eventually(
        Duration::from_secs(10),
        "billing-app retrying a batch it holds",
        || async { metric(&service.url(), "billing_database_retries_total").await >= 2.0 },
    )
    .await;

    postgres.restart().await;
    eventually(
        Duration::from_secs(60),
        &format!("{BACKLOG} orders stored"),
        || async { rows(&postgres).await.0 >= BACKLOG },
    )
    .await;
    wait_for_ready(&service.url(), 200).await;
    assert_eq!(
        rows(&postgres).await,
        (BACKLOG, BACKLOG),
        "every order stored, none twice"
    );
    assert_eq!(queue.depth().await, 0, "the backlog is drained");
    assert_eq!(queue.dead_letter_depth().await, 0, "nothing dead-lettered");
    assert_eq!(
        metric(
            &service.url(),
            r#"billing_messages_total{outcome="dead_lettered"}"#
        )
        .await,
        0.0
    );
    assert_eq!(
        metric(&service.url(), "billing_orders_stored_total").await
            + metric(&service.url(), "billing_duplicates_total").await,
        metric(&service.url(), r#"billing_messages_total{outcome="acked"}"#).await,
        "every acknowledged delivery was stored or found stored"
    );
}

#[tokio::test]
async fn billing_app_is_ready_within_3_s_of_its_database_answering_after_a_long_outage() {
    // Measured from the cluster accepting connections (the test's own, polled every 50 ms) to
    // `/ready` answering 200 (polled every 50 ms). A retry is due within ~1.25 s, then the
    // migrations run and the consumer connects to the broker: 3 s leaves room for a loaded
    // machine, and is far below the ~10 s a backoff grown to its old cap would take.
    const RECOVERY: Duration = Duration::from_secs(3);
    // Long enough for a reconnect backoff to grow to a 10 s cap if it keeps growing. (Each
    // attempt also waits up to the pool's 2 s acquire timeout, during which a returning
    // database is found at once; a shorter outage hides part of the gap.)
    const OUTAGE: Duration = Duration::from_secs(30);

    let mut postgres = PrivatePostgres::start().await;
    postgres.stop_immediate().await;
    let queue = TestQueue::new();
    let service = ServiceProcess::start(BINARY, &env_on(&postgres, &queue, 100)).await;
    tokio::time::sleep(OUTAGE).await;
    assert_eq!(
        ready_status(&service.url()).await,
        503,
        "not ready without its database"
    );

    postgres.restart().await;
    let back = Instant::now();
    wait_for_ready(&service.url(), 200).await;
    let recovered = back.elapsed();
    eprintln!("ready {recovered:.2?} after the database answered");
    assert!(
        recovered <= RECOVERY,
        "billing-app must be ready within {RECOVERY:?} of its database answering again after \
         a {OUTAGE:?} outage; it took {recovered:.2?}"
    );
}
