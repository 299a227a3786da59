//! A fast hasher for the maps a producer looks up for every record it sends (its partition
//! queues, sticky partitions, the topic metadata cache).
//!
//! The standard library's SipHash resists keys chosen to collide, which these keys cannot
//! be: they are the application's own topic names and the partitions the producer chose.
//! Four SipHashes per record were about a tenth of the application's thread at full
//! speed (BENCHMARKS.md). This is FxHash, the multiply-and-rotate hash of rustc and
//! Firefox: a few cycles per word.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` hashed with [`FxHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// FxHash: per word, rotate, xor the word in, multiply by a constant.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FxHasher {
    hash: u64,
}

/// FxHash's multiplier (rustc's 64-bit constant).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_i32(&mut self, i: i32) {
        self.add(i as u32 as u64);
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash(value: impl Hash) -> u64 {
        BuildHasherDefault::<FxHasher>::default().hash_one(value)
    }

    #[test]
    fn equal_keys_hash_alike_and_near_keys_apart() {
        assert_eq!(hash(("orders", 3)), hash(("orders", 3)));
        let hashes: std::collections::HashSet<u64> = (0..1000)
            .flat_map(|p| [hash(("orders", p)), hash(("orders-eu", p))])
            .collect();
        assert_eq!(
            hashes.len(),
            2000,
            "no collision among 2,000 topic partitions"
        );
        // A name's last bytes count, whatever its length.
        assert_ne!(hash("topic-a"), hash("topic-b"));
        assert_ne!(hash("a-longer-topic-name-1"), hash("a-longer-topic-name-2"));
    }

    #[test]
    fn a_map_with_it_finds_what_was_put() {
        let mut map: FastMap<String, usize> = FastMap::default();
        for i in 0..500 {
            map.insert(format!("t{i}"), i);
        }
        assert!((0..500).all(|i| map.get(&format!("t{i}")) == Some(&i)));
    }
}
