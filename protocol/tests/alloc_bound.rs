//! Decoding never allocates more than a small multiple of its input. A counting global
//! allocator measures the peak of live heap bytes while each decoder runs, on random
//! inputs shaped to get deep into message bodies (many zeros and small counts), and on
//! hand-made inputs that claim huge lengths. A decoder that trusted a length before
//! checking it against the input would blow the bound by orders of magnitude.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use sluice_protocol::messages::{decode_request, ApiKey, Response};

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

/// Bytes of heap a decoder may use per input byte. In-memory structs are larger than
/// their smallest encoding (a 2-byte empty string becomes a 24-byte `String`), so the
/// factor is above one, but it is a constant: no length is trusted before it is checked.
const HEAP_BYTES_PER_INPUT_BYTE: usize = 64;
const HEAP_SLACK_BYTES: usize = 4096;

fn check_bounded(input: &Bytes) {
    let bound = HEAP_BYTES_PER_INPUT_BYTE * input.len() + HEAP_SLACK_BYTES;
    let used = peak_during(|| {
        let _ = decode_request(input.clone());
    });
    assert!(
        used <= bound,
        "decode_request used {used} bytes for a {}-byte input",
        input.len()
    );
    for &key in ApiKey::ALL {
        let used = peak_during(|| {
            let _ = Response::decode(key, 0, input.clone());
        });
        assert!(
            used <= bound,
            "{key:?} response used {used} bytes for a {}-byte input",
            input.len()
        );
    }
}

fn request_header(api_key: ApiKey) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u16(api_key as u16);
    buf.put_u16(0);
    buf.put_u32(1);
    buf.put_u16(0);
    buf
}

#[test]
fn huge_claimed_lengths_allocate_nothing_large() {
    for &key in ApiKey::ALL {
        for claim in [i32::MAX, 1 << 20, 65_535] {
            for prefix in 0..12 {
                let mut input = request_header(key);
                input.put_bytes(0, prefix);
                input.put_i32(claim);
                input.put_bytes(1, 16);
                let input = input.freeze();
                check_bounded(&input);
                // The same bytes as a response payload.
                check_bounded(&input.slice(8..));
            }
        }
    }
}

proptest! {
    #[test]
    fn decoding_allocates_in_proportion_to_the_input(
        key_index in any::<usize>(),
        body in proptest::collection::vec(prop_oneof![8 => Just(0u8), 2 => 1u8..4, 1 => any::<u8>()], 0..2048),
    ) {
        let key = ApiKey::ALL[key_index % ApiKey::ALL.len()];
        let mut input = request_header(key);
        input.extend_from_slice(&body);
        let input = input.freeze();
        check_bounded(&input);
        check_bounded(&input.slice(8..));
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

/// A decompression bomb: one record of 16 MiB of zeros, compressed by each codec into a
/// batch of a few KiB to a few hundred. Checked against a 1 MiB bound, it is refused having
/// allocated little more than the bound: output grows only as the decoder produces it, and
/// stops one chunk past the bound. (zstd's own window is malloc'd by the C library, which
/// this counter does not see; `ZSTD_WINDOW_LOG_MAX` bounds it, and a unit test shows a frame
/// asking for more is refused.)
#[test]
fn a_decompression_bomb_is_refused_without_allocating_its_size() {
    use sluice_protocol::batch::{BatchBuilder, Compression, RecordBatch};
    use sluice_protocol::Error;
    const LIMIT: usize = 1 << 20;
    let zeros = vec![0u8; 16 << 20];
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut builder = BatchBuilder::new();
        builder.append(0, None, Some(&zeros), &[]);
        let bomb = RecordBatch::validate(builder.build_compressed(codec, None).unwrap()).unwrap();
        assert_eq!(bomb.header().compression().unwrap(), codec);
        assert!(
            bomb.bytes().len() < 1 << 20,
            "{codec}: {}",
            bomb.bytes().len()
        );
        let mut outcome = None;
        let used = peak_during(|| outcome = Some(bomb.validate_compressed_records(LIMIT)));
        let outcome = outcome.unwrap();
        assert!(
            matches!(
                outcome,
                Err(Error::DecompressedTooLarge { limit: LIMIT, .. })
            ),
            "{codec}: {outcome:?}"
        );
        assert!(
            used < 2 * LIMIT + (256 << 10),
            "{codec}: refusing a {}-byte bomb allocated {used} bytes",
            bomb.bytes().len()
        );
    }
}

/// A raw snappy block that claims 4 GiB in its 5-byte preamble is refused from the claim.
#[test]
fn a_snappy_block_claiming_gigabytes_allocates_nothing_large() {
    use sluice_protocol::batch::Compression;
    use sluice_protocol::compression::{decompress, MAX_DECOMPRESSED_BYTES};
    let claim = [0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0];
    let used = peak_during(|| {
        assert!(decompress(Compression::Snappy, &claim, MAX_DECOMPRESSED_BYTES).is_err());
    });
    assert!(used < 4096, "allocated {used} bytes");
}
