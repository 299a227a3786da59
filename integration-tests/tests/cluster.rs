//! Three real `sluice-broker` processes on 127.0.0.1 (every node a controller voter),
//! driven through the client library and the CLI: replication, leader failover under
//! acks=all load with back-to-back leader changes (KIP-101/279 truncation), ISR below
//! `min.insync.replicas`, and a paused leader that comes back after it was replaced.
//!
//! The checks: every acknowledged record is read back at its acknowledged offset with its
//! value; and once everything is healed and stopped, the replicas of each partition hold
//! byte-identical logs (a divergent tail that was not truncated would show here).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Acks, Admin, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode,
    NewTopic, OffsetSpec, PartitionId, Producer, ProducerConfig, ProducerRecord,
};
use sluice_integration_tests::{cli_ok, wait_until, TestCluster};

type Acked = HashMap<(PartitionId, i64), String>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn client(bootstrap: &str) -> Client {
    Client::connect(ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_string).collect(),
        ..ClientConfig::default()
    })
    .await
    .expect("connect to the cluster")
}

/// Three nodes, a runtime, a client of all of them, and `topic` created with `partitions`
/// partitions, 3 replicas and `configs`, once its ISR is full everywhere.
fn three_nodes_with_topic(
    dir: &Path,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> (TestCluster, tokio::runtime::Runtime, Client) {
    let cluster = TestCluster::start(3, dir, &[]);
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

/// Produces unique values with acks=all in acknowledged rounds until `stop`, recording
/// every acknowledgement in `acked`.
async fn produce_until(
    client: Client,
    topic: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
    count: Arc<AtomicUsize>,
) {
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut round = 0;
    while !stop.load(Ordering::Acquire) {
        let mut pending = Vec::new();
        for i in 0..50 {
            let value = format!("round-{round}-record-{i}");
            let record = ProducerRecord::new(topic.as_str(), Bytes::from(value.clone()));
            match producer.send(record).await {
                Ok(delivery) => pending.push((value, delivery)),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        producer.flush().await;
        for (value, delivery) in pending {
            if let Ok(meta) = delivery.await {
                acked
                    .lock()
                    .unwrap()
                    .insert((meta.partition, meta.offset), value);
                count.fetch_add(1, Ordering::AcqRel);
            }
        }
        round += 1;
    }
    producer.close().await;
}

/// Reads every partition of `topic` from the start until at least `n` records arrived and
/// then two polls bring nothing new.
async fn read_everything(
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

/// Every acknowledged record is at its acknowledged offset with its value, and no offset
/// of a partition was read twice.
fn check_acknowledged(records: &[ConsumerRecord], acked: &Acked) {
    let mut read: HashMap<(PartitionId, i64), String> = HashMap::new();
    for r in records {
        let value = String::from_utf8(r.value.as_deref().unwrap().to_vec()).unwrap();
        let previous = read.insert((r.partition, r.offset), value);
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

/// The bytes of all `.log` segments of a partition directory, in offset order.
fn log_bytes(partition_dir: &Path) -> Vec<u8> {
    let mut logs: Vec<_> = std::fs::read_dir(partition_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// Stops every node gracefully and checks that each partition's replicas are identical.
fn check_replicas_identical(cluster: &mut TestCluster, topic: &str, partitions: i32) {
    for broker in &mut cluster.brokers {
        if broker.is_running() {
            assert!(
                broker.terminate().success(),
                "graceful stop:\n{}",
                broker.log()
            );
        }
    }
    for p in 0..partitions {
        let copies: Vec<Vec<u8>> = cluster
            .brokers
            .iter()
            .map(|b| log_bytes(&b.data_dir.join("topics").join(format!("{topic}-{p}"))))
            .collect();
        for (i, copy) in copies.iter().enumerate().skip(1) {
            assert!(
                *copy == copies[0],
                "{topic}-{p}: replica on node {} ({} bytes) differs from node 1's ({} bytes)",
                i + 1,
                copy.len(),
                copies[0].len()
            );
        }
    }
}

#[test]
fn three_nodes_replicate_and_describe_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    let bootstrap = cluster.bootstrap();
    let described = cluster.describe().expect("cluster describe");
    assert_eq!(
        described["controller"]["voters"].as_array().unwrap().len(),
        3
    );
    assert!(described["controller"]["leader"].as_i64().unwrap() >= 1);
    cli_ok(
        &bootstrap,
        &["topic", "create", "r3", "-p", "3", "-r", "3"],
        "",
    );
    cluster.wait_isr("r3", 3);
    let topic = cluster.describe_topic("r3").unwrap();
    let leaders: Vec<i64> = topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["leader"].as_i64().unwrap())
        .collect();
    let mut distinct = leaders.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "leaders spread over the brokers: {leaders:?}"
    );
    let input: String = (0..300).map(|i| format!("k{i}|v{i}\n")).collect();
    cli_ok(
        &bootstrap,
        &["produce", "r3", "--key-separator", "|"],
        &input,
    );
    let out = cli_ok(
        &bootstrap,
        &[
            "consume",
            "r3",
            "--from-beginning",
            "-n",
            "300",
            "--timeout-ms",
            "20000",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 300);
    check_replicas_identical(&mut cluster, "r3", 3);
}

#[test]
fn leader_sigkills_under_acks_all_load_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, rt, client) =
        three_nodes_with_topic(dir.path(), "failover", 3, &[("min.insync.replicas", "2")]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acked::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let producing = rt.spawn(produce_until(
        client.clone(),
        "failover".into(),
        Arc::clone(&stop),
        Arc::clone(&acked),
        Arc::clone(&count),
    ));
    // Back-to-back leader changes: kill partition 0's leader, bring it back (it rejoins as
    // a follower that may hold an unreplicated tail), then kill the next leader.
    for _ in 0..2 {
        let before = count.load(Ordering::Acquire);
        wait_until(
            "acknowledgements before the kill",
            Duration::from_secs(60),
            || count.load(Ordering::Acquire) >= before + 300,
        );
        let leader = cluster.leader("failover", 0);
        assert!(leader >= 1, "partition 0 has a leader");
        cluster.node(leader as i32).kill();
        let at_kill = count.load(Ordering::Acquire);
        wait_until(
            "acknowledgements after the kill (failover)",
            Duration::from_secs(60),
            || count.load(Ordering::Acquire) >= at_kill + 300,
        );
        cluster.node(leader as i32).restart();
        cluster.wait_isr("failover", 3);
    }
    stop.store(true, Ordering::Release);
    rt.block_on(producing).unwrap();
    let acked = acked.lock().unwrap().clone();
    let records = rt.block_on(read_everything(&client, "failover", 3, acked.len()));
    check_acknowledged(&records, &acked);
    drop(client);
    drop(rt);
    check_replicas_identical(&mut cluster, "failover", 3);
}

#[test]
fn an_isr_below_min_insync_refuses_acks_all_until_the_replica_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, rt, client) =
        three_nodes_with_topic(dir.path(), "strict", 1, &[("min.insync.replicas", "3")]);
    let produce = |acks: Acks, value: &str| {
        let record = ProducerRecord::new("strict", Bytes::from(value.to_string()));
        rt.block_on(async {
            let producer = Producer::new(
                client.clone(),
                ProducerConfig {
                    acks,
                    delivery_timeout: Duration::from_secs(3),
                    ..ProducerConfig::default()
                },
            );
            let delivery = producer.send(record).await?;
            producer.flush().await;
            delivery.await
        })
    };
    let first = produce(Acks::All, "before").expect("acks=all with a full ISR");
    let leader = cluster.leader("strict", 0);
    let follower = (1..=3).find(|id| *id != leader as i32).unwrap();
    cluster.node(follower).kill();
    wait_until("the ISR to shrink", Duration::from_secs(30), || {
        cluster.describe_topic("strict").is_some_and(|d| {
            d["partitions"][0]["isr"]
                .as_array()
                .is_some_and(|isr| isr.len() == 2)
        })
    });
    let refused = produce(Acks::All, "refused").expect_err("acks=all with ISR 2 < 3");
    // The producer retries NOT_ENOUGH_REPLICAS until its delivery timeout, then fails
    // with the broker's last answer.
    assert!(
        refused.code() == Some(ErrorCode::NotEnoughReplicas)
            || refused
                .to_string()
                .contains("fewer than min.insync.replicas=3"),
        "{refused}"
    );
    produce(Acks::Leader, "acks-1").expect("acks=1 still works");
    cluster.node(follower).restart();
    cluster.wait_isr("strict", 3);
    let last = produce(Acks::All, "after").expect("acks=all once the replica is back");
    let records = rt.block_on(read_everything(&client, "strict", 1, 3));
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.as_deref().unwrap().to_vec()).unwrap())
        .collect();
    assert!(!values.contains(&"refused".to_string()), "{values:?}");
    assert_eq!(values.first().map(String::as_str), Some("before"));
    assert_eq!(records[0].offset, first.offset);
    assert!(records.iter().any(|r| r.offset == last.offset));
    drop(client);
    drop(rt);
    check_replicas_identical(&mut cluster, "strict", 1);
}

#[test]
fn a_paused_leader_is_replaced_and_rejoins_as_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, rt, all_client) = three_nodes_with_topic(dir.path(), "paused", 1, &[]);
    let old = cluster.leader("paused", 0) as i32;
    cluster.node(old).pause();
    let others: Vec<String> = (1..=3)
        .filter(|id| *id != old)
        .map(|id| cluster.brokers[(id - 1) as usize].bootstrap())
        .collect();
    let others = others.join(",");
    wait_until("a new leader", Duration::from_secs(120), || {
        let leader = cluster.leader("paused", 0);
        leader >= 1 && leader != old as i64
    });
    let acked = rt.block_on(async {
        let client = client(&others).await;
        let producer = Producer::new(
            client,
            ProducerConfig {
                acks: Acks::All,
                ..ProducerConfig::default()
            },
        );
        let delivery = producer
            .send(ProducerRecord::new(
                "paused",
                Bytes::from_static(b"while paused"),
            ))
            .await
            .unwrap();
        producer.flush().await;
        delivery.await.expect("the new leader acknowledges")
    });
    cluster.node(old).resume();
    cluster.wait_isr("paused", 3);
    let records = rt.block_on(read_everything(&all_client, "paused", 1, 1));
    assert!(records
        .iter()
        .any(|r| r.offset == acked.offset && r.value.as_deref() == Some(&b"while paused"[..])));
    drop(all_client);
    drop(rt);
    check_replicas_identical(&mut cluster, "paused", 1);
}
