//! Graceful shutdown: SIGTERM or SIGINT stops accepting connections, in-flight requests get a
//! bounded time to finish, then the service exits 0.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Request;
use axum::serve::ListenerExt;
use axum::{Router, ServiceExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

/// A token cancelled when the process receives SIGTERM (Kubernetes, `docker stop`) or SIGINT
/// (Ctrl-C). Every long-running task of a service watches it.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(err) => {
            tracing::warn!("cannot listen for SIGTERM ({err}); only Ctrl-C stops the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish for at most `grace`.
///
/// A trailing slash is accepted on every path (`/api/movies/` is `/api/movies`), and handlers
/// can read the client's address through `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let app = NormalizePathLayer::trim_trailing_slash().layer(router);
    let make_service =
        ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(app);
    // Responses go out as soon as they are written, not held back by Nagle's algorithm.
    let listener = listener.tap_io(|stream| {
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {err}");
        }
    });
    let server = axum::serve(listener, make_service)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = shutdown.cancelled() => {
            match tokio::time::timeout(grace, server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(?grace, "requests still in flight after the shutdown timeout; exiting anyway");
                    Ok(())
                }
            }
        }
    }
}
