//! A real `sluice-broker` process on 127.0.0.1, driven through the client library: round
//! trips, long polls, restarts, SIGKILL after acknowledgements, and a torn last segment.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Admin, Client, Consumer, ConsumerConfig, ConsumerRecord, NewTopic, OffsetSpec, PartitionId,
    Producer, ProducerConfig, ProducerRecord,
};
use sluice_integration_tests::checks::{read_everything, runtime};
use sluice_integration_tests::{cli_ok, segment_batches_end, BrokerProcess};

async fn client(broker: &BrokerProcess) -> Client {
    sluice_integration_tests::checks::client(&broker.bootstrap()).await
}

#[test]
fn round_trip_of_100k_keyed_records_keeps_keys_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let client = client(&broker).await;
        Admin::new(client.clone())
            .create_topic(NewTopic::new("round-trip", 4, 1))
            .await
            .unwrap();
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        const N: usize = 100_000;
        let mut deliveries = Vec::with_capacity(N);
        for i in 0..N {
            let record = ProducerRecord::new("round-trip", Bytes::from(i.to_string()))
                .key(Bytes::from(format!("key-{}", i % 1000)));
            deliveries.push(producer.send(record).await.expect("enqueue"));
        }
        producer.flush().await;
        let mut acked = HashMap::new();
        let mut key_partition: HashMap<usize, PartitionId> = HashMap::new();
        for (i, delivery) in deliveries.into_iter().enumerate() {
            let meta = delivery.await.expect("acknowledged");
            let previous = key_partition.insert(i % 1000, meta.partition);
            assert!(
                previous.is_none_or(|p| p == meta.partition),
                "key-{} went to two partitions",
                i % 1000
            );
            acked.insert((meta.partition, meta.offset), i);
        }
        assert_eq!(acked.len(), N, "every record got its own offset");
        let partitions_used: std::collections::BTreeSet<_> = key_partition.values().collect();
        assert_eq!(
            partitions_used.len(),
            4,
            "1000 keys spread over all partitions"
        );

        let records = read_everything(&client, "round-trip", 4, N).await;
        assert_eq!(records.len(), N, "no record twice");
        let mut last_per_partition: BTreeMap<PartitionId, usize> = BTreeMap::new();
        for record in &records {
            let value: usize = std::str::from_utf8(record.value.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                acked.get(&(record.partition, record.offset)),
                Some(&value),
                "record at {:?}/{} is the one acknowledged there",
                record.partition,
                record.offset
            );
            let key = record.key.as_deref().unwrap();
            assert_eq!(key, format!("key-{}", value % 1000).as_bytes());
            if let Some(previous) = last_per_partition.insert(record.partition, value) {
                assert!(previous < value, "order kept within {:?}", record.partition);
            }
        }
    });
}

#[test]
fn a_long_poll_returns_as_soon_as_a_record_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let client = client(&broker).await;
        Admin::new(client.clone())
            .create_topic(NewTopic::new("waits", 1, 1))
            .await
            .unwrap();
        let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
        consumer
            .assign(vec![("waits".into(), PartitionId(0), OffsetSpec::Latest)])
            .await
            .unwrap();
        // The consumer polls with a long timeout; the record sent meanwhile must end the poll
        // (the timeout only bounds a failure).
        let polling = tokio::spawn(async move {
            loop {
                let records = consumer.poll(Duration::from_secs(60)).await.unwrap();
                if !records.is_empty() {
                    return records;
                }
            }
        });
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = producer
            .send(ProducerRecord::new("waits", "wake up"))
            .await
            .unwrap()
            .await
            .unwrap();
        let records = tokio::time::timeout(Duration::from_secs(60), polling)
            .await
            .expect("the poll returned once the record arrived")
            .unwrap();
        assert_eq!(records[0].offset, sent.offset);
        assert_eq!(records[0].value.as_deref(), Some(&b"wake up"[..]));
    });
}

#[test]
fn a_graceful_restart_keeps_topics_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    cli_ok(
        &bootstrap,
        &[
            "topic",
            "create",
            "kept",
            "-p",
            "2",
            "-c",
            "retention.ms=3600000",
        ],
        "",
    );
    cli_ok(
        &bootstrap,
        &["produce", "kept", "--key-separator", "="],
        "a=1\nb=2\nc=3\n",
    );
    let status = broker.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(
        broker.log().contains("shut down cleanly"),
        "{}",
        broker.log()
    );

    broker.restart();
    let described = cli_ok(
        &bootstrap,
        &["topic", "describe", "kept", "--format", "json"],
        "",
    );
    let described: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(described["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(described["config"]["retention.ms"], "3600000");
    let consumed = cli_ok(
        &bootstrap,
        &[
            "consume",
            "kept",
            "--from-beginning",
            "-n",
            "3",
            "--timeout-ms",
            "10000",
            "--key-separator",
            "=",
        ],
        "",
    );
    let mut lines: Vec<&str> = consumed.lines().collect();
    lines.sort();
    assert_eq!(lines, ["a=1", "b=2", "c=3"]);
}

/// Produces `n` records one acknowledged batch at a time (so the log holds many batches)
/// and returns (partition, offset) -> value of every acknowledgement.
async fn produce_acked(
    client: &Client,
    topic: &str,
    n: usize,
    batches: usize,
) -> HashMap<(PartitionId, i64), String> {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let mut acked = HashMap::new();
    for b in 0..batches {
        let mut pending = Vec::new();
        for i in 0..n / batches {
            let value = format!("batch-{b}-record-{i}");
            let record =
                ProducerRecord::new(topic, Bytes::from(value.clone())).partition(PartitionId(0));
            pending.push((value, producer.send(record).await.unwrap()));
        }
        producer.flush().await;
        for (value, delivery) in pending {
            let meta = delivery.await.expect("acknowledged");
            acked.insert((meta.partition, meta.offset), value);
        }
    }
    acked
}

fn check_all_present(records: &[ConsumerRecord], acked: &HashMap<(PartitionId, i64), String>) {
    let read: HashMap<(PartitionId, i64), String> = records
        .iter()
        .map(|r| {
            let value = String::from_utf8(r.value.as_deref().unwrap().to_vec()).unwrap();
            ((r.partition, r.offset), value)
        })
        .collect();
    for (at, value) in acked {
        assert_eq!(
            read.get(at),
            Some(value),
            "acknowledged record at {at:?} survived"
        );
    }
}

#[test]
fn sigkill_right_after_acks_all_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let rt = runtime();
    let acked = rt.block_on(async {
        let client = client(&broker).await;
        Admin::new(client.clone())
            .create_topic(NewTopic::new("durable", 1, 1))
            .await
            .unwrap();
        produce_acked(&client, "durable", 5000, 10).await
    });
    broker.kill();
    broker.restart();
    rt.block_on(async {
        let client = client(&broker).await;
        let records = read_everything(&client, "durable", 1, acked.len()).await;
        check_all_present(&records, &acked);
    });
}

/// The newest `.log` file of a partition directory.
fn newest_segment(partition_dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(partition_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment file")
}

#[test]
fn a_torn_last_segment_is_recovered_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut broker = BrokerProcess::start(&data, &[]);
    let rt = runtime();
    let acked = rt.block_on(async {
        let client = client(&broker).await;
        Admin::new(client.clone())
            .create_topic(NewTopic::new("torn", 1, 1))
            .await
            .unwrap();
        produce_acked(&client, "torn", 100, 10).await
    });
    broker.kill();
    // Tear the last batch as a crash in the middle of a write would: cut its last 7 bytes
    // (and the runway of zeros after it, if the broker wrote one).
    let segment = newest_segment(&data.join("topics").join("torn-0"));
    let len = segment_batches_end(&segment);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    broker.restart();
    assert!(
        broker.log().contains("recovered"),
        "recovery is logged:\n{}",
        broker.log()
    );
    rt.block_on(async {
        let client = client(&broker).await;
        // The last batch (offsets 90..100) is gone; everything before it is intact.
        let survivors: HashMap<_, _> = acked
            .into_iter()
            .filter(|((_, offset), _)| *offset < 90)
            .collect();
        let records = read_everything(&client, "torn", 1, survivors.len()).await;
        check_all_present(&records, &survivors);
        assert!(
            records.iter().all(|r| r.offset < 90),
            "nothing of the torn batch is served"
        );
        // The log continues where the intact part ends.
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        let meta = producer
            .send(ProducerRecord::new("torn", "after recovery"))
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(meta.offset, 90);
    });
}

/// Issue 27: two brokers on one data directory lost acknowledged records. The second one
/// must refuse to start, at once, naming the directory and the process that holds it; the
/// first one's records stay whole, and a lock left by a SIGKILLed broker blocks nothing.
#[test]
fn a_second_broker_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = BrokerProcess::start(&data, &[]);
    let bootstrap = first.bootstrap();
    cli_ok(&bootstrap, &["topic", "create", "shared"], "");
    cli_ok(&bootstrap, &["produce", "shared"], "1\n2\n3\n4\n5\n");

    let second_addr = sluice_integration_tests::free_addr([127, 0, 0, 1].into());
    let mut second = std::process::Command::new(sluice_integration_tests::bin("sluice-broker"))
        .arg("--listen")
        .arg(second_addr.to_string())
        .arg("--data-dir")
        .arg(&data)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second sluice-broker");
    // It must exit by itself; a deadline only keeps a regression from hanging the suite.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second broker on a locked data directory kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the second broker exits non-zero");
    assert!(stderr.contains(&data.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("in use by another sluice-broker"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("process {}", first_pid(&data))),
        "{stderr}"
    );

    // The first broker goes on, then dies by SIGKILL; its lock must not block the restart.
    cli_ok(&bootstrap, &["produce", "shared"], "6\n7\n8\n9\n10\n");
    first.kill();
    first.restart();
    let consumed = cli_ok(
        &bootstrap,
        &[
            "consume",
            "shared",
            "--from-beginning",
            "-n",
            "10",
            "--timeout-ms",
            "10000",
        ],
        "",
    );
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
}

/// The process id the data directory's lock file names.
fn first_pid(data: &Path) -> u32 {
    std::fs::read_to_string(data.join(".lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
