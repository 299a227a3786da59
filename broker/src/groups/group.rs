//! One consumer group's state machine: membership, generations, server-side round-robin
//! assignment, and committed offsets. Pure and synchronous: time comes in as `now`, the
//! partitions of subscribed topics through a lookup, and what must become durable goes out
//! as a [`GroupValue`] for the coordinator to write to `__consumer_offsets`. The states
//! and their transitions are Kafka's "classic" group protocol:
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all rejoined / timeout──▶ CompletingRebalance
//!     ▲                  ▲                                           │ (generation written)
//!     └── no members ────┴──── join, leave, expiry, topic change ◀── Stable
//! ```
//!
//! PreparingRebalance holds every JoinGroup answer until each known member has rejoined
//! (or the rebalance timeout evicts the missing ones); a new group first waits the initial
//! delay so members starting together land in one generation. Completing the join phase
//! bumps the generation and computes the assignment; CompletingRebalance lasts while that
//! generation is written, and the joins are answered once it is durable, so a new
//! coordinator after a failover resumes the same generation. Sluice assigns on the
//! coordinator, so SyncGroup only returns the member's share.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use sluice_protocol::group_log::{GroupValue, MemberValue, OffsetValue};
use sluice_protocol::messages::{DescribedGroupMember, TopicPartitions};
use sluice_protocol::{ErrorCode, Offset, PartitionId};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// The protocol name of sluice's server-side assignment.
pub const SERVER_ASSIGNOR: &str = "server";

/// Where a group is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members (committed offsets may remain).
    Empty,
    /// Waiting for the members to (re)join.
    PreparingRebalance,
    /// A new generation is being written.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted, or its coordinator moved: requests must find the coordinator again.
    Dead,
}

impl GroupState {
    /// Kafka's name of the state, as `group describe` shows it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup carries, in service terms.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// Empty on a first join.
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// Protocol names the member supports.
    pub protocols: Vec<String>,
    pub subscription: Vec<String>,
}

/// A successful join: the member's generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub generation: i32,
    pub member_id: String,
    pub leader: String,
}

/// How a join is answered.
#[derive(Debug)]
pub enum JoinOutcome {
    /// At once.
    Now(Result<Joined, ApiError>),
    /// A first join: the member must join again with this id (KIP-394), so a join whose
    /// answer is lost leaves no member behind.
    MemberIdRequired(String),
    /// When the join phase completes.
    Later(oneshot::Receiver<Result<Joined, ApiError>>),
}

/// Timing settings of the coordinator.
#[derive(Clone, Copy, Debug)]
pub struct GroupTimings {
    /// How long a new group waits for more members (extended by each joiner, up to the
    /// rebalance timeout).
    pub initial_delay: Duration,
}

/// A committed offset and where its record sits in `__consumer_offsets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub value: OffsetValue,
    /// The record's offset: of two commits of one partition, the later record wins even
    /// if its append completed first.
    pub log_offset: Offset,
}

#[derive(Debug)]
struct Member {
    id: String,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    subscription: Vec<String>,
    assignment: Vec<TopicPartitions>,
    session_deadline: Instant,
    /// A held JoinGroup answer, while the join phase runs.
    pending_join: Option<oneshot::Sender<Result<Joined, ApiError>>>,
}

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, until their owner joins with them.
    awaiting_ids: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    initial_delay_until: Option<Instant>,
    /// A change arrived while a generation was being written: rebalance once it is.
    rebalance_after_write: bool,
    /// The partitions the current assignment covers, to see topics grow or vanish.
    assigned_partitions: Vec<(String, PartitionId)>,
    offsets: BTreeMap<(String, PartitionId), Committed>,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_owned(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            awaiting_ids: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            rebalance_after_write: false,
            assigned_partitions: Vec::new(),
            offsets: BTreeMap::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> &str {
        &self.protocol_type
    }

    pub fn protocol_name(&self) -> &str {
        self.protocol_name.as_deref().unwrap_or("")
    }

    /// Members of the current generation (and joiners).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether there is nothing left to keep: no members and no committed offsets.
    pub fn is_forgettable(&self) -> bool {
        self.members.is_empty() && self.awaiting_ids.is_empty() && self.offsets.is_empty()
    }

    /// The members as DescribeGroups shows them.
    pub fn describe_members(&self) -> Vec<DescribedGroupMember> {
        self.members
            .values()
            .map(|m| DescribedGroupMember {
                member_id: m.id.clone(),
                group_instance_id: None,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscription: m.subscription.clone(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    /// A member joins or rejoins.
    pub fn join(
        &mut self,
        request: JoinRequest,
        now: Instant,
        timings: GroupTimings,
    ) -> JoinOutcome {
        let refuse =
            |code: ErrorCode, message: String| JoinOutcome::Now(Err(ApiError::new(code, message)));
        if self.state == GroupState::Dead {
            return refuse(
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "group {:?} is being deleted or moved; find its coordinator again",
                    self.id
                ),
            );
        }
        if !self.members.is_empty() && request.protocol_type != self.protocol_type {
            return refuse(
                ErrorCode::InconsistentGroupProtocol,
                format!(
                    "group {:?} has protocol type {:?}, not {:?}",
                    self.id, self.protocol_type, request.protocol_type
                ),
            );
        }
        if !request.protocols.is_empty() && !request.protocols.iter().any(|p| p == SERVER_ASSIGNOR)
        {
            return refuse(
                ErrorCode::InconsistentGroupProtocol,
                format!(
                    "sluice assigns partitions on the coordinator (protocol {SERVER_ASSIGNOR:?}); \
                     the member offers only {:?}",
                    request.protocols
                ),
            );
        }
        if self.state == GroupState::CompletingRebalance {
            return refuse(
                ErrorCode::RebalanceInProgress,
                format!("group {:?} is completing a rebalance; join again", self.id),
            );
        }
        if request.member_id.is_empty() {
            let id = format!("{}-{}", request.client_id, crate::metadata::random_id());
            self.awaiting_ids
                .insert(id.clone(), now + request.session_timeout);
            return JoinOutcome::MemberIdRequired(id);
        }
        let (tx, rx) = oneshot::channel();
        if let Some(member) = self.members.get_mut(&request.member_id) {
            let unchanged = member.subscription == request.subscription;
            member.client_id = request.client_id;
            member.client_host = request.client_host;
            member.session_timeout = request.session_timeout;
            member.rebalance_timeout = request.rebalance_timeout;
            member.subscription = request.subscription;
            member.session_deadline = now + member.session_timeout;
            if self.state == GroupState::Stable && unchanged {
                // A member that lost its answer: it is still in this generation.
                return JoinOutcome::Now(Ok(Joined {
                    generation: self.generation,
                    member_id: member.id.clone(),
                    leader: self.leader.clone().unwrap_or_default(),
                }));
            }
            member.pending_join = Some(tx);
        } else if self.awaiting_ids.remove(&request.member_id).is_some() {
            self.protocol_type = request.protocol_type.clone();
            let member = Member {
                id: request.member_id.clone(),
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout: request.session_timeout,
                rebalance_timeout: request.rebalance_timeout,
                subscription: request.subscription,
                assignment: Vec::new(),
                session_deadline: now + request.session_timeout,
                pending_join: Some(tx),
            };
            self.members.insert(member.id.clone(), member);
            if let Some(until) = self.initial_delay_until {
                // Members starting together: wait a little longer for the next one.
                let extended = now + timings.initial_delay;
                let cap = self.rebalance_deadline.unwrap_or(extended);
                self.initial_delay_until = Some(until.max(extended.min(cap)));
            }
        } else {
            return refuse(
                ErrorCode::UnknownMemberId,
                format!(
                    "member {:?} is not in group {:?} (its session expired or it left); join \
                     again without a member id",
                    request.member_id, self.id
                ),
            );
        }
        match self.state {
            GroupState::Empty => self.start_rebalance(now, Some(timings.initial_delay)),
            GroupState::Stable => self.start_rebalance(now, None),
            _ => {}
        }
        JoinOutcome::Later(rx)
    }

    /// Moves to PreparingRebalance; `initial_delay` for a group that had no members.
    fn start_rebalance(&mut self, now: Instant, initial_delay: Option<Duration>) {
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let deadline = now + longest;
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(deadline);
        self.initial_delay_until = initial_delay.map(|d| (now + d).min(deadline));
    }

    /// Something changed that needs a new generation: a leave, an expiry, a topic change.
    fn request_rebalance(&mut self, now: Instant) {
        match self.state {
            GroupState::Stable | GroupState::Empty => self.start_rebalance(now, None),
            GroupState::CompletingRebalance => self.rebalance_after_write = true,
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
    }

    /// Whether the join phase is over: every member rejoined (after the initial delay), or
    /// the rebalance timeout passed.
    pub fn join_phase_done(&self, now: Instant) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let all_joined = self.members.values().all(|m| m.pending_join.is_some());
        let delay_over = self.initial_delay_until.is_none_or(|t| now >= t);
        (all_joined && delay_over) || self.rebalance_deadline.is_some_and(|t| now >= t)
    }

    /// Ends the join phase: members that did not rejoin are removed, the generation is
    /// bumped and the partitions of the subscribed topics (`partitions_of`: a topic's
    /// partition count, `None` if it does not exist) are assigned round-robin. Returns the
    /// generation to write; answer the joins with [`Group::written`] once it is durable.
    pub fn complete_join(&mut self, partitions_of: &dyn Fn(&str) -> Option<u32>) -> GroupValue {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.pending_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %self.id, member = %id, "removing a member that did not rejoin in time");
            self.members.remove(&id);
        }
        self.generation += 1;
        self.state = GroupState::CompletingRebalance;
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.assigned_partitions.clear();
        } else {
            self.protocol_name = Some(SERVER_ASSIGNOR.to_owned());
            let leader_stays = self
                .leader
                .as_ref()
                .is_some_and(|l| self.members.contains_key(l));
            if !leader_stays {
                self.leader = self.members.keys().next().cloned();
            }
            self.assigned_partitions = self.subscribed_partitions(partitions_of);
            let subscriptions: Vec<(&str, &[String])> = self
                .members
                .values()
                .map(|m| (m.id.as_str(), m.subscription.as_slice()))
                .collect();
            let mut shares = round_robin(&subscriptions, &self.assigned_partitions);
            for member in self.members.values_mut() {
                member.assignment = shares.remove(&member.id).unwrap_or_default();
            }
        }
        self.to_value()
    }

    /// The generation from [`Group::complete_join`] was written (or failed to be): answer
    /// the held joins. A failed write fails them (the members find the coordinator again
    /// and rejoin).
    pub fn written(&mut self, generation: i32, outcome: Result<(), ApiError>, now: Instant) {
        if self.generation != generation || self.state != GroupState::CompletingRebalance {
            return;
        }
        match outcome {
            Ok(()) => {
                self.state = if self.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
                let leader = self.leader.clone().unwrap_or_default();
                for member in self.members.values_mut() {
                    member.session_deadline = now + member.session_timeout;
                    if let Some(tx) = member.pending_join.take() {
                        let _ = tx.send(Ok(Joined {
                            generation,
                            member_id: member.id.clone(),
                            leader: leader.clone(),
                        }));
                    }
                }
                if std::mem::take(&mut self.rebalance_after_write) {
                    self.request_rebalance(now);
                }
            }
            Err(e) => {
                tracing::warn!(group = %self.id, generation, "writing the generation failed: {}", e.message);
                for member in self.members.values_mut() {
                    member.session_deadline = now + member.session_timeout;
                    if let Some(tx) = member.pending_join.take() {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                self.rebalance_after_write = false;
                self.start_rebalance(now, None);
            }
        }
    }

    /// Heartbeat: keeps the session; tells the member to rejoin during a rebalance.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), ApiError> {
        self.check_member(member_id, generation, now)?;
        match self.state {
            GroupState::PreparingRebalance => Err(self.rebalancing()),
            _ => Ok(()),
        }
    }

    /// SyncGroup: the member's share of the generation.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<Vec<TopicPartitions>, ApiError> {
        self.check_member(member_id, generation, now)?;
        match self.state {
            GroupState::Stable => Ok(self.members[member_id].assignment.clone()),
            _ => Err(self.rebalancing()),
        }
    }

    /// LeaveGroup for one member (or an id handed out and never used).
    pub fn leave(&mut self, member_id: &str, now: Instant) -> Result<(), ApiError> {
        if self.awaiting_ids.remove(member_id).is_some() {
            return Ok(());
        }
        let Some(member) = self.members.remove(member_id) else {
            return Err(self.unknown_member(member_id));
        };
        tracing::info!(group = %self.id, member = %member_id, "member left");
        if let Some(tx) = member.pending_join {
            let _ = tx.send(Err(self.unknown_member(member_id)));
        }
        self.request_rebalance(now);
        Ok(())
    }

    /// Whether a commit from this member may be written now. `generation` -1 with an empty
    /// member id is a commit outside group management, allowed only while nobody consumes
    /// in the group (it would fight the members' own commits).
    pub fn check_commit(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), ApiError> {
        if generation < 0 && member_id.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(ApiError::new(
                ErrorCode::UnknownMemberId,
                format!(
                    "group {:?} has {} active member(s); commit as a member of the group, or \
                     stop its consumers first",
                    self.id,
                    self.members.len()
                ),
            ));
        }
        self.check_member(member_id, generation, now)?;
        match self.state {
            // A member of the current generation commits before it gives partitions up.
            GroupState::Stable | GroupState::PreparingRebalance => Ok(()),
            _ => Err(self.rebalancing()),
        }
    }

    fn check_member(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), ApiError> {
        let current = self.generation;
        let id = self.id.clone();
        let Some(member) = self.members.get_mut(member_id) else {
            return Err(self.unknown_member(member_id));
        };
        if generation != current {
            return Err(ApiError::new(
                ErrorCode::IllegalGeneration,
                format!(
                    "member {member_id:?} of group {id:?} is at generation {generation}, the \
                     group at {current}; it was fenced by a rebalance and must rejoin"
                ),
            ));
        }
        member.session_deadline = now + member.session_timeout;
        Ok(())
    }

    fn unknown_member(&self, member_id: &str) -> ApiError {
        ApiError::new(
            ErrorCode::UnknownMemberId,
            format!(
                "member {member_id:?} is not in group {:?} (its session expired or it left); \
                 join again without a member id",
                self.id
            ),
        )
    }

    fn rebalancing(&self) -> ApiError {
        ApiError::new(
            ErrorCode::RebalanceInProgress,
            format!("group {:?} is rebalancing; rejoin", self.id),
        )
    }

    /// Time passes: expired sessions and member ids are dropped, a topic whose partitions
    /// changed triggers a rebalance. Returns whether the join phase is now done.
    pub fn tick(&mut self, now: Instant, partitions_of: &dyn Fn(&str) -> Option<u32>) -> bool {
        self.awaiting_ids.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.pending_join.is_none() && m.session_deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        // During the write of a generation the sessions are not judged: joins are held.
        if self.state != GroupState::CompletingRebalance {
            for id in expired {
                tracing::info!(group = %self.id, member = %id, "member session expired");
                self.members.remove(&id);
                self.request_rebalance(now);
            }
        }
        if self.state == GroupState::Stable
            && self.subscribed_partitions(partitions_of) != self.assigned_partitions
        {
            tracing::info!(group = %self.id, "subscribed topics changed; rebalancing");
            self.request_rebalance(now);
        }
        self.join_phase_done(now)
    }

    /// Every partition of the topics some member subscribes to, sorted by (topic, index).
    fn subscribed_partitions(
        &self,
        partitions_of: &dyn Fn(&str) -> Option<u32>,
    ) -> Vec<(String, PartitionId)> {
        let topics: BTreeSet<&String> = self
            .members
            .values()
            .flat_map(|m| &m.subscription)
            .collect();
        topics
            .into_iter()
            .flat_map(|topic| {
                let n = partitions_of(topic).unwrap_or(0);
                (0..n).map(move |i| (topic.clone(), PartitionId(i as i32)))
            })
            .collect()
    }

    /// The group's metadata record.
    pub fn to_value(&self) -> GroupValue {
        GroupValue {
            protocol_type: self.protocol_type.clone(),
            generation: self.generation,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: None,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: duration_ms(m.rebalance_timeout),
                    session_timeout_ms: duration_ms(m.session_timeout),
                    subscription: m.subscription.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Rebuilds the group from its metadata record (a coordinator loading its partition).
    /// Members get a full session from `now` to find the new coordinator.
    pub fn load(
        &mut self,
        value: GroupValue,
        now: Instant,
        partitions_of: &dyn Fn(&str) -> Option<u32>,
    ) {
        self.generation = value.generation;
        self.protocol_type = value.protocol_type;
        self.protocol_name = value.protocol_name;
        self.leader = value.leader;
        self.members = value
            .members
            .into_iter()
            .map(|m| {
                let session_timeout = ms_duration(m.session_timeout_ms);
                let member = Member {
                    id: m.member_id.clone(),
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout,
                    rebalance_timeout: ms_duration(m.rebalance_timeout_ms),
                    subscription: m.subscription,
                    assignment: m.assignment,
                    session_deadline: now + session_timeout,
                    pending_join: None,
                };
                (m.member_id, member)
            })
            .collect();
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.assigned_partitions = self.subscribed_partitions(partitions_of);
    }

    /// Forgets the group's membership (its metadata record was deleted).
    pub fn unload_members(&mut self) {
        self.members.clear();
        self.state = GroupState::Empty;
    }

    /// The group's end: deleted, or its coordinator moved. Held joins are answered so
    /// their members look for the coordinator again.
    pub fn kill(&mut self, why: &ApiError) {
        self.state = GroupState::Dead;
        for member in self.members.values_mut() {
            if let Some(tx) = member.pending_join.take() {
                let _ = tx.send(Err(why.clone()));
            }
        }
    }

    /// Applies an offset record (or its tombstone) at `log_offset`; an older record than
    /// the one applied loses.
    pub fn apply_offset(
        &mut self,
        topic: String,
        partition: PartitionId,
        value: Option<OffsetValue>,
        log_offset: Offset,
    ) {
        let key = (topic, partition);
        if self
            .offsets
            .get(&key)
            .is_some_and(|c| c.log_offset > log_offset)
        {
            return;
        }
        match value {
            Some(value) => {
                self.offsets.insert(key, Committed { value, log_offset });
            }
            None => {
                self.offsets.remove(&key);
            }
        }
    }

    /// A partition's committed offset.
    pub fn committed(&self, topic: &str, partition: PartitionId) -> Option<&Committed> {
        self.offsets.get(&(topic.to_owned(), partition))
    }

    /// Every committed offset, by topic and partition.
    pub fn all_committed(&self) -> &BTreeMap<(String, PartitionId), Committed> {
        &self.offsets
    }
}

/// Kafka's RoundRobinAssignor: partitions in (topic, index) order go to the members in
/// member-id order, circularly, each to the next member subscribed to its topic.
/// `members` must be sorted by id.
pub fn round_robin(
    members: &[(&str, &[String])],
    partitions: &[(String, PartitionId)],
) -> HashMap<String, Vec<TopicPartitions>> {
    let mut shares: HashMap<String, Vec<TopicPartitions>> = members
        .iter()
        .map(|(id, _)| ((*id).to_owned(), Vec::new()))
        .collect();
    let mut next = 0;
    for (topic, partition) in partitions {
        let n = members.len();
        let Some(k) = (0..n).find(|k| members[(next + k) % n].1.contains(topic)) else {
            continue;
        };
        let chosen = (next + k) % n;
        next = chosen + 1;
        let share = shares
            .get_mut(members[chosen].0)
            .expect("every member has a share");
        match share.last_mut() {
            Some(last) if &last.topic == topic => last.partitions.push(*partition),
            _ => share.push(TopicPartitions {
                topic: topic.clone(),
                partitions: vec![*partition],
            }),
        }
    }
    shares
}

fn duration_ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn ms_duration(ms: i32) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests;
