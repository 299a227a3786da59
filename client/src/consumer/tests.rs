//! The consumer against the fake broker of `crate::testing`.

use std::time::Duration;

use super::*;
use crate::testing::{FakeBroker, FakeCluster};
use crate::{Producer, ProducerConfig, ProducerRecord};
use sluice_protocol::ApiKey;

async fn client(broker: &FakeBroker) -> Client {
    Client::connect(broker.config()).await.unwrap()
}

/// Produces `values` to `topic`/`partition`, in one batch, and waits for them.
async fn produce(client: &Client, topic: &str, partition: i32, values: &[&str]) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut deliveries = Vec::new();
    for v in values {
        let record = ProducerRecord::new(topic, v.to_string()).partition(PartitionId(partition));
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    for d in deliveries {
        d.await.unwrap();
    }
}

/// Polls until `n` records arrived (or 5 s passed).
async fn poll_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

fn values(records: &[ConsumerRecord]) -> Vec<(i32, i64, String)> {
    records
        .iter()
        .map(|r| {
            let value = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
            (r.partition.0, r.offset, value)
        })
        .collect()
}

fn consumer(client: &Client) -> Consumer {
    Consumer::new(
        client.clone(),
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(50),
            retry_backoff: Duration::from_millis(10),
            ..ConsumerConfig::default()
        },
    )
}

#[tokio::test]
async fn reads_every_partition_from_the_beginning_in_order() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    let client = client(&broker).await;
    produce(&client, "t", 0, &["a", "b", "c"]).await;
    produce(&client, "t", 1, &["x"]).await;
    produce(&client, "t", 0, &["d"]).await;
    let mut consumer = consumer(&client);
    consumer
        .assign(vec![
            ("t".into(), PartitionId(0), OffsetSpec::Earliest),
            ("t".into(), PartitionId(1), OffsetSpec::Earliest),
        ])
        .await
        .unwrap();
    let mut got = values(&poll_n(&mut consumer, 5).await);
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, 0, "a".into()),
            (0, 1, "b".into()),
            (0, 2, "c".into()),
            (0, 3, "d".into()),
            (1, 0, "x".into())
        ]
    );
    assert_eq!(consumer.position("t", PartitionId(0)), Some(4));
    assert_eq!(consumer.position("t", PartitionId(1)), Some(1));
    assert!(consumer
        .poll(Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn latest_sees_only_new_records() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = client(&broker).await;
    produce(&client, "t", 0, &["old"]).await;
    let mut consumer = consumer(&client);
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Latest)])
        .await
        .unwrap();
    assert_eq!(consumer.position("t", PartitionId(0)), Some(1));
    assert!(consumer
        .poll(Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    produce(&client, "t", 0, &["new"]).await;
    assert_eq!(
        values(&poll_n(&mut consumer, 1).await),
        vec![(0, 1, "new".into())]
    );
}

#[tokio::test]
async fn an_offset_inside_a_batch_skips_the_records_before_it() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = client(&broker).await;
    produce(&client, "t", 0, &["0", "1", "2", "3", "4", "5"]).await;
    assert_eq!(broker.state().batches("t", 0).len(), 1, "one batch");
    let mut consumer = consumer(&client);
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Offset(4))])
        .await
        .unwrap();
    assert_eq!(
        values(&poll_n(&mut consumer, 2).await),
        vec![(0, 4, "4".into()), (0, 5, "5".into())]
    );
    // Seek back and read again.
    consumer
        .seek("t", PartitionId(0), OffsetSpec::Offset(1))
        .await
        .unwrap();
    let again = poll_n(&mut consumer, 5).await;
    assert_eq!(again.first().map(|r| r.offset), Some(1));
    assert_eq!(again.len(), 5);
}

#[tokio::test]
async fn max_poll_records_bounds_each_poll() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = client(&broker).await;
    let values_in: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = values_in.iter().map(String::as_str).collect();
    produce(&client, "t", 0, &refs).await;
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            max_poll_records: 4,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap();
    let mut sizes = Vec::new();
    let mut offsets = Vec::new();
    while offsets.len() < 10 {
        let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
        assert!(!records.is_empty());
        sizes.push(records.len());
        offsets.extend(records.iter().map(|r| r.offset));
    }
    assert_eq!(sizes, vec![4, 4, 2]);
    assert_eq!(offsets, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn out_of_range_positions_reset_as_configured() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = client(&broker).await;
    produce(&client, "t", 0, &["a", "b"]).await;
    for (reset, expected) in [
        (OffsetReset::Earliest, Some(0)),
        (OffsetReset::Latest, None),
    ] {
        let mut consumer = Consumer::new(
            client.clone(),
            ConsumerConfig {
                auto_offset_reset: reset,
                ..ConsumerConfig::default()
            },
        );
        consumer
            .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Offset(100))])
            .await
            .unwrap();
        let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
        let records = if records.is_empty() {
            consumer.poll(Duration::from_millis(500)).await.unwrap()
        } else {
            records
        };
        assert_eq!(records.first().map(|r| r.offset), expected, "{reset:?}");
        assert_eq!(consumer.position("t", PartitionId(0)), Some(2), "{reset:?}");
    }
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::None,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Offset(100))])
        .await
        .unwrap();
    let e = consumer.poll(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "offset 100 is out of range for t/0 (the log holds 0 to 2); seek to a valid offset"
    );
}

#[tokio::test]
async fn leadership_errors_are_retried() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = client(&broker).await;
    produce(&client, "t", 0, &["a"]).await;
    broker
        .state()
        .fetch_errors
        .extend([ErrorCode::NotLeaderOrFollower, ErrorCode::FencedLeaderEpoch]);
    let mut consumer = consumer(&client);
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap();
    assert_eq!(
        values(&poll_n(&mut consumer, 1).await),
        vec![(0, 0, "a".into())]
    );
    assert!(broker.state().fetch_requests >= 3);
}

#[tokio::test]
async fn a_non_retriable_fetch_error_reaches_the_caller() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = client(&broker).await;
    broker
        .state()
        .fetch_errors
        .push_back(ErrorCode::KafkaStorageError);
    broker
        .state()
        .fetch_errors
        .push_back(ErrorCode::InvalidFetchSize);
    let mut consumer = consumer(&client);
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap();
    let e = consumer.poll(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidFetchSize));
}

#[tokio::test]
async fn timestamps_resolve_to_the_first_record_at_or_after_them() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = client(&broker).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for (i, ts) in [1_000, 2_000, 3_000].into_iter().enumerate() {
        let mut record = ProducerRecord::new("t", i.to_string());
        record.timestamp_ms = Some(ts);
        producer.send(record).await.unwrap();
    }
    producer.flush().await;
    let mut consumer = consumer(&client);
    let assign = |ts| vec![("t".to_owned(), PartitionId(0), OffsetSpec::Timestamp(ts))];
    consumer.assign(assign(1_500)).await.unwrap();
    assert_eq!(consumer.position("t", PartitionId(0)), Some(1));
    let records = poll_n(&mut consumer, 2).await;
    assert_eq!(
        records.iter().map(|r| r.timestamp_ms).collect::<Vec<_>>(),
        vec![2_000, 3_000]
    );
    // After the last record: the end of the log.
    consumer.assign(assign(9_000)).await.unwrap();
    assert_eq!(consumer.position("t", PartitionId(0)), Some(3));
}

#[tokio::test]
async fn assigning_what_does_not_exist_fails() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let client = client(&broker).await;
    let mut consumer = consumer(&client);
    let e = consumer
        .assign(vec![("nope".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::UnknownTopic {
            topic: "nope".into()
        }
    );
    let e = consumer
        .assign(vec![("t".into(), PartitionId(1), OffsetSpec::Earliest)])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownPartition { .. }), "{e}");
    let e = consumer
        .seek("t", PartitionId(0), OffsetSpec::Earliest)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotAssigned { .. }), "{e}");
}

/// Failure bound of each step of the failover tests; far above what any step takes.
const BOUND: Duration = Duration::from_secs(60);

async fn cluster_client(cluster: &FakeCluster) -> Client {
    Client::connect(cluster.config()).await.unwrap()
}

/// Polls until `n` records arrived; panics after [`BOUND`]. Every poll must succeed.
async fn poll_exactly(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + BOUND;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records",
            out.len()
        );
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

async fn assigned(client: &Client, reset: OffsetReset) -> Consumer {
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: reset,
            ..consumer(client).config
        },
    );
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap();
    consumer
}

#[tokio::test]
async fn a_killed_leader_hands_over_at_the_same_position() {
    let cluster = FakeCluster::start(3, &[("t", 1, 3)]).await;
    let client = cluster_client(&cluster).await;
    produce(&client, "t", 0, &["a", "b", "c"]).await;
    let mut consumer = assigned(&client, OffsetReset::Earliest).await;
    let mut got = poll_exactly(&mut consumer, 3).await;
    cluster.kill(1);
    cluster.fail_over(1);
    produce(&client, "t", 0, &["d", "e"]).await;
    got.extend(poll_exactly(&mut consumer, 2).await);
    assert_eq!(
        values(&got),
        vec![
            (0, 0, "a".into()),
            (0, 1, "b".into()),
            (0, 2, "c".into()),
            (0, 3, "d".into()),
            (0, 4, "e".into())
        ]
    );
    assert_eq!(consumer.position("t", PartitionId(0)), Some(5));
    // The new leader was asked with the new epoch.
    assert!(cluster
        .state()
        .epochs_seen
        .contains(&(BrokerId(2), ApiKey::Fetch, LeaderEpoch(1))));
}

#[tokio::test]
async fn a_stale_leader_epoch_is_fenced_then_refreshed() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let client = cluster_client(&cluster).await;
    produce(&client, "t", 0, &["a"]).await;
    let mut consumer = assigned(&client, OffsetReset::None).await;
    poll_exactly(&mut consumer, 1).await;
    // A new epoch under the same leader; the consumer's metadata still says epoch 0.
    cluster.state().move_leader("t", 0, BrokerId(1));
    produce(&client, "t", 0, &["b"]).await;
    let got = poll_exactly(&mut consumer, 1).await;
    assert_eq!(values(&got), vec![(0, 1, "b".into())]);
    let state = cluster.state();
    let fetches: Vec<LeaderEpoch> = state
        .epochs_seen
        .iter()
        .filter(|(_, api, _)| *api == ApiKey::Fetch)
        .map(|(_, _, e)| *e)
        .collect();
    // Epoch 0 until fenced, epoch 1 after the refresh, never back.
    let first_new = fetches.iter().position(|e| *e == LeaderEpoch(1)).unwrap();
    assert!(fetches[..first_new].iter().all(|e| *e == LeaderEpoch(0)));
    assert!(fetches[first_new..].iter().all(|e| *e == LeaderEpoch(1)));
}

#[tokio::test]
async fn poll_does_not_fail_while_no_broker_answers() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let client = cluster_client(&cluster).await;
    let mut consumer = assigned(&client, OffsetReset::None).await;
    cluster.kill(1);
    cluster.kill(2);
    for _ in 0..3 {
        let records = consumer.poll(Duration::from_millis(300)).await.unwrap();
        assert!(records.is_empty());
    }
    assert_eq!(consumer.position("t", PartitionId(0)), Some(0));
}

#[tokio::test]
async fn a_new_leader_that_has_not_caught_up_is_waited_for_not_reset_to() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let client = cluster_client(&cluster).await;
    produce(&client, "t", 0, &["a", "b", "c"]).await;
    // Earliest would re-read a, b and c if the position were reset.
    let mut consumer = assigned(&client, OffsetReset::Earliest).await;
    let mut got = poll_exactly(&mut consumer, 3).await;
    // The new leader's high watermark is at 1, below the consumer's position 3.
    cluster.kill(1);
    cluster.fail_over(1);
    cluster.state().topics.get_mut("t").unwrap().partitions[0].hw_lag = 2;
    let fetches_from_2 = |cluster: &FakeCluster| {
        let state = cluster.state();
        state
            .epochs_seen
            .iter()
            .filter(|(b, api, _)| *b == BrokerId(2) && *api == ApiKey::Fetch)
            .count()
    };
    // Poll through a few out-of-range answers: nothing new, and the position holds.
    let deadline = Instant::now() + BOUND;
    while fetches_from_2(&cluster) < 3 {
        assert!(Instant::now() < deadline, "the new leader was never asked");
        let records = consumer.poll(Duration::from_millis(100)).await.unwrap();
        assert!(records.is_empty(), "{:?}", values(&records));
        assert_eq!(consumer.position("t", PartitionId(0)), Some(3));
    }
    // Caught up, and a new record arrives.
    cluster.state().topics.get_mut("t").unwrap().partitions[0].hw_lag = 0;
    produce(&client, "t", 0, &["d"]).await;
    got.extend(poll_exactly(&mut consumer, 4 - got.len()).await);
    assert_eq!(
        values(&got),
        vec![
            (0, 0, "a".into()),
            (0, 1, "b".into()),
            (0, 2, "c".into()),
            (0, 3, "d".into())
        ]
    );
}

#[tokio::test]
async fn a_leaderless_partition_waits_for_its_election() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let client = cluster_client(&cluster).await;
    let mut consumer = assigned(&client, OffsetReset::None).await;
    cluster.kill(1);
    cluster.state().move_leader("t", 0, BrokerId::NONE);
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    cluster.state().move_leader("t", 0, BrokerId(2));
    produce(&client, "t", 0, &["a"]).await;
    let got = poll_exactly(&mut consumer, 1).await;
    assert_eq!(values(&got), vec![(0, 0, "a".into())]);
}

#[tokio::test]
async fn a_topic_that_stays_missing_fails_poll_after_the_wait() {
    let cluster = FakeCluster::start(1, &[("t", 1, 1)]).await;
    let client = cluster_client(&cluster).await;
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            unknown_topic_wait: Duration::from_millis(300),
            ..consumer(&client).config
        },
    );
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap();
    cluster.state().topics.remove("t");
    let deadline = Instant::now() + BOUND;
    let e = loop {
        assert!(Instant::now() < deadline, "poll never failed");
        match consumer.poll(Duration::from_millis(100)).await {
            Ok(records) => assert!(records.is_empty()),
            Err(e) => break e,
        }
    };
    assert_eq!(e, Error::UnknownTopic { topic: "t".into() });
}

#[tokio::test]
async fn a_confirmed_position_the_log_really_lost_is_reset_after_the_wait() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let client = cluster_client(&cluster).await;
    produce(&client, "t", 0, &["a", "b", "c"]).await;
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::None,
            leader_catch_up_wait: Duration::from_millis(300),
            ..consumer(&client).config
        },
    );
    consumer
        .assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)])
        .await
        .unwrap();
    poll_exactly(&mut consumer, 3).await;
    // An unclean election: the new leader never gets past offset 1.
    cluster.kill(1);
    cluster.fail_over(1);
    cluster.state().topics.get_mut("t").unwrap().partitions[0].hw_lag = 2;
    let deadline = Instant::now() + BOUND;
    let e = loop {
        assert!(Instant::now() < deadline, "poll never failed");
        match consumer.poll(Duration::from_millis(100)).await {
            Ok(records) => assert!(records.is_empty()),
            Err(e) => break e,
        }
    };
    assert_eq!(
        e.to_string(),
        "offset 3 is out of range for t/0 (the log holds 0 to 1); seek to a valid offset"
    );
}

/// The offsets of data batches a read_committed reader keeps from `batches` (base
/// offset, producer, kind) given the fetch's `aborted` transactions.
fn kept_by_abort_filter(
    batches: &[(i64, i64, Option<ControlType>)],
    aborted: &[(i64, i64)],
) -> Vec<i64> {
    use sluice_protocol::batch::{set_base_offset, BatchBuilder, ProducerStamp};
    let mut filter = AbortFilter::new(
        aborted
            .iter()
            .map(|&(producer_id, first)| AbortedTransaction {
                producer_id,
                first_offset: Offset(first),
            })
            .collect(),
    );
    let mut kept = Vec::new();
    for &(base, producer_id, kind) in batches {
        let bytes = match kind {
            Some(kind) => ControlMarker {
                kind,
                coordinator_epoch: 0,
            }
            .batch(producer_id, 0, 0),
            None => {
                let stamp = ProducerStamp {
                    producer_id,
                    producer_epoch: 0,
                    base_sequence: 0,
                };
                let mut builder = BatchBuilder::with_capacity(stamp, 0).transactional();
                builder.append(0, None, Some(b"v"), &[]);
                builder.build()
            }
        };
        let mut bytes = bytes::BytesMut::from(&bytes[..]);
        set_base_offset(&mut bytes, Offset(base));
        let batch = RecordBatch::validate(bytes.freeze()).unwrap();
        if !filter.skips(&batch) && !batch.header().is_control() {
            kept.push(base);
        }
    }
    kept
}

#[test]
fn read_committed_skips_the_batches_of_aborted_transactions_up_to_their_markers() {
    use ControlType::{Abort, Commit};
    // Producer 1 aborts at 3 and again at 6 (a second transaction from 4); producer 2's
    // transaction in between commits at 7.
    let batches = [
        (0, 1, None),
        (1, 1, None),
        (2, 2, None),
        (3, 1, Some(Abort)),
        (4, 1, None),
        (5, 1, None),
        (6, 1, Some(Abort)),
        (7, 2, Some(Commit)),
        (8, 1, None),
    ];
    assert_eq!(
        kept_by_abort_filter(&batches, &[(1, 0), (1, 4)]),
        [2, 8],
        "producer 1's batch at 8 is a new transaction, not aborted"
    );
    assert_eq!(
        kept_by_abort_filter(&batches, &[]),
        [0, 1, 2, 4, 5, 8],
        "without aborted transactions only markers are left out"
    );
    // Fetched from 4: only the second abort is named.
    assert_eq!(kept_by_abort_filter(&batches[4..], &[(1, 4)]), [8]);
}
