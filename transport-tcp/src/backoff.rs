//! Exponential backoff with jitter for reconnecting.
//!
//! Each delay is drawn from `[base/2, base]` ("equal jitter"), and `base`
//! doubles after each draw up to `max`. The jitter keeps a cluster's nodes
//! from reconnecting in lockstep after their referee restarts; the lower
//! half-bound keeps the backoff from collapsing to zero. The random source
//! is a small xorshift generator seeded once from the OS: this is not
//! cryptography, just spreading.

use std::time::Duration;

/// Delays between reconnection attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    base: Duration,
    rng: u64,
}

impl Backoff {
    /// Start at `initial`, never exceed `max` (`max` is raised to `initial`
    /// if smaller).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let mut seed = [0u8; 8];
        // Without OS randomness the jitter is merely predictable.
        let _ = getrandom::fill(&mut seed);
        let rng = u64::from_le_bytes(seed) | 1;
        Backoff {
            initial,
            max: max.max(initial),
            base: initial,
            rng,
        }
    }

    /// The next delay to wait, in `[base/2, base]`; then `base` doubles
    /// (capped at `max`).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        // From a zero start, grow from 1 ms rather than staying at zero.
        self.base = base
            .saturating_mul(2)
            .max(Duration::from_millis(1))
            .min(self.max);
        let half = base / 2;
        let spread = (base - half).as_nanos() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            self.next_u64() % (spread + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to `initial` (after a connection succeeded).
    pub fn reset(&mut self) {
        self.base = self.initial;
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut b = Backoff::new(initial, max);
        let first = b.next_delay();
        assert!(first >= initial / 2 && first <= initial, "{first:?}");
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        for d in &delays {
            assert!(*d <= max, "{d:?} exceeds the cap");
        }
        // After 5 doublings base is at the cap: every delay is in [max/2, max].
        for d in &delays[5..] {
            assert!(*d >= max / 2, "{d:?} below half the cap");
        }
        b.reset();
        assert!(b.next_delay() <= initial);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::HashSet<Duration> = (0..50).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 40, "delays barely vary: {delays:?}");
    }

    #[test]
    fn zero_initial_still_grows() {
        let mut b = Backoff::new(Duration::ZERO, Duration::from_millis(10));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], Duration::ZERO);
        // bases: 0, 1, 2, 4, 8, 10, 10 ms
        assert!(delays[3] >= Duration::from_millis(2), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(10)),
            "{delays:?}"
        );
    }
}
