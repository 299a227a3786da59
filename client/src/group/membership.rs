//! Group membership: the join (JoinGroup, SyncGroup, then the committed offsets of the
//! assignment), the heartbeat task of a generation, and leaving.
//!
//! A join runs as a task of its own, so a `poll` with a short timeout returns while the
//! coordinator holds the JoinGroup answer until the group has rejoined; the next polls
//! pick the result up. Heartbeats run in a task too, so the session outlives slow
//! processing between polls; what they learn (a rebalance started, the member was fenced)
//! reaches `poll` through a `watch` channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::messages::{
    HeartbeatRequest, JoinGroupProtocol, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeavingMember, SyncGroupRequest, SyncGroupResponse,
};
use sluice_protocol::{ErrorCode, Request, Response};
use tokio::sync::watch;

use super::coordinator::{code_recovery, group_error, recovery, Recovery, COORDINATOR_BACKOFF};
use super::{fetch_committed, millis_i32, AbortOnDrop, Coordinator, GroupConfig};
use crate::backoff::Jitter;
use crate::client::unexpected;
use crate::error::{Error, Result};
use crate::TopicPartition;

/// The only group protocol a sluice consumer offers: the coordinator assigns partitions.
pub(crate) const SERVER_ASSIGNOR: &str = "server";
/// The protocol type of consumer groups.
const PROTOCOL_TYPE: &str = "consumer";
/// How much longer than the rebalance timeout a JoinGroup may take to be answered: the
/// coordinator holds it up to the rebalance timeout, then needs a moment to answer.
const JOIN_ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// Longest wait for the answer to a LeaveGroup on close: leaving only speeds the
/// rebalance up (the session timeout would remove the member anyway).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A member's place in a generation of its group: what commits and heartbeats carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Generation {
    /// The generation's id.
    pub generation_id: i32,
    /// This member's id.
    pub member_id: String,
}

impl Generation {
    /// The identity of a commit from outside group management (an `assign`ed consumer):
    /// the coordinator accepts it only while the group has no members.
    pub fn simple() -> Generation {
        Generation {
            generation_id: -1,
            member_id: String::new(),
        }
    }
}

/// Why the member must rejoin, as heartbeats and commits learn it; later reasons never
/// weaken earlier ones (`max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rejoin {
    /// A rebalance started; this member still belongs to its generation, so it commits
    /// and hands its partitions back (revoked), then rejoins with its member id.
    Rebalance,
    /// The member's generation is over without it (ILLEGAL_GENERATION): its partitions
    /// are lost, it cannot commit, and it rejoins with its member id.
    Fenced,
    /// The coordinator forgot the member (UNKNOWN_MEMBER_ID, a session that expired): its
    /// partitions are lost and it rejoins without a member id.
    UnknownMember,
}

impl Rejoin {
    /// The reason an error code from a heartbeat or a commit gives, if any.
    pub fn from_code(code: ErrorCode) -> Option<Rejoin> {
        match code {
            ErrorCode::RebalanceInProgress => Some(Rejoin::Rebalance),
            ErrorCode::IllegalGeneration => Some(Rejoin::Fenced),
            ErrorCode::UnknownMemberId | ErrorCode::FencedInstanceId => Some(Rejoin::UnknownMember),
            _ => None,
        }
    }

    /// Raises the reason signalled for generation `generation_id` to at least `reason`;
    /// a signal about an older generation is replaced.
    pub fn signal(signal: &RejoinSignal, generation_id: i32, reason: Rejoin) {
        signal.send_if_modified(|current| {
            if current.is_some_and(|(g, r)| g == generation_id && r >= reason) {
                return false;
            }
            *current = Some((generation_id, reason));
            true
        });
    }

    /// The error code that fenced a member for this reason, if it was fenced.
    pub fn fencing_code(self) -> Option<ErrorCode> {
        match self {
            Rejoin::Rebalance => None,
            Rejoin::Fenced => Some(ErrorCode::IllegalGeneration),
            Rejoin::UnknownMember => Some(ErrorCode::UnknownMemberId),
        }
    }
}

/// Where heartbeats and commits tell `poll` that the member must rejoin: the generation
/// the news is about, and why.
pub(crate) type RejoinSignal = watch::Sender<Option<(i32, Rejoin)>>;

/// What a successful join gives: the generation, the assignment, the committed offsets of
/// the assigned partitions that have one, and the generation's running heartbeat task.
#[derive(Debug)]
pub(crate) struct Joined {
    pub generation: Generation,
    pub assignment: Vec<TopicPartition>,
    pub committed: BTreeMap<TopicPartition, i64>,
    pub heartbeat: AbortOnDrop<()>,
}

/// The outcome of a join task, with the member id it ended with either way (the
/// coordinator may have given one before the join failed).
#[derive(Debug)]
pub(crate) struct JoinOutcome {
    pub member_id: String,
    pub result: Result<Joined>,
}

/// What the coordinator needs to know of the member, for joins and heartbeats.
#[derive(Clone, Debug)]
pub(crate) struct MemberParams {
    pub config: GroupConfig,
    pub topics: Vec<String>,
    /// A read_committed consumer resumes only from offsets no open transaction may still
    /// change (KIP-447): the lookup after a join waits for such a transaction to end.
    pub require_stable: bool,
}

/// Joins the group (JoinGroup, then SyncGroup), rejoining as the coordinator asks, then
/// starts the new generation's heartbeats and fetches the assignment's committed offsets.
/// Retriable failures are retried without limit (the task runs across polls and is
/// aborted when the consumer stops waiting for it); errors retrying cannot fix end it.
pub(crate) async fn join(
    coordinator: Arc<Coordinator>,
    params: Arc<MemberParams>,
    member_id: SharedMemberId,
    rejoin: RejoinSignal,
) -> JoinOutcome {
    let mut id = member_id.get();
    let result = join_inner(&coordinator, &params, &mut id, &member_id, rejoin).await;
    JoinOutcome {
        member_id: id,
        result,
    }
}

/// The member id as a join in progress knows it, so a consumer closed mid-join can still
/// leave with the id the coordinator gave (a member waiting in a join phase is otherwise
/// kept until the phase ends, delaying everyone else).
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedMemberId(Arc<std::sync::Mutex<String>>);

impl SharedMemberId {
    /// The id now (empty before the coordinator gave one).
    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the id.
    pub fn set(&self, id: &str) {
        let mut current = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if *current != id {
            *current = id.to_owned();
        }
    }
}

async fn join_inner(
    coordinator: &Arc<Coordinator>,
    params: &Arc<MemberParams>,
    member_id: &mut String,
    published: &SharedMemberId,
    rejoin: RejoinSignal,
) -> Result<Joined> {
    let mut jitter = Jitter::new();
    let mut failures = 0u32;
    loop {
        let step = join_group(coordinator, params, member_id).await;
        published.set(member_id);
        let outcome = match step? {
            Step::Done(generation) => {
                let step = sync_group(coordinator, params, generation, member_id).await;
                published.set(member_id);
                step?
            }
            other => other,
        };
        let (generation, assignment) = match outcome {
            Step::Assigned(generation, assignment) => (generation, assignment),
            Step::RejoinNow => continue,
            Step::RejoinLater => {
                failures = failures.saturating_add(1);
                tokio::time::sleep(COORDINATOR_BACKOFF.delay(failures, &mut jitter)).await;
                continue;
            }
            Step::Done(_) => unreachable!("sync_group never answers Done"),
        };
        tracing::info!(
            group = %coordinator.group_id(),
            generation = generation.generation_id,
            member = %generation.member_id,
            partitions = assignment.len(),
            "joined the group"
        );
        let heartbeat = AbortOnDrop::spawn(heartbeats(
            coordinator.clone(),
            params.config.clone(),
            generation.clone(),
            rejoin.clone(),
        ));
        // Waiting for a transaction to end may take up to its timeout: no deadline then,
        // as for the join itself.
        let deadline = if params.require_stable {
            None
        } else {
            offsets_deadline(coordinator)
        };
        let committed = fetch_committed(
            coordinator,
            Some(&assignment),
            deadline,
            params.require_stable,
        )
        .await?;
        return Ok(Joined {
            generation,
            assignment,
            committed,
            heartbeat,
        });
    }
}

/// When the offset lookup after a join gives up: one request timeout of retries.
fn offsets_deadline(coordinator: &Coordinator) -> Option<Instant> {
    Some(Instant::now() + coordinator.client().config().request_timeout)
}

/// Where one JoinGroup or SyncGroup left the member.
enum Step {
    /// JoinGroup succeeded: sync in this generation.
    Done(Generation),
    /// SyncGroup succeeded: the generation and this member's partitions.
    Assigned(Generation, Vec<TopicPartition>),
    /// Join again at once (a member id was just given or cleared, a rebalance restarted).
    RejoinNow,
    /// Join again after a backoff (a transient refusal).
    RejoinLater,
}

/// Group-level codes of JoinGroup and SyncGroup that send the member back to JoinGroup.
fn rejoin_step(code: ErrorCode, member_id: &mut String) -> Option<Step> {
    match code {
        ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration => Some(Step::RejoinNow),
        ErrorCode::UnknownMemberId => {
            member_id.clear();
            Some(Step::RejoinNow)
        }
        code if code.is_retriable() => Some(Step::RejoinLater),
        _ => None,
    }
}

/// One JoinGroup. The coordinator holds the answer until the join phase completes, so the
/// wait is the rebalance timeout and a margin.
async fn join_group(
    coordinator: &Coordinator,
    params: &MemberParams,
    member_id: &mut String,
) -> Result<Step> {
    let config = &params.config;
    let request = Request::JoinGroup(JoinGroupRequest {
        group_id: config.group_id.clone(),
        session_timeout_ms: millis_i32(config.session_timeout),
        rebalance_timeout_ms: millis_i32(config.rebalance_timeout),
        member_id: member_id.clone(),
        group_instance_id: None,
        protocol_type: PROTOCOL_TYPE.to_owned(),
        subscribed_topics: params.topics.clone(),
        protocols: vec![JoinGroupProtocol {
            name: SERVER_ASSIGNOR.to_owned(),
            metadata: Bytes::new(),
        }],
    });
    let context = format!("joining group \"{}\"", config.group_id);
    let timeout = config.rebalance_timeout + JOIN_ANSWER_MARGIN;
    let response: JoinGroupResponse = coordinator
        .call(request, timeout, None, |r| match r {
            Response::JoinGroup(j) => {
                coordinator_code(&context, j.error_code, &j.error_message).map(|()| j)
            }
            other => Err(unexpected("JoinGroup", &other)),
        })
        .await?;
    match response.error_code {
        ErrorCode::None => {
            *member_id = response.member_id.clone();
            let protocol = response.protocol_name.as_deref().unwrap_or_default();
            if protocol != SERVER_ASSIGNOR {
                return Err(Error::Protocol {
                    addr: "the group coordinator".to_owned(),
                    reason: format!(
                        "{context}: the coordinator chose protocol \"{protocol}\", but this consumer offers only \"{SERVER_ASSIGNOR}\""
                    ),
                });
            }
            Ok(Step::Done(Generation {
                generation_id: response.generation_id,
                member_id: response.member_id,
            }))
        }
        // KIP-394: the first join only obtains a member id; join again with it at once.
        ErrorCode::MemberIdRequired => {
            *member_id = response.member_id;
            Ok(Step::RejoinNow)
        }
        // The group is writing its new generation: join again in a moment, when the
        // coordinator holds joins again (an immediate retry would spin).
        ErrorCode::RebalanceInProgress => Ok(Step::RejoinLater),
        code => rejoin_step(code, member_id)
            .ok_or_else(|| group_error(&context, code, response.error_message)),
    }
}

/// One SyncGroup: this member's assignment in `generation`.
async fn sync_group(
    coordinator: &Coordinator,
    params: &MemberParams,
    generation: Generation,
    member_id: &mut String,
) -> Result<Step> {
    let config = &params.config;
    let request = Request::SyncGroup(SyncGroupRequest {
        group_id: config.group_id.clone(),
        generation_id: generation.generation_id,
        member_id: generation.member_id.clone(),
        group_instance_id: None,
        assignments: Vec::new(),
    });
    let context = format!("syncing group \"{}\"", config.group_id);
    let timeout = coordinator.client().config().request_timeout;
    let response: SyncGroupResponse = coordinator
        .call(request, timeout, None, |r| match r {
            Response::SyncGroup(s) => {
                coordinator_code(&context, s.error_code, &s.error_message).map(|()| s)
            }
            other => Err(unexpected("SyncGroup", &other)),
        })
        .await?;
    if response.error_code == ErrorCode::None {
        let assignment = super::flatten_assignment(response.assignment);
        return Ok(Step::Assigned(generation, assignment));
    }
    rejoin_step(response.error_code, member_id)
        .ok_or_else(|| group_error(&context, response.error_code, response.error_message))
}

/// `Err` for a group-level code that [`Coordinator::call`] recovers from (the coordinator
/// moved or is loading), `Ok` for NONE and every code the caller handles itself.
pub(crate) fn coordinator_code(
    context: &str,
    code: ErrorCode,
    message: &Option<String>,
) -> Result<()> {
    match code_recovery(code) {
        Some(_) => Err(group_error(context, code, message.clone())),
        None => Ok(()),
    }
}

/// The heartbeats of one generation, every `heartbeat_interval` until the task is aborted
/// (the consumer starts a join, closes, or is dropped) or the member learns it was fenced.
/// A rebalance is signalled but heartbeats go on, so the session lives while the user
/// commits before handing partitions back. A coordinator that moved is found again and
/// the heartbeat retried sooner.
async fn heartbeats(
    coordinator: Arc<Coordinator>,
    config: GroupConfig,
    generation: Generation,
    rejoin: RejoinSignal,
) {
    let request = Request::Heartbeat(HeartbeatRequest {
        group_id: config.group_id.clone(),
        generation_id: generation.generation_id,
        member_id: generation.member_id.clone(),
        group_instance_id: None,
    });
    // An answer later than the session timeout is worthless: the member is gone by then.
    let timeout = config
        .session_timeout
        .min(coordinator.client().config().request_timeout);
    let mut jitter = Jitter::new();
    let mut failures = 0u32;
    let mut wait = config.heartbeat_interval;
    loop {
        tokio::time::sleep(wait).await;
        wait = config.heartbeat_interval;
        let code = match coordinator.send(&request, timeout).await {
            Ok(Response::Heartbeat(h)) => h.error_code,
            Ok(other) => {
                tracing::warn!(error = %unexpected("Heartbeat", &other), "heartbeat failed");
                continue;
            }
            Err(e) => match recovery(&e) {
                Some(what) => {
                    if what == Recovery::Rediscover {
                        coordinator.forget();
                    }
                    failures = failures.saturating_add(1);
                    wait = COORDINATOR_BACKOFF
                        .delay(failures, &mut jitter)
                        .min(config.heartbeat_interval);
                    tracing::debug!(group = %config.group_id, error = %e, "heartbeat failed; retrying");
                    continue;
                }
                None => e.code().unwrap_or(ErrorCode::Unknown(-1)),
            },
        };
        if let Some(what) = code_recovery(code) {
            if what == Recovery::Rediscover {
                coordinator.forget();
            }
            failures = failures.saturating_add(1);
            wait = COORDINATOR_BACKOFF
                .delay(failures, &mut jitter)
                .min(config.heartbeat_interval);
            continue;
        }
        failures = 0;
        match Rejoin::from_code(code) {
            None if code == ErrorCode::None => {}
            None => {
                tracing::warn!(group = %config.group_id, %code, "unexpected heartbeat answer");
            }
            Some(reason) => {
                tracing::info!(group = %config.group_id, %code, "the group is rebalancing; rejoining at the next poll");
                Rejoin::signal(&rejoin, generation.generation_id, reason);
                if reason != Rejoin::Rebalance {
                    return; // fenced: this generation's heartbeats are pointless now
                }
            }
        }
    }
}

/// Leaves the group (LeaveGroup), one try: leaving only hastens the rebalance, which the
/// session timeout would start anyway. Failures are logged.
pub(crate) async fn leave(coordinator: &Coordinator, member_id: &str, reason: &str) {
    let request = Request::LeaveGroup(LeaveGroupRequest {
        group_id: coordinator.group_id().to_owned(),
        members: vec![LeavingMember {
            member_id: member_id.to_owned(),
            group_instance_id: None,
            reason: Some(reason.to_owned()),
        }],
    });
    let timeout = LEAVE_TIMEOUT.min(coordinator.client().config().request_timeout);
    let outcome = tokio::time::timeout(timeout, coordinator.send(&request, timeout)).await;
    let code = match outcome {
        Ok(Ok(Response::LeaveGroup(r))) => r
            .members
            .iter()
            .map(|m| m.error_code)
            .find(|&c| c != ErrorCode::None)
            .unwrap_or(r.error_code),
        Ok(Ok(other)) => {
            tracing::warn!(error = %unexpected("LeaveGroup", &other), "leaving the group failed");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(group = %coordinator.group_id(), error = %e, "leaving the group failed; the session timeout will remove this member");
            return;
        }
        Err(_) => {
            tracing::warn!(group = %coordinator.group_id(), "no answer to LeaveGroup; the session timeout will remove this member");
            return;
        }
    };
    if code == ErrorCode::None {
        tracing::info!(group = %coordinator.group_id(), member = member_id, "left the group");
    } else {
        tracing::warn!(group = %coordinator.group_id(), %code, "leaving the group was refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejoin_reasons_only_grow_within_a_generation() {
        let (tx, rx) = watch::channel(None);
        Rejoin::signal(&tx, 3, Rejoin::Fenced);
        Rejoin::signal(&tx, 3, Rejoin::Rebalance);
        assert_eq!(*rx.borrow(), Some((3, Rejoin::Fenced)));
        Rejoin::signal(&tx, 3, Rejoin::UnknownMember);
        assert_eq!(*rx.borrow(), Some((3, Rejoin::UnknownMember)));
        Rejoin::signal(&tx, 4, Rejoin::Rebalance);
        assert_eq!(*rx.borrow(), Some((4, Rejoin::Rebalance)));
        assert_eq!(
            Rejoin::from_code(ErrorCode::IllegalGeneration),
            Some(Rejoin::Fenced)
        );
        assert_eq!(Rejoin::from_code(ErrorCode::None), None);
    }

    #[test]
    fn join_and_sync_refusals_say_whether_to_rejoin() {
        let check = |code, expect_rejoin: bool, clears_id: bool| {
            let mut id = "m-1".to_owned();
            assert_eq!(
                rejoin_step(code, &mut id).is_some(),
                expect_rejoin,
                "{code}"
            );
            assert_eq!(id.is_empty(), clears_id, "{code}");
        };
        check(ErrorCode::RebalanceInProgress, true, false);
        check(ErrorCode::IllegalGeneration, true, false);
        check(ErrorCode::UnknownMemberId, true, true);
        check(ErrorCode::InvalidGroupId, false, false);
        check(ErrorCode::GroupMaxSizeReached, false, false);
    }
}
