//! Producer ids for idempotent (and later transactional) producers. A producer asks any
//! broker for an id (InitProducerId); brokers take ids from the controller in blocks
//! (AllocateProducerIds), so ids are unique cluster-wide without a round trip per producer.

use crate::error_code::ErrorCode;
use crate::types::BrokerId;
use crate::wire::wire_struct;

wire_struct! {
    /// A producer asks for an id and epoch.
    pub struct InitProducerIdRequest {
        /// The transactional id, or null for an idempotent producer.
        pub transactional_id: Option<String>,
        /// Transaction timeout (ms); ignored without a transactional id.
        pub transaction_timeout_ms: i32,
        /// The producer's current id to bump the epoch of, or -1 for a new producer.
        pub producer_id: i64,
        /// The producer's current epoch, or -1.
        pub producer_epoch: i16,
    }
}

wire_struct! {
    /// The producer's id and epoch.
    pub struct InitProducerIdResponse {
        /// NONE, or why no id was given.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The producer id.
        pub producer_id: i64,
        /// The producer epoch.
        pub producer_epoch: i16,
    }
}

wire_struct! {
    /// A broker asks the controller for a block of producer ids.
    pub struct AllocateProducerIdsRequest {
        /// The broker's node id.
        pub broker_id: BrokerId,
        /// Its broker epoch.
        pub broker_epoch: i64,
    }
}

wire_struct! {
    /// A block of producer ids, now owned by the asking broker.
    pub struct AllocateProducerIdsResponse {
        /// NONE, or why no block was allocated.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
        /// The first id of the block.
        pub producer_id_start: i64,
        /// How many ids the block holds.
        pub producer_id_len: i32,
    }
}
