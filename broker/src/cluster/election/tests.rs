use std::time::Duration;

use openraft::{CommittedLeaderId, LogId, ServerState};

use super::{judge, PreVote, VoterView};

const LEASE: Duration = Duration::from_millis(400);

fn log_id(term: u64, leader: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, leader), index)
}

/// A follower of node 1 at term 2 whose log ends at index 10.
fn follower(since_leader: Duration) -> VoterView {
    VoterView {
        state: ServerState::Follower,
        leader: Some(1),
        since_leader_contact: Some(since_leader),
        last_log_id: Some(log_id(2, 1, 10)),
        voters: vec![1, 2, 3],
    }
}

fn pre_vote(last_log_id: Option<LogId<u64>>) -> PreVote {
    PreVote {
        candidate: 3,
        term: 3,
        last_log_id,
    }
}

#[test]
fn a_voter_that_hears_its_leader_refuses() {
    let refused = judge(
        &follower(Duration::from_millis(150)),
        &pre_vote(Some(log_id(2, 1, 10))),
        LEASE,
    );
    assert_eq!(
        refused.unwrap_err(),
        "it heard from the active controller (node 1) 150 ms ago"
    );
}

#[test]
fn a_voter_whose_leader_fell_silent_grants_an_up_to_date_candidate() {
    let view = follower(Duration::from_millis(450));
    assert_eq!(
        judge(&view, &pre_vote(Some(log_id(2, 1, 10))), LEASE),
        Ok(())
    );
    assert_eq!(
        judge(&view, &pre_vote(Some(log_id(2, 1, 12))), LEASE),
        Ok(())
    );
    assert_eq!(
        judge(&view, &pre_vote(Some(log_id(3, 2, 1))), LEASE),
        Ok(())
    );
}

#[test]
fn a_candidate_with_a_shorter_or_older_log_is_refused() {
    let view = follower(Duration::from_secs(5));
    let shorter = judge(&view, &pre_vote(Some(log_id(2, 1, 9))), LEASE).unwrap_err();
    assert!(shorter.starts_with("its log ends at "), "{shorter}");
    assert!(judge(&view, &pre_vote(Some(log_id(1, 1, 50))), LEASE).is_err());
    assert!(judge(&view, &pre_vote(None), LEASE).is_err());
}

#[test]
fn the_leader_refuses_and_a_voter_without_a_leader_grants() {
    let mut leader = follower(Duration::ZERO);
    leader.state = ServerState::Leader;
    assert_eq!(
        judge(&leader, &pre_vote(Some(log_id(2, 1, 10))), LEASE).unwrap_err(),
        "it is the active controller"
    );
    // Just voted for another candidate (an uncommitted vote): no lease to respect.
    let mut voted = follower(Duration::from_millis(10));
    voted.leader = None;
    assert_eq!(
        judge(&voted, &pre_vote(Some(log_id(2, 1, 10))), LEASE),
        Ok(())
    );
}

#[test]
fn timeouts_stay_in_their_range() {
    let mut random = super::SplitMix64(7);
    let min = Duration::from_millis(700);
    let max = Duration::from_millis(800);
    let drawn: Vec<Duration> = (0..1000).map(|_| random.between(min, max)).collect();
    assert!(drawn.iter().all(|d| (min..=max).contains(d)));
    assert!(drawn.iter().any(|d| *d < Duration::from_millis(720)));
    assert!(drawn.iter().any(|d| *d > Duration::from_millis(780)));
}

#[test]
fn a_voter_that_granted_a_pre_vote_leaves_the_election_to_that_candidate() {
    use tokio::time::Instant;
    let stand = super::LastStand::default();
    let before_round = Instant::now();
    assert_eq!(stand.yields_to(2, before_round), None, "granted nothing");
    // Node 1 asked before node 2's round began: node 2 yields, whatever the ids.
    stand.granted(1);
    let round = Instant::now();
    assert_eq!(stand.yields_to(2, round), Some(1));
    // Both asked at once (the grant came during node 2's round): the higher id stands.
    let round = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(2));
    stand.granted(3);
    assert_eq!(stand.yields_to(2, round), Some(3));
    let round = Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(2));
    stand.granted(1);
    assert_eq!(stand.yields_to(2, round), None);
}
