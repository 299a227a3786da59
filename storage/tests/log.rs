//! Behaviour of PartitionLog at its public boundary: appends, reads, lookups, rolls,
//! truncation, retention and the leader-epoch cache.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use sluice_protocol::batch::{set_base_offset, set_partition_leader_epoch, RecordBatch};
use sluice_protocol::{LeaderEpoch, Offset, Records};
use sluice_storage::{LogConfig, StorageError, SEND_FROM_FILE_MIN_BYTES};

#[test]
fn append_assigns_offsets_and_epochs_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    let a = log.append(batch("a", 3, 10, 100), LeaderEpoch(5)).unwrap();
    let b = log.append(batch("b", 2, 10, 200), LeaderEpoch(5)).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (Offset(0), Offset(2)));
    assert_eq!((b.base_offset, b.last_offset), (Offset(3), Offset(4)));
    assert_eq!(log.log_end_offset(), Offset(5));
    let batches = read_all(&log, 1 << 20);
    assert_eq!(offsets(&batches), [(0, 2), (3, 4)]);
    assert!(batches
        .iter()
        .all(|b| b.header().partition_leader_epoch == LeaderEpoch(5)));
    let values: Vec<Bytes> = batches[1]
        .records()
        .unwrap()
        .map(|r| r.unwrap().value.unwrap())
        .collect();
    assert_eq!(&values[0][..3], b"b-0");
}

#[test]
fn read_starts_at_the_batch_holding_the_offset_and_respects_limits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 40, 4, 100, 0); // offsets 0..160 over several segments
    assert!(log.segment_count() > 3);
    let check = |offset: i64, max_bytes: u32, max_offset: i64, want: &[(i64, i64)]| {
        let bytes = log
            .read(Offset(offset), max_bytes, Offset(max_offset))
            .unwrap();
        let got: Vec<_> = sluice_protocol::batch::Batches::new(bytes)
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(
            offsets(&got),
            want,
            "read({offset}, {max_bytes}, {max_offset})"
        );
    };
    check(0, 1, i64::MAX, &[(0, 3)]); // at least one whole batch
    check(5, 1, i64::MAX, &[(4, 7)]); // the batch that holds offset 5
    check(77, 1, i64::MAX, &[(76, 79)]);
    check(4, 1, 8, &[(4, 7)]); // the high watermark ends at a batch boundary
    check(4, 1, 7, &[]); // never past the high watermark
    check(160, 1 << 20, i64::MAX, &[]); // the log end reads empty
    let many = log.read(Offset(0), 1 << 20, Offset(i64::MAX)).unwrap();
    assert!(!many.is_empty());
    assert!(matches!(
        log.read(Offset(161), 100, Offset(i64::MAX)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, 300).len(), 40);
}

/// A read for an answer that is large and in the page cache (just written) is the range of
/// its segment file, holding what `read` reads; a small one is read into memory.
#[test]
fn a_large_cached_read_for_an_answer_is_its_files_range() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    fill(&mut log, 40, 4, 1000, 0); // 160 records, ~4 KB a batch
    let large = 1 << 20;
    let found = log
        .read_records(Offset(0), large, Offset(i64::MAX))
        .unwrap()
        .expect("records");
    assert!(found.records.len() >= SEND_FROM_FILE_MIN_BYTES);
    assert!(matches!(found.records, Records::File(_)), "{found:?}");
    let read = log.read(Offset(0), large, Offset(i64::MAX)).unwrap();
    assert_eq!(found.records.to_bytes().unwrap(), read);
    assert_eq!(found.last_offset, Offset(159));
    let small = log
        .read_records(Offset(4), 1, Offset(i64::MAX))
        .unwrap()
        .expect("records");
    assert!(matches!(small.records, Records::Memory(_)));
    assert_eq!(small.last_offset, Offset(7));
    assert_eq!(
        log.read_records(Offset(160), large, Offset(i64::MAX))
            .unwrap(),
        None,
        "nothing at the log end"
    );
    // A truncation in place makes the range say it may hold other bytes now.
    let Records::File(slice) = &found.records else {
        unreachable!()
    };
    assert!(slice.is_current());
    log.truncate_to(Offset(100)).unwrap();
    assert!(!slice.is_current());
}

/// Batches not in the page cache are read for the answer on the caller's thread (the
/// fetch's blocking thread), never left to a connection's task to wait for the disk.
#[test]
fn a_large_read_of_batches_not_in_the_page_cache_is_read_at_once() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: statfs fills `fs`, a plain C struct, for a valid path.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    let path = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut fs) }, 0);
    if fs.f_type == libc::TMPFS_MAGIC {
        eprintln!("skipped: tmpfs keeps every page in memory, none can be evicted");
        return;
    }
    let clock = clock();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    fill(&mut log, 40, 4, 1000, 0);
    log.flush().unwrap();
    let segment = std::fs::File::open(dir.path().join("00000000000000000000.log")).unwrap();
    // SAFETY: advice on an open file; its clean pages leave the page cache.
    let advised =
        unsafe { libc::posix_fadvise(segment.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(advised, 0);
    let found = log
        .read_records(Offset(0), 1 << 20, Offset(i64::MAX))
        .unwrap()
        .expect("records");
    assert!(found.records.len() >= SEND_FROM_FILE_MIN_BYTES);
    assert!(matches!(found.records, Records::Memory(_)), "{found:?}");
    assert_eq!(
        found.records.to_bytes().unwrap(),
        log.read(Offset(0), 1 << 20, Offset(i64::MAX)).unwrap()
    );
}

#[test]
fn rolls_on_size_age_and_offset_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 3, 4, 20, 0);
    assert_eq!(log.segment_count(), 1);
    fill(&mut log, 30, 4, 20, 0);
    let by_size = log.segment_count();
    assert!(by_size > 1, "4 KiB segments roll on size");

    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms_max: 1000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config, &clock);
    fill(&mut log, 1, 1, 10, 0);
    clock.advance(999);
    fill(&mut log, 1, 1, 10, 0);
    assert_eq!(log.segment_count(), 1);
    // The broker's clock when the segment was created starts its age.
    clock.advance(1);
    fill(&mut log, 1, 1, 10, 0);
    assert_eq!(
        log.segment_count(),
        2,
        "a segment rolls once its first record is segment_ms old"
    );
}

#[test]
fn rolls_when_an_index_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 1,
        index_bytes_max: 8 + 4 * 8, // room for 4 offset entries (2 time entries)
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config.clone(), &clock());
    fill(&mut log, 12, 1, 10, 0);
    assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
    let before = offsets(&read_all(&log, 1 << 20));
    drop(log);
    let log = open(dir.path(), config, &clock());
    assert_eq!(offsets(&read_all(&log, 1)), before);
}

#[test]
fn follower_append_keeps_offsets_and_checks_continuity() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut leader = open(&dir.path().join("leader"), LogConfig::default(), &clock);
    leader.append(batch("x", 2, 5, 1), LeaderEpoch(1)).unwrap();
    leader.append(batch("y", 3, 5, 2), LeaderEpoch(2)).unwrap();
    let fetched = leader.read(Offset(0), 1 << 20, Offset(i64::MAX)).unwrap();
    assert_eq!(
        sluice_protocol::batch::Batches::new(fetched.clone()).count(),
        2
    );

    let mut follower = open(&dir.path().join("follower"), LogConfig::default(), &clock);
    let info = follower.append_as_follower(fetched.clone()).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(4)));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert!(matches!(
        follower.append_as_follower(fetched),
        Err(StorageError::NonContiguousAppend {
            expected: Offset(5),
            got: Offset(0)
        })
    ));
}

#[test]
fn stale_leader_epochs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), &clock());
    log.append(batch("a", 1, 5, 1), LeaderEpoch(3)).unwrap();
    assert!(matches!(
        log.append(batch("b", 1, 5, 1), LeaderEpoch(2)),
        Err(StorageError::StaleLeaderEpoch { got: 2, latest: 3 })
    ));
}

#[test]
fn invalid_batches_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), &clock());
    log.append(batch("a", 1, 5, 1), LeaderEpoch(0)).unwrap();
    let mut bad = BytesMut::from(&batch("b", 2, 5, 1)[..]);
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert!(matches!(
        log.append(bad.freeze(), LeaderEpoch(0)),
        Err(StorageError::InvalidBatch(_))
    ));
    assert!(log
        .append(Bytes::from_static(b"short"), LeaderEpoch(0))
        .is_err());
    assert_eq!(log.log_end_offset(), Offset(1));
    assert_eq!(read_all(&log, 1 << 20).len(), 1);
}

#[test]
fn end_offset_for_epoch_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 10, 4, 20, 1); // 0..40 in epoch 1
    fill(&mut log, 10, 4, 20, 2); // 40..80 in epoch 2
    fill(&mut log, 10, 4, 20, 4); // 80..120 in epoch 4
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(1)),
        Some((LeaderEpoch(1), Offset(40)))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(3)),
        Some((LeaderEpoch(2), Offset(80)))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(4)),
        Some((LeaderEpoch(4), Offset(120)))
    );
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), None);

    // Truncating mid-batch cuts the whole batch that holds the offset.
    log.truncate_to(Offset(62)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(60));
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(4)),
        Some((LeaderEpoch(2), Offset(60)))
    );
    assert_eq!(offsets(&read_all(&log, 1 << 20)).last(), Some(&(56, 59)));
    // The log goes on from there in a new epoch, and survives a reopen.
    fill(&mut log, 2, 4, 20, 5);
    drop(log);
    let log = open(dir.path(), small_config(), &clock);
    assert_eq!(log.log_end_offset(), Offset(68));
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(5)),
        Some((LeaderEpoch(5), Offset(68)))
    );
    assert_eq!(read_all(&log, 1000).len(), 17);
}

#[test]
fn truncate_below_log_start_empties_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 20, 4, 20, 1);
    log.truncate_fully_and_start_at(Offset(500)).unwrap();
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (Offset(500), Offset(500))
    );
    assert_eq!(log.segment_count(), 1);
    fill(&mut log, 1, 2, 5, 3);
    assert_eq!(offsets(&read_all(&log, 1 << 20)), [(500, 501)]);
}

#[test]
fn retention_by_size_and_time_deletes_whole_old_segments_below_the_hw() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig {
        retention_bytes: Some(8192),
        ..small_config()
    };
    let mut log = open(dir.path(), config, &clock);
    fill(&mut log, 60, 4, 100, 0);
    let before = log.segment_count();
    assert_eq!(
        log.apply_retention(Offset(0)).unwrap(),
        0,
        "nothing at or above the HW goes"
    );
    let deleted = log.apply_retention(log.log_end_offset()).unwrap();
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    assert!(log.size_bytes() >= 8192 - 4096 && log.size_bytes() < 8192 + 4096);
    let start = log.log_start_offset();
    assert!(start > Offset(0));
    assert!(matches!(
        log.read(Offset(0), 10, Offset(i64::MAX)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        read_all(&log, 1 << 20)
            .first()
            .unwrap()
            .header()
            .base_offset,
        start
    );

    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: Some(60_000),
        ..small_config()
    };
    let mut log = open(dir.path(), config, &clock);
    fill(&mut log, 60, 4, 20, 0);
    assert_eq!(log.apply_retention(log.log_end_offset()).unwrap(), 0);
    clock.advance(61_000);
    let n = log.segment_count();
    assert_eq!(
        log.apply_retention(log.log_end_offset()).unwrap(),
        n - 1,
        "all but the active segment"
    );
    assert_eq!(
        log.delete_before(log.log_end_offset()).unwrap(),
        0,
        "the active segment stays"
    );
}

#[test]
fn retention_detaches_segments_at_once_and_deletes_their_files_later() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig {
        retention_bytes: Some(8192),
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone(), &clock);
    fill(&mut log, 60, 4, 100, 0);
    let files_before = std::fs::read_dir(dir.path()).unwrap().count();
    let detached = log.detach_for_retention(log.log_end_offset());
    assert!(!detached.is_empty());
    // Gone from the log at once...
    let start = log.log_start_offset();
    assert!(start > Offset(0));
    assert!(matches!(
        log.read(Offset(0), 10, Offset(i64::MAX)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, 1 << 20)[0].header().base_offset, start);
    // ...while its files wait for `delete`, which needs no access to the log.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), files_before);
    let n = detached.len();
    assert_eq!(detached.delete().unwrap(), n);
    // Renamed out of the log at once (each segment's .log, .index and .timeindex), deleted
    // in the background later (`deleter.rs`, after a delay).
    let names = |suffix: &str| {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(suffix)
            })
            .count()
    };
    assert_eq!(names(".deleted"), 3 * n);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count() - names(".deleted"),
        files_before - 3 * n
    );
    // The epoch cache was trimmed in memory only; a reopened log agrees with this one, and
    // hands what the deleter had not reached yet (as after a crash) to it again, at once.
    let end = log.log_end_offset();
    drop(log);
    let log = open(dir.path(), config, &clock);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
    assert_eq!(log.epoch_entries()[0].start_offset, start);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while names(".deleted") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the .deleted files stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Segments detached from a log whose directory is then removed and made again (a topic
/// deleted and created again) are never looked for in the new directory: the renames go
/// through the directory opened when they were detached.
#[test]
fn detached_segments_leave_a_directory_made_again_at_the_same_path_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let clock = clock();
    let config = LogConfig {
        retention_bytes: Some(8192),
        ..small_config()
    };
    let mut log = open(&path, config, &clock);
    fill(&mut log, 60, 4, 100, 0);
    let detached = log.detach_for_retention(log.log_end_offset());
    assert!(!detached.is_empty());
    drop(log);
    std::fs::remove_dir_all(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let newcomer = path.join("00000000000000000000.log");
    std::fs::write(&newcomer, b"the new topic's first segment").unwrap();
    detached.delete().unwrap();
    assert_eq!(
        std::fs::read(&newcomer).unwrap(),
        b"the new topic's first segment"
    );
    assert_eq!(std::fs::read_dir(&path).unwrap().count(), 1);
}

#[test]
fn delete_before_removes_only_whole_segments_below() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 40, 4, 20, 0);
    let second_segment_start = {
        let bytes = log.read(Offset(0), 1 << 30, Offset(i64::MAX)).unwrap();
        let first: Vec<RecordBatch> = sluice_protocol::batch::Batches::new(bytes)
            .map(|b| b.unwrap())
            .collect();
        first.last().unwrap().header().next_offset()
    };
    assert_eq!(log.delete_before(second_segment_start.plus(-1)).unwrap(), 0);
    assert_eq!(log.delete_before(second_segment_start).unwrap(), 1);
    assert_eq!(log.log_start_offset(), second_segment_start);
}

#[test]
fn advancing_the_log_start_hides_records_inside_a_segment_and_deletes_whole_ones() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 80, 4, 20, 0);
    let segments = log.segment_count();
    assert!(segments > 2);
    // A read stops at its segment's end.
    let first_segment = log.read(Offset(0), 1 << 30, Offset(i64::MAX)).unwrap();
    let second_segment_start = sluice_protocol::batch::Batches::new(first_segment)
        .last()
        .unwrap()
        .unwrap()
        .header()
        .next_offset();
    // Inside the second segment: the first goes, the second stays with its early records
    // out of reach.
    let start = second_segment_start.plus(2);
    let detached = log.advance_log_start(start).unwrap();
    assert_eq!(detached.len(), 1);
    assert_eq!(detached.delete().unwrap(), 1);
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(log.segment_count(), segments - 1);
    assert!(matches!(
        log.read(second_segment_start, 1 << 20, Offset(i64::MAX)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // A read at the start gets the batch holding it, as Kafka's.
    let first = log.read(start, 1, Offset(i64::MAX)).unwrap();
    let first = sluice_protocol::batch::Batches::new(first)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.header().base_offset, second_segment_start);
    assert_eq!(log.epoch_entries()[0].start_offset, start);
    // Lower or equal: no change. Past the end: refused.
    assert!(log.advance_log_start(Offset(1)).unwrap().is_empty());
    assert_eq!(log.log_start_offset(), start);
    let end = log.log_end_offset();
    assert!(matches!(
        log.advance_log_start(end.plus(1)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));

    // Durable: a reopened log (after a crash too) starts there.
    drop(log);
    let mut log = open(dir.path(), small_config(), &clock);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
    // Up to the log end: every sealed segment goes, the active one stays, empty to readers.
    log.advance_log_start(end).unwrap().delete().unwrap();
    assert_eq!((log.log_start_offset(), log.segment_count()), (end, 1));
    assert!(read_all(&log, 1 << 20).is_empty());
    fill(&mut log, 1, 2, 5, 0);
    assert_eq!(offsets(&read_all(&log, 1 << 20)), [(end.0, end.0 + 1)]);
}

#[test]
fn a_log_start_left_past_the_log_end_by_a_truncation_is_lowered() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 10, 4, 20, 0);
    log.advance_log_start(Offset(30)).unwrap().delete().unwrap();
    // A follower that restarts below its deleted records (an unclean leader's log start)
    // sees what it appends there.
    log.truncate_fully_and_start_at(Offset(20)).unwrap();
    assert_eq!(log.log_start_offset(), Offset(20));
    fill(&mut log, 5, 4, 20, 1);
    assert_eq!(read_all(&log, 1 << 20)[0].header().base_offset, Offset(20));
    drop(log);
    let log = open(dir.path(), small_config(), &clock);
    assert_eq!(log.log_start_offset(), Offset(20));
}

#[test]
fn segments_a_crash_left_below_the_log_start_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 40, 4, 20, 0);
    let segments = log.segment_count();
    let end = log.log_end_offset();
    // The checkpoint is written first; the process dies before the files are deleted.
    let detached = log.advance_log_start(end.plus(-1)).unwrap();
    assert_eq!(detached.len(), segments - 1);
    drop(detached);
    drop(log);
    let log = open(dir.path(), small_config(), &clock);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), end.plus(-1));
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    for i in 0..100i64 {
        // Batch i holds offsets 2i, 2i+1; batches 2k and 2k+1 share timestamp 1000 + 10 k,
        // so an equal timestamp must find the earlier of the two.
        log.append(batch("t", 2, 30, 1000 + 10 * (i / 2)), LeaderEpoch(0))
            .unwrap();
    }
    assert!(log.segment_count() > 2);
    let check = |ts: i64, want: Option<(i64, i64)>| {
        let got = log.offset_for_timestamp(ts).unwrap().map(|(t, o)| (t, o.0));
        assert_eq!(got, want, "timestamp {ts}");
    };
    check(0, Some((1000, 0)));
    check(1000, Some((1000, 0)));
    check(1001, Some((1010, 4)));
    for k in 0..50 {
        check(1000 + 10 * k, Some((1000 + 10 * k, 4 * k)));
    }
    check(1255, Some((1260, 104)));
    check(1490, Some((1490, 196)));
    check(1491, None);
}

#[test]
fn sealed_segment_handles_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), small_config(), &clock);
    fill(&mut log, 80, 4, 100, 0);
    assert!(log.segment_count() > 6);
    read_all(&log, 100);
    assert!(
        log.open_sealed_segments() <= 3,
        "{} open",
        log.open_sealed_segments()
    );
}

#[test]
fn leader_stamps_do_not_break_batches_the_client_stamped_differently() {
    // A producer may send any base offset and epoch; the leader overwrites both.
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default(), &clock());
    let mut raw = BytesMut::from(&batch("p", 2, 5, 1)[..]);
    set_base_offset(&mut raw, Offset(999));
    set_partition_leader_epoch(&mut raw, LeaderEpoch(77));
    let info = log.append(raw.freeze(), LeaderEpoch(1)).unwrap();
    assert_eq!(info.base_offset, Offset(0));
    let back = read_all(&log, 1 << 20);
    assert_eq!(back[0].header().base_offset, Offset(0));
    assert_eq!(back[0].header().partition_leader_epoch, LeaderEpoch(1));
}

#[test]
fn no_runway_is_written_ahead_of_flushes_larger_than_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), LogConfig::default(), &clock);
    // A flush of 1 MiB: the rate of a producer at full speed.
    for i in 0..16 {
        log.append(batch(&format!("big{i}"), 64, 1000, 1), LeaderEpoch(0))
            .unwrap();
    }
    log.flush().unwrap();
    assert_eq!(log.extend_runway().unwrap(), None);
    assert_eq!(log.runway_bytes(), 0);
    // A flush of a few KiB: a moderate rate, where the runway pays.
    log.append(batch("small", 4, 100, 1), LeaderEpoch(0))
        .unwrap();
    log.flush().unwrap();
    assert!(log.extend_runway().unwrap().is_some());
    assert!(log.runway_bytes() > 0);
}
