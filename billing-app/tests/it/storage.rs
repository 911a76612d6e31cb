//! Database faults that are not the orders' fault, on the real billing-app process and the real
//! PostgreSQL: a read-only database, a cancelled insert, a revoked privilege. Each time the
//! orders stay queued while the fault lasts (`/ready` false, the SQLSTATE logged and counted)
//! and are stored exactly once after it; none reaches the dead-letter queue.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use testkit::{TestDatabase, TestQueue, eventually};
use uuid::Uuid;

use super::*;

const POSTGRES: u16 = 5432;
const RABBITMQ: u16 = 5672;

/// Ends every session in `db` but the caller's, so that the service reconnects and its new
/// sessions pick up the database's settings.
async fn terminate_sessions(conn: &mut PgConnection, db: &TestDatabase) {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db.name())
    .execute(conn)
    .await
    .expect("terminate the service's sessions");
}

/// The stored order ids.
async fn stored_ids(db: &TestDatabase) -> BTreeSet<Uuid> {
    let pool = db.pool().await;
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_all(&pool)
        .await
        .expect("read the stored ids");
    pool.close().await;
    ids.into_iter().collect()
}

/// Every order is stored, once (the id is the primary key), and nothing else is.
async fn assert_stored_once(db: &TestDatabase, orders: &[&[Order]]) {
    let expected: BTreeSet<Uuid> = orders
        .iter()
        .flat_map(|o| o.iter().map(|o| o.order_id))
        .collect();
    wait_for_stored(db, expected.len() as i64).await;
    assert_eq!(stored_ids(db).await, expected);
}

/// Waits until the orders in hand have been retried for `reason` at least twice, or until
/// any message reached the dead-letter queue (the defect this file is about), then asserts
/// that none did.
async fn assert_retried_not_dead_lettered(
    service: &ServiceProcess,
    queue: &TestQueue,
    reason: &str,
) {
    let retries = format!(r#"billing_database_retries_total{{reason="{reason}"}}"#);
    eventually(
        Duration::from_secs(15),
        &format!("inserts retried for {reason:?}, or dead-lettered"),
        || async {
            metric(&service.url(), &retries).await >= 2.0 || queue.dead_letter_depth().await > 0
        },
    )
    .await;
    assert_eq!(
        queue.dead_letter_depth().await,
        0,
        "valid orders were dead-lettered; billing-app said:\n{}",
        service.output()
    );
}

#[tokio::test]
async fn a_read_only_database_keeps_orders_queued_until_it_is_writable_again() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    let service = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    let before: Vec<Order> = (1..=3).map(order).collect();
    queue.publish_orders(&before).await;
    wait_for_stored(&db, 3).await;

    let mut admin = server(&db).await;
    let name = db.name();
    sql(
        &mut admin,
        &format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
    )
    .await;
    terminate_sessions(&mut admin, &db).await;
    let during: Vec<Order> = (4..=8).map(order).collect();
    queue.publish_orders(&during).await;

    assert_retried_not_dead_lettered(&service, &queue, "read_only").await;
    wait_for_ready(&service.url(), 503).await;
    assert!(
        service.output().contains("SQLSTATE 25006"),
        "{}",
        service.output()
    );
    assert_eq!(stored(&db).await, 3);

    sql(
        &mut admin,
        &format!("ALTER DATABASE {name} RESET default_transaction_read_only"),
    )
    .await;
    terminate_sessions(&mut admin, &db).await;
    assert_stored_once(&db, &[&before, &during]).await;
    wait_for_ready(&service.url(), 200).await;
    assert_eq!(queue.dead_letter_depth().await, 0);
    assert_eq!(queue.depth().await, 0);
}

#[tokio::test]
async fn a_cancelled_insert_is_retried_not_dead_lettered() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    let service = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    let before = [order(1)];
    queue.publish_orders(&before).await;
    wait_for_stored(&db, 1).await;

    // Inserts wait for this lock (SHARE conflicts with INSERT's ROW EXCLUSIVE; reads pass).
    let mut locker = inside(&db).await;
    sql(&mut locker, "BEGIN").await;
    sql(&mut locker, "LOCK TABLE orders IN SHARE MODE").await;
    let during: Vec<Order> = (2..=4).map(order).collect();
    queue.publish_orders(&during).await;

    // Cancel the waiting insert again and again: the batch, then whatever comes after it.
    let mut admin = server(&db).await;
    let mut cancelled = 0;
    while cancelled < 4 {
        let Some(pid) = waiting_insert(&mut admin, &db, Duration::from_secs(10)).await else {
            break;
        };
        sqlx::query("SELECT pg_cancel_backend($1)")
            .bind(pid)
            .execute(&mut admin)
            .await
            .expect("cancel the insert");
        cancelled += 1;
    }
    assert!(cancelled >= 1, "no insert ever waited for the lock");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        queue.dead_letter_depth().await,
        0,
        "valid orders were dead-lettered after {cancelled} cancellations; billing-app said:\n{}",
        service.output()
    );
    wait_for_ready(&service.url(), 503).await;

    sql(&mut locker, "ROLLBACK").await;
    assert_stored_once(&db, &[&before, &during]).await;
    wait_for_ready(&service.url(), 200).await;
    assert!(
        service.output().contains("SQLSTATE 57014"),
        "{}",
        service.output()
    );
    assert!(
        metric(
            &service.url(),
            r#"billing_database_retries_total{reason="cancelled"}"#
        )
        .await
            >= 1.0
    );
    assert_eq!(queue.dead_letter_depth().await, 0);
}

/// A test database owned by a LOGIN role of its own, not a superuser, as in production.
/// The role is dropped after the database.
struct OwnedDatabase {
    db: Option<TestDatabase>,
    role: String,
    server: PgConnectOptions,
}

impl OwnedDatabase {
    async fn create() -> Self {
        let db = TestDatabase::create().await;
        let role = format!("test_role_{}", Uuid::new_v4().simple());
        let server = db.settings().connect_options().database("postgres");
        let mut admin = connect(server.clone()).await;
        sql(&mut admin, &format!("CREATE ROLE {role} LOGIN")).await;
        sql(
            &mut admin,
            &format!("ALTER DATABASE {} OWNER TO {role}", db.name()),
        )
        .await;
        Self {
            db: Some(db),
            role,
            server,
        }
    }

    fn db(&self) -> &TestDatabase {
        self.db
            .as_ref()
            .expect("the database lives as long as this value")
    }
}

impl Drop for OwnedDatabase {
    fn drop(&mut self) {
        drop(self.db.take());
        let (role, server) = (self.role.clone(), self.server.clone());
        // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect_with(&server).await.ok()?;
                conn.execute(AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!(
                "warning: could not drop the test role {}; it is left behind",
                self.role
            );
        }
    }
}

#[tokio::test]
async fn a_revoked_insert_privilege_keeps_orders_queued_until_it_is_granted_again() {
    let owned = OwnedDatabase::create().await;
    let (db, role, queue) = (owned.db(), owned.role.as_str(), TestQueue::new());
    let mut service_env = env(db, &queue, RABBITMQ, POSTGRES);
    service_env.retain(|(name, _)| name != "BILLING_DB_USER");
    service_env.push(("BILLING_DB_USER".into(), role.to_owned()));
    let service = start_ready(&service_env).await;
    let before: Vec<Order> = (1..=2).map(order).collect();
    queue.publish_orders(&before).await;
    wait_for_stored(db, 2).await;

    let mut admin = inside(db).await;
    sql(&mut admin, &format!("REVOKE INSERT ON orders FROM {role}")).await;
    let during: Vec<Order> = (3..=5).map(order).collect();
    queue.publish_orders(&during).await;

    assert_retried_not_dead_lettered(&service, &queue, "privilege").await;
    wait_for_ready(&service.url(), 503).await;
    assert!(
        service.output().contains("SQLSTATE 42501"),
        "{}",
        service.output()
    );

    sql(&mut admin, &format!("GRANT INSERT ON orders TO {role}")).await;
    assert_stored_once(db, &[&before, &during]).await;
    wait_for_ready(&service.url(), 200).await;
    assert_eq!(queue.dead_letter_depth().await, 0);
}
