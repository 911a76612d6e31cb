//! PostgreSQL for the services that own a database: settings, a bounded pool, migrations
//! applied at start with retries, readiness, and telling transient errors from permanent ones.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{ConfigError, Env};
use crate::health::Check;
use crate::http::JsonError;
use axum::http::StatusCode;

/// Where a service's database is and how many connections it may hold.
#[derive(Clone)]
pub struct DatabaseSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub name: String,
    /// Upper bound of the pool (`<PREFIX>_DB_POOL_SIZE`).
    pub pool_size: u32,
    /// How long a request waits for a free connection before answering 503
    /// (`<PREFIX>_DB_ACQUIRE_TIMEOUT_SECONDS`).
    pub acquire_timeout: Duration,
}

impl DatabaseSettings {
    /// Reads `<PREFIX>_DB_HOST`, `_PORT`, `_USER`, `_PASSWORD`, `_NAME`, `_POOL_SIZE` and
    /// `_ACQUIRE_TIMEOUT_SECONDS`, e.g. `INVENTORY_DB_HOST` for prefix `INVENTORY`.
    ///
    /// The defaults reach a local development PostgreSQL: `postgres@127.0.0.1:5432` with no
    /// password (trust authentication).
    pub fn from_env(env: &Env, prefix: &str, default_name: &str) -> Result<Self, ConfigError> {
        let var = |suffix: &str| format!("{prefix}_DB_{suffix}");
        Ok(Self {
            host: env.string_or(&var("HOST"), "127.0.0.1"),
            port: env.port_or(&var("PORT"), 5432)?,
            user: env.string_or(&var("USER"), "postgres"),
            password: env.string_or(&var("PASSWORD"), ""),
            name: env.string_or(&var("NAME"), default_name),
            pool_size: env.at_least(&var("POOL_SIZE"), 10, 1)?,
            acquire_timeout: env
                .seconds_or(&var("ACQUIRE_TIMEOUT_SECONDS"), Duration::from_secs(2))?,
        })
    }

    /// Connection options built field by field, so a password needs no URL-escaping.
    pub fn connect_options(&self) -> PgConnectOptions {
        let options = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(&self.name);
        if self.password.is_empty() {
            options
        } else {
            options.password(&self.password)
        }
    }
}

impl fmt::Debug for DatabaseSettings {
    /// Everything but the password, which never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{} (pool {}, acquire timeout {:?})",
            self.user, self.host, self.port, self.name, self.pool_size, self.acquire_timeout
        )
    }
}

/// The database is not usable yet: it has not answered since the service started, so the
/// schema may be missing. Handlers answer 503 for it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the database is not ready yet")]
pub struct NotReady;

/// A lazily connected pool plus whether the schema has been migrated.
///
/// The service starts serving `/health` at once; [`Database::prepare`] keeps trying to reach
/// PostgreSQL in the background, and until it has, [`Database::pool`] answers [`NotReady`].
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    migrated: Arc<AtomicBool>,
    settings: Arc<DatabaseSettings>,
}

impl Database {
    /// A pool that opens connections on first use, at most `pool_size` of them.
    pub fn new(settings: &DatabaseSettings) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(settings.connect_options());
        Self {
            pool,
            migrated: Arc::new(AtomicBool::new(false)),
            settings: Arc::new(settings.clone()),
        }
    }

    /// The pool, once the schema is in place.
    pub fn pool(&self) -> Result<&PgPool, NotReady> {
        if self.migrated.load(Ordering::Acquire) {
            Ok(&self.pool)
        } else {
            Err(NotReady)
        }
    }

    /// Applies `migrator`'s migrations, retrying with backoff until PostgreSQL answers or
    /// `shutdown` is cancelled. Returns whether the schema is in place.
    ///
    /// A missing database is created first (a local PostgreSQL has none; Compose and
    /// Kubernetes create it through `POSTGRES_DB`).
    pub async fn prepare(&self, migrator: &Migrator, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::for_reconnects();
        loop {
            let failure = match migrator.run(&self.pool).await {
                Ok(()) => {
                    self.migrated.store(true, Ordering::Release);
                    tracing::info!(database = ?self.settings, "database ready, migrations applied");
                    return true;
                }
                Err(err) if is_missing_database(&err) => match self.create_database().await {
                    Ok(()) => continue,
                    Err(err) => err.to_string(),
                },
                Err(err) => err.to_string(),
            };
            let delay = backoff.next_delay();
            tracing::warn!(
                database = ?self.settings,
                "database not ready ({failure}); retrying in {delay:.1?}"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return false,
            }
        }
    }

    async fn create_database(&self) -> sqlx::Result<()> {
        use sqlx::{AssertSqlSafe, Connection, Executor};
        let name = &self.settings.name;
        tracing::info!("database {name:?} does not exist; creating it");
        let maintenance = self.settings.connect_options().database("postgres");
        let mut conn = sqlx::PgConnection::connect_with(&maintenance).await?;
        let quoted = name.replace('"', "\"\"");
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
            .await?;
        conn.close().await
    }

    /// The readiness check: migrated, and answering a trivial query now.
    pub fn readiness(&self) -> Check {
        let db = self.clone();
        Check::new("database", move || {
            let db = db.clone();
            async move {
                let pool = db.pool().map_err(|e| e.to_string())?;
                sqlx::query("SELECT 1")
                    .execute(pool)
                    .await
                    .map(drop)
                    .map_err(|err| format!("unreachable: {err}"))
            }
        })
    }

    /// Closes every connection; call after the server has stopped.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The answer to a failed query: 503 when retrying later may succeed, 500 otherwise. The
/// details go to the log, never to the client.
pub fn error_response(err: &sqlx::Error) -> JsonError {
    tracing::error!("database error: {err}");
    if is_transient(err) {
        JsonError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable; retry later",
        )
    } else {
        JsonError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<NotReady> for JsonError {
    fn from(not_ready: NotReady) -> Self {
        JsonError::new(StatusCode::SERVICE_UNAVAILABLE, not_ready.to_string())
    }
}

/// PostgreSQL's "database does not exist" (SQLSTATE 3D000).
fn is_missing_database(err: &sqlx::migrate::MigrateError) -> bool {
    matches!(err, sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db))
        if db.code().as_deref() == Some("3D000"))
}

/// Whether retrying the same statement later may succeed: the database is unreachable,
/// overloaded, restarting, or the transaction lost a race. Anything else (bad data, a broken
/// constraint, a bug) fails the same way every time.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception, 53: insufficient resources, 57P: operator
            // intervention (shutdown, restart), 40001/40P01: serialization failure, deadlock.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}
