//! ListOffsets: earliest, latest (the high watermark) or the first offset at a time.

use std::sync::Arc;

use sluice_protocol::messages::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};

use crate::broker::Broker;
use crate::error::ApiError;

/// Looks up every requested partition, on the blocking pool: a lookup takes the log's
/// lock, which maintenance may hold across an fsync.
pub async fn list_offsets(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
) -> Result<ListOffsetsResponse, ApiError> {
    let broker = Arc::clone(broker);
    tokio::task::spawn_blocking(move || list_offsets_blocking(&broker, request))
        .await
        .map_err(|e| ApiError::new(ErrorCode::UnknownServerError, format!("list offsets: {e}")))
}

fn list_offsets_blocking(broker: &Broker, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let image = broker.cluster.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let found = broker.topics.partition(&image, &topic.name, p.partition);
                    let looked_up = found.and_then(|partition| {
                        let (timestamp, offset) =
                            partition.offset_for_timestamp(p.timestamp, p.current_leader_epoch)?;
                        Ok((timestamp, offset, partition.leader_epoch()))
                    });
                    match looked_up {
                        Ok((timestamp, offset, leader_epoch)) => ListOffsetsPartitionResponse {
                            partition: p.partition,
                            error_code: ErrorCode::None,
                            error_message: None,
                            timestamp,
                            offset,
                            leader_epoch,
                        },
                        Err(e) => ListOffsetsPartitionResponse {
                            partition: p.partition,
                            error_code: e.code,
                            error_message: e.wire_message(),
                            timestamp: -1,
                            offset: Offset(-1),
                            leader_epoch: LeaderEpoch::UNKNOWN,
                        },
                    }
                })
                .collect();
            ListOffsetsTopicResponse {
                name: topic.name,
                partitions,
            }
        })
        .collect();
    ListOffsetsResponse { topics }
}
