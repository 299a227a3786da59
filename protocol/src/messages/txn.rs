//! Transactions (issue 26). WriteTxnMarkers: a transaction coordinator has the leaders of a
//! transaction's partitions write its commit or abort marker (Kafka's api 27, sent between
//! brokers only).

use super::{TopicPartitionResults, TopicPartitions};
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
