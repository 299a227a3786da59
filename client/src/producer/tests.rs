//! The producer against the fake broker of `crate::testing`.

use std::future::Future;
use std::time::Duration;

use super::*;
use crate::testing::{FakeBroker, FakeCluster};
use crate::{ClientConfig, RecordMetadata};

async fn producer(broker: &FakeBroker, config: ProducerConfig) -> Producer {
    let client = Client::connect(broker.config()).await.unwrap();
    Producer::new(client, config)
}

#[tokio::test]
async fn keyed_records_land_on_kafkas_partition_with_contiguous_offsets() {
    let broker = FakeBroker::start(&[("t", 3)]).await;
    let producer = producer(&broker, ProducerConfig::default()).await;
    let mut deliveries = Vec::new();
    for i in 0..60 {
        let key = format!("key-{}", i % 7);
        let record = ProducerRecord::new("t", format!("v{i}")).key(key.clone());
        deliveries.push((key, i, producer.send(record).await.unwrap()));
    }
    producer.flush().await;
    let mut next_offset = [0i64; 3];
    for (key, i, delivery) in deliveries {
        let metadata = delivery.await.unwrap();
        assert_eq!(
            metadata.partition,
            partition_for_key(key.as_bytes(), 3),
            "{key}"
        );
        let p = metadata.partition.0 as usize;
        // Per partition, offsets follow send order with no gap.
        assert_eq!(metadata.offset, next_offset[p], "record {i}");
        next_offset[p] += 1;
        let state = broker.state();
        let stored = &state.values("t", p)[metadata.offset as usize];
        assert_eq!(stored.1, Bytes::from(format!("v{i}")));
    }
    assert_eq!(next_offset.iter().sum::<i64>(), 60);
}

/// A client whose metadata is old after 50 ms, and a producer on it.
async fn refreshing_every_50ms(broker: &FakeBroker) -> (Client, Producer) {
    let client = Client::connect(ClientConfig {
        metadata_max_age: Duration::from_millis(50),
        ..broker.config()
    })
    .await
    .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    (client, producer)
}

#[tokio::test]
async fn partitions_added_to_a_topic_are_used_once_the_metadata_is_refreshed() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let (client, producer) = refreshing_every_50ms(&broker).await;
    let send = |key: String| {
        let producer = producer.clone();
        async move {
            let delivery = producer
                .send(ProducerRecord::new("t", "v").key(key))
                .await
                .unwrap();
            producer.flush().await;
            delivery.await.unwrap().partition
        }
    };
    assert_eq!(send("k".into()).await, PartitionId(0));
    broker.state().add_partitions("t", 3);
    bounded("the grown topic's metadata", async {
        while client.cached_topic("t").unwrap().n_partitions() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // A batch sent with metadata older than metadata_max_age starts the refresh.
            send("k".into()).await;
        }
    })
    .await;
    let key = (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| partition_for_key(k.as_bytes(), 3) == PartitionId(2))
        .unwrap();
    assert_eq!(send(key).await, PartitionId(2));
}

#[tokio::test]
async fn a_record_for_a_partition_added_since_the_metadata_was_fetched_gets_there_once_it_is_refreshed(
) {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let (_client, producer) = refreshing_every_50ms(&broker).await;
    let first = producer.send(ProducerRecord::new("t", "v")).await.unwrap();
    producer.flush().await;
    first.await.unwrap();
    broker.state().add_partitions("t", 3);
    // Only ever to the new partition: no batch of the topic is dispatched meanwhile, so
    // the refused send itself must start the refresh.
    let delivered = bounded("a send to the new partition", async {
        let delivery = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let record = ProducerRecord::new("t", "v").partition(PartitionId(2));
            match producer.send(record).await {
                Ok(delivery) => break delivery,
                Err(Error::UnknownPartition { .. }) => continue,
                Err(e) => panic!("{e}"),
            }
        };
        producer.flush().await;
        delivery.await.unwrap()
    })
    .await;
    assert_eq!(delivered.partition, PartitionId(2));
}

#[tokio::test]
async fn keyless_records_stick_to_a_partition_per_batch() {
    let broker = FakeBroker::start(&[("t", 3)]).await;
    // Room for exactly ten records: appends check the worst-case record size (about 13
    // bytes over the real one for the varint deltas), so the limit is the size of ten
    // records plus a little less than one more.
    let mut ten = sluice_protocol::batch::BatchBuilder::new();
    for _ in 0..10 {
        ten.append(now_ms(), None, Some(b"0123456789"), &[]);
    }
    let config = ProducerConfig {
        // A long linger so only size closes batches.
        batch_bytes_max: ten.size_bytes() + 14,
        linger: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let mut deliveries = Vec::new();
    for _ in 0..30 {
        deliveries.push(
            producer
                .send(ProducerRecord::new("t", "0123456789"))
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    let mut partitions = Vec::new();
    for d in deliveries {
        partitions.push(d.await.unwrap().partition);
    }
    // Three runs of ten, each run on one partition, each run on the next partition.
    for run in partitions.chunks(10) {
        assert!(run.iter().all(|p| *p == run[0]), "{partitions:?}");
    }
    assert_ne!(partitions[0], partitions[10]);
    assert_ne!(partitions[10], partitions[20]);
    let state = broker.state();
    for p in 0..3 {
        assert!(state
            .batches("t", p)
            .iter()
            .all(|b| b.header().records_count == 10));
    }
}

#[tokio::test]
async fn a_batch_goes_out_when_its_linger_expires_without_flush() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        linger: Duration::from_millis(20),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let a = producer.send(ProducerRecord::new("t", "a")).await.unwrap();
    let b = producer.send(ProducerRecord::new("t", "b")).await.unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(5), async { (a.await, b.await) })
        .await
        .expect("delivered after the linger");
    assert_eq!((a.unwrap().offset, b.unwrap().offset), (0, 1));
    // Both records went in one batch, in one request.
    assert_eq!(broker.state().produce_requests, vec![1]);
}

#[tokio::test]
async fn a_retriable_error_is_retried_and_order_is_kept() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .produce_errors
        .extend([ErrorCode::NotLeaderOrFollower, ErrorCode::RequestTimedOut]);
    let config = ProducerConfig {
        batch_bytes_max: 150, // one record per batch
        retry_backoff: Duration::from_millis(10),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let value = format!("record-{i:02}-{}", "x".repeat(30));
        deliveries.push(
            producer
                .send(ProducerRecord::new("t", value))
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.unwrap().offset, i as i64);
    }
    let values: Vec<String> = broker
        .state()
        .values("t", 0)
        .into_iter()
        .map(|(_, v)| String::from_utf8(v[..9].to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("record-{i:02}")).collect();
    assert_eq!(values, expected);
}

#[tokio::test]
async fn a_non_retriable_error_fails_the_records_with_the_brokers_reason() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .produce_errors
        .push_back(ErrorCode::InvalidRecord);
    let producer = producer(&broker, ProducerConfig::default()).await;
    let delivery = producer.send(ProducerRecord::new("t", "x")).await.unwrap();
    producer.flush().await;
    let e = delivery.await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRecord));
    assert!(
        e.to_string()
            .starts_with("producing to t/0: a record failed validation"),
        "{e}"
    );
}

#[tokio::test]
async fn retries_end_at_the_delivery_timeout() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .produce_errors
        .extend(std::iter::repeat_n(ErrorCode::NotEnoughReplicas, 1000));
    let config = ProducerConfig {
        retry_backoff: Duration::from_millis(20),
        delivery_timeout: Duration::from_millis(300),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let delivery = producer.send(ProducerRecord::new("t", "x")).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), delivery)
        .await
        .expect("bounded by the delivery timeout")
        .unwrap_err();
    match &e {
        Error::DeliveryTimeout {
            attempts,
            last_error,
            ..
        } => {
            // Usually several; one when a loaded machine makes the first attempt slow.
            assert!(*attempts >= 1);
            assert_eq!(last_error.code(), Some(ErrorCode::NotEnoughReplicas), "{e}");
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn retries_max_bounds_the_attempts() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .produce_errors
        .extend(std::iter::repeat_n(ErrorCode::NotEnoughReplicas, 10));
    let config = ProducerConfig {
        retries_max: 2,
        retry_backoff: Duration::from_millis(1),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let delivery = producer.send(ProducerRecord::new("t", "x")).await.unwrap();
    match delivery.await.unwrap_err() {
        Error::DeliveryTimeout { attempts, .. } => assert_eq!(attempts, 3),
        other => panic!("{other}"),
    }
    assert_eq!(broker.state().produce_requests.len(), 3);
}

#[tokio::test]
async fn unknown_topics_and_partitions_fail_at_send() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    let config = ProducerConfig {
        unknown_topic_wait: Duration::from_millis(200),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let e = producer
        .send(ProducerRecord::new("nope", "x"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        Error::UnknownTopic {
            topic: "nope".into()
        }
    );
    let e = producer
        .send(ProducerRecord::new("t", "x").partition(PartitionId(2)))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "topic \"t\" has no partition 2; it has partitions 0 to 1"
    );
}

#[tokio::test]
async fn a_record_larger_than_a_batch_is_refused() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        batch_bytes_max: 1000,
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let e = producer
        .send(ProducerRecord::new("t", vec![0u8; 2000]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::RecordTooLarge {
                limit: "batch_bytes_max",
                ..
            }
        ),
        "{e}"
    );
}

/// The records of a mixed `send_all` call: keyed over three partitions, one named
/// partition, one of another topic, one with a header and its own timestamp.
fn mixed_records() -> Vec<ProducerRecord> {
    let mut records: Vec<_> = (0..30)
        .map(|i| ProducerRecord::new("t", format!("v{i}")).key(format!("key-{}", i % 7)))
        .collect();
    records.push(ProducerRecord::new("t", "named").partition(PartitionId(2)));
    records.push(ProducerRecord::new("u", "other topic"));
    let mut stamped = ProducerRecord::new("t", "stamped").key("key-1");
    stamped
        .headers
        .push(("trace".to_owned(), Bytes::from_static(b"abc")));
    stamped.timestamp_ms = Some(1_234);
    records.push(stamped);
    records
}

#[tokio::test]
async fn send_all_places_records_as_send_does_one_by_one() {
    let broker = FakeBroker::start(&[("t", 3), ("u", 1)]).await;
    let producer = producer(&broker, ProducerConfig::default()).await;
    let records = mixed_records();
    let deliveries = producer.send_all(&records).await.unwrap();
    assert_eq!(deliveries.len(), records.len());
    producer.flush().await;
    let mut next_offset = [0i64; 3];
    let mut call_timestamp = None;
    for (record, delivery) in records.iter().zip(deliveries) {
        let metadata = delivery.await.unwrap();
        assert_eq!(metadata.topic, record.topic);
        let expected = match (&record.partition, &record.key) {
            (Some(p), _) => *p,
            (None, Some(key)) => partition_for_key(key, 3),
            (None, None) => PartitionId(0),
        };
        assert_eq!(metadata.partition, expected, "{record:?}");
        match record.timestamp_ms {
            Some(ts) => assert_eq!(metadata.timestamp_ms, ts),
            // Records without a timestamp get the call's, one for all.
            None => assert_eq!(
                *call_timestamp.get_or_insert(metadata.timestamp_ms),
                metadata.timestamp_ms
            ),
        }
        let state = broker.state();
        let p = metadata.partition.0 as usize;
        let stored = &state.values(&record.topic, p)[metadata.offset as usize];
        assert_eq!(Some(&stored.1), record.value.as_ref());
        if record.topic == "t" {
            // Per partition, offsets follow the call's order with no gap.
            assert_eq!(metadata.offset, next_offset[p], "{record:?}");
            next_offset[p] += 1;
        }
    }
    assert_eq!(next_offset.iter().sum::<i64>(), 32);
    let state = broker.state();
    let stamped = state.batches("t", partition_for_key(b"key-1", 3).0 as usize)[0]
        .records()
        .unwrap()
        .map(|r| r.unwrap())
        .find(|r| r.value.as_deref() == Some(&b"stamped"[..]))
        .unwrap();
    assert_eq!(stamped.timestamp, 1_234);
    assert_eq!(
        stamped.headers,
        vec![sluice_protocol::batch::Header {
            key: Bytes::from_static(b"trace"),
            value: Some(Bytes::from_static(b"abc")),
        }]
    );
}

#[tokio::test]
async fn send_all_enqueues_nothing_when_one_record_is_refused() {
    let broker = FakeBroker::start(&[("t", 3)]).await;
    let config = ProducerConfig {
        batch_bytes_max: 1000,
        unknown_topic_wait: Duration::ZERO,
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let refusals = [
        (ProducerRecord::new("t", vec![0u8; 2000]), "larger than"),
        (
            ProducerRecord::new("t", "x").partition(PartitionId(3)),
            "has no partition 3",
        ),
        (ProducerRecord::new("nope", "x"), "nope"),
    ];
    for (refused, why) in refusals {
        let mut records = mixed_records()
            .into_iter()
            .filter(|r| r.topic == "t")
            .collect::<Vec<_>>();
        records.insert(5, refused);
        let e = producer.send_all(&records).await.unwrap_err();
        assert!(e.to_string().contains(why), "{e}");
    }
    producer.flush().await;
    assert!((0..3).all(|p| broker.state().batches("t", p).is_empty()));
    assert!(producer.send_all(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_send_all_call_larger_than_the_buffer_is_refused_and_smaller_calls_go() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        buffer_bytes_max: 2000,
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let records: Vec<_> = (0..40)
        .map(|i| ProducerRecord::new("t", vec![b'x'; 100]).key(format!("{i}")))
        .collect();
    let e = producer.send_all(&records).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::SendTooLarge {
                records: 40,
                max: 2000,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("send them in smaller calls"), "{e}");
    let mut deliveries = Vec::new();
    for chunk in records.chunks(10) {
        deliveries.extend(producer.send_all(chunk).await.unwrap());
    }
    producer.flush().await;
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.unwrap().offset, i as i64);
    }
}

#[tokio::test]
async fn acks_none_delivers_without_offsets() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        acks: Acks::None,
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let a = producer.send(ProducerRecord::new("t", "a")).await.unwrap();
    producer.flush().await;
    assert_eq!(a.await.unwrap().offset, -1);
    // The broker got it even though it did not answer.
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.state().values("t", 0).is_empty() {
        assert!(Instant::now() < deadline, "the record never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_small_buffer_bounds_memory_but_everything_is_delivered() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    let config = ProducerConfig {
        buffer_bytes_max: 2000,
        batch_bytes_max: 1000,
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let mut deliveries = Vec::new();
    for i in 0..200 {
        let record = ProducerRecord::new("t", vec![b'x'; 100]).key(format!("{i}"));
        deliveries.push(producer.send(record).await.unwrap());
    }
    producer.close().await;
    for d in deliveries {
        d.await.unwrap();
    }
    let stored = {
        let state = broker.state();
        state.values("t", 0).len() + state.values("t", 1).len()
    };
    assert_eq!(stored, 200);
    assert_eq!(
        producer
            .send(ProducerRecord::new("t", "late"))
            .await
            .unwrap_err(),
        Error::ProducerClosed
    );
}

#[tokio::test]
async fn dropping_the_producer_still_sends_what_was_buffered() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        linger: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let delivery = producer.send(ProducerRecord::new("t", "x")).await.unwrap();
    drop(producer);
    let metadata = tokio::time::timeout(Duration::from_secs(5), delivery)
        .await
        .expect("sent on drop")
        .unwrap();
    assert_eq!(metadata.offset, 0);
}

#[tokio::test]
async fn a_dropped_connection_is_redialled_and_the_batch_retried() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker.state().drop_connection_on_produce = 2;
    let config = ProducerConfig {
        retry_backoff: Duration::from_millis(10),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let delivery = producer.send(ProducerRecord::new("t", "x")).await.unwrap();
    producer.flush().await;
    assert_eq!(delivery.await.unwrap().offset, 0);
    assert_eq!(broker.state().values("t", 0).len(), 1);
}

/// A request timeout no test waits for: a test that needed it would hit its failure bound.
const NEVER: Duration = Duration::from_secs(600);
/// Failure bound of each step of the failover tests; far above what any step takes.
const BOUND: Duration = Duration::from_secs(60);

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {} s", BOUND.as_secs()))
}

async fn cluster_producer(cluster: &FakeCluster, config: ProducerConfig) -> Producer {
    let client = Client::connect(ClientConfig {
        request_timeout: NEVER,
        ..cluster.config()
    })
    .await
    .unwrap();
    Producer::new(client, config)
}

fn stored(cluster: &FakeCluster, partition: usize) -> Vec<(i64, String)> {
    cluster
        .state()
        .values("t", partition)
        .into_iter()
        .map(|(offset, v)| (offset, String::from_utf8(v.to_vec()).unwrap()))
        .collect()
}

#[tokio::test]
async fn a_batch_in_flight_when_its_leader_dies_is_retried_on_the_new_leader() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let producer = cluster_producer(&cluster, ProducerConfig::default()).await;
    // Broker 1 leads; it reads the request and dies before answering (the outcome is
    // unknown to the producer), and the controller moves leadership to broker 2.
    cluster.hang(1);
    let delivery = producer.send(ProducerRecord::new("t", "x")).await.unwrap();
    cluster
        .wait_for("the produce request on broker 1", |s| {
            s.requests_to(BrokerId(1), ApiKey::Produce) == 1
        })
        .await;
    cluster.kill(1);
    cluster.fail_over(1);
    let metadata = bounded("delivery", delivery).await.unwrap();
    assert_eq!((metadata.partition, metadata.offset), (PartitionId(0), 0));
    assert_eq!(stored(&cluster, 0), vec![(0, "x".to_owned())]);
    assert_eq!(cluster.state().requests_to(BrokerId(2), ApiKey::Produce), 1);
}

#[tokio::test]
async fn a_hung_leader_is_given_up_at_the_request_timeout_and_the_batch_moves() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let config = ProducerConfig {
        // Short only so the test is quick; the client's own request timeout is NEVER, so
        // this is what gives up on the hung leader.
        request_timeout: Duration::from_millis(300),
        ..ProducerConfig::default()
    };
    let producer = cluster_producer(&cluster, config).await;
    // Broker 1 (the leader, and the broker that answered the client's metadata) hangs.
    cluster.hang(1);
    let delivery = producer.send(ProducerRecord::new("t", "x")).await.unwrap();
    cluster
        .wait_for("the produce request on broker 1", |s| {
            s.requests_to(BrokerId(1), ApiKey::Produce) == 1
        })
        .await;
    cluster.fail_over(1);
    let metadata = bounded("delivery", delivery).await.unwrap();
    assert_eq!(metadata.offset, 0);
    assert_eq!(stored(&cluster, 0), vec![(0, "x".to_owned())]);
    // The broker was told to answer before the producer gives up.
    let timeouts = cluster.state().produce_timeouts_ms.clone();
    assert!(timeouts.iter().all(|&t| 0 < t && t < 300), "{timeouts:?}");
}

#[tokio::test]
async fn batches_follow_a_moving_leader_in_order_and_once() {
    let cluster = FakeCluster::start(3, &[("t", 2, 3)]).await;
    let config = ProducerConfig {
        batch_bytes_max: 150, // one record per batch
        retry_backoff: Duration::from_millis(5),
        ..ProducerConfig::default()
    };
    let producer = cluster_producer(&cluster, config).await;
    let mut deliveries = Vec::new();
    for round in 0..6 {
        // Leadership of both partitions moves before each round; the producer's cached
        // metadata is stale, so the round's first batches meet NOT_LEADER_OR_FOLLOWER.
        for partition in 0..2 {
            let leader = BrokerId((round + partition) % 3 + 1);
            cluster.state().move_leader("t", partition, leader);
        }
        for i in 0..5 {
            for partition in 0..2 {
                let value = format!("r{round}-{i}-{}", "x".repeat(40));
                let record = ProducerRecord::new("t", value).partition(PartitionId(partition));
                deliveries.push((partition, producer.send(record).await.unwrap()));
            }
        }
        bounded("flush", producer.flush()).await;
    }
    let mut next = [0i64; 2];
    for (partition, delivery) in deliveries {
        let metadata = delivery.await.unwrap();
        assert_eq!(metadata.offset, next[partition as usize]);
        next[partition as usize] += 1;
    }
    for partition in 0..2 {
        let values: Vec<String> = stored(&cluster, partition)
            .into_iter()
            .map(|(_, v)| v[..4].to_owned())
            .collect();
        let expected: Vec<String> = (0..6)
            .flat_map(|round| (0..5).map(move |i| format!("r{round}-{i}")))
            .collect();
        assert_eq!(values, expected, "partition {partition}");
    }
    // Each partition's first batch of rounds 1 to 5 went to the old leader and was refused
    // (round 0 moved nothing): 60 appends and at least 10 refusals.
    let partitions_sent: usize = cluster.state().produce_requests.iter().sum();
    assert!(partitions_sent >= 70, "{partitions_sent}");
}

#[tokio::test]
async fn retries_back_off_exponentially() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .produce_errors
        .extend(std::iter::repeat_n(ErrorCode::NotEnoughReplicas, 10_000));
    let config = ProducerConfig {
        retry_backoff: Duration::from_millis(10),
        retry_backoff_max: Duration::from_secs(60),
        delivery_timeout: Duration::from_secs(2),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let delivery = producer.send(ProducerRecord::new("t", "x")).await.unwrap();
    let e = bounded("the delivery timeout", delivery).await.unwrap_err();
    // Waits of 10, 20, 40... ms (each at least 80% of that) fill 2 s within 9 retries; a
    // fixed 10 ms backoff would have made some 200 attempts.
    match e {
        Error::DeliveryTimeout { attempts, .. } => assert!(attempts <= 10, "{attempts}"),
        other => panic!("{other}"),
    }
}

#[test]
fn an_attempt_waits_the_request_timeout_cut_to_the_earliest_delivery_deadline() {
    let config = ProducerConfig {
        request_timeout: Duration::from_secs(30),
        delivery_timeout: Duration::from_secs(120),
        ..ProducerConfig::default()
    };
    // Ahead of the clock, so that subtracting ages never goes before the clock's origin.
    let now = Instant::now() + Duration::from_secs(300);
    let batch = |age_s: u64| Batch::<Delivery> {
        tp: TopicPartition::new("t", PartitionId(0)),
        bytes: Bytes::new(),
        tokens: Vec::new(),
        completer: crate::delivery::Completer::for_batch(TopicPartition::new("t", PartitionId(0))),
        first_index: 0,
        created: now - Duration::from_secs(age_s),
        attempts: 1,
        stamp: None,
        order: 0,
        order_span: 1,
        compressed: true,
        crc_pending: false,
    };
    let check = |ages: &[u64], expected_s: u64| {
        let batches: Vec<Batch<Delivery>> = ages.iter().map(|&a| batch(a)).collect();
        assert_eq!(
            attempt_wait(&config, &batches, now),
            Duration::from_secs(expected_s),
            "{ages:?}"
        );
    };
    check(&[0], 30);
    check(&[0, 100], 20);
    check(&[110, 100], 10);
    // Past its deadline, a batch that is sent at all gets the whole request timeout.
    check(&[120], 30);
    check(&[200, 115], 5);
}

// Idempotence against the fake broker, which checks sequences as the broker does.

/// The stamps of the batches stored in partition `partition` of `t`: (id, epoch, base
/// sequence, records).
fn stored_stamps(broker: &FakeBroker, partition: usize) -> Vec<(i64, i16, i32, i32)> {
    broker
        .state()
        .batches("t", partition)
        .iter()
        .map(|b| {
            let h = b.header();
            (
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.records_count,
            )
        })
        .collect()
}

/// Sends `values` to partition `partition` of `t` and flushes; the deliveries' outcomes.
async fn send_all(
    producer: &Producer,
    partition: i32,
    values: &[&str],
) -> Vec<Result<RecordMetadata>> {
    let mut deliveries = Vec::new();
    for value in values {
        let record = ProducerRecord::new("t", value.to_string()).partition(PartitionId(partition));
        deliveries.push(producer.send(record).await.unwrap());
    }
    bounded("flush", producer.flush()).await;
    let mut outcomes = Vec::new();
    for d in deliveries {
        outcomes.push(d.await);
    }
    outcomes
}

/// Batches of one short record: the 61-byte header plus the worst-case size of a record
/// with a one-byte value (21 bytes) fits, a second record does not.
fn one_record_per_batch() -> ProducerConfig {
    ProducerConfig {
        batch_bytes_max: 85,
        retry_backoff: Duration::from_millis(5),
        ..ProducerConfig::default()
    }
}

fn offsets(outcomes: &[Result<RecordMetadata>]) -> Vec<i64> {
    outcomes
        .iter()
        .map(|o| o.as_ref().expect("delivered").offset)
        .collect()
}

#[tokio::test]
async fn batches_carry_the_producer_id_and_each_partitions_sequence() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    let config = ProducerConfig {
        linger: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    send_all(&producer, 0, &["a", "b", "c"]).await;
    send_all(&producer, 1, &["x"]).await;
    send_all(&producer, 0, &["d", "e"]).await;
    send_all(&producer, 1, &["y", "z"]).await;
    // One id for the producer, asked for once.
    assert_eq!(broker.state().init_producer_id_requests, [(-1, -1)]);
    assert_eq!(
        stored_stamps(&broker, 0),
        [(1000, 0, 0, 3), (1000, 0, 3, 2)]
    );
    assert_eq!(
        stored_stamps(&broker, 1),
        [(1000, 0, 0, 1), (1000, 0, 1, 2)]
    );
}

#[tokio::test]
async fn a_batch_whose_answer_was_lost_is_written_once_at_its_first_offset() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let producer = producer(&broker, one_record_per_batch()).await;
    assert_eq!(offsets(&send_all(&producer, 0, &["a"]).await), [0]);
    // The next two answers are lost with their connections, after the writes.
    broker
        .state()
        .lose_answers
        .extend([ApiKey::Produce, ApiKey::Produce]);
    let outcomes = send_all(&producer, 0, &["b", "c"]).await;
    assert_eq!(offsets(&outcomes), [1, 2]);
    let state = broker.state();
    let values: Vec<Bytes> = state.values("t", 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["a", "b", "c"]);
    assert_eq!(state.duplicates, 2);
    // Each resend carried the stamp of its first send.
    let stamps: Vec<i32> = state
        .stamps_seen
        .iter()
        .map(|(_, _, s)| s.base_sequence)
        .collect();
    assert_eq!(stamps, [0, 1, 1, 1, 2]);
}

#[tokio::test]
async fn without_idempotence_a_lost_answer_writes_the_batch_twice() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        enable_idempotence: false,
        ..one_record_per_batch()
    };
    let producer = producer(&broker, config).await;
    broker.state().lose_answers.push(ApiKey::Produce);
    assert_eq!(offsets(&send_all(&producer, 0, &["a"]).await), [1]);
    let state = broker.state();
    assert_eq!(state.values("t", 0).len(), 2);
    assert_eq!(stored_stamps_of(&state), [(-1, -1, -1, 1), (-1, -1, -1, 1)]);
    assert!(state.init_producer_id_requests.is_empty());
}

fn stored_stamps_of(state: &crate::testing::FakeState) -> Vec<(i64, i16, i32, i32)> {
    state
        .batches("t", 0)
        .iter()
        .map(|b| {
            let h = b.header();
            (
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.records_count,
            )
        })
        .collect()
}

#[tokio::test]
async fn acks_below_all_are_not_idempotent() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        acks: Acks::Leader,
        ..ProducerConfig::default()
    };
    assert!(config.enable_idempotence && !config.is_idempotent());
    let producer = producer(&broker, config).await;
    send_all(&producer, 0, &["a"]).await;
    assert_eq!(stored_stamps(&broker, 0), [(-1, -1, -1, 1)]);
    assert!(broker.state().init_producer_id_requests.is_empty());
}

#[tokio::test]
async fn the_producer_id_is_retried_while_no_broker_can_give_one() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker.state().init_producer_id_errors.extend([
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::CoordinatorNotAvailable,
    ]);
    let producer = producer(&broker, one_record_per_batch()).await;
    assert_eq!(offsets(&send_all(&producer, 0, &["a", "b"]).await), [0, 1]);
    assert_eq!(broker.state().init_producer_id_requests.len(), 3);
    assert_eq!(
        stored_stamps(&broker, 0),
        [(1000, 0, 0, 1), (1000, 0, 1, 1)]
    );
}

#[tokio::test]
async fn records_wait_for_a_producer_id_only_until_their_delivery_timeout() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .init_producer_id_errors
        .extend(std::iter::repeat_n(
            ErrorCode::CoordinatorNotAvailable,
            10_000,
        ));
    let config = ProducerConfig {
        delivery_timeout: Duration::from_millis(300),
        ..one_record_per_batch()
    };
    let producer = producer(&broker, config).await;
    let outcomes = send_all(&producer, 0, &["a"]).await;
    match &outcomes[0] {
        Err(Error::DeliveryTimeout {
            attempts,
            last_error,
            ..
        }) => {
            assert_eq!(*attempts, 0);
            assert_eq!(last_error.code(), Some(ErrorCode::CoordinatorNotAvailable));
        }
        other => panic!("{other:?}"),
    }
    assert!(broker.state().produce_requests.is_empty());
}

#[tokio::test]
async fn a_broker_without_producer_ids_fails_the_records_and_says_why() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .init_producer_id_errors
        .push_back(ErrorCode::UnsupportedVersion);
    let producer = producer(&broker, one_record_per_batch()).await;
    let outcomes = send_all(&producer, 0, &["a"]).await;
    let e = outcomes[0].as_ref().unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnsupportedVersion));
    assert!(
        e.to_string()
            .contains("a producer without idempotence needs none"),
        "{e}"
    );
    // The next record asks again, and gets an id.
    assert_eq!(offsets(&send_all(&producer, 0, &["b"]).await), [0]);
}

#[tokio::test]
async fn out_of_order_bumps_the_epoch_and_the_batch_is_restamped_from_zero() {
    let broker = FakeBroker::start(&[("t", 2)]).await;
    let producer = producer(&broker, one_record_per_batch()).await;
    send_all(&producer, 0, &["a"]).await;
    send_all(&producer, 1, &["x"]).await;
    // The leader of partition 0 lost the producer's batches before "b" (as after an
    // unclean election): it refuses "b" as out of order.
    broker
        .state()
        .produce_errors
        .push_back(ErrorCode::OutOfOrderSequenceNumber);
    assert_eq!(offsets(&send_all(&producer, 0, &["b", "c"]).await), [1, 2]);
    assert_eq!(
        broker.state().init_producer_id_requests,
        [(-1, -1), (1000, 0)]
    );
    assert_eq!(
        stored_stamps(&broker, 0),
        [(1000, 0, 0, 1), (1000, 1, 0, 1), (1000, 1, 1, 1)]
    );
    // Partition 1 moves to the new epoch with its next batch, from 0.
    send_all(&producer, 1, &["y"]).await;
    assert_eq!(
        stored_stamps(&broker, 1),
        [(1000, 0, 0, 1), (1000, 1, 0, 1)]
    );
}

#[tokio::test]
async fn a_batch_that_timed_out_after_it_was_sent_bumps_the_epoch() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let config = ProducerConfig {
        delivery_timeout: Duration::from_millis(500),
        ..one_record_per_batch()
    };
    let producer = producer(&broker, config).await;
    // Every answer is lost, until the delivery timeout: "a" is in the log, but the
    // producer cannot know.
    broker
        .state()
        .lose_answers
        .extend(std::iter::repeat_n(ApiKey::Produce, 10_000));
    let outcomes = send_all(&producer, 0, &["a"]).await;
    assert!(
        matches!(outcomes[0], Err(Error::DeliveryTimeout { .. })),
        "{outcomes:?}"
    );
    broker.state().lose_answers.clear();
    assert_eq!(offsets(&send_all(&producer, 0, &["b"]).await), [1]);
    assert_eq!(
        broker.state().init_producer_id_requests,
        [(-1, -1), (1000, 0)]
    );
    assert_eq!(
        stored_stamps(&broker, 0),
        [(1000, 0, 0, 1), (1000, 1, 0, 1)]
    );
}

#[tokio::test]
async fn a_fenced_epoch_fails_the_batch_with_producer_fenced() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .produce_errors
        .push_back(ErrorCode::InvalidProducerEpoch);
    let producer = producer(&broker, one_record_per_batch()).await;
    let outcomes = send_all(&producer, 0, &["a"]).await;
    match &outcomes[0] {
        Err(Error::ProducerFenced {
            producer_id, epoch, ..
        }) => assert_eq!((*producer_id, *epoch), (1000, 0)),
        other => panic!("{other:?}"),
    }
    // Fencing is not a lost sequence: no epoch bump.
    assert_eq!(broker.state().init_producer_id_requests.len(), 1);
}

#[tokio::test]
async fn a_resend_to_a_new_leader_after_failover_is_written_once() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let producer = cluster_producer(&cluster, ProducerConfig::default()).await;
    // Broker 1 writes the batch (the producer state goes with the data to broker 2, as
    // replication carries it), then leadership moves to broker 2 and the answer is lost.
    {
        let mut state = cluster.state();
        state.lose_answers.push(ApiKey::Produce);
        state.on_lost_answer = Some(Box::new(|s| s.move_leader("t", 0, BrokerId(2))));
    }
    let delivery = producer.send(ProducerRecord::new("t", "x")).await.unwrap();
    let metadata = bounded("delivery", delivery).await.unwrap();
    assert_eq!(metadata.offset, 0);
    assert_eq!(stored(&cluster, 0), vec![(0, "x".to_owned())]);
    let state = cluster.state();
    assert_eq!(state.duplicates, 1);
    assert_eq!(state.requests_to(BrokerId(2), ApiKey::Produce), 1);
}

/// The base sequences of partition 0's stamped batches the leader checked, in order.
fn sequences_seen(state: &crate::testing::FakeState) -> Vec<i32> {
    state
        .stamps_seen
        .iter()
        .filter(|(_, p, _)| *p == 0)
        .map(|(_, _, s)| s.base_sequence)
        .collect()
}

#[tokio::test]
async fn pipelined_batches_of_a_partition_reach_the_leader_in_order() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let producer = producer(&broker, one_record_per_batch()).await;
    let values = ["a", "b", "c", "d", "e", "f", "g", "h"];
    assert_eq!(
        offsets(&send_all(&producer, 0, &values).await),
        [0, 1, 2, 3, 4, 5, 6, 7]
    );
    let state = broker.state();
    // Each batch in its own request, each read in sequence order: none was refused.
    assert_eq!(sequences_seen(&state), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(state.produce_requests.len(), 8);
}

#[tokio::test]
async fn at_most_five_batches_of_a_partition_are_in_flight() {
    let cluster = FakeCluster::start(1, &[("t", 1, 1)]).await;
    let producer = cluster_producer(&cluster, one_record_per_batch()).await;
    // Send (and learn the metadata) before the leader stops answering.
    producer.send(ProducerRecord::new("t", "0")).await.unwrap();
    bounded("flush", producer.flush()).await;
    cluster.hang(1);
    for i in 1..=8 {
        let record = ProducerRecord::new("t", i.to_string()).partition(PartitionId(0));
        producer.send(record).await.unwrap();
    }
    cluster
        .wait_for("five produce requests", |s| {
            s.requests_to(BrokerId(1), ApiKey::Produce) >= 6
        })
        .await;
    // The first five are unanswered: the sixth waits for one of them.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cluster.state().requests_to(BrokerId(1), ApiKey::Produce), 6);
}

#[tokio::test]
async fn batches_behind_a_refused_one_are_retried_after_it_in_order_and_written_once() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    let producer = producer(&broker, one_record_per_batch()).await;
    assert_eq!(offsets(&send_all(&producer, 0, &["a"]).await), [0]);
    // "b" is refused (its leader moved, say); "c" to "f", pipelined behind it, are then
    // out of order. Every one is retried after "b", with its stamp.
    broker
        .state()
        .produce_errors
        .push_back(ErrorCode::NotLeaderOrFollower);
    let outcomes = send_all(&producer, 0, &["b", "c", "d", "e", "f"]).await;
    assert_eq!(offsets(&outcomes), [1, 2, 3, 4, 5]);
    let state = broker.state();
    let values: Vec<Bytes> = state.values("t", 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["a", "b", "c", "d", "e", "f"]);
    // "c" went out before "b" was resent: they were pipelined, and refused.
    let seen = sequences_seen(&state);
    let first_seen = |sequence| seen.iter().position(|&s| s == sequence);
    assert!(first_seen(2) < first_seen(1), "{seen:?}");
    // No epoch bump: an out-of-order answer behind a retried batch is only a retry.
    assert_eq!(state.init_producer_id_requests, [(-1, -1)]);
    assert_eq!(
        stored_stamps_of(&state),
        (0..6).map(|i| (1000, 0, i, 1)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn pipelined_batches_whose_answers_were_lost_in_a_failover_are_written_once() {
    let cluster = FakeCluster::start(2, &[("t", 1, 2)]).await;
    let producer = cluster_producer(&cluster, one_record_per_batch()).await;
    // Broker 1 writes the first batch, then leadership moves to broker 2 and the answer
    // is lost with the connection: the batches behind it on that connection fail too.
    {
        let mut state = cluster.state();
        state.lose_answers.push(ApiKey::Produce);
        state.on_lost_answer = Some(Box::new(|s| s.move_leader("t", 0, BrokerId(2))));
    }
    let values = ["a", "b", "c", "d", "e", "f", "g"];
    let mut deliveries = Vec::new();
    for value in values {
        let record = ProducerRecord::new("t", value).partition(PartitionId(0));
        deliveries.push(producer.send(record).await.unwrap());
    }
    let mut offsets = Vec::new();
    for delivery in deliveries {
        offsets.push(bounded("delivery", delivery).await.unwrap().offset);
    }
    assert_eq!(offsets, [0, 1, 2, 3, 4, 5, 6]);
    let expected: Vec<(i64, String)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_string()))
        .collect();
    assert_eq!(stored(&cluster, 0), expected);
    let state = cluster.state();
    assert_eq!(state.init_producer_id_requests, [(-1, -1)]);
}

/// A batch the leader refuses as too large (a topic whose segment.bytes was lowered after
/// the producer read it) is split until its halves fit, and every record lands once, in
/// order; one record too large fails alone, and the records after it still land.
#[tokio::test]
async fn a_batch_refused_as_too_large_is_split_and_every_record_lands_in_order() {
    for idempotent in [true, false] {
        let broker = FakeBroker::start(&[("t", 1)]).await;
        broker.state().batch_bytes_max = Some(300);
        let config = ProducerConfig {
            linger: Duration::from_secs(60),
            enable_idempotence: idempotent,
            ..ProducerConfig::default()
        };
        let producer = producer(&broker, config).await;
        let mut values: Vec<String> = (0..40).map(|i| format!("record-{i:02}")).collect();
        values[30] = "x".repeat(400);
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let outcomes = send_all(&producer, 0, &refs).await;
        let failed: Vec<usize> = (0..40).filter(|&i| outcomes[i].is_err()).collect();
        assert_eq!(
            failed,
            [30],
            "idempotent {idempotent}: only the big record fails"
        );
        assert_eq!(
            outcomes[30].as_ref().unwrap_err().code(),
            Some(ErrorCode::MessageTooLarge)
        );
        let stored: Vec<Bytes> = broker
            .state()
            .values("t", 0)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let expected: Vec<Bytes> = (0..40)
            .filter(|&i| i != 30)
            .map(|i| Bytes::from(values[i].clone()))
            .collect();
        assert_eq!(
            stored, expected,
            "idempotent {idempotent}: once each, in order"
        );
        let acknowledged: Vec<i64> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .map(|m| m.offset)
            .collect();
        assert_eq!(acknowledged, (0..39).collect::<Vec<i64>>());
    }
}

/// The topic's segment.bytes from the metadata sizes batches from the first one, and a
/// record that could never fit fails at `send`, naming the limit.
#[tokio::test]
async fn the_topics_segment_bytes_bounds_batches_from_the_first() {
    let broker = FakeBroker::start(&[("t", 1)]).await;
    broker
        .state()
        .topics
        .get_mut("t")
        .unwrap()
        .configs
        .insert("segment.bytes".into(), "300".into());
    // Anything larger than the metadata says would be refused, with no split possible for
    // a test to see: every batch must fit at once.
    broker.state().batch_bytes_max = Some(300);
    let config = ProducerConfig {
        linger: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let producer = producer(&broker, config).await;
    let values: Vec<String> = (0..40).map(|i| format!("record-{i:02}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let outcomes = send_all(&producer, 0, &refs).await;
    assert_eq!(offsets(&outcomes), (0..40).collect::<Vec<i64>>());
    let refused_at_once = broker.state().stamps_seen.len();
    assert_eq!(
        refused_at_once,
        broker.state().batches("t", 0).len(),
        "no batch was refused"
    );
    let too_big = producer
        .send(ProducerRecord::new("t", "x".repeat(400)))
        .await;
    match too_big {
        Err(e @ Error::RecordTooLarge { .. }) => {
            assert!(e.to_string().contains("segment.bytes"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

/// Kafka's rule by default: a failure is the failed record's alone, and the records after
/// it in its partition are still written (after an epoch bump), in send order. With
/// `stop_after_failure` nothing after the failed record is written: the partition keeps a
/// prefix of what was sent, and later records and `send`s fail with StoppedAfterFailure.
#[tokio::test]
async fn after_a_failure_later_records_land_in_order_or_with_stop_after_failure_not_at_all() {
    for (idempotent, stop) in [(true, false), (true, true), (false, true), (false, false)] {
        let case = format!("idempotent {idempotent}, stop {stop}");
        let broker = FakeBroker::start(&[("t", 1)]).await;
        let config = ProducerConfig {
            enable_idempotence: idempotent,
            stop_after_failure: stop,
            linger: Duration::from_millis(1),
            ..one_record_per_batch()
        };
        let producer = producer(&broker, config).await;
        assert_eq!(offsets(&send_all(&producer, 0, &["a", "b"]).await), [0, 1]);
        // "c" is refused for good (the disk full, say); the batches after it are in
        // flight behind it or queued.
        broker
            .state()
            .produce_errors
            .push_back(ErrorCode::InvalidRecord);
        let outcomes = send_all(&producer, 0, &["c", "d", "e", "f", "g", "h"]).await;
        assert_eq!(
            outcomes[0].as_ref().unwrap_err().code(),
            Some(ErrorCode::InvalidRecord),
            "{case}"
        );
        let stored: Vec<Bytes> = broker
            .state()
            .values("t", 0)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        if stop {
            assert_eq!(stored, ["a", "b"], "{case}: a prefix");
            for outcome in &outcomes[1..] {
                assert!(
                    matches!(outcome, Err(Error::StoppedAfterFailure { .. })),
                    "{case}: {outcome:?}"
                );
            }
            let later = producer.send(ProducerRecord::new("t", "i")).await;
            assert!(
                matches!(later, Err(Error::StoppedAfterFailure { .. })),
                "{case}"
            );
        } else {
            assert_eq!(
                stored,
                ["a", "b", "d", "e", "f", "g", "h"],
                "{case}: in order"
            );
            let acknowledged: Vec<i64> = outcomes[1..]
                .iter()
                .map(|o| o.as_ref().unwrap().offset)
                .collect();
            assert_eq!(acknowledged, [2, 3, 4, 5, 6], "{case}");
        }
    }
}

/// A batch sealed without its CRC comes out of compression valid, whether the codec shrank
/// it or not (the plain batch's CRC is computed only when it is kept).
#[test]
fn a_batch_without_its_crc_is_valid_compressed_or_kept() {
    use sluice_protocol::batch::{BatchBuilder, RecordBatch};
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let random: Vec<u8> = (0..4000)
        .map(|_| {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            noise as u8
        })
        .collect();
    for (value, shrinks) in [(vec![b'a'; 4000], true), (random, false)] {
        let mut builder = BatchBuilder::new();
        builder.append(1, None, Some(&value), &[]);
        let plain = builder.build_without_crc();
        let done = compress_or_keep(plain.clone(), true, Compression::Lz4, None);
        assert_eq!(done.len() < plain.len(), shrinks);
        let batch = RecordBatch::validate(done).expect("valid");
        let records: Vec<_> = batch.records().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(records[0].value.as_deref(), Some(&value[..]));
    }
}
