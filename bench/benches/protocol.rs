//! Protocol micro-benchmarks: building a RecordBatch v2 of 100 x 1 KiB records (encode +
//! CRC-32C), validating one (header + CRC), and decoding its records.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_protocol::batch::{BatchBuilder, RecordBatch};

fn build_batch(value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::with_capacity(Default::default(), 100 * (value.len() + 16));
    for i in 0..100i64 {
        b.append(1_700_000_000_000 + i, Some(b"key-0001"), Some(value), &[]);
    }
    b.build()
}

fn batches(c: &mut Criterion) {
    let value = vec![0x5au8; 1024];
    let batch = build_batch(&value);
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("build_100x1KiB_with_crc", |b| {
        b.iter(|| build_batch(&value))
    });
    group.bench_function("validate_100x1KiB", |b| {
        b.iter(|| RecordBatch::validate(batch.clone()).unwrap())
    });
    let valid = RecordBatch::validate(batch.clone()).unwrap();
    group.bench_function("decode_records_100x1KiB", |b| {
        b.iter(|| valid.records().unwrap().map(|r| r.unwrap()).count())
    });
    group.finish();
}

criterion_group!(benches, batches);
criterion_main!(benches);
