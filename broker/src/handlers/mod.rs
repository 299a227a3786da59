//! Request handlers: one module per api family, each turning a decoded request into calls
//! on the service layer ([`crate::topics`], [`crate::partition`]) and the result into a
//! response. Nothing here touches sockets or files.

mod admin;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;
pub mod producer_id;
mod replication;

use std::sync::Arc;

use sluice_protocol::{ApiKey, ErrorCode, Request, Response};

use crate::broker::Broker;
use crate::cluster::network;
use crate::error::ApiError;

/// Who sent a request: group membership records it.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The client id of the request header.
    pub client_id: String,
    /// The host the connection comes from.
    pub host: String,
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
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
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
    ApiKey::OffsetsForLeaderEpoch,
    ApiKey::ReplicaFetch,
    ApiKey::BrokerRegistration,
    ApiKey::BrokerHeartbeat,
    ApiKey::AlterPartition,
    ApiKey::AllocateProducerIds,
    ApiKey::RaftVote,
    ApiKey::RaftAppendEntries,
    ApiKey::RaftInstallSnapshot,
];

/// A request after its ordered phase.
pub enum Started {
    /// A produce whose batches are in the logs.
    Produce(produce::Started),
    /// A request served entirely in its ordered phase (topic administration).
    Done(Response),
    /// Any other request: nothing is order-sensitive, all of it runs in `finish`.
    Other(Request),
}

/// The phase of a request that must run in request order on its connection: for a
/// produce, writing the batches to the logs; topic creation and deletion entirely (a
/// pipelined create then produce, or delete then create, must happen in that order). The
/// connection awaits it before it starts the next request.
pub async fn start(broker: &Arc<Broker>, request: Request) -> Result<Started, ApiError> {
    Ok(match request {
        Request::Produce(r) => Started::Produce(produce::start(broker, r).await?),
        Request::CreateTopics(r) => Started::Done(Response::CreateTopics(
            admin::create_topics(broker, r).await,
        )),
        Request::DeleteTopics(r) => Started::Done(Response::DeleteTopics(
            admin::delete_topics(broker, r).await,
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
        Started::Produce(s) => return produce::finish(s).await,
        Started::Done(response) => return Ok(Outcome::Respond(response)),
        Started::Other(request) => request,
    };
    let response = match request {
        Request::Fetch(r) => Response::Fetch(fetch::handle(broker, r).await?),
        Request::ListOffsets(r) => Response::ListOffsets(offsets::list_offsets(broker, r).await?),
        Request::Metadata(r) => Response::Metadata(metadata::metadata(broker, r)),
        Request::ApiVersions(_) => Response::ApiVersions(metadata::api_versions()),
        Request::DescribeCluster(_) => {
            Response::DescribeCluster(metadata::describe_cluster(broker))
        }
        Request::FindCoordinator(r) => {
            Response::FindCoordinator(groups::find_coordinator(broker, r).await)
        }
        Request::JoinGroup(r) => Response::JoinGroup(groups::join_group(broker, r, caller).await),
        Request::SyncGroup(r) => Response::SyncGroup(groups::sync_group(broker, r).await),
        Request::Heartbeat(r) => Response::Heartbeat(groups::heartbeat(broker, r).await),
        Request::LeaveGroup(r) => Response::LeaveGroup(groups::leave_group(broker, r).await),
        Request::OffsetCommit(r) => Response::OffsetCommit(groups::offset_commit(broker, r).await),
        Request::OffsetFetch(r) => Response::OffsetFetch(groups::offset_fetch(broker, r).await),
        Request::ResetOffsets(r) => Response::ResetOffsets(groups::reset_offsets(broker, r).await),
        Request::DescribeGroups(r) => {
            Response::DescribeGroups(groups::describe_groups(broker, r).await)
        }
        Request::ListGroups(r) => Response::ListGroups(groups::list_groups(broker, r).await),
        Request::DeleteGroups(r) => Response::DeleteGroups(groups::delete_groups(broker, r).await),
        Request::InitProducerId(r) => {
            Response::InitProducerId(producer_id::init_producer_id(broker, r).await)
        }
        Request::ReplicaFetch(r) => {
            Response::ReplicaFetch(replication::replica_fetch(broker, r).await?)
        }
        Request::OffsetsForLeaderEpoch(r) => {
            Response::OffsetsForLeaderEpoch(replication::offsets_for_leader_epoch(broker, r).await?)
        }
        Request::RaftVote(r) => {
            Response::RaftVote(network::serve_vote(&broker.cluster.raft, r).await?)
        }
        Request::RaftAppendEntries(r) => Response::RaftAppendEntries(
            network::serve_append_entries(&broker.cluster.raft, r).await?,
        ),
        Request::RaftInstallSnapshot(r) => Response::RaftInstallSnapshot(
            network::serve_install_snapshot(&broker.cluster.raft, r).await?,
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

fn not_served(api: ApiKey) -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedVersion,
        format!("{} is not served by this version of sluice", api.name()),
    )
}
