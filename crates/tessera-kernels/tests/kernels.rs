//! Every kernel path against the f64 reference, plus batch scoring and top-k.
//!
//! # Error bound
//!
//! A kernel computes each ⟨Q_i, D_j⟩ as an f32 sum of `dim` products (in any
//! order, FMA or not), so by the standard bound its error is at most
//! `γ_dim · Σ_k |q_ik d_jk|` with `γ_n = n·u/(1 − n·u)`, `u = 2⁻²⁴`. Taking the
//! max over `j` keeps the error below `γ_dim · max_j Σ_k |q_ik d_jk|`, and the
//! f32 sum of the `nq` maxima adds at most `γ_nq` relative to the sum of their
//! magnitudes. Hence, with `S = Σ_i max_j Σ_k |q_ik d_jk|`,
//!
//! ```text
//! |fast − ref| ≤ (γ_dim + γ_nq·(1 + γ_dim)) · S  ≈ (dim + nq)·u·S
//! ```
//!
//! The reference is f64 on exactly the same (f16-widened) inputs, so its own
//! error is negligible next to this. We assert `1.01·(dim + nq + 1)·u·S + 1e-30`.
//! (For the sizes tested this is ≤ 7e-5·S: tighter than a flat 1e-4·S.)

use proptest::prelude::*;
use tessera_kernels::reference::maxsim_f64;
use tessera_kernels::{
    DocMatrix, Kernel, Query, QueryBatch, f16, maxsim, maxsim_batch, maxsim_pairwise, score_docs, top_k,
};

struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// `S = Σ_i max_j Σ_k |q_ik d_jk|`.
fn abs_mass(q: &[f32], d: &[f32], dim: usize) -> f64 {
    q.chunks_exact(dim)
        .map(|qi| {
            d.chunks_exact(dim)
                .map(|dj| qi.iter().zip(dj).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum::<f64>())
                .fold(0.0, f64::max)
        })
        .sum()
}

fn bound(q: &[f32], d: &[f32], dim: usize) -> f64 {
    let nq = q.len() / dim;
    1.01 * (dim + nq + 1) as f64 * (f32::EPSILON as f64 / 2.0) * abs_mass(q, d, dim) + 1e-30
}

/// The bound of `kernel`: the f32 one, or for AMX (see `amx.rs`) f32 rounding
/// of `4·dim` products plus the bf16 split (2⁻¹⁸ for the query, 2⁻¹⁶ for an
/// f32 document's low limb: 64 and 256 units of u = 2⁻²⁴).
fn bound_for(kernel: Kernel, q: &[f32], d: &[f32], dim: usize) -> f64 {
    match kernel {
        Kernel::Amx => {
            let nq = q.len() / dim;
            1.01 * (4 * dim + nq + 1 + 64 + 256) as f64 * (f32::EPSILON as f64 / 2.0) * abs_mass(q, d, dim) + 1e-30
        }
        _ => bound(q, d, dim),
    }
}

/// Checks every available kernel and the pairwise baseline, on f32 and f16
/// documents, against the reference. Returns an error message instead of
/// panicking so that proptest can shrink.
fn check_all(qv: &[f32], dv: &[f32], dim: usize) -> Result<(), String> {
    let dh: Vec<f16> = dv.iter().map(|&x| f16::from_f32(x)).collect();
    let dh32: Vec<f32> = dh.iter().map(|x| x.to_f32()).collect();
    let cases: [(&str, &[f32]); 2] = [("f32", dv), ("f16", &dh32)];
    for (ty, d32) in cases {
        let r = maxsim_f64(qv, d32, dim);
        for k in Kernel::available() {
            let tol = bound_for(k, qv, d32, dim);
            let tol_pairwise = bound(qv, d32, dim);
            let q = Query::with_kernel(qv, dim, k);
            let (fast, base) = if ty == "f32" {
                (maxsim(&q, dv), maxsim_pairwise(&q, dv))
            } else {
                (maxsim(&q, &dh), maxsim_pairwise(&q, &dh))
            };
            for (what, got, tol) in [("kernel", fast, tol), ("pairwise", base, tol_pairwise)] {
                let err = (got as f64 - r).abs();
                if err.is_nan() || err > tol {
                    return Err(format!(
                        "{what} {k:?} {ty}: nq={} nd={} dim={dim}: got {got}, ref {r}, err {err:e} > tol {tol:e}",
                        qv.len() / dim,
                        d32.len() / dim
                    ));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn all_kernels_match_reference(
        nq in 1usize..=64,
        nd in 1usize..=600,
        dim in prop_oneof![1usize..=16, 17usize..=1024, Just(128usize), Just(96usize), Just(127usize)],
        seed in any::<u64>(),
        sign in 0u8..3,
    ) {
        let mut rng = Rng(seed);
        let mut qv = rng.vec(nq * dim);
        let mut dv = rng.vec(nd * dim);
        if sign == 1 {
            // All similarities negative: the max must not be clamped at 0.
            qv.iter_mut().for_each(|x| *x = x.abs());
            dv.iter_mut().for_each(|x| *x = -x.abs());
        } else if sign == 2 {
            // Large dynamic range.
            qv.iter_mut().enumerate().for_each(|(i, x)| *x *= [1e-3, 1.0, 30.0][i % 3]);
        }
        check_all(&qv, &dv, dim).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn one_by_one_dim_one() {
    for (a, b) in [(2.0f32, 3.0f32), (-1.5, 0.25), (0.0, 7.0), (-2.0, -0.5)] {
        check_all(&[a], &[b], 1).unwrap();
        for k in Kernel::available() {
            assert_eq!(maxsim(&Query::with_kernel(&[a], 1, k), &[b]), a * b, "{k:?}");
        }
    }
}

/// Query sizes around the lane blocks (8, 16, 32) and doc sizes around every
/// tile height (4, 6, 12), for small and realistic dims.
#[test]
fn block_boundaries() {
    let mut rng = Rng(42);
    for dim in [1usize, 3, 8, 17, 128] {
        for nq in [1usize, 7, 8, 9, 11, 15, 16, 17, 24, 31, 32, 33, 48, 49] {
            for nd in 1usize..=26 {
                let qv = rng.vec(nq * dim);
                let dv = rng.vec(nd * dim);
                check_all(&qv, &dv, dim).unwrap();
            }
        }
    }
}

#[test]
fn negative_similarities_are_not_clamped() {
    let mut rng = Rng(7);
    for (nq, nd, dim) in [(1, 1, 1), (11, 13, 128), (32, 200, 128), (17, 7, 5)] {
        let qv: Vec<f32> = rng.vec(nq * dim).iter().map(|x| x.abs() + 0.01).collect();
        let dv: Vec<f32> = rng.vec(nd * dim).iter().map(|x| -x.abs() - 0.01).collect();
        check_all(&qv, &dv, dim).unwrap();
        for k in Kernel::available() {
            let s = maxsim(&Query::with_kernel(&qv, dim, k), &dv);
            assert!(s < 0.0, "{k:?}: {s}");
        }
    }
}

#[test]
fn portable_is_always_available_and_last() {
    let all = Kernel::available();
    assert_eq!(*all.last().unwrap(), Kernel::Portable);
    let chosen = Kernel::detect();
    assert!(all.contains(&chosen));
    assert_eq!(tessera_kernels::kernel_name(), chosen.name());
    assert_eq!(Query::new(&[1.0, 2.0], 2).kernel(), chosen);
}

#[test]
fn query_accessors_keep_row_major_tokens() {
    let t: Vec<f32> = (0..21).map(|x| x as f32).collect();
    let q = Query::new(&t, 7);
    assert_eq!((q.dim(), q.n_tokens(), q.tokens()), (7, 3, &t[..]));
    let h: Vec<f16> = t.iter().map(|&x| f16::from_f32(x)).collect();
    assert_eq!(Query::from_elements(&h, 7).tokens(), &t[..]);
}

/// Variable-length documents; returns (f16 tokens, f32 widened tokens, offsets).
fn matrix(rng: &mut Rng, lens: &[u64], dim: usize) -> (Vec<f16>, Vec<f32>, Vec<u64>) {
    let mut offsets = vec![0u64];
    for l in lens {
        offsets.push(offsets.last().unwrap() + l);
    }
    let n = *offsets.last().unwrap() as usize * dim;
    let h: Vec<f16> = rng.vec(n).iter().map(|&x| f16::from_f32(x)).collect();
    let f = h.iter().map(|x| x.to_f32()).collect();
    (h, f, offsets)
}

#[test]
fn score_docs_and_top_k_match_reference() {
    let mut rng = Rng(99);
    let dim = 48;
    let lens: Vec<u64> = (0..300).map(|i| 1 + (i * 37 % 71) as u64).collect();
    let (h, f, offsets) = matrix(&mut rng, &lens, dim);
    let mh = DocMatrix { tokens: &h[..], offsets: &offsets, dim };
    let mf = DocMatrix { tokens: &f[..], offsets: &offsets, dim };
    let qv = rng.vec(13 * dim);
    // A candidate subset, out of order.
    let cands: Vec<u32> = (0..300u32).filter(|i| i % 3 != 1).rev().collect();
    for k in Kernel::available() {
        let q = Query::with_kernel(&qv, dim, k);
        let mut out_h = vec![0f32; cands.len()];
        let mut out_f = vec![0f32; cands.len()];
        score_docs(&q, &mh, &cands, &mut out_h);
        score_docs(&q, &mf, &cands, &mut out_f);
        for (i, &c) in cands.iter().enumerate() {
            let d = mf.doc(c);
            let r = maxsim_f64(&qv, d, dim);
            let tol = bound_for(k, &qv, d, dim);
            assert!((out_h[i] as f64 - r).abs() <= tol, "{k:?} doc {c}: {} vs {r}", out_h[i]);
            // f16 and f32 storage of the same values score identically.
            assert_eq!(out_h[i], out_f[i], "{k:?} doc {c}");
        }
        // top_k is exactly the best k of score_docs (score desc, key asc).
        let mut all: Vec<(f32, u32)> = out_h.iter().copied().zip(cands.iter().copied()).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for kk in [0usize, 1, 10, 199, 200, 201, 1000] {
            let got: Vec<(f32, u32)> = top_k(&q, &mh, &cands, kk).iter().map(|h| (h.score, h.key)).collect();
            assert_eq!(got, all[..kk.min(all.len())], "{k:?} k={kk}");
        }
        // The reference ranking agrees on the top 10 (random data: no near ties).
        let mut refs: Vec<(f64, u32)> = cands.iter().map(|&c| (maxsim_f64(&qv, mf.doc(c), dim), c)).collect();
        refs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top: Vec<u32> = top_k(&q, &mh, &cands, 10).iter().map(|h| h.key).collect();
        assert_eq!(top, refs[..10].iter().map(|r| r.1).collect::<Vec<_>>(), "{k:?}");
    }
    assert!(top_k(&Query::new(&qv, dim), &mh, &[], 5).is_empty());
}

#[test]
fn bench_report_is_consistent() {
    let r = tessera_kernels::bench_maxsim(5, 9, 16, 20, 1);
    assert!(r.docs_per_s > 0.0 && r.gflops > 0.0 && r.peak_gflops > 0.0 && r.pairwise_docs_per_s > 0.0);
    assert!(r.max_abs_diff < 1e-3, "{r:?}");
}

/// A batch of `sizes.len()` queries against one document, with every kernel:
/// each batched score is bit-identical to the query scored alone (the same
/// f32 operations in the same order), and so within the bound of the f64
/// reference.
fn check_batch(sizes: &[usize], nd: usize, dim: usize, seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed);
    let qvs: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n * dim)).collect();
    let dh: Vec<f16> = rng.vec(nd * dim).iter().map(|&x| f16::from_f32(x)).collect();
    let d32: Vec<f32> = dh.iter().map(|x| x.to_f32()).collect();
    for k in Kernel::available() {
        let qs: Vec<Query> = qvs.iter().map(|v| Query::with_kernel(v, dim, k)).collect();
        let b = QueryBatch::new(&qs.iter().collect::<Vec<_>>());
        assert_eq!((b.len(), b.dim(), b.kernel()), (sizes.len(), dim, k));
        let mut out = vec![f32::NAN; qs.len()];
        maxsim_batch(&b, &dh, &mut out);
        for (i, (q, got)) in qs.iter().zip(&out).enumerate() {
            let alone = maxsim(q, &dh);
            if got.to_bits() != alone.to_bits() {
                return Err(format!("{k:?} query {i} of {sizes:?} nd={nd} dim={dim}: batch {got} vs alone {alone}"));
            }
            let (r, tol) = (maxsim_f64(&qvs[i], &d32, dim), bound_for(k, &qvs[i], &d32, dim));
            if (*got as f64 - r).abs() > tol {
                return Err(format!("{k:?} query {i}: {got} vs reference {r}"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn batched_queries_score_as_each_alone(
        sizes in prop::collection::vec(1usize..=40, 1..=33),
        nd in 1usize..=80,
        dim in prop_oneof![1usize..=20, Just(64usize), Just(96usize), Just(128usize), 129usize..=200],
        seed in any::<u64>(),
    ) {
        check_batch(&sizes, nd, dim, seed).map_err(TestCaseError::fail)?;
    }
}

/// Batches whose queries end inside, at and across the 16-lane panels.
#[test]
fn batch_boundaries() {
    for sizes in [&[1usize][..], &[11; 16], &[16, 16], &[15, 1, 16], &[32; 32], &[5, 27, 3], &[17; 3]] {
        for nd in [1usize, 12, 13, 24, 25, 218] {
            check_batch(sizes, nd, 128, nd as u64).unwrap();
        }
    }
}

#[test]
fn kernels_are_named_and_chosen_from_what_the_cpu_runs() {
    for k in Kernel::ALL {
        let by_short = Kernel::from_name(k.short_name());
        let by_long = Kernel::from_name(k.name());
        if k.is_available() {
            assert_eq!((by_short, by_long), (Ok(k), Ok(k)));
        } else {
            let e = by_short.unwrap_err();
            assert!(e.contains("cannot run on this CPU"), "{e}");
            eprintln!("skipped: {k:?} cannot run on this CPU, its tests are skipped");
        }
    }
    let e = Kernel::from_name("avx9000").unwrap_err();
    assert!(e.contains("unknown kernel") && e.contains("avx512"), "{e}");
    // The calibration times every available SIMD kernel (portable where there
    // is none) and picks the fastest it saw, or AMX unless 1.5× slower.
    let c = tessera_kernels::calibrate();
    let mut timed = Kernel::available();
    if timed.len() > 1 {
        timed.pop();
    }
    assert_eq!(c.seconds.iter().map(|s| s.0).collect::<Vec<_>>(), timed);
    let best = c.seconds.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    match c.seconds.iter().find(|s| s.0 == Kernel::Amx) {
        Some(amx) if amx.1 <= 1.5 * best.1 => assert_eq!(c.chosen, Kernel::Amx),
        _ => assert_eq!(c.chosen, best.0),
    }
    assert!(c.seconds.iter().all(|s| s.1 > 0.0 && s.1 < 0.5), "{c:?}");
}
