//! Offset lookups for consumers: ListOffsets (earliest, latest = the high watermark or, under
//! read_committed, the last stable offset, or the
//! first offset at a time) and OffsetsForLeaderEpoch (where an epoch ends in the leader's
//! log, which a consumer compares with its position after a leader change, KIP-320), and
//! the per-partition admin requests on the replicas here: DeleteRecords and
//! DescribeProducers (KIP-664). Lookups take the log's lock, which maintenance may hold across an fsync, so they run on
//! the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::messages::IsolationLevel;
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset, PartitionId};

use super::{task_failed, PartitionOutcome, TopicItems};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::producer_state::ActiveProducer;
use crate::security::acl::{Authorizer, Operation, Resource};
use crate::security::Principal;
use crate::topic_config::internal_topic;
use crate::topics::Topics;

/// One partition of a ListOffsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetQuery {
    /// The partition.
    pub partition: PartitionId,
    /// -2 earliest, -1 latest, else a time in ms since the Unix epoch.
    pub timestamp: i64,
    /// The leader epoch the client knows, -1 if none.
    pub current_leader_epoch: LeaderEpoch,
    /// read_committed: "latest" is the last stable offset, and a time finds only offsets
    /// below it.
    pub isolation: IsolationLevel,
}

/// The answer of a ListOffsets for one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoundOffset {
    /// The timestamp of the record found (-1 for earliest and latest, or when none).
    pub timestamp: i64,
    /// The offset (-1 when no record is at or after the time).
    pub offset: Offset,
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
}

/// One partition of an OffsetsForLeaderEpoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochQuery {
    /// The partition.
    pub partition: PartitionId,
    /// The leader epoch the client knows, -1 if none.
    pub current_leader_epoch: LeaderEpoch,
    /// The epoch whose end is asked.
    pub leader_epoch: LeaderEpoch,
}

/// One partition of a DeleteRecords.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteQuery {
    /// The partition.
    pub partition: PartitionId,
    /// Records below this offset go; -1 for every committed record (the high watermark).
    pub offset: i64,
}

/// Where an epoch ends: the largest epoch at or below the one asked and its end offset
/// (both -1 when the log has no epoch that old).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEnd {
    /// The epoch.
    pub leader_epoch: LeaderEpoch,
    /// Its end offset.
    pub end_offset: Offset,
}

/// The offset lookup service.
pub struct Offsets {
    cluster: Arc<Cluster>,
    topics: Arc<Topics>,
    metrics: Arc<Metrics>,
    authorizer: Arc<Authorizer>,
}

impl Offsets {
    /// Looks up the replicas in `topics`, counting refusals in `metrics`.
    pub fn new(
        cluster: Arc<Cluster>,
        topics: Arc<Topics>,
        metrics: Arc<Metrics>,
        authorizer: Arc<Authorizer>,
    ) -> Offsets {
        Offsets {
            cluster,
            topics,
            metrics,
            authorizer,
        }
    }

    /// ListOffsets on the leaders here, for `principal` (Describe on each topic).
    pub async fn list_offsets(
        &self,
        principal: &Principal,
        topics: Vec<TopicItems<OffsetQuery>>,
    ) -> Result<Vec<TopicItems<PartitionOutcome<FoundOffset>>>, ApiError> {
        let found = self
            .per_partition(
                principal,
                Operation::Describe,
                topics,
                |partition, query: &OffsetQuery| {
                    let (timestamp, offset) = partition.offset_for_timestamp(
                        query.timestamp,
                        query.current_leader_epoch,
                        query.isolation,
                    )?;
                    Ok(FoundOffset {
                        timestamp,
                        offset,
                        leader_epoch: partition.leader_epoch(),
                    })
                },
            )
            .await;
        let refusals = match &found {
            Ok(topics) => topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter_map(|p| p.outcome.as_ref().err())
                .map(|e| e.code)
                .collect(),
            Err(e) => vec![e.code],
        };
        for code in refusals {
            self.metrics.error("list_offsets", code);
        }
        found
    }

    /// OffsetsForLeaderEpoch on the leaders here, for `principal` (Describe on each topic).
    pub async fn epoch_ends(
        &self,
        principal: &Principal,
        topics: Vec<TopicItems<EpochQuery>>,
    ) -> Result<Vec<TopicItems<PartitionOutcome<EpochEnd>>>, ApiError> {
        self.per_partition(
            principal,
            Operation::Describe,
            topics,
            |partition, query: &EpochQuery| {
                let found = partition
                    .end_offset_for_epoch(query.leader_epoch, query.current_leader_epoch)?;
                let (leader_epoch, end_offset) = found.unwrap_or((LeaderEpoch(-1), Offset(-1)));
                Ok(EpochEnd {
                    leader_epoch,
                    end_offset,
                })
            },
        )
        .await
    }

    /// DeleteRecords on the leaders here, for `principal` (Delete on each topic): each
    /// partition's log start moves to the offset asked, then the answer waits, up to
    /// `timeout`, until the in-sync replicas have deleted the records too. Each
    /// partition's outcome is its low watermark (the lowest log start among them).
    pub async fn delete_records(
        &self,
        principal: &Principal,
        topics: Vec<TopicItems<DeleteQuery>>,
        timeout: Duration,
    ) -> Result<Vec<TopicItems<PartitionOutcome<Offset>>>, ApiError> {
        let deleted = self
            .per_partition(principal, Operation::Delete, topics, |partition, query| {
                if let Some(why) = internal_topic(partition.topic()) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidTopicException,
                        format!(
                            "{} is internal: {why}; its records cannot be deleted",
                            partition.topic()
                        ),
                    ));
                }
                partition.delete_records(query.offset)
            })
            .await?;
        let image = self.cluster.image();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut answered = Vec::with_capacity(deleted.len());
        for topic in deleted {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for p in topic.partitions {
                let outcome = match p.outcome {
                    Ok(start) => match self.topics.partition(&image, &topic.topic, p.partition) {
                        Ok(replica) => replica.await_low_watermark(start, deadline).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                partitions.push(PartitionOutcome {
                    partition: p.partition,
                    outcome,
                });
            }
            answered.push(TopicItems {
                topic: topic.topic,
                partitions,
            });
        }
        for e in answered
            .iter()
            .flat_map(|t| &t.partitions)
            .filter_map(|p| p.outcome.as_ref().err())
        {
            self.metrics.error("delete_records", e.code);
        }
        Ok(answered)
    }

    /// DescribeProducers (KIP-664): the producers each replica here remembers, for
    /// `principal` (Read on each topic, as in Kafka). Any replica answers, not only the
    /// leader, so an operator can compare them.
    /// A partition asked again is answered once (each repeat would copy its producers into
    /// the answer again).
    pub async fn describe_producers(
        &self,
        principal: &Principal,
        mut topics: Vec<TopicItems<PartitionId>>,
    ) -> Result<Vec<TopicItems<PartitionOutcome<Vec<ActiveProducer>>>>, ApiError> {
        let mut seen = std::collections::HashSet::new();
        for topic in &mut topics {
            topic
                .partitions
                .retain(|p| seen.insert((topic.topic.clone(), *p)));
        }
        self.per_partition(principal, Operation::Read, topics, |partition, _| {
            Ok(partition.active_producers())
        })
        .await
    }

    /// Runs `lookup` on each asked partition, on the blocking pool, where `principal` may
    /// do `operation` on its topic.
    async fn per_partition<Q, T>(
        &self,
        principal: &Principal,
        operation: Operation,
        topics: Vec<TopicItems<Q>>,
        lookup: fn(&crate::partition::Partition, &Q) -> Result<T, ApiError>,
    ) -> Result<Vec<TopicItems<PartitionOutcome<T>>>, ApiError>
    where
        Q: Send + 'static + HasPartition,
        T: Send + 'static,
    {
        let image = self.cluster.image();
        let replicas = Arc::clone(&self.topics);
        let allowed: Vec<Result<(), ApiError>> = topics
            .iter()
            .map(|t| {
                self.authorizer
                    .check(principal, operation, Resource::Topic(&t.topic))
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            topics
                .into_iter()
                .zip(allowed)
                .map(|(topic, allowed)| {
                    let partitions = topic
                        .partitions
                        .iter()
                        .map(|query| {
                            let partition = query.partition();
                            let outcome = allowed
                                .clone()
                                .and_then(|()| replicas.partition(&image, &topic.topic, partition))
                                .and_then(|replica| lookup(&replica, query));
                            PartitionOutcome { partition, outcome }
                        })
                        .collect();
                    TopicItems {
                        topic: topic.topic,
                        partitions,
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| task_failed("offset lookup", e))
    }
}

/// A query about one partition.
pub trait HasPartition {
    /// The partition asked about.
    fn partition(&self) -> PartitionId;
}

impl HasPartition for OffsetQuery {
    fn partition(&self) -> PartitionId {
        self.partition
    }
}

impl HasPartition for PartitionId {
    fn partition(&self) -> PartitionId {
        *self
    }
}

impl HasPartition for DeleteQuery {
    fn partition(&self) -> PartitionId {
        self.partition
    }
}

impl HasPartition for EpochQuery {
    fn partition(&self) -> PartitionId {
        self.partition
    }
}
