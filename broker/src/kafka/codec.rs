//! The Kafka codec: one frame's payload (its 4-byte length prefix already stripped) to a
//! [`KafkaRequest`], and responses to bytes. Sans-IO: the listener frames with the native
//! `FrameCodec` and calls [`decode_request`], the handlers answer with [`encode_response`],
//! a refused request is answered with [`error_response`], and a decoded one the handlers
//! cannot serve with [`error_response_for`] (the error on each item it named).
//!
//! Message structs and their encodings are `kafka-protocol`'s (0.18, decoding from [`Bytes`]
//! so record batches in a Produce request stay zero-copy slices of the frame). This module
//! adds what a broker needs on top: which apis and versions sluice serves ([`SERVED`], and
//! so what ApiVersions advertises), the request and response header versions (flexible
//! versions use header v2 / v1 with KIP-482 tagged fields; an ApiVersions response always
//! has header v0, KIP-511), the ApiVersions fallback for versions we do not know (a v0
//! response with UNSUPPORTED_VERSION and our api list, which is how clients downgrade),
//! an error response for every api and version `kafka-protocol` can encode, and the
//! translation of sluice's error codes to the codes Kafka clients act on.
//!
//! Decoding is total: any input gives a request or a [`DecodeError`], never a panic, and
//! allocates at most a bounded multiple of the payload (the vendored `kafka-protocol` refuses
//! array lengths beyond the bytes left; `broker/tests/kafka_codec_alloc.rs` measures it).
//! Like Kafka, a request's bytes after its body are ignored.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable, Message, VersionRange};
use sluice_protocol::frame::{SplicedFrame, SPLICE_MIN_BYTES};
use sluice_protocol::varint::put_unsigned_varint;
use sluice_protocol::{ErrorCode, FileSlice};

/// Kafka's UNSUPPORTED_VERSION: the api or the version is not served here.
pub const UNSUPPORTED_VERSION: i16 = 35;
/// Kafka's INVALID_REQUEST: the request's body could not be decoded.
pub const INVALID_REQUEST: i16 = 42;

/// The Kafka apis and versions this broker serves: (api key, min, max). ApiVersions
/// advertises exactly these, and [`decode_request`] refuses every other api and version with
/// UNSUPPORTED_VERSION.
///
/// Min is the lowest version `kafka-protocol` 0.18 decodes (a client picks the highest
/// version both sides support, so a low min costs nothing and keeps old clients working).
/// Max is the highest version whose semantics a broker that names topics can honour:
/// versions that carry topic ids *instead of* names are left out. Client figures below are
/// each client's own maximum: librdkafka 2.0.2 (Debian's kcat), librdkafka 2.15 (a recent
/// confluent-kafka), kafka-python 2.0.2 (it infers a broker version from this list, 2.4 for
/// ours, and uses that release's versions, all non-flexible), and the Java client, whose
/// maximum is Kafka's newest version of its release (3.x or 4.x).
pub const SERVED: &[(ApiKey, i16, i16)] = &[
    // 0..=4, all ApiVersions there is: v4 only lets a feature's min version be 0 (KAFKA-17011),
    // which changes nothing for an empty feature list. Java 3.9+/4.x send v4, Java 3.0-3.8 and
    // librdkafka v3; a version above 4 gets the v0 fallback (see `error_response`).
    (ApiKey::ApiVersions, 0, 4),
    // 0..=13: v10+ carries topic ids next to names (the handler fills them from the image and
    // may resolve a request's id-only topic), v13 adds the top-level error code (KIP-1102).
    // librdkafka 2.0.2 picks 4, 2.15 picks 13 (10 without topic ids), Java 4.x 13,
    // kafka-python 1.
    (ApiKey::Metadata, 0, 13),
    // 3..=11: v13 names topics by id. v12 means "transactions v2 may add partitions implicitly"
    // (KIP-890 part 2), a transaction promise sluice does not make; v9-v11 differ from v8 only
    // by flexible encoding and extra optional response fields (KIP-951's current leader).
    // librdkafka 2.0.2 picks 7, 2.15 picks 10, Java 4.x 11, kafka-python 7.
    (ApiKey::Produce, 3, 11),
    // 4..=12: v13+ name topics by id only (KIP-516). Java 3.x/4.x and librdkafka 2.15 (max 16)
    // fall back to 12 and name topics; librdkafka 2.0.2 picks 11, kafka-python 4.
    (ApiKey::Fetch, 4, 12),
    // 1..=6: v7 promises MAX_TIMESTAMP (-3) lookups, v8 earliest-local (-4, tiered storage),
    // v9 latest-tiered (-5), v10 a remote-read timeout; consumers need none of them, and an
    // admin asking for one gets a clean UnsupportedVersion. librdkafka 2.0.2 picks 2, 2.15
    // picks 6, Java 6, kafka-python 1.
    (ApiKey::ListOffsets, 1, 6),
    // 2..=4: the consumer's KIP-320 log truncation check after a leader change (v2 added the
    // current leader epoch, v4 is flexible). librdkafka 2.15 picks 2, Java 4.
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    // 0..=5: v4 batches keys (KIP-699), v5 only lets the answer be TRANSACTION_ABORTABLE;
    // v6 admits share-group keys (KIP-932), which sluice has no coordinator for, so a share
    // consumer gets UnsupportedVersion instead of a confusing per-key error. librdkafka
    // picks 2, Java 3.x 4 or 5, Java 4.x 5, kafka-python 0.
    (ApiKey::FindCoordinator, 0, 5),
    // 0..=9, all of them: v4+ clients handle MEMBER_ID_REQUIRED (KIP-394, which the group
    // coordinator uses), v9 adds the response's SkipAssignment (false here). librdkafka
    // picks 5, Java 9, kafka-python 1.
    (ApiKey::JoinGroup, 0, 9),
    // 0..=5, all: v5 sends protocol type and name (KIP-559). librdkafka 3, Java 5,
    // kafka-python 1.
    (ApiKey::SyncGroup, 0, 5),
    // 0..=4, all. librdkafka 3, Java 4, kafka-python 1.
    (ApiKey::Heartbeat, 0, 4),
    // 0..=5, all: v3+ removes a batch of members (KIP-345). librdkafka 1, Java 5,
    // kafka-python 1.
    (ApiKey::LeaveGroup, 0, 5),
    // 0..=9: v8 fetches several groups at once (the response then has per-group errors),
    // v9 adds the KIP-848 member fields (null with the classic protocol); v10 names topics
    // by id. librdkafka 2.0.2 picks 7, 2.15 9, Java 9, kafka-python 1.
    (ApiKey::OffsetFetch, 1, 9),
    // 2..=9: v9 is v8 usable with KIP-848 groups; v10 names topics by id. librdkafka 2.0.2
    // picks 7, 2.15 9, Java 9, kafka-python 2.
    (ApiKey::OffsetCommit, 2, 9),
    // 0..=6, all: v6 answers an unknown group with GROUP_ID_NOT_FOUND and an error message
    // (KIP-1043) where v0-v5 answer state Dead; the handler must do the same per version.
    // librdkafka picks 4, Java 4.x 6.
    (ApiKey::DescribeGroups, 0, 6),
    // 0..=5, all: v4 filters by state (KIP-518), v5 by type (KIP-848; ours are "classic").
    // librdkafka picks 4, Java 5.
    (ApiKey::ListGroups, 0, 5),
    // 0..=2, all. librdkafka 2.0.2 picks 1, 2.15 2, Java 2.
    (ApiKey::DeleteGroups, 0, 2),
    // 0..=0, all: kafka-consumer-groups.sh --delete-offsets.
    (ApiKey::OffsetDelete, 0, 0),
    // 2..=7, all: v7 returns the new topic's id. librdkafka picks 4, Java 7.
    (ApiKey::CreateTopics, 2, 7),
    // 1..=5: v6 lets a request name topics by id only, and deletion is the wrong place to
    // guess; deleting by name works at 5, deleting by id gets UnsupportedVersion.
    // librdkafka 2.0.2 picks 1, 2.15 4, Java 5.
    (ApiKey::DeleteTopics, 1, 5),
    // 0..=3, all: v2 is flexible, v3 the same. kafka-python picks 1, Java 3.
    (ApiKey::CreatePartitions, 0, 3),
    // 0..=2, all: v2 is flexible. Java (kafka-delete-records.sh, Kafka Streams' purge of
    // repartition topics) picks 2.
    (ApiKey::DeleteRecords, 0, 2),
    // 1..=3: all `kafka-protocol` decodes (Kafka 4.0 dropped v0, which had no pattern
    // type); v2 is flexible. kafka-acls.sh picks 3, kafka-python 1.
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    // 1..=4, all `kafka-protocol` decodes: v2 is flexible, v3 adds a top-level error
    // code, v4 the file system's size. kafka-log-dirs.sh and admin consoles ask it.
    (ApiKey::DescribeLogDirs, 1, 4),
    // 0..=1, all: v1 adds allow_replication_factor_change (KIP-860).
    // kafka-reassign-partitions.sh --execute and --cancel.
    (ApiKey::AlterPartitionReassignments, 0, 1),
    // 0..=0, all: kafka-reassign-partitions.sh --verify.
    (ApiKey::ListPartitionReassignments, 0, 0),
    // 0..=2, all: v1 adds the replicas' fetch times (sluice: -1), v2 the voters' nodes.
    // kafka-metadata-quorum.sh.
    (ApiKey::DescribeQuorum, 0, 2),
    // 0..=2, all: v1 adds the election type and a top-level error code, v2 is flexible.
    // kafka-leader-election.sh picks 2.
    (ApiKey::ElectLeaders, 0, 2),
    // 0..=0, all.
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // 1..=4, all: v3 asks for documentation, v4 is flexible. librdkafka picks 1, Java 4.
    (ApiKey::DescribeConfigs, 1, 4),
    // 0..=1, all. librdkafka 2.15 and Java pick 1.
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    // 0..=2, all: the older, non-incremental form (the given configs replace the topic's
    // own), which kafka-python's `alter_configs` and Sarama's `AlterConfig` send; v2 is
    // flexible.
    (ApiKey::AlterConfigs, 0, 2),
    // 0..=5: all `kafka-protocol` decodes (v6 is KIP-939's two-phase commit). v3+ lets an
    // idempotent producer ask for an epoch bump of its current id. librdkafka picks 4, Java 5.
    (ApiKey::InitProducerId, 0, 5),
    // 0..=3: one transaction per request (v4+ batches them for brokers verifying a
    // partition's transaction, KIP-890, which sluice's leaders do not do yet; clients send
    // v3 at most).
    (ApiKey::AddPartitionsToTxn, 0, 3),
    // 0..=3: v4 lets the answer be TRANSACTION_ABORTABLE, v5 is KIP-890 part 2's epoch bump
    // per transaction, which sluice's coordinator does not do.
    (ApiKey::EndTxn, 0, 3),
    // 0..=3: v4 lets the answer be TRANSACTION_ABORTABLE (KIP-890). librdkafka picks 0,
    // Java 3.
    (ApiKey::AddOffsetsToTxn, 0, 3),
    // 0..=3: v3 carries the consumer's generation and member id (KIP-447), v4 drops the
    // need for AddOffsetsToTxn (KIP-890 part 2, not done). librdkafka and Java pick 3.
    (ApiKey::TxnOffsetCommit, 0, 3),
    // Client quotas: none are enforced, so none are described and none can be set (the
    // entries of an AlterClientQuotas are refused one by one).
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // The operators' view of transactions (KIP-664): v2 of ListTransactions filters ids by
    // a Java regex.
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
    // From a client only to abort (brokers write markers over the native protocol).
    (ApiKey::WriteTxnMarkers, 1, 1),
    // 0..=2, all: v1 adds the endpoint type (1 = brokers), v2 IncludeFencedBrokers (the
    // handler lists fenced brokers only when asked). Java 3.x picks 1, 4.x 2.
    (ApiKey::DescribeCluster, 0, 2),
    // 0..=1: librdkafka turns SASL on only if the range includes 0 (its feature map), but
    // every client that knows SaslAuthenticate sends v1 and follows it with
    // SaslAuthenticate (librdkafka, kafka-python, Java). A client that sends v0 then sends
    // the SASL tokens as raw frames without Kafka headers (clients from before Kafka 1.0),
    // which the listener cannot decode: it closes that connection.
    (ApiKey::SaslHandshake, 0, 1),
    // 0..=2, all: v1 adds the session lifetime (0 here: the session lasts as long as the
    // connection), v2 is flexible. librdkafka 2.0.2 picks 1, Java 2.
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The versions of `api_key` this broker serves, as (min, max), or `None` if it does not
/// serve the api at all.
pub fn served_versions(api_key: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, min, max)| (min, max))
}

/// A decoded Kafka request.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaRequest {
    /// The api, one of [`SERVED`].
    pub api_key: ApiKey,
    /// The api version, within the served range.
    pub api_version: i16,
    /// Echoed in the response header so the client can match the answer.
    pub correlation_id: i32,
    /// The client's self-chosen name (`client.id`), for logs and quotas; null is allowed.
    pub client_id: Option<String>,
    /// The decoded body; records inside it are slices of the frame's payload.
    pub body: RequestKind,
}

/// Why a payload did not become a [`KafkaRequest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not even the request header could be read: close the connection.
    #[error("unreadable Kafka request header: {0}")]
    Header(String),
    /// The header was read: answer this request with an error response (see
    /// [`error_response`], which says when none can be encoded), keep the connection.
    #[error("Kafka request refused (api key {api_key} v{api_version}, correlation id {correlation_id}): error {code}: {message}")]
    Refused {
        /// The api key as received (it may be one `kafka-protocol` does not know).
        api_key: i16,
        /// The api version as received.
        api_version: i16,
        /// The request's correlation id, for the response header.
        correlation_id: i32,
        /// The Kafka error code to answer with: UNSUPPORTED_VERSION or INVALID_REQUEST.
        code: i16,
        /// What was wrong, for the broker's log.
        message: String,
    },
}

/// A response that could not be encoded (the body does not belong to the api, the version
/// is outside `kafka-protocol`'s range, or a field is set that the version cannot carry).
/// Nothing is left in the output buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode the Kafka {api_key:?} v{api_version} response: {message}")]
pub struct EncodeError {
    /// The api whose response failed.
    pub api_key: ApiKey,
    /// The version it was to be encoded at.
    pub api_version: i16,
    /// What went wrong.
    pub message: String,
}

/// Decodes one request payload (the frame without its 4-byte length prefix).
///
/// Fewer than 8 bytes (api key, version, correlation id) or a header that does not parse is
/// [`DecodeError::Header`]. An api this broker does not serve, a version outside [`SERVED`]
/// and an api key `kafka-protocol` does not know are refused with UNSUPPORTED_VERSION
/// without reading further (an ApiVersions request of any unknown version among them: the
/// answer is the v0 fallback); a body that does not decode is refused with INVALID_REQUEST.
pub fn decode_request(mut payload: Bytes) -> Result<KafkaRequest, DecodeError> {
    let Some(&[k0, k1, v0, v1, c0, c1, c2, c3]) = payload.get(..8) else {
        return Err(DecodeError::Header(format!(
            "{} bytes, a request header needs at least 8",
            payload.len()
        )));
    };
    let raw_key = i16::from_be_bytes([k0, k1]);
    let api_version = i16::from_be_bytes([v0, v1]);
    let correlation_id = i32::from_be_bytes([c0, c1, c2, c3]);
    let refuse = |code: i16, message: String| DecodeError::Refused {
        api_key: raw_key,
        api_version,
        correlation_id,
        code,
        message,
    };
    let Ok(api_key) = ApiKey::try_from(raw_key) else {
        return Err(refuse(
            UNSUPPORTED_VERSION,
            format!("api key {raw_key} is not a Kafka api"),
        ));
    };
    let Some((min, max)) = served_versions(api_key) else {
        return Err(refuse(
            UNSUPPORTED_VERSION,
            format!("sluice does not serve {api_key:?}"),
        ));
    };
    if !(min..=max).contains(&api_version) {
        return Err(refuse(
            UNSUPPORTED_VERSION,
            format!("sluice serves {api_key:?} v{min} to v{max}, not v{api_version}"),
        ));
    }
    let header = RequestHeader::decode(&mut payload, api_key.request_header_version(api_version))
        .map_err(|e| DecodeError::Header(format!("{api_key:?} v{api_version}: {e:#}")))?;
    let body = RequestKind::decode(api_key, &mut payload, api_version)
        .map_err(|e| refuse(INVALID_REQUEST, format!("{e:#}")))?;
    Ok(KafkaRequest {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id.map(|id| id.to_string()),
        body,
    })
}

/// Encodes a response payload (response header of the right version + body) after `out`'s
/// current contents (the caller has reserved 4 bytes for the length prefix at the front).
///
/// The header is v1 (with tagged fields) for the api's flexible versions and v0 otherwise;
/// ApiVersions always has v0. On error `out` is left as it was.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    encode_with(api_key, api_version, correlation_id, body, out, |out| {
        body.encode(out, api_version)
    })
}

/// Encodes a response payload into `frame` like [`encode_response`], a Fetch answer's
/// record batches shared rather than copied ([`SplicingBuf`]), and those `in_files` sent
/// from their segment files.
pub fn encode_response_spliced(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    in_files: &[InFile],
    frame: &mut SplicedFrame,
) -> Result<(), EncodeError> {
    let ResponseKind::Fetch(fetch) = body else {
        return encode_response(api_key, api_version, correlation_id, body, frame.head_mut());
    };
    let flexible = api_key.response_header_version(api_version) >= 1;
    let mut out = SplicingBuf::new(frame, fetch, in_files, flexible);
    encode_with(
        api_key,
        api_version,
        correlation_id,
        body,
        &mut out,
        |out| fetch.encode(out, api_version),
    )
}

/// The header, then the body as `encode_body` writes it; on error `out` is left as it was.
fn encode_with<B: ByteBufMut, E: std::fmt::Display>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &ResponseKind,
    out: &mut B,
    encode_body: impl FnOnce(&mut B) -> Result<(), E>,
) -> Result<(), EncodeError> {
    let start = out.offset();
    let encode = || {
        if response_api_key(body) != Some(api_key) {
            return Err(format!("the body is not a {api_key:?} response"));
        }
        let versions = response_versions(api_key);
        if !(versions.min..=versions.max).contains(&api_version) {
            return Err(format!("kafka-protocol encodes v{versions} only"));
        }
        let header = ResponseHeader::default().with_correlation_id(correlation_id);
        header
            .encode(out, api_key.response_header_version(api_version))
            .map_err(|e| format!("header: {e:#}"))?;
        encode_body(out).map_err(|e| format!("{e:#}"))
    };
    let result = encode();
    if result.is_err() {
        out.seek(start);
    }
    result.map_err(|message| EncodeError {
        api_key,
        api_version,
        message,
    })
}

/// The answer to a [`DecodeError::Refused`] request, or to a request the handlers could not
/// serve, with Kafka error `code`, encoded like [`encode_response`] does.
///
/// ApiVersions is always answered in its v0 form (header v0, the error code and our api
/// list), whatever version was asked: that is the fallback every client understands, and
/// with UNSUPPORTED_VERSION the list tells it which version to retry with. Every other api
/// gets its default (empty) response at the requested version with the top-level error code
/// set, where that version has one.
///
/// Returns false, writing nothing, when no response can carry the error: an api key
/// `kafka-protocol` does not know, a version outside its range for the api, or a response
/// without a top-level error code (Produce, Fetch before v7, ListOffsets, Metadata before
/// v13, OffsetCommit, the topic and config admin apis, ...). Those carry their errors per
/// item, and a refused request's items are unknown: an answer without items reads as "all
/// done" to a client (Sarama took an empty AlterConfigs answer for success). Then the
/// listener closes the connection, as Kafka does for requests it cannot read.
pub fn error_response(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    code: i16,
    out: &mut BytesMut,
) -> bool {
    let Ok(key) = ApiKey::try_from(api_key) else {
        return false;
    };
    let (version, body) = if key == ApiKey::ApiVersions {
        (0, ResponseKind::ApiVersions(api_versions_response(code)))
    } else {
        let mut body = default_response(key);
        if !set_top_level_error(&mut body, api_version, code) {
            return false;
        }
        (api_version, body)
    };
    encode_response(key, version, correlation_id, &body, out).is_ok()
}

/// The error answer to a decoded request that the handlers could not serve: `request`'s
/// api's response with `code` at the top level where its version has one, and on every
/// item the request named (each partition of a Produce, Fetch, ListOffsets, OffsetCommit,
/// OffsetForLeaderEpoch, DeleteRecords, DescribeProducers or WriteTxnMarkers, each
/// transactional id of a DescribeTransactions, each topic of a Metadata, CreateTopics,
/// DeleteTopics or CreatePartitions, each group of a DescribeGroups, DeleteGroups or
/// multi-group OffsetFetch, each key of a batched FindCoordinator, each resource of the config apis), as Kafka's own error responses do.
/// An ApiVersions request gets the normal list with the error. Encode it with
/// [`encode_response`] at the request's version.
pub fn error_response_for(request: &KafkaRequest, code: i16) -> ResponseKind {
    if request.api_key == ApiKey::ApiVersions {
        return ResponseKind::ApiVersions(api_versions_response(code));
    }
    let mut body = default_response(request.api_key);
    set_top_level_error(&mut body, request.api_version, code);
    item_errors::fill(&request.body, request.api_version, code, &mut body);
    body
}

/// The ApiVersions response body listing [`SERVED`], with `error_code` (0 for the normal
/// answer; the handler uses this too, so what is advertised is what is decoded).
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SERVED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

/// sluice's error codes (`sluice_protocol::ErrorCode`, Kafka's numbers below 1000,
/// sluice-only from 1000) as Kafka clients must see them.
///
/// Kafka's codes pass unchanged. DISK_FULL becomes KAFKA_STORAGE_ERROR (56), Kafka's code for
/// a log directory that failed, which producers retry (another replica may take over).
/// BROKER_SHUTTING_DOWN becomes NOT_LEADER_OR_FOLLOWER (6): what Kafka itself answers while
/// a controlled shutdown moves leadership away, an `InvalidMetadataException` that every
/// client handles by refreshing metadata and retrying elsewhere. Coordinator and admin apis
/// do not understand 6; [`kafka_error_code_for`] picks their equivalent. Any other
/// sluice-only code becomes UNKNOWN_SERVER_ERROR (-1).
pub fn kafka_error_code(code: ErrorCode) -> i16 {
    match code {
        ErrorCode::DiskFull => ErrorCode::KafkaStorageError.code(),
        ErrorCode::BrokerShuttingDown => ErrorCode::NotLeaderOrFollower.code(),
        other if other.code() < 1000 => other.code(),
        _ => ErrorCode::UnknownServerError.code(),
    }
}

/// [`kafka_error_code`], except that BROKER_SHUTTING_DOWN becomes the retriable code the
/// api's clients act on: NOT_COORDINATOR (16) for the group apis that go to a coordinator
/// (the client finds the coordinator again), COORDINATOR_NOT_AVAILABLE (15) for
/// FindCoordinator, ListGroups and InitProducerId (retried after a backoff), NOT_CONTROLLER
/// (41) for the admin apis that change topics or configs (the admin client refreshes
/// metadata and retries), NOT_LEADER_OR_FOLLOWER (6) for the rest. The Java consumer treats
/// an unexpected code in a JoinGroup answer as fatal, hence the distinction.
pub fn kafka_error_code_for(api_key: ApiKey, code: ErrorCode) -> i16 {
    if code == ErrorCode::ProducerFenced && producer_fenced_from(api_key).is_none() {
        return ErrorCode::InvalidProducerEpoch.code();
    }
    if code != ErrorCode::BrokerShuttingDown {
        return kafka_error_code(code);
    }
    let instead = match api_key {
        ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::DescribeGroups
        | ApiKey::DeleteGroups
        | ApiKey::OffsetDelete
        | ApiKey::AddPartitionsToTxn
        | ApiKey::AddOffsetsToTxn
        | ApiKey::EndTxn
        | ApiKey::TxnOffsetCommit
        | ApiKey::DescribeTransactions => ErrorCode::NotCoordinator,
        ApiKey::FindCoordinator
        | ApiKey::ListGroups
        | ApiKey::ListTransactions
        | ApiKey::InitProducerId => ErrorCode::CoordinatorNotAvailable,
        ApiKey::CreateTopics
        | ApiKey::DeleteTopics
        | ApiKey::CreatePartitions
        | ApiKey::ElectLeaders
        | ApiKey::AlterPartitionReassignments
        | ApiKey::IncrementalAlterConfigs
        | ApiKey::AlterConfigs => ErrorCode::NotController,
        _ => ErrorCode::NotLeaderOrFollower,
    };
    instead.code()
}

/// [`kafka_error_code_for`] at `api_version`: PRODUCER_FENCED (90, KIP-588) only from the
/// version that may carry it, INVALID_PRODUCER_EPOCH (47) before, as Kafka answers older
/// clients (kafkajs, at v1 of the transaction apis, reported 90 as an unknown error rather
/// than as being fenced).
pub fn kafka_error_code_at(api_key: ApiKey, api_version: i16, code: ErrorCode) -> i16 {
    let kafka = kafka_error_code_for(api_key, code);
    match producer_fenced_from(api_key) {
        Some(from) if code == ErrorCode::ProducerFenced && api_version < from => {
            ErrorCode::InvalidProducerEpoch.code()
        }
        _ => kafka,
    }
}

/// The first version of `api_key`'s response that may carry PRODUCER_FENCED, if any does.
fn producer_fenced_from(api_key: ApiKey) -> Option<i16> {
    match api_key {
        ApiKey::InitProducerId => Some(4),
        ApiKey::AddPartitionsToTxn | ApiKey::AddOffsetsToTxn | ApiKey::EndTxn => Some(2),
        _ => None,
    }
}

/// The request and response types of every api `kafka-protocol` knows: the versions each
/// decodes and encodes, the default response, and which api a response body belongs to.
/// `ApiKey` is exhaustive, so a new `kafka-protocol` api fails to compile here until listed.
macro_rules! all_apis {
    ($($key:ident => $request:ident, $response:ident;)*) => {
        /// The versions of `api_key`'s request that `kafka-protocol` decodes.
        pub fn request_versions(api_key: ApiKey) -> VersionRange {
            match api_key {
                $(ApiKey::$key => <$request as Message>::VERSIONS,)*
            }
        }

        /// The versions of `api_key`'s response that `kafka-protocol` encodes (for three
        /// apis one more than the request decodes).
        pub fn response_versions(api_key: ApiKey) -> VersionRange {
            match api_key {
                $(ApiKey::$key => <$response as Message>::VERSIONS,)*
            }
        }

        /// `api_key`'s response with every field at its default.
        fn default_response(api_key: ApiKey) -> ResponseKind {
            match api_key {
                $(ApiKey::$key => ResponseKind::$key($response::default()),)*
            }
        }

        /// `api_key`'s request with every field at its default.
        #[cfg(test)]
        fn default_request(api_key: ApiKey) -> RequestKind {
            match api_key {
                $(ApiKey::$key => RequestKind::$key($request::default()),)*
            }
        }

        /// The api a response body answers (`None` for a variant added to `kafka-protocol`'s
        /// non-exhaustive enum after 0.18).
        fn response_api_key(body: &ResponseKind) -> Option<ApiKey> {
            match body {
                $(ResponseKind::$key(_) => Some(ApiKey::$key),)*
                #[allow(unreachable_patterns)]
                _ => None,
            }
        }
    };
}

all_apis! {
    Produce => ProduceRequest, ProduceResponse;
    Fetch => FetchRequest, FetchResponse;
    ListOffsets => ListOffsetsRequest, ListOffsetsResponse;
    Metadata => MetadataRequest, MetadataResponse;
    OffsetCommit => OffsetCommitRequest, OffsetCommitResponse;
    OffsetFetch => OffsetFetchRequest, OffsetFetchResponse;
    FindCoordinator => FindCoordinatorRequest, FindCoordinatorResponse;
    JoinGroup => JoinGroupRequest, JoinGroupResponse;
    Heartbeat => HeartbeatRequest, HeartbeatResponse;
    LeaveGroup => LeaveGroupRequest, LeaveGroupResponse;
    SyncGroup => SyncGroupRequest, SyncGroupResponse;
    DescribeGroups => DescribeGroupsRequest, DescribeGroupsResponse;
    ListGroups => ListGroupsRequest, ListGroupsResponse;
    SaslHandshake => SaslHandshakeRequest, SaslHandshakeResponse;
    ApiVersions => ApiVersionsRequest, ApiVersionsResponse;
    CreateTopics => CreateTopicsRequest, CreateTopicsResponse;
    DeleteTopics => DeleteTopicsRequest, DeleteTopicsResponse;
    DeleteRecords => DeleteRecordsRequest, DeleteRecordsResponse;
    InitProducerId => InitProducerIdRequest, InitProducerIdResponse;
    OffsetForLeaderEpoch => OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse;
    AddPartitionsToTxn => AddPartitionsToTxnRequest, AddPartitionsToTxnResponse;
    AddOffsetsToTxn => AddOffsetsToTxnRequest, AddOffsetsToTxnResponse;
    EndTxn => EndTxnRequest, EndTxnResponse;
    WriteTxnMarkers => WriteTxnMarkersRequest, WriteTxnMarkersResponse;
    TxnOffsetCommit => TxnOffsetCommitRequest, TxnOffsetCommitResponse;
    DescribeAcls => DescribeAclsRequest, DescribeAclsResponse;
    CreateAcls => CreateAclsRequest, CreateAclsResponse;
    DeleteAcls => DeleteAclsRequest, DeleteAclsResponse;
    DescribeConfigs => DescribeConfigsRequest, DescribeConfigsResponse;
    AlterConfigs => AlterConfigsRequest, AlterConfigsResponse;
    AlterReplicaLogDirs => AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse;
    DescribeLogDirs => DescribeLogDirsRequest, DescribeLogDirsResponse;
    SaslAuthenticate => SaslAuthenticateRequest, SaslAuthenticateResponse;
    CreatePartitions => CreatePartitionsRequest, CreatePartitionsResponse;
    CreateDelegationToken => CreateDelegationTokenRequest, CreateDelegationTokenResponse;
    RenewDelegationToken => RenewDelegationTokenRequest, RenewDelegationTokenResponse;
    ExpireDelegationToken => ExpireDelegationTokenRequest, ExpireDelegationTokenResponse;
    DescribeDelegationToken => DescribeDelegationTokenRequest, DescribeDelegationTokenResponse;
    DeleteGroups => DeleteGroupsRequest, DeleteGroupsResponse;
    ElectLeaders => ElectLeadersRequest, ElectLeadersResponse;
    IncrementalAlterConfigs => IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
    AlterPartitionReassignments => AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse;
    ListPartitionReassignments => ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse;
    OffsetDelete => OffsetDeleteRequest, OffsetDeleteResponse;
    DescribeClientQuotas => DescribeClientQuotasRequest, DescribeClientQuotasResponse;
    AlterClientQuotas => AlterClientQuotasRequest, AlterClientQuotasResponse;
    DescribeUserScramCredentials => DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse;
    AlterUserScramCredentials => AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse;
    Vote => VoteRequest, VoteResponse;
    BeginQuorumEpoch => BeginQuorumEpochRequest, BeginQuorumEpochResponse;
    EndQuorumEpoch => EndQuorumEpochRequest, EndQuorumEpochResponse;
    DescribeQuorum => DescribeQuorumRequest, DescribeQuorumResponse;
    AlterPartition => AlterPartitionRequest, AlterPartitionResponse;
    UpdateFeatures => UpdateFeaturesRequest, UpdateFeaturesResponse;
    Envelope => EnvelopeRequest, EnvelopeResponse;
    FetchSnapshot => FetchSnapshotRequest, FetchSnapshotResponse;
    DescribeCluster => DescribeClusterRequest, DescribeClusterResponse;
    DescribeProducers => DescribeProducersRequest, DescribeProducersResponse;
    BrokerRegistration => BrokerRegistrationRequest, BrokerRegistrationResponse;
    BrokerHeartbeat => BrokerHeartbeatRequest, BrokerHeartbeatResponse;
    UnregisterBroker => UnregisterBrokerRequest, UnregisterBrokerResponse;
    DescribeTransactions => DescribeTransactionsRequest, DescribeTransactionsResponse;
    ListTransactions => ListTransactionsRequest, ListTransactionsResponse;
    AllocateProducerIds => AllocateProducerIdsRequest, AllocateProducerIdsResponse;
    ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse;
    ConsumerGroupDescribe => ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse;
    ControllerRegistration => ControllerRegistrationRequest, ControllerRegistrationResponse;
    GetTelemetrySubscriptions => GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse;
    PushTelemetry => PushTelemetryRequest, PushTelemetryResponse;
    AssignReplicasToDirs => AssignReplicasToDirsRequest, AssignReplicasToDirsResponse;
    ListConfigResources => ListConfigResourcesRequest, ListConfigResourcesResponse;
    DescribeTopicPartitions => DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse;
    ShareGroupHeartbeat => ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse;
    ShareGroupDescribe => ShareGroupDescribeRequest, ShareGroupDescribeResponse;
    ShareFetch => ShareFetchRequest, ShareFetchResponse;
    ShareAcknowledge => ShareAcknowledgeRequest, ShareAcknowledgeResponse;
    AddRaftVoter => AddRaftVoterRequest, AddRaftVoterResponse;
    RemoveRaftVoter => RemoveRaftVoterRequest, RemoveRaftVoterResponse;
    UpdateRaftVoter => UpdateRaftVoterRequest, UpdateRaftVoterResponse;
    InitializeShareGroupState => InitializeShareGroupStateRequest, InitializeShareGroupStateResponse;
    ReadShareGroupState => ReadShareGroupStateRequest, ReadShareGroupStateResponse;
    WriteShareGroupState => WriteShareGroupStateRequest, WriteShareGroupStateResponse;
    DeleteShareGroupState => DeleteShareGroupStateRequest, DeleteShareGroupStateResponse;
    ReadShareGroupStateSummary => ReadShareGroupStateSummaryRequest, ReadShareGroupStateSummaryResponse;
    DescribeShareGroupOffsets => DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse;
    AlterShareGroupOffsets => AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse;
    DeleteShareGroupOffsets => DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse;
}

/// The responses with a top-level `error_code`, and the versions that carry it (from
/// `kafka-protocol`'s field docs; setting it outside them fails to encode for some apis).
macro_rules! top_level_error {
    ($($key:ident $min:literal..=$max:literal,)*) => {
        /// Sets `body`'s top-level error code if `version` has one; false if it has none.
        fn set_top_level_error(body: &mut ResponseKind, version: i16, code: i16) -> bool {
            match body {
                $(ResponseKind::$key(response) if ($min..=$max).contains(&version) => {
                    response.error_code = code;
                    true
                })*
                _ => false,
            }
        }
    };
}

top_level_error! {
    AddOffsetsToTxn 0..=4,
    AddPartitionsToTxn 4..=5,
    AddRaftVoter 0..=0,
    AllocateProducerIds 0..=0,
    AlterPartitionReassignments 0..=1,
    AlterPartition 2..=3,
    AlterShareGroupOffsets 0..=0,
    ApiVersions 0..=4,
    AssignReplicasToDirs 0..=0,
    BeginQuorumEpoch 0..=1,
    BrokerHeartbeat 0..=1,
    BrokerRegistration 0..=4,
    ConsumerGroupHeartbeat 0..=1,
    ControllerRegistration 0..=0,
    CreateDelegationToken 1..=3,
    DeleteShareGroupOffsets 0..=0,
    DescribeAcls 1..=3,
    DescribeClientQuotas 0..=1,
    DescribeCluster 0..=2,
    DescribeDelegationToken 1..=3,
    DescribeLogDirs 3..=4,
    DescribeQuorum 0..=2,
    DescribeUserScramCredentials 0..=0,
    ElectLeaders 1..=2,
    EndQuorumEpoch 0..=1,
    EndTxn 0..=5,
    Envelope 0..=0,
    ExpireDelegationToken 1..=2,
    Fetch 7..=18,
    FetchSnapshot 0..=1,
    FindCoordinator 0..=3,
    GetTelemetrySubscriptions 0..=0,
    Heartbeat 0..=4,
    InitProducerId 0..=6,
    JoinGroup 0..=9,
    LeaveGroup 0..=5,
    ListConfigResources 0..=1,
    ListGroups 0..=5,
    ListPartitionReassignments 0..=0,
    ListTransactions 0..=2,
    Metadata 13..=13,
    OffsetDelete 0..=0,
    OffsetFetch 2..=7,
    PushTelemetry 0..=0,
    RemoveRaftVoter 0..=0,
    RenewDelegationToken 1..=2,
    SaslAuthenticate 0..=2,
    SaslHandshake 0..=1,
    ShareAcknowledge 1..=1,
    ShareFetch 1..=1,
    ShareGroupHeartbeat 1..=1,
    SyncGroup 0..=5,
    UnregisterBroker 0..=0,
    UpdateFeatures 0..=2,
    UpdateRaftVoter 0..=0,
    Vote 0..=2,
}

mod item_errors;

/// Record batches a Fetch answer sends from a segment file. kafka-protocol's message, which
/// holds bytes, carries `stand_in` where they go: [`STAND_IN_LEN`] bytes of its own, which
/// the encoder ([`SplicingBuf`]) recognises by address and replaces, length included, with
/// the file's range. (Were it ever sent as it is, a client would read 8 zero bytes as an
/// incomplete batch and skip it: no record could be made of it.)
#[derive(Clone, Debug)]
pub struct InFile {
    /// What kafka-protocol's message holds instead of the batches.
    pub stand_in: Bytes,
    /// Where the batches are.
    pub slice: FileSlice,
}

/// Bytes of an [`InFile`]'s stand-in.
pub const STAND_IN_LEN: usize = 8;

impl InFile {
    /// The batches of `slice`, with a stand-in of their own.
    pub fn new(slice: FileSlice) -> InFile {
        InFile {
            stand_in: Bytes::from(vec![0u8; STAND_IN_LEN]),
            slice,
        }
    }
}

/// A [`SplicedFrame`] as kafka-protocol's output buffer: a byte string that is one of
/// `shareable` (the Fetch answer's record batches, recognised by address and length when
/// kafka-protocol copies them in) is shared into the frame instead of copied, and the
/// stand-in of an [`InFile`] becomes its file range.
pub struct SplicingBuf<'a> {
    frame: &'a mut SplicedFrame,
    shareable: Vec<Bytes>,
    in_files: &'a [InFile],
    /// Whether the version writes byte strings' lengths as compact varints (else `i32`).
    flexible: bool,
}

impl<'a> SplicingBuf<'a> {
    /// Encodes into `frame`, sharing the record batches of `fetch` and sending `in_files`
    /// from their files.
    pub fn new(
        frame: &'a mut SplicedFrame,
        fetch: &FetchResponse,
        in_files: &'a [InFile],
        flexible: bool,
    ) -> SplicingBuf<'a> {
        let shareable = fetch
            .responses
            .iter()
            .flat_map(|topic| &topic.partitions)
            .filter_map(|partition| partition.records.clone())
            .filter(|records| records.len() >= SPLICE_MIN_BYTES)
            .collect();
        SplicingBuf {
            frame,
            shareable,
            in_files,
            flexible,
        }
    }

    /// kafka-protocol has just written the stand-in's length: puts the file range's
    /// length in its place, then the range.
    fn put_file(&mut self, slice: &FileSlice) {
        let head = self.frame.head_mut();
        let written = if self.flexible {
            head.last() == Some(&(STAND_IN_LEN as u8 + 1))
        } else {
            head.ends_with(&(STAND_IN_LEN as i32).to_be_bytes())
        };
        assert!(
            written,
            "a stand-in's length is not where kafka-protocol writes it"
        );
        if self.flexible {
            head.truncate(head.len() - 1);
            put_unsigned_varint(head, slice.len() as u32 + 1);
        } else {
            head.truncate(head.len() - 4);
            head.put_i32(slice.len() as i32);
        }
        self.frame.put_file(slice);
    }
}

// SAFETY: every method hands the head's own `BufMut` through unchanged (`put_slice` only
// chooses between that and sharing), so the head's guarantees hold.
unsafe impl BufMut for SplicingBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.frame.head().remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of the head's `chunk_mut`.
        unsafe { self.frame.head_mut().advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.frame.head_mut().chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        let same = |b: &Bytes| b.as_ptr() == src.as_ptr() && b.len() == src.len();
        if src.len() == STAND_IN_LEN {
            if let Some(in_file) = self.in_files.iter().find(|f| same(&f.stand_in)) {
                self.put_file(&in_file.slice);
                return;
            }
        }
        if src.len() >= SPLICE_MIN_BYTES {
            if let Some(records) = self.shareable.iter().find(|b| same(b)) {
                self.frame.put_shared(records);
                return;
            }
        }
        self.frame.head_mut().put_slice(src);
    }
}

impl ByteBufMut for SplicingBuf<'_> {
    fn offset(&self) -> usize {
        self.frame.len()
    }

    fn seek(&mut self, offset: usize) {
        self.frame.resize(offset);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        self.frame.range_mut(r)
    }
}

#[cfg(test)]
mod tests;
