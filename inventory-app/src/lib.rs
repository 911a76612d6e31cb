//! inventory-app: the movie inventory, a JSON API over its own PostgreSQL database `movies`.
//!
//! - [`config`]: the settings, read from the environment;
//! - [`startup`]: the complete application ([`startup::app`]), preparing the database, and
//!   serving until shutdown;
//! - `routes/movies.rs`: the `/api/movies` handlers and their request bodies;
//! - `model.rs`: what a movie is and the rules its fields obey;
//! - `db.rs`: every SQL statement;
//! - `movie_list.rs`: the body of `GET /api/movies`, streamed page by page;
//! - `error.rs`: every error a handler can answer with, and its status code.

pub mod config;
mod db;
mod error;
mod model;
mod movie_list;
mod routes;
pub mod startup;

pub use config::Settings;
