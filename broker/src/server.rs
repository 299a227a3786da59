//! The listeners: accept connections, at most `max_connections` at once over all
//! listeners, one task each (the native protocol's, and the Kafka protocol's when it is
//! on), and run the graceful shutdown: move leaderships away (controlled shutdown), stop
//! accepting, let connections finish what they owe, then flush and close every log. (The
//! HTTP admin listener, `crate::http`, is started beside this by the binary, with its own
//! bound, and stops when shutdown begins.)
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
use tokio_rustls::TlsAcceptor;

use crate::broker::Broker;
use crate::connection::{self, Protocol};
use crate::handlers::Native;
use crate::kafka::Kafka;

/// The sockets a broker serves.
pub struct Listeners {
    /// The native protocol's (clients and other brokers).
    pub native: TcpListener,
    /// The Kafka protocol's, when it is on.
    pub kafka: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    /// The native listener alone.
    fn from(native: TcpListener) -> Listeners {
        Listeners {
            native,
            kafka: None,
        }
    }
}

/// Longest pause between accept retries after errors (such as too many open files).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a single node waits to be ready before it serves anyway.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `listeners` until `shutdown` completes, then shuts down gracefully: leaderships
/// move to other in-sync replicas, connections stop reading and send the answers they owe
/// (up to `shutdown_timeout_ms`), and every log is flushed and closed so the next start
/// needs no recovery.
pub async fn run(broker: Arc<Broker>, listeners: impl Into<Listeners>, shutdown: impl Future) {
    let listeners = listeners.into();
    if let Some(kafka) = &listeners.kafka {
        let advertised = broker
            .config
            .kafka_advertise
            .clone()
            .or_else(|| kafka.local_addr().ok().map(|a| a.to_string()));
        if let Some(address) = advertised {
            broker.set_kafka_address(address);
        }
    }
    let applier = crate::background::spawn(&broker);
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
    let limit = Arc::new(Semaphore::new(broker.config.max_connections as usize));
    let settings = connection::Settings {
        max_in_flight: broker.config.max_in_flight_per_connection as usize,
        max_frame_bytes: broker.config.max_frame_bytes,
        stopping: broker.stopping(),
        metrics: Arc::clone(&broker.metrics),
        listener: "native",
        handshake_timeout: crate::tls::HANDSHAKE_TIMEOUT,
    };
    let native = Arc::new(Native::new(Arc::clone(&broker)));
    let tls_of = |on: bool| {
        let server = broker.config.tls.server.as_ref().filter(|_| on);
        server.map(|server| TlsAcceptor::from(Arc::clone(&server.0)))
    };
    let mut accepting = vec![tokio::spawn(accept(
        native,
        settings.clone(),
        (listeners.native, tls_of(broker.config.native_tls)),
        Arc::clone(&limit),
        stop.clone(),
    ))];
    if let Some(kafka) = listeners.kafka {
        let protocol = Arc::new(Kafka::new(
            Arc::clone(&broker.services),
            broker.config.node_id,
        ));
        let settings = connection::Settings {
            listener: "kafka",
            ..settings
        };
        let listener = (kafka, tls_of(broker.config.kafka_tls));
        accepting.push(tokio::spawn(accept(
            protocol, settings, listener, limit, stop,
        )));
    }
    tracing::info!("ready");
    let timeout = Duration::from_millis(broker.config.shutdown_timeout_ms);
    if !early_stop {
        shutdown.await;
        broker.controlled_shutdown(timeout).await;
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    stop_accepting.send_replace(true);
    let mut connections = JoinSet::new();
    for listener in accepting {
        let mut served = listener.await.unwrap_or_default();
        // One set over every listener's connections, so one timeout covers them all
        // (aborting a task drops its set, which aborts its connections).
        connections.spawn(async move { while served.join_next().await.is_some() {} });
    }
    broker.begin_shutdown();
    let drained = tokio::time::timeout(timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still busy after {timeout:?}; closing them");
        connections.shutdown().await;
    }
    if let Err(e) = applier.await {
        tracing::error!("the metadata applier failed: {e}");
    }
    broker.groups.unload_all().await;
    broker.services.txns.unload_all();
    let closing = Arc::clone(&broker);
    if let Err(e) = tokio::task::spawn_blocking(move || closing.close()).await {
        tracing::error!("closing the logs failed: {e}");
    }
    broker.cluster.shutdown().await;
    broker.release_data_dir();
    tracing::info!("shut down cleanly");
}

/// Accepts connections of `protocol` (over TLS when the listener has an acceptor) until
/// `stop` turns true, at most as many at once as `limit` allows; returns the connections
/// still running. The TLS handshake runs in each connection's task, never here.
async fn accept<P: Protocol>(
    protocol: Arc<P>,
    settings: connection::Settings,
    (listener, tls): (TcpListener, Option<TlsAcceptor>),
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
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
                let protocol = Arc::clone(&protocol);
                let settings = settings.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    connection::serve(protocol, settings, socket, peer, tls).await;
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
