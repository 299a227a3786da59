//! Produce: appends record batches to partition leaders. The batches travel as opaque
//! `Bytes` sliced from the frame, so the broker validates and stamps them in place and never
//! copies a record payload (DESIGN §3, §8).

use bytes::Bytes;

use crate::error_code::ErrorCode;
use crate::types::{Offset, PartitionId};
use crate::wire::wire_struct;

/// `acks` value: the leader answers without waiting for the write.
pub const ACKS_NONE: i16 = 0;
/// `acks` value: the leader answers once it has written the batch itself.
pub const ACKS_LEADER: i16 = 1;
/// `acks` value: the leader answers once the high watermark covers the batch.
pub const ACKS_ALL: i16 = -1;

/// Which acknowledgement a produce waits for; on the wire an `i16` (0, 1, -1), the same
/// numbers in the native and the Kafka protocol. One type for the client that asks and the
/// broker that honours it.
///
/// ```
/// use sluice_protocol::Acks;
/// assert_eq!(Acks::from_wire(-1), Some(Acks::All));
/// assert_eq!(Acks::All.to_wire(), -1);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Acks {
    /// None: the broker does not answer; a record counts as delivered once written to the
    /// socket, and its offset is unknown (-1). The append still happens (and, under
    /// `fsync` durability, becomes durable), unobserved.
    None,
    /// The leader has written the record to its log (durably, under `fsync`).
    Leader,
    /// Every in-sync replica has it (the high watermark covers it). The default.
    #[default]
    All,
}

impl Acks {
    /// The wire value: 0, 1 or -1.
    pub fn to_wire(self) -> i16 {
        match self {
            Acks::None => ACKS_NONE,
            Acks::Leader => ACKS_LEADER,
            Acks::All => ACKS_ALL,
        }
    }

    /// The acks of a wire value, `None` for anything but 0, 1 and -1.
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            ACKS_NONE => Some(Acks::None),
            ACKS_LEADER => Some(Acks::Leader),
            ACKS_ALL => Some(Acks::All),
            _ => None,
        }
    }
}

wire_struct! {
    /// Records for one partition.
    pub struct ProducePartition {
        /// The partition's index.
        pub partition: PartitionId,
        /// One or more RecordBatch v2 batches, back to back.
        pub records: Bytes,
    }
}

wire_struct! {
    /// Records for one topic.
    pub struct ProduceTopic {
        /// The topic's name.
        pub name: String,
        /// Its partitions' records.
        pub partitions: Vec<ProducePartition>,
    }
}

wire_struct! {
    /// Appends records.
    pub struct ProduceRequest {
        /// The transactional id of a transactional producer (Kafka's Produce v3+ field),
        /// `None` for any other. A batch that begins the producer's transaction in a
        /// partition is appended only once this id's coordinator confirms the partition is
        /// in the transaction (KIP-890), so such a batch needs it.
        pub transactional_id: Option<String>,
        /// 0 (no response), 1 (leader written) or -1 (all in-sync replicas).
        pub acks: i16,
        /// How long the leader may wait for replication before answering, in milliseconds.
        pub timeout_ms: i32,
        /// The records, by topic.
        pub topics: Vec<ProduceTopic>,
    }
}

wire_struct! {
    /// The outcome for one partition.
    pub struct ProducePartitionResponse {
        /// The partition's index.
        pub partition: PartitionId,
        /// NONE, or why the records were not (durably) written.
        pub error_code: ErrorCode,
        /// Details of the error for a human ("the broker's data disk is full"), if any.
        pub error_message: Option<String>,
        /// Offset of the first record written, or -1 on error.
        pub base_offset: Offset,
        /// Broker's append time in ms when the topic uses log-append time, else -1.
        pub log_append_time_ms: i64,
        /// The partition's log start offset after the append.
        pub log_start_offset: Offset,
    }
}

wire_struct! {
    /// The outcomes for one topic.
    pub struct ProduceTopicResponse {
        /// The topic's name.
        pub name: String,
        /// One result per partition of the request.
        pub partitions: Vec<ProducePartitionResponse>,
    }
}

wire_struct! {
    /// Per-partition outcomes of a Produce request.
    pub struct ProduceResponse {
        /// One entry per topic of the request.
        pub topics: Vec<ProduceTopicResponse>,
    }
}
