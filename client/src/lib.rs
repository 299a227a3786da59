//! `sluice-client` is the async Rust client of sluice: a [`Client`] that holds one pipelined
//! connection per broker and a metadata cache, and on top of it a batching [`Producer`],
//! a prefetching [`Consumer`] and an [`Admin`] for topics and the cluster. The `sluice` CLI
//! (in `src/bin/sluice/`) is a thin layer over this library.
//!
//! ```no_run
//! # async fn demo() -> sluice_client::Result<()> {
//! use sluice_client::{Admin, Client, ClientConfig, NewTopic};
//! let client = Client::connect(ClientConfig::default()).await?;
//! Admin::new(client.clone()).create_topic(NewTopic::new("orders", 3, 1)).await?;
//! # Ok(()) }
//! ```

mod admin;
mod client;
mod connection;
mod error;

pub use admin::{
    Admin, BrokerDescription, ClusterDescription, NewTopic, PartitionDescription, TopicDescription,
    TopicInfo,
};
pub use client::{
    BrokerMetadata, Client, ClientConfig, PartitionMetadata, TopicMetadata, DEFAULT_BOOTSTRAP,
};
pub use error::{Error, Result};
pub use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId};
