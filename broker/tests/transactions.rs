//! Transactions on a real broker, in raw frames (issue 26, as far as it is built): the
//! leader writes a coordinator's commit or abort markers (WriteTxnMarkers), fenced by the
//! coordinator's epoch, read_committed fetches see the markers' batches but no record of
//! them, and transactional produce is refused until the transaction coordinator exists.

mod common;

use common::*;
use sluice_protocol::batch::ProducerStamp;

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
    let kinds: Vec<(i64, bool)> = Batches::new(p.records.clone())
        .map(|b| {
            let h = *b.unwrap().header();
            (h.base_offset.0, h.is_control())
        })
        .collect();
    assert_eq!(kinds, [(0, false), (2, true), (3, false)]);
    broker.shutdown().await;
}

#[tokio::test]
async fn transactional_produce_is_refused_until_the_coordinator_exists() {
    let broker = TestBroker::fresh().await;
    let mut conn = broker.connect().await;
    assert_eq!(conn.create("t", 1, &[]).await, ErrorCode::None);
    let stamp = ProducerStamp {
        producer_id: 3,
        producer_epoch: 0,
        base_sequence: 0,
    };
    let mut builder = BatchBuilder::with_capacity(stamp, 0).transactional();
    builder.append(1_700_000_000_000, None, Some(b"x"), &[]);
    let Response::Produce(r) = conn
        .call(Request::Produce(ProduceRequest {
            acks: ACKS_ALL,
            timeout_ms: 5000,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![ProducePartition {
                    partition: PartitionId(0),
                    records: builder.build(),
                }],
            }],
        }))
        .await
    else {
        panic!("not a Produce response")
    };
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, ErrorCode::InvalidTxnState);
    assert!(
        p.error_message.as_deref().unwrap().contains("idempotent"),
        "{:?}",
        p.error_message
    );
    assert_eq!(conn.fetch("t", 0, 0, 0).await.high_watermark, Offset(0));
    broker.shutdown().await;
}
