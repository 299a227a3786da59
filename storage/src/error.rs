//! The one error type of the storage crate.

use std::io;
use std::path::{Path, PathBuf};

use sluice_protocol::Offset;

/// Why a storage operation failed. Operating errors (bad batches, full disks, offsets out
/// of range) are values; the log stays usable after each of them.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The batch given to `append` is not a valid RecordBatch v2.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] sluice_protocol::Error),
    /// The filesystem holding the log is full. Nothing partial was left behind.
    #[error(
        "the disk holding {path} is full; free space or add disk, then retry (nothing was written)"
    )]
    DiskFull { path: PathBuf },
    /// Any other I/O failure, with the operation and the file it concerned.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A read or lookup asked for an offset the log does not hold.
    #[error("offset {requested} is out of range: the log holds offsets {log_start} to {log_end} (exclusive)")]
    OffsetOutOfRange {
        requested: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    /// A follower append that does not continue the log where it ends.
    #[error("follower append at offset {got} does not continue the log, which ends at {expected} (a batch may start past the end, where compaction left a gap, never before it)")]
    NonContiguousAppend { expected: Offset, got: Offset },
    /// A leader append with an epoch older than one the log already holds.
    #[error("leader epoch {got} is older than the log's latest epoch {latest}")]
    StaleLeaderEpoch { got: i32, latest: i32 },
    /// A batch larger than a whole segment may hold.
    #[error("a record batch of {size} bytes exceeds the segment size limit of {max} bytes; raise segment.bytes or send smaller batches")]
    BatchTooLarge { size: u32, max: u32 },
    /// The log was retired (its topic deleted); nothing more may be written to it.
    #[error("the log in {path} was deleted")]
    Deleted { path: PathBuf },
    /// A log cleaner run was stopped by its owner (shutdown); nothing in the log changed.
    #[error("cleaning of the log in {path} was stopped (the broker is shutting down); it resumes at the next start")]
    CleanerStopped { path: PathBuf },
    /// A file of our own format that cannot be used (wrong magic, version or checksum).
    #[error("{path} is not a usable {what}: {reason}")]
    BadFile {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
}

/// Result of every fallible storage operation.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// Wraps an I/O error, recognising a full disk (ENOSPC, EDQUOT) as [`StorageError::DiskFull`].
    pub fn io(op: &'static str, path: &Path, source: io::Error) -> StorageError {
        if is_disk_full(&source) {
            StorageError::DiskFull {
                path: path.to_path_buf(),
            }
        } else {
            StorageError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// True for a full disk: the condition that goes away once space is freed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Adds the operation and path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| StorageError::io(op, path, e))
    }
}
