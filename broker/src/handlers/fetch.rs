//! Fetch: read many partitions below their high watermarks, long-polling until `min_bytes`
//! have accumulated or `max_wait_ms` has passed.
//!
//! Why register before reading: a fetch first creates a `Notified` future per partition and
//! enables it, then reads. An append that advances a HW after the read but before the wait
//! still wakes the enabled future, so no wake-up is lost between checking and sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::messages::{
    FetchPartition, FetchPartitionResponse, FetchRequest, FetchResponse, FetchTopicResponse,
};
use sluice_protocol::{ErrorCode, Offset};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::error::ApiError;
use crate::partition::{Partition, ReadResult};

/// Longest long poll served, whatever the client asks: a bound on held requests.
const MAX_WAIT_MS_MAX: i32 = 60_000;
/// Room for a response's own fields inside the largest frame.
const RESPONSE_OVERHEAD_BYTES: u32 = 64 * 1024;

/// The partitions of a fetch, resolved once.
type Targets = Vec<(
    String,
    Vec<(FetchPartition, Result<Arc<Partition>, ApiError>)>,
)>;

/// Serves a fetch, waiting up to `max_wait_ms` for `min_bytes`.
pub async fn handle(
    broker: &Arc<Broker>,
    request: FetchRequest,
) -> Result<FetchResponse, ApiError> {
    let image = broker.cluster.image();
    let targets: Arc<Targets> = Arc::new(
        request
            .topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let found = broker.topics.partition(&image, &t.topic, p.partition);
                        (p, found)
                    })
                    .collect();
                (t.topic, partitions)
            })
            .collect(),
    );
    let wait = Duration::from_millis(request.max_wait_ms.clamp(0, MAX_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + wait;
    // The response must fit in one frame.
    let frame_budget = broker
        .config
        .max_frame_bytes
        .saturating_sub(RESPONSE_OVERHEAD_BYTES);
    let max_bytes = (request.max_bytes.max(0) as u32).min(frame_budget);
    let min_bytes = request.min_bytes.max(0) as u64;
    let mut stopping = broker.stopping();
    loop {
        let live: Vec<&Arc<Partition>> = targets
            .iter()
            .flat_map(|(_, ps)| ps.iter().filter_map(|(_, p)| p.as_ref().ok()))
            .collect();
        let mut wakers: Vec<_> = live
            .iter()
            .map(|p| Box::pin(p.hw_advanced().notified()))
            .collect();
        for waker in &mut wakers {
            waker.as_mut().enable();
        }
        // Reads take the log's lock, which maintenance may hold across an fsync, and may
        // pread a cold segment: both belong on the blocking pool, not a runtime worker.
        let reading = Arc::clone(&targets);
        let read = tokio::task::spawn_blocking(move || read_all(&reading, max_bytes)).await;
        let (response, bytes, failed) =
            read.map_err(|e| ApiError::new(ErrorCode::UnknownServerError, format!("fetch: {e}")))?;
        let now = Instant::now();
        if bytes >= min_bytes || failed || now >= deadline || broker.is_stopping() {
            return Ok(response);
        }
        tokio::select! {
            _ = any_woken(&mut wakers) => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
    }
}

/// Completes when any of the enabled notifications fires.
pub(super) async fn any_woken(wakers: &mut [Pin<Box<tokio::sync::futures::Notified<'_>>>]) {
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

/// Reads every partition once. Returns the response, the record bytes in it, and whether
/// any partition failed (an error is worth answering at once, not after the long poll).
fn read_all(targets: &Targets, max_bytes: u32) -> (FetchResponse, u64, bool) {
    let mut total: u64 = 0;
    let mut failed = false;
    let mut topics = Vec::with_capacity(targets.len());
    for (topic, partitions) in targets {
        let mut results = Vec::with_capacity(partitions.len());
        for (request, found) in partitions {
            let budget = (max_bytes as u64).saturating_sub(total) as u32;
            let response = match read_one(request, found, budget, total > 0) {
                Ok(read) => {
                    total += read.records.len() as u64;
                    FetchPartitionResponse {
                        partition: request.partition,
                        error_code: ErrorCode::None,
                        error_message: None,
                        high_watermark: read.high_watermark,
                        last_stable_offset: read.high_watermark,
                        log_start_offset: read.log_start_offset,
                        records: read.records,
                    }
                }
                Err(e) => {
                    failed = true;
                    let (high_watermark, log_start_offset) =
                        found.as_ref().map_or((Offset(-1), Offset(-1)), |p| {
                            (p.high_watermark(), p.log_start_offset())
                        });
                    FetchPartitionResponse {
                        partition: request.partition,
                        error_code: e.code,
                        error_message: e.wire_message(),
                        high_watermark,
                        last_stable_offset: high_watermark,
                        log_start_offset,
                        records: Bytes::new(),
                    }
                }
            };
            results.push(response);
        }
        topics.push(FetchTopicResponse {
            topic: topic.clone(),
            partitions: results,
        });
    }
    (FetchResponse { topics }, total, failed)
}

/// Reads one partition within `budget` bytes. Storage returns at least one whole batch;
/// once the response already has data, a batch over the budget (or any read, when the
/// budget is spent) waits for the next fetch, so the response never outgrows its frame.
fn read_one(
    request: &FetchPartition,
    found: &Result<Arc<Partition>, ApiError>,
    budget: u32,
    response_has_data: bool,
) -> Result<ReadResult, ApiError> {
    let partition = found.as_ref().map_err(Clone::clone)?;
    let state_only = || ReadResult {
        records: Bytes::new(),
        high_watermark: partition.high_watermark(),
        log_start_offset: partition.log_start_offset(),
    };
    if response_has_data && budget == 0 {
        return Ok(state_only());
    }
    let partition_max = (request.partition_max_bytes.max(0) as u32).min(budget);
    let read = partition.read(
        request.fetch_offset,
        partition_max,
        request.current_leader_epoch,
    )?;
    if response_has_data && read.records.len() as u64 > u64::from(budget) {
        return Ok(state_only());
    }
    Ok(read)
}
