//! Deterministic class-balanced subsets, driven by a self-contained splitmix64.

/// splitmix64 (Steele, Lea & Flood 2014): tiny, fast, and stable across versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`), by rejection to avoid modulo bias.
    fn below(&mut self, bound: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let r = self.next();
            if r < zone {
                return r % bound;
            }
        }
    }
}

/// Deterministic class-balanced subset: returns sorted indices, `n` in total,
/// as equal per class as possible (the remainder goes to the first classes).
/// A class with too few samples contributes all it has and the shortfall is
/// spread over the other classes the same way. `n >= labels.len()` returns all
/// indices; labels `>= num_classes` are never picked otherwise. Deterministic
/// in `(labels, num_classes, n, seed)`.
pub fn balanced_subset(labels: &[u32], num_classes: usize, n: usize, seed: u64) -> Vec<usize> {
    if n >= labels.len() {
        return (0..labels.len()).collect();
    }
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(members) = by_class.get_mut(l as usize) {
            members.push(i);
        }
    }
    // Water-filling: share what is left equally among classes that still have spare samples.
    let mut quota = vec![0usize; num_classes];
    let mut left = n;
    while left > 0 {
        let open: Vec<usize> = (0..num_classes)
            .filter(|&c| quota[c] < by_class[c].len())
            .collect();
        if open.is_empty() {
            break;
        }
        let (share, extra) = (left / open.len(), left % open.len());
        for (rank, &c) in open.iter().enumerate() {
            let give = (share + usize::from(rank < extra)).min(by_class[c].len() - quota[c]);
            quota[c] += give;
            left -= give;
        }
    }
    let mut out = Vec::with_capacity(n);
    for (c, members) in by_class.iter_mut().enumerate() {
        let mut rng = SplitMix64(seed ^ (c as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
        // Partial Fisher-Yates: the first quota[c] slots become a uniform sample.
        for i in 0..quota[c] {
            let j = i + rng.below((members.len() - i) as u64) as usize;
            members.swap(i, j);
        }
        out.extend_from_slice(&members[..quota[c]]);
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(labels: &[u32], idx: &[usize], k: usize) -> Vec<usize> {
        let mut c = vec![0; k];
        idx.iter().for_each(|&i| c[labels[i] as usize] += 1);
        c
    }

    #[test]
    fn balanced_counts_sorted_and_unique() {
        let labels: Vec<u32> = (0..1000).map(|i| (i * 7 % 10) as u32).collect();
        let idx = balanced_subset(&labels, 10, 103, 42);
        assert_eq!(idx.len(), 103);
        assert!(idx.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            counts(&labels, &idx, 10),
            vec![11, 11, 11, 10, 10, 10, 10, 10, 10, 10]
        );
    }

    #[test]
    fn deterministic_in_seed() {
        let labels: Vec<u32> = (0..500).map(|i| (i % 5) as u32).collect();
        let a = balanced_subset(&labels, 5, 50, 7);
        assert_eq!(a, balanced_subset(&labels, 5, 50, 7));
        assert_ne!(a, balanced_subset(&labels, 5, 50, 8));
    }

    #[test]
    fn small_class_shortfall_is_redistributed() {
        // Class 0 has only 2 samples; classes 1 and 2 have 50 each.
        let labels: Vec<u32> = [0, 0]
            .into_iter()
            .chain(std::iter::repeat_n(1, 50))
            .chain(std::iter::repeat_n(2, 50))
            .collect();
        let idx = balanced_subset(&labels, 3, 31, 1);
        assert_eq!(counts(&labels, &idx, 3), vec![2, 15, 14]);
    }

    #[test]
    fn edge_cases() {
        let labels = [0u32, 1, 1, 0];
        assert_eq!(balanced_subset(&labels, 2, 4, 0), vec![0, 1, 2, 3]);
        assert_eq!(balanced_subset(&labels, 2, 99, 0), vec![0, 1, 2, 3]);
        assert!(balanced_subset(&labels, 2, 0, 0).is_empty());
        assert!(balanced_subset(&[], 3, 5, 0).is_empty());
        // Out-of-range labels are skipped when subsetting.
        assert_eq!(balanced_subset(&[5, 0, 5, 1], 2, 2, 3), vec![1, 3]);
    }
}
