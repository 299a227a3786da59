//! A fake cluster for the library's tests: one or more brokers, each a TcpListener on
//! 127.0.0.1:0 that speaks the protocol crate, sharing one in-memory state (the "replicated"
//! logs and the metadata every broker agrees on). It implements just enough of the broker's
//! documented behaviour (metadata, produce with offset stamping, fetch of whole batches
//! below the high watermark, list offsets, topic admin, describe cluster), with what a
//! failover looks like to a client: partition leaders and leader epochs that move,
//! NOT_LEADER_OR_FOLLOWER from a broker that does not lead, FENCED_LEADER_EPOCH and
//! UNKNOWN_LEADER_EPOCH for stale and future epochs, brokers that die (connections closed,
//! connects refused) or hang (connections accepted, requests never answered), and a new
//! leader whose high watermark lags. Plus injected errors; a group coordinator without
//! membership (broker 1 answers FindCoordinator, OffsetCommit and OffsetFetch) for the
//! consumer's commits; and the broker's idempotent produce: producer ids
//! (InitProducerId), and per partition each producer's epoch and last five batches, so a
//! resend is answered with its original offset, a sequence gap with
//! OUT_OF_ORDER_SEQUENCE_NUMBER and an older epoch with INVALID_PRODUCER_EPOCH.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_protocol::batch::{set_base_offset, BatchHeader, Batches, ProducerStamp, RecordBatch};
use sluice_protocol::messages::*;
use sluice_protocol::{
    decode_request, ApiKey, BrokerId, ErrorCode, FrameCodec, LeaderEpoch, Offset, PartitionId,
    Request, Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::Decoder;

/// One partition: its log and its leadership.
pub(crate) struct FakePartition {
    /// The stamped batches (every replica has them all: replication is not modelled).
    pub batches: Vec<RecordBatch>,
    /// The leader, or [`BrokerId::NONE`] during an election.
    pub leader: BrokerId,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The assigned replicas.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
    /// How many offsets the leader's high watermark trails its log (a new leader that has
    /// not caught up yet); fetches above it get OFFSET_OUT_OF_RANGE, as the broker does.
    pub hw_lag: i64,
    /// Idempotent producers by id (shared by every replica: replication is not modelled).
    pub producers: HashMap<i64, FakeProducerEntry>,
}

/// What a partition knows of an idempotent producer, as the broker's producer state does.
#[derive(Default)]
pub(crate) struct FakeProducerEntry {
    pub epoch: i16,
    /// Its last five batches: first sequence, last sequence, base offset.
    pub batches: VecDeque<(i32, i32, i64)>,
}

/// The broker's sequence arithmetic: after `i32::MAX` comes 0.
fn add_seq(sequence: i32, delta: i32) -> i32 {
    ((i64::from(sequence) + i64::from(delta)) % (i64::from(i32::MAX) + 1)) as i32
}

impl FakePartition {
    /// The broker's check of an idempotent batch (producer_state.rs): `Ok(None)` to append
    /// it, `Ok(Some(base offset))` for a batch the log has, or the refusal.
    fn check_sequence(&self, h: &BatchHeader) -> Result<Option<i64>, ErrorCode> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // An unknown producer starts at sequence 0.
            return if h.base_sequence == 0 {
                Ok(None)
            } else {
                Err(ErrorCode::OutOfOrderSequenceNumber)
            };
        };
        let last_seq = add_seq(h.base_sequence, h.last_offset_delta);
        if h.producer_epoch < entry.epoch {
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                Ok(None)
            } else {
                Err(ErrorCode::OutOfOrderSequenceNumber)
            };
        }
        if let Some(&(_, _, base)) = entry
            .batches
            .iter()
            .find(|&&(first, last, _)| first == h.base_sequence && last == last_seq)
        {
            return Ok(Some(base));
        }
        match entry.batches.back() {
            Some(&(_, last, _)) if add_seq(last, 1) != h.base_sequence => {
                Err(ErrorCode::OutOfOrderSequenceNumber)
            }
            _ => Ok(None),
        }
    }

    /// Remembers an idempotent batch written at `base`.
    fn record_sequence(&mut self, h: &BatchHeader, base: i64) {
        let entry = self.producers.entry(h.producer_id).or_default();
        if entry.epoch != h.producer_epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == 5 {
            entry.batches.pop_front();
        }
        let last_seq = add_seq(h.base_sequence, h.last_offset_delta);
        entry.batches.push_back((h.base_sequence, last_seq, base));
    }
}

impl FakePartition {
    fn log_end(&self) -> i64 {
        self.batches
            .last()
            .map_or(0, |b| b.header().next_offset().0)
    }

    fn high_watermark(&self) -> i64 {
        (self.log_end() - self.hw_lag).max(0)
    }
}

/// One topic.
pub(crate) struct FakeTopic {
    pub replication_factor: i16,
    pub partitions: Vec<FakePartition>,
    /// The configs Metadata reports (none unless a test sets them).
    pub configs: BTreeMap<String, String>,
}

/// One broker of the fake cluster.
pub(crate) struct FakeNode {
    pub port: u16,
    /// Fenced by the controller: left out of Metadata, shown fenced by DescribeCluster.
    pub fenced: bool,
    /// Hung: connections are accepted and requests read, but nothing is answered.
    pub hung: bool,
}

/// A change a test makes to the fake cluster's state at some later moment.
pub(crate) type StateChange = Box<dyn FnOnce(&mut FakeState) + Send>;

/// The fake cluster's state, inspectable and changeable by tests.
pub(crate) struct FakeState {
    pub topics: BTreeMap<String, FakeTopic>,
    pub brokers: BTreeMap<BrokerId, FakeNode>,
    pub controller: BrokerId,
    /// Errors to answer the next Produce partitions with, in order.
    pub produce_errors: VecDeque<ErrorCode>,
    /// Errors to answer the next Fetch partitions with, in order.
    pub fetch_errors: VecDeque<ErrorCode>,
    /// Produce requests answered, with the number of partitions in each.
    pub produce_requests: Vec<usize>,
    /// Fetch requests answered.
    pub fetch_requests: usize,
    /// Every request a broker read, in order, answered or not.
    pub requests: Vec<(BrokerId, ApiKey)>,
    /// Per Fetch and ListOffsets partition: the broker asked and the epoch it was sent.
    pub epochs_seen: Vec<(BrokerId, ApiKey, LeaderEpoch)>,
    /// Produce requests to answer by closing the connection instead.
    pub drop_connection_on_produce: usize,
    /// The `timeout_ms` of every Produce request read.
    pub produce_timeouts_ms: Vec<i32>,
    /// Requests to carry out and then, instead of answering, close the connection (an
    /// answer lost with its broker): the first of its api is taken off for each.
    pub lose_answers: Vec<ApiKey>,
    /// Committed group offsets, by group and partition. The fake coordinator (broker 1,
    /// FindCoordinator, OffsetCommit, OffsetFetch) has no membership: it stores every
    /// commit it is not told to refuse.
    pub group_offsets: BTreeMap<(String, String, i32), i64>,
    /// Every OffsetCommit request read, in order.
    pub offset_commits: Vec<OffsetCommitRequest>,
    /// Codes to answer the next OffsetCommit requests with (for every partition), in order.
    pub commit_errors: VecDeque<ErrorCode>,
    /// Done to the state when the next answer is lost, at that moment (before the client
    /// can see the loss): what the cluster does meanwhile, such as a leader moving.
    pub on_lost_answer: Option<StateChange>,
    /// The next producer id InitProducerId hands out.
    pub next_producer_id: i64,
    /// Errors to answer the next InitProducerId requests with, in order.
    pub init_producer_id_errors: VecDeque<ErrorCode>,
    /// Every InitProducerId read: the producer id and epoch it asked to bump (-1: new).
    pub init_producer_id_requests: Vec<(i64, i16)>,
    /// The stamp of every idempotent batch a leader checked, in order, written or not.
    pub stamps_seen: Vec<(String, i32, ProducerStamp)>,
    /// Idempotent batches answered as duplicates (already in the log).
    pub duplicates: usize,
    /// Batches larger than this are refused with MESSAGE_TOO_LARGE, as a broker refuses a
    /// batch larger than a segment; the metadata does not say so (a topic altered since the
    /// producer read it).
    pub batch_bytes_max: Option<usize>,
}

impl FakeState {
    fn partition(&self, topic: &str, partition: PartitionId) -> Option<&FakePartition> {
        let i = usize::try_from(partition.0).ok()?;
        self.topics.get(topic)?.partitions.get(i)
    }

    fn partition_mut(&mut self, topic: &str, partition: PartitionId) -> Option<&mut FakePartition> {
        let i = usize::try_from(partition.0).ok()?;
        self.topics.get_mut(topic)?.partitions.get_mut(i)
    }

    /// The batches of a partition.
    pub fn batches(&self, topic: &str, partition: usize) -> &[RecordBatch] {
        &self.topics[topic].partitions[partition].batches
    }

    /// Every record value of a partition, in offset order.
    pub fn values(&self, topic: &str, partition: usize) -> Vec<(i64, Bytes)> {
        self.batches(topic, partition)
            .iter()
            .flat_map(|b| {
                b.records()
                    .unwrap()
                    .map(|r| {
                        let r = r.unwrap();
                        (r.offset.0, r.value.unwrap_or_default())
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Moves a partition's leadership to `leader` in a new leader epoch, as the controller
    /// does after an election.
    pub fn move_leader(&mut self, topic: &str, partition: i32, leader: BrokerId) {
        let p = self
            .partition_mut(topic, PartitionId(partition))
            .expect("a partition of the fake cluster");
        p.leader = leader;
        p.leader_epoch += 1;
        if leader != BrokerId::NONE && !p.isr.contains(&leader) {
            p.isr.push(leader);
        }
    }

    /// Requests of `api` that broker `broker` read.
    pub fn requests_to(&self, broker: BrokerId, api: ApiKey) -> usize {
        self.requests
            .iter()
            .filter(|&&(b, a)| b == broker && a == api)
            .count()
    }

    /// A new topic on the unfenced brokers, partition i's replicas starting at the i-th of
    /// them (Kafka's round robin); the first replica leads, in epoch 0.
    fn create_topic(&mut self, name: &str, n_partitions: usize, rf: i16) -> ErrorCode {
        if self.topics.contains_key(name) {
            return ErrorCode::TopicAlreadyExists;
        }
        let live: Vec<BrokerId> = self
            .brokers
            .iter()
            .filter(|(_, n)| !n.fenced)
            .map(|(&id, _)| id)
            .collect();
        let rf = usize::try_from(rf).unwrap_or(0);
        if rf == 0 || rf > live.len() {
            return ErrorCode::InvalidReplicationFactor;
        }
        self.topics.insert(
            name.to_owned(),
            FakeTopic {
                replication_factor: rf as i16,
                partitions: Vec::new(),
                configs: BTreeMap::new(),
            },
        );
        self.add_partitions(name, n_partitions.max(1));
        ErrorCode::None
    }

    /// Grows `topic` to `n_partitions`, placing the new ones as [`FakeState::create_topic`]
    /// would have (CreatePartitions).
    pub fn add_partitions(&mut self, topic: &str, n_partitions: usize) {
        let live: Vec<BrokerId> = self
            .brokers
            .iter()
            .filter(|(_, n)| !n.fenced)
            .map(|(&id, _)| id)
            .collect();
        let topic = self
            .topics
            .get_mut(topic)
            .expect("a topic of the fake cluster");
        let rf = topic.replication_factor as usize;
        for i in topic.partitions.len()..n_partitions {
            let replicas: Vec<BrokerId> = (0..rf).map(|j| live[(i + j) % live.len()]).collect();
            topic.partitions.push(FakePartition {
                batches: Vec::new(),
                leader: replicas[0],
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
                hw_lag: 0,
                producers: HashMap::new(),
            });
        }
    }
}

/// A running fake cluster.
pub(crate) struct FakeCluster {
    pub state: Arc<Mutex<FakeState>>,
    /// Per broker: its address and the switch that kills it.
    brokers: BTreeMap<BrokerId, (String, watch::Sender<bool>)>,
}

impl FakeCluster {
    /// Starts brokers 1..=`n_brokers` with `topics` (name, partitions, replication
    /// factor); broker 1 is the controller.
    pub async fn start(n_brokers: i32, topics: &[(&str, usize, i16)]) -> FakeCluster {
        let state = Arc::new(Mutex::new(FakeState {
            topics: BTreeMap::new(),
            brokers: BTreeMap::new(),
            controller: BrokerId(1),
            produce_errors: VecDeque::new(),
            fetch_errors: VecDeque::new(),
            produce_requests: Vec::new(),
            fetch_requests: 0,
            requests: Vec::new(),
            epochs_seen: Vec::new(),
            drop_connection_on_produce: 0,
            produce_timeouts_ms: Vec::new(),
            lose_answers: Vec::new(),
            group_offsets: BTreeMap::new(),
            offset_commits: Vec::new(),
            commit_errors: VecDeque::new(),
            on_lost_answer: None,
            next_producer_id: 1000,
            init_producer_id_errors: VecDeque::new(),
            init_producer_id_requests: Vec::new(),
            stamps_seen: Vec::new(),
            duplicates: 0,
            batch_bytes_max: None,
        }));
        let mut brokers = BTreeMap::new();
        for id in 1..=n_brokers {
            let id = BrokerId(id);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            state.lock().unwrap().brokers.insert(
                id,
                FakeNode {
                    port: addr.port(),
                    fenced: false,
                    hung: false,
                },
            );
            let (down, _) = watch::channel(false);
            tokio::spawn(accept_loop(listener, state.clone(), id, down.subscribe()));
            brokers.insert(id, (addr.to_string(), down));
        }
        {
            let mut state = state.lock().unwrap();
            for (name, n, rf) in topics {
                assert_eq!(state.create_topic(name, *n, *rf), ErrorCode::None);
            }
        }
        FakeCluster { state, brokers }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// The address of broker `id`.
    pub fn addr(&self, id: i32) -> String {
        self.brokers[&BrokerId(id)].0.clone()
    }

    /// A client config with every broker in the bootstrap list.
    pub fn config(&self) -> crate::ClientConfig {
        crate::ClientConfig {
            bootstrap: self.brokers.values().map(|(a, _)| a.clone()).collect(),
            request_timeout: Duration::from_secs(5),
            ..crate::ClientConfig::default()
        }
    }

    /// Kills broker `id` as SIGKILL would: its connections close and connects are refused.
    /// Metadata still lists it until it is fenced ([`FakeCluster::fail_over`]).
    pub fn kill(&self, id: i32) {
        self.brokers[&BrokerId(id)].1.send_replace(true);
    }

    /// Hangs broker `id` as SIGSTOP would, to a client: connects succeed, nothing answers.
    pub fn hang(&self, id: i32) {
        self.state().brokers.get_mut(&BrokerId(id)).unwrap().hung = true;
    }

    /// What the controller does when broker `id`'s session expires: fences it, and moves
    /// each partition it led to the next in-sync replica, in a new epoch.
    pub fn fail_over(&self, id: i32) {
        let dead = BrokerId(id);
        let mut state = self.state();
        state.brokers.get_mut(&dead).unwrap().fenced = true;
        for topic in state.topics.values_mut() {
            for p in &mut topic.partitions {
                p.isr.retain(|&b| b != dead);
                if p.leader == dead {
                    p.leader = p.isr.first().copied().unwrap_or(BrokerId::NONE);
                    p.leader_epoch += 1;
                }
            }
        }
        if state.controller == dead {
            state.controller = state
                .brokers
                .iter()
                .find(|(_, n)| !n.fenced)
                .map_or(BrokerId::NONE, |(&b, _)| b);
        }
    }

    /// Polls `condition` on the state until it holds; panics after a generous bound.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&FakeState) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !condition(&self.state()) {
            assert!(Instant::now() < deadline, "waited 30 s for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A one-broker fake cluster (broker 1), for the tests that do not need more.
pub(crate) struct FakeBroker {
    pub addr: String,
    pub state: Arc<Mutex<FakeState>>,
    /// Kept so the broker stays up as long as the test holds it.
    _cluster: FakeCluster,
}

impl FakeBroker {
    /// Starts a broker with `topics` (name, partitions).
    pub async fn start(topics: &[(&str, usize)]) -> FakeBroker {
        let topics: Vec<(&str, usize, i16)> = topics.iter().map(|&(t, n)| (t, n, 1)).collect();
        let cluster = FakeCluster::start(1, &topics).await;
        FakeBroker {
            addr: cluster.addr(1),
            state: cluster.state.clone(),
            _cluster: cluster,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// A client config pointing at this broker.
    pub fn config(&self) -> crate::ClientConfig {
        crate::ClientConfig {
            bootstrap: vec![self.addr.clone()],
            request_timeout: Duration::from_secs(5),
            ..crate::ClientConfig::default()
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<Mutex<FakeState>>,
    me: BrokerId,
    mut down: watch::Receiver<bool>,
) {
    let for_connections = down.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    tokio::spawn(serve(socket, state.clone(), me, for_connections.clone()));
                }
                Err(_) => return,
            },
            // Dropping the listener makes connects fail with "connection refused".
            _ = down.wait_for(|d| *d) => return,
        }
    }
}

async fn serve(
    mut socket: TcpStream,
    state: Arc<Mutex<FakeState>>,
    me: BrokerId,
    mut down: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::new();
    let mut codec = FrameCodec::default();
    loop {
        let frame = loop {
            if let Some(frame) = codec.decode(&mut buf).unwrap() {
                break frame;
            }
            tokio::select! {
                read = socket.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                // Killed: the socket closes with the task.
                _ = down.wait_for(|d| *d) => return,
            }
        };
        let (header, request) = decode_request(frame).unwrap();
        {
            let mut state = state.lock().unwrap();
            state.requests.push((me, request.api_key()));
            if let Request::Produce(p) = &request {
                state.produce_timeouts_ms.push(p.timeout_ms);
            }
            if state.brokers[&me].hung {
                continue;
            }
            if let Request::Produce(_) = &request {
                if state.drop_connection_on_produce > 0 {
                    state.drop_connection_on_produce -= 1;
                    return;
                }
            }
        }
        if let Request::Fetch(f) = &request {
            // A long poll, shortened: wait a little when there is nothing to return.
            if fetch_is_empty(&state, f) {
                tokio::time::sleep(Duration::from_millis(f.max_wait_ms.clamp(0, 50) as u64)).await;
            }
        }
        let api = request.api_key();
        let response = handle(&state, request, me);
        {
            let mut state = state.lock().unwrap();
            if let Some(i) = state.lose_answers.iter().position(|&a| a == api) {
                state.lose_answers.remove(i);
                if let Some(change) = state.on_lost_answer.take() {
                    change(&mut state);
                }
                return;
            }
        }
        let Some(response) = response else { continue };
        let mut payload = BytesMut::new();
        response
            .encode(header.correlation_id, &mut payload)
            .unwrap();
        let mut out = BytesMut::new();
        out.put_u32(payload.len() as u32);
        out.put_slice(&payload);
        if socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn fetch_is_empty(state: &Mutex<FakeState>, f: &FetchRequest) -> bool {
    let state = state.lock().unwrap();
    f.topics.iter().all(|t| {
        t.partitions.iter().all(|p| {
            state
                .partition(&t.topic, p.partition)
                .is_none_or(|part| p.fetch_offset.0 >= part.high_watermark())
        })
    })
}

fn handle(state: &Mutex<FakeState>, request: Request, me: BrokerId) -> Option<Response> {
    let mut state = state.lock().unwrap();
    Some(match request {
        Request::Metadata(m) => Response::Metadata(metadata(&state, m)),
        Request::Produce(p) => {
            state
                .produce_requests
                .push(p.topics.iter().map(|t| t.partitions.len()).sum());
            let acks = p.acks;
            let response = produce(&mut state, p, me);
            if acks == ACKS_NONE {
                return None;
            }
            Response::Produce(response)
        }
        Request::Fetch(f) => {
            state.fetch_requests += 1;
            Response::Fetch(fetch(&mut state, f, me))
        }
        Request::ListOffsets(l) => Response::ListOffsets(list_offsets(&mut state, l, me)),
        Request::CreateTopics(c) => Response::CreateTopics(CreateTopicsResponse {
            topics: c
                .topics
                .into_iter()
                .map(|t| {
                    let n = usize::try_from(t.num_partitions).unwrap_or(1);
                    let code = if me != state.controller {
                        ErrorCode::NotController
                    } else {
                        state.create_topic(&t.name, n, t.replication_factor)
                    };
                    CreatableTopicResult {
                        name: t.name,
                        error_code: code,
                        error_message: None,
                        num_partitions: t.num_partitions,
                        replication_factor: t.replication_factor,
                    }
                })
                .collect(),
        }),
        Request::DeleteTopics(d) => Response::DeleteTopics(DeleteTopicsResponse {
            responses: d
                .topic_names
                .into_iter()
                .map(|name| DeletableTopicResult {
                    error_code: match state.topics.remove(&name) {
                        Some(_) => ErrorCode::None,
                        None => ErrorCode::UnknownTopicOrPartition,
                    },
                    name,
                    error_message: None,
                })
                .collect(),
        }),
        Request::DescribeCluster(_) => Response::DescribeCluster(DescribeClusterResponse {
            cluster_id: "fake".into(),
            controller_id: state.controller,
            voters: state.brokers.keys().copied().collect(),
            brokers: state
                .brokers
                .iter()
                .map(|(&id, node)| DescribeClusterBroker {
                    broker_id: id,
                    host: "127.0.0.1".into(),
                    port: node.port,
                    fenced: node.fenced,
                })
                .collect(),
        }),
        Request::FindCoordinator(_) => Response::FindCoordinator(FindCoordinatorResponse {
            error_code: ErrorCode::None,
            error_message: None,
            node_id: BrokerId(1),
            host: "127.0.0.1".into(),
            port: state.brokers[&BrokerId(1)].port,
        }),
        Request::OffsetCommit(c) => Response::OffsetCommit(offset_commit(&mut state, c)),
        Request::OffsetFetch(f) => Response::OffsetFetch(offset_fetch(&state, f)),
        Request::InitProducerId(r) => Response::InitProducerId(init_producer_id(&mut state, r)),
        other => panic!("the fake broker does not serve {:?}", other.api_key()),
    })
}

fn metadata(state: &FakeState, m: MetadataRequest) -> MetadataResponse {
    let names: Vec<String> = match m.topics {
        None => state.topics.keys().cloned().collect(),
        Some(names) => names,
    };
    MetadataResponse {
        cluster_id: "fake".into(),
        controller_id: state.controller,
        brokers: state
            .brokers
            .iter()
            .filter(|(_, node)| !node.fenced)
            .map(|(&id, node)| MetadataBroker {
                broker_id: id,
                host: "127.0.0.1".into(),
                port: node.port,
                rack: None,
            })
            .collect(),
        topics: names
            .into_iter()
            .map(|name| match state.topics.get(&name) {
                Some(topic) => MetadataTopic {
                    error_code: ErrorCode::None,
                    error_message: None,
                    name,
                    is_internal: false,
                    replication_factor: topic.replication_factor,
                    configs: topic
                        .configs
                        .iter()
                        .map(|(name, value)| ConfigEntry {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    partitions: topic
                        .partitions
                        .iter()
                        .enumerate()
                        .map(|(i, p)| MetadataPartition {
                            error_code: if p.leader == BrokerId::NONE {
                                ErrorCode::LeaderNotAvailable
                            } else {
                                ErrorCode::None
                            },
                            error_message: None,
                            partition: PartitionId(i as i32),
                            leader: p.leader,
                            leader_epoch: LeaderEpoch(p.leader_epoch),
                            replicas: p.replicas.clone(),
                            isr: p.isr.clone(),
                            offline_replicas: vec![],
                        })
                        .collect(),
                },
                None => MetadataTopic {
                    error_code: ErrorCode::UnknownTopicOrPartition,
                    error_message: None,
                    name,
                    is_internal: false,
                    replication_factor: -1,
                    configs: vec![],
                    partitions: vec![],
                },
            })
            .collect(),
    }
}

/// Why broker `me` refuses to serve `partition` to a client that knows `epoch` (-1: none),
/// as the broker checks it: unknown partition, not the leader, stale or future epoch.
fn refusal(
    state: &FakeState,
    topic: &str,
    partition: PartitionId,
    epoch: Option<LeaderEpoch>,
    me: BrokerId,
) -> Option<ErrorCode> {
    let Some(p) = state.partition(topic, partition) else {
        return Some(ErrorCode::UnknownTopicOrPartition);
    };
    if p.leader != me {
        return Some(ErrorCode::NotLeaderOrFollower);
    }
    match epoch {
        Some(e) if e.0 >= 0 && e.0 < p.leader_epoch => Some(ErrorCode::FencedLeaderEpoch),
        Some(e) if e.0 > p.leader_epoch => Some(ErrorCode::UnknownLeaderEpoch),
        _ => None,
    }
}

/// A new id in epoch 0, or the next epoch of the id asked about (a new id past the last
/// epoch), as the broker answers.
fn init_producer_id(state: &mut FakeState, r: InitProducerIdRequest) -> InitProducerIdResponse {
    state
        .init_producer_id_requests
        .push((r.producer_id, r.producer_epoch));
    if let Some(code) = state.init_producer_id_errors.pop_front() {
        return InitProducerIdResponse {
            error_code: code,
            error_message: Some("injected".into()),
            producer_id: -1,
            producer_epoch: -1,
        };
    }
    let (producer_id, producer_epoch) =
        if r.producer_id >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX {
            (r.producer_id, r.producer_epoch + 1)
        } else {
            state.next_producer_id += 1;
            (state.next_producer_id - 1, 0)
        };
    InitProducerIdResponse {
        error_code: ErrorCode::None,
        error_message: None,
        producer_id,
        producer_epoch,
    }
}

fn produce(state: &mut FakeState, p: ProduceRequest, me: BrokerId) -> ProduceResponse {
    let topics = p
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|part| {
                    let fail = |code| ProducePartitionResponse {
                        partition: part.partition,
                        error_code: code,
                        error_message: None,
                        base_offset: Offset(-1),
                        log_append_time_ms: -1,
                        log_start_offset: Offset(-1),
                    };
                    if let Some(code) = refusal(state, &t.name, part.partition, None, me) {
                        return fail(code);
                    }
                    if let Some(code) = state.produce_errors.pop_front() {
                        return fail(code);
                    }
                    if state
                        .batch_bytes_max
                        .is_some_and(|max| part.records.len() > max)
                    {
                        return fail(ErrorCode::MessageTooLarge);
                    }
                    let batches: Vec<RecordBatch> =
                        Batches::new(part.records).map(|b| b.unwrap()).collect();
                    let idempotent = *batches[0].header();
                    if idempotent.producer_id >= 0 {
                        assert_eq!(batches.len(), 1, "one idempotent batch per partition");
                        state.stamps_seen.push((
                            t.name.clone(),
                            part.partition.0,
                            ProducerStamp {
                                producer_id: idempotent.producer_id,
                                producer_epoch: idempotent.producer_epoch,
                                base_sequence: idempotent.base_sequence,
                            },
                        ));
                    }
                    let log = state.partition_mut(&t.name, part.partition).unwrap();
                    let base = log.log_end();
                    if idempotent.producer_id >= 0 {
                        match log.check_sequence(&idempotent) {
                            Err(code) => return fail(code),
                            Ok(Some(original)) => {
                                state.duplicates += 1;
                                return ProducePartitionResponse {
                                    base_offset: Offset(original),
                                    error_code: ErrorCode::None,
                                    log_start_offset: Offset(0),
                                    ..fail(ErrorCode::None)
                                };
                            }
                            Ok(None) => log.record_sequence(&idempotent, base),
                        }
                    }
                    let mut next = base;
                    for batch in batches {
                        let mut bytes = BytesMut::from(&batch.bytes()[..]);
                        set_base_offset(&mut bytes, Offset(next));
                        let stamped = RecordBatch::validate(bytes.freeze()).unwrap();
                        next = stamped.header().next_offset().0;
                        log.batches.push(stamped);
                    }
                    ProducePartitionResponse {
                        partition: part.partition,
                        error_code: ErrorCode::None,
                        error_message: None,
                        base_offset: Offset(base),
                        log_append_time_ms: -1,
                        log_start_offset: Offset(0),
                    }
                })
                .collect();
            ProduceTopicResponse {
                name: t.name,
                partitions,
            }
        })
        .collect();
    ProduceResponse { topics }
}

fn fetch(state: &mut FakeState, f: FetchRequest, me: BrokerId) -> FetchResponse {
    let topics = f
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| fetch_partition(state, &t.topic, &p, me))
                .collect();
            FetchTopicResponse {
                topic: t.topic,
                partitions,
            }
        })
        .collect();
    FetchResponse { topics }
}

fn fetch_partition(
    state: &mut FakeState,
    topic: &str,
    p: &FetchPartition,
    me: BrokerId,
) -> FetchPartitionResponse {
    state
        .epochs_seen
        .push((me, ApiKey::Fetch, p.current_leader_epoch));
    let mut out = FetchPartitionResponse {
        partition: p.partition,
        error_code: ErrorCode::None,
        error_message: None,
        high_watermark: Offset(-1),
        last_stable_offset: Offset(-1),
        log_start_offset: Offset(-1),
        aborted_transactions: Vec::new(),
        records: Default::default(),
    };
    if let Some(code) = refusal(state, topic, p.partition, Some(p.current_leader_epoch), me) {
        out.error_code = code;
        return out;
    }
    if let Some(code) = state.fetch_errors.pop_front() {
        out.error_code = code;
        return out;
    }
    let part = state.partition(topic, p.partition).unwrap();
    let hw = part.high_watermark();
    out.high_watermark = Offset(hw);
    out.last_stable_offset = Offset(hw);
    out.log_start_offset = Offset(0);
    if p.fetch_offset.0 < 0 || p.fetch_offset.0 > hw {
        out.error_code = ErrorCode::OffsetOutOfRange;
        return out;
    }
    let mut records = BytesMut::new();
    for batch in &part.batches {
        if batch.header().next_offset().0 > hw {
            break;
        }
        if batch.header().last_offset().0 >= p.fetch_offset.0 {
            if !records.is_empty()
                && records.len() + batch.bytes().len() > p.partition_max_bytes as usize
            {
                break;
            }
            records.extend_from_slice(batch.bytes());
        }
    }
    out.records = records.freeze().into();
    out
}

fn list_offsets(state: &mut FakeState, l: ListOffsetsRequest, me: BrokerId) -> ListOffsetsResponse {
    let topics = l
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    state
                        .epochs_seen
                        .push((me, ApiKey::ListOffsets, p.current_leader_epoch));
                    let epoch = Some(p.current_leader_epoch);
                    let mut out = ListOffsetsPartitionResponse {
                        partition: p.partition,
                        error_code: ErrorCode::None,
                        error_message: None,
                        timestamp: -1,
                        offset: Offset(-1),
                        leader_epoch: LeaderEpoch(-1),
                    };
                    if let Some(code) = refusal(state, &t.name, p.partition, epoch, me) {
                        out.error_code = code;
                        return out;
                    }
                    let part = state.partition(&t.name, p.partition).unwrap();
                    out.offset = Offset(match p.timestamp {
                        EARLIEST_TIMESTAMP => 0,
                        LATEST_TIMESTAMP => part.high_watermark(),
                        ts => part
                            .batches
                            .iter()
                            .flat_map(|b| {
                                b.records().unwrap().map(|r| r.unwrap()).collect::<Vec<_>>()
                            })
                            .find(|r| r.timestamp >= ts && r.offset.0 < part.high_watermark())
                            .map_or(-1, |r| r.offset.0),
                    });
                    out.leader_epoch = LeaderEpoch(part.leader_epoch);
                    out
                })
                .collect();
            ListOffsetsTopicResponse {
                name: t.name,
                partitions,
            }
        })
        .collect();
    ListOffsetsResponse { topics }
}

fn offset_commit(state: &mut FakeState, c: OffsetCommitRequest) -> OffsetCommitResponse {
    state.offset_commits.push(c.clone());
    let refusal = state.commit_errors.pop_front();
    let topics = c
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let code = refusal.unwrap_or(ErrorCode::None);
                    if code == ErrorCode::None {
                        let key = (c.group_id.clone(), t.name.clone(), p.partition.0);
                        state.group_offsets.insert(key, p.committed_offset.0);
                    }
                    PartitionResult {
                        partition: p.partition,
                        error_code: code,
                        error_message: None,
                    }
                })
                .collect();
            TopicPartitionResults {
                name: t.name,
                partitions,
            }
        })
        .collect();
    OffsetCommitResponse { topics }
}

fn offset_fetch(state: &FakeState, f: OffsetFetchRequest) -> OffsetFetchResponse {
    let wanted: Vec<(String, PartitionId)> = match f.topics {
        Some(topics) => topics
            .into_iter()
            .flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.clone(), p)))
            .collect(),
        None => state
            .group_offsets
            .keys()
            .filter(|(g, _, _)| *g == f.group_id)
            .map(|(_, t, p)| (t.clone(), PartitionId(*p)))
            .collect(),
    };
    let mut topics: Vec<OffsetFetchTopic> = Vec::new();
    for (topic, partition) in wanted {
        let key = (f.group_id.clone(), topic.clone(), partition.0);
        let p = OffsetFetchPartition {
            partition,
            committed_offset: Offset(state.group_offsets.get(&key).copied().unwrap_or(-1)),
            committed_leader_epoch: LeaderEpoch(-1),
            metadata: None,
            error_code: ErrorCode::None,
            error_message: None,
        };
        match topics.last_mut() {
            Some(t) if t.name == topic => t.partitions.push(p),
            _ => topics.push(OffsetFetchTopic {
                name: topic,
                partitions: vec![p],
            }),
        }
    }
    OffsetFetchResponse {
        error_code: ErrorCode::None,
        error_message: None,
        topics,
    }
}
