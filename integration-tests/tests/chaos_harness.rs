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
