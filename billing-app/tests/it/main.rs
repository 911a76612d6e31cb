//! billing-app's integration tests, against the real PostgreSQL and RabbitMQ with a fresh
//! database and queue per test. `consumer`, `storage` and `topology` run the real binary (to
//! kill it and read its output), `db_crash` the same on a private PostgreSQL (to crash that);
//! `dead_letters` runs its `dead-letters` command;
//! `hostile` serves the real application on a socket in this process, and `api` drives it
//! in-process without one.

mod api;
mod consumer;
mod db_crash;
mod dead_letters;
mod hostile;
mod storage;
mod topology;

use std::time::Duration;

use common::order::Order;
use rust_decimal::Decimal;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use testkit::{
    ServiceProcess, TestDatabase, TestQueue, eventually, metric, ready_status, wait_for_ready,
};
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
    wait_for_ready(&service.url(), 200).await;
    service
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

/// A superuser session on the test database's server, outside the test database (which
/// may be read-only).
async fn server(db: &TestDatabase) -> PgConnection {
    connect(db.settings().connect_options().database("postgres")).await
}

/// A superuser session in the test database.
async fn inside(db: &TestDatabase) -> PgConnection {
    connect(db.settings().connect_options()).await
}

async fn connect(options: PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(&options)
        .await
        .expect("connect to PostgreSQL")
}

async fn sql(conn: &mut PgConnection, statement: &str) {
    conn.execute(AssertSqlSafe(statement.to_owned()))
        .await
        .unwrap_or_else(|err| panic!("{statement}: {err}"));
}

/// The backend of an insert into `orders` waiting for a lock in `db`, within `limit`.
async fn waiting_insert(
    conn: &mut PgConnection,
    db: &TestDatabase,
    limit: Duration,
) -> Option<i32> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' \
             AND query LIKE 'INSERT INTO orders%' LIMIT 1",
        )
        .bind(db.name())
        .fetch_optional(&mut *conn)
        .await
        .expect("look for a waiting insert");
        if pid.is_some() {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Ends a backend and waits until it is gone.
async fn terminate_backend(conn: &mut PgConnection, pid: i32) {
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut *conn)
        .await
        .expect("terminate a backend");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&mut *conn)
            .await
            .expect("look for the backend");
        if left == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backend {pid} outlived its termination"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
