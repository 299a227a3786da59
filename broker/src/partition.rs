//! One partition replica on this broker: its log, its role (leader or follower) and leader
//! epoch, the leader's view of its followers and ISR, the high watermark, and the service
//! operations on it (append, read, offset lookups, replica fetch). This layer knows nothing
//! of the wire: handlers translate requests into these calls.
//!
//! The high watermark (HW) is the end of what consumers may see (DESIGN §6). On the leader
//! it is the minimum over the ISR of each member's durable log end: its own (under `fsync`
//! the flushed offset, so a consumer never sees a record a crash could take back; under
//! `replicated` the log end) and each follower's fetch offset, which a follower only
//! advances past what it has flushed. A follower takes the leader's HW, capped by its own
//! log end. The HW only moves forward; long-polling fetches and acks=all produces wait on
//! `hw_advanced`.
//!
//! ISR changes are proposed here ([`Partition::isr_expansion`], [`Partition::isr_shrink`])
//! and committed by the controller; until the controller answers, the HW is computed over
//! the larger of the two sets (Kafka's KIP-497 "maximal ISR"), so an acks=all append is
//! never acknowledged on fewer replicas than the committed ISR.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicU16, AtomicU32, AtomicU64, Ordering,
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{
    peek_total_len, set_log_append_time, BatchHeader, Compression, RecordBatch,
};
use sluice_protocol::compression::MAX_DECOMPRESSED_BYTES;
use sluice_protocol::messages::{IsolationLevel, ReplicaFetchPartition};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId, Records};
use sluice_storage::{
    AppendInfo, CleanReport, Clock, Durability, DurableTicket, LogConfig, SharedLog, StorageError,
    SystemClock, Throttle,
};
use tokio::sync::Notify;

use crate::error::ApiError;
use crate::producer_state::{
    self, ActiveProducer, ProducerStates, Stamp, Verdict, VerificationGuard,
};

pub use sluice_protocol::Acks;

/// The acks of a produce request's wire value, or INVALID_REQUIRED_ACKS.
pub fn parse_acks(acks: i16) -> Result<Acks, ApiError> {
    Acks::from_wire(acks).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequiredAcks,
            format!("acks must be 0, 1 or -1 (all), not {acks}"),
        )
    })
}

/// Who appends: a producer (every check), or a coordinator writing its own state in the
/// leader epoch it loaded it in ([`Partition::append_as_coordinator`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Client,
    Coordinator(LeaderEpoch),
}

/// An append written to the log and not yet acknowledged.
#[derive(Debug)]
pub struct PendingAppend {
    /// Where the batches went.
    pub info: AppendInfo,
    /// The log start offset just after the append (for the produce response).
    pub log_start_offset: Offset,
    /// The batches were an idempotent producer's resend of batches already in the log:
    /// nothing was written, `info` holds the original offsets.
    pub duplicate: bool,
    ticket: DurableTicket,
    acks: Acks,
    /// The leader epoch the batches were written in: if it changes before the HW covers
    /// them, this leader can no longer acknowledge them.
    leader_epoch: LeaderEpoch,
}

/// What a producer's append did.
#[derive(Debug)]
pub enum Append {
    /// The batches are in the log (or were already: a resend).
    Written(PendingAppend),
    /// Nothing was written: the batch would begin its producer's transaction here, which
    /// needs the transaction coordinator's word first.
    Unverified(Unverified),
}

/// A transactional batch held back until the transaction coordinator confirms its
/// partition is in the producer's ongoing transaction (KIP-890). Append it with
/// [`Partition::append_verified`] once it has, or drop it with
/// [`Partition::cancel_verification`].
#[derive(Debug)]
pub struct Unverified {
    /// The leader's guard for the producer, in place until a marker for it is written.
    pub guard: VerificationGuard,
    /// The batch.
    pub records: Bytes,
}

/// What a read returns: whole batches and where the partition stands.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Whole RecordBatch v2 batches below the HW (read_committed: below the LSO), possibly
    /// empty.
    pub records: Records,
    /// The last batch's last offset, when there is a batch.
    pub last_offset: Option<Offset>,
    /// The HW when the read was made.
    pub high_watermark: Offset,
    /// The last stable offset when the read was made (at most the HW).
    pub last_stable_offset: Offset,
    /// The first offset still in the log.
    pub log_start_offset: Offset,
    /// read_committed: the aborted transactions (producer id, first offset) with records
    /// in `records`; empty otherwise.
    pub aborted: Vec<(i64, Offset)>,
}

/// What a replica fetch returns to a follower.
#[derive(Clone, Debug)]
pub struct ReplicaRead {
    /// Whole batches from the follower's fetch offset up to the leader's log end.
    pub records: Records,
    /// The leader's HW.
    pub high_watermark: Offset,
    /// The leader's log start offset.
    pub log_start_offset: Offset,
    /// Set when the follower's log diverged: the largest epoch the leader has at or below
    /// the follower's last fetched epoch, and where it ends in the leader's log.
    pub diverging: Option<(LeaderEpoch, Offset)>,
}

/// Which run of a follower broker a replica fetch comes from, by the broker epoch it
/// carries and the registration the leader's metadata holds (KIP-380). A fetch from an
/// older run is refused before it gets here (STALE_BROKER_EPOCH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowerIncarnation {
    /// The run the leader's metadata has registered: its fetch offset is its durable log
    /// end, and counts toward the HW and the ISR.
    Registered,
    /// A run the leader's metadata does not know yet (a newer registration the leader has
    /// not applied, or none yet): served, so it keeps replicating, but not counted,
    /// because the leader cannot tell it from an older run whose log may be gone.
    Unconfirmed,
}

/// This replica's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It takes appends and serves reads.
    Leader,
    /// It copies from `leader` (-1: no leader is known; the partition is offline).
    Follower {
        /// The leader it fetches from.
        leader: BrokerId,
    },
}

/// What a follower's next replica fetch of a partition carries (see
/// [`Partition::follower_fetch_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerFetchState {
    /// The log end, all of it durable (the fetcher awaits its fsyncs before it fetches
    /// again): the first offset wanted, and what the leader counts toward the HW.
    pub fetch_offset: Offset,
    /// The epoch of the last batch, to detect divergence, or -1.
    pub last_fetched_epoch: LeaderEpoch,
    /// The log start.
    pub log_start_offset: Offset,
    /// The leader epoch this replica knows.
    pub leader_epoch: LeaderEpoch,
}

/// What the leader knows of one follower.
#[derive(Clone, Copy, Debug)]
struct FollowerProgress {
    /// The follower's durable log end, from its last fetch; -1 until it fetches.
    log_end: Offset,
    /// When the follower last had everything the leader had (Kafka's lastCaughtUpTime).
    caught_up_at: Instant,
    /// The leader's log end at the follower's previous fetch, and that fetch's time.
    previous_fetch: (Offset, Instant),
    /// The follower's log start, from its last fetch; -1 until it fetches.
    log_start: Offset,
}

impl FollowerProgress {
    /// A follower not heard from yet, as of `now` with the leader's log ending at `log_end`.
    fn unknown(log_end: Offset, now: Instant) -> FollowerProgress {
        FollowerProgress {
            log_end: Offset(-1),
            caught_up_at: now,
            previous_fetch: (log_end, now),
            log_start: Offset(-1),
        }
    }
}

/// The replication state, under one lock.
#[derive(Debug)]
struct ReplicaState {
    role: Role,
    /// Every assigned replica, this one included.
    replicas: Vec<BrokerId>,
    /// The committed ISR.
    isr: Vec<BrokerId>,
    /// The version of leader + ISR the controller last committed.
    partition_epoch: i32,
    /// Leader only: every other replica's progress.
    followers: BTreeMap<BrokerId, FollowerProgress>,
    /// Leader only: the ISR change sent to the controller and not yet answered.
    pending_isr: Option<Vec<BrokerId>>,
    /// Leader only: the log end when this replica became leader, the first offset of its
    /// epoch. Until the HW reaches it, offsets below the old leader's HW may be missing
    /// from this one's HW, so "latest" is not answered (OFFSET_NOT_AVAILABLE).
    epoch_start_offset: Offset,
}

/// A proposed ISR change for the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    /// The leader epoch it is made in.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch it is based on.
    pub partition_epoch: i32,
    /// The new ISR.
    pub new_isr: Vec<BrokerId>,
}

/// The assignment and leadership of a partition, as the metadata image says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The leader, or -1.
    pub leader: BrokerId,
    /// Its epoch.
    pub leader_epoch: LeaderEpoch,
    /// The version of leader + ISR.
    pub partition_epoch: i32,
    /// Every replica.
    pub replicas: Vec<BrokerId>,
    /// The ISR.
    pub isr: Vec<BrokerId>,
}

/// A partition replica on this broker.
///
/// **Lock order:** `producers`, then `state`, then the log's lock (and storage's flush
/// state inside it); a method that holds one of them takes only those after it, and none
/// is held across an await. The log's guards never leave this type (maintenance runs
/// through [`Partition::checkpoint`], [`Partition::apply_retention`] and
/// [`Partition::background_flush`]), so the order is checked here alone.
///
/// **Invariants** (asserted where they change, in debug builds): the high watermark only
/// grows, except when a follower's log is truncated ([`Partition::truncate_diverging`],
/// [`Partition::restart_at`]), which lowers it explicitly; it never passes the log end; a
/// leader is a member of its own ISR.
pub struct Partition {
    topic: Arc<str>,
    index: PartitionId,
    /// This broker.
    node_id: BrokerId,
    /// The log. Appends, durability waits and maintenance happen on blocking threads.
    log: Arc<SharedLog>,
    leader_epoch: AtomicI32,
    /// Offsets below this are visible to consumers. Only grows (`fetch_max`).
    high_watermark: AtomicI64,
    /// Woken whenever the HW advances, the role changes, or the partition is deleted or
    /// goes offline: long-polling fetches and acks=all produces wait on it.
    hw_advanced: Notify,
    /// Woken when the leader appends: followers' replica fetches long-poll on it.
    appended: Notify,
    durability: Durability,
    /// Bytes appended since the last flush this partition asked for (`replicated`
    /// durability: see [`Partition::start_flush`]).
    unflushed_bytes: AtomicU64,
    /// Smallest ISR that acks=all accepts (`min.insync.replicas`; a topic's config may be
    /// altered while it serves).
    min_insync_replicas: AtomicU16,
    /// Role, ISR and followers' progress. Taken after `producers`, before the log's lock.
    state: Mutex<ReplicaState>,
    /// Idempotent producers' sequences. Held across appends and truncations (first in the
    /// lock order), so the state always matches the log.
    producers: Mutex<ProducerStates>,
    /// Cleaner swaps waiting to let the aborted transactions they cleaned away be
    /// forgotten: when ([`CLEANED_ABORTS_DELAY`] after the swap) and below which offset.
    /// Taken alone.
    cleaned_aborts: Mutex<Vec<(Instant, Offset)>>,
    /// After failed cleaner runs: not before when, and the last wait (see
    /// [`Partition::clean_log`]). Taken alone.
    cleaner_backoff: Mutex<Option<(Instant, Duration)>>,
    /// At most the first offset of an open transaction, or of one whose marker the HW
    /// does not cover yet (`i64::MAX`: none): the last stable offset is the HW unless
    /// this is below it. Set under `producers` (lowered before a transaction's first batch
    /// is written, so the HW can never pass it unseen); may lag above-HW pruning, which
    /// [`Partition::last_stable_offset`] does.
    first_unstable: AtomicI64,
    /// The topic's `cleanup.policy` compacts: produced records must have a key.
    compacted: AtomicBool,
    /// The topic's `message.timestamp.after.max.ms`: how far ahead of this broker's clock a
    /// produced batch may be timestamped.
    timestamp_ahead_max_ms: AtomicI64,
    /// The topic's `message.timestamp.before.max.ms`: how far behind this broker's clock a
    /// produced record may be timestamped (`i64::MAX`: any).
    timestamp_behind_max_ms: AtomicI64,
    /// The topic's `message.timestamp.type` is LogAppendTime: produced batches take this
    /// broker's clock.
    log_append_time: AtomicBool,
    /// The topic's `max.message.bytes`: the largest batch a producer may append.
    max_message_bytes: AtomicU32,
    /// Set when the topic is deleted: every later operation fails, maintenance skips it.
    deleted: AtomicBool,
    /// Set (with `deleted`) when a reassignment moved this replica to other brokers: the
    /// partition lives on there, so requests here are NOT_LEADER_OR_FOLLOWER.
    moved: AtomicBool,
    /// Why the partition was taken offline (a failed background fsync), if it was.
    offline: std::sync::OnceLock<String>,
}

impl Partition {
    /// Wraps an opened log as a replica in `assignment`'s role.
    pub fn new(
        topic: Arc<str>,
        index: PartitionId,
        node_id: BrokerId,
        log: SharedLog,
        assignment: &Assignment,
        min_insync_replicas: u16,
    ) -> Partition {
        let (end, checkpointed, config) = {
            let guard = log.read();
            (
                guard.log_end_offset(),
                guard.checkpointed_high_watermark(),
                guard.config().clone(),
            )
        };
        let producers = ProducerStates::rebuild(&log);
        let first_unstable = AtomicI64::new(producers.unstable_bound());
        let partition = Partition {
            topic,
            index,
            node_id,
            log: Arc::new(log),
            leader_epoch: AtomicI32::new(-1),
            // With one replica, recovery kept only what the files hold, so everything in
            // the log is visible. With several, the HW checkpointed before the stop (what
            // was committed then; storage capped it at the log end recovery kept, and a
            // truncation since lowered it): a leader serves up to it at once and the ISR
            // moves it on, a follower takes its leader's. Without a checkpoint it is the
            // log start.
            high_watermark: AtomicI64::new(if assignment.replicas.len() <= 1 {
                end.0
            } else {
                checkpointed.0
            }),
            hw_advanced: Notify::new(),
            appended: Notify::new(),
            durability: config.durability,
            unflushed_bytes: AtomicU64::new(0),
            min_insync_replicas: AtomicU16::new(min_insync_replicas),
            state: Mutex::new(ReplicaState {
                role: Role::Follower {
                    leader: BrokerId(-1),
                },
                replicas: Vec::new(),
                isr: Vec::new(),
                partition_epoch: -1,
                followers: BTreeMap::new(),
                pending_isr: None,
                epoch_start_offset: Offset(0),
            }),
            producers: Mutex::new(producers),
            cleaned_aborts: Mutex::new(Vec::new()),
            cleaner_backoff: Mutex::new(None),
            first_unstable,
            compacted: AtomicBool::new(config.cleanup_policy.compacts()),
            timestamp_ahead_max_ms: AtomicI64::new(config.message_timestamp_after_max_ms),
            timestamp_behind_max_ms: AtomicI64::new(config.message_timestamp_before_max_ms),
            log_append_time: AtomicBool::new(config.log_append_time),
            max_message_bytes: AtomicU32::new(config.max_message_bytes),
            deleted: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            offline: std::sync::OnceLock::new(),
        };
        partition.apply_assignment(assignment);
        partition
    }

    /// `topic-partition`, for logs and errors.
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index.0)
    }

    /// The topic's name.
    pub fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// The partition's index.
    pub fn index(&self) -> PartitionId {
        self.index
    }

    /// The current leader epoch.
    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.leader_epoch.load(Ordering::Acquire))
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.high_watermark.load(Ordering::Acquire))
    }

    /// The first offset in the log.
    pub fn log_start_offset(&self) -> Offset {
        self.log.read().log_start_offset()
    }

    /// The bytes of the log's segments.
    pub fn size_bytes(&self) -> u64 {
        self.log.read().size_bytes()
    }

    /// The offset the next append gets.
    pub fn log_end_offset(&self) -> Offset {
        self.log.read().log_end_offset()
    }

    /// The shared log, for maintenance (retention, checkpoints, flushing, shutdown).
    pub(crate) fn log(&self) -> &Arc<SharedLog> {
        &self.log
    }

    /// The log, once the partition is no longer shared (clean shutdown).
    pub fn into_log(self) -> Arc<SharedLog> {
        self.log
    }

    /// This replica's role.
    pub fn role(&self) -> Role {
        self.state().role
    }

    /// The committed ISR as this replica knows it.
    pub fn isr(&self) -> Vec<BrokerId> {
        self.state().isr.clone()
    }

    /// Leader: follower `follower`'s durable log end as its last counted fetch said (-1
    /// before any); `None` when this replica does not lead or `follower` is no replica.
    pub fn follower_log_end(&self, follower: BrokerId) -> Option<Offset> {
        let state = self.state();
        if state.role != Role::Leader {
            return None;
        }
        state.followers.get(&follower).map(|f| f.log_end)
    }

    fn state(&self) -> MutexGuard<'_, ReplicaState> {
        self.state.lock().expect("replica state poisoned")
    }

    /// Whether the topic was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Marks the partition deleted and retires its log: waits for operations holding the
    /// log, and every later one fails (storage checks under the log lock), so nothing
    /// writes into the directory after this returns. Blocking.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.log.retire();
        self.wake_all();
    }

    /// [`Partition::mark_deleted`] for a replica a reassignment moved to other brokers.
    pub fn mark_moved(&self) {
        self.moved.store(true, Ordering::Release);
        self.mark_deleted();
    }

    fn wake_all(&self) {
        self.hw_advanced.notify_waiters();
        self.appended.notify_waiters();
    }

    fn check_live(&self) -> Result<(), ApiError> {
        if self.moved.load(Ordering::Acquire) {
            return Err(ApiError::new(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "{} moved to other brokers; refresh metadata and retry there",
                    self.name()
                ),
            ));
        }
        if self.is_deleted() {
            return Err(ApiError::unknown_topic(&self.topic));
        }
        if let Some(why) = self.offline_reason() {
            return Err(ApiError::new(
                ErrorCode::KafkaStorageError,
                format!(
                    "{} is offline: {why}; check the disk and the broker's log, then restart \
                     the broker",
                    self.name()
                ),
            ));
        }
        Ok(())
    }

    /// Why the partition is offline, if it is. Under `replicated` durability a failed
    /// fsync in the background (run by a flusher thread, or by the periodic flush) takes
    /// it offline here, at the first operation that looks.
    fn offline_reason(&self) -> Option<&str> {
        if self.offline.get().is_none() && matches!(self.durability, Durability::Replicated { .. })
        {
            if let Some(why) = self.log.fsync_failure() {
                self.take_offline(format!("a background fsync failed: {why}"));
            }
        }
        self.offline.get().map(String::as_str)
    }

    /// Takes the partition offline until the broker restarts. Under `replicated`
    /// durability a failed background fsync cuts the log below what consumers may already
    /// have seen (the HW), so serving on would hand out one offset twice with different
    /// records; Kafka takes the whole log directory offline for the same reason.
    pub fn take_offline(&self, why: String) {
        if self.offline.set(why.clone()).is_ok() {
            tracing::error!(partition = %self.name(), "taking the partition offline: {why}");
            self.wake_all();
        }
    }

    /// Takes the role the metadata image gives this replica. A new leader epoch makes it
    /// leader (tracking every follower afresh, its epoch starting at its log end) or
    /// follower of the new leader; the same epoch with a newer partition epoch only updates
    /// the ISR. Waiters wake up to re-check their leader (acks=all produces fail with
    /// NOT_LEADER_OR_FOLLOWER once this replica no longer leads).
    pub fn apply_assignment(&self, assignment: &Assignment) {
        let mut state = self.state();
        let ours = self.leader_epoch();
        let newer_epoch = assignment.leader_epoch > ours;
        let same_epoch = assignment.leader_epoch == ours;
        let newer_isr = same_epoch && assignment.partition_epoch > state.partition_epoch;
        let role = if assignment.leader == self.node_id {
            Role::Leader
        } else {
            Role::Follower {
                leader: assignment.leader,
            }
        };
        // The same epoch with another role: a leadership held back until this broker's
        // registration (see `topics::assignment`) is taken now.
        let new_role = same_epoch && role != state.role;
        // Other replicas at the partition epoch this leader already took from its own
        // AlterPartition's answer (the one that completed a reassignment).
        let moved = same_epoch
            && assignment.partition_epoch >= state.partition_epoch
            && assignment.replicas != state.replicas;
        if !(newer_epoch || newer_isr || new_role || moved) {
            return;
        }
        debug_assert!(
            role != Role::Leader || assignment.isr.contains(&self.node_id),
            "{}: leader {} is not in its ISR {:?}",
            self.name(),
            self.node_id,
            assignment.isr
        );
        state.replicas = assignment.replicas.clone();
        state.isr = assignment.isr.clone();
        state.partition_epoch = assignment.partition_epoch;
        state.pending_isr = None;
        if newer_epoch || role != state.role {
            let now = Instant::now();
            let log_end = self.log_end_offset();
            state.followers = match role {
                Role::Leader => assignment
                    .replicas
                    .iter()
                    .filter(|r| **r != self.node_id)
                    .map(|r| (*r, FollowerProgress::unknown(log_end, now)))
                    .collect(),
                Role::Follower { .. } => BTreeMap::new(),
            };
            state.epoch_start_offset = log_end;
            if role != state.role || newer_epoch {
                tracing::info!(
                    partition = %self.name(),
                    epoch = assignment.leader_epoch.0,
                    "now {}",
                    match role {
                        Role::Leader => "leader".to_string(),
                        // No leader yet: an election is pending, or (after a restart) this
                        // broker's own leaderships wait for its registration to be applied.
                        Role::Follower { leader } if leader == BrokerId::NONE =>
                            "without a leader (one is being elected)".to_string(),
                        Role::Follower { leader } => format!("follower of {leader}"),
                    }
                );
            }
            state.role = role;
        } else if role == Role::Leader {
            // The same leadership over other replicas (a reassignment began or completed):
            // followers added start unknown, followers removed are forgotten.
            let now = Instant::now();
            let log_end = self.log_end_offset();
            let node = self.node_id;
            state
                .followers
                .retain(|id, _| assignment.replicas.contains(id));
            for replica in assignment.replicas.iter().filter(|r| **r != node) {
                state
                    .followers
                    .entry(*replica)
                    .or_insert_with(|| FollowerProgress::unknown(log_end, now));
            }
        }
        self.leader_epoch
            .store(assignment.leader_epoch.0, Ordering::Release);
        drop(state);
        self.maybe_advance_high_watermark();
        self.wake_all();
    }

    /// Refuses a request made with another leader epoch than ours (-1: the client does not
    /// know one, accepted).
    pub fn check_leader_epoch(&self, client_epoch: LeaderEpoch) -> Result<(), ApiError> {
        let ours = self.leader_epoch();
        if client_epoch.0 < 0 || client_epoch == ours {
            return Ok(());
        }
        let (code, what) = if client_epoch < ours {
            (ErrorCode::FencedLeaderEpoch, "older")
        } else {
            (ErrorCode::UnknownLeaderEpoch, "newer")
        };
        Err(ApiError::new(
            code,
            format!(
                "{}: leader epoch {} is {what} than this replica's {}; refresh metadata and \
                 retry",
                self.name(),
                client_epoch.0,
                ours.0
            ),
        ))
    }

    /// Refuses unless this replica leads.
    fn check_leader(&self) -> Result<(), ApiError> {
        match self.role() {
            Role::Leader => Ok(()),
            role => Err(self.not_leader(role)),
        }
    }

    fn not_leader(&self, role: Role) -> ApiError {
        match role {
            Role::Follower { leader } if leader.0 >= 0 => ApiError::new(
                ErrorCode::NotLeaderOrFollower,
                format!(
                    "this broker is not the leader of {} (broker {leader} is); refresh \
                     metadata and retry",
                    self.name()
                ),
            ),
            _ => ApiError::new(
                ErrorCode::LeaderNotAvailable,
                format!(
                    "{} has no leader: no in-sync replica is alive; it comes back when one \
                     does",
                    self.name()
                ),
            ),
        }
    }

    /// The ordered phase of an append: checks, then writes the batches to the log (the page
    /// cache) with offsets and this leader's epoch. Blocking: call it from a blocking
    /// thread, in request order, and finish with [`Partition::complete`]. The batches are
    /// validated before any is written, so a request appends all of them or none. A
    /// transactional batch that would begin its producer's transaction here is not written
    /// but returned as [`Append::Unverified`], for the transaction coordinator to confirm.
    pub fn append_now(&self, records: Bytes, acks: Acks) -> Result<Append, ApiError> {
        let appended = self.append_with(records, acks, true, Origin::Client, None)?;
        Ok(appended.expect("a blocking append always appends or fails"))
    }

    /// The append of a batch the transaction coordinator confirmed (see
    /// [`Partition::append_now`]): written only if its guard is still in place, else
    /// refused with NOT_ENOUGH_REPLICAS (retriable: a retry is verified again, and the
    /// coordinator then answers for the transaction as it is now). Blocking.
    pub fn append_verified(
        &self,
        unverified: Unverified,
        acks: Acks,
    ) -> Result<PendingAppend, ApiError> {
        let guard = Some(unverified.guard);
        match self.append_with(unverified.records, acks, true, Origin::Client, guard)? {
            Some(Append::Written(pending)) => Ok(pending),
            _ => Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!(
                    "{}: a verified transactional batch was not appended",
                    self.name()
                ),
            )),
        }
    }

    /// Forgets the guard of a batch that will not be appended (its verification failed).
    pub fn cancel_verification(&self, guard: VerificationGuard) {
        let mut producers = self.producers.lock().expect("producer state lock");
        producers.cancel_verification(guard);
    }

    /// Whether a coordinator's transactional write for producer `producer_id` at `epoch`
    /// (the group coordinator's TxnOffsetCommit) would begin the producer's transaction
    /// here: then the guard under which the transaction coordinator must confirm the
    /// partition is in the transaction (KIP-890), to pass to
    /// [`Partition::append_as_coordinator`]; `None` when the transaction is already open
    /// here. An older epoch than the partition has seen is fenced (INVALID_PRODUCER_EPOCH).
    pub fn start_coordinator_verification(
        &self,
        producer_id: i64,
        epoch: i16,
    ) -> Result<Option<VerificationGuard>, ApiError> {
        let stamp = Stamp::of_coordinator_write(producer_id, epoch);
        let mut producers = self.producers.lock().expect("producer state lock");
        producers.check_coordinator_write(&stamp)?;
        Ok(producers
            .begins_txn(&stamp)
            .then(|| producers.start_verification(&stamp)))
    }

    /// A coordinator's acks=all append to its internal partition (Kafka's
    /// `AppendOrigin.Coordinator`): only while this replica still leads in `leader_epoch`,
    /// the epoch the coordinator loaded its state in. Leadership that moved away and came
    /// back is a new epoch, so a deposed coordinator can never write over the state its
    /// successor (here or elsewhere) built (FENCED_LEADER_EPOCH). A transactional batch
    /// (the group coordinator's TxnOffsetCommit) is checked for its producer epoch only
    /// (its records carry no sequence), and one that begins its producer's transaction
    /// here needs the `guard` of [`Partition::start_coordinator_verification`], still in
    /// place (else NOT_ENOUGH_REPLICAS: the transaction ended meanwhile). Blocking, as
    /// [`Partition::append_now`].
    pub fn append_as_coordinator(
        &self,
        records: Bytes,
        leader_epoch: LeaderEpoch,
        guard: Option<VerificationGuard>,
    ) -> Result<PendingAppend, ApiError> {
        match self.append_with(
            records,
            Acks::All,
            true,
            Origin::Coordinator(leader_epoch),
            guard,
        )? {
            Some(Append::Written(pending)) => Ok(pending),
            _ => Err(ApiError::new(
                ErrorCode::UnknownServerError,
                format!("{}: a coordinator's append was not written", self.name()),
            )),
        }
    }

    /// [`Partition::append_now`] for an async worker: appends only when that is quick (a
    /// small, uncompressed request: [`INLINE_APPEND_BYTES_MAX`]) and the log is free, and
    /// otherwise returns `Ok(None)` having changed nothing, for the caller to append on a
    /// blocking thread. A small request then costs no thread hand-off (two context
    /// switches, more than the page-cache copy itself).
    pub fn try_append_now(&self, records: &Bytes, acks: Acks) -> Result<Option<Append>, ApiError> {
        if !quick_to_append(records) {
            return Ok(None);
        }
        self.append_with(records.clone(), acks, false, Origin::Client, None)
    }

    /// Checks and appends. `guard`: the verification a client's batch that begins its
    /// producer's transaction here went through (with `block`, so a guard taken is never
    /// followed by a busy log).
    fn append_with(
        &self,
        records: Bytes,
        acks: Acks,
        block: bool,
        origin: Origin,
        guard: Option<VerificationGuard>,
    ) -> Result<Option<Append>, ApiError> {
        self.check_live()?;
        let epoch = {
            let state = self.state();
            if state.role != Role::Leader {
                return Err(self.not_leader(state.role));
            }
            if let Origin::Coordinator(loaded) = origin {
                if self.leader_epoch() != loaded {
                    return Err(ApiError::new(
                        ErrorCode::FencedLeaderEpoch,
                        format!(
                            "{}: its coordinator was loaded in leader epoch {}, and the \
                             partition is in epoch {} now",
                            self.name(),
                            loaded.0,
                            self.leader_epoch().0
                        ),
                    ));
                }
            }
            if acks == Acks::All && state.isr.len() < usize::from(self.min_insync_replicas()) {
                return Err(self.not_enough_replicas(ErrorCode::NotEnoughReplicas, &state.isr));
            }
            self.leader_epoch()
        };
        let bytes = records.len() as u64;
        let mut batches = split_batches(records)?;
        if origin == Origin::Client {
            self.check_batch_sizes(&batches)?;
            if self.log_append_time() {
                // Kafka ignores the producer's timestamps under LogAppendTime: no bounds. The
                // stamp recomputes the CRC, so the producer's is checked first (storage's
                // check would pass a batch damaged on the way).
                let now = SystemClock.now_ms();
                batches = batches
                    .into_iter()
                    .map(|batch| {
                        RecordBatch::validate_produced(batch.clone()).map_err(invalid_batch)?;
                        let mut stamped = BytesMut::from(&batch[..]);
                        set_log_append_time(&mut stamped, now);
                        Ok(stamped.freeze())
                    })
                    .collect::<Result<_, ApiError>>()?;
            } else {
                self.check_timestamps(&batches)?;
            }
        }
        if self.compacted.load(Ordering::Acquire) {
            check_keys(&batches, &self.name())?;
        }
        let stamp = idempotent_stamp(&batches)?;
        let mut producers = self.producers.lock().expect("producer state lock");
        if let Some(stamp) = &stamp {
            let verdict = match origin {
                Origin::Client => producers.check(stamp)?,
                Origin::Coordinator(_) => producers.check_coordinator_write(stamp)?,
            };
            // KIP-890: a batch begins its transaction here only with its coordinator's
            // word, given after the guard was made and before any marker for the
            // producer removed it: a client's batch, and the group coordinator's
            // TxnOffsetCommit (verified before it takes the group's lock).
            let begins =
                verdict == Verdict::Append && stamp.transactional && producers.begins_txn(stamp);
            if begins {
                let Some(guard) = guard else {
                    if origin != Origin::Client {
                        return Err(self.verification_lost(stamp));
                    }
                    let guard = producers.start_verification(stamp);
                    // A transactional request is one batch (`idempotent_stamp`).
                    let records = batches.into_iter().next().unwrap_or_default();
                    return Ok(Some(Append::Unverified(Unverified { guard, records })));
                };
                if !producers.take_verification(guard) {
                    return Err(self.verification_lost(stamp));
                }
            } else if let Some(guard) = guard {
                // Not needed any more: another request of the producer began it.
                producers.cancel_verification(guard);
            }
            if verdict == Verdict::Append && stamp.transactional {
                // A transaction may open here: the LSO must stop at its first offset from
                // before the batch can be read or replicated (appends are serialized by
                // this lock, so that offset is the log end now).
                let log_end = self.log.read().log_end_offset();
                self.first_unstable.fetch_min(log_end.0, Ordering::AcqRel);
            }
            if let Verdict::Duplicate(original) = verdict {
                // A resend of a batch the log has: its original offsets, once durable.
                return Ok(Some(Append::Written(PendingAppend {
                    duplicate: true,
                    log_start_offset: self.log.read().log_start_offset(),
                    info: AppendInfo {
                        base_offset: original.base_offset,
                        last_offset: original.last_offset,
                        max_timestamp: stamp.max_timestamp,
                    },
                    ticket: self.log.ticket_for(original.last_offset.plus(1)),
                    acks,
                    leader_epoch: epoch,
                })));
            }
        }
        let Some((info, ticket)) = self
            .log
            .append_batches_no_wait(batches, epoch, block)
            .map_err(|e| self.append_failed(e))?
        else {
            return Ok(None);
        };
        if let Some(stamp) = &stamp {
            producers.record(
                stamp,
                info.base_offset,
                info.last_offset,
                SystemClock.now_ms(),
            );
            if stamp.transactional {
                self.publish_unstable(&producers);
            }
        }
        drop(producers);
        self.start_flush(bytes);
        self.appended.notify_waiters();
        Ok(Some(Append::Written(PendingAppend {
            duplicate: false,
            log_start_offset: self.log.read().log_start_offset(),
            info,
            ticket,
            acks,
            leader_epoch: epoch,
        })))
    }

    /// The refusal of a verified batch whose guard is gone: a marker for its producer was
    /// written meanwhile, or this replica's producer state was rebuilt (a truncation).
    fn verification_lost(&self, stamp: &Stamp) -> ApiError {
        ApiError::new(
            ErrorCode::NotEnoughReplicas,
            format!(
                "{}: the transaction of producer {} epoch {} ended here (its marker was \
                 written) or this replica's producer state was rebuilt while the batch was \
                 being verified with the transaction coordinator; nothing was written: retry, \
                 and the batch is verified again",
                self.name(),
                stamp.producer_id,
                stamp.epoch
            ),
        )
    }

    /// Starts the disk on an append of `bytes` just made. Under `fsync` durability the
    /// fsync starts now, while the request's task gets to `complete` and awaits it. Under
    /// `replicated` no one waits: the disk follows in the background, one fsync per
    /// [`REPLICATED_FLUSH_SLICE`] appended, so dirty data never piles up into a long fsync
    /// that stalls appends (it did, for 150 ms a second, when only the periodic flush
    /// ran), nor costs an fsync per small append (the periodic flush covers the rest).
    fn start_flush(&self, bytes: u64) {
        if matches!(self.durability, Durability::Replicated { .. }) {
            let before = self.unflushed_bytes.fetch_add(bytes, Ordering::Relaxed);
            if before + bytes < REPLICATED_FLUSH_SLICE {
                return;
            }
            self.unflushed_bytes.store(0, Ordering::Relaxed);
        }
        self.log.request_flush();
    }

    /// Refuses a batch larger than the topic's `max.message.bytes` (MESSAGE_TOO_LARGE, as
    /// Kafka's RecordTooLargeException): nothing of the request is appended.
    fn check_batch_sizes(&self, batches: &[Bytes]) -> Result<(), ApiError> {
        let max = self.max_message_bytes.load(Ordering::Acquire);
        match batches.iter().find(|b| b.len() > max as usize) {
            None => Ok(()),
            Some(batch) => Err(ApiError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "{}: a record batch of {} bytes is larger than the topic's \
                     max.message.bytes ({max}): send smaller batches (or smaller records), or \
                     raise the topic's max.message.bytes",
                    self.name(),
                    batch.len()
                ),
            )),
        }
    }

    /// Whether the topic's `message.timestamp.type` is LogAppendTime: produced batches are
    /// stamped with this broker's clock as they are appended.
    pub fn log_append_time(&self) -> bool {
        self.log_append_time.load(Ordering::Acquire)
    }

    /// Refuses a batch with a record timestamped further from this broker's clock than
    /// the topic allows (INVALID_TIMESTAMP, as Kafka since KIP-937). Ahead:
    /// `message.timestamp.after.max.ms` (1 hour by default), since retention and the
    /// compaction lag go by a segment's newest timestamp, so one record stamped a year
    /// ahead would keep its segment, and every one after it, from both for a year.
    /// Behind: `message.timestamp.before.max.ms` (unbounded by default), since a record
    /// stamped long ago is older than retention keeps and is deleted as soon as its
    /// segment rolls. Broker-set LogAppendTime batches are not the producer's clock.
    fn check_timestamps(&self, batches: &[Bytes]) -> Result<(), ApiError> {
        let ahead_max = self.timestamp_ahead_max_ms.load(Ordering::Acquire);
        let behind_max = self.timestamp_behind_max_ms.load(Ordering::Acquire);
        let now = SystemClock.now_ms();
        for batch in batches {
            let header = BatchHeader::parse(batch).map_err(invalid_batch)?;
            if header.is_log_append_time() {
                continue;
            }
            let ahead = header.max_timestamp.saturating_sub(now);
            if ahead > ahead_max {
                return Err(self.invalid_timestamp(
                    header.max_timestamp,
                    format!("{ahead} ms ahead of"),
                    ahead_max,
                    "message.timestamp.after.max.ms",
                ));
            }
            if behind_max == i64::MAX {
                continue;
            }
            // The oldest record's timestamp: the first one's is the batch's base, but a
            // later one may be older (timestamp deltas are signed), so a topic with the
            // bound set has each record's read (decompressed within the same limit as
            // every other produce check).
            let oldest = if now.saturating_sub(header.base_timestamp) > behind_max {
                header.base_timestamp
            } else {
                let batch = RecordBatch::validate_produced(batch.clone()).map_err(invalid_batch)?;
                let mut oldest = header.base_timestamp;
                for record in batch
                    .records_within(MAX_DECOMPRESSED_BYTES)
                    .map_err(invalid_batch)?
                {
                    oldest = oldest.min(record.map_err(invalid_batch)?.timestamp);
                }
                oldest
            };
            let behind = now.saturating_sub(oldest);
            if behind > behind_max {
                return Err(self.invalid_timestamp(
                    oldest,
                    format!("{behind} ms behind"),
                    behind_max,
                    "message.timestamp.before.max.ms",
                ));
            }
        }
        Ok(())
    }

    /// INVALID_TIMESTAMP for a record stamped `timestamp`, `how_far` this broker's clock,
    /// beyond the topic's `key` of `max` ms.
    fn invalid_timestamp(&self, timestamp: i64, how_far: String, max: i64, key: &str) -> ApiError {
        ApiError::new(
            ErrorCode::InvalidTimestamp,
            format!(
                "{}: a record's timestamp ({timestamp} ms since the epoch) is {how_far} this \
                 broker's clock, and the topic takes at most {max} ({key}): correct the \
                 producer's clock or the timestamps it sets, or raise the topic's {key}",
                self.name(),
            ),
        )
    }

    fn not_enough_replicas(&self, code: ErrorCode, isr: &[BrokerId]) -> ApiError {
        let replicas = if isr.len() == 1 {
            "replica"
        } else {
            "replicas"
        };
        ApiError::new(
            code,
            format!(
                "{} has {} in-sync {replicas} (broker {}), fewer than min.insync.replicas={}; \
                 start the other replicas' brokers and wait for them to catch up, or lower \
                 min.insync.replicas with sluice topic alter",
                self.name(),
                isr.len(),
                ids(isr),
                self.min_insync_replicas()
            ),
        )
    }

    /// The completion phase of an append: waits for local durability as the mode says
    /// (under `fsync` even for acks=0, so the HW keeps moving without anyone else
    /// flushing); for acks=all then waits until the HW covers the batches, this replica
    /// stops leading (NOT_LEADER_OR_FOLLOWER: the outcome is unknown, the producer
    /// retries), or `timeout` passes (REQUEST_TIMED_OUT). Appends of many requests wait
    /// together: one fsync covers all of them (group commit).
    pub async fn complete(
        self: &Arc<Self>,
        pending: PendingAppend,
        timeout: Duration,
    ) -> Result<AppendInfo, ApiError> {
        if matches!(self.durability, Durability::Fsync) {
            self.log
                .durable(pending.ticket)
                .await
                .map_err(|e| self.append_failed(e))?;
        }
        self.maybe_advance_high_watermark();
        if pending.acks != Acks::All {
            return Ok(pending.info);
        }
        let end = pending.info.last_offset.plus(1);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let woken = self.hw_advanced.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            self.check_live()?;
            if self.leader_epoch() != pending.leader_epoch || self.role() != Role::Leader {
                return Err(ApiError::new(
                    ErrorCode::NotLeaderOrFollower,
                    format!(
                        "{}: leadership moved before offsets {}..{end} were replicated; \
                         they may or may not be committed; refresh metadata and retry",
                        self.name(),
                        pending.info.base_offset
                    ),
                ));
            }
            if self.high_watermark() >= end {
                let state = self.state();
                if state.isr.len() < usize::from(self.min_insync_replicas()) {
                    return Err(self
                        .not_enough_replicas(ErrorCode::NotEnoughReplicasAfterAppend, &state.isr));
                }
                return Ok(pending.info);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Err(ApiError::new(
                    ErrorCode::RequestTimedOut,
                    format!(
                        "{}: offsets {}..{end} were not replicated to the in-sync replicas \
                         (broker {}) within {} ms; the producer retries",
                        self.name(),
                        pending.info.base_offset,
                        ids(&self.isr()),
                        timeout.as_millis()
                    ),
                ));
            }
        }
    }

    fn append_failed(&self, e: StorageError) -> ApiError {
        let e = ApiError::from(e);
        tracing::warn!(partition = %self.name(), "append failed: {}", e.message);
        e
    }

    /// This replica's durable log end: what it may count toward the HW.
    fn local_durable_end(&self) -> Offset {
        match self.durability {
            Durability::Fsync => self.log.flushed_offset(),
            Durability::Replicated { .. } => self.log_end_offset(),
        }
    }

    /// The leader's HW: the minimum durable log end over the ISR (and the members a
    /// pending expansion adds). Advances it and wakes waiters; a follower does nothing here.
    pub fn maybe_advance_high_watermark(&self) {
        let candidate = {
            let state = self.state();
            if state.role != Role::Leader {
                return;
            }
            let mut hw = self.local_durable_end();
            let counted = state.isr.iter().chain(state.pending_isr.iter().flatten());
            for member in counted {
                if *member == self.node_id {
                    continue;
                }
                let end = state
                    .followers
                    .get(member)
                    .map_or(Offset(-1), |f| f.log_end);
                hw = hw.min(end);
            }
            hw
        };
        self.advance_high_watermark(candidate);
    }

    /// Moves the HW forward to `offset` (never back) and wakes long-polling fetches.
    pub fn advance_high_watermark(&self, offset: Offset) {
        let previous = self.high_watermark.fetch_max(offset.0, Ordering::AcqRel);
        debug_assert!(
            self.high_watermark() <= self.log_end_offset(),
            "{}: the HW {} passed the log end {}",
            self.name(),
            self.high_watermark(),
            self.log_end_offset()
        );
        if offset.0 > previous {
            self.hw_advanced.notify_waiters();
        }
    }

    /// The one way the HW goes back: a follower's log is about to be truncated to
    /// `log_end`, so the HW may be at most that (the leader's next answer brings it
    /// forward again).
    fn lower_high_watermark_for_truncation(&self, log_end: Offset) {
        debug_assert!(
            self.role() != Role::Leader,
            "{}: a leader's log is never truncated",
            self.name()
        );
        self.high_watermark.fetch_min(log_end.0, Ordering::AcqRel);
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (at least one batch), below the
    /// HW (read_committed: below the last stable offset, with the aborted transactions the
    /// records overlap), on the leader. `offset` must be within `[log start, log end]`;
    /// offsets between the bound and the log end read nothing yet (a new leader's HW may
    /// lag the old one's).
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: u32,
        client_epoch: LeaderEpoch,
        isolation: IsolationLevel,
    ) -> Result<ReadResult, ApiError> {
        self.check_live()?;
        self.check_leader_epoch(client_epoch)?;
        self.check_leader()?;
        let high_watermark = self.high_watermark();
        let last_stable_offset = self.last_stable_offset_at(high_watermark);
        let bound = match isolation {
            IsolationLevel::ReadUncommitted => high_watermark,
            IsolationLevel::ReadCommitted => last_stable_offset,
        };
        let log = self.log.read();
        // Checked again under the lock: deletion sets the flag, then takes the write lock,
        // so a reader that gets the lock after it sees the flag.
        self.check_live()?;
        let log_start_offset = log.log_start_offset();
        let caught_up = offset >= bound && offset <= log.log_end_offset();
        if caught_up && offset >= log_start_offset {
            // A caught-up consumer: nothing to read (and nothing unflushed to copy).
            return Ok(ReadResult {
                records: Records::default(),
                last_offset: None,
                high_watermark,
                last_stable_offset,
                log_start_offset,
                aborted: Vec::new(),
            });
        }
        if offset < log_start_offset || offset > high_watermark {
            return Err(ApiError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "{}: offset {offset} is out of range; the partition holds offsets \
                     {log_start_offset} to {high_watermark} (exclusive); seek to one of them",
                    self.name()
                ),
            ));
        }
        // A large read in the page cache goes out from the file; others are a pread under
        // the shared lock, never of more than `max_bytes` plus one batch.
        let read = log.read_records(offset, max_bytes, bound)?;
        drop(log);
        let (records, last_offset) = match read {
            Some(read) => (read.records, Some(read.last_offset)),
            None => (Records::default(), None),
        };
        let aborted = match (isolation, last_offset) {
            (IsolationLevel::ReadCommitted, Some(last)) => self.aborted_between(offset, last),
            _ => Vec::new(),
        };
        Ok(ReadResult {
            records,
            last_offset,
            high_watermark,
            last_stable_offset,
            log_start_offset,
            aborted,
        })
    }

    /// The topic's configs were altered: new segment and retention limits for the log, a
    /// new `min.insync.replicas` for acks=all. Blocking (takes the log's lock).
    pub fn reconfigure(&self, log: LogConfig, min_insync_replicas: u16) {
        self.compacted
            .store(log.cleanup_policy.compacts(), Ordering::Release);
        self.timestamp_ahead_max_ms
            .store(log.message_timestamp_after_max_ms, Ordering::Release);
        self.timestamp_behind_max_ms
            .store(log.message_timestamp_before_max_ms, Ordering::Release);
        self.log_append_time
            .store(log.log_append_time, Ordering::Release);
        self.max_message_bytes
            .store(log.max_message_bytes, Ordering::Release);
        self.log.write().reconfigure(log);
        self.min_insync_replicas
            .store(min_insync_replicas, Ordering::Release);
    }

    /// Bytes and segments of this replica's log (for metrics).
    pub fn log_size(&self) -> (u64, usize) {
        let log = self.log.read();
        (log.size_bytes(), log.segment_count())
    }

    /// The topic's `min.insync.replicas` as this replica runs with it.
    pub fn min_insync_replicas(&self) -> u16 {
        self.min_insync_replicas.load(Ordering::Acquire)
    }

    /// Reads whole batches from `offset` up to `max_offset` (exclusive) on this replica's
    /// log, at most `max_bytes` (at least one batch), whatever its role and HW: a group
    /// coordinator loading its `__consumer_offsets` partition reads up to the log end.
    /// Blocking.
    pub fn read_log(
        &self,
        offset: Offset,
        max_bytes: u32,
        max_offset: Offset,
    ) -> Result<Bytes, ApiError> {
        self.check_live()?;
        Ok(self.log.read().read(offset, max_bytes, max_offset)?)
    }

    /// Writes the recovery point, bounding the rescan after a crash, and the HW, where a
    /// restart starts from; then snapshots the producer state (forgetting producers idle
    /// since before `expire_before_ms`), bounding its rebuild. Nothing is written for a
    /// deleted partition: the check is made under the log's lock, so nothing goes into the
    /// directory of a deleted topic. Blocking.
    pub fn checkpoint(&self, expire_before_ms: i64) {
        let mut log = self.log.write();
        if self.is_deleted() {
            return;
        }
        if let Err(e) = log.checkpoint() {
            tracing::warn!(partition = %self.name(), "checkpoint failed: {e}");
        }
        self.write_high_watermark(&mut log);
        drop(log);
        if let Err(e) = self.snapshot_producers(expire_before_ms) {
            tracing::warn!(partition = %self.name(), "producer state snapshot failed: {e}");
        }
    }

    /// Checkpoints the HW alone (a clean shutdown, just before the log closes). Blocking.
    pub fn checkpoint_high_watermark(&self) {
        let mut log = self.log.write();
        if !self.is_deleted() {
            self.write_high_watermark(&mut log);
        }
    }

    /// Writes the HW checkpoint. Read under the log's write lock: a truncation lowers the
    /// HW before it takes the lock, so the value is never above the log it describes.
    fn write_high_watermark(&self, log: &mut sluice_storage::PartitionLog) {
        let high_watermark = self.high_watermark();
        debug_assert!(
            high_watermark <= log.log_end_offset(),
            "{}: checkpointing the HW {high_watermark} past the log end {}",
            self.name(),
            log.log_end_offset()
        );
        if let Err(e) = log.checkpoint_high_watermark(high_watermark) {
            tracing::warn!(partition = %self.name(), "high-watermark checkpoint failed: {e}");
        }
    }

    /// Deletes whole segments past retention, never at or above the HW. Blocking.
    pub fn apply_retention(&self) {
        let high_watermark = self.high_watermark();
        let detached = {
            let mut log = self.log.write();
            if self.is_deleted() {
                return;
            }
            log.detach_for_retention(high_watermark)
        };
        if detached.is_empty() {
            return;
        }
        // Without the log's lock: the renames and the directory's fsync wait on the disk,
        // which appends, reads and everything waiting on them (heartbeat handling
        // included, on a 2-core machine) must not (the files themselves are deleted later,
        // in the background: `sluice_storage`'s deleter).
        match detached.delete() {
            Ok(n) => tracing::info!(partition = %self.name(), "retention deleted {n} segment(s)"),
            Err(e) => tracing::warn!(partition = %self.name(), "retention failed: {e}"),
        }
    }

    /// One run of the log cleaner over this replica (a compacted topic's), below the HW:
    /// plans under the log's read lock, rewrites the segments without it (paced by
    /// `throttle`), swaps them in under the write lock. Leader and followers each clean
    /// their own copy, as in Kafka: the bound is each one's HW, so only committed records
    /// are compacted. `None` when there was nothing to clean. A failed swap takes the
    /// partition offline (the next open finishes or discards it). Blocking and disk-heavy.
    ///
    /// A run that fails (a full disk, a segment it cannot read) is not tried again on the
    /// next pass but after a backoff, [`CLEANER_RETRY_MIN`] doubling to
    /// [`CLEANER_RETRY_MAX`] while it keeps failing ([`Partition::cleaner_retry_in`]), so a
    /// partition that cannot be cleaned does not reread its log and log a warning every
    /// interval (Kafka marks such a partition uncleanable until a restart). `force` runs
    /// anyway.
    pub fn clean_log(
        &self,
        force: bool,
        map_bytes_max: usize,
        throttle: &mut Throttle,
    ) -> Result<Option<CleanReport>, StorageError> {
        let now = Instant::now();
        let waiting = *self.cleaner_backoff.lock().expect("cleaner backoff lock");
        if !force && waiting.is_some_and(|(until, _)| now < until) {
            return Ok(None);
        }
        let ran = self.clean_log_once(force, map_bytes_max, throttle);
        let mut backoff = self.cleaner_backoff.lock().expect("cleaner backoff lock");
        *backoff = match &ran {
            Err(StorageError::CleanerStopped { .. }) => *backoff,
            Err(_) => {
                let wait = backoff.map_or(CLEANER_RETRY_MIN, |(_, last)| {
                    (last * 2).min(CLEANER_RETRY_MAX)
                });
                Some((Instant::now() + wait, wait))
            }
            Ok(_) => None,
        };
        ran
    }

    /// How long until the cleaner tries this replica again after failed runs, if it is
    /// waiting.
    pub fn cleaner_retry_in(&self) -> Option<Duration> {
        let backoff = *self.cleaner_backoff.lock().expect("cleaner backoff lock");
        backoff.map(|(until, _)| until.saturating_duration_since(Instant::now()))
    }

    fn clean_log_once(
        &self,
        force: bool,
        map_bytes_max: usize,
        throttle: &mut Throttle,
    ) -> Result<Option<CleanReport>, StorageError> {
        if self.is_deleted() || self.offline_reason().is_some() {
            return Ok(None);
        }
        // The last batch of every producer still tracked stays (empty if need be), as in
        // Kafka: its sequence survives a rebuild of the state from the log. Producers
        // forgotten since (expired) keep nothing.
        let last_batches: HashMap<i64, Offset> = {
            let producers = self.producers.lock().expect("producer state lock");
            producers.last_batches().collect()
        };
        let plan = {
            let log = self.log.read();
            // The HW read under the log's lock: a truncation lowers it before it cuts the
            // log (under the write lock), so the plan never reaches above what is
            // committed, and a cut after the plan makes the swap discard the run. Bounded
            // by the last stable offset too: every transaction below it is decided, so
            // the cleaner compacts a committed one's records as any others and removes an
            // aborted one's.
            let high_watermark = self.high_watermark();
            log.plan_cleaning(self.last_stable_offset_at(high_watermark), force)?
        };
        let Some(plan) = plan else {
            return Ok(None);
        };
        // The aborted transactions read after the bound: one decided before it is among
        // them (one still open then has its records above the bound).
        let aborted = self
            .producers
            .lock()
            .expect("producer state lock")
            .aborted_ranges();
        let plan = plan.with_transactions(sluice_storage::TxnOutcomes { aborted });
        let cleaned = plan.run(map_bytes_max, throttle, &last_batches)?;
        let mut log = self.log.write();
        // Under the log's lock: a deletion sets the flag before it takes the lock, so a
        // deleted topic's directory (which a new topic may own) is never written; a policy
        // altered to `delete` meanwhile removes nothing more.
        if self.is_deleted() || self.log.is_retired() || !log.config().cleanup_policy.compacts() {
            return Ok(None);
        }
        match log.swap_cleaned(cleaned) {
            Ok(report) => {
                if let (true, Some(end)) = (report.swapped, report.cleaned_end) {
                    let due = Instant::now() + CLEANED_ABORTS_DELAY;
                    self.cleaned_aborts
                        .lock()
                        .expect("cleaned aborts lock")
                        .push((due, end));
                }
                Ok(Some(report))
            }
            Err(e) => {
                drop(log);
                self.take_offline(format!("swapping in cleaned segments failed: {e}"));
                Err(e)
            }
        }
    }

    /// Size of the log and where its dirty part starts (for the cleaner's tests and logs).
    pub fn cleaner_state(&self) -> (u64, Offset) {
        let log = self.log.read();
        (log.size_bytes(), log.cleaner_first_dirty_offset())
    }

    /// The background flush of `replicated` durability. The HW is already the log end
    /// there, so a flush makes nothing newly visible; a failed one takes the partition
    /// offline. Blocking.
    pub fn background_flush(&self) {
        if self.is_deleted() {
            return;
        }
        let outcome = self.log.flush();
        self.background_flush_done(outcome);
    }

    /// What a background flush's outcome means. A failed fsync, this one's or a flusher
    /// thread's, is recorded in storage (`fsync_failure`) and takes the partition offline
    /// here. Any other error is a wait that ended because the data it waited for was cut
    /// off (a follower's truncation, a deletion) while nothing failed: the next flush
    /// covers what the log holds then.
    fn background_flush_done(&self, outcome: Result<(), StorageError>) {
        if let Err(e) = outcome {
            tracing::debug!(partition = %self.name(), "background flush ended early: {e}");
        }
        _ = self.offline_reason();
    }

    /// Forgets producers idle since before `expire_before_ms`, then snapshots the producer
    /// state at the log end (if it moved since the last snapshot), so a restart replays
    /// only the batches after it. Blocking.
    pub fn snapshot_producers(&self, expire_before_ms: i64) -> std::io::Result<()> {
        self.snapshot_producers_at(expire_before_ms, Instant::now())
    }

    /// [`Partition::snapshot_producers`] at `now`, which decides which cleaner swaps are
    /// old enough for their aborted transactions to be forgotten.
    pub(crate) fn snapshot_producers_at(
        &self,
        expire_before_ms: i64,
        now: Instant,
    ) -> std::io::Result<()> {
        let cleaned_below = {
            let mut swaps = self.cleaned_aborts.lock().expect("cleaned aborts lock");
            let due = swaps
                .iter()
                .filter(|(at, _)| *at <= now)
                .map(|(_, end)| *end)
                .max();
            swaps.retain(|(at, _)| *at > now);
            due
        };
        let mut producers = self.producers.lock().expect("producer state lock");
        let expired = producers.expire(expire_before_ms);
        if expired > 0 {
            tracing::info!(partition = %self.name(), "forgot {expired} idle producer(s)");
        }
        let log = self.log.read();
        // An aborted transaction is remembered for read_committed fetches of its records
        // (and for the cleaner): until the log start passes its marker, or until the
        // cleaner removed its records. Not at the swap itself: a fetch reads under the
        // log's lock and asks for the aborted transactions after letting go of it, so it
        // may have read the records just cleaned away; a minute later none is left
        // between the two steps (Kafka deletes replaced segment files after such a delay,
        // `file.delete.delay.ms`).
        producers.forget_aborted_before(
            log.log_start_offset()
                .max(cleaned_below.unwrap_or(Offset(0))),
        );
        // Under the log's lock: a deletion sets the flag before it takes the lock, so a
        // deleted partition's directory (which a new topic may own) is never written.
        if self.is_deleted() || self.log.is_retired() {
            return Ok(());
        }
        producers.save(log.dir(), log.log_end_offset())
    }

    /// Notified when the HW advances, the role changes, the partition is deleted or it
    /// goes offline. Create and enable a `notified()` future before reading (see
    /// `handlers::fetch`), so a wake that races with the read is not lost.
    pub fn hw_advanced(&self) -> &Notify {
        &self.hw_advanced
    }

    /// Notified when the leader appends (and on role changes): replica fetches wait on it.
    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    /// ListOffsets: -2 earliest, -1 latest (the HW; read_committed: the last stable
    /// offset), else the first offset whose timestamp is at or after `timestamp_ms` and
    /// below that bound, with that timestamp; `(-1, -1)` when there is none.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
        client_epoch: LeaderEpoch,
        isolation: IsolationLevel,
    ) -> Result<(i64, Offset), ApiError> {
        use sluice_protocol::messages::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
        self.check_live()?;
        self.check_leader_epoch(client_epoch)?;
        self.check_leader()?;
        let high_watermark = self.high_watermark();
        let bound = match isolation {
            IsolationLevel::ReadUncommitted => high_watermark,
            IsolationLevel::ReadCommitted => self.last_stable_offset_at(high_watermark),
        };
        let epoch_start = self.state().epoch_start_offset;
        let log = self.log.read();
        self.check_live()?;
        match timestamp_ms {
            EARLIEST_TIMESTAMP => Ok((-1, log.log_start_offset())),
            LATEST_TIMESTAMP if high_watermark < epoch_start => Err(ApiError::new(
                ErrorCode::OffsetNotAvailable,
                format!(
                    "{}: the new leader's high watermark {high_watermark} has not reached \
                     the start of its epoch ({epoch_start}) yet; retry",
                    self.name()
                ),
            )),
            LATEST_TIMESTAMP => Ok((-1, bound)),
            t if t < 0 => Err(ApiError::new(
                ErrorCode::InvalidTimestamp,
                format!("timestamp {t} is not -2 (earliest), -1 (latest) or a time in ms"),
            )),
            t => match log.offset_for_timestamp(t)? {
                Some((found_ts, offset)) if offset < bound => Ok((found_ts, offset)),
                _ => Ok((-1, Offset(-1))),
            },
        }
    }

    /// OffsetsForLeaderEpoch: the largest epoch at or below `epoch` in this leader's log and
    /// where it ends; `None` when the log has no epoch that old.
    pub fn end_offset_for_epoch(
        &self,
        epoch: LeaderEpoch,
        client_epoch: LeaderEpoch,
    ) -> Result<Option<(LeaderEpoch, Offset)>, ApiError> {
        self.check_live()?;
        self.check_leader_epoch(client_epoch)?;
        self.check_leader()?;
        Ok(self.log.read().end_offset_for_epoch(epoch))
    }

    /// Serves a follower's fetch (blocking: call from a blocking thread). Records the
    /// follower's progress (its fetch offset is its durable log end), advances the HW, and
    /// returns the batches after its fetch offset up to the log end, or where the follower's
    /// log diverged (KIP-320: checked against the follower's last fetched epoch, so a
    /// follower truncates to the leader's epoch boundary, never to its own HW). Returns
    /// also an ISR expansion to propose when the follower just caught up. A fetch from an
    /// [`FollowerIncarnation::Unconfirmed`] run of the follower is served the same way but
    /// records nothing: it moves neither the HW nor the ISR.
    pub fn read_for_follower(
        &self,
        follower: BrokerId,
        incarnation: FollowerIncarnation,
        request: &ReplicaFetchPartition,
        max_bytes: u32,
    ) -> Result<(ReplicaRead, Option<IsrProposal>), ApiError> {
        let read = self.read_for_follower_with(follower, incarnation, request, max_bytes, true);
        read.map(|read| read.expect("a blocking read always reads or fails"))
    }

    /// [`Partition::read_for_follower`] for an async worker: reads only when the log is
    /// free and all the follower lacks fits in [`INLINE_READ_BYTES_MAX`]; otherwise
    /// returns `Ok(None)` having changed nothing, for the caller to read on a blocking
    /// thread.
    pub fn try_read_for_follower(
        &self,
        follower: BrokerId,
        incarnation: FollowerIncarnation,
        request: &ReplicaFetchPartition,
        max_bytes: u32,
    ) -> Result<Option<(ReplicaRead, Option<IsrProposal>)>, ApiError> {
        let max_bytes = max_bytes.min(INLINE_READ_BYTES_MAX as u32);
        self.read_for_follower_with(follower, incarnation, request, max_bytes, false)
    }

    fn read_for_follower_with(
        &self,
        follower: BrokerId,
        incarnation: FollowerIncarnation,
        request: &ReplicaFetchPartition,
        max_bytes: u32,
        block: bool,
    ) -> Result<Option<(ReplicaRead, Option<IsrProposal>)>, ApiError> {
        let fetch_offset = request.fetch_offset;
        let last_fetched_epoch = request.last_fetched_epoch;
        self.check_live()?;
        self.check_leader_epoch(request.current_leader_epoch)?;
        self.check_leader()?;
        let log = if block {
            self.log.read()
        } else {
            match self.log.try_read() {
                Some(log) => log,
                None => return Ok(None),
            }
        };
        self.check_live()?;
        let log_start_offset = log.log_start_offset();
        let log_end = log.log_end_offset();
        if last_fetched_epoch.0 >= 0 {
            let diverging = match log.end_offset_for_epoch(last_fetched_epoch) {
                Some((epoch, end)) if epoch == last_fetched_epoch && end >= fetch_offset => None,
                Some(found) => Some(found),
                None => Some((LeaderEpoch(-1), log_start_offset)),
            };
            if let Some(diverging) = diverging {
                return Ok(Some((
                    ReplicaRead {
                        records: Records::default(),
                        high_watermark: self.high_watermark(),
                        log_start_offset,
                        diverging: Some(diverging),
                    },
                    None,
                )));
            }
        }
        if fetch_offset < log_start_offset || fetch_offset > log_end {
            return Err(ApiError::new(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "{}: follower {follower} fetches offset {fetch_offset}, outside the \
                     leader's log {log_start_offset}..{log_end}",
                    self.name()
                ),
            ));
        }
        if !block
            && fetch_offset < log_end
            && log
                .active_bytes_from(fetch_offset)
                .is_none_or(|lacking| lacking > u64::from(max_bytes))
        {
            // A follower further behind than a quick read: a blocking thread reads it
            // all, in fewer and larger answers.
            return Ok(None);
        }
        let records = if fetch_offset < log_end {
            log.read_records(fetch_offset, max_bytes, log_end)?
                .map(|read| read.records)
                .unwrap_or_default()
        } else {
            Records::default()
        };
        drop(log);
        let proposal = match incarnation {
            FollowerIncarnation::Registered => {
                let proposal = self.follower_fetched(
                    follower,
                    fetch_offset,
                    request.log_start_offset,
                    log_end,
                );
                self.maybe_advance_high_watermark();
                proposal
            }
            FollowerIncarnation::Unconfirmed => None,
        };
        Ok(Some((
            ReplicaRead {
                records,
                high_watermark: self.high_watermark(),
                log_start_offset,
                diverging: None,
            },
            proposal,
        )))
    }

    /// Records a follower's fetch; proposes adding it to the ISR once it has everything up
    /// to the HW and this leader's epoch (Kafka's rule: a member must have the leader's
    /// epoch start, or it could count toward a HW over data it lacks).
    fn follower_fetched(
        &self,
        follower: BrokerId,
        fetch_offset: Offset,
        log_start: Offset,
        log_end: Offset,
    ) -> Option<IsrProposal> {
        let now = Instant::now();
        let high_watermark = self.high_watermark();
        let mut state = self.state();
        let epoch_start = state.epoch_start_offset;
        let progress = state.followers.get_mut(&follower)?;
        progress.log_end = fetch_offset;
        if log_start > progress.log_start {
            progress.log_start = log_start;
            // A DeleteRecords may wait for this replica's log start.
            self.hw_advanced.notify_waiters();
        }
        if fetch_offset >= log_end {
            progress.caught_up_at = now;
        } else if fetch_offset >= progress.previous_fetch.0 {
            progress.caught_up_at = progress.caught_up_at.max(progress.previous_fetch.1);
        }
        progress.previous_fetch = (log_end, now);
        let eligible = fetch_offset >= high_watermark && fetch_offset >= epoch_start;
        if !eligible || state.isr.contains(&follower) || state.pending_isr.is_some() {
            return None;
        }
        let mut new_isr = state.isr.clone();
        new_isr.push(follower);
        state.pending_isr = Some(new_isr.clone());
        Some(IsrProposal {
            leader_epoch: self.leader_epoch(),
            partition_epoch: state.partition_epoch,
            new_isr,
        })
    }

    /// Proposes removing the ISR members that have not caught up for `lag_max` (a follower
    /// that stopped fetching or fell behind), unless a proposal is already in flight.
    pub fn isr_shrink(&self, lag_max: Duration) -> Option<IsrProposal> {
        let now = Instant::now();
        let mut state = self.state();
        if state.role != Role::Leader || state.pending_isr.is_some() {
            return None;
        }
        let new_isr: Vec<BrokerId> = state
            .isr
            .iter()
            .copied()
            .filter(|member| {
                *member == self.node_id
                    || state
                        .followers
                        .get(member)
                        .is_some_and(|f| now.duration_since(f.caught_up_at) <= lag_max)
            })
            .collect();
        if new_isr.len() == state.isr.len() {
            return None;
        }
        tracing::info!(
            partition = %self.name(),
            "shrinking the ISR from {:?} to {new_isr:?}: the others lag more than {lag_max:?}",
            state.isr
        );
        state.pending_isr = Some(new_isr.clone());
        Some(IsrProposal {
            leader_epoch: self.leader_epoch(),
            partition_epoch: state.partition_epoch,
            new_isr,
        })
    }

    /// The controller answered an ISR proposal: `Some` committed state (leader epoch,
    /// partition epoch, ISR) when it was accepted, `None` when it was refused or lost (the
    /// metadata image brings the truth; a later check may propose again).
    pub fn isr_proposal_done(&self, committed: Option<(LeaderEpoch, i32, Vec<BrokerId>)>) {
        let mut state = self.state();
        state.pending_isr = None;
        if let Some((epoch, partition_epoch, isr)) = committed {
            if epoch == self.leader_epoch() && partition_epoch > state.partition_epoch {
                debug_assert!(
                    state.role != Role::Leader || isr.contains(&self.node_id),
                    "{}: the controller committed an ISR {isr:?} without its leader",
                    self.name()
                );
                tracing::info!(partition = %self.name(), "ISR is now {}", ids(&isr));
                state.isr = isr;
                state.partition_epoch = partition_epoch;
            }
        }
        drop(state);
        self.maybe_advance_high_watermark();
        self.hw_advanced.notify_waiters();
    }

    /// Follower: where the next replica fetch reads from and what it reports.
    pub fn follower_fetch_state(&self) -> FollowerFetchState {
        let log = self.log.read();
        let last_epoch = log.latest_epoch().map_or(LeaderEpoch(-1), |e| e.epoch);
        FollowerFetchState {
            fetch_offset: log.log_end_offset(),
            last_fetched_epoch: last_epoch,
            log_start_offset: log.log_start_offset(),
            leader_epoch: self.leader_epoch(),
        }
    }

    /// Follower: appends batches fetched from the leader (offsets and epochs as the leader
    /// stamped them) and starts making them durable: a flusher thread runs the fsync, and
    /// the fetcher awaits it ([`Partition::pending_durability`]) before it fetches again,
    /// so the fetch offset it reports is durable. Takes the leader's HW, capped by what is
    /// durable here. Blocking.
    pub fn append_from_leader(
        &self,
        records: Bytes,
        leader_high_watermark: Offset,
    ) -> Result<(), ApiError> {
        let appended = self.append_from_leader_with(&records, leader_high_watermark, true)?;
        debug_assert!(appended, "a blocking append always appends or fails");
        Ok(())
    }

    /// [`Partition::append_from_leader`] for an async worker: appends only when that is
    /// quick (at most [`INLINE_APPEND_BYTES_MAX`]) and the log is free, and otherwise
    /// returns `Ok(false)` having changed nothing, for the caller to append on a blocking
    /// thread.
    pub fn try_append_from_leader(
        &self,
        records: &Bytes,
        leader_high_watermark: Offset,
    ) -> Result<bool, ApiError> {
        if records.len() > INLINE_APPEND_BYTES_MAX {
            return Ok(false);
        }
        self.append_from_leader_with(records, leader_high_watermark, false)
    }

    fn append_from_leader_with(
        &self,
        records: &Bytes,
        leader_high_watermark: Offset,
        block: bool,
    ) -> Result<bool, ApiError> {
        self.check_live()?;
        if !records.is_empty() {
            let mut producers = self.producers.lock().expect("producer state lock");
            let appended = self
                .log
                .append_as_follower(records.clone(), block)
                .map_err(|e| self.append_failed(e))?;
            if appended.is_none() {
                return Ok(false);
            }
            producers.record_batches(records, SystemClock.now_ms());
            self.publish_unstable(&producers);
            drop(producers);
            self.start_flush(records.len() as u64);
        }
        let durable = self.local_durable_end().min(self.log_end_offset());
        self.advance_high_watermark(leader_high_watermark.min(durable));
        Ok(true)
    }

    /// Follower: the wait for everything in the log now to be durable, or `None` when it
    /// is. It fails when the data can no longer become durable (a failed fsync cut it off,
    /// or a truncation did: the next fetch reports where the log ends now, and the leader
    /// sends the rest again). Awaiting it asks for the fsync.
    pub fn pending_durability(
        &self,
    ) -> Option<impl std::future::Future<Output = Result<(), ApiError>> + 'static> {
        let ticket = self.log.ticket_for_log_end();
        if self.local_durable_end() >= ticket.end() {
            return None;
        }
        let durable = self.log.durable(ticket);
        Some(async move { durable.await.map_err(ApiError::from) })
    }

    /// Follower: the leader says the log diverged: its `epoch` ends at `leader_end`.
    /// Truncates to the smaller of that and where this log's copy of the epoch ends (or to
    /// the log start when the epoch is unknown here). The leader's answer decides, never
    /// this replica's own HW (KIP-101/279); the HW is capped at the new log end. Blocking.
    pub fn truncate_diverging(
        &self,
        epoch: LeaderEpoch,
        leader_end: Offset,
    ) -> Result<Offset, ApiError> {
        self.check_live()?;
        let target = {
            let log = self.log.read();
            let start = log.log_start_offset();
            if epoch.0 < 0 {
                start
            } else {
                match log.end_offset_for_epoch(epoch) {
                    Some((_, own_end)) => own_end.min(leader_end).max(start),
                    None => start,
                }
            }
        };
        tracing::info!(
            partition = %self.name(),
            "truncating to offset {target}: the leader's epoch {} ends at {leader_end}",
            epoch.0
        );
        // The HW goes down first, so it is never past the log end, not even for a moment,
        // and a checkpoint (which reads it under the log's lock) never writes one above
        // the cut; storage lowers its checkpoint to the cut as it truncates.
        self.lower_high_watermark_for_truncation(target);
        let mut producers = self.producers.lock().expect("producer state lock");
        self.log
            .truncate_to(target)
            .map_err(|e| self.append_failed(e))?;
        producer_state::invalidate_snapshot_after(self.log.read().dir(), target);
        *producers = ProducerStates::rebuild(&self.log);
        self.publish_unstable(&producers);
        drop(producers);
        Ok(target)
    }

    /// Leader: deletes the records below `offset` (Kafka's DeleteRecords; -1 means the high
    /// watermark): the log start moves there, durably, and segments wholly below it are
    /// removed. Only committed records can be deleted: an offset past the high watermark
    /// is OFFSET_OUT_OF_RANGE. Followers take the new log start from their next fetch
    /// ([`Partition::follow_leader_log_start`]); [`Partition::low_watermark`] tells when
    /// they have. Returns the new log start. Blocking.
    pub fn delete_records(&self, offset: i64) -> Result<Offset, ApiError> {
        self.check_live()?;
        self.check_leader()?;
        let high_watermark = self.high_watermark();
        let offset = match offset {
            -1 => high_watermark,
            o if (0..=high_watermark.0).contains(&o) => Offset(o),
            o => {
                return Err(ApiError::new(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "cannot delete records below offset {o}: only committed records can \
                         be deleted, those below the high watermark {high_watermark}; give an \
                         offset up to {high_watermark}, or -1 for all of them"
                    ),
                ))
            }
        };
        let detached = {
            let mut log = self.log.write();
            self.check_live()?;
            log.advance_log_start(offset).map_err(ApiError::from)?
        };
        let start = self.log_start_offset();
        // Parked follower fetches answer now, carrying the new log start.
        self.appended.notify_waiters();
        if !detached.is_empty() {
            match detached.delete() {
                Ok(n) => {
                    tracing::info!(partition = %self.name(), "deleting records below {offset} removed {n} segment(s)")
                }
                Err(e) => {
                    tracing::warn!(partition = %self.name(), "deleting records below {offset}: {e}")
                }
            }
        }
        Ok(start)
    }

    /// The producers this replica remembers (DescribeProducers), by id.
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.producers.lock().expect("producer state lock").active()
    }

    /// Leader: the lowest log start among the in-sync replicas (Kafka's low watermark):
    /// every in-sync copy has deleted the records below it.
    pub fn low_watermark(&self) -> Offset {
        let own = self.log_start_offset();
        let state = self.state();
        state
            .isr
            .iter()
            .filter_map(|member| state.followers.get(member))
            .map(|follower| follower.log_start)
            .fold(own, Offset::min)
    }

    /// Leader: waits until every in-sync replica has deleted the records below `offset`
    /// ([`Partition::low_watermark`] reaches it; Kafka's DeleteRecords purgatory), and
    /// returns the low watermark. NOT_LEADER_OR_FOLLOWER if this replica stops leading,
    /// REQUEST_TIMED_OUT at `deadline` (the leader's records are deleted either way).
    pub async fn await_low_watermark(
        &self,
        offset: Offset,
        deadline: tokio::time::Instant,
    ) -> Result<Offset, ApiError> {
        loop {
            let woken = self.hw_advanced.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            self.check_live()?;
            self.check_leader()?;
            let low = self.low_watermark();
            if low >= offset {
                return Ok(low);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Err(ApiError::new(
                    ErrorCode::RequestTimedOut,
                    format!(
                        "the leader deleted the records below {offset}, but the in-sync \
                         replicas (brokers {}) had not within the request's timeout; they \
                         delete them when they next fetch",
                        ids(&self.isr()),
                    ),
                ));
            }
        }
    }

    /// Follower: takes the leader's log start (moved by DeleteRecords or retention there),
    /// as far as this replica's log end, so records deleted on the leader are deleted
    /// here too. Blocking when it moves.
    pub fn follow_leader_log_start(&self, leader_log_start: Offset) -> Result<(), ApiError> {
        self.check_live()?;
        let detached = {
            let mut log = self.log.write();
            let target = leader_log_start.min(log.log_end_offset());
            if target <= log.log_start_offset() {
                return Ok(());
            }
            log.advance_log_start(target).map_err(ApiError::from)?
        };
        if let Err(e) = detached.delete() {
            tracing::warn!(partition = %self.name(), "deleting records below the leader's log start: {e}");
        }
        Ok(())
    }

    /// Follower: the leader no longer has this replica's log end (retention deleted it):
    /// start over empty at the leader's log start. Blocking.
    pub fn restart_at(&self, leader_log_start: Offset) -> Result<(), ApiError> {
        self.check_live()?;
        tracing::info!(
            partition = %self.name(),
            "emptying the replica to restart at the leader's log start {leader_log_start}"
        );
        // Empty at the leader's log start: nothing below it is readable here, nothing at
        // or above it is here yet. Lowered first, as in `truncate_diverging`.
        self.lower_high_watermark_for_truncation(leader_log_start);
        let mut producers = self.producers.lock().expect("producer state lock");
        self.log
            .truncate_fully_and_start_at(leader_log_start)
            .map_err(|e| self.append_failed(e))?;
        producer_state::invalidate_snapshot_after(self.log.read().dir(), Offset(-1));
        *producers = ProducerStates::default();
        self.publish_unstable(&producers);
        drop(producers);
        self.advance_high_watermark(leader_log_start);
        Ok(())
    }
}

/// The producer stamp of an idempotent produce: one batch per partition per request, as
/// Kafka's producers send (so a resend is recognised as a whole).
fn idempotent_stamp(batches: &[Bytes]) -> Result<Option<Stamp>, ApiError> {
    let stamps: Vec<Option<Stamp>> = batches
        .iter()
        .map(|b| BatchHeader::parse(b).ok().and_then(|h| Stamp::of(&h)))
        .collect();
    match stamps.as_slice() {
        [one] => Ok(*one),
        many if many.iter().all(Option::is_none) => Ok(None),
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "an idempotent producer must send one batch per partition per request",
        )),
    }
}

/// The first wait after a failed cleaner run of a replica (see [`Partition::clean_log`]).
pub const CLEANER_RETRY_MIN: Duration = Duration::from_secs(60);
/// The longest wait between failed cleaner runs of a replica.
pub const CLEANER_RETRY_MAX: Duration = Duration::from_secs(3600);

/// How long after a cleaner swap the aborted transactions whose records it removed are
/// forgotten (see [`Partition::snapshot_producers_at`]).
pub const CLEANED_ABORTS_DELAY: Duration = Duration::from_secs(60);

/// Under `replicated` durability, a partition asks for an fsync each time this much has
/// been appended since it last asked. Measured at 100,000 records/s of 1,000 bytes
/// (BENCHMARKS.md, "Acknowledgement latency"): against an fsync per append, 4 MiB cut the
/// broker's CPU by a fifth and the median acknowledgement from 0.35 to 0.23 ms with the
/// same p99; 16 MiB raised the p99 (longer fsyncs).
pub const REPLICATED_FLUSH_SLICE: u64 = 4 * 1024 * 1024;

/// Most bytes one request (a client's produce, or a leader's answer to this follower, all
/// partitions together) appends on an async worker: one batch of a client's default size
/// (1 MiB) and some. Its CRC and page-cache copy take a few hundred microseconds; the rest
/// of a request goes to a blocking thread. At 256 KiB every full-speed producer's 1 MiB
/// batch went to a blocking thread, and on two cores the hand-off (a thread woken, then
/// the worker again, each waiting its turn on a busy core) cost more than the copy: at
/// 1 MiB one producer at full speed (`replicated`) moved 4 % more with 7.5 % less broker
/// CPU per MB (BENCHMARKS.md). A worker is also the connection's reader and writer (Kafka
/// keeps those on network threads apart from its request handlers), so the bound is one
/// batch, not one per partition.
pub const INLINE_APPEND_BYTES_MAX: usize = 1024 * 1024 + 64 * 1024;

/// Most bytes a follower's fetch reads on an async worker ([`Partition::try_read_for_follower`]):
/// the active segment's tail, which is in the page cache but after a restart, when a
/// larger read could wait for the disk.
pub const INLINE_READ_BYTES_MAX: usize = 256 * 1024;

/// Whether `records` are small and uncompressed (decompressing to check a batch could take
/// milliseconds), read from the batch headers alone. Malformed input may go either way:
/// the checks that refuse it are the same.
fn quick_to_append(records: &Bytes) -> bool {
    if records.len() > INLINE_APPEND_BYTES_MAX {
        return false;
    }
    let mut rest = &records[..];
    while !rest.is_empty() {
        let Ok(Some(len)) = peek_total_len(rest) else {
            return true;
        };
        let Some((batch, after)) = rest.split_at_checked(len as usize) else {
            return true;
        };
        let compressed = BatchHeader::parse(batch)
            .ok()
            .and_then(|h| h.compression().ok())
            .is_none_or(|codec| codec != Compression::None);
        if compressed {
            return false;
        }
        rest = after;
    }
    true
}

/// Splits a produce request's records into batches by their length fields. Storage
/// validates each batch (CRC, sizes, counts) as it appends; when a request holds several,
/// they are all validated first so that the request appends all of them or none. Producers
/// send one batch per partition, so the CRC is normally computed once. A compressed batch
/// is checked whole here, before anything is appended ([`check_compressed`]).
fn split_batches(records: Bytes) -> Result<Vec<Bytes>, ApiError> {
    let mut rest = records;
    let mut batches = Vec::new();
    while !rest.is_empty() {
        let len = match peek_total_len(&rest) {
            Ok(Some(len)) if len as usize <= rest.len() => len as usize,
            Ok(_) => return Err(invalid_batch(format!("{} trailing bytes", rest.len()))),
            Err(e) => return Err(invalid_batch(e)),
        };
        let batch = rest.split_to(len);
        check_compressed(&batch)?;
        let header = BatchHeader::parse(&batch).map_err(invalid_batch)?;
        if header.is_control() {
            // Commit and abort markers are the broker's to write (Kafka refuses them from
            // clients too); one from a producer would also pass the checks records get.
            return Err(ApiError::new(
                ErrorCode::InvalidRecord,
                "a producer may not write control batches (transaction markers): clear the \
                 control bit of the batch's attributes",
            ));
        }
        batches.push(batch);
    }
    match batches.len() {
        0 => Err(ApiError::new(
            ErrorCode::CorruptMessage,
            "the produce request has no record batch for this partition",
        )),
        1 => Ok(batches),
        _ => {
            for batch in &batches {
                RecordBatch::validate_produced(batch.clone()).map_err(invalid_batch)?;
            }
            Ok(batches)
        }
    }
}

/// CORRUPT_MESSAGE for a produced batch that does not parse or validate.
fn invalid_batch(reason: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::CorruptMessage,
        format!("invalid record batch: {reason}; the producer must send RecordBatch v2"),
    )
}

/// A compacted topic keeps the latest record of each key, so a record without one cannot
/// be kept: it is refused at produce, as Kafka refuses it (INVALID_RECORD, "Compacted
/// topic cannot accept message without key"). Parses the records (decompressed within
/// [`MAX_DECOMPRESSED_BYTES`]); only compacted topics pay for it.
fn check_keys(batches: &[Bytes], partition: &str) -> Result<(), ApiError> {
    for batch in batches {
        let batch = RecordBatch::validate_produced(batch.clone()).map_err(invalid_batch)?;
        if batch.header().is_control() {
            continue;
        }
        for record in batch
            .records_within(MAX_DECOMPRESSED_BYTES)
            .map_err(invalid_batch)?
        {
            if record.map_err(invalid_batch)?.key.is_none() {
                return Err(ApiError::new(
                    ErrorCode::InvalidRecord,
                    format!(
                        "{partition} is compacted (cleanup.policy compact), so every record \
                         needs a key; send the record with a key, or produce to a topic with \
                         cleanup.policy=delete"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks what the broker cannot take on trust in a compressed batch, whose records it
/// stores and serves as the producer compressed them: the codec is known, the records
/// decompress within [`MAX_DECOMPRESSED_BYTES`] (a decompression bomb is refused before its
/// size is allocated), their framing parses and their count is the header's. An
/// uncompressed batch passes untouched (storage validates it as it appends). Runs on the
/// append's blocking thread, before any lock is taken.
fn check_compressed(batch: &Bytes) -> Result<(), ApiError> {
    let compressed = BatchHeader::parse(batch)
        .ok()
        .and_then(|h| h.compression().ok())
        .is_some_and(|codec| codec != Compression::None);
    if !compressed {
        return Ok(());
    }
    let refused = |e: sluice_protocol::Error| {
        ApiError::new(
            ErrorCode::CorruptMessage,
            format!("compressed record batch refused: {e}"),
        )
    };
    RecordBatch::validate(batch.clone())
        .map_err(refused)?
        .validate_compressed_records(MAX_DECOMPRESSED_BYTES)
        .map_err(refused)
}

#[cfg(test)]
pub(crate) mod testing;

mod txn;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod compaction_tests;

#[cfg(test)]
mod txn_tests;

/// Broker ids as a user reads them: `1, 2, 3`.
pub(crate) fn ids(brokers: &[BrokerId]) -> String {
    let ids: Vec<String> = brokers.iter().map(BrokerId::to_string).collect();
    ids.join(", ")
}
