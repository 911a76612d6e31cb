//! `POST /api/billing` on its own: what gets published, and what never does.

use common::order::Order;
use serde_json::{Value, json};
use testkit::TestQueue;

use super::*;

/// A gateway publishing to a fresh queue, with no inventory or billing behind it.
async fn gateway_for(queue: &TestQueue) -> InProcess {
    let gateway = gateway_alone(queue.settings()).await;
    wait_for_ready(&gateway.url(), 200).await;
    gateway
}

async fn post_raw(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    json_of(request.send().await.expect("POST")).await
}

#[tokio::test]
async fn an_accepted_order_is_a_persistent_json_message_identified_by_its_order_id() {
    let queue = TestQueue::new();
    let gateway = gateway_for(&queue).await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/billing/", gateway.url()))
        .header("x-request-id", "req-123")
        .json(&json!({"user_id": "20", "number_of_items": "99", "total_amount": "250"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let (status, accepted) = json_of(response).await;
    assert_eq!(status, 200);
    let order_id = accepted["order_id"].as_str().unwrap().to_owned();

    let messages = queue.take_all().await;
    assert_eq!(messages.len(), 1);
    let properties = &messages[0].properties;
    assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        properties
            .content_type()
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("application/json")
    );
    assert_eq!(
        properties.message_id().as_ref().map(ToString::to_string),
        Some(order_id.clone())
    );
    assert_eq!(
        common::amqp::header_text(properties.headers().as_ref(), "x-request-id").as_deref(),
        Some("req-123")
    );
    let order: Order = serde_json::from_slice(&messages[0].body).unwrap();
    assert_eq!(order.order_id.to_string(), order_id);
    assert_eq!((order.user_id, order.number_of_items), (20, 99));
    assert_eq!(order.total_amount.to_string(), "250");
}

#[tokio::test]
async fn plain_json_numbers_are_accepted_too() {
    let queue = TestQueue::new();
    let gateway = gateway_for(&queue).await;
    let body = json!({"user_id": 21, "number_of_items": 2, "total_amount": 19.99});
    let (status, _) =
        json_of(post_json(&format!("{}/api/billing", gateway.url()), &body).await).await;
    assert_eq!(status, 200);
    let order: Order = serde_json::from_slice(&queue.take_all().await[0].body).unwrap();
    assert_eq!(order.total_amount.to_string(), "19.99");
}

#[tokio::test]
async fn bad_bodies_are_4xx_and_nothing_is_published() {
    let queue = TestQueue::new();
    let gateway = gateway_for(&queue).await;
    let url = format!("{}/api/billing", gateway.url());
    let json = Some("application/json");
    let valid = r#"{"user_id": "1", "number_of_items": "1", "total_amount": "1"}"#;
    let cases: Vec<(Option<&str>, String, u16)> = vec![
        (json, "{\"user_id\": ".into(), 400),
        (json, "not json".into(), 400),
        (json, String::new(), 400),
        (None, valid.into(), 415),
        (Some("text/plain"), valid.into(), 415),
        (Some("application/x-www-form-urlencoded"), "user_id=1".into(), 415),
        (json, format!(r#"{{"user_id": "1", "pad": "{}"}}"#, "x".repeat(70_000)), 413),
        (json, "[]".into(), 422),
        (json, "42".into(), 422),
        (json, "{}".into(), 422),
        (json, r#"{"user_id": "1", "number_of_items": "1"}"#.into(), 422),
        (json, r#"{"user_id": "abc", "number_of_items": "1", "total_amount": "1"}"#.into(), 422),
        (json, r#"{"user_id": "0", "number_of_items": "1", "total_amount": "1"}"#.into(), 422),
        (json, r#"{"user_id": "1", "number_of_items": "-2", "total_amount": "1"}"#.into(), 422),
        (json, r#"{"user_id": "1", "number_of_items": 1.5, "total_amount": "1"}"#.into(), 422),
        (json, r#"{"user_id": true, "number_of_items": "1", "total_amount": "1"}"#.into(), 422),
        (json, r#"{"user_id": "1", "number_of_items": "1", "total_amount": "-1"}"#.into(), 422),
        (json, r#"{"user_id": "1", "number_of_items": "1", "total_amount": "1.999"}"#.into(), 422),
        (json, r#"{"user_id": "1", "number_of_items": "1", "total_amount": "1e9"}"#.into(), 422),
        (json, r#"{"user_id": "1", "number_of_items": "1", "total_amount": [1]}"#.into(), 422),
        (json, r#"{"user_id": "'; DROP TABLE orders; --", "number_of_items": "1", "total_amount": "1"}"#.into(), 422),
        (json, r#"{"user_id": "99999999999999999999999", "number_of_items": "1", "total_amount": "1"}"#.into(), 422),
    ];
    for (content_type, body, expected) in cases {
        let short: String = body.chars().take(60).collect();
        let (status, error) = post_raw(&url, content_type, body).await;
        assert_eq!(status, expected, "{content_type:?} {short}");
        assert!(error["error"].is_string(), "{short}: {error}");
    }
    let (status, error) = json_of(reqwest::get(&url).await.unwrap()).await;
    assert_eq!(status, 405, "{error}");

    assert_eq!(queue.depth().await, 0, "no bad body was published");
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_the_same_order() {
    let queue = TestQueue::new();
    let gateway = gateway_for(&queue).await;
    let url = format!("{}/api/billing", gateway.url());
    let key = "5b0c7f0e-4f0d-4c39-9a43-2f1d7c0e9b11";
    let body = json!({"user_id": "4", "number_of_items": "1", "total_amount": "3"});
    let mut order_ids = Vec::new();
    for _ in 0..2 {
        let response = reqwest::Client::new()
            .post(&url)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, accepted) = json_of(response).await;
        assert_eq!(status, 200);
        order_ids.push(accepted["order_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(order_ids[0], order_ids[1]);
    let response = reqwest::Client::new()
        .post(&url)
        .header("idempotency-key", "not-a-uuid")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await.0, 400);

    let ids: Vec<String> = queue
        .take_all()
        .await
        .iter()
        .map(|m| {
            serde_json::from_slice::<Order>(&m.body)
                .unwrap()
                .order_id
                .to_string()
        })
        .collect();
    assert_eq!(
        ids, order_ids,
        "both carry the same order id, which billing stores once"
    );
}

#[tokio::test]
async fn with_the_broker_unreachable_orders_get_503_and_ready_is_false() {
    let queue = TestQueue::new();
    let gateway = gateway_alone(queue.settings_via(1)).await;
    let health = reqwest::get(format!("{}/health", gateway.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "alive without its broker");
    let (status, ready) = json_of(
        reqwest::get(format!("{}/ready", gateway.url()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(ready["checks"]["broker"], "not connected to RabbitMQ");

    let body = json!({"user_id": "1", "number_of_items": "1", "total_amount": "1"});
    let (status, error) =
        json_of(post_json(&format!("{}/api/billing", gateway.url()), &body).await).await;
    assert_eq!(status, 503);
    assert_eq!(error["error"], "the message broker is unavailable");
}
