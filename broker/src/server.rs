//! The listener: accepts connections, at most `max_connections` at once, one task each, and
//! runs the graceful shutdown: move leaderships away (controlled shutdown), stop accepting,
//! let connections finish what they owe, then flush and close every log.
//!
//! Brokers and clients share the listener. A node of a multi-node cluster accepts at once
//! (the controller quorum needs its peers' listeners to elect a leader); a single node
//! first waits until it is registered and its partitions are open, so the first client
//! sees the same broker as after any later start.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::connection;

/// Longest pause between accept retries after errors (such as too many open files).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a single node waits to be ready before it serves anyway.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `listener` until `shutdown` completes, then shuts down gracefully: leaderships
/// move to other in-sync replicas, connections stop reading and send the answers they owe
/// (up to `shutdown_timeout_ms`), and every log is flushed and closed so the next start
/// needs no recovery.
pub async fn run(broker: Arc<Broker>, listener: TcpListener, shutdown: impl Future) {
    broker.spawn_background();
    tokio::pin!(shutdown);
    let (stop_accepting, stop) = watch::channel(false);
    let mut early_stop = false;
    if broker.is_single_node() {
        tokio::select! {
            ready = broker.wait_ready(READY_TIMEOUT) => if !ready {
                tracing::warn!("not registered with the controller after {READY_TIMEOUT:?}; serving anyway");
            },
            _ = &mut shutdown => early_stop = true,
        }
    }
    let accepting = tokio::spawn(accept(Arc::clone(&broker), listener, stop));
    tracing::info!("ready");
    let timeout = Duration::from_millis(broker.config.shutdown_timeout_ms);
    if !early_stop {
        shutdown.await;
        broker.controlled_shutdown(timeout).await;
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    stop_accepting.send_replace(true);
    let mut connections = accepting.await.unwrap_or_default();
    broker.begin_shutdown();
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
    broker.cluster.shutdown().await;
    broker.release_data_dir();
    tracing::info!("shut down cleanly");
}

/// Accepts connections until `stop` turns true; returns the connections still running.
async fn accept(
    broker: Arc<Broker>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections as usize));
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        // Reap finished connections so the set stays as small as the live ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => permit.expect("semaphore never closed"),
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
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
    connections
}
