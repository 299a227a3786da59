//! WriteTxnMarkers (brokers only): the native request in, [`crate::txn::markers`] writes,
//! the native response out.

use sluice_protocol::control::{ControlMarker, ControlType};
use sluice_protocol::messages::{
    PartitionResult, TopicPartitionResults, WritableTxnMarkerResult, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use sluice_protocol::ErrorCode;

use crate::broker::Broker;
use crate::error::ApiError;
use crate::services::{map_topics, TopicItems};
use crate::txn::markers::{self, MarkerRequest};

/// Writes the markers of a WriteTxnMarkers request.
pub async fn write_txn_markers(
    broker: &Broker,
    request: WriteTxnMarkersRequest,
) -> Result<WriteTxnMarkersResponse, ApiError> {
    let asked = request
        .markers
        .into_iter()
        .map(|m| MarkerRequest {
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            marker: ControlMarker {
                kind: if m.committed {
                    ControlType::Commit
                } else {
                    ControlType::Abort
                },
                coordinator_epoch: m.coordinator_epoch,
            },
            topics: m
                .topics
                .into_iter()
                .map(|t| TopicItems {
                    topic: t.topic,
                    partitions: t.partitions,
                })
                .collect(),
        })
        .collect();
    let image = broker.cluster.image();
    let results = markers::write_markers(&broker.topics, &image, asked).await?;
    Ok(WriteTxnMarkersResponse {
        markers: results
            .into_iter()
            .map(|r| WritableTxnMarkerResult {
                producer_id: r.producer_id,
                topics: map_topics(
                    r.topics,
                    |p| {
                        let (error_code, error_message) = match p.outcome {
                            Ok(()) => (ErrorCode::None, None),
                            Err(e) => (e.code, e.wire_message()),
                        };
                        PartitionResult {
                            partition: p.partition,
                            error_code,
                            error_message,
                        }
                    },
                    |name, partitions| TopicPartitionResults { name, partitions },
                ),
            })
            .collect(),
    })
}
