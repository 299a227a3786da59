//! Kafka's consumer embedded protocol: the subscription a Kafka consumer puts in its
//! JoinGroup metadata and the assignment its group leader sends in SyncGroup, both
//! opaque to the coordinator's rules. The group service reads them only to show a Kafka
//! group's subscriptions and assignments the way a sluice group's are shown (`group
//! describe`, lag), and writes them to show a sluice group to Kafka tools. Each is a
//! version (`i16`) followed by the message at that version, as Kafka's
//! `ConsumerProtocol` encodes them; the codecs are the `kafka-protocol` crate's.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_protocol::messages::TopicPartitions;
use sluice_protocol::PartitionId;

use super::group::MemberAssignment;

/// The protocol type of Kafka consumers' groups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// Newest version of the embedded messages this broker reads.
const VERSION_MAX: i16 = 3;
/// The version this broker writes (the oldest, which every consumer reads).
const VERSION_WRITTEN: i16 = 0;

/// The topics in a consumer's subscription metadata, if it decodes.
pub fn decode_subscription(metadata: &Bytes) -> Option<Vec<String>> {
    let mut buf = metadata.clone();
    let version = read_version(&mut buf)?;
    let subscription = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// The partitions in a leader's assignment for one member, if it decodes.
pub fn decode_assignment(assignment: &Bytes) -> Option<Vec<TopicPartitions>> {
    if assignment.is_empty() {
        return Some(Vec::new());
    }
    let mut buf = assignment.clone();
    let version = read_version(&mut buf)?;
    let decoded = ConsumerProtocolAssignment::decode(&mut buf, version).ok()?;
    Some(
        decoded
            .assigned_partitions
            .into_iter()
            .map(|tp| TopicPartitions {
                topic: tp.topic.0.to_string(),
                partitions: tp.partitions.into_iter().map(PartitionId).collect(),
            })
            .collect(),
    )
}

/// A subscription as a Kafka consumer would encode it.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    versioned(|buf| subscription.encode(buf, VERSION_WRITTEN).is_ok())
}

/// Partitions as a Kafka group leader would encode them for a member.
pub fn encode_assignment(partitions: &[TopicPartitions]) -> Bytes {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        partitions
            .iter()
            .map(|tp| {
                AssignedPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(tp.partitions.iter().map(|p| p.0).collect())
            })
            .collect(),
    );
    versioned(|buf| assignment.encode(buf, VERSION_WRITTEN).is_ok())
}

impl MemberAssignment {
    /// The partitions of the share: as assigned, or decoded from a Kafka leader's bytes
    /// (empty when they are not Kafka's consumer protocol).
    pub fn partitions(&self) -> Vec<TopicPartitions> {
        match self {
            MemberAssignment::Partitions(partitions) => partitions.clone(),
            MemberAssignment::Opaque(bytes) => decode_assignment(bytes).unwrap_or_default(),
        }
    }

    /// The share as a Kafka consumer reads it: the leader's bytes verbatim, or the
    /// assigned partitions encoded in Kafka's consumer protocol.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            MemberAssignment::Partitions(partitions) => encode_assignment(partitions),
            MemberAssignment::Opaque(bytes) => bytes.clone(),
        }
    }
}

fn read_version(buf: &mut Bytes) -> Option<i16> {
    if buf.remaining() < 2 {
        return None;
    }
    let version = buf.get_i16();
    // Newer versions only add fields: read them as the newest this build knows.
    (version >= 0).then_some(version.min(VERSION_MAX))
}

fn versioned(encode: impl FnOnce(&mut BytesMut) -> bool) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VERSION_WRITTEN);
    if !encode(&mut buf) {
        // Only a string over 32 KiB fails to encode; topic names are at most 249 bytes.
        buf.truncate(2);
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let topics = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            decode_subscription(&encode_subscription(&topics)),
            Some(topics)
        );
        let partitions = vec![TopicPartitions {
            topic: "a".into(),
            partitions: vec![PartitionId(0), PartitionId(3)],
        }];
        let bytes = encode_assignment(&partitions);
        assert_eq!(decode_assignment(&bytes), Some(partitions.clone()));
        assert_eq!(
            MemberAssignment::Opaque(bytes.clone()).partitions(),
            partitions
        );
        assert_eq!(MemberAssignment::Partitions(partitions).to_bytes(), bytes);
        assert_eq!(decode_assignment(&Bytes::from_static(b"\x00")), None);
        assert_eq!(decode_subscription(&Bytes::from_static(b"junk")), None);
    }
}
