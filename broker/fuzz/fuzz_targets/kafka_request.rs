//! Feeds arbitrary bytes, as one frame's payload, to the Kafka codec's `decode_request`.
//! Decoding must never panic. A request it accepts must re-encode (header and body, with
//! `kafka-protocol`'s client-side encoders) to bytes that decode to the same request, and
//! every answer the listener may send must encode: the per-item error response for an
//! accepted request, and the plain one where the api's response has a top-level error
//! (otherwise the listener closes the connection) and `kafka-protocol` knows the api and
//! version.
//! Byte-for-byte re-encoding is not asserted: Kafka's format has several encodings of one
//! value (varints with redundant continuation bytes, any non-zero byte as `true`, tagged
//! fields in any order, trailing bytes after the body), and the codec accepts them all.

#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use libfuzzer_sys::fuzz_target;
use sluice_broker::kafka::codec::{
    decode_request, encode_response, error_response, error_response_for, response_versions,
    DecodeError, KafkaRequest,
};

fn re_encode(request: &KafkaRequest) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(request.api_key as i16)
        .with_request_api_version(request.api_version)
        .with_correlation_id(request.correlation_id)
        .with_client_id(request.client_id.clone().map(StrBytes::from_string))
        .encode(
            &mut buf,
            request.api_key.request_header_version(request.api_version),
        )
        .expect("a decoded header re-encodes");
    request
        .body
        .encode(&mut buf, request.api_version)
        .expect("a decoded body re-encodes");
    buf.freeze()
}

fuzz_target!(|data: &[u8]| {
    match decode_request(Bytes::copy_from_slice(data)) {
        Ok(request) => {
            // kafka-protocol counts but does not write unknown tagged fields numbered 2^31
            // or more (see `has_huge_tag` in the codec's tests); skip the round trip there.
            if !format!("{:?}", request.body).contains("unknown_tagged_fields: {-") {
                let again =
                    decode_request(re_encode(&request)).expect("a re-encoded request decodes");
                // Compared as printed: a quota's f64 may be NaN, which equals nothing.
                assert_eq!(
                    format!("{again:?}"),
                    format!("{request:?}"),
                    "a re-encoded request decodes to itself"
                );
            }
            let mut out = BytesMut::new();
            let response = error_response_for(&request, 35);
            encode_response(request.api_key, request.api_version, 1, &response, &mut out)
                .expect("the per-item error answer encodes");
            // The plain answer exists only where the api's response has a top-level error
            // at this version (elsewhere the listener closes the connection rather than
            // send an answer a client would read as success); it must not panic.
            let mut out = BytesMut::new();
            let _ = error_response(
                request.api_key as i16,
                request.api_version,
                request.correlation_id,
                35,
                &mut out,
            );
        }
        Err(DecodeError::Refused {
            api_key,
            api_version,
            correlation_id,
            code,
            ..
        }) => {
            let mut out = BytesMut::new();
            let answered = error_response(api_key, api_version, correlation_id, code, &mut out);
            let encodable = ApiKey::try_from(api_key).is_ok_and(|key| {
                let versions = response_versions(key);
                key == ApiKey::ApiVersions || (versions.min..=versions.max).contains(&api_version)
            });
            // Answered only where kafka-protocol can encode the api and version, and then
            // only where its response carries a top-level error (the rest close the
            // connection, see above).
            assert!(!answered || encodable, "api key {api_key} v{api_version}");
            assert_eq!(answered, !out.is_empty());
        }
        Err(DecodeError::Header(_)) => {}
    }
});
