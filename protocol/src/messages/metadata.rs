//! ApiVersions and Metadata: how a client learns what the broker speaks and where every
//! partition's leader is. Metadata is the first request of every client and the one it
//! repeats after NOT_LEADER_OR_FOLLOWER, so it carries everything routing needs.

use crate::error_code::ErrorCode;
use crate::types::{BrokerId, LeaderEpoch, PartitionId};
use crate::wire::wire_struct;

use super::ConfigEntry;

wire_struct! {
    /// Asks which apis and versions the broker supports.
    pub struct ApiVersionsRequest {
        /// Name of the client software (`sluice-client`), for the broker's logs.
        pub client_software_name: String,
        /// Version of the client software.
        pub client_software_version: String,
    }
}

wire_struct! {
    /// One api the broker supports and its version range.
    pub struct ApiVersionRange {
        /// The api's key (raw, so a client can list keys it does not know).
        pub api_key: u16,
        /// Lowest supported version.
        pub min_version: u16,
        /// Highest supported version.
        pub max_version: u16,
    }
}

wire_struct! {
    /// The apis the broker supports.
    pub struct ApiVersionsResponse {
        /// One entry per supported api.
        pub api_keys: Vec<ApiVersionRange>,
    }
}

wire_struct! {
    /// Asks for brokers, topics and partition leaders.
    pub struct MetadataRequest {
        /// Topics to describe; null means every topic, an empty array none (brokers only).
        pub topics: Option<Vec<String>>,
        /// Whether a broker configured to auto-create topics may create missing ones.
        pub allow_auto_topic_creation: bool,
    }
}

wire_struct! {
    /// A live broker and its address on the listener the request arrived on.
    pub struct MetadataBroker {
        /// The broker's node id.
        pub broker_id: BrokerId,
        /// Advertised host name or IP address.
        pub host: String,
        /// Advertised TCP port.
        pub port: u16,
        /// Rack of the broker, if configured.
        pub rack: Option<String>,
    }
}

wire_struct! {
    /// One partition's replicas and leadership.
    pub struct MetadataPartition {
        /// NONE, or why this partition could not be described (LEADER_NOT_AVAILABLE...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The partition's index.
        pub partition: PartitionId,
        /// The current leader, or -1 when there is none.
        pub leader: BrokerId,
        /// The current leader epoch.
        pub leader_epoch: LeaderEpoch,
        /// Every assigned replica, preferred leader first.
        pub replicas: Vec<BrokerId>,
        /// The in-sync replicas.
        pub isr: Vec<BrokerId>,
        /// Assigned replicas whose broker is offline.
        pub offline_replicas: Vec<BrokerId>,
    }
}

wire_struct! {
    /// One topic's description.
    pub struct MetadataTopic {
        /// NONE, or why the topic could not be described (UNKNOWN_TOPIC_OR_PARTITION...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The topic's name.
        pub name: String,
        /// Whether the topic is internal (`__consumer_offsets`).
        pub is_internal: bool,
        /// Replicas per partition.
        pub replication_factor: i16,
        /// The topic's configuration overrides.
        pub configs: Vec<ConfigEntry>,
        /// The topic's partitions.
        pub partitions: Vec<MetadataPartition>,
    }
}

wire_struct! {
    /// The cluster as the answering broker sees it.
    pub struct MetadataResponse {
        /// The cluster's id.
        pub cluster_id: String,
        /// The active controller, or -1 when unknown.
        pub controller_id: BrokerId,
        /// Live (unfenced) brokers.
        pub brokers: Vec<MetadataBroker>,
        /// The requested topics.
        pub topics: Vec<MetadataTopic>,
    }
}

wire_struct! {
    /// Asks for the cluster's brokers (fenced ones too) and its controller quorum: what
    /// `sluice cluster describe` shows. Metadata lists only live brokers, for routing.
    pub struct DescribeClusterRequest {
        /// Whether to list fenced brokers as well as active ones.
        pub include_fenced_brokers: bool,
    }
}

wire_struct! {
    /// A registered broker and its state.
    pub struct DescribeClusterBroker {
        /// The broker's node id.
        pub broker_id: BrokerId,
        /// Advertised host name or IP address on the native listener.
        pub host: String,
        /// Advertised TCP port on the native listener.
        pub port: u16,
        /// Whether the controller has fenced the broker (its session expired).
        pub fenced: bool,
    }
}

wire_struct! {
    /// The cluster's brokers and controller quorum.
    pub struct DescribeClusterResponse {
        /// The cluster's id.
        pub cluster_id: String,
        /// The active controller (the Raft leader of the metadata log), or -1 when unknown.
        pub controller_id: BrokerId,
        /// Node ids of the controller quorum's voters.
        pub voters: Vec<BrokerId>,
        /// Registered brokers.
        pub brokers: Vec<DescribeClusterBroker>,
    }
}
