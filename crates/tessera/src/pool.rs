//! Token pooling: a document's tokens clustered into groups, each stored as
//! one token — fewer bytes and faster MaxSim for nearly the same scores, as
//! PyLate's and sentence-transformers' hierarchical pooling do. The first
//! token is kept as given (a ColBERT model puts `[CLS]` there; PyLate and
//! sentence-transformers protect it too, and on the real data it is worth
//! +0.0014 nDCG@10 at f = 2), the other n − 1 are clustered into
//! ⌈(n − 1) / f⌉ groups: 1 + ⌈(n − 1) / f⌉ tokens in all.
//!
//! **Linkage: Ward, on the token vectors themselves** (squared Euclidean
//! distance; for unit tokens `‖a − b‖² = 2 − 2·cos`, so the same order as
//! cosine distance). Ward merges the two groups whose union raises the sum of
//! squared distances to the group means the least — exactly the error made
//! by replacing each group with its mean, which is what pooling stores. (PyLate
//! and sentence-transformers call scipy's Ward on `1 − cos` distances, which
//! scipy updates as if they were Euclidean; ours is the exact criterion.)
//! The clustering is the nearest-neighbour-chain algorithm (Ward is
//! reducible, so it finds the same hierarchy as greedy merging) over a
//! matrix of Ward distances updated by the Lance–Williams formula:
//! O(n²·dim) time, O(n²) memory, in f64 and in a fixed order, so the result
//! is the same on every machine. Documents longer than
//! [`BLOCK`] tokens are pooled in consecutive blocks of near-equal length (tokens
//! far apart in a long text seldom belong together, and it bounds the time),
//! with the groups shared out so that the total is still ⌈(n − 1) / f⌉.
//!
//! A group is stored as its mean scaled to its members' mean length: unit
//! tokens give a unit token (the renormalised mean), and tokens of other
//! lengths keep their scale — scaled less where that would take a value past
//! the f16 range (65504), which documents must stay in. Groups are ordered
//! by their first token.

/// The largest finite f16, the bound of every stored value.
const F16_MAX: f64 = 65504.0;

/// Longest run of tokens clustered together.
pub const BLOCK: usize = 1024;

/// Largest pool factor.
pub const MAX_POOL_FACTOR: u32 = 64;

/// Tokens kept as given at the start of a document.
pub const PROTECTED: usize = 1;

/// The tokens a document of `n` keeps when pooled by `factor`.
pub fn pooled_len(n: usize, factor: u32) -> usize {
    if factor <= 1 || n <= PROTECTED {
        return n;
    }
    PROTECTED + (n - PROTECTED).div_ceil(factor as usize)
}

/// `tokens` (`n × dim`, row-major) pooled by `factor`: [`pooled_len`]
/// tokens, the first as given. `factor` 1 returns them unchanged.
pub fn pool_tokens(tokens: &[f32], dim: usize, factor: u32) -> Vec<f32> {
    let n = tokens.len() / dim.max(1);
    if pooled_len(n, factor) == n {
        return tokens.to_vec();
    }
    let f = factor as usize;
    let mut out = Vec::with_capacity(pooled_len(n, factor) * dim);
    out.extend_from_slice(&tokens[..PROTECTED * dim]);
    let (tokens, n) = (&tokens[PROTECTED * dim..], n - PROTECTED);
    // Blocks of near-equal length (at least BLOCK / 2 ≥ f tokens each, so
    // each gets a group); their targets telescope to ⌈n / f⌉ in all.
    let blocks = n.div_ceil(BLOCK);
    for b in 0..blocks {
        let (start, end) = (n * b / blocks, n * (b + 1) / blocks);
        let k = end.div_ceil(f) - start.div_ceil(f);
        let block = &tokens[start * dim..end * dim];
        for group in ward_groups(block, dim, k.max(1)) {
            out.extend(group_token(block, dim, &group));
        }
    }
    out
}

/// The groups (token indices, ascending; groups by first index) of a Ward
/// clustering of the `n` rows of `x` into `k` groups (all of them alone
/// when `k ≥ n`).
///
/// # Panics
/// If `dim` or `k` is 0.
pub fn ward_groups(x: &[f32], dim: usize, k: usize) -> Vec<Vec<usize>> {
    assert!(dim > 0 && k > 0, "ward_groups needs dim > 0 and k > 0");
    let n = x.len() / dim;
    let mut groups: Vec<Vec<usize>> = if k >= n {
        (0..n).map(|i| vec![i]).collect()
    } else {
        let merges = ward_merges(x, dim);
        // Merges in order of height (ties: in the order found, so a merge
        // always follows those that made its groups): the first n − k cut
        // the hierarchy at k groups.
        let mut order: Vec<usize> = (0..merges.len()).collect();
        order.sort_by(|&a, &b| merges[a].2.total_cmp(&merges[b].2).then(a.cmp(&b)));
        let mut parent: Vec<usize> = (0..n).collect();
        fn root(p: &mut [usize], mut i: usize) -> usize {
            while p[i] != i {
                p[i] = p[p[i]];
                i = p[i];
            }
            i
        }
        for &m in &order[..n - k] {
            let (a, b) = (root(&mut parent, merges[m].0), root(&mut parent, merges[m].1));
            parent[a.max(b)] = a.min(b);
        }
        let mut by_root: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for i in 0..n {
            let r = root(&mut parent, i);
            by_root.entry(r).or_default().push(i);
        }
        by_root.into_values().collect()
    };
    groups.sort_by_key(|g| g[0]);
    groups
}

/// The n − 1 merges of Ward's hierarchy over the rows of `x`, found by the
/// nearest-neighbour chain: `(a, b, height)`, each joining the groups that
/// hold rows `a` and `b`. Heights are Ward distances `W`: twice the rise in
/// the sum of squared distances to the group means that the merge makes
/// (`2·|A|·|B| / (|A| + |B|) · ‖μA − μB‖²`), kept in an n × n matrix that
/// starts at the rows' squared distances and is updated by the
/// Lance–Williams formula at each merge: O(n²·dim + n²) in all.
fn ward_merges(x: &[f32], dim: usize) -> Vec<(usize, usize, f64)> {
    let n = x.len() / dim;
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    let mut w = vec![0f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let d = squared_distance(row(i), row(j));
            (w[i * n + j], w[j * n + i]) = (d, d);
        }
    }
    // Group `i` lives in slot `i`, its smallest row; a merged group keeps the smaller slot.
    let mut size = vec![1f64; n];
    let mut alive = vec![true; n];
    let mut merges = Vec::with_capacity(n.saturating_sub(1));
    let mut chain: Vec<usize> = Vec::with_capacity(n);
    for _ in 1..n {
        loop {
            if chain.is_empty() {
                chain.push(alive.iter().position(|&a| a).expect("groups are left"));
            }
            let a = *chain.last().unwrap();
            let prev = chain.len().checked_sub(2).map(|i| chain[i]);
            // The nearest group to `a`; on a tie the previous link wins (so
            // the chain ends), then the lowest slot.
            let mut best = (f64::INFINITY, usize::MAX);
            for c in (0..n).filter(|&c| c != a && alive[c]) {
                let d = w[a * n + c];
                if d < best.0 || (d == best.0 && Some(c) == prev) {
                    best = (d, c);
                }
            }
            let b = best.1;
            if Some(b) != prev {
                chain.push(b);
                continue;
            }
            chain.truncate(chain.len() - 2);
            let (keep, gone) = (a.min(b), a.max(b));
            let (na, nb, wab) = (size[a], size[b], w[a * n + b]);
            for k in (0..n).filter(|&k| alive[k] && k != a && k != b) {
                let nk = size[k];
                let d = ((na + nk) * w[k * n + a] + (nb + nk) * w[k * n + b] - nk * wab) / (na + nb + nk);
                (w[k * n + keep], w[keep * n + k]) = (d, d);
            }
            size[keep] = na + nb;
            alive[gone] = false;
            merges.push((keep, gone, wab));
            break;
        }
    }
    merges
}

/// `‖a − b‖²` in f64, over eight running sums (a fixed order of operations,
/// so the same on every machine, and one the compiler can vectorise).
fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (p, q) in ca.zip(cb) {
        for l in 0..8 {
            let d = p[l] as f64 - q[l] as f64;
            acc[l] += d * d;
        }
    }
    for (l, (p, q)) in ra.iter().zip(rb).enumerate() {
        let d = *p as f64 - *q as f64;
        acc[l] += d * d;
    }
    acc.iter().sum()
}

/// A group's token: its mean, scaled to its members' mean length.
fn group_token(x: &[f32], dim: usize, group: &[usize]) -> Vec<f32> {
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    if let [one] = group {
        return row(*one).to_vec();
    }
    let mut mean = vec![0f64; dim];
    let mut length = 0f64;
    for &i in group {
        let r = row(i);
        length += r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64;
        }
    }
    let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
    let top = mean.iter().fold(0f64, |a, m| a.max(m.abs()));
    let scale = if norm > 0.0 { (length / group.len() as f64 / norm).min(F16_MAX / top) } else { 0.0 };
    mean.iter().map(|m| (m * scale) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Greedy Ward, the textbook way: merge the pair of groups with the
    /// smallest cost until `k` remain (O(n³), independent of the chain).
    fn greedy(x: &[f32], dim: usize, k: usize) -> Vec<Vec<usize>> {
        let n = x.len() / dim;
        let mut groups: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        let mean = |g: &[usize]| -> Vec<f64> {
            (0..dim).map(|j| g.iter().map(|&i| x[i * dim + j] as f64).sum::<f64>() / g.len() as f64).collect()
        };
        let sse = |g: &[usize]| -> f64 {
            let m = mean(g);
            g.iter().map(|&i| (0..dim).map(|j| (x[i * dim + j] as f64 - m[j]).powi(2)).sum::<f64>()).sum()
        };
        while groups.len() > k {
            let mut best = (f64::INFINITY, 0, 0);
            for a in 0..groups.len() {
                for b in a + 1..groups.len() {
                    let union: Vec<usize> = groups[a].iter().chain(&groups[b]).copied().collect();
                    let rise = sse(&union) - sse(&groups[a]) - sse(&groups[b]);
                    if rise < best.0 {
                        best = (rise, a, b);
                    }
                }
            }
            let gone = groups.remove(best.2);
            groups[best.1].extend(gone);
            groups[best.1].sort();
        }
        groups.sort_by_key(|g| g[0]);
        groups
    }

    fn random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::SplitMix64::new(seed);
        (0..n * dim).map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0).collect()
    }

    #[test]
    fn the_chain_finds_the_greedy_ward_groups() {
        for (n, dim, seed) in [(2, 3, 1), (7, 4, 2), (20, 8, 3), (41, 16, 4), (64, 5, 5)] {
            let x = random(n, dim, seed);
            for k in 1..=n {
                assert_eq!(ward_groups(&x, dim, k), greedy(&x, dim, k), "n {n}, dim {dim}, k {k}");
            }
        }
    }

    #[test]
    fn pooled_tokens_are_the_scaled_means_of_the_groups() {
        let (n, dim) = (30, 8);
        let mut x = random(n, dim, 9);
        for r in x.chunks_mut(dim) {
            let l = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            r.iter_mut().for_each(|v| *v /= l);
        }
        for f in 2..=4u32 {
            let pooled = pool_tokens(&x, dim, f);
            let k = (n - 1).div_ceil(f as usize);
            assert_eq!(pooled.len(), (1 + k) * dim, "factor {f}");
            assert_eq!(pooled[..dim], x[..dim], "the first token is kept");
            let rest = &x[dim..];
            let groups = greedy(rest, dim, k);
            for (g, got) in groups.iter().zip(pooled[dim..].chunks(dim)) {
                let mut m = vec![0f64; dim];
                for &i in g {
                    (0..dim).for_each(|j| m[j] += rest[i * dim + j] as f64);
                }
                let l = m.iter().map(|v| v * v).sum::<f64>().sqrt();
                for j in 0..dim {
                    assert!(
                        (got[j] as f64 - m[j] / l).abs() < 1e-6,
                        "factor {f}: a unit token is the renormalised mean"
                    );
                }
            }
        }
    }

    /// Scaling a mean up to its members' length never leaves the f16 range:
    /// tokens near its limit pool to tokens within it, in the mean's direction.
    #[test]
    fn pooled_values_stay_within_the_f16_range() {
        let x = [0.0, 0.0, 60000.0, 60000.0, 60000.0, -60000.0];
        let pooled = pool_tokens(&x, 2, 2);
        assert_eq!(pooled.len(), 4);
        assert_eq!(pooled[2..], [65504.0, 0.0], "(60000, 0) scaled towards length 84853, stopped at 65504");
        assert!(pooled.iter().all(|v| half::f16::from_f32(*v).is_finite()));
    }

    #[test]
    fn long_documents_are_pooled_in_blocks_to_the_same_count() {
        let dim = 4;
        for n in [BLOCK - 1, BLOCK, BLOCK + 1, BLOCK + 2, 2 * BLOCK + 37] {
            let x = random(n, dim, n as u64);
            for f in [2u32, 3] {
                let pooled = pool_tokens(&x, dim, f);
                assert_eq!(pooled.len() / dim, 1 + (n - 1).div_ceil(f as usize), "n {n}, factor {f}");
                assert_eq!(pooled, pool_tokens(&x, dim, f), "deterministic");
            }
        }
    }
}
