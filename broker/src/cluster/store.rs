//! Durable storage of the controller's Raft group, in one directory (the broker passes
//! `<data_dir>/controller`): the metadata log with the vote and the log pointers
//! ([`LogStore`]), and the state machine with its snapshots ([`StateMachineStore`]).
//! [`open`] loads both.
//!
//! Files, each starting with 4 magic bytes and a version byte (DESIGN §5):
//!
//! - `raft-state` (`SLRS`, v1): the vote, the last committed and the last purged log ids as
//!   JSON, then a CRC-32C of everything before it. Replaced atomically (temp file, fsync,
//!   rename, fsync of the directory) before `save_vote`, `save_committed` or `purge` returns.
//! - `metadata.log` (`SLML`, v1): the log, append-only: records of `u32` length, `u32`
//!   CRC-32C of the payload, payload (big-endian; the payload is one openraft `Entry` as
//!   JSON), log indexes strictly increasing. An append is fdatasync'ed before openraft is
//!   told it is flushed, so an acknowledged entry survives SIGKILL and power loss. On open, a
//!   torn or corrupt last record (a crash mid-append: never acknowledged) is cut with a
//!   warning; damage before the last record is an error naming the file and the position.
//! - `snapshot` (`SLSN`, v1): the `u32` length of the snapshot meta, the meta as JSON, the
//!   [`MetadataImage`] as JSON (the snapshot data openraft ships to followers), then a
//!   CRC-32C. Replaced atomically.
//!
//! The state machine is not written on apply: on open it is the latest snapshot, and openraft
//! re-applies the log from there up to the saved committed index when the Raft starts, so a
//! restarted node has its image back without waiting for a leader. The log is also kept in
//! memory (snapshots keep it short), so reads never touch the disk. File I/O runs on tokio's
//! blocking pool, awaited by the openraft call that needs it done.

use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, BasicNode, EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, StorageIOError,
};
use serde::{Deserialize, Serialize};
use sluice_storage::{replace_durably, DurableFile, FileHeader};
use tokio::sync::watch;

use super::image::{CommandResult, MetadataImage};
use super::raft::{Applied, NodeId, TypeConfig};
use crate::error::BrokerError;

#[cfg(test)]
mod tests;

type Entry = openraft::Entry<TypeConfig>;
type LogId = openraft::LogId<NodeId>;
type Vote = openraft::Vote<NodeId>;
type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
type StorageError = openraft::StorageError<NodeId>;

/// Name of the vote and log pointers file.
pub const STATE_FILE: &str = "raft-state";
/// Name of the log file.
pub const LOG_FILE: &str = "metadata.log";
/// Name of the snapshot file.
pub const SNAPSHOT_FILE: &str = "snapshot";

const STATE_HEADER: FileHeader = FileHeader {
    magic: *b"SLRS",
    version: 1,
};
const LOG_HEADER: FileHeader = FileHeader {
    magic: *b"SLML",
    version: 1,
};
const SNAPSHOT_HEADER: FileHeader = FileHeader {
    magic: *b"SLSN",
    version: 1,
};
/// How the small files are named in errors.
const STATE_WHAT: &str = "controller raft-state";
const SNAPSHOT_WHAT: &str = "controller snapshot";

/// Bytes before a record's payload: length and CRC-32C, each a `u32`.
const RECORD_HEADER_BYTES: u64 = 8;
/// The largest record payload written or read. A metadata command or a membership is a few
/// KiB; the bound keeps a damaged length field from asking for gigabytes.
const RECORD_BYTES_MAX: u32 = 16 << 20;

/// Opens (creating if needed) the controller's storage in `dir`: the log store and the state
/// machine, which publishes every applied batch on `applied` (and, right away, the image of
/// the latest snapshot, if there is one).
pub fn open(
    dir: &Path,
    applied: watch::Sender<Applied>,
) -> Result<(LogStore, StateMachineStore), BrokerError> {
    create_dir_durably(dir)?;
    let durable = load_durable_state(dir)?;
    let snapshot = load_snapshot(dir)?;
    check_purge_covered(dir, &durable, snapshot.as_ref().map(|(s, _)| s))?;
    let log = LogStore::open(dir, durable)?;
    let state_machine = StateMachineStore::open(dir, snapshot, applied);
    Ok((log, state_machine))
}

/// Creates `dir` and makes its entry in the parent durable: a vote saved inside a directory
/// that a crash then forgets would be a vote lost.
fn create_dir_durably(dir: &Path) -> Result<(), BrokerError> {
    fs::create_dir_all(dir).map_err(|e| BrokerError::io("create directory", dir, e))?;
    let parent = dir.parent().unwrap_or(Path::new("."));
    sync_dir(parent).map_err(BrokerError::from)
}

/// openraft purges only entries a snapshot covers, but it purges the log while the state
/// machine task may still be writing a snapshot received from the leader. A crash in between
/// leaves a log purged past the latest durable snapshot: the entries in between are gone from
/// this node, and it cannot rebuild its image. Refuse to start rather than fail later.
fn check_purge_covered(
    dir: &Path,
    durable: &DurableState,
    snapshot: Option<&StoredSnapshot>,
) -> Result<(), BrokerError> {
    let Some(purged) = durable.last_purged else {
        return Ok(());
    };
    let covered = snapshot.and_then(|s| s.meta.last_log_id).map(|id| id.index);
    if covered.is_some_and(|covered| covered >= purged.index) {
        return Ok(());
    }
    Err(BrokerError::DataDir(format!(
        "{}: the controller log is purged up to index {} but the latest snapshot covers only \
         up to {} (a crash while installing a snapshot from the leader?); this node lost \
         metadata entries: move {} away and add the node to the controller quorum again",
        dir.display(),
        purged.index,
        covered.map_or("nothing".to_string(), |i| format!("index {i}")),
        dir.display()
    )))
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// A failed file operation: what was being done, to which file, and the OS error.
#[derive(Debug)]
pub struct FileError {
    what: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.what, self.path.display(), self.source)
    }
}

impl FileError {
    /// A failure that is not the OS's, on `path`.
    fn other(path: &Path, reason: &str) -> FileError {
        FileError {
            what: "write",
            path: path.to_path_buf(),
            source: io::Error::other(reason.to_string()),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<FileError> for BrokerError {
    fn from(e: FileError) -> BrokerError {
        BrokerError::io(e.what, &e.path, e.source)
    }
}

/// Names the operation and the file of an I/O error.
trait At<T> {
    fn at(self, what: &'static str, path: &Path) -> Result<T, FileError>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, what: &'static str, path: &Path) -> Result<T, FileError> {
        self.map_err(|source| FileError {
            what,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A storage-layer failure on `path` as the store's error.
fn storage_failed(path: &Path, e: sluice_storage::StorageError) -> FileError {
    FileError {
        what: "write",
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    }
}

/// Makes a directory's entries (created, renamed files) durable.
fn sync_dir(dir: &Path) -> Result<(), FileError> {
    sluice_storage::sync_dir(dir).map_err(|e| storage_failed(dir, e))
}

/// Replaces `path` with `content` so that a crash leaves either the old or the new file.
fn replace_file(path: &Path, content: &[u8]) -> Result<(), FileError> {
    replace_durably(path, content).map_err(|e| storage_failed(path, e))
}

/// One of the store's small files (`raft-state`, `snapshot`): storage's durable-file
/// layer (magic, version, body, CRC-32C; replaced atomically and durably).
fn small_file(path: &Path, header: FileHeader, what: &'static str) -> DurableFile {
    DurableFile::new(path, header.magic, header.version, what)
}

/// Replaces `path` atomically with `header`, `body` and a CRC-32C of both.
fn write_checkpoint(
    path: &Path,
    header: FileHeader,
    what: &'static str,
    body: &[u8],
) -> Result<(), FileError> {
    small_file(path, header, what)
        .write(body)
        .map_err(|e| storage_failed(path, e))
}

/// Reads a file written by [`write_checkpoint`] and returns its body, or `None` if the file
/// does not exist. A wrong header or checksum is an error naming the file: these files are
/// only ever replaced by rename, so a damaged one is damage, never a torn write.
fn read_checkpoint(
    path: &Path,
    header: FileHeader,
    what: &'static str,
) -> Result<Option<Vec<u8>>, BrokerError> {
    small_file(path, header, what).read().map_err(|e| match e {
        sluice_storage::StorageError::BadFile { reason, .. } => damaged(path, &reason),
        other => BrokerError::DataDir(other.to_string()),
    })
}

/// The error for a damaged controller file: what is wrong and what the operator can do.
fn damaged(path: &Path, reason: &str) -> BrokerError {
    BrokerError::DataDir(format!(
        "{} is damaged ({reason}); restore it from a backup, or move the controller \
         directory away and add this node to the controller quorum again",
        path.display()
    ))
}

// ---------------------------------------------------------------------------------------
// Vote and log pointers
// ---------------------------------------------------------------------------------------

/// The contents of `raft-state`: what openraft must find again after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DurableState {
    /// The last vote saved.
    vote: Option<Vote>,
    /// The last committed log id saved (re-applied at start).
    committed: Option<LogId>,
    /// Entries up to this one are purged (covered by a snapshot).
    last_purged: Option<LogId>,
}

fn load_durable_state(dir: &Path) -> Result<DurableState, BrokerError> {
    let path = dir.join(STATE_FILE);
    let Some(body) = read_checkpoint(&path, STATE_HEADER, STATE_WHAT)? else {
        return Ok(DurableState::default());
    };
    serde_json::from_slice(&body).map_err(|e| damaged(&path, &e.to_string()))
}

// ---------------------------------------------------------------------------------------
// Log file
// ---------------------------------------------------------------------------------------

/// One record read back from the log file.
struct ScannedRecord {
    /// Where the record starts in the file.
    position: u64,
    entry: Entry,
}

/// What a scan of the log file found.
struct Scan {
    records: Vec<ScannedRecord>,
    /// Bytes of the file up to the end of the last good record.
    valid_len: u64,
    /// Why the bytes after `valid_len` were not records, if there are any.
    torn: Option<String>,
}

/// Reads the records of a log file's bytes (header already checked). A bad last record, or
/// bad bytes that are all zeros to the end (a file extended but not written before a
/// crash), end the scan as a torn tail; a bad record with data after it is an error: it
/// can be damage to acknowledged entries, and cutting there could lose them.
fn scan_log(bytes: &[u8], path: &Path) -> Result<Scan, BrokerError> {
    let file_len = bytes.len() as u64;
    let mut records: Vec<ScannedRecord> = Vec::new();
    let mut position = FileHeader::LEN as u64;
    while position < file_len {
        let bad = match read_record(bytes, position) {
            Ok((entry, end)) => {
                check_increasing(path, &records, position, &entry)?;
                records.push(ScannedRecord { position, entry });
                position = end;
                continue;
            }
            Err(bad) => bad,
        };
        let rest = &bytes[position as usize..];
        if bad.reaches_eof || rest.iter().all(|&b| b == 0) {
            return Ok(Scan {
                records,
                valid_len: position,
                torn: Some(bad.reason),
            });
        }
        return Err(BrokerError::DataDir(format!(
            "{}: the record at byte {position} is corrupt ({}) and {} bytes follow it; the \
             controller log is damaged before its end: restore the directory from a backup, \
             or move it away and add this node to the controller quorum again",
            path.display(),
            bad.reason,
            rest.len()
        )));
    }
    Ok(Scan {
        records,
        valid_len: position,
        torn: None,
    })
}

/// Why a record could not be read, and whether it was the last thing in the file.
struct BadRecord {
    reason: String,
    reaches_eof: bool,
}

/// Reads the record at `position`: its entry and where the next record starts.
fn read_record(bytes: &[u8], position: u64) -> Result<(Entry, u64), BadRecord> {
    let file_len = bytes.len() as u64;
    let bad = |reason: &str, reaches_eof: bool| BadRecord {
        reason: reason.to_string(),
        reaches_eof,
    };
    if file_len - position < RECORD_HEADER_BYTES {
        return Err(bad("record header cut short", true));
    }
    let at = position as usize;
    let len = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let crc = u32::from_be_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
    let after_header = &bytes[at + RECORD_HEADER_BYTES as usize..];
    let damaged_length = || {
        payload_is_whole(after_header, crc).then(|| BadRecord {
            reason: format!("length {len} is damaged: the entry after it is whole"),
            reaches_eof: false,
        })
    };
    let end = position + RECORD_HEADER_BYTES + u64::from(len);
    if len == 0 || len > RECORD_BYTES_MAX || end > file_len {
        return Err(damaged_length().unwrap_or_else(|| {
            if len == 0 || len > RECORD_BYTES_MAX {
                bad(&format!("impossible length {len}"), false)
            } else {
                bad("record cut short", true)
            }
        }));
    }
    let payload = &after_header[..len as usize];
    if crc32c::crc32c(payload) != crc {
        return Err(damaged_length().unwrap_or_else(|| bad("checksum mismatch", end == file_len)));
    }
    // The checksum matched, so these bytes are what was written: not a torn write. Calling
    // it torn would cut a record that may have been acknowledged, so it is never the tail.
    let entry = serde_json::from_slice(payload)
        .map_err(|e| bad(&format!("undecodable entry: {e}"), false))?;
    Ok((entry, end))
}

/// Whether the bytes after a record header start with a whole entry that has the header's
/// checksum: then only the length field is wrong, which damage does and a torn write (which
/// loses the end of what was written) does not. Without this check, a damaged length that
/// points past the end of the file would pass for a torn tail and cut acknowledged entries.
fn payload_is_whole(after_header: &[u8], crc: u32) -> bool {
    let mut stream = serde_json::Deserializer::from_slice(after_header).into_iter::<Entry>();
    match stream.next() {
        Some(Ok(_)) => crc32c::crc32c(&after_header[..stream.byte_offset()]) == crc,
        _ => false,
    }
}

/// Log indexes in the file strictly increase; anything else is damage or a bug.
fn check_increasing(
    path: &Path,
    records: &[ScannedRecord],
    position: u64,
    entry: &Entry,
) -> Result<(), BrokerError> {
    match records.last() {
        Some(prev) if prev.entry.log_id.index >= entry.log_id.index => {
            Err(BrokerError::DataDir(format!(
                "{}: the record at byte {position} has log index {} after index {}; the \
                 controller log is damaged: restore it from a backup, or move the controller \
                 directory away and add this node to the controller quorum again",
                path.display(),
                entry.log_id.index,
                prev.entry.log_id.index
            )))
        }
        _ => Ok(()),
    }
}

/// The live entries (after the purge point) must follow it without a hole.
fn check_live_contiguous(
    path: &Path,
    live: &BTreeMap<u64, Entry>,
    purged: Option<LogId>,
) -> Result<(), BrokerError> {
    let mut expected = purged.map(|id| id.index + 1);
    for &index in live.keys() {
        if expected.is_some_and(|expected| expected != index) {
            return Err(BrokerError::DataDir(format!(
                "{}: log index {index} follows index {} (purged up to {}): entries are \
                 missing; restore the controller directory from a backup, or move it away \
                 and add this node to the controller quorum again",
                path.display(),
                expected.map_or(0, |e| e - 1),
                purged.map_or("nothing".to_string(), |p| p.index.to_string())
            )));
        }
        expected = Some(index + 1);
    }
    Ok(())
}

/// Log records ready to be written.
struct EncodedRecords {
    bytes: Vec<u8>,
    /// Each record's log index and offset in `bytes`.
    offsets: Vec<(u64, u64)>,
}

/// Encodes entries as log records.
fn encode_records(entries: &[Entry]) -> Result<EncodedRecords, String> {
    let mut bytes = Vec::new();
    let mut offsets = Vec::with_capacity(entries.len());
    for entry in entries {
        let payload = serde_json::to_vec(entry)
            .map_err(|e| format!("cannot encode log entry {}: {e}", entry.log_id))?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&len| len <= RECORD_BYTES_MAX)
            .ok_or_else(|| {
                format!(
                    "log entry {} is {} bytes, over the {RECORD_BYTES_MAX} byte limit",
                    entry.log_id,
                    payload.len()
                )
            })?;
        offsets.push((entry.log_id.index, bytes.len() as u64));
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
        bytes.extend_from_slice(&payload);
    }
    Ok(EncodedRecords { bytes, offsets })
}

/// The files of the log store. Only touched on the blocking pool, one operation at a time.
struct LogDisk {
    dir: PathBuf,
    log_path: PathBuf,
    file: File,
    /// Bytes of the log file (header included); the next record goes here.
    len: u64,
    /// File position of each record in the file, by log index. Includes purged records the
    /// file still holds until the next compaction.
    positions: BTreeMap<u64, u64>,
}

impl LogDisk {
    /// Writes records at the end of the file and fdatasyncs them.
    fn append(&mut self, records: &EncodedRecords) -> Result<(), FileError> {
        let EncodedRecords { bytes, offsets } = records;
        // Records at or after the first new index can only be purged ones (the store checked
        // the live log): cut them, so indexes in the file keep increasing.
        if let Some(&(first, _)) = offsets.first() {
            self.truncate_from(first)?;
        }
        let written = self
            .file
            .write_all_at(bytes, self.len)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut what may have been written, so the next append does not leave a damaged
            // record before good ones. Best effort: the error below is what matters.
            let _ = self.file.set_len(self.len);
            return Err(e).at("append to", &self.log_path);
        }
        for &(index, offset) in offsets {
            self.positions.insert(index, self.len + offset);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Removes the records with index >= `index`, durably.
    fn truncate_from(&mut self, index: u64) -> Result<(), FileError> {
        let Some((_, &position)) = self.positions.range(index..).next() else {
            return Ok(());
        };
        self.file.set_len(position).at("truncate", &self.log_path)?;
        self.file.sync_data().at("fsync", &self.log_path)?;
        self.positions.split_off(&index);
        self.len = position;
        Ok(())
    }

    fn save_state(&self, state: &DurableState) -> Result<(), FileError> {
        let body = serde_json::to_vec(state).map_err(io::Error::other);
        let path = self.dir.join(STATE_FILE);
        write_checkpoint(&path, STATE_HEADER, STATE_WHAT, &body.at("encode", &path)?)
    }

    /// Rewrites the file without the records up to `purged` once they take at least as many
    /// bytes as the records kept. Rewriting costs the kept bytes, so waiting until the purged
    /// ones are as many makes the copying cost at most one copy per appended byte, and the
    /// file stays under twice the live log plus what was appended since the last purge
    /// (openraft purges after each snapshot). One file rather than segments: the metadata
    /// log is small and a rewrite of it is cheap.
    fn compact(&mut self, purged: u64) -> Result<(), FileError> {
        let keep_from = match self.positions.range(purged + 1..).next() {
            Some((_, &position)) => position,
            None => self.len,
        };
        let purged_bytes = keep_from - FileHeader::LEN as u64;
        let kept_bytes = self.len - keep_from;
        if purged_bytes == 0 || purged_bytes < kept_bytes {
            return Ok(());
        }
        let mut content = LOG_HEADER.bytes();
        content.resize(FileHeader::LEN + kept_bytes as usize, 0);
        self.file
            .read_exact_at(&mut content[FileHeader::LEN..], keep_from)
            .at("read", &self.log_path)?;
        replace_file(&self.log_path, &content)?;
        self.file = open_rw(&self.log_path)?;
        self.positions = self
            .positions
            .split_off(&(purged + 1))
            .into_iter()
            .map(|(index, position)| (index, position - keep_from + FileHeader::LEN as u64))
            .collect();
        self.len = FileHeader::LEN as u64 + kept_bytes;
        Ok(())
    }
}

fn open_rw(path: &Path) -> Result<File, FileError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .at("open", path)
}

/// Opens the log file, creating it (atomically, with its header) if it does not exist, and
/// cuts a torn tail.
fn open_log_file(path: &Path) -> Result<(File, Scan), BrokerError> {
    if !path.exists() {
        replace_file(path, &LOG_HEADER.bytes())?;
    }
    let bytes = fs::read(path).map_err(|e| BrokerError::io("read", path, e))?;
    if let Some(reason) = LOG_HEADER.mismatch(&bytes) {
        return Err(damaged(path, &reason));
    }
    let scan = scan_log(&bytes, path)?;
    let file = open_rw(path)?;
    if let Some(reason) = &scan.torn {
        tracing::warn!(
            path = %path.display(),
            position = scan.valid_len,
            cut_bytes = bytes.len() as u64 - scan.valid_len,
            "controller log ends in a torn record ({reason}), written by a crash before it \
             was flushed and acknowledged; cutting it"
        );
        file.set_len(scan.valid_len).at("truncate", path)?;
        file.sync_data().at("fsync", path)?;
    }
    Ok((file, scan))
}

// ---------------------------------------------------------------------------------------
// Log store
// ---------------------------------------------------------------------------------------

/// The log's entries by index, shared by the store and its readers. The lock is held only
/// to copy entries in or out, never across I/O or an await.
type SharedEntries = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// Locks a mutex whose data every holder changes in one step that cannot panic halfway, so
/// a poisoned lock (a panic elsewhere while holding it) still guards consistent data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The metadata log, the vote and the committed and purged log ids, durable in the
/// controller directory; openraft's [`RaftLogStorage`].
pub struct LogStore {
    /// The controller directory, for error messages.
    dir: PathBuf,
    /// The live entries (after the purge point), as on disk.
    entries: SharedEntries,
    /// The files. Locked on the blocking pool only, for one operation; openraft serializes
    /// its writes, so the lock is contended only if a cancelled call's I/O still runs.
    disk: Arc<Mutex<LogDisk>>,
    /// What `raft-state` holds.
    durable: DurableState,
}

/// A reader of the log sharing the store's entries; openraft hands one to each replication
/// stream.
#[derive(Clone)]
pub struct LogReader {
    entries: SharedEntries,
}

impl LogStore {
    fn open(dir: &Path, durable: DurableState) -> Result<LogStore, BrokerError> {
        let log_path = dir.join(LOG_FILE);
        let (file, scan) = open_log_file(&log_path)?;
        let purged_index = durable.last_purged.map(|id| id.index);
        let mut positions = BTreeMap::new();
        let mut entries = BTreeMap::new();
        for record in scan.records {
            let index = record.entry.log_id.index;
            positions.insert(index, record.position);
            if purged_index.is_none_or(|purged| index > purged) {
                entries.insert(index, record.entry);
            }
        }
        check_live_contiguous(&log_path, &entries, durable.last_purged)?;
        let disk = LogDisk {
            dir: dir.to_path_buf(),
            log_path,
            file,
            len: scan.valid_len,
            positions,
        };
        Ok(LogStore {
            dir: dir.to_path_buf(),
            entries: Arc::new(Mutex::new(entries)),
            disk: Arc::new(Mutex::new(disk)),
            durable,
        })
    }

    /// Runs `op` on the files on the blocking pool and waits for it.
    async fn with_disk<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut LogDisk) -> Result<T, FileError> + Send + 'static,
    ) -> Result<T, FileError> {
        let disk = Arc::clone(&self.disk);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || match disk.lock() {
            Ok(mut disk) => op(&mut disk),
            // A panic during an earlier write left the files in a state we cannot vouch for.
            Err(_) => Err(FileError::other(
                &dir,
                "an earlier write panicked; restart the broker",
            )),
        })
        .await
        .unwrap_or_else(|e| Err(FileError::other(&self.dir, &format!("write task: {e}"))))
    }

    /// Saves `next` as the durable state, then adopts it.
    async fn save_durable(&mut self, next: DurableState) -> Result<(), FileError> {
        let to_save = next.clone();
        self.with_disk(move |disk| disk.save_state(&to_save))
            .await?;
        self.durable = next;
        Ok(())
    }

    fn last_entry_id(&self) -> Option<LogId> {
        lock(&self.entries).values().next_back().map(|e| e.log_id)
    }

    /// Appended entries follow the last entry without a hole. Into an empty log they may go
    /// anywhere up to right after the purge point: openraft's storage suite appends indexes it
    /// has purged, and such entries are dropped again on restart, like every purged entry.
    fn check_next(&self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let last = self.last_entry_id();
        let purged = self.durable.last_purged;
        let first_fits = match (last, purged) {
            (Some(last), _) => first.log_id.index == last.index + 1,
            (None, Some(purged)) => first.log_id.index <= purged.index + 1,
            (None, None) => true,
        };
        let consecutive = entries
            .windows(2)
            .all(|pair| pair[1].log_id.index == pair[0].log_id.index + 1);
        if first_fits && consecutive {
            return Ok(());
        }
        Err(format!(
            "append of log indexes {}..={} after last index {} (purged up to {}): the log \
             would have a hole",
            first.log_id.index,
            entries.last().map_or(0, |e| e.log_id.index),
            last.map_or("none".to_string(), |id| id.index.to_string()),
            purged.map_or("none".to_string(), |id| id.index.to_string()),
        ))
    }
}

fn log_error(reason: impl ToString) -> StorageError {
    StorageIOError::write_logs(AnyError::error(reason)).into()
}

fn file_log_error(e: &FileError) -> StorageError {
    StorageIOError::write_logs(AnyError::new(e)).into()
}

fn range_of(entries: &BTreeMap<u64, Entry>, range: impl RangeBounds<u64>) -> Vec<Entry> {
    entries.range(range).map(|(_, e)| e.clone()).collect()
}

impl LogReader {
    /// The id of the last entry in the log; `None` if it holds none (empty, or purged
    /// entirely, which the snapshot policy's kept entries make rare).
    pub fn last_log_id(&self) -> Option<LogId> {
        lock(&self.entries).values().next_back().map(|e| e.log_id)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(range_of(&lock(&self.entries), range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(range_of(&lock(&self.entries), range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.durable.last_purged;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.last_entry_id().or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            entries: Arc::clone(&self.entries),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let next = DurableState {
            vote: Some(*vote),
            ..self.durable.clone()
        };
        self.save_durable(next)
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.durable.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let next = DurableState {
            committed,
            ..self.durable.clone()
        };
        self.save_durable(next)
            .await
            .map_err(|e| file_log_error(&e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.durable.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.check_next(&entries).map_err(log_error)?;
        let records = encode_records(&entries).map_err(log_error)?;
        if let Err(e) = self.with_disk(move |disk| disk.append(&records)).await {
            callback.log_io_completed(Err(io::Error::other(e.to_string())));
            return Err(file_log_error(&e));
        }
        lock(&self.entries).extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        // Only now, with the records fdatasync'ed: openraft counts this node's copy towards
        // the commit quorum once told.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        if self.durable.last_purged.is_some_and(|p| p.index >= index) {
            return Err(log_error(format!(
                "truncate from log index {index} would remove purged entries (purged up to {})",
                self.durable.last_purged.map_or(0, |p| p.index)
            )));
        }
        self.with_disk(move |disk| disk.truncate_from(index))
            .await
            .map_err(|e| file_log_error(&e))?;
        lock(&self.entries).split_off(&index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        if self.durable.last_purged.is_some_and(|p| p.index >= index) {
            // Already durable; only entries appended below the purge point since (see
            // `check_next`) are left to drop.
            let mut entries = lock(&self.entries);
            *entries = entries.split_off(&(index + 1));
            return Ok(());
        }
        let next = DurableState {
            last_purged: Some(log_id),
            ..self.durable.clone()
        };
        self.save_durable(next)
            .await
            .map_err(|e| file_log_error(&e))?;
        {
            let mut entries = lock(&self.entries);
            *entries = entries.split_off(&(index + 1));
        }
        self.with_disk(move |disk| disk.compact(index))
            .await
            .map_err(|e| file_log_error(&e))
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------

/// A snapshot: openraft's meta and the image as JSON (the bytes shipped to followers).
#[derive(Clone, Debug)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        let meta = serde_json::to_vec(&self.meta)?;
        let mut body = Vec::with_capacity(4 + meta.len() + self.data.len());
        // The meta of a metadata-log snapshot is far below 4 GiB (a membership and ids).
        body.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        body.extend_from_slice(&meta);
        body.extend_from_slice(&self.data);
        Ok(body)
    }

    fn decode(body: Vec<u8>) -> Result<StoredSnapshot, String> {
        if body.len() < 4 {
            return Err("shorter than its meta length".into());
        }
        let meta_len = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
        if meta_len > body.len() - 4 {
            return Err(format!("meta length {meta_len} is past the end"));
        }
        let meta = serde_json::from_slice(&body[4..4 + meta_len])
            .map_err(|e| format!("undecodable meta: {e}"))?;
        Ok(StoredSnapshot {
            meta,
            data: body[4 + meta_len..].to_vec(),
        })
    }

    fn to_snapshot(&self) -> Snapshot<TypeConfig> {
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        }
    }
}

/// Loads the snapshot file and its image, if there is one.
fn load_snapshot(dir: &Path) -> Result<Option<(StoredSnapshot, MetadataImage)>, BrokerError> {
    let path = dir.join(SNAPSHOT_FILE);
    let Some(body) = read_checkpoint(&path, SNAPSHOT_HEADER, SNAPSHOT_WHAT)? else {
        return Ok(None);
    };
    let snapshot = StoredSnapshot::decode(body).map_err(|reason| damaged(&path, &reason))?;
    let image = serde_json::from_slice(&snapshot.data)
        .map_err(|e| damaged(&path, &format!("undecodable image: {e}")))?;
    Ok(Some((snapshot, image)))
}

/// The current snapshot, in memory and in the `snapshot` file; shared by the state machine
/// and the snapshot builders openraft runs on their own tasks.
struct Snapshots {
    path: PathBuf,
    /// Serializes writers of the file (a build finishing while a snapshot is installed). Held
    /// on the blocking pool only, across the write; guards no data.
    writing: Mutex<()>,
    /// The snapshot last made durable. Locked only to clone or replace it, never across I/O.
    current: Mutex<Option<Arc<StoredSnapshot>>>,
}

impl Snapshots {
    /// Writes `snapshot` durably and makes it current, unless the current one covers more of
    /// the log (a build started before an install and finishing after it).
    fn store(&self, snapshot: Arc<StoredSnapshot>) -> Result<(), FileError> {
        let _writing = lock(&self.writing);
        let newer = lock(&self.current)
            .as_ref()
            .is_some_and(|current| current.meta.last_log_id > snapshot.meta.last_log_id);
        if newer {
            return Ok(());
        }
        let body = snapshot.encode().map_err(io::Error::other);
        write_checkpoint(
            &self.path,
            SNAPSHOT_HEADER,
            SNAPSHOT_WHAT,
            &body.at("encode", &self.path)?,
        )?;
        *lock(&self.current) = Some(snapshot);
        Ok(())
    }

    /// Stores `snapshot` on the blocking pool.
    async fn store_async(self: &Arc<Self>, snapshot: StoredSnapshot) -> Result<(), StorageError> {
        let signature = Some(snapshot.meta.signature());
        let snapshots = Arc::clone(self);
        let stored = tokio::task::spawn_blocking(move || snapshots.store(Arc::new(snapshot)))
            .await
            .unwrap_or_else(|e| Err(FileError::other(&self.path, &format!("write task: {e}"))));
        stored.map_err(|e| StorageIOError::write_snapshot(signature, AnyError::new(&e)).into())
    }
}

/// Tells snapshots apart when they are sent. Restarts at 0 with the process: an id repeats
/// only for a snapshot at the same last log id, whose image is the same (apply is
/// deterministic), so mixing the two up is harmless.
static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

fn snapshot_id(last_applied: Option<LogId>) -> String {
    let seq = SNAPSHOT_SEQ.fetch_add(1, Ordering::Relaxed);
    match last_applied {
        Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
        None => format!("empty-{seq}"),
    }
}

// ---------------------------------------------------------------------------------------
// State machine
// ---------------------------------------------------------------------------------------

/// The metadata image as the state machine of the controller's Raft group; openraft's
/// [`RaftStateMachine`]. Publishes every applied batch on a watch channel.
pub struct StateMachineStore {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    image: MetadataImage,
    applied: watch::Sender<Applied>,
    snapshots: Arc<Snapshots>,
}

impl StateMachineStore {
    fn open(
        dir: &Path,
        snapshot: Option<(StoredSnapshot, MetadataImage)>,
        applied: watch::Sender<Applied>,
    ) -> StateMachineStore {
        let mut state_machine = StateMachineStore {
            last_applied: None,
            last_membership: StoredMembership::default(),
            image: MetadataImage::default(),
            applied,
            snapshots: Arc::new(Snapshots {
                path: dir.join(SNAPSHOT_FILE),
                writing: Mutex::new(()),
                current: Mutex::new(None),
            }),
        };
        if let Some((snapshot, image)) = snapshot {
            state_machine.adopt(&snapshot.meta, image);
            *lock(&state_machine.snapshots.current) = Some(Arc::new(snapshot));
            state_machine.publish();
        }
        state_machine
    }

    /// Makes `image` at `meta` the state.
    fn adopt(&mut self, meta: &SnapshotMeta, image: MetadataImage) {
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.image = image;
    }

    fn publish(&self) {
        self.applied.send_replace(Applied {
            index: self.last_applied.map_or(0, |id| id.index),
            image: Arc::new(self.image.clone()),
        });
    }
}

/// Builds a snapshot from a copy of the state machine taken when openraft asked for it, so
/// entries applied meanwhile do not change it.
pub struct SnapshotBuilder {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    image: MetadataImage,
    snapshots: Arc<Snapshots>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = serde_json::to_vec(&self.image)
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        let snapshot = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.last_membership.clone(),
                snapshot_id: snapshot_id(self.last_applied),
            },
            data,
        };
        let built = snapshot.to_snapshot();
        self.snapshots.store_async(snapshot).await?;
        Ok(built)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(command) => self.image.apply(entry.log_id.index, &command),
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResult::Done
                }
            };
            self.last_applied = Some(entry.log_id);
            results.push(result);
        }
        if !results.is_empty() {
            self.publish();
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            image: self.image.clone(),
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let image: MetadataImage = serde_json::from_slice(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.snapshots.store_async(stored).await?;
        self.adopt(meta, image);
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(lock(&self.snapshots.current)
            .as_ref()
            .map(|s| s.to_snapshot()))
    }
}
