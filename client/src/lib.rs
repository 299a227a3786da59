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
//! ```no_run
//! # async fn demo() -> sluice_client::Result<()> {
//! use sluice_client::{Admin, Client, ClientConfig, NewTopic};
//! let client = Client::connect(ClientConfig::default()).await?;
//! Admin::new(client.clone()).create_topic(NewTopic::new("orders", 3, 1)).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod accumulator;
mod acl;
mod admin;
mod backoff;
mod client;
mod connection;
mod consumer;
mod error;
mod group;
mod partitioner;
mod producer;
mod sasl;
#[cfg(test)]
mod testing;
mod tls;

pub use acl::{Acl, AclOperation, AclResource};
pub use admin::{
    Admin, BrokerDescription, ClusterDescription, NewTopic, PartitionDescription, TopicDescription,
    TopicInfo, UserDescription,
};
pub use client::{
    BrokerMetadata, Client, ClientConfig, PartitionMetadata, TopicMetadata, DEFAULT_BOOTSTRAP,
};
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerEvent, ConsumerRecord, OffsetReset, OffsetSpec,
};
pub use error::{Error, Result};
pub use group::{
    GroupConfig, GroupDescription, GroupListing, GroupMember, GroupPartitionLag,
    GroupPartitionOffset, ResetTarget,
};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{
    Acks, CompressionConfig, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
    RecordMetadata,
};
pub use sasl::{SaslConfig, SaslMechanism};
/// A batch codec: none, gzip, snappy, lz4, zstd.
pub use sluice_protocol::batch::Compression;
/// A record header as consumers see it: key and nullable value, both zero-copy.
pub use sluice_protocol::batch::Header as RecordHeader;
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

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}
