//! Transaction markers: the control batches a broker writes to every partition of a
//! transaction when it ends (Kafka's `EndTransactionMarker`). A marker is a control batch
//! (attributes' transactional and control bits set) with the producer's id and epoch and
//! one record whose key is `version i16 (0), type i16` (0 ABORT, 1 COMMIT) and whose value
//! is `version i16 (0), coordinator_epoch i32`, byte for byte as Kafka writes them, so
//! Kafka consumers skip them and read_committed readers learn from them where a
//! transaction ended.

use bytes::{Buf, BufMut};

use crate::batch::{BatchBuilder, ProducerStamp, RecordBatch, NO_SEQUENCE};
use crate::{Error, Result};

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlType {
    /// Its records are discarded by read_committed readers.
    Abort,
    /// Its records are visible to read_committed readers.
    Commit,
}

impl ControlType {
    /// The marker of a transaction that commits (`true`) or aborts.
    pub fn ending(committed: bool) -> ControlType {
        if committed {
            ControlType::Commit
        } else {
            ControlType::Abort
        }
    }

    fn wire(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }

    /// "commit" or "abort", for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            ControlType::Abort => "abort",
            ControlType::Commit => "commit",
        }
    }
}

/// One transaction marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlMarker {
    /// Commit or abort.
    pub kind: ControlType,
    /// The epoch of the transaction coordinator that wrote it: a marker from an older
    /// coordinator (one that lost its partition of the transaction log) is refused.
    pub coordinator_epoch: i32,
}

impl ControlMarker {
    /// The marker's batch for producer `producer_id` at `producer_epoch`, written at
    /// `timestamp_ms`: uncompressed, base offset 0 and leader epoch -1 until the leader
    /// stamps them, no sequence (markers are not part of the producer's sequence).
    pub fn batch(self, producer_id: i64, producer_epoch: i16, timestamp_ms: i64) -> bytes::Bytes {
        let stamp = ProducerStamp {
            producer_id,
            producer_epoch,
            base_sequence: NO_SEQUENCE,
        };
        let mut key = Vec::with_capacity(4);
        key.put_i16(0);
        key.put_i16(self.kind.wire());
        let mut value = Vec::with_capacity(6);
        value.put_i16(0);
        value.put_i32(self.coordinator_epoch);
        let mut builder = BatchBuilder::with_capacity(stamp, 32).control();
        builder.append(timestamp_ms, Some(&key), Some(&value), &[]);
        builder.build()
    }

    /// The marker a control batch holds.
    ///
    /// # Errors
    /// The batch is not a control batch, or its first record's key or value is not a
    /// version-0 marker (Kafka defines no other control record types for data partitions).
    pub fn of(batch: &RecordBatch) -> Result<ControlMarker> {
        let invalid = |reason: &str| Error::Invalid {
            field: "control batch",
            reason: reason.to_owned(),
        };
        if !batch.header().is_control() {
            return Err(invalid("the control bit is not set"));
        }
        let record = batch
            .records()?
            .next()
            .ok_or_else(|| invalid("it holds no record"))??;
        let mut key = record.key.as_deref().unwrap_or_default();
        if key.len() < 4 {
            return Err(invalid("its record's key is shorter than 4 bytes"));
        }
        let version = key.get_i16();
        let kind = match (version, key.get_i16()) {
            (0, 0) => ControlType::Abort,
            (0, 1) => ControlType::Commit,
            (0, other) => return Err(invalid(&format!("unknown control type {other}"))),
            (v, _) => return Err(invalid(&format!("unknown control key version {v}"))),
        };
        let mut value = record.value.as_deref().unwrap_or_default();
        if value.len() < 6 {
            return Err(invalid("its record's value is shorter than 6 bytes"));
        }
        let _version = value.get_i16();
        let coordinator_epoch = value.get_i32();
        Ok(ControlMarker {
            kind,
            coordinator_epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_through_its_batch() {
        for kind in [ControlType::Commit, ControlType::Abort] {
            let marker = ControlMarker {
                kind,
                coordinator_epoch: 7,
            };
            let batch = RecordBatch::validate(marker.batch(42, 3, 1_700_000_000_000)).unwrap();
            let header = batch.header();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(header.base_sequence, NO_SEQUENCE);
            assert_eq!(ControlMarker::of(&batch).unwrap(), marker);
        }
    }

    #[test]
    fn the_commit_marker_is_kafkas_bytes() {
        // Kafka's EndTransactionMarker: key = version 0, type 1 (COMMIT); value = version 0,
        // coordinator epoch.
        let batch = RecordBatch::validate(
            ControlMarker {
                kind: ControlType::Commit,
                coordinator_epoch: 5,
            }
            .batch(1, 0, 0),
        )
        .unwrap();
        let record = batch.records().unwrap().next().unwrap().unwrap();
        assert_eq!(record.key.as_deref(), Some(&[0u8, 0, 0, 1][..]));
        assert_eq!(record.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 5][..]));
        assert_eq!(batch.header().attributes, 0x30);
    }

    #[test]
    fn a_data_batch_or_a_strange_key_is_not_a_marker() {
        let mut builder = BatchBuilder::new();
        builder.append(0, Some(b"k"), Some(b"v"), &[]);
        let data = RecordBatch::validate(builder.build()).unwrap();
        assert!(ControlMarker::of(&data).is_err());
        let mut builder = BatchBuilder::new().control();
        builder.append(0, Some(&[0, 0, 0, 9]), Some(&[0, 0, 0, 0, 0, 0]), &[]);
        let strange = RecordBatch::validate(builder.build()).unwrap();
        assert!(ControlMarker::of(&strange).is_err());
    }
}
