//! Produce, in two phases. [`Produce::append`] runs in request order on the connection: it
//! writes every partition's batches to its log (small uncompressed ones in place, the rest
//! in one blocking-thread hop for the whole request), so two pipelined requests of one
//! producer land in the order they were sent, as Kafka guarantees per connection.
//! [`Produce::complete`] runs concurrently with later requests: it waits for durability
//! (group commit shares the fsync with every other waiter) and the ISR, and gives each
//! partition its outcome.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::group_log::OFFSETS_TOPIC;
use sluice_protocol::txn_log::TRANSACTION_STATE_TOPIC;
use sluice_protocol::{ErrorCode, Offset, PartitionId};

use super::{task_failed, PartitionOutcome, TopicItems};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::partition::{Acks, Partition, PendingAppend};
use crate::security::acl::{Authorizer, Operation, Resource};
use crate::security::Principal;
use crate::topics::Topics;

/// Shortest acks=all wait honoured: a zero or negative request timeout would fail every
/// acks=all produce.
const TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Longest acks=all wait honoured: a bound on held requests.
const TIMEOUT_MAX: Duration = Duration::from_secs(300);

/// A produce request in service terms.
#[derive(Clone, Debug)]
pub struct ProduceRequest {
    /// How many acknowledgements the producer wants.
    pub acks: Acks,
    /// How long acks=all may wait for the ISR (clamped to 1 s..=300 s).
    pub timeout: Duration,
    /// Each partition's record batches (RecordBatch v2, back to back).
    pub topics: Vec<TopicItems<(PartitionId, Bytes)>>,
    /// Who sends them: needs Write on each topic.
    pub principal: Principal,
}

/// Where a partition's batches went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Produced {
    /// The offset of the first record written.
    pub base_offset: Offset,
    /// The partition's log start offset just after the append.
    pub log_start_offset: Offset,
}

/// A partition's append in the logs, or why it was not appended.
type Written = Result<(Arc<Partition>, PendingAppend), ApiError>;

/// A produce whose batches are in the logs, awaiting acknowledgement.
pub struct Appended {
    acks: Acks,
    timeout: Duration,
    topics: Vec<TopicItems<(PartitionId, Written)>>,
    metrics: Arc<Metrics>,
}

impl Appended {
    /// The acks the producer asked for: with [`Acks::None`] nothing is answered.
    pub fn acks(&self) -> Acks {
        self.acks
    }
}

/// The produce service.
pub struct Produce {
    cluster: Arc<Cluster>,
    topics: Arc<Topics>,
    metrics: Arc<Metrics>,
    authorizer: Arc<Authorizer>,
}

impl Produce {
    /// Appends to the replicas in `topics`, as `cluster`'s metadata names them, counting
    /// what is appended in `metrics`.
    pub fn new(
        cluster: Arc<Cluster>,
        topics: Arc<Topics>,
        metrics: Arc<Metrics>,
        authorizer: Arc<Authorizer>,
    ) -> Produce {
        Produce {
            cluster,
            topics,
            metrics,
            authorizer,
        }
    }

    /// The ordered phase: finds every partition and appends its batches. Per-partition
    /// failures are kept for [`Produce::complete`]; an `Err` fails the whole request.
    pub async fn append(&self, request: ProduceRequest) -> Result<Appended, ApiError> {
        let acks = request.acks;
        let timeout = request.timeout.clamp(TIMEOUT_MIN, TIMEOUT_MAX);
        let image = self.cluster.image();
        let found: Vec<TopicItems<_>> = request
            .topics
            .into_iter()
            .map(|topic| {
                let allowed = self.authorizer.check(
                    &request.principal,
                    Operation::Write,
                    Resource::Topic(&topic.topic),
                );
                let partitions = topic
                    .partitions
                    .into_iter()
                    .map(|(index, records)| {
                        let partition = if let Err(e) = &allowed {
                            Err(e.clone())
                        } else if is_internal(&topic.topic) {
                            Err(internal_topic(&topic.topic))
                        } else {
                            self.topics.partition(&image, &topic.topic, index)
                        };
                        (index, partition.map(|p| (p, records)))
                    })
                    .collect();
                TopicItems {
                    topic: topic.topic,
                    partitions,
                }
            })
            .collect();
        // Small uncompressed appends run here, on the connection's task; the rest, and those
        // whose log is busy, together on one blocking thread.
        let metrics = Arc::clone(&self.metrics);
        let slots: Vec<TopicItems<(PartitionId, Slot)>> = found
            .into_iter()
            .map(|topic| TopicItems {
                partitions: topic
                    .partitions
                    .into_iter()
                    .map(|(index, found)| {
                        let slot = match found {
                            Err(e) => Slot::Done(Err(e)),
                            Ok((partition, records)) => {
                                match partition.try_append_now(&records, acks) {
                                    Ok(Some(pending)) => Slot::Done(Ok(count_appended(
                                        &metrics,
                                        &topic.topic,
                                        partition,
                                        pending,
                                        records.len(),
                                    ))),
                                    Ok(None) => Slot::Blocking(partition, records),
                                    Err(e) => Slot::Done(Err(e)),
                                }
                            }
                        };
                        (index, slot)
                    })
                    .collect(),
                topic: topic.topic,
            })
            .collect();
        let blocking = slots.iter().any(|t| {
            t.partitions
                .iter()
                .any(|(_, s)| matches!(s, Slot::Blocking(..)))
        });
        let topics = if blocking {
            tokio::task::spawn_blocking(move || append_blocking(slots, acks, &metrics))
                .await
                .map_err(|e| task_failed("append task", e))?
        } else {
            append_blocking(slots, acks, &metrics)
        };
        Ok(Appended {
            acks,
            timeout,
            topics,
            metrics: Arc::clone(&self.metrics),
        })
    }

    /// The completion phase: waits for every partition's durability and ISR
    /// (concurrently) and returns each partition's outcome in request order.
    pub async fn complete(appended: Appended) -> Vec<TopicItems<PartitionOutcome<Produced>>> {
        let timeout = appended.timeout;
        let metrics = appended.metrics;
        let waiting: Vec<_> = appended
            .topics
            .into_iter()
            .map(|topic| {
                let tasks: Vec<_> = topic
                    .partitions
                    .into_iter()
                    .map(|(index, written)| {
                        let task = tokio::spawn(async move {
                            let (partition, pending) = written?;
                            let log_start_offset = pending.log_start_offset;
                            let info = partition.complete(pending, timeout).await?;
                            Ok::<_, ApiError>(Produced {
                                base_offset: info.base_offset,
                                log_start_offset,
                            })
                        });
                        (index, task)
                    })
                    .collect();
                (topic.topic, tasks)
            })
            .collect();
        let mut topics = Vec::with_capacity(waiting.len());
        for (topic, tasks) in waiting {
            let mut partitions = Vec::with_capacity(tasks.len());
            for (partition, task) in tasks {
                let outcome = task
                    .await
                    .unwrap_or_else(|e| Err(task_failed("append task", e)));
                if let Err(e) = &outcome {
                    metrics.error("produce", e.code);
                }
                partitions.push(PartitionOutcome { partition, outcome });
            }
            topics.push(TopicItems { topic, partitions });
        }
        topics
    }
}

/// A partition's append: done (or refused), or left for a blocking thread.
enum Slot {
    Done(Written),
    Blocking(Arc<Partition>, Bytes),
}

/// Runs the appends left for a blocking thread (blocking only if there are any) and
/// returns every partition's.
fn append_blocking(
    slots: Vec<TopicItems<(PartitionId, Slot)>>,
    acks: Acks,
    metrics: &Metrics,
) -> Vec<TopicItems<(PartitionId, Written)>> {
    slots
        .into_iter()
        .map(|topic| TopicItems {
            partitions: topic
                .partitions
                .into_iter()
                .map(|(index, slot)| {
                    let written = match slot {
                        Slot::Done(written) => written,
                        Slot::Blocking(partition, records) => {
                            let bytes = records.len();
                            partition.append_now(records, acks).map(|pending| {
                                count_appended(metrics, &topic.topic, partition, pending, bytes)
                            })
                        }
                    };
                    (index, written)
                })
                .collect(),
            topic: topic.topic,
        })
        .collect()
}

/// Counts an append in the metrics. A resend answered with its original offsets wrote
/// nothing: it was counted once, when first appended.
fn count_appended(
    metrics: &Metrics,
    topic: &str,
    partition: Arc<Partition>,
    pending: PendingAppend,
    bytes: usize,
) -> (Arc<Partition>, PendingAppend) {
    if !pending.duplicate {
        let n_records = pending.info.last_offset.0 - pending.info.base_offset.0 + 1;
        metrics.produced(topic, n_records.max(0) as u64, bytes as u64);
    }
    (partition, pending)
}

/// The coordinators' own topics, which no producer writes.
fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TRANSACTION_STATE_TOPIC
}

fn internal_topic(topic: &str) -> ApiError {
    let why = if topic == OFFSETS_TOPIC {
        "only group coordinators write it; commit offsets through a consumer group"
    } else {
        "only transaction coordinators write it"
    };
    ApiError::new(
        ErrorCode::InvalidTopicException,
        format!("{topic} is internal: {why}"),
    )
}
