//! `sluice-bench`: the load generator (INTERFACES.md), in the style of
//! kafka-producer-perf-test and the OpenMessaging Benchmark.
//!
//! - `produce`: K producers, fixed-size incompressible records, optional target rate. With a
//!   rate the test is open loop: record i is due at `start + i / rate`, and its latency runs
//!   from that due time, not from when `send` got to it, so a stall is charged to every
//!   record it delayed (no coordinated omission).
//! - `consume`: reads exactly N records from the start of every partition (or from a
//!   group's committed offsets); it measures no latency, and reports none.
//! - `e2e`: a producer and a consumer together; latency from the send time stamped in the
//!   record's first 8 bytes to the consumer's receipt.
//!
//! Latency is exact per record: the generator chooses each record's partition itself
//! (sticky per batch, rotating), and one task per partition awaits acknowledgements in
//! send order, which is the order a partition acknowledges in. Progress (done/total)
//! goes to stderr once a second; the summary is the last line on stdout. The first record
//! refused at `send` or not acknowledged ends the run at once with an error in
//! sluice-bench's terms (its flags, the `sluice` command that raises a topic's limit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use sluice_client::{
    Acks, Admin, Client, ClientConfig, Compression, CompressionConfig, Consumer, ConsumerConfig,
    DeliveryFuture, Error as ClientError, ErrorCode, GroupConfig, NewTopic, OffsetReset,
    OffsetSpec, PartitionId, Producer, ProducerConfig, ProducerRecord, SaslConfig, TlsConfig,
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
    /// Connect with TLS, verifying the brokers' certificates against this PEM CA file.
    #[arg(long, global = true, env = "SLUICE_TLS_CA_FILE", value_name = "FILE")]
    tls_ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate, for brokers that require one (mutual TLS).
    #[arg(long, global = true, env = "SLUICE_TLS_CERT_FILE", value_name = "FILE")]
    tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, global = true, env = "SLUICE_TLS_KEY_FILE", value_name = "FILE")]
    tls_key_file: Option<std::path::PathBuf>,
    /// Log in with this SASL mechanism (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN); the password
    /// comes from SLUICE_SASL_PASSWORD.
    #[arg(
        long,
        global = true,
        env = "SLUICE_SASL_MECHANISM",
        value_name = "MECHANISM",
        requires = "sasl_username"
    )]
    sasl_mechanism: Option<String>,
    /// The user to log in as (with --sasl-mechanism).
    #[arg(
        long,
        global = true,
        env = "SLUICE_SASL_USERNAME",
        value_name = "USER",
        requires = "sasl_mechanism"
    )]
    sasl_username: Option<String>,
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
    /// A config of the topic when it is created, KEY=VALUE (repeatable), e.g.
    /// `cleanup.policy=compact`.
    #[arg(long = "topic-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    topic_configs: Vec<(String, String)>,
}

/// `KEY=VALUE`.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

#[derive(clap::Args, Clone)]
struct ProduceArgs {
    #[command(flatten)]
    topic: TopicArgs,
    /// Records to send (over all producers).
    #[arg(long)]
    num_records: u64,
    /// Bytes of each record's value (random, incompressible, unless `--payload json`).
    #[arg(long)]
    record_size: usize,
    /// What the values hold: `random` bytes (incompressible) or `json` lines (event
    /// records, compressible as real JSON is).
    #[arg(long, value_enum, default_value_t = PayloadKind::Random)]
    payload: PayloadKind,
    /// Batch compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, value_name = "CODEC", default_value_t = Compression::None, value_parser = parse_codec)]
    compression: Compression,
    /// Compression level: gzip 1-9 (default 6), zstd 1-22 (default 3).
    #[arg(long, value_name = "LEVEL", allow_negative_numbers = true)]
    compression_level: Option<i32>,
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
    /// Give records keys, cycling through this many (`key-00000000`...), as updates of a
    /// table do (a compacted topic needs them); without it records have no key.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    keys: Option<u64>,
    /// Transactional producers (a transactional id each) that commit every MS
    /// milliseconds, and once more at the end: what transactions cost. Latency is still
    /// send to acknowledgement; the time includes every commit.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    transaction_ms: Option<u64>,
    /// Records handed to the producer per call: 1 sends each with `Producer::send`, as a
    /// Kafka producer does; more sends them N at a time with `Producer::send_all`, as
    /// Iggy's bench hands its client prepared batches. Latency is then a call's: from
    /// the call (its due time at a fixed rate) to its last record's acknowledgement.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    records_per_call: u64,
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
        let tls = TlsConfig::from_flags(
            cli.tls_ca_file.as_deref(),
            cli.tls_cert_file.as_deref(),
            cli.tls_key_file.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let sasl =
            SaslConfig::from_flags(cli.sasl_mechanism.as_deref(), cli.sasl_username.as_deref())
                .map_err(|e| e.to_string())?;
        let target = Target {
            bootstrap: cli.bootstrap.split(',').map(str::to_string).collect(),
            tls,
            sasl,
        };
        match cli.command {
            Command::Produce(args) => produce(&target, args).await,
            Command::Consume(args) => consume(&target, args).await,
            Command::E2e(args) => e2e(&target, args).await,
        }
    });
    if let Err(e) = outcome {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

type Outcome = Result<(), String>;

/// The brokers to connect to, and how.
struct Target {
    bootstrap: Vec<String>,
    tls: Option<TlsConfig>,
    sasl: Option<SaslConfig>,
}

async fn connect(target: &Target) -> Result<Client, String> {
    let config = ClientConfig {
        bootstrap: target.bootstrap.clone(),
        tls: target.tls.clone(),
        sasl: target.sasl.clone(),
        client_id: "sluice-bench".into(),
        ..ClientConfig::default()
    };
    Client::connect(config).await.map_err(|e| e.to_string())
}

/// Creates the topic unless it exists; returns its partition count.
async fn ensure_topic(client: &Client, args: &TopicArgs) -> Result<i32, String> {
    let mut topic = NewTopic::new(&args.topic, args.partitions, args.replication_factor);
    for (key, value) in &args.topic_configs {
        topic = topic.config(key, value);
    }
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
    /// The records the run is to count, for progress as done/total.
    records_total: u64,
    /// Latency in microseconds, 1 µs to 1 hour, 3 significant digits; `None` in a run
    /// that measures no latency (consume), so that none is reported.
    latency_us: Option<Mutex<Histogram<u64>>>,
    start: Instant,
}

/// Latency percentiles of a run, in ms.
struct LatencyMs {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Stats {
    /// Stats of a run that measures a latency per record (produce, e2e).
    fn with_latency(records_total: u64) -> Arc<Stats> {
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        Stats::new(records_total, Some(Mutex::new(histogram)))
    }

    /// Stats of a run that measures no latency (consume).
    fn without_latency(records_total: u64) -> Arc<Stats> {
        Stats::new(records_total, None)
    }

    fn new(records_total: u64, latency_us: Option<Mutex<Histogram<u64>>>) -> Arc<Stats> {
        Arc::new(Stats {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            records_total,
            latency_us,
            start: Instant::now(),
        })
    }

    /// `records` records of `bytes` together, each with `latency`.
    fn record(&self, bytes: u64, records: u64, latency: Option<Duration>) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let (Some(histogram), Some(latency)) = (&self.latency_us, latency) {
            let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
            let mut histogram = histogram.lock().expect("histogram");
            histogram.saturating_record_n(us, records);
        }
    }

    /// The latency percentiles so far; `None` when the run measures none, or has not
    /// measured any yet.
    fn latency_ms(&self) -> Option<LatencyMs> {
        let h = self.latency_us.as_ref()?.lock().expect("histogram");
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencyMs {
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }

    /// `done/total records (pct%)`: how far the run is.
    fn done_of_total(&self) -> String {
        let done = self.records.load(Ordering::Relaxed);
        format!(
            "{done}/{} records ({}%)",
            self.records_total,
            percent(done, self.records_total)
        )
    }

    /// Prints progress to stderr once a second until [`Progress::finish`].
    fn spawn_progress(self: &Arc<Stats>) -> Progress {
        let stats = Arc::clone(self);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            let (mut last_records, mut last_bytes) = (0, 0);
            loop {
                ticker.tick().await;
                let records = stats.records.load(Ordering::Relaxed);
                let bytes = stats.bytes.load(Ordering::Relaxed);
                let p99 = stats
                    .latency_ms()
                    .map_or(String::new(), |l| format!(", p99 {:.2} ms", l.p99));
                eprintln!(
                    "{:>6.1} s  {}, {} records/s, {:.1} MB/s{p99}",
                    stats.start.elapsed().as_secs_f64(),
                    stats.done_of_total(),
                    records - last_records,
                    (bytes - last_bytes) as f64 / 1e6,
                );
                (last_records, last_bytes) = (records, bytes);
            }
        });
        Progress {
            task,
            stats: Arc::clone(self),
        }
    }

    fn summary(&self, format: Format) -> String {
        let seconds = self.start.elapsed().as_secs_f64();
        let records = self.records.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let latency = self.latency_ms();
        let records_per_sec = records as f64 / seconds;
        let mb_per_sec = bytes as f64 / 1e6 / seconds;
        match format {
            // INTERFACES.md promises `latency_ms` with its four keys in every summary: a
            // run that measured no latency gives them as null, never a made-up 0.
            Format::Json => serde_json::json!({
                "records": records,
                "bytes": bytes,
                "seconds": seconds,
                "records_per_sec": records_per_sec,
                "mb_per_sec": mb_per_sec,
                "latency_ms": {
                    "p50": latency.as_ref().map(|l| l.p50),
                    "p99": latency.as_ref().map(|l| l.p99),
                    "p999": latency.as_ref().map(|l| l.p999),
                    "max": latency.as_ref().map(|l| l.max),
                },
            })
            .to_string(),
            Format::Text => {
                let latency = latency.map_or(String::new(), |l| {
                    format!(
                        "; latency ms p50 {:.2} p99 {:.2} p999 {:.2} max {:.2}",
                        l.p50, l.p99, l.p999, l.max
                    )
                });
                format!(
                    "{records} records, {bytes} bytes in {seconds:.2} s: {records_per_sec:.0} records/s, \
                     {mb_per_sec:.1} MB/s{latency}"
                )
            }
        }
    }
}

/// `done` as a whole percentage of `total`, rounded down (100 only when all are done).
fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    (u128::from(done) * 100 / u128::from(total)) as u64
}

/// The progress reporter of a run.
struct Progress {
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
}

impl Progress {
    /// Stops the reporter and prints the last progress line, so that every run shows how
    /// far it got, however short.
    fn finish(self) {
        self.task.abort();
        eprintln!(
            "{:>6.1} s  {}",
            self.stats.start.elapsed().as_secs_f64(),
            self.stats.done_of_total()
        );
    }
}

/// What `sluice-bench produce` puts in the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PayloadKind {
    /// Random bytes: no codec shrinks them.
    Random,
    /// JSON lines of click events, each exactly `--record-size` bytes: field names repeat,
    /// values come from small vocabularies, as in real event streams.
    Json,
}

fn parse_codec(s: &str) -> Result<Compression, String> {
    s.parse::<Compression>().map_err(|e| e.to_string())
}

impl ProduceArgs {
    /// The producers' compression; the level was checked when the arguments were.
    fn compression_config(&self) -> CompressionConfig {
        CompressionConfig::new(self.compression, self.compression_level).expect("checked in main")
    }
}

/// A xorshift generator: reproducible payloads from a seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Payloads: one buffer, sliced (zero-copy) per record. Random bytes are sliced at odd
/// strides; JSON records are whole records of the buffer, one after another.
struct Payloads {
    buffer: Bytes,
    record_size: usize,
    next: usize,
    kind: PayloadKind,
}

impl Payloads {
    fn new(kind: PayloadKind, record_size: usize, seed: u64) -> Payloads {
        // Room for 1024 records and at least PAYLOAD_BUFFER_BYTES_MIN, but no more than
        // PAYLOAD_BUFFER_BYTES_MAX (two records when they are larger): generating it byte
        // by byte takes a while, and a buffer of 1024 records of 2 MB would be 2 GB. The
        // minimum keeps the slices of one 1 MiB batch from repeating, which a codec with a
        // window of a few MiB (zstd) would otherwise find and compress.
        let len = (record_size.max(1).saturating_mul(1024))
            .max(PAYLOAD_BUFFER_BYTES_MIN)
            .min(PAYLOAD_BUFFER_BYTES_MAX.max(record_size.saturating_mul(2)))
            + 4096;
        let mut rng = XorShift(seed | 1);
        let buffer: Vec<u8> = match kind {
            PayloadKind::Random => (0..len).map(|_| (rng.next() >> 24) as u8).collect(),
            PayloadKind::Json => (0..len / record_size.max(1))
                .flat_map(|seq| json_record(&mut rng, seq, record_size))
                .collect(),
        };
        Payloads {
            buffer: Bytes::from(buffer),
            record_size,
            next: 0,
            kind,
        }
    }

    fn next(&mut self) -> Bytes {
        match self.kind {
            PayloadKind::Random => {
                // Odd strides so consecutive records differ.
                self.next = (self.next + 4093) % (self.buffer.len() - self.record_size);
            }
            PayloadKind::Json => {
                self.next += self.record_size;
                if self.next + self.record_size > self.buffer.len() {
                    self.next = 0;
                }
            }
        }
        self.buffer.slice(self.next..self.next + self.record_size)
    }
}

/// One JSON line of a click event, exactly `size` bytes: padded with a note of common
/// words, or cut (no longer valid JSON) when `size` is below the event's fields.
fn json_record(rng: &mut XorShift, seq: usize, size: usize) -> Vec<u8> {
    const EVENTS: [&str; 6] = [
        "page_view",
        "click",
        "add_to_cart",
        "purchase",
        "search",
        "login",
    ];
    const SECTIONS: [&str; 5] = ["catalog", "cart", "account", "search", "help"];
    const COUNTRIES: [&str; 8] = ["DE", "FR", "US", "GB", "JP", "BR", "IN", "ES"];
    const WORDS: [&str; 16] = [
        "the",
        "customer",
        "viewed",
        "item",
        "from",
        "a",
        "recommended",
        "list",
        "and",
        "then",
        "returned",
        "to",
        "the",
        "search",
        "results",
        "page",
    ];
    let mut pick = |n: usize| (rng.next() >> 33) as usize % n;
    let mut line = format!(
        "{{\"seq\":{seq},\"user\":\"user-{}\",\"event\":\"{}\",\"page\":\"/{}/{}\",\"country\":\"{}\",\"duration_ms\":{},\"note\":\"",
        pick(5000),
        EVENTS[pick(EVENTS.len())],
        SECTIONS[pick(SECTIONS.len())],
        pick(1000),
        COUNTRIES[pick(COUNTRIES.len())],
        pick(2000),
    );
    while line.len() + 2 < size {
        line.push_str(WORDS[pick(WORDS.len())]);
        line.push(' ');
    }
    line.truncate(size.saturating_sub(2));
    line.push_str("\"}");
    let mut bytes = line.into_bytes();
    bytes.resize(size, b' ');
    bytes.truncate(size);
    bytes
}

/// The largest buffer [`Payloads`] slices records from, unless two records need more.
const PAYLOAD_BUFFER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The smallest such buffer: 4093-byte strides over it wrap only after 4096 records (a
/// whole default batch of 1 KiB records or larger).
const PAYLOAD_BUFFER_BYTES_MIN: usize = 16 * 1024 * 1024;

/// A client error as a sluice-bench user can act on it: the library names its own
/// settings (`batch_bytes_max`), sluice-bench its flags and the `sluice` command that
/// changes a topic's config.
fn explain(error: &ClientError, topic: &str) -> String {
    match error {
        ClientError::RecordTooLarge { size, max, limit } => match *limit {
            "batch_bytes_max" => format!(
                "a record of {size} bytes (encoded as a batch) does not fit in a batch of \
                 {max} bytes; raise --batch-bytes to at least {size}, or lower --record-size"
            ),
            "buffer_bytes_max" => format!(
                "a record of {size} bytes is larger than the producer's buffer of {max} \
                 bytes; lower --record-size"
            ),
            _ => format!(
                "a record of {size} bytes (encoded as a batch) does not fit in topic \
                 {topic}'s segment.bytes of {max}; raise it with \
                 `sluice topic alter {topic} -c segment.bytes={size}` or more, or lower --record-size"
            ),
        },
        ClientError::SendTooLarge { size, max, .. } => format!(
            "a call's records take {size} bytes together, more than the producer's buffer of \
             {max} bytes; lower --records-per-call or --record-size"
        ),
        other => other.to_string(),
    }
}

/// When record `i` of a producer sending at `rate` per second is due.
fn due(start: Instant, rate: Option<f64>, i: u64) -> Option<Instant> {
    rate.map(|r| start + Duration::from_secs_f64(i as f64 / r))
}

/// Blocks the calling thread (never a runtime worker) until `at`. Latency counts from a
/// record's due time, so the pacing's own lateness is measured as latency: tokio's timer
/// has a granularity of a millisecond, which at 100,000 records/s held records back by
/// ~0.8 ms at the median; a thread sleep wakes within the kernel's timer slack (~50 µs),
/// and the loop then sends every record that fell due meanwhile.
fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

async fn produce(bootstrap: &Target, args: ProduceArgs) -> Outcome {
    CompressionConfig::new(args.compression, args.compression_level)
        .map_err(|e| format!("--compression-level: {e}"))?;
    let admin_client = connect(bootstrap).await?;
    let n_partitions = ensure_topic(&admin_client, &args.topic).await?;
    let stats = Stats::with_latency(args.num_records);
    let progress = stats.spawn_progress();
    // The first failure of any producer or acknowledgement ends the run at once: a run
    // with a failed record measures nothing, and waiting for the others (up to their
    // delivery timeout) would look like a hang.
    let (failures, mut first_failure) = mpsc::channel::<String>(1);
    let mut workers = tokio::task::JoinSet::new();
    let k = u64::from(args.producers.max(1));
    for w in 0..k {
        let count = args.num_records / k + u64::from(w < args.num_records % k);
        let client = connect(bootstrap).await?;
        let (args, stats, failures) = (args.clone(), Arc::clone(&stats), failures.clone());
        workers.spawn(async move {
            run_producer(client, &args, n_partitions, count, w, stats, failures).await
        });
    }
    drop(failures);
    loop {
        tokio::select! {
            Some(failure) = first_failure.recv() => return Err(failure),
            joined = workers.join_next() => match joined {
                Some(outcome) => outcome.map_err(|e| e.to_string())??,
                None => break,
            },
        }
    }
    progress.finish();
    println!("{}", stats.summary(args.topic.format));
    Ok(())
}

/// One producer: sends `count` records, sticky per batch over the partitions, and awaits
/// every acknowledgement (in per-partition order) to record its latency. A failed
/// acknowledgement is reported on `failures` as soon as it is seen.
async fn run_producer(
    client: Client,
    args: &ProduceArgs,
    n_partitions: i32,
    count: u64,
    worker: u64,
    stats: Arc<Stats>,
    failures: mpsc::Sender<String>,
) -> Outcome {
    let mut config = ProducerConfig {
        acks: args.acks,
        enable_idempotence: args.enable_idempotence,
        compression: args.compression_config(),
        ..ProducerConfig::default()
    };
    if let Some(b) = args.batch_bytes {
        config.batch_bytes_max = b;
    }
    if let Some(ms) = args.linger_ms {
        config.linger = Duration::from_millis(ms);
    }
    if args.transaction_ms.is_some() {
        config.transactional_id = Some(format!("sluice-bench-{}-{worker}", std::process::id()));
    }
    let records_per_batch = (config.batch_bytes_max / (args.record_size + 32)).max(1) as u64;
    let producer = Producer::new(client, config);
    let commit_every = args.transaction_ms.map(Duration::from_millis);
    if commit_every.is_some() {
        let topic = &args.topic.topic;
        producer
            .init_transactions()
            .await
            .map_err(|e| explain(&e, topic))?;
        producer
            .begin_transaction()
            .map_err(|e| explain(&e, topic))?;
    }
    let topic = &args.topic.topic;
    let ackers: Vec<_> = (0..n_partitions)
        .map(|_| {
            let watch = DeliveryWatch {
                topic: topic.clone(),
                failures: failures.clone(),
            };
            spawn_acker(Arc::clone(&stats), args.record_size as u64, watch)
        })
        .collect();
    let rate = args
        .throughput
        .map(|t| t / f64::from(args.producers.max(1)));
    let mut payloads = Payloads::new(
        args.payload,
        args.record_size,
        0x9e37_79b9_7f4a_7c15 ^ worker,
    );
    // The sending loop runs on a thread of its own, as an application producing from its
    // own thread would: it paces with thread sleeps (see `sleep_until`) and awaits the
    // producer in one `block_on` for the whole loop (one per record cost the thread as much
    // as a tenth of its time in entering the runtime, which is not the producer's work).
    let runtime = tokio::runtime::Handle::current();
    let senders: Vec<_> = ackers.iter().map(|(sender, _)| sender.clone()).collect();
    let topic_name = args.topic.topic.clone();
    let (producer_of_loop, args) = (producer.clone(), args.clone());
    let sent = tokio::task::spawn_blocking(move || -> Outcome {
        runtime.block_on(async move {
            let topic = &args.topic.topic;
            let start = Instant::now();
            let first_partition = worker as i32;
            let mut last_commit = start;
            let per_call = args.records_per_call;
            let mut call = Vec::with_capacity(if per_call > 1 {
                per_call.min(count) as usize
            } else {
                0
            });
            let mut call_due = start;
            for i in 0..count {
                let call_starts = per_call == 1 || i % per_call == 0;
                // (Between calls: a call's latency never includes a commit.)
                if call_starts && commit_every.is_some_and(|every| last_commit.elapsed() >= every) {
                    // Commit (which waits for the transaction's records) and begin the next.
                    producer_of_loop
                        .commit_transaction()
                        .await
                        .and_then(|()| producer_of_loop.begin_transaction())
                        .map_err(|e| explain(&e, topic))?;
                    last_commit = Instant::now();
                }
                // A call is due when its first record is; its records are made then.
                let scheduled = if call_starts {
                    call_due = match due(start, rate, i) {
                        Some(at) => {
                            sleep_until(at);
                            at
                        }
                        None => Instant::now(),
                    };
                    call_due
                } else {
                    call_due
                };
                let partition = (first_partition + (i / records_per_batch) as i32) % n_partitions;
                let mut record = ProducerRecord::new(topic.clone(), payloads.next())
                    .partition(PartitionId(partition));
                if let Some(keys) = args.keys {
                    // Spread over the workers, so each key is updated by all of them in turn.
                    let key = (i * args.producers.max(1) as u64 + worker) % keys;
                    record = record.key(format!("key-{key:08}"));
                }
                let deliveries = if per_call == 1 {
                    let delivery = producer_of_loop.send(record).await;
                    Deliveries::One(delivery.map_err(|e| explain(&e, topic))?)
                } else {
                    // The call's records are made when it is due, as its first record.
                    call.push(record);
                    let last = i + 1 == count;
                    if (call.len() as u64) < per_call && !last {
                        continue;
                    }
                    let sent = producer_of_loop.send_all(&call).await;
                    call.clear();
                    Deliveries::Call(sent.map_err(|e| explain(&e, topic))?)
                };
                if senders[partition as usize]
                    .send((scheduled, deliveries))
                    .await
                    .is_err()
                {
                    break; // An acker failed; its error is reported below.
                }
            }
            Ok(())
        })
    });
    sent.await.map_err(|e| e.to_string())??;
    if commit_every.is_some() {
        producer
            .commit_transaction()
            .await
            .map_err(|e| explain(&e, &topic_name))?;
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
    mpsc::Sender<(Instant, Deliveries)>,
    tokio::task::JoinHandle<Outcome>,
);

/// What one `send` or `send_all` call returned.
enum Deliveries {
    One(DeliveryFuture),
    Call(Vec<DeliveryFuture>),
}

/// Where an acknowledgement's failure goes, and how to explain it.
struct DeliveryWatch {
    topic: String,
    failures: mpsc::Sender<String>,
}

impl DeliveryWatch {
    /// Awaits one acknowledgement; a failure is also reported on `failures` at once.
    async fn acknowledged(&self, delivery: DeliveryFuture) -> Outcome {
        let Err(e) = delivery.await else {
            return Ok(());
        };
        let failure = format!(
            "a record was not acknowledged: {}",
            explain(&e, &self.topic)
        );
        // Only the first failure is reported; later ones find the channel full.
        let _ = self.failures.try_send(failure.clone());
        Err(failure)
    }
}

/// A task that awaits one partition's acknowledgements in send order (a `send_all` call's,
/// which may reach into the next partition, go to the acker of its last record's). A
/// call's records all get the call's latency: until its last one is acknowledged.
fn spawn_acker(stats: Arc<Stats>, record_bytes: u64, watch: DeliveryWatch) -> Acker {
    let (tx, mut rx) = mpsc::channel::<(Instant, Deliveries)>(64 * 1024);
    let handle = tokio::spawn(async move {
        while let Some((scheduled, deliveries)) = rx.recv().await {
            match deliveries {
                Deliveries::One(delivery) => {
                    watch.acknowledged(delivery).await?;
                    stats.record(record_bytes, 1, Some(scheduled.elapsed()));
                }
                Deliveries::Call(call) => {
                    let n = call.len() as u64;
                    for delivery in call {
                        watch.acknowledged(delivery).await?;
                    }
                    stats.record(record_bytes * n, n, Some(scheduled.elapsed()));
                }
            }
        }
        Ok(())
    });
    (tx, handle)
}

async fn consume(bootstrap: &Target, args: ConsumeArgs) -> Outcome {
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
    let stats = Stats::without_latency(args.num_records);
    let progress = stats.spawn_progress();
    let uncounted = poll_until(&mut consumer, args.num_records, |r, _| {
        let bytes = r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
        stats.record(bytes as u64, 1, None);
    })
    .await?;
    progress.finish();
    if args.group.is_some() {
        // The group's position is after the N records counted, not after the whole last
        // poll: the next run goes on from the first record this one did not count.
        for (topic, partition, offset) in first_offsets(&uncounted) {
            consumer
                .seek(&topic, partition, OffsetSpec::Offset(offset))
                .await
                .map_err(|e| e.to_string())?;
        }
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

/// Polls until exactly `n` records were handed to `each` (with the time their poll
/// returned), in poll order; fails after [`IDLE_TIMEOUT`] without a new record. Returns
/// the records of the last poll beyond the `n`th, which were not handed on.
async fn poll_until(
    consumer: &mut Consumer,
    n: u64,
    mut each: impl FnMut(&sluice_client::ConsumerRecord, Instant),
) -> Result<Vec<sluice_client::ConsumerRecord>, String> {
    let mut counted = 0u64;
    let mut idle_since = Instant::now();
    while counted < n {
        let mut records = consumer
            .poll(Duration::from_millis(500))
            .await
            .map_err(|e| e.to_string())?;
        let received = Instant::now();
        if records.is_empty() {
            if idle_since.elapsed() > IDLE_TIMEOUT {
                return Err(format!(
                    "only {counted} of {n} records arrived; nothing new for {IDLE_TIMEOUT:?}"
                ));
            }
            continue;
        }
        idle_since = received;
        let wanted = usize::try_from(n - counted).unwrap_or(usize::MAX);
        let uncounted = records.split_off(wanted.min(records.len()));
        for record in &records {
            each(record, received);
        }
        counted += records.len() as u64;
        if counted == n {
            return Ok(uncounted);
        }
    }
    Ok(Vec::new())
}

/// Per partition, the offset of the first of `records` (in poll order, so its lowest).
fn first_offsets(records: &[sluice_client::ConsumerRecord]) -> Vec<(String, PartitionId, i64)> {
    let mut first: Vec<(String, PartitionId, i64)> = Vec::new();
    for r in records {
        if !first
            .iter()
            .any(|(topic, partition, _)| *topic == r.topic && *partition == r.partition)
        {
            first.push((r.topic.clone(), r.partition, r.offset));
        }
    }
    first
}

/// How long `consume` and `e2e` wait without a new record before giving up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

async fn e2e(bootstrap: &Target, args: E2eArgs) -> Outcome {
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
    let stats = Stats::with_latency(args.num_records);
    let base = stats.start;
    let producer = Producer::new(connect(bootstrap).await?, ProducerConfig::default());
    // A record refused at `send` or not acknowledged ends the run at once, as in produce:
    // the consumer would otherwise wait out IDLE_TIMEOUT for it.
    let (failures, mut first_failure) = mpsc::channel::<String>(1);
    let watch = DeliveryWatch {
        topic: args.topic.topic.clone(),
        failures,
    };
    let sending = tokio::spawn(send_stamped(producer, args.clone(), base, watch));
    let progress = stats.spawn_progress();
    let polling = poll_until(&mut consumer, args.num_records, |r, received| {
        let value = r.value.as_deref().unwrap_or_default();
        let sent_us = value
            .get(..8)
            .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
        let since_start = received.duration_since(base);
        let latency = since_start.saturating_sub(Duration::from_micros(sent_us));
        stats.record(value.len() as u64, 1, Some(latency));
    });
    tokio::select! {
        polled = polling => { polled?; }
        Some(failure) = first_failure.recv() => return Err(failure),
    }
    sending.await.map_err(|e| e.to_string())??;
    progress.finish();
    println!("{}", stats.summary(args.topic.format));
    Ok(())
}

/// e2e's producer: sends `args.num_records` records, each stamped in its first 8 bytes
/// with its send time (its due time, open loop) in µs since `base`, and awaits their
/// acknowledgements in send order.
async fn send_stamped(
    producer: Producer,
    args: E2eArgs,
    base: Instant,
    watch: DeliveryWatch,
) -> Outcome {
    let (deliveries, mut acknowledgements) = mpsc::channel::<DeliveryFuture>(64 * 1024);
    let failures = watch.failures.clone();
    let acker = tokio::spawn(async move {
        while let Some(delivery) = acknowledgements.recv().await {
            watch.acknowledged(delivery).await?;
        }
        Ok::<_, String>(())
    });
    let mut payloads = Payloads::new(PayloadKind::Random, args.record_size, 0x2545_f491_4f6c_dd1d);
    // Paced on a thread of its own, as in `run_producer`.
    let runtime = tokio::runtime::Handle::current();
    let producer_of_loop = producer.clone();
    let sent = tokio::task::spawn_blocking(move || -> Outcome {
        let start = Instant::now();
        let topic = &args.topic.topic;
        for i in 0..args.num_records {
            let sent = match due(start, args.throughput, i) {
                Some(at) => {
                    sleep_until(at);
                    at
                }
                None => Instant::now(),
            };
            let mut value = payloads.next().to_vec();
            value[..8]
                .copy_from_slice(&(sent.duration_since(base).as_micros() as u64).to_be_bytes());
            let record = ProducerRecord::new(topic.clone(), Bytes::from(value));
            let delivery = match runtime.block_on(producer_of_loop.send(record)) {
                Ok(delivery) => delivery,
                Err(e) => {
                    let failure = explain(&e, topic);
                    let _ = failures.try_send(failure.clone());
                    return Err(failure);
                }
            };
            if deliveries.blocking_send(delivery).is_err() {
                break; // The acker failed and reported it.
            }
        }
        Ok(())
    });
    sent.await.map_err(|e| e.to_string())??;
    producer.flush().await;
    acker.await.map_err(|e| e.to_string())?
}
