//! `sluice-bench`: the load generator (INTERFACES.md), in the style of
//! kafka-producer-perf-test and the OpenMessaging Benchmark.
//!
//! - `produce`: K producers, fixed-size incompressible records, optional target rate. With a
//!   rate the test is open loop: record i is due at `start + i / rate`, and its latency runs
//!   from that due time, not from when `send` got to it, so a stall is charged to every
//!   record it delayed (no coordinated omission).
//! - `consume`: reads N records from the start of every partition.
//! - `e2e`: a producer and a consumer together; latency from the send time stamped in the
//!   record's first 8 bytes to the consumer's receipt.
//!
//! Latency is exact per record: the generator chooses each record's partition itself
//! (sticky per batch, rotating), and one task per partition awaits acknowledgements in
//! send order, which is the order a partition acknowledges in. Progress goes to stderr
//! once a second; the summary is the last line on stdout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use sluice_client::{
    Acks, Admin, Client, ClientConfig, Consumer, ConsumerConfig, DeliveryFuture, ErrorCode,
    GroupConfig, NewTopic, OffsetReset, OffsetSpec, PartitionId, Producer, ProducerConfig,
    ProducerRecord,
};
use tokio::sync::mpsc;

#[derive(Parser)]
#[command(
    name = "sluice-bench",
    version,
    about = "Throughput and latency of a sluice cluster"
)]
struct Cli {
    /// Brokers to bootstrap from.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9700"
    )]
    bootstrap: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Produce N records and report throughput and acknowledgement latency.
    Produce(ProduceArgs),
    /// Consume N records from the start and report throughput.
    Consume(ConsumeArgs),
    /// Produce and consume together and report end-to-end latency.
    E2e(E2eArgs),
}

#[derive(clap::Args, Clone)]
struct TopicArgs {
    /// The topic (created if missing).
    #[arg(long)]
    topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Replication factor of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    replication_factor: i16,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(clap::Args, Clone)]
struct ProduceArgs {
    #[command(flatten)]
    topic: TopicArgs,
    /// Records to send (over all producers).
    #[arg(long)]
    num_records: u64,
    /// Bytes of each record's value (random, incompressible).
    #[arg(long)]
    record_size: usize,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: Acks,
    /// Concurrent producers, each with its own connections.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Target records per second over all producers (default: as fast as possible).
    #[arg(long)]
    throughput: Option<f64>,
    /// Largest batch per partition, in bytes.
    #[arg(long)]
    batch_bytes: Option<usize>,
    /// How long a batch waits to fill, in ms.
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Idempotent producers (the default, with acks all): `false` measures what it costs.
    #[arg(long, value_name = "true|false", default_value_t = true, action = clap::ArgAction::Set)]
    enable_idempotence: bool,
}

#[derive(clap::Args, Clone)]
struct ConsumeArgs {
    #[command(flatten)]
    topic: TopicArgs,
    /// Records to read.
    #[arg(long)]
    num_records: u64,
    /// Consume as a member of this consumer group (from its committed offsets, else the
    /// earliest), committing at the end; without it every partition is read from the start.
    #[arg(long)]
    group: Option<String>,
}

#[derive(clap::Args, Clone)]
struct E2eArgs {
    #[command(flatten)]
    topic: TopicArgs,
    /// Records to send and receive.
    #[arg(long)]
    num_records: u64,
    /// Bytes of each record's value (at least 8: the send time).
    #[arg(long)]
    record_size: usize,
    /// Target records per second (default: as fast as possible).
    #[arg(long)]
    throughput: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_acks(text: &str) -> Result<Acks, String> {
    match text {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        other => Err(format!("acks must be 0, 1 or all, not {other:?}")),
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Produce(args) => produce(&cli.bootstrap, args).await,
            Command::Consume(args) => consume(&cli.bootstrap, args).await,
            Command::E2e(args) => e2e(&cli.bootstrap, args).await,
        }
    });
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

type Outcome = Result<(), String>;

async fn connect(bootstrap: &str) -> Result<Client, String> {
    let config = ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_string).collect(),
        client_id: "sluice-bench".into(),
        ..ClientConfig::default()
    };
    Client::connect(config).await.map_err(|e| e.to_string())
}

/// Creates the topic unless it exists; returns its partition count.
async fn ensure_topic(client: &Client, args: &TopicArgs) -> Result<i32, String> {
    let topic = NewTopic::new(&args.topic, args.partitions, args.replication_factor);
    match Admin::new(client.clone()).create_topic(topic).await {
        Ok(()) => {}
        Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
        Err(e) => return Err(e.to_string()),
    }
    let metadata = client
        .topic_metadata(&args.topic)
        .await
        .map_err(|e| e.to_string())?;
    Ok(metadata.n_partitions())
}

/// Counters and the latency histogram shared by the workers and the progress reporter.
struct Stats {
    records: AtomicU64,
    bytes: AtomicU64,
    /// Latency in microseconds, 1 µs to 1 hour, 3 significant digits.
    latency_us: Mutex<Histogram<u64>>,
    start: Instant,
}

impl Stats {
    fn new() -> Arc<Stats> {
        Arc::new(Stats {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds"),
            ),
            start: Instant::now(),
        })
    }

    fn record(&self, bytes: u64, latency: Option<Duration>) {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(latency) = latency {
            let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
            self.latency_us
                .lock()
                .expect("histogram")
                .saturating_record(us);
        }
    }

    fn p_ms(&self, quantile: f64) -> f64 {
        let h = self.latency_us.lock().expect("histogram");
        if h.is_empty() {
            return 0.0;
        }
        h.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Prints progress to stderr once a second until the returned task is aborted.
    fn spawn_progress(self: &Arc<Stats>) -> tokio::task::JoinHandle<()> {
        let stats = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            let (mut last_records, mut last_bytes) = (0, 0);
            loop {
                ticker.tick().await;
                let records = stats.records.load(Ordering::Relaxed);
                let bytes = stats.bytes.load(Ordering::Relaxed);
                eprintln!(
                    "{:>6.1} s  {:>10} records/s  {:>8.1} MB/s  p99 {:.2} ms",
                    stats.start.elapsed().as_secs_f64(),
                    records - last_records,
                    (bytes - last_bytes) as f64 / 1e6,
                    stats.p_ms(0.99)
                );
                (last_records, last_bytes) = (records, bytes);
            }
        })
    }

    fn summary(&self, format: Format) -> String {
        let seconds = self.start.elapsed().as_secs_f64();
        let records = self.records.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let max = self.latency_us.lock().expect("histogram").max() as f64 / 1000.0;
        let (p50, p99, p999) = (self.p_ms(0.5), self.p_ms(0.99), self.p_ms(0.999));
        let records_per_sec = records as f64 / seconds;
        let mb_per_sec = bytes as f64 / 1e6 / seconds;
        match format {
            Format::Json => serde_json::json!({
                "records": records,
                "bytes": bytes,
                "seconds": seconds,
                "records_per_sec": records_per_sec,
                "mb_per_sec": mb_per_sec,
                "latency_ms": { "p50": p50, "p99": p99, "p999": p999, "max": max },
            })
            .to_string(),
            Format::Text => format!(
                "{records} records, {bytes} bytes in {seconds:.2} s: {records_per_sec:.0} records/s, \
                 {mb_per_sec:.1} MB/s; latency ms p50 {p50:.2} p99 {p99:.2} p999 {p999:.2} max {max:.2}"
            ),
        }
    }
}

/// Incompressible payloads: one buffer of xorshift bytes, sliced (zero-copy) per record.
struct Payloads {
    buffer: Bytes,
    record_size: usize,
    next: usize,
}

impl Payloads {
    fn new(record_size: usize, seed: u64) -> Payloads {
        let len = record_size.max(1) * 1024 + 4096;
        let mut state = seed | 1;
        let buffer: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        Payloads {
            buffer: Bytes::from(buffer),
            record_size,
            next: 0,
        }
    }

    fn next(&mut self) -> Bytes {
        // Odd strides so consecutive records differ.
        self.next = (self.next + 4093) % (self.buffer.len() - self.record_size);
        self.buffer.slice(self.next..self.next + self.record_size)
    }
}

/// When record `i` of a producer sending at `rate` per second is due.
fn due(start: Instant, rate: Option<f64>, i: u64) -> Option<Instant> {
    rate.map(|r| start + Duration::from_secs_f64(i as f64 / r))
}

async fn produce(bootstrap: &str, args: ProduceArgs) -> Outcome {
    let admin_client = connect(bootstrap).await?;
    let n_partitions = ensure_topic(&admin_client, &args.topic).await?;
    let stats = Stats::new();
    let progress = stats.spawn_progress();
    let mut workers = Vec::new();
    let k = u64::from(args.producers.max(1));
    for w in 0..k {
        let count = args.num_records / k + u64::from(w < args.num_records % k);
        let client = connect(bootstrap).await?;
        let (args, stats) = (args.clone(), Arc::clone(&stats));
        workers.push(tokio::spawn(async move {
            run_producer(client, &args, n_partitions, count, w, stats).await
        }));
    }
    for worker in workers {
        worker.await.map_err(|e| e.to_string())??;
    }
    progress.abort();
    println!("{}", stats.summary(args.topic.format));
    Ok(())
}

/// One producer: sends `count` records, sticky per batch over the partitions, and awaits
/// every acknowledgement (in per-partition order) to record its latency.
async fn run_producer(
    client: Client,
    args: &ProduceArgs,
    n_partitions: i32,
    count: u64,
    worker: u64,
    stats: Arc<Stats>,
) -> Outcome {
    let mut config = ProducerConfig {
        acks: args.acks,
        enable_idempotence: args.enable_idempotence,
        ..ProducerConfig::default()
    };
    if let Some(b) = args.batch_bytes {
        config.batch_bytes_max = b;
    }
    if let Some(ms) = args.linger_ms {
        config.linger = Duration::from_millis(ms);
    }
    let records_per_batch = (config.batch_bytes_max / (args.record_size + 32)).max(1) as u64;
    let producer = Producer::new(client, config);
    let ackers: Vec<_> = (0..n_partitions)
        .map(|_| spawn_acker(Arc::clone(&stats), args.record_size as u64))
        .collect();
    let rate = args
        .throughput
        .map(|t| t / f64::from(args.producers.max(1)));
    let mut payloads = Payloads::new(args.record_size, 0x9e37_79b9_7f4a_7c15 ^ worker);
    let start = Instant::now();
    let first_partition = worker as i32;
    for i in 0..count {
        let scheduled = match due(start, rate, i) {
            Some(at) => {
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let partition = (first_partition + (i / records_per_batch) as i32) % n_partitions;
        let record = ProducerRecord::new(args.topic.topic.clone(), payloads.next())
            .partition(PartitionId(partition));
        let delivery = producer.send(record).await.map_err(|e| e.to_string())?;
        if ackers[partition as usize]
            .0
            .send((scheduled, delivery))
            .await
            .is_err()
        {
            break; // An acker failed; its error is reported below.
        }
    }
    producer.flush().await;
    let mut first_error = None;
    for (sender, handle) in ackers {
        drop(sender);
        if let Err(e) = handle.await.map_err(|e| e.to_string()).and_then(|r| r) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

type Acker = (
    mpsc::Sender<(Instant, DeliveryFuture)>,
    tokio::task::JoinHandle<Outcome>,
);

/// A task that awaits one partition's acknowledgements in send order.
fn spawn_acker(stats: Arc<Stats>, record_bytes: u64) -> Acker {
    let (tx, mut rx) = mpsc::channel::<(Instant, DeliveryFuture)>(64 * 1024);
    let handle = tokio::spawn(async move {
        while let Some((scheduled, delivery)) = rx.recv().await {
            delivery
                .await
                .map_err(|e| format!("a record was not acknowledged: {e}"))?;
            stats.record(record_bytes, Some(scheduled.elapsed()));
        }
        Ok(())
    });
    (tx, handle)
}

async fn consume(bootstrap: &str, args: ConsumeArgs) -> Outcome {
    let client = connect(bootstrap).await?;
    let n_partitions = ensure_topic(&client, &args.topic).await?;
    let mut consumer = match &args.group {
        Some(group) => {
            let config = ConsumerConfig {
                auto_offset_reset: OffsetReset::Earliest,
                ..ConsumerConfig::default()
            };
            let mut consumer = Consumer::with_group(client, config, GroupConfig::new(group))
                .map_err(|e| e.to_string())?;
            consumer
                .subscribe([args.topic.topic.as_str()])
                .map_err(|e| e.to_string())?;
            consumer
        }
        None => {
            assigned_consumer(
                client,
                &args.topic.topic,
                n_partitions,
                OffsetSpec::Earliest,
            )
            .await?
        }
    };
    let stats = Stats::new();
    let progress = stats.spawn_progress();
    poll_until(&mut consumer, &stats, args.num_records, |r, _| {
        let bytes = r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
        stats.record(bytes as u64, None);
    })
    .await?;
    progress.abort();
    if args.group.is_some() {
        consumer.commit().await.map_err(|e| e.to_string())?;
        consumer.close().await.map_err(|e| e.to_string())?;
    }
    println!("{}", stats.summary(args.topic.format));
    Ok(())
}

/// A consumer assigned every partition of `topic`, each starting at `start`.
async fn assigned_consumer(
    client: Client,
    topic: &str,
    n_partitions: i32,
    start: OffsetSpec,
) -> Result<Consumer, String> {
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    let assignment = (0..n_partitions)
        .map(|p| (topic.to_string(), PartitionId(p), start))
        .collect();
    consumer
        .assign(assignment)
        .await
        .map_err(|e| e.to_string())?;
    Ok(consumer)
}

/// Polls until `stats` has counted `n` records, handing each record to `each` with the
/// time its poll returned; fails after [`IDLE_TIMEOUT`] without a new record.
async fn poll_until(
    consumer: &mut Consumer,
    stats: &Stats,
    n: u64,
    mut each: impl FnMut(&sluice_client::ConsumerRecord, Instant),
) -> Outcome {
    let mut idle_since = Instant::now();
    while stats.records.load(Ordering::Relaxed) < n {
        let records = consumer
            .poll(Duration::from_millis(500))
            .await
            .map_err(|e| e.to_string())?;
        let received = Instant::now();
        if records.is_empty() {
            if idle_since.elapsed() > IDLE_TIMEOUT {
                return Err(format!(
                    "only {} of {n} records arrived; nothing new for {IDLE_TIMEOUT:?}",
                    stats.records.load(Ordering::Relaxed)
                ));
            }
            continue;
        }
        idle_since = received;
        for record in &records {
            each(record, received);
        }
    }
    Ok(())
}

/// How long `consume` and `e2e` wait without a new record before giving up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

async fn e2e(bootstrap: &str, args: E2eArgs) -> Outcome {
    if args.record_size < 8 {
        return Err(
            "--record-size must be at least 8 (the send time travels in the record)".into(),
        );
    }
    let client = connect(bootstrap).await?;
    let n_partitions = ensure_topic(&client, &args.topic).await?;
    let mut consumer = assigned_consumer(
        client.clone(),
        &args.topic.topic,
        n_partitions,
        OffsetSpec::Latest,
    )
    .await?;
    let stats = Stats::new();
    let base = stats.start;
    let producer = Producer::new(connect(bootstrap).await?, ProducerConfig::default());
    let (topic, n, size, rate) = (
        args.topic.topic.clone(),
        args.num_records,
        args.record_size,
        args.throughput,
    );
    let sending = tokio::spawn(async move {
        let mut payloads = Payloads::new(size, 0x2545_f491_4f6c_dd1d);
        let start = Instant::now();
        for i in 0..n {
            if let Some(at) = due(start, rate, i) {
                tokio::time::sleep_until(at.into()).await;
            }
            // The due time (open loop) or now, in µs since the run began, in the first 8 bytes.
            let sent = due(start, rate, i).unwrap_or_else(Instant::now);
            let mut value = payloads.next().to_vec();
            value[..8]
                .copy_from_slice(&(sent.duration_since(base).as_micros() as u64).to_be_bytes());
            let record = ProducerRecord::new(topic.clone(), Bytes::from(value));
            producer.send(record).await.map_err(|e| e.to_string())?;
        }
        producer.flush().await;
        Ok::<_, String>(())
    });
    let progress = stats.spawn_progress();
    poll_until(&mut consumer, &stats, args.num_records, |r, received| {
        let value = r.value.as_deref().unwrap_or_default();
        let sent_us = value
            .get(..8)
            .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
        let since_start = received.duration_since(base);
        let latency = since_start.saturating_sub(Duration::from_micros(sent_us));
        stats.record(value.len() as u64, Some(latency));
    })
    .await?;
    sending.await.map_err(|e| e.to_string())??;
    progress.abort();
    println!("{}", stats.summary(args.topic.format));
    Ok(())
}
