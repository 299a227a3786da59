//! The leader's side of WriteTxnMarkers (Kafka's api 27): a transaction coordinator asks
//! the leaders of a transaction's partitions to write its commit or abort marker. Each
//! partition appends the marker ([`Partition::append_marker`], which fences older producer
//! and coordinator epochs) and answers once its ISR has it, so the coordinator completes
//! the transaction only when every marker is committed. A marker on a
//! `__consumer_offsets` partition also decides the offsets the transaction committed
//! there (TxnOffsetCommit): the group coordinator applies or drops them before the answer.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::control::{ControlMarker, ControlType};
use sluice_protocol::group_log::OFFSETS_TOPIC;
use sluice_protocol::PartitionId;

use crate::cluster::image::MetadataImage;
use crate::error::ApiError;
use crate::groups::{GroupCoordinator, TxnEnd};
use crate::partition::{Partition, PendingAppend};
use crate::services::{task_failed, PartitionOutcome, TopicItems};
use crate::topics::Topics;

/// How long a marker may wait for the ISR (Kafka's coordinator retries a marker that times
/// out, as ours will).
const MARKER_TIMEOUT: Duration = Duration::from_secs(10);

/// One transaction's marker for some partitions led here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerRequest {
    /// The transaction's producer.
    pub producer_id: i64,
    /// The epoch the marker is written in.
    pub producer_epoch: i16,
    /// Commit or abort, and the coordinator's epoch.
    pub marker: ControlMarker,
    /// Its partitions.
    pub topics: Vec<TopicItems<PartitionId>>,
}

/// How a marker's writes went, per partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerResult {
    /// The transaction's producer.
    pub producer_id: i64,
    /// One outcome per partition asked.
    pub topics: Vec<TopicItems<PartitionOutcome<()>>>,
}

/// Writes every marker to its partitions (appends in request order, then the waits for
/// the ISRs side by side) and returns each partition's outcome.
pub async fn write_markers(
    topics: &Arc<Topics>,
    groups: &GroupCoordinator,
    image: &MetadataImage,
    markers: Vec<MarkerRequest>,
) -> Result<Vec<MarkerResult>, ApiError> {
    type Target = (PartitionId, Result<Arc<Partition>, ApiError>);
    let targets: Vec<(MarkerRequest, Vec<TopicItems<Target>>)> = markers
        .into_iter()
        .map(|m| {
            let resolved = m
                .topics
                .iter()
                .map(|t| TopicItems {
                    topic: t.topic.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|&p| (p, topics.partition(image, &t.topic, p)))
                        .collect(),
                })
                .collect();
            (m, resolved)
        })
        .collect();
    // The appends take the partitions' locks: on a blocking thread, in order.
    let appended = tokio::task::spawn_blocking(move || {
        targets
            .into_iter()
            .map(|(m, resolved)| {
                let written: Vec<TopicItems<(PartitionId, Written)>> = resolved
                    .into_iter()
                    .map(|t| TopicItems {
                        topic: t.topic,
                        partitions: t
                            .partitions
                            .into_iter()
                            .map(|(index, found)| {
                                let written = found.and_then(|p| {
                                    let pending =
                                        p.append_marker(m.producer_id, m.producer_epoch, m.marker)?;
                                    Ok((p, pending))
                                });
                                (index, written)
                            })
                            .collect(),
                    })
                    .collect();
                (m.producer_id, m.marker.kind, written)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| task_failed("writing transaction markers", e))?;
    let mut results = Vec::with_capacity(appended.len());
    for (producer_id, kind, written) in appended {
        let mut topics = Vec::with_capacity(written.len());
        for t in written {
            let mut partitions = Vec::with_capacity(t.partitions.len());
            for (partition, written) in t.partitions {
                let outcome = match written {
                    Ok((p, pending)) => match p.complete(pending, MARKER_TIMEOUT).await {
                        Ok(info) if t.topic == OFFSETS_TOPIC => {
                            let end = TxnEnd {
                                producer_id,
                                commit: kind == ControlType::Commit,
                                marker_offset: info.base_offset,
                            };
                            groups.end_txn(partition, end).await;
                            Ok(())
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                if let Err(e) = &outcome {
                    tracing::debug!(
                        "{} marker of producer {producer_id} for {}-{}: {}",
                        kind.name(),
                        t.topic,
                        partition.0,
                        e.message
                    );
                }
                partitions.push(PartitionOutcome { partition, outcome });
            }
            topics.push(TopicItems {
                topic: t.topic,
                partitions,
            });
        }
        results.push(MarkerResult {
            producer_id,
            topics,
        });
    }
    Ok(results)
}

/// A marker appended to a partition's log, or why it was not.
type Written = Result<(Arc<Partition>, PendingAppend), ApiError>;
