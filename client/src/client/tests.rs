//! The client core against the fake cluster of `crate::testing`: where requests any broker
//! can answer go when brokers die or hang, and offset lookups across a leader change.

use super::*;
use crate::testing::FakeCluster;
use sluice_protocol::ApiKey;

/// A request timeout no test waits for: a test that needed it would hit its failure
/// bound first.
const NEVER: Duration = Duration::from_secs(600);
/// Failure bound of each step of these tests; far above what any step takes.
const BOUND: Duration = Duration::from_secs(60);

fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {} s", BOUND.as_secs()))
}

#[tokio::test]
async fn a_dead_bootstrap_address_is_skipped_and_all_dead_names_them_all() {
    let cluster = FakeCluster::start(1, &[]).await;
    let dead = closed_port();
    let config = ClientConfig {
        bootstrap: vec![dead.clone(), cluster.addr(1)],
        ..cluster.config()
    };
    let client = bounded("connect", Client::connect(config)).await.unwrap();
    let (_, _, brokers) = client.brokers().await.unwrap();
    assert_eq!(brokers.len(), 1);

    let other = closed_port();
    let config = ClientConfig {
        bootstrap: vec![dead.clone(), other.clone()],
        ..ClientConfig::default()
    };
    let e = Client::connect(config).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot connect to {dead}, {other}: connection refused; is sluice-broker running there?"
        )
    );
}

#[tokio::test]
async fn a_hung_bootstrap_broker_does_not_stall_the_first_metadata_request() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    cluster.hang(1);
    let config = ClientConfig {
        bootstrap: vec![cluster.addr(1), cluster.addr(2)],
        request_timeout: NEVER,
        ..cluster.config()
    };
    let client = bounded("connect", Client::connect(config)).await.unwrap();
    let topic = bounded("metadata", client.refresh_topic("t"))
        .await
        .unwrap();
    assert_eq!(topic.partitions[0].replicas, vec![BrokerId(1), BrokerId(2)]);
}

#[tokio::test]
async fn metadata_falls_over_when_the_broker_that_answered_last_dies_or_hangs() {
    let cluster = FakeCluster::start(3, &[("t", 1, 3)]).await;
    let config = ClientConfig {
        request_timeout: NEVER,
        ..cluster.config()
    };
    let client = Client::connect(config).await.unwrap();
    // Broker 1 answered first (the bootstrap list's first); kill it.
    assert_eq!(
        cluster.state().requests_to(BrokerId(1), ApiKey::Metadata),
        1
    );
    cluster.kill(1);
    bounded("refresh after a kill", client.refresh_topic("t"))
        .await
        .unwrap();
    // Whichever answered now, hang it too: the third one answers.
    let answered =
        |cluster: &FakeCluster, id| cluster.state().requests_to(BrokerId(id), ApiKey::Metadata);
    let next = if answered(&cluster, 2) > 0 { 2 } else { 3 };
    cluster.hang(next);
    bounded("refresh after a hang", client.refresh_topic("t"))
        .await
        .unwrap();
    let last = 5 - next;
    assert!(answered(&cluster, last) > 0, "broker {last} answered");
}

#[tokio::test]
async fn brokers_that_failed_are_asked_last() {
    let cluster = FakeCluster::start(3, &[]).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    let order = |client: &Client| -> Vec<String> {
        client.candidates().into_iter().map(|c| c.address).collect()
    };
    assert_eq!(
        order(&client),
        vec![cluster.addr(1), cluster.addr(2), cluster.addr(3)]
    );
    client.note_failure(&cluster.addr(1));
    client.note_failure(&cluster.addr(2));
    assert_eq!(
        order(&client),
        vec![cluster.addr(3), cluster.addr(1), cluster.addr(2)]
    );
    client.note_success(&cluster.addr(1));
    assert_eq!(
        order(&client),
        vec![cluster.addr(1), cluster.addr(3), cluster.addr(2)]
    );
}

#[tokio::test]
async fn offset_lookups_follow_a_leader_that_moved_with_its_new_epoch() {
    let cluster = FakeCluster::start(3, &[("t", 2, 3)]).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    client.topic_metadata("t").await.unwrap();
    // Partition 0 (led by 1) moves to 2 and broker 1 dies; partition 1 (led by 2) gets a
    // new epoch under the same leader. The client's cache knows neither.
    cluster.kill(1);
    cluster.fail_over(1);
    cluster.state().move_leader("t", 1, BrokerId(2));
    let offsets = bounded(
        "lookup",
        client.list_offsets("t", &[(PartitionId(0), -1), (PartitionId(1), -1)]),
    )
    .await
    .unwrap();
    assert_eq!(
        offsets,
        vec![(PartitionId(0), Ok(0)), (PartitionId(1), Ok(0))]
    );
    let state = cluster.state();
    let last = |n: usize| state.epochs_seen[state.epochs_seen.len() - n];
    // The last two lookups went to broker 2 with the epochs of the new metadata.
    let mut tail = vec![last(1), last(2)];
    tail.sort_by_key(|(_, _, e)| *e);
    assert_eq!(
        tail,
        vec![
            (BrokerId(2), ApiKey::ListOffsets, LeaderEpoch(1)),
            (BrokerId(2), ApiKey::ListOffsets, LeaderEpoch(1)),
        ]
    );
}

#[tokio::test]
async fn a_lookup_that_keeps_failing_returns_the_partitions_last_error() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let client = Client::connect(cluster.config()).await.unwrap();
    cluster.state().move_leader("t", 0, BrokerId::NONE);
    let offsets = bounded(
        "lookup",
        client.list_offsets_with(
            "t",
            &[(PartitionId(0), -1)],
            2,
            sluice_protocol::messages::IsolationLevel::ReadUncommitted,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        offsets,
        vec![(PartitionId(0), Err(leaderless("t", PartitionId(0))))]
    );
}
