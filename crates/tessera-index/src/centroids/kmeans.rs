//! Spherical k-means over a sample of tokens: the codebook of the
//! token-centroid index (flat up to [`FLAT_MAX`] centroids, hierarchical beyond).
//!
//! Lloyd's iterations with inner-product assignment (the nearest centroid is
//! the one with the highest dot product, [`CentroidPanels::nearest`]) and
//! L2-normalised means, so that a centroid's score against a query token is on
//! the scale of a token's. Initial centroids are distinct sample tokens drawn
//! by [`SplitMix64`]; a centroid that loses every member is re-seeded with the
//! sample token worst served by its own centroid. Each cluster's mean is
//! summed in f64 in sample order, clusters in parallel, so the result is a
//! function of (sample, k, iterations, seed) alone — not of the thread count.
//!
//! A library k-means was considered and not taken: `linfa-clustering` and
//! `kentro` bring ndarray and their own random generators (no
//! seed-for-seed reproducibility across versions), and neither has an
//! inner-product (spherical) assignment kernel as fast as the panels the
//! MaxSim kernels already use; the loop around that kernel is thirty lines.

use crate::rng::SplitMix64;
use rayon::prelude::*;
use tessera_kernels::CentroidPanels;

/// A trained codebook: `k` centroids in `g` groups, each group's centroids
/// contiguous, with the group centroids that route a token to its groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    /// `k × dim`, row-major, each row of unit norm (or zero for a zero sample).
    pub centroids: Vec<f32>,
    /// `g × dim`: group `j`'s centroid (of unit norm).
    pub groups: Vec<f32>,
    /// Group `j` holds centroids `group_offsets[j] .. group_offsets[j + 1]`
    /// (`g + 1` offsets from 0 to `k`, every group non-empty).
    pub group_offsets: Vec<u32>,
    /// Mean cosine of the sample's tokens to their nearest centroid under
    /// the returned codebook (assigned through the groups, as tokens are).
    pub mean_similarity: f32,
}

/// Codebooks of at most this many centroids are one group (flat k-means,
/// brute-force assignment); larger ones are trained hierarchically.
pub const FLAT_MAX: usize = 1024;

/// Trains `k` centroids on `sample` (row-major `n × dim`, `n ≥ k ≥ 1`) with
/// `iters` Lloyd iterations.
///
/// Up to [`FLAT_MAX`] centroids: one flat k-means. Beyond: hierarchical
/// k-means — `g = round(√k)` group centroids by k-means over the sample, the
/// sample split by nearest group, and each group's share of the `k`
/// centroids (in proportion to its tokens) trained on its tokens alone. Its
/// cost is about `n · (g + k/g) · dim` per iteration instead of `n · k · dim`
/// (64× less at k = 16384), and it yields the groups that route assignment.
///
/// # Panics
/// If `k == 0`, `sample` holds fewer than `k` tokens, or is not a multiple of `dim`.
pub fn train(sample: &[f32], dim: usize, k: usize, iters: usize, seed: u64) -> Trained {
    assert!(dim > 0 && sample.len().is_multiple_of(dim), "sample must be n × dim");
    let n = sample.len() / dim;
    assert!(k >= 1 && n >= k, "k-means needs at least k = {k} tokens, got {n}");
    let (centroids, groups, group_offsets) = if k <= FLAT_MAX {
        let c = train_flat(sample, dim, k, iters, seed);
        let g = mean_direction(&c, dim);
        (c, g, vec![0, k as u32])
    } else {
        train_hierarchical(sample, dim, k, iters, seed)
    };
    let q = super::Quantizer::new(&centroids, &groups, &group_offsets, dim);
    let (mut codes, mut sims) = (vec![0u32; n], vec![0f32; n]);
    q.nearest(sample, &mut codes, &mut sims);
    let (sum, count) = cosine_sum(sample, dim, &sims);
    let mean_similarity = if count == 0 { 0.0 } else { (sum / count as f64) as f32 };
    Trained { centroids, groups, group_offsets, mean_similarity }
}

fn train_hierarchical(sample: &[f32], dim: usize, k: usize, iters: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let n = sample.len() / dim;
    let g = ((k as f64).sqrt().round() as usize).clamp(1, k);
    let top = train_flat(sample, dim, g, iters, seed);
    let (mut codes, mut sims) = (vec![0u32; n], vec![0f32; n]);
    CentroidPanels::new(&top, dim).nearest(sample, &mut codes, &mut sims);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); g];
    for (i, &c) in codes.iter().enumerate() {
        members[c as usize].push(i as u32);
    }
    let shares = shares(&members.iter().map(Vec::len).collect::<Vec<_>>(), k);
    let parts: Vec<Vec<f32>> = members
        .par_iter()
        .zip(&shares)
        .enumerate()
        .map(|(j, (m, &kj))| {
            if kj == 0 {
                return Vec::new();
            }
            let sub: Vec<f32> = m.iter().flat_map(|&i| sample[i as usize * dim..][..dim].iter().copied()).collect();
            train_flat(&sub, dim, kj, iters, seed ^ (j as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        })
        .collect();
    let (mut centroids, mut groups, mut offsets) = (Vec::with_capacity(k * dim), Vec::new(), vec![0u32]);
    for (j, part) in parts.into_iter().enumerate() {
        if part.is_empty() {
            continue; // a group no token chose: dropped
        }
        centroids.extend(part);
        groups.extend_from_slice(&top[j * dim..(j + 1) * dim]);
        offsets.push((centroids.len() / dim) as u32);
    }
    (centroids, groups, offsets)
}

/// Splits `k` centroids over groups of `sizes` tokens in proportion to their
/// sizes (largest remainders first, ties by index), never more than a group
/// has tokens; every group with tokens gets at least one.
fn shares(sizes: &[usize], k: usize) -> Vec<usize> {
    let n: usize = sizes.iter().sum();
    let mut out: Vec<usize> = sizes.iter().map(|&s| if s == 0 { 0 } else { (k * s / n).clamp(1, s) }).collect();
    let mut given: usize = out.iter().sum();
    // Hand out what rounding left (or take back what the minimum of one added).
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = (k * sizes[a]) as f64 / n as f64 - out[a] as f64;
        let rb = (k * sizes[b]) as f64 / n as f64 - out[b] as f64;
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    while given < k {
        let before = given;
        for &j in &order {
            if given < k && out[j] < sizes[j] {
                out[j] += 1;
                given += 1;
            }
        }
        if given == before {
            break; // every group is full: k ≤ n makes this unreachable
        }
    }
    for &j in order.iter().rev() {
        while given > k && out[j] > 1 {
            out[j] -= 1;
            given -= 1;
        }
    }
    out
}

/// The normalised mean of the rows (the one group centroid of a flat codebook).
fn mean_direction(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut sum = vec![0f64; dim];
    for r in rows.chunks_exact(dim) {
        for (s, &x) in sum.iter_mut().zip(r) {
            *s += x as f64;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    sum.iter().map(|&x| if norm > 0.0 { (x / norm) as f32 } else { 0.0 }).collect()
}

/// Flat spherical k-means: `k` unit centroids.
fn train_flat(sample: &[f32], dim: usize, k: usize, iters: usize, seed: u64) -> Vec<f32> {
    let n = sample.len() / dim;
    let mut centroids = seeds(sample, dim, k, seed);
    let (mut codes, mut sims) = (vec![0u32; n], vec![0f32; n]);
    for _ in 0..iters {
        CentroidPanels::new(&centroids, dim).nearest(sample, &mut codes, &mut sims);
        centroids = means(sample, dim, k, &codes);
        reseed_empty(&mut centroids, sample, dim, &codes, &sims);
    }
    centroids
}

/// The sum of each token's cosine to its centroid (its dot with the unit
/// centroid, `dots[i]`, over its norm) and the number of nonzero tokens
/// summed: how well a codebook serves tokens, whatever their norms.
pub fn cosine_sum(tokens: &[f32], dim: usize, dots: &[f32]) -> (f64, usize) {
    let mut sum = 0f64;
    let mut count = 0;
    for (t, &d) in tokens.chunks_exact(dim).zip(dots) {
        let norm = t.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        if norm > 0.0 {
            sum += d as f64 / norm;
            count += 1;
        }
    }
    (sum, count)
}

/// Initial centroids by k-means++ (Arthur & Vassilvitskii, 2007) over a
/// subsample of `min(n, 4k)` normalised sample tokens: each next seed is drawn
/// with probability proportional to `1 − max_c ⟨x, c⟩` (half the squared
/// distance of unit vectors) to the seeds so far. Plain random seeds leave
/// about a third of well-separated clusters without a centroid (and Lloyd's
/// iterations never move one across a gap); this costs `4k² · dim` FMAs.
fn seeds(sample: &[f32], dim: usize, k: usize, seed: u64) -> Vec<f32> {
    let n = sample.len() / dim;
    let sub: Vec<f32> = distinct_indices(n, (4 * k).min(n), seed)
        .into_iter()
        .flat_map(|i| normalized(&sample[i * dim..(i + 1) * dim]).collect::<Vec<_>>())
        .collect();
    let m = sub.len() / dim;
    let mut rng = SplitMix64::new(seed ^ 0x005E_ED0F_CE47_401D);
    let mut best = vec![f32::NEG_INFINITY; m];
    let mut taken = vec![false; m];
    let mut out = Vec::with_capacity(k * dim);
    let mut pick = rng.below(m);
    for _ in 0..k {
        taken[pick] = true;
        let c = &sub[pick * dim..(pick + 1) * dim];
        out.extend_from_slice(c);
        best.par_iter_mut().zip(sub.par_chunks(dim)).for_each(|(b, x)| {
            *b = b.max(x.iter().zip(c).map(|(a, b)| a * b).sum::<f32>());
        });
        let weight = |i: usize| if taken[i] { 0.0 } else { (1.0 - best[i] as f64).max(0.0) };
        let total: f64 = (0..m).map(weight).sum();
        pick = if total > 0.0 {
            let mut r = rng.next_f64() * total;
            (0..m)
                .find(|&i| {
                    r -= weight(i);
                    r < 0.0 && !taken[i]
                })
                .unwrap_or_else(|| (0..m).rev().find(|&i| !taken[i]).unwrap_or(0))
        } else {
            // Every remaining token coincides with a seed: any untaken one.
            (0..m).find(|&i| !taken[i]).unwrap_or(0)
        };
    }
    out
}

/// `k` distinct indices below `n`, in draw order (a partial Fisher–Yates shuffle).
pub(crate) fn distinct_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut swapped = std::collections::HashMap::new();
    (0..k)
        .map(|i| {
            let j = i + rng.below(n - i);
            let at_j = *swapped.get(&j).unwrap_or(&j);
            let at_i = *swapped.get(&i).unwrap_or(&i);
            swapped.insert(j, at_i);
            at_j
        })
        .collect()
}

fn normalized(v: &[f32]) -> impl Iterator<Item = f32> + '_ {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(move |&x| (x as f64 * inv) as f32)
}

/// The normalised mean of each cluster's members (a cluster without members
/// gets a zero row, re-seeded by the caller).
fn means(sample: &[f32], dim: usize, k: usize, codes: &[u32]) -> Vec<f32> {
    // Members of each cluster, in sample order (a counting sort).
    let mut start = vec![0usize; k + 1];
    for &c in codes {
        start[c as usize + 1] += 1;
    }
    for c in 0..k {
        start[c + 1] += start[c];
    }
    let mut fill = start.clone();
    let mut members = vec![0u32; codes.len()];
    for (i, &c) in codes.iter().enumerate() {
        members[fill[c as usize]] = i as u32;
        fill[c as usize] += 1;
    }
    let mut out = vec![0f32; k * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(c, dst)| {
        let mut sum = vec![0f64; dim];
        for &i in &members[start[c]..start[c + 1]] {
            for (s, &x) in sum.iter_mut().zip(&sample[i as usize * dim..][..dim]) {
                *s += x as f64;
            }
        }
        let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (d, s) in dst.iter_mut().zip(&sum) {
                *d = (s / norm) as f32;
            }
        }
    });
    out
}

/// Gives every centroid that has no member a sample token, the worst-served
/// ones first (lowest similarity to their centroid; lowest index on ties).
fn reseed_empty(centroids: &mut [f32], sample: &[f32], dim: usize, codes: &[u32], sims: &[f32]) {
    let k = centroids.len() / dim;
    let mut used = vec![false; k];
    for &c in codes {
        used[c as usize] = true;
    }
    let empty: Vec<usize> = (0..k).filter(|&c| !used[c]).collect();
    if empty.is_empty() {
        return;
    }
    let mut worst: Vec<usize> = (0..codes.len()).collect();
    worst.sort_by(|&a, &b| sims[a].total_cmp(&sims[b]).then(a.cmp(&b)));
    for (c, i) in empty.into_iter().zip(worst) {
        let v: Vec<f32> = normalized(&sample[i * dim..][..dim]).collect();
        centroids[c * dim..(c + 1) * dim].copy_from_slice(&v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(centers: usize, per: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut r = SplitMix64::new(seed);
        let c: Vec<f32> = (0..centers)
            .flat_map(|_| normalized(&(0..dim).map(|_| r.gaussian()).collect::<Vec<_>>()).collect::<Vec<_>>())
            .collect();
        let mut s = Vec::new();
        for i in 0..centers * per {
            let base = &c[(i % centers) * dim..][..dim];
            let v: Vec<f32> = base.iter().map(|&x| x + 0.02 * r.gaussian()).collect();
            s.extend(normalized(&v));
        }
        (c, s)
    }

    #[test]
    fn finds_well_separated_clusters() {
        // k-means++ draws k seeds (from a subsample of 4k tokens), each in an
        // uncovered blob with high probability, not certainty (numpy's
        // simulation of the same draw misses 2–3 of 40 blobs), and Lloyd's
        // iterations never move a centroid across a gap: most blobs are
        // found. Random seeds find 28 of 40 here.
        let (dim, centers) = (32, 40);
        let (truth, sample) = blobs(centers, 40, dim, 3);
        let t = train(&sample, dim, centers, 10, 1);
        let served = truth
            .chunks_exact(dim)
            .filter(|c| t.centroids.chunks_exact(dim).any(|x| x.iter().zip(*c).map(|(a, b)| a * b).sum::<f32>() > 0.99))
            .count();
        assert!(served >= centers * 85 / 100, "{served} of {centers} true centers found");
        assert!(t.mean_similarity > 0.8, "mean similarity {}", t.mean_similarity);
        for row in t.centroids.chunks_exact(dim) {
            let n: f32 = row.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4, "centroids have unit norm, got {n}");
        }
    }

    #[test]
    fn same_inputs_same_codebook_whatever_the_pool() {
        let (_, sample) = blobs(20, 30, 16, 5);
        let a = train(&sample, 16, 24, 6, 9);
        let b =
            rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| train(&sample, 16, 24, 6, 9));
        assert_eq!(a, b);
        assert_ne!(a, train(&sample, 16, 24, 6, 10), "another seed, another start");
    }

    #[test]
    fn more_centroids_than_distinct_tokens_are_reseeded_not_lost() {
        // 5 distinct tokens repeated: 8 centroids, some of them duplicates, none NaN.
        let (_, base) = blobs(5, 1, 8, 2);
        let sample: Vec<f32> = base.iter().cycle().take(5 * 8 * 4).copied().collect();
        let t = train(&sample, 8, 8, 4, 0);
        assert!(t.centroids.iter().all(|x| x.is_finite()));
        assert!((t.mean_similarity - 1.0).abs() < 1e-4);
    }

    #[test]
    fn distinct_indices_are_distinct_and_in_range() {
        for (n, k) in [(10, 10), (1000, 17), (5, 1)] {
            let v = distinct_indices(n, k, 3);
            let set: std::collections::HashSet<_> = v.iter().collect();
            assert_eq!((v.len(), set.len()), (k, k));
            assert!(v.iter().all(|&i| i < n));
        }
    }
}
