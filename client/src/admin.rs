//! [`Admin`]: topic administration and cluster description, what `sluice topic ...` and
//! `sluice cluster describe` call.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_protocol::messages::{
    AlterClientQuotasRequest, AlterConfigsRequest, AlterPartitionReassignmentsRequest,
    AlterUserScramCredentialsRequest, AlterableConfig, AlterableTopic, CreatableTopic,
    CreateAclsRequest, CreatePartitionsRequest, CreatePartitionsTopic, CreateTopicsRequest,
    DeleteAclsRequest, DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
    DeleteTopicsRequest, DescribeAclsRequest, DescribeClientQuotasRequest, DescribeClusterRequest,
    DescribeUserScramCredentialsRequest, ElectLeadersRequest, IsolationLevel,
    ListPartitionReassignmentsRequest, QuotaAlteration, QuotaOp, ReassignablePartition,
    ReassignableTopic, ReplicaAssignment, ScramCredentialDeletion, ScramCredentialUpsertion,
    TopicPartitions, CONFIG_DELETE, CONFIG_SET, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId, Request, Response};

use crate::acl::Acl;
use crate::backoff::{Backoff, Jitter};
use crate::client::{broker_timeout_ms, format_address, unexpected, Client};
use crate::error::{Error, Result};
use crate::quota::{ClientQuota, QuotaEntity};
use crate::sasl::SaslMechanism;

/// A topic to create.
///
/// ```
/// use sluice_client::NewTopic;
/// let topic = NewTopic::new("orders", 3, 1).config("retention.ms", "3600000");
/// assert_eq!(topic.configs, vec![("retention.ms".to_owned(), "3600000".to_owned())]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopic {
    /// The topic's name.
    pub name: String,
    /// Number of partitions (at least 1).
    pub partitions: i32,
    /// Replicas per partition (at most the number of live brokers).
    pub replication_factor: i16,
    /// Configuration overrides: `retention.ms`, `retention.bytes`, `segment.bytes`,
    /// `min.insync.replicas`.
    pub configs: Vec<(String, String)>,
    /// Each partition's brokers, in partition order, preferred leader first; empty lets
    /// the controller place the replicas ([`NewTopic::assignment`]).
    pub assignment: Vec<Vec<BrokerId>>,
}

impl NewTopic {
    /// A topic with no configuration overrides.
    pub fn new(name: impl Into<String>, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
            assignment: Vec::new(),
        }
    }

    /// Places the replicas: partition `i` on `brokers[i]`, its first broker leading. The
    /// partition count and replication factor become the assignment's; every broker must
    /// be active, and each partition needs the same number of distinct brokers.
    ///
    /// ```
    /// use sluice_client::{BrokerId, NewTopic};
    /// let topic = NewTopic::new("orders", -1, -1)
    ///     .assignment(vec![vec![BrokerId(1), BrokerId(2)], vec![BrokerId(2), BrokerId(3)]]);
    /// assert_eq!((topic.partitions, topic.replication_factor), (2, 2));
    /// ```
    pub fn assignment(mut self, brokers: Vec<Vec<BrokerId>>) -> NewTopic {
        self.partitions = brokers.len() as i32;
        self.replication_factor = brokers.first().map_or(0, |b| b.len() as i16);
        self.assignment = brokers;
        self
    }

    /// Adds a configuration override.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// A topic as `sluice topic list` shows it.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// for topic in admin.list_topics().await? {
///     println!("{} {} {}", topic.name, topic.partitions, topic.replication_factor);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replicas per partition.
    pub replication_factor: i16,
    /// Whether the topic is internal (`__consumer_offsets`).
    pub internal: bool,
}

/// One partition as `sluice topic describe` shows it.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// let p = &admin.describe_topic("orders").await?.partitions[0];
/// println!("{} records in partition {}", p.high_watermark - p.log_start_offset, p.partition);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionDescription {
    /// The partition's index.
    pub partition: PartitionId,
    /// Its leader, or [`BrokerId::NONE`] (-1) when it has none.
    pub leader: BrokerId,
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
    /// Every assigned replica.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
    /// The first offset still in the log, or -1 when the leader could not be asked.
    pub log_start_offset: i64,
    /// The high watermark (offset of the next record consumers will see), or -1 when the
    /// leader could not be asked.
    pub high_watermark: i64,
}

/// A topic's partitions, offsets and configuration.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// let description = admin.describe_topic("orders").await?;
/// for p in &description.partitions {
///     println!("{} leader {} hw {}", p.partition, p.leader, p.high_watermark);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// Whether the topic is internal.
    pub internal: bool,
    /// Replicas per partition.
    pub replication_factor: i16,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionDescription>,
    /// The topic's configuration overrides.
    pub config: BTreeMap<String, String>,
}

/// A registered broker as `sluice cluster describe` shows it.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// for b in admin.describe_cluster().await?.brokers {
///     println!("{} {} {}", b.id, b.address, if b.fenced { "fenced" } else { "active" });
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerDescription {
    /// The broker's node id.
    pub id: BrokerId,
    /// `host:port` of its native listener.
    pub address: String,
    /// Whether the controller has fenced it (its session expired).
    pub fenced: bool,
}

/// The cluster's brokers and controller quorum.
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// let cluster = admin.describe_cluster().await?;
/// println!("cluster {} controller {:?}", cluster.cluster_id, cluster.controller);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The cluster's id.
    pub cluster_id: String,
    /// The active controller, when there is one.
    pub controller: Option<BrokerId>,
    /// The controller quorum's voters.
    pub voters: Vec<BrokerId>,
    /// Registered brokers, fenced ones included, by id.
    pub brokers: Vec<BrokerDescription>,
}

/// Topic and cluster administration.
///
/// ```no_run
/// # async fn demo() -> sluice_client::Result<()> {
/// use sluice_client::{Admin, Client, ClientConfig, NewTopic};
/// let admin = Admin::new(Client::connect(ClientConfig::default()).await?);
/// admin.create_topic(NewTopic::new("orders", 3, 1)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Admin {
    client: Client,
    /// How long an operation keeps retrying NOT_CONTROLLER, a dead broker or another
    /// retriable error ([`Admin::with_timeout`]).
    timeout: Duration,
}

/// The default of [`Admin::with_timeout`]: several controller elections' worth.
const ADMIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Wait between tries of a retried admin request: 100 ms doubling to 1 s, jittered.
const ADMIN_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(1),
};
/// Tries of each offset lookup of `describe_topic`: a description is a snapshot, so an
/// unreachable leader is shown as such after one retry (with fresh metadata) rather than
/// waited for.
pub(crate) const DESCRIBE_LOOKUP_ATTEMPTS: u32 = 2;
/// How long each leader may take to answer a description's offset lookup: a hung leader
/// (paused, overloaded) shows -1 after this instead of stalling the whole description for
/// the request timeout.
pub(crate) const DESCRIBE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `create_topic` waits for the new topic's leaders to show in metadata.
const CREATE_VISIBLE_WAIT: Duration = Duration::from_secs(5);

/// A partition being moved to other brokers ([`Admin::reassign_partitions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionReassignment {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: PartitionId,
    /// Its replicas now: the target's, then those being removed.
    pub replicas: Vec<BrokerId>,
    /// The replicas being added (copying the log).
    pub adding: Vec<BrokerId>,
    /// The replicas removed once the added ones are in sync.
    pub removing: Vec<BrokerId>,
}

/// A SCRAM user ([`Admin::list_users`]).
///
/// ```no_run
/// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
/// for user in admin.list_users().await? {
///     println!("{}: {:?}", user.name, user.mechanisms);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserDescription {
    /// The user.
    pub name: String,
    /// `(mechanism, iterations)` of each credential it has.
    pub mechanisms: Vec<(String, i32)>,
}

impl Admin {
    /// An admin over `client`.
    pub fn new(client: Client) -> Admin {
        Admin {
            client,
            timeout: ADMIN_TIMEOUT_DEFAULT,
        }
    }

    /// How long each operation may keep retrying errors that may pass (no active
    /// controller, a broker restarting) before it fails with the last of them. Default 30 s.
    /// While it retries it logs, at WARN, what it waits for.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) {
    /// use std::time::Duration;
    /// let admin = sluice_client::Admin::new(client).with_timeout(Duration::from_secs(5));
    /// # }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Admin {
        self.timeout = timeout;
        self
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates a topic (with `replication_factor` replicas per partition, placed by the
    /// controller), then waits (up to 5 s) until every partition has a leader in the
    /// metadata, so the caller can produce to it right away. A topic that exists already is
    /// an [`Error::Broker`] with TOPIC_ALREADY_EXISTS, unless an earlier try of this same
    /// call may have created it (its connection failed after sending): then it counts as
    /// created.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let name = topic.name.clone();
        let request = CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: topic.name,
                num_partitions: topic.partitions,
                replication_factor: topic.replication_factor,
                configs: topic
                    .configs
                    .into_iter()
                    .map(|(name, value)| sluice_protocol::messages::ConfigEntry { name, value })
                    .collect(),
                assignments: (0..)
                    .zip(topic.assignment)
                    .map(|(p, broker_ids)| ReplicaAssignment {
                        partition: PartitionId(p),
                        broker_ids,
                    })
                    .collect(),
            }],
            timeout_ms: self.timeout_ms(),
            validate_only: false,
        };
        let context = format!("creating topic \"{name}\"");
        let (request, name_ref, context_ref) = (&request, name.as_str(), context.as_str());
        self.retrying(context_ref, move |maybe_done| async move {
            let response = match self
                .send_admin(Request::CreateTopics(request.clone()))
                .await?
            {
                Response::CreateTopics(r) => r,
                other => return Err(unexpected("CreateTopics", &other)),
            };
            let result = response
                .topics
                .into_iter()
                .find(|t| t.name == name_ref)
                .ok_or_else(|| missing_result(name_ref))?;
            match result.error_code {
                ErrorCode::None => Ok(()),
                ErrorCode::TopicAlreadyExists if maybe_done => Ok(()),
                code => Err(Error::broker(context_ref, code, result.error_message)),
            }
        })
        .await?;
        self.wait_until_visible(&name, 1).await;
        Ok(())
    }

    /// Deletes a topic and its data. [`Error::UnknownTopic`] when it does not exist (unless
    /// an earlier try of this same call may have deleted it).
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = DeleteTopicsRequest {
            topic_names: vec![name.to_owned()],
            timeout_ms: self.timeout_ms(),
        };
        let context = format!("deleting topic \"{name}\"");
        let (request, context_ref) = (&request, context.as_str());
        self.retrying(context_ref, move |maybe_done| async move {
            let response = match self
                .send_admin(Request::DeleteTopics(request.clone()))
                .await?
            {
                Response::DeleteTopics(r) => r,
                other => return Err(unexpected("DeleteTopics", &other)),
            };
            let result = response
                .responses
                .into_iter()
                .find(|t| t.name == name)
                .ok_or_else(|| missing_result(name))?;
            match result.error_code {
                ErrorCode::None => Ok(()),
                ErrorCode::UnknownTopicOrPartition if maybe_done => Ok(()),
                ErrorCode::UnknownTopicOrPartition => Err(Error::UnknownTopic {
                    topic: name.to_owned(),
                }),
                code => Err(Error::broker(context_ref, code, result.error_message)),
            }
        })
        .await
    }

    /// Grows a topic to `partitions` partitions (Kafka's CreatePartitions), then waits (up
    /// to 5 s) until every partition has a leader in the metadata. The new partitions start
    /// empty; records already written stay where they are, so keys hash to other
    /// partitions from now on. Fewer or as many partitions as the topic has is an
    /// [`Error::Broker`] with INVALID_PARTITIONS, unless an earlier try of this same call may
    /// have added them and the topic now has exactly `partitions`.
    ///
    /// ```no_run
    /// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
    /// admin.create_partitions("orders", 12).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_partitions(&self, name: &str, partitions: i32) -> Result<()> {
        let request = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: name.to_owned(),
                count: partitions,
            }],
            timeout_ms: self.timeout_ms(),
            validate_only: false,
        };
        let context = format!("adding partitions to topic \"{name}\"");
        let (request, context_ref) = (&request, context.as_str());
        self.retrying(context_ref, move |maybe_done| async move {
            let response = match self
                .send_admin(Request::CreatePartitions(request.clone()))
                .await?
            {
                Response::CreatePartitions(r) => r,
                other => return Err(unexpected("CreatePartitions", &other)),
            };
            let result = response
                .results
                .into_iter()
                .find(|t| t.name == name)
                .ok_or_else(|| missing_result(name))?;
            match result.error_code {
                ErrorCode::None => Ok(()),
                ErrorCode::InvalidPartitions
                    if maybe_done
                        && self
                            .client
                            .refresh_topic(name)
                            .await
                            .is_ok_and(|t| t.n_partitions() == partitions) =>
                {
                    Ok(())
                }
                ErrorCode::UnknownTopicOrPartition => Err(Error::UnknownTopic {
                    topic: name.to_owned(),
                }),
                code => Err(Error::broker(context_ref, code, result.error_message)),
            }
        })
        .await?;
        self.wait_until_visible(name, partitions).await;
        Ok(())
    }

    /// Deletes the records below an offset of partitions of `topic` (Kafka's
    /// DeleteRecords): each `(partition, offset)`, with offset -1 for every committed
    /// record, on the partition's leader, which answers once its in-sync replicas have
    /// deleted them too. Each partition's outcome is its new low watermark (the first
    /// offset left), or its error: OFFSET_OUT_OF_RANGE past the high watermark. Leadership
    /// and connection errors refresh the metadata and retry until the admin timeout (a
    /// retry deletes nothing twice: the log start only moves up).
    ///
    /// ```no_run
    /// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
    /// use sluice_client::PartitionId;
    /// for (partition, outcome) in admin.delete_records("orders", &[(PartitionId(0), 1000)]).await? {
    ///     println!("{partition}: {:?}", outcome);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn delete_records(
        &self,
        topic: &str,
        partitions: &[(PartitionId, i64)],
    ) -> Result<Vec<(PartitionId, Result<i64>)>> {
        let deadline = Instant::now() + self.timeout;
        let mut todo = partitions.to_vec();
        let mut done = Vec::new();
        let mut jitter = Jitter::new();
        for attempt in 1.. {
            if attempt > 1 {
                tokio::time::sleep(ADMIN_BACKOFF.delay(attempt - 1, &mut jitter)).await;
            }
            let metadata = match attempt {
                1 => self.client.topic_metadata(topic).await?,
                _ => self.client.refresh_topic(topic).await?,
            };
            let retry = self
                .delete_records_once(&metadata, &todo, &mut done)
                .await?;
            if retry.is_empty() || Instant::now() >= deadline {
                done.extend(retry.into_iter().map(|(p, _, e)| (p, Err(e))));
                break;
            }
            todo = retry.into_iter().map(|(p, o, _)| (p, o)).collect();
        }
        done.sort_by_key(|(p, _)| *p);
        Ok(done)
    }

    /// One try of each deletion in `todo`, one request per leader. Outcomes go to `done`;
    /// returns those to try again, with their errors.
    async fn delete_records_once(
        &self,
        metadata: &crate::TopicMetadata,
        todo: &[(PartitionId, i64)],
        done: &mut Vec<(PartitionId, Result<i64>)>,
    ) -> Result<Vec<(PartitionId, i64, Error)>> {
        let topic = metadata.name.as_str();
        let mut by_leader: BTreeMap<BrokerId, Vec<DeleteRecordsPartition>> = BTreeMap::new();
        let mut retry = Vec::new();
        for &(partition, offset) in todo {
            match metadata.partition(partition)?.leader {
                BrokerId::NONE => retry.push((
                    partition,
                    offset,
                    crate::client::leaderless(topic, partition),
                )),
                leader => by_leader
                    .entry(leader)
                    .or_default()
                    .push(DeleteRecordsPartition {
                        partition,
                        offset: sluice_protocol::Offset(offset),
                    }),
            }
        }
        for (leader, partitions) in by_leader {
            let mut asked: BTreeMap<PartitionId, i64> = partitions
                .iter()
                .map(|p| (p.partition, p.offset.0))
                .collect();
            let request = Request::DeleteRecords(DeleteRecordsRequest {
                topics: vec![DeleteRecordsTopic {
                    name: topic.to_owned(),
                    partitions,
                }],
                timeout_ms: self.timeout_ms(),
            });
            let response = match self.client.send(leader, request).await {
                Ok(Response::DeleteRecords(r)) => r,
                Ok(other) => return Err(unexpected("DeleteRecords", &other)),
                Err(e) if e.is_retriable() => {
                    retry.extend(asked.iter().map(|(&p, &o)| (p, o, e.clone())));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for p in response.topics.into_iter().flat_map(|t| t.partitions) {
                let Some(offset) = asked.remove(&p.partition) else {
                    continue;
                };
                if p.error_code == ErrorCode::None {
                    done.push((p.partition, Ok(p.low_watermark.0)));
                    continue;
                }
                let context = format!("deleting records of {topic}/{}", p.partition);
                let e = Error::broker(context, p.error_code, p.error_message);
                match e.is_retriable() {
                    true => retry.push((p.partition, offset, e)),
                    false => done.push((p.partition, Err(e))),
                }
            }
            for partition in asked.into_keys() {
                done.push((
                    partition,
                    Err(missing_result(&format!("{topic}/{partition}"))),
                ));
            }
        }
        Ok(retry)
    }

    /// Moves partitions' leadership back to their preferred replicas (the first assigned),
    /// where those are in sync: the partitions of `topic`, or of every topic when `None`.
    /// Each partition's outcome: moved, or its error (ELECTION_NOT_NEEDED where the
    /// preferred replica leads already, PREFERRED_LEADER_NOT_AVAILABLE where it cannot
    /// lead now). The controller also does this by itself every few minutes (the broker's
    /// `leader_imbalance_check_interval_ms`).
    ///
    /// ```no_run
    /// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
    /// for (topic, partition, outcome) in admin.elect_preferred_leaders(None).await? {
    ///     println!("{topic}/{partition}: {outcome:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn elect_preferred_leaders(
        &self,
        topic: Option<&str>,
    ) -> Result<Vec<(String, PartitionId, Result<()>)>> {
        let topics = match topic {
            None => None,
            Some(name) => {
                let metadata = self.client.refresh_topic(name).await?;
                Some(vec![TopicPartitions {
                    topic: name.to_owned(),
                    partitions: metadata.partitions.iter().map(|p| p.partition).collect(),
                }])
            }
        };
        let request = ElectLeadersRequest {
            topics,
            timeout_ms: self.timeout_ms(),
        };
        let response = match self.send_admin(Request::ElectLeaders(request)).await? {
            Response::ElectLeaders(r) => r,
            other => return Err(unexpected("ElectLeaders", &other)),
        };
        Ok(response
            .topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.name;
                t.partitions.into_iter().map(move |p| {
                    let outcome = match p.error_code {
                        ErrorCode::None => Ok(()),
                        code => Err(Error::broker(
                            format!("electing the leader of {topic}/{}", p.partition),
                            code,
                            p.error_message,
                        )),
                    };
                    (topic.clone(), p.partition, outcome)
                })
            })
            .collect())
    }

    /// Moves partitions of `topic` to other brokers (Kafka's partition reassignment): each
    /// to its target replicas, whose first leads once the move completes, or (`None`) back
    /// to the replicas it had before its move. The answer comes once the moves began; the
    /// added replicas copy the log, and each move completes when they are in sync
    /// ([`Admin::list_reassignments`] shows them until then). Each partition's outcome.
    ///
    /// ```no_run
    /// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
    /// use sluice_client::{BrokerId, PartitionId};
    /// let moved = admin
    ///     .reassign_partitions("orders", &[(PartitionId(0), Some(vec![BrokerId(2), BrokerId(3)]))])
    ///     .await?;
    /// for (partition, outcome) in moved {
    ///     outcome?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn reassign_partitions(
        &self,
        topic: &str,
        partitions: &[(PartitionId, Option<Vec<BrokerId>>)],
    ) -> Result<Vec<(PartitionId, Result<()>)>> {
        let request = AlterPartitionReassignmentsRequest {
            topics: vec![ReassignableTopic {
                name: topic.to_owned(),
                partitions: partitions
                    .iter()
                    .map(|(partition, replicas)| ReassignablePartition {
                        partition: *partition,
                        replicas: replicas.clone(),
                    })
                    .collect(),
            }],
            timeout_ms: self.timeout_ms(),
        };
        let response = match self
            .send_admin(Request::AlterPartitionReassignments(request))
            .await?
        {
            Response::AlterPartitionReassignments(r) => r,
            other => return Err(unexpected("AlterPartitionReassignments", &other)),
        };
        Ok(response
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .map(|p| {
                let outcome = match p.error_code {
                    ErrorCode::None => Ok(()),
                    code => Err(Error::broker(
                        format!("reassigning {topic}/{}", p.partition),
                        code,
                        p.error_message,
                    )),
                };
                (p.partition, outcome)
            })
            .collect())
    }

    /// The partition moves under way, by topic and partition.
    pub async fn list_reassignments(&self) -> Result<Vec<PartitionReassignment>> {
        let request =
            Request::ListPartitionReassignments(ListPartitionReassignmentsRequest { topics: None });
        let response = match self.client.send_any(request).await? {
            Response::ListPartitionReassignments(r) => r,
            other => return Err(unexpected("ListPartitionReassignments", &other)),
        };
        Ok(response
            .topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.name;
                t.partitions
                    .into_iter()
                    .map(move |p| PartitionReassignment {
                        topic: topic.clone(),
                        partition: p.partition,
                        replicas: p.replicas,
                        adding: p.adding,
                        removing: p.removing,
                    })
            })
            .collect())
    }

    /// Changes a topic's configs: each `(key, Some(value))` sets the key, each `(key, None)`
    /// removes the topic's own value (back to the broker's default); all of them or none.
    /// The broker answers once its replicas run with the new values.
    ///
    /// ```no_run
    /// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
    /// admin
    ///     .alter_topic_configs("orders", &[("retention.ms", Some("3600000")), ("segment.bytes", None)])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[(&str, Option<&str>)],
    ) -> Result<()> {
        let request = AlterConfigsRequest {
            topics: vec![AlterableTopic {
                name: name.to_owned(),
                configs: changes
                    .iter()
                    .map(|(key, value)| AlterableConfig {
                        name: (*key).to_owned(),
                        operation: if value.is_some() {
                            CONFIG_SET
                        } else {
                            CONFIG_DELETE
                        },
                        value: value.map(str::to_owned),
                    })
                    .collect(),
            }],
            validate_only: false,
        };
        let context = format!("altering the configs of topic \"{name}\"");
        let (request, context_ref) = (&request, context.as_str());
        self.retrying(context_ref, move |_| async move {
            let response = match self
                .send_admin(Request::IncrementalAlterConfigs(request.clone()))
                .await?
            {
                Response::IncrementalAlterConfigs(r) => r,
                other => return Err(unexpected("IncrementalAlterConfigs", &other)),
            };
            let result = response
                .topics
                .into_iter()
                .find(|t| t.name == name)
                .ok_or_else(|| missing_result(name))?;
            match result.error_code {
                ErrorCode::None => Ok(()),
                ErrorCode::UnknownTopicOrPartition => Err(Error::UnknownTopic {
                    topic: name.to_owned(),
                }),
                code => Err(Error::broker(context_ref, code, result.error_message)),
            }
        })
        .await
    }

    /// Every topic, internal ones included, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        let topics = self.client.all_topics().await?;
        Ok(topics
            .iter()
            .map(|t| TopicInfo {
                name: t.name.clone(),
                partitions: t.n_partitions(),
                replication_factor: t.replication_factor,
                internal: t.internal,
            })
            .collect())
    }

    /// A topic's partitions (leaders, leader epochs, replicas, ISR, log start and high
    /// watermark, asked of each leader) and configuration, from whichever broker answers
    /// first. [`Error::UnknownTopic`] when it does not exist. The offsets of a partition
    /// whose leader cannot be asked (down, or being elected) are -1.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let metadata = self.client.refresh_topic(name).await?;
        let mut partitions: Vec<PartitionDescription> = metadata
            .partitions
            .iter()
            .map(|p| PartitionDescription {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                log_start_offset: -1,
                high_watermark: -1,
            })
            .collect();
        for (timestamp, latest) in [(EARLIEST_TIMESTAMP, false), (LATEST_TIMESTAMP, true)] {
            let lookups: Vec<(PartitionId, i64)> = metadata
                .partitions
                .iter()
                .map(|p| (p.partition, timestamp))
                .collect();
            let found = self
                .client
                .list_offsets_bounded(
                    name,
                    &lookups,
                    DESCRIBE_LOOKUP_ATTEMPTS,
                    Some(DESCRIBE_LOOKUP_TIMEOUT),
                    IsolationLevel::ReadUncommitted,
                )
                .await?;
            for (partition, offset) in found {
                let Some(p) = partitions.iter_mut().find(|p| p.partition == partition) else {
                    continue;
                };
                match offset {
                    Ok(o) if latest => p.high_watermark = o,
                    Ok(o) => p.log_start_offset = o,
                    // Shown as -1 ("unavailable"): a describe should not fail for one
                    // partition whose leader is down or being elected.
                    Err(e) => {
                        tracing::warn!(topic = name, %partition, error = %e, "offset lookup failed")
                    }
                }
            }
        }
        Ok(TopicDescription {
            name: metadata.name.clone(),
            internal: metadata.internal,
            replication_factor: metadata.replication_factor,
            partitions,
            config: metadata.config.clone(),
        })
    }

    /// The cluster's id, active controller, voters and registered brokers (fenced too),
    /// from whichever broker answers first.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let request = Request::DescribeCluster(DescribeClusterRequest {
            include_fenced_brokers: true,
        });
        let response = match self.client.send_any(request).await? {
            Response::DescribeCluster(r) => r,
            other => return Err(unexpected("DescribeCluster", &other)),
        };
        let mut brokers: Vec<BrokerDescription> = response
            .brokers
            .iter()
            .map(|b| BrokerDescription {
                id: b.broker_id,
                address: format_address(&b.host, b.port),
                fenced: b.fenced,
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        let mut voters = response.voters;
        voters.sort();
        Ok(ClusterDescription {
            cluster_id: response.cluster_id,
            controller: Some(response.controller_id).filter(|&id| id != BrokerId::NONE),
            voters,
            brokers,
        })
    }

    /// Sends an admin request to the active controller when it is known, else anywhere
    /// (a broker forwards it or answers NOT_CONTROLLER, which `retrying` handles).
    /// Creates user `name` (or replaces its credential for `mechanism`) with `password`,
    /// for SCRAM and PLAIN logins. The password is salted and hashed here (PBKDF2, 8192
    /// iterations); only the salted password reaches the broker, and the brokers keep only
    /// what checks a login. On a broker without authentication this is how the first users
    /// are made before authentication is turned on.
    ///
    /// ```no_run
    /// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
    /// use sluice_client::SaslMechanism;
    /// admin.create_user("alice", SaslMechanism::ScramSha256, "s3cret").await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_user(
        &self,
        name: &str,
        mechanism: SaslMechanism,
        password: &str,
    ) -> Result<()> {
        let Some(scram) = mechanism.scram() else {
            return Err(Error::InvalidArgument(
                "a user's credential is SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN logins are \
                 checked against either)"
                    .into(),
            ));
        };
        if password.is_empty() {
            return Err(Error::InvalidArgument("the password is empty".into()));
        }
        let salt = sluice_protocol::scram::new_salt();
        let iterations = sluice_protocol::scram::ITERATIONS_DEFAULT;
        let salted = scram.salted_password(password.as_bytes(), &salt, iterations);
        let request = AlterUserScramCredentialsRequest {
            deletions: Vec::new(),
            upsertions: vec![ScramCredentialUpsertion {
                name: name.to_owned(),
                mechanism: scram.name().to_owned(),
                iterations: iterations as i32,
                salt: salt.into(),
                salted_password: salted.into(),
            }],
        };
        self.alter_users(format!("creating user \"{name}\""), request)
            .await
    }

    /// Deletes user `name`'s credentials: of `mechanism`, or of every mechanism it has.
    pub async fn delete_user(&self, name: &str, mechanism: Option<SaslMechanism>) -> Result<()> {
        let mechanisms: Vec<String> = match mechanism.and_then(SaslMechanism::scram) {
            Some(m) => vec![m.name().to_owned()],
            None => {
                let users = self.list_users().await?;
                let user = users.into_iter().find(|u| u.name == name).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "there is no user \"{name}\"; sluice user list shows the users"
                    ))
                })?;
                user.mechanisms.into_iter().map(|(m, _)| m).collect()
            }
        };
        let request = AlterUserScramCredentialsRequest {
            deletions: mechanisms
                .into_iter()
                .map(|mechanism| ScramCredentialDeletion {
                    name: name.to_owned(),
                    mechanism,
                })
                .collect(),
            upsertions: Vec::new(),
        };
        self.alter_users(format!("deleting user \"{name}\""), request)
            .await
    }

    async fn alter_users(
        &self,
        context: String,
        request: AlterUserScramCredentialsRequest,
    ) -> Result<()> {
        let context_ref = context.as_str();
        let request = &request;
        self.retrying(context_ref, move |_| async move {
            let response = match self
                .client
                .send_any(Request::AlterUserScramCredentials(request.clone()))
                .await?
            {
                Response::AlterUserScramCredentials(r) => r,
                other => return Err(unexpected("AlterUserScramCredentials", &other)),
            };
            for result in response.results {
                if result.error_code != ErrorCode::None {
                    return Err(Error::broker(
                        context_ref,
                        result.error_code,
                        result.error_message,
                    ));
                }
            }
            Ok(())
        })
        .await
    }

    /// Adds ACLs, all of them or none (the broker must run with `--authorizer on` to
    /// enforce them; this needs Alter on the cluster).
    ///
    /// ```no_run
    /// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
    /// use sluice_client::{Acl, AclOperation, AclResource};
    /// admin
    ///     .add_acls(&[Acl::allow("User:alice", AclOperation::Write, AclResource::Topic("orders".into()))])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_acls(&self, acls: &[Acl]) -> Result<()> {
        self.change_acls(acls, true).await
    }

    /// Removes ACLs, each given exactly as it was added; all of them or none.
    pub async fn remove_acls(&self, acls: &[Acl]) -> Result<()> {
        self.change_acls(acls, false).await
    }

    async fn change_acls(&self, acls: &[Acl], create: bool) -> Result<()> {
        let entries: Vec<_> = acls.iter().map(Acl::to_entry).collect();
        let context = if create {
            "adding ACLs"
        } else {
            "removing ACLs"
        };
        let entries = &entries;
        self.retrying(context, move |_| async move {
            let request = if create {
                Request::CreateAcls(CreateAclsRequest {
                    creations: entries.clone(),
                })
            } else {
                Request::DeleteAcls(DeleteAclsRequest {
                    deletions: entries.clone(),
                })
            };
            let results = match self.client.send_any(request).await? {
                Response::CreateAcls(r) => r.results,
                Response::DeleteAcls(r) => r.results,
                other => return Err(unexpected("CreateAcls", &other)),
            };
            match results
                .into_iter()
                .find(|r| r.error_code != ErrorCode::None)
            {
                Some(r) => Err(Error::broker(context, r.error_code, r.error_message)),
                None => Ok(()),
            }
        })
        .await
    }

    /// Sets `entity`'s quotas in `set` and removes those in `remove` (Kafka's names:
    /// `producer_byte_rate`, `consumer_byte_rate`; bytes per second). Needs Alter on the
    /// cluster.
    ///
    /// ```no_run
    /// # async fn demo(admin: sluice_client::Admin) -> sluice_client::Result<()> {
    /// use sluice_client::{QuotaEntity, QuotaName};
    /// let etl = QuotaEntity { user: None, client_id: Some(QuotaName::Named("etl".into())) };
    /// admin.alter_client_quotas(&etl, &[("producer_byte_rate", 1 << 20)], &[]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn alter_client_quotas(
        &self,
        entity: &QuotaEntity,
        set: &[(&str, u64)],
        remove: &[&str],
    ) -> Result<()> {
        let ops = set
            .iter()
            .map(|(key, value)| QuotaOp {
                key: (*key).to_owned(),
                value: i64::try_from(*value).unwrap_or(i64::MAX),
                remove: false,
            })
            .chain(remove.iter().map(|key| QuotaOp {
                key: (*key).to_owned(),
                value: 0,
                remove: true,
            }))
            .collect();
        let entry = QuotaAlteration {
            entity: entity.to_wire(),
            ops,
        };
        let entry = &entry;
        self.retrying("altering client quotas", move |_| async move {
            let request = Request::AlterClientQuotas(AlterClientQuotasRequest {
                entries: vec![entry.clone()],
                validate_only: false,
            });
            let results = match self.client.send_any(request).await? {
                Response::AlterClientQuotas(r) => r.results,
                other => return Err(unexpected("AlterClientQuotas", &other)),
            };
            match results
                .into_iter()
                .find(|r| r.error_code != ErrorCode::None)
            {
                Some(r) => Err(Error::broker(
                    "altering client quotas",
                    r.error_code,
                    r.error_message,
                )),
                None => Ok(()),
            }
        })
        .await
    }

    /// Every client quota, sorted by entity.
    pub async fn client_quotas(&self) -> Result<Vec<ClientQuota>> {
        let request = Request::DescribeClientQuotas(DescribeClientQuotasRequest {
            components: Vec::new(),
            strict: false,
        });
        match self.client.send_any(request).await? {
            Response::DescribeClientQuotas(r) => {
                Ok(r.entries.into_iter().map(ClientQuota::from_wire).collect())
            }
            other => Err(unexpected("DescribeClientQuotas", &other)),
        }
    }

    /// Every ACL, or those of `principal` (`User:alice`).
    pub async fn list_acls(&self, principal: Option<&str>) -> Result<Vec<Acl>> {
        let request = Request::DescribeAcls(DescribeAclsRequest {
            principal: principal.map(str::to_owned),
        });
        match self.client.send_any(request).await? {
            Response::DescribeAcls(r) => Ok(r.acls.iter().filter_map(Acl::from_entry).collect()),
            other => Err(unexpected("DescribeAcls", &other)),
        }
    }

    /// The SCRAM users, sorted by name, with their mechanisms and iterations (never their
    /// keys).
    pub async fn list_users(&self) -> Result<Vec<UserDescription>> {
        let request = Request::DescribeUserScramCredentials(DescribeUserScramCredentialsRequest {
            users: None,
        });
        let response = match self.client.send_any(request).await? {
            Response::DescribeUserScramCredentials(r) => r,
            other => return Err(unexpected("DescribeUserScramCredentials", &other)),
        };
        Ok(response
            .users
            .into_iter()
            .map(|u| UserDescription {
                name: u.user,
                mechanisms: u
                    .credentials
                    .into_iter()
                    .map(|c| (c.mechanism, c.iterations))
                    .collect(),
            })
            .collect())
    }

    async fn send_admin(&self, request: Request) -> Result<Response> {
        match self.client.cached_controller() {
            Some(controller) => self.client.send(controller, request).await,
            None => self.client.send_any(request).await,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the admin timeout passes,
    /// backing off between tries and refreshing the metadata (and so the controller)
    /// before each retry; each new reason to wait is logged once at WARN (`waiting: ...`),
    /// so a caller's user sees what is waited for. `attempt` is told whether an earlier try
    /// may have taken effect (its connection failed or went silent after the request was
    /// sent).
    async fn retrying<F, Fut>(&self, context: &str, attempt: F) -> Result<()>
    where
        F: Fn(bool) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut jitter = Jitter::new();
        let mut maybe_done = false;
        let mut tries = 1;
        let deadline = Instant::now() + self.timeout;
        let mut last_reported = String::new();
        loop {
            match attempt(maybe_done).await {
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    let reason = match e.to_string() {
                        r if r.starts_with(context) => r,
                        r => format!("{context}: {r}"),
                    };
                    if reason != last_reported {
                        let left = deadline.saturating_duration_since(Instant::now());
                        tracing::warn!(
                            "waiting: {reason}; retrying for up to {} s",
                            left.as_secs_f64().ceil()
                        );
                        last_reported = reason;
                    }
                    maybe_done |= matches!(e, Error::Network { .. } | Error::Timeout { .. });
                    let delay = ADMIN_BACKOFF.delay(tries, &mut jitter);
                    tokio::time::sleep(
                        delay.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    tries += 1;
                    // The refresh itself may fail for now; the next try finds a broker anyway.
                    let _ = self.client.refresh_metadata(Some(Vec::new())).await;
                }
                other => return other,
            }
        }
    }

    /// Polls the metadata until `topic` shows with at least `partitions` partitions and a
    /// leader for every one, or the wait ends; the change already succeeded, so this never
    /// fails.
    async fn wait_until_visible(&self, topic: &str, partitions: i32) {
        let deadline = Instant::now() + CREATE_VISIBLE_WAIT;
        loop {
            if let Ok(t) = self.client.refresh_topic(topic).await {
                if t.n_partitions() >= partitions
                    && t.partitions.iter().all(|p| p.leader != BrokerId::NONE)
                {
                    return;
                }
            }
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn timeout_ms(&self) -> i32 {
        broker_timeout_ms(self.client.config().request_timeout.min(self.timeout))
    }
}

fn missing_result(topic: &str) -> Error {
    Error::Protocol {
        addr: "the broker".to_owned(),
        reason: format!("the response has no result for topic \"{topic}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeBroker, FakeCluster};
    use crate::{ClientConfig, Producer, ProducerConfig, ProducerRecord};
    use sluice_protocol::ApiKey;

    async fn admin(broker: &FakeBroker) -> Admin {
        Admin::new(Client::connect(broker.config()).await.unwrap())
    }

    #[tokio::test]
    async fn create_list_describe_delete() {
        let broker = FakeBroker::start(&[]).await;
        let admin = admin(&broker).await;
        admin.create_topic(NewTopic::new("b", 2, 1)).await.unwrap();
        admin.create_topic(NewTopic::new("a", 1, 1)).await.unwrap();
        let e = admin
            .create_topic(NewTopic::new("a", 1, 1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::TopicAlreadyExists));
        assert!(
            e.to_string()
                .starts_with("creating topic \"a\": a topic with this name already exists"),
            "{e}"
        );
        let names: Vec<(String, i32)> = admin
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.partitions))
            .collect();
        assert_eq!(names, vec![("a".to_owned(), 1), ("b".to_owned(), 2)]);

        let producer = Producer::new(admin.client().clone(), ProducerConfig::default());
        for _ in 0..3 {
            producer
                .send(ProducerRecord::new("b", "x").partition(PartitionId(1)))
                .await
                .unwrap();
        }
        producer.close().await;
        let description = admin.describe_topic("b").await.unwrap();
        let offsets: Vec<(i32, i64, i64)> = description
            .partitions
            .iter()
            .map(|p| (p.partition.0, p.log_start_offset, p.high_watermark))
            .collect();
        assert_eq!(offsets, vec![(0, 0, 0), (1, 0, 3)]);
        assert_eq!(description.partitions[1].leader, BrokerId(1));

        admin.delete_topic("b").await.unwrap();
        assert_eq!(
            admin.delete_topic("b").await.unwrap_err(),
            Error::UnknownTopic { topic: "b".into() }
        );
        assert_eq!(
            admin.describe_topic("b").await.unwrap_err(),
            Error::UnknownTopic { topic: "b".into() }
        );
    }

    /// Failure bound of each step of the failover tests; far above what any step takes.
    const BOUND: Duration = Duration::from_secs(60);

    async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(BOUND, f)
            .await
            .unwrap_or_else(|_| panic!("{what} took longer than {} s", BOUND.as_secs()))
    }

    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn replicated_topics_show_leaders_epochs_replicas_and_isr() {
        let cluster = FakeCluster::start(3, &[]).await;
        let admin = Admin::new(Client::connect(cluster.config()).await.unwrap());
        admin.create_topic(NewTopic::new("r", 2, 3)).await.unwrap();
        let description = admin.describe_topic("r").await.unwrap();
        assert_eq!(description.replication_factor, 3);
        let ids = |ids: &[i32]| ids.iter().map(|&i| BrokerId(i)).collect::<Vec<_>>();
        let expected = |partition, leader, replicas: &[i32]| PartitionDescription {
            partition: PartitionId(partition),
            leader: BrokerId(leader),
            leader_epoch: LeaderEpoch(0),
            replicas: ids(replicas),
            isr: ids(replicas),
            log_start_offset: 0,
            high_watermark: 0,
        };
        assert_eq!(
            description.partitions,
            vec![expected(0, 1, &[1, 2, 3]), expected(1, 2, &[2, 3, 1])]
        );
        let e = admin
            .create_topic(NewTopic::new("too-many", 1, 4))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidReplicationFactor));
    }

    #[tokio::test]
    async fn a_hung_leader_shows_unknown_offsets_instead_of_stalling_the_description() {
        let cluster = FakeCluster::start(2, &[("t", 2, 2)]).await;
        let config = ClientConfig {
            request_timeout: Duration::from_secs(600),
            ..cluster.config()
        };
        let admin = Admin::new(Client::connect(config).await.unwrap());
        let leaders = admin.describe_topic("t").await.unwrap().partitions;
        cluster.hang(leaders[0].leader.0);
        let topic = bounded("describe topic", admin.describe_topic("t"))
            .await
            .unwrap();
        let offsets: Vec<(i64, i64)> = topic
            .partitions
            .iter()
            .map(|p| (p.log_start_offset, p.high_watermark))
            .collect();
        assert_eq!(offsets, vec![(-1, -1), (0, 0)]);
    }

    #[tokio::test]
    async fn describes_work_through_dead_and_hung_bootstrap_brokers() {
        let cluster = FakeCluster::start(3, &[("t", 1, 3)]).await;
        cluster.kill(1);
        cluster.fail_over(1);
        cluster.hang(3);
        let config = ClientConfig {
            bootstrap: vec![
                closed_port(),
                cluster.addr(1),
                cluster.addr(3),
                cluster.addr(2),
            ],
            request_timeout: Duration::from_secs(600),
            ..cluster.config()
        };
        let client = bounded("connect", Client::connect(config)).await.unwrap();
        let admin = Admin::new(client);
        let topic = bounded("describe topic", admin.describe_topic("t"))
            .await
            .unwrap();
        let p = &topic.partitions[0];
        assert_eq!((p.leader, p.leader_epoch), (BrokerId(2), LeaderEpoch(1)));
        assert_eq!(p.isr, vec![BrokerId(2), BrokerId(3)]);
        assert_eq!((p.log_start_offset, p.high_watermark), (0, 0));
        let cluster_description = bounded("describe cluster", admin.describe_cluster())
            .await
            .unwrap();
        assert_eq!(cluster_description.controller, Some(BrokerId(2)));
        let states: Vec<(i32, bool)> = cluster_description
            .brokers
            .iter()
            .map(|b| (b.id.0, b.fenced))
            .collect();
        assert_eq!(states, vec![(1, true), (2, false), (3, false)]);
    }

    #[tokio::test]
    async fn an_unreachable_leader_leaves_its_offsets_unknown() {
        let cluster = FakeCluster::start(2, &[("t", 2, 2)]).await;
        let admin = Admin::new(Client::connect(cluster.config()).await.unwrap());
        // Broker 1 (leader of partition 0) died; the controller has not noticed yet.
        cluster.kill(1);
        let topic = bounded("describe", admin.describe_topic("t"))
            .await
            .unwrap();
        let offsets: Vec<(BrokerId, i64, i64)> = topic
            .partitions
            .iter()
            .map(|p| (p.leader, p.log_start_offset, p.high_watermark))
            .collect();
        assert_eq!(offsets, vec![(BrokerId(1), -1, -1), (BrokerId(2), 0, 0)]);
    }

    #[tokio::test]
    async fn topic_admin_follows_the_controller_and_survives_a_lost_answer() {
        let cluster = FakeCluster::start(3, &[]).await;
        let admin = Admin::new(Client::connect(cluster.config()).await.unwrap());
        // The controller (1) dies; 2 takes over. The client still believes in 1.
        cluster.kill(1);
        cluster.fail_over(1);
        bounded("create", admin.create_topic(NewTopic::new("a", 1, 2)))
            .await
            .unwrap();
        assert!(cluster.state().topics.contains_key("a"));
        // The controller creates the topic, but its answer is lost with the connection:
        // the retry's TOPIC_ALREADY_EXISTS is this call's own doing.
        cluster.state().lose_answers.push(ApiKey::CreateTopics);
        bounded("create", admin.create_topic(NewTopic::new("b", 1, 2)))
            .await
            .unwrap();
        // Without a lost answer, an existing topic is still an error.
        let e = admin
            .create_topic(NewTopic::new("b", 1, 2))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::TopicAlreadyExists));
        cluster.state().lose_answers.push(ApiKey::DeleteTopics);
        bounded("delete", admin.delete_topic("b")).await.unwrap();
        assert!(!cluster.state().topics.contains_key("b"));
    }

    #[tokio::test]
    async fn describe_cluster() {
        let broker = FakeBroker::start(&[]).await;
        let cluster = admin(&broker).await.describe_cluster().await.unwrap();
        assert_eq!(cluster.cluster_id, "fake");
        assert_eq!(cluster.controller, Some(BrokerId(1)));
        assert_eq!(cluster.voters, vec![BrokerId(1)]);
        assert_eq!(
            cluster.brokers,
            vec![BrokerDescription {
                id: BrokerId(1),
                address: broker.addr.clone(),
                fenced: false
            }]
        );
    }
}
