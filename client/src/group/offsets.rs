//! Committed offsets: OffsetCommit for a member (or a "simple" commit from outside group
//! management) and OffsetFetch.

use std::collections::BTreeMap;
use std::time::Instant;

use sluice_protocol::messages::{
    OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest,
    TopicPartitions,
};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset, Request, Response};

use super::coordinator::{code_recovery, group_error};
use super::membership::coordinator_code;
use super::{Coordinator, Generation};
use crate::client::unexpected;
use crate::error::{Error, Result};
use crate::TopicPartition;

/// Offsets to commit: per partition, the offset of the next record to consume.
pub(crate) type CommitOffsets = BTreeMap<TopicPartition, i64>;

/// The OffsetCommit request for `offsets` in `generation`, topics and partitions sorted.
pub(crate) fn commit_request(
    group_id: &str,
    generation: &Generation,
    offsets: &CommitOffsets,
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitTopic> = Vec::new();
    for (tp, &offset) in offsets {
        let partition = OffsetCommitPartition {
            partition: tp.partition,
            committed_offset: Offset(offset),
            committed_leader_epoch: LeaderEpoch(-1),
            committed_metadata: None,
        };
        match topics.last_mut() {
            Some(t) if t.name == tp.topic => t.partitions.push(partition),
            _ => topics.push(OffsetCommitTopic {
                name: tp.topic.clone(),
                partitions: vec![partition],
            }),
        }
    }
    OffsetCommitRequest {
        group_id: group_id.to_owned(),
        generation_id: generation.generation_id,
        member_id: generation.member_id.clone(),
        group_instance_id: None,
        topics,
    }
}

/// Commits `offsets` as `generation`, retrying while the coordinator moves or loads, until
/// `deadline`. A refusal because the member left its generation is [`Error::Fenced`]
/// (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID) or [`Error::RebalanceInProgress`]; neither is
/// retried.
pub(crate) async fn commit(
    coordinator: &Coordinator,
    generation: &Generation,
    offsets: &CommitOffsets,
    deadline: Instant,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let group = coordinator.group_id().to_owned();
    let simple = *generation == Generation::simple();
    let request = Request::OffsetCommit(commit_request(&group, generation, offsets));
    let timeout = coordinator.client().config().request_timeout;
    coordinator
        .call(request, timeout, Some(deadline), |r| match r {
            Response::OffsetCommit(r) => {
                let results = r.topics.into_iter().flat_map(|t| {
                    let topic = t.name;
                    t.partitions
                        .into_iter()
                        .map(move |p| (TopicPartition::new(topic.clone(), p.partition), p))
                });
                let mut failure: Option<Error> = None;
                for (tp, p) in results {
                    if p.error_code == ErrorCode::None {
                        continue;
                    }
                    let e = commit_error(&group, simple, &tp, p.error_code, p.error_message);
                    // A coordinator error decides (the whole commit is retried); else the
                    // first refusal.
                    if code_recovery(p.error_code).is_some() {
                        return Err(e);
                    }
                    failure.get_or_insert(e);
                }
                failure.map_or(Ok(()), Err)
            }
            other => Err(unexpected("OffsetCommit", &other)),
        })
        .await
}

/// The error for a partition's refused commit; `simple` for a commit from outside group
/// management, which the coordinator refuses (UNKNOWN_MEMBER_ID) while the group has
/// members.
fn commit_error(
    group: &str,
    simple: bool,
    tp: &TopicPartition,
    code: ErrorCode,
    message: Option<String>,
) -> Error {
    match code {
        ErrorCode::UnknownMemberId if simple => Error::GroupNotEmpty {
            group: group.to_owned(),
        },
        ErrorCode::IllegalGeneration | ErrorCode::UnknownMemberId | ErrorCode::FencedInstanceId => {
            Error::Fenced {
                group: group.to_owned(),
                code,
            }
        }
        ErrorCode::RebalanceInProgress => Error::RebalanceInProgress {
            group: group.to_owned(),
        },
        code => group_error(
            &format!("committing the offset of {tp} for group \"{group}\""),
            code,
            message,
        ),
    }
}

/// The group's committed offsets, of `partitions` (`None`: every partition it has one
/// for), retrying while the coordinator moves or loads, until `deadline`. Partitions
/// without a committed offset are left out. `require_stable`: retry while a transaction
/// that has not ended committed an offset of a partition (UNSTABLE_OFFSET_COMMIT).
pub(crate) async fn fetch_committed(
    coordinator: &Coordinator,
    partitions: Option<&[TopicPartition]>,
    deadline: Option<Instant>,
    require_stable: bool,
) -> Result<CommitOffsets> {
    if partitions.is_some_and(|p| p.is_empty()) {
        return Ok(CommitOffsets::new());
    }
    let group = coordinator.group_id().to_owned();
    let topics = partitions.map(|partitions| {
        let mut topics: Vec<TopicPartitions> = Vec::new();
        for tp in partitions {
            match topics.last_mut() {
                Some(t) if t.topic == tp.topic => t.partitions.push(tp.partition),
                _ => topics.push(TopicPartitions {
                    topic: tp.topic.clone(),
                    partitions: vec![tp.partition],
                }),
            }
        }
        topics
    });
    let request = Request::OffsetFetch(OffsetFetchRequest {
        group_id: group.clone(),
        topics,
        require_stable,
    });
    let context = format!("reading the committed offsets of group \"{group}\"");
    let timeout = coordinator.client().config().request_timeout;
    coordinator
        .call(request, timeout, deadline, |r| {
            let r = match r {
                Response::OffsetFetch(r) => r,
                other => return Err(unexpected("OffsetFetch", &other)),
            };
            coordinator_code(&context, r.error_code, &r.error_message)?;
            if r.error_code != ErrorCode::None {
                return Err(group_error(&context, r.error_code, r.error_message));
            }
            let mut out = CommitOffsets::new();
            for t in r.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.clone(), p.partition);
                    if p.error_code != ErrorCode::None {
                        let context = format!("{context} for {tp}");
                        return Err(group_error(&context, p.error_code, p.error_message));
                    }
                    if p.committed_offset.0 >= 0 {
                        out.insert(tp, p.committed_offset.0);
                    }
                }
            }
            Ok(out)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::PartitionId;

    #[test]
    fn a_commit_request_groups_partitions_by_topic() {
        let offsets: CommitOffsets = [(("b", 1), 7), (("a", 2), 3), (("a", 0), 5)]
            .into_iter()
            .map(|((t, p), o)| (TopicPartition::new(t, PartitionId(p)), o))
            .collect();
        let generation = Generation {
            generation_id: 4,
            member_id: "m".into(),
        };
        let request = commit_request("g", &generation, &offsets);
        assert_eq!(
            (request.generation_id, request.member_id.as_str()),
            (4, "m")
        );
        let shape: Vec<(String, Vec<(i32, i64)>)> = request
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition.0, p.committed_offset.0))
                    .collect();
                (t.name.clone(), partitions)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a".to_owned(), vec![(0, 5), (2, 3)]),
                ("b".to_owned(), vec![(1, 7)])
            ]
        );
        let simple = commit_request("g", &Generation::simple(), &offsets);
        assert_eq!((simple.generation_id, simple.member_id.as_str()), (-1, ""));
    }

    #[test]
    fn refusals_become_typed_errors() {
        let tp = TopicPartition::new("t", PartitionId(0));
        assert_eq!(
            commit_error("g", false, &tp, ErrorCode::IllegalGeneration, None),
            Error::Fenced {
                group: "g".into(),
                code: ErrorCode::IllegalGeneration
            }
        );
        assert_eq!(
            commit_error("g", false, &tp, ErrorCode::RebalanceInProgress, None),
            Error::RebalanceInProgress { group: "g".into() }
        );
        assert_eq!(
            commit_error("g", true, &tp, ErrorCode::UnknownMemberId, None),
            Error::GroupNotEmpty { group: "g".into() }
        );
        assert_eq!(
            commit_error("g", false, &tp, ErrorCode::UnknownTopicOrPartition, None).code(),
            Some(ErrorCode::UnknownTopicOrPartition)
        );
    }
}
