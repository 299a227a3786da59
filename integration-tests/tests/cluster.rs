//! Three real `sluice-broker` processes on 127.0.0.1 (every node a controller voter),
//! driven through the client library and the CLI: replication (of partitions added to a
//! topic too), leader failover under
//! acks=all load with back-to-back leader changes (KIP-101/279 truncation), ISR below
//! `min.insync.replicas`, and a paused leader that comes back after it was replaced.
//!
//! The checks: every acknowledged record is read back at its acknowledged offset with its
//! value; and once everything is healed and stopped, the replicas of each partition hold
//! byte-identical logs (a divergent tail that was not truncated would show here).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{Acks, Client, ErrorCode, Producer, ProducerConfig, ProducerRecord};
use sluice_integration_tests::checks::{
    check_acknowledged, check_replicas_identical, client, cluster_with_topic, produce_until,
    read_everything, Progress,
};
use sluice_integration_tests::{cli_ok, wait_until, TestCluster};

/// Three nodes, a runtime, a client of all of them, and `topic` created with `partitions`
/// partitions, 3 replicas and `configs`, once its ISR is full everywhere.
fn three_nodes_with_topic(
    dir: &Path,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> (TestCluster, tokio::runtime::Runtime, Client) {
    cluster_with_topic(3, dir, &[], topic, partitions, configs)
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

    // Two partitions more: each node opens its replicas of them, the producer's refreshed
    // metadata hashes keys over five, and the new partitions replicate like the old.
    let altered = cli_ok(
        &bootstrap,
        &["topic", "alter", "r3", "--partitions", "5"],
        "",
    );
    assert_eq!(altered, "topic \"r3\" now has 5 partitions\n");
    let input: String = (300..600).map(|i| format!("k{i}|v{i}\n")).collect();
    cli_ok(
        &bootstrap,
        &["produce", "r3", "--key-separator", "|"],
        &input,
    );
    let topic = cluster.describe_topic("r3").unwrap();
    let partitions = topic["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 5);
    for p in &partitions[3..] {
        assert!(p["high_watermark"].as_i64().unwrap() > 0, "{p}");
        assert_eq!(p["isr"].as_array().unwrap().len(), 3, "{p}");
    }
    let out = cli_ok(
        &bootstrap,
        &[
            "consume",
            "r3",
            "--from-beginning",
            "-n",
            "600",
            "--timeout-ms",
            "20000",
        ],
        "",
    );
    assert_eq!(out.lines().count(), 600);
    let fewer = sluice_integration_tests::cli(
        &bootstrap,
        &["topic", "alter", "r3", "--partitions", "4"],
        "",
    );
    assert!(!fewer.status.success());
    let stderr = String::from_utf8_lossy(&fewer.stderr);
    assert!(
        stderr.contains("has 5 partitions and cannot have fewer"),
        "{stderr}"
    );
    // Replicas placed by hand (Kafka's --replica-assignment): where they say, first leading.
    cli_ok(
        &bootstrap,
        &[
            "topic",
            "create",
            "placed",
            "--replica-assignment",
            "3:1,2:3",
        ],
        "",
    );
    let placed = cluster.topic_metadata("placed").unwrap();
    let layout: Vec<(i32, Vec<i32>)> = placed
        .partitions
        .iter()
        .map(|p| (p.leader.0, p.replicas.iter().map(|b| b.0).collect()))
        .collect();
    assert_eq!(layout, [(3, vec![3, 1]), (2, vec![2, 3])]);
    for bad in ["1:1", "1:2,3", "1:9"] {
        let refused = sluice_integration_tests::cli(
            &bootstrap,
            &["topic", "create", "bad", "--replica-assignment", bad],
            "",
        );
        assert!(!refused.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("assignment"), "{bad}: {stderr}");
    }
    check_replicas_identical(&mut cluster, "r3", 5, 3);
}

/// Brokers with `--rack` (two availability zones of two brokers): each partition's
/// replicas are in both zones, so losing a zone loses no partition's last replica.
#[test]
fn replicas_are_spread_over_racks() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<std::net::SocketAddr> = (0..4)
        .map(|_| {
            format!("127.0.0.1:{}", sluice_integration_tests::free_port())
                .parse()
                .unwrap()
        })
        .collect();
    let cluster = TestCluster::start_at(&addrs, dir.path(), |id| {
        let zone = if id <= 2 { "az-1" } else { "az-2" };
        vec!["--rack".to_string(), zone.to_string()]
    });
    cli_ok(
        &cluster.bootstrap(),
        &["topic", "create", "zoned", "-p", "8", "-r", "2"],
        "",
    );
    let topic = cluster.topic_metadata("zoned").unwrap();
    for p in &topic.partitions {
        let zones: Vec<bool> = p.replicas.iter().map(|b| b.0 <= 2).collect();
        assert!(zones.contains(&true) && zones.contains(&false), "{p:?}");
    }
}

/// Whether every partition of `topic` is led by its preferred replica (its first).
fn led_by_preferred(cluster: &TestCluster, topic: &str) -> bool {
    cluster.topic_metadata(topic).is_some_and(|t| {
        t.partitions
            .iter()
            .all(|p| p.replicas.first() == Some(&p.leader))
    })
}

/// A node that was down comes back as a follower of everything it led; once it is in
/// sync, `sluice cluster elect-leaders` (with the automatic rebalance off) hands each
/// partition back to its preferred replica.
#[test]
fn preferred_replicas_lead_again_after_an_election() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(
        3,
        dir.path(),
        &["--leader-imbalance-check-interval-ms", "0"],
    );
    let bootstrap = cluster.bootstrap();
    cli_ok(
        &bootstrap,
        &["topic", "create", "pl", "-p", "3", "-r", "3"],
        "",
    );
    cluster.wait_isr("pl", 3);
    assert!(led_by_preferred(&cluster, "pl"));
    let victim = cluster.leader("pl", 0);
    cluster.node(victim).kill();
    wait_until("another leader of pl-0", Duration::from_secs(30), || {
        ![-1, victim].contains(&cluster.leader("pl", 0))
    });
    cluster.node(victim).restart();
    cluster.wait_in_every_isr("pl", victim);
    assert!(
        !led_by_preferred(&cluster, "pl"),
        "nothing moved it back yet"
    );
    // The ISR seen here may be a moment ahead of the controller's image: the election
    // says PREFERRED_LEADER_NOT_AVAILABLE (retriable) until the controller has it too.
    let mut out = String::new();
    wait_until("the election", Duration::from_secs(30), || {
        let run = sluice_integration_tests::cli(
            &cluster.bootstrap(),
            &["cluster", "elect-leaders", "--topic", "pl"],
            "",
        );
        out += &String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            run.status.success() || stderr.contains("cannot lead now"),
            "{stderr}"
        );
        run.status.success()
    });
    assert!(
        out.contains("pl/0: its preferred replica leads again"),
        "{out}"
    );
    // The election is committed by the controller; the broker asked for metadata learns
    // it a moment later (as in Kafka, where metadata reaches brokers asynchronously).
    wait_until(
        "every partition of pl led by its preferred replica",
        Duration::from_secs(10),
        || led_by_preferred(&cluster, "pl"),
    );
    let again = cli_ok(&cluster.bootstrap(), &["cluster", "elect-leaders"], "");
    assert_eq!(again, "every partition is led by its preferred replica\n");
}

/// With the automatic rebalance on (a short interval here; Kafka's 5 minutes by default),
/// the controller hands the partitions back by itself once the preferred replica is in
/// sync.
#[test]
fn the_controller_moves_leaderships_back_to_preferred_replicas_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(
        3,
        dir.path(),
        &["--leader-imbalance-check-interval-ms", "500"],
    );
    cli_ok(
        &cluster.bootstrap(),
        &["topic", "create", "pa", "-p", "3", "-r", "3"],
        "",
    );
    cluster.wait_isr("pa", 3);
    let victim = cluster.leader("pa", 1);
    cluster.node(victim).kill();
    wait_until("another leader of pa-1", Duration::from_secs(30), || {
        ![-1, victim].contains(&cluster.leader("pa", 1))
    });
    cluster.node(victim).restart();
    wait_until(
        "every partition of pa led by its preferred replica",
        Duration::from_secs(60),
        || led_by_preferred(&cluster, "pa"),
    );
}

#[test]
fn leader_sigkills_under_acks_all_load_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, rt, client) =
        three_nodes_with_topic(dir.path(), "failover", 3, &[("min.insync.replicas", "2")]);
    let progress = Arc::new(Progress::default());
    let producing = rt.spawn(produce_until(
        client.clone(),
        "failover".into(),
        ProducerConfig::default(),
        Arc::clone(&progress),
    ));
    // Back-to-back leader changes: kill partition 0's leader, bring it back (it rejoins as
    // a follower that may hold an unreplicated tail), then kill the next leader.
    for _ in 0..2 {
        progress.wait_for_more("acknowledgements before the kill", 300);
        let leader = cluster.leader("failover", 0);
        assert!(leader >= 1, "partition 0 has a leader");
        cluster.node(leader).kill();
        progress.wait_for_more("acknowledgements after the kill (failover)", 300);
        cluster.node(leader).restart();
        cluster.wait_isr("failover", 3);
    }
    progress.stop.store(true, Ordering::Release);
    rt.block_on(producing).unwrap();
    let acked = progress.acked.lock().unwrap().clone();
    let records = rt.block_on(read_everything(&client, "failover", 3, acked.len()));
    check_acknowledged(&records, &acked);
    drop(client);
    drop(rt);
    check_replicas_identical(&mut cluster, "failover", 3, 3);
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
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.node(follower).kill();
    wait_until("the ISR to shrink", Duration::from_secs(30), || {
        cluster
            .partition_state("strict", 0)
            .is_some_and(|(_, _, isr)| isr.len() == 2)
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
    check_replicas_identical(&mut cluster, "strict", 1, 3);
}

#[test]
fn a_paused_leader_is_replaced_and_rejoins_as_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cluster, rt, all_client) = three_nodes_with_topic(dir.path(), "paused", 1, &[]);
    let old = cluster.leader("paused", 0);
    cluster.node(old).pause();
    let others: Vec<String> = (1..=3)
        .filter(|id| *id != old)
        .map(|id| cluster.brokers[(id - 1) as usize].bootstrap())
        .collect();
    let others = others.join(",");
    wait_until("a new leader", Duration::from_secs(120), || {
        let leader = cluster.leader("paused", 0);
        leader >= 1 && leader != old
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
    check_replicas_identical(&mut cluster, "paused", 1, 3);
}

#[test]
fn partitions_move_to_other_brokers_under_acks_all_load_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    let bootstrap = cluster.bootstrap();
    // Both partitions on brokers 1 and 2, broker 1 leading.
    cli_ok(
        &bootstrap,
        &[
            "topic",
            "create",
            "moving",
            "--replica-assignment",
            "1:2,1:2",
        ],
        "",
    );
    cluster.wait_isr("moving", 2);
    let rt = sluice_integration_tests::checks::runtime();
    let client = rt.block_on(client(&bootstrap));
    let progress = Arc::new(Progress::default());
    let producing = rt.spawn(produce_until(
        client.clone(),
        "moving".into(),
        ProducerConfig::default(),
        Arc::clone(&progress),
    ));
    progress.wait_for_more("acknowledgements before the moves", 300);
    // Partition 0 leaves broker 1 (its leader) for 2 and 3; partition 1 swaps 2 for 3.
    let out = cli_ok(
        &bootstrap,
        &[
            "topic",
            "reassign",
            "moving",
            "-p",
            "0",
            "--replicas",
            "2,3",
        ],
        "",
    );
    assert!(out.starts_with("moving/0: moving to brokers 2,3"), "{out}");
    cli_ok(
        &bootstrap,
        &[
            "topic",
            "reassign",
            "moving",
            "-p",
            "1",
            "--replicas",
            "3,1",
        ],
        "",
    );
    wait_until("both moves complete", Duration::from_secs(60), || {
        cli_ok(&bootstrap, &["topic", "reassignments"], "").is_empty()
    });
    let layout: Vec<(i32, Vec<i32>)> = cluster
        .topic_metadata("moving")
        .unwrap()
        .partitions
        .iter()
        .map(|p| (p.leader.0, p.replicas.iter().map(|b| b.0).collect()))
        .collect();
    // A leader that stays a replica keeps leading (the preferred election moves it later).
    assert_eq!(layout, vec![(2, vec![2, 3]), (1, vec![3, 1])]);
    wait_until(
        "broker 1's copy of partition 0 deleted",
        Duration::from_secs(10),
        || !cluster.node(1).partition_dir("moving", 0).exists(),
    );
    progress.wait_for_more("acknowledgements after the moves", 300);
    // Cancelling a move that is not under way says so.
    let cancel = sluice_integration_tests::cli(
        &bootstrap,
        &["topic", "reassign", "moving", "-p", "0", "--cancel"],
        "",
    );
    assert!(!cancel.status.success());
    let stderr = String::from_utf8_lossy(&cancel.stderr);
    assert!(stderr.contains("not being reassigned"), "{stderr}");
    progress.stop.store(true, Ordering::Release);
    rt.block_on(producing).unwrap();
    let acked = progress.acked.lock().unwrap().clone();
    let records = rt.block_on(read_everything(&client, "moving", 2, acked.len()));
    check_acknowledged(&records, &acked);
    drop(client);
    drop(rt);
    check_replicas_identical(&mut cluster, "moving", 2, 2);
}

#[test]
fn a_move_survives_the_sigkill_of_the_leader_it_moves_away_from() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    let bootstrap = cluster.bootstrap();
    cli_ok(
        &bootstrap,
        &["topic", "create", "shift", "--replica-assignment", "1:2"],
        "",
    );
    cluster.wait_isr("shift", 2);
    let rt = sluice_integration_tests::checks::runtime();
    let client = rt.block_on(client(&bootstrap));
    let progress = Arc::new(Progress::default());
    let producing = rt.spawn(produce_until(
        client.clone(),
        "shift".into(),
        ProducerConfig::default(),
        Arc::clone(&progress),
    ));
    progress.wait_for_more("acknowledgements before the move", 2000);
    // From 1,2 (1 leading) to 3,2; broker 1 is killed while broker 3 may still be copying.
    cli_ok(
        &bootstrap,
        &["topic", "reassign", "shift", "-p", "0", "--replicas", "3,2"],
        "",
    );
    cluster.node(1).kill();
    progress.wait_for_more("acknowledgements after the kill", 300);
    let rest = cluster.bootstrap_of(&[2, 3]);
    wait_until("the move completes", Duration::from_secs(60), || {
        cli_ok(&rest, &["topic", "reassignments"], "").is_empty()
    });
    cluster.node(1).restart();
    wait_until(
        "broker 1 deletes its stale copy",
        Duration::from_secs(30),
        || !cluster.node(1).partition_dir("shift", 0).exists(),
    );
    progress.wait_for_more("acknowledgements after the restart", 300);
    progress.stop.store(true, Ordering::Release);
    rt.block_on(producing).unwrap();
    let acked = progress.acked.lock().unwrap().clone();
    let records = rt.block_on(read_everything(&client, "shift", 1, acked.len()));
    check_acknowledged(&records, &acked);
    drop(client);
    drop(rt);
    check_replicas_identical(&mut cluster, "shift", 1, 2);
}
