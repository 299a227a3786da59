//! What a record's sender waits on: one outcome per batch, shared by the futures of its
//! records, as Kafka's producer shares a `ProduceRequestResult` among its records'
//! `FutureRecordMetadata`. A channel per record cost an allocation and four atomic
//! operations per record on both sides; a batch's records now share one [`BatchOutcome`]
//! and each future knows its record's index in the batch.
//!
//! A batch split in two (refused as too large) completes as two ranges of its outcome, each
//! with its own base offset; the futures do not notice. The accumulator's batches hold a
//! [`Completer`]: when the last one of an outcome is dropped with records still pending (the
//! producer gone), those records fail with [`Error::ProducerClosed`] instead of waiting
//! forever.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::{Error, PartitionId, Result, TopicPartition};

/// Where an acknowledged batch was written: its base offset (negative when the producer did
/// not wait for one, with `acks` 0) and the broker's append time (negative unless the topic
/// uses it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Written {
    pub base_offset: i64,
    pub log_append_time: i64,
}

/// Where an acknowledged record was written.
///
/// ```no_run
/// # async fn demo(producer: sluice_client::Producer) -> sluice_client::Result<()> {
/// use sluice_client::ProducerRecord;
/// let metadata = producer.send(ProducerRecord::new("orders", "x")).await?.await?;
/// println!("{}/{} at offset {}", metadata.topic, metadata.partition, metadata.offset);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: PartitionId,
    /// The record's offset, or -1 with [`Acks::None`](crate::Acks::None).
    pub offset: i64,
    /// The record's timestamp (the broker's append time when the topic uses it).
    pub timestamp_ms: i64,
}

/// The outcome of one batch's records, filled in by ranges of record indexes.
#[derive(Debug)]
pub(crate) struct BatchOutcome {
    tp: TopicPartition,
    state: Mutex<OutcomeState>,
}

#[derive(Debug, Default)]
struct OutcomeState {
    /// Completed ranges of record indexes, each with its result. One, unless the batch was
    /// split.
    done: Vec<(Range<usize>, Result<Written>)>,
    /// Every completer is gone: what is not done never will be.
    closed: bool,
    /// Tasks waiting for some record of the batch.
    wakers: Vec<Waker>,
    /// How many times `wakers` was emptied: a future whose registration is of the current
    /// round need not register again.
    round: u64,
}

impl BatchOutcome {
    fn state(&self) -> MutexGuard<'_, OutcomeState> {
        // Nothing panics under this lock; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, update: impl FnOnce(&mut OutcomeState)) {
        let wakers = {
            let mut state = self.state();
            update(&mut state);
            state.round += 1;
            std::mem::take(&mut state.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    fn metadata(&self, record: usize, timestamp_ms: i64, written: &Written) -> RecordMetadata {
        RecordMetadata {
            topic: self.tp.topic.clone(),
            partition: self.tp.partition,
            offset: if written.base_offset < 0 {
                -1
            } else {
                written.base_offset + record as i64
            },
            timestamp_ms: if written.log_append_time >= 0 {
                written.log_append_time
            } else {
                timestamp_ms
            },
        }
    }
}

/// The producer's side of an outcome: completes ranges of it, and closes it when dropped.
/// Shared by a batch and, after a split, by its halves.
#[derive(Debug)]
pub(crate) struct Completer(Arc<BatchOutcome>);

impl Completer {
    /// A new batch's outcome, through the completer the accumulator keeps with the batch.
    pub(crate) fn for_batch(tp: TopicPartition) -> Arc<Completer> {
        Arc::new(Completer(Arc::new(BatchOutcome {
            tp,
            state: Mutex::default(),
        })))
    }

    /// The future of the record at `index` in the batch.
    pub(crate) fn future(&self, index: usize, timestamp_ms: i64) -> DeliveryFuture {
        DeliveryFuture {
            outcome: Arc::clone(&self.0),
            index,
            timestamp_ms,
            registered: None,
        }
    }

    /// Completes the records `range` of the batch.
    pub(crate) fn complete(&self, range: Range<usize>, result: Result<Written>) {
        self.0.finish(|state| state.done.push((range, result)));
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.0.finish(|state| state.closed = true);
    }
}

/// Resolves when the record is acknowledged (or has failed for good).
///
/// ```no_run
/// # async fn demo(producer: sluice_client::Producer) -> sluice_client::Result<()> {
/// use sluice_client::ProducerRecord;
/// let delivery = producer.send(ProducerRecord::new("orders", "hello")).await?;
/// let metadata = delivery.await?;
/// println!("written at {}/{}", metadata.partition, metadata.offset);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DeliveryFuture {
    outcome: Arc<BatchOutcome>,
    /// The record's index in its batch as first sealed.
    index: usize,
    timestamp_ms: i64,
    /// The waker this future registered last, and in which round of the outcome's.
    registered: Option<(Waker, u64)>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = &this.outcome;
        let mut state = outcome.state();
        let done = state.done.iter().find(|(r, _)| r.contains(&this.index));
        if let Some((range, result)) = done {
            return Poll::Ready(match result {
                Ok(written) => {
                    Ok(outcome.metadata(this.index - range.start, this.timestamp_ms, written))
                }
                Err(e) => Err(e.clone()),
            });
        }
        if state.closed {
            return Poll::Ready(Err(Error::ProducerClosed));
        }
        // Registered once per round and waker: a future polled again by the same task adds
        // nothing (no scan of the others' wakers, which made polling a batch's records
        // quadratic), nor does a task awaiting the records of a batch one after another.
        let round = state.round;
        let current = |w: &Waker| w.will_wake(cx.waker());
        let fresh = match &this.registered {
            Some((waker, r)) => *r != round || !current(waker),
            None => true,
        };
        if fresh && !state.wakers.last().is_some_and(current) {
            state.wakers.push(cx.waker().clone());
        }
        drop(state);
        if fresh {
            this.registered = Some((cx.waker().clone(), round));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    fn tp() -> TopicPartition {
        TopicPartition::new("t", PartitionId(3))
    }

    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn poll(f: &mut DeliveryFuture, waker: &Waker) -> Poll<Result<RecordMetadata>> {
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn records_of_a_split_batch_get_the_offsets_of_their_half() {
        let completer = Completer::for_batch(tp());
        let mut futures: Vec<_> = (0..5)
            .map(|i| completer.future(i, 100 + i as i64))
            .collect();
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(Arc::clone(&count));
        assert!(futures.iter_mut().all(|f| poll(f, &waker).is_pending()));
        // The second half, records 2..5, was written first, at 50; the first at 70.
        let written = |base_offset| Written {
            base_offset,
            log_append_time: -1,
        };
        completer.complete(2..5, Ok(written(50)));
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(poll(&mut futures[1], &waker).is_pending());
        completer.complete(0..2, Ok(written(70)));
        let got: Vec<(i64, i64)> = futures
            .iter_mut()
            .map(|f| match poll(f, &waker) {
                Poll::Ready(Ok(m)) => (m.offset, m.timestamp_ms),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![(70, 100), (71, 101), (50, 102), (51, 103), (52, 104)]
        );
    }

    /// Futures polled again and again register their waker once per completion round,
    /// and every task waiting is woken when its range completes.
    #[test]
    fn a_waker_is_registered_once_per_round() {
        let completer = Completer::for_batch(tp());
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::new(Count(0.into()))).collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(Arc::clone(c))).collect();
        let mut futures: Vec<_> = (0..3).map(|i| completer.future(i, 0)).collect();
        for _ in 0..10 {
            for (f, w) in futures.iter_mut().zip(&wakers) {
                assert!(poll(f, w).is_pending());
            }
        }
        assert_eq!(completer.0.state().wakers.len(), 3);
        let written = Written {
            base_offset: 0,
            log_append_time: -1,
        };
        completer.complete(0..1, Ok(written));
        let woken = |c: &Arc<Count>| c.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(counts.iter().map(woken).collect::<Vec<_>>(), vec![1, 1, 1]);
        // The next round: the two still pending register again, once each.
        for _ in 0..10 {
            for (f, w) in futures[1..].iter_mut().zip(&wakers[1..]) {
                assert!(poll(f, w).is_pending());
            }
        }
        assert_eq!(completer.0.state().wakers.len(), 2);
        completer.complete(1..3, Ok(written));
        assert_eq!(counts.iter().map(woken).collect::<Vec<_>>(), vec![1, 2, 2]);
        assert!(poll(&mut futures[2], &wakers[2]).is_ready());
    }

    #[test]
    fn the_brokers_append_time_and_acks_0_show_in_the_metadata() {
        let completer = Completer::for_batch(tp());
        let mut f = completer.future(1, 5);
        let written = Written {
            base_offset: -1,
            log_append_time: 9_000,
        };
        completer.complete(0..2, Ok(written));
        let waker = Waker::noop();
        match poll(&mut f, waker) {
            Poll::Ready(Ok(m)) => {
                assert_eq!((m.topic.as_str(), m.partition), ("t", PartitionId(3)));
                assert_eq!((m.offset, m.timestamp_ms), (-1, 9_000));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_range_fails_its_records_and_a_dropped_producer_the_rest() {
        let completer = Completer::for_batch(tp());
        let mut failed = completer.future(0, 0);
        let mut pending = completer.future(1, 0);
        let half = Arc::clone(&completer);
        completer.complete(0..1, Err(Error::InvalidArgument("refused".into())));
        let waker = Waker::noop();
        assert!(matches!(
            poll(&mut failed, waker),
            Poll::Ready(Err(Error::InvalidArgument(_)))
        ));
        assert!(poll(&mut pending, waker).is_pending());
        drop(completer);
        assert!(
            poll(&mut pending, waker).is_pending(),
            "a half still holds it"
        );
        drop(half);
        assert!(matches!(
            poll(&mut pending, waker),
            Poll::Ready(Err(Error::ProducerClosed))
        ));
    }
}
