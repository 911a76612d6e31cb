//! A throw-away PostgreSQL database per test.

use common::db::DatabaseSettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, PgPool};

/// The server tests use: `TEST_DATABASE_URL`, or the local PostgreSQL with trust auth.
fn server() -> PgConnectOptions {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    url.parse()
        .unwrap_or_else(|err| panic!("TEST_DATABASE_URL={url:?} is not a PostgreSQL URL: {err}"))
}

/// A uniquely named, empty database, dropped (with its connections) when this value is.
pub struct TestDatabase {
    name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&server())
            .await
            .unwrap_or_else(|err| {
                panic!("tests need PostgreSQL on 127.0.0.1:5432 (run Scripts/test.sh): {err}")
            });
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create a test database");
        Self { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Settings a service under test uses to reach this database.
    pub fn settings(&self) -> DatabaseSettings {
        let server = server();
        DatabaseSettings {
            host: server.get_host().to_owned(),
            port: server.get_port(),
            user: server.get_username().to_owned(),
            password: String::new(),
            name: self.name.clone(),
            pool_size: 5,
            acquire_timeout: std::time::Duration::from_secs(2),
        }
    }

    /// The same settings as `<PREFIX>_DB_*` variables, for a service started as a process.
    pub fn env(&self, prefix: &str) -> Vec<(String, String)> {
        let settings = self.settings();
        vec![
            (format!("{prefix}_DB_HOST"), settings.host),
            (format!("{prefix}_DB_PORT"), settings.port.to_string()),
            (format!("{prefix}_DB_USER"), settings.user),
            (format!("{prefix}_DB_NAME"), settings.name),
        ]
    }

    /// Inserts `count` movies of 4 KB each straight into inventory-app's table (created by its
    /// migrations, so the service must have started): a list of `count` x 4 KB, far more than
    /// the socket buffers between a server and its client hold once it is a few thousand.
    pub async fn insert_large_movies(&self, count: i64) {
        let pool = self.pool().await;
        sqlx::query(
            "INSERT INTO movies (title, description) \
             SELECT 'Movie ' || i, repeat('x', 4000) FROM generate_series(1, $1) AS i",
        )
        .bind(count)
        .execute(&pool)
        .await
        .expect("insert the movies");
        pool.close().await;
    }

    /// A small pool for the test's own assertions on stored rows.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(server().database(&self.name))
            .await
            .expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, where blocking on async work is not allowed:
        // do it on a thread of its own.
        let name = std::mem::take(&mut self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect_with(&server()).await.ok()?;
                conn.execute(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await
                .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop a test database; it is left behind");
        }
    }
}
