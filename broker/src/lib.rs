//! `sluice-broker`: the broker node. Two listeners (`server`, `connection`) serve two
//! protocols: the native one (`handlers`) and Kafka's (`kafka`); both are thin adapters
//! over the service layer (`services`: produce, fetch, offsets, admin, producer ids; and
//! `groups::Coordinator`), which works on `topics` (the replicas hosted here, kept in line
//! with the metadata image) and `partition` (append, read, offsets, leader/follower state,
//! ISR and high watermark) over `sluice-storage` logs. `replication` runs the follower
//! fetchers and ISR upkeep; `cluster` is the controller quorum (openraft), the metadata
//! image and the active controller's logic; `lifecycle` this broker's registration and
//! heartbeats; `background` the work that runs over the `broker` state; `data_dir` the
//! data directory's identity file and lock; `config` builds the effective configuration
//! from defaults, file, environment and flags; `tls` loads the listeners' and the peer
//! links' TLS material once at start; `topic_config` what a topic may be.
//!
//! Architecture invariant: handlers know the wire, the service layer does not; sockets are
//! opened only by `server` and `connection`, and by `cluster::peer` to reach other brokers;
//! the top-level modules import each other without cycles (`tests/module_graph.rs`).

pub mod background;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod data_dir;
pub mod error;
pub mod groups;
pub mod handlers;
pub mod http;
pub mod kafka;
pub mod lifecycle;
pub mod metrics;
pub mod partition;
pub mod producer_state;
pub mod replication;
pub mod security;
pub mod server;
pub mod services;
pub mod tls;
pub mod topic_config;
pub mod topics;
pub mod txn;

pub use broker::Broker;
pub use config::{BrokerConfig, ConfigLayer};
pub use error::{ApiError, BrokerError};
pub use server::run;
