//! A fake one-broker cluster for the producer and consumer tests: a TcpListener on
//! 127.0.0.1:0 that speaks the protocol crate and keeps topics in memory. It implements just
//! enough of the broker's documented behaviour (metadata, produce with offset stamping,
//! fetch of whole batches, list offsets), plus injected errors.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_protocol::batch::{set_base_offset, Batches, RecordBatch};
use sluice_protocol::messages::*;
use sluice_protocol::{
    decode_request, BrokerId, ErrorCode, FrameCodec, LeaderEpoch, Offset, PartitionId, Request,
    Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

/// The fake cluster's state, inspectable by tests.
#[derive(Default)]
pub(crate) struct FakeState {
    /// Per topic, per partition: the stamped batches.
    pub topics: BTreeMap<String, Vec<Vec<RecordBatch>>>,
    /// Errors to answer the next Produce partitions with, in order.
    pub produce_errors: VecDeque<ErrorCode>,
    /// Errors to answer the next Fetch partitions with, in order.
    pub fetch_errors: VecDeque<ErrorCode>,
    /// Produce requests seen, with the number of partitions in each.
    pub produce_requests: Vec<usize>,
    /// Fetch requests seen.
    pub fetch_requests: usize,
    /// Leader epoch reported for every partition.
    pub leader_epoch: i32,
    /// Produce requests to answer by closing the connection instead.
    pub drop_connection_on_produce: usize,
}

impl FakeState {
    fn next_offset(&self, topic: &str, partition: usize) -> i64 {
        self.topics[topic][partition]
            .last()
            .map_or(0, |b| b.header().next_offset().0)
    }

    /// Every record value of a partition, in offset order.
    pub fn values(&self, topic: &str, partition: usize) -> Vec<(i64, Bytes)> {
        self.topics[topic][partition]
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
}

/// A running fake broker.
pub(crate) struct FakeBroker {
    pub addr: String,
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeBroker {
    /// Starts a broker with `topics` (name, partitions).
    pub async fn start(topics: &[(&str, usize)]) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut state = FakeState::default();
        for (name, n) in topics {
            state.topics.insert(name.to_string(), vec![Vec::new(); *n]);
        }
        let state = Arc::new(Mutex::new(state));
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, shared.clone(), port));
            }
        });
        FakeBroker { addr, state }
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

async fn serve(mut socket: TcpStream, state: Arc<Mutex<FakeState>>, port: u16) {
    let mut buf = BytesMut::new();
    let mut codec = FrameCodec::default();
    loop {
        let frame = loop {
            if let Some(frame) = codec.decode(&mut buf).unwrap() {
                break frame;
            }
            match socket.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let (header, request) = decode_request(frame).unwrap();
        if let Request::Produce(_) = &request {
            let mut state = state.lock().unwrap();
            if state.drop_connection_on_produce > 0 {
                state.drop_connection_on_produce -= 1;
                return;
            }
        }
        if let Request::Fetch(f) = &request {
            // A long poll, shortened: wait a little when there is nothing to return.
            if fetch_is_empty(&state, f) {
                tokio::time::sleep(Duration::from_millis(f.max_wait_ms.clamp(0, 50) as u64)).await;
            }
        }
        let response = handle(&state, request, port);
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
                .topics
                .get(&t.topic)
                .and_then(|parts| parts.get(p.partition.0 as usize))
                .is_none_or(|_| {
                    p.fetch_offset.0 >= state.next_offset(&t.topic, p.partition.0 as usize)
                })
        })
    })
}

fn handle(state: &Mutex<FakeState>, request: Request, port: u16) -> Option<Response> {
    let mut state = state.lock().unwrap();
    Some(match request {
        Request::Metadata(m) => Response::Metadata(metadata(&state, m, port)),
        Request::Produce(p) => {
            state
                .produce_requests
                .push(p.topics.iter().map(|t| t.partitions.len()).sum());
            let acks = p.acks;
            let response = produce(&mut state, p);
            if acks == ACKS_NONE {
                return None;
            }
            Response::Produce(response)
        }
        Request::Fetch(f) => {
            state.fetch_requests += 1;
            Response::Fetch(fetch(&mut state, f))
        }
        Request::ListOffsets(l) => Response::ListOffsets(list_offsets(&state, l)),
        Request::CreateTopics(c) => Response::CreateTopics(CreateTopicsResponse {
            topics: c
                .topics
                .into_iter()
                .map(|t| {
                    let code = if state.topics.contains_key(&t.name) {
                        ErrorCode::TopicAlreadyExists
                    } else {
                        let n = t.num_partitions.max(1) as usize;
                        state.topics.insert(t.name.clone(), vec![Vec::new(); n]);
                        ErrorCode::None
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
            controller_id: BrokerId(1),
            voters: vec![BrokerId(1)],
            brokers: vec![DescribeClusterBroker {
                broker_id: BrokerId(1),
                host: "127.0.0.1".into(),
                port,
                fenced: false,
            }],
        }),
        other => panic!("the fake broker does not serve {:?}", other.api_key()),
    })
}

fn metadata(state: &FakeState, m: MetadataRequest, port: u16) -> MetadataResponse {
    let names: Vec<String> = match m.topics {
        None => state.topics.keys().cloned().collect(),
        Some(names) => names,
    };
    MetadataResponse {
        cluster_id: "fake".into(),
        controller_id: BrokerId(1),
        brokers: vec![MetadataBroker {
            broker_id: BrokerId(1),
            host: "127.0.0.1".into(),
            port,
            rack: None,
        }],
        topics: names
            .into_iter()
            .map(|name| match state.topics.get(&name) {
                Some(parts) => MetadataTopic {
                    error_code: ErrorCode::None,
                    error_message: None,
                    name,
                    is_internal: false,
                    replication_factor: 1,
                    configs: vec![],
                    partitions: (0..parts.len())
                        .map(|i| MetadataPartition {
                            error_code: ErrorCode::None,
                            error_message: None,
                            partition: PartitionId(i as i32),
                            leader: BrokerId(1),
                            leader_epoch: LeaderEpoch(state.leader_epoch),
                            replicas: vec![BrokerId(1)],
                            isr: vec![BrokerId(1)],
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

fn produce(state: &mut FakeState, p: ProduceRequest) -> ProduceResponse {
    let topics = p
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|part| {
                    let i = part.partition.0 as usize;
                    let fail = |code| ProducePartitionResponse {
                        partition: part.partition,
                        error_code: code,
                        error_message: None,
                        base_offset: Offset(-1),
                        log_append_time_ms: -1,
                        log_start_offset: Offset(-1),
                    };
                    if state.topics.get(&t.name).is_none_or(|ps| i >= ps.len()) {
                        return fail(ErrorCode::UnknownTopicOrPartition);
                    }
                    if let Some(code) = state.produce_errors.pop_front() {
                        return fail(code);
                    }
                    let base = state.next_offset(&t.name, i);
                    let mut next = base;
                    for batch in Batches::new(part.records) {
                        let batch = batch.unwrap();
                        let mut bytes = BytesMut::from(&batch.bytes()[..]);
                        set_base_offset(&mut bytes, Offset(next));
                        let stamped = RecordBatch::validate(bytes.freeze()).unwrap();
                        next = stamped.header().next_offset().0;
                        state.topics.get_mut(&t.name).unwrap()[i].push(stamped);
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

fn fetch(state: &mut FakeState, f: FetchRequest) -> FetchResponse {
    let topics = f
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let i = p.partition.0 as usize;
                    let mut out = FetchPartitionResponse {
                        partition: p.partition,
                        error_code: ErrorCode::None,
                        error_message: None,
                        high_watermark: Offset(-1),
                        last_stable_offset: Offset(-1),
                        log_start_offset: Offset(0),
                        records: Bytes::new(),
                    };
                    if state.topics.get(&t.topic).is_none_or(|ps| i >= ps.len()) {
                        out.error_code = ErrorCode::UnknownTopicOrPartition;
                        return out;
                    }
                    if let Some(code) = state.fetch_errors.pop_front() {
                        out.error_code = code;
                        return out;
                    }
                    let hw = state.next_offset(&t.topic, i);
                    out.high_watermark = Offset(hw);
                    out.last_stable_offset = Offset(hw);
                    if p.fetch_offset.0 < 0 || p.fetch_offset.0 > hw {
                        out.error_code = ErrorCode::OffsetOutOfRange;
                        return out;
                    }
                    let mut records = BytesMut::new();
                    for batch in &state.topics[&t.topic][i] {
                        if batch.header().last_offset().0 >= p.fetch_offset.0 {
                            if !records.is_empty()
                                && records.len() + batch.bytes().len()
                                    > p.partition_max_bytes as usize
                            {
                                break;
                            }
                            records.extend_from_slice(batch.bytes());
                        }
                    }
                    out.records = records.freeze();
                    out
                })
                .collect();
            FetchTopicResponse {
                topic: t.topic,
                partitions,
            }
        })
        .collect();
    FetchResponse { topics }
}

fn list_offsets(state: &FakeState, l: ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = l
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let i = p.partition.0 as usize;
                    let offset = match p.timestamp {
                        EARLIEST_TIMESTAMP => 0,
                        LATEST_TIMESTAMP => state.next_offset(&t.name, i),
                        ts => state.topics[&t.name][i]
                            .iter()
                            .flat_map(|b| {
                                b.records().unwrap().map(|r| r.unwrap()).collect::<Vec<_>>()
                            })
                            .find(|r| r.timestamp >= ts)
                            .map_or(-1, |r| r.offset.0),
                    };
                    ListOffsetsPartitionResponse {
                        partition: p.partition,
                        error_code: ErrorCode::None,
                        error_message: None,
                        timestamp: -1,
                        offset: Offset(offset),
                        leader_epoch: LeaderEpoch(0),
                    }
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
