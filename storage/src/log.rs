//! `PartitionLog`: the segments of one partition replica in one directory, with the
//! leader-epoch cache, the recovery-point and high-watermark checkpoints and the
//! clean-shutdown marker.
//!
//! Writes take `&mut self` and reads `&self`, so an owner may put the log behind an
//! `RwLock` (as [`crate::SharedLog`] does) and serve reads while no append runs. Durability
//! is separate from appending: [`PartitionLog::begin_flush`] hands out the files to fsync
//! and the offset they will cover, to run without holding the log, and
//! [`PartitionLog::complete_flush`] records the result. That split is what lets one fsync
//! cover every append that arrived while the previous one ran (group commit).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sluice_protocol::batch::{self, BatchHeader, Batches, RecordBatch};
use sluice_protocol::{FileSlice, LeaderEpoch, Offset, Records};

use crate::cleaner::{self, CleanPlan, CleanReport, Cleaned, CleanedGroup};
use crate::deleter::{delete_later, DELETED_SUFFIX, DELETE_DELAY};
use crate::epoch::{EpochEntry, LeaderEpochCache};
use crate::error::{IoContext, Result, StorageError};
use crate::file::{read_checkpoint, sync_dir, write_checkpoint, FileHeader};
use crate::segment::{
    parse_segment_name, segment_paths, segment_paths_with, ActiveSegment, BatchSpan, SegmentFiles,
    SegmentMeta,
};
use crate::{Clock, Durability, LogConfig};

/// [`PartitionLog::extend_runway`] writes more zeros ahead once fewer than this are left.
pub const RUNWAY_LOW: u64 = 256 << 10;
/// How far ahead of the last batch [`PartitionLog::extend_runway`] writes zeros: a few
/// milliseconds of appends at 100 MB/s, little disk per partition.
pub const RUNWAY_AHEAD: u64 = 512 << 10;

const RECOVERY_POINT_FILE: &str = "recovery-point-checkpoint";
const RECOVERY_POINT_HEADER: FileHeader = FileHeader {
    magic: *b"SLRP",
    version: 1,
};
const HIGH_WATERMARK_FILE: &str = "high-watermark-checkpoint";
const HIGH_WATERMARK_HEADER: FileHeader = FileHeader {
    magic: *b"SLHW",
    version: 1,
};
const HIGH_WATERMARK_WHAT: &str = "high-watermark checkpoint";
const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
const CLEANER_CHECKPOINT_HEADER: FileHeader = FileHeader {
    magic: *b"SLCO",
    version: 1,
};
const LOG_START_FILE: &str = "log-start-offset-checkpoint";
const LOG_START_HEADER: FileHeader = FileHeader {
    magic: *b"SLLS",
    version: 1,
};
const LOG_START_WHAT: &str = "log-start-offset checkpoint";
const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
const CLEAN_SHUTDOWN_HEADER: FileHeader = FileHeader {
    magic: *b"SLCS",
    version: 1,
};

/// Whole batches of the log, for an answer ([`PartitionLog::read_records`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecords {
    /// The batches, in memory or as their file's range.
    pub records: Records,
    /// The last batch's last offset.
    pub last_offset: Offset,
}

/// Smallest read worth sending from the file: below it a read into the answer costs less
/// than the page-cache check and the extra system call.
pub const SEND_FROM_FILE_MIN_BYTES: usize = 64 << 10;

/// Whether every page of `slice` is in the page cache (`mincore` of a mapping nothing
/// touches, so no page is read or faulted). False when it cannot tell.
fn in_page_cache(slice: &FileSlice) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => return false,
    };
    let start = slice.position() / page * page;
    let len = (slice.position() + slice.len() as u64 - start) as usize;
    let pages = len.div_ceil(page as usize);
    // SAFETY: a read-only shared mapping of an open file, never dereferenced (mincore only
    // reads the kernel's page tables for it) and unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            slice.file().as_raw_fd(),
            start as libc::off_t,
        )
    };
    if map == libc::MAP_FAILED {
        return false;
    }
    let mut residency = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `len` bytes; `residency` has a byte per page.
    let checked = unsafe { libc::mincore(map, len, residency.as_mut_ptr()) } == 0;
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(map, len) };
    checked && residency.iter().all(|r| r & 1 == 1)
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: Offset,
    /// Offset of the last record appended.
    pub last_offset: Offset,
    /// Largest timestamp among the appended batches.
    pub max_timestamp: i64,
}

/// Files to fsync, and the log end offset they make durable. Run it without holding the log.
#[must_use = "a flush job does nothing until it runs"]
pub struct FlushJob {
    files: Vec<(Arc<File>, PathBuf)>,
    up_to: Offset,
    includes_sealed: bool,
    /// The active segment (base, bytes) when the job began.
    active_end: (Offset, u32),
}

impl FlushJob {
    /// fdatasyncs every file of the job. Blocking: call it off any async executor.
    pub fn run(&self) -> Result<()> {
        for (file, path) in &self.files {
            file.sync_data().at("fsync", path)?;
        }
        Ok(())
    }

    /// Every offset below this is durable once the job has run.
    pub fn up_to(&self) -> Offset {
        self.up_to
    }
}

/// What [`PartitionLog::open`] found and did, for logs, metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The log was closed cleanly last time (the clean-shutdown marker was there).
    pub clean_shutdown: bool,
    /// Segments whose every batch was re-read and checked, and whose indexes were rebuilt.
    pub segments_rescanned: usize,
    /// Where damage was cut off, if anywhere.
    pub truncated: Option<Truncation>,
    /// Segments deleted because they followed a damaged one.
    pub segments_deleted: usize,
    /// Cleaned segments whose swap a crash interrupted and the open completed.
    pub cleaner_swaps_completed: usize,
}

/// Damage that recovery cut off a segment: everything from `position` on is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub file: PathBuf,
    pub position: u32,
    pub reason: String,
}

/// Read-only segments keep their files open only while in use: at most
/// `max_open_sealed_segments` stay open, least recently used closed first.
struct HandleCache {
    open: BTreeMap<Offset, (Arc<SegmentFiles>, u64)>,
    tick: u64,
}

/// The durable log of one partition replica.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    /// Sealed segments by base offset; all below the active segment.
    sealed: BTreeMap<Offset, SegmentMeta>,
    active: ActiveSegment,
    /// Guards the open files of sealed segments; held only to look up or open one.
    handles: Mutex<HandleCache>,
    epochs: LeaderEpochCache,
    /// Every offset below this is on disk.
    flushed_offset: Offset,
    /// Sealed segments written since the last flush job.
    unflushed_sealed: Vec<(Arc<File>, PathBuf)>,
    /// The active segment (base, bytes) the last completed flush job covered, and the
    /// bytes it covered there: [`PartitionLog::extend_runway`] writes no zeros ahead of
    /// flushes that large.
    flushed_active_end: (Offset, u32),
    last_flush_bytes: u64,
    /// What the high-watermark checkpoint holds: the owner's last
    /// [`PartitionLog::checkpoint_high_watermark`], never past the log end (open caps it
    /// at what recovery kept, a truncation lowers it).
    high_watermark_checkpoint: Offset,
    /// Records below this were deleted inside their segment ([`PartitionLog::advance_log_start`]:
    /// Kafka's DeleteRecords, or a follower taking its leader's log start); kept in
    /// `log-start-offset-checkpoint`, never past the log end. 0 when none were.
    log_start_checkpoint: Offset,
    /// Offsets below this were mapped by the last cleaning (the cleaner's first dirty
    /// offset); kept in `cleaner-offset-checkpoint`.
    cleaner_checkpoint: Offset,
    /// Bumped by every truncation: a cleaning planned before one is not swapped in.
    layout_generation: u64,
    /// Counted up before the log is truncated in place: the file ranges handed out for
    /// answers ([`PartitionLog::read_records`]) carry it, so a writer can tell that a
    /// range may no longer hold what it was made for.
    truncations: Arc<AtomicU64>,
    recovery: RecoveryReport,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`. After an unclean stop it rescans every segment
    /// from the one holding the recovery point, checks every batch, cuts a torn or corrupt
    /// tail (with a warning naming file and position) and rebuilds the indexes; after a
    /// clean stop it only checks the indexes.
    pub fn open(dir: &Path, config: LogConfig, clock: Arc<dyn Clock>) -> Result<PartitionLog> {
        fs::create_dir_all(dir).at("create directory", dir)?;
        let clean = take_clean_marker(dir)?;
        let finished_swaps = cleaner::finish_interrupted_cleaning(dir)?;
        let bases = list_segments(dir)?;
        let recovery_point = if clean {
            Offset(i64::MAX)
        } else {
            read_recovery_point(dir)?.unwrap_or(Offset(0))
        };
        let recover_from = bases
            .iter()
            .rev()
            .find(|&&b| b <= recovery_point)
            .copied()
            .unwrap_or(Offset(0));
        let mut epochs = LeaderEpochCache::load(dir)?;
        let rebuild_epochs = epochs.is_none();
        let epoch_cache = epochs.get_or_insert_with(|| LeaderEpochCache::empty(dir));

        let now = clock.now_ms();
        let mut sealed = BTreeMap::new();
        let mut active: Option<ActiveSegment> = None;
        let mut damaged = false;
        let mut report = RecoveryReport {
            clean_shutdown: clean,
            cleaner_swaps_completed: finished_swaps.len(),
            ..RecoveryReport::default()
        };
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            if damaged {
                tracing::warn!(dir = %dir.display(), "recovery: deleting segment {base}, which follows a damaged one");
                delete_segment_files(dir, base)?;
                report.segments_deleted += 1;
                continue;
            }
            let trusted = if finished_swaps.contains(&base) {
                None
            } else if base < recover_from {
                match open_trusted(dir, base, now) {
                    Ok(found) => Some(found),
                    Err(e) => {
                        tracing::warn!("recovery: segment {base} needs a rescan: {e}");
                        None
                    }
                }
            } else if clean {
                open_trusted(dir, base, now).ok()
            } else {
                None
            };
            let segment = match trusted {
                Some((meta, files)) if !is_last => {
                    sealed.insert(base, meta);
                    drop(files);
                    continue;
                }
                Some((meta, files)) => ActiveSegment::reopen(meta, files, &config)?,
                None => {
                    let (segment, cut) =
                        recover_segment(dir, base, is_last, &config, now, epoch_cache)?;
                    report.segments_rescanned += 1;
                    damaged = cut.is_some();
                    report.truncated = report.truncated.or(cut);
                    segment
                }
            };
            if is_last || damaged {
                active = Some(segment);
            } else {
                let (meta, files) = segment.seal()?;
                // A rescanned segment was read from the page cache, which a crash of the
                // process (not the machine) keeps: make it durable before the recovery
                // point below claims it and the broker serves it.
                files.log.sync_all().at("fsync", &files.log_path)?;
                sealed.insert(base, meta);
            }
        }
        let active = match active {
            Some(a) => a,
            None => ActiveSegment::create(dir, Offset(0), &config, now)?,
        };
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            clock,
            sealed,
            flushed_offset: active.meta.next_offset,
            flushed_active_end: (active.meta.base_offset, active.meta.size),
            last_flush_bytes: 0,
            active,
            handles: Mutex::new(HandleCache {
                open: BTreeMap::new(),
                tick: 0,
            }),
            epochs: epochs.expect("inserted above"),
            unflushed_sealed: Vec::new(),
            high_watermark_checkpoint: Offset(0),
            log_start_checkpoint: Offset(0),
            cleaner_checkpoint: Offset(0),
            layout_generation: 0,
            truncations: Arc::default(),
            recovery: report,
        };
        log.open_log_start_checkpoint()?;
        log.cleaner_checkpoint = log.read_cleaner_checkpoint();
        if rebuild_epochs {
            log.rebuild_epoch_cache()?;
        }
        log.epochs.truncate_from_end(log.log_end_offset())?;
        log.epochs.truncate_from_start(log.log_start_offset())?;
        // What recovery kept came from the page cache; make sure it is on disk before the
        // recovery point claims it.
        log.active
            .files
            .log
            .sync_all()
            .at("fsync", &log.active.files.log_path)?;
        log.write_recovery_point(log.log_end_offset())?;
        log.open_high_watermark_checkpoint()?;
        Ok(log)
    }

    /// Takes the high watermark checkpointed before the stop, within what the log holds
    /// now: recovery may have cut a torn tail below it, and offsets past the log end must
    /// never count as committed, so it is capped at the log end (and the file rewritten,
    /// or records appended later at those offsets would count as committed after the next
    /// restart). A missing or damaged checkpoint is the log start: the safe answer, which
    /// the owner's replication brings forward again; it never stops the log opening.
    fn open_high_watermark_checkpoint(&mut self) -> Result<()> {
        let path = self.dir.join(HIGH_WATERMARK_FILE);
        let stored = match read_offset_checkpoint(&path, HIGH_WATERMARK_HEADER, HIGH_WATERMARK_WHAT)
        {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!("{e}; the high watermark starts at the log start");
                None
            }
        };
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        let Some(stored) = stored else {
            self.high_watermark_checkpoint = start;
            return Ok(());
        };
        let capped = stored.clamp(start, end);
        self.high_watermark_checkpoint = capped;
        if capped < stored {
            tracing::info!(dir = %self.dir.display(), "the checkpointed high watermark {stored} is past the recovered log end; capped at {capped}");
            self.write_high_watermark(capped)?;
        }
        Ok(())
    }

    /// Takes the log start a DeleteRecords (or the leader) moved inside a segment before
    /// the stop, within what recovery kept (capped at the log end, and the file rewritten:
    /// records appended later below it would be hidden), and deletes the sealed segments
    /// wholly below it that a crash left behind. A damaged file is the first segment's
    /// base: deleted records may show again, nothing else is lost.
    fn open_log_start_checkpoint(&mut self) -> Result<()> {
        let path = self.dir.join(LOG_START_FILE);
        let stored = match read_offset_checkpoint(&path, LOG_START_HEADER, LOG_START_WHAT) {
            Ok(stored) => stored.unwrap_or(Offset(0)),
            Err(e) => {
                tracing::warn!("{e}; the log starts at its first segment");
                Offset(0)
            }
        };
        let end = self.log_end_offset();
        self.log_start_checkpoint = stored.min(end);
        if stored > end {
            write_offset_checkpoint(&path, LOG_START_HEADER, end)?;
        }
        let doomed = self.sealed_below(self.log_start_checkpoint);
        self.detach(doomed).delete()?;
        Ok(())
    }

    fn rebuild_epoch_cache(&mut self) -> Result<()> {
        let mut entries: Vec<EpochEntry> = Vec::new();
        let bases: Vec<Offset> = self.segment_bases();
        for base in bases {
            self.for_each_header(base, |header| {
                let epoch = header.partition_leader_epoch;
                if epoch.0 >= 0 && entries.last().is_none_or(|e| epoch > e.epoch) {
                    entries.push(EpochEntry {
                        epoch,
                        start_offset: header.base_offset,
                    });
                }
            })?;
        }
        if !entries.is_empty() {
            tracing::info!(dir = %self.dir.display(), "rebuilt the leader-epoch cache from the log: {} epochs", entries.len());
        }
        self.epochs.reset(entries)
    }

    fn for_each_header(&self, base: Offset, mut f: impl FnMut(&BatchHeader)) -> Result<()> {
        let (meta, files) = self.segment(base)?;
        let mut walk = files.headers(meta.size);
        let mut position = 0;
        while position < meta.size {
            let header = walk.header(position)?;
            f(&header);
            position += header.total_len();
        }
        Ok(())
    }

    fn segment_bases(&self) -> Vec<Offset> {
        self.sealed
            .keys()
            .copied()
            .chain([self.active.meta.base_offset])
            .collect()
    }

    /// What the last open found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration the log runs with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Takes a topic's new limits (a config altered after creation): segment size and age
    /// (from the next roll; the active segment rolls early if its index fills), retention
    /// (from the next run). Durability and the handle cache stay as the log was opened.
    pub fn reconfigure(&mut self, config: LogConfig) {
        self.config = LogConfig {
            durability: self.config.durability,
            max_open_sealed_segments: self.config.max_open_sealed_segments,
            ..config
        };
    }

    /// Offset of the first record the log holds: the first segment's base, or where
    /// [`PartitionLog::advance_log_start`] moved it inside a segment.
    pub fn log_start_offset(&self) -> Offset {
        let first_base = self
            .sealed
            .keys()
            .next()
            .copied()
            .unwrap_or(self.active.meta.base_offset);
        first_base.max(self.log_start_checkpoint)
    }

    /// Moves the log start up to `offset` (Kafka's DeleteRecords; a follower taking its
    /// leader's log start): records below it are never read again, and the sealed
    /// segments wholly below it leave the log, returned for deletion as retention's are
    /// ([`DetachedSegments::delete`]). The new start is durable before this returns. An
    /// offset at or below the log start changes nothing; one past the log end is
    /// [`StorageError::OffsetOutOfRange`].
    pub fn advance_log_start(&mut self, offset: Offset) -> Result<DetachedSegments> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset > end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset <= start {
            return Ok(self.detach(Vec::new()));
        }
        write_offset_checkpoint(&self.dir.join(LOG_START_FILE), LOG_START_HEADER, offset)?;
        self.log_start_checkpoint = offset;
        let doomed = self.sealed_below(offset);
        let detached = self.detach(doomed);
        self.epochs.truncate_from_start(offset)?;
        Ok(detached)
    }

    /// The sealed segments whose every offset is below `offset`, oldest first.
    fn sealed_below(&self, offset: Offset) -> Vec<Offset> {
        self.sealed
            .iter()
            .take_while(|(_, m)| m.next_offset <= offset)
            .map(|(b, _)| *b)
            .collect()
    }

    /// Offset the next appended record gets (Kafka's log end offset).
    pub fn log_end_offset(&self) -> Offset {
        self.active.meta.next_offset
    }

    /// Every offset below this is on disk ("flushed up to").
    pub fn flushed_offset(&self) -> Offset {
        self.flushed_offset
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.sealed.values().map(|m| u64::from(m.size)).sum::<u64>()
            + u64::from(self.active.meta.size)
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.sealed.len() + 1
    }

    /// The newest leader epoch in the log, with the offset it starts at.
    pub fn latest_epoch(&self) -> Option<EpochEntry> {
        self.epochs.latest()
    }

    /// The epoch -> start offset entries, oldest first.
    pub fn epoch_entries(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// For a follower whose latest epoch is `epoch`: the largest epoch <= it that this log
    /// knows, and the offset where that epoch ends here. The follower truncates to it.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Appends one batch as the leader: validates it (magic, CRC, sizes, counts), assigns
    /// it the next offsets and `leader_epoch` (in place in the written bytes, the CRC
    /// untouched), writes it with one `pwritev` and indexes it. Not durable until flushed.
    pub fn append(&mut self, batch: Bytes, leader_epoch: LeaderEpoch) -> Result<AppendInfo> {
        let batch = RecordBatch::validate_produced(batch)?;
        if let Some(latest) = self.epochs.latest() {
            if leader_epoch < latest.epoch {
                return Err(StorageError::StaleLeaderEpoch {
                    got: leader_epoch.0,
                    latest: latest.epoch.0,
                });
            }
        }
        let base_offset = self.log_end_offset();
        let mut header = *batch.header();
        header.base_offset = base_offset;
        header.partition_leader_epoch = leader_epoch;
        let mut prefix = [0u8; 17];
        prefix.copy_from_slice(&batch.bytes()[..17]);
        batch::set_base_offset(&mut prefix, base_offset);
        batch::set_partition_leader_epoch(&mut prefix, leader_epoch);
        self.write_batch(&[&prefix, &batch.bytes()[17..]], &header)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp,
        })
    }

    /// Appends batches a follower fetched from its leader, keeping their offsets and epochs.
    /// Each must start at or after the log end: exactly at it, or past it where the
    /// leader's log cleaner left a gap (a compacted log keeps offsets, so the batch after
    /// removed records starts above the previous batch's end, as in Kafka). A batch that
    /// starts before the log end, or so far past it that its offsets do not fit one
    /// segment, is [`StorageError::NonContiguousAppend`].
    pub fn append_as_follower(&mut self, batches: Bytes) -> Result<AppendInfo> {
        let mut info: Option<AppendInfo> = None;
        for batch in Batches::new(batches) {
            let batch = batch?;
            let header = *batch.header();
            let span = header.last_offset().0 - self.log_end_offset().0;
            if header.base_offset < self.log_end_offset() || span > i64::from(i32::MAX) {
                return Err(StorageError::NonContiguousAppend {
                    expected: self.log_end_offset(),
                    got: header.base_offset,
                });
            }
            self.write_batch(&[batch.bytes()], &header)?;
            let first = info.map_or(header.base_offset, |i| i.base_offset);
            let max_timestamp = info.map_or(header.max_timestamp, |i| {
                i.max_timestamp.max(header.max_timestamp)
            });
            info = Some(AppendInfo {
                base_offset: first,
                last_offset: header.last_offset(),
                max_timestamp,
            });
        }
        info.ok_or_else(|| {
            StorageError::InvalidBatch(sluice_protocol::Error::Invalid {
                field: "follower append",
                reason: "no batches given".into(),
            })
        })
    }

    fn write_batch(&mut self, parts: &[&[u8]], header: &BatchHeader) -> Result<()> {
        let len = header.total_len();
        if len > self.config.segment_bytes_max {
            return Err(StorageError::BatchTooLarge {
                size: len,
                max: self.config.segment_bytes_max,
            });
        }
        let now = self.clock.now_ms();
        if self
            .active
            .must_roll(&self.config, len, header.last_offset(), now)
        {
            self.roll()?;
        }
        // The epoch is recorded before the batch: a crash in between leaves an epoch with no
        // batch, which open() trims, never a batch with an unknown epoch.
        self.epochs
            .assign(header.partition_leader_epoch, header.base_offset)?;
        self.active.append(parts, header)
    }

    /// Starts a new active segment at the log end and seals the current one. Rolling an
    /// empty segment does nothing.
    pub fn roll(&mut self) -> Result<()> {
        if self.active.meta.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let next = ActiveSegment::create(&self.dir, self.log_end_offset(), &self.config, now)?;
        let old = std::mem::replace(&mut self.active, next);
        let (meta, files) = old.seal()?;
        self.unflushed_sealed
            .push((files.log.clone(), files.log_path.clone()));
        self.sealed.insert(meta.base_offset, meta);
        Ok(())
    }

    /// The metadata and open files of the segment with base `base`.
    fn segment(&self, base: Offset) -> Result<(SegmentMeta, SegmentRef<'_>)> {
        if base == self.active.meta.base_offset {
            return Ok((self.active.meta, SegmentRef::Active(&self.active.files)));
        }
        let meta = self.sealed[&base];
        let mut cache = self.handles.lock().expect("handle cache lock poisoned");
        cache.tick += 1;
        let tick = cache.tick;
        if let Some((files, used)) = cache.open.get_mut(&base) {
            *used = tick;
            return Ok((meta, SegmentRef::Sealed(files.clone())));
        }
        let files = Arc::new(SegmentFiles::open_sealed(&self.dir, base)?);
        cache.open.insert(base, (files.clone(), tick));
        while cache.open.len() > self.config.max_open_sealed_segments.max(1) {
            let lru = cache
                .open
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(b, _)| *b)
                .expect("cache is not empty");
            cache.open.remove(&lru);
        }
        Ok((meta, SegmentRef::Sealed(files)))
    }

    /// Base of the segment holding `offset`.
    fn segment_for(&self, offset: Offset) -> Offset {
        if offset >= self.active.meta.base_offset {
            return self.active.meta.base_offset;
        }
        self.sealed
            .range(..=offset)
            .next_back()
            .map_or(self.log_start_offset(), |(b, _)| *b)
    }

    /// Number of sealed segments whose files are open now.
    pub fn open_sealed_segments(&self) -> usize {
        self.handles
            .lock()
            .expect("handle cache lock poisoned")
            .open
            .len()
    }

    /// Reads whole batches starting with the one that contains `offset`: as many as fit in
    /// `max_bytes` but at least one, none whose last offset is at or above `max_offset`
    /// (the high watermark for consumers). Empty at the log end or when the first batch
    /// crosses `max_offset`. An offset outside the log is [`StorageError::OffsetOutOfRange`].
    pub fn read(&self, offset: Offset, max_bytes: u32, max_offset: Offset) -> Result<Bytes> {
        match self.find(offset, max_bytes, max_offset)? {
            Some((files, found)) => files.read_at(found.position, found.len),
            None => Ok(Bytes::new()),
        }
    }

    /// The batches [`PartitionLog::read`] would read, for an answer to send: the range of
    /// the segment file they are in, unread, when it is at least
    /// [`SEND_FROM_FILE_MIN_BYTES`] and wholly in the page cache (so a connection's task
    /// sending it never waits for the disk, as Kafka's network threads do on a lagging
    /// consumer's cold segment); otherwise read now, on the caller's thread. The range stays
    /// valid after the log's lock is let go: segments only grow, and a replaced one stays
    /// readable through the open file, a deleted one for 10 s (`deleter.rs`: then it is
    /// cut down, and what still sends from it fails); only a truncation cuts it, and that never
    /// reaches below the high watermark (but for an unclean election), and a range made
    /// before a truncation says so ([`FileSlice::is_current`]). `None` when there is
    /// nothing to read.
    pub fn read_records(
        &self,
        offset: Offset,
        max_bytes: u32,
        max_offset: Offset,
    ) -> Result<Option<ReadRecords>> {
        let Some((files, found)) = self.find(offset, max_bytes, max_offset)? else {
            return Ok(None);
        };
        let slice = files.slice(found.position, found.len);
        let records = if slice.len() >= SEND_FROM_FILE_MIN_BYTES && in_page_cache(&slice) {
            Records::File(slice.guarded(&self.truncations))
        } else {
            Records::Memory(files.read_at(found.position, found.len)?)
        };
        Ok(Some(ReadRecords {
            records,
            last_offset: found.last_offset,
        }))
    }

    fn find(
        &self,
        offset: Offset,
        max_bytes: u32,
        max_offset: Offset,
    ) -> Result<Option<(SegmentRef<'_>, BatchSpan)>> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start: start,
                log_end: end,
            });
        }
        let mut base = self.segment_for(offset);
        loop {
            let (meta, files) = self.segment(base)?;
            // A segment the cleaner emptied holds no batch, whatever the offset.
            if offset < meta.next_offset && !meta.is_empty() {
                let position = files.position_of(&meta, offset)?;
                let found = files.find_batches(&meta, position, max_bytes, max_offset)?;
                return Ok(found.map(|found| (files, found)));
            }
            // `offset` is at or past this segment's end (past it where the cleaner removed
            // the last records): continue in the next one, if any.
            match self.next_segment_after(base) {
                Some(next) => base = next,
                None => return Ok(None),
            }
        }
    }

    /// How many bytes of the active segment lie from the batch holding `offset` to the
    /// log end: what a reader at `offset` lacks. `None` when `offset` is below the active
    /// segment (a reader that far behind lacks at least the rest of a sealed segment) or
    /// its position cannot be read.
    pub fn active_bytes_from(&self, offset: Offset) -> Option<u64> {
        let meta = &self.active.meta;
        if offset < meta.base_offset {
            return None;
        }
        let position = self.active.files.position_of(meta, offset).ok()?;
        Some(u64::from(meta.size.saturating_sub(position)))
    }

    fn next_segment_after(&self, base: Offset) -> Option<Offset> {
        if base >= self.active.meta.base_offset {
            return None;
        }
        use std::ops::Bound::{Excluded, Unbounded};
        Some(
            self.sealed
                .range((Excluded(base), Unbounded))
                .next()
                .map_or(self.active.meta.base_offset, |(b, _)| *b),
        )
    }

    /// The first offset whose record's timestamp is at or after `timestamp_ms`, with that
    /// timestamp (Kafka's ListOffsets by time). `None` when every record is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, Offset)>> {
        // Segment metadata says which segment holds it; only that one's files are opened.
        let metas = self.sealed.values().chain([&self.active.meta]);
        let Some(meta) = metas
            .filter(|m| !m.is_empty())
            .find(|m| m.max_timestamp >= timestamp_ms)
            .copied()
        else {
            return Ok(None);
        };
        let (_, files) = self.segment(meta.base_offset)?;
        // An entry (T, O) says every record up to the batch at O is at most T old. Only an
        // entry with T strictly below the target proves nothing before O qualifies; with
        // T equal to it, an earlier batch may hold the target timestamp too.
        let start = files
            .time_index
            .lookup_time(timestamp_ms.saturating_sub(1))
            .map_or(meta.base_offset, |e| {
                meta.base_offset.plus(i64::from(e.relative_offset))
            });
        let mut position = files.position_of(&meta, start)?;
        let mut walk = files.headers(meta.size);
        while position < meta.size {
            let header = walk.header(position)?;
            if header.max_timestamp >= timestamp_ms {
                let batch = RecordBatch::validate(files.read_at(position, header.total_len())?)?;
                return Ok(Some(first_record_at_or_after(&batch, timestamp_ms)));
            }
            position += header.total_len();
        }
        Ok(None)
    }

    /// Removes everything at and after `offset` (a follower whose log diverged from its
    /// leader's). The log ends at the start of the batch that held `offset`.
    pub fn truncate_to(&mut self, offset: Offset) -> Result<()> {
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        self.truncations.fetch_add(1, Ordering::AcqRel);
        if offset <= self.log_start_offset() {
            return self.truncate_fully_and_start_at(offset);
        }
        let keep_base = self.segment_for(offset);
        if keep_base != self.active.meta.base_offset {
            // Drop every later segment; the one holding `offset` becomes active again.
            let later: Vec<Offset> = self
                .sealed
                .range(keep_base..)
                .map(|(b, _)| *b)
                .skip(1)
                .collect();
            for base in later {
                self.remove_sealed(base)?;
            }
            let meta = self
                .sealed
                .remove(&keep_base)
                .expect("segment_for found it");
            self.forget_handles(keep_base);
            let files = SegmentFiles::open_sealed(&self.dir, keep_base)?;
            let reopened = ActiveSegment::reopen(meta, files, &self.config)?;
            let old = std::mem::replace(&mut self.active, reopened);
            delete_segment_files(&self.dir, old.meta.base_offset)?;
        }
        self.active.truncate_to(offset)?;
        self.after_truncation()
    }

    /// Deletes the whole log and starts it empty at `offset` (a follower that fell behind
    /// its leader's log start).
    pub fn truncate_fully_and_start_at(&mut self, offset: Offset) -> Result<()> {
        self.truncations.fetch_add(1, Ordering::AcqRel);
        let now = self.clock.now_ms();
        for base in self.sealed.keys().copied().collect::<Vec<_>>() {
            self.remove_sealed(base)?;
        }
        let old_base = self.active.meta.base_offset;
        if old_base != offset {
            delete_segment_files(&self.dir, old_base)?;
        }
        self.active = ActiveSegment::create(&self.dir, offset, &self.config, now)?;
        self.epochs.reset(Vec::new())?;
        self.after_truncation()
    }

    fn after_truncation(&mut self) -> Result<()> {
        let end = self.log_end_offset();
        // Offsets at and above the cut will hold new records, which no run has mapped: on
        // disk too, or after a restart they would count as clean and never be mapped (a
        // key deleted there could come back once its tombstone expires).
        if self.cleaner_checkpoint > end {
            self.cleaner_checkpoint = end;
            write_offset_checkpoint(
                &self.dir.join(CLEANER_CHECKPOINT_FILE),
                CLEANER_CHECKPOINT_HEADER,
                end,
            )?;
        }
        // A cleaning planned before the cut must not swap in: see `swap_cleaned`.
        self.layout_generation += 1;
        // A log started over below its deleted records (a follower restarting at a lower
        // leader log start) must not hide what is appended there.
        if self.log_start_checkpoint > end {
            self.log_start_checkpoint = end;
            write_offset_checkpoint(&self.dir.join(LOG_START_FILE), LOG_START_HEADER, end)?;
        }
        self.epochs.truncate_from_end(end)?;
        self.flushed_offset = self.flushed_offset.min(end);
        self.unflushed_sealed.retain(|(_, p)| p.exists());
        self.write_recovery_point(self.flushed_offset)?;
        // Before anything is appended at the cut offsets: an older, higher checkpoint
        // would make the records written there count as committed after a restart.
        if self.high_watermark_checkpoint > end {
            self.write_high_watermark(end)?;
        }
        Ok(())
    }

    /// Deletes whole sealed segments whose every offset is below `offset`. The active
    /// segment is never deleted. Returns how many segments went.
    pub fn delete_before(&mut self, offset: Offset) -> Result<usize> {
        let doomed = self.sealed_below(offset);
        self.detach(doomed).delete()
    }

    /// Applies retention by time (`retention_ms`: a segment whose newest record is older)
    /// and by size (`retention_bytes`: oldest segments go while the log is over it), never
    /// touching the active segment or any segment with offsets at or above `max_offset`
    /// (the high watermark). Returns how many segments went.
    pub fn apply_retention(&mut self, max_offset: Offset) -> Result<usize> {
        self.detach_for_retention(max_offset).delete()
    }

    /// [`Self::apply_retention`] in two steps: the segments retention removes leave the log
    /// now (reads and appends no longer see them), and their files are deleted by
    /// [`DetachedSegments::delete`], which needs no access to the log. A caller that holds
    /// the log behind a lock deletes after letting go of it: the renames and the
    /// directory's fsync wait on the disk, which appends and reads must not.
    /// A crash in between leaves the files, and the next open takes them back as segments
    /// (retention then runs again).
    pub fn detach_for_retention(&mut self, max_offset: Offset) -> DetachedSegments {
        if !self.config.cleanup_policy.deletes() {
            return self.detach(Vec::new());
        }
        let now = self.clock.now_ms();
        let mut size = self.size_bytes();
        let mut doomed = Vec::new();
        for (base, meta) in &self.sealed {
            let too_old = self
                .config
                .retention_ms
                .is_some_and(|ms| now.saturating_sub(meta.max_timestamp) > ms);
            let too_big = self
                .config
                .retention_bytes
                .is_some_and(|max| size - u64::from(meta.size) >= max);
            if meta.next_offset > max_offset || !(too_old || too_big) {
                break;
            }
            size -= u64::from(meta.size);
            doomed.push(*base);
        }
        self.detach(doomed)
    }

    /// Takes the oldest sealed segments `doomed` out of the log (see
    /// [`Self::detach_for_retention`]).
    fn detach(&mut self, doomed: Vec<Offset>) -> DetachedSegments {
        for base in &doomed {
            self.sealed.remove(base);
            self.forget_handles(*base);
            let [log_path, ..] = segment_paths(&self.dir, *base);
            self.unflushed_sealed.retain(|(_, p)| *p != log_path);
        }
        if !doomed.is_empty() {
            let start = self.log_start_offset();
            self.epochs.trim_start(start);
        }
        // The directory as it is now, while the log is held: `delete` renames relative to
        // it, so a topic deleted and created again meanwhile (a new directory at the same
        // path) is never touched. Without it (an error), `delete` falls back to the path.
        let dir_handle = if doomed.is_empty() {
            None
        } else {
            File::open(&self.dir).ok()
        };
        DetachedSegments {
            dir: self.dir.clone(),
            dir_handle,
            bases: doomed,
        }
    }

    /// The first step of a cleaning (see the `cleaner` module): which sealed segments may
    /// be compacted now, or `None`. Only a log whose `cleanup_policy` compacts is cleaned;
    /// only sealed segments, from the log start up to the first that ends above
    /// `max_offset` (the owner passes the high watermark, as for retention) or holds a
    /// record newer than `min_compaction_lag_ms`. Without `force`, a plan is made only when
    /// the dirty bytes (segments written since the last cleaning) are at least
    /// `min_cleanable_dirty_ratio` of the cleanable bytes. The run opens the segments as
    /// it reads them: one that retention deleted meanwhile fails the run (with nothing
    /// changed), and the next plans again.
    pub fn plan_cleaning(&self, max_offset: Offset, force: bool) -> Result<Option<CleanPlan>> {
        if !self.config.cleanup_policy.compacts() {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        let first_dirty = self
            .cleaner_checkpoint
            .clamp(self.log_start_offset(), self.log_end_offset());
        let lag_ms = self.config.min_compaction_lag_ms;
        let mut cleanable = Vec::new();
        let (mut dirty_bytes, mut total_bytes) = (0u64, 0u64);
        // A dirty segment past `max.compaction.lag.ms` is cleaned whatever the ratio. By its
        // newest record: a record waits at most the lag plus its segment's span, which the
        // roll bounds by the lag too.
        let mut overdue = false;
        for meta in self.sealed.values() {
            let may_clean = meta.next_offset <= max_offset
                && (lag_ms <= 0 || now.saturating_sub(meta.max_timestamp) >= lag_ms);
            if !may_clean {
                break;
            }
            total_bytes += u64::from(meta.size);
            if meta.next_offset > first_dirty {
                dirty_bytes += u64::from(meta.size);
                let max_lag = self.config.max_compaction_lag_ms;
                overdue |= max_lag < i64::MAX && now.saturating_sub(meta.max_timestamp) >= max_lag;
            }
            cleanable.push(*meta);
        }
        if cleanable.is_empty() {
            return Ok(None);
        }
        let ratio_met = dirty_bytes > 0
            && dirty_bytes as f64 >= self.config.min_cleanable_dirty_ratio * total_bytes as f64;
        if !force && !ratio_met && !overdue {
            return Ok(None);
        }
        Ok(Some(CleanPlan {
            dir: self.dir.clone(),
            config: self.config.clone(),
            now_ms: now,
            first_dirty,
            cleanable,
            layout_generation: self.layout_generation,
            transactions: None,
        }))
    }

    /// Where the dirty part of the log starts: offsets below it were mapped by the last
    /// cleaning (the cleaner checkpoint, within the log).
    pub fn cleaner_first_dirty_offset(&self) -> Offset {
        self.cleaner_checkpoint
            .clamp(self.log_start_offset(), self.log_end_offset())
    }

    /// The last step of a cleaning: puts the cleaned segments into the log in place of the
    /// ones they replace, oldest first, by the `.cleaned` -> `.swap` -> final-name
    /// protocol (see the `cleaner` module and `swap_groups`), then moves the cleaner
    /// checkpoint. Groups whose segments retention has deleted meanwhile are dropped. When
    /// the log was truncated since the plan, or a segment the run cleaned changed otherwise,
    /// nothing is swapped and the cleaned files are deleted (`swapped: false`). An I/O
    /// error part way leaves the rest of that swap to the next open's recovery; the owner
    /// should stop serving the log until then.
    pub fn swap_cleaned(&mut self, mut cleaned: Cleaned) -> Result<CleanReport> {
        let current = |old: &SegmentMeta| {
            self.sealed
                .get(&old.base_offset)
                .is_some_and(|m| m.next_offset == old.next_offset && m.size == old.size)
        };
        // Retention deletes whole segments from the log start (under compact,delete, maybe
        // while a long throttled run went on): groups whose every segment it deleted are
        // dropped, and the rest still go in, so such a run is not wasted. Safe: what the
        // remaining groups removed is superseded at offsets above them.
        let start = self.log_start_offset();
        let gone = cleaned
            .groups
            .iter()
            .take_while(|g| g.replaces.iter().all(|old| old.next_offset <= start))
            .count();
        for group in cleaned.groups.drain(..gone) {
            cleaner::remove_cleaned_files(&self.dir, group.meta.base_offset);
        }
        // A truncation since the plan may have removed records the run's map counted as
        // the latest of their keys; a segment it replaces may have changed otherwise (a
        // group only partly deleted: its remaining segments would keep older values a
        // later group's expired tombstone no longer hides).
        let still_ours = cleaned.layout_generation == self.layout_generation
            && cleaned
                .groups
                .iter()
                .all(|g| g.replaces.iter().all(current));
        let mut report = cleaned.report.clone();
        if !still_ours {
            report.swapped = false;
            return Ok(report);
        }
        let swap_started = std::time::Instant::now();
        self.swap_groups(std::mem::take(&mut cleaned.groups), &mut report)?;
        report.swap_micros = swap_started.elapsed().as_micros() as u64;
        report.swapped = true;
        let checkpoint = self.cleaner_checkpoint.max(cleaned.map_end);
        write_offset_checkpoint(
            &self.dir.join(CLEANER_CHECKPOINT_FILE),
            CLEANER_CHECKPOINT_HEADER,
            checkpoint,
        )?;
        self.cleaner_checkpoint = checkpoint;
        Ok(report)
    }

    /// Puts cleaned groups in place of the segments they replace, holding the write lock
    /// for as few directory syncs as the protocol allows (a group's count plus two, not
    /// three per group): each group is committed (its `.swap` log named) and synced before
    /// the next, oldest first, so a crash leaves a prefix of them committed (a later group
    /// may have dropped an expired tombstone whose key's older values only an earlier group
    /// removed); then every old segment goes, one sync; then every cleaned segment takes its
    /// final name, one sync.
    fn swap_groups(&mut self, groups: Vec<CleanedGroup>, report: &mut CleanReport) -> Result<()> {
        for group in &groups {
            let base = group.meta.base_offset;
            let cleaned = segment_paths_with(&self.dir, base, cleaner::CLEANED_SUFFIX);
            let swap = segment_paths_with(&self.dir, base, cleaner::SWAP_SUFFIX);
            // Indexes first, the log last: the log's `.swap` name is the commit point.
            for i in [1, 2, 0] {
                fs::rename(&cleaned[i], &swap[i]).at("rename", &cleaned[i])?;
            }
            sync_dir(&self.dir)?;
        }
        for group in &groups {
            for old in &group.replaces {
                self.sealed.remove(&old.base_offset);
                self.forget_handles(old.base_offset);
                let [log_path, ..] = segment_paths(&self.dir, old.base_offset);
                self.unflushed_sealed.retain(|(_, p)| *p != log_path);
                delete_segment_files(&self.dir, old.base_offset)?;
            }
        }
        sync_dir(&self.dir)?;
        for group in groups {
            let base = group.meta.base_offset;
            let swap = segment_paths_with(&self.dir, base, cleaner::SWAP_SUFFIX);
            let finals = segment_paths(&self.dir, base);
            for i in [1, 2, 0] {
                fs::rename(&swap[i], &finals[i]).at("rename", &swap[i])?;
            }
            report.segments_replaced += group.replaces.len();
            self.sealed.insert(base, group.meta);
        }
        sync_dir(&self.dir)
    }

    fn read_cleaner_checkpoint(&self) -> Offset {
        let path = self.dir.join(CLEANER_CHECKPOINT_FILE);
        match read_offset_checkpoint(&path, CLEANER_CHECKPOINT_HEADER, "cleaner checkpoint") {
            Ok(Some(offset)) => offset,
            Ok(None) => self.log_start_offset(),
            Err(e) => {
                // The safe answer: the whole log counts as dirty and is mapped again.
                tracing::warn!("{e}; the cleaner starts from the log start");
                self.log_start_offset()
            }
        }
    }

    fn remove_sealed(&mut self, base: Offset) -> Result<()> {
        self.sealed.remove(&base);
        self.forget_handles(base);
        let [log_path, ..] = segment_paths(&self.dir, base);
        self.unflushed_sealed.retain(|(_, p)| *p != log_path);
        delete_segment_files(&self.dir, base)
    }

    fn forget_handles(&self, base: Offset) {
        self.handles
            .lock()
            .expect("handle cache lock poisoned")
            .open
            .remove(&base);
    }

    /// The fsyncs that would make everything appended so far durable, or `None` when it
    /// already is. Run the job without holding the log, then call [`Self::complete_flush`].
    pub fn begin_flush(&mut self) -> Option<FlushJob> {
        let end = self.log_end_offset();
        if end <= self.flushed_offset && self.unflushed_sealed.is_empty() {
            return None;
        }
        let includes_sealed = !self.unflushed_sealed.is_empty();
        let mut files = std::mem::take(&mut self.unflushed_sealed);
        files.push((
            self.active.files.log.clone(),
            self.active.files.log_path.clone(),
        ));
        Some(FlushJob {
            files,
            up_to: end,
            includes_sealed,
            active_end: (self.active.meta.base_offset, self.active.meta.size),
        })
    }

    /// Records that `job` ran successfully: its offsets are durable. When it covered a
    /// sealed segment, the recovery point moves too, so a restart does not rescan it.
    pub fn complete_flush(&mut self, job: &FlushJob) -> Result<()> {
        // A truncation between begin and complete may have moved the end below the job.
        let durable = job.up_to.min(self.log_end_offset());
        self.flushed_offset = self.flushed_offset.max(durable);
        let (base, size) = job.active_end;
        let (flushed_base, flushed_size) = self.flushed_active_end;
        let from = if base == flushed_base {
            flushed_size
        } else {
            0
        };
        self.last_flush_bytes = u64::from(size.saturating_sub(from));
        self.flushed_active_end = job.active_end;
        if job.includes_sealed {
            self.write_recovery_point(self.flushed_offset)?;
        }
        Ok(())
    }

    /// Makes sure the active segment has zeros written ahead of its end for the next
    /// appends to overwrite (see `segment.rs`): when fewer than [`RUNWAY_LOW`] bytes are
    /// left, writes them up to [`RUNWAY_AHEAD`] past the end, unless the last flush covered
    /// more than that. Only under `Fsync` durability, where an fdatasync waits on every
    /// acknowledgement. Returns the file to fdatasync for the runway to pay off, if it
    /// wrote; sync it through a descriptor of its own (see `SharedLog::extend_runway`). A
    /// failure (a full disk) leaves no runway and the log as it was.
    pub fn extend_runway(&mut self) -> Result<Option<PathBuf>> {
        if !self.runway_wanted() {
            return Ok(None);
        }
        let limit = u64::from(self.config.segment_bytes_max);
        Ok(self
            .active
            .extend_runway(RUNWAY_AHEAD, limit)?
            .then(|| self.active.files.log_path.clone()))
    }

    /// Whether [`PartitionLog::extend_runway`] would write: `Fsync` durability, fewer than
    /// [`RUNWAY_LOW`] bytes left, and a last flush no larger than the runway. A flush of
    /// more pays its journal commit once per half MiB or more anyway: at full speed zeros
    /// would only double the writes (and cost CPU), where at a moderate rate (each flush
    /// tens of KiB) they halve the fsync.
    pub fn runway_wanted(&self) -> bool {
        self.config.durability == Durability::Fsync
            && self.active.runway() < RUNWAY_LOW
            && self.last_flush_bytes <= RUNWAY_AHEAD
    }

    /// Zeros written ahead of the active segment's last batch.
    pub fn runway_bytes(&self) -> u64 {
        self.active.runway()
    }

    /// Cuts the runway off the active segment, durably: its file ends at its last batch.
    pub fn cut_runway(&mut self) -> Result<()> {
        if self.active.runway() > 0 {
            self.active.cut_runway()?;
            let path = &self.active.files.log_path;
            self.active.files.log.sync_data().at("fsync", path)?;
        }
        Ok(())
    }

    /// Flushes everything appended so far, blocking until it is on disk.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(job) = self.begin_flush() {
            job.run()?;
            self.complete_flush(&job)?;
        }
        Ok(())
    }

    /// Writes the recovery-point checkpoint at the flushed offset, so a restart after a
    /// crash rescans only from there. Owners call it periodically.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.write_recovery_point(self.flushed_offset)
    }

    fn write_recovery_point(&self, offset: Offset) -> Result<()> {
        write_offset_checkpoint(
            &self.dir.join(RECOVERY_POINT_FILE),
            RECOVERY_POINT_HEADER,
            offset,
        )
    }

    /// The high watermark to start from: what the owner last checkpointed with
    /// [`Self::checkpoint_high_watermark`], capped at the log end that recovery kept and
    /// lowered by truncations since; the log start when there is no checkpoint or it is
    /// damaged. Storage only keeps the offset; the owner decides what it means.
    pub fn checkpointed_high_watermark(&self) -> Offset {
        // Retention or a restart at a leader's log start may have moved the start past it.
        self.high_watermark_checkpoint.max(self.log_start_offset())
    }

    /// Durably records the owner's high watermark (Kafka's replication-offset-checkpoint,
    /// here one file per partition), capped at the log end, so a restart starts from it.
    /// Writes nothing when the file already holds that offset.
    pub fn checkpoint_high_watermark(&mut self, high_watermark: Offset) -> Result<()> {
        let offset = high_watermark.min(self.log_end_offset());
        if offset == self.high_watermark_checkpoint {
            return Ok(());
        }
        self.write_high_watermark(offset)
    }

    fn write_high_watermark(&mut self, offset: Offset) -> Result<()> {
        write_offset_checkpoint(
            &self.dir.join(HIGH_WATERMARK_FILE),
            HIGH_WATERMARK_HEADER,
            offset,
        )?;
        self.high_watermark_checkpoint = offset;
        Ok(())
    }

    /// Shuts the log down cleanly: flushes, trims the active indexes, checkpoints, and
    /// writes the clean-shutdown marker so the next open skips the rescan.
    pub fn close(mut self) -> Result<()> {
        // The clean marker tells the next open to trust the file's length.
        self.cut_runway()?;
        self.flush()?;
        self.active.files.offset_index.trim()?;
        self.active.files.time_index.trim()?;
        self.write_recovery_point(self.log_end_offset())?;
        let mut marker = Vec::new();
        CLEAN_SHUTDOWN_HEADER.write_to(&mut marker);
        write_checkpoint(&self.dir.join(CLEAN_SHUTDOWN_FILE), &marker)
    }

    /// Deletes the log and its directory (topic deletion).
    pub fn delete(self) -> Result<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).at("remove directory", &dir)
    }
}

/// Either the active segment's files (borrowed) or a sealed segment's (shared).
enum SegmentRef<'a> {
    Active(&'a SegmentFiles),
    Sealed(Arc<SegmentFiles>),
}

impl std::ops::Deref for SegmentRef<'_> {
    type Target = SegmentFiles;

    fn deref(&self) -> &SegmentFiles {
        match self {
            SegmentRef::Active(files) => files,
            SegmentRef::Sealed(files) => files,
        }
    }
}

fn first_record_at_or_after(batch: &RecordBatch, timestamp_ms: i64) -> (i64, Offset) {
    let header = batch.header();
    if let Ok(records) = batch.records() {
        for record in records.flatten() {
            if record.timestamp >= timestamp_ms {
                return (record.timestamp, record.offset);
            }
        }
    }
    (header.max_timestamp, header.base_offset)
}

/// Reads and removes the clean-shutdown marker; true if it was there and intact.
fn take_clean_marker(dir: &Path) -> Result<bool> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = match read_checkpoint(&path, "clean-shutdown marker") {
        Ok(Some(bytes)) => CLEAN_SHUTDOWN_HEADER
            .check(&bytes, &path, "clean-shutdown marker")
            .is_ok(),
        Ok(None) => return Ok(false),
        Err(StorageError::BadFile { .. }) => false,
        Err(e) => return Err(e),
    };
    fs::remove_file(&path).at("remove", &path)?;
    sync_dir(dir)?;
    Ok(clean)
}

/// Writes a checkpoint of one offset: the header, the offset (`i64`), a CRC-32C.
fn write_offset_checkpoint(path: &Path, header: FileHeader, offset: Offset) -> Result<()> {
    let mut buf = Vec::with_capacity(FileHeader::LEN + 8);
    header.write_to(&mut buf);
    buf.extend_from_slice(&offset.0.to_be_bytes());
    write_checkpoint(path, &buf)
}

/// Reads a checkpoint written by [`write_offset_checkpoint`]: `None` if there is none, an
/// error naming the file if it cannot be read or is damaged (checksum, header or size).
fn read_offset_checkpoint(
    path: &Path,
    header: FileHeader,
    what: &'static str,
) -> Result<Option<Offset>> {
    let Some(bytes) = read_checkpoint(path, what)? else {
        return Ok(None);
    };
    header.check(&bytes, path, what)?;
    let body = &bytes[FileHeader::LEN..];
    let raw = <[u8; 8]>::try_from(body).map_err(|_| StorageError::BadFile {
        path: path.to_path_buf(),
        what,
        reason: format!("{} bytes where an offset takes 8", body.len()),
    })?;
    Ok(Some(Offset(i64::from_be_bytes(raw))))
}

fn read_recovery_point(dir: &Path) -> Result<Option<Offset>> {
    let path = dir.join(RECOVERY_POINT_FILE);
    let bytes = match read_checkpoint(&path, "recovery-point checkpoint") {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(e @ StorageError::BadFile { .. }) => {
            tracing::warn!("{e}; recovering the whole log");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    RECOVERY_POINT_HEADER.check(&bytes, &path, "recovery-point checkpoint")?;
    let body = &bytes[FileHeader::LEN..];
    let Ok(raw) = <[u8; 8]>::try_from(body) else {
        tracing::warn!(path = %path.display(), "recovery-point checkpoint has the wrong size; recovering the whole log");
        return Ok(None);
    };
    Ok(Some(Offset(i64::from_be_bytes(raw))))
}

/// Base offsets of the `.log` files in `dir`, sorted; removes leftovers that belong to no
/// segment (temporary files, indexes without a log).
fn list_segments(dir: &Path) -> Result<Vec<Offset>> {
    let mut logs = Vec::new();
    let mut others = Vec::new();
    let mut deleted = Vec::new();
    for entry in fs::read_dir(dir).at("list", dir)? {
        let entry = entry.at("list", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = parse_segment_name(&name, "log") {
            logs.push(base);
        } else if let Some(base) =
            parse_segment_name(&name, "index").or(parse_segment_name(&name, "timeindex"))
        {
            others.push((base, entry.path()));
        } else if name.ends_with(".tmp") {
            fs::remove_file(entry.path()).at("remove", &entry.path())?;
        } else if name.ends_with(DELETED_SUFFIX) {
            // A removed segment's file the background deleter did not reach before the
            // process stopped: to it again (in steps, as always).
            deleted.push(entry.path());
        }
    }
    if !deleted.is_empty() {
        delete_later(deleted, std::time::Duration::ZERO);
    }
    logs.sort();
    for (base, path) in others {
        if logs.binary_search(&base).is_err() {
            tracing::warn!(path = %path.display(), "removing an index whose log segment is gone");
            fs::remove_file(&path).at("remove", &path)?;
        }
    }
    Ok(logs)
}

/// Segments taken out of a log by retention whose files are still to be deleted
/// ([`PartitionLog::detach_for_retention`]).
#[must_use = "the segments' files stay on disk until `delete` is called"]
#[derive(Debug)]
pub struct DetachedSegments {
    dir: PathBuf,
    /// The directory opened when the segments were detached.
    dir_handle: Option<File>,
    bases: Vec<Offset>,
}

impl DetachedSegments {
    /// How many segments were detached.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// Removes the segments' files from the log durably: renamed with a `.deleted` suffix
    /// and the directory synced, so no reopening of the log sees them again. The files
    /// themselves are deleted in the background a little later, in steps
    /// (`deleter.rs`: a large file unlinked at once stalls every fsync of the disk).
    /// Returns how many segments went.
    pub fn delete(self) -> Result<usize> {
        if self.bases.is_empty() {
            return Ok(0);
        }
        let mut renamed = Vec::new();
        let outcome = self.rename_all(&mut renamed);
        // What was renamed goes even when something failed: it is out of the log already.
        if !renamed.is_empty() {
            delete_later(renamed, DELETE_DELAY);
        }
        outcome.map(|()| self.bases.len())
    }

    /// Renames every file of the segments (recording each in `renamed`), then syncs the
    /// directory.
    fn rename_all(&self, renamed: &mut Vec<PathBuf>) -> Result<()> {
        for base in &self.bases {
            for path in segment_paths(&self.dir, *base) {
                let mut to = path.clone().into_os_string();
                to.push(DELETED_SUFFIX);
                let to = PathBuf::from(to);
                match rename_in(self.dir_handle.as_ref(), &path, &to) {
                    Ok(()) => renamed.push(to),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io("rename", &path, e)),
                }
            }
        }
        match &self.dir_handle {
            Some(dir) => dir.sync_all().at("fsync directory", &self.dir),
            None => sync_dir(&self.dir),
        }
    }
}

/// Renames `from` to `to` (both in one directory) relative to `dir`, the directory opened
/// earlier, when there is one: if the directory was removed since, and another made at the
/// same path, the rename finds nothing (NotFound) instead of renaming the new one's files.
fn rename_in(dir: Option<&File>, from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let Some(dir) = dir else {
        return fs::rename(from, to);
    };
    let name = |p: &Path| {
        std::ffi::CString::new(p.file_name().unwrap_or_default().as_bytes())
            .map_err(std::io::Error::other)
    };
    let (from, to) = (name(from)?, name(to)?);
    // SAFETY: renameat reads two NUL-terminated names and a directory descriptor we hold.
    let rc =
        unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Opens a segment whose indexes are trusted (below the recovery point, or after a clean
/// stop): checks the indexes and finds the log end by scanning headers from the last index
/// entry. Any inconsistency is an error, and the caller rescans the segment instead.
fn open_trusted(dir: &Path, base: Offset, now: i64) -> Result<(SegmentMeta, SegmentFiles)> {
    let files = SegmentFiles::open_sealed(dir, base)?;
    let size =
        u32::try_from(files.log.metadata().at("stat", &files.log_path)?.len()).map_err(|_| {
            StorageError::BadFile {
                path: files.log_path.clone(),
                what: "log segment",
                reason: "larger than 4 GiB".into(),
            }
        })?;
    let bad = |reason: String| StorageError::BadFile {
        path: files.log_path.clone(),
        what: "segment index",
        reason,
    };
    files.offset_index.check(size.max(1)).map_err(bad)?;
    files.time_index.check(size.max(1)).map_err(bad)?;
    let mut meta = SegmentMeta {
        base_offset: base,
        next_offset: base,
        size,
        max_timestamp: files
            .time_index
            .last_time_entry()
            .map_or(batch::NO_TIMESTAMP, |e| e.timestamp),
        rolling_base_ms: now,
    };
    let mut position = files
        .offset_index
        .last_offset_entry()
        .map_or(0, |e| e.position);
    while position < size {
        let header = files.header_at(position)?;
        let end = position
            .checked_add(header.total_len())
            .filter(|&e| e <= size);
        if header.magic != batch::MAGIC_V2 || header.base_offset < meta.next_offset || end.is_none()
        {
            return Err(bad(format!(
                "batch at position {position} does not fit the log"
            )));
        }
        meta.next_offset = header.next_offset();
        meta.max_timestamp = meta.max_timestamp.max(header.max_timestamp);
        position = end.unwrap_or(size);
    }
    Ok((meta, files))
}

/// Rescans segment `base` (see [`ActiveSegment::recover`]); returns it as a writable segment
/// and where damage was cut from it, if anywhere.
fn recover_segment(
    dir: &Path,
    base: Offset,
    last: bool,
    config: &LogConfig,
    now: i64,
    epochs: &mut LeaderEpochCache,
) -> Result<(ActiveSegment, Option<Truncation>)> {
    let [log_path, ..] = segment_paths(dir, base);
    let log_len = fs::metadata(&log_path).at("stat", &log_path)?.len();
    let mut segment = ActiveSegment::for_recovery(dir, base, config, now)?;
    let recovered = segment.recover(log_len, last)?;
    for (epoch, offset) in recovered.epochs {
        epochs.assign(LeaderEpoch(epoch), offset)?;
    }
    Ok((
        segment,
        recovered.truncated.map(|(position, reason)| Truncation {
            file: log_path,
            position,
            reason,
        }),
    ))
}

/// Deletes a segment's files at once (truncation, recovery, a cleaner's swap: rare, and
/// the files are usually small; retention goes through [`DetachedSegments::delete`]).
fn delete_segment_files(dir: &Path, base: Offset) -> Result<()> {
    for path in segment_paths(dir, base) {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("remove", &path, e)),
        }
    }
    Ok(())
}
