//! The log cleaner: compaction of a partition log (Kafka's `LogCleaner`), for topics whose
//! `cleanup.policy` includes `compact`. It keeps, for each key, the record with the highest
//! offset, and drops tombstones (records with a null value) `delete.retention.ms` after it
//! first kept them: the first run that keeps a batch's tombstones sets the batch's delete
//! horizon (KIP-534: attribute bit 6, the horizon in `baseTimestamp`, the records'
//! timestamps counted from it), and a run after the horizon removes them. Offsets never
//! change: readers see gaps.
//!
//! Three steps, so the heavy I/O runs without the log's lock:
//! 1. [`crate::PartitionLog::plan_cleaning`] (read access): which sealed segments below the
//!    owner's bound (the HW) may be cleaned, from the log start, and whether the dirty share
//!    of them (written since the last cleaning) is large enough.
//! 2. [`CleanPlan::run`] (no access to the log): maps every key of the dirty segments (by a
//!    128-bit keyed hash, as Kafka's cleaner maps an MD5) to its latest offset, within a
//!    memory budget (a map that fills stops after the batch that filled it, and the rest
//!    waits for the next run), then rewrites the cleanable segments that the map covers in
//!    groups that fit one segment each, as `{base}.log.cleaned` (+ indexes), fsynced. The
//!    owner passes the last batch of each producer it still tracks. Segment files are
//!    opened as they are read, and I/O is paced by a [`Throttle`].
//! 3. [`crate::PartitionLog::swap_cleaned`] (write access): replaces the old segments of each
//!    group with the cleaned one, oldest group first, by Kafka's protocol: rename the
//!    `.cleaned` files to `.swap` (the log's rename is the commit point), delete the old
//!    segments, rename the `.swap` files to their final names. A crash at any point leaves
//!    either the old segments (plus `.cleaned` files, which the next open deletes) or a
//!    `.swap` log, which the next open completes ([`finish_interrupted_cleaning`]).
//!
//! What a batch becomes: a control batch (a transaction's marker) stays whole until no
//! batch of its transaction is left, is then dated (its delete horizon set), and goes once
//! its horizon has passed; a batch whose every record survives (and needs no date) is
//! copied byte for byte; one that loses some records
//! is rebuilt with the survivors at their offsets and compressed again with its codec
//! ([`sluice_protocol::batch::rebuild_batch`]), unless that is not smaller (a producer's
//! higher compression level), when it is kept whole; one that loses them all is dropped,
//! unless it is the last batch of a producer the owner still tracks, which stays as an
//! empty batch (header only, `recordsCount` 0, as Kafka keeps it) so the producer's last
//! sequence survives a rebuild of the producer state from the log. A producer the owner
//! forgot (expired) keeps nothing. A transactional batch is compacted by its transaction's
//! outcome when the owner knows it ([`CleanPlan::with_transactions`]): committed as any
//! batch, aborted removed; otherwise it is kept and supersedes nothing. Records without a
//! key cannot be compacted and are removed, as Kafka's cleaner does (the broker refuses
//! them at produce for compacted topics). A batch whose records do not parse is kept whole,
//! with a warning: the cleaner never makes data unreadable.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::hash::{BuildHasher, RandomState};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::{self, BatchHeader, Record, RecordBatch, HEADER_LEN, LOG_OVERHEAD};
use sluice_protocol::Offset;

use crate::error::{IoContext, Result, StorageError};
use crate::file::{start_writeback, sync_dir};
use crate::segment::{
    parse_segment_name, segment_paths, segment_paths_with, ActiveSegment, SegmentMeta,
};
use crate::LogConfig;

/// Suffix of a cleaned segment's files before the swap.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a cleaned segment's files once the swap is committed.
pub(crate) const SWAP_SUFFIX: &str = ".swap";
/// Bytes of a cleaned segment written before the cleaner starts their write-back.
const WRITEBACK_SLICE_BYTES: u64 = 1 << 20;
/// Bytes the cleaner reads at once from a segment.
const READ_CHUNK_BYTES: u32 = 1 << 20;
/// What one key costs in the offset map: a 24-byte entry (hash and offset) in a table that
/// is at most 7/8 full and doubles when it grows, so up to ~57 bytes just after a growth.
const MAP_ENTRY_BYTES: usize = 64;

/// Paces the cleaner's I/O to a bytes-per-second budget, so producers' and consumers'
/// reads and writes keep the disk, and lets its owner stop a run (shutdown). Counted bytes
/// are those read from and written to segments.
pub struct Throttle {
    bytes_per_sec: Option<u64>,
    stop: Option<Arc<AtomicBool>>,
    window_start: Instant,
    window_bytes: u64,
}

impl Throttle {
    /// No pacing, no stop.
    pub fn unlimited() -> Throttle {
        Throttle::new(None, None)
    }

    /// At most `bytes_per_sec` (none: unpaced); the run ends with
    /// [`StorageError::CleanerStopped`] soon after `stop` is set.
    pub fn new(bytes_per_sec: Option<u64>, stop: Option<Arc<AtomicBool>>) -> Throttle {
        Throttle {
            bytes_per_sec: bytes_per_sec.filter(|r| *r > 0),
            stop,
            window_start: Instant::now(),
            window_bytes: 0,
        }
    }

    /// Counts `bytes` of I/O and sleeps until the budget allows them.
    fn account(&mut self, bytes: u64, dir: &Path) -> Result<()> {
        if self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            return Err(StorageError::CleanerStopped {
                path: dir.to_path_buf(),
            });
        }
        let Some(rate) = self.bytes_per_sec else {
            return Ok(());
        };
        self.window_bytes += bytes;
        let due = Duration::from_secs_f64(self.window_bytes as f64 / rate as f64);
        let elapsed = self.window_start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
        // A new window every second: an idle pause does not bank a burst for later.
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.window_bytes = 0;
        }
        Ok(())
    }
}

/// What a run did, for logs, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Bytes of segments read (the offset map's pass and the rewrite's).
    pub bytes_read: u64,
    /// Size of the segments that were replaced, before.
    pub bytes_before: u64,
    /// Size of the segments that replaced them.
    pub bytes_after: u64,
    /// Records removed (superseded, tombstones past retention, without a key).
    pub records_removed: u64,
    /// Old segments replaced.
    pub segments_replaced: usize,
    /// Whether the cleaned segments went into the log; false when the log changed under
    /// the run (retention or truncation removed a segment it cleaned) and it was discarded.
    pub swapped: bool,
    /// How long the swap held the log (exclusively: appends waited), in microseconds.
    pub swap_micros: u64,
    /// The run went through every sealed segment from the log start up to this offset:
    /// once swapped in, no record of an aborted transaction whose marker is below it is
    /// left (the cleaner removes them; an unparsable batch kept whole aside). `None` when
    /// the run cleaned no segment.
    pub cleaned_end: Option<Offset>,
}

/// A cleaning to run: made by [`crate::PartitionLog::plan_cleaning`], run without the log.
pub struct CleanPlan {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) now_ms: i64,
    /// Offsets below this were mapped by an earlier run (the cleaner checkpoint).
    pub(crate) first_dirty: Offset,
    /// The cleanable sealed segments, from the log start (opened as the run reads them).
    pub(crate) cleanable: Vec<SegmentMeta>,
    /// The log's layout generation at planning (bumped by every truncation): a run planned
    /// before a truncation is discarded at the swap.
    pub(crate) layout_generation: u64,
    /// How the transactions in the cleanable segments ended, when the owner knows
    /// ([`CleanPlan::with_transactions`]); without, transactional records are kept as
    /// they are and supersede nothing.
    pub(crate) transactions: Option<AbortedIndex>,
}

/// How the transactions of a partition ended, for the cleaner: every transaction with
/// records in the cleanable segments is decided (the owner bounds the plan by its last
/// stable offset), and these are the aborted ones; the others committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnOutcomes {
    /// Aborted transactions: producer id, first offset, the offset of its abort marker.
    pub aborted: Vec<(i64, Offset, Offset)>,
}

/// The aborted transactions by producer, each producer's in marker order: a producer's
/// transactions follow one another without overlapping, so the one that could hold an
/// offset is the first whose marker is above it. One lookup per transactional batch,
/// instead of a scan of every abort the partition remembers.
#[derive(Debug, Default)]
pub(crate) struct AbortedIndex(HashMap<i64, Vec<(Offset, Offset)>>);

impl AbortedIndex {
    fn new(outcomes: TxnOutcomes) -> AbortedIndex {
        let mut by_producer: HashMap<i64, Vec<(Offset, Offset)>> = HashMap::new();
        for (producer_id, first, marker) in outcomes.aborted {
            by_producer
                .entry(producer_id)
                .or_default()
                .push((first, marker));
        }
        for txns in by_producer.values_mut() {
            txns.sort_unstable_by_key(|&(_, marker)| marker);
        }
        AbortedIndex(by_producer)
    }

    /// Whether the transactional batch of `producer_id` at `offset` was aborted.
    fn aborted(&self, producer_id: i64, offset: Offset) -> bool {
        let Some(txns) = self.0.get(&producer_id) else {
            return false;
        };
        let next = txns.partition_point(|&(_, marker)| marker <= offset);
        txns.get(next).is_some_and(|&(first, _)| first <= offset)
    }
}

/// One cleaned segment, written as `.cleaned` files, and the old segments it replaces.
#[derive(Debug)]
pub(crate) struct CleanedGroup {
    pub replaces: Vec<SegmentMeta>,
    pub meta: SegmentMeta,
}

/// The result of [`CleanPlan::run`]: cleaned segments waiting for
/// [`crate::PartitionLog::swap_cleaned`]. Dropped unswapped, it deletes their files.
#[derive(Debug)]
pub struct Cleaned {
    pub(crate) dir: PathBuf,
    pub(crate) groups: Vec<CleanedGroup>,
    /// Every offset below this was mapped: the next run's first dirty offset.
    pub(crate) map_end: Offset,
    pub(crate) layout_generation: u64,
    pub(crate) report: CleanReport,
}

impl Drop for Cleaned {
    fn drop(&mut self) {
        for group in &self.groups {
            remove_cleaned_files(&self.dir, group.meta.base_offset);
        }
    }
}

/// Deletes the `.cleaned` files of the cleaned segment at `base`.
pub(crate) fn remove_cleaned_files(dir: &Path, base: Offset) {
    remove_files(&segment_paths_with(dir, base, CLEANED_SUFFIX));
}

fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        if let Err(e) = fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), "could not remove a cleaner file: {e}");
            }
        }
    }
}

/// What becomes of one batch.
enum Kept {
    Whole,
    Rebuilt(Bytes),
    Nothing,
}

impl CleanPlan {
    /// Cleans transactional records by their outcomes: a committed one as any other
    /// record, an aborted one away (as Kafka's cleaner does). The plan must not reach
    /// past the owner's last stable offset, so every transaction in it is decided.
    pub fn with_transactions(mut self, outcomes: TxnOutcomes) -> CleanPlan {
        self.transactions = Some(AbortedIndex::new(outcomes));
        self
    }

    /// What the cleaner makes of a data batch: `Some(true)` an aborted transaction's (its
    /// records go), `Some(false)` a plain or committed one (compacted as usual), `None`
    /// a transactional batch whose outcome is not known (kept, superseding nothing).
    fn transaction_of(&self, header: &BatchHeader) -> Option<bool> {
        if !header.is_transactional() {
            return Some(false);
        }
        self.transactions
            .as_ref()
            .map(|t| t.aborted(header.producer_id, header.base_offset))
    }

    /// The first offset not cleaned before (where the dirty part starts).
    pub fn first_dirty_offset(&self) -> Offset {
        self.first_dirty
    }

    /// Runs the cleaning (blocking, disk-heavy: run it on a blocking thread, without the
    /// log's lock). `map_bytes_max` bounds the offset map (at least one batch is always
    /// mapped, so every run makes progress). `last_batches` holds, for each idempotent
    /// producer the owner still tracks, the base offset of its last batch: that batch stays
    /// (empty if need be). Files are written as `.cleaned`; nothing in the log changes
    /// until [`crate::PartitionLog::swap_cleaned`].
    pub fn run(
        self,
        map_bytes_max: usize,
        throttle: &mut Throttle,
        last_batches: &HashMap<i64, Offset>,
    ) -> Result<Cleaned> {
        let mut report = CleanReport::default();
        let (map, map_end) = self.build_offset_map(map_bytes_max, throttle, &mut report)?;
        let segments: Vec<&SegmentMeta> = self
            .cleanable
            .iter()
            .filter(|meta| meta.next_offset <= map_end)
            .collect();
        report.cleaned_end = segments.last().map(|meta| meta.next_offset);
        let mut cleaned = Cleaned {
            dir: self.dir.clone(),
            groups: Vec::new(),
            map_end,
            layout_generation: self.layout_generation,
            report,
        };
        // Producers with a transactional batch kept since their last marker, in offset
        // order from the log start: the marker that ends that transaction stays.
        let mut open_txns = HashSet::new();
        for group in group_segments(&segments, self.config.segment_bytes_max) {
            let base = group[0].base_offset;
            let done = self.clean_group(
                &group,
                &map,
                last_batches,
                &mut open_txns,
                throttle,
                &mut cleaned.report,
            );
            match done {
                Ok(Some(done)) => cleaned.groups.push(done),
                Ok(None) => {}
                Err(e) => {
                    remove_files(&segment_paths_with(&self.dir, base, CLEANED_SUFFIX));
                    return Err(e);
                }
            }
        }
        Ok(cleaned)
    }

    /// Maps every key of the dirty segments (from the first dirty offset) to its latest
    /// offset, batch by batch, until the map holds `map_bytes_max` (after at least one
    /// batch). Returns the map and the offset it covers up to: a whole segment's end, or,
    /// where the map filled inside a segment, the end of the last batch mapped (that
    /// segment is then cleaned by a later run, whose map covers it).
    fn build_offset_map(
        &self,
        map_bytes_max: usize,
        throttle: &mut Throttle,
        report: &mut CleanReport,
    ) -> Result<(OffsetMap, Offset)> {
        let mut map = OffsetMap::new();
        let mut map_end = self.first_dirty;
        let mut mapped_any = false;
        'segments: for meta in &self.cleanable {
            if meta.next_offset <= self.first_dirty {
                map_end = map_end.max(meta.next_offset);
                continue;
            }
            let (file, path) = self.open(meta)?;
            let mut reader = BatchReader::new(&file, &path, meta.size);
            while let Some(batch) = reader.next(throttle, &self.dir)? {
                let header = batch.header();
                if header.last_offset() < self.first_dirty {
                    continue;
                }
                if mapped_any && map.bytes() >= map_bytes_max {
                    report.bytes_read += u64::from(reader.position);
                    break 'segments;
                }
                mapped_any = true;
                map_end = header.next_offset().max(self.first_dirty);
                // A transactional record whose outcome is not known, or that was aborted,
                // must not supersede anything (an aborted write would take a committed
                // value with it); a committed one counts as any other.
                if header.is_control() || self.transaction_of(header) != Some(false) {
                    continue;
                }
                let Some(records) = parse_records(&batch, &path) else {
                    continue;
                };
                for record in records {
                    if let Some(key) = record.key.filter(|_| record.offset >= self.first_dirty) {
                        map.put(&key, record.offset.0);
                    }
                }
            }
            report.bytes_read += u64::from(meta.size);
            map_end = meta.next_offset;
        }
        Ok((map, map_end))
    }

    /// Rewrites one group of segments into one `.cleaned` segment named after the first.
    /// `None` when nothing would change (one segment, every batch kept whole).
    fn clean_group(
        &self,
        group: &[&SegmentMeta],
        map: &OffsetMap,
        last_batches: &HashMap<i64, Offset>,
        open_txns: &mut HashSet<i64>,
        throttle: &mut Throttle,
        report: &mut CleanReport,
    ) -> Result<Option<CleanedGroup>> {
        let base = group[0].base_offset;
        let size: u64 = group.iter().map(|m| u64::from(m.size)).sum();
        // Room for twice the input: a batch given its delete horizon is rewritten with its
        // records' timestamps counted from that horizon, a few bytes more a record.
        let limit = u32::try_from(size.saturating_mul(2)).unwrap_or(u32::MAX);
        let config = LogConfig {
            segment_bytes_max: self.config.segment_bytes_max.max(limit),
            ..self.config.clone()
        };
        let mut out =
            ActiveSegment::create_with(&self.dir, base, CLEANED_SUFFIX, &config, self.now_ms)?;
        let mut changed = group.len() > 1;
        let mut removed = 0u64;
        // Written back in slices as the run goes (see `start_writeback`), so the fsync
        // at the end does not stall producers' fsyncs behind a whole segment's bytes.
        let (mut written, mut written_back) = (0u64, 0u64);
        for meta in group {
            let (file, path) = self.open(meta)?;
            let mut reader = BatchReader::new(&file, &path, meta.size);
            while let Some(batch) = reader.next(throttle, &self.dir)? {
                let header = batch.header();
                let (kept, n_removed) = if header.is_control() {
                    self.keep_control(&batch, &path, last_batches, open_txns)?
                } else {
                    self.keep(&batch, &path, map, last_batches)?
                };
                if header.is_transactional()
                    && !header.is_control()
                    && !matches!(kept, Kept::Nothing)
                {
                    open_txns.insert(header.producer_id);
                }
                removed += n_removed;
                let bytes = match kept {
                    Kept::Whole => batch.bytes().clone(),
                    // Records removed, or only dated (its delete horizon set, maybe at the
                    // same length): either way the segment is written anew.
                    Kept::Rebuilt(bytes) => {
                        changed = true;
                        bytes
                    }
                    Kept::Nothing => {
                        changed = true;
                        continue;
                    }
                };
                let header = BatchHeader::parse(&bytes)?;
                if u64::from(out.meta.size) + bytes.len() as u64
                    > u64::from(config.segment_bytes_max)
                {
                    return Err(StorageError::BadFile {
                        path: path.clone(),
                        what: "log segment",
                        reason: "its cleaned copy would be larger than a segment can be".into(),
                    });
                }
                out.append(&[&bytes], &header)?;
                written += bytes.len() as u64;
                if written - written_back >= WRITEBACK_SLICE_BYTES {
                    start_writeback(&out.files.log, written_back, written - written_back);
                    written_back = written;
                }
                throttle.account(bytes.len() as u64, &self.dir)?;
            }
            report.bytes_read += u64::from(meta.size);
        }
        if !changed {
            drop(out);
            remove_files(&segment_paths_with(&self.dir, base, CLEANED_SUFFIX));
            return Ok(None);
        }
        let (meta, files) = out.seal()?;
        files.log.sync_all().at("fsync", &files.log_path)?;
        report.bytes_before += size;
        report.bytes_after += u64::from(meta.size);
        report.records_removed += removed;
        Ok(Some(CleanedGroup {
            replaces: group.iter().map(|m| **m).collect(),
            meta,
        }))
    }

    /// Opens a cleanable segment's log. Retention (or a truncation) may have deleted it
    /// since the plan: the run then fails, and the next one plans again.
    fn open(&self, meta: &SegmentMeta) -> Result<(File, PathBuf)> {
        let [path, ..] = segment_paths(&self.dir, meta.base_offset);
        let file = File::open(&path).at("open", &path)?;
        Ok((file, path))
    }

    /// When a batch's tombstones (or a marker) go: its delete horizon (KIP-534), set by
    /// the first run that kept them; for a batch no run has dated yet, now plus
    /// `delete.retention.ms` (so a retention of 0 removes them at once). Counted from when
    /// the broker first cleaned them, not from the records' timestamps, which producers
    /// set: one backfilling last year's events would have its deletes removed at the
    /// first cleaning, before consumers behind had read them.
    fn delete_horizon(&self, header: &BatchHeader) -> i64 {
        header
            .delete_horizon()
            .unwrap_or(self.now_ms.saturating_add(self.config.delete_retention_ms))
    }

    /// Decides what becomes of a control batch (a transaction marker): it goes once no
    /// record of the transaction it ends is left (`open_txns` does not hold its
    /// producer) and its delete horizon has passed, as Kafka's cleaner removes markers,
    /// so a partition of transactional writes (`__consumer_offsets` under exactly-once
    /// consumers) does not keep every marker for ever; the first run that finds no record
    /// left dates it. It stays when the transactions' outcomes are not known, and when it
    /// is its producer's last batch the owner tracks.
    fn keep_control(
        &self,
        batch: &RecordBatch,
        path: &Path,
        last_batches: &HashMap<i64, Offset>,
        open_txns: &mut HashSet<i64>,
    ) -> Result<(Kept, u64)> {
        let header = batch.header();
        let ends_kept_records = open_txns.remove(&header.producer_id);
        let last_of_producer = last_batches.get(&header.producer_id) == Some(&header.base_offset);
        if ends_kept_records
            || self.transactions.is_none()
            || header.producer_id < 0
            || last_of_producer
        {
            return Ok((Kept::Whole, 0));
        }
        let horizon = self.delete_horizon(header);
        if self.now_ms >= horizon {
            let n = u64::try_from(header.records_count).unwrap_or(0);
            return Ok((Kept::Nothing, n));
        }
        if header.delete_horizon().is_some() {
            return Ok((Kept::Whole, 0));
        }
        let Some(records) = parse_records(batch, path) else {
            return Ok((Kept::Whole, 0));
        };
        let dated = batch::rebuild_batch(&header.with_delete_horizon(horizon), &records)?;
        Ok((Kept::Rebuilt(dated), 0))
    }

    /// Decides what becomes of a data `batch` (see the module documentation); also returns
    /// how many of its records go.
    fn keep(
        &self,
        batch: &RecordBatch,
        path: &Path,
        map: &OffsetMap,
        last_batches: &HashMap<i64, Offset>,
    ) -> Result<(Kept, u64)> {
        let header = batch.header();
        let Some(records) = parse_records(batch, path) else {
            return Ok((Kept::Whole, 0));
        };
        let total = records.len();
        let outcome = self.transaction_of(header);
        let horizon = self.delete_horizon(header);
        let expire_tombstones = self.now_ms >= horizon;
        let retains = |record: &Record| match &record.key {
            // An aborted transaction's records are never read committed: they go.
            _ if outcome == Some(true) => false,
            None => false,
            Some(key) => {
                let superseded = map
                    .latest(key)
                    .is_some_and(|latest| latest > record.offset.0);
                // A tombstone of a transaction not known to have committed stays (its
                // delete superseded nothing here).
                let expired_tombstone =
                    record.value.is_none() && expire_tombstones && outcome == Some(false);
                !superseded && !expired_tombstone
            }
        };
        let kept: Vec<Record> = records.into_iter().filter(retains).collect();
        let removed = (total - kept.len()) as u64;
        // Tombstones that expire (a plain or committed batch's) kept by a batch no run has
        // dated: it gets its delete horizon now.
        let dating = header.delete_horizon().is_none()
            && outcome == Some(false)
            && kept.iter().any(|r| r.value.is_none());
        if removed == 0 && !dating {
            return Ok((Kept::Whole, 0));
        }
        let last_of_producer = header.producer_id >= 0
            && last_batches.get(&header.producer_id) == Some(&header.base_offset);
        if kept.is_empty() && !last_of_producer {
            return Ok((Kept::Nothing, removed));
        }
        let header = if dating {
            header.with_delete_horizon(horizon)
        } else {
            *header
        };
        let rebuilt = batch::rebuild_batch(&header, &kept)?;
        if rebuilt.len() >= batch.bytes().len() && !dating {
            // Recompressed at the codec's default level, the survivors can take more room
            // than the producer's batch: keeping it whole is safe. (A batch being dated
            // takes the room it needs: the output has room for twice its input.)
            return Ok((Kept::Whole, 0));
        }
        Ok((Kept::Rebuilt(rebuilt), removed))
    }
}

/// Each key's latest offset in the mapped part of the log, by a 128-bit keyed hash of the
/// key (two SipHash-1-3 with random keys, fresh for each run): 24 bytes an entry whatever
/// the key's length, and a collision (which would drop a record whose key only shares the
/// hash with a later one) has a chance of about n^2 / 2^129.
struct OffsetMap {
    hashers: (RandomState, RandomState),
    latest: HashMap<[u64; 2], i64>,
}

impl OffsetMap {
    fn new() -> OffsetMap {
        OffsetMap {
            hashers: (RandomState::new(), RandomState::new()),
            latest: HashMap::new(),
        }
    }

    fn hash(&self, key: &[u8]) -> [u64; 2] {
        [self.hashers.0.hash_one(key), self.hashers.1.hash_one(key)]
    }

    /// Records `offset` as `key`'s latest (offsets are mapped in increasing order).
    fn put(&mut self, key: &[u8], offset: i64) {
        self.latest.insert(self.hash(key), offset);
    }

    fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(&self.hash(key)).copied()
    }

    /// Memory the map takes, by [`MAP_ENTRY_BYTES`] per key.
    fn bytes(&self) -> usize {
        self.latest.len() * MAP_ENTRY_BYTES
    }
}

/// The records of a stored batch, or `None` (with a warning) when they do not parse: such a
/// batch is kept whole and its keys are not mapped.
fn parse_records(batch: &RecordBatch, path: &Path) -> Option<Vec<Record>> {
    let parsed = batch
        .records()
        .and_then(|records| records.collect::<sluice_protocol::Result<Vec<Record>>>());
    match parsed {
        Ok(records) => Some(records),
        Err(e) => {
            tracing::warn!(
                file = %path.display(),
                "the cleaner keeps the batch at offset {} whole: its records do not parse: {e}",
                batch.header().base_offset
            );
            None
        }
    }
}

/// Splits consecutive segments into groups that each fit one segment: at most
/// `segment_bytes_max` together (a larger segment is a group of its own) and offsets within
/// the range one segment's indexes can address.
fn group_segments<'a>(
    segments: &[&'a SegmentMeta],
    segment_bytes_max: u32,
) -> Vec<Vec<&'a SegmentMeta>> {
    let mut groups: Vec<Vec<&SegmentMeta>> = Vec::new();
    let mut size = 0u64;
    for &segment in segments {
        let meta = segment;
        let fits = groups.last().is_some_and(|group| {
            let span = meta.next_offset.0 - group[0].base_offset.0;
            size + u64::from(meta.size) <= u64::from(segment_bytes_max)
                && span <= i64::from(i32::MAX)
        });
        if fits {
            size += u64::from(meta.size);
            groups.last_mut().expect("checked").push(segment);
        } else {
            size = u64::from(meta.size);
            groups.push(vec![segment]);
        }
    }
    groups
}

/// Calls `f` with the header of every batch in the first `size` bytes of a segment's log
/// (one small read per batch). Stops at a header that cannot be read whole.
fn scan_headers(
    file: &File,
    path: &Path,
    size: u32,
    f: &mut impl FnMut(&BatchHeader),
) -> Result<()> {
    let mut position = 0u32;
    let mut buf = [0u8; HEADER_LEN];
    while position + HEADER_LEN as u32 <= size {
        file.read_exact_at(&mut buf, u64::from(position))
            .at("read", path)?;
        let header = BatchHeader::parse(&buf)?;
        f(&header);
        position = position.saturating_add(header.total_len());
    }
    Ok(())
}

/// Reads a segment's batches in order, 1 MiB at a time, each validated (CRC included).
struct BatchReader<'a> {
    file: &'a File,
    path: &'a Path,
    end: u32,
    position: u32,
    chunk: Bytes,
    chunk_at: u32,
}

impl<'a> BatchReader<'a> {
    fn new(file: &'a File, path: &'a Path, end: u32) -> BatchReader<'a> {
        BatchReader {
            file,
            path,
            end,
            position: 0,
            chunk: Bytes::new(),
            chunk_at: 0,
        }
    }

    fn corrupt(&self, reason: String) -> StorageError {
        StorageError::BadFile {
            path: self.path.to_path_buf(),
            what: "log segment",
            reason: format!("at position {}: {reason}", self.position),
        }
    }

    fn refill(&mut self, want: u32, throttle: &mut Throttle, dir: &Path) -> Result<()> {
        let len = want.min(self.end - self.position);
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, u64::from(self.position))
            .at("read", self.path)?;
        throttle.account(u64::from(len), dir)?;
        self.chunk = Bytes::from(buf);
        self.chunk_at = self.position;
        Ok(())
    }

    fn next(&mut self, throttle: &mut Throttle, dir: &Path) -> Result<Option<RecordBatch>> {
        if self.position >= self.end {
            return Ok(None);
        }
        let mut at = (self.position - self.chunk_at) as usize;
        if at + LOG_OVERHEAD > self.chunk.len() {
            self.refill(READ_CHUNK_BYTES, throttle, dir)?;
            at = 0;
        }
        let len = batch::peek_total_len(&self.chunk[at..])
            .map_err(|e| self.corrupt(e.to_string()))?
            .ok_or_else(|| self.corrupt("torn batch header".into()))?;
        if u64::from(self.position) + u64::from(len) > u64::from(self.end) {
            return Err(self.corrupt(format!("a batch of {len} bytes runs past the segment")));
        }
        if at + len as usize > self.chunk.len() {
            self.refill(READ_CHUNK_BYTES.max(len), throttle, dir)?;
            at = 0;
        }
        let bytes = self.chunk.slice(at..at + len as usize);
        let batch = RecordBatch::validate(bytes).map_err(|e| self.corrupt(e.to_string()))?;
        self.position += len;
        Ok(Some(batch))
    }
}

/// Finishes or discards a cleaning a crash interrupted, before the log's segments are
/// listed: `.cleaned` files were never committed and go; a `.swap` log was, so the old
/// segments it replaces (every segment whose base lies in the offsets it covers, its own
/// base included) are deleted and it takes its final name. Its indexes are not trusted: the
/// returned bases are segments the open must rescan (which rebuilds their indexes).
pub(crate) fn finish_interrupted_cleaning(dir: &Path) -> Result<BTreeSet<Offset>> {
    let mut cleaned = Vec::new();
    let mut swapped_logs = Vec::new();
    let mut swapped_indexes = Vec::new();
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).at("list", dir)? {
        let entry = entry.at("list", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(CLEANED_SUFFIX) {
            cleaned.push(entry.path());
        } else if let Some(stem) = name.strip_suffix(SWAP_SUFFIX) {
            match parse_segment_name(stem, "log") {
                Some(base) => swapped_logs.push(base),
                None => swapped_indexes.push(entry.path()),
            }
        } else if let Some(base) = parse_segment_name(&name, "log") {
            segments.push(base);
        }
    }
    if cleaned.is_empty() && swapped_logs.is_empty() && swapped_indexes.is_empty() {
        return Ok(BTreeSet::new());
    }
    for path in &cleaned {
        tracing::info!(path = %path.display(), "recovery: removing a cleaned segment that was never swapped in");
        fs::remove_file(path).at("remove", path)?;
    }
    for path in &swapped_indexes {
        fs::remove_file(path).at("remove", path)?;
    }
    let mut rescan = BTreeSet::new();
    for base in swapped_logs {
        let [swap_log, ..] = segment_paths_with(dir, base, SWAP_SUFFIX);
        let end = swap_end_offset(&swap_log, base)?;
        for old in segments
            .iter()
            .filter(|&&b| b >= base && b < end.max(base.plus(1)))
        {
            for path in segment_paths(dir, *old) {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io("remove", &path, e)),
                }
            }
        }
        sync_dir(dir)?;
        let [log, ..] = segment_paths(dir, base);
        fs::rename(&swap_log, &log).at("rename", &swap_log)?;
        tracing::info!(path = %log.display(), "recovery: finished swapping in a cleaned segment");
        rescan.insert(base);
    }
    sync_dir(dir)?;
    Ok(rescan)
}

/// The offset after the last whole batch of a `.swap` log (its base when it has none).
fn swap_end_offset(path: &Path, base: Offset) -> Result<Offset> {
    let file = File::open(path).at("open", path)?;
    let size = u32::try_from(file.metadata().at("stat", path)?.len()).unwrap_or(u32::MAX);
    let mut end = base;
    scan_headers(&file, path, size, &mut |header| {
        end = end.max(header.next_offset());
    })?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index answers as a scan of every abort does, for every offset and producer:
    /// three producers whose aborted transactions interleave in the log (each producer's
    /// one after another), given in no particular order.
    #[test]
    fn the_aborted_index_finds_what_a_scan_finds() {
        let mut aborted = Vec::new();
        for producer_id in 0..3i64 {
            let mut first = producer_id;
            for n in 0..20i64 {
                let marker = first + 1 + (n * 7 + producer_id) % 5;
                if n % 3 != 1 {
                    aborted.push((producer_id, Offset(first), Offset(marker)));
                }
                first = marker + 1 + n % 2;
            }
        }
        aborted.reverse();
        let scan = |producer_id: i64, offset: Offset| {
            aborted
                .iter()
                .any(|&(p, first, marker)| p == producer_id && first <= offset && offset < marker)
        };
        let index = AbortedIndex::new(TxnOutcomes {
            aborted: aborted.clone(),
        });
        let mut hits = 0;
        for producer_id in -1..4 {
            for offset in 0..200 {
                let expected = scan(producer_id, Offset(offset));
                assert_eq!(
                    index.aborted(producer_id, Offset(offset)),
                    expected,
                    "producer {producer_id} offset {offset}"
                );
                hits += usize::from(expected);
            }
        }
        assert!(hits > 50, "{hits}");
    }
}
