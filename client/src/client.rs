//! [`Client`]: the shared core under [`crate::Producer`], [`crate::Consumer`] and
//! [`crate::Admin`]: bootstrap, the metadata cache, and one pipelined connection per broker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sluice_protocol::messages::{IsolationLevel, MetadataRequest, MetadataResponse};
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, PartitionId, Request, Response};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::backoff::{Backoff, Jitter};
use crate::connection::{Connection, ConnectionConfig};
use crate::error::{Error, Result};
use crate::fast_hash::FastMap;
use crate::TopicPartition;

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
    /// How long a request any broker can answer (Metadata, DescribeCluster) waits for one
    /// broker before the next known or bootstrap broker is asked as well; the first answer
    /// wins. So a dead or hung broker delays a metadata refresh by this much, not by the
    /// request timeout, while others are up. A broker answers metadata from memory in
    /// well under a millisecond, so waiting longer only delays a failover. Default 250 ms.
    pub metadata_hedge_after: Duration,
    /// How old a topic's cached metadata may grow before a producer sending to it has it
    /// fetched again, in the background, so partitions added to the topic (and leaders
    /// moved without an error to show it) are seen. Kafka's `metadata.max.age.ms`.
    /// Default 5 minutes.
    pub metadata_max_age: Duration,
    /// How to log in, for brokers that require SASL authentication. Default: none.
    pub sasl: Option<crate::SaslConfig>,
    /// TLS to the brokers: the CA of their certificates, and this client's certificate
    /// when they require one. Default `None`: plain TCP.
    pub tls: Option<crate::TlsConfig>,
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
            metadata_hedge_after: Duration::from_millis(250),
            metadata_max_age: Duration::from_secs(300),
            sasl: None,
            tls: None,
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
    /// `segment.bytes` from `config`, parsed once: the producer asks for every record.
    segment_bytes: Option<usize>,
}

impl TopicMetadata {
    /// The largest batch the topic's leaders write: its `segment.bytes` (a batch never
    /// spans segments). `None` when the metadata does not say. Parsed from `config` as the
    /// broker gave it: a copy whose `config` is edited afterwards still answers the same.
    pub fn segment_bytes(&self) -> Option<usize> {
        self.segment_bytes
    }

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
    /// Each topic's metadata and when it was fetched (or last claimed for a refresh).
    topics: FastMap<String, (Arc<TopicMetadata>, Instant)>,
}

/// One topic's cached metadata kept by a caller that asks for it over and over (a
/// producer, once per record): see [`Client::cached_topic_memo`].
#[derive(Default)]
pub(crate) struct TopicMemo(Mutex<Option<(u64, Arc<TopicMetadata>)>>);

struct Inner {
    config: ClientConfig,
    /// The cache; a read lock is held only to clone an `Arc` or an address out.
    metadata: RwLock<MetadataCache>,
    /// Counts the changes to the cached topics, bumped under the cache's write lock, so a
    /// copy taken out of the cache is trusted without a lookup while it stays
    /// ([`TopicMemo`]).
    generation: AtomicU64,
    /// Live connections by broker id. The lock is held only to look up or insert; dialling
    /// happens outside it.
    connections: Mutex<HashMap<BrokerId, Arc<Connection>>>,
    /// The connection used for requests any broker can answer (metadata, admin): the
    /// broker that answered such a request last.
    any: Mutex<Option<Arc<Connection>>>,
    /// Addresses that failed (refused, reset, unanswered) and when, so the next request any
    /// broker can answer tries them last. Cleared for an address when it answers. Bounded
    /// by the bootstrap list plus the brokers the metadata has named.
    failed_addresses: Mutex<HashMap<String, Instant>>,
}

/// A broker address to ask a request any broker can answer, with its live connection if
/// there is one.
struct Candidate {
    address: String,
    connection: Option<Arc<Connection>>,
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
                generation: AtomicU64::new(0),
                connections: Mutex::new(HashMap::new()),
                any: Mutex::new(None),
                failed_addresses: Mutex::new(HashMap::new()),
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
        let result = connection.send(&request).await;
        self.note_outcome(connection.addr(), &result);
        result
    }

    /// Sends `request` to broker `broker`, waiting at most `timeout` for the connection
    /// and the response together. On timeout the connection is closed (see
    /// [`Connection::send_with_timeout`]).
    pub(crate) async fn send_with_timeout(
        &self,
        broker: BrokerId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response> {
        self.send_in_turn(broker, request, timeout, None, None)
            .await
    }

    /// [`send_with_timeout`](Self::send_with_timeout) for requests that must reach the
    /// broker in the order they were issued (a producer's pipelined batches of one
    /// partition): it first waits for `turn` (the previous request of the chain is queued
    /// on the connection, or has failed), then queues its own and lets go of `queued`,
    /// which the next request of the chain waits for. `queued` is dropped on every path,
    /// so a request that fails never holds up the next one. The wait for the turn counts
    /// in `timeout`.
    pub(crate) async fn send_in_turn(
        &self,
        broker: BrokerId,
        request: Request,
        timeout: Duration,
        turn: Option<oneshot::Receiver<()>>,
        queued: Option<oneshot::Sender<()>>,
    ) -> Result<Response> {
        let deadline = Instant::now() + timeout;
        let submit = async {
            if let Some(turn) = turn {
                let _ = turn.await;
            }
            let connection = self.connection(broker).await?;
            let submitted = connection.submit(&request).await;
            Ok::<_, Error>((connection, submitted))
        };
        let submitted = tokio::time::timeout(timeout, submit).await;
        drop(queued);
        let (connection, submitted) = match submitted {
            Ok(submitted) => submitted?,
            Err(_) => {
                return Err(Error::Timeout {
                    addr: format!("broker {broker}"),
                    api: request.api_key().name(),
                    timeout,
                })
            }
        };
        let result = match submitted {
            Ok(submitted) => {
                let left = deadline.saturating_duration_since(Instant::now());
                submitted.response(left).await
            }
            Err(e) => Err(e),
        };
        self.note_outcome(connection.addr(), &result);
        result
    }

    /// Sends `request` to any broker (for requests any broker can answer: metadata,
    /// admin), trying the broker that answered last first, then the other known brokers
    /// and the bootstrap addresses, those that failed recently last.
    ///
    /// Reads that every broker answers alike (Metadata, DescribeCluster, ApiVersions), and
    /// an idempotent producer's InitProducerId, are hedged: when the first broker has not answered within
    /// [`ClientConfig::metadata_hedge_after`], or has failed, the next one is asked too, and
    /// the first answer wins. Other requests go to one broker only, falling over to the
    /// next only when it cannot be reached at all: once sent, a request may have taken
    /// effect, and sending it to a second broker could do it twice.
    pub async fn send_any(&self, request: Request) -> Result<Response> {
        if is_hedgeable(&request) {
            return self.send_hedged(request, self.candidates()).await;
        }
        let connection = self.any_connection().await?;
        let result = connection.send(&request).await;
        self.note_outcome(connection.addr(), &result);
        result
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

    /// The leader of `tp` as the cached metadata has it, if it names one.
    pub(crate) fn cached_leader(&self, tp: &TopicPartition) -> Option<BrokerId> {
        leader_of(self.cached_topic(&tp.topic)?, tp.partition)
    }

    /// [`Client::cached_leader`], starting a refresh of the topic's metadata in the
    /// background when it is older than [`ClientConfig::metadata_max_age`] (see
    /// [`Client::cached_topic_refreshing`]).
    pub(crate) fn cached_leader_refreshing(&self, tp: &TopicPartition) -> Option<BrokerId> {
        leader_of(self.cached_topic_refreshing(&tp.topic)?, tp.partition)
    }

    /// The cached metadata of `topic` as [`Client::cached_topic`] has it, through `memo`:
    /// while the cache's topics have not changed since the memo was taken, an atomic load
    /// and a name comparison instead of the cache's lock and a hash lookup (a producer asks
    /// once per record).
    pub(crate) fn cached_topic_memo(
        &self,
        topic: &str,
        memo: &TopicMemo,
    ) -> Option<Arc<TopicMetadata>> {
        let generation = self.inner.generation.load(Ordering::Acquire);
        let mut memo = memo.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((taken, metadata)) = &*memo {
            if *taken == generation && metadata.name == topic {
                return Some(Arc::clone(metadata));
            }
        }
        let metadata = self.cached_topic(topic)?;
        *memo = Some((generation, Arc::clone(&metadata)));
        Some(metadata)
    }

    /// The cached metadata of `topic`, without asking the cluster.
    pub fn cached_topic(&self, topic: &str) -> Option<Arc<TopicMetadata>> {
        self.read_cache()
            .topics
            .get(topic)
            .map(|(t, _)| Arc::clone(t))
    }

    /// The cached metadata of `topic`, without waiting for the cluster; when it is older
    /// than [`ClientConfig::metadata_max_age`], a refresh starts in the background (one
    /// per topic at a time: the entry counts as fresh from then on, so a refresh that fails
    /// is tried again after another `metadata_max_age`).
    pub(crate) fn cached_topic_refreshing(&self, topic: &str) -> Option<Arc<TopicMetadata>> {
        let max_age = self.inner.config.metadata_max_age;
        let (metadata, fetched_at) = self.read_cache().topics.get(topic).cloned()?;
        if fetched_at.elapsed() > max_age && self.claim_refresh(topic, max_age) {
            let client = self.clone();
            let topic = topic.to_owned();
            tokio::spawn(async move {
                if let Err(e) = client.refresh_topic(&topic).await {
                    tracing::debug!(topic, error = %e, "periodic metadata refresh failed");
                }
            });
        }
        Some(metadata)
    }

    /// Marks `topic`'s cached metadata fresh if it is still older than `max_age`: true
    /// for the one caller that should refresh it.
    fn claim_refresh(&self, topic: &str, max_age: Duration) -> bool {
        let mut cache = self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match cache.topics.get_mut(topic) {
            Some((_, fetched_at)) if fetched_at.elapsed() > max_age => {
                *fetched_at = Instant::now();
                true
            }
            _ => false,
        }
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
            .filter_map(|name| cache.topics.get(name).map(|(t, _)| Arc::clone(t)))
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

    /// Resolves once the metadata, asked of brokers other than `leader` from `after` on
    /// and every [`LEADER_CHECK_EVERY`], gives every partition of `tps` a leader other
    /// than `leader`: a request to `leader` for them can no longer succeed (a hung or
    /// cut-off leader was fenced and replaced; a cut-off one still names itself leader,
    /// which is why it is not asked), so the caller abandons it for the new leader
    /// without waiting out its request timeout. The error says so (NOT_LEADER_OR_FOLLOWER,
    /// retriable). A request abandoned this way has an unknown outcome, as after a
    /// timeout.
    ///
    /// `limiter`, shared by the callers of one producer, holds when one of them last asked
    /// the cluster: at most one refresh per [`LEADER_CHECK_EVERY`] among them, however
    /// many requests wait.
    pub(crate) async fn leader_replaced(
        &self,
        leader: BrokerId,
        tps: &[TopicPartition],
        after: Duration,
        limiter: Option<&Mutex<Option<Instant>>>,
    ) -> Error {
        tokio::time::sleep(after).await;
        let mut topics: Vec<&str> = tps.iter().map(|tp| tp.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        loop {
            let refresh = match limiter {
                None => true,
                Some(limiter) => {
                    let mut last = lock(limiter);
                    let due = last.is_none_or(|at| at.elapsed() >= LEADER_CHECK_EVERY);
                    if due {
                        *last = Some(Instant::now());
                    }
                    due
                }
            };
            if refresh {
                for topic in &topics {
                    if let Err(e) = self.refresh_topic_avoiding(topic, leader).await {
                        tracing::debug!(topic, error = %e, "checking for a new leader");
                    }
                }
            }
            let moved: Vec<BrokerId> = tps
                .iter()
                .filter_map(|tp| self.cached_leader(tp).filter(|l| *l != leader))
                .collect();
            if !tps.is_empty() && moved.len() == tps.len() {
                return Error::broker(
                    format!("reading or writing {}", tps[0]),
                    ErrorCode::NotLeaderOrFollower,
                    Some(format!(
                        "broker {leader} was replaced as the leader (by broker {}) while the \
                         request waited for its answer",
                        moved[0]
                    )),
                );
            }
            tokio::time::sleep(LEADER_CHECK_EVERY).await;
        }
    }

    /// Sends a Metadata request for `topics` (`None`: every topic) and merges the answer
    /// into the cache. Topics the cluster does not know are dropped from the cache.
    pub async fn refresh_metadata(&self, topics: Option<Vec<String>>) -> Result<MetadataResponse> {
        self.refresh_metadata_avoiding(topics, None).await
    }

    /// Fetches `topic`'s metadata from a broker other than `suspect` (unless it is the
    /// only one known), replacing the cached copy: when a request to `suspect` goes
    /// unanswered, `suspect` may be cut off from the cluster and still describe itself as
    /// the leader, so only another broker can tell whether it was replaced.
    pub(crate) async fn refresh_topic_avoiding(
        &self,
        topic: &str,
        suspect: BrokerId,
    ) -> Result<Arc<TopicMetadata>> {
        self.refresh_metadata_avoiding(Some(vec![topic.to_owned()]), Some(suspect))
            .await?;
        self.cached_topic(topic).ok_or_else(|| Error::UnknownTopic {
            topic: topic.to_owned(),
        })
    }

    async fn refresh_metadata_avoiding(
        &self,
        topics: Option<Vec<String>>,
        suspect: Option<BrokerId>,
    ) -> Result<MetadataResponse> {
        let request = Request::Metadata(MetadataRequest {
            topics: topics.clone(),
            allow_auto_topic_creation: false,
        });
        let mut candidates = self.candidates();
        let avoid = suspect.and_then(|id| {
            self.read_cache()
                .brokers
                .get(&id)
                .map(|b| b.address.clone())
        });
        if let Some(avoid) = avoid {
            if candidates.iter().any(|c| c.address != avoid) {
                candidates.retain(|c| c.address != avoid);
            }
        }
        let response = match self.send_hedged(request, candidates).await? {
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
        // Before the changes, under the write lock: a memo taken from the cache while it
        // changes is kept only until the next send looks.
        self.inner.generation.fetch_add(1, Ordering::Release);
        for topic in &response.topics {
            match topic.error_code {
                ErrorCode::None => {
                    cache.topics.insert(
                        topic.name.clone(),
                        (Arc::new(topic_from_wire(topic)), Instant::now()),
                    );
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

    pub(crate) fn connection_config(&self) -> ConnectionConfig {
        let c = &self.inner.config;
        ConnectionConfig {
            client_id: c.client_id.clone(),
            request_timeout: c.request_timeout,
            connect_timeout: c.connect_timeout,
            max_frame_bytes: c.max_frame_bytes,
            max_in_flight: c.max_in_flight_per_connection.max(1),
            sasl: c.sasl.clone(),
            tls: c.tls.clone(),
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
        let connection = match Connection::connect(&address, self.connection_config()).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                self.note_failure(&address);
                return Err(e);
            }
        };
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

    /// A live connection to any broker: the first candidate (see [`Client::candidates`])
    /// that can be reached.
    async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut failures = Vec::new();
        for candidate in self.candidates() {
            if let Some(connection) = candidate.connection {
                return Ok(connection);
            }
            match Connection::connect(&candidate.address, self.connection_config()).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    *lock(&self.inner.any) = Some(c.clone());
                    return Ok(c);
                }
                Err(Error::Connect { reason, .. }) => {
                    self.note_failure(&candidate.address);
                    failures.push((candidate.address, reason));
                }
                Err(e) => return Err(e),
            }
        }
        Err(connect_failure(failures))
    }

    /// Sends a request any broker answers alike to one candidate after another, starting
    /// the next when the ones asked have all failed or none has answered within the hedge
    /// delay; returns the first answer. The losers are cancelled (their late answers are
    /// dropped by their connections).
    async fn send_hedged(&self, request: Request, candidates: Vec<Candidate>) -> Result<Response> {
        let hedge_after = self.inner.config.metadata_hedge_after;
        let mut waiting = candidates.into_iter();
        let mut asking = JoinSet::new();
        let mut failures: Vec<(String, Error)> = Vec::new();
        // Starts the next candidate, if any; returns when to start another one.
        let mut ask_next = |asking: &mut JoinSet<_>| {
            if let Some(c) = waiting.next() {
                asking.spawn(ask(self.clone(), c, request.clone()));
            }
            (waiting.len() > 0).then(|| Instant::now() + hedge_after)
        };
        let mut hedge_at = ask_next(&mut asking);
        loop {
            let hedge = async {
                match hedge_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                joined = asking.join_next() => {
                    let Some(joined) = joined else {
                        return Err(hedged_failure(failures));
                    };
                    let (address, result) = match joined {
                        Ok(outcome) => outcome,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => (String::from("a cancelled task"), Err(Error::Network {
                            addr: "any broker".to_owned(),
                            reason: e.to_string(),
                        })),
                    };
                    match result {
                        Ok((connection, response)) => {
                            self.note_success(&address);
                            *lock(&self.inner.any) = Some(connection);
                            return Ok(response);
                        }
                        Err(e) if e.is_retriable() => {
                            tracing::debug!(%address, error = %e, "broker did not answer; asking the next");
                            self.note_failure(&address);
                            failures.push((address, e));
                            hedge_at = ask_next(&mut asking);
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ = hedge => {
                    tracing::debug!("no answer yet; asking another broker too");
                    hedge_at = ask_next(&mut asking);
                }
            }
        }
    }

    /// Where to send a request any broker can answer, in order: the broker that answered
    /// last, the known brokers by id, then the bootstrap addresses; addresses that failed
    /// go last, the one that failed longest ago first among them. Each comes with its live
    /// connection when there is one.
    fn candidates(&self) -> Vec<Candidate> {
        let mut live: HashMap<String, Arc<Connection>> = HashMap::new();
        let current = lock(&self.inner.any).clone().filter(|c| !c.is_dead());
        for c in lock(&self.inner.connections).values() {
            if !c.is_dead() {
                live.insert(c.addr().to_owned(), c.clone());
            }
        }
        let mut addresses: Vec<String> = Vec::new();
        if let Some(c) = current {
            addresses.push(c.addr().to_owned());
            live.insert(c.addr().to_owned(), c);
        }
        {
            let cache = self.read_cache();
            let mut known: Vec<&BrokerMetadata> = cache.brokers.values().collect();
            known.sort_by_key(|b| b.id);
            addresses.extend(known.into_iter().map(|b| b.address.clone()));
        }
        addresses.extend(self.inner.config.bootstrap.iter().cloned());
        let mut seen = HashSet::new();
        addresses.retain(|a| seen.insert(a.clone()));
        let failed = lock(&self.inner.failed_addresses);
        // Stable: among addresses that have not failed, the order above stays.
        addresses.sort_by_key(|a| failed.get(a).copied());
        addresses
            .into_iter()
            .map(|address| Candidate {
                connection: live.get(&address).cloned(),
                address,
            })
            .collect()
    }

    /// Remembers how a request to `address` went: an answer (even an error code) clears a
    /// past failure; a dead or silent connection is one.
    fn note_outcome(&self, address: &str, result: &Result<Response>) {
        match result {
            Ok(_) | Err(Error::Broker { .. }) => self.note_success(address),
            Err(Error::Network { .. } | Error::Timeout { .. }) => self.note_failure(address),
            Err(_) => {}
        }
    }

    fn note_failure(&self, address: &str) {
        lock(&self.inner.failed_addresses).insert(address.to_owned(), Instant::now());
    }

    fn note_success(&self, address: &str) {
        lock(&self.inner.failed_addresses).remove(address);
    }
}

/// Asks one candidate (dialling it if needed); returns its address with the outcome.
async fn ask(
    client: Client,
    candidate: Candidate,
    request: Request,
) -> (String, Result<(Arc<Connection>, Response)>) {
    let connection = match candidate.connection {
        Some(c) => c,
        None => match Connection::connect(&candidate.address, client.connection_config()).await {
            Ok(c) => Arc::new(c),
            Err(e) => return (candidate.address, Err(e)),
        },
    };
    let result = connection.send(&request).await.map(|r| (connection, r));
    (candidate.address, result)
}

/// Whether every broker answers `request` alike and asking two at once is harmless. An
/// InitProducerId without a transactional id is: a new id asked twice wastes one id, and
/// the next epoch of an id is the same from every broker.
fn is_hedgeable(request: &Request) -> bool {
    match request {
        Request::Metadata(_) | Request::DescribeCluster(_) | Request::ApiVersions(_) => true,
        Request::InitProducerId(r) => r.transactional_id.is_none(),
        _ => false,
    }
}

/// The error when no candidate answered: one [`Error::Connect`] naming every address when
/// none could be reached, else the last other failure (a timeout, a reset), which says more.
fn hedged_failure(failures: Vec<(String, Error)>) -> Error {
    if let Some((_, e)) = failures
        .iter()
        .rev()
        .find(|(_, e)| !matches!(e, Error::Connect { .. }))
    {
        return e.clone();
    }
    if failures.is_empty() {
        return Error::InvalidArgument(
            "no broker address to ask; pass at least one HOST:PORT".to_owned(),
        );
    }
    connect_failure(
        failures
            .into_iter()
            .filter_map(|(address, e)| match e {
                Error::Connect { reason, .. } => Some((address, reason)),
                _ => None,
            })
            .collect(),
    )
}

/// Locks a std mutex of the client. Every critical section is a lookup or an insert, so a
/// panic elsewhere cannot leave the data inconsistent and a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// The leader `topic`'s metadata names for `partition`, if it names one.
fn leader_of(topic: Arc<TopicMetadata>, partition: PartitionId) -> Option<BrokerId> {
    topic
        .partition(partition)
        .ok()
        .map(|p| p.leader)
        .filter(|&leader| leader != BrokerId::NONE)
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
    let config: BTreeMap<String, String> = topic
        .configs
        .iter()
        .map(|c| (c.name.clone(), c.value.clone()))
        .collect();
    TopicMetadata {
        name: topic.name.clone(),
        internal: topic.is_internal,
        replication_factor: topic.replication_factor,
        segment_bytes: config.get("segment.bytes").and_then(|b| b.parse().ok()),
        config,
        partitions,
    }
}

/// What to put in a request's `timeout_ms` (how long the broker may wait, for replication
/// or a controller commit, before it answers REQUEST_TIMED_OUT) when the client waits
/// `client_wait` for the answer: a little less, so a broker that is alive but cannot finish
/// in time says so before the client gives up on it and closes the connection.
pub(crate) fn broker_timeout_ms(client_wait: Duration) -> i32 {
    let margin = (client_wait / 10).min(Duration::from_secs(1));
    i32::try_from((client_wait - margin).as_millis()).unwrap_or(i32::MAX)
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

/// Tries of an offset lookup before a partition's retriable error is returned: enough,
/// with [`LOOKUP_BACKOFF`], to ride out a leader failover (the broker session timeout, 3 s
/// by default, then an election): the waits add up to about 6.5 s.
pub(crate) const LOOKUP_ATTEMPTS: u32 = 10;

/// How often [`Client::leader_replaced`] asks the metadata while a request waits: often,
/// since the time from a leader's replacement to its discovery here adds to every
/// failover of a hung or cut-off leader; one small Metadata request each, and only while
/// a request is overdue.
const LEADER_CHECK_EVERY: Duration = Duration::from_millis(25);
/// Wait between those tries: 100 ms doubling to 1 s, jittered.
const LOOKUP_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(100),
    max: Duration::from_secs(1),
};

/// Lookups still to do (partition and ListOffsets timestamp), each with the error of its
/// last try when there was one.
type LookupsLeft = Vec<(PartitionId, i64, Error)>;

impl Client {
    /// Looks up, in each partition of `topic`, the offset for a ListOffsets timestamp
    /// (`-2` earliest, `-1` latest = high watermark, else the first offset with a timestamp
    /// at or after it, `-1` when there is none). Each request goes to the partition's
    /// leader with the leader epoch the client knows; leadership and connection errors
    /// refresh the metadata and retry, with a backoff, for a few seconds (long enough for a
    /// leader failover). A partition whose lookup still fails gets its last error.
    pub async fn list_offsets(
        &self,
        topic: &str,
        lookups: &[(PartitionId, i64)],
    ) -> Result<Vec<(PartitionId, Result<i64>)>> {
        self.list_offsets_with(
            topic,
            lookups,
            LOOKUP_ATTEMPTS,
            IsolationLevel::ReadUncommitted,
        )
        .await
    }

    /// [`Client::list_offsets`] with at most `attempts` tries per partition (at least one),
    /// at `isolation` (read_committed: latest is the last stable offset). Fails as a whole
    /// only for a topic or partition that does not exist.
    pub(crate) async fn list_offsets_with(
        &self,
        topic: &str,
        lookups: &[(PartitionId, i64)],
        attempts: u32,
        isolation: IsolationLevel,
    ) -> Result<Vec<(PartitionId, Result<i64>)>> {
        self.list_offsets_bounded(topic, lookups, attempts, None, isolation)
            .await
    }

    /// [`Client::list_offsets_with`], each leader given at most `timeout` (instead of the
    /// request timeout) to answer: for reports, which should not wait 30 s on a hung
    /// leader to show -1 for its partitions.
    pub(crate) async fn list_offsets_bounded(
        &self,
        topic: &str,
        lookups: &[(PartitionId, i64)],
        attempts: u32,
        timeout: Option<Duration>,
        isolation: IsolationLevel,
    ) -> Result<Vec<(PartitionId, Result<i64>)>> {
        let mut todo: Vec<(PartitionId, i64)> = lookups.to_vec();
        let mut done: Vec<(PartitionId, Result<i64>)> = Vec::new();
        let mut jitter = Jitter::new();
        for attempt in 1..=attempts.max(1) {
            if attempt > 1 {
                tokio::time::sleep(LOOKUP_BACKOFF.delay(attempt - 1, &mut jitter)).await;
            }
            let retry = match self.lookup_metadata(topic, attempt > 1).await {
                Ok(metadata) => {
                    self.list_offsets_once(&metadata, &todo, timeout, isolation, &mut done)
                        .await?
                }
                Err(e) if e.is_retriable() => {
                    todo.iter().map(|&(p, t)| (p, t, e.clone())).collect()
                }
                Err(e) => return Err(e),
            };
            if retry.is_empty() || attempt >= attempts {
                done.extend(retry.into_iter().map(|(p, _, e)| (p, Err(e))));
                break;
            }
            todo = retry.into_iter().map(|(p, t, _)| (p, t)).collect();
        }
        done.sort_by_key(|(p, _)| *p);
        Ok(done)
    }

    /// The metadata for an offset lookup: cached on the first try, refreshed on later ones
    /// (falling back to the cached copy when the refresh itself fails for now).
    async fn lookup_metadata(&self, topic: &str, refresh: bool) -> Result<Arc<TopicMetadata>> {
        if !refresh {
            return self.topic_metadata(topic).await;
        }
        match self.refresh_topic(topic).await {
            Ok(metadata) => Ok(metadata),
            Err(e @ Error::UnknownTopic { .. }) => Err(e),
            Err(e) => self.cached_topic(topic).ok_or(e),
        }
    }

    /// One try of each lookup in `todo`, one request per leader. Answers go to `done`;
    /// returns the lookups to try again, with their errors.
    async fn list_offsets_once(
        &self,
        metadata: &TopicMetadata,
        todo: &[(PartitionId, i64)],
        timeout: Option<Duration>,
        isolation: IsolationLevel,
        done: &mut Vec<(PartitionId, Result<i64>)>,
    ) -> Result<LookupsLeft> {
        use sluice_protocol::messages::{
            ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
        };
        let topic = metadata.name.as_str();
        let mut by_leader: BTreeMap<BrokerId, Vec<ListOffsetsPartition>> = BTreeMap::new();
        let mut retry = Vec::new();
        for &(partition, timestamp) in todo {
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
                isolation_level: isolation,
                topics: vec![ListOffsetsTopic {
                    name: topic.to_owned(),
                    partitions,
                }],
            });
            let answer = match timeout {
                Some(timeout) => self.send_with_timeout(leader, request, timeout).await,
                None => self.send(leader, request).await,
            };
            let response = match answer {
                Ok(Response::ListOffsets(r)) => r,
                Ok(other) => return Err(unexpected("ListOffsets", &other)),
                Err(e) if e.is_retriable() => {
                    retry.extend(timestamps.iter().map(|(&p, &t)| (p, t, e.clone())));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut unanswered = timestamps;
            for p in response.topics.into_iter().flat_map(|t| t.partitions) {
                let Some(timestamp) = unanswered.remove(&p.partition) else {
                    continue;
                };
                if p.error_code == ErrorCode::None {
                    done.push((p.partition, Ok(p.offset.0)));
                    continue;
                }
                let context = format!("looking up offsets of {topic}/{}", p.partition);
                let e = Error::broker(context, p.error_code, p.error_message);
                if e.is_retriable() {
                    retry.push((p.partition, timestamp, e));
                } else {
                    done.push((p.partition, Err(e)));
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
        Ok(retry)
    }
}

/// The error for a partition without a leader.
pub(crate) fn leaderless(topic: &str, partition: PartitionId) -> Error {
    Error::LeaderNotAvailable {
        topic: topic.to_owned(),
        partition,
    }
}

#[cfg(test)]
mod tests;
