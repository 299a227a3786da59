//! CreateTopics and DeleteTopics, answered per topic. Topics change only through the
//! controller's metadata log: the request goes to the active controller (locally when this
//! node is it), and the answer waits until this broker has applied the change, so a client
//! that creates a topic and then asks this broker about it finds it.

use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::messages::{
    CreatableTopicResult, CreateTopicsRequest, CreateTopicsResponse, DeletableTopicResult,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use sluice_protocol::{ErrorCode, Request, Response};

use crate::broker::Broker;
use crate::error::ApiError;

/// How long topic administration waits for the controller.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the answer waits for this broker to apply the change.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates topics through the controller.
pub async fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let names: Vec<String> = request.topics.iter().map(|t| t.name.clone()).collect();
    let validate_only = request.validate_only;
    match broker
        .cluster
        .client
        .call(Request::CreateTopics(request), CONTROLLER_TIMEOUT)
        .await
    {
        Ok(Response::CreateTopics(response)) => {
            if !validate_only {
                let created: Vec<&str> = response
                    .topics
                    .iter()
                    .filter(|t| t.error_code == ErrorCode::None)
                    .map(|t| t.name.as_str())
                    .collect();
                wait_applied(broker, |image| {
                    created.iter().all(|n| image.topics.contains_key(*n))
                })
                .await;
            }
            response
        }
        outcome => {
            let e = controller_failed(outcome);
            CreateTopicsResponse {
                topics: names
                    .into_iter()
                    .map(|name| CreatableTopicResult {
                        name,
                        error_code: e.code,
                        error_message: e.wire_message(),
                        num_partitions: -1,
                        replication_factor: -1,
                    })
                    .collect(),
            }
        }
    }
}

/// Deletes topics through the controller.
pub async fn delete_topics(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let names = request.topic_names.clone();
    match broker
        .cluster
        .client
        .call(Request::DeleteTopics(request), CONTROLLER_TIMEOUT)
        .await
    {
        Ok(Response::DeleteTopics(response)) => {
            let deleted: Vec<&str> = response
                .responses
                .iter()
                .filter(|t| t.error_code == ErrorCode::None)
                .map(|t| t.name.as_str())
                .collect();
            wait_applied(broker, |image| {
                deleted.iter().all(|n| !image.topics.contains_key(*n))
            })
            .await;
            response
        }
        outcome => {
            let e = controller_failed(outcome);
            DeleteTopicsResponse {
                responses: names
                    .into_iter()
                    .map(|name| DeletableTopicResult {
                        name,
                        error_code: e.code,
                        error_message: e.wire_message(),
                    })
                    .collect(),
            }
        }
    }
}

/// Waits until this broker's image satisfies `done` and its replicas reflect it.
async fn wait_applied(
    broker: &Broker,
    done: impl Fn(&crate::cluster::image::MetadataImage) -> bool,
) {
    broker.cluster.wait_for_image(APPLY_TIMEOUT, done).await;
    let index = broker.cluster.applied_index();
    broker.wait_reconciled(index, APPLY_TIMEOUT).await;
}

fn controller_failed(outcome: Result<Response, ApiError>) -> ApiError {
    match outcome {
        Err(e) => e,
        Ok(other) => ApiError::new(
            ErrorCode::UnknownServerError,
            format!("the controller answered {:?}", other.api_key()),
        ),
    }
}
