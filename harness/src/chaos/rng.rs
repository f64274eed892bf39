//! A small deterministic random number generator (SplitMix64).
//!
//! Schedules must replay from `(run seed, episode index)` for as long as the
//! project lives, whatever version of `rand` the lockfile holds, so the
//! generator is written out here: 64 bits of state, one published mixing
//! function, no dependency.

/// SplitMix64 (Steele, Lea, Flood 2014; the seeder of xoshiro).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 output function: a bijection on `u64`.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of episode `index` of the run seeded `run_seed`. Depends on
/// nothing else, so `--seed S --episode K` replays episode K of any run with
/// seed S, whatever `--episodes`, `--shard` or `--duration` that run had.
pub fn episode_seed(run_seed: u64, index: u64) -> u64 {
    mix(run_seed ^ mix(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)))
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in `0..n` (`n > 0`; 0 when `n == 0`). Lemire's multiply-shift:
    /// the bias is below 2^-32 for the small ranges used here.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A copy of one element of a non-empty slice.
    pub fn pick_copy<T: Copy>(&mut self, items: &[T]) -> T {
        *self.pick(items)
    }

    /// An index drawn with the given weights (at least one non-zero).
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

/// Parse a seed: decimal, or hexadecimal with `0x`.
pub fn parse_seed(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.replace('_', "").parse::<u64>(),
    };
    parsed.map_err(|_| format!("{text:?} is not a seed (a decimal number, or hex with 0x)"))
}

/// A seed drawn from the clock and the pid, for runs without `--seed`.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    mix(nanos ^ (u64::from(std::process::id()) << 32) ^ handoff::util::monotonic_ns())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_splitmix64() {
        // Reference values of SplitMix64 seeded with 1234567.
        let mut r = Rng::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn episode_seeds_depend_on_the_run_seed_and_the_index_only() {
        assert_eq!(episode_seed(7, 3), episode_seed(7, 3));
        assert_ne!(episode_seed(7, 3), episode_seed(7, 4));
        assert_ne!(episode_seed(7, 3), episode_seed(8, 3));
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            let x = r.range(3, 7);
            assert!((3..=7).contains(&x));
            assert!(r.below(5) < 5);
        }
        assert_eq!(r.below(0), 0);
        let mut seen = [0u32; 3];
        for _ in 0..3_000 {
            seen[r.weighted(&[1, 0, 2])] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[2] > seen[0]);
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Ok(42));
        assert_eq!(parse_seed("0x2a"), Ok(42));
        assert_eq!(parse_seed("0xDEAD_BEEF"), Ok(0xdead_beef));
        assert!(parse_seed("forty-two").is_err());
    }
}
