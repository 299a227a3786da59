//! ListOffsets and DeleteRecords: the native request in, [`crate::services::offsets`]
//! looks up or deletes, the native response out.

use std::time::Duration;

use sluice_protocol::messages::{
    DeleteRecordsPartitionResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DeleteRecordsTopicResponse, ListOffsetsPartitionResponse, ListOffsetsRequest,
    ListOffsetsResponse, ListOffsetsTopicResponse,
};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};

use crate::error::ApiError;
use crate::security::Principal;
use crate::services::offsets::{DeleteQuery, OffsetQuery, Offsets};
use crate::services::{map_topics, TopicItems};

/// Looks up every requested partition.
pub async fn list_offsets(
    service: &Offsets,
    principal: &Principal,
    request: ListOffsetsRequest,
) -> Result<ListOffsetsResponse, ApiError> {
    let isolation = request.isolation_level;
    let queries = request
        .topics
        .into_iter()
        .map(|t| TopicItems {
            topic: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| OffsetQuery {
                    partition: p.partition,
                    timestamp: p.timestamp,
                    current_leader_epoch: p.current_leader_epoch,
                    isolation,
                })
                .collect(),
        })
        .collect();
    let found = service.list_offsets(principal, queries).await?;
    Ok(ListOffsetsResponse {
        topics: map_topics(
            found,
            |p| match p.outcome {
                Ok(found) => ListOffsetsPartitionResponse {
                    partition: p.partition,
                    error_code: ErrorCode::None,
                    error_message: None,
                    timestamp: found.timestamp,
                    offset: found.offset,
                    leader_epoch: found.leader_epoch,
                },
                Err(e) => ListOffsetsPartitionResponse {
                    partition: p.partition,
                    error_code: e.code,
                    error_message: e.wire_message(),
                    timestamp: -1,
                    offset: Offset(-1),
                    leader_epoch: LeaderEpoch::UNKNOWN,
                },
            },
            |topic, partitions| ListOffsetsTopicResponse {
                name: topic,
                partitions,
            },
        ),
    })
}

/// Deletes the records below each requested offset, on the leaders here.
pub async fn delete_records(
    service: &Offsets,
    principal: &Principal,
    request: DeleteRecordsRequest,
) -> Result<DeleteRecordsResponse, ApiError> {
    let queries = request
        .topics
        .into_iter()
        .map(|t| TopicItems {
            topic: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| DeleteQuery {
                    partition: p.partition,
                    offset: p.offset.0,
                })
                .collect(),
        })
        .collect();
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let deleted = service.delete_records(principal, queries, timeout).await?;
    Ok(DeleteRecordsResponse {
        topics: map_topics(
            deleted,
            |p| {
                let (error_code, error_message, low_watermark) = match p.outcome {
                    Ok(low) => (ErrorCode::None, None, low),
                    Err(e) => (e.code, e.wire_message(), Offset(-1)),
                };
                DeleteRecordsPartitionResponse {
                    partition: p.partition,
                    error_code,
                    error_message,
                    low_watermark,
                }
            },
            |topic, partitions| DeleteRecordsTopicResponse {
                name: topic,
                partitions,
            },
        ),
    })
}
