//! [`Producer`]: batches records per partition and sends them to partition leaders.
//!
//! `send` picks the partition, appends the record to the shared [`Accumulator`] (after
//! taking buffer space, so memory stays bounded) and returns a [`DeliveryFuture`]. One
//! background task per producer drains ready batches (full, lingered, or flushed), groups
//! them by leader, and sends Produce requests per broker, one batch per partition each, in
//! drain order on the broker's connection; each request runs in its own task, and its
//! outcome completes the records' futures or hands the batch back for a retry (after a
//! metadata refresh and a backoff) ahead of anything newer in its partition.
//!
//! Failover: a leader that dies shows as a refused or reset connection, one that hangs as a
//! request timeout, and a leader that moved as NOT_LEADER_OR_FOLLOWER (or FENCED /
//! UNKNOWN_LEADER_EPOCH, LEADER_NOT_AVAILABLE). Each of those refreshes the topic's metadata
//! (from any live broker, see [`Client::send_any`]) before the batch is retried, so the
//! retry goes to wherever the leader is then. Retries back off exponentially with jitter and
//! end at the delivery timeout.
//!
//! Idempotence (on by default with [`Acks::All`]): before its first batch leaves, the
//! producer gets a producer id and epoch (InitProducerId, from any broker, retried in the
//! background while batches wait, each batch still bounded by its delivery timeout). The
//! accumulator stamps each batch with the id, the epoch and its partition's next sequence
//! when it is first sent, and a retry resends the same bytes, so a leader that already has
//! the batch answers with its original offsets instead of writing it again. A stamped batch
//! that ends without an acknowledgement (delivery timeout, a non-retriable error) or that the
//! leader refuses as OUT_OF_ORDER_SEQUENCE_NUMBER although it was next may break its
//! partition's sequence; the producer then bumps its epoch (InitProducerId with its id and
//! epoch, KIP-360), and that partition starts again at sequence 0 in the new epoch,
//! restamping the batches the leader is known to lack. Other partitions move to the new
//! epoch with their next unstamped batch: a batch already stamped keeps its stamp until it
//! is acknowledged, so its resends still deduplicate. Up to five batches per partition are
//! in flight; the rules that keep them in order are in [`crate::accumulator`].
//!
//! A batch refused as too large is split ([`Accumulator::retry_split`]); with
//! [`ProducerConfig::stop_after_failure`] the first failure stops the producer: the sender
//! task fails what was not sent ([`Accumulator::take_unsent`]) and `send` refuses more.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_protocol::batch::{compress_batch, Compression};
use sluice_protocol::messages::{
    InitProducerIdRequest, ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic,
};
use sluice_protocol::{ApiKey, BrokerId, ErrorCode, PartitionId, Request, Response};
use tokio::sync::{oneshot, watch, Notify, Semaphore};

use crate::accumulator::{
    batch_size_for, with_crc, Accumulator, AccumulatorConfig, Batch, Completion, IdentityNeed,
    ProducerIdentity, RecordParts,
};
use crate::backoff::{Backoff, Jitter};
use crate::client::{broker_timeout_ms, leaderless, unexpected, Client, TopicMemo};
use crate::delivery::{DeliveryFuture, Written};
use crate::error::{Error, Result};
use crate::fast_hash::FastMap;
use crate::partitioner::{partition_for_key, sticky_partition};
use crate::TopicPartition;

/// Which acknowledgement a produce request waits for (sluice-protocol's `Acks`, shared
/// with the broker).
///
/// ```
/// use sluice_client::{Acks, ProducerConfig};
/// assert_eq!(ProducerConfig::default().acks, Acks::All);
/// ```
pub use sluice_protocol::Acks;

/// Producer settings.
///
/// ```
/// use std::time::Duration;
/// use sluice_client::{Acks, ProducerConfig};
/// let config = ProducerConfig { acks: Acks::Leader, linger: Duration::from_millis(20), ..ProducerConfig::default() };
/// assert_eq!(config.batch_bytes_max, 1024 * 1024);
/// ```
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    /// Acknowledgement to wait for. Default [`Acks::All`].
    pub acks: Acks,
    /// Largest batch in bytes; a batch is sent as soon as it is full. Default 1 MiB.
    pub batch_bytes_max: usize,
    /// How long a batch waits for more records before it is sent. Default 5 ms.
    pub linger: Duration,
    /// Most retries of one batch after retriable errors. Default: unbounded, so
    /// `delivery_timeout` is the bound.
    pub retries_max: u32,
    /// Wait before the first retry of a batch. Each further failure of the same batch
    /// doubles it, up to `retry_backoff_max`; every wait is jittered by up to 20% either
    /// way (never past the cap), so clients that failed together do not retry together.
    /// Default 100 ms.
    pub retry_backoff: Duration,
    /// Longest wait between retries of a batch. Default 1 s.
    pub retry_backoff_max: Duration,
    /// Longest wait for the answer to one Produce request, connecting included, and never
    /// past the delivery deadline of the batches in it. The broker is told a little less
    /// as the request's `timeout_ms` (how long the leader may wait for its in-sync replicas
    /// under [`Acks::All`] before it answers REQUEST_TIMED_OUT), so a leader that is alive
    /// but cannot replicate says so; a leader that is hung or gone is given up on here (its
    /// connection closed) and the batches retried where the metadata then says the leader
    /// is. Keep it well below `delivery_timeout`, so that a hung leader leaves time to
    /// retry. Default 30 s.
    pub request_timeout: Duration,
    /// Longest time from `send` to acknowledgement, retries included; then the record
    /// fails with [`Error::DeliveryTimeout`]. Default 120 s.
    pub delivery_timeout: Duration,
    /// Bytes of records buffered and in flight before `send` waits. Default 32 MiB.
    pub buffer_bytes_max: usize,
    /// How long `send` waits for a topic missing from the metadata to appear (a topic
    /// just created may take a moment to reach every broker), or, the first time a topic
    /// is used, for some broker to answer for its metadata. Default 2 s.
    pub unknown_topic_wait: Duration,
    /// Idempotent delivery: a retried batch is written at most once per partition, and
    /// records keep their `send` order. The producer gets a producer id from the cluster
    /// before its first batch, and stamps every batch with it and a sequence number. Default
    /// `true`.
    ///
    /// Effective only with [`Acks::All`]: with [`Acks::Leader`] or [`Acks::None`] the
    /// producer is not idempotent, silently (a leader's acknowledgement can be lost with
    /// the leader, so sequences could not be trusted; Kafka makes the same choice when acks
    /// is set explicitly). Turn it off to produce to a broker without producer ids, or to
    /// spare the one InitProducerId round trip.
    pub enable_idempotence: bool,
    /// After the first record that fails for good (at `send` or at delivery), send nothing
    /// more: records not yet sent, and later `send`s, fail with
    /// [`Error::StoppedAfterFailure`]; only resends of batches whose fate is unknown still
    /// go, to settle it. Each partition's log then holds a prefix of the records sent to
    /// it: what a caller that resends "from the first failure" needs (`sluice produce`
    /// sets it). Default `false`: Kafka's rule, a failure is the failed record's alone and
    /// later records are still written.
    pub stop_after_failure: bool,
    /// How batches are compressed (Kafka's `compression.type`). Default none. The records
    /// of each batch are compressed together when the batch is sealed; `batch_bytes_max`
    /// counts them uncompressed. A batch that compression would not shrink is sent
    /// uncompressed, so no batch outgrows `batch_bytes_max`.
    pub compression: CompressionConfig,
    /// Kafka's `transactional.id`: the producer's records go in transactions
    /// ([`Producer::init_transactions`], [`Producer::begin_transaction`],
    /// [`Producer::commit_transaction`]), and a new producer with the same id fences this
    /// one. Needs idempotence (acks=all). Default none.
    pub transactional_id: Option<String>,
    /// Kafka's `transaction.timeout.ms`: the coordinator aborts a transaction left open
    /// longer (and fences this producer). At most the brokers' 15 minutes. Default 60 s.
    pub transaction_timeout: Duration,
}

/// A producer's batch codec and its level, checked when made: Kafka's `compression.type`
/// and `compression.{gzip,zstd}.level`.
///
/// ```
/// use sluice_client::{Compression, CompressionConfig};
/// let zstd = CompressionConfig::new(Compression::Zstd, Some(6)).unwrap();
/// assert_eq!(zstd, "zstd:6".parse().unwrap());
/// assert!(CompressionConfig::new(Compression::Gzip, Some(12)).is_err());
/// assert_eq!(CompressionConfig::default().codec(), Compression::None);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompressionConfig {
    codec: Compression,
    level: Option<i32>,
}

impl CompressionConfig {
    /// `codec` at `level`, or at the codec's default level (gzip 6, zstd 3) with `None`.
    /// gzip takes levels 1-9, zstd 1-22; snappy, lz4 and none take none (sluice's lz4
    /// encoder, pure Rust, has one fast level).
    pub fn new(codec: Compression, level: Option<i32>) -> Result<CompressionConfig> {
        sluice_protocol::compression::check_level(codec, level)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(CompressionConfig { codec, level })
    }

    /// The codec.
    pub fn codec(&self) -> Compression {
        self.codec
    }

    /// The level, `None` for the codec's default.
    pub fn level(&self) -> Option<i32> {
        self.level
    }
}

impl std::str::FromStr for CompressionConfig {
    type Err = Error;

    /// `CODEC` or `CODEC:LEVEL`, with Kafka's codec names: none, gzip, snappy, lz4, zstd.
    fn from_str(s: &str) -> Result<CompressionConfig> {
        let (codec, level) = match s.split_once(':') {
            Some((codec, level)) => {
                let level = level.parse::<i32>().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "compression level {level:?} is not a number (CODEC or CODEC:LEVEL)"
                    ))
                })?;
                (codec, Some(level))
            }
            None => (s, None),
        };
        let codec = codec
            .parse::<Compression>()
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        CompressionConfig::new(codec, level)
    }
}

impl std::fmt::Display for CompressionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.level {
            Some(level) => write!(f, "{}:{level}", self.codec),
            None => write!(f, "{}", self.codec),
        }
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            batch_bytes_max: 1024 * 1024,
            linger: Duration::from_millis(5),
            retries_max: u32::MAX,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(120),
            buffer_bytes_max: 32 * 1024 * 1024,
            unknown_topic_wait: Duration::from_secs(2),
            enable_idempotence: true,
            stop_after_failure: false,
            compression: CompressionConfig::default(),
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

impl ProducerConfig {
    /// Whether batches are stamped for idempotence: asked for, and acks=all.
    ///
    /// ```
    /// use sluice_client::{Acks, ProducerConfig};
    /// assert!(ProducerConfig::default().is_idempotent());
    /// let leader_acks = ProducerConfig { acks: Acks::Leader, ..ProducerConfig::default() };
    /// assert!(!leader_acks.is_idempotent());
    /// ```
    pub fn is_idempotent(&self) -> bool {
        self.enable_idempotence && self.acks == Acks::All
    }
}

/// A record to send.
///
/// ```
/// use sluice_client::ProducerRecord;
/// let record = ProducerRecord::new("orders", "order 42").key("customer-7");
/// assert_eq!(record.partition, None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The topic.
    pub topic: String,
    /// A partition to use instead of the partitioner's choice.
    pub partition: Option<PartitionId>,
    /// The key: records with the same key go to the same partition.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone, which deletes its key from a compacted topic
    /// (`cleanup.policy=compact`): see [`ProducerRecord::tombstone`].
    pub value: Option<Bytes>,
    /// Headers: name and value.
    pub headers: Vec<(String, Bytes)>,
    /// Creation time in ms since the Unix epoch; now when `None`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// A tombstone: `key` with a null value. On a compacted topic it deletes the key: the
    /// log cleaner removes the key's earlier records, and the tombstone itself once it is
    /// `delete.retention.ms` old.
    ///
    /// ```
    /// use sluice_client::ProducerRecord;
    /// let delete = ProducerRecord::tombstone("profiles", "alice");
    /// assert_eq!(delete.value, None);
    /// ```
    pub fn tombstone(topic: impl Into<String>, key: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            value: None,
            ..ProducerRecord::new(topic, Bytes::new()).key(key)
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> ProducerRecord {
        self.key = Some(key.into());
        self
    }

    /// Sets an explicit partition.
    pub fn partition(mut self, partition: PartitionId) -> ProducerRecord {
        self.partition = Some(partition);
        self
    }
}

/// What the accumulator keeps per record.
#[derive(Debug)]
struct Delivery {
    /// The buffer space the record holds until it is acknowledged or fails.
    buffer_bytes: usize,
}

/// The accumulator and the sticky partitions, under one lock: a partition choice must see
/// the batch it decides on. Held only for in-memory work, never across an await.
struct State {
    accumulator: Accumulator<Delivery>,
    sticky: FastMap<String, PartitionId>,
    /// Where sticky rotation starts for a topic seen for the first time.
    sticky_start: u32,
    closing: bool,
    /// The error of the last failed attempt per partition, cleared by an acknowledgement:
    /// what a batch that expired in the queue behind a retried one is failed with.
    last_errors: HashMap<TopicPartition, Error>,
    /// Jitter for retry backoffs.
    jitter: Jitter,
    /// An [`obtain_identity`] task is running (at most one is).
    identity_task: bool,
    /// Why the last InitProducerId failed, cleared by success: what a batch that expires
    /// waiting for a producer id or epoch is failed with.
    identity_error: Option<Error>,
    /// Per broker, fired once the last Produce request started for it is on its
    /// connection: the next one waits for it ([`dispatch`]).
    send_turns: HashMap<BrokerId, oneshot::Receiver<()>>,
    /// With [`ProducerConfig::stop_after_failure`], the first failure of a record once
    /// there was one: nothing new is sent from then on.
    stopped: Option<Error>,
    /// With [`ProducerConfig::stop_after_failure`], the first record `send` refused: later
    /// `send`s are refused too, while the records before it still go.
    sends_refused: Option<Error>,
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    state: Mutex<State>,
    /// Wakes the sender task: a batch is ready, a flush began, an attempt ended, closing.
    wake: Notify,
    /// Buffer space in bytes; `send` takes a record's size, completion gives it back.
    buffer: Semaphore,
    /// Records appended and not yet completed; `flush` waits for zero.
    pending: watch::Sender<u64>,
    /// Records that failed, ever: a transaction commits only if none failed since it began.
    failed: AtomicU64,
    /// A transactional producer's transaction ([`ProducerConfig::transactional_id`]).
    txn: Option<transaction::Transaction>,
    /// When a request waiting long last refreshed the metadata
    /// ([`Client::leader_replaced`]).
    leader_checked: Mutex<Option<Instant>>,
    /// The metadata of the topic `send` was last given.
    topic_memo: TopicMemo,
}

/// The sender task stops when the last handle goes: dropping the producer sends what is
/// buffered, then stops.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

/// Sends records to a topic's partitions, batching them per partition. Cheap to clone;
/// clones share one background task and buffer.
///
/// A record's [`DeliveryFuture`] succeeds only when the partition's leader acknowledged it
/// (with [`Acks::All`]: once the in-sync replicas have it), except with [`Acks::None`],
/// where nothing is acknowledged and writing it to the socket counts. A batch whose outcome
/// is unknown (the connection died after the request was sent, no answer within
/// `request_timeout`, NOT_ENOUGH_REPLICAS_AFTER_APPEND) is sent again.
///
/// With [`ProducerConfig::enable_idempotence`] (the default) and [`Acks::All`], such a resend
/// is not written twice: each batch carries the producer's id, epoch and sequence numbers,
/// and the leader answers a batch it already has with the offsets it was first written at.
/// A record acknowledged once is in the partition once, at the offset its
/// [`RecordMetadata`](crate::RecordMetadata) says. What idempotence cannot cover: a record whose delivery failed
/// (for example [`Error::DeliveryTimeout`] after an attempt was sent) may still have been
/// written, and a new producer (another process, or a restart) does not know the sequences
/// of the old one. Without idempotence (acks 0 or 1, or turned off) delivery is at least
/// once, and consumers must tolerate duplicates.
///
/// Records of one partition are written in `send` order: a retried batch goes before
/// anything newer. With idempotence up to five batches per partition are in flight (their
/// sequence numbers keep the order, and a retry goes alone); without, one.
///
/// Two rules about failures, as in Kafka:
/// - **A failure is the failed record's alone.** Its [`DeliveryFuture`] says so, and records
///   sent after it, to its partition too, may still be written (after an epoch bump, with
///   idempotence), so the partition lacks it in the middle. A caller that must keep each
///   partition a prefix of what it sent (to resend "from the first failure") sets
///   [`ProducerConfig::stop_after_failure`]: then nothing is sent after the first failure.
/// - **Acknowledgements never go out of order within a partition.** Of two records sent
///   to one partition, if both are acknowledged the earlier one has the lower offset; a
///   record is never acknowledged at an offset before a record sent ahead of it.
///
/// A batch the leader refuses as too large for the topic (MESSAGE_TOO_LARGE,
/// RECORD_LIST_TOO_LARGE: a segment holds whole batches, so a batch may be at most the
/// topic's `segment.bytes`) is split in two and the halves resent, as Kafka's producer
/// does; one record too large fails alone. Batches are sized from the start by the
/// topic's `segment.bytes` as the metadata gives it, when that is below `batch_bytes_max`.
///
/// ```no_run
/// # async fn demo() -> sluice_client::Result<()> {
/// use sluice_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
/// let client = Client::connect(ClientConfig::default()).await?;
/// let producer = Producer::new(client, ProducerConfig::default());
/// let delivery = producer.send(ProducerRecord::new("orders", "hello").key("k")).await?;
/// producer.flush().await;
/// println!("offset {}", delivery.await?.offset);
/// producer.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.handle.shared.config)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer over `client`; starts its background task on the current tokio runtime.
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let sticky_start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let shared = Arc::new(Shared {
            client: client.clone(),
            state: Mutex::new(State {
                accumulator: Accumulator::new(AccumulatorConfig {
                    batch_bytes_max: config.batch_bytes_max,
                    linger: config.linger,
                    delivery_timeout: config.delivery_timeout,
                    idempotent: config.is_idempotent(),
                    transactional: config.transactional_id.is_some(),
                    compression: config.compression,
                }),
                sticky: FastMap::default(),
                sticky_start,
                closing: false,
                last_errors: HashMap::new(),
                jitter: Jitter::new(),
                identity_task: false,
                identity_error: None,
                send_turns: HashMap::new(),
                stopped: None,
                sends_refused: None,
            }),
            wake: Notify::new(),
            buffer: Semaphore::new(config.buffer_bytes_max.min(Semaphore::MAX_PERMITS)),
            pending: watch::channel(0).0,
            failed: AtomicU64::new(0),
            txn: config
                .transactional_id
                .clone()
                .map(|id| transaction::Transaction::new(client.clone(), id)),
            leader_checked: Mutex::new(None),
            topic_memo: TopicMemo::default(),
            config,
        });
        tokio::spawn(sender_loop(shared.clone()));
        Producer {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// Enqueues a record. Waits only for buffer space (and, the first time a topic is
    /// used, for its metadata); the returned future resolves on acknowledgement.
    /// Fails at once for an unknown topic or partition and for a record too large.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let shared = &self.handle.shared;
        let topic = self.topic_metadata(&record.topic).await?;
        let headers = header_refs(&record);
        let parts = record_parts(&record, &mut None, &headers);
        self.check_not_stopped()?;
        let size = parts.size();
        let batch_bytes_max = self.batch_bytes_max(&topic);
        self.check_size(size, batch_bytes_max)?;
        // Buffer space first, so the memory a producer holds stays bounded. Held as a permit
        // until the record is appended, so that a failure, or this future dropped while it
        // waits for the transaction, gives the space back.
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let permit = shared
            .buffer
            .acquire_many(permits)
            .await
            .map_err(|_| Error::ProducerClosed)?;
        let delivery = Delivery {
            buffer_bytes: permits as usize,
        };
        // A transactional record's partition joins the transaction before the record is
        // appended: its batch must not reach the leader before that.
        let refused = |e| self.refused_partition(&topic.name, e);
        let chosen = match self.transactional() {
            Some(_) => {
                let partition =
                    choose_partition(&mut shared.lock(), &topic, &record, size).map_err(refused)?;
                self.add_to_transaction(&TopicPartition::new(&topic.name, partition))
                    .await?;
                Some(partition)
            }
            None => None,
        };
        let appended = {
            let mut state = shared.lock();
            if state.closing {
                return Err(Error::ProducerClosed);
            }
            let partition = match chosen {
                Some(p) => p,
                None => choose_partition(&mut state, &topic, &record, size).map_err(refused)?,
            };
            // The record holds its space from here until it is done (`Delivery`).
            permit.forget();
            let tp = (topic.name.as_str(), partition);
            state
                .accumulator
                .set_topic_bytes_max(&topic.name, batch_bytes_max);
            // `flush` waits for zero only: an increment wakes no one (a notification per
            // record cost the sending thread ~3 % of its CPU).
            shared.pending.send_if_modified(|n| {
                *n += 1;
                false
            });
            state
                .accumulator
                .append(&tp, Instant::now, &parts, delivery)
        };
        // A full batch is ready; a new batch has a linger deadline the sender must learn.
        if appended.sealed || appended.new_batch {
            shared.wake.notify_one();
        }
        Ok(appended.delivery)
    }

    /// Enqueues records in one call, as [`Producer::send`] would one after the other (same
    /// partitions, same order), and returns their futures in the same order. The call
    /// takes the buffer space, the producer's lock and the clock once for all of them
    /// instead of once per record: an application that has records in hand (a file's
    /// lines, a batch from another system) spends less of its own thread per record.
    /// Records without a timestamp get the call's. (One difference: a transactional
    /// producer picks the partitions of a call's keyless records before appending any, as
    /// they must join the transaction first, so they stay on one sticky partition for
    /// the call.)
    ///
    /// All or nothing: every record is checked (topic, partition, size) before any is
    /// enqueued, and an error enqueues none. The records of one call must fit in the
    /// buffer together ([`ProducerConfig::buffer_bytes_max`]); larger sets go in several
    /// calls.
    ///
    /// ```no_run
    /// # async fn demo(producer: sluice_client::Producer) -> sluice_client::Result<()> {
    /// use sluice_client::ProducerRecord;
    /// let lines = ["a", "b", "c"].map(|line| ProducerRecord::new("lines", line));
    /// for delivery in producer.send_all(&lines).await? {
    ///     delivery.await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn send_all(&self, records: &[ProducerRecord]) -> Result<Vec<DeliveryFuture>> {
        // (`send`'s steps, each taken once for the call where it can be; `send` keeps a
        // path of its own, tuned for one record.)
        let shared = &self.handle.shared;
        self.check_not_stopped()?;
        // Every record checked before any is enqueued. A call's records are mostly of one
        // topic: its metadata is looked up once, others' once each.
        let mut topics = CallTopics::default();
        let mut now = None;
        // Each record's size, worked out once: the buffer space taken is their sum, and each
        // record gives its own back when it is done.
        let mut sizes = Vec::with_capacity(records.len());
        for record in records {
            let topic = match topics.get(&record.topic) {
                Some(topic) => topic,
                None => {
                    let metadata = self.topic_metadata(&record.topic).await?;
                    let batch_bytes_max = self.batch_bytes_max(&metadata);
                    topics.add(metadata, batch_bytes_max)
                }
            };
            let size = record_parts(record, &mut now, &header_refs(record)).size();
            self.check_size(size, topic.batch_bytes_max)?;
            if let Some(p) = record.partition {
                topic
                    .metadata
                    .partition(p)
                    .map_err(|e| self.refused_partition(&record.topic, e))?;
            }
            sizes.push(size);
        }
        // Buffer space first, so the memory a producer holds stays bounded.
        let permits: usize = sizes.iter().sum();
        let buffer_bytes_max = shared
            .config
            .buffer_bytes_max
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize);
        if permits > buffer_bytes_max {
            return Err(Error::SendTooLarge {
                records: records.len(),
                size: permits,
                max: buffer_bytes_max,
            });
        }
        let permits = u32::try_from(permits).expect("at most u32::MAX, checked above");
        // Held as a permit until the records are appended, as in `send`.
        let permit = shared
            .buffer
            .acquire_many(permits)
            .await
            .map_err(|_| Error::ProducerClosed)?;
        // A transactional record's partition joins the transaction before the record is
        // appended: its batch must not reach the leader before that.
        let chosen = match self.transactional() {
            Some(_) => {
                let chosen = {
                    let mut state = shared.lock();
                    records
                        .iter()
                        .zip(&sizes)
                        .map(|(record, &size)| {
                            let topic = topics.get(&record.topic).expect("looked up above");
                            choose_partition(&mut state, &topic.metadata, record, size)
                        })
                        .collect::<Result<Vec<_>>>()?
                };
                self.add_to_transactions(records, &chosen).await?;
                Some(chosen)
            }
            None => None,
        };
        let mut state = shared.lock();
        if state.closing {
            return Err(Error::ProducerClosed);
        }
        // Each record holds its part of the space from here until it is done (`Delivery`).
        permit.forget();
        let mut wake = false;
        let mut deliveries = Vec::with_capacity(records.len());
        for (i, (record, &size)) in records.iter().zip(&sizes).enumerate() {
            let topic = topics.get(&record.topic).expect("looked up above");
            let headers = header_refs(record);
            let parts = record_parts(record, &mut now, &headers);
            let partition = match &chosen {
                Some(chosen) => chosen[i],
                // Infallible now: an explicit partition was checked above, a key's or the
                // sticky partition is always one of the topic's.
                None => choose_partition(&mut state, &topic.metadata, record, size)
                    .expect("partition checked above"),
            };
            state
                .accumulator
                .set_topic_bytes_max(&topic.metadata.name, topic.batch_bytes_max);
            let appended = state.accumulator.append(
                &(topic.metadata.name.as_str(), partition),
                Instant::now,
                &parts,
                Delivery { buffer_bytes: size },
            );
            // A full batch is ready; a new batch has a linger deadline the sender must learn.
            wake |= appended.sealed || appended.new_batch;
            deliveries.push(appended.delivery);
        }
        // `flush` waits for zero only: an increment wakes no one (a notification per
        // record cost the sending thread ~3 % of its CPU).
        shared.pending.send_if_modified(|n| {
            *n += records.len() as u64;
            false
        });
        drop(state);
        if wake {
            shared.wake.notify_one();
        }
        Ok(deliveries)
    }

    /// Sends everything buffered now (linger ignored) and waits until every record sent
    /// before this call is acknowledged or failed. Records sent concurrently with the flush
    /// are sent at once too, and waited for as well.
    pub async fn flush(&self) {
        let shared = &self.handle.shared;
        shared.lock().accumulator.begin_flush();
        shared.wake.notify_one();
        let mut pending = shared.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
        shared.lock().accumulator.end_flush();
    }

    /// Flushes, then stops accepting records: later `send`s fail with
    /// [`Error::ProducerClosed`]. Dropping every clone of a producer also sends what is
    /// buffered, without waiting.
    pub async fn close(&self) {
        self.flush().await;
        self.handle.shared.lock().closing = true;
        self.handle.shared.wake.notify_one();
    }

    /// The topic's metadata, waiting up to `unknown_topic_wait` for a topic that is not
    /// there yet, or for a broker to answer when none does (the cluster mid-failover).
    async fn topic_metadata(&self, topic: &str) -> Result<Arc<crate::TopicMetadata>> {
        let shared = &self.handle.shared;
        // (Kept fresh by `dispatch`, which asks per batch whether the topic's metadata is
        // older than `metadata_max_age`: a clock read per record cost ~2 % of the sending
        // thread.)
        if let Some(t) = shared.client.cached_topic_memo(topic, &shared.topic_memo) {
            return Ok(t);
        }
        let deadline = Instant::now() + shared.config.unknown_topic_wait;
        loop {
            match shared.client.refresh_topic(topic).await {
                Err(e)
                    if Instant::now() < deadline
                        && (e.is_retriable() || matches!(e, Error::UnknownTopic { .. })) =>
                {
                    tracing::debug!(topic, error = %e, "no metadata for the topic yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// The largest batch of `topic`: `batch_bytes_max`, or its `segment.bytes` when lower.
    fn batch_bytes_max(&self, topic: &crate::TopicMetadata) -> usize {
        let config = &self.handle.shared.config;
        topic
            .segment_bytes()
            .map_or(config.batch_bytes_max, |b| b.min(config.batch_bytes_max))
    }

    /// With [`ProducerConfig::stop_after_failure`], refuses a send once something failed.
    fn check_not_stopped(&self) -> Result<()> {
        let shared = &self.handle.shared;
        // (Only a producer that stops after a failure has one to check: not worth its lock.)
        if shared.config.stop_after_failure {
            if let Some(first) = shared.lock().first_failure() {
                return Err(stopped_after(first));
            }
        }
        Ok(())
    }

    /// A record refused for its partition: when the cached metadata lacks the partition,
    /// which may have been added since, and is older than `metadata_max_age`, a refresh
    /// starts (the batches' dispatch, which otherwise keeps it fresh, never sees a record
    /// refused here).
    fn refused_partition(&self, topic: &str, error: Error) -> Error {
        if matches!(error, Error::UnknownPartition { .. }) {
            self.handle.shared.client.cached_topic_refreshing(topic);
        }
        error
    }

    /// Refuses a record that could never be sent: one larger than a batch of its topic may
    /// be (`batch_bytes_max`, or the topic's `segment.bytes` when lower), or than the
    /// buffer. A producer that stops after a failure counts a refusal as one.
    fn check_size(&self, record_size: usize, batch_bytes_max: usize) -> Result<()> {
        let refused = self.size_refused(record_size, batch_bytes_max);
        if let Err(e) = &refused {
            let shared = &self.handle.shared;
            if shared.config.stop_after_failure {
                shared.lock().sends_refused.get_or_insert_with(|| e.clone());
            }
        }
        refused
    }

    fn size_refused(&self, record_size: usize, batch_bytes_max: usize) -> Result<()> {
        let config = &self.handle.shared.config;
        let size = batch_size_for(record_size);
        if size > batch_bytes_max {
            return Err(Error::RecordTooLarge {
                size,
                max: batch_bytes_max,
                limit: if batch_bytes_max < config.batch_bytes_max {
                    "the topic's segment.bytes"
                } else {
                    "batch_bytes_max"
                },
            });
        }
        if record_size > config.buffer_bytes_max.min(u32::MAX as usize) {
            return Err(Error::RecordTooLarge {
                size: record_size,
                max: config.buffer_bytes_max,
                limit: "buffer_bytes_max",
            });
        }
        Ok(())
    }
}

/// The topics of one `send_all` call: the first, and any others (a call's records are
/// mostly of one topic, which then needs no allocation).
#[derive(Default)]
struct CallTopics {
    first: Option<CallTopic>,
    others: Vec<CallTopic>,
}

struct CallTopic {
    metadata: Arc<crate::TopicMetadata>,
    /// The largest batch of the topic: `batch_bytes_max`, or its `segment.bytes` when lower.
    batch_bytes_max: usize,
}

impl CallTopics {
    fn get(&self, name: &str) -> Option<&CallTopic> {
        self.first
            .iter()
            .chain(&self.others)
            .find(|t| t.metadata.name == name)
    }

    fn add(&mut self, metadata: Arc<crate::TopicMetadata>, batch_bytes_max: usize) -> &CallTopic {
        let topic = CallTopic {
            metadata,
            batch_bytes_max,
        };
        match self.first {
            None => self.first.insert(topic),
            Some(_) => {
                self.others.push(topic);
                self.others.last().expect("just pushed")
            }
        }
    }
}

/// A record's header names and values, as the batch encoder takes them (no allocation
/// without headers).
fn header_refs(record: &ProducerRecord) -> Vec<(&[u8], Option<&[u8]>)> {
    record
        .headers
        .iter()
        .map(|(k, v)| (k.as_bytes(), Some(&v[..])))
        .collect()
}

/// A record's parts for the batch encoder; `now` is the call's clock, read once (the
/// first time a record has no timestamp of its own).
fn record_parts<'a>(
    record: &'a ProducerRecord,
    now: &mut Option<i64>,
    headers: &'a [(&'a [u8], Option<&'a [u8]>)],
) -> RecordParts<'a> {
    RecordParts::new(
        record
            .timestamp_ms
            .unwrap_or_else(|| *now.get_or_insert_with(now_ms)),
        record.key.as_deref(),
        record.value.as_deref(),
        headers,
    )
}

/// The partition `record` goes to: its own, its key's, or the topic's sticky one.
fn choose_partition(
    state: &mut State,
    topic: &crate::TopicMetadata,
    record: &ProducerRecord,
    size: usize,
) -> Result<PartitionId> {
    Ok(match record.partition {
        Some(p) => {
            topic.partition(p)?;
            p
        }
        None => match &record.key {
            Some(key) => partition_for_key(key, topic.n_partitions()),
            None => state.sticky_for(&topic.name, topic.n_partitions(), size),
        },
    })
}

/// Whether the leader refused a batch because it is larger than the topic takes: it wrote
/// none of it, and a smaller batch may fit.
fn too_large(error: &Error) -> bool {
    matches!(
        error.code(),
        Some(ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge)
    )
}

impl State {
    /// With [`ProducerConfig::stop_after_failure`], the first failure, if there was one.
    fn first_failure(&self) -> Option<Error> {
        self.stopped.clone().or_else(|| self.sends_refused.clone())
    }

    fn sticky_for(&mut self, topic: &str, n_partitions: i32, record_size: usize) -> PartitionId {
        let accumulator = &self.accumulator;
        let partition = sticky_partition(
            self.sticky.get(topic).copied(),
            |p| !accumulator.needs_new_batch(&(topic, p), record_size),
            self.sticky_start,
            n_partitions,
        );
        // Per record: the name is copied only the first time.
        match self.sticky.get_mut(topic) {
            Some(sticky) => *sticky = partition,
            None => {
                self.sticky.insert(topic.to_owned(), partition);
            }
        }
        partition
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Completes an in-flight batch's records with their offsets (or an error) and frees
    /// its space.
    fn finish(&self, mut batch: Batch<Delivery>, outcome: Result<(i64, i64)>) {
        {
            let mut state = self.lock();
            let completion = match &outcome {
                Ok(_) => {
                    state.last_errors.remove(&batch.tp);
                    Completion::Acknowledged
                }
                Err(Error::ProducerFenced { .. }) => Completion::Fenced,
                // Refused whole: the leader does not have it, as if it was never sent.
                Err(e) if batch.attempts == 0 || too_large(e) => Completion::NotSent,
                Err(_) => Completion::Unknown,
            };
            state.accumulator.complete(&batch, completion);
            state.accumulator.recycle(std::mem::take(&mut batch.bytes));
        }
        self.finish_records(batch, outcome);
        self.wake.notify_one();
    }

    /// Fails batches that never left (they could not be stamped) and frees their space.
    fn fail_unsent(&self, batches: Vec<Batch<Delivery>>, error: &Error) {
        for batch in batches {
            self.finish_records(batch, Err(error.clone()));
        }
        self.wake.notify_one();
    }

    /// With [`ProducerConfig::stop_after_failure`], stops the producer at its first
    /// failure: the sender loop fails what was not sent yet.
    fn note_failure(&self, error: &Error) {
        if !self.config.stop_after_failure || matches!(error, Error::StoppedAfterFailure { .. }) {
            return;
        }
        let mut state = self.lock();
        if state.stopped.is_none() {
            tracing::debug!(%error, "a record failed; sending nothing more");
            state.stopped = Some(error.clone());
        }
        drop(state);
        self.wake.notify_one();
    }

    fn finish_records(&self, batch: Batch<Delivery>, outcome: Result<(i64, i64)>) {
        let n = batch.tokens.len() as u64;
        if let Err(e) = &outcome {
            self.note_failure(e);
            self.failed.fetch_add(n, Ordering::AcqRel);
            if let Some(txn) = &self.txn {
                txn.make_abortable(e);
            }
        }
        batch.complete(outcome.map(|(base_offset, log_append_time)| Written {
            base_offset,
            log_append_time,
        }));
        let buffer_bytes = batch.tokens.iter().map(|d| d.buffer_bytes).sum();
        self.buffer.add_permits(buffer_bytes);
        self.pending.send_if_modified(|p| {
            *p = p.saturating_sub(n);
            *p == 0
        });
    }

    /// Failed attempts (sent to `sent_to`, when they were sent): refreshes the metadata of
    /// the topics whose errors call for it (once each), then retries each batch after a
    /// backoff when its error allows and time remains, or fails its records.
    ///
    /// The refreshes are bounded by the earliest delivery deadline among the batches; one
    /// that fails for now (no broker answered) is not waited for again: the batch is
    /// retried with the metadata it has, and its next failure refreshes again.
    ///
    /// How long a retry waits: a batch whose partition the refreshed metadata gives another
    /// leader than `sent_to` goes at once (the failover is over: every moment waited now is
    /// latency); one whose leader is unknown, unreachable or refusing as not the leader
    /// waits at most `retry_backoff` each time (the metadata is asked again at each retry,
    /// which is cheap, so the new leader is found within a `retry_backoff` of its
    /// election); other retriable errors back off exponentially up to `retry_backoff_max`.
    async fn retry_or_fail(
        &self,
        failures: Vec<(Batch<Delivery>, Error)>,
        sent_to: Option<BrokerId>,
    ) {
        let deadline = failures
            .iter()
            .map(|(batch, _)| batch.created + self.config.delivery_timeout)
            .min();
        let mut refreshed: HashMap<String, Option<Error>> = HashMap::new();
        for (batch, error) in &failures {
            // A batch too large: the topic's segment.bytes may have been lowered, and the
            // refreshed metadata sizes the batches opened from now on.
            let refresh = error.needs_metadata_refresh() || too_large(error);
            if refresh && !refreshed.contains_key(&batch.tp.topic) {
                let refresh = self.client.refresh_topic(&batch.tp.topic);
                let left = deadline.map_or(Duration::ZERO, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                let gone = match tokio::time::timeout(left, refresh).await {
                    Ok(Err(e @ Error::UnknownTopic { .. })) => Some(e),
                    Ok(Err(e)) => {
                        tracing::debug!(topic = %batch.tp.topic, error = %e, "metadata refresh failed; retrying with what is cached");
                        None
                    }
                    Ok(Ok(_)) | Err(_) => None,
                };
                refreshed.insert(batch.tp.topic.clone(), gone);
            }
        }
        for (batch, error) in failures {
            // A topic that is gone: no retry can succeed.
            let error = match refreshed.get(&batch.tp.topic) {
                Some(Some(gone)) => gone.clone(),
                _ => error,
            };
            let wait = if error.needs_metadata_refresh() {
                match self.client.cached_leader(&batch.tp) {
                    Some(leader) if Some(leader) != sent_to => RetryWait::None,
                    _ => RetryWait::Short,
                }
            } else {
                RetryWait::Backoff
            };
            self.retry_or_fail_one(batch, error, wait);
        }
        self.wake.notify_one();
    }

    /// Hands `batch` back for a retry after its backoff, or fails its records: for good
    /// with a non-retriable error, else with [`Error::DeliveryTimeout`] once the retries or
    /// the time are spent. A batch refused as out of order was not written: it is retried
    /// after the batches before it, or in the producer's next epoch (see
    /// [`Accumulator::retry_out_of_order`]).
    fn retry_or_fail_one(&self, batch: Batch<Delivery>, error: Error, wait: RetryWait) {
        let config = &self.config;
        let backoff = Backoff {
            base: config.retry_backoff,
            max: config.retry_backoff_max,
        };
        let expires = batch.created + config.delivery_timeout;
        if too_large(&error) {
            // Split and resend at once, as Kafka does: no backoff, the halves are new
            // batches. One record too large fails alone, below.
            let split = self.lock().accumulator.retry_split(batch, Instant::now());
            match split {
                None => {
                    tracing::debug!(%error, "split a batch the leader refused as too large");
                    return;
                }
                Some(single) => return self.finish(single, Err(error)),
            }
        }
        let out_of_order =
            batch.stamp.is_some() && error.code() == Some(ErrorCode::OutOfOrderSequenceNumber);
        let retriable = error.is_retriable() || out_of_order;
        {
            let mut state = self.lock();
            let reason = error.to_string();
            let new_reason = state
                .last_errors
                .insert(batch.tp.clone(), error.clone())
                .is_none_or(|before| before.to_string() != reason);
            let delay = match wait {
                RetryWait::None => Duration::ZERO,
                RetryWait::Short => backoff
                    .delay(batch.attempts, &mut state.jitter)
                    .min(config.retry_backoff)
                    .min(LEADER_RETRY_WAIT),
                RetryWait::Backoff => backoff.delay(batch.attempts, &mut state.jitter),
            };
            let retry_at = Instant::now() + delay;
            if retriable && batch.attempts <= config.retries_max && retry_at < expires {
                tracing::debug!(tp = %batch.tp, attempts = batch.attempts, %error, "retrying batch");
                if new_reason && !out_of_order {
                    // Once per partition and reason (cleared by a success), so a user sees
                    // what a send waits for without a line per retry.
                    let left = expires.saturating_duration_since(Instant::now());
                    tracing::warn!(
                        "waiting: {reason}; retrying for up to {} s",
                        left.as_secs_f64().ceil()
                    );
                }
                if out_of_order {
                    state.accumulator.retry_out_of_order(batch, retry_at);
                } else {
                    state.accumulator.retry(batch, retry_at);
                }
                return;
            }
        }
        let error = if retriable {
            Error::DeliveryTimeout {
                topic: batch.tp.topic.clone(),
                partition: batch.tp.partition,
                timeout: config.delivery_timeout,
                attempts: batch.attempts,
                last_error: Box::new(error),
            }
        } else {
            error
        };
        self.finish(batch, Err(error));
    }
}

/// The error of a record not sent because the producer stopped after `first`.
fn stopped_after(first: Error) -> Error {
    Error::StoppedAfterFailure {
        first_failure: Box::new(first),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Finishes the drained batches off the producer's lock: computes the CRC of those sealed
/// without it (on this task: tens of microseconds per MiB), and compresses those not yet
/// compressed on the blocking pool (a slow codec, gzip, must hold neither the lock, which
/// `send` takes, nor a runtime worker). Each batch is finished once, after it was stamped
/// (compression keeps the header's fields); its retries resend the same bytes.
async fn finish_drained(
    compression: CompressionConfig,
    mut ready: Vec<Batch<Delivery>>,
) -> Vec<Batch<Delivery>> {
    // One blocking task per batch, so batches of several partitions compress in parallel;
    // at most the batches drained at once (bounded by partitions and in-flight limits).
    let (codec, level) = (compression.codec(), compression.level());
    let tasks: Vec<_> = ready
        .iter_mut()
        .map(|batch| {
            if batch.compressed {
                batch.set_crc();
                return None;
            }
            let (plain, crc_pending) = (batch.bytes.clone(), batch.crc_pending);
            Some(tokio::task::spawn_blocking(move || {
                compress_or_keep(plain, crc_pending, codec, level)
            }))
        })
        .collect();
    for (batch, task) in ready.iter_mut().zip(tasks) {
        let Some(task) = task else { continue };
        match task.await {
            Ok(bytes) => {
                batch.bytes = bytes;
                batch.compressed = true;
                batch.crc_pending = false;
            }
            // A compression task that panicked leaves its batch uncompressed, which is
            // valid once it has its CRC.
            Err(_) => batch.set_crc(),
        }
    }
    ready
}

/// A batch compressed, or as it was (with its CRC computed when `crc_pending`) when the
/// codec would not shrink it or failed: the plain batch's CRC is computed only then.
fn compress_or_keep(
    plain: Bytes,
    crc_pending: bool,
    codec: Compression,
    level: Option<i32>,
) -> Bytes {
    match compress_batch(plain.clone(), codec, level) {
        Ok(compressed) if compressed.len() < plain.len() => compressed,
        _ if crc_pending => with_crc(plain),
        _ => plain,
    }
}

/// The background task: drain ready batches, send them, sleep until the next linger
/// deadline or a wake-up; after close, exit once nothing is buffered or in flight. With
/// idempotence it also starts [`obtain_identity`] when batches wait for a producer id or a
/// new epoch, and fails those that wait past their delivery timeout.
async fn sender_loop(shared: Arc<Shared>) {
    loop {
        let (ready, expired, wakeup, done, unsent, transaction_blocked) = {
            let mut state = shared.lock();
            let closing = state.closing;
            if closing {
                // Closing: whatever is buffered goes now.
                state.accumulator.begin_flush();
            }
            // Stopped after a failure: what was not sent never will be.
            let unsent = state
                .stopped
                .clone()
                .map(|first| (state.accumulator.take_unsent(), first));
            let now = Instant::now();
            let ready = state.accumulator.drain_ready(now);
            let expired = state.accumulator.take_expired_blocked(now);
            if closing {
                state.accumulator.end_flush();
            }
            let need = state.accumulator.identity_need();
            let mut transaction_blocked = false;
            if shared.txn.is_some() {
                // A transactional producer's identity comes from its coordinator, in
                // init_transactions and abort_transaction only.
                transaction_blocked = matches!(need, IdentityNeed::Bump(_));
            } else if need != IdentityNeed::Nothing && !state.identity_task {
                state.identity_task = true;
                tokio::spawn(obtain_identity(shared.clone()));
            }
            let expired = (!expired.is_empty()).then(|| {
                let last_error = state
                    .identity_error
                    .clone()
                    .unwrap_or_else(|| Error::Timeout {
                        addr: "the cluster".to_owned(),
                        api: ApiKey::InitProducerId.name(),
                        timeout: shared.config.delivery_timeout,
                    });
                (expired, last_error)
            });
            let done =
                closing && ready.is_empty() && expired.is_none() && state.accumulator.is_empty();
            (
                ready,
                expired,
                state.accumulator.next_wakeup(),
                done,
                unsent,
                transaction_blocked,
            )
        };
        if let Some((unsent, first)) = unsent.filter(|(u, _)| !u.is_empty()) {
            shared.fail_unsent(unsent, &stopped_after(first));
        }
        if transaction_blocked {
            shared.fail_blocked_transaction();
        }
        if done {
            return;
        }
        if let Some((expired, last_error)) = expired {
            for batch in expired {
                let error = Error::DeliveryTimeout {
                    topic: batch.tp.topic.clone(),
                    partition: batch.tp.partition,
                    timeout: shared.config.delivery_timeout,
                    attempts: batch.attempts,
                    last_error: Box::new(last_error.clone()),
                };
                shared.fail_unsent(vec![batch], &error);
            }
        }
        let ready = finish_drained(shared.config.compression, ready).await;
        dispatch(&shared, ready);
        let sleep = match wakeup {
            Some(at) => tokio::time::sleep_until(at.into()),
            None => tokio::time::sleep(Duration::from_secs(3600)),
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = sleep => {}
        }
    }
}

/// Gets what the accumulator waits for: a producer id, or the next epoch of the current one
/// ([`IdentityNeed`]), again after each answer as long as something needs one. Retriable
/// failures are retried with the producer's backoff for as long as batches wait (each is
/// bounded by its delivery timeout, see [`sender_loop`]); a non-retriable one (a broker
/// without producer ids) fails the batches that wait, and the next batch tries again
/// after a backoff.
async fn obtain_identity(shared: Arc<Shared>) {
    let backoff = Backoff {
        base: shared.config.retry_backoff,
        max: shared.config.retry_backoff_max,
    };
    let mut failures = 0;
    loop {
        let current = match shared.lock().accumulator.identity_need() {
            IdentityNeed::Nothing => break,
            IdentityNeed::New => None,
            IdentityNeed::Bump(identity) => Some(identity),
        };
        match init_producer_id(&shared.client, current).await {
            Ok(identity) => {
                tracing::debug!(?identity, previous = ?current, "producer id and epoch");
                failures = 0;
                let mut state = shared.lock();
                state.accumulator.set_identity(identity);
                state.identity_error = None;
                drop(state);
                shared.wake.notify_one();
            }
            Err(e) if e.is_retriable() => {
                tracing::debug!(error = %e, "no producer id yet; retrying");
                failures += 1;
                let delay = {
                    let mut state = shared.lock();
                    state.identity_error = Some(e);
                    backoff.delay(failures, &mut state.jitter)
                };
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot get a producer id; failing the batches that wait for one");
                let waiting = shared.lock().accumulator.take_blocked();
                shared.fail_unsent(waiting, &e);
                // Later batches ask again, but not at once: records sent in a loop must not
                // turn into a loop of requests.
                let delay = backoff.delay(failures + 1, &mut shared.lock().jitter);
                tokio::time::sleep(delay).await;
                break;
            }
        }
    }
    shared.lock().identity_task = false;
    // Something may have started to wait since the last look.
    shared.wake.notify_one();
}

/// One InitProducerId: a new id (`current` none) or the next epoch of `current`.
async fn init_producer_id(
    client: &Client,
    current: Option<ProducerIdentity>,
) -> Result<ProducerIdentity> {
    let request = Request::InitProducerId(InitProducerIdRequest {
        transactional_id: None,
        transaction_timeout_ms: -1,
        producer_id: current.map_or(-1, |c| c.producer_id),
        producer_epoch: current.map_or(-1, |c| c.epoch),
    });
    match client.send_any(request).await? {
        Response::InitProducerId(r) if r.error_code != ErrorCode::None => Err(Error::broker(
            "getting a producer id for idempotent produce (a producer without idempotence \
             needs none)",
            r.error_code,
            r.error_message,
        )),
        Response::InitProducerId(r) if r.producer_id < 0 || r.producer_epoch < 0 => {
            Err(Error::Protocol {
                addr: "the broker".to_owned(),
                reason: format!(
                    "InitProducerId answered producer id {} epoch {}",
                    r.producer_id, r.producer_epoch
                ),
            })
        }
        Response::InitProducerId(r) => Ok(ProducerIdentity {
            producer_id: r.producer_id,
            epoch: r.producer_epoch,
        }),
        other => Err(unexpected("InitProducerId", &other)),
    }
}

/// Groups ready batches by their partition's leader and starts Produce requests: per
/// broker one, or as many as the most batches of one partition (a request carries one
/// batch per partition, as in Kafka, so each batch is acknowledged or refused alone).
/// A broker's requests reach its connection in the order they are started here, whatever
/// order their tasks run in, so the leader reads a partition's pipelined batches in
/// sequence order. Batches whose leader is unknown go back with a backoff.
fn dispatch(shared: &Arc<Shared>, ready: Vec<Batch<Delivery>>) {
    let mut by_leader: BTreeMap<BrokerId, Vec<Vec<Batch<Delivery>>>> = BTreeMap::new();
    // Per leader and partition, the batches placed in its requests so far.
    let mut batches_to: HashMap<(BrokerId, TopicPartition), usize> = HashMap::new();
    let mut leaderless_batches = Vec::new();
    let now = Instant::now();
    for mut batch in ready {
        if now >= batch.created + shared.config.delivery_timeout {
            // It waited out its delivery time behind a batch of its partition that was
            // being retried: fail it with that batch's error rather than send it late. (Had
            // nothing failed, it is only late, and goes out.)
            let last_error = shared.lock().last_errors.get(&batch.tp).cloned();
            if let Some(last_error) = last_error {
                let error = Error::DeliveryTimeout {
                    topic: batch.tp.topic.clone(),
                    partition: batch.tp.partition,
                    timeout: shared.config.delivery_timeout,
                    attempts: batch.attempts,
                    last_error: Box::new(last_error),
                };
                shared.finish(batch, Err(error));
                continue;
            }
        }
        batch.attempts += 1;
        match shared.client.cached_leader_refreshing(&batch.tp) {
            Some(leader) => {
                // The k-th batch of a partition goes into the k-th request: they arrive in
                // order per partition from the accumulator.
                let requests = by_leader.entry(leader).or_default();
                let k = batches_to.entry((leader, batch.tp.clone())).or_insert(0);
                if *k == requests.len() {
                    requests.push(Vec::new());
                }
                requests[*k].push(batch);
                *k += 1;
            }
            None => {
                let error = leaderless(&batch.tp.topic, batch.tp.partition);
                leaderless_batches.push((batch, error));
            }
        }
    }
    if !leaderless_batches.is_empty() {
        let shared = shared.clone();
        tokio::spawn(async move { shared.retry_or_fail(leaderless_batches, None).await });
    }
    let mut state = shared.lock();
    for (leader, requests) in by_leader {
        for batches in requests {
            let (queued, next_turn) = oneshot::channel();
            let turn = state.send_turns.insert(leader, next_turn);
            let shared = shared.clone();
            tokio::spawn(async move { produce(shared, leader, batches, turn, queued).await });
        }
    }
}

/// One Produce request to `leader` with `batches`, and what follows from its answer. It
/// goes on the connection after `turn` fires (the previous request to `leader`), and
/// lets go of `queued` once it is there (see [`Client::send_in_turn`]).
async fn produce(
    shared: Arc<Shared>,
    leader: BrokerId,
    batches: Vec<Batch<Delivery>>,
    turn: Option<oneshot::Receiver<()>>,
    queued: oneshot::Sender<()>,
) {
    let mut topics: BTreeMap<&str, Vec<ProducePartition>> = BTreeMap::new();
    for batch in &batches {
        topics
            .entry(&batch.tp.topic)
            .or_default()
            .push(ProducePartition {
                partition: batch.tp.partition,
                records: batch.bytes.clone(),
            });
    }
    let request_timeout = shared.config.request_timeout;
    let wait = attempt_wait(&shared.config, &batches, Instant::now());
    let request = Request::Produce(ProduceRequest {
        // A transactional producer names its id: the leader verifies a transaction's first
        // batch in a partition with the id's coordinator (KIP-890).
        transactional_id: shared.config.transactional_id.clone(),
        acks: shared.config.acks.to_wire(),
        timeout_ms: broker_timeout_ms(wait),
        topics: topics
            .into_iter()
            .map(|(name, partitions)| ProduceTopic {
                name: name.to_owned(),
                partitions,
            })
            .collect(),
    });
    if shared.config.acks == Acks::None {
        if let Some(turn) = turn {
            let _ = turn.await;
        }
        let sent = shared.client.send_without_response(leader, request).await;
        drop(queued);
        match sent {
            Ok(()) => batches
                .into_iter()
                .for_each(|b| shared.finish(b, Ok((-1, -1)))),
            Err(e) => fail_all(&shared, batches, e, leader).await,
        }
        return;
    }
    // The request timeout is evidence against the broker (the connection is closed); the
    // delivery deadline coming first is not, so that cut leaves the connection alone.
    let tps: Vec<TopicPartition> = batches.iter().map(|b| b.tp.clone()).collect();
    let sent = shared
        .client
        .send_in_turn(leader, request, request_timeout, turn, Some(queued));
    let attempt = async {
        tokio::select! {
            answer = sent => answer,
            replaced = shared.client.leader_replaced(
                leader,
                &tps,
                LEADER_CHECK_AFTER,
                Some(&shared.leader_checked),
            ) => Err(replaced),
        }
    };
    let answer = if wait < request_timeout {
        tokio::time::timeout(wait, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    addr: format!("broker {leader}"),
                    api: ApiKey::Produce.name(),
                    timeout: wait,
                })
            })
    } else {
        attempt.await
    };
    match answer {
        Ok(Response::Produce(response)) => {
            let mut results = index_results(response);
            let mut failures = Vec::new();
            for batch in batches {
                match results.remove(&batch.tp) {
                    Some((ErrorCode::None, _, base_offset, log_append_time)) => {
                        shared.finish(batch, Ok((base_offset, log_append_time)))
                    }
                    Some((ErrorCode::InvalidProducerEpoch, message, _, _)) => {
                        let error = fenced(&batch, message);
                        failures.push((batch, error));
                    }
                    Some((code, message, _, _)) => {
                        let context = format!("producing to {}", batch.tp);
                        failures.push((batch, Error::broker(context, code, message)));
                    }
                    None => {
                        let error = Error::Protocol {
                            addr: format!("broker {leader}"),
                            reason: format!("the Produce response has no result for {}", batch.tp),
                        };
                        shared.finish(batch, Err(error));
                    }
                }
            }
            if !failures.is_empty() {
                shared.retry_or_fail(failures, Some(leader)).await;
            }
        }
        Ok(other) => fail_all(&shared, batches, unexpected("Produce", &other), leader).await,
        Err(e) => fail_all(&shared, batches, e, leader).await,
    }
}

/// How long one Produce attempt with `batches` may wait for its answer: the request
/// timeout, cut to the earliest delivery deadline among the batches. A batch already past
/// its deadline (it waited in the queue while nothing failed) does not cut it: it goes out
/// once, bounded by the request timeout alone.
fn attempt_wait(config: &ProducerConfig, batches: &[Batch<Delivery>], now: Instant) -> Duration {
    batches
        .iter()
        .map(|b| (b.created + config.delivery_timeout).saturating_duration_since(now))
        .filter(|left| !left.is_zero())
        .fold(config.request_timeout, Duration::min)
}

/// The error of a batch refused because a newer epoch of its producer id wrote to the
/// partition.
fn fenced(batch: &Batch<Delivery>, message: Option<String>) -> Error {
    let (producer_id, epoch) = batch
        .stamp
        .map_or((-1, -1), |s| (s.producer_id, s.producer_epoch));
    Error::ProducerFenced {
        topic: batch.tp.topic.clone(),
        partition: batch.tp.partition,
        producer_id,
        epoch,
        message,
    }
}

async fn fail_all(
    shared: &Arc<Shared>,
    batches: Vec<Batch<Delivery>>,
    error: Error,
    sent_to: BrokerId,
) {
    let failures = batches.into_iter().map(|b| (b, error.clone())).collect();
    shared.retry_or_fail(failures, Some(sent_to)).await;
}

/// How long a failed batch waits before its retry (see [`Shared::retry_or_fail`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RetryWait {
    /// Its partition has a new leader: at once.
    None,
    /// Its leader is unknown or failing: at most `retry_backoff` and [`LEADER_RETRY_WAIT`].
    Short,
    /// The exponential backoff, up to `retry_backoff_max`.
    Backoff,
}

/// The longest wait before retrying a batch whose leader failed while the metadata names
/// no new one yet (also capped by `retry_backoff`). Short, because the controller fences a
/// broker it sees die within milliseconds and the new leader is named a few ms later: a
/// 100 ms wait was most of the time a producer took to move after a leader's SIGKILL
/// (BENCHMARKS.md, failover). Each retry is a refused connection and a metadata refresh.
const LEADER_RETRY_WAIT: Duration = Duration::from_millis(25);

/// How long a Produce request may go unanswered before the producer starts checking
/// whether its leader was replaced ([`Client::leader_replaced`]).
const LEADER_CHECK_AFTER: Duration = Duration::from_millis(250);

type PartitionOutcome = (ErrorCode, Option<String>, i64, i64);

fn index_results(response: ProduceResponse) -> HashMap<TopicPartition, PartitionOutcome> {
    let mut out = HashMap::new();
    for topic in response.topics {
        for p in topic.partitions {
            out.insert(
                TopicPartition::new(&topic.name, p.partition),
                (
                    p.error_code,
                    p.error_message,
                    p.base_offset.0,
                    p.log_append_time_ms,
                ),
            );
        }
    }
    out
}

mod transaction;

#[cfg(test)]
mod tests;
