//! The history of a chaos run: every operation the workload and the nemesis carried out,
//! with its outcome and its times, in the shape the [checker](super::checker) reads.
//!
//! A history is a list of [`Op`]s:
//!
//! - [`ProduceAttempt`]: one record sent by one producer, with a value unique in the run,
//!   the times it was sent and its outcome known, and the outcome: [`ProduceOutcome::Ok`]
//!   (acknowledged at a partition and offset), [`ProduceOutcome::Failed`] (definitely not
//!   written) or [`ProduceOutcome::Unknown`] (may or may not be in the log).
//! - [`Poll`]: the records one poll of one consumer returned, in the order it returned
//!   them, and whether the consumer is a group member or has assigned partitions.
//! - [`Seek`]: a consumer moved its position in a partition (including the position it
//!   starts at after `assign`); reads after it are checked from there.
//! - [`Commit`]: a consumer committed offsets for its group, and whether the commit
//!   succeeded.
//! - [`NemesisEvent`]: a fault began or ended, or everything was healed; these give the
//!   availability windows of the report.
//!
//! **Times** are microseconds since the [`Recorder`] was created (from a monotonic
//! [`Instant`], so they never go backwards), as `u64` in fields named `*_us`. Hand-built
//! histories may use any origin; the checker only compares times with each other.
//!
//! **Outcomes are the subtle part.** A produce is [`ProduceOutcome::Failed`] only when the
//! record certainly never reached a broker: with this client, an error from
//! `Producer::send` (the record was refused before it joined a batch: an unknown topic or
//! partition, a record too large, a closed producer). Every error from the delivery future
//! is [`ProduceOutcome::Unknown`]: the batch was (or may have been) sent, and even a
//! definite refusal in the last answer says nothing about an earlier try whose answer was
//! lost. [`ProduceOutcome::from_send_error`] and [`ProduceOutcome::from_delivery`] apply
//! this rule. The checker never counts an unknown write as lost, and reports a failed one
//! that was read.
//!
//! [`Recorder`] is what the workload's tasks share: a clonable handle appending to one
//! list under a lock held for one push. A produce attempt is appended when it is sent (as
//! unknown, "no outcome recorded") and completed in place, so an attempt whose task was
//! cancelled before its outcome stays in the history as unknown instead of vanishing (a
//! value read without its attempt would be reported as unexpected). The history
//! serializes to JSON lines, one op a line, so a failed run can be dumped to a file and
//! checked again.
//!
//! Memory: a history holds every record read and every attempt, a few hundred bytes each
//! (about 200 MB for a million records read); a longer run needs a slower workload.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sluice_client::{ConsumerRecord, Error as ClientError, RecordMetadata};
use sluice_protocol::{Offset, PartitionId};

/// A partition of a topic: the unit within which offsets mean something.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionKey {
    /// The topic's name.
    pub topic: String,
    /// The partition's index.
    pub partition: PartitionId,
}

impl PartitionKey {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: PartitionId) -> PartitionKey {
        PartitionKey {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// The identity of a produce attempt, unique within a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AttemptId(pub u64);

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The identity of a fault, unique within a history; ties a [`Nemesis::FaultEnd`] to its
/// [`Nemesis::FaultStart`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FaultId(pub u64);

/// One record sent by one producer, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceAttempt {
    /// Unique within the history.
    pub id: AttemptId,
    /// The producer's name in the workload (`producer-2`).
    pub producer: String,
    /// Whether the producer was idempotent: a duplicate of its record is then a bug, not
    /// the price of a retry.
    pub idempotent: bool,
    /// The topic.
    pub topic: String,
    /// The partition, when the workload chose it; `None` when the client's partitioner
    /// did (the acknowledgement then says where it went).
    pub partition: Option<PartitionId>,
    /// The record's value, unique in the run: a retry by the workload is a new attempt
    /// with a new value (a value with several attempts may be duplicated legitimately).
    pub value: String,
    /// When the workload called `send`.
    pub invoke_us: u64,
    /// When the outcome was known; `None` when it never was (the attempt's task ended
    /// first), and the outcome is then unknown.
    pub complete_us: Option<u64>,
    /// What became of the record.
    pub outcome: ProduceOutcome,
}

impl ProduceAttempt {
    /// The partition and offset of the acknowledgement, if the attempt was acknowledged.
    pub fn acked(&self) -> Option<(PartitionKey, Offset)> {
        match self.outcome {
            ProduceOutcome::Ok { partition, offset } => {
                Some((PartitionKey::new(self.topic.as_str(), partition), offset))
            }
            _ => None,
        }
    }
}

impl fmt::Display for ProduceAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "attempt {} by {}{} of {:?} to {}",
            self.id,
            self.producer,
            if self.idempotent { " (idempotent)" } else { "" },
            self.value,
            self.topic
        )?;
        if let Some(p) = self.partition {
            write!(f, "/{p}")?;
        }
        write!(f, " at {}", fmt_us(self.invoke_us))?;
        match self.complete_us {
            Some(t) => write!(f, ", completed at {}: {}", fmt_us(t), self.outcome),
            None => write!(f, ", never completed: {}", self.outcome),
        }
    }
}

/// What became of a produced record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ProduceOutcome {
    /// Acknowledged: the record is at this offset of this partition of the topic.
    Ok {
        /// Where the record went.
        partition: PartitionId,
        /// The record's offset.
        offset: Offset,
    },
    /// Definitely not written: refused before it was sent to any broker.
    Failed {
        /// The client's error.
        error: String,
    },
    /// Perhaps written, perhaps not: a timeout, a connection lost, any error after the
    /// record may have reached a broker, or no outcome recorded at all.
    Unknown {
        /// The client's error, or why no outcome is known.
        error: String,
    },
}

impl ProduceOutcome {
    /// The outcome of an error from `Producer::send`: the record never joined a batch, so
    /// it was not written.
    pub fn from_send_error(error: &ClientError) -> ProduceOutcome {
        ProduceOutcome::Failed {
            error: error.to_string(),
        }
    }

    /// The outcome of a delivery future: its metadata when acknowledged with an offset,
    /// else unknown (the batch may have been written by a try whose answer was lost).
    pub fn from_delivery(result: &Result<RecordMetadata, ClientError>) -> ProduceOutcome {
        match result {
            Ok(meta) if meta.offset >= 0 => ProduceOutcome::Ok {
                partition: meta.partition,
                offset: Offset(meta.offset),
            },
            Ok(meta) => ProduceOutcome::Unknown {
                error: format!(
                    "acknowledged without an offset ({}) on partition {}",
                    meta.offset, meta.partition
                ),
            },
            Err(e) => ProduceOutcome::Unknown {
                error: e.to_string(),
            },
        }
    }
}

impl fmt::Display for ProduceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProduceOutcome::Ok { partition, offset } => {
                write!(f, "ok at partition {partition} offset {offset}")
            }
            ProduceOutcome::Failed { error } => write!(f, "failed ({error})"),
            ProduceOutcome::Unknown { error } => write!(f, "unknown ({error})"),
        }
    }
}

/// How a consumer gets its partitions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ConsumerMode {
    /// A member of a consumer group: the coordinator assigns partitions, and each starts
    /// at the group's committed offset.
    Group {
        /// The group's id.
        group: String,
    },
    /// Partitions assigned by the workload (`Consumer::assign`), positions set by seeks.
    Assign,
}

impl fmt::Display for ConsumerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumerMode::Group { group } => write!(f, "group {group}"),
            ConsumerMode::Assign => write!(f, "assign"),
        }
    }
}

/// A record as a poll returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: PartitionId,
    /// The record's offset.
    pub offset: Offset,
    /// The value, as UTF-8 (lossy); `<null>` for a null value.
    pub value: String,
}

impl ReadRecord {
    /// The record as the workload recorded it from the client's record.
    pub fn from_consumer_record(record: &ConsumerRecord) -> ReadRecord {
        ReadRecord {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: Offset(record.offset),
            value: match &record.value {
                Some(v) => String::from_utf8_lossy(v).into_owned(),
                None => "<null>".to_owned(),
            },
        }
    }

    /// The record's partition.
    pub fn key(&self) -> PartitionKey {
        PartitionKey::new(self.topic.as_str(), self.partition)
    }
}

/// What one poll of one consumer returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Poll {
    /// The consumer's name in the workload; one consumer, one task, so its ops are in
    /// order in the history.
    pub consumer: String,
    /// Group member or assigned partitions.
    #[serde(flatten)]
    pub mode: ConsumerMode,
    /// When the poll returned.
    pub time_us: u64,
    /// The records, in the order the poll returned them (in offset order per partition,
    /// if the consumer is correct). Empty polls may be left out of the history.
    pub records: Vec<ReadRecord>,
}

/// A consumer moved its position in a partition: the next record it reads from there
/// should be at `offset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seek {
    /// The consumer's name.
    pub consumer: String,
    /// When the seek returned.
    pub time_us: u64,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: PartitionId,
    /// The position after the seek (`Consumer::position`); `None` when not known, which
    /// only restarts the checks of the reads that follow.
    pub offset: Option<Offset>,
}

impl fmt::Display for Seek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seeked {}/{} to ",
            self.consumer, self.topic, self.partition
        )?;
        match self.offset {
            Some(o) => write!(f, "offset {o}")?,
            None => write!(f, "an unknown offset")?,
        }
        write!(f, " at {}", fmt_us(self.time_us))
    }
}

/// One partition's offset in a commit: the offset of the next record to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: PartitionId,
    /// The committed offset (the next record to read, as in Kafka).
    pub offset: Offset,
}

/// A consumer committed offsets for its group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The consumer's name.
    pub consumer: String,
    /// The group.
    pub group: String,
    /// When the commit was sent.
    pub invoke_us: u64,
    /// When its answer arrived.
    pub complete_us: u64,
    /// The offsets, one per partition.
    pub offsets: Vec<CommittedOffset>,
    /// Whether the coordinator accepted it.
    pub outcome: CommitOutcome,
}

impl fmt::Display for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "commit by {} for group {} from {} to {}: ",
            self.consumer,
            self.group,
            fmt_us(self.invoke_us),
            fmt_us(self.complete_us)
        )?;
        for (i, c) in self.offsets.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}/{}={}", c.topic, c.partition, c.offset)?;
        }
        match &self.outcome {
            CommitOutcome::Ok => write!(f, " (ok)"),
            CommitOutcome::Failed { error } => write!(f, " (failed: {error})"),
        }
    }
}

/// Whether a commit succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommitOutcome {
    /// The coordinator stored the offsets.
    Ok,
    /// The commit failed; the offsets may or may not be stored.
    Failed {
        /// The client's error.
        error: String,
    },
}

/// Something the nemesis did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// When it was done (for a start, once the fault is in place).
    pub time_us: u64,
    /// What was done.
    #[serde(flatten)]
    pub nemesis: Nemesis,
}

/// The kinds of nemesis events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Nemesis {
    /// A fault began; it lasts until its [`Nemesis::FaultEnd`] or the next
    /// [`Nemesis::HealAll`].
    FaultStart {
        /// Unique within the history.
        fault: FaultId,
        /// For the report: `SIGKILL node 2`, `cut 1<->3`.
        what: String,
    },
    /// The fault ended (the node restarted, the link healed).
    FaultEnd {
        /// The fault's id from its start.
        fault: FaultId,
    },
    /// Every fault ended.
    HealAll,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A produce attempt.
    Produce(ProduceAttempt),
    /// A consumer's poll.
    Poll(Poll),
    /// A consumer's seek.
    Seek(Seek),
    /// A consumer's commit.
    Commit(Commit),
    /// A nemesis event.
    Nemesis(NemesisEvent),
}

/// The operations of a run, in the order they were recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The operations. Produce attempts are in the order they were sent; everything else
    /// in the order it completed.
    pub ops: Vec<Op>,
}

/// A line of a JSON-lines history that does not parse.
#[derive(Debug)]
pub struct ParseError {
    /// The line's number, from 1.
    pub line: usize,
    /// The JSON error.
    pub error: serde_json::Error,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "history line {}: {}", self.line, self.error)
    }
}

impl std::error::Error for ParseError {}

impl History {
    /// A history of these ops.
    pub fn new(ops: Vec<Op>) -> History {
        History { ops }
    }

    /// One JSON object per op, each on its own line.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            // An op is plain data (strings, numbers, enums): serializing cannot fail.
            out.push_str(&serde_json::to_string(op).expect("an op serializes"));
            out.push('\n');
        }
        out
    }

    /// The history [`History::to_json_lines`] wrote; blank lines are skipped.
    pub fn from_json_lines(text: &str) -> Result<History, ParseError> {
        let mut ops = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let op =
                serde_json::from_str(line).map_err(|error| ParseError { line: i + 1, error })?;
            ops.push(op);
        }
        Ok(History { ops })
    }
}

/// What a producer is about to send, for [`Recorder::produce_invoked`].
#[derive(Clone, Debug)]
pub struct ProduceInvocation {
    /// The producer's name.
    pub producer: String,
    /// Whether the producer is idempotent.
    pub idempotent: bool,
    /// The topic.
    pub topic: String,
    /// The partition, when the workload chooses it.
    pub partition: Option<PartitionId>,
    /// The value, unique in the run.
    pub value: String,
}

/// A produce attempt in the history awaiting its outcome; pass it to
/// [`Recorder::produce_completed`]. Dropping it leaves the attempt unknown.
#[derive(Debug)]
#[must_use = "an attempt never completed stays unknown in the history"]
pub struct ProduceHandle {
    /// Where the attempt is in the history's ops.
    index: usize,
    /// The attempt's id, to check that the index still points at it.
    id: AttemptId,
}

impl ProduceHandle {
    /// The attempt's id.
    pub fn id(&self) -> AttemptId {
        self.id
    }
}

/// A clonable handle that the workload's tasks and the nemesis share to append to one
/// history; every append takes a lock for one push.
#[derive(Clone, Debug)]
pub struct Recorder {
    shared: Arc<Shared>,
}

/// What the clones of a [`Recorder`] share.
#[derive(Debug)]
struct Shared {
    /// Time 0 of the history.
    start: Instant,
    /// The ops so far. Locked for one push or one in-place completion, and the time of
    /// an op is read under the lock, so the ops are in time order.
    ops: Mutex<Vec<Op>>,
    /// The next produce attempt's id.
    next_attempt: AtomicU64,
    /// The next fault's id.
    next_fault: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty history whose time 0 is now.
    pub fn new() -> Recorder {
        Recorder {
            shared: Arc::new(Shared {
                start: Instant::now(),
                ops: Mutex::new(Vec::new()),
                next_attempt: AtomicU64::new(0),
                next_fault: AtomicU64::new(0),
            }),
        }
    }

    /// Microseconds since the recorder was created.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.shared.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Appends `op`, made with the current time under the lock.
    fn push(&self, make: impl FnOnce(u64) -> Op) -> usize {
        let mut ops = self.shared.ops.lock().expect("history lock poisoned");
        ops.push(make(self.now_us()));
        ops.len() - 1
    }

    /// Records that a producer is sending a record, as an attempt with an unknown outcome
    /// until [`Recorder::produce_completed`].
    pub fn produce_invoked(&self, invocation: ProduceInvocation) -> ProduceHandle {
        let id = AttemptId(self.shared.next_attempt.fetch_add(1, Ordering::Relaxed));
        let index = self.push(|now| {
            Op::Produce(ProduceAttempt {
                id,
                producer: invocation.producer,
                idempotent: invocation.idempotent,
                topic: invocation.topic,
                partition: invocation.partition,
                value: invocation.value,
                invoke_us: now,
                complete_us: None,
                outcome: ProduceOutcome::Unknown {
                    error: "no outcome recorded".to_owned(),
                },
            })
        });
        ProduceHandle { index, id }
    }

    /// Records the outcome of the attempt `handle` stands for, at the current time.
    pub fn produce_completed(&self, handle: ProduceHandle, outcome: ProduceOutcome) {
        let mut ops = self.shared.ops.lock().expect("history lock poisoned");
        let now = self.now_us();
        match ops.get_mut(handle.index) {
            Some(Op::Produce(attempt)) if attempt.id == handle.id => {
                attempt.complete_us = Some(now);
                attempt.outcome = outcome;
            }
            _ => panic!("produce handle {} does not point at its attempt", handle.id),
        }
    }

    /// Records a poll's records (converted from the client's), at the current time.
    pub fn poll(&self, consumer: &str, mode: &ConsumerMode, records: &[ConsumerRecord]) {
        let records = records
            .iter()
            .map(ReadRecord::from_consumer_record)
            .collect();
        self.poll_records(consumer, mode, records);
    }

    /// Records a poll's records, at the current time.
    pub fn poll_records(&self, consumer: &str, mode: &ConsumerMode, records: Vec<ReadRecord>) {
        self.push(|time_us| {
            Op::Poll(Poll {
                consumer: consumer.to_owned(),
                mode: mode.clone(),
                time_us,
                records,
            })
        });
    }

    /// Records that `consumer`'s position in `topic`/`partition` is now `offset`.
    pub fn seek(
        &self,
        consumer: &str,
        topic: &str,
        partition: PartitionId,
        offset: Option<Offset>,
    ) {
        self.push(|time_us| {
            Op::Seek(Seek {
                consumer: consumer.to_owned(),
                time_us,
                topic: topic.to_owned(),
                partition,
                offset,
            })
        });
    }

    /// Records a commit sent at `invoke_us` (from [`Recorder::now_us`]) whose answer
    /// arrived now.
    pub fn commit(
        &self,
        consumer: &str,
        group: &str,
        invoke_us: u64,
        offsets: Vec<CommittedOffset>,
        outcome: CommitOutcome,
    ) {
        self.push(|complete_us| {
            Op::Commit(Commit {
                consumer: consumer.to_owned(),
                group: group.to_owned(),
                invoke_us,
                complete_us,
                offsets,
                outcome,
            })
        });
    }

    /// Records that a fault is now in place; returns its id for [`Recorder::fault_end`].
    pub fn fault_start(&self, what: impl Into<String>) -> FaultId {
        let fault = FaultId(self.shared.next_fault.fetch_add(1, Ordering::Relaxed));
        let what = what.into();
        self.push(|time_us| {
            Op::Nemesis(NemesisEvent {
                time_us,
                nemesis: Nemesis::FaultStart { fault, what },
            })
        });
        fault
    }

    /// Records that the fault `fault` ended.
    pub fn fault_end(&self, fault: FaultId) {
        self.push(|time_us| {
            Op::Nemesis(NemesisEvent {
                time_us,
                nemesis: Nemesis::FaultEnd { fault },
            })
        });
    }

    /// Records that every fault ended.
    pub fn heal_all(&self) {
        self.push(|time_us| {
            Op::Nemesis(NemesisEvent {
                time_us,
                nemesis: Nemesis::HealAll,
            })
        });
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        History::new(
            self.shared
                .ops
                .lock()
                .expect("history lock poisoned")
                .clone(),
        )
    }
}

/// A time of the history in seconds, for messages: `12.345678s`.
pub fn fmt_us(us: u64) -> String {
    format!("{}.{:06}s", us / 1_000_000, us % 1_000_000)
}

#[cfg(test)]
mod tests;
