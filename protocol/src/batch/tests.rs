//! Tests of the RecordBatch v2 codec: golden vectors written out from the format spec,
//! round trips of arbitrary batches, and totality of validation on damaged input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) computed bit by bit, independent of
/// the `crc32c` crate, so the golden vectors check the crate and the crate checks us.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ if crc & 1 != 0 { 0x82f6_3b78 } else { 0 };
        }
    }
    !crc
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Builds a batch and checks it equals `expected` byte for byte, that the CRC in it is
/// `expected_crc` by both CRC implementations, and that it validates and decodes back.
fn check_golden(builder: BatchBuilder, expected: &str, expected_crc: u32) {
    let built = builder.build();
    let expected = hex(expected);
    assert_eq!(hex_string(&built), hex_string(&expected));
    assert_eq!(crc32c_bitwise(&expected[21..]), expected_crc);
    assert_eq!(compute_crc(&expected), expected_crc);
    let batch = RecordBatch::validate(built).unwrap();
    assert_eq!(batch.header().crc, expected_crc);
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn crc32c_check_value() {
    // The standard check value of CRC-32C (RFC 3720, the CRC catalogue): "123456789".
    assert_eq!(crc32c_bitwise(b"123456789"), 0xe306_9283);
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
}

/// One record, key "key", value "value", at 1_700_000_000_000 ms, no producer id.
/// The bytes below were written field by field from the RecordBatch v2 layout in Kafka's
/// documentation ("Record Batch" and "Record" sections); the CRC was computed over bytes
/// 21.. with the bitwise CRC-32C above (and independently in Python with the same
/// polynomial) before the builder existed.
#[test]
fn golden_single_record() {
    let mut b = BatchBuilder::new();
    b.append(1_700_000_000_000, Some(b"key"), Some(b"value"), &[]);
    check_golden(
        b,
        "0000000000000000 00000040 ffffffff 02 db5e9cdd
         0000 00000000 0000018bcfe56800 0000018bcfe56800
         ffffffffffffffff ffff ffffffff 00000001
         1c 00 00 00 06 6b6579 0a 76616c7565 00",
        0xdb5e_9cdd,
    );
}

/// Two records from an idempotent producer (id 42, epoch 1, base sequence 7): a null key
/// with one header ("h" -> "v"), then a null value whose timestamp is 10 ms *before* the
/// base timestamp (a negative zigzag delta, 0x13).
#[test]
fn golden_two_records_with_header_and_negative_delta() {
    let stamp = ProducerStamp {
        producer_id: 42,
        producer_epoch: 1,
        base_sequence: 7,
    };
    let mut b = BatchBuilder::with_capacity(stamp, 64);
    b.append(1000, None, Some(b"a"), &[(b"h", Some(b"v"))]);
    b.append(990, Some(b"k"), None, &[]);
    check_golden(
        b,
        "0000000000000000 00000045 ffffffff 02 246b6919
         0000 00000001 00000000000003e8 00000000000003e8
         000000000000002a 0001 00000007 00000002
         16 00 00 00 01 02 61 02 02 68 02 76
         0e 00 13 02 02 6b 01 00",
        0x246b_6919,
    );
}

/// Found by the `batch` fuzz target: a record whose offset delta is negative or beyond
/// `lastOffsetDelta` (or not increasing) would claim an offset outside its batch.
#[test]
fn record_offset_deltas_must_stay_inside_the_batch() {
    let stamp = ProducerStamp::default();
    let mut b = BatchBuilder::with_capacity(stamp, 64);
    b.append(1000, None, Some(b"a"), &[(b"h", Some(b"v"))]);
    b.append(990, Some(b"k"), None, &[]);
    let good = b.build().to_vec();
    // The second record is the last 8 bytes: length, attributes, timestampDelta, then the
    // offsetDelta varint (zigzag 1 = 0x02).
    let delta_at = good.len() - 5;
    assert_eq!(good[delta_at], 0x02);
    for (bad_delta, why) in [
        (0x01u8, "negative"),
        (0x00, "repeated"),
        (0x04, "past lastOffsetDelta"),
    ] {
        let mut v = good.clone();
        v[delta_at] = bad_delta;
        let crc = compute_crc(&v);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        let batch = RecordBatch::validate(Bytes::from(v)).unwrap();
        let results: Vec<_> = batch.records().unwrap().collect();
        assert!(results[0].is_ok());
        assert!(
            matches!(results[1], Err(Error::Invalid { .. })),
            "{why} delta accepted"
        );
    }
}

#[test]
fn stamping_offset_and_epoch_keeps_the_crc_valid() {
    let mut b = BatchBuilder::new();
    b.append(5, None, Some(b"x"), &[]);
    b.append(6, None, Some(b"y"), &[]);
    let mut bytes = BytesMut::from(&b.build()[..]);
    set_base_offset(&mut bytes, Offset(1234));
    set_partition_leader_epoch(&mut bytes, LeaderEpoch(7));
    let batch = RecordBatch::validate(bytes.freeze()).unwrap();
    assert_eq!(batch.header().base_offset, Offset(1234));
    assert_eq!(batch.header().last_offset(), Offset(1235));
    assert_eq!(batch.header().partition_leader_epoch, LeaderEpoch(7));
    let offsets: Vec<_> = batch
        .records()
        .unwrap()
        .map(|r| r.unwrap().offset)
        .collect();
    assert_eq!(offsets, [Offset(1234), Offset(1235)]);
}

#[test]
fn restamping_the_producer_fields_recomputes_the_crc() {
    let mut b = BatchBuilder::new();
    b.append(5, None, Some(b"x"), &[]);
    b.append(6, Some(b"k"), Some(b"y"), &[]);
    let unstamped = b.build();
    let stamp = ProducerStamp {
        producer_id: 0x0102_0304_0506_0708,
        producer_epoch: 0x090a,
        base_sequence: i32::MAX,
    };
    let mut bytes = BytesMut::from(unstamped.clone());
    set_producer_stamp(&mut bytes, stamp);
    let batch = RecordBatch::validate(bytes.clone().freeze()).unwrap();
    let header = batch.header();
    assert_eq!(
        (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence
        ),
        (0x0102_0304_0506_0708, 0x090a, i32::MAX)
    );
    assert_eq!(header.records_count, 2);
    // Only the three fields and the CRC changed.
    let changed: Vec<usize> = (0..unstamped.len())
        .filter(|&i| unstamped[i] != bytes[i])
        .collect();
    assert!(
        changed
            .iter()
            .all(|i| (17..21).contains(i) || (43..57).contains(i)),
        "{changed:?}"
    );
    // Back to "not idempotent": the same bytes as built.
    set_producer_stamp(&mut bytes, ProducerStamp::default());
    assert_eq!(bytes.freeze(), unstamped);
}

fn one_record_batch() -> Bytes {
    let mut b = BatchBuilder::new();
    b.append(1, Some(b"k"), Some(b"v"), &[]);
    b.build()
}

#[test]
fn validation_rejects_each_kind_of_damage() {
    let good = one_record_batch();
    let with = |at: usize, byte: u8| {
        let mut v = good.to_vec();
        v[at] = byte;
        Bytes::from(v)
    };
    let err = |b: Bytes| RecordBatch::validate(b).unwrap_err();
    assert!(matches!(err(with(16, 1)), Error::UnsupportedMagic(1)));
    assert!(matches!(
        err(with(good.len() - 1, 0x55)),
        Error::CrcMismatch { .. }
    ));
    assert!(matches!(
        err(good.slice(..good.len() - 1)),
        Error::Invalid { .. }
    ));
    assert!(matches!(err(good.slice(..30)), Error::Truncated { .. }));
    let mut longer = good.to_vec();
    longer.push(0);
    assert!(matches!(err(Bytes::from(longer)), Error::Invalid { .. }));
    // A codec that does not exist, with the CRC fixed up so only the codec is wrong.
    let mut bad_codec = good.to_vec();
    bad_codec[22] = 7;
    let crc = compute_crc(&bad_codec);
    bad_codec[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(err(Bytes::from(bad_codec)), Error::Invalid { .. }));
}

#[test]
fn counts_must_agree_with_last_offset_delta() {
    let patch = |records_count: i32, last_offset_delta: i32| {
        let mut v = one_record_batch().to_vec();
        v[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
        v[57..61].copy_from_slice(&records_count.to_be_bytes());
        let crc = compute_crc(&v);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(v)
    };
    let stored = |c, d| RecordBatch::validate(patch(c, d));
    let produced = |c, d| RecordBatch::validate_produced(patch(c, d));
    assert!(stored(1, 0).is_ok() && produced(1, 0).is_ok());
    assert!(
        stored(0, 0).is_err(),
        "no records counted, record bytes present"
    );
    assert!(stored(1, 5).is_ok(), "a compacted batch has gaps");
    assert!(produced(1, 5).is_err(), "gap without a producer id");
    let patch = |c, d| stored(c, d);
    assert!(patch(2, 0).is_err(), "more records than offsets");
    assert!(
        patch(1_000_000, 999_999).is_err(),
        "more records than bytes"
    );
}

#[test]
fn a_batch_marked_compressed_whose_records_are_not_decodes_to_an_error() {
    let mut v = one_record_batch().to_vec();
    v[22] = 1; // gzip, over plain records
    let crc = compute_crc(&v);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    let batch = RecordBatch::validate(Bytes::from(v)).unwrap();
    assert_eq!(batch.header().compression().unwrap(), Compression::Gzip);
    assert!(matches!(
        batch.records(),
        Err(Error::Decompress { codec: "gzip", .. })
    ));
    assert!(batch.validate_compressed_records(1 << 20).is_err());
}

#[test]
fn batches_iterator_splits_and_stops_at_a_torn_tail() {
    let a = one_record_batch();
    let b = one_record_batch();
    let mut all = BytesMut::new();
    all.extend_from_slice(&a);
    all.extend_from_slice(&b);
    all.extend_from_slice(&b[..20]);
    let results: Vec<_> = Batches::new(all.freeze()).collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().bytes(), &a);
    assert_eq!(results[1].as_ref().unwrap().bytes(), &b);
    assert!(matches!(results[2], Err(Error::Truncated { .. })));
}

type TestRecord = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(Vec<u8>, Option<Vec<u8>>)>,
);

fn arb_record() -> impl Strategy<Value = TestRecord> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
    (
        -1_000_000i64..1_000_000,
        proptest::option::of(bytes()),
        proptest::option::of(bytes()),
        proptest::collection::vec((bytes(), proptest::option::of(bytes())), 0..3),
    )
}

/// Any producer stamp.
fn arb_stamp() -> impl Strategy<Value = ProducerStamp> {
    (any::<i64>(), any::<i16>(), any::<i32>()).prop_map(
        |(producer_id, producer_epoch, base_sequence)| ProducerStamp {
            producer_id,
            producer_epoch,
            base_sequence,
        },
    )
}

fn build(records: &[TestRecord], stamp: ProducerStamp) -> Bytes {
    let mut b = BatchBuilder::with_capacity(stamp, 0);
    for (ts, key, value, headers) in records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        let before = b.size_bytes();
        b.append(
            1_600_000_000_000 + ts,
            key.as_deref(),
            value.as_deref(),
            &headers,
        );
        assert!(
            b.size_bytes() - before
                <= BatchBuilder::record_size(key.as_deref(), value.as_deref(), &headers)
        );
    }
    b.build()
}

proptest! {
    #[test]
    fn batch_round_trip(
        records in proptest::collection::vec(arb_record(), 1..20),
        producer_id in -1i64..1000,
        base_offset in 0i64..1 << 40,
    ) {
        let stamp = ProducerStamp { producer_id, producer_epoch: 3, base_sequence: 11 };
        let mut bytes = BytesMut::from(&build(&records, stamp)[..]);
        set_base_offset(&mut bytes, Offset(base_offset));
        let batch = RecordBatch::validate(bytes.freeze()).unwrap();
        let header = batch.header();
        prop_assert_eq!(header.records_count as usize, records.len());
        prop_assert_eq!(header.producer_id, producer_id);
        prop_assert_eq!(header.max_timestamp, records.iter().map(|r| 1_600_000_000_000 + r.0).max().unwrap());
        let decoded: Vec<Record> = batch.records().unwrap().collect::<Result<_>>().unwrap();
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(got.offset, Offset(base_offset + i as i64));
            prop_assert_eq!(got.timestamp, 1_600_000_000_000 + want.0);
            prop_assert_eq!(got.key.as_deref(), want.1.as_deref());
            prop_assert_eq!(got.value.as_deref(), want.2.as_deref());
            let headers: Vec<(Vec<u8>, Option<Vec<u8>>)> = got.headers.iter()
                .map(|h| (h.key.to_vec(), h.value.as_ref().map(|v| v.to_vec()))).collect();
            prop_assert_eq!(&headers, &want.3);
        }
    }

    /// Stamping a built batch gives the bytes a builder with that stamp would have built,
    /// whatever stamp it had before (a restamp in a new epoch).
    #[test]
    fn a_stamped_batch_equals_one_built_with_the_stamp(
        records in proptest::collection::vec(arb_record(), 1..10),
        first in arb_stamp(),
        second in arb_stamp(),
    ) {
        let mut bytes = BytesMut::from(build(&records, ProducerStamp::default()));
        set_producer_stamp(&mut bytes, first);
        prop_assert_eq!(&bytes[..], &build(&records, first)[..]);
        set_producer_stamp(&mut bytes, second);
        prop_assert_eq!(&bytes[..], &build(&records, second)[..]);
        prop_assert!(RecordBatch::validate(bytes.freeze()).is_ok());
    }

    /// A batch built without its CRC, stamped, then given its CRC, is the batch built with
    /// the stamp.
    #[test]
    fn a_batch_given_its_crc_later_equals_one_built_with_it(
        records in proptest::collection::vec(arb_record(), 1..10),
        stamp in arb_stamp(),
    ) {
        let mut b = BatchBuilder::with_capacity(ProducerStamp::default(), 0);
        for (ts, key, value, headers) in &records {
            let headers: Vec<(&[u8], Option<&[u8]>)> = headers
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_deref()))
                .collect();
            b.append(1_600_000_000_000 + ts, key.as_deref(), value.as_deref(), &headers);
        }
        let mut bytes = BytesMut::from(b.build_without_crc());
        write_producer_stamp(&mut bytes, stamp);
        set_crc(&mut bytes);
        prop_assert_eq!(&bytes[..], &build(&records, stamp)[..]);
    }

    /// Validation and record decoding are total: any damage to a valid batch, and any bytes
    /// at all, give an error or a batch, never a panic.
    #[test]
    fn damaged_batches_never_panic(
        records in proptest::collection::vec(arb_record(), 1..5),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let good = build(&records, ProducerStamp::default());
        let mut v = good.to_vec();
        for (at, byte) in flips {
            let at = at.index(v.len());
            v[at] = byte;
        }
        let v = Bytes::from(v);
        let cut = v.slice(..cut.index(v.len() + 1));
        for input in [v, cut] {
            if let Ok(batch) = RecordBatch::validate(input.clone()) {
                for record in batch.records().into_iter().flatten() {
                    let _ = record;
                }
            }
            for batch in Batches::new(input).flatten() {
                let _ = batch.records().map(|r| r.count());
            }
        }
    }

    /// A batch whose header and CRC are valid but whose record bytes are arbitrary: the
    /// records iterator must reject them cleanly (this is what a consumer sees from a
    /// buggy producer, since the broker does not parse records).
    #[test]
    fn arbitrary_record_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 7..200),
        count in 1i32..30,
    ) {
        let mut v = vec![0u8; HEADER_LEN];
        v.extend_from_slice(&body);
        let batch_length = (v.len() - LOG_OVERHEAD) as i32;
        v[8..12].copy_from_slice(&batch_length.to_be_bytes());
        v[16] = 2;
        v[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        v[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = compute_crc(&v);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
        if let Ok(batch) = RecordBatch::validate(Bytes::from(v)) {
            let _ = batch.records().unwrap().collect::<Vec<_>>();
        }
    }
}

/// Records that compress well whatever the codec: values are a short random token repeated.
fn arb_compressible_record() -> impl Strategy<Value = TestRecord> {
    let token = proptest::collection::vec(any::<u8>(), 1..8);
    let repeated = (token, 32usize..128).prop_map(|(t, n)| t.repeat(n));
    (
        -1_000i64..1_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        repeated.prop_map(Some),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            ),
            0..2,
        ),
    )
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ]
}

fn build_compressed(records: &[TestRecord], stamp: ProducerStamp, codec: Compression) -> Bytes {
    let mut b = BatchBuilder::with_capacity(stamp, 0);
    for (ts, key, value, headers) in records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
            .collect();
        b.append(
            1_600_000_000_000 + ts,
            key.as_deref(),
            value.as_deref(),
            &headers,
        );
    }
    b.build_compressed(codec, None).unwrap()
}

proptest! {
    /// Compress, build, validate, decompress: the records that come back are the records
    /// that went in, for every codec, and the header (counts, timestamps, stamp) is the
    /// uncompressed batch's.
    #[test]
    fn compressed_batch_round_trip(
        records in proptest::collection::vec(arb_compressible_record(), 4..30),
        codec in arb_codec(),
        producer_id in -1i64..1000,
        base_offset in 0i64..1 << 40,
    ) {
        let stamp = ProducerStamp { producer_id, producer_epoch: 3, base_sequence: 11 };
        let plain = RecordBatch::validate(build(&records, stamp)).unwrap();
        let mut bytes = BytesMut::from(&build_compressed(&records, stamp, codec)[..]);
        prop_assert!(bytes.len() < plain.bytes().len());
        set_base_offset(&mut bytes, Offset(base_offset));
        let batch = RecordBatch::validate(bytes.freeze()).unwrap();
        let header = batch.header();
        prop_assert_eq!(header.compression().unwrap(), codec);
        prop_assert_eq!(header.records_count, plain.header().records_count);
        prop_assert_eq!(header.last_offset_delta, plain.header().last_offset_delta);
        prop_assert_eq!(header.max_timestamp, plain.header().max_timestamp);
        prop_assert_eq!(header.base_sequence, 11);
        batch.validate_compressed_records(1 << 20).unwrap();
        let decoded: Vec<Record> = batch.records().unwrap().collect::<Result<_>>().unwrap();
        let mut want: Vec<Record> = plain.records().unwrap().collect::<Result<_>>().unwrap();
        for record in &mut want {
            record.offset = record.offset.plus(base_offset);
        }
        prop_assert_eq!(decoded, want);
    }

    /// A batch that compression would not shrink (a few random bytes) is built uncompressed,
    /// and reads back the same.
    #[test]
    fn a_batch_compression_does_not_shrink_is_built_uncompressed(
        records in proptest::collection::vec(arb_record(), 1..3),
        codec in arb_codec(),
    ) {
        let built = build_compressed(&records, ProducerStamp::default(), codec);
        let plain = build(&records, ProducerStamp::default());
        let batch = RecordBatch::validate(built.clone()).unwrap();
        if batch.header().compression().unwrap() == Compression::None {
            prop_assert_eq!(&built, &plain);
        } else {
            prop_assert!(built.len() < plain.len());
        }
        let decoded: Vec<Record> = batch.records().unwrap().collect::<Result<_>>().unwrap();
        prop_assert_eq!(decoded.len(), records.len());
    }

    /// Damage inside the compressed records of a batch whose CRC is then made right again
    /// (what a buggy producer sends): decoding and the broker's check give an error or the
    /// records, never a panic; and the check refuses whatever does not decode whole.
    #[test]
    fn damaged_compressed_records_never_panic(
        records in proptest::collection::vec(arb_compressible_record(), 4..12),
        codec in arb_codec(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let good = build_compressed(&records, ProducerStamp::default(), codec);
        prop_assert_eq!(BatchHeader::parse(&good).unwrap().compression().unwrap(), codec);
        let mut v = good.to_vec();
        for (at, byte) in flips {
            let at = HEADER_LEN + at.index(v.len() - HEADER_LEN);
            v[at] = byte;
        }
        let keep = HEADER_LEN + 1 + cut.index(v.len() - HEADER_LEN);
        for mut v in [v.clone(), v[..keep].to_vec()] {
            let batch_length = (v.len() - LOG_OVERHEAD) as i32;
            v[8..12].copy_from_slice(&batch_length.to_be_bytes());
            let crc = compute_crc(&v);
            v[17..21].copy_from_slice(&crc.to_be_bytes());
            let batch = RecordBatch::validate(Bytes::from(v)).unwrap();
            let decoded = batch.records().and_then(|r| r.collect::<Result<Vec<_>>>());
            if batch.validate_compressed_records(1 << 20).is_ok() {
                prop_assert_eq!(decoded.unwrap().len(), records.len());
            }
        }
    }
}

#[test]
fn the_broker_check_refuses_a_record_count_that_does_not_match() {
    let records: Vec<TestRecord> = (0..10)
        .map(|i| (i, None, Some(b"abcabcabcabcabcabcabc".repeat(4)), vec![]))
        .collect();
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let good = build_compressed(&records, ProducerStamp::default(), codec);
        for (count, delta) in [(9i32, 9i32), (11, 10), (10, 10)] {
            let mut v = good.to_vec();
            v[23..27].copy_from_slice(&delta.to_be_bytes());
            v[57..61].copy_from_slice(&count.to_be_bytes());
            let crc = compute_crc(&v);
            v[17..21].copy_from_slice(&crc.to_be_bytes());
            let batch = RecordBatch::validate(Bytes::from(v)).unwrap();
            let err = batch.validate_compressed_records(1 << 20).unwrap_err();
            assert!(
                matches!(err, Error::Invalid { .. } | Error::Truncated { .. }),
                "{codec} {count}/{delta}: {err}"
            );
        }
        let batch = RecordBatch::validate(good).unwrap();
        batch.validate_compressed_records(1 << 20).unwrap();
        assert!(matches!(
            batch.validate_compressed_records(100),
            Err(Error::DecompressedTooLarge { .. })
        ));
    }
}

#[test]
fn codec_names_parse_and_print() {
    for codec in Compression::ALL {
        assert_eq!(codec.name().parse::<Compression>().unwrap(), codec);
        assert_eq!(
            codec.name().to_uppercase().parse::<Compression>().unwrap(),
            codec
        );
        assert_eq!(Compression::from_bits(codec.bits() as u8).unwrap(), codec);
    }
    assert!("brotli".parse::<Compression>().is_err());
}

/// A stamped batch compressed afterwards (what the producer does, off its lock) keeps the
/// stamp and every other header field but the length, codec bits and CRC, and the same
/// records; compressing it again changes nothing.
#[test]
fn compressing_a_stamped_batch_keeps_its_header_fields() {
    let records: Vec<TestRecord> = (0..20)
        .map(|i| {
            (
                i,
                Some(b"k".to_vec()),
                Some(b"abcabcabcabcabcabc".repeat(3)),
                vec![],
            )
        })
        .collect();
    let stamp = ProducerStamp {
        producer_id: 42,
        producer_epoch: 7,
        base_sequence: 99,
    };
    let mut plain = BytesMut::from(&build(&records, ProducerStamp::default())[..]);
    set_producer_stamp(&mut plain, stamp);
    let plain = plain.freeze();
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let packed = compress_batch(plain.clone(), codec, None).unwrap();
        let (a, b) = (
            RecordBatch::validate(plain.clone()).unwrap(),
            RecordBatch::validate(packed.clone()).unwrap(),
        );
        assert_eq!(b.header().compression().unwrap(), codec);
        let same = |h: &BatchHeader| {
            (
                h.last_offset_delta,
                h.base_timestamp,
                h.max_timestamp,
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.records_count,
            )
        };
        assert_eq!(same(a.header()), same(b.header()));
        let (ra, rb): (Vec<Record>, Vec<Record>) = (
            a.records().unwrap().collect::<Result<_>>().unwrap(),
            b.records().unwrap().collect::<Result<_>>().unwrap(),
        );
        assert_eq!(ra, rb);
        assert_eq!(
            compress_batch(packed.clone(), Compression::Zstd, None).unwrap(),
            packed
        );
    }
    assert_eq!(
        compress_batch(plain.clone(), Compression::None, None).unwrap(),
        plain
    );
}

#[test]
fn rebuild_keeps_the_chosen_records_at_their_offsets_with_the_codec() {
    for codec in Compression::ALL {
        let mut builder = BatchBuilder::with_capacity(
            ProducerStamp {
                producer_id: 9,
                producer_epoch: 2,
                base_sequence: 40,
            },
            0,
        );
        for i in 0..20u8 {
            let value = vec![b'v'; 100 + usize::from(i)];
            builder.append(
                1_000 + i64::from(i),
                Some(&[i % 5]),
                Some(&value),
                &[(b"h", None)],
            );
        }
        let mut bytes = BytesMut::from(builder.build_compressed(codec, None).unwrap());
        set_base_offset(&mut bytes, Offset(100));
        let original = RecordBatch::validate(bytes.freeze()).unwrap();
        let all: Vec<Record> = original.records().unwrap().map(Result::unwrap).collect();
        let kept: Vec<Record> = all.iter().filter(|r| r.offset.0 >= 115).cloned().collect();
        let rebuilt = rebuild_batch(original.header(), &kept).unwrap();
        let rebuilt = RecordBatch::validate(rebuilt).unwrap();
        let (h, o) = (rebuilt.header(), original.header());
        assert_eq!(h.compression().unwrap(), codec, "{codec:?}");
        assert_eq!(
            (
                h.base_offset,
                h.last_offset_delta,
                h.producer_id,
                h.base_sequence,
                h.records_count
            ),
            (
                o.base_offset,
                o.last_offset_delta,
                o.producer_id,
                o.base_sequence,
                5
            )
        );
        let back: Vec<Record> = rebuilt.records().unwrap().map(Result::unwrap).collect();
        assert_eq!(back, kept, "{codec:?}");
        assert!(RecordBatch::validate_produced(rebuilt.bytes().clone()).is_ok());

        let empty = RecordBatch::validate(rebuild_batch(original.header(), &[]).unwrap()).unwrap();
        assert_eq!(empty.bytes().len(), HEADER_LEN);
        assert_eq!(empty.header().records_count, 0);
        assert_eq!(empty.header().next_offset(), o.next_offset());
        assert_eq!(empty.records().unwrap().count(), 0);
        assert!(RecordBatch::validate_produced(empty.bytes().clone()).is_err());
    }
}

/// A batch dated by a cleaner (KIP-534) carries its delete horizon in `baseTimestamp`
/// under attribute bit 6; its records keep their timestamps (their deltas now count from
/// the horizon, far from them), in every codec.
#[test]
fn a_batch_rebuilt_with_a_delete_horizon_keeps_its_records_timestamps() {
    for codec in Compression::ALL {
        let mut builder = BatchBuilder::new();
        for i in 0..5u8 {
            let value = (i != 3).then(|| vec![b'v'; 50]);
            builder.append(1_000 + i64::from(i), Some(&[i]), value.as_deref(), &[]);
        }
        let original =
            RecordBatch::validate(builder.build_compressed(codec, None).unwrap()).unwrap();
        assert_eq!(original.header().delete_horizon(), None);
        let records: Vec<Record> = original.records().unwrap().map(Result::unwrap).collect();
        let horizon = 1_700_000_000_000;
        let dated = original.header().with_delete_horizon(horizon);
        let rebuilt = RecordBatch::validate(rebuild_batch(&dated, &records).unwrap()).unwrap();
        let (h, o) = (rebuilt.header(), original.header());
        assert_eq!(h.delete_horizon(), Some(horizon), "{codec:?}");
        assert_eq!(h.compression().unwrap(), codec);
        assert_eq!(
            (h.max_timestamp, h.is_transactional(), h.is_control()),
            (o.max_timestamp, false, false)
        );
        let back: Vec<Record> = rebuilt.records().unwrap().map(Result::unwrap).collect();
        assert_eq!(back, records, "{codec:?}");
    }
}
