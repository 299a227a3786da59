//! Replicas over real logs in a temporary directory, for the tests of the partition and
//! of the replica fetch handler: broker 1 is this broker.

use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sluice_protocol::batch::{set_base_offset, set_partition_leader_epoch, BatchBuilder};
use sluice_protocol::messages::ReplicaFetchPartition;
use sluice_protocol::{BrokerId, LeaderEpoch, Offset, PartitionId};
use sluice_storage::{Durability, LogConfig, PartitionLog, SharedLog, SystemClock};

use super::{Acks, Assignment, Partition};

/// This broker.
pub const SELF: BrokerId = BrokerId(1);

/// Replicas 1, 2 and 3 with `leader` in `leader_epoch` and the ISR `isr`.
pub fn assignment(leader: i32, leader_epoch: i32, isr: &[i32]) -> Assignment {
    Assignment {
        leader: BrokerId(leader),
        leader_epoch: LeaderEpoch(leader_epoch),
        partition_epoch: leader_epoch,
        replicas: vec![BrokerId(1), BrokerId(2), BrokerId(3)],
        isr: isr.iter().copied().map(BrokerId).collect(),
    }
}

/// Opens the replica in `dir` (recovering its log as a restart does) in `assignment`'s
/// role. Durability `replicated`: the leader counts its log end without an fsync wait.
pub fn open(dir: &Path, assignment: &Assignment) -> Arc<Partition> {
    let durability = Durability::Replicated {
        flush_interval_ms: 60_000,
    };
    open_with(dir, assignment, durability)
}

/// As [`open`], with `durability`.
pub fn open_with(dir: &Path, assignment: &Assignment, durability: Durability) -> Arc<Partition> {
    let config = LogConfig {
        durability,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir, config, Arc::new(SystemClock)).expect("open the log");
    Arc::new(Partition::new(
        Arc::from("t"),
        PartitionId(0),
        SELF,
        SharedLog::new(log),
        assignment,
        1,
    ))
}

/// A follower's fetch of this partition from `fetch_offset`.
pub fn replica_fetch(fetch_offset: Offset) -> ReplicaFetchPartition {
    ReplicaFetchPartition {
        topic: "t".into(),
        partition: PartitionId(0),
        current_leader_epoch: LeaderEpoch(-1),
        fetch_offset,
        last_fetched_epoch: LeaderEpoch(-1),
        log_start_offset: Offset(0),
        partition_max_bytes: 1 << 20,
    }
}

/// A batch of `n` records, as a producer sends it.
pub fn batch(n: usize) -> Bytes {
    let mut builder = BatchBuilder::new();
    for i in 0..n {
        builder.append(
            1_700_000_000_000,
            None,
            Some(format!("v{i}").as_bytes()),
            &[],
        );
    }
    builder.build()
}

/// A batch of `n` records at `base` in `epoch`, as a leader stamped it.
pub fn leader_batch(base: i64, n: usize, epoch: i32) -> Bytes {
    let mut bytes = BytesMut::from(&batch(n)[..]);
    set_base_offset(&mut bytes, Offset(base));
    set_partition_leader_epoch(&mut bytes, LeaderEpoch(epoch));
    bytes.freeze()
}

/// The leader appends `batches` batches of `n` records each.
pub fn produce(partition: &Partition, batches: usize, n: usize) {
    for _ in 0..batches {
        partition
            .append_now(batch(n), Acks::Leader)
            .expect("the leader appends");
    }
    partition.maybe_advance_high_watermark();
}
