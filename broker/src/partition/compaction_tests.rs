//! Compacted topics at the replica: produce refuses records without a key, the cleaner
//! runs below the HW only, and a follower copies a compacted leader's log, gaps and all.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::batch::{BatchBuilder, Batches, RecordBatch};
use sluice_protocol::{BrokerId, ErrorCode, Offset, PartitionId};
use sluice_storage::{
    CleanupPolicy, Durability, LogConfig, PartitionLog, SharedLog, SystemClock, Throttle,
};

use super::testing::{assignment, batch, replica_fetch, SELF};
use super::{Acks, FollowerIncarnation, Partition};

fn compacted_config() -> LogConfig {
    LogConfig {
        durability: Durability::Replicated {
            flush_interval_ms: 60_000,
        },
        segment_bytes_max: 4096,
        cleanup_policy: CleanupPolicy::Compact,
        ..LogConfig::default()
    }
}

fn open(dir: &std::path::Path, leader: i32, isr: &[i32]) -> Arc<Partition> {
    let log = PartitionLog::open(dir, compacted_config(), Arc::new(SystemClock)).unwrap();
    Arc::new(Partition::new(
        Arc::from("t"),
        PartitionId(0),
        SELF,
        SharedLog::new(log),
        &assignment(leader, 1, isr),
        1,
    ))
}

fn keyed(key: u8, value: &str) -> Bytes {
    let mut b = BatchBuilder::new();
    b.append(1_700_000_000_000, Some(&[key]), Some(value.as_bytes()), &[]);
    b.build()
}

/// Every batch in the replica's log, read from its start through the gaps as a consumer
/// would.
fn log_batches(partition: &Partition) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut offset = Offset(0);
    loop {
        let records = partition
            .read_log(offset, 1 << 20, Offset(i64::MAX))
            .unwrap();
        if records.is_empty() {
            return out;
        }
        for batch in Batches::new(records) {
            let batch = batch.unwrap();
            offset = batch.header().next_offset();
            out.push(batch);
        }
    }
}

/// Key -> (offset, value) of the latest record of each key in the replica's log (markers'
/// control records included, under their key's first byte).
fn latest(partition: &Partition) -> BTreeMap<u8, (i64, Bytes)> {
    let mut out = BTreeMap::new();
    for batch in log_batches(partition) {
        for record in batch.records().unwrap() {
            let record = record.unwrap();
            let key = record.key.unwrap()[0];
            out.insert(key, (record.offset.0, record.value.unwrap()));
        }
    }
    out
}

/// A transactional batch of one record of producer `producer_id` (epoch 0).
fn txn_record(producer_id: i64, seq: i32, key: u8, value: &str) -> Bytes {
    let stamp = sluice_protocol::batch::ProducerStamp {
        producer_id,
        producer_epoch: 0,
        base_sequence: seq,
    };
    let mut b = BatchBuilder::with_capacity(stamp, 0).transactional();
    b.append(1_700_000_000_000, Some(&[key]), Some(value.as_bytes()), &[]);
    b.build()
}

/// Thirty rounds of a 40-byte value for each of `keys`: several 4 KiB segments.
fn fill(leader: &Partition, keys: std::ops::Range<u8>) {
    for round in 0..30 {
        for key in keys.clone() {
            let value = format!("r{round}-{}", "x".repeat(40));
            leader.append_now(keyed(key, &value), Acks::Leader).unwrap();
        }
    }
}

fn clean(partition: &Partition) -> bool {
    partition
        .clean_log(true, 1 << 20, &mut Throttle::unlimited())
        .unwrap()
        .is_some_and(|r| r.swapped)
}

#[test]
fn a_compacted_topic_refuses_records_without_a_key_until_its_policy_changes() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), 1, &[1]);
    let err = leader.append_now(batch(2), Acks::Leader).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRecord);
    assert!(err.message.contains("needs a key"), "{}", err.message);
    leader.append_now(keyed(1, "v"), Acks::Leader).unwrap();
    leader.reconfigure(
        LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            ..compacted_config()
        },
        1,
    );
    leader.append_now(batch(2), Acks::Leader).unwrap();
}

#[test]
fn a_producer_may_not_write_a_control_batch() {
    // The control bit would also let a keyless record past the key check, and the cleaner
    // keeps control batches whole.
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), 1, &[1]);
    let mut control = batch(1).to_vec();
    control[22] |= 0x20; // attributes (bytes 21-22, big-endian): the control bit
    let crc = sluice_protocol::batch::compute_crc(&control);
    control[17..21].copy_from_slice(&crc.to_be_bytes());
    let err = leader
        .append_now(Bytes::from(control), Acks::Leader)
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRecord);
    assert!(err.message.contains("control"), "{}", err.message);
    assert_eq!(leader.log_end_offset(), Offset(0), "nothing was written");
}

#[test]
fn the_leader_compacts_below_its_hw_and_a_follower_copies_the_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"), 1, &[1]);
    for round in 0..60 {
        for key in 0..4u8 {
            let value = format!("r{round}-{}", "x".repeat(40));
            leader.append_now(keyed(key, &value), Acks::Leader).unwrap();
        }
    }
    leader.maybe_advance_high_watermark();
    let end = leader.log_end_offset();
    assert_eq!(leader.high_watermark(), end);
    let expected = latest(&leader);
    assert!(clean(&leader), "sealed segments below the HW are cleaned");
    let (size, first_dirty) = leader.cleaner_state();
    assert!(first_dirty > Offset(0));
    assert!(size < 4096 * 3, "{size} bytes left");
    assert_eq!(latest(&leader), expected);

    // A new follower fetches from 0, which the cleaner removed, and copies what is left.
    let follower = open(&dir.path().join("follower"), 2, &[2]);
    loop {
        let at = follower.log_end_offset();
        let (read, _) = leader
            .read_for_follower(
                BrokerId(2),
                FollowerIncarnation::Registered,
                &replica_fetch(at),
                512,
            )
            .unwrap();
        if read.records.is_empty() {
            break;
        }
        follower
            .append_from_leader(read.records.to_bytes().unwrap(), read.high_watermark)
            .unwrap();
    }
    assert_eq!(latest(&follower), expected);
    assert_eq!(follower.log_end_offset(), end);
}

/// Appends a transactional batch as the leader does once its transaction coordinator
/// confirmed the partition (KIP-890).
fn append_txn(leader: &Partition, records: Bytes) {
    match leader.append_now(records, Acks::Leader).unwrap() {
        super::Append::Written(_) => {}
        super::Append::Unverified(unverified) => {
            leader.append_verified(unverified, Acks::Leader).unwrap();
        }
    }
}

#[test]
fn the_cleaner_stops_at_an_open_transaction_and_compacts_decided_ones_by_outcome() {
    use sluice_protocol::control::{ControlMarker, ControlType};
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), 1, &[1]);
    let txn = |producer_id: i64, seq: i32, value: &str| txn_record(producer_id, seq, 9, value);
    let marker = |kind| ControlMarker {
        kind,
        coordinator_epoch: 0,
    };
    leader.append_now(keyed(9, "plain"), Acks::Leader).unwrap();
    append_txn(&leader, txn(7, 0, "committed"));
    leader
        .append_marker(7, 0, marker(ControlType::Commit))
        .unwrap();
    append_txn(&leader, txn(8, 0, "aborted"));
    leader
        .append_marker(8, 0, marker(ControlType::Abort))
        .unwrap();
    fill(&leader, 0..4);
    // An open transaction: nothing from here on is cleaned.
    append_txn(&leader, txn(10, 0, "open"));
    fill(&leader, 0..4);
    leader.maybe_advance_high_watermark();
    assert!(clean(&leader));
    let value = |l: &Partition| latest(l).get(&9).map(|(_, v)| v.clone());
    // Below the open transaction: the committed write superseded the plain one and the
    // aborted one is gone; the open one's record is still there, after them.
    let all: Vec<Bytes> = log_batches(&leader)
        .iter()
        .filter(|batch| !batch.header().is_control())
        .flat_map(|batch| batch.records().unwrap().map(Result::unwrap))
        .filter(|record| record.key.as_deref() == Some(&[9][..]))
        .map(|record| record.value.unwrap())
        .collect();
    assert_eq!(all, [Bytes::from("committed"), Bytes::from("open")]);
    assert_eq!(value(&leader), Some(Bytes::from("open")));
}

/// A compacted partition's log start never passes its markers, so it forgot no aborted
/// transaction: now one whose records the cleaner removed is forgotten a minute after the
/// swap (a fetch that read them just before still learns they were aborted), and one
/// above what was cleaned is kept.
#[test]
fn aborted_transactions_cleaned_away_are_forgotten_a_minute_after_the_swap() {
    use sluice_protocol::control::{ControlMarker, ControlType};
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), 1, &[1]);
    let abort = |producer_id: i64| {
        let marker = ControlMarker {
            kind: ControlType::Abort,
            coordinator_epoch: 0,
        };
        leader.append_marker(producer_id, 0, marker).unwrap();
    };
    append_txn(&leader, txn_record(8, 0, 1, "aborted-early"));
    abort(8);
    fill(&leader, 10..14);
    // In the active segment, which the cleaner leaves alone.
    append_txn(&leader, txn_record(9, 0, 2, "aborted-late"));
    abort(9);
    leader.maybe_advance_high_watermark();
    let aborted = || -> Vec<i64> {
        let all = leader.aborted_between(Offset(0), Offset(i64::MAX));
        all.into_iter()
            .map(|(producer_id, _)| producer_id)
            .collect()
    };
    assert_eq!(aborted(), [8, 9]);
    assert!(clean(&leader));
    assert!(
        !latest(&leader).contains_key(&1),
        "the aborted record is cleaned away"
    );
    let now = Instant::now();
    leader.snapshot_producers_at(i64::MIN, now).unwrap();
    assert_eq!(aborted(), [8, 9], "remembered right after the swap");
    leader
        .snapshot_producers_at(i64::MIN, now + super::CLEANED_ABORTS_DELAY)
        .unwrap();
    assert_eq!(aborted(), [9]);
    // The forgotten one stays forgotten across a restart (the snapshot has it no more).
    drop(leader);
    let reopened = open(dir.path(), 1, &[1]);
    let all = reopened.aborted_between(Offset(0), Offset(i64::MAX));
    assert_eq!(all.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [9]);
}

/// A transaction's marker goes with the last of its records, once `delete.retention.ms`
/// has passed: exactly-once consumers commit offsets in a transaction every few hundred
/// milliseconds, and `__consumer_offsets` would otherwise keep every marker for ever. A
/// marker whose transaction still has a record (or its producer's last, empty, batch)
/// stays, and the state rebuilt from the cleaned log has no transaction open.
#[test]
fn markers_of_transactions_with_no_records_left_are_cleaned_away() {
    use sluice_protocol::control::{ControlMarker, ControlType};
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        delete_retention_ms: 0,
        ..compacted_config()
    };
    let reopen = || {
        let log = PartitionLog::open(dir.path(), config.clone(), Arc::new(SystemClock)).unwrap();
        Arc::new(Partition::new(
            Arc::from("t"),
            PartitionId(0),
            SELF,
            SharedLog::new(log),
            &assignment(1, 1, &[1]),
            1,
        ))
    };
    let leader = reopen();
    let txn = txn_record;
    let end = |leader: &Partition, producer_id: i64, kind| {
        let marker = ControlMarker {
            kind,
            coordinator_epoch: 0,
        };
        leader.append_marker(producer_id, 0, marker).unwrap();
    };
    // Producer 8: two aborted transactions. The first's record goes, and so does its
    // marker; the second's record is the producer's last batch (kept empty), so its
    // marker stays.
    append_txn(&leader, txn(8, 0, 1, "aborted-1"));
    end(&leader, 8, ControlType::Abort);
    append_txn(&leader, txn(8, 1, 1, "aborted-2"));
    end(&leader, 8, ControlType::Abort);
    // Producer 7: a committed record superseded by a later plain write, then a committed
    // record that stays: the first marker goes, the second stays.
    append_txn(&leader, txn(7, 0, 5, "old"));
    end(&leader, 7, ControlType::Commit);
    leader.append_now(keyed(5, "new"), Acks::Leader).unwrap();
    append_txn(&leader, txn(7, 1, 6, "kept"));
    end(&leader, 7, ControlType::Commit);
    fill(&leader, 10..14);
    leader.maybe_advance_high_watermark();
    // What is left to read: the aborted records go (they were never read committed).
    let mut expected = latest(&leader);
    expected.remove(&1);
    let markers_of = |leader: &Partition| -> Vec<i64> {
        log_batches(leader)
            .iter()
            .filter(|batch| batch.header().is_control())
            .map(|batch| batch.header().producer_id)
            .collect()
    };
    assert_eq!(markers_of(&leader), [8, 8, 7, 7]);
    assert!(clean(&leader));
    assert_eq!(latest(&leader), expected);
    assert_eq!(
        markers_of(&leader),
        [8, 7],
        "the markers of emptied transactions went"
    );
    assert_eq!(leader.last_stable_offset(), leader.high_watermark());

    // Rebuilt from the cleaned log alone (no snapshot was written), no transaction is
    // open: every record left still has its marker.
    let hw = leader.high_watermark();
    drop(leader);
    let leader = reopen();
    leader.maybe_advance_high_watermark();
    assert_eq!(leader.high_watermark(), hw);
    assert_eq!(leader.last_stable_offset(), hw);
    assert_eq!(latest(&leader), expected);
}

/// A cleaner run that fails is not tried again on the next pass but after a backoff, which
/// doubles while runs keep failing; a forced run goes anyway, and a run that succeeds ends
/// the backoff.
#[test]
fn a_failing_cleaner_run_backs_off_until_a_run_succeeds() {
    use super::CLEANER_RETRY_MIN;
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), 1, &[1]);
    fill(&leader, 0..4);
    leader.maybe_advance_high_watermark();
    // The first group's cleaned copy cannot be created: a directory has its name.
    let blocker = dir.path().join(format!("{:020}.log.cleaned", 0));
    std::fs::create_dir(&blocker).unwrap();
    let run = |force| leader.clean_log(force, 1 << 20, &mut Throttle::unlimited());
    assert_eq!(leader.cleaner_retry_in(), None);
    assert!(run(false).is_err());
    let first = leader.cleaner_retry_in().expect("waiting after a failure");
    assert!(
        first <= CLEANER_RETRY_MIN && first > CLEANER_RETRY_MIN / 2,
        "{first:?}"
    );
    std::fs::remove_dir(&blocker).unwrap();
    assert_eq!(
        run(false).unwrap(),
        None,
        "not tried before its wait is over"
    );
    std::fs::create_dir(&blocker).unwrap();
    assert!(run(true).is_err(), "a forced run goes, and fails again");
    assert!(
        leader.cleaner_retry_in().unwrap() > CLEANER_RETRY_MIN,
        "the wait doubled"
    );
    std::fs::remove_dir(&blocker).unwrap();
    assert!(run(true).unwrap().is_some_and(|r| r.swapped));
    assert_eq!(leader.cleaner_retry_in(), None);
}
