//! api-gateway: the single entry point of the system.
//!
//! - [`config`]: the settings, read from the environment;
//! - [`startup`]: the broker connection, the router, the server's lifetime;
//! - `routes/movies.rs`: `/api/movies...`, forwarded to inventory-app, answered before the
//!   router;
//! - `routes/billing.rs`: `POST /api/billing` (published) and `/api/billing/orders...`
//!   (forwarded to billing-app);
//! - `routes/openapi.rs`: `GET /api/openapi.json`, the document in `openapi.json`;
//! - `routes/docs.rs`: `GET /api/docs`, a Swagger UI page for that document;
//! - `proxy.rs`: how a request is forwarded and its answer streamed back;
//! - `connection_pool.rs`: the keep-alive connections to inventory-app and billing-app;
//! - `publisher.rs`: the RabbitMQ connection and confirmed publishing;
//! - `order_id.rs`: order ids, and how `Idempotency-Key` scopes them;
//! - `error.rs`: every error the gateway itself answers with.

pub mod config;
mod connection_pool;
mod error;
mod order_id;
mod proxy;
mod publisher;
mod routes;
pub mod startup;

pub use config::Settings;
