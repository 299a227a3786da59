//! One segment: a `.log` file of whole RecordBatch v2 batches back to back (Kafka's segment
//! format, nothing else in it) and its two indexes. The active segment takes appends; sealed
//! segments are read-only and may have their files closed (see `log::HandleCache`).
//!
//! The active segment's file may end in a *runway*: zeros written ahead of its last batch
//! ([`ActiveSegment::extend_runway`]), so that appends overwrite blocks the file already
//! has and an fdatasync need not commit the filesystem's journal for the new size and
//! blocks (on ext4 at 100,000 small appends a second this halved the fsync's median;
//! BENCHMARKS.md). Kafka's `log.preallocate` does the same with whole segments. The runway
//! is cut when the segment is sealed or the log closed, so every sealed segment, and every
//! cleanly closed log, is still batches and nothing else; recovery takes a tail of zeros in
//! the last segment for the runway it is, not damage.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::batch::{self, BatchHeader, RecordBatch, HEADER_LEN, NO_TIMESTAMP};
use sluice_protocol::{FileSlice, Offset};

use crate::error::{IoContext, Result, StorageError};
use crate::file::{open_rw, sync_dir};
use crate::index::{IndexFile, IndexKind, OffsetEntry, TimeEntry};
use crate::LogConfig;

/// The three file paths of the segment starting at `base_offset`.
pub(crate) fn segment_paths(dir: &Path, base_offset: Offset) -> [PathBuf; 3] {
    segment_paths_with(dir, base_offset, "")
}

/// The three file paths of the segment starting at `base_offset`, each with `suffix`
/// appended (the cleaner's `.cleaned` and `.swap` files).
pub(crate) fn segment_paths_with(dir: &Path, base_offset: Offset, suffix: &str) -> [PathBuf; 3] {
    let stem = format!("{:020}", base_offset.0);
    [
        dir.join(format!("{stem}.log{suffix}")),
        dir.join(format!("{stem}.index{suffix}")),
        dir.join(format!("{stem}.timeindex{suffix}")),
    ]
}

/// Parses a segment file name (`00000000000000000042.log`) back to its base offset.
pub(crate) fn parse_segment_name(name: &str, extension: &str) -> Option<Offset> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

/// What a segment holds, known without its files open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub base_offset: Offset,
    /// Offset after the last batch (`base_offset` when empty).
    pub next_offset: Offset,
    /// Bytes in the `.log` file.
    pub size: u32,
    /// Largest batch max-timestamp in the segment (`NO_TIMESTAMP` when empty).
    pub max_timestamp: i64,
    /// When the segment began, for age-based rolls: the broker's clock when it was created
    /// or (after a restart) opened. Not a producer timestamp: a client with a wrong clock
    /// must not be able to force a roll per batch.
    pub rolling_base_ms: i64,
}

impl SegmentMeta {
    fn empty(base_offset: Offset, now_ms: i64) -> SegmentMeta {
        SegmentMeta {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: NO_TIMESTAMP,
            rolling_base_ms: now_ms,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// `offset` relative to the base, if it fits an index entry.
    pub fn relative(&self, offset: Offset) -> Option<u32> {
        u32::try_from(offset.0 - self.base_offset.0).ok()
    }
}

/// The open files of a segment.
pub(crate) struct SegmentFiles {
    pub log_path: PathBuf,
    pub log: Arc<File>,
    pub offset_index: IndexFile,
    pub time_index: IndexFile,
}

impl SegmentFiles {
    /// Opens a sealed segment's files as they are on disk (indexes trimmed).
    pub fn open_sealed(dir: &Path, base_offset: Offset) -> Result<SegmentFiles> {
        let [log_path, index_path, time_path] = segment_paths(dir, base_offset);
        Ok(SegmentFiles {
            log: Arc::new(open_rw(&log_path, false)?),
            offset_index: IndexFile::open(IndexKind::Offset, &index_path)?,
            time_index: IndexFile::open(IndexKind::Time, &time_path)?,
            log_path,
        })
    }

    /// The `len` bytes at `position` of the log, unread.
    pub fn slice(&self, position: u32, len: u32) -> FileSlice {
        FileSlice::new(self.log.clone(), u64::from(position), len as usize)
    }

    /// Reads `len` bytes at `position` of the log into a new buffer (one copy).
    pub fn read_at(&self, position: u32, len: u32) -> Result<Bytes> {
        self.slice(position, len).read().at("read", &self.log_path)
    }

    /// Reads the header of the batch at `position`.
    pub fn header_at(&self, position: u32) -> Result<BatchHeader> {
        let mut buf = [0u8; HEADER_LEN];
        self.log
            .read_exact_at(&mut buf, u64::from(position))
            .at("read", &self.log_path)?;
        BatchHeader::parse(&buf).map_err(|e| self.corrupt(position, &e.to_string()))
    }

    /// The headers of the batches in the log's first `size` bytes, read a window at a time
    /// ([`HeaderWalk`]).
    pub(crate) fn headers(&self, size: u32) -> HeaderWalk<'_> {
        HeaderWalk::new(self, size)
    }

    fn corrupt(&self, position: u32, reason: &str) -> StorageError {
        StorageError::BadFile {
            path: self.log_path.clone(),
            what: "log segment",
            reason: format!("at position {position}: {reason}"),
        }
    }

    /// Position of the batch that contains `offset` (or the first batch after it), scanning
    /// forward from the offset index's nearest entry. `meta.size` when no batch qualifies.
    pub fn position_of(&self, meta: &SegmentMeta, offset: Offset) -> Result<u32> {
        let relative = meta
            .relative(offset.max(meta.base_offset))
            .unwrap_or(u32::MAX);
        let mut position = self
            .offset_index
            .lookup_offset(relative)
            .map_or(0, |e| e.position);
        let mut walk = self.headers(meta.size);
        while position < meta.size {
            let header = walk.header(position)?;
            if header.last_offset() >= offset {
                break;
            }
            position += header.total_len();
        }
        Ok(position)
    }

    /// Finds whole batches starting at `position`: as many as fit in `max_bytes` (at least
    /// one, however large), stopping before any batch whose last offset is at or past
    /// `max_offset`. Reads no record, only headers: those near the end, from the nearest
    /// offset index entries (Kafka's `FileRecords.slice` finds its end the same way).
    pub fn find_batches(
        &self,
        meta: &SegmentMeta,
        position: u32,
        max_bytes: u32,
        max_offset: Offset,
    ) -> Result<Option<BatchSpan>> {
        if position >= meta.size {
            return Ok(None);
        }
        // Batches from the one holding `max_offset` on are out.
        let bound = if max_offset < meta.next_offset {
            self.position_of(meta, max_offset)?
        } else {
            meta.size
        };
        if bound <= position {
            return Ok(None);
        }
        let limit = bound.min(position.saturating_add(max_bytes));
        let mut walk = self.headers(meta.size);
        // From the last indexed batch that starts below the limit; when none of its batches
        // fits, from the entry before (whose batches all end at or before that one starts).
        let mut below = limit;
        loop {
            let from = below
                .checked_sub(1)
                .and_then(|p| self.offset_index.lookup_position(p))
                .map_or(position, |e| e.position.max(position));
            let mut end = from;
            let mut last = None;
            while end < limit {
                let header = walk.header(end)?;
                if u64::from(end) + u64::from(header.total_len()) > u64::from(limit) {
                    break;
                }
                end += header.total_len();
                last = Some(header.last_offset());
            }
            if let Some(last_offset) = last {
                return Ok(Some(BatchSpan {
                    position,
                    len: end - position,
                    last_offset,
                }));
            }
            if from == position {
                // Not even the first batch fits in `max_bytes`: it goes whole anyway (it
                // is below `bound`, so below `max_offset`).
                let header = walk.header(position)?;
                return Ok(Some(BatchSpan {
                    position,
                    len: header.total_len(),
                    last_offset: header.last_offset(),
                }));
            }
            below = from;
        }
    }
}

/// Whole batches of a segment's log: where they lie and the last one's last offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchSpan {
    pub position: u32,
    pub len: u32,
    pub last_offset: Offset,
}

/// Bytes a [`HeaderWalk`] reads at once: the offset index's default interval, so the
/// batches between an entry and the next usually take one read.
const WALK_WINDOW: u32 = 4096;

/// Reads the headers of a segment's batches going forward, a window of the file at a time:
/// one `pread` for the dozens of small batches between two index entries, not one each.
pub(crate) struct HeaderWalk<'a> {
    files: &'a SegmentFiles,
    /// The log's size: no window reads past it.
    size: u32,
    window: Bytes,
    window_at: u32,
}

impl<'a> HeaderWalk<'a> {
    fn new(files: &'a SegmentFiles, size: u32) -> HeaderWalk<'a> {
        HeaderWalk {
            files,
            size,
            window: Bytes::new(),
            window_at: 0,
        }
    }

    /// The header of the batch at `position` (below the log's size).
    pub(crate) fn header(&mut self, position: u32) -> Result<BatchHeader> {
        let in_window = position >= self.window_at
            && u64::from(position) + HEADER_LEN as u64
                <= u64::from(self.window_at) + self.window.len() as u64;
        if !in_window {
            let len = WALK_WINDOW.min(self.size.saturating_sub(position));
            if (len as usize) < HEADER_LEN {
                return Err(self
                    .files
                    .corrupt(position, "a batch header runs past the log's end"));
            }
            self.window = self.files.read_at(position, len)?;
            self.window_at = position;
        }
        let at = (position - self.window_at) as usize;
        BatchHeader::parse(&self.window[at..])
            .map_err(|e| self.files.corrupt(position, &e.to_string()))
    }
}

/// The segment that takes appends: its files stay open and its indexes have room.
pub(crate) struct ActiveSegment {
    pub meta: SegmentMeta,
    pub files: SegmentFiles,
    bytes_since_index_entry: u32,
    index_interval_bytes: u32,
    /// Where the zeros written ahead end: the file is `max(meta.size, runway_end)` long.
    runway_end: u64,
}

/// Zeros for [`ActiveSegment::extend_runway`] to write from.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

impl ActiveSegment {
    /// Creates a new, empty segment at `base_offset`, replacing any files of that name.
    pub fn create(
        dir: &Path,
        base_offset: Offset,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<ActiveSegment> {
        Self::create_with(dir, base_offset, "", config, now_ms)
    }

    /// [`Self::create`] with `suffix` after each file name: the cleaner writes a cleaned
    /// segment as `.cleaned` files beside the log's own.
    pub fn create_with(
        dir: &Path,
        base_offset: Offset,
        suffix: &str,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<ActiveSegment> {
        let paths = segment_paths_with(dir, base_offset, suffix);
        let log = open_rw(&paths[0], true)?;
        log.set_len(0).at("truncate", &paths[0])?;
        Self::with_fresh_indexes(paths, base_offset, log, config, now_ms)
    }

    /// Opens an existing segment's log with new, empty indexes, for [`Self::recover`] to
    /// fill from the log.
    pub fn for_recovery(
        dir: &Path,
        base_offset: Offset,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<ActiveSegment> {
        let paths = segment_paths(dir, base_offset);
        let log = open_rw(&paths[0], false)?;
        Self::with_fresh_indexes(paths, base_offset, log, config, now_ms)
    }

    fn with_fresh_indexes(
        [log_path, index_path, time_path]: [PathBuf; 3],
        base_offset: Offset,
        log: File,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<ActiveSegment> {
        let dir = log_path.parent().unwrap_or(Path::new("."));
        let (offset_capacity, time_capacity) = index_capacities(config);
        let indexes = IndexFile::create(IndexKind::Offset, &index_path, offset_capacity).and_then(
            |offset_index| {
                Ok((
                    offset_index,
                    IndexFile::create(IndexKind::Time, &time_path, time_capacity)?,
                ))
            },
        );
        let (offset_index, time_index) = match indexes {
            Ok(indexes) => indexes,
            Err(e) => {
                // Leave no half-made index behind (a full disk fails here); a new, empty
                // log goes too.
                for path in [&index_path, &time_path] {
                    let _ = fs::remove_file(path);
                }
                if log.metadata().map(|m| m.len() == 0).unwrap_or(false) {
                    let _ = fs::remove_file(&log_path);
                }
                return Err(e);
            }
        };
        sync_dir(dir)?;
        Ok(ActiveSegment {
            meta: SegmentMeta::empty(base_offset, now_ms),
            files: SegmentFiles {
                offset_index,
                time_index,
                log: Arc::new(log),
                log_path,
            },
            bytes_since_index_entry: 0,
            index_interval_bytes: config.index_interval_bytes,
            runway_end: 0,
        })
    }

    /// Reopens a sealed segment for appends (after a clean restart, or a truncation back
    /// into it): its indexes grow back to full capacity.
    pub fn reopen(
        meta: SegmentMeta,
        mut files: SegmentFiles,
        config: &LogConfig,
    ) -> Result<ActiveSegment> {
        let (offset_capacity, time_capacity) = index_capacities(config);
        files
            .offset_index
            .grow(offset_capacity.max(files.offset_index.len()))?;
        files
            .time_index
            .grow(time_capacity.max(files.time_index.len()))?;
        let last_indexed = files
            .offset_index
            .last_offset_entry()
            .map_or(0, |e| e.position);
        Ok(ActiveSegment {
            meta,
            files,
            bytes_since_index_entry: meta.size - last_indexed,
            index_interval_bytes: config.index_interval_bytes,
            runway_end: 0,
        })
    }

    /// Whether a batch of `len` bytes ending at `last_offset` must go to a new segment.
    pub fn must_roll(
        &self,
        config: &LogConfig,
        len: u32,
        last_offset: Offset,
        now_ms: i64,
    ) -> bool {
        if self.meta.is_empty() {
            return false;
        }
        self.meta.size as u64 + len as u64 > config.segment_bytes_max as u64
            || now_ms.saturating_sub(self.meta.rolling_base_ms) >= config.segment_roll_ms()
            || self.files.offset_index.is_full()
            || self.files.time_index.is_full()
            || self
                .meta
                .relative(last_offset)
                .is_none_or(|r| r > i32::MAX as u32)
    }

    /// Writes `parts` (together one batch described by `header`) at the end of the log with
    /// one `pwritev`, then indexes it. On a failed write the file is cut back to where it
    /// was, so the log stays a clean prefix and the next append can succeed.
    pub fn append(&mut self, parts: &[&[u8]], header: &BatchHeader) -> Result<()> {
        let position = self.meta.size;
        let len = header.total_len();
        debug_assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), len as usize);
        if let Err(e) = pwritev_all(&self.files.log, parts, u64::from(position)) {
            self.cut_file(u64::from(position))?;
            return Err(StorageError::io("write", &self.files.log_path, e));
        }
        self.index_batch(header, position);
        Ok(())
    }

    /// Updates metadata and indexes for a batch now at `position` (append and recovery).
    pub fn index_batch(&mut self, header: &BatchHeader, position: u32) {
        assert!(
            header.base_offset >= self.meta.next_offset,
            "offsets only grow: batch at {} after log end {}",
            header.base_offset,
            self.meta.next_offset
        );
        let len = header.total_len();
        if header.max_timestamp > self.meta.max_timestamp {
            self.meta.max_timestamp = header.max_timestamp;
        }
        if self.bytes_since_index_entry >= self.index_interval_bytes || position == 0 {
            let relative = self
                .meta
                .relative(header.base_offset)
                .expect("roll keeps offsets relative");
            // Full only in a cleaner's output grown past its input (dated batches): an
            // entry fewer makes lookups scan further, nothing worse. Appends roll first.
            if position > 0 && !self.files.offset_index.is_full() {
                self.files.offset_index.push_offset(OffsetEntry {
                    relative_offset: relative,
                    position,
                });
            }
            self.push_time_entry(relative);
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += len;
        self.meta.size = position + len;
        self.meta.next_offset = header.next_offset();
    }

    /// Adds a time entry for the segment's max timestamp if it grew since the last one.
    fn push_time_entry(&mut self, relative_offset: u32) {
        let index = &mut self.files.time_index;
        let grew = index
            .last_time_entry()
            .is_none_or(|e| self.meta.max_timestamp > e.timestamp);
        if grew && !index.is_full() && self.meta.max_timestamp != NO_TIMESTAMP {
            index.push_time(TimeEntry {
                timestamp: self.meta.max_timestamp,
                relative_offset,
            });
        }
    }

    /// Makes the segment read-only: a final time entry so the max timestamp survives a
    /// reopen, then both indexes trimmed to their entries and flushed.
    /// The runway goes too: without an fsync here, since the owner's next flush fdatasyncs
    /// the sealed file (a new size is metadata an fdatasync commits), and until that flush
    /// covers it recovery rescans the segment, where a tail of zeros in a segment that is no
    /// longer the last counts as damage and costs only what no flush had covered.
    pub fn seal(mut self) -> Result<(SegmentMeta, SegmentFiles)> {
        self.cut_runway()?;
        if let Some(relative) = self.meta.relative(self.meta.next_offset.plus(-1)) {
            if !self.meta.is_empty() {
                self.push_time_entry(relative);
            }
        }
        self.files.offset_index.trim()?;
        self.files.time_index.trim()?;
        Ok((self.meta, self.files))
    }

    /// Zeros written ahead of the last batch, that the next appends overwrite.
    pub fn runway(&self) -> u64 {
        self.runway_end.saturating_sub(u64::from(self.meta.size))
    }

    /// Writes zeros after the last batch (and any runway already there) until the file is
    /// `ahead` bytes longer than its batches, rounded up to a 4 KiB page and capped at
    /// `limit` bytes in all. Returns whether it wrote anything; the caller makes the new
    /// length durable (an fdatasync) for the appends into it to gain anything. On a failed
    /// write (a full disk) the runway is cut off again and the error returned: the log
    /// itself is unharmed.
    pub fn extend_runway(&mut self, ahead: u64, limit: u64) -> Result<bool> {
        let size = u64::from(self.meta.size);
        let from = self.runway_end.max(size);
        let to = (size + ahead).next_multiple_of(4096).min(limit);
        if to <= from {
            return Ok(false);
        }
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64) as usize;
            if let Err(e) = self.files.log.write_all_at(&ZEROS[..n], at) {
                self.cut_file(size)?;
                return Err(StorageError::io("write", &self.files.log_path, e));
            }
            at += n as u64;
        }
        self.runway_end = to;
        Ok(true)
    }

    /// Cuts the runway off (no fsync): the file ends at its last batch again.
    pub fn cut_runway(&mut self) -> Result<()> {
        if self.runway_end > u64::from(self.meta.size) {
            self.cut_file(u64::from(self.meta.size))?;
        }
        Ok(())
    }

    /// Sets the file's length to `len`, at or below the runway's start (which goes).
    fn cut_file(&mut self, len: u64) -> Result<()> {
        self.runway_end = 0;
        self.files
            .log
            .set_len(len)
            .at("truncate", &self.files.log_path)
    }

    /// Cuts the segment so that it ends before the batch containing `offset`. Returns the
    /// new end offset (the base of that batch, so possibly below `offset`).
    pub fn truncate_to(&mut self, offset: Offset) -> Result<Offset> {
        let position = self.files.position_of(&self.meta, offset)?;
        if position >= self.meta.size {
            // No batch holds `offset` or follows it. In a compacted log the segment may end
            // in a gap above `offset` (the cleaner removed its last records): the log then
            // ends at `offset`, as Kafka's truncateTo sets it, so a replica never keeps an
            // end above the offset it was cut to.
            if offset < self.meta.next_offset {
                self.meta.next_offset = offset.max(self.meta.base_offset);
            }
            return Ok(self.meta.next_offset);
        }
        // In a compacted log `offset` may fall in a gap before this batch: the log then
        // ends at `offset`, not past it.
        let new_end = self.files.header_at(position)?.base_offset.min(offset);
        self.cut_file(u64::from(position))?;
        let path = &self.files.log_path;
        self.files.log.sync_all().at("fsync", path)?;
        let relative = self
            .meta
            .relative(new_end)
            .expect("offset inside the segment");
        self.files.offset_index.truncate_offsets_from(relative);
        self.files.time_index.truncate_times_from(relative);
        // Recompute the metadata from what remains: the last index entries, then the
        // headers between the last offset entry and the cut.
        let last_indexed = self
            .files
            .offset_index
            .last_offset_entry()
            .map_or(0, |e| e.position);
        self.meta.size = position;
        self.meta.next_offset = new_end;
        self.meta.max_timestamp = self
            .files
            .time_index
            .last_time_entry()
            .map_or(NO_TIMESTAMP, |e| e.timestamp);
        let mut walk = self.files.headers(position);
        let mut at = last_indexed;
        while at < position {
            let header = walk.header(at)?;
            self.meta.max_timestamp = self.meta.max_timestamp.max(header.max_timestamp);
            at += header.total_len();
        }
        self.bytes_since_index_entry = position - last_indexed;
        if position == 0 {
            self.meta.max_timestamp = NO_TIMESTAMP;
        }
        Ok(new_end)
    }
}

/// Entries the offset and time indexes of a new segment need: one per index interval of a
/// full segment (plus the seal entry for time), within `index_bytes_max`.
fn index_capacities(config: &LogConfig) -> (u32, u32) {
    let per_segment = config.segment_bytes_max / config.index_interval_bytes.max(1) + 2;
    let cap = |entry_len: usize| {
        let by_bytes = (config.index_bytes_max as usize).saturating_sub(8) / entry_len;
        (per_segment as usize).min(by_bytes).max(2) as u32
    };
    (
        cap(IndexKind::Offset.entry_len()),
        cap(IndexKind::Time.entry_len()),
    )
}

/// What a recovery scan found.
pub(crate) struct Recovered {
    /// Where and why the log was cut, if it was.
    pub truncated: Option<(u32, String)>,
    /// (epoch, base offset) of every batch, in order, for the leader-epoch cache.
    pub epochs: Vec<(i32, Offset)>,
}

impl ActiveSegment {
    /// Rebuilds this (freshly created or reopened) segment's indexes from its log, checking
    /// every batch's framing and CRC; cuts the log at the first batch that fails and says
    /// where in a warning. In the log's `last` segment a tail of nothing but zeros is the
    /// runway an append never reached: cut without a word.
    pub fn recover(&mut self, log_len: u64, last: bool) -> Result<Recovered> {
        let mut out = Recovered {
            truncated: None,
            epochs: Vec::new(),
        };
        let log_len = u32::try_from(log_len).unwrap_or(u32::MAX);
        let mut position = 0u32;
        const CHUNK: u32 = 1 << 20;
        while position < log_len {
            let chunk = self
                .files
                .read_at(position, CHUNK.min(log_len - position))?;
            let mut used = 0usize;
            while used < chunk.len() {
                let at = position + used as u32;
                match self.check_batch_at(&chunk, used, at, log_len)? {
                    Scan::Batch(batch_bytes) => match self.take_batch(batch_bytes, at, &mut out) {
                        Ok(len) => used += len as usize,
                        Err(reason) => return self.cut(at, log_len, last, reason, out),
                    },
                    Scan::NeedMore => break,
                    Scan::Damaged(reason) => return self.cut(at, log_len, last, reason, out),
                }
            }
            if used == 0 {
                // A batch larger than the chunk: read it whole.
                let len = batch::peek_total_len(&chunk).ok().flatten().unwrap_or(0);
                let bytes = self.files.read_at(position, len)?;
                match self.take_batch(bytes, position, &mut out) {
                    Ok(len) => used = len as usize,
                    Err(reason) => return self.cut(position, log_len, last, reason, out),
                }
            }
            position += used as u32;
        }
        Ok(out)
    }

    /// Validates the whole batch found at `position` and indexes it; returns its length, or
    /// why recovery must cut the log there.
    fn take_batch(
        &mut self,
        bytes: Bytes,
        position: u32,
        out: &mut Recovered,
    ) -> std::result::Result<u32, String> {
        let batch = RecordBatch::validate(bytes).map_err(|e| e.to_string())?;
        let header = *batch.header();
        if header.base_offset < self.meta.next_offset {
            return Err(format!(
                "batch offset {} does not follow {}",
                header.base_offset, self.meta.next_offset
            ));
        }
        out.epochs
            .push((header.partition_leader_epoch.0, header.base_offset));
        self.index_batch(&header, position);
        Ok(header.total_len())
    }

    /// Classifies the bytes at `chunk[used..]` (log position `at`).
    fn check_batch_at(&self, chunk: &Bytes, used: usize, at: u32, log_len: u32) -> Result<Scan> {
        let rest = &chunk[used..];
        let len = match batch::peek_total_len(rest) {
            Ok(Some(len)) => len,
            Ok(None) if u64::from(at) + (rest.len() as u64) < u64::from(log_len) => {
                return Ok(Scan::NeedMore)
            }
            Ok(None) => return Ok(Scan::Damaged("torn batch header at the end".into())),
            Err(e) => return Ok(Scan::Damaged(e.to_string())),
        };
        if u64::from(at) + u64::from(len) > u64::from(log_len) {
            return Ok(Scan::Damaged(format!(
                "torn batch: {len} bytes claimed, {} left in the file",
                log_len - at
            )));
        }
        if len as usize > rest.len() {
            return Ok(Scan::NeedMore);
        }
        Ok(Scan::Batch(chunk.slice(used..used + len as usize)))
    }

    fn cut(
        &mut self,
        position: u32,
        log_len: u32,
        last: bool,
        reason: String,
        mut out: Recovered,
    ) -> Result<Recovered> {
        if last && self.zeros_between(position, log_len)? {
            // The runway: nothing was written there, so nothing is lost. Cut it (no fsync:
            // zeros found again after another crash are the runway again).
            self.cut_file(u64::from(position))?;
            return Ok(out);
        }
        tracing::warn!(
            file = %self.files.log_path.display(),
            position,
            "recovery: {reason}; truncating the log here (everything before is kept)"
        );
        self.cut_file(u64::from(position))?;
        let path = &self.files.log_path;
        self.files.log.sync_all().at("fsync", path)?;
        out.truncated = Some((position, reason));
        Ok(out)
    }

    /// Whether the log holds nothing but zero bytes from `from` to `to`.
    fn zeros_between(&self, from: u32, to: u32) -> Result<bool> {
        const CHUNK: u32 = 1 << 20;
        let mut at = from;
        while at < to {
            let bytes = self.files.read_at(at, CHUNK.min(to - at))?;
            if bytes.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += bytes.len() as u32;
        }
        Ok(true)
    }
}

enum Scan {
    Batch(Bytes),
    NeedMore,
    Damaged(String),
}

/// Writes all of `parts` at `position` with `pwritev`, continuing after partial writes.
fn pwritev_all(file: &File, parts: &[&[u8]], mut position: u64) -> std::io::Result<()> {
    let mut slices: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    while !slices.is_empty() {
        let iov: Vec<libc::iovec> = slices
            .iter()
            .take(libc::UIO_MAXIOV as usize)
            .map(|s| libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            })
            .collect();
        // SAFETY: every iovec points into a live slice borrowed for the whole call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                position as libc::off_t,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        position += n as u64;
        let mut written = n as usize;
        while written > 0 {
            if written >= slices[0].len() {
                written -= slices[0].len();
                slices.remove(0);
            } else {
                slices[0] = &slices[0][written..];
                written = 0;
            }
        }
    }
    Ok(())
}
