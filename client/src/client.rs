//! [`Client`]: the shared core under [`crate::Producer`], [`crate::Consumer`] and
//! [`crate::Admin`]: bootstrap, the metadata cache, and one pipelined connection per broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sluice_protocol::messages::{MetadataRequest, MetadataResponse};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId, Request, Response};

use crate::connection::{Connection, ConnectionConfig};
use crate::error::{Error, Result};

/// Default broker address: what `sluice-broker` listens on with no arguments.
pub const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9700";

/// Settings shared by everything built on a [`Client`].
///
/// ```
/// use std::time::Duration;
/// use sluice_client::ClientConfig;
/// let config = ClientConfig {
///     bootstrap: vec!["10.0.0.1:9700".into(), "10.0.0.2:9700".into()],
///     request_timeout: Duration::from_secs(10),
///     ..ClientConfig::default()
/// };
/// assert_eq!(config.client_id, "sluice-client");
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Broker addresses (`host:port`) to learn the cluster from; the first that answers is
    /// used. Default: `127.0.0.1:9700`.
    pub bootstrap: Vec<String>,
    /// Names this client in the brokers' logs. Default: `sluice-client`.
    pub client_id: String,
    /// How long to wait for any one response (longer than any fetch `max_wait`). Default 30 s.
    pub request_timeout: Duration,
    /// How long to wait for a TCP connection to be accepted. Default 10 s.
    pub connect_timeout: Duration,
    /// Largest response frame accepted; a larger one closes the connection. Fetch sizes are
    /// capped below it. Default 64 MiB.
    pub max_frame_bytes: u32,
    /// Requests in flight on one connection before senders wait. Default 64.
    pub max_in_flight_per_connection: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap: vec![DEFAULT_BOOTSTRAP.to_owned()],
            client_id: "sluice-client".to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: 64 * 1024 * 1024,
            max_in_flight_per_connection: 64,
        }
    }
}

/// A broker as the metadata describes it.
///
/// ```no_run
/// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
/// let (_cluster_id, _controller, brokers) = client.brokers().await?;
/// for broker in brokers {
///     println!("broker {} at {}", broker.id, broker.address);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// The broker's node id.
    pub id: BrokerId,
    /// `host:port` of its native listener.
    pub address: String,
}

/// One partition as the metadata describes it.
///
/// ```no_run
/// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
/// use sluice_client::PartitionId;
/// let topic = client.topic_metadata("orders").await?;
/// let p = topic.partition(PartitionId(0))?;
/// println!("leader {} epoch {} isr {:?}", p.leader, p.leader_epoch, p.isr);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition's index.
    pub partition: PartitionId,
    /// Its leader, or [`BrokerId::NONE`] when it has none.
    pub leader: BrokerId,
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
    /// Every assigned replica.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
}

/// One topic as the metadata describes it.
///
/// ```no_run
/// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
/// let topic = client.topic_metadata("orders").await?;
/// println!("{} partitions, retention {:?}", topic.n_partitions(), topic.config.get("retention.ms"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMetadata {
    /// The topic's name.
    pub name: String,
    /// Whether it is internal (`__consumer_offsets`).
    pub internal: bool,
    /// Replicas per partition.
    pub replication_factor: i16,
    /// Its configuration overrides.
    pub config: BTreeMap<String, String>,
    /// Its partitions, indexed by partition number.
    pub partitions: Vec<PartitionMetadata>,
}

impl TopicMetadata {
    /// Number of partitions.
    pub fn n_partitions(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// The partition's metadata, or [`Error::UnknownPartition`].
    pub fn partition(&self, partition: PartitionId) -> Result<&PartitionMetadata> {
        usize::try_from(partition.0)
            .ok()
            .and_then(|i| self.partitions.get(i))
            .filter(|p| p.partition == partition)
            .or_else(|| self.partitions.iter().find(|p| p.partition == partition))
            .ok_or_else(|| Error::UnknownPartition {
                topic: self.name.clone(),
                partition,
                n_partitions: self.n_partitions(),
            })
    }
}

/// What the client knows of the cluster, refreshed from Metadata responses.
#[derive(Debug, Default)]
struct MetadataCache {
    cluster_id: String,
    controller: BrokerId,
    brokers: HashMap<BrokerId, BrokerMetadata>,
    topics: HashMap<String, Arc<TopicMetadata>>,
}

struct Inner {
    config: ClientConfig,
    /// The cache; a read lock is held only to clone an `Arc` or an address out.
    metadata: RwLock<MetadataCache>,
    /// Live connections by broker id. The lock is held only to look up or insert; dialling
    /// happens outside it.
    connections: Mutex<HashMap<BrokerId, Arc<Connection>>>,
    /// The connection used for requests any broker can answer (metadata, admin), usually
    /// the bootstrap broker that answered first.
    any: Mutex<Option<Arc<Connection>>>,
}

/// A connection to a sluice cluster: the shared core of producers, consumers and admin.
/// Cheap to clone (an `Arc` inside); clones share connections and metadata.
///
/// ```no_run
/// # async fn demo() -> sluice_client::Result<()> {
/// use sluice_client::{Client, ClientConfig};
/// let client = Client::connect(ClientConfig::default()).await?;
/// let topic = client.topic_metadata("orders").await?;
/// println!("orders has {} partitions", topic.n_partitions());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.config.bootstrap)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the first bootstrap address that answers and loads the cluster's
    /// brokers. Fails with [`Error::Connect`] naming every address when none answers.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.bootstrap.is_empty() {
            return Err(Error::InvalidArgument(
                "no bootstrap address given; pass at least one HOST:PORT".to_owned(),
            ));
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                metadata: RwLock::new(MetadataCache::default()),
                connections: Mutex::new(HashMap::new()),
                any: Mutex::new(None),
            }),
        };
        client.refresh_metadata(Some(Vec::new())).await?;
        Ok(client)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Sends `request` to broker `broker` and returns its response. A top-level error in
    /// the response header becomes [`Error::Broker`]; per-partition errors stay in the body.
    ///
    /// ```no_run
    /// # async fn demo(client: sluice_client::Client) -> sluice_client::Result<()> {
    /// use sluice_protocol::messages::DescribeClusterRequest;
    /// use sluice_protocol::{BrokerId, Request};
    /// let request = Request::DescribeCluster(DescribeClusterRequest { include_fenced_brokers: true });
    /// let response = client.send(BrokerId(1), request).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, broker: BrokerId, request: Request) -> Result<Response> {
        let connection = self.connection(broker).await?;
        connection.send(&request).await
    }

    /// Sends `request` to whichever broker the client is connected to (for requests any
    /// broker can answer: metadata, admin), dialling the bootstrap list if needed.
    pub async fn send_any(&self, request: Request) -> Result<Response> {
        let connection = self.any_connection().await?;
        connection.send(&request).await
    }

    /// Sends a request the broker does not answer (Produce with acks=0); returns once it
    /// is written to the socket.
    pub(crate) async fn send_without_response(
        &self,
        broker: BrokerId,
        request: Request,
    ) -> Result<()> {
        let connection = self.connection(broker).await?;
        connection.send_without_response(&request).await
    }

    /// The cached metadata of `topic`, fetched from the cluster when not cached.
    /// [`Error::UnknownTopic`] when the cluster does not have it.
    pub async fn topic_metadata(&self, topic: &str) -> Result<Arc<TopicMetadata>> {
        if let Some(cached) = self.cached_topic(topic) {
            return Ok(cached);
        }
        self.refresh_topic(topic).await
    }

    /// Fetches `topic`'s metadata from the cluster, replacing the cached copy.
    pub async fn refresh_topic(&self, topic: &str) -> Result<Arc<TopicMetadata>> {
        self.refresh_metadata(Some(vec![topic.to_owned()])).await?;
        self.cached_topic(topic).ok_or_else(|| Error::UnknownTopic {
            topic: topic.to_owned(),
        })
    }

    /// The cached metadata of `topic`, without asking the cluster.
    pub fn cached_topic(&self, topic: &str) -> Option<Arc<TopicMetadata>> {
        self.read_cache().topics.get(topic).cloned()
    }

    /// Every topic of the cluster (internal ones included), fetched now.
    pub async fn all_topics(&self) -> Result<Vec<Arc<TopicMetadata>>> {
        let response = self.refresh_metadata(None).await?;
        let cache = self.read_cache();
        let mut names: Vec<&String> = response.topics.iter().map(|t| &t.name).collect();
        names.sort();
        names.dedup();
        Ok(names
            .into_iter()
            .filter_map(|name| cache.topics.get(name).cloned())
            .collect())
    }

    /// The live brokers, the cluster id and the active controller, fetched now.
    pub async fn brokers(&self) -> Result<(String, BrokerId, Vec<BrokerMetadata>)> {
        self.refresh_metadata(Some(Vec::new())).await?;
        let cache = self.read_cache();
        let mut brokers: Vec<BrokerMetadata> = cache.brokers.values().cloned().collect();
        brokers.sort_by_key(|b| b.id);
        Ok((cache.cluster_id.clone(), cache.controller, brokers))
    }

    /// The active controller as of the last metadata refresh, if it is a known broker.
    pub(crate) fn cached_controller(&self) -> Option<BrokerId> {
        let cache = self.read_cache();
        Some(cache.controller).filter(|id| cache.brokers.contains_key(id))
    }

    /// Sends a Metadata request for `topics` (`None`: every topic) and merges the answer
    /// into the cache. Topics the cluster does not know are dropped from the cache.
    pub async fn refresh_metadata(&self, topics: Option<Vec<String>>) -> Result<MetadataResponse> {
        let request = Request::Metadata(MetadataRequest {
            topics: topics.clone(),
            allow_auto_topic_creation: false,
        });
        let response = match self.send_any(request).await? {
            Response::Metadata(m) => m,
            other => return Err(unexpected("Metadata", &other)),
        };
        self.merge_metadata(topics.is_none(), &response)?;
        Ok(response)
    }

    fn merge_metadata(&self, all_topics: bool, response: &MetadataResponse) -> Result<()> {
        let mut cache = self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner());
        cache.cluster_id = response.cluster_id.clone();
        cache.controller = response.controller_id;
        cache.brokers = response
            .brokers
            .iter()
            .map(|b| {
                let address = format_address(&b.host, b.port);
                (
                    b.broker_id,
                    BrokerMetadata {
                        id: b.broker_id,
                        address,
                    },
                )
            })
            .collect();
        if all_topics {
            cache.topics.clear();
        }
        for topic in &response.topics {
            match topic.error_code {
                ErrorCode::None => {
                    cache
                        .topics
                        .insert(topic.name.clone(), Arc::new(topic_from_wire(topic)));
                }
                ErrorCode::UnknownTopicOrPartition => {
                    cache.topics.remove(&topic.name);
                }
                code if code.is_retriable() => {
                    // Keep what we had (if anything); the caller retries.
                    tracing::debug!(topic = %topic.name, %code, "metadata for topic not available");
                }
                code => {
                    return Err(Error::broker(
                        format!("reading metadata of topic \"{}\"", topic.name),
                        code,
                        topic.error_message.clone(),
                    ))
                }
            }
        }
        Ok(())
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, MetadataCache> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn connection_config(&self) -> ConnectionConfig {
        let c = &self.inner.config;
        ConnectionConfig {
            client_id: c.client_id.clone(),
            request_timeout: c.request_timeout,
            connect_timeout: c.connect_timeout,
            max_frame_bytes: c.max_frame_bytes,
            max_in_flight: c.max_in_flight_per_connection.max(1),
        }
    }

    /// The live connection to `broker`, dialled if missing or dead.
    async fn connection(&self, broker: BrokerId) -> Result<Arc<Connection>> {
        if let Some(c) = self.live(&self.inner.connections, broker) {
            return Ok(c);
        }
        let address = self
            .read_cache()
            .brokers
            .get(&broker)
            .map(|b| b.address.clone());
        let address = match address {
            Some(a) => a,
            None => {
                // A broker we have not heard of yet: refresh once before giving up.
                self.refresh_metadata(Some(Vec::new())).await?;
                self.read_cache()
                    .brokers
                    .get(&broker)
                    .map(|b| b.address.clone())
                    .ok_or_else(|| Error::Network {
                        addr: format!("broker {broker}"),
                        reason: "the broker is not in the cluster's metadata (it may be down)"
                            .to_owned(),
                    })?
            }
        };
        let connection = Arc::new(Connection::connect(&address, self.connection_config()).await?);
        let mut map = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Another caller may have dialled meanwhile; keep one connection per broker.
        match map.get(&broker) {
            Some(existing) if !existing.is_dead() => Ok(existing.clone()),
            _ => {
                map.insert(broker, connection.clone());
                Ok(connection)
            }
        }
    }

    fn live(
        &self,
        map: &Mutex<HashMap<BrokerId, Arc<Connection>>>,
        broker: BrokerId,
    ) -> Option<Arc<Connection>> {
        let map = map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&broker).filter(|c| !c.is_dead()).cloned()
    }

    /// A live connection to any broker: the current one, else a known broker, else the
    /// bootstrap addresses in order.
    async fn any_connection(&self) -> Result<Arc<Connection>> {
        {
            let any = self.inner.any.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = any.as_ref().filter(|c| !c.is_dead()) {
                return Ok(c.clone());
            }
        }
        let mut candidates: Vec<String> = self
            .read_cache()
            .brokers
            .values()
            .map(|b| b.address.clone())
            .collect();
        candidates.sort();
        for address in &self.inner.config.bootstrap {
            if !candidates.contains(address) {
                candidates.push(address.clone());
            }
        }
        let mut failures = Vec::new();
        for address in &candidates {
            match Connection::connect(address, self.connection_config()).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    *self.inner.any.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                    return Ok(c);
                }
                Err(Error::Connect { reason, .. }) => failures.push((address.clone(), reason)),
                Err(e) => return Err(e),
            }
        }
        Err(connect_failure(failures))
    }
}

/// One [`Error::Connect`] for every address that failed, grouped by reason.
fn connect_failure(failures: Vec<(String, String)>) -> Error {
    let mut by_reason: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (address, reason) in failures {
        by_reason.entry(reason).or_default().push(address);
    }
    let reason = by_reason.keys().cloned().collect::<Vec<_>>().join("; ");
    let addr = by_reason
        .into_values()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    Error::Connect { addr, reason }
}

/// `host:port`, with brackets around an IPv6 host.
pub(crate) fn format_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn topic_from_wire(topic: &sluice_protocol::messages::MetadataTopic) -> TopicMetadata {
    let mut partitions: Vec<PartitionMetadata> = topic
        .partitions
        .iter()
        .map(|p| PartitionMetadata {
            partition: p.partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
        })
        .collect();
    partitions.sort_by_key(|p| p.partition);
    TopicMetadata {
        name: topic.name.clone(),
        internal: topic.is_internal,
        replication_factor: topic.replication_factor,
        config: topic
            .configs
            .iter()
            .map(|c| (c.name.clone(), c.value.clone()))
            .collect(),
        partitions,
    }
}

/// The error for a response of another api than the request's (a broker bug).
pub(crate) fn unexpected(expected: &str, got: &Response) -> Error {
    Error::Protocol {
        addr: "the broker".to_owned(),
        reason: format!(
            "expected a {expected} response, got {}",
            got.api_key().name()
        ),
    }
}

/// Tries of a lookup that may hit a stale leader before giving up.
const LOOKUP_ATTEMPTS: u32 = 4;
/// Wait between those tries.
const LOOKUP_BACKOFF: Duration = Duration::from_millis(200);

impl Client {
    /// Looks up, in each partition of `topic`, the offset for a ListOffsets timestamp
    /// (`-2` earliest, `-1` latest = high watermark, else the first offset with a timestamp
    /// at or after it, `-1` when there is none). Each request goes to the partition's
    /// leader; leadership errors refresh the metadata and retry a few times.
    pub async fn list_offsets(
        &self,
        topic: &str,
        lookups: &[(PartitionId, i64)],
    ) -> Result<Vec<(PartitionId, Result<i64>)>> {
        use sluice_protocol::messages::{
            IsolationLevel, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
        };
        let mut todo: Vec<(PartitionId, i64)> = lookups.to_vec();
        let mut done: Vec<(PartitionId, Result<i64>)> = Vec::new();
        for attempt in 1..=LOOKUP_ATTEMPTS {
            let metadata = if attempt == 1 {
                self.topic_metadata(topic).await?
            } else {
                tokio::time::sleep(LOOKUP_BACKOFF).await;
                self.refresh_topic(topic).await?
            };
            let mut by_leader: BTreeMap<BrokerId, Vec<ListOffsetsPartition>> = BTreeMap::new();
            let mut retry = Vec::new();
            for &(partition, timestamp) in &todo {
                let p = metadata.partition(partition)?;
                if p.leader == BrokerId::NONE {
                    retry.push((partition, timestamp, leaderless(topic, partition)));
                    continue;
                }
                by_leader
                    .entry(p.leader)
                    .or_default()
                    .push(ListOffsetsPartition {
                        partition,
                        current_leader_epoch: p.leader_epoch,
                        timestamp,
                    });
            }
            for (leader, partitions) in by_leader {
                let timestamps: HashMap<PartitionId, i64> = partitions
                    .iter()
                    .map(|p| (p.partition, p.timestamp))
                    .collect();
                let request = Request::ListOffsets(ListOffsetsRequest {
                    replica_id: BrokerId::NONE,
                    isolation_level: IsolationLevel::ReadUncommitted,
                    topics: vec![ListOffsetsTopic {
                        name: topic.to_owned(),
                        partitions,
                    }],
                });
                let response = match self.send(leader, request).await {
                    Ok(Response::ListOffsets(r)) => r,
                    Ok(other) => return Err(unexpected("ListOffsets", &other)),
                    Err(e) if e.is_retriable() => {
                        for (&partition, &timestamp) in &timestamps {
                            retry.push((partition, timestamp, e.clone()));
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let mut unanswered = timestamps.clone();
                for p in response.topics.into_iter().flat_map(|t| t.partitions) {
                    let Some(timestamp) = unanswered.remove(&p.partition) else {
                        continue;
                    };
                    match p.error_code {
                        ErrorCode::None => done.push((p.partition, Ok(p.offset.0))),
                        code => {
                            let e = Error::broker(
                                format!("looking up offsets of {topic}/{}", p.partition),
                                code,
                                p.error_message,
                            );
                            if e.is_retriable() {
                                retry.push((p.partition, timestamp, e));
                            } else {
                                done.push((p.partition, Err(e)));
                            }
                        }
                    }
                }
                for partition in unanswered.into_keys() {
                    let reason =
                        format!("the ListOffsets response has no result for {topic}/{partition}");
                    done.push((
                        partition,
                        Err(Error::Protocol {
                            addr: format!("broker {leader}"),
                            reason,
                        }),
                    ));
                }
            }
            if retry.is_empty() || attempt == LOOKUP_ATTEMPTS {
                done.extend(retry.into_iter().map(|(p, _, e)| (p, Err(e))));
                break;
            }
            todo = retry.into_iter().map(|(p, t, _)| (p, t)).collect();
        }
        done.sort_by_key(|(p, _)| *p);
        Ok(done)
    }
}

/// The error for a partition without a leader.
pub(crate) fn leaderless(topic: &str, partition: PartitionId) -> Error {
    Error::LeaderNotAvailable {
        topic: topic.to_owned(),
        partition,
    }
}
