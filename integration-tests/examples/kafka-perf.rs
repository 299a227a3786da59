//! Produce and consume throughput through a Kafka-protocol listener with librdkafka (the
//! `rdkafka` crate on Debian's librdkafka 2.0.2): the Kafka side of `bench/kafka-bench.sh`,
//! in the spirit of librdkafka's `rdkafka_performance`, which Debian does not ship.
//!
//! ```text
//! kafka-perf produce --bootstrap B --topic T --num-records N --record-size BYTES
//!                    [--acks 0|1|all (all)] [--enable-idempotence true|false (true)]
//!                    [--linger-ms MS (5)] [--batch-bytes B (1000000)]
//! kafka-perf consume --bootstrap B --topic T --num-records N
//! ```
//!
//! The last line of stdout is the JSON summary sluice-bench prints:
//! `{"records","bytes","seconds","records_per_sec","mb_per_sec","latency_ms":{"p50","p99","p999","max"}}`
//! (`bytes` = value bytes; produce latency = send to delivery report; consume has none).
//! The topic must exist (the script creates it with the sluice CLI). Compression is off,
//! so the value's bytes (a fixed pseudo-random pattern) do not matter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// How long either side waits without progress before it gives up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let flags = parse_flags(args);
    let result = match command.as_str() {
        "produce" => produce(&flags),
        "consume" => consume(&flags),
        _ => Err(
            "usage: kafka-perf produce|consume --bootstrap B --topic T --num-records N ...".into(),
        ),
    };
    match result {
        Ok(summary) => println!("{summary}"),
        Err(e) => {
            eprintln!("kafka-perf: {e}");
            std::process::exit(1);
        }
    }
}

/// `--name value` pairs.
fn parse_flags(args: impl Iterator<Item = String>) -> HashMap<String, String> {
    let args: Vec<String> = args.collect();
    args.chunks(2)
        .filter_map(|pair| match pair {
            [name, value] => Some((name.trim_start_matches("--").to_string(), value.clone())),
            _ => None,
        })
        .collect()
}

fn flag<'a>(flags: &'a HashMap<String, String>, name: &str) -> Result<&'a str, String> {
    flags
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("--{name} is required"))
}

fn number(
    flags: &HashMap<String, String>,
    name: &str,
    default: Option<u64>,
) -> Result<u64, String> {
    match (flags.get(name), default) {
        (Some(v), _) => v.parse().map_err(|e| format!("--{name} {v}: {e}")),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(format!("--{name} is required")),
    }
}

/// Counts deliveries and keeps each one's latency, in microseconds.
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    latencies_us: Mutex<Vec<u64>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        match result {
            Ok(_) => {
                let latency = sent.elapsed().as_micros() as u64;
                self.latencies_us.lock().unwrap().push(latency);
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn produce(flags: &HashMap<String, String>) -> Result<String, String> {
    let topic = flag(flags, "topic")?;
    let n = number(flags, "num-records", None)?;
    let size = number(flags, "record-size", None)? as usize;
    let idempotence = flags
        .get("enable-idempotence")
        .map_or("true", String::as_str);
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", flag(flags, "bootstrap")?)
        .set("acks", flags.get("acks").map_or("all", String::as_str))
        .set("enable.idempotence", idempotence)
        .set(
            "linger.ms",
            number(flags, "linger-ms", Some(5))?.to_string(),
        )
        .set(
            "batch.size",
            number(flags, "batch-bytes", Some(1_000_000))?.to_string(),
        )
        .set("compression.type", "none")
        .create_with_context(Deliveries {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            latencies_us: Mutex::new(Vec::with_capacity(n as usize)),
        })
        .map_err(|e| format!("create the producer: {e}"))?;
    let value = pattern(size);
    let start = Instant::now();
    for _ in 0..n {
        let mut record =
            BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(topic, Box::new(Instant::now()))
                .payload(&value[..]);
        let queued_since = Instant::now();
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The local queue is full: serve delivery reports, then retry.
                    producer.poll(Duration::from_millis(10));
                    if queued_since.elapsed() > IDLE_TIMEOUT {
                        return Err(format!("the queue stayed full for {IDLE_TIMEOUT:?}"));
                    }
                    record = back;
                }
                Err((e, _)) => return Err(format!("send: {e}")),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| format!("flush: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let context = producer.context();
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!(
            "{failed} records failed; first: {}",
            context
                .first_error
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_default()
        ));
    }
    let mut latencies = std::mem::take(&mut *context.latencies_us.lock().unwrap());
    Ok(summary(n, n * size as u64, seconds, Some(&mut latencies)))
}

fn consume(flags: &HashMap<String, String>) -> Result<String, String> {
    let topic = flag(flags, "topic")?;
    let n = number(flags, "num-records", None)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", flag(flags, "bootstrap")?)
        .set("group.id", "kafka-perf")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("create the consumer: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| format!("metadata: {e}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("no partitions of {topic}"))?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p as i32, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assign: {e}"))?;
    let start = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut idle_since = Instant::now();
    while records < n {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                records += 1;
                bytes += message.payload().map_or(0, |p| p.len() as u64);
                idle_since = Instant::now();
            }
            Some(Err(e)) => return Err(format!("consume: {e}")),
            None if idle_since.elapsed() > IDLE_TIMEOUT => {
                return Err(format!(
                    "only {records} of {n} records; nothing for {IDLE_TIMEOUT:?}"
                ))
            }
            None => {}
        }
    }
    Ok(summary(records, bytes, start.elapsed().as_secs_f64(), None))
}

/// `size` bytes of a fixed xorshift pattern.
fn pattern(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// sluice-bench's JSON summary.
fn summary(records: u64, bytes: u64, seconds: f64, latencies_us: Option<&mut Vec<u64>>) -> String {
    let latency = latencies_us.filter(|l| !l.is_empty()).map(|l| {
        l.sort_unstable();
        let at = |q: f64| l[((l.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
        serde_json::json!({"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "max": at(1.0)})
    });
    serde_json::json!({
        "records": records,
        "bytes": bytes,
        "seconds": seconds,
        "records_per_sec": records as f64 / seconds,
        "mb_per_sec": bytes as f64 / seconds / 1e6,
        "latency_ms": latency,
    })
    .to_string()
}
