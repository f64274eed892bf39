//! Summaries of measured samples: exact percentiles over raw samples (for
//! the handoffs and the floors, a few thousand values at most) and a
//! fixed-memory log-linear histogram (for client requests, which are too
//! many to keep and whose recorder must not grow the bench process's RSS).
//! Pure: no I/O, no clocks.

use serde::Serialize;

/// Percentiles of one set of durations, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median (nearest rank).
    pub p50_us: f64,
    /// 99th percentile (nearest rank).
    pub p99_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Smallest sample.
    pub min_us: f64,
    /// Arithmetic mean (additive, unlike percentiles: means of consecutive
    /// segments sum to the mean of the whole).
    pub mean_us: f64,
}

impl Summary {
    /// Summarise durations given in nanoseconds. An empty set gives zeros
    /// with `count == 0`.
    pub fn of_ns(samples_ns: &[u64]) -> Self {
        if samples_ns.is_empty() {
            return Self::default();
        }
        let mut sorted = samples_ns.to_vec();
        sorted.sort_unstable();
        let us = |ns: u64| ns as f64 / 1_000.0;
        Self {
            count: sorted.len(),
            p50_us: us(nearest_rank(&sorted, 50.0)),
            p99_us: us(nearest_rank(&sorted, 99.0)),
            max_us: us(sorted[sorted.len() - 1]),
            min_us: us(sorted[0]),
            mean_us: sorted.iter().map(|v| *v as f64).sum::<f64>() / sorted.len() as f64 / 1_000.0,
        }
    }
}

/// The nearest-rank percentile `p` (0 < p <= 100) of a sorted, non-empty
/// slice: the smallest value such that at least `p` % of the samples are at
/// or below it.
pub fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    debug_assert!(!sorted.is_empty());
    debug_assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sub-buckets per power of two: a bucket is at most 1/32 (about 3 %) wide.
const SUB_BUCKETS: usize = 32;
/// Smallest power of two tracked: 2^10 ns (about 1 µs); anything below
/// lands in the first bucket.
const MIN_EXPONENT: u32 = 10;
/// Largest power of two tracked: 2^36 ns (about 69 s); anything above lands
/// in the last bucket.
const MAX_EXPONENT: u32 = 36;
const BUCKETS: usize = (MAX_EXPONENT - MIN_EXPONENT + 1) as usize * SUB_BUCKETS;

/// A log-linear histogram of durations in nanoseconds, fixed size (about
/// 7 KiB), with exact count, minimum and maximum. Percentiles are reported
/// as the upper edge of their bucket: at most 1/32 above the true value.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum_ns: u64,
    min_ns: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram({:?})", self.summary())
    }
}

fn bucket_of(ns: u64) -> usize {
    let min = 1u64 << MIN_EXPONENT;
    if ns < min {
        return 0;
    }
    let exponent = 63 - ns.leading_zeros();
    if exponent > MAX_EXPONENT {
        return BUCKETS - 1;
    }
    let base = 1u64 << exponent;
    let sub = ((ns - base) * SUB_BUCKETS as u64 / base) as usize;
    (exponent - MIN_EXPONENT) as usize * SUB_BUCKETS + sub
}

fn bucket_upper_ns(bucket: usize) -> u64 {
    let exponent = MIN_EXPONENT + (bucket / SUB_BUCKETS) as u32;
    let sub = (bucket % SUB_BUCKETS) as u64;
    let base = 1u64 << exponent;
    base + (sub + 1) * base / SUB_BUCKETS as u64
}

impl Histogram {
    /// Record one duration.
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket_of(ns)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Percentile `p` (nearest rank over buckets), clamped to the exact
    /// minimum and maximum. 0 when empty.
    pub fn percentile_ns(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = (((p / 100.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                if bucket == BUCKETS - 1 {
                    // The overflow bucket has no upper edge.
                    return self.max_ns;
                }
                return bucket_upper_ns(bucket).clamp(self.min_ns, self.max_ns);
            }
        }
        self.max_ns
    }

    /// p50, p99, max and min, in microseconds.
    pub fn summary(&self) -> Summary {
        if self.count == 0 {
            return Summary::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Summary {
            count: self.count as usize,
            p50_us: us(self.percentile_ns(50.0)),
            p99_us: us(self.percentile_ns(99.0)),
            max_us: us(self.max_ns),
            min_us: us(self.min_ns),
            mean_us: us(self.sum_ns / self.count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 50.0), 50);
        assert_eq!(nearest_rank(&v, 99.0), 99);
        assert_eq!(nearest_rank(&v, 100.0), 100);
        assert_eq!(nearest_rank(&[7], 99.0), 7);
    }

    #[test]
    fn summary_of_nothing_is_zero() {
        assert_eq!(Summary::of_ns(&[]).count, 0);
        let s = Summary::of_ns(&[3_000, 1_000, 2_000]);
        assert_eq!((s.count, s.p50_us, s.max_us, s.min_us), (3, 2.0, 3.0, 1.0));
    }

    #[test]
    fn histogram_percentiles_are_within_one_bucket() {
        let mut h = Histogram::default();
        for ns in (1..=10_000u64).map(|i| i * 1_000) {
            h.record(ns);
        }
        for p in [50.0, 99.0] {
            let exact = (p / 100.0 * 10_000.0) as u64 * 1_000;
            let got = h.percentile_ns(p);
            assert!(
                got >= exact && got <= exact + exact / 16,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.summary().max_us, 10_000.0);
        assert_eq!(h.summary().min_us, 1.0);
    }

    #[test]
    fn histogram_extremes_land_in_the_end_buckets() {
        let mut h = Histogram::default();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(h.percentile_ns(100.0), u64::MAX);
        // Below 1 µs everything shares the first bucket.
        assert!(h.percentile_ns(1.0) <= 1_056);
        let mut other = Histogram::default();
        other.record(5_000);
        h.merge(&other);
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn bucket_edges_are_monotonic() {
        let mut last = 0;
        for b in 0..BUCKETS {
            let up = bucket_upper_ns(b);
            assert!(up > last);
            last = up;
        }
        for ns in [1_024u64, 1_500, 65_536, 1_000_000, 3_000_000_000] {
            assert!(bucket_upper_ns(bucket_of(ns)) > ns);
        }
    }
}
