//! What the three services share, and nothing else: configuration helpers, telemetry, HTTP
//! plumbing (JSON errors, request ids, request metrics), the HTTP server and the limits it
//! holds every client to, health endpoints, graceful shutdown, and, behind features, PostgreSQL
//! start-up (`postgres`) and the order message with its queue topology (`amqp`).

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod backoff;
pub mod cli;
pub mod config;
#[cfg(feature = "postgres")]
pub mod db;
pub mod health;
pub mod http;
pub mod metrics;
#[cfg(feature = "amqp")]
pub mod order;
pub mod server;
pub mod shutdown;
pub mod telemetry;
