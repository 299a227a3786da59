//! The HTTP admin listener (`http_listen`, default 127.0.0.1:9644): `GET /health`,
//! `GET /ready` and `GET /metrics` for orchestrators and Prometheus. HTTP/1.1 through
//! `hyper`, one short connection at a time per client (no keep-alive), at most
//! [`CONNECTIONS_MAX`] at once, each bounded by [`CONNECTION_TIMEOUT`].
//!
//! `/metrics` is the Prometheus text exposition (OpenMetrics) of two sets: the event
//! metrics of [`crate::metrics`] (counters and histograms moved as things happen), and the
//! state of the broker computed at the scrape ([`state_registry`]): partitions led,
//! under-replicated, under min ISR and offline, log sizes and segments, the controller's
//! role and Raft term, and the lag of the consumer groups this broker coordinates, in
//! records and in seconds. Computing state at the scrape means no gauge can drift from
//! the truth; it reads the logs of lagging groups' partitions (one batch each), so it runs
//! on the blocking pool.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_protocol::batch::Batches;
use sluice_protocol::{BrokerId, Offset};
use sluice_storage::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::broker::Broker;
use crate::partition::{Partition, Role};

mod console;

/// HTTP connections served at once; more wait in the accept queue.
pub const CONNECTIONS_MAX: usize = 64;
/// Longest life of one HTTP connection (reading the request, answering it).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Most consumer-lag series one scrape exports (group x partition): a bound on the
/// scrape's size and on the log reads it makes.
pub const LAG_SERIES_MAX: usize = 10_000;
/// Bytes asked of a log to find the timestamp of a group's next record: storage returns
/// at least one whole batch, so this reads exactly the batch holding the record.
const LAG_READ_BYTES: u32 = 1;

/// The content type of the OpenMetrics text format that `prometheus-client` writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints on `listener` until `stop` turns true.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut registry = Registry::default();
    broker.metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let limit = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => permit.expect("semaphore never closed"),
            _ = stop.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (socket, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("HTTP accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let broker = Arc::clone(&broker);
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let broker = Arc::clone(&broker);
                let registry = Arc::clone(&registry);
                async move { Ok::<_, Infallible>(route(&broker, &registry, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(socket), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                tracing::debug!("HTTP connection failed: {e}");
            }
            drop(permit);
        });
    }
}

/// Answers one request.
async fn route(
    broker: &Arc<Broker>,
    registry: &Arc<Registry>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    match request.uri().path() {
        "/health" if broker.is_stopping() => text(StatusCode::SERVICE_UNAVAILABLE, "stopping\n"),
        "/health" => text(StatusCode::OK, "ok\n"),
        "/ready" if broker.is_ready() => text(StatusCode::OK, "ready\n"),
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not registered with the controller, fenced, or stopping\n",
        ),
        "/metrics" => metrics(broker, registry).await,
        "/" => body(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(console::PAGE.as_bytes()),
        ),
        "/api/overview" => {
            let broker = Arc::clone(broker);
            json(tokio::task::spawn_blocking(move || Ok(console::overview(&broker))).await)
        }
        "/api/records" => {
            let broker = Arc::clone(broker);
            let query = request.uri().query().unwrap_or_default().to_string();
            json(tokio::task::spawn_blocking(move || console::records(&broker, &query)).await)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; this listener serves /, /metrics, /health and /ready\n",
        ),
    }
}

/// A plain-text answer.
fn text(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

/// An answer of `content_type`.
fn body(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// A console api's answer: its JSON, or 400 with the message saying what is wrong.
fn json(
    outcome: Result<Result<serde_json::Value, String>, tokio::task::JoinError>,
) -> Response<Full<Bytes>> {
    match outcome {
        Ok(Ok(value)) => body(
            StatusCode::OK,
            "application/json",
            Bytes::from(value.to_string()),
        ),
        Ok(Err(message)) => body(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            Bytes::from(message + "\n"),
        ),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request failed; see the broker's log\n",
        ),
    }
}

/// The metrics exposition: the event metrics, then the state computed now.
async fn metrics(broker: &Arc<Broker>, registry: &Arc<Registry>) -> Response<Full<Bytes>> {
    let broker = Arc::clone(broker);
    let registry = Arc::clone(registry);
    let encoded = tokio::task::spawn_blocking(move || {
        let state = state_registry(&broker);
        let mut text = String::with_capacity(64 * 1024);
        encode_registry(&mut text, &registry)?;
        encode_registry(&mut text, &state)?;
        encode_eof(&mut text)?;
        Ok::<_, std::fmt::Error>(text)
    })
    .await;
    match encoded {
        Ok(Ok(text)) => body(StatusCode::OK, METRICS_CONTENT_TYPE, Bytes::from(text)),
        _ => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded; see the broker's log\n",
        ),
    }
}

/// Labels of a per-partition state metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

/// Labels of a consumer-lag metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    group: String,
    topic: String,
    partition: i32,
}

/// The broker's state as metrics, computed now. Blocking: reads logs and takes group
/// locks; run it on the blocking pool.
pub fn state_registry(broker: &Broker) -> Registry {
    let mut registry = Registry::default();
    partition_state(broker, &mut registry);
    controller_state(broker, &mut registry);
    lag_state(broker, &mut registry);
    registry
}

/// Partitions led, under-replicated, under min ISR, offline; log sizes.
fn partition_state(broker: &Broker, registry: &mut Registry) {
    let node = broker.config.node_id;
    let image = broker.cluster.image();
    let led = Gauge::<i64>::default();
    let under_replicated = Gauge::<i64>::default();
    let under_min_isr = Gauge::<i64>::default();
    let log_bytes = Family::<PartitionLabels, Gauge>::default();
    let log_segments = Family::<PartitionLabels, Gauge>::default();
    for (name, _, meta) in image.partitions_on(node) {
        let local = broker
            .topics
            .get(name)
            .and_then(|t| t.partitions.get(&meta.index).cloned());
        let leads_here = meta.leader == node
            && local
                .as_ref()
                .is_some_and(|p: &Arc<Partition>| p.role() == Role::Leader);
        if leads_here {
            led.inc();
            if meta.isr.len() < meta.replicas.len() {
                under_replicated.inc();
            }
            let min_isr = local.as_ref().map_or(1, |p| p.min_insync_replicas());
            if meta.isr.len() < usize::from(min_isr) {
                under_min_isr.inc();
            }
        }
        if let Some(partition) = &local {
            let (bytes, segments) = partition.log_size();
            let labels = PartitionLabels {
                topic: name.to_string(),
                partition: meta.index.0,
            };
            log_bytes
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            log_segments
                .get_or_create(&labels)
                .set(i64::try_from(segments).unwrap_or(i64::MAX));
        }
    }
    registry.register("sluice_partitions_led", "Partitions this broker leads", led);
    registry.register(
        "sluice_partitions_under_replicated",
        "Partitions led here whose ISR is smaller than their replica set",
        under_replicated,
    );
    registry.register(
        "sluice_partitions_under_min_isr",
        "Partitions led here whose ISR is below min.insync.replicas (acks=all is refused)",
        under_min_isr,
    );
    let offline = Gauge::<i64>::default();
    if broker.cluster.controller_id() == Some(node) {
        let count = image
            .topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader == BrokerId(-1))
            .count();
        offline.set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(
        "sluice_partitions_offline",
        "Partitions of the cluster without a leader (reported by the active controller only, \
         0 elsewhere, so a sum over brokers is right)",
        offline,
    );
    registry.register(
        "sluice_log_size_bytes",
        "Bytes of the log of each partition replica hosted here",
        log_bytes,
    );
    registry.register(
        "sluice_log_segments",
        "Segments of the log of each partition replica hosted here",
        log_segments,
    );
}

/// The controller's role, term and fencings; whether this broker is ready.
fn controller_state(broker: &Broker, registry: &mut Registry) {
    let node = broker.config.node_id;
    let (term, leader) = {
        let metrics = broker.cluster.raft.metrics();
        let metrics = metrics.borrow();
        (metrics.current_term, metrics.current_leader)
    };
    let active = Gauge::<i64>::default();
    active.set(i64::from(leader == Some(node.0 as u64)));
    registry.register(
        "sluice_controller_active",
        "1 if this node is the active controller (the Raft leader of the metadata log)",
        active,
    );
    let raft_term = Gauge::<i64>::default();
    raft_term.set(i64::try_from(term).unwrap_or(i64::MAX));
    registry.register(
        "sluice_controller_raft_term",
        "The Raft term this node knows",
        raft_term,
    );
    let fencings = broker
        .cluster
        .controller
        .as_ref()
        .map_or(0, |c| c.fencings());
    registry.register(
        "sluice_controller_broker_fencings",
        "Brokers fenced by this node as the active controller (sessions expired)",
        ConstCounter::new(fencings),
    );
    let ready = Gauge::<i64>::default();
    ready.set(i64::from(broker.is_ready()));
    registry.register(
        "sluice_broker_ready",
        "1 if this broker is registered, unfenced and serving (as /ready)",
        ready,
    );
}

/// The lag of every group coordinated here, on every partition it committed an offset for
/// whose replica this broker hosts: records between the commit and the high watermark,
/// and how old the next unconsumed record is.
fn lag_state(broker: &Broker, registry: &mut Registry) {
    let records = Family::<LagLabels, Gauge>::default();
    let seconds = Family::<LagLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let now_ms = SystemClock.now_ms();
    let mut series = 0usize;
    'shards: for shard in broker.groups.loaded_shards() {
        for group in shard.groups() {
            let group = group.blocking_lock();
            for ((topic, index), committed) in group.all_committed() {
                if series >= LAG_SERIES_MAX {
                    tracing::warn!(
                        "consumer lag: more than {LAG_SERIES_MAX} group partitions; the rest \
                         are left out of this scrape"
                    );
                    break 'shards;
                }
                let Some(partition) = broker
                    .topics
                    .get(topic)
                    .and_then(|t| t.partitions.get(index).cloned())
                else {
                    continue; // Not hosted here: this broker cannot tell its log end.
                };
                series += 1;
                let (lag_records, lag_seconds) =
                    partition_lag(&partition, committed.value.offset, now_ms);
                let labels = LagLabels {
                    group: group.id().to_string(),
                    topic: topic.clone(),
                    partition: index.0,
                };
                records.get_or_create(&labels).set(lag_records);
                seconds.get_or_create(&labels).set(lag_seconds);
            }
        }
    }
    registry.register(
        "sluice_consumer_group_lag_records",
        "Records between a group's committed offset and the partition's high watermark",
        records,
    );
    registry.register(
        "sluice_consumer_group_lag_seconds",
        "Age of the next record a group has not consumed (from its timestamp); 0 when caught up",
        seconds,
    );
}

/// (records, seconds) of lag of a group committed at `committed` on `partition`.
pub fn partition_lag(partition: &Partition, committed: Offset, now_ms: i64) -> (i64, f64) {
    let high_watermark = partition.high_watermark();
    let from = committed.max(partition.log_start_offset());
    let lag_records = (high_watermark.0 - committed.0).max(0);
    if lag_records == 0 || from >= high_watermark {
        return (lag_records, 0.0);
    }
    let timestamp = partition
        .read_log(from, LAG_READ_BYTES, high_watermark)
        .ok()
        .and_then(|bytes| record_timestamp(bytes, from));
    let lag_seconds = timestamp.map_or(0.0, |ts| (now_ms - ts).max(0) as f64 / 1000.0);
    (lag_records, lag_seconds)
}

/// The timestamp of the record at `offset` (or the first one after it) in `bytes`, whole
/// batches from a log read.
pub fn record_timestamp(bytes: Bytes, offset: Offset) -> Option<i64> {
    for batch in Batches::new(bytes) {
        let batch = batch.ok()?;
        let header = *batch.header();
        if header.last_offset() < offset {
            continue;
        }
        if header.is_log_append_time() {
            return Some(header.max_timestamp);
        }
        // A cleaned batch's `baseTimestamp` may be its delete horizon (KIP-534) instead of
        // its first record's timestamp: then only its max timestamp is in the header.
        let dated = header.delete_horizon().is_some();
        let first = if dated {
            header.max_timestamp
        } else {
            header.base_timestamp
        };
        if header.base_offset >= offset && !dated {
            return Some(first);
        }
        // Inside the batch (or under a delete horizon): its own record, when the records
        // can be read (uncompressed), else the header's timestamp found above.
        let exact = batch.records().ok().and_then(|records| {
            records
                .filter_map(Result::ok)
                .find(|r| r.offset >= offset)
                .map(|r| r.timestamp)
        });
        return Some(exact.unwrap_or(first));
    }
    None
}
