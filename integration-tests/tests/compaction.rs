//! Log compaction through real brokers (issue 23): a broker SIGKILLed while its log
//! cleaner rewrites segments restarts with every acknowledged key's latest value at the
//! offset it was acknowledged at, and `__consumer_offsets`, compacted, stays a few
//! segments long however many commits a group makes, with the latest commits read back
//! after a restart.
//!
//! Every wait has a generous bound that only turns a hang into a failure; none measures
//! how fast anything happens.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Acks, Admin, Client, NewTopic, PartitionId, Producer, ProducerConfig, ProducerRecord,
    ResetTarget, TopicPartition,
};
use sluice_integration_tests::checks::{self, client, read_everything, runtime};
use sluice_integration_tests::{cli, scrape, wait_until, BrokerProcess};

/// Sizes of the `.log` files in `dir`, and whether a cleaner's `.cleaned` or `.swap` file
/// is there (a cleaning in progress).
fn segment_files(dir: &Path) -> (u64, bool) {
    let (mut log_bytes, mut cleaning) = (0, false);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, false);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".cleaned") || name.ends_with(".swap") {
            cleaning = true;
        } else if name.ends_with(".log") {
            log_bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    (log_bytes, cleaning)
}

/// Sends `rounds` values of each of `keys` keys to partition 0 of `topic` (acks=all) and
/// returns, per key, the offset and value of its last acknowledged record.
async fn produce_keyed(
    client: &Client,
    topic: &str,
    keys: usize,
    rounds: usize,
) -> BTreeMap<String, (i64, String)> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut pending = Vec::new();
    for round in 0..rounds {
        for k in 0..keys {
            let key = format!("key-{k:04}");
            let value = format!("{key} round {round} {}", "x".repeat(40));
            let record = ProducerRecord::new(topic, Bytes::from(value.clone()))
                .key(Bytes::from(key.clone()))
                .partition(PartitionId(0));
            pending.push((key, value, producer.send(record).await.expect("send")));
        }
    }
    producer.flush().await;
    let mut latest = BTreeMap::new();
    for (key, value, delivery) in pending {
        let meta = delivery
            .await
            .unwrap_or_else(|e| panic!("{value} not acknowledged: {e}"));
        let newer = latest
            .get(&key)
            .is_none_or(|(offset, _): &(i64, String)| *offset < meta.offset);
        if newer {
            latest.insert(key, (meta.offset, value));
        }
    }
    producer.close().await;
    latest
}

/// Reads all of `topic` back and checks it against `acked`: each key's latest value at its
/// offset, nothing older after it, and every record one that was produced. Returns how many
/// records there were.
async fn check_latest(client: &Client, topic: &str, acked: &BTreeMap<String, (i64, String)>) {
    let records = read_everything(client, topic, 1, acked.len()).await;
    let mut last: BTreeMap<String, (i64, String)> = BTreeMap::new();
    let mut previous = -1;
    for record in &records {
        assert!(record.offset > previous, "offsets go up: {records:?}");
        previous = record.offset;
        let key = String::from_utf8(record.key.clone().expect("keyed").to_vec()).unwrap();
        let value = String::from_utf8(record.value.clone().expect("a value").to_vec()).unwrap();
        assert!(value.starts_with(&key), "{key} holds {value}");
        last.insert(key, (record.offset, value));
    }
    assert_eq!(
        &last, acked,
        "after the cleaner, the last record of each key is its last acknowledged one, at the offset it was acknowledged at"
    );
}

#[test]
fn a_broker_killed_while_its_cleaner_rewrites_segments_keeps_every_latest_value() {
    let dir = tempfile::tempdir().unwrap();
    // A slow cleaner (a small I/O budget) that looks often, so the kill lands inside a run.
    let args = [
        "--log-cleaner-interval-ms",
        "100",
        "--log-cleaner-io-bytes-per-sec",
        "400000",
    ];
    let mut broker = BrokerProcess::start(dir.path(), &args);
    let rt = runtime();
    let topic = "profiles";
    let (keys, rounds) = (200, 40);
    let acked = rt.block_on(async {
        let client = client(&broker.bootstrap()).await;
        Admin::new(client.clone())
            .create_topic(
                NewTopic::new(topic, 1, 1)
                    .config("cleanup.policy", "compact")
                    .config("segment.bytes", "16384")
                    .config("min.cleanable.dirty.ratio", "0.01"),
            )
            .await
            .expect("create the compacted topic");
        produce_keyed(&client, topic, keys, rounds).await
    });
    let partition_dir = broker.partition_dir(topic, 0);
    let (before, _) = segment_files(&partition_dir);

    // Three kills, each while a run has cleaned files on disk; then a last run to the end.
    for kill in 0..3 {
        wait_until(
            &format!("a cleaning in progress before kill {kill}"),
            Duration::from_secs(120),
            || segment_files(&partition_dir).1,
        );
        broker.kill();
        broker.restart();
        rt.block_on(async {
            let client = client(&broker.bootstrap()).await;
            check_latest(&client, topic, &acked).await;
        });
    }
    // The cleaner finishes: the log shrinks to about the latest values (one segment of
    // them, plus the active one).
    wait_until(
        "the cleaner to compact the log",
        Duration::from_secs(300),
        || {
            let (bytes, cleaning) = segment_files(&partition_dir);
            !cleaning && bytes * 4 < before
        },
    );
    broker.kill();
    broker.restart();
    rt.block_on(async {
        let client = client(&broker.bootstrap()).await;
        check_latest(&client, topic, &acked).await;
    });
}

#[test]
fn consumer_offsets_stay_small_however_many_commits_a_group_makes() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes: u64 = 32 * 1024;
    let segment_flag = segment_bytes.to_string();
    let args = [
        "--offsets-topic-partitions",
        "1",
        "--offsets-topic-segment-bytes",
        &segment_flag,
        "--log-cleaner-interval-ms",
        "100",
    ];
    let mut broker = BrokerProcess::start(dir.path(), &args);
    let rt = runtime();
    let (topic, group, partitions) = ("clicks", "dashboards", 20);
    let commits = 1500;
    let expected = rt.block_on(async {
        let client = client(&broker.bootstrap()).await;
        let admin = Admin::new(client.clone());
        admin
            .create_topic(NewTopic::new(topic, partitions, 1))
            .await
            .expect("create topic");
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        for p in 0..partitions {
            for i in 0..10 {
                let record = ProducerRecord::new(topic, Bytes::from(format!("r{i}")))
                    .partition(PartitionId(p));
                producer.send(record).await.expect("send");
            }
        }
        producer.flush().await;
        producer.close().await;
        // Each reset commits every partition of the topic: a group committing all of its
        // partitions, over and over, as a busy group does all day.
        for i in 0..commits {
            admin
                .reset_offsets(group, topic, ResetTarget::Offset(i % 11))
                .await
                .expect("commit");
        }
        let expected: BTreeMap<TopicPartition, i64> = (0..partitions)
            .map(|p| {
                let tp = TopicPartition::new(topic, PartitionId(p));
                (tp, (commits - 1) % 11)
            })
            .collect();
        assert_eq!(admin.committed_offsets(group).await.unwrap(), expected);
        // One record per partition and commit went into the group's log.
        let end = client
            .list_offsets("__consumer_offsets", &[(PartitionId(0), -1)])
            .await
            .unwrap();
        let written = *end[0].1.as_ref().unwrap();
        assert!(
            written >= commits * i64::from(partitions),
            "{written} records"
        );
        expected
    });
    let offsets_dir = broker.partition_dir("__consumer_offsets", 0);
    wait_until(
        "__consumer_offsets to be compacted to a few segments",
        Duration::from_secs(300),
        || segment_files(&offsets_dir).0 <= 4 * segment_bytes,
    );
    // A restarted coordinator loads the group from the compacted log: the latest commits.
    broker.terminate();
    broker.restart();
    rt.block_on(async {
        let admin = Admin::new(client(&broker.bootstrap()).await);
        assert_eq!(admin.committed_offsets(group).await.unwrap(), expected);
    });
}

#[test]
fn a_tombstone_deletes_its_key_and_a_record_without_a_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path(), &["--log-cleaner-interval-ms", "100"]);
    let bootstrap = broker.bootstrap();
    let topic = "prices";
    checks::create_eagerly_compacted_topic(&bootstrap, topic);
    // A keyless record cannot be kept by key: refused, saying what to do, nothing written.
    let refused = cli(&bootstrap, &["produce", topic], "no key here\n");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a keyless record was accepted");
    assert!(
        stderr.contains("compacted") && stderr.contains("key"),
        "the error says the topic is compacted and the record needs a key: {stderr}"
    );

    let rt = runtime();
    let survivors = rt.block_on(async {
        let client = client(&bootstrap).await;
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        let send = |record: ProducerRecord| {
            let producer = &producer;
            async move {
                producer
                    .send(record.partition(PartitionId(0)))
                    .await
                    .expect("send")
                    .await
                    .expect("acknowledged")
                    .offset
            }
        };
        let apple = send(ProducerRecord::new(topic, "1.10").key("apple")).await;
        send(ProducerRecord::new(topic, "0.50").key("banana")).await;
        let deleted = send(ProducerRecord::tombstone(topic, "banana")).await;
        // Enough later records of other keys to roll the tombstone's segment, twice each so
        // the fillers compact too.
        for round in 0..2 {
            for i in 0..60 {
                let value = format!("{round} {}", "y".repeat(100));
                send(ProducerRecord::new(topic, value).key(format!("filler-{i}"))).await;
            }
        }
        producer.close().await;
        assert!(deleted > apple);
        // The cleaner removes banana's value and then its tombstone (delete.retention.ms
        // 0); apple's one record stays at its offset.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let records = read_everything(&client, topic, 1, 1).await;
            let banana = records
                .iter()
                .any(|r| r.key.as_deref() == Some(b"banana".as_slice()));
            // 123 records were written; the active segment's are never compacted (nor the
            // older records of its keys: the cleaner maps only sealed segments' keys).
            if !banana && records.len() < 100 {
                break records;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "banana still there, or nothing compacted: {} records",
                records.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(b"apple".as_slice()))
        .map(|r| (r.offset, r.value.unwrap()))
        .collect::<Vec<_>>()
    });
    assert_eq!(survivors, vec![(0, Bytes::from("1.10"))]);
    // Counted just after the swap the reads above saw.
    wait_until("the cleaner's metrics", Duration::from_secs(30), || {
        scrape(broker.http_addr())["sluice_log_cleaner_runs_total"] >= 1.0
    });
    let metrics = scrape(broker.http_addr());
    assert!(metrics["sluice_log_cleaner_records_removed_total"] >= 2.0);
    assert!(metrics["sluice_log_cleaner_bytes_reclaimed_total"] > 0.0);
}
