//! api-gateway's integration tests: the real gateway, inventory-app and billing-app routers
//! and servers, in this process, against the real PostgreSQL and RabbitMQ, with a fresh
//! database and queue per test.

mod billing;
mod broker_crash;
mod broker_pressure;
mod e2e;
mod hostile;
mod openapi;
mod posting;
mod proxy;

use std::net::SocketAddr;
use std::time::Duration;

use api_gateway::Settings;
use common::amqp::{BrokerSettings, Node};
use common::db::DatabaseSettings;
use reqwest::Response;
use serde_json::Value;
use testkit::{InProcess, TestDatabase, TestQueue, wait_for_ready};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start_inventory(database: DatabaseSettings) -> InProcess {
    let settings = inventory_app::Settings {
        listen: loopback(),
        database,
        server: common::server::ServerSettings {
            shutdown_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    };
    let service = InProcess::start(inventory_app::startup::serve, settings).await;
    wait_for_ready(&service.url(), 200).await;
    service
}

async fn start_billing(database: DatabaseSettings, broker: BrokerSettings) -> InProcess {
    start_billing_on(loopback(), database, broker).await
}

/// billing-app on a given address, e.g. the one of an instance stopped before.
async fn start_billing_on(
    listen: SocketAddr,
    database: DatabaseSettings,
    broker: BrokerSettings,
) -> InProcess {
    let settings = billing_app::Settings {
        listen: loopback(),
        database,
        broker,
        prefetch: 100,
        server: common::server::ServerSettings {
            shutdown_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    };
    let service = InProcess::start_on(listen, billing_app::startup::serve, settings).await;
    wait_for_ready(&service.url(), 200).await;
    service
}

/// Gateway settings for tests: short timeouts so that fault tests stay quick.
fn gateway_settings(inventory_url: &str, billing_url: &str, broker: BrokerSettings) -> Settings {
    Settings {
        listen: loopback(),
        inventory_url: inventory_url.parse().unwrap(),
        billing_url: billing_url.parse().unwrap(),
        broker,
        upstream_timeout: Duration::from_secs(2),
        confirm_timeout: Duration::from_secs(1),
        max_unconfirmed: 1000,
        server: common::server::ServerSettings {
            shutdown_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    }
}

/// Starts the gateway without waiting for it to be ready (some tests start it with the
/// broker unreachable).
async fn start_gateway(settings: Settings) -> InProcess {
    InProcess::start(api_gateway::startup::serve, settings).await
}

/// A gateway publishing to `broker`, with no inventory-app or billing-app behind it.
async fn gateway_alone(broker: BrokerSettings) -> InProcess {
    let nowhere = dead_url().await;
    start_gateway(gateway_settings(&nowhere, &nowhere, broker)).await
}

/// The three services, each with its fresh database and the fresh queue, all ready.
struct Stack {
    inventory: InProcess,
    billing: InProcess,
    gateway: InProcess,
    movies_db: TestDatabase,
    orders_db: TestDatabase,
    queue: TestQueue,
}

async fn start_stack() -> Stack {
    let (movies_db, orders_db, queue) = (
        TestDatabase::create().await,
        TestDatabase::create().await,
        TestQueue::new(),
    );
    let inventory = start_inventory(movies_db.settings()).await;
    let billing = start_billing(orders_db.settings(), queue.settings()).await;
    let gateway = start_gateway(gateway_settings(
        &inventory.url(),
        &billing.url(),
        queue.settings(),
    ))
    .await;
    wait_for_ready(&gateway.url(), 200).await;
    Stack {
        inventory,
        billing,
        gateway,
        movies_db,
        orders_db,
        queue,
    }
}

/// A broker that is never reachable, for tests of the proxy alone: the gateway declares no
/// queue and keeps retrying in the background.
fn no_broker() -> BrokerSettings {
    BrokerSettings::single(Node::new("127.0.0.1", 1), "guest", "guest", "unused")
}

/// A URL where nothing listens.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

async fn post_json(url: &str, body: &Value) -> Response {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("POST")
}

/// The status, and the body as JSON, of a response whose body must be JSON.
async fn json_of(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    (status, response.json().await.expect("a JSON body"))
}
