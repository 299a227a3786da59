//! Consumer fetches: read many partitions below their high watermarks, long-polling until
//! `min_bytes` have accumulated or `max_wait` has passed.
//!
//! Why register before reading: a fetch first creates a `Notified` future per partition and
//! enables it, then reads. An append that advances a HW after the read but before the wait
//! still wakes the enabled future, so no wake-up is lost between checking and sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use sluice_protocol::messages::IsolationLevel;
use sluice_protocol::{LeaderEpoch, Offset, PartitionId, Records};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{task_failed, TopicItems};
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::partition::{Partition, ReadResult};
use crate::security::acl::{Authorizer, Operation, Resource};
use crate::security::Principal;
use crate::topics::Topics;

/// Longest long poll served, whatever the client asks: a bound on held requests.
const MAX_WAIT_MAX: Duration = Duration::from_secs(60);
/// Room for a response's own fields inside the largest frame.
const RESPONSE_OVERHEAD_BYTES: u32 = 64 * 1024;

/// A consumer fetch in service terms.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    /// Longest wait for `min_bytes` (capped at 60 s).
    pub max_wait: Duration,
    /// Answer as soon as this many record bytes are available.
    pub min_bytes: u64,
    /// Most record bytes in the answer (capped by the broker's frame size); the first
    /// partition with data always gets at least one whole batch.
    pub max_bytes: u32,
    /// What to read.
    pub topics: Vec<TopicItems<FetchPartition>>,
    /// read_committed reads below the last stable offset and names the aborted
    /// transactions in what it returns; read_uncommitted reads below the HW.
    pub isolation: IsolationLevel,
    /// Who reads: needs Read on each topic.
    pub principal: Principal,
}

/// One partition of a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchPartition {
    /// The partition.
    pub partition: PartitionId,
    /// Where to read from.
    pub fetch_offset: Offset,
    /// Most bytes from this partition.
    pub partition_max_bytes: u32,
    /// The leader epoch the consumer knows, -1 if none.
    pub current_leader_epoch: LeaderEpoch,
}

/// What a fetch returns for one partition.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The partition.
    pub partition: PartitionId,
    /// Its batches, or why it could not be read.
    pub outcome: Result<Records, ApiError>,
    /// The last batch's last offset, when there is a batch.
    pub last_offset: Option<Offset>,
    /// The HW when the read was made, -1 if unknown.
    pub high_watermark: Offset,
    /// The last stable offset when the read was made, -1 if unknown.
    pub last_stable_offset: Offset,
    /// The log start offset, -1 if unknown.
    pub log_start_offset: Offset,
    /// read_committed: the aborted transactions (producer id, first offset) the records
    /// overlap.
    pub aborted: Vec<(i64, Offset)>,
}

/// The partitions of a fetch, resolved once.
type Targets = Vec<TopicItems<(FetchPartition, Result<Arc<Partition>, ApiError>)>>;

/// The fetch service.
pub struct Fetch {
    cluster: Arc<Cluster>,
    topics: Arc<Topics>,
    /// The most record bytes one answer may carry.
    response_bytes_max: u32,
    /// Turns true when the broker shuts down: long polls end.
    stopping: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    authorizer: Arc<Authorizer>,
}

impl Fetch {
    /// Reads the replicas in `topics`; answers fit in frames of `max_frame_bytes`.
    pub fn new(
        cluster: Arc<Cluster>,
        topics: Arc<Topics>,
        max_frame_bytes: u32,
        stopping: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
        authorizer: Arc<Authorizer>,
    ) -> Fetch {
        Fetch {
            cluster,
            topics,
            response_bytes_max: max_frame_bytes.saturating_sub(RESPONSE_OVERHEAD_BYTES),
            stopping,
            metrics,
            authorizer,
        }
    }

    /// Serves a fetch, waiting up to `max_wait` for `min_bytes`.
    pub async fn fetch(&self, request: FetchRequest) -> Result<Vec<TopicItems<Fetched>>, ApiError> {
        let image = self.cluster.image();
        let targets: Arc<Targets> = Arc::new(
            request
                .topics
                .into_iter()
                .map(|t| {
                    let allowed = self.authorizer.check(
                        &request.principal,
                        Operation::Read,
                        Resource::Topic(&t.topic),
                    );
                    let partitions = t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            let found = match &allowed {
                                Ok(()) => self.topics.partition(&image, &t.topic, p.partition),
                                Err(e) => Err(e.clone()),
                            };
                            (p, found)
                        })
                        .collect();
                    TopicItems {
                        topic: t.topic,
                        partitions,
                    }
                })
                .collect(),
        );
        let deadline = Instant::now() + request.max_wait.min(MAX_WAIT_MAX);
        let max_bytes = request.max_bytes.min(self.response_bytes_max);
        let mut stopping = self.stopping.clone();
        loop {
            let live: Vec<&Arc<Partition>> = targets
                .iter()
                .flat_map(|t| t.partitions.iter().filter_map(|(_, p)| p.as_ref().ok()))
                .collect();
            let mut wakers: Vec<_> = live
                .iter()
                .map(|p| Box::pin(p.hw_advanced().notified()))
                .collect();
            for waker in &mut wakers {
                waker.as_mut().enable();
            }
            // Reads take the log's lock, which maintenance may hold across an fsync, and
            // may pread a cold segment: both belong on the blocking pool.
            let reading = Arc::clone(&targets);
            let isolation = request.isolation;
            let (fetched, bytes, failed) =
                tokio::task::spawn_blocking(move || read_all(&reading, max_bytes, isolation))
                    .await
                    .map_err(|e| task_failed("fetch", e))?;
            let stop = *stopping.borrow();
            if bytes >= request.min_bytes || failed || Instant::now() >= deadline || stop {
                self.count(&targets, &fetched);
                return Ok(fetched);
            }
            tokio::select! {
                _ = any_woken(&mut wakers) => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        }
    }
}

impl Fetch {
    /// Counts what an answer carries: per topic the offsets from each partition's fetch
    /// offset to its last batch's end (the records, and in a compacted log the gaps
    /// between them: the batches may be in a file not read) and the batch bytes, and each
    /// partition's error.
    fn count(&self, targets: &Targets, fetched: &[TopicItems<Fetched>]) {
        for (target, answer) in targets.iter().zip(fetched) {
            let mut records = 0u64;
            let mut bytes = 0u64;
            for ((request, _), result) in target.partitions.iter().zip(&answer.partitions) {
                match &result.outcome {
                    Ok(batches) => {
                        if let Some(last) = result.last_offset {
                            records += (last.0 - request.fetch_offset.0 + 1).max(0) as u64;
                        }
                        bytes += batches.len() as u64;
                    }
                    Err(e) => self.metrics.error("fetch", e.code),
                }
            }
            if records > 0 || bytes > 0 {
                self.metrics.fetched(&target.topic, records, bytes);
            }
        }
    }
}

/// Completes when any of the enabled notifications fires.
pub(crate) async fn any_woken(wakers: &mut [Pin<Box<tokio::sync::futures::Notified<'_>>>]) {
    if wakers.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for waker in wakers.iter_mut() {
            if waker.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// Reads every partition once. Returns what was read, the record bytes in it, and whether
/// any partition failed (an error is worth answering at once, not after the long poll).
fn read_all(
    targets: &Targets,
    max_bytes: u32,
    isolation: IsolationLevel,
) -> (Vec<TopicItems<Fetched>>, u64, bool) {
    let mut total: u64 = 0;
    let mut failed = false;
    let mut topics = Vec::with_capacity(targets.len());
    for topic in targets {
        let mut results = Vec::with_capacity(topic.partitions.len());
        for (request, found) in &topic.partitions {
            let budget = (max_bytes as u64).saturating_sub(total) as u32;
            let fetched = match read_one(request, found, budget, total > 0, isolation) {
                Ok(read) => {
                    total += read.records.len() as u64;
                    Fetched {
                        partition: request.partition,
                        outcome: Ok(read.records),
                        last_offset: read.last_offset,
                        high_watermark: read.high_watermark,
                        last_stable_offset: read.last_stable_offset,
                        log_start_offset: read.log_start_offset,
                        aborted: read.aborted,
                    }
                }
                Err(e) => {
                    failed = true;
                    let (high_watermark, last_stable_offset, log_start_offset) = found
                        .as_ref()
                        .map_or((Offset(-1), Offset(-1), Offset(-1)), |p| {
                            (
                                p.high_watermark(),
                                p.last_stable_offset(),
                                p.log_start_offset(),
                            )
                        });
                    Fetched {
                        partition: request.partition,
                        outcome: Err(e),
                        last_offset: None,
                        high_watermark,
                        last_stable_offset,
                        log_start_offset,
                        aborted: Vec::new(),
                    }
                }
            };
            results.push(fetched);
        }
        topics.push(TopicItems {
            topic: topic.topic.clone(),
            partitions: results,
        });
    }
    (topics, total, failed)
}

/// Reads one partition within `budget` bytes. Storage returns at least one whole batch;
/// once the response already has data, a batch over the budget (or any read, when the
/// budget is spent) waits for the next fetch, so the response never outgrows its frame.
fn read_one(
    request: &FetchPartition,
    found: &Result<Arc<Partition>, ApiError>,
    budget: u32,
    response_has_data: bool,
    isolation: IsolationLevel,
) -> Result<ReadResult, ApiError> {
    let partition = found.as_ref().map_err(Clone::clone)?;
    let state_only = || ReadResult {
        records: Records::default(),
        last_offset: None,
        high_watermark: partition.high_watermark(),
        last_stable_offset: partition.last_stable_offset(),
        log_start_offset: partition.log_start_offset(),
        aborted: Vec::new(),
    };
    if response_has_data && budget == 0 {
        return Ok(state_only());
    }
    let partition_max = request.partition_max_bytes.min(budget);
    let read = partition.read(
        request.fetch_offset,
        partition_max,
        request.current_leader_epoch,
        isolation,
    )?;
    if response_has_data && read.records.len() as u64 > u64::from(budget) {
        return Ok(state_only());
    }
    Ok(read)
}
