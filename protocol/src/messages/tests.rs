//! Round trips of every request and response, the envelopes' error paths, and decoding of
//! random and mutated input (which must never panic).

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use super::*;
use crate::wire::testing::{arb, check_round_trip, Generate};
use crate::Records;

fn encode_request(header: &RequestHeader, request: &Request) -> Bytes {
    let mut buf = BytesMut::new();
    request.encode(header, &mut buf).expect("encode request");
    buf.freeze()
}

fn encode_response(correlation_id: u32, response: &Response) -> Bytes {
    let mut buf = BytesMut::new();
    response
        .encode(correlation_id, &mut buf)
        .expect("encode response");
    buf.freeze()
}

/// The encoding of a request header alone, for hand-built inputs.
fn raw_header(api_key: u16, api_version: u16, correlation_id: u32) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u16(api_key);
    buf.put_u16(api_version);
    buf.put_u32(correlation_id);
    buf.put_u16(3);
    buf.put_slice(b"cli");
    buf
}

/// One random request and response of every api, with its correlation id.
#[derive(Clone, Debug)]
struct EveryApi(Vec<(RequestHeader, Request, Response)>);

impl Generate for EveryApi {
    fn generate(g: &mut TestRunner) -> Self {
        EveryApi(
            ApiKey::ALL
                .iter()
                .map(|&key| {
                    let header = RequestHeader::new(key, u32::generate(g), String::generate(g));
                    (
                        header,
                        Request::generate_for(key, g),
                        Response::generate_for(key, g),
                    )
                })
                .collect(),
        )
    }
}

/// A valid request payload of a random api, and a response payload of the same api.
#[derive(Clone, Debug)]
struct ValidPayloads {
    api_key: ApiKey,
    request: Bytes,
    response: Bytes,
}

impl Generate for ValidPayloads {
    fn generate(g: &mut TestRunner) -> Self {
        let api_key = ApiKey::ALL[usize::generate(g) % ApiKey::ALL.len()];
        let header = RequestHeader::new(api_key, u32::generate(g), String::generate(g));
        ValidPayloads {
            api_key,
            request: encode_request(&header, &Request::generate_for(api_key, g)),
            response: encode_response(header.correlation_id, &Response::generate_for(api_key, g)),
        }
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Truncate(usize),
    Flip(usize, u8),
    Append(Vec<u8>),
    Overwrite(usize, [u8; 4]),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        // Four bytes of 0xff or 0x7f... at a random place: lengths and counts gone wild.
        (
            any::<usize>(),
            prop_oneof![
                Just([0xff; 4]),
                Just([0x7f, 0xff, 0xff, 0xff]),
                any::<[u8; 4]>()
            ]
        )
            .prop_map(|(i, b)| Mutation::Overwrite(i, b)),
    ]
}

fn mutate(input: &[u8], mutations: &[Mutation]) -> Bytes {
    let mut out = input.to_vec();
    for m in mutations {
        match m {
            Mutation::Truncate(i) => out.truncate(i % (out.len() + 1)),
            Mutation::Flip(i, x) if !out.is_empty() => {
                let n = out.len();
                out[i % n] ^= x;
            }
            Mutation::Append(extra) => out.extend_from_slice(extra),
            Mutation::Overwrite(i, b) if !out.is_empty() => {
                let start = i % out.len();
                for (k, byte) in b.iter().enumerate() {
                    if let Some(slot) = out.get_mut(start + k) {
                        *slot = *byte;
                    }
                }
            }
            _ => {}
        }
    }
    Bytes::from(out)
}

/// Feeds `input` to every decoder; they may refuse it but must not panic.
fn decode_everything(input: &Bytes) {
    let _ = decode_request(input.clone());
    let _ = peek_correlation_id(input);
    for &key in ApiKey::ALL {
        let _ = Response::decode(key, 0, input.clone());
    }
    let mut codec = crate::frame::FrameCodec::new(256);
    let mut src = BytesMut::from(&input[..]);
    while let Ok(Some(payload)) = tokio_util::codec::Decoder::decode_eof(&mut codec, &mut src) {
        assert!(payload.len() <= 256);
        let _ = decode_request(payload);
    }
}

/// The pieces of a frame as bytes, file ranges read.
fn concat(pieces: &[crate::frame::Piece]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for piece in pieces {
        match piece {
            crate::frame::Piece::Bytes(b) => out.put_slice(b),
            crate::frame::Piece::File(f) => f.read_into(&mut out).unwrap(),
        }
    }
    out.to_vec()
}

fn shares(piece: &crate::frame::Piece, records: &Bytes) -> bool {
    matches!(piece, crate::frame::Piece::Bytes(b) if b.as_ptr() == records.as_ptr())
}

/// A fetch answer's record batches reach the frame's pieces as the very bytes read (no copy)
/// or as the file range they are in (sent from the file), and the pieces make the same
/// payload as the plain encoding, which reads the file.
#[test]
fn fetch_records_are_shared_not_copied() {
    use std::io::Write;
    let records = Bytes::from(vec![7u8; 3 * crate::frame::SPLICE_MIN_BYTES]);
    let small = Bytes::from(vec![9u8; 100]);
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&[5u8; 1000]).unwrap();
    let in_file = crate::FileSlice::new(std::sync::Arc::new(file), 10, 900);
    let partition = |index: i32, records: Records| FetchPartitionResponse {
        partition: PartitionId(index),
        error_code: ErrorCode::None,
        error_message: None,
        high_watermark: crate::Offset(10),
        last_stable_offset: crate::Offset(10),
        log_start_offset: crate::Offset(0),
        aborted_transactions: Vec::new(),
        records,
    };
    let response = Response::Fetch(FetchResponse {
        topics: vec![FetchTopicResponse {
            topic: "t".into(),
            partitions: vec![
                partition(0, records.clone().into()),
                partition(1, small.into()),
                partition(2, records.clone().into()),
                partition(3, in_file.clone().into()),
            ],
        }],
    });
    let mut frame = SplicedFrame::new();
    response.encode_spliced(5, &mut frame).unwrap();
    let pieces = frame.into_pieces();
    let shared = pieces.iter().filter(|p| shares(p, &records)).count();
    assert_eq!(
        shared, 2,
        "both large batches are shared, the small one copied"
    );
    assert!(pieces.contains(&crate::frame::Piece::File(in_file)));
    let payload = encode_response(5, &response);
    let whole = concat(&pieces);
    assert_eq!(&whole[crate::frame::FRAME_HEADER_LEN..], &payload[..]);
    assert_eq!(
        &whole[..crate::frame::FRAME_HEADER_LEN],
        &(payload.len() as u32).to_be_bytes()
    );
}

/// A produce request's record batch reaches the frame's pieces as the producer's own bytes
/// (no copy), and the pieces make the same payload as the plain encoding.
#[test]
fn produce_records_are_shared_not_copied() {
    let records = Bytes::from(vec![7u8; 3 * crate::frame::SPLICE_MIN_BYTES]);
    let request = Request::Produce(crate::messages::ProduceRequest {
        acks: -1,
        timeout_ms: 1000,
        transactional_id: None,
        topics: vec![crate::messages::ProduceTopic {
            name: "t".into(),
            partitions: vec![crate::messages::ProducePartition {
                partition: PartitionId(0),
                records: records.clone(),
            }],
        }],
    });
    let header = RequestHeader::new(ApiKey::Produce, 9, "client");
    let mut frame = SplicedFrame::new();
    request.encode_spliced(&header, &mut frame).unwrap();
    let pieces = frame.into_pieces();
    assert!(pieces.iter().any(|p| shares(p, &records)));
    let payload = encode_request(&header, &request);
    assert_eq!(
        &concat(&pieces)[crate::frame::FRAME_HEADER_LEN..],
        &payload[..]
    );
}

proptest! {
    #[test]
    fn every_request_and_response_round_trips(every in arb::<EveryApi>()) {
        for (header, request, response) in &every.0 {
            check_round_trip(header);
            let payload = encode_request(header, request);
            let mut spliced = SplicedFrame::new();
            request.encode_spliced(header, &mut spliced).expect("encode request spliced");
            prop_assert_eq!(&spliced.into_bytes().unwrap()[crate::frame::FRAME_HEADER_LEN..], &payload[..]);
            let (decoded_header, decoded) = decode_request(payload.clone()).expect("decode request");
            prop_assert_eq!(&decoded_header, header);
            prop_assert_eq!(&decoded, request);

            let payload = encode_response(header.correlation_id, response);
            prop_assert_eq!(peek_correlation_id(&payload).unwrap(), header.correlation_id);
            let mut spliced = SplicedFrame::new();
            response.encode_spliced(header.correlation_id, &mut spliced).expect("encode spliced");
            prop_assert_eq!(&spliced.into_bytes().unwrap()[crate::frame::FRAME_HEADER_LEN..], &payload[..]);
            let (rh, body) = Response::decode(response.api_key(), 0, payload).expect("decode response");
            prop_assert_eq!(rh.correlation_id, header.correlation_id);
            prop_assert_eq!(rh.error_code, ErrorCode::None);
            prop_assert_eq!(body.as_ref(), Some(response));
        }
    }

    #[test]
    fn every_body_round_trips(seed in any::<u64>()) {
        let mut g = TestRunner::new_with_rng(
            proptest::test_runner::Config::default(),
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &{
                    let mut s = [0u8; 32];
                    s[..8].copy_from_slice(&seed.to_le_bytes());
                    s
                },
            ),
        );
        check_every_body_round_trips(&mut g);
    }

    #[test]
    fn error_responses_round_trip(header in arb::<ResponseHeader>(), key_index in any::<usize>()) {
        prop_assume!(header.error_code != ErrorCode::None);
        check_round_trip(&header);
        let mut buf = BytesMut::new();
        Response::encode_error(header.correlation_id, header.error_code, header.error_message.as_deref(), &mut buf).unwrap();
        let key = ApiKey::ALL[key_index % ApiKey::ALL.len()];
        let (decoded, body) = Response::decode(key, 0, buf.freeze()).unwrap();
        prop_assert_eq!(decoded, header);
        prop_assert_eq!(body, None);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_everything(&Bytes::from(bytes));
    }

    #[test]
    fn random_bodies_behind_valid_headers_never_panic(
        key_index in any::<usize>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let key = ApiKey::ALL[key_index % ApiKey::ALL.len()];
        let mut payload = raw_header(key as u16, 0, 7);
        payload.extend_from_slice(&body);
        let _ = decode_request(payload.freeze());
        let mut payload = BytesMut::new();
        payload.put_u32(7);
        payload.put_i16(0);
        payload.put_u16(0xffff);
        payload.extend_from_slice(&body);
        let _ = Response::decode(key, 0, payload.freeze());
    }

    #[test]
    fn mutated_encodings_never_panic(
        valid in arb::<ValidPayloads>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let request = mutate(&valid.request, &mutations);
        match decode_request(request.clone()) {
            // Whatever is accepted has exactly one encoding: the bytes it was read from.
            Ok((header, decoded)) => prop_assert_eq!(encode_request(&header, &decoded), request.clone()),
            // A reported correlation id is the one in the payload's header.
            Err(e) => if let Some(id) = e.correlation_id {
                prop_assert_eq!(Some(id), peek_correlation_id(&request[4..]).ok());
            },
        }
        decode_everything(&request);
        let response = mutate(&valid.response, &mutations);
        let _ = Response::decode(valid.api_key, 0, response.clone());
        decode_everything(&response);
    }
}

#[test]
fn unknown_api_key_keeps_the_correlation_id() {
    let err = decode_request(raw_header(999, 0, 42).freeze()).unwrap_err();
    assert_eq!(err.correlation_id, Some(42));
    assert!(matches!(err.error, Error::UnknownApiKey(999)), "{err}");
    assert_eq!(err.error_code(), ErrorCode::UnsupportedVersion);
}

#[test]
fn unsupported_version_keeps_the_correlation_id() {
    let err = decode_request(raw_header(ApiKey::Produce as u16, 7, 43).freeze()).unwrap_err();
    assert_eq!(err.correlation_id, Some(43));
    assert!(
        matches!(
            err.error,
            Error::UnsupportedVersion {
                version: 7,
                api: "Produce",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.error_code(), ErrorCode::UnsupportedVersion);
    assert!(Response::decode(ApiKey::Produce, 1, Bytes::new()).is_err());
}

#[test]
fn malformed_body_keeps_the_correlation_id() {
    let mut payload = raw_header(ApiKey::Metadata as u16, 0, 44);
    payload.put_i32(-5); // topics count
    let err = decode_request(payload.freeze()).unwrap_err();
    assert_eq!(err.correlation_id, Some(44));
    assert!(
        matches!(err.error, Error::NegativeLength { length: -5, .. }),
        "{err}"
    );
    assert_eq!(err.error_code(), ErrorCode::InvalidRequest);
}

#[test]
fn truncated_header_has_no_correlation_id() {
    let err = decode_request(Bytes::from_static(&[0, 3, 0])).unwrap_err();
    assert_eq!(err.correlation_id, None);
    assert!(peek_correlation_id(&[0, 0, 1]).is_err());
}

#[test]
fn trailing_garbage_is_rejected() {
    let request = Request::Heartbeat(HeartbeatRequest {
        group_id: "g".into(),
        generation_id: 1,
        member_id: "m".into(),
        group_instance_id: None,
    });
    let header = RequestHeader::new(ApiKey::Heartbeat, 45, "cli");
    let mut payload = BytesMut::from(&encode_request(&header, &request)[..]);
    payload.put_u8(0);
    let err = decode_request(payload.freeze()).unwrap_err();
    assert_eq!(err.correlation_id, Some(45));
    assert!(
        matches!(
            err.error,
            Error::TrailingBytes {
                remaining: 1,
                context: "Heartbeat"
            }
        ),
        "{err}"
    );

    let response = Response::Heartbeat(HeartbeatResponse {
        error_code: ErrorCode::None,
        error_message: None,
    });
    let mut payload = BytesMut::from(&encode_response(45, &response)[..]);
    payload.put_u16(0);
    assert!(matches!(
        Response::decode(ApiKey::Heartbeat, 0, payload.freeze()),
        Err(Error::TrailingBytes { remaining: 2, .. })
    ));
}

#[test]
fn huge_array_count_is_an_error_not_an_allocation() {
    let mut payload = raw_header(ApiKey::Produce as u16, 0, 46);
    payload.put_u16(0xFFFF); // transactional id: null
    payload.put_i16(-1); // acks
    payload.put_i32(1000); // timeout
    payload.put_i32(i32::MAX); // 2^31 - 1 topics in 0 bytes
    let err = decode_request(payload.freeze()).unwrap_err();
    assert!(
        matches!(
            err.error,
            Error::Invalid {
                field: "ProduceRequest.topics",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn mismatched_header_is_refused_on_encode() {
    let request = Request::ListGroups(ListGroupsRequest {
        states_filter: vec![],
    });
    let header = RequestHeader::new(ApiKey::Produce, 1, "cli");
    assert!(request.encode(&header, &mut BytesMut::new()).is_err());
    let mut buf = BytesMut::new();
    assert!(Response::encode_error(1, ErrorCode::None, None, &mut buf).is_err());
}

#[test]
fn records_are_zero_copy_slices_of_the_payload() {
    let records = Bytes::from_static(b"not really a record batch");
    let request = Request::Produce(ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 1000,
        topics: vec![ProduceTopic {
            name: "t".into(),
            partitions: vec![ProducePartition {
                partition: PartitionId(0),
                records: records.clone(),
            }],
        }],
    });
    let payload = encode_request(&RequestHeader::new(ApiKey::Produce, 1, "c"), &request);
    let (_, decoded) = decode_request(payload.clone()).unwrap();
    let Request::Produce(produce) = decoded else {
        panic!("not a produce request")
    };
    let got = &produce.topics[0].partitions[0].records;
    assert_eq!(got, &records);
    let start = payload.len() - records.len();
    assert_eq!(got.as_ptr(), payload[start..].as_ptr());
}

#[test]
fn api_keys_are_unique_and_kafka_numbered() {
    let mut seen = std::collections::HashSet::new();
    for &key in ApiKey::ALL {
        assert!(seen.insert(key as u16));
        assert_eq!(ApiKey::from_u16(key as u16), Some(key));
        assert!(key.min_version() <= key.max_version());
    }
    assert_eq!(ApiKey::Produce as u16, 0);
    assert_eq!(ApiKey::Metadata as u16, 3);
    assert_eq!(ApiKey::ApiVersions as u16, 18);
    assert_eq!(ApiKey::DeleteGroups as u16, 42);
    assert_eq!(ApiKey::BrokerHeartbeat as u16, 63);
    assert_eq!(ApiKey::AllocateProducerIds as u16, 67);
    assert_eq!(ApiKey::from_u16(4), None);
}
