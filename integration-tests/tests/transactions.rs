//! Transactions across broker processes (issue 26): a commit whose coordinator is killed
//! after it answered EndTxn and before it could write the marker is finished by the next
//! coordinator, the leader of the same `__transaction_state` partition on another broker;
//! a leader verifies a batch that begins a transaction with a coordinator on another
//! broker (KIP-890, VerifyTxn).
//! Deterministic: the partition's leader is paused (SIGSTOP) from before EndTxn until the
//! coordinator is dead, so no marker can have reached it. Native protocol, through the
//! client crate's raw `Client::send`.

use std::time::Duration;

use sluice_client::{BrokerId, Client, ClientConfig, PartitionId};
use sluice_integration_tests::{cli_ok, TestCluster};
use sluice_protocol::batch::{BatchBuilder, Batches, ProducerStamp};
use sluice_protocol::messages::{
    AddPartitionsToTxnRequest, CoordinatorType, EndTxnRequest, FetchPartition, FetchRequest,
    FetchTopic, FindCoordinatorRequest, InitProducerIdRequest, IsolationLevel, ProducePartition,
    ProduceRequest, ProduceTopic, TopicPartitions,
};
use sluice_protocol::{ErrorCode, LeaderEpoch, Offset, Request, Response};
use tokio::time::Instant;

/// How long the cluster may take to get somewhere on its own (a failover, a load).
const PATIENCE: Duration = Duration::from_secs(60);

async fn connect(bootstrap: &str) -> Client {
    Client::connect(ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_owned).collect(),
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    })
    .await
    .expect("a client")
}

/// Sends `request` to `broker` until `done` accepts the answer, or PATIENCE passes.
async fn until<T>(
    client: &Client,
    broker: impl Fn() -> BrokerId,
    request: impl Fn() -> Request,
    done: impl Fn(Response) -> Option<T>,
    what: &str,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = client.send(broker(), request()).await {
            if let Some(out) = done(response) {
                return out;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: gave up after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn txn_batch(pid: i64, epoch: i16, value: &str) -> bytes::Bytes {
    txn_batch_at(pid, epoch, 0, value)
}

/// A transactional batch of one record at sequence `seq`.
fn txn_batch_at(pid: i64, epoch: i16, seq: i32, value: &str) -> bytes::Bytes {
    let stamp = ProducerStamp {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
    };
    let mut builder = BatchBuilder::with_capacity(stamp, 0).transactional();
    builder.append(1_700_000_000_000, None, Some(value.as_bytes()), &[]);
    builder.build()
}

/// The node coordinating transactional id `id`, as broker `ask` says.
async fn coordinator_of(client: &Client, ask: BrokerId, id: &str) -> BrokerId {
    until(
        client,
        || ask,
        || {
            Request::FindCoordinator(FindCoordinatorRequest {
                key: id.into(),
                key_type: CoordinatorType::Transaction,
            })
        },
        |r| match r {
            Response::FindCoordinator(r) if r.error_code == ErrorCode::None => Some(r.node_id),
            _ => None,
        },
        "finding the coordinator",
    )
    .await
}

/// A new instance's InitProducerId for `id` at `coordinator`, retried until it succeeds:
/// its producer id and epoch.
async fn init_producer(client: &Client, coordinator: BrokerId, id: &str, what: &str) -> (i64, i16) {
    until(
        client,
        || coordinator,
        || {
            Request::InitProducerId(InitProducerIdRequest {
                transactional_id: Some(id.to_owned()),
                transaction_timeout_ms: 600_000,
                producer_id: -1,
                producer_epoch: -1,
            })
        },
        |r| match r {
            Response::InitProducerId(r) if r.error_code == ErrorCode::None => {
                Some((r.producer_id, r.producer_epoch))
            }
            _ => None,
        },
        what,
    )
    .await
}

#[test]
fn a_commit_is_finished_by_the_next_coordinator_when_the_first_dies_before_its_markers() {
    let dir = tempfile::tempdir().unwrap();
    // Sessions long enough that a paused broker keeps its leaderships for the test's
    // length; followers that stop fetching leave an ISR after a second.
    let mut cluster = TestCluster::start(
        3,
        dir.path(),
        &[
            "--broker-session-timeout-ms",
            "20000",
            "--replica-lag-time-max-ms",
            "1000",
        ],
    );
    let bootstrap = cluster.bootstrap();
    cli_ok(
        &bootstrap,
        &["topic", "create", "t", "-p", "1", "-r", "3"],
        "",
    );
    cluster.wait_isr("t", 3);
    let leader = BrokerId(cluster.leader("t", 0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // A transactional id coordinated by another broker than t-0's leader, with one
    // transactional record in t-0.
    let (id, coordinator, pid, epoch) = rt.block_on(async {
        let client = connect(&bootstrap).await;
        let (id, coordinator) = id_coordinated_elsewhere(&client, leader).await;
        let (pid, epoch) =
            init_producer(&client, coordinator, &id, "initialising the producer").await;
        let add = Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
            transactional_id: id.clone(),
            producer_id: pid,
            producer_epoch: epoch,
            topics: vec![TopicPartitions {
                topic: "t".into(),
                partitions: vec![PartitionId(0)],
            }],
        });
        let Ok(Response::AddPartitionsToTxn(added)) = client.send(coordinator, add).await else {
            panic!("AddPartitionsToTxn failed");
        };
        assert_eq!(added.topics[0].partitions[0].error_code, ErrorCode::None);
        let produce = Request::Produce(ProduceRequest {
            transactional_id: Some(id.clone()),
            acks: -1,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![ProducePartition {
                    partition: PartitionId(0),
                    records: txn_batch(pid, epoch, "v0"),
                }],
            }],
        });
        let Ok(Response::Produce(r)) = client.send(leader, produce).await else {
            panic!("producing to t-0 failed");
        };
        assert_eq!(r.topics[0].partitions[0].error_code, ErrorCode::None);
        (id, coordinator, pid, epoch)
    });

    // t-0's leader stops: no marker can reach t-0 until it goes on. The commit is decided
    // (its Prepare state replicated to the brokers still running; EndTxn answers after
    // waiting in vain for the marker), then its coordinator dies before it could write it.
    cluster.node(leader.0).pause();
    rt.block_on(async {
        let client = connect(&cluster.bootstrap_of(&[coordinator.0])).await;
        until(
            &client,
            || coordinator,
            || {
                Request::EndTxn(EndTxnRequest {
                    transactional_id: id.clone(),
                    producer_id: pid,
                    producer_epoch: epoch,
                    committed: true,
                })
            },
            |r| match r {
                Response::EndTxn(r) if r.error_code == ErrorCode::None => Some(()),
                _ => None,
            },
            "committing",
        )
        .await;
    });
    cluster.node(coordinator.0).kill();
    cluster.node(leader.0).resume();

    // The next coordinator (the new leader of the same __transaction_state partition)
    // loads the Prepare state and writes the marker.
    let survivors: Vec<i32> = (1..=3).filter(|&n| n != coordinator.0).collect();
    let bootstrap = cluster.bootstrap_of(&survivors);
    rt.block_on(async {
        let client = connect(&bootstrap).await;
        assert_eq!(settled(&client, 0).await, ["v0"]);
        // The marker may come from the dead coordinator's request, which waited in the
        // paused leader's socket; the transaction's completion can come only from the next
        // coordinator (the first died waiting for that marker's answer). Until it is
        // complete, InitProducerId answers CONCURRENT_TRANSACTIONS.
        let next = until(
            &client,
            || BrokerId(survivors[0]),
            || {
                Request::FindCoordinator(FindCoordinatorRequest {
                    key: id.clone(),
                    key_type: CoordinatorType::Transaction,
                })
            },
            |r| match r {
                Response::FindCoordinator(r)
                    if r.error_code == ErrorCode::None && r.node_id != coordinator =>
                {
                    Some(r.node_id)
                }
                _ => None,
            },
            "finding the next coordinator",
        )
        .await;
        let (_, next_epoch) = init_producer(
            &client,
            next,
            &id,
            "initialising again at the next coordinator",
        )
        .await;
        assert_ne!(next, coordinator);
        assert_eq!(
            next_epoch,
            epoch + 1,
            "the committed transaction was completed"
        );
    });
}

/// A transactional id that `leader` says another broker coordinates, and that broker.
async fn id_coordinated_elsewhere(client: &Client, leader: BrokerId) -> (String, BrokerId) {
    for n in 0..20 {
        let id = format!("tx-{n}");
        let coordinator = coordinator_of(client, leader, &id).await;
        if coordinator != leader {
            return (id, coordinator);
        }
    }
    panic!("no id of 20 is coordinated away from broker {leader}");
}

/// Produces `records` to t-0 at `leader` as transactional id `id`: the partition's error.
async fn produce_txn(
    client: &Client,
    leader: BrokerId,
    id: &str,
    records: bytes::Bytes,
) -> ErrorCode {
    let produce = Request::Produce(ProduceRequest {
        transactional_id: Some(id.to_owned()),
        acks: -1,
        timeout_ms: 10_000,
        topics: vec![ProduceTopic {
            name: "t".into(),
            partitions: vec![ProducePartition {
                partition: PartitionId(0),
                records,
            }],
        }],
    });
    match client.send(leader, produce).await {
        Ok(Response::Produce(r)) => r.topics[0].partitions[0].error_code,
        other => panic!("producing to t-0: {other:?}"),
    }
}

#[test]
fn a_leader_verifies_a_batch_with_the_coordinator_on_another_broker() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(3, dir.path(), &[]);
    let bootstrap = cluster.bootstrap();
    cli_ok(
        &bootstrap,
        &["topic", "create", "t", "-p", "1", "-r", "3"],
        "",
    );
    cluster.wait_isr("t", 3);
    let leader = BrokerId(cluster.leader("t", 0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = connect(&bootstrap).await;
        let (id, coordinator) = id_coordinated_elsewhere(&client, leader).await;
        let (pid, epoch) = init_producer(&client, coordinator, &id, "initialising").await;

        // t-0 is not in the transaction: the coordinator (another broker) says so.
        let stray = produce_txn(&client, leader, &id, txn_batch_at(pid, epoch, 0, "stray")).await;
        assert_eq!(stray, ErrorCode::InvalidTxnState);

        let add = Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
            transactional_id: id.clone(),
            producer_id: pid,
            producer_epoch: epoch,
            topics: vec![TopicPartitions {
                topic: "t".into(),
                partitions: vec![PartitionId(0)],
            }],
        });
        let Ok(Response::AddPartitionsToTxn(added)) = client.send(coordinator, add).await else {
            panic!("AddPartitionsToTxn failed");
        };
        assert_eq!(added.topics[0].partitions[0].error_code, ErrorCode::None);
        let written = produce_txn(&client, leader, &id, txn_batch_at(pid, epoch, 0, "v0")).await;
        assert_eq!(written, ErrorCode::None);
        until(
            &client,
            || coordinator,
            || {
                Request::EndTxn(EndTxnRequest {
                    transactional_id: id.clone(),
                    producer_id: pid,
                    producer_epoch: epoch,
                    committed: true,
                })
            },
            |r| match r {
                Response::EndTxn(r) if r.error_code == ErrorCode::None => Some(()),
                _ => None,
            },
            "committing",
        )
        .await;
        assert_eq!(settled(&client, 0).await, ["v0"]);

        // A batch of the committed transaction that arrives late opens nothing: the LSO
        // settles at the HW again.
        let late = produce_txn(&client, leader, &id, txn_batch_at(pid, epoch, 1, "late")).await;
        assert_eq!(late, ErrorCode::InvalidTxnState);
        assert_eq!(settled(&client, 0).await, ["v0"]);
    });
}

/// The data values of `t-{p}` under read_committed once its LSO has caught up with a HW
/// that covers the record and a marker, asked of the partition's current leader.
async fn settled(client: &Client, p: i32) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let leader = match client.refresh_topic("t").await {
            Ok(m) => m
                .partition(PartitionId(p))
                .map_or(BrokerId(-1), |m| m.leader),
            Err(_) => BrokerId(-1),
        };
        let fetch = Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 1 << 20,
            isolation_level: IsolationLevel::ReadCommitted,
            topics: vec![FetchTopic {
                topic: "t".into(),
                partitions: vec![FetchPartition {
                    partition: PartitionId(p),
                    current_leader_epoch: LeaderEpoch(-1),
                    fetch_offset: Offset(0),
                    partition_max_bytes: 1 << 20,
                }],
            }],
        });
        if leader.0 >= 0 {
            if let Ok(Response::Fetch(r)) = client.send(leader, fetch).await {
                let part = &r.topics[0].partitions[0];
                if part.error_code == ErrorCode::None
                    && part.high_watermark >= Offset(2)
                    && part.last_stable_offset == part.high_watermark
                {
                    assert!(part.aborted_transactions.is_empty(), "{part:?}");
                    return data_values(&part.records.to_bytes().unwrap());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "t-{p} never settled with the commit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The values of the data records in `records` (markers left out).
fn data_values(records: &bytes::Bytes) -> Vec<String> {
    let mut out = Vec::new();
    for batch in Batches::new(records.clone()) {
        let batch = batch.unwrap();
        if batch.header().is_control() {
            continue;
        }
        for record in batch.records().unwrap() {
            out.push(String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap());
        }
    }
    out
}
