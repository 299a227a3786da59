//! Idempotent produce on a real broker, in raw frames: producer ids from InitProducerId,
//! a resent batch written once with its original offsets (also after a restart, from the
//! log and from the producer-state snapshot), sequence gaps and fenced epochs refused.

mod common;

use common::*;
use sluice_protocol::batch::ProducerStamp;

fn idempotent_batch(producer_id: i64, epoch: i16, base_sequence: i32, values: &[&str]) -> Bytes {
    let stamp = ProducerStamp {
        producer_id,
        producer_epoch: epoch,
        base_sequence,
    };
    let mut builder = BatchBuilder::with_capacity(stamp, 0);
    for v in values {
        builder.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    builder.build()
}

impl Conn {
    async fn init_producer_id(&mut self, producer_id: i64, epoch: i16) -> InitProducerIdResponse {
        let Response::InitProducerId(r) = self
            .call(Request::InitProducerId(InitProducerIdRequest {
                transactional_id: None,
                transaction_timeout_ms: -1,
                producer_id,
                producer_epoch: epoch,
            }))
            .await
        else {
            panic!("not an InitProducerId response")
        };
        assert_eq!(r.error_code, ErrorCode::None, "{r:?}");
        r
    }
}

#[tokio::test]
async fn a_resent_batch_is_written_once_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path(), &["--checkpoint-interval-ms", "100"]).await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("idem", 1, &[]).await, ErrorCode::None);
    let first = c.init_producer_id(-1, -1).await;
    let second = c.init_producer_id(-1, -1).await;
    assert_ne!(first.producer_id, second.producer_id);
    assert_eq!(first.producer_epoch, 0);
    let pid = first.producer_id;

    let a = idempotent_batch(pid, 0, 0, &["a", "b", "c"]);
    assert_eq!(
        c.produce_records("idem", a.clone()).await.base_offset,
        Offset(0)
    );
    let again = c.produce_records("idem", a.clone()).await;
    assert_eq!(
        (again.error_code, again.base_offset),
        (ErrorCode::None, Offset(0))
    );
    let b = idempotent_batch(pid, 0, 3, &["d"]);
    assert_eq!(
        c.produce_records("idem", b.clone()).await.base_offset,
        Offset(3)
    );

    let gap = c
        .produce_records("idem", idempotent_batch(pid, 0, 9, &["x"]))
        .await;
    assert_eq!(gap.error_code, ErrorCode::OutOfOrderSequenceNumber);
    assert!(gap.error_message.unwrap().contains("expected 4"));
    // Let a checkpoint write the producer-state snapshot, then restart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    broker.shutdown().await;

    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut c = broker.connect().await;
    let resent = c.produce_records("idem", b).await;
    assert_eq!(
        (resent.error_code, resent.base_offset),
        (ErrorCode::None, Offset(3))
    );
    let resent = c.produce_records("idem", a).await;
    assert_eq!(resent.base_offset, Offset(0));
    assert_eq!(
        values(c.fetch("idem", 0, 0, 0).await.records, 0),
        ["a", "b", "c", "d"]
    );
    drop(c);
    broker.shutdown().await;

    // Without the snapshot the state is rebuilt from the log alone.
    let snapshot = dir.path().join("topics/idem-0/producer-state");
    assert!(snapshot.exists(), "the checkpoint wrote no snapshot");
    std::fs::remove_file(&snapshot).unwrap();
    let broker = TestBroker::start(dir.path(), &[]).await;
    let mut c = broker.connect().await;
    let next = c
        .produce_records("idem", idempotent_batch(pid, 0, 4, &["e"]))
        .await;
    assert_eq!(next.base_offset, Offset(4));
    let gap = c
        .produce_records("idem", idempotent_batch(pid, 0, 4 + 2, &["x"]))
        .await;
    assert_eq!(gap.error_code, ErrorCode::OutOfOrderSequenceNumber);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_bumped_epoch_fences_the_old_one() {
    let broker = TestBroker::fresh().await;
    let mut c = broker.connect().await;
    assert_eq!(c.create("fence", 1, &[]).await, ErrorCode::None);
    let old = c.init_producer_id(-1, -1).await;
    c.produce_records("fence", idempotent_batch(old.producer_id, 0, 0, &["a"]))
        .await;
    let bumped = c
        .init_producer_id(old.producer_id, old.producer_epoch)
        .await;
    assert_eq!(
        (bumped.producer_id, bumped.producer_epoch),
        (old.producer_id, 1)
    );
    let new_epoch = c
        .produce_records("fence", idempotent_batch(old.producer_id, 1, 0, &["b"]))
        .await;
    assert_eq!(new_epoch.base_offset, Offset(1));
    let zombie = c
        .produce_records("fence", idempotent_batch(old.producer_id, 0, 1, &["c"]))
        .await;
    assert_eq!(zombie.error_code, ErrorCode::InvalidProducerEpoch);
    broker.shutdown().await;
}
