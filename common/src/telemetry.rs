//! Logging: `tracing` filtered by `RUST_LOG`, human-readable by default, JSON lines with
//! `LOG_FORMAT=json`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::Env;

/// The filter used when `RUST_LOG` is unset: our own logs at `info`, chatty libraries quieter.
const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn,amq_protocol=warn";

/// How a service logs, from `RUST_LOG` and `LOG_FORMAT`.
pub struct LogSettings {
    filter: Option<String>,
    json: bool,
}

impl LogSettings {
    pub fn from_env(env: &Env) -> Self {
        Self {
            filter: env.get("RUST_LOG").map(str::to_owned),
            json: env.get("LOG_FORMAT") == Some("json"),
        }
    }
}

/// Installs the global subscriber. Call once, first thing in `main`.
///
/// Every request runs inside a span carrying its request id (see [`crate::http`]), so each
/// line logged while serving it names the request; JSON lines carry the span's fields too.
pub fn init(settings: &LogSettings) {
    let (filter, bad_filter) = match settings.filter.as_deref().map(EnvFilter::try_new) {
        None => (EnvFilter::new(DEFAULT_FILTER), None),
        Some(Ok(filter)) => (filter, None),
        Some(Err(err)) => (EnvFilter::new(DEFAULT_FILTER), Some(err)),
    };
    // Colours only for a terminal: `docker logs` and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    // A second call (tests starting several services in one process) keeps the first subscriber.
    let _ = if settings.json {
        builder.json().with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
    if let Some(err) = bad_filter {
        tracing::warn!("RUST_LOG is not a valid filter ({err}); using {DEFAULT_FILTER:?}");
    }
}
