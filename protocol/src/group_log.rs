//! The records of the internal topic `__consumer_offsets`: a group coordinator's durable
//! state (DESIGN §1). Two kinds of record, told apart by the version that starts the key,
//! as in Kafka:
//! - an offset commit, keyed by (group, topic, partition), valued by the committed offset;
//! - a group's metadata, keyed by the group, valued by its generation, members and their
//!   assignments, so a new coordinator resumes the generation rather than starting over.
//!
//! A record with a null value (a tombstone) deletes its key: a deleted group, an offset
//! removed with it. The last record of a key wins, so the coordinator rebuilds its state by
//! replaying the partition from its start. Values start with their own version so the
//! schema can grow.

use bytes::{Bytes, BytesMut};

use crate::error::Error;
use crate::messages::TopicPartitions;
use crate::types::{LeaderEpoch, Offset, PartitionId};
use crate::wire::{wire_struct, Decode, Encode, Reader};
use crate::Result;

/// The internal topic's name.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Key version of an offset commit record (Kafka's, too).
const OFFSET_KEY_VERSION: i16 = 1;
/// Key version of a group metadata record (Kafka's, too).
const GROUP_KEY_VERSION: i16 = 2;
/// The version of offset values, and of group values before Kafka's classic protocol.
const VALUE_VERSION: i16 = 0;
/// The version of group values this build writes: members carry their protocol metadata
/// and the leader's assignment (version 0 is still read).
const GROUP_VALUE_VERSION: i16 = 1;

wire_struct! {
    /// The key of an offset commit.
    pub struct OffsetKey {
        /// The group.
        pub group: String,
        /// The topic.
        pub topic: String,
        /// The partition.
        pub partition: PartitionId,
    }
}

wire_struct! {
    /// A committed offset.
    pub struct OffsetValue {
        /// The next offset the group will consume.
        pub offset: Offset,
        /// Leader epoch of the last record consumed, or -1.
        pub leader_epoch: LeaderEpoch,
        /// The committer's free-form metadata.
        pub metadata: Option<String>,
        /// When the coordinator accepted the commit (ms since the Unix epoch).
        pub commit_timestamp: i64,
    }
}

wire_struct! {
    /// One member of a generation.
    pub struct MemberValue {
        /// The member's id.
        pub member_id: String,
        /// Its static instance id, if any.
        pub group_instance_id: Option<String>,
        /// The client id it joined with.
        pub client_id: String,
        /// The host it joined from.
        pub client_host: String,
        /// How long a rebalance waits for it (ms).
        pub rebalance_timeout_ms: i32,
        /// How long it may stay silent (ms).
        pub session_timeout_ms: i32,
        /// The topics it subscribes to.
        pub subscription: Vec<String>,
        /// The partitions it owns in this generation (server-side assignment).
        pub assignment: Vec<TopicPartitions>,
        /// Its metadata for the group's protocol (Kafka's classic protocol: the
        /// subscription its assignor encoded); empty for server-side assignment. Since
        /// value version 1.
        pub protocol_metadata: Bytes,
        /// The assignment the group's leader member computed for it, delivered verbatim
        /// (Kafka's classic protocol); `None` for server-side assignment. Since value
        /// version 1.
        pub leader_assignment: Option<Bytes>,
    }
}

wire_struct! {
    /// A member as value version 0 wrote it (before Kafka's classic protocol).
    pub struct MemberValueV0 {
        pub member_id: String,
        pub group_instance_id: Option<String>,
        pub client_id: String,
        pub client_host: String,
        pub rebalance_timeout_ms: i32,
        pub session_timeout_ms: i32,
        pub subscription: Vec<String>,
        pub assignment: Vec<TopicPartitions>,
    }
}

wire_struct! {
    /// A group's generation, written when a rebalance completes.
    pub struct GroupValue {
        /// The protocol type (`consumer`), or empty for a group with no members.
        pub protocol_type: String,
        /// The generation.
        pub generation: i32,
        /// The protocol chosen for the generation, if any.
        pub protocol_name: Option<String>,
        /// The member id of the group's leader, if any.
        pub leader: Option<String>,
        /// The members with their assignments; empty for an empty group.
        pub members: Vec<MemberValue>,
    }
}

wire_struct! {
    /// A group as value version 0 wrote it.
    pub struct GroupValueV0 {
        pub protocol_type: String,
        pub generation: i32,
        pub protocol_name: Option<String>,
        pub leader: Option<String>,
        pub members: Vec<MemberValueV0>,
    }
}

impl From<GroupValueV0> for GroupValue {
    fn from(v0: GroupValueV0) -> GroupValue {
        GroupValue {
            protocol_type: v0.protocol_type,
            generation: v0.generation,
            protocol_name: v0.protocol_name,
            leader: v0.leader,
            members: v0
                .members
                .into_iter()
                .map(|m| MemberValue {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.subscription,
                    assignment: m.assignment,
                    protocol_metadata: Bytes::new(),
                    leader_assignment: None,
                })
                .collect(),
        }
    }
}

/// The key of a record of `__consumer_offsets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupLogKey {
    /// A committed offset.
    Offset(OffsetKey),
    /// A group's metadata.
    Group(String),
}

impl GroupLogKey {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            GroupLogKey::Offset(key) => &key.group,
            GroupLogKey::Group(group) => group,
        }
    }

    /// The key's bytes.
    pub fn encode(&self) -> Result<Bytes> {
        match self {
            GroupLogKey::Offset(key) => versioned(OFFSET_KEY_VERSION, key),
            GroupLogKey::Group(group) => versioned(GROUP_KEY_VERSION, group),
        }
    }

    /// Reads a key; an unknown version is an error (a record from a newer sluice).
    pub fn decode(bytes: Bytes) -> Result<GroupLogKey> {
        let mut r = Reader::new(bytes);
        r.set_context("__consumer_offsets key version");
        let key = match r.get_i16()? {
            OFFSET_KEY_VERSION => GroupLogKey::Offset(OffsetKey::decode(&mut r)?),
            GROUP_KEY_VERSION => GroupLogKey::Group(String::decode(&mut r)?),
            other => return Err(unknown_version("__consumer_offsets key", other)),
        };
        r.finish()?;
        Ok(key)
    }
}

/// The value of an offset record.
pub fn encode_value<T: Encode>(value: &T) -> Result<Bytes> {
    versioned(VALUE_VERSION, value)
}

/// The value of a group record, at the newest version.
pub fn encode_group_value(value: &GroupValue) -> Result<Bytes> {
    versioned(GROUP_VALUE_VERSION, value)
}

/// Reads a group value of any version this build knows.
pub fn decode_group_value(bytes: Bytes) -> Result<GroupValue> {
    let mut r = Reader::new(bytes);
    r.set_context("__consumer_offsets group value version");
    let value = match r.get_i16()? {
        VALUE_VERSION => GroupValueV0::decode(&mut r)?.into(),
        GROUP_VALUE_VERSION => GroupValue::decode(&mut r)?,
        other => return Err(unknown_version("__consumer_offsets group value", other)),
    };
    r.finish()?;
    Ok(value)
}

/// Reads an offset or group value written by [`encode_value`].
pub fn decode_value<T: Decode>(bytes: Bytes) -> Result<T> {
    let mut r = Reader::new(bytes);
    r.set_context("__consumer_offsets value version");
    match r.get_i16()? {
        VALUE_VERSION => {}
        other => return Err(unknown_version("__consumer_offsets value", other)),
    }
    let value = T::decode(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// `version` then `body`: how every key and value of the internal topics starts.
pub(crate) fn versioned<T: Encode + ?Sized>(version: i16, body: &T) -> Result<Bytes> {
    let mut buf = BytesMut::with_capacity(2 + body.encoded_len());
    version.encode(&mut buf)?;
    body.encode(&mut buf)?;
    Ok(buf.freeze())
}

/// A version this build cannot read (written by a newer one).
pub(crate) fn unknown_version(field: &'static str, version: i16) -> Error {
    Error::Invalid {
        field,
        reason: format!("unknown version {version}; was it written by a newer sluice?"),
    }
}

/// The partition of `__consumer_offsets` whose leader coordinates `group`: Kafka's rule,
/// `abs(hashCode(group)) % partitions` with Java's `String.hashCode` (over UTF-16 code
/// units), so a group lands where a Kafka cluster with as many partitions would put it.
pub fn coordinator_partition(group: &str, partitions: u32) -> PartitionId {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Kafka's Utils.abs: i32::MIN maps to 0 rather than overflowing.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    PartitionId((positive as u32 % partitions.max(1)) as i32)
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
            let offset = GroupLogKey::Offset(OffsetKey::generate(&mut g));
            assert_eq!(
                GroupLogKey::decode(offset.encode().unwrap()).unwrap(),
                offset
            );
            let group = GroupLogKey::Group(String::generate(&mut g));
            assert_eq!(GroupLogKey::decode(group.encode().unwrap()).unwrap(), group);
            let value = OffsetValue::generate(&mut g);
            let decoded: OffsetValue = decode_value(encode_value(&value).unwrap()).unwrap();
            assert_eq!(decoded, value);
            let value = GroupValue::generate(&mut g);
            let decoded = decode_group_value(encode_group_value(&value).unwrap()).unwrap();
            assert_eq!(decoded, value);
            // A version 0 value (written before the classic protocol) still reads.
            let v0 = GroupValueV0::generate(&mut g);
            let mut old = BytesMut::new();
            0i16.encode(&mut old).unwrap();
            v0.encode(&mut old).unwrap();
            let decoded = decode_group_value(old.freeze()).unwrap();
            assert_eq!(decoded, GroupValue::from(v0));
        }
    }

    #[test]
    fn unknown_versions_and_trailing_bytes_are_refused() {
        let mut key = BytesMut::new();
        7i16.encode(&mut key).unwrap();
        "g".to_owned().encode(&mut key).unwrap();
        let err = GroupLogKey::decode(key.freeze()).unwrap_err();
        assert!(err.to_string().contains("unknown version 7"), "{err}");

        let mut long = BytesMut::from(&GroupLogKey::Group("g".into()).encode().unwrap()[..]);
        long.extend_from_slice(b"x");
        assert!(GroupLogKey::decode(long.freeze()).is_err());
        assert!(decode_value::<OffsetValue>(Bytes::from_static(&[0, 1])).is_err());
    }

    #[test]
    fn coordinator_partition_matches_java_string_hash_code() {
        // "my-group".hashCode() == -1,906,497,762 in Java; 1,906,497,762 % 50 == 12.
        assert_eq!(coordinator_partition("my-group", 50), PartitionId(12));
        // "".hashCode() == 0.
        assert_eq!(coordinator_partition("", 16), PartitionId(0));
        // Non-ASCII hashes over UTF-16 code units: "é" is one unit, 0xE9 == 233.
        assert_eq!(coordinator_partition("é", 1000), PartitionId(233));
        for group in ["a", "orders", "Ω-group", "🦀"] {
            assert!(coordinator_partition(group, 16).0 < 16);
        }
    }
}
