//! The high watermark across restarts: a replica starts from the HW it checkpointed
//! (capped by its log), a follower's truncation is not undone by an older checkpoint, and
//! a single replica keeps deriving its HW from what is durable. And under `replicated`
//! durability the leader asks for an fsync once per slice appended, and under `fsync` a
//! follower's fetcher awaits the fsync of what it appended. And a produced batch
//! timestamped too far ahead of the broker's clock is refused.

use sluice_protocol::messages::IsolationLevel;
use sluice_protocol::{BrokerId, LeaderEpoch, Offset};

use super::testing::{assignment, leader_batch, open, open_with, produce, replica_fetch};
use super::{Acks, FollowerIncarnation, Partition, REPLICATED_FLUSH_SLICE};

/// Follower `follower`'s fetch at `offset`, counted.
fn fetch(partition: &Partition, follower: i32, offset: i64) {
    partition
        .read_for_follower(
            BrokerId(follower),
            FollowerIncarnation::Registered,
            &replica_fetch(Offset(offset)),
            1 << 20,
        )
        .expect("the leader serves its follower");
}

/// Offsets a consumer reads from the leader, from `start` on.
fn consumed(partition: &Partition, start: i64) -> Vec<i64> {
    let read = partition
        .read(
            Offset(start),
            1 << 20,
            LeaderEpoch(-1),
            IsolationLevel::ReadUncommitted,
        )
        .expect("the leader serves reads");
    let mut offsets = Vec::new();
    for batch in sluice_protocol::batch::Batches::new(read.records.to_bytes().unwrap()) {
        let header = *batch.expect("a whole batch").header();
        offsets.extend(header.base_offset.0..=header.last_offset().0);
    }
    offsets
}

#[test]
fn a_restarted_replica_starts_from_its_checkpointed_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1, 2]));
    produce(&leader, 3, 2); // offsets 0..6
    fetch(&leader, 2, 4);
    assert_eq!(leader.high_watermark(), Offset(4));
    leader.checkpoint(i64::MIN);
    drop(leader); // a crash: no clean close

    // Leader again, with an ISR whose other members have not fetched since: what was
    // committed before the stop is served at once, nothing past it.
    let leader = open(dir.path(), &assignment(1, 3, &[1, 2, 3]));
    assert_eq!(leader.high_watermark(), Offset(4));
    assert_eq!(consumed(&leader, 0), [0, 1, 2, 3]);
    drop(leader);

    // A follower starts from it too, and its leader's answers move it on.
    let follower = open(dir.path(), &assignment(2, 4, &[1, 2, 3]));
    assert_eq!(follower.high_watermark(), Offset(4));
    follower
        .append_from_leader(bytes::Bytes::new(), Offset(6))
        .unwrap();
    assert_eq!(follower.high_watermark(), Offset(6));
    follower.checkpoint_high_watermark(); // the clean-close path
    drop(follower);
    assert_eq!(
        open(dir.path(), &assignment(2, 4, &[1, 2, 3])).high_watermark(),
        Offset(6)
    );
}

#[test]
fn a_replica_without_a_checkpoint_starts_at_its_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1, 2]));
    produce(&leader, 3, 2);
    fetch(&leader, 2, 6);
    assert_eq!(leader.high_watermark(), Offset(6));
    drop(leader); // before any checkpoint
    let leader = open(dir.path(), &assignment(1, 2, &[1, 2, 3]));
    assert_eq!(leader.high_watermark(), Offset(0));
    assert!(consumed(&leader, 0).is_empty());
}

#[test]
fn a_single_replica_derives_its_high_watermark_from_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let single = |epoch: i32| super::Assignment {
        replicas: vec![BrokerId(1)],
        ..assignment(1, epoch, &[1])
    };
    let leader = open(dir.path(), &single(1));
    produce(&leader, 3, 2);
    assert_eq!(leader.high_watermark(), Offset(6));
    leader.checkpoint(i64::MIN);
    produce(&leader, 1, 2);
    drop(leader); // the checkpoint says 6; the log holds 8
    let leader = open(dir.path(), &single(2));
    assert_eq!(leader.high_watermark(), Offset(8));
}

#[test]
fn a_follower_truncation_is_not_undone_by_an_older_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let follower = open(dir.path(), &assignment(2, 1, &[1, 2, 3]));
    for base in [0, 4] {
        follower
            .append_from_leader(leader_batch(base, 4, 1), Offset(8))
            .unwrap();
    }
    assert_eq!(follower.high_watermark(), Offset(8));
    follower.checkpoint(i64::MIN);

    // An unclean election made 3 the leader; its epoch 1 ended at offset 4.
    follower.apply_assignment(&assignment(3, 2, &[3]));
    assert_eq!(
        follower
            .truncate_diverging(LeaderEpoch(1), Offset(4))
            .unwrap(),
        Offset(4)
    );
    assert_eq!(follower.high_watermark(), Offset(4));
    // The new leader's records land at the cut offsets, not committed yet.
    follower
        .append_from_leader(leader_batch(4, 6, 2), Offset(4))
        .unwrap();
    assert_eq!(follower.log_end_offset(), Offset(10));
    drop(follower); // a crash before the next periodic checkpoint

    let restarted = open(dir.path(), &assignment(3, 2, &[3]));
    assert_eq!(
        restarted.high_watermark(),
        Offset(4),
        "the checkpoint of 8 from before the truncation must not come back"
    );
}

#[test]
fn a_replicated_leader_asks_for_an_fsync_once_per_slice_appended() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    // One batch of a quarter slice: 16 records of a 64th each.
    let quarter = {
        let mut builder = sluice_protocol::batch::BatchBuilder::new();
        let value = vec![7u8; REPLICATED_FLUSH_SLICE as usize / 64];
        for _ in 0..16 {
            builder.append(1_700_000_000_000, None, Some(&value), &[]);
        }
        builder.build()
    };
    for _ in 0..3 {
        leader.append_now(quarter.clone(), Acks::Leader).unwrap();
    }
    // Nothing asked yet: the periodic flush (a minute away here) would cover this much.
    assert_eq!(leader.log.flushed_offset(), Offset(0));
    leader.append_now(quarter, Acks::Leader).unwrap();
    // The fourth quarter completes a slice: a flusher fsyncs all four in the background.
    // (The bound only turns a missing fsync into a failure instead of a hang.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while leader.log.flushed_offset() < Offset(64) {
        assert!(
            std::time::Instant::now() < deadline,
            "no fsync after a whole slice"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[tokio::test]
async fn a_follower_under_fsync_counts_only_what_its_fsync_covered() {
    let dir = tempfile::tempdir().unwrap();
    let follower = open_with(
        dir.path(),
        &assignment(2, 1, &[1, 2]),
        sluice_storage::Durability::Fsync,
    );
    let records = leader_batch(0, 4, 1);
    assert!(follower
        .try_append_from_leader(&records, Offset(4))
        .unwrap());
    assert_eq!(follower.follower_fetch_state().fetch_offset, Offset(4));
    // The HW is capped by what is durable here, however far the fsync got.
    assert!(follower.high_watermark() <= follower.log.flushed_offset());
    if let Some(wait) = follower.pending_durability() {
        wait.await.unwrap();
    }
    assert!(follower.pending_durability().is_none());
    assert_eq!(follower.log.flushed_offset(), Offset(4));
    // The next answer (nothing new) takes the leader's HW up to the durable end.
    assert!(follower
        .try_append_from_leader(&bytes::Bytes::new(), Offset(4))
        .unwrap());
    assert_eq!(follower.high_watermark(), Offset(4));
}

#[test]
fn the_quick_replication_paths_leave_a_busy_or_large_job_to_a_blocking_thread() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(&dir.path().join("leader"), &assignment(1, 1, &[1, 2]));
    produce(&leader, 3, 2); // offsets 0..6
    let follower = open(&dir.path().join("follower"), &assignment(2, 1, &[1, 2]));
    let registered = FollowerIncarnation::Registered;
    {
        let _busy = leader.log.write();
        let read = leader.try_read_for_follower(
            BrokerId(2),
            registered,
            &replica_fetch(Offset(0)),
            1 << 20,
        );
        assert!(
            read.unwrap().is_none(),
            "a busy log is not read on an async worker"
        );
    }
    assert_eq!(leader.follower_log_end(BrokerId(2)), Some(Offset(-1)));
    let (read, _) = leader
        .try_read_for_follower(BrokerId(2), registered, &replica_fetch(Offset(0)), 1 << 20)
        .unwrap()
        .expect("a free log is read at once");
    assert_eq!(leader.follower_log_end(BrokerId(2)), Some(Offset(0)));
    {
        let _busy = follower.log.write();
        let appended =
            follower.try_append_from_leader(&read.records.to_bytes().unwrap(), read.high_watermark);
        assert!(
            !appended.unwrap(),
            "a busy log is not written on an async worker"
        );
    }
    assert_eq!(follower.log_end_offset(), Offset(0));
    let large = bytes::Bytes::from(vec![0u8; super::INLINE_APPEND_BYTES_MAX + 1]);
    assert!(!follower.try_append_from_leader(&large, Offset(0)).unwrap());
    assert!(follower
        .try_append_from_leader(&read.records.to_bytes().unwrap(), read.high_watermark)
        .unwrap());
    assert_eq!(follower.log_end_offset(), Offset(6));

    // More than a quick read behind: left to a blocking thread, which reads it all.
    let big = {
        let mut builder = sluice_protocol::batch::BatchBuilder::new();
        let value = vec![7u8; super::INLINE_APPEND_BYTES_MAX / 2];
        builder.append(1_700_000_000_000, None, Some(&value), &[]);
        builder.build()
    };
    for _ in 0..3 {
        leader.append_now(big.clone(), Acks::Leader).unwrap();
    }
    let behind = replica_fetch(Offset(6));
    let quick = leader.try_read_for_follower(BrokerId(2), registered, &behind, 4 << 20);
    assert!(quick.unwrap().is_none());
    let (read, _) = leader
        .read_for_follower(BrokerId(2), registered, &behind, 4 << 20)
        .unwrap();
    assert_eq!(read.records.len(), 3 * big.len(), "all three batches");
}

#[test]
fn a_background_flush_cut_short_by_a_truncation_leaves_the_partition_online() {
    let dir = tempfile::tempdir().unwrap();
    let follower = open(dir.path(), &assignment(2, 1, &[1, 2]));
    follower
        .append_from_leader(leader_batch(0, 4, 1), Offset(0))
        .unwrap();
    // What the periodic flush's wait returns when a truncation cut its data off.
    let cut = sluice_storage::StorageError::io(
        "fsync",
        dir.path(),
        std::io::Error::other("appended data was not made durable: the log was truncated"),
    );
    follower.background_flush_done(Err(cut));
    assert!(follower.offline_reason().is_none());
    follower.background_flush();
    assert!(follower.offline_reason().is_none());
    assert_eq!(follower.log.flushed_offset(), Offset(4));
}

#[test]
fn a_coordinator_append_is_refused_once_leadership_moved_even_if_it_came_back() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    leader
        .append_as_coordinator(super::testing::batch(1), LeaderEpoch(1), None)
        .expect("the coordinator loaded in this epoch writes");
    // Broker 2 led in epoch 2, and leadership came back here in epoch 3.
    leader.apply_assignment(&assignment(2, 2, &[2]));
    leader.apply_assignment(&assignment(1, 3, &[1]));
    let stale = leader
        .append_as_coordinator(super::testing::batch(1), LeaderEpoch(1), None)
        .unwrap_err();
    assert_eq!(stale.code, sluice_protocol::ErrorCode::FencedLeaderEpoch);
    assert_eq!(leader.log_end_offset(), Offset(1), "nothing written");
    leader
        .append_as_coordinator(super::testing::batch(1), LeaderEpoch(3), None)
        .expect("the coordinator loaded in the new epoch writes");
}

/// A batch timestamped further ahead of the broker's clock than the topic's
/// `message.timestamp.after.max.ms` (1 hour by default) is refused with INVALID_TIMESTAMP
/// and a message that says what to do; within it, or once the topic takes more, it goes in.
#[test]
fn a_batch_stamped_too_far_ahead_of_the_brokers_clock_is_refused() {
    use sluice_protocol::batch::BatchBuilder;
    use sluice_protocol::ErrorCode;
    use sluice_storage::{Clock, LogConfig, SystemClock};
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    let stamped = |ahead_ms: i64| {
        let mut b = BatchBuilder::new();
        b.append(SystemClock.now_ms() + ahead_ms, None, Some(b"v"), &[]);
        b.build()
    };
    let hour = 3600 * 1000;
    leader.append_now(stamped(hour / 2), Acks::Leader).unwrap();
    let err = leader
        .append_now(stamped(2 * hour), Acks::Leader)
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidTimestamp);
    assert!(
        err.message.contains("ahead of this broker's clock")
            && err.message.contains("message.timestamp.after.max.ms"),
        "{}",
        err.message
    );
    leader.maybe_advance_high_watermark();
    assert_eq!(
        consumed(&leader, 0),
        [0],
        "nothing of the refused batch is written"
    );
    leader.reconfigure(
        LogConfig {
            message_timestamp_after_max_ms: 3 * hour,
            ..LogConfig::default()
        },
        1,
    );
    leader.append_now(stamped(2 * hour), Acks::Leader).unwrap();
}

/// With `message.timestamp.before.max.ms` set, a batch holding a record timestamped
/// further behind the broker's clock than it allows is refused with INVALID_TIMESTAMP,
/// whether the old record is the batch's first or a later one (a negative timestamp
/// delta); by default (unbounded, as in Kafka) any past timestamp goes in, and
/// LogAppendTime batches are never checked.
#[test]
fn a_record_stamped_too_far_behind_the_brokers_clock_is_refused_once_the_topic_says_so() {
    use sluice_protocol::batch::BatchBuilder;
    use sluice_protocol::ErrorCode;
    use sluice_storage::{Clock, LogConfig, SystemClock};
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    let hour = 3600 * 1000;
    let stamped = |behind_ms: &[i64]| {
        let mut b = BatchBuilder::new();
        for behind in behind_ms {
            b.append(SystemClock.now_ms() - behind, None, Some(b"v"), &[]);
        }
        b.build()
    };
    let year = 365 * 24 * hour;
    leader.append_now(stamped(&[year]), Acks::Leader).unwrap();
    leader.reconfigure(
        LogConfig {
            message_timestamp_before_max_ms: hour,
            ..LogConfig::default()
        },
        1,
    );
    leader
        .append_now(stamped(&[hour / 2, 0]), Acks::Leader)
        .unwrap();
    for refused in [stamped(&[2 * hour]), stamped(&[0, 2 * hour, 0])] {
        let err = leader.append_now(refused, Acks::Leader).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidTimestamp);
        assert!(
            err.message.contains("ms behind this broker's clock")
                && err.message.contains("message.timestamp.before.max.ms"),
            "{}",
            err.message
        );
    }
    let mut log_append_time = BatchBuilder::new();
    log_append_time.append(SystemClock.now_ms() - year, None, Some(b"v"), &[]);
    let mut log_append_time = log_append_time.build().to_vec();
    // attributes (bit 3: LogAppendTime) sit after base offset, length, epoch, magic, CRC
    log_append_time[22] |= 0x08;
    let crc = crc32c::crc32c(&log_append_time[21..]);
    log_append_time[17..21].copy_from_slice(&crc.to_be_bytes());
    leader
        .append_now(log_append_time.into(), Acks::Leader)
        .unwrap();
    leader.maybe_advance_high_watermark();
    assert_eq!(
        consumed(&leader, 0),
        [0, 1, 2, 3],
        "nothing of the refused batches is written"
    );
}

/// Under `message.timestamp.type=LogAppendTime` a produced batch takes the broker's clock
/// (whatever the producer stamped, no bound applies), its records read as that time, and a
/// batch damaged on the way is still refused: the stamp's new CRC does not hide it.
#[test]
fn log_append_time_topics_stamp_batches_with_the_brokers_clock() {
    use sluice_protocol::batch::{BatchBuilder, Batches};
    use sluice_protocol::ErrorCode;
    use sluice_storage::{Clock, LogConfig, SystemClock};
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    leader.reconfigure(
        LogConfig {
            log_append_time: true,
            message_timestamp_before_max_ms: 1000,
            ..LogConfig::default()
        },
        1,
    );
    let year = 365 * 24 * 3600 * 1000;
    let mut b = BatchBuilder::new();
    b.append(SystemClock.now_ms() - year, None, Some(b"a"), &[]);
    b.append(SystemClock.now_ms() + year, None, Some(b"b"), &[]);
    let before = SystemClock.now_ms();
    leader.append_now(b.build(), Acks::Leader).unwrap();
    let after = SystemClock.now_ms();

    let mut damaged = BatchBuilder::new();
    damaged.append(SystemClock.now_ms(), None, Some(b"c"), &[]);
    let mut damaged = damaged.build().to_vec();
    *damaged.last_mut().unwrap() ^= 0xff;
    let err = leader.append_now(damaged.into(), Acks::Leader).unwrap_err();
    assert_eq!(err.code, ErrorCode::CorruptMessage, "{}", err.message);

    leader.maybe_advance_high_watermark();
    let read = leader
        .read(
            Offset(0),
            1 << 20,
            LeaderEpoch(-1),
            IsolationLevel::ReadUncommitted,
        )
        .unwrap();
    let batches: Vec<_> = Batches::new(read.records.to_bytes().unwrap())
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(batches.len(), 1, "only the good batch is written");
    let header = *batches[0].header();
    assert!(header.is_log_append_time());
    assert!((before..=after).contains(&header.max_timestamp));
    for record in batches[0].records().unwrap() {
        assert_eq!(record.unwrap().timestamp, header.max_timestamp);
    }
}

/// A batch larger than the topic's `max.message.bytes` is refused with MESSAGE_TOO_LARGE
/// (on which Kafka's producers and sluice's split their batches); nothing is written.
#[test]
fn a_batch_above_the_topics_max_message_bytes_is_refused() {
    use sluice_protocol::batch::BatchBuilder;
    use sluice_protocol::ErrorCode;
    use sluice_storage::{Clock, LogConfig, SystemClock};
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1]));
    let batch = |records: usize| {
        let mut b = BatchBuilder::new();
        for _ in 0..records {
            b.append(SystemClock.now_ms(), None, Some(&[7u8; 1000]), &[]);
        }
        b.build()
    };
    let (small, large) = (batch(1), batch(3));
    leader.reconfigure(
        LogConfig {
            max_message_bytes: small.len() as u32,
            ..LogConfig::default()
        },
        1,
    );
    leader.append_now(small, Acks::Leader).unwrap();
    let err = leader.append_now(large, Acks::Leader).unwrap_err();
    assert_eq!(err.code, ErrorCode::MessageTooLarge);
    assert!(err.message.contains("max.message.bytes"), "{}", err.message);
    leader.maybe_advance_high_watermark();
    assert_eq!(consumed(&leader, 0), [0], "nothing of the refused batch");
}

#[tokio::test]
async fn deleted_records_go_on_the_leader_at_once_and_count_once_every_isr_member_follows() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), &assignment(1, 1, &[1, 2]));
    produce(&leader, 5, 2); // offsets 0..10
    fetch(&leader, 2, 6);
    assert_eq!(leader.high_watermark(), Offset(6));
    let refused = leader.delete_records(7).unwrap_err();
    assert_eq!(refused.code, sluice_protocol::ErrorCode::OffsetOutOfRange);
    assert!(
        refused.message.contains("high watermark 6"),
        "{}",
        refused.message
    );

    assert_eq!(leader.delete_records(3).unwrap(), Offset(3));
    assert_eq!(leader.log_start_offset(), Offset(3));
    // The batch holding offset 3 (2..4) is still read whole, as Kafka's.
    assert_eq!(consumed(&leader, 3), [2, 3, 4, 5]);
    assert!(leader
        .read(
            Offset(1),
            1 << 20,
            LeaderEpoch(-1),
            IsolationLevel::ReadUncommitted
        )
        .is_err());
    // Follower 2 has not said it deleted them: the low watermark waits for it.
    assert_eq!(leader.low_watermark(), Offset(0));
    let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
    let timed_out = leader
        .await_low_watermark(Offset(3), soon)
        .await
        .unwrap_err();
    assert_eq!(timed_out.code, sluice_protocol::ErrorCode::RequestTimedOut);
    let mut request = replica_fetch(Offset(6));
    request.log_start_offset = Offset(3);
    leader
        .read_for_follower(
            BrokerId(2),
            FollowerIncarnation::Registered,
            &request,
            1 << 20,
        )
        .unwrap();
    assert_eq!(leader.low_watermark(), Offset(3));
    let later = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    assert_eq!(
        leader.await_low_watermark(Offset(3), later).await.unwrap(),
        Offset(3)
    );
    // -1: everything committed.
    assert_eq!(leader.delete_records(-1).unwrap(), Offset(6));

    // A follower takes its leader's log start, as far as its own log reaches.
    let dir = tempfile::tempdir().unwrap();
    let follower = open(dir.path(), &assignment(2, 1, &[1, 2]));
    follower
        .append_from_leader(leader_batch(0, 4, 1), Offset(4))
        .unwrap();
    follower.follow_leader_log_start(Offset(6)).unwrap();
    assert_eq!(follower.log_start_offset(), Offset(4));
    follower.follow_leader_log_start(Offset(2)).unwrap();
    assert_eq!(follower.log_start_offset(), Offset(4), "never back");
}

#[test]
fn a_replica_moved_away_answers_not_leader_and_a_deleted_one_unknown_topic() {
    let dir = tempfile::tempdir().unwrap();
    let moved = open(&dir.path().join("moved"), &assignment(1, 1, &[1]));
    produce(&moved, 1, 2);
    moved.mark_moved();
    let read = |p: &Partition| {
        p.read(
            Offset(0),
            1 << 20,
            LeaderEpoch(-1),
            IsolationLevel::ReadUncommitted,
        )
        .map(|_| ())
        .unwrap_err()
        .code
    };
    assert_eq!(
        read(&moved),
        sluice_protocol::ErrorCode::NotLeaderOrFollower
    );
    let deleted = open(&dir.path().join("deleted"), &assignment(1, 1, &[1]));
    deleted.mark_deleted();
    assert_eq!(
        read(&deleted),
        sluice_protocol::ErrorCode::UnknownTopicOrPartition
    );
}
