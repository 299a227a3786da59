//! Produce: append each partition's batches, all partitions of a request concurrently.

use std::sync::Arc;

use sluice_protocol::messages::{
    ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse,
};
use sluice_protocol::{ErrorCode, Offset, Response};

use super::Outcome;
use crate::broker::Broker;
use crate::error::ApiError;
use crate::partition::Acks;

/// Appends every partition's records; answers per partition, or not at all for acks=0.
pub async fn handle(broker: &Arc<Broker>, request: ProduceRequest) -> Result<Outcome, ApiError> {
    let acks = Acks::from_wire(request.acks)?;
    // One task per partition, so a request spanning partitions appends them in parallel;
    // the handles are awaited in request order, which keeps the response in that order.
    let mut pending = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let found = broker.topics.partition(&topic.name, p.partition);
            let index = p.partition;
            let task = tokio::spawn(async move {
                let partition = found?;
                let info = partition.append(p.records, acks).await?;
                Ok::<_, ApiError>((info.base_offset, partition.log_start_offset()))
            });
            partitions.push((index, task));
        }
        pending.push((topic.name, partitions));
    }
    let mut topics = Vec::with_capacity(pending.len());
    for (name, partitions) in pending {
        let mut results = Vec::with_capacity(partitions.len());
        for (partition, task) in partitions {
            let outcome = task.await.unwrap_or_else(|e| {
                Err(ApiError::new(
                    ErrorCode::UnknownServerError,
                    format!("append task failed: {e}"),
                ))
            });
            results.push(match outcome {
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
            });
        }
        topics.push(ProduceTopicResponse {
            name,
            partitions: results,
        });
    }
    if acks == Acks::None {
        return Ok(Outcome::Silent);
    }
    Ok(Outcome::Respond(Response::Produce(ProduceResponse {
        topics,
    })))
}
