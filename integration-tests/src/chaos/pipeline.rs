//! The transactional workload of the chaos suite (issue 26): an exactly-once
//! consume-transform-produce pipeline, and its checker.
//!
//! An idempotent producer writes records to an input topic. Processors, each a
//! read_committed group consumer plus a transactional producer of its own transactional id,
//! turn every input record into one output record (`out:<partition>:<offset>` of the input)
//! and commit the outputs with the consumer's offsets in one transaction
//! (`send_offsets_to_transaction`, fenced by the member's generation). A processor that
//! meets any error aborts and starts over from scratch, as a Kafka Streams task does: a new
//! producer of the same transactional id (fencing the old one, whose open transaction the
//! coordinator aborts) and a new consumer, which resumes from the group's committed offsets
//! once no transaction holds them (KIP-447).
//!
//! Besides the nemesis's faults, the processors fail on their own, on a fixed schedule: every
//! `abort_every`-th transaction is aborted after its outputs and offsets were sent (the
//! instance then starts over, rewinding to the committed offsets), and every
//! `crash_every`-th is abandoned open, outputs written, as by a crashed process (the next
//! instance's initialisation fences it and has it aborted).
//!
//! The checker, once the nemesis healed and the processors drained the input: every record
//! of the input has exactly one committed output, no committed output names a record the
//! input does not have, the group's committed offsets are the input's ends, and every output
//! partition's last stable offset reached its high watermark (no transaction left hanging).
//! Aborted outputs are in the log (read_uncommitted counts them) and never read committed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, GroupConfig, IsolationLevel,
    OffsetReset, OffsetSpec, PartitionId, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The shape of the pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub input: String,
    pub output: String,
    /// Partitions of each topic.
    pub partitions: i32,
    pub group: String,
    pub processors: usize,
    /// Pause between two input records.
    pub send_interval: Duration,
    /// The processors' transaction timeout: what an abandoned transaction holds the
    /// output's last stable offset for at most.
    pub transaction_timeout: Duration,
    /// Each processor aborts every this many transactions on purpose (0: never).
    pub abort_every: u64,
    /// Each processor abandons every this many transactions open, as a crash (0: never).
    pub crash_every: u64,
}

impl PipelineConfig {
    /// Two processors between `input` and `output`.
    pub fn new(input: &str, output: &str, partitions: i32) -> PipelineConfig {
        PipelineConfig {
            input: input.to_owned(),
            output: output.to_owned(),
            partitions,
            group: "pipeline".to_owned(),
            processors: 2,
            send_interval: Duration::from_millis(5),
            transaction_timeout: Duration::from_secs(10),
            abort_every: 7,
            crash_every: 23,
        }
    }
}

/// What the processors did, for the report.
#[derive(Debug, Default)]
struct Counts {
    committed: AtomicU64,
    aborted: AtomicU64,
    abandoned: AtomicU64,
    restarts: AtomicU64,
}

/// A running pipeline.
pub struct Pipeline {
    config: PipelineConfig,
    bootstrap: String,
    feeding: Arc<AtomicBool>,
    processing: Arc<AtomicBool>,
    feeder: JoinHandle<()>,
    processors: Vec<JoinHandle<()>>,
    counts: Arc<Counts>,
}

fn client_config(bootstrap: &str) -> ClientConfig {
    ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_owned).collect(),
        client_id: "pipeline".into(),
        ..ClientConfig::default()
    }
}

impl Pipeline {
    /// Starts the input producer and the processors on `rt`. Both topics must exist.
    pub fn start(rt: &Runtime, bootstrap: &str, config: PipelineConfig) -> Pipeline {
        let feeding = Arc::new(AtomicBool::new(true));
        let processing = Arc::new(AtomicBool::new(true));
        let counts = Arc::new(Counts::default());
        let feeder = rt.spawn(feed(
            bootstrap.to_owned(),
            config.clone(),
            Arc::clone(&feeding),
        ));
        let processors = (0..config.processors)
            .map(|k| {
                rt.spawn(process(
                    k,
                    bootstrap.to_owned(),
                    config.clone(),
                    Arc::clone(&processing),
                    Arc::clone(&counts),
                ))
            })
            .collect();
        Pipeline {
            config,
            bootstrap: bootstrap.to_owned(),
            feeding,
            processing,
            feeder,
            processors,
            counts,
        }
    }

    /// Stops the input, waits (up to `timeout`) until the group has committed the input's
    /// ends, stops the processors and checks the output.
    pub fn finish(self, rt: &Runtime, timeout: Duration) -> PipelineReport {
        self.feeding.store(false, Ordering::Release);
        let _ = rt.block_on(self.feeder);
        let config = self.config.clone();
        let bootstrap = self.bootstrap.clone();
        let drained = rt.block_on(async {
            let client = Client::connect(client_config(&bootstrap)).await.ok()?;
            let deadline = Instant::now() + timeout;
            loop {
                let ends = log_ends(&client, &config.input, config.partitions).await;
                let committed = Admin::new(client.clone())
                    .committed_offsets(&config.group)
                    .await
                    .unwrap_or_default();
                let done = ends.iter().all(|(p, end)| {
                    *end == 0
                        || committed.get(&TopicPartition::new(&config.input, PartitionId(*p)))
                            == Some(end)
                });
                if done || Instant::now() >= deadline {
                    return Some(done);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        self.processing.store(false, Ordering::Release);
        for processor in self.processors {
            let _ = rt.block_on(processor);
        }
        let mut report = rt.block_on(check(&bootstrap, &config));
        if drained != Some(true) {
            report.anomalies.push(format!(
                "the group did not commit the input's ends within {timeout:?}"
            ));
        }
        report.transactions_committed = self.counts.committed.load(Ordering::Relaxed);
        report.transactions_aborted = self.counts.aborted.load(Ordering::Relaxed);
        report.transactions_abandoned = self.counts.abandoned.load(Ordering::Relaxed);
        report.restarts = self.counts.restarts.load(Ordering::Relaxed);
        report
    }
}

/// The input producer: idempotent, keyed records, a bounded number in flight.
async fn feed(bootstrap: String, config: PipelineConfig, feeding: Arc<AtomicBool>) {
    let Ok(client) = Client::connect(client_config(&bootstrap)).await else {
        return;
    };
    let producer = Producer::new(
        client,
        ProducerConfig {
            delivery_timeout: Duration::from_secs(20),
            ..ProducerConfig::default()
        },
    );
    let in_flight = Arc::new(Semaphore::new(32));
    let mut n: u64 = 0;
    while feeding.load(Ordering::Acquire) {
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("semaphore");
        let record = ProducerRecord::new(config.input.clone(), format!("in-{n}"))
            .key(format!("k{}", n % 97));
        n += 1;
        if let Ok(delivery) = producer.send(record).await {
            tokio::spawn(async move {
                let _ = delivery.await;
                drop(permit);
            });
        }
        tokio::time::sleep(config.send_interval).await;
    }
    producer.close().await;
}

/// Why a processor instance stopped.
enum Stop {
    /// Its failure schedule: an aborted or abandoned transaction.
    Planned,
    /// An error.
    Failed(String),
}

/// One processor slot: runs instances until `processing` ends, a new one after each stop.
async fn process(
    k: usize,
    bootstrap: String,
    config: PipelineConfig,
    processing: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    // Transactions begun by this slot's instances, for the failure schedule.
    let mut begun: u64 = 0;
    while processing.load(Ordering::Acquire) {
        match instance(k, &bootstrap, &config, &processing, &counts, &mut begun).await {
            Ok(()) => {}
            Err(Stop::Planned) => {
                counts.restarts.fetch_add(1, Ordering::Relaxed);
            }
            Err(Stop::Failed(e)) => {
                eprintln!("chaos: pipeline processor {k}: {e}; starting over");
                counts.restarts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One processor instance, until it stops or processing ends.
async fn instance(
    k: usize,
    bootstrap: &str,
    config: &PipelineConfig,
    processing: &AtomicBool,
    counts: &Counts,
    begun: &mut u64,
) -> Result<(), Stop> {
    let client = Client::connect(client_config(bootstrap))
        .await
        .map_err(|e| Stop::Failed(format!("connecting: {e}")))?;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            transactional_id: Some(format!("pipeline-{k}")),
            transaction_timeout: config.transaction_timeout,
            request_timeout: Duration::from_secs(5),
            delivery_timeout: Duration::from_secs(15),
            ..ProducerConfig::default()
        },
    );
    // First the producer: its initialisation waits for (or aborts) what an earlier
    // instance of the id left open, so the consumer then reads settled offsets.
    producer
        .init_transactions()
        .await
        .map_err(|e| Stop::Failed(format!("init_transactions: {e}")))?;
    let mut consumer = Consumer::with_group(
        client,
        ConsumerConfig {
            isolation_level: IsolationLevel::ReadCommitted,
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
        GroupConfig {
            enable_auto_commit: false,
            session_timeout: Duration::from_secs(6),
            ..GroupConfig::new(&config.group)
        },
    )
    .map_err(|e| Stop::Failed(format!("consumer: {e}")))?;
    consumer
        .subscribe([config.input.clone()])
        .map_err(|e| Stop::Failed(format!("subscribe: {e}")))?;
    let outcome = run_instance(&producer, &mut consumer, config, processing, counts, begun).await;
    if let Err(Stop::Failed(_)) = &outcome {
        let _ = tokio::time::timeout(Duration::from_secs(10), producer.abort_transaction()).await;
    }
    // Closed, so the group rebalances at once rather than after the session timeout (an
    // abandoned transaction's instance too: the crash is of its producer).
    let _ = consumer.close().await;
    outcome
}

async fn run_instance(
    producer: &Producer,
    consumer: &mut Consumer,
    config: &PipelineConfig,
    processing: &AtomicBool,
    counts: &Counts,
    begun: &mut u64,
) -> Result<(), Stop> {
    let failed = |what: &str, e: sluice_client::Error| Stop::Failed(format!("{what}: {e}"));
    while processing.load(Ordering::Acquire) {
        let records = consumer
            .poll(Duration::from_millis(200))
            .await
            .map_err(|e| failed("poll", e))?;
        if records.is_empty() {
            continue;
        }
        let Some(member) = consumer.group_generation() else {
            // Between generations: these records are not this member's to commit.
            return Err(Stop::Failed("no current generation".to_owned()));
        };
        producer
            .begin_transaction()
            .map_err(|e| failed("begin", e))?;
        *begun += 1;
        let mut next: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        for r in &records {
            let value = format!("out:{}:{}", r.partition.0, r.offset);
            let mut record = ProducerRecord::new(config.output.clone(), value);
            if let Some(key) = &r.key {
                record = record.key(key.clone());
            }
            if let Err(e) = producer.send(record).await {
                counts.aborted.fetch_add(1, Ordering::Relaxed);
                return Err(failed("send", e));
            }
            let tp = TopicPartition::new(&r.topic, r.partition);
            let entry = next.entry(tp).or_insert(0);
            *entry = (*entry).max(r.offset + 1);
        }
        let offsets: Vec<(TopicPartition, i64)> = next.into_iter().collect();
        if let Err(e) = producer
            .send_offsets_to_transaction(&config.group, Some(member), &offsets)
            .await
        {
            counts.aborted.fetch_add(1, Ordering::Relaxed);
            return Err(failed("send_offsets_to_transaction", e));
        }
        if config.crash_every > 0 && begun.is_multiple_of(config.crash_every) {
            // Outputs written, offsets staged, never ended: the next instance's
            // init_transactions has it aborted.
            producer.flush().await;
            counts.abandoned.fetch_add(1, Ordering::Relaxed);
            return Err(Stop::Planned);
        }
        if config.abort_every > 0 && begun.is_multiple_of(config.abort_every) {
            producer.flush().await;
            producer
                .abort_transaction()
                .await
                .map_err(|e| failed("abort", e))?;
            counts.aborted.fetch_add(1, Ordering::Relaxed);
            // Start over: the next instance resumes from the committed offsets.
            return Err(Stop::Planned);
        }
        if let Err(e) = producer.commit_transaction().await {
            counts.aborted.fetch_add(1, Ordering::Relaxed);
            return Err(failed("commit", e));
        }
        counts.committed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Each partition's high watermark.
async fn log_ends(client: &Client, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let lookups: Vec<(PartitionId, i64)> = (0..partitions).map(|p| (PartitionId(p), -1)).collect();
    let mut ends = BTreeMap::new();
    if let Ok(found) = client.list_offsets(topic, &lookups).await {
        for (p, end) in found {
            if let Ok(end) = end {
                ends.insert(p.0, end);
            }
        }
    }
    ends
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct PipelineReport {
    pub inputs: usize,
    pub outputs_committed: usize,
    pub outputs_written: usize,
    pub transactions_committed: u64,
    pub transactions_aborted: u64,
    pub transactions_abandoned: u64,
    pub restarts: u64,
    pub anomalies: Vec<String>,
}

impl PipelineReport {
    pub fn is_ok(&self) -> bool {
        self.anomalies.is_empty()
    }
}

impl fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline: {} inputs, {} committed outputs ({} written, aborted ones included); \
             {} transactions committed, {} aborted, {} abandoned open; {} processor restarts",
            self.inputs,
            self.outputs_committed,
            self.outputs_written,
            self.transactions_committed,
            self.transactions_aborted,
            self.transactions_abandoned,
            self.restarts
        )?;
        if self.anomalies.is_empty() {
            return writeln!(f, "no anomalies");
        }
        writeln!(f, "{} anomalies:", self.anomalies.len())?;
        for a in self.anomalies.iter().take(20) {
            writeln!(f, "  {a}")?;
        }
        Ok(())
    }
}

/// Reads every record of `topic` up to its high watermark at `isolation`: the values, and
/// the partitions whose read stopped short of the high watermark (a read_committed read
/// stops at the last stable offset).
async fn read_all(
    client: &Client,
    topic: &str,
    partitions: i32,
    isolation: IsolationLevel,
    patience: Duration,
) -> (Vec<(i32, i64, String)>, Vec<String>) {
    let ends = log_ends(client, topic, partitions).await;
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            isolation_level: isolation,
            ..ConsumerConfig::default()
        },
    );
    let assigned: Vec<(String, PartitionId, OffsetSpec)> = (0..partitions)
        .map(|p| (topic.to_owned(), PartitionId(p), OffsetSpec::Earliest))
        .collect();
    let mut out = Vec::new();
    let mut short = Vec::new();
    if let Err(e) = consumer.assign(assigned).await {
        short.push(format!("cannot read {topic}: {e}"));
        return (out, short);
    }
    let deadline = Instant::now() + patience;
    loop {
        let reached = ends.iter().all(|(p, end)| {
            *end == 0 || consumer.position(topic, PartitionId(*p)).unwrap_or(0) >= *end
        });
        if reached {
            break;
        }
        if Instant::now() >= deadline {
            for (p, end) in &ends {
                let at = consumer.position(topic, PartitionId(*p)).unwrap_or(0);
                if at < *end {
                    short.push(format!(
                        "{topic}/{p}: a {isolation:?} read stopped at {at}, below the high \
                         watermark {end} (a transaction left hanging?)"
                    ));
                }
            }
            break;
        }
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => out.extend(records.into_iter().map(|r| {
                let value = r
                    .value
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                (r.partition.0, r.offset, value)
            })),
            // Retried at the next poll; a read that never gets there is reported above.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    (out, short)
}

/// The checker (see the module doc).
async fn check(bootstrap: &str, config: &PipelineConfig) -> PipelineReport {
    let mut report = PipelineReport::default();
    let client = match Client::connect(client_config(bootstrap)).await {
        Ok(c) => c,
        Err(e) => {
            report
                .anomalies
                .push(format!("cannot connect to check: {e}"));
            return report;
        }
    };
    let patience = config.transaction_timeout * 3;
    let (inputs, short) = read_all(
        &client,
        &config.input,
        config.partitions,
        IsolationLevel::ReadUncommitted,
        patience,
    )
    .await;
    report.anomalies.extend(short);
    let (committed, short) = read_all(
        &client,
        &config.output,
        config.partitions,
        IsolationLevel::ReadCommitted,
        patience,
    )
    .await;
    report.anomalies.extend(short);
    let (written, short) = read_all(
        &client,
        &config.output,
        config.partitions,
        IsolationLevel::ReadUncommitted,
        patience,
    )
    .await;
    report.anomalies.extend(short);
    report.inputs = inputs.len();
    report.outputs_committed = committed.len();
    report.outputs_written = written.len();

    let mut outputs: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, value) in &committed {
        *outputs.entry(value.as_str()).or_default() += 1;
    }
    let expected: Vec<String> = inputs
        .iter()
        .map(|(p, o, _)| format!("out:{p}:{o}"))
        .collect();
    for e in &expected {
        match outputs.remove(e.as_str()) {
            Some(1) => {}
            Some(n) => report
                .anomalies
                .push(format!("input {e:?} has {n} committed outputs")),
            None => report
                .anomalies
                .push(format!("input {e:?} has no committed output")),
        }
    }
    for (value, n) in outputs {
        report.anomalies.push(format!(
            "committed output {value:?} ({n}) names no record of the input"
        ));
    }
    // Every committed output is among what was written (read_uncommitted).
    let mut all: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, value) in &written {
        *all.entry(value.as_str()).or_default() += 1;
    }
    for (_, _, value) in &committed {
        if !all.contains_key(value.as_str()) {
            report.anomalies.push(format!(
                "{value:?} is read committed but not read uncommitted"
            ));
        }
    }
    let ends = log_ends(&client, &config.input, config.partitions).await;
    let group = Admin::new(client.clone())
        .committed_offsets(&config.group)
        .await
        .unwrap_or_default();
    for (p, end) in ends {
        let at = group
            .get(&TopicPartition::new(&config.input, PartitionId(p)))
            .copied();
        if end > 0 && at != Some(end) {
            report.anomalies.push(format!(
                "group {:?} committed {at:?} for {}/{p}, whose end is {end}",
                config.group, config.input
            ));
        }
    }
    report
}
