//! The cluster metadata image and the commands of the metadata log.
//!
//! Every node applies the same committed commands in the same order to its own
//! [`MetadataImage`], so [`MetadataImage::apply`] must be deterministic: no clock, no
//! randomness, no I/O; anything that varies (the log index, ids) comes in as arguments.
//! Validation that depends on the image (a topic already exists, a stale leader epoch)
//! happens here too, so two proposals racing on different controllers cannot both win:
//! the second one applied sees the first and is refused in its [`CommandResult`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId};

/// The whole cluster as the metadata log describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Chosen by the node that bootstraps the cluster; empty until then.
    pub cluster_id: String,
    /// Registered brokers by id.
    pub brokers: BTreeMap<BrokerId, BrokerMeta>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// The first producer id not yet handed out (idempotent producers).
    pub next_producer_id: i64,
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    /// The broker's node id.
    pub id: BrokerId,
    /// The log index of its current registration: every heartbeat and AlterPartition
    /// carries it, so a request from an older incarnation is told apart.
    pub epoch: i64,
    /// Random id of the registered process run (hex).
    pub incarnation_id: String,
    /// Advertised addresses, one per listener name (`native`).
    pub listeners: Vec<ListenerMeta>,
    /// The broker's rack, if it has one.
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is in no ISR (but the last one it was in).
    pub fenced: bool,
    /// The broker asked to shut down; it gets no new leaderships.
    pub shutting_down: bool,
}

/// One advertised listener of a broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerMeta {
    /// `native` (a Kafka-compatible listener may come later).
    pub name: String,
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// The log index of the topic's creation: unique forever, so a topic deleted and
    /// created again under the same name is a different topic (replicas of the old one
    /// are wiped, never mistaken for the new one).
    pub id: u64,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// Config overrides given at creation (`retention.ms` ...), validated by the proposer.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index, 0..n.
    pub partitions: Vec<PartitionMeta>,
}

/// One partition's placement and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The partition's index.
    pub index: PartitionId,
    /// The leader, or -1 when no eligible replica is alive (offline).
    pub leader: BrokerId,
    /// Bumped on every leader change (stamped on every batch the leader writes).
    pub leader_epoch: LeaderEpoch,
    /// Bumped on every change of leader or ISR: AlterPartition compares it (compare-and-set).
    pub partition_epoch: i32,
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas (the leader always among them while there is one).
    pub isr: Vec<BrokerId>,
}

/// A command of the metadata log. Proposed by the active controller, applied everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Sets the cluster id if none is set (the first leader proposes it once).
    Bootstrap {
        /// The new cluster's id.
        cluster_id: String,
    },
    /// A broker (re)registers. A new incarnation fences the old one first.
    RegisterBroker {
        /// The broker.
        id: BrokerId,
        /// Its process run's random id (hex).
        incarnation_id: String,
        /// Its advertised listeners.
        listeners: Vec<ListenerMeta>,
        /// Its rack.
        rack: Option<String>,
    },
    /// A broker's session expired: fence it, move its leaderships, shrink its ISRs.
    FenceBroker {
        /// The broker.
        id: BrokerId,
        /// The registration the session belonged to.
        epoch: i64,
    },
    /// A registered broker caught up with the metadata log: it may lead and join ISRs.
    UnfenceBroker {
        /// The broker.
        id: BrokerId,
        /// Its registration epoch.
        epoch: i64,
    },
    /// A broker is shutting down gracefully: move its leaderships away and fence it.
    ControlledShutdown {
        /// The broker.
        id: BrokerId,
        /// Its registration epoch.
        epoch: i64,
    },
    /// Creates a topic, placing replicas over the active brokers.
    CreateTopic {
        /// The name (validated by the proposer).
        name: String,
        /// Partitions (validated: 1..=1024).
        partitions: u32,
        /// Replicas per partition (validated: >= 1).
        replication_factor: u16,
        /// Config overrides (validated by the proposer).
        configs: BTreeMap<String, String>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// The name.
        name: String,
    },
    /// A partition leader changes the ISR (compare-and-set on the partition epoch).
    AlterPartition {
        /// The leader asking.
        broker_id: BrokerId,
        /// Its registration epoch.
        broker_epoch: i64,
        /// The topic.
        topic: String,
        /// The partition.
        partition: PartitionId,
        /// The leader epoch the leader holds.
        leader_epoch: LeaderEpoch,
        /// The partition epoch the proposal is based on.
        partition_epoch: i32,
        /// The proposed ISR.
        new_isr: Vec<BrokerId>,
    },
    /// Hands a block of producer ids to a broker.
    AllocateProducerIds {
        /// The broker asking.
        broker_id: BrokerId,
        /// Its registration epoch.
        broker_epoch: i64,
    },
}

/// What applying a command yields; returned to the proposer by openraft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; nothing to return. Also the result of a membership or blank entry.
    #[default]
    Done,
    /// A registration's broker epoch.
    BrokerEpoch(i64),
    /// A partition's state after an AlterPartition.
    Partition(PartitionMeta),
    /// A block of producer ids: `first..first + len`.
    ProducerIds {
        /// The first id of the block.
        first: i64,
        /// How many ids.
        len: i32,
    },
    /// Refused; nothing changed.
    Refused {
        /// Why, as a protocol error code (`ErrorCode::code`).
        code: i16,
        /// What went wrong and what to do, for a human.
        message: String,
    },
}

impl CommandResult {
    /// A refusal with `code` and `message`.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> CommandResult {
        CommandResult::Refused {
            code: code.code(),
            message: message.into(),
        }
    }
}

/// How many producer ids one AllocateProducerIds hands out.
pub const PRODUCER_ID_BLOCK: i32 = 1000;

impl MetadataImage {
    /// Applies the command committed at log `index`. Deterministic: every node gets the same
    /// image and the same result.
    pub fn apply(&mut self, index: u64, command: &MetadataCommand) -> CommandResult {
        let _ = (index, command);
        unimplemented!("MetadataImage::apply is being written on the `image` branch")
    }
}
