//! Fetch: consumers read record batches below the high watermark. Records come back as
//! opaque bytes, the same bytes the producer sent (DESIGN §3), which a broker may send
//! straight from a segment file ([`Records`]). Followers use ReplicaFetch
//! instead (see `replication`), so this request never carries a replica id.

use crate::error_code::ErrorCode;
use crate::records::Records;
use crate::types::{LeaderEpoch, Offset, PartitionId};
use crate::wire::{wire_enum_i8, wire_struct};

wire_enum_i8! {
    /// Which records a consumer may see.
    pub enum IsolationLevel {
        /// Everything below the high watermark.
        ReadUncommitted = 0,
        /// Only records below the last stable offset (no open transactions), without the
        /// records of aborted transactions.
        ReadCommitted = 1,
    }
}

wire_struct! {
    /// Where to read one partition from.
    pub struct FetchPartition {
        /// The partition's index.
        pub partition: PartitionId,
        /// The leader epoch the client knows, or -1; stale epochs get FENCED_LEADER_EPOCH.
        pub current_leader_epoch: LeaderEpoch,
        /// Offset of the first record wanted.
        pub fetch_offset: Offset,
        /// Most bytes to return for this partition (at least one whole batch is returned).
        pub partition_max_bytes: i32,
    }
}

wire_struct! {
    /// The partitions to read of one topic.
    pub struct FetchTopic {
        /// The topic's name.
        pub topic: String,
        /// Its partitions.
        pub partitions: Vec<FetchPartition>,
    }
}

wire_struct! {
    /// Reads records.
    pub struct FetchRequest {
        /// Longest time the broker may wait for `min_bytes` to accumulate, in milliseconds.
        pub max_wait_ms: i32,
        /// Fewest bytes worth answering with before `max_wait_ms`.
        pub min_bytes: i32,
        /// Most bytes for the whole response (at least one batch is always returned).
        pub max_bytes: i32,
        /// Which records are visible.
        pub isolation_level: IsolationLevel,
        /// What to read.
        pub topics: Vec<FetchTopic>,
    }
}

wire_struct! {
    /// A transaction that was aborted, with records in the fetched range: a read_committed
    /// reader drops this producer's transactional batches from `first_offset` until it
    /// reads the producer's abort marker.
    pub struct AbortedTransaction {
        /// The producer whose transaction it was.
        pub producer_id: i64,
        /// The offset of the transaction's first record in this partition.
        pub first_offset: Offset,
    }
}

wire_struct! {
    /// What was read from one partition.
    pub struct FetchPartitionResponse {
        /// The partition's index.
        pub partition: PartitionId,
        /// NONE, or why nothing was read (OFFSET_OUT_OF_RANGE, NOT_LEADER_OR_FOLLOWER...).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The partition's high watermark.
        pub high_watermark: Offset,
        /// The last stable offset (below which no transaction is open).
        pub last_stable_offset: Offset,
        /// The partition's log start offset.
        pub log_start_offset: Offset,
        /// Under read_committed, the aborted transactions with records in `records`
        /// (empty under read_uncommitted).
        pub aborted_transactions: Vec<AbortedTransaction>,
        /// Whole RecordBatch v2 batches, possibly empty.
        pub records: Records,
    }
}

wire_struct! {
    /// What was read from one topic.
    pub struct FetchTopicResponse {
        /// The topic's name.
        pub topic: String,
        /// One entry per partition of the request.
        pub partitions: Vec<FetchPartitionResponse>,
    }
}

wire_struct! {
    /// Records read, by topic and partition.
    pub struct FetchResponse {
        /// One entry per topic of the request.
        pub topics: Vec<FetchTopicResponse>,
    }
}
