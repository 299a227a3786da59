//! The group coordinator seen through raw frames on a real broker: finding the coordinator
//! (which creates `__consumer_offsets`), joining with KIP-394 member ids, server-side
//! round-robin assignment, generation fencing of commits, rebalances on leave, state that
//! survives a restart (offsets and the generation are records), and group administration.

mod common;

use common::*;
use sluice_protocol::group_log::OFFSETS_TOPIC;

const GROUP: &str = "billing";

fn join_request(member_id: &str) -> Request {
    Request::JoinGroup(JoinGroupRequest {
        group_id: GROUP.into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        subscribed_topics: vec!["t".into()],
        protocols: vec![JoinGroupProtocol {
            name: "server".into(),
            metadata: Bytes::new(),
        }],
    })
}

impl Conn {
    async fn find_coordinator(&mut self, group: &str) -> FindCoordinatorResponse {
        let request = Request::FindCoordinator(FindCoordinatorRequest {
            key: group.into(),
            key_type: CoordinatorType::Group,
        });
        let Response::FindCoordinator(r) = self.call(request).await else {
            panic!("not a FindCoordinator response")
        };
        r
    }

    async fn join(&mut self, member_id: &str) -> JoinGroupResponse {
        let Response::JoinGroup(r) = self.call(join_request(member_id)).await else {
            panic!("not a JoinGroup response")
        };
        r
    }

    /// A first join and the rejoin with the handed-out id: the member's generation.
    async fn join_new(&mut self) -> JoinGroupResponse {
        let first = self.join("").await;
        assert_eq!(first.error_code, ErrorCode::MemberIdRequired);
        assert!(!first.member_id.is_empty());
        let joined = self.join(&first.member_id).await;
        assert_eq!(joined.error_code, ErrorCode::None, "{joined:?}");
        joined
    }

    async fn sync(&mut self, member_id: &str, generation: i32) -> SyncGroupResponse {
        let Response::SyncGroup(r) = self
            .call(Request::SyncGroup(SyncGroupRequest {
                group_id: GROUP.into(),
                generation_id: generation,
                member_id: member_id.into(),
                group_instance_id: None,
                assignments: Vec::new(),
            }))
            .await
        else {
            panic!("not a SyncGroup response")
        };
        r
    }

    async fn heartbeat(&mut self, member_id: &str, generation: i32) -> ErrorCode {
        let Response::Heartbeat(r) = self
            .call(Request::Heartbeat(HeartbeatRequest {
                group_id: GROUP.into(),
                generation_id: generation,
                member_id: member_id.into(),
                group_instance_id: None,
            }))
            .await
        else {
            panic!("not a Heartbeat response")
        };
        r.error_code
    }

    async fn leave(&mut self, member_id: &str) -> ErrorCode {
        let Response::LeaveGroup(r) = self
            .call(Request::LeaveGroup(LeaveGroupRequest {
                group_id: GROUP.into(),
                members: vec![LeavingMember {
                    member_id: member_id.into(),
                    group_instance_id: None,
                    reason: None,
                }],
            }))
            .await
        else {
            panic!("not a LeaveGroup response")
        };
        r.members[0].error_code
    }

    async fn commit(
        &mut self,
        member_id: &str,
        generation: i32,
        partition: i32,
        offset: i64,
    ) -> ErrorCode {
        let Response::OffsetCommit(r) = self
            .call(Request::OffsetCommit(OffsetCommitRequest {
                group_id: GROUP.into(),
                generation_id: generation,
                member_id: member_id.into(),
                group_instance_id: None,
                topics: vec![OffsetCommitTopic {
                    name: "t".into(),
                    partitions: vec![OffsetCommitPartition {
                        partition: PartitionId(partition),
                        committed_offset: Offset(offset),
                        committed_leader_epoch: LeaderEpoch(-1),
                        committed_metadata: None,
                    }],
                }],
            }))
            .await
        else {
            panic!("not an OffsetCommit response")
        };
        r.topics[0].partitions[0].error_code
    }

    /// Committed offsets of topic `t`, partitions 0..6.
    async fn committed(&mut self) -> Vec<i64> {
        let Response::OffsetFetch(r) = self
            .call(Request::OffsetFetch(OffsetFetchRequest {
                group_id: GROUP.into(),
                topics: Some(vec![TopicPartitions {
                    topic: "t".into(),
                    partitions: (0..6).map(PartitionId).collect(),
                }]),
                require_stable: false,
            }))
            .await
        else {
            panic!("not an OffsetFetch response")
        };
        assert_eq!(r.error_code, ErrorCode::None, "{r:?}");
        r.topics[0]
            .partitions
            .iter()
            .map(|p| p.committed_offset.0)
            .collect()
    }

    async fn describe_group(&mut self) -> DescribedGroup {
        let Response::DescribeGroups(r) = self
            .call(Request::DescribeGroups(DescribeGroupsRequest {
                groups: vec![GROUP.into()],
            }))
            .await
        else {
            panic!("not a DescribeGroups response")
        };
        r.groups.into_iter().next().unwrap()
    }

    async fn reset(&mut self, offset: i64) -> ResetOffsetsResponse {
        let Response::ResetOffsets(r) = self
            .call(Request::ResetOffsets(ResetOffsetsRequest {
                group_id: GROUP.into(),
                topics: vec![ResetOffsetsTopic {
                    name: "t".into(),
                    partitions: vec![ResetOffsetsPartition {
                        partition: PartitionId(0),
                        offset: Offset(offset),
                    }],
                }],
            }))
            .await
        else {
            panic!("not a ResetOffsets response")
        };
        r
    }

    async fn delete_group(&mut self) -> ErrorCode {
        let Response::DeleteGroups(r) = self
            .call(Request::DeleteGroups(DeleteGroupsRequest {
                group_ids: vec![GROUP.into()],
            }))
            .await
        else {
            panic!("not a DeleteGroups response")
        };
        r.results[0].error_code
    }

    /// Retries while the coordinator loads its partition after a (re)start.
    async fn wait_loaded(&mut self) {
        for _ in 0..100 {
            let Response::OffsetFetch(r) = self
                .call(Request::OffsetFetch(OffsetFetchRequest {
                    group_id: GROUP.into(),
                    topics: None,
                    require_stable: false,
                }))
                .await
            else {
                panic!()
            };
            if r.error_code == ErrorCode::None {
                return;
            }
            assert_eq!(r.error_code, ErrorCode::CoordinatorLoadInProgress, "{r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the coordinator never finished loading");
    }
}

fn partitions_of(sync: &SyncGroupResponse) -> Vec<i32> {
    assert_eq!(sync.error_code, ErrorCode::None, "{sync:?}");
    sync.assignment
        .iter()
        .flat_map(|tp| tp.partitions.iter().map(|p| p.0))
        .collect()
}

#[tokio::test]
async fn a_group_assigns_round_robin_fences_stale_commits_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("t", 6, &[]).await, ErrorCode::None);

    let found = c.find_coordinator(GROUP).await;
    assert_eq!(found.error_code, ErrorCode::None, "{found:?}");
    assert_eq!(found.port, broker.addr.port());
    c.wait_loaded().await;

    // Two members starting together land in one generation.
    let mut c2 = broker.connect().await;
    let (a, b) = tokio::join!(c.join_new(), c2.join_new());
    assert_eq!(a.generation_id, b.generation_id);
    let generation = a.generation_id;
    let share_a = partitions_of(&c.sync(&a.member_id, generation).await);
    let share_b = partitions_of(&c2.sync(&b.member_id, generation).await);
    let (first, second) = if a.member_id < b.member_id {
        (&share_a, &share_b)
    } else {
        (&share_b, &share_a)
    };
    assert_eq!(
        (first.as_slice(), second.as_slice()),
        (&[0, 2, 4][..], &[1, 3, 5][..])
    );

    // Commits from the generation are stored; a stale generation is fenced.
    assert_eq!(
        c.commit(&a.member_id, generation, share_a[0], 7).await,
        ErrorCode::None
    );
    assert_eq!(
        c.commit(&a.member_id, generation - 1, share_a[0], 99).await,
        ErrorCode::IllegalGeneration
    );
    assert_eq!(
        c.commit("nobody", generation, 0, 99).await,
        ErrorCode::UnknownMemberId
    );
    assert_eq!(c.committed().await[share_a[0] as usize], 7);

    // b leaves: a hears of the rebalance, may still commit in its generation, rejoins
    // and owns everything in the next.
    assert_eq!(c2.leave(&b.member_id).await, ErrorCode::None);
    assert_eq!(
        c.heartbeat(&a.member_id, generation).await,
        ErrorCode::RebalanceInProgress
    );
    assert_eq!(
        c.commit(&a.member_id, generation, share_a[0], 8).await,
        ErrorCode::None
    );
    let rejoined = c.join(&a.member_id).await;
    assert_eq!(rejoined.generation_id, generation + 1);
    let everything = partitions_of(&c.sync(&a.member_id, generation + 1).await);
    assert_eq!(everything, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        c.commit(&a.member_id, generation, 0, 9).await,
        ErrorCode::IllegalGeneration
    );

    // Administration is refused while a member consumes.
    let refused = c.reset(0).await;
    assert_eq!(refused.error_code, ErrorCode::NonEmptyGroup);
    assert!(refused
        .error_message
        .unwrap()
        .contains("stop its consumers first"));
    assert_eq!(c.delete_group().await, ErrorCode::NonEmptyGroup);
    drop((c, c2));
    broker.shutdown().await;

    // After a restart the coordinator rebuilds the generation and the offsets.
    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut c = broker.connect().await;
    c.wait_loaded().await;
    let described = c.describe_group().await;
    assert_eq!(
        (described.group_state.as_str(), described.generation_id),
        ("Stable", generation + 1)
    );
    assert_eq!(described.members.len(), 1);
    assert_eq!(
        c.heartbeat(&a.member_id, generation + 1).await,
        ErrorCode::None
    );
    assert_eq!(c.committed().await[share_a[0] as usize], 8);

    // Once the last member leaves, offsets can be reset and the group deleted.
    assert_eq!(c.leave(&a.member_id).await, ErrorCode::None);
    for _ in 0..100 {
        if c.describe_group().await.group_state == "Empty" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.reset(3).await.error_code, ErrorCode::None);
    assert_eq!(c.committed().await[0], 3);
    assert_eq!(c.delete_group().await, ErrorCode::None);
    assert_eq!(c.describe_group().await.group_state, "Dead");
    assert_eq!(c.committed().await, vec![-1; 6]);
    assert_eq!(c.delete_group().await, ErrorCode::GroupIdNotFound);
    broker.shutdown().await;
}

#[tokio::test]
async fn clients_cannot_write_or_delete_the_offsets_topic() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(c.find_coordinator("g").await.error_code, ErrorCode::None);
    let Response::Produce(r) = c
        .call(produce_request(OFFSETS_TOPIC, 0, &["forged"], ACKS_ALL))
        .await
    else {
        panic!()
    };
    let refused = &r.topics[0].partitions[0];
    assert_eq!(refused.error_code, ErrorCode::InvalidTopicException);
    assert!(refused
        .error_message
        .as_deref()
        .unwrap()
        .contains("internal"));
    broker.shutdown().await;
}

#[tokio::test]
async fn bad_group_requests_get_typed_errors() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(
        c.find_coordinator("").await.error_code,
        ErrorCode::InvalidGroupId
    );
    c.find_coordinator(GROUP).await;
    c.wait_loaded().await;
    let Response::JoinGroup(short) = c
        .call(Request::JoinGroup(JoinGroupRequest {
            session_timeout_ms: 10,
            ..match join_request("") {
                Request::JoinGroup(r) => r,
                _ => unreachable!(),
            }
        }))
        .await
    else {
        panic!()
    };
    assert_eq!(short.error_code, ErrorCode::InvalidSessionTimeout);
    assert_eq!(c.heartbeat("ghost", 1).await, ErrorCode::UnknownMemberId);
    assert_eq!(c.join("ghost").await.error_code, ErrorCode::UnknownMemberId);
    broker.shutdown().await;
}
