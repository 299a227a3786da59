use std::collections::BTreeSet;

use super::*;

const DELAY: Duration = Duration::from_millis(500);
const TIMINGS: GroupTimings = GroupTimings {
    initial_delay: DELAY,
};

fn request(member_id: &str, topics: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_owned(),
        client_id: "c".to_owned(),
        client_host: "127.0.0.1".to_owned(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(30),
        protocol_type: "consumer".to_owned(),
        protocols: vec![(SERVER_ASSIGNOR.to_owned(), Bytes::new())],
        subscription: topics.iter().map(|t| (*t).to_owned()).collect(),
        group_instance_id: None,
        require_known_member_id: true,
    }
}

/// A member's share, answered at once (server-side assignment).
fn share(
    group: &mut Group,
    id: &str,
    generation: i32,
    now: Instant,
) -> Result<Vec<TopicPartitions>, ApiError> {
    match group.sync(id, generation, Vec::new(), now) {
        SyncOutcome::Now(Ok(MemberAssignment::Partitions(p))) => Ok(p),
        SyncOutcome::Now(Err(e)) => Err(e),
        other => panic!("expected an immediate answer, got {other:?}"),
    }
}

/// Six partitions of `t`, two of `u`.
fn partitions(topic: &str) -> Option<u32> {
    match topic {
        "t" => Some(6),
        "u" => Some(2),
        _ => None,
    }
}

/// A first join: the member id the coordinator hands out.
fn new_id(group: &mut Group, now: Instant) -> String {
    match group.join(request("", &["t"]), now, TIMINGS) {
        JoinOutcome::MemberIdRequired(id) => id,
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    }
}

fn join_later(
    group: &mut Group,
    id: &str,
    topics: &[&str],
    now: Instant,
) -> oneshot::Receiver<Result<Joined, ApiError>> {
    match group.join(request(id, topics), now, TIMINGS) {
        JoinOutcome::Later(rx) => rx,
        other => panic!("expected a held join, got {other:?}"),
    }
}

/// Completes the join phase and writes the generation successfully.
fn complete(group: &mut Group, now: Instant) -> i32 {
    assert!(group.join_phase_done(now), "join phase not done: {group:?}");
    let value = group.complete_join(now, &partitions).unwrap();
    group.written(value.generation, Ok(()), now);
    value.generation
}

fn owned(group: &mut Group, ids: &[&str], generation: i32, now: Instant) -> Vec<(String, i32)> {
    let mut all = Vec::new();
    for id in ids {
        for tp in share(group, id, generation, now).unwrap() {
            all.extend(tp.partitions.iter().map(|p| (tp.topic.clone(), p.0)));
        }
    }
    all.sort();
    all
}

#[test]
fn members_starting_together_share_one_generation_round_robin() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let mut rx_a = join_later(&mut group, &a, &["t"], t0);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    let b = new_id(&mut group, t0 + Duration::from_millis(100));
    let mut rx_b = join_later(&mut group, &b, &["t"], t0 + Duration::from_millis(100));
    // The initial delay, extended by the second joiner, holds the phase open.
    assert!(!group.join_phase_done(t0 + DELAY));
    let now = t0 + Duration::from_millis(100) + DELAY;
    let generation = complete(&mut group, now);
    assert_eq!(generation, 1);
    assert_eq!(group.state(), GroupState::Stable);
    let joined_a = rx_a.try_recv().unwrap().unwrap();
    let joined_b = rx_b.try_recv().unwrap().unwrap();
    assert_eq!((joined_a.generation, joined_b.generation), (1, 1));
    assert_eq!(joined_a.leader, joined_b.leader);

    // Round-robin over members sorted by id: the smaller id takes 0, 2, 4.
    let (first, second) = if a < b { (&a, &b) } else { (&b, &a) };
    let share = |id: &str, group: &mut Group| {
        share(group, id, 1, now).unwrap()[0]
            .partitions
            .iter()
            .map(|p| p.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(share(first, &mut group), vec![0, 2, 4]);
    assert_eq!(share(second, &mut group), vec![1, 3, 5]);
}

#[test]
fn a_third_member_triggers_a_rebalance_members_learn_from_heartbeats() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let _rx = join_later(&mut group, &a, &["t"], t0);
    let generation = complete(&mut group, t0 + DELAY);
    group.heartbeat(&a, generation, t0 + DELAY).unwrap();

    let now = t0 + Duration::from_secs(1);
    let b = new_id(&mut group, now);
    let _rx_b = join_later(&mut group, &b, &["t"], now);
    let err = group.heartbeat(&a, generation, now).unwrap_err();
    assert_eq!(err.code, ErrorCode::RebalanceInProgress);
    // The current generation may still commit before it gives partitions up...
    group.check_commit(&a, generation, now).unwrap();
    // ...and its sync is refused until it rejoins.
    assert_eq!(
        share(&mut group, &a, generation, now).unwrap_err().code,
        ErrorCode::RebalanceInProgress
    );
    assert!(!group.join_phase_done(now), "a has not rejoined yet");
    let _rx_a = join_later(&mut group, &a, &["t"], now);
    let next = complete(&mut group, now);
    assert_eq!(next, generation + 1);
    // The old generation is fenced.
    let stale = group.check_commit(&a, generation, now).unwrap_err();
    assert_eq!(stale.code, ErrorCode::IllegalGeneration);
    let all = owned(&mut group, &[&a, &b], next, now);
    let expected: Vec<(String, i32)> = (0..6).map(|p| ("t".to_owned(), p)).collect();
    assert_eq!(all, expected, "every partition owned exactly once");
}

#[test]
fn an_expired_member_is_removed_and_its_partitions_move() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let b = new_id(&mut group, t0);
    let _ra = join_later(&mut group, &a, &["t"], t0);
    let _rb = join_later(&mut group, &b, &["t"], t0);
    let generation = complete(&mut group, t0 + DELAY);

    // a keeps heartbeating, b goes silent.
    let mut now = t0 + DELAY;
    for _ in 0..11 {
        now += Duration::from_secs(1);
        group.heartbeat(&a, generation, now).ok();
        group.tick(now, &partitions);
    }
    assert_eq!(group.member_count(), 1);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat(&b, generation, now).unwrap_err().code,
        ErrorCode::UnknownMemberId
    );
    let _ra = join_later(&mut group, &a, &["t"], now);
    let next = complete(&mut group, now);
    assert_eq!(owned(&mut group, &[&a], next, now).len(), 6);
}

#[test]
fn a_member_that_does_not_rejoin_is_evicted_at_the_rebalance_timeout() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let b = new_id(&mut group, t0);
    let _ra = join_later(&mut group, &a, &["t"], t0);
    let _rb = join_later(&mut group, &b, &["t"], t0);
    let generation = complete(&mut group, t0 + DELAY);
    group.leave(&a, t0 + DELAY).unwrap();
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    // b heartbeats (so its session lives) but never rejoins.
    let mut now = t0 + DELAY;
    while !group.tick(now, &partitions) {
        group.heartbeat(&b, generation, now).ok();
        now += Duration::from_secs(1);
        assert!(now < t0 + Duration::from_secs(60), "never completed");
    }
    group.complete_join(t0, &partitions);
    assert_eq!(group.member_count(), 0);
    assert_eq!(
        group.state(),
        GroupState::Empty,
        "empty before its generation is written"
    );
    group.written(generation + 1, Ok(()), now);
    assert_eq!(group.state(), GroupState::Empty);
}

#[test]
fn leaving_last_member_empties_the_group_with_a_new_generation() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let _ra = join_later(&mut group, &a, &["t"], t0);
    let generation = complete(&mut group, t0 + DELAY);
    group.leave(&a, t0 + DELAY).unwrap();
    let next = complete(&mut group, t0 + DELAY);
    assert_eq!(next, generation + 1);
    assert_eq!(group.state(), GroupState::Empty);
    assert_eq!(
        group.leave(&a, t0).unwrap_err().code,
        ErrorCode::UnknownMemberId
    );
    // Simple commits are allowed once nobody consumes.
    group.check_commit("", -1, t0).unwrap();
}

/// Kafka's `initNextGeneration`: a group whose last member left is Empty as soon as its
/// join phase completes, before the empty generation is durable (an admin resetting its
/// offsets right after found it CompletingRebalance), and a consumer arriving meanwhile
/// joins at once.
#[test]
fn a_group_whose_last_member_left_is_empty_and_joinable_while_its_generation_is_written() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let _ra = join_later(&mut group, &a, &["t"], t0);
    let generation = complete(&mut group, t0 + DELAY);
    group.leave(&a, t0 + DELAY).unwrap();
    assert!(group.join_phase_done(t0 + DELAY));
    let empty = group.complete_join(t0 + DELAY, &partitions).unwrap();
    assert_eq!(
        (empty.generation, group.state()),
        (generation + 1, GroupState::Empty)
    );
    group.check_commit("", -1, t0 + DELAY).unwrap();
    let b = new_id(&mut group, t0 + DELAY);
    let _rb = join_later(&mut group, &b, &["t"], t0 + DELAY);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    group.written(empty.generation, Ok(()), t0 + DELAY);
    assert_eq!(
        group.state(),
        GroupState::PreparingRebalance,
        "the empty generation's write changes nothing once someone joined"
    );
    assert_eq!(complete(&mut group, t0 + 3 * DELAY), generation + 2);
}

#[test]
fn commits_outside_the_group_are_refused_while_it_has_members() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let _ra = join_later(&mut group, &a, &["t"], t0);
    complete(&mut group, t0 + DELAY);
    let err = group.check_commit("", -1, t0).unwrap_err();
    assert_eq!(err.code, ErrorCode::UnknownMemberId);
    assert!(
        err.message.contains("stop its consumers"),
        "{}",
        err.message
    );
    assert_eq!(
        group.check_commit("stranger", 1, t0).unwrap_err().code,
        ErrorCode::UnknownMemberId
    );
}

#[test]
fn unknown_member_ids_and_other_assignors_are_refused() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    match group.join(request("made-up", &["t"]), t0, TIMINGS) {
        JoinOutcome::Now(Err(e)) => assert_eq!(e.code, ErrorCode::UnknownMemberId),
        other => panic!("{other:?}"),
    }
    let a = new_id(&mut group, t0);
    let _ra = join_later(&mut group, &a, &["t"], t0);
    let mut classic = request("", &["t"]);
    classic.protocols = vec![("range".to_owned(), Bytes::new())];
    match group.join(classic, t0, TIMINGS) {
        JoinOutcome::Now(Err(e)) => assert_eq!(e.code, ErrorCode::InconsistentGroupProtocol),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_write_fails_the_held_joins_and_the_group_rebalances_again() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let mut rx = join_later(&mut group, &a, &["t"], t0);
    let value = group.complete_join(t0, &partitions).unwrap();
    let lost = ApiError::new(ErrorCode::NotCoordinator, "moved");
    group.written(value.generation, Err(lost), t0 + DELAY);
    assert_eq!(
        rx.try_recv().unwrap().unwrap_err().code,
        ErrorCode::NotCoordinator
    );
    assert_eq!(group.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_topic_growing_triggers_a_rebalance() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let _ra = join_later(&mut group, &a, &["t", "new"], t0);
    complete(&mut group, t0 + DELAY);
    assert!(!group.tick(t0 + DELAY, &partitions));
    assert_eq!(group.state(), GroupState::Stable);
    let grown = |topic: &str| {
        if topic == "new" {
            Some(3)
        } else {
            partitions(topic)
        }
    };
    group.tick(t0 + DELAY, &grown);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_loaded_generation_keeps_its_members_and_fences_older_ones() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let a = new_id(&mut group, t0);
    let _ra = join_later(&mut group, &a, &["t"], t0);
    let value = group.complete_join(t0, &partitions).unwrap();
    group.written(value.generation, Ok(()), t0);

    let mut reloaded = Group::new("g");
    reloaded.load(value.clone(), t0, &partitions);
    assert_eq!(reloaded.state(), GroupState::Stable);
    reloaded.heartbeat(&a, value.generation, t0).unwrap();
    assert_eq!(
        share(&mut reloaded, &a, value.generation, t0).unwrap(),
        share(&mut group, &a, value.generation, t0).unwrap()
    );
    assert_eq!(
        reloaded
            .heartbeat(&a, value.generation - 1, t0)
            .unwrap_err()
            .code,
        ErrorCode::IllegalGeneration
    );
}

#[test]
fn the_later_offset_record_wins_whatever_order_appends_complete_in() {
    let mut group = Group::new("g");
    let value = |offset| OffsetValue {
        offset: Offset(offset),
        leader_epoch: sluice_protocol::LeaderEpoch(-1),
        metadata: None,
        commit_timestamp: 0,
    };
    group.apply_offset("t".into(), PartitionId(0), Some(value(20)), Offset(8));
    group.apply_offset("t".into(), PartitionId(0), Some(value(10)), Offset(7));
    assert_eq!(
        group.committed("t", PartitionId(0)).unwrap().value.offset,
        Offset(20)
    );
    group.apply_offset("t".into(), PartitionId(0), None, Offset(9));
    assert!(group.committed("t", PartitionId(0)).is_none());
}

#[test]
fn a_transactions_offsets_count_on_its_commit_marker_and_lose_to_later_plain_commits() {
    let mut group = Group::new("g");
    let value = |offset| OffsetValue {
        offset: Offset(offset),
        leader_epoch: sluice_protocol::LeaderEpoch(-1),
        metadata: None,
        commit_timestamp: 0,
    };
    let p = |i| PartitionId(i);
    group.stage_txn_offset(7, "t".into(), p(0), value(10), Offset(1));
    group.stage_txn_offset(7, "t".into(), p(1), value(11), Offset(2));
    assert!(group.committed("t", p(0)).is_none(), "undecided");
    assert!(group.has_pending_txn_offset("t", p(0)));
    assert!(!group.is_forgettable());
    // A plain commit of partition 1 written after the transaction's record wins.
    group.apply_offset("t".into(), p(1), Some(value(50)), Offset(3));
    // A record of the producer's next transaction, after the marker, stays staged.
    group.stage_txn_offset(7, "t".into(), p(2), value(12), Offset(5));
    assert!(group.end_txn(7, true, Offset(4)));
    assert_eq!(group.committed("t", p(0)).unwrap().value.offset, Offset(10));
    assert_eq!(group.committed("t", p(1)).unwrap().value.offset, Offset(50));
    assert!(group.committed("t", p(2)).is_none());
    assert!(!group.has_pending_txn_offset("t", p(0)));
    // Aborted: dropped.
    assert!(!group.end_txn(7, false, Offset(6)));
    assert!(group.committed("t", p(2)).is_none());
    assert!(!group.has_pending_txn_offset("t", p(2)));
}

#[test]
fn round_robin_follows_subscriptions_and_covers_each_partition_once() {
    let all = vec!["t".to_owned(), "u".to_owned()];
    let only_t = vec!["t".to_owned()];
    let members: Vec<(&str, &[String])> = vec![("a", &all), ("b", &only_t), ("c", &all)];
    let mut partitions: Vec<(String, PartitionId)> =
        (0..4).map(|p| ("t".to_owned(), PartitionId(p))).collect();
    partitions.extend((0..2).map(|p| ("u".to_owned(), PartitionId(p))));
    let shares = round_robin(&members, &partitions);
    let flat = |id: &str| -> Vec<(String, i32)> {
        shares[id]
            .iter()
            .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.clone(), p.0)))
            .collect()
    };
    assert_eq!(
        flat("a"),
        vec![("t".into(), 0), ("t".into(), 3), ("u".into(), 1)]
    );
    assert_eq!(flat("b"), vec![("t".into(), 1)]);
    assert_eq!(flat("c"), vec![("t".into(), 2), ("u".into(), 0)]);
    let covered: BTreeSet<_> = ["a", "b", "c"].iter().flat_map(|m| flat(m)).collect();
    assert_eq!(covered.len(), partitions.len());
}

/// A Kafka consumer's join: client-side assignors with their metadata.
fn kafka_request(member_id: &str, protocols: &[(&str, &'static [u8])]) -> JoinRequest {
    JoinRequest {
        protocols: protocols
            .iter()
            .map(|(name, metadata)| ((*name).to_owned(), Bytes::from_static(metadata)))
            .collect(),
        subscription: Vec::new(),
        ..request(member_id, &[])
    }
}

fn kafka_member(
    group: &mut Group,
    protocols: &[(&str, &'static [u8])],
    now: Instant,
) -> (String, oneshot::Receiver<Result<Joined, ApiError>>) {
    let id = match group.join(kafka_request("", protocols), now, TIMINGS) {
        JoinOutcome::MemberIdRequired(id) => id,
        other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
    };
    match group.join(kafka_request(&id, protocols), now, TIMINGS) {
        JoinOutcome::Later(rx) => (id, rx),
        other => panic!("expected a held join, got {other:?}"),
    }
}

#[test]
fn client_side_assignment_delivers_the_leaders_bytes_verbatim() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let (a, mut ja) = kafka_member(
        &mut group,
        &[("range", b"a-range"), ("roundrobin", b"a-rr")],
        t0,
    );
    let (b, mut jb) = kafka_member(
        &mut group,
        &[("roundrobin", b"b-rr"), ("range", b"b-range")],
        t0,
    );
    assert!(group.join_phase_done(t0 + DELAY));
    // Nothing is written at the end of the join phase: the leader assigns.
    assert!(group.complete_join(t0 + DELAY, &partitions).is_none());
    let ja = ja.try_recv().unwrap().unwrap();
    let jb = jb.try_recv().unwrap().unwrap();
    // One vote each: the tie goes to the leader's (first member's) preference.
    let (leader, follower, leader_join) = if ja.leader == a {
        (&a, &b, &ja)
    } else {
        (&b, &a, &jb)
    };
    assert_eq!(ja.leader, jb.leader);
    assert_eq!(ja.generation, 1);
    assert_eq!(ja.protocol_name, jb.protocol_name);
    let chosen = ja.protocol_name.clone().unwrap();
    let mut metadata: Vec<(String, Bytes)> = leader_join
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.metadata.clone()))
        .collect();
    metadata.sort();
    let expected_metadata = |id: &str| -> Bytes {
        let which = if id == a { "a" } else { "b" };
        let suffix = if chosen == "range" { "range" } else { "rr" };
        Bytes::from(format!("{which}-{suffix}"))
    };
    assert_eq!(metadata.len(), 2);
    for (id, bytes) in &metadata {
        assert_eq!(bytes, &expected_metadata(id));
    }
    let follower_join = if leader == &a { &jb } else { &ja };
    assert!(
        follower_join.members.is_empty(),
        "only the leader gets the members"
    );
    assert_eq!(group.state(), GroupState::CompletingRebalance);

    // The follower's sync is held until the leader's assignment is written.
    let mut held = match group.sync(follower, 1, Vec::new(), t0 + DELAY) {
        SyncOutcome::Later(rx) => rx,
        other => panic!("{other:?}"),
    };
    let assignments = vec![
        (leader.clone(), Bytes::from_static(b"\x00\x01leader-share")),
        (
            follower.clone(),
            Bytes::from_static(b"\x00\x01follower-share"),
        ),
    ];
    let (value, mut answer) = match group.sync(leader, 1, assignments, t0 + DELAY) {
        SyncOutcome::Write { value, answer } => (value, answer),
        other => panic!("{other:?}"),
    };
    assert!(held.try_recv().is_err(), "held until written");
    assert!(value.members.iter().all(|m| m.leader_assignment.is_some()));
    group.written(value.generation, Ok(()), t0 + DELAY);
    assert_eq!(group.state(), GroupState::Stable);
    assert_eq!(
        answer.try_recv().unwrap().unwrap(),
        MemberAssignment::Opaque(Bytes::from_static(b"\x00\x01leader-share"))
    );
    assert_eq!(
        held.try_recv().unwrap().unwrap(),
        MemberAssignment::Opaque(Bytes::from_static(b"\x00\x01follower-share"))
    );

    // A new coordinator that loads the generation gives the same shares.
    let mut reloaded = Group::new("g");
    reloaded.load(value, t0, &partitions);
    match reloaded.sync(follower, 1, Vec::new(), t0) {
        SyncOutcome::Now(Ok(share)) => assert_eq!(
            share,
            MemberAssignment::Opaque(Bytes::from_static(b"\x00\x01follower-share"))
        ),
        other => panic!("{other:?}"),
    }
    let described = reloaded.describe_members();
    assert_eq!(described.len(), 2);
    assert!(described.iter().all(|m| !m.metadata.is_empty()));
}

#[test]
fn a_leader_that_never_syncs_is_removed_and_the_group_rebalances() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let (a, _ja) = kafka_member(&mut group, &[("range", b"m")], t0);
    let (b, _jb) = kafka_member(&mut group, &[("range", b"m")], t0);
    assert!(group.complete_join(t0 + DELAY, &partitions).is_none());
    let leader = group.leader.clone().unwrap();
    let follower = if leader == a { b } else { a };
    let mut held = match group.sync(&follower, 1, Vec::new(), t0 + DELAY) {
        SyncOutcome::Later(rx) => rx,
        other => panic!("{other:?}"),
    };
    let mut now = t0 + DELAY;
    while group.state() == GroupState::CompletingRebalance {
        group.tick(now, &partitions);
        now += Duration::from_secs(1);
        assert!(
            now < t0 + Duration::from_secs(120),
            "never gave up on the leader"
        );
    }
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        held.try_recv().unwrap().unwrap_err().code,
        ErrorCode::RebalanceInProgress
    );
    assert_eq!(
        group.member_count(),
        1,
        "the leader is gone, the follower stays"
    );
}

#[test]
fn sluice_and_kafka_members_never_share_a_group() {
    let t0 = Instant::now();
    let mut kafka = Group::new("k");
    let _ = kafka_member(&mut kafka, &[("range", b"m")], t0);
    let native = request("", &["t"]);
    match kafka.join(native, t0, TIMINGS) {
        JoinOutcome::Now(Err(e)) => {
            assert_eq!(e.code, ErrorCode::InconsistentGroupProtocol);
            assert!(
                e.message.contains("consumed by Kafka clients"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    let mut native = Group::new("n");
    let a = new_id(&mut native, t0);
    let _ra = join_later(&mut native, &a, &["t"], t0);
    match native.join(kafka_request("", &[("range", b"m")]), t0, TIMINGS) {
        JoinOutcome::Now(Err(e)) => {
            assert_eq!(e.code, ErrorCode::InconsistentGroupProtocol);
            assert!(
                e.message.contains("consumed by sluice clients"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_without_kip_394_joins_at_once_with_a_new_id() {
    let t0 = Instant::now();
    let mut group = Group::new("g");
    let mut old = kafka_request("", &[("range", b"m")]);
    old.require_known_member_id = false;
    let mut rx = match group.join(old, t0, TIMINGS) {
        JoinOutcome::Later(rx) => rx,
        other => panic!("{other:?}"),
    };
    assert!(group.complete_join(t0 + DELAY, &partitions).is_none());
    let joined = rx.try_recv().unwrap().unwrap();
    assert!(!joined.member_id.is_empty());
    assert_eq!(joined.leader, joined.member_id);
    assert_eq!(joined.members.len(), 1);
}
