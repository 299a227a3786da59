//! Kafka's classic consumer-group apis on [`crate::groups::Coordinator`]: the group a
//! Kafka consumer joins is the same group object, with the same committed offsets, as a
//! sluice consumer's of the same id; only their members cannot mix (they share no
//! assignment protocol, so the second kind gets INCONSISTENT_GROUP_PROTOCOL).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as KafkaCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId as KafkaBrokerId, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, ResponseKind, SyncGroupRequest, SyncGroupResponse,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_protocol::group_log::OffsetValue;
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset, PartitionId};

use super::{codec, kafka_error, kafka_str, topic_name, Caller};
use crate::cluster::image::KAFKA_LISTENER;
use crate::error::ApiError;
use crate::groups::consumer_protocol::{
    decode_subscription, encode_subscription, CONSUMER_PROTOCOL_TYPE,
};
use crate::groups::coordinator::{
    millis, CommitRequest, CommittedOffset, Coordinator, OffsetToCommit, SyncRequest, TxnProducer,
};
use crate::groups::group::{GroupState, JoinRequest, MemberAssignment};
use crate::groups::SERVER_ASSIGNOR;
use crate::security::Principal;
use crate::services::{map_topics, TopicItems};
use crate::txn::coordinator::Transactions;

/// FindCoordinator's key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator's key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;

fn group_error(api: ApiKey, e: &ApiError) -> i16 {
    codec::kafka_error_code_for(api, e.code)
}

/// FindCoordinator: one key before v4, a batch of keys from v4 on (KIP-699).
pub async fn find_coordinator(
    service: &Coordinator,
    txns: &Transactions,
    principal: &Principal,
    request: FindCoordinatorRequest,
    version: i16,
) -> ResponseKind {
    let locate = |key: String| async move {
        match request.key_type {
            KEY_TYPE_GROUP => {
                service
                    .find_coordinator(principal, &key, KAFKA_LISTENER)
                    .await
            }
            KEY_TYPE_TRANSACTION => txns.find_coordinator(principal, &key, KAFKA_LISTENER).await,
            other => Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "unknown coordinator key type {other} (0 is a group, 1 a transactional id)"
                ),
            )),
        }
    };
    if version < 4 {
        let response = match locate(request.key.to_string()).await {
            Ok(found) => FindCoordinatorResponse::default()
                .with_node_id(KafkaBrokerId(found.node_id.0))
                .with_host(kafka_str(found.host))
                .with_port(i32::from(found.port)),
            Err(e) => {
                let (code, message) = kafka_error(ApiKey::FindCoordinator, &e);
                let response = FindCoordinatorResponse::default()
                    .with_error_code(code)
                    .with_node_id(KafkaBrokerId(-1))
                    .with_port(-1);
                // The error message is in the answer from v1 on.
                if version >= 1 {
                    response.with_error_message(message)
                } else {
                    response
                }
            }
        };
        return ResponseKind::FindCoordinator(response);
    }
    let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
    for key in &request.coordinator_keys {
        let coordinator = KafkaCoordinator::default().with_key(key.clone());
        coordinators.push(match locate(key.to_string()).await {
            Ok(found) => coordinator
                .with_node_id(KafkaBrokerId(found.node_id.0))
                .with_host(kafka_str(found.host))
                .with_port(i32::from(found.port)),
            Err(e) => {
                let (code, message) = kafka_error(ApiKey::FindCoordinator, &e);
                coordinator
                    .with_error_code(code)
                    .with_error_message(message)
                    .with_node_id(KafkaBrokerId(-1))
                    .with_port(-1)
            }
        });
    }
    ResponseKind::FindCoordinator(
        FindCoordinatorResponse::default().with_coordinators(coordinators),
    )
}

/// JoinGroup: held until the join phase completes; the leader gets every member's
/// metadata. Clients before v4 do not know MEMBER_ID_REQUIRED and join at once.
pub async fn join_group(
    service: &Coordinator,
    principal: &Principal,
    request: JoinGroupRequest,
    version: i16,
    caller: &Caller,
) -> ResponseKind {
    let protocol_type = request.protocol_type.to_string();
    let protocols: Vec<(String, bytes::Bytes)> = request
        .protocols
        .into_iter()
        .map(|p| (p.name.to_string(), p.metadata))
        .collect();
    // Shown by `sluice group describe`; the assignors decide with the metadata itself.
    let subscription = protocols
        .first()
        .filter(|_| protocol_type == CONSUMER_PROTOCOL_TYPE)
        .and_then(|(_, metadata)| decode_subscription(metadata))
        .unwrap_or_default();
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|i| i.to_string()),
        client_id: caller.client_id.clone(),
        client_host: caller.host.clone(),
        session_timeout: millis(request.session_timeout_ms),
        // Before v1 the rebalance timeout was the session timeout.
        rebalance_timeout: millis(if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        }),
        protocol_type: protocol_type.clone(),
        protocols,
        subscription,
        require_known_member_id: version >= 4,
    };
    let response = match service.join(principal, &request.group_id.0, join).await {
        Ok(joined) => JoinGroupResponse::default()
            .with_generation_id(joined.generation)
            .with_protocol_type(Some(kafka_str(protocol_type)))
            .with_protocol_name(joined.protocol_name.map(kafka_str))
            .with_leader(kafka_str(joined.leader))
            .with_member_id(kafka_str(joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|m| {
                        JoinGroupResponseMember::default()
                            .with_member_id(kafka_str(m.member_id))
                            .with_group_instance_id(m.group_instance_id.map(kafka_str))
                            .with_metadata(m.metadata)
                    })
                    .collect(),
            ),
        Err(refused) => JoinGroupResponse::default()
            .with_error_code(group_error(ApiKey::JoinGroup, &refused.error))
            .with_generation_id(-1)
            .with_member_id(kafka_str(refused.member_id)),
    };
    ResponseKind::JoinGroup(response)
}

/// SyncGroup: the member's assignment, the leader's bytes verbatim.
pub async fn sync_group(
    service: &Coordinator,
    principal: &Principal,
    request: SyncGroupRequest,
) -> ResponseKind {
    let synced = service
        .sync(
            principal,
            SyncRequest {
                group_id: request.group_id.0.to_string(),
                member_id: request.member_id.to_string(),
                generation: request.generation_id,
                assignments: request
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id.to_string(), a.assignment))
                    .collect(),
            },
        )
        .await;
    let response = match synced {
        Ok(synced) => SyncGroupResponse::default()
            .with_protocol_type(Some(kafka_str(synced.protocol_type)))
            .with_protocol_name(Some(kafka_str(synced.protocol_name)))
            .with_assignment(synced.assignment.to_bytes()),
        Err(e) => SyncGroupResponse::default().with_error_code(group_error(ApiKey::SyncGroup, &e)),
    };
    ResponseKind::SyncGroup(response)
}

/// Heartbeat.
pub async fn heartbeat(
    service: &Coordinator,
    principal: &Principal,
    request: HeartbeatRequest,
) -> ResponseKind {
    let beat = service
        .heartbeat(
            principal,
            &request.group_id.0,
            &request.member_id,
            request.generation_id,
        )
        .await;
    let code = beat.err().map_or(0, |e| group_error(ApiKey::Heartbeat, &e));
    ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code))
}

/// LeaveGroup: one member before v3, a batch from v3 on (KIP-345).
pub async fn leave_group(
    service: &Coordinator,
    principal: &Principal,
    request: LeaveGroupRequest,
    version: i16,
) -> ResponseKind {
    let members: Vec<(String, Option<StrBytes>)> = if version >= 3 {
        request
            .members
            .into_iter()
            .map(|m| (m.member_id.to_string(), m.group_instance_id))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let ids = members.iter().map(|(id, _)| id.clone()).collect();
    let response = match service.leave(principal, &request.group_id.0, ids).await {
        Ok(results) if version >= 3 => LeaveGroupResponse::default().with_members(
            results
                .into_iter()
                .zip(members)
                .map(|((member_id, left), (_, instance))| {
                    MemberResponse::default()
                        .with_member_id(kafka_str(member_id))
                        .with_group_instance_id(instance)
                        .with_error_code(
                            left.err()
                                .map_or(0, |e| group_error(ApiKey::LeaveGroup, &e)),
                        )
                })
                .collect(),
        ),
        Ok(results) => {
            let code = results
                .into_iter()
                .find_map(|(_, left)| left.err())
                .map_or(0, |e| group_error(ApiKey::LeaveGroup, &e));
            LeaveGroupResponse::default().with_error_code(code)
        }
        Err(e) => {
            LeaveGroupResponse::default().with_error_code(group_error(ApiKey::LeaveGroup, &e))
        }
    };
    ResponseKind::LeaveGroup(response)
}

/// OffsetCommit: each partition answered on its own.
pub async fn offset_commit(
    service: &Coordinator,
    principal: &Principal,
    request: OffsetCommitRequest,
) -> ResponseKind {
    let commit = CommitRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        generation: request.generation_id_or_member_epoch,
        topics: request
            .topics
            .into_iter()
            .map(|t| TopicItems {
                topic: t.name.0.to_string(),
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| OffsetToCommit {
                        partition: PartitionId(p.partition_index),
                        offset: Offset(p.committed_offset),
                        leader_epoch: LeaderEpoch(p.committed_leader_epoch),
                        metadata: p.committed_metadata.map(|m| m.to_string()),
                    })
                    .collect(),
            })
            .collect(),
    };
    let topics = map_topics(
        service.commit(principal, commit).await,
        |p| {
            OffsetCommitResponsePartition::default()
                .with_partition_index(p.partition.0)
                .with_error_code(
                    p.outcome
                        .err()
                        .map_or(0, |e| group_error(ApiKey::OffsetCommit, &e)),
                )
        },
        |name, partitions| {
            OffsetCommitResponseTopic::default()
                .with_name(topic_name(name))
                .with_partitions(partitions)
        },
    );
    ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(topics))
}

/// TxnOffsetCommit (v0-3): offsets in a producer's transaction, each partition answered
/// on its own.
pub async fn txn_offset_commit(
    service: &Coordinator,
    principal: &Principal,
    request: TxnOffsetCommitRequest,
) -> ResponseKind {
    let producer = TxnProducer {
        transactional_id: request.transactional_id.to_string(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
    };
    let commit = CommitRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        generation: request.generation_id,
        topics: request
            .topics
            .into_iter()
            .map(|t| TopicItems {
                topic: t.name.0.to_string(),
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| OffsetToCommit {
                        partition: PartitionId(p.partition_index),
                        offset: Offset(p.committed_offset),
                        leader_epoch: LeaderEpoch(p.committed_leader_epoch),
                        metadata: p.committed_metadata.map(|m| m.to_string()),
                    })
                    .collect(),
            })
            .collect(),
    };
    let topics = map_topics(
        service.txn_commit(principal, producer, commit).await,
        |p| {
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(p.partition.0)
                .with_error_code(
                    p.outcome
                        .err()
                        .map_or(0, |e| group_error(ApiKey::TxnOffsetCommit, &e)),
                )
        },
        |name, partitions| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic_name(name))
                .with_partitions(partitions)
        },
    );
    ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(topics))
}

/// What OffsetFetch answers for a group: its committed offsets, or its error.
type Fetched = Result<Vec<TopicItems<CommittedOffset>>, ApiError>;

/// OffsetFetch: one group before v8, a batch of groups from v8 on. A partition with no
/// commit answers offset -1 and empty metadata, as Kafka does.
pub async fn offset_fetch(
    service: &Coordinator,
    principal: &Principal,
    request: OffsetFetchRequest,
    version: i16,
) -> ResponseKind {
    if version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let asked = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| TopicItems {
                        topic: t.name.0.to_string(),
                        partitions: t.partition_indexes.into_iter().map(PartitionId).collect(),
                    })
                    .collect()
            });
            let fetched: Fetched = service.committed(principal, &group.group_id.0, asked).await;
            let answer = OffsetFetchResponseGroup::default().with_group_id(group.group_id);
            groups.push(match fetched {
                Ok(topics) => answer.with_topics(map_topics(
                    topics,
                    |p| {
                        let index = p.partition.0;
                        let (offset, epoch, metadata, code) = stable(p, request.require_stable);
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(index)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(epoch)
                            .with_metadata(Some(metadata))
                            .with_error_code(code)
                    },
                    |name, partitions| {
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(name))
                            .with_partitions(partitions)
                    },
                )),
                Err(e) => answer.with_error_code(group_error(ApiKey::OffsetFetch, &e)),
            });
        }
        return ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_groups(groups));
    }
    let asked: Option<Vec<TopicItems<PartitionId>>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| TopicItems {
                topic: t.name.0.to_string(),
                partitions: t.partition_indexes.into_iter().map(PartitionId).collect(),
            })
            .collect()
    });
    let fetched: Fetched = service
        .committed(principal, &request.group_id.0, asked.clone())
        .await;
    let (topics, error) = match fetched {
        Ok(topics) => (topics, 0),
        Err(e) => {
            // v1 has no top-level error code: the error goes on every partition asked.
            let code = group_error(ApiKey::OffsetFetch, &e);
            let every = asked
                .unwrap_or_default()
                .into_iter()
                .map(|t| TopicItems {
                    topic: t.topic,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|partition| CommittedOffset {
                            partition,
                            committed: None,
                            unstable: false,
                        })
                        .collect(),
                })
                .collect();
            (every, code)
        }
    };
    let partition_error = if version < 2 { error } else { 0 };
    let stable_only = version >= 7 && request.require_stable;
    let topics = map_topics(
        topics,
        |p| {
            let index = p.partition.0;
            let (offset, epoch, metadata, code) = stable(p, stable_only);
            OffsetFetchResponsePartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(epoch)
                .with_metadata(Some(metadata))
                .with_error_code(if code != 0 { code } else { partition_error })
        },
        |name, partitions| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(name))
                .with_partitions(partitions)
        },
    );
    let mut response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.error_code = error;
    }
    ResponseKind::OffsetFetch(response)
}

/// A partition's answer: its commit, or UNSTABLE_OFFSET_COMMIT (and no offset) when the
/// client asked for stable offsets only (KIP-447: a read_committed consumer about to
/// resume there) and a transaction that has not ended wrote one.
fn stable(p: CommittedOffset, stable_only: bool) -> (i64, i32, StrBytes, i16) {
    if stable_only && p.unstable {
        let (offset, epoch, metadata) = committed(None);
        return (
            offset,
            epoch,
            metadata,
            codec::kafka_error_code(ErrorCode::UnstableOffsetCommit),
        );
    }
    let (offset, epoch, metadata) = committed(p.committed);
    (offset, epoch, metadata, 0)
}

/// A commit's offset, leader epoch and metadata, or Kafka's "none" (-1, -1, "").
fn committed(value: Option<OffsetValue>) -> (i64, i32, StrBytes) {
    match value {
        Some(v) => (
            v.offset.0,
            v.leader_epoch.0,
            kafka_str(v.metadata.unwrap_or_default()),
        ),
        None => (-1, -1, StrBytes::default()),
    }
}

/// DescribeGroups: a sluice group's members are shown with Kafka's consumer-protocol
/// encoding of their subscriptions and assignments, so Kafka tools read them. From v6 an
/// unknown group is GROUP_ID_NOT_FOUND (KIP-1043), before it is described as Dead.
pub async fn describe_groups(
    service: &Coordinator,
    principal: &Principal,
    request: DescribeGroupsRequest,
    version: i16,
) -> ResponseKind {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let described = service.describe(principal, &group_id.0).await;
        let answer = DescribedGroup::default().with_group_id(group_id.clone());
        groups.push(match described {
            Ok(g) if version >= 6 && g.state == GroupState::Dead.name() && g.generation < 0 => {
                answer
                    .with_error_code(ErrorCode::GroupIdNotFound.code())
                    .with_error_message(Some(kafka_str(format!(
                        "group {:?} does not exist",
                        group_id.0.as_str()
                    ))))
                    .with_group_state(kafka_str(g.state))
            }
            Ok(g) => {
                let server = g.protocol_name == SERVER_ASSIGNOR;
                answer
                    .with_group_state(kafka_str(g.state))
                    .with_protocol_type(kafka_str(g.protocol_type))
                    .with_protocol_data(kafka_str(g.protocol_name))
                    .with_members(
                        g.members
                            .into_iter()
                            .map(|m| {
                                let metadata = if server {
                                    encode_subscription(&m.subscription)
                                } else {
                                    m.metadata
                                };
                                DescribedGroupMember::default()
                                    .with_member_id(kafka_str(m.member_id))
                                    .with_group_instance_id(m.group_instance_id.map(kafka_str))
                                    .with_client_id(kafka_str(m.client_id))
                                    .with_client_host(kafka_str(m.client_host))
                                    .with_member_metadata(metadata)
                                    .with_member_assignment(assignment_bytes(&m.assignment))
                            })
                            .collect(),
                    )
            }
            Err(e) => {
                let answer = answer.with_error_code(group_error(ApiKey::DescribeGroups, &e));
                if version >= 6 {
                    answer.with_error_message(Some(kafka_str(e.message)))
                } else {
                    answer
                }
            }
        });
    }
    ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(groups))
}

fn assignment_bytes(assignment: &MemberAssignment) -> bytes::Bytes {
    assignment.to_bytes()
}

/// ListGroups: the groups this broker coordinates (a client asks every broker), filtered
/// by state (v4+) and type (v5+: every group here is "classic").
pub async fn list_groups(
    service: &Coordinator,
    principal: &Principal,
    request: ListGroupsRequest,
) -> ResponseKind {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_string())
        .collect();
    let classic = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case("classic"));
    let groups = if classic {
        service.list(principal, &states).await
    } else {
        Vec::new()
    };
    let groups = groups
        .into_iter()
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(kafka_str(g.group_id)))
                .with_protocol_type(kafka_str(g.protocol_type))
                .with_group_state(kafka_str(g.state))
                .with_group_type(kafka_str("classic"))
        })
        .collect();
    ResponseKind::ListGroups(ListGroupsResponse::default().with_groups(groups))
}

/// DeleteGroups: each group answered on its own.
pub async fn delete_groups(
    service: &Coordinator,
    principal: &Principal,
    request: DeleteGroupsRequest,
) -> ResponseKind {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let deleted = service.delete(principal, &group_id.0).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(
                    deleted
                        .err()
                        .map_or(0, |e| group_error(ApiKey::DeleteGroups, &e)),
                ),
        );
    }
    ResponseKind::DeleteGroups(DeleteGroupsResponse::default().with_results(results))
}

/// OffsetDelete: the group's committed offsets of the partitions named are removed, except
/// for topics its members consume (GROUP_SUBSCRIBED_TO_TOPIC).
pub async fn offset_delete(
    service: &Coordinator,
    principal: &Principal,
    request: OffsetDeleteRequest,
) -> ResponseKind {
    let topics = request
        .topics
        .into_iter()
        .map(|t| TopicItems {
            topic: t.name.0.to_string(),
            partitions: t
                .partitions
                .into_iter()
                .map(|p| PartitionId(p.partition_index))
                .collect(),
        })
        .collect();
    let (top, deleted) = service
        .delete_offsets(principal, &request.group_id.0, topics)
        .await;
    let response = match top {
        Err(e) => {
            OffsetDeleteResponse::default().with_error_code(group_error(ApiKey::OffsetDelete, &e))
        }
        Ok(()) => OffsetDeleteResponse::default().with_topics(map_topics(
            deleted,
            |p| {
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition.0)
                    .with_error_code(
                        p.outcome
                            .err()
                            .map_or(0, |e| group_error(ApiKey::OffsetDelete, &e)),
                    )
            },
            |name, partitions| {
                OffsetDeleteResponseTopic::default()
                    .with_name(topic_name(name))
                    .with_partitions(partitions)
            },
        )),
    };
    ResponseKind::OffsetDelete(response)
}
