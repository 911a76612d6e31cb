//! PostgreSQL for the services that own a database: settings, a bounded pool, migrations
//! applied at start with retries, readiness, and what a failed statement says about retrying
//! it ([`Failure`]). Mapping failures to HTTP answers is each service's own business.

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
/// schema may be missing. Handlers answer 503 for it; a consumer waits.
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

/// PostgreSQL's "database does not exist" (SQLSTATE 3D000).
fn is_missing_database(err: &sqlx::migrate::MigrateError) -> bool {
    matches!(err, sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db))
        if db.code().as_deref() == Some("3D000"))
}

/// What a failed statement says about trying it again, in a few fixed kinds (also the
/// values of a metric label).
///
/// Only [`Failure::Data`] is the data's fault: the same values fail the same way every time.
/// Every other kind is about the database, its configuration or the code, and may end without
/// any change to the data: a server coming back, a grant restored, a disk freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No usable connection: the server is unreachable, restarting or shutting down, or the
    /// pool had no free connection in time (SQLSTATE classes 08 and 57P, I/O errors).
    Unavailable,
    /// The server is out of resources: disk full, out of memory, too many connections (53).
    Resources,
    /// The transaction lost a race: a serialization failure or a deadlock (40001, 40P01).
    Conflict,
    /// The statement was cancelled, or ran into `statement_timeout` (57014).
    Cancelled,
    /// The database, or the session, is read-only (25006).
    ReadOnly,
    /// The role lacks a privilege (42501).
    Privilege,
    /// The statement does not fit the schema: a missing table or column, a syntax error
    /// (the rest of class 42).
    Schema,
    /// The data breaks a rule: a value out of range, a broken constraint (classes 22 and 23).
    Data,
    /// Anything else.
    Other,
}

impl Failure {
    /// Every kind, for pre-registering metric labels.
    pub const ALL: [Self; 9] = [
        Self::Unavailable,
        Self::Resources,
        Self::Conflict,
        Self::Cancelled,
        Self::ReadOnly,
        Self::Privilege,
        Self::Schema,
        Self::Data,
        Self::Other,
    ];

    pub fn of(err: &sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::BeginFailed => Self::Unavailable,
            sqlx::Error::Database(db) => match db.code() {
                Some(code) => Self::of_sqlstate(&code),
                None => Self::Other,
            },
            _ => Self::Other,
        }
    }

    fn of_sqlstate(code: &str) -> Self {
        match code {
            "40001" | "40P01" => Self::Conflict,
            "57014" => Self::Cancelled,
            "25006" => Self::ReadOnly,
            "42501" => Self::Privilege,
            _ if code.starts_with("08") || code.starts_with("57P") => Self::Unavailable,
            _ if code.starts_with("53") => Self::Resources,
            _ if code.starts_with("42") => Self::Schema,
            _ if code.starts_with("22") || code.starts_with("23") => Self::Data,
            _ => Self::Other,
        }
    }

    /// Whether the database itself is expected to recover on its own, soon: what an HTTP
    /// API answers 503 (rather than 500) for.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::Resources | Self::Conflict)
    }

    /// The metric label: snake case, from this fixed set.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Resources => "resources",
            Self::Conflict => "conflict",
            Self::Cancelled => "cancelled",
            Self::ReadOnly => "read_only",
            Self::Privilege => "privilege",
            Self::Schema => "schema",
            Self::Data => "data",
            Self::Other => "other",
        }
    }
}

/// Whether retrying the same statement soon may succeed: the database is unreachable,
/// overloaded, restarting, or the transaction lost a race (see [`Failure::is_transient`]).
pub fn is_transient(err: &sqlx::Error) -> bool {
    Failure::of(err).is_transient()
}

/// The SQLSTATE of an error the server returned, e.g. `25006`.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        for (code, failure) in [
            ("08006", Failure::Unavailable),
            ("57P01", Failure::Unavailable),
            ("53100", Failure::Resources),
            ("40001", Failure::Conflict),
            ("40P01", Failure::Conflict),
            ("57014", Failure::Cancelled),
            ("25006", Failure::ReadOnly),
            ("42501", Failure::Privilege),
            ("42P01", Failure::Schema),
            ("22003", Failure::Data),
            ("23505", Failure::Data),
            ("23514", Failure::Data),
            ("XX000", Failure::Other),
        ] {
            assert_eq!(Failure::of_sqlstate(code), failure, "{code}");
        }
    }

    #[test]
    fn only_unavailable_overloaded_or_racing_databases_are_transient() {
        let transient: Vec<_> = Failure::ALL
            .into_iter()
            .filter(|f| f.is_transient())
            .collect();
        assert_eq!(
            transient,
            [Failure::Unavailable, Failure::Resources, Failure::Conflict]
        );
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }
}
