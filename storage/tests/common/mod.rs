//! Helpers shared by the storage tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use sluice_protocol::batch::{BatchBuilder, Batches, RecordBatch};
use sluice_protocol::{LeaderEpoch, Offset};
use sluice_storage::{Clock, LogConfig, ManualClock, PartitionLog};

/// A batch of `n` records whose values are `tag-i` padded to `value_len` bytes, stamped with
/// timestamp `ts`.
pub fn batch(tag: &str, n: usize, value_len: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let mut value = format!("{tag}-{i}").into_bytes();
        value.resize(value_len.max(value.len()), b'.');
        b.append(ts, Some(tag.as_bytes()), Some(&value), &[]);
    }
    b.build()
}

/// A small-segment config that exercises rolls and index entries.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        max_open_sealed_segments: 3,
        retention_ms: None,
        ..LogConfig::default()
    }
}

pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_700_000_000_000))
}

pub fn open(dir: &Path, config: LogConfig, clock: &Arc<ManualClock>) -> PartitionLog {
    PartitionLog::open(dir, config, clock.clone() as Arc<dyn Clock>).unwrap()
}

/// Every batch in the log from its start, read in pieces of `max_bytes`, as (base, last,
/// value bytes of the whole batch).
pub fn read_all(log: &PartitionLog, max_bytes: u32) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let bytes = log.read(offset, max_bytes, Offset(i64::MAX)).unwrap();
        if bytes.is_empty() {
            break;
        }
        for batch in Batches::new(bytes) {
            let batch = batch.expect("the log returns valid batches");
            offset = batch.header().next_offset();
            out.push(batch);
        }
    }
    assert_eq!(offset, log.log_end_offset(), "reading stops at the log end");
    out
}

/// (base offset, last offset) of each batch.
pub fn offsets(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
    batches
        .iter()
        .map(|b| (b.header().base_offset.0, b.header().last_offset().0))
        .collect()
}

/// Appends `n_batches` batches of `per_batch` records as leader in epoch `epoch`.
pub fn fill(
    log: &mut PartitionLog,
    n_batches: usize,
    per_batch: usize,
    value_len: usize,
    epoch: i32,
) {
    for i in 0..n_batches {
        log.append(
            batch(
                &format!("b{i}"),
                per_batch,
                value_len,
                1_700_000_000_000 + i as i64,
            ),
            LeaderEpoch(epoch),
        )
        .unwrap();
    }
}
