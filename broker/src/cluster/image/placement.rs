//! Where a new topic's replicas go and who leads when a leader leaves: pure functions of the
//! brokers and the partition, so every node computes the same answer.

use sluice_protocol::BrokerId;

/// Whether `replication_factor` replicas fit on distinct `active` brokers; if not, the
/// message for the user.
pub(super) fn check_replication_factor(
    replication_factor: u16,
    active: &[BrokerId],
) -> Result<(), String> {
    let n_active = active.len();
    if replication_factor == 0 {
        return Err("replication factor 0 is invalid: use at least 1".into());
    }
    if usize::from(replication_factor) <= n_active {
        return Ok(());
    }
    if n_active == 0 {
        return Err(format!(
            "replication factor {replication_factor} needs as many brokers, but none is \
             available (registered, unfenced and not shutting down); start brokers or wait \
             until they have registered and caught up"
        ));
    }
    let ids: Vec<String> = active.iter().map(|id| id.to_string()).collect();
    let available = if n_active == 1 {
        format!("only broker {} is available", ids[0])
    } else {
        format!("only brokers {} are available", ids.join(", "))
    };
    Err(format!(
        "replication factor {replication_factor} needs {replication_factor} brokers, but \
         {available}; add brokers or use a smaller --replication-factor"
    ))
}

/// The replicas of each of `n_partitions` partitions of the topic created at log `index`,
/// preferred leader first. Partition `p` starts at broker `(index + p) % n` of `active` and
/// takes the next `replication_factor` brokers in id order, so leaders go round-robin over
/// the brokers, a partition's replicas are distinct, and topics created one after the other
/// start on different brokers.
///
/// `active` must be sorted and hold at least `replication_factor` >= 1 brokers
/// ([`check_replication_factor`]).
pub(super) fn assign_replicas(
    active: &[BrokerId],
    index: u64,
    n_partitions: u32,
    replication_factor: u16,
) -> Vec<Vec<BrokerId>> {
    let n_active = active.len();
    let replication_factor = usize::from(replication_factor);
    assert!(
        (1..=n_active).contains(&replication_factor),
        "replication factor {replication_factor} over {n_active} brokers"
    );
    // u64 arithmetic first, so the start does not depend on the platform's usize.
    let start = (index % n_active as u64) as usize;
    (0..n_partitions as usize)
        .map(|p| {
            (0..replication_factor)
                .map(|j| active[(start + p + j) % n_active])
                .collect()
        })
        .collect()
}

/// The new leader: the first of `replicas` (preferred first) that is in `isr` and
/// `eligible`, or [`BrokerId::NONE`] when there is none (the partition goes offline).
pub(super) fn elect_leader(
    replicas: &[BrokerId],
    isr: &[BrokerId],
    eligible: impl Fn(BrokerId) -> bool,
) -> BrokerId {
    replicas
        .iter()
        .copied()
        .find(|id| isr.contains(id) && eligible(*id))
        .unwrap_or(BrokerId::NONE)
}

/// Where one replica's log ends: the epoch of its last batch, then its end offset.
pub type LogEnd = (sluice_protocol::LeaderEpoch, sluice_protocol::Offset);

/// The leader of a longest-log election: the replica whose log is longest, compared as
/// Raft compares logs (the last batch's epoch first, then the end offset), so the newest
/// history wins over a longer stale one. `None` until every replica has reported, or while
/// no replica with the longest log is `eligible`. Ties go to the first in replica order.
pub fn longest_log(
    replicas: &[BrokerId],
    end_of: impl Fn(BrokerId) -> Option<LogEnd>,
    eligible: impl Fn(BrokerId) -> bool,
) -> Option<BrokerId> {
    let ends: Vec<(BrokerId, LogEnd)> = replicas
        .iter()
        .map(|id| end_of(*id).map(|end| (*id, end)))
        .collect::<Option<_>>()?;
    let longest = ends.iter().map(|(_, end)| *end).max()?;
    ends.iter()
        .find(|(id, end)| *end == longest && eligible(*id))
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use sluice_protocol::{LeaderEpoch, Offset};

    use super::*;

    fn end(epoch: i32, offset: i64) -> Option<LogEnd> {
        Some((LeaderEpoch(epoch), Offset(offset)))
    }

    #[test]
    fn the_longest_log_compares_the_last_epoch_first() {
        let replicas = [BrokerId(1), BrokerId(2), BrokerId(3)];
        let ends = |id: BrokerId| match id.0 {
            1 => end(4, 120),
            2 => end(5, 100),
            _ => end(5, 90),
        };
        assert_eq!(longest_log(&replicas, ends, |_| true), Some(BrokerId(2)));
        // The longest is not eligible: wait rather than take a shorter log.
        assert_eq!(longest_log(&replicas, ends, |id| id.0 != 2), None);
    }

    #[test]
    fn the_longest_log_waits_for_every_replica_and_breaks_ties_in_replica_order() {
        let replicas = [BrokerId(3), BrokerId(1), BrokerId(2)];
        let missing = |id: BrokerId| (id.0 != 2).then_some((LeaderEpoch(1), Offset(10)));
        assert_eq!(longest_log(&replicas, missing, |_| true), None);
        let tied = |_| end(1, 10);
        assert_eq!(longest_log(&replicas, tied, |_| true), Some(BrokerId(3)));
        assert_eq!(
            longest_log(&replicas, tied, |id| id.0 != 3),
            Some(BrokerId(1))
        );
        let empty = |_| end(-1, 0);
        assert_eq!(longest_log(&replicas, empty, |_| true), Some(BrokerId(3)));
    }
}
