//! The broker's service layer: every rule a client request is subject to, in terms of
//! topics, partitions, offsets and groups, with no wire format in sight. Each listener
//! (the native protocol in `handlers`, the Kafka protocol in `kafka`) is a set of thin
//! adapters: decode a request, call a service, encode the answer. A rule written here
//! (which topics a client may write, how long a long poll waits, what an error says) holds
//! for both listeners because neither has a copy of it.
//!
//! - [`produce`]: appends, in request order, then the wait for durability and the ISR.
//! - [`fetch`]: consumer reads below the high watermark, long-polled.
//! - [`offsets`]: ListOffsets and OffsetsForLeaderEpoch for consumers.
//! - [`admin`]: topic creation, deletion and configs through the active controller, and
//!   the cluster view Metadata and DescribeCluster answer from.
//! - [`producer_ids`]: ids for idempotent producers, from blocks the controller hands out.
//! - [`acls`]: ACLs, through the active controller; [`crate::security::acl::Authorizer`]
//!   judges every request by them.
//! - [`quotas`]: client quotas, through the active controller, and the throttling of
//!   clients above theirs.
//! - [`users`]: SCRAM users, through the active controller; logins are
//!   [`crate::security::Authenticator`]'s, which both listeners drive.
//! - [`crate::groups::Coordinator`]: consumer groups (kept beside the group state machine).
//!
//! [`crate::broker::Services`] wires them together for the listeners.
//!
//! Architecture invariant: nothing here imports `handlers`, `kafka` or the protocol
//! message types; services take and return the domain types below and in
//! [`crate::partition`], and fail with [`ApiError`] (a sluice [`ErrorCode`] and a message
//! for a human).

pub mod acls;
pub mod admin;
pub mod fetch;
pub mod offsets;
pub mod produce;
pub mod producer_ids;
pub mod quotas;
pub mod users;

use sluice_protocol::{ErrorCode, PartitionId};

use crate::error::ApiError;

/// Items of a request or an answer grouped by topic, in request order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicItems<T> {
    /// The topic.
    pub topic: String,
    /// One item per partition asked about.
    pub partitions: Vec<T>,
}

/// A wire list of one topic's partitions, as the services take it.
impl From<sluice_protocol::messages::TopicPartitions> for TopicItems<PartitionId> {
    fn from(t: sluice_protocol::messages::TopicPartitions) -> Self {
        TopicItems {
            topic: t.topic,
            partitions: t.partitions,
        }
    }
}

/// One topic's partitions as the wire lists them.
impl From<TopicItems<PartitionId>> for sluice_protocol::messages::TopicPartitions {
    fn from(t: TopicItems<PartitionId>) -> Self {
        sluice_protocol::messages::TopicPartitions {
            topic: t.topic,
            partitions: t.partitions,
        }
    }
}

/// Turns each topic's items into `R` one by one, then each topic with its items into `U`,
/// in order: the shape of every per-partition answer the protocol adapters encode.
pub fn map_topics<T, R, U>(
    topics: Vec<TopicItems<T>>,
    mut item: impl FnMut(T) -> R,
    mut topic: impl FnMut(String, Vec<R>) -> U,
) -> Vec<U> {
    topics
        .into_iter()
        .map(|t| {
            let items = t.partitions.into_iter().map(&mut item).collect();
            topic(t.topic, items)
        })
        .collect()
}

/// The outcome of a request on one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionOutcome<T> {
    /// The partition.
    pub partition: PartitionId,
    /// What happened there.
    pub outcome: Result<T, ApiError>,
}

impl PartitionOutcome<()> {
    /// A partition's result as another broker answered it (WriteTxnMarkers, VerifyTxn).
    pub fn from_wire(p: sluice_protocol::messages::PartitionResult) -> PartitionOutcome<()> {
        PartitionOutcome {
            partition: p.partition,
            outcome: match p.error_code {
                ErrorCode::None => Ok(()),
                code => Err(ApiError::new(code, p.error_message.unwrap_or_default())),
            },
        }
    }
}

/// Each topic's partition results as another broker answered them, as outcomes.
pub fn outcomes_from_wire(
    topics: Vec<sluice_protocol::messages::TopicPartitionResults>,
) -> Vec<TopicItems<PartitionOutcome<()>>> {
    topics
        .into_iter()
        .map(|t| TopicItems {
            topic: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(PartitionOutcome::from_wire)
                .collect(),
        })
        .collect()
}

/// The `(topic, partition)` of each outcome that succeeded.
pub fn succeeded<'a, C, T>(outcomes: &'a [TopicItems<PartitionOutcome<T>>]) -> C
where
    C: FromIterator<(&'a str, PartitionId)>,
{
    outcomes
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.outcome.is_ok())
                .map(|p| (t.topic.as_str(), p.partition))
        })
        .collect()
}

/// The error for a controller that answered a request with another api's response (a
/// bug on one side).
pub(crate) fn controller_answered(api: sluice_protocol::messages::ApiKey) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownServerError,
        format!("the controller answered {api:?}"),
    )
}

/// A task of the blocking pool that died (a bug, already logged by tokio), as the error
/// of the request it served.
pub(crate) fn task_failed(what: &str, e: tokio::task::JoinError) -> ApiError {
    ApiError::new(ErrorCode::UnknownServerError, format!("{what}: {e}"))
}
