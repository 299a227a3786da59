//! Where a new topic's replicas go and who leads when a leader leaves: pure functions of the
//! brokers and the partition, so every node computes the same answer.

use std::collections::BTreeMap;

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

/// [`assign_replicas`] over racks (Kafka's rack-aware assignment, with the topic's
/// creation index in place of its random start): when every broker in `racks` has a rack
/// and there are several, each partition's replicas go to as many distinct racks as there
/// are (then to distinct brokers), and leaders go round-robin over the brokers taken one
/// rack at a time; otherwise the plain placement. `racks` holds the active brokers, by id.
pub(super) fn assign_replicas_by_rack(
    racks: &BTreeMap<BrokerId, Option<String>>,
    index: u64,
    n_partitions: u32,
    replication_factor: u16,
) -> Vec<Vec<BrokerId>> {
    let active: Vec<BrokerId> = racks.keys().copied().collect();
    let by_rack: Option<BTreeMap<&str, Vec<BrokerId>>> =
        racks
            .iter()
            .try_fold(BTreeMap::new(), |mut by_rack, (id, rack)| {
                by_rack
                    .entry(rack.as_deref()?)
                    .or_insert_with(Vec::new)
                    .push(*id);
                Some(by_rack)
            });
    let Some(by_rack) = by_rack.filter(|r| r.len() > 1) else {
        return assign_replicas(&active, index, n_partitions, replication_factor);
    };
    // One broker of each rack in turn: rack a's first, rack b's first, ..., rack a's second.
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let arranged: Vec<BrokerId> = (0..deepest)
        .flat_map(|i| by_rack.values().filter_map(move |ids| ids.get(i).copied()))
        .collect();
    let rack_of = |id: BrokerId| racks[&id].as_deref();
    let (n, n_racks) = (arranged.len(), by_rack.len());
    let start = (index % n as u64) as usize;
    let mut shift = start;
    (0..n_partitions as usize)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            let first = (p + start) % n;
            let mut replicas = vec![arranged[first]];
            let mut used_racks = vec![rack_of(arranged[first])];
            let mut k = 0;
            while replicas.len() < usize::from(replication_factor) {
                // Kafka's replicaIndex: the brokers after the first, rotated by the shift.
                let candidate = arranged[(first + 1 + (shift * n_racks + k) % (n - 1)) % n];
                k += 1;
                let rack = rack_of(candidate);
                // A rack without a replica of the partition, until every rack has one.
                let new_rack = !used_racks.contains(&rack) || used_racks.len() >= n_racks;
                if new_rack && !replicas.contains(&candidate) {
                    replicas.push(candidate);
                    used_racks.push(rack);
                }
            }
            replicas
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

    fn racks(of: &[(i32, Option<&str>)]) -> BTreeMap<BrokerId, Option<String>> {
        of.iter()
            .map(|(id, rack)| (BrokerId(*id), rack.map(str::to_owned)))
            .collect()
    }

    fn distinct_racks(replicas: &[BrokerId], racks: &BTreeMap<BrokerId, Option<String>>) -> usize {
        let mut seen: Vec<&Option<String>> = replicas.iter().map(|id| &racks[id]).collect();
        seen.sort();
        seen.dedup();
        seen.len()
    }

    #[test]
    fn replicas_span_every_rack_and_leaders_go_round_robin() {
        let racks = racks(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let assignment = assign_replicas_by_rack(&racks, 7, 6, 3);
        for replicas in &assignment {
            assert_eq!(distinct_racks(replicas, &racks), 3, "{assignment:?}");
        }
        let mut leaders: Vec<BrokerId> = assignment.iter().map(|r| r[0]).collect();
        leaders.sort();
        leaders.dedup();
        assert_eq!(leaders.len(), 6, "{assignment:?}");
        // Two replicas over three racks: two racks each.
        for replicas in assign_replicas_by_rack(&racks, 3, 12, 2) {
            assert_eq!(distinct_racks(&replicas, &racks), 2);
        }
    }

    #[test]
    fn a_lone_rack_gets_a_replica_of_every_partition() {
        let racks = racks(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
        ]);
        for replicas in assign_replicas_by_rack(&racks, 5, 8, 2) {
            assert!(replicas.contains(&BrokerId(4)), "{replicas:?}");
        }
    }

    #[test]
    fn without_a_rack_on_every_broker_or_with_one_rack_placement_is_plain() {
        let ids = [BrokerId(1), BrokerId(2), BrokerId(3)];
        for partial in [
            racks(&[(1, Some("a")), (2, None), (3, Some("b"))]),
            racks(&[(1, Some("a")), (2, Some("a")), (3, Some("a"))]),
            racks(&[(1, None), (2, None), (3, None)]),
        ] {
            assert_eq!(
                assign_replicas_by_rack(&partial, 4, 5, 2),
                assign_replicas(&ids, 4, 5, 2)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn rack_placement_spreads_each_partition_over_as_many_racks_as_it_can(
            rack_of in proptest::collection::vec(0u8..4, 2..9),
            index in 0u64..1000,
            n_partitions in 1u32..20,
            rf_pick in 0usize..100,
        ) {
            let racks: BTreeMap<BrokerId, Option<String>> = rack_of
                .iter()
                .enumerate()
                .map(|(i, r)| (BrokerId(i as i32 + 1), Some(format!("r{r}"))))
                .collect();
            let n_racks = {
                let mut r = rack_of.clone();
                r.sort();
                r.dedup();
                r.len()
            };
            let rf = 1 + rf_pick % racks.len();
            let assignment = assign_replicas_by_rack(&racks, index, n_partitions, rf as u16);
            proptest::prop_assert_eq!(assignment.len(), n_partitions as usize);
            for replicas in &assignment {
                let mut distinct = replicas.clone();
                distinct.sort();
                distinct.dedup();
                proptest::prop_assert_eq!(distinct.len(), rf, "{:?}", replicas);
                proptest::prop_assert_eq!(distinct_racks(replicas, &racks), rf.min(n_racks));
            }
        }
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
