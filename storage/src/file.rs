//! Small file helpers shared by the storage modules: durable atomic replacement of a small
//! file, directory fsync, space reservation, and the versioned header every file of our own
//! format starts with.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{IoContext, Result, StorageError};

/// Header of every file of sluice's own format: 4 magic bytes, then a version byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Names the format.
    pub magic: [u8; 4],
    /// The format's version this build reads and writes.
    pub version: u8,
}

impl FileHeader {
    /// Bytes the header takes (magic + version).
    pub const LEN: usize = 5;

    /// Appends the header to `buf`.
    pub fn write_to(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.magic);
        buf.push(self.version);
    }

    /// The header's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(Self::LEN);
        self.write_to(&mut buf);
        buf
    }

    /// Why `bytes` does not start with this header, if it does not.
    pub fn mismatch(&self, bytes: &[u8]) -> Option<String> {
        if bytes.len() < Self::LEN {
            return Some(format!("{} bytes is shorter than its header", bytes.len()));
        }
        if bytes[..4] != self.magic {
            return Some(format!("magic {:?} is not {:?}", &bytes[..4], self.magic));
        }
        if bytes[4] != self.version {
            return Some(format!(
                "format version {} is not the supported version {}",
                bytes[4], self.version
            ));
        }
        None
    }

    /// Checks that `bytes` starts with this header; names `path` and `what` in the error.
    pub fn check(&self, bytes: &[u8], path: &Path, what: &'static str) -> Result<()> {
        match self.mismatch(bytes) {
            None => Ok(()),
            Some(reason) => Err(StorageError::BadFile {
                path: path.to_path_buf(),
                what,
                reason,
            }),
        }
    }
}

/// Writes a small file of our own format so that a crash leaves either the old or the new
/// content: write `path.tmp`, fsync it, rename over `path`, fsync the directory. A CRC-32C of
/// the content is appended, so a torn or damaged file is detected on read.
pub(crate) fn write_checkpoint(path: &Path, content: &[u8]) -> Result<()> {
    let mut with_crc = Vec::with_capacity(content.len() + 4);
    with_crc.extend_from_slice(content);
    with_crc.extend_from_slice(&crc32c::crc32c(content).to_be_bytes());
    replace_durably(path, &with_crc)
}

/// Replaces `path` with `content` so that a crash leaves either the old or the new file:
/// write `path.tmp`, fsync it, rename it over `path`, fsync the directory.
pub fn replace_durably(path: &Path, content: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).at("create", &tmp)?;
    file.write_all(content).at("write", &tmp)?;
    file.sync_all().at("fsync", &tmp)?;
    fs::rename(&tmp, path).at("rename", path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads a file written by [`write_checkpoint`], checking its CRC. `Ok(None)` if it does
/// not exist.
pub(crate) fn read_checkpoint(path: &Path, what: &'static str) -> Result<Option<Vec<u8>>> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read", path, e)),
    };
    let bad = |reason: &str| StorageError::BadFile {
        path: path.to_path_buf(),
        what,
        reason: reason.to_string(),
    };
    if bytes.len() < 4 {
        return Err(bad("shorter than its checksum"));
    }
    let crc_at = bytes.len() - 4;
    let stored = u32::from_be_bytes([
        bytes[crc_at],
        bytes[crc_at + 1],
        bytes[crc_at + 2],
        bytes[crc_at + 3],
    ]);
    bytes.truncate(crc_at);
    if crc32c::crc32c(&bytes) != stored {
        return Err(bad("checksum mismatch (torn or damaged)"));
    }
    Ok(Some(bytes))
}

/// A small file of sluice's own format for other crates: a magic and a version byte, the
/// content, a CRC-32C; replaced atomically and durably (tmp, fsync, rename, directory
/// fsync), so a crash leaves the old content or the new one, and damage is detected on
/// read. The layer every checkpoint of storage uses, offered to the broker so its own
/// small files need no second copy of it.
#[derive(Clone, Debug)]
pub struct DurableFile {
    path: std::path::PathBuf,
    magic: [u8; 4],
    version: u8,
    what: &'static str,
}

impl DurableFile {
    /// The file at `path` with this `magic` and `version`; `what` names it in errors.
    pub fn new(path: &Path, magic: [u8; 4], version: u8, what: &'static str) -> DurableFile {
        DurableFile {
            path: path.to_path_buf(),
            magic,
            version,
            what,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file's content, durably.
    pub fn write(&self, content: &[u8]) -> Result<()> {
        let header = FileHeader {
            magic: self.magic,
            version: self.version,
        };
        let mut buf = Vec::with_capacity(FileHeader::LEN + content.len());
        header.write_to(&mut buf);
        buf.extend_from_slice(content);
        write_checkpoint(&self.path, &buf)
    }

    /// The file's content, `None` if there is no file; an error if its magic, version or
    /// checksum is wrong.
    pub fn read(&self) -> Result<Option<Vec<u8>>> {
        let Some(mut bytes) = read_checkpoint(&self.path, self.what)? else {
            return Ok(None);
        };
        let header = FileHeader {
            magic: self.magic,
            version: self.version,
        };
        header.check(&bytes, &self.path, self.what)?;
        bytes.drain(..FileHeader::LEN);
        Ok(Some(bytes))
    }

    /// Removes the file (durably), if it exists.
    pub fn remove(&self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => sync_dir(self.path.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io("remove", &self.path, e)),
        }
    }
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("fsync directory", dir)
}

/// Opens `path` for reading and writing, creating it if needed.
pub(crate) fn open_rw(path: &Path, create: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .at("open", path)
}

/// Starts writing back `len` bytes of `file` from `offset` without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a writer of a large file that kicks each
/// slice off as it goes leaves its final fsync little to do, instead of one burst that
/// queues every other fsync of the disk behind it. Durability still needs the fsync.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range only reads its integer arguments; the fd is open. A failure
    // only means the final fsync does the work (and reports any error).
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Reserves `len` bytes of real disk space for `file` (not a sparse hole), so that writes
/// through a memory map of it can never fail with a full disk (which would be SIGBUS).
pub(crate) fn reserve(file: &File, len: u64, path: &Path) -> Result<()> {
    file.set_len(len).at("resize", path)?;
    // SAFETY: posix_fallocate only reads its integer arguments; the fd is open.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if rc != 0 {
        return Err(StorageError::io(
            "reserve space for",
            path,
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_file_round_trips_and_refuses_damage_and_other_formats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let file = DurableFile::new(&path, *b"TEST", 1, "test file");
        assert_eq!(file.read().unwrap(), None);
        file.write(b"hello").unwrap();
        assert_eq!(file.read().unwrap().as_deref(), Some(&b"hello"[..]));
        file.write(b"").unwrap();
        assert_eq!(file.read().unwrap().as_deref(), Some(&b""[..]));

        let newer = DurableFile::new(&path, *b"TEST", 2, "test file");
        let err = newer.read().unwrap_err().to_string();
        assert!(err.contains("version 1"), "{err}");
        let other = DurableFile::new(&path, *b"OTHR", 1, "test file");
        assert!(other.read().is_err());

        file.write(b"hello").unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[6] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let err = file.read().unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
        file.remove().unwrap();
        assert_eq!(file.read().unwrap(), None);
        file.remove().unwrap();
    }
}
