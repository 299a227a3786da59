//! What cluster tests share above the processes: a three-node cluster with a topic and a
//! client, a producer workload that records every acknowledgement and every error, and the
//! checks: every acknowledged record is read back at its acknowledged offset with its
//! value, and once the cluster is stopped, the replicas of each partition hold
//! byte-identical logs (a divergent tail that was not truncated would show there).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Acks, Admin, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, NewTopic,
    OffsetSpec, PartitionId, Producer, ProducerConfig, ProducerRecord,
};

use crate::{cli_ok, wait_until, TestCluster};

/// Acknowledged records: (partition, offset) -> value.
pub type Acked = HashMap<(PartitionId, i64), String>;

/// A two-worker tokio runtime for the test's client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A client of the brokers in `bootstrap` (comma-separated).
pub async fn client(bootstrap: &str) -> Client {
    client_tls(bootstrap, None).await
}

/// A client of the brokers in `bootstrap` (comma-separated), over TLS when `tls` is given.
pub async fn client_tls(bootstrap: &str, tls: Option<&crate::tls::ClientTls>) -> Client {
    Client::connect(ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_string).collect(),
        tls: tls.map(crate::tls::ClientTls::library),
        ..ClientConfig::default()
    })
    .await
    .expect("connect to the cluster")
}

/// `nodes` nodes started with `flags`, a runtime, a client of all of them, and `topic`
/// created with `partitions` partitions, 3 replicas and `configs`, once its ISR is full
/// everywhere.
pub fn cluster_with_topic(
    nodes: usize,
    dir: &Path,
    flags: &[&str],
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> (TestCluster, tokio::runtime::Runtime, Client) {
    let cluster = TestCluster::start(nodes, dir, flags);
    let rt = runtime();
    let client = rt.block_on(client(&cluster.bootstrap()));
    let new = configs
        .iter()
        .fold(NewTopic::new(topic, partitions, 3), |t, (k, v)| {
            t.config(*k, *v)
        });
    rt.block_on(Admin::new(client.clone()).create_topic(new))
        .expect("create topic");
    cluster.wait_isr(topic, 3);
    (cluster, rt, client)
}

/// What a running [`produce_until`] has done so far; `stop` ends it.
#[derive(Default)]
pub struct Progress {
    /// Set to end the workload after its current round.
    pub stop: AtomicBool,
    /// Every acknowledgement.
    pub acked: Mutex<Acked>,
    /// How many acknowledgements so far.
    pub count: AtomicUsize,
    /// Every error the application saw, from `send` or a delivery.
    pub errors: Mutex<Vec<String>>,
}

impl Progress {
    /// Acknowledgements so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until `more` acknowledgements arrived after this call.
    pub fn wait_for_more(&self, what: &str, more: usize) {
        let target = self.count() + more;
        wait_until(what, Duration::from_secs(90), || self.count() >= target);
    }
}

/// Produces unique values to `topic` in acknowledged rounds of 50 until `progress.stop`,
/// recording every acknowledgement and every error.
pub async fn produce_until(
    client: Client,
    topic: String,
    config: ProducerConfig,
    progress: Arc<Progress>,
) {
    let producer = Producer::new(client, config);
    let mut round = 0;
    while !progress.stop.load(Ordering::Acquire) {
        let mut pending = Vec::new();
        for i in 0..50 {
            let value = format!("round-{round}-record-{i}");
            let record = ProducerRecord::new(topic.as_str(), Bytes::from(value.clone()));
            match producer.send(record).await {
                Ok(delivery) => pending.push((value, delivery)),
                Err(e) => {
                    progress.errors.lock().unwrap().push(format!("send: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        producer.flush().await;
        for (value, delivery) in pending {
            match delivery.await {
                Ok(meta) => {
                    progress
                        .acked
                        .lock()
                        .unwrap()
                        .insert((meta.partition, meta.offset), value);
                    progress.count.fetch_add(1, Ordering::AcqRel);
                }
                Err(e) => progress
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("delivery of {value}: {e}")),
            }
        }
        round += 1;
    }
    producer.close().await;
}

/// Sends `values` in order to partition `partition` of `topic` with `acks` and returns
/// where each was acknowledged; panics on any error.
pub async fn produce_values(
    client: &Client,
    topic: &str,
    partition: i32,
    acks: Acks,
    values: &[String],
) -> Vec<(i64, String)> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks,
            ..ProducerConfig::default()
        },
    );
    let mut pending = Vec::new();
    for value in values {
        let record = ProducerRecord::new(topic, Bytes::from(value.clone()))
            .partition(PartitionId(partition));
        pending.push((value.clone(), producer.send(record).await.expect("send")));
    }
    producer.flush().await;
    let mut acked = Vec::new();
    for (value, delivery) in pending {
        let meta = delivery
            .await
            .unwrap_or_else(|e| panic!("{value} not acknowledged: {e}"));
        acked.push((meta.offset, value));
    }
    producer.close().await;
    acked
}

/// Reads every partition of `topic` from the start until at least `n` records arrived and
/// then two polls bring nothing new.
pub async fn read_everything(
    client: &Client,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
    consumer
        .assign(
            (0..partitions)
                .map(|p| (topic.to_string(), PartitionId(p), OffsetSpec::Earliest))
                .collect(),
        )
        .await
        .expect("assign");
    let mut records = Vec::new();
    let mut quiet = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while records.len() < n || quiet < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} records arrived",
            records.len()
        );
        let polled = consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("poll");
        quiet = if polled.is_empty() { quiet + 1 } else { 0 };
        records.extend(polled);
    }
    records
}

/// A record's value as text.
pub fn value_of(record: &ConsumerRecord) -> String {
    String::from_utf8(record.value.as_deref().unwrap_or_default().to_vec()).unwrap()
}

/// Every acknowledged record is at its acknowledged offset with its value, and no offset
/// of a partition was read twice.
pub fn check_acknowledged(records: &[ConsumerRecord], acked: &Acked) {
    let mut read: HashMap<(PartitionId, i64), String> = HashMap::new();
    for r in records {
        let previous = read.insert((r.partition, r.offset), value_of(r));
        assert!(
            previous.is_none(),
            "offset {:?} read twice",
            (r.partition, r.offset)
        );
    }
    let lost: Vec<_> = acked
        .iter()
        .filter(|(at, value)| read.get(*at) != Some(*value))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records are not at their offsets, e.g. {:?}",
        lost.len(),
        acked.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
}

/// The bytes of all `.log` segments of a partition directory, in offset order; `None`
/// when the directory does not exist (the broker hosts no replica of the partition).
pub fn log_bytes(partition_dir: &Path) -> Option<Vec<u8>> {
    let entries = std::fs::read_dir(partition_dir).ok()?;
    let mut logs: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    // The batches of each segment: a runway of zeros after the last is no data.
    Some(
        logs.iter()
            .flat_map(|p| crate::segment_batches(p))
            .collect(),
    )
}

/// Stops every node gracefully and checks that each partition of `topic` has
/// `replication_factor` replicas and that they are byte-identical.
pub fn check_replicas_identical(
    cluster: &mut TestCluster,
    topic: &str,
    partitions: i32,
    replication_factor: usize,
) {
    cluster.stop_all();
    for p in 0..partitions {
        let copies: Vec<(usize, Vec<u8>)> = cluster
            .brokers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let dir = b.data_dir.join("topics").join(format!("{topic}-{p}"));
                log_bytes(&dir).map(|bytes| (i + 1, bytes))
            })
            .collect();
        assert_eq!(
            copies.len(),
            replication_factor,
            "{topic}-{p}: replicas on nodes {:?}",
            copies.iter().map(|(id, _)| id).collect::<Vec<_>>()
        );
        let (first_id, first) = &copies[0];
        for (id, copy) in &copies[1..] {
            assert!(
                copy == first,
                "{topic}-{p}: replica on node {id} ({} bytes) differs from node {first_id}'s \
                 ({} bytes)",
                copy.len(),
                first.len()
            );
        }
    }
}

/// Creates `topic` (one partition) compacted as eagerly as the cleaner allows: 4 KiB
/// segments (records leave the never-compacted active segment soon), tombstones kept for
/// no time, a run as soon as anything is dirty. With a broker's
/// `--log-cleaner-interval-ms 100`, compaction shows within a second.
pub fn create_eagerly_compacted_topic(bootstrap: &str, topic: &str) {
    cli_ok(
        bootstrap,
        &[
            "topic",
            "create",
            topic,
            "-c",
            "cleanup.policy=compact",
            "-c",
            "segment.bytes=4096",
            "-c",
            "delete.retention.ms=0",
            "-c",
            "min.cleanable.dirty.ratio=0.01",
        ],
        "",
    );
}
