//! The requests and responses of the native protocol (DESIGN §4), one module per api
//! family, and the envelopes around them.
//!
//! A request payload is `api_key u16, api_version u16, correlation_id u32, client_id
//! string`, then the api's body. A response payload is `correlation_id u32, error_code i16,
//! error_message nullable string`, then the api's body only when that top-level error is
//! NONE. Why a top-level error in every response: a broker must be able to answer a request
//! it could not decode (unknown api, unsupported version, malformed body) with something
//! any client can parse, instead of closing the connection; per-partition and per-item
//! errors stay inside the bodies.
//!
//! Every api is at version 0; [`ApiKey`] records each api's supported range, and decoding a
//! version outside it is [`Error::UnsupportedVersion`]. Kafka's api key numbers are used
//! where Kafka has the api; sluice-only apis take keys from 1000 up.

mod admin;
mod controller;
mod fetch;
mod group;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod replication;
mod security;
mod txn;

pub use admin::*;
pub use controller::*;
pub use fetch::*;
pub use group::*;
pub use metadata::*;
pub use offsets::*;
pub use produce::*;
pub use producer_id::*;
pub use replication::*;
pub use security::*;
pub use txn::*;

use bytes::{Bytes, BytesMut};

use crate::error_code::ErrorCode;
use crate::frame::SplicedFrame;
use crate::types::PartitionId;
use crate::wire::{wire_struct, Decode, Encode, Reader};
use crate::{Error, Result};

wire_struct! {
    /// A configuration key and value (topic configs in CreateTopics and Metadata).
    pub struct ConfigEntry {
        /// The key, such as `retention.ms`.
        pub name: String,
        /// The value, as text.
        pub value: String,
    }
}

wire_struct! {
    /// Some partitions of one topic.
    pub struct TopicPartitions {
        /// The topic's name.
        pub topic: String,
        /// The partitions' indexes.
        pub partitions: Vec<PartitionId>,
    }
}

wire_struct! {
    /// The outcome of an operation on one partition.
    pub struct PartitionResult {
        /// The partition's index.
        pub partition: PartitionId,
        /// NONE, or why the operation failed there.
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

wire_struct! {
    /// Per-partition outcomes in one topic.
    pub struct TopicPartitionResults {
        /// The topic's name.
        pub name: String,
        /// One result per partition.
        pub partitions: Vec<PartitionResult>,
    }
}

/// Defines [`ApiKey`], [`Request`] and [`Response`] from one table, so the key, the version
/// range and the body types of an api cannot disagree between encoder and decoder.
macro_rules! apis {
    ($( $(#[$doc:meta])* $variant:ident = $key:literal, versions $min:literal..=$max:literal, $req:ident, $resp:ident; )*) => {
        /// The apis of the native protocol, by their `u16` key on the wire.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum ApiKey {
            $( $(#[$doc])* $variant = $key, )*
        }

        impl ApiKey {
            /// Every api, in key order.
            pub const ALL: &'static [ApiKey] = &[$(ApiKey::$variant),*];

            /// The api of a key, or `None` for a key this build does not know.
            pub fn from_u16(key: u16) -> Option<ApiKey> {
                match key {
                    $( $key => Some(ApiKey::$variant), )*
                    _ => None,
                }
            }

            /// The api's name (`Produce`).
            pub fn name(self) -> &'static str {
                match self {
                    $( ApiKey::$variant => stringify!($variant), )*
                }
            }

            /// The lowest version this build decodes.
            pub fn min_version(self) -> u16 {
                match self {
                    $( ApiKey::$variant => $min, )*
                }
            }

            /// The highest version this build decodes (and the one it encodes).
            pub fn max_version(self) -> u16 {
                match self {
                    $( ApiKey::$variant => $max, )*
                }
            }
        }

        /// A decoded request body, one variant per api.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Request {
            $( #[doc = concat!("A ", stringify!($variant), " request.")] $variant($req), )*
        }

        /// A decoded response body, one variant per api.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Response {
            $( #[doc = concat!("A ", stringify!($variant), " response.")] $variant($resp), )*
        }

        impl Request {
            /// The api of this request.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $( Request::$variant(_) => ApiKey::$variant, )*
                }
            }

            fn encode_body(&self, buf: &mut BytesMut) -> Result<()> {
                match self {
                    $( Request::$variant(body) => body.encode(buf), )*
                }
            }

            fn encode_body_spliced(&self, frame: &mut SplicedFrame) -> Result<()> {
                match self {
                    $( Request::$variant(body) => body.encode_spliced(frame), )*
                }
            }

            fn body_len(&self) -> usize {
                match self {
                    $( Request::$variant(body) => body.encoded_len(), )*
                }
            }

            fn decode_body(api_key: ApiKey, r: &mut Reader) -> Result<Request> {
                match api_key {
                    $( ApiKey::$variant => $req::decode(r).map(Request::$variant), )*
                }
            }
        }

        impl Response {
            /// The api of this response.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $( Response::$variant(_) => ApiKey::$variant, )*
                }
            }

            fn encode_body(&self, buf: &mut BytesMut) -> Result<()> {
                match self {
                    $( Response::$variant(body) => body.encode(buf), )*
                }
            }

            fn encode_body_spliced(&self, frame: &mut SplicedFrame) -> Result<()> {
                match self {
                    $( Response::$variant(body) => body.encode_spliced(frame), )*
                }
            }

            fn body_len(&self) -> usize {
                match self {
                    $( Response::$variant(body) => body.encoded_len(), )*
                }
            }

            fn decode_body(api_key: ApiKey, r: &mut Reader) -> Result<Response> {
                match api_key {
                    $( ApiKey::$variant => $resp::decode(r).map(Response::$variant), )*
                }
            }
        }

        #[cfg(test)]
        impl Request {
            /// A random request of the given api.
            pub(crate) fn generate_for(api_key: ApiKey, g: &mut proptest::test_runner::TestRunner) -> Request {
                use crate::wire::testing::Generate;
                match api_key {
                    $( ApiKey::$variant => Request::$variant($req::generate(g)), )*
                }
            }
        }

        #[cfg(test)]
        impl Response {
            /// A random response of the given api.
            pub(crate) fn generate_for(api_key: ApiKey, g: &mut proptest::test_runner::TestRunner) -> Response {
                use crate::wire::testing::Generate;
                match api_key {
                    $( ApiKey::$variant => Response::$variant($resp::generate(g)), )*
                }
            }
        }

        /// Round-trips one random request body and one random response body of every api.
        #[cfg(test)]
        pub(crate) fn check_every_body_round_trips(g: &mut proptest::test_runner::TestRunner) {
            use crate::wire::testing::{check_round_trip, Generate};
            $(
                check_round_trip(&$req::generate(g));
                check_round_trip(&$resp::generate(g));
            )*
        }
    };
}

apis! {
    /// Append record batches to partition leaders.
    Produce = 0, versions 0..=0, ProduceRequest, ProduceResponse;
    /// Read record batches below the high watermark (consumers).
    Fetch = 1, versions 0..=0, FetchRequest, FetchResponse;
    /// Find offsets by timestamp (earliest, latest, or a time).
    ListOffsets = 2, versions 0..=0, ListOffsetsRequest, ListOffsetsResponse;
    /// Brokers, topics, partitions, leaders.
    Metadata = 3, versions 0..=0, MetadataRequest, MetadataResponse;
    /// Commit a group's consumed offsets.
    OffsetCommit = 8, versions 0..=0, OffsetCommitRequest, OffsetCommitResponse;
    /// Read a group's committed offsets.
    OffsetFetch = 9, versions 0..=0, OffsetFetchRequest, OffsetFetchResponse;
    /// Find the coordinator of a group.
    FindCoordinator = 10, versions 0..=0, FindCoordinatorRequest, FindCoordinatorResponse;
    /// Join a consumer group.
    JoinGroup = 11, versions 0..=0, JoinGroupRequest, JoinGroupResponse;
    /// Keep a group membership alive.
    Heartbeat = 12, versions 0..=0, HeartbeatRequest, HeartbeatResponse;
    /// Leave a consumer group.
    LeaveGroup = 13, versions 0..=0, LeaveGroupRequest, LeaveGroupResponse;
    /// Complete a rebalance and get the member's assignment.
    SyncGroup = 14, versions 0..=0, SyncGroupRequest, SyncGroupResponse;
    /// Describe consumer groups.
    DescribeGroups = 15, versions 0..=0, DescribeGroupsRequest, DescribeGroupsResponse;
    /// List the groups of a coordinator.
    ListGroups = 16, versions 0..=0, ListGroupsRequest, ListGroupsResponse;
    /// Name the SASL mechanism a connection logs in with.
    SaslHandshake = 17, versions 0..=0, SaslHandshakeRequest, SaslHandshakeResponse;
    /// The apis and versions a broker supports.
    ApiVersions = 18, versions 0..=0, ApiVersionsRequest, ApiVersionsResponse;
    /// Create topics.
    CreateTopics = 19, versions 0..=0, CreateTopicsRequest, CreateTopicsResponse;
    /// Delete topics.
    DeleteTopics = 20, versions 0..=0, DeleteTopicsRequest, DeleteTopicsResponse;
    /// Delete the records below an offset of partitions.
    DeleteRecords = 21, versions 0..=0, DeleteRecordsRequest, DeleteRecordsResponse;
    /// List ACLs.
    DescribeAcls = 29, versions 0..=0, DescribeAclsRequest, DescribeAclsResponse;
    /// Add ACLs.
    CreateAcls = 30, versions 0..=0, CreateAclsRequest, CreateAclsResponse;
    /// Remove ACLs.
    DeleteAcls = 31, versions 0..=0, DeleteAclsRequest, DeleteAclsResponse;
    /// Get a producer id and epoch.
    InitProducerId = 22, versions 0..=0, InitProducerIdRequest, InitProducerIdResponse;
    /// Where leader epochs end in a leader's log (follower truncation).
    OffsetsForLeaderEpoch = 23, versions 0..=0, OffsetsForLeaderEpochRequest, OffsetsForLeaderEpochResponse;
    /// A transactional producer adds partitions to its transaction.
    AddPartitionsToTxn = 24, versions 0..=0, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse;
    /// A transactional producer adds its group's offsets to its transaction.
    AddOffsetsToTxn = 25, versions 0..=0, AddOffsetsToTxnRequest, TxnResponse;
    /// A transactional producer commits or aborts its transaction.
    EndTxn = 26, versions 0..=0, EndTxnRequest, TxnResponse;
    /// A transaction coordinator has leaders write commit or abort markers (brokers only).
    WriteTxnMarkers = 27, versions 0..=0, WriteTxnMarkersRequest, WriteTxnMarkersResponse;
    /// A transactional producer commits its group's offsets in its transaction.
    TxnOffsetCommit = 28, versions 0..=0, TxnOffsetCommitRequest, OffsetCommitResponse;
    /// One message of a SASL login.
    SaslAuthenticate = 36, versions 0..=0, SaslAuthenticateRequest, SaslAuthenticateResponse;
    /// Add partitions to topics.
    CreatePartitions = 37, versions 0..=0, CreatePartitionsRequest, CreatePartitionsResponse;
    /// Delete empty consumer groups.
    DeleteGroups = 42, versions 0..=0, DeleteGroupsRequest, DeleteGroupsResponse;
    /// Move partitions' leadership to their preferred replicas.
    ElectLeaders = 43, versions 0..=0, ElectLeadersRequest, ElectLeadersResponse;
    /// Change topic configs after creation (Kafka's IncrementalAlterConfigs).
    IncrementalAlterConfigs = 44, versions 0..=0, AlterConfigsRequest, AlterConfigsResponse;
    /// Move partitions to other replicas.
    AlterPartitionReassignments = 45, versions 0..=0, AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse;
    /// The partition moves under way.
    ListPartitionReassignments = 46, versions 0..=0, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse;
    /// List client quotas.
    DescribeClientQuotas = 48, versions 0..=0, DescribeClientQuotasRequest, DescribeClientQuotasResponse;
    /// Set or remove client quotas (byte rates per user and client id).
    AlterClientQuotas = 49, versions 0..=0, AlterClientQuotasRequest, AlterClientQuotasResponse;
    /// List SCRAM users.
    DescribeUserScramCredentials = 50, versions 0..=0, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse;
    /// Create, replace or remove SCRAM credentials.
    AlterUserScramCredentials = 51, versions 0..=0, AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse;
    /// The controller quorum's metadata log: leader, term, commit point, replicas.
    DescribeQuorum = 55, versions 0..=0, DescribeQuorumRequest, DescribeQuorumResponse;
    /// A leader proposes ISR changes to the controller.
    AlterPartition = 56, versions 0..=0, AlterPartitionRequest, AlterPartitionResponse;
    /// Brokers (fenced too) and the controller quorum.
    DescribeCluster = 60, versions 0..=0, DescribeClusterRequest, DescribeClusterResponse;
    /// A broker registers with the controller.
    BrokerRegistration = 62, versions 0..=0, BrokerRegistrationRequest, BrokerRegistrationResponse;
    /// A broker heartbeats the controller.
    BrokerHeartbeat = 63, versions 0..=0, BrokerHeartbeatRequest, BrokerHeartbeatResponse;
    /// A broker takes a block of producer ids from the controller.
    AllocateProducerIds = 67, versions 0..=0, AllocateProducerIdsRequest, AllocateProducerIdsResponse;
    /// Sluice only: a follower pulls from a leader.
    ReplicaFetch = 1000, versions 0..=0, ReplicaFetchRequest, ReplicaFetchResponse;
    /// Sluice only: an administrator overwrites a group's committed offsets.
    ResetOffsets = 1001, versions 0..=0, ResetOffsetsRequest, ResetOffsetsResponse;
    /// Sluice only: openraft vote between controllers (Kafka's KRaft Vote has another format).
    RaftVote = 1002, versions 0..=0, RaftVoteRequest, RaftVoteResponse;
    /// Sluice only: openraft append-entries between controllers.
    RaftAppendEntries = 1003, versions 0..=0, RaftAppendEntriesRequest, RaftAppendEntriesResponse;
    /// Sluice only: openraft snapshot transfer between controllers.
    RaftInstallSnapshot = 1004, versions 0..=0, RaftInstallSnapshotRequest, RaftInstallSnapshotResponse;
    /// Sluice only: would a controller vote for this one (before it stands for election)?
    RaftPreVote = 1005, versions 0..=0, RaftPreVoteRequest, RaftPreVoteResponse;
    /// Sluice only: is a partition in a producer's ongoing transaction? A leader asks the
    /// transaction coordinator before a batch begins the transaction there (brokers only).
    VerifyTxn = 1006, versions 0..=0, VerifyTxnRequest, VerifyTxnResponse;
}

impl ApiKey {
    /// Refuses a version outside this build's range for the api.
    pub fn check_version(self, version: u16) -> Result<()> {
        if (self.min_version()..=self.max_version()).contains(&version) {
            Ok(())
        } else {
            Err(Error::UnsupportedVersion {
                api: self.name(),
                api_key: self as u16,
                version,
                min: self.min_version(),
                max: self.max_version(),
            })
        }
    }
}

wire_struct! {
    /// The header of every request payload.
    pub struct RequestHeader {
        /// The api's key, raw so that an unknown key still decodes and can be answered.
        pub api_key: u16,
        /// The api version the body is encoded in.
        pub api_version: u16,
        /// Chosen by the client; the response carries it back.
        pub correlation_id: u32,
        /// Names the client in the broker's logs.
        pub client_id: String,
    }
}

impl RequestHeader {
    /// A header for `api_key` at the highest version this build speaks.
    pub fn new(api_key: ApiKey, correlation_id: u32, client_id: impl Into<String>) -> Self {
        RequestHeader {
            api_key: api_key as u16,
            api_version: api_key.max_version(),
            correlation_id,
            client_id: client_id.into(),
        }
    }
}

/// A request the broker could not decode. When the header decoded, `correlation_id` lets
/// the broker answer with an error response ([`RequestError::error_code`]) instead of
/// closing the connection; without it, the connection can only be closed.
#[derive(Debug, thiserror::Error)]
#[error("undecodable request (correlation id {correlation_id:?}): {error}")]
pub struct RequestError {
    /// The request's correlation id, when the header got that far.
    pub correlation_id: Option<u32>,
    /// Why the request was refused.
    pub error: Error,
}

impl RequestError {
    /// The top-level error code to answer with: UNSUPPORTED_VERSION for an api or version
    /// this broker does not serve, INVALID_REQUEST for anything malformed.
    pub fn error_code(&self) -> ErrorCode {
        match self.error {
            Error::UnknownApiKey(_) | Error::UnsupportedVersion { .. } => {
                ErrorCode::UnsupportedVersion
            }
            _ => ErrorCode::InvalidRequest,
        }
    }
}

/// Decodes a request frame's payload: header, then the body of its api and version. Record
/// batches in the body are zero-copy slices of `payload`.
pub fn decode_request(payload: Bytes) -> Result<(RequestHeader, Request), RequestError> {
    let mut r = Reader::new(payload);
    let header = RequestHeader::decode(&mut r).map_err(|error| RequestError {
        correlation_id: None,
        error,
    })?;
    let fail = |error| RequestError {
        correlation_id: Some(header.correlation_id),
        error,
    };
    let api_key = ApiKey::from_u16(header.api_key)
        .ok_or_else(|| fail(Error::UnknownApiKey(header.api_key)))?;
    api_key.check_version(header.api_version).map_err(fail)?;
    let request = Request::decode_body(api_key, &mut r).map_err(fail)?;
    r.set_context(api_key.name());
    r.finish().map_err(fail)?;
    Ok((header, request))
}

/// Reads the correlation id at the start of a response payload, so a client can match the
/// response to its request (and so learn which api to decode it as).
pub fn peek_correlation_id(payload: &[u8]) -> Result<u32> {
    match payload.get(..4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Error::Truncated {
            context: "response correlation id",
            needed: 4 - payload.len(),
        }),
    }
}

impl Request {
    /// Appends the request payload (header, then body). `header.api_key` must be this
    /// request's api; a mismatch is refused rather than sent.
    pub fn encode(&self, header: &RequestHeader, buf: &mut BytesMut) -> Result<()> {
        self.check_header(header)?;
        buf.reserve(header.encoded_len() + self.body_len());
        header.encode(buf)?;
        self.encode_body(buf)
    }

    /// Appends the request payload to `frame` like [`Request::encode`] does, sharing the
    /// record batches of Produce requests instead of copying them.
    pub fn encode_spliced(&self, header: &RequestHeader, frame: &mut SplicedFrame) -> Result<()> {
        self.check_header(header)?;
        header.encode(frame.head_mut())?;
        self.encode_body_spliced(frame)
    }

    /// Refuses a header that names another api than this request's, or a version it lacks.
    fn check_header(&self, header: &RequestHeader) -> Result<()> {
        let api_key = self.api_key();
        if header.api_key != api_key as u16 {
            return Err(Error::Invalid {
                field: "RequestHeader.api_key",
                reason: format!(
                    "header names api {} but the body is a {} request",
                    header.api_key,
                    api_key.name()
                ),
            });
        }
        api_key.check_version(header.api_version)
    }
}

wire_struct! {
    /// The header of every response payload.
    pub struct ResponseHeader {
        /// The correlation id of the request this answers.
        pub correlation_id: u32,
        /// NONE, or why the whole request failed (then no body follows).
        pub error_code: ErrorCode,
        /// Details of the error for a human, if any.
        pub error_message: Option<String>,
    }
}

impl Response {
    /// Appends a successful response payload: header with NONE, then the body.
    pub fn encode(&self, correlation_id: u32, buf: &mut BytesMut) -> Result<()> {
        let header = ResponseHeader {
            correlation_id,
            error_code: ErrorCode::None,
            error_message: None,
        };
        buf.reserve(header.encoded_len() + self.body_len());
        header.encode(buf)?;
        self.encode_body(buf)
    }

    /// Appends a successful response payload to `frame` like [`Response::encode`] does,
    /// sharing the record batches of Fetch and ReplicaFetch answers instead of copying them.
    pub fn encode_spliced(&self, correlation_id: u32, frame: &mut SplicedFrame) -> Result<()> {
        let header = ResponseHeader {
            correlation_id,
            error_code: ErrorCode::None,
            error_message: None,
        };
        header.encode(frame.head_mut())?;
        self.encode_body_spliced(frame)
    }

    /// Appends a response payload that fails the whole request with `error_code` (not
    /// NONE) and no body: the answer to a request that could not be decoded or served.
    pub fn encode_error(
        correlation_id: u32,
        error_code: ErrorCode,
        error_message: Option<&str>,
        buf: &mut BytesMut,
    ) -> Result<()> {
        if error_code == ErrorCode::None {
            return Err(Error::Invalid {
                field: "ResponseHeader.error_code",
                reason: "an error response needs an error code other than NONE".into(),
            });
        }
        ResponseHeader {
            correlation_id,
            error_code,
            error_message: error_message.map(str::to_owned),
        }
        .encode(buf)
    }

    /// Decodes a response payload of `api_key` at `api_version`: the header, then the body
    /// when the header's error is NONE (`None` otherwise, the error being in the header).
    /// Record batches in the body are zero-copy slices of `payload`.
    pub fn decode(
        api_key: ApiKey,
        api_version: u16,
        payload: Bytes,
    ) -> Result<(ResponseHeader, Option<Response>)> {
        api_key.check_version(api_version)?;
        let mut r = Reader::new(payload);
        let header = ResponseHeader::decode(&mut r)?;
        let body = if header.error_code == ErrorCode::None {
            Some(Response::decode_body(api_key, &mut r)?)
        } else {
            None
        };
        r.set_context(api_key.name());
        r.finish()?;
        Ok((header, body))
    }
}

#[cfg(test)]
mod tests;
