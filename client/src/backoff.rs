//! Retry backoff: exponential from a base to a cap, with jitter. Why jitter: after a leader
//! dies, every client of its partitions fails at the same moment; without jitter they would
//! all retry (and ask for metadata) in lockstep, at every step of the backoff.
//!
//! [`delay`] is pure (the random part is passed in), so the schedule is tested exactly;
//! [`Jitter`] is the small generator that feeds it in production.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How far jitter moves a delay either way, as a fraction of it (Kafka uses the same 20%).
const JITTER_FRACTION: f64 = 0.2;

/// A backoff schedule: `base` after the first failure, doubling after each further one,
/// never more than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `failures`-th consecutive failure (1 for the first), jittered.
    pub fn delay(&self, failures: u32, jitter: &mut Jitter) -> Duration {
        delay(self.base, self.max, failures, jitter.next_unit())
    }
}

/// The wait after the `failures`-th consecutive failure: `base * 2^(failures - 1)`, capped
/// at `max`, then scaled by a factor in `[0.8, 1.2)` chosen by `unit` (in `[0, 1)`) and
/// capped at `max` again, so the cap holds. A `max` below `base` is raised to `base`.
pub(crate) fn delay(base: Duration, max: Duration, failures: u32, unit: f64) -> Duration {
    let max = max.max(base);
    let doublings = failures.saturating_sub(1).min(31);
    let exponential = base.saturating_mul(1u32 << doublings).min(max);
    let factor = 1.0 - JITTER_FRACTION + 2.0 * JITTER_FRACTION * unit.clamp(0.0, 1.0);
    exponential.mul_f64(factor).min(max)
}

/// A xorshift64* generator for jitter, seeded from the process's random hash keys. Not
/// for anything that needs real randomness; it only has to differ between clients.
#[derive(Debug)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    /// A generator with a fresh random seed.
    pub fn new() -> Jitter {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Jitter::with_seed(hasher.finish())
    }

    /// A generator with a fixed seed (zero is replaced: xorshift would stay at zero).
    pub fn with_seed(seed: u64) -> Jitter {
        Jitter {
            state: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
        }
    }

    /// A number in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // The top 53 bits, as a fraction of 2^53: exactly representable, below 1.
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let check = |failures: u32, unit: f64, expected: Duration| {
            assert_eq!(
                delay(ms(100), ms(1000), failures, unit),
                expected,
                "{failures} {unit}"
            );
        };
        // unit 0.5 is the middle of the jitter range: no jitter.
        check(1, 0.5, ms(100));
        check(2, 0.5, ms(200));
        check(3, 0.5, ms(400));
        check(4, 0.5, ms(800));
        check(5, 0.5, ms(1000));
        check(1000, 0.5, ms(1000));
        // Jitter spreads each step by 20% either way...
        check(1, 0.0, ms(80));
        check(3, 0.0, ms(320));
        check(3, 0.75, ms(440));
        // ...but never past the cap.
        check(5, 0.99, ms(1000));
        check(5, 0.0, ms(800));
        // Zero failures (never asked for) is treated as the first.
        check(0, 0.5, ms(100));
    }

    #[test]
    fn a_cap_below_the_base_is_the_base() {
        assert_eq!(delay(ms(100), ms(10), 3, 0.5), ms(100));
    }

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let seed = 42;
        let mut jitter = Jitter::with_seed(seed);
        let units: Vec<f64> = (0..1000).map(|_| jitter.next_unit()).collect();
        assert!(units.iter().all(|u| (0.0..1.0).contains(u)), "seed {seed}");
        let low = units.iter().filter(|u| **u < 0.5).count();
        assert!(
            (400..600).contains(&low),
            "seed {seed}: {low} of 1000 below 0.5"
        );
        let backoff = Backoff {
            base: ms(100),
            max: ms(1000),
        };
        for failures in 1..10 {
            let d = backoff.delay(failures, &mut jitter);
            assert!(d >= ms(80) && d <= ms(1000), "seed {seed}: {d:?}");
        }
    }
}
