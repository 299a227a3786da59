//! Fetch: the native request in, [`crate::services::fetch`] reads (long-polling), the
//! native response out.

use std::time::Duration;

use sluice_protocol::messages::{
    AbortedTransaction, FetchPartitionResponse, FetchRequest, FetchResponse, FetchTopicResponse,
};
use sluice_protocol::ErrorCode;

use crate::error::ApiError;
use crate::security::Principal;
use crate::services::fetch::{self, Fetch, FetchPartition};
use crate::services::{map_topics, TopicItems};

/// Serves a fetch.
pub async fn handle(
    service: &Fetch,
    principal: &Principal,
    request: FetchRequest,
) -> Result<FetchResponse, ApiError> {
    let request = fetch::FetchRequest {
        max_wait: Duration::from_millis(request.max_wait_ms.max(0) as u64),
        min_bytes: request.min_bytes.max(0) as u64,
        max_bytes: request.max_bytes.max(0) as u32,
        topics: request
            .topics
            .into_iter()
            .map(|t| TopicItems {
                topic: t.topic,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| FetchPartition {
                        partition: p.partition,
                        fetch_offset: p.fetch_offset,
                        partition_max_bytes: p.partition_max_bytes.max(0) as u32,
                        current_leader_epoch: p.current_leader_epoch,
                    })
                    .collect(),
            })
            .collect(),
        isolation: request.isolation_level,
        principal: principal.clone(),
    };
    let topics = service.fetch(request).await?;
    Ok(FetchResponse {
        topics: map_topics(
            topics,
            |p| {
                let (error_code, error_message, records) = match p.outcome {
                    Ok(records) => (ErrorCode::None, None, records),
                    Err(e) => (e.code, e.wire_message(), Default::default()),
                };
                FetchPartitionResponse {
                    partition: p.partition,
                    error_code,
                    error_message,
                    high_watermark: p.high_watermark,
                    last_stable_offset: p.last_stable_offset,
                    log_start_offset: p.log_start_offset,
                    aborted_transactions: p
                        .aborted
                        .into_iter()
                        .map(|(producer_id, first_offset)| AbortedTransaction {
                            producer_id,
                            first_offset,
                        })
                        .collect(),
                    records,
                }
            },
            |topic, partitions| FetchTopicResponse { topic, partitions },
        ),
    })
}
