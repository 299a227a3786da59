//! CreateTopics, DeleteTopics, CreatePartitions, IncrementalAlterConfigs, ElectLeaders,
//! the partition reassignment apis and DescribeQuorum: the native request in,
//! [`crate::services::admin`] changes the topics through the controller, the native
//! response out, per topic.

use sluice_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, AlterConfigsResult,
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, CreatableTopicResult,
    CreatePartitionsRequest, CreatePartitionsResponse, CreatePartitionsTopicResult,
    CreateTopicsRequest, CreateTopicsResponse, DeletableTopicResult, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeQuorumRequest, DescribeQuorumResponse, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    OngoingReassignment, OngoingTopicReassignments, QuorumReplica, TopicPartitionResults,
    CONFIG_DELETE,
};
use sluice_protocol::{BrokerId, ErrorCode, PartitionId};

use super::partition_result;
use crate::error::ApiError;
use crate::security::Principal;
use crate::services::admin::{Admin, ConfigChange};
use crate::services::{map_topics, TopicItems};
use crate::topic_config::NewTopic;

/// Creates topics.
pub async fn create_topics(
    service: &Admin,
    principal: &Principal,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(NewTopic::from_wire)
        .collect();
    let created = service
        .create_topics(principal, topics, request.validate_only)
        .await;
    CreateTopicsResponse {
        topics: created
            .into_iter()
            .map(|(name, outcome)| match outcome {
                Ok((partitions, replication_factor)) => CreatableTopicResult {
                    name,
                    error_code: ErrorCode::None,
                    error_message: None,
                    num_partitions: partitions as i32,
                    replication_factor: replication_factor as i16,
                },
                Err(e) => CreatableTopicResult {
                    name,
                    error_code: e.code,
                    error_message: e.wire_message(),
                    num_partitions: -1,
                    replication_factor: -1,
                },
            })
            .collect(),
    }
}

/// Deletes topics.
pub async fn delete_topics(
    service: &Admin,
    principal: &Principal,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let deleted = service.delete_topics(principal, request.topic_names).await;
    DeleteTopicsResponse {
        responses: deleted
            .into_iter()
            .map(|(name, outcome)| {
                let (error_code, error_message) = match outcome {
                    Ok(()) => (ErrorCode::None, None),
                    Err(e) => (e.code, e.wire_message()),
                };
                DeletableTopicResult {
                    name,
                    error_code,
                    error_message,
                }
            })
            .collect(),
    }
}

/// Alters topic configs (set, or delete back to the broker default).
pub async fn alter_configs(
    service: &Admin,
    principal: &Principal,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let changes = t
                .configs
                .into_iter()
                .map(|c| ConfigChange {
                    name: c.name,
                    value: if c.operation == CONFIG_DELETE {
                        None
                    } else {
                        Some(c.value.unwrap_or_default())
                    },
                })
                .collect();
            (t.name, changes)
        })
        .collect();
    let altered = service
        .alter_topic_configs(principal, topics, request.validate_only)
        .await;
    AlterConfigsResponse {
        topics: altered
            .into_iter()
            .map(|(name, outcome)| {
                let (error_code, error_message) = match outcome {
                    Ok(()) => (ErrorCode::None, None),
                    Err(e) => (e.code, e.wire_message()),
                };
                AlterConfigsResult {
                    name,
                    error_code,
                    error_message,
                }
            })
            .collect(),
    }
}

/// Adds partitions to topics.
pub async fn create_partitions(
    service: &Admin,
    principal: &Principal,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| (t.name, t.count))
        .collect();
    let grown = service
        .create_partitions(principal, topics, request.validate_only)
        .await;
    CreatePartitionsResponse {
        results: grown
            .into_iter()
            .map(|(name, outcome)| {
                let (error_code, error_message) = match outcome {
                    Ok(()) => (ErrorCode::None, None),
                    Err(e) => (e.code, e.wire_message()),
                };
                CreatePartitionsTopicResult {
                    name,
                    error_code,
                    error_message,
                }
            })
            .collect(),
    }
}

/// Moves partitions' leadership to their preferred replicas.
pub async fn elect_leaders(
    service: &Admin,
    principal: &Principal,
    request: ElectLeadersRequest,
) -> Result<ElectLeadersResponse, ApiError> {
    let partitions = request
        .topics
        .map(|topics| topics.into_iter().map(TopicItems::from).collect());
    let elected = service.elect_leaders(principal, partitions).await?;
    Ok(ElectLeadersResponse {
        topics: map_topics(elected, partition_result, |name, partitions| {
            TopicPartitionResults { name, partitions }
        }),
    })
}

/// Begins or cancels partition reassignments.
pub async fn reassign_partitions(
    service: &Admin,
    principal: &Principal,
    request: AlterPartitionReassignmentsRequest,
) -> Result<AlterPartitionReassignmentsResponse, ApiError> {
    let topics = request
        .topics
        .into_iter()
        .map(|t| TopicItems {
            topic: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| (p.partition, p.replicas))
                .collect(),
        })
        .collect();
    let moved = service.reassign_partitions(principal, topics).await?;
    Ok(AlterPartitionReassignmentsResponse {
        topics: map_topics(moved, partition_result, |name, partitions| {
            TopicPartitionResults { name, partitions }
        }),
    })
}

/// The reassignments under way.
pub fn list_reassignments(
    service: &Admin,
    principal: &Principal,
    request: ListPartitionReassignmentsRequest,
) -> Result<ListPartitionReassignmentsResponse, ApiError> {
    let wanted: Option<Vec<TopicItems<PartitionId>>> = request
        .topics
        .map(|topics| topics.into_iter().map(TopicItems::from).collect());
    let ongoing = service.reassignments(principal, wanted.as_deref())?;
    Ok(ListPartitionReassignmentsResponse {
        topics: map_topics(
            ongoing,
            |r| OngoingReassignment {
                partition: r.partition,
                replicas: r.replicas,
                adding: r.adding,
                removing: r.removing,
            },
            |name, partitions| OngoingTopicReassignments { name, partitions },
        ),
    })
}

/// The controller quorum's metadata log.
pub async fn describe_quorum(
    service: &Admin,
    principal: &Principal,
    request: DescribeQuorumRequest,
) -> Result<DescribeQuorumResponse, ApiError> {
    let quorum = service
        .describe_quorum(principal, request.include_observers)
        .await?;
    let replicas = |rs: Vec<(BrokerId, i64)>| {
        rs.into_iter()
            .map(|(id, log_end)| QuorumReplica { id, log_end })
            .collect()
    };
    Ok(DescribeQuorumResponse {
        leader: quorum.leader,
        term: quorum.term,
        high_watermark: quorum.high_watermark,
        voters: replicas(quorum.voters),
        observers: replicas(quorum.observers),
    })
}
