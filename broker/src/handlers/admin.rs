//! CreateTopics and DeleteTopics, answered per topic.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use sluice_protocol::messages::{
    CreatableTopicResult, CreateTopicsRequest, CreateTopicsResponse, DeletableTopicResult,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use sluice_protocol::ErrorCode;

use crate::broker::Broker;
use crate::error::ApiError;
use crate::topics::NewTopic;

/// Creates each topic; a name given twice in one request fails the second time.
pub async fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.clone();
        let outcome = if !seen.insert(name.clone()) {
            Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("topic {name:?} appears twice in one request"),
            ))
        } else {
            let mut configs = BTreeMap::new();
            for c in topic.configs {
                configs.insert(c.name, c.value);
            }
            let new = NewTopic {
                name: topic.name,
                partitions: topic.num_partitions,
                replication_factor: topic.replication_factor,
                configs,
            };
            broker.topics.create(new, request.validate_only).await
        };
        topics.push(match outcome {
            Ok((num_partitions, replication_factor)) => CreatableTopicResult {
                name,
                error_code: ErrorCode::None,
                error_message: None,
                num_partitions,
                replication_factor,
            },
            Err(e) => CreatableTopicResult {
                name,
                error_code: e.code,
                error_message: e.wire_message(),
                num_partitions: -1,
                replication_factor: -1,
            },
        });
    }
    CreateTopicsResponse { topics }
}

/// Deletes each topic and its files.
pub async fn delete_topics(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut responses = Vec::with_capacity(request.topic_names.len());
    for name in request.topic_names {
        let outcome = broker.topics.delete(&name).await;
        responses.push(DeletableTopicResult {
            name,
            error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
            error_message: outcome.err().and_then(|e| e.wire_message()),
        });
    }
    DeleteTopicsResponse { responses }
}
