//! An outgoing frame that shares its record batches instead of copying them in.
//!
//! A fetch answer is mostly record batches the broker has just read from a segment file
//! into a `Bytes`, or a range of that file it has not read at all ([`FileSlice`]).
//! Encoding them into one contiguous buffer copies every byte once more before the socket
//! copies it again (16-22 % of a consuming broker's cycles were that `memmove`,
//! BENCHMARKS.md). A [`SplicedFrame`] keeps the encoded bytes around the batches in `head`
//! and the batches themselves as pieces placed between them; the writer sends the pieces
//! with one vectored write (DESIGN: "write responses with vectored writes"), and a file
//! range with `sendfile` where the socket is plain TCP.

use bytes::{BufMut, Bytes, BytesMut};

use super::FRAME_HEADER_LEN;
use crate::FileSlice;

/// Shared pieces shorter than this are copied into the head: below it an extra piece costs
/// more than the copy saves.
pub const SPLICE_MIN_BYTES: usize = 4096;

/// A piece of a frame on its way to the socket: bytes, or a range of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A file range, sent from the file (`sendfile`) or read first where it cannot be.
    File(FileSlice),
}

impl Piece {
    /// The piece's length.
    pub fn len(&self) -> usize {
        match self {
            Piece::Bytes(bytes) => bytes.len(),
            Piece::File(slice) => slice.len(),
        }
    }

    /// Whether the piece is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when the piece is in memory.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Piece::Bytes(bytes) => Some(bytes),
            Piece::File(_) => None,
        }
    }
}

/// A frame being encoded: the length prefix, then the payload, whose long byte strings
/// (record batches) may be shared `Bytes` or file ranges rather than copies
/// ([`SplicedFrame::put_shared`], [`SplicedFrame::put_file`]).
/// [`SplicedFrame::into_pieces`] gives it back as the pieces to write, in order.
#[derive(Debug)]
pub struct SplicedFrame {
    /// Everything but the shared pieces, starting with room for the length prefix.
    head: BytesMut,
    /// Shared pieces and where each goes: before the head's byte at that position.
    /// Positions never decrease.
    shared: Vec<(usize, Piece)>,
    /// Bytes in `shared`.
    shared_len: usize,
}

impl Default for SplicedFrame {
    fn default() -> Self {
        SplicedFrame::new()
    }
}

impl SplicedFrame {
    /// An empty frame: room for the length prefix and no payload yet.
    pub fn new() -> SplicedFrame {
        SplicedFrame {
            head: BytesMut::from(&[0u8; FRAME_HEADER_LEN][..]),
            shared: Vec::new(),
            shared_len: 0,
        }
    }

    /// The bytes after the last shared piece.
    pub fn head(&self) -> &BytesMut {
        &self.head
    }

    /// The bytes after the last shared piece, to encode more into.
    pub fn head_mut(&mut self) -> &mut BytesMut {
        &mut self.head
    }

    /// Appends `bytes`: shared when long enough, else copied into the head.
    pub fn put_shared(&mut self, bytes: &Bytes) {
        if bytes.len() < SPLICE_MIN_BYTES {
            self.head.put_slice(bytes);
            return;
        }
        self.shared_len += bytes.len();
        self.shared
            .push((self.head.len(), Piece::Bytes(bytes.clone())));
    }

    /// Appends a file range, to be sent from the file. Nothing before it can be edited
    /// afterwards ([`SplicedFrame::range_mut`], [`SplicedFrame::resize`]): the encoders
    /// that put file ranges (the native messages') never go back.
    pub fn put_file(&mut self, slice: &FileSlice) {
        if slice.is_empty() {
            return;
        }
        self.shared_len += slice.len();
        self.shared
            .push((self.head.len(), Piece::File(slice.clone())));
    }

    /// The frame's length, prefix included.
    pub fn len(&self) -> usize {
        self.head.len() + self.shared_len
    }

    /// Whether the frame has no payload yet.
    pub fn is_empty(&self) -> bool {
        self.len() == FRAME_HEADER_LEN
    }

    /// The payload's length (the frame's, prefix excluded).
    pub fn payload_len(&self) -> usize {
        self.len() - FRAME_HEADER_LEN
    }

    /// Copies every shared piece into the head, so the frame is one buffer again.
    ///
    /// # Panics
    /// If the frame holds a file range (see [`SplicedFrame::put_file`]).
    fn flatten(&mut self) {
        if self.shared.is_empty() {
            return;
        }
        let mut flat = BytesMut::with_capacity(self.len());
        let mut at = 0;
        for (position, piece) in self.shared.drain(..) {
            let Piece::Bytes(piece) = piece else {
                panic!("a frame holding a file range is edited behind it");
            };
            flat.put_slice(&self.head[at..position]);
            flat.put_slice(&piece);
            at = position;
        }
        flat.put_slice(&self.head[at..]);
        self.head = flat;
        self.shared_len = 0;
    }

    /// Cuts the frame to `len` bytes (prefix included), or pads it with zeros to that. A cut
    /// before every shared piece (an encoder undoing what it wrote) drops them unread.
    pub fn resize(&mut self, len: usize) {
        if len == self.len() {
            return;
        }
        if self
            .shared
            .first()
            .is_some_and(|(position, _)| len <= *position)
        {
            self.shared.clear();
            self.shared_len = 0;
        }
        self.flatten();
        self.head.resize(len, 0);
    }

    /// The bytes in `range` of the frame (prefix included), to fill in a field encoded
    /// before its value was known.
    pub fn range_mut(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
        let after_shared = self.shared.last().map_or(0, |(position, _)| *position);
        if range.start < after_shared + self.shared_len {
            self.flatten();
            return &mut self.head[range];
        }
        let shift = self.shared_len;
        &mut self.head[range.start - shift..range.end - shift]
    }

    /// Writes the payload's length into the prefix and returns the frame as its pieces, in
    /// the order they go on the wire.
    pub fn into_pieces(mut self) -> Vec<Piece> {
        let payload_len = self.payload_len() as u32;
        self.head[..FRAME_HEADER_LEN].copy_from_slice(&payload_len.to_be_bytes());
        let mut head = self.head.freeze();
        let mut pieces = Vec::with_capacity(2 * self.shared.len() + 1);
        let mut at = 0;
        for (position, piece) in self.shared {
            if position > at {
                pieces.push(Piece::Bytes(head.split_to(position - at)));
                at = position;
            }
            pieces.push(piece);
        }
        if !head.is_empty() {
            pieces.push(Piece::Bytes(head));
        }
        pieces
    }

    /// The whole frame in one buffer (tests, and writers that take one buffer); file
    /// ranges are read.
    pub fn into_bytes(self) -> std::io::Result<Bytes> {
        let mut flat = BytesMut::with_capacity(self.len());
        for piece in self.into_pieces() {
            match piece {
                Piece::Bytes(bytes) => flat.put_slice(&bytes),
                Piece::File(slice) => slice.read_into(&mut flat)?,
            }
        }
        Ok(flat.freeze())
    }
}

impl From<BytesMut> for SplicedFrame {
    /// A frame around `head`, whose first `FRAME_HEADER_LEN` bytes are room for the prefix.
    fn from(head: BytesMut) -> SplicedFrame {
        SplicedFrame {
            head,
            shared: Vec::new(),
            shared_len: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flat(parts: &[(bool, Vec<u8>)]) -> Vec<u8> {
        let payload: Vec<u8> = parts.iter().flat_map(|(_, b)| b.clone()).collect();
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend(payload);
        out
    }

    proptest! {
        /// However a payload is split between copied and shared parts, the pieces put back
        /// together are the prefixed payload, and only long shared parts stay shared.
        #[test]
        fn pieces_make_the_frame(parts in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..10_000)), 0..8)
        ) {
            let mut frame = SplicedFrame::new();
            let mut shared = 0;
            for (share, bytes) in &parts {
                if *share {
                    frame.put_shared(&Bytes::from(bytes.clone()));
                    shared += usize::from(bytes.len() >= SPLICE_MIN_BYTES);
                } else {
                    frame.head_mut().put_slice(bytes);
                }
            }
            let expected = flat(&parts);
            prop_assert_eq!(frame.len(), expected.len());
            let pieces = frame.into_pieces();
            prop_assert!(pieces.len() <= 2 * shared + 1);
            prop_assert!(pieces.iter().all(|p| !p.is_empty()));
            let bytes: Vec<Bytes> = pieces
                .into_iter()
                .map(|p| match p {
                    Piece::Bytes(b) => b,
                    Piece::File(_) => unreachable!("no file was put"),
                })
                .collect();
            prop_assert_eq!(bytes.concat(), expected);
        }

        /// A cut before a file range drops it unread; the bytes before it stay.
        #[test]
        fn a_cut_before_a_file_range_drops_it(head in proptest::collection::vec(any::<u8>(), 0..100), cut in any::<proptest::sample::Index>()) {
            use std::io::Write;
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(&[1u8; 10]).unwrap();
            let mut frame = SplicedFrame::new();
            frame.head_mut().put_slice(&head);
            frame.put_file(&FileSlice::new(std::sync::Arc::new(file), 0, 10));
            frame.head_mut().put_slice(b"tail");
            let cut = FRAME_HEADER_LEN + cut.index(head.len() + 1);
            frame.resize(cut);
            let mut expected = flat(&[(false, head[..cut - FRAME_HEADER_LEN].to_vec())]);
            expected.truncate(cut);
            prop_assert_eq!(frame.into_bytes().unwrap().to_vec(), expected);
        }

        /// Filling in and cutting work on the frame's positions, shared pieces or not.
        #[test]
        fn range_and_resize_address_the_whole_frame(
            parts in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..6_000)), 1..6),
            at in any::<proptest::sample::Index>(),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut frame = SplicedFrame::new();
            for (share, bytes) in &parts {
                if *share {
                    frame.put_shared(&Bytes::from(bytes.clone()));
                } else {
                    frame.head_mut().put_slice(bytes);
                }
            }
            let mut expected = flat(&parts);
            let at = at.index(expected.len());
            let end = (at + 3).min(expected.len());
            frame.range_mut(at..end).fill(0xAB);
            expected[at..end].fill(0xAB);
            let cut = cut.index(expected.len() + 1).max(FRAME_HEADER_LEN);
            frame.resize(cut);
            expected.truncate(cut);
            let payload_len = (cut - FRAME_HEADER_LEN) as u32;
            expected[..FRAME_HEADER_LEN].copy_from_slice(&payload_len.to_be_bytes());
            prop_assert_eq!(frame.into_bytes().unwrap().to_vec(), expected);
        }
    }
}
