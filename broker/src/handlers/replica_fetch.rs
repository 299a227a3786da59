//! ReplicaFetch (a follower pulls from this leader) and OffsetsForLeaderEpoch (where an
//! epoch ends in this leader's log).
//!
//! A replica fetch long-polls on each partition's `appended` notification (registered
//! before reading, as consumer fetches do with the HW), so a follower hears of an append
//! at once: acks=all latency is two replica round trips, not a polling interval.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::messages::{
    EpochEndOffset, OffsetForLeaderEpochPartitionResponse, OffsetForLeaderEpochTopicResponse,
    OffsetsForLeaderEpochRequest, OffsetsForLeaderEpochResponse, ReplicaFetchPartition,
    ReplicaFetchPartitionResponse, ReplicaFetchRequest, ReplicaFetchResponse,
};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::error::ApiError;
use crate::partition::Partition;
use crate::replication::{propose_isr, REPLICA_FETCH_WAIT_MS};
use crate::services::fetch::any_woken;
use crate::services::offsets::{EpochQuery, Offsets};
use crate::services::{map_topics, TopicItems};

type Targets = Vec<(ReplicaFetchPartition, Result<Arc<Partition>, ApiError>)>;

/// Serves a follower's fetch: records its progress, returns new batches or where its log
/// diverged, waiting up to `max_wait_ms` for an append when there is nothing new.
pub async fn replica_fetch(
    broker: &Arc<Broker>,
    request: ReplicaFetchRequest,
) -> Result<ReplicaFetchResponse, ApiError> {
    let image = broker.cluster.image();
    let follower = request.replica_id;
    if follower == broker.config.node_id {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "a broker cannot fetch from itself",
        ));
    }
    let targets: Arc<Targets> = Arc::new(
        request
            .partitions
            .into_iter()
            .map(|p| {
                let found = broker.topics.partition(&image, &p.topic, p.partition);
                (p, found)
            })
            .collect(),
    );
    let wait = request.max_wait_ms.clamp(0, 2 * REPLICA_FETCH_WAIT_MS) as u64;
    let deadline = Instant::now() + Duration::from_millis(wait);
    let max_bytes = (request.max_bytes.max(0) as u32)
        .min(broker.config.max_frame_bytes.saturating_sub(64 * 1024));
    let mut stopping = broker.stopping();
    loop {
        let live: Vec<&Arc<Partition>> = targets
            .iter()
            .filter_map(|(_, p)| p.as_ref().ok())
            .collect();
        let mut wakers: Vec<_> = live
            .iter()
            .map(|p| Box::pin(p.appended().notified()))
            .collect();
        for waker in &mut wakers {
            waker.as_mut().enable();
        }
        let reading = Arc::clone(&targets);
        let (response, worth_answering, proposals) =
            tokio::task::spawn_blocking(move || read_all(&reading, follower, max_bytes))
                .await
                .map_err(|e| {
                    ApiError::new(ErrorCode::UnknownServerError, format!("replica fetch: {e}"))
                })?;
        for (partition, proposal) in proposals {
            tokio::spawn(propose_isr(Arc::clone(broker), partition, proposal));
        }
        if worth_answering || Instant::now() >= deadline || broker.is_stopping() {
            return Ok(response);
        }
        tokio::select! {
            _ = any_woken(&mut wakers) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
    }
}

type Proposals = Vec<(Arc<Partition>, crate::partition::IsrProposal)>;

/// Reads every partition once. Returns the response, whether it is worth sending now
/// (records, an error or a divergence), and ISR expansions to propose.
fn read_all(
    targets: &Targets,
    follower: sluice_protocol::BrokerId,
    max_bytes: u32,
) -> (ReplicaFetchResponse, bool, Proposals) {
    let mut total: u64 = 0;
    let mut worth = false;
    let mut proposals = Vec::new();
    let mut partitions = Vec::with_capacity(targets.len());
    for (request, found) in targets {
        let budget = (max_bytes as u64).saturating_sub(total) as u32;
        let limit = (request.partition_max_bytes.max(0) as u32).min(budget);
        let read = found.as_ref().map_err(Clone::clone).and_then(|partition| {
            if total > 0 && limit == 0 {
                // The response is full: report progress, read nothing.
                return partition
                    .read_for_follower(
                        follower,
                        request.fetch_offset,
                        request.last_fetched_epoch,
                        request.current_leader_epoch,
                        0,
                    )
                    .map(|(mut r, p)| {
                        r.records = Bytes::new();
                        (partition, r, p)
                    });
            }
            partition
                .read_for_follower(
                    follower,
                    request.fetch_offset,
                    request.last_fetched_epoch,
                    request.current_leader_epoch,
                    limit.max(1),
                )
                .map(|(r, p)| (partition, r, p))
        });
        partitions.push(match read {
            Ok((partition, read, proposal)) => {
                if let Some(proposal) = proposal {
                    proposals.push((Arc::clone(partition), proposal));
                }
                total += read.records.len() as u64;
                worth |= !read.records.is_empty() || read.diverging.is_some();
                ReplicaFetchPartitionResponse {
                    topic: request.topic.clone(),
                    partition: request.partition,
                    error_code: ErrorCode::None,
                    error_message: None,
                    high_watermark: read.high_watermark,
                    log_start_offset: read.log_start_offset,
                    diverging_epoch: read
                        .diverging
                        .map(|(epoch, end_offset)| EpochEndOffset { epoch, end_offset }),
                    records: read.records,
                }
            }
            Err(e) => {
                worth = true;
                let (high_watermark, log_start_offset) =
                    found.as_ref().map_or((Offset(-1), Offset(-1)), |p| {
                        (p.high_watermark(), p.log_start_offset())
                    });
                ReplicaFetchPartitionResponse {
                    topic: request.topic.clone(),
                    partition: request.partition,
                    error_code: e.code,
                    error_message: e.wire_message(),
                    high_watermark,
                    log_start_offset,
                    diverging_epoch: None,
                    records: Bytes::new(),
                }
            }
        });
    }
    (ReplicaFetchResponse { partitions }, worth, proposals)
}

/// Where each asked epoch ends in this leader's log.
pub async fn offsets_for_leader_epoch(
    service: &Offsets,
    request: OffsetsForLeaderEpochRequest,
) -> Result<OffsetsForLeaderEpochResponse, ApiError> {
    let queries = request
        .topics
        .into_iter()
        .map(|t| TopicItems {
            topic: t.topic,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| EpochQuery {
                    partition: p.partition,
                    current_leader_epoch: p.current_leader_epoch,
                    leader_epoch: p.leader_epoch,
                })
                .collect(),
        })
        .collect();
    let ends = service.epoch_ends(queries).await?;
    Ok(OffsetsForLeaderEpochResponse {
        topics: map_topics(
            ends,
            |p| match p.outcome {
                Ok(end) => OffsetForLeaderEpochPartitionResponse {
                    partition: p.partition,
                    error_code: ErrorCode::None,
                    error_message: None,
                    leader_epoch: end.leader_epoch,
                    end_offset: end.end_offset,
                },
                Err(e) => OffsetForLeaderEpochPartitionResponse {
                    partition: p.partition,
                    error_code: e.code,
                    error_message: e.wire_message(),
                    leader_epoch: LeaderEpoch(-1),
                    end_offset: Offset(-1),
                },
            },
            |topic, partitions| OffsetForLeaderEpochTopicResponse { topic, partitions },
        ),
    })
}
