//! SharedLog under concurrent appenders: every append gets unique, contiguous offsets and is
//! durable when it returns; one fsync may cover several appends (counted, not asserted:
//! how many depends on scheduling, which BENCHMARKS.md measures). The same for async
//! waiters, whose fsyncs a `Flusher` runs.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use common::*;
use sluice_protocol::{LeaderEpoch, Offset};
use sluice_storage::{Clock, Durability, Flusher, LogConfig, PartitionLog, SharedLog};

/// Runs a future to completion on this thread (storage knows no async runtime).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

fn shared(dir: &std::path::Path, flusher: Flusher) -> Arc<SharedLog> {
    let config = LogConfig {
        segment_bytes_max: 64 << 10,
        ..LogConfig::default()
    };
    Arc::new(
        SharedLog::new(PartitionLog::open(dir, config, clock() as Arc<dyn Clock>).unwrap())
            .with_flusher(flusher),
    )
}

#[test]
fn async_waiters_are_woken_by_the_flusher_and_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let log = shared(dir.path(), Flusher::start(2).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        let (info, ticket) = log
                            .append_batches_no_wait(
                                vec![batch(&format!("t{t}-{i}"), 3, 200, 1)],
                                LeaderEpoch(0),
                                true,
                            )
                            .unwrap()
                            .expect("a blocking append appends");
                        log.request_flush();
                        block_on(log.durable(ticket)).unwrap();
                        assert!(log.flushed_offset() > info.last_offset);
                        info.base_offset.0
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let bases: BTreeSet<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(bases, (0..320).map(|i| i * 3).collect());
    assert_eq!(log.flushed_offset(), Offset(960));
    eprintln!("320 async waits took {} fsyncs", log.fsync_count());
    assert!(log.fsync_count() <= 320);
}

#[test]
fn waiters_that_only_await_are_all_covered_even_when_they_register_during_a_flush() {
    // No appender asks for a flush: each waiter's own poll must. One registering while a
    // flush that began before its append runs is covered only by a later one, which its
    // poll has to ask for (it once did not, and such a waiter slept until another came).
    let dir = tempfile::tempdir().unwrap();
    let log = shared(dir.path(), Flusher::start(1).unwrap());
    let (done, finished) = std::sync::mpsc::channel();
    for t in 0..8 {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..40 {
                let (_, ticket) = log
                    .append_no_wait(batch(&format!("t{t}-{i}"), 1, 100, 1), LeaderEpoch(0))
                    .unwrap();
                block_on(log.durable(ticket)).unwrap();
            }
            done.send(()).unwrap();
        });
    }
    // A lost wake-up hangs a waiter forever; the bound turns that hang into a failure and
    // is far above any honest run (320 small fsyncs), so it measures nothing.
    for _ in 0..8 {
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect(
                "a waiter was never woken: its offsets were appended but no flush covered them",
            );
    }
    assert_eq!(log.flushed_offset(), Offset(320));
}

#[test]
fn an_async_waiter_asks_for_the_flush_itself_and_fails_when_its_data_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = shared(dir.path(), Flusher::start(1).unwrap());
    // No request_flush after this append: awaiting asks for the fsync.
    let (_, ticket) = log
        .append_batches_no_wait(vec![batch("a", 2, 10, 1)], LeaderEpoch(0), true)
        .unwrap()
        .unwrap();
    block_on(log.durable(ticket)).unwrap();
    assert_eq!(log.flushed_offset(), Offset(2));

    // A waiter whose data is cut before it awaits fails, fsync or not.
    let (_, cut) = log
        .append_no_wait(batch("b", 2, 10, 1), LeaderEpoch(0))
        .unwrap();
    log.truncate_to(Offset(2)).unwrap();
    let err = block_on(log.durable(cut)).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn a_try_append_appends_nothing_while_the_log_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let log = shared(dir.path(), Flusher::start(1).unwrap());
    let held = log.read();
    let tried = log
        .append_batches_no_wait(vec![batch("a", 2, 10, 1)], LeaderEpoch(0), false)
        .unwrap();
    assert!(tried.is_none(), "the log is held: nothing appended");
    assert_eq!(held.log_end_offset(), Offset(0));
    drop(held);
    let (info, _) = log
        .append_batches_no_wait(
            vec![batch("a", 2, 10, 1), batch("b", 3, 10, 2)],
            LeaderEpoch(0),
            false,
        )
        .unwrap()
        .expect("the log is free");
    assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(4)));
    assert_eq!(info.max_timestamp, 2);
}

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

#[test]
fn an_idle_flusher_writes_a_runway_ahead_under_fsync_durability_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = shared(dir.path(), Flusher::start(1).unwrap());
    let (_, ticket) = log
        .append_no_wait(batch("a", 2, 10, 1), LeaderEpoch(0))
        .unwrap();
    log.request_flush();
    block_on(log.durable(ticket)).unwrap();
    // The flusher writes the runway once nothing waits, after waking the waiter. The bound
    // turns a runway never written into a failure; it measures nothing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while log.read().runway_bytes() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no runway after an idle flush"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }

    // A log quiesced at shutdown (something still holds it) loses its runway for good.
    log.quiesce().unwrap();
    assert_eq!(log.read().runway_bytes(), 0);
    for tag in ["b", "c"] {
        // On the one flusher thread, c's flush runs after b's turn, runway attempt included.
        let (_, ticket) = log
            .append_no_wait(batch(tag, 2, 10, 1), LeaderEpoch(0))
            .unwrap();
        log.request_flush();
        block_on(log.durable(ticket)).unwrap();
    }
    assert_eq!(log.read().runway_bytes(), 0, "no runway after quiesce");

    // Where acknowledgements do not wait for an fsync there is nothing to gain.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        durability: Durability::Replicated {
            flush_interval_ms: 1000,
        },
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config, clock() as Arc<dyn Clock>).unwrap();
    log.append(batch("a", 2, 10, 1), LeaderEpoch(0)).unwrap();
    assert_eq!(log.extend_runway().unwrap(), None);
    assert_eq!(log.runway_bytes(), 0);
}
