//! Wiring: the HTTP server, the database, the consumer, and their shutdown.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::db::Database;
use common::metrics::Metrics;
use common::{health, server};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::consumer::{Consumer, ConsumerMetrics, Storing};
use crate::routes;

/// The schema, embedded in the binary and applied at start.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Serves HTTP on `listener` and consumes `billing_queue` until `shutdown` is cancelled.
/// Consuming starts once the database schema is in place, and on shutdown the batch in hand
/// is finished before the process exits. Tests pass a listener bound to port 0.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Settings {
        database,
        broker,
        prefetch,
        server: server_settings,
        ..
    } = settings;
    let db = Database::new(&database);
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
        &server_settings,
    );

    let consumer = Consumer {
        database: db.clone(),
        topology: broker.topology(),
        prefetch,
        metrics: ConsumerMetrics::register(&metrics),
        consuming,
        storing,
        shutdown: shutdown.clone(),
    };
    let consuming = tokio::spawn(async move {
        if consumer
            .database
            .prepare(&MIGRATOR, &consumer.shutdown)
            .await
        {
            consumer.run(&broker).await;
        }
    });

    let served = server::serve(listener, app, &server_settings, shutdown).await;
    if tokio::time::timeout(server_settings.shutdown_timeout, consuming)
        .await
        .is_err()
    {
        tracing::warn!("the consumer did not stop within the shutdown timeout");
    }
    db.close().await;
    tracing::info!("stopped");
    served
}
