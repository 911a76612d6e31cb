//! Wiring: the listener, the database, the router, and the server's lifetime.

use std::net::SocketAddr;

use common::db::Database;
use common::metrics::Metrics;
use common::{health, http, shutdown};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::routes;

/// The schema, embedded in the binary and applied at start: a fresh database needs no manual step.
static MIGRATOR: Migrator = sqlx::migrate!();

/// A bound but not yet serving inventory-app. Tests bind port 0 and read [`Self::local_addr`].
pub struct Application {
    listener: TcpListener,
    settings: Settings,
}

impl Application {
    pub async fn bind(settings: Settings) -> std::io::Result<Self> {
        let listener = TcpListener::bind(settings.listen).await?;
        Ok(Self { listener, settings })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled. The database is prepared in the background, so
    /// `/health` answers at once and `/ready` turns true once PostgreSQL does.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let db = Database::new(&self.settings.database);
        let metrics = Metrics::new();
        let router = http::finish(
            routes::router(db.clone()).merge(health::routes(vec![db.readiness()], metrics.clone())),
            metrics,
        );

        let preparing = tokio::spawn({
            let (db, shutdown) = (db.clone(), shutdown.clone());
            async move { db.prepare(&MIGRATOR, &shutdown).await }
        });
        tracing::info!("listening on {}", self.local_addr()?);
        let served = shutdown::serve(
            self.listener,
            router,
            shutdown,
            self.settings.shutdown_timeout,
        )
        .await;
        preparing.abort();
        db.close().await;
        tracing::info!("stopped");
        served
    }
}

/// Binds and serves: what `main` calls.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> std::io::Result<()> {
    Application::bind(settings).await?.run(shutdown).await
}
