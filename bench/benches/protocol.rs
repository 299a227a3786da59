//! Protocol micro-benchmarks: building a RecordBatch v2 of 100 x 1 KiB records (encode +
//! CRC-32C), validating one (header + CRC), decoding its records, and decoding a produce
//! request that carries six such batches (what the broker does per produce frame).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_protocol::batch::{BatchBuilder, RecordBatch};
use sluice_protocol::messages::{ProducePartition, ProduceRequest, ProduceTopic};
use sluice_protocol::{decode_request, ApiKey, PartitionId, Request, RequestHeader};

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
        b.iter(|| {
            for record in valid.records().unwrap() {
                black_box(record.unwrap());
            }
        })
    });
    group.finish();
}

fn requests(c: &mut Criterion) {
    let batch = build_batch(&[0x5au8; 1024]);
    let request = Request::Produce(ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topics: vec![ProduceTopic {
            name: "orders".into(),
            partitions: (0..6)
                .map(|p| ProducePartition {
                    partition: PartitionId(p),
                    records: batch.clone(),
                })
                .collect(),
        }],
    });
    let mut buf = BytesMut::new();
    request
        .encode(&RequestHeader::new(ApiKey::Produce, 7, "bench"), &mut buf)
        .unwrap();
    let payload = buf.freeze();
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("decode_produce_6x100x1KiB", |b| {
        b.iter(|| decode_request(payload.clone()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, batches, requests);
criterion_main!(benches);
