use sluice_protocol::PartitionId;

use super::*;

const ID: &str = "tx";

fn tp(topic: &str, partitions: &[i32]) -> TopicPartitions {
    TopicPartitions {
        topic: topic.to_owned(),
        partitions: partitions.iter().copied().map(PartitionId).collect(),
    }
}

fn ready(init: Init) -> TxnValue {
    match init {
        Init::Ready(value) => value,
        other => panic!("expected Ready, got {other:?}"),
    }
}

/// A transactional id initialised once: producer 42, epoch 0.
fn initialised() -> TxnValue {
    ready(init_producer_id(ID, None, None, 60_000, 1_000, || Ok(42)).unwrap())
}

#[test]
fn a_transaction_runs_from_empty_to_complete_and_the_next_one_begins() {
    let empty = initialised();
    assert_eq!((empty.producer_id, empty.producer_epoch), (42, 0));
    assert_eq!(empty.state, TxnState::Empty);

    let ongoing = add_partitions(ID, Some(&empty), 42, 0, &[tp("a", &[1])], 2_000)
        .unwrap()
        .unwrap();
    assert_eq!(ongoing.state, TxnState::Ongoing);
    assert_eq!(ongoing.started_ms, 2_000);
    let more = add_partitions(
        ID,
        Some(&ongoing),
        42,
        0,
        &[tp("a", &[0]), tp("b", &[3])],
        3_000,
    )
    .unwrap()
    .unwrap();
    assert_eq!(more.partitions, [tp("a", &[0, 1]), tp("b", &[3])]);
    assert_eq!(
        more.started_ms, 2_000,
        "the timeout counts from the first partition"
    );
    assert_eq!(
        add_partitions(ID, Some(&more), 42, 0, &[tp("a", &[1])], 4_000).unwrap(),
        None,
        "a partition already in the transaction writes nothing"
    );

    let End::Prepare(prepared) = end_txn(ID, Some(&more), 42, 0, true, 5_000).unwrap() else {
        panic!("an open transaction is prepared");
    };
    assert_eq!(prepared.state, TxnState::PrepareCommit);
    assert_eq!(
        prepared.partitions, more.partitions,
        "the partitions that get markers"
    );
    let err = add_partitions(ID, Some(&prepared), 42, 0, &[tp("c", &[0])], 5_500).unwrap_err();
    assert_eq!(err.code, ErrorCode::ConcurrentTransactions);

    let done = completed(&prepared, 6_000);
    assert_eq!(done.state, TxnState::CompleteCommit);
    assert!(done.partitions.is_empty());
    assert_eq!(
        end_txn(ID, Some(&done), 42, 0, true, 7_000).unwrap(),
        End::AlreadyDone,
        "a retried commit is answered at once"
    );
    assert_eq!(
        end_txn(ID, Some(&done), 42, 0, false, 7_000)
            .unwrap_err()
            .code,
        ErrorCode::InvalidTxnState
    );
    let next = add_partitions(ID, Some(&done), 42, 0, &[tp("a", &[2])], 8_000)
        .unwrap()
        .unwrap();
    assert_eq!((next.state, next.started_ms), (TxnState::Ongoing, 8_000));
    assert_eq!(next.partitions, [tp("a", &[2])]);
}

#[test]
fn a_new_instance_fences_the_old_one_and_aborts_its_open_transaction_first() {
    let empty = initialised();
    // A second instance of a producer with no transaction open: epoch 1 at once.
    let second =
        ready(init_producer_id(ID, Some(&empty), None, 60_000, 2_000, || unreachable!()).unwrap());
    assert_eq!((second.producer_id, second.producer_epoch), (42, 1));
    let err = add_partitions(ID, Some(&second), 42, 0, &[tp("a", &[0])], 3_000).unwrap_err();
    assert_eq!(err.code, ErrorCode::ProducerFenced);

    // A third instance while the second's transaction is open: that transaction is
    // aborted in a bumped epoch first, and the third retries.
    let ongoing = add_partitions(ID, Some(&second), 42, 1, &[tp("a", &[0])], 3_000)
        .unwrap()
        .unwrap();
    let Init::AbortFirst(abort) =
        init_producer_id(ID, Some(&ongoing), None, 60_000, 4_000, || unreachable!()).unwrap()
    else {
        panic!("the open transaction is aborted first");
    };
    assert_eq!(
        (abort.state, abort.producer_epoch),
        (TxnState::PrepareAbort, 2)
    );
    assert_eq!(abort.partitions, [tp("a", &[0])]);
    assert_eq!(
        init_producer_id(ID, Some(&abort), None, 60_000, 4_500, || unreachable!())
            .unwrap_err()
            .code,
        ErrorCode::ConcurrentTransactions
    );
    let aborted = completed(&abort, 5_000);
    let third = ready(
        init_producer_id(ID, Some(&aborted), None, 60_000, 6_000, || unreachable!()).unwrap(),
    );
    assert_eq!((third.producer_id, third.producer_epoch), (42, 3));
}

#[test]
fn requests_must_carry_the_ids_producer_and_epoch() {
    let empty = initialised();
    let wrong_id = add_partitions(ID, Some(&empty), 7, 0, &[tp("a", &[0])], 0).unwrap_err();
    assert_eq!(wrong_id.code, ErrorCode::InvalidProducerIdMapping);
    let unknown = end_txn(ID, None, 42, 0, true, 0).unwrap_err();
    assert_eq!(unknown.code, ErrorCode::InvalidProducerIdMapping);
    let future = end_txn(ID, Some(&empty), 42, 5, true, 0).unwrap_err();
    assert_eq!(future.code, ErrorCode::InvalidProducerEpoch);
    assert_eq!(
        end_txn(ID, Some(&empty), 42, 0, true, 0).unwrap_err().code,
        ErrorCode::InvalidTxnState,
        "nothing to commit"
    );
    assert_eq!(
        end_txn(ID, Some(&empty), 42, 0, false, 0).unwrap(),
        End::AlreadyDone,
        "aborting nothing is a no-op"
    );
}

#[test]
fn timeouts_and_exhausted_epochs() {
    for bad in [0, -1, TRANSACTION_TIMEOUT_MAX_MS + 1] {
        let err = init_producer_id(ID, None, None, bad, 0, || Ok(1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidTransactionTimeout);
    }
    let empty = initialised();
    let ongoing = add_partitions(ID, Some(&empty), 42, 0, &[tp("a", &[0])], 10_000)
        .unwrap()
        .unwrap();
    assert_eq!(
        timed_out(&ongoing, 70_000),
        None,
        "exactly at the timeout: not yet"
    );
    let abort = timed_out(&ongoing, 70_001).expect("past its timeout");
    assert_eq!(
        (abort.state, abort.producer_epoch),
        (TxnState::PrepareAbort, 1)
    );
    assert_eq!(timed_out(&empty, i64::MAX), None, "nothing open");

    let exhausted = TxnValue {
        producer_epoch: i16::MAX - 1,
        ..empty
    };
    let fresh = ready(init_producer_id(ID, Some(&exhausted), None, 60_000, 0, || Ok(99)).unwrap());
    assert_eq!((fresh.producer_id, fresh.producer_epoch), (99, 0));
}

#[test]
fn an_epoch_bump_must_come_from_the_current_instance() {
    let empty = initialised();
    let second =
        ready(init_producer_id(ID, Some(&empty), None, 60_000, 0, || unreachable!()).unwrap());
    // The first instance (epoch 0) asks for a bump of its own epoch: it is fenced, and
    // the second keeps its epoch.
    let zombie = init_producer_id(
        ID,
        Some(&second),
        Some((42, 0)),
        60_000,
        0,
        || unreachable!(),
    );
    assert_eq!(zombie.unwrap_err().code, ErrorCode::ProducerFenced);
    let wrong_id = init_producer_id(
        ID,
        Some(&second),
        Some((7, 1)),
        60_000,
        0,
        || unreachable!(),
    );
    assert_eq!(
        wrong_id.unwrap_err().code,
        ErrorCode::InvalidProducerIdMapping
    );
    // The current instance's own bump.
    let bumped = ready(
        init_producer_id(
            ID,
            Some(&second),
            Some((42, 1)),
            60_000,
            0,
            || unreachable!(),
        )
        .unwrap(),
    );
    assert_eq!((bumped.producer_id, bumped.producer_epoch), (42, 2));
}

#[test]
fn a_bump_retried_after_its_answer_was_lost_gets_the_same_epoch() {
    let empty = initialised();
    let claim = Some((42, 0));
    let bumped =
        ready(init_producer_id(ID, Some(&empty), claim, 60_000, 0, || unreachable!()).unwrap());
    assert_eq!(bumped.producer_epoch, 1);
    // The same claim again: a retry of that bump, answered with its epoch.
    let retried = retried_bump(Some(&bumped), claim, claim).expect("a retry");
    assert_eq!((retried.producer_id, retried.producer_epoch), (42, 1));
    // Not when the last InitProducerId was not that bump (a new instance took epoch 1 by
    // an InitProducerId without a claim)...
    assert!(retried_bump(Some(&bumped), claim, None).is_none());
    // ... nor once a transaction began, or the epoch moved on (a timeout's abort).
    let ongoing = add_partitions(ID, Some(&bumped), 42, 1, &[tp("t", &[0])], 10)
        .unwrap()
        .unwrap();
    assert!(retried_bump(Some(&ongoing), claim, claim).is_none());
    let moved = TxnValue {
        producer_epoch: 2,
        ..bumped.clone()
    };
    assert!(retried_bump(Some(&moved), claim, claim).is_none());
}

#[test]
fn an_id_unused_for_a_week_expires_unless_a_transaction_is_open() {
    let empty = initialised();
    let week = TRANSACTIONAL_ID_EXPIRATION_MS;
    assert!(!expired(&empty, empty.updated_ms + week));
    assert!(expired(&empty, empty.updated_ms + week + 1));
    let ongoing = add_partitions(ID, Some(&empty), 42, 0, &[tp("t", &[0])], 10)
        .unwrap()
        .unwrap();
    assert!(!expired(&ongoing, ongoing.updated_ms + 2 * week));
}
