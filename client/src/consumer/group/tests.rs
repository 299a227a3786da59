//! The group side of the consumer: which offsets a commit sends, where new partitions
//! start, and what a revoke does to buffered records. Against the fake broker (whose
//! coordinator stores commits but has no membership: a member's generation is set up by
//! hand here; joins and rebalances are tested against real brokers in
//! `integration-tests/tests/groups.rs`).

use std::time::Duration;

use super::*;
use crate::testing::FakeBroker;
use crate::{PartitionId, Producer, ProducerConfig, ProducerRecord};

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, PartitionId(partition))
}

fn state(position: i64, reset: Option<OffsetSpec>) -> PartitionState {
    let mut s = PartitionState::new(position, -1);
    s.reset = reset;
    s
}

#[test]
fn a_commit_sends_the_positions_that_moved_and_are_known() {
    let partitions: BTreeMap<TopicPartition, PartitionState> = [
        (tp("a", 0), state(5, None)),
        (tp("a", 1), state(3, None)),
        (tp("b", 0), state(-1, Some(OffsetSpec::Earliest))),
        (tp("b", 1), state(0, None)),
    ]
    .into_iter()
    .collect();
    let committed: CommitOffsets = [(tp("a", 1), 3), (tp("b", 1), 7)].into_iter().collect();
    // a/1 did not move; b/0's position is still being looked up; b/1 went back (a seek):
    // that is committed too, as Kafka does.
    assert_eq!(
        consumed_offsets(&partitions, &committed),
        [(tp("a", 0), 5), (tp("b", 1), 0)].into_iter().collect()
    );
}

#[test]
fn explicit_commits_must_be_of_owned_partitions_and_valid_offsets() {
    let owned: BTreeMap<TopicPartition, PartitionState> =
        [(tp("a", 0), state(5, None))].into_iter().collect();
    let check = |offsets: &[(TopicPartition, i64)]| {
        check_explicit(&offsets.iter().cloned().collect(), &owned)
    };
    assert!(check(&[(tp("a", 0), 9)]).is_ok());
    assert_eq!(
        check(&[(tp("a", 1), 9)]),
        Err(Error::NotAssigned {
            topic: "a".into(),
            partition: PartitionId(1)
        })
    );
    assert!(matches!(
        check(&[(tp("a", 0), -1)]),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn new_partitions_start_at_the_committed_offset_else_as_reset_says() {
    let assignment = [tp("a", 0), tp("a", 1)];
    let committed: CommitOffsets = [(tp("a", 1), 42)].into_iter().collect();
    let (partitions, missing) = starting_positions(&assignment, &committed, OffsetReset::Earliest);
    assert_eq!(missing, None);
    let a0 = &partitions[&tp("a", 0)];
    assert_eq!((a0.position, a0.reset), (-1, Some(OffsetSpec::Earliest)));
    let a1 = &partitions[&tp("a", 1)];
    assert_eq!((a1.position, a1.reset), (42, None));
    // Consumed up to there: a leader answering OFFSET_OUT_OF_RANGE at 42 is waited out.
    assert_eq!(a1.confirmed_end, 42);
    let (_, missing) = starting_positions(&assignment, &committed, OffsetReset::None);
    assert_eq!(missing, Some(tp("a", 0)));
}

async fn produce(client: &Client, topic: &str, values: &[&str]) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for v in values {
        let record = ProducerRecord::new(topic, v.to_string()).partition(PartitionId(0));
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    for d in deliveries {
        d.await.unwrap();
    }
}

/// A consumer of group `g` (auto-commit as given) that has assigned itself t/0 from the
/// start, and has been returned the first 2 of the 5 records there (the other 3 are
/// buffered).
async fn two_of_five(broker: &FakeBroker, auto_commit: bool) -> Consumer {
    let client = Client::connect(broker.config()).await.unwrap();
    produce(&client, "t", &["a", "b", "c", "d", "e"]).await;
    let config = ConsumerConfig {
        max_poll_records: 2,
        fetch_max_wait: Duration::from_millis(50),
        ..ConsumerConfig::default()
    };
    let group = GroupConfig {
        enable_auto_commit: auto_commit,
        auto_commit_interval: Duration::from_secs(3600),
        ..GroupConfig::new("g")
    };
    let mut consumer = Consumer::with_group(client, config, group).unwrap();
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        got = consumer.poll(Duration::from_secs(5)).await.unwrap();
    }
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1]);
    assert_eq!(
        consumer
            .buffered
            .iter()
            .map(|b| b.records.len())
            .sum::<usize>(),
        3
    );
    consumer
}

/// A commit as the fake coordinator read it: generation, member, (partition, offset)s.
type Commit = (i32, String, Vec<(i32, i64)>);

/// The commits the fake coordinator read.
fn commits(broker: &FakeBroker) -> Vec<Commit> {
    broker
        .state()
        .offset_commits
        .iter()
        .map(|c| {
            let offsets = c
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (p.partition.0, p.committed_offset.0))
                })
                .collect();
            (c.generation_id, c.member_id.clone(), offsets)
        })
        .collect()
}

#[tokio::test]
async fn commit_sends_what_poll_returned_not_what_was_prefetched() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    let mut consumer = two_of_five(&broker, false).await;
    consumer.commit().await.unwrap();
    // Nothing moved since: no second request.
    consumer.commit().await.unwrap();
    assert_eq!(commits(&broker), vec![(-1, String::new(), vec![(0, 2)])]);
    assert_eq!(
        consumer.committed(&[tp("t", 0), tp("t", 1)]).await.unwrap(),
        [(tp("t", 0), 2)].into_iter().collect()
    );
    let e = consumer
        .commit_offsets([(tp("t", 1), 1)].into_iter().collect())
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::NotAssigned {
            topic: "t".into(),
            partition: PartitionId(1)
        }
    );
    // A simple commit refused because the group has members.
    broker
        .state()
        .commit_errors
        .push_back(sluice_protocol::ErrorCode::UnknownMemberId);
    let e = consumer
        .commit_offsets([(tp("t", 0), 1)].into_iter().collect())
        .await
        .unwrap_err();
    assert_eq!(e, Error::GroupNotEmpty { group: "g".into() });
}

#[tokio::test]
async fn a_commit_rides_out_a_coordinator_that_moved() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let mut consumer = two_of_five(&broker, false).await;
    broker.state().commit_errors.extend([
        sluice_protocol::ErrorCode::NotCoordinator,
        sluice_protocol::ErrorCode::CoordinatorLoadInProgress,
    ]);
    consumer.commit().await.unwrap();
    assert_eq!(commits(&broker).len(), 3);
    assert_eq!(
        broker.state().group_offsets[&("g".into(), "t".into(), 0)],
        2
    );
    // NOT_COORDINATOR made the consumer look the coordinator up again.
    assert_eq!(
        broker.state().requests_to(
            sluice_protocol::BrokerId(1),
            sluice_protocol::ApiKey::FindCoordinator
        ),
        2
    );
}

/// Makes the consumer a member of generation 5 of its group as "m", owning what it has
/// assigned itself, as a join would have.
fn make_member(consumer: &mut Consumer) {
    let group = consumer.group.as_mut().unwrap();
    group.subscription = Some(Arc::new(MemberParams {
        config: group.config.clone(),
        topics: vec!["t".into()],
        require_stable: false,
    }));
    group.generation = Some(Generation {
        generation_id: 5,
        member_id: "m".into(),
    });
    group.member_id.set("m");
    group.phase = Phase::Stable;
}

fn signal(consumer: &Consumer, reason: Rejoin) {
    let group = consumer.group.as_ref().unwrap();
    Rejoin::signal(&group.rejoin_tx, 5, reason);
}

#[tokio::test]
async fn a_revoke_commits_what_was_returned_and_drops_what_was_buffered() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let mut consumer = two_of_five(&broker, true).await;
    make_member(&mut consumer);
    signal(&consumer, Rejoin::Rebalance);
    let event = consumer.poll_event(Duration::ZERO).await.unwrap();
    assert_eq!(event, ConsumerEvent::PartitionsRevoked(vec![tp("t", 0)]));
    assert!(consumer.buffered.is_empty(), "buffered records dropped");
    assert_eq!(consumer.position("t", PartitionId(0)), Some(2));
    assert_eq!(commits(&broker), vec![(5, "m".to_owned(), vec![(0, 2)])]);
    // Until the next poll the partition is still this member's: it may commit more.
    consumer
        .commit_offsets([(tp("t", 0), 1)].into_iter().collect())
        .await
        .unwrap();
    assert_eq!(commits(&broker)[1], (5, "m".to_owned(), vec![(0, 1)]));
}

#[tokio::test]
async fn a_fenced_member_loses_its_partitions_and_cannot_commit() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let mut consumer = two_of_five(&broker, true).await;
    make_member(&mut consumer);
    signal(&consumer, Rejoin::UnknownMember);
    let event = consumer.poll_event(Duration::ZERO).await.unwrap();
    assert_eq!(event, ConsumerEvent::PartitionsLost(vec![tp("t", 0)]));
    assert!(consumer.buffered.is_empty());
    assert_eq!(
        consumer.commit().await.unwrap_err(),
        Error::Fenced {
            group: "g".into(),
            code: sluice_protocol::ErrorCode::UnknownMemberId
        }
    );
    assert!(
        commits(&broker).is_empty(),
        "a lost partition is never committed"
    );
    assert_eq!(consumer.group.as_ref().unwrap().member_id.get(), "");
}

#[tokio::test]
async fn a_refused_auto_commit_makes_the_member_rejoin() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let mut consumer = two_of_five(&broker, true).await;
    make_member(&mut consumer);
    broker
        .state()
        .commit_errors
        .push_back(sluice_protocol::ErrorCode::IllegalGeneration);
    let group = consumer.group.as_mut().unwrap();
    group.next_auto_commit = Instant::now();
    // This poll starts the auto-commit; a later one learns of the refusal.
    let mut event = consumer.poll_event(Duration::ZERO).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(event, ConsumerEvent::PartitionsLost(_)) {
        assert!(
            Instant::now() < deadline,
            "no PartitionsLost after a fenced commit"
        );
        event = consumer
            .poll_event(Duration::from_millis(10))
            .await
            .unwrap();
    }
    assert_eq!(commits(&broker), vec![(5, "m".to_owned(), vec![(0, 2)])]);
}

#[tokio::test]
async fn close_commits_with_auto_commit() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let consumer = two_of_five(&broker, true).await;
    consumer.close().await.unwrap();
    assert_eq!(commits(&broker), vec![(-1, String::new(), vec![(0, 2)])]);
}

#[tokio::test]
async fn subscribing_needs_a_group_and_excludes_assigning() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = Client::connect(broker.config()).await.unwrap();
    let mut plain = Consumer::new(client.clone(), ConsumerConfig::default());
    assert_eq!(plain.subscribe(["t"]), Err(Error::NoGroup));
    assert_eq!(plain.commit().await, Err(Error::NoGroup));
    let mut assigned = two_of_five(&broker, false).await;
    assert!(matches!(
        assigned.subscribe(["t"]),
        Err(Error::InvalidArgument(_))
    ));
    let mut subscribed =
        Consumer::with_group(client, ConsumerConfig::default(), GroupConfig::new("g2")).unwrap();
    subscribed.subscribe(["t"]).unwrap();
    let e = subscribed
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}
