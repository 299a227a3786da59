//! Record batches as a message carries them: bytes in memory, or a range of an open
//! segment file that is sent without being read into memory.
//!
//! Why a file range: a broker answering a fetch from plain TCP can hand the socket the
//! page-cache pages of the segment file (`sendfile`), where reading them first copies every
//! byte once more (21 % of a consuming broker's cycles were that `pread`, BENCHMARKS.md).
//! Kafka's `FileRecords` is the same idea. What is in memory is always readable; a
//! [`FileSlice`] is read ([`FileSlice::read`]) only where no socket can take it (TLS, which
//! encrypts in user space; the Kafka listener's encoder).
//!
//! The file range must not change while a message holds it. A segment file only grows, and
//! a replaced or deleted segment stays readable through the open handle (a deleted one for
//! 10 s: the storage's deleter then cuts it down, and an answer still sending from it fails
//! and closes its connection); the other exception is a log truncated in place (a follower whose log diverged from its new leader's),
//! which never cuts below what consumers may read (the high watermark) unless an unclean
//! election made the leader, so it concerns mostly a follower fetching from a leader that
//! has just stepped down. Such a range may then hold other bytes, so a slice can carry its
//! log's truncation count from when it was made ([`FileSlice::guarded`]): a writer checks
//! [`FileSlice::is_current`] before each send and closes the connection instead of sending
//! what the range holds now. (A truncation during the send itself is not caught: Kafka's
//! `sendfile` has the same window, and a follower or client checks batch CRCs.) A range the
//! file no longer holds reads as [`std::io::ErrorKind::UnexpectedEof`].

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// A byte range of an open file.
#[derive(Clone)]
pub struct FileSlice {
    file: Arc<File>,
    position: u64,
    len: usize,
    /// The file's truncation count, and its value when the slice was made.
    guard: Option<(Arc<AtomicU64>, u64)>,
}

impl FileSlice {
    /// The `len` bytes of `file` from `position`.
    pub fn new(file: Arc<File>, position: u64, len: usize) -> FileSlice {
        FileSlice {
            file,
            position,
            len,
            guard: None,
        }
    }

    /// The slice, valid while `truncations` (counted up before the file is truncated in
    /// place) keeps its value of now.
    pub fn guarded(mut self, truncations: &Arc<AtomicU64>) -> FileSlice {
        self.guard = Some((Arc::clone(truncations), truncations.load(Ordering::Acquire)));
        self
    }

    /// Whether the file was not truncated since the slice was made (always, unguarded).
    pub fn is_current(&self) -> bool {
        self.guard
            .as_ref()
            .is_none_or(|(count, at)| count.load(Ordering::Acquire) == *at)
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the range starts in the file.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes in the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `len` bytes of the range (all of it when shorter).
    pub fn first(&self, len: usize) -> FileSlice {
        FileSlice {
            len: self.len.min(len),
            ..self.clone()
        }
    }

    /// Drops the first `n` bytes (written by a partial `sendfile`).
    ///
    /// # Panics
    /// If `n` exceeds the range.
    pub fn advance(&mut self, n: usize) {
        assert!(
            n <= self.len,
            "advanced {n} bytes past a {}-byte range",
            self.len
        );
        self.position += n as u64;
        self.len -= n;
    }

    /// Reads the range into a new buffer (one copy, from the page cache). The buffer is
    /// not zeroed first: `pread` fills it, and zeroing a MiB per fetch was 6 % of the
    /// broker's CPU under a produce + consume load (BENCHMARKS.md). A file shorter than the
    /// range is [`std::io::ErrorKind::UnexpectedEof`].
    pub fn read(&self) -> std::io::Result<Bytes> {
        let mut buf = BytesMut::with_capacity(self.len);
        self.read_into(&mut buf)?;
        Ok(buf.freeze())
    }

    /// Appends the range to `buf` (see [`FileSlice::read`]).
    pub fn read_into(&self, buf: &mut BytesMut) -> std::io::Result<()> {
        buf.reserve(self.len);
        let start = buf.len();
        let end = start + self.len;
        while buf.len() < end {
            let filled = buf.len();
            let spare = &mut buf.spare_capacity_mut()[..end - filled];
            let at = self.position + (filled - start) as u64;
            // SAFETY: pread writes at most `spare.len()` bytes into `spare`, memory this
            // buffer owns (uninitialized bytes are fine as a write target), and only the
            // `n` bytes it reports written are marked initialized.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    at as libc::off_t,
                )
            };
            match n {
                // SAFETY: pread initialized these `n` bytes, within the capacity.
                n if n > 0 => unsafe { buf.set_len(filled + n as usize) },
                0 => {
                    buf.truncate(start);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file ends before byte {} (it was truncated)",
                            self.position + self.len as u64
                        ),
                    ));
                }
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        buf.truncate(start);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for FileSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSlice")
            .field("fd", &self.file.as_raw_fd())
            .field("position", &self.position)
            .field("len", &self.len)
            .finish()
    }
}

impl PartialEq for FileSlice {
    /// The same range of the same open file.
    fn eq(&self, other: &FileSlice) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
            && self.position == other.position
            && self.len == other.len
    }
}

impl Eq for FileSlice {}

/// Record batches a message carries: decoded messages always hold them in memory; a broker
/// answering a fetch may hold a segment file's range instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Records {
    /// Bytes in memory.
    Memory(Bytes),
    /// A range of a segment file.
    File(FileSlice),
}

impl Records {
    /// Bytes of batches.
    pub fn len(&self) -> usize {
        match self {
            Records::Memory(bytes) => bytes.len(),
            Records::File(slice) => slice.len(),
        }
    }

    /// Whether there is no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batches in memory: shared when they are, read from the file when not.
    pub fn to_bytes(&self) -> std::io::Result<Bytes> {
        match self {
            Records::Memory(bytes) => Ok(bytes.clone()),
            Records::File(slice) => slice.read(),
        }
    }
}

impl Default for Records {
    fn default() -> Records {
        Records::Memory(Bytes::new())
    }
}

impl From<Bytes> for Records {
    fn from(bytes: Bytes) -> Records {
        Records::Memory(bytes)
    }
}

impl From<FileSlice> for Records {
    fn from(slice: FileSlice) -> Records {
        Records::File(slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> Arc<File> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        Arc::new(file)
    }

    #[test]
    fn a_slice_reads_its_range_and_advances_within_it() {
        let file = file_with(b"0123456789");
        let mut slice = FileSlice::new(file, 2, 5);
        assert_eq!(&slice.read().unwrap()[..], b"23456");
        assert_eq!(&slice.first(2).read().unwrap()[..], b"23");
        assert_eq!(slice.first(9), slice);
        slice.advance(3);
        assert_eq!((slice.position(), slice.len()), (5, 2));
        let mut buf = BytesMut::from(&b"ab"[..]);
        slice.read_into(&mut buf).unwrap();
        assert_eq!(&buf[..], b"ab56");
    }

    #[test]
    fn a_guarded_slice_is_current_until_its_file_is_truncated() {
        let truncations = Arc::new(AtomicU64::new(3));
        let mut slice = FileSlice::new(file_with(b"0123456789"), 2, 5).guarded(&truncations);
        assert!(slice.is_current());
        slice.advance(1);
        assert!(slice.first(2).is_current());
        truncations.fetch_add(1, Ordering::AcqRel);
        assert!(!slice.is_current() && !slice.first(2).is_current());
        assert!(
            FileSlice::new(file_with(b"0"), 0, 1).is_current(),
            "unguarded"
        );
    }

    #[test]
    fn a_range_past_the_files_end_is_an_unexpected_eof_and_appends_nothing() {
        let slice = FileSlice::new(file_with(b"0123"), 2, 5);
        let mut buf = BytesMut::from(&b"ab"[..]);
        let e = slice.read_into(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(&buf[..], b"ab");
    }
}
