//! The broker black-box harness shared by the test files: a broker on 127.0.0.1:0 in this
//! process, and a raw protocol connection to it (no client library).
#![allow(dead_code, unused_imports)] // each test file uses its own subset

pub use std::time::Duration;

pub use bytes::{Buf, Bytes, BytesMut};
pub use sluice_broker::{config, Broker, ConfigLayer};
pub use sluice_protocol::batch::{BatchBuilder, Batches};
pub use sluice_protocol::messages::*;
pub use sluice_protocol::wire::Encode;
pub use sluice_protocol::{
    ApiKey, ErrorCode, LeaderEpoch, Offset, PartitionId, Request, RequestHeader, Response,
};
pub use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub use tokio::net::{TcpListener, TcpStream};
pub use tokio::sync::oneshot;
pub use tokio::task::JoinHandle;

/// A broker serving on an ephemeral port, stopped (gracefully) on drop of `stop`.
pub struct TestBroker {
    pub addr: std::net::SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
    pub _dir: Option<tempfile::TempDir>,
}

impl TestBroker {
    pub async fn start(dir: &std::path::Path, extra: &[&str]) -> TestBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut argv = vec![
            "sluice-broker".to_string(),
            "--listen".into(),
            addr.to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        use clap::Parser;
        let config = config::resolve(ConfigLayer::try_parse_from(argv).unwrap()).unwrap();
        let broker = Broker::open(config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sluice_broker::run(broker, listener, async {
            let _ = stopped.await;
        }));
        TestBroker {
            addr,
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    pub async fn fresh() -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = TestBroker::start(dir.path(), &[]).await;
        broker._dir = Some(dir);
        broker
    }

    pub async fn connect(&self) -> Conn {
        Conn {
            stream: TcpStream::connect(self.addr).await.unwrap(),
            next_id: 1,
        }
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

/// A raw protocol connection.
pub struct Conn {
    pub stream: TcpStream,
    pub next_id: u32,
}

impl Conn {
    pub async fn send(&mut self, request: &Request) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::new(request.api_key(), id, "test");
        let mut payload = BytesMut::new();
        request.encode(&header, &mut payload).unwrap();
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&payload);
        self.stream.write_all(&frame).await.unwrap();
        id
    }

    /// Reads one frame, or `None` if the broker closed the connection.
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await.ok()?;
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some(payload.into())
    }

    pub async fn recv(&mut self, api: ApiKey, id: u32) -> (ResponseHeader, Option<Response>) {
        let frame = self.read_frame().await.expect("a response");
        let (header, body) = Response::decode(api, 0, frame).unwrap();
        assert_eq!(header.correlation_id, id);
        (header, body)
    }

    pub async fn call(&mut self, request: Request) -> Response {
        let api = request.api_key();
        let id = self.send(&request).await;
        let (header, body) = self.recv(api, id).await;
        assert_eq!(header.error_code, ErrorCode::None, "{header:?}");
        body.unwrap()
    }

    pub async fn create(
        &mut self,
        name: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> ErrorCode {
        let Response::CreateTopics(r) = self
            .call(Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreatableTopic {
                    name: name.into(),
                    num_partitions: partitions,
                    replication_factor: 1,
                    configs: configs
                        .iter()
                        .map(|(k, v)| ConfigEntry {
                            name: k.to_string(),
                            value: v.to_string(),
                        })
                        .collect(),
                    assignments: Vec::new(),
                }],
                timeout_ms: 5000,
                validate_only: false,
            }))
            .await
        else {
            panic!("not a CreateTopics response")
        };
        r.topics[0].error_code
    }

    pub async fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        values: &[&str],
    ) -> ProducePartitionResponse {
        let Response::Produce(r) = self
            .call(produce_request(topic, partition, values, ACKS_ALL))
            .await
        else {
            panic!("not a Produce response")
        };
        r.topics[0].partitions[0].clone()
    }

    /// Produces `records` (whole batches, as built) to partition 0 of `topic`, acks=all.
    pub async fn produce_records(
        &mut self,
        topic: &str,
        records: Bytes,
    ) -> ProducePartitionResponse {
        self.produce_records_as(None, topic, records).await
    }

    /// [`Conn::produce_records`] by a transactional producer, when `transactional_id` is set.
    pub async fn produce_records_as(
        &mut self,
        transactional_id: Option<&str>,
        topic: &str,
        records: Bytes,
    ) -> ProducePartitionResponse {
        let Response::Produce(r) = self
            .call(Request::Produce(ProduceRequest {
                transactional_id: transactional_id.map(str::to_owned),
                acks: ACKS_ALL,
                timeout_ms: 5000,
                topics: vec![ProduceTopic {
                    name: topic.into(),
                    partitions: vec![ProducePartition {
                        partition: PartitionId(0),
                        records,
                    }],
                }],
            }))
            .await
        else {
            panic!("not a Produce response")
        };
        r.topics[0].partitions[0].clone()
    }

    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> FetchPartitionResponse {
        let Response::Fetch(r) = self
            .call(fetch_request(topic, partition, offset, max_wait_ms))
            .await
        else {
            panic!("not a Fetch response")
        };
        r.topics[0].partitions[0].clone()
    }

    pub async fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> ListOffsetsPartitionResponse {
        let Response::ListOffsets(r) = self
            .call(Request::ListOffsets(ListOffsetsRequest {
                replica_id: sluice_protocol::BrokerId(-1),
                isolation_level: IsolationLevel::ReadUncommitted,
                topics: vec![ListOffsetsTopic {
                    name: topic.into(),
                    partitions: vec![ListOffsetsPartition {
                        partition: PartitionId(partition),
                        current_leader_epoch: LeaderEpoch(-1),
                        timestamp,
                    }],
                }],
            }))
            .await
        else {
            panic!("not a ListOffsets response")
        };
        r.topics[0].partitions[0].clone()
    }
}

pub fn batch(values: &[&str], timestamp_ms: i64) -> Bytes {
    let mut builder = BatchBuilder::new();
    for v in values {
        builder.append(timestamp_ms, None, Some(v.as_bytes()), &[]);
    }
    builder.build()
}

pub fn produce_request(topic: &str, partition: i32, values: &[&str], acks: i16) -> Request {
    Request::Produce(ProduceRequest {
        transactional_id: None,
        acks,
        timeout_ms: 5000,
        topics: vec![ProduceTopic {
            name: topic.into(),
            partitions: vec![ProducePartition {
                partition: PartitionId(partition),
                records: batch(values, 1_700_000_000_000),
            }],
        }],
    })
}

pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 1 << 20,
        isolation_level: IsolationLevel::ReadUncommitted,
        topics: vec![FetchTopic {
            topic: topic.into(),
            partitions: vec![FetchPartition {
                partition: PartitionId(partition),
                current_leader_epoch: LeaderEpoch(-1),
                fetch_offset: Offset(offset),
                partition_max_bytes: 1 << 20,
            }],
        }],
    })
}

/// The values of every record in `records` at or after `from`.
pub fn values(records: sluice_protocol::Records, from: i64) -> Vec<String> {
    let mut out = Vec::new();
    for batch in Batches::new(records.to_bytes().unwrap()) {
        let batch = batch.unwrap();
        for record in batch.records().unwrap() {
            let record = record.unwrap();
            if record.offset.0 >= from {
                out.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
            }
        }
    }
    out
}
