//! `sluice-broker`: the broker node. A tokio server (`server`, `connection`) hands decoded
//! requests to `handlers`, which call the service layer: `topics` (creation, deletion,
//! lookup, per-topic config) and `partition` (append, read, offsets, high watermark) over
//! `sluice-storage` logs. `metadata` holds and persists the cluster metadata image;
//! `config` builds the effective configuration from defaults, file, environment and flags.
//!
//! Architecture invariant: handlers know the wire, the service layer does not; sockets are
//! opened only by `server` and `connection`, and by `cluster::peer` to reach other brokers.

pub mod broker;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod error;
pub mod handlers;
pub mod metadata;
pub mod partition;
pub mod server;
pub mod topics;

pub use broker::Broker;
pub use config::{BrokerConfig, ConfigLayer};
pub use error::{ApiError, BrokerError};
pub use server::run;
