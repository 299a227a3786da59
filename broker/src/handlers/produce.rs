//! Produce: the native request in, [`crate::services::produce`] appends (in request order:
//! the connection awaits `start` before the next request) and waits, the native response
//! out.

use std::time::Duration;

use sluice_protocol::messages::{
    ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse,
};
use sluice_protocol::{ErrorCode, Offset, Response};

use super::Outcome;
use crate::error::ApiError;
use crate::partition::{parse_acks, Acks};
use crate::security::Principal;
use crate::services::produce::{self, Appended, Produce, Produced};
use crate::services::{map_topics, TopicItems};

/// The ordered phase: validates `acks` and appends every partition's batches.
pub async fn start(
    service: &Produce,
    principal: &Principal,
    request: ProduceRequest,
) -> Result<Appended, ApiError> {
    let request = produce::ProduceRequest {
        transactional_id: request.transactional_id,
        acks: parse_acks(request.acks)?,
        timeout: Duration::from_millis(request.timeout_ms.max(0) as u64),
        topics: request
            .topics
            .into_iter()
            .map(|t| TopicItems {
                topic: t.name,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| (p.partition, p.records))
                    .collect(),
            })
            .collect(),
        principal: principal.clone(),
    };
    service.append(request).await
}

/// The completion phase: every partition's outcome, or nothing for acks=0.
pub async fn finish(appended: Appended) -> Result<Outcome, ApiError> {
    let acks = appended.acks();
    let topics = Produce::complete(appended).await;
    if acks == Acks::None {
        return Ok(Outcome::Silent);
    }
    let topics = map_topics(
        topics,
        |p| partition_response(p.partition, p.outcome),
        |topic, partitions| ProduceTopicResponse {
            name: topic,
            partitions,
        },
    );
    Ok(Outcome::Respond(Response::Produce(ProduceResponse {
        topics,
    })))
}

fn partition_response(
    partition: sluice_protocol::PartitionId,
    outcome: Result<Produced, ApiError>,
) -> ProducePartitionResponse {
    match outcome {
        Ok(produced) => ProducePartitionResponse {
            partition,
            error_code: ErrorCode::None,
            error_message: None,
            base_offset: produced.base_offset,
            log_append_time_ms: -1,
            log_start_offset: produced.log_start_offset,
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
