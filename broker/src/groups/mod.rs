//! The group coordinator (DESIGN §1): the leader of partition `hash(G) % n` of
//! `__consumer_offsets` coordinates group G. Each such partition this broker leads is a
//! [`Shard`]: the groups that hash to it, rebuilt from the partition's records when the
//! broker becomes its leader (COORDINATOR_LOAD_IN_PROGRESS meanwhile) and dropped when it
//! stops leading (NOT_COORDINATOR: clients find the new coordinator, which loads the same
//! records). Every durable change, a committed offset or a new generation, is a record
//! appended to that partition with acks=all, so it is replicated like any data and applied
//! in memory only once the ISR has it.
//!
//! Ordering: a group's records are appended while its lock is held, so the partition holds
//! them in the order the group validated them; the lock is released while the append
//! replicates. A commit validated against generation N is therefore written before any
//! record of generation N+1.
//!
//! Transactional offsets (TxnOffsetCommit, issue 26) are written as a transactional batch
//! in the producer's id and epoch, and staged in the group until the transaction's marker
//! reaches the partition: [`GroupCoordinator::end_txn`] applies them on commit and drops
//! them on abort, and a load does the same as it replays the markers.

pub mod consumer_protocol;
pub mod coordinator;
pub mod group;

pub use coordinator::Coordinator;
pub use group::SERVER_ASSIGNOR;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::{BatchBuilder, Batches, ProducerStamp, RecordBatch, NO_SEQUENCE};
use sluice_protocol::control::{ControlMarker, ControlType};
use sluice_protocol::group_log::{
    decode_group_value, decode_value, encode_group_value, GroupLogKey, GroupValue, OffsetKey,
    OffsetValue, OFFSETS_TOPIC,
};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId};
use sluice_storage::{Clock, SystemClock};

use crate::cluster::image::MetadataImage;
use crate::error::ApiError;
use crate::partition::{Partition, PendingAppend, Role};
use crate::producer_state::VerificationGuard;
use group::{Group, GroupTimings};

/// How long a write to `__consumer_offsets` may wait for the ISR (Kafka's
/// `offsets.commit.timeout.ms`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often sessions, rebalance deadlines and topic changes are checked.
const TICK: Duration = Duration::from_millis(100);
/// Bytes read per step while loading a partition.
const LOAD_READ_BYTES: u32 = 1 << 20;

/// A group behind its lock (held across the append of its records, never across their
/// replication).
pub type GroupRef = Arc<tokio::sync::Mutex<Group>>;

/// The groups of one `__consumer_offsets` partition this broker leads.
pub struct Shard {
    index: PartitionId,
    leader_epoch: LeaderEpoch,
    topic_id: u64,
    partition: Arc<Partition>,
    loaded: AtomicBool,
    groups: Mutex<HashMap<String, GroupRef>>,
    txns: Mutex<ShardTxns>,
}

/// Which groups hold offsets of which producers' undecided transactions, and the
/// transaction ends that arrived while the shard was loading (applied once it is).
#[derive(Default)]
struct ShardTxns {
    loaded: bool,
    producers: HashMap<i64, BTreeSet<String>>,
    early: Vec<TxnEnd>,
}

/// A transaction's marker, written to a `__consumer_offsets` partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnEnd {
    pub producer_id: i64,
    pub commit: bool,
    /// The marker's offset: it decides the producer's offsets written before it.
    pub marker_offset: Offset,
}

impl Shard {
    /// A group, created empty if `create` and it does not exist.
    pub fn group(&self, id: &str, create: bool) -> Option<GroupRef> {
        let mut groups = self.groups.lock().expect("groups lock");
        match groups.get(id) {
            Some(group) => Some(Arc::clone(group)),
            None if create => {
                let group = Arc::new(tokio::sync::Mutex::new(Group::new(id)));
                groups.insert(id.to_owned(), Arc::clone(&group));
                Some(group)
            }
            None => None,
        }
    }

    /// Every group of the shard.
    pub fn groups(&self) -> Vec<GroupRef> {
        self.groups
            .lock()
            .expect("groups lock")
            .values()
            .cloned()
            .collect()
    }

    /// Forgets a group (deleted, or nothing left of it).
    pub fn forget(&self, id: &str) {
        self.groups.lock().expect("groups lock").remove(id);
    }

    /// Writes records to the partition (the ordered phase: call with the group's lock
    /// held); finish with [`Shard::replicated`] after releasing it. Refused once the
    /// partition's leadership moved since the shard was made, even if it came back.
    pub async fn write(
        &self,
        records: Vec<(GroupLogKey, Option<Bytes>)>,
    ) -> Result<PendingAppend, ApiError> {
        self.append(BatchBuilder::new(), records, None).await
    }

    async fn append(
        &self,
        mut batch: BatchBuilder,
        records: Vec<(GroupLogKey, Option<Bytes>)>,
        guard: Option<VerificationGuard>,
    ) -> Result<PendingAppend, ApiError> {
        let now_ms = SystemClock.now_ms();
        for (key, value) in &records {
            let key = key.encode().map_err(|e| encoding_failed(&e))?;
            batch.append(now_ms, Some(&key), value.as_deref(), &[]);
        }
        let partition = Arc::clone(&self.partition);
        let bytes = batch.build();
        let epoch = self.leader_epoch;
        tokio::task::spawn_blocking(move || partition.append_as_coordinator(bytes, epoch, guard))
            .await
            .map_err(|e| ApiError::new(ErrorCode::UnknownServerError, format!("append task: {e}")))?
            .map_err(coordinator_error)
    }

    /// Writes offset records in producer `producer_id`'s transaction (epoch `epoch`): a
    /// transactional batch without sequences, as Kafka's coordinator writes it, fenced by
    /// the producer epochs the partition has seen. The first of a transaction needs the
    /// `guard` of a verification ([`Shard::start_verification`]). Call with the group's
    /// lock held, and stage the offsets ([`Shard::staged`]) before releasing it.
    pub async fn write_txn(
        &self,
        producer_id: i64,
        epoch: i16,
        records: Vec<(GroupLogKey, Option<Bytes>)>,
        guard: Option<VerificationGuard>,
    ) -> Result<PendingAppend, ApiError> {
        let stamp = ProducerStamp {
            producer_id,
            producer_epoch: epoch,
            base_sequence: NO_SEQUENCE,
        };
        let batch = BatchBuilder::with_capacity(stamp, 0).transactional();
        self.append(batch, records, guard).await
    }

    /// Whether offsets written now for producer `producer_id` at `epoch` would begin its
    /// transaction in this shard's partition: then the guard under which its transaction
    /// coordinator must confirm the partition is in the transaction (KIP-890).
    pub fn start_verification(
        &self,
        producer_id: i64,
        epoch: i16,
    ) -> Result<Option<VerificationGuard>, ApiError> {
        self.partition
            .start_coordinator_verification(producer_id, epoch)
    }

    /// Forgets a verification whose offsets will not be written.
    pub fn cancel_verification(&self, guard: VerificationGuard) {
        self.partition.cancel_verification(guard);
    }

    /// The shard's partition of `__consumer_offsets`.
    pub fn partition_id(&self) -> PartitionId {
        self.index
    }

    /// Notes that `group` staged offsets of producer `producer_id`'s transaction.
    pub fn staged(&self, producer_id: i64, group: &str) {
        self.txns
            .lock()
            .expect("txns lock")
            .producers
            .entry(producer_id)
            .or_default()
            .insert(group.to_owned());
    }

    /// A transaction's marker reached the partition: its staged offsets are applied or
    /// dropped in every group that has some (or later, if the shard is still loading).
    async fn end_txn(&self, end: TxnEnd) {
        let groups = {
            let mut txns = self.txns.lock().expect("txns lock");
            if !txns.loaded {
                txns.early.push(end);
                return;
            }
            txns.producers.remove(&end.producer_id).unwrap_or_default()
        };
        for id in groups {
            let Some(group) = self.group(&id, false) else {
                continue;
            };
            let remain = group
                .lock()
                .await
                .end_txn(end.producer_id, end.commit, end.marker_offset);
            if remain {
                self.staged(end.producer_id, &id);
            }
        }
    }

    /// Waits until the ISR has a write; returns the offset of its first record.
    pub async fn replicated(&self, pending: PendingAppend) -> Result<Offset, ApiError> {
        self.partition
            .complete(pending, WRITE_TIMEOUT)
            .await
            .map(|info| info.base_offset)
            .map_err(coordinator_error)
    }
}

/// Every `__consumer_offsets` partition this broker coordinates.
pub struct GroupCoordinator {
    node_id: BrokerId,
    timings: GroupTimings,
    shards: Mutex<BTreeMap<PartitionId, Arc<Shard>>>,
}

impl GroupCoordinator {
    pub fn new(node_id: BrokerId, timings: GroupTimings) -> GroupCoordinator {
        GroupCoordinator {
            node_id,
            timings,
            shards: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn timings(&self) -> GroupTimings {
        self.timings
    }

    /// The loaded shard that coordinates `group`, or the error that sends the client to
    /// find the coordinator again (or to wait for the load).
    pub fn shard_for(&self, image: &MetadataImage, group: &str) -> Result<Arc<Shard>, ApiError> {
        let Some(topic) = image.topics.get(OFFSETS_TOPIC) else {
            return Err(ApiError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC} does not exist yet; send FindCoordinator first"),
            ));
        };
        let index =
            sluice_protocol::group_log::coordinator_partition(group, topic.partitions.len() as u32);
        let shard = self
            .shards
            .lock()
            .expect("shards lock")
            .get(&index)
            .cloned();
        match shard {
            Some(shard) if shard.loaded.load(Ordering::Acquire) => Ok(shard),
            Some(_) => Err(ApiError::new(
                ErrorCode::CoordinatorLoadInProgress,
                format!(
                    "broker {} is loading the groups of {OFFSETS_TOPIC}-{}; retry shortly",
                    self.node_id, index.0
                ),
            )),
            None => Err(ApiError::new(
                ErrorCode::NotCoordinator,
                format!(
                    "broker {} is not the coordinator of group {group:?} (the leader of \
                     {OFFSETS_TOPIC}-{} is); find the coordinator again",
                    self.node_id, index.0
                ),
            )),
        }
    }

    /// Every loaded shard.
    pub fn loaded_shards(&self) -> Vec<Arc<Shard>> {
        self.shards
            .lock()
            .expect("shards lock")
            .values()
            .filter(|s| s.loaded.load(Ordering::Acquire))
            .cloned()
            .collect()
    }

    /// Follows leadership of `__consumer_offsets`: loads the partitions this broker now
    /// leads (or leads with a new epoch), drops the others. Call after the replicas took
    /// their roles from `image`; `partition` finds the local replica.
    pub fn on_image(
        self: &Arc<Self>,
        image: &Arc<MetadataImage>,
        partition: impl Fn(PartitionId) -> Option<Arc<Partition>>,
    ) {
        let (led, topic_id) = led_partitions(image, OFFSETS_TOPIC, self.node_id, &partition);
        let mut shards = self.shards.lock().expect("shards lock");
        shards.retain(|index, shard| {
            let keep =
                led.get(index) == Some(&shard.leader_epoch) && topic_id == Some(shard.topic_id);
            if !keep {
                tracing::info!(
                    "no longer the group coordinator of {OFFSETS_TOPIC}-{}",
                    index.0
                );
                tokio::spawn(unload(Arc::clone(shard)));
            }
            keep
        });
        for (index, leader_epoch) in led {
            if shards.contains_key(&index) {
                continue;
            }
            let Some(replica) = partition(index) else {
                continue;
            };
            let shard = Arc::new(Shard {
                index,
                leader_epoch,
                topic_id: topic_id.expect("a led partition has a topic"),
                partition: replica,
                loaded: AtomicBool::new(false),
                groups: Mutex::new(HashMap::new()),
                txns: Mutex::new(ShardTxns::default()),
            });
            shards.insert(index, Arc::clone(&shard));
            tokio::spawn(load(shard, Arc::clone(image)));
        }
    }

    /// A transaction's marker was written (and replicated) to `__consumer_offsets`
    /// partition `index` led here: the offsets the transaction staged there are applied or
    /// dropped. A shard not made yet replays the marker when it loads.
    pub async fn end_txn(&self, index: PartitionId, end: TxnEnd) {
        let shard = self
            .shards
            .lock()
            .expect("shards lock")
            .get(&index)
            .cloned();
        if let Some(shard) = shard {
            shard.end_txn(end).await;
        }
    }

    /// Drops every shard (shutdown, once connections are drained): held joins are answered
    /// NOT_COORDINATOR, and the shards' `__consumer_offsets` partitions are let go, so the
    /// logs close cleanly after.
    pub async fn unload_all(&self) {
        let shards = std::mem::take(&mut *self.shards.lock().expect("shards lock"));
        for shard in shards.into_values() {
            unload(shard).await;
        }
    }

    /// The periodic work: expired sessions, finished join phases, topic changes. Ends when
    /// `stopping` turns true.
    pub async fn run(
        self: Arc<Self>,
        image: impl Fn() -> Arc<MetadataImage>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let image = image();
            for shard in self.loaded_shards() {
                for group in shard.groups() {
                    let done = {
                        let mut g = group.lock().await;
                        let done = g.tick(Instant::now(), &|t| partition_count(&image, t));
                        if !done && g.is_forgettable() && g.state() == group::GroupState::Empty {
                            shard.forget(g.id());
                        }
                        done
                    };
                    if done {
                        tokio::spawn(complete_rebalance(
                            Arc::clone(&shard),
                            group,
                            Arc::clone(&image),
                        ));
                    }
                }
            }
        }
    }
}

/// The partitions of the internal topic `name` that `node_id` leads in `image` and whose
/// local replica (`partition`) has taken the leadership (it holds one back until this
/// broker's registration; see `topics::assignment`), with their leader epochs; and the
/// topic's id. What a coordinator's shards follow (groups here, transactions in
/// `crate::txn::coordinator`).
pub(crate) fn led_partitions(
    image: &MetadataImage,
    name: &str,
    node_id: BrokerId,
    partition: &dyn Fn(PartitionId) -> Option<Arc<Partition>>,
) -> (BTreeMap<PartitionId, LeaderEpoch>, Option<u64>) {
    let topic = image.topics.get(name);
    let led = topic
        .map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.leader == node_id)
                .filter(|p| partition(p.index).is_some_and(|r| r.role() == Role::Leader))
                .map(|p| (p.index, p.leader_epoch))
                .collect()
        })
        .unwrap_or_default();
    (led, topic.map(|t| t.id))
}

/// Ends a group's join phase: writes the new generation, then answers the held joins.
pub async fn complete_rebalance(shard: Arc<Shard>, group: GroupRef, image: Arc<MetadataImage>) {
    let mut g = group.lock().await;
    if !g.join_phase_done(Instant::now()) {
        return;
    }
    // Client-side assignment: the joins are answered, the leader's SyncGroup writes.
    let Some(value) = g.complete_join(Instant::now(), &|t| partition_count(&image, t)) else {
        return;
    };
    write_generation(&shard, &group, g, value).await;
}

/// Writes a generation (`value`, from the group locked in `g`), then tells the group how
/// the write went so it answers the held joins or syncs. The lock is released while the
/// record replicates.
pub async fn write_generation(
    shard: &Shard,
    group: &GroupRef,
    g: tokio::sync::MutexGuard<'_, Group>,
    value: GroupValue,
) {
    let generation = value.generation;
    let key = GroupLogKey::Group(g.id().to_owned());
    let written = match encode_group_value(&value) {
        Ok(bytes) => shard.write(vec![(key, Some(bytes))]).await,
        Err(e) => Err(encoding_failed(&e)),
    };
    drop(g);
    let outcome = match written {
        Ok(pending) => shard.replicated(pending).await.map(|_| ()),
        Err(e) => Err(e),
    };
    group
        .lock()
        .await
        .written(generation, outcome, Instant::now());
}

/// A topic's partition count in `image`.
pub fn partition_count(image: &MetadataImage, topic: &str) -> Option<u32> {
    image.topics.get(topic).map(|t| t.partitions.len() as u32)
}

/// Rebuilds a shard's groups from its partition, from the log start to the log end (the
/// leader's log is the truth; records past the HW are committed once the ISR catches up,
/// or this broker stops leading and the shard is dropped).
async fn load(shard: Arc<Shard>, image: Arc<MetadataImage>) {
    let started = Instant::now();
    let replica = Arc::clone(&shard.partition);
    let loaded = tokio::task::spawn_blocking(move || replay(&replica, &image)).await;
    match loaded {
        Ok(Ok((groups, producers))) => {
            let n = groups.len();
            *shard.groups.lock().expect("groups lock") = groups
                .into_iter()
                .map(|(id, g)| (id, Arc::new(tokio::sync::Mutex::new(g))))
                .collect();
            let early = {
                let mut txns = shard.txns.lock().expect("txns lock");
                txns.producers = producers;
                txns.loaded = true;
                std::mem::take(&mut txns.early)
            };
            for end in early {
                shard.end_txn(end).await;
            }
            shard.loaded.store(true, Ordering::Release);
            tracing::info!(
                "coordinating {n} group(s) of {OFFSETS_TOPIC}-{} (loaded in {:?})",
                shard.index.0,
                started.elapsed()
            );
        }
        Ok(Err(e)) => tracing::error!(
            "cannot load the groups of {OFFSETS_TOPIC}-{}: {e}; they stay unavailable on this \
             broker until its leadership changes",
            shard.index.0
        ),
        Err(e) => tracing::error!("loading {OFFSETS_TOPIC}-{} failed: {e}", shard.index.0),
    }
}

/// Groups replayed from a partition, and which of them hold offsets of which producers'
/// undecided transactions.
type Replayed = (HashMap<String, Group>, HashMap<i64, BTreeSet<String>>);

/// Replays a partition's records into groups. A record that does not decode is skipped
/// with a warning: one damaged commit must not hide every other group. Offsets written in
/// a transaction are staged until its marker, then applied or dropped.
fn replay(replica: &Partition, image: &MetadataImage) -> Result<Replayed, String> {
    let now = Instant::now();
    let partitions_of = |t: &str| partition_count(image, t);
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut producers: HashMap<i64, BTreeSet<String>> = HashMap::new();
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
            let header = *batch.header();
            if header.is_control() {
                replay_marker(&mut groups, &mut producers, &batch);
                continue;
            }
            let txn = header.is_transactional().then_some(header.producer_id);
            let records = match batch.records() {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!("skipping a batch of {OFFSETS_TOPIC}: {e}");
                    continue;
                }
            };
            for record in records {
                match record {
                    Ok(record) => {
                        let staged = apply_record(&mut groups, record, now, txn, &partitions_of);
                        if let (Some(producer_id), Some(group)) = (txn, staged) {
                            producers.entry(producer_id).or_default().insert(group);
                        }
                    }
                    Err(e) => tracing::warn!("skipping a record of {OFFSETS_TOPIC}: {e}"),
                }
            }
        }
    }
    groups.retain(|_, g| !g.is_forgettable());
    Ok((groups, producers))
}

/// A transaction marker met in a replay: the producer's staged offsets before it are
/// applied (commit) or dropped (abort).
fn replay_marker(
    groups: &mut HashMap<String, Group>,
    producers: &mut HashMap<i64, BTreeSet<String>>,
    batch: &RecordBatch,
) {
    let header = batch.header();
    let marker = match ControlMarker::of(batch) {
        Ok(marker) => marker,
        Err(e) => {
            tracing::warn!(
                "skipping a control batch of {OFFSETS_TOPIC} at {}: {e}",
                header.base_offset
            );
            return;
        }
    };
    let Some(staged_in) = producers.remove(&header.producer_id) else {
        return;
    };
    let commit = marker.kind == ControlType::Commit;
    for id in staged_in {
        let Some(group) = groups.get_mut(&id) else {
            continue;
        };
        if group.end_txn(header.producer_id, commit, header.base_offset) {
            producers.entry(header.producer_id).or_default().insert(id);
        }
    }
}

/// Applies one record to its group; offsets of transaction `txn` (a producer id) are
/// staged instead, and the group's id returned.
fn apply_record(
    groups: &mut HashMap<String, Group>,
    record: sluice_protocol::batch::Record,
    now: Instant,
    txn: Option<i64>,
    partitions_of: &dyn Fn(&str) -> Option<u32>,
) -> Option<String> {
    let key = record.key?;
    let key = match GroupLogKey::decode(key) {
        Ok(key) => key,
        Err(e) => {
            tracing::warn!(
                "skipping a record of {OFFSETS_TOPIC} at {}: {e}",
                record.offset
            );
            return None;
        }
    };
    let group = groups
        .entry(key.group().to_owned())
        .or_insert_with(|| Group::new(key.group()));
    match key {
        GroupLogKey::Offset(OffsetKey {
            topic, partition, ..
        }) => {
            let value = match record.value.map(decode_value::<OffsetValue>).transpose() {
                Ok(value) => value,
                Err(e) => {
                    tracing::warn!("skipping an offset record at {}: {e}", record.offset);
                    return None;
                }
            };
            match (txn, value) {
                (Some(producer_id), Some(value)) => {
                    group.stage_txn_offset(producer_id, topic, partition, value, record.offset);
                    return Some(group.id().to_owned());
                }
                // A transaction writes no tombstones.
                (Some(_), None) => {}
                (None, value) => group.apply_offset(topic, partition, value, record.offset),
            }
        }
        GroupLogKey::Group(_) => match record.value.map(decode_group_value).transpose() {
            Ok(Some(value)) => group.load(value, now, partitions_of),
            Ok(None) => group.unload_members(),
            Err(e) => tracing::warn!("skipping a group record at {}: {e}", record.offset),
        },
    }
    None
}

/// Drops a shard: every group is answered NOT_COORDINATOR from now on.
async fn unload(shard: Arc<Shard>) {
    shard.loaded.store(false, Ordering::Release);
    let why = ApiError::new(
        ErrorCode::NotCoordinator,
        format!(
            "this broker no longer leads {OFFSETS_TOPIC}-{}; find the coordinator again",
            shard.index.0
        ),
    );
    let groups = std::mem::take(&mut *shard.groups.lock().expect("groups lock"));
    for group in groups.into_values() {
        group.lock().await.kill(&why);
    }
}

/// What a client should do when a write to `__consumer_offsets` fails (Kafka's mapping):
/// leadership moved → find the coordinator again; the ISR is short or slow → retry later.
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
    ApiError::new(code, format!("writing to {OFFSETS_TOPIC}: {}", e.message))
}

fn encoding_failed(e: &sluice_protocol::Error) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownServerError,
        format!("encoding a {OFFSETS_TOPIC} record: {e}"),
    )
}
