//! The client crate's transactional producer against a real broker (issue 26): committed
//! records are read by read_committed consumers and aborted ones never; offsets sent in a
//! transaction count only when it commits; a new instance of the transactional id fences
//! the old one; a record sent after an abort lands in the next transaction (the epoch bump
//! after an abort restarts every partition's sequence).

use std::time::Duration;

use sluice_client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, Error, GroupConfig, IsolationLevel,
    NewTopic, OffsetReset, OffsetSpec, PartitionId, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use sluice_integration_tests::checks::runtime;
use sluice_integration_tests::BrokerProcess;

async fn connect(bootstrap: &str) -> Client {
    Client::connect(ClientConfig {
        bootstrap: vec![bootstrap.to_owned()],
        ..ClientConfig::default()
    })
    .await
    .expect("a client")
}

fn transactional(client: &Client, id: &str) -> Producer {
    Producer::new(
        client.clone(),
        ProducerConfig {
            transactional_id: Some(id.to_owned()),
            ..ProducerConfig::default()
        },
    )
}

/// Every value in `topic` (partition 0) a consumer at `isolation` reads, in order.
async fn values(client: &Client, topic: &str, isolation: IsolationLevel, n: usize) -> Vec<String> {
    values_of(client, topic, 1, isolation, n).await
}

/// Every value in the first `partitions` partitions of `topic` a consumer at `isolation`
/// reads, in order per partition; waits for `n`, then a little more for any beyond.
async fn values_of(
    client: &Client,
    topic: &str,
    partitions: i32,
    isolation: IsolationLevel,
    n: usize,
) -> Vec<String> {
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            isolation_level: isolation,
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer
        .assign(
            (0..partitions)
                .map(|p| (topic.to_owned(), PartitionId(p), OffsetSpec::Earliest))
                .collect(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n && tokio::time::Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            out.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    // Nothing beyond what was expected arrives.
    for record in consumer.poll(Duration::from_millis(500)).await.unwrap() {
        out.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
    }
    out
}

#[test]
fn the_clients_transactions_commit_abort_carry_offsets_and_fence() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let rt = runtime();
    rt.block_on(async {
        let client = connect(&broker.bootstrap()).await;
        let admin = Admin::new(client.clone());
        for topic in ["out", "in"] {
            admin
                .create_topic(NewTopic::new(topic, 1, 1))
                .await
                .unwrap();
        }
        let producer = transactional(&client, "tx");
        // Before init_transactions: refused, saying what to do.
        let early = producer.begin_transaction().unwrap_err();
        assert!(early.to_string().contains("init_transactions"), "{early}");
        producer.init_transactions().await.unwrap();

        let record = |v: &str| ProducerRecord::new("out", v.to_owned()).partition(PartitionId(0));
        producer.begin_transaction().unwrap();
        // (`send_all` adds its records' partition to the transaction, once.)
        producer
            .send_all(&[record("a"), record("b")])
            .await
            .unwrap();
        producer.commit_transaction().await.unwrap();

        producer.begin_transaction().unwrap();
        let aborted = producer.send(record("x")).await.unwrap();
        producer.flush().await;
        aborted.await.expect("written, then aborted");
        producer
            .send_offsets_to_transaction(
                "g",
                None,
                &[(TopicPartition::new("in", PartitionId(0)), 9)],
            )
            .await
            .unwrap();
        producer.abort_transaction().await.unwrap();

        producer.begin_transaction().unwrap();
        producer.send(record("c")).await.unwrap();
        producer
            .send_offsets_to_transaction(
                "g",
                None,
                &[(TopicPartition::new("in", PartitionId(0)), 5)],
            )
            .await
            .unwrap();
        producer.commit_transaction().await.unwrap();

        assert_eq!(
            values(&client, "out", IsolationLevel::ReadCommitted, 3).await,
            ["a", "b", "c"]
        );
        assert_eq!(
            values(&client, "out", IsolationLevel::ReadUncommitted, 4).await,
            ["a", "b", "x", "c"]
        );
        let group = Consumer::with_group(
            client.clone(),
            ConsumerConfig {
                isolation_level: IsolationLevel::ReadCommitted,
                ..ConsumerConfig::default()
            },
            GroupConfig::new("g"),
        )
        .unwrap();
        let in_0 = TopicPartition::new("in", PartitionId(0));
        let committed = group.committed(std::slice::from_ref(&in_0)).await.unwrap();
        assert_eq!(
            committed.get(&in_0),
            Some(&5),
            "the aborted 9 never counted"
        );

        // A second instance fences the first: its next transaction fails for good.
        let second = transactional(&client, "tx");
        second.init_transactions().await.unwrap();
        producer.begin_transaction().unwrap();
        let fenced = match producer.send(record("zombie")).await {
            Err(e) => e,
            Ok(delivery) => match producer.commit_transaction().await {
                Err(e) => e,
                Ok(()) => panic!("the fenced instance committed ({:?})", delivery.await),
            },
        };
        assert!(
            matches!(&fenced, Error::Broker { .. } | Error::ProducerFenced { .. }),
            "{fenced}"
        );
        let after = producer.begin_transaction().unwrap_err();
        assert!(
            matches!(after, Error::Broker { .. } | Error::ProducerFenced { .. }),
            "{after}"
        );
        second.begin_transaction().unwrap();
        second.send(record("d")).await.unwrap();
        second.commit_transaction().await.unwrap();
        assert_eq!(
            values(&client, "out", IsolationLevel::ReadCommitted, 4).await,
            ["a", "b", "c", "d"]
        );
    });
}

/// A transactional `send_all` over keys on three partitions adds them to the transaction
/// in one request, and its records count only when it commits.
#[test]
fn a_transactional_send_all_over_three_partitions_commits_and_aborts_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let rt = runtime();
    rt.block_on(async {
        let client = connect(&broker.bootstrap()).await;
        Admin::new(client.clone())
            .create_topic(NewTopic::new("keyed", 3, 1))
            .await
            .unwrap();
        let producer = transactional(&client, "tx-all");
        producer.init_transactions().await.unwrap();
        let call = |prefix: &str| -> Vec<ProducerRecord> {
            (0..30)
                .map(|i| ProducerRecord::new("keyed", format!("{prefix}{i}")).key(format!("k{i}")))
                .collect()
        };
        producer.begin_transaction().unwrap();
        let aborted = producer.send_all(&call("x")).await.unwrap();
        let partitions: std::collections::BTreeSet<_> = {
            producer.flush().await;
            let mut seen = std::collections::BTreeSet::new();
            for delivery in aborted {
                seen.insert(delivery.await.expect("written, then aborted").partition);
            }
            seen
        };
        assert_eq!(partitions.len(), 3, "the keys reach every partition");
        producer.abort_transaction().await.unwrap();
        producer.begin_transaction().unwrap();
        producer.send_all(&call("c")).await.unwrap();
        producer.commit_transaction().await.unwrap();

        let mut read = values_of(&client, "keyed", 3, IsolationLevel::ReadCommitted, 30).await;
        read.sort();
        let mut committed: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
        committed.sort();
        assert_eq!(read, committed, "the committed call, once; nothing aborted");
    });
}
