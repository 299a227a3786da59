//! Transactions on a real broker, in raw frames (issue 26, as far as it is built): the
//! leader writes a coordinator's commit or abort markers (WriteTxnMarkers), fenced by the
//! coordinator's epoch; a transactional producer's records become visible to
//! read_committed readers when it commits and never when it aborts; a new instance of a
//! transactional id fences the old one and aborts what it left open, as does the
//! transaction timeout; the coordinator's state survives a restart; consumer offsets
//! committed in a transaction count only if it commits, also after a restart; a
//! transactional batch opens a transaction in a partition only if the coordinator confirms
//! the partition is in it (KIP-890), so a batch to a partition never added, or one that
//! arrives after its transaction ended, leaves the LSO where it was.

mod common;

use common::*;
use sluice_protocol::batch::ProducerStamp;
use tokio::time::Instant;

/// How long a condition the broker reaches on its own (a load, a marker) is waited for.
const PATIENCE: Duration = Duration::from_secs(20);

fn marker(committed: bool, coordinator_epoch: i32, topics: &[(&str, i32)]) -> WritableTxnMarker {
    WritableTxnMarker {
        producer_id: 9,
        producer_epoch: 0,
        committed,
        topics: topics
            .iter()
            .map(|(topic, partition)| TopicPartitions {
                topic: topic.to_string(),
                partitions: vec![PartitionId(*partition)],
            })
            .collect(),
        coordinator_epoch,
    }
}

impl Conn {
    /// The error of each (topic, partition) of one marker, in request order.
    async fn write_marker(&mut self, marker: WritableTxnMarker) -> Vec<ErrorCode> {
        let Response::WriteTxnMarkers(r) = self
            .call(Request::WriteTxnMarkers(WriteTxnMarkersRequest {
                markers: vec![marker],
            }))
            .await
        else {
            panic!("not a WriteTxnMarkers response")
        };
        r.markers[0]
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }
}

#[tokio::test]
async fn markers_are_written_by_the_leader_fenced_by_coordinator_epoch_and_never_read() {
    let broker = TestBroker::fresh().await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("t", 1, &[]).await, ErrorCode::None);
    conn.produce("t", 0, &["a", "b"]).await;

    let written = conn
        .write_marker(marker(true, 5, &[("t", 0), ("missing", 0)]))
        .await;
    assert_eq!(
        written,
        [ErrorCode::None, ErrorCode::UnknownTopicOrPartition]
    );
    let fenced = conn.write_marker(marker(false, 4, &[("t", 0)])).await;
    assert_eq!(fenced, [ErrorCode::TransactionCoordinatorFenced]);
    conn.produce("t", 0, &["c"]).await;

    let Response::Fetch(r) = conn
        .call(Request::Fetch(FetchRequest {
            isolation_level: IsolationLevel::ReadCommitted,
            ..match fetch_request("t", 0, 0, 0) {
                Request::Fetch(f) => f,
                _ => unreachable!(),
            }
        }))
        .await
    else {
        panic!("not a Fetch response")
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!(
        (p.high_watermark, p.last_stable_offset),
        (Offset(4), Offset(4))
    );
    assert!(p.aborted_transactions.is_empty());
    let kinds: Vec<(i64, bool)> = Batches::new(p.records.to_bytes().unwrap())
        .map(|b| {
            let h = *b.unwrap().header();
            (h.base_offset.0, h.is_control())
        })
        .collect();
    assert_eq!(kinds, [(0, false), (2, true), (3, false)]);
    broker.shutdown().await;
}

/// A transactional batch of `values` from producer `pid` at `epoch` and sequence `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, values: &[&str]) -> Bytes {
    let stamp = ProducerStamp {
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
    };
    let mut builder = BatchBuilder::with_capacity(stamp, 0).transactional();
    for v in values {
        builder.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    builder.build()
}

impl Conn {
    /// InitProducerId for `id`, retried while the coordinator is being set up or is
    /// aborting an older instance's transaction.
    async fn init_txn(&mut self, id: &str, timeout_ms: i32) -> Result<(i64, i16), ErrorCode> {
        self.init_txn_claiming(id, timeout_ms, (-1, -1)).await
    }

    /// [`Conn::init_txn`] by a running producer asking for a bump of its epoch (KIP-360).
    async fn init_txn_claiming(
        &mut self,
        id: &str,
        timeout_ms: i32,
        (producer_id, producer_epoch): (i64, i16),
    ) -> Result<(i64, i16), ErrorCode> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Response::InitProducerId(r) = self
                .call(Request::InitProducerId(InitProducerIdRequest {
                    transactional_id: Some(id.into()),
                    transaction_timeout_ms: timeout_ms,
                    producer_id,
                    producer_epoch,
                }))
                .await
            else {
                panic!("not an InitProducerId response")
            };
            match r.error_code {
                ErrorCode::None => return Ok((r.producer_id, r.producer_epoch)),
                ErrorCode::CoordinatorNotAvailable
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::NotCoordinator
                | ErrorCode::ConcurrentTransactions
                    if Instant::now() < deadline =>
                {
                    if r.error_code == ErrorCode::CoordinatorNotAvailable {
                        self.find_txn_coordinator(id).await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                code => return Err(code),
            }
        }
    }

    async fn find_txn_coordinator(&mut self, id: &str) -> FindCoordinatorResponse {
        let Response::FindCoordinator(r) = self
            .call(Request::FindCoordinator(FindCoordinatorRequest {
                key: id.into(),
                key_type: CoordinatorType::Transaction,
            }))
            .await
        else {
            panic!("not a FindCoordinator response")
        };
        r
    }

    async fn add_partition(&mut self, id: &str, pid: i64, epoch: i16, topic: &str) -> ErrorCode {
        let Response::AddPartitionsToTxn(r) = self
            .call(Request::AddPartitionsToTxn(AddPartitionsToTxnRequest {
                transactional_id: id.into(),
                producer_id: pid,
                producer_epoch: epoch,
                topics: vec![TopicPartitions {
                    topic: topic.into(),
                    partitions: vec![PartitionId(0)],
                }],
            }))
            .await
        else {
            panic!("not an AddPartitionsToTxn response")
        };
        r.topics[0].partitions[0].error_code
    }

    async fn end(&mut self, id: &str, pid: i64, epoch: i16, committed: bool) -> ErrorCode {
        let Response::EndTxn(r) = self
            .call(Request::EndTxn(EndTxnRequest {
                transactional_id: id.into(),
                producer_id: pid,
                producer_epoch: epoch,
                committed,
            }))
            .await
        else {
            panic!("not an EndTxn response")
        };
        r.error_code
    }

    async fn read_committed(&mut self, topic: &str) -> FetchPartitionResponse {
        let Response::Fetch(r) = self
            .call(Request::Fetch(FetchRequest {
                isolation_level: IsolationLevel::ReadCommitted,
                ..match fetch_request(topic, 0, 0, 0) {
                    Request::Fetch(f) => f,
                    _ => unreachable!(),
                }
            }))
            .await
        else {
            panic!("not a Fetch response")
        };
        r.topics[0].partitions[0].clone()
    }

    /// A read_committed fetch once the LSO has caught up with a HW of at least `hw` (the
    /// markers are written after EndTxn answers).
    async fn settled(&mut self, topic: &str, hw: i64) -> FetchPartitionResponse {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let p = self.read_committed(topic).await;
            if p.high_watermark.0 >= hw && p.last_stable_offset == p.high_watermark {
                return p;
            }
            assert!(Instant::now() < deadline, "never settled: {p:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Conn {
    /// AddOffsetsToTxn for group `group`, retried while `__consumer_offsets` is set up.
    async fn add_offsets(&mut self, id: &str, pid: i64, epoch: i16, group: &str) -> ErrorCode {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Response::AddOffsetsToTxn(r) = self
                .call(Request::AddOffsetsToTxn(AddOffsetsToTxnRequest {
                    transactional_id: id.into(),
                    producer_id: pid,
                    producer_epoch: epoch,
                    group_id: group.into(),
                }))
                .await
            else {
                panic!("not an AddOffsetsToTxn response")
            };
            match r.error_code {
                ErrorCode::CoordinatorNotAvailable | ErrorCode::ConcurrentTransactions
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                code => return code,
            }
        }
    }

    /// TxnOffsetCommit of `offset` for `group` on partition 0 of `topic`, retried while the
    /// group's partition loads.
    async fn txn_commit_offset(
        &mut self,
        group: &str,
        (pid, epoch): (i64, i16),
        topic: &str,
        offset: i64,
    ) -> ErrorCode {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Response::TxnOffsetCommit(r) = self
                .call(Request::TxnOffsetCommit(TxnOffsetCommitRequest {
                    transactional_id: "tx".into(),
                    group_id: group.into(),
                    producer_id: pid,
                    producer_epoch: epoch,
                    generation_id: -1,
                    member_id: String::new(),
                    topics: vec![OffsetCommitTopic {
                        name: topic.into(),
                        partitions: vec![OffsetCommitPartition {
                            partition: PartitionId(0),
                            committed_offset: Offset(offset),
                            committed_leader_epoch: LeaderEpoch(-1),
                            committed_metadata: None,
                        }],
                    }],
                }))
                .await
            else {
                panic!("not a TxnOffsetCommit response")
            };
            match r.topics[0].partitions[0].error_code {
                ErrorCode::CoordinatorLoadInProgress | ErrorCode::CoordinatorNotAvailable
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                code => return code,
            }
        }
    }

    /// Adds `group` to the transaction of producer `producer` (id "tx") and commits
    /// `offset` in it; each step must succeed.
    async fn offset_in_txn(&mut self, group: &str, producer: (i64, i16), topic: &str, offset: i64) {
        let (pid, epoch) = producer;
        assert_eq!(
            self.add_offsets("tx", pid, epoch, group).await,
            ErrorCode::None
        );
        assert_eq!(
            self.txn_commit_offset(group, producer, topic, offset).await,
            ErrorCode::None
        );
    }

    /// A whole transaction of producer `producer` (id "tx") that commits `offset` for
    /// `group` and ends (`committed` or aborted); each step must succeed.
    async fn transact_offset(
        &mut self,
        group: &str,
        producer: (i64, i16),
        topic: &str,
        offset: i64,
        committed: bool,
    ) {
        let (pid, epoch) = producer;
        self.offset_in_txn(group, producer, topic, offset).await;
        assert_eq!(self.end("tx", pid, epoch, committed).await, ErrorCode::None);
    }

    /// The offset `group` has committed for partition 0 of `topic` (-1: none), or the
    /// error; `stable`: refuse one a transaction has not decided yet.
    async fn committed_offset(
        &mut self,
        group: &str,
        topic: &str,
        stable: bool,
    ) -> Result<i64, ErrorCode> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Response::OffsetFetch(r) = self
                .call(Request::OffsetFetch(OffsetFetchRequest {
                    group_id: group.into(),
                    topics: Some(vec![TopicPartitions {
                        topic: topic.into(),
                        partitions: vec![PartitionId(0)],
                    }]),
                    require_stable: stable,
                }))
                .await
            else {
                panic!("not an OffsetFetch response")
            };
            match r.error_code {
                ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::NotCoordinator
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                ErrorCode::None => {}
                code => return Err(code),
            }
            let p = &r.topics[0].partitions[0];
            return match p.error_code {
                ErrorCode::None => Ok(p.committed_offset.0),
                code => Err(code),
            };
        }
    }
}

/// The values of the data records in `records` (markers left out), dropping the batches
/// of the aborted transactions as a read_committed consumer does.
fn committed_values(p: &FetchPartitionResponse) -> Vec<String> {
    let mut out = Vec::new();
    for batch in Batches::new(p.records.to_bytes().unwrap()) {
        let batch = batch.unwrap();
        let h = *batch.header();
        let aborted = p.aborted_transactions.iter().any(|a| {
            a.producer_id == h.producer_id
                && a.first_offset <= h.base_offset
                && h.is_transactional()
        });
        if h.is_control() || aborted {
            continue;
        }
        for record in batch.records().unwrap() {
            out.push(String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn a_committed_transaction_becomes_visible_and_an_aborted_one_never_does() {
    let broker = TestBroker::fresh().await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("t", 1, &[]).await, ErrorCode::None);
    let (pid, epoch) = conn.init_txn("tx", 60_000).await.unwrap();
    assert_eq!(epoch, 0);

    assert_eq!(
        conn.add_partition("tx", pid, epoch, "t").await,
        ErrorCode::None
    );
    let written = conn
        .produce_records_as(Some("tx"), "t", txn_batch(pid, epoch, 0, &["a", "b"]))
        .await;
    assert_eq!(written.error_code, ErrorCode::None);
    conn.produce("t", 0, &["plain"]).await; // offset 2, behind the open transaction
    let open = conn.read_committed("t").await;
    assert_eq!(
        (open.high_watermark, open.last_stable_offset),
        (Offset(3), Offset(0))
    );
    assert!(open.records.is_empty());

    assert_eq!(conn.end("tx", pid, epoch, true).await, ErrorCode::None);
    let committed = conn.settled("t", 4).await; // the marker at 3
    assert_eq!(committed_values(&committed), ["a", "b", "plain"]);

    // The next transaction of the same producer aborts.
    assert_eq!(
        conn.add_partition("tx", pid, epoch, "t").await,
        ErrorCode::None
    );
    let written = conn
        .produce_records_as(Some("tx"), "t", txn_batch(pid, epoch, 2, &["x"]))
        .await;
    assert_eq!(written.base_offset, Offset(4));
    assert_eq!(conn.end("tx", pid, epoch, false).await, ErrorCode::None);
    let aborted = conn.settled("t", 6).await;
    assert_eq!(
        aborted.aborted_transactions,
        [AbortedTransaction {
            producer_id: pid,
            first_offset: Offset(4)
        }]
    );
    assert_eq!(committed_values(&aborted), ["a", "b", "plain"]);
    // A retried EndTxn of a completed abort is answered at once; a commit of nothing is not.
    assert_eq!(conn.end("tx", pid, epoch, false).await, ErrorCode::None);
    assert_eq!(
        conn.end("tx", pid, epoch, true).await,
        ErrorCode::InvalidTxnState
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_batch_to_a_partition_never_added_to_the_transaction_opens_nothing() {
    let broker = TestBroker::fresh().await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("t", 1, &[]).await, ErrorCode::None);
    conn.produce("t", 0, &["plain"]).await;
    let (pid, epoch) = conn.init_txn("tx", 60_000).await.unwrap();

    // No AddPartitionsToTxn for t-0: the coordinator does not confirm it.
    let stray = conn
        .produce_records_as(Some("tx"), "t", txn_batch(pid, epoch, 0, &["stray"]))
        .await;
    assert_eq!(stray.error_code, ErrorCode::InvalidTxnState, "{stray:?}");
    let message = stray.error_message.unwrap_or_default();
    assert!(message.contains("AddPartitionsToTxn"), "{message}");
    // Without the transactional id there is nothing to verify with.
    let anonymous = conn
        .produce_records("t", txn_batch(pid, epoch, 0, &["stray"]))
        .await;
    assert_eq!(anonymous.error_code, ErrorCode::InvalidRequest);
    let p = conn.read_committed("t").await;
    assert_eq!(
        (p.high_watermark, p.last_stable_offset),
        (Offset(1), Offset(1)),
        "no transaction was opened"
    );
    assert_eq!(committed_values(&p), ["plain"]);

    // Added, the same batch is written.
    assert_eq!(
        conn.add_partition("tx", pid, epoch, "t").await,
        ErrorCode::None
    );
    let added = conn
        .produce_records_as(Some("tx"), "t", txn_batch(pid, epoch, 0, &["added"]))
        .await;
    assert_eq!(added.error_code, ErrorCode::None, "{added:?}");
    assert_eq!(conn.end("tx", pid, epoch, true).await, ErrorCode::None);
    assert_eq!(
        committed_values(&conn.settled("t", 3).await),
        ["plain", "added"]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_late_batch_of_a_committed_transaction_is_refused_and_the_lso_stays_at_the_hw() {
    let broker = TestBroker::fresh().await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("t", 1, &[]).await, ErrorCode::None);
    let (pid, epoch) = conn.init_txn("tx", 60_000).await.unwrap();
    assert_eq!(
        conn.add_partition("tx", pid, epoch, "t").await,
        ErrorCode::None
    );
    let written = conn
        .produce_records_as(Some("tx"), "t", txn_batch(pid, epoch, 0, &["a", "b"]))
        .await;
    assert_eq!(written.error_code, ErrorCode::None);
    assert_eq!(conn.end("tx", pid, epoch, true).await, ErrorCode::None);
    let committed = conn.settled("t", 3).await; // the marker at 2

    // A batch of the same epoch, next in sequence, delayed until after the commit: it
    // would open a transaction no marker ever closes.
    let late = conn
        .produce_records_as(Some("tx"), "t", txn_batch(pid, epoch, 2, &["late"]))
        .await;
    assert_eq!(late.error_code, ErrorCode::InvalidTxnState, "{late:?}");
    let after = conn.read_committed("t").await;
    assert_eq!(
        (after.high_watermark, after.last_stable_offset),
        (committed.high_watermark, committed.high_watermark)
    );
    assert_eq!(committed_values(&after), ["a", "b"]);

    // The producer's next transaction adds the partition and goes on from there.
    assert_eq!(
        conn.add_partition("tx", pid, epoch, "t").await,
        ErrorCode::None
    );
    let next = conn
        .produce_records_as(Some("tx"), "t", txn_batch(pid, epoch, 2, &["c"]))
        .await;
    assert_eq!(next.error_code, ErrorCode::None, "{next:?}");
    assert_eq!(conn.end("tx", pid, epoch, true).await, ErrorCode::None);
    assert_eq!(
        committed_values(&conn.settled("t", 5).await),
        ["a", "b", "c"]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_new_instance_fences_the_old_one_and_aborts_what_it_left_open() {
    let broker = TestBroker::fresh().await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("t", 1, &[]).await, ErrorCode::None);
    let (pid, old) = conn.init_txn("tx", 60_000).await.unwrap();
    assert_eq!(
        conn.add_partition("tx", pid, old, "t").await,
        ErrorCode::None
    );
    conn.produce_records_as(Some("tx"), "t", txn_batch(pid, old, 0, &["zombie"]))
        .await;

    let (same_pid, new) = conn.init_txn("tx", 60_000).await.unwrap();
    assert_eq!(same_pid, pid);
    assert_eq!(
        new,
        old + 2,
        "one bump for the abort, one for the new instance"
    );
    let settled = conn.settled("t", 2).await;
    assert!(committed_values(&settled).is_empty());
    assert_eq!(settled.aborted_transactions.len(), 1);

    let late = conn
        .produce_records_as(Some("tx"), "t", txn_batch(pid, old, 1, &["late"]))
        .await;
    assert_eq!(late.error_code, ErrorCode::InvalidProducerEpoch);
    assert_eq!(
        conn.end("tx", pid, old, true).await,
        ErrorCode::ProducerFenced
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_producers_own_bump_retried_after_a_lost_answer_gets_the_same_epoch() {
    let broker = TestBroker::fresh().await;
    let mut conn = broker.connect().await;
    let (pid, epoch) = conn.init_txn("tx", 60_000).await.unwrap();
    let bumped = conn.init_txn_claiming("tx", 60_000, (pid, epoch)).await;
    assert_eq!(bumped, Ok((pid, epoch + 1)));
    let retried = conn.init_txn_claiming("tx", 60_000, (pid, epoch)).await;
    assert_eq!(retried, Ok((pid, epoch + 1)), "the answer the retry lost");
    // A new instance takes the id over: the old claim is fenced now.
    let (_, newest) = conn.init_txn("tx", 60_000).await.unwrap();
    assert_eq!(newest, epoch + 2);
    let stale = conn.init_txn_claiming("tx", 60_000, (pid, epoch)).await;
    assert_eq!(stale, Err(ErrorCode::ProducerFenced));
    broker.shutdown().await;
}

#[tokio::test]
async fn an_abandoned_transaction_is_aborted_when_its_timeout_passes() {
    let broker = TestBroker::fresh().await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("t", 1, &[]).await, ErrorCode::None);
    let (pid, epoch) = conn.init_txn("tx", 1_000).await.unwrap();
    assert_eq!(
        conn.add_partition("tx", pid, epoch, "t").await,
        ErrorCode::None
    );
    conn.produce_records_as(Some("tx"), "t", txn_batch(pid, epoch, 0, &["abandoned"]))
        .await;
    let settled = conn.settled("t", 2).await;
    assert!(committed_values(&settled).is_empty());
    assert_eq!(
        conn.end("tx", pid, epoch, true).await,
        ErrorCode::ProducerFenced
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn the_coordinator_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("t", 1, &[]).await, ErrorCode::None);
    let (pid, epoch) = conn.init_txn("tx", 60_000).await.unwrap();
    assert_eq!(
        conn.add_partition("tx", pid, epoch, "t").await,
        ErrorCode::None
    );
    conn.produce_records_as(Some("tx"), "t", txn_batch(pid, epoch, 0, &["open"]))
        .await;
    drop(conn);
    broker.shutdown().await;

    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut conn = broker.connect().await;
    let (same_pid, new) = conn.init_txn("tx", 60_000).await.unwrap();
    assert_eq!((same_pid, new), (pid, epoch + 2));
    let settled = conn.settled("t", 2).await;
    assert!(committed_values(&settled).is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn offsets_committed_in_a_transaction_count_only_if_it_commits_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("in", 1, &[]).await, ErrorCode::None);
    let producer = conn.init_txn("tx", 60_000).await.unwrap();
    let (pid, epoch) = producer;

    // Committed: invisible until the commit, then the group's offset.
    conn.offset_in_txn("g", producer, "in", 5).await;
    assert_eq!(conn.committed_offset("g", "in", false).await, Ok(-1));
    assert_eq!(
        conn.committed_offset("g", "in", true).await,
        Err(ErrorCode::UnstableOffsetCommit)
    );
    assert_eq!(conn.end("tx", pid, epoch, true).await, ErrorCode::None);
    assert_eq!(conn.committed_offset("g", "in", true).await, Ok(5));

    // Aborted: never counts.
    conn.transact_offset("g", producer, "in", 9, false).await;
    assert_eq!(conn.committed_offset("g", "in", true).await, Ok(5));

    // Left open across a restart: still undecided after it (the load replays the markers
    // and stages what none decided), and dropped when a new instance aborts it.
    conn.offset_in_txn("g", producer, "in", 12).await;
    drop(conn);
    broker.shutdown().await;

    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut conn = broker.connect().await;
    assert_eq!(
        conn.committed_offset("g", "in", true).await,
        Err(ErrorCode::UnstableOffsetCommit)
    );
    assert_eq!(conn.committed_offset("g", "in", false).await, Ok(5));
    let (_, new) = conn.init_txn("tx", 60_000).await.unwrap();
    assert_eq!(new, epoch + 2);
    assert_eq!(conn.committed_offset("g", "in", true).await, Ok(5));
    // An older epoch is fenced where the offsets are written too.
    assert_eq!(
        conn.txn_commit_offset("g", producer, "in", 20).await,
        ErrorCode::InvalidProducerEpoch
    );
    broker.shutdown().await;
}

/// KIP-890 for offsets: a TxnOffsetCommit writes only in a transaction whose coordinator
/// confirms the group's partition is in it. One without AddOffsetsToTxn, or one delayed
/// past its transaction's end, would open a transaction no marker closes, and the group's
/// offsets would stay unstable for ever.
#[tokio::test]
async fn a_txn_offset_commit_outside_its_transaction_opens_nothing() {
    let broker = TestBroker::fresh().await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("in", 1, &[]).await, ErrorCode::None);
    let producer = conn.init_txn("tx", 60_000).await.unwrap();
    let (pid, epoch) = producer;

    // No AddOffsetsToTxn: refused, and nothing is left undecided. (A client finds the
    // group's coordinator first, which creates `__consumer_offsets`.)
    let Response::FindCoordinator(found) = conn
        .call(Request::FindCoordinator(FindCoordinatorRequest {
            key: "g".into(),
            key_type: CoordinatorType::Group,
        }))
        .await
    else {
        panic!("not a FindCoordinator response")
    };
    assert_eq!(found.error_code, ErrorCode::None, "{found:?}");
    assert_eq!(
        conn.txn_commit_offset("g", producer, "in", 3).await,
        ErrorCode::InvalidTxnState
    );
    assert_eq!(conn.committed_offset("g", "in", true).await, Ok(-1));

    // Added: written, and applied at the commit.
    conn.offset_in_txn("g", producer, "in", 5).await;
    // A second commit in the same transaction needs no new word from the coordinator.
    assert_eq!(
        conn.txn_commit_offset("g", producer, "in", 6).await,
        ErrorCode::None
    );
    assert_eq!(conn.end("tx", pid, epoch, true).await, ErrorCode::None);
    assert_eq!(conn.committed_offset("g", "in", true).await, Ok(6));

    // Delayed past the commit: refused; the offsets stay stable and the producer's next
    // transaction works as before.
    assert_eq!(
        conn.txn_commit_offset("g", producer, "in", 7).await,
        ErrorCode::InvalidTxnState
    );
    assert_eq!(conn.committed_offset("g", "in", true).await, Ok(6));
    conn.transact_offset("g", producer, "in", 8, true).await;
    assert_eq!(conn.committed_offset("g", "in", true).await, Ok(8));
    broker.shutdown().await;
}
