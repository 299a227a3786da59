//! When a voter stands for election: our own timer with a pre-vote (Raft's section 9.6 of
//! Ongaro's thesis), in place of openraft's timer, which is switched off
//! (`enable_elect: false`).
//!
//! Why: openraft 0.9 has no pre-vote. A voter that came back from a pause (SIGSTOP, a long
//! stall) or a cut link stood at once with a higher term, deposed the working controller,
//! and forced an election nobody needed (the controller-case tail of issue 20, BENCHMARKS.md).
//! Here a voter that has heard nothing from a leader for [`ELECTION_TIMEOUT_MIN`] to
//! [`ELECTION_TIMEOUT_MAX`] (random, drawn again after each try) first asks the other
//! voters whether they would vote for it ([`PreVote`]); only when a majority, itself
//! included, says yes does it stand (`raft.trigger().elect()`), with the term and the vote
//! request openraft makes. A voter says yes only when it is not the leader, has itself
//! heard nothing from a leader for openraft's leader lease (so the real vote will not be
//! refused by the lease), and the candidate's log is at least as up to date as its own.
//! A pre-vote changes no state anywhere: terms grow only in real elections.
//!
//! The real vote still decides, with openraft's own checks (term, log, lease); the pre-vote
//! only keeps voters that cannot win, or need not, from disturbing those that work.

use std::time::Duration;

use openraft::{LogId, ServerState};
use serde::{Deserialize, Serialize};
use sluice_protocol::messages::{RaftPreVoteRequest, RaftPreVoteResponse};
use sluice_protocol::{ApiKey, BrokerId, Request, Response};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::network::{answer_payload, check_target, from_payload, to_payload};
use super::peer::{PeerConfig, PeerConnection};
use super::raft::{NodeId, Raft};
use super::store::LogReader;
use crate::error::ApiError;

/// The shortest silence from the leader after which a voter asks for pre-votes. A follower
/// stood after 700-800 ms under openraft's timer (its lease plus its election timeout);
/// the same figures here, for the same reason: at full produce load on a 2-core machine
/// the whole process stalls for up to ~550 ms now and then (bench/failover-soak.sh), and a
/// leader's heartbeats are late by as much, so a shorter silence is not evidence enough.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(700);

/// The longest such silence: the random spread keeps two voters from asking at once.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(800);

/// How often the timer looks at the Raft state.
const TICK: Duration = Duration::from_millis(20);

/// How long a pre-vote round waits for answers.
const PRE_VOTE_TIMEOUT: Duration = Duration::from_millis(200);

/// When this voter last stood for election (the term, and when it had last heard from a
/// leader), and the last pre-vote it granted. The controller it becomes counts the previous
/// controller's silence from the first (`Controller`'s sessions), as a broker's session
/// counts from its last heartbeat; the second keeps two voters from standing together.
#[derive(Debug, Default)]
pub struct LastStand {
    stood: std::sync::Mutex<Option<(u64, Instant)>>,
    granted: std::sync::Mutex<Option<(Instant, NodeId)>>,
}

/// How long after granting a pre-vote a voter leaves the election to that candidate.
const YIELD_WINDOW: Duration = Duration::from_millis(300);

impl LastStand {
    fn record(&self, term: u64, leader_heard_at: Instant) {
        *self.stood.lock().unwrap_or_else(|p| p.into_inner()) = Some((term, leader_heard_at));
    }

    /// When this node last heard from a leader before it stood in `term`; `None` if it
    /// did not stand in that term.
    pub fn leader_heard_at(&self, term: u64) -> Option<Instant> {
        let stood = *self.stood.lock().unwrap_or_else(|p| p.into_inner());
        stood.filter(|(t, _)| *t == term).map(|(_, at)| at)
    }

    /// Notes a pre-vote this node granted to `candidate`.
    pub fn granted(&self, candidate: NodeId) {
        *self.granted.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), candidate));
    }

    /// The candidate node `me` should leave the election to, for a pre-vote round it began
    /// (or is about to begin) at `round_began`: one it granted a pre-vote within the last
    /// [`YIELD_WINDOW`] that asked before this round began, or, when both asked at once
    /// (the grant came during the round), the higher id. Asked before a round, so a voter
    /// asked first does not ask at all, and again after a round won, for the tie. Without this, two voters whose timers end together both stand, split
    /// the vote and wait a whole timer more (the controller cases' tail in BENCHMARKS.md).
    pub fn yields_to(&self, me: NodeId, round_began: Instant) -> Option<NodeId> {
        let granted = *self.granted.lock().unwrap_or_else(|p| p.into_inner());
        granted
            .filter(|(at, candidate)| {
                at.elapsed() < YIELD_WINDOW && (*at <= round_began || *candidate > me)
            })
            .map(|(_, candidate)| candidate)
    }
}

/// A voter's question: would you vote for me in `term`?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVote {
    /// The voter asking.
    pub candidate: NodeId,
    /// The term it would stand in (its current term plus one).
    pub term: u64,
    /// The last entry of its log.
    pub last_log_id: Option<LogId<NodeId>>,
}

/// The answer to a [`PreVote`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteAnswer {
    /// Whether the voter would vote for the candidate now.
    pub granted: bool,
    /// Why not, for the candidate's log; empty when granted.
    pub reason: String,
}

/// What a voter knows when it answers a pre-vote or decides to ask for them.
#[derive(Clone, Debug)]
pub struct VoterView {
    /// Its Raft role.
    pub state: ServerState,
    /// Whether it follows an elected leader (its vote is committed), and which.
    pub leader: Option<NodeId>,
    /// Time since it last heard from a leader or changed its vote; `None` if never.
    pub since_leader_contact: Option<Duration>,
    /// The last entry of its log.
    pub last_log_id: Option<LogId<NodeId>>,
    /// The voters of the effective membership.
    pub voters: Vec<NodeId>,
}

impl VoterView {
    /// The view of the local Raft node; `None` once it has stopped.
    pub async fn of(raft: &Raft, log: &LogReader) -> Option<VoterView> {
        let last_log_id = log.last_log_id();
        raft.with_raft_state(move |s| {
            let vote = s.vote_ref();
            VoterView {
                state: s.server_state,
                leader: vote
                    .is_committed()
                    .then(|| vote.leader_id().voted_for())
                    .flatten(),
                since_leader_contact: s.vote_last_modified().map(|t| t.elapsed()),
                last_log_id,
                voters: s.membership_state.effective().voter_ids().collect(),
            }
        })
        .await
        .ok()
    }
}

/// Whether a voter with `view` would vote for `pre` now: `Err` says why not.
pub fn judge(view: &VoterView, pre: &PreVote, lease: Duration) -> Result<(), String> {
    if view.state == ServerState::Leader {
        return Err("it is the active controller".to_owned());
    }
    if let (Some(leader), Some(since)) = (view.leader, view.since_leader_contact) {
        if since <= lease {
            return Err(format!(
                "it heard from the active controller (node {leader}) {} ms ago",
                since.as_millis()
            ));
        }
    }
    // openraft's own rule for the real vote: the candidate's last log id is at least ours
    // (log ids of one term from two leaders do not compare, and refuse).
    if pre.last_log_id.as_ref() >= view.last_log_id.as_ref() {
        Ok(())
    } else {
        Err(format!(
            "its log ends at {} and the candidate's at {}",
            describe(view.last_log_id.as_ref()),
            describe(pre.last_log_id.as_ref())
        ))
    }
}

fn describe(id: Option<&LogId<NodeId>>) -> String {
    id.map_or_else(|| "the start".to_owned(), ToString::to_string)
}

/// openraft's leader lease: how long after the last word from a leader a voter still
/// refuses a vote (openraft uses `election_timeout_max`).
fn leader_lease(raft: &Raft) -> Duration {
    Duration::from_millis(raft.config().election_timeout_max)
}

/// Serves a peer's pre-vote: answers from the local Raft's state; changes nothing.
pub async fn serve_pre_vote(
    raft: &Raft,
    log: &LogReader,
    stand: Option<&LastStand>,
    request: RaftPreVoteRequest,
) -> Result<RaftPreVoteResponse, ApiError> {
    check_target(raft, request.target, ApiKey::RaftPreVote)?;
    let pre: PreVote = from_payload(ApiKey::RaftPreVote, &request.payload)?;
    let answer = match VoterView::of(raft, log).await {
        Some(view) => match judge(&view, &pre, leader_lease(raft)) {
            Ok(()) => PreVoteAnswer {
                granted: true,
                reason: String::new(),
            },
            Err(reason) => PreVoteAnswer {
                granted: false,
                reason,
            },
        },
        None => PreVoteAnswer {
            granted: false,
            reason: "its metadata log is stopping".to_owned(),
        },
    };
    if let (true, Some(stand)) = (answer.granted, stand) {
        stand.granted(pre.candidate);
    }
    tracing::debug!(
        candidate = pre.candidate,
        term = pre.term,
        granted = answer.granted,
        "pre-vote: {}",
        answer.reason
    );
    Ok(RaftPreVoteResponse {
        payload: answer_payload(ApiKey::RaftPreVote, &answer)?,
    })
}

/// A voter's election timer: runs until `stop` turns true (or the sender goes) or the
/// local Raft stops. `voters` are the quorum's ids and native addresses (from `--voters`);
/// `peer` dials them; each stand is recorded in `last_stand`.
///
/// It stops only between ticks, never inside a call to the Raft node: a call abandoned
/// half way (the task aborted while it waited for `with_raft_state`) leaves the Raft core
/// an answer nobody takes, which openraft logs as an ERROR ("to-Raft tx send error") at
/// every such clean shutdown.
pub async fn run_timer(
    raft: Raft,
    log: LogReader,
    me: NodeId,
    voters: Vec<(NodeId, String)>,
    peer: PeerConfig,
    last_stand: std::sync::Arc<LastStand>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut random = SplitMix64::seeded();
    let mut timeout = random.between(ELECTION_TIMEOUT_MIN, ELECTION_TIMEOUT_MAX);
    let mut last_try: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let Some(view) = VoterView::of(&raft, &log).await else {
            return;
        };
        if !view.voters.contains(&me) || view.state == ServerState::Leader {
            continue;
        }
        let single = view.voters.len() == 1;
        if single && view.state == ServerState::Candidate {
            continue;
        }
        let silence = view.since_leader_contact.unwrap_or(Duration::MAX);
        let since_try = last_try.map_or(Duration::MAX, |t| t.elapsed());
        if !single && silence.min(since_try) < timeout {
            continue;
        }
        last_try = Some(Instant::now());
        timeout = random.between(ELECTION_TIMEOUT_MIN, ELECTION_TIMEOUT_MAX);
        // Another voter asked this one first: it will stand; asking too would only make
        // it yield or split the vote.
        if let Some(candidate) = last_stand.yields_to(me, Instant::now()) {
            tracing::debug!(
                "node {me} leaves the next term to node {candidate}, which asked first"
            );
            continue;
        }
        let term = raft.metrics().borrow().current_term + 1;
        let pre = PreVote {
            candidate: me,
            term,
            last_log_id: view.last_log_id,
        };
        let others: Vec<(NodeId, String)> = voters
            .iter()
            .filter(|(id, _)| *id != me && view.voters.contains(id))
            .cloned()
            .collect();
        let round_began = Instant::now();
        let Some(granted_by) = ask_for_pre_votes(&pre, &others, &peer, view.voters.len()).await
        else {
            continue;
        };
        if let Some(candidate) = last_stand.yields_to(me, round_began) {
            tracing::debug!("node {me} leaves term {term} to node {candidate}, which asked too");
            continue;
        }
        if !single {
            tracing::info!(
                "node {me} heard nothing from an active controller for {} ms and nodes \
                 {granted_by:?} would vote for it: standing for election (term {term})",
                silence.min(Duration::from_secs(3600)).as_millis()
            );
        }
        if let Some(since) = view.since_leader_contact {
            last_stand.record(term, Instant::now() - since);
        }
        if raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

/// Asks `others` whether they would vote for `pre`; returns who said yes once a majority of
/// `n_voters` (the candidate included) has, or `None` if no majority said yes in time.
async fn ask_for_pre_votes(
    pre: &PreVote,
    others: &[(NodeId, String)],
    peer: &PeerConfig,
    n_voters: usize,
) -> Option<Vec<NodeId>> {
    let mut granted_by = vec![pre.candidate];
    if granted_by.len() * 2 > n_voters {
        return Some(granted_by);
    }
    let payload = match to_payload(pre) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!("cannot serialise a pre-vote: {e}");
            return None;
        }
    };
    let mut asks = JoinSet::new();
    for (id, addr) in others {
        let (id, addr, peer, payload) = (*id, addr.clone(), peer.clone(), payload.clone());
        asks.spawn(async move {
            // A new connection per round: rounds happen only while no leader is heard,
            // and an answer left behind (a stopped voter) must not hold the next round up.
            let mut connection = PeerConnection::new(BrokerId(id as i32), &addr, peer);
            let request = Request::RaftPreVote(RaftPreVoteRequest {
                target: BrokerId(id as i32),
                payload,
            });
            let answer = match connection.call(request, PRE_VOTE_TIMEOUT).await {
                Ok(Response::RaftPreVote(r)) => serde_json::from_slice::<PreVoteAnswer>(&r.payload)
                    .map_err(|e| format!("garbled answer: {e}")),
                Ok(other) => Err(format!("answered {}", other.api_key().name())),
                Err(e) => Err(e.to_string()),
            };
            (id, answer)
        });
    }
    let mut refusals = Vec::new();
    while let Some(joined) = asks.join_next().await {
        let Ok((id, answer)) = joined else {
            continue;
        };
        match answer {
            Ok(PreVoteAnswer { granted: true, .. }) => {
                granted_by.push(id);
                if granted_by.len() * 2 > n_voters {
                    // The others finish (or time out) on their own.
                    asks.detach_all();
                    return Some(granted_by);
                }
            }
            Ok(PreVoteAnswer { reason, .. }) => refusals.push(format!("node {id}: {reason}")),
            Err(e) => refusals.push(format!("node {id}: {e}")),
        }
    }
    tracing::debug!(
        "node {} would not stand in term {}: {}",
        pre.candidate,
        pre.term,
        refusals.join("; ")
    );
    None
}

/// A small pseudo-random generator for the election timeouts (SplitMix64), seeded from the
/// OS: the timeouts only need to differ between voters and between tries.
struct SplitMix64(u64);

impl SplitMix64 {
    fn seeded() -> SplitMix64 {
        let bytes = crate::data_dir::random_bytes();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&bytes[..8]);
        SplitMix64(u64::from_le_bytes(seed))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in `min..=max`, to the millisecond.
    fn between(&mut self, min: Duration, max: Duration) -> Duration {
        let span = (max.as_millis() - min.as_millis()) as u64 + 1;
        min + Duration::from_millis(self.next() % span)
    }
}

#[cfg(test)]
mod tests;
