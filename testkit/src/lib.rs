//! Helpers for the services' integration tests, which run against the real PostgreSQL on
//! 127.0.0.1:5432 and the real RabbitMQ on 127.0.0.1:5672.
//!
//! Each test gets its own database and queue, so tests run in parallel and leave nothing
//! behind; faults are injected with a TCP proxy between a service and its dependency.
//!
//! A service under test runs one of three ways: its `startup::serve` on a local port in this
//! process ([`InProcess`]), its binary as a child process ([`ServiceProcess`]), or, for tests
//! that need no socket, its `startup::app` driven request by request ([`AppClient`]). The
//! probes [`ready_status`], [`wait_for_ready`], [`metric`] and [`metrics_text`] take the base
//! URL of either of the first two (`url()`).
//!
//! Tests that crash or freeze the servers themselves run their own: a [`PrivateBroker`] (a
//! RabbitMQ node) or a [`PrivatePostgres`] (a PostgreSQL cluster), started from the machine's
//! binaries in a scratch directory, on free ports, as children of the test process.

mod app_client;
mod broker;
mod database;
pub mod hostile;
mod os;
mod private_broker;
mod private_postgres;
mod process;
mod proxy;
mod service;

use std::future::Future;
use std::time::Duration;

pub use app_client::{AppClient, AppResponse};
pub use broker::{Message, TestQueue, delete_topology};
pub use database::TestDatabase;
pub use private_broker::PrivateBroker;
pub use private_postgres::PrivatePostgres;
pub use process::{ServiceProcess, run_to_exit};
pub use proxy::FaultProxy;
pub use service::{InProcess, metric, metrics_text, ready_status, wait_for_ready};

/// Polls `condition` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
