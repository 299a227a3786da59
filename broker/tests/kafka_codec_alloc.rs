//! Decoding a Kafka request allocates at most a bounded multiple of its payload. A counting
//! global allocator measures the peak of live heap bytes while `decode_request` runs, on the
//! hostile inputs that crash an unpatched `kafka-protocol` (an array length far beyond the
//! payload, in both the `i32` and the compact varint form), on arrays that claim exactly as
//! many elements as there are bytes left (the most the patched check lets through), and on
//! random bodies behind every served header.
//!
//! The bound is per input byte, not a small constant: `kafka-protocol` reserves a vector
//! for a declared length once it is within the bytes left, and an element in memory is
//! larger than its smallest encoding (a 1-byte compact string is a 32-byte `StrBytes`, a
//! topic to create is ~150 bytes). What the test guards is that no length is trusted
//! before it is checked, which without the patch costs gigabytes for 14 bytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Encodable;
use proptest::prelude::*;
use sluice_broker::kafka::codec::{decode_request, DecodeError, SERVED};

/// Live and peak heap bytes of the current thread (tests run on several threads).
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + layout.size();
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap bytes allocated by `f` beyond what was live when it started.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(Cell::get) - base
}

/// Heap bytes `decode_request` may use per payload byte, and a constant for error messages
/// and the header. The measured worst case is ~190 (OffsetFetch v8: a group array claiming
/// one ~190-byte group per byte left); `arrays_claiming_every_byte_left_stay_bounded`
/// prints it.
const HEAP_BYTES_PER_INPUT_BYTE: usize = 256;
const HEAP_SLACK_BYTES: usize = 4096;

/// Decodes `input` and returns the peak heap it used, failing if above the bound.
fn check_bounded(input: &Bytes) -> usize {
    let bound = HEAP_BYTES_PER_INPUT_BYTE * input.len() + HEAP_SLACK_BYTES;
    let used = peak_during(|| {
        let _ = decode_request(input.clone());
    });
    assert!(
        used <= bound,
        "decode_request used {used} bytes for a {}-byte input {:02x?}",
        input.len(),
        &input[..input.len().min(64)]
    );
    used
}

fn header(api_key: ApiKey, version: i16) -> BytesMut {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(None)
        .encode(&mut buf, api_key.request_header_version(version))
        .unwrap();
    buf
}

fn put_uvarint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[test]
fn the_upstream_crash_input_is_refused_with_almost_no_heap() {
    // Metadata v0, correlation id, null client id, then 0x033c0c00 topics.
    let input = Bytes::from_static(b"\x00\x03\x00\x00\x00\x00\x00\x01\xff\xff\x03\x3c\x0c\x00");
    let used = peak_during(|| {
        let error = decode_request(input.clone()).unwrap_err();
        assert!(matches!(error, DecodeError::Refused { code: 42, .. }));
    });
    assert!(used <= HEAP_SLACK_BYTES, "{used} bytes");
}

#[test]
fn huge_claimed_lengths_allocate_nothing_large() {
    for &(key, min, max) in SERVED {
        for version in min..=max {
            for claim in [u32::MAX >> 1, 0x033c_0c00, 1 << 20, 65_535] {
                for prefix in 0..12 {
                    let mut input = header(key, version);
                    input.put_bytes(0, prefix);
                    input.put_u32(claim);
                    input.put_bytes(1, 16);
                    check_bounded(&input.freeze());
                    // The compact form of the same claim.
                    let mut input = header(key, version);
                    input.put_bytes(0, prefix);
                    put_uvarint(&mut input, claim);
                    input.put_bytes(1, 16);
                    check_bounded(&input.freeze());
                }
            }
        }
    }
}

/// The most the patched check allows: a top-level array (at any of the first few field
/// positions) declaring one element per byte left, over a tail of zeros or ones.
#[test]
fn arrays_claiming_every_byte_left_stay_bounded() {
    let mut worst = (0.0f64, String::new());
    for &(key, min, max) in SERVED {
        for version in min..=max {
            for prefix in 0..12 {
                for tail_len in [64usize, 1024, 16 * 1024] {
                    for fill in [0u8, 1] {
                        for compact in [false, true] {
                            let mut input = header(key, version);
                            input.put_bytes(0, prefix);
                            if compact {
                                put_uvarint(&mut input, tail_len as u32 + 1);
                            } else {
                                input.put_u32(tail_len as u32);
                            }
                            input.put_bytes(fill, tail_len);
                            let input = input.freeze();
                            let used = check_bounded(&input);
                            let ratio = used as f64 / input.len() as f64;
                            if ratio > worst.0 {
                                worst = (ratio, format!("{key:?} v{version} prefix {prefix}"));
                            }
                        }
                    }
                }
            }
        }
    }
    println!(
        "worst: {:.1} heap bytes per input byte ({})",
        worst.0, worst.1
    );
}

proptest! {
    #[test]
    fn decoding_allocates_in_proportion_to_the_input(
        entry in 0..SERVED.len(),
        version_offset in 0i16..16,
        body in proptest::collection::vec(prop_oneof![8 => Just(0u8), 2 => 1u8..4, 1 => any::<u8>()], 0..2048),
    ) {
        let (key, min, max) = SERVED[entry];
        let version = min + version_offset % (max - min + 1);
        let mut input = header(key, version);
        input.extend_from_slice(&body);
        check_bounded(&input.freeze());
        check_bounded(&Bytes::from(body));
    }
}

#[test]
fn the_counter_sees_allocations() {
    let used = peak_during(|| {
        let v = vec![1u8; 1 << 20];
        assert_eq!(v.len(), 1 << 20);
    });
    assert!(used >= 1 << 20, "counted {used}");
}
