//! The chaos harness (issue 8) does what it says, on three real brokers at 127.0.0.1-3
//! with a proxy on each of their six links and a topic of three partitions on all three:
//!
//! - isolating the controller: the other two elect a new one, which fences the isolated
//!   node and moves its leaderships; after the heal it rejoins every ISR;
//! - isolating a node that is not the controller: the same, by its missed heartbeats;
//! - a node SIGKILLed, its newest segments truncated or corrupted while it is down:
//!   it restarts, recovery cuts each damaged tail, and it catches up and rejoins every
//!   ISR.
//!
//! - (regression tests from the 20-minute chaos run) a leader SIGKILLed, the tail of its
//!   newest segment destroyed and restarted before the controller noticed: until its
//!   registration is applied it must not lead on its stale metadata (its followers would
//!   truncate committed records to match its damaged log);
//! - the last ISR member of a partition
//!   is SIGKILLed and the acknowledged tail of its log destroyed while a follower outside
//!   the ISR still holds it: the controller must elect that follower's longer log, not the
//!   damaged member.
//!
//! Records are produced with acks=all around every fault (during an isolation through a
//! client of the majority only: the isolated node still answers metadata with its stale
//! view). At the end every acknowledged record is read back at its offset, and once
//! stopped, the three replicas of each partition are byte-identical.
//!
//! Every wait polls for a state with a generous deadline; nothing is timed.

use std::sync::Arc;
use std::time::Duration;

use sluice_client::{Acks, Admin, BrokerId, Client, NewTopic, PartitionId, TopicMetadata};
use sluice_integration_tests::chaos::harness::ChaosCluster;
use sluice_integration_tests::chaos::proxy::Cut;
use sluice_integration_tests::checks::{self, Acked};
use sluice_integration_tests::wait_until;

const TOPIC: &str = "chaos";
const PARTITIONS: i32 = 3;
/// Longest wait for the cluster to react to a fault (fencing takes a 3 s session).
const REACTS: Duration = Duration::from_secs(60);

/// Produces 20 records with acks=all to every partition through `client` and records
/// where each was acknowledged.
fn produce(rt: &tokio::runtime::Runtime, client: &Client, acked: &mut Acked, label: &str) {
    for partition in 0..PARTITIONS {
        let values: Vec<String> = (0..20)
            .map(|i| format!("{label}-p{partition}-{i}"))
            .collect();
        let written = rt.block_on(checks::produce_values(
            client,
            TOPIC,
            partition,
            Acks::All,
            &values,
        ));
        for (offset, value) in written {
            assert!(
                acked
                    .insert((PartitionId(partition), offset), value)
                    .is_none(),
                "offset {offset} of partition {partition} acknowledged twice"
            );
        }
    }
}

/// `TOPIC`'s metadata as one of `nodes` sees it.
fn view(chaos: &ChaosCluster, nodes: &[i32]) -> Option<Arc<TopicMetadata>> {
    chaos.cluster().topic_metadata_from(nodes, TOPIC)
}

/// Isolates `node`, waits until the others have fenced it and moved its leaderships (and
/// elected another controller if it was the controller), produces through the others,
/// heals, and waits until it is back in every ISR.
fn isolate_then_heal(
    chaos: &mut ChaosCluster,
    rt: &tokio::runtime::Runtime,
    acked: &mut Acked,
    node: i32,
) {
    let others = chaos.others(node);
    let was_controller = chaos.cluster().controller_from(&others) == i64::from(node);
    println!("isolating node {node} (controller: {was_controller})");
    chaos.isolate(node);
    if was_controller {
        wait_until("the others elect another controller", REACTS, || {
            let controller = chaos.cluster().controller_from(&others);
            controller > 0 && controller != i64::from(node)
        });
    }
    wait_until(&format!("the others fence node {node}"), REACTS, || {
        chaos.cluster().broker_state_from(&others, node).as_deref() == Some("fenced")
    });
    wait_until(
        &format!("every partition led by a node other than {node}"),
        REACTS,
        || {
            view(chaos, &others).is_some_and(|t| {
                t.partitions
                    .iter()
                    .all(|p| p.leader.0 > 0 && p.leader.0 != node)
            })
        },
    );
    let bootstrap: Vec<String> = others
        .iter()
        .map(|&id| chaos.node(id).bootstrap())
        .collect();
    let majority = rt.block_on(checks::client(&bootstrap.join(",")));
    produce(rt, &majority, acked, &format!("isolated-{node}"));

    chaos.heal_all();
    wait_until(&format!("node {node} back in every ISR"), REACTS, || {
        view(chaos, &others)
            .is_some_and(|t| t.partitions.iter().all(|p| p.isr.contains(&BrokerId(node))))
    });
    wait_until(&format!("node {node} active again"), REACTS, || {
        chaos.cluster().broker_state_from(&others, node).as_deref() == Some("active")
    });
}

#[test]
fn faults_of_the_harness_fence_move_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let mut chaos = ChaosCluster::start(3, dir.path(), &[]);
    let rt = checks::runtime();
    let client = rt.block_on(checks::client(&chaos.bootstrap()));
    rt.block_on(Admin::new(client.clone()).create_topic(NewTopic::new(TOPIC, PARTITIONS, 3)))
        .expect("create the topic");
    chaos.cluster().wait_isr(TOPIC, 3);
    let mut acked = Acked::new();
    produce(&rt, &client, &mut acked, "start");
    // Every broker-to-broker connection went through a proxy.
    for from in 1..=3 {
        for to in chaos.others(from) {
            assert!(
                chaos.link(from, to).bytes_forwarded() > 0,
                "nothing crossed link {from}->{to}"
            );
        }
    }

    let mut controller = -1;
    wait_until("a controller", REACTS, || {
        controller = chaos.cluster().controller();
        controller > 0
    });
    let controller = controller as i32;
    isolate_then_heal(&mut chaos, &rt, &mut acked, controller);
    // Another node, not the controller now.
    let current = chaos.cluster().controller() as i32;
    let node = (1..=3)
        .find(|&n| n != current && n != controller)
        .expect("three nodes");
    isolate_then_heal(&mut chaos, &rt, &mut acked, node);

    // A crash that tears or damages the newest segments of a follower.
    let victim = (1..=3).find(|&n| n != node).expect("three nodes");
    println!("killing node {victim} and damaging its newest segments");
    chaos.kill(victim);
    let damaged = [
        chaos.truncate_newest_segment(victim, TOPIC, 0, 7),
        chaos.corrupt_newest_segment(victim, TOPIC, 1, 7),
        chaos.truncate_newest_segment(victim, TOPIC, 2, 100),
    ];
    produce(&rt, &client, &mut acked, "victim-down");
    chaos.restart(victim);
    // Replicas are opened (and recovered) as the node applies the metadata, which may
    // be after it first answers.
    for damage in &damaged {
        let damage = damage
            .as_ref()
            .expect("the victim has data in every partition");
        let logged = format!("recovered: cut {}", damage.file.display());
        wait_until(&format!("recovery of {damage:?} logged"), REACTS, || {
            chaos.node(victim).log().contains(&logged)
        });
    }
    // Asked of the others: the victim's own image may predate its fencing.
    let others = chaos.others(victim);
    wait_until(&format!("node {victim} back in every ISR"), REACTS, || {
        view(&chaos, &others).is_some_and(|t| {
            t.partitions
                .iter()
                .all(|p| p.isr.contains(&BrokerId(victim)))
        })
    });
    produce(&rt, &client, &mut acked, "end");

    let records = rt.block_on(checks::read_everything(
        &client,
        TOPIC,
        PARTITIONS,
        acked.len(),
    ));
    checks::check_acknowledged(&records, &acked);
    println!("{} records acknowledged and read back", acked.len());
    chaos.stop_all();
    checks::check_replicas_identical(chaos.cluster_mut(), TOPIC, PARTITIONS, 3);
}

/// The chaos run's lost writes, made certain. Followers are cut off one at a time, so the
/// ISR shrinks to {F1, L} (where a record R is acknowledged), then to the leader L alone.
/// L is SIGKILLed and the newest segment's tail, R, destroyed. When L comes back it is
/// the last ISR member; electing it would give R's offset to the next record (the run saw
/// exactly this). Recovery reports the damage, the partition waits for every replica's
/// log end, and F1, whose log is longest, leads: R stays at its offset.
#[test]
fn a_damaged_last_isr_member_does_not_lead_over_a_longer_log() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "damaged";
    let mut chaos = ChaosCluster::start(3, dir.path(), &["--replica-lag-time-max-ms", "1500"]);
    let rt = checks::runtime();
    let client = rt.block_on(checks::client(&chaos.bootstrap()));
    let new = NewTopic::new(topic, 1, 3).config("min.insync.replicas", "2");
    rt.block_on(Admin::new(client.clone()).create_topic(new))
        .expect("create the topic");
    chaos.cluster().wait_isr(topic, 3);
    let state = |chaos: &ChaosCluster, nodes: &[i32]| {
        let metadata = chaos.cluster().topic_metadata_from(nodes, topic)?;
        let p = metadata.partition(PartitionId(0)).ok()?;
        Some((p.leader.0, p.isr.iter().map(|b| b.0).collect::<Vec<_>>()))
    };
    let all = [1, 2, 3];
    let leader = state(&chaos, &all).expect("metadata").0;
    let others = chaos.others(leader);
    let (f1, f2) = (others[0], others[1]);
    let wait_isr = |chaos: &ChaosCluster, isr: &[i32]| {
        let mut want = isr.to_vec();
        want.sort();
        wait_until(&format!("the ISR becomes {want:?}"), REACTS, || {
            state(chaos, &all).is_some_and(|(l, mut now)| {
                now.sort();
                l == leader && now == want
            })
        });
    };
    let produce = |client: &Client, label: &str| {
        let written = rt.block_on(checks::produce_values(
            client,
            topic,
            0,
            Acks::All,
            &[label.to_string()],
        ));
        written[0].0
    };
    let mut acked = Acked::new();
    acked.insert(
        (PartitionId(0), produce(&client, "before")),
        "before".into(),
    );

    println!("leader {leader}; cutting {f2} off it, then {f1}");
    chaos.cut_one_way(f2, leader, Cut::Blackhole);
    wait_isr(&chaos, &[leader, f1]);
    let r = produce(&client, "R");
    acked.insert((PartitionId(0), r), "R".into());
    chaos.cut_one_way(f1, leader, Cut::Blackhole);
    wait_isr(&chaos, &[leader]);

    // The leader epoch R was written in: the election the test waits for comes after it.
    // Until the controller has fenced the killed leader, the others' metadata rightly
    // still names it, at this epoch; that is not an election.
    let epoch_before = chaos
        .cluster()
        .topic_metadata_from(&others, topic)
        .and_then(|m| m.partition(PartitionId(0)).ok().map(|p| p.leader_epoch))
        .expect("metadata before the kill");
    chaos.kill(leader);
    let damage = chaos
        .corrupt_newest_segment(leader, topic, 0, 16)
        .expect("the leader has a segment");
    println!("node {leader} killed; R (offset {r}) destroyed on it: {damage:?}");
    chaos.heal_all();
    chaos.restart(leader);

    let mut elected = -1;
    wait_until(
        &format!("a leader elected after node {leader}'s damage"),
        REACTS,
        || {
            let metadata = chaos.cluster().topic_metadata_from(&others, topic);
            match metadata.and_then(|m| m.partition(PartitionId(0)).ok().cloned()) {
                Some(p) if p.leader.0 > 0 && p.leader_epoch > epoch_before => {
                    elected = p.leader.0;
                    true
                }
                _ => false,
            }
        },
    );
    assert_eq!(
        elected, f1,
        "node {f1} holds R and the longest log, but node {elected} was elected"
    );
    assert!(
        chaos.node(leader).log().contains("recovered: cut"),
        "node {leader}'s recovery did not cut the damage"
    );
    chaos.cluster().wait_isr(topic, 3);
    acked.insert((PartitionId(0), produce(&client, "after")), "after".into());
    let records = rt.block_on(checks::read_everything(&client, topic, 1, acked.len()));
    checks::check_acknowledged(&records, &acked);
    chaos.stop_all();
    checks::check_replicas_identical(chaos.cluster_mut(), topic, 1, 3);
}

/// The chaos run's other lost writes. Leader L of a partition is SIGKILLed with the link
/// to the controller blackholed (so the controller neither sees its connections close nor
/// hears from it: with a 60 s session it is not fenced), the last committed batch R is
/// destroyed on its disk, and it restarts. Its own metadata still says it leads, and its
/// followers still follow it at that epoch. Acting on that, its log would tell them the
/// epoch ends before R and they would truncate R away. It must hold the leadership back
/// until its registration is applied; then the controller moves the leadership to a
/// follower, and R stays.
#[test]
fn a_restarted_leader_does_not_lead_before_its_registration() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "stale";
    let mut chaos = ChaosCluster::start(3, dir.path(), &["--broker-session-timeout-ms", "60000"]);
    let rt = checks::runtime();
    let client = rt.block_on(checks::client(&chaos.bootstrap()));
    rt.block_on(Admin::new(client.clone()).create_topic(NewTopic::new(topic, 3, 3)))
        .expect("create the topic");
    chaos.cluster().wait_isr(topic, 3);
    let mut controller = -1;
    wait_until("a controller", REACTS, || {
        controller = chaos.cluster().controller();
        controller > 0
    });
    let controller = controller as i32;
    // A partition led by another node than the controller (placement spreads leaders).
    let (p, leader) = (0..3)
        .map(|p| (p, chaos.cluster().leader(topic, p)))
        .find(|(_, leader)| *leader > 0 && *leader != controller)
        .expect("a partition led by a node other than the controller");
    let values: Vec<String> = (0..20).map(|i| format!("committed-{i}")).collect();
    let mut acked = Acked::new();
    let written = rt.block_on(checks::produce_values(
        &client,
        topic,
        p,
        Acks::All,
        &values,
    ));
    for (offset, value) in written {
        acked.insert((PartitionId(p), offset), value);
    }

    println!("partition {p}: leader {leader}, controller {controller}");
    chaos.cut_one_way(leader, controller, Cut::Blackhole);
    chaos.kill(leader);
    let damage = chaos
        .corrupt_newest_segment(leader, topic, p, 16)
        .expect("the leader has a segment");
    println!("node {leader} killed, its last batch destroyed: {damage:?}");
    let followers = chaos.others(leader);
    let led_by = |chaos: &ChaosCluster| {
        let metadata = chaos.cluster().topic_metadata_from(&followers, topic)?;
        Some(metadata.partition(PartitionId(p)).ok()?.leader.0)
    };
    chaos.restart(leader);
    let role_line = format!("partition={topic}-{p} epoch=");
    wait_until(
        &format!("node {leader} takes a role in {topic}-{p}"),
        REACTS,
        || {
            let log = chaos.node(leader).log();
            log.contains("recovered: cut")
                && log.lines().filter(|l| l.contains(&role_line)).count() >= 2
        },
    );
    // The followers fetch at least every 500 ms: several rounds would truncate them, were
    // the restarted node leading.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        led_by(&chaos),
        Some(leader),
        "the controller moved the leadership early: the test no longer tests the window"
    );

    chaos.heal_all();
    wait_until(
        &format!("a leader of partition {p} other than node {leader}"),
        REACTS,
        || led_by(&chaos).is_some_and(|l| l > 0 && l != leader),
    );
    chaos.cluster().wait_isr(topic, 3);
    let written = rt.block_on(checks::produce_values(
        &client,
        topic,
        p,
        Acks::All,
        &["after".to_string()],
    ));
    acked.insert((PartitionId(p), written[0].0), "after".into());
    let records = rt.block_on(checks::read_everything(&client, topic, 3, acked.len()));
    checks::check_acknowledged(&records, &acked);
    chaos.stop_all();
    checks::check_replicas_identical(chaos.cluster_mut(), topic, 3, 3);
}
