//! Group coordinator failover in a three-broker cluster, at the protocol level: a member
//! commits offsets, the coordinator (the leader of the group's `__consumer_offsets`
//! partition) is SIGKILLed, and the broker that takes over that partition loads the
//! group: the committed offsets are intact and the member's generation still stands, so
//! it heartbeats and commits on without a rebalance.
//!
//! The brokers run in this process (`sluice-testkit`): a killed coordinator is dropped with
//! everything it ran, as a SIGKILLed process would be, without the cost of processes.

use std::time::Duration;

use bytes::Bytes;
use sluice_client::{Admin, Client, ClientConfig, NewTopic};
use sluice_integration_tests::wait_until;
use sluice_protocol::group_log::OFFSETS_TOPIC;
use sluice_protocol::messages::*;
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, Offset, PartitionId, Request, Response};
use sluice_testkit::Cluster;

const GROUP: &str = "ledger";
const TOPIC: &str = "entries";

/// The coordinator FindCoordinator names, once one is available.
async fn coordinator(client: &Client) -> BrokerId {
    for _ in 0..300 {
        let request = Request::FindCoordinator(FindCoordinatorRequest {
            key: GROUP.into(),
            key_type: CoordinatorType::Group,
        });
        if let Ok(Response::FindCoordinator(r)) = client.send_any(request).await {
            if r.error_code == ErrorCode::None {
                return r.node_id;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no coordinator for {GROUP}");
}

async fn join(client: &Client, to: BrokerId, member_id: &str) -> JoinGroupResponse {
    let request = Request::JoinGroup(JoinGroupRequest {
        group_id: GROUP.into(),
        session_timeout_ms: 30_000,
        rebalance_timeout_ms: 30_000,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        subscribed_topics: vec![TOPIC.into()],
        protocols: vec![JoinGroupProtocol {
            name: "server".into(),
            metadata: Bytes::new(),
        }],
    });
    match client.send(to, request).await.expect("join") {
        Response::JoinGroup(r) => r,
        other => panic!("{other:?}"),
    }
}

async fn commit(
    client: &Client,
    to: BrokerId,
    member: &str,
    generation: i32,
    base: i64,
) -> Vec<ErrorCode> {
    let request = Request::OffsetCommit(OffsetCommitRequest {
        group_id: GROUP.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        topics: vec![OffsetCommitTopic {
            name: TOPIC.into(),
            partitions: (0..6)
                .map(|p| OffsetCommitPartition {
                    partition: PartitionId(p),
                    committed_offset: Offset(base + i64::from(p)),
                    committed_leader_epoch: LeaderEpoch(-1),
                    committed_metadata: None,
                })
                .collect(),
        }],
    });
    match client.send(to, request).await.expect("commit") {
        Response::OffsetCommit(r) => r.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// The committed offsets, or the group-level error (NOT_COORDINATOR, loading...).
async fn committed(client: &Client, to: BrokerId) -> Result<Vec<i64>, ErrorCode> {
    let request = Request::OffsetFetch(OffsetFetchRequest {
        group_id: GROUP.into(),
        topics: Some(vec![TopicPartitions {
            topic: TOPIC.into(),
            partitions: (0..6).map(PartitionId).collect(),
        }]),
        require_stable: false,
    });
    match client.send(to, request).await {
        Ok(Response::OffsetFetch(r)) if r.error_code == ErrorCode::None => Ok(r.topics[0]
            .partitions
            .iter()
            .map(|p| p.committed_offset.0)
            .collect()),
        Ok(Response::OffsetFetch(r)) => Err(r.error_code),
        _ => Err(ErrorCode::NetworkException),
    }
}

async fn heartbeat(client: &Client, to: BrokerId, member: &str, generation: i32) -> ErrorCode {
    let request = Request::Heartbeat(HeartbeatRequest {
        group_id: GROUP.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
    });
    match client.send(to, request).await.expect("heartbeat") {
        Response::Heartbeat(r) => r.error_code,
        other => panic!("{other:?}"),
    }
}

/// Waits until every partition of `topic` has `n` replicas in sync.
async fn wait_isr(client: &Client, topic: &str, n: usize) {
    for _ in 0..600 {
        if let Ok(meta) = client.refresh_topic(topic).await {
            if meta.partitions.iter().all(|p| p.isr.len() == n) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{topic}: ISRs not full");
}

#[test]
fn a_new_coordinator_resumes_the_generation_and_the_committed_offsets() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cluster = rt.block_on(Cluster::start(3)).expect("cluster starts");
    let client = rt
        .block_on(Client::connect(ClientConfig {
            bootstrap: cluster.bootstrap_servers(),
            ..ClientConfig::default()
        }))
        .unwrap();
    rt.block_on(Admin::new(client.clone()).create_topic(NewTopic::new(TOPIC, 6, 3)))
        .unwrap();

    // The first FindCoordinator creates the coordinator partitions; then three replicas
    // of each, all in sync.
    rt.block_on(coordinator(&client));
    rt.block_on(wait_isr(&client, OFFSETS_TOPIC, 3));
    let (old, member, generation) = rt.block_on(async {
        // The broker FindCoordinator names may not have taken up its leadership yet
        // (NOT_COORDINATOR): find it again, as a client does.
        let (old, first) = loop {
            let old = coordinator(&client).await;
            let first = join(&client, old, "").await;
            if first.error_code != ErrorCode::NotCoordinator {
                break (old, first);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(first.error_code, ErrorCode::MemberIdRequired, "{first:?}");
        let joined = join(&client, old, &first.member_id).await;
        assert_eq!(joined.error_code, ErrorCode::None, "{joined:?}");
        let codes = commit(&client, old, &joined.member_id, joined.generation_id, 100).await;
        assert!(codes.iter().all(|c| *c == ErrorCode::None), "{codes:?}");
        (old, joined.member_id, joined.generation_id)
    });

    rt.block_on(cluster.kill(old.0));
    let new = rt.block_on(async {
        loop {
            let new = coordinator(&client).await;
            if new != old {
                return new;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut offsets = Err(ErrorCode::None);
    wait_until(
        "the new coordinator loads the group",
        Duration::from_secs(30),
        || {
            offsets = rt.block_on(committed(&client, new));
            offsets.is_ok()
        },
    );
    assert_eq!(offsets.unwrap(), (100..106).collect::<Vec<i64>>());
    rt.block_on(async {
        assert_eq!(
            heartbeat(&client, new, &member, generation).await,
            ErrorCode::None
        );
        let codes = commit(&client, new, &member, generation, 200).await;
        assert!(codes.iter().all(|c| *c == ErrorCode::None), "{codes:?}");
        assert_eq!(committed(&client, new).await.unwrap()[0], 200);
    });

    // The old coordinator comes back as a follower of the partition and sends clients on.
    rt.block_on(cluster.restart(old.0))
        .expect("the old coordinator restarts");
    rt.block_on(wait_isr(&client, OFFSETS_TOPIC, 3));
    assert_eq!(
        rt.block_on(committed(&client, old)),
        Err(ErrorCode::NotCoordinator)
    );
}
