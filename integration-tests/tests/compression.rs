//! Compressed batches through a real broker (issue 23): the native producer compresses with
//! each codec, the consumer reads the records back, the segment files hold the batches as
//! the producer compressed them, a timestamp lookup works inside them, and the broker
//! refuses a decompression bomb and a compressed batch whose record count lies, with
//! CORRUPT_MESSAGE and a message that says why, writing nothing and serving on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_client::{
    Admin, Client, Compression, CompressionConfig, Consumer, ConsumerConfig, NewTopic, OffsetSpec,
    PartitionId, Producer, ProducerConfig, ProducerRecord,
};
use sluice_integration_tests::checks::{read_everything, runtime};
use sluice_integration_tests::{cli_ok, segment_batches, BrokerProcess};
use sluice_protocol::batch::{compute_crc, BatchBuilder, Batches};
use sluice_protocol::messages::{ApiKey, Request, RequestHeader, Response};
use sluice_protocol::messages::{
    ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceTopic,
};
use sluice_protocol::ErrorCode;

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

async fn client(broker: &BrokerProcess) -> Client {
    sluice_integration_tests::checks::client(&broker.bootstrap()).await
}

/// A JSON line of record `i`: compressible, as event streams are.
fn json_value(i: usize) -> String {
    format!(
        r#"{{"seq":{i},"user":"user-{}","event":"page_view","page":"/catalog/{}","note":"the customer viewed an item"}}"#,
        i % 97,
        i % 13
    )
}

/// The codec of every batch in `topic`'s segment files under `data`.
fn codecs_on_disk(data: &Path, topic: &str, partitions: i32) -> Vec<Compression> {
    batches_on_disk(data, topic, partitions)
        .into_iter()
        .map(|(codec, _)| codec)
        .collect()
}

/// The codec and record count of every batch in `topic`'s segment files under `data`.
fn batches_on_disk(data: &Path, topic: &str, partitions: i32) -> Vec<(Compression, i32)> {
    let mut batches = Vec::new();
    for p in 0..partitions {
        let dir = data.join("topics").join(format!("{topic}-{p}"));
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let bytes = Bytes::from(segment_batches(&path));
                for batch in Batches::new(bytes) {
                    let header = *batch.unwrap().header();
                    batches.push((header.compression().unwrap(), header.records_count));
                }
            }
        }
    }
    batches
}

#[test]
fn each_codec_round_trips_through_the_broker_and_is_stored_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = BrokerProcess::start(&data, &[]);
    runtime().block_on(async {
        let client = client(&broker).await;
        const N: usize = 3000;
        for codec in CODECS {
            let topic = format!("compressed-{codec}");
            Admin::new(client.clone())
                .create_topic(NewTopic::new(&topic, 2, 1))
                .await
                .unwrap();
            let config = ProducerConfig {
                compression: CompressionConfig::new(codec, None).unwrap(),
                ..ProducerConfig::default()
            };
            let producer = Producer::new(client.clone(), config);
            let mut deliveries = Vec::with_capacity(N);
            for i in 0..N {
                let mut record = ProducerRecord::new(topic.clone(), json_value(i))
                    .key(format!("key-{}", i % 50));
                record.headers = vec![("n".to_string(), Bytes::from(i.to_string()))];
                record.timestamp_ms = Some(1_700_000_000_000 + i as i64);
                deliveries.push(producer.send(record).await.expect("enqueue"));
            }
            producer.flush().await;
            let mut acked = std::collections::HashMap::new();
            for (i, delivery) in deliveries.into_iter().enumerate() {
                let meta = delivery.await.expect("acknowledged");
                acked.insert((meta.partition, meta.offset), i);
            }
            producer.close().await;
            let records = read_everything(&client, &topic, 2, N).await;
            assert_eq!(records.len(), N, "{codec}");
            for record in &records {
                let i = acked[&(record.partition, record.offset)];
                assert_eq!(record.value.as_deref(), Some(json_value(i).as_bytes()));
                assert_eq!(
                    record.key.as_deref(),
                    Some(format!("key-{}", i % 50).as_bytes())
                );
                assert_eq!(
                    record.headers[0].value.as_deref(),
                    Some(i.to_string().as_bytes())
                );
                assert_eq!(record.timestamp_ms, 1_700_000_000_000 + i as i64);
            }
            // Every batch as the producer compressed it. A batch the codec would not shrink
            // is sent uncompressed (the producer's rule): a lone record that lingered alone,
            // whose codec framing outweighs what it saves, never a batch of several.
            let on_disk = batches_on_disk(&data, &topic, 2);
            assert!(on_disk.iter().any(|(c, _)| *c == codec));
            assert!(
                on_disk
                    .iter()
                    .all(|&(c, n)| c == codec || (c == Compression::None && n == 1)),
                "{codec}: the segment files hold (codec, records) {on_disk:?}"
            );
            // A timestamp lookup inside compressed batches: the first record at or after
            // the timestamp of record 1500, on its partition.
            let (&(partition, offset), _) = acked.iter().find(|(_, &i)| i == 1500).unwrap();
            let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default());
            consumer
                .assign(vec![(topic.clone(), partition, OffsetSpec::Earliest)])
                .await
                .unwrap();
            consumer
                .seek(&topic, partition, OffsetSpec::Timestamp(1_700_000_001_500))
                .await
                .unwrap();
            assert_eq!(
                consumer.position(&topic, partition),
                Some(offset),
                "{codec}"
            );
        }
    });
}

#[test]
fn the_cli_produces_compressed_and_consumes_transparently() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = BrokerProcess::start(&data, &[]);
    let bootstrap = broker.bootstrap();
    cli_ok(&bootstrap, &["topic", "create", "cli-zstd"], "");
    let lines: String = (0..200).map(|i| format!("{}\n", json_value(i))).collect();
    cli_ok(
        &bootstrap,
        &[
            "produce",
            "cli-zstd",
            "--compression",
            "zstd",
            "--compression-level",
            "9",
        ],
        &lines,
    );
    let out = cli_ok(
        &bootstrap,
        &[
            "consume",
            "cli-zstd",
            "--from-beginning",
            "--timeout-ms",
            "2000",
        ],
        "",
    );
    assert_eq!(out, lines);
    assert_eq!(codecs_on_disk(&data, "cli-zstd", 1), [Compression::Zstd]);
    // The topic config: `producer` only, and a codec is refused with the reason.
    let described = cli_ok(
        &bootstrap,
        &["topic", "describe", "cli-zstd", "--format", "json"],
        "",
    );
    assert!(
        described.contains(r#""compression.type":"producer""#),
        "{described}"
    );
    let refused = sluice_integration_tests::cli(
        &bootstrap,
        &["topic", "create", "t2", "-c", "compression.type=gzip"],
        "",
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("recompression on the broker is not supported"),
        "{stderr}"
    );
}

/// Sends one Produce request of `batch` to partition 0 of `topic` over a raw connection.
fn produce_raw(broker: &BrokerProcess, topic: &str, batch: Bytes) -> ProducePartitionResponse {
    let request = Request::Produce(ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 10_000,
        topics: vec![ProduceTopic {
            name: topic.to_string(),
            partitions: vec![ProducePartition {
                partition: PartitionId(0),
                records: batch,
            }],
        }],
    });
    let mut payload = BytesMut::new();
    request
        .encode(&RequestHeader::new(ApiKey::Produce, 7, "raw"), &mut payload)
        .unwrap();
    let mut stream = TcpStream::connect(broker.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(&(payload.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(&payload).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).unwrap();
    match Response::decode(ApiKey::Produce, 0, Bytes::from(answer)).unwrap() {
        (_, Some(Response::Produce(response))) => response.topics[0].partitions[0].clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_decompression_bomb_and_a_lying_record_count_are_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    cli_ok(&bootstrap, &["topic", "create", "bombs"], "");
    // 80 MiB of zeros in one record: past the broker's 64 MiB bound, a few KiB to 4 MiB
    // compressed, well inside a 16 MiB request.
    let zeros = vec![0u8; 80 << 20];
    for codec in CODECS {
        let mut builder = BatchBuilder::new();
        builder.append(1_700_000_000_000, None, Some(&zeros), &[]);
        let bomb = builder.build_compressed(codec, None).unwrap();
        assert!(bomb.len() < 8 << 20, "{codec}: {}", bomb.len());
        let answer = produce_raw(&broker, "bombs", bomb);
        assert_eq!(answer.error_code, ErrorCode::CorruptMessage, "{codec}");
        let message = answer.error_message.unwrap_or_default();
        assert!(message.contains("decompression bomb"), "{codec}: {message}");
    }
    // Ten records compressed, but the header says eleven.
    let mut builder = BatchBuilder::new();
    for i in 0..10 {
        builder.append(1_700_000_000_000, None, Some(json_value(i).as_bytes()), &[]);
    }
    let mut lying = builder
        .build_compressed(Compression::Gzip, None)
        .unwrap()
        .to_vec();
    lying[23..27].copy_from_slice(&10i32.to_be_bytes());
    lying[57..61].copy_from_slice(&11i32.to_be_bytes());
    let crc = compute_crc(&lying);
    lying[17..21].copy_from_slice(&crc.to_be_bytes());
    let answer = produce_raw(&broker, "bombs", Bytes::from(lying));
    assert_eq!(answer.error_code, ErrorCode::CorruptMessage);
    assert!(
        answer
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("compressed record batch refused"),
        "{:?}",
        answer.error_message
    );
    // Nothing was written, and the broker still takes a good compressed batch.
    let described = cli_ok(
        &bootstrap,
        &["topic", "describe", "bombs", "--format", "json"],
        "",
    );
    assert!(described.contains(r#""high_watermark":0"#), "{described}");
    let mut builder = BatchBuilder::new();
    builder.append(1_700_000_000_000, None, Some(json_value(1).as_bytes()), &[]);
    builder.append(1_700_000_000_001, None, Some(json_value(1).as_bytes()), &[]);
    let good = builder.build_compressed(Compression::Lz4, None).unwrap();
    let answer = produce_raw(&broker, "bombs", good);
    assert_eq!(
        answer.error_code,
        ErrorCode::None,
        "{:?}",
        answer.error_message
    );
}
