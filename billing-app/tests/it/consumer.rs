//! The consumer, as the real billing-app process: exactly-once storage under redelivery,
//! crashes, poison messages, a database outage, a broker outage, and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use testkit::{FaultProxy, ServiceProcess, TestDatabase, TestQueue, eventually};

use super::*;

const POSTGRES: u16 = 5432;
const RABBITMQ: u16 = 5672;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_good_ones_around_them_stored() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    queue.declare().await;
    let good: Vec<Order> = (1..=3).map(order).collect();
    let invalid = json!({
        "order_id": uuid::Uuid::new_v4(), "user_id": 0, "number_of_items": 1, "total_amount": "1"
    });
    let too_precise = json!({
        "order_id": uuid::Uuid::new_v4(), "user_id": 5, "number_of_items": 1, "total_amount": "1.001"
    });
    queue.publish_order(&good[0]).await;
    queue.publish_raw(b"this is not JSON", "poison-1").await;
    queue.publish_order(&good[1]).await;
    queue
        .publish_raw(invalid.to_string().as_bytes(), "poison-2")
        .await;
    queue.publish_raw(b"{}", "poison-3").await;
    queue
        .publish_raw(too_precise.to_string().as_bytes(), "poison-4")
        .await;
    queue.publish_order(&good[2]).await;

    let service = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    wait_for_stored(&db, 3).await;
    eventually(Duration::from_secs(10), "4 dead letters", || async {
        queue.dead_letter_depth().await == 4
    })
    .await;
    assert_eq!(queue.depth().await, 0, "nothing is left to loop on");

    let dead: Vec<String> = queue
        .take_dead_letters()
        .await
        .into_iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(dead, ["poison-1", "poison-2", "poison-3", "poison-4"]);
    assert_eq!(
        metric(
            &service.url(),
            r#"billing_messages_total{outcome="dead_lettered"}"#
        )
        .await,
        4.0
    );
    assert_eq!(
        metric(&service.url(), r#"billing_messages_total{outcome="acked"}"#).await,
        3.0
    );
    assert!(
        service
            .output()
            .contains("dead-lettering a message that can never be stored")
    );
}

#[tokio::test]
async fn a_redelivered_order_is_stored_once() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    queue.declare().await;
    let order = order(7);
    queue.publish_order(&order).await;
    queue.publish_order(&order).await;

    let service = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    eventually(Duration::from_secs(10), "both deliveries acked", || async {
        metric(&service.url(), r#"billing_messages_total{outcome="acked"}"#).await == 2.0
    })
    .await;
    assert_eq!(stored(&db).await, 1);
    assert_eq!(
        metric(&service.url(), "billing_duplicates_total").await,
        1.0
    );
}

#[tokio::test]
async fn the_whole_backlog_is_drained_on_start() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    queue.declare().await;
    let orders: Vec<Order> = (1..=300).map(order).collect();
    queue.publish_orders(&orders).await;
    assert_eq!(queue.depth().await, 300);

    let _service = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    wait_for_stored(&db, 300).await;
    assert_eq!(queue.depth().await, 0);

    let pool = db.pool().await;
    let (user_id, items, amount): (i64, i32, String) = sqlx::query_as(
        "SELECT user_id, number_of_items, total_amount::text FROM orders WHERE id = $1",
    )
    .bind(orders[41].order_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((user_id, items, amount.as_str()), (42, 3, "19.99"));
}

#[tokio::test]
async fn killed_between_commit_and_ack_the_redelivery_is_absorbed() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    let broker = FaultProxy::start(local(RABBITMQ)).await;
    let first = start_ready(&env(&db, &queue, broker.port(), POSTGRES)).await;

    // From now on billing-app receives deliveries but its acks never reach the broker.
    broker.freeze();
    queue.publish_order(&order(11)).await;
    wait_for_stored(&db, 1).await;
    first.kill().await;
    // The broker sees the connection drop with the delivery unacknowledged: it requeues it.
    broker.cut();
    eventually(
        Duration::from_secs(10),
        "the order back in the queue",
        || async { queue.depth().await == 1 },
    )
    .await;

    let second = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    eventually(
        Duration::from_secs(10),
        "the redelivery absorbed",
        || async { metric(&second.url(), "billing_duplicates_total").await == 1.0 },
    )
    .await;
    assert_eq!(stored(&db).await, 1, "stored exactly once");
    assert_eq!(queue.depth().await, 0);
}

#[tokio::test]
async fn sigterm_finishes_the_batch_in_hand_and_loses_nothing() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    queue.declare().await;
    queue
        .publish_orders(&(1..=1000).map(order).collect::<Vec<_>>())
        .await;
    let service = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    let status = service.terminate().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");

    // Everything is either stored or back in the queue, never both, never neither.
    let (rows, queued) = (stored(&db).await, i64::from(queue.depth().await));
    assert_eq!(rows + queued, 1000, "{rows} stored + {queued} queued");

    let _again = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    wait_for_stored(&db, 1000).await;
}

#[tokio::test]
async fn a_database_outage_keeps_orders_queued_then_stores_them_once() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    let postgres = FaultProxy::start(local(POSTGRES)).await;
    let service = start_ready(&env(&db, &queue, RABBITMQ, postgres.port())).await;

    postgres.cut();
    queue
        .publish_orders(&(1..=5).map(order).collect::<Vec<_>>())
        .await;
    wait_for_ready(&service.url(), 503).await;
    eventually(Duration::from_secs(10), "a retried insert", || async {
        metric(
            &service.url(),
            r#"billing_database_retries_total{reason="unavailable"}"#,
        )
        .await
            >= 2.0
    })
    .await;
    assert_eq!(
        metric(&service.url(), r#"billing_messages_total{outcome="acked"}"#).await,
        0.0,
        "nothing is acknowledged while the database is down"
    );

    postgres.restore();
    wait_for_stored(&db, 5).await;
    wait_for_ready(&service.url(), 200).await;
    assert_eq!(
        metric(&service.url(), r#"billing_messages_total{outcome="acked"}"#).await,
        5.0
    );
    assert!(service.output().contains("they stay unacknowledged"));
}

#[tokio::test]
async fn a_broker_outage_turns_ready_off_and_consumption_resumes_after_it() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    let broker = FaultProxy::start(local(RABBITMQ)).await;
    let service: ServiceProcess = start_ready(&env(&db, &queue, broker.port(), POSTGRES)).await;

    broker.cut();
    wait_for_ready(&service.url(), 503).await;
    queue.publish_order(&order(1)).await;

    broker.restore();
    wait_for_ready(&service.url(), 200).await;
    wait_for_stored(&db, 1).await;
    let log = service.output();
    assert!(
        log.contains("connection to RabbitMQ node 127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("no RabbitMQ node reachable; trying again"),
        "{log}"
    );
}
