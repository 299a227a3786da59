//! The Kafka listener: Kafka's wire protocol in front of the same services the native
//! listener uses ([`crate::services`], [`crate::groups::Coordinator`]), so that Kafka
//! clients and tools (kcat, librdkafka, kafka-python, the Java client, stream processors)
//! produce, consume, use groups and administer topics unchanged. Record batches pass
//! through untouched in both directions: Kafka's RecordBatch v2 is sluice's own format.
//!
//! - [`codec`]: requests and responses through the `kafka-protocol` crate (request header
//!   v1/v2, flexible versions), ApiVersions and its v0 fallback, the apis and versions
//!   served, error answers for anything else, and sluice's error codes in Kafka's terms.
//! - One adapter module per api family (`produce`, `fetch`, `metadata`, `admin`,
//!   `groups`): Kafka's request in, one service call, Kafka's response out. No rule is
//!   written here that the native handlers do not share through the services.
//!
//! Framing is the native protocol's (a `u32` length, then the payload); connections are
//! served by [`crate::connection`] exactly as native ones, with this module as their
//! [`Protocol`]: produce appends and topic administration run in request order, the rest
//! concurrently, and answers leave in request order.

mod acls;
mod admin;
pub mod codec;
mod fetch;
mod groups;
mod metadata;
mod produce;
mod txn;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::frame::SplicedFrame;
use sluice_protocol::BrokerId;

use crate::broker::Services;
use crate::cluster::image::quotas::QuotaKey;
use crate::connection::{Answer, Protocol, Start, Throttle};
use crate::security::{Login, Principal};

/// The Kafka protocol error code for a refused frame (MESSAGE_TOO_LARGE), answered where the
/// response has a top-level error code; a Produce or other per-item response is not
/// answered (the connection closes, as Kafka closes it).
const MESSAGE_TOO_LARGE: i16 = 10;
/// The Kafka protocol's UNKNOWN_SERVER_ERROR.
const UNKNOWN_SERVER_ERROR: i16 = -1;

/// The Kafka protocol, as a listener serves it.
pub struct Kafka {
    services: Arc<Services>,
    node_id: BrokerId,
}

impl Kafka {
    /// The Kafka protocol over `services`, on broker `node_id`.
    pub fn new(services: Arc<Services>, node_id: BrokerId) -> Kafka {
        Kafka { services, node_id }
    }
}

/// What a response needs of its request's header.
#[derive(Clone, Copy, Debug)]
struct Header {
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
}

/// Who sent a request: group membership records it, the authorizer judges it.
#[derive(Clone, Debug)]
struct Caller {
    client_id: String,
    host: String,
    principal: Principal,
    /// The connection's throttle, which a consumer's fetch answer may extend.
    throttle: Throttle,
}

/// A Kafka request after its ordered phase.
pub struct KafkaStarted {
    header: Header,
    work: Work,
}

enum Work {
    /// A produce whose batches are in the logs, and how long its client is throttled.
    Produce(produce::Appended, Duration),
    /// Served entirely in the ordered phase (topic administration).
    Done(ResponseKind),
    /// Everything else: served concurrently.
    Other(RequestKind, Caller),
}

/// What the Kafka listener remembers about a connection.
pub struct KafkaConnection {
    /// Where the connection is in its SASL login.
    login: Login,
    /// Holds the client back while it is over a quota.
    throttle: Throttle,
}

impl Kafka {
    /// The login's part of a request: SaslHandshake and SaslAuthenticate are answered
    /// here; anything but ApiVersions before a required login closes the connection (what
    /// Kafka does: its clients report the disconnection), after a log line saying why.
    async fn authenticate(
        &self,
        connection: &mut KafkaConnection,
        header: Header,
        body: &RequestKind,
        peer: SocketAddr,
    ) -> Option<Start<KafkaStarted>> {
        let auth = &self.services.auth;
        let login = &mut connection.login;
        let body = match body {
            RequestKind::SaslHandshake(r) => {
                let outcome = auth.handshake(login, r.mechanism.as_str());
                let (code, _) = outcome
                    .err()
                    .map_or((0, None), |e| kafka_error(header.api_key, &e));
                ResponseKind::SaslHandshake(
                    SaslHandshakeResponse::default()
                        .with_error_code(code)
                        .with_mechanisms(
                            auth.mechanism_names().into_iter().map(kafka_str).collect(),
                        ),
                )
            }
            RequestKind::SaslAuthenticate(r) => {
                let answer = auth
                    .authenticate(login, &r.auth_bytes, &peer.to_string())
                    .await;
                let response = match answer {
                    Ok(answer) => {
                        SaslAuthenticateResponse::default().with_auth_bytes(answer.into())
                    }
                    Err(e) => {
                        let (code, message) = kafka_error(header.api_key, &e);
                        SaslAuthenticateResponse::default()
                            .with_error_code(code)
                            .with_error_message(message)
                    }
                };
                ResponseKind::SaslAuthenticate(response)
            }
            RequestKind::ApiVersions(_) => return None,
            _ if auth.principal(login).is_none() => {
                tracing::info!(
                    %peer,
                    "closing a Kafka connection: {:?} before logging in ({})",
                    header.api_key,
                    auth.not_authenticated(login).message
                );
                return Some(Start::Close);
            }
            _ => return None,
        };
        Some(Start::Answered(encode(header, &body, &[])))
    }
}

impl Protocol for Kafka {
    type Started = KafkaStarted;
    type Connection = KafkaConnection;

    fn opened(
        &self,
        _peer: SocketAddr,
        tls: bool,
        tls_identity: Option<String>,
    ) -> KafkaConnection {
        KafkaConnection {
            login: Login::new(tls, tls_identity),
            throttle: Throttle::default(),
        }
    }

    async fn start(
        &self,
        connection: &mut KafkaConnection,
        payload: Bytes,
        peer: SocketAddr,
    ) -> Start<KafkaStarted> {
        let request_bytes = payload.len();
        let request = match codec::decode_request(payload) {
            Ok(request) => request,
            Err(codec::DecodeError::Header(why)) => {
                tracing::debug!(%peer, "closing a Kafka connection: {why}");
                return Start::Close;
            }
            Err(codec::DecodeError::Refused {
                api_key,
                api_version,
                correlation_id,
                code,
                message,
            }) => {
                if first_refusal(api_key, api_version) {
                    tracing::warn!(
                        %peer,
                        "refusing a Kafka request (api {api_key} v{api_version}): {message}; \
                         the client is older than the versions sluice serves (Kafka 4.0's \
                         minimums) or uses an api sluice lacks: upgrade the client, or raise \
                         the Kafka version it is configured for (said once per api and version)"
                    );
                } else {
                    tracing::debug!(%peer, "refusing a Kafka request (api {api_key} v{api_version}): {message}");
                }
                return match error_answer(api_key, api_version, correlation_id, code) {
                    Some(answer) => Start::Answered(Some(answer)),
                    None => Start::Close,
                };
            }
        };
        let header = Header {
            api_key: request.api_key,
            api_version: request.api_version,
            correlation_id: request.correlation_id,
        };
        if let Some(answered) = self
            .authenticate(connection, header, &request.body, peer)
            .await
        {
            return answered;
        }
        let services = &self.services;
        let principal = services
            .auth
            .principal(&connection.login)
            .unwrap_or_else(Principal::anonymous);
        let work = match request.body {
            RequestKind::Produce(r) => {
                match produce::start(&services.produce, &principal, r, header.api_version).await {
                    Ok(appended) => {
                        let wait = services.quotas.record(
                            QuotaKey::ProducerByteRate,
                            &principal,
                            request.client_id.as_deref().unwrap_or_default(),
                            request_bytes,
                        );
                        connection.throttle.extend(wait);
                        Work::Produce(appended, wait)
                    }
                    Err(body) => Work::Done(body),
                }
            }
            RequestKind::CreateTopics(r) => Work::Done(
                admin::create_topics(&services.admin, &principal, r, header.api_version).await,
            ),
            RequestKind::DeleteTopics(r) => Work::Done(
                admin::delete_topics(&services.admin, &principal, r, header.api_version).await,
            ),
            RequestKind::CreatePartitions(r) => {
                Work::Done(admin::create_partitions(&services.admin, &principal, r).await)
            }
            other => Work::Other(
                other,
                Caller {
                    client_id: request.client_id.unwrap_or_default(),
                    host: peer.ip().to_string(),
                    principal,
                    throttle: connection.throttle.clone(),
                },
            ),
        };
        Start::Run(KafkaStarted { header, work })
    }

    async fn finish(self: Arc<Self>, started: KafkaStarted) -> Answer {
        let header = started.header;
        let body = match started.work {
            Work::Produce(appended, wait) => produce::finish(appended, wait).await?,
            Work::Done(body) => body,
            Work::Other(RequestKind::Fetch(mut request), caller) => {
                let services = &self.services;
                if let Some(limit) = services
                    .quotas
                    .fetch_limit(&caller.principal, &caller.client_id)
                {
                    request.max_bytes = request.max_bytes.min(limit);
                }
                let (mut body, in_files) = fetch::fetch(
                    &services.fetch,
                    &caller.principal,
                    request,
                    header.api_version,
                )
                .await;
                // The answer's size is its batches' (Kafka counts the whole response).
                let wait = services.quotas.record(
                    QuotaKey::ConsumerByteRate,
                    &caller.principal,
                    &caller.client_id,
                    fetch::answer_bytes(&body, &in_files),
                );
                caller.throttle.extend(wait);
                if let ResponseKind::Fetch(response) = &mut body {
                    response.throttle_time_ms = throttle_ms(wait);
                }
                return encode(header, &body, &in_files);
            }
            Work::Other(request, caller) => match self.serve(header, request, &caller).await {
                Some(body) => body,
                None => {
                    return error_answer(
                        header.api_key as i16,
                        header.api_version,
                        header.correlation_id,
                        UNKNOWN_SERVER_ERROR,
                    )
                }
            },
        };
        encode(header, &body, &[])
    }

    fn refuse_frame(&self, payload_start: &[u8], _error: &sluice_protocol::Error) -> Answer {
        // Payload: api_key i16, api_version i16, correlation_id i32, ...
        let field = |at: usize| {
            payload_start
                .get(at..at + 2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
        };
        let (api_key, api_version) = (field(0)?, field(2)?);
        let id = payload_start.get(4..8)?;
        let correlation_id = i32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        error_answer(api_key, api_version, correlation_id, MESSAGE_TOO_LARGE)
    }

    fn closed(&self, _: KafkaConnection) {}

    fn throttle<'a>(&self, connection: &'a KafkaConnection) -> Option<&'a Throttle> {
        Some(&connection.throttle)
    }

    fn api_name(&self, payload: &[u8]) -> &'static str {
        static NAMES: std::sync::OnceLock<crate::metrics::ApiNames> = std::sync::OnceLock::new();
        NAMES
            .get_or_init(|| {
                crate::metrics::ApiNames::new(
                    codec::SERVED
                        .iter()
                        .map(|(key, _, _)| (*key as i16, format!("{key:?}"))),
                )
            })
            .of_payload(payload)
    }
}

impl Kafka {
    /// Serves a request outside the ordered phase; `None` for an api this listener does not
    /// serve (the codec refuses those first, so this is a bug, answered with an error).
    async fn serve(
        &self,
        header: Header,
        request: RequestKind,
        caller: &Caller,
    ) -> Option<ResponseKind> {
        let services = &self.services;
        let version = header.api_version;
        let groups = &*services.groups;
        let principal = &caller.principal;
        Some(match request {
            RequestKind::ApiVersions(_) => {
                ResponseKind::ApiVersions(codec::api_versions_response(0))
            }
            RequestKind::Metadata(r) => {
                metadata::metadata(&services.admin, principal, r, version, self.node_id).await
            }
            RequestKind::DescribeCluster(r) => {
                metadata::describe_cluster(&services.admin, principal, r, self.node_id).await
            }
            RequestKind::ListOffsets(r) => {
                fetch::list_offsets(&services.offsets, principal, r, version).await
            }
            RequestKind::OffsetForLeaderEpoch(r) => {
                fetch::offset_for_leader_epoch(&services.offsets, principal, r).await
            }
            RequestKind::DeleteRecords(r) => {
                fetch::delete_records(&services.offsets, principal, r).await
            }
            RequestKind::DescribeConfigs(r) => {
                admin::describe_configs(&services.admin, principal, r)
            }
            RequestKind::DescribeLogDirs(r) => {
                admin::describe_log_dirs(&services.admin, principal, r)
            }
            RequestKind::ListPartitionReassignments(r) => {
                admin::list_partition_reassignments(&services.admin, principal, r)
            }
            RequestKind::DescribeQuorum(r) => {
                admin::describe_quorum(&services.admin, principal, r).await
            }
            RequestKind::AlterPartitionReassignments(r) => {
                admin::alter_partition_reassignments(&services.admin, principal, r, version).await
            }
            RequestKind::DescribeClientQuotas(r) => {
                admin::describe_client_quotas(&services.quotas, principal, r)
            }
            RequestKind::AlterClientQuotas(r) => {
                admin::alter_client_quotas(&services.quotas, principal, r).await
            }
            RequestKind::ElectLeaders(r) => {
                admin::elect_leaders(&services.admin, principal, r, version).await
            }
            RequestKind::CreateAcls(r) => acls::create_acls(&services.acls, principal, r).await,
            RequestKind::DescribeAcls(r) => acls::describe_acls(&services.acls, principal, r),
            RequestKind::DeleteAcls(r) => acls::delete_acls(&services.acls, principal, r).await,
            RequestKind::DescribeUserScramCredentials(r) => {
                users::describe(&services.users, principal, r)
            }
            RequestKind::AlterUserScramCredentials(r) => {
                users::alter(&services.users, principal, r).await
            }
            RequestKind::IncrementalAlterConfigs(r) => {
                admin::incremental_alter_configs(&services.admin, principal, r).await
            }
            RequestKind::AlterConfigs(r) => {
                admin::alter_configs(&services.admin, principal, r).await
            }
            RequestKind::InitProducerId(r) => {
                admin::init_producer_id(
                    &services.producer_ids,
                    &services.txns,
                    principal,
                    r,
                    version,
                )
                .await
            }
            RequestKind::FindCoordinator(r) => {
                groups::find_coordinator(groups, &services.txns, principal, r, version).await
            }
            RequestKind::AddPartitionsToTxn(r) => {
                txn::add_partitions_to_txn(&services.txns, principal, r, version).await
            }
            RequestKind::AddOffsetsToTxn(r) => {
                txn::add_offsets_to_txn(&services.txns, principal, r, version).await
            }
            RequestKind::EndTxn(r) => txn::end_txn(&services.txns, principal, r, version).await,
            RequestKind::ListTransactions(r) => {
                txn::list_transactions(&services.txns, principal, r).await
            }
            RequestKind::DescribeTransactions(r) => {
                txn::describe_transactions(&services.txns, principal, r).await
            }
            RequestKind::DescribeProducers(r) => {
                txn::describe_producers(&services.offsets, principal, r).await
            }
            RequestKind::WriteTxnMarkers(r) => {
                txn::write_txn_markers(&services.txns, principal, r).await
            }
            RequestKind::TxnOffsetCommit(r) => {
                groups::txn_offset_commit(groups, principal, r).await
            }
            RequestKind::JoinGroup(r) => {
                groups::join_group(groups, principal, r, version, caller).await
            }
            RequestKind::SyncGroup(r) => groups::sync_group(groups, principal, r).await,
            RequestKind::Heartbeat(r) => groups::heartbeat(groups, principal, r).await,
            RequestKind::LeaveGroup(r) => groups::leave_group(groups, principal, r, version).await,
            RequestKind::OffsetCommit(r) => groups::offset_commit(groups, principal, r).await,
            RequestKind::OffsetFetch(r) => {
                groups::offset_fetch(groups, principal, r, version).await
            }
            RequestKind::DescribeGroups(r) => {
                groups::describe_groups(groups, principal, r, version).await
            }
            RequestKind::ListGroups(r) => groups::list_groups(groups, principal, r).await,
            RequestKind::DeleteGroups(r) => groups::delete_groups(groups, principal, r).await,
            RequestKind::OffsetDelete(r) => groups::offset_delete(groups, principal, r).await,
            _ => {
                tracing::error!(
                    "the Kafka codec let an unserved {:?} through",
                    header.api_key
                );
                return None;
            }
        })
    }
}

/// A response frame, a Fetch answer's record batches shared rather than copied and
/// `in_files` sent from their segment files. A body the codec cannot encode (a bug) is
/// logged and answered with UNKNOWN_SERVER_ERROR, so the client does not wait for an
/// answer that never comes.
fn encode(header: Header, body: &ResponseKind, in_files: &[codec::InFile]) -> Answer {
    let mut out = SplicedFrame::new();
    match codec::encode_response_spliced(
        header.api_key,
        header.api_version,
        header.correlation_id,
        body,
        in_files,
        &mut out,
    ) {
        Ok(()) => Some(out),
        Err(e) => {
            tracing::error!("{e}");
            error_answer(
                header.api_key as i16,
                header.api_version,
                header.correlation_id,
                UNKNOWN_SERVER_ERROR,
            )
        }
    }
}

/// An error answer for a request with this header, if one can be encoded.
fn error_answer(api_key: i16, api_version: i16, correlation_id: i32, code: i16) -> Answer {
    let mut out = SplicedFrame::new();
    codec::error_response(api_key, api_version, correlation_id, code, out.head_mut()).then_some(out)
}

/// Whether this is the first refusal of `api_key` at `api_version` this process has seen
/// (for the first few hundred combinations: a client sending random keys cannot grow the
/// set without bound).
fn first_refusal(api_key: i16, api_version: i16) -> bool {
    static SEEN: std::sync::Mutex<Vec<(i16, i16)>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if seen.len() >= 256 || seen.contains(&(api_key, api_version)) {
        return false;
    }
    seen.push((api_key, api_version));
    true
}

/// A sluice error as `api`'s Kafka clients must see it: the code and the message.
/// A throttle as a response's `throttle_time_ms`.
fn throttle_ms(wait: Duration) -> i32 {
    i32::try_from(wait.as_millis()).unwrap_or(i32::MAX)
}

fn kafka_error(api: ApiKey, e: &crate::error::ApiError) -> (i16, Option<StrBytes>) {
    (
        codec::kafka_error_code_for(api, e.code),
        Some(StrBytes::from_string(e.message.clone())),
    )
}

/// [`kafka_error`] at `version` of `api` (PRODUCER_FENCED only where the version knows it).
fn kafka_error_at(
    api: ApiKey,
    version: i16,
    e: &crate::error::ApiError,
) -> (i16, Option<StrBytes>) {
    (
        codec::kafka_error_code_at(api, version, e.code),
        Some(StrBytes::from_string(e.message.clone())),
    )
}

/// A string for a Kafka message field.
fn kafka_str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A topic name for a Kafka message field.
fn topic_name(name: impl Into<String>) -> TopicName {
    TopicName(kafka_str(name))
}

/// The same error for every partition asked (the request failed as a whole).
fn every_partition_failed<Q: crate::services::offsets::HasPartition, T>(
    queries: Vec<crate::services::TopicItems<Q>>,
    e: crate::error::ApiError,
) -> Vec<crate::services::TopicItems<crate::services::PartitionOutcome<T>>> {
    crate::services::map_topics(
        queries,
        |q| crate::services::PartitionOutcome {
            partition: q.partition(),
            outcome: Err(e.clone()),
        },
        |topic, partitions| crate::services::TopicItems { topic, partitions },
    )
}
