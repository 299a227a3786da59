//! Brokers and the controller quorum: registration, heartbeats (failure detection and
//! fencing), ISR changes (AlterPartition), and the Raft transport between controllers.
//!
//! Why the Raft messages are opaque bytes: only the broker knows openraft (DESIGN §2), so
//! the broker serialises openraft's vote, append-entries and snapshot messages itself and
//! this crate only frames them.

use bytes::Bytes;

use crate::error_code::ErrorCode;
use crate::types::{BrokerId, LeaderEpoch, Offset, PartitionId};
use crate::wire::wire_struct;

wire_struct! {
    /// An address a broker serves one listener on.
    pub struct Listener {
        /// The listener's name: `native` now, `kafka` later.
        pub name: String,
        /// Advertised host name or IP address.
        pub host: String,
        /// Advertised TCP port.
        pub port: u16,
    }
}

wire_struct! {
    /// A broker announces itself to the controller at start.
    pub struct BrokerRegistrationRequest {
        /// The broker's node id.
        pub broker_id: BrokerId,
        /// The cluster id in the broker's data directory, so a node cannot join the wrong cluster.
        pub cluster_id: String,
        /// Random id of this process run, so a restart is told apart from a duplicate node.
        pub incarnation_id: [u8; 16],
        /// One advertised address per listener name.
        pub listeners: Vec<Listener>,
        /// The broker's rack, if configured.
        pub rack: Option<String>,
    }
}

wire_struct! {
    /// The controller's answer to a registration.
    pub struct BrokerRegistrationResponse {
        /// NONE, or why the registration was refused (DUPLICATE_BROKER_REGISTRATION...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The broker's epoch for this registration; it goes in every later heartbeat.
        pub broker_epoch: i64,
    }
}

wire_struct! {
    /// A broker's periodic liveness signal to the active controller.
    pub struct BrokerHeartbeatRequest {
        /// The broker's node id.
        pub broker_id: BrokerId,
        /// Its epoch from registration.
        pub broker_epoch: i64,
        /// The offset of the last metadata record it has applied.
        pub current_metadata_offset: i64,
        /// The broker wants to be fenced (it is not ready to lead partitions).
        pub want_fence: bool,
        /// The broker wants to shut down gracefully (hand over its leaderships first).
        pub want_shutdown: bool,
        /// Replicas whose recovery at this start cut off data (a torn or corrupt segment
        /// tail), not reported yet: they may lack records they once held and counted
        /// toward the high watermark, so they must not lead on the strength of their ISR
        /// membership alone.
        pub damaged: Vec<ReplicaRef>,
        /// The log ends of this broker's replicas of partitions waiting for a longest-log
        /// election (their last in-sync replica was damaged).
        pub log_ends: Vec<ReplicaLogEnd>,
    }
}

wire_struct! {
    /// One partition replica, named.
    pub struct ReplicaRef {
        /// The topic's name.
        pub topic: String,
        /// The partition's index.
        pub partition: PartitionId,
    }
}

wire_struct! {
    /// Where one replica's log ends, for a longest-log election.
    pub struct ReplicaLogEnd {
        /// The topic's name.
        pub topic: String,
        /// The partition's index.
        pub partition: PartitionId,
        /// The partition epoch of the metadata the broker read this under; a report for
        /// an older one is ignored.
        pub partition_epoch: i32,
        /// The leader epoch of the replica's last batch (-1: an empty log).
        pub last_epoch: LeaderEpoch,
        /// The replica's log end offset.
        pub log_end: Offset,
    }
}

wire_struct! {
    /// The controller's answer to a heartbeat.
    pub struct BrokerHeartbeatResponse {
        /// NONE, or why the heartbeat was refused (STALE_BROKER_EPOCH, NOT_CONTROLLER...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The broker has applied the metadata log up to the controller's high watermark.
        pub is_caught_up: bool,
        /// The broker is fenced: it must not lead partitions.
        pub is_fenced: bool,
        /// The broker may now shut down (its leaderships have moved).
        pub should_shutdown: bool,
    }
}

wire_struct! {
    /// A leader's proposed ISR for one partition.
    pub struct AlterPartitionPartition {
        /// The partition's index.
        pub partition: PartitionId,
        /// The leader epoch the leader holds.
        pub leader_epoch: LeaderEpoch,
        /// The proposed in-sync replicas.
        pub new_isr: Vec<BrokerId>,
        /// The partition state version the proposal is based on (compare-and-set).
        pub partition_epoch: i32,
    }
}

wire_struct! {
    /// ISR proposals for one topic.
    pub struct AlterPartitionTopic {
        /// The topic's name.
        pub topic: String,
        /// Its partitions.
        pub partitions: Vec<AlterPartitionPartition>,
    }
}

wire_struct! {
    /// A partition leader asks the controller to change ISRs.
    pub struct AlterPartitionRequest {
        /// The leader's broker id.
        pub broker_id: BrokerId,
        /// The leader's broker epoch.
        pub broker_epoch: i64,
        /// The proposals.
        pub topics: Vec<AlterPartitionTopic>,
    }
}

wire_struct! {
    /// The committed state of one partition after the proposal.
    pub struct AlterPartitionPartitionResponse {
        /// The partition's index.
        pub partition: PartitionId,
        /// NONE, or why the proposal was refused (FENCED_LEADER_EPOCH, INELIGIBLE_REPLICA...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The partition's leader.
        pub leader_id: BrokerId,
        /// The partition's leader epoch.
        pub leader_epoch: LeaderEpoch,
        /// The committed in-sync replicas.
        pub isr: Vec<BrokerId>,
        /// The partition state version now committed.
        pub partition_epoch: i32,
    }
}

wire_struct! {
    /// Committed partition states of one topic.
    pub struct AlterPartitionTopicResponse {
        /// The topic's name.
        pub topic: String,
        /// One entry per partition of the request.
        pub partitions: Vec<AlterPartitionPartitionResponse>,
    }
}

wire_struct! {
    /// The controller's answer to an AlterPartition request.
    pub struct AlterPartitionResponse {
        /// One entry per topic of the request.
        pub topics: Vec<AlterPartitionTopicResponse>,
    }
}

wire_struct! {
    /// An openraft vote request, serialised by the broker.
    pub struct RaftVoteRequest {
        /// The node the sender meant: a broker that is another node refuses it.
        pub target: BrokerId,
        /// The serialised openraft message.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// An openraft vote response, serialised by the broker.
    pub struct RaftVoteResponse {
        /// The serialised openraft message.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// A voter asks another whether it would vote for it in the next term, before it stands
    /// (Raft's pre-vote, section 9.6 of Ongaro's thesis): a voter that still hears from a
    /// leader says no, so a node back from a pause or a cut link cannot force an election.
    pub struct RaftPreVoteRequest {
        /// The node the sender meant: a broker that is another node refuses it.
        pub target: BrokerId,
        /// The serialised pre-vote (the broker's type).
        pub payload: Bytes,
    }
}

wire_struct! {
    /// The answer to a pre-vote, serialised by the broker.
    pub struct RaftPreVoteResponse {
        /// The serialised answer.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// An openraft append-entries request, serialised by the broker.
    pub struct RaftAppendEntriesRequest {
        /// The node the sender meant: a broker that is another node refuses it.
        pub target: BrokerId,
        /// The serialised openraft message.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// An openraft append-entries response, serialised by the broker.
    pub struct RaftAppendEntriesResponse {
        /// The serialised openraft message.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// An openraft install-snapshot request (one chunk), serialised by the broker.
    pub struct RaftInstallSnapshotRequest {
        /// The node the sender meant: a broker that is another node refuses it.
        pub target: BrokerId,
        /// The serialised openraft message.
        pub payload: Bytes,
    }
}

wire_struct! {
    /// An openraft install-snapshot response, serialised by the broker.
    pub struct RaftInstallSnapshotResponse {
        /// The serialised openraft message.
        pub payload: Bytes,
    }
}
