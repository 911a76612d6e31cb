//! Helpers for the services' integration tests, which run against the real PostgreSQL on
//! 127.0.0.1:5432 (and, for billing, the real RabbitMQ on 127.0.0.1:5672).
//!
//! Each test gets its own database (and queue), so tests run in parallel and leave nothing behind.

mod database;
mod process;

pub use database::TestDatabase;
pub use process::{ServiceProcess, run_to_exit};
