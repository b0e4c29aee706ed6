//! A small deterministic generator (xorshift64*): the same seed gives the same fault schedule
//! and the same workload choices, with no dependency.

/// A seeded pseudo-random sequence.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; each part of a campaign derives its own with [`Rng::fork`], so
    /// that one part's draws never shift another's.
    pub fn new(seed: u64) -> Rng {
        // Zero is the one state xorshift never leaves.
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// An independent generator for the part named `salt`.
    pub fn fork(&self, salt: u64) -> Rng {
        let mut child = Rng::new(self.0 ^ salt.wrapping_mul(0xbf58_476d_1ce4_e5b9));
        child.next_u64();
        child
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 0 ..= sides - 1.
    pub fn below(&mut self, sides: u64) -> u64 {
        self.next_u64() % sides.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration between `low` and `high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> std::time::Duration {
        std::time::Duration::from_millis(low + self.below(high.saturating_sub(low) + 1))
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_forks_differ() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut fork = Rng::new(7).fork(1);
        assert_ne!(first[0], fork.next_u64());
    }
}
