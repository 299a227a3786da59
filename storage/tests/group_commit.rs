//! SharedLog under concurrent appenders: every append gets unique, contiguous offsets and is
//! durable when it returns; one fsync may cover several appends (counted, not asserted:
//! how many depends on scheduling, which BENCHMARKS.md measures).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use sluice_protocol::{LeaderEpoch, Offset};
use sluice_storage::{Clock, Durability, LogConfig, PartitionLog, SharedLog};

#[test]
fn concurrent_fsync_appends_are_all_durable_and_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    };
    let log = Arc::new(SharedLog::new(
        PartitionLog::open(dir.path(), config, clock() as Arc<dyn Clock>).unwrap(),
    ));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        let info = log
                            .append(batch(&format!("t{t}-{i}"), 3, 200, 1), LeaderEpoch(0))
                            .unwrap();
                        assert!(
                            log.flushed_offset() > info.last_offset,
                            "acknowledged means flushed"
                        );
                        info
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut bases = BTreeSet::new();
    for t in threads {
        for info in t.join().unwrap() {
            assert!(bases.insert(info.base_offset.0));
        }
    }
    let expected: BTreeSet<i64> = (0..320).map(|i| i * 3).collect();
    assert_eq!(bases, expected);
    assert_eq!(log.flushed_offset(), Offset(960));
    eprintln!(
        "320 appends from 8 threads took {} fsyncs",
        log.fsync_count()
    );
    assert!(log.fsync_count() <= 320);
}

#[test]
fn truncation_fails_waiters_of_cut_data_and_replicated_mode_does_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::Replicated {
            flush_interval_ms: 1000,
        },
        ..LogConfig::default()
    };
    let log =
        SharedLog::new(PartitionLog::open(dir.path(), config, clock() as Arc<dyn Clock>).unwrap());
    log.append(batch("a", 2, 10, 1), LeaderEpoch(0)).unwrap();
    assert_eq!(
        log.flushed_offset(),
        Offset(0),
        "replicated durability acks before fsync"
    );
    log.flush().unwrap();
    assert_eq!(log.flushed_offset(), Offset(2));
    let (_, ticket) = log
        .append_no_wait(batch("b", 2, 10, 1), LeaderEpoch(0))
        .unwrap();
    log.truncate_to(Offset(2)).unwrap();
    log.append(batch("c", 2, 10, 1), LeaderEpoch(1)).unwrap();
    assert!(
        log.wait_durable(ticket).is_err(),
        "the batch this ticket waited for was cut"
    );
    log.flush().unwrap();
    assert_eq!(log.flushed_offset(), Offset(4));
}

#[test]
fn a_retired_log_writes_nothing_more_into_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::new(
        PartitionLog::open(dir.path(), small_config(), clock() as Arc<dyn Clock>).unwrap(),
    );
    let (_, pending) = log
        .append_no_wait(batch("before", 2, 100, 1), LeaderEpoch(0))
        .unwrap();
    log.retire();
    // The topic is deleted and its directory re-created empty by a new topic of that name.
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::create_dir(dir.path()).unwrap();
    let err = log
        .append_no_wait(batch("after", 1, 100, 2), LeaderEpoch(0))
        .unwrap_err();
    assert!(
        matches!(err, sluice_storage::StorageError::Deleted { .. }),
        "{err}"
    );
    assert!(
        log.wait_durable(pending).is_err(),
        "unflushed data of a deleted log is not acked"
    );
    assert!(log.flush().is_err());
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        files.is_empty(),
        "nothing written into the new directory: {files:?}"
    );
}
