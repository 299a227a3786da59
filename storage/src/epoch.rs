//! The leader-epoch cache: for each leader epoch that wrote to this log, the offset of its
//! first batch. Followers ask the leader "where does my latest epoch end in your log?" and
//! truncate to the answer (KIP-101, KIP-279), which this cache computes.
//!
//! Persisted in `leader-epoch-checkpoint` (magic `SLEP`, version 1, count `u32`, entries of
//! epoch `i32` + start offset `i64`, CRC-32C), rewritten atomically on every change; changes
//! happen once per leader change, never per append.

use std::path::{Path, PathBuf};

use sluice_protocol::{LeaderEpoch, Offset};

use crate::error::{Result, StorageError};
use crate::file::{read_checkpoint, write_checkpoint, FileHeader};

const HEADER: FileHeader = FileHeader {
    magic: *b"SLEP",
    version: 1,
};
pub(crate) const FILE_NAME: &str = "leader-epoch-checkpoint";

/// An epoch and the offset of its first batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: Offset,
}

/// Epoch -> start offset, strictly increasing in both, persisted on every change.
pub(crate) struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Loads the checkpoint in `dir`; `Ok(None)` when it is missing or damaged (the caller
    /// rebuilds it from the batches in the log, which carry their epochs).
    pub fn load(dir: &Path) -> Result<Option<LeaderEpochCache>> {
        let path = dir.join(FILE_NAME);
        let bytes = match read_checkpoint(&path, "leader-epoch checkpoint") {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e @ StorageError::BadFile { .. }) => {
                tracing::warn!("{e}; rebuilding it from the log");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match decode(&bytes, &path) {
            Ok(entries) => Ok(Some(LeaderEpochCache { path, entries })),
            Err(e) => {
                tracing::warn!("{e}; rebuilding it from the log");
                Ok(None)
            }
        }
    }

    /// An empty cache that will persist to `dir`.
    pub fn empty(dir: &Path) -> LeaderEpochCache {
        LeaderEpochCache {
            path: dir.join(FILE_NAME),
            entries: Vec::new(),
        }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`, if it is newer than the latest epoch.
    /// Returns whether the cache changed. Negative epochs (unknown) are not recorded. An
    /// entry that starts at or after `start_offset` contradicts the log and goes (as in
    /// Kafka), which only a damaged checkpoint can cause.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> Result<bool> {
        if epoch.0 < 0 || self.latest().is_some_and(|latest| epoch <= latest.epoch) {
            return Ok(false);
        }
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < start_offset);
        if keep < self.entries.len() {
            tracing::warn!(
                path = %self.path.display(),
                "epoch {epoch} starts at {start_offset}, before cached epochs {:?}; dropping those",
                &self.entries[keep..]
            );
            self.entries.truncate(keep);
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.persist()?;
        Ok(true)
    }

    /// For a follower whose latest epoch is `epoch`: the largest epoch <= `epoch` this log
    /// knows, and the offset where it ends (the start of the next epoch, or `log_end` for the
    /// latest). `None` when `epoch` is older than every epoch here (Kafka's UNDEFINED).
    pub fn end_offset_for(
        &self,
        epoch: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        let found = self.entries.get(i.checked_sub(1)?)?;
        let end = self
            .entries
            .get(i)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// Forgets epochs that start at or after `end` (the log was truncated to `end`).
    pub fn truncate_from_end(&mut self, end: Offset) -> Result<()> {
        let keep = self.entries.partition_point(|e| e.start_offset < end);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.persist()?;
        }
        Ok(())
    }

    /// The log now starts at `start`: epochs that ended before it go, and the epoch in force
    /// at `start` now starts there.
    pub fn truncate_from_start(&mut self, start: Offset) -> Result<()> {
        let before = self.entries.partition_point(|e| e.start_offset <= start);
        if before == 0 {
            return Ok(());
        }
        let changed = before > 1 || self.entries[0].start_offset != start;
        if changed {
            self.entries.drain(..before - 1);
            self.entries[0].start_offset = start;
            self.persist()?;
        }
        Ok(())
    }

    /// As [`Self::truncate_from_start`], in memory only: the checkpoint keeps the older
    /// entries until the next change is persisted or the log is opened again (open trims
    /// them to the log start). What retention uses, so deleting segments costs no fsync;
    /// an entry below the log start answers no lookup differently.
    pub fn trim_start(&mut self, start: Offset) {
        let before = self.entries.partition_point(|e| e.start_offset <= start);
        if before == 0 {
            return;
        }
        self.entries.drain(..before - 1);
        self.entries[0].start_offset = start;
    }

    /// Replaces every entry (rebuild after damage).
    pub fn reset(&mut self, entries: Vec<EpochEntry>) -> Result<()> {
        self.entries = entries;
        self.persist()
    }

    fn persist(&self) -> Result<()> {
        let mut buf = Vec::with_capacity(FileHeader::LEN + 4 + self.entries.len() * 12);
        HEADER.write_to(&mut buf);
        buf.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            buf.extend_from_slice(&e.epoch.0.to_be_bytes());
            buf.extend_from_slice(&e.start_offset.0.to_be_bytes());
        }
        write_checkpoint(&self.path, &buf)
    }
}

fn decode(bytes: &[u8], path: &Path) -> Result<Vec<EpochEntry>> {
    HEADER.check(bytes, path, "leader-epoch checkpoint")?;
    let bad = |reason: String| StorageError::BadFile {
        path: path.to_path_buf(),
        what: "leader-epoch checkpoint",
        reason,
    };
    let body = &bytes[FileHeader::LEN..];
    if body.len() < 4 {
        return Err(bad("missing entry count".into()));
    }
    let count = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
    let entries = &body[4..];
    if entries.len() != count * 12 {
        return Err(bad(format!(
            "{count} entries do not fill {} bytes",
            entries.len()
        )));
    }
    let mut out: Vec<EpochEntry> = Vec::with_capacity(count);
    for chunk in entries.chunks_exact(12) {
        let epoch = i32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut start = [0u8; 8];
        start.copy_from_slice(&chunk[4..12]);
        let entry = EpochEntry {
            epoch: LeaderEpoch(epoch),
            start_offset: Offset(i64::from_be_bytes(start)),
        };
        if let Some(prev) = out.last() {
            if entry.epoch <= prev.epoch || entry.start_offset < prev.start_offset {
                return Err(bad(format!("entry {entry:?} does not follow {prev:?}")));
            }
        }
        out.push(entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = LeaderEpochCache::empty(dir.path());
        for &(e, o) in entries {
            c.assign(LeaderEpoch(e), Offset(o)).unwrap();
        }
        (dir, c)
    }

    #[test]
    fn end_offset_for_epoch_follows_kafka() {
        let (_dir, c) = cache(&[(1, 0), (3, 10), (4, 25)]);
        let check = |epoch: i32, want: Option<(i32, i64)>| {
            let got = c.end_offset_for(LeaderEpoch(epoch), Offset(40));
            assert_eq!(
                got,
                want.map(|(e, o)| (LeaderEpoch(e), Offset(o))),
                "epoch {epoch}"
            );
        };
        check(0, None);
        check(1, Some((1, 10)));
        check(2, Some((1, 10)));
        check(3, Some((3, 25)));
        check(4, Some((4, 40)));
        check(9, Some((4, 40)));
    }

    #[test]
    fn persists_and_truncates() {
        let (dir, mut c) = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert!(
            !c.assign(LeaderEpoch(2), Offset(30)).unwrap(),
            "older epochs are ignored"
        );
        c.truncate_from_end(Offset(25)).unwrap();
        c.truncate_from_start(Offset(12)).unwrap();
        let loaded = LeaderEpochCache::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            loaded.entries(),
            &[EpochEntry {
                epoch: LeaderEpoch(3),
                start_offset: Offset(12)
            }]
        );
    }

    #[test]
    fn damaged_checkpoint_loads_as_missing() {
        let (dir, _c) = cache(&[(1, 0)]);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[6] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(LeaderEpochCache::load(dir.path()).unwrap().is_none());
    }
}
