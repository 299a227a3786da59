//! The active controller: the Raft leader of the metadata log. It turns broker
//! registrations, heartbeats, ISR proposals and topic administration into metadata
//! commands, and fences brokers whose sessions expire (which moves their leaderships).
//!
//! Every voter has a [`Controller`]; only the one whose Raft node leads acts. The others
//! answer NOT_CONTROLLER and brokers retry at the leader (`cluster::client`).
//!
//! Sessions live only in the active controller's memory. A session ends at its deadline,
//! a full session timeout after the broker's last heartbeat, unless there is evidence
//! that the broker is gone; evidence only shortens the deadline to two heartbeat
//! intervals from when it arrived, so a live broker (which heartbeats every interval)
//! keeps its session whatever the evidence said, and a dead one is fenced within about
//! two intervals instead of a whole session. The evidence:
//! - the broker's heartbeat connection closed (its process died: the kernel closes its
//!   sockets; a live broker reconnects within an interval);
//! - on a new term, the broker that was the previous term's controller: the quorum elected
//!   another one because that node stopped answering it for an election timeout.
//!
//! Each piece of evidence is then checked with a probe: an ApiVersions call on a new
//! connection to the broker's listener. A refused connection, or one closed or reset
//! before the answer, shows that no broker process serves there any more, and the broker
//! is fenced at once; an answer or a timeout (a hung process, a cut network) leaves the
//! short deadline to decide.
//!
//! Every other broker gets a full session from the start of a new term, since it cannot
//! have heartbeated a controller that did not exist yet. Silence alone (a hung process, a
//! cut network) is caught by the session timeout.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use sluice_protocol::messages::{
    AclResult, AlterClientQuotasRequest, AlterClientQuotasResponse,
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, CreateAclsResponse,
    DeleteAclsResponse, DescribeQuorumRequest, DescribeQuorumResponse, QuorumReplica, QuotaResult,
    ReassignablePartition,
};
use sluice_protocol::messages::{
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, AlterConfigsRequest,
    AlterConfigsResponse, AlterConfigsResult, AlterPartitionPartitionResponse,
    AlterPartitionRequest, AlterPartitionResponse, AlterPartitionTopicResponse,
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    AlterUserScramCredentialsResult, AlterableTopic, ApiVersionsRequest, BrokerHeartbeatRequest,
    BrokerHeartbeatResponse, BrokerRegistrationRequest, BrokerRegistrationResponse,
    CreatableTopicResult, CreatePartitionsRequest, CreatePartitionsResponse,
    CreatePartitionsTopicResult, CreateTopicsRequest, CreateTopicsResponse, DeletableTopicResult,
    DeleteTopicsRequest, DeleteTopicsResponse, ElectLeadersRequest, ElectLeadersResponse,
    PartitionResult, ReplicaLogEnd, TopicPartitionResults, CONFIG_DELETE, CONFIG_SET,
};
use sluice_protocol::scram::{Mechanism, ScramCredential};

use super::image::acls::AclBinding;
use super::image::quotas::QuotaChange;
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId, Request, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use super::election::LastStand;
use super::image::placement::{self, LogEnd};
use super::image::{CommandResult, ListenerMeta, MetadataCommand, MetadataImage, NATIVE_LISTENER};
use super::peer::PeerConnection;
use super::raft::{Applied, NodeId, Raft};
use crate::config::BrokerConfig;
use crate::data_dir::{hex, random_id};
use crate::error::ApiError;
use crate::topic_config::internal_topic;
use crate::topic_config::{validate_new_topic, NewTopic};

/// The controller logic of one voter.
pub struct Controller {
    config: BrokerConfig,
    raft: Raft,
    applied: watch::Receiver<Applied>,
    /// Session deadlines by broker, valid for the term in `sessions_term`.
    sessions: Mutex<Sessions>,
    /// Log ends reported for partitions awaiting a longest-log election, by partition and
    /// replica, with the partition epoch each was reported under.
    log_ends: Mutex<BTreeMap<(String, PartitionId), LogEndReports>>,
    /// The last controller other than this node that this node knew of, with its term.
    previous_leader: Mutex<Option<(u64, NodeId)>>,
    /// Brokers with evidence against them, to probe (see the module doc).
    suspects: tokio::sync::mpsc::UnboundedSender<BrokerId>,
    /// The receiving end, taken by [`Controller::run`].
    suspects_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<BrokerId>>>,
    /// Wakes [`Controller::run`] to fence at once (a probe found a broker gone).
    wake: tokio::sync::Notify,
    /// When this node last stood for election, and when it had heard from a leader then.
    last_stand: Arc<LastStand>,
    /// Brokers this node fenced as the active controller (session expired), for metrics.
    fencings: std::sync::atomic::AtomicU64,
}

/// One partition's log-end reports: replica -> (partition epoch, log end).
type LogEndReports = BTreeMap<BrokerId, (i32, LogEnd)>;

#[derive(Default)]
struct Sessions {
    /// The Raft term these deadlines were set in; a new term starts them afresh.
    term: u64,
    deadlines: HashMap<BrokerId, Instant>,
    /// When each broker's last heartbeat arrived this term, and its registration epoch,
    /// for the gap to the next heartbeat of the same registration (a broker that was down
    /// and registered again starts afresh: its downtime is no heartbeat gap).
    last_heartbeat: HashMap<BrokerId, (i64, Instant)>,
    /// The gaps (ms) since the last summary ([`Controller::log_heartbeat_gaps`]).
    gaps_ms: Vec<u32>,
}

impl Controller {
    /// Brokers fenced by this node while it was the active controller, since it started.
    pub fn fencings(&self) -> u64 {
        self.fencings.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The controller logic over `raft`, reading the applied image from `applied`.
    pub fn new(config: BrokerConfig, raft: Raft, applied: watch::Receiver<Applied>) -> Controller {
        let (suspects, suspects_rx) = tokio::sync::mpsc::unbounded_channel();
        Controller {
            fencings: std::sync::atomic::AtomicU64::new(0),
            config,
            raft,
            applied,
            sessions: Mutex::new(Sessions::default()),
            log_ends: Mutex::new(BTreeMap::new()),
            previous_leader: Mutex::new(None),
            suspects,
            suspects_rx: Mutex::new(Some(suspects_rx)),
            wake: tokio::sync::Notify::new(),
            last_stand: Arc::default(),
        }
    }

    /// Where this voter's election timer records its stands (`election::run_timer`).
    pub fn last_stand(&self) -> Arc<LastStand> {
        Arc::clone(&self.last_stand)
    }

    fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.applied.borrow().image)
    }

    /// The current term if this node leads the metadata log.
    fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(self.config.node_id.0 as u64))
            .then_some(m.current_term)
    }

    fn not_controller(&self) -> ApiError {
        let leader = self.raft.metrics().borrow().current_leader;
        ApiError::new(
            ErrorCode::NotController,
            match leader {
                Some(id) => format!(
                    "broker {} is not the active controller (broker {id} is); retry there",
                    self.config.node_id
                ),
                None => "no active controller yet (the quorum is electing one); retry".into(),
            },
        )
    }

    /// Sessions for the current term: a new term gives every registered broker a full
    /// session timeout from now, except the previous term's controller, which gets the
    /// short deadline of a broker with evidence against it (see the module doc).
    fn with_sessions<T>(&self, term: u64, f: impl FnOnce(&mut Sessions) -> T) -> T {
        let mut sessions = self.sessions.lock().expect("sessions poisoned");
        if sessions.term != term {
            let now = Instant::now();
            let deadline = now + self.config.session_timeout();
            sessions.term = term;
            sessions.last_heartbeat.clear();
            sessions.deadlines = self
                .image()
                .brokers
                .keys()
                .map(|id| (*id, deadline))
                .collect();
            let me = self.config.node_id.0 as NodeId;
            let previous = *self
                .previous_leader
                .lock()
                .expect("previous leader poisoned");
            if let Some((_, previous)) = previous.filter(|(t, id)| *t < term && *id != me) {
                let previous = BrokerId(previous as i32);
                if let Some(deadline) = sessions.deadlines.get_mut(&previous) {
                    // Its session counts from the last word this node had from it, as
                    // anyone's does from their last heartbeat, and never runs longer than
                    // the grace of a broker with evidence against it.
                    let heard_at = self.last_stand.leader_heard_at(term);
                    *deadline = previous_controller_deadline(
                        now,
                        heard_at,
                        self.config.session_timeout(),
                        self.evidence_grace(),
                    );
                    let _ = self.suspects.send(previous);
                    tracing::info!(
                        broker = %previous,
                        "the previous controller stopped answering the quorum{}: fencing it \
                         unless it heartbeats within {} ms",
                        heard_at.map_or(String::new(), |at| format!(
                            " {} ms ago",
                            now.saturating_duration_since(at).as_millis()
                        )),
                        deadline.saturating_duration_since(now).as_millis()
                    );
                }
            }
        }
        f(&mut sessions)
    }

    /// How long a broker with evidence against it has to heartbeat before it is fenced:
    /// two heartbeat intervals, so a live broker that lost a connection or a controller
    /// heartbeats in time.
    fn evidence_grace(&self) -> Duration {
        2 * self.config.heartbeat_interval()
    }

    /// Remembers the controller this node knows of when it is another node, so that on
    /// winning an election it knows whose silence made it controller.
    fn note_leader(&self) {
        let (leader, term) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.current_leader, m.current_term)
        };
        let me = self.config.node_id.0 as NodeId;
        if let Some(leader) = leader.filter(|l| *l != me) {
            *self
                .previous_leader
                .lock()
                .expect("previous leader poisoned") = Some((term, leader));
        }
    }

    /// Proposes a command and waits until it is committed and applied here. Returns its
    /// log index and result.
    pub async fn propose(
        &self,
        command: MetadataCommand,
    ) -> Result<(u64, CommandResult), ApiError> {
        if self.leading_term().is_none() {
            return Err(self.not_controller());
        }
        match self.raft.client_write(command).await {
            Ok(written) => Ok((written.log_id.index, written.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(self.not_controller())
            }
            Err(e) => Err(ApiError::new(
                ErrorCode::RequestTimedOut,
                format!("the metadata change was not committed: {e}; retry"),
            )),
        }
    }

    /// Serves a controller api on the active controller; NOT_CONTROLLER elsewhere.
    pub async fn handle(&self, request: Request) -> Result<Response, ApiError> {
        if self.leading_term().is_none() {
            return Err(self.not_controller());
        }
        Ok(match request {
            Request::BrokerRegistration(r) => Response::BrokerRegistration(self.register(r).await?),
            Request::BrokerHeartbeat(r) => Response::BrokerHeartbeat(self.heartbeat(r).await?),
            Request::AlterPartition(r) => Response::AlterPartition(self.alter_partition(r).await),
            Request::CreateTopics(r) => Response::CreateTopics(self.create_topics(r).await),
            Request::DeleteTopics(r) => Response::DeleteTopics(self.delete_topics(r).await),
            Request::CreatePartitions(r) => {
                Response::CreatePartitions(self.create_partitions(r).await)
            }
            Request::ElectLeaders(r) => Response::ElectLeaders(self.elect_leaders(r).await),
            Request::IncrementalAlterConfigs(r) => {
                Response::IncrementalAlterConfigs(self.alter_configs(r).await)
            }
            Request::AllocateProducerIds(r) => {
                Response::AllocateProducerIds(self.allocate_producer_ids(r).await?)
            }
            Request::AlterUserScramCredentials(r) => {
                Response::AlterUserScramCredentials(self.alter_scram_credentials(r).await)
            }
            Request::CreateAcls(r) => {
                let acls = r.creations.iter().map(AclBinding::from_entry).collect();
                Response::CreateAcls(CreateAclsResponse {
                    results: self.change_acls(acls, true).await,
                })
            }
            Request::AlterClientQuotas(r) => {
                Response::AlterClientQuotas(self.alter_client_quotas(r).await)
            }
            Request::AlterPartitionReassignments(r) => {
                Response::AlterPartitionReassignments(self.reassign_partitions(r).await)
            }
            Request::DescribeQuorum(r) => Response::DescribeQuorum(self.describe_quorum(&r)),
            Request::DeleteAcls(r) => {
                let acls = r.deletions.iter().map(AclBinding::from_entry).collect();
                Response::DeleteAcls(DeleteAclsResponse {
                    results: self.change_acls(acls, false).await,
                })
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("{} is not a controller api", other.api_key().name()),
                ))
            }
        })
    }

    async fn register(
        &self,
        request: BrokerRegistrationRequest,
    ) -> Result<BrokerRegistrationResponse, ApiError> {
        if self.image().cluster_id.is_empty() {
            // The first registration of a new cluster: choose its id first, so no broker
            // ever joins a cluster without one.
            self.propose(MetadataCommand::Bootstrap {
                cluster_id: random_id(),
            })
            .await?;
        }
        let image = self.image();
        if !request.cluster_id.is_empty()
            && !image.cluster_id.is_empty()
            && request.cluster_id != image.cluster_id
        {
            return Ok(BrokerRegistrationResponse {
                error_code: ErrorCode::InconsistentClusterId,
                error_message: Some(format!(
                    "broker {} belongs to cluster {}, but this is cluster {}; give it the data \
                     directory of this cluster or an empty one",
                    request.broker_id, request.cluster_id, image.cluster_id
                )),
                broker_epoch: -1,
            });
        }
        let listeners: Vec<ListenerMeta> = request
            .listeners
            .iter()
            .map(|l| ListenerMeta {
                name: l.name.clone(),
                host: l.host.clone(),
                port: l.port,
            })
            .collect();
        let address = listeners
            .iter()
            .find(|l| l.name == NATIVE_LISTENER)
            .map(ListenerMeta::address);
        let incarnation_id = hex(&request.incarnation_id);
        let (_, result) = self
            .propose(MetadataCommand::RegisterBroker {
                id: request.broker_id,
                incarnation_id,
                listeners,
                rack: request.rack,
            })
            .await?;
        let epoch = match result {
            CommandResult::BrokerEpoch(epoch) => epoch,
            CommandResult::Refused { code, message } => {
                return Ok(BrokerRegistrationResponse {
                    error_code: ErrorCode::from_i16(code),
                    error_message: Some(message),
                    broker_epoch: -1,
                })
            }
            other => {
                return Err(ApiError::new(
                    ErrorCode::UnknownServerError,
                    format!("registration applied with an unexpected result {other:?}"),
                ))
            }
        };
        if let Some(term) = self.leading_term() {
            let deadline = Instant::now() + self.config.session_timeout();
            self.with_sessions(term, |s| s.deadlines.insert(request.broker_id, deadline));
        }
        if let Some(address) = address {
            self.ensure_member(request.broker_id, address);
        }
        tracing::info!(broker = %request.broker_id, epoch, "broker registered");
        Ok(BrokerRegistrationResponse {
            error_code: ErrorCode::None,
            error_message: None,
            broker_epoch: epoch,
        })
    }

    /// A broker that is not a voter joins the metadata log as a learner, so it holds the
    /// whole metadata like every node (KRaft's design).
    fn ensure_member(&self, id: BrokerId, address: String) {
        let node_id = id.0 as NodeId;
        let known = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .get_node(&node_id)
                .is_some_and(|n| n.addr == address)
        };
        if known {
            return;
        }
        let raft = self.raft.clone();
        tokio::spawn(async move {
            match raft
                .add_learner(
                    node_id,
                    BasicNode {
                        addr: address.clone(),
                    },
                    false,
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(broker = %id, %address, "added to the metadata log as a learner")
                }
                Err(e) => tracing::warn!(broker = %id, "could not add it as a learner: {e}"),
            }
        });
    }

    async fn heartbeat(
        &self,
        request: BrokerHeartbeatRequest,
    ) -> Result<BrokerHeartbeatResponse, ApiError> {
        let refused = |code: ErrorCode, message: String| BrokerHeartbeatResponse {
            error_code: code,
            error_message: Some(message),
            is_caught_up: false,
            is_fenced: true,
            should_shutdown: false,
        };
        let Some(term) = self.leading_term() else {
            return Err(self.not_controller());
        };
        let image = self.image();
        let Some(broker) = image.brokers.get(&request.broker_id) else {
            return Ok(refused(
                ErrorCode::BrokerIdNotRegistered,
                format!(
                    "broker {} is not registered; register first",
                    request.broker_id
                ),
            ));
        };
        if broker.epoch != request.broker_epoch {
            return Ok(refused(
                ErrorCode::StaleBrokerEpoch,
                format!(
                    "broker {} heartbeats with epoch {}, but its registration has epoch {}; \
                     register again",
                    request.broker_id, request.broker_epoch, broker.epoch
                ),
            ));
        }
        let now = Instant::now();
        let gap = self.with_sessions(term, |s| {
            s.deadlines
                .insert(request.broker_id, now + self.config.session_timeout());
            let gap = s
                .last_heartbeat
                .insert(request.broker_id, (request.broker_epoch, now))
                .filter(|(epoch, _)| *epoch == request.broker_epoch)
                .map(|(_, last)| now - last);
            if let Some(gap) = gap {
                s.gaps_ms
                    .push(u32::try_from(gap.as_millis()).unwrap_or(u32::MAX));
            }
            gap
        });
        if let Some(gap) = gap {
            if gap > self.config.session_timeout() / 2 {
                tracing::warn!(
                    broker = %request.broker_id,
                    "heartbeats arrive {} ms apart, more than half the session timeout ({} ms): \
                     the broker or this controller is overloaded, and it risks being fenced; \
                     raise broker_session_timeout_ms if this recurs",
                    gap.as_millis(),
                    self.config.session_timeout().as_millis()
                );
            }
        }
        let caught_up = request.current_metadata_offset >= broker.epoch;
        if !request.damaged.is_empty() {
            // Before any unfencing: a damaged last ISR member must not be elected first.
            let (_, result) = self
                .propose(MetadataCommand::ReportDamage {
                    id: broker.id,
                    epoch: broker.epoch,
                    partitions: request
                        .damaged
                        .iter()
                        .map(|r| (r.topic.clone(), r.partition))
                        .collect(),
                })
                .await?;
            if let CommandResult::Refused { code, message } = result {
                return Ok(refused(ErrorCode::from_i16(code), message));
            }
            tracing::warn!(
                broker = %broker.id,
                "damaged replicas reported: {:?}",
                request.damaged.iter().map(|r| format!("{}-{}", r.topic, r.partition.0)).collect::<Vec<_>>()
            );
        }
        let command = if request.want_shutdown && !broker.shutting_down {
            Some(MetadataCommand::ControlledShutdown {
                id: broker.id,
                epoch: broker.epoch,
            })
        } else if broker.fenced && !broker.shutting_down && !request.want_fence && caught_up {
            Some(MetadataCommand::UnfenceBroker {
                id: broker.id,
                epoch: broker.epoch,
            })
        } else {
            None
        };
        if let Some(command) = command {
            let (_, result) = self.propose(command).await?;
            if let CommandResult::Refused { code, message } = result {
                return Ok(refused(ErrorCode::from_i16(code), message));
            }
        }
        if !request.log_ends.is_empty() {
            self.elect_longest_logs(request.broker_id, &request.log_ends)
                .await;
        }
        let image = self.image();
        let broker = image.brokers.get(&request.broker_id);
        Ok(BrokerHeartbeatResponse {
            error_code: ErrorCode::None,
            error_message: None,
            is_caught_up: caught_up,
            is_fenced: broker.is_none_or(|b| b.fenced),
            should_shutdown: request.want_shutdown && broker.is_some_and(|b| b.shutting_down),
        })
    }

    /// Records `broker`'s log ends for partitions awaiting a longest-log election, and
    /// elects a leader for each partition whose replicas have all reported under its
    /// current partition epoch.
    async fn elect_longest_logs(&self, broker: BrokerId, ends: &[ReplicaLogEnd]) {
        let image = self.image();
        let mut elections = Vec::new();
        {
            let mut reports = self.log_ends.lock().expect("log ends poisoned");
            reports.retain(|(topic, index), _| {
                image
                    .partition(topic, *index)
                    .is_some_and(|p| p.awaiting_log_ends)
            });
            for end in ends {
                let Some(meta) = image
                    .partition(&end.topic, end.partition)
                    .filter(|p| p.awaiting_log_ends && p.replicas.contains(&broker))
                else {
                    continue;
                };
                let current = meta.partition_epoch;
                if end.partition_epoch != current {
                    continue;
                }
                let reported = reports
                    .entry((end.topic.clone(), end.partition))
                    .or_default();
                reported.retain(|_, (epoch, _)| *epoch == current);
                reported.insert(broker, (current, (end.last_epoch, end.log_end)));
                let active = |id: &BrokerId| image.brokers.get(id).is_some_and(|b| b.is_active());
                // A topic that allows unclean elections does not wait for replicas that
                // are down: it takes the longest log among those that are up.
                let unclean = image
                    .topics
                    .get(&end.topic)
                    .is_some_and(|t| t.unclean_leader_election());
                let voters: Vec<BrokerId> = match unclean {
                    true => meta.replicas.iter().copied().filter(active).collect(),
                    false => meta.replicas.clone(),
                };
                let leader = placement::longest_log(
                    &voters,
                    |id| reported.get(&id).map(|(_, end)| *end),
                    |id| active(&id),
                );
                if let Some(leader) = leader {
                    elections.push(MetadataCommand::ElectLongestLog {
                        topic: end.topic.clone(),
                        partition: end.partition,
                        partition_epoch: current,
                        leader,
                    });
                }
            }
        }
        for election in elections {
            let described = format!("{election:?}");
            match self.propose(election).await {
                Ok((_, CommandResult::Done)) => {
                    tracing::warn!("longest-log election after a damaged replica: {described}")
                }
                Ok((_, other)) => tracing::info!("{described} not applied: {other:?}"),
                Err(e) => tracing::info!("{described} not committed: {}", e.message),
            }
        }
    }

    /// A broker's heartbeat connection closed: unless it heartbeats again within two
    /// intervals, it is fenced (see the module doc).
    pub fn connection_lost(&self, broker: BrokerId) {
        let Some(term) = self.leading_term() else {
            return;
        };
        let soon = Instant::now() + self.evidence_grace();
        self.with_sessions(term, |s| {
            if let Some(deadline) = s.deadlines.get_mut(&broker) {
                *deadline = (*deadline).min(soon);
            }
        });
        let _ = self.suspects.send(broker);
    }

    /// Checks the evidence against `broker` (see the module doc): if no process serves at
    /// its address, its session ends now.
    async fn probe(self: Arc<Self>, broker: BrokerId) {
        let Some(term) = self.leading_term() else {
            return;
        };
        let image = self.image();
        let Some(address) = image
            .brokers
            .get(&broker)
            .filter(|b| !b.fenced)
            .and_then(|b| b.listener(NATIVE_LISTENER))
            .map(ListenerMeta::address)
        else {
            return;
        };
        let mut peer = PeerConnection::new(broker, &address, super::peer_config(&self.config));
        let request = Request::ApiVersions(ApiVersionsRequest {
            client_software_name: "sluice-controller-probe".into(),
            client_software_version: env!("CARGO_PKG_VERSION").into(),
        });
        match peer.call(request, self.evidence_grace()).await {
            Err(e) if e.shows_peer_gone() => {
                tracing::info!(broker = %broker, "no broker serves at {address} ({e}): fencing it now");
                let now = Instant::now();
                self.with_sessions(term, |s| {
                    if let Some(deadline) = s.deadlines.get_mut(&broker) {
                        *deadline = (*deadline).min(now);
                    }
                });
                self.wake.notify_one();
            }
            Ok(_) => tracing::debug!(broker = %broker, "probe answered: the broker is up"),
            Err(e) => tracing::debug!(broker = %broker, "probe inconclusive: {e}"),
        }
    }

    async fn alter_partition(&self, request: AlterPartitionRequest) -> AlterPartitionResponse {
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for p in topic.partitions {
                let outcome = self
                    .propose(MetadataCommand::AlterPartition {
                        broker_id: request.broker_id,
                        broker_epoch: request.broker_epoch,
                        topic: topic.topic.clone(),
                        partition: p.partition,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        new_isr: p.new_isr,
                    })
                    .await;
                partitions.push(match outcome {
                    Ok((_, CommandResult::Partition(state))) => AlterPartitionPartitionResponse {
                        partition: p.partition,
                        error_code: ErrorCode::None,
                        error_message: None,
                        leader_id: state.leader,
                        leader_epoch: state.leader_epoch,
                        isr: state.isr,
                        partition_epoch: state.partition_epoch,
                    },
                    Ok((_, CommandResult::Refused { code, message })) => {
                        alter_refused(p.partition, ErrorCode::from_i16(code), message)
                    }
                    Ok((_, other)) => alter_refused(
                        p.partition,
                        ErrorCode::UnknownServerError,
                        format!("unexpected result {other:?}"),
                    ),
                    Err(e) => alter_refused(p.partition, e.code, e.message),
                });
            }
            topics.push(AlterPartitionTopicResponse {
                topic: topic.topic,
                partitions,
            });
        }
        AlterPartitionResponse { topics }
    }

    async fn create_topics(&self, request: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut topics = Vec::with_capacity(request.topics.len());
        let mut seen = std::collections::HashSet::new();
        for topic in request.topics {
            let name = topic.name.clone();
            let new = NewTopic::from_wire(topic);
            let outcome = if !seen.insert(name.clone()) {
                Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("topic {name:?} appears twice in one request"),
                ))
            } else {
                self.create_topic(new, request.validate_only).await
            };
            topics.push(match outcome {
                Ok((num_partitions, replication_factor)) => CreatableTopicResult {
                    name,
                    error_code: ErrorCode::None,
                    error_message: None,
                    num_partitions: num_partitions as i32,
                    replication_factor: replication_factor as i16,
                },
                Err(e) => CreatableTopicResult {
                    name,
                    error_code: e.code,
                    error_message: e.wire_message(),
                    num_partitions: -1,
                    replication_factor: -1,
                },
            });
        }
        CreateTopicsResponse { topics }
    }

    async fn create_topic(
        &self,
        new: NewTopic,
        validate_only: bool,
    ) -> Result<(u32, u16), ApiError> {
        let (partitions, replication_factor) = validate_new_topic(&self.config, &new)?;
        if self.image().topics.contains_key(&new.name) {
            return Err(ApiError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {:?} already exists", new.name),
            ));
        }
        if validate_only {
            return Ok((partitions, replication_factor));
        }
        let (_, result) = self
            .propose(MetadataCommand::CreateTopic {
                name: new.name.clone(),
                partitions,
                replication_factor,
                assignment: new.placed(),
                configs: new.configs,
            })
            .await?;
        refused_to_error(result)?;
        tracing::info!(topic = %new.name, partitions, replication_factor, "created topic");
        Ok((partitions, replication_factor))
    }

    async fn delete_topics(&self, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
        let mut responses = Vec::with_capacity(request.topic_names.len());
        for name in request.topic_names {
            let outcome = if let Some(why) = internal_topic(&name) {
                let instead = match name == sluice_protocol::group_log::OFFSETS_TOPIC {
                    true => "; delete groups with `sluice group delete` instead",
                    false => "",
                };
                Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("{name} is internal: {why}{instead}"),
                ))
            } else {
                match self
                    .propose(MetadataCommand::DeleteTopic { name: name.clone() })
                    .await
                {
                    Ok((_, result)) => refused_to_error(result),
                    Err(e) => Err(e),
                }
            };
            responses.push(DeletableTopicResult {
                name,
                error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                error_message: outcome.err().and_then(|e| e.wire_message()),
            });
        }
        DeleteTopicsResponse { responses }
    }

    async fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let mut results = Vec::with_capacity(request.topics.len());
        let mut seen = std::collections::HashSet::new();
        for topic in request.topics {
            let outcome = if !seen.insert(topic.name.clone()) {
                Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("topic {:?} appears twice in one request", topic.name),
                ))
            } else {
                self.create_partitions_of(&topic.name, topic.count, request.validate_only)
                    .await
            };
            results.push(CreatePartitionsTopicResult {
                name: topic.name,
                error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                error_message: outcome.err().and_then(|e| e.wire_message()),
            });
        }
        CreatePartitionsResponse { results }
    }

    /// Grows one topic to `count` partitions. `validate_only` applies the command to a copy
    /// of the image, so it refuses exactly what the real change would.
    async fn create_partitions_of(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        if let Some(why) = internal_topic(name) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{name} is internal: {why}; its partition count is fixed, as each \
                     coordinator is found by hashing onto it"
                ),
            ));
        }
        let partitions = u32::try_from(count).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidPartitions,
                format!("a partition count must be positive, not {count}"),
            )
        })?;
        let command = MetadataCommand::CreatePartitions {
            name: name.to_owned(),
            partitions,
        };
        if validate_only {
            let mut scratch = MetadataImage::clone(&self.image());
            return refused_to_error(scratch.apply(0, &command));
        }
        let (_, result) = self.propose(command).await?;
        refused_to_error(result)?;
        tracing::info!(topic = %name, partitions, "added partitions");
        Ok(())
    }

    /// Preferred leader elections of the partitions asked (every partition when none is):
    /// those whose preferred replica can lead now move in one command; the others are
    /// answered with why not.
    async fn elect_leaders(&self, request: ElectLeadersRequest) -> ElectLeadersResponse {
        let image = self.image();
        let asked: Vec<(String, PartitionId)> = match request.topics {
            Some(topics) => topics
                .into_iter()
                .flat_map(|t| {
                    let topic = t.topic;
                    t.partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .collect(),
            None => image
                .topics
                .iter()
                .flat_map(|(name, t)| t.partitions.iter().map(|p| (name.clone(), p.index)))
                .collect(),
        };
        let eligible: Vec<(String, PartitionId)> = asked
            .iter()
            .filter(|(topic, p)| image.preferred_election(topic, *p).is_ok())
            .cloned()
            .collect();
        let moved = match eligible.is_empty() {
            true => Ok(()),
            false => self.move_to_preferred(eligible).await,
        };
        let after = self.image();
        let mut topics: Vec<TopicPartitionResults> = Vec::new();
        for (topic, partition) in asked {
            let outcome = match image.preferred_election(&topic, partition) {
                Err((code, message)) => Err(ApiError::new(code, message)),
                Ok(()) => moved.clone().and_then(|()| {
                    let led = after
                        .partition(&topic, partition)
                        .is_some_and(|p| p.leader == p.replicas[0]);
                    match led {
                        true => Ok(()),
                        false => after
                            .preferred_election(&topic, partition)
                            .map_err(|(code, message)| ApiError::new(code, message)),
                    }
                }),
            };
            let result = PartitionResult {
                partition,
                error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                error_message: outcome.err().and_then(|e| e.wire_message()),
            };
            match topics.last_mut() {
                Some(t) if t.name == topic => t.partitions.push(result),
                _ => topics.push(TopicPartitionResults {
                    name: topic,
                    partitions: vec![result],
                }),
            }
        }
        ElectLeadersResponse { topics }
    }

    /// Proposes moving `partitions`' leadership to their preferred replicas.
    async fn move_to_preferred(
        &self,
        partitions: Vec<(String, PartitionId)>,
    ) -> Result<(), ApiError> {
        let n = partitions.len();
        let (_, result) = self
            .propose(MetadataCommand::ElectPreferredLeaders { partitions })
            .await?;
        refused_to_error(result)?;
        tracing::info!("moved {n} leadership(s) to their preferred replicas");
        Ok(())
    }

    /// Kafka's automatic leader rebalance: the partitions of each broker that leads fewer
    /// than it is preferred for, by more than [`LEADER_IMBALANCE_PERCENT`], move back to
    /// it where it is in sync.
    async fn rebalance_leaders(&self) {
        let partitions = self.image().imbalanced_partitions(LEADER_IMBALANCE_PERCENT);
        if partitions.is_empty() {
            return;
        }
        if let Err(e) = self.move_to_preferred(partitions).await {
            tracing::warn!("could not rebalance leaderships: {}", e.message);
        }
    }

    /// Adds (`create`) or removes ACLs, all in one command: all of them or none. Each gets
    /// the outcome; one ACL the wire could not express fails them all, before anything is
    /// proposed.
    async fn change_acls(
        &self,
        acls: Vec<Result<AclBinding, String>>,
        create: bool,
    ) -> Vec<AclResult> {
        let n = acls.len();
        let outcome = match acls.into_iter().collect::<Result<Vec<_>, _>>() {
            Err(why) => Err(ApiError::new(ErrorCode::InvalidRequest, why)),
            Ok(acls) => {
                let command = if create {
                    MetadataCommand::CreateAcls { acls }
                } else {
                    MetadataCommand::DeleteAcls { acls }
                };
                match self.propose(command).await {
                    Ok((_, result)) => refused_to_error(result),
                    Err(e) => Err(e),
                }
            }
        };
        (0..n)
            .map(|_| AclResult {
                error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                error_message: outcome.as_ref().err().and_then(|e| e.wire_message()),
            })
            .collect()
    }

    /// The metadata log as this leader sees it: each voter's log end from the replication
    /// progress it tracks, the applied index as the high watermark.
    fn describe_quorum(&self, request: &DescribeQuorumRequest) -> DescribeQuorumResponse {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let end = |index: Option<u64>| index.map_or(0, |i| i as i64 + 1);
        let matched = m.replication.clone().unwrap_or_default();
        let node = self.config.node_id;
        let voters: Vec<QuorumReplica> = self
            .config
            .voters
            .iter()
            .map(|v| QuorumReplica {
                id: v.id,
                log_end: match v.id == node {
                    true => end(m.last_log_index),
                    false => matched
                        .get(&(v.id.0 as u64))
                        .map_or(-1, |l| end(l.map(|l| l.index))),
                },
            })
            .collect();
        let observers = match request.include_observers {
            true => self
                .image()
                .brokers
                .keys()
                .filter(|id| !voters.iter().any(|v| v.id == **id))
                .map(|id| QuorumReplica {
                    id: *id,
                    log_end: -1,
                })
                .collect(),
            false => Vec::new(),
        };
        DescribeQuorumResponse {
            leader: node,
            term: m.current_term as i64,
            high_watermark: end(m.last_applied.map(|l| l.index)),
            voters,
            observers,
        }
    }

    /// Begins (or cancels) partition reassignments: each topic's partitions that may be
    /// reassigned in one command, each refused partition with why. The answer comes once
    /// the moves began; they complete as the added replicas catch up.
    async fn reassign_partitions(
        &self,
        request: AlterPartitionReassignmentsRequest,
    ) -> AlterPartitionReassignmentsResponse {
        let image = self.image();
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let checked: Vec<(ReassignablePartition, Result<(), ApiError>)> = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let outcome = image
                        .check_reassignment(&topic.name, p.partition, p.replicas.as_deref())
                        .map_err(|(code, message)| ApiError::new(code, message));
                    (p, outcome)
                })
                .collect();
            let valid: Vec<(PartitionId, Option<Vec<BrokerId>>)> = checked
                .iter()
                .filter(|(_, outcome)| outcome.is_ok())
                .map(|(p, _)| (p.partition, p.replicas.clone()))
                .collect();
            let proposed = match valid.is_empty() {
                true => Ok(()),
                false => self
                    .propose(MetadataCommand::ReassignPartitions {
                        topic: topic.name.clone(),
                        partitions: valid,
                    })
                    .await
                    .and_then(|(_, result)| refused_to_error(result)),
            };
            // Apply checks each partition again: one a concurrent change made ineligible
            // was left as it was, and says so.
            let after = self.image();
            let applied = |p: &ReassignablePartition| {
                after
                    .partition(&topic.name, p.partition)
                    .is_some_and(|meta| match &p.replicas {
                        Some(target) => target.iter().all(|b| meta.replicas.contains(b)),
                        None => !meta.is_reassigning(),
                    })
            };
            let partitions = checked
                .into_iter()
                .map(|(p, outcome)| {
                    let outcome =
                        outcome
                            .and_then(|()| proposed.clone())
                            .and_then(|()| match applied(&p) {
                                true => Ok(()),
                                false => Err(ApiError::new(
                                    ErrorCode::InvalidReplicaAssignment,
                                    format!(
                                        "{}-{} changed while its move was proposed; list the \
                                     moves and retry",
                                        topic.name, p.partition.0
                                    ),
                                )),
                            });
                    PartitionResult {
                        partition: p.partition,
                        error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                        error_message: outcome.as_ref().err().and_then(|e| e.wire_message()),
                    }
                })
                .collect();
            topics.push(TopicPartitionResults {
                name: topic.name,
                partitions,
            });
        }
        AlterPartitionReassignmentsResponse { topics }
    }

    /// Sets and removes client quotas: the entries that make sense in one command, each
    /// refused entry with why (Kafka answers per entry, too).
    async fn alter_client_quotas(
        &self,
        request: AlterClientQuotasRequest,
    ) -> AlterClientQuotasResponse {
        let parsed: Vec<Result<QuotaChange, ApiError>> = request
            .entries
            .iter()
            .map(|e| {
                QuotaChange::from_wire(e)
                    .map_err(|why| ApiError::new(ErrorCode::InvalidRequest, why))
            })
            .collect();
        let changes: Vec<QuotaChange> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
        let proposed = if changes.is_empty() || request.validate_only {
            Ok(())
        } else {
            match self
                .propose(MetadataCommand::AlterClientQuotas { changes })
                .await
            {
                Ok((_, result)) => refused_to_error(result),
                Err(e) => Err(e),
            }
        };
        let results = parsed
            .into_iter()
            .map(|p| {
                let outcome = p.and_then(|_| proposed.clone());
                QuotaResult {
                    error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                    error_message: outcome.as_ref().err().and_then(|e| e.wire_message()),
                }
            })
            .collect();
        AlterClientQuotasResponse { results }
    }

    /// Removes, then creates or replaces SCRAM credentials, one command each. The
    /// controller derives the stored keys from the salted password it was sent; the
    /// salted password itself is not kept.
    async fn alter_scram_credentials(
        &self,
        request: AlterUserScramCredentialsRequest,
    ) -> AlterUserScramCredentialsResponse {
        let unknown = |name: &str| {
            ApiError::new(
                ErrorCode::UnsupportedSaslMechanism,
                format!("{name:?} is not a SCRAM mechanism: use SCRAM-SHA-256 or SCRAM-SHA-512"),
            )
        };
        let mut commands = Vec::new();
        for d in request.deletions {
            let command = Mechanism::from_name(&d.mechanism)
                .map(|mechanism| MetadataCommand::DeleteScramCredential {
                    user: d.name.clone(),
                    mechanism,
                })
                .ok_or_else(|| unknown(&d.mechanism));
            commands.push((d.name, command));
        }
        for u in request.upsertions {
            let command = Mechanism::from_name(&u.mechanism)
                .ok_or_else(|| unknown(&u.mechanism))
                .and_then(|mechanism| {
                    if u.salted_password.len() != mechanism.output_len() {
                        return Err(ApiError::new(
                            ErrorCode::UnacceptableCredential,
                            format!(
                                "a {mechanism} salted password is {} bytes",
                                mechanism.output_len()
                            ),
                        ));
                    }
                    let iterations = u32::try_from(u.iterations).unwrap_or(0);
                    Ok(MetadataCommand::UpsertScramCredential {
                        user: u.name.clone(),
                        mechanism,
                        credential: ScramCredential::from_salted_password(
                            mechanism,
                            u.salt.to_vec(),
                            iterations,
                            &u.salted_password,
                        ),
                    })
                });
            commands.push((u.name, command));
        }
        let mut results = Vec::with_capacity(commands.len());
        for (user, command) in commands {
            let outcome = match command {
                Ok(command) => match self.propose(command).await {
                    Ok((_, result)) => refused_to_error(result),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if outcome.is_ok() {
                tracing::info!(%user, "altered SCRAM credentials");
            }
            results.push(AlterUserScramCredentialsResult {
                user,
                error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                error_message: outcome.err().and_then(|e| e.wire_message()),
            });
        }
        AlterUserScramCredentialsResponse { results }
    }

    async fn alter_configs(&self, request: AlterConfigsRequest) -> AlterConfigsResponse {
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let outcome = self
                .alter_topic_configs(&topic, request.validate_only)
                .await;
            topics.push(AlterConfigsResult {
                name: topic.name,
                error_code: outcome.as_ref().err().map_or(ErrorCode::None, |e| e.code),
                error_message: outcome.err().and_then(|e| e.wire_message()),
            });
        }
        AlterConfigsResponse { topics }
    }

    /// Applies a topic's config changes to its current overrides, validates the result as
    /// a creation would, and proposes it.
    async fn alter_topic_configs(
        &self,
        topic: &AlterableTopic,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let name = &topic.name;
        if internal_topic(name).is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "{name} is internal: the broker sets its configs (it must keep every \
                     coordinator's last state)"
                ),
            ));
        }
        let image = self.image();
        let mut configs = image
            .topics
            .get(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?
            .configs
            .clone();
        for change in &topic.configs {
            match (change.operation, &change.value) {
                (CONFIG_SET, Some(value)) => {
                    configs.insert(change.name.clone(), value.clone());
                }
                (CONFIG_DELETE, _) => {
                    configs.remove(&change.name);
                }
                (CONFIG_SET, None) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidConfig,
                        format!("config {} has no value to set", change.name),
                    ))
                }
                (other, _) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!(
                            "config operation {other} on {} is not supported: sluice's topic \
                             configs take set (0) and delete (1), none is a list",
                            change.name
                        ),
                    ))
                }
            }
        }
        crate::topic_config::topic_log_config(&self.config, &configs)?;
        if validate_only {
            return Ok(());
        }
        let (_, result) = self
            .propose(MetadataCommand::AlterTopicConfigs {
                name: name.clone(),
                configs: configs.clone(),
            })
            .await?;
        refused_to_error(result)?;
        tracing::info!(topic = %name, ?configs, "altered topic configs");
        Ok(())
    }

    async fn allocate_producer_ids(
        &self,
        request: AllocateProducerIdsRequest,
    ) -> Result<AllocateProducerIdsResponse, ApiError> {
        let (_, result) = self
            .propose(MetadataCommand::AllocateProducerIds {
                broker_id: request.broker_id,
                broker_epoch: request.broker_epoch,
            })
            .await?;
        Ok(match result {
            CommandResult::ProducerIds { first, len } => AllocateProducerIdsResponse {
                error_code: ErrorCode::None,
                error_message: None,
                producer_id_start: first,
                producer_id_len: len,
            },
            other => {
                let e = refused_to_error(other).err().unwrap_or_else(|| {
                    ApiError::new(ErrorCode::UnknownServerError, "no producer ids returned")
                });
                AllocateProducerIdsResponse {
                    error_code: e.code,
                    error_message: e.wire_message(),
                    producer_id_start: -1,
                    producer_id_len: 0,
                }
            }
        })
    }

    /// Logs, at DEBUG, the distribution of the gaps between consecutive heartbeats of a
    /// broker since the last call: what the session timeout must cover
    /// (`bench/failover-soak.sh` reads these lines). One line per period, not one per
    /// heartbeat, so measuring does not add its own writes to the load.
    fn log_heartbeat_gaps(&self, term: u64) {
        let mut gaps = self.with_sessions(term, |s| std::mem::take(&mut s.gaps_ms));
        if gaps.is_empty() {
            return;
        }
        gaps.sort_unstable();
        let q = |p: f64| gaps[((p * gaps.len() as f64).ceil() as usize).clamp(1, gaps.len()) - 1];
        tracing::debug!(
            heartbeats = gaps.len(),
            p50_ms = q(0.5),
            p99_ms = q(0.99),
            p999_ms = q(0.999),
            max_ms = q(1.0),
            "heartbeat gaps"
        );
    }

    /// While this node leads: bootstraps the cluster id once and fences brokers whose
    /// sessions expired. Runs until `stopping` turns true.
    pub async fn run(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let period = (self.config.heartbeat_interval() / 2).max(Duration::from_millis(10));
        // The next look at the sessions: every `period`, and at the earliest deadline when
        // that comes sooner, so a session is fenced when it ends, not up to a period later.
        let mut next_check = Instant::now() + period;
        let mut metrics = self.raft.metrics();
        let mut gap_summary = tokio::time::interval(Duration::from_secs(30));
        gap_summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Kafka's leader.imbalance.check.interval: 0 turns the automatic rebalance off.
        let rebalance_every = self.config.leader_imbalance_check_interval();
        let mut leader_check =
            tokio::time::interval(rebalance_every.unwrap_or(Duration::from_secs(3600)));
        leader_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        leader_check.tick().await;
        let mut rebalance_now = false;
        let mut suspects = self
            .suspects_rx
            .lock()
            .expect("suspects poisoned")
            .take()
            .expect("Controller::run runs once");
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_check) => {}
                _ = self.wake.notified() => {}
                _ = gap_summary.tick() => {
                    if let Some(term) = self.leading_term() {
                        self.log_heartbeat_gaps(term);
                    }
                    continue;
                }
                _ = leader_check.tick(), if rebalance_every.is_some() => {
                    rebalance_now = true;
                }
                Some(suspect) = suspects.recv() => {
                    tokio::spawn(Arc::clone(&self).probe(suspect));
                    continue;
                }
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.note_leader();
                    continue;
                }
                _ = stopping.wait_for(|s| *s) => return,
            }
            if std::mem::take(&mut rebalance_now) {
                if self.leading_term().is_some() {
                    self.rebalance_leaders().await;
                }
                continue;
            }
            next_check = Instant::now() + period;
            let Some(term) = self.leading_term() else {
                continue;
            };
            let image = self.image();
            if image.cluster_id.is_empty() {
                let cluster_id = random_id();
                if self
                    .propose(MetadataCommand::Bootstrap { cluster_id })
                    .await
                    .is_ok()
                {
                    tracing::info!(cluster_id = %self.image().cluster_id, "bootstrapped the cluster");
                }
                continue;
            }
            let now = Instant::now();
            let (expired, earliest): (Vec<(BrokerId, i64, bool)>, Option<Instant>) = self
                .with_sessions(term, |s| {
                    let live = || image.brokers.values().filter(|b| !b.fenced);
                    let expired = live()
                        .filter(|b| s.deadlines.get(&b.id).is_none_or(|d| *d <= now))
                        .map(|b| (b.id, b.epoch, b.shutting_down))
                        .collect();
                    let earliest = live()
                        .filter_map(|b| s.deadlines.get(&b.id))
                        .filter(|d| **d > now)
                        .min()
                        .copied();
                    (expired, earliest)
                });
            if let Some(earliest) = earliest {
                next_check = next_check.min(earliest);
            }
            for (id, epoch, shutting_down) in expired {
                if shutting_down {
                    // It asked to stop, and did: expected, not a failure.
                    tracing::info!(broker = %id, "broker stopped after its controlled shutdown: fencing it");
                } else {
                    tracing::warn!(broker = %id, "broker session expired: fencing it and moving its leaderships");
                }
                match self
                    .propose(MetadataCommand::FenceBroker { id, epoch })
                    .await
                {
                    Ok(_) => {
                        self.fencings
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(broker = %id, "could not fence: {}", e.message),
                }
            }
        }
    }
}

fn alter_refused(
    partition: sluice_protocol::PartitionId,
    code: ErrorCode,
    message: String,
) -> AlterPartitionPartitionResponse {
    AlterPartitionPartitionResponse {
        partition,
        error_code: code,
        error_message: Some(message),
        leader_id: BrokerId(-1),
        leader_epoch: LeaderEpoch(-1),
        isr: Vec::new(),
        partition_epoch: -1,
    }
}

/// A refused command as an error; anything else is fine.
/// The share of the partitions a broker is preferred for but does not lead above which
/// the automatic rebalance moves them back (Kafka's `leader.imbalance.per.broker.percentage`).
const LEADER_IMBALANCE_PERCENT: u32 = 10;

fn refused_to_error(result: CommandResult) -> Result<(), ApiError> {
    match result {
        CommandResult::Refused { code, message } => {
            Err(ApiError::new(ErrorCode::from_i16(code), message))
        }
        _ => Ok(()),
    }
}

/// The deadline a new controller gives the previous one: a session from when this node
/// last heard from it (`heard_at`, if it stood for election after a silence), but no later
/// than `grace` from `now`, the deadline of any broker with evidence against it.
pub(crate) fn previous_controller_deadline(
    now: Instant,
    heard_at: Option<Instant>,
    session: Duration,
    grace: Duration,
) -> Instant {
    let latest = now + grace;
    heard_at.map_or(latest, |at| (at + session).clamp(now, latest))
}

#[cfg(test)]
mod tests;
