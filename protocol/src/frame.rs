//! The frame codec of the native protocol (DESIGN §4): a frame is a `u32` big-endian length,
//! which excludes itself, followed by that many payload bytes.
//!
//! Why the maximum is checked on the header alone: a peer that announces a 4 GiB frame must
//! be refused before the connection buffers (or reserves) any of it. "Incomplete frame" is a
//! normal state (`Ok(None)`); a stream that ends mid-frame is an error, because the peer
//! went away with a request half sent. The codec is sans-IO: it works on a `BytesMut` that
//! the caller fills, through `tokio_util::codec` so a `Framed` socket can drive it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::Error;

mod pieces;
mod spliced;
pub use pieces::{Pieces, WRITE_PIECES_MAX};
pub use spliced::{Piece, SplicedFrame, SPLICE_MIN_BYTES};

/// Bytes of the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// Default largest payload accepted: 16 MiB (DESIGN §7).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// Splits a byte stream into frame payloads and prefixes outgoing payloads with their
/// length. Both directions refuse payloads over `max_frame_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameCodec {
    /// Largest payload (excluding the 4-byte length) accepted or sent.
    pub max_frame_bytes: u32,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

impl FrameCodec {
    /// A codec that accepts payloads of up to `max_frame_bytes`.
    pub fn new(max_frame_bytes: u32) -> FrameCodec {
        FrameCodec { max_frame_bytes }
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = Error;

    /// Returns the next payload, `Ok(None)` until a whole frame has arrived, or
    /// `FrameTooLarge` as soon as the header announces too many bytes.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let Some(header) = src.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut header_bytes = [0u8; FRAME_HEADER_LEN];
        header_bytes.copy_from_slice(header);
        let len = u32::from_be_bytes(header_bytes);
        if len > self.max_frame_bytes {
            return Err(Error::FrameTooLarge {
                length: u64::from(len),
                max: self.max_frame_bytes,
            });
        }
        // `len` is at most `max_frame_bytes`, a u32, so this fits in usize on our targets.
        let frame_len = FRAME_HEADER_LEN + len as usize;
        if src.len() < frame_len {
            // Reserve exactly what this frame still needs, so the next reads fill it
            // without reallocating; never more than the frame itself.
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        src.advance(FRAME_HEADER_LEN);
        Ok(Some(src.split_to(len as usize).freeze()))
    }

    /// Like `decode`, but bytes left over when the stream ended are a `TruncatedFrame`.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let expected = match src.get(..FRAME_HEADER_LEN) {
            Some(h) => {
                FRAME_HEADER_LEN as u64 + u64::from(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
            }
            None => FRAME_HEADER_LEN as u64,
        };
        Err(Error::TruncatedFrame {
            buffered: src.len(),
            expected,
        })
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = Error;

    /// Appends the length prefix and the payload; a payload over the maximum is refused
    /// here rather than by the peer.
    fn encode(&mut self, payload: Bytes, dst: &mut BytesMut) -> Result<(), Error> {
        if payload.len() as u64 > u64::from(self.max_frame_bytes) {
            return Err(Error::FrameTooLarge {
                length: payload.len() as u64,
                max: self.max_frame_bytes,
            });
        }
        dst.reserve(FRAME_HEADER_LEN + payload.len());
        dst.put_u32(payload.len() as u32);
        dst.put_slice(&payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut codec = FrameCodec::new(10);
        let mut src = BytesMut::from(&[0, 0, 0, 11][..]);
        let err = codec.decode(&mut src).unwrap_err();
        assert!(
            matches!(
                err,
                Error::FrameTooLarge {
                    length: 11,
                    max: 10
                }
            ),
            "{err}"
        );
        // Nothing was reserved for the refused body.
        let mut src = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(FrameCodec::default().decode(&mut src).is_err());
        assert!(src.capacity() < 1024);
        assert!(codec
            .encode(Bytes::from(vec![0; 11]), &mut BytesMut::new())
            .is_err());
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut codec = FrameCodec::default();
        let mut src = BytesMut::from(&frame(b"hello")[..7]);
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        let err = codec.decode_eof(&mut src).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TruncatedFrame {
                    buffered: 7,
                    expected: 9
                }
            ),
            "{err}"
        );
        let mut src = BytesMut::from(&[0, 0][..]);
        assert!(matches!(
            codec.decode_eof(&mut src),
            Err(Error::TruncatedFrame { buffered: 2, .. })
        ));
        assert_eq!(codec.decode_eof(&mut BytesMut::new()).unwrap(), None);
    }

    #[test]
    fn frame_split_across_reads() {
        let mut codec = FrameCodec::default();
        let mut wire = frame(b"first");
        wire.extend(frame(b""));
        wire.extend(frame(b"third frame"));
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for chunk in wire.chunks(3) {
            src.extend_from_slice(chunk);
            while let Some(payload) = codec.decode(&mut src).unwrap() {
                out.push(payload);
            }
        }
        assert_eq!(codec.decode_eof(&mut src).unwrap(), None);
        assert_eq!(out, vec![&b"first"[..], b"", b"third frame"]);
    }

    #[test]
    fn reserves_only_what_the_frame_needs() {
        let mut codec = FrameCodec::default();
        let mut src = BytesMut::from(&[0, 0, 0x10, 0][..]); // 4096-byte frame announced
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        assert!(src.capacity() >= 4100);
        assert!(src.capacity() < 2 * 4100);
    }

    proptest! {
        #[test]
        fn encode_then_decode(payloads in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 0..8), chunk in 1usize..16) {
            let mut codec = FrameCodec::new(64);
            let mut wire = BytesMut::new();
            for p in &payloads {
                codec.encode(Bytes::copy_from_slice(p), &mut wire).unwrap();
            }
            let mut src = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                src.extend_from_slice(piece);
                while let Some(payload) = codec.decode(&mut src).unwrap() {
                    out.push(payload.to_vec());
                }
            }
            prop_assert_eq!(codec.decode_eof(&mut src).unwrap(), None);
            prop_assert_eq!(out, payloads);
        }

        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut codec = FrameCodec::new(32);
            let mut src = BytesMut::from(&bytes[..]);
            while let Ok(Some(payload)) = codec.decode_eof(&mut src) {
                prop_assert!(payload.len() <= 32);
            }
            prop_assert!(src.capacity() <= 2 * (64 + 36));
        }
    }
}
