//! Pieces of frames waiting to be written with vectored writes: the queue both ends keep
//! between their socket writes (the client's request writer, the broker's answer writer).
//! Sans-IO: the caller writes [`Pieces::io_slices`] and reports how much went out; a file
//! range ([`Piece::File`]) at the front is the caller's to send ([`Pieces::front_file`]).

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

use super::{Piece, SplicedFrame};
use crate::FileSlice;

/// Pieces one vectored write takes at most (Linux's `IOV_MAX` is 1024).
pub const WRITE_PIECES_MAX: usize = 256;

/// Pieces queued in order, consumed as writes report them written.
#[derive(Debug, Default)]
pub struct Pieces {
    queue: VecDeque<Piece>,
    bytes: usize,
}

impl Pieces {
    /// Queues one piece (an empty one is dropped: it would write nothing).
    pub fn push(&mut self, piece: Piece) {
        if !piece.is_empty() {
            self.bytes += piece.len();
            self.queue.push_back(piece);
        }
    }

    /// Queues bytes.
    pub fn push_bytes(&mut self, bytes: Bytes) {
        self.push(Piece::Bytes(bytes));
    }

    /// Queues a frame's pieces.
    pub fn push_frame(&mut self, frame: SplicedFrame) {
        frame.into_pieces().into_iter().for_each(|p| self.push(p));
    }

    /// Bytes queued and not yet written.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Pieces queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing is left to write.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next write's slices: the byte pieces before the first file range, at most
    /// [`WRITE_PIECES_MAX`]. Empty when a file range is first.
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        self.queue
            .iter()
            .take(WRITE_PIECES_MAX)
            .map_while(|p| match p {
                Piece::Bytes(bytes) => Some(IoSlice::new(bytes)),
                Piece::File(_) => None,
            })
            .collect()
    }

    /// The file range at the front, if the next piece to write is one.
    pub fn front_file(&self) -> Option<&FileSlice> {
        match self.queue.front() {
            Some(Piece::File(slice)) => Some(slice),
            _ => None,
        }
    }

    /// Whether a file range follows the slices of the next write ([`Pieces::io_slices`]):
    /// a writer can tell the socket more is coming at once (`MSG_MORE`).
    pub fn file_follows(&self) -> bool {
        self.queue
            .iter()
            .take(WRITE_PIECES_MAX + 1)
            .any(|p| matches!(p, Piece::File(_)))
    }

    /// Consumes the first `written` bytes: whole pieces dropped, a partly written one
    /// advanced.
    ///
    /// # Panics
    /// If `written` exceeds the bytes queued (a writer cannot write more than it was given).
    pub fn advance(&mut self, mut written: usize) {
        assert!(written <= self.bytes, "wrote more than was queued");
        self.bytes -= written;
        while let Some(first) = self.queue.front_mut() {
            if written < first.len() {
                match first {
                    Piece::Bytes(bytes) => bytes.advance(written),
                    Piece::File(slice) => slice.advance(written),
                }
                return;
            }
            written -= first.len();
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the pieces and however short the writes, the bytes written in order
        /// are the pieces concatenated, and the counts agree with what is left.
        #[test]
        fn partial_writes_deliver_the_pieces_in_order(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..300),
            steps in proptest::collection::vec(1usize..100, 1..50),
        ) {
            let expected: Vec<u8> = pieces.concat();
            let mut queue = Pieces::default();
            pieces.into_iter().for_each(|p| queue.push_bytes(Bytes::from(p)));
            prop_assert_eq!(queue.bytes(), expected.len());
            let mut out = Vec::new();
            let mut step = steps.iter().cycle();
            while !queue.is_empty() {
                let slices = queue.io_slices();
                prop_assert!(slices.len() <= WRITE_PIECES_MAX);
                let offered: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
                let n = (*step.next().unwrap()).min(offered.len());
                out.extend_from_slice(&offered[..n]);
                drop(slices);
                queue.advance(n);
                prop_assert_eq!(queue.bytes(), expected.len() - out.len());
            }
            prop_assert_eq!(out, expected);
        }
    }

    /// A vectored write stops before a file range, which the writer sends on its own and
    /// may send in parts.
    #[test]
    fn a_file_range_is_written_on_its_own() {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        let slice = FileSlice::new(std::sync::Arc::new(file), 2, 6);
        let mut queue = Pieces::default();
        queue.push_bytes(Bytes::from_static(b"ab"));
        queue.push(Piece::File(slice.clone()));
        queue.push_bytes(Bytes::from_static(b"cd"));
        assert_eq!(queue.bytes(), 10);
        assert!(queue.file_follows());
        assert_eq!(queue.io_slices().len(), 1);
        assert_eq!(queue.front_file(), None);
        queue.advance(2);
        assert_eq!(queue.front_file(), Some(&slice));
        assert!(queue.io_slices().is_empty());
        queue.advance(4);
        let rest = queue.front_file().unwrap();
        assert_eq!(&rest.read().unwrap()[..], b"67");
        queue.advance(2);
        assert!(!queue.file_follows());
        assert_eq!(&*queue.io_slices()[0], b"cd");
    }
}
