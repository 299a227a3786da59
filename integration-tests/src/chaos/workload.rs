//! The chaos workload (issue 8): idempotent acks=all producers writing unique values to
//! chosen partitions, consumers in a group committing explicitly, and consumers with
//! assigned partitions, every attempt, poll and commit recorded in a [`Recorder`] for the
//! checker. It runs on its own runtime threads while the nemesis breaks the cluster, and
//! [`Workload::finish`] stops the producers, drains every partition to its log end and
//! returns those ends (the checker's [`CheckConfig::log_end_offsets`]).
//!
//! [`CheckConfig::log_end_offsets`]: super::checker::CheckConfig

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, ConsumerEvent, ConsumerRecord, GroupConfig,
    OffsetReset, OffsetSpec, PartitionId, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use sluice_protocol::Offset;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use super::history::{
    CommitOutcome, CommittedOffset, ConsumerMode, PartitionKey, ProduceInvocation, ProduceOutcome,
    Recorder,
};

/// The shape of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub topic: String,
    pub partitions: i32,
    pub producers: usize,
    /// Records each producer may have waiting for an answer.
    pub in_flight: usize,
    /// Pause between two sends of one producer.
    pub send_interval: Duration,
    pub group: String,
    pub group_consumers: usize,
    pub assign_consumers: usize,
    /// How often group consumers commit what they consumed.
    pub commit_interval: Duration,
}

impl WorkloadConfig {
    /// Three producers, two group members and one assigned consumer over `partitions`.
    pub fn new(topic: &str, partitions: i32) -> WorkloadConfig {
        WorkloadConfig {
            topic: topic.to_owned(),
            partitions,
            producers: 3,
            in_flight: 32,
            send_interval: Duration::from_millis(5),
            group: "chaos".to_owned(),
            group_consumers: 2,
            assign_consumers: 1,
            commit_interval: Duration::from_millis(500),
        }
    }
}

/// How far each consumer has read, per partition (the next offset), for the drain.
type Progress = Arc<Mutex<BTreeMap<String, BTreeMap<i32, i64>>>>;

/// Records how far `consumer` has read each partition: past the furthest record polled
/// (a group member may read a partition again after a rebalance).
fn note_progress(progress: &Progress, consumer: &str, records: &[ConsumerRecord]) {
    let mut progress = progress.lock().unwrap();
    let mine = progress.entry(consumer.to_owned()).or_default();
    for r in records {
        let next = mine.entry(r.partition.0).or_insert(0);
        *next = (*next).max(r.offset + 1);
    }
}

/// A running workload.
pub struct Workload {
    config: WorkloadConfig,
    bootstrap: String,
    producing: Arc<AtomicBool>,
    consuming: Arc<AtomicBool>,
    producers: Vec<tokio::task::JoinHandle<()>>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
    progress: Progress,
    /// Acknowledged records, for the report.
    pub acked: Arc<AtomicU64>,
}

fn client_config(bootstrap: &str) -> ClientConfig {
    ClientConfig {
        bootstrap: bootstrap.split(',').map(str::to_owned).collect(),
        client_id: "chaos".into(),
        ..ClientConfig::default()
    }
}

impl Workload {
    /// Starts producers and consumers on `rt`. The topic must exist.
    pub fn start(
        rt: &Runtime,
        bootstrap: &str,
        config: WorkloadConfig,
        recorder: &Recorder,
    ) -> Workload {
        let producing = Arc::new(AtomicBool::new(true));
        let consuming = Arc::new(AtomicBool::new(true));
        let acked = Arc::new(AtomicU64::new(0));
        let progress: Progress = Arc::default();
        let producers = (0..config.producers)
            .map(|i| {
                let task = produce(
                    format!("p{i}"),
                    bootstrap.to_owned(),
                    config.clone(),
                    recorder.clone(),
                    Arc::clone(&producing),
                    Arc::clone(&acked),
                );
                rt.spawn(task)
            })
            .collect();
        let mut consumers = Vec::new();
        for i in 0..config.group_consumers {
            let task = consume_in_group(
                format!("g{i}"),
                bootstrap.to_owned(),
                config.clone(),
                recorder.clone(),
                Arc::clone(&consuming),
                Arc::clone(&progress),
            );
            consumers.push(rt.spawn(task));
        }
        for i in 0..config.assign_consumers {
            let task = consume_assigned(
                format!("a{i}"),
                bootstrap.to_owned(),
                config.clone(),
                recorder.clone(),
                Arc::clone(&consuming),
                Arc::clone(&progress),
            );
            consumers.push(rt.spawn(task));
        }
        Workload {
            config,
            bootstrap: bootstrap.to_owned(),
            producing,
            consuming,
            producers,
            consumers,
            progress,
            acked,
        }
    }

    /// Stops producing (waiting for every outstanding answer), drains: waits until the
    /// assigned consumers have read every partition to its log end and the group has
    /// read each partition to its end, then stops the consumers. Returns the log ends.
    /// Call once the cluster is healed.
    pub fn finish(self, rt: &Runtime, drain_timeout: Duration) -> BTreeMap<PartitionKey, Offset> {
        self.producing.store(false, Ordering::Release);
        for task in self.producers {
            let _ = rt.block_on(task);
        }
        let ends = rt.block_on(log_ends(&self.bootstrap, &self.config));
        let deadline = std::time::Instant::now() + drain_timeout;
        loop {
            let done = {
                let progress = self.progress.lock().unwrap();
                let group_reached = |p: i32, end: i64| {
                    progress
                        .iter()
                        .filter(|(name, _)| name.starts_with('g'))
                        .any(|(_, parts)| parts.get(&p).is_some_and(|next| *next >= end))
                };
                let assigned_reached = |p: i32, end: i64| {
                    progress
                        .iter()
                        .filter(|(name, _)| name.starts_with('a'))
                        .all(|(_, parts)| parts.get(&p).is_some_and(|next| *next >= end))
                };
                ends.iter().all(|(key, end)| {
                    let p = key.partition.0;
                    (end.0 == 0 || self.config.group_consumers == 0 || group_reached(p, end.0))
                        && (end.0 == 0
                            || self.config.assign_consumers == 0
                            || assigned_reached(p, end.0))
                })
            };
            if done || std::time::Instant::now() > deadline {
                if !done {
                    eprintln!("chaos: the drain did not reach every log end in {drain_timeout:?}; the checker will report what is unread");
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.consuming.store(false, Ordering::Release);
        for task in self.consumers {
            let _ = rt.block_on(task);
        }
        ends
    }
}

/// Each partition's log end (high watermark), asked until every partition answers.
async fn log_ends(bootstrap: &str, config: &WorkloadConfig) -> BTreeMap<PartitionKey, Offset> {
    let client = Client::connect(client_config(bootstrap))
        .await
        .expect("connect");
    let lookups: Vec<(PartitionId, i64)> = (0..config.partitions)
        .map(|p| (PartitionId(p), -1))
        .collect();
    for _ in 0..120 {
        if let Ok(found) = client.list_offsets(&config.topic, &lookups).await {
            if found.iter().all(|(_, end)| end.is_ok()) {
                return found
                    .into_iter()
                    .map(|(p, end)| {
                        (
                            PartitionKey::new(config.topic.clone(), p),
                            Offset(end.unwrap()),
                        )
                    })
                    .collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the partitions' log ends could not be read after healing");
}

async fn produce(
    name: String,
    bootstrap: String,
    config: WorkloadConfig,
    recorder: Recorder,
    producing: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) {
    let client = Client::connect(client_config(&bootstrap))
        .await
        .expect("connect");
    let producer_config = ProducerConfig {
        delivery_timeout: Duration::from_secs(20),
        ..ProducerConfig::default()
    };
    let idempotent = producer_config.is_idempotent();
    let producer = Producer::new(client, producer_config);
    let in_flight = Arc::new(Semaphore::new(config.in_flight));
    let mut waiting = Vec::new();
    let mut n: u64 = 0;
    while producing.load(Ordering::Acquire) {
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("semaphore");
        let value = format!("{name}-{n}");
        let partition = PartitionId((n % config.partitions as u64) as i32);
        n += 1;
        let handle = recorder.produce_invoked(ProduceInvocation {
            producer: name.clone(),
            idempotent,
            topic: config.topic.clone(),
            partition: Some(partition),
            value: value.clone(),
        });
        let record = ProducerRecord::new(config.topic.clone(), value).partition(partition);
        match producer.send(record).await {
            Err(e) => recorder.produce_completed(handle, ProduceOutcome::from_send_error(&e)),
            Ok(delivery) => {
                let recorder = recorder.clone();
                let acked = Arc::clone(&acked);
                waiting.push(tokio::spawn(async move {
                    let result = delivery.await;
                    if result.is_ok() {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    recorder.produce_completed(handle, ProduceOutcome::from_delivery(&result));
                    drop(permit);
                }));
            }
        }
        waiting.retain(|t| !t.is_finished());
        tokio::time::sleep(config.send_interval).await;
    }
    producer.flush().await;
    for task in waiting {
        let _ = task.await;
    }
    producer.close().await;
}

async fn consume_in_group(
    name: String,
    bootstrap: String,
    config: WorkloadConfig,
    recorder: Recorder,
    consuming: Arc<AtomicBool>,
    progress: Progress,
) {
    let client = Client::connect(client_config(&bootstrap))
        .await
        .expect("connect");
    let consumer_config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let group_config = GroupConfig {
        session_timeout: Duration::from_secs(6),
        heartbeat_interval: Duration::from_millis(500),
        rebalance_timeout: Duration::from_secs(20),
        enable_auto_commit: false,
        ..GroupConfig::new(config.group.clone())
    };
    let mut consumer =
        Consumer::with_group(client, consumer_config, group_config).expect("group consumer");
    consumer
        .subscribe([config.topic.clone()])
        .expect("subscribe");
    let mode = ConsumerMode::Group {
        group: config.group.clone(),
    };
    // The next offset after what this member was given, per owned partition.
    let mut consumed: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut last_commit = tokio::time::Instant::now();
    while consuming.load(Ordering::Acquire) {
        match consumer.poll_event(Duration::from_millis(200)).await {
            Ok(ConsumerEvent::Records(records)) => {
                recorder.poll(&name, &mode, &records);
                note_progress(&progress, &name, &records);
                for r in &records {
                    consumed.insert(
                        TopicPartition::new(r.topic.clone(), r.partition),
                        r.offset + 1,
                    );
                }
            }
            Ok(ConsumerEvent::PartitionsRevoked(_)) => {
                commit(
                    &name,
                    &config.group,
                    &mut consumer,
                    &mut consumed,
                    &recorder,
                )
                .await;
                consumed.clear();
            }
            Ok(ConsumerEvent::PartitionsLost(_)) | Ok(ConsumerEvent::PartitionsAssigned(_)) => {
                consumed.clear();
            }
            Err(e) => {
                eprintln!("chaos: {name} poll failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if last_commit.elapsed() >= config.commit_interval {
            commit(
                &name,
                &config.group,
                &mut consumer,
                &mut consumed,
                &recorder,
            )
            .await;
            last_commit = tokio::time::Instant::now();
        }
    }
    commit(
        &name,
        &config.group,
        &mut consumer,
        &mut consumed,
        &recorder,
    )
    .await;
    let _ = consumer.close().await;
}

/// Commits `consumed` (and records the commit); a refused commit is recorded as failed.
async fn commit(
    name: &str,
    group: &str,
    consumer: &mut Consumer,
    consumed: &mut BTreeMap<TopicPartition, i64>,
    recorder: &Recorder,
) {
    if consumed.is_empty() {
        return;
    }
    let offsets: Vec<CommittedOffset> = consumed
        .iter()
        .map(|(tp, offset)| CommittedOffset {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset: Offset(*offset),
        })
        .collect();
    let invoked = recorder.now_us();
    let outcome = match consumer.commit_offsets(consumed.clone()).await {
        Ok(()) => CommitOutcome::Ok,
        Err(e) => CommitOutcome::Failed {
            error: e.to_string(),
        },
    };
    recorder.commit(name, group, invoked, offsets, outcome);
}

async fn consume_assigned(
    name: String,
    bootstrap: String,
    config: WorkloadConfig,
    recorder: Recorder,
    consuming: Arc<AtomicBool>,
    progress: Progress,
) {
    let client = Client::connect(client_config(&bootstrap))
        .await
        .expect("connect");
    let consumer_config = ConsumerConfig {
        auto_offset_reset: OffsetReset::None,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client, consumer_config);
    let assignment: Vec<(String, PartitionId, OffsetSpec)> = (0..config.partitions)
        .map(|p| (config.topic.clone(), PartitionId(p), OffsetSpec::Offset(0)))
        .collect();
    while let Err(e) = consumer.assign(assignment.clone()).await {
        eprintln!("chaos: {name} assign failed: {e}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for p in 0..config.partitions {
        recorder.seek(&name, &config.topic, PartitionId(p), Some(Offset(0)));
    }
    let mode = ConsumerMode::Assign;
    while consuming.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(200)).await {
            Ok(records) => {
                if records.is_empty() {
                    continue;
                }
                recorder.poll(&name, &mode, &records);
                note_progress(&progress, &name, &records);
            }
            Err(e) => {
                eprintln!("chaos: {name} poll failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
