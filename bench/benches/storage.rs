//! Storage micro-benchmarks: append throughput for 1 KiB records in 16 KiB and 1 MiB
//! batches under each durability mode, sequential read throughput, and group commit with 1,
//! 4 and 16 concurrent appenders. Data lives under the target directory (the project disk),
//! so compare with `dd ... conv=fdatasync` on the same disk (bench/storage-baseline.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_protocol::batch::BatchBuilder;
use sluice_protocol::{LeaderEpoch, Offset};
use sluice_storage::{Clock, Durability, LogConfig, PartitionLog, SharedLog, SystemClock};

const RECORD_BYTES: usize = 1024;

fn batch_of(records: usize) -> Bytes {
    let value = vec![0xa5u8; RECORD_BYTES];
    let mut b = BatchBuilder::new();
    for _ in 0..records {
        b.append(1_700_000_000_000, None, Some(&value), &[]);
    }
    b.build()
}

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir under target/")
}

fn shared_log(dir: &std::path::Path, durability: Durability) -> SharedLog {
    let config = LogConfig {
        durability,
        retention_ms: None,
        ..LogConfig::default()
    };
    SharedLog::new(
        PartitionLog::open(dir, config, Arc::new(SystemClock) as Arc<dyn Clock>).unwrap(),
    )
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for (name, records) in [("16KiB", 16usize), ("1MiB", 1024)] {
        let batch = batch_of(records);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        for (mode, durability) in [
            ("fsync", Durability::Fsync),
            (
                "replicated",
                Durability::Replicated {
                    flush_interval_ms: 1000,
                },
            ),
        ] {
            let dir = bench_dir();
            let log = shared_log(dir.path(), durability);
            group.bench_function(BenchmarkId::new(mode, name), |b| {
                b.iter(|| log.append(batch.clone(), LeaderEpoch(0)).unwrap())
            });
        }
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let dir = bench_dir();
    let log = shared_log(
        dir.path(),
        Durability::Replicated {
            flush_interval_ms: 1000,
        },
    );
    let batch = batch_of(16);
    for _ in 0..4096 {
        log.append(batch.clone(), LeaderEpoch(0)).unwrap(); // 64 MiB, in the page cache
    }
    let end = log.read().log_end_offset();
    let mut group = c.benchmark_group("read");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(1 << 20));
    let mut offset = Offset(0);
    group.bench_function("1MiB_from_page_cache", |b| {
        b.iter(|| {
            let log = log.read();
            let bytes = log.read(offset, 1 << 20, Offset(i64::MAX)).unwrap();
            offset = offset.plus((bytes.len() / batch.len() * 16) as i64);
            if offset >= end {
                offset = Offset(0);
            }
            bytes
        })
    });
    group.finish();
}

/// K threads appending 16 KiB batches in fsync mode: throughput, and appends per fsync.
fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_commit");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let batch = batch_of(16);
    for appenders in [1u64, 4, 16] {
        let dir = bench_dir();
        let log = Arc::new(shared_log(dir.path(), Durability::Fsync));
        group.throughput(Throughput::Bytes(batch.len() as u64 * appenders));
        let (mut appends, fsyncs_before) = (0u64, log.fsync_count());
        group.bench_function(BenchmarkId::new("appenders", appenders), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..appenders {
                        let (log, batch) = (log.clone(), batch.clone());
                        s.spawn(move || {
                            for _ in 0..iters {
                                log.append(batch.clone(), LeaderEpoch(0)).unwrap();
                            }
                        });
                    }
                });
                appends += iters * appenders;
                start.elapsed()
            })
        });
        let fsyncs = log.fsync_count() - fsyncs_before;
        eprintln!(
            "group_commit/appenders/{appenders}: {appends} appends, {fsyncs} fsyncs, {:.2} appends per fsync",
            appends as f64 / fsyncs.max(1) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, append, read, group_commit);
criterion_main!(benches);
