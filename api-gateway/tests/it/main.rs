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
use testkit::{TestDatabase, TestQueue, eventually};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A service serving on a random local port until stopped or dropped.
struct Running {
    url: String,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Stops the service the way SIGTERM does and waits until it has.
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("the service task").expect("a clean stop");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs a service's `serve` on `listen` (port 0 for any free port) until stopped.
async fn running<S, F>(
    listen: SocketAddr,
    settings: S,
    serve: fn(TcpListener, S, CancellationToken) -> F,
) -> Running
where
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind(listen).await.expect("bind a port");
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, settings, shutdown.clone()));
    Running {
        url: format!("http://{addr}"),
        addr,
        shutdown,
        task: Some(task),
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start_inventory(database: DatabaseSettings) -> Running {
    let settings = inventory_app::Settings {
        listen: loopback(),
        database,
        server: common::server::ServerSettings {
            shutdown_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    };
    let service = running(loopback(), settings, inventory_app::startup::serve).await;
    wait_for_ready(&service.url).await;
    service
}

async fn start_billing(database: DatabaseSettings, broker: BrokerSettings) -> Running {
    start_billing_on(loopback(), database, broker).await
}

/// billing-app on a given address, e.g. the one of an instance stopped before.
async fn start_billing_on(
    listen: SocketAddr,
    database: DatabaseSettings,
    broker: BrokerSettings,
) -> Running {
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
    let service = running(listen, settings, billing_app::startup::serve).await;
    wait_for_ready(&service.url).await;
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
async fn start_gateway(settings: Settings) -> Running {
    running(loopback(), settings, api_gateway::startup::serve).await
}

async fn ready_status(url: &str) -> u16 {
    match reqwest::get(format!("{url}/ready")).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn wait_for_ready(url: &str) {
    wait_for_ready_status(url, 200).await;
}

async fn wait_for_ready_status(url: &str, status: u16) {
    eventually(
        Duration::from_secs(20),
        &format!("{url}/ready answers {status}"),
        || async { ready_status(url).await == status },
    )
    .await;
}

/// A gateway publishing to `broker`, with no inventory-app or billing-app behind it.
async fn gateway_alone(broker: BrokerSettings) -> Running {
    let nowhere = dead_url().await;
    start_gateway(gateway_settings(&nowhere, &nowhere, broker)).await
}

/// The three services, each with its fresh database and the fresh queue, all ready.
struct Stack {
    inventory: Running,
    billing: Running,
    gateway: Running,
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
        &inventory.url,
        &billing.url,
        queue.settings(),
    ))
    .await;
    wait_for_ready(&gateway.url).await;
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
