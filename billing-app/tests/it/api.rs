//! The read API on the real application (`startup::app`), driven in-process without a socket,
//! over orders stored by its consumer. The server's own handling of connections is tested in
//! `hostile.rs`.

use std::time::Duration;

use billing_app::Settings;
use billing_app::startup;
use common::db::Database;
use serde_json::Value;
use testkit::{AppClient, TestDatabase, TestQueue};
use tokio_util::sync::CancellationToken;

use super::*;

struct TestApp {
    client: AppClient,
    shutdown: CancellationToken,
    queue: TestQueue,
    /// Kept so that the database lives as long as the app.
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let response = self.client.get(path_and_query).await;
        let status = response.status().as_u16();
        assert_eq!(response.headers()["content-type"], "application/json");
        (status, response.json())
    }
}

/// billing-app in-process with `orders` already consumed and stored.
async fn app_with(orders: &[Order]) -> TestApp {
    let (db, queue) = (TestDatabase::create().await, TestQueue::new());
    queue.declare().await;
    queue.publish_orders(orders).await;
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: db.settings(),
        broker: queue.settings(),
        prefetch: 50,
        server: common::server::ServerSettings {
            shutdown_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    };
    let shutdown = CancellationToken::new();
    let (app, consumer) = startup::app(&Database::new(&settings.database), &settings, &shutdown);
    tokio::spawn(consumer);
    wait_for_stored(&db, orders.len() as i64).await;
    TestApp {
        client: AppClient::new(app),
        shutdown,
        queue,
        _db: db,
    }
}

#[tokio::test]
async fn orders_are_listed_newest_first_filtered_and_limited() {
    let orders: Vec<Order> = [20, 22, 20].into_iter().map(order).collect();
    let app = app_with(&orders).await;

    let (status, all) = app.get("/api/orders").await;
    assert_eq!(status, 200);
    assert_eq!(all.as_array().unwrap().len(), 3);
    let first = &all[0];
    assert_eq!(first["number_of_items"], 3);
    assert_eq!(
        first["total_amount"], "19.99",
        "money is an exact decimal string"
    );
    assert!(first["created_at"].is_string());

    let (_, of_user) = app.get("/api/orders/?user_id=20").await;
    let users: Vec<i64> = of_user
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["user_id"].as_i64().unwrap())
        .collect();
    assert_eq!(users, [20, 20]);

    let (_, limited) = app.get("/api/orders?limit=1").await;
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let (_, nobody) = app.get("/api/orders?user_id=999").await;
    assert_eq!(nobody, Value::Array(vec![]));
    assert_eq!(app.queue.depth().await, 0);
}

#[tokio::test]
async fn one_order_is_found_by_id() {
    let orders = [order(5)];
    let app = app_with(&orders).await;
    let (status, found) = app
        .get(&format!("/api/orders/{}", orders[0].order_id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(found["order_id"], orders[0].order_id.to_string());
    assert_eq!(found["user_id"], 5);

    let (status, missing) = app
        .get("/api/orders/00000000-0000-0000-0000-000000000001/")
        .await;
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("not found"));
}

#[tokio::test]
async fn every_amount_is_answered_with_two_decimals_even_zero() {
    let mut orders = [order(1), order(2), order(3)];
    orders[0].total_amount = Decimal::ZERO;
    orders[1].total_amount = Decimal::new(250, 0);
    orders[2].total_amount = Decimal::new(5, 1);
    let app = app_with(&orders).await;
    for (order, expected) in orders.iter().zip(["0.00", "250.00", "0.50"]) {
        let (status, found) = app.get(&format!("/api/orders/{}", order.order_id)).await;
        assert_eq!(
            (status, found["total_amount"].as_str()),
            (200, Some(expected))
        );
    }
}

#[tokio::test]
async fn bad_parameters_are_400() {
    let app = app_with(&[]).await;
    for query in [
        "/api/orders?user_id=abc",
        "/api/orders?user_id=0",
        "/api/orders?user_id=-4",
        "/api/orders?limit=0",
        "/api/orders?limit=100000",
        "/api/orders/not-a-uuid",
        "/api/orders/123",
        // Not even text once percent-decoded: axum's own rejection would be text/plain.
        "/api/orders/%FF",
        "/api/orders/%FF/",
    ] {
        let (status, body) = app.get(query).await;
        assert_eq!(status, 400, "{query}");
        assert!(body["error"].is_string(), "{query}");
    }
}
