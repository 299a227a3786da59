//! Pieces of frames waiting to be written with vectored writes: the queue both ends keep
//! between their socket writes (the client's request writer, the broker's answer writer).
//! Sans-IO: the caller writes [`Pieces::io_slices`] and reports how much went out.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

use super::SplicedFrame;

/// Pieces one vectored write takes at most (Linux's `IOV_MAX` is 1024).
pub const WRITE_PIECES_MAX: usize = 256;

/// Byte pieces queued in order, consumed as writes report them written.
#[derive(Debug, Default)]
pub struct Pieces {
    queue: VecDeque<Bytes>,
    bytes: usize,
}

impl Pieces {
    /// Queues one piece (an empty one is dropped: it would write nothing).
    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.bytes += piece.len();
            self.queue.push_back(piece);
        }
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

    /// The next write's slices: the first [`WRITE_PIECES_MAX`] pieces.
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        self.queue
            .iter()
            .take(WRITE_PIECES_MAX)
            .map(|p| IoSlice::new(p))
            .collect()
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
                first.advance(written);
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
            pieces.into_iter().for_each(|p| queue.push(Bytes::from(p)));
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
}
