//! The two sparse, memory-mapped, preallocated indexes of a segment.
//!
//! - Offset index (`.index`): relative offset `u32` -> file position `u32`, one entry per
//!   `index_interval_bytes` of log, so a read finds its batch with a binary search and a
//!   short scan.
//! - Time index (`.timeindex`): timestamp `i64` -> relative offset `u32`, an entry whenever
//!   the segment's largest timestamp grows at an index point, for offset-by-timestamp
//!   lookups.
//!
//! File layout: an 8-byte header (magic, version, 3 reserved bytes), then fixed-size entries
//! big-endian. The active segment's file is preallocated (real blocks, see
//! [`crate::file::reserve`]) to its capacity; a sealed segment's is trimmed to its entries,
//! which is how a reopen knows how many there are. Indexes are derived data: any file that
//! fails its sanity check is rebuilt from the log.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{IoContext, Result, StorageError};
use crate::file::{open_rw, reserve, FileHeader};

const HEADER_LEN: usize = 8;
const VERSION: u8 = 1;

/// Which of the two index formats a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexKind {
    Offset,
    Time,
}

impl IndexKind {
    fn header(self) -> FileHeader {
        FileHeader {
            magic: match self {
                IndexKind::Offset => *b"SLOI",
                IndexKind::Time => *b"SLTI",
            },
            version: VERSION,
        }
    }

    /// Bytes per entry.
    pub fn entry_len(self) -> usize {
        match self {
            IndexKind::Offset => 8,
            IndexKind::Time => 12,
        }
    }

    fn what(self) -> &'static str {
        match self {
            IndexKind::Offset => "offset index",
            IndexKind::Time => "time index",
        }
    }
}

/// One memory-mapped index file.
pub(crate) struct IndexFile {
    kind: IndexKind,
    path: PathBuf,
    file: File,
    mmap: MmapMut,
    n_entries: u32,
    capacity: u32,
}

impl IndexFile {
    /// Creates (or recreates, empty) an index with room for `capacity` entries.
    pub fn create(kind: IndexKind, path: &Path, capacity: u32) -> Result<IndexFile> {
        let file = open_rw(path, true)?;
        file.set_len(0).at("truncate", path)?;
        let mut index = IndexFile::map(kind, path, file, 0)?;
        index.grow(capacity)?;
        Ok(index)
    }

    /// Opens an existing, trimmed index: its entries are whatever the file holds. Fails
    /// (and the caller rebuilds) when the header is wrong or the size is not whole entries.
    pub fn open(kind: IndexKind, path: &Path) -> Result<IndexFile> {
        let file = open_rw(path, false)?;
        let len = file.metadata().at("stat", path)?.len();
        let body = len.saturating_sub(HEADER_LEN as u64);
        if len < HEADER_LEN as u64 || body % kind.entry_len() as u64 != 0 {
            return Err(StorageError::BadFile {
                path: path.to_path_buf(),
                what: kind.what(),
                reason: format!("size {len} is not a header plus whole entries"),
            });
        }
        let n_entries =
            u32::try_from(body / kind.entry_len() as u64).map_err(|_| StorageError::BadFile {
                path: path.to_path_buf(),
                what: kind.what(),
                reason: "too many entries".into(),
            })?;
        let index = IndexFile::map(kind, path, file, n_entries)?;
        kind.header().check(&index.mmap, path, kind.what())?;
        Ok(index)
    }

    fn map(kind: IndexKind, path: &Path, file: File, n_entries: u32) -> Result<IndexFile> {
        if file.metadata().at("stat", path)?.len() < HEADER_LEN as u64 {
            let mut header = Vec::with_capacity(HEADER_LEN);
            kind.header().write_to(&mut header);
            header.resize(HEADER_LEN, 0);
            std::os::unix::fs::FileExt::write_all_at(&file, &header, 0).at("write", path)?;
        }
        // SAFETY: the file is ours alone (one PartitionLog per directory) and is never
        // shrunk below the mapped length while the map lives: trim() and grow() remap.
        let mmap = unsafe { MmapMut::map_mut(&file) }.at("mmap", path)?;
        Ok(IndexFile {
            kind,
            path: path.to_path_buf(),
            file,
            n_entries,
            capacity: n_entries,
            mmap,
        })
    }

    /// Grows the file (with reserved blocks) to hold `capacity` entries and remaps it.
    pub fn grow(&mut self, capacity: u32) -> Result<()> {
        let len = HEADER_LEN as u64 + u64::from(capacity) * self.kind.entry_len() as u64;
        reserve(&self.file, len, &self.path)?;
        self.remap()?;
        self.capacity = capacity;
        Ok(())
    }

    /// Shrinks the file to exactly its entries (done when a segment is sealed or closed),
    /// after flushing the map so the entries are on disk.
    pub fn trim(&mut self) -> Result<()> {
        self.mmap.flush().at("msync", &self.path)?;
        let len = HEADER_LEN as u64 + u64::from(self.n_entries) * self.kind.entry_len() as u64;
        // Map a fresh, smaller view first: a map must never outlive the bytes it covers.
        self.file.set_len(len).at("truncate", &self.path)?;
        self.remap()?;
        self.capacity = self.n_entries;
        Ok(())
    }

    fn remap(&mut self) -> Result<()> {
        // SAFETY: as in map(): the file is ours and at least as long as the new map.
        self.mmap = unsafe { MmapMut::map_mut(&self.file) }.at("mmap", &self.path)?;
        Ok(())
    }

    pub fn len(&self) -> u32 {
        self.n_entries
    }

    pub fn is_full(&self) -> bool {
        self.n_entries >= self.capacity
    }

    fn entry(&self, i: u32) -> &[u8] {
        let len = self.kind.entry_len();
        let at = HEADER_LEN + i as usize * len;
        &self.mmap[at..at + len]
    }

    fn push(&mut self, entry: &[u8]) {
        assert!(!self.is_full(), "index {} is full", self.path.display());
        let at = HEADER_LEN + self.n_entries as usize * entry.len();
        self.mmap[at..at + entry.len()].copy_from_slice(entry);
        self.n_entries += 1;
    }

    /// Forgets entries from `n` on (truncation).
    pub fn truncate_entries(&mut self, n: u32) {
        self.n_entries = self.n_entries.min(n);
    }

    /// Index of the last entry whose key is <= `key` (by `key_of`), if any. Entries are
    /// sorted by key, so this is a binary search.
    fn floor(&self, key: i64, key_of: impl Fn(&[u8]) -> i64) -> Option<u32> {
        let (mut lo, mut hi) = (0u32, self.n_entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if key_of(self.entry(mid)) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

/// Entry of the offset index: a batch starting at `relative_offset` begins at `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// Entry of the time index: records up to `timestamp` exist at or before `relative_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl IndexFile {
    fn offset_entry(&self, i: u32) -> OffsetEntry {
        debug_assert_eq!(self.kind, IndexKind::Offset);
        let e = self.entry(i);
        OffsetEntry {
            relative_offset: be_u32(&e[0..4]),
            position: be_u32(&e[4..8]),
        }
    }

    fn time_entry(&self, i: u32) -> TimeEntry {
        debug_assert_eq!(self.kind, IndexKind::Time);
        let e = self.entry(i);
        TimeEntry {
            timestamp: be_i64(&e[0..8]),
            relative_offset: be_u32(&e[8..12]),
        }
    }

    /// Appends an offset entry. Entries must grow strictly (asserted).
    pub fn push_offset(&mut self, entry: OffsetEntry) {
        if let Some(last) = self.last_offset_entry() {
            assert!(
                entry.relative_offset > last.relative_offset && entry.position > last.position,
                "offset index entries must grow: {last:?} then {entry:?}"
            );
        }
        let mut bytes = [0u8; 8];
        bytes[0..4].copy_from_slice(&entry.relative_offset.to_be_bytes());
        bytes[4..8].copy_from_slice(&entry.position.to_be_bytes());
        self.push(&bytes);
    }

    /// Appends a time entry. Timestamps and offsets must not go backwards (asserted).
    pub fn push_time(&mut self, entry: TimeEntry) {
        if let Some(last) = self.last_time_entry() {
            assert!(
                entry.timestamp > last.timestamp && entry.relative_offset >= last.relative_offset,
                "time index entries must grow: {last:?} then {entry:?}"
            );
        }
        let mut bytes = [0u8; 12];
        bytes[0..8].copy_from_slice(&entry.timestamp.to_be_bytes());
        bytes[8..12].copy_from_slice(&entry.relative_offset.to_be_bytes());
        self.push(&bytes);
    }

    pub fn last_offset_entry(&self) -> Option<OffsetEntry> {
        self.n_entries.checked_sub(1).map(|i| self.offset_entry(i))
    }

    pub fn last_time_entry(&self) -> Option<TimeEntry> {
        self.n_entries.checked_sub(1).map(|i| self.time_entry(i))
    }

    /// The last offset entry at or before `relative_offset`.
    pub fn lookup_offset(&self, relative_offset: u32) -> Option<OffsetEntry> {
        self.floor(i64::from(relative_offset), |e| i64::from(be_u32(&e[0..4])))
            .map(|i| self.offset_entry(i))
    }

    /// The last offset entry at or before `position` of the log.
    pub fn lookup_position(&self, position: u32) -> Option<OffsetEntry> {
        self.floor(i64::from(position), |e| i64::from(be_u32(&e[4..8])))
            .map(|i| self.offset_entry(i))
    }

    /// The last time entry with a timestamp at or before `timestamp`.
    pub fn lookup_time(&self, timestamp: i64) -> Option<TimeEntry> {
        self.floor(timestamp, |e| be_i64(&e[0..8]))
            .map(|i| self.time_entry(i))
    }

    /// Drops offset entries at or after `relative_offset`.
    pub fn truncate_offsets_from(&mut self, relative_offset: u32) {
        let keep = match relative_offset.checked_sub(1) {
            Some(r) => self.floor(i64::from(r), |e| i64::from(be_u32(&e[0..4]))),
            None => None,
        };
        self.truncate_entries(keep.map_or(0, |i| i + 1));
    }

    /// Drops time entries whose offset is at or after `relative_offset`.
    pub fn truncate_times_from(&mut self, relative_offset: u32) {
        let mut n = self.n_entries;
        while n > 0 && self.time_entry(n - 1).relative_offset >= relative_offset {
            n -= 1;
        }
        self.truncate_entries(n);
    }

    /// Kafka-style sanity check of an index read from disk: entries strictly increasing, and
    /// (offset index) every position inside the log of `log_size` bytes.
    pub fn check(&self, log_size: u32) -> std::result::Result<(), String> {
        for i in 1..self.n_entries {
            match self.kind {
                IndexKind::Offset => {
                    let (a, b) = (self.offset_entry(i - 1), self.offset_entry(i));
                    if b.relative_offset <= a.relative_offset || b.position <= a.position {
                        return Err(format!("entry {i} ({b:?}) does not follow {a:?}"));
                    }
                }
                IndexKind::Time => {
                    let (a, b) = (self.time_entry(i - 1), self.time_entry(i));
                    if b.timestamp <= a.timestamp || b.relative_offset < a.relative_offset {
                        return Err(format!("entry {i} ({b:?}) does not follow {a:?}"));
                    }
                }
            }
        }
        if self.kind == IndexKind::Offset {
            let Some(last) = self.last_offset_entry() else {
                return Ok(());
            };
            if last.position >= log_size {
                return Err(format!(
                    "last entry points at position {} past the log's {log_size} bytes",
                    last.position
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_trim_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = IndexFile::create(IndexKind::Offset, &path, 4).unwrap();
        assert_eq!(index.lookup_offset(10), None);
        for (r, p) in [(5, 100), (10, 200), (20, 400)] {
            index.push_offset(OffsetEntry {
                relative_offset: r,
                position: p,
            });
        }
        let pos = |index: &IndexFile, r| index.lookup_offset(r).map(|e| e.position);
        assert_eq!(pos(&index, 4), None);
        assert_eq!(pos(&index, 5), Some(100));
        assert_eq!(pos(&index, 19), Some(200));
        assert_eq!(pos(&index, 1000), Some(400));
        index.trim().unwrap();
        drop(index);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8 + 3 * 8);
        let mut index = IndexFile::open(IndexKind::Offset, &path).unwrap();
        assert_eq!(index.len(), 3);
        assert!(index.check(401).is_ok());
        assert!(
            index.check(400).is_err(),
            "an entry at the log's end is past it"
        );
        index.truncate_offsets_from(10);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn time_index_lookup_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let mut index =
            IndexFile::create(IndexKind::Time, &dir.path().join("0.timeindex"), 8).unwrap();
        for (t, r) in [(100, 0), (200, 3), (300, 9)] {
            index.push_time(TimeEntry {
                timestamp: t,
                relative_offset: r,
            });
        }
        assert_eq!(index.lookup_time(99), None);
        assert_eq!(index.lookup_time(250).unwrap().relative_offset, 3);
        index.truncate_times_from(3);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn open_rejects_foreign_or_torn_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        std::fs::write(&path, b"NOPE\x01\0\0\0").unwrap();
        assert!(IndexFile::open(IndexKind::Offset, &path).is_err());
        std::fs::write(&path, b"SLOI\x01\0\0\0\0\0\0").unwrap();
        assert!(IndexFile::open(IndexKind::Offset, &path).is_err());
        std::fs::write(&path, b"SLOI\x09\0\0\0").unwrap();
        assert!(IndexFile::open(IndexKind::Offset, &path).is_err());
    }
}
