//! The error codes that broker and client agree on, carried as `i16` in every response
//! (top level, and per partition or per item where an api acts on several).
//!
//! Why Kafka's numbers: a Kafka-wire listener will later serve the same services, and users
//! and tools already know these codes; sharing them means no translation table. Conditions
//! Kafka has no code for get sluice codes from 1000 up. Decoding is total: a code this build
//! does not know (a newer broker's) decodes to [`ErrorCode::Unknown`] with its number kept,
//! so a response is never refused for carrying one.
//!
//! The enum is not `#[repr(i16)]` because of that catch-all variant, which carries data; the
//! table below is the single source of each code's number, retriability and message.

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::wire::{Decode, Encode, Reader};
use crate::Result;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $retriable:literal, $message:literal; )*) => {
        /// An error code of the native protocol (Kafka's number where Kafka has the condition).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// A code this build does not know, kept as received.
            Unknown(i16),
        }

        impl ErrorCode {
            /// Every known code, for tests and documentation.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code's number on the wire.
            pub fn code(self) -> i16 {
                match self {
                    $( ErrorCode::$variant => $code, )*
                    ErrorCode::Unknown(code) => code,
                }
            }

            /// The code for a number; total, unknown numbers become [`ErrorCode::Unknown`].
            pub fn from_i16(code: i16) -> ErrorCode {
                match code {
                    $( $code => ErrorCode::$variant, )*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// The code's name as Kafka spells it (`NOT_LEADER_OR_FOLLOWER`).
            pub fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $name, )*
                    ErrorCode::Unknown(_) => "UNKNOWN",
                }
            }

            /// Whether the same request may succeed if retried after a short wait (possibly
            /// after refreshing metadata or finding the coordinator again).
            pub fn is_retriable(self) -> bool {
                match self {
                    $( ErrorCode::$variant => $retriable, )*
                    ErrorCode::Unknown(_) => false,
                }
            }

            /// What went wrong and what to do about it, for a human: `what happened; what
            /// to do` (see [`ErrorCode::advice`]).
            pub fn message(self) -> &'static str {
                match self {
                    $( ErrorCode::$variant => $message, )*
                    ErrorCode::Unknown(_) => "an error this client does not know (the broker is newer); upgrade the client to see its meaning",
                }
            }
        }
    };
}

impl ErrorCode {
    /// The "what to do" half of [`ErrorCode::message`] (after its first `"; "`), to follow
    /// a broker's own, more specific account of what happened; `None` for codes that only
    /// state a fact.
    pub fn advice(self) -> Option<&'static str> {
        self.message().split_once("; ").map(|(_, advice)| advice)
    }
}

error_codes! {
    /// An unexpected error on the broker.
    UnknownServerError = -1, "UNKNOWN_SERVER_ERROR", false,
        "the broker hit an unexpected error processing the request; check the broker's log";
    /// Success.
    None = 0, "NONE", false, "no error";
    /// The offset is outside the partition's log.
    OffsetOutOfRange = 1, "OFFSET_OUT_OF_RANGE", false,
        "the requested offset is not within the partition's log; reset the position to the earliest or latest offset";
    /// A record batch failed validation (CRC, size, framing).
    CorruptMessage = 2, "CORRUPT_MESSAGE", true,
        "the record batch failed its CRC check or is malformed; the client retries, and if it persists the producer is building bad batches";
    /// The broker does not host this topic or partition.
    UnknownTopicOrPartition = 3, "UNKNOWN_TOPIC_OR_PARTITION", true,
        "this topic or partition does not exist on the broker; create the topic or refresh metadata";
    /// The fetch size is invalid.
    InvalidFetchSize = 4, "INVALID_FETCH_SIZE", false,
        "the requested fetch size is invalid; use a positive max_bytes";
    /// The partition has no leader right now.
    LeaderNotAvailable = 5, "LEADER_NOT_AVAILABLE", true,
        "the partition has no leader at the moment (an election is under way); retry shortly";
    /// This broker is not the partition's leader (or not a replica).
    NotLeaderOrFollower = 6, "NOT_LEADER_OR_FOLLOWER", true,
        "this broker is not the leader (or not a replica) of the partition; refresh metadata and retry against the leader";
    /// The request timed out.
    RequestTimedOut = 7, "REQUEST_TIMED_OUT", true,
        "the request timed out on the broker; retry, or raise the timeout";
    /// The broker is not available.
    BrokerNotAvailable = 8, "BROKER_NOT_AVAILABLE", false,
        "the broker is not available; check that it is running and reachable";
    /// A replica is not available.
    ReplicaNotAvailable = 9, "REPLICA_NOT_AVAILABLE", true,
        "a replica of the partition is not available; retry shortly";
    /// A record batch is larger than the broker accepts.
    MessageTooLarge = 10, "MESSAGE_TOO_LARGE", false,
        "the record batch is larger than the broker accepts; send smaller batches or raise the topic's max message size";
    /// The metadata of an offset commit is too large.
    OffsetMetadataTooLarge = 12, "OFFSET_METADATA_TOO_LARGE", false,
        "the metadata string of the offset commit is too large; shorten it";
    /// The network failed before a response arrived.
    NetworkException = 13, "NETWORK_EXCEPTION", true,
        "the connection to the broker failed before a response arrived; retry";
    /// The group coordinator is still loading its state.
    CoordinatorLoadInProgress = 14, "COORDINATOR_LOAD_IN_PROGRESS", true,
        "the group coordinator is still loading its state; retry shortly";
    /// The group coordinator is not available.
    CoordinatorNotAvailable = 15, "COORDINATOR_NOT_AVAILABLE", true,
        "the group coordinator is not available; find the coordinator again and retry";
    /// This broker is not the coordinator of the group.
    NotCoordinator = 16, "NOT_COORDINATOR", true,
        "this broker is not the group's coordinator; find the coordinator again and retry";
    /// The topic name is invalid.
    InvalidTopicException = 17, "INVALID_TOPIC_EXCEPTION", false,
        "the topic name is invalid (use ASCII letters, digits, '.', '_' and '-', at most 249 characters) or the topic is internal";
    /// A record batch is larger than a segment.
    RecordListTooLarge = 18, "RECORD_LIST_TOO_LARGE", false,
        "the record batch is larger than the topic's segment size; send smaller batches";
    /// Fewer in-sync replicas than min.insync.replicas: nothing was written.
    NotEnoughReplicas = 19, "NOT_ENOUGH_REPLICAS", true,
        "fewer in-sync replicas than min.insync.replicas, so the write was refused; retry when replicas have caught up";
    /// Written, but the ISR shrank below min.insync.replicas before acknowledgement.
    NotEnoughReplicasAfterAppend = 20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", true,
        "the records were written but the in-sync replicas fell below min.insync.replicas before acknowledgement; retrying may duplicate them unless the producer is idempotent";
    /// acks was not 0, 1 or -1.
    InvalidRequiredAcks = 21, "INVALID_REQUIRED_ACKS", false,
        "acks must be 0, 1 or -1 (all)";
    /// The group generation is not the current one.
    IllegalGeneration = 22, "ILLEGAL_GENERATION", false,
        "the group generation is not the current one; rejoin the group";
    /// The member's protocols do not match the group's.
    InconsistentGroupProtocol = 23, "INCONSISTENT_GROUP_PROTOCOL", false,
        "the member's protocol type or protocols do not match the group's; use the same client type in one group";
    /// The group id is invalid (empty).
    InvalidGroupId = 24, "INVALID_GROUP_ID", false,
        "the group id is invalid; use a non-empty group id";
    /// The coordinator does not know this member.
    UnknownMemberId = 25, "UNKNOWN_MEMBER_ID", false,
        "the coordinator does not know this member (its session may have expired); rejoin the group";
    /// The session timeout is outside the broker's allowed range.
    InvalidSessionTimeout = 26, "INVALID_SESSION_TIMEOUT", false,
        "the session timeout is outside the range the broker allows; pick a value within the broker's group session limits";
    /// The group is rebalancing.
    RebalanceInProgress = 27, "REBALANCE_IN_PROGRESS", false,
        "the group is rebalancing; rejoin the group";
    /// The committed offset's metadata is invalid.
    InvalidCommitOffsetSize = 28, "INVALID_COMMIT_OFFSET_SIZE", false,
        "the offset commit is invalid; check the offsets and metadata";
    /// The principal may not do this to the topic (ACLs).
    TopicAuthorizationFailed = 29, "TOPIC_AUTHORIZATION_FAILED", false,
        "not authorized for this operation on the topic; ask an administrator for an ACL (sluice acl add)";
    /// The principal may not do this to the group (ACLs).
    GroupAuthorizationFailed = 30, "GROUP_AUTHORIZATION_FAILED", false,
        "not authorized for this operation on the group; ask an administrator for an ACL (sluice acl add)";
    /// The principal may not do this to the cluster (ACLs).
    ClusterAuthorizationFailed = 31, "CLUSTER_AUTHORIZATION_FAILED", false,
        "not authorized for this cluster operation; ask an administrator for an ACL (sluice acl add)";
    /// The timestamp is out of range.
    InvalidTimestamp = 32, "INVALID_TIMESTAMP", false,
        "a record timestamp is outside the range the topic accepts; check the producer's clock";
    /// The broker does not offer the SASL mechanism asked for.
    UnsupportedSaslMechanism = 33, "UNSUPPORTED_SASL_MECHANISM", false,
        "the broker does not offer this SASL mechanism; use one of those it lists";
    /// A SASL message arrived out of order.
    IllegalSaslState = 34, "ILLEGAL_SASL_STATE", false,
        "SASL messages arrived out of order; reconnect and authenticate from the start";
    /// The api version is not supported.
    UnsupportedVersion = 35, "UNSUPPORTED_VERSION", false,
        "the broker does not support this api or version; upgrade the broker or use a matching client";
    /// The topic already exists.
    TopicAlreadyExists = 36, "TOPIC_ALREADY_EXISTS", false,
        "a topic with this name already exists; pick another name or use the existing topic";
    /// The partition count is invalid.
    InvalidPartitions = 37, "INVALID_PARTITIONS", false,
        "the number of partitions is invalid; use at least 1";
    /// The replication factor is invalid.
    InvalidReplicationFactor = 38, "INVALID_REPLICATION_FACTOR", false,
        "the replication factor is below 1 or larger than the number of live brokers; lower it or add brokers";
    /// The replica assignment is invalid.
    InvalidReplicaAssignment = 39, "INVALID_REPLICA_ASSIGNMENT", false,
        "the replica assignment is invalid; each partition needs distinct, registered brokers";
    /// A configuration value is invalid.
    InvalidConfig = 40, "INVALID_CONFIG", false,
        "a configuration key or value is invalid; correct it and try again";
    /// This node is not the active controller.
    NotController = 41, "NOT_CONTROLLER", true,
        "this node is not the active controller; retry against the current controller";
    /// The request is malformed.
    InvalidRequest = 42, "INVALID_REQUEST", false,
        "the request is malformed or not valid for this broker; the client and broker may be incompatible, see the error message";
    /// The request violates a configured policy.
    PolicyViolation = 44, "POLICY_VIOLATION", false,
        "the request violates a policy configured on the broker";
    /// A producer sequence number is out of order.
    OutOfOrderSequenceNumber = 45, "OUT_OF_ORDER_SEQUENCE_NUMBER", false,
        "the producer's sequence number is out of order: records were lost between producer and broker; restart the producer";
    /// A producer sequence number was already written.
    DuplicateSequenceNumber = 46, "DUPLICATE_SEQUENCE_NUMBER", false,
        "the batch was already written (a retried duplicate); no action needed";
    /// The producer epoch is old.
    InvalidProducerEpoch = 47, "INVALID_PRODUCER_EPOCH", false,
        "the producer epoch is older than the current one: another producer instance took over; close this producer";
    /// The producer is not in a state that allows the operation (a plain write inside an
    /// open transaction, a commit of a transaction that is not open).
    InvalidTxnState = 48, "INVALID_TXN_STATE", false,
        "the producer's transaction is not in a state that allows this; abort the transaction or close the producer";
    /// The producer id does not belong to the transactional id.
    InvalidProducerIdMapping = 49, "INVALID_PRODUCER_ID_MAPPING", false,
        "the producer id does not belong to this transactional id (it expired or was fenced); initialise the producer again";
    /// The transaction timeout is invalid.
    InvalidTransactionTimeout = 50, "INVALID_TRANSACTION_TIMEOUT", false,
        "the transaction timeout is larger than the broker allows; lower it";
    /// The transactional id is still completing its previous transaction.
    ConcurrentTransactions = 51, "CONCURRENT_TRANSACTIONS", true,
        "the previous transaction of this transactional id is still completing; retry shortly";
    /// The marker comes from a transaction coordinator older than the partition has seen.
    TransactionCoordinatorFenced = 52, "TRANSACTION_COORDINATOR_FENCED", false,
        "a newer transaction coordinator has written to this partition; the older one stops";
    /// The principal may not use the transactional id.
    TransactionalIdAuthorizationFailed = 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", false,
        "not authorized to use this transactional id; ask an administrator for access";
    /// The broker did not attempt this item because another in the request failed.
    OperationNotAttempted = 55, "OPERATION_NOT_ATTEMPTED", false,
        "the broker did not attempt this operation because another part of the request failed; fix that and retry";
    /// A disk error on the broker.
    KafkaStorageError = 56, "KAFKA_STORAGE_ERROR", true,
        "the broker failed to read or write the partition's log on disk; retry (another replica may take over) and check the broker's disk";
    /// Authentication failed: unknown user, wrong password, or a broken exchange.
    SaslAuthenticationFailed = 58, "SASL_AUTHENTICATION_FAILED", false,
        "authentication failed; check the user name, password and mechanism";
    /// The broker does not know this producer id.
    UnknownProducerId = 59, "UNKNOWN_PRODUCER_ID", false,
        "the broker has no state for this producer id (its records may have expired); re-initialise the producer";
    /// The group still has members.
    NonEmptyGroup = 68, "NON_EMPTY_GROUP", false,
        "the group still has active members; stop its consumers first, then retry";
    /// The group does not exist.
    GroupIdNotFound = 69, "GROUP_ID_NOT_FOUND", false,
        "the group does not exist; check the group id";
    /// The request's leader epoch is older than the broker's.
    FencedLeaderEpoch = 74, "FENCED_LEADER_EPOCH", true,
        "the request's leader epoch is older than the broker's; refresh metadata and retry";
    /// The request's leader epoch is newer than the broker's.
    UnknownLeaderEpoch = 75, "UNKNOWN_LEADER_EPOCH", true,
        "the request's leader epoch is newer than the broker's (it has not caught up yet); retry shortly";
    /// The compression codec is not supported.
    UnsupportedCompressionType = 76, "UNSUPPORTED_COMPRESSION_TYPE", false,
        "the record batch uses a compression codec this broker does not support (it reads none, gzip, snappy, lz4 and zstd)";
    /// The broker epoch is stale: the request comes from an older run of a broker than the
    /// one registered (heartbeats, AlterPartition, ReplicaFetch). Not retriable, as in
    /// Kafka: the same request fails the same way; only the epoch of a newer registration
    /// helps, and the broker's own code (lifecycle, replica fetcher) knows to get it.
    StaleBrokerEpoch = 77, "STALE_BROKER_EPOCH", false,
        "the broker epoch is stale (the broker registered again since); the broker must register and send its current epoch";
    /// The offset is not available yet (a new leader's HW has not caught up).
    OffsetNotAvailable = 78, "OFFSET_NOT_AVAILABLE", true,
        "the new leader's high watermark has not caught up yet, so offsets are not available; retry shortly";
    /// The member must first obtain a member id.
    MemberIdRequired = 79, "MEMBER_ID_REQUIRED", false,
        "the member needs a member id: rejoin with the id in the response";
    /// The preferred replica of the partition cannot lead now (not in the ISR, or its
    /// broker is not active).
    PreferredLeaderNotAvailable = 80, "PREFERRED_LEADER_NOT_AVAILABLE", true,
        "the preferred replica cannot lead now (its broker is down or it is not in sync); retry once it has caught up";
    /// The group has reached its maximum size.
    GroupMaxSizeReached = 81, "GROUP_MAX_SIZE_REACHED", false,
        "the group has reached its maximum number of members; add no more consumers";
    /// Another member uses the same group instance id.
    FencedInstanceId = 82, "FENCED_INSTANCE_ID", false,
        "another consumer with the same group instance id joined the group; give each consumer a distinct instance id";
    /// The partition's preferred replica leads already.
    ElectionNotNeeded = 84, "ELECTION_NOT_NEEDED", false,
        "the preferred replica leads already; nothing to do";
    /// A reassignment was to be cancelled where none is under way.
    NoReassignmentInProgress = 85, "NO_REASSIGNMENT_IN_PROGRESS", false,
        "the partition is not being reassigned; there is nothing to cancel";
    /// The group's members subscribe to the topic whose offsets were to be deleted.
    GroupSubscribedToTopic = 86, "GROUP_SUBSCRIBED_TO_TOPIC", false,
        "the group's members consume this topic, so its offsets cannot be deleted; stop them or change their subscription first";
    /// A record failed broker-side validation.
    InvalidRecord = 87, "INVALID_RECORD", false,
        "a record failed validation on the broker; see the error message for why";
    /// A transaction that has not ended wrote an offset the consumer asked for.
    UnstableOffsetCommit = 88, "UNSTABLE_OFFSET_COMMIT", true,
        "a transaction that has not ended yet committed an offset of this partition; retry shortly";
    /// A newer producer with the same transactional id exists.
    ProducerFenced = 90, "PRODUCER_FENCED", false,
        "a newer producer with the same transactional id fenced this one; close this producer";
    /// The resource (a user, an ACL) does not exist.
    ResourceNotFound = 91, "RESOURCE_NOT_FOUND", false,
        "there is no such resource; list them to check the name";
    /// A credential was refused (too few iterations, an empty password or name).
    UnacceptableCredential = 93, "UNACCEPTABLE_CREDENTIAL", false,
        "the credential is not acceptable; check the user name, mechanism and password";
    /// A partition change was based on a partition epoch that is no longer current.
    InvalidUpdateVersion = 95, "INVALID_UPDATE_VERSION", false,
        "the partition changed since the leader read it; it will retry with the new state";
    /// The broker id is already registered by another live process.
    DuplicateBrokerRegistration = 101, "DUPLICATE_BROKER_REGISTRATION", false,
        "another live broker is registered with this node id; give each broker a distinct --node-id";
    /// The broker id is not registered.
    BrokerIdNotRegistered = 102, "BROKER_ID_NOT_REGISTERED", false,
        "the broker is not registered with the controller; it must register again";
    /// The cluster id does not match.
    InconsistentClusterId = 104, "INCONSISTENT_CLUSTER_ID", false,
        "the cluster id does not match this cluster's; the node's data directory belongs to another cluster";
    /// No producer uses the transactional id (DescribeTransactions).
    TransactionalIdNotFound = 105, "TRANSACTIONAL_ID_NOT_FOUND", false,
        "no producer uses this transactional id; list the transactional ids to check the name";
    /// The new ISR contains an ineligible replica.
    IneligibleReplica = 107, "INELIGIBLE_REPLICA", false,
        "the proposed ISR contains a replica that is fenced or shutting down";
    /// The partition state was updated but the leader changed.
    NewLeaderElected = 108, "NEW_LEADER_ELECTED", false,
        "the partition's leader changed while the request was in flight; refresh metadata";
    /// The broker's data disk is full.
    DiskFull = 1000, "DISK_FULL", false,
        "the broker's data disk is full; free space or add disk, then retry";
    /// The broker is shutting down.
    BrokerShuttingDown = 1001, "BROKER_SHUTTING_DOWN", true,
        "the broker is shutting down; refresh metadata and retry against another broker";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.name(), self.code(), self.message())
    }
}

impl Encode for ErrorCode {
    fn encode(&self, buf: &mut BytesMut) -> Result<()> {
        buf.put_i16(self.code());
        Ok(())
    }
    fn encoded_len(&self) -> usize {
        2
    }
}

impl Decode for ErrorCode {
    const MIN_LEN: u32 = 2;
    fn decode(r: &mut Reader) -> Result<Self> {
        r.get_i16().map(ErrorCode::from_i16)
    }
}

#[cfg(test)]
impl crate::wire::testing::Generate for ErrorCode {
    fn generate(g: &mut proptest::test_runner::TestRunner) -> Self {
        // Mostly known codes, sometimes any number at all.
        let i = usize::generate(g) % (ErrorCode::ALL.len() + 1);
        match ErrorCode::ALL.get(i) {
            Some(code) => *code,
            None => ErrorCode::from_i16(i16::generate(g)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::Generate;

    #[test]
    fn known_codes_match_kafka() {
        let check = |code: ErrorCode, n: i16, retriable: bool| {
            assert_eq!(code.code(), n, "{code:?}");
            assert_eq!(ErrorCode::from_i16(n), code);
            assert_eq!(code.is_retriable(), retriable, "{code:?}");
        };
        check(ErrorCode::None, 0, false);
        check(ErrorCode::UnknownServerError, -1, false);
        check(ErrorCode::NotLeaderOrFollower, 6, true);
        check(ErrorCode::NotEnoughReplicas, 19, true);
        check(ErrorCode::UnsupportedVersion, 35, false);
        check(ErrorCode::FencedLeaderEpoch, 74, true);
        check(ErrorCode::ProducerFenced, 90, false);
        check(ErrorCode::DiskFull, 1000, false);
    }

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate {}", code.code());
            assert_eq!(ErrorCode::from_i16(code.code()), code);
            assert!(!code.message().is_empty());
        }
        for n in i16::MIN..=i16::MAX {
            assert_eq!(ErrorCode::from_i16(n).code(), n);
        }
    }

    #[test]
    fn advice_is_what_follows_the_account() {
        assert_eq!(
            ErrorCode::TopicAlreadyExists.advice(),
            Some("pick another name or use the existing topic")
        );
        assert_eq!(ErrorCode::None.advice(), None);
    }

    #[test]
    fn unknown_codes_keep_their_number() {
        let code = ErrorCode::from_i16(4242);
        assert_eq!(code, ErrorCode::Unknown(4242));
        assert_eq!(code.code(), 4242);
        assert!(code.to_string().contains("4242"));
        assert_eq!(
            ErrorCode::DiskFull.to_string(),
            "DISK_FULL (1000): the broker's data disk is full; free space or add disk, then retry"
        );
    }

    #[test]
    fn round_trip() {
        let mut g = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..256 {
            crate::wire::testing::check_round_trip(&ErrorCode::generate(&mut g));
        }
    }
}
