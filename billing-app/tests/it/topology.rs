//! The queues billing-app declares, against the real broker: dead-lettering that loses nothing,
//! a delivery limit that a crash-looping consumer does not reach, and a clear line when a
//! queue declared by an older version is in the way.

use std::time::Duration;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use testkit::{PrivateBroker, ServiceProcess, TestDatabase, TestQueue, eventually};

use super::*;

const POSTGRES: u16 = 5432;
const RABBITMQ: u16 = 5672;

async fn channel(queue: &TestQueue) -> (Connection, Channel) {
    let connection = common::amqp::connect(&queue.settings(), "test")
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("open a channel");
    (connection, channel)
}

/// The broker's dead-letter worker retries a dead letter it could not route every
/// `dead_letter_worker_publisher_confirm_timeout` (180 s by default, on 3.10 as on 4.x). On a
/// private node the test shortens that to 2 s, set before the queue (and its worker) exists,
/// rather than wait three minutes. With the default at-most-once strategy the message is
/// dropped at once and never arrives.
#[tokio::test]
async fn a_message_dead_lettered_while_the_dead_letter_queue_is_missing_arrives_once_it_is_back() {
    let broker = PrivateBroker::start().await;
    broker
        .rabbitmqctl(&[
            "eval",
            "application:set_env(rabbit, dead_letter_worker_publisher_confirm_timeout, 2000).",
        ])
        .await
        .expect("shorten the dead-letter worker's retry interval");
    let (db, queue) = (TestDatabase::create().await, broker.queue());
    let service = start_ready(&env(&db, &queue, broker.port(), POSTGRES)).await;

    // Someone deletes the dead-letter queue (to purge it, say) while billing-app runs.
    let (connection, channel) = channel(&queue).await;
    channel
        .queue_delete(
            queue.topology().dead_letter_queue().as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the dead-letter queue");
    let _ = connection.close(200, "done".into()).await;
    queue.publish_raw(b"not an order", "poison").await;
    eventually(
        Duration::from_secs(10),
        "the poison dead-lettered",
        || async {
            metric(
                &service.url(),
                r#"billing_messages_total{outcome="dead_lettered"}"#,
            )
            .await
                == 1.0
        },
    )
    .await;

    // Any service's next (re)connection declares the topology again.
    queue.declare().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while queue.dead_letter_depth().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead-lettered message never reached the dead-letter queue: it was lost"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let dead: Vec<String> = queue
        .take_dead_letters()
        .await
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(dead, ["poison"], "exactly the dead-lettered message, once");
    assert_eq!(queue.depth().await, 0);
}

/// Every crash of a consumer holding deliveries counts as a failed delivery for each of them
/// (RabbitMQ 3.10 and 4.x alike); RabbitMQ 4 dead-letters a message after 20 by default. A
/// consumer that crash-loops (here 25 times, each time holding the orders, whose insert waits
/// for a lock the test holds) must not send valid orders to the dead-letter queue.
///
/// RabbitMQ 3.10 has no default limit, so on it this test fails only if the limit declared is
/// lower than 25.
#[tokio::test]
async fn orders_held_through_a_crash_loop_are_stored_not_dead_lettered() {
    const CRASHES: usize = 25;
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    let env = env(&db, &queue, RABBITMQ, POSTGRES);
    let mut service = start_ready(&env).await;

    let (mut locker, mut admin) = (inside(&db).await, server(&db).await);
    sql(&mut locker, "BEGIN").await;
    sql(&mut locker, "LOCK TABLE orders IN SHARE MODE").await;
    let orders: Vec<Order> = (1..=3).map(order).collect();
    queue.publish_orders(&orders).await;

    let mut crashes = 0;
    while crashes < CRASHES {
        // The consumer holds the orders: its insert waits for the lock.
        let Some(pid) = waiting_insert(&mut admin, &db, Duration::from_secs(20)).await else {
            break;
        };
        service.kill().await;
        crashes += 1;
        // Its backend would insert for a dead consumer once the lock is released.
        terminate_backend(&mut admin, pid).await;
        service = ServiceProcess::start(BINARY, &env).await;
    }
    assert_eq!(
        queue.dead_letter_depth().await,
        0,
        "valid orders were dead-lettered after {crashes} crashes"
    );
    assert_eq!(
        crashes, CRASHES,
        "the consumer stopped receiving the orders"
    );

    sql(&mut locker, "ROLLBACK").await;
    wait_for_stored(&db, 3).await;
    assert_eq!(queue.dead_letter_depth().await, 0);
    assert_eq!(queue.depth().await, 0);
}

/// What an older version of the services declared: no dead-letter strategy, no overflow, no
/// delivery limit.
fn arguments_before_at_least_once(queue: &TestQueue) -> FieldTable {
    let mut args = FieldTable::default();
    for (key, value) in [
        ("x-queue-type", "quorum".to_owned()),
        (
            "x-dead-letter-exchange",
            queue.topology().dead_letter_exchange(),
        ),
        ("x-dead-letter-routing-key", queue.name().to_owned()),
    ] {
        args.insert(key.into(), AMQPValue::LongString(value.as_str().into()));
    }
    args
}

#[tokio::test]
async fn a_queue_declared_by_an_older_version_is_reported_clearly() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    let (connection, channel) = channel(&queue).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(
            queue.name().into(),
            durable,
            arguments_before_at_least_once(&queue),
        )
        .await
        .expect("declare the queue as an older version did");
    let _ = connection.close(200, "done".into()).await;

    let service = ServiceProcess::start(BINARY, &env(&db, &queue, RABBITMQ, POSTGRES)).await;
    eventually(
        Duration::from_secs(20),
        "a line naming the problem",
        || async { service.output().contains("exists with other arguments") },
    )
    .await;
    let output = service.output();
    let line = output
        .lines()
        .find(|line| line.contains("exists with other arguments"))
        .unwrap();
    assert!(line.contains(queue.name()), "{line}");
    assert!(
        line.contains("inequivalent arg"),
        "the broker's reason: {line}"
    );
    assert!(line.contains("Upgrading"), "points to the docs: {line}");
    wait_for_ready(&service.url(), 503).await;
}
