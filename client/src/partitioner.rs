//! Where a record goes: Kafka's partitioner (DESIGN §1), so keys land where Kafka clients
//! would put them. A key picks `(murmur2(key) & 0x7fffffff) % n_partitions`; records
//! without a key stick to one partition until its batch closes, then move to the next
//! (KIP-480's sticky partitioner, rotating instead of random so it needs no RNG).

use sluice_protocol::PartitionId;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed `0x9747b28c`,
/// returning the same signed value as the Java code.
///
/// ```
/// assert_eq!(sluice_client::murmur2(b"21"), -973932308);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    // Java's switch falls through from case 3 to case 1.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a record with `key` in a topic of `n_partitions` partitions:
/// `(murmur2(key) & 0x7fffffff) % n_partitions`, as Kafka's default partitioner.
///
/// ```
/// use sluice_client::{partition_for_key, PartitionId};
/// assert_eq!(partition_for_key(b"foobar", 50), PartitionId(16));
/// ```
///
/// # Panics
/// If `n_partitions` is not positive (a topic has at least one partition).
pub fn partition_for_key(key: &[u8], n_partitions: i32) -> PartitionId {
    assert!(n_partitions > 0, "a topic has at least one partition");
    PartitionId((murmur2(key) & 0x7fff_ffff) % n_partitions)
}

/// The sticky choice for a record without a key: keep `current` while its batch has room
/// (`current_has_room`), otherwise move on to the partition after it. `start` picks the
/// first partition when there is no current one.
pub(crate) fn sticky_partition(
    current: Option<PartitionId>,
    current_has_room: impl FnOnce(PartitionId) -> bool,
    start: u32,
    n_partitions: i32,
) -> PartitionId {
    assert!(n_partitions > 0, "a topic has at least one partition");
    match current {
        Some(p) if p.0 < n_partitions && current_has_room(p) => p,
        Some(p) if p.0 < n_partitions => PartitionId((p.0 + 1) % n_partitions),
        _ => PartitionId((start % n_partitions as u32) as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, hash) in cases {
            assert_eq!(murmur2(key), hash, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn keys_pick_partitions_like_kafka() {
        // -790332482 & 0x7fffffff = 1357151166; 1357151166 % 50 = 16.
        assert_eq!(partition_for_key(b"foobar", 50), PartitionId(16));
        // 479470107 % 3 = 0; -973932308 & 0x7fffffff = 1173551340, % 3 = 0;
        // -58897971 & 0x7fffffff = 2088585677, % 7 = 3.
        assert_eq!(partition_for_key(b"abc", 3), PartitionId(0));
        assert_eq!(partition_for_key(b"21", 3), PartitionId(0));
        assert_eq!(
            partition_for_key(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 7),
            PartitionId(3)
        );
        for n in 1..20 {
            let p = partition_for_key(b"any key", n);
            assert!((0..n).contains(&p.0));
        }
        // The same key always lands on the same partition.
        assert_eq!(partition_for_key(b"k", 12), partition_for_key(b"k", 12));
    }

    #[test]
    fn sticky_partition_stays_while_the_batch_has_room_then_rotates() {
        let p = |n| PartitionId(n);
        assert_eq!(sticky_partition(None, |_| true, 7, 3), p(1));
        assert_eq!(sticky_partition(Some(p(1)), |_| true, 0, 3), p(1));
        assert_eq!(sticky_partition(Some(p(1)), |_| false, 0, 3), p(2));
        assert_eq!(sticky_partition(Some(p(2)), |_| false, 0, 3), p(0));
        // The topic shrank (or the metadata changed): start again.
        assert_eq!(sticky_partition(Some(p(5)), |_| true, 4, 3), p(1));
        assert_eq!(sticky_partition(Some(p(0)), |_| false, 0, 1), p(0));
    }
}
