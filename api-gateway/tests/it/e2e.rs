//! The three services together: the acceptance scenario, orders posted while billing-app is
//! down, and the broker failing under load.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{FaultProxy, TestDatabase, TestQueue, eventually};
use uuid::Uuid;

use super::posting::{Posting, assert_stored_as_answered, rows_per_order};
use super::*;

/// Rows of `orders` per user, straight from the billing database.
async fn users_stored(db: &TestDatabase) -> Vec<i64> {
    let pool = db.pool().await;
    let users = sqlx::query_scalar("SELECT user_id FROM orders ORDER BY created_at")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    pool.close().await;
    users
}

fn billing_body(user_id: &str, items: &str, amount: &str) -> Value {
    json!({"user_id": user_id, "number_of_items": items, "total_amount": amount})
}

#[tokio::test]
async fn the_acceptance_scenario_end_to_end() {
    let Stack {
        inventory: _inventory,
        billing,
        gateway,
        movies_db: _movies_db,
        orders_db,
        queue,
    } = start_stack().await;
    let api = |path: &str| format!("{}{path}", gateway.url());

    // 1-2: a movie through the gateway.
    let movie = json!({"title": "A new movie", "description": "Very short description"});
    let (status, created) = json_of(post_json(&api("/api/movies/"), &movie).await).await;
    assert_eq!(status, 200);
    assert_eq!(created["title"], "A new movie");
    let (status, listed) = json_of(reqwest::get(api("/api/movies/")).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(listed.as_array().unwrap().contains(&created));

    // 3: an order, stored by billing-app.
    let (status, accepted) =
        json_of(post_json(&api("/api/billing/"), &billing_body("20", "99", "250")).await).await;
    assert_eq!(status, 200);
    assert!(accepted["message"].is_string());
    let first_id = accepted["order_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "user 20 stored", || async {
        users_stored(&orders_db).await == [20]
    })
    .await;

    // 4-6: billing-app stopped; the order is accepted and waits in the queue.
    let billing_addr = billing.addr();
    billing.stop().await;
    let (status, accepted) =
        json_of(post_json(&api("/api/billing/"), &billing_body("22", "10", "50")).await).await;
    assert_eq!(status, 200);
    let second_id = accepted["order_id"].as_str().unwrap().to_owned();
    assert_eq!(queue.depth().await, 1);
    assert_eq!(
        users_stored(&orders_db).await,
        [20],
        "user 22 absent while billing-app is down"
    );
    let (status, _) = json_of(reqwest::get(api("/api/billing/orders")).await.unwrap()).await;
    assert_eq!(status, 503, "the read API is unavailable with billing-app");

    // 7: billing-app back: user 22 appears, nothing duplicated.
    let billing = start_billing_on(billing_addr, orders_db.settings(), queue.settings()).await;
    eventually(Duration::from_secs(10), "user 22 stored", || async {
        users_stored(&orders_db).await == [20, 22]
    })
    .await;
    let (status, orders) = json_of(
        reqwest::get(api("/api/billing/orders?user_id=22"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(orders.as_array().unwrap().len(), 1);
    assert_eq!(orders[0]["order_id"], second_id);
    assert_eq!(orders[0]["total_amount"], "50.00");
    let (status, order) = json_of(
        reqwest::get(api(&format!("/api/billing/orders/{first_id}")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(order["user_id"], 20);
    // Every error is JSON, even for an id that is not text once percent-decoded.
    let (status, error) =
        json_of(reqwest::get(api("/api/billing/orders/%FF")).await.unwrap()).await;
    assert_eq!(status, 400);
    assert!(
        error["error"].as_str().unwrap().contains("order_id"),
        "{error}"
    );
    assert_eq!(queue.depth().await, 0);
    billing.stop().await;
}

#[tokio::test]
async fn orders_posted_while_billing_is_down_are_all_stored_once_it_is_back() {
    let (orders_db, queue) = (TestDatabase::create().await, TestQueue::new());
    let gateway = gateway_alone(queue.settings()).await;
    wait_for_ready(&gateway.url(), 200).await;

    let posts = (1..=50).map(|user| {
        let url = format!("{}/api/billing", gateway.url());
        async move {
            let body = billing_body(&user.to_string(), "1", "9.99");
            let (status, accepted) = json_of(post_json(&url, &body).await).await;
            assert_eq!(status, 200);
            Uuid::parse_str(accepted["order_id"].as_str().unwrap()).unwrap()
        }
    });
    let accepted: Vec<Uuid> = futures_util::future::join_all(posts).await;
    assert_eq!(queue.depth().await, 50, "all 50 wait in the queue");

    let _billing = start_billing(orders_db.settings(), queue.settings()).await;
    eventually(Duration::from_secs(20), "50 orders stored", || async {
        rows_per_order(&orders_db).await.len() == 50
    })
    .await;
    let stored = rows_per_order(&orders_db).await;
    for id in &accepted {
        assert_eq!(stored.get(id), Some(&1), "order {id} stored exactly once");
    }
}

#[tokio::test]
async fn a_broker_outage_while_posting_gives_503s_and_loses_no_accepted_order() {
    let (orders_db, queue) = (TestDatabase::create().await, TestQueue::new());
    let broker = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 5672))).await;
    let _billing = start_billing(orders_db.settings(), queue.settings()).await;
    let gateway = gateway_alone(queue.settings_via(broker.port())).await;
    wait_for_ready(&gateway.url(), 200).await;
    let url = format!("{}/api/billing", gateway.url());

    let posting = Posting::start(&gateway.url(), 4);
    posting.wait_accepted(20, Duration::from_secs(30)).await;

    broker.cut();
    wait_for_ready(&gateway.url(), 503).await;
    for _ in 0..10 {
        let (status, body) = json_of(post_json(&url, &billing_body("9", "1", "1")).await).await;
        assert_eq!(status, 503, "no 200 while the broker is unreachable");
        assert!(body["error"].as_str().unwrap().contains("broker"));
        assert!(
            body.get("order_id").is_none(),
            "an order never handed to the broker is not named"
        );
    }
    let refused = posting.refused();
    assert!(refused > 0, "the outage was seen by the posting clients");

    broker.restore();
    wait_for_ready(&gateway.url(), 200).await;
    let accepted = posting.accepted();
    posting
        .wait_accepted(accepted + 20, Duration::from_secs(30))
        .await;
    let answers = posting.finish().await;
    assert_stored_as_answered(&orders_db, &queue, &answers).await;
}

#[tokio::test]
async fn an_unconfirmed_order_gets_503_with_its_id_and_a_retry_with_that_key_is_the_same_order() {
    let queue = TestQueue::new();
    let broker = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], 5672))).await;
    let gateway = gateway_alone(queue.settings_via(broker.port())).await;
    wait_for_ready(&gateway.url(), 200).await;
    let url = format!("{}/api/billing", gateway.url());
    let order = billing_body("3", "1", "5");

    broker.freeze();
    let (status, body) = json_of(post_json(&url, &order).await).await;
    assert_eq!(status, 503);
    let message = body["error"].as_str().unwrap();
    assert!(
        message.starts_with("the message broker did not confirm the order in time"),
        "{message}"
    );
    let order_id = body["order_id"].as_str().expect("the 503 names the order");
    assert!(
        message.contains(&format!("Idempotency-Key: {order_id}")),
        "{message}"
    );

    // The gateway gave up on the connection that missed the confirm; the client retries, as
    // the 503's Retry-After invites, with the order id as its key, until it has reconnected.
    broker.restore();
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let accepted = loop {
        let response = http
            .post(&url)
            .header("idempotency-key", order_id)
            .json(&order)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "not accepted within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(accepted["order_id"].as_str(), Some(order_id));
    // Whether the unconfirmed message reached the broker after all or not, every message
    // queued is that one order, which billing-app stores once.
    eventually(Duration::from_secs(5), "the order queued", || async {
        queue.depth().await >= 1
    })
    .await;
    let ids: Vec<String> = queue
        .take_all()
        .await
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| id == order_id),
        "only {order_id} is queued: {ids:?}"
    );
}

#[tokio::test]
async fn a_reused_key_with_another_order_is_another_order_and_hides_none() {
    let stack = start_stack().await;
    let url = format!("{}/api/billing", stack.gateway.url());
    let post = |key: String, body: Value| {
        let url = url.clone();
        async move {
            let response = reqwest::Client::new()
                .post(&url)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let (status, accepted) = json_of(response).await;
            assert_eq!(status, 200, "{accepted}");
            Uuid::parse_str(accepted["order_id"].as_str().unwrap()).unwrap()
        }
    };
    let key = Uuid::new_v4().to_string();
    let (first, second) = (billing_body("30", "1", "10"), billing_body("31", "5", "99"));
    let first_id = post(key.clone(), first.clone()).await;
    let retried = post(key.clone(), first.clone()).await;
    let other = post(key.clone(), second.clone()).await;
    // Another client sending the first order's id as its key, with its own order.
    let under_first_id = post(first_id.to_string(), second).await;
    assert_eq!(
        retried, first_id,
        "the same key and order is the same order"
    );
    assert_ne!(
        other, first_id,
        "the same key with another order is another order"
    );
    assert_ne!(
        under_first_id, first_id,
        "an existing order cannot be shadowed"
    );
    assert_eq!(post(first_id.to_string(), first).await, first_id);

    eventually(Duration::from_secs(10), "three orders stored", || async {
        rows_per_order(&stack.orders_db).await.len() == 3
    })
    .await;
    let pool = stack.orders_db.pool().await;
    let users: Vec<(Uuid, i64)> = sqlx::query_as("SELECT id, user_id FROM orders")
        .fetch_all(&pool)
        .await
        .unwrap();
    let user_of = |id: Uuid| users.iter().find(|(stored, _)| *stored == id).map(|u| u.1);
    assert_eq!(user_of(first_id), Some(30));
    assert_eq!(user_of(other), Some(31));
    assert_eq!(user_of(under_first_id), Some(31));
}
