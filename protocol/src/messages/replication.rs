//! Broker-to-broker replication: followers pull from leaders with ReplicaFetch, and ask
//! OffsetsForLeaderEpoch where their log diverged before truncating (KIP-101/279: a
//! follower truncates to the leader's answer, never to its own high watermark).
//!
//! Why ReplicaFetch is its own api rather than Fetch with a replica id (Kafka's way): the
//! follower's fields (broker epoch, last fetched epoch, diverging epoch) never mix with a
//! consumer's, and neither request's handler has to branch on who is asking.

use bytes::BytesMut;

use crate::error_code::ErrorCode;
use crate::records::Records;
use crate::types::{BrokerId, LeaderEpoch, Offset, PartitionId};
use crate::wire::{wire_struct, Decode, Encode, Nullable, Reader};
use crate::Result;

wire_struct! {
    /// Where a follower reads one partition from.
    pub struct ReplicaFetchPartition {
        /// The topic's name.
        pub topic: String,
        /// The partition's index.
        pub partition: PartitionId,
        /// The leader epoch the follower knows; stale epochs get FENCED_LEADER_EPOCH.
        pub current_leader_epoch: LeaderEpoch,
        /// The follower's log end offset: the first offset it wants.
        pub fetch_offset: Offset,
        /// Epoch of the last batch in the follower's log, to detect divergence, or -1.
        pub last_fetched_epoch: LeaderEpoch,
        /// The follower's log start offset.
        pub log_start_offset: Offset,
        /// Most bytes to return for this partition (at least one whole batch is returned).
        pub partition_max_bytes: i32,
    }
}

wire_struct! {
    /// A follower's pull of the partitions it replicates from one leader.
    pub struct ReplicaFetchRequest {
        /// The follower's broker id.
        pub replica_id: BrokerId,
        /// The follower's broker epoch, so a leader ignores a fenced incarnation.
        pub broker_epoch: i64,
        /// Longest time the leader may wait for `min_bytes` (ms).
        pub max_wait_ms: i32,
        /// Fewest bytes worth answering with before `max_wait_ms`.
        pub min_bytes: i32,
        /// Most bytes for the whole response.
        pub max_bytes: i32,
        /// The partitions.
        pub partitions: Vec<ReplicaFetchPartition>,
    }
}

wire_struct! {
    /// Where the follower's log diverges from the leader's: the largest epoch the leader
    /// has at or below the follower's last fetched epoch, and where that epoch ends.
    pub struct EpochEndOffset {
        /// The epoch.
        pub epoch: LeaderEpoch,
        /// The end offset of that epoch in the leader's log; truncate to it.
        pub end_offset: Offset,
    }
}

/// On the wire a nullable epoch is a presence byte (0 or 1) then, if present, the struct.
impl Nullable for EpochEndOffset {
    const NULLABLE_MIN_LEN: u32 = 1;
    fn encode_nullable(value: Option<&Self>, buf: &mut BytesMut) -> Result<()> {
        value.is_some().encode(buf)?;
        value.map_or(Ok(()), |v| v.encode(buf))
    }
    fn nullable_len(value: Option<&Self>) -> usize {
        1 + value.map_or(0, Encode::encoded_len)
    }
    fn decode_nullable(r: &mut Reader) -> Result<Option<Self>> {
        if r.get_bool()? {
            EpochEndOffset::decode(r).map(Some)
        } else {
            Ok(None)
        }
    }
}

wire_struct! {
    /// What the leader returns for one partition.
    pub struct ReplicaFetchPartitionResponse {
        /// The topic's name.
        pub topic: String,
        /// The partition's index.
        pub partition: PartitionId,
        /// NONE, or why nothing was returned.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The leader's high watermark.
        pub high_watermark: Offset,
        /// The leader's log start offset.
        pub log_start_offset: Offset,
        /// Set when the follower's log diverged: it must truncate there and fetch again.
        pub diverging_epoch: Option<EpochEndOffset>,
        /// Whole RecordBatch v2 batches, possibly empty.
        pub records: Records,
    }
}

wire_struct! {
    /// The leader's answer to a ReplicaFetch.
    pub struct ReplicaFetchResponse {
        /// One entry per partition of the request.
        pub partitions: Vec<ReplicaFetchPartitionResponse>,
    }
}

wire_struct! {
    /// One partition's epoch to look up.
    pub struct OffsetForLeaderEpochPartition {
        /// The partition's index.
        pub partition: PartitionId,
        /// The leader epoch the asker knows, to fence stale leaders, or -1.
        pub current_leader_epoch: LeaderEpoch,
        /// The epoch whose end offset is wanted.
        pub leader_epoch: LeaderEpoch,
    }
}

wire_struct! {
    /// The epochs to look up in one topic.
    pub struct OffsetForLeaderEpochTopic {
        /// The topic's name.
        pub topic: String,
        /// Its partitions.
        pub partitions: Vec<OffsetForLeaderEpochPartition>,
    }
}

wire_struct! {
    /// Asks a leader where given epochs end in its log.
    pub struct OffsetsForLeaderEpochRequest {
        /// The asking broker, or -1 for a client.
        pub replica_id: BrokerId,
        /// What to look up.
        pub topics: Vec<OffsetForLeaderEpochTopic>,
    }
}

wire_struct! {
    /// Where one epoch ends.
    pub struct OffsetForLeaderEpochPartitionResponse {
        /// The partition's index.
        pub partition: PartitionId,
        /// NONE, or why no answer (FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The largest epoch at or below the requested one, or -1.
        pub leader_epoch: LeaderEpoch,
        /// The end offset of that epoch, or -1.
        pub end_offset: Offset,
    }
}

wire_struct! {
    /// Epoch end offsets of one topic.
    pub struct OffsetForLeaderEpochTopicResponse {
        /// The topic's name.
        pub topic: String,
        /// One entry per partition of the request.
        pub partitions: Vec<OffsetForLeaderEpochPartitionResponse>,
    }
}

wire_struct! {
    /// The leader's epoch end offsets.
    pub struct OffsetsForLeaderEpochResponse {
        /// One entry per topic of the request.
        pub topics: Vec<OffsetForLeaderEpochTopicResponse>,
    }
}
