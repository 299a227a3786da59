//! The listener: accepts connections, at most `max_connections` at once, one task each, and
//! runs the graceful shutdown: stop accepting, let connections finish what they owe, then
//! flush and close every log.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::connection;

/// Longest pause between accept retries after errors (such as too many open files).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `listener` until `shutdown` completes, then shuts down gracefully: connections
/// stop reading, send the answers they owe (up to `shutdown_timeout_ms`), and every log
/// is flushed and closed so the next start needs no recovery.
pub async fn run(broker: Arc<Broker>, listener: TcpListener, shutdown: impl Future) {
    broker.spawn_maintenance();
    let limit = Arc::new(Semaphore::new(broker.config.max_connections as usize));
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set stays as small as the live ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => permit.expect("semaphore never closed"),
            _ = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        match accepted {
            Ok((socket, peer)) => {
                backoff = Duration::from_millis(5);
                let broker = Arc::clone(&broker);
                connections.spawn(async move {
                    connection::serve(broker, socket, peer).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    drop(listener);
    broker.begin_shutdown();
    let timeout = Duration::from_millis(broker.config.shutdown_timeout_ms);
    let drained = tokio::time::timeout(timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still busy after {timeout:?}; closing them");
        connections.shutdown().await;
    }
    let closing = Arc::clone(&broker);
    if let Err(e) = tokio::task::spawn_blocking(move || closing.close()).await {
        tracing::error!("closing the logs failed: {e}");
    }
    tracing::info!("shut down cleanly");
}
