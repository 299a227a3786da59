//! CreateTopics and DeleteTopics: topic administration, answered by the controller. Results
//! are per topic, so one bad name does not fail a whole batch of creations.

use crate::error_code::ErrorCode;
use crate::wire::wire_struct;

use super::{ConfigEntry, TopicPartitionResults, TopicPartitions};
use crate::types::{BrokerId, PartitionId};

wire_struct! {
    /// The brokers of one partition, placed by the user (the first leads).
    pub struct ReplicaAssignment {
        /// The partition's index.
        pub partition: PartitionId,
        /// Its replicas' brokers, preferred leader first.
        pub broker_ids: Vec<BrokerId>,
    }
}

wire_struct! {
    /// One topic to create.
    pub struct CreatableTopic {
        /// The topic's name.
        pub name: String,
        /// Number of partitions, or -1 for the broker's default (-1 with `assignments`).
        pub num_partitions: i32,
        /// Replicas per partition, or -1 for the broker's default (-1 with `assignments`).
        pub replication_factor: i16,
        /// Configuration overrides (`retention.ms`, `min.insync.replicas`, ...).
        pub configs: Vec<ConfigEntry>,
        /// The replicas of every partition, placed by the user; empty to let the
        /// controller place them.
        pub assignments: Vec<ReplicaAssignment>,
    }
}

wire_struct! {
    /// Creates topics.
    pub struct CreateTopicsRequest {
        /// The topics to create.
        pub topics: Vec<CreatableTopic>,
        /// How long to wait for the creation to be committed, in milliseconds.
        pub timeout_ms: i32,
        /// Validate the request without creating anything.
        pub validate_only: bool,
    }
}

wire_struct! {
    /// The outcome of one topic creation.
    pub struct CreatableTopicResult {
        /// The topic's name.
        pub name: String,
        /// NONE, or why it was not created (TOPIC_ALREADY_EXISTS, INVALID_CONFIG...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// Partitions the topic has (or would have, with `validate_only`).
        pub num_partitions: i32,
        /// Its replication factor.
        pub replication_factor: i16,
    }
}

wire_struct! {
    /// Per-topic outcomes of a CreateTopics request.
    pub struct CreateTopicsResponse {
        /// One result per requested topic.
        pub topics: Vec<CreatableTopicResult>,
    }
}

wire_struct! {
    /// Deletes topics.
    pub struct DeleteTopicsRequest {
        /// Names of the topics to delete.
        pub topic_names: Vec<String>,
        /// How long to wait for the deletion to be committed, in milliseconds.
        pub timeout_ms: i32,
    }
}

wire_struct! {
    /// One change of a topic config (Kafka's IncrementalAlterConfigs operations: 0 sets
    /// the value, 1 deletes the override; 2 and 3, append and subtract, are for list
    /// configs, which sluice has none of).
    pub struct AlterableConfig {
        /// The config key.
        pub name: String,
        /// 0 set, 1 delete.
        pub operation: i8,
        /// The value to set; null to delete.
        pub value: Option<String>,
    }
}

wire_struct! {
    /// The config changes of one topic.
    pub struct AlterableTopic {
        /// The topic.
        pub name: String,
        /// Its changes, applied together.
        pub configs: Vec<AlterableConfig>,
    }
}

wire_struct! {
    /// Changes topic configs after creation.
    pub struct AlterConfigsRequest {
        /// The topics and their changes.
        pub topics: Vec<AlterableTopic>,
        /// Only check the changes.
        pub validate_only: bool,
    }
}

wire_struct! {
    /// The outcome of one topic's changes.
    pub struct AlterConfigsResult {
        /// The topic.
        pub name: String,
        /// NONE, or why nothing was changed.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// Per-topic outcomes of an AlterConfigs request.
    pub struct AlterConfigsResponse {
        /// One result per topic.
        pub topics: Vec<AlterConfigsResult>,
    }
}

/// An [`AlterableConfig`] operation: set the value.
pub const CONFIG_SET: i8 = 0;
/// An [`AlterableConfig`] operation: delete the override (back to the broker default).
pub const CONFIG_DELETE: i8 = 1;

wire_struct! {
    /// The outcome of one topic deletion.
    pub struct DeletableTopicResult {
        /// The topic's name.
        pub name: String,
        /// NONE, or why it was not deleted.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// Per-topic outcomes of a DeleteTopics request.
    pub struct DeleteTopicsResponse {
        /// One result per requested topic.
        pub responses: Vec<DeletableTopicResult>,
    }
}

wire_struct! {
    /// One topic to grow.
    pub struct CreatePartitionsTopic {
        /// The topic.
        pub name: String,
        /// The partition count it should have: more than it has.
        pub count: i32,
    }
}

wire_struct! {
    /// Adds partitions to topics (Kafka's CreatePartitions). The new partitions' replicas
    /// are placed by the controller; existing partitions and their records stay as they
    /// are, so keyed records of the topic map to other partitions from then on.
    pub struct CreatePartitionsRequest {
        /// The topics and their new partition counts.
        pub topics: Vec<CreatePartitionsTopic>,
        /// How long to wait for the change to be committed, in milliseconds.
        pub timeout_ms: i32,
        /// Only check the request.
        pub validate_only: bool,
    }
}

wire_struct! {
    /// The outcome of one topic's growth.
    pub struct CreatePartitionsTopicResult {
        /// The topic.
        pub name: String,
        /// NONE, or why it did not grow (INVALID_PARTITIONS, UNKNOWN_TOPIC_OR_PARTITION...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// Per-topic outcomes of a CreatePartitions request.
    pub struct CreatePartitionsResponse {
        /// One result per topic.
        pub results: Vec<CreatePartitionsTopicResult>,
    }
}

wire_struct! {
    /// Moves partitions' leadership to their preferred replicas (Kafka's ElectLeaders of
    /// the preferred type), where those can lead now.
    pub struct ElectLeadersRequest {
        /// The partitions, or null for every partition of every topic.
        pub topics: Option<Vec<TopicPartitions>>,
        /// How long to wait for the change to be committed, in milliseconds.
        pub timeout_ms: i32,
    }
}

wire_struct! {
    /// Per-partition outcomes of an ElectLeaders: NONE (moved), ELECTION_NOT_NEEDED (it
    /// leads already), PREFERRED_LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION.
    pub struct ElectLeadersResponse {
        /// One entry per topic; with a null request, the partitions that were elected or
        /// could not be.
        pub topics: Vec<TopicPartitionResults>,
    }
}

wire_struct! {
    /// One component of a client quota's entity.
    pub struct QuotaEntityComponent {
        /// `user` or `client-id`.
        pub entity_type: String,
        /// The user or client id, or null for the default one.
        pub name: Option<String>,
    }
}

wire_struct! {
    /// One quota of an entity set or removed.
    pub struct QuotaOp {
        /// `producer_byte_rate` or `consumer_byte_rate`.
        pub key: String,
        /// Bytes per second (ignored when removed).
        pub value: i64,
        /// Remove the quota instead of setting it.
        pub remove: bool,
    }
}

wire_struct! {
    /// The quota changes of one entity.
    pub struct QuotaAlteration {
        /// The entity: a user, a client id, or both.
        pub entity: Vec<QuotaEntityComponent>,
        /// Its quotas set or removed.
        pub ops: Vec<QuotaOp>,
    }
}

wire_struct! {
    /// Sets or removes client quotas (Kafka's AlterClientQuotas).
    pub struct AlterClientQuotasRequest {
        /// One entry per entity.
        pub entries: Vec<QuotaAlteration>,
        /// Check the changes and make none.
        pub validate_only: bool,
    }
}

wire_struct! {
    /// The outcome of one entity's changes.
    pub struct QuotaResult {
        /// NONE, or why the entry was refused.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// One outcome per entry, in request order.
    pub struct AlterClientQuotasResponse {
        /// The outcomes.
        pub results: Vec<QuotaResult>,
    }
}

wire_struct! {
    /// One component of a DescribeClientQuotas filter.
    pub struct QuotaFilterComponent {
        /// `user` or `client-id`.
        pub entity_type: String,
        /// 0: exactly `name`; 1: the default; 2: any (the entity has the component).
        pub match_type: i8,
        /// The name, for match type 0.
        pub name: Option<String>,
    }
}

wire_struct! {
    /// Lists client quotas (Kafka's DescribeClientQuotas).
    pub struct DescribeClientQuotasRequest {
        /// The components every listed entity matches (empty: every entity).
        pub components: Vec<QuotaFilterComponent>,
        /// Only entities with no component the filter does not name.
        pub strict: bool,
    }
}

wire_struct! {
    /// One quota of an entity.
    pub struct QuotaValue {
        /// `producer_byte_rate` or `consumer_byte_rate`.
        pub key: String,
        /// Bytes per second.
        pub value: i64,
    }
}

wire_struct! {
    /// An entity's quotas.
    pub struct QuotaEntry {
        /// The entity.
        pub entity: Vec<QuotaEntityComponent>,
        /// Its quotas.
        pub values: Vec<QuotaValue>,
    }
}

wire_struct! {
    /// The quotas the filter selects, sorted by entity.
    pub struct DescribeClientQuotasResponse {
        /// One entry per entity.
        pub entries: Vec<QuotaEntry>,
    }
}

wire_struct! {
    /// One partition of a reassignment.
    pub struct ReassignablePartition {
        /// The partition.
        pub partition: PartitionId,
        /// Its target replicas, preferred leader first, or null to cancel its reassignment.
        pub replicas: Option<Vec<BrokerId>>,
    }
}

wire_struct! {
    /// The partitions of one topic to reassign.
    pub struct ReassignableTopic {
        /// The topic.
        pub name: String,
        /// Its partitions.
        pub partitions: Vec<ReassignablePartition>,
    }
}

wire_struct! {
    /// Moves partitions to other replicas, or cancels their moves (Kafka's
    /// AlterPartitionReassignments). Answered once the moves began, not when they end.
    pub struct AlterPartitionReassignmentsRequest {
        /// The topics.
        pub topics: Vec<ReassignableTopic>,
        /// How long to wait for the controller, in milliseconds.
        pub timeout_ms: i32,
    }
}

wire_struct! {
    /// One result per partition asked.
    pub struct AlterPartitionReassignmentsResponse {
        /// The topics, in request order.
        pub topics: Vec<TopicPartitionResults>,
    }
}

wire_struct! {
    /// Lists the reassignments under way (Kafka's ListPartitionReassignments).
    pub struct ListPartitionReassignmentsRequest {
        /// Only these partitions, or null for all.
        pub topics: Option<Vec<TopicPartitions>>,
    }
}

wire_struct! {
    /// One partition being reassigned.
    pub struct OngoingReassignment {
        /// The partition.
        pub partition: PartitionId,
        /// Its replicas now: the target's, then those being removed.
        pub replicas: Vec<BrokerId>,
        /// The replicas being added (copying the log).
        pub adding: Vec<BrokerId>,
        /// The replicas removed once the added ones are in sync.
        pub removing: Vec<BrokerId>,
    }
}

wire_struct! {
    /// The partitions of one topic being reassigned.
    pub struct OngoingTopicReassignments {
        /// The topic.
        pub name: String,
        /// Its partitions being reassigned.
        pub partitions: Vec<OngoingReassignment>,
    }
}

wire_struct! {
    /// The reassignments under way, by topic.
    pub struct ListPartitionReassignmentsResponse {
        /// The topics with partitions being reassigned.
        pub topics: Vec<OngoingTopicReassignments>,
    }
}

wire_struct! {
    /// Describes the controller quorum's metadata log (Kafka's DescribeQuorum), answered by
    /// the active controller.
    pub struct DescribeQuorumRequest {
        /// Also list the registered brokers that are not voters (observers).
        pub include_observers: bool,
    }
}

wire_struct! {
    /// One replica of the metadata log.
    pub struct QuorumReplica {
        /// Its node id.
        pub id: BrokerId,
        /// The end of its log as the leader knows it (-1 when it does not).
        pub log_end: i64,
    }
}

wire_struct! {
    /// The metadata log's leader, term, commit point and replicas.
    pub struct DescribeQuorumResponse {
        /// The active controller.
        pub leader: BrokerId,
        /// Its Raft term (Kafka's leader epoch of the metadata log).
        pub term: i64,
        /// The end of what is committed and applied (Kafka's high watermark).
        pub high_watermark: i64,
        /// The voters.
        pub voters: Vec<QuorumReplica>,
        /// The other registered brokers, when asked.
        pub observers: Vec<QuorumReplica>,
    }
}
