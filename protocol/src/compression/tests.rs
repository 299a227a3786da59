//! Codec round trips, Kafka's framings checked byte by byte where they are ours (xerial),
//! and decompression bounds.

use proptest::prelude::*;

use super::*;

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn compressed(codec: Compression, level: Option<i32>, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    compress(codec, level, input, &mut out).unwrap();
    out
}

proptest! {
    #[test]
    fn every_codec_round_trips(
        input in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..70_000),
            (proptest::collection::vec(any::<u8>(), 1..16), 0usize..10_000).prop_map(|(t, n)| t.repeat(n)),
        ],
        codec_index in 0usize..4,
        use_level in any::<bool>(),
    ) {
        let codec = CODECS[codec_index];
        let level = level_range(codec).filter(|_| use_level).map(|(low, high)| (low + high) / 2);
        let packed = compressed(codec, level, &input);
        prop_assert_eq!(&decompress(codec, &packed, input.len()).unwrap(), &input);
        if !input.is_empty() {
            let too_small = decompress(codec, &packed, input.len() - 1);
            prop_assert!(matches!(too_small, Err(Error::DecompressedTooLarge { .. })), "{:?}", too_small);
        }
    }

    /// Arbitrary bytes are an error or some output within the limit, never a panic.
    #[test]
    fn arbitrary_input_never_panics(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        codec_index in 0usize..4,
    ) {
        if let Ok(out) = decompress(CODECS[codec_index], &input, 4096) {
            prop_assert!(out.len() <= 4096);
        }
    }
}

#[test]
fn snappy_uses_xerial_framing_in_32_kib_blocks() {
    let input: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let packed = compressed(Compression::Snappy, None, &input);
    assert_eq!(&packed[..8], &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0]);
    assert_eq!(&packed[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
    // Walk the blocks: each a u32 big-endian length and one raw snappy block of <= 32 KiB.
    let mut rest = &packed[16..];
    let mut blocks = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let block = &rest[4..4 + len];
        blocks.push(snap::raw::Decoder::new().decompress_vec(block).unwrap());
        rest = &rest[4 + len..];
    }
    assert_eq!(
        blocks.iter().map(Vec::len).collect::<Vec<_>>(),
        [32_768, 32_768, 32_768, 1_696]
    );
    assert_eq!(blocks.concat(), input);
}

#[test]
fn plain_raw_snappy_decodes_too() {
    let input =
        b"raw snappy, as some clients send it; raw snappy, as some clients send it".to_vec();
    let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
    assert_eq!(
        decompress(Compression::Snappy, &raw, 1 << 20).unwrap(),
        input
    );
}

#[test]
fn lz4_writes_a_standard_frame_with_independent_64_kib_blocks() {
    let packed = compressed(Compression::Lz4, None, b"hello hello hello hello");
    // Magic 0x184D2204 little-endian, then FLG: version 01, block independence set, no
    // checksums, no content size (0x60); BD: 64 KiB blocks (0x40).
    assert_eq!(&packed[..6], &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40]);
}

#[test]
fn gzip_reads_concatenated_members() {
    let mut two = compressed(Compression::Gzip, None, b"first ");
    two.extend(compressed(Compression::Gzip, Some(9), b"second"));
    assert_eq!(
        decompress(Compression::Gzip, &two, 100).unwrap(),
        b"first second"
    );
}

#[test]
fn levels_out_of_range_are_refused_with_the_range() {
    let mut out = Vec::new();
    let err = compress(Compression::Gzip, Some(10), b"x", &mut out).unwrap_err();
    assert!(err.to_string().contains("1 to 9"), "{err}");
    let err = compress(Compression::Zstd, Some(23), b"x", &mut out).unwrap_err();
    assert!(err.to_string().contains("1 to 22"), "{err}");
    let err = compress(Compression::Lz4, Some(3), b"x", &mut out).unwrap_err();
    assert!(err.to_string().contains("no levels"), "{err}");
    assert!(check_level(Compression::Snappy, None).is_ok());
}

#[test]
fn a_raw_snappy_block_claiming_a_huge_size_is_refused_before_allocating() {
    // The preamble varint says 2^32 - 1 bytes; nothing follows.
    let bomb = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let err = decompress(Compression::Snappy, &bomb, MAX_DECOMPRESSED_BYTES).unwrap_err();
    assert!(matches!(err, Error::DecompressedTooLarge { .. }), "{err}");
}

#[test]
fn a_zstd_frame_asking_for_a_huge_window_is_refused() {
    // Streamed without a pledged size, the frame declares its window (2^27) instead of its
    // content size: a decoder honouring it would allocate 128 MiB.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder
        .set_parameter(zstd::zstd_safe::CParameter::WindowLog(27))
        .unwrap();
    encoder.write_all(&[7u8; 4096]).unwrap();
    let frame = encoder.finish().unwrap();
    let err = decompress(Compression::Zstd, &frame, MAX_DECOMPRESSED_BYTES).unwrap_err();
    assert!(
        matches!(err, Error::Decompress { codec: "zstd", .. }),
        "{err}"
    );
}

#[test]
fn a_bomb_of_each_codec_is_refused_at_the_limit() {
    let zeros = vec![0u8; 16 << 20];
    for codec in CODECS {
        let bomb = compressed(codec, None, &zeros);
        assert!(bomb.len() < 1 << 20, "{codec}: {} bytes", bomb.len());
        let err = decompress(codec, &bomb, 1 << 20).unwrap_err();
        assert!(
            matches!(err, Error::DecompressedTooLarge { limit, .. } if limit == 1 << 20),
            "{codec}: {err}"
        );
        assert!(err.to_string().contains("decompression bomb"), "{err}");
    }
}
