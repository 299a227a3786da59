//! The records of the internal topic `__transaction_state`: a transaction coordinator's
//! durable state (issue 26), as `group_log` is the group coordinator's. One kind of record,
//! keyed by transactional id (key version 0, as Kafka's), valued by the id's producer, its
//! epoch, its timeout, where its transaction stands and the partitions in it. The last
//! record of a key wins, so a new coordinator rebuilds its state by replaying the partition
//! from its start; a null value (tombstone) forgets an expired id. Values start with their
//! own version so the schema can grow.

use bytes::Bytes;

use crate::group_log::{unknown_version, versioned};
use crate::messages::TopicPartitions;
use crate::wire::{wire_enum_i8, wire_struct, Decode, Reader};
use crate::Result;

/// The internal topic's name.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Key version (Kafka's, too).
const KEY_VERSION: i16 = 0;
/// The version of values this build writes.
const VALUE_VERSION: i16 = 0;

wire_enum_i8! {
    /// Where a transactional id's transaction stands (Kafka's TransactionState).
    pub enum TxnState {
        /// No transaction: the producer is initialised, or its last one completed.
        Empty = 0,
        /// A transaction is open: partitions have been added to it.
        Ongoing = 1,
        /// Its commit is decided; the markers are being written.
        PrepareCommit = 2,
        /// Its abort is decided; the markers are being written.
        PrepareAbort = 3,
        /// Every marker of the commit is written.
        CompleteCommit = 4,
        /// Every marker of the abort is written.
        CompleteAbort = 5,
    }
}

impl TxnState {
    /// Every state, in order.
    pub const ALL: [TxnState; 6] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
    ];

    /// Its name as Kafka's tools show and filter by it (ListTransactions,
    /// DescribeTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// The state named `name` (exactly as [`TxnState::name`] spells it).
    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }
}

wire_struct! {
    /// A transactional id's state.
    pub struct TxnValue {
        /// The producer id the transactional id has.
        pub producer_id: i64,
        /// Its current epoch (bumped by each InitProducerId, and by the coordinator when it
        /// aborts a transaction on its own).
        pub producer_epoch: i16,
        /// How long a transaction may stay open before the coordinator aborts it (ms).
        pub timeout_ms: i32,
        /// Where its transaction stands.
        pub state: TxnState,
        /// The partitions in the transaction (in a Prepare state: those that get markers).
        pub partitions: Vec<TopicPartitions>,
        /// When the transaction began (ms since the Unix epoch), -1 without one: its
        /// timeout counts from here.
        pub started_ms: i64,
        /// When the coordinator last changed the state (ms since the Unix epoch).
        pub updated_ms: i64,
    }
}

/// The key of a record: the transactional id.
pub fn encode_key(transactional_id: &str) -> Result<Bytes> {
    versioned(KEY_VERSION, &transactional_id.to_owned())
}

/// Reads a key; an unknown version is an error (a record from a newer sluice).
pub fn decode_key(bytes: Bytes) -> Result<String> {
    let mut r = Reader::new(bytes);
    r.set_context("__transaction_state key version");
    match r.get_i16()? {
        KEY_VERSION => {}
        other => return Err(unknown_version("__transaction_state key", other)),
    }
    let id = String::decode(&mut r)?;
    r.finish()?;
    Ok(id)
}

/// The value of a record, at the newest version.
pub fn encode_value(value: &TxnValue) -> Result<Bytes> {
    versioned(VALUE_VERSION, value)
}

/// Reads a value of any version this build knows.
pub fn decode_value(bytes: Bytes) -> Result<TxnValue> {
    let mut r = Reader::new(bytes);
    r.set_context("__transaction_state value version");
    match r.get_i16()? {
        VALUE_VERSION => {}
        other => return Err(unknown_version("__transaction_state value", other)),
    }
    let value = TxnValue::decode(&mut r)?;
    r.finish()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use proptest::test_runner::TestRunner;

    use super::*;
    use crate::wire::testing::Generate;

    #[test]
    fn keys_and_values_round_trip() {
        let mut g = TestRunner::deterministic();
        for _ in 0..200 {
            let value = TxnValue::generate(&mut g);
            assert_eq!(decode_value(encode_value(&value).unwrap()).unwrap(), value);
            let id = String::generate(&mut g);
            assert_eq!(decode_key(encode_key(&id).unwrap()).unwrap(), id);
        }
    }

    #[test]
    fn state_names_round_trip() {
        for state in TxnState::ALL {
            assert_eq!(TxnState::from_name(state.name()), Some(state));
        }
        assert_eq!(TxnState::from_name("ongoing"), None);
    }

    #[test]
    fn the_key_is_kafkas_bytes() {
        // Kafka's TransactionLogKey v0: version 0, then the id as an int16-length string.
        assert_eq!(&encode_key("tx").unwrap()[..], &[0, 0, 0, 2, b't', b'x']);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        assert!(decode_key(Bytes::from_static(&[0, 9, 0, 0])).is_err());
        assert!(decode_value(Bytes::from_static(&[0, 1])).is_err());
        assert!(decode_value(Bytes::from_static(&[0])).is_err());
        let mut value = encode_value(&TxnValue {
            producer_id: 1,
            producer_epoch: 0,
            timeout_ms: 60_000,
            state: TxnState::Empty,
            partitions: vec![],
            started_ms: -1,
            updated_ms: 0,
        })
        .unwrap()
        .to_vec();
        value.push(0);
        assert!(decode_value(Bytes::from(value)).is_err(), "trailing bytes");
    }
}
