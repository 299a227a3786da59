//! The producer's record accumulator: records grouped per partition into RecordBatch v2
//! batches, and the decisions of when a batch goes out. Pure: no I/O, no clock of its own
//! (every decision takes `now`), so it is tested without a network or sleeps.
//!
//! Per partition there is at most one open batch (being filled), a queue of sealed batches
//! (full, expired, or handed back for a retry, always in record order) and the batches in
//! flight. Without idempotence one batch per partition is in flight: nothing would keep a
//! retried batch from being overtaken by the next one. With idempotence up to
//! [`MAX_IN_FLIGHT_IDEMPOTENT`] are, as in Kafka, because the sequence numbers keep the
//! order: the leader takes a batch only right after the one before it.
//! The generic `T` is what the producer keeps per record (its delivery handle).
//!
//! With idempotence, the accumulator keeps each partition's sequence numbers and stamps a
//! batch (producer id, epoch, base sequence) when it first leaves; a retry keeps the stamp,
//! so the leader recognises a resend. The rules that keep records in order and never
//! written twice (Kafka's, from its `RecordAccumulator` and `TransactionManager`):
//! - A batch handed back for a retry goes back into its place in the queue, ahead of
//!   everything newer, and leaves only when nothing of its partition is in flight: after a
//!   failure the partition sends one batch at a time until its retries are through.
//! - OUT_OF_ORDER_SEQUENCE_NUMBER for a batch the leader should have taken next (everything
//!   before it is acknowledged) means the leader lacks it and what follows: it is *refused*.
//!   For a later batch it only means an earlier one is being retried: it is retried too.
//! - A stamped batch that fails after it was sent leaves its partition *unresolved*: the
//!   leader may have it or not. Once nothing stamped is in flight, the partition is
//!   resolved if every later batch was acknowledged (then the leader had it).
//! - A refused partition, or one left unresolved, waits for the producer's next epoch, in
//!   which its sequences start again at 0. Only batches known not to be written (refused,
//!   or never sent) are restamped, so no record is written twice.
//! - A partition moves to a new epoch only when nothing stamped in the old one is in flight
//!   or waiting for a retry: a new epoch's batch would fence the old one's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{
    set_producer_stamp, write_producer_stamp, BatchBuilder, ProducerStamp, Record, RecordBatch,
    HEADER_LEN,
};

use crate::delivery::{Completer, DeliveryFuture, Written};
use crate::fast_hash::FastMap;
use crate::{Compression, CompressionConfig, PartitionKey, Result, TopicPartition};

/// When batches close, and whether they are stamped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AccumulatorConfig {
    /// A batch is sealed when the next record would take it past this size.
    pub batch_bytes_max: usize,
    /// A batch is ready this long after its first record, full or not.
    pub linger: Duration,
    /// How long after its first record a batch that cannot be sent (waiting for a producer
    /// id or epoch) is given up: [`Accumulator::take_expired_blocked`].
    pub delivery_timeout: Duration,
    /// Batches are stamped with a producer id, epoch and sequence, and none leaves before
    /// the producer has an id ([`Accumulator::set_identity`]).
    pub idempotent: bool,
    /// Batches carry the transactional bit (a transactional producer's: idempotent too).
    pub transactional: bool,
    /// How sealed batches are compressed.
    pub compression: CompressionConfig,
}

/// An idempotent producer's id and epoch, from InitProducerId.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProducerIdentity {
    pub producer_id: i64,
    pub epoch: i16,
}

impl ProducerIdentity {
    fn stamp(self, base_sequence: i32) -> ProducerStamp {
        ProducerStamp {
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            base_sequence,
        }
    }

    fn stamped(self, stamp: &ProducerStamp) -> bool {
        stamp.producer_id == self.producer_id && stamp.producer_epoch == self.epoch
    }
}

/// What the producer must ask InitProducerId for before some batch can leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdentityNeed {
    /// Nothing: every partition with batches can stamp them.
    Nothing,
    /// A producer id: there is none yet and records are waiting.
    New,
    /// The next epoch of this identity: a partition's sequence is broken in it (a refused
    /// batch, or one that failed unresolved).
    Bump(ProducerIdentity),
}

/// Most batches of one partition in flight at once with idempotence: Kafka's limit, and as
/// many as the leader remembers per producer (the broker's `BATCHES_KEPT`), so a resend of
/// any of them is recognised.
pub(crate) const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

/// Most bytes of emptied batch buffers the accumulator keeps for new batches (Kafka's
/// `BufferPool`, bounded on its own instead of within `buffer.memory`): eight buffers at
/// the default batch size, enough for a partition's batches in flight, the sealed one
/// behind them and the open one; always room for one.
const BUFFER_POOL_BYTES_MAX: usize = 8 << 20;

/// How a batch taken by [`Accumulator::drain_ready`] ended, for its partition's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// The leader acknowledged it.
    Acknowledged,
    /// It failed after it was sent: the leader may have it.
    Unknown,
    /// It failed without being sent (it expired in the queue), or the leader refused it
    /// whole (too large): the leader does not have it.
    NotSent,
    /// The leader refused it because a newer epoch of the producer wrote there: the
    /// partition's sequence is beyond this producer's reach (a new epoch would not help).
    Fenced,
}

/// Where a partition's sequence numbers stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PartitionSequence {
    /// The identity the numbers belong to; they start at 0 in each.
    identity: ProducerIdentity,
    /// The base sequence of the next batch stamped.
    next: i32,
    /// The sequence after the last batch acknowledged in `identity`: the base sequence of
    /// the first batch the leader may lack.
    acked: i32,
    /// A batch stamped in `identity` failed after it was sent: the leader may have it or
    /// not. Resolved once nothing stamped is in flight: by the later batches all being
    /// acknowledged (`acked == next`), or else by the next epoch.
    unresolved: bool,
    /// The leader lacks the batch of this base sequence (refused as out of order, or never
    /// sent), so neither it nor any later batch of `identity` is or will be written: they
    /// are restamped in the next epoch.
    refused_from: Option<i32>,
}

impl PartitionSequence {
    fn fresh(identity: ProducerIdentity) -> PartitionSequence {
        PartitionSequence {
            identity,
            next: 0,
            acked: 0,
            unresolved: false,
            refused_from: None,
        }
    }

    /// How far `sequence` is past `acked`, in sequence arithmetic.
    fn past_acked(&self, sequence: i32) -> i64 {
        (i64::from(sequence) - i64::from(self.acked)).rem_euclid(i64::from(i32::MAX) + 1)
    }

    /// Whether the batch of base `sequence` is at or after the refused one.
    fn refuses(&self, sequence: i32) -> bool {
        self.refused_from
            .is_some_and(|r| self.past_acked(sequence) >= self.past_acked(r))
    }

    /// Marks the batch of base `sequence` and everything after it in `identity` refused.
    fn refuse(&mut self, sequence: i32) {
        if !self.refuses(sequence) {
            self.refused_from = Some(sequence);
        }
    }

    /// The batch of base `sequence` and `n_records` was acknowledged. Acknowledgements of
    /// one partition arrive in sequence order at the leader, not always here, so an older
    /// one seen late changes nothing.
    fn acknowledge(&mut self, sequence: i32, n_records: i32) {
        let end = add_sequence(sequence, n_records);
        let past = self.past_acked(end);
        if past > 0 && past <= self.past_acked(self.next) {
            self.acked = end;
        }
    }

    /// Whether the partition can stamp nothing more in `identity`: some batch is refused,
    /// or one whose fate is unknown was not followed by acknowledged ones.
    fn needs_new_epoch(&self) -> bool {
        self.refused_from.is_some() || (self.unresolved && self.acked != self.next)
    }
}

/// `sequence + n` in Kafka's sequence arithmetic: after `i32::MAX` comes 0.
pub(crate) fn add_sequence(sequence: i32, n: i32) -> i32 {
    ((i64::from(sequence) + i64::from(n)) % (i64::from(i32::MAX) + 1)) as i32
}

/// One record to append.
pub(crate) struct RecordParts<'a> {
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    /// Bytes the record adds to a batch, worked out once (the producer and the
    /// accumulator both need it).
    size: usize,
}

impl<'a> RecordParts<'a> {
    pub fn new(
        timestamp_ms: i64,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        headers: &'a [(&'a [u8], Option<&'a [u8]>)],
    ) -> RecordParts<'a> {
        RecordParts {
            timestamp_ms,
            key,
            value,
            headers,
            size: BatchBuilder::record_size(key, value, headers),
        }
    }

    /// Bytes the record adds to a batch.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// Bytes a batch holding only a record of `record_size` bytes takes.
pub(crate) fn batch_size_for(record_size: usize) -> usize {
    HEADER_LEN + record_size
}

/// A batch being filled.
struct OpenBatch<T> {
    builder: BatchBuilder,
    /// It is sealed when the next record would take it past this size: the producer's
    /// `batch_bytes_max`, or less when its topic takes less.
    bytes_max: usize,
    created: Instant,
    order: u128,
    tokens: Vec<T>,
    /// Where its records' delivery futures learn their outcome.
    completer: Arc<Completer>,
}

/// The room in the batch order each new batch takes (see [`Batch::order`]): its halves,
/// their halves and so on take parts of it, 32 splits deep, more than a batch of at most
/// 2^31 records can be split.
const ORDER_SPAN: u128 = 1 << 32;

/// A sealed batch: built bytes and one token per record, in record order.
#[derive(Debug)]
pub(crate) struct Batch<T> {
    pub tp: TopicPartition,
    pub bytes: Bytes,
    pub tokens: Vec<T>,
    /// Where its records' delivery futures learn their outcome: the batch's own, or the
    /// one of the batch it is a half of, whose records from `first_index` on it holds.
    pub completer: Arc<Completer>,
    pub first_index: usize,
    /// When its first record was appended (the delivery timeout counts from here).
    pub created: Instant,
    /// Produce requests sent with it so far.
    pub attempts: u32,
    /// The idempotent stamp its bytes carry, from its first send on; `None` before, and
    /// always without idempotence (and again once the leader is known to lack it, until
    /// it is restamped in the next epoch).
    pub stamp: Option<ProducerStamp>,
    /// Its place among the accumulator's batches: creation order, which is record order
    /// within a partition. A batch owns the orders `order..order + order_span`; a split
    /// gives each half a part of them, so halves sort between their neighbours.
    pub(crate) order: u128,
    pub(crate) order_span: u128,
    /// Its bytes went through the producer's compression (which may have left them as
    /// they were). A sealed batch is compressed by the sender once it is drained, off the
    /// producer's lock; a retry resends the same bytes.
    pub compressed: bool,
    /// Its bytes lack their CRC: a batch is sealed without it, on the application's thread
    /// and under the producer's lock, and the sender computes it once the batch is drained
    /// and stamped, off the lock ([`Batch::set_crc`]). The application's thread is what
    /// limits one producer's speed, and the CRC was a sixteenth of its time.
    pub crc_pending: bool,
}

impl<T> Batch<T> {
    /// Resolves the delivery futures of the batch's records.
    pub fn complete(&self, result: Result<Written>) {
        let range = self.first_index..self.first_index + self.tokens.len();
        self.completer.complete(range, result);
    }

    /// Computes the CRC of a batch sealed without it (see [`Batch::crc_pending`]).
    pub fn set_crc(&mut self) {
        if std::mem::take(&mut self.crc_pending) {
            self.bytes = with_crc(std::mem::take(&mut self.bytes));
        }
    }
}

/// A batch's bytes with their CRC computed and written in (a batch sealed without it).
pub(crate) fn with_crc(bytes: Bytes) -> Bytes {
    let mut bytes = BytesMut::from(bytes);
    sluice_protocol::batch::set_crc(&mut bytes);
    bytes.freeze()
}

struct PartitionQueue<T> {
    open: Option<OpenBatch<T>>,
    /// In record order. With idempotence the stamped batches (handed back for a retry)
    /// come first: a batch after an unstamped one is unstamped too.
    sealed: VecDeque<Batch<T>>,
    in_flight: usize,
    /// No batch of this partition leaves before this (backoff after a failure).
    retry_at: Option<Instant>,
    /// Whether its last batch was sealed full: the next one then starts at the full size,
    /// instead of small and grown by doubling (a copy of everything in it each time, on
    /// the application's thread: 1 MiB more copied per 1 MiB batch at full speed).
    filled: bool,
}

impl<T> PartitionQueue<T> {
    fn new() -> Self {
        PartitionQueue {
            open: None,
            sealed: VecDeque::new(),
            in_flight: 0,
            retry_at: None,
            filled: false,
        }
    }

    fn is_idle(&self) -> bool {
        self.open.is_none() && self.sealed.is_empty() && self.in_flight == 0
    }

    /// When the first batch waiting (sealed, or the open one) was created.
    fn first_created(&self) -> Option<Instant> {
        let first = self.sealed.front().map(|b| b.created);
        first.or(self.open.as_ref().map(|o| o.created))
    }

    /// Puts a batch handed back for a retry into its place: after every batch created
    /// before it.
    fn insert_in_order(&mut self, batch: Batch<T>) {
        let at = self
            .sealed
            .iter()
            .position(|b| b.order > batch.order)
            .unwrap_or(self.sealed.len());
        self.sealed.insert(at, batch);
    }
}

/// What keeps a partition's first waiting batch from leaving, its linger and backoff aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Nothing.
    Open,
    /// Batches of the partition in flight must end first.
    InFlight,
    /// The producer needs an id, or a new epoch (this partition's sequence).
    Identity,
}

/// The [`Gate`] of `queue`, whose sequence is `sequence`, under the producer's `identity`.
fn gate<T>(
    idempotent: bool,
    identity: Option<ProducerIdentity>,
    sequence: Option<&PartitionSequence>,
    queue: &PartitionQueue<T>,
) -> Gate {
    let after_in_flight = if queue.in_flight == 0 {
        Gate::Open
    } else {
        Gate::InFlight
    };
    let retry = queue.sealed.front().is_some_and(|b| b.stamp.is_some());
    if !idempotent || retry {
        return after_in_flight;
    }
    // A new batch, to be stamped; nothing stamped waits in the queue.
    let Some(identity) = identity else {
        return Gate::Identity;
    };
    let Some(sequence) = sequence else {
        return Gate::Open;
    };
    let settled =
        sequence.identity == identity && !sequence.unresolved && sequence.refused_from.is_none();
    if settled {
        return if queue.in_flight < MAX_IN_FLIGHT_IDEMPOTENT {
            Gate::Open
        } else {
            Gate::InFlight
        };
    }
    // The sequence starts again (a new identity) or gets settled only once every batch
    // stamped in it has ended.
    if after_in_flight == Gate::InFlight {
        Gate::InFlight
    } else if sequence.identity == identity && sequence.needs_new_epoch() {
        Gate::Identity
    } else {
        Gate::Open
    }
}

/// What an append did.
#[derive(Debug)]
pub(crate) struct Appended {
    /// The record started a new batch.
    pub new_batch: bool,
    /// A batch was sealed (full) and is ready to send: wake the sender.
    pub sealed: bool,
    /// Resolves when the record's batch is acknowledged or fails.
    pub delivery: DeliveryFuture,
}

/// Records per partition, batched.
pub(crate) struct Accumulator<T> {
    config: AccumulatorConfig,
    queues: FastMap<TopicPartition, PartitionQueue<T>>,
    /// While positive (a flush or close is under way), open batches are ready at once.
    flushes: usize,
    /// The idempotent producer's current id and epoch; `None` until the first
    /// InitProducerId answer (and always without idempotence).
    identity: Option<ProducerIdentity>,
    /// Per partition ever stamped, its sequence numbers. Kept when the partition's queue
    /// goes idle: the next batch continues the sequence. Bounded by the partitions the
    /// producer writes to.
    sequences: FastMap<TopicPartition, PartitionSequence>,
    /// The `order` of the next batch opened.
    next_order: u128,
    /// Per topic, the largest batch its leaders take (its `segment.bytes`) when that is
    /// below `batch_bytes_max`, so the first batch already fits. Bounded by the topics the
    /// producer writes to.
    topic_bytes_max: FastMap<String, usize>,
    /// Buffers of acknowledged batches, each with room for a whole `batch_bytes_max`,
    /// taken by the next batches opened. A new buffer's pages cost a page fault each when
    /// first written, and freeing one hands them back: at full speed that was a twentieth
    /// of the producer's time, on the application's thread.
    pool: Vec<BytesMut>,
}

impl<T> Accumulator<T> {
    pub fn new(config: AccumulatorConfig) -> Self {
        Accumulator {
            config,
            queues: FastMap::default(),
            flushes: 0,
            identity: None,
            sequences: FastMap::default(),
            next_order: 0,
            topic_bytes_max: FastMap::default(),
            pool: Vec::new(),
        }
    }

    /// Keeps the bytes of a batch that is done with for a batch opened later, when nothing
    /// else holds them (a request being written still may) and they have room for a whole
    /// batch.
    pub fn recycle(&mut self, bytes: Bytes) {
        let full_size = HEADER_LEN + self.config.batch_bytes_max;
        if self.pool.len() >= (BUFFER_POOL_BYTES_MAX / full_size).max(1) {
            return;
        }
        if let Ok(buf) = bytes.try_into_mut() {
            if buf.capacity() >= full_size {
                self.pool.push(buf);
            }
        }
    }

    /// Records that `topic`'s leaders take batches of at most `bytes_max` bytes (the
    /// topic's `segment.bytes`): batches opened from now on stay within it. A batch opened
    /// before a lower limit was learned is split if the leader refuses it
    /// ([`retry_split`](Self::retry_split)).
    pub fn set_topic_bytes_max(&mut self, topic: &str, bytes_max: usize) {
        // Called for every record: most producers' topics keep the default, and an empty
        // map needs no hashing of the topic's name.
        if bytes_max >= self.config.batch_bytes_max {
            if !self.topic_bytes_max.is_empty() {
                self.topic_bytes_max.remove(topic);
            }
        } else if self.topic_bytes_max.get(topic) != Some(&bytes_max) {
            self.topic_bytes_max.insert(topic.to_owned(), bytes_max);
        }
    }

    /// The largest batch of `topic`: `batch_bytes_max`, or its topic's lower limit.
    pub fn batch_bytes_max(&self, topic: &str) -> usize {
        if self.topic_bytes_max.is_empty() {
            return self.config.batch_bytes_max;
        }
        self.topic_bytes_max
            .get(topic)
            .copied()
            .unwrap_or(self.config.batch_bytes_max)
    }

    /// The id and epoch batches are stamped with from now on.
    pub fn set_identity(&mut self, identity: ProducerIdentity) {
        debug_assert!(self.config.idempotent);
        self.identity = Some(identity);
    }

    /// What InitProducerId must get before every buffered batch can leave.
    pub fn identity_need(&self) -> IdentityNeed {
        if !self.config.idempotent || self.is_empty() {
            return IdentityNeed::Nothing;
        }
        match self.identity {
            None => IdentityNeed::New,
            Some(identity) => {
                if self.queues.keys().any(|tp| self.gate(tp) == Gate::Identity) {
                    IdentityNeed::Bump(identity)
                } else {
                    IdentityNeed::Nothing
                }
            }
        }
    }

    fn gate(&self, tp: &TopicPartition) -> Gate {
        match self.queues.get(tp) {
            Some(queue) => gate(
                self.config.idempotent,
                self.identity,
                self.sequences.get(tp),
                queue,
            ),
            None => Gate::Open,
        }
    }

    /// Whether a record of `record_size` bytes would start a new batch in `tp`.
    pub fn needs_new_batch(&self, tp: &dyn PartitionKey, record_size: usize) -> bool {
        match self.queues.get(tp).and_then(|q| q.open.as_ref()) {
            Some(open) => !self.fits(open, record_size),
            None => true,
        }
    }

    fn fits(&self, open: &OpenBatch<T>, record_size: usize) -> bool {
        open.builder.size_bytes() + record_size <= open.bytes_max
    }

    /// Appends a record to `tp`'s open batch, sealing that batch first when the record
    /// does not fit. A record larger than the batch limit on its own still gets a batch
    /// of its own (the producer refuses such records before they get here). `now` is
    /// asked only when the record opens a batch (a clock read per record was a few
    /// percent of the sending thread).
    pub fn append(
        &mut self,
        tp: &dyn PartitionKey,
        now: impl FnOnce() -> Instant,
        record: &RecordParts<'_>,
        token: T,
    ) -> Appended {
        let record_size = record.size();
        let batch_bytes_max = self.batch_bytes_max(tp.topic());
        let compression = self.config.compression;
        let transactional = self.config.transactional;
        let next_order = &mut self.next_order;
        let pool = &mut self.pool;
        // Looked up by its borrowed parts: a `TopicPartition` (or `entry`) copies the
        // topic's name, an allocation per record; once, as the hashing showed (~2 % of the
        // sending thread, asked twice).
        let queue = match self.queues.get_mut(tp) {
            Some(queue) => queue,
            None => self
                .queues
                .entry(tp.to_owned_key())
                .or_insert_with(PartitionQueue::new),
        };
        let mut sealed = false;
        if let Some(open) = &queue.open {
            if open.builder.size_bytes() + record_size > open.bytes_max.min(batch_bytes_max) {
                let open = queue.open.take().expect("checked above");
                queue
                    .sealed
                    .push_back(seal(&tp.to_owned_key(), open, compression));
                queue.filled = true;
                sealed = true;
            }
        }
        let new_batch = queue.open.is_none();
        let filled = queue.filled;
        let open = queue.open.get_or_insert_with(|| {
            // Start small: most partitions never fill a whole batch_bytes_max.
            let small = if filled { batch_bytes_max } else { 16 * 1024 };
            let capacity = record_size.max(small).min(batch_bytes_max);
            let buf = pool
                .pop()
                .unwrap_or_else(|| BytesMut::with_capacity(HEADER_LEN + capacity));
            *next_order += ORDER_SPAN;
            OpenBatch {
                builder: new_builder(ProducerStamp::default(), buf, transactional),
                bytes_max: batch_bytes_max,
                created: now(),
                order: *next_order,
                tokens: Vec::new(),
                completer: Completer::for_batch(tp.to_owned_key()),
            }
        });
        let delivery = open
            .completer
            .future(open.tokens.len(), record.timestamp_ms);
        open.builder.append(
            record.timestamp_ms,
            record.key,
            record.value,
            record.headers,
        );
        open.tokens.push(token);
        if open.builder.size_bytes() >= open.bytes_max {
            let open = queue.open.take().expect("just filled");
            queue
                .sealed
                .push_back(seal(&tp.to_owned_key(), open, compression));
            queue.filled = true;
            sealed = true;
        }
        Appended {
            new_batch,
            sealed,
            delivery,
        }
    }

    /// Takes every batch that may be sent now, in record order per partition: from each
    /// partition whose [`Gate`] is open and whose backoff is over, its sealed batches, then
    /// the open one once its linger expired (at once while a flush is under way), as many
    /// as the gate lets through (one without idempotence; with it, up to
    /// [`MAX_IN_FLIGHT_IDEMPOTENT`] in flight, and a retry only alone). Each taken batch is
    /// in flight until [`complete`](Self::complete) or [`retry`](Self::retry). With
    /// idempotence a batch without a stamp gets one here: the partition's next sequence in
    /// the current identity.
    pub fn drain_ready(&mut self, now: Instant) -> Vec<Batch<T>> {
        let linger = self.config.linger;
        let flushing = self.flushes > 0;
        let mut ready = Vec::new();
        let Accumulator {
            config,
            queues,
            identity,
            sequences,
            ..
        } = self;
        for (tp, queue) in queues.iter_mut() {
            loop {
                if queue.retry_at.is_some_and(|t| t > now) {
                    break;
                }
                let waiting = !queue.sealed.is_empty()
                    || queue
                        .open
                        .as_ref()
                        .is_some_and(|open| flushing || now >= open.created + linger);
                if !waiting
                    || gate(config.idempotent, *identity, sequences.get(tp), queue) != Gate::Open
                {
                    break;
                }
                let mut batch = match queue.sealed.pop_front() {
                    Some(batch) => batch,
                    None => {
                        // Sent before it filled: the next batch starts small again.
                        queue.filled = false;
                        seal(tp, queue.open.take().expect("waiting"), config.compression)
                    }
                };
                if let (Some(identity), None) = (*identity, batch.stamp) {
                    stamp(&mut batch, identity, sequences);
                }
                queue.in_flight += 1;
                queue.retry_at = None;
                ready.push(batch);
            }
        }
        ready
    }

    /// Takes the batches that waited out their delivery timeout in partitions that cannot
    /// send (with idempotence: no producer id yet, or the partition waits for a new epoch),
    /// so the producer fails them. Partitions that can send expire their batches when they
    /// leave, as the producer decides.
    pub fn take_expired_blocked(&mut self, now: Instant) -> Vec<Batch<T>> {
        let timeout = self.config.delivery_timeout;
        self.take_blocked_where(|created| created + timeout <= now)
    }

    /// Takes every batch of the partitions that cannot send (see
    /// [`take_expired_blocked`](Self::take_expired_blocked)): the producer cannot get them
    /// an id.
    pub fn take_blocked(&mut self) -> Vec<Batch<T>> {
        self.take_blocked_where(|_| true)
    }

    /// Takes, from the front of each blocked partition's queue, the batches created at
    /// instants for which `take` holds. None of them is stamped or in flight: a partition
    /// blocks only before its first stamp, or once everything stamped in its epoch ended.
    fn take_blocked_where(&mut self, take: impl Fn(Instant) -> bool) -> Vec<Batch<T>> {
        let mut taken = Vec::new();
        let blocked: Vec<TopicPartition> = self
            .queues
            .keys()
            .filter(|tp| self.gate(tp) == Gate::Identity)
            .cloned()
            .collect();
        for tp in blocked {
            let queue = self.queues.get_mut(&tp).expect("listed above");
            // Batches are created in queue order, so the ones taken come first.
            while queue.sealed.front().is_some_and(|b| take(b.created)) {
                taken.extend(queue.sealed.pop_front());
            }
            if queue.sealed.is_empty() && queue.open.as_ref().is_some_and(|o| take(o.created)) {
                let open = queue.open.take().expect("checked above");
                taken.push(seal(&tp, open, self.config.compression));
            }
        }
        self.queues.retain(|_, q| !q.is_idle());
        taken
    }

    /// The next instant at which [`drain_ready`](Self::drain_ready) would return something
    /// it would not return now, or `None` when only completions can change that.
    /// For a partition that cannot send (see
    /// [`take_expired_blocked`](Self::take_expired_blocked)), that is when its first batch
    /// expires.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let flushing = self.flushes > 0;
        self.queues
            .iter()
            .filter_map(|(tp, q)| {
                let due = if let Some(batch) = q.sealed.front() {
                    batch.created
                } else if let Some(open) = &q.open {
                    if flushing {
                        open.created
                    } else {
                        open.created + self.config.linger
                    }
                } else {
                    return None;
                };
                match self.gate(tp) {
                    Gate::InFlight => None,
                    Gate::Identity => Some(q.first_created()? + self.config.delivery_timeout),
                    Gate::Open => Some(q.retry_at.map_or(due, |t| t.max(due))),
                }
            })
            .min()
    }

    /// A batch taken by [`drain_ready`](Self::drain_ready) is done: acknowledged, or
    /// failed for good.
    pub fn complete(&mut self, batch: &Batch<T>, completion: Completion) {
        if let (Some(stamp), Some(sequence)) = (batch.stamp, self.sequences.get_mut(&batch.tp)) {
            if sequence.identity.stamped(&stamp) {
                match completion {
                    Completion::Acknowledged => {
                        let n = i32::try_from(batch.tokens.len()).expect("checked when stamped");
                        sequence.acknowledge(stamp.base_sequence, n);
                    }
                    Completion::Unknown => sequence.unresolved = true,
                    Completion::NotSent => self.refuse(&batch.tp, stamp.base_sequence),
                    Completion::Fenced => {}
                }
            }
        }
        if let Some(queue) = self.queues.get_mut(&batch.tp) {
            queue.in_flight = queue.in_flight.saturating_sub(1);
            if queue.is_idle() {
                self.queues.remove(&batch.tp);
            }
        }
    }

    /// A batch taken by [`drain_ready`](Self::drain_ready) failed and will be retried at
    /// `retry_at`: it goes back into its place in its partition's queue, ahead of
    /// everything newer. It keeps its stamp, so the leader can tell a resend of a batch it
    /// has, unless its partition's leader is known to lack it (see
    /// [`PartitionSequence::refused_from`]): then it is restamped in the next epoch.
    pub fn retry(&mut self, mut batch: Batch<T>, retry_at: Instant) {
        self.forget_refused_stamp(&mut batch);
        let queue = self
            .queues
            .entry(batch.tp.clone())
            .or_insert_with(PartitionQueue::new);
        queue.in_flight = queue.in_flight.saturating_sub(1);
        queue.retry_at = Some(retry_at);
        queue.insert_in_order(batch);
    }

    /// Takes `batch`'s stamp off when its partition's leader is known to lack it (see
    /// [`PartitionSequence::refused_from`]): it is restamped in the next epoch.
    fn forget_refused_stamp(&self, batch: &mut Batch<T>) {
        if let (Some(stamp), Some(sequence)) = (batch.stamp, self.sequences.get(&batch.tp)) {
            if sequence.identity.stamped(&stamp) && sequence.refuses(stamp.base_sequence) {
                batch.stamp = None;
            }
        }
    }

    /// A batch taken by [`drain_ready`](Self::drain_ready) was refused as too large for
    /// its topic (MESSAGE_TOO_LARGE or RECORD_LIST_TOO_LARGE: the leader wrote none of it).
    /// It goes back into its place as two batches, its first and its second half, which
    /// leave from `retry_at` one after the other, as Kafka's producer splits a batch; a
    /// half refused again is split again. A stamped batch's halves keep its sequence
    /// numbers (the leader still waits for its base sequence, and the batches after it
    /// keep theirs), so the split needs no new epoch. A batch of one record cannot be
    /// split: it is handed back (`Some`), and is still in flight.
    pub fn retry_split(&mut self, batch: Batch<T>, retry_at: Instant) -> Option<Batch<T>> {
        if batch.tokens.len() < 2 {
            return Some(batch);
        }
        let (first, mut second) = split(batch, self.config.compression, self.config.transactional);
        self.forget_refused_stamp(&mut second);
        self.retry(first, retry_at);
        let queue = self
            .queues
            .get_mut(&second.tp)
            .expect("retry queued the first half");
        queue.insert_in_order(second);
        None
    }

    /// A batch taken by [`drain_ready`](Self::drain_ready) was refused as out of order
    /// (the leader lacks a batch before it): it is retried at `retry_at`. If the leader
    /// should have taken it (everything before it is acknowledged, or a batch before it
    /// failed for good), the leader lacks it and everything after it: they are restamped
    /// in the next epoch. Otherwise a batch before it is being retried, and it is retried
    /// after that one with its stamp.
    pub fn retry_out_of_order(&mut self, mut batch: Batch<T>, retry_at: Instant) {
        if let Some(stamp) = batch.stamp {
            match self.sequences.get_mut(&batch.tp) {
                Some(sequence) if sequence.identity.stamped(&stamp) => {
                    if stamp.base_sequence == sequence.acked || sequence.unresolved {
                        self.refuse(&batch.tp, stamp.base_sequence);
                    }
                }
                // Stamped in an identity the partition has left: the leader lacks it.
                _ => batch.stamp = None,
            }
        }
        self.retry(batch, retry_at);
    }

    /// The leader of `tp` lacks the batch of base `sequence` in the partition's identity,
    /// so it lacks everything after it too: the queued batches from it on lose their
    /// stamps (and those in flight lose theirs when they come back, see
    /// [`retry`](Self::retry)).
    fn refuse(&mut self, tp: &TopicPartition, sequence: i32) {
        let Some(partition) = self.sequences.get_mut(tp) else {
            return;
        };
        partition.refuse(sequence);
        for queued in self
            .queues
            .get_mut(tp)
            .into_iter()
            .flat_map(|q| &mut q.sealed)
        {
            if queued.stamp.is_some_and(|s| {
                partition.identity.stamped(&s) && partition.refuses(s.base_sequence)
            }) {
                queued.stamp = None;
            }
        }
    }

    /// Takes every batch the leader does not have and that was not sent in a form it may
    /// have: never sent (or split and not sent since), or known not to be written (its stamp
    /// taken off). With idempotence a batch taken with a stamp refuses its partition from
    /// its sequence (the leader will never get it). What stays is only resends of batches
    /// whose fate is unknown, which settle it: for a producer that stops after a failure.
    pub fn take_unsent(&mut self) -> Vec<Batch<T>> {
        let idempotent = self.config.idempotent;
        let resend = |b: &Batch<T>| b.attempts > 0 && (b.stamp.is_some() || !idempotent);
        let mut taken = Vec::new();
        for (tp, queue) in self.queues.iter_mut() {
            let (keep, take): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut queue.sealed)
                .into_iter()
                .partition(resend);
            queue.sealed = keep;
            taken.extend(take);
            let compression = self.config.compression;
            taken.extend(queue.open.take().map(|open| seal(tp, open, compression)));
        }
        for batch in &taken {
            let current = |s: &ProducerStamp| {
                self.sequences
                    .get(&batch.tp)
                    .is_some_and(|sequence| sequence.identity.stamped(s))
            };
            if let Some(stamp) = batch.stamp.filter(current) {
                self.refuse(&batch.tp, stamp.base_sequence);
            }
        }
        self.queues.retain(|_, q| !q.is_idle());
        taken
    }

    /// Starts a flush: until [`end_flush`](Self::end_flush), open batches are ready at once.
    pub fn begin_flush(&mut self) {
        self.flushes += 1;
    }

    /// Ends a flush started by [`begin_flush`](Self::begin_flush).
    pub fn end_flush(&mut self) {
        self.flushes = self.flushes.saturating_sub(1);
    }

    /// True when nothing is buffered or in flight.
    pub fn is_empty(&self) -> bool {
        self.queues.values().all(PartitionQueue::is_idle)
    }
}

/// Seals an open batch: builds its bytes uncompressed and without their CRC. The sender
/// computes the CRC and compresses it when it is drained ([`Batch::crc_pending`],
/// [`Batch::compressed`]), not here under the producer's lock.
fn seal<T>(tp: &TopicPartition, open: OpenBatch<T>, compression: CompressionConfig) -> Batch<T> {
    Batch {
        compressed: compression.codec() == Compression::None,
        crc_pending: true,
        tp: tp.clone(),
        bytes: open.builder.build_without_crc(),
        tokens: open.tokens,
        completer: open.completer,
        first_index: 0,
        created: open.created,
        attempts: 0,
        stamp: None,
        order: open.order,
        order_span: ORDER_SPAN,
    }
}

/// Splits a batch into its first half and its second half, rebuilt from its records
/// (same timestamps, keys, values and headers). A stamped batch's halves carry its producer
/// id and epoch; the first its base sequence, the second the sequence after the first
/// half's records. Both count as never sent (`attempts` 0), as Kafka treats split batches.
fn split<T>(
    mut batch: Batch<T>,
    compression: CompressionConfig,
    transactional: bool,
) -> (Batch<T>, Batch<T>) {
    // Split after a send, so it has its CRC; a batch that has not is not refused.
    batch.set_crc();
    let records: Vec<Record> = RecordBatch::validate(batch.bytes.clone())
        .and_then(|b| b.records()?.collect())
        .expect("a batch this producer built decodes");
    let mut first_tokens = batch.tokens;
    let second_tokens = first_tokens.split_off(first_tokens.len() / 2);
    let (first_records, second_records) = records.split_at(first_tokens.len());
    let n_first = i32::try_from(first_tokens.len()).expect("a batch holds < 2^31 records");
    let second_stamp = batch.stamp.map(|s| ProducerStamp {
        base_sequence: add_sequence(s.base_sequence, n_first),
        ..s
    });
    assert!(
        batch.order_span >= 2,
        "a batch split more often than it has records"
    );
    let first_span = batch.order_span / 2;
    let first_index = batch.first_index;
    let half = |records: &[Record],
                tokens: Vec<T>,
                first_index: usize,
                stamp: Option<ProducerStamp>,
                order: u128,
                order_span: u128| Batch {
        crc_pending: false,
        tp: batch.tp.clone(),
        bytes: build_batch(
            records,
            stamp.unwrap_or_default(),
            compression,
            transactional,
        ),
        tokens,
        completer: Arc::clone(&batch.completer),
        first_index,
        created: batch.created,
        attempts: 0,
        stamp,
        order,
        order_span,
        compressed: true,
    };
    (
        half(
            first_records,
            first_tokens,
            first_index,
            batch.stamp,
            batch.order,
            first_span,
        ),
        half(
            second_records,
            second_tokens,
            first_index + n_first as usize,
            second_stamp,
            batch.order + first_span,
            batch.order_span - first_span,
        ),
    )
}

/// A batch of `records` (as decoded from another batch) with `stamp`.
/// Builds `builder`'s batch with `compression`, whose level was checked when it was made.
fn build_compressed(builder: BatchBuilder, compression: CompressionConfig) -> Bytes {
    builder
        .build_compressed(compression.codec(), compression.level())
        .expect("CompressionConfig holds a level its codec takes")
}

/// An empty batch's builder writing into `buf`, transactional if the producer is.
fn new_builder(stamp: ProducerStamp, buf: BytesMut, transactional: bool) -> BatchBuilder {
    let builder = BatchBuilder::in_buffer(stamp, buf);
    if transactional {
        builder.transactional()
    } else {
        builder
    }
}

fn build_batch(
    records: &[Record],
    stamp: ProducerStamp,
    compression: CompressionConfig,
    transactional: bool,
) -> Bytes {
    let mut builder = new_builder(stamp, BytesMut::new(), transactional);
    for record in records {
        let headers: Vec<(&[u8], Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|h| (&h.key[..], h.value.as_deref()))
            .collect();
        builder.append(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
        );
    }
    build_compressed(builder, compression)
}

/// Stamps `batch` with the next sequence of its partition in `identity` (from 0 when the
/// partition's sequence belongs to an earlier identity) and advances it by the records.
/// The partition's [`Gate`] is open.
fn stamp<T>(
    batch: &mut Batch<T>,
    identity: ProducerIdentity,
    sequences: &mut FastMap<TopicPartition, PartitionSequence>,
) {
    let sequence = sequences
        .entry(batch.tp.clone())
        .or_insert_with(|| PartitionSequence::fresh(identity));
    if sequence.identity != identity {
        *sequence = PartitionSequence::fresh(identity);
    }
    assert!(
        !sequence.needs_new_epoch(),
        "{}: stamping in an identity whose sequence is broken",
        batch.tp
    );
    // Everything stamped before was acknowledged, the unknown batch included.
    sequence.unresolved = false;
    let stamp = identity.stamp(sequence.next);
    let n_records = i32::try_from(batch.tokens.len()).expect("a batch holds < 2^31 records");
    sequence.next = add_sequence(sequence.next, n_records);
    // The bytes were built without a stamp, or with one of an earlier epoch. A batch
    // without its CRC yet gets it after the stamp, from the sender.
    let mut bytes = BytesMut::from(std::mem::take(&mut batch.bytes));
    if batch.crc_pending {
        write_producer_stamp(&mut bytes, stamp);
    } else {
        set_producer_stamp(&mut bytes, stamp);
    }
    batch.bytes = bytes.freeze();
    batch.stamp = Some(stamp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_protocol::batch::RecordBatch;
    use sluice_protocol::PartitionId;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, PartitionId(partition))
    }

    /// A drained batch's bytes as the sender sends them: with their CRC.
    fn finished_bytes<T>(batch: &Batch<T>) -> Bytes {
        let mut bytes = BytesMut::from(&batch.bytes[..]);
        if batch.crc_pending {
            sluice_protocol::batch::set_crc(&mut bytes);
        }
        bytes.freeze()
    }

    fn value(n: usize) -> Vec<u8> {
        vec![b'x'; n]
    }

    fn append(
        acc: &mut Accumulator<u32>,
        tp: &TopicPartition,
        now: Instant,
        v: &[u8],
        token: u32,
    ) -> (bool, bool) {
        let record = RecordParts::new(1_000, None, Some(v), &[]);
        let appended = acc.append(tp, || now, &record, token);
        (appended.new_batch, appended.sealed)
    }

    fn accumulator(batch_bytes_max: usize, linger_ms: u64) -> Accumulator<u32> {
        Accumulator::new(AccumulatorConfig {
            batch_bytes_max,
            linger: Duration::from_millis(linger_ms),
            delivery_timeout: Duration::from_secs(120),
            idempotent: false,
            transactional: false,
            compression: CompressionConfig::default(),
        })
    }

    fn tokens(batches: &[Batch<u32>]) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> = batches.iter().map(|b| b.tokens.clone()).collect();
        out.sort();
        out
    }

    #[test]
    fn a_partition_named_by_borrowed_parts_finds_its_batch() {
        let t0 = Instant::now();
        let mut acc = accumulator(1 << 20, 5);
        let record = RecordParts::new(1_000, None, Some(b"one"), &[]);
        // Opened through borrowed parts, joined through a `TopicPartition`, and again.
        assert!(
            acc.append(&("t", PartitionId(3)), || t0, &record, 1)
                .new_batch
        );
        assert_eq!(append(&mut acc, &tp("t", 3), t0, b"two", 2), (false, false));
        assert!(
            !acc.append(&("t", PartitionId(3)), || t0, &record, 3)
                .new_batch
        );
        assert!(!acc.needs_new_batch(&("t", PartitionId(3)), 10));
        assert!(acc.needs_new_batch(&("t", PartitionId(4)), 10));
        assert!(acc.needs_new_batch(&("u", PartitionId(3)), 10));
        let ready = acc.drain_ready(t0 + Duration::from_millis(5));
        assert_eq!(tokens(&ready), vec![vec![1, 2, 3]]);
        assert_eq!(ready[0].tp, tp("t", 3));
    }

    #[test]
    fn a_batch_waits_for_its_linger() {
        let t0 = Instant::now();
        let mut acc = accumulator(1 << 20, 5);
        let a = tp("t", 0);
        assert_eq!(append(&mut acc, &a, t0, b"one", 1), (true, false));
        assert_eq!(
            append(&mut acc, &a, t0 + Duration::from_millis(3), b"two", 2),
            (false, false)
        );
        assert!(acc.drain_ready(t0 + Duration::from_millis(4)).is_empty());
        assert_eq!(acc.next_wakeup(), Some(t0 + Duration::from_millis(5)));
        let ready = acc.drain_ready(t0 + Duration::from_millis(5));
        assert_eq!(tokens(&ready), vec![vec![1, 2]]);
        let batch = RecordBatch::validate(finished_bytes(&ready[0])).unwrap();
        let values: Vec<_> = batch
            .records()
            .unwrap()
            .map(|r| r.unwrap().value.unwrap())
            .collect();
        assert_eq!(values, vec![&b"one"[..], &b"two"[..]]);
        // In flight: nothing more until completed.
        assert_eq!(acc.next_wakeup(), None);
        assert!(!acc.is_empty());
        acc.complete(&ready[0], Completion::Acknowledged);
        assert!(acc.is_empty());
    }

    #[test]
    fn a_full_batch_is_ready_at_once_and_the_record_that_overflows_starts_the_next() {
        let t0 = Instant::now();
        let hundred = value(100);
        let record = RecordParts::new(1_000, None, Some(&hundred), &[]);
        // Room for exactly three records.
        let max = HEADER_LEN + 3 * record.size() + 2;
        let mut acc = accumulator(max, 1_000);
        let a = tp("t", 0);
        for token in 0..3 {
            assert!(!append(&mut acc, &a, t0, &value(100), token).1);
        }
        assert!(acc.needs_new_batch(&a, record.size()));
        assert_eq!(append(&mut acc, &a, t0, &value(100), 3), (true, true));
        let ready = acc.drain_ready(t0);
        assert_eq!(tokens(&ready), vec![vec![0, 1, 2]]);
        assert!(ready[0].bytes.len() <= max);
        acc.complete(&ready[0], Completion::Acknowledged);
        // The fourth record waits for its own linger.
        assert!(acc.drain_ready(t0).is_empty());
        assert_eq!(
            tokens(&acc.drain_ready(t0 + Duration::from_secs(1))),
            vec![vec![3]]
        );
    }

    #[test]
    fn a_batch_that_reaches_the_maximum_exactly_is_sealed() {
        let t0 = Instant::now();
        // The exact size of a batch of one such record (`RecordParts::size` is an upper bound).
        let mut builder = BatchBuilder::new();
        builder.append(1_000, None, Some(&value(10)), &[]);
        let mut acc = accumulator(builder.size_bytes(), 1_000);
        let a = tp("t", 0);
        assert_eq!(append(&mut acc, &a, t0, &value(10), 0), (true, true));
        assert_eq!(acc.drain_ready(t0).len(), 1);
    }

    #[test]
    fn one_batch_in_flight_per_partition_and_retries_go_first() {
        let t0 = Instant::now();
        let mut acc = accumulator(1 << 20, 0);
        let (a, b) = (tp("t", 0), tp("t", 1));
        append(&mut acc, &a, t0, b"a1", 1);
        append(&mut acc, &b, t0, b"b1", 10);
        let first = acc.drain_ready(t0);
        assert_eq!(tokens(&first), vec![vec![1], vec![10]]);
        append(&mut acc, &a, t0, b"a2", 2);
        // a1 is still in flight, so a2 waits even though its linger (0) expired.
        assert!(acc.drain_ready(t0).is_empty());
        let mut first = first.into_iter();
        let (mut batch_a, batch_b) = {
            let x = first.next().unwrap();
            let y = first.next().unwrap();
            if x.tp == a {
                (x, y)
            } else {
                (y, x)
            }
        };
        acc.complete(&batch_b, Completion::Acknowledged);
        batch_a.attempts += 1;
        let backoff = t0 + Duration::from_millis(100);
        acc.retry(batch_a, backoff);
        assert!(acc.drain_ready(t0 + Duration::from_millis(50)).is_empty());
        assert_eq!(acc.next_wakeup(), Some(backoff));
        let again = acc.drain_ready(backoff);
        assert_eq!(tokens(&again), vec![vec![1]]);
        assert_eq!(again[0].attempts, 1);
        acc.complete(&again[0], Completion::Acknowledged);
        assert_eq!(tokens(&acc.drain_ready(backoff)), vec![vec![2]]);
    }

    #[test]
    fn a_topic_with_a_lower_limit_gets_smaller_batches() {
        let t0 = Instant::now();
        let mut acc = accumulator(1 << 20, 1_000);
        let (small, big) = (tp("small", 0), tp("big", 0));
        acc.set_topic_bytes_max("small", 200);
        assert_eq!(acc.batch_bytes_max("small"), 200);
        // A limit above the producer's own changes nothing.
        acc.set_topic_bytes_max("big", 2 << 20);
        assert_eq!(acc.batch_bytes_max("big"), 1 << 20);
        for token in 0..10 {
            append(&mut acc, &small, t0, &value(40), token);
            append(&mut acc, &big, t0, &value(40), 100 + token);
        }
        acc.begin_flush();
        let ready = acc.drain_ready(t0);
        // One batch of each partition leaves (one in flight without idempotence).
        let small_batch = ready.iter().find(|b| b.tp == small).unwrap();
        assert!(
            small_batch.bytes.len() <= 200,
            "{}",
            small_batch.bytes.len()
        );
        assert!(small_batch.tokens.len() < 10);
        let big_batch = ready.iter().find(|b| b.tp == big).unwrap();
        assert_eq!(big_batch.tokens.len(), 10);
    }

    /// Records' values in `batch`'s bytes, as the broker would read them.
    fn values(batch: &Batch<u32>) -> Vec<Vec<u8>> {
        RecordBatch::validate(finished_bytes(batch))
            .unwrap()
            .records()
            .unwrap()
            .map(|r| r.unwrap().value.unwrap().to_vec())
            .collect()
    }

    /// Drains `tp`'s one ready batch, as the sender sends it (with its CRC).
    fn drain_sent(acc: &mut Accumulator<u32>, now: Instant) -> Batch<u32> {
        let mut ready = acc.drain_ready(now);
        assert_eq!(ready.len(), 1);
        let mut batch = ready.remove(0);
        batch.set_crc();
        batch
    }

    #[test]
    fn a_done_batchs_buffer_is_reused_only_when_nothing_else_holds_it() {
        let t0 = Instant::now();
        let mut acc = accumulator(4096, 0);
        let a = tp("t", 0);
        append(&mut acc, &a, t0, b"one", 1);
        let mut first = drain_sent(&mut acc, t0);
        // Still held elsewhere (a request being written): not reused, not overwritten.
        let held = first.bytes.clone();
        acc.complete(&first, Completion::Acknowledged);
        acc.recycle(std::mem::take(&mut first.bytes));
        append(&mut acc, &a, t0, b"two", 2);
        let mut second = drain_sent(&mut acc, t0);
        assert_ne!(second.bytes.as_ptr(), held.as_ptr());
        assert_eq!(values(&second), vec![b"two".to_vec()]);
        let held = RecordBatch::validate(held).expect("left as it was");
        let held: Vec<_> = held.records().unwrap().map(|r| r.unwrap().value).collect();
        assert_eq!(held, vec![Some(Bytes::from_static(b"one"))]);
        // Held by nothing else: the next batch writes into it.
        let buffer = second.bytes.as_ptr();
        acc.complete(&second, Completion::Acknowledged);
        acc.recycle(std::mem::take(&mut second.bytes));
        append(&mut acc, &a, t0, b"three", 3);
        let third = drain_sent(&mut acc, t0);
        assert_eq!(third.bytes.as_ptr(), buffer);
        assert_eq!(values(&third), vec![b"three".to_vec()]);
    }

    #[test]
    fn a_batch_refused_as_too_large_goes_back_as_two_halves_in_its_place() {
        let t0 = Instant::now();
        let mut acc = accumulator(1 << 20, 0);
        let a = tp("t", 0);
        for token in 0..5 {
            append(&mut acc, &a, t0, format!("v{token}").as_bytes(), token);
        }
        let mut big = acc.drain_ready(t0).pop().unwrap();
        big.attempts = 1;
        append(&mut acc, &a, t0, b"later", 9);
        assert!(acc.retry_split(big, t0).is_none());
        // The first half, then the second, then the later record, one at a time.
        let first = drain_one(&mut acc, &a, t0);
        assert_eq!((first.tokens.clone(), first.attempts), (vec![0, 1], 0));
        assert_eq!(values(&first), [b"v0".to_vec(), b"v1".to_vec()]);
        assert!(acc.drain_ready(t0).is_empty());
        // A half refused again is split again; a single record is not.
        assert!(acc.retry_split(first, t0).is_none(), "two records split");
        let quarter = drain_one(&mut acc, &a, t0);
        assert_eq!(quarter.tokens, vec![0]);
        let single = acc
            .retry_split(quarter, t0)
            .expect("one record is not split");
        acc.complete(&single, Completion::NotSent);
        let next = drain_one(&mut acc, &a, t0);
        assert_eq!(next.tokens, vec![1]);
        acc.complete(&next, Completion::Acknowledged);
        let second = drain_one(&mut acc, &a, t0);
        assert_eq!(second.tokens, vec![2, 3, 4]);
        assert_eq!(
            values(&second),
            [b"v2".to_vec(), b"v3".to_vec(), b"v4".to_vec()]
        );
        acc.complete(&second, Completion::Acknowledged);
        assert_eq!(drain_one(&mut acc, &a, t0).tokens, vec![9]);
    }

    #[test]
    fn a_flush_makes_open_batches_ready_at_once() {
        let t0 = Instant::now();
        let mut acc = accumulator(1 << 20, 60_000);
        append(&mut acc, &tp("t", 0), t0, b"x", 1);
        append(&mut acc, &tp("u", 0), t0, b"y", 2);
        assert!(acc.drain_ready(t0).is_empty());
        acc.begin_flush();
        assert_eq!(acc.next_wakeup(), Some(t0));
        assert_eq!(tokens(&acc.drain_ready(t0)), vec![vec![1], vec![2]]);
        acc.end_flush();
        append(&mut acc, &tp("v", 0), t0, b"z", 3);
        assert!(acc.drain_ready(t0).is_empty());
    }

    // Idempotence: sequence bookkeeping and stamps.

    const ID: ProducerIdentity = ProducerIdentity {
        producer_id: 7,
        epoch: 0,
    };
    const BUMPED: ProducerIdentity = ProducerIdentity {
        producer_id: 7,
        epoch: 1,
    };

    /// An idempotent accumulator that sends at once (linger 0) and gives up after 10 s.
    fn idempotent() -> Accumulator<u32> {
        Accumulator::new(AccumulatorConfig {
            batch_bytes_max: 1 << 20,
            linger: Duration::ZERO,
            delivery_timeout: Duration::from_secs(10),
            idempotent: true,
            transactional: false,
            compression: CompressionConfig::default(),
        })
    }

    /// Appends a batch of `n` records (tokens `first..first + n`) to `tp`, sealed.
    fn append_batch(
        acc: &mut Accumulator<u32>,
        tp: &TopicPartition,
        now: Instant,
        first: u32,
        n: u32,
    ) {
        for token in first..first + n {
            append(acc, tp, now, b"v", token);
        }
        if let Some(open) = acc.queues.get_mut(tp).and_then(|q| q.open.take()) {
            acc.queues.get_mut(tp).unwrap().sealed.push_back(seal(
                tp,
                open,
                CompressionConfig::default(),
            ));
        }
    }

    /// The stamp in a batch's bytes, as the broker reads it: (id, epoch, base sequence).
    fn wire_stamp(batch: &Batch<u32>) -> (i64, i16, i32) {
        let header = *RecordBatch::validate(finished_bytes(batch))
            .unwrap()
            .header();
        let stamp = batch.stamp.expect("stamped");
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (stamp.producer_id, stamp.producer_epoch, stamp.base_sequence),
            "the bytes carry the batch's stamp"
        );
        (stamp.producer_id, stamp.producer_epoch, stamp.base_sequence)
    }

    /// Drains the one ready batch of `tp`.
    fn drain_one(acc: &mut Accumulator<u32>, tp: &TopicPartition, now: Instant) -> Batch<u32> {
        let mut ready = acc.drain_ready(now);
        let i = ready
            .iter()
            .position(|b| &b.tp == tp)
            .unwrap_or_else(|| panic!("nothing ready in {tp}"));
        ready.swap_remove(i)
    }

    /// Acknowledges `batch`.
    fn ack(acc: &mut Accumulator<u32>, batch: &Batch<u32>) {
        acc.complete(batch, Completion::Acknowledged);
    }

    /// The base sequences of `batches`.
    fn sequences(batches: &[Batch<u32>]) -> Vec<i32> {
        batches.iter().map(|b| wire_stamp(b).2).collect()
    }

    #[test]
    fn split_halves_keep_the_sequences_of_the_batch_and_need_no_new_epoch() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let a = tp("t", 0);
        append_batch(&mut acc, &a, t0, 0, 5);
        append_batch(&mut acc, &a, t0, 5, 2);
        let mut in_flight = acc.drain_ready(t0);
        assert_eq!(sequences(&in_flight), [0, 5]);
        let later = in_flight.pop().unwrap();
        let big = in_flight.pop().unwrap();
        // The leader refuses the big batch as too large and the later one as out of order.
        assert!(acc.retry_split(big, t0).is_none());
        acc.retry_out_of_order(later, t0);
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        let first = drain_one(&mut acc, &a, t0);
        assert_eq!(
            (first.tokens.clone(), wire_stamp(&first)),
            (vec![0, 1], (7, 0, 0))
        );
        assert!(acc.drain_ready(t0).is_empty(), "a stamped retry goes alone");
        ack(&mut acc, &first);
        let second = drain_one(&mut acc, &a, t0);
        assert_eq!(
            (second.tokens.clone(), wire_stamp(&second)),
            (vec![2, 3, 4], (7, 0, 2))
        );
        ack(&mut acc, &second);
        let resent = drain_one(&mut acc, &a, t0);
        assert_eq!(wire_stamp(&resent), (7, 0, 5));
        ack(&mut acc, &resent);
        // The sequence goes on after them.
        append_batch(&mut acc, &a, t0, 7, 1);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 0, 7));
    }

    #[test]
    fn sequences_advance_by_the_record_count_per_partition() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        let (a, b) = (tp("t", 0), tp("t", 1));
        append_batch(&mut acc, &a, t0, 0, 3);
        append_batch(&mut acc, &a, t0, 3, 2);
        append_batch(&mut acc, &a, t0, 5, 1);
        append_batch(&mut acc, &b, t0, 100, 4);
        // No id yet: nothing leaves, and an id is what the producer must get.
        assert!(acc.drain_ready(t0).is_empty());
        assert_eq!(acc.identity_need(), IdentityNeed::New);
        acc.set_identity(ID);
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        let mut seen: Vec<_> = acc
            .drain_ready(t0)
            .iter()
            .map(|batch| (batch.tp.partition.0, wire_stamp(batch)))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (0, (7, 0, 0)),
                (0, (7, 0, 3)),
                (0, (7, 0, 5)),
                (1, (7, 0, 0))
            ]
        );
    }

    #[test]
    fn up_to_five_batches_of_a_partition_are_in_flight_and_its_sequence_goes_on() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let a = tp("t", 0);
        for i in 0..7 {
            append_batch(&mut acc, &a, t0, i, 1);
        }
        let first = acc.drain_ready(t0);
        assert_eq!(sequences(&first), [0, 1, 2, 3, 4], "in record order");
        assert!(acc.drain_ready(t0).is_empty());
        assert_eq!(acc.next_wakeup(), None, "a completion makes room");
        ack(&mut acc, &first[0]);
        assert_eq!(sequences(&acc.drain_ready(t0)), [5]);
        for batch in &first[1..] {
            ack(&mut acc, batch);
        }
        assert_eq!(sequences(&acc.drain_ready(t0)), [6]);
        assert!(!acc.is_empty());
        // An idle partition keeps its sequence for its next batch.
        let mut acc = idempotent();
        acc.set_identity(ID);
        append_batch(&mut acc, &a, t0, 0, 2);
        let batch = drain_one(&mut acc, &a, t0);
        ack(&mut acc, &batch);
        assert!(acc.is_empty());
        append_batch(&mut acc, &a, t0, 2, 1);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 0, 2));
    }

    #[test]
    fn a_retried_batch_keeps_its_stamp_and_bytes() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let a = tp("t", 0);
        append_batch(&mut acc, &a, t0, 0, 2);
        let first = drain_one(&mut acc, &a, t0);
        let bytes = first.bytes.clone();
        acc.retry(first, t0);
        let again = drain_one(&mut acc, &a, t0);
        assert_eq!(again.bytes, bytes);
        assert_eq!(wire_stamp(&again), (7, 0, 0));
        ack(&mut acc, &again);
        append_batch(&mut acc, &a, t0, 2, 1);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 0, 2));
    }

    #[test]
    fn retries_go_back_in_sequence_order_and_leave_one_at_a_time() {
        let (mut acc, a, t0, first) = in_flight(3);
        let mut first = first.into_iter();
        let (b0, b1, b2) = (
            first.next().unwrap(),
            first.next().unwrap(),
            first.next().unwrap(),
        );
        append_batch(&mut acc, &a, t0, 3, 1);
        // The leader moved: b0 NOT_LEADER; b1 and b2 come back first, out of order.
        acc.retry_out_of_order(b2, t0);
        acc.retry_out_of_order(b1, t0);
        assert!(acc.drain_ready(t0).is_empty(), "b0 is still in flight");
        acc.retry(b0, t0);
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        for expected in 0..2 {
            let ready = acc.drain_ready(t0);
            assert_eq!(
                sequences(&ready),
                [expected],
                "one retry at a time, in order"
            );
            assert!(acc.drain_ready(t0).is_empty());
            ack(&mut acc, &ready[0]);
        }
        // The last retry: the new batch follows it at once, in the same epoch.
        assert_eq!(sequences(&acc.drain_ready(t0)), [2, 3]);
    }

    #[test]
    fn the_next_batch_refused_as_out_of_order_restarts_its_partition_in_a_new_epoch() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let (a, b) = (tp("t", 0), tp("t", 1));
        append_batch(&mut acc, &a, t0, 0, 2);
        let written = drain_one(&mut acc, &a, t0);
        ack(&mut acc, &written);
        append_batch(&mut acc, &a, t0, 2, 3);
        append_batch(&mut acc, &a, t0, 5, 1);
        append_batch(&mut acc, &a, t0, 6, 1);
        append_batch(&mut acc, &b, t0, 100, 1);
        let ready = acc.drain_ready(t0);
        let (mut in_a, mut in_b): (Vec<_>, Vec<_>) = ready.into_iter().partition(|x| x.tp == a);
        assert_eq!(sequences(&in_a), [2, 5, 6]);
        let in_flight_b = in_b.remove(0);
        // The leader lost the producer's state: 2 is out of order although everything
        // before it is acknowledged. 5 comes back after it, then 6 (refused too).
        let (refused, later, last) = (in_a.remove(0), in_a.remove(0), in_a.remove(0));
        acc.retry_out_of_order(refused, t0);
        acc.retry_out_of_order(later, t0);
        assert_eq!(
            acc.identity_need(),
            IdentityNeed::Nothing,
            "6 is still in flight"
        );
        acc.retry(last, t0);
        assert_eq!(acc.identity_need(), IdentityNeed::Bump(ID));
        assert!(acc.drain_ready(t0).iter().all(|x| x.tp != a));
        // Partition 1 still sends in epoch 0.
        ack(&mut acc, &in_flight_b);
        append_batch(&mut acc, &b, t0, 101, 1);
        let in_flight_b = drain_one(&mut acc, &b, t0);
        assert_eq!(wire_stamp(&in_flight_b), (7, 0, 1));
        acc.set_identity(BUMPED);
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        // The refused batches go again, restamped from 0 in epoch 1, in order.
        let again = acc.drain_ready(t0);
        assert_eq!(
            again.iter().map(|x| x.tokens.clone()).collect::<Vec<_>>(),
            [vec![2, 3, 4], vec![5], vec![6]]
        );
        assert!(again.iter().all(|x| x.tp == a));
        assert_eq!(
            again.iter().map(wire_stamp).collect::<Vec<_>>(),
            [(7, 1, 0), (7, 1, 3), (7, 1, 4)]
        );
        // Partition 1's batch in flight from epoch 0 keeps its stamp on a retry, and its
        // next batch waits for it before starting epoch 1 at 0.
        acc.retry(in_flight_b, t0);
        append_batch(&mut acc, &b, t0, 102, 1);
        let resent = drain_one(&mut acc, &b, t0);
        assert_eq!(wire_stamp(&resent), (7, 0, 1));
        assert!(acc.drain_ready(t0).is_empty());
        ack(&mut acc, &resent);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &b, t0)), (7, 1, 0));
    }

    /// An idempotent accumulator with `n` batches of one record in flight in partition 0.
    fn in_flight(n: u32) -> (Accumulator<u32>, TopicPartition, Instant, Vec<Batch<u32>>) {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let a = tp("t", 0);
        for i in 0..n {
            append_batch(&mut acc, &a, t0, i, 1);
        }
        let ready = acc.drain_ready(t0);
        assert_eq!(ready.len(), n as usize);
        (acc, a, t0, ready)
    }

    #[test]
    fn a_batch_failed_before_acknowledged_ones_needs_no_new_epoch() {
        let (mut acc, a, t0, ready) = in_flight(2);
        // The first timed out (written or not, nobody knows); the second was
        // acknowledged, so the leader had the first.
        acc.complete(&ready[0], Completion::Unknown);
        append_batch(&mut acc, &a, t0, 2, 1);
        assert!(
            acc.drain_ready(t0).is_empty(),
            "unresolved while 1 is in flight"
        );
        ack(&mut acc, &ready[1]);
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 0, 2));
    }

    #[test]
    fn a_sequence_left_unknown_needs_a_new_epoch_only_in_its_own_epoch() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let (a, b) = (tp("t", 0), tp("t", 1));
        append_batch(&mut acc, &a, t0, 0, 1);
        append_batch(&mut acc, &b, t0, 10, 1);
        let mut ready = acc.drain_ready(t0);
        ready.sort_by_key(|b| b.tp.partition);
        let (lost_a, lost_b) = (ready.remove(0), ready.remove(0));
        // Partition 0's batch timed out after it was sent, and nothing came after it.
        acc.complete(&lost_a, Completion::Unknown);
        append_batch(&mut acc, &a, t0, 1, 1);
        assert_eq!(acc.identity_need(), IdentityNeed::Bump(ID));
        assert!(acc.drain_ready(t0).is_empty());
        acc.set_identity(BUMPED);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 1, 0));
        // Partition 1's batch of epoch 0 times out after the bump: partition 1 has not
        // stamped anything in epoch 1 yet, so it needs no further bump.
        acc.complete(&lost_b, Completion::Unknown);
        append_batch(&mut acc, &b, t0, 11, 1);
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &b, t0)), (7, 1, 0));
    }

    #[test]
    fn a_stamped_batch_never_sent_restarts_its_partition_without_a_duplicate() {
        let (mut acc, a, t0, ready) = in_flight(2);
        // The first expired before it was sent; the second, sent, comes back for a retry
        // (say the connection broke): the leader cannot have it, so it is restamped.
        acc.complete(&ready[0], Completion::NotSent);
        let mut second = ready.into_iter().nth(1).unwrap();
        second.attempts = 1;
        acc.retry(second, t0);
        assert_eq!(acc.identity_need(), IdentityNeed::Bump(ID));
        acc.set_identity(BUMPED);
        let again = drain_one(&mut acc, &a, t0);
        assert_eq!(
            (again.tokens.clone(), wire_stamp(&again)),
            (vec![1], (7, 1, 0))
        );
    }

    #[test]
    fn a_new_producer_id_restarts_every_sequence() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ProducerIdentity {
            producer_id: 7,
            epoch: i16::MAX,
        });
        let a = tp("t", 0);
        append_batch(&mut acc, &a, t0, 0, 2);
        let batch = drain_one(&mut acc, &a, t0);
        acc.complete(&batch, Completion::Unknown);
        append_batch(&mut acc, &a, t0, 2, 1);
        // The broker answers a bump past the last epoch with a new id in epoch 0.
        acc.set_identity(ProducerIdentity {
            producer_id: 8,
            epoch: 0,
        });
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (8, 0, 0));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        assert_eq!(add_sequence(0, 5), 5);
        assert_eq!(add_sequence(i32::MAX, 1), 0);
        assert_eq!(add_sequence(i32::MAX - 1, 3), 1);
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let a = tp("t", 0);
        let mut sequence = PartitionSequence::fresh(ID);
        sequence.next = i32::MAX - 1;
        sequence.acked = i32::MAX - 1;
        acc.sequences.insert(a.clone(), sequence);
        append_batch(&mut acc, &a, t0, 0, 3);
        append_batch(&mut acc, &a, t0, 3, 1);
        let ready = acc.drain_ready(t0);
        assert_eq!(sequences(&ready), [i32::MAX - 1, 1]);
        // Acknowledgements compare across the wrap: the later one, seen first, moves
        // `acked` past both; the earlier one, seen late, changes nothing.
        ack(&mut acc, &ready[1]);
        assert_eq!(acc.sequences[&a].acked, 2);
        ack(&mut acc, &ready[0]);
        assert_eq!(acc.sequences[&a].acked, 2);
    }

    #[test]
    fn batches_that_cannot_be_stamped_expire_at_their_delivery_timeout() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        let a = tp("t", 0);
        append_batch(&mut acc, &a, t0, 0, 1);
        append(&mut acc, &a, t0 + Duration::from_secs(4), b"open", 1);
        // No id: the sender wakes to expire the first batch, not at its linger.
        assert_eq!(acc.next_wakeup(), Some(t0 + Duration::from_secs(10)));
        assert!(acc
            .take_expired_blocked(t0 + Duration::from_secs(9))
            .is_empty());
        let expired = acc.take_expired_blocked(t0 + Duration::from_secs(10));
        assert_eq!(tokens(&expired), vec![vec![0]]);
        assert_eq!(acc.next_wakeup(), Some(t0 + Duration::from_secs(14)));
        let expired = acc.take_expired_blocked(t0 + Duration::from_secs(14));
        assert_eq!(tokens(&expired), vec![vec![1]]);
        assert!(acc.is_empty());
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        // A partition that can send expires nothing here.
        acc.set_identity(ID);
        append_batch(&mut acc, &a, t0, 2, 1);
        assert!(acc
            .take_expired_blocked(t0 + Duration::from_secs(60))
            .is_empty());
    }
}
