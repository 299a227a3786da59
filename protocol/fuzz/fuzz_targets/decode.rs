//! Feeds arbitrary bytes to every decoder of the native protocol: the frame codec (as a
//! stream), request decoding, and response decoding for every api. Decoders must never
//! panic, and whatever they accept must re-encode to exactly the bytes they read (the
//! format has one encoding per value), which catches decoders that skip or invent bytes.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sluice_protocol::messages::{decode_request, ApiKey, Response};
use sluice_protocol::FrameCodec;
use tokio_util::codec::Decoder;

fn decode_payload(payload: Bytes) {
    if let Ok((header, request)) = decode_request(payload.clone()) {
        let mut buf = BytesMut::new();
        request
            .encode(&header, &mut buf)
            .expect("a decoded request re-encodes");
        assert_eq!(&buf[..], &payload[..], "request re-encodes to its input");
    }
    for &api_key in ApiKey::ALL {
        if let Ok((header, body)) = Response::decode(api_key, 0, payload.clone()) {
            // A success header may carry a message, which `Response::encode` never writes;
            // that is the one input with two encodings, so skip the byte comparison there.
            if body.is_some() && header.error_message.is_some() {
                continue;
            }
            let mut buf = BytesMut::new();
            match body {
                Some(body) => body.encode(header.correlation_id, &mut buf),
                None => Response::encode_error(
                    header.correlation_id,
                    header.error_code,
                    header.error_message.as_deref(),
                    &mut buf,
                ),
            }
            .expect("a decoded response re-encodes");
            assert_eq!(&buf[..], &payload[..], "response re-encodes to its input");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The input as a stream of frames, with a small maximum so oversize paths are hit.
    let mut codec = FrameCodec::new(4096);
    let mut src = BytesMut::from(data);
    while let Ok(Some(payload)) = codec.decode_eof(&mut src) {
        assert!(payload.len() <= 4096);
        decode_payload(payload);
    }
    // The input as one payload.
    decode_payload(Bytes::copy_from_slice(data));
});
