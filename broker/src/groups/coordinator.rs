//! The consumer-group service both listeners call: FindCoordinator (creating
//! `__consumer_offsets` on first use), membership (join, sync, heartbeat, leave), offsets
//! (commit, fetch, reset) and administration (describe, list, delete). Every rule lives
//! here: session-timeout bounds, which commits are fenced, which errors send a client to
//! find the coordinator again, what is written to `__consumer_offsets` and when. The
//! listeners only translate their wire types to and from the types below.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::group_log::{
    coordinator_partition, encode_value, GroupLogKey, OffsetKey, OffsetValue, OFFSETS_TOPIC,
};
use sluice_protocol::messages::TopicPartitions;
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId};
use sluice_storage::{Clock, SystemClock};

use super::group::{
    Group, GroupState, JoinOutcome, JoinRequest, Joined, MemberAssignment, MemberDescription,
    SyncOutcome,
};
use super::{complete_rebalance, write_generation, GroupCoordinator, GroupRef, Shard};
use crate::config::BrokerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::producer_state::VerificationGuard;
use crate::security::acl::{Operation, Resource};
use crate::security::Principal;
use crate::services::admin::Admin;
use crate::services::produce::TxnVerifier;
use crate::services::{PartitionOutcome, TopicItems};

/// Longest committed-offset metadata accepted (Kafka's `offset.metadata.max.bytes`).
const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// Where a group's coordinator is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorAddress {
    /// The coordinating broker.
    pub node_id: BrokerId,
    /// Its host on the asking listener.
    pub host: String,
    /// Its port on the asking listener.
    pub port: u16,
}

/// Where the coordinator of `key` is: the leader of partition `hash(key) % n` of the
/// internal topic `topic` (which `image` has), as clients of `listener` reach it. The
/// group coordinator's rule, and the transaction coordinator's on `__transaction_state`.
pub(crate) fn coordinator_address(
    image: &crate::cluster::image::MetadataImage,
    topic: &str,
    key: &str,
    listener: &str,
) -> Result<CoordinatorAddress, ApiError> {
    let meta = &image.topics[topic];
    let index = coordinator_partition(key, meta.partitions.len() as u32);
    let leader = meta.partition(index).map_or(BrokerId(-1), |p| p.leader);
    let address = image.broker_address(leader, listener).ok_or_else(|| {
        ApiError::new(
            ErrorCode::CoordinatorNotAvailable,
            format!("{topic}-{} has no leader right now; retry shortly", index.0),
        )
    })?;
    Ok(CoordinatorAddress {
        node_id: leader,
        host: address.host.clone(),
        port: address.port,
    })
}

/// A refused join: the error, and the member id the client should join with next (the
/// new id with MEMBER_ID_REQUIRED, else the one it sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRefused {
    /// Why.
    pub error: ApiError,
    /// The member id to answer with.
    pub member_id: String,
}

/// A successful SyncGroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    /// The group's protocol type.
    pub protocol_type: String,
    /// The generation's protocol.
    pub protocol_name: String,
    /// The member's share.
    pub assignment: MemberAssignment,
}

/// What a SyncGroup carries, in service terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncRequest {
    /// The group.
    pub group_id: String,
    /// The member.
    pub member_id: String,
    /// Its generation.
    pub generation: i32,
    /// From the leader of a client-side assignment: every member's share.
    pub assignments: Vec<(String, Bytes)>,
}

/// An offset to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetToCommit {
    /// The partition.
    pub partition: PartitionId,
    /// The next offset the group will consume there.
    pub offset: Offset,
    /// The leader epoch of the last record consumed, or -1.
    pub leader_epoch: LeaderEpoch,
    /// The committer's free-form metadata.
    pub metadata: Option<String>,
}

/// An OffsetCommit, in service terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRequest {
    /// The group.
    pub group_id: String,
    /// The committing member, empty outside group management.
    pub member_id: String,
    /// Its generation, -1 outside group management.
    pub generation: i32,
    /// The offsets.
    pub topics: Vec<TopicItems<OffsetToCommit>>,
}

/// A committed offset as OffsetFetch returns it (`None` where nothing is committed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The partition.
    pub partition: PartitionId,
    /// The commit, if any.
    pub committed: Option<OffsetValue>,
    /// A transaction that has not ended wrote an offset of the partition (Kafka's
    /// OffsetFetch answers UNSTABLE_OFFSET_COMMIT when asked for stable offsets only).
    pub unstable: bool,
}

/// The producer a TxnOffsetCommit writes for: its offsets join its transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnProducer {
    /// Its transactional id (the principal needs Write on it).
    pub transactional_id: String,
    /// Its producer id.
    pub producer_id: i64,
    /// Its epoch (an older one than the partition has seen is fenced).
    pub producer_epoch: i16,
}

/// A group as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    /// Kafka's name of its state (`Stable`, `Empty`, `Dead`...).
    pub state: String,
    /// Its protocol type.
    pub protocol_type: String,
    /// Its generation's protocol.
    pub protocol_name: String,
    /// Its generation.
    pub generation: i32,
    /// Its members.
    pub members: Vec<MemberDescription>,
}

/// A group as ListGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupListing {
    /// The group.
    pub group_id: String,
    /// Its protocol type.
    pub protocol_type: String,
    /// Kafka's name of its state.
    pub state: String,
    /// How many members it has.
    pub members: usize,
}

/// The group coordinator service.
pub struct Coordinator {
    node_id: BrokerId,
    session_timeout_ms: std::ops::RangeInclusive<u64>,
    offsets_topic_partitions: u32,
    offsets_topic_segment_bytes: u32,
    n_voters: usize,
    admin: Admin,
    shards: Arc<GroupCoordinator>,
    /// Where refusals are counted, by api and error code.
    metrics: Arc<Metrics>,
    /// Asks a transaction coordinator whether a TxnOffsetCommit's partition is in the
    /// producer's transaction (KIP-890).
    verifier: Arc<dyn TxnVerifier>,
}

impl Coordinator {
    /// Coordinates the groups of the `__consumer_offsets` partitions in `shards`, creating
    /// the topic through `admin` when it is first needed.
    pub fn new(
        config: &BrokerConfig,
        admin: Admin,
        shards: Arc<GroupCoordinator>,
        metrics: Arc<Metrics>,
        verifier: Arc<dyn TxnVerifier>,
    ) -> Coordinator {
        Coordinator {
            metrics,
            verifier,
            node_id: config.node_id,
            session_timeout_ms: config.group_min_session_timeout_ms
                ..=config.group_max_session_timeout_ms,
            offsets_topic_partitions: config.offsets_topic_partitions,
            offsets_topic_segment_bytes: config.offsets_topic_segment_bytes,
            n_voters: config.voters.len(),
            admin,
            shards,
        }
    }

    /// Where the coordinator of `group` is, as clients of `listener` reach it. Creates
    /// `__consumer_offsets` on first use, with min(3, brokers) replicas, where the brokers
    /// counted are the registered ones or the voters, whichever are more: a three-voter
    /// cluster gets three replicas even when asked before every broker registered (the
    /// creation then fails until they have, and the client retries on
    /// COORDINATOR_NOT_AVAILABLE).
    pub async fn find_coordinator(
        &self,
        principal: &Principal,
        group: &str,
        listener: &str,
    ) -> Result<CoordinatorAddress, ApiError> {
        check_group_id(group)?;
        self.may(principal, Operation::Describe, group)?;
        let image = self.offsets_topic().await?;
        coordinator_address(&image, OFFSETS_TOPIC, group, listener)
    }

    /// The image, once it has `__consumer_offsets` (created here if it is missing).
    async fn offsets_topic(&self) -> Result<Arc<crate::cluster::image::MetadataImage>, ApiError> {
        self.admin
            .internal_topic(
                OFFSETS_TOPIC,
                self.offsets_topic_partitions,
                self.offsets_topic_segment_bytes,
                self.n_voters,
            )
            .await
    }

    /// The loaded shard coordinating `group` here, and the group if it exists (created if
    /// `create`).
    fn locate(
        &self,
        group: &str,
        create: bool,
    ) -> Result<(Arc<Shard>, Option<GroupRef>), ApiError> {
        check_group_id(group)?;
        let shard = self.shards.shard_for(&self.admin.image(), group)?;
        let found = shard.group(group, create);
        Ok((shard, found))
    }

    /// A group that must exist for `member_id` to be in it.
    fn existing(&self, group: &str, member_id: &str) -> Result<GroupRef, ApiError> {
        let (_, found) = self.locate(group, false)?;
        found.ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownMemberId,
                format!(
                    "group {group:?} has no member {member_id:?}; join again without a member id"
                ),
            )
        })
    }

    /// JoinGroup: answered when the join phase completes (or at once when refused).
    pub async fn join(
        &self,
        principal: &Principal,
        group_id: &str,
        request: JoinRequest,
    ) -> Result<Joined, JoinRefused> {
        let joined = match self.may(principal, Operation::Read, group_id) {
            Ok(()) => self.join_now(group_id, request).await,
            Err(error) => Err(JoinRefused {
                error,
                member_id: request.member_id.clone(),
            }),
        };
        if let Err(refused) = &joined {
            self.metrics.error("join_group", refused.error.code);
        }
        joined
    }

    async fn join_now(&self, group_id: &str, request: JoinRequest) -> Result<Joined, JoinRefused> {
        let member_id = request.member_id.clone();
        let refused = |error: ApiError| JoinRefused {
            error,
            member_id: member_id.clone(),
        };
        let session_ms = u64::try_from(request.session_timeout.as_millis()).unwrap_or(u64::MAX);
        if !self.session_timeout_ms.contains(&session_ms) {
            return Err(refused(ApiError::new(
                ErrorCode::InvalidSessionTimeout,
                format!(
                    "session timeout {session_ms} ms is outside the broker's range {}..={} ms \
                     (group_min_session_timeout_ms, group_max_session_timeout_ms)",
                    self.session_timeout_ms.start(),
                    self.session_timeout_ms.end()
                ),
            )));
        }
        let (shard, group) = match self.locate(group_id, true) {
            Ok((shard, Some(group))) => (shard, group),
            Ok((_, None)) => unreachable!("locate creates the group"),
            Err(e) => return Err(refused(e)),
        };
        let mut request = request;
        // The rebalance waits at least a session for a member.
        request.rebalance_timeout = request.rebalance_timeout.max(request.session_timeout);
        let (outcome, done) = {
            let mut g = group.lock().await;
            let outcome = g.join(request, Instant::now(), self.shards.timings());
            (outcome, g.join_phase_done(Instant::now()))
        };
        if done {
            tokio::spawn(complete_rebalance(
                shard,
                Arc::clone(&group),
                self.admin.image(),
            ));
        }
        let joined = match outcome {
            JoinOutcome::Now(result) => result,
            JoinOutcome::MemberIdRequired(id) => {
                return Err(JoinRefused {
                    error: ApiError::new(
                        ErrorCode::MemberIdRequired,
                        "join again with the member id in this response",
                    ),
                    member_id: id,
                })
            }
            JoinOutcome::Later(rx) => rx.await.unwrap_or_else(|_| {
                Err(ApiError::new(
                    ErrorCode::RebalanceInProgress,
                    "a newer join of this member replaced this one; join again",
                ))
            }),
        };
        joined.map_err(refused)
    }

    /// SyncGroup: the member's share of the generation (held, for client-side assignment,
    /// until the leader's assignment is written).
    pub async fn sync(
        &self,
        principal: &Principal,
        request: SyncRequest,
    ) -> Result<Synced, ApiError> {
        let synced = match self.may(principal, Operation::Read, &request.group_id) {
            Ok(()) => self.sync_now(request).await,
            Err(e) => Err(e),
        };
        self.count("sync_group", &synced);
        synced
    }

    async fn sync_now(&self, request: SyncRequest) -> Result<Synced, ApiError> {
        let (shard, _) = self.locate(&request.group_id, false)?;
        let group = self.existing(&request.group_id, &request.member_id)?;
        let mut g = group.lock().await;
        let outcome = g.sync(
            &request.member_id,
            request.generation,
            request.assignments,
            Instant::now(),
        );
        let protocol_type = g.protocol_type().to_owned();
        let protocol_name = g.protocol_name().to_owned();
        let assignment = match outcome {
            SyncOutcome::Now(result) => {
                drop(g);
                result
            }
            SyncOutcome::Later(rx) => {
                drop(g);
                rx.await
                    .unwrap_or_else(|_| Err(rebalancing(&request.group_id)))
            }
            SyncOutcome::Write { value, answer } => {
                write_generation(&shard, &group, g, value).await;
                answer
                    .await
                    .unwrap_or_else(|_| Err(rebalancing(&request.group_id)))
            }
        }?;
        Ok(Synced {
            protocol_type,
            protocol_name,
            assignment,
        })
    }

    /// Heartbeat.
    pub async fn heartbeat(
        &self,
        principal: &Principal,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<(), ApiError> {
        let beat = async {
            self.may(principal, Operation::Read, group_id)?;
            let group = self.existing(group_id, member_id)?;
            let mut g = group.lock().await;
            g.heartbeat(member_id, generation, Instant::now())
        }
        .await;
        self.count("heartbeat", &beat);
        beat
    }

    /// Whether `principal` may do `operation` on group `group` (ACLs).
    fn may(
        &self,
        principal: &Principal,
        operation: Operation,
        group: &str,
    ) -> Result<(), ApiError> {
        self.admin
            .authorizer()
            .check(principal, operation, Resource::Group(group))
    }

    /// Whether `principal` may do `operation` on topic `topic` (ACLs).
    fn may_topic(
        &self,
        principal: &Principal,
        operation: Operation,
        topic: &str,
    ) -> Result<(), ApiError> {
        self.admin
            .authorizer()
            .check(principal, operation, Resource::Topic(topic))
    }

    /// Counts a refusal of `api`.
    fn count<T>(&self, api: &'static str, outcome: &Result<T, ApiError>) {
        if let Err(e) = outcome {
            self.metrics.error(api, e.code);
        }
    }

    /// LeaveGroup: each member leaves on its own; the group rebalances without them.
    pub async fn leave(
        &self,
        principal: &Principal,
        group_id: &str,
        members: Vec<String>,
    ) -> Result<Vec<(String, Result<(), ApiError>)>, ApiError> {
        self.may(principal, Operation::Read, group_id)?;
        let (shard, group) = self.locate(group_id, false)?;
        let mut results = Vec::with_capacity(members.len());
        for member in members {
            let left = match &group {
                Some(group) => group.lock().await.leave(&member, Instant::now()),
                None => Err(ApiError::new(
                    ErrorCode::UnknownMemberId,
                    format!("group {group_id:?} has no members"),
                )),
            };
            results.push((member, left));
        }
        // The last member gone (or every other member already rejoined): the next
        // generation completes before the answer, as in Kafka, so the group is Empty (or
        // in its next generation) by the time the leaving client hears back.
        if let Some(group) = group {
            if group.lock().await.join_phase_done(Instant::now()) {
                complete_rebalance(shard, group, self.admin.image()).await;
            }
        }
        Ok(results)
    }

    /// OffsetCommit: fenced by generation and member id; each partition answered on its
    /// own (an unknown topic or oversized metadata fails only its partition).
    pub async fn commit(
        &self,
        principal: &Principal,
        request: CommitRequest,
    ) -> Vec<TopicItems<PartitionOutcome<()>>> {
        let (checks, writes) = self.check_offsets(principal, &request.group_id, request.topics);
        let simple = request.generation < 0 && request.member_id.is_empty();
        let written = async {
            let (shard, group) = self.locate(&request.group_id, simple)?;
            let group = group.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownMemberId,
                    format!(
                        "group {:?} has no member {:?}; join again without a member id",
                        request.group_id, request.member_id
                    ),
                )
            })?;
            let generation = request.generation;
            write_offsets(&shard, &group, writes, |g| {
                g.check_commit(&request.member_id, generation, Instant::now())
            })
            .await
        }
        .await;
        let answered = per_partition(checks, written);
        for outcome in answered.iter().flat_map(|t| &t.partitions) {
            self.count("offset_commit", &outcome.outcome);
        }
        answered
    }

    /// TxnOffsetCommit: offsets written in producer `producer`'s transaction (which
    /// AddOffsetsToTxn opened on this group's partition), applied only if it commits. A
    /// member id or generation, if given, must be the group's current ones (KIP-447); the
    /// group is made if it does not exist. The first offsets of a transaction in the
    /// partition are written only once the transaction coordinator confirms the partition
    /// is in it (KIP-890): a TxnOffsetCommit without AddOffsetsToTxn, or one delayed past
    /// its transaction's end, would open a transaction no marker ever closes, leaving the
    /// group's offsets unstable for ever.
    pub async fn txn_commit(
        &self,
        principal: &Principal,
        producer: TxnProducer,
        request: CommitRequest,
    ) -> Vec<TopicItems<PartitionOutcome<()>>> {
        let (checks, writes) = self.check_offsets(principal, &request.group_id, request.topics);
        let written = async {
            self.admin.authorizer().check(
                principal,
                Operation::Write,
                Resource::TransactionalId(&producer.transactional_id),
            )?;
            let (shard, group) = self.locate(&request.group_id, true)?;
            let group = group.expect("made when missing");
            let guard = if writes.is_empty() {
                None
            } else {
                self.verify_txn_offsets(&shard, &producer).await?
            };
            let pending = {
                let mut g = group.lock().await;
                let checked = g
                    .check_txn_commit(&request.member_id, request.generation)
                    .and_then(|()| offset_records(g.id(), &writes));
                let records = match checked {
                    Ok(records) if !writes.is_empty() => records,
                    other => {
                        if let Some(guard) = guard {
                            shard.cancel_verification(guard);
                        }
                        return other.map(|_| ());
                    }
                };
                let pending = shard
                    .write_txn(
                        producer.producer_id,
                        producer.producer_epoch,
                        records,
                        guard,
                    )
                    .await
                    .map_err(txn_offset_error)?;
                // Staged before the lock is released: the transaction's marker may follow
                // right after the append, and must find them.
                let base = pending.info.base_offset;
                for (i, w) in writes.into_iter().enumerate() {
                    g.stage_txn_offset(
                        producer.producer_id,
                        w.topic,
                        w.partition,
                        w.value,
                        Offset(base.0 + i as i64),
                    );
                }
                shard.staged(producer.producer_id, g.id());
                pending
            };
            shard.replicated(pending).await.map(|_| ())
        }
        .await;
        let answered = per_partition(checks, written);
        for outcome in answered.iter().flat_map(|t| &t.partitions) {
            self.count("txn_offset_commit", &outcome.outcome);
        }
        answered
    }

    /// When offsets written now would begin `producer`'s transaction in `shard`'s
    /// partition: asks the transaction coordinator whether the partition is in the
    /// transaction, and returns the guard to write them under. The coordinator's refusal
    /// (INVALID_TXN_STATE: no AddOffsetsToTxn for this group in the ongoing transaction)
    /// is the commit's; being unable to ask is retriable.
    async fn verify_txn_offsets(
        &self,
        shard: &Shard,
        producer: &TxnProducer,
    ) -> Result<Option<VerificationGuard>, ApiError> {
        let Some(guard) =
            shard.start_verification(producer.producer_id, producer.producer_epoch)?
        else {
            return Ok(None);
        };
        let partitions = vec![TopicPartitions {
            topic: OFFSETS_TOPIC.to_owned(),
            partitions: vec![shard.partition_id()],
        }];
        let answer = self
            .verifier
            .verify(
                &producer.transactional_id,
                producer.producer_id,
                producer.producer_epoch,
                partitions,
            )
            .await
            .and_then(|topics| {
                let outcome = topics.into_iter().flat_map(|t| t.partitions).next();
                outcome.map_or_else(
                    || {
                        Err(ApiError::new(
                            ErrorCode::NotEnoughReplicas,
                            "the transaction coordinator gave no answer for the group's \
                             partition; retry",
                        ))
                    },
                    |p| p.outcome,
                )
            });
        match answer {
            Ok(()) => Ok(Some(guard)),
            Err(e) => {
                shard.cancel_verification(guard);
                Err(txn_offset_error(e))
            }
        }
    }

    /// The per-partition checks of a commit (ACLs, the partition exists, the metadata's
    /// size), and the offsets to write for the partitions that pass.
    fn check_offsets(
        &self,
        principal: &Principal,
        group_id: &str,
        topics: Vec<TopicItems<OffsetToCommit>>,
    ) -> (Vec<TopicChecks>, Vec<OffsetWrite>) {
        let image = self.admin.image();
        let now_ms = SystemClock.now_ms();
        let mut checks = Vec::new();
        let mut writes = Vec::new();
        let group_allowed = self.may(principal, Operation::Read, group_id);
        for topic in topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            let allowed = group_allowed
                .clone()
                .and_then(|()| self.may_topic(principal, Operation::Read, &topic.topic));
            for p in topic.partitions {
                let checked = allowed.clone().and_then(|()| {
                    check_offset(&image, &topic.topic, p.partition, p.metadata.as_deref())
                });
                if checked.is_ok() {
                    writes.push(OffsetWrite {
                        topic: topic.topic.clone(),
                        partition: p.partition,
                        value: OffsetValue {
                            offset: p.offset,
                            leader_epoch: p.leader_epoch,
                            metadata: p.metadata,
                            commit_timestamp: now_ms,
                        },
                    });
                }
                partitions.push((p.partition, checked));
            }
            checks.push((topic.topic, partitions));
        }
        (checks, writes)
    }

    /// OffsetFetch: the committed offsets of the partitions asked (`None` where nothing is
    /// committed), or of every partition with a commit when `topics` is `None`.
    pub async fn committed(
        &self,
        principal: &Principal,
        group_id: &str,
        topics: Option<Vec<TopicItems<PartitionId>>>,
    ) -> Result<Vec<TopicItems<CommittedOffset>>, ApiError> {
        self.may(principal, Operation::Describe, group_id)?;
        // Topics the principal may not describe are left out of the answer.
        let may_see = |topic: &str| {
            self.admin
                .authorizer()
                .allows(principal, Operation::Describe, Resource::Topic(topic))
        };
        let (_, group) = self.locate(group_id, false)?;
        let g = match &group {
            Some(group) => Some(group.lock().await),
            None => None,
        };
        let lookup = |topic: &str, p: PartitionId| {
            g.as_ref()
                .and_then(|g| g.committed(topic, p))
                .map(|c| c.value.clone())
        };
        let unstable = |topic: &str, p: PartitionId| {
            g.as_ref()
                .is_some_and(|g| g.has_pending_txn_offset(topic, p))
        };
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .filter(|t| may_see(&t.topic))
                .map(|t| TopicItems {
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| CommittedOffset {
                            partition: *p,
                            committed: lookup(&t.topic, *p),
                            unstable: unstable(&t.topic, *p),
                        })
                        .collect(),
                    topic: t.topic,
                })
                .collect(),
            None => {
                let mut all: Vec<TopicItems<CommittedOffset>> = Vec::new();
                let committed = g.as_ref().map(|g| g.all_committed().clone());
                for ((topic, partition), c) in committed.unwrap_or_default() {
                    if !may_see(&topic) {
                        continue;
                    }
                    let entry = CommittedOffset {
                        unstable: unstable(&topic, partition),
                        partition,
                        committed: Some(c.value),
                    };
                    match all.last_mut() {
                        Some(last) if last.topic == topic => last.partitions.push(entry),
                        _ => all.push(TopicItems {
                            topic,
                            partitions: vec![entry],
                        }),
                    }
                }
                all
            }
        })
    }

    /// ResetOffsets: an administrator's explicit offsets, refused while the group has
    /// members. Returns the group-level refusal (when every partition was valid but the
    /// write was refused) and each partition's outcome.
    pub async fn reset_offsets(
        &self,
        principal: &Principal,
        group_id: &str,
        topics: Vec<TopicItems<(PartitionId, Offset)>>,
    ) -> (Result<(), ApiError>, Vec<TopicItems<PartitionOutcome<()>>>) {
        let image = self.admin.image();
        let now_ms = SystemClock.now_ms();
        let mut checks = Vec::new();
        let mut writes = Vec::new();
        let group_allowed = self.may(principal, Operation::Read, group_id);
        for topic in topics {
            let mut partitions = Vec::new();
            let allowed = group_allowed
                .clone()
                .and_then(|()| self.may_topic(principal, Operation::Read, &topic.topic));
            for (partition, offset) in topic.partitions {
                let mut checked = allowed
                    .clone()
                    .and_then(|()| check_offset(&image, &topic.topic, partition, None));
                if checked.is_ok() && offset.0 < 0 {
                    checked = Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("offset {offset} is negative"),
                    ));
                }
                if checked.is_ok() {
                    writes.push(OffsetWrite {
                        topic: topic.topic.clone(),
                        partition,
                        value: OffsetValue {
                            offset,
                            leader_epoch: LeaderEpoch(-1),
                            metadata: None,
                            commit_timestamp: now_ms,
                        },
                    });
                }
                partitions.push((partition, checked));
            }
            checks.push((topic.topic, partitions));
        }
        let written = async {
            let (shard, group) = self.locate(group_id, true)?;
            let group = group.expect("locate creates the group");
            write_offsets(&shard, &group, writes, |g| {
                no_members(g, "reset its offsets")
            })
            .await
        }
        .await;
        let all_valid = checks.iter().all(|(_, p)| p.iter().all(|(_, c)| c.is_ok()));
        let top = match &written {
            Err(e) if all_valid => Err(e.clone()),
            _ => Ok(()),
        };
        (top, per_partition(checks, written))
    }

    /// OffsetDelete (Kafka's `kafka-consumer-groups.sh --delete-offsets`): removes the
    /// group's committed offsets of the partitions named (tombstones), except for topics
    /// some member subscribes to (GROUP_SUBSCRIBED_TO_TOPIC). Delete on the group, Read on
    /// each topic. Returns the group-level refusal and each partition's outcome.
    pub async fn delete_offsets(
        &self,
        principal: &Principal,
        group_id: &str,
        topics: Vec<TopicItems<PartitionId>>,
    ) -> (Result<(), ApiError>, Vec<TopicItems<PartitionOutcome<()>>>) {
        let refuse_all = |e: ApiError, topics: Vec<TopicItems<PartitionId>>| {
            let checks = topics
                .into_iter()
                .map(|t| {
                    (
                        t.topic,
                        t.partitions.into_iter().map(|p| (p, Ok(()))).collect(),
                    )
                })
                .collect();
            (Err(e.clone()), per_partition(checks, Err(e)))
        };
        if let Err(e) = self.may(principal, Operation::Delete, group_id) {
            return refuse_all(e, topics);
        }
        let not_found = || {
            ApiError::new(
                ErrorCode::GroupIdNotFound,
                format!("group {group_id:?} does not exist"),
            )
        };
        let (shard, group) = match self.locate(group_id, false) {
            Ok((shard, Some(group))) => (shard, group),
            Ok((_, None)) => return refuse_all(not_found(), topics),
            Err(e) => return refuse_all(e, topics),
        };
        let g = group.lock().await;
        if g.state() == GroupState::Dead || g.is_forgettable() {
            drop(g);
            return refuse_all(not_found(), topics);
        }
        let subscribed = g.subscribed_topics();
        let mut checks = Vec::new();
        let mut doomed = Vec::new();
        for topic in topics {
            let allowed = self
                .may_topic(principal, Operation::Read, &topic.topic)
                .and_then(|()| match subscribed.contains(&topic.topic) {
                    true => Err(ApiError::new(
                        ErrorCode::GroupSubscribedToTopic,
                        format!(
                            "group {group_id:?} has members consuming {:?}; stop them or \
                             change their subscription, then delete its offsets",
                            topic.topic
                        ),
                    )),
                    false => Ok(()),
                });
            let mut partitions = Vec::new();
            for partition in topic.partitions {
                if allowed.is_ok() && g.committed(&topic.topic, partition).is_some() {
                    doomed.push((topic.topic.clone(), partition));
                }
                partitions.push((partition, allowed.clone()));
            }
            checks.push((topic.topic, partitions));
        }
        if doomed.is_empty() {
            return (Ok(()), per_partition(checks, Ok(())));
        }
        let records = doomed
            .iter()
            .map(|(topic, partition)| {
                let key = OffsetKey {
                    group: group_id.to_owned(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                (GroupLogKey::Offset(key), None)
            })
            .collect();
        let pending = match shard.write(records).await {
            Ok(pending) => pending,
            Err(e) => return (Ok(()), per_partition(checks, Err(e))),
        };
        drop(g);
        let written = match shard.replicated(pending).await {
            Ok(base) => {
                let mut g = group.lock().await;
                for (i, (topic, partition)) in doomed.into_iter().enumerate() {
                    g.apply_offset(topic, partition, None, Offset(base.0 + i as i64));
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        (Ok(()), per_partition(checks, written))
    }

    /// DescribeGroups: state, generation and members (with assignments). A group this
    /// coordinator does not know is described as `Dead` with no members, as Kafka does.
    pub async fn describe(
        &self,
        principal: &Principal,
        group_id: &str,
    ) -> Result<GroupDescription, ApiError> {
        self.may(principal, Operation::Describe, group_id)?;
        let (_, group) = self.locate(group_id, false)?;
        let Some(group) = group else {
            return Ok(GroupDescription {
                state: GroupState::Dead.name().to_owned(),
                protocol_type: String::new(),
                protocol_name: String::new(),
                generation: -1,
                members: Vec::new(),
            });
        };
        let g = group.lock().await;
        Ok(GroupDescription {
            state: g.state().name().to_owned(),
            protocol_type: g.protocol_type().to_owned(),
            protocol_name: g.protocol_name().to_owned(),
            generation: g.generation(),
            members: g.describe_members(),
        })
    }

    /// ListGroups: the groups this broker coordinates (a client asks every broker), those
    /// in one of `states` (Kafka's names, any case) when it is not empty.
    pub async fn list(&self, principal: &Principal, states: &[String]) -> Vec<GroupListing> {
        let authorizer = self.admin.authorizer();
        let mut groups = Vec::new();
        for shard in self.shards.loaded_shards() {
            for group in shard.groups() {
                let g = group.lock().await;
                let state = g.state().name();
                let wanted =
                    states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(state));
                let visible =
                    authorizer.allows(principal, Operation::Describe, Resource::Group(g.id()));
                if g.state() != GroupState::Dead && wanted && visible {
                    groups.push(GroupListing {
                        group_id: g.id().to_owned(),
                        protocol_type: g.protocol_type().to_owned(),
                        state: state.to_owned(),
                        members: g.member_count(),
                    });
                }
            }
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups
    }

    /// DeleteGroups, one group: a group with no members, with its committed offsets
    /// (tombstones).
    pub async fn delete(&self, principal: &Principal, id: &str) -> Result<(), ApiError> {
        self.may(principal, Operation::Delete, id)?;
        let (shard, group) = self.locate(id, false)?;
        let not_found = || {
            ApiError::new(
                ErrorCode::GroupIdNotFound,
                format!("group {id:?} does not exist"),
            )
        };
        let group = group.ok_or_else(not_found)?;
        let pending = {
            let mut g = group.lock().await;
            if g.state() == GroupState::Dead || g.is_forgettable() {
                return Err(not_found());
            }
            no_members(&g, "delete it")?;
            let mut records: Vec<(GroupLogKey, Option<Bytes>)> = g
                .all_committed()
                .keys()
                .map(|(topic, partition)| {
                    let key = OffsetKey {
                        group: id.to_owned(),
                        topic: topic.clone(),
                        partition: *partition,
                    };
                    (GroupLogKey::Offset(key), None)
                })
                .collect();
            records.push((GroupLogKey::Group(id.to_owned()), None));
            let pending = shard.write(records).await?;
            g.kill(&ApiError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("group {id:?} was deleted; join again"),
            ));
            pending
        };
        // Forgotten whatever the outcome: the tombstones are in this leader's log, so they
        // are committed once the ISR catches up, or another coordinator loads the partition.
        let replicated = shard.replicated(pending).await;
        shard.forget(id);
        replicated.map(|_| ())
    }

    /// This broker's id (for messages).
    pub fn node_id(&self) -> BrokerId {
        self.node_id
    }
}

fn check_group_id(group: &str) -> Result<(), ApiError> {
    if group.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidGroupId,
            "the group id must not be empty",
        ));
    }
    Ok(())
}

fn rebalancing(group: &str) -> ApiError {
    ApiError::new(
        ErrorCode::RebalanceInProgress,
        format!("group {group:?} is rebalancing; rejoin"),
    )
}

/// Each partition of a topic with its own validation outcome.
type TopicChecks = (String, Vec<(PartitionId, Result<(), ApiError>)>);

/// One partition's offset to write, validated.
struct OffsetWrite {
    topic: String,
    partition: PartitionId,
    value: OffsetValue,
}

/// Why a commit of this partition cannot be stored, if it cannot.
fn check_offset(
    image: &crate::cluster::image::MetadataImage,
    topic: &str,
    partition: PartitionId,
    metadata: Option<&str>,
) -> Result<(), ApiError> {
    let meta = image
        .topics
        .get(topic)
        .ok_or_else(|| ApiError::unknown_topic(topic))?;
    if meta.partition(partition).is_none() {
        return Err(ApiError::unknown_partition(
            topic,
            partition.0,
            meta.partitions.len(),
        ));
    }
    if metadata.is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES) {
        return Err(ApiError::new(
            ErrorCode::OffsetMetadataTooLarge,
            format!("offset metadata is longer than {OFFSET_METADATA_MAX_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Writes offsets of a group once `allowed` accepts them (checked under the group's lock,
/// with the records appended before it is released), and applies them once replicated.
async fn write_offsets(
    shard: &Shard,
    group: &GroupRef,
    writes: Vec<OffsetWrite>,
    allowed: impl FnOnce(&mut Group) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let pending = {
        let mut g = group.lock().await;
        allowed(&mut g)?;
        if writes.is_empty() {
            return Ok(());
        }
        let records = offset_records(g.id(), &writes)?;
        shard.write(records).await?
    };
    let base = shard.replicated(pending).await?;
    let mut g = group.lock().await;
    for (i, w) in writes.into_iter().enumerate() {
        g.apply_offset(
            w.topic,
            w.partition,
            Some(w.value),
            Offset(base.0 + i as i64),
        );
    }
    Ok(())
}

/// The `__consumer_offsets` records of `group`'s offsets.
fn offset_records(
    group: &str,
    writes: &[OffsetWrite],
) -> Result<Vec<(GroupLogKey, Option<Bytes>)>, ApiError> {
    writes
        .iter()
        .map(|w| {
            let key = GroupLogKey::Offset(OffsetKey {
                group: group.to_owned(),
                topic: w.topic.clone(),
                partition: w.partition,
            });
            let value = encode_value(&w.value).map_err(|e| {
                ApiError::new(
                    ErrorCode::UnknownServerError,
                    format!("encoding an offset: {e}"),
                )
            })?;
            Ok((key, Some(value)))
        })
        .collect()
}

/// Per-partition outcomes: a partition's own error, else the write's outcome.
fn per_partition(
    checks: Vec<TopicChecks>,
    written: Result<(), ApiError>,
) -> Vec<TopicItems<PartitionOutcome<()>>> {
    checks
        .into_iter()
        .map(|(topic, partitions)| TopicItems {
            topic,
            partitions: partitions
                .into_iter()
                .map(|(partition, checked)| PartitionOutcome {
                    partition,
                    outcome: checked.and(written.clone()),
                })
                .collect(),
        })
        .collect()
}

fn no_members(group: &Group, what: &str) -> Result<(), ApiError> {
    if group.member_count() == 0 {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::NonEmptyGroup,
        format!(
            "group {:?} has {} active member(s); stop its consumers first, then {what}",
            group.id(),
            group.member_count()
        ),
    ))
}

/// How long a group join may take at most before the coordinator answers: the session
/// bounds (for adapters that clamp the client's numbers).
pub fn millis(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// A TxnOffsetCommit's error as Kafka's clients expect it: the retriable NOT_ENOUGH_REPLICAS
/// of a verification that could not be made (the transaction coordinator loading, moved
/// or out of reach, or the transaction ended while it was asked) becomes
/// COORDINATOR_LOAD_IN_PROGRESS, which every client retries without looking the group
/// coordinator up again (Kafka does the same since KAFKA-16386).
fn txn_offset_error(e: ApiError) -> ApiError {
    match e.code {
        ErrorCode::NotEnoughReplicas => {
            ApiError::new(ErrorCode::CoordinatorLoadInProgress, e.message)
        }
        _ => e,
    }
}
