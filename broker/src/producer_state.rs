//! Idempotent producers' state of one partition replica (issue 9, Kafka's
//! ProducerStateManager): per producer id, its epoch and the sequence numbers and offsets
//! of its last [`BATCHES_KEPT`] batches. The leader checks every idempotent batch against
//! it before appending: a batch it already has (same producer, epoch and sequences) is not
//! written again and gets its original offsets; a gap in the sequence is
//! OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is INVALID_PRODUCER_EPOCH (fenced).
//!
//! Followers apply the same batches as they copy them, so a new leader knows every
//! sequence; a restart rebuilds the state from a snapshot file (written at each
//! checkpoint) plus the batches after it, and a truncation rebuilds it from an older
//! snapshot or the log start. Producers idle longer than the expiration are forgotten.

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_protocol::batch::{peek_total_len, BatchHeader, NO_PRODUCER_ID};
use sluice_protocol::{ErrorCode, Offset};
use sluice_storage::{Clock, DurableFile, SharedLog, SystemClock};

use crate::error::ApiError;

/// Batches remembered per producer: as many as a producer may have in flight per
/// partition (Kafka's `max.in.flight.requests.per.connection` limit with idempotence).
pub const BATCHES_KEPT: usize = 5;
/// The snapshot's file name in the partition directory: `SLPS` v1, the state as JSON,
/// CRC-32C (storage's `DurableFile`).
const SNAPSHOT_FILE: &str = "producer-state";
/// The snapshot's magic and version.
const SNAPSHOT_MAGIC: [u8; 4] = *b"SLPS";
const SNAPSHOT_VERSION: u8 = 1;
/// The unversioned, unchecksummed JSON snapshot of earlier builds: read once, when no
/// versioned one exists, and removed by the next save.
const LEGACY_SNAPSHOT_FILE: &str = "producer-state.json";
/// Bytes read per step when replaying the log.
const REPLAY_READ_BYTES: u32 = 1 << 20;

/// One batch a producer wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: Offset,
    pub last_offset: Offset,
}

/// What the replica knows of one producer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Its last batches, oldest first.
    pub batches: VecDeque<BatchMeta>,
    /// When this replica last saw it write (ms since the Unix epoch, this broker's clock:
    /// producers' own timestamps may be anything).
    pub last_timestamp: i64,
}

/// What to do with an idempotent batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// It is in the log already, at these offsets.
    Duplicate(BatchMeta),
}

/// The identity fields of a batch: producer id, epoch, sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub max_timestamp: i64,
}

impl Stamp {
    /// The stamp of an idempotent batch, `None` for a plain one.
    pub fn of(header: &BatchHeader) -> Option<Stamp> {
        if header.producer_id == NO_PRODUCER_ID || header.producer_id < 0 {
            return None;
        }
        Some(Stamp {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            last_seq: add_seq(header.base_sequence, header.last_offset_delta),
            max_timestamp: header.max_timestamp,
        })
    }
}

/// Sequence arithmetic: sequences wrap from `i32::MAX` to 0, as in Kafka.
fn add_seq(seq: i32, delta: i32) -> i32 {
    ((i64::from(seq) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32
}

/// The producers of one partition replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// The log end the snapshot file describes, if it describes this state: a checkpoint
    /// of an unchanged log writes nothing.
    #[serde(skip)]
    saved_at: Option<Offset>,
}

impl ProducerStates {
    /// How many producers are remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Each tracked producer's last batch (its base offset): what the log cleaner keeps.
    pub fn last_batches(&self) -> impl Iterator<Item = (i64, Offset)> + '_ {
        self.producers
            .iter()
            .filter_map(|(&id, entry)| Some((id, entry.batches.back()?.base_offset)))
    }

    /// A producer's entry.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// The leader's check of an idempotent batch before it is appended.
    pub fn check(&self, stamp: &Stamp) -> Result<Verdict, ApiError> {
        let Some(entry) = self.producers.get(&stamp.producer_id) else {
            // A producer this replica has not seen (new, or expired) starts at sequence 0.
            // Taking any sequence would let a pipelined batch in ahead of an earlier one the
            // leader refused, reordering the producer's records; a producer whose state
            // expired here gets OUT_OF_ORDER_SEQUENCE_NUMBER and restarts in a new epoch.
            if stamp.first_seq != 0 {
                return Err(ApiError::new(
                    ErrorCode::OutOfOrderSequenceNumber,
                    format!(
                        "producer {} epoch {} sent sequence {}, but this partition has no \
                         state for it (new here, or expired): its first batch must have \
                         sequence 0; the producer restarts its sequences in a new epoch",
                        stamp.producer_id, stamp.epoch, stamp.first_seq
                    ),
                ));
            }
            return Ok(Verdict::Append);
        };
        if stamp.epoch < entry.epoch {
            return Err(ApiError::new(
                ErrorCode::InvalidProducerEpoch,
                format!(
                    "producer {} epoch {} is fenced: epoch {} has written here since; close \
                     this producer",
                    stamp.producer_id, stamp.epoch, entry.epoch
                ),
            ));
        }
        if stamp.epoch > entry.epoch {
            if stamp.first_seq != 0 {
                return Err(out_of_order(stamp, 0));
            }
            return Ok(Verdict::Append);
        }
        if let Some(original) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == stamp.first_seq && b.last_seq == stamp.last_seq)
        {
            return Ok(Verdict::Duplicate(*original));
        }
        let expected = entry
            .batches
            .back()
            .map_or(stamp.first_seq, |b| add_seq(b.last_seq, 1));
        if stamp.first_seq != expected {
            return Err(out_of_order(stamp, expected));
        }
        Ok(Verdict::Append)
    }

    /// Records a batch written at `base_offset..=last_offset` (by this leader, or copied
    /// from one) at `now_ms`.
    pub fn record(&mut self, stamp: &Stamp, base_offset: Offset, last_offset: Offset, now_ms: i64) {
        let entry = self.producers.entry(stamp.producer_id).or_default();
        if stamp.epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = stamp.epoch;
        }
        if entry.batches.len() == BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: stamp.first_seq,
            last_seq: stamp.last_seq,
            base_offset,
            last_offset,
        });
        entry.last_timestamp = entry.last_timestamp.max(now_ms);
    }

    /// Records every idempotent batch of `records` (whole batches with their offsets).
    pub fn record_batches(&mut self, records: &Bytes, now_ms: i64) {
        let mut rest: &[u8] = records;
        while let Ok(Some(len)) = peek_total_len(rest) {
            let len = len as usize;
            if len > rest.len() {
                break;
            }
            if let Ok(header) = BatchHeader::parse(&rest[..len]) {
                if let Some(stamp) = Stamp::of(&header) {
                    self.record(&stamp, header.base_offset, header.last_offset(), now_ms);
                }
            }
            rest = &rest[len..];
        }
    }

    /// Forgets producers whose last batch is older than `before_ms`. Returns how many.
    pub fn expire(&mut self, before_ms: i64) -> usize {
        let n = self.producers.len();
        self.producers.retain(|_, e| e.last_timestamp >= before_ms);
        let expired = n - self.producers.len();
        if expired > 0 {
            self.saved_at = None;
        }
        expired
    }

    /// Rebuilds the state of `log`: from the snapshot if it is not past the log end,
    /// else from the log start, then replays the batches after it. Producers replayed
    /// count as active now. Blocking.
    pub fn rebuild(log: &SharedLog) -> ProducerStates {
        let now_ms = SystemClock.now_ms();
        let (dir, start, end) = {
            let guard = log.read();
            (
                guard.dir().to_path_buf(),
                guard.log_start_offset(),
                guard.log_end_offset(),
            )
        };
        let (mut states, from) = match Snapshot::load(&dir) {
            // Retention may have deleted the batches a snapshot describes; their producers'
            // sequences still hold, so such a snapshot is kept.
            Some(snapshot) if snapshot.offset <= end => {
                (snapshot.states, snapshot.offset.max(start))
            }
            Some(_) => {
                Snapshot::remove(&dir);
                (ProducerStates::default(), start)
            }
            None => (ProducerStates::default(), start),
        };
        let mut offset = from;
        while offset < end {
            let bytes = match log.read().read(offset, REPLAY_READ_BYTES, end) {
                Ok(bytes) if !bytes.is_empty() => bytes,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(
                        "rebuilding producer state of {}: reading offset {offset}: {e}",
                        dir.display()
                    );
                    break;
                }
            };
            let mut rest: &[u8] = &bytes;
            while let Ok(Some(len)) = peek_total_len(rest) {
                let len = len as usize;
                let Some(batch) = rest.get(..len) else { break };
                let Ok(header) = BatchHeader::parse(batch) else {
                    break;
                };
                if header.last_offset() >= offset {
                    if let Some(stamp) = Stamp::of(&header) {
                        states.record(&stamp, header.base_offset, header.last_offset(), now_ms);
                    }
                }
                offset = offset.max(header.next_offset());
                rest = &rest[len..];
            }
        }
        states
    }

    /// Writes the snapshot of the state at log end `offset` (atomically), unless the file
    /// already describes it. An empty state is saved too, so the next open of a log
    /// without idempotent producers does not replay it all. Blocking.
    pub fn save(&mut self, dir: &Path, offset: Offset) -> std::io::Result<()> {
        if self.saved_at == Some(offset) {
            return Ok(());
        }
        let snapshot = SnapshotRef {
            offset,
            states: self,
        };
        let json = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        Snapshot::file(dir)
            .write(&json)
            .map_err(std::io::Error::other)?;
        // The versioned file is durable: the legacy one, if any, is no longer needed.
        let _ = std::fs::remove_file(dir.join(LEGACY_SNAPSHOT_FILE));
        self.saved_at = Some(offset);
        Ok(())
    }
}

fn out_of_order(stamp: &Stamp, expected: i32) -> ApiError {
    ApiError::new(
        ErrorCode::OutOfOrderSequenceNumber,
        format!(
            "producer {} epoch {} sent sequence {}, expected {expected}: a batch before it \
             was lost; the producer must restart",
            stamp.producer_id, stamp.epoch, stamp.first_seq
        ),
    )
}

/// The snapshot file: the state as of a log end offset.
#[derive(Deserialize)]
struct Snapshot {
    offset: Offset,
    states: ProducerStates,
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    offset: Offset,
    states: &'a ProducerStates,
}

impl Snapshot {
    fn file(dir: &Path) -> DurableFile {
        DurableFile::new(
            &dir.join(SNAPSHOT_FILE),
            SNAPSHOT_MAGIC,
            SNAPSHOT_VERSION,
            "producer-state snapshot",
        )
    }

    /// The snapshot, if there is a readable one: the versioned file, else an earlier
    /// build's JSON file. A damaged one is ignored (the log has everything it had).
    fn load(dir: &Path) -> Option<Snapshot> {
        let ignore = |why: String| {
            tracing::warn!(
                "ignoring the producer-state snapshot in {}: {why}; rebuilding from the log",
                dir.display()
            );
            None
        };
        let bytes = match Snapshot::file(dir).read() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => std::fs::read(dir.join(LEGACY_SNAPSHOT_FILE)).ok()?,
            Err(e) => return ignore(e.to_string()),
        };
        match serde_json::from_slice(&bytes) {
            Ok(snapshot) => Some(snapshot),
            Err(e) => ignore(e.to_string()),
        }
    }

    /// Removes a snapshot that no longer matches the log (after a truncation), in either
    /// format.
    pub fn remove(dir: &Path) {
        let _ = Snapshot::file(dir).remove();
        let _ = std::fs::remove_file(dir.join(LEGACY_SNAPSHOT_FILE));
    }
}

/// Removes the snapshot if it covers offsets at or past `offset` (a truncation to
/// `offset` makes it describe batches the log no longer has). Blocking.
pub fn invalidate_snapshot_after(dir: &Path, offset: Offset) {
    if Snapshot::load(dir).is_none_or(|s| s.offset > offset) {
        Snapshot::remove(dir);
    }
}

#[cfg(test)]
mod tests;
