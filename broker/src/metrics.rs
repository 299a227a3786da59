//! The broker's event metrics: counters and histograms that the request path, the
//! connections, replication and storage's group commit move as things happen (records and
//! bytes in and out per topic, requests, errors and their latency per api, fsyncs,
//! connections, ISR changes). They are `prometheus-client` metrics, shared by `Arc`.
//!
//! What describes *state* (partitions led, under-replicated or offline, log sizes, consumer
//! lag, the controller's term) is not kept here: `http` computes it from the broker at
//! each scrape, so it can never drift from the truth.
//!
//! Architecture invariant: this module imports nothing of the broker; everything that
//! counts calls it, never the other way round. Storage does not know it either: it
//! reports fsyncs through its own `FlushObserver` seam, which [`Metrics`] implements.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sluice_protocol::ErrorCode;
use sluice_storage::FlushObserver;

/// Labels of a per-topic metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// The topic.
    pub topic: String,
}

/// Labels of a per-api metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The api, in snake case (`produce`, `fetch`, `join_group`...), the same name for
    /// both listeners.
    pub api: &'static str,
}

/// Labels of an error count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The api.
    pub api: &'static str,
    /// The error code's name as Kafka spells it (`NOT_LEADER_OR_FOLLOWER`...).
    pub error_code: &'static str,
}

/// Labels of a per-listener metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `native` or `kafka`.
    pub listener: &'static str,
}

/// Labels of an authorization denial.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// The operation (`read`, `write`...).
    pub operation: &'static str,
    /// `topic`, `group` or `cluster`.
    pub resource_type: &'static str,
}

/// Labels of a client throttled for its quota.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    /// `producer_byte_rate` or `consumer_byte_rate`.
    pub quota: &'static str,
}

/// Labels of a failed login.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MechanismLabels {
    /// `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN`.
    pub mechanism: &'static str,
}

/// Request latency buckets: 100 µs to ~52 s, doubling.
fn request_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 20)
}

/// Records per group commit: 1 to ~500k, times 4.
fn records_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 4.0, 10)
}

/// Every event metric of one broker.
#[derive(Debug)]
pub struct Metrics {
    produced_records: Family<TopicLabels, Counter>,
    produced_bytes: Family<TopicLabels, Counter>,
    fetched_records: Family<TopicLabels, Counter>,
    fetched_bytes: Family<TopicLabels, Counter>,
    requests: Family<ApiLabels, Counter>,
    request_errors: Family<ErrorLabels, Counter>,
    request_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    fsync_duration: Histogram,
    fsync_records: Histogram,
    connections_open: Family<ListenerLabels, Gauge>,
    connections_accepted: Family<ListenerLabels, Counter>,
    isr_shrinks: Counter,
    isr_expands: Counter,
    denials: Family<DenialLabels, Counter>,
    failed_logins: Family<MechanismLabels, Counter>,
    throttles: Family<QuotaLabels, Counter>,
    throttle_ms: Family<QuotaLabels, Counter>,
    cleaner_runs: Counter,
    cleaner_records_removed: Counter,
    cleaner_bytes_read: Counter,
    cleaner_bytes_reclaimed: Counter,
    cleaner_duration: Histogram,
    cleaner_swap_duration: Histogram,
    /// `false` when nothing can read the metrics (the broker has no HTTP listener): every
    /// event is then ignored, so a broker without `/metrics` pays nothing for them.
    enabled: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            produced_records: Family::default(),
            produced_bytes: Family::default(),
            fetched_records: Family::default(),
            fetched_bytes: Family::default(),
            requests: Family::default(),
            request_errors: Family::default(),
            request_duration: Family::new_with_constructor(|| Histogram::new(request_buckets())),
            fsync_duration: Histogram::new(request_buckets()),
            fsync_records: Histogram::new(records_buckets()),
            connections_open: Family::default(),
            connections_accepted: Family::default(),
            isr_shrinks: Counter::default(),
            isr_expands: Counter::default(),
            denials: Family::default(),
            failed_logins: Family::default(),
            throttles: Family::default(),
            throttle_ms: Family::default(),
            cleaner_runs: Counter::default(),
            cleaner_records_removed: Counter::default(),
            cleaner_bytes_read: Counter::default(),
            cleaner_bytes_reclaimed: Counter::default(),
            cleaner_duration: Histogram::new(request_buckets()),
            cleaner_swap_duration: Histogram::new(request_buckets()),
            enabled: true,
        }
    }
}

impl Metrics {
    /// A fresh set, every counter at zero.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// A set that counts nothing: for a broker without an HTTP listener, where no one
    /// could read them.
    pub fn disabled() -> Arc<Metrics> {
        Arc::new(Metrics {
            enabled: false,
            ..Metrics::default()
        })
    }

    /// Whether events are counted.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Registers every metric in `registry` (the names are the exported ones; a counter's
    /// `_total` suffix is added by the encoder).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_produced_records",
            "Records appended by producers, per topic (a recognised idempotent resend is not \
             counted again)",
            self.produced_records.clone(),
        );
        registry.register(
            "sluice_produced_bytes",
            "Record batch bytes appended by producers, per topic",
            self.produced_bytes.clone(),
        );
        registry.register(
            "sluice_fetched_records",
            "Records returned to consumers at or after their fetch offsets, per topic",
            self.fetched_records.clone(),
        );
        registry.register(
            "sluice_fetched_bytes",
            "Record batch bytes returned to consumers, per topic",
            self.fetched_bytes.clone(),
        );
        registry.register(
            "sluice_requests",
            "Requests served, per api (both listeners)",
            self.requests.clone(),
        );
        registry.register(
            "sluice_request_errors",
            "Errors answered, per api and error code (per partition where the api has \
             partitions), as the services decide them",
            self.request_errors.clone(),
        );
        registry.register(
            "sluice_request_duration_seconds",
            "Time from a request's decoding to its answer, per api",
            self.request_duration.clone(),
        );
        registry.register(
            "sluice_fsync_duration_seconds",
            "Duration of each group-commit fsync of a partition log",
            self.fsync_duration.clone(),
        );
        registry.register(
            "sluice_fsync_records",
            "Records made durable by one group-commit fsync",
            self.fsync_records.clone(),
        );
        registry.register(
            "sluice_connections",
            "Client connections open, per listener",
            self.connections_open.clone(),
        );
        registry.register(
            "sluice_connections_accepted",
            "Client connections accepted, per listener",
            self.connections_accepted.clone(),
        );
        registry.register(
            "sluice_isr_shrinks",
            "ISR shrinks of partitions led here, committed by the controller",
            self.isr_shrinks.clone(),
        );
        registry.register(
            "sluice_authorization_denials",
            "Requests (or parts of them) the ACLs denied, per operation and resource type",
            self.denials.clone(),
        );
        registry.register(
            "sluice_quota_throttles",
            "Answers after which a client over its quota was held back, per quota",
            self.throttles.clone(),
        );
        registry.register(
            "sluice_quota_throttle_time_ms",
            "Milliseconds clients over their quotas were held back for, per quota",
            self.throttle_ms.clone(),
        );
        registry.register(
            "sluice_authentication_failures",
            "SASL logins refused, per mechanism",
            self.failed_logins.clone(),
        );
        registry.register(
            "sluice_log_cleaner_runs",
            "Log cleaner runs that swapped cleaned segments into a compacted log",
            self.cleaner_runs.clone(),
        );
        registry.register(
            "sluice_log_cleaner_records_removed",
            "Records the log cleaner removed (superseded by a later record of their key, or \
             tombstones past delete.retention.ms)",
            self.cleaner_records_removed.clone(),
        );
        registry.register(
            "sluice_log_cleaner_bytes_read",
            "Segment bytes the log cleaner read (within log_cleaner_io_bytes_per_sec)",
            self.cleaner_bytes_read.clone(),
        );
        registry.register(
            "sluice_log_cleaner_bytes_reclaimed",
            "Disk bytes the log cleaner freed (segment bytes before minus after)",
            self.cleaner_bytes_reclaimed.clone(),
        );
        registry.register(
            "sluice_log_cleaner_run_duration_seconds",
            "Duration of each log cleaner run over one partition (throttling included)",
            self.cleaner_duration.clone(),
        );
        registry.register(
            "sluice_log_cleaner_swap_duration_seconds",
            "How long each swap of cleaned segments held its log (appends to the partition \
             wait meanwhile)",
            self.cleaner_swap_duration.clone(),
        );
        registry.register(
            "sluice_isr_expands",
            "ISR expansions of partitions led here, committed by the controller",
            self.isr_expands.clone(),
        );
    }

    /// A producer's batches were appended to a partition of `topic`.
    pub fn produced(&self, topic: &str, records: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        self.produced_records.get_or_create(&labels).inc_by(records);
        self.produced_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// A consumer was answered `records` records (`bytes` bytes of batches) of `topic`.
    pub fn fetched(&self, topic: &str, records: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        let labels = TopicLabels {
            topic: topic.to_owned(),
        };
        self.fetched_records.get_or_create(&labels).inc_by(records);
        self.fetched_bytes.get_or_create(&labels).inc_by(bytes);
    }

    /// A request of `api` was answered after `elapsed`.
    pub fn request(&self, api: &'static str, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let labels = ApiLabels { api };
        self.requests.get_or_create(&labels).inc();
        self.request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A request of `api` (or one partition of it) was answered with `code`.
    pub fn error(&self, api: &'static str, code: ErrorCode) {
        if code == ErrorCode::None || !self.enabled {
            return;
        }
        let labels = ErrorLabels {
            api,
            error_code: code.name(),
        };
        self.request_errors.get_or_create(&labels).inc();
    }

    /// A connection of `listener` opened; the guard closes it in the gauge when dropped.
    pub fn connection_opened(self: &Arc<Self>, listener: &'static str) -> ConnectionGuard {
        let labels = ListenerLabels { listener };
        if self.enabled {
            self.connections_accepted.get_or_create(&labels).inc();
            self.connections_open.get_or_create(&labels).inc();
        }
        ConnectionGuard {
            metrics: Arc::clone(self),
            listener,
        }
    }

    /// The authorizer denied `operation` on a resource of `resource_type`.
    pub fn denied(&self, operation: &'static str, resource_type: &'static str) {
        if self.enabled {
            let labels = DenialLabels {
                operation,
                resource_type,
            };
            self.denials.get_or_create(&labels).inc();
        }
    }

    /// A client over its `quota` is held back for `wait`.
    pub fn throttled(&self, quota: &'static str, wait: std::time::Duration) {
        if self.enabled {
            let labels = QuotaLabels { quota };
            self.throttles.get_or_create(&labels).inc();
            self.throttle_ms
                .get_or_create(&labels)
                .inc_by(wait.as_millis().try_into().unwrap_or(u64::MAX));
        }
    }

    /// A SASL login by `mechanism` was refused.
    pub fn login_failed(&self, mechanism: &'static str) {
        if self.enabled {
            let labels = MechanismLabels { mechanism };
            self.failed_logins.get_or_create(&labels).inc();
        }
    }

    /// The log cleaner ran over one partition for `elapsed`, and swapped its result in
    /// when `report.swapped`.
    pub fn cleaned(&self, report: &sluice_storage::CleanReport, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        self.cleaner_duration.observe(elapsed.as_secs_f64());
        self.cleaner_bytes_read.inc_by(report.bytes_read);
        if report.swapped {
            self.cleaner_swap_duration
                .observe(report.swap_micros as f64 / 1e6);
            self.cleaner_runs.inc();
            self.cleaner_records_removed.inc_by(report.records_removed);
            self.cleaner_bytes_reclaimed
                .inc_by(report.bytes_before.saturating_sub(report.bytes_after));
        }
    }

    /// The controller committed an ISR change of a partition led here, from `before` to
    /// `after` members.
    pub fn isr_changed(&self, before: usize, after: usize) {
        if !self.enabled {
            return;
        }
        if after < before {
            self.isr_shrinks.inc();
        } else if after > before {
            self.isr_expands.inc();
        }
    }
}

impl FlushObserver for Metrics {
    fn flushed(&self, elapsed: Duration, records: u64) {
        if !self.enabled {
            return;
        }
        self.fsync_duration.observe(elapsed.as_secs_f64());
        self.fsync_records.observe(records as f64);
    }
}

/// Keeps a connection counted as open until dropped.
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    listener: &'static str,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if !self.metrics.enabled {
            return;
        }
        let labels = ListenerLabels {
            listener: self.listener,
        };
        self.metrics.connections_open.get_or_create(&labels).dec();
    }
}

/// The metrics labels of a protocol's api keys, made once: `'static` names, so counting a
/// request allocates nothing.
#[derive(Debug, Default)]
pub struct ApiNames {
    names: std::collections::HashMap<i16, &'static str>,
}

impl ApiNames {
    /// The labels of `apis` (key, type name), each name in snake case. The names are
    /// leaked once per protocol: a bounded set (the apis a build knows).
    pub fn new(apis: impl IntoIterator<Item = (i16, String)>) -> ApiNames {
        ApiNames {
            names: apis
                .into_iter()
                .map(|(key, name)| (key, &*Box::leak(snake_case(&name).into_boxed_str())))
                .collect(),
        }
    }

    /// The label of the api whose key starts `payload`, `unknown` for any other.
    pub fn of_payload(&self, payload: &[u8]) -> &'static str {
        payload
            .get(..2)
            .map(|key| i16::from_be_bytes([key[0], key[1]]))
            .and_then(|key| self.names.get(&key).copied())
            .unwrap_or("unknown")
    }
}

/// `JoinGroup` -> `join_group`: an api's label from its type name.
pub fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_are_snake_case() {
        assert_eq!(snake_case("JoinGroup"), "join_group");
        assert_eq!(snake_case("Produce"), "produce");
    }

    #[test]
    fn a_disabled_set_counts_nothing() {
        let metrics = Metrics::disabled();
        metrics.produced("orders", 3, 120);
        metrics.request("produce", Duration::from_millis(2));
        metrics.error("produce", ErrorCode::NotLeaderOrFollower);
        metrics.flushed(Duration::from_millis(1), 3);
        drop(metrics.connection_opened("native"));
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(!text.contains("orders"), "{text}");
        assert!(!text.contains("api=\"produce\""), "{text}");
        assert!(!text.contains("listener="), "{text}");
        assert!(text.contains("sluice_fsync_records_count 0"), "{text}");
    }

    #[test]
    fn counters_encode_with_total_suffix() {
        let metrics = Metrics::new();
        metrics.produced("orders", 3, 120);
        metrics.request("produce", Duration::from_millis(2));
        metrics.error("produce", ErrorCode::NotLeaderOrFollower);
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("sluice_produced_records_total{topic=\"orders\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sluice_produced_bytes_total{topic=\"orders\"} 120"),
            "{text}"
        );
        assert!(
            text.contains("sluice_request_duration_seconds_count{api=\"produce\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "sluice_request_errors_total{api=\"produce\",error_code=\"NOT_LEADER_OR_FOLLOWER\"} 1"
            ),
            "{text}"
        );
    }
}
