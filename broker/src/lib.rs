//! `sluice-broker`: the broker node. A tokio server (`server`, `connection`) hands decoded
//! requests to `handlers`, which call the service layer: `topics` (the replicas hosted
//! here, kept in line with the metadata image) and `partition` (append, read, offsets,
//! leader/follower state, ISR and high watermark) over `sluice-storage` logs.
//! `replication` runs the follower fetchers and ISR upkeep; `cluster` is the controller
//! quorum (openraft), the metadata image and the active controller's logic; `metadata` is
//! the node's identity file; `groups` the consumer-group coordinator on `__consumer_offsets`; `config` builds the effective configuration from defaults,
//! file, environment and flags.
//!
//! Architecture invariant: handlers know the wire, the service layer does not; sockets are
//! opened only by `server` and `connection`, and by `cluster::peer` to reach other brokers.

pub mod background;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod error;
pub mod groups;
pub mod handlers;
pub mod kafka;
pub mod lifecycle;
pub mod metadata;
pub mod partition;
pub mod producer_state;
pub mod replication;
pub mod server;
pub mod services;
pub mod topic_config;
pub mod topics;

pub use broker::Broker;
pub use config::{BrokerConfig, ConfigLayer};
pub use error::{ApiError, BrokerError};
pub use server::run;
