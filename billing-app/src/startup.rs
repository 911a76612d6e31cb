//! Wiring: the HTTP server, the database, the consumer, and their shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::db::Database;
use common::health;
use common::metrics::Metrics;
use common::server::{self, App};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::consumer::{Consumer, ConsumerMetrics, Storing};
use crate::routes;

/// The schema, embedded in the binary and applied at start.
static MIGRATOR: Migrator = sqlx::migrate!();

/// billing-app over `db`, without a socket: the complete HTTP application (the read API, the
/// probes and the metrics, with the server's limits, request ids and logs) and, as a future to
/// spawn, the consumer it reports on. That future applies the migrations to `db` (retrying
/// until PostgreSQL answers), then consumes `billing_queue` until `shutdown` is cancelled,
/// finishing the batch in hand first. Everything but the database comes from `settings`
/// (`settings.database` is what `db` was made from).
///
/// This is what [`serve`] runs; tests drive the application in-process with
/// [`App::handle`]. The two share their state: `/ready` is false until the
/// consumer consumes and while its inserts fail, and the read API answers 503 until the schema
/// is in place.
pub fn app(
    db: &Database,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> (App, impl Future<Output = ()> + Send + 'static) {
    let metrics = Metrics::new();
    let consuming = Arc::new(AtomicBool::new(false));
    let storing = Storing::default();
    let checks = vec![
        db.readiness(),
        Consumer::readiness(consuming.clone()),
        storing.readiness(),
    ];
    let app = server::app(
        routes::router(db.clone()).merge(health::routes(checks, metrics.clone())),
        metrics.clone(),
        &settings.server,
    );

    let consumer = Consumer {
        database: db.clone(),
        topology: settings.broker.topology(),
        prefetch: settings.prefetch,
        metrics: ConsumerMetrics::register(&metrics),
        consuming,
        storing,
        shutdown: shutdown.clone(),
    };
    let broker = settings.broker.clone();
    let consume = async move {
        if consumer
            .database
            .prepare(&MIGRATOR, &consumer.shutdown)
            .await
        {
            consumer.run(&broker).await;
        }
    };
    (app, consume)
}

/// Serves HTTP on `listener` and consumes `billing_queue` until `shutdown` is cancelled.
/// Consuming starts once the database schema is in place, and on shutdown the batch in hand
/// is finished before the process exits. Tests pass a listener bound to port 0.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let db = Database::new(&settings.database);
    let (app, consumer) = app(&db, &settings, &shutdown);
    let consuming = tokio::spawn(consumer);

    let served = server::serve(listener, app, &settings.server, shutdown).await;
    if tokio::time::timeout(settings.server.shutdown_timeout, consuming)
        .await
        .is_err()
    {
        tracing::warn!("the consumer did not stop within the shutdown timeout");
    }
    db.close().await;
    tracing::info!("stopped");
    served
}
