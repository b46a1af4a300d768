//! The centroid kernels (every centroid's dot product, the nearest centroid)
//! against an f64 reference, on both paths this CPU has.
//!
//! Each dot is an f32 sum of `dim` products, so its error is at most
//! `γ_dim · Σ_k |t_k c_k| ≈ dim·u·Σ|t c|` (u = 2⁻²⁴; see `kernels.rs`). A
//! nearest centroid is right when its exact dot is within twice that bound
//! of the exact maximum (two near-equal centroids may be told apart either
//! way by f32 rounding, never by more).

use proptest::prelude::*;
use tessera_kernels::CentroidPanels;

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn abs64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 * *y as f64).abs()).sum()
}

fn bound(dim: usize, magnitude: f64) -> f64 {
    1.01 * (dim + 1) as f64 * f32::EPSILON as f64 / 2.0 * magnitude + 1e-30
}

/// Every path this CPU can run: the widest SIMD one (if any), AVX2 under
/// AVX-512, and the portable one.
fn paths(c: &[f32], dim: usize) -> Vec<(&'static str, CentroidPanels)> {
    let p = CentroidPanels::new(c, dim);
    if p.path() == "portable" {
        eprintln!("note: this CPU has no AVX2 + FMA: only the portable centroid kernel is tested here");
    }
    let mut out = vec![(p.path(), p.clone())];
    if let Some(a) = p.clone().avx2().filter(|_| p.path() != "avx2-fma") {
        out.push(("avx2-fma", a));
    }
    out.push(("portable", p.portable()));
    out
}

fn check(tokens: &[f32], centroids: &[f32], dim: usize) {
    let k = centroids.len() / dim;
    let n = tokens.len() / dim;
    let mut simd: Vec<Vec<f32>> = Vec::new();
    for (name, p) in paths(centroids, dim) {
        let mut s = vec![0f32; n * k];
        p.scores(tokens, &mut s);
        if name != "portable" {
            simd.push(s.clone());
        }
        let (mut codes, mut sims) = (vec![0u32; n], vec![0f32; n]);
        p.nearest(tokens, &mut codes, &mut sims);
        for (i, t) in tokens.chunks_exact(dim).enumerate() {
            let exact: Vec<f64> = centroids.chunks_exact(dim).map(|c| dot64(t, c)).collect();
            for (c, cv) in centroids.chunks_exact(dim).enumerate() {
                let b = bound(dim, abs64(t, cv));
                assert!(
                    (s[i * k + c] as f64 - exact[c]).abs() <= b,
                    "{name}: score of token {i}, centroid {c}: {} vs {}",
                    s[i * k + c],
                    exact[c]
                );
            }
            let best = exact.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let got = codes[i] as usize;
            assert!(got < k, "{name}: code {got} out of range");
            let slack = 2.0 * centroids.chunks_exact(dim).map(|c| bound(dim, abs64(t, c))).fold(0.0, f64::max);
            assert!(
                exact[got] >= best - slack,
                "{name}: token {i} got centroid {got} ({}) but the best is {best}",
                exact[got]
            );
            assert_eq!(sims[i], s[i * k + got], "{name}: the similarity is the chosen centroid's score");
        }
    }
    // AVX-512 and AVX2 fuse the same products in the same order per lane:
    // their scores, and so the codes a collection stores, are identical.
    if let [a, b] = &simd[..] {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "AVX-512 and AVX2 scores differ");
    }
}

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn scores_and_nearest_match_the_f64_reference(
        seed in any::<u64>(),
        dim in prop_oneof![Just(128usize), Just(96), Just(64), 1usize..40],
        k in 1usize..70,
        n in 1usize..40,
    ) {
        let c = values(seed, k * dim);
        let t = values(seed ^ 0xABCD, n * dim);
        check(&t, &c, dim);
    }
}

#[test]
fn equal_centroids_resolve_to_the_lowest_index() {
    let dim = 32;
    let base = values(7, 20 * dim);
    // Centroid 20 + i repeats centroid i, across panel boundaries.
    let mut c = base.clone();
    c.extend_from_slice(&base);
    let t = values(9, 50 * dim);
    for (name, p) in paths(&c, dim) {
        let (mut codes, mut sims) = (vec![0u32; 50], vec![0f32; 50]);
        p.nearest(&t, &mut codes, &mut sims);
        assert!(codes.iter().all(|&x| x < 20), "{name}: a repeated centroid won over its first copy: {codes:?}");
    }
}

#[test]
fn many_tokens_across_tasks_and_panel_blocks() {
    // More than one parallel task (1,024 tokens) and one panel block (256 centroids).
    let dim = 24;
    let (k, n) = (300, 2500);
    let c = values(11, k * dim);
    let t = values(13, n * dim);
    let p = CentroidPanels::new(&c, dim);
    let (mut codes, mut sims) = (vec![0u32; n], vec![0f32; n]);
    p.nearest(&t, &mut codes, &mut sims);
    let (mut c1, mut s1) = (vec![0u32; n], vec![0f32; n]);
    p.nearest_serial(&t, &mut c1, &mut s1);
    assert_eq!((codes.clone(), sims), (c1, s1), "parallel and serial assignment agree");
    check(&t[..40 * dim], &c, dim);
}
