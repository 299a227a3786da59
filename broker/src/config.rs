//! Broker configuration (DESIGN §7): defaults, then an optional TOML file (`--config`), then
//! `SLUICE_*` environment variables, then flags; later sources win. Every key has the same
//! name in all three places: `data_dir` in TOML, `SLUICE_DATA_DIR` in the environment,
//! `--data-dir` as a flag.
//!
//! Why one flat struct rather than nested sections: the keys are few, and a flat namespace
//! maps one-to-one onto environment variables and flags, so a user never has to guess how a
//! TOML path is spelled elsewhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};
use sluice_protocol::BrokerId;
use sluice_storage::Durability;

use crate::error::BrokerError;

/// Most partitions one topic may have: each active segment preallocates its index files.
pub const PARTITIONS_MAX: i32 = 1024;

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokerConfig {
    /// This node's id in the cluster.
    pub node_id: BrokerId,
    /// Address the native listener binds to.
    pub listen: SocketAddr,
    /// Address clients are told to connect to; `listen` when unset.
    pub advertise: String,
    /// Address the Kafka-protocol listener binds to; `None` turns it off.
    pub kafka_listen: Option<SocketAddr>,
    /// Whether `kafka_listen` was set rather than defaulted: an explicit address that
    /// cannot be bound stops the broker; the default one (127.0.0.1:9092, which a second
    /// broker on the same host finds taken) only turns the Kafka listener off, with a
    /// warning.
    pub kafka_listen_explicit: bool,
    /// Address Kafka clients are told to connect to; `kafka_listen` when unset.
    pub kafka_advertise: Option<String>,
    /// The rack (or availability zone) of this broker (Kafka's `broker.rack`): when every
    /// broker has one, each partition's replicas are placed on as many racks as there are.
    pub rack: Option<String>,
    /// Address the HTTP admin listener (`/metrics`, `/health`, `/ready`) binds to; `None`
    /// turns it off.
    pub http_listen: Option<SocketAddr>,
    /// Whether `http_listen` was set rather than defaulted: as with `kafka_listen`, an
    /// explicit address that cannot be bound stops the broker, the default one
    /// (127.0.0.1:9644, which a second broker on the same host finds taken) only turns
    /// the HTTP listener off, with a warning.
    pub http_listen_explicit: bool,
    /// Whether a Kafka client's Metadata request that allows it creates a missing topic
    /// with the broker's defaults (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Directory of the node's data: topics, metadata.
    pub data_dir: PathBuf,
    /// The controller quorum: node ids and addresses. A single-node cluster by default.
    pub voters: Vec<Voter>,
    /// Largest request frame accepted, in bytes.
    pub max_frame_bytes: u32,
    /// Connections served at once; further clients wait in the accept queue.
    pub max_connections: u32,
    /// Requests of one connection being served at once (pipelining depth).
    pub max_in_flight_per_connection: u32,
    /// `fsync` (acknowledge only what is on disk) or `replicated` (flush in the background).
    pub durability: DurabilityMode,
    /// Background flush interval in `replicated` durability.
    pub flush_interval_ms: u64,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// Replication factor of a topic created without one.
    pub default_replication_factor: u16,
    /// Default `segment.bytes` of topics.
    pub segment_bytes: u32,
    /// Default `retention.ms` of topics; -1 keeps data forever.
    pub retention_ms: i64,
    /// Default `retention.bytes` of topics; -1 means no size limit.
    pub retention_bytes: i64,
    /// Default `min.insync.replicas` of topics.
    pub min_insync_replicas: u16,
    /// How often retention runs over every partition.
    pub retention_check_interval_ms: u64,
    /// How often recovery points are checkpointed, bounding the rescan after a crash.
    pub checkpoint_interval_ms: u64,
    /// How long a graceful shutdown waits for in-flight requests before closing the logs.
    pub shutdown_timeout_ms: u64,
    /// How often a broker heartbeats the active controller.
    pub heartbeat_interval_ms: u64,
    /// A broker that has not heartbeated for this long is fenced and loses its leaderships.
    pub broker_session_timeout_ms: u64,
    /// A follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// How often the active controller moves leaderships back to the preferred replicas
    /// of brokers that lead too few of theirs (Kafka's automatic leader rebalance); 0 never.
    pub leader_imbalance_check_interval_ms: u64,
    /// Partitions of `__consumer_offsets` when it is created (the group coordinators).
    pub offsets_topic_partitions: u32,
    /// `segment.bytes` of `__consumer_offsets` when it is created (Kafka's
    /// `offsets.topic.segment.bytes`): the cleaner compacts only sealed segments, so this
    /// bounds what a busy group's commits grow to between cleanings.
    pub offsets_topic_segment_bytes: u32,
    /// How often the log cleaner looks for compacted partitions to clean (Kafka's
    /// `log.cleaner.backoff.ms`).
    pub log_cleaner_interval_ms: u64,
    /// The log cleaner's I/O budget in bytes per second, reads and writes together
    /// (Kafka's `log.cleaner.io.max.bytes.per.second`); 0 = unlimited.
    pub log_cleaner_io_bytes_per_sec: u64,
    /// Memory for the cleaner's map of keys to their latest offsets (Kafka's
    /// `log.cleaner.dedupe.buffer.size`); a log with more keys is cleaned over several runs.
    pub log_cleaner_dedupe_buffer_bytes: u64,
    /// How long a new group waits for more members before its first rebalance completes.
    pub group_initial_rebalance_delay_ms: u64,
    /// Shortest session timeout a consumer may ask for.
    pub group_min_session_timeout_ms: u64,
    /// Longest session timeout a consumer may ask for.
    pub group_max_session_timeout_ms: u64,
    /// The SASL mechanisms clients must log in with; empty (the default): no
    /// authentication, every connection is `User:ANONYMOUS`.
    pub sasl_mechanisms: Vec<SaslMechanism>,
    /// Whether PLAIN (which sends the password itself) is accepted on connections without
    /// TLS. Off by default.
    pub sasl_plain_without_tls: bool,
    /// Whether ACLs are enforced (`--authorizer on`); off by default: everything allowed.
    pub authorizer: bool,
    /// Principals allowed everything whatever the ACLs say (`User:admin`).
    pub superusers: Vec<String>,
    /// A testing aid: the address to dial instead when this broker connects to broker N
    /// (by its voter address or its advertised listener), so a fault-injecting proxy can
    /// sit on each directed link. Empty in production.
    pub peer_overrides: Vec<PeerOverride>,
    /// PEM certificate chain of this broker's TLS listeners (and of its inter-broker
    /// connections when the peers require client certificates).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must be signed by: when set, the TLS
    /// listeners require and verify client certificates (mutual TLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// PEM CA certificates that signed the other brokers' certificates: what this broker
    /// verifies a peer against when it dials it with TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Whether the native listener serves TLS (default: when a certificate is set).
    pub native_tls: bool,
    /// Whether the Kafka listener serves TLS (default: when a certificate is set).
    pub kafka_tls: bool,
    /// Whether this broker dials its peers with TLS. Brokers reach each other on the
    /// native listener, so it equals `native_tls` (a contradiction is refused at start).
    pub inter_broker_tls: bool,
    /// The TLS material loaded from the files above at start (`tls::load`); never logged.
    #[serde(skip)]
    pub tls: crate::tls::Loaded,
}

/// A SASL mechanism a listener may offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SaslMechanism {
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    Scram(#[serde(serialize_with = "mechanism_name")] sluice_protocol::scram::Mechanism),
    /// PLAIN: the password itself, checked against the user's SCRAM credential.
    Plain,
}

fn mechanism_name<S: serde::Serializer>(
    m: &sluice_protocol::scram::Mechanism,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

impl SaslMechanism {
    /// Every mechanism sluice has.
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Scram(sluice_protocol::scram::Mechanism::Sha256),
        SaslMechanism::Scram(sluice_protocol::scram::Mechanism::Sha512),
        SaslMechanism::Plain,
    ];

    /// The IANA name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Scram(m) => m.name(),
            SaslMechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

/// One member of the controller quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Voter {
    /// The voter's node id.
    pub id: BrokerId,
    /// Its native listener address.
    pub address: String,
}

/// Where this broker dials another one instead of the address the voters or the metadata
/// give (`peer_overrides`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerOverride {
    /// The other broker's node id.
    pub id: BrokerId,
    /// The `HOST:PORT` dialled instead of its own address.
    pub address: String,
}

/// The `durability` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Acknowledge only data that is fsynced (group commit). The default.
    Fsync,
    /// Acknowledge on replication; each log is fsynced in the background, one fsync at a
    /// time, once per 4 MiB appended, and every `flush_interval_ms` at the latest.
    Replicated,
}

impl BrokerConfig {
    /// The address Kafka clients are told to connect to, when the Kafka listener is on.
    pub fn kafka_advertised(&self) -> Option<String> {
        let listen = self.kafka_listen?;
        Some(
            self.kafka_advertise
                .clone()
                .unwrap_or_else(|| listen.to_string()),
        )
    }

    /// This broker's settings under the names of their Kafka broker configs, for a Kafka
    /// client's DescribeConfigs of a broker (admin consoles show them); read-only, since
    /// they are flags and the config file. Only settings with a Kafka equivalent.
    pub fn kafka_broker_configs(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "auto.create.topics.enable",
                self.auto_create_topics.to_string(),
            ),
            (
                "auto.leader.rebalance.enable",
                (self.leader_imbalance_check_interval_ms > 0).to_string(),
            ),
            ("broker.id", self.node_id.to_string()),
            ("broker.rack", self.rack.clone().unwrap_or_default()),
            (
                "broker.session.timeout.ms",
                self.broker_session_timeout_ms.to_string(),
            ),
            ("compression.type", "producer".to_string()),
            (
                "default.replication.factor",
                self.default_replication_factor.to_string(),
            ),
            (
                "group.initial.rebalance.delay.ms",
                self.group_initial_rebalance_delay_ms.to_string(),
            ),
            (
                "group.max.session.timeout.ms",
                self.group_max_session_timeout_ms.to_string(),
            ),
            (
                "group.min.session.timeout.ms",
                self.group_min_session_timeout_ms.to_string(),
            ),
            (
                "leader.imbalance.check.interval.seconds",
                (self.leader_imbalance_check_interval_ms / 1000).to_string(),
            ),
            (
                "log.cleaner.backoff.ms",
                self.log_cleaner_interval_ms.to_string(),
            ),
            (
                "log.retention.check.interval.ms",
                self.retention_check_interval_ms.to_string(),
            ),
            ("log.retention.bytes", self.retention_bytes.to_string()),
            ("log.retention.ms", self.retention_ms.to_string()),
            ("log.segment.bytes", self.segment_bytes.to_string()),
            ("message.max.bytes", self.max_frame_bytes.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            ("node.id", self.node_id.to_string()),
            ("num.partitions", self.default_partitions.to_string()),
            (
                "offsets.topic.num.partitions",
                self.offsets_topic_partitions.to_string(),
            ),
            (
                "offsets.topic.segment.bytes",
                self.offsets_topic_segment_bytes.to_string(),
            ),
            (
                "replica.lag.time.max.ms",
                self.replica_lag_time_max_ms.to_string(),
            ),
            ("socket.request.max.bytes", self.max_frame_bytes.to_string()),
            ("unclean.leader.election.enable", "false".to_string()),
        ]
    }

    /// The storage durability of this configuration.
    pub fn storage_durability(&self) -> Durability {
        match self.durability {
            DurabilityMode::Fsync => Durability::Fsync,
            DurabilityMode::Replicated => Durability::Replicated {
                flush_interval_ms: self.flush_interval_ms,
            },
        }
    }

    /// Retention check period.
    pub fn retention_check_interval(&self) -> Duration {
        Duration::from_millis(self.retention_check_interval_ms.max(1))
    }

    /// Checkpoint period.
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms.max(1))
    }

    /// How often the log cleaner runs.
    pub fn log_cleaner_interval(&self) -> Duration {
        Duration::from_millis(self.log_cleaner_interval_ms.max(1))
    }

    /// The period of the automatic leader rebalance, or `None` when it is off.
    pub fn leader_imbalance_check_interval(&self) -> Option<Duration> {
        (self.leader_imbalance_check_interval_ms > 0)
            .then(|| Duration::from_millis(self.leader_imbalance_check_interval_ms))
    }

    /// Heartbeat period.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    /// Broker session timeout.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.broker_session_timeout_ms.max(1))
    }

    /// Replica lag allowed in the ISR.
    pub fn replica_lag_time_max(&self) -> Duration {
        Duration::from_millis(self.replica_lag_time_max_ms.max(1))
    }

    /// Whether this node is a voter of the controller quorum.
    pub fn is_voter(&self) -> bool {
        self.voters.iter().any(|v| v.id == self.node_id)
    }
}

impl Default for BrokerConfig {
    /// The embedded default a newcomer gets: node 1 on 127.0.0.1:9700, data in
    /// `./sluice-data`, a one-node cluster, fsync durability.
    fn default() -> Self {
        let listen: SocketAddr = ([127, 0, 0, 1], 9700).into();
        BrokerConfig {
            node_id: BrokerId(1),
            listen,
            advertise: listen.to_string(),
            kafka_listen: Some(([127, 0, 0, 1], 9092).into()),
            kafka_listen_explicit: false,
            kafka_advertise: None,
            rack: None,
            http_listen: Some(([127, 0, 0, 1], 9644).into()),
            http_listen_explicit: false,
            auto_create_topics: true,
            sasl_mechanisms: Vec::new(),
            sasl_plain_without_tls: false,
            authorizer: false,
            superusers: Vec::new(),
            data_dir: PathBuf::from("sluice-data"),
            voters: vec![Voter {
                id: BrokerId(1),
                address: listen.to_string(),
            }],
            max_frame_bytes: sluice_protocol::frame::DEFAULT_MAX_FRAME_BYTES,
            max_connections: 1024,
            max_in_flight_per_connection: 32,
            durability: DurabilityMode::Fsync,
            flush_interval_ms: 1000,
            default_partitions: 1,
            default_replication_factor: 1,
            segment_bytes: 1 << 30,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            min_insync_replicas: 1,
            retention_check_interval_ms: 5 * 60 * 1000,
            checkpoint_interval_ms: 60 * 1000,
            shutdown_timeout_ms: 10_000,
            heartbeat_interval_ms: 200,
            broker_session_timeout_ms: 1000,
            replica_lag_time_max_ms: 10_000,
            leader_imbalance_check_interval_ms: 300_000,
            offsets_topic_partitions: 16,
            offsets_topic_segment_bytes: 100 << 20,
            log_cleaner_interval_ms: 15_000,
            log_cleaner_io_bytes_per_sec: 32 << 20,
            log_cleaner_dedupe_buffer_bytes: 64 << 20,
            group_initial_rebalance_delay_ms: 500,
            group_min_session_timeout_ms: 1000,
            group_max_session_timeout_ms: 30 * 60 * 1000,
            peer_overrides: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_ca_file: None,
            native_tls: false,
            kafka_tls: false,
            inter_broker_tls: false,
            tls: crate::tls::Loaded::default(),
        }
    }
}

/// Settings from any one source; `None` leaves the value of an earlier source.
///
/// The same struct is the TOML file's schema and, through clap, the flags and `SLUICE_*`
/// environment variables (clap reads a flag first, then its variable).
#[derive(Clone, Debug, Default, Deserialize, Parser)]
#[serde(deny_unknown_fields)]
#[command(
    name = "sluice-broker",
    version,
    about = "The sluice broker: a replicated, partitioned log.",
    long_about = "The sluice broker: a replicated, partitioned log.\n\nWith no arguments it \
                  runs a single-node cluster on 127.0.0.1:9700 with data in ./sluice-data.\n\
                  Settings come from defaults, then --config FILE (TOML, same key names with \
                  underscores), then SLUICE_* environment variables, then flags."
)]
pub struct ConfigLayer {
    /// TOML configuration file (keys as the flags, with underscores: data_dir = "...").
    #[arg(long, env = "SLUICE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id.
    #[arg(long, env = "SLUICE_NODE_ID")]
    pub node_id: Option<i32>,
    /// Address to listen on for clients and other brokers.
    #[arg(long, env = "SLUICE_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Address advertised to clients (default: the listen address).
    #[arg(long, env = "SLUICE_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Address of the Kafka-protocol listener, or `off` (default 127.0.0.1:9092).
    #[arg(long, env = "SLUICE_KAFKA_LISTEN", value_name = "HOST:PORT|off")]
    pub kafka_listen: Option<String>,
    /// Address advertised to Kafka clients (default: the Kafka listen address).
    #[arg(long, env = "SLUICE_KAFKA_ADVERTISE", value_name = "HOST:PORT")]
    pub kafka_advertise: Option<String>,
    /// This broker's rack or availability zone: with one on every broker, a partition's
    /// replicas go to distinct racks (default: none).
    #[arg(long, env = "SLUICE_RACK", value_name = "NAME")]
    pub rack: Option<String>,
    /// Address of the HTTP admin listener (/metrics, /health, /ready), or `off` (default
    /// 127.0.0.1:9644).
    #[arg(long, env = "SLUICE_HTTP_LISTEN", value_name = "HOST:PORT|off")]
    pub http_listen: Option<String>,
    /// Whether Kafka clients' Metadata requests create missing topics (default true).
    #[arg(long, env = "SLUICE_AUTO_CREATE_TOPICS", value_name = "true|false")]
    pub auto_create_topics: Option<bool>,
    /// SASL mechanisms clients must log in with, comma-separated (SCRAM-SHA-256,
    /// SCRAM-SHA-512, PLAIN); authentication is on when set. Users: `sluice user create`.
    #[arg(long, env = "SLUICE_SASL_MECHANISMS", value_name = "M,...")]
    pub sasl_mechanisms: Option<String>,
    /// Accept PLAIN logins (the password itself) on connections without TLS (default false).
    #[arg(long, env = "SLUICE_SASL_PLAIN_WITHOUT_TLS", value_name = "true|false")]
    pub sasl_plain_without_tls: Option<bool>,
    /// Enforce ACLs (`on`), or allow everything (`off`, the default). Manage ACLs with
    /// `sluice acl`.
    #[arg(long, env = "SLUICE_AUTHORIZER", value_name = "on|off")]
    pub authorizer: Option<String>,
    /// Principals allowed everything, comma-separated: User:NAME,...
    #[arg(long, env = "SLUICE_SUPERUSERS", value_name = "User:NAME,...")]
    pub superusers: Option<String>,
    /// Data directory.
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The controller quorum, the same on every node: ID@HOST:PORT,ID@HOST:PORT,...
    #[arg(long, env = "SLUICE_VOTERS", value_name = "ID@HOST:PORT,...")]
    pub voters: Option<String>,
    /// Largest request frame accepted, in bytes.
    #[arg(long, env = "SLUICE_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<u32>,
    /// Connections served at once.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Requests of one connection served at once.
    #[arg(long, env = "SLUICE_MAX_IN_FLIGHT_PER_CONNECTION")]
    pub max_in_flight_per_connection: Option<u32>,
    /// fsync: acknowledge only what is on disk; replicated: flush in the background.
    #[arg(long, env = "SLUICE_DURABILITY", value_enum)]
    pub durability: Option<DurabilityMode>,
    /// Background flush period in replicated durability, in ms (each partition is also
    /// fsynced in the background once per 4 MiB appended).
    #[arg(long, env = "SLUICE_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Partitions of a topic created without a count.
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// Replication factor of a topic created without one.
    #[arg(long, env = "SLUICE_DEFAULT_REPLICATION_FACTOR")]
    pub default_replication_factor: Option<u16>,
    /// Default segment.bytes of topics.
    #[arg(long, env = "SLUICE_SEGMENT_BYTES")]
    pub segment_bytes: Option<u32>,
    /// Default retention.ms of topics (-1: forever).
    #[arg(long, env = "SLUICE_RETENTION_MS", allow_negative_numbers = true)]
    pub retention_ms: Option<i64>,
    /// Default retention.bytes of topics (-1: no limit).
    #[arg(long, env = "SLUICE_RETENTION_BYTES", allow_negative_numbers = true)]
    pub retention_bytes: Option<i64>,
    /// Default min.insync.replicas of topics.
    #[arg(long, env = "SLUICE_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<u16>,
    /// How often retention runs, in ms.
    #[arg(long, env = "SLUICE_RETENTION_CHECK_INTERVAL_MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// How often recovery points are checkpointed, in ms.
    #[arg(long, env = "SLUICE_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// How long a graceful shutdown waits for in-flight requests, in ms.
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT_MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// How often a broker heartbeats the active controller, in ms.
    #[arg(long, env = "SLUICE_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// A broker silent for this long is fenced and loses its leaderships, in ms.
    #[arg(long, env = "SLUICE_BROKER_SESSION_TIMEOUT_MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// A follower not caught up for this long leaves the ISR, in ms.
    #[arg(long, env = "SLUICE_REPLICA_LAG_TIME_MAX_MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// How often leaderships move back to preferred replicas, in ms (0: never).
    #[arg(long, env = "SLUICE_LEADER_IMBALANCE_CHECK_INTERVAL_MS")]
    pub leader_imbalance_check_interval_ms: Option<u64>,
    /// Partitions of __consumer_offsets when it is created.
    #[arg(long, env = "SLUICE_OFFSETS_TOPIC_PARTITIONS")]
    pub offsets_topic_partitions: Option<u32>,
    /// segment.bytes of __consumer_offsets when it is created.
    #[arg(long, env = "SLUICE_OFFSETS_TOPIC_SEGMENT_BYTES")]
    pub offsets_topic_segment_bytes: Option<u32>,
    /// How often the log cleaner looks for compacted partitions to clean, in ms.
    #[arg(long, env = "SLUICE_LOG_CLEANER_INTERVAL_MS")]
    pub log_cleaner_interval_ms: Option<u64>,
    /// The log cleaner's I/O budget in bytes per second (0: unlimited).
    #[arg(long, env = "SLUICE_LOG_CLEANER_IO_BYTES_PER_SEC")]
    pub log_cleaner_io_bytes_per_sec: Option<u64>,
    /// Memory for the log cleaner's key map, in bytes.
    #[arg(long, env = "SLUICE_LOG_CLEANER_DEDUPE_BUFFER_BYTES")]
    pub log_cleaner_dedupe_buffer_bytes: Option<u64>,
    /// How long a new consumer group waits for more members before its first rebalance, in ms.
    #[arg(long, env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Shortest consumer session timeout allowed, in ms.
    #[arg(long, env = "SLUICE_GROUP_MIN_SESSION_TIMEOUT_MS")]
    pub group_min_session_timeout_ms: Option<u64>,
    /// Longest consumer session timeout allowed, in ms.
    #[arg(long, env = "SLUICE_GROUP_MAX_SESSION_TIMEOUT_MS")]
    pub group_max_session_timeout_ms: Option<u64>,
    /// Testing aid: dial these addresses instead of the brokers' own (ID@HOST:PORT,...).
    #[arg(long, env = "SLUICE_PEER_OVERRIDES", value_name = "ID@HOST:PORT,...")]
    pub peer_overrides: Option<String>,
    /// PEM certificate (chain) of this broker: TLS on the client listeners when set (with
    /// --tls-key-file).
    #[arg(long, env = "SLUICE_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "SLUICE_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: require client certificates signed by them (mutual TLS).
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA_FILE", value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// PEM CA certificates that signed the other brokers' certificates (inter-broker TLS
    /// verifies peers against them).
    #[arg(long, env = "SLUICE_TLS_CA_FILE", value_name = "FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Whether the native listener serves TLS (default: true when --tls-cert-file is set).
    #[arg(long, env = "SLUICE_NATIVE_TLS", value_name = "true|false")]
    pub native_tls: Option<bool>,
    /// Whether the Kafka listener serves TLS (default: true when --tls-cert-file is set).
    #[arg(long, env = "SLUICE_KAFKA_TLS", value_name = "true|false")]
    pub kafka_tls: Option<bool>,
    /// Whether brokers dial each other with TLS; they meet on the native listener, so this
    /// must match its TLS (default: the native listener's).
    #[arg(long, env = "SLUICE_INTER_BROKER_TLS", value_name = "true|false")]
    pub inter_broker_tls: Option<bool>,
}

impl ConfigLayer {
    /// Reads a TOML file layer.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, BrokerError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            BrokerError::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        toml::from_str(&text).map_err(|e| {
            BrokerError::Config(format!("config file {} is invalid: {e}", path.display()))
        })
    }

    /// Applies the values this layer sets on top of `config`.
    fn apply(self, config: &mut BrokerConfig) -> Result<(), BrokerError> {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { config.$field = v; } )* };
        }
        set!(
            listen,
            data_dir,
            max_frame_bytes,
            max_connections,
            max_in_flight_per_connection,
            durability,
            flush_interval_ms,
            default_partitions,
            default_replication_factor,
            segment_bytes,
            retention_ms,
            retention_bytes,
            min_insync_replicas,
            retention_check_interval_ms,
            checkpoint_interval_ms,
            shutdown_timeout_ms,
            heartbeat_interval_ms,
            broker_session_timeout_ms,
            replica_lag_time_max_ms,
            leader_imbalance_check_interval_ms,
            offsets_topic_partitions,
            offsets_topic_segment_bytes,
            log_cleaner_interval_ms,
            log_cleaner_io_bytes_per_sec,
            log_cleaner_dedupe_buffer_bytes,
            group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            auto_create_topics,
            sasl_plain_without_tls
        );
        if let Some(authorizer) = self.authorizer {
            config.authorizer = match authorizer.as_str() {
                "on" | "true" => true,
                "off" | "false" => false,
                other => {
                    return Err(BrokerError::Config(format!(
                        "authorizer is on or off, not {other:?}"
                    )))
                }
            };
        }
        if let Some(superusers) = self.superusers {
            config.superusers = parse_superusers(&superusers)?;
        }
        if let Some(mechanisms) = self.sasl_mechanisms {
            config.sasl_mechanisms = parse_sasl_mechanisms(&mechanisms)?;
        }
        for (value, field) in [
            (self.tls_cert_file, &mut config.tls_cert_file),
            (self.tls_key_file, &mut config.tls_key_file),
            (self.tls_client_ca_file, &mut config.tls_client_ca_file),
            (self.tls_ca_file, &mut config.tls_ca_file),
        ] {
            if value.is_some() {
                *field = value;
            }
        }
        if let Some(listen) = self.kafka_listen {
            config.kafka_listen = parse_listen("kafka_listen", &listen)?;
            config.kafka_listen_explicit = true;
        }
        if let Some(listen) = self.http_listen {
            config.http_listen = parse_listen("http_listen", &listen)?;
            config.http_listen_explicit = true;
        }
        if let Some(advertise) = self.kafka_advertise {
            config.kafka_advertise = Some(advertise);
        }
        if let Some(rack) = self.rack {
            if rack.trim().is_empty() {
                return Err(BrokerError::Config(
                    "rack is empty: give the rack's name, or leave the setting out".into(),
                ));
            }
            config.rack = Some(rack);
        }
        if let Some(id) = self.node_id {
            config.node_id = BrokerId(id);
        }
        if let Some(advertise) = self.advertise {
            config.advertise = advertise;
        }
        if let Some(voters) = self.voters {
            config.voters = parse_voters(&voters)?;
        }
        if let Some(overrides) = self.peer_overrides {
            config.peer_overrides = parse_peer_overrides(&overrides)?;
        }
        Ok(())
    }
}

impl ConfigLayer {
    /// Parses the command line, with `--help` showing each setting's default. The flags
    /// themselves have no clap defaults (a flag that is not given must leave the file's or
    /// the environment's value), so the defaults are added to the help text from
    /// [`BrokerConfig::default`], which stays their one source.
    pub fn parse_with_defaults() -> ConfigLayer {
        use clap::{CommandFactory, FromArgMatches};
        let defaults = serde_json::to_value(BrokerConfig::default()).unwrap_or_default();
        let command = ConfigLayer::command().mut_args(|arg| {
            let shown = match defaults.get(arg.get_id().as_str()) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(serde_json::Value::Bool(b)) => b.to_string(),
                _ => return arg,
            };
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            if help.contains("(default") {
                return arg; // says its default in its own words
            }
            arg.help(format!("{help} [default: {shown}]"))
        });
        let matches = command.get_matches();
        ConfigLayer::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// Builds the effective configuration from the command line (flags and `SLUICE_*`
/// variables, parsed by clap) and the file it names.
pub fn resolve(cli: ConfigLayer) -> Result<BrokerConfig, BrokerError> {
    let mut config = BrokerConfig::default();
    let listen_before = config.listen;
    let mut advertise_set = false;
    let mut voters_set = false;
    // The TLS switches default to what the other settings say, so each layer's explicit
    // value is kept apart: (native, kafka, inter-broker).
    let mut tls_switches: [Option<bool>; 3] = [None; 3];
    let mut note_switches = |layer: &ConfigLayer| {
        let given = [layer.native_tls, layer.kafka_tls, layer.inter_broker_tls];
        for (kept, given) in tls_switches.iter_mut().zip(given) {
            *kept = given.or(*kept);
        }
    };
    if let Some(path) = &cli.config {
        let file = ConfigLayer::from_file(path)?;
        advertise_set |= file.advertise.is_some();
        voters_set |= file.voters.is_some();
        note_switches(&file);
        file.apply(&mut config)?;
    }
    advertise_set |= cli.advertise.is_some();
    voters_set |= cli.voters.is_some();
    note_switches(&cli);
    cli.apply(&mut config)?;
    if !advertise_set && config.listen != listen_before {
        config.advertise = config.listen.to_string();
    }
    if !voters_set {
        // A single-node cluster: this node is its own quorum.
        config.voters = vec![Voter {
            id: config.node_id,
            address: config.advertise.clone(),
        }];
    }
    validate(&config)?;
    resolve_tls(&mut config, tls_switches)?;
    config.tls = crate::tls::load(&crate::tls::Files {
        tls_cert_file: &config.tls_cert_file,
        tls_key_file: &config.tls_key_file,
        tls_client_ca_file: &config.tls_client_ca_file,
        tls_ca_file: &config.tls_ca_file,
        inter_broker_tls: config.inter_broker_tls,
    })?;
    validate_security(&config)?;
    Ok(config)
}

/// Authentication and the authorizer on a node of several: brokers reach each other's
/// native listener for Raft and replication, so they must authenticate there too, and the
/// way they do is mutual TLS (inter-broker TLS, client certificates required). With the
/// authorizer on, this broker's own certificate name must be a superuser, or its peers
/// would refuse its replication and Raft requests.
fn validate_security(config: &BrokerConfig) -> Result<(), BrokerError> {
    let single_node = config.voters.len() == 1 && config.is_voter();
    let secured = !config.sasl_mechanisms.is_empty() || config.authorizer;
    if !secured || single_node {
        return Ok(());
    }
    if !config.inter_broker_tls || config.tls_client_ca_file.is_none() {
        return Err(BrokerError::Config(
            "sasl_mechanisms or authorizer on a node of a multi-node cluster needs the \
             brokers to authenticate to each other by mutual TLS: set --tls-cert-file, \
             --tls-key-file, --tls-ca-file and --tls-client-ca-file (inter-broker TLS on), \
             or run the cluster without them"
                .into(),
        ));
    }
    if config.authorizer {
        let Some(cert) = &config.tls_cert_file else {
            return Ok(()); // resolve_tls refused inter-broker TLS without a certificate
        };
        let chain = crate::tls::certificates(cert, "tls_cert_file")?;
        let name = chain.first().and_then(crate::tls::identity);
        let principal = name.as_ref().map(|n| format!("User:{n}"));
        if !principal
            .as_ref()
            .is_some_and(|p| config.superusers.contains(p))
        {
            return Err(BrokerError::Config(format!(
                "with the authorizer on, the other brokers know this one as {} (its \
                 certificate's name) and must allow it everything: add it to --superusers \
                 on every broker",
                principal.unwrap_or_else(|| "a certificate without a name".into())
            )));
        }
    }
    Ok(())
}

/// Settles the TLS switches (explicit values, else defaults) and refuses combinations that
/// cannot work, naming the flags to change. The coherent model: one certificate serves
/// every TLS listener; brokers dial each other on the native listener, so inter-broker TLS
/// is the native listener's TLS; a broker that dials a TLS peer verifies it, so it needs
/// the CA of the other brokers' certificates.
fn resolve_tls(config: &mut BrokerConfig, switches: [Option<bool>; 3]) -> Result<(), BrokerError> {
    let fail = |msg: String| Err(BrokerError::Config(msg));
    let certified = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(_), Some(_)) => true,
        (None, None) => false,
        (Some(_), None) => {
            return fail("--tls-cert-file is set but --tls-key-file is not; TLS needs both".into())
        }
        (None, Some(_)) => {
            return fail("--tls-key-file is set but --tls-cert-file is not; TLS needs both".into())
        }
    };
    let [native, kafka, inter_broker] = switches;
    config.native_tls = native.unwrap_or(certified);
    config.kafka_tls = kafka.unwrap_or(certified);
    config.inter_broker_tls = inter_broker.unwrap_or(config.native_tls);
    for (on, flag) in [
        (config.native_tls, "--native-tls true"),
        (config.kafka_tls, "--kafka-tls true"),
    ] {
        if on && !certified {
            return fail(format!(
                "{flag} needs this broker's certificate: pass --tls-cert-file and --tls-key-file"
            ));
        }
    }
    if config.tls_client_ca_file.is_some() && !certified {
        return fail(
            "--tls-client-ca-file (mutual TLS) needs TLS first: pass --tls-cert-file and \
             --tls-key-file"
                .into(),
        );
    }
    if config.tls_client_ca_file.is_some() && !config.native_tls && !config.kafka_tls {
        return fail(
            "--tls-client-ca-file is set but no listener serves TLS (--native-tls false, \
             --kafka-tls false); turn one on or drop --tls-client-ca-file"
                .into(),
        );
    }
    match (config.inter_broker_tls, config.native_tls) {
        (true, false) => {
            return fail(
                "--inter-broker-tls true, but the native listener, where brokers reach each \
                 other, is plain; serve it with TLS (--tls-cert-file, --tls-key-file and not \
                 --native-tls false) or pass --inter-broker-tls false"
                    .into(),
            )
        }
        (false, true) => {
            return fail(
                "--inter-broker-tls false, but the native listener, where brokers reach each \
                 other, serves TLS; drop --inter-broker-tls false, or serve it plain with \
                 --native-tls false"
                    .into(),
            )
        }
        _ => {}
    }
    let has_peers = config.voters.iter().any(|v| v.id != config.node_id);
    if config.inter_broker_tls && has_peers && config.tls_ca_file.is_none() {
        return fail(
            "inter-broker TLS is on (the native listener serves TLS), so this broker must verify \
             the other brokers' certificates: pass --tls-ca-file FILE, the CA that signed them"
                .into(),
        );
    }
    Ok(())
}

fn validate(config: &BrokerConfig) -> Result<(), BrokerError> {
    let fail = |msg: String| Err(BrokerError::Config(msg));
    if config.node_id.0 < 0 {
        return fail(format!("node_id {} must be 0 or more", config.node_id.0));
    }
    if config.max_frame_bytes < 1 << 20 {
        return fail("max_frame_bytes must be at least 1048576 (1 MiB)".into());
    }
    if config.default_partitions as i64 > PARTITIONS_MAX as i64 {
        return fail(format!(
            "default_partitions must be at most {}",
            PARTITIONS_MAX
        ));
    }
    if config.segment_bytes < 4096 {
        return fail("segment_bytes must be at least 4096".into());
    }
    if config.max_connections == 0 || config.max_in_flight_per_connection == 0 {
        return fail("max_connections and max_in_flight_per_connection must be at least 1".into());
    }
    if config.default_partitions == 0 || config.default_replication_factor == 0 {
        return fail("default_partitions and default_replication_factor must be at least 1".into());
    }
    if config.min_insync_replicas == 0 {
        return fail("min_insync_replicas must be at least 1".into());
    }
    if config.node_id.0 < 0 {
        return fail(format!("node_id must be 0 or more, not {}", config.node_id));
    }
    if config.heartbeat_interval_ms == 0
        || config.broker_session_timeout_ms < 2 * config.heartbeat_interval_ms
    {
        return fail(format!(
            "broker_session_timeout_ms ({}) must be at least twice heartbeat_interval_ms ({}), \
             which must be at least 1",
            config.broker_session_timeout_ms, config.heartbeat_interval_ms
        ));
    }
    if config.replica_lag_time_max_ms == 0 {
        return fail("replica_lag_time_max_ms must be at least 1".into());
    }
    if config.offsets_topic_partitions == 0
        || config.offsets_topic_partitions as i64 > PARTITIONS_MAX as i64
    {
        return fail(format!(
            "offsets_topic_partitions must be 1 to {}",
            PARTITIONS_MAX
        ));
    }
    if config.offsets_topic_segment_bytes < 4096 {
        return fail("offsets_topic_segment_bytes must be at least 4096".into());
    }
    if config.log_cleaner_interval_ms == 0 || config.log_cleaner_dedupe_buffer_bytes < 1 << 20 {
        return fail(
            "log_cleaner_interval_ms must be at least 1 and log_cleaner_dedupe_buffer_bytes \
             at least 1048576 (1 MiB)"
                .into(),
        );
    }
    if config.group_min_session_timeout_ms > config.group_max_session_timeout_ms {
        return fail(format!(
            "group_min_session_timeout_ms ({}) must not exceed group_max_session_timeout_ms ({})",
            config.group_min_session_timeout_ms, config.group_max_session_timeout_ms
        ));
    }
    let port = config
        .advertise
        .rsplit_once(':')
        .map(|(_, p)| p.parse::<u16>());
    if !matches!(port, Some(Ok(p)) if p != 0) {
        return fail(format!(
            "advertise address {:?} must be HOST:PORT with a port from 1 to 65535",
            config.advertise
        ));
    }
    if let Some(kafka) = config.kafka_listen {
        if config.kafka_advertise.is_none() && kafka.ip().is_unspecified() {
            return fail(format!(
                "listening for Kafka clients on {kafka} needs --kafka-advertise HOST:PORT: \
                 clients cannot connect to {}",
                kafka.ip()
            ));
        }
        if kafka == config.listen {
            return fail(format!(
                "kafka_listen and listen are both {kafka}; give the Kafka listener its own port \
                 (--kafka-listen HOST:PORT) or turn it off (--kafka-listen off)"
            ));
        }
    }
    if let Some(http) = config.http_listen {
        if http.port() != 0 && (http == config.listen || Some(http) == config.kafka_listen) {
            return fail(format!(
                "http_listen {http} is the address of another listener; give the HTTP \
                 listener its own port (--http-listen HOST:PORT) or turn it off \
                 (--http-listen off)"
            ));
        }
    }
    if let Some(advertise) = &config.kafka_advertise {
        let port = advertise.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
        if !matches!(port, Some(Ok(p)) if p != 0) {
            return fail(format!(
                "kafka_advertise address {advertise:?} must be HOST:PORT with a port from 1 to \
                 65535"
            ));
        }
    }
    if config.advertise == config.listen.to_string() && config.listen.ip().is_unspecified() {
        return fail(format!(
            "listening on {} needs --advertise HOST:PORT: clients cannot connect to {}",
            config.listen,
            config.listen.ip()
        ));
    }
    Ok(())
}

/// `User:alice,User:bob` -> the principals.
fn parse_superusers(list: &str) -> Result<Vec<String>, BrokerError> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_prefix("User:") {
            Some(name) if !name.is_empty() => Ok(p.to_owned()),
            _ => Err(BrokerError::Config(format!(
                "superusers: {p:?} is not a principal; write User:NAME, comma-separated"
            ))),
        })
        .collect()
}

/// `SCRAM-SHA-256,PLAIN` -> the mechanisms; empty or `none` turns authentication off.
fn parse_sasl_mechanisms(list: &str) -> Result<Vec<SaslMechanism>, BrokerError> {
    use SaslMechanism;
    let mut mechanisms = Vec::new();
    for name in list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "none")
    {
        let Some(m) = SaslMechanism::from_name(name) else {
            return Err(BrokerError::Config(format!(
                "sasl_mechanisms: {name:?} is not a SASL mechanism sluice has; use \
                 SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN, comma-separated"
            )));
        };
        if !mechanisms.contains(&m) {
            mechanisms.push(m);
        }
    }
    Ok(mechanisms)
}

/// Parses a listener setting (`key`): `HOST:PORT`, or `off`.
fn parse_listen(key: &str, text: &str) -> Result<Option<SocketAddr>, BrokerError> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        BrokerError::Config(format!(
            "{key} {text:?} is not HOST:PORT (an IP address and a port, e.g. \
             127.0.0.1:9092) or off"
        ))
    })
}

/// Parses `ID@HOST:PORT,ID@HOST:PORT,...`.
pub fn parse_voters(text: &str) -> Result<Vec<Voter>, BrokerError> {
    let voters = parse_node_addresses(text, "voters")?;
    if voters.is_empty() {
        return Err(BrokerError::Config(
            "--voters is empty; give ID@HOST:PORT,... or leave it out for a single node".into(),
        ));
    }
    Ok(voters
        .into_iter()
        .map(|(id, address)| Voter { id, address })
        .collect())
}

/// Parses `peer_overrides`, `ID@HOST:PORT,...` like `voters`; empty means none.
pub fn parse_peer_overrides(text: &str) -> Result<Vec<PeerOverride>, BrokerError> {
    Ok(parse_node_addresses(text, "peer-overrides")?
        .into_iter()
        .map(|(id, address)| PeerOverride { id, address })
        .collect())
}

/// Parses `ID@HOST:PORT,...` (the value of `--{key}`): each node id at most once.
fn parse_node_addresses(text: &str, key: &str) -> Result<Vec<(BrokerId, String)>, BrokerError> {
    let mut parsed_all: Vec<(BrokerId, String)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = item.split_once('@').and_then(|(id, address)| {
            let id = id.parse::<i32>().ok().filter(|id| *id >= 0)?;
            address.rsplit_once(':')?.1.parse::<u16>().ok()?;
            Some((BrokerId(id), address.to_string()))
        });
        match parsed {
            Some((id, _)) if parsed_all.iter().any(|(seen, _)| *seen == id) => {
                return Err(BrokerError::Config(format!(
                    "--{key} names node {} twice",
                    id.0
                )))
            }
            Some(entry) => parsed_all.push(entry),
            None => {
                return Err(BrokerError::Config(format!(
                    "--{key} entry {item:?} is not ID@HOST:PORT (for example 1@127.0.0.1:9700)"
                )))
            }
        }
    }
    Ok(parsed_all)
}

#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_args(args: &[&str]) -> Result<BrokerConfig, BrokerError> {
        let mut argv = vec!["sluice-broker"];
        argv.extend_from_slice(args);
        resolve(ConfigLayer::try_parse_from(argv).expect("flags parse"))
    }

    #[test]
    fn no_arguments_is_a_single_node_on_9700() {
        let config = resolve_args(&[]).unwrap();
        assert_eq!(config, BrokerConfig::default());
        assert_eq!(config.voters.len(), 1);
        assert_eq!(config.data_dir, PathBuf::from("sluice-data"));
    }

    #[test]
    fn listen_flag_moves_the_advertised_address_and_the_single_voter() {
        let config = resolve_args(&["--listen", "127.0.0.1:1234", "--node-id", "7"]).unwrap();
        assert_eq!(config.advertise, "127.0.0.1:1234");
        assert_eq!(
            config.voters,
            vec![Voter {
                id: BrokerId(7),
                address: "127.0.0.1:1234".into()
            }]
        );
    }

    #[test]
    fn sasl_mechanisms_parse_and_need_mutual_tls_between_brokers() {
        use sluice_protocol::scram::Mechanism;
        assert!(resolve_args(&[]).unwrap().sasl_mechanisms.is_empty());
        let config = resolve_args(&["--sasl-mechanisms", "scram-sha-512, PLAIN"]).unwrap();
        assert_eq!(
            config.sasl_mechanisms,
            vec![
                SaslMechanism::Scram(Mechanism::Sha512),
                SaslMechanism::Plain
            ]
        );
        let err = resolve_args(&["--sasl-mechanisms", "GSSAPI"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"),
            "{err}"
        );
        let err = resolve_args(&[
            "--sasl-mechanisms",
            "PLAIN",
            "--node-id",
            "1",
            "--voters",
            "1@127.0.0.1:9700,2@127.0.0.1:9701,3@127.0.0.1:9702",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("mutual TLS"), "{err}");
    }

    #[test]
    fn http_listen_defaults_to_9644_and_turns_off_or_moves() {
        let config = resolve_args(&[]).unwrap();
        assert_eq!(config.http_listen, Some(([127, 0, 0, 1], 9644).into()));
        assert!(!config.http_listen_explicit);
        let off = resolve_args(&["--http-listen", "off"]).unwrap();
        assert_eq!(off.http_listen, None);
        let moved = resolve_args(&["--http-listen", "127.0.0.1:0"]).unwrap();
        assert_eq!(moved.http_listen, Some(([127, 0, 0, 1], 0).into()));
        assert!(moved.http_listen_explicit);
        let err = resolve_args(&["--http-listen", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("http_listen"), "{err}");
        let err = resolve_args(&["--http-listen", "127.0.0.1:9700"]).unwrap_err();
        assert!(err.to_string().contains("--http-listen"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "data_dir = \"/from/file\"\nsegment_bytes = 4096\ndurability = \"replicated\"\n",
        )
        .unwrap();
        let config = resolve_args(&[
            "--config",
            path.to_str().unwrap(),
            "--data-dir",
            "/from/flag",
        ])
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.segment_bytes, 4096);
        assert_eq!(config.durability, DurabilityMode::Replicated);
    }

    #[test]
    fn unknown_file_keys_and_bad_voters_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "data_dri = \"x\"\n").unwrap();
        let err = resolve_args(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("data_dri"), "{err}");
        let err = resolve_args(&["--voters", "1@127.0.0.1"]).unwrap_err();
        assert!(err.to_string().contains("ID@HOST:PORT"), "{err}");
        let config = resolve_args(&["--voters", "1@127.0.0.1:1,2@127.0.0.1:2"]).unwrap();
        assert_eq!(config.voters.len(), 2);
        let voters = parse_voters("1@127.0.0.1:1,2@127.0.0.2:2").unwrap();
        assert_eq!(voters[1].id, BrokerId(2));
    }

    #[test]
    fn peer_overrides_parse_from_flags_and_the_file() {
        let check = |text: &str, expected: &[(i32, &str)]| {
            let parsed = parse_peer_overrides(text).unwrap();
            let expected: Vec<PeerOverride> = expected
                .iter()
                .map(|(id, address)| PeerOverride {
                    id: BrokerId(*id),
                    address: address.to_string(),
                })
                .collect();
            assert_eq!(parsed, expected, "{text:?}");
        };
        check("", &[]);
        check(" , ", &[]);
        check("2@127.0.0.1:40001", &[(2, "127.0.0.1:40001")]);
        check(
            "2@127.0.0.1:40001, 3@localhost:40002",
            &[(2, "127.0.0.1:40001"), (3, "localhost:40002")],
        );
        for bad in ["2=127.0.0.1:1", "2@127.0.0.1", "x@127.0.0.1:1", "-1@h:1"] {
            let err = parse_peer_overrides(bad).unwrap_err().to_string();
            assert!(err.contains("--peer-overrides entry"), "{bad}: {err}");
        }
        let err = parse_peer_overrides("2@a:1,2@b:2").unwrap_err().to_string();
        assert!(err.contains("names node 2 twice"), "{err}");

        assert!(resolve_args(&[]).unwrap().peer_overrides.is_empty());
        let config = resolve_args(&["--peer-overrides", "2@127.0.0.1:40001"]).unwrap();
        assert_eq!(config.peer_overrides[0].id, BrokerId(2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "peer_overrides = \"3@127.0.0.1:40002\"\n").unwrap();
        let config = resolve_args(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(config.peer_overrides[0].address, "127.0.0.1:40002");
    }
}
