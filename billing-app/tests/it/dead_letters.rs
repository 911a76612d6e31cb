//! `billing-app dead-letters list | replay`, as the real binary against the real broker: the
//! list shows why each message was refused and leaves the queue as it was; a replay moves
//! what was chosen back to the order queue, where a running billing-app stores a valid order
//! once and dead-letters an invalid one again.

use std::process::ExitStatus;
use std::time::Duration;

use lapin::types::AMQPValue;
use serde_json::json;
use testkit::{Message, TestDatabase, TestQueue, eventually, run_to_exit};

use super::*;

const POSTGRES: u16 = 5432;
const RABBITMQ: u16 = 5672;

async fn dead_letters(queue: &TestQueue, args: &[&str]) -> (ExitStatus, String) {
    let mut command = vec!["dead-letters"];
    command.extend_from_slice(args);
    run_to_exit(BINARY, &command, &queue.env()).await
}

/// The cells of each row of the tables in `output`, header and rule lines left out.
fn rows(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .filter(|line| line.starts_with('|') && !line.starts_with("|-"))
        .map(|line| {
            let cells: Vec<String> = line.split('|').map(|cell| cell.trim().to_owned()).collect();
            cells[1..cells.len() - 1].to_vec()
        })
        .filter(|cells| cells[0] != "#" && cells[0] != "MESSAGE ID")
        .collect()
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect()
}

fn invalid_order(field: &str, value: serde_json::Value) -> Vec<u8> {
    let mut order = json!({
        "order_id": uuid::Uuid::new_v4(), "user_id": 5, "number_of_items": 1, "total_amount": "1"
    });
    order[field] = value;
    order.to_string().into_bytes()
}

#[tokio::test]
async fn list_shows_why_each_message_was_refused_and_loses_or_reorders_nothing() {
    let queue = TestQueue::new();
    queue.declare().await;
    let valid = order(20);
    queue.publish_raw(b"this is not JSON", "poison-1").await;
    queue
        .publish_raw(&invalid_order("user_id", json!(0)), "poison-2")
        .await;
    queue.publish_order(&valid).await;
    assert_eq!(queue.dead_letter_all().await, 3);

    // Twice: the first listing must have put everything back, in order.
    for _ in 0..2 {
        let (status, output) = dead_letters(&queue, &["list"]).await;
        assert!(status.success(), "{output}");
        let rows = rows(&output);
        assert_eq!(rows.len(), 3, "{output}");
        let [not_json, invalid, database] = [&rows[0], &rows[1], &rows[2]];
        assert_eq!(not_json[1], "poison-1");
        assert!(
            not_json[5].starts_with("not an order: expected "),
            "{output}"
        );
        assert_eq!(invalid[1], "poison-2");
        assert_eq!(invalid[5], "invalid order: user_id must be at least 1");
        assert_eq!(database[1], valid.order_id.to_string());
        assert_eq!(database[4], "user 20, 3 item(s), 19.99");
        assert!(
            database[5].contains("the database refused as data"),
            "{output}"
        );
        for row in &rows {
            assert_eq!(row[3], "1", "dead-lettered once: {output}");
            assert!(row[2].starts_with("20"), "a UTC time: {output}");
        }
        assert!(output.contains("3 message(s) in"), "{output}");
    }
    let left = queue.take_dead_letters().await;
    assert_eq!(
        ids(&left),
        ["poison-1", "poison-2", &valid.order_id.to_string()]
    );
    assert_eq!(left[0].body, b"this is not JSON");
}

#[tokio::test]
async fn a_replayed_valid_order_is_stored_exactly_once_by_a_running_billing_app() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    queue.declare().await;
    let valid = order(20);
    // Twice, as at-least-once dead-lettering may leave it, and next to a poison message.
    queue.publish_order(&valid).await;
    queue.publish_raw(b"not JSON", "poison").await;
    queue.publish_order(&valid).await;
    assert_eq!(queue.dead_letter_all().await, 3);

    let service = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    let id = valid.order_id.to_string();
    let (status, output) = dead_letters(&queue, &["replay", &id]).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("2 message(s) replayed"), "{output}");
    let replayed: Vec<Vec<String>> = rows(&output);
    assert_eq!(replayed.len(), 2, "{output}");
    assert!(
        replayed
            .iter()
            .all(|row| row[0] == id && row[1].starts_with("replayed"))
    );

    wait_for_stored(&db, 1).await;
    eventually(Duration::from_secs(10), "both copies acked", || async {
        metric(&service.url(), r#"billing_messages_total{outcome="acked"}"#).await == 2.0
    })
    .await;
    assert_eq!(stored(&db).await, 1, "stored exactly once");
    assert_eq!(
        metric(&service.url(), "billing_duplicates_total").await,
        1.0
    );
    assert_eq!(ids(&queue.take_dead_letters().await), ["poison"]);
}

#[tokio::test]
async fn a_replayed_invalid_order_goes_back_to_the_dead_letter_queue_with_its_reason() {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    queue.declare().await;
    queue
        .publish_raw(&invalid_order("total_amount", json!("1.001")), "poison")
        .await;
    assert_eq!(queue.dead_letter_all().await, 1);

    let service = start_ready(&env(&db, &queue, RABBITMQ, POSTGRES)).await;
    let (status, output) = dead_letters(&queue, &["replay", "--all"]).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("1 message(s) replayed"), "{output}");
    eventually(
        Duration::from_secs(10),
        "the order dead-lettered again",
        || async {
            metric(
                &service.url(),
                r#"billing_messages_total{outcome="dead_lettered"}"#,
            )
            .await
                == 1.0
                && queue.dead_letter_depth().await == 1
        },
    )
    .await;

    let (status, output) = dead_letters(&queue, &["list"]).await;
    assert!(status.success(), "{output}");
    let rows = rows(&output);
    assert_eq!(rows.len(), 1, "{output}");
    assert_eq!(rows[0][1], "poison");
    assert_eq!(
        rows[0][5],
        "invalid order: total_amount must have at most 2 decimals"
    );
    assert_eq!(rows[0][3], "2", "dead-lettered twice: {output}");
    assert_eq!(stored(&db).await, 0);
}

#[tokio::test]
async fn replaying_chosen_ids_leaves_the_others_in_their_order() {
    let queue = TestQueue::new();
    queue.declare().await;
    let orders: Vec<Order> = (1..=3).map(order).collect();
    queue.publish_orders(&orders).await;
    assert_eq!(queue.dead_letter_all().await, 3);

    let chosen = orders[1].order_id.to_string();
    let (status, output) = dead_letters(&queue, &["replay", &chosen, "no-such-id"]).await;
    assert_eq!(status.code(), Some(3), "some ids were not found: {output}");
    assert!(
        output.contains("not in ") && output.contains("no-such-id"),
        "{output}"
    );
    assert!(output.contains("1 message(s) replayed"), "{output}");

    let replayed = queue.take_all().await;
    assert_eq!(ids(&replayed), [chosen]);
    assert_eq!(
        serde_json::from_slice::<Order>(&replayed[0].body).unwrap(),
        orders[1]
    );
    let others = [
        orders[0].order_id.to_string(),
        orders[2].order_id.to_string(),
    ];
    assert_eq!(ids(&queue.take_dead_letters().await), others);
}

#[tokio::test]
async fn replay_all_moves_every_message_with_its_body_and_properties() {
    let queue = TestQueue::new();
    queue.declare().await;
    let (first, last) = (order(1), order(2));
    queue.publish_order(&first).await;
    queue.publish_raw(b"not JSON", "poison").await;
    queue.publish_order(&last).await;
    assert_eq!(queue.dead_letter_all().await, 3);

    let (status, output) = dead_letters(&queue, &["replay", "--all"]).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("3 message(s) replayed"), "{output}");
    assert_eq!(queue.dead_letter_depth().await, 0);

    let replayed = queue.take_all().await;
    let expected = [
        first.order_id.to_string(),
        "poison".into(),
        last.order_id.to_string(),
    ];
    assert_eq!(ids(&replayed), expected);
    assert_eq!(replayed[1].body, b"not JSON");
    let properties = &replayed[0].properties;
    assert_eq!(properties.delivery_mode(), &Some(2));
    assert_eq!(
        properties.content_type().as_ref().map(|t| t.as_str()),
        Some("application/json")
    );
    assert_eq!(
        common::amqp::header_text(properties.headers().as_ref(), "x-request-id").as_deref(),
        Some("test")
    );

    let (status, output) = dead_letters(&queue, &["replay", "--all"]).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("0 message(s) replayed"), "{output}");
}

#[tokio::test]
async fn listing_renews_a_message_near_the_delivery_limit_instead_of_returning_it() {
    let queue = TestQueue::new();
    queue.declare().await;
    queue.publish_raw(b"not JSON", "worn").await;
    queue.dead_letter_all().await;
    // Returned 500 times, as 500 listings would on a broker that counts returns (RabbitMQ
    // 3.x to 4.2); past 1000 the dead-letter queue would drop it.
    queue.return_dead_letters(500).await;
    queue.publish_raw(b"not JSON either", "fresh").await;
    queue.dead_letter_all().await;

    let (status, output) = dead_letters(&queue, &["list"]).await;
    assert!(status.success(), "{output}");
    let left = queue.take_dead_letters().await;
    assert_eq!(
        ids(&left),
        ["fresh", "worn"],
        "the renewed copy went to the end"
    );
    let count = left[1]
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
    assert!(
        matches!(count, None | Some(AMQPValue::LongLongInt(0))),
        "the copy starts counting afresh: {count:?}"
    );
    assert_eq!(left[1].body, b"not JSON");
    let (_, reasons) = dead_letters(&queue, &["list"]).await;
    assert!(reasons.contains("is empty"), "taken above: {reasons}");
}

#[tokio::test]
async fn mistakes_and_failures_have_their_own_exit_codes() {
    let queue = TestQueue::new();
    for wrong in [&[][..], &["replay"], &["replay", "--all", "x"], &["purge"]] {
        let (status, output) = dead_letters(&queue, wrong).await;
        assert_eq!(status.code(), Some(2), "{wrong:?}: {output}");
        assert!(
            output.contains("usage: billing-app dead-letters list"),
            "{output}"
        );
    }

    let (status, output) = run_to_exit(BINARY, &["help"], &[]).await;
    assert!(
        status.success() && output.contains("dead-letters"),
        "{output}"
    );
    let (status, output) = run_to_exit(BINARY, &["dead-letter"], &[]).await;
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("unknown command") && output.contains("dead-letters"),
        "{output}"
    );

    let (status, output) = dead_letters(&queue, &["list"]).await;
    assert_eq!(status.code(), Some(1), "no dead-letter queue yet: {output}");
    assert!(output.contains("no queue"), "{output}");

    queue.declare().await;
    let (status, output) = dead_letters(&queue, &["list"]).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("is empty"), "{output}");

    let mut env = queue.env();
    env.retain(|(name, _)| name != "RABBITMQ_PORT");
    env.push(("RABBITMQ_PORT".into(), "1".into()));
    let (status, output) = run_to_exit(BINARY, &["dead-letters", "list"], &env).await;
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains("cannot use RabbitMQ"), "{output}");
    assert_eq!(output.lines().count(), 1, "one line: {output}");
}
