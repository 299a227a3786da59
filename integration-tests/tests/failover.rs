//! The mechanisms of a fast failover (issue 20), each with real `sluice-broker` processes and
//! built so that only the mechanism can make the test pass, whatever the machine's speed:
//!
//! - a killed leader is fenced on evidence (its heartbeat connection closed, then a probe
//!   of its address is refused) while its broker session is a minute long;
//! - a killed active controller is fenced by its successor on the same kind of evidence
//!   (it was the previous term's controller, and its address refuses the probe);
//! - a producer whose leader is cut off from the other brokers while its request waits
//!   gets its record acknowledged by the new leader although its request timeout equals
//!   its delivery timeout: had it waited for an answer from the cut-off leader, no time
//!   would be left to retry;
//! - a consumer whose fetch waits on a hung leader reads the records its successor takes,
//!   well inside its ten-minute request timeout;
//! - a voter cut off from the others for many election timeouts comes back without
//!   deposing the controller (the pre-vote: it never stood while it could not win);
//! - a new idempotent producer gets its id while the controller hangs: the broker's
//!   request to the hung controller is abandoned for its successor, within a delivery
//!   timeout shorter than the broker's own wait for the controller.

use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Acks, Client, ClientConfig, Consumer, ConsumerConfig, OffsetSpec, PartitionId, Producer,
    ProducerConfig, ProducerRecord,
};
use sluice_integration_tests::chaos::harness::ChaosCluster;
use sluice_integration_tests::checks::{client, runtime};
use sluice_integration_tests::{cli_ok, wait_until, TestCluster};

/// A broker session far longer than the test waits: a fence within [`PATIENCE`] came from
/// evidence, not from the session's end.
const LONG_SESSION: &[&str] = &["--broker-session-timeout-ms", "60000"];
const PATIENCE: Duration = Duration::from_secs(30);

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    cli_ok(
        bootstrap,
        &[
            "topic",
            "create",
            topic,
            "-p",
            &partitions.to_string(),
            "-r",
            "3",
            "-c",
            "min.insync.replicas=2",
        ],
        "",
    );
}

/// Every partition of `topic` (of `partitions`) takes an acks=all write through the
/// nodes `ids`: its leadership moved off any node that failed.
fn produce_to_every_partition(cluster: &TestCluster, ids: &[i32], topic: &str, partitions: i32) {
    let bootstrap = cluster.bootstrap_of(ids);
    for partition in 0..partitions {
        cli_ok(
            &bootstrap,
            &["produce", topic, "--partition", &partition.to_string()],
            "after the fence\n",
        );
    }
}

/// Whether `log` has a line that names broker `id` and says `what`.
fn logged(log: &str, what: &str, id: i32) -> bool {
    let broker = format!("broker={id}");
    log.lines().any(|l| l.contains(what) && l.contains(&broker))
}

#[test]
fn a_killed_broker_is_fenced_on_evidence_long_before_its_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), LONG_SESSION);
    create_topic(&cluster.bootstrap(), "t", 3);
    cluster.wait_isr("t", 3);
    let controller = cluster.controller() as i32;
    let victim = (1..=3).find(|&id| id != controller).unwrap();
    cluster.node(victim).kill();
    wait_until(&format!("broker {victim} fenced"), PATIENCE, || {
        cluster.broker_state(victim).as_deref() == Some("fenced")
    });
    let log = cluster.node(controller).log();
    assert!(
        logged(&log, "no broker serves at", victim),
        "the controller's probe fenced it:\n{log}"
    );
    let survivors: Vec<i32> = (1..=3).filter(|&id| id != victim).collect();
    produce_to_every_partition(&cluster, &survivors, "t", 3);
}

#[test]
fn a_killed_controller_is_fenced_by_its_successor_on_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), LONG_SESSION);
    create_topic(&cluster.bootstrap(), "t", 3);
    cluster.wait_isr("t", 3);
    let victim = cluster.controller() as i32;
    cluster.node(victim).kill();
    let survivors: Vec<i32> = (1..=3).filter(|&id| id != victim).collect();
    wait_until("another controller", PATIENCE, || {
        let now = cluster.controller_from(&survivors);
        now > 0 && now != i64::from(victim)
    });
    wait_until(&format!("broker {victim} fenced"), PATIENCE, || {
        cluster.broker_state_from(&survivors, victim).as_deref() == Some("fenced")
    });
    let successor = cluster.controller_from(&survivors) as i32;
    let log = cluster.node(successor).log();
    assert!(
        logged(&log, "previous controller stopped answering", victim),
        "the successor named the previous controller as suspect:\n{log}"
    );
    produce_to_every_partition(&cluster, &survivors, "t", 3);
}

#[test]
fn a_request_waiting_on_a_cut_off_leader_is_retried_at_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let mut chaos = ChaosCluster::start(3, dir.path(), &[]);
    create_topic(&chaos.bootstrap(), "t", 1);
    chaos.cluster().wait_isr("t", 3);
    let rt = runtime();
    let client = rt.block_on(client(&chaos.bootstrap()));
    let _guard = rt.enter();
    let timeout = Duration::from_secs(60);
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::ZERO,
            request_timeout: timeout,
            delivery_timeout: timeout,
            ..ProducerConfig::default()
        },
    );
    let send = |value: &'static str| {
        rt.block_on(async {
            let record = ProducerRecord::new("t", Bytes::from_static(value.as_bytes()))
                .partition(PartitionId(0));
            producer.send(record).await?.await
        })
    };
    let before = send("before").expect("a write before the cut");
    let leader = chaos.cluster().leader("t", 0);
    chaos.isolate(leader);
    let after = send("after").unwrap_or_else(|e| {
        panic!(
            "the record sent to the cut-off leader {leader} was not retried at its successor: {e}"
        )
    });
    assert!(after.offset > before.offset, "{before:?} then {after:?}");
    let others = chaos.others(leader);
    let now = chaos.cluster().topic_metadata_from(&others, "t").unwrap();
    assert_ne!(now.partitions[0].leader.0, leader, "the leader moved");
    chaos.heal_all();
}

#[test]
fn a_fetch_waiting_on_a_hung_leader_moves_to_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    create_topic(&cluster.bootstrap(), "t", 1);
    cluster.wait_isr("t", 3);
    cli_ok(&cluster.bootstrap(), &["produce", "t"], "before\n");
    let rt = runtime();
    let request_timeout = Duration::from_secs(600);
    let client = rt
        .block_on(Client::connect(ClientConfig {
            bootstrap: cluster.bootstrap().split(',').map(str::to_string).collect(),
            request_timeout,
            ..ClientConfig::default()
        }))
        .unwrap();
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    rt.block_on(consumer.assign(vec![("t".into(), PartitionId(0), OffsetSpec::Earliest)]))
        .unwrap();
    let mut read = Vec::new();
    // Reads until `value` arrives, within a bound far below the request timeout: a fetch
    // left waiting on the hung leader would hold the partition for all of it.
    let mut read_until = |value: &str, read: &mut Vec<String>| {
        let started = std::time::Instant::now();
        while !read.iter().any(|v| v == value) {
            assert!(
                started.elapsed() < request_timeout / 5,
                "{value:?} not read; read so far: {read:?}"
            );
            for r in rt.block_on(consumer.poll(Duration::from_secs(1))).unwrap() {
                read.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into());
            }
        }
    };
    read_until("before", &mut read);
    let leader = cluster.leader("t", 0);
    cluster.node(leader).pause();
    let survivors: Vec<i32> = (1..=3).filter(|&id| id != leader).collect();
    cli_ok(
        &cluster.bootstrap_of(&survivors),
        &["produce", "t"],
        "after\n",
    );
    read_until("after", &mut read);
    cluster.node(leader).resume();
}

#[test]
fn a_voter_back_from_a_cut_link_does_not_depose_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let mut chaos = ChaosCluster::start(3, dir.path(), &[]);
    create_topic(&chaos.bootstrap(), "t", 1);
    chaos.cluster().wait_isr("t", 3);
    let controller = chaos.cluster().controller() as i32;
    let voter = (1..=3).find(|&id| id != controller).unwrap();
    let changes_seen = |chaos: &ChaosCluster| {
        let log = chaos.node(controller).log();
        log.lines()
            .filter(|l| {
                l.contains("is the active controller") || l.contains("no active controller")
            })
            .count()
    };
    let stood = |chaos: &ChaosCluster| {
        chaos
            .node(voter)
            .log()
            .matches("standing for election")
            .count()
    };
    let before = changes_seen(&chaos);
    let stood_before = stood(&chaos);
    // Cut off for about five election timeouts: without a pre-vote it stood in each one,
    // and came back with a term that deposed the controller.
    chaos.isolate(voter);
    std::thread::sleep(Duration::from_secs(4));
    chaos.heal_all();
    // Back: it takes writes as a replica again, then has had time to do harm.
    chaos.cluster().wait_in_every_isr("t", voter);
    cli_ok(&chaos.bootstrap(), &["produce", "t"], "after the cut\n");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(chaos.cluster().controller() as i32, controller);
    let log = chaos.node(controller).log();
    assert_eq!(
        changes_seen(&chaos),
        before,
        "node {controller} stayed the controller, in the same term:\n{log}"
    );
    assert_eq!(
        stood(&chaos),
        stood_before,
        "node {voter} never stood while cut off:\n{}",
        chaos.node(voter).log()
    );
}

#[test]
fn a_producer_id_is_given_by_the_successor_of_a_hung_controller() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    create_topic(&cluster.bootstrap(), "t", 3);
    cluster.wait_isr("t", 3);
    let controller = cluster.controller() as i32;
    let partition = (0..3)
        .find(|&p| cluster.leader("t", p) != controller)
        .expect("the controller leads one of three partitions");
    let survivors: Vec<i32> = (1..=3).filter(|&id| id != controller).collect();
    cluster.node(controller).pause();
    let rt = runtime();
    let client = rt.block_on(client(&cluster.bootstrap_of(&survivors)));
    let _guard = rt.enter();
    // Shorter than the 10 s a broker waits for the controller's AllocateProducerIds
    // answer: only giving up on the hung controller for its successor delivers in time.
    let timeout = Duration::from_secs(8);
    let producer = Producer::new(
        client,
        ProducerConfig {
            acks: Acks::All,
            enable_idempotence: true,
            request_timeout: timeout,
            delivery_timeout: timeout,
            ..ProducerConfig::default()
        },
    );
    let record =
        ProducerRecord::new("t", Bytes::from_static(b"first")).partition(PartitionId(partition));
    let acked = rt.block_on(async { producer.send(record).await?.await });
    cluster.node(controller).resume();
    acked.expect("an idempotent write while the controller hangs");
}
