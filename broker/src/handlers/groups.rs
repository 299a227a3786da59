//! Consumer-group apis: the native requests in, [`crate::groups::Coordinator`] does the
//! work, the native responses out.

use sluice_protocol::messages::{
    CoordinatorType, DeletableGroupResult, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupMember, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    LeavingMemberResponse, ListGroupsRequest, ListGroupsResponse, ListedGroup, OffsetCommitRequest,
    OffsetCommitResponse, OffsetCommitTopic, OffsetFetchPartition, OffsetFetchRequest,
    OffsetFetchResponse, OffsetFetchTopic, PartitionResult, ResetOffsetsRequest,
    ResetOffsetsResponse, SyncGroupRequest, SyncGroupResponse, TopicPartitionResults,
    TxnOffsetCommitRequest,
};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, Offset};

use super::Caller;
use crate::cluster::image::NATIVE_LISTENER;
use crate::error::ApiError;
use crate::groups::coordinator::{
    millis, CommitRequest, Coordinator, OffsetToCommit, SyncRequest, TxnProducer,
};
use crate::groups::group::{JoinRequest, MemberAssignment};
use crate::security::Principal;
use crate::services::{map_topics, PartitionOutcome, TopicItems};
use crate::txn::coordinator::Transactions;

/// Where the coordinator of a group, or of a transactional id, is.
pub async fn find_coordinator(
    service: &Coordinator,
    txns: &Transactions,
    principal: &Principal,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let located = match request.key_type {
        CoordinatorType::Group => {
            service
                .find_coordinator(principal, &request.key, NATIVE_LISTENER)
                .await
        }
        CoordinatorType::Transaction => {
            txns.find_coordinator(principal, &request.key, NATIVE_LISTENER)
                .await
        }
    };
    match located {
        Ok(found) => FindCoordinatorResponse {
            error_code: ErrorCode::None,
            error_message: None,
            node_id: found.node_id,
            host: found.host,
            port: found.port,
        },
        Err(e) => FindCoordinatorResponse {
            error_code: e.code,
            error_message: e.wire_message(),
            node_id: BrokerId(-1),
            host: String::new(),
            port: 0,
        },
    }
}

/// JoinGroup: held until the join phase completes.
pub async fn join_group(
    service: &Coordinator,
    principal: &Principal,
    request: JoinGroupRequest,
    caller: &Caller,
) -> JoinGroupResponse {
    let join = JoinRequest {
        member_id: request.member_id,
        group_instance_id: request.group_instance_id,
        client_id: caller.client_id.clone(),
        client_host: caller.host.clone(),
        session_timeout: millis(request.session_timeout_ms),
        rebalance_timeout: millis(request.rebalance_timeout_ms),
        protocol_type: request.protocol_type.clone(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name, p.metadata))
            .collect(),
        subscription: request.subscribed_topics,
        require_known_member_id: true,
    };
    match service.join(principal, &request.group_id, join).await {
        Ok(joined) => JoinGroupResponse {
            error_code: ErrorCode::None,
            error_message: None,
            generation_id: joined.generation,
            protocol_type: Some(request.protocol_type),
            protocol_name: joined.protocol_name,
            leader: joined.leader,
            member_id: joined.member_id,
            members: joined
                .members
                .into_iter()
                .map(|m| JoinGroupMember {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    metadata: m.metadata,
                })
                .collect(),
        },
        Err(refused) => JoinGroupResponse {
            error_code: refused.error.code,
            error_message: refused.error.wire_message(),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: refused.member_id,
            members: Vec::new(),
        },
    }
}

/// SyncGroup: the member's share of the generation.
pub async fn sync_group(
    service: &Coordinator,
    principal: &Principal,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let synced = service
        .sync(
            principal,
            SyncRequest {
                group_id: request.group_id,
                member_id: request.member_id,
                generation: request.generation_id,
                assignments: request
                    .assignments
                    .into_iter()
                    .map(|a| (a.member_id, a.assignment))
                    .collect(),
            },
        )
        .await;
    match synced {
        Ok(synced) => SyncGroupResponse {
            error_code: ErrorCode::None,
            error_message: None,
            assignment: match synced.assignment {
                MemberAssignment::Partitions(partitions) => partitions,
                opaque => opaque.partitions(),
            },
        },
        Err(e) => SyncGroupResponse {
            error_code: e.code,
            error_message: e.wire_message(),
            assignment: Vec::new(),
        },
    }
}

/// Heartbeat.
pub async fn heartbeat(
    service: &Coordinator,
    principal: &Principal,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let beat = service
        .heartbeat(
            principal,
            &request.group_id,
            &request.member_id,
            request.generation_id,
        )
        .await;
    let (error_code, error_message) = code_and_message(beat);
    HeartbeatResponse {
        error_code,
        error_message,
    }
}

/// LeaveGroup.
pub async fn leave_group(
    service: &Coordinator,
    principal: &Principal,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let instances: Vec<Option<String>> = request
        .members
        .iter()
        .map(|m| m.group_instance_id.clone())
        .collect();
    let members = request.members.into_iter().map(|m| m.member_id).collect();
    match service.leave(principal, &request.group_id, members).await {
        Ok(results) => LeaveGroupResponse {
            error_code: ErrorCode::None,
            error_message: None,
            members: results
                .into_iter()
                .zip(instances)
                .map(|((member_id, left), group_instance_id)| {
                    let (error_code, error_message) = code_and_message(left);
                    LeavingMemberResponse {
                        member_id,
                        group_instance_id,
                        error_code,
                        error_message,
                    }
                })
                .collect(),
        },
        Err(e) => LeaveGroupResponse {
            error_code: e.code,
            error_message: e.wire_message(),
            members: Vec::new(),
        },
    }
}

/// OffsetCommit: each partition answered on its own.
pub async fn offset_commit(
    service: &Coordinator,
    principal: &Principal,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let commit = CommitRequest {
        group_id: request.group_id,
        member_id: request.member_id,
        generation: request.generation_id,
        topics: to_commit(request.topics),
    };
    OffsetCommitResponse {
        topics: topic_results(service.commit(principal, commit).await),
    }
}

/// TxnOffsetCommit: offsets in a producer's transaction, each partition answered on its
/// own.
pub async fn txn_offset_commit(
    service: &Coordinator,
    principal: &Principal,
    request: TxnOffsetCommitRequest,
) -> OffsetCommitResponse {
    let producer = TxnProducer {
        transactional_id: request.transactional_id,
        producer_id: request.producer_id,
        producer_epoch: request.producer_epoch,
    };
    let commit = CommitRequest {
        group_id: request.group_id,
        member_id: request.member_id,
        generation: request.generation_id,
        topics: to_commit(request.topics),
    };
    OffsetCommitResponse {
        topics: topic_results(service.txn_commit(principal, producer, commit).await),
    }
}

fn to_commit(topics: Vec<OffsetCommitTopic>) -> Vec<TopicItems<OffsetToCommit>> {
    topics
        .into_iter()
        .map(|t| TopicItems {
            topic: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| OffsetToCommit {
                    partition: p.partition,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata,
                })
                .collect(),
        })
        .collect()
}

/// OffsetFetch: committed offsets (-1 where none).
pub async fn offset_fetch(
    service: &Coordinator,
    principal: &Principal,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let asked = request
        .topics
        .map(|topics| topics.into_iter().map(TopicItems::from).collect());
    match service.committed(principal, &request.group_id, asked).await {
        Ok(topics) => OffsetFetchResponse {
            error_code: ErrorCode::None,
            error_message: None,
            topics: map_topics(
                topics,
                |p| {
                    if request.require_stable && p.unstable {
                        // A transaction that has not ended wrote an offset here: the
                        // consumer waits for it rather than resuming before it.
                        return OffsetFetchPartition {
                            partition: p.partition,
                            committed_offset: Offset(-1),
                            committed_leader_epoch: LeaderEpoch(-1),
                            metadata: None,
                            error_code: ErrorCode::UnstableOffsetCommit,
                            error_message: None,
                        };
                    }
                    OffsetFetchPartition {
                        partition: p.partition,
                        committed_offset: p.committed.as_ref().map_or(Offset(-1), |c| c.offset),
                        committed_leader_epoch: p
                            .committed
                            .as_ref()
                            .map_or(LeaderEpoch(-1), |c| c.leader_epoch),
                        metadata: p.committed.and_then(|c| c.metadata),
                        error_code: ErrorCode::None,
                        error_message: None,
                    }
                },
                |topic, partitions| OffsetFetchTopic {
                    name: topic,
                    partitions,
                },
            ),
        },
        Err(e) => OffsetFetchResponse {
            error_code: e.code,
            error_message: e.wire_message(),
            topics: Vec::new(),
        },
    }
}

/// ResetOffsets: an administrator's explicit offsets.
pub async fn reset_offsets(
    service: &Coordinator,
    principal: &Principal,
    request: ResetOffsetsRequest,
) -> ResetOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| TopicItems {
            topic: t.name,
            partitions: t
                .partitions
                .into_iter()
                .map(|p| (p.partition, p.offset))
                .collect(),
        })
        .collect();
    let (top, partitions) = service
        .reset_offsets(principal, &request.group_id, topics)
        .await;
    let (error_code, error_message) = code_and_message(top);
    ResetOffsetsResponse {
        error_code,
        error_message,
        topics: topic_results(partitions),
    }
}

/// DescribeGroups.
pub async fn describe_groups(
    service: &Coordinator,
    principal: &Principal,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        groups.push(match service.describe(principal, &group_id).await {
            Ok(g) => DescribedGroup {
                error_code: ErrorCode::None,
                error_message: None,
                group_id,
                group_state: g.state,
                protocol_type: g.protocol_type,
                protocol_name: g.protocol_name,
                generation_id: g.generation,
                members: g
                    .members
                    .into_iter()
                    .map(|m| DescribedGroupMember {
                        assignment: m.assignment.partitions(),
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        subscription: m.subscription,
                    })
                    .collect(),
            },
            Err(e) => DescribedGroup {
                error_code: e.code,
                error_message: e.wire_message(),
                group_id,
                group_state: String::new(),
                protocol_type: String::new(),
                protocol_name: String::new(),
                generation_id: -1,
                members: Vec::new(),
            },
        });
    }
    DescribeGroupsResponse { groups }
}

/// ListGroups: the groups this broker coordinates (a client asks every broker).
pub async fn list_groups(
    service: &Coordinator,
    principal: &Principal,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    ListGroupsResponse {
        error_code: ErrorCode::None,
        error_message: None,
        groups: service
            .list(principal, &request.states_filter)
            .await
            .into_iter()
            .map(|g| ListedGroup {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                group_state: g.state,
                n_members: g.members as i32,
            })
            .collect(),
    }
}

/// DeleteGroups.
pub async fn delete_groups(
    service: &Coordinator,
    principal: &Principal,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.group_ids.len());
    for group_id in request.group_ids {
        let (error_code, error_message) =
            code_and_message(service.delete(principal, &group_id).await);
        results.push(DeletableGroupResult {
            group_id,
            error_code,
            error_message,
        });
    }
    DeleteGroupsResponse { results }
}

fn topic_results(topics: Vec<TopicItems<PartitionOutcome<()>>>) -> Vec<TopicPartitionResults> {
    map_topics(
        topics,
        |p| {
            let (error_code, error_message) = code_and_message(p.outcome);
            PartitionResult {
                partition: p.partition,
                error_code,
                error_message,
            }
        },
        |topic, partitions| TopicPartitionResults {
            name: topic,
            partitions,
        },
    )
}

fn code_and_message(outcome: Result<(), ApiError>) -> (ErrorCode, Option<String>) {
    match outcome {
        Ok(()) => (ErrorCode::None, None),
        Err(e) => (e.code, e.wire_message()),
    }
}
