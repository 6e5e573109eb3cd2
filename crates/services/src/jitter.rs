//! `Jitter`: the randomness of retry pauses, injected so that a component never uses the clock
//! as a random source and tests can fix it. `SplitMix` is a small seeded generator (not for
//! secrets: it spreads retries of replicas racing for the same keys).

use std::sync::Mutex;
use std::time::Duration;

/// A source of spread for retry pauses.
pub trait Jitter: Send + Sync + std::fmt::Debug {
    /// A number in `0..bound` (0 when `bound` is 0).
    fn below(&self, bound: u64) -> u64;
}

/// SplitMix64 behind a lock: seeded once (from the OS at start, or fixed in tests).
#[derive(Debug)]
pub struct SplitMix(Mutex<u64>);

impl SplitMix {
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(Mutex::new(seed))
    }

    /// Seeded from the operating system's random source (`ring`'s, which the signing keys use).
    pub fn from_os() -> SplitMix {
        let mut seed = [0u8; 8];
        // The OS source failing is not worth failing a start for: the seed only spreads retries.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        SplitMix::new(u64::from_le_bytes(seed))
    }
}

impl Jitter for SplitMix {
    fn below(&self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }
}

/// A short random pause before retrying after a conflict, so that two replicas racing for the
/// same keys stop colliding: up to about 1 ms times the attempt number (at most 20 ms).
pub fn retry_pause(jitter: &dyn Jitter, attempt: usize) -> Duration {
    let cap = 1_000 * attempt.clamp(1, 20) as u64;
    Duration::from_micros(jitter.below(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(seed: u64, attempt: usize, draws: usize) {
        let a = SplitMix::new(seed);
        let b = SplitMix::new(seed);
        let cap = Duration::from_micros(1_000 * attempt.clamp(1, 20) as u64);
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..draws {
            let (x, y) = (retry_pause(&a, attempt), retry_pause(&b, attempt));
            assert_eq!(x, y, "the same seed gives the same pauses");
            assert!(x < cap, "attempt {attempt}: {x:?} is below {cap:?}");
            distinct.insert(x);
        }
        assert!(distinct.len() > draws / 2, "pauses spread: {} distinct of {draws}", distinct.len());
    }

    #[test]
    fn pauses_are_bounded_spread_and_reproducible() {
        for (seed, attempt, draws) in [(0, 1, 50), (7, 3, 100), (u64::MAX, 40, 100)] {
            check(seed, attempt, draws);
        }
        assert_eq!(SplitMix::new(1).below(0), 0);
    }
}
