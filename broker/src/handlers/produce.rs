//! Produce, in two phases. `start` runs in request order on the connection: it writes every
//! partition's batches to its log (one blocking-thread hop for the whole request), so two
//! pipelined requests of one producer land in the order they were sent, as Kafka
//! guarantees per connection. `finish` runs concurrently with later requests: it waits for
//! durability (group commit shares the fsync with every other waiter) and builds the
//! per-partition answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::group_log::OFFSETS_TOPIC;
use sluice_protocol::messages::{
    ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse,
};
use sluice_protocol::{ErrorCode, Offset, PartitionId, Response};

use super::Outcome;
use crate::broker::Broker;
use crate::error::ApiError;
use crate::partition::{Acks, Partition, PendingAppend};

/// A produce request whose batches are in the logs, awaiting acknowledgement.
pub struct Started {
    acks: Acks,
    /// How long acks=all waits for the ISR (the request's `timeout_ms`).
    timeout: Duration,
    topics: Vec<(String, Vec<WrittenPartition>)>,
}

/// A partition's index and its batches' append, or why they were not appended.
type WrittenPartition = (
    PartitionId,
    Result<(Arc<Partition>, PendingAppend), ApiError>,
);

/// The ordered phase: validates `acks`, finds every partition and appends its batches.
pub async fn start(broker: &Arc<Broker>, request: ProduceRequest) -> Result<Started, ApiError> {
    let acks = Acks::from_wire(request.acks)?;
    // Bounded both ways: a zero or negative timeout would fail every acks=all produce.
    let timeout = Duration::from_millis(request.timeout_ms.clamp(1000, 300_000) as u64);
    let image = broker.cluster.image();
    type Todo = (
        String,
        Vec<(PartitionId, Result<(Arc<Partition>, Bytes), ApiError>)>,
    );
    let todo: Vec<Todo> = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let found = if topic.name == OFFSETS_TOPIC {
                        Err(ApiError::new(
                            ErrorCode::InvalidTopicException,
                            format!(
                                "{OFFSETS_TOPIC} is internal: only group coordinators write \
                                 it; commit offsets through a consumer group"
                            ),
                        ))
                    } else {
                        broker.topics.partition(&image, &topic.name, p.partition)
                    };
                    (p.partition, found.map(|partition| (partition, p.records)))
                })
                .collect();
            (topic.name, partitions)
        })
        .collect();
    let topics = tokio::task::spawn_blocking(move || {
        todo.into_iter()
            .map(|(name, partitions)| {
                let written = partitions
                    .into_iter()
                    .map(|(index, found)| {
                        let written = found.and_then(|(partition, records)| {
                            let pending = partition.append_now(records, acks)?;
                            Ok((partition, pending))
                        });
                        (index, written)
                    })
                    .collect();
                (name, written)
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::UnknownServerError, format!("append task: {e}")))?;
    Ok(Started {
        acks,
        timeout,
        topics,
    })
}

/// The completion phase: waits for every partition's durability (concurrently), answers per
/// partition, or not at all for acks=0.
pub async fn finish(started: Started) -> Result<Outcome, ApiError> {
    let acks = started.acks;
    let timeout = started.timeout;
    let waiting: Vec<_> = started
        .topics
        .into_iter()
        .map(|(name, partitions)| {
            let tasks: Vec<_> = partitions
                .into_iter()
                .map(|(index, written)| {
                    let task = tokio::spawn(async move {
                        let (partition, pending) = written?;
                        let log_start_offset = pending.log_start_offset;
                        let info = partition.complete(pending, timeout).await?;
                        Ok::<_, ApiError>((info.base_offset, log_start_offset))
                    });
                    (index, task)
                })
                .collect();
            (name, tasks)
        })
        .collect();
    let mut topics = Vec::with_capacity(waiting.len());
    for (name, tasks) in waiting {
        let mut partitions = Vec::with_capacity(tasks.len());
        for (partition, task) in tasks {
            let outcome = task.await.unwrap_or_else(|e| {
                Err(ApiError::new(
                    ErrorCode::UnknownServerError,
                    format!("append task failed: {e}"),
                ))
            });
            partitions.push(partition_response(partition, outcome));
        }
        topics.push(ProduceTopicResponse { name, partitions });
    }
    if acks == Acks::None {
        return Ok(Outcome::Silent);
    }
    Ok(Outcome::Respond(Response::Produce(ProduceResponse {
        topics,
    })))
}

fn partition_response(
    partition: PartitionId,
    outcome: Result<(Offset, Offset), ApiError>,
) -> ProducePartitionResponse {
    match outcome {
        Ok((base_offset, log_start_offset)) => ProducePartitionResponse {
            partition,
            error_code: ErrorCode::None,
            error_message: None,
            base_offset,
            log_append_time_ms: -1,
            log_start_offset,
        },
        Err(e) => ProducePartitionResponse {
            partition,
            error_code: e.code,
            error_message: e.wire_message(),
            base_offset: Offset(-1),
            log_append_time_ms: -1,
            log_start_offset: Offset(-1),
        },
    }
}
