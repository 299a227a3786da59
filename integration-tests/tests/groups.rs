//! Consumer groups through the client library and the CLI against real brokers: the
//! coordinator's round-robin assignment as members come, consumers resuming from their
//! group's commits, a SIGKILLed member's partitions moving to the others, and the
//! `sluice consume --group` / `sluice group ...` contract.
//!
//! Every wait has a generous bound that only turns a hang into a failure; none measures
//! how fast anything happens.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, ConsumerEvent, GroupConfig, NewTopic,
    OffsetReset, PartitionId, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use sluice_integration_tests::checks::runtime;
use sluice_integration_tests::{bin, cli, cli_ok, wait_until, BrokerProcess, TestCluster};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// Bound of every wait for the group to settle: far above a rebalance (the initial delay,
/// a session timeout, a join).
const SETTLE: Duration = Duration::from_secs(120);

fn client(rt: &Runtime, bootstrap: &str) -> Client {
    rt.block_on(Client::connect(ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_owned).collect(),
        client_id: "groups-test".into(),
        ..ClientConfig::default()
    }))
    .unwrap()
}

/// A single broker with `topic` of `partitions` partitions, a runtime and an admin client
/// (the directory and the process live as long as the returned values).
fn broker_with_topic(
    topic: &str,
    partitions: i32,
) -> (tempfile::TempDir, BrokerProcess, String, Runtime, Admin) {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let rt = runtime();
    let admin = Admin::new(client(&rt, &b));
    rt.block_on(admin.create_topic(NewTopic::new(topic, partitions, 1)))
        .unwrap();
    (dir, broker, b, rt, admin)
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, PartitionId(partition))
}

/// What a member task last learned: its generation, member id and assignment.
#[derive(Clone, Debug, Default)]
struct Seen {
    generation: i32,
    member_id: String,
    assignment: Vec<TopicPartition>,
    /// Every record value received, with its partition and offset.
    records: Vec<(i32, i64, String)>,
}

/// A group member polling in its own task until told to stop, then closing.
struct Member {
    seen: Arc<Mutex<Seen>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Member {
    fn start(rt: &Runtime, bootstrap: &str, group: &str, topic: &str) -> Member {
        let client = client(rt, bootstrap);
        let config = ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        };
        let group_config = GroupConfig {
            session_timeout: Duration::from_secs(6),
            heartbeat_interval: Duration::from_millis(500),
            ..GroupConfig::new(group)
        };
        let mut consumer = Consumer::with_group(client, config, group_config).unwrap();
        consumer.subscribe([topic]).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, mut stopped) = watch::channel(false);
        let record = seen.clone();
        let task = rt.spawn(async move {
            while !*stopped.borrow() {
                let event = tokio::select! {
                    event = consumer.poll_event(Duration::from_millis(200)) => event.unwrap(),
                    _ = stopped.changed() => break,
                };
                let mut seen = record.lock().unwrap();
                match event {
                    ConsumerEvent::PartitionsAssigned(assignment) => {
                        let (generation, member_id) = consumer.group_generation().unwrap();
                        *seen = Seen {
                            generation,
                            member_id,
                            assignment,
                            records: std::mem::take(&mut seen.records),
                        };
                    }
                    ConsumerEvent::PartitionsRevoked(_) | ConsumerEvent::PartitionsLost(_) => {
                        seen.assignment.clear();
                    }
                    ConsumerEvent::Records(records) => {
                        seen.records.extend(records.iter().map(|r| {
                            let value = r.value.as_deref().unwrap_or_default();
                            let value = String::from_utf8_lossy(value).into_owned();
                            (r.partition.0, r.offset, value)
                        }));
                    }
                }
            }
            consumer.close().await.unwrap();
        });
        Member { seen, stop, task }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    fn stop(self, rt: &Runtime) {
        self.stop.send_replace(true);
        rt.block_on(self.task).unwrap();
    }
}

/// Waits until the coordinator describes the group Stable with exactly these members
/// (given by the member tasks, so the client and the coordinator agree), and returns the
/// assignment, by member id.
fn wait_stable(
    rt: &Runtime,
    admin: &Admin,
    group: &str,
    members: &[&Member],
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment = BTreeMap::new();
    wait_until(
        &format!("group {group} stable with {} members", members.len()),
        SETTLE,
        || {
            let Ok(d) = rt.block_on(admin.describe_group(group)) else {
                return false;
            };
            if d.state != "Stable" || d.members.len() != members.len() {
                return false;
            }
            // Each member task has been told its part of this very generation.
            let agreed = members.iter().all(|m| {
                let seen = m.seen();
                seen.generation == d.generation
                    && d.members.iter().any(|dm| {
                        dm.member_id == seen.member_id && dm.assignment == seen.assignment
                    })
            });
            assignment = d
                .members
                .into_iter()
                .map(|m| (m.member_id, m.assignment))
                .collect();
            agreed
        },
    );
    assignment
}

/// The coordinator's round robin: members sorted by id, partition j of the topic to
/// member j % n.
fn round_robin(
    members: &BTreeMap<String, Vec<TopicPartition>>,
    topic: &str,
    n_partitions: i32,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let ids: Vec<&String> = members.keys().collect();
    let mut expected: BTreeMap<String, Vec<TopicPartition>> =
        ids.iter().map(|id| ((*id).clone(), Vec::new())).collect();
    for p in 0..n_partitions {
        let id = ids[p as usize % ids.len()];
        expected.get_mut(id).unwrap().push(tp(topic, p));
    }
    expected
}

#[test]
fn two_then_three_consumers_share_six_partitions_round_robin() {
    let (_dir, _broker, b, rt, admin) = broker_with_topic("six", 6);

    let first = Member::start(&rt, &b, "rr", "six");
    let second = Member::start(&rt, &b, "rr", "six");
    let two = wait_stable(&rt, &admin, "rr", &[&first, &second]);
    assert_eq!(two, round_robin(&two, "six", 6));
    let all: BTreeSet<&TopicPartition> = two.values().flatten().collect();
    assert_eq!(all.len(), 6, "every partition assigned once: {two:?}");

    let third = Member::start(&rt, &b, "rr", "six");
    let three = wait_stable(&rt, &admin, "rr", &[&first, &second, &third]);
    assert_eq!(three, round_robin(&three, "six", 6));
    assert!(three.values().all(|a| a.len() == 2), "{three:?}");

    // One leaves: the other two share everything again.
    second.stop(&rt);
    let again = wait_stable(&rt, &admin, "rr", &[&first, &third]);
    assert_eq!(again, round_robin(&again, "six", 6));
    first.stop(&rt);
    third.stop(&rt);
    wait_until("the group is empty", SETTLE, || {
        rt.block_on(admin.describe_group("rr"))
            .is_ok_and(|d| d.state == "Empty" && d.members.is_empty())
    });
}

/// Produces the records `v{i}` for `i` in `values`, round robin over the topic's
/// `n_partitions`, and waits for them.
fn produce(
    rt: &Runtime,
    client: &Client,
    topic: &str,
    n_partitions: i32,
    values: std::ops::Range<usize>,
) {
    rt.block_on(async {
        let producer = Producer::new(client.clone(), ProducerConfig::default());
        let mut deliveries = Vec::new();
        for i in values {
            let partition = PartitionId(i as i32 % n_partitions);
            let record = ProducerRecord::new(topic, format!("v{i}")).partition(partition);
            deliveries.push(producer.send(record).await.unwrap());
        }
        producer.flush().await;
        for d in deliveries {
            d.await.unwrap();
        }
        producer.close().await;
    });
}

#[test]
fn a_consumer_resumes_exactly_after_what_the_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    let rt = runtime();
    let c = client(&rt, &b);
    rt.block_on(Admin::new(c.clone()).create_topic(NewTopic::new("resume", 2, 1)))
        .unwrap();
    produce(&rt, &c, "resume", 2, 0..20);

    let consumer = |max_poll_records| {
        let config = ConsumerConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_poll_records,
            ..ConsumerConfig::default()
        };
        let group = GroupConfig {
            enable_auto_commit: false,
            ..GroupConfig::new("resumers")
        };
        let mut consumer = Consumer::with_group(client(&rt, &b), config, group).unwrap();
        consumer.subscribe(["resume"]).unwrap();
        consumer
    };
    // The first consumer takes a few records (more are prefetched), commits what it was
    // returned, and stops.
    let mut first = consumer(3);
    let (taken, committed) = rt.block_on(async {
        let mut taken = Vec::new();
        while taken.is_empty() {
            taken = first.poll(Duration::from_millis(500)).await.unwrap();
        }
        first.commit().await.unwrap();
        let committed = first
            .committed(&[tp("resume", 0), tp("resume", 1)])
            .await
            .unwrap();
        first.close().await.unwrap();
        (taken, committed)
    });
    assert_eq!(taken.len(), 3);
    // Per partition: after the last record returned, or the start where none was (the
    // position is committed once known, as Kafka does); never past a prefetched record.
    for (tp, &offset) in &committed {
        let next = taken
            .iter()
            .filter(|r| r.partition == tp.partition)
            .map(|r| r.offset + 1)
            .max()
            .unwrap_or(0);
        assert_eq!(offset, next, "{tp}");
    }

    // The second starts exactly at the commits: together they read every record once.
    let mut second = consumer(500);
    let rest = rt.block_on(async {
        let mut rest = Vec::new();
        let deadline = tokio::time::Instant::now() + SETTLE;
        while rest.len() < 17 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} records",
                rest.len()
            );
            rest.extend(second.poll(Duration::from_millis(500)).await.unwrap());
        }
        second.commit().await.unwrap();
        second.close().await.unwrap();
        rest
    });
    for p in 0..2 {
        let first_offset = rest
            .iter()
            .filter(|r| r.partition.0 == p)
            .map(|r| r.offset)
            .min();
        let expected = committed.get(&tp("resume", p)).copied().unwrap_or(0);
        assert_eq!(first_offset, Some(expected), "partition {p}");
    }
    let mut values: Vec<String> = taken
        .iter()
        .chain(&rest)
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
    let offsets = rt
        .block_on(Admin::new(c).committed_offsets("resumers"))
        .unwrap();
    assert_eq!(
        offsets,
        [(tp("resume", 0), 10), (tp("resume", 1), 10)]
            .into_iter()
            .collect()
    );
}

/// A `sluice consume --group` process that runs until killed.
fn spawn_cli_member(bootstrap: &str, topic: &str, group: &str) -> Child {
    Command::new(bin("sluice"))
        .args(["--bootstrap", bootstrap, "consume", topic, "--group", group])
        .args(["--from-beginning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice consume")
}

#[test]
fn a_killed_cli_members_partitions_move_to_the_others() {
    let (_dir, _broker, b, rt, admin) = broker_with_topic("four", 4);
    let member = Member::start(&rt, &b, "mixed", "four");
    let mut cli_member = spawn_cli_member(&b, "four", "mixed");
    let own_id = || member.seen().member_id;
    wait_until("the CLI member shares the partitions", SETTLE, || {
        rt.block_on(admin.describe_group("mixed")).is_ok_and(|d| {
            d.state == "Stable"
                && d.members.len() == 2
                && d.members.iter().all(|m| m.assignment.len() == 2)
                && member.seen().generation == d.generation
                && d.members
                    .iter()
                    .any(|m| m.member_id != own_id() && m.client_id == "sluice-cli")
        })
    });

    // SIGKILL: no LeaveGroup; the coordinator notices when the session expires.
    cli_member.kill().unwrap();
    cli_member.wait().unwrap();
    wait_until("the remaining member owns every partition", SETTLE, || {
        rt.block_on(admin.describe_group("mixed")).is_ok_and(|d| {
            d.state == "Stable" && d.members.len() == 1 && d.members[0].member_id == own_id()
        }) && member.seen().assignment.len() == 4
    });
    // And it consumes all of them.
    produce(&rt, admin.client(), "four", 4, 0..8);
    wait_until("records from every partition", SETTLE, || {
        let partitions: BTreeSet<i32> = member.seen().records.iter().map(|r| r.0).collect();
        partitions.len() == 4
    });
    member.stop(&rt);
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn cli_consume_group_commits_what_it_printed_and_group_commands() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap();
    cli_ok(&b, &["topic", "create", "g1", "-p", "2"], "");
    let lines: String = (1..=10).map(|i| format!("{i}\n")).collect();
    cli_ok(&b, &["produce", "g1"], &lines);

    let consume = |args: &[&str]| {
        let mut all = vec!["consume", "g1", "--group", "grp"];
        all.extend_from_slice(args);
        cli_ok(&b, &all, "")
    };
    let first = consume(&["--from-beginning", "-n", "4"]);
    assert_eq!(first.lines().count(), 4, "{first}");
    let second = consume(&["--timeout-ms", "3000"]);
    assert_eq!(second.lines().count(), 6, "{second}");
    let mut all: Vec<i32> = first
        .lines()
        .chain(second.lines())
        .map(|l| l.parse().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (1..=10).collect::<Vec<i32>>());

    let list = json(&cli_ok(&b, &["group", "list", "--format", "json"], ""));
    let grp = list
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "grp")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(grp["members"], 0);
    let described = json(&cli_ok(
        &b,
        &["group", "describe", "grp", "--format", "json"],
        "",
    ));
    assert_eq!(described["members"], serde_json::json!([]));
    let offsets = described["offsets"].as_array().unwrap();
    let committed: i64 = offsets
        .iter()
        .map(|o| o["committed"].as_i64().unwrap())
        .sum();
    let log_end: i64 = offsets.iter().map(|o| o["log_end"].as_i64().unwrap()).sum();
    assert_eq!((committed, log_end), (10, 10), "{described}");
    assert!(offsets.iter().all(|o| o["lag"] == 0), "{described}");
    assert!(cli_ok(&b, &["group", "describe", "grp"], "").contains("Group: grp"));

    // With a member running, reset and delete are refused.
    let mut running = spawn_cli_member(&b, "g1", "grp");
    wait_until("the CLI member joined", SETTLE, || {
        let out = cli(&b, &["group", "describe", "grp", "--format", "json"], "");
        out.status.success()
            && json(&String::from_utf8_lossy(&out.stdout))["members"]
                .as_array()
                .is_some_and(|m| m.len() == 1)
    });
    for args in [
        &[
            "group",
            "reset-offsets",
            "grp",
            "--topic",
            "g1",
            "--to-earliest",
        ][..],
        &["group", "delete", "grp"][..],
    ] {
        let out = cli(&b, args, "");
        assert!(!out.status.success(), "{args:?} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("stop its consumers first"), "{stderr}");
    }
    running.kill().unwrap();
    running.wait().unwrap();
    // The killed member is removed when its session expires; then both work.
    wait_until("the killed member's session expired", SETTLE, || {
        cli(
            &b,
            &[
                "group",
                "reset-offsets",
                "grp",
                "--topic",
                "g1",
                "--to-earliest",
            ],
            "",
        )
        .status
        .success()
    });
    let again = consume(&["--timeout-ms", "3000"]);
    assert_eq!(again.lines().count(), 10, "reset to earliest: {again}");
    cli_ok(&b, &["group", "delete", "grp"], "");
    let out = cli(&b, &["group", "describe", "grp"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn a_member_rides_out_the_death_of_its_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    let b = cluster.bootstrap();
    let rt = runtime();
    let admin = Admin::new(client(&rt, &b));
    rt.block_on(admin.create_topic(NewTopic::new("fo", 3, 3)))
        .unwrap();
    cluster.wait_isr("fo", 3);
    let member = Member::start(&rt, &b, "survivors", "fo");
    wait_stable(&rt, &admin, "survivors", &[&member]);
    // The group's state is on all three replicas of its __consumer_offsets partition.
    cluster.wait_isr("__consumer_offsets", 3);
    produce(&rt, admin.client(), "fo", 3, 0..30);
    let values =
        |m: &Member| -> BTreeSet<String> { m.seen().records.into_iter().map(|r| r.2).collect() };
    wait_until("the first 30 records", SETTLE, || {
        values(&member).len() == 30
    });

    let coordinator = rt
        .block_on(admin.describe_group("survivors"))
        .unwrap()
        .coordinator;
    cluster.node(coordinator.0).kill();
    produce(&rt, admin.client(), "fo", 3, 30..60);
    wait_until("every record after the failover", SETTLE, || {
        values(&member).len() == 60
    });
    let expected: BTreeSet<String> = (0..60).map(|i| format!("v{i}")).collect();
    assert_eq!(values(&member), expected);

    // It still commits, to the new coordinator, when it closes.
    member.stop(&rt);
    let committed = rt.block_on(admin.committed_offsets("survivors")).unwrap();
    let ends: BTreeMap<TopicPartition, i64> = (0..3).map(|p| (tp("fo", p), 20)).collect();
    assert_eq!(committed, ends);
}

/// Checks a consumed log against what was acknowledged: every acknowledged record was
/// consumed at its offset with its value (none skipped); a record consumed twice is
/// allowed (at-least-once across rebalances) and counted. Returns the duplicates.
fn check_at_least_once(
    acked: &BTreeMap<(i32, i64), String>,
    consumed: &[(i32, i64, String)],
) -> usize {
    let mut seen: BTreeMap<(i32, i64), (String, usize)> = BTreeMap::new();
    for (partition, offset, value) in consumed {
        let entry = seen
            .entry((*partition, *offset))
            .or_insert_with(|| (value.clone(), 0));
        assert_eq!(&entry.0, value, "two values at {partition}/{offset}");
        entry.1 += 1;
    }
    let skipped: Vec<_> = acked.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(
        skipped.is_empty(),
        "acknowledged but never consumed: {skipped:?}"
    );
    for (key, value) in acked {
        assert_eq!(&seen[key].0, value, "another value at {key:?}");
    }
    seen.values().map(|(_, n)| n - 1).sum()
}

#[test]
fn records_are_consumed_at_least_once_and_none_skipped_across_rebalances() {
    let (_dir, _broker, b, rt, admin) = broker_with_topic("flow", 6);

    // A producer writes throughout, while members come, leave and crash.
    let producing = {
        let client = client(&rt, &b);
        rt.spawn(async move {
            let producer = Producer::new(client, ProducerConfig::default());
            let mut acked = BTreeMap::new();
            for round in 0..60 {
                let mut deliveries = Vec::new();
                for i in 0..20 {
                    let value = format!("r{round}-{i}");
                    let record = ProducerRecord::new("flow", value.clone());
                    deliveries.push((value, producer.send(record).await.unwrap()));
                }
                producer.flush().await;
                for (value, d) in deliveries {
                    let meta = d.await.unwrap();
                    acked.insert((meta.partition.0, meta.offset), value);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            producer.close().await;
            acked
        })
    };
    let mut consumed = Vec::new();
    let first = Member::start(&rt, &b, "flowing", "flow");
    std::thread::sleep(Duration::from_secs(1));
    let second = Member::start(&rt, &b, "flowing", "flow");
    std::thread::sleep(Duration::from_secs(1));
    let third = Member::start(&rt, &b, "flowing", "flow");
    wait_stable(&rt, &admin, "flowing", &[&first, &second, &third]);
    // A graceful leave (it commits what it consumed before it goes)...
    consumed.extend(second.seen().records);
    second.stop(&rt);
    wait_stable(&rt, &admin, "flowing", &[&first, &third]);
    // ...and a crash: no commit, no leave; its partitions move when its session expires
    // and are consumed again from the last commit.
    consumed.extend(third.seen().records);
    third.task.abort();
    let acked = rt.block_on(producing).unwrap();
    assert_eq!(acked.len(), 60 * 20);
    wait_until(
        "the survivor consumed every acknowledged record",
        SETTLE,
        || {
            let mut all = consumed.clone();
            all.extend(first.seen().records);
            let keys: BTreeSet<(i32, i64)> = all.iter().map(|(p, o, _)| (*p, *o)).collect();
            acked.keys().all(|k| keys.contains(k))
        },
    );
    consumed.extend(first.seen().records);
    let duplicates = check_at_least_once(&acked, &consumed);
    eprintln!(
        "{} records acknowledged, {} consumed, {duplicates} consumed twice",
        acked.len(),
        consumed.len()
    );
    first.stop(&rt);
}

#[test]
fn the_checker_reports_a_skipped_record() {
    let acked: BTreeMap<(i32, i64), String> =
        [((0, 0), "a".to_owned()), ((0, 1), "b".to_owned())].into();
    let duplicated = [(0, 0, "a".into()), (0, 0, "a".into()), (0, 1, "b".into())];
    assert_eq!(check_at_least_once(&acked, &duplicated), 1);
    let skipped = std::panic::catch_unwind(|| check_at_least_once(&acked, &[(0, 0, "a".into())]));
    assert!(skipped.is_err(), "a skipped record must fail the check");
}
