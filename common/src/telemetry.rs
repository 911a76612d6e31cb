//! Logging: `tracing` filtered by `RUST_LOG`, human-readable by default, JSON lines with
//! `LOG_FORMAT=json`, and with `LOG_DIR` also to a daily-rotated file in that directory.

use std::io::IsTerminal;
use std::path::PathBuf;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::config::Env;

/// The filter used when `RUST_LOG` is unset: our own logs at `info`, chatty libraries quieter.
const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn,amq_protocol=warn";

/// Rotated log files kept in `LOG_DIR`: a week of daily files.
const KEPT_LOG_FILES: usize = 7;

/// How a service logs, from `RUST_LOG`, `LOG_FORMAT` and `LOG_DIR`.
pub struct LogSettings {
    filter: Option<String>,
    json: bool,
    dir: Option<PathBuf>,
}

impl LogSettings {
    pub fn from_env(env: &Env) -> Self {
        Self {
            filter: env.get("RUST_LOG").map(str::to_owned),
            json: env.get("LOG_FORMAT") == Some("json"),
            dir: env.get("LOG_DIR").map(PathBuf::from),
        }
    }
}

/// Keeps the log file writer flushing; hold it until the process ends.
pub struct LogGuard {
    _flusher: Option<WorkerGuard>,
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber. Call once, first thing in `main`; `service` names the
/// log files (`<service>.log` is the current one).
///
/// Every request runs inside a span carrying its request id (see [`crate::http`]), so each
/// line logged while serving it names the request; JSON lines carry the span's fields too.
pub fn init(service: &str, settings: &LogSettings) -> LogGuard {
    let (filter, bad_filter) = match settings.filter.as_deref().map(EnvFilter::try_new) {
        None => (EnvFilter::new(DEFAULT_FILTER), None),
        Some(Ok(filter)) => (filter, None),
        Some(Err(err)) => (EnvFilter::new(DEFAULT_FILTER), Some(err)),
    };
    // Colours only for a terminal: `docker logs` and log files get plain text.
    let stdout = fmt::layer().with_ansi(std::io::stdout().is_terminal());
    let mut layers: Vec<BoxedLayer> = vec![format(stdout, settings.json)];

    let mut guard = None;
    let mut file_error = None;
    if let Some(dir) = &settings.dir {
        match log_file(service, dir) {
            Ok(appender) => {
                let (writer, flusher) = tracing_appender::non_blocking(appender);
                let file = fmt::layer().with_ansi(false).with_writer(writer);
                layers.push(format(file, settings.json));
                guard = Some(flusher);
            }
            Err(err) => file_error = Some(format!("cannot log to {}: {err}", dir.display())),
        }
    }

    // A second call (tests starting several services in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init();
    if let Some(err) = bad_filter {
        tracing::warn!("RUST_LOG is not a valid filter ({err}); using {DEFAULT_FILTER:?}");
    }
    if let Some(err) = file_error {
        tracing::warn!("{err}; logging to standard output only");
    }
    LogGuard { _flusher: guard }
}

fn format<W>(
    layer: fmt::Layer<Registry, fmt::format::DefaultFields, fmt::format::Format, W>,
    json: bool,
) -> BoxedLayer
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    if json {
        layer.json().with_current_span(true).boxed()
    } else {
        layer.boxed()
    }
}

fn log_file(service: &str, dir: &std::path::Path) -> Result<RollingFileAppender, String> {
    std::fs::create_dir_all(dir).map_err(|err| err.to_string())?;
    RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(service)
        .filename_suffix("log")
        .max_log_files(KEPT_LOG_FILES)
        .build(dir)
        .map_err(|err| err.to_string())
}
