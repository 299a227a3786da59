//! The idempotent producer against a real broker, through a TCP proxy that loses answers:
//! the proxy forwards every request, but closes the connection instead of forwarding the
//! answers of the first few Produce requests, after the broker wrote their batches. The
//! producer resends them; with idempotence the broker recognises each resend and answers
//! with the original offsets, so every record is in the log once, at the offset it was
//! acknowledged at. With idempotence off, the same losses write records twice (which shows
//! the test can fail).
//!
//! The client talks only to the proxy: the single-node broker advertises the proxy's
//! address (`--advertise`), so the metadata sends every connection through it.
//!
//! And in a three-node cluster, SIGKILLs of a partition's leader under acks=all load: the
//! producer state the leader kept moves with the replicas, so batches resent to the new
//! leader are not written twice either.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sluice_client::{
    Admin, Client, ClientConfig, NewTopic, PartitionId, Producer, ProducerConfig, ProducerRecord,
};
use sluice_integration_tests::checks::{read_everything, runtime, value_of};
use sluice_integration_tests::{free_port, wait_until, BrokerProcess, TestCluster};
use sluice_protocol::{decode_request, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const TOPIC: &str = "idem";
/// The topic of the failover test.
const FAILOVER_TOPIC: &str = "failover";
const N_PARTITIONS: i32 = 2;
const N_RECORDS: usize = 400;
/// Produce answers the proxy loses.
const ANSWERS_LOST: usize = 3;

/// A TCP proxy in front of one broker that can lose Produce answers.
struct LossyProxy {
    addr: SocketAddr,
    /// Produce answers still to lose.
    to_lose: Arc<AtomicUsize>,
    /// Stops the accept loop, and with it every proxied connection.
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    async fn start(upstream: SocketAddr) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let to_lose = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, upstream, to_lose.clone()));
        LossyProxy {
            addr,
            to_lose,
            task,
        }
    }

    fn lose_produce_answers(&self, n: usize) {
        self.to_lose.store(n, Ordering::SeqCst);
    }

    fn answers_left_to_lose(&self) -> usize {
        self.to_lose.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, to_lose: Arc<AtomicUsize>) {
    // Owned here, so aborting this task ends every connection too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { return };
                connections.spawn(proxy_connection(client, upstream, to_lose.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Forwards frames both ways until either side closes, or until an answer to a Produce
/// request is to be lost: then both connections close, as if the broker had died after
/// writing.
async fn proxy_connection(client: TcpStream, upstream: SocketAddr, to_lose: Arc<AtomicUsize>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let produce_requests: Mutex<HashSet<u32>> = Mutex::new(HashSet::new());
    let requests = async {
        while let Some(frame) = read_frame(&mut client_read).await {
            // Noted before forwarding, so the answer cannot arrive first.
            if let Ok((header, Request::Produce(_))) = decode_request(frame.slice(4..)) {
                produce_requests
                    .lock()
                    .unwrap()
                    .insert(header.correlation_id);
            }
            if write(&mut server_write, &frame).await.is_none() {
                return;
            }
        }
    };
    let answers = async {
        while let Some(frame) = read_frame(&mut server_read).await {
            let correlation_id = u32::from_be_bytes(frame[4..8].try_into().unwrap());
            let produce = produce_requests.lock().unwrap().remove(&correlation_id);
            if produce && take_one(&to_lose) {
                return;
            }
            if write(&mut client_write, &frame).await.is_none() {
                return;
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = answers => {}
    }
}

/// One length-prefixed frame, prefix included; `None` at EOF or on an error.
async fn read_frame(from: &mut OwnedReadHalf) -> Option<Bytes> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).await.ok()?;
    let mut frame = vec![0u8; 4 + u32::from_be_bytes(len) as usize];
    frame[..4].copy_from_slice(&len);
    from.read_exact(&mut frame[4..]).await.ok()?;
    Some(Bytes::from(frame))
}

async fn write(to: &mut OwnedWriteHalf, frame: &[u8]) -> Option<()> {
    to.write_all(frame).await.ok()
}

/// Takes one from `counter` if it is positive.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// What each acknowledged record was: its value, per (partition, offset).
type Acknowledged = BTreeMap<(PartitionId, i64), String>;

/// Sends [`N_RECORDS`] keyed records through a proxy that loses the first
/// [`ANSWERS_LOST`] Produce answers; returns what was acknowledged where, and the log
/// read back: (partition, offset, value) in offset order per partition.
fn produce_through_lossy_proxy(
    enable_idempotence: bool,
) -> (Acknowledged, Vec<(PartitionId, i64, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let broker_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let proxy = rt.block_on(LossyProxy::start(broker_addr));
    let advertise = proxy.addr.to_string();
    let mut broker = BrokerProcess::start_at(
        broker_addr,
        &dir.path().join("data"),
        &["--advertise", &advertise],
    );
    let result = rt.block_on(async {
        let client = Client::connect(ClientConfig {
            bootstrap: vec![proxy.addr.to_string()],
            ..ClientConfig::default()
        })
        .await
        .expect("connect through the proxy");
        let brokers = client.brokers().await.expect("the cluster's brokers").2;
        assert_eq!(
            brokers[0].address, advertise,
            "the broker advertises the proxy"
        );
        Admin::new(client.clone())
            .create_topic(NewTopic::new(TOPIC, N_PARTITIONS, 1))
            .await
            .expect("create the topic");

        proxy.lose_produce_answers(ANSWERS_LOST);
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                enable_idempotence,
                // Many small batches, so several requests are in the air when answers
                // are lost.
                batch_bytes_max: 2048,
                retry_backoff: Duration::from_millis(10),
                ..ProducerConfig::default()
            },
        );
        let mut deliveries = Vec::with_capacity(N_RECORDS);
        for i in 0..N_RECORDS {
            let value = format!("record-{i:04}");
            let record = ProducerRecord::new(TOPIC, value.clone()).key(format!("key-{}", i % 10));
            deliveries.push((value, producer.send(record).await.expect("enqueue")));
        }
        producer.flush().await;
        let mut acknowledged = Acknowledged::new();
        for (value, delivery) in deliveries {
            let metadata = delivery.await.expect("acknowledged");
            let previous = acknowledged.insert((metadata.partition, metadata.offset), value);
            assert_eq!(previous, None, "two records acknowledged at one offset");
        }
        producer.close().await;
        assert_eq!(
            proxy.answers_left_to_lose(),
            0,
            "the proxy lost {ANSWERS_LOST} answers"
        );
        (acknowledged, read_back(&client).await)
    });
    drop(proxy);
    assert!(broker.terminate().success());
    result
}

/// Every record of [`TOPIC`], up to each partition's high watermark.
async fn read_back(client: &Client) -> Vec<(PartitionId, i64, String)> {
    read_back_topic(client, TOPIC).await
}

/// Every record of `topic` (of [`N_PARTITIONS`] partitions), up to each partition's high
/// watermark, sorted by partition and offset.
async fn read_back_topic(client: &Client, topic: &str) -> Vec<(PartitionId, i64, String)> {
    let lookups: Vec<(PartitionId, i64)> =
        (0..N_PARTITIONS).map(|p| (PartitionId(p), -1)).collect();
    let ends: BTreeMap<PartitionId, i64> = client
        .list_offsets(topic, &lookups)
        .await
        .expect("list offsets")
        .into_iter()
        .map(|(p, end)| (p, end.expect("a high watermark")))
        .collect();
    let total: i64 = ends.values().sum();
    let mut records: Vec<(PartitionId, i64, String)> =
        read_everything(client, topic, N_PARTITIONS, total as usize)
            .await
            .iter()
            .map(|r| (r.partition, r.offset, value_of(r)))
            .collect();
    records.sort();
    records
}

#[test]
fn lost_answers_are_resent_and_every_record_is_written_once_at_its_acknowledged_offset() {
    let (acknowledged, log) = produce_through_lossy_proxy(true);
    assert_eq!(acknowledged.len(), N_RECORDS);
    assert_eq!(log.len(), N_RECORDS, "the log holds each record once");
    let mut last_per_partition: BTreeMap<PartitionId, String> = BTreeMap::new();
    for (partition, offset, value) in &log {
        assert_eq!(
            acknowledged.get(&(*partition, *offset)),
            Some(value),
            "the record at {partition}/{offset} is the one acknowledged there"
        );
        // Keys map to partitions, and values grow in send order.
        if let Some(previous) = last_per_partition.insert(*partition, value.clone()) {
            assert!(previous < *value, "order kept within partition {partition}");
        }
    }
}

#[test]
fn without_idempotence_lost_answers_write_records_twice() {
    let (acknowledged, log) = produce_through_lossy_proxy(false);
    assert_eq!(acknowledged.len(), N_RECORDS);
    // Each lost answer was for a batch the broker wrote; its resend wrote it again.
    assert!(
        log.len() >= N_RECORDS + ANSWERS_LOST,
        "{} records in the log for {N_RECORDS} sent",
        log.len()
    );
    let distinct: HashSet<&String> = log.iter().map(|(_, _, v)| v).collect();
    assert_eq!(
        distinct.len(),
        N_RECORDS,
        "every record is there, some twice"
    );
}

/// Produces unique values in acknowledged rounds until `stop`, recording each
/// acknowledgement in `acknowledged` and counting them in `count`.
async fn produce_until(
    producer: Producer,
    topic: &str,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Acknowledged>>,
    count: Arc<AtomicUsize>,
) {
    let mut round = 0;
    while !stop.load(Ordering::Acquire) {
        let mut pending = Vec::new();
        for i in 0..50 {
            let value = format!("round-{round:05}-record-{i:02}");
            let record = ProducerRecord::new(topic, value.clone());
            pending.push((value, producer.send(record).await.expect("enqueue")));
        }
        producer.flush().await;
        for (value, delivery) in pending {
            let metadata = delivery
                .await
                .expect("acknowledged within the delivery timeout");
            acknowledged
                .lock()
                .unwrap()
                .insert((metadata.partition, metadata.offset), value);
            count.fetch_add(1, Ordering::AcqRel);
        }
        round += 1;
    }
    producer.close().await;
}

/// Without idempotence this fails now and then (a resend after a SIGKILL writes a record
/// twice, depending on when the kill lands), so it is no proof by itself; the lossy-proxy
/// tests above are the deterministic ones.
#[test]
fn leader_sigkills_under_idempotent_load_write_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = TestCluster::start(3, dir.path(), &[]);
    let rt = runtime();
    let client = rt.block_on(async {
        Client::connect(ClientConfig {
            bootstrap: cluster.bootstrap().split(',').map(str::to_owned).collect(),
            ..ClientConfig::default()
        })
        .await
        .expect("connect to the cluster")
    });
    let topic = NewTopic::new(FAILOVER_TOPIC, N_PARTITIONS, 3).config("min.insync.replicas", "2");
    rt.block_on(Admin::new(client.clone()).create_topic(topic))
        .expect("create the topic");
    cluster.wait_isr(FAILOVER_TOPIC, 3);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Acknowledged::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let producer = {
        let _runtime = rt.enter();
        Producer::new(client.clone(), ProducerConfig::default())
    };
    let producing = rt.spawn(produce_until(
        producer,
        FAILOVER_TOPIC,
        stop.clone(),
        acknowledged.clone(),
        count.clone(),
    ));
    // Kill partition 0's leader while records flow, bring it back, twice.
    for _ in 0..2 {
        let before = count.load(Ordering::Acquire);
        wait_until(
            "acknowledgements before the kill",
            Duration::from_secs(60),
            || count.load(Ordering::Acquire) >= before + 300,
        );
        let leader = cluster.leader(FAILOVER_TOPIC, 0);
        assert!(leader >= 1, "partition 0 has a leader");
        cluster.node(leader as i32).kill();
        let at_kill = count.load(Ordering::Acquire);
        wait_until(
            "acknowledgements after the kill",
            Duration::from_secs(60),
            || count.load(Ordering::Acquire) >= at_kill + 300,
        );
        cluster.node(leader as i32).restart();
        cluster.wait_isr(FAILOVER_TOPIC, 3);
    }
    stop.store(true, Ordering::Release);
    rt.block_on(producing).unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let log = rt.block_on(read_back_topic(&client, FAILOVER_TOPIC));
    let mut seen = HashSet::new();
    for (partition, offset, value) in &log {
        assert!(seen.insert(value.clone()), "{value} is in the log twice");
        if let Some(expected) = acknowledged.get(&(*partition, *offset)) {
            assert_eq!(expected, value, "at {partition}/{offset}");
        }
    }
    assert_eq!(
        log.len(),
        acknowledged.len(),
        "every acknowledged record is in the log, and nothing else"
    );
    drop(client);
    drop(rt);
    for broker in &mut cluster.brokers {
        if broker.is_running() {
            assert!(broker.terminate().success(), "graceful stop");
        }
    }
}
