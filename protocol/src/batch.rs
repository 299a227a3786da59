//! Kafka RecordBatch v2 (magic 2), byte for byte: the unit that producers build, the broker
//! validates and stores, and consumers read. Wire and disk hold the same bytes.
//!
//! ```text
//! offset  field                 type   covered by CRC
//!      0  baseOffset            i64    no   (stamped by the leader)
//!      8  batchLength           i32    no   (bytes after this field)
//!     12  partitionLeaderEpoch  i32    no   (stamped by the leader)
//!     16  magic                 i8     no
//!     17  crc                   u32    -    (CRC-32C of bytes 21..end)
//!     21  attributes            i16    yes
//!     23  lastOffsetDelta       i32    yes
//!     27  baseTimestamp         i64    yes
//!     35  maxTimestamp          i64    yes
//!     43  producerId            i64    yes
//!     51  producerEpoch         i16    yes
//!     53  baseSequence          i32    yes
//!     57  recordsCount          i32    yes
//!     61  records...
//! ```
//!
//! Because the CRC starts at `attributes`, the leader assigns `baseOffset` and
//! `partitionLeaderEpoch` in place ([`set_base_offset`], [`set_partition_leader_epoch`])
//! without recomputing it. An idempotent producer's id, epoch and sequence are covered:
//! [`set_producer_stamp`] rewrites them and recomputes the CRC. The broker validates a batch per batch ([`RecordBatch::validate`]:
//! sizes, magic, CRC, counts) and never parses uncompressed records on the hot path; records
//! are decoded by consumers ([`RecordBatch::records`]). A compressed batch (attribute bits
//! 0-2, codecs in [`crate::compression`]) has its records section after the header as one
//! compressed stream; the broker decompresses it once, within a bound, to check it
//! ([`RecordBatch::validate_compressed_records`]), and stores it as it came.

use bytes::{BufMut, Bytes, BytesMut};

use crate::varint::{get_varint, get_varlong, put_varint, put_varlong, varint_len, varlong_len};
use crate::{Error, LeaderEpoch, Offset, Result};

/// Bytes before `batchLength` counts: baseOffset (8) + batchLength (4). Kafka's LOG_OVERHEAD.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed header before the first record.
pub const HEADER_LEN: usize = 61;
/// The only magic value sluice reads and writes.
pub const MAGIC_V2: i8 = 2;
/// Producer id of a batch that is not from an idempotent producer.
pub const NO_PRODUCER_ID: i64 = -1;
/// Producer epoch of a batch that is not from an idempotent producer.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// Base sequence of a batch that is not from an idempotent producer.
pub const NO_SEQUENCE: i32 = -1;
/// Timestamp value meaning "none" (Kafka's NO_TIMESTAMP).
pub const NO_TIMESTAMP: i64 = -1;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const RECORDS_COUNT_AT: usize = 57;

/// Smallest `batchLength`: the header after LOG_OVERHEAD, with no records.
const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
/// Attribute bit 6 (KIP-534): `baseTimestamp` holds the batch's delete horizon, and its
/// records' timestamp deltas count from it.
const DELETE_HORIZON_BIT: i16 = 0x40;

/// Compression codec of a batch, from attribute bits 0-2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Every codec, in attribute order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Kafka's name of the codec (`compression.type`): none, gzip, snappy, lz4, zstd.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The value of attribute bits 0-2 that names the codec.
    pub fn bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    fn from_bits(bits: u8) -> Result<Compression> {
        Ok(match bits {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => {
                return Err(Error::Invalid {
                    field: "record batch attributes",
                    reason: format!("compression codec {other} does not exist (0-4 are defined)"),
                })
            }
        })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;

    /// Parses Kafka's codec names, case-insensitively.
    fn from_str(s: &str) -> Result<Compression> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::Invalid {
                field: "compression codec",
                reason: format!("{s:?} is not one of none, gzip, snappy, lz4, zstd"),
            })
    }
}

/// The fixed 61-byte header of a batch, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    /// Bytes after the `batchLength` field; the whole batch is `batch_length + 12` bytes.
    pub batch_length: i32,
    pub partition_leader_epoch: LeaderEpoch,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `buf` without checking anything but its size.
    /// Use [`RecordBatch::validate`] for bytes from outside.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader> {
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated {
                context: "record batch header",
                needed: HEADER_LEN - buf.len(),
            });
        }
        let i16_at = |at: usize| i16::from_be_bytes([buf[at], buf[at + 1]]);
        let i32_at = |at: usize| i32::from_be_bytes(array(&buf[at..at + 4]));
        let i64_at = |at: usize| i64::from_be_bytes(array(&buf[at..at + 8]));
        Ok(BatchHeader {
            base_offset: Offset(i64_at(BASE_OFFSET_AT)),
            batch_length: i32_at(BATCH_LENGTH_AT),
            partition_leader_epoch: LeaderEpoch(i32_at(LEADER_EPOCH_AT)),
            magic: buf[MAGIC_AT] as i8,
            crc: i32_at(CRC_AT) as u32,
            attributes: i16_at(ATTRIBUTES_AT),
            last_offset_delta: i32_at(23),
            base_timestamp: i64_at(27),
            max_timestamp: i64_at(35),
            producer_id: i64_at(PRODUCER_ID_AT),
            producer_epoch: i16_at(51),
            base_sequence: i32_at(53),
            records_count: i32_at(RECORDS_COUNT_AT),
        })
    }

    /// Size of the whole batch in bytes, header included.
    pub fn total_len(&self) -> u32 {
        // validate() guarantees batch_length >= MIN_BATCH_LENGTH; clamp for raw parses.
        self.batch_length.max(0) as u32 + LOG_OVERHEAD as u32
    }

    /// Offset of the batch's last record (also the last offset it occupies).
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(i64::from(self.last_offset_delta))
    }

    /// Offset right after this batch.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }

    /// The compression codec named by attribute bits 0-2.
    pub fn compression(&self) -> Result<Compression> {
        Compression::from_bits((self.attributes & COMPRESSION_MASK) as u8)
    }

    /// True when the broker set the timestamps (LogAppendTime), false for CreateTime.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// True for a batch written inside a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// True for a control batch (transaction markers), which holds no user records.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// The batch's delete horizon (KIP-534), when a log cleaner set one: after it, the
    /// cleaner removes the batch's tombstones (or the marker, of a transaction with no
    /// records left). Set the first time a cleaner keeps such a batch, to that time plus
    /// `delete.retention.ms`, so the retention counts from when the broker first cleaned
    /// it, not from the records' timestamps, which producers set. It takes the
    /// `baseTimestamp` field, whose records' timestamps then count from it.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }

    /// This header with `horizon` as its delete horizon, for [`rebuild_batch`], which
    /// encodes the records' timestamps from it.
    pub fn with_delete_horizon(mut self, horizon: i64) -> BatchHeader {
        self.attributes |= DELETE_HORIZON_BIT;
        self.base_timestamp = horizon;
        self
    }
}

fn array<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    out
}

/// Reads the size of the batch that starts at `buf` from its first 12 bytes. `Ok(None)`
/// means fewer than 12 bytes are available. A length that cannot be a batch is an error.
pub fn peek_total_len(buf: &[u8]) -> Result<Option<u32>> {
    if buf.len() < LOG_OVERHEAD {
        return Ok(None);
    }
    let batch_length = i32::from_be_bytes(array(&buf[BATCH_LENGTH_AT..LOG_OVERHEAD]));
    if batch_length < MIN_BATCH_LENGTH {
        return Err(Error::Invalid {
            field: "record batch length",
            reason: format!("{batch_length} is less than the {MIN_BATCH_LENGTH}-byte header"),
        });
    }
    Ok(Some(batch_length as u32 + LOG_OVERHEAD as u32))
}

/// Computes the CRC-32C a batch must carry: over attributes..end.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Computes a batch's CRC and writes it in ([`BatchBuilder::build_without_crc`]).
///
/// # Panics
/// If `batch` is shorter than a batch header.
pub fn set_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Stamps `baseOffset` in place. The CRC does not cover it, so the batch stays valid.
///
/// # Panics
/// If `batch` is shorter than a batch header: callers pass validated batches.
pub fn set_base_offset(batch: &mut [u8], base_offset: Offset) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.0.to_be_bytes());
}

/// Stamps `partitionLeaderEpoch` in place. The CRC does not cover it.
///
/// # Panics
/// If `batch` is shorter than a batch header: callers pass validated batches.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: LeaderEpoch) {
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.0.to_be_bytes());
}

/// Marks a batch's timestamps as the broker's (LogAppendTime, a topic's
/// `message.timestamp.type`): the timestamp type bit is set, the max timestamp becomes
/// `now_ms` (every record of the batch reads as that time) and the CRC is recomputed, as
/// Kafka stamps a batch in place. The records are untouched.
///
/// ```
/// use sluice_protocol::batch::{set_log_append_time, BatchBuilder, RecordBatch};
/// let mut builder = BatchBuilder::new();
/// builder.append(1_700_000_000_000, None, Some(b"v"), &[]);
/// let mut bytes = bytes::BytesMut::from(builder.build());
/// set_log_append_time(&mut bytes, 1_800_000_000_000);
/// let batch = RecordBatch::validate(bytes.freeze()).unwrap();
/// assert!(batch.header().is_log_append_time());
/// let record = batch.records().unwrap().next().unwrap().unwrap();
/// assert_eq!(record.timestamp, 1_800_000_000_000);
/// ```
///
/// # Panics
/// If `batch` is shorter than a batch header: callers pass validated batches.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = i16::from_be_bytes([batch[ATTRIBUTES_AT], batch[ATTRIBUTES_AT + 1]]);
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]
        .copy_from_slice(&(attributes | TIMESTAMP_TYPE_BIT).to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    set_crc(batch);
}

/// Rewrites the producer id, producer epoch and base sequence of a built batch and
/// recomputes its CRC (these fields are covered by it). An idempotent producer stamps a
/// batch when it first sends it, and again in a new epoch after it lost track of its
/// sequences; the records, which the sequence does not appear in, stay as built.
///
/// ```
/// use sluice_protocol::batch::{set_producer_stamp, BatchBuilder, ProducerStamp, RecordBatch};
/// let mut builder = BatchBuilder::new();
/// builder.append(1_700_000_000_000, None, Some(b"v"), &[]);
/// let mut bytes = bytes::BytesMut::from(builder.build());
/// let stamp = ProducerStamp { producer_id: 7, producer_epoch: 1, base_sequence: 42 };
/// set_producer_stamp(&mut bytes, stamp);
/// let batch = RecordBatch::validate(bytes.freeze()).unwrap();
/// assert_eq!(batch.header().base_sequence, 42);
/// ```
///
/// # Panics
/// If `batch` is shorter than a batch header: callers pass batches they built.
pub fn set_producer_stamp(batch: &mut [u8], stamp: ProducerStamp) {
    write_producer_stamp(batch, stamp);
    set_crc(batch);
}

/// Writes the producer id, producer epoch and base sequence of a batch built without its
/// CRC ([`BatchBuilder::build_without_crc`]), leaving the CRC to [`set_crc`].
///
/// # Panics
/// If `batch` is shorter than a batch header.
pub fn write_producer_stamp(batch: &mut [u8], stamp: ProducerStamp) {
    let mut fields = &mut batch[PRODUCER_ID_AT..RECORDS_COUNT_AT];
    fields.put_i64(stamp.producer_id);
    fields.put_i16(stamp.producer_epoch);
    fields.put_i32(stamp.base_sequence);
}

/// One whole, validated record batch: the header checked, the CRC matched, the sizes and
/// counts consistent. Cheap to clone (the bytes are shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Validates that `bytes` is exactly one RecordBatch v2 as a log may hold it: magic 2,
    /// `batchLength` equal to the bytes given, CRC-32C correct, a known compression codec,
    /// and `recordsCount` consistent with `lastOffsetDelta` (at most `lastOffsetDelta + 1`
    /// records: compaction leaves gaps in the offsets, and an empty batch, header only,
    /// where it removed every record of an idempotent producer's last batch, as Kafka
    /// does). Records themselves are not parsed. A producer's batch is held to more:
    /// [`RecordBatch::validate_produced`].
    pub fn validate(bytes: Bytes) -> Result<RecordBatch> {
        let header = BatchHeader::parse(&bytes)?;
        if header.magic != MAGIC_V2 {
            return Err(Error::UnsupportedMagic(header.magic));
        }
        let total = peek_total_len(&bytes)?.unwrap_or(0) as usize;
        if total != bytes.len() {
            return Err(Error::Invalid {
                field: "record batch length",
                reason: format!(
                    "header says the batch is {total} bytes but {} bytes were given",
                    bytes.len()
                ),
            });
        }
        let computed = compute_crc(&bytes);
        if computed != header.crc {
            return Err(Error::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
        header.compression()?;
        check_counts(&header, bytes.len())?;
        Ok(RecordBatch { header, bytes })
    }

    /// [`RecordBatch::validate`], plus what a batch fresh from a producer must also be: at
    /// least one record, and for an uncompressed batch of a non-idempotent producer exactly
    /// `lastOffsetDelta + 1` of them (gaps are left by compaction only). The leader's
    /// append uses this; stored and replicated batches need only `validate`.
    pub fn validate_produced(bytes: Bytes) -> Result<RecordBatch> {
        let batch = Self::validate(bytes)?;
        check_produced_counts(&batch.header, batch.bytes.len())?;
        Ok(batch)
    }

    /// The decoded header (reflects in-place stamps made before validation).
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, exactly as on the wire and on disk.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Gives the bytes back.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Decodes the records, decompressing them first if the batch is compressed (at most
    /// [`MAX_DECOMPRESSED_BYTES`](crate::compression::MAX_DECOMPRESSED_BYTES)). Keys, values
    /// and header values are slices of the batch, or of its one decompressed buffer.
    pub fn records(&self) -> Result<Records<'_>> {
        self.records_within(crate::compression::MAX_DECOMPRESSED_BYTES)
    }

    /// [`records`](Self::records) with its own bound on the decompressed size: a batch
    /// whose records would decompress past `limit` bytes is refused with
    /// [`Error::DecompressedTooLarge`] before they are allocated.
    pub fn records_within(&self, limit: usize) -> Result<Records<'_>> {
        let (buf, pos) = match self.header.compression()? {
            Compression::None => (self.bytes.clone(), HEADER_LEN),
            codec => {
                let plain =
                    crate::compression::decompress(codec, &self.bytes[HEADER_LEN..], limit)?;
                (Bytes::from(plain), 0)
            }
        };
        Ok(Records {
            header: self.header,
            buf,
            pos,
            remaining: self.header.records_count,
            last_delta: -1,
            batch: std::marker::PhantomData,
        })
    }

    /// Checks the records a broker cannot take on trust in a compressed batch: they
    /// decompress within `limit` bytes, every record's framing parses, their number is
    /// `recordsCount` with nothing after the last, and their offset deltas grow within
    /// `lastOffsetDelta`, the last one equal to it. An uncompressed batch passes without
    /// being parsed: its records are what the CRC covers, and consumers check them.
    pub fn validate_compressed_records(&self, limit: usize) -> Result<()> {
        if self.header.compression()? == Compression::None {
            return Ok(());
        }
        let mut records = self.records_within(limit)?;
        for record in records.by_ref() {
            record?;
        }
        if records.last_delta != self.header.last_offset_delta {
            return Err(Error::Invalid {
                field: "record batch counts",
                reason: format!(
                    "the last record's offset delta is {} but lastOffsetDelta is {}",
                    records.last_delta, self.header.last_offset_delta
                ),
            });
        }
        Ok(())
    }
}

fn check_counts(header: &BatchHeader, total_len: usize) -> Result<()> {
    let invalid = |reason: String| Error::Invalid {
        field: "record batch counts",
        reason,
    };
    let record_bytes = total_len - HEADER_LEN;
    if header.records_count < 0 || (header.records_count == 0 && record_bytes > 0) {
        return Err(invalid(format!(
            "recordsCount is {} with {record_bytes} bytes of records",
            header.records_count
        )));
    }
    if header.last_offset_delta < 0 || header.last_offset_delta < header.records_count - 1 {
        return Err(invalid(format!(
            "lastOffsetDelta {} cannot cover {} records",
            header.last_offset_delta, header.records_count
        )));
    }
    // An uncompressed record takes at least 7 bytes (length, attributes, timestampDelta,
    // offsetDelta, key length, value length, header count), which bounds the count.
    if header.compression().ok() == Some(Compression::None)
        && header.records_count as usize > record_bytes / 7
    {
        return Err(invalid(format!(
            "{} records cannot fit in {record_bytes} bytes",
            header.records_count
        )));
    }
    Ok(())
}

/// The counts a producer's batch must have beyond [`check_counts`].
fn check_produced_counts(header: &BatchHeader, total_len: usize) -> Result<()> {
    let invalid = |reason: String| Error::Invalid {
        field: "record batch counts",
        reason,
    };
    if header.records_count < 1 {
        return Err(invalid(format!(
            "recordsCount is {}; a batch holds at least one record",
            header.records_count
        )));
    }
    let uncompressed = header.compression().ok() == Some(Compression::None);
    if uncompressed
        && header.last_offset_delta != header.records_count - 1
        && header.producer_id < 0
    {
        // Only compaction leaves gaps; a producer's records have consecutive offsets.
        return Err(invalid(format!(
            "lastOffsetDelta {} does not match {} records ({} bytes)",
            header.last_offset_delta, header.records_count, total_len
        )));
    }
    Ok(())
}

/// Splits bytes holding whole batches back to back (a fetch response, a segment read) into
/// validated batches. A truncated or corrupt batch yields an error and ends the iteration.
pub struct Batches {
    rest: Bytes,
    failed: bool,
}

impl Batches {
    /// Iterates the batches in `bytes`.
    pub fn new(bytes: Bytes) -> Batches {
        Batches {
            rest: bytes,
            failed: false,
        }
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let result = match peek_total_len(&self.rest) {
            Ok(Some(len)) if len as usize <= self.rest.len() => {
                RecordBatch::validate(self.rest.split_to(len as usize))
            }
            Ok(Some(len)) => Err(Error::Truncated {
                context: "record batch",
                needed: len as usize - self.rest.len(),
            }),
            Ok(None) => Err(Error::Truncated {
                context: "record batch length",
                needed: LOG_OVERHEAD - self.rest.len(),
            }),
            Err(e) => Err(e),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// A record header: a key (UTF-8 by convention, not checked) and a nullable value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One record of a batch, with its absolute offset and timestamp resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: Offset,
    /// Milliseconds since the Unix epoch (CreateTime, or LogAppendTime when the batch says so).
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Iterator over the records of a batch (decompressed first when it is compressed). Every
/// length is checked against the records' bytes; a record that does not parse ends the
/// iteration with an error.
pub struct Records<'a> {
    header: BatchHeader,
    /// The records: the batch itself (from `HEADER_LEN`) or its decompressed records.
    buf: Bytes,
    pos: usize,
    remaining: i32,
    /// The previous record's offset delta: deltas must grow within `0..=lastOffsetDelta`.
    last_delta: i32,
    batch: std::marker::PhantomData<&'a RecordBatch>,
}

impl Iterator for Records<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            if self.pos != self.buf.len() {
                let trailing = self.buf.len() - self.pos;
                self.pos = self.buf.len();
                return Some(Err(Error::Invalid {
                    field: "record batch",
                    reason: format!("{trailing} bytes after the last record"),
                }));
            }
            return None;
        }
        self.remaining -= 1;
        let result = self.parse_record();
        if result.is_err() {
            self.remaining = 0;
            self.pos = self.buf.len();
        }
        Some(result)
    }
}

impl Records<'_> {
    fn parse_record(&mut self) -> Result<Record> {
        let buf: &[u8] = &self.buf;
        let length = get_varint(buf, &mut self.pos)?;
        let start = self.pos;
        let end = start
            .checked_add(usize::try_from(length).map_err(|_| negative("record length"))?)
            .filter(|&end| end <= buf.len())
            .ok_or(Error::Truncated {
                context: "record",
                needed: length as usize,
            })?;
        let body = &buf[..end];
        let mut pos = start;
        if body.get(pos).is_none() {
            return Err(Error::Truncated {
                context: "record attributes",
                needed: 1,
            });
        }
        pos += 1; // record attributes: unused in v2
        let timestamp_delta = get_varlong(body, &mut pos)?;
        let offset_delta = get_varint(body, &mut pos)?;
        if offset_delta <= self.last_delta || offset_delta > self.header.last_offset_delta {
            return Err(Error::Invalid {
                field: "record offset delta",
                reason: format!(
                    "{offset_delta} after {} is outside the batch's 0..={} or goes backwards",
                    self.last_delta, self.header.last_offset_delta
                ),
            });
        }
        self.last_delta = offset_delta;
        let key = self.nullable_bytes(body, &mut pos)?;
        let value = self.nullable_bytes(body, &mut pos)?;
        let n_headers = get_varint(body, &mut pos)?;
        // Each header takes at least 2 bytes, which bounds the allocation.
        if n_headers < 0 || n_headers as usize > (end - pos) / 2 {
            return Err(Error::Invalid {
                field: "record header count",
                reason: format!("{n_headers} headers cannot fit in {} bytes", end - pos),
            });
        }
        let mut headers = Vec::with_capacity(n_headers as usize);
        for _ in 0..n_headers {
            let key = self
                .nullable_bytes(body, &mut pos)?
                .ok_or_else(|| negative("record header key length"))?;
            let value = self.nullable_bytes(body, &mut pos)?;
            headers.push(Header { key, value });
        }
        if pos != end {
            return Err(Error::Invalid {
                field: "record",
                reason: format!(
                    "length says {length} bytes but the fields take {}",
                    pos - start
                ),
            });
        }
        self.pos = end;
        let header = &self.header;
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(timestamp_delta)
        };
        Ok(Record {
            offset: header.base_offset.plus(i64::from(offset_delta)),
            timestamp,
            key,
            value,
            headers,
        })
    }

    fn nullable_bytes(&self, body: &[u8], pos: &mut usize) -> Result<Option<Bytes>> {
        let len = get_varint(body, pos)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| negative("record field length"))?;
        if *pos + len > body.len() {
            return Err(Error::Truncated {
                context: "record field",
                needed: *pos + len - body.len(),
            });
        }
        let out = self.buf.slice(*pos..*pos + len);
        *pos += len;
        Ok(Some(out))
    }
}

fn negative(field: &'static str) -> Error {
    Error::Invalid {
        field,
        reason: "negative length".into(),
    }
}

/// Producer identity stamped into a batch by an idempotent producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Default for ProducerStamp {
    /// A non-idempotent producer: id, epoch and sequence all -1.
    fn default() -> Self {
        ProducerStamp {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        }
    }
}

/// Builds one uncompressed RecordBatch v2, record by record, into a single buffer; `build`
/// fills in the header and the CRC. Base offset 0 and leader epoch -1 until the leader
/// stamps them.
///
/// ```
/// use sluice_protocol::batch::{BatchBuilder, RecordBatch};
/// let mut builder = BatchBuilder::new();
/// builder.append(1_700_000_000_000, Some(b"key"), Some(b"value"), &[]);
/// let batch = RecordBatch::validate(builder.build()).unwrap();
/// assert_eq!(batch.header().records_count, 1);
/// ```
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    stamp: ProducerStamp,
    /// The attributes' transactional and control bits (the codec's are set on compression).
    attributes: i16,
    n_records: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// A builder for a batch of a non-idempotent producer.
    pub fn new() -> BatchBuilder {
        Self::with_capacity(ProducerStamp::default(), 0)
    }

    /// A builder with the producer's id, epoch and base sequence, and room for
    /// `capacity_bytes` of records before it reallocates.
    pub fn with_capacity(stamp: ProducerStamp, capacity_bytes: usize) -> BatchBuilder {
        Self::in_buffer(stamp, BytesMut::with_capacity(HEADER_LEN + capacity_bytes))
    }

    /// A builder that writes into `buf` (emptied first): a buffer kept from an earlier
    /// batch, whose pages are already the process's (a producer's buffer pool).
    pub fn in_buffer(stamp: ProducerStamp, mut buf: BytesMut) -> BatchBuilder {
        buf.clear();
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            buf,
            stamp,
            attributes: 0,
            n_records: 0,
            base_timestamp: NO_TIMESTAMP,
            max_timestamp: NO_TIMESTAMP,
        }
    }

    /// Marks the batch as part of a transaction (the attributes' transactional bit): a
    /// transactional producer's records, which read_committed consumers see only once a
    /// commit marker follows them.
    pub fn transactional(mut self) -> BatchBuilder {
        self.attributes |= TRANSACTIONAL_BIT;
        self
    }

    /// Marks the batch as a control batch (transactional too): a transaction marker the
    /// broker writes, whose one record is a [`crate::control::ControlMarker`].
    pub fn control(mut self) -> BatchBuilder {
        self.attributes |= TRANSACTIONAL_BIT | CONTROL_BIT;
        self
    }

    /// Records appended so far.
    pub fn len(&self) -> i32 {
        self.n_records
    }

    /// True before the first append.
    pub fn is_empty(&self) -> bool {
        self.n_records == 0
    }

    /// Bytes the batch takes if built now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes a record with these fields adds to the batch, for producers that cap batch size.
    pub fn record_size(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> usize {
        let body = record_body_len(i64::MAX, i32::MAX, key, value, headers);
        varint_len(body as i32) + body
    }

    /// Appends a record with timestamp `timestamp_ms` (ms since the Unix epoch).
    pub fn append(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        if self.n_records == 0 {
            self.base_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let timestamp_delta = timestamp_ms.wrapping_sub(self.base_timestamp);
        let offset_delta = self.n_records;
        let body_len = record_body_len(timestamp_delta, offset_delta, key, value, headers);
        let buf = &mut self.buf;
        put_varint(buf, body_len as i32);
        buf.put_u8(0); // record attributes
        put_varlong(buf, timestamp_delta);
        put_varint(buf, offset_delta);
        put_nullable(buf, key);
        put_nullable(buf, value);
        put_varint(buf, headers.len() as i32);
        for (header_key, header_value) in headers {
            put_nullable(buf, Some(header_key));
            put_nullable(buf, *header_value);
        }
        self.n_records += 1;
    }

    /// Fills in the header and CRC and returns the batch's bytes, uncompressed.
    ///
    /// # Panics
    /// If no record was appended: a batch holds at least one record.
    pub fn build(self) -> Bytes {
        self.finish(true)
    }

    /// As [`build`](Self::build), with the CRC left 0: for a producer that fills it in
    /// later with [`set_crc`], on another thread than the one appending records. Nothing
    /// may read the batch before: it does not validate.
    ///
    /// # Panics
    /// If no record was appended: a batch holds at least one record.
    pub fn build_without_crc(self) -> Bytes {
        self.finish(false)
    }

    /// Fills in the header (and the CRC when `crc`) and returns the batch's bytes.
    fn finish(self, crc: bool) -> Bytes {
        let fields = HeaderFields {
            attributes: self.attributes,
            n_records: self.n_records,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.max_timestamp,
            stamp: self.stamp,
        };
        fields.write(self.buf, crc)
    }

    /// Builds the batch with its records compressed by `codec` (at `level`, or the codec's
    /// default), as Kafka does: the header stays plain, the records section after it is
    /// one compressed stream, and the CRC covers the compressed bytes. When compression
    /// does not make the batch smaller (random bytes, tiny batches) the batch is built
    /// uncompressed instead, so a batch never outgrows the size it was filled to; readers
    /// take either alike.
    ///
    /// ```
    /// use sluice_protocol::batch::{BatchBuilder, Compression, RecordBatch};
    /// let mut builder = BatchBuilder::new();
    /// for _ in 0..100 {
    ///     builder.append(1_700_000_000_000, None, Some(b"{\"event\":\"click\"}"), &[]);
    /// }
    /// let batch = RecordBatch::validate(builder.build_compressed(Compression::Zstd, None).unwrap()).unwrap();
    /// assert_eq!(batch.header().compression().unwrap(), Compression::Zstd);
    /// assert_eq!(batch.records().unwrap().count(), 100);
    /// ```
    ///
    /// # Errors
    /// A level the codec does not take ([`check_level`](crate::compression::check_level)).
    ///
    /// # Panics
    /// If no record was appended: a batch holds at least one record.
    pub fn build_compressed(self, codec: Compression, level: Option<i32>) -> Result<Bytes> {
        crate::compression::check_level(codec, level)?;
        compress_batch(self.build(), codec, level)
    }
}

/// Compresses the records of a built, uncompressed batch with `codec` (at `level`, or the
/// codec's default), keeping every header field but `batchLength`, the codec bits of
/// `attributes` and the CRC: a producer stamps a batch, then compresses it off its lock.
/// A batch already compressed, `Compression::None`, or a batch the codec would not shrink
/// comes back as it is.
///
/// # Errors
/// A level the codec does not take, or bytes that are not a batch header.
pub fn compress_batch(batch: Bytes, codec: Compression, level: Option<i32>) -> Result<Bytes> {
    crate::compression::check_level(codec, level)?;
    let header = BatchHeader::parse(&batch)?;
    if codec == Compression::None || header.compression()? != Compression::None {
        return Ok(batch);
    }
    let records = &batch[HEADER_LEN..];
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() / 2);
    out.extend_from_slice(&batch[..HEADER_LEN]);
    crate::compression::compress(codec, level, records, &mut out)?;
    if out.len() >= batch.len() {
        return Ok(batch);
    }
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[BATCH_LENGTH_AT..LOG_OVERHEAD].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !COMPRESSION_MASK) | codec.bits();
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(Bytes::from(out))
}

/// Rebuilds a stored batch with only `records` (a subset of its own, in offset order): the
/// log cleaner's rewrite of a compacted batch. Every header field stays (base offset,
/// `lastOffsetDelta`, base timestamp, producer id, epoch and base sequence, leader epoch,
/// attributes) but the length, `recordsCount`, the CRC and, under CreateTime, the max
/// timestamp (the newest surviving record's); each record keeps its offset
/// and timestamp (as deltas from the batch's). The records are compressed again with the
/// batch's codec (at its default level), or left uncompressed where that codec would not
/// shrink them, as [`compress_batch`] decides. With no records the result is the header
/// alone, uncompressed, with `recordsCount` 0: Kafka's empty batch, which keeps an
/// idempotent producer's last sequence in the log.
///
/// # Errors
/// A record outside the batch's offsets, or records out of order; a compression failure.
pub fn rebuild_batch(header: &BatchHeader, records: &[Record]) -> Result<Bytes> {
    let codec = header.compression()?;
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    buf.put_bytes(0, HEADER_LEN);
    let mut previous_delta = -1i64;
    for record in records {
        let offset_delta = record.offset.0 - header.base_offset.0;
        if offset_delta <= previous_delta || offset_delta > i64::from(header.last_offset_delta) {
            return Err(Error::Invalid {
                field: "rebuilt batch",
                reason: format!(
                    "record offset {} is outside the batch at {} or out of order",
                    record.offset, header.base_offset
                ),
            });
        }
        previous_delta = offset_delta;
        // Under LogAppendTime readers take the batch's max timestamp; the delta is unused.
        let timestamp_delta = if header.is_log_append_time() {
            0
        } else {
            record.timestamp.wrapping_sub(header.base_timestamp)
        };
        let headers: Vec<(&[u8], Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|h| (&h.key[..], h.value.as_deref()))
            .collect();
        let (key, value) = (record.key.as_deref(), record.value.as_deref());
        let delta = offset_delta as i32;
        let body_len = record_body_len(timestamp_delta, delta, key, value, &headers);
        put_varint(&mut buf, body_len as i32);
        buf.put_u8(0);
        put_varlong(&mut buf, timestamp_delta);
        put_varint(&mut buf, delta);
        put_nullable(&mut buf, key);
        put_nullable(&mut buf, value);
        put_varint(&mut buf, headers.len() as i32);
        for (header_key, header_value) in &headers {
            put_nullable(&mut buf, Some(header_key));
            put_nullable(&mut buf, *header_value);
        }
    }
    let batch_length = (buf.len() - LOG_OVERHEAD) as i32;
    // Under CreateTime the batch's max timestamp is its newest surviving record's (as
    // Kafka recomputes it), so a timestamp lookup never lands on a batch that holds no
    // record at or after it.
    let mut header = *header;
    if !header.is_log_append_time() {
        if let Some(max) = records.iter().map(|r| r.timestamp).max() {
            header.max_timestamp = max;
        }
    }
    buf[..HEADER_LEN].copy_from_slice(&header_bytes(&header));
    buf[BATCH_LENGTH_AT..LOG_OVERHEAD].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = header.attributes & !COMPRESSION_MASK;
    buf[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let count = records.len() as i32;
    buf[RECORDS_COUNT_AT..HEADER_LEN].copy_from_slice(&count.to_be_bytes());
    let crc = compute_crc(&buf);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    if records.is_empty() {
        return Ok(buf.freeze());
    }
    compress_batch(buf.freeze(), codec, None)
}

/// A header's 61 bytes as they are encoded (the CRC as the header holds it).
fn header_bytes(header: &BatchHeader) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    let mut w = &mut out[..];
    w.put_i64(header.base_offset.0);
    w.put_i32(header.batch_length);
    w.put_i32(header.partition_leader_epoch.0);
    w.put_i8(header.magic);
    w.put_u32(header.crc);
    w.put_i16(header.attributes);
    w.put_i32(header.last_offset_delta);
    w.put_i64(header.base_timestamp);
    w.put_i64(header.max_timestamp);
    w.put_i64(header.producer_id);
    w.put_i16(header.producer_epoch);
    w.put_i32(header.base_sequence);
    w.put_i32(header.records_count);
    out
}

/// The header fields a builder fills in when it builds.
struct HeaderFields {
    attributes: i16,
    n_records: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    stamp: ProducerStamp,
}

impl HeaderFields {
    /// Writes the header into the first `HEADER_LEN` bytes of `buf` (records after them),
    /// then the CRC.
    /// Fills in the header; the CRC too when `crc`, else it stays 0.
    fn write(self, mut buf: BytesMut, crc: bool) -> Bytes {
        assert!(
            self.n_records > 0,
            "a record batch needs at least one record"
        );
        let batch_length = (buf.len() - LOG_OVERHEAD) as i32;
        let mut header = &mut buf[..HEADER_LEN];
        header.put_i64(0); // baseOffset: stamped by the leader
        header.put_i32(batch_length);
        header.put_i32(LeaderEpoch::UNKNOWN.0); // stamped by the leader
        header.put_i8(MAGIC_V2);
        header.put_u32(0); // crc: below
        header.put_i16(self.attributes); // uncompressed, CreateTime
        header.put_i32(self.n_records - 1);
        header.put_i64(self.base_timestamp);
        header.put_i64(self.max_timestamp);
        header.put_i64(self.stamp.producer_id);
        header.put_i16(self.stamp.producer_epoch);
        header.put_i32(self.stamp.base_sequence);
        header.put_i32(self.n_records);
        if crc {
            set_crc(&mut buf);
        }
        buf.freeze()
    }
}

fn record_body_len(
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&[u8], Option<&[u8]>)],
) -> usize {
    let nullable_len = |b: Option<&[u8]>| match b {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i32) + b.len(),
    };
    let headers_len: usize = headers
        .iter()
        .map(|(k, v)| nullable_len(Some(k)) + nullable_len(*v))
        .sum();
    1 + varlong_len(timestamp_delta)
        + varint_len(offset_delta)
        + nullable_len(key)
        + nullable_len(value)
        + varint_len(headers.len() as i32)
        + headers_len
}

fn put_nullable(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
    }
}

#[cfg(test)]
mod tests;
