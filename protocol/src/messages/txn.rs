//! Transactions (issue 26): a transactional producer's requests to its transaction
//! coordinator (AddPartitionsToTxn, AddOffsetsToTxn, EndTxn; InitProducerId is in
//! `producer_id`) and to its consumer group's coordinator (TxnOffsetCommit), and
//! WriteTxnMarkers, with which the coordinator has the leaders of a transaction's
//! partitions write its commit or abort marker (sent between brokers only). Kafka's api
//! keys, but for VerifyTxn (sluice only, between brokers): a leader asks the coordinator
//! whether partitions are in a producer's ongoing transaction before a batch begins the
//! transaction there (Kafka's AddPartitionsToTxn v4 with VerifyOnly, KIP-890).

use super::{OffsetCommitTopic, TopicPartitionResults, TopicPartitions};
use crate::error_code::ErrorCode;
use crate::wire::wire_struct;

wire_struct! {
    /// One transaction's marker, for each of its partitions on the receiving leader.
    pub struct WritableTxnMarker {
        /// The transaction's producer.
        pub producer_id: i64,
        /// The producer epoch the marker is written in.
        pub producer_epoch: i16,
        /// Commit (true) or abort (false).
        pub committed: bool,
        /// The partitions to write it to.
        pub topics: Vec<TopicPartitions>,
        /// The epoch of the coordinator's `__transaction_state` partition (its leader
        /// epoch): a marker of an older coordinator is refused.
        pub coordinator_epoch: i32,
    }
}

wire_struct! {
    /// Writes transaction markers.
    pub struct WriteTxnMarkersRequest {
        /// The markers, each to its partitions.
        pub markers: Vec<WritableTxnMarker>,
    }
}

wire_struct! {
    /// How one marker's writes went.
    pub struct WritableTxnMarkerResult {
        /// The transaction's producer.
        pub producer_id: i64,
        /// One result per partition asked.
        pub topics: Vec<TopicPartitionResults>,
    }
}

wire_struct! {
    /// How the markers' writes went, in the request's order.
    pub struct WriteTxnMarkersResponse {
        /// One result per marker.
        pub markers: Vec<WritableTxnMarkerResult>,
    }
}

wire_struct! {
    /// A transactional producer adds partitions to its open transaction (or opens one) before
    /// it sends to them.
    pub struct AddPartitionsToTxnRequest {
        /// The producer's transactional id.
        pub transactional_id: String,
        /// Its producer id.
        pub producer_id: i64,
        /// Its epoch.
        pub producer_epoch: i16,
        /// The partitions.
        pub topics: Vec<TopicPartitions>,
    }
}

wire_struct! {
    /// Per-partition outcomes of an AddPartitionsToTxn.
    pub struct AddPartitionsToTxnResponse {
        /// One result per partition asked.
        pub topics: Vec<TopicPartitionResults>,
    }
}

wire_struct! {
    /// Ends a transaction: commit or abort.
    pub struct EndTxnRequest {
        /// The producer's transactional id.
        pub transactional_id: String,
        /// Its producer id.
        pub producer_id: i64,
        /// Its epoch.
        pub producer_epoch: i16,
        /// Commit (true) or abort (false).
        pub committed: bool,
    }
}

wire_struct! {
    /// The outcome of a transaction request with a single result (EndTxn).
    pub struct TxnResponse {
        /// NONE, or why it was refused.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// A transactional producer adds its consumer group's offsets to its open transaction
    /// (or opens one), before it commits them with TxnOffsetCommit. Answered with a
    /// [`TxnResponse`].
    pub struct AddOffsetsToTxnRequest {
        /// The producer's transactional id.
        pub transactional_id: String,
        /// Its producer id.
        pub producer_id: i64,
        /// Its epoch.
        pub producer_epoch: i16,
        /// The consumer group whose offsets the transaction will commit.
        pub group_id: String,
    }
}

wire_struct! {
    /// Commits a consumer group's offsets in a producer's transaction, to the group's
    /// coordinator: they count only if the transaction commits. Answered with an
    /// [`super::OffsetCommitResponse`].
    pub struct TxnOffsetCommitRequest {
        /// The producer's transactional id.
        pub transactional_id: String,
        /// The group.
        pub group_id: String,
        /// The producer's id.
        pub producer_id: i64,
        /// Its epoch.
        pub producer_epoch: i16,
        /// The consumer's generation, or -1 to skip the check.
        pub generation_id: i32,
        /// The consumer's member id, or empty to skip the check.
        pub member_id: String,
        /// The offsets.
        pub topics: Vec<OffsetCommitTopic>,
    }
}

wire_struct! {
    /// A partition leader asks a transaction coordinator whether partitions are in the
    /// ongoing transaction of a producer (id and epoch), before a batch of that producer
    /// begins the transaction there. Changes nothing.
    pub struct VerifyTxnRequest {
        /// The producer's transactional id.
        pub transactional_id: String,
        /// Its producer id.
        pub producer_id: i64,
        /// Its epoch.
        pub producer_epoch: i16,
        /// The partitions.
        pub topics: Vec<TopicPartitions>,
    }
}

wire_struct! {
    /// Per-partition answers of a VerifyTxn: NONE when the partition is in the ongoing
    /// transaction, INVALID_TXN_STATE when it is not. A refusal of the whole request
    /// (another producer id or epoch, a transaction completing, not the coordinator) is
    /// the response's top-level error.
    pub struct VerifyTxnResponse {
        /// One result per partition asked.
        pub topics: Vec<TopicPartitionResults>,
    }
}
