//! Offsets: ListOffsets (log positions by time), DeleteRecords (the log start moved up),
//! and the committed offsets of consumer
//! groups (OffsetCommit, OffsetFetch, and sluice's admin ResetOffsets). Committed offsets
//! are records in `__consumer_offsets`, so every commit is replicated like any data.

use crate::error_code::ErrorCode;
use crate::types::{BrokerId, LeaderEpoch, Offset, PartitionId};
use crate::wire::wire_struct;

use super::fetch::IsolationLevel;
use super::{TopicPartitionResults, TopicPartitions};

/// ListOffsets timestamp meaning "the log start offset".
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// ListOffsets timestamp meaning "the log end offset" (the high watermark for consumers).
pub const LATEST_TIMESTAMP: i64 = -1;

wire_struct! {
    /// One partition to look up.
    pub struct ListOffsetsPartition {
        /// The partition's index.
        pub partition: PartitionId,
        /// The leader epoch the client knows, or -1.
        pub current_leader_epoch: LeaderEpoch,
        /// -2 earliest, -1 latest, else the first offset with a timestamp >= this (ms).
        pub timestamp: i64,
    }
}

wire_struct! {
    /// The partitions to look up in one topic.
    pub struct ListOffsetsTopic {
        /// The topic's name.
        pub name: String,
        /// Its partitions.
        pub partitions: Vec<ListOffsetsPartition>,
    }
}

wire_struct! {
    /// Finds offsets by timestamp.
    pub struct ListOffsetsRequest {
        /// The asking broker, or -1 for a client.
        pub replica_id: BrokerId,
        /// Whether "latest" means the high watermark or the last stable offset.
        pub isolation_level: IsolationLevel,
        /// What to look up.
        pub topics: Vec<ListOffsetsTopic>,
    }
}

wire_struct! {
    /// The offset found in one partition.
    pub struct ListOffsetsPartitionResponse {
        /// The partition's index.
        pub partition: PartitionId,
        /// NONE, or why no offset was found.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// Timestamp of the record found (ms), or -1.
        pub timestamp: i64,
        /// The offset found, or -1.
        pub offset: Offset,
        /// Leader epoch of the record at that offset, or -1.
        pub leader_epoch: LeaderEpoch,
    }
}

wire_struct! {
    /// Offsets found in one topic.
    pub struct ListOffsetsTopicResponse {
        /// The topic's name.
        pub name: String,
        /// One entry per partition of the request.
        pub partitions: Vec<ListOffsetsPartitionResponse>,
    }
}

wire_struct! {
    /// Offsets found, by topic and partition.
    pub struct ListOffsetsResponse {
        /// One entry per topic of the request.
        pub topics: Vec<ListOffsetsTopicResponse>,
    }
}

wire_struct! {
    /// Where one partition's records are deleted up to.
    pub struct DeleteRecordsPartition {
        /// The partition's index.
        pub partition: PartitionId,
        /// Records below this offset go; -1 for every committed record.
        pub offset: Offset,
    }
}

wire_struct! {
    /// The partitions of one topic to delete records from.
    pub struct DeleteRecordsTopic {
        /// The topic's name.
        pub name: String,
        /// Its partitions.
        pub partitions: Vec<DeleteRecordsPartition>,
    }
}

wire_struct! {
    /// Deletes the records below an offset of each partition, on its leader (Kafka's
    /// DeleteRecords). The answer waits until the in-sync replicas have deleted them too,
    /// or `timeout_ms` passes.
    pub struct DeleteRecordsRequest {
        /// What to delete.
        pub topics: Vec<DeleteRecordsTopic>,
        /// How long to wait for the in-sync replicas, in milliseconds.
        pub timeout_ms: i32,
    }
}

wire_struct! {
    /// The outcome in one partition.
    pub struct DeleteRecordsPartitionResponse {
        /// The partition's index.
        pub partition: PartitionId,
        /// NONE, or why nothing (OFFSET_OUT_OF_RANGE, NOT_LEADER_OR_FOLLOWER) or not all
        /// (REQUEST_TIMED_OUT: the leader deleted them, a follower had not yet) was deleted.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The lowest log start among the in-sync replicas, or -1.
        pub low_watermark: Offset,
    }
}

wire_struct! {
    /// Outcomes in one topic.
    pub struct DeleteRecordsTopicResponse {
        /// The topic's name.
        pub name: String,
        /// One entry per partition of the request.
        pub partitions: Vec<DeleteRecordsPartitionResponse>,
    }
}

wire_struct! {
    /// Per-partition outcomes of a DeleteRecords.
    pub struct DeleteRecordsResponse {
        /// One entry per topic of the request.
        pub topics: Vec<DeleteRecordsTopicResponse>,
    }
}

wire_struct! {
    /// One offset to commit.
    pub struct OffsetCommitPartition {
        /// The partition's index.
        pub partition: PartitionId,
        /// The next offset the group will consume.
        pub committed_offset: Offset,
        /// Leader epoch of the last record consumed, or -1.
        pub committed_leader_epoch: LeaderEpoch,
        /// Free-form metadata stored with the offset.
        pub committed_metadata: Option<String>,
    }
}

wire_struct! {
    /// Offsets to commit in one topic.
    pub struct OffsetCommitTopic {
        /// The topic's name.
        pub name: String,
        /// Its partitions.
        pub partitions: Vec<OffsetCommitPartition>,
    }
}

wire_struct! {
    /// Commits a group member's consumed offsets.
    pub struct OffsetCommitRequest {
        /// The group.
        pub group_id: String,
        /// The member's generation, or -1 for a commit outside group management.
        pub generation_id: i32,
        /// The member's id, or empty outside group management.
        pub member_id: String,
        /// The member's static instance id, if any.
        pub group_instance_id: Option<String>,
        /// The offsets.
        pub topics: Vec<OffsetCommitTopic>,
    }
}

wire_struct! {
    /// Per-partition outcomes of an OffsetCommit request.
    pub struct OffsetCommitResponse {
        /// One entry per topic of the request.
        pub topics: Vec<TopicPartitionResults>,
    }
}

wire_struct! {
    /// Reads a group's committed offsets.
    pub struct OffsetFetchRequest {
        /// The group.
        pub group_id: String,
        /// Partitions to read; null means every partition the group has offsets for.
        pub topics: Option<Vec<TopicPartitions>>,
        /// Wait for pending transactional commits to settle rather than returning them.
        pub require_stable: bool,
    }
}

wire_struct! {
    /// One committed offset.
    pub struct OffsetFetchPartition {
        /// The partition's index.
        pub partition: PartitionId,
        /// The committed offset, or -1 when the group has committed none.
        pub committed_offset: Offset,
        /// Leader epoch stored with the offset, or -1.
        pub committed_leader_epoch: LeaderEpoch,
        /// Metadata stored with the offset.
        pub metadata: Option<String>,
        /// NONE, or why the offset could not be read.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// Committed offsets of one topic.
    pub struct OffsetFetchTopic {
        /// The topic's name.
        pub name: String,
        /// Its partitions.
        pub partitions: Vec<OffsetFetchPartition>,
    }
}

wire_struct! {
    /// A group's committed offsets.
    pub struct OffsetFetchResponse {
        /// NONE, or a group-level error (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The offsets, by topic.
        pub topics: Vec<OffsetFetchTopic>,
    }
}

wire_struct! {
    /// One partition's new committed offset.
    pub struct ResetOffsetsPartition {
        /// The partition's index.
        pub partition: PartitionId,
        /// The offset to store as committed.
        pub offset: Offset,
    }
}

wire_struct! {
    /// New committed offsets in one topic.
    pub struct ResetOffsetsTopic {
        /// The topic's name.
        pub name: String,
        /// Its partitions.
        pub partitions: Vec<ResetOffsetsPartition>,
    }
}

wire_struct! {
    /// Sluice only: an administrator overwrites a group's committed offsets. The client
    /// resolves `--to-earliest`/`--to-latest` with ListOffsets first, so the request carries
    /// explicit offsets. The broker refuses it with NON_EMPTY_GROUP while the group has
    /// members, since they would overwrite the reset with their next commit.
    pub struct ResetOffsetsRequest {
        /// The group.
        pub group_id: String,
        /// The offsets to store.
        pub topics: Vec<ResetOffsetsTopic>,
    }
}

wire_struct! {
    /// Per-partition outcomes of a ResetOffsets request.
    pub struct ResetOffsetsResponse {
        /// NONE, or a group-level error (NON_EMPTY_GROUP, NOT_COORDINATOR...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// One entry per topic of the request.
        pub topics: Vec<TopicPartitionResults>,
    }
}
