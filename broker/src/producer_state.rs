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
//!
//! Transactions (issue 26, the rest of Kafka's ProducerStateManager): a transactional
//! producer's first batch in a partition opens its transaction there, and the commit or
//! abort marker the coordinator writes closes it. The first offset of the oldest
//! transaction that is open, or closed by a marker the HW does not cover yet, bounds the
//! last stable offset (LSO) that read_committed consumers read up to; aborted
//! transactions are kept (producer, first offset, marker offset) until retention deletes
//! their markers, so a read_committed fetch can name the ones its records overlap.
//!
//! A transactional batch begins its producer's transaction in a partition only once the
//! transaction coordinator confirmed the partition is in the producer's ongoing
//! transaction (KIP-890): the leader holds a [`VerificationGuard`] for the producer while
//! it asks, a marker for the producer removes it, and the batch is appended only if its
//! guard is still in place, so a marker written meanwhile (the transaction ended) makes
//! the answer stale.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sluice_protocol::batch::{peek_total_len, BatchHeader, RecordBatch, NO_PRODUCER_ID};
use sluice_protocol::control::{ControlMarker, ControlType};
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Its last batches, oldest first.
    pub batches: VecDeque<BatchMeta>,
    /// When this replica last saw it write (ms since the Unix epoch, this broker's clock:
    /// producers' own timestamps may be anything).
    pub last_timestamp: i64,
    /// The first offset of its open transaction in this partition, if one is open.
    #[serde(default)]
    pub txn_first_offset: Option<Offset>,
    /// The epoch of the transaction coordinator whose marker for it this replica last
    /// wrote (-1: none yet): markers of an older coordinator are refused.
    #[serde(default = "no_coordinator_epoch")]
    pub coordinator_epoch: i32,
}

fn no_coordinator_epoch() -> i32 {
    -1
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            batches: VecDeque::new(),
            last_timestamp: 0,
            txn_first_offset: None,
            coordinator_epoch: no_coordinator_epoch(),
        }
    }
}

/// A transaction closed by a marker, in this partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedTxn {
    pub producer_id: i64,
    /// Its first record here.
    pub first_offset: Offset,
    /// Its marker's offset.
    pub marker_offset: Offset,
}

/// One producer as a replica knows it (Kafka's DescribeProducers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last sequence number it wrote here (-1: none in this epoch).
    pub last_sequence: i32,
    /// When this replica last saw it write (ms since the Unix epoch).
    pub last_timestamp: i64,
    /// The coordinator epoch of the last marker written here for it (-1: none).
    pub coordinator_epoch: i32,
    /// The first offset of its transaction open here, if one is.
    pub txn_start_offset: Option<Offset>,
}

/// What to do with an idempotent batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// It is in the log already, at these offsets.
    Duplicate(BatchMeta),
}

/// A leader's note that it is asking the transaction coordinator whether a producer's
/// transaction includes this partition, before a batch begins the transaction here. Each
/// is unique (a process-wide counter), so an answer cannot be matched to a later
/// verification of the same producer: a marker removes the guard, and a guard made after
/// it is another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerificationGuard {
    producer_id: i64,
    epoch: i16,
    token: u64,
}

/// The tokens of [`VerificationGuard`]s.
static NEXT_GUARD: AtomicU64 = AtomicU64::new(1);

impl VerificationGuard {
    /// The producer being verified.
    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    /// Its epoch.
    pub fn epoch(&self) -> i16 {
        self.epoch
    }
}

/// The identity fields of a batch: producer id, epoch, sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub max_timestamp: i64,
    /// Part of a transaction (the attributes' transactional bit).
    pub transactional: bool,
}

impl Stamp {
    /// The stamp of an idempotent (or transactional) data batch, `None` for a plain one or
    /// a control batch (markers carry no sequence: see [`ProducerStates::check_marker`]).
    pub fn of(header: &BatchHeader) -> Option<Stamp> {
        if header.producer_id == NO_PRODUCER_ID || header.producer_id < 0 || header.is_control() {
            return None;
        }
        Some(Stamp {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            last_seq: add_seq(header.base_sequence, header.last_offset_delta),
            max_timestamp: header.max_timestamp,
            transactional: header.is_transactional(),
        })
    }

    /// The stamp of a transactional batch a coordinator writes for producer `producer_id`
    /// at `epoch` (no sequence), before the batch is built: for the checks that come first.
    pub fn of_coordinator_write(producer_id: i64, epoch: i16) -> Stamp {
        Stamp {
            producer_id,
            epoch,
            first_seq: sluice_protocol::batch::NO_SEQUENCE,
            last_seq: sluice_protocol::batch::NO_SEQUENCE,
            max_timestamp: -1,
            transactional: true,
        }
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
    /// Transactions closed by a marker the HW may not cover yet: they still bound the LSO
    /// (a reader must not see their records before it can see how they ended).
    #[serde(default)]
    ended: Vec<EndedTxn>,
    /// Aborted transactions whose markers are still in the log, by marker offset.
    #[serde(default)]
    aborted: Vec<EndedTxn>,
    /// The open transactions, (first offset, producer id): the index of the entries'
    /// `txn_first_offset`, rebuilt from them after a load.
    #[serde(skip)]
    open: BTreeSet<(Offset, i64)>,
    /// The log end the snapshot file describes, if it describes this state: a checkpoint
    /// of an unchanged log writes nothing.
    #[serde(skip)]
    saved_at: Option<Offset>,
    /// The verifications in progress, by producer id (the leader's, in memory only): one
    /// per producer with a batch waiting for its coordinator's answer, removed by the
    /// append it allowed, a failed answer or a marker for the producer.
    #[serde(skip)]
    verifying: HashMap<i64, VerificationGuard>,
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

    /// Every producer remembered, by id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut active: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| ActiveProducer {
                producer_id,
                epoch: entry.epoch,
                last_sequence: entry.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: entry.last_timestamp,
                coordinator_epoch: entry.coordinator_epoch,
                txn_start_offset: entry.txn_first_offset,
            })
            .collect();
        active.sort_by_key(|p| p.producer_id);
        active
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
            return Err(fenced(stamp, entry.epoch));
        }
        // Whatever its epoch: a non-transactional batch of a producer whose transaction is
        // open here would, in a newer epoch, fence the markers that close the transaction,
        // leaving it open for ever (Kafka refuses it the same way). A producer's own new
        // epoch comes after its coordinator ended the transaction with markers.
        if entry.txn_first_offset.is_some() && !stamp.transactional {
            return Err(ApiError::new(
                ErrorCode::InvalidTxnState,
                format!(
                    "producer {} epoch {} sent a non-transactional batch while its \
                     transaction (epoch {}) is open in this partition; commit or abort the \
                     transaction first",
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

    /// Whether a transactional batch with `stamp` would begin its producer's transaction
    /// here: none is open in its epoch.
    pub fn begins_txn(&self, stamp: &Stamp) -> bool {
        self.producers
            .get(&stamp.producer_id)
            .is_none_or(|e| e.epoch != stamp.epoch || e.txn_first_offset.is_none())
    }

    /// The guard under which `stamp`'s producer is verified: the one of a verification of
    /// the same epoch already in progress (both answers then come after it was made), else
    /// a new one.
    pub fn start_verification(&mut self, stamp: &Stamp) -> VerificationGuard {
        let fresh = VerificationGuard {
            producer_id: stamp.producer_id,
            epoch: stamp.epoch,
            token: NEXT_GUARD.fetch_add(1, Ordering::Relaxed),
        };
        let guard = self.verifying.entry(stamp.producer_id).or_insert(fresh);
        if guard.epoch != stamp.epoch {
            *guard = fresh;
        }
        *guard
    }

    /// Takes `guard` if it is still in place: no marker for its producer was recorded, and
    /// no newer verification replaced it, since it was made.
    pub fn take_verification(&mut self, guard: VerificationGuard) -> bool {
        if self.verifying.get(&guard.producer_id) == Some(&guard) {
            self.verifying.remove(&guard.producer_id);
            return true;
        }
        false
    }

    /// Forgets `guard` (its verification failed), if it is still in place.
    pub fn cancel_verification(&mut self, guard: VerificationGuard) {
        self.take_verification(guard);
    }

    /// The check of a batch a coordinator writes for a producer (the group coordinator's
    /// TxnOffsetCommit): its records carry no sequence, so only the producer's epoch is
    /// checked, as Kafka does for `AppendOrigin.Coordinator`.
    pub fn check_coordinator_write(&self, stamp: &Stamp) -> Result<Verdict, ApiError> {
        match self.producers.get(&stamp.producer_id) {
            Some(entry) if stamp.epoch < entry.epoch => Err(fenced(stamp, entry.epoch)),
            _ => Ok(Verdict::Append),
        }
    }

    /// Records a batch written at `base_offset..=last_offset` (by this leader, or copied
    /// from one) at `now_ms`.
    pub fn record(&mut self, stamp: &Stamp, base_offset: Offset, last_offset: Offset, now_ms: i64) {
        let entry = self.producers.entry(stamp.producer_id).or_default();
        if stamp.epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = stamp.epoch;
        }
        if stamp.transactional && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(base_offset);
            self.open.insert((base_offset, stamp.producer_id));
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
                self.apply(&header, &rest[..len], now_ms);
            }
            rest = &rest[len..];
        }
    }

    /// Records one whole batch at its offsets, whatever it is: an idempotent or
    /// transactional batch's sequences, a marker's end of a transaction, nothing for a
    /// plain batch (a follower's copy, a replay).
    fn apply(&mut self, header: &BatchHeader, batch: &[u8], now_ms: i64) {
        if let Some(stamp) = Stamp::of(header) {
            self.record(&stamp, header.base_offset, header.last_offset(), now_ms);
        } else if header.is_control() && header.producer_id >= 0 {
            match RecordBatch::validate(Bytes::copy_from_slice(batch))
                .and_then(|b| ControlMarker::of(&b))
            {
                Ok(marker) => self.record_marker(
                    header.producer_id,
                    header.producer_epoch,
                    marker,
                    header.base_offset,
                    now_ms,
                ),
                // Kafka skips control records it does not know, and so do we.
                Err(e) => tracing::warn!(
                    "skipping control batch at offset {}: {e}",
                    header.base_offset
                ),
            }
        }
    }

    /// The leader's check of a marker before it is appended: the producer's epoch and the
    /// coordinator's may not be older than the ones this partition has seen.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: &ControlMarker,
    ) -> Result<(), ApiError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(ApiError::new(
                ErrorCode::InvalidProducerEpoch,
                format!(
                    "a {} marker for producer {producer_id} epoch {epoch} is fenced: epoch {} \
                     has written here since",
                    marker.kind.name(),
                    entry.epoch
                ),
            ));
        }
        if marker.coordinator_epoch < entry.coordinator_epoch {
            return Err(ApiError::new(
                ErrorCode::TransactionCoordinatorFenced,
                format!(
                    "a {} marker for producer {producer_id} comes from coordinator epoch {}, \
                     older than epoch {} whose marker this partition has",
                    marker.kind.name(),
                    marker.coordinator_epoch,
                    entry.coordinator_epoch
                ),
            ));
        }
        Ok(())
    }

    /// Records a marker written at `offset`: the producer's transaction here (if one is
    /// open) ends; an aborted one is remembered for read_committed fetches. A marker in a
    /// newer producer epoch (the coordinator bumps it when it aborts a transaction on its
    /// own) restarts the producer's sequences.
    pub fn record_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: ControlMarker,
        offset: Offset,
        now_ms: i64,
    ) {
        // A verification in progress asked about the transaction this marker ends (or an
        // older one): its answer no longer holds.
        self.verifying.remove(&producer_id);
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = epoch;
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(marker.coordinator_epoch);
        entry.last_timestamp = entry.last_timestamp.max(now_ms);
        let Some(first_offset) = entry.txn_first_offset.take() else {
            return;
        };
        self.open.remove(&(first_offset, producer_id));
        let ended = EndedTxn {
            producer_id,
            first_offset,
            marker_offset: offset,
        };
        self.ended.push(ended);
        if marker.kind == ControlType::Abort {
            self.aborted.push(ended);
        }
    }

    /// The first offset a read_committed reader may not read past yet: the oldest open
    /// transaction's first offset, or that of one whose marker is at or past
    /// `high_watermark` (what is below it is decided). `None` when nothing is unstable.
    pub fn first_unstable_offset(&mut self, high_watermark: Offset) -> Option<Offset> {
        self.ended.retain(|t| t.marker_offset >= high_watermark);
        let open = self.open.first().map(|(first, _)| *first);
        let ended = self.ended.iter().map(|t| t.first_offset).min();
        match (open, ended) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Where the unstable part starts as far as this state knows, without pruning ended
    /// transactions the HW has passed: `i64::MAX` when no transaction is open or awaiting
    /// its marker's replication.
    pub fn unstable_bound(&self) -> i64 {
        let open = self.open.first().map(|(first, _)| first.0);
        let ended = self.ended.iter().map(|t| t.first_offset.0).min();
        open.into_iter().chain(ended).min().unwrap_or(i64::MAX)
    }

    /// The aborted transactions with records in `from..=to`: the ones whose first offset
    /// is at or before `to` and whose marker is at or after `from`.
    ///
    /// `aborted` is in marker order (markers are recorded as the log has them), so the
    /// ones ending before `from` are skipped by a binary search: a tailing read_committed
    /// fetch, under the lock the produce path takes, does not walk every abort the
    /// partition ever had (a compacted one keeps them until its log start passes them).
    pub fn aborted_between(&self, from: Offset, to: Offset) -> Vec<(i64, Offset)> {
        debug_assert!(self
            .aborted
            .windows(2)
            .all(|w| w[0].marker_offset <= w[1].marker_offset));
        let skip = self.aborted.partition_point(|t| t.marker_offset < from);
        self.aborted[skip..]
            .iter()
            .filter(|t| t.first_offset <= to)
            .map(|t| (t.producer_id, t.first_offset))
            .collect()
    }

    /// Every aborted transaction still remembered: producer id, first offset, marker
    /// offset (what the log cleaner removes).
    pub fn aborted_ranges(&self) -> Vec<(i64, Offset, Offset)> {
        self.aborted
            .iter()
            .map(|t| (t.producer_id, t.first_offset, t.marker_offset))
            .collect()
    }

    /// Forgets aborted transactions whose markers are below `log_start` (deleted).
    pub fn forget_aborted_before(&mut self, log_start: Offset) {
        let n = self.aborted.len();
        self.aborted.retain(|t| t.marker_offset >= log_start);
        if self.aborted.len() != n {
            self.saved_at = None;
        }
    }

    /// Rebuilds the index of open transactions from the entries (after a load), and puts
    /// the aborted ones in marker order, which `aborted_between` searches by (a snapshot
    /// keeps that order; this makes it not depend on it).
    fn index_open(&mut self) {
        self.aborted.sort_by_key(|t| t.marker_offset);
        self.open = self
            .producers
            .iter()
            .filter_map(|(&id, e)| Some((e.txn_first_offset?, id)))
            .collect();
    }

    /// Forgets producers whose last batch is older than `before_ms`, but not one with an
    /// open transaction (its coordinator ends it). Returns how many.
    pub fn expire(&mut self, before_ms: i64) -> usize {
        let n = self.producers.len();
        self.producers
            .retain(|_, e| e.last_timestamp >= before_ms || e.txn_first_offset.is_some());
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
                let mut states = snapshot.states;
                states.index_open();
                (states, snapshot.offset.max(start))
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
                    states.apply(&header, batch, now_ms);
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

fn fenced(stamp: &Stamp, newer: i16) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidProducerEpoch,
        format!(
            "producer {} epoch {} is fenced: epoch {newer} has written here since; close this \
             producer",
            stamp.producer_id, stamp.epoch
        ),
    )
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
