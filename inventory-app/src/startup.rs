//! Wiring: the listener, the database, the router, and the server's lifetime.

use common::db::Database;
use common::health;
use common::metrics::Metrics;
use common::server::{self, App, ServerSettings};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::routes;

/// The schema, embedded in the binary and applied at start: a fresh database needs no manual step.
static MIGRATOR: Migrator = sqlx::migrate!();

/// The complete HTTP application over `db`: the movie API, the probes and the metrics, with
/// the server's limits, request ids and logs. This is what [`serve`] serves; tests drive it
/// in-process with [`App::handle`], no socket needed.
///
/// Until [`prepare_database`] has succeeded on `db` (or a clone of it), `/ready` is false and
/// the API answers 503.
pub fn app(db: &Database, server: &ServerSettings) -> App {
    let metrics = Metrics::new();
    server::app(
        routes::router(db.clone()).merge(health::routes(vec![db.readiness()], metrics.clone())),
        metrics,
        server,
    )
}

/// Creates the database if it is missing and applies the migrations, retrying until
/// PostgreSQL answers or `shutdown` is cancelled. Returns whether the schema is in place.
pub async fn prepare_database(db: &Database, shutdown: &CancellationToken) -> bool {
    db.prepare(&MIGRATOR, shutdown).await
}

/// Serves on `listener` until `shutdown` is cancelled. The database is prepared in the
/// background, so `/health` answers at once and `/ready` turns true once PostgreSQL does.
/// Tests pass a listener bound to port 0.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let db = Database::new(&settings.database);
    let app = app(&db, &settings.server);

    let preparing = tokio::spawn({
        let (db, shutdown) = (db.clone(), shutdown.clone());
        async move { prepare_database(&db, &shutdown).await }
    });
    let served = server::serve(listener, app, &settings.server, shutdown).await;
    preparing.abort();
    db.close().await;
    tracing::info!("stopped");
    served
}
