//! The Kafka-protocol listener against real Kafka clients that nobody here wrote:
//! kafka-python (its own pure-Python protocol code), confluent-kafka (librdkafka 2.16, in
//! its wheel), kcat (Debian's, librdkafka 2.0.2) and the `rdkafka` crate (Debian's
//! librdkafka 2.0.2, linked dynamically). Each test starts its own broker(s) with a Kafka
//! listener on a free port, runs one scenario of a script in `kafka-clients/` (or drives
//! rdkafka itself) with a deadline, and asserts on the script's JSON summary; the script
//! has checked the details (see each script's docstring).
//!
//! Topics are created through the sluice CLI unless creating them is what the scenario
//! tests, so a failure points at one request family. Without the Python venv or kcat a
//! test says why it skipped, except under CI (`CI=true`), where that is a failure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig as KafkaConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use sluice_integration_tests::kafka::{self, ClientRun, CLIENT_TIMEOUT};
use sluice_integration_tests::{cli_ok, BrokerProcess, TestCluster};

/// Runs `scenario` of `script` with `program` (a python) against `bootstrap` and `topic`,
/// with `extra` arguments.
fn scenario(
    program: &Path,
    script: &str,
    scenario: &str,
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
) -> ClientRun {
    let mut args = vec![
        kafka::script(script).display().to_string(),
        scenario.to_string(),
        "--bootstrap".to_string(),
        bootstrap.to_string(),
        "--topic".to_string(),
        topic.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    kafka::run_client(program, &args, CLIENT_TIMEOUT)
}

/// The venv's python, or `None` (the test skipped; see [`kafka::require`]).
fn python(test: &str) -> Option<PathBuf> {
    kafka::require(test, kafka::python_clients())
}

/// A python to run the kcat driver with (it needs no package), once kcat is there.
fn kcat_driver(test: &str) -> Option<PathBuf> {
    kafka::require(test, kafka::kcat())?;
    Some(PathBuf::from("python3"))
}

/// A broker with a Kafka listener, in `dir`.
fn broker(dir: &Path) -> BrokerProcess {
    BrokerProcess::start_with_kafka(&dir.join("data"), &[])
}

/// `sluice topic create NAME -p PARTITIONS` through the native listener.
fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    cli_ok(
        bootstrap,
        &["topic", "create", topic, "-p", &partitions.to_string()],
        "",
    );
}

/// The topics `sluice topic list` shows, with their partition counts.
fn sluice_topics(bootstrap: &str) -> BTreeMap<String, i64> {
    let listed: Value = serde_json::from_str(&cli_ok(
        bootstrap,
        &["topic", "list", "--format", "json"],
        "",
    ))
    .expect("topic list json");
    listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["partitions"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn kafka_python_readme_snippet_round_trips_on_an_auto_created_topic() {
    let Some(python) = python("kafka_python_readme_snippet") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let run = kafka::run_client(
        &python,
        &[
            kafka::script("snippet.py").display().to_string(),
            broker.kafka_bootstrap(),
            "my_topic".to_string(),
        ],
        CLIENT_TIMEOUT,
    );
    let summary = run.expect_ok(&broker.log());
    assert_eq!(summary["values"], json!(["Hello, World!"]));
    // The broker created the topic for the clients' Metadata request, as sluice's own.
    assert!(sluice_topics(&broker.bootstrap()).contains_key("my_topic"));
}

#[test]
fn kafka_python_admin_creates_lists_and_deletes_topics() {
    let Some(python) = python("kafka_python_admin") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "admin",
        &broker.kafka_bootstrap(),
        "kp-admin",
        &[],
    )
    .expect_ok(&broker.log());
    assert_eq!(
        summary["partitions"],
        json!({"kp-admin": 3, "kp-admin-2": 1})
    );
    assert_eq!(summary["remaining"], json!(["kp-admin-2"]));
    let topics = sluice_topics(&broker.bootstrap());
    assert_eq!(topics.get("kp-admin-2"), Some(&1), "{topics:?}");
    assert!(!topics.contains_key("kp-admin"), "{topics:?}");
}

#[test]
fn kafka_python_keys_land_where_javas_murmur2_puts_them() {
    let Some(python) = python("kafka_python_partitioner") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "keys", 4);
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "partitioner",
        &broker.kafka_bootstrap(),
        "keys",
        &[],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["records"], 1000);
    assert_eq!(summary["partitions"], 4);
    assert_eq!(summary["partitions_used"], json!([0, 1, 2, 3]));
    // Read natively, each record is where sluice's own partitioner puts its key.
    let consumed = cli_ok(
        &broker.bootstrap(),
        &[
            "consume",
            "keys",
            "--from-beginning",
            "--format",
            "json",
            "-n",
            "1000",
            "--timeout-ms",
            "10000",
        ],
        "",
    );
    let mut seen = 0;
    for line in consumed.lines() {
        let record: Value = serde_json::from_str(line).expect("consume json");
        let key = record["key"].as_str().expect("a text key");
        let expected = sluice_client::partition_for_key(key.as_bytes(), 4);
        assert_eq!(record["partition"], expected.0, "{record}");
        seen += 1;
    }
    assert_eq!(seen, 1000);
}

#[test]
fn kafka_python_headers_survive_a_round_trip() {
    let Some(python) = python("kafka_python_headers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "headers", 1);
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "headers",
        &broker.kafka_bootstrap(),
        "headers",
        &[],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["records"], 5);
    assert_eq!(summary["headers"], 7);
}

#[test]
fn kafka_python_group_resumes_after_its_commit() {
    let Some(python) = python("kafka_python_group_resume") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "kp-resume", 3);
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "group-resume",
        &broker.kafka_bootstrap(),
        "kp-resume",
        &["--group", "kp-resume", "-n", "100", "-m", "50"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["second_read"], 50);
    // The group is sluice's own: the native CLI sees its commits at the log end.
    let described: Value = serde_json::from_str(&cli_ok(
        &broker.bootstrap(),
        &["group", "describe", "kp-resume", "--format", "json"],
        "",
    ))
    .expect("group describe json");
    let lags: Vec<i64> = described["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| o["lag"].as_i64().unwrap_or(-1))
        .collect();
    assert!(!lags.is_empty(), "{described}");
    // Consumer 2 closed without committing, so the lag is what it read after the commit.
    assert_eq!(lags.iter().sum::<i64>(), 50, "{described}");
}

#[test]
fn kafka_python_two_members_split_the_partitions() {
    let Some(python) = python("kafka_python_group_split") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "kp-split", 4);
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "group-split",
        &broker.kafka_bootstrap(),
        "kp-split",
        &["--group", "kp-split", "--partitions", "4"],
    )
    .expect_ok(&broker.log());
    let shares: Vec<BTreeSet<i64>> = summary["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_i64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(shares.len(), 2);
    assert!(shares.iter().all(|s| !s.is_empty()), "{shares:?}");
    assert!(shares[0].is_disjoint(&shares[1]), "{shares:?}");
    let all: BTreeSet<i64> = shares[0].union(&shares[1]).copied().collect();
    assert_eq!(all, (0..4).collect(), "{shares:?}");
}

#[test]
fn confluent_idempotent_producer_writes_each_record_once_in_order() {
    let Some(python) = python("confluent_idempotent") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "idem", 3);
    let summary = scenario(
        &python,
        "confluent_client.py",
        "idempotent",
        &broker.kafka_bootstrap(),
        "idem",
        &["--group", "idem-readers", "-n", "2000"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["records"], 2000);
    assert_eq!(summary["partitions"], json!([0, 1, 2]));
}

#[test]
fn confluent_admin_creates_and_deletes_topics() {
    let Some(python) = python("confluent_admin") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let summary = scenario(
        &python,
        "confluent_client.py",
        "admin",
        &broker.kafka_bootstrap(),
        "ck-admin",
        &[],
    )
    .expect_ok(&broker.log());
    assert_eq!(
        summary["partitions"],
        json!({"ck-admin": 3, "ck-admin-2": 1})
    );
    let topics = sluice_topics(&broker.bootstrap());
    assert_eq!(topics.get("ck-admin-2"), Some(&1), "{topics:?}");
    assert!(!topics.contains_key("ck-admin"), "{topics:?}");
}

#[test]
fn confluent_group_resumes_after_its_commit() {
    let Some(python) = python("confluent_group_resume") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "ck-resume", 3);
    let summary = scenario(
        &python,
        "confluent_client.py",
        "group-resume",
        &broker.kafka_bootstrap(),
        "ck-resume",
        &["--group", "ck-resume", "-n", "100", "-m", "50"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["second_read"], 50);
}

#[test]
fn kcat_produces_keyed_lines_and_consumes_to_the_end() {
    let Some(python) = kcat_driver("kcat_produce_consume") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "lines", 4);
    let summary = scenario(
        &python,
        "kcat_driver.py",
        "produce-consume",
        &broker.kafka_bootstrap(),
        "lines",
        &["-n", "500"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["records"], 500);
    assert_eq!(summary["partitions_used"], json!([0, 1, 2, 3]));
}

#[test]
fn kcat_metadata_lists_the_broker_at_its_kafka_address() {
    let Some(python) = kcat_driver("kcat_metadata") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "described", 2);
    let summary = scenario(
        &python,
        "kcat_driver.py",
        "metadata",
        &broker.kafka_bootstrap(),
        "described",
        &[],
    )
    .expect_ok(&broker.log());
    assert_eq!(
        summary["brokers"],
        json!([{"id": 1, "name": broker.kafka_bootstrap()}])
    );
    assert_eq!(summary["partitions"], 2);
}

#[test]
fn kcat_balanced_consumer_resumes_its_group() {
    let Some(python) = kcat_driver("kcat_group") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "kc-group", 3);
    let summary = scenario(
        &python,
        "kcat_driver.py",
        "group",
        &broker.kafka_bootstrap(),
        "kc-group",
        &["--group", "kc-group", "-n", "100", "-m", "40"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["first"], 100);
    assert_eq!(summary["second"], 40);
}

/// A client configuration for rdkafka against `bootstrap`.
fn rdkafka_config(bootstrap: &str) -> KafkaConfig {
    let mut config = KafkaConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "10000")
        .set("log_level", "4");
    config
}

/// An idempotent acks=all producer.
fn idempotent_producer(bootstrap: &str) -> FutureProducer {
    rdkafka_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("create the rdkafka producer")
}

/// Where each record was acknowledged: value -> (partition, offset).
type Acknowledged = HashMap<String, (i32, i64)>;

/// Produces `n` keyed records (values `v0..`) to `topic` and waits for every delivery;
/// panics on a failed one.
async fn produce_n(producer: &FutureProducer, topic: &str, n: usize) -> Acknowledged {
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("k{}", i % 37);
        let value = format!("v{i}");
        let record = FutureRecord::to(topic).key(&key).payload(&value);
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push((value, delivery)),
            Err((e, _)) => panic!("enqueue record {i}: {e}"),
        }
    }
    let mut acked = Acknowledged::new();
    for (value, delivery) in deliveries {
        match delivery.await.expect("delivery report") {
            Ok((partition, offset)) => assert!(acked.insert(value, (partition, offset)).is_none()),
            Err((e, _)) => panic!("record {value} failed: {e}"),
        }
    }
    acked
}

#[test]
fn rdkafka_future_producer_and_stream_consumer_group_see_every_record_once() {
    const N: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "rdk", 3);
    let bootstrap = broker.kafka_bootstrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), async {
            let producer = idempotent_producer(&bootstrap);
            let acked = produce_n(&producer, "rdk", N).await;
            let consumer: StreamConsumer = rdkafka_config(&bootstrap)
                .set("group.id", "rdk-group")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .create()
                .expect("create the rdkafka consumer");
            consumer.subscribe(&["rdk"]).expect("subscribe");
            let mut read: HashMap<String, (i32, i64)> = HashMap::new();
            let mut duplicates = Vec::new();
            while read.len() < N {
                let message = consumer.recv().await.expect("a record");
                let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
                let place = (message.partition(), message.offset());
                if read.insert(value.to_string(), place).is_some() {
                    duplicates.push(value.to_string());
                }
            }
            consumer
                .commit_consumer_state(CommitMode::Sync)
                .expect("commit");
            let committed = consumer
                .committed(Duration::from_secs(10))
                .expect("committed offsets");
            (acked, read, duplicates, committed)
        })
        .await
    });
    let (acked, read, duplicates, committed) = outcome.unwrap_or_else(|_| {
        panic!(
            "rdkafka produce and consume did not finish in 120 s:\n{}",
            broker.log()
        )
    });
    assert!(duplicates.is_empty(), "read twice: {duplicates:?}");
    assert_eq!(read, acked, "records read elsewhere than acknowledged");
    // The committed offset of each partition is its log end.
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for &(partition, offset) in acked.values() {
        let end = ends.entry(partition).or_default();
        *end = (*end).max(offset + 1);
    }
    for (partition, end) in ends {
        let offset = committed
            .find_partition("rdk", partition)
            .map(|e| e.offset());
        assert_eq!(offset, Some(Offset::Offset(end)), "partition {partition}");
    }
}

#[test]
fn three_brokers_kcat_lists_every_broker_at_its_kafka_port() {
    let Some(python) = kcat_driver("three_brokers_kcat_metadata") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start_with_kafka(3, dir.path(), &[]);
    cli_ok(
        &cluster.bootstrap(),
        &["topic", "create", "r3", "-p", "3", "-r", "3"],
        "",
    );
    cluster.wait_isr("r3", 3);
    let summary = scenario(
        &python,
        "kcat_driver.py",
        "metadata",
        &cluster.kafka_bootstrap(),
        "r3",
        &[],
    )
    .expect_ok(&cluster.brokers[0].log());
    let expected: Vec<Value> = cluster
        .brokers
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"id": i + 1, "name": b.kafka_bootstrap()}))
        .collect();
    assert_eq!(summary["brokers"], Value::Array(expected));
    assert_eq!(
        summary["replicas"],
        json!([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    );
}

/// What the failover producer saw.
#[derive(Default)]
struct ProduceOutcomes {
    /// value -> (partition, offset) of each acknowledged record.
    acked: Acknowledged,
    /// Records that failed, with the error (not acknowledged: no promise was made).
    failed: Vec<(String, String)>,
}

/// Produces `v0, v1, ...` to partition 0 of `topic`, at most `in_flight` unacknowledged at
/// a time, until `stop` is set (or `max_records`); counts acknowledgements in `acked`.
fn produce_until_stopped(
    bootstrap: String,
    topic: &'static str,
    stop: Arc<AtomicBool>,
    acked_count: Arc<AtomicUsize>,
    outcomes: Arc<Mutex<ProduceOutcomes>>,
) {
    const IN_FLIGHT: usize = 200;
    const MAX_RECORDS: usize = 200_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let producer = idempotent_producer(&bootstrap);
        let mut pending = std::collections::VecDeque::new();
        let settle =
            |value: String, result: rdkafka::producer::future_producer::OwnedDeliveryResult| {
                let mut outcomes = outcomes.lock().unwrap();
                match result {
                    Ok(place) => {
                        outcomes.acked.insert(value, place);
                        acked_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err((e, _)) => outcomes.failed.push((value, e.to_string())),
                }
            };
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) && i < MAX_RECORDS {
            let value = format!("v{i}");
            let record = FutureRecord::<(), _>::to(topic)
                .partition(0)
                .payload(&value);
            match producer.send_result(record) {
                Ok(delivery) => pending.push_back((value, delivery)),
                Err((e, _)) => outcomes.lock().unwrap().failed.push((value, e.to_string())),
            }
            i += 1;
            if pending.len() >= IN_FLIGHT {
                let (value, delivery) = pending.pop_front().unwrap();
                settle(value, delivery.await.expect("delivery report"));
            }
        }
        while let Some((value, delivery)) = pending.pop_front() {
            settle(value, delivery.await.expect("delivery report"));
        }
    });
}

/// Reads partition 0 of `topic` from the beginning to its high watermark: offset -> value.
async fn read_partition(bootstrap: &str, topic: &str) -> BTreeMap<i64, String> {
    let consumer: StreamConsumer = rdkafka_config(bootstrap)
        .set("group.id", "failover-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("create the rdkafka consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(30))
        .expect("watermarks");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).expect("assign");
    let mut read = BTreeMap::new();
    while read.last_key_value().map_or(0, |(o, _)| o + 1) < high {
        let message = consumer.recv().await.expect("a record");
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
        read.insert(message.offset(), value);
    }
    read
}

#[test]
fn three_brokers_acks_all_records_survive_the_leaders_sigkill() {
    const TOPIC: &str = "failover";
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start_with_kafka(3, dir.path(), &[]);
    cli_ok(
        &cluster.bootstrap(),
        &[
            "topic",
            "create",
            TOPIC,
            "-p",
            "1",
            "-r",
            "3",
            "-c",
            "min.insync.replicas=2",
        ],
        "",
    );
    cluster.wait_isr(TOPIC, 3);
    let bootstrap = cluster.kafka_bootstrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(ProduceOutcomes::default()));
    let producer = {
        let (bootstrap, stop, acked, outcomes) = (
            bootstrap.clone(),
            stop.clone(),
            acked.clone(),
            outcomes.clone(),
        );
        std::thread::spawn(move || produce_until_stopped(bootstrap, TOPIC, stop, acked, outcomes))
    };
    let wait_for_acks = |what: &str, at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while acked.load(Ordering::SeqCst) < at_least {
            if Instant::now() >= deadline || producer.is_finished() {
                let outcomes = outcomes.lock().unwrap();
                panic!(
                    "{what}: {} of {at_least} acknowledged; {} failed, first: {:?}",
                    acked.load(Ordering::SeqCst),
                    outcomes.failed.len(),
                    outcomes.failed.first(),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_acks("acknowledgements before the kill", 300);
    let leader = cluster.leader(TOPIC, 0);
    assert!(leader >= 1, "partition 0 has no leader");
    let at_kill = acked.load(Ordering::SeqCst);
    cluster.node(leader).kill();
    wait_for_acks("acknowledgements after the kill (failover)", at_kill + 300);
    stop.store(true, Ordering::SeqCst);
    producer.join().expect("the producer thread");
    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());

    let survivors: Vec<String> = cluster
        .brokers
        .iter()
        .filter(|b| b.is_running())
        .map(|b| b.kafka_bootstrap())
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let read = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(120),
                read_partition(&survivors.join(","), TOPIC),
            )
            .await
        })
        .expect("reading the partition back within 120 s");
    let lost: Vec<(&String, &(i32, i64))> = outcomes
        .acked
        .iter()
        .filter(|(value, (_, offset))| read.get(offset) != Some(*value))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records are not at their offsets (killed node {leader}); first: {:?}",
        lost.len(),
        outcomes.acked.len(),
        &lost[..lost.len().min(5)]
    );
    // Idempotence across the failover: no value was written twice.
    let mut values: Vec<&String> = read.values().collect();
    values.sort();
    let before = values.len();
    values.dedup();
    assert_eq!(values.len(), before, "a record was written twice");
    eprintln!(
        "killed leader {leader} after {at_kill} acknowledgements; {} acknowledged in all, {} failed \
         (first: {:?}), {} records in the log",
        outcomes.acked.len(),
        outcomes.failed.len(),
        outcomes.failed.first(),
        read.len()
    );
}
