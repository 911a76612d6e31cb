//! billing-app: consumes `billing_queue` and stores each order exactly once in its own
//! PostgreSQL database `orders`; serves the stored orders over HTTP.
//!
//! - [`config`]: the settings, read from the environment;
//! - [`startup`]: the complete application and its consumer ([`startup::app`]), the HTTP
//!   server, and their shutdown;
//! - `consumer.rs`: deliveries to rows: batching, idempotent inserts, acks, dead-lettering;
//! - [`dead_letters`]: the `dead-letters list | replay` command for what was dead-lettered;
//! - `db.rs`: every SQL statement;
//! - `routes/orders.rs`: `GET /api/orders` and `GET /api/orders/{order_id}`;
//! - `error.rs`: every error the HTTP API answers with.

pub mod config;
mod consumer;
mod db;
pub mod dead_letters;
mod error;
mod routes;
pub mod startup;

pub use config::Settings;
