//! Wiring: the listener, the database, the router, and the server's lifetime.

use common::db::Database;
use common::metrics::Metrics;
use common::{health, server};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::routes;

/// The schema, embedded in the binary and applied at start: a fresh database needs no manual step.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Serves on `listener` until `shutdown` is cancelled. The database is prepared in the
/// background, so `/health` answers at once and `/ready` turns true once PostgreSQL does.
/// Tests pass a listener bound to port 0.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let db = Database::new(&settings.database);
    let metrics = Metrics::new();
    let app = server::app(
        routes::router(db.clone()).merge(health::routes(vec![db.readiness()], metrics.clone())),
        metrics,
        &settings.server,
    );

    let preparing = tokio::spawn({
        let (db, shutdown) = (db.clone(), shutdown.clone());
        async move { db.prepare(&MIGRATOR, &shutdown).await }
    });
    let served = server::serve(listener, app, &settings.server, shutdown).await;
    preparing.abort();
    db.close().await;
    tracing::info!("stopped");
    served
}
