//! ListOffsets: the native request in, [`crate::services::offsets`] looks up, the native
//! response out.

use sluice_protocol::messages::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};

use crate::error::ApiError;
use crate::security::Principal;
use crate::services::offsets::{OffsetQuery, Offsets};
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
