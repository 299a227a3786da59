//! Request handlers: one module per api family, each turning a decoded request into calls
//! on the service layer ([`crate::topics`], [`crate::partition`]) and the result into a
//! response. Nothing here touches sockets or files.

mod admin;
mod fetch;
mod metadata;
mod offsets;
mod produce;

use std::sync::Arc;

use sluice_protocol::{ApiKey, ErrorCode, Request, Response};

use crate::broker::Broker;
use crate::error::ApiError;

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
pub async fn finish(broker: &Arc<Broker>, started: Started) -> Result<Outcome, ApiError> {
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
        other => return Err(not_served(other.api_key())),
    };
    Ok(Outcome::Respond(response))
}

fn not_served(api: ApiKey) -> ApiError {
    let what = match api {
        ApiKey::FindCoordinator
        | ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::DescribeGroups
        | ApiKey::ListGroups
        | ApiKey::DeleteGroups
        | ApiKey::ResetOffsets => "consumer groups are not available yet in this version of sluice",
        ApiKey::InitProducerId | ApiKey::AllocateProducerIds => {
            "idempotent producers are not available yet in this version of sluice; \
             disable idempotence"
        }
        _ => "clustering is not available yet in this version of sluice",
    };
    ApiError::new(
        ErrorCode::UnsupportedVersion,
        format!("{} is not served: {what}", api.name()),
    )
}
