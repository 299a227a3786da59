//! `sluice-client` is the async Rust client of sluice: a [`Client`] that holds one pipelined
//! connection per broker and a metadata cache, and on top of it a batching [`Producer`],
//! a prefetching [`Consumer`] and an [`Admin`] for topics and the cluster. The `sluice` CLI
//! (in `src/bin/sluice/`) is a thin layer over this library.
//!
//! The client is built for a replicated cluster whose leaders move. Metadata comes from
//! whichever broker answers first (a dead or hung broker is skipped after a short hedge
//! delay, see [`ClientConfig::metadata_hedge_after`]); a request that meets a leadership
//! error or a broker that is gone or silent refreshes the metadata and is retried, with
//! exponential backoff and jitter, against the partition's leader of the moment, carrying
//! its leader epoch where the protocol has the field. Retries never reorder a partition's
//! records nor move a consumer's position; the producer delivers at least once (see
//! [`Producer`]).
//!
//! # Quick start
//!
//! A service depends on the library alone (the default feature `cli` builds the `sluice`
//! command-line tool and its dependencies, clap, serde_json and tracing-subscriber, which a
//! library user does not need), a tokio runtime, and for its tests an in-process cluster:
//!
//! ```toml
//! [dependencies]
//! sluice-client = { version = "0.1", default-features = false }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//!
//! [dev-dependencies]
//! sluice-testkit = "0.1"
//! ```
//!
//! Create a topic, produce a record, read it back:
//!
//! ```
//! use std::time::Duration;
//! use sluice_client::{
//!     Admin, Client, ClientConfig, Consumer, ConsumerConfig, NewTopic, OffsetSpec, Producer,
//!     ProducerConfig, ProducerRecord,
//! };
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A broker to talk to: here one started inside this process by sluice-testkit, as in a
//! // test; in production, your cluster's addresses (the default is 127.0.0.1:9700).
//! let cluster = sluice_testkit::Cluster::start(1).await?;
//! let client = Client::connect(ClientConfig {
//!     bootstrap: cluster.bootstrap_servers(),
//!     ..ClientConfig::default()
//! })
//! .await?;
//!
//! // A client is cheap to clone: one connection per broker, shared by everything built on it.
//! Admin::new(client.clone()).create_topic(NewTopic::new("orders", 3, 1)).await?;
//!
//! let producer = Producer::new(client.clone(), ProducerConfig::default());
//! let delivery = producer.send(ProducerRecord::new("orders", "pizza").key("alice")).await?;
//! let written = delivery.await?; // acknowledged: on disk, at this partition and offset
//!
//! let mut consumer = Consumer::new(client, ConsumerConfig::default());
//! consumer.assign(vec![("orders".into(), written.partition, OffsetSpec::Earliest)]).await?;
//! let records = loop {
//!     let records = consumer.poll(Duration::from_secs(1)).await?;
//!     if !records.is_empty() {
//!         break records;
//!     }
//! };
//! assert_eq!(records[0].value.as_deref(), Some(&b"pizza"[..]));
//! assert_eq!(records[0].offset, written.offset);
//! # Ok(())
//! # }
//! ```
//!
//! # Where to go next
//!
//! - [`Producer`]: batching, acks, idempotence (the default), compression, delivery
//!   timeouts; [`ProducerConfig`] lists every setting.
//! - [`Consumer`]: assigned partitions ([`Consumer::assign`], [`Consumer::seek`]) or a
//!   consumer group ([`Consumer::with_group`], [`Consumer::subscribe`],
//!   [`Consumer::commit`], rebalances through [`Consumer::poll_event`]).
//! - [`Admin`]: topics, the cluster, groups (offsets, lag, resets), users and ACLs.
//! - [`ClientConfig`]: bootstrap, timeouts, [`TlsConfig`] and [`SaslConfig`] logins.
//! - The crate's `examples/` directory: producing a file, a group consumer that commits, a
//!   consume-transform-produce loop, and a failover under a running producer. Each runs
//!   against an in-process cluster with `cargo run -p sluice-client --example NAME`, or
//!   against yours with `SLUICE_BOOTSTRAP=host:port`.
//!
//! # Errors and retries
//!
//! Every fallible call returns [`Result`], whose [`Error`] says what went wrong and what to
//! do. The producer, the consumer and the admin calls already retry what can succeed on a
//! second try (a leader that moved, a broker that restarts, a timeout) with backoff, within
//! their timeouts; what reaches the caller is final for that call. [`Error::is_retriable`]
//! says whether trying the whole operation again later may succeed:
//! [`Error::Connect`], [`Error::Network`], [`Error::Timeout`],
//! [`Error::LeaderNotAvailable`], and [`Error::Broker`] with a retriable code (such as
//! NOT_LEADER_OR_FOLLOWER or NOT_ENOUGH_REPLICAS) are; a wrong topic, a refused login, a
//! fenced producer or group member are not.
//!
//! # Features
//!
//! - `cli` (default): the `sluice` binary. Turn it off with `default-features = false`
//!   when using the library.

#![warn(missing_docs)]

mod accumulator;
mod acl;
mod admin;
mod backoff;
mod client;
mod connection;
mod consumer;
mod delivery;
mod error;
mod fast_hash;
mod group;
mod partitioner;
mod producer;
mod quota;
mod sasl;
#[cfg(test)]
mod testing;
mod tls;

pub use acl::{Acl, AclOperation, AclResource};
pub use admin::{
    Admin, BrokerDescription, ClusterDescription, NewTopic, PartitionDescription,
    PartitionReassignment, TopicDescription, TopicInfo, UserDescription,
};
pub use client::{
    BrokerMetadata, Client, ClientConfig, PartitionMetadata, TopicMetadata, DEFAULT_BOOTSTRAP,
};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerEvent, ConsumerRecord, OffsetReset, OffsetSpec,
};
pub use delivery::{DeliveryFuture, RecordMetadata};
pub use error::{Error, Result};
pub use group::{
    GroupConfig, GroupDescription, GroupListing, GroupMember, GroupPartitionLag,
    GroupPartitionOffset, ResetTarget,
};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{Acks, CompressionConfig, Producer, ProducerConfig, ProducerRecord};
pub use quota::{ClientQuota, QuotaEntity, QuotaName};
pub use sasl::{SaslConfig, SaslMechanism};
/// A batch codec: none, gzip, snappy, lz4, zstd.
pub use sluice_protocol::batch::Compression;
/// A record header as consumers see it: key and nullable value, both zero-copy.
pub use sluice_protocol::batch::Header as RecordHeader;
pub use sluice_protocol::messages::IsolationLevel;
pub use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId};
pub use tls::TlsConfig;

/// A partition of a topic: the key under which producers batch and consumers track
/// positions.
///
/// ```
/// use sluice_client::{PartitionId, TopicPartition};
/// let tp = TopicPartition::new("orders", PartitionId(2));
/// assert_eq!(tp.to_string(), "orders/2");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition's index.
    pub partition: PartitionId,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: PartitionId) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// A topic partition by its parts, so a map keyed by [`TopicPartition`] can be asked with
/// a borrowed name, as `(&str, PartitionId)`, without building a key (which copies the
/// name): the producer looks up its batches once per record.
pub(crate) trait PartitionKey {
    fn topic(&self) -> &str;
    fn partition(&self) -> PartitionId;

    fn to_owned_key(&self) -> TopicPartition {
        TopicPartition::new(self.topic(), self.partition())
    }
}

impl PartitionKey for TopicPartition {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn partition(&self) -> PartitionId {
        self.partition
    }
}

impl PartitionKey for (&str, PartitionId) {
    fn topic(&self) -> &str {
        self.0
    }

    fn partition(&self) -> PartitionId {
        self.1
    }
}

impl<'a> std::borrow::Borrow<dyn PartitionKey + 'a> for TopicPartition {
    fn borrow(&self) -> &(dyn PartitionKey + 'a) {
        self
    }
}

/// As the derived `Hash` of [`TopicPartition`] hashes it (its fields in order), which a
/// map looking one up by the other requires.
impl std::hash::Hash for dyn PartitionKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.topic().hash(state);
        self.partition().hash(state);
    }
}

impl PartialEq for dyn PartitionKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.partition() == other.partition() && self.topic() == other.topic()
    }
}

impl Eq for dyn PartitionKey + '_ {}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}
