//! The four codecs of Kafka's record batches, with Kafka's framing for each, so that a batch
//! compressed by librdkafka, kafka-python or the Java client decodes here and ours decode
//! there. The records section of a batch (everything after its 61-byte header) is what is
//! compressed; the header stays plain and its CRC covers the compressed bytes.
//!
//! | codec | attribute | framing | crate |
//! |---|---|---|---|
//! | gzip | 1 | gzip members (RFC 1952); several concatenated ones decode as one stream | `flate2` on `miniz_oxide` |
//! | snappy | 2 | xerial's snappy-java stream (16-byte header, then `u32` length + raw block), as Kafka writes; plain raw snappy is also read (as Kafka and librdkafka do) | `snap` (raw blocks; the framing is ours) |
//! | lz4 | 3 | the LZ4 frame format, independent 64 KiB blocks, no checksums (the Java client's `KafkaLZ4BlockOutputStream` settings) | `lz4_flex` (safe encode and decode) |
//! | zstd | 4 | one zstd frame with its content size | `zstd` (the C library) |
//!
//! Decompression is bounded: every decoder gets a limit and refuses, with
//! [`Error::DecompressedTooLarge`], input that would decompress past it. Nothing is allocated
//! from a size the input claims; output grows only as it is produced (snappy's raw blocks,
//! which state their size up front, are checked against what is left of the limit before
//! the block is allocated), and zstd's window is capped at [`ZSTD_WINDOW_LOG_MAX`], so a
//! decompression bomb costs at most the limit, never the memory it asks for.

use std::io::{Read, Write};

use crate::batch::Compression;
use crate::{Error, Result};

/// The default bound on the decompressed records of one batch: 64 MiB, far above any batch a
/// producer builds (sluice's default is 1 MiB of records, Kafka's 16 KiB to 1 MiB), far below
/// what would hurt a broker.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// The largest zstd window a decoder accepts, as a power of two: 16 MiB. zstd levels up to
/// 19 use at most 8 MiB; a frame asking for more (levels 20-22 on large input, or a bomb) is
/// refused before its window is allocated.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// The levels each codec accepts, `None` for a codec without levels.
pub fn level_range(codec: Compression) -> Option<(i32, i32)> {
    match codec {
        Compression::Gzip => Some((1, 9)),
        Compression::Zstd => Some((1, 22)),
        Compression::None | Compression::Snappy | Compression::Lz4 => None,
    }
}

/// Checks that `level` is one `codec` accepts; `None` (the codec's default) always is.
pub fn check_level(codec: Compression, level: Option<i32>) -> Result<()> {
    let Some(level) = level else {
        return Ok(());
    };
    match level_range(codec) {
        Some((low, high)) if (low..=high).contains(&level) => Ok(()),
        Some((low, high)) => Err(Error::Invalid {
            field: "compression level",
            reason: format!("{} takes levels {low} to {high}, not {level}", codec.name()),
        }),
        None => Err(Error::Invalid {
            field: "compression level",
            reason: format!(
                "{} has no levels (sluice's lz4 encoder has one, fast, level); leave the \
                 level out",
                codec.name()
            ),
        }),
    }
}

/// Appends `input` compressed with `codec` (at `level`, or the codec's default: gzip 6,
/// zstd 3) to `out`. `Compression::None` copies it.
pub fn compress(
    codec: Compression,
    level: Option<i32>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    check_level(codec, level)?;
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let level = flate2::Compression::new(level.unwrap_or(6) as u32);
            let mut encoder = flate2::write::GzEncoder::new(out, level);
            encoder.write_all(input)?;
            encoder.finish()?;
        }
        Compression::Snappy => xerial_compress(input, out)?,
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder.write_all(input)?;
            encoder.finish().map_err(|e| codec_error(codec, e))?;
        }
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(input, level.unwrap_or(3))?;
            out.extend_from_slice(&compressed);
        }
    }
    Ok(())
}

/// Decompresses `input`, refusing with [`Error::DecompressedTooLarge`] anything that would
/// take more than `limit` bytes decompressed, before allocating them.
pub fn decompress(codec: Compression, input: &[u8], limit: usize) -> Result<Vec<u8>> {
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(too_large(codec, limit));
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(codec, flate2::read::MultiGzDecoder::new(input), limit),
        Compression::Snappy => snappy_decompress(input, limit),
        Compression::Lz4 => read_bounded(codec, lz4_flex::frame::FrameDecoder::new(input), limit),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| codec_error(codec, e))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| codec_error(codec, e))?;
            read_bounded(codec, decoder, limit)
        }
    }
}

/// Reads a decoder to its end in chunks, so the output grows only with what it produced,
/// and stops at the first byte past `limit`.
fn read_bounded(codec: Compression, mut reader: impl Read, limit: usize) -> Result<Vec<u8>> {
    const CHUNK: usize = 64 * 1024;
    let mut out = Vec::new();
    loop {
        let room = (limit - out.len()).min(CHUNK) + 1;
        let start = out.len();
        out.resize(start + room, 0);
        let read = reader.read(&mut out[start..]);
        let n = *read.as_ref().unwrap_or(&0);
        out.truncate(start + n);
        match read {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(codec_error(codec, e)),
            // read() returned 0 on a non-empty buffer: the end of the stream.
            Ok(0) => return Ok(out),
            Ok(_) if out.len() > limit => return Err(too_large(codec, limit)),
            Ok(_) => {}
        }
    }
}

/// The header of snappy-java's stream format, which Kafka's snappy batches use: a magic, then
/// the format version and the oldest compatible version (both 1), big-endian.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed bytes per block: snappy-java's default, and Kafka's.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

fn xerial_compress(input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    let mut block = vec![0u8; snap::raw::max_compress_len(XERIAL_BLOCK_BYTES)];
    for chunk in input.chunks(XERIAL_BLOCK_BYTES) {
        let n = encoder
            .compress(chunk, &mut block)
            .map_err(|e| codec_error(Compression::Snappy, e))?;
        out.extend_from_slice(&(n as u32).to_be_bytes());
        out.extend_from_slice(&block[..n]);
    }
    Ok(())
}

/// Kafka's snappy: xerial's framing when the input starts with its magic, otherwise one raw
/// snappy block (what librdkafka accepts too).
fn snappy_decompress(input: &[u8], limit: usize) -> Result<Vec<u8>> {
    let codec = Compression::Snappy;
    let mut decoder = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let mut append_block = |block: &[u8], out: &mut Vec<u8>| -> Result<()> {
        let len = snap::raw::decompress_len(block).map_err(|e| codec_error(codec, e))?;
        if len > limit - out.len() {
            return Err(too_large(codec, limit));
        }
        let start = out.len();
        out.resize(start + len, 0);
        let n = decoder
            .decompress(block, &mut out[start..])
            .map_err(|e| codec_error(codec, e))?;
        out.truncate(start + n);
        Ok(())
    };
    if !input.starts_with(&XERIAL_MAGIC) {
        append_block(input, &mut out)?;
        return Ok(out);
    }
    let mut rest = input.get(XERIAL_HEADER_LEN..).ok_or_else(|| {
        codec_error(
            codec,
            "the xerial stream header is cut short (16 bytes expected)",
        )
    })?;
    while !rest.is_empty() {
        let (len, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| codec_error(codec, "a xerial block length is cut short"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > after.len() {
            return Err(codec_error(
                codec,
                format!(
                    "a xerial block claims {len} bytes but {} remain",
                    after.len()
                ),
            ));
        }
        let (block, next) = after.split_at(len);
        append_block(block, &mut out)?;
        rest = next;
    }
    Ok(out)
}

fn too_large(codec: Compression, limit: usize) -> Error {
    Error::DecompressedTooLarge {
        codec: codec.name(),
        limit,
    }
}

fn codec_error(codec: Compression, e: impl std::fmt::Display) -> Error {
    Error::Decompress {
        codec: codec.name(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
