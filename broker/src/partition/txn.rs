//! A partition's side of transactions (issue 26): the last stable offset read_committed
//! consumers read up to, the aborted transactions they skip, and the commit and abort
//! markers the transaction coordinator has the leader write (Kafka's WriteTxnMarkers).
//! The state itself is the producers' ([`crate::producer_state`]), kept under the same
//! lock as the idempotent sequences, so it always matches the log.

use std::sync::atomic::Ordering;

use sluice_protocol::control::ControlMarker;
use sluice_protocol::{Acks, Offset};
use sluice_storage::{Clock, SystemClock};

use super::{Partition, PendingAppend, Role};
use crate::error::ApiError;
use crate::producer_state::ProducerStates;

impl Partition {
    /// The last stable offset: the HW, or the first offset of the oldest transaction that
    /// is open or whose marker the HW does not cover yet, if that is lower. Below it every
    /// record's transaction is decided; read_committed reads stop there.
    pub fn last_stable_offset(&self) -> Offset {
        self.last_stable_offset_at(self.high_watermark())
    }

    /// [`Partition::last_stable_offset`] against a HW read before. Takes the producers'
    /// lock only while a transaction holds the LSO below the HW, to see whether the HW has
    /// passed its marker since.
    pub(super) fn last_stable_offset_at(&self, high_watermark: Offset) -> Offset {
        if self.first_unstable.load(Ordering::Acquire) >= high_watermark.0 {
            return high_watermark;
        }
        let mut producers = self.producers.lock().expect("producer state lock");
        let first = producers.first_unstable_offset(high_watermark);
        self.publish_unstable(&producers);
        first.map_or(high_watermark, |f| f.min(high_watermark))
    }

    /// The aborted transactions (producer id, first offset) with records in `from..=to`.
    pub(super) fn aborted_between(&self, from: Offset, to: Offset) -> Vec<(i64, Offset)> {
        let producers = self.producers.lock().expect("producer state lock");
        producers.aborted_between(from, to)
    }

    /// Publishes where the producers' state says the unstable part starts. Call with the
    /// producers' lock held, after any change to their transactions.
    pub(super) fn publish_unstable(&self, producers: &ProducerStates) {
        self.first_unstable
            .store(producers.unstable_bound(), Ordering::Release);
    }

    /// The ordered phase of writing a transaction marker on the leader: ends producer
    /// `producer_id`'s transaction in this partition with `marker` (a no-op marker when it
    /// wrote nothing here, as in Kafka). Refused when the producer's epoch or the
    /// coordinator's is older than one this partition has seen. Finish with
    /// [`Partition::complete`]: the coordinator counts the marker written once the ISR has
    /// it. Blocking.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: ControlMarker,
    ) -> Result<PendingAppend, ApiError> {
        self.check_live()?;
        let epoch = {
            let state = self.state();
            if state.role != Role::Leader {
                return Err(self.not_leader(state.role));
            }
            self.leader_epoch()
        };
        let now_ms = SystemClock.now_ms();
        let batch = marker.batch(producer_id, producer_epoch, now_ms);
        let bytes = batch.len() as u64;
        let mut producers = self.producers.lock().expect("producer state lock");
        producers.check_marker(producer_id, producer_epoch, &marker)?;
        let (info, ticket) = self
            .log
            .append_batches_no_wait(vec![batch], epoch, true)
            .map_err(|e| self.append_failed(e))?
            .expect("a blocking append always appends or fails");
        producers.record_marker(
            producer_id,
            producer_epoch,
            marker,
            info.base_offset,
            now_ms,
        );
        self.publish_unstable(&producers);
        drop(producers);
        self.start_flush(bytes);
        self.appended.notify_waiters();
        Ok(PendingAppend {
            duplicate: false,
            log_start_offset: self.log.read().log_start_offset(),
            info,
            ticket,
            acks: Acks::All,
            leader_epoch: epoch,
        })
    }
}
