//! The Kafka-protocol listener against real Kafka clients that nobody here wrote:
//! kafka-python (its own pure-Python protocol code), confluent-kafka (librdkafka 2.16, in
//! its wheel), kcat (Debian's, librdkafka 2.0.2), aiokafka (asyncio, its own protocol
//! code) and kafkajs (Node, its own protocol code); the `rdkafka` crate's tests are in
//! `kafka_rdkafka.rs`. Each test starts its own broker(s) with a Kafka
//! listener on a free port, runs one scenario of a script in `kafka-clients/` (or drives
//! rdkafka itself) with a deadline, and asserts on the script's JSON summary; the script
//! has checked the details (see each script's docstring).
//!
//! Topics are created through the sluice CLI unless creating them is what the scenario
//! tests, so a failure points at one request family. Without the Python venv, kcat, or
//! node and kafkajs a test says why it skipped, except under CI (`CI=true`), where that is
//! a failure.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_integration_tests::checks;
use sluice_integration_tests::kafka::{self, ClientRun, CLIENT_TIMEOUT};
use sluice_integration_tests::{cli_ok, segment_batches, wait_until, BrokerProcess, TestCluster};
use sluice_protocol::batch::{Batches, Compression};

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

/// `node`, once it loads kafkajs, or `None` (the test skipped; see [`kafka::require`]).
fn node(test: &str) -> Option<PathBuf> {
    kafka::require(test, kafka::kafkajs())
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
fn kafka_python_admin_creates_lists_alters_grows_and_deletes_topics() {
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
    assert_eq!(summary["grown"], 3);
    assert_eq!(summary["log_dir_partitions"], json!([0, 1, 2]));
    assert_eq!(
        summary["quotas"],
        json!({"set": [0], "set_default_user": [0], "percentage": [42], "fraction": [42],
               "ip": [42]})
    );
    assert_eq!(
        summary["reset"],
        json!({"retention.ms": "604800000", "segment.ms": "3600000"}),
        "AlterConfigs replaces the topic's own configs"
    );
    assert_eq!(
        summary["broker"],
        json!({"num.partitions": "1", "log.retention.ms": "604800000", "broker.id": "1"})
    );
    let topics = sluice_topics(&broker.bootstrap());
    assert_eq!(topics.get("kp-admin-2"), Some(&3), "{topics:?}");
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
fn kafka_python_reads_a_compacted_topic_with_its_gaps_and_is_refused_keyless_records() {
    let Some(python) = python("kafka_python_compacted") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start_with_kafka(
        &dir.path().join("data"),
        &["--log-cleaner-interval-ms", "100"],
    );
    checks::create_eagerly_compacted_topic(&broker.bootstrap(), "compacted");
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "compacted",
        &broker.kafka_bootstrap(),
        "compacted",
        &["-n", "4", "-m", "40"],
    )
    .expect_ok(&broker.log());
    assert!(summary["gaps"].as_i64().unwrap() > 0, "{summary}");
    // librdkafka reads the same records across the gaps (and any empty batches).
    let Some(kcat) = kafka::require("kcat_compacted", kafka::kcat()) else {
        return;
    };
    let output = std::process::Command::new(kcat)
        .args(["-b", &broker.kafka_bootstrap(), "-C", "-t", "compacted"])
        .args(["-o", "beginning", "-e", "-q", "-f", "%o %k\\n"])
        .output()
        .expect("run kcat");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().count() as i64,
        summary["records"].as_i64().unwrap(),
        "kcat read:\n{stdout}"
    );
}

#[test]
fn kafka_python_deletes_a_groups_offsets_of_a_topic_it_no_longer_consumes() {
    let Some(python) = python("kafka_python_delete_offsets") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "kp-offdel", 2);
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "delete-offsets",
        &broker.kafka_bootstrap(),
        "kp-offdel",
        &["--group", "kp-offdel"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["while_subscribed"], "GroupSubscribedToTopicError");
    assert_eq!(summary["committed"], json!([1]));
}

#[test]
fn kafka_python_transaction_tools_list_describe_and_abort() {
    let Some(python) = python("kafka_python_txn_tools") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "kp-txn-tools", 1);
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "txn-tools",
        &broker.kafka_bootstrap(),
        "kp-txn-tools",
        &[],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["read"], json!(["next0", "next1"]));
    assert_eq!(summary["state"], "CompleteCommit");
}

#[test]
fn kafka_python_clients_over_their_quotas_are_throttled_and_lose_nothing() {
    let Some(python) = python("kafka_python_throttle") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "kp-throttle", 1);
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "throttle",
        &broker.kafka_bootstrap(),
        "kp-throttle",
        &[],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["fast_throttled"], false);
    assert_eq!(summary["slow_throttled"], true);
    assert_eq!(summary["consumer_throttled"], true);
    assert_eq!(summary["read"], 120);
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
fn confluent_transactions_commit_abort_and_fence() {
    let Some(python) = python("confluent_transactions") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "txn", 3);
    let summary = scenario(
        &python,
        "confluent_client.py",
        "transactions",
        &broker.kafka_bootstrap(),
        "txn",
        &["--group", "txn-readers", "-n", "200", "-m", "100"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["committed"], 400);
    assert_eq!(summary["everything"], 500);
}

/// The same on three brokers: the transaction coordinator (the leader of one
/// `__transaction_state` partition) has the leaders of the topic's partitions, other
/// brokers mostly, write the markers over WriteTxnMarkers.
#[test]
fn confluent_transactions_on_three_brokers() {
    let Some(python) = python("confluent_transactions_three_brokers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start_with_kafka(3, dir.path(), &[]);
    cli_ok(
        &cluster.bootstrap(),
        &["topic", "create", "txn", "-p", "3", "-r", "3"],
        "",
    );
    cluster.wait_isr("txn", 3);
    let summary = scenario(
        &python,
        "confluent_client.py",
        "transactions",
        &cluster.kafka_bootstrap(),
        "txn",
        &["--group", "txn-readers", "-n", "200", "-m", "100"],
    )
    .expect_ok(&cluster.brokers[0].log());
    assert_eq!(summary["committed"], 400);
    assert_eq!(summary["everything"], 500);
    let leaders: BTreeSet<i32> = (0..3).map(|p| cluster.leader("txn", p)).collect();
    assert!(
        leaders.len() > 1,
        "the partitions' leaders are spread: {leaders:?}"
    );
}

/// Exactly-once consume-transform-produce with confluent-kafka's transactional producer:
/// outputs and input offsets committed together (send_offsets_to_transaction: AddOffsetsToTxn
/// and TxnOffsetCommit), aborts rewound, an instance left with an open transaction replaced
/// by a second one; every input has exactly one committed output.
#[test]
fn confluent_exactly_once_consume_transform_produce() {
    let Some(python) = python("confluent_exactly_once") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "eos", 3);
    create_topic(&broker.bootstrap(), "eos-out", 3);
    let summary = scenario(
        &python,
        "confluent_client.py",
        "exactly-once",
        &broker.kafka_bootstrap(),
        "eos",
        &["--group", "eos-processor", "-n", "600"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["outputs"], 600);
    assert!(summary["aborted"].as_u64().unwrap() > 0, "{summary}");
}

/// The same on three brokers, where the markers that decide the group's offsets reach
/// its `__consumer_offsets` partition from a transaction coordinator on another broker
/// (mostly) over WriteTxnMarkers.
#[test]
fn confluent_exactly_once_on_three_brokers() {
    let Some(python) = python("confluent_exactly_once_three_brokers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start_with_kafka(3, dir.path(), &[]);
    for topic in ["eos", "eos-out"] {
        cli_ok(
            &cluster.bootstrap(),
            &["topic", "create", topic, "-p", "3", "-r", "3"],
            "",
        );
        cluster.wait_isr(topic, 3);
    }
    let summary = scenario(
        &python,
        "confluent_client.py",
        "exactly-once",
        &cluster.kafka_bootstrap(),
        "eos",
        &["--group", "eos-processor", "-n", "600"],
    )
    .expect_ok(&cluster.brokers[0].log());
    assert_eq!(summary["outputs"], 600);
}

/// DeleteRecords on three brokers: the answer waits for the followers, so once it is
/// given every in-sync replica has deleted the records: the leader killed, the next one
/// starts where the deletion left the log.
#[test]
fn kafka_python_delete_records_on_three_brokers_reaches_every_replica() {
    let Some(python) = python("kafka_python_delete_records") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start_with_kafka(3, dir.path(), &[]);
    cli_ok(
        &cluster.bootstrap(),
        &["topic", "create", "dr", "-r", "3"],
        "",
    );
    cluster.wait_isr("dr", 3);
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "delete-records",
        &cluster.kafka_bootstrap(),
        "dr",
        &[],
    )
    .expect_ok(&cluster.brokers[0].log());
    assert_eq!(summary["low_watermarks"], json!([8, 20]));
    assert_eq!(summary["first_offset"], 8);
    let leader = cluster.leader("dr", 0);
    cluster.node(leader).kill();
    wait_until("another leader of dr-0", Duration::from_secs(30), || {
        ![-1, leader].contains(&cluster.leader("dr", 0))
    });
    let described = cluster.describe_topic("dr").unwrap();
    assert_eq!(
        described["partitions"][0]["log_start_offset"], 20,
        "{described}"
    );
}

#[test]
fn confluent_admin_creates_alters_grows_and_deletes_topics() {
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
    assert_eq!(summary["grown"], 2);
    let topics = sluice_topics(&broker.bootstrap());
    assert_eq!(topics.get("ck-admin-2"), Some(&2), "{topics:?}");
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

/// The codec of each batch of partition 0 of `topic`, in log order, from its segment files.
fn codecs_on_disk(broker: &BrokerProcess, topic: &str) -> Vec<Compression> {
    let dir = broker.data_dir.join("topics").join(format!("{topic}-0"));
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let mut codecs = Vec::new();
    for log in logs {
        for batch in Batches::new(bytes::Bytes::from(segment_batches(&log))) {
            codecs.push(batch.unwrap().header().compression().unwrap());
        }
    }
    codecs
}

/// For each codec: sluice's producer writes `m` JSON records compressed with it (through
/// the CLI) to a one-partition topic, then `script`'s compression scenario writes `n`
/// more with the same codec and reads all of them back (so the client decodes sluice's
/// batches); then sluice's consumer reads all of them (so sluice decodes the client's), and
/// the segment file holds both producers' batches compressed as they sent them.
fn compression_both_ways(test: &str, script: &str, source: &str) {
    let Some(python) = python(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let bootstrap = broker.bootstrap();
    let (n, m) = (500, 300);
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("{source}-{codec}");
        create_topic(&bootstrap, &topic, 1);
        let lines: String = (0..m)
            .map(|i| {
                let value = json!({"from": "sluice", "seq": i, "user": format!("user-{}", i % 97),
                    "event": "page_view", "note": "the customer viewed an item from a recommended list"});
                format!("{value}\n")
            })
            .collect();
        cli_ok(
            &bootstrap,
            &["produce", &topic, "--compression", codec],
            &lines,
        );
        let summary = scenario(
            &python,
            script,
            "compression",
            &broker.kafka_bootstrap(),
            &topic,
            &["--codec", codec, "-n", &n.to_string(), "-m", &m.to_string()],
        )
        .expect_ok(&broker.log());
        assert_eq!(summary["records"], n + m, "{codec}");
        let read = cli_ok(
            &bootstrap,
            &[
                "consume",
                &topic,
                "--from-beginning",
                "--timeout-ms",
                "2000",
                "--format",
                "json",
            ],
            "",
        );
        let mut seqs: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for line in read.lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            let value: Value = serde_json::from_str(record["value"].as_str().unwrap()).unwrap();
            let from = value["from"].as_str().unwrap().to_string();
            assert!(seqs
                .entry(from)
                .or_default()
                .insert(value["seq"].as_i64().unwrap()));
        }
        assert_eq!(seqs["sluice"], (0..m).collect(), "{codec}");
        assert_eq!(
            seqs[source],
            (0..n).collect(),
            "{codec}: {source}'s records, read by sluice"
        );
        let on_disk = codecs_on_disk(&broker, &topic);
        let codec: Compression = codec.parse().unwrap();
        assert_eq!(on_disk[0], codec, "sluice's batch: {on_disk:?}");
        assert!(
            on_disk[1..].contains(&codec),
            "{codec}: {source}'s batches on disk are {:?}",
            &on_disk[1..]
        );
    }
}

#[test]
fn kafka_python_and_sluice_read_each_others_compressed_batches() {
    compression_both_ways(
        "kafka_python_compression",
        "kafka_python_client.py",
        "kafka-python",
    );
}

#[test]
fn confluent_and_sluice_read_each_others_compressed_batches() {
    compression_both_ways("confluent_compression", "confluent_client.py", "confluent");
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

#[test]
fn kafka_python_moves_a_partition_to_other_brokers_and_describes_the_quorum() {
    let Some(python) = python("kafka_python_reassign") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start_with_kafka(3, dir.path(), &[]);
    cli_ok(
        &cluster.bootstrap(),
        &["topic", "create", "kp-move", "--replica-assignment", "1"],
        "",
    );
    let summary = scenario(
        &python,
        "kafka_python_client.py",
        "reassign",
        &cluster.kafka_bootstrap(),
        "kp-move",
        &[],
    )
    .expect_ok(&cluster.brokers[0].log());
    assert_eq!(summary["replicas"], json!([2, 3]));
    assert_eq!(summary["read"], 100);
    assert_eq!(summary["voters"], json!([1, 2, 3]));
}

#[test]
fn kafkajs_creates_produces_idempotently_consumes_in_a_group_and_commits() {
    let Some(node) = node("kafkajs_tour") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    let summary = scenario(
        &node,
        "kafkajs_client.js",
        "tour",
        &broker.kafka_bootstrap(),
        "kafkajs-tour",
        &["--group", "kafkajs-readers", "-n", "600"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["records"], 600);
    assert_eq!(summary["committed"], 600);
    assert_eq!(summary["partitions"], json!([0, 1, 2]));
    assert_eq!(summary["group_state"], "Empty");
    // The admin client deleted the topic it created.
    assert!(!sluice_topics(&broker.bootstrap()).contains_key("kafkajs-tour"));
}

#[test]
fn kafkajs_transactions_commit_and_abort() {
    let Some(node) = node("kafkajs_transactions") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "kafkajs-txn", 3);
    let summary = scenario(
        &node,
        "kafkajs_client.js",
        "transactions",
        &broker.kafka_bootstrap(),
        "kafkajs-txn",
        &["--group", "kafkajs-txn-readers", "-n", "150"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["committed"], 150);
    assert_eq!(summary["aborted"], 0);
    assert_eq!(summary["everything"], 300);
}

#[test]
fn aiokafka_produces_every_codec_idempotently_and_a_group_reads_each_record_once() {
    let Some(python) = python("aiokafka_codecs") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "aiokafka-codecs", 3);
    let summary = scenario(
        &python,
        "aiokafka_client.py",
        "codecs",
        &broker.kafka_bootstrap(),
        "aiokafka-codecs",
        &["--group", "aiokafka-readers", "-n", "200"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["records"], 1000);
    assert_eq!(summary["group_state"], "Empty");
    // Every codec reached the log as the client compressed it (`None`: uncompressed).
    let codecs: HashSet<Compression> = codecs_on_disk(&broker, "aiokafka-codecs")
        .into_iter()
        .collect();
    let expected: HashSet<Compression> = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ]
    .into();
    assert_eq!(codecs, expected);
}

#[test]
fn aiokafka_transactions_commit_abort_and_commit_offsets() {
    let Some(python) = python("aiokafka_transactions") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    create_topic(&broker.bootstrap(), "aiokafka-txn", 3);
    let summary = scenario(
        &python,
        "aiokafka_client.py",
        "transactions",
        &broker.kafka_bootstrap(),
        "aiokafka-txn",
        &["--group", "aiokafka-txn-readers", "-n", "100", "-m", "40"],
    )
    .expect_ok(&broker.log());
    assert_eq!(summary["committed"], 200);
    assert_eq!(summary["everything"], 240);
    assert_eq!(summary["offsets"], 40);
}
