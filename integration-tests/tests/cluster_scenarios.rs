//! Cluster scenarios with real `sluice-broker` processes on 127.0.0.1, each built so that
//! the fault it exercises happens for certain, not by luck of timing:
//!
//! - a replica holding records that were never committed truncates them to the new
//!   leader's epoch boundary (KIP-101/279), not to its high watermark;
//! - a rolling restart with SIGTERM gives an acks=all producer no error at all;
//! - a follower that stops fetching leaves the ISR by lag (`replica_lag_time_max_ms`), not
//!   by fencing, acks=all goes on with `min.insync.replicas=2`, and it comes back;
//! - a broker that is not a controller voter (a learner of the metadata log) registers and
//!   hosts replicas;
//! - a topic with unclean elections whose last in-sync replica dies while an out-of-sync
//!   one is up gets that one as leader at once, and a topic without them stays offline
//!   until the operator allows them;
//! - a paused leader that was replaced refuses an acks=all produce sent straight to it;
//! - after every broker stopped (SIGTERM, or SIGKILL once the high watermarks were
//!   checkpointed) and started again, the first leader serves every committed record.
//!
//! Each ends with the checks of `sluice_integration_tests::checks`: every acknowledged
//! record is read back at its offset, and the replicas of every partition are
//! byte-identical once the cluster is stopped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_client::{
    Acks, Admin, BrokerId, Client, ClientConfig, Error, ErrorCode, NewTopic, PartitionId,
    ProducerConfig,
};
use sluice_integration_tests::checks::{
    check_acknowledged, check_replicas_identical, client, cluster_with_topic, log_bytes,
    produce_until, produce_values, read_everything, runtime, value_of, Acked, Progress,
};
use sluice_integration_tests::{wait_until, BrokerProcess, TestCluster};
use sluice_protocol::batch::BatchBuilder;
use sluice_protocol::messages::{
    ApiVersionsRequest, FetchPartition, FetchRequest, FetchTopic, IsolationLevel, ProducePartition,
    ProduceRequest, ProduceTopic, ACKS_ALL,
};
use sluice_protocol::{LeaderEpoch, Offset, Request, Response};

/// `n` values `prefix-0`, `prefix-1`, ...
fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Acknowledgements of partition `partition` as the checks take them.
fn acked_at(partition: i32, acks: &[(i64, String)]) -> Acked {
    acks.iter()
        .map(|(offset, value)| ((PartitionId(partition), *offset), value.clone()))
        .collect()
}

/// The lines of `broker`'s log that contain every one of `needles`.
fn log_lines(broker: &BrokerProcess, needles: &[&str]) -> Vec<String> {
    broker
        .log()
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .map(str::to_string)
        .collect()
}

/// The bootstrap string of every node but `id`.
fn all_but(cluster: &TestCluster, id: i32) -> String {
    let others: Vec<i32> = (1..=cluster.brokers.len() as i32)
        .filter(|&n| n != id)
        .collect();
    cluster.bootstrap_of(&others)
}

/// Waits until a broker other than `old` leads `topic`'s partition with an epoch above
/// `old_epoch`; returns the new leader and epoch.
fn wait_new_leader(
    cluster: &TestCluster,
    topic: &str,
    partition: i32,
    old: i32,
    old_epoch: i32,
) -> (i32, i32) {
    let mut found = (-1, -1);
    wait_until(
        &format!("a new leader of {topic}-{partition} after node {old}"),
        Duration::from_secs(90),
        || match cluster.partition_state(topic, partition) {
            Some((leader, epoch, _)) if leader >= 1 && leader != old && epoch > old_epoch => {
                found = (leader, epoch);
                true
            }
            _ => false,
        },
    );
    found
}

/// KIP-101/279. The leader takes records with acks=1 while both followers are frozen, so
/// only it has them; it is killed, a follower takes over with a bumped epoch and takes
/// acks=all records at the same offsets; the old leader restarts holding a divergent tail
/// of the old epoch. It must truncate to where the new leader's log leaves that epoch (the
/// new epoch's first offset), never to its high watermark (0 after a restart: it would
/// refetch everything, and under KIP-101's scenario lose committed records), and end up
/// byte-identical to the others.
///
/// Why deterministic: the partition chosen is the one the controller leads, so the kill
/// takes the controller too and the followers elect a new one, which grants every broker a
/// full session (ten seconds here, longer than the freeze); had the controller been a frozen follower, it would on resume fence
/// whoever's session ran out during the freeze. The followers' last replica fetches were
/// long polls of at most 500 ms; after a second they are answered (empty), and the
/// sacrificial record `maybe-0` would take any that was not, so the records after it can
/// reach no follower.
#[test]
fn an_uncommitted_tail_is_truncated_to_the_new_leaders_epoch_not_the_hw() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "diverge";
    // A session longer than the followers' freeze, so the controller fences nobody during
    // it (its own death is found on evidence by its successor).
    let session = ["--broker-session-timeout-ms", "10000"];
    let (mut cluster, rt, all_client) = cluster_with_topic(3, dir.path(), &session, topic, 3, &[]);
    let controller = cluster.controller() as i32;
    let p = (0..3)
        .find(|p| cluster.leader(topic, *p) == controller)
        .expect("the three partitions' leaders are the three nodes");
    let committed = rt.block_on(produce_values(
        &all_client,
        topic,
        p,
        Acks::All,
        &values("committed", 10),
    ));
    let (old, old_epoch, isr) = cluster.partition_state(topic, p).unwrap();
    assert_eq!(isr.len(), 3);
    let followers: Vec<i32> = (1..=3).filter(|id| *id != old).collect();
    for id in &followers {
        cluster.node(*id).pause();
    }
    std::thread::sleep(Duration::from_secs(1));
    let uncommitted = rt.block_on(async {
        let only_leader = client(&cluster.node(old).bootstrap()).await;
        produce_values(&only_leader, topic, p, Acks::Leader, &values("maybe", 1)).await;
        produce_values(
            &only_leader,
            topic,
            p,
            Acks::Leader,
            &values("uncommitted", 5),
        )
        .await
    });
    cluster.node(old).kill();
    for id in &followers {
        cluster.node(*id).resume();
    }
    let (new_leader, new_epoch) = wait_new_leader(&cluster, topic, p, old, old_epoch);
    let after = rt.block_on(async {
        let survivors = client(&all_but(&cluster, old)).await;
        produce_values(&survivors, topic, p, Acks::All, &values("after", 10)).await
    });
    let epoch_start = after[0].0;
    assert!(
        epoch_start < uncommitted[0].0 + uncommitted.len() as i64,
        "epoch {new_epoch} of node {new_leader} starts at {epoch_start}, past the old \
         leader's tail {uncommitted:?}: there was nothing to truncate"
    );
    cluster.node(old).restart();
    cluster.wait_isr(topic, 3);
    // The restarted node may answer the ISR check above from its metadata of before the
    // kill: wait for it to follow the new leader, which it does by truncating first.
    let partition = format!("partition={topic}-{p}");
    wait_until(
        &format!("node {old} following {topic}-{p} again"),
        Duration::from_secs(30),
        || !log_lines(cluster.node(old), &["truncating to offset", &partition]).is_empty(),
    );
    let truncations = log_lines(cluster.node(old), &["truncating to offset", &partition]);
    let expected = format!("truncating to offset {epoch_start}:");
    assert!(
        !truncations.is_empty() && truncations.iter().all(|l| l.contains(&expected)),
        "node {old} must truncate {topic}-{p} to {epoch_start} (where epoch {old_epoch} ends \
         on the new leader), and only there: {truncations:#?}; its log of the partition:\n{}",
        log_lines(cluster.node(old), &[&partition]).join("\n")
    );
    eprintln!(
        "node {old} held {uncommitted:?} in epoch {old_epoch}; node {new_leader} leads epoch \
         {new_epoch} from offset {epoch_start}; {}",
        truncations[0]
    );
    let mut acked = acked_at(p, &committed);
    acked.extend(acked_at(p, &after));
    let records = rt.block_on(read_everything(&all_client, topic, 3, acked.len()));
    check_acknowledged(&records, &acked);
    let resurrected: Vec<_> = records
        .iter()
        .filter(|r| value_of(r).starts_with("uncommitted"))
        .map(|r| (r.offset, value_of(r)))
        .collect();
    assert!(
        resurrected.is_empty(),
        "divergent records survived: {resurrected:?}"
    );
    drop(all_client);
    drop(rt);
    check_replicas_identical(&mut cluster, topic, 3, 3);
}

/// Every broker in turn gets SIGTERM while an acks=all producer sends without pause: the
/// controlled shutdown moves its leaderships first, so the producer's retries (after
/// NOT_LEADER_OR_FOLLOWER) land on the new leaders and the application sees no error at
/// all. Each broker is back in every ISR before the next one stops.
#[test]
fn a_rolling_restart_with_sigterm_gives_the_producer_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "rolling";
    let (mut cluster, rt, client) = cluster_with_topic(
        3,
        dir.path(),
        &[],
        topic,
        3,
        &[("min.insync.replicas", "2")],
    );
    let progress = Arc::new(Progress::default());
    let producing = rt.spawn(produce_until(
        client.clone(),
        topic.into(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
        Arc::clone(&progress),
    ));
    for id in 1..=3 {
        progress.wait_for_more(&format!("acknowledgements before node {id} stops"), 200);
        let status = cluster.node(id).terminate();
        assert!(status.success(), "node {id}:\n{}", cluster.node(id).log());
        assert!(
            !log_lines(cluster.node(id), &["leaderships moved; shutting down"]).is_empty(),
            "node {id} stopped without a confirmed controlled shutdown:\n{}",
            cluster.node(id).log()
        );
        cluster.wait_out_of_every_isr(topic, id);
        progress.wait_for_more(&format!("acknowledgements while node {id} is down"), 200);
        cluster.node(id).restart();
        cluster.wait_in_every_isr(topic, id);
    }
    progress.wait_for_more("acknowledgements after the rolling restart", 200);
    progress.stop.store(true, Ordering::Release);
    rt.block_on(producing).unwrap();
    let errors = progress.errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} produce errors reached the application, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let acked = progress.acked.lock().unwrap().clone();
    let records = rt.block_on(read_everything(&client, topic, 3, acked.len()));
    check_acknowledged(&records, &acked);
    drop(client);
    drop(rt);
    check_replicas_identical(&mut cluster, topic, 3, 3);
}

/// A frozen follower stops fetching but, with a long broker session, stays registered and
/// unfenced: the leader alone must take it out of the ISR once it lags more than
/// `replica_lag_time_max_ms`, and acks=all goes on with the two left
/// (`min.insync.replicas=2`). Resumed, it catches up and is added back.
#[test]
fn a_lagging_follower_leaves_the_isr_by_lag_not_fencing_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "lag";
    let flags = [
        "--broker-session-timeout-ms",
        "120000",
        "--replica-lag-time-max-ms",
        "2000",
    ];
    let (mut cluster, rt, client) = cluster_with_topic(
        3,
        dir.path(),
        &flags,
        topic,
        1,
        &[("min.insync.replicas", "2")],
    );
    let progress = Arc::new(Progress::default());
    let producing = rt.spawn(produce_until(
        client.clone(),
        topic.into(),
        ProducerConfig::default(),
        Arc::clone(&progress),
    ));
    progress.wait_for_more("acknowledgements before the freeze", 200);
    // A follower that is not the controller: freezing the controller would stall the
    // AlterPartition that shrinks the ISR until a new one is elected.
    let leader = cluster.leader(topic, 0);
    let controller = cluster.controller() as i32;
    let frozen = (1..=3)
        .find(|id| *id != leader && *id != controller)
        .unwrap();
    cluster.node(frozen).pause();
    wait_until(
        &format!("node {frozen} out of the ISR"),
        Duration::from_secs(60),
        || {
            cluster
                .partition_state(topic, 0)
                .is_some_and(|(_, _, isr)| isr.len() == 2 && !isr.contains(&frozen))
        },
    );
    assert_eq!(
        cluster.broker_state(frozen).as_deref(),
        Some("active"),
        "node {frozen} left the ISR but was fenced too: the lag check should have removed it"
    );
    let leader_node = cluster.leader(topic, 0);
    let shrinks = log_lines(
        cluster.node(leader_node),
        &["shrinking the ISR", &format!("partition={topic}-0")],
    );
    assert!(
        shrinks.iter().any(|l| !l
            .split(" to ")
            .nth(1)
            .unwrap_or("")
            .contains(&format!("({frozen})"))),
        "the leader (node {leader_node}) never shrank the ISR by lag: {shrinks:#?}"
    );
    for id in 1..=3 {
        let fenced = log_lines(
            cluster.node(id),
            &["session expired", &format!("broker={frozen}")],
        );
        assert!(
            fenced.is_empty(),
            "node {id} fenced node {frozen}: {fenced:#?}"
        );
    }
    progress.wait_for_more(
        &format!("acks=all acknowledgements with node {frozen} frozen"),
        200,
    );
    assert!(cluster
        .partition_state(topic, 0)
        .is_some_and(|(_, _, isr)| !isr.contains(&frozen)));
    cluster.node(frozen).resume();
    cluster.wait_in_every_isr(topic, frozen);
    progress.wait_for_more("acknowledgements after the return", 100);
    progress.stop.store(true, Ordering::Release);
    rt.block_on(producing).unwrap();
    let acked = progress.acked.lock().unwrap().clone();
    let records = rt.block_on(read_everything(&client, topic, 1, acked.len()));
    check_acknowledged(&records, &acked);
    drop(client);
    drop(rt);
    check_replicas_identical(&mut cluster, topic, 1, 3);
}

/// A fourth node started with the three voters' `--voters` list is no voter: it joins the
/// metadata log as a learner, registers, is active, and takes replicas of a topic created
/// afterwards (4 partitions of 3 replicas over 4 brokers: placement must use it), which
/// receive the data.
#[test]
fn a_non_voter_broker_registers_and_hosts_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    let learner = cluster.add_node(&[]);
    assert_eq!(learner, 4);
    cluster.wait_active(4);
    let described = cluster.describe().expect("cluster describe");
    let voters: Vec<i64> = described["controller"]["voters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(voters, vec![1, 2, 3], "{described}");
    assert_eq!(cluster.broker_state(learner).as_deref(), Some("active"));

    let topic = "spread";
    let rt = runtime();
    let client = rt.block_on(client(&cluster.bootstrap()));
    rt.block_on(Admin::new(client.clone()).create_topic(NewTopic::new(topic, 4, 3)))
        .expect("create topic");
    cluster.wait_isr(topic, 3);
    let metadata = cluster.topic_metadata(topic).unwrap();
    let hosted: Vec<i32> = metadata
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&BrokerId(learner)))
        .map(|p| p.partition.0)
        .collect();
    assert!(
        !hosted.is_empty(),
        "node {learner} hosts nothing: {metadata:?}"
    );
    let mut acked = Acked::new();
    for p in 0..4 {
        let acks = rt.block_on(produce_values(
            &client,
            topic,
            p,
            Acks::All,
            &values(&format!("p{p}"), 20),
        ));
        acked.extend(acked_at(p, &acks));
    }
    let records = rt.block_on(read_everything(&client, topic, 4, acked.len()));
    check_acknowledged(&records, &acked);
    drop(client);
    drop(rt);
    check_replicas_identical(&mut cluster, topic, 4, 3);
    for p in hosted {
        let dir = cluster
            .node(learner)
            .data_dir
            .join("topics")
            .join(format!("{topic}-{p}"));
        let bytes = log_bytes(&dir).unwrap_or_default();
        assert!(
            !bytes.is_empty(),
            "node {learner}'s replica of {topic}-{p} is empty"
        );
    }
}

/// A leader is frozen until another broker leads its partition with a bumped epoch; an
/// acks=all produce sent straight to it (queued in its socket while frozen, so it meets
/// the old leader before or after it learns of its demotion) must not be acknowledged,
/// and what it may have appended is truncated away when it follows the new leader.
#[test]
fn a_replaced_leader_refuses_a_produce_sent_straight_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let topic = "stale";
    let (mut cluster, rt, all_client) = cluster_with_topic(3, dir.path(), &[], topic, 1, &[]);
    let before = rt.block_on(produce_values(
        &all_client,
        topic,
        0,
        Acks::All,
        &values("before", 5),
    ));
    let (old, old_epoch, _) = cluster.partition_state(topic, 0).unwrap();
    // A client of its own with a long request timeout, connected to the old leader now.
    let direct = rt.block_on(async {
        let direct = sluice_client::Client::connect(ClientConfig {
            bootstrap: vec![cluster.node(old).bootstrap()],
            request_timeout: Duration::from_secs(60),
            ..ClientConfig::default()
        })
        .await
        .unwrap();
        let hello = Request::ApiVersions(ApiVersionsRequest {
            client_software_name: "test".into(),
            client_software_version: "0".into(),
        });
        direct.send(BrokerId(old), hello).await.unwrap();
        direct
    });
    cluster.node(old).pause();
    wait_new_leader(&cluster, topic, 0, old, old_epoch);
    let during = rt.block_on(async {
        let survivors = client(&all_but(&cluster, old)).await;
        produce_values(&survivors, topic, 0, Acks::All, &values("during", 5)).await
    });
    let mut batch = BatchBuilder::new();
    batch.append(0, None, Some(b"stale"), &[]);
    let request = Request::Produce(ProduceRequest {
        transactional_id: None,
        acks: ACKS_ALL,
        timeout_ms: 10_000,
        topics: vec![ProduceTopic {
            name: topic.into(),
            partitions: vec![ProducePartition {
                partition: PartitionId(0),
                records: batch.build(),
            }],
        }],
    });
    let sent = rt.spawn(async move { direct.send(BrokerId(old), request).await });
    std::thread::sleep(Duration::from_millis(300));
    cluster.node(old).resume();
    let refusals = [
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::RequestTimedOut,
    ];
    match rt.block_on(sent).unwrap() {
        Ok(Response::Produce(answer)) => {
            let outcome = &answer.topics[0].partitions[0];
            assert!(
                refusals.contains(&outcome.error_code),
                "the old leader answered {:?} ({:?}) at offset {}",
                outcome.error_code,
                outcome.error_message,
                outcome.base_offset
            );
            eprintln!("the old leader refused: {:?}", outcome.error_code);
        }
        Ok(other) => panic!("unexpected answer {:?}", other.api_key()),
        Err(e @ (Error::Timeout { .. } | Error::Network { .. })) => {
            eprintln!("no answer from the old leader: {e}");
        }
        Err(e) => assert!(
            e.code().is_some_and(|c| refusals.contains(&c)),
            "the old leader answered {e}"
        ),
    }
    cluster.wait_isr(topic, 3);
    let partition = format!("partition={topic}-0");
    eprintln!(
        "the old leader's truncations: {:#?}",
        log_lines(cluster.node(old), &["truncating to offset", &partition])
    );
    let mut acked = acked_at(0, &before);
    acked.extend(acked_at(0, &during));
    let records = rt.block_on(read_everything(&all_client, topic, 1, acked.len()));
    check_acknowledged(&records, &acked);
    assert!(
        records.iter().all(|r| value_of(r) != "stale"),
        "the refused record was committed"
    );
    drop(all_client);
    drop(rt);
    check_replicas_identical(&mut cluster, topic, 1, 3);
}

/// How a whole-cluster restart stops the brokers.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGTERM to all three at once: controlled shutdowns, then clean closes, which
    /// checkpoint each replica's HW (the periodic checkpoint, every minute by default,
    /// does not run first).
    Graceful,
    /// SIGKILL to all three, once every replica's periodic checkpoint (every 100 ms here)
    /// holds the HW.
    Kill,
}

/// The HW in a replica's `high-watermark-checkpoint` (`SLHW` v1, offset, CRC-32C; the
/// checksum is storage's to check), if the file is there.
fn checkpointed_high_watermark(partition_dir: &std::path::Path) -> Option<i64> {
    let bytes = std::fs::read(partition_dir.join("high-watermark-checkpoint")).ok()?;
    if bytes.len() != 17 || &bytes[..5] != b"SLHW\x01" {
        return None;
    }
    Some(i64::from_be_bytes(bytes[5..13].try_into().ok()?))
}

/// Stops every broker of a three-node cluster as `stop` says after acks=all records were
/// committed to an RF=3 partition, starts them all again, and checks that the partition's
/// first leader reports a HW covering every committed record (never a lower one) and
/// serves them all.
///
/// Why the HW is right at once, checkpoint or not: each restarted broker's registration
/// fences its previous run and takes it out of every ISR it is not the last member of, so
/// the partition's first leader after the restart is its sole ISR member, whose HW is its
/// whole (durable) log. The checkpoints are what a restarted follower starts from.
fn check_whole_cluster_restart(stop: Stop) {
    let dir = tempfile::tempdir().unwrap();
    let topic = "restart";
    let flags: &[&str] = match stop {
        Stop::Graceful => &[],
        Stop::Kill => &["--checkpoint-interval-ms", "100"],
    };
    let (mut cluster, rt, all_client) = cluster_with_topic(
        3,
        dir.path(),
        flags,
        topic,
        1,
        &[("min.insync.replicas", "2")],
    );
    let committed = rt.block_on(produce_values(
        &all_client,
        topic,
        0,
        Acks::All,
        &values("committed", 20),
    ));
    let end = committed.last().unwrap().0 + 1;
    drop(all_client);
    match stop {
        Stop::Graceful => {
            for id in 1..=3 {
                cluster.node(id).signal(libc::SIGTERM);
            }
            for id in 1..=3 {
                let status = cluster.node(id).wait_exit();
                assert!(status.success(), "node {id}:\n{}", cluster.node(id).log());
            }
        }
        Stop::Kill => {
            wait_until(
                "every replica's checkpointed HW at the log end",
                Duration::from_secs(30),
                || {
                    (1..=3).all(|id| {
                        let dir = cluster.node(id).partition_dir(topic, 0);
                        checkpointed_high_watermark(&dir) == Some(end)
                    })
                },
            );
            for id in 1..=3 {
                cluster.node(id).kill();
            }
        }
    }
    let checkpointed: Vec<Option<i64>> = (1..=3)
        .map(|id| checkpointed_high_watermark(&cluster.node(id).partition_dir(topic, 0)))
        .collect();
    // The leader that acknowledged the records had a HW at the end and never lowers it;
    // a follower learns it one fetch answer later, which a stop may come before.
    assert!(
        checkpointed.contains(&Some(end)),
        "{stop:?}: no replica checkpointed the HW {end}: {checkpointed:?}"
    );
    for id in 1..=3 {
        cluster.node(id).restart();
    }

    // The first fetch a leader serves: its HW must cover every committed record. A lower
    // one would hide committed records from consumers until the ISR re-established it.
    // (A Fetch, not ListOffsets: "latest" is not answered while a new leader's HW is below
    // the start of its epoch, which would hide a low HW from the test.)
    let client = rt.block_on(client(&cluster.bootstrap()));
    let mut first = None;
    wait_until("a leader serving fetches", Duration::from_secs(60), || {
        first = (1..=3).find_map(|id| {
            rt.block_on(served_high_watermark(&client, id, topic))
                .map(|hw| (id, hw))
        });
        first.is_some()
    });
    let (leader, served) = first.unwrap();
    eprintln!(
        "{stop:?}: checkpointed HWs {checkpointed:?}; node {leader} served the first fetch \
         after the restart with HW {served}; now {:?}",
        cluster.partition_state(topic, 0)
    );
    assert_eq!(
        served, end,
        "node {leader}, the first leader, hides committed records"
    );
    let records = rt.block_on(read_everything(&client, topic, 1, committed.len()));
    check_acknowledged(&records, &acked_at(0, &committed));
    drop(client);
    drop(rt);
    check_replicas_identical(&mut cluster, topic, 1, 3);
}

/// The HW in node `id`'s answer to a consumer's fetch of `topic`-0 from offset 0, if it
/// serves the partition (as its leader) now.
async fn served_high_watermark(client: &Client, id: i32, topic: &str) -> Option<i64> {
    let request = Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        isolation_level: IsolationLevel::ReadUncommitted,
        topics: vec![FetchTopic {
            topic: topic.into(),
            partitions: vec![FetchPartition {
                partition: PartitionId(0),
                current_leader_epoch: LeaderEpoch(-1),
                fetch_offset: Offset(0),
                partition_max_bytes: 1 << 20,
            }],
        }],
    });
    let Ok(Response::Fetch(answer)) = client.send(BrokerId(id), request).await else {
        return None;
    };
    let partition = answer.topics.first()?.partitions.first()?;
    (partition.error_code == ErrorCode::None).then_some(partition.high_watermark.0)
}

#[test]
fn a_whole_cluster_restart_after_sigterm_serves_every_committed_record() {
    check_whole_cluster_restart(Stop::Graceful);
}

#[test]
fn a_whole_cluster_restart_after_sigkill_serves_every_committed_record() {
    check_whole_cluster_restart(Stop::Kill);
}

/// Two topics on two non-voter brokers `a` and `b`, one allowing unclean elections. `b`
/// stops fetching (paused; the long session keeps it registered and active) and leaves
/// both ISRs by lag; then `a`, the last in-sync replica, is SIGKILLed. The unclean topic's
/// partition goes to `b` at once, without waiting for any broker to return; the clean
/// one stays offline, even once `b` runs again, until its config allows unclean elections,
/// which elects `b` there too. Records only `a` held are lost: what the topics chose.
#[test]
fn unclean_elections_happen_when_the_isr_dies_and_when_they_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--broker-session-timeout-ms",
        "120000",
        "--replica-lag-time-max-ms",
        "2000",
    ];
    let mut cluster = TestCluster::start(3, dir.path(), &flags);
    let (a, b) = (cluster.add_node(&flags), cluster.add_node(&flags));
    cluster.wait_active(5);
    let rt = runtime();
    let client = rt.block_on(client(&cluster.bootstrap()));
    let admin = Admin::new(client.clone());
    let on_a_then_b = vec![vec![BrokerId(a), BrokerId(b)]];
    for (topic, unclean) in [("unclean", "true"), ("clean", "false")] {
        let new = NewTopic::new(topic, 1, 2)
            .assignment(on_a_then_b.clone())
            .config("unclean.leader.election.enable", unclean);
        rt.block_on(admin.create_topic(new)).expect("create topic");
        cluster.wait_isr(topic, 2);
        rt.block_on(produce_values(
            &client,
            topic,
            0,
            Acks::All,
            &values(topic, 10),
        ));
    }
    cluster.node(b).pause();
    for topic in ["unclean", "clean"] {
        cluster.wait_out_of_every_isr(topic, b);
    }
    assert_eq!(cluster.broker_state(b).as_deref(), Some("active"));
    cluster.node(a).kill();
    wait_until(
        "the unclean topic led by the replica outside its ISR",
        Duration::from_secs(60),
        || {
            cluster
                .partition_state("unclean", 0)
                .is_some_and(|(leader, _, isr)| leader == b && isr == vec![b])
        },
    );
    wait_until(&format!("node {a} fenced"), Duration::from_secs(60), || {
        cluster.broker_state(a).as_deref() == Some("fenced")
    });
    cluster.node(b).resume();
    rt.block_on(produce_values(
        &client,
        "unclean",
        0,
        Acks::All,
        &values("after", 5),
    ));
    // No broker came back, so nothing elects the clean topic's leader.
    assert_eq!(cluster.leader("clean", 0), -1);
    rt.block_on(
        admin.alter_topic_configs("clean", &[("unclean.leader.election.enable", Some("true"))]),
    )
    .expect("allow unclean elections");
    wait_until(
        "the clean topic led by its live replica once allowed",
        Duration::from_secs(60),
        || cluster.leader("clean", 0) == b,
    );
    rt.block_on(produce_values(
        &client,
        "clean",
        0,
        Acks::All,
        &values("after", 5),
    ));
}
