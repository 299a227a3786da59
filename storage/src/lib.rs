//! `sluice-storage`: the durable, segmented log of one partition replica, in a directory of
//! its own. It knows nothing of networking, replication or Raft; the broker decides what to
//! append and when data counts as committed. See ARCHITECTURE.md ("storage") for the files
//! and invariants.
//!
//! - [`PartitionLog`]: append (as leader or follower), read, lookups by offset, timestamp
//!   and leader epoch, roll, truncate, retention, compaction (the log cleaner, in two
//!   steps: [`PartitionLog::plan_cleaning`] then [`CleanPlan::run`] without the log, then
//!   [`PartitionLog::swap_cleaned`]), crash recovery.
//! - [`SharedLog`]: a `PartitionLog` shared between threads, with group commit: in `fsync`
//!   durability an append returns once it is on disk, and one fsync covers every append
//!   that queued behind the one running.

mod cleaner;
mod clock;
mod deleter;
mod epoch;
mod error;
mod file;
mod flusher;
mod index;
mod log;
mod segment;
mod shared;

pub use cleaner::{CleanPlan, CleanReport, Cleaned, Throttle, TxnOutcomes};
pub use clock::{Clock, ManualClock, SystemClock};
pub use epoch::EpochEntry;
pub use error::{Result, StorageError};
pub use file::{replace_durably, sync_dir, DurableFile, FileHeader};
pub use flusher::{Flusher, DEFAULT_FLUSH_THREADS};
pub use log::{
    AppendInfo, DetachedSegments, FlushJob, PartitionLog, ReadRecords, RecoveryReport, Truncation,
    SEND_FROM_FILE_MIN_BYTES,
};
pub use shared::{DurableTicket, FlushObserver, SharedLog};

/// When an append counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// An append is acknowledged only once fsynced (group commit). The default.
    Fsync,
    /// Appends are acknowledged once replicated; the owner flushes every `flush_interval_ms`
    /// in the background (Kafka's default behaviour).
    Replicated { flush_interval_ms: u64 },
}

/// What happens to old records (Kafka's `cleanup.policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CleanupPolicy {
    /// Retention deletes whole old segments (by time and size). The default.
    #[default]
    Delete,
    /// The log cleaner keeps the latest record of each key; retention deletes nothing.
    Compact,
    /// Both: compaction, and retention deletes segments past its limits.
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether retention by time and size applies.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Whether the log cleaner compacts the log.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// The config value: `delete`, `compact` or `compact,delete`.
    pub fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

/// Settings of one partition log. Defaults are Kafka's (segment 1 GiB, index interval
/// 4 KiB, retention 7 days) and sluice's (fsync durability).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A segment rolls before it would exceed this many bytes (Kafka `segment.bytes`).
    pub segment_bytes_max: u32,
    /// A segment rolls once its first record is this old (Kafka `segment.ms`).
    pub segment_ms_max: i64,
    /// Bytes of log between offset index entries (Kafka `index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Largest size of one index file; a full index rolls the segment.
    pub index_bytes_max: u32,
    /// Delete sealed segments whose newest record is older than this (`retention.ms`).
    pub retention_ms: Option<i64>,
    /// Delete the oldest sealed segments while the log is larger (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// Sealed segments whose files may be open at once; the least recently read close first.
    pub max_open_sealed_segments: usize,
    /// When appends are durable.
    pub durability: Durability,
    /// Retention, compaction or both (`cleanup.policy`).
    pub cleanup_policy: CleanupPolicy,
    /// How long the cleaner keeps a tombstone (a record with a null value), or a marker of
    /// a transaction with no records left, after the first run that kept it
    /// (`delete.retention.ms`; that run sets the batch's delete horizon), so consumers
    /// reading from the start still see the deletion.
    pub delete_retention_ms: i64,
    /// The cleaner runs only when the dirty share of the cleanable bytes (those written
    /// since the last cleaning) is at least this (`min.cleanable.dirty.ratio`).
    pub min_cleanable_dirty_ratio: f64,
    /// A segment is cleanable only once its newest record is this old
    /// (`min.compaction.lag.ms`), so consumers see every recent record.
    pub min_compaction_lag_ms: i64,
    /// A compacted log is cleaned, whatever its dirty ratio, once a dirty segment's newest
    /// record is this old, and its active segment rolls at least this often
    /// (`max.compaction.lag.ms`, Kafka's KIP-354; unbounded by default): a bound on how long
    /// a superseded value or a tombstone's key stays readable in a quiet topic.
    pub max_compaction_lag_ms: i64,
    /// A produced batch may be timestamped at most this far ahead of the broker's clock
    /// (`message.timestamp.after.max.ms`, Kafka's KIP-937 bound, 1 hour by default):
    /// retention and compaction lag go by a segment's newest timestamp. Checked by the
    /// broker's produce path; storage does not read it.
    pub message_timestamp_after_max_ms: i64,
    /// A produced record may be timestamped at most this far behind the broker's clock
    /// (`message.timestamp.before.max.ms`, the other half of KIP-937; unbounded by
    /// default, as in Kafka): a record stamped years ago would be deleted by retention at
    /// once. Checked by the broker's produce path; storage does not read it.
    pub message_timestamp_before_max_ms: i64,
    /// Produced batches are stamped with the broker's clock as they are appended
    /// (`message.timestamp.type=LogAppendTime`) instead of keeping the producer's
    /// (CreateTime, the default). Applied by the broker's produce path.
    pub log_append_time: bool,
    /// The largest record batch a producer may append (`max.message.bytes`); by default the
    /// broker's frame limit, which bounds a batch anyway. Checked by the broker's produce
    /// path; storage does not read it.
    pub max_message_bytes: u32,
}

impl LogConfig {
    /// How old the active segment may get before it rolls: `segment.ms`, or a compacted
    /// log's `max.compaction.lag.ms` when that is shorter (the active segment is never
    /// cleaned, so it must be sealed for the bound to hold).
    pub fn segment_roll_ms(&self) -> i64 {
        if self.cleanup_policy.compacts() {
            self.segment_ms_max.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms_max
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 1 << 30,
            segment_ms_max: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            index_bytes_max: 10 << 20,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_open_sealed_segments: 16,
            durability: Durability::Fsync,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            message_timestamp_after_max_ms: 3600 * 1000,
            message_timestamp_before_max_ms: i64::MAX,
            log_append_time: false,
            max_message_bytes: sluice_protocol::frame::DEFAULT_MAX_FRAME_BYTES,
        }
    }
}
