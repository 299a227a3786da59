//! The one error type of the protocol crate: why some bytes could not be decoded, or a value
//! could not be encoded. Messages say what was wrong and, where it helps, what to do.

/// Why a codec refused its input. Decoders never panic; they return one of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input ended before a complete value: `needed` more bytes were required.
    #[error("truncated {context}: {needed} more bytes needed")]
    Truncated {
        context: &'static str,
        needed: usize,
    },
    /// A field held a value the format does not allow (negative length, absurd count, ...).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A record batch's stored CRC-32C does not match its contents: the bytes were damaged.
    #[error("record batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}; the batch is corrupt")]
    CrcMismatch { stored: u32, computed: u32 },
    /// A record batch of a format other than RecordBatch v2.
    #[error("unsupported record batch magic {0}: sluice reads only RecordBatch v2 (magic 2); upgrade the producer")]
    UnsupportedMagic(i8),
    /// A record batch compressed with a codec this build cannot decode.
    #[error("unsupported compression codec {0} (attributes bits 0-2); send uncompressed batches")]
    UnsupportedCompression(u8),
}
