//! [`Consumer`]: reads assigned partitions from their leaders, with prefetch.
//!
//! Fetches are grouped per leader broker, one in flight per broker at a time; each runs as
//! its own task, so the next fetch is on the wire while the caller processes what the
//! previous one returned. A partition is fetched again only when the records buffered for
//! it have been handed out, which bounds memory at about one fetch per broker plus one
//! buffered response per partition. Records are zero-copy slices of the response frame.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::{Batches, Header};
use sluice_protocol::messages::{
    FetchPartition, FetchRequest, FetchResponse, FetchTopic, IsolationLevel, EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId, Request, Response};
use tokio::task::JoinSet;

use crate::client::{unexpected, Client};
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
    /// Wait after a failed fetch before fetching from that broker again. Default 100 ms.
    pub retry_backoff: Duration,
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

/// Per assigned partition.
#[derive(Debug)]
struct PartitionState {
    /// Offset of the next record to hand out.
    position: i64,
    /// Records of this partition are buffered; no fetch until they are handed out.
    buffered: bool,
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

/// Reads records from assigned partitions (no consumer groups yet).
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
    /// No fetch is sent before this, after an error.
    backoff_until: Option<Instant>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

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
            backoff_until: None,
        }
    }

    /// Replaces the assignment with `partitions`, each starting where its [`OffsetSpec`]
    /// says (resolved now with ListOffsets). Fails for a topic or partition that does not
    /// exist.
    pub async fn assign(
        &mut self,
        partitions: Vec<(String, PartitionId, OffsetSpec)>,
    ) -> Result<()> {
        let resolved = self.resolve(&partitions).await?;
        self.partitions.clear();
        self.buffered.clear();
        for (tp, position) in resolved {
            self.partitions.insert(
                tp,
                PartitionState {
                    position,
                    buffered: false,
                },
            );
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
        for (tp, position) in resolved {
            self.set_position(&tp, position);
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
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let records = self.take_buffered();
            if !records.is_empty() {
                self.send_fetches().await?;
                return Ok(records);
            }
            self.send_fetches().await?;
            let wait_until = match self.backoff_until {
                Some(t) if self.in_flight.is_empty() => t.min(deadline),
                _ => deadline,
            };
            let next = if self.in_flight.is_empty() {
                tokio::time::sleep_until(wait_until.into()).await;
                None
            } else {
                tokio::time::timeout_at(wait_until.into(), self.in_flight.join_next())
                    .await
                    .ok()
                    .flatten()
            };
            if let Some(joined) = next {
                let outcome = joined.map_err(|e| Error::Network {
                    addr: "a fetch task".to_owned(),
                    reason: e.to_string(),
                })?;
                self.handle_fetch(outcome).await?;
                continue;
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
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

    /// Sends a fetch to every leader that has none in flight, for its assigned partitions
    /// that have nothing buffered.
    async fn send_fetches(&mut self) -> Result<()> {
        if self.backoff_until.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        self.backoff_until = None;
        let mut by_leader: BTreeMap<BrokerId, Vec<(TopicPartition, i64, LeaderEpoch)>> =
            BTreeMap::new();
        let mut leaderless = false;
        for (tp, state) in &self.partitions {
            if state.buffered {
                continue;
            }
            let metadata = self.client.topic_metadata(&tp.topic).await?;
            let p = metadata.partition(tp.partition)?;
            if p.leader == BrokerId::NONE {
                leaderless = true;
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
        if leaderless {
            // Look again after a backoff; the election may be over by then.
            self.backoff_until = Some(Instant::now() + self.config.retry_backoff);
            let topics: HashSet<&String> = self.partitions.keys().map(|tp| &tp.topic).collect();
            for topic in topics {
                let _ = self.client.refresh_topic(topic).await;
            }
        }
        for (broker, partitions) in by_leader {
            self.spawn_fetch(broker, partitions);
        }
        Ok(())
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
            isolation_level: IsolationLevel::ReadUncommitted,
            topics: topics
                .into_iter()
                .map(|(topic, partitions)| FetchTopic { topic, partitions })
                .collect(),
        });
        let client = self.client.clone();
        self.fetching.insert(broker);
        self.in_flight.spawn(async move {
            let result = match client.send(broker, request).await {
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

    /// Buffers what a fetch returned, and deals with its errors: resets out-of-range
    /// positions, refreshes metadata and backs off on leadership errors.
    async fn handle_fetch(&mut self, outcome: FetchOutcome) -> Result<()> {
        self.fetching.remove(&outcome.broker);
        let response = match outcome.result {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                tracing::debug!(broker = %outcome.broker, error = %e, "fetch failed; retrying");
                self.backoff_until = Some(Instant::now() + self.config.retry_backoff);
                if e.needs_metadata_refresh() {
                    self.refresh_topics(outcome.requested.keys()).await?;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut refresh = Vec::new();
        let mut resets = Vec::new();
        for topic in response.topics {
            for p in topic.partitions {
                let tp = TopicPartition::new(&topic.topic, p.partition);
                let Some(&fetched_from) = outcome.requested.get(&tp) else {
                    continue;
                };
                let Some(state) = self.partitions.get(&tp) else {
                    continue; // unassigned meanwhile
                };
                if state.position != fetched_from || state.buffered {
                    continue; // a seek happened meanwhile: the answer is stale
                }
                match p.error_code {
                    ErrorCode::None => self.buffer(tp, fetched_from, p.records)?,
                    ErrorCode::OffsetOutOfRange => match self.config.auto_offset_reset {
                        OffsetReset::None => {
                            return Err(Error::OffsetOutOfRange {
                                topic: tp.topic,
                                partition: tp.partition,
                                offset: fetched_from,
                                log_start_offset: p.log_start_offset.0,
                                high_watermark: p.high_watermark.0,
                            })
                        }
                        OffsetReset::Earliest => resets.push((tp, OffsetSpec::Earliest)),
                        OffsetReset::Latest => resets.push((tp, OffsetSpec::Latest)),
                    },
                    code => {
                        let e = Error::broker(format!("fetching from {tp}"), code, p.error_message);
                        if !e.is_retriable() {
                            return Err(e);
                        }
                        tracing::debug!(%tp, error = %e, "fetch failed for a partition; retrying");
                        self.backoff_until = Some(Instant::now() + self.config.retry_backoff);
                        if e.needs_metadata_refresh() {
                            refresh.push(tp);
                        }
                    }
                }
            }
        }
        self.refresh_topics(refresh.iter()).await?;
        for (tp, spec) in resets {
            tracing::info!(%tp, ?spec, "position out of range; resetting");
            let resolved = self
                .resolve(&[(tp.topic.clone(), tp.partition, spec)])
                .await?;
            for (tp, position) in resolved {
                self.set_position(&tp, position);
            }
        }
        Ok(())
    }

    /// Turns one partition's fetched batches into buffered records at or after the
    /// position (a batch may start before it).
    fn buffer(&mut self, tp: TopicPartition, position: i64, records: Bytes) -> Result<()> {
        let corrupt = |reason: String| Error::CorruptBatch {
            topic: tp.topic.clone(),
            partition: tp.partition,
            reason,
        };
        let mut out = VecDeque::new();
        let mut next_position = position;
        for batch in Batches::new(records) {
            let batch = batch.map_err(|e| corrupt(e.to_string()))?;
            next_position = next_position.max(batch.header().next_offset().0);
            if batch.header().is_control() {
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

    fn set_position(&mut self, tp: &TopicPartition, position: i64) {
        self.buffered.retain(|b| &b.tp != tp);
        if let Some(state) = self.partitions.get_mut(tp) {
            state.position = position;
            state.buffered = false;
        }
    }

    async fn refresh_topics<'a>(
        &self,
        tps: impl Iterator<Item = &'a TopicPartition>,
    ) -> Result<()> {
        let topics: HashSet<&str> = tps.map(|tp| tp.topic.as_str()).collect();
        for topic in topics {
            // Other failures show again on the next fetch, which retries.
            if let Err(e @ Error::UnknownTopic { .. }) = self.client.refresh_topic(topic).await {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Resolves offset specs to positions, checking that every partition exists.
    async fn resolve(
        &self,
        specs: &[(String, PartitionId, OffsetSpec)],
    ) -> Result<Vec<(TopicPartition, i64)>> {
        let mut out = Vec::new();
        let mut lookups: BTreeMap<&str, Vec<(PartitionId, i64)>> = BTreeMap::new();
        for (topic, partition, spec) in specs {
            let metadata = self.client.topic_metadata(topic).await?;
            metadata.partition(*partition)?;
            let timestamp = match spec {
                OffsetSpec::Offset(offset) => {
                    out.push((TopicPartition::new(topic, *partition), *offset));
                    continue;
                }
                OffsetSpec::Earliest => EARLIEST_TIMESTAMP,
                OffsetSpec::Latest => LATEST_TIMESTAMP,
                OffsetSpec::Timestamp(t) => *t,
            };
            lookups
                .entry(topic)
                .or_default()
                .push((*partition, timestamp));
        }
        for (topic, lookups) in lookups {
            let mut latest_needed = Vec::new();
            for (partition, offset) in self.client.list_offsets(topic, &lookups).await? {
                match offset? {
                    // No record at or after the timestamp: start at the end.
                    -1 => latest_needed.push((partition, LATEST_TIMESTAMP)),
                    offset => out.push((TopicPartition::new(topic, partition), offset)),
                }
            }
            if !latest_needed.is_empty() {
                for (partition, offset) in self.client.list_offsets(topic, &latest_needed).await? {
                    out.push((TopicPartition::new(topic, partition), offset?));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
