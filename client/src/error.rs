//! The one error type of the client library. Every message says what went wrong and, where
//! the user can do something, what to do. Errors are `Clone` because one failed batch fails
//! the delivery of every record in it.

use std::time::Duration;

use sluice_protocol::{ErrorCode, PartitionId};

/// Why a client operation failed.
///
/// [`Error::is_retriable`] tells whether the same operation may succeed if tried again
/// later. The producer, the consumer and the admin calls already retry these internally,
/// with backoff, within their timeouts, so one that reaches the caller means the cluster
/// stayed unavailable that long:
///
/// | retriable | not retriable |
/// |---|---|
/// | [`Error::Connect`], [`Error::Network`], [`Error::Timeout`] (a broker down, restarting, or slow) | [`Error::Authentication`], [`Error::Tls`], [`Error::InvalidArgument`] (fix the configuration) |
/// | [`Error::LeaderNotAvailable`] (an election under way) | [`Error::UnknownTopic`], [`Error::UnknownPartition`], [`Error::UnknownGroup`] |
/// | [`Error::Broker`] whose [`ErrorCode::is_retriable`] (NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, COORDINATOR_NOT_AVAILABLE, ...) | [`Error::Broker`] with any other code (TOPIC_ALREADY_EXISTS, POLICY_VIOLATION, ...) |
/// | | [`Error::DeliveryTimeout`] (the producer's retries ran out; its `last_error` says why), [`Error::ProducerFenced`], [`Error::ProducerClosed`], [`Error::StoppedAfterFailure`], [`Error::RecordTooLarge`], [`Error::SendTooLarge`] |
/// | | [`Error::Fenced`], [`Error::RebalanceInProgress`] (poll, then commit what it returns), [`Error::NotAssigned`], [`Error::NoGroup`], [`Error::GroupNotEmpty`], [`Error::NoCommittedOffset`], [`Error::OffsetOutOfRange`] |
/// | | [`Error::Protocol`], [`Error::CorruptBatch`] (a bug or incompatible versions) |
///
/// ```
/// use sluice_client::{Admin, Client, ClientConfig, Error};
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let cluster = sluice_testkit::Cluster::start(1).await?;
/// # let config = ClientConfig { bootstrap: cluster.bootstrap_servers(), ..ClientConfig::default() };
/// let client = Client::connect(config).await?;
/// match Admin::new(client).describe_topic("orders").await {
///     Ok(description) => println!("{} partitions", description.partitions.len()),
///     // Variants carry what a program needs to react; their Display says it for a human.
///     Err(Error::UnknownTopic { topic }) => println!("no topic {topic} yet"),
///     Err(e) if e.is_retriable() => println!("the cluster is unavailable ({e}); try later"),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No bootstrap or broker address answered a TCP connect. Retriable: in a cluster the
    /// broker may be restarting, or another broker takes over its partitions.
    #[error("cannot connect to {addr}: {reason}; is sluice-broker running there?")]
    Connect {
        /// The address (or comma-separated addresses) that was tried.
        addr: String,
        /// The operating system's reason (connection refused, ...).
        reason: String,
    },
    /// The broker refused this client's login (SASL): unknown user, wrong password, a
    /// mechanism the broker does not offer, or a broker that requires a login the client
    /// was not configured for. Not retriable: the same credentials are refused again.
    #[error("cannot log in to {addr}: {reason}")]
    Authentication {
        /// The broker's address.
        addr: String,
        /// The broker's or the exchange's account.
        reason: String,
    },
    /// TLS with the broker failed: a certificate refused either way, or one side speaking
    /// TLS and the other not. Not retriable: the configuration must change, as the reason
    /// says.
    #[error("TLS with {addr}: {reason}")]
    Tls {
        /// The broker's address.
        addr: String,
        /// What went wrong and what to change.
        reason: String,
    },
    /// An established connection failed (closed by the broker, reset, unreadable frame)
    /// before the response arrived. Retriable: the connection is re-dialled on next use.
    #[error("connection to {addr} failed: {reason}; the request may be retried (check the broker if this persists)")]
    Network {
        /// The broker's address.
        addr: String,
        /// What happened to the connection.
        reason: String,
    },
    /// No response arrived within the request timeout. The connection is closed (a broker
    /// that does not answer one request is not trusted with the next), and whether the
    /// request took effect is unknown. Retriable.
    #[error("no response from {addr} to a {api} request within {} ms; the broker may be overloaded or unreachable", timeout.as_millis())]
    Timeout {
        /// The broker's address.
        addr: String,
        /// The api of the request.
        api: &'static str,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The broker sent bytes this client cannot decode; the connection was closed.
    #[error("cannot read the response from {addr}: {reason}; the broker and this client may be incompatible versions")]
    Protocol {
        /// The broker's address.
        addr: String,
        /// The decoder's reason.
        reason: String,
    },
    /// The broker answered with an error code. Shown as the broker's own account when it
    /// sent one (it names the specifics), followed by the code's advice only if that account
    /// gives none; otherwise as the code's generic message.
    #[error("{context}: {}", broker_account(*code, message))]
    Broker {
        /// What was being done (`creating topic "orders"`, `producing to orders/3`).
        context: String,
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's own explanation, if it sent one.
        message: Option<String>,
    },
    /// The topic does not exist in the cluster's metadata.
    #[error("topic \"{topic}\" does not exist; create it with: sluice topic create {topic}")]
    UnknownTopic {
        /// The topic's name.
        topic: String,
    },
    /// The topic exists but has no such partition.
    #[error("topic \"{topic}\" has no partition {partition}; it has partitions 0 to {}", n_partitions - 1)]
    UnknownPartition {
        /// The topic's name.
        topic: String,
        /// The partition asked for.
        partition: PartitionId,
        /// How many partitions the topic has.
        n_partitions: i32,
    },
    /// The partition has no leader right now (an election is under way, or its brokers are
    /// down). Retriable.
    #[error("partition {topic}/{partition} has no available leader right now; retry shortly, and check that its replicas' brokers are running")]
    LeaderNotAvailable {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: PartitionId,
    },
    /// A record does not fit in a batch or in the producer's buffer.
    #[error("record of {size} bytes is larger than the producer's limit of {max} bytes ({limit}); raise it or send a smaller record")]
    RecordTooLarge {
        /// The record's encoded size.
        size: usize,
        /// The limit it exceeds.
        max: usize,
        /// Which limit (`batch_bytes_max`, `buffer_bytes_max`).
        limit: &'static str,
    },
    /// The records of one [`Producer::send_all`](crate::Producer::send_all) call need more
    /// buffer space together than the producer has.
    #[error("the {records} records of one send_all call take {size} bytes together, more than the producer's buffer of {max} bytes (buffer_bytes_max); send them in smaller calls or raise it")]
    SendTooLarge {
        /// How many records the call had.
        records: usize,
        /// Their encoded size together.
        size: usize,
        /// The producer's buffer.
        max: usize,
    },
    /// A record was not acknowledged within the producer's delivery timeout.
    #[error("record for {topic}/{partition} not acknowledged within {} ms ({attempts} attempts); last error: {last_error}", timeout.as_millis())]
    DeliveryTimeout {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: PartitionId,
        /// The delivery timeout.
        timeout: Duration,
        /// Produce requests attempted for the batch.
        attempts: u32,
        /// The error of the last attempt, or why no attempt was possible.
        last_error: Box<Error>,
    },
    /// The producer was closed before the record could be sent.
    #[error("the producer was closed; create a new producer to send more records")]
    ProducerClosed,
    /// The partition's leader refused the record's batch (INVALID_PRODUCER_EPOCH): a newer
    /// epoch of this idempotent producer's id has written to the partition, so this producer
    /// instance is fenced. The batch was not written. Not retriable.
    #[error("producer id {producer_id} epoch {epoch} is fenced on {topic}/{partition}: a newer epoch of the same producer id has written there{}; close this producer and create a new one", detail(message))]
    ProducerFenced {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: PartitionId,
        /// The producer id the batch carried.
        producer_id: i64,
        /// The fenced epoch.
        epoch: i16,
        /// The broker's own explanation, if it sent one.
        message: Option<String>,
    },
    /// The consumer was asked about a partition it has not been assigned.
    #[error("partition {topic}/{partition} is not assigned to this consumer; assign it first")]
    NotAssigned {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: PartitionId,
    },
    /// The consumer's position is outside the partition's log and `auto_offset_reset` is
    /// [`crate::OffsetReset::None`].
    #[error("offset {offset} is out of range for {topic}/{partition} (the log holds {log_start_offset} to {high_watermark}); seek to a valid offset")]
    OffsetOutOfRange {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: PartitionId,
        /// The position that was fetched.
        offset: i64,
        /// The partition's log start offset.
        log_start_offset: i64,
        /// The partition's high watermark.
        high_watermark: i64,
    },
    /// A record batch read from the broker failed validation (CRC, framing).
    #[error("corrupt record batch from {topic}/{partition}: {reason}")]
    CorruptBatch {
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: PartitionId,
        /// Why the batch was refused.
        reason: String,
    },
    /// The consumer has no group, so it cannot subscribe or commit offsets.
    #[error("this consumer has no consumer group; create it with Consumer::with_group to subscribe to topics or commit offsets")]
    NoGroup,
    /// The group moved on to a new generation without this member (its session expired,
    /// or the coordinator no longer knows it): another member may own its partitions now,
    /// so its offsets were not committed. The next `poll` rejoins the group. Not retriable:
    /// committing the same offsets again would be refused too.
    #[error("consumer group \"{group}\" has moved on without this member ({}); its offsets were not committed and its partitions may already be consumed by another member; poll to rejoin", code.message())]
    Fenced {
        /// The group.
        group: String,
        /// The coordinator's refusal: ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID.
        code: ErrorCode,
    },
    /// The group is completing a rebalance, so the commit was refused; this member's
    /// partitions may change. Poll (which completes the rebalance) and commit what it
    /// returns from then on.
    #[error("consumer group \"{group}\" is rebalancing, so the offsets were not committed; poll to complete the rebalance, then commit again")]
    RebalanceInProgress {
        /// The group.
        group: String,
    },
    /// The group has members, so it cannot be deleted and its offsets cannot be reset.
    #[error("consumer group \"{group}\" has active members; stop its consumers first (sluice group describe {group} lists them)")]
    GroupNotEmpty {
        /// The group.
        group: String,
    },
    /// No such consumer group (no members and no committed offsets).
    #[error("consumer group \"{group}\" does not exist; sluice group list shows the groups")]
    UnknownGroup {
        /// The group.
        group: String,
    },
    /// A newly assigned partition has no committed offset and `auto_offset_reset` is
    /// [`crate::OffsetReset::None`].
    #[error("consumer group \"{group}\" has no committed offset for {topic}/{partition} and auto_offset_reset is None; commit or reset an offset for it, or choose Earliest or Latest")]
    NoCommittedOffset {
        /// The group.
        group: String,
        /// The topic's name.
        topic: String,
        /// The partition.
        partition: PartitionId,
    },
    /// The producer's open transaction cannot commit (a record of it failed, a partition
    /// could not be added): abort it, then begin another. Not retriable.
    #[error("the transaction cannot commit: {reason}; abort it with abort_transaction, then begin another")]
    TransactionAbortable {
        /// Why.
        reason: String,
    },
    /// The record was not sent: its transaction was aborted first.
    #[error("not sent: the transaction was aborted")]
    TransactionAborted,
    /// The caller passed something unusable (an empty bootstrap list, a bad address...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The record was not sent because an earlier record failed and the producer has
    /// [`crate::ProducerConfig::stop_after_failure`] set: it is not in the log. Not
    /// retriable.
    #[error("not sent: an earlier record failed, and this producer stops after a failure so that each partition keeps a prefix of the records sent to it (the first failure: {first_failure})")]
    StoppedAfterFailure {
        /// The failure that stopped the producer.
        first_failure: Box<Error>,
    },
}

/// What a broker's error says, once: its message (with the code's advice when the message
/// has no "what to do" part of its own), or the code's generic message.
fn broker_account(code: ErrorCode, message: &Option<String>) -> String {
    match (message.as_deref(), code.advice()) {
        (Some(m), Some(advice)) if !m.is_empty() && !m.contains("; ") => format!("{m}; {advice}"),
        (Some(m), _) if !m.is_empty() => m.to_owned(),
        _ => code.message().to_owned(),
    }
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(" ({m})"),
        _ => String::new(),
    }
}

impl Error {
    /// Whether the operation may succeed if retried after a short wait (and, for
    /// leadership errors, a metadata refresh).
    ///
    /// ```
    /// use sluice_client::Error;
    /// use sluice_protocol::ErrorCode;
    /// let e = Error::Broker { context: "producing".into(), code: ErrorCode::NotLeaderOrFollower, message: None };
    /// assert!(e.is_retriable());
    /// ```
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Network { .. }
            | Error::Timeout { .. }
            | Error::LeaderNotAvailable { .. } => true,
            Error::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// Whether the error means the client's metadata (leaders, epochs) may be stale, so
    /// it should be refreshed before a retry: a broker that cannot be reached or does not
    /// answer may have died, and its partitions moved to another leader.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Network { .. }
            | Error::Timeout { .. }
            | Error::LeaderNotAvailable { .. } => true,
            Error::Broker { code, .. } => matches!(
                code,
                ErrorCode::NotLeaderOrFollower
                    | ErrorCode::LeaderNotAvailable
                    | ErrorCode::FencedLeaderEpoch
                    | ErrorCode::UnknownLeaderEpoch
                    | ErrorCode::UnknownTopicOrPartition
                    | ErrorCode::NotController
                    | ErrorCode::BrokerShuttingDown
                    | ErrorCode::KafkaStorageError
            ),
            _ => false,
        }
    }

    /// The broker error code, when the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// An error for a broker's answer `code` (not NONE) while doing `context`.
    pub(crate) fn broker(
        context: impl Into<String>,
        code: ErrorCode,
        message: Option<String>,
    ) -> Error {
        Error::Broker {
            context: context.into(),
            code,
            message,
        }
    }
}

/// Result of every fallible client operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let check = |e: Error, expected: &str| assert_eq!(e.to_string(), expected);
        check(
            Error::Connect {
                addr: "127.0.0.1:9700".into(),
                reason: "connection refused".into(),
            },
            "cannot connect to 127.0.0.1:9700: connection refused; is sluice-broker running there?",
        );
        check(
            Error::UnknownTopic {
                topic: "orders".into(),
            },
            "topic \"orders\" does not exist; create it with: sluice topic create orders",
        );
        check(
            Error::broker(
                "creating topic \"t\"",
                ErrorCode::InvalidConfig,
                Some("unknown config key foo".into()),
            ),
            "creating topic \"t\": unknown config key foo; correct it and try again",
        );
        // The broker's account, then the code's advice, each once.
        check(
            Error::broker(
                "creating topic \"orders\"",
                ErrorCode::TopicAlreadyExists,
                Some("topic \"orders\" already exists".into()),
            ),
            "creating topic \"orders\": topic \"orders\" already exists; pick another name or use the existing topic",
        );
        // An account that says what to do already is not followed by the generic advice.
        check(
            Error::broker(
                "producing to full/0",
                ErrorCode::DiskFull,
                Some("the disk holding /d is full; free space or add disk, then retry (nothing was written)".into()),
            ),
            "producing to full/0: the disk holding /d is full; free space or add disk, then retry (nothing was written)",
        );
        check(
            Error::broker("deleting group \"g\"", ErrorCode::NonEmptyGroup, None),
            &format!(
                "deleting group \"g\": {}",
                ErrorCode::NonEmptyGroup.message()
            ),
        );
        check(
            Error::UnknownPartition {
                topic: "t".into(),
                partition: PartitionId(5),
                n_partitions: 3,
            },
            "topic \"t\" has no partition 5; it has partitions 0 to 2",
        );
    }

    #[test]
    fn retriable_errors() {
        assert!(Error::Network {
            addr: "a".into(),
            reason: "b".into()
        }
        .is_retriable());
        assert!(!Error::UnknownTopic { topic: "t".into() }.is_retriable());
        assert!(!Error::broker("x", ErrorCode::TopicAlreadyExists, None).is_retriable());
        assert!(Error::broker("x", ErrorCode::NotLeaderOrFollower, None).needs_metadata_refresh());
        // A broker that cannot be reached may be dead: its partitions move elsewhere.
        let refused = Error::Connect {
            addr: "a".into(),
            reason: "connection refused".into(),
        };
        assert!(refused.is_retriable() && refused.needs_metadata_refresh());
        assert!(!Error::broker("x", ErrorCode::NotEnoughReplicas, None).needs_metadata_refresh());
    }
}
