//! Wiring: the broker connection, the upstream services, the router, the server's lifetime.

use std::net::SocketAddr;

use common::metrics::Metrics;
use common::{health, http, shutdown};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::proxy::Upstream;
use crate::publisher::Publisher;
use crate::routes::{self, AppState};

/// A bound but not yet serving api-gateway. Tests bind port 0 and read [`Self::local_addr`].
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

    /// Serves until `shutdown` is cancelled. The broker connection outlives the HTTP server
    /// by the time in-flight orders need to get their confirms.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let settings = self.settings;
        let metrics = Metrics::new();
        let publisher = Publisher::new(
            settings.broker.topology(),
            settings.confirm_timeout,
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

        let state = AppState {
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
        };
        let router = http::finish(
            routes::router(state)
                .merge(health::routes(vec![publisher.readiness()], metrics.clone())),
            metrics,
        );

        tracing::info!("listening on {}", self.listener.local_addr()?);
        let served =
            shutdown::serve(self.listener, router, shutdown, settings.shutdown_timeout).await;
        broker_shutdown.cancel();
        let _ = connection.await;
        tracing::info!("stopped");
        served
    }
}

/// Binds and serves: what `main` calls.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> std::io::Result<()> {
    Application::bind(settings).await?.run(shutdown).await
}
