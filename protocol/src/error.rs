//! The one error type of the protocol crate: why some bytes could not be decoded, or a value
//! could not be encoded. Messages say what was wrong and, where it helps, what to do.

/// Why a codec refused its input. Decoders never panic; they return one of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input ended before a complete value: `needed` more bytes were required.
    #[error("truncated {context}: {needed} more bytes needed")]
    Truncated {
        /// The value (or message field) that was being read.
        context: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A field held a value the format does not allow (negative length, absurd count, ...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field that held the value.
        field: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A length or count field was negative and not the null marker -1.
    #[error("invalid {field}: negative length {length}; only -1 (null) is allowed below zero")]
    NegativeLength {
        /// The field whose length was read.
        field: &'static str,
        /// The length as read.
        length: i32,
    },
    /// A message decoded completely but bytes were left over: sender and receiver disagree
    /// on the format.
    #[error("{remaining} unexpected bytes after the end of {context}; the peer speaks another version of the format (check that client and broker versions match)")]
    TrailingBytes {
        /// The message that was decoded.
        context: &'static str,
        /// How many bytes were left unread.
        remaining: usize,
    },
    /// A value is too long for its length field, so it cannot be encoded.
    #[error("cannot encode {what} of {len} bytes or elements: the format allows at most {max}")]
    TooLong {
        /// The kind of value (string, bytes, array).
        what: &'static str,
        /// Its length.
        len: usize,
        /// The largest length the format can carry.
        max: usize,
    },
    /// A request named an api key this build does not know.
    #[error("unknown api key {0}: this broker does not implement that api; upgrade the broker or use an older client")]
    UnknownApiKey(u16),
    /// A request or response of a known api at a version this build does not support.
    #[error("unsupported version {version} of api {api} (key {api_key}); supported versions are {min}..={max}")]
    UnsupportedVersion {
        /// The api's name.
        api: &'static str,
        /// The api's numeric key.
        api_key: u16,
        /// The version that was asked for.
        version: u16,
        /// Lowest supported version.
        min: u16,
        /// Highest supported version.
        max: u16,
    },
    /// A frame header announced more bytes than the configured maximum.
    #[error("frame of {length} bytes exceeds the maximum of {max} bytes; send smaller batches or raise the broker's max frame size")]
    FrameTooLarge {
        /// The announced (or attempted) payload length.
        length: u64,
        /// The configured maximum.
        max: u32,
    },
    /// The stream ended in the middle of a frame: the peer closed the connection early.
    #[error("connection closed in the middle of a frame: {buffered} of {expected} bytes received")]
    TruncatedFrame {
        /// Bytes of the frame (header included) that had arrived.
        buffered: usize,
        /// Bytes the frame needed (header included), when the header was complete.
        expected: u64,
    },
    /// The transport under the frame codec failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A record batch's stored CRC-32C does not match its contents: the bytes were damaged.
    #[error("record batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}; the batch is corrupt")]
    CrcMismatch {
        /// The CRC stored in the batch header.
        stored: u32,
        /// The CRC computed over the batch.
        computed: u32,
    },
    /// A record batch of a format other than RecordBatch v2.
    #[error("unsupported record batch magic {0}: sluice reads only RecordBatch v2 (magic 2); upgrade the producer")]
    UnsupportedMagic(i8),
    /// A compressed record batch would decompress past the bound its reader set: a
    /// decompression bomb, or a batch built for a larger limit.
    #[error("the {codec} records of the batch decompress to more than {limit} bytes, the most a batch may hold; refused before allocating them (a decompression bomb, or a producer batch far too large)")]
    DecompressedTooLarge {
        /// The codec's name.
        codec: &'static str,
        /// The bound, in decompressed bytes.
        limit: usize,
    },
    /// Compressed records that do not decode: damaged, or not the framing Kafka uses.
    #[error("the {codec} records of the batch do not decompress: {reason}")]
    Decompress {
        /// The codec's name.
        codec: &'static str,
        /// What the decoder said.
        reason: String,
    },
}
