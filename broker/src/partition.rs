//! One partition replica this broker leads: its log, its leader epoch and its high
//! watermark, and the service operations on it (append, read, offset lookups). This layer
//! knows nothing of the wire: handlers translate requests into these calls.
//!
//! The high watermark (HW) is the end of what consumers may see. With one replica it is
//! what is durable by the durability mode: under `fsync` the log's flushed offset (a
//! consumer never sees a record a crash could take back), under `replicated` the log end.
//! It only moves forward; fetchers long-polling on the partition wait on `hw_advanced`.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::batch::{peek_total_len, RecordBatch};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset, PartitionId};
use sluice_storage::{AppendInfo, Durability, DurableTicket, SharedLog, StorageError};
use tokio::sync::Notify;

use crate::error::ApiError;

/// How many acknowledgements a producer asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// No response: the append still happens (and becomes durable), unobserved.
    None,
    /// The leader has the records (durably, under `fsync`).
    Leader,
    /// Every in-sync replica has them and the HW covers them.
    All,
}

impl Acks {
    /// Parses the wire value: 0, 1 or -1.
    pub fn from_wire(acks: i16) -> Result<Acks, ApiError> {
        match acks {
            0 => Ok(Acks::None),
            1 => Ok(Acks::Leader),
            -1 => Ok(Acks::All),
            other => Err(ApiError::new(
                ErrorCode::InvalidRequiredAcks,
                format!("acks must be 0, 1 or -1 (all), not {other}"),
            )),
        }
    }
}

/// An append written to the log and not yet acknowledged.
#[derive(Debug)]
pub struct PendingAppend {
    /// Where the batches went.
    pub info: AppendInfo,
    /// The log start offset just after the append (for the produce response).
    pub log_start_offset: Offset,
    ticket: DurableTicket,
}

/// What a read returns: whole batches and where the partition stands.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Whole RecordBatch v2 batches below the HW, possibly empty.
    pub records: Bytes,
    /// The HW when the read was made.
    pub high_watermark: Offset,
    /// The first offset still in the log.
    pub log_start_offset: Offset,
}

/// A partition replica led by this broker.
pub struct Partition {
    topic: Arc<str>,
    index: PartitionId,
    /// The log. Appends, durability waits and maintenance happen on blocking threads.
    log: Arc<SharedLog>,
    leader_epoch: AtomicI32,
    /// Offsets below this are visible to consumers. Only grows (`fetch_max`).
    high_watermark: AtomicI64,
    /// Woken whenever the HW advances, for long-polling fetches.
    hw_advanced: Notify,
    durability: Durability,
    /// Smallest ISR that acks=all accepts (`min.insync.replicas`).
    min_insync_replicas: u16,
    /// Set when the topic is deleted: every later operation fails, maintenance skips it.
    deleted: AtomicBool,
    /// Why the partition was taken offline (a failed background fsync), if it was.
    offline: std::sync::OnceLock<String>,
}

impl Partition {
    /// Wraps an opened log as leader at `leader_epoch`.
    pub fn new(
        topic: Arc<str>,
        index: PartitionId,
        log: SharedLog,
        leader_epoch: LeaderEpoch,
        min_insync_replicas: u16,
    ) -> Partition {
        let (end, durability) = {
            let guard = log.read();
            (guard.log_end_offset(), guard.config().durability)
        };
        Partition {
            topic,
            index,
            log: Arc::new(log),
            leader_epoch: AtomicI32::new(leader_epoch.0),
            // Recovery kept only what the files hold, so everything in the log is visible.
            high_watermark: AtomicI64::new(end.0),
            hw_advanced: Notify::new(),
            durability,
            min_insync_replicas,
            deleted: AtomicBool::new(false),
            offline: std::sync::OnceLock::new(),
        }
    }

    /// `topic-partition`, for logs and errors.
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index.0)
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

    /// The offset the next append gets.
    pub fn log_end_offset(&self) -> Offset {
        self.log.read().log_end_offset()
    }

    /// The shared log, for maintenance (retention, checkpoints, flushing, shutdown).
    pub fn log(&self) -> &Arc<SharedLog> {
        &self.log
    }

    /// The log, once the partition is no longer shared (clean shutdown).
    pub fn into_log(self) -> Arc<SharedLog> {
        self.log
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
        self.hw_advanced.notify_waiters();
    }

    fn check_live(&self) -> Result<(), ApiError> {
        if self.is_deleted() {
            return Err(ApiError::unknown_topic(&self.topic));
        }
        if let Some(why) = self.offline.get() {
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

    /// Takes the partition offline until the broker restarts. Under `replicated`
    /// durability a failed background fsync cuts the log below what consumers may already
    /// have seen (the HW), so serving on would hand out one offset twice with different
    /// records; Kafka takes the whole log directory offline for the same reason.
    pub fn take_offline(&self, why: String) {
        tracing::error!(partition = %self.name(), "taking the partition offline: {why}");
        let _ = self.offline.set(why);
        self.hw_advanced.notify_waiters();
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
                "{}: leader epoch {} is {what} than the leader's {}; refresh metadata and retry",
                self.name(),
                client_epoch.0,
                ours.0
            ),
        ))
    }

    /// The ordered phase of an append: checks, then writes the batches to the log (the page
    /// cache) with offsets and this leader's epoch. Blocking: call it from a blocking
    /// thread, in request order, and finish with [`Partition::complete`]. The batches are
    /// validated before any is written, so a request appends all of them or none.
    pub fn append_now(&self, records: Bytes, acks: Acks) -> Result<PendingAppend, ApiError> {
        self.check_live()?;
        if acks == Acks::All && self.isr_size() < self.min_insync_replicas {
            return Err(ApiError::new(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{}: {} in-sync replica(s), fewer than min.insync.replicas={}; \
                     add replicas or lower min.insync.replicas",
                    self.name(),
                    self.isr_size(),
                    self.min_insync_replicas
                ),
            ));
        }
        let batches = split_batches(records)?;
        let epoch = self.leader_epoch();
        let mut first: Option<AppendInfo> = None;
        let mut last = None;
        for batch in batches {
            let (info, ticket) = self
                .log
                .append_no_wait(batch, epoch)
                .map_err(|e| self.append_failed(e))?;
            first.get_or_insert(info);
            last = Some((info, ticket));
        }
        let (last_info, ticket) = last.expect("split_batches returns at least one batch");
        let first = first.expect("at least one batch");
        Ok(PendingAppend {
            log_start_offset: self.log.read().log_start_offset(),
            info: AppendInfo {
                base_offset: first.base_offset,
                last_offset: last_info.last_offset,
                max_timestamp: first.max_timestamp.max(last_info.max_timestamp),
            },
            ticket,
        })
    }

    /// The completion phase of an append: waits for durability as the mode says (under
    /// `fsync` even for acks=0, so the HW, the flushed offset, keeps moving without anyone
    /// else flushing), then advances the HW. Appends of many requests wait together: one
    /// fsync covers all of them (group commit).
    pub async fn complete(
        self: &Arc<Self>,
        pending: PendingAppend,
    ) -> Result<AppendInfo, ApiError> {
        let visible_end = match self.durability {
            Durability::Fsync => {
                let partition = Arc::clone(self);
                tokio::task::spawn_blocking(move || {
                    partition.log.wait_durable(pending.ticket)?;
                    Ok(partition.log.flushed_offset())
                })
                .await
                .map_err(|e| {
                    ApiError::new(ErrorCode::UnknownServerError, format!("append task: {e}"))
                })?
                .map_err(|e| self.append_failed(e))?
            }
            Durability::Replicated { .. } => pending.info.last_offset.plus(1),
        };
        self.advance_high_watermark(visible_end);
        Ok(pending.info)
    }

    fn append_failed(&self, e: StorageError) -> ApiError {
        let e = ApiError::from(e);
        tracing::warn!(partition = %self.name(), "append failed: {}", e.message);
        e
    }

    /// In-sync replicas. A single replica is always in sync with itself.
    fn isr_size(&self) -> u16 {
        1
    }

    /// Moves the HW forward to `offset` (never back) and wakes long-polling fetches.
    pub fn advance_high_watermark(&self, offset: Offset) {
        let previous = self.high_watermark.fetch_max(offset.0, Ordering::AcqRel);
        if offset.0 > previous {
            self.hw_advanced.notify_waiters();
        }
    }

    /// Reads whole batches from `offset`, up to `max_bytes` (at least one batch), below the
    /// HW. `offset` must be within `[log start, HW]`.
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: u32,
        client_epoch: LeaderEpoch,
    ) -> Result<ReadResult, ApiError> {
        self.check_live()?;
        self.check_leader_epoch(client_epoch)?;
        let high_watermark = self.high_watermark();
        let log = self.log.read();
        // Checked again under the lock: deletion sets the flag, then takes the write lock,
        // so a reader that gets the lock after it sees the flag.
        self.check_live()?;
        let log_start_offset = log.log_start_offset();
        if offset == high_watermark && offset >= log_start_offset {
            // A caught-up consumer: nothing to read (and nothing unflushed to copy).
            return Ok(ReadResult {
                records: Bytes::new(),
                high_watermark,
                log_start_offset,
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
        // Reads come from the page cache; a pread under the shared lock, never a copy of
        // more than `max_bytes` plus one batch.
        let records = log.read(offset, max_bytes, high_watermark)?;
        Ok(ReadResult {
            records,
            high_watermark,
            log_start_offset,
        })
    }

    /// Notified when the HW advances, the partition is deleted or it goes offline. Create
    /// and enable a `notified()` future before reading (see `handlers::fetch`), so a wake
    /// that races with the read is not lost.
    pub fn hw_advanced(&self) -> &Notify {
        &self.hw_advanced
    }

    /// ListOffsets: -2 earliest, -1 latest (the HW), else the first offset whose timestamp
    /// is at or after `timestamp_ms` and below the HW, with that timestamp; `(-1, -1)` when
    /// there is none.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
        client_epoch: LeaderEpoch,
    ) -> Result<(i64, Offset), ApiError> {
        use sluice_protocol::messages::{EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
        self.check_live()?;
        self.check_leader_epoch(client_epoch)?;
        let high_watermark = self.high_watermark();
        let log = self.log.read();
        self.check_live()?;
        match timestamp_ms {
            EARLIEST_TIMESTAMP => Ok((-1, log.log_start_offset())),
            LATEST_TIMESTAMP => Ok((-1, high_watermark)),
            t if t < 0 => Err(ApiError::new(
                ErrorCode::InvalidTimestamp,
                format!("timestamp {t} is not -2 (earliest), -1 (latest) or a time in ms"),
            )),
            t => match log.offset_for_timestamp(t)? {
                Some((found_ts, offset)) if offset < high_watermark => Ok((found_ts, offset)),
                _ => Ok((-1, Offset(-1))),
            },
        }
    }
}

/// Splits a produce request's records into batches by their length fields. Storage
/// validates each batch (CRC, sizes, counts) as it appends; when a request holds several,
/// they are all validated first so that the request appends all of them or none. Producers
/// send one batch per partition, so the CRC is normally computed once.
fn split_batches(records: Bytes) -> Result<Vec<Bytes>, ApiError> {
    let invalid = |reason: String| {
        ApiError::new(
            ErrorCode::CorruptMessage,
            format!("invalid record batch: {reason}; the producer must send RecordBatch v2"),
        )
    };
    let mut rest = records;
    let mut batches = Vec::new();
    while !rest.is_empty() {
        let len = match peek_total_len(&rest) {
            Ok(Some(len)) if len as usize <= rest.len() => len as usize,
            Ok(_) => return Err(invalid(format!("{} trailing bytes", rest.len()))),
            Err(e) => return Err(invalid(e.to_string())),
        };
        batches.push(rest.split_to(len));
    }
    match batches.len() {
        0 => Err(ApiError::new(
            ErrorCode::CorruptMessage,
            "the produce request has no record batch for this partition",
        )),
        1 => Ok(batches),
        _ => {
            for batch in &batches {
                RecordBatch::validate(batch.clone()).map_err(|e| invalid(e.to_string()))?;
            }
            Ok(batches)
        }
    }
}
