//! Consumer-group apis: FindCoordinator (creating `__consumer_offsets` on first use),
//! membership (JoinGroup, SyncGroup, Heartbeat, LeaveGroup), offsets (OffsetCommit,
//! OffsetFetch, ResetOffsets) and administration (DescribeGroups, ListGroups,
//! DeleteGroups), translated to calls on [`crate::groups`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::group_log::{
    coordinator_partition, encode_value, GroupLogKey, OffsetKey, OffsetValue, OFFSETS_TOPIC,
};
use sluice_protocol::messages::{
    ConfigEntry, CoordinatorType, CreatableTopic, CreateTopicsRequest, DeletableGroupResult,
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribedGroup, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    LeavingMemberResponse, ListGroupsRequest, ListGroupsResponse, ListedGroup, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchPartition, OffsetFetchRequest, OffsetFetchResponse,
    OffsetFetchTopic, PartitionResult, ResetOffsetsRequest, ResetOffsetsResponse, SyncGroupRequest,
    SyncGroupResponse, TopicPartitionResults,
};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId};
use sluice_storage::{Clock, SystemClock};

use super::Caller;
use crate::broker::Broker;
use crate::cluster::image::{MetadataImage, NATIVE_LISTENER};
use crate::error::ApiError;
use crate::groups::group::{Group, JoinOutcome, JoinRequest};
use crate::groups::{complete_rebalance, GroupRef, Shard};

/// Longest committed-offset metadata accepted (Kafka's `offset.metadata.max.bytes`).
const OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// Replication factor ceiling of `__consumer_offsets`.
const OFFSETS_TOPIC_REPLICATION_MAX: usize = 3;

/// Where the coordinator of a group is. Creates `__consumer_offsets` on first use, with
/// min(3, brokers) replicas, where the brokers counted are the registered ones or the
/// voters, whichever are more: a three-voter cluster gets three replicas even when asked
/// before every broker registered (the creation then fails until they have, and the client
/// retries on COORDINATOR_NOT_AVAILABLE).
pub async fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let located = async {
        if request.key_type != CoordinatorType::Group {
            return Err(ApiError::new(
                ErrorCode::CoordinatorNotAvailable,
                "transactions are not supported by this version of sluice",
            ));
        }
        check_group_id(&request.key)?;
        let image = offsets_topic(broker).await?;
        let topic = &image.topics[OFFSETS_TOPIC];
        let index = coordinator_partition(&request.key, topic.partitions.len() as u32);
        let leader = topic.partition(index).map_or(BrokerId(-1), |p| p.leader);
        let address = image
            .broker_address(leader, NATIVE_LISTENER)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    format!(
                        "{OFFSETS_TOPIC}-{} has no leader right now; retry shortly",
                        index.0
                    ),
                )
            })?;
        Ok((leader, address.host.clone(), address.port))
    };
    match located.await {
        Ok((node_id, host, port)) => FindCoordinatorResponse {
            error_code: ErrorCode::None,
            error_message: None,
            node_id,
            host,
            port,
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

/// The image, once it has `__consumer_offsets` (created here if it is missing).
async fn offsets_topic(broker: &Arc<Broker>) -> Result<Arc<MetadataImage>, ApiError> {
    let image = broker.cluster.image();
    if image.topics.contains_key(OFFSETS_TOPIC) {
        return Ok(image);
    }
    let brokers = image.brokers.len().max(broker.config.voters.len());
    let replication_factor = brokers.clamp(1, OFFSETS_TOPIC_REPLICATION_MAX) as i16;
    let config = |name: &str, value: &str| ConfigEntry {
        name: name.to_owned(),
        value: value.to_owned(),
    };
    let request = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: OFFSETS_TOPIC.to_owned(),
            num_partitions: broker.config.offsets_topic_partitions as i32,
            replication_factor,
            // Commits must outlive any retention: compaction would bound the topic, and
            // sluice has none yet, so nothing is deleted.
            configs: vec![
                config("retention.ms", "-1"),
                config("retention.bytes", "-1"),
                config("segment.bytes", &(100u32 << 20).to_string()),
            ],
        }],
        timeout_ms: 30_000,
        validate_only: false,
    };
    let response = super::admin::create_topics(broker, request).await;
    let outcome = &response.topics[0];
    match outcome.error_code {
        ErrorCode::None | ErrorCode::TopicAlreadyExists => {}
        code => {
            return Err(ApiError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "cannot create {OFFSETS_TOPIC} with {replication_factor} replicas yet ({}: \
                     {}); retry once enough brokers are up",
                    code.name(),
                    outcome.error_message.as_deref().unwrap_or("")
                ),
            ))
        }
    }
    let image = broker.cluster.image();
    if image.topics.contains_key(OFFSETS_TOPIC) {
        Ok(image)
    } else {
        Err(ApiError::new(
            ErrorCode::CoordinatorNotAvailable,
            format!("{OFFSETS_TOPIC} is being created; retry shortly"),
        ))
    }
}

fn check_group_id(group: &str) -> Result<(), ApiError> {
    if group.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidGroupId,
            "the group id must not be empty",
        ));
    }
    Ok(())
}

/// The loaded shard coordinating `group` here, and the group if it exists (created if
/// `create`).
fn locate(
    broker: &Broker,
    group: &str,
    create: bool,
) -> Result<(Arc<Shard>, Option<GroupRef>), ApiError> {
    check_group_id(group)?;
    let shard = broker.groups.shard_for(&broker.cluster.image(), group)?;
    let found = shard.group(group, create);
    Ok((shard, found))
}

/// JoinGroup: held until the join phase completes.
pub async fn join_group(
    broker: &Arc<Broker>,
    request: JoinGroupRequest,
    caller: &Caller,
) -> JoinGroupResponse {
    let refused = |e: ApiError, member_id: String| JoinGroupResponse {
        error_code: e.code,
        error_message: e.wire_message(),
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id,
        members: Vec::new(),
    };
    let config = &broker.config;
    let session_ms = u64::try_from(request.session_timeout_ms).unwrap_or(0);
    if !(config.group_min_session_timeout_ms..=config.group_max_session_timeout_ms)
        .contains(&session_ms)
    {
        let e = ApiError::new(
            ErrorCode::InvalidSessionTimeout,
            format!(
                "session timeout {} ms is outside the broker's range {}..={} ms \
                 (group_min_session_timeout_ms, group_max_session_timeout_ms)",
                request.session_timeout_ms,
                config.group_min_session_timeout_ms,
                config.group_max_session_timeout_ms
            ),
        );
        return refused(e, request.member_id);
    }
    let (shard, group) = match locate(broker, &request.group_id, true) {
        Ok((shard, Some(group))) => (shard, group),
        Ok((_, None)) => unreachable!("locate creates the group"),
        Err(e) => return refused(e, request.member_id),
    };
    let rebalance_ms = request.rebalance_timeout_ms.max(request.session_timeout_ms);
    let join = JoinRequest {
        member_id: request.member_id.clone(),
        client_id: caller.client_id.clone(),
        client_host: caller.host.clone(),
        session_timeout: Duration::from_millis(session_ms),
        rebalance_timeout: Duration::from_millis(rebalance_ms.max(0) as u64),
        protocol_type: request.protocol_type.clone(),
        protocols: request.protocols.iter().map(|p| p.name.clone()).collect(),
        subscription: request.subscribed_topics,
    };
    let (outcome, done) = {
        let mut g = group.lock().await;
        let outcome = g.join(join, Instant::now(), broker.groups.timings());
        (outcome, g.join_phase_done(Instant::now()))
    };
    if done {
        tokio::spawn(complete_rebalance(
            shard,
            Arc::clone(&group),
            broker.cluster.image(),
        ));
    }
    let joined = match outcome {
        JoinOutcome::Now(result) => result,
        JoinOutcome::MemberIdRequired(id) => {
            let e = ApiError::new(
                ErrorCode::MemberIdRequired,
                "join again with the member id in this response",
            );
            return refused(e, id);
        }
        JoinOutcome::Later(rx) => rx.await.unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::RebalanceInProgress,
                "a newer join of this member replaced this one; join again",
            ))
        }),
    };
    match joined {
        Ok(joined) => JoinGroupResponse {
            error_code: ErrorCode::None,
            error_message: None,
            generation_id: joined.generation,
            protocol_type: Some(request.protocol_type),
            protocol_name: Some(crate::groups::group::SERVER_ASSIGNOR.to_owned()),
            leader: joined.leader,
            member_id: joined.member_id,
            members: Vec::new(),
        },
        Err(e) => refused(e, request.member_id),
    }
}

/// SyncGroup: the member's share of the generation.
pub async fn sync_group(broker: &Arc<Broker>, request: SyncGroupRequest) -> SyncGroupResponse {
    let assigned = async {
        let group = existing(broker, &request.group_id, &request.member_id)?;
        let mut g = group.lock().await;
        g.sync(&request.member_id, request.generation_id, Instant::now())
    };
    match assigned.await {
        Ok(assignment) => SyncGroupResponse {
            error_code: ErrorCode::None,
            error_message: None,
            assignment,
        },
        Err(e) => SyncGroupResponse {
            error_code: e.code,
            error_message: e.wire_message(),
            assignment: Vec::new(),
        },
    }
}

/// Heartbeat.
pub async fn heartbeat(broker: &Arc<Broker>, request: HeartbeatRequest) -> HeartbeatResponse {
    let beat = async {
        let group = existing(broker, &request.group_id, &request.member_id)?;
        let mut g = group.lock().await;
        g.heartbeat(&request.member_id, request.generation_id, Instant::now())
    };
    match beat.await {
        Ok(()) => HeartbeatResponse {
            error_code: ErrorCode::None,
            error_message: None,
        },
        Err(e) => HeartbeatResponse {
            error_code: e.code,
            error_message: e.wire_message(),
        },
    }
}

/// A group that must exist for `member_id` to be in it.
fn existing(broker: &Broker, group: &str, member_id: &str) -> Result<GroupRef, ApiError> {
    let (_, found) = locate(broker, group, false)?;
    found.ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnknownMemberId,
            format!("group {group:?} has no member {member_id:?}; join again without a member id"),
        )
    })
}

/// LeaveGroup.
pub async fn leave_group(broker: &Arc<Broker>, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let (shard, group) = match locate(broker, &request.group_id, false) {
        Ok(found) => found,
        Err(e) => {
            return LeaveGroupResponse {
                error_code: e.code,
                error_message: e.wire_message(),
                members: Vec::new(),
            }
        }
    };
    let mut members = Vec::with_capacity(request.members.len());
    for member in request.members {
        let left = match &group {
            Some(group) => group.lock().await.leave(&member.member_id, Instant::now()),
            None => Err(ApiError::new(
                ErrorCode::UnknownMemberId,
                format!("group {:?} has no members", request.group_id),
            )),
        };
        let (error_code, error_message) = code_and_message(left);
        members.push(LeavingMemberResponse {
            member_id: member.member_id,
            group_instance_id: member.group_instance_id,
            error_code,
            error_message,
        });
    }
    // The last member gone (or every other member already rejoined): the next
    // generation completes now, not at the next tick.
    if let Some(group) = group {
        if group.lock().await.join_phase_done(Instant::now()) {
            tokio::spawn(complete_rebalance(shard, group, broker.cluster.image()));
        }
    }
    LeaveGroupResponse {
        error_code: ErrorCode::None,
        error_message: None,
        members,
    }
}

/// Each partition of a topic with its own validation outcome.
type TopicChecks = (String, Vec<(PartitionId, Result<(), ApiError>)>);

/// One partition's offset to write, validated.
struct OffsetWrite {
    topic: String,
    partition: PartitionId,
    value: OffsetValue,
}

/// OffsetCommit: fenced by generation and member id; each partition answered on its own.
pub async fn offset_commit(
    broker: &Arc<Broker>,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let image = broker.cluster.image();
    let mut results: Vec<TopicChecks> = Vec::new();
    let mut writes = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let checked = check_offset(
                &image,
                &topic.name,
                p.partition,
                p.committed_metadata.as_deref(),
            );
            if checked.is_ok() {
                writes.push(OffsetWrite {
                    topic: topic.name.clone(),
                    partition: p.partition,
                    value: OffsetValue {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata,
                        commit_timestamp: SystemClock.now_ms(),
                    },
                });
            }
            partitions.push((p.partition, checked));
        }
        results.push((topic.name, partitions));
    }
    let simple = request.generation_id < 0 && request.member_id.is_empty();
    let written = async {
        let (shard, group) = locate(broker, &request.group_id, simple)?;
        let group = group.ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownMemberId,
                format!(
                    "group {:?} has no member {:?}; join again without a member id",
                    request.group_id, request.member_id
                ),
            )
        })?;
        let generation = request.generation_id;
        write_offsets(&shard, &group, writes, |g| {
            g.check_commit(&request.member_id, generation, Instant::now())
        })
        .await
    }
    .await;
    OffsetCommitResponse {
        topics: topic_results(results, written),
    }
}

/// Why a commit of this partition cannot be stored, if it cannot.
fn check_offset(
    image: &MetadataImage,
    topic: &str,
    partition: PartitionId,
    metadata: Option<&str>,
) -> Result<(), ApiError> {
    let meta = image
        .topics
        .get(topic)
        .ok_or_else(|| ApiError::unknown_topic(topic))?;
    if meta.partition(partition).is_none() {
        return Err(ApiError::unknown_partition(
            topic,
            partition.0,
            meta.partitions.len(),
        ));
    }
    if metadata.is_some_and(|m| m.len() > OFFSET_METADATA_MAX_BYTES) {
        return Err(ApiError::new(
            ErrorCode::OffsetMetadataTooLarge,
            format!("offset metadata is longer than {OFFSET_METADATA_MAX_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Writes offsets of a group once `allowed` accepts them (checked under the group's lock,
/// with the records appended before it is released), and applies them once replicated.
async fn write_offsets(
    shard: &Shard,
    group: &GroupRef,
    writes: Vec<OffsetWrite>,
    allowed: impl FnOnce(&mut Group) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let pending = {
        let mut g = group.lock().await;
        allowed(&mut g)?;
        if writes.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(writes.len());
        for w in &writes {
            let key = GroupLogKey::Offset(OffsetKey {
                group: g.id().to_owned(),
                topic: w.topic.clone(),
                partition: w.partition,
            });
            let value = encode_value(&w.value).map_err(|e| {
                ApiError::new(
                    ErrorCode::UnknownServerError,
                    format!("encoding an offset: {e}"),
                )
            })?;
            records.push((key, Some(value)));
        }
        shard.write(records).await?
    };
    let base = shard.replicated(pending).await?;
    let mut g = group.lock().await;
    for (i, w) in writes.into_iter().enumerate() {
        g.apply_offset(
            w.topic,
            w.partition,
            Some(w.value),
            Offset(base.0 + i as i64),
        );
    }
    Ok(())
}

/// Per-partition results: a partition's own error, else the write's outcome.
fn topic_results(
    results: Vec<TopicChecks>,
    written: Result<(), ApiError>,
) -> Vec<TopicPartitionResults> {
    results
        .into_iter()
        .map(|(name, partitions)| TopicPartitionResults {
            name,
            partitions: partitions
                .into_iter()
                .map(|(partition, checked)| {
                    let (error_code, error_message) =
                        code_and_message(checked.and(written.clone()));
                    PartitionResult {
                        partition,
                        error_code,
                        error_message,
                    }
                })
                .collect(),
        })
        .collect()
}

fn code_and_message(outcome: Result<(), ApiError>) -> (ErrorCode, Option<String>) {
    match outcome {
        Ok(()) => (ErrorCode::None, None),
        Err(e) => (e.code, e.wire_message()),
    }
}

/// OffsetFetch: committed offsets (-1 where none).
pub async fn offset_fetch(
    broker: &Arc<Broker>,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let group = match locate(broker, &request.group_id, false) {
        Ok((_, group)) => group,
        Err(e) => {
            return OffsetFetchResponse {
                error_code: e.code,
                error_message: e.wire_message(),
                topics: Vec::new(),
            }
        }
    };
    let committed: Vec<(String, PartitionId, Option<OffsetValue>)> = match &group {
        None => match request.topics {
            Some(topics) => topics
                .into_iter()
                .flat_map(|t| {
                    t.partitions
                        .into_iter()
                        .map(move |p| (t.topic.clone(), p, None))
                })
                .collect(),
            None => Vec::new(),
        },
        Some(group) => {
            let g = group.lock().await;
            match request.topics {
                Some(topics) => topics
                    .into_iter()
                    .flat_map(|t| {
                        let found: Vec<_> = t
                            .partitions
                            .iter()
                            .map(|p| {
                                (
                                    t.topic.clone(),
                                    *p,
                                    g.committed(&t.topic, *p).map(|c| c.value.clone()),
                                )
                            })
                            .collect();
                        found
                    })
                    .collect(),
                None => g
                    .all_committed()
                    .iter()
                    .map(|((topic, p), c)| (topic.clone(), *p, Some(c.value.clone())))
                    .collect(),
            }
        }
    };
    let mut topics: Vec<OffsetFetchTopic> = Vec::new();
    for (topic, partition, value) in committed {
        let entry = OffsetFetchPartition {
            partition,
            committed_offset: value.as_ref().map_or(Offset(-1), |v| v.offset),
            committed_leader_epoch: value.as_ref().map_or(LeaderEpoch(-1), |v| v.leader_epoch),
            metadata: value.and_then(|v| v.metadata),
            error_code: ErrorCode::None,
            error_message: None,
        };
        match topics.last_mut() {
            Some(last) if last.name == topic => last.partitions.push(entry),
            _ => topics.push(OffsetFetchTopic {
                name: topic,
                partitions: vec![entry],
            }),
        }
    }
    OffsetFetchResponse {
        error_code: ErrorCode::None,
        error_message: None,
        topics,
    }
}

/// ResetOffsets: an administrator's explicit offsets, refused while the group has members.
pub async fn reset_offsets(
    broker: &Arc<Broker>,
    request: ResetOffsetsRequest,
) -> ResetOffsetsResponse {
    let image = broker.cluster.image();
    let mut results = Vec::new();
    let mut writes = Vec::new();
    for topic in request.topics {
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let mut checked = check_offset(&image, &topic.name, p.partition, None);
            if checked.is_ok() && p.offset.0 < 0 {
                checked = Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("offset {} is negative", p.offset),
                ));
            }
            if checked.is_ok() {
                writes.push(OffsetWrite {
                    topic: topic.name.clone(),
                    partition: p.partition,
                    value: OffsetValue {
                        offset: p.offset,
                        leader_epoch: LeaderEpoch(-1),
                        metadata: None,
                        commit_timestamp: SystemClock.now_ms(),
                    },
                });
            }
            partitions.push((p.partition, checked));
        }
        results.push((topic.name, partitions));
    }
    let group_id = request.group_id;
    let written = async {
        let (shard, group) = locate(broker, &group_id, true)?;
        let group = group.expect("locate creates the group");
        write_offsets(&shard, &group, writes, |g| {
            no_members(g, "reset its offsets")
        })
        .await
    }
    .await;
    let (error_code, error_message) = match &written {
        Err(e)
            if results
                .iter()
                .all(|(_, p)| p.iter().all(|(_, c)| c.is_ok())) =>
        {
            (e.code, e.wire_message())
        }
        _ => (ErrorCode::None, None),
    };
    ResetOffsetsResponse {
        error_code,
        error_message,
        topics: topic_results(results, written),
    }
}

fn no_members(group: &Group, what: &str) -> Result<(), ApiError> {
    if group.member_count() == 0 {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::NonEmptyGroup,
        format!(
            "group {:?} has {} active member(s); stop its consumers first, then {what}",
            group.id(),
            group.member_count()
        ),
    ))
}

/// DescribeGroups: state, generation and members (with assignments). A group this
/// coordinator does not know is described as `Dead` with no members, as Kafka does.
pub async fn describe_groups(
    broker: &Arc<Broker>,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for id in request.groups {
        let described = match locate(broker, &id, false) {
            Err(e) => DescribedGroup {
                error_code: e.code,
                error_message: e.wire_message(),
                group_id: id,
                group_state: String::new(),
                protocol_type: String::new(),
                protocol_name: String::new(),
                generation_id: -1,
                members: Vec::new(),
            },
            Ok((_, None)) => DescribedGroup {
                error_code: ErrorCode::None,
                error_message: None,
                group_id: id,
                group_state: "Dead".to_owned(),
                protocol_type: String::new(),
                protocol_name: String::new(),
                generation_id: -1,
                members: Vec::new(),
            },
            Ok((_, Some(group))) => {
                let g = group.lock().await;
                DescribedGroup {
                    error_code: ErrorCode::None,
                    error_message: None,
                    group_id: id,
                    group_state: g.state().name().to_owned(),
                    protocol_type: g.protocol_type().to_owned(),
                    protocol_name: g.protocol_name().to_owned(),
                    generation_id: g.generation(),
                    members: g.describe_members(),
                }
            }
        };
        groups.push(described);
    }
    DescribeGroupsResponse { groups }
}

/// ListGroups: the groups this broker coordinates (a client asks every broker).
pub async fn list_groups(broker: &Arc<Broker>, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut groups = Vec::new();
    for shard in broker.groups.loaded_shards() {
        for group in shard.groups() {
            let g = group.lock().await;
            let state = g.state().name();
            let wanted = request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(state));
            if g.state() != crate::groups::group::GroupState::Dead && wanted {
                groups.push(ListedGroup {
                    group_id: g.id().to_owned(),
                    protocol_type: g.protocol_type().to_owned(),
                    group_state: state.to_owned(),
                    n_members: g.member_count() as i32,
                });
            }
        }
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse {
        error_code: ErrorCode::None,
        error_message: None,
        groups,
    }
}

/// DeleteGroups: a group with no members, with its committed offsets (tombstones).
pub async fn delete_groups(
    broker: &Arc<Broker>,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.group_ids.len());
    for id in request.group_ids {
        let outcome = delete_group(broker, &id).await;
        let (error_code, error_message) = code_and_message(outcome);
        results.push(DeletableGroupResult {
            group_id: id,
            error_code,
            error_message,
        });
    }
    DeleteGroupsResponse { results }
}

async fn delete_group(broker: &Arc<Broker>, id: &str) -> Result<(), ApiError> {
    let (shard, group) = locate(broker, id, false)?;
    let not_found = || {
        ApiError::new(
            ErrorCode::GroupIdNotFound,
            format!("group {id:?} does not exist"),
        )
    };
    let group = group.ok_or_else(not_found)?;
    let pending = {
        let mut g = group.lock().await;
        if g.state() == crate::groups::group::GroupState::Dead || g.is_forgettable() {
            return Err(not_found());
        }
        no_members(&g, "delete it")?;
        let mut records: Vec<(GroupLogKey, Option<Bytes>)> = g
            .all_committed()
            .keys()
            .map(|(topic, partition)| {
                let key = OffsetKey {
                    group: id.to_owned(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                (GroupLogKey::Offset(key), None)
            })
            .collect();
        records.push((GroupLogKey::Group(id.to_owned()), None));
        let pending = shard.write(records).await?;
        g.kill(&ApiError::new(
            ErrorCode::CoordinatorNotAvailable,
            format!("group {id:?} was deleted; join again"),
        ));
        pending
    };
    // Forgotten whatever the outcome: the tombstones are in this leader's log, so they
    // are committed once the ISR catches up, or another coordinator loads the partition.
    let replicated = shard.replicated(pending).await;
    shard.forget(id);
    replicated.map(|_| ())
}
