//! The cluster metadata image and the commands of the metadata log.
//!
//! Every node applies the same committed commands in the same order to its own
//! [`MetadataImage`], so [`MetadataImage::apply`] must be deterministic: no clock, no
//! randomness, no I/O; anything that varies (the log index, ids) comes in as arguments.
//! Validation that depends on the image (a topic already exists, a stale leader epoch)
//! happens here too, so two proposals racing on different controllers cannot both win:
//! the second one applied sees the first and is refused in its [`CommandResult`].
//!
//! Where replicas go and who leads after a failure are pure functions of the image in
//! [`placement`]; the checks of each command run before its first change, so a refused
//! command leaves the image exactly as it was.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_protocol::scram::{Mechanism, ScramCredential};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId};

pub mod acls;
pub mod placement;
pub mod quotas;
mod reassign;

/// The whole cluster as the metadata log describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Chosen by the node that bootstraps the cluster; empty until then.
    pub cluster_id: String,
    /// Registered brokers by id.
    pub brokers: BTreeMap<BrokerId, BrokerMeta>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// The first producer id not yet handed out (idempotent producers).
    pub next_producer_id: i64,
    /// SCRAM users: per user, a credential per mechanism (salted and hashed, never a
    /// password). Absent from images written before users existed.
    #[serde(default)]
    pub users: BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>,
    /// The ACLs (`crate::security::acl` decides with them). Absent from images written
    /// before ACLs existed.
    #[serde(default)]
    pub acls: std::collections::BTreeSet<acls::AclBinding>,
    /// Client quotas, sorted by entity. Absent from images written before quotas existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_quotas: Vec<quotas::ClientQuota>,
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    /// The broker's node id.
    pub id: BrokerId,
    /// The log index of its current registration: every heartbeat and AlterPartition
    /// carries it, so a request from an older incarnation is told apart.
    pub epoch: i64,
    /// Random id of the registered process run (hex).
    pub incarnation_id: String,
    /// Advertised addresses, one per listener name (`native`).
    pub listeners: Vec<ListenerMeta>,
    /// The broker's rack, if it has one.
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is in no ISR (but the last one it was in).
    pub fenced: bool,
    /// The broker asked to shut down; it gets no new leaderships.
    pub shutting_down: bool,
}

/// One advertised listener of a broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerMeta {
    /// `native` or `kafka`.
    pub name: String,
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// The log index of the topic's creation: unique forever, so a topic deleted and
    /// created again under the same name is a different topic (replicas of the old one
    /// are wiped, never mistaken for the new one).
    pub id: u64,
    /// Replicas per partition.
    pub replication_factor: u16,
    /// Config overrides given at creation (`retention.ms` ...), validated by the proposer.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index, 0..n.
    pub partitions: Vec<PartitionMeta>,
}

/// One partition's placement and leadership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The partition's index.
    pub index: PartitionId,
    /// The leader, or -1 when no eligible replica is alive (offline).
    pub leader: BrokerId,
    /// Bumped on every leader change (stamped on every batch the leader writes).
    pub leader_epoch: LeaderEpoch,
    /// Bumped on every change of leader or ISR: AlterPartition compares it (compare-and-set).
    pub partition_epoch: i32,
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// In-sync replicas (the leader always among them while there is one).
    pub isr: Vec<BrokerId>,
    /// The last ISR member came back damaged (its recovery cut off records it may have
    /// counted toward the HW): the partition has no leader until every replica has
    /// reported its log end, and then the longest log leads ([`MetadataCommand::ElectLongestLog`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_log_ends: bool,
    /// Replicas a reassignment adds (`reassign.rs`): in `replicas`, copying the log, not
    /// yet all in the ISR. Empty without a reassignment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding: Vec<BrokerId>,
    /// Replicas a reassignment removes once every added one is in the ISR.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<BrokerId>,
}

/// A command of the metadata log. Proposed by the active controller, applied everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Sets the cluster id if none is set (the first leader proposes it once).
    Bootstrap {
        /// The new cluster's id.
        cluster_id: String,
    },
    /// A broker (re)registers. A new incarnation fences the old one first.
    RegisterBroker {
        /// The broker.
        id: BrokerId,
        /// Its process run's random id (hex).
        incarnation_id: String,
        /// Its advertised listeners.
        listeners: Vec<ListenerMeta>,
        /// Its rack.
        rack: Option<String>,
    },
    /// A broker's session expired: fence it, move its leaderships, shrink its ISRs.
    FenceBroker {
        /// The broker.
        id: BrokerId,
        /// The registration the session belonged to.
        epoch: i64,
    },
    /// A registered broker caught up with the metadata log: it may lead and join ISRs.
    UnfenceBroker {
        /// The broker.
        id: BrokerId,
        /// Its registration epoch.
        epoch: i64,
    },
    /// A broker is shutting down gracefully: move its leaderships away and fence it.
    ControlledShutdown {
        /// The broker.
        id: BrokerId,
        /// Its registration epoch.
        epoch: i64,
    },
    /// Creates a topic, placing replicas over the active brokers.
    CreateTopic {
        /// The name (validated by the proposer).
        name: String,
        /// Partitions (validated: 1..=1024).
        partitions: u32,
        /// Replicas per partition (validated: >= 1).
        replication_factor: u16,
        /// Config overrides (validated by the proposer).
        configs: BTreeMap<String, String>,
        /// Each partition's replicas as the user placed them (checked by the proposer:
        /// `partitions` lists of `replication_factor` distinct brokers); `None` places them
        /// over the active brokers. Absent from commands written before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignment: Option<Vec<Vec<BrokerId>>>,
    },
    /// Adds partitions to a topic, placing their replicas over the active brokers as if the
    /// topic had been created with `partitions`; the existing ones stay where they are.
    CreatePartitions {
        /// The topic.
        name: String,
        /// The topic's new partition count (more than it has; at most the topic limit).
        partitions: u32,
    },
    /// Moves the leadership of each partition named to its preferred replica (the first
    /// assigned), where that replica is active and in the ISR and does not lead already
    /// (Kafka's preferred leader election); the others stay as they are.
    ElectPreferredLeaders {
        /// `(topic, partition)` of each partition.
        partitions: Vec<(String, PartitionId)>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// The name.
        name: String,
    },
    /// Replaces a topic's config overrides (validated by the proposer).
    AlterTopicConfigs {
        /// The topic.
        name: String,
        /// Its new overrides, all of them.
        configs: BTreeMap<String, String>,
    },
    /// A partition leader changes the ISR (compare-and-set on the partition epoch).
    AlterPartition {
        /// The leader asking.
        broker_id: BrokerId,
        /// Its registration epoch.
        broker_epoch: i64,
        /// The topic.
        topic: String,
        /// The partition.
        partition: PartitionId,
        /// The leader epoch the leader holds.
        leader_epoch: LeaderEpoch,
        /// The partition epoch the proposal is based on.
        partition_epoch: i32,
        /// The proposed ISR.
        new_isr: Vec<BrokerId>,
    },
    /// Hands a block of producer ids to a broker.
    AllocateProducerIds {
        /// The broker asking.
        broker_id: BrokerId,
        /// Its registration epoch.
        broker_epoch: i64,
    },
    /// A broker's recovery cut data off these replicas: each leaves its ISR, or, where it
    /// is the last member, the partition waits for a longest-log election.
    ReportDamage {
        /// The broker.
        id: BrokerId,
        /// Its registration epoch.
        epoch: i64,
        /// `(topic, partition)` of each damaged replica.
        partitions: Vec<(String, PartitionId)>,
    },
    /// Every replica of a partition awaiting a longest-log election reported its log end:
    /// `leader`'s is the longest, so it leads with an ISR of itself.
    ElectLongestLog {
        /// The topic.
        topic: String,
        /// The partition.
        partition: PartitionId,
        /// The partition epoch the reports were made under (compare-and-set).
        partition_epoch: i32,
        /// The replica with the longest log.
        leader: BrokerId,
    },
    /// Creates or replaces a user's SCRAM credential of one mechanism.
    UpsertScramCredential {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: Mechanism,
        /// The credential (checked by `apply`).
        credential: ScramCredential,
    },
    /// Adds ACLs (validated by `apply`; an ACL already there is no change).
    CreateAcls {
        /// The ACLs.
        acls: Vec<acls::AclBinding>,
    },
    /// Removes ACLs, each exactly as it was added.
    DeleteAcls {
        /// The ACLs.
        acls: Vec<acls::AclBinding>,
    },
    /// Moves partitions of a topic to other replicas (Kafka's AlterPartitionReassignments):
    /// each to its target replica list, or (`None`) back to the replicas it had before its
    /// reassignment began. A partition `check_reassignment` refuses is left as it is.
    ReassignPartitions {
        /// The topic.
        topic: String,
        /// Each partition's target replicas, or `None` to cancel its reassignment.
        partitions: Vec<(PartitionId, Option<Vec<BrokerId>>)>,
    },
    /// Sets and removes client quotas (validated by `apply`: all or none).
    AlterClientQuotas {
        /// One change per entity.
        changes: Vec<quotas::QuotaChange>,
    },
    /// Removes a user's SCRAM credential of one mechanism (the user goes with its last).
    DeleteScramCredential {
        /// The user.
        user: String,
        /// The mechanism.
        mechanism: Mechanism,
    },
}

/// What applying a command yields; returned to the proposer by openraft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; nothing to return. Also the result of a membership or blank entry.
    #[default]
    Done,
    /// A registration's broker epoch.
    BrokerEpoch(i64),
    /// A partition's state after an AlterPartition.
    Partition(PartitionMeta),
    /// A block of producer ids: `first..first + len`.
    ProducerIds {
        /// The first id of the block.
        first: i64,
        /// How many ids.
        len: i32,
    },
    /// Refused; nothing changed.
    Refused {
        /// Why, as a protocol error code (`ErrorCode::code`).
        code: i16,
        /// What went wrong and what to do, for a human.
        message: String,
    },
}

impl CommandResult {
    /// A refusal with `code` and `message`.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> CommandResult {
        CommandResult::Refused {
            code: code.code(),
            message: message.into(),
        }
    }
}

/// How many producer ids one AllocateProducerIds hands out.
pub const PRODUCER_ID_BLOCK: i32 = 1000;

/// The topic config that allows an unclean leader election: when every ISR member of a
/// partition is fenced, a replica outside the ISR that comes back may lead (losing whatever
/// only the ISR had). `true` or `false`; off unless a topic sets it.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// The most partitions a topic may have (the proposer's limit, re-checked by `apply` so a
/// partition index always fits its `i32`).
const PARTITIONS_MAX: u32 = crate::config::PARTITIONS_MAX as u32;

/// The listener name of sluice's native protocol.
pub const NATIVE_LISTENER: &str = "native";
/// The listener name of the Kafka protocol.
pub const KAFKA_LISTENER: &str = "kafka";

impl ListenerMeta {
    /// `HOST:PORT`, to connect to.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl BrokerMeta {
    /// Whether the broker may lead and join ISRs: unfenced and not shutting down.
    pub fn is_active(&self) -> bool {
        !self.fenced && !self.shutting_down
    }

    /// The advertised listener named `name` (`native`), if the broker has one.
    pub fn listener(&self, name: &str) -> Option<&ListenerMeta> {
        self.listeners.iter().find(|listener| listener.name == name)
    }
}

impl TopicMeta {
    /// Partition `partition`, if the topic has it.
    pub fn partition(&self, partition: PartitionId) -> Option<&PartitionMeta> {
        usize::try_from(partition.0)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    fn partition_mut(&mut self, partition: PartitionId) -> Option<&mut PartitionMeta> {
        usize::try_from(partition.0)
            .ok()
            .and_then(|i| self.partitions.get_mut(i))
    }

    /// Whether the topic allows unclean leader elections ([`UNCLEAN_LEADER_ELECTION_ENABLE`]).
    pub fn unclean_leader_election(&self) -> bool {
        self.configs
            .get(UNCLEAN_LEADER_ELECTION_ENABLE)
            .is_some_and(|value| value.eq_ignore_ascii_case("true"))
    }
}

impl PartitionMeta {
    /// Sets leader and ISR, bumping the leader epoch if the leader changes and the partition
    /// epoch if either changes. Every leadership and ISR change of `apply` goes through here,
    /// so the epochs cannot be forgotten.
    fn change(&mut self, leader: BrokerId, isr: Vec<BrokerId>) {
        let leader_changed = leader != self.leader;
        if !leader_changed && isr == self.isr {
            return;
        }
        if leader_changed {
            self.leader_epoch = LeaderEpoch(self.leader_epoch.0 + 1);
        }
        self.partition_epoch += 1;
        self.leader = leader;
        self.isr = isr;
    }

    /// An unclean election, for a topic that allows them: a partition without a leader and
    /// without an active ISR member gets the first active replica in assignment order as
    /// leader and sole ISR member (as Kafka's offline-partition election picks). Never a
    /// replica a reassignment is adding (its log may be a prefix), and not while the
    /// longest-log election after damage waits for reports. What only the ISR held is lost:
    /// the topic chose availability.
    fn elect_unclean(&mut self, brokers: &BTreeMap<BrokerId, BrokerMeta>) {
        if self.leader != BrokerId::NONE {
            return;
        }
        if let Some(leader) = self.unclean_candidate(&self.isr, brokers) {
            self.change(leader, vec![leader]);
        }
    }

    /// The replica an unclean election would pick with `isr` (see
    /// [`PartitionMeta::elect_unclean`]), if one may lead.
    fn unclean_candidate(
        &self,
        isr: &[BrokerId],
        brokers: &BTreeMap<BrokerId, BrokerMeta>,
    ) -> Option<BrokerId> {
        if self.awaiting_log_ends || isr.iter().any(|b| is_active(brokers, *b)) {
            return None;
        }
        self.replicas
            .iter()
            .copied()
            .find(|b| !self.adding.contains(b) && is_active(brokers, *b))
    }

    /// Takes broker `id` out of service on this partition: out of the ISR unless it is the
    /// last member, and out of the leadership in favour of the first eligible replica.
    /// With `unclean`, a partition this leaves without a leader elects one outside the ISR
    /// in the same change (one epoch bump), as [`PartitionMeta::elect_unclean`] would.
    fn remove_broker(
        &mut self,
        id: BrokerId,
        brokers: &BTreeMap<BrokerId, BrokerMeta>,
        unclean: bool,
    ) {
        // The last ISR member stays even when fenced: it is the one replica known to hold
        // every committed record, so the partition waits for it (or for an unclean election
        // its topic allows) rather than letting a replica that may lack them lead unnoticed.
        let isr = if self.isr.len() > 1 {
            self.isr.iter().copied().filter(|b| *b != id).collect()
        } else {
            self.isr.clone()
        };
        let leader = if self.leader == id {
            placement::elect_leader(&self.replicas, &isr, |b| b != id && is_active(brokers, b))
        } else {
            self.leader
        };
        let elected = (unclean && leader == BrokerId::NONE)
            .then(|| self.unclean_candidate(&isr, brokers))
            .flatten();
        match elected {
            Some(leader) => self.change(leader, vec![leader]),
            None => self.change(leader, isr),
        }
    }
}

/// Whether broker `id` is registered and active (unfenced, not shutting down).
fn is_active(brokers: &BTreeMap<BrokerId, BrokerMeta>, id: BrokerId) -> bool {
    brokers.get(&id).is_some_and(BrokerMeta::is_active)
}

/// Why a command was refused; becomes [`CommandResult::Refused`]. A refused command changes
/// nothing, so every check runs before the first change.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl From<Refusal> for CommandResult {
    fn from(refusal: Refusal) -> CommandResult {
        CommandResult::refused(refusal.code, refusal.message)
    }
}

/// Longest user name.
pub const USER_NAME_LEN_MAX: usize = 255;

/// A user name: 1 to 255 characters, no control characters.
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > USER_NAME_LEN_MAX {
        return Err(format!(
            "a user name has 1 to {USER_NAME_LEN_MAX} characters, not {}",
            name.chars().count()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("user name {name:?} has a control character"));
    }
    Ok(())
}

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        code,
        message: message.into(),
    })
}

/// Partition `index` of `topic`, or the refusal of a command that names one that does not
/// exist. A function of the topics alone, so callers keep reading the brokers beside it.
fn existing_partition<'a>(
    topics: &'a mut BTreeMap<String, TopicMeta>,
    topic: &str,
    index: PartitionId,
) -> Result<&'a mut PartitionMeta, Refusal> {
    match topics
        .get_mut(topic)
        .and_then(|meta| meta.partition_mut(index))
    {
        Some(partition) => Ok(partition),
        None => refuse(
            ErrorCode::UnknownTopicOrPartition,
            format!("partition {topic}-{index} does not exist (it may have been deleted)"),
        ),
    }
}

/// The partitions of a topic placed by `assignment` (one replica list per partition, in
/// index order), as they start: the preferred replica leads, every replica in sync, epoch 0.
fn new_partitions(assignment: Vec<Vec<BrokerId>>) -> impl Iterator<Item = PartitionMeta> {
    (0i32..).zip(assignment).map(|(p, replicas)| PartitionMeta {
        index: PartitionId(p),
        leader: replicas[0],
        leader_epoch: LeaderEpoch(0),
        partition_epoch: 0,
        isr: replicas.clone(),
        replicas,
        awaiting_log_ends: false,
        adding: Vec::new(),
        removing: Vec::new(),
    })
}

/// An AlterPartition's fields, borrowed from the command.
struct IsrChange<'a> {
    broker_id: BrokerId,
    broker_epoch: i64,
    topic: &'a str,
    partition: PartitionId,
    leader_epoch: LeaderEpoch,
    partition_epoch: i32,
    new_isr: &'a [BrokerId],
}

impl MetadataImage {
    /// Applies the command committed at log `index`. Deterministic: every node gets the same
    /// image and the same result. A refused command leaves the image as it was.
    pub fn apply(&mut self, index: u64, command: &MetadataCommand) -> CommandResult {
        let result = match command {
            MetadataCommand::Bootstrap { cluster_id } => Ok(self.bootstrap(cluster_id)),
            MetadataCommand::RegisterBroker {
                id,
                incarnation_id,
                listeners,
                rack,
            } => self.register_broker(index, *id, incarnation_id, listeners, rack),
            MetadataCommand::FenceBroker { id, epoch } => self.fence_broker(*id, *epoch),
            MetadataCommand::UnfenceBroker { id, epoch } => self.unfence_broker(*id, *epoch),
            MetadataCommand::ControlledShutdown { id, epoch } => {
                self.controlled_shutdown(*id, *epoch)
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
                assignment,
            } => self.create_topic(
                index,
                name,
                *partitions,
                *replication_factor,
                configs,
                assignment.as_deref(),
            ),
            MetadataCommand::CreatePartitions { name, partitions } => {
                self.create_partitions(name, *partitions)
            }
            MetadataCommand::ElectPreferredLeaders { partitions } => {
                Ok(self.elect_preferred_leaders(partitions))
            }
            MetadataCommand::DeleteTopic { name } => self.delete_topic(name),
            MetadataCommand::AlterTopicConfigs { name, configs } => {
                self.alter_topic_configs(name, configs)
            }
            MetadataCommand::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => self.upsert_scram_credential(user, *mechanism, credential),
            MetadataCommand::DeleteScramCredential { user, mechanism } => {
                self.delete_scram_credential(user, *mechanism)
            }
            MetadataCommand::CreateAcls { acls } => self.create_acls(acls),
            MetadataCommand::DeleteAcls { acls } => self.delete_acls(acls),
            MetadataCommand::AlterClientQuotas { changes } => self.alter_client_quotas(changes),
            MetadataCommand::ReassignPartitions { topic, partitions } => {
                Ok(self.reassign_partitions(topic, partitions))
            }
            MetadataCommand::AlterPartition {
                broker_id,
                broker_epoch,
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => self.alter_partition(IsrChange {
                broker_id: *broker_id,
                broker_epoch: *broker_epoch,
                topic,
                partition: *partition,
                leader_epoch: *leader_epoch,
                partition_epoch: *partition_epoch,
                new_isr,
            }),
            MetadataCommand::AllocateProducerIds {
                broker_id,
                broker_epoch,
            } => self.allocate_producer_ids(*broker_id, *broker_epoch),
            MetadataCommand::ReportDamage {
                id,
                epoch,
                partitions,
            } => self.report_damage(*id, *epoch, partitions),
            MetadataCommand::ElectLongestLog {
                topic,
                partition,
                partition_epoch,
                leader,
            } => self.elect_longest_log(topic, *partition, *partition_epoch, *leader),
        };
        // Any change may be the one a reassignment waited for (its added replicas joined the
        // ISR, a target replica can lead again).
        self.complete_reassignments();
        debug_assert_eq!(self.check_invariants(), Ok(()), "after {command:?}");
        result.unwrap_or_else(CommandResult::from)
    }

    /// The brokers that may lead and join ISRs (registered, unfenced, not shutting down),
    /// by id.
    pub fn active_brokers(&self) -> Vec<BrokerId> {
        self.brokers
            .values()
            .filter(|broker| broker.is_active())
            .map(|broker| broker.id)
            .collect()
    }

    /// The active brokers with their racks, by id: what placement spreads replicas over.
    pub fn active_racks(&self) -> BTreeMap<BrokerId, Option<String>> {
        self.brokers
            .values()
            .filter(|broker| broker.is_active())
            .map(|broker| (broker.id, broker.rack.clone()))
            .collect()
    }

    /// Broker `id`'s advertised listener named `listener` (`native`), if the broker is
    /// registered and advertises one.
    pub fn broker_address(&self, id: BrokerId, listener: &str) -> Option<&ListenerMeta> {
        self.brokers.get(&id)?.listener(listener)
    }

    /// Partition `partition` of `topic`, if both exist.
    pub fn partition(&self, topic: &str, partition: PartitionId) -> Option<&PartitionMeta> {
        self.topics.get(topic)?.partition(partition)
    }

    /// Whether a preferred leader election would move `topic`'s `partition` to its preferred
    /// replica now, or why not: UNKNOWN_TOPIC_OR_PARTITION, ELECTION_NOT_NEEDED (it leads),
    /// PREFERRED_LEADER_NOT_AVAILABLE (its broker is not active, it is not in the ISR, or
    /// the partition awaits a longest-log election).
    pub fn preferred_election(
        &self,
        topic: &str,
        partition: PartitionId,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(meta) = self.partition(topic, partition) else {
            return Err((
                ErrorCode::UnknownTopicOrPartition,
                format!("{topic}-{} does not exist", partition.0),
            ));
        };
        let preferred = meta.replicas[0];
        if meta.leader == preferred {
            return Err((
                ErrorCode::ElectionNotNeeded,
                format!(
                    "{topic}-{}: its preferred replica {preferred} leads already",
                    partition.0
                ),
            ));
        }
        if !is_active(&self.brokers, preferred)
            || !meta.isr.contains(&preferred)
            || meta.awaiting_log_ends
        {
            return Err((
                ErrorCode::PreferredLeaderNotAvailable,
                format!(
                    "{topic}-{}: its preferred replica {preferred} cannot lead now (its broker \
                     is down, or it is not in the in-sync replicas {}); retry once it has \
                     caught up",
                    partition.0,
                    meta.isr
                        .iter()
                        .map(BrokerId::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The partitions whose preferred replica should lead again (Kafka's automatic leader
    /// rebalance): of each broker whose share of the partitions it is preferred for but
    /// does not lead is above `imbalance_percent`, those it could lead now.
    pub fn imbalanced_partitions(&self, imbalance_percent: u32) -> Vec<(String, PartitionId)> {
        let mut by_preferred: BTreeMap<BrokerId, (usize, Vec<(String, PartitionId)>)> =
            BTreeMap::new();
        for (name, topic) in &self.topics {
            for p in &topic.partitions {
                let entry = by_preferred.entry(p.replicas[0]).or_default();
                entry.0 += 1;
                if p.leader != p.replicas[0] {
                    entry.1.push((name.clone(), p.index));
                }
            }
        }
        by_preferred
            .into_values()
            .filter(|(preferred, moved)| {
                moved.len() * 100 > *preferred * imbalance_percent as usize
            })
            .flat_map(|(_, moved)| moved)
            .filter(|(topic, partition)| self.preferred_election(topic, *partition).is_ok())
            .collect()
    }

    /// Every partition with a replica on broker `id`, in topic and partition order, with
    /// its topic's name and metadata: what that broker must host.
    pub fn partitions_on(
        &self,
        id: BrokerId,
    ) -> impl Iterator<Item = (&str, &TopicMeta, &PartitionMeta)> + '_ {
        self.topics.iter().flat_map(move |(name, topic)| {
            topic
                .partitions
                .iter()
                .filter(move |partition| partition.replicas.contains(&id))
                .map(move |partition| (name.as_str(), topic, partition))
        })
    }

    /// Checks the invariants every image reachable through `apply` keeps, and says which one
    /// is broken and where: replicas are distinct registered brokers, the ISR is a non-empty
    /// duplicate-free subset of them, the leader is -1 or an active ISR member (-1 while a
    /// longest-log election is awaited), a fenced broker is in an ISR only as its last
    /// member, a broker shutting down is fenced.
    pub fn check_invariants(&self) -> Result<(), String> {
        for broker in self.brokers.values() {
            if broker.shutting_down && !broker.fenced {
                return Err(format!(
                    "broker {} is shutting down but not fenced",
                    broker.id
                ));
            }
        }
        for (name, topic) in &self.topics {
            for (i, partition) in topic.partitions.iter().enumerate() {
                self.check_partition(i, partition)
                    .map_err(|why| format!("{name}-{i}: {why} in {partition:?}"))?;
            }
        }
        Ok(())
    }

    fn check_partition(&self, i: usize, partition: &PartitionMeta) -> Result<(), String> {
        let distinct =
            |ids: &[BrokerId]| ids.iter().enumerate().all(|(j, id)| !ids[..j].contains(id));
        if usize::try_from(partition.index.0).ok() != Some(i) {
            return Err("the index is not the partition's position".into());
        }
        if partition.replicas.is_empty() || !distinct(&partition.replicas) {
            return Err("the replicas are empty or not distinct".into());
        }
        if let Some(id) = partition
            .replicas
            .iter()
            .find(|id| !self.brokers.contains_key(id))
        {
            return Err(format!("replica {id} is not a registered broker"));
        }
        if let Some(id) = partition
            .adding
            .iter()
            .chain(&partition.removing)
            .find(|id| !partition.replicas.contains(id))
        {
            return Err(format!("reassigned replica {id} is not a replica"));
        }
        if partition
            .adding
            .iter()
            .any(|id| partition.removing.contains(id))
        {
            return Err("a replica is both added and removed".into());
        }
        if partition.isr.is_empty() || !distinct(&partition.isr) {
            return Err("the ISR is empty or not distinct".into());
        }
        if let Some(id) = partition
            .isr
            .iter()
            .find(|id| !partition.replicas.contains(id))
        {
            return Err(format!("ISR member {id} is not a replica"));
        }
        if partition.leader != BrokerId::NONE
            && !(partition.isr.contains(&partition.leader)
                && is_active(&self.brokers, partition.leader))
        {
            return Err("the leader is not an active ISR member".into());
        }
        if partition.awaiting_log_ends && partition.leader != BrokerId::NONE {
            return Err("a partition awaiting a longest-log election has a leader".into());
        }
        let fenced_member = partition
            .isr
            .iter()
            .find(|id| self.brokers.get(id).is_some_and(|broker| broker.fenced));
        if let (Some(id), true) = (fenced_member, partition.isr.len() > 1) {
            return Err(format!("fenced broker {id} is in an ISR with others"));
        }
        Ok(())
    }

    fn bootstrap(&mut self, cluster_id: &str) -> CommandResult {
        if self.cluster_id.is_empty() {
            self.cluster_id = cluster_id.to_owned();
        }
        CommandResult::Done
    }

    /// The registration of broker `id` if `epoch` is its current one. An unknown broker is
    /// refused with `unknown` (AlterPartition answers STALE_BROKER_EPOCH there, like Kafka).
    fn registration_mut(
        &mut self,
        id: BrokerId,
        epoch: i64,
        unknown: ErrorCode,
    ) -> Result<&mut BrokerMeta, Refusal> {
        let Some(broker) = self.brokers.get_mut(&id) else {
            return refuse(
                unknown,
                format!(
                    "broker {id} is not registered with the controller; it must register \
                     (and use the epoch it gets) before anything else"
                ),
            );
        };
        if broker.epoch != epoch {
            return refuse(
                ErrorCode::StaleBrokerEpoch,
                format!(
                    "broker {id} sent registration epoch {epoch}, but its current \
                     registration has epoch {}: the request comes from an older run of the \
                     broker and was ignored",
                    broker.epoch
                ),
            );
        }
        Ok(broker)
    }

    fn register_broker(
        &mut self,
        index: u64,
        id: BrokerId,
        incarnation_id: &str,
        listeners: &[ListenerMeta],
        rack: &Option<String>,
    ) -> Result<CommandResult, Refusal> {
        if id.0 < 0 {
            return refuse(
                ErrorCode::InvalidRequest,
                format!("broker id {id} is invalid: node ids are 0 or more; set --node-id"),
            );
        }
        if let Some(existing) = self.brokers.get(&id) {
            if existing.incarnation_id == incarnation_id {
                // A retry of the registration that is already in the log.
                return Ok(CommandResult::BrokerEpoch(existing.epoch));
            }
            // A restart: the old process may have lost unflushed data, so it must not stay
            // in ISRs or lead on the strength of what it held before.
            self.fence(id);
        }
        let epoch = index as i64;
        self.brokers.insert(
            id,
            BrokerMeta {
                id,
                epoch,
                incarnation_id: incarnation_id.to_owned(),
                listeners: listeners.to_vec(),
                rack: rack.clone(),
                fenced: true,
                shutting_down: false,
            },
        );
        Ok(CommandResult::BrokerEpoch(epoch))
    }

    fn fence_broker(&mut self, id: BrokerId, epoch: i64) -> Result<CommandResult, Refusal> {
        self.registration_mut(id, epoch, ErrorCode::BrokerIdNotRegistered)?;
        self.fence(id);
        Ok(CommandResult::Done)
    }

    fn controlled_shutdown(&mut self, id: BrokerId, epoch: i64) -> Result<CommandResult, Refusal> {
        self.registration_mut(id, epoch, ErrorCode::BrokerIdNotRegistered)?
            .shutting_down = true;
        self.fence(id);
        Ok(CommandResult::Done)
    }

    /// Fences broker `id` (if registered and not fenced yet) and takes it out of every ISR
    /// it is not the last member of and out of every leadership, in topic/partition order.
    fn fence(&mut self, id: BrokerId) {
        match self.brokers.get_mut(&id) {
            Some(broker) if !broker.fenced => broker.fenced = true,
            _ => return,
        }
        let brokers = &self.brokers;
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_leader_election();
            for partition in &mut topic.partitions {
                partition.remove_broker(id, brokers, unclean);
            }
        }
    }

    fn unfence_broker(&mut self, id: BrokerId, epoch: i64) -> Result<CommandResult, Refusal> {
        let broker = self.registration_mut(id, epoch, ErrorCode::BrokerIdNotRegistered)?;
        broker.fenced = false;
        broker.shutting_down = false;
        let brokers = &self.brokers;
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_leader_election();
            for partition in &mut topic.partitions {
                if partition.leader != BrokerId::NONE || partition.awaiting_log_ends {
                    continue;
                }
                if partition.isr.contains(&id) {
                    partition.change(id, partition.isr.clone());
                } else if unclean {
                    partition.elect_unclean(brokers);
                }
            }
        }
        Ok(CommandResult::Done)
    }

    fn report_damage(
        &mut self,
        id: BrokerId,
        epoch: i64,
        partitions: &[(String, PartitionId)],
    ) -> Result<CommandResult, Refusal> {
        self.registration_mut(id, epoch, ErrorCode::BrokerIdNotRegistered)?;
        let brokers = &self.brokers;
        for (topic, index) in partitions {
            // A topic deleted meanwhile, or a replica moved away: nothing to protect.
            let Some(partition) = self
                .topics
                .get_mut(topic)
                .and_then(|meta| meta.partition_mut(*index))
                .filter(|p| p.isr.contains(&id))
            else {
                continue;
            };
            if partition.isr.len() > 1 {
                partition.remove_broker(id, brokers, false);
            } else {
                // The last member may lack committed records another replica still has:
                // only the longest of all the replicas' logs is safe to lead.
                partition.change(BrokerId::NONE, partition.isr.clone());
                partition.awaiting_log_ends = true;
            }
        }
        Ok(CommandResult::Done)
    }

    fn elect_longest_log(
        &mut self,
        topic: &str,
        index: PartitionId,
        partition_epoch: i32,
        leader: BrokerId,
    ) -> Result<CommandResult, Refusal> {
        let brokers = &self.brokers;
        let partition = existing_partition(&mut self.topics, topic, index)?;
        if !partition.awaiting_log_ends || partition.partition_epoch != partition_epoch {
            return refuse(
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "{topic}-{index} changed since the log ends were reported (partition \
                     epoch {} now, {partition_epoch} reported); the election is void",
                    partition.partition_epoch
                ),
            );
        }
        if !partition.replicas.contains(&leader) || !is_active(brokers, leader) {
            return refuse(
                ErrorCode::IneligibleReplica,
                format!("broker {leader} is not an active replica of {topic}-{index}"),
            );
        }
        partition.change(leader, vec![leader]);
        partition.awaiting_log_ends = false;
        Ok(CommandResult::Done)
    }

    fn create_topic(
        &mut self,
        index: u64,
        name: &str,
        n_partitions: u32,
        replication_factor: u16,
        configs: &BTreeMap<String, String>,
        placed: Option<&[Vec<BrokerId>]>,
    ) -> Result<CommandResult, Refusal> {
        if self.topics.contains_key(name) {
            return refuse(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            );
        }
        // The proposer validates these; apply re-checks what would break the image.
        if !(1..=PARTITIONS_MAX).contains(&n_partitions) {
            return refuse(
                ErrorCode::InvalidPartitions,
                format!("a topic needs 1 to {PARTITIONS_MAX} partitions, not {n_partitions}"),
            );
        }
        let assignment = match placed {
            Some(placed) => {
                self.check_placed(placed, n_partitions, replication_factor)?;
                placed.to_vec()
            }
            None => {
                let active = self.active_brokers();
                placement::check_replication_factor(replication_factor, &active)
                    .or_else(|message| refuse(ErrorCode::InvalidReplicationFactor, message))?;
                placement::assign_replicas_by_rack(
                    &self.active_racks(),
                    index,
                    n_partitions,
                    replication_factor,
                )
            }
        };
        let partitions = new_partitions(assignment).collect();
        self.topics.insert(
            name.to_owned(),
            TopicMeta {
                id: index,
                replication_factor,
                configs: configs.clone(),
                partitions,
            },
        );
        Ok(CommandResult::Done)
    }

    /// Checks replicas the user placed: `n_partitions` lists of `replication_factor`
    /// distinct brokers (the proposer's rules, re-checked so the image stays whole), every
    /// one active, so each partition starts with its first replica leading and all in sync.
    fn check_placed(
        &self,
        placed: &[Vec<BrokerId>],
        n_partitions: u32,
        replication_factor: u16,
    ) -> Result<(), Refusal> {
        let shape_ok = placed.len() == n_partitions as usize
            && placed.iter().all(|replicas| {
                let mut distinct = replicas.clone();
                distinct.sort();
                distinct.dedup();
                distinct.len() == replicas.len()
                    && replicas.len() == usize::from(replication_factor)
            });
        if !shape_ok || replication_factor == 0 {
            return refuse(
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "the assignment does not place {n_partitions} partitions; give each the \
                     same number ({replication_factor}) of distinct brokers"
                ),
            );
        }
        if let Some(absent) = placed
            .iter()
            .flatten()
            .find(|id| !is_active(&self.brokers, **id))
        {
            return refuse(
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "the assignment places a replica on broker {absent}, which is not active \
                     (registered, unfenced and not shutting down); sluice cluster describe \
                     lists the brokers"
                ),
            );
        }
        Ok(())
    }

    fn create_partitions(
        &mut self,
        name: &str,
        n_partitions: u32,
    ) -> Result<CommandResult, Refusal> {
        let active = self.active_brokers();
        let racks = self.active_racks();
        let Some(topic) = self.topics.get_mut(name) else {
            return refuse(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist; check the name against the topic list"),
            );
        };
        let current = topic.partitions.len() as u32;
        if n_partitions <= current {
            let plural = if current == 1 { "" } else { "s" };
            let message = match n_partitions == current {
                true => format!(
                    "topic {name:?} already has {current} partition{plural}; ask for more \
                     than {current} (partitions cannot be removed)"
                ),
                false => format!(
                    "topic {name:?} has {current} partition{plural} and cannot have fewer; \
                     ask for more than {current}"
                ),
            };
            return refuse(ErrorCode::InvalidPartitions, message);
        }
        if n_partitions > PARTITIONS_MAX {
            return refuse(
                ErrorCode::InvalidPartitions,
                format!(
                    "a topic may have at most {PARTITIONS_MAX} partitions, not {n_partitions}; \
                     ask for fewer"
                ),
            );
        }
        placement::check_replication_factor(topic.replication_factor, &active)
            .or_else(|message| refuse(ErrorCode::InvalidReplicationFactor, message))?;
        let assignment = placement::assign_replicas_by_rack(
            &racks,
            topic.id,
            n_partitions,
            topic.replication_factor,
        );
        let added = new_partitions(assignment).skip(current as usize);
        topic.partitions.extend(added);
        Ok(CommandResult::Done)
    }

    fn elect_preferred_leaders(&mut self, partitions: &[(String, PartitionId)]) -> CommandResult {
        for (topic, index) in partitions {
            if self.preferred_election(topic, *index).is_err() {
                continue;
            }
            let partition = self
                .topics
                .get_mut(topic)
                .and_then(|t| t.partition_mut(*index))
                .expect("preferred_election found it");
            let (preferred, isr) = (partition.replicas[0], partition.isr.clone());
            partition.change(preferred, isr);
        }
        CommandResult::Done
    }

    fn delete_topic(&mut self, name: &str) -> Result<CommandResult, Refusal> {
        match self.topics.remove(name) {
            Some(_) => Ok(CommandResult::Done),
            None => refuse(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist; check the name against the topic list"),
            ),
        }
    }

    fn alter_topic_configs(
        &mut self,
        name: &str,
        configs: &BTreeMap<String, String>,
    ) -> Result<CommandResult, Refusal> {
        match self.topics.get_mut(name) {
            Some(topic) => {
                topic.configs = configs.clone();
                // Allowed from now on: a partition offline for want of its ISR elects now
                // (Kafka's controller does the same), not when a replica next returns.
                if topic.unclean_leader_election() {
                    for partition in &mut topic.partitions {
                        partition.elect_unclean(&self.brokers);
                    }
                }
                Ok(CommandResult::Done)
            }
            None => refuse(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist; check the name against the topic list"),
            ),
        }
    }

    fn upsert_scram_credential(
        &mut self,
        user: &str,
        mechanism: Mechanism,
        credential: &ScramCredential,
    ) -> Result<CommandResult, Refusal> {
        if let Err(why) = check_user_name(user)
            .and_then(|()| sluice_protocol::scram::check_credential(mechanism, credential))
        {
            return refuse(ErrorCode::UnacceptableCredential, why);
        }
        self.users
            .entry(user.to_owned())
            .or_default()
            .insert(mechanism, credential.clone());
        Ok(CommandResult::Done)
    }

    fn create_acls(&mut self, acls: &[acls::AclBinding]) -> Result<CommandResult, Refusal> {
        for acl in acls {
            if let Err(why) = acl.validate() {
                return refuse(ErrorCode::InvalidRequest, why);
            }
        }
        self.acls.extend(acls.iter().cloned());
        Ok(CommandResult::Done)
    }

    fn alter_client_quotas(
        &mut self,
        changes: &[quotas::QuotaChange],
    ) -> Result<CommandResult, Refusal> {
        if let Some(why) = changes.iter().find_map(|c| c.validate().err()) {
            return refuse(ErrorCode::InvalidRequest, why);
        }
        quotas::apply(&mut self.client_quotas, changes);
        Ok(CommandResult::Done)
    }

    fn delete_acls(&mut self, acls: &[acls::AclBinding]) -> Result<CommandResult, Refusal> {
        if let Some(missing) = acls.iter().find(|acl| !self.acls.contains(acl)) {
            return refuse(
                ErrorCode::ResourceNotFound,
                format!("there is no such ACL ({missing:?}); sluice acl list shows them"),
            );
        }
        for acl in acls {
            self.acls.remove(acl);
        }
        Ok(CommandResult::Done)
    }

    fn delete_scram_credential(
        &mut self,
        user: &str,
        mechanism: Mechanism,
    ) -> Result<CommandResult, Refusal> {
        let Some(credentials) = self.users.get_mut(user) else {
            return refuse(
                ErrorCode::ResourceNotFound,
                format!("there is no user {user:?}; list them with sluice user list"),
            );
        };
        if credentials.remove(&mechanism).is_none() {
            return refuse(
                ErrorCode::ResourceNotFound,
                format!("user {user:?} has no {mechanism} credential"),
            );
        }
        if credentials.is_empty() {
            self.users.remove(user);
        }
        Ok(CommandResult::Done)
    }

    fn alter_partition(&mut self, change: IsrChange<'_>) -> Result<CommandResult, Refusal> {
        self.registration_mut(
            change.broker_id,
            change.broker_epoch,
            ErrorCode::StaleBrokerEpoch,
        )?;
        let (topic, p) = (change.topic, change.partition);
        let brokers = &self.brokers;
        let partition = existing_partition(&mut self.topics, topic, p)?;
        check_isr_change(&change, partition, brokers)?;
        let leader = partition.leader;
        partition.change(leader, change.new_isr.to_vec());
        partition.complete_reassignment(brokers);
        Ok(CommandResult::Partition(partition.clone()))
    }

    fn allocate_producer_ids(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: i64,
    ) -> Result<CommandResult, Refusal> {
        self.registration_mut(broker_id, broker_epoch, ErrorCode::BrokerIdNotRegistered)?;
        let first = self.next_producer_id;
        let Some(next) = first.checked_add(i64::from(PRODUCER_ID_BLOCK)) else {
            return refuse(
                ErrorCode::UnknownServerError,
                "the cluster has handed out every producer id (2^63); no idempotent producer \
                 can start",
            );
        };
        self.next_producer_id = next;
        Ok(CommandResult::ProducerIds {
            first,
            len: PRODUCER_ID_BLOCK,
        })
    }
}

/// The checks of an AlterPartition against the partition's current state, in Kafka's order.
fn check_isr_change(
    change: &IsrChange<'_>,
    partition: &PartitionMeta,
    brokers: &BTreeMap<BrokerId, BrokerMeta>,
) -> Result<(), Refusal> {
    let name = format!("{}-{}", change.topic, change.partition);
    let current = partition.leader_epoch;
    if change.leader_epoch < current {
        return refuse(
            ErrorCode::FencedLeaderEpoch,
            format!(
                "leader epoch {} of {name} is older than the current {current}: another \
                 leadership began; the broker must follow the current leader",
                change.leader_epoch
            ),
        );
    }
    if change.leader_epoch > current {
        return refuse(
            ErrorCode::UnknownLeaderEpoch,
            format!(
                "leader epoch {} of {name} is newer than the metadata's {current}; retry once \
                 the controller has caught up",
                change.leader_epoch
            ),
        );
    }
    if change.broker_id != partition.leader {
        let leader = match partition.leader {
            BrokerId::NONE => "it has none now".to_owned(),
            leader => format!("the leader is {leader}"),
        };
        return refuse(
            ErrorCode::NotLeaderOrFollower,
            format!(
                "broker {} is not the leader of {name} ({leader}); only the leader changes \
                 the ISR",
                change.broker_id
            ),
        );
    }
    if change.partition_epoch != partition.partition_epoch {
        return refuse(
            ErrorCode::InvalidUpdateVersion,
            format!(
                "partition epoch {} of {name} is not the current {}: the partition changed \
                 since the leader read it; it will retry with the new state",
                change.partition_epoch, partition.partition_epoch
            ),
        );
    }
    check_new_isr(&name, change.new_isr, partition, brokers)
}

/// The proposed ISR is well formed (non-empty, replicas only, no duplicates, has the leader)
/// and every member it adds may join.
fn check_new_isr(
    name: &str,
    new_isr: &[BrokerId],
    partition: &PartitionMeta,
    brokers: &BTreeMap<BrokerId, BrokerMeta>,
) -> Result<(), Refusal> {
    let invalid = |why: String| {
        refuse(
            ErrorCode::InvalidRequest,
            format!("the proposed ISR {new_isr:?} of {name} is invalid: {why}"),
        )
    };
    if new_isr.is_empty() {
        return invalid("it is empty".into());
    }
    for (i, id) in new_isr.iter().enumerate() {
        if !partition.replicas.contains(id) {
            return invalid(format!(
                "broker {id} is not a replica (the replicas are {:?})",
                partition.replicas
            ));
        }
        if new_isr[..i].contains(id) {
            return invalid(format!("broker {id} appears twice"));
        }
    }
    if !new_isr.contains(&partition.leader) {
        return invalid(format!("it leaves out the leader {}", partition.leader));
    }
    for id in new_isr.iter().filter(|id| !partition.isr.contains(id)) {
        let why = match brokers.get(id) {
            Some(broker) if broker.shutting_down => "it is shutting down",
            Some(broker) if broker.fenced => "it is fenced (not caught up with the metadata log)",
            Some(_) => continue,
            None => "it is not registered",
        };
        return refuse(
            ErrorCode::IneligibleReplica,
            format!("broker {id} cannot join the ISR of {name}: {why}; the leader retries later"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
