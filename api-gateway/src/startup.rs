//! Wiring: the broker connection, the upstream services, the router, the server's lifetime.

use std::sync::Arc;

use common::metrics::Metrics;
use common::{health, server};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::proxy::Upstream;
use crate::publisher::Publisher;
use crate::routes::{self, AppState, MovieRoutes};

/// Serves on `listener` until `shutdown` is cancelled. The broker connection outlives the
/// HTTP server by the time in-flight orders need to get their confirms. Tests pass a listener
/// bound to port 0.
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let metrics = Metrics::new();
    let publisher = Publisher::new(
        settings.broker.topology(),
        settings.confirm_timeout,
        settings.max_unconfirmed,
        &metrics,
    );
    let broker_shutdown = CancellationToken::new();
    let connection = tokio::spawn({
        let (publisher, broker, stop) = (
            publisher.clone(),
            settings.broker.clone(),
            broker_shutdown.clone(),
        );
        async move { publisher.maintain(broker, stop).await }
    });

    let state = Arc::new(AppState {
        inventory: Upstream::new(
            "inventory-app",
            &settings.inventory_url,
            settings.upstream_timeout,
        ),
        billing: Upstream::new(
            "billing-app",
            &settings.billing_url,
            settings.upstream_timeout,
        ),
        publisher: publisher.clone(),
    });
    let app = server::app(
        routes::router(state.clone())
            .merge(health::routes(vec![publisher.readiness()], metrics.clone())),
        metrics,
        &settings.server,
    )
    .with_direct_routes(MovieRoutes(state));

    let served = server::serve(listener, app, &settings.server, shutdown).await;
    broker_shutdown.cancel();
    let _ = connection.await;
    tracing::info!("stopped");
    served
}
