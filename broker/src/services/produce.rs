//! Produce, in two phases. [`Produce::append`] runs in request order on the connection: it
//! writes every partition's batches to its log (small uncompressed ones in place, the rest
//! in one blocking-thread hop for the whole request), so two pipelined requests of one
//! producer land in the order they were sent, as Kafka guarantees per connection.
//! [`Produce::complete`] runs concurrently with later requests: it waits for durability
//! (group commit shares the fsync with every other waiter) and the ISR, and gives each
//! partition its outcome.
//!
//! A transactional batch that would begin its producer's transaction in a partition is
//! held back by the partition ([`Append::Unverified`]) and appended only once the
//! transactional id's coordinator confirms the partition is in the producer's ongoing
//! transaction (KIP-890, through a [`TxnVerifier`]); the ordered phase awaits that answer,
//! so the connection's next request still comes after it. Other batches never wait for it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::group_log::OFFSETS_TOPIC;
use sluice_protocol::messages::TopicPartitions;
use sluice_protocol::{ErrorCode, Offset, PartitionId};

use super::{task_failed, PartitionOutcome, TopicItems};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::partition::{
    Acks, Append, Partition, PendingAppend, Unverified, INLINE_APPEND_BYTES_MAX,
};
use crate::security::acl::{Authorizer, Operation, Resource};
use crate::security::Principal;
use crate::topic_config::internal_topic;
use crate::topics::Topics;

/// Shortest acks=all wait honoured: a zero or negative request timeout would fail every
/// acks=all produce.
const TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Longest acks=all wait honoured: a bound on held requests.
const TIMEOUT_MAX: Duration = Duration::from_secs(300);

/// What the coordinators answered for some partitions: each `Ok` (in the transaction) or
/// the error the produce answers there; an `Err` for all of them.
pub type Verified = Result<Vec<TopicItems<PartitionOutcome<()>>>, ApiError>;

/// Asks transactional id `transactional_id`'s coordinator whether `partitions` are in the
/// ongoing transaction of producer `producer_id` at `epoch` (KIP-890). Implemented by the
/// transaction coordinator's service, which builds on this layer (so this is a trait, not
/// an import); its errors are already the ones a produce answers (a coordinator that is
/// loading, moved or out of reach is retriable).
pub trait TxnVerifier: Send + Sync {
    fn verify<'a>(
        &'a self,
        transactional_id: &'a str,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<TopicPartitions>,
    ) -> Pin<Box<dyn Future<Output = Verified> + Send + 'a>>;
}

/// A produce request in service terms.
#[derive(Clone, Debug)]
pub struct ProduceRequest {
    /// The producer's transactional id, if it is transactional: needed to verify a batch
    /// that begins its transaction in a partition.
    pub transactional_id: Option<String>,
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
    /// The broker's timestamp of the records, when the topic's `message.timestamp.type`
    /// is LogAppendTime (Kafka's produce answer carries it).
    pub log_append_time_ms: Option<i64>,
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
    /// Asks transaction coordinators about batches that begin a transaction.
    verifier: Arc<dyn TxnVerifier>,
}

impl Produce {
    /// Appends to the replicas in `topics`, as `cluster`'s metadata names them, counting
    /// what is appended in `metrics`; `verifier` confirms the partitions a transactional
    /// batch begins its transaction in.
    pub fn new(
        cluster: Arc<Cluster>,
        topics: Arc<Topics>,
        metrics: Arc<Metrics>,
        authorizer: Arc<Authorizer>,
        verifier: Arc<dyn TxnVerifier>,
    ) -> Produce {
        Produce {
            cluster,
            topics,
            metrics,
            authorizer,
            verifier,
        }
    }

    /// The ordered phase: finds every partition and appends its batches. Per-partition
    /// failures are kept for [`Produce::complete`]; an `Err` fails the whole request.
    pub async fn append(&self, request: ProduceRequest) -> Result<Appended, ApiError> {
        let acks = request.acks;
        let timeout = request.timeout.clamp(TIMEOUT_MIN, TIMEOUT_MAX);
        if let Some(id) = &request.transactional_id {
            // A transactional producer writes for its id: it needs Write on it (Kafka's
            // TRANSACTIONAL_ID_AUTHORIZATION_FAILED for the whole request otherwise).
            self.authorizer.check(
                &request.principal,
                Operation::Write,
                Resource::TransactionalId(id),
            )?;
        }
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
                        } else if internal_topic(&topic.topic).is_some() {
                            Err(internal_topic_refused(&topic.topic))
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
        // Small uncompressed appends run here, on the connection's task, up to
        // INLINE_APPEND_BYTES_MAX for the whole request; the rest, and those whose log is
        // busy, together on one blocking thread.
        let metrics = Arc::clone(&self.metrics);
        let mut inline_left = INLINE_APPEND_BYTES_MAX;
        let mut slots: Vec<TopicItems<(PartitionId, Slot)>> = found
            .into_iter()
            .map(|topic| TopicItems {
                partitions: topic
                    .partitions
                    .into_iter()
                    .map(|(index, found)| {
                        let slot = match found {
                            Err(e) => Slot::Done(Err(e)),
                            Ok((partition, records)) if records.len() > inline_left => {
                                Slot::Blocking(partition, records)
                            }
                            Ok((partition, records)) => {
                                match partition.try_append_now(&records, acks) {
                                    Ok(Some(append)) => {
                                        inline_left -= records.len();
                                        appended(
                                            &metrics,
                                            &topic.topic,
                                            partition,
                                            append,
                                            records.len(),
                                        )
                                    }
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
        if any_slot(&slots, |s| matches!(s, Slot::Blocking(..))) {
            slots = self.append_blocking(slots, acks).await?;
        }
        if any_slot(&slots, |s| matches!(s, Slot::Unverified(..))) {
            slots = self
                .verify(request.transactional_id.as_deref(), slots)
                .await;
            if any_slot(&slots, |s| matches!(s, Slot::Verified(..))) {
                slots = self.append_blocking(slots, acks).await?;
            }
        }
        let topics = slots
            .into_iter()
            .map(|topic| TopicItems {
                partitions: topic
                    .partitions
                    .into_iter()
                    .map(|(index, slot)| (index, slot.written(&topic.topic, index)))
                    .collect(),
                topic: topic.topic,
            })
            .collect();
        Ok(Appended {
            acks,
            timeout,
            topics,
            metrics: Arc::clone(&self.metrics),
        })
    }

    /// Runs the appends left for a blocking thread, all on one.
    async fn append_blocking(
        &self,
        slots: Vec<TopicItems<(PartitionId, Slot)>>,
        acks: Acks,
    ) -> Result<Vec<TopicItems<(PartitionId, Slot)>>, ApiError> {
        let metrics = Arc::clone(&self.metrics);
        tokio::task::spawn_blocking(move || append_blocking(slots, acks, &metrics))
            .await
            .map_err(|e| task_failed("append task", e))
    }

    /// Asks the coordinator about every batch held back for its word: each becomes
    /// [`Slot::Verified`], or is refused with the coordinator's answer (its guard dropped).
    async fn verify(
        &self,
        transactional_id: Option<&str>,
        slots: Vec<TopicItems<(PartitionId, Slot)>>,
    ) -> Vec<TopicItems<(PartitionId, Slot)>> {
        // The producers asked about (one, from a well-behaved client) and their partitions.
        let mut asked: BTreeMap<(i64, i16), Vec<TopicPartitions>> = BTreeMap::new();
        for topic in &slots {
            for (index, slot) in &topic.partitions {
                if let Slot::Unverified(_, unverified) = slot {
                    let guard = unverified.guard;
                    let list = asked
                        .entry((guard.producer_id(), guard.epoch()))
                        .or_default();
                    match list.iter_mut().find(|t| t.topic == topic.topic) {
                        Some(t) => t.partitions.push(*index),
                        None => list.push(TopicPartitions {
                            topic: topic.topic.clone(),
                            partitions: vec![*index],
                        }),
                    }
                }
            }
        }
        let mut answers: BTreeMap<(i64, i16), Verified> = BTreeMap::new();
        if let Some(id) = transactional_id {
            for ((producer_id, epoch), partitions) in asked {
                let answer = self
                    .verifier
                    .verify(id, producer_id, epoch, partitions)
                    .await;
                answers.insert((producer_id, epoch), answer);
            }
        }
        slots
            .into_iter()
            .map(|topic| TopicItems {
                partitions: topic
                    .partitions
                    .into_iter()
                    .map(|(index, slot)| {
                        let Slot::Unverified(partition, unverified) = slot else {
                            return (index, slot);
                        };
                        let guard = unverified.guard;
                        let answer = answers.get(&(guard.producer_id(), guard.epoch()));
                        let outcome = match answer {
                            None => Err(no_transactional_id(&topic.topic, index, &unverified)),
                            Some(Err(e)) => Err(e.clone()),
                            Some(Ok(results)) => answer_for(results, &topic.topic, index),
                        };
                        let slot = match outcome {
                            Ok(()) => Slot::Verified(partition, unverified),
                            Err(e) => {
                                partition.cancel_verification(guard);
                                Slot::Done(Err(e))
                            }
                        };
                        (index, slot)
                    })
                    .collect(),
                topic: topic.topic,
            })
            .collect()
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
                                log_append_time_ms: partition
                                    .log_append_time()
                                    .then_some(info.max_timestamp),
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

/// A partition's append: done (or refused), or what is left to do.
enum Slot {
    Done(Written),
    /// For a blocking thread.
    Blocking(Arc<Partition>, Bytes),
    /// Held back for the transaction coordinator's word.
    Unverified(Arc<Partition>, Unverified),
    /// Confirmed by the coordinator: to append under its guard, on a blocking thread.
    Verified(Arc<Partition>, Unverified),
}

impl Slot {
    /// The outcome of a slot all of whose work is done.
    fn written(self, topic: &str, index: PartitionId) -> Written {
        match self {
            Slot::Done(written) => written,
            _ => Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!("{topic}-{}: the append was left unfinished", index.0),
            )),
        }
    }
}

/// Whether any partition's slot is `which`.
fn any_slot(slots: &[TopicItems<(PartitionId, Slot)>], which: impl Fn(&Slot) -> bool) -> bool {
    slots
        .iter()
        .any(|t| t.partitions.iter().any(|(_, slot)| which(slot)))
}

/// Runs the appends left for a blocking thread (blocking, when there are any): the
/// blocking ones and the verified ones.
fn append_blocking(
    slots: Vec<TopicItems<(PartitionId, Slot)>>,
    acks: Acks,
    metrics: &Metrics,
) -> Vec<TopicItems<(PartitionId, Slot)>> {
    slots
        .into_iter()
        .map(|topic| TopicItems {
            partitions: topic
                .partitions
                .into_iter()
                .map(|(index, slot)| {
                    let slot = match slot {
                        Slot::Blocking(partition, records) => {
                            let bytes = records.len();
                            match partition.append_now(records, acks) {
                                Ok(append) => {
                                    appended(metrics, &topic.topic, partition, append, bytes)
                                }
                                Err(e) => Slot::Done(Err(e)),
                            }
                        }
                        Slot::Verified(partition, unverified) => {
                            let bytes = unverified.records.len();
                            Slot::Done(partition.append_verified(unverified, acks).map(|pending| {
                                count_appended(metrics, &topic.topic, partition, pending, bytes)
                            }))
                        }
                        other => other,
                    };
                    (index, slot)
                })
                .collect(),
            topic: topic.topic,
        })
        .collect()
}

/// The slot of a partition's append: written (counted), or held back for verification.
fn appended(
    metrics: &Metrics,
    topic: &str,
    partition: Arc<Partition>,
    append: Append,
    bytes: usize,
) -> Slot {
    match append {
        Append::Written(pending) => Slot::Done(Ok(count_appended(
            metrics, topic, partition, pending, bytes,
        ))),
        Append::Unverified(unverified) => Slot::Unverified(partition, unverified),
    }
}

/// The coordinator's answer for `topic`-`index` among `results`.
fn answer_for(
    results: &[TopicItems<PartitionOutcome<()>>],
    topic: &str,
    index: PartitionId,
) -> Result<(), ApiError> {
    results
        .iter()
        .filter(|t| t.topic == topic)
        .flat_map(|t| &t.partitions)
        .find(|p| p.partition == index)
        .map_or_else(
            || {
                Err(ApiError::new(
                    ErrorCode::UnknownServerError,
                    format!(
                        "{topic}-{}: the transaction coordinator's answer left this partition \
                         out",
                        index.0
                    ),
                ))
            },
            |p| p.outcome.clone(),
        )
}

fn no_transactional_id(topic: &str, index: PartitionId, unverified: &Unverified) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!(
            "{topic}-{}: the transactional batch of producer {} epoch {} would begin its \
             transaction in this partition, and the Produce request names no transactional \
             id to verify that with the transaction coordinator; send the producer's \
             transactional id with the request",
            index.0,
            unverified.guard.producer_id(),
            unverified.guard.epoch()
        ),
    )
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

fn internal_topic_refused(topic: &str) -> ApiError {
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
