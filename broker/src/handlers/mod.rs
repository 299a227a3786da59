//! The native protocol's request handlers: one module per api family, each a thin adapter
//! that turns a decoded request into a call on one service of [`crate::services`] (or
//! [`crate::groups::Coordinator`]) and the result into a response. Each client api's
//! handler gets only its service; the broker-to-broker apis (replication, controller,
//! Raft) get the broker. Nothing here touches sockets or files.

mod acls;
mod admin;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
mod producer_id;
mod quotas;
mod replica_fetch;
mod txn;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::frame::{SplicedFrame, FRAME_HEADER_LEN};
use sluice_protocol::{decode_request, ApiKey, BrokerId, ErrorCode, Request, Response};

use crate::broker::Broker;
use crate::cluster::image::quotas::QuotaKey;
use crate::cluster::{election, network};
use crate::connection::{self, Answer, Start, Throttle};
use crate::error::ApiError;
use crate::security::acl::{Operation, Resource};
use crate::security::{Login, Principal};
use sluice_protocol::messages::{SaslAuthenticateResponse, SaslHandshakeResponse};

/// Who sent a request: group membership records it, the authorizer judges it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The client id of the request header.
    pub client_id: String,
    /// The host the connection comes from.
    pub host: String,
    /// Who logged in on the connection (`User:ANONYMOUS` without authentication).
    pub principal: Principal,
}

/// What a request produced.
pub enum Outcome {
    /// Send this response.
    Respond(Response),
    /// Send nothing (produce with acks=0).
    Silent,
}

/// The apis this broker serves; ApiVersions lists them.
pub const SERVED: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::DeleteRecords,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::ElectLeaders,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeCluster,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::DeleteGroups,
    ApiKey::ResetOffsets,
    ApiKey::InitProducerId,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::TxnOffsetCommit,
    ApiKey::OffsetsForLeaderEpoch,
    ApiKey::ReplicaFetch,
    ApiKey::WriteTxnMarkers,
    ApiKey::BrokerRegistration,
    ApiKey::BrokerHeartbeat,
    ApiKey::AlterPartition,
    ApiKey::AllocateProducerIds,
    ApiKey::RaftVote,
    ApiKey::RaftAppendEntries,
    ApiKey::RaftInstallSnapshot,
    ApiKey::RaftPreVote,
    ApiKey::VerifyTxn,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::AlterUserScramCredentials,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::CreateAcls,
    ApiKey::DeleteAcls,
    ApiKey::DescribeAcls,
    ApiKey::AlterClientQuotas,
    ApiKey::DescribeClientQuotas,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
    ApiKey::DescribeQuorum,
];

/// A request after its ordered phase.
pub enum Started {
    /// A produce whose batches are in the logs.
    Produce(crate::services::produce::Appended),
    /// A request served entirely in its ordered phase (topic administration).
    Done(Response),
    /// Any other request: nothing is order-sensitive, all of it runs in `finish`.
    Other(Request),
}

/// The phase of a request that must run in request order on its connection: for a
/// produce, writing the batches to the logs; topic creation, growth and deletion entirely
/// (a pipelined create then produce, or delete then create, must happen in that order). The
/// connection awaits it before it starts the next request.
pub async fn start(
    broker: &Arc<Broker>,
    principal: &Principal,
    request: Request,
) -> Result<Started, ApiError> {
    let services = &broker.services;
    Ok(match request {
        Request::Produce(r) => {
            Started::Produce(produce::start(&services.produce, principal, r).await?)
        }
        Request::CreateTopics(r) => Started::Done(Response::CreateTopics(
            admin::create_topics(&services.admin, principal, r).await,
        )),
        Request::DeleteTopics(r) => Started::Done(Response::DeleteTopics(
            admin::delete_topics(&services.admin, principal, r).await,
        )),
        Request::CreatePartitions(r) => Started::Done(Response::CreatePartitions(
            admin::create_partitions(&services.admin, principal, r).await,
        )),
        other => Started::Other(other),
    })
}

/// The rest of a request, run concurrently with later requests. An `Err` fails the whole
/// request (a top-level error response); per-partition and per-topic failures are inside
/// the response.
pub async fn finish(
    broker: &Arc<Broker>,
    started: Started,
    caller: &Caller,
) -> Result<Outcome, ApiError> {
    let request = match started {
        Started::Produce(appended) => return produce::finish(appended).await,
        Started::Done(response) => return Ok(Outcome::Respond(response)),
        Started::Other(request) => request,
    };
    let services = &broker.services;
    let groups = &*services.groups;
    let principal = &caller.principal;
    if is_broker_api(request.api_key()) {
        services
            .authorizer
            .check(principal, Operation::ClusterAction, Resource::Cluster)?;
    }
    let response = match request {
        Request::Fetch(mut r) => {
            if let Some(limit) = services.quotas.fetch_limit(principal, &caller.client_id) {
                r.max_bytes = r.max_bytes.min(limit);
            }
            Response::Fetch(fetch::handle(&services.fetch, principal, r).await?)
        }
        Request::ListOffsets(r) => {
            Response::ListOffsets(offsets::list_offsets(&services.offsets, principal, r).await?)
        }
        Request::DeleteRecords(r) => {
            Response::DeleteRecords(offsets::delete_records(&services.offsets, principal, r).await?)
        }
        Request::Metadata(r) => {
            Response::Metadata(metadata::metadata(&services.admin, principal, r).await)
        }
        Request::ApiVersions(_) => Response::ApiVersions(metadata::api_versions()),
        Request::DescribeCluster(_) => {
            Response::DescribeCluster(metadata::describe_cluster(&services.admin, principal).await)
        }
        Request::IncrementalAlterConfigs(r) => Response::IncrementalAlterConfigs(
            admin::alter_configs(&services.admin, principal, r).await,
        ),
        Request::ElectLeaders(r) => {
            Response::ElectLeaders(admin::elect_leaders(&services.admin, principal, r).await?)
        }
        Request::AlterPartitionReassignments(r) => Response::AlterPartitionReassignments(
            admin::reassign_partitions(&services.admin, principal, r).await?,
        ),
        Request::ListPartitionReassignments(r) => Response::ListPartitionReassignments(
            admin::list_reassignments(&services.admin, principal, r)?,
        ),
        Request::DescribeQuorum(r) => {
            Response::DescribeQuorum(admin::describe_quorum(&services.admin, principal, r).await?)
        }
        Request::FindCoordinator(r) => Response::FindCoordinator(
            groups::find_coordinator(groups, &services.txns, principal, r).await,
        ),
        Request::JoinGroup(r) => {
            Response::JoinGroup(groups::join_group(groups, principal, r, caller).await)
        }
        Request::SyncGroup(r) => {
            Response::SyncGroup(groups::sync_group(groups, principal, r).await)
        }
        Request::Heartbeat(r) => Response::Heartbeat(groups::heartbeat(groups, principal, r).await),
        Request::LeaveGroup(r) => {
            Response::LeaveGroup(groups::leave_group(groups, principal, r).await)
        }
        Request::OffsetCommit(r) => {
            Response::OffsetCommit(groups::offset_commit(groups, principal, r).await)
        }
        Request::OffsetFetch(r) => {
            Response::OffsetFetch(groups::offset_fetch(groups, principal, r).await)
        }
        Request::ResetOffsets(r) => {
            Response::ResetOffsets(groups::reset_offsets(groups, principal, r).await)
        }
        Request::DescribeGroups(r) => {
            Response::DescribeGroups(groups::describe_groups(groups, principal, r).await)
        }
        Request::ListGroups(r) => {
            Response::ListGroups(groups::list_groups(groups, principal, r).await)
        }
        Request::DeleteGroups(r) => {
            Response::DeleteGroups(groups::delete_groups(groups, principal, r).await)
        }
        Request::InitProducerId(r) => Response::InitProducerId(
            producer_id::init_producer_id(&services.producer_ids, &services.txns, principal, r)
                .await,
        ),
        Request::CreateAcls(r) => {
            Response::CreateAcls(acls::create(&services.acls, principal, r).await)
        }
        Request::AlterClientQuotas(r) => {
            Response::AlterClientQuotas(quotas::alter(&services.quotas, principal, r).await)
        }
        Request::DescribeClientQuotas(r) => {
            Response::DescribeClientQuotas(quotas::describe(&services.quotas, principal, r)?)
        }
        Request::DeleteAcls(r) => {
            Response::DeleteAcls(acls::delete(&services.acls, principal, r).await)
        }
        Request::DescribeAcls(r) => {
            Response::DescribeAcls(acls::describe(&services.acls, principal, r)?)
        }
        Request::AlterUserScramCredentials(r) => {
            Response::AlterUserScramCredentials(users::alter(&services.users, principal, r).await)
        }
        Request::DescribeUserScramCredentials(r) => {
            Response::DescribeUserScramCredentials(users::describe(&services.users, principal, r)?)
        }
        Request::ReplicaFetch(r) => {
            Response::ReplicaFetch(replica_fetch::replica_fetch(broker, r).await?)
        }
        Request::AddPartitionsToTxn(r) => Response::AddPartitionsToTxn(
            txn::add_partitions_to_txn(&services.txns, principal, r).await?,
        ),
        Request::AddOffsetsToTxn(r) => {
            Response::AddOffsetsToTxn(txn::add_offsets_to_txn(&services.txns, principal, r).await)
        }
        Request::EndTxn(r) => Response::EndTxn(txn::end_txn(&services.txns, principal, r).await),
        Request::TxnOffsetCommit(r) => {
            Response::TxnOffsetCommit(groups::txn_offset_commit(groups, principal, r).await)
        }
        Request::WriteTxnMarkers(r) => {
            Response::WriteTxnMarkers(txn::write_txn_markers(broker, r).await?)
        }
        Request::VerifyTxn(r) => Response::VerifyTxn(txn::verify_txn(&services.txns, r).await?),
        Request::OffsetsForLeaderEpoch(r) => Response::OffsetsForLeaderEpoch(
            replica_fetch::offsets_for_leader_epoch(&services.offsets, principal, r).await?,
        ),
        Request::RaftVote(r) => {
            Response::RaftVote(network::serve_vote(&broker.cluster.raft, r).await?)
        }
        Request::RaftAppendEntries(r) => Response::RaftAppendEntries(
            network::serve_append_entries(&broker.cluster.raft, r).await?,
        ),
        Request::RaftInstallSnapshot(r) => Response::RaftInstallSnapshot(
            network::serve_install_snapshot(&broker.cluster.raft, r).await?,
        ),
        Request::RaftPreVote(r) => Response::RaftPreVote(
            election::serve_pre_vote(
                &broker.cluster.raft,
                &broker.cluster.log,
                broker
                    .cluster
                    .controller
                    .as_ref()
                    .map(|c| c.last_stand())
                    .as_deref(),
                r,
            )
            .await?,
        ),
        request @ (Request::BrokerRegistration(_)
        | Request::BrokerHeartbeat(_)
        | Request::AlterPartition(_)
        | Request::AllocateProducerIds(_)) => match &broker.cluster.controller {
            Some(controller) => controller.handle(request).await?,
            None => {
                return Err(ApiError::new(
                    ErrorCode::NotController,
                    format!(
                        "broker {} is not a controller voter; send {} to the active \
                         controller",
                        broker.config.node_id,
                        request.api_key().name()
                    ),
                ))
            }
        },
        other => return Err(not_served(other.api_key())),
    };
    Ok(Outcome::Respond(response))
}

/// The apis only brokers send each other: ClusterAction on the cluster (superusers, when
/// the authorizer is on).
fn is_broker_api(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::ReplicaFetch
            | ApiKey::WriteTxnMarkers
            | ApiKey::BrokerRegistration
            | ApiKey::BrokerHeartbeat
            | ApiKey::AlterPartition
            | ApiKey::AllocateProducerIds
            | ApiKey::RaftVote
            | ApiKey::RaftAppendEntries
            | ApiKey::RaftInstallSnapshot
            | ApiKey::RaftPreVote
            | ApiKey::VerifyTxn
    )
}

/// A partition's outcome as a native result.
fn partition_result(
    p: crate::services::PartitionOutcome<()>,
) -> sluice_protocol::messages::PartitionResult {
    let (error_code, error_message) = match p.outcome {
        Ok(()) => (ErrorCode::None, None),
        Err(e) => (e.code, e.wire_message()),
    };
    sluice_protocol::messages::PartitionResult {
        partition: p.partition,
        error_code,
        error_message,
    }
}

fn not_served(api: ApiKey) -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedVersion,
        format!("{} is not served by this version of sluice", api.name()),
    )
}

/// The native protocol, as a listener serves it.
pub struct Native {
    broker: Arc<Broker>,
}

impl Native {
    /// The native protocol over `broker`'s services.
    pub fn new(broker: Arc<Broker>) -> Native {
        Native { broker }
    }
}

/// What the native protocol remembers about a connection.
pub struct NativeConnection {
    /// The broker whose heartbeats arrive on this connection: when it closes, the
    /// controller shortens that broker's session (see `cluster::controller`).
    heartbeats_from: Option<BrokerId>,
    /// Where the connection is in its SASL login.
    login: Login,
    /// Holds the client back while it is over a quota.
    throttle: Throttle,
}

/// A native request after its ordered phase, with what its answer needs.
pub struct NativeStarted {
    started: Started,
    caller: Caller,
    correlation_id: u32,
    /// The connection's throttle, which a consumer's fetch answer may extend.
    throttle: Throttle,
}

impl Native {
    /// The login's part of a request: SaslHandshake and SaslAuthenticate are answered
    /// here, and anything but ApiVersions is refused until the login is done (when the
    /// broker requires one). `None`: serve the request.
    async fn authenticate(
        &self,
        connection: &mut NativeConnection,
        request: &Request,
        peer: SocketAddr,
    ) -> Option<Result<Outcome, ApiError>> {
        let auth = &self.broker.services.auth;
        let login = &mut connection.login;
        match request {
            Request::SaslHandshake(r) => Some(auth.handshake(login, &r.mechanism).map(|()| {
                Outcome::Respond(Response::SaslHandshake(SaslHandshakeResponse {
                    error_code: ErrorCode::None,
                    error_message: None,
                    mechanisms: auth.mechanism_names(),
                }))
            })),
            Request::SaslAuthenticate(r) => {
                let peer = peer.to_string();
                let answer = auth.authenticate(login, &r.auth_bytes, &peer).await;
                Some(answer.map(|answer| {
                    Outcome::Respond(Response::SaslAuthenticate(SaslAuthenticateResponse {
                        error_code: ErrorCode::None,
                        error_message: None,
                        auth_bytes: answer.into(),
                        session_lifetime_ms: 0,
                    }))
                }))
            }
            Request::ApiVersions(_) => None,
            _ if auth.principal(login).is_none() => Some(Err(auth.not_authenticated(login))),
            _ => None,
        }
    }
}

impl connection::Protocol for Native {
    type Started = NativeStarted;
    type Connection = NativeConnection;

    fn opened(
        &self,
        _peer: SocketAddr,
        tls: bool,
        tls_identity: Option<String>,
    ) -> NativeConnection {
        NativeConnection {
            heartbeats_from: None,
            login: Login::new(tls, tls_identity),
            throttle: Throttle::default(),
        }
    }

    async fn start(
        &self,
        connection: &mut NativeConnection,
        payload: Bytes,
        peer: SocketAddr,
    ) -> Start<NativeStarted> {
        let request_bytes = payload.len();
        match decode_request(payload) {
            Ok((header, request)) => {
                let correlation_id = header.correlation_id;
                if let Some(answer) = self.authenticate(connection, &request, peer).await {
                    return Start::Answered(encode(correlation_id, answer));
                }
                if let Request::BrokerHeartbeat(h) = &request {
                    connection.heartbeats_from = Some(h.broker_id);
                }
                let principal = self
                    .broker
                    .services
                    .auth
                    .principal(&connection.login)
                    .unwrap_or_else(Principal::anonymous);
                match start(&self.broker, &principal, request).await {
                    Ok(started) => {
                        if let Started::Produce(_) = started {
                            let wait = self.broker.services.quotas.record(
                                QuotaKey::ProducerByteRate,
                                &principal,
                                &header.client_id,
                                request_bytes,
                            );
                            connection.throttle.extend(wait);
                        }
                        Start::Run(NativeStarted {
                            started,
                            caller: Caller {
                                client_id: header.client_id,
                                host: peer.ip().to_string(),
                                principal,
                            },
                            correlation_id,
                            throttle: connection.throttle.clone(),
                        })
                    }
                    Err(e) => Start::Answered(encode(correlation_id, Err(e))),
                }
            }
            Err(e) => {
                let Some(id) = e.correlation_id else {
                    tracing::debug!(%peer, "closing connection: {e}");
                    return Start::Close;
                };
                tracing::debug!(%peer, "refusing a request: {e}");
                let message = format!("{}; check the client's protocol version", e.error);
                Start::Answered(encode(id, Err(ApiError::new(e.error_code(), message))))
            }
        }
    }

    async fn finish(self: Arc<Self>, started: NativeStarted) -> Answer {
        let consumer_fetch = matches!(started.started, Started::Other(Request::Fetch(_)));
        let outcome = finish(&self.broker, started.started, &started.caller).await;
        let answer = encode(started.correlation_id, outcome);
        if let (true, Some(frame)) = (consumer_fetch, &answer) {
            let caller = &started.caller;
            let wait = self.broker.services.quotas.record(
                QuotaKey::ConsumerByteRate,
                &caller.principal,
                &caller.client_id,
                frame.len(),
            );
            started.throttle.extend(wait);
        }
        answer
    }

    fn refuse_frame(&self, payload_start: &[u8], error: &sluice_protocol::Error) -> Answer {
        // Payload: api_key u16, api_version u16, correlation_id u32, ...
        let id = payload_start.get(4..8)?;
        let correlation_id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        // The codec's own advice ("raise the broker's max frame size") is replaced by the
        // limit and the setting that holds it, so the client's user reads it once.
        let account = error.to_string();
        let fact = account
            .split_once("; ")
            .map_or(account.as_str(), |(fact, _)| fact);
        let message = format!(
            "{fact}; send requests of at most {} bytes, or raise the broker's max_frame_bytes",
            self.broker.config.max_frame_bytes
        );
        let error = ApiError::new(ErrorCode::MessageTooLarge, message);
        encode(correlation_id, Err(error))
    }

    fn api_name(&self, payload: &[u8]) -> &'static str {
        static NAMES: std::sync::OnceLock<crate::metrics::ApiNames> = std::sync::OnceLock::new();
        NAMES
            .get_or_init(|| {
                crate::metrics::ApiNames::new(
                    ApiKey::ALL
                        .iter()
                        .map(|key| (*key as u16 as i16, format!("{key:?}"))),
                )
            })
            .of_payload(payload)
    }

    fn throttle<'a>(&self, connection: &'a NativeConnection) -> Option<&'a Throttle> {
        Some(&connection.throttle)
    }

    fn closed(&self, connection: NativeConnection) {
        // Only now: a heartbeat still being handled when the connection closed would
        // otherwise grant a full session after the shortened one was set.
        if let (Some(id), Some(controller)) =
            (connection.heartbeats_from, &self.broker.cluster.controller)
        {
            controller.connection_lost(id);
        }
    }
}

/// Encodes a request's outcome as a response frame (record batches shared, not copied);
/// `None` when no response is owed (acks=0).
fn encode(correlation_id: u32, outcome: Result<Outcome, ApiError>) -> Answer {
    let mut out = SplicedFrame::new();
    let encoded = match outcome {
        Ok(Outcome::Silent) => return None,
        Ok(Outcome::Respond(response)) => response.encode_spliced(correlation_id, &mut out),
        Err(e) => Response::encode_error(correlation_id, e.code, Some(&e.message), out.head_mut()),
    };
    if let Err(e) = encoded {
        tracing::error!("encoding a response failed: {e}");
        out.resize(FRAME_HEADER_LEN);
        let _ = Response::encode_error(
            correlation_id,
            ErrorCode::UnknownServerError,
            Some("the broker could not encode its response"),
            out.head_mut(),
        );
    }
    Some(out)
}
