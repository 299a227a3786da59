//! Each command's happy path and refusals, driven through `apply` the way the controller
//! drives it, and a property test over random command sequences.

use proptest::prelude::*;

use super::*;

/// A cluster driven through [`MetadataImage::apply`]: each command at the next log index;
/// after each, the invariants hold and a refused command changed nothing.
struct Cluster {
    image: MetadataImage,
    index: u64,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            image: MetadataImage::default(),
            index: 0,
        }
    }

    /// Brokers `ids`, registered (incarnation `run-<id>`) and unfenced, one after the other.
    fn with_brokers(ids: &[i32]) -> Cluster {
        let mut cluster = Cluster::new();
        for &id in ids {
            let epoch = cluster.register(id, &format!("run-{id}"));
            assert_eq!(epoch, CommandResult::BrokerEpoch(cluster.index as i64));
            assert_eq!(cluster.unfence(id), CommandResult::Done);
        }
        cluster
    }

    fn apply(&mut self, command: MetadataCommand) -> CommandResult {
        self.index += 1;
        let before = self.image.clone();
        let result = self.image.apply(self.index, &command);
        assert_eq!(self.image.check_invariants(), Ok(()), "after {command:?}");
        if let CommandResult::Refused { .. } = result {
            assert_eq!(
                self.image, before,
                "{command:?} was refused but changed the image"
            );
        }
        result
    }

    fn register(&mut self, id: i32, incarnation_id: &str) -> CommandResult {
        self.apply(MetadataCommand::RegisterBroker {
            id: BrokerId(id),
            incarnation_id: incarnation_id.into(),
            listeners: vec![listener(id)],
            rack: None,
        })
    }

    fn epoch(&self, id: i32) -> i64 {
        self.image.brokers[&BrokerId(id)].epoch
    }

    fn broker(&self, id: i32) -> &BrokerMeta {
        &self.image.brokers[&BrokerId(id)]
    }

    fn fence(&mut self, id: i32) -> CommandResult {
        let epoch = self.epoch(id);
        self.apply(MetadataCommand::FenceBroker {
            id: BrokerId(id),
            epoch,
        })
    }

    fn unfence(&mut self, id: i32) -> CommandResult {
        let epoch = self.epoch(id);
        self.apply(MetadataCommand::UnfenceBroker {
            id: BrokerId(id),
            epoch,
        })
    }

    fn report_damage(&mut self, id: i32, partitions: &[(&str, i32)]) -> CommandResult {
        let epoch = self.epoch(id);
        self.apply(MetadataCommand::ReportDamage {
            id: BrokerId(id),
            epoch,
            partitions: partitions
                .iter()
                .map(|(topic, p)| (topic.to_string(), PartitionId(*p)))
                .collect(),
        })
    }

    fn elect_longest(&mut self, topic: &str, p: i32, leader: i32) -> CommandResult {
        let partition_epoch = self.partition(topic, p).partition_epoch;
        self.apply(MetadataCommand::ElectLongestLog {
            topic: topic.into(),
            partition: PartitionId(p),
            partition_epoch,
            leader: BrokerId(leader),
        })
    }

    fn shutdown(&mut self, id: i32) -> CommandResult {
        let epoch = self.epoch(id);
        self.apply(MetadataCommand::ControlledShutdown {
            id: BrokerId(id),
            epoch,
        })
    }

    fn create(&mut self, name: &str, partitions: u32, replication_factor: u16) -> CommandResult {
        self.create_with(name, partitions, replication_factor, &[])
    }

    fn create_with(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(&str, &str)],
    ) -> CommandResult {
        self.apply(MetadataCommand::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            assignment: None,
        })
    }

    /// An AlterPartition of `topic`-`p` from its current leader, based on its current epochs.
    fn alter_request(&self, topic: &str, p: i32, new_isr: &[i32]) -> MetadataCommand {
        let partition = self.partition(topic, p);
        MetadataCommand::AlterPartition {
            broker_id: partition.leader,
            broker_epoch: self.epoch(partition.leader.0),
            topic: topic.into(),
            partition: PartitionId(p),
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            new_isr: new_isr.iter().copied().map(BrokerId).collect(),
        }
    }

    fn partition(&self, topic: &str, p: i32) -> &PartitionMeta {
        self.image
            .partition(topic, PartitionId(p))
            .unwrap_or_else(|| panic!("no partition {topic}-{p}"))
    }

    /// Checks every partition of `topic` against one line each (see [`describe`]).
    fn check(&self, topic: &str, expected: &[&str]) {
        let actual: Vec<String> = self.image.topics[topic]
            .partitions
            .iter()
            .map(describe)
            .collect();
        assert_eq!(actual, expected, "topic {topic}");
    }
}

fn listener(id: i32) -> ListenerMeta {
    ListenerMeta {
        name: NATIVE_LISTENER.into(),
        host: format!("broker-{id}"),
        port: 9092,
    }
}

fn ids(ids: &[BrokerId]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    ids.join(",")
}

/// `leader=2 le=1 pe=1 replicas=2,3,1 isr=2,3` (then ` awaiting-log-ends` if so).
fn describe(partition: &PartitionMeta) -> String {
    format!(
        "leader={} le={} pe={} replicas={} isr={}{}",
        partition.leader,
        partition.leader_epoch,
        partition.partition_epoch,
        ids(&partition.replicas),
        ids(&partition.isr),
        if partition.awaiting_log_ends {
            " awaiting-log-ends"
        } else {
            ""
        }
    )
}

#[track_caller]
fn check_refused(result: CommandResult, code: ErrorCode, message_part: &str) {
    match result {
        CommandResult::Refused {
            code: actual,
            message,
        } => {
            assert_eq!(ErrorCode::from_i16(actual), code, "{message}");
            assert!(
                message.contains(message_part),
                "{message:?} does not say {message_part:?}"
            );
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

#[test]
fn bootstrap_sets_the_cluster_id_once() {
    let mut c = Cluster::new();
    let bootstrap = |id: &str| MetadataCommand::Bootstrap {
        cluster_id: id.into(),
    };
    assert_eq!(c.apply(bootstrap("first")), CommandResult::Done);
    assert_eq!(c.apply(bootstrap("second")), CommandResult::Done);
    assert_eq!(c.image.cluster_id, "first");
}

#[test]
fn registration_starts_fenced_with_the_index_as_epoch_and_retries_are_idempotent() {
    let mut c = Cluster::new();
    c.index = 41;
    assert_eq!(c.register(7, "run-a"), CommandResult::BrokerEpoch(42));
    let registered = c.broker(7).clone();
    assert_eq!(registered.epoch, 42);
    assert!(registered.fenced && !registered.shutting_down);
    assert_eq!(registered.listeners, vec![listener(7)]);

    // The same incarnation again is a retry: the same epoch, nothing changes.
    assert_eq!(c.register(7, "run-a"), CommandResult::BrokerEpoch(42));
    assert_eq!(c.broker(7), &registered);

    check_refused(
        c.register(-1, "run-x"),
        ErrorCode::InvalidRequest,
        "--node-id",
    );
}

#[test]
fn a_new_incarnation_fences_the_old_one_first() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 3, 3);
    c.check(
        "t",
        &[
            "leader=2 le=0 pe=0 replicas=2,3,1 isr=2,3,1",
            "leader=3 le=0 pe=0 replicas=3,1,2 isr=3,1,2",
            "leader=1 le=0 pe=0 replicas=1,2,3 isr=1,2,3",
        ],
    );
    let old_epoch = c.epoch(2);
    assert_eq!(c.register(2, "run-2-again"), CommandResult::BrokerEpoch(8));
    c.check(
        "t",
        &[
            "leader=3 le=1 pe=1 replicas=2,3,1 isr=3,1",
            "leader=3 le=0 pe=1 replicas=3,1,2 isr=3,1",
            "leader=1 le=0 pe=1 replicas=1,2,3 isr=1,3",
        ],
    );
    let broker = c.broker(2);
    assert_eq!((broker.epoch, broker.fenced), (8, true));
    assert_eq!(broker.incarnation_id, "run-2-again");

    // The old run's requests are now stale.
    let stale = c.apply(MetadataCommand::FenceBroker {
        id: BrokerId(2),
        epoch: old_epoch,
    });
    check_refused(stale, ErrorCode::StaleBrokerEpoch, "older run");
}

#[test]
fn a_new_incarnation_of_a_fenced_broker_changes_no_partition() {
    let mut c = Cluster::with_brokers(&[1, 2]);
    c.create("t", 1, 2);
    c.fence(1);
    let partitions = c.image.topics["t"].partitions.clone();
    assert_eq!(c.register(1, "run-1-again"), CommandResult::BrokerEpoch(7));
    assert_eq!(c.image.topics["t"].partitions, partitions);
}

#[test]
fn fencing_a_leader_elects_the_next_isr_member() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 3, 3);
    assert_eq!(c.fence(1), CommandResult::Done);
    c.check(
        "t",
        &[
            "leader=2 le=0 pe=1 replicas=2,3,1 isr=2,3",
            "leader=3 le=0 pe=1 replicas=3,1,2 isr=3,2",
            "leader=2 le=1 pe=1 replicas=1,2,3 isr=2,3",
        ],
    );
    assert_eq!(c.fence(2), CommandResult::Done);
    c.check(
        "t",
        &[
            "leader=3 le=1 pe=2 replicas=2,3,1 isr=3",
            "leader=3 le=0 pe=2 replicas=3,1,2 isr=3",
            "leader=3 le=2 pe=2 replicas=1,2,3 isr=3",
        ],
    );
    assert!(c.broker(1).fenced && c.broker(2).fenced && !c.broker(3).fenced);
}

#[test]
fn fencing_the_last_isr_member_takes_the_partition_offline_until_it_returns() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 3, 3);
    c.fence(1);
    c.fence(2);
    c.fence(3);
    c.check(
        "t",
        &[
            "leader=-1 le=2 pe=3 replicas=2,3,1 isr=3",
            "leader=-1 le=1 pe=3 replicas=3,1,2 isr=3",
            "leader=-1 le=3 pe=3 replicas=1,2,3 isr=3",
        ],
    );
    // Broker 1 is not in the ISR: leading would lose what only 3 holds.
    c.unfence(1);
    c.check(
        "t",
        &[
            "leader=-1 le=2 pe=3 replicas=2,3,1 isr=3",
            "leader=-1 le=1 pe=3 replicas=3,1,2 isr=3",
            "leader=-1 le=3 pe=3 replicas=1,2,3 isr=3",
        ],
    );
    c.unfence(3);
    c.check(
        "t",
        &[
            "leader=3 le=3 pe=4 replicas=2,3,1 isr=3",
            "leader=3 le=2 pe=4 replicas=3,1,2 isr=3",
            "leader=3 le=4 pe=4 replicas=1,2,3 isr=3",
        ],
    );
}

#[test]
fn a_damaged_last_isr_member_waits_for_a_longest_log_election() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 1, 3);
    let leader = c.partition("t", 0).leader.0;
    let others: Vec<i32> = (1..=3).filter(|b| *b != leader).collect();
    let shrink = c.alter_request("t", 0, &[leader]);
    assert!(matches!(c.apply(shrink), CommandResult::Partition(_)));
    // The last member dies, and comes back with the tail of its log cut off.
    c.fence(leader);
    c.register(leader, "run-again");
    assert_eq!(
        c.report_damage(leader, &[("t", 0), ("gone", 0)]),
        CommandResult::Done
    );
    let p = c.partition("t", 0).clone();
    assert!(
        p.awaiting_log_ends && p.leader == BrokerId::NONE,
        "{}",
        describe(&p)
    );
    assert_eq!(p.isr, vec![BrokerId(leader)]);
    // Unfenced, it does not lead on the strength of its ISR membership.
    c.unfence(leader);
    assert_eq!(c.partition("t", 0), &p);
    // An election under an older partition epoch, or of a fenced or foreign broker, is void.
    let stale = MetadataCommand::ElectLongestLog {
        topic: "t".into(),
        partition: PartitionId(0),
        partition_epoch: p.partition_epoch - 1,
        leader: BrokerId(others[0]),
    };
    check_refused(c.apply(stale), ErrorCode::FencedLeaderEpoch, "void");
    c.fence(others[1]);
    check_refused(
        c.elect_longest("t", 0, others[1]),
        ErrorCode::IneligibleReplica,
        "not an active replica",
    );
    check_refused(
        c.elect_longest("t", 0, 7),
        ErrorCode::IneligibleReplica,
        "not an active replica",
    );
    // The replica with the longest log leads alone; the others rejoin by catching up.
    assert_eq!(c.elect_longest("t", 0, others[0]), CommandResult::Done);
    let p = c.partition("t", 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.awaiting_log_ends),
        (BrokerId(others[0]), vec![BrokerId(others[0])], false)
    );
    // Once elected, a late election is void.
    check_refused(
        c.elect_longest("t", 0, leader),
        ErrorCode::FencedLeaderEpoch,
        "void",
    );
}

#[test]
fn a_damaged_replica_with_other_isr_members_just_leaves_the_isr() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 1, 3);
    let leader = c.partition("t", 0).leader.0;
    // Reported late (the broker is unfenced): it leaves the ISR and its leadership.
    assert_eq!(c.report_damage(leader, &[("t", 0)]), CommandResult::Done);
    let p = c.partition("t", 0);
    assert!(!p.isr.contains(&BrokerId(leader)) && p.isr.len() == 2);
    assert!(p.leader != BrokerId(leader) && p.leader != BrokerId::NONE);
    assert!(!p.awaiting_log_ends);
    // Reported again (not in the ISR now): nothing changes.
    let before = c.image.clone();
    assert_eq!(c.report_damage(leader, &[("t", 0)]), CommandResult::Done);
    assert_eq!(c.image, before);
    check_refused(
        c.apply(MetadataCommand::ReportDamage {
            id: BrokerId(leader),
            epoch: 0,
            partitions: vec![],
        }),
        ErrorCode::StaleBrokerEpoch,
        "older run",
    );
}

#[test]
fn fence_refuses_stale_and_unknown_brokers_and_is_idempotent() {
    let mut c = Cluster::with_brokers(&[1, 2]);
    c.create("t", 2, 2);
    let fence = |id: i32, epoch: i64| MetadataCommand::FenceBroker {
        id: BrokerId(id),
        epoch,
    };
    let stale = c.epoch(1) - 1;
    check_refused(
        c.apply(fence(1, stale)),
        ErrorCode::StaleBrokerEpoch,
        "epoch",
    );
    check_refused(
        c.apply(fence(9, 1)),
        ErrorCode::BrokerIdNotRegistered,
        "broker 9 is not registered",
    );
    assert_eq!(c.fence(1), CommandResult::Done);
    let image = c.image.clone();
    assert_eq!(c.fence(1), CommandResult::Done);
    assert_eq!(c.image, image);
}

#[test]
fn unfence_refuses_stale_and_unknown_brokers() {
    let mut c = Cluster::new();
    c.register(1, "run-1");
    let unfence = |id: i32, epoch: i64| MetadataCommand::UnfenceBroker {
        id: BrokerId(id),
        epoch,
    };
    check_refused(
        c.apply(unfence(1, 0)),
        ErrorCode::StaleBrokerEpoch,
        "epoch 1",
    );
    check_refused(
        c.apply(unfence(2, 1)),
        ErrorCode::BrokerIdNotRegistered,
        "register",
    );
    assert_eq!(c.apply(unfence(1, 1)), CommandResult::Done);
    assert!(!c.broker(1).fenced);
    assert_eq!(c.image.active_brokers(), vec![BrokerId(1)]);
}

#[test]
fn unclean_election_only_where_the_topic_allows_it() {
    let mut c = Cluster::with_brokers(&[1, 2]);
    c.create("clean", 1, 2);
    c.create_with("unclean", 1, 2, &[(UNCLEAN_LEADER_ELECTION_ENABLE, "true")]);
    c.check("clean", &["leader=2 le=0 pe=0 replicas=2,1 isr=2,1"]);
    c.check("unclean", &["leader=1 le=0 pe=0 replicas=1,2 isr=1,2"]);
    c.fence(1);
    c.fence(2);
    c.check("clean", &["leader=-1 le=1 pe=2 replicas=2,1 isr=2"]);
    c.check("unclean", &["leader=-1 le=2 pe=2 replicas=1,2 isr=2"]);

    // Broker 1 returns while the only ISR member, 2, is still down.
    c.unfence(1);
    c.check("clean", &["leader=-1 le=1 pe=2 replicas=2,1 isr=2"]);
    c.check("unclean", &["leader=1 le=3 pe=3 replicas=1,2 isr=1"]);

    c.unfence(2);
    c.check("clean", &["leader=2 le=2 pe=3 replicas=2,1 isr=2"]);
    c.check("unclean", &["leader=1 le=3 pe=3 replicas=1,2 isr=1"]);
}

#[test]
fn an_unclean_topic_elects_a_live_replica_outside_the_isr_when_its_last_member_fails() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create_with("unclean", 1, 3, &[(UNCLEAN_LEADER_ELECTION_ENABLE, "true")]);
    c.create("clean", 1, 3);
    for topic in ["unclean", "clean"] {
        let leader = c.partition(topic, 0).leader.0;
        // The followers fell behind: the leader is the ISR.
        let shrink = c.alter_request(topic, 0, &[leader]);
        assert!(matches!(c.apply(shrink), CommandResult::Partition(_)));
    }
    let (unclean_leader, clean_leader) = (
        c.partition("unclean", 0).leader,
        c.partition("clean", 0).leader,
    );
    c.fence(unclean_leader.0);
    // The first active replica in assignment order leads, alone in the ISR.
    let unclean = c.partition("unclean", 0);
    let expected = *unclean
        .replicas
        .iter()
        .find(|b| **b != unclean_leader)
        .unwrap();
    assert_eq!(unclean.leader, expected);
    assert_eq!(unclean.isr, vec![expected]);
    if clean_leader != unclean_leader {
        c.fence(clean_leader.0);
    }
    // Where the topic does not allow it, the partition waits for its ISR.
    let clean = c.partition("clean", 0);
    assert_eq!(
        (clean.leader, clean.isr.clone()),
        (BrokerId::NONE, vec![clean_leader])
    );

    // Allowing it later elects at once, not when a replica next returns.
    let mut configs = BTreeMap::new();
    configs.insert(
        UNCLEAN_LEADER_ELECTION_ENABLE.to_string(),
        "true".to_string(),
    );
    let allow = MetadataCommand::AlterTopicConfigs {
        name: "clean".into(),
        configs,
    };
    assert_eq!(c.apply(allow), CommandResult::Done);
    let clean = c.partition("clean", 0);
    let expected = *clean
        .replicas
        .iter()
        .find(|b| **b != clean_leader && **b != unclean_leader)
        .unwrap();
    assert_eq!(
        (clean.leader, clean.isr.clone()),
        (expected, vec![expected])
    );
}

#[test]
fn controlled_shutdown_moves_leaderships_away_and_fences() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 3, 3);
    assert_eq!(c.shutdown(1), CommandResult::Done);
    c.check(
        "t",
        &[
            "leader=2 le=0 pe=1 replicas=2,3,1 isr=2,3",
            "leader=3 le=0 pe=1 replicas=3,1,2 isr=3,2",
            "leader=2 le=1 pe=1 replicas=1,2,3 isr=2,3",
        ],
    );
    assert!(c.broker(1).fenced && c.broker(1).shutting_down);
    assert_eq!(c.image.active_brokers(), vec![BrokerId(2), BrokerId(3)]);

    let image = c.image.clone();
    assert_eq!(c.shutdown(1), CommandResult::Done);
    assert_eq!(c.image, image);

    let stale = MetadataCommand::ControlledShutdown {
        id: BrokerId(2),
        epoch: 1,
    };
    check_refused(c.apply(stale), ErrorCode::StaleBrokerEpoch, "broker 2");

    c.unfence(1);
    assert!(!c.broker(1).fenced && !c.broker(1).shutting_down);
}

#[test]
fn a_shutdown_broker_is_not_elected() {
    let mut c = Cluster::with_brokers(&[1, 2]);
    c.create("t", 1, 2);
    c.check("t", &["leader=2 le=0 pe=0 replicas=2,1 isr=2,1"]);
    c.shutdown(1);
    c.shutdown(2);
    c.check("t", &["leader=-1 le=1 pe=2 replicas=2,1 isr=2"]);
}

#[test]
fn placement_spreads_leaders_and_replicas() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    assert_eq!(c.create("t", 6, 3), CommandResult::Done);
    let topic = &c.image.topics["t"];
    assert_eq!((topic.id, topic.replication_factor), (7, 3));
    let mut led = BTreeMap::new();
    for (p, partition) in topic.partitions.iter().enumerate() {
        assert_eq!(partition.index, PartitionId(p as i32));
        assert_eq!(partition.leader, partition.replicas[0]);
        assert_eq!(partition.isr, partition.replicas);
        let mut distinct = partition.replicas.clone();
        distinct.sort();
        assert_eq!(distinct, vec![BrokerId(1), BrokerId(2), BrokerId(3)]);
        *led.entry(partition.leader).or_insert(0) += 1;
    }
    assert_eq!(led.values().collect::<Vec<_>>(), vec![&2, &2, &2]);

    // The next topics start on the next brokers, so single-partition topics spread too.
    c.create("u", 1, 2);
    c.create("v", 1, 2);
    c.check("u", &["leader=3 le=0 pe=0 replicas=3,1 isr=3,1"]);
    c.check("v", &["leader=1 le=0 pe=0 replicas=1,2 isr=1,2"]);
}

#[test]
fn placement_uses_only_active_brokers() {
    let mut c = Cluster::with_brokers(&[1, 2, 3, 4]);
    c.fence(2);
    c.shutdown(4);
    c.register(5, "run-5");
    c.index = 9;
    assert_eq!(c.create("t", 3, 2), CommandResult::Done);
    c.check(
        "t",
        &[
            "leader=1 le=0 pe=0 replicas=1,3 isr=1,3",
            "leader=3 le=0 pe=0 replicas=3,1 isr=3,1",
            "leader=1 le=0 pe=0 replicas=1,3 isr=1,3",
        ],
    );
}

#[test]
fn create_topic_refusals() {
    let mut c = Cluster::new();
    check_refused(
        c.create("t", 1, 1),
        ErrorCode::InvalidReplicationFactor,
        "none is available",
    );
    c = Cluster::with_brokers(&[1, 2, 3]);
    c.fence(3);
    check_refused(
        c.create("t", 1, 3),
        ErrorCode::InvalidReplicationFactor,
        "replication factor 3 needs 3 brokers, but only brokers 1, 2 are available; add \
         brokers or use a smaller --replication-factor",
    );
    c.fence(2);
    check_refused(
        c.create("t", 1, 2),
        ErrorCode::InvalidReplicationFactor,
        "needs 2 brokers, but only broker 1 is available;",
    );
    check_refused(
        c.create("t", 1, 0),
        ErrorCode::InvalidReplicationFactor,
        "0",
    );
    check_refused(c.create("t", 0, 1), ErrorCode::InvalidPartitions, "not 0");
    check_refused(
        c.create("t", 1025, 1),
        ErrorCode::InvalidPartitions,
        "1 to 1024",
    );
    assert_eq!(c.create("t", 1, 1), CommandResult::Done);
    check_refused(
        c.create("t", 1, 1),
        ErrorCode::TopicAlreadyExists,
        "topic \"t\" already exists",
    );
}

#[test]
fn added_partitions_continue_the_placement_and_keep_the_old_ones() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 2, 2);
    c.fence(1);
    assert_eq!(c.image.topics["t"].id, 7);
    let before = c.image.topics["t"].partitions.clone();
    let add = |n: u32| MetadataCommand::CreatePartitions {
        name: "t".into(),
        partitions: n,
    };
    assert_eq!(c.apply(add(4)), CommandResult::Done);
    let topic = &c.image.topics["t"];
    assert_eq!(topic.partitions[..2], before[..]);
    // Brokers 2 and 3 are active; the placement goes on as for a topic of 4 created now
    // (at the topic's index 7, so partition 0 would start on the second of them).
    c.check(
        "t",
        &[
            &describe(&before[0]),
            &describe(&before[1]),
            "leader=3 le=0 pe=0 replicas=3,2 isr=3,2",
            "leader=2 le=0 pe=0 replicas=2,3 isr=2,3",
        ],
    );

    check_refused(
        c.apply(add(4)),
        ErrorCode::InvalidPartitions,
        "topic \"t\" already has 4 partitions",
    );
    check_refused(
        c.apply(add(3)),
        ErrorCode::InvalidPartitions,
        "has 4 partitions and cannot have fewer; ask for more than 4",
    );
    check_refused(
        c.apply(add(1025)),
        ErrorCode::InvalidPartitions,
        "at most 1024",
    );
    check_refused(
        c.apply(MetadataCommand::CreatePartitions {
            name: "u".into(),
            partitions: 2,
        }),
        ErrorCode::UnknownTopicOrPartition,
        "topic \"u\" does not exist",
    );
    c.fence(2);
    check_refused(
        c.apply(add(5)),
        ErrorCode::InvalidReplicationFactor,
        "only broker 3 is available",
    );
    assert_eq!(c.image.topics["t"].partitions.len(), 4);
}

#[test]
fn preferred_leaders_lead_again_once_back_in_the_isr() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 3, 3);
    c.fence(1);
    // Partition 2 (preferred 1) is led by 2 now; broker 1 is out of every ISR.
    let elect = |partitions: &[i32]| MetadataCommand::ElectPreferredLeaders {
        partitions: partitions
            .iter()
            .map(|&p| ("t".to_string(), PartitionId(p)))
            .collect(),
    };
    let why = |c: &Cluster, p: i32| {
        c.image
            .preferred_election("t", PartitionId(p))
            .map_err(|e| e.0)
    };
    assert_eq!(why(&c, 0), Err(ErrorCode::ElectionNotNeeded));
    assert_eq!(why(&c, 2), Err(ErrorCode::PreferredLeaderNotAvailable));
    assert_eq!(why(&c, 9), Err(ErrorCode::UnknownTopicOrPartition));
    assert_eq!(c.apply(elect(&[2])), CommandResult::Done);
    c.check(
        "t",
        &[
            "leader=2 le=0 pe=1 replicas=2,3,1 isr=2,3",
            "leader=3 le=0 pe=1 replicas=3,1,2 isr=3,2",
            "leader=2 le=1 pe=1 replicas=1,2,3 isr=2,3",
        ],
    );
    // Back, but not in sync yet: still not.
    c.unfence(1);
    assert_eq!(why(&c, 2), Err(ErrorCode::PreferredLeaderNotAvailable));
    assert!(c.image.imbalanced_partitions(10).is_empty());
    // In the ISR again: partition 2 may move; broker 1 leads 0 of its 1 = 100 % > 10 %.
    let rejoin = c.alter_request("t", 2, &[2, 3, 1]);
    c.apply(rejoin);
    assert_eq!(why(&c, 2), Ok(()));
    assert_eq!(
        c.image.imbalanced_partitions(10),
        [("t".to_string(), PartitionId(2))]
    );
    assert!(
        c.image.imbalanced_partitions(100).is_empty(),
        "at most 100 % imbalance"
    );
    assert_eq!(c.apply(elect(&[0, 2, 7])), CommandResult::Done);
    c.check(
        "t",
        &[
            "leader=2 le=0 pe=1 replicas=2,3,1 isr=2,3",
            "leader=3 le=0 pe=1 replicas=3,1,2 isr=3,2",
            "leader=1 le=2 pe=3 replicas=1,2,3 isr=2,3,1",
        ],
    );
    assert!(c.image.imbalanced_partitions(10).is_empty());
}

#[test]
fn delete_topic() {
    let mut c = Cluster::with_brokers(&[1]);
    c.create("t", 2, 1);
    let delete = |name: &str| MetadataCommand::DeleteTopic { name: name.into() };
    assert_eq!(c.apply(delete("t")), CommandResult::Done);
    assert!(c.image.topics.is_empty());
    check_refused(
        c.apply(delete("t")),
        ErrorCode::UnknownTopicOrPartition,
        "topic \"t\" does not exist",
    );
    // A topic created again under the same name is a different topic.
    c.create("t", 1, 1);
    assert_eq!(c.image.topics["t"].id, c.index);
}

#[test]
fn alter_partition_sets_the_isr_in_the_given_order() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 1, 3);
    c.check("t", &["leader=2 le=0 pe=0 replicas=2,3,1 isr=2,3,1"]);
    let steps: &[(&[i32], &str)] = &[
        (&[2, 3], "leader=2 le=0 pe=1 replicas=2,3,1 isr=2,3"),
        (&[2], "leader=2 le=0 pe=2 replicas=2,3,1 isr=2"),
        (&[1, 2], "leader=2 le=0 pe=3 replicas=2,3,1 isr=1,2"),
        (&[1, 2, 3], "leader=2 le=0 pe=4 replicas=2,3,1 isr=1,2,3"),
        // The same ISR again changes nothing, so the epoch stays.
        (&[1, 2, 3], "leader=2 le=0 pe=4 replicas=2,3,1 isr=1,2,3"),
    ];
    for (new_isr, expected) in steps {
        let request = c.alter_request("t", 0, new_isr);
        match c.apply(request) {
            CommandResult::Partition(partition) => assert_eq!(describe(&partition), *expected),
            other => panic!("{new_isr:?}: {other:?}"),
        }
        c.check("t", &[expected]);
    }
}

#[test]
fn alter_partition_is_a_compare_and_set_on_the_partition_epoch() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("t", 1, 3);
    let shrink = c.alter_request("t", 0, &[2, 3]);
    let other = c.alter_request("t", 0, &[2, 1]);
    assert!(matches!(c.apply(shrink), CommandResult::Partition(_)));
    check_refused(
        c.apply(other),
        ErrorCode::InvalidUpdateVersion,
        "partition epoch 0 of t-0 is not the current 1",
    );
}

/// An AlterPartition's fields as plain numbers, to be broken and fixed one by one.
struct AlterFields {
    broker_id: i32,
    broker_epoch: i64,
    topic: &'static str,
    partition: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: Vec<i32>,
}

impl AlterFields {
    fn command(&self) -> MetadataCommand {
        MetadataCommand::AlterPartition {
            broker_id: BrokerId(self.broker_id),
            broker_epoch: self.broker_epoch,
            topic: self.topic.into(),
            partition: PartitionId(self.partition),
            leader_epoch: LeaderEpoch(self.leader_epoch),
            partition_epoch: self.partition_epoch,
            new_isr: self.new_isr.iter().copied().map(BrokerId).collect(),
        }
    }
}

#[test]
fn alter_partition_refusals_in_order() {
    let mut c = Cluster::with_brokers(&[1, 2, 3, 4]);
    c.index = 11;
    c.create("t", 1, 3);
    c.check("t", &["leader=1 le=0 pe=0 replicas=1,2,3 isr=1,2,3"]);
    let shrink = c.alter_request("t", 0, &[1, 2]);
    c.apply(shrink);
    c.fence(3);
    c.check("t", &["leader=1 le=0 pe=1 replicas=1,2,3 isr=1,2"]);
    assert_eq!((c.epoch(1), c.epoch(2)), (1, 3));

    // A request with everything wrong, fixed one field at a time: each fix reveals the next
    // check, in Kafka's order.
    let mut request = AlterFields {
        broker_id: 9,
        broker_epoch: 0,
        topic: "x",
        partition: 7,
        leader_epoch: -1,
        partition_epoch: 0,
        new_isr: vec![],
    };
    type Fix = fn(&mut AlterFields);
    let steps: &[(Fix, ErrorCode, &str)] = &[
        (
            |_| {},
            ErrorCode::StaleBrokerEpoch,
            "broker 9 is not registered",
        ),
        (
            |r| r.broker_id = 2,
            ErrorCode::StaleBrokerEpoch,
            "older run",
        ),
        (
            |r| r.broker_epoch = 3,
            ErrorCode::UnknownTopicOrPartition,
            "x-7",
        ),
        (|r| r.topic = "t", ErrorCode::UnknownTopicOrPartition, "t-7"),
        (
            |r| r.partition = 0,
            ErrorCode::FencedLeaderEpoch,
            "-1 of t-0",
        ),
        (
            |r| r.leader_epoch = 1,
            ErrorCode::UnknownLeaderEpoch,
            "1 of t-0",
        ),
        (
            |r| r.leader_epoch = 0,
            ErrorCode::NotLeaderOrFollower,
            "the leader is 1",
        ),
        (
            |r| (r.broker_id, r.broker_epoch) = (1, 1),
            ErrorCode::InvalidUpdateVersion,
            "partition epoch 0 of t-0 is not the current 1",
        ),
        (
            |r| r.partition_epoch = 1,
            ErrorCode::InvalidRequest,
            "it is empty",
        ),
        (
            |r| r.new_isr = vec![1, 5],
            ErrorCode::InvalidRequest,
            "5 is not a replica",
        ),
        (
            |r| r.new_isr = vec![1, 2, 1],
            ErrorCode::InvalidRequest,
            "1 appears twice",
        ),
        (
            |r| r.new_isr = vec![2],
            ErrorCode::InvalidRequest,
            "leaves out the leader 1",
        ),
        (
            |r| r.new_isr = vec![2, 1, 3],
            ErrorCode::IneligibleReplica,
            "3 cannot join",
        ),
    ];
    for (fix, code, message) in steps {
        fix(&mut request);
        check_refused(c.apply(request.command()), *code, message);
    }
    request.new_isr = vec![2, 1];
    match c.apply(request.command()) {
        CommandResult::Partition(partition) => {
            assert_eq!(
                describe(&partition),
                "leader=1 le=0 pe=2 replicas=1,2,3 isr=2,1"
            )
        }
        other => panic!("{other:?}"),
    }

    // A broker shutting down cannot join either, even once it is caught up.
    c.unfence(3);
    c.shutdown(3);
    let grow = c.alter_request("t", 0, &[2, 1, 3]);
    check_refused(c.apply(grow), ErrorCode::IneligibleReplica, "shutting down");
}

#[test]
fn producer_id_blocks_follow_each_other() {
    let mut c = Cluster::with_brokers(&[1]);
    let allocate = |broker_epoch: i64| MetadataCommand::AllocateProducerIds {
        broker_id: BrokerId(1),
        broker_epoch,
    };
    let block = |first: i64| CommandResult::ProducerIds {
        first,
        len: PRODUCER_ID_BLOCK,
    };
    assert_eq!(c.apply(allocate(1)), block(0));
    assert_eq!(c.apply(allocate(1)), block(1000));
    assert_eq!(c.image.next_producer_id, 2000);
    check_refused(c.apply(allocate(5)), ErrorCode::StaleBrokerEpoch, "epoch 5");
    let unknown = MetadataCommand::AllocateProducerIds {
        broker_id: BrokerId(2),
        broker_epoch: 1,
    };
    check_refused(
        c.apply(unknown),
        ErrorCode::BrokerIdNotRegistered,
        "broker 2",
    );
    c.image.next_producer_id = i64::MAX - 10;
    check_refused(
        c.apply(allocate(1)),
        ErrorCode::UnknownServerError,
        "every producer id",
    );
}

#[test]
fn queries() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.create("a", 2, 2);
    c.create("b", 1, 1);
    c.fence(3);
    assert_eq!(c.image.active_brokers(), vec![BrokerId(1), BrokerId(2)]);
    assert_eq!(
        c.image.broker_address(BrokerId(2), NATIVE_LISTENER),
        Some(&listener(2))
    );
    assert_eq!(c.image.broker_address(BrokerId(2), "kafka"), None);
    assert_eq!(c.image.broker_address(BrokerId(4), NATIVE_LISTENER), None);
    assert_eq!(
        c.image.partition("a", PartitionId(1)).map(|p| p.index),
        Some(PartitionId(1))
    );
    assert_eq!(c.image.partition("a", PartitionId(2)), None);
    assert_eq!(c.image.partition("a", PartitionId(-1)), None);
    assert_eq!(c.image.partition("c", PartitionId(0)), None);
    c.check(
        "a",
        &[
            "leader=2 le=0 pe=1 replicas=2,3 isr=2",
            "leader=1 le=1 pe=1 replicas=3,1 isr=1",
        ],
    );
    c.check("b", &["leader=-1 le=1 pe=1 replicas=3 isr=3"]);
    let on = |id: i32| -> Vec<String> {
        c.image
            .partitions_on(BrokerId(id))
            .map(|(name, _, partition)| format!("{name}-{}", partition.index))
            .collect()
    };
    assert_eq!(on(1), vec!["a-1"]);
    assert_eq!(on(3), vec!["a-0", "a-1", "b-0"]);
}

#[test]
fn replicas_placed_by_the_user_go_where_they_say_on_active_brokers_only() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    c.fence(3);
    let create = |placed: Vec<Vec<i32>>, rf: u16| MetadataCommand::CreateTopic {
        name: "t".into(),
        partitions: placed.len() as u32,
        replication_factor: rf,
        configs: BTreeMap::new(),
        assignment: Some(
            placed
                .into_iter()
                .map(|p| p.into_iter().map(BrokerId).collect())
                .collect(),
        ),
    };
    check_refused(
        c.apply(create(vec![vec![1, 3]], 2)),
        ErrorCode::InvalidReplicaAssignment,
        "broker 3, which is not active",
    );
    check_refused(
        c.apply(create(vec![vec![1, 1]], 2)),
        ErrorCode::InvalidReplicaAssignment,
        "same number (2) of distinct brokers",
    );
    check_refused(
        c.apply(create(vec![vec![1, 2], vec![2]], 2)),
        ErrorCode::InvalidReplicaAssignment,
        "same number (2) of distinct brokers",
    );
    assert_eq!(
        c.apply(create(vec![vec![2, 1], vec![2, 1]], 2)),
        CommandResult::Done
    );
    c.check(
        "t",
        &[
            "leader=2 le=0 pe=0 replicas=2,1 isr=2,1",
            "leader=2 le=0 pe=0 replicas=2,1 isr=2,1",
        ],
    );
    // A command written before placements existed reads as the controller's placement.
    let old = r#"{"CreateTopic":{"name":"u","partitions":1,"replication_factor":1,"configs":{}}}"#;
    let command: MetadataCommand = serde_json::from_str(old).unwrap();
    assert!(matches!(
        command,
        MetadataCommand::CreateTopic {
            assignment: None,
            ..
        }
    ));
}

#[test]
fn the_image_round_trips_through_json() {
    let mut c = Cluster::with_brokers(&[1, 2]);
    c.create_with("t", 2, 2, &[(UNCLEAN_LEADER_ELECTION_ENABLE, "true")]);
    c.fence(1);
    let json = serde_json::to_string(&c.image).unwrap();
    let image: MetadataImage = serde_json::from_str(&json).unwrap();
    assert_eq!(image, c.image);
}

/// One step of a random command sequence. Epochs are taken from the image when the step
/// becomes a command, so most commands are current and some deliberately stale.
#[derive(Clone, Debug)]
enum Op {
    Register {
        broker: i32,
        incarnation: u8,
    },
    Fence {
        broker: i32,
        stale: bool,
    },
    Unfence {
        broker: i32,
        stale: bool,
    },
    Shutdown {
        broker: i32,
        stale: bool,
    },
    Create {
        topic: usize,
        partitions: u32,
        replication_factor: u16,
        unclean: bool,
        /// Partition `p` placed on brokers `(p + j) % 5 + 1` (some never registered).
        placed: bool,
    },
    Delete {
        topic: usize,
    },
    /// A preferred leader election of the picked partitions.
    ElectPreferred {
        picks: Vec<prop::sample::Index>,
    },
    /// The topic's partition count becomes `partitions` (refused unless it grows).
    AddPartitions {
        topic: usize,
        partitions: u32,
    },
    Alter(AlterOp),
    Allocate {
        broker: i32,
        stale: bool,
    },
    /// Damage reported for the picked existing partitions (and a missing one).
    Damage {
        broker: i32,
        stale: bool,
        picks: Vec<prop::sample::Index>,
    },
    /// A longest-log election of `broker` for the picked partition.
    ElectLongest {
        target: prop::sample::Index,
        broker: i32,
        partition_epoch_skew: i32,
    },
    /// The picked partition reassigned to `replicas` (some never registered, some
    /// repeated), or its reassignment cancelled (`None`).
    Reassign {
        target: prop::sample::Index,
        replicas: Option<Vec<i32>>,
    },
}

#[derive(Clone, Debug)]
struct AlterOp {
    /// Which existing partition (in topic/partition order); `None` for a missing one.
    target: Option<prop::sample::Index>,
    /// Sent by this broker instead of the leader.
    other_broker: Option<i32>,
    leader_epoch_skew: i32,
    partition_epoch_skew: i32,
    /// Members picked from the replicas, in this order (repeats possible).
    picks: Vec<prop::sample::Index>,
    dedup: bool,
    with_leader: bool,
    foreign: bool,
}

const TOPICS: [&str; 3] = ["a", "b", "c"];
/// Brokers 1 to 4 register; 5 never does.
const BROKERS: std::ops::RangeInclusive<i32> = 1..=5;

fn skew() -> impl Strategy<Value = i32> {
    prop_oneof![8 => Just(0), 1 => Just(-1), 1 => Just(1)]
}

fn op() -> impl Strategy<Value = Op> {
    let stale = || prop::bool::weighted(0.1);
    let alter = (
        prop::option::weighted(0.95, any::<prop::sample::Index>()),
        prop::option::weighted(0.1, BROKERS),
        skew(),
        skew(),
        prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(target, other_broker, le, pe, picks, dedup, with_leader, foreign)| {
                Op::Alter(AlterOp {
                    target,
                    other_broker,
                    leader_epoch_skew: le,
                    partition_epoch_skew: pe,
                    picks,
                    dedup,
                    with_leader,
                    foreign,
                })
            },
        );
    prop_oneof![
        3 => (1i32..=4, 0u8..3).prop_map(|(broker, incarnation)| Op::Register { broker, incarnation }),
        2 => (BROKERS, stale()).prop_map(|(broker, stale)| Op::Fence { broker, stale }),
        3 => (BROKERS, stale()).prop_map(|(broker, stale)| Op::Unfence { broker, stale }),
        1 => (BROKERS, stale()).prop_map(|(broker, stale)| Op::Shutdown { broker, stale }),
        2 => (
            0..TOPICS.len(),
            prop_oneof![9 => 1u32..4, 1 => Just(0)],
            prop_oneof![8 => 1u16..=3, 1 => Just(0), 1 => Just(5)],
            any::<bool>(),
            prop::bool::weighted(0.3),
        ).prop_map(
            |(topic, partitions, replication_factor, unclean, placed)| Op::Create {
                topic, partitions, replication_factor, unclean, placed,
            }
        ),
        1 => (0..TOPICS.len()).prop_map(|topic| Op::Delete { topic }),
        1 => (0..TOPICS.len(), 0u32..6)
            .prop_map(|(topic, partitions)| Op::AddPartitions { topic, partitions }),
        1 => prop::collection::vec(any::<prop::sample::Index>(), 0..3)
            .prop_map(|picks| Op::ElectPreferred { picks }),
        5 => alter,
        1 => (BROKERS, stale()).prop_map(|(broker, stale)| Op::Allocate { broker, stale }),
        2 => (BROKERS, stale(), prop::collection::vec(any::<prop::sample::Index>(), 0..3))
            .prop_map(|(broker, stale, picks)| Op::Damage { broker, stale, picks }),
        2 => (any::<prop::sample::Index>(), BROKERS, skew()).prop_map(
            |(target, broker, partition_epoch_skew)| Op::ElectLongest {
                target, broker, partition_epoch_skew,
            }
        ),
        3 => (
            any::<prop::sample::Index>(),
            prop::option::weighted(0.8, prop::collection::vec(BROKERS, 0..4)),
        ).prop_map(|(target, replicas)| Op::Reassign { target, replicas }),
    ]
}

/// The broker's current registration epoch, one less if `stale`, 0 if unregistered.
fn epoch_of(image: &MetadataImage, broker: i32, stale: bool) -> i64 {
    image
        .brokers
        .get(&BrokerId(broker))
        .map_or(0, |meta| meta.epoch - i64::from(stale))
}

fn to_command(op: &Op, image: &MetadataImage) -> MetadataCommand {
    let id = BrokerId;
    match op {
        Op::Register {
            broker,
            incarnation,
        } => MetadataCommand::RegisterBroker {
            id: id(*broker),
            incarnation_id: format!("run-{incarnation}"),
            listeners: vec![listener(*broker)],
            rack: None,
        },
        Op::Fence { broker, stale } => MetadataCommand::FenceBroker {
            id: id(*broker),
            epoch: epoch_of(image, *broker, *stale),
        },
        Op::Unfence { broker, stale } => MetadataCommand::UnfenceBroker {
            id: id(*broker),
            epoch: epoch_of(image, *broker, *stale),
        },
        Op::Shutdown { broker, stale } => MetadataCommand::ControlledShutdown {
            id: id(*broker),
            epoch: epoch_of(image, *broker, *stale),
        },
        Op::Create {
            topic,
            partitions,
            replication_factor,
            unclean,
            placed,
        } => MetadataCommand::CreateTopic {
            name: TOPICS[*topic].into(),
            partitions: *partitions,
            replication_factor: *replication_factor,
            configs: [(
                UNCLEAN_LEADER_ELECTION_ENABLE.to_string(),
                unclean.to_string(),
            )]
            .into(),
            assignment: placed.then(|| {
                (0..*partitions as i32)
                    .map(|p| {
                        (0..i32::from(*replication_factor))
                            .map(|j| BrokerId((p + j) % 5 + 1))
                            .collect()
                    })
                    .collect()
            }),
        },
        Op::Delete { topic } => MetadataCommand::DeleteTopic {
            name: TOPICS[*topic].into(),
        },
        Op::AddPartitions { topic, partitions } => MetadataCommand::CreatePartitions {
            name: TOPICS[*topic].into(),
            partitions: *partitions,
        },
        Op::ElectPreferred { picks } => {
            let existing = all_partitions(image);
            MetadataCommand::ElectPreferredLeaders {
                partitions: picks
                    .iter()
                    .filter(|_| !existing.is_empty())
                    .map(|pick| {
                        let (topic, p) = pick.get(&existing);
                        (topic.to_string(), p.index)
                    })
                    .collect(),
            }
        }
        Op::Alter(alter) => alter_command(alter, image),
        Op::Reassign { target, replicas } => {
            let existing = all_partitions(image);
            let (topic, index) = if existing.is_empty() {
                (TOPICS[0].to_string(), PartitionId(0))
            } else {
                let (topic, p) = target.get(&existing);
                (topic.to_string(), p.index)
            };
            MetadataCommand::ReassignPartitions {
                topic,
                partitions: vec![(
                    index,
                    replicas
                        .as_ref()
                        .map(|r| r.iter().copied().map(BrokerId).collect()),
                )],
            }
        }
        Op::Allocate { broker, stale } => MetadataCommand::AllocateProducerIds {
            broker_id: id(*broker),
            broker_epoch: epoch_of(image, *broker, *stale),
        },
        Op::Damage {
            broker,
            stale,
            picks,
        } => {
            let existing = all_partitions(image);
            let mut partitions: Vec<(String, PartitionId)> = picks
                .iter()
                .filter(|_| !existing.is_empty())
                .map(|pick| {
                    let (topic, p) = pick.get(&existing);
                    (topic.to_string(), p.index)
                })
                .collect();
            partitions.push(("missing".into(), PartitionId(0)));
            MetadataCommand::ReportDamage {
                id: id(*broker),
                epoch: epoch_of(image, *broker, *stale),
                partitions,
            }
        }
        Op::ElectLongest {
            target,
            broker,
            partition_epoch_skew,
        } => {
            let existing = all_partitions(image);
            let (topic, partition, partition_epoch) = match existing.is_empty() {
                true => ("a", PartitionId(0), 0),
                false => {
                    let (topic, p) = target.get(&existing);
                    (*topic, p.index, p.partition_epoch)
                }
            };
            MetadataCommand::ElectLongestLog {
                topic: topic.into(),
                partition,
                partition_epoch: partition_epoch + partition_epoch_skew,
                leader: id(*broker),
            }
        }
    }
}

/// Every partition, in topic/partition order, with its topic's name.
fn all_partitions(image: &MetadataImage) -> Vec<(&str, &PartitionMeta)> {
    image
        .topics
        .iter()
        .flat_map(|(name, topic)| topic.partitions.iter().map(move |p| (name.as_str(), p)))
        .collect()
}

fn alter_command(alter: &AlterOp, image: &MetadataImage) -> MetadataCommand {
    let existing = all_partitions(image);
    let target = match &alter.target {
        Some(pick) if !existing.is_empty() => Some(*pick.get(&existing)),
        _ => None,
    };
    let (topic, partition, leader, leader_epoch, partition_epoch, replicas) = match target {
        Some((topic, p)) => (
            topic,
            p.index,
            p.leader,
            p.leader_epoch.0,
            p.partition_epoch,
            p.replicas.clone(),
        ),
        None => ("a", PartitionId(9), BrokerId(1), 0, 0, vec![BrokerId(1)]),
    };
    let broker_id = alter.other_broker.map_or(leader, BrokerId);
    let mut new_isr: Vec<BrokerId> = alter
        .picks
        .iter()
        .map(|pick| *pick.get(&replicas))
        .collect();
    if alter.with_leader {
        new_isr.insert(0, leader);
    }
    if alter.dedup {
        let mut seen = Vec::new();
        new_isr.retain(|id| {
            let new = !seen.contains(id);
            seen.push(*id);
            new
        });
    }
    if alter.foreign {
        new_isr.push(BrokerId(5));
    }
    MetadataCommand::AlterPartition {
        broker_id,
        broker_epoch: epoch_of(image, broker_id.0, false),
        topic: topic.into(),
        partition,
        leader_epoch: LeaderEpoch(leader_epoch + alter.leader_epoch_skew),
        partition_epoch: partition_epoch + alter.partition_epoch_skew,
        new_isr,
    }
}

/// Applies `ops` (after registering and unfencing brokers 1 to 3 and creating topics `a`
/// and `b`, `b` with unclean election) and checks, after every
/// step, the image's invariants, that a refusal changed nothing, and that epochs only grow
/// and grow on every change; then that the same commands give the same images and results.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut setup = Vec::new();
    for broker in 1..=3 {
        setup.push(Op::Register {
            broker,
            incarnation: 0,
        });
        setup.push(Op::Unfence {
            broker,
            stale: false,
        });
    }
    for (topic, partitions, replication_factor, unclean) in [(0, 3, 3, false), (1, 2, 2, true)] {
        setup.push(Op::Create {
            topic,
            partitions,
            replication_factor,
            unclean,
            placed: false,
        });
    }
    let mut image = MetadataImage::default();
    let mut applied = Vec::new();
    // Each partition's last state, by topic id (a topic created again is another topic).
    let mut last: BTreeMap<(u64, usize), PartitionMeta> = BTreeMap::new();
    for (index, op) in (1u64..).zip(setup.iter().chain(ops)) {
        let command = to_command(op, &image);
        let before = image.clone();
        let result = image.apply(index, &command);
        prop_assert_eq!(image.check_invariants(), Ok(()), "after {:?}", command);
        if let CommandResult::Refused { .. } = result {
            prop_assert_eq!(&image, &before, "refused {:?} changed the image", command);
        }
        for topic in image.topics.values() {
            for (p, partition) in topic.partitions.iter().enumerate() {
                if let Some(prev) = last.insert((topic.id, p), partition.clone()) {
                    check_epochs(&prev, partition)?;
                }
            }
        }
        applied.push((command, result));
    }
    let mut again = MetadataImage::default();
    for (index, (command, result)) in (1u64..).zip(&applied) {
        prop_assert_eq!(&again.apply(index, command), result);
    }
    prop_assert_eq!(again, image);
    Ok(())
}

fn check_epochs(prev: &PartitionMeta, now: &PartitionMeta) -> Result<(), TestCaseError> {
    let leader_changed = prev.leader != now.leader;
    let changed = leader_changed || prev.isr != now.isr;
    if prev.replicas != now.replicas || prev.is_reassigning() || now.is_reassigning() {
        // A reassignment's start or completion may come on top of another change in the
        // same command: each moves the epochs once more.
        prop_assert!(
            now.partition_epoch >= prev.partition_epoch,
            "{:?} -> {:?}",
            prev,
            now
        );
        prop_assert_eq!(
            now.partition_epoch > prev.partition_epoch,
            changed || prev.replicas != now.replicas,
            "{:?} -> {:?}",
            prev,
            now
        );
        prop_assert_eq!(
            now.leader_epoch.0 > prev.leader_epoch.0,
            leader_changed,
            "{:?} -> {:?}",
            prev,
            now
        );
        prop_assert!(now.leader_epoch.0 >= prev.leader_epoch.0);
        return Ok(());
    }
    let expected_leader_epoch = prev.leader_epoch.0 + i32::from(leader_changed);
    let expected_partition_epoch = prev.partition_epoch + i32::from(changed);
    prop_assert_eq!(
        now.leader_epoch.0,
        expected_leader_epoch,
        "{:?} -> {:?}",
        prev,
        now
    );
    prop_assert_eq!(
        now.partition_epoch,
        expected_partition_epoch,
        "{:?} -> {:?}",
        prev,
        now
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_commands_keep_the_invariants(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops)?;
    }
}

fn reassign(cluster: &mut Cluster, topic: &str, p: i32, target: Option<&[i32]>) -> CommandResult {
    cluster.apply(MetadataCommand::ReassignPartitions {
        topic: topic.into(),
        partitions: vec![(
            PartitionId(p),
            target.map(|t| t.iter().copied().map(BrokerId).collect()),
        )],
    })
}

fn moving(partition: &PartitionMeta) -> (String, String) {
    (ids(&partition.adding), ids(&partition.removing))
}

#[test]
fn a_reassignment_adds_replicas_and_completes_when_they_are_in_sync() {
    let mut c = Cluster::with_brokers(&[1, 2, 3, 4]);
    placed(&mut c, "t", &[&[1, 2]]);
    assert_eq!(reassign(&mut c, "t", 0, Some(&[3, 4])), CommandResult::Done);
    c.check("t", &["leader=1 le=0 pe=1 replicas=3,4,1,2 isr=1,2"]);
    assert_eq!(moving(c.partition("t", 0)), ("3,4".into(), "1,2".into()));
    assert_eq!(c.image.reassignments().len(), 1);
    // One added replica in sync: not yet.
    let alter = c.alter_request("t", 0, &[1, 2, 3]);
    c.apply(alter);
    c.check("t", &["leader=1 le=0 pe=2 replicas=3,4,1,2 isr=1,2,3"]);
    // Both: the target becomes the replicas and the first target replica in sync leads.
    let alter = c.alter_request("t", 0, &[1, 2, 3, 4]);
    match c.apply(alter) {
        CommandResult::Partition(p) => {
            assert_eq!(describe(&p), "leader=3 le=1 pe=4 replicas=3,4 isr=3,4")
        }
        other => panic!("{other:?}"),
    }
    c.check("t", &["leader=3 le=1 pe=4 replicas=3,4 isr=3,4"]);
    assert!(c.image.reassignments().is_empty());
}

fn placed(c: &mut Cluster, name: &str, replicas: &[&[i32]]) {
    let result = c.apply(MetadataCommand::CreateTopic {
        name: name.into(),
        partitions: replicas.len() as u32,
        replication_factor: replicas[0].len() as u16,
        configs: BTreeMap::new(),
        assignment: Some(
            replicas
                .iter()
                .map(|r| r.iter().copied().map(BrokerId).collect())
                .collect(),
        ),
    });
    assert_eq!(result, CommandResult::Done);
}

#[test]
fn a_reassignment_that_only_drops_replicas_completes_at_once_and_a_cancel_goes_back() {
    let mut c = Cluster::with_brokers(&[1, 2, 3]);
    placed(&mut c, "t", &[&[1, 2, 3], &[2, 3, 1]]);
    // Partition 0: replicas 1,2,3; dropping 1 (the leader) moves the leadership to 2.
    reassign(&mut c, "t", 0, Some(&[2, 3]));
    assert_eq!(
        describe(c.partition("t", 0)),
        "leader=2 le=1 pe=2 replicas=2,3 isr=2,3"
    );
    // Partition 1 (replicas 2,3,1): to 3,4 with 4 unregistered: refused, unchanged.
    reassign(&mut c, "t", 1, Some(&[3, 4]));
    assert_eq!(
        describe(c.partition("t", 1)),
        "leader=2 le=0 pe=0 replicas=2,3,1 isr=2,3,1"
    );
    // Broker 4 joins; a reassignment to 4 alone, then cancelled: back to 2,3,1.
    c.register(4, "run-4");
    c.unfence(4);
    reassign(&mut c, "t", 1, Some(&[4]));
    assert_eq!(moving(c.partition("t", 1)), ("4".into(), "2,3,1".into()));
    assert_eq!(reassign(&mut c, "t", 1, None), CommandResult::Done);
    assert_eq!(
        describe(c.partition("t", 1)),
        "leader=2 le=0 pe=2 replicas=2,3,1 isr=2,3,1"
    );
    assert_eq!(moving(c.partition("t", 1)), (String::new(), String::new()));
    let image = &c.image;
    let refused = image
        .check_reassignment("t", PartitionId(1), None)
        .unwrap_err();
    assert_eq!(refused.0, ErrorCode::NoReassignmentInProgress);
    let refused = image
        .check_reassignment("t", PartitionId(1), Some(&[BrokerId(2), BrokerId(2)]))
        .unwrap_err();
    assert_eq!(refused.0, ErrorCode::InvalidReplicaAssignment);
    // More replicas than registered brokers: refused before any pairwise comparison (a
    // target of millions of ids would otherwise hold the controller for hours).
    let many: Vec<BrokerId> = (0..1_000_000).map(BrokerId).collect();
    let refused = image
        .check_reassignment("t", PartitionId(1), Some(&many))
        .unwrap_err();
    assert_eq!(refused.0, ErrorCode::InvalidReplicaAssignment);
    assert!(
        refused.1.contains("1000000 target replicas"),
        "{}",
        refused.1
    );
}

#[test]
fn an_added_replica_never_wins_an_unclean_election() {
    let mut c = Cluster::with_brokers(&[1, 2]);
    placed(&mut c, "t", &[&[1]]);
    c.apply(MetadataCommand::AlterTopicConfigs {
        name: "t".into(),
        configs: BTreeMap::from([(
            "unclean.leader.election.enable".to_string(),
            "true".to_string(),
        )]),
    });
    // t-0 on broker 1; add broker 2, then lose broker 1 before 2 caught up.
    reassign(&mut c, "t", 0, Some(&[2]));
    c.fence(1);
    c.fence(2);
    c.unfence(2);
    let p = c.partition("t", 0);
    assert_eq!(p.leader, BrokerId::NONE, "{}", describe(p));
}

#[test]
fn a_cancel_hands_the_leadership_back_to_an_original_replica_in_sync() {
    let mut c = Cluster::with_brokers(&[1, 2, 3, 4]);
    placed(&mut c, "t", &[&[1, 2]]);
    reassign(&mut c, "t", 0, Some(&[3, 4]));
    // 3 caught up (4 not yet), and the preferred election made it the leader.
    let alter = c.alter_request("t", 0, &[1, 2, 3]);
    c.apply(alter);
    c.apply(MetadataCommand::ElectPreferredLeaders {
        partitions: vec![("t".into(), PartitionId(0))],
    });
    assert_eq!(c.partition("t", 0).leader, BrokerId(3));
    assert_eq!(reassign(&mut c, "t", 0, None), CommandResult::Done);
    assert_eq!(
        describe(c.partition("t", 0)),
        "leader=1 le=2 pe=4 replicas=1,2 isr=1,2"
    );
}
