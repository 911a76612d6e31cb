//! Graceful shutdown: SIGTERM or SIGINT cancels a token that every long-running task of a
//! service watches; the server then stops accepting connections and gives in-flight requests a
//! bounded time to finish (see [`crate::server`]), and the service exits 0.

use tokio_util::sync::CancellationToken;

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
