//! Topic administration and the cluster view. Topics change only through the controller's
//! metadata log: a creation or deletion goes to the active controller (locally when this
//! node is it), and the answer waits until this broker has applied the change, so a client
//! that creates a topic and then asks this broker about it finds it. The cluster view
//! (Metadata, DescribeCluster, DescribeConfigs) is answered from this node's metadata
//! image, which every node holds whole (it is a voter or a learner of the metadata log).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::messages::{
    AlterConfigsRequest, AlterPartitionReassignmentsRequest, AlterableConfig, AlterableTopic,
    CreatePartitionsRequest, CreatePartitionsTopic, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeQuorumRequest, ElectLeadersRequest, ReassignablePartition, ReassignableTopic,
    TopicPartitions, CONFIG_DELETE, CONFIG_SET,
};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId, Request, Response};

use crate::cluster::image::{MetadataImage, TopicMeta};
use crate::cluster::Cluster;
use crate::config::BrokerConfig;
use crate::error::ApiError;
use crate::security::acl::{Authorizer, Operation, Resource};
use crate::security::Principal;
use crate::services::{PartitionOutcome, TopicItems};
use crate::topic_config::{broker_synonym, effective_topic_configs, validate_topic_name, NewTopic};
use crate::topics::Topics;

/// How long topic administration waits for the controller.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the answer waits for this broker to apply the change.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a metadata answer waits for a restarted broker to catch up with the
/// controller ([`Admin::caught_up`]); clients asking in the meantime wait this long at most.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// A broker as clients of one listener reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerAddress {
    /// The broker.
    pub id: BrokerId,
    /// Its advertised host for the listener.
    pub host: String,
    /// Its advertised port for the listener.
    pub port: u16,
    /// Its rack.
    pub rack: Option<String>,
    /// Whether the controller fences it.
    pub fenced: bool,
}

/// One partition as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionView {
    /// The partition.
    pub partition: PartitionId,
    /// LEADER_NOT_AVAILABLE while it has no leader.
    pub error: Option<ApiError>,
    /// The leader, -1 for none.
    pub leader: BrokerId,
    /// The leader epoch.
    pub leader_epoch: LeaderEpoch,
    /// Every replica.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
    /// Replicas on fenced brokers.
    pub offline_replicas: Vec<BrokerId>,
}

/// One topic as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicView {
    /// The topic's id: the metadata log index of its creation.
    pub id: u64,
    /// An internal topic (`__consumer_offsets`).
    pub is_internal: bool,
    /// Replicas per partition.
    pub replication_factor: i16,
    /// Every config key with the value in effect.
    pub configs: BTreeMap<String, String>,
    /// The partitions.
    pub partitions: Vec<PartitionView>,
}

/// The cluster as one listener's clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// The cluster's id.
    pub cluster_id: String,
    /// The active controller, -1 when none is known.
    pub controller_id: BrokerId,
    /// The controller quorum.
    pub voters: Vec<BrokerId>,
    /// Brokers with an address on the listener: the unfenced ones, or all registered ones
    /// when asked with `include_fenced`.
    pub brokers: Vec<BrokerAddress>,
    /// The topics asked for, each described or refused (UNKNOWN_TOPIC_OR_PARTITION).
    pub topics: Vec<(String, Result<TopicView, ApiError>)>,
}

/// One change of a topic config: a new value, or `None` to go back to the broker default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    /// The key.
    pub name: String,
    /// The value to set, or `None` to delete the topic's own setting.
    pub value: Option<String>,
}

/// A topic config as DescribeConfigs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// The key.
    pub name: String,
    /// The value in effect.
    pub value: String,
    /// Set on the topic (else the broker's default).
    pub is_override: bool,
    /// The broker config it falls back to where the topic does not set it, if any.
    pub fallback: Option<Fallback>,
}

/// The broker config a topic config falls back to (Kafka's synonym of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// The broker config's Kafka name (`log.retention.ms` for `retention.ms`).
    pub name: &'static str,
    /// Its value on this broker.
    pub value: String,
    /// Whether this broker's configuration (flags, config file) gave a value other than
    /// sluice's default.
    pub configured: bool,
}

/// Each topic of a creation with its partition count and replication factor, or why it
/// was refused.
pub type Created = PerTopic<(u32, u16)>;

/// Replication factor ceiling of the coordinators' internal topics.
const INTERNAL_TOPIC_REPLICATION_MAX: usize = 3;

/// The admin service. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    config: Arc<BrokerConfig>,
    cluster: Arc<Cluster>,
    topics: Arc<Topics>,
    authorizer: Arc<Authorizer>,
}

impl Admin {
    /// Administers topics through `cluster`'s controller; waits for `topics` to reflect
    /// each change.
    pub fn new(
        config: &BrokerConfig,
        cluster: Arc<Cluster>,
        topics: Arc<Topics>,
        authorizer: Arc<Authorizer>,
    ) -> Admin {
        Admin {
            config: Arc::new(config.clone()),
            cluster,
            topics,
            authorizer,
        }
    }

    /// The authorizer every service asks.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// Splits `items` into those `principal` may do `operation` on (by their topic name)
    /// and the refusals, each refusal with its index in `items`.
    fn permitted<T>(
        &self,
        principal: &Principal,
        operation: Operation,
        items: Vec<T>,
        name: impl Fn(&T) -> &str,
    ) -> (Vec<T>, Vec<(usize, String, ApiError)>) {
        let mut allowed = Vec::with_capacity(items.len());
        let mut refused = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let topic = name(&item).to_owned();
            let mut check = self
                .authorizer
                .check(principal, operation, Resource::Topic(&topic));
            if check.is_err()
                && operation == Operation::Create
                && self
                    .authorizer
                    .allows(principal, Operation::Create, Resource::Cluster)
            {
                check = Ok(()); // Create on the cluster creates any topic (Kafka's rule).
            }
            match check {
                Ok(()) => allowed.push(item),
                Err(e) => refused.push((i, topic, e)),
            }
        }
        (allowed, refused)
    }

    /// The latest applied metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.cluster.image()
    }

    /// The image, once it has the coordinators' internal topic `name` (`__consumer_offsets`,
    /// `__transaction_state`): created here on first use, compacted and never deleted by
    /// retention (only a later record of a key supersedes it), with `partitions` partitions
    /// of `segment_bytes` segments and min(3, brokers) replicas, where the brokers counted
    /// are the registered ones or the voters, whichever are more: a three-voter cluster gets
    /// three replicas even when asked before every broker registered (the creation then
    /// fails until they have, and the client retries on COORDINATOR_NOT_AVAILABLE).
    pub async fn internal_topic(
        &self,
        name: &str,
        partitions: u32,
        segment_bytes: u32,
        voters: usize,
    ) -> Result<Arc<MetadataImage>, ApiError> {
        let image = self.image();
        if image.topics.contains_key(name) {
            return Ok(image);
        }
        let brokers = image.brokers.len().max(voters);
        let replication_factor = brokers.clamp(1, INTERNAL_TOPIC_REPLICATION_MAX) as i16;
        let config = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        let topic = NewTopic {
            name: name.to_owned(),
            partitions: partitions as i32,
            replication_factor,
            configs: BTreeMap::from([
                config("cleanup.policy", "compact"),
                config("retention.ms", "-1"),
                config("retention.bytes", "-1"),
                config("segment.bytes", &segment_bytes.to_string()),
            ]),
            assignment: Vec::new(),
        };
        let created = self
            .create_topics(&Principal::internal(), vec![topic], false)
            .await;
        if let Some((_, Err(e))) = created.into_iter().next() {
            if e.code != ErrorCode::TopicAlreadyExists {
                return Err(ApiError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    format!(
                        "cannot create {name} with {replication_factor} replicas yet ({}: {}); \
                         retry once enough brokers are up",
                        e.code.name(),
                        e.message
                    ),
                ));
            }
        }
        let image = self.image();
        if image.topics.contains_key(name) {
            Ok(image)
        } else {
            Err(ApiError::new(
                ErrorCode::CoordinatorNotAvailable,
                format!("{name} is being created; retry shortly"),
            ))
        }
    }

    /// Creates topics through the controller; each topic gets its partition count and
    /// replication factor, or why it was refused. With `validate_only` nothing is created.
    pub async fn create_topics(
        &self,
        principal: &Principal,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Created {
        let (topics, refused) = self.permitted(principal, Operation::Create, topics, |t| &t.name);
        let results = self.create_permitted(topics, validate_only).await;
        merge(results, refused)
    }

    async fn create_permitted(&self, topics: Vec<NewTopic>, validate_only: bool) -> Created {
        if topics.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        let request = CreateTopicsRequest {
            topics: topics.into_iter().map(NewTopic::to_wire).collect(),
            timeout_ms: CONTROLLER_TIMEOUT.as_millis() as i32,
            validate_only,
        };
        let results = self
            .per_topic(
                Request::CreateTopics(request),
                names,
                |response| match response {
                    Response::CreateTopics(r) => Some(
                        r.topics
                            .into_iter()
                            .map(|t| {
                                let created = (
                                    t.num_partitions.max(0) as u32,
                                    t.replication_factor.max(0) as u16,
                                );
                                (t.name, outcome(t.error_code, t.error_message, created))
                            })
                            .collect(),
                    ),
                    _ => None,
                },
            )
            .await;
        if !validate_only {
            let created = succeeded(&results);
            self.wait_applied(|image| created.iter().all(|n| image.topics.contains_key(*n)))
                .await;
        }
        results
    }

    /// Deletes topics through the controller; each gets its outcome.
    pub async fn delete_topics(&self, principal: &Principal, names: Vec<String>) -> PerTopic<()> {
        let (names, refused) = self.permitted(principal, Operation::Delete, names, |n| n);
        if names.is_empty() {
            return merge(Vec::new(), refused);
        }
        let request = DeleteTopicsRequest {
            topic_names: names.clone(),
            timeout_ms: CONTROLLER_TIMEOUT.as_millis() as i32,
        };
        let results = self
            .per_topic(
                Request::DeleteTopics(request),
                names,
                |response| match response {
                    Response::DeleteTopics(r) => Some(
                        r.responses
                            .into_iter()
                            .map(|t| (t.name, outcome(t.error_code, t.error_message, ())))
                            .collect(),
                    ),
                    _ => None,
                },
            )
            .await;
        let deleted = succeeded(&results);
        self.wait_applied(|image| deleted.iter().all(|n| !image.topics.contains_key(*n)))
            .await;
        merge(results, refused)
    }

    /// Grows each topic to the partition count given, through the controller; each gets
    /// its outcome. The new partitions' replicas are open here before the answer. With
    /// `validate_only` nothing changes.
    pub async fn create_partitions(
        &self,
        principal: &Principal,
        topics: Vec<(String, i32)>,
        validate_only: bool,
    ) -> PerTopic<()> {
        let (topics, refused) = self.permitted(principal, Operation::Alter, topics, |t| &t.0);
        if topics.is_empty() {
            return merge(Vec::new(), refused);
        }
        let names: Vec<String> = topics.iter().map(|(n, _)| n.clone()).collect();
        let counts: BTreeMap<String, i32> = topics.iter().cloned().collect();
        let request = CreatePartitionsRequest {
            topics: topics
                .into_iter()
                .map(|(name, count)| CreatePartitionsTopic { name, count })
                .collect(),
            timeout_ms: CONTROLLER_TIMEOUT.as_millis() as i32,
            validate_only,
        };
        let results = self
            .per_topic(
                Request::CreatePartitions(request),
                names,
                |response| match response {
                    Response::CreatePartitions(r) => Some(
                        r.results
                            .into_iter()
                            .map(|t| (t.name, outcome(t.error_code, t.error_message, ())))
                            .collect(),
                    ),
                    _ => None,
                },
            )
            .await;
        if !validate_only {
            let grown = succeeded(&results);
            self.wait_applied(|image| {
                grown
                    .iter()
                    .all(|name| match (image.topics.get(*name), counts.get(*name)) {
                        (Some(topic), Some(&count)) => {
                            topic.partitions.len() as i64 >= count as i64
                        }
                        _ => true,
                    })
            })
            .await;
        }
        merge(results, refused)
    }

    /// Preferred leader elections (Kafka's ElectLeaders) of the partitions asked, every
    /// partition when `None`, through the controller: each partition moved, or why not
    /// (ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION).
    /// Alter on the cluster. The answer waits until this broker's image shows the moves.
    pub async fn elect_leaders(
        &self,
        principal: &Principal,
        partitions: Option<Vec<TopicItems<PartitionId>>>,
    ) -> Result<Vec<TopicItems<PartitionOutcome<()>>>, ApiError> {
        self.authorizer
            .check(principal, Operation::Alter, Resource::Cluster)?;
        let request = ElectLeadersRequest {
            topics: partitions
                .map(|topics| topics.into_iter().map(TopicPartitions::from).collect()),
            timeout_ms: CONTROLLER_TIMEOUT.as_millis() as i32,
        };
        let response = match self
            .cluster
            .client
            .call(Request::ElectLeaders(request), CONTROLLER_TIMEOUT)
            .await?
        {
            Response::ElectLeaders(r) => r,
            other => return Err(super::controller_answered(other.api_key())),
        };
        let elected: Vec<TopicItems<PartitionOutcome<()>>> =
            super::outcomes_from_wire(response.topics);
        let moved: Vec<(&str, PartitionId)> = super::succeeded(&elected);
        self.wait_applied(|image| {
            moved.iter().all(|(topic, partition)| {
                image
                    .partition(topic, *partition)
                    .is_none_or(|p| p.leader == p.replicas[0])
            })
        })
        .await;
        Ok(elected)
    }

    /// Begins moving partitions to their target replicas, or (`None`) cancels their moves,
    /// through the controller (Alter on the cluster): each partition's outcome. The answer
    /// comes once this broker applied the change; the moves complete as the added replicas
    /// catch up ([`crate::cluster::image::MetadataImage::reassignments`] until then).
    pub async fn reassign_partitions(
        &self,
        principal: &Principal,
        topics: Vec<TopicItems<(PartitionId, Option<Vec<BrokerId>>)>>,
    ) -> Result<Vec<TopicItems<PartitionOutcome<()>>>, ApiError> {
        self.authorizer
            .check(principal, Operation::Alter, Resource::Cluster)?;
        let targets: Vec<(String, PartitionId, Option<Vec<BrokerId>>)> = topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|(p, target)| (t.topic.clone(), *p, target.clone()))
            })
            .collect();
        let request = AlterPartitionReassignmentsRequest {
            topics: topics
                .into_iter()
                .map(|t| ReassignableTopic {
                    name: t.topic,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|(partition, replicas)| ReassignablePartition {
                            partition,
                            replicas,
                        })
                        .collect(),
                })
                .collect(),
            timeout_ms: CONTROLLER_TIMEOUT.as_millis() as i32,
        };
        let response = match self
            .cluster
            .client
            .call(
                Request::AlterPartitionReassignments(request),
                CONTROLLER_TIMEOUT,
            )
            .await?
        {
            Response::AlterPartitionReassignments(r) => r,
            other => return Err(super::controller_answered(other.api_key())),
        };
        let outcomes: Vec<TopicItems<PartitionOutcome<()>>> =
            super::outcomes_from_wire(response.topics);
        let began: HashSet<(&str, PartitionId)> = super::succeeded(&outcomes);
        // Applied here once each partition that was moved shows its target (a move may
        // have completed at once) or, cancelled, no move.
        self.wait_applied(|image| {
            targets
                .iter()
                .filter(|(topic, p, _)| began.contains(&(topic.as_str(), *p)))
                .all(|(topic, p, target)| {
                    image.partition(topic, *p).is_none_or(|meta| match target {
                        Some(target) => target.iter().all(|b| meta.replicas.contains(b)),
                        None => !meta.is_reassigning(),
                    })
                })
        })
        .await;
        Ok(outcomes)
    }

    /// The controller quorum's metadata log, from the active controller (Describe on the
    /// cluster).
    pub async fn describe_quorum(
        &self,
        principal: &Principal,
        include_observers: bool,
    ) -> Result<QuorumView, ApiError> {
        self.authorizer
            .check(principal, Operation::Describe, Resource::Cluster)?;
        let request = Request::DescribeQuorum(DescribeQuorumRequest { include_observers });
        match self
            .cluster
            .client
            .call(request, CONTROLLER_TIMEOUT)
            .await?
        {
            Response::DescribeQuorum(r) => {
                let replicas = |rs: Vec<sluice_protocol::messages::QuorumReplica>| {
                    rs.into_iter().map(|r| (r.id, r.log_end)).collect()
                };
                Ok(QuorumView {
                    leader: r.leader,
                    term: r.term,
                    high_watermark: r.high_watermark,
                    voters: replicas(r.voters),
                    observers: replicas(r.observers),
                })
            }
            other => Err(super::controller_answered(other.api_key())),
        }
    }

    /// The partition moves under way, of the `wanted` partitions or all (Describe on the
    /// cluster).
    pub fn reassignments(
        &self,
        principal: &Principal,
        wanted: Option<&[TopicItems<PartitionId>]>,
    ) -> Result<Vec<TopicItems<Reassignment>>, ApiError> {
        self.authorizer
            .check(principal, Operation::Describe, Resource::Cluster)?;
        let image = self.cluster.image();
        let wanted: Option<HashSet<(&str, PartitionId)>> = wanted.map(|w| {
            w.iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.topic.as_str(), *p)))
                .collect()
        });
        let mut topics: Vec<TopicItems<Reassignment>> = Vec::new();
        for (topic, p) in image.reassignments() {
            let asked = wanted
                .as_ref()
                .is_none_or(|w| w.contains(&(topic, p.index)));
            if !asked {
                continue;
            }
            let reassignment = Reassignment {
                partition: p.index,
                replicas: p.replicas.clone(),
                adding: p.adding.clone(),
                removing: p.removing.clone(),
            };
            match topics.last_mut() {
                Some(t) if t.topic == topic => t.partitions.push(reassignment),
                _ => topics.push(TopicItems {
                    topic: topic.to_owned(),
                    partitions: vec![reassignment],
                }),
            }
        }
        Ok(topics)
    }

    /// Makes each topic's own configs exactly `configs` (Kafka's non-incremental
    /// AlterConfigs): the keys given are set, every other key the topic sets goes back to the
    /// broker's default; all of a topic's changes together, as [`Admin::alter_topic_configs`].
    /// The keys to remove are read from this broker's image, so a change another client
    /// makes between that read and the controller's commit is not removed.
    pub async fn replace_topic_configs(
        &self,
        principal: &Principal,
        topics: Vec<(String, BTreeMap<String, String>)>,
        validate_only: bool,
    ) -> PerTopic<()> {
        let image = self.cluster.image();
        let topics = topics
            .into_iter()
            .map(|(name, configs)| {
                let removed: Vec<ConfigChange> = image
                    .topics
                    .get(&name)
                    .map(|meta| {
                        meta.configs
                            .keys()
                            .filter(|key| !configs.contains_key(*key))
                            .map(|key| ConfigChange {
                                name: key.clone(),
                                value: None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let set = configs.into_iter().map(|(name, value)| ConfigChange {
                    name,
                    value: Some(value),
                });
                (name, set.chain(removed).collect())
            })
            .collect();
        self.alter_topic_configs(principal, topics, validate_only)
            .await
    }

    /// Changes topics' configs through the controller (each topic's changes together, or
    /// none of them); the replicas here take the new limits before the answer. With
    /// `validate_only` nothing changes.
    pub async fn alter_topic_configs(
        &self,
        principal: &Principal,
        topics: Vec<(String, Vec<ConfigChange>)>,
        validate_only: bool,
    ) -> PerTopic<()> {
        let (topics, refused) = self.permitted(principal, Operation::Alter, topics, |t| &t.0);
        if topics.is_empty() {
            return merge(Vec::new(), refused);
        }
        let names: Vec<String> = topics.iter().map(|(n, _)| n.clone()).collect();
        // What each topic's overrides become, as this broker's image sees them now: the
        // answer waits until the image shows it.
        let image = self.cluster.image();
        let expected: BTreeMap<String, BTreeMap<String, String>> = topics
            .iter()
            .filter_map(|(name, changes)| {
                let mut configs = image.topics.get(name)?.configs.clone();
                for change in changes {
                    match &change.value {
                        Some(value) => configs.insert(change.name.clone(), value.clone()),
                        None => configs.remove(&change.name),
                    };
                }
                Some((name.clone(), configs))
            })
            .collect();
        let request = AlterConfigsRequest {
            topics: topics
                .into_iter()
                .map(|(name, changes)| AlterableTopic {
                    name,
                    configs: changes
                        .into_iter()
                        .map(|c| AlterableConfig {
                            name: c.name,
                            operation: if c.value.is_some() {
                                CONFIG_SET
                            } else {
                                CONFIG_DELETE
                            },
                            value: c.value,
                        })
                        .collect(),
                })
                .collect(),
            validate_only,
        };
        let request = Request::IncrementalAlterConfigs(request);
        let results = self
            .per_topic(request, names, |response| match response {
                Response::IncrementalAlterConfigs(r) => Some(
                    r.topics
                        .into_iter()
                        .map(|t| (t.name, outcome(t.error_code, t.error_message, ())))
                        .collect(),
                ),
                _ => None,
            })
            .await;
        if !validate_only {
            let altered = succeeded(&results);
            self.wait_applied(|image| {
                altered.iter().all(|name| {
                    let now = image.topics.get(*name).map(|t| &t.configs);
                    now.is_none() || now == expected.get(*name)
                })
            })
            .await;
        }
        merge(results, refused)
    }

    /// Waits, at most [`CATCH_UP_WAIT`], until this broker's image holds its registration
    /// of this run. Until then it is the image the broker had when it last stopped, whose
    /// leaders may long have moved: a client told them would send its requests to the
    /// wrong brokers (Kafka's brokers accept no client connection before catching up).
    /// Afterwards the answer is given whatever the image holds.
    async fn caught_up(&self) {
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        loop {
            let epoch = self.cluster.broker_epoch();
            if epoch >= 0 && self.cluster.applied_index() >= epoch as u64 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(
                    "answering metadata before this broker caught up with the controller"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a topic administration request to the active controller and gives each
    /// topic its outcome (`results` reads them from the answer); when the controller cannot
    /// be reached, or answers something else, every topic in `names` gets that error.
    async fn per_topic<T>(
        &self,
        request: Request,
        names: Vec<String>,
        results: impl FnOnce(Response) -> Option<PerTopic<T>>,
    ) -> PerTopic<T> {
        let answer = self.cluster.client.call(request, CONTROLLER_TIMEOUT).await;
        let e = match answer {
            Ok(response) => {
                let api = response.api_key();
                match results(response) {
                    Some(results) => return results,
                    None => super::controller_answered(api),
                }
            }
            Err(e) => e,
        };
        names.into_iter().map(|n| (n, Err(e.clone()))).collect()
    }

    /// Waits until this broker's image satisfies `done` and its replicas reflect it.
    async fn wait_applied(&self, done: impl Fn(&MetadataImage) -> bool) {
        self.cluster.wait_for_image(APPLY_TIMEOUT, done).await;
        let index = self.cluster.applied_index();
        self.topics.wait_reconciled(index, APPLY_TIMEOUT).await;
    }

    /// The cluster as clients of `listener` see it, with the topics named (every topic
    /// when `None`). With `auto_create`, a named topic that does not exist is created with
    /// the broker's defaults first, if the broker allows it (`auto_create_topics`); its
    /// partitions may have no leader yet (LEADER_NOT_AVAILABLE), which clients retry.
    pub async fn cluster_view(
        &self,
        principal: &Principal,
        listener: &str,
        topics: Option<Vec<String>>,
        auto_create: bool,
        include_fenced: bool,
    ) -> ClusterView {
        self.caught_up().await;
        let may_describe = |name: &str| {
            self.authorizer
                .allows(principal, Operation::Describe, Resource::Topic(name))
        };
        let mut image = self.cluster.image();
        if let (Some(names), true) = (&topics, auto_create && self.config.auto_create_topics) {
            let missing: Vec<NewTopic> = names
                .iter()
                .filter(|n| !image.topics.contains_key(*n) && validate_topic_name(n).is_ok())
                .map(|name| NewTopic {
                    name: name.clone(),
                    partitions: -1,
                    replication_factor: -1,
                    configs: BTreeMap::new(),
                    assignment: Vec::new(),
                })
                .collect();
            if !missing.is_empty() {
                for (name, outcome) in self.create_topics(principal, missing, false).await {
                    match outcome {
                        Ok(_) => tracing::info!(topic = %name, "auto-created topic"),
                        Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
                        Err(e) => {
                            tracing::warn!(topic = %name, "auto-creation failed: {}", e.message)
                        }
                    }
                }
                image = self.cluster.image();
            }
        }
        let described = match topics {
            // Topics the principal may not describe are left out, never revealed.
            None => image
                .topics
                .iter()
                .filter(|(name, _)| may_describe(name))
                .map(|(name, meta)| (name.clone(), Ok(self.describe(&image, name, meta))))
                .collect(),
            Some(names) => names
                .into_iter()
                .map(|name| {
                    let check = self.authorizer.check(
                        principal,
                        Operation::Describe,
                        Resource::Topic(&name),
                    );
                    let view = match (check, image.topics.get(&name)) {
                        (Err(e), _) => Err(e),
                        (Ok(()), Some(meta)) => Ok(self.describe(&image, &name, meta)),
                        (Ok(()), None) => Err(ApiError::unknown_topic(&name)),
                    };
                    (name, view)
                })
                .collect(),
        };
        ClusterView {
            cluster_id: image.cluster_id.clone(),
            controller_id: self.cluster.controller_id().unwrap_or(BrokerId(-1)),
            voters: self.cluster.voters().to_vec(),
            brokers: image
                .brokers
                .values()
                .filter(|b| include_fenced || !b.fenced)
                .filter_map(|b| {
                    let address = b.listener(listener)?;
                    Some(BrokerAddress {
                        id: b.id,
                        host: address.host.clone(),
                        port: address.port,
                        rack: b.rack.clone(),
                        fenced: b.fenced,
                    })
                })
                .collect(),
            topics: described,
        }
    }

    fn describe(&self, image: &MetadataImage, name: &str, meta: &TopicMeta) -> TopicView {
        let fenced = |id: &BrokerId| image.brokers.get(id).is_none_or(|b| b.fenced);
        TopicView {
            id: meta.id,
            is_internal: name.starts_with("__"),
            replication_factor: meta.replication_factor as i16,
            configs: effective_topic_configs(&self.config, &meta.configs),
            partitions: meta
                .partitions
                .iter()
                .map(|p| PartitionView {
                    partition: p.index,
                    error: (p.leader.0 < 0).then(|| {
                        ApiError::new(
                            ErrorCode::LeaderNotAvailable,
                            format!(
                                "{name}-{} has no leader right now; retry shortly",
                                p.index.0
                            ),
                        )
                    }),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    offline_replicas: p.replicas.iter().copied().filter(fenced).collect(),
                })
                .collect(),
        }
    }

    /// This broker's configs under Kafka's names ([`BrokerConfig::kafka_broker_configs`]),
    /// for a DescribeConfigs of broker `broker` (its id, or empty for the defaults, which
    /// are this broker's too): another broker's are asked of that broker, as Kafka's admin
    /// clients do.
    pub fn broker_configs(
        &self,
        principal: &Principal,
        broker: &str,
    ) -> Result<Vec<(&'static str, String)>, ApiError> {
        self.authorizer
            .check(principal, Operation::Describe, Resource::Cluster)?;
        let me = self.config.node_id.to_string();
        if !broker.is_empty() && broker != me {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "this is broker {me}: ask broker {broker} for its configs (Kafka's admin \
                     clients send a broker's DescribeConfigs to that broker)"
                ),
            ));
        }
        Ok(self.config.kafka_broker_configs())
    }

    /// This broker's data directory and the replicas in it (Kafka's DescribeLogDirs; sluice
    /// has one log directory per broker): every hosted replica, or those of `wanted`
    /// (topic, partitions) that are here. Describe on the cluster.
    pub fn log_dir(
        &self,
        principal: &Principal,
        wanted: Option<&[(String, Vec<PartitionId>)]>,
    ) -> Result<LogDirView, ApiError> {
        self.authorizer
            .check(principal, Operation::Describe, Resource::Cluster)?;
        let is_wanted = |topic: &str, partition: PartitionId| {
            wanted.is_none_or(|w| {
                w.iter()
                    .any(|(t, ps)| t == topic && ps.contains(&partition))
            })
        };
        let mut replicas: Vec<ReplicaView> = self
            .topics
            .all_partitions()
            .into_iter()
            .filter(|p| is_wanted(p.topic(), p.index()))
            .map(|p| ReplicaView {
                topic: p.topic().to_string(),
                partition: p.index(),
                size_bytes: p.size_bytes(),
                // Kafka's offset lag of a current log: how far its end is behind the HW.
                offset_lag: (p.high_watermark().0 - p.log_end_offset().0).max(0),
            })
            .collect();
        replicas.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let (total_bytes, usable_bytes) = disk_space(&self.config.data_dir);
        Ok(LogDirView {
            path: self.config.data_dir.display().to_string(),
            total_bytes,
            usable_bytes,
            replicas,
        })
    }

    /// A topic's configs: every key with the value in effect, and whether the topic sets it.
    pub fn topic_configs(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<Vec<TopicConfig>, ApiError> {
        self.authorizer
            .check(principal, Operation::Describe, Resource::Topic(name))?;
        let image = self.cluster.image();
        let meta = image
            .topics
            .get(name)
            .ok_or_else(|| ApiError::unknown_topic(name))?;
        let none = BTreeMap::new();
        let broker = effective_topic_configs(&self.config, &none);
        let defaults = effective_topic_configs(&BrokerConfig::default(), &none);
        Ok(effective_topic_configs(&self.config, &meta.configs)
            .into_iter()
            .map(|(key, value)| {
                let fallback = broker_synonym(&key).and_then(|name| {
                    let value = broker.get(&key)?.clone();
                    Some(Fallback {
                        name,
                        configured: defaults.get(&key) != Some(&value),
                        value,
                    })
                });
                TopicConfig {
                    is_override: meta.configs.contains_key(&key),
                    name: key,
                    value,
                    fallback,
                }
            })
            .collect())
    }
}

/// The controller quorum's metadata log (Kafka's DescribeQuorum).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumView {
    /// The active controller.
    pub leader: BrokerId,
    /// Its Raft term.
    pub term: i64,
    /// The end of the committed and applied log.
    pub high_watermark: i64,
    /// Each voter and its log end as the leader knows it (-1: unknown).
    pub voters: Vec<(BrokerId, i64)>,
    /// The other registered brokers (log end -1: the leader does not track them).
    pub observers: Vec<(BrokerId, i64)>,
}

/// A partition being moved to other replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    pub partition: PartitionId,
    /// Its replicas now: the target's, then those being removed.
    pub replicas: Vec<BrokerId>,
    /// Replicas being added (copying the log).
    pub adding: Vec<BrokerId>,
    /// Replicas removed once the added ones are in sync.
    pub removing: Vec<BrokerId>,
}

/// Each topic of a request with its outcome.
pub type PerTopic<T> = Vec<(String, Result<T, ApiError>)>;

/// A broker's data directory, as DescribeLogDirs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogDirView {
    /// The directory.
    pub path: String,
    /// The size of its file system, or -1 when unknown.
    pub total_bytes: i64,
    /// The bytes free there for this process, or -1 when unknown.
    pub usable_bytes: i64,
    /// The replicas in it, by topic and partition.
    pub replicas: Vec<ReplicaView>,
}

/// One replica in a data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: PartitionId,
    /// The bytes of its segments.
    pub size_bytes: u64,
    /// How far its log end is behind its high watermark.
    pub offset_lag: i64,
}

/// The size and the free bytes (for an unprivileged process) of the file system holding
/// `dir`; -1 each when it cannot be read.
fn disk_space(dir: &std::path::Path) -> (i64, i64) {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return (-1, -1);
    };
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return (-1, -1);
    }
    let block = stat.f_frsize as i64;
    (
        (stat.f_blocks as i64).saturating_mul(block),
        (stat.f_bavail as i64).saturating_mul(block),
    )
}

/// `results` (of the permitted items, in order) with each refusal put back at its index.
fn merge<T>(results: PerTopic<T>, refused: Vec<(usize, String, ApiError)>) -> PerTopic<T> {
    let mut merged = results;
    for (i, name, e) in refused {
        merged.insert(i.min(merged.len()), (name, Err(e)));
    }
    merged
}

/// A topic's outcome from the controller's error code and message.
fn outcome<T>(code: ErrorCode, message: Option<String>, ok: T) -> Result<T, ApiError> {
    match code {
        ErrorCode::None => Ok(ok),
        code => Err(ApiError::new(code, message.unwrap_or_default())),
    }
}

/// The topics whose outcome is a success.
fn succeeded<T>(results: &PerTopic<T>) -> Vec<&str> {
    results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| n.as_str())
        .collect()
}
