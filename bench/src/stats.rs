//! Latency summaries: percentiles of the samples a scenario measured.
//!
//! Every scenario hands back its raw samples in the order they were taken
//! (nanoseconds, one per operation). The first ones are warm-up (cold
//! caches, first connections, lazily built state) and are dropped; the rest
//! go into an `hdrhistogram` with three significant digits, from which the
//! summary takes p50, p90, p99 and max. Percentiles rather than a mean,
//! because a fault path's cost is in its tail.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Error;

/// Highest value a histogram records (one hour, in ns); longer samples are
/// clamped to it (no operation measured here comes close).
const MAX_NS: u64 = 3_600_000_000_000;

/// The samples of several agents in one list, round-robin (the first of
/// each, then the second of each, ...), so that warm-up drops the first
/// samples of every agent, not all of the first agent's.
pub(crate) fn interleave(per: &[Vec<u64>]) -> Vec<u64> {
    let mut out = Vec::with_capacity(per.iter().map(Vec::len).sum());
    for j in 0.. {
        let before = out.len();
        out.extend(per.iter().filter_map(|s| s.get(j)));
        if out.len() == before {
            break;
        }
    }
    out
}

/// Summary of one scenario's latencies, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Samples counted (after warm-up).
    pub samples: u64,
    /// Samples taken first and dropped.
    pub warmup: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
}

/// How many warm-up samples to take before `samples` counted ones: a tenth,
/// at least 5, at most 500.
pub fn warmup_for(samples: usize) -> usize {
    (samples / 10).clamp(5, 500)
}

/// Summarise `raw` (in the order taken), dropping its first `warmup`
/// samples.
pub fn summarize(raw: &[u64], warmup: usize) -> Result<Summary, Error> {
    let counted = raw.get(warmup..).unwrap_or(&[]);
    if counted.is_empty() {
        return Err(Error::NoSamples {
            asked: raw.len(),
            warmup,
        });
    }
    // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 *
    // low, sigfig <= 5); an error here would be a bug in this line.
    let mut h = Histogram::<u64>::new_with_bounds(1, MAX_NS, 3).map_err(Error::Histogram)?;
    for &v in counted {
        h.saturating_record(v.clamp(1, MAX_NS));
    }
    Ok(Summary {
        samples: counted.len() as u64,
        warmup: warmup.min(raw.len()) as u64,
        min_ns: h.min(),
        p50_ns: h.value_at_quantile(0.50),
        p90_ns: h.value_at_quantile(0.90),
        p99_ns: h.value_at_quantile(0.99),
        max_ns: h.max(),
        mean_ns: h.mean(),
    })
}

/// A duration in ns as a short human string: `850 ns`, `41.2 us`, `3.10 ms`.
pub fn human(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 100_000.0 {
        format!("{:.1} us", ns / 1e3)
    } else if ns < 1_000_000.0 {
        format!("{:.0} us", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_dropped_and_percentiles_follow_the_data() {
        // 10 huge warm-up samples, then 1..=1000 ns.
        let mut raw = vec![1_000_000_000u64; 10];
        raw.extend(1..=1000u64);
        let s = summarize(&raw, 10).expect("summary");
        assert_eq!(s.samples, 1000);
        assert_eq!(s.warmup, 10);
        assert_eq!(s.min_ns, 1);
        assert_eq!(s.max_ns, 1000);
        // Three significant digits: exact at this scale.
        assert_eq!(s.p50_ns, 500);
        assert_eq!(s.p90_ns, 900);
        assert_eq!(s.p99_ns, 990);
        assert!((s.mean_ns - 500.5).abs() < 1.0, "{}", s.mean_ns);
    }

    #[test]
    fn nothing_left_after_warmup_is_an_error() {
        assert!(matches!(
            summarize(&[5, 6], 2),
            Err(Error::NoSamples {
                asked: 2,
                warmup: 2
            })
        ));
        assert!(summarize(&[], 0).is_err());
    }

    #[test]
    fn zero_and_huge_samples_are_clamped_not_lost() {
        let s = summarize(&[0, u64::MAX], 0).expect("summary");
        assert_eq!(s.samples, 2);
        assert_eq!(s.min_ns, 1);
        assert!(s.max_ns >= MAX_NS - MAX_NS / 1000);
    }

    #[test]
    fn human_units() {
        assert_eq!(human(850.0), "850 ns");
        assert_eq!(human(41_230.0), "41.2 us");
        assert_eq!(human(250_000.0), "250 us");
        assert_eq!(human(3_100_000.0), "3.10 ms");
        assert_eq!(human(2e9), "2.00 s");
    }

    #[test]
    fn warmup_bounds() {
        assert_eq!(warmup_for(0), 5);
        assert_eq!(warmup_for(1000), 100);
        assert_eq!(warmup_for(1_000_000), 500);
    }
}
