//! Replication between brokers (DESIGN §6): followers pull from leaders, leaders keep the
//! ISR.
//!
//! - One fetcher task per leader broker this broker follows. Each round it asks the leader
//!   for every partition it follows there (ReplicaFetch, a long poll), appends what comes
//!   back with the leader's offsets and epochs, makes it durable (a follower reports as
//!   its log end only what is durable), and takes the leader's HW. A diverging answer
//!   truncates the replica to the leader's epoch boundary (KIP-101/279/320). A task ends
//!   when it no longer follows anything on its leader.
//! - Small answers are appended on the fetcher's task and fsynced by a flusher thread
//!   that the task awaits, large ones and truncations run on a blocking thread; the
//!   leader reads small answers on its connection's task too. (Fetching again while the
//!   fsync runs, reporting the durable end beside the fetch offset, was tried: at half
//!   the maximum rate of three brokers on two cores it cost the followers an eighth more
//!   CPU and moved neither the median nor the p99; BENCHMARKS.md.)
//! - Leaders propose ISR changes to the controller (AlterPartition): expansions as
//!   followers catch up (from the replica fetch handler), shrinks from [`maintain_isr`]
//!   when a follower lags more than `replica_lag_time_max_ms`.
//! - A fetch carries the follower's broker epoch (KIP-380), and a leader counts it only
//!   from the run its metadata has registered ([`fetcher_incarnation`]): a zombie run's
//!   fetch offsets must not advance the HW or the ISR.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_protocol::messages::{
    AlterPartitionPartition, AlterPartitionRequest, AlterPartitionTopic, ReplicaFetchPartition,
    ReplicaFetchPartitionResponse, ReplicaFetchRequest, ReplicaFetchResponse,
};
use sluice_protocol::{BrokerId, ErrorCode, Request, Response};

use crate::broker::Broker;
use crate::cluster::image::{ListenerMeta, MetadataImage, NATIVE_LISTENER};
use crate::cluster::peer::{PeerConnection, PeerError};
use crate::error::ApiError;
use crate::partition::{
    FollowerIncarnation, IsrProposal, Partition, Role, INLINE_APPEND_BYTES_MAX,
};

/// How long a follower's fetch waits at the leader for new data.
pub const REPLICA_FETCH_WAIT_MS: i32 = 500;
/// Most bytes per partition in one replica fetch.
const REPLICA_FETCH_PARTITION_BYTES: i32 = 4 << 20;
/// Pause after a failed replica fetch.
const FETCH_BACKOFF: Duration = Duration::from_millis(200);
/// Pause after the leader refused a partition because it has not applied the metadata
/// that makes it the leader yet (it will within milliseconds: a new topic, a failover).
const NOT_READY_BACKOFF: Duration = Duration::from_millis(10);

/// Which run of `follower` a replica fetch carrying `broker_epoch` comes from, as the
/// leader's `image` knows the follower's registration (its epoch is the metadata log
/// index of the registration, so a later run's is larger):
///
/// - the registered epoch: [`FollowerIncarnation::Registered`], counted;
/// - an older one: a run the controller has replaced (a broker paused or cut off through
///   its restart, whose log may have lost what it reported): refused with
///   STALE_BROKER_EPOCH, so its fetch offsets move neither the HW nor the ISR;
/// - a newer one, none (-1: the run has not registered yet), or a follower the image
///   does not list: the leader has not applied that registration yet. Served but not
///   counted ([`FollowerIncarnation::Unconfirmed`]) until it has, within milliseconds:
///   refusing would only stall a follower that did nothing wrong.
pub fn fetcher_incarnation(
    image: &MetadataImage,
    follower: BrokerId,
    broker_epoch: i64,
) -> Result<FollowerIncarnation, ApiError> {
    let Some(registered) = image.brokers.get(&follower).map(|b| b.epoch) else {
        return Ok(FollowerIncarnation::Unconfirmed);
    };
    if broker_epoch == registered {
        Ok(FollowerIncarnation::Registered)
    } else if broker_epoch < 0 || broker_epoch > registered {
        Ok(FollowerIncarnation::Unconfirmed)
    } else {
        Err(ApiError::new(
            ErrorCode::StaleBrokerEpoch,
            format!(
                "broker {follower} fetched with broker epoch {broker_epoch}, but its current \
                 registration has epoch {registered}: the fetch comes from an older run of \
                 the broker and counts for nothing; that run must register again and fetch \
                 with its new epoch"
            ),
        ))
    }
}

/// The fetcher tasks, by leader.
pub struct Replication {
    fetchers: Mutex<HashMap<BrokerId, tokio::task::JoinHandle<()>>>,
    /// Bumped on every metadata application: fetchers check whether the partitions they
    /// follow on their leader changed, and if so cut their long poll short.
    roles_changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            fetchers: Mutex::default(),
            roles_changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Replication {
    /// Starts a fetcher for every leader that a hosted follower replica follows and that
    /// has none running, and tells the running ones that roles may have changed.
    pub fn start_fetchers(&self, broker: &Arc<Broker>) {
        self.roles_changed.send_modify(|n| *n += 1);
        let mut fetchers = self.fetchers.lock().expect("fetchers lock");
        fetchers.retain(|_, task| !task.is_finished());
        for partition in broker.topics.all_partitions() {
            let Role::Follower { leader } = partition.role() else {
                continue;
            };
            if leader.0 < 0 || leader == broker.config.node_id || fetchers.contains_key(&leader) {
                continue;
            }
            tracing::debug!(%leader, "starting a replica fetcher");
            let roles_changed = self.roles_changed.subscribe();
            let fetcher = fetch_from(Arc::clone(broker), leader, roles_changed);
            fetchers.insert(leader, tokio::spawn(fetcher));
        }
    }
}

impl Replication {
    /// Waits for every fetcher to end (they stop once shutdown begins), so none holds a
    /// partition, or writes to its log, while the logs close.
    pub async fn stop_fetchers(&self) {
        let fetchers: Vec<_> = self
            .fetchers
            .lock()
            .expect("fetchers lock")
            .drain()
            .map(|(_, task)| task)
            .collect();
        for task in fetchers {
            let _ = task.await;
        }
    }
}

/// The partitions this broker follows on `leader`.
fn followed_on(broker: &Broker, leader: BrokerId) -> Vec<Arc<Partition>> {
    broker
        .topics
        .all_partitions()
        .into_iter()
        .filter(|p| p.role() == Role::Follower { leader } && !p.is_deleted())
        .collect()
}

/// The fetcher of one leader.
async fn fetch_from(
    broker: Arc<Broker>,
    leader: BrokerId,
    mut roles_changed: tokio::sync::watch::Receiver<u64>,
) {
    let mut connection: Option<(String, PeerConnection)> = None;
    let mut stopping = broker.stopping();
    // The broker epoch of the last fetch the leader refused as stale, said once at INFO.
    let mut refused_epoch: Option<i64> = None;
    loop {
        if broker.is_stopping() {
            return;
        }
        roles_changed.borrow_and_update();
        let partitions = followed_on(&broker, leader);
        if partitions.is_empty() {
            return;
        }
        let Some(peer) = connect(&broker, leader, &mut connection) else {
            tokio::time::sleep(FETCH_BACKOFF).await;
            continue;
        };
        let broker_epoch = broker.cluster.broker_epoch();
        let (sent, request) = fetch_request(&broker, broker_epoch, partitions.clone());
        let timeout =
            Duration::from_millis(REPLICA_FETCH_WAIT_MS as u64) + broker.config.session_timeout();
        // A partition this broker starts following on the leader (a new topic, a
        // leadership move) would otherwise wait out the long poll of a fetch that does not
        // name it: up to REPLICA_FETCH_WAIT_MS of acks=all latency on its first records.
        // The fetch is abandoned instead (its connection closes) and a new one names it.
        let call = peer.call(request, timeout);
        tokio::pin!(call);
        let answer = loop {
            tokio::select! {
                answer = &mut call => break Some(answer),
                _ = stopping.wait_for(|s| *s) => return,
                changed = roles_changed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = followed_on(&broker, leader);
                    let same = now.len() == sent.len()
                        && now.iter().all(|p| sent.iter().any(|(q, _)| Arc::ptr_eq(p, q)));
                    if !same {
                        break None;
                    }
                }
            }
        };
        let Some(answer) = answer else {
            continue;
        };
        let pause = match answer {
            Ok(Response::ReplicaFetch(answer)) => {
                let mut backoff = Backoff(apply_answer(leader, sent, answer).await);
                // The fsyncs of what the answer brought: the next fetch reports it durable.
                let durable = async move {
                    for partition in partitions {
                        let Some(wait) = partition.pending_durability() else {
                            continue;
                        };
                        if let Err(e) = wait.await {
                            let name = partition.name();
                            tracing::warn!(partition = %name, "replicating failed: {}", e.message);
                            backoff.back_off(Some(FETCH_BACKOFF));
                        }
                    }
                    backoff.0
                };
                tokio::select! {
                    pause = durable => pause,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
            Ok(other) => {
                tracing::warn!(%leader, "unexpected replica fetch answer {:?}", other.api_key());
                Some(FETCH_BACKOFF)
            }
            Err(PeerError::Api {
                code: ErrorCode::StaleBrokerEpoch,
                message,
            }) => {
                // This run re-registered after the fetch left (the next one carries the
                // new epoch), or the controller replaced it and its lifecycle is
                // registering again: either way a later fetch carries the current epoch.
                if refused_epoch != Some(broker_epoch) {
                    refused_epoch = Some(broker_epoch);
                    tracing::info!(%leader, broker_epoch, "the leader refused a replica fetch as stale; retrying with this broker's current epoch: {message}");
                } else {
                    tracing::debug!(%leader, broker_epoch, "replica fetch refused as stale again: {message}");
                }
                Some(FETCH_BACKOFF)
            }
            Err(e) => {
                tracing::debug!(%leader, "replica fetch failed: {e}");
                Some(FETCH_BACKOFF)
            }
        };
        if let Some(pause) = pause {
            // Roles changing (this replica's metadata caught up) end the pause early.
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = roles_changed.changed() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }
}

/// The connection to `leader`'s advertised native address, (re)made when the address
/// changed; `None` while the metadata has no address for it.
fn connect<'a>(
    broker: &Broker,
    leader: BrokerId,
    connection: &'a mut Option<(String, PeerConnection)>,
) -> Option<&'a mut PeerConnection> {
    let address = broker
        .cluster
        .image()
        .broker_address(leader, NATIVE_LISTENER)
        .map(ListenerMeta::address)?;
    if connection.as_ref().is_none_or(|(a, _)| *a != address) {
        let config = crate::cluster::peer_config(&broker.config);
        *connection = Some((
            address.clone(),
            PeerConnection::new(leader, &address, config),
        ));
    }
    connection.as_mut().map(|(_, peer)| peer)
}

/// A partition fetched, with what was asked for it.
type Sent = Vec<(Arc<Partition>, ReplicaFetchPartition)>;

/// The ReplicaFetch of `partitions`, each from its log end (all of it durable), from this
/// broker's run registered with `broker_epoch`.
fn fetch_request(
    broker: &Broker,
    broker_epoch: i64,
    partitions: Vec<Arc<Partition>>,
) -> (Sent, Request) {
    let sent: Sent = partitions
        .into_iter()
        .map(|p| {
            let state = p.follower_fetch_state();
            let request = ReplicaFetchPartition {
                topic: p.topic().to_string(),
                partition: p.index(),
                current_leader_epoch: state.leader_epoch,
                fetch_offset: state.fetch_offset,
                last_fetched_epoch: state.last_fetched_epoch,
                log_start_offset: state.log_start_offset,
                partition_max_bytes: REPLICA_FETCH_PARTITION_BYTES,
            };
            (p, request)
        })
        .collect();
    let request = Request::ReplicaFetch(ReplicaFetchRequest {
        replica_id: broker.config.node_id,
        broker_epoch,
        max_wait_ms: REPLICA_FETCH_WAIT_MS,
        min_bytes: 1,
        max_bytes: broker.config.max_frame_bytes.saturating_sub(64 * 1024) as i32,
        partitions: sent.iter().map(|(_, r)| r.clone()).collect(),
    });
    (sent, request)
}

/// One partition's part of a leader's answer, with what was asked.
type Answered = (
    Arc<Partition>,
    ReplicaFetchPartition,
    ReplicaFetchPartitionResponse,
);

/// How long to pause before the next fetch, if at all: the longest any partition's answer
/// asked for.
#[derive(Default)]
struct Backoff(Option<Duration>);

impl Backoff {
    fn back_off(&mut self, pause: Option<Duration>) {
        self.0 = self.0.max(pause);
    }
}

/// Applies the leader's answer: small appends on this task when their logs are free
/// (a thread hand-off costs more than the page-cache copy), the rest on a blocking thread.
/// Returns how long to pause before the next fetch, if at all.
async fn apply_answer(
    leader: BrokerId,
    sent: Sent,
    answer: ReplicaFetchResponse,
) -> Option<Duration> {
    let answered: Vec<Answered> = sent
        .into_iter()
        .zip(answer.partitions)
        .map(|((partition, request), response)| (partition, request, response))
        .collect();
    let mut backoff = Backoff::default();
    let rest = apply_parts(leader, answered, false, &mut backoff);
    if !rest.is_empty() {
        let blocking = tokio::task::spawn_blocking(move || {
            let mut backoff = Backoff::default();
            apply_parts(leader, rest, true, &mut backoff);
            backoff.0
        });
        backoff.back_off(blocking.await.unwrap_or(Some(FETCH_BACKOFF)));
    }
    backoff.0
}

/// Applies each partition's answer (Kafka's `processPartitionData`): append, truncate to a
/// diverging epoch, restart at the leader's log start, or note a refusal. With `block`
/// false it only appends, and only what is quick, and returns the parts it left for a
/// blocking thread; with `block` true it applies all and returns none.
fn apply_parts(
    leader: BrokerId,
    answered: Vec<Answered>,
    block: bool,
    backoff: &mut Backoff,
) -> Vec<Answered> {
    let mut rest = Vec::new();
    // What the worker may append of this answer, all partitions together.
    let mut inline_left = INLINE_APPEND_BYTES_MAX;
    for (partition, request, response) in answered {
        if response.topic != request.topic || response.partition != request.partition {
            backoff.back_off(Some(FETCH_BACKOFF));
            continue;
        }
        if partition.role() != (Role::Follower { leader })
            || partition.leader_epoch() != request.current_leader_epoch
        {
            continue; // The role changed while the fetch was out.
        }
        // The leader's log start moved (DeleteRecords or retention there): this replica
        // follows, which writes a checkpoint, so on a blocking thread.
        let follows_start = response.error_code == ErrorCode::None
            && response.log_start_offset > request.log_start_offset;
        let plain_append = response.error_code == ErrorCode::None
            && response.diverging_epoch.is_none()
            && !follows_start;
        if !block && !plain_append {
            rest.push((partition, request, response));
            continue;
        }
        let outcome = match response.error_code {
            ErrorCode::None => match response.diverging_epoch {
                Some(diverging) => partition
                    .truncate_diverging(diverging.epoch, diverging.end_offset)
                    .map(|_| ()),
                // A decoded answer holds its records in memory: this clones a `Bytes`.
                None => match response.records.to_bytes().map_err(|e| {
                    ApiError::new(
                        ErrorCode::CorruptMessage,
                        format!("records unreadable: {e}"),
                    )
                }) {
                    Err(e) => Err(e),
                    Ok(records) if block => partition
                        .append_from_leader(records, response.high_watermark)
                        .and_then(|()| match follows_start {
                            true => partition.follow_leader_log_start(response.log_start_offset),
                            false => Ok(()),
                        }),
                    Ok(records) => {
                        let appended = if records.len() > inline_left {
                            Ok(false)
                        } else {
                            partition.try_append_from_leader(&records, response.high_watermark)
                        };
                        match appended {
                            Ok(true) => {
                                inline_left -= records.len();
                                Ok(())
                            }
                            Ok(false) => {
                                rest.push((partition, request, response));
                                continue;
                            }
                            Err(e) => Err(e),
                        }
                    }
                },
            },
            ErrorCode::OffsetOutOfRange if request.fetch_offset < response.log_start_offset => {
                partition.restart_at(response.log_start_offset)
            }
            code => {
                tracing::debug!(
                    partition = %partition.name(),
                    "the leader refused the fetch: {code:?} {}",
                    response.error_message.unwrap_or_default()
                );
                backoff.back_off(Some(match code {
                    ErrorCode::UnknownLeaderEpoch | ErrorCode::NotLeaderOrFollower => {
                        NOT_READY_BACKOFF
                    }
                    _ => FETCH_BACKOFF,
                }));
                Ok(())
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(partition = %partition.name(), "replicating failed: {}", e.message);
            backoff.back_off(Some(FETCH_BACKOFF));
        }
    }
    rest
}

/// Sends an ISR proposal of `partition` to the controller and records the answer.
pub async fn propose_isr(broker: Arc<Broker>, partition: Arc<Partition>, proposal: IsrProposal) {
    let isr_before = partition.isr().len();
    let request = Request::AlterPartition(AlterPartitionRequest {
        broker_id: broker.config.node_id,
        broker_epoch: broker.cluster.broker_epoch(),
        topics: vec![AlterPartitionTopic {
            topic: partition.topic().to_string(),
            partitions: vec![AlterPartitionPartition {
                partition: partition.index(),
                leader_epoch: proposal.leader_epoch,
                new_isr: proposal.new_isr.clone(),
                partition_epoch: proposal.partition_epoch,
            }],
        }],
    });
    let answer = broker
        .cluster
        .client
        .call(request, broker.config.session_timeout())
        .await;
    let committed = match answer {
        Ok(Response::AlterPartition(r)) => r
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition == partition.index())
            .and_then(|p| {
                if p.error_code == ErrorCode::None {
                    Some((p.leader_epoch, p.partition_epoch, p.isr))
                } else {
                    tracing::info!(
                        partition = %partition.name(),
                        "ISR change to {} refused: {}",
                        crate::partition::ids(&proposal.new_isr),
                        p.error_message.unwrap_or_default()
                    );
                    None
                }
            }),
        Ok(_) => None,
        Err(e) => {
            tracing::info!(partition = %partition.name(), "ISR change not sent: {}", e.message);
            None
        }
    };
    if let Some((_, _, isr)) = &committed {
        broker.metrics.isr_changed(isr_before, isr.len());
    }
    partition.isr_proposal_done(committed);
}

/// Leaders drop followers that lag more than `replica_lag_time_max_ms` from their ISRs;
/// runs until shutdown.
pub async fn maintain_isr(broker: Arc<Broker>) {
    let lag = broker.config.replica_lag_time_max();
    let period = (lag / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = broker.stopping();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        for partition in broker.topics.all_partitions() {
            if let Some(proposal) = partition.isr_shrink(lag) {
                tokio::spawn(propose_isr(Arc::clone(&broker), partition, proposal));
            }
        }
    }
}
