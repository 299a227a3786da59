//! [`Consumer`]: reads partitions from their leaders, with prefetch; the partitions are
//! assigned by the caller ([`Consumer::assign`]) or by a consumer group
//! ([`Consumer::subscribe`], in `consumer/group.rs`).
//!
//! Fetches are grouped per leader broker, one in flight per broker at a time; each runs as
//! its own task, so the next fetch is on the wire while the caller processes what the
//! previous one returned. A partition is fetched again only when the records buffered for
//! it have been handed out, which bounds memory at about one fetch per broker plus one
//! buffered response per partition. Records are zero-copy slices of the response frame.
//!
//! Failover: every fetch and offset lookup carries the partition's leader epoch from the
//! metadata. A partition whose fetch fails with a leadership error (NOT_LEADER_OR_FOLLOWER,
//! FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, LEADER_NOT_AVAILABLE...) or whose leader
//! cannot be reached backs off (exponentially, per partition, so the others go on), its
//! topic's metadata is refreshed, and it is fetched again from whichever broker leads it
//! then, at the same position: a failover never moves a position. `poll` swallows such
//! transient failures (they are retried within and across polls) and returns only errors
//! that retrying cannot fix.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::{Batches, Header, RecordBatch};
use sluice_protocol::control::{ControlMarker, ControlType};
use sluice_protocol::messages::{
    AbortedTransaction, FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse,
    FetchTopic, IsolationLevel, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use sluice_protocol::{
    BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId, Records, Request, Response,
};
use tokio::task::JoinSet;

use crate::backoff::{Backoff, Jitter};
use crate::client::{leaderless, unexpected, Client, LOOKUP_ATTEMPTS};
use crate::error::{Error, Result};
use crate::TopicPartition;

/// Where to start reading a partition.
///
/// ```no_run
/// # async fn demo(mut consumer: sluice_client::Consumer) -> sluice_client::Result<()> {
/// use sluice_client::{OffsetSpec, PartitionId};
/// // Re-read the last hour.
/// let an_hour_ago = 1_700_000_000_000 - 3_600_000;
/// consumer.seek("orders", PartitionId(0), OffsetSpec::Timestamp(an_hour_ago)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first record still in the log.
    Earliest,
    /// The end of the log (the high watermark): only records produced from now on.
    Latest,
    /// This offset.
    Offset(i64),
    /// The first record with a timestamp at or after this many ms since the Unix epoch
    /// (the end of the log when there is none).
    Timestamp(i64),
}

/// What to do when the position is outside the log (OFFSET_OUT_OF_RANGE), for example
/// after retention deleted the records it pointed at.
///
/// ```
/// use sluice_client::{ConsumerConfig, OffsetReset};
/// assert_eq!(ConsumerConfig::default().auto_offset_reset, OffsetReset::Latest);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetReset {
    /// Move to the first record still in the log.
    Earliest,
    /// Move to the end of the log. The default.
    #[default]
    Latest,
    /// Fail `poll` with [`Error::OffsetOutOfRange`].
    None,
}

/// Consumer settings.
///
/// ```
/// use std::time::Duration;
/// use sluice_client::{ConsumerConfig, OffsetReset};
/// let config = ConsumerConfig { auto_offset_reset: OffsetReset::Earliest, ..ConsumerConfig::default() };
/// assert_eq!(config.fetch_max_wait, Duration::from_millis(500));
/// ```
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// How long the broker may hold a fetch waiting for `fetch_min_bytes`. Default 500 ms.
    pub fetch_max_wait: Duration,
    /// Bytes worth answering a fetch with before `fetch_max_wait`. Default 1.
    pub fetch_min_bytes: i32,
    /// Most bytes in one fetch response (capped below the client's frame limit).
    /// Default 50 MiB.
    pub fetch_max_bytes: i32,
    /// Most bytes per partition in one fetch response. Default 1 MiB.
    pub partition_max_bytes: i32,
    /// What to do when the position is outside the log. Default [`OffsetReset::Latest`].
    pub auto_offset_reset: OffsetReset,
    /// Most records one `poll` returns. Default 500.
    pub max_poll_records: usize,
    /// Wait after a failed fetch or offset lookup before that partition is tried again;
    /// doubles with each further failure of the partition, up to `retry_backoff_max`,
    /// jittered by up to 20%. Default 100 ms.
    pub retry_backoff: Duration,
    /// Longest wait between retries of a partition. Default 1 s.
    pub retry_backoff_max: Duration,
    /// How long an assigned topic (or partition) may be missing from the cluster's metadata
    /// before `poll` fails with [`Error::UnknownTopic`] (or [`Error::UnknownPartition`]):
    /// a broker that restarted may not have caught up with the metadata yet. Default 10 s.
    pub unknown_topic_wait: Duration,
    /// How long a position that a leader has confirmed (it was at or below a high
    /// watermark) may be answered OFFSET_OUT_OF_RANGE before `auto_offset_reset` applies.
    /// A new leader whose high watermark has not caught up answers so for a moment; the
    /// consumer waits rather than rewind or skip. Past this wait the log really lost the
    /// position (an unclean election, or the topic deleted and created again). Default 30 s.
    pub leader_catch_up_wait: Duration,
    /// Which records `poll` returns. [`IsolationLevel::ReadUncommitted`] (the default, as
    /// in Kafka): every record below the high watermark, transactional ones whether or not
    /// their transaction committed. [`IsolationLevel::ReadCommitted`]: only records whose
    /// transaction committed (and non-transactional ones), up to the last stable offset;
    /// "latest" positions are the last stable offset too.
    pub isolation_level: IsolationLevel,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            auto_offset_reset: OffsetReset::Latest,
            max_poll_records: 500,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            unknown_topic_wait: Duration::from_secs(10),
            leader_catch_up_wait: Duration::from_secs(30),
            isolation_level: IsolationLevel::ReadUncommitted,
        }
    }
}

/// A record read from a partition. Key, value and headers are slices of the fetched
/// response (no copy).
///
/// ```no_run
/// # async fn demo(mut consumer: sluice_client::Consumer) -> sluice_client::Result<()> {
/// use std::time::Duration;
/// for record in consumer.poll(Duration::from_secs(1)).await? {
///     let value = record.value.as_deref().map(String::from_utf8_lossy);
///     println!("{}/{}@{}: {:?}", record.topic, record.partition, record.offset, value);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: PartitionId,
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value (null for a tombstone).
    pub value: Option<Bytes>,
    /// The headers, in order: key (UTF-8 by convention) and nullable value.
    pub headers: Vec<Header>,
}

/// What [`Consumer::poll_event`] returns: records, or a step of a group rebalance.
///
/// Rebalances are eager: every partition is handed back (revoked, or lost) before the
/// member rejoins, and the new assignment arrives whole.
///
/// ```no_run
/// # async fn demo(mut consumer: sluice_client::Consumer) -> sluice_client::Result<()> {
/// use std::time::Duration;
/// use sluice_client::ConsumerEvent;
/// loop {
///     match consumer.poll_event(Duration::from_secs(1)).await? {
///         ConsumerEvent::Records(records) => {
///             for record in records {
///                 println!("{}/{}@{}", record.topic, record.partition, record.offset);
///             }
///             consumer.commit().await?;
///         }
///         // Flush per-partition state (caches, open files) of partitions going away.
///         ConsumerEvent::PartitionsRevoked(partitions) => println!("revoked {partitions:?}"),
///         // Another member may own these already: drop their state without committing.
///         ConsumerEvent::PartitionsLost(partitions) => println!("lost {partitions:?}"),
///         ConsumerEvent::PartitionsAssigned(partitions) => println!("now own {partitions:?}"),
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerEvent {
    /// Records, in order per partition; empty when the timeout passed first.
    Records(Vec<ConsumerRecord>),
    /// A rebalance started: these partitions (every one this member owned) are about to
    /// go back to the group. Records fetched for them and not yet returned were dropped;
    /// until the next poll they are still this member's, so commit their progress now
    /// (auto-commit, when enabled, already did).
    PartitionsRevoked(Vec<TopicPartition>),
    /// The group went on without this member (its session expired, or it was fenced):
    /// these partitions may already be another member's, and commits for them are
    /// refused. The next poll rejoins.
    PartitionsLost(Vec<TopicPartition>),
    /// The member joined a new generation and owns these partitions now; each starts at
    /// the group's committed offset, or where `auto_offset_reset` says when there is none.
    PartitionsAssigned(Vec<TopicPartition>),
}

/// Per assigned partition.
#[derive(Debug)]
struct PartitionState {
    /// Offset of the next record to hand out.
    position: i64,
    /// Records of this partition are buffered; no fetch until they are handed out.
    buffered: bool,
    /// The position is to be looked up again before the next fetch (an OFFSET_OUT_OF_RANGE
    /// reset by `auto_offset_reset`).
    reset: Option<OffsetSpec>,
    /// No fetch or lookup before this, after a failure.
    retry_at: Option<Instant>,
    /// Failures in a row, for the backoff.
    failures: u32,
    /// The highest offset a leader has shown to exist: a high watermark it reported, an
    /// offset it returned for a lookup, or the group's committed offset the position
    /// started from (records were consumed up to it); -1 before any. Committed records are never lost
    /// (elections are clean), so a position at or below it is valid even when a new
    /// leader, not caught up yet, answers OFFSET_OUT_OF_RANGE for it: that is waited out,
    /// never "reset" into a rewind or a skip.
    confirmed_end: i64,
    /// Since when fetches at a confirmed position have been answered OFFSET_OUT_OF_RANGE.
    lagging_since: Option<Instant>,
}

impl PartitionState {
    fn new(position: i64, confirmed_end: i64) -> PartitionState {
        PartitionState {
            position,
            buffered: false,
            reset: None,
            retry_at: None,
            failures: 0,
            confirmed_end,
            lagging_since: None,
        }
    }

    /// Whether the partition may be fetched or looked up now.
    fn is_due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| t <= now)
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
        self.lagging_since = None;
    }
}

/// Records of one partition from one fetch, waiting to be handed out.
struct Buffered {
    tp: TopicPartition,
    records: VecDeque<ConsumerRecord>,
    /// Where the position goes once all of them are handed out (the end of the last batch).
    next_position: i64,
}

/// The result of one fetch task.
struct FetchOutcome {
    broker: BrokerId,
    /// The offsets fetched from, to tell stale answers (after a seek) apart.
    requested: HashMap<TopicPartition, i64>,
    result: Result<FetchResponse>,
}

/// A position resolved from an [`OffsetSpec`], and whether a leader returned it (so it is
/// known to exist) rather than the caller naming it.
type Resolved = (TopicPartition, i64, bool);

/// Reads records from partitions assigned by the caller ([`Consumer::assign`]), or, made
/// with [`Consumer::with_group`], by its consumer group ([`Consumer::subscribe`]; see
/// [`Consumer::poll_event`] for rebalances and [`Consumer::commit`] for offsets).
///
/// ```no_run
/// # async fn demo() -> sluice_client::Result<()> {
/// use std::time::Duration;
/// use sluice_client::{Client, ClientConfig, Consumer, ConsumerConfig, OffsetSpec, PartitionId};
/// let client = Client::connect(ClientConfig::default()).await?;
/// let mut consumer = Consumer::new(client, ConsumerConfig::default());
/// consumer.assign(vec![("orders".to_owned(), PartitionId(0), OffsetSpec::Earliest)]).await?;
/// loop {
///     for record in consumer.poll(Duration::from_secs(1)).await? {
///         println!("{} {:?}", record.offset, record.value);
///     }
/// }
/// # }
/// ```
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    buffered: VecDeque<Buffered>,
    in_flight: JoinSet<FetchOutcome>,
    /// Brokers with a fetch in flight (at most one each).
    fetching: HashSet<BrokerId>,
    /// Topics whose metadata must be refreshed before their partitions are fetched again.
    stale_topics: BTreeSet<String>,
    /// Assigned topics missing from the metadata (or missing an assigned partition), and
    /// since when.
    missing: HashMap<String, Instant>,
    jitter: Jitter,
    /// The consumer group, for a consumer made with [`Consumer::with_group`].
    group: Option<group::GroupState>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// How long past its max wait a fetch may go unanswered before the consumer checks
/// whether the leader it waits on was replaced.
const FETCH_LEADER_CHECK_MARGIN: Duration = Duration::from_millis(250);

impl Consumer {
    /// A consumer over `client`, with nothing assigned.
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            partitions: BTreeMap::new(),
            buffered: VecDeque::new(),
            in_flight: JoinSet::new(),
            fetching: HashSet::new(),
            stale_topics: BTreeSet::new(),
            missing: HashMap::new(),
            jitter: Jitter::new(),
            group: None,
        }
    }

    /// Replaces the assignment with `partitions`, each starting where its [`OffsetSpec`]
    /// says (resolved now with ListOffsets, retried through a leader failover). Fails for a
    /// topic or partition that does not exist, or when a position cannot be looked up.
    pub async fn assign(
        &mut self,
        partitions: Vec<(String, PartitionId, OffsetSpec)>,
    ) -> Result<()> {
        if self.is_subscribed() {
            return Err(Error::InvalidArgument(
                "this consumer subscribes to topics through its group, so it cannot also assign partitions; use another consumer".to_owned(),
            ));
        }
        let resolved = self.resolve(&partitions).await?;
        self.partitions.clear();
        self.buffered.clear();
        self.stale_topics.clear();
        self.missing.clear();
        for (tp, position, confirmed) in resolved {
            let confirmed_end = if confirmed { position } else { -1 };
            self.partitions
                .insert(tp, PartitionState::new(position, confirmed_end));
        }
        Ok(())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// Moves an assigned partition's position; records buffered for it are dropped.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: PartitionId,
        spec: OffsetSpec,
    ) -> Result<()> {
        let tp = TopicPartition::new(topic, partition);
        if !self.partitions.contains_key(&tp) {
            return Err(Error::NotAssigned {
                topic: topic.to_owned(),
                partition,
            });
        }
        let resolved = self.resolve(&[(topic.to_owned(), partition, spec)]).await?;
        for (tp, position, confirmed) in resolved {
            self.set_position(&tp, position, confirmed);
        }
        Ok(())
    }

    /// The offset of the next record `poll` will return from this partition, or `None`
    /// when it is not assigned.
    pub fn position(&self, topic: &str, partition: PartitionId) -> Option<i64> {
        self.partitions
            .get(&TopicPartition::new(topic, partition))
            .map(|s| s.position)
    }

    /// Returns the records available now, or waits up to `timeout` for some; an empty
    /// vector when none arrived in time. Fetching goes on in the background between calls.
    ///
    /// Transient failures (a leader that moved or died, metadata that could not be
    /// refreshed, an election under way) are retried, within this call and the next ones,
    /// and not returned. Errors are those retrying cannot fix: a topic or partition missing
    /// for longer than `unknown_topic_wait`, OFFSET_OUT_OF_RANGE with
    /// [`OffsetReset::None`], a corrupt batch, a non-retriable broker error.
    ///
    /// A group-managed consumer ([`Consumer::subscribe`]) also joins its group here and
    /// goes through rebalances: it commits (with auto-commit) and hands its partitions
    /// back, rejoins, and starts on its new partitions, without telling the caller. Use
    /// [`Consumer::poll_event`] to hear of those steps and commit in between.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_event(deadline).await? {
                ConsumerEvent::Records(records) => return Ok(records),
                event => tracing::debug!(?event, "rebalance step inside poll"),
            }
        }
    }

    /// Like [`Consumer::poll`], but a group-managed consumer also returns the steps of a
    /// rebalance as they happen, so the caller can act on them between polls: when it
    /// returns [`ConsumerEvent::PartitionsRevoked`], the partitions are still this
    /// member's until the next call, and [`Consumer::commit`] or
    /// [`Consumer::commit_offsets`] commit their progress (Kafka's "commit in the revoked
    /// callback"). `Records` with no records means the timeout passed.
    ///
    /// ```no_run
    /// # async fn demo(mut consumer: sluice_client::Consumer) -> sluice_client::Result<()> {
    /// use std::time::Duration;
    /// use sluice_client::ConsumerEvent;
    /// loop {
    ///     match consumer.poll_event(Duration::from_secs(1)).await? {
    ///         ConsumerEvent::Records(records) => { /* process, then maybe commit */ }
    ///         ConsumerEvent::PartitionsRevoked(_) => consumer.commit().await?,
    ///         ConsumerEvent::PartitionsLost(lost) => eprintln!("lost {lost:?}"),
    ///         ConsumerEvent::PartitionsAssigned(assigned) => eprintln!("now own {assigned:?}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn poll_event(&mut self, timeout: Duration) -> Result<ConsumerEvent> {
        self.next_event(Instant::now() + timeout).await
    }

    /// The next rebalance step, or the records available by `deadline`.
    async fn next_event(&mut self, deadline: Instant) -> Result<ConsumerEvent> {
        loop {
            if let Some(event) = self.group_step(deadline).await? {
                return Ok(event);
            }
            let records = self.take_buffered();
            if !records.is_empty() {
                self.send_fetches();
                return Ok(ConsumerEvent::Records(records));
            }
            self.refresh_stale(deadline).await?;
            self.reset_positions(deadline).await?;
            self.send_fetches();
            let wait_until = [self.next_retry(), self.group_wake_at()]
                .into_iter()
                .flatten()
                .fold(deadline, Instant::min);
            // A heartbeat that learns of a rebalance ends the wait.
            let rejoin = self.group_signal();
            let rejoin_signalled = async move {
                match rejoin {
                    Some(mut rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            let next = if self.in_flight.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep_until(wait_until.into()) => {}
                    _ = rejoin_signalled => {}
                }
                None
            } else {
                tokio::select! {
                    joined = tokio::time::timeout_at(wait_until.into(), self.in_flight.join_next()) => {
                        joined.ok().flatten()
                    }
                    _ = rejoin_signalled => None,
                }
            };
            if let Some(joined) = next {
                match joined {
                    Ok(outcome) => self.handle_fetch(outcome)?,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => tracing::debug!(error = %e, "a fetch task was cancelled"),
                }
                continue;
            }
            if Instant::now() >= deadline {
                return Ok(ConsumerEvent::Records(Vec::new()));
            }
        }
    }

    /// Hands out up to `max_poll_records` buffered records, advancing positions.
    fn take_buffered(&mut self) -> Vec<ConsumerRecord> {
        let mut out = Vec::new();
        while out.len() < self.config.max_poll_records {
            let Some(front) = self.buffered.front_mut() else {
                break;
            };
            let Some(state) = self.partitions.get_mut(&front.tp) else {
                self.buffered.pop_front();
                continue;
            };
            let take = (self.config.max_poll_records - out.len()).min(front.records.len());
            for record in front.records.drain(..take) {
                state.position = record.offset + 1;
                out.push(record);
            }
            if front.records.is_empty() {
                state.position = state.position.max(front.next_position);
                state.buffered = false;
                self.buffered.pop_front();
            }
        }
        out
    }

    /// The earliest future time a partition in backoff may be tried again.
    fn next_retry(&self) -> Option<Instant> {
        let now = Instant::now();
        self.partitions
            .values()
            .filter_map(|s| s.retry_at)
            .filter(|&t| t > now)
            .min()
    }

    /// Sends a fetch to every leader that has none in flight, for its assigned partitions
    /// that have nothing buffered, no reset pending, no backoff running and fresh enough
    /// metadata. Uses the cached metadata only; what it lacks is marked for a refresh.
    fn send_fetches(&mut self) {
        let now = Instant::now();
        let mut by_leader: BTreeMap<BrokerId, Vec<(TopicPartition, i64, LeaderEpoch)>> =
            BTreeMap::new();
        let mut without_leader = Vec::new();
        let mut stale = Vec::new();
        for (tp, state) in &self.partitions {
            if state.buffered || state.reset.is_some() || !state.is_due(now) {
                continue;
            }
            if self.stale_topics.contains(&tp.topic) {
                continue;
            }
            let found = self
                .client
                .cached_topic(&tp.topic)
                .and_then(|m| m.partition(tp.partition).ok().cloned());
            let Some(p) = found else {
                stale.push(tp.topic.clone());
                continue;
            };
            if p.leader == BrokerId::NONE {
                without_leader.push(tp.clone());
                continue;
            }
            if !self.fetching.contains(&p.leader) {
                by_leader.entry(p.leader).or_default().push((
                    tp.clone(),
                    state.position,
                    p.leader_epoch,
                ));
            }
        }
        self.stale_topics.extend(stale);
        for tp in without_leader {
            // Look again after a backoff; the election may be over by then.
            let e = leaderless(&tp.topic, tp.partition);
            self.partition_failed(&tp, &e);
        }
        for (broker, partitions) in by_leader {
            self.spawn_fetch(broker, partitions);
        }
    }

    fn spawn_fetch(
        &mut self,
        broker: BrokerId,
        partitions: Vec<(TopicPartition, i64, LeaderEpoch)>,
    ) {
        let max_bytes = self
            .config
            .fetch_max_bytes
            .min(i32::try_from(self.client.config().max_frame_bytes / 2).unwrap_or(i32::MAX));
        let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
        let mut requested = HashMap::new();
        for (tp, offset, epoch) in partitions {
            topics
                .entry(tp.topic.clone())
                .or_default()
                .push(FetchPartition {
                    partition: tp.partition,
                    current_leader_epoch: epoch,
                    fetch_offset: Offset(offset),
                    partition_max_bytes: self.config.partition_max_bytes.min(max_bytes),
                });
            requested.insert(tp, offset);
        }
        let request = Request::Fetch(FetchRequest {
            max_wait_ms: i32::try_from(self.config.fetch_max_wait.as_millis()).unwrap_or(i32::MAX),
            min_bytes: self.config.fetch_min_bytes,
            max_bytes,
            isolation_level: self.config.isolation_level,
            topics: topics
                .into_iter()
                .map(|(topic, partitions)| FetchTopic { topic, partitions })
                .collect(),
        });
        let client = self.client.clone();
        self.fetching.insert(broker);
        // A fetch is answered within its max wait; one that is not past that and a margin
        // may be waiting on a hung or cut-off leader, so the metadata is asked whether it
        // was replaced (see `Client::leader_replaced`).
        let check_after = self.config.fetch_max_wait + FETCH_LEADER_CHECK_MARGIN;
        let tps: Vec<TopicPartition> = requested.keys().cloned().collect();
        self.in_flight.spawn(async move {
            let answer = tokio::select! {
                answer = client.send(broker, request) => answer,
                replaced = client.leader_replaced(broker, &tps, check_after, None) => Err(replaced),
            };
            let result = match answer {
                Ok(Response::Fetch(r)) => Ok(r),
                Ok(other) => Err(unexpected("Fetch", &other)),
                Err(e) => Err(e),
            };
            FetchOutcome {
                broker,
                requested,
                result,
            }
        });
    }

    /// A fetch or lookup of `tp` failed with the retriable `error`: back off that
    /// partition, and have its topic's metadata refreshed when the error calls for it.
    fn partition_failed(&mut self, tp: &TopicPartition, error: &Error) {
        let backoff = Backoff {
            base: self.config.retry_backoff,
            max: self.config.retry_backoff_max,
        };
        if let Some(state) = self.partitions.get_mut(tp) {
            state.failures = state.failures.saturating_add(1);
            let delay = backoff.delay(state.failures, &mut self.jitter);
            state.retry_at = Some(Instant::now() + delay);
            tracing::debug!(%tp, failures = state.failures, ?delay, %error, "partition backs off");
        }
        if error.needs_metadata_refresh() {
            self.stale_topics.insert(tp.topic.clone());
        }
    }

    /// Buffers what a fetch returned, and deals with its errors: backoff and metadata
    /// refresh for retriable ones, a reset (or an error) for positions out of range.
    fn handle_fetch(&mut self, outcome: FetchOutcome) -> Result<()> {
        self.fetching.remove(&outcome.broker);
        let response = match outcome.result {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                tracing::debug!(broker = %outcome.broker, error = %e, "fetch failed; retrying");
                for (tp, &offset) in &outcome.requested {
                    if self
                        .partitions
                        .get(tp)
                        .is_some_and(|s| s.position == offset)
                    {
                        self.partition_failed(tp, &e);
                    }
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for topic in response.topics {
            for p in topic.partitions {
                let tp = TopicPartition::new(&topic.topic, p.partition);
                let Some(&fetched_from) = outcome.requested.get(&tp) else {
                    continue;
                };
                let Some(state) = self.partitions.get_mut(&tp) else {
                    continue; // unassigned meanwhile
                };
                if state.position != fetched_from || state.buffered || state.reset.is_some() {
                    continue; // a seek happened meanwhile: the answer is stale
                }
                match p.error_code {
                    ErrorCode::None => {
                        state.succeeded();
                        state.confirmed_end = state.confirmed_end.max(p.high_watermark.0);
                        let aborted = match self.config.isolation_level {
                            IsolationLevel::ReadCommitted => p.aborted_transactions,
                            IsolationLevel::ReadUncommitted => Vec::new(),
                        };
                        self.buffer(tp, fetched_from, p.records, aborted)?;
                    }
                    ErrorCode::OffsetOutOfRange => self.out_of_range(tp, fetched_from, &p)?,
                    code => {
                        let e = Error::broker(format!("fetching from {tp}"), code, p.error_message);
                        if !e.is_retriable() {
                            return Err(e);
                        }
                        self.partition_failed(&tp, &e);
                    }
                }
            }
        }
        Ok(())
    }

    /// OFFSET_OUT_OF_RANGE for `tp` fetched from `fetched_from`. Below the log start, or
    /// past anything a leader has confirmed, the position is really out of range:
    /// `auto_offset_reset` applies. At or below a confirmed end, the answering leader has
    /// not caught up yet (a new leader whose high watermark lags): wait and fetch again,
    /// rather than rewind or skip; only if that lasts `leader_catch_up_wait` has the log
    /// really lost the position, and `auto_offset_reset` applies after all.
    fn out_of_range(
        &mut self,
        tp: TopicPartition,
        fetched_from: i64,
        p: &FetchPartitionResponse,
    ) -> Result<()> {
        let Some(state) = self.partitions.get_mut(&tp) else {
            return Ok(());
        };
        let below_start = p.log_start_offset.0 >= 0 && fetched_from < p.log_start_offset.0;
        let lagging_since = *state.lagging_since.get_or_insert_with(Instant::now);
        let waited_enough = lagging_since.elapsed() >= self.config.leader_catch_up_wait;
        if !below_start && fetched_from <= state.confirmed_end && !waited_enough {
            let e = Error::broker(
                format!(
                    "fetching from {tp} at {fetched_from}, which a leader has confirmed (the leader's high watermark is {} and has not caught up)",
                    p.high_watermark.0
                ),
                ErrorCode::OffsetOutOfRange,
                p.error_message.clone(),
            );
            self.partition_failed(&tp, &e);
            // The leader may have changed again, too.
            self.stale_topics.insert(tp.topic.clone());
            return Ok(());
        }
        if !below_start && fetched_from <= state.confirmed_end {
            tracing::warn!(
                %tp,
                offset = fetched_from,
                "a confirmed position is still out of range after leader_catch_up_wait: the \
                 log lost it (an unclean election, or the topic was created again)"
            );
        }
        let spec = match self.config.auto_offset_reset {
            OffsetReset::None => {
                return Err(Error::OffsetOutOfRange {
                    topic: tp.topic,
                    partition: tp.partition,
                    offset: fetched_from,
                    log_start_offset: p.log_start_offset.0,
                    high_watermark: p.high_watermark.0,
                })
            }
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
        };
        tracing::info!(%tp, offset = fetched_from, ?spec, "position out of range; resetting");
        state.reset = Some(spec);
        Ok(())
    }

    /// Refreshes the metadata of the stale topics that have a partition due, within the
    /// poll's `deadline`. A topic missing from the metadata for longer than
    /// `unknown_topic_wait` is an error; any other failure backs its partitions off, and
    /// the refresh is tried again when they are due.
    async fn refresh_stale(&mut self, deadline: Instant) -> Result<()> {
        let now = Instant::now();
        let due: Vec<String> = self
            .stale_topics
            .iter()
            .filter(|topic| {
                self.partitions
                    .iter()
                    .any(|(tp, s)| &tp.topic == *topic && s.is_due(now))
            })
            .cloned()
            .collect();
        for topic in due {
            let refreshed =
                tokio::time::timeout_at(deadline.into(), self.client.refresh_topic(&topic)).await;
            let Ok(refreshed) = refreshed else {
                return Ok(()); // out of time: the next poll goes on
            };
            let missing = match refreshed {
                Ok(metadata) => self.partitions.keys().find_map(|tp| {
                    (tp.topic == topic)
                        .then(|| metadata.partition(tp.partition).err())
                        .flatten()
                }),
                Err(e @ Error::UnknownTopic { .. }) => Some(e),
                Err(e) if e.is_retriable() => {
                    // Stays stale; its partitions wait and the refresh is tried again.
                    self.topic_failed(&topic, &e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match missing {
                None => {
                    self.stale_topics.remove(&topic);
                    self.missing.remove(&topic);
                }
                Some(e) => {
                    let since = *self
                        .missing
                        .entry(topic.clone())
                        .or_insert_with(Instant::now);
                    if since.elapsed() >= self.config.unknown_topic_wait {
                        return Err(e);
                    }
                    self.topic_failed(&topic, &e);
                }
            }
        }
        Ok(())
    }

    /// Backs off every assigned partition of `topic`.
    fn topic_failed(&mut self, topic: &str, error: &Error) {
        let tps: Vec<TopicPartition> = self
            .partitions
            .keys()
            .filter(|tp| tp.topic == topic)
            .cloned()
            .collect();
        for tp in tps {
            self.partition_failed(&tp, error);
        }
    }

    /// Looks up the positions of partitions with a reset pending (one try each, within the
    /// poll's `deadline`; a retriable failure backs the partition off).
    async fn reset_positions(&mut self, deadline: Instant) -> Result<()> {
        let now = Instant::now();
        let mut by_topic: BTreeMap<String, Vec<(PartitionId, OffsetSpec)>> = BTreeMap::new();
        for (tp, state) in &self.partitions {
            if let Some(spec) = state.reset.filter(|_| state.is_due(now)) {
                by_topic
                    .entry(tp.topic.clone())
                    .or_default()
                    .push((tp.partition, spec));
            }
        }
        for (topic, specs) in by_topic {
            let lookup = self.lookup(&topic, &specs, 1);
            let Ok(results) = tokio::time::timeout_at(deadline.into(), lookup).await else {
                return Ok(()); // out of time: the next poll goes on
            };
            let results = match results {
                Ok(results) => results,
                Err(e)
                    if e.is_retriable()
                        || matches!(
                            e,
                            Error::UnknownTopic { .. } | Error::UnknownPartition { .. }
                        ) =>
                {
                    // A missing topic is for refresh_stale to judge, after its wait.
                    self.stale_topics.insert(topic.clone());
                    self.topic_failed(&topic, &e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (partition, result) in results {
                let tp = TopicPartition::new(&topic, partition);
                match result {
                    Ok(position) => {
                        tracing::info!(%tp, position, "position reset");
                        self.set_position(&tp, position, true);
                    }
                    Err(e) if e.is_retriable() => self.partition_failed(&tp, &e),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Turns one partition's fetched batches into buffered records at or after the
    /// position (a batch may start before it), leaving out control batches and the
    /// batches of the `aborted` transactions (read_committed).
    fn buffer(
        &mut self,
        tp: TopicPartition,
        position: i64,
        records: Records,
        aborted: Vec<AbortedTransaction>,
    ) -> Result<()> {
        let corrupt = |reason: String| Error::CorruptBatch {
            topic: tp.topic.clone(),
            partition: tp.partition,
            reason,
        };
        // Decoded answers hold their records in memory: this is a clone of `Bytes`.
        let records = records.to_bytes().map_err(|e| corrupt(e.to_string()))?;
        let mut out = VecDeque::new();
        let mut next_position = position;
        let mut aborts = AbortFilter::new(aborted);
        for batch in Batches::new(records) {
            let batch = batch.map_err(|e| corrupt(e.to_string()))?;
            next_position = next_position.max(batch.header().next_offset().0);
            if aborts.skips(&batch) || batch.header().is_control() {
                continue;
            }
            for record in batch.records().map_err(|e| corrupt(e.to_string()))? {
                let record = record.map_err(|e| corrupt(e.to_string()))?;
                if record.offset.0 < position {
                    continue;
                }
                out.push_back(ConsumerRecord {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: record.offset.0,
                    timestamp_ms: record.timestamp,
                    key: record.key,
                    value: record.value,
                    headers: record.headers,
                });
            }
        }
        let state = self.partitions.get_mut(&tp).expect("checked by the caller");
        if out.is_empty() {
            state.position = next_position;
        } else {
            state.buffered = true;
            self.buffered.push_back(Buffered {
                tp,
                records: out,
                next_position,
            });
        }
        Ok(())
    }

    /// Moves `tp` to `position` (returned by a leader when `confirmed`), dropping what is
    /// buffered for it and any pending reset.
    fn set_position(&mut self, tp: &TopicPartition, position: i64, confirmed: bool) {
        self.buffered.retain(|b| &b.tp != tp);
        if let Some(state) = self.partitions.get_mut(tp) {
            state.position = position;
            state.buffered = false;
            state.reset = None;
            state.lagging_since = None;
            if confirmed {
                state.succeeded();
                state.confirmed_end = state.confirmed_end.max(position);
            }
        }
    }

    /// Resolves offset specs to positions now, checking that every partition exists;
    /// lookups retry through a leader failover ([`LOOKUP_ATTEMPTS`]), then their error is
    /// returned.
    async fn resolve(&self, specs: &[(String, PartitionId, OffsetSpec)]) -> Result<Vec<Resolved>> {
        let mut out = Vec::new();
        let mut lookups: BTreeMap<&str, Vec<(PartitionId, OffsetSpec)>> = BTreeMap::new();
        for (topic, partition, spec) in specs {
            let metadata = self.client.topic_metadata(topic).await?;
            metadata.partition(*partition)?;
            match spec {
                OffsetSpec::Offset(offset) => {
                    out.push((TopicPartition::new(topic, *partition), *offset, false));
                }
                spec => lookups.entry(topic).or_default().push((*partition, *spec)),
            }
        }
        for (topic, specs) in lookups {
            for (partition, position) in self.lookup(topic, &specs, LOOKUP_ATTEMPTS).await? {
                out.push((TopicPartition::new(topic, partition), position?, true));
            }
        }
        Ok(out)
    }

    /// Looks up the positions for `specs` in `topic`, with at most `attempts` tries each;
    /// a timestamp after the last record resolves to the end of the log, an explicit
    /// offset to itself.
    async fn lookup(
        &self,
        topic: &str,
        specs: &[(PartitionId, OffsetSpec)],
        attempts: u32,
    ) -> Result<Vec<(PartitionId, Result<i64>)>> {
        let mut out = Vec::new();
        let mut timestamps: Vec<(PartitionId, i64)> = Vec::new();
        for &(partition, spec) in specs {
            let timestamp = match spec {
                OffsetSpec::Earliest => EARLIEST_TIMESTAMP,
                OffsetSpec::Latest => LATEST_TIMESTAMP,
                OffsetSpec::Timestamp(t) => t,
                OffsetSpec::Offset(offset) => {
                    out.push((partition, Ok(offset)));
                    continue;
                }
            };
            timestamps.push((partition, timestamp));
        }
        let mut latest_needed = Vec::new();
        let found = self
            .client
            .list_offsets_with(topic, &timestamps, attempts, self.config.isolation_level)
            .await?;
        for (partition, offset) in found {
            match offset {
                // No record at or after the timestamp: start at the end.
                Ok(-1) => latest_needed.push((partition, LATEST_TIMESTAMP)),
                other => out.push((partition, other)),
            }
        }
        if !latest_needed.is_empty() {
            let found = self
                .client
                .list_offsets_with(topic, &latest_needed, attempts, self.config.isolation_level)
                .await?;
            out.extend(found);
        }
        Ok(out)
    }
}

/// A read_committed reader's filter of aborted transactions (Kafka's consumer does the
/// same): the fetch names each aborted transaction by producer and first offset; from the
/// first batch that reaches that offset, the producer's transactional batches are aborted
/// until its abort marker.
struct AbortFilter {
    /// Aborted transactions not reached yet, by first offset.
    pending: Vec<AbortedTransaction>,
    /// Producers whose aborted transaction is being read.
    aborting: HashSet<i64>,
}

impl AbortFilter {
    fn new(mut aborted: Vec<AbortedTransaction>) -> AbortFilter {
        // Latest first, so the next one to reach is at the end.
        aborted.sort_by_key(|t| std::cmp::Reverse(t.first_offset));
        AbortFilter {
            pending: aborted,
            aborting: HashSet::new(),
        }
    }

    /// Whether `batch` belongs to an aborted transaction (or is its abort marker).
    fn skips(&mut self, batch: &RecordBatch) -> bool {
        let header = batch.header();
        if self.pending.is_empty() && self.aborting.is_empty() {
            return false;
        }
        if header.producer_id < 0 || !header.is_transactional() {
            return false;
        }
        while self
            .pending
            .last()
            .is_some_and(|t| t.first_offset <= header.last_offset())
        {
            let started = self.pending.pop().expect("checked");
            self.aborting.insert(started.producer_id);
        }
        if !self.aborting.contains(&header.producer_id) {
            return false;
        }
        if header.is_control() {
            let abort = ControlMarker::of(batch).is_ok_and(|m| m.kind == ControlType::Abort);
            if abort {
                self.aborting.remove(&header.producer_id);
            }
        }
        true
    }
}

mod group;
#[cfg(test)]
mod tests;
