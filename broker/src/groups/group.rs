//! One consumer group's state machine: membership, generations, assignment, and committed
//! offsets. Pure and synchronous: time comes in as `now`, the partitions of subscribed
//! topics through a lookup, and what must become durable goes out as a [`GroupValue`] for
//! the coordinator to write to `__consumer_offsets`. The states and their transitions are
//! Kafka's "classic" group protocol:
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
//! bumps the generation and picks the protocol every member supports (each member votes
//! for its first supported one, as Kafka does). Then one of two things:
//!
//! - **Server-side assignment** (protocol `server`, what sluice's own clients offer): the
//!   coordinator assigns round-robin at once; CompletingRebalance lasts while that
//!   generation is written, and the joins are answered once it is durable, so a new
//!   coordinator after a failover resumes the same generation. SyncGroup only returns the
//!   member's share.
//! - **Client-side assignment** (any other protocol: Kafka clients' `range`,
//!   `roundrobin`, `cooperative-sticky`...): the joins are answered at once, the leader
//!   member with every member's metadata; CompletingRebalance lasts until the leader's
//!   SyncGroup brings the assignments (the other members' SyncGroups are held meanwhile),
//!   then while the generation with those assignments is written; the held SyncGroups get
//!   their member's bytes, verbatim. A leader that does not sync within the rebalance
//!   timeout is removed with every member that did not sync, and the group rebalances.
//!
//! Native and Kafka members of one group never mix: they share no protocol, so the second
//! kind is refused with INCONSISTENT_GROUP_PROTOCOL. Committed offsets are the group's
//! whichever listener commits them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::group_log::{GroupValue, MemberValue, OffsetValue};
use sluice_protocol::messages::TopicPartitions;
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
    /// A new generation is being written, or (client-side assignment) waits for the
    /// leader's assignment.
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
    /// A static member's instance id (kept and shown; membership stays dynamic).
    pub group_instance_id: Option<String>,
    /// The client id of the request.
    pub client_id: String,
    /// The host the member connects from.
    pub client_host: String,
    /// How long the member may stay silent.
    pub session_timeout: Duration,
    /// How long a rebalance waits for it.
    pub rebalance_timeout: Duration,
    /// The kind of group (`consumer`).
    pub protocol_type: String,
    /// The protocols the member supports, in order of preference, each with the member's
    /// metadata for it.
    pub protocols: Vec<(String, Bytes)>,
    /// The topics the member subscribes to, where known (server-side assignment uses
    /// them; for client-side assignment they are only shown).
    pub subscription: Vec<String>,
    /// Whether a first join gets MEMBER_ID_REQUIRED (KIP-394, JoinGroup v4 and later) or
    /// joins at once with a new id.
    pub require_known_member_id: bool,
}

/// A member as the leader of a client-side assignment sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinedMember {
    /// The member's id.
    pub member_id: String,
    /// Its static instance id, if any.
    pub group_instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A successful join: the member's generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// The new generation.
    pub generation: i32,
    /// The member's id.
    pub member_id: String,
    /// The leader member's id.
    pub leader: String,
    /// The protocol chosen for the generation.
    pub protocol_name: Option<String>,
    /// Every member with its metadata: only for the leader of a client-side assignment.
    pub members: Vec<JoinedMember>,
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

/// A member's share of a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberAssignment {
    /// Partitions the coordinator assigned (server-side assignment).
    Partitions(Vec<TopicPartitions>),
    /// The bytes the leader member sent for it (client-side assignment), verbatim.
    Opaque(Bytes),
}

impl Default for MemberAssignment {
    fn default() -> MemberAssignment {
        MemberAssignment::Partitions(Vec::new())
    }
}

/// How a SyncGroup is answered.
#[derive(Debug)]
pub enum SyncOutcome {
    /// At once.
    Now(Result<MemberAssignment, ApiError>),
    /// When the leader's assignment is written (or fails to be).
    Later(oneshot::Receiver<Result<MemberAssignment, ApiError>>),
    /// The leader brought the assignment: write `value`, report with
    /// [`Group::sync_written`], then the answer arrives on the receiver.
    Write {
        /// The generation with its assignments.
        value: GroupValue,
        /// The leader's own answer.
        answer: oneshot::Receiver<Result<MemberAssignment, ApiError>>,
    },
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
    /// The committed offset, its epoch and metadata.
    pub value: OffsetValue,
    /// The record's offset: of two commits of one partition, the later record wins even
    /// if its append completed first.
    pub log_offset: Offset,
}

/// A member as DescribeGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member's id.
    pub member_id: String,
    /// Its static instance id, if any.
    pub group_instance_id: Option<String>,
    /// The client id it joined with.
    pub client_id: String,
    /// The host it joined from.
    pub client_host: String,
    /// Its subscription, where known.
    pub subscription: Vec<String>,
    /// Its metadata for the group's protocol (client-side assignment).
    pub metadata: Bytes,
    /// Its share of the generation.
    pub assignment: MemberAssignment,
}

/// Where a group completing a rebalance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Completing {
    /// The generation (server-side assignment) or the leader's assignment (client-side)
    /// is being written; joins are held, syncs too.
    Writing,
    /// Client-side assignment: joins answered, waiting until this time for the leader's
    /// SyncGroup.
    AwaitingSync { deadline: Instant },
}

#[derive(Debug)]
struct Member {
    id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    subscription: Vec<String>,
    assignment: MemberAssignment,
    session_deadline: Instant,
    /// A held JoinGroup answer, while the join phase runs.
    pending_join: Option<oneshot::Sender<Result<Joined, ApiError>>>,
    /// A held SyncGroup answer, while the leader's assignment is awaited or written.
    pending_sync: Option<oneshot::Sender<Result<MemberAssignment, ApiError>>>,
}

impl Member {
    /// Its metadata for `protocol`.
    fn metadata(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| Some(name.as_str()) == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    id: String,
    state: GroupState,
    /// Set while `state` is CompletingRebalance.
    completing: Option<Completing>,
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
    /// The partitions the current assignment covers, to see topics grow or vanish
    /// (server-side assignment only: Kafka clients watch their own topics).
    assigned_partitions: Vec<(String, PartitionId)>,
    offsets: BTreeMap<(String, PartitionId), Committed>,
    /// Offsets written in transactions (TxnOffsetCommit) whose markers have not been
    /// written yet, by producer id: invisible until a commit marker applies them.
    pending_txn: HashMap<i64, BTreeMap<(String, PartitionId), Committed>>,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_owned(),
            state: GroupState::Empty,
            completing: None,
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
            pending_txn: HashMap::new(),
        }
    }

    /// The group's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the group is in its life.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// The current generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The kind of group (`consumer`), empty for a group that never had members.
    pub fn protocol_type(&self) -> &str {
        &self.protocol_type
    }

    /// The protocol of the current generation, empty if none.
    pub fn protocol_name(&self) -> &str {
        self.protocol_name.as_deref().unwrap_or("")
    }

    /// Members of the current generation (and joiners).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether there is nothing left to keep: no members, no committed offsets and none a
    /// transaction may still commit.
    pub fn is_forgettable(&self) -> bool {
        self.members.is_empty()
            && self.awaiting_ids.is_empty()
            && self.offsets.is_empty()
            && self.pending_txn.is_empty()
    }

    /// Whether the coordinator assigns the partitions (sluice's own clients).
    fn is_server_assigned(&self) -> bool {
        self.protocol_name.as_deref() == Some(SERVER_ASSIGNOR)
    }

    /// The members as DescribeGroups shows them.
    pub fn describe_members(&self) -> Vec<MemberDescription> {
        let protocol = self.protocol_name.as_deref();
        self.members
            .values()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscription: m.subscription.clone(),
                metadata: m.metadata(protocol),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    /// Why `request` cannot join next to the current members, if it cannot: another
    /// protocol type, or no protocol in common with every other member.
    fn check_protocols(&self, request: &JoinRequest) -> Result<(), ApiError> {
        let inconsistent =
            |message: String| Err(ApiError::new(ErrorCode::InconsistentGroupProtocol, message));
        if request.protocols.is_empty() || request.protocol_type.is_empty() {
            return inconsistent(format!(
                "a member of group {:?} must offer a protocol type and at least one protocol",
                self.id
            ));
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.id != request.member_id)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        if request.protocol_type != self.protocol_type {
            return inconsistent(format!(
                "group {:?} has protocol type {:?}, not {:?}",
                self.id, self.protocol_type, request.protocol_type
            ));
        }
        let common = |name: &str| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(p, _)| p == name))
        };
        if request.protocols.iter().any(|(name, _)| common(name)) {
            return Ok(());
        }
        let theirs: Vec<&str> = others[0]
            .protocols
            .iter()
            .map(|(p, _)| p.as_str())
            .collect();
        let offered: Vec<&str> = request.protocols.iter().map(|(p, _)| p.as_str()).collect();
        let server = |names: &[&str]| names.contains(&SERVER_ASSIGNOR);
        let message = if server(&theirs) && !server(&offered) {
            format!(
                "group {:?} is consumed by sluice clients, which the broker assigns partitions \
                 to; a Kafka client (assignors {offered:?}) cannot join it: use another group id",
                self.id
            )
        } else if server(&offered) && !server(&theirs) {
            format!(
                "group {:?} is consumed by Kafka clients (assignors {theirs:?}); a sluice \
                 client cannot join it: use another group id",
                self.id
            )
        } else {
            format!(
                "group {:?}: no protocol in common; its members support {theirs:?}, this \
                 member offers {offered:?}",
                self.id
            )
        };
        inconsistent(message)
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
        if let Err(e) = self.check_protocols(&request) {
            return JoinOutcome::Now(Err(e));
        }
        if self.completing == Some(Completing::Writing) {
            return refuse(
                ErrorCode::RebalanceInProgress,
                format!("group {:?} is completing a rebalance; join again", self.id),
            );
        }
        let mut request = request;
        if request.member_id.is_empty() {
            let id = format!("{}-{}", request.client_id, crate::data_dir::random_id());
            if request.require_known_member_id {
                self.awaiting_ids
                    .insert(id.clone(), now + request.session_timeout);
                return JoinOutcome::MemberIdRequired(id);
            }
            // An older client (JoinGroup before v4) joins at once with a new id.
            self.awaiting_ids
                .insert(id.clone(), now + request.session_timeout);
            request.member_id = id;
        }
        let (tx, rx) = oneshot::channel();
        if let Some(member) = self.members.get_mut(&request.member_id) {
            let unchanged = member.subscription == request.subscription
                && member.protocols == request.protocols;
            member.group_instance_id = request.group_instance_id;
            member.client_id = request.client_id;
            member.client_host = request.client_host;
            member.session_timeout = request.session_timeout;
            member.rebalance_timeout = request.rebalance_timeout;
            member.subscription = request.subscription;
            member.protocols = request.protocols;
            member.session_deadline = now + member.session_timeout;
            let settled = self.state == GroupState::Stable
                || matches!(self.completing, Some(Completing::AwaitingSync { .. }));
            if settled && unchanged {
                // A member that lost its answer: it is still in this generation.
                return JoinOutcome::Now(Ok(self.joined(&request.member_id)));
            }
            let member = self
                .members
                .get_mut(&request.member_id)
                .expect("found above");
            member.pending_join = Some(tx);
        } else if self.awaiting_ids.remove(&request.member_id).is_some() {
            if self.members.is_empty() {
                self.protocol_type = request.protocol_type.clone();
            }
            let member = Member {
                id: request.member_id.clone(),
                group_instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout: request.session_timeout,
                rebalance_timeout: request.rebalance_timeout,
                protocols: request.protocols,
                subscription: request.subscription,
                assignment: MemberAssignment::default(),
                session_deadline: now + request.session_timeout,
                pending_join: Some(tx),
                pending_sync: None,
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
            GroupState::Stable | GroupState::CompletingRebalance => self.start_rebalance(now, None),
            _ => {}
        }
        JoinOutcome::Later(rx)
    }

    /// The join answer of a member of the current generation.
    fn joined(&self, member_id: &str) -> Joined {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id && !self.is_server_assigned() {
            self.joined_members()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            member_id: member_id.to_owned(),
            leader,
            protocol_name: self.protocol_name.clone(),
            members,
        }
    }

    /// Every member with its metadata for the chosen protocol: what a leader assigns from.
    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref();
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    /// Moves to PreparingRebalance; `initial_delay` for a group that had no members. A
    /// client-side assignment that was awaited is abandoned: held SyncGroups are told to
    /// rejoin.
    fn start_rebalance(&mut self, now: Instant, initial_delay: Option<Duration>) {
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        let deadline = now + longest;
        let rebalancing = self.rebalancing();
        for member in self.members.values_mut() {
            if let Some(tx) = member.pending_sync.take() {
                let _ = tx.send(Err(rebalancing.clone()));
            }
        }
        self.state = GroupState::PreparingRebalance;
        self.completing = None;
        self.rebalance_deadline = Some(deadline);
        self.initial_delay_until = initial_delay.map(|d| (now + d).min(deadline));
    }

    /// Something changed that needs a new generation: a leave, an expiry, a topic change.
    fn request_rebalance(&mut self, now: Instant) {
        match (self.state, self.completing) {
            (GroupState::CompletingRebalance, Some(Completing::Writing)) => {
                self.rebalance_after_write = true
            }
            (GroupState::PreparingRebalance | GroupState::Dead, _) => {}
            _ => self.start_rebalance(now, None),
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

    /// The protocol every member supports that most members prefer (each votes for its
    /// first supported one; a tie goes to the leader's preference), as Kafka chooses.
    fn select_protocol(&self) -> Option<String> {
        let members: Vec<&Member> = self.members.values().collect();
        let supported = |name: &str| {
            members
                .iter()
                .all(|m| m.protocols.iter().any(|(p, _)| p == name))
        };
        let first = members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| supported(p))
            .collect();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for member in &members {
            if let Some((p, _)) = member
                .protocols
                .iter()
                .find(|(p, _)| candidates.contains(&p.as_str()))
            {
                *votes.entry(p.as_str()).or_default() += 1;
            }
        }
        let most = votes.values().copied().max()?;
        candidates
            .into_iter()
            .find(|p| votes.get(p) == Some(&most))
            .map(str::to_owned)
    }

    /// Ends the join phase: members that did not rejoin are removed, the generation is
    /// bumped and the protocol chosen. With server-side assignment the partitions of the
    /// subscribed topics (`partitions_of`: a topic's partition count, `None` if it does not
    /// exist) are assigned round-robin and the generation to write is returned; answer the
    /// joins with [`Group::written`] once it is durable. With client-side assignment the
    /// joins are answered now (the leader gets every member's metadata), nothing is written
    /// yet, and `None` is returned: the leader's SyncGroup brings the assignment.
    pub fn complete_join(
        &mut self,
        now: Instant,
        partitions_of: &dyn Fn(&str) -> Option<u32>,
    ) -> Option<GroupValue> {
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
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        if self.members.is_empty() {
            // Empty at once, as Kafka's `initNextGeneration`: no one waits on the write, and
            // an admin resetting the group's offsets right after its last member left must
            // not find it mid-rebalance. The empty generation is written all the same.
            self.state = GroupState::Empty;
            self.completing = None;
            self.protocol_name = None;
            self.leader = None;
            self.assigned_partitions.clear();
            return Some(self.to_value());
        }
        self.state = GroupState::CompletingRebalance;
        self.completing = Some(Completing::Writing);
        self.protocol_name = self.select_protocol();
        let leader_stays = self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l));
        if !leader_stays {
            self.leader = self.members.keys().next().cloned();
        }
        if self.is_server_assigned() {
            self.assigned_partitions = self.subscribed_partitions(partitions_of);
            let subscriptions: Vec<(&str, &[String])> = self
                .members
                .values()
                .map(|m| (m.id.as_str(), m.subscription.as_slice()))
                .collect();
            let mut shares = round_robin(&subscriptions, &self.assigned_partitions);
            for member in self.members.values_mut() {
                let share = shares.remove(&member.id).unwrap_or_default();
                member.assignment = MemberAssignment::Partitions(share);
            }
            return Some(self.to_value());
        }
        self.assigned_partitions.clear();
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.completing = Some(Completing::AwaitingSync {
            deadline: now + longest,
        });
        let everyone = self.joined_members();
        let leader = self.leader.clone().unwrap_or_default();
        let generation = self.generation;
        let protocol_name = self.protocol_name.clone();
        for member in self.members.values_mut() {
            member.assignment = MemberAssignment::Opaque(Bytes::new());
            member.session_deadline = now + member.session_timeout;
            if let Some(tx) = member.pending_join.take() {
                let members = if member.id == leader {
                    everyone.clone()
                } else {
                    Vec::new()
                };
                let _ = tx.send(Ok(Joined {
                    generation,
                    member_id: member.id.clone(),
                    leader: leader.clone(),
                    protocol_name: protocol_name.clone(),
                    members,
                }));
            }
        }
        None
    }

    /// The generation from [`Group::complete_join`] or [`SyncOutcome::Write`] was written
    /// (or failed to be): answer the held joins or syncs. A failed write fails them (the
    /// members find the coordinator again and rejoin).
    pub fn written(&mut self, generation: i32, outcome: Result<(), ApiError>, now: Instant) {
        if self.generation != generation || self.completing != Some(Completing::Writing) {
            return;
        }
        self.completing = None;
        match outcome {
            Ok(()) => {
                self.state = if self.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
                let leader = self.leader.clone().unwrap_or_default();
                let protocol_name = self.protocol_name.clone();
                for member in self.members.values_mut() {
                    member.session_deadline = now + member.session_timeout;
                    if let Some(tx) = member.pending_join.take() {
                        let _ = tx.send(Ok(Joined {
                            generation,
                            member_id: member.id.clone(),
                            leader: leader.clone(),
                            protocol_name: protocol_name.clone(),
                            members: Vec::new(),
                        }));
                    }
                    if let Some(tx) = member.pending_sync.take() {
                        let _ = tx.send(Ok(member.assignment.clone()));
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
                    if let Some(tx) = member.pending_sync.take() {
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

    /// SyncGroup: the member's share of the generation. The leader of a client-side
    /// assignment brings every member's share in `assignments` (member id, bytes; others
    /// send none): the generation with them is to be written.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> SyncOutcome {
        if let Err(e) = self.check_member(member_id, generation, now) {
            return SyncOutcome::Now(Err(e));
        }
        match (self.state, self.completing) {
            (GroupState::Stable, _) => {
                SyncOutcome::Now(Ok(self.members[member_id].assignment.clone()))
            }
            (GroupState::CompletingRebalance, Some(Completing::AwaitingSync { .. })) => {
                let (tx, rx) = oneshot::channel();
                self.members
                    .get_mut(member_id)
                    .expect("checked above")
                    .pending_sync = Some(tx);
                if self.leader.as_deref() != Some(member_id) {
                    return SyncOutcome::Later(rx);
                }
                let mut shares: HashMap<String, Bytes> = assignments.into_iter().collect();
                for member in self.members.values_mut() {
                    let share = shares.remove(&member.id).unwrap_or_default();
                    member.assignment = MemberAssignment::Opaque(share);
                }
                self.completing = Some(Completing::Writing);
                SyncOutcome::Write {
                    value: self.to_value(),
                    answer: rx,
                }
            }
            (GroupState::CompletingRebalance, Some(Completing::Writing))
                if !self.is_server_assigned() =>
            {
                let (tx, rx) = oneshot::channel();
                self.members
                    .get_mut(member_id)
                    .expect("checked above")
                    .pending_sync = Some(tx);
                SyncOutcome::Later(rx)
            }
            _ => SyncOutcome::Now(Err(self.rebalancing())),
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
        if let Some(tx) = member.pending_sync {
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

    /// Time passes: expired sessions and member ids are dropped, a leader that did not
    /// bring its assignment in time is removed with the members that did not sync, a topic
    /// whose partitions changed triggers a rebalance (server-side assignment). Returns
    /// whether the join phase is now done.
    pub fn tick(&mut self, now: Instant, partitions_of: &dyn Fn(&str) -> Option<u32>) -> bool {
        self.awaiting_ids.retain(|_, deadline| *deadline > now);
        // Members whose join or sync we hold are waiting on us, not silent.
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.pending_join.is_none() && m.pending_sync.is_none())
            .filter(|m| m.session_deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        // During the write of a generation the sessions are not judged: joins are held.
        if self.completing != Some(Completing::Writing) {
            for id in expired {
                tracing::info!(group = %self.id, member = %id, "member session expired");
                if let Some(member) = self.members.remove(&id) {
                    if let Some(tx) = member.pending_sync {
                        let _ = tx.send(Err(self.unknown_member(&id)));
                    }
                }
                self.request_rebalance(now);
            }
        }
        if let Some(Completing::AwaitingSync { deadline }) = self.completing {
            if now >= deadline {
                let unsynced: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| m.pending_sync.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                for id in unsynced {
                    tracing::info!(group = %self.id, member = %id, "removing a member that did not sync in time");
                    self.members.remove(&id);
                }
                self.start_rebalance(now, None);
            }
        }
        if self.state == GroupState::Stable
            && self.is_server_assigned()
            && self.subscribed_partitions(partitions_of) != self.assigned_partitions
        {
            tracing::info!(group = %self.id, "subscribed topics changed; rebalancing");
            self.request_rebalance(now);
        }
        self.join_phase_done(now)
    }

    /// The topics some member subscribes to (Kafka's consumer protocol: decoded from each
    /// member's metadata at its join).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscription.iter().cloned())
            .collect()
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
        let protocol = self.protocol_name.as_deref();
        GroupValue {
            protocol_type: self.protocol_type.clone(),
            generation: self.generation,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| {
                    let (assignment, leader_assignment) = match &m.assignment {
                        MemberAssignment::Partitions(p) => (p.clone(), None),
                        MemberAssignment::Opaque(bytes) => (Vec::new(), Some(bytes.clone())),
                    };
                    MemberValue {
                        member_id: m.id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        rebalance_timeout_ms: duration_ms(m.rebalance_timeout),
                        session_timeout_ms: duration_ms(m.session_timeout),
                        subscription: m.subscription.clone(),
                        assignment,
                        protocol_metadata: m.metadata(protocol),
                        leader_assignment,
                    }
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
        self.leader = value.leader;
        let protocol = value.protocol_name.clone();
        self.protocol_name = value.protocol_name;
        self.members = value
            .members
            .into_iter()
            .map(|m| {
                let session_timeout = ms_duration(m.session_timeout_ms);
                let assignment = match m.leader_assignment {
                    Some(bytes) => MemberAssignment::Opaque(bytes),
                    None => MemberAssignment::Partitions(m.assignment),
                };
                let member = Member {
                    id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout,
                    rebalance_timeout: ms_duration(m.rebalance_timeout_ms),
                    protocols: protocol
                        .iter()
                        .map(|p| (p.clone(), m.protocol_metadata.clone()))
                        .collect(),
                    subscription: m.subscription,
                    assignment,
                    session_deadline: now + session_timeout,
                    pending_join: None,
                    pending_sync: None,
                };
                (m.member_id, member)
            })
            .collect();
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.completing = None;
        self.assigned_partitions = if self.is_server_assigned() {
            self.subscribed_partitions(partitions_of)
        } else {
            Vec::new()
        };
    }

    /// Forgets the group's membership (its metadata record was deleted).
    pub fn unload_members(&mut self) {
        self.members.clear();
        self.state = GroupState::Empty;
        self.completing = None;
    }

    /// The group's end: deleted, or its coordinator moved. Held joins and syncs are
    /// answered so their members look for the coordinator again.
    pub fn kill(&mut self, why: &ApiError) {
        self.state = GroupState::Dead;
        self.completing = None;
        for member in self.members.values_mut() {
            if let Some(tx) = member.pending_join.take() {
                let _ = tx.send(Err(why.clone()));
            }
            if let Some(tx) = member.pending_sync.take() {
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

    /// Stages an offset producer `producer_id` wrote in its transaction at `log_offset`: it
    /// counts once the transaction's commit marker is written ([`Group::end_txn`]).
    pub fn stage_txn_offset(
        &mut self,
        producer_id: i64,
        topic: String,
        partition: PartitionId,
        value: OffsetValue,
        log_offset: Offset,
    ) {
        let staged = self.pending_txn.entry(producer_id).or_default();
        let key = (topic, partition);
        if staged.get(&key).is_some_and(|c| c.log_offset > log_offset) {
            return;
        }
        staged.insert(key, Committed { value, log_offset });
    }

    /// Producer `producer_id`'s transaction ended with a marker at `marker_offset`: its
    /// offsets written before the marker are applied (commit) or dropped (abort). Applied,
    /// each loses to a plain commit of its partition written after it, as in Kafka. Returns
    /// whether offsets of that producer remain staged (written after the marker).
    pub fn end_txn(&mut self, producer_id: i64, commit: bool, marker_offset: Offset) -> bool {
        let Some(staged) = self.pending_txn.remove(&producer_id) else {
            return false;
        };
        let (decided, later): (BTreeMap<_, _>, BTreeMap<_, _>) = staged
            .into_iter()
            .partition(|(_, c)| c.log_offset < marker_offset);
        if commit {
            for ((topic, partition), c) in decided {
                self.apply_offset(topic, partition, Some(c.value), c.log_offset);
            }
        }
        if later.is_empty() {
            return false;
        }
        self.pending_txn.insert(producer_id, later);
        true
    }

    /// Whether a transaction that has not ended yet wrote an offset of the partition
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_txn_offset(&self, topic: &str, partition: PartitionId) -> bool {
        let key = (topic.to_owned(), partition);
        self.pending_txn.values().any(|s| s.contains_key(&key))
    }

    /// A transactional commit's check (Kafka's TxnOffsetCommit, KIP-447): a member id, if
    /// given, must be a member; a generation, if given, the current one. A producer
    /// outside group management sends neither.
    pub fn check_txn_commit(&self, member_id: &str, generation: i32) -> Result<(), ApiError> {
        if !member_id.is_empty() && !self.members.contains_key(member_id) {
            return Err(ApiError::new(
                ErrorCode::UnknownMemberId,
                format!(
                    "group {:?} has no member {member_id:?}; the consumer must join again",
                    self.id
                ),
            ));
        }
        if generation >= 0 && generation != self.generation {
            return Err(ApiError::new(
                ErrorCode::IllegalGeneration,
                format!(
                    "generation {generation} of group {:?} is over (it is at {}); the \
                     consumer must join again",
                    self.id, self.generation
                ),
            ));
        }
        Ok(())
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
