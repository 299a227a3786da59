//! The transaction coordinator (issue 26): the leader of partition `hash(id) % n` of
//! `__transaction_state` coordinates transactional id `id`, as the group coordinator does
//! groups on `__consumer_offsets`. Each such partition led here is a [`TxnShard`]: the ids
//! that hash to it, rebuilt from the partition's records when leadership arrives
//! (COORDINATOR_LOAD_IN_PROGRESS meanwhile) and dropped when it leaves (NOT_COORDINATOR).
//! The partition's leader epoch is the coordinator epoch its markers carry, so a deposed
//! coordinator's markers are fenced by every partition that saw a newer one.
//!
//! Every change of an id's state ([`super::state`] decides it) is a record appended with
//! acks=all and adopted only once replicated, under the id's lock. An EndTxn writes its
//! Prepare state (the decision is durable from then on); a task then has the leaders write
//! the markers (WriteTxnMarkers, retried until each is written) and writes the completion,
//! and the EndTxn answers when that is done or after `END_TXN_WAIT_MAX`, whichever comes
//! first. Until the completion the id's next request gets CONCURRENT_TRANSACTIONS. A new
//! coordinator that loads a Prepare state finishes it the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_protocol::batch::{BatchBuilder, Batches};
use sluice_protocol::control::{ControlMarker, ControlType};
use sluice_protocol::group_log::{coordinator_partition, OFFSETS_TOPIC};
use sluice_protocol::messages::{TopicPartitions, WritableTxnMarker, WriteTxnMarkersRequest};
use sluice_protocol::txn_log::{
    decode_key, decode_value, encode_key, encode_value, TxnState, TxnValue, TRANSACTION_STATE_TOPIC,
};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId, Request, Response};
use sluice_storage::{Clock, SystemClock};

use super::markers::{self, MarkerRequest};
use super::state::{self, End, Init};
use crate::cluster::image::{MetadataImage, NATIVE_LISTENER};
use crate::cluster::peer::{PeerConfig, PeerConnection};
use crate::config::BrokerConfig;
use crate::error::ApiError;
use crate::groups::coordinator::{coordinator_address, CoordinatorAddress};
use crate::groups::{led_partitions, GroupCoordinator};
use crate::partition::Partition;
use crate::security::acl::{Authorizer, Operation, Resource};
use crate::security::Principal;
use crate::services::admin::Admin;
use crate::services::producer_ids::ProducerIds;
use crate::services::{PartitionOutcome, TopicItems};
use crate::topics::Topics;

/// How long a write to `__transaction_state` may wait for the ISR.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an EndTxn waits for its markers and completion before it answers (the
/// decision is durable before that wait begins).
const END_TXN_WAIT_MAX: Duration = Duration::from_secs(5);
/// How long a WriteTxnMarkers to another broker may take.
const MARKER_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Waits between rounds of marker writes that did not all succeed: first, and most.
const MARKER_RETRY_FIRST: Duration = Duration::from_millis(100);
const MARKER_RETRY_MAX: Duration = Duration::from_secs(2);
/// How often open transactions are checked against their timeouts (Kafka's
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms` is 10 s; ours is finer,
/// so a timeout is kept within a second).
const TIMEOUT_CHECK: Duration = Duration::from_secs(1);
/// How often ids are checked for expiry ([`state::expired`]).
const EXPIRY_CHECK: Duration = Duration::from_secs(60);
/// How long ListTransactions waits for an id busy with a request.
const LIST_ID_WAIT: Duration = Duration::from_millis(200);
/// Bytes read per step while loading a partition.
const LOAD_READ_BYTES: u32 = 1 << 20;

/// One transactional id's state behind its lock (`None`: not initialised).
type IdRef = Arc<tokio::sync::Mutex<Option<TxnValue>>>;

/// The transactional ids of one `__transaction_state` partition this broker leads.
pub struct TxnShard {
    index: PartitionId,
    /// The partition's leader epoch: the coordinator epoch of every marker sent from here.
    coordinator_epoch: LeaderEpoch,
    topic_id: u64,
    partition: Arc<Partition>,
    loaded: AtomicBool,
    ids: Mutex<HashMap<String, IdRef>>,
    /// What each id's last InitProducerId claimed, when it was a producer's bump of its
    /// own epoch (KIP-360): a retry of it is answered with the epoch it got.
    bumped_from: Mutex<HashMap<String, (i64, i16)>>,
}

impl TxnShard {
    fn id(&self, id: &str) -> IdRef {
        let mut ids = self.ids.lock().expect("ids lock");
        Arc::clone(ids.entry(id.to_owned()).or_default())
    }

    /// `id`'s entry, if the shard has one (unlike [`TxnShard::id`], makes none).
    fn existing(&self, id: &str) -> Option<IdRef> {
        self.ids.lock().expect("ids lock").get(id).cloned()
    }

    /// Every id of the shard and its entry, as they are now.
    fn entries(&self) -> Vec<(String, IdRef)> {
        self.ids
            .lock()
            .expect("ids lock")
            .iter()
            .map(|(id, e)| (id.clone(), Arc::clone(e)))
            .collect()
    }

    fn last_bump(&self, id: &str) -> Option<(i64, i16)> {
        self.bumped_from
            .lock()
            .expect("bumped_from lock")
            .get(id)
            .copied()
    }

    fn set_last_bump(&self, id: &str, claimed: Option<(i64, i16)>) {
        let mut bumped_from = self.bumped_from.lock().expect("bumped_from lock");
        match claimed {
            Some(claim) => bumped_from.insert(id.to_owned(), claim),
            None => bumped_from.remove(id),
        };
    }

    fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Writes `id`'s tombstone (it expired) and waits until the ISR has it.
    async fn forget(&self, id: &str) -> Result<(), ApiError> {
        let key = encode_key(id).map_err(|e| encoding_failed(&e))?;
        let mut batch = BatchBuilder::new();
        batch.append(SystemClock.now_ms(), Some(&key), None, &[]);
        self.append(batch.build()).await
    }

    /// Writes `value` as `id`'s state and waits until the ISR has it. Refused once the
    /// partition's leadership moved since the shard was made, even if it came back: a
    /// deposed shard's tasks (a Completer, a request queued on an id's lock, the timeout
    /// check) must not write over its successor's states.
    async fn write(&self, id: &str, value: &TxnValue) -> Result<(), ApiError> {
        let key = encode_key(id).map_err(|e| encoding_failed(&e))?;
        let value = encode_value(value).map_err(|e| encoding_failed(&e))?;
        let mut batch = BatchBuilder::new();
        batch.append(SystemClock.now_ms(), Some(&key), Some(&value), &[]);
        self.append(batch.build()).await
    }

    /// Appends `bytes` in the shard's leader epoch and waits until the ISR has them.
    async fn append(&self, bytes: bytes::Bytes) -> Result<(), ApiError> {
        let partition = Arc::clone(&self.partition);
        let epoch = self.coordinator_epoch;
        let pending = tokio::task::spawn_blocking(move || {
            partition.append_as_coordinator(bytes, epoch, None)
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::UnknownServerError, format!("append task: {e}")))?
        .map_err(coordinator_error)?;
        self.partition
            .complete(pending, WRITE_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(coordinator_error)
    }
}

/// What ListTransactions selects: every filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnFilter {
    /// These states only (empty: any).
    pub states: Vec<TxnState>,
    /// These producers only (empty: any).
    pub producer_ids: Vec<i64>,
    /// Only transactions open longer than this (ms), Kafka's `duration_filter` (KIP-994).
    pub open_longer_than_ms: Option<i64>,
}

impl TxnFilter {
    /// The same filter with its lists deduplicated and its producer ids sorted, so
    /// [`TxnFilter::selects`] costs no scan of a list the client may have made long.
    fn normalized(&self) -> TxnFilter {
        let mut states = Vec::new();
        for state in &self.states {
            if !states.contains(state) {
                states.push(*state);
            }
        }
        let mut producer_ids = self.producer_ids.clone();
        producer_ids.sort_unstable();
        producer_ids.dedup();
        TxnFilter {
            states,
            producer_ids,
            open_longer_than_ms: self.open_longer_than_ms,
        }
    }

    /// Whether `value` matches; `producer_ids` must be sorted ([`TxnFilter::normalized`]).
    fn selects(&self, value: &TxnValue, now_ms: i64) -> bool {
        (self.states.is_empty() || self.states.contains(&value.state))
            && (self.producer_ids.is_empty()
                || self.producer_ids.binary_search(&value.producer_id).is_ok())
            && self
                .open_longer_than_ms
                .is_none_or(|d| value.started_ms >= 0 && now_ms - value.started_ms > d)
    }
}

/// The transaction coordinator service.
pub struct Transactions {
    node_id: BrokerId,
    /// `__transaction_state`'s partitions and segment size when it is created, and the
    /// voters counted for its replication factor (`__consumer_offsets`' settings).
    state_topic_partitions: u32,
    state_topic_segment_bytes: u32,
    voters: usize,
    /// How this broker dials the others (marker writes), made once.
    peer: PeerConfig,
    admin: Admin,
    topics: Arc<Topics>,
    producer_ids: Arc<ProducerIds>,
    authorizer: Arc<Authorizer>,
    /// The group coordinator, told when a marker decides a transaction's offsets.
    groups: Arc<GroupCoordinator>,
    shards: Mutex<BTreeMap<PartitionId, Arc<TxnShard>>>,
}

impl Transactions {
    pub fn new(
        config: &BrokerConfig,
        admin: Admin,
        topics: Arc<Topics>,
        producer_ids: Arc<ProducerIds>,
        authorizer: Arc<Authorizer>,
        groups: Arc<GroupCoordinator>,
    ) -> Transactions {
        Transactions {
            node_id: config.node_id,
            state_topic_partitions: config.offsets_topic_partitions,
            state_topic_segment_bytes: config.offsets_topic_segment_bytes,
            voters: config.voters.len(),
            peer: crate::cluster::peer_config(config),
            admin,
            topics,
            producer_ids,
            authorizer,
            groups,
            shards: Mutex::new(BTreeMap::new()),
        }
    }

    /// Where the coordinator of transactional id `id` is, as clients of `listener` reach
    /// it. Creates `__transaction_state` on first use, as the group coordinator creates
    /// `__consumer_offsets`.
    pub async fn find_coordinator(
        &self,
        principal: &Principal,
        id: &str,
        listener: &str,
    ) -> Result<CoordinatorAddress, ApiError> {
        // Finding the coordinator needs Describe (which Write implies), as in Kafka.
        self.authorizer.check(
            principal,
            Operation::Describe,
            Resource::TransactionalId(id),
        )?;
        let image = self.state_topic().await?;
        coordinator_address(&image, TRANSACTION_STATE_TOPIC, id, listener)
    }

    /// InitProducerId for a transactional id: its producer id and a new epoch, which fences
    /// every older instance (`claimed`: the running producer's own id and epoch, when it
    /// asks for a bump). An open transaction of an older instance is aborted first
    /// (CONCURRENT_TRANSACTIONS until that is done; the producer retries).
    pub async fn init_producer_id(
        &self,
        principal: &Principal,
        id: &str,
        claimed: Option<(i64, i16)>,
        timeout_ms: i32,
    ) -> Result<(i64, i16), ApiError> {
        self.may(principal, id)?;
        let (shard, entry) = self.locate(id)?;
        let mut current = entry.lock().await;
        let bumped_from = shard.last_bump(id);
        if let Some(v) = state::retried_bump(current.as_ref(), claimed, bumped_from) {
            return Ok((v.producer_id, v.producer_epoch));
        }
        // A fresh producer id is taken only when needed; the closure cannot await, so one
        // is taken first when the rules may want it.
        let fresh = match current.as_ref() {
            None => Some(self.producer_ids.new_id().await?),
            Some(v) if v.producer_epoch >= i16::MAX - 1 => Some(self.producer_ids.new_id().await?),
            Some(_) => None,
        };
        let now = SystemClock.now_ms();
        let next = state::init_producer_id(id, current.as_ref(), claimed, timeout_ms, now, || {
            fresh.ok_or_else(|| {
                ApiError::new(ErrorCode::UnknownServerError, "no fresh producer id taken")
            })
        })?;
        match next {
            Init::Ready(value) => {
                shard.write(id, &value).await?;
                shard.set_last_bump(id, claimed);
                let answer = (value.producer_id, value.producer_epoch);
                *current = Some(value);
                Ok(answer)
            }
            Init::AbortFirst(value) => {
                shard.write(id, &value).await?;
                shard.set_last_bump(id, None);
                *current = Some(value);
                drop(current);
                drop(self.spawn_completion(&shard, id, entry));
                Err(ApiError::new(
                    ErrorCode::ConcurrentTransactions,
                    format!(
                        "aborting the transaction an older instance of {id:?} left open; \
                         retry shortly"
                    ),
                ))
            }
        }
    }

    /// AddPartitionsToTxn: the partitions join the producer's transaction (opening it).
    /// Each must exist and be writable by the principal; if any is not, none is added and
    /// the others answer OPERATION_NOT_ATTEMPTED, as in Kafka.
    pub async fn add_partitions(
        &self,
        principal: &Principal,
        id: &str,
        producer_id: i64,
        epoch: i16,
        topics: Vec<TopicItems<PartitionId>>,
    ) -> Result<Vec<TopicItems<PartitionOutcome<()>>>, ApiError> {
        self.may(principal, id)?;
        let image = self.admin.image();
        let checked: Vec<TopicItems<PartitionOutcome<()>>> = topics
            .iter()
            .map(|t| {
                let allowed =
                    self.authorizer
                        .check(principal, Operation::Write, Resource::Topic(&t.topic));
                TopicItems {
                    topic: t.topic.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|&p| PartitionOutcome {
                            partition: p,
                            outcome: allowed
                                .clone()
                                .and_then(|()| partition_exists(&image, &t.topic, p)),
                        })
                        .collect(),
                }
            })
            .collect();
        let failed = checked
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| p.outcome.is_err());
        if failed {
            return Ok(not_attempted(checked));
        }
        let asked: Vec<TopicPartitions> = topics.iter().cloned().map(Into::into).collect();
        self.add(id, producer_id, epoch, &asked).await?;
        Ok(checked)
    }

    /// AddOffsetsToTxn: group `group`'s `__consumer_offsets` partition joins the
    /// transaction, so its marker decides the offsets the producer then commits there
    /// (TxnOffsetCommit, to the group's coordinator). Needs Read on the group.
    pub async fn add_offsets(
        &self,
        principal: &Principal,
        id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), ApiError> {
        self.may(principal, id)?;
        self.authorizer
            .check(principal, Operation::Read, Resource::Group(group))?;
        let image = self
            .admin
            .internal_topic(
                OFFSETS_TOPIC,
                self.state_topic_partitions,
                self.state_topic_segment_bytes,
                self.voters,
            )
            .await?;
        let n = image.topics[OFFSETS_TOPIC].partitions.len() as u32;
        let partition = TopicPartitions {
            topic: OFFSETS_TOPIC.to_owned(),
            partitions: vec![coordinator_partition(group, n)],
        };
        self.add(id, producer_id, epoch, &[partition]).await
    }

    /// Adds `asked` to `id`'s transaction (opening it), once replicated.
    async fn add(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        asked: &[TopicPartitions],
    ) -> Result<(), ApiError> {
        let (shard, entry) = self.locate(id)?;
        let mut current = entry.lock().await;
        let now = SystemClock.now_ms();
        if let Some(value) =
            state::add_partitions(id, current.as_ref(), producer_id, epoch, asked, now)?
        {
            shard.write(id, &value).await?;
            *current = Some(value);
        }
        Ok(())
    }

    /// EndTxn: commits or aborts the open transaction. Answers once the decision is
    /// replicated; the markers follow (the next request of the id waits for them).
    pub async fn end_txn(
        &self,
        principal: &Principal,
        id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), ApiError> {
        self.may(principal, id)?;
        let (shard, entry) = self.locate(id)?;
        let mut current = entry.lock().await;
        let now = SystemClock.now_ms();
        match state::end_txn(id, current.as_ref(), producer_id, epoch, commit, now)? {
            End::AlreadyDone => Ok(()),
            End::Prepare(value) => {
                shard.write(id, &value).await?;
                *current = Some(value);
                drop(current);
                // The decision is durable: the answer could go now (as Kafka's does), but
                // then the producer's next AddPartitionsToTxn meets CONCURRENT_TRANSACTIONS
                // until the markers are written, and clients back off from that for their
                // retry backoff (BENCHMARKS.md, "What transactions cost"). So the answer
                // waits for the completion, a marker round trip, up to a bound: past it
                // the markers go on in the background.
                let completion = self.spawn_completion(&shard, id, entry);
                let _ = tokio::time::timeout(END_TXN_WAIT_MAX, completion).await;
                Ok(())
            }
        }
    }

    /// VerifyTxn (KIP-890), as `id`'s coordinator: whether each of `topics` is in the
    /// ongoing transaction of producer `producer_id` at `epoch`, asked by the partition's
    /// leader before a batch begins the transaction there. Changes nothing. A partition
    /// that is not answers INVALID_TXN_STATE; the whole request is refused when the id has
    /// another producer or epoch, or its transaction is completing, or this broker is not
    /// (yet) its coordinator. Waits for a change of the id's state being replicated, so
    /// the answer is about the state the producer's last request left.
    pub async fn verify(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        topics: Vec<TopicPartitions>,
    ) -> Result<Vec<TopicItems<PartitionOutcome<()>>>, ApiError> {
        let (_, entry) = self.locate(id)?;
        let current = entry.lock().await;
        let ongoing = state::ongoing_partitions(id, current.as_ref(), producer_id, epoch)?;
        Ok(topics
            .into_iter()
            .map(|t| {
                let added = ongoing.iter().find(|o| o.topic == t.topic);
                TopicItems {
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionOutcome {
                            partition: p,
                            outcome: if added.is_some_and(|a| a.partitions.contains(&p)) {
                                Ok(())
                            } else {
                                Err(not_in_transaction(id, producer_id, epoch, &t.topic, p))
                            },
                        })
                        .collect(),
                    topic: t.topic,
                }
            })
            .collect())
    }

    /// ListTransactions: the transactional ids this broker coordinates that `principal` may
    /// describe (the others are left out, as in Kafka) and `filter` selects, with their
    /// states, by id. Refused while a `__transaction_state` partition led here is still
    /// loading: the listing would miss its ids.
    pub async fn list(
        &self,
        principal: &Principal,
        filter: &TxnFilter,
    ) -> Result<Vec<(String, TxnValue)>, ApiError> {
        let shards: Vec<Arc<TxnShard>> = self
            .shards
            .lock()
            .expect("shards lock")
            .values()
            .cloned()
            .collect();
        let filter = &filter.normalized();
        if let Some(loading) = shards.iter().find(|s| !s.is_loaded()) {
            return Err(ApiError::new(
                ErrorCode::CoordinatorLoadInProgress,
                format!(
                    "broker {} is loading the transactions of {TRANSACTION_STATE_TOPIC}-{}; \
                     retry shortly",
                    self.node_id, loading.index.0
                ),
            ));
        }
        let now = SystemClock.now_ms();
        let mut listed = Vec::new();
        for shard in shards {
            for (id, entry) in shard.entries() {
                if !self.authorizer.allows(
                    principal,
                    Operation::Describe,
                    Resource::TransactionalId(&id),
                ) {
                    continue;
                }
                // An id busy with a request (a write waiting for the ISR) is not waited for
                // long: the listing is of every other id rather than none.
                let Ok(current) = tokio::time::timeout(LIST_ID_WAIT, entry.lock()).await else {
                    tracing::debug!("listing transactions: {id:?} is busy; left out");
                    continue;
                };
                if let Some(value) = current.clone().filter(|v| filter.selects(v, now)) {
                    listed.push((id, value));
                }
            }
        }
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(listed)
    }

    /// DescribeTransactions: each id's state, in request order, or why not (not allowed,
    /// not coordinated here, unknown). An id asked again is answered once (each repeat
    /// would copy its partition list into the answer again).
    pub async fn describe(
        &self,
        principal: &Principal,
        mut ids: Vec<String>,
    ) -> Vec<(String, Result<TxnValue, ApiError>)> {
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        let mut described = Vec::with_capacity(ids.len());
        for id in ids {
            let outcome = self.describe_one(principal, &id).await;
            described.push((id, outcome));
        }
        described
    }

    async fn describe_one(&self, principal: &Principal, id: &str) -> Result<TxnValue, ApiError> {
        self.authorizer.check(
            principal,
            Operation::Describe,
            Resource::TransactionalId(id),
        )?;
        let shard = self.shard_of(id)?;
        let entry = shard.existing(id);
        let current = match entry {
            Some(entry) => entry.lock().await.clone(),
            None => None,
        };
        // The topics the principal may not see are left out, as Kafka does.
        let visible = |topic: &str| {
            self.authorizer
                .allows(principal, Operation::Describe, Resource::Topic(topic))
        };
        current
            .map(|mut value| {
                value.partitions.retain(|t| visible(&t.topic));
                value
            })
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::TransactionalIdNotFound,
                    format!(
                        "no producer uses transactional id {id:?} (none initialised it, or it \
                     expired); list the ids with ListTransactions"
                    ),
                )
            })
    }

    /// WriteTxnMarkers from a client: an operator's abort of a transaction left open in a
    /// partition (Kafka's `kafka-transactions.sh abort`, KIP-664), ClusterAction on the
    /// cluster as in Kafka. Only aborts: a commit is the coordinator's decision, and a
    /// marker written around it would commit a transaction in some partitions only.
    pub async fn write_markers(
        &self,
        principal: &Principal,
        asked: Vec<MarkerRequest>,
    ) -> Result<Vec<markers::MarkerResult>, ApiError> {
        self.authorizer
            .check(principal, Operation::ClusterAction, Resource::Cluster)?;
        if let Some(commit) = asked.iter().find(|m| m.marker.kind == ControlType::Commit) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a client may only write abort markers (producer {} asked for a commit): \
                     commits are the transaction coordinator's; end the transaction from its \
                     producer instead",
                    commit.producer_id
                ),
            ));
        }
        let image = self.admin.image();
        markers::write_markers(&self.topics, &self.groups, &image, asked).await
    }

    /// The shard coordinating `id` and the id's entry, or the error that sends the client
    /// to find the coordinator again (or to wait for the load).
    fn locate(&self, id: &str) -> Result<(Arc<TxnShard>, IdRef), ApiError> {
        let shard = self.shard_of(id)?;
        let entry = shard.id(id);
        Ok((shard, entry))
    }

    /// The loaded shard coordinating `id`, or the error that sends the client to find the
    /// coordinator again (or to wait for the load).
    fn shard_of(&self, id: &str) -> Result<Arc<TxnShard>, ApiError> {
        if id.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "the transactional id is empty; give the producer a transactional.id",
            ));
        }
        let image = self.admin.image();
        let Some(topic) = image.topics.get(TRANSACTION_STATE_TOPIC) else {
            return Err(ApiError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("{TRANSACTION_STATE_TOPIC} does not exist yet; send FindCoordinator first"),
            ));
        };
        let index = coordinator_partition(id, topic.partitions.len() as u32);
        let shard = self
            .shards
            .lock()
            .expect("shards lock")
            .get(&index)
            .cloned();
        match shard {
            Some(shard) if shard.is_loaded() => Ok(shard),
            Some(_) => Err(ApiError::new(
                ErrorCode::CoordinatorLoadInProgress,
                format!(
                    "broker {} is loading the transactions of {TRANSACTION_STATE_TOPIC}-{}; \
                     retry shortly",
                    self.node_id, index.0
                ),
            )),
            None => Err(ApiError::new(
                ErrorCode::NotCoordinator,
                format!(
                    "broker {} is not the transaction coordinator of {id:?} (the leader of \
                     {TRANSACTION_STATE_TOPIC}-{} is); find the coordinator again",
                    self.node_id, index.0
                ),
            )),
        }
    }

    /// Using transactional id `id` (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
    /// EndTxn) needs Write on it, as in Kafka: otherwise any principal allowed to write
    /// somewhere could take another application's id and fence its producer.
    fn may(&self, principal: &Principal, id: &str) -> Result<(), ApiError> {
        self.authorizer
            .check(principal, Operation::Write, Resource::TransactionalId(id))
    }

    /// The image, once it has `__transaction_state` (created here if it is missing, as
    /// many partitions as `__consumer_offsets`).
    async fn state_topic(&self) -> Result<Arc<MetadataImage>, ApiError> {
        self.admin
            .internal_topic(
                TRANSACTION_STATE_TOPIC,
                self.state_topic_partitions,
                self.state_topic_segment_bytes,
                self.voters,
            )
            .await
    }

    /// Finishes `id`'s Prepare state in the background: markers, then the completion. The
    /// handle ends when it is done (or the shard was dropped).
    fn spawn_completion(
        &self,
        shard: &Arc<TxnShard>,
        id: &str,
        entry: IdRef,
    ) -> tokio::task::JoinHandle<()> {
        let completer = Completer {
            groups: Arc::clone(&self.groups),
            node_id: self.node_id,
            peer: self.peer.clone(),
            topics: Arc::clone(&self.topics),
            admin: self.admin.clone(),
        };
        tokio::spawn(completer.complete(Arc::clone(shard), id.to_owned(), entry))
    }

    /// Follows leadership of `__transaction_state`: loads the partitions this broker now
    /// leads (or leads in a new epoch), drops the others. `partition` finds the local
    /// replica.
    pub fn on_image(
        self: &Arc<Self>,
        image: &Arc<MetadataImage>,
        partition: impl Fn(PartitionId) -> Option<Arc<Partition>>,
    ) {
        let (led, topic_id) =
            led_partitions(image, TRANSACTION_STATE_TOPIC, self.node_id, &partition);
        let mut shards = self.shards.lock().expect("shards lock");
        shards.retain(|index, shard| {
            let keep = led.get(index) == Some(&shard.coordinator_epoch)
                && topic_id == Some(shard.topic_id);
            if !keep {
                tracing::info!(
                    "no longer the transaction coordinator of {TRANSACTION_STATE_TOPIC}-{}",
                    index.0
                );
                shard.loaded.store(false, Ordering::Release);
            }
            keep
        });
        for (index, coordinator_epoch) in led {
            if shards.contains_key(&index) {
                continue;
            }
            let Some(replica) = partition(index) else {
                continue;
            };
            let shard = Arc::new(TxnShard {
                index,
                coordinator_epoch,
                topic_id: topic_id.expect("a led partition has a topic"),
                partition: replica,
                loaded: AtomicBool::new(false),
                ids: Mutex::new(HashMap::new()),
                bumped_from: Mutex::new(HashMap::new()),
            });
            shards.insert(index, Arc::clone(&shard));
            tokio::spawn(Arc::clone(self).load(shard));
        }
    }

    /// Drops every shard (shutdown).
    pub fn unload_all(&self) {
        for shard in std::mem::take(&mut *self.shards.lock().expect("shards lock")).into_values() {
            shard.loaded.store(false, Ordering::Release);
        }
    }

    /// Rebuilds a shard's ids from its partition, then finishes the transactions it left
    /// in a Prepare state.
    async fn load(self: Arc<Self>, shard: Arc<TxnShard>) {
        let replica = Arc::clone(&shard.partition);
        let loaded = tokio::task::spawn_blocking(move || replay(&replica)).await;
        let ids = match loaded {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                tracing::error!(
                    "cannot load the transactions of {TRANSACTION_STATE_TOPIC}-{}: {e}; they \
                     stay unavailable on this broker until its leadership changes",
                    shard.index.0
                );
                return;
            }
            Err(e) => {
                tracing::error!(
                    "loading {TRANSACTION_STATE_TOPIC}-{} failed: {e}",
                    shard.index.0
                );
                return;
            }
        };
        let n = ids.len();
        let entries: HashMap<String, IdRef> = ids
            .into_iter()
            .map(|(id, v)| (id, Arc::new(tokio::sync::Mutex::new(Some(v)))))
            .collect();
        let unfinished: Vec<(String, IdRef)> = {
            let mut out = Vec::new();
            for (id, entry) in &entries {
                let preparing = entry.lock().await.as_ref().is_some_and(|v| {
                    matches!(v.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
                });
                if preparing {
                    out.push((id.clone(), Arc::clone(entry)));
                }
            }
            out
        };
        *shard.ids.lock().expect("ids lock") = entries;
        shard.loaded.store(true, Ordering::Release);
        tracing::info!(
            "coordinating {n} transactional id(s) of {TRANSACTION_STATE_TOPIC}-{}",
            shard.index.0
        );
        for (id, entry) in unfinished {
            drop(self.spawn_completion(&shard, &id, entry));
        }
    }

    /// Aborts the transactions open longer than their timeouts, and forgets the ids unused
    /// for a week, until `stopping`.
    pub async fn run(self: Arc<Self>, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(TIMEOUT_CHECK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry_check = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            if last_expiry_check.elapsed() >= EXPIRY_CHECK {
                last_expiry_check = tokio::time::Instant::now();
                self.expire_ids().await;
            }
            let shards = self.loaded_shards();
            for shard in shards {
                let ids = shard.entries();
                for (id, entry) in ids {
                    let Ok(mut current) = entry.try_lock() else {
                        continue; // busy with a request: checked next tick
                    };
                    let Some(abort) = current
                        .as_ref()
                        .and_then(|v| state::timed_out(v, SystemClock.now_ms()))
                    else {
                        continue;
                    };
                    tracing::info!(
                        "aborting the transaction of {id:?}: open longer than its timeout of \
                         {} ms",
                        abort.timeout_ms
                    );
                    if let Err(e) = shard.write(&id, &abort).await {
                        tracing::warn!(
                            "aborting the timed-out transaction of {id:?}: {}",
                            e.message
                        );
                        continue;
                    }
                    *current = Some(abort);
                    drop(current);
                    // Its end in the background: a timeout has no one waiting for it.
                    drop(self.spawn_completion(&shard, &id, entry));
                }
            }
        }
    }
}

impl Transactions {
    /// The shards loaded now.
    fn loaded_shards(&self) -> Vec<Arc<TxnShard>> {
        self.shards
            .lock()
            .expect("shards lock")
            .values()
            .filter(|s| s.is_loaded())
            .cloned()
            .collect()
    }

    /// Forgets the ids of the loaded shards unused past [`state::expired`]: a tombstone
    /// each, then out of memory (Kafka's transactional id expiration).
    async fn expire_ids(&self) {
        let shards = self.loaded_shards();
        for shard in shards {
            let ids = shard.entries();
            for (id, entry) in ids {
                let Ok(mut current) = entry.try_lock() else {
                    continue; // in use: not expired
                };
                let now = SystemClock.now_ms();
                if !current.as_ref().is_some_and(|v| state::expired(v, now)) {
                    continue;
                }
                if let Err(e) = shard.forget(&id).await {
                    tracing::debug!("expiring transactional id {id:?}: {}", e.message);
                    continue;
                }
                tracing::info!("transactional id {id:?} expired: unused for 7 days");
                *current = None;
                shard.set_last_bump(&id, None);
                // Out of the map only if no request holds the entry (they take it under
                // the map's lock, held here): one waiting on it sees `None`, as it must.
                let mut ids = shard.ids.lock().expect("ids lock");
                if Arc::strong_count(&entry) == 2 {
                    ids.remove(&id);
                }
                drop(ids);
                drop(current);
            }
        }
    }
}

/// Writes a Prepare state's markers and then its completion, in the background.
struct Completer {
    groups: Arc<GroupCoordinator>,
    node_id: BrokerId,
    peer: PeerConfig,
    topics: Arc<Topics>,
    admin: Admin,
}

impl Completer {
    /// Retries the markers until every partition has one (or is gone), then writes the
    /// completed state. Stops when the shard is dropped (the next coordinator finishes).
    async fn complete(self, shard: Arc<TxnShard>, id: String, entry: IdRef) {
        let mut delay = MARKER_RETRY_FIRST;
        let mut peers: HashMap<BrokerId, (String, PeerConnection)> = HashMap::new();
        loop {
            if !shard.is_loaded() {
                return;
            }
            let Some(prepared) = entry.lock().await.clone() else {
                return;
            };
            if !matches!(
                prepared.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            ) {
                return;
            }
            match self.send_markers(&shard, &prepared, &mut peers).await {
                Ok(()) => {
                    let mut current = entry.lock().await;
                    if current.as_ref() != Some(&prepared) {
                        return;
                    }
                    let done = state::completed(&prepared, SystemClock.now_ms());
                    match shard.write(&id, &done).await {
                        Ok(()) => {
                            *current = Some(done);
                            return;
                        }
                        Err(e) => tracing::warn!(
                            "completing the transaction of {id:?}: {}; retrying",
                            e.message
                        ),
                    }
                }
                Err(e) => tracing::debug!("markers of {id:?}: {}; retrying", e.message),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MARKER_RETRY_MAX);
        }
    }

    /// Has each partition's leader write the marker. `Ok` once every partition has it or
    /// no longer exists.
    async fn send_markers(
        &self,
        shard: &TxnShard,
        prepared: &TxnValue,
        peers: &mut HashMap<BrokerId, (String, PeerConnection)>,
    ) -> Result<(), ApiError> {
        let image = self.admin.image();
        let marker = ControlMarker {
            kind: if prepared.state == TxnState::PrepareCommit {
                ControlType::Commit
            } else {
                ControlType::Abort
            },
            coordinator_epoch: shard.coordinator_epoch.0,
        };
        let mut by_leader: BTreeMap<BrokerId, Vec<TopicPartitions>> = BTreeMap::new();
        for t in &prepared.partitions {
            let Some(topic) = image.topics.get(&t.topic) else {
                continue; // deleted: nothing to mark
            };
            for &p in &t.partitions {
                let Some(meta) = topic.partition(p) else {
                    continue;
                };
                let list = by_leader.entry(meta.leader).or_default();
                match list.iter_mut().find(|x| x.topic == t.topic) {
                    Some(x) => x.partitions.push(p),
                    None => list.push(TopicPartitions {
                        topic: t.topic.clone(),
                        partitions: vec![p],
                    }),
                }
            }
        }
        let mut failure = None;
        for (leader, partitions) in by_leader {
            let outcome = if leader == BrokerId::NONE {
                Err(ApiError::new(
                    ErrorCode::LeaderNotAvailable,
                    "a partition of the transaction has no leader",
                ))
            } else if leader == self.node_id {
                self.write_local(&image, prepared, marker, partitions).await
            } else {
                self.write_remote(&image, leader, prepared, marker, partitions, peers)
                    .await
            };
            if let Err(e) = outcome {
                if matches!(
                    e.code,
                    ErrorCode::TransactionCoordinatorFenced | ErrorCode::InvalidProducerEpoch
                ) {
                    // A newer coordinator or producer epoch wrote there: this coordinator
                    // is stale, its shard will be dropped.
                    tracing::warn!("a marker was fenced: {}", e.message);
                }
                failure = Some(e);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn write_local(
        &self,
        image: &MetadataImage,
        prepared: &TxnValue,
        marker: ControlMarker,
        partitions: Vec<TopicPartitions>,
    ) -> Result<(), ApiError> {
        let request = MarkerRequest {
            producer_id: prepared.producer_id,
            producer_epoch: prepared.producer_epoch,
            marker,
            topics: partitions.into_iter().map(TopicItems::from).collect(),
        };
        let results =
            markers::write_markers(&self.topics, &self.groups, image, vec![request]).await?;
        first_failure(results.into_iter().flat_map(|r| r.topics).flat_map(|t| {
            t.partitions
                .into_iter()
                .map(|p| p.outcome)
                .collect::<Vec<_>>()
        }))
    }

    async fn write_remote(
        &self,
        image: &MetadataImage,
        leader: BrokerId,
        prepared: &TxnValue,
        marker: ControlMarker,
        partitions: Vec<TopicPartitions>,
        peers: &mut HashMap<BrokerId, (String, PeerConnection)>,
    ) -> Result<(), ApiError> {
        let Some(address) = image
            .broker_address(leader, NATIVE_LISTENER)
            .map(|l| l.address())
        else {
            return Err(ApiError::new(
                ErrorCode::LeaderNotAvailable,
                format!("broker {leader} has no address yet"),
            ));
        };
        if peers.get(&leader).is_none_or(|(a, _)| *a != address) {
            peers.insert(
                leader,
                (
                    address.clone(),
                    PeerConnection::new(leader, &address, self.peer.clone()),
                ),
            );
        }
        let (_, peer) = peers.get_mut(&leader).expect("inserted above");
        let request = Request::WriteTxnMarkers(WriteTxnMarkersRequest {
            markers: vec![WritableTxnMarker {
                producer_id: prepared.producer_id,
                producer_epoch: prepared.producer_epoch,
                committed: marker.kind == ControlType::Commit,
                topics: partitions,
                coordinator_epoch: marker.coordinator_epoch,
            }],
        });
        let answer = peer.call(request, MARKER_CALL_TIMEOUT).await.map_err(|e| {
            ApiError::new(
                ErrorCode::NetworkException,
                format!("WriteTxnMarkers to broker {leader}: {e}"),
            )
        })?;
        let Response::WriteTxnMarkers(r) = answer else {
            return Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!(
                    "broker {leader} answered WriteTxnMarkers with {:?}",
                    answer.api_key()
                ),
            ));
        };
        first_failure(r.markers.into_iter().flat_map(|m| m.topics).flat_map(|t| {
            t.partitions
                .into_iter()
                .map(|p| PartitionOutcome::from_wire(p).outcome)
                .collect::<Vec<_>>()
        }))
    }
}

/// The first failure among per-partition outcomes, a partition that no longer exists
/// counting as done (its records went with it).
fn first_failure(outcomes: impl Iterator<Item = Result<(), ApiError>>) -> Result<(), ApiError> {
    for outcome in outcomes {
        match outcome {
            Ok(()) => {}
            Err(e) if e.code == ErrorCode::UnknownTopicOrPartition => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn partition_exists(
    image: &MetadataImage,
    topic: &str,
    partition: PartitionId,
) -> Result<(), ApiError> {
    let exists = image
        .topics
        .get(topic)
        .is_some_and(|t| t.partition(partition).is_some());
    if exists {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!(
                "{topic}-{} does not exist; create the topic first",
                partition.0
            ),
        ))
    }
}

/// A batch's partition is not in its producer's ongoing transaction (Kafka's answer to
/// clients before KIP-890 part 2).
fn not_in_transaction(
    id: &str,
    producer_id: i64,
    epoch: i16,
    topic: &str,
    partition: PartitionId,
) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidTxnState,
        format!(
            "{topic}-{} is not in the ongoing transaction of transactional id {id:?} \
             (producer {producer_id} epoch {epoch}): the producer did not add it \
             (AddPartitionsToTxn) before sending to it, or the batch arrived after its \
             transaction ended; nothing was written: abort the transaction",
            partition.0
        ),
    )
}

/// Every partition that did not fail answers OPERATION_NOT_ATTEMPTED.
fn not_attempted(
    checked: Vec<TopicItems<PartitionOutcome<()>>>,
) -> Vec<TopicItems<PartitionOutcome<()>>> {
    checked
        .into_iter()
        .map(|t| TopicItems {
            topic: t.topic,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| PartitionOutcome {
                    partition: p.partition,
                    outcome: match p.outcome {
                        Ok(()) => Err(ApiError::new(
                            ErrorCode::OperationNotAttempted,
                            "another partition of the request was refused; none was added",
                        )),
                        failed => failed,
                    },
                })
                .collect(),
        })
        .collect()
}

/// Replays a `__transaction_state` partition: the last record of each id wins; a
/// tombstone forgets it. A record that does not decode is skipped with a warning.
fn replay(replica: &Partition) -> Result<HashMap<String, TxnValue>, String> {
    let mut ids: HashMap<String, TxnValue> = HashMap::new();
    let end = replica.log_end_offset();
    let mut offset = replica.log_start_offset();
    while offset < end {
        let bytes = replica
            .read_log(offset, LOAD_READ_BYTES, end)
            .map_err(|e| format!("reading offset {offset}: {}", e.message))?;
        if bytes.is_empty() {
            break;
        }
        for batch in Batches::new(bytes) {
            let batch = batch.map_err(|e| format!("a batch at or after offset {offset}: {e}"))?;
            offset = batch.header().next_offset();
            let Ok(records) = batch.records() else {
                tracing::warn!("skipping a batch of {TRANSACTION_STATE_TOPIC} at {offset}");
                continue;
            };
            for record in records.flatten() {
                let Some(key) = record.key else { continue };
                let id = match decode_key(key) {
                    Ok(id) => id,
                    Err(e) => {
                        tracing::warn!("skipping a record of {TRANSACTION_STATE_TOPIC}: {e}");
                        continue;
                    }
                };
                match record.value.map(decode_value).transpose() {
                    Ok(Some(value)) => {
                        ids.insert(id, value);
                    }
                    Ok(None) => {
                        ids.remove(&id);
                    }
                    Err(e) => tracing::warn!("skipping the state of {id:?}: {e}"),
                }
            }
        }
    }
    Ok(ids)
}

/// What a client should do when a write to `__transaction_state` fails: leadership moved
/// → find the coordinator again; the ISR is short or slow → retry later.
fn coordinator_error(e: ApiError) -> ApiError {
    let code = match e.code {
        ErrorCode::NotLeaderOrFollower
        | ErrorCode::LeaderNotAvailable
        | ErrorCode::FencedLeaderEpoch
        | ErrorCode::UnknownTopicOrPartition => ErrorCode::NotCoordinator,
        ErrorCode::NotEnoughReplicas
        | ErrorCode::NotEnoughReplicasAfterAppend
        | ErrorCode::RequestTimedOut => ErrorCode::CoordinatorNotAvailable,
        other => other,
    };
    ApiError::new(
        code,
        format!("writing to {TRANSACTION_STATE_TOPIC}: {}", e.message),
    )
}

fn encoding_failed(e: &sluice_protocol::Error) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownServerError,
        format!("encoding a {TRANSACTION_STATE_TOPIC} record: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(state: TxnState, producer_id: i64, started_ms: i64) -> TxnValue {
        TxnValue {
            producer_id,
            producer_epoch: 0,
            timeout_ms: 60_000,
            state,
            partitions: vec![],
            started_ms,
            updated_ms: started_ms.max(0),
        }
    }

    #[test]
    fn a_filter_selects_by_every_field_it_has() {
        let now = 100_000;
        let open = value(TxnState::Ongoing, 7, now - 5_000);
        let idle = value(TxnState::Empty, 8, -1);
        let any = TxnFilter::default();
        assert!(any.selects(&open, now) && any.selects(&idle, now));
        let ongoing = TxnFilter {
            states: vec![TxnState::Ongoing],
            ..TxnFilter::default()
        };
        assert!(ongoing.selects(&open, now) && !ongoing.selects(&idle, now));
        let producer = TxnFilter {
            producer_ids: vec![9, 8, 3, 8],
            ..TxnFilter::default()
        }
        .normalized();
        assert_eq!(producer.producer_ids, vec![3, 8, 9]);
        assert!(!producer.selects(&open, now) && producer.selects(&idle, now));
        // Only a transaction open longer than the duration: an id without one never is.
        let long = |ms| TxnFilter {
            open_longer_than_ms: Some(ms),
            ..TxnFilter::default()
        };
        assert!(long(4_999).selects(&open, now));
        assert!(!long(5_000).selects(&open, now));
        assert!(!long(0).selects(&idle, now));
    }
}
