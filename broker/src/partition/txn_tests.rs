//! Transactions in one partition: the last stable offset stops read_committed readers at
//! an open transaction (and at one whose marker the ISR does not have yet), aborted
//! transactions are named to them, markers are fenced by producer and coordinator epochs,
//! and all of it survives a restart and is copied by followers.

use bytes::Bytes;
use sluice_protocol::batch::{BatchBuilder, Batches, ProducerStamp};
use sluice_protocol::control::{ControlMarker, ControlType};
use sluice_protocol::messages::IsolationLevel;
use sluice_protocol::{BrokerId, ErrorCode, LeaderEpoch, Offset};

use super::testing::{assignment, open, produce, replica_fetch};
use super::{Acks, Append, FollowerIncarnation, Partition};

const PRODUCER: i64 = 7;

/// A transactional batch of `n` records of producer [`PRODUCER`] at `epoch` from `seq`.
fn txn_batch(epoch: i16, seq: i32, n: usize) -> Bytes {
    let stamp = ProducerStamp {
        producer_id: PRODUCER,
        producer_epoch: epoch,
        base_sequence: seq,
    };
    let mut builder = BatchBuilder::with_capacity(stamp, 0).transactional();
    for i in 0..n {
        builder.append(0, None, Some(format!("t{i}").as_bytes()), &[]);
    }
    builder.build()
}

/// A non-transactional (idempotent) batch of one record from the test's producer.
fn plain_batch(epoch: i16, seq: i32) -> Bytes {
    let stamp = ProducerStamp {
        producer_id: PRODUCER,
        producer_epoch: epoch,
        base_sequence: seq,
    };
    let mut builder = BatchBuilder::with_capacity(stamp, 0);
    builder.append(0, None, Some(b"p"), &[]);
    builder.build()
}

fn marker(kind: ControlType, coordinator_epoch: i32) -> ControlMarker {
    ControlMarker {
        kind,
        coordinator_epoch,
    }
}

/// Appends and moves the HW as far as the ISR allows. A batch that begins a transaction
/// is appended as if its coordinator confirmed it.
fn append(partition: &Partition, records: Bytes) {
    match partition.append_now(records, Acks::Leader).unwrap() {
        Append::Written(_) => {}
        Append::Unverified(unverified) => {
            partition
                .append_verified(unverified, Acks::Leader)
                .expect("nothing happened since the verification began");
        }
    }
    partition.maybe_advance_high_watermark();
}

fn end_txn(partition: &Partition, epoch: i16, kind: ControlType) {
    partition
        .append_marker(PRODUCER, epoch, marker(kind, 0))
        .expect("the leader writes the marker");
    partition.maybe_advance_high_watermark();
}

/// What a consumer reads from `start` at `isolation`: the offsets of data records (markers
/// left out), and the aborted transactions named.
fn read(
    partition: &Partition,
    start: i64,
    isolation: IsolationLevel,
) -> (Vec<i64>, Vec<(i64, Offset)>) {
    let read = partition
        .read(Offset(start), 1 << 20, LeaderEpoch(-1), isolation)
        .expect("the leader serves reads");
    let mut offsets = Vec::new();
    for batch in Batches::new(read.records.to_bytes().unwrap()) {
        let header = *batch.expect("a whole batch").header();
        if !header.is_control() {
            offsets.extend(header.base_offset.0..=header.last_offset().0);
        }
    }
    (offsets, read.aborted)
}

fn committed(partition: &Partition, start: i64) -> Vec<i64> {
    read(partition, start, IsolationLevel::ReadCommitted).0
}

#[test]
fn a_read_committed_reader_stops_at_an_open_transaction_until_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    produce(&leader, 1, 3); // 0..=2
    append(&leader, txn_batch(0, 0, 2)); // 3..=4, open
    produce(&leader, 1, 2); // 5..=6, plain, after the open transaction
    assert_eq!(leader.high_watermark(), Offset(7));
    assert_eq!(leader.last_stable_offset(), Offset(3));
    assert_eq!(committed(&leader, 0), [0, 1, 2]);
    assert!(committed(&leader, 3).is_empty(), "at the LSO: nothing yet");
    assert_eq!(
        read(&leader, 0, IsolationLevel::ReadUncommitted).0,
        [0, 1, 2, 3, 4, 5, 6]
    );
    // The transaction's second batch, then its commit.
    append(&leader, txn_batch(0, 2, 1)); // 7
    assert_eq!(leader.last_stable_offset(), Offset(3));
    end_txn(&leader, 0, ControlType::Commit); // marker at 8
    assert_eq!(leader.last_stable_offset(), Offset(9));
    assert_eq!(
        read(&leader, 0, IsolationLevel::ReadCommitted),
        (vec![0, 1, 2, 3, 4, 5, 6, 7], vec![])
    );
}

#[test]
fn an_aborted_transaction_is_named_to_read_committed_readers_of_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    append(&leader, txn_batch(0, 0, 2)); // 0..=1
    produce(&leader, 1, 1); // 2
    end_txn(&leader, 0, ControlType::Abort); // marker at 3
    produce(&leader, 1, 1); // 4
    assert_eq!(leader.last_stable_offset(), Offset(5));
    let (offsets, aborted) = read(&leader, 0, IsolationLevel::ReadCommitted);
    assert_eq!(offsets, [0, 1, 2, 4]);
    assert_eq!(aborted, [(PRODUCER, Offset(0))]);
    assert_eq!(read(&leader, 4, IsolationLevel::ReadCommitted).1, []);
    assert_eq!(
        read(&leader, 0, IsolationLevel::ReadUncommitted).1,
        [],
        "read_uncommitted readers are told nothing"
    );
}

/// The batch held back for its coordinator's word (KIP-890), or a panic.
fn unverified(partition: &Partition, records: Bytes) -> super::Unverified {
    match partition.append_now(records, Acks::Leader).unwrap() {
        Append::Unverified(unverified) => unverified,
        Append::Written(_) => panic!("a batch that begins a transaction was written unverified"),
    }
}

#[test]
fn a_batch_that_begins_a_transaction_is_verified_and_a_marker_meanwhile_voids_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    // Held back: nothing written, the LSO untouched while the coordinator is asked.
    let late = unverified(&leader, txn_batch(0, 0, 2));
    assert_eq!(leader.log_end_offset(), Offset(0));
    assert_eq!(leader.last_stable_offset(), leader.high_watermark());

    // The transaction the coordinator confirms ends (its marker is written) before the
    // batch is appended, and another verification of the producer begins: the first
    // answer no longer holds, the new one does.
    end_txn(&leader, 0, ControlType::Abort); // marker at 0
    let next = unverified(&leader, txn_batch(0, 0, 2));
    let refused = leader.append_verified(late, Acks::Leader).unwrap_err();
    assert_eq!(refused.code, ErrorCode::NotEnoughReplicas, "{refused:?}");
    assert!(refused.code.is_retriable());
    assert_eq!(leader.log_end_offset(), Offset(1), "only the marker");
    assert_eq!(leader.last_stable_offset(), Offset(1));
    let written = leader.append_verified(next, Acks::Leader).unwrap();
    assert_eq!(written.info.base_offset, Offset(1));
    leader.maybe_advance_high_watermark();
    assert_eq!(
        leader.last_stable_offset(),
        Offset(1),
        "its transaction is open"
    );

    // The open transaction's next batch, and a resend of its first, need no verification.
    assert!(matches!(
        leader.append_now(txn_batch(0, 2, 1), Acks::Leader).unwrap(),
        Append::Written(_)
    ));
    match leader.append_now(txn_batch(0, 0, 2), Acks::Leader).unwrap() {
        Append::Written(resend) => assert!(resend.duplicate),
        Append::Unverified(_) => panic!("a resend was held back"),
    }
    end_txn(&leader, 0, ControlType::Commit);
    assert_eq!(committed(&leader, 0), [1, 2, 3]);

    // A verification that failed leaves nothing behind: the next one gets its own guard.
    let failed = unverified(&leader, txn_batch(0, 3, 1));
    leader.cancel_verification(failed.guard);
    let retried = unverified(&leader, txn_batch(0, 3, 1));
    assert_ne!(retried.guard, failed.guard);
    leader.append_verified(retried, Acks::Leader).unwrap();
}

#[test]
fn the_lso_waits_for_the_isr_to_have_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1, 2]));
    append(&leader, txn_batch(0, 0, 2)); // 0..=1
    end_txn(&leader, 0, ControlType::Commit); // marker at 2
    let follower_fetch = |offset: i64| {
        leader
            .read_for_follower(
                BrokerId(2),
                FollowerIncarnation::Registered,
                &replica_fetch(Offset(offset)),
                1 << 20,
            )
            .unwrap();
    };
    follower_fetch(2); // the follower has the records, not the marker
    assert_eq!(leader.high_watermark(), Offset(2));
    assert_eq!(
        leader.last_stable_offset(),
        Offset(0),
        "a reader must not see records before it can see how their transaction ended"
    );
    assert!(committed(&leader, 0).is_empty());
    follower_fetch(3);
    assert_eq!(leader.last_stable_offset(), Offset(3));
    assert_eq!(committed(&leader, 0), [0, 1]);
}

#[test]
fn markers_and_writes_are_fenced_by_epochs_and_the_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    append(&leader, txn_batch(1, 0, 1)); // 0, epoch 1
    leader
        .append_marker(PRODUCER, 1, marker(ControlType::Commit, 5))
        .unwrap();
    append(&leader, txn_batch(1, 1, 1)); // 2, a new transaction
                                         // An idempotent batch of the same producer inside its open transaction.
    let refused = leader
        .append_now(plain_batch(1, 2), Acks::Leader)
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidTxnState);
    let stale_producer = leader
        .append_marker(PRODUCER, 0, marker(ControlType::Abort, 5))
        .unwrap_err();
    assert_eq!(stale_producer.code, ErrorCode::InvalidProducerEpoch);
    let stale_coordinator = leader
        .append_marker(PRODUCER, 1, marker(ControlType::Abort, 4))
        .unwrap_err();
    assert_eq!(
        stale_coordinator.code,
        ErrorCode::TransactionCoordinatorFenced
    );
    // The coordinator aborts it in a bumped epoch (a timed-out transaction): the producer's
    // sequences restart in that epoch.
    leader
        .append_marker(PRODUCER, 2, marker(ControlType::Abort, 5))
        .unwrap();
    leader.maybe_advance_high_watermark();
    append(&leader, txn_batch(2, 0, 1));
    assert_eq!(leader.last_stable_offset(), Offset(4));
}

/// A non-transactional batch claiming the producer's id in a newer epoch, while its
/// transaction is open here, is refused: written, it would fence the transaction's markers
/// (an older epoch) and leave the transaction open for ever, the LSO stuck under it.
#[test]
fn a_newer_epochs_plain_batch_cannot_fence_an_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    append(&leader, txn_batch(1, 0, 1)); // 0, open in epoch 1
    let refused = leader
        .append_now(plain_batch(2, 0), Acks::Leader)
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidTxnState);
    assert!(
        refused.message.contains("open in this partition"),
        "{}",
        refused.message
    );
    assert_eq!(leader.last_stable_offset(), Offset(0));
    leader
        .append_marker(PRODUCER, 1, marker(ControlType::Commit, 0))
        .expect("the transaction's own marker is not fenced");
    leader.maybe_advance_high_watermark();
    assert_eq!(leader.last_stable_offset(), Offset(2));
    assert_eq!(committed(&leader, 0), [0]);
}

#[test]
fn transactions_survive_a_restart_with_or_without_a_snapshot() {
    for snapshot in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let leader = open(dir.path(), &assignment(1, 1, &[1]));
        append(&leader, txn_batch(0, 0, 2)); // 0..=1
        end_txn(&leader, 0, ControlType::Abort); // 2
        append(&leader, txn_batch(0, 2, 1)); // 3, open
        if snapshot {
            leader.checkpoint(i64::MIN);
        }
        produce(&leader, 1, 1); // 4
        drop(leader); // a crash
        let leader = open(dir.path(), &assignment(1, 2, &[1]));
        assert_eq!(leader.high_watermark(), Offset(5));
        assert_eq!(
            leader.last_stable_offset(),
            Offset(3),
            "snapshot: {snapshot}"
        );
        let (offsets, aborted) = read(&leader, 0, IsolationLevel::ReadCommitted);
        assert_eq!(offsets, [0, 1]);
        assert_eq!(aborted, [(PRODUCER, Offset(0))], "snapshot: {snapshot}");
        end_txn(&leader, 0, ControlType::Commit); // 5
        assert_eq!(committed(&leader, 0), [0, 1, 3, 4]);
    }
}

#[test]
fn a_follower_copies_the_transactions_so_that_it_can_lead() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leader = open(leader_dir.path(), &assignment(1, 1, &[1]));
    append(&leader, txn_batch(0, 0, 2)); // 0..=1
    end_txn(&leader, 0, ControlType::Abort); // 2
    append(&leader, txn_batch(0, 2, 1)); // 3, open
    let copied = leader
        .read_for_follower(
            BrokerId(2),
            FollowerIncarnation::Registered,
            &replica_fetch(Offset(0)),
            1 << 20,
        )
        .unwrap()
        .0
        .records;

    let follower_dir = tempfile::tempdir().unwrap();
    let follower = open(follower_dir.path(), &assignment(2, 1, &[1, 2]));
    follower
        .append_from_leader(copied.to_bytes().unwrap(), Offset(4))
        .unwrap();
    follower.apply_assignment(&assignment(1, 2, &[1]));
    assert_eq!(follower.high_watermark(), Offset(4));
    assert_eq!(follower.last_stable_offset(), Offset(3));
    assert_eq!(
        read(&follower, 0, IsolationLevel::ReadCommitted),
        (vec![0, 1], vec![(PRODUCER, Offset(0))])
    );
}

#[test]
fn a_coordinator_writes_a_producers_transactional_batch_without_sequences_but_fenced_by_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    // TxnOffsetCommit's batches carry no sequence (-1), twice in one transaction; the first
    // begins the transaction here, so it is written under a verification's guard (KIP-890).
    let guard = leader.start_coordinator_verification(PRODUCER, 2).unwrap();
    assert!(
        guard.is_some(),
        "the first write would begin the transaction"
    );
    leader
        .append_as_coordinator(txn_batch(2, -1, 1), LeaderEpoch(1), guard)
        .expect("the coordinator writes for the producer");
    assert_eq!(
        leader.start_coordinator_verification(PRODUCER, 2).unwrap(),
        None,
        "the transaction is open here: nothing to verify"
    );
    leader
        .append_as_coordinator(txn_batch(2, -1, 1), LeaderEpoch(1), None)
        .expect("a second write of the same transaction");
    leader.maybe_advance_high_watermark();
    assert_eq!(
        leader.last_stable_offset(),
        Offset(0),
        "the transaction is open"
    );
    end_txn(&leader, 2, ControlType::Commit);
    assert_eq!(leader.last_stable_offset(), Offset(3));
    // After the marker, a write without a new verification would open a transaction no
    // marker closes: refused, retriable, nothing written.
    let unverified = leader
        .append_as_coordinator(txn_batch(2, -1, 1), LeaderEpoch(1), None)
        .unwrap_err();
    assert_eq!(unverified.code, ErrorCode::NotEnoughReplicas);
    leader.maybe_advance_high_watermark();
    assert_eq!(leader.last_stable_offset(), Offset(3));
    assert_eq!(leader.high_watermark(), Offset(3));
    // An older epoch is fenced, asked first or not.
    let fenced = leader
        .start_coordinator_verification(PRODUCER, 1)
        .unwrap_err();
    assert_eq!(fenced.code, ErrorCode::InvalidProducerEpoch);
    let fenced = leader
        .append_as_coordinator(txn_batch(1, -1, 1), LeaderEpoch(1), None)
        .unwrap_err();
    assert_eq!(fenced.code, ErrorCode::InvalidProducerEpoch);
}

#[test]
fn active_producers_show_each_producers_sequence_and_open_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    assert!(leader.active_producers().is_empty());
    produce(&leader, 1, 2); // 0..=1, no producer id
    append(&leader, txn_batch(0, 0, 3)); // 2..=4, open
    let [open] = leader.active_producers()[..] else {
        panic!("{:?}", leader.active_producers());
    };
    assert_eq!(
        (open.producer_id, open.epoch, open.last_sequence),
        (PRODUCER, 0, 2)
    );
    assert_eq!(open.txn_start_offset, Some(Offset(2)));
    assert_eq!(open.coordinator_epoch, -1);
    assert!(open.last_timestamp > 0);
    end_txn(&leader, 0, ControlType::Abort);
    let [ended] = leader.active_producers()[..] else {
        panic!("{:?}", leader.active_producers());
    };
    assert_eq!(ended.txn_start_offset, None);
    assert_eq!(ended.coordinator_epoch, 0);
    assert_eq!(ended.last_sequence, 2);
}
