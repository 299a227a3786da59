//! The log cleaner at the storage boundary: a property test against a model (random keyed
//! writes and tombstones, compaction at random points, reopens: what reads back is the
//! latest value of each key at its original offset, and tombstones go once
//! `delete_retention_ms` has passed), the crash protocol (a cleaner interrupted at each step
//! of the `.cleaned` / `.swap` swap, and the next open), and the rules around it (dirty
//! ratio, compaction lag, the bound, the active segment, idempotent producers' last
//! batches, compressed batches, gaps for followers and fetches).

mod common;

use common::{batch, clock, open};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use sluice_protocol::batch::{BatchBuilder, Batches, Compression, ProducerStamp, RecordBatch};
use sluice_protocol::{LeaderEpoch, Offset};
use sluice_storage::{
    CleanReport, Cleaned, CleanupPolicy, Clock, LogConfig, PartitionLog, Throttle, TxnOutcomes,
};

const RETENTION_MS: i64 = 10_000;
const MAP_BYTES: usize = 64 << 20;

/// One record as the model and the log hold it: key and value (`None`: a tombstone).
type Entry = (Vec<u8>, Option<Vec<u8>>);

fn compact_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2048,
        index_interval_bytes: 256,
        retention_ms: Some(1),
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: RETENTION_MS,
        min_cleanable_dirty_ratio: 0.5,
        ..LogConfig::default()
    }
}

/// A batch of keyed records (key, value or tombstone), compressed with `codec`.
fn keyed_batch(records: &[Entry], ts: i64, codec: Compression, stamp: ProducerStamp) -> Bytes {
    let mut b = BatchBuilder::with_capacity(stamp, 0);
    for (key, value) in records {
        b.append(ts, Some(key), value.as_deref(), &[]);
    }
    b.build_compressed(codec, None).unwrap()
}

/// Every batch the log holds, read from its start in pieces of `max_bytes` as a consumer
/// does: each read starts after the last batch returned, landing on the next batch where
/// the cleaner left a gap. A read may end before the log end: the cleaner may have removed
/// the last records of the last sealed segment.
fn read_all(log: &PartitionLog, max_bytes: u32) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let bytes = log.read(offset, max_bytes, Offset(i64::MAX)).unwrap();
        if bytes.is_empty() {
            break;
        }
        for batch in Batches::new(bytes) {
            let batch = batch.expect("the log returns valid batches");
            assert!(batch.header().next_offset() > offset, "reads move forward");
            offset = batch.header().next_offset();
            out.push(batch);
        }
    }
    assert!(offset <= log.log_end_offset());
    out
}

/// Every record the log holds, by offset (reading from the log start, through gaps).
fn records(log: &PartitionLog) -> BTreeMap<i64, Entry> {
    let mut out = BTreeMap::new();
    for batch in read_all(log, 700) {
        for record in batch.records().unwrap() {
            let record = record.unwrap();
            let entry = (
                record.key.unwrap().to_vec(),
                record.value.map(|v| v.to_vec()),
            );
            assert!(out.insert(record.offset.0, entry).is_none());
        }
    }
    out
}

/// Each idempotent producer's last batch in the log, as the broker's producer state
/// tracks it (what the cleaner keeps).
fn last_batches(log: &PartitionLog) -> HashMap<i64, Offset> {
    read_all(log, 1 << 20)
        .iter()
        .map(|b| (b.header().producer_id, b.header().base_offset))
        .filter(|(id, _)| *id >= 0)
        .collect()
}

/// Plans and runs a cleaning of every sealed segment (`force`: whatever the dirty ratio)
/// without swapping it in; panics when there is nothing to clean.
fn run_cleaning(log: &PartitionLog, force: bool) -> Cleaned {
    log.plan_cleaning(log.log_end_offset(), force)
        .unwrap()
        .expect("something to clean")
        .run(MAP_BYTES, &mut Throttle::unlimited(), &last_batches(log))
        .unwrap()
}

/// Plans, runs and swaps one cleaning below `max_offset`; false when there was nothing to do.
fn clean(log: &mut PartitionLog, max_offset: Offset, force: bool) -> bool {
    let Some(plan) = log.plan_cleaning(max_offset, force).unwrap() else {
        return false;
    };
    let cleaned = plan
        .run(MAP_BYTES, &mut Throttle::unlimited(), &last_batches(log))
        .unwrap();
    let report = log.swap_cleaned(cleaned).unwrap();
    assert!(report.swapped);
    true
}

/// Cleans every sealed segment, whatever the dirty ratio.
fn clean_all(log: &mut PartitionLog) -> bool {
    clean(log, Offset(i64::MAX), true)
}

/// Cleans every sealed segment, whatever the dirty ratio, with the transactions' outcomes.
fn clean_all_with(log: &mut PartitionLog, outcomes: &TxnOutcomes) -> CleanReport {
    let plan = log
        .plan_cleaning(Offset(i64::MAX), true)
        .unwrap()
        .expect("something to clean")
        .with_transactions(outcomes.clone());
    let cleaned = plan
        .run(MAP_BYTES, &mut Throttle::unlimited(), &last_batches(log))
        .unwrap();
    log.swap_cleaned(cleaned).unwrap()
}

fn no_cleaner_files_left(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".cleaned") && !name.ends_with(".swap"),
            "{name} left behind"
        );
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        records: Vec<(u8, bool)>,
        codec: Compression,
    },
    Roll,
    Clean {
        force: bool,
        below_end: bool,
    },
    Advance {
        ms: i64,
    },
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (
            prop::collection::vec((0u8..12, prop::bool::weighted(0.15)), 1..6),
            prop::sample::select(Compression::ALL.to_vec()),
        )
            .prop_map(|(records, codec)| Op::Write { records, codec }),
        1 => Just(Op::Roll),
        2 => (any::<bool>(), any::<bool>())
            .prop_map(|(force, below_end)| Op::Clean { force, below_end }),
        1 => (0i64..4_000).prop_map(|ms| Op::Advance { ms }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

/// Checks the log against every record ever written (`model`, by offset): what it holds
/// is a subset at the same offsets, holding the latest record of every key (a tombstone
/// may be gone).
fn check_against(log: &PartitionLog, model: &BTreeMap<i64, Entry>) {
    let held = records(log);
    for (offset, entry) in &held {
        assert_eq!(model.get(offset), Some(entry), "offset {offset}");
    }
    let mut latest: BTreeMap<&[u8], (i64, &Entry)> = BTreeMap::new();
    for (offset, entry) in model {
        latest.insert(&entry.0, (*offset, entry));
    }
    for (key, (offset, entry)) in latest {
        if entry.1.is_some() {
            assert_eq!(held.get(&offset), Some(entry), "latest of key {key:?}");
        }
    }
    assert_eq!(
        log.log_end_offset().0,
        model.keys().last().map_or(0, |o| o + 1)
    );
}

fn run_ops(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    let mut model: BTreeMap<i64, Entry> = BTreeMap::new();
    let mut n = 0u32;
    for op in ops {
        match op {
            Op::Write { records, codec } => {
                let entries: Vec<Entry> = records
                    .iter()
                    .map(|&(key, tombstone)| {
                        n += 1;
                        let value = (!tombstone).then(|| format!("v{n}-{}", "x".repeat(40)));
                        (vec![b'k', key], value.map(String::into_bytes))
                    })
                    .collect();
                let ts = clock.now_ms();
                let batch = keyed_batch(&entries, ts, codec, ProducerStamp::default());
                let info = log.append(batch, LeaderEpoch(0)).unwrap();
                for (i, entry) in entries.into_iter().enumerate() {
                    model.insert(info.base_offset.0 + i as i64, entry);
                }
            }
            Op::Roll => log.roll().unwrap(),
            Op::Clean { force, below_end } => {
                let bound = if below_end {
                    Offset(log.log_end_offset().0 / 2)
                } else {
                    log.log_end_offset()
                };
                clean(&mut log, bound, force);
            }
            Op::Advance { ms } => clock.advance(ms),
            Op::Reopen { clean } => {
                if clean {
                    log.close().unwrap();
                } else {
                    drop(log);
                }
                log = open(dir.path(), compact_config(), &clock);
            }
        }
        check_against(&log, &model);
    }
    // Everything sealed and cleaned (which dates every tombstone left), then cleaned again
    // past the tombstones' retention: exactly the latest live value of each key is left,
    // at its offset.
    log.roll().unwrap();
    clean_all(&mut log);
    clock.advance(RETENTION_MS + 1);
    clean_all(&mut log);
    let mut expected: BTreeMap<Vec<u8>, (i64, Entry)> = BTreeMap::new();
    for (offset, entry) in &model {
        expected.insert(entry.0.clone(), (*offset, entry.clone()));
    }
    let expected: BTreeMap<i64, Entry> = expected
        .into_values()
        .filter(|(_, entry)| entry.1.is_some())
        .collect();
    assert_eq!(records(&log), expected);
    drop(log);
    let log = open(dir.path(), compact_config(), &clock);
    assert_eq!(records(&log), expected, "after an unclean reopen");
    no_cleaner_files_left(dir.path());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_the_latest_value_of_each_key_at_its_offset(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        run_ops(ops);
    }
}

/// Fills a compacted log with `rounds` writes of keys 0..n_keys (one record per batch),
/// then seals it. Returns the latest value of each key by offset.
fn fill_rounds(log: &mut PartitionLog, rounds: usize, n_keys: u8, ts: i64) -> BTreeMap<i64, Entry> {
    let mut latest: BTreeMap<Vec<u8>, (i64, Entry)> = BTreeMap::new();
    for round in 0..rounds {
        for key in 0..n_keys {
            let entry: Entry = (
                vec![b'k', key],
                Some(format!("r{round}-{}", "y".repeat(60)).into_bytes()),
            );
            let batch = keyed_batch(
                std::slice::from_ref(&entry),
                ts,
                Compression::None,
                ProducerStamp::default(),
            );
            let info = log.append(batch, LeaderEpoch(1)).unwrap();
            latest.insert(entry.0.clone(), (info.base_offset.0, entry));
        }
    }
    log.roll().unwrap();
    latest.into_values().collect()
}

/// The steps at which a crash may stop a swap, simulated by doing by hand what the swap
/// would have done up to there.
#[derive(Clone, Copy, Debug)]
enum CrashAt {
    /// `.cleaned` files written, nothing renamed.
    Cleaned,
    /// The indexes renamed to `.swap`, the log not yet (not committed).
    IndexesSwapped,
    /// All three renamed to `.swap` (committed), the old segments all there.
    Swapped,
    /// Committed, the first old segment deleted.
    FirstOldDeleted,
    /// Committed, every old segment deleted.
    OldDeleted,
    /// The indexes renamed to their final names, the log still `.swap`.
    IndexesFinal,
}

fn suffixed(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn rename_suffix(path: &Path, from: &str, to: &str) {
    let name = path.to_string_lossy();
    let target = format!("{}{to}", name.strip_suffix(from).unwrap());
    fs::rename(path, target).unwrap();
}

#[test]
fn a_cleaner_interrupted_at_any_step_leaves_a_readable_log_with_every_latest_value() {
    for crash in [
        CrashAt::Cleaned,
        CrashAt::IndexesSwapped,
        CrashAt::Swapped,
        CrashAt::FirstOldDeleted,
        CrashAt::OldDeleted,
        CrashAt::IndexesFinal,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let config = LogConfig {
            segment_bytes_max: 4096,
            ..compact_config()
        };
        let mut log = open(dir.path(), config.clone(), &clock);
        let expected = fill_rounds(&mut log, 12, 10, clock.now_ms());
        let before = records(&log);
        // Segments of 4 KiB, cleaned into one (one group, one swap to interrupt).
        log.reconfigure(LogConfig {
            segment_bytes_max: 1 << 20,
            ..config.clone()
        });
        let cleaned = run_cleaning(&log, false);
        // The process dies: nothing is swapped, the files stay as they are.
        std::mem::forget(cleaned);
        let old_logs: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        drop(log);

        let cleaned_files = suffixed(dir.path(), ".cleaned");
        assert_eq!(cleaned_files.len(), 3, "{crash:?}: one group, three files");
        let is_log = |p: &Path| p.to_string_lossy().ends_with(".log.cleaned");
        let committed = !matches!(crash, CrashAt::Cleaned | CrashAt::IndexesSwapped);
        if !matches!(crash, CrashAt::Cleaned) {
            for path in cleaned_files.iter().filter(|p| !is_log(p)) {
                rename_suffix(path, ".cleaned", ".swap");
            }
        }
        if committed {
            let log_file = cleaned_files.iter().find(|p| is_log(p)).unwrap();
            rename_suffix(log_file, ".cleaned", ".swap");
        }
        let mut old_sorted = old_logs.clone();
        old_sorted.sort();
        let replaced: Vec<_> = old_sorted[..old_sorted.len() - 1].to_vec(); // all but the active
        let delete_old = |paths: &[std::path::PathBuf]| {
            for path in paths {
                for ext in ["log", "index", "timeindex"] {
                    let _ = fs::remove_file(path.with_extension(ext));
                }
            }
        };
        match crash {
            CrashAt::FirstOldDeleted => delete_old(&replaced[..1]),
            CrashAt::OldDeleted => delete_old(&replaced),
            CrashAt::IndexesFinal => {
                delete_old(&replaced);
                for path in suffixed(dir.path(), "index.swap") {
                    rename_suffix(&path, ".swap", "");
                }
            }
            _ => {}
        }

        let log = open(dir.path(), config.clone(), &clock);
        assert_eq!(
            log.recovery_report().cleaner_swaps_completed,
            usize::from(committed),
            "{crash:?}"
        );
        no_cleaner_files_left(dir.path());
        let after = records(&log);
        if committed {
            assert_eq!(after, expected, "{crash:?}: the cleaned log");
        } else {
            assert_eq!(after, before, "{crash:?}: the log as it was");
        }
        // The log works on: the next cleaning and appends.
        let mut log = log;
        clean_all(&mut log);
        assert_eq!(records(&log), expected, "{crash:?}: cleaned again");
        log.append(batch("after", 1, 10, clock.now_ms()), LeaderEpoch(1))
            .unwrap();
    }
}

#[test]
fn the_dirty_ratio_and_the_compaction_lag_decide_when_a_log_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig {
        min_compaction_lag_ms: 5_000,
        ..compact_config()
    };
    let mut log = open(dir.path(), config, &clock);
    fill_rounds(&mut log, 5, 10, clock.now_ms());
    let end = log.log_end_offset();
    assert!(
        log.plan_cleaning(end, false).unwrap().is_none(),
        "records younger than the lag are not cleanable"
    );
    clock.advance(5_000);
    assert!(clean(&mut log, end, false), "all dirty: ratio 1");
    assert_eq!(log.cleaner_first_dirty_offset(), end);
    let cleaned_size = log.size_bytes();
    // A little more data: the dirty share is below one half.
    fill_rounds(&mut log, 1, 1, clock.now_ms());
    clock.advance(5_000);
    assert!(log.size_bytes() - cleaned_size < cleaned_size);
    assert!(log
        .plan_cleaning(log.log_end_offset(), false)
        .unwrap()
        .is_none());
    fill_rounds(&mut log, 3, 10, clock.now_ms());
    clock.advance(5_000);
    assert!(log
        .plan_cleaning(log.log_end_offset(), false)
        .unwrap()
        .is_some());
}

/// `max.compaction.lag.ms` (KIP-354): a dirty segment past it is cleaned whatever the
/// dirty ratio, and the active segment of a compacted log rolls at least that often, so a
/// quiet topic's superseded values do not stay readable without bound.
#[test]
fn the_max_compaction_lag_cleans_below_the_dirty_ratio_and_rolls_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig {
        max_compaction_lag_ms: 60_000,
        ..compact_config()
    };
    let mut log = open(dir.path(), config, &clock);
    fill_rounds(&mut log, 5, 10, clock.now_ms());
    let end = log.log_end_offset();
    assert!(clean(&mut log, end, false), "all dirty: ratio 1");
    let cleaned_size = log.size_bytes();
    // A little more: the dirty share is below one half, and stays in the active segment
    // until the lag has passed since it began.
    let append = |log: &mut PartitionLog, key: u8| {
        let entry: Entry = (vec![b'k', key], Some(b"newer".to_vec()));
        let batch = keyed_batch(
            &[entry],
            clock.now_ms(),
            Compression::None,
            ProducerStamp::default(),
        );
        log.append(batch, LeaderEpoch(1)).unwrap();
    };
    append(&mut log, 1);
    assert!(log.size_bytes() - cleaned_size < cleaned_size);
    let segments = log.segment_count();
    clock.advance(30_000);
    append(&mut log, 2);
    assert_eq!(
        log.segment_count(),
        segments,
        "the active segment is younger than the lag"
    );
    assert!(log
        .plan_cleaning(log.log_end_offset(), false)
        .unwrap()
        .is_none());
    clock.advance(30_000);
    append(&mut log, 3);
    assert_eq!(log.segment_count(), segments + 1, "rolled at the lag");
    assert!(
        log.plan_cleaning(log.log_end_offset(), false)
            .unwrap()
            .is_none(),
        "the newly sealed segment's records are younger than the lag"
    );
    clock.advance(30_000);
    let end = log.log_end_offset();
    assert!(
        clean(&mut log, end, false),
        "past the lag: cleaned below the dirty ratio"
    );
    let values: Vec<Entry> = records(&log).into_values().collect();
    let of_key = |key: u8| -> Vec<Option<Vec<u8>>> {
        values
            .iter()
            .filter(|(k, _)| k[..] == [b'k', key])
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        of_key(1),
        [Some(b"newer".to_vec())],
        "the older values of k1 are gone"
    );
}

#[test]
fn only_sealed_segments_below_the_bound_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    fill_rounds(&mut log, 6, 4, clock.now_ms());
    let sealed_end = log.log_end_offset();
    // The active segment holds superseded values too: they stay.
    for _ in 0..3 {
        let entry: Entry = (b"k\x00".to_vec(), Some(b"active".to_vec()));
        log.append(
            keyed_batch(
                &[entry],
                clock.now_ms(),
                Compression::None,
                ProducerStamp::default(),
            ),
            LeaderEpoch(1),
        )
        .unwrap();
    }
    let before = records(&log);
    // A bound in the middle: segments ending above it stay as they are.
    let bound = Offset(sealed_end.0 / 2);
    clean(&mut log, bound, true);
    let after = records(&log);
    for (offset, entry) in &before {
        if *offset >= bound.0 {
            assert_eq!(
                after.get(offset),
                Some(entry),
                "offset {offset} above the bound"
            );
        }
    }
    clean_all(&mut log);
    let after = records(&log);
    let active: Vec<_> = after.range(sealed_end.0..).collect();
    assert_eq!(active.len(), 3, "the active segment is never compacted");
}

#[test]
fn retention_deletes_nothing_under_compact_alone_and_does_under_compact_delete() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    fill_rounds(&mut log, 4, 4, clock.now_ms());
    clock.advance(10);
    assert_eq!(log.apply_retention(log.log_end_offset()).unwrap(), 0);
    log.reconfigure(LogConfig {
        cleanup_policy: CleanupPolicy::CompactDelete,
        ..compact_config()
    });
    assert!(log.apply_retention(log.log_end_offset()).unwrap() > 0);
}

#[test]
fn an_idempotent_producers_last_batch_stays_as_an_empty_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    let stamp = |seq| ProducerStamp {
        producer_id: 42,
        producer_epoch: 3,
        base_sequence: seq,
    };
    let entry = |v: &str| -> Entry { (b"key".to_vec(), Some(v.as_bytes().to_vec())) };
    let ts = clock.now_ms();
    log.append(
        keyed_batch(&[entry("a"), entry("b")], ts, Compression::None, stamp(0)),
        LeaderEpoch(1),
    )
    .unwrap();
    log.append(
        keyed_batch(&[entry("c")], ts, Compression::None, stamp(2)),
        LeaderEpoch(1),
    )
    .unwrap();
    // Producer 42's last batch (offset 2) is superseded by a non-idempotent write.
    log.append(
        keyed_batch(
            &[entry("d")],
            ts,
            Compression::None,
            ProducerStamp::default(),
        ),
        LeaderEpoch(1),
    )
    .unwrap();
    log.roll().unwrap();
    clean_all(&mut log);
    let batches = read_all(&log, 1 << 20);
    let shape: Vec<(i64, i64, i32, i64, i32)> = batches
        .iter()
        .map(|b| {
            let h = b.header();
            (
                h.base_offset.0,
                h.last_offset().0,
                h.records_count,
                h.producer_id,
                h.base_sequence,
            )
        })
        .collect();
    // The first batch of 42 goes; its last stays, empty, with its sequence and offsets.
    assert_eq!(shape, vec![(2, 2, 0, 42, 2), (3, 3, 1, -1, -1)]);
}

#[test]
fn compressed_batches_are_rewritten_with_their_codec() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let clock = clock();
        let mut log = open(dir.path(), compact_config(), &clock);
        let entries: Vec<Entry> = (0..40u8)
            .map(|i| {
                (
                    vec![b'k', i % 20],
                    Some(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "z".repeat(50)).into_bytes()),
                )
            })
            .collect();
        log.append(
            keyed_batch(&entries, clock.now_ms(), codec, ProducerStamp::default()),
            LeaderEpoch(1),
        )
        .unwrap();
        log.roll().unwrap();
        clean_all(&mut log);
        let batches = read_all(&log, 1 << 20);
        assert_eq!(batches.len(), 1);
        let h = batches[0].header();
        assert_eq!(h.compression().unwrap(), codec);
        assert_eq!(
            (h.base_offset.0, h.last_offset().0, h.records_count),
            (0, 39, 20)
        );
        let kept: Vec<i64> = records(&log).keys().copied().collect();
        assert_eq!(kept, (20..40).collect::<Vec<_>>());
    }
}

#[test]
fn records_without_a_key_are_removed_by_the_cleaner() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    log.append(batch("unkeyed", 3, 10, clock.now_ms()), LeaderEpoch(1))
        .unwrap();
    let mut b = BatchBuilder::new();
    b.append(clock.now_ms(), None, Some(b"no key"), &[]);
    b.append(clock.now_ms(), Some(b"k"), Some(b"keyed"), &[]);
    log.append(b.build(), LeaderEpoch(1)).unwrap();
    log.roll().unwrap();
    clean_all(&mut log);
    let batches = read_all(&log, 1 << 20);
    let kept: Vec<(i64, Option<Bytes>)> = batches
        .iter()
        .flat_map(|b| b.records().unwrap().map(|r| r.unwrap()))
        .map(|r| (r.offset.0, r.key))
        .collect();
    // `batch()` keys its records with the tag: the last of them wins.
    assert_eq!(
        kept,
        vec![
            (2, Some(Bytes::from_static(b"unkeyed"))),
            (4, Some(Bytes::from_static(b"k")))
        ]
    );
}

#[test]
fn a_follower_copies_a_compacted_log_with_its_gaps_and_reads_land_on_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut leader = open(&dir.path().join("leader"), compact_config(), &clock);
    let expected = fill_rounds(&mut leader, 8, 5, clock.now_ms());
    clean_all(&mut leader);
    assert_eq!(records(&leader), expected);

    // A consumer at an offset that was compacted away gets the next batch.
    let first_kept = *expected.keys().next().unwrap();
    assert!(first_kept > 0);
    let read = leader.read(Offset(0), 1 << 20, Offset(i64::MAX)).unwrap();
    let first = Batches::new(read).next().unwrap().unwrap();
    assert_eq!(first.header().base_offset.0, first_kept);

    // A follower fetching from its log end, as replication does, ends with the same log.
    let mut follower = open(&dir.path().join("follower"), compact_config(), &clock);
    loop {
        let at = follower.log_end_offset();
        let fetched = leader.read(at, 300, Offset(i64::MAX)).unwrap();
        if fetched.is_empty() {
            break;
        }
        follower.append_as_follower(fetched).unwrap();
    }
    assert_eq!(records(&follower), expected);
    assert_eq!(
        follower.log_end_offset().0,
        expected.keys().last().unwrap() + 1
    );
    // Overlaps are still refused.
    let again = leader
        .read(Offset(first_kept), 1 << 20, Offset(i64::MAX))
        .unwrap();
    assert!(follower.append_as_follower(again).is_err());
}

#[test]
fn a_small_offset_map_cleans_in_several_runs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    let expected = fill_rounds(&mut log, 10, 30, clock.now_ms());
    let mut runs = 0;
    while let Some(plan) = log.plan_cleaning(log.log_end_offset(), false).unwrap() {
        // Room for 20 of the 30 keys: the map fills inside a segment, and the next run
        // goes on from the batch where it stopped.
        let cleaned = plan
            .run(20 * 64, &mut Throttle::unlimited(), &last_batches(&log))
            .unwrap();
        log.swap_cleaned(cleaned).unwrap();
        runs += 1;
        assert!(runs < 200, "the cleaner makes progress");
    }
    assert!(runs > 1, "a small map cleans over several runs");
    clean_all(&mut log);
    assert_eq!(records(&log), expected);
}

#[test]
fn a_stopped_cleaner_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    fill_rounds(&mut log, 5, 5, clock.now_ms());
    let before = records(&log);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let plan = log
        .plan_cleaning(log.log_end_offset(), true)
        .unwrap()
        .unwrap();
    let err = plan
        .run(
            MAP_BYTES,
            &mut Throttle::new(Some(1 << 30), Some(stop)),
            &last_batches(&log),
        )
        .unwrap_err();
    assert!(err.to_string().contains("stopped"), "{err}");
    no_cleaner_files_left(dir.path());
    assert_eq!(records(&log), before);
}

#[test]
fn a_retention_during_a_run_drops_the_groups_it_deleted_and_the_rest_go_in() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::CompactDelete,
        retention_ms: None,
        ..compact_config()
    };
    let mut log = open(dir.path(), config.clone(), &clock);
    let expected = fill_rounds(&mut log, 8, 5, clock.now_ms());
    let cleaned = run_cleaning(&log, true);
    // Retention by size deletes the oldest segments while the run was going on.
    log.reconfigure(LogConfig {
        retention_bytes: Some(log.size_bytes() / 2),
        ..config.clone()
    });
    assert!(log.apply_retention(log.log_end_offset()).unwrap() > 0);
    let start = log.log_start_offset();
    let report = log.swap_cleaned(cleaned).unwrap();
    assert!(report.swapped, "the groups retention left went in");
    assert!(report.segments_replaced > 0);
    no_cleaner_files_left(dir.path());
    let held = records(&log);
    let expected: BTreeMap<i64, Entry> = expected
        .into_iter()
        .filter(|(o, _)| *o >= start.0)
        .collect();
    for (offset, entry) in &expected {
        assert_eq!(held.get(offset), Some(entry), "latest at {offset}");
    }
    assert!(
        held.len() < 20,
        "the rest was compacted: {} records",
        held.len()
    );

    // Retention that deletes everything the run cleaned: nothing to swap, nothing lost.
    fill_rounds(&mut log, 8, 5, clock.now_ms());
    let cleaned = run_cleaning(&log, true);
    log.reconfigure(LogConfig {
        retention_ms: Some(1),
        ..config
    });
    clock.advance(10);
    assert!(log.apply_retention(log.log_end_offset()).unwrap() > 0);
    let report = log.swap_cleaned(cleaned).unwrap();
    assert_eq!(report.segments_replaced, 0);
    no_cleaner_files_left(dir.path());
    records(&log);
}

#[test]
fn a_truncation_below_the_cleaner_checkpoint_lowers_it_on_disk_and_discards_a_planned_run() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let config = compact_config();
    let mut log = open(dir.path(), config.clone(), &clock);
    fill_rounds(&mut log, 6, 10, clock.now_ms());
    assert!(clean_all(&mut log));
    let checkpoint = log.cleaner_first_dirty_offset();
    assert!(
        checkpoint > Offset(20),
        "the run mapped the log: {checkpoint}"
    );

    // A plan made before a truncation does not swap in after it: its map may count a
    // record the truncation removed as the latest of its key.
    fill_rounds(&mut log, 2, 10, clock.now_ms());
    let cleaned = run_cleaning(&log, true);
    let cut = Offset(15);
    log.truncate_to(cut).unwrap();
    let report = log.swap_cleaned(cleaned).unwrap();
    assert!(
        !report.swapped,
        "a run planned before the truncation is discarded"
    );
    no_cleaner_files_left(dir.path());
    assert!(log.cleaner_first_dirty_offset() <= cut);

    // On disk too: after a restart the offsets above the cut are dirty, mapped again.
    log.close().unwrap();
    let log = open(dir.path(), config, &clock);
    assert!(log.log_end_offset() <= cut);
    assert!(
        log.cleaner_first_dirty_offset() <= log.log_end_offset(),
        "the checkpoint on disk was lowered with the cut"
    );
}

#[test]
fn a_truncation_into_the_gap_the_cleaner_left_at_a_segments_end_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    let ts = clock.now_ms();
    let entry =
        |k: &str, v: &str| -> Entry { (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec())) };
    let append = |log: &mut PartitionLog, records: &[Entry]| {
        let batch = keyed_batch(records, ts, Compression::None, ProducerStamp::default());
        log.append(batch, LeaderEpoch(1)).unwrap()
    };
    // Offsets 0-2 in the first segment, a batch each, then b and c written again in the
    // next one: the cleaner removes the first segment's last two batches, which leaves it
    // ending in a gap (its end offset is still 3).
    for key in ["a", "b", "c"] {
        append(&mut log, &[entry(key, "1")]);
    }
    log.roll().unwrap();
    append(&mut log, &[entry("b", "2"), entry("c", "2")]);
    log.roll().unwrap();
    assert!(clean_all(&mut log));
    let kept: Vec<i64> = records(&log).into_keys().collect();
    assert_eq!(kept, vec![0, 3, 4]);
    // A follower cut to offset 1 (a batch boundary of the original log, in that gap) ends
    // at 1, not at the segment's old end 3, and its next record goes at 1.
    log.truncate_to(Offset(1)).unwrap();
    assert_eq!(log.log_end_offset(), Offset(1));
    let next = append(&mut log, &[entry("d", "1")]);
    assert_eq!(next.base_offset, Offset(1));
    let kept: Vec<i64> = records(&log).into_keys().collect();
    assert_eq!(kept, vec![0, 1]);
}

#[test]
fn a_transactional_write_never_supersedes_a_value_it_may_have_been_aborted_over() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    let plain = |key: &[u8], value: &[u8]| {
        keyed_batch(
            &[(key.to_vec(), Some(value.to_vec()))],
            clock.now_ms(),
            Compression::None,
            ProducerStamp::default(),
        )
    };
    log.append(plain(b"k", b"committed"), LeaderEpoch(1))
        .unwrap();
    // A transactional write of the same key (and delete of another) that may be aborted.
    let stamp = ProducerStamp {
        producer_id: 7,
        producer_epoch: 0,
        base_sequence: 0,
    };
    let mut txn = BatchBuilder::with_capacity(stamp, 0).transactional();
    txn.append(clock.now_ms(), Some(b"k"), Some(b"maybe aborted"), &[]);
    txn.append(clock.now_ms(), Some(b"gone"), None, &[]);
    log.append(plain(b"gone", b"kept"), LeaderEpoch(1)).unwrap();
    log.append(txn.build(), LeaderEpoch(1)).unwrap();
    // Other keys until the first segments are sealed.
    for i in 0..40u8 {
        log.append(plain(&[b'x', i % 4], &[i; 64]), LeaderEpoch(1))
            .unwrap();
    }
    clock.advance(RETENTION_MS + 1);
    clean_all(&mut log);
    clean_all(&mut log); // a second run, past the tombstone's retention
    let values: Vec<Entry> = records(&log).into_values().collect();
    for expected in [
        (b"k".to_vec(), Some(b"committed".to_vec())),
        (b"k".to_vec(), Some(b"maybe aborted".to_vec())),
        (b"gone".to_vec(), Some(b"kept".to_vec())),
        (b"gone".to_vec(), None),
    ] {
        assert!(values.contains(&expected), "{expected:?} was cleaned away");
    }
}

#[test]
fn decided_transactions_are_compacted_by_outcome_committed_as_any_record_aborted_away() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    let plain = |key: &[u8], value: &[u8]| {
        keyed_batch(
            &[(key.to_vec(), Some(value.to_vec()))],
            clock.now_ms(),
            Compression::None,
            ProducerStamp::default(),
        )
    };
    let txn = |producer_id: i64, value: &[u8]| {
        let stamp = ProducerStamp {
            producer_id,
            producer_epoch: 0,
            base_sequence: 0,
        };
        let mut b = BatchBuilder::with_capacity(stamp, 0).transactional();
        b.append(clock.now_ms(), Some(b"k"), Some(value), &[]);
        b.append(clock.now_ms(), Some(b"gone"), None, &[]);
        b.build()
    };
    log.append(plain(b"k", b"first"), LeaderEpoch(1)).unwrap();
    log.append(plain(b"gone", b"deleted later"), LeaderEpoch(1))
        .unwrap();
    // Producer 7 commits "committed" (and deletes "gone"); producer 8 then writes
    // "aborted", which its abort marker (offset `abort_marker`) discards.
    log.append(txn(7, b"committed"), LeaderEpoch(1)).unwrap();
    let aborted_first = log.log_end_offset();
    log.append(txn(8, b"aborted"), LeaderEpoch(1)).unwrap();
    let abort_marker = log.log_end_offset();
    for i in 0..40u8 {
        log.append(plain(&[b'x', i % 4], &[i; 64]), LeaderEpoch(1))
            .unwrap();
    }
    let outcomes = TxnOutcomes {
        aborted: vec![(8, aborted_first, abort_marker)],
    };
    for run in 0..2 {
        // Twice: the first run dates the committed tombstone (its delete horizon), the
        // second, past its retention, removes it.
        if run == 1 {
            clock.advance(RETENTION_MS + 1);
        }
        clean_all_with(&mut log, &outcomes);
    }
    let values: Vec<Entry> = records(&log).into_values().collect();
    let of = |key: &[u8]| -> Vec<Option<Vec<u8>>> {
        values
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        of(b"k"),
        [Some(b"committed".to_vec())],
        "the committed write superseded the first, the aborted one is gone"
    );
    assert!(
        of(b"gone").is_empty(),
        "the committed delete took the value, then expired itself: {:?}",
        of(b"gone")
    );
}

/// A tombstone expires `delete.retention.ms` after the broker first cleaned it (KIP-534's
/// delete horizon, in its batch's header), not after its own timestamp, which the producer
/// set: one backfilling events of last year would otherwise have its deletes cleaned away
/// at the first run, before a consumer behind had read them. The horizon is in the batch,
/// so it holds across a reopen and later rewrites, and the records keep their timestamps.
#[test]
fn a_tombstone_with_an_old_timestamp_is_kept_for_the_retention_after_its_first_cleaning() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    let year_ago = clock.now_ms() - 365 * 24 * 3600 * 1000;
    for value in [Some(b"old".to_vec()), None] {
        let entry = (b"gone".to_vec(), value);
        let batch = keyed_batch(
            &[entry],
            year_ago,
            Compression::None,
            ProducerStamp::default(),
        );
        log.append(batch, LeaderEpoch(1)).unwrap();
    }
    fill_rounds(&mut log, 10, 4, year_ago);
    let tombstone_of_gone = |log: &PartitionLog| -> Vec<(Option<i64>, i64)> {
        read_all(log, 1 << 20)
            .iter()
            .flat_map(|batch| {
                let horizon = batch.header().delete_horizon();
                let records: Vec<_> = batch.records().unwrap().map(Result::unwrap).collect();
                records
                    .into_iter()
                    .filter(|r| r.key.as_deref() == Some(&b"gone"[..]))
                    .map(move |r| {
                        assert!(r.value.is_none(), "the old value was superseded");
                        (horizon, r.timestamp)
                    })
            })
            .collect()
    };
    let horizon = clock.now_ms() + RETENTION_MS;
    assert!(clean_all(&mut log));
    assert_eq!(
        tombstone_of_gone(&log),
        [(Some(horizon), year_ago)],
        "first cleaned just now: kept, dated, its timestamp as it was"
    );
    clock.advance(RETENTION_MS / 2);
    drop(log);
    let mut log = open(dir.path(), compact_config(), &clock);
    fill_rounds(&mut log, 2, 4, year_ago);
    assert!(clean_all(&mut log));
    assert_eq!(
        tombstone_of_gone(&log),
        [(Some(horizon), year_ago)],
        "half the retention later, after a reopen and a rewrite: kept"
    );
    clock.advance(RETENTION_MS / 2);
    fill_rounds(&mut log, 2, 4, year_ago);
    assert!(clean_all(&mut log));
    assert_eq!(tombstone_of_gone(&log), [], "at its horizon: gone");
}

/// A transaction marker whose transaction has no record left is dated by the first run
/// that finds it so (its delete horizon), and removed by a run past the horizon; a marker
/// whose transaction kept a record stays.
#[test]
fn a_marker_of_a_transaction_with_no_records_left_goes_past_its_delete_horizon() {
    use sluice_protocol::control::{ControlMarker, ControlType};
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let mut log = open(dir.path(), compact_config(), &clock);
    let txn = |value: &[u8], sequence: i32| {
        let stamp = ProducerStamp {
            producer_id: 8,
            producer_epoch: 0,
            base_sequence: sequence,
        };
        let mut b = BatchBuilder::with_capacity(stamp, 0).transactional();
        b.append(clock.now_ms(), Some(b"t"), Some(value), &[]);
        b.build()
    };
    let marker = |kind| {
        let marker = ControlMarker {
            kind,
            coordinator_epoch: 0,
        };
        marker.batch(8, 0, clock.now_ms())
    };
    // Producer 8 aborts one transaction, then commits one whose record stays.
    let aborted_first = log
        .append(txn(b"aborted", 0), LeaderEpoch(1))
        .unwrap()
        .base_offset;
    let abort_at = log
        .append(marker(ControlType::Abort), LeaderEpoch(1))
        .unwrap()
        .base_offset;
    log.append(txn(b"committed", 1), LeaderEpoch(1)).unwrap();
    let commit_at = log
        .append(marker(ControlType::Commit), LeaderEpoch(1))
        .unwrap()
        .base_offset;
    fill_rounds(&mut log, 10, 4, clock.now_ms());
    let outcomes = TxnOutcomes {
        aborted: vec![(8, aborted_first, abort_at)],
    };
    let run = |log: &mut PartitionLog| assert!(clean_all_with(log, &outcomes).swapped);
    let markers = |log: &PartitionLog| -> Vec<(Offset, Option<i64>)> {
        read_all(log, 1 << 20)
            .iter()
            .filter(|b| b.header().is_control())
            .map(|b| {
                ControlMarker::of(b).expect("a marker still, dated or not");
                (b.header().base_offset, b.header().delete_horizon())
            })
            .collect()
    };
    run(&mut log);
    let horizon = clock.now_ms() + RETENTION_MS;
    assert_eq!(
        markers(&log),
        [(abort_at, Some(horizon)), (commit_at, None)],
        "the abort's transaction is empty: dated; the commit's kept its record"
    );
    clock.advance(RETENTION_MS);
    fill_rounds(&mut log, 2, 4, clock.now_ms());
    run(&mut log);
    assert_eq!(markers(&log), [(commit_at, None)], "past its horizon: gone");
}
