//! The producer's record accumulator: records grouped per partition into RecordBatch v2
//! batches, and the decisions of when a batch goes out. Pure: no I/O, no clock of its own
//! (every decision takes `now`), so it is tested without a network or sleeps.
//!
//! Per partition there is at most one open batch (being filled), a queue of sealed batches
//! (full, expired, or handed back for a retry) and at most one batch in flight. Why one in
//! flight: a retried batch must not be overtaken by the next one, or records would be
//! reordered within the partition. Kafka allows five in flight with idempotence; that
//! needs the sequences of every later batch in flight rewound and resent in order after a
//! failure, which is not built (see ARCHITECTURE.md).
//! The generic `T` is what the producer keeps per record (its delivery handle).
//!
//! With idempotence, the accumulator also keeps each partition's sequence numbers and
//! stamps a batch (producer id, epoch, base sequence) when it first leaves; a retry keeps
//! the stamp, so the leader recognises a resend. Because only one batch per partition is in
//! flight, a partition has at most one stamped batch that is not acknowledged: the one in
//! flight or waiting for its retry. When that batch ends without an acknowledgement its
//! sequence is unknown (was it written?), and the partition stamps nothing more until the
//! producer has a new epoch, in which its sequences start again at 0.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{set_producer_stamp, BatchBuilder, ProducerStamp, HEADER_LEN};

use crate::TopicPartition;

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
    /// The next epoch of this identity: a partition's sequence is unknown in it.
    Bump(ProducerIdentity),
}

/// Where a partition's sequence numbers stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PartitionSequence {
    /// The identity the numbers belong to; they start at 0 in each.
    identity: ProducerIdentity,
    /// The base sequence of the next batch stamped.
    next: i32,
    /// A batch stamped in `identity` ended without an acknowledgement, so whether the
    /// leader has it is unknown (or it refused it as out of order): the partition stamps
    /// nothing more in `identity`, and waits for the producer's next epoch.
    unknown: bool,
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
}

impl RecordParts<'_> {
    /// Bytes the record adds to a batch.
    pub fn size(&self) -> usize {
        BatchBuilder::record_size(self.key, self.value, self.headers)
    }
}

/// Bytes a batch holding only a record of `record_size` bytes takes.
pub(crate) fn batch_size_for(record_size: usize) -> usize {
    HEADER_LEN + record_size
}

/// A batch being filled.
struct OpenBatch<T> {
    builder: BatchBuilder,
    created: Instant,
    tokens: Vec<T>,
}

/// A sealed batch: built bytes and one token per record, in record order.
#[derive(Debug)]
pub(crate) struct Batch<T> {
    pub tp: TopicPartition,
    pub bytes: Bytes,
    pub tokens: Vec<T>,
    /// When its first record was appended (the delivery timeout counts from here).
    pub created: Instant,
    /// Produce requests sent with it so far.
    pub attempts: u32,
    /// The idempotent stamp its bytes carry, from its first send on; `None` before, and
    /// always without idempotence.
    pub stamp: Option<ProducerStamp>,
}

struct PartitionQueue<T> {
    open: Option<OpenBatch<T>>,
    sealed: VecDeque<Batch<T>>,
    in_flight: bool,
    /// No batch of this partition leaves before this (backoff after a failure).
    retry_at: Option<Instant>,
}

impl<T> PartitionQueue<T> {
    fn new() -> Self {
        PartitionQueue {
            open: None,
            sealed: VecDeque::new(),
            in_flight: false,
            retry_at: None,
        }
    }

    fn is_idle(&self) -> bool {
        self.open.is_none() && self.sealed.is_empty() && !self.in_flight
    }
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The record started a new batch.
    pub new_batch: bool,
    /// A batch was sealed (full) and is ready to send: wake the sender.
    pub sealed: bool,
}

/// Records per partition, batched.
pub(crate) struct Accumulator<T> {
    config: AccumulatorConfig,
    queues: HashMap<TopicPartition, PartitionQueue<T>>,
    /// While positive (a flush or close is under way), open batches are ready at once.
    flushes: usize,
    /// The idempotent producer's current id and epoch; `None` until the first
    /// InitProducerId answer (and always without idempotence).
    identity: Option<ProducerIdentity>,
    /// Per partition ever stamped, its sequence numbers. Kept when the partition's queue
    /// goes idle: the next batch continues the sequence. Bounded by the partitions the
    /// producer writes to.
    sequences: HashMap<TopicPartition, PartitionSequence>,
}

impl<T> Accumulator<T> {
    pub fn new(config: AccumulatorConfig) -> Self {
        Accumulator {
            config,
            queues: HashMap::new(),
            flushes: 0,
            identity: None,
            sequences: HashMap::new(),
        }
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
                if self
                    .sequences
                    .values()
                    .any(|s| s.unknown && s.identity == identity)
                {
                    IdentityNeed::Bump(identity)
                } else {
                    IdentityNeed::Nothing
                }
            }
        }
    }

    /// The stamped batch `stamp` of `tp` ended without an acknowledgement (or was refused
    /// as out of order): the partition's sequence in that identity is unknown from now on.
    /// Nothing changes if the partition has moved on to another identity since.
    pub fn sequence_unknown(&mut self, tp: &TopicPartition, stamp: &ProducerStamp) {
        if let Some(sequence) = self.sequences.get_mut(tp) {
            if sequence.identity.stamped(stamp) {
                sequence.unknown = true;
            }
        }
    }

    /// Whether a record of `record_size` bytes would start a new batch in `tp`.
    pub fn needs_new_batch(&self, tp: &TopicPartition, record_size: usize) -> bool {
        match self.queues.get(tp).and_then(|q| q.open.as_ref()) {
            Some(open) => !self.fits(open, record_size),
            None => true,
        }
    }

    fn fits(&self, open: &OpenBatch<T>, record_size: usize) -> bool {
        open.builder.size_bytes() + record_size <= self.config.batch_bytes_max
    }

    /// Appends a record to `tp`'s open batch, sealing that batch first when the record
    /// does not fit. A record larger than `batch_bytes_max` on its own still gets a batch
    /// of its own (the producer refuses such records before they get here).
    pub fn append(
        &mut self,
        tp: &TopicPartition,
        now: Instant,
        record: &RecordParts<'_>,
        token: T,
    ) -> Appended {
        let record_size = record.size();
        let batch_bytes_max = self.config.batch_bytes_max;
        let queue = self
            .queues
            .entry(tp.clone())
            .or_insert_with(PartitionQueue::new);
        let mut sealed = false;
        if let Some(open) = &queue.open {
            if open.builder.size_bytes() + record_size > batch_bytes_max {
                let open = queue.open.take().expect("checked above");
                queue.sealed.push_back(seal(tp, open));
                sealed = true;
            }
        }
        let new_batch = queue.open.is_none();
        let open = queue.open.get_or_insert_with(|| {
            // Start small: most partitions never fill a whole batch_bytes_max.
            let capacity = record_size.max(16 * 1024).min(batch_bytes_max);
            OpenBatch {
                builder: BatchBuilder::with_capacity(ProducerStamp::default(), capacity),
                created: now,
                tokens: Vec::new(),
            }
        });
        open.builder.append(
            record.timestamp_ms,
            record.key,
            record.value,
            record.headers,
        );
        open.tokens.push(token);
        if open.builder.size_bytes() >= batch_bytes_max {
            let open = queue.open.take().expect("just filled");
            queue.sealed.push_back(seal(tp, open));
            sealed = true;
        }
        Appended { new_batch, sealed }
    }

    /// Takes every batch that may be sent now: per partition with nothing in flight, no
    /// backoff pending and (with idempotence) a usable sequence, the first sealed batch, or
    /// the open one once its linger expired (at once while a flush is under way). Each
    /// taken batch's partition is then in flight until [`complete`](Self::complete) or
    /// [`retry`](Self::retry). With idempotence a batch without a stamp gets one here: the
    /// partition's next sequence in the current identity.
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
            if queue.in_flight || queue.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            if config.idempotent && blocked(*identity, sequences.get(tp)) {
                continue;
            }
            let mut batch = match queue.sealed.pop_front() {
                Some(batch) => batch,
                None => match &queue.open {
                    Some(open) if flushing || now >= open.created + linger => {
                        let open = queue.open.take().expect("matched above");
                        seal(tp, open)
                    }
                    _ => continue,
                },
            };
            if let (Some(identity), None) = (*identity, batch.stamp) {
                stamp(&mut batch, identity, sequences);
            }
            queue.in_flight = true;
            queue.retry_at = None;
            ready.push(batch);
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
    /// instants for which `take` holds.
    fn take_blocked_where(&mut self, take: impl Fn(Instant) -> bool) -> Vec<Batch<T>> {
        let mut taken = Vec::new();
        if !self.config.idempotent {
            return taken;
        }
        for (tp, queue) in &mut self.queues {
            if queue.in_flight || !blocked(self.identity, self.sequences.get(tp)) {
                continue;
            }
            // Batches are created in queue order, so the ones taken come first.
            while queue.sealed.front().is_some_and(|b| take(b.created)) {
                taken.extend(queue.sealed.pop_front());
            }
            if queue.sealed.is_empty() && queue.open.as_ref().is_some_and(|o| take(o.created)) {
                let open = queue.open.take().expect("checked above");
                taken.push(seal(tp, open));
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
            .filter(|(_, q)| !q.in_flight)
            .filter_map(|(tp, q)| {
                if self.config.idempotent && blocked(self.identity, self.sequences.get(tp)) {
                    let first = q.sealed.front().map(|b| b.created);
                    let created = first.or(q.open.as_ref().map(|o| o.created))?;
                    return Some(created + self.config.delivery_timeout);
                }
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
                Some(q.retry_at.map_or(due, |t| t.max(due)))
            })
            .min()
    }

    /// The in-flight batch of `tp` is done (acknowledged or failed for good).
    pub fn complete(&mut self, tp: &TopicPartition) {
        if let Some(queue) = self.queues.get_mut(tp) {
            queue.in_flight = false;
            queue.retry_at = None;
            if queue.is_idle() {
                self.queues.remove(tp);
            }
        }
    }

    /// The in-flight batch was refused as out of order (the leader lacks the batches
    /// before it, so it was not written): its partition's sequence is unknown, and the
    /// batch is retried at `retry_at` with a new stamp, in the producer's next epoch.
    pub fn retry_in_next_epoch(&mut self, mut batch: Batch<T>, retry_at: Instant) {
        if let Some(stamp) = batch.stamp.take() {
            self.sequence_unknown(&batch.tp, &stamp);
        }
        self.retry(batch, retry_at);
    }

    /// The in-flight batch failed and will be retried at `retry_at`: it goes back to the
    /// front of its partition's queue, ahead of everything appended since. It keeps its
    /// stamp, so the leader can tell a resend of a batch it has.
    pub fn retry(&mut self, batch: Batch<T>, retry_at: Instant) {
        let queue = self
            .queues
            .entry(batch.tp.clone())
            .or_insert_with(PartitionQueue::new);
        queue.in_flight = false;
        queue.retry_at = Some(retry_at);
        queue.sealed.push_front(batch);
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

fn seal<T>(tp: &TopicPartition, open: OpenBatch<T>) -> Batch<T> {
    Batch {
        tp: tp.clone(),
        bytes: open.builder.build(),
        tokens: open.tokens,
        created: open.created,
        attempts: 0,
        stamp: None,
    }
}

/// Whether an idempotent partition with `sequence` cannot stamp a batch now: there is no
/// producer id yet, or its sequence is unknown in the current identity.
fn blocked(identity: Option<ProducerIdentity>, sequence: Option<&PartitionSequence>) -> bool {
    match identity {
        None => true,
        Some(identity) => sequence.is_some_and(|s| s.unknown && s.identity == identity),
    }
}

/// Stamps `batch` with the next sequence of its partition in `identity` (from 0 when the
/// partition's sequence belongs to an earlier identity) and advances it by the records.
fn stamp<T>(
    batch: &mut Batch<T>,
    identity: ProducerIdentity,
    sequences: &mut HashMap<TopicPartition, PartitionSequence>,
) {
    let fresh = PartitionSequence {
        identity,
        next: 0,
        unknown: false,
    };
    let sequence = sequences.entry(batch.tp.clone()).or_insert(fresh);
    if sequence.identity != identity {
        *sequence = fresh;
    }
    assert!(
        !sequence.unknown,
        "{}: stamping in an identity whose sequence is unknown",
        batch.tp
    );
    let stamp = identity.stamp(sequence.next);
    let n_records = i32::try_from(batch.tokens.len()).expect("a batch holds < 2^31 records");
    sequence.next = add_sequence(sequence.next, n_records);
    // The bytes were built without a stamp, or with one of an earlier epoch.
    let mut bytes = BytesMut::from(std::mem::take(&mut batch.bytes));
    set_producer_stamp(&mut bytes, stamp);
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

    fn value(n: usize) -> Vec<u8> {
        vec![b'x'; n]
    }

    fn append(
        acc: &mut Accumulator<u32>,
        tp: &TopicPartition,
        now: Instant,
        v: &[u8],
        token: u32,
    ) -> Appended {
        let record = RecordParts {
            timestamp_ms: 1_000,
            key: None,
            value: Some(v),
            headers: &[],
        };
        acc.append(tp, now, &record, token)
    }

    fn accumulator(batch_bytes_max: usize, linger_ms: u64) -> Accumulator<u32> {
        Accumulator::new(AccumulatorConfig {
            batch_bytes_max,
            linger: Duration::from_millis(linger_ms),
            delivery_timeout: Duration::from_secs(120),
            idempotent: false,
        })
    }

    fn tokens(batches: &[Batch<u32>]) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> = batches.iter().map(|b| b.tokens.clone()).collect();
        out.sort();
        out
    }

    #[test]
    fn a_batch_waits_for_its_linger() {
        let t0 = Instant::now();
        let mut acc = accumulator(1 << 20, 5);
        let a = tp("t", 0);
        assert_eq!(
            append(&mut acc, &a, t0, b"one", 1),
            Appended {
                new_batch: true,
                sealed: false
            }
        );
        assert_eq!(
            append(&mut acc, &a, t0 + Duration::from_millis(3), b"two", 2),
            Appended {
                new_batch: false,
                sealed: false
            }
        );
        assert!(acc.drain_ready(t0 + Duration::from_millis(4)).is_empty());
        assert_eq!(acc.next_wakeup(), Some(t0 + Duration::from_millis(5)));
        let ready = acc.drain_ready(t0 + Duration::from_millis(5));
        assert_eq!(tokens(&ready), vec![vec![1, 2]]);
        let batch = RecordBatch::validate(ready[0].bytes.clone()).unwrap();
        let values: Vec<_> = batch
            .records()
            .unwrap()
            .map(|r| r.unwrap().value.unwrap())
            .collect();
        assert_eq!(values, vec![&b"one"[..], &b"two"[..]]);
        // In flight: nothing more until completed.
        assert_eq!(acc.next_wakeup(), None);
        assert!(!acc.is_empty());
        acc.complete(&a);
        assert!(acc.is_empty());
    }

    #[test]
    fn a_full_batch_is_ready_at_once_and_the_record_that_overflows_starts_the_next() {
        let t0 = Instant::now();
        let record = RecordParts {
            timestamp_ms: 1_000,
            key: None,
            value: Some(&value(100)),
            headers: &[],
        };
        // Room for exactly three records.
        let max = HEADER_LEN + 3 * record.size() + 2;
        let mut acc = accumulator(max, 1_000);
        let a = tp("t", 0);
        for token in 0..3 {
            assert!(!append(&mut acc, &a, t0, &value(100), token).sealed);
        }
        assert!(acc.needs_new_batch(&a, record.size()));
        assert_eq!(
            append(&mut acc, &a, t0, &value(100), 3),
            Appended {
                new_batch: true,
                sealed: true
            }
        );
        let ready = acc.drain_ready(t0);
        assert_eq!(tokens(&ready), vec![vec![0, 1, 2]]);
        assert!(ready[0].bytes.len() <= max);
        acc.complete(&a);
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
        assert_eq!(
            append(&mut acc, &a, t0, &value(10), 0),
            Appended {
                new_batch: true,
                sealed: true
            }
        );
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
        acc.complete(&batch_b.tp);
        batch_a.attempts += 1;
        let backoff = t0 + Duration::from_millis(100);
        acc.retry(batch_a, backoff);
        assert!(acc.drain_ready(t0 + Duration::from_millis(50)).is_empty());
        assert_eq!(acc.next_wakeup(), Some(backoff));
        let again = acc.drain_ready(backoff);
        assert_eq!(tokens(&again), vec![vec![1]]);
        assert_eq!(again[0].attempts, 1);
        acc.complete(&a);
        assert_eq!(tokens(&acc.drain_ready(backoff)), vec![vec![2]]);
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
            acc.queues
                .get_mut(tp)
                .unwrap()
                .sealed
                .push_back(seal(tp, open));
        }
    }

    /// The stamp in a batch's bytes, as the broker reads it: (id, epoch, base sequence).
    fn wire_stamp(batch: &Batch<u32>) -> (i64, i16, i32) {
        let header = *RecordBatch::validate(batch.bytes.clone()).unwrap().header();
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
        let mut seen = Vec::new();
        for _ in 0..3 {
            for batch in acc.drain_ready(t0) {
                seen.push((batch.tp.partition.0, wire_stamp(&batch)));
                acc.complete(&batch.tp);
            }
        }
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
        // An idle partition keeps its sequence for its next batch.
        assert!(acc.is_empty());
        append_batch(&mut acc, &a, t0, 6, 1);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 0, 6));
    }

    #[test]
    fn a_retried_batch_keeps_its_stamp_and_bytes() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let a = tp("t", 0);
        append_batch(&mut acc, &a, t0, 0, 2);
        append_batch(&mut acc, &a, t0, 2, 1);
        let first = drain_one(&mut acc, &a, t0);
        let bytes = first.bytes.clone();
        acc.retry(first, t0);
        let again = drain_one(&mut acc, &a, t0);
        assert_eq!(again.bytes, bytes);
        assert_eq!(wire_stamp(&again), (7, 0, 0));
        acc.complete(&a);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 0, 2));
    }

    #[test]
    fn without_idempotence_batches_carry_no_stamp() {
        let t0 = Instant::now();
        let mut acc = accumulator(1 << 20, 0);
        let a = tp("t", 0);
        append(&mut acc, &a, t0, b"x", 1);
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        let batch = drain_one(&mut acc, &a, t0);
        assert_eq!(batch.stamp, None);
        let header = *RecordBatch::validate(batch.bytes).unwrap().header();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (-1, -1, -1)
        );
    }

    #[test]
    fn an_out_of_order_batch_waits_for_the_next_epoch_and_restarts_at_zero() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let (a, b) = (tp("t", 0), tp("t", 1));
        append_batch(&mut acc, &a, t0, 0, 2);
        let first = drain_one(&mut acc, &a, t0);
        acc.complete(&a);
        drop(first);
        append_batch(&mut acc, &a, t0, 2, 3);
        append_batch(&mut acc, &a, t0, 5, 1);
        append_batch(&mut acc, &b, t0, 100, 1);
        let mut ready = acc.drain_ready(t0);
        ready.sort_by_key(|b| b.tp.partition);
        let (refused, other) = (ready.remove(0), ready.remove(0));
        assert_eq!(wire_stamp(&refused), (7, 0, 2));
        assert_eq!(wire_stamp(&other), (7, 0, 0));
        // The leader says 2 is out of order: the partition's sequence is unknown.
        acc.retry_in_next_epoch(refused, t0);
        assert_eq!(acc.identity_need(), IdentityNeed::Bump(ID));
        // Partition 0 waits; partition 1 still sends in epoch 0.
        acc.complete(&b);
        append_batch(&mut acc, &b, t0, 101, 1);
        let ready = acc.drain_ready(t0);
        assert_eq!(ready.len(), 1);
        assert_eq!(wire_stamp(&ready[0]), (7, 0, 1));
        let in_flight_b = ready.into_iter().next().unwrap();
        acc.set_identity(BUMPED);
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        // The refused batch goes again, first, restamped from 0 in epoch 1.
        let restamped = drain_one(&mut acc, &a, t0);
        assert_eq!(restamped.tokens, [2, 3, 4]);
        assert_eq!(wire_stamp(&restamped), (7, 1, 0));
        acc.complete(&a);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 1, 3));
        // Partition 1's batch in flight from epoch 0 keeps its stamp on a retry; its next
        // batch starts epoch 1 at 0.
        acc.retry(in_flight_b, t0);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &b, t0)), (7, 0, 1));
        acc.complete(&b);
        append_batch(&mut acc, &b, t0, 102, 1);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &b, t0)), (7, 1, 0));
    }

    #[test]
    fn a_sequence_left_unknown_needs_an_epoch_bump_only_in_its_own_epoch() {
        let t0 = Instant::now();
        let mut acc = idempotent();
        acc.set_identity(ID);
        let (a, b) = (tp("t", 0), tp("t", 1));
        append_batch(&mut acc, &a, t0, 0, 1);
        append_batch(&mut acc, &b, t0, 10, 1);
        let mut ready = acc.drain_ready(t0);
        ready.sort_by_key(|b| b.tp.partition);
        let (lost_a, lost_b) = (ready.remove(0), ready.remove(0));
        // Partition 0's batch timed out after it was sent: written or not, nobody knows.
        acc.complete(&a);
        acc.sequence_unknown(&a, &lost_a.stamp.unwrap());
        append_batch(&mut acc, &a, t0, 1, 1);
        assert_eq!(acc.identity_need(), IdentityNeed::Bump(ID));
        assert!(acc.drain_ready(t0).is_empty());
        acc.set_identity(BUMPED);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 1, 0));
        // Partition 1's batch of epoch 0 times out after the bump: partition 1 has not
        // stamped anything in epoch 1 yet, so it needs no further bump.
        acc.complete(&b);
        acc.sequence_unknown(&b, &lost_b.stamp.unwrap());
        append_batch(&mut acc, &b, t0, 11, 1);
        assert_eq!(acc.identity_need(), IdentityNeed::Nothing);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &b, t0)), (7, 1, 0));
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
        acc.complete(&a);
        acc.sequence_unknown(&a, &batch.stamp.unwrap());
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
        acc.sequences.insert(
            a.clone(),
            PartitionSequence {
                identity: ID,
                next: i32::MAX - 1,
                unknown: false,
            },
        );
        append_batch(&mut acc, &a, t0, 0, 3);
        append_batch(&mut acc, &a, t0, 3, 1);
        assert_eq!(
            wire_stamp(&drain_one(&mut acc, &a, t0)),
            (7, 0, i32::MAX - 1)
        );
        acc.complete(&a);
        assert_eq!(wire_stamp(&drain_one(&mut acc, &a, t0)), (7, 0, 1));
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
