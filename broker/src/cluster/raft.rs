//! openraft's type configuration for the metadata log: entries carry
//! [`MetadataCommand`]s, applying one yields a [`CommandResult`], nodes are identified by
//! their broker id and reached at their native listener address.

use std::sync::Arc;

use super::image::{CommandResult, MetadataCommand, MetadataImage};

openraft::declare_raft_types!(
    /// The metadata log's openraft types.
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A node of the controller quorum (voter or learner): the broker id as openraft's node id.
pub type NodeId = u64;

/// A running Raft node of the metadata log.
pub type Raft = openraft::Raft<TypeConfig>;

/// What the state machine publishes after applying entries: the image and the index of the
/// last log entry applied to it (0 before any). Brokers watch this to reconcile their
/// partitions; a request that changed metadata waits until its entry is applied here.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Index of the last applied log entry.
    pub index: u64,
    /// The image after that entry.
    pub image: Arc<MetadataImage>,
}
