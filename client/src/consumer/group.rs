//! The group side of [`Consumer`]: subscribing, the rebalance steps `poll` goes through,
//! and committing offsets.
//!
//! Phases of a subscribed consumer, driven by `poll` ([`Consumer::group_step`]):
//!
//! ```text
//!  Unjoined --poll--> Joining --join done--> Stable --heartbeat/commit: rejoin--> Revoked
//!     ^                  ^                                                          |
//!     +--join failed     +-------------------------poll----------------------------+
//! ```
//!
//! In `Stable` the consumer fetches its partitions and (with auto-commit) commits every
//! interval. When a heartbeat learns that a rebalance started, the next poll drops the
//! records buffered for the partitions, commits (auto-commit), and returns
//! `PartitionsRevoked` while the member still belongs to its generation, so the caller
//! may commit too; the poll after that starts the join. A member that learns it was
//! fenced returns `PartitionsLost` instead: it cannot commit any more.
//!
//! Commits run as tasks, at most one at a time, and a later commit waits for the earlier
//! one: the coordinator serves requests concurrently, so two commits in flight could land
//! out of order and move a committed offset backwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use sluice_protocol::messages::IsolationLevel;
use tokio::sync::watch;

use super::{Consumer, ConsumerConfig, ConsumerEvent, OffsetReset, OffsetSpec, PartitionState};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::group::{
    commit, fetch_committed, join, leave, AbortOnDrop, CommitOffsets, Coordinator, Generation,
    GroupConfig, JoinOutcome, MemberParams, Rejoin, RejoinSignal, SharedMemberId,
};
use crate::TopicPartition;

/// Where a subscribed consumer is in its group's life.
#[derive(Debug)]
enum Phase {
    /// Not a member: the next poll starts a join.
    Unjoined,
    /// A join is under way.
    Joining(AbortOnDrop<JoinOutcome>),
    /// A member of a generation, consuming its assignment.
    Stable,
    /// The partitions were handed back (the event returned); still a member of the old
    /// generation until the next poll starts the join.
    Revoked,
}

/// A commit under way, with what it commits and as which generation.
#[derive(Debug)]
struct InFlightCommit {
    offsets: CommitOffsets,
    generation: Generation,
    task: AbortOnDrop<Result<()>>,
}

/// The group state of a consumer made with [`Consumer::with_group`].
#[derive(Debug)]
pub(super) struct GroupState {
    config: GroupConfig,
    coordinator: Arc<Coordinator>,
    /// The subscription; `None` while partitions are assigned by the caller (commits are
    /// then "simple" commits, outside group management).
    subscription: Option<Arc<MemberParams>>,
    phase: Phase,
    /// This member's id; empty before the coordinator gave one. Shared with the join task,
    /// which records an id as soon as the coordinator gives it.
    member_id: SharedMemberId,
    /// The generation this member belongs to, in `Stable` and `Revoked`.
    generation: Option<Generation>,
    /// Set when the member learned that its generation went on without it: why. Its
    /// commits are refused until it rejoins.
    fenced: Option<sluice_protocol::ErrorCode>,
    /// Where heartbeats and commits signal that the member must rejoin.
    rejoin_tx: RejoinSignal,
    rejoin_rx: watch::Receiver<Option<(i32, Rejoin)>>,
    /// The current generation's heartbeats.
    heartbeat: Option<AbortOnDrop<()>>,
    /// What the group has committed for the owned partitions, as far as this member knows:
    /// the offsets read when they were assigned, then every successful commit.
    last_committed: CommitOffsets,
    in_flight: Option<InFlightCommit>,
    /// When auto-commit commits next.
    next_auto_commit: Instant,
}

impl GroupState {
    /// Awaits the commit in flight, if any, and takes its outcome into account: what it
    /// committed, or that the member must rejoin. Cancel-safe: the commit stays in flight
    /// when this is dropped.
    async fn settle_commit(&mut self) -> Option<Result<()>> {
        let in_flight = self.in_flight.as_mut()?;
        let result = (&mut in_flight.task).await;
        let done = self.in_flight.take().expect("in flight");
        match &result {
            Ok(()) => self.last_committed.extend(done.offsets),
            Err(e) => {
                let code = match e {
                    Error::Fenced { code, .. } => Some(*code),
                    Error::RebalanceInProgress { .. } => {
                        Some(sluice_protocol::ErrorCode::RebalanceInProgress)
                    }
                    _ => None,
                };
                let current = self.generation.as_ref() == Some(&done.generation);
                if let (Some(reason), true) = (code.and_then(Rejoin::from_code), current) {
                    if self.subscription.is_some() {
                        Rejoin::signal(&self.rejoin_tx, done.generation.generation_id, reason);
                    }
                }
            }
        }
        Some(result)
    }

    /// Takes the outcome of a commit that has finished, without waiting; failures are
    /// logged (an auto-commit's caller is not there to hear them).
    fn reap_commit(&mut self) {
        if !self
            .in_flight
            .as_ref()
            .is_some_and(|c| c.task.is_finished())
        {
            return;
        }
        let outcome = futures_ready(self.settle_commit());
        if let Some(Some(Err(e))) = outcome {
            tracing::warn!(group = %self.config.group_id, error = %e, "auto-commit failed");
        }
    }

    /// Starts committing `offsets` as `generation`; the caller settled any earlier commit.
    fn start_commit(&mut self, generation: Generation, offsets: CommitOffsets) {
        debug_assert!(self.in_flight.is_none(), "one commit at a time");
        let coordinator = self.coordinator.clone();
        let deadline = Instant::now() + coordinator.client().config().request_timeout;
        let (g, o) = (generation.clone(), offsets.clone());
        let task = AbortOnDrop::spawn(async move { commit(&coordinator, &g, &o, deadline).await });
        self.in_flight = Some(InFlightCommit {
            offsets,
            generation,
            task,
        });
    }

    /// The identity commits carry now: the generation for a member, the "simple" one for
    /// an assigned consumer. A fenced member cannot commit; one between generations has
    /// nothing of its own to commit.
    fn commit_generation(&self) -> Result<Generation> {
        if let Some(code) = self.fenced {
            return Err(Error::Fenced {
                group: self.config.group_id.clone(),
                code,
            });
        }
        if self.subscription.is_none() {
            return Ok(Generation::simple());
        }
        self.generation
            .clone()
            .ok_or_else(|| Error::RebalanceInProgress {
                group: self.config.group_id.clone(),
            })
    }

    /// A rejoin signalled for the current generation, if any (marks the signal seen, so
    /// waits end only on news).
    fn pending_rejoin(&mut self) -> Option<Rejoin> {
        let current = self.generation.as_ref()?.generation_id;
        match *self.rejoin_rx.borrow_and_update() {
            Some((generation, reason)) if generation == current => Some(reason),
            _ => None,
        }
    }
}

/// Polls a future once; its output if it was ready. For futures known to be ready (a
/// finished task's handle).
fn futures_ready<F: std::future::Future>(future: F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// The offsets `commit()` sends: the position of each owned partition whose position is
/// known (no lookup pending) and differs from what the group has committed. A position is
/// the offset after the last record `poll` returned (or where consumption starts), never
/// past records only buffered.
pub(super) fn consumed_offsets(
    partitions: &BTreeMap<TopicPartition, PartitionState>,
    last_committed: &CommitOffsets,
) -> CommitOffsets {
    partitions
        .iter()
        .filter(|(_, s)| s.reset.is_none() && s.position >= 0)
        .filter(|(tp, s)| last_committed.get(*tp) != Some(&s.position))
        .map(|(tp, s)| (tp.clone(), s.position))
        .collect()
}

/// Checks explicit offsets to commit: every partition owned, every offset valid.
pub(super) fn check_explicit(
    offsets: &CommitOffsets,
    owned: &BTreeMap<TopicPartition, PartitionState>,
) -> Result<()> {
    for (tp, &offset) in offsets {
        if !owned.contains_key(tp) {
            return Err(Error::NotAssigned {
                topic: tp.topic.clone(),
                partition: tp.partition,
            });
        }
        if offset < 0 {
            return Err(Error::InvalidArgument(format!(
                "cannot commit offset {offset} for {tp}; offsets start at 0"
            )));
        }
    }
    Ok(())
}

impl Consumer {
    /// A consumer in consumer group `group`: [`Consumer::subscribe`] then lets the group
    /// assign it partitions, and [`Consumer::commit`] stores its progress in the group.
    /// (A consumer with a group may instead [`Consumer::assign`] partitions itself; its
    /// commits are then accepted only while the group has no members.)
    ///
    /// `config.auto_offset_reset` says where a newly assigned partition without a
    /// committed offset starts. Fails for a [`GroupConfig`] that does not
    /// [`GroupConfig::validate`].
    ///
    /// A member that processes records and then commits them, so that a member taking
    /// over its partitions after a crash starts after what was processed (at least once):
    ///
    /// ```
    /// use std::time::Duration;
    /// use sluice_client::{
    ///     Client, ClientConfig, Consumer, ConsumerConfig, GroupConfig, OffsetReset, PartitionId,
    ///     TopicPartition,
    /// };
    /// # use sluice_client::{Admin, NewTopic, Producer, ProducerConfig, ProducerRecord};
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cluster = sluice_testkit::Cluster::start(1).await?;
    /// # let config = ClientConfig { bootstrap: cluster.bootstrap_servers(), ..ClientConfig::default() };
    /// let client = Client::connect(config).await?;
    /// # Admin::new(client.clone()).create_topic(NewTopic::new("orders", 1, 1)).await?;
    /// # let producer = Producer::new(client.clone(), ProducerConfig::default());
    /// # producer.send(ProducerRecord::new("orders", "pizza")).await?.await?;
    /// let mut consumer = Consumer::with_group(
    ///     client,
    ///     ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() },
    ///     GroupConfig { enable_auto_commit: false, ..GroupConfig::new("billing") },
    /// )?;
    /// consumer.subscribe(["orders"])?;
    /// let mut n_processed = 0;
    /// while n_processed == 0 {
    ///     // The first poll joins the group and gets its partitions.
    ///     let records = consumer.poll(Duration::from_secs(1)).await?;
    ///     for record in &records {
    ///         println!("{}/{}@{}", record.topic, record.partition, record.offset);
    ///     }
    ///     n_processed += records.len();
    ///     consumer.commit().await?; // the positions after the records just returned
    /// }
    /// let orders_0 = TopicPartition::new("orders", PartitionId(0));
    /// let committed = consumer.committed(&[orders_0.clone()]).await?;
    /// assert_eq!(committed[&orders_0], 1);
    /// consumer.close().await?; // leaves the group: its partitions go to the others now
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_group(
        client: Client,
        config: ConsumerConfig,
        group: GroupConfig,
    ) -> Result<Consumer> {
        group.validate()?;
        let coordinator = Arc::new(Coordinator::new(client.clone(), group.group_id.clone()));
        let (rejoin_tx, rejoin_rx) = watch::channel(None);
        let mut consumer = Consumer::new(client, config);
        consumer.group = Some(GroupState {
            next_auto_commit: Instant::now() + group.auto_commit_interval,
            config: group,
            coordinator,
            subscription: None,
            phase: Phase::Unjoined,
            member_id: SharedMemberId::default(),
            generation: None,
            fenced: None,
            rejoin_tx,
            rejoin_rx,
            heartbeat: None,
            last_committed: CommitOffsets::new(),
            in_flight: None,
        });
        Ok(consumer)
    }

    /// Subscribes to `topics` through the group: the next `poll` joins it, and the group
    /// shares the topics' partitions among its members. Subscribing again with other
    /// topics rejoins with them at the next poll. [`Error::NoGroup`] for a consumer
    /// without a group; an error for one that has assigned partitions itself.
    pub fn subscribe<I, T>(&mut self, topics: I) -> Result<()>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let mut topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        topics.sort();
        topics.dedup();
        let assigned = !self.partitions.is_empty();
        let group = self.group.as_mut().ok_or(Error::NoGroup)?;
        if topics.is_empty() || topics.iter().any(String::is_empty) {
            return Err(Error::InvalidArgument(
                "subscribe to at least one topic, by a non-empty name".to_owned(),
            ));
        }
        if group.subscription.is_none() && assigned {
            return Err(Error::InvalidArgument(
                "this consumer has assigned partitions itself, so it cannot also subscribe; use another consumer".to_owned(),
            ));
        }
        if group
            .subscription
            .as_ref()
            .is_some_and(|s| s.topics == topics)
        {
            return Ok(());
        }
        group.subscription = Some(Arc::new(MemberParams {
            config: group.config.clone(),
            topics,
            require_stable: self.config.isolation_level == IsolationLevel::ReadCommitted,
        }));
        if let (Phase::Stable, Some(generation)) = (&group.phase, &group.generation) {
            Rejoin::signal(
                &group.rejoin_tx,
                generation.generation_id,
                Rejoin::Rebalance,
            );
        }
        Ok(())
    }

    /// Whether this consumer's partitions come from its group.
    pub(super) fn is_subscribed(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g.subscription.is_some())
    }

    /// The group generation this consumer belongs to and its member id, while it is a
    /// member (between a join and the next rebalance).
    pub fn group_generation(&self) -> Option<(i32, String)> {
        let group = self.group.as_ref()?;
        let generation = group.generation.as_ref()?;
        Some((generation.generation_id, generation.member_id.clone()))
    }

    /// Commits the position of every owned partition that moved since the last commit:
    /// the offset after the last record `poll` returned from it (records fetched ahead
    /// but not returned are not committed). Waits for the coordinator's answer.
    /// [`Error::Fenced`] when the group went on without this member,
    /// [`Error::RebalanceInProgress`] when it refused the commit while rebalancing,
    /// [`Error::NoGroup`] without a group.
    pub async fn commit(&mut self) -> Result<()> {
        let group = self.group.as_ref().ok_or(Error::NoGroup)?;
        let offsets = consumed_offsets(&self.partitions, &group.last_committed);
        self.commit_sync(offsets).await
    }

    /// Commits `offsets` (per partition, the offset of the next record to consume), which
    /// must all be of partitions this consumer owns in its current generation
    /// ([`Error::NotAssigned`] otherwise). Errors as for [`Consumer::commit`].
    pub async fn commit_offsets(&mut self, offsets: BTreeMap<TopicPartition, i64>) -> Result<()> {
        if self.group.is_none() {
            return Err(Error::NoGroup);
        }
        check_explicit(&offsets, &self.partitions)?;
        self.commit_sync(offsets).await
    }

    /// The group's committed offsets of `partitions` (those without one are left out),
    /// read from the coordinator now.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let group = self.group.as_ref().ok_or(Error::NoGroup)?;
        let deadline = Instant::now() + self.client.config().request_timeout;
        let stable = self.config.isolation_level == IsolationLevel::ReadCommitted;
        fetch_committed(&group.coordinator, Some(partitions), Some(deadline), stable).await
    }

    /// Commits after any commit in flight, and waits for the answer.
    async fn commit_sync(&mut self, offsets: CommitOffsets) -> Result<()> {
        let group = self.group.as_mut().ok_or(Error::NoGroup)?;
        if let Some(Err(e)) = group.settle_commit().await {
            tracing::debug!(group = %group.config.group_id, error = %e, "an earlier commit failed");
        }
        let generation = group.commit_generation()?;
        if offsets.is_empty() {
            return Ok(());
        }
        group.start_commit(generation, offsets);
        group.settle_commit().await.unwrap_or(Ok(()))
    }

    /// Closes the consumer: with auto-commit, commits the positions of its partitions;
    /// then leaves the group (so it rebalances at once rather than after the session
    /// timeout). The result is the commit's. Dropping a consumer without closing it stops
    /// its heartbeats; the group then notices after the session timeout.
    pub async fn close(mut self) -> Result<()> {
        let Some(group) = self.group.as_ref() else {
            return Ok(());
        };
        let member = matches!(group.phase, Phase::Stable | Phase::Revoked)
            && group.fenced.is_none()
            && group.generation.is_some();
        let commit = group.config.enable_auto_commit && (member || group.subscription.is_none());
        let result = if commit {
            self.commit().await
        } else {
            if let Some(group) = self.group.as_mut() {
                let _ = group.settle_commit().await;
            }
            Ok(())
        };
        let Some(mut group) = self.group.take() else {
            return result;
        };
        group.heartbeat = None;
        // Stop the join first: it may be waiting in the coordinator's join phase.
        group.phase = Phase::Unjoined;
        let member_id = group.member_id.get();
        if group.subscription.is_some() && !member_id.is_empty() {
            leave(&group.coordinator, &member_id, "the consumer closed").await;
        }
        result
    }

    /// The time poll's wait must end for the group: the next auto-commit, unless a commit
    /// is in flight (the auto-commit then waits for it, and a wake-up now would spin).
    pub(super) fn group_wake_at(&self) -> Option<Instant> {
        let group = self.group.as_ref()?;
        let stable = matches!(group.phase, Phase::Stable) || group.subscription.is_none();
        (group.config.enable_auto_commit && stable && group.in_flight.is_none())
            .then_some(group.next_auto_commit)
    }

    /// A receiver that wakes poll's wait when the member must rejoin.
    pub(super) fn group_signal(&self) -> Option<watch::Receiver<Option<(i32, Rejoin)>>> {
        let group = self.group.as_ref()?;
        group.subscription.as_ref()?;
        Some(group.rejoin_rx.clone())
    }

    /// One step of the group's life at the top of every poll iteration: an event to return
    /// (a rebalance step, or no records when the join outlasts the poll), or `None` to go
    /// on fetching.
    pub(super) async fn group_step(&mut self, deadline: Instant) -> Result<Option<ConsumerEvent>> {
        let Some(group) = self.group.as_mut() else {
            return Ok(None);
        };
        group.reap_commit();
        if group.subscription.is_none() {
            self.maybe_auto_commit();
            return Ok(None);
        }
        match group.phase {
            Phase::Stable => {
                if let Some(reason) = group.pending_rejoin() {
                    return self.revoke(reason).await.map(Some);
                }
                self.maybe_auto_commit();
                Ok(None)
            }
            Phase::Unjoined | Phase::Revoked => {
                self.start_join();
                self.await_join(deadline).await
            }
            Phase::Joining(_) => self.await_join(deadline).await,
        }
    }

    /// Starts an auto-commit when one is due and none is in flight.
    fn maybe_auto_commit(&mut self) {
        let Some(group) = self.group.as_mut() else {
            return;
        };
        let now = Instant::now();
        if !group.config.enable_auto_commit
            || group.in_flight.is_some()
            || now < group.next_auto_commit
        {
            return;
        }
        group.next_auto_commit = now + group.config.auto_commit_interval;
        let Ok(generation) = group.commit_generation() else {
            return;
        };
        let offsets = consumed_offsets(&self.partitions, &group.last_committed);
        if !offsets.is_empty() {
            group.start_commit(generation, offsets);
        }
    }

    /// Hands the partitions back: drops what was fetched for them and not returned, and
    /// either commits (auto-commit) and returns `PartitionsRevoked`, or, for a fenced
    /// member, returns `PartitionsLost`.
    async fn revoke(&mut self, reason: Rejoin) -> Result<ConsumerEvent> {
        let owned = self.assignment();
        self.buffered.clear();
        for state in self.partitions.values_mut() {
            state.buffered = false;
        }
        let group = self.group.as_mut().expect("a subscribed consumer");
        group.phase = Phase::Revoked;
        tracing::info!(group = %group.config.group_id, ?reason, partitions = owned.len(), "handing partitions back");
        if let Some(code) = reason.fencing_code() {
            group.fenced = Some(code);
            group.heartbeat = None;
            if reason == Rejoin::UnknownMember {
                group.member_id.set("");
            }
            return Ok(ConsumerEvent::PartitionsLost(owned));
        }
        if group.config.enable_auto_commit {
            if let Err(e) = self.commit().await {
                tracing::warn!(error = %e, "committing before handing partitions back failed");
            }
        }
        Ok(ConsumerEvent::PartitionsRevoked(owned))
    }

    /// Leaves the old generation behind (partitions, buffers, heartbeats) and starts the
    /// join task.
    fn start_join(&mut self) {
        self.partitions.clear();
        self.buffered.clear();
        self.stale_topics.clear();
        self.missing.clear();
        let group = self.group.as_mut().expect("a subscribed consumer");
        let params = group.subscription.clone().expect("a subscribed consumer");
        group.heartbeat = None;
        group.generation = None;
        group.fenced = None;
        group.last_committed.clear();
        group.rejoin_tx.send_replace(None);
        let task = AbortOnDrop::spawn(join(
            group.coordinator.clone(),
            params,
            group.member_id.clone(),
            group.rejoin_tx.clone(),
        ));
        group.phase = Phase::Joining(task);
    }

    /// Waits for the join until `deadline`: `PartitionsAssigned` when it completed, no
    /// records when it goes on, its error when it failed (the next poll joins again).
    async fn await_join(&mut self, deadline: Instant) -> Result<Option<ConsumerEvent>> {
        let group = self.group.as_mut().expect("a subscribed consumer");
        let Phase::Joining(task) = &mut group.phase else {
            return Ok(None);
        };
        let Ok(outcome) = tokio::time::timeout_at(deadline.into(), task).await else {
            return Ok(Some(ConsumerEvent::Records(Vec::new())));
        };
        group.member_id.set(&outcome.member_id);
        let joined = match outcome.result {
            Ok(joined) => joined,
            Err(e) => {
                group.phase = Phase::Unjoined;
                return Err(e);
            }
        };
        group.generation = Some(joined.generation);
        group.heartbeat = Some(joined.heartbeat);
        group.phase = Phase::Stable;
        group.next_auto_commit = Instant::now() + group.config.auto_commit_interval;
        group.last_committed = joined.committed.clone();
        let group_id = group.config.group_id.clone();
        let (partitions, missing) = starting_positions(
            &joined.assignment,
            &joined.committed,
            self.config.auto_offset_reset,
        );
        self.partitions = partitions;
        if let Some(tp) = missing {
            return Err(Error::NoCommittedOffset {
                group: group_id,
                topic: tp.topic,
                partition: tp.partition,
            });
        }
        Ok(Some(ConsumerEvent::PartitionsAssigned(joined.assignment)))
    }
}

/// Where each newly assigned partition starts: at its committed offset (a position a
/// leader has confirmed), else where `reset` says (looked up at the next poll). With [`OffsetReset::None`] a partition
/// without a committed offset has no valid position; the first is returned.
pub(super) fn starting_positions(
    assignment: &[TopicPartition],
    committed: &CommitOffsets,
    reset: OffsetReset,
) -> (
    BTreeMap<TopicPartition, PartitionState>,
    Option<TopicPartition>,
) {
    let mut missing = None;
    let partitions = assignment
        .iter()
        .map(|tp| {
            let state = match committed.get(tp) {
                // A committed offset was consumed up to, so a leader had it below its high
                // watermark: a leader answering OFFSET_OUT_OF_RANGE there is one that has
                // not caught up, or a deposed one still serving (a paused broker resumed
                // with its old metadata, which a new client may have read): waited out
                // with a metadata refresh, not reset to the earliest offset, which would
                // consume the whole partition again.
                Some(&offset) => PartitionState::new(offset, offset),
                None => {
                    let mut state = PartitionState::new(-1, -1);
                    state.reset = match reset {
                        OffsetReset::Earliest => Some(OffsetSpec::Earliest),
                        OffsetReset::Latest => Some(OffsetSpec::Latest),
                        OffsetReset::None => {
                            missing.get_or_insert_with(|| tp.clone());
                            None
                        }
                    };
                    state
                }
            };
            (tp.clone(), state)
        })
        .collect();
    (partitions, missing)
}

#[cfg(test)]
mod tests;
