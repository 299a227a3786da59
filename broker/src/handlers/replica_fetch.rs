//! ReplicaFetch (a follower pulls from this leader) and OffsetsForLeaderEpoch (where an
//! epoch ends in this leader's log).
//!
//! A replica fetch long-polls on each partition's `appended` notification (registered
//! before reading, as consumer fetches do with the HW), so a follower hears of an append
//! at once: acks=all latency is two replica round trips, not a polling interval.
//!
//! A fetch carries the follower's broker epoch (KIP-380): one from an older run of the
//! follower than the leader's metadata has registered is refused (STALE_BROKER_EPOCH), so
//! a zombie's fetch offsets never move the HW or the ISR; see
//! [`crate::replication::fetcher_incarnation`].

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::messages::{
    EpochEndOffset, OffsetForLeaderEpochPartitionResponse, OffsetForLeaderEpochTopicResponse,
    OffsetsForLeaderEpochRequest, OffsetsForLeaderEpochResponse, ReplicaFetchPartition,
    ReplicaFetchPartitionResponse, ReplicaFetchRequest, ReplicaFetchResponse,
};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset, Records};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::cluster::image::MetadataImage;
use crate::error::ApiError;
use crate::partition::{FollowerIncarnation, Partition};
use crate::replication::{fetcher_incarnation, propose_isr, REPLICA_FETCH_WAIT_MS};
use crate::security::Principal;
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
    let broker_epoch = request.broker_epoch;
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
        // The newest image each round: a registration applied during the long poll
        // confirms the follower's run (or shows it is an old one).
        let image = broker.cluster.image();
        // On this task when every log is free (a thread hand-off costs more than a small
        // page-cache read), else on a blocking thread.
        let read = match read_once(&image, follower, broker_epoch, &reading, max_bytes, false)? {
            Ok(read) => read,
            Err(proposed) => {
                propose(broker, proposed);
                tokio::task::spawn_blocking(move || {
                    read_once(&image, follower, broker_epoch, &reading, max_bytes, true)
                })
                .await
                .map_err(|e| {
                    ApiError::new(ErrorCode::UnknownServerError, format!("replica fetch: {e}"))
                })??
                .unwrap_or_else(|_| unreachable!("a blocking read reads every partition"))
            }
        };
        let (response, worth_answering, proposals) = read;
        propose(broker, proposals);
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

/// Sends ISR proposals to the controller, each on its own task.
fn propose(broker: &Arc<Broker>, proposals: Proposals) {
    for (partition, proposal) in proposals {
        tokio::spawn(propose_isr(Arc::clone(broker), partition, proposal));
    }
}

/// What one round of a replica fetch read: the response, whether it is worth sending now
/// (records, an error or a divergence), and ISR expansions to propose.
type Round = (ReplicaFetchResponse, bool, Proposals);

/// One round of a replica fetch: refuses a fetch from an older run of `follower` than
/// `image` has registered, else reads every partition once (see [`read_all`]).
fn read_once(
    image: &MetadataImage,
    follower: sluice_protocol::BrokerId,
    broker_epoch: i64,
    targets: &Targets,
    max_bytes: u32,
    block: bool,
) -> Result<Result<Round, Proposals>, ApiError> {
    let incarnation = fetcher_incarnation(image, follower, broker_epoch)?;
    Ok(read_all(targets, follower, incarnation, max_bytes, block))
}

/// Reads every partition once. With `block` false only quick reads of free logs: at a
/// busy one it stops and returns the ISR expansions proposed so far, which must still be
/// sent (the blocking round that reads again records the follower's progress again).
fn read_all(
    targets: &Targets,
    follower: sluice_protocol::BrokerId,
    incarnation: FollowerIncarnation,
    max_bytes: u32,
    block: bool,
) -> Result<Round, Proposals> {
    let mut total: u64 = 0;
    let mut worth = false;
    let mut proposals = Vec::new();
    let mut partitions = Vec::with_capacity(targets.len());
    for (request, found) in targets {
        let budget = (max_bytes as u64).saturating_sub(total) as u32;
        let limit = (request.partition_max_bytes.max(0) as u32).min(budget);
        // With the response full, read nothing but report the follower's progress.
        let full = total > 0 && limit == 0;
        let limit = if full { 0 } else { limit.max(1) };
        let read = found.as_ref().map_err(Clone::clone).and_then(|partition| {
            let read = if block {
                partition
                    .read_for_follower(follower, incarnation, request, limit)
                    .map(Some)
            } else {
                partition.try_read_for_follower(follower, incarnation, request, limit)
            };
            read.map(|read| {
                read.map(|(mut r, p)| {
                    if full {
                        r.records = Records::default();
                    }
                    (partition, r, p)
                })
            })
        });
        let read = match read {
            Ok(None) => return Err(proposals),
            Ok(Some(read)) => Ok(read),
            Err(e) => Err(e),
        };
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
                    records: Records::default(),
                }
            }
        });
    }
    Ok((ReplicaFetchResponse { partitions }, worth, proposals))
}

/// Where each asked epoch ends in this leader's log.
pub async fn offsets_for_leader_epoch(
    service: &Offsets,
    principal: &Principal,
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
    let ends = service.epoch_ends(principal, queries).await?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_protocol::BrokerId;

    use super::*;
    use crate::cluster::image::BrokerMeta;
    use crate::partition::testing::{assignment, open, produce};

    /// An image where brokers 1, 2 and 3 are registered with epochs 5, 10 and 12.
    fn image() -> MetadataImage {
        let brokers = [(1, 5), (2, 10), (3, 12)]
            .into_iter()
            .map(|(id, epoch)| {
                let meta = BrokerMeta {
                    id: BrokerId(id),
                    epoch,
                    incarnation_id: format!("run-{epoch}"),
                    listeners: Vec::new(),
                    rack: None,
                    fenced: false,
                    shutting_down: false,
                };
                (BrokerId(id), meta)
            })
            .collect::<BTreeMap<_, _>>();
        MetadataImage {
            brokers,
            ..MetadataImage::default()
        }
    }

    /// One round of broker `follower`'s fetch with `broker_epoch` at `fetch_offset`:
    /// the records' length and whether an ISR expansion was proposed, or the refusal.
    fn fetch(
        partition: &Arc<Partition>,
        follower: i32,
        broker_epoch: i64,
        fetch_offset: i64,
    ) -> Result<(usize, bool), ErrorCode> {
        let request = ReplicaFetchPartition {
            topic: "t".into(),
            partition: partition.index(),
            current_leader_epoch: partition.leader_epoch(),
            fetch_offset: Offset(fetch_offset),
            last_fetched_epoch: LeaderEpoch(-1),
            log_start_offset: Offset(0),
            partition_max_bytes: 1 << 20,
        };
        let targets: Targets = vec![(request, Ok(Arc::clone(partition)))];
        let (response, _, proposals) = read_once(
            &image(),
            BrokerId(follower),
            broker_epoch,
            &targets,
            1 << 20,
            true,
        )
        .map_err(|e| e.code)?
        .unwrap_or_else(|_| unreachable!("a blocking read reads every partition"));
        let answer = &response.partitions[0];
        assert_eq!(
            answer.error_code,
            ErrorCode::None,
            "{:?}",
            answer.error_message
        );
        Ok((answer.records.len(), !proposals.is_empty()))
    }

    /// (follower 2's tracked log end, follower 3's, the HW, the ISR) on the leader.
    fn progress(partition: &Partition) -> (Offset, Offset, Offset, Vec<BrokerId>) {
        let end = |id| {
            partition
                .follower_log_end(BrokerId(id))
                .expect("a follower")
        };
        (end(2), end(3), partition.high_watermark(), partition.isr())
    }

    #[test]
    fn a_fetch_from_an_older_run_of_the_follower_is_refused_and_counts_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let leader = open(dir.path(), &assignment(1, 1, &[1, 2]));
        produce(&leader, 3, 2); // offsets 0..6
        let isr = vec![BrokerId(1), BrokerId(2)];
        let untouched = (Offset(-1), Offset(-1), Offset(0), isr.clone());
        assert_eq!(progress(&leader), untouched);

        // Earlier runs of 2 (an ISR member) and 3 (caught up, so it would join the ISR).
        for (follower, stale) in [(2, 9), (2, 0), (3, 11)] {
            let refused = fetch(&leader, follower, stale, 6);
            assert_eq!(refused, Err(ErrorCode::StaleBrokerEpoch), "epoch {stale}");
            assert_eq!(progress(&leader), untouched, "epoch {stale}");
        }
        // A run whose registration the leader has not applied yet (newer, or none yet):
        // it gets its records, and counts for nothing until the registration arrives.
        for unconfirmed in [13, -1] {
            assert_eq!(
                fetch(&leader, 3, unconfirmed, 0),
                Ok((batches_len(&leader), false))
            );
            assert_eq!(fetch(&leader, 3, unconfirmed, 6), Ok((0, false)));
            assert_eq!(progress(&leader), untouched, "epoch {unconfirmed}");
        }

        // The current runs are served and counted.
        let (bytes, proposed) = fetch(&leader, 2, 10, 0).unwrap();
        assert_eq!((bytes, proposed), (batches_len(&leader), false));
        assert_eq!(
            progress(&leader),
            (Offset(0), Offset(-1), Offset(0), isr.clone())
        );
        assert_eq!(fetch(&leader, 2, 10, 6), Ok((0, false)));
        assert_eq!(
            progress(&leader),
            (Offset(6), Offset(-1), Offset(6), isr.clone())
        );
        assert_eq!(
            fetch(&leader, 3, 12, 6),
            Ok((0, true)),
            "3 caught up: expansion"
        );
        assert_eq!(leader.follower_log_end(BrokerId(3)), Some(Offset(6)));
    }

    /// Bytes of the whole log, all of which one fetch from offset 0 returns.
    fn batches_len(partition: &Partition) -> usize {
        partition
            .read_log(Offset(0), 1 << 20, partition.log_end_offset())
            .expect("read the log")
            .len()
    }
}
