//! The producer's record accumulator: records grouped per partition into RecordBatch v2
//! batches, and the decisions of when a batch goes out. Pure: no I/O, no clock of its own
//! (every decision takes `now`), so it is tested without a network or sleeps.
//!
//! Per partition there is at most one open batch (being filled), a queue of sealed batches
//! (full, expired, or handed back for a retry) and at most one batch in flight. Why one in
//! flight: a retried batch must not be overtaken by the next one, or records would be
//! reordered within the partition; idempotent producers can later allow up to five.
//! The generic `T` is what the producer keeps per record (its delivery handle).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_protocol::batch::{BatchBuilder, ProducerStamp, HEADER_LEN};

use crate::TopicPartition;

/// When batches close.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AccumulatorConfig {
    /// A batch is sealed when the next record would take it past this size.
    pub batch_bytes_max: usize,
    /// A batch is ready this long after its first record, full or not.
    pub linger: Duration,
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
}

impl<T> Accumulator<T> {
    pub fn new(config: AccumulatorConfig) -> Self {
        Accumulator {
            config,
            queues: HashMap::new(),
            flushes: 0,
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

    /// Takes every batch that may be sent now: per partition with nothing in flight and no
    /// backoff pending, the first sealed batch, or the open one once its linger expired (at
    /// once while a flush is under way). Each taken batch's partition is then in flight
    /// until [`complete`](Self::complete) or [`retry`](Self::retry).
    pub fn drain_ready(&mut self, now: Instant) -> Vec<Batch<T>> {
        let linger = self.config.linger;
        let flushing = self.flushes > 0;
        let mut ready = Vec::new();
        for (tp, queue) in &mut self.queues {
            if queue.in_flight || queue.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            let batch = match queue.sealed.pop_front() {
                Some(batch) => batch,
                None => match &queue.open {
                    Some(open) if flushing || now >= open.created + linger => {
                        let open = queue.open.take().expect("matched above");
                        seal(tp, open)
                    }
                    _ => continue,
                },
            };
            queue.in_flight = true;
            queue.retry_at = None;
            ready.push(batch);
        }
        ready
    }

    /// The next instant at which [`drain_ready`](Self::drain_ready) would return something
    /// it would not return now, or `None` when only completions can change that.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let flushing = self.flushes > 0;
        self.queues
            .values()
            .filter(|q| !q.in_flight)
            .filter_map(|q| {
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

    /// The in-flight batch failed and will be retried at `retry_at`: it goes back to the
    /// front of its partition's queue, ahead of everything appended since.
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
    }
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
}
