//! Stored token types and screening codes against independent references:
//! int8 quantisation against a naive per-token computation, every MaxSim
//! kernel on int8 documents against the f64 MaxSim of the dequantised values,
//! and every screening kernel against a ±1 MaxSim computed from the values' signs.
//!
//! Int8 error bounds. The widening kernels form `code × scale` in f32 exactly
//! as the reference input is formed, so the bound of `kernels.rs` applies
//! unchanged. The VNNI kernels round each query token `i` to 16 bits (step
//! `s_i = max_k |q_ik| / 32639`, error ≤ `s_i/2` per value) and sum integers
//! exactly; their error is at most `Σ_i s_i/2 · max_j t_j·Σ_k |c_jk|` plus the
//! f32 rounding of the final products and sum, `(nq + 5)·u·S`.

use proptest::prelude::*;
use tessera_kernels::codes::{CodeKernel, CodeQuery, hamming_maxsim, sign_codes};
use tessera_kernels::reference::maxsim_f64;
use tessera_kernels::residual::{Codec, by_bucket, train_tables};
use tessera_kernels::{
    EncodedTokens, Int8Kernel, Kernel, Query, QueryBatch, Repr, Screening, TokenMatrix, TokenType, f16,
    maxsim_int8_batch_with, maxsim_int8_with, maxsim_stored,
};

/// What a token type needs to be encoded and read: nothing, or for a
/// residual type a codebook of 5 centroids (tokens of the test data coded
/// with the nearest) and tables trained on their residuals.
struct Tables {
    centroids: Vec<f32>,
    cutoffs: Vec<f32>,
    weights: Vec<f32>,
    by_bucket: Vec<f32>,
    codes: Vec<u16>,
}

impl Tables {
    fn new(t: TokenType, values: &[f16], dim: usize) -> Self {
        let bits = t.residual_bits();
        if bits == 0 {
            return Self { centroids: vec![], cutoffs: vec![], weights: vec![], by_bucket: vec![], codes: vec![] };
        }
        let x: Vec<f32> = values.iter().map(|v| v.to_f32()).collect();
        let centroids = rng_vec(77, 5 * dim);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let codes: Vec<u16> = x
            .chunks(dim)
            .map(|t| {
                (0..5)
                    .max_by(|&a, &b| {
                        dot(t, &centroids[a * dim..][..dim]).total_cmp(&dot(t, &centroids[b * dim..][..dim]))
                    })
                    .unwrap() as u16
            })
            .collect();
        let res: Vec<f32> =
            x.iter().enumerate().map(|(i, v)| v - centroids[codes[i / dim] as usize * dim + i % dim]).collect();
        let (cutoffs, weights) = train_tables(&res, dim, bits);
        let by_bucket = by_bucket(&weights, dim, bits);
        Self { centroids, cutoffs, weights, by_bucket, codes }
    }

    fn repr(&self, t: TokenType, dim: usize) -> Repr<'_> {
        if !t.is_residual() {
            return Repr::plain(t);
        }
        Repr::residual(Codec {
            bits: t.residual_bits(),
            dim,
            centroids: &self.centroids,
            cutoffs: &self.cutoffs,
            weights: &self.weights,
            weights_by_bucket: &self.by_bucket,
        })
    }

    fn encode(&self, t: TokenType, s: Screening, values: &[f16], dim: usize) -> EncodedTokens {
        let x: Vec<f32> = values.iter().map(|v| v.to_f32()).collect();
        EncodedTokens::encode_coded(self.repr(t, dim), s, &x, &self.codes, dim)
    }
}

fn rng_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn halves(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// Naive per-token symmetric int8: (codes, scales).
fn naive_int8(v: &[f16], dim: usize) -> (Vec<i8>, Vec<f32>) {
    let (mut codes, mut scales) = (Vec::new(), Vec::new());
    for t in v.chunks(dim) {
        let max = t.iter().map(|x| x.to_f32().abs()).fold(0.0, f32::max);
        let scale = max / 127.0;
        for x in t {
            let c = if max == 0.0 { 0.0 } else { (x.to_f32() / scale).round() };
            codes.push(c.clamp(-127.0, 127.0) as i8);
        }
        scales.push(scale);
    }
    (codes, scales)
}

fn bound(q: &[f32], d: &[f32], dim: usize) -> f64 {
    let s: f64 = q
        .chunks_exact(dim)
        .map(|qi| {
            d.chunks_exact(dim)
                .map(|dj| qi.iter().zip(dj).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum::<f64>())
                .fold(0.0, f64::max)
        })
        .sum();
    1.01 * (dim + q.len() / dim + 1) as f64 * (f32::EPSILON as f64 / 2.0) * s + 1e-30
}

/// ±1 MaxSim from the signs of the values (x > 0 ↦ +1, else −1).
fn naive_screen(q: &[f32], d: &[f32], dim: usize) -> f32 {
    let sign = |x: f32| if x > 0.0 { 1i64 } else { -1 };
    q.chunks_exact(dim)
        .map(|qi| {
            d.chunks_exact(dim)
                .map(|dj| qi.iter().zip(dj).map(|(a, b)| sign(*a) * sign(*b)).sum::<i64>())
                .max()
                .unwrap()
        })
        .sum::<i64>() as f32
}

fn check_int8(qv: &[f32], dv: &[f32], dim: usize) -> Result<(), String> {
    let dh = halves(dv);
    let (codes, scales) = naive_int8(&dh, dim);
    let e = EncodedTokens::encode(TokenType::Int8, Screening::None, &dh, dim);
    let got_codes: &[i8] = bytemuck::cast_slice(&e.rows);
    if got_codes != codes || e.scales != scales {
        return Err(format!("quantisation differs from the naive one at dim {dim}"));
    }
    // Dequantised error is at most half a step per value.
    for (i, (c, x)) in codes.iter().zip(&dh).enumerate() {
        let s = scales[i / dim];
        if (*c as f32 * s - x.to_f32()).abs() > s * 0.5 + 1e-7 {
            return Err(format!("value {i} quantised to {c}×{s}, from {x}"));
        }
    }
    let deq: Vec<f32> = codes.iter().enumerate().map(|(i, &c)| c as f32 * scales[i / dim]).collect();
    let r = maxsim_f64(qv, &deq, dim);
    let tol = bound(qv, &deq, dim);
    let shape = format!("nq={} nd={} dim={dim}", qv.len() / dim, dv.len() / dim);
    for k in Kernel::available() {
        let q = Query::with_kernel(qv, dim, k);
        let got = maxsim_int8_with(&q, &codes, &scales, Int8Kernel::Widen) as f64;
        if (got - r).abs() > tol || got.is_nan() {
            return Err(format!("{k:?} int8 {shape}: {got} vs {r}"));
        }
    }
    // The VNNI kernels: the query's 16-bit rounding adds a bound of its own.
    let l1_max = (0..dv.len() / dim)
        .map(|j| scales[j] as f64 * codes[j * dim..(j + 1) * dim].iter().map(|&c| (c as f64).abs()).sum::<f64>())
        .fold(0.0, f64::max);
    let quant: f64 =
        qv.chunks(dim).map(|t| t.iter().fold(0f32, |m, x| m.max(x.abs())) as f64 / 32639.0 / 2.0 * l1_max).sum();
    let s_mass = bound(qv, &deq, dim) / (1.01 * (dim + qv.len() / dim + 1) as f64);
    let tol_vnni = quant * 1.001 + 1.01 * (qv.len() / dim + 5) as f64 * s_mass + 1e-30;
    let q = Query::new(qv, dim);
    for k in Int8Kernel::available(dim) {
        let got = maxsim_int8_with(&q, &codes, &scales, k) as f64;
        let tol = if k == Int8Kernel::Widen { tol } else { tol_vnni };
        if (got - r).abs() > tol || got.is_nan() {
            return Err(format!("{k:?} int8 {shape}: {got} vs {r}, err {:e} > {tol:e}", (got - r).abs()));
        }
    }
    // The default path (what a segment uses) is one of them.
    let got = maxsim_stored(Repr::plain(TokenType::Int8), &q, e.view()) as f64;
    if (got - r).abs() > tol.max(tol_vnni) {
        return Err(format!("default int8 {shape}: {got} vs {r}"));
    }
    Ok(())
}

fn check_screen(qv: &[f32], dv: &[f32], dim: usize) -> Result<(), String> {
    let want = naive_screen(qv, dv, dim);
    let mut codes = Vec::new();
    sign_codes(dv, dim, &mut codes);
    for k in CodeKernel::available(dim) {
        let got = hamming_maxsim(&CodeQuery::with_kernel(qv, dim, k), &codes);
        if got != want {
            return Err(format!("{k:?} nq={} nd={} dim={dim}: {got} vs {want}", qv.len() / dim, dv.len() / dim));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn int8_kernels_match_f64_reference(nq in 1usize..40, nd in 1usize..30, dim in 1usize..200, seed: u64) {
        let qv = rng_vec(seed, nq * dim);
        let dv = rng_vec(seed ^ 0xABCD, nd * dim);
        prop_assert_eq!(check_int8(&qv, &dv, dim), Ok(()));
    }

    #[test]
    fn screening_kernels_match_sign_maxsim(nq in 1usize..40, nd in 1usize..30, dim in 1usize..600, seed: u64) {
        let qv = rng_vec(seed, nq * dim);
        let dv = rng_vec(seed ^ 0x1234, nd * dim);
        prop_assert_eq!(check_screen(&qv, &dv, dim), Ok(()));
    }
}

#[test]
fn int8_edge_cases() {
    // All-zero tokens (scale 0), one huge value, f16 extremes, and the shapes
    // at the AVX2 tile (6) and AVX-512 tile (12) boundaries with dim 8 and 128.
    let mut d = vec![0.0f32; 3 * 8];
    d[9] = 65504.0;
    d[17] = -65504.0;
    check_int8(&rng_vec(1, 2 * 8), &d, 8).unwrap();
    let vnni = Int8Kernel::available(128);
    if vnni.len() < 3 {
        eprintln!("note: this CPU runs only these int8 kernels, the others are compiled but untested here: {vnni:?}");
    }
    for nd in [5, 6, 7, 11, 12, 13, 25] {
        for dim in [8, 12, 128] {
            check_int8(&rng_vec(nd as u64, 33 * dim), &rng_vec(99, nd * dim), dim).unwrap();
        }
    }
}

#[test]
fn screening_kernels_at_every_word_count_the_wide_path_takes() {
    let avail = CodeKernel::available(128);
    if !avail.contains(&CodeKernel::Avx512Vpopcntdq) {
        eprintln!("skipped: this CPU lacks AVX-512 VPOPCNTDQ; the portable and POPCNT paths are tested");
    }
    for dim in [1, 63, 64, 65, 127, 128, 200, 256, 300, 512, 513] {
        for nq in [1, 3, 4, 5, 16, 17, 33] {
            check_screen(&rng_vec(dim as u64, nq * dim), &rng_vec(7, 9 * dim), dim).unwrap();
        }
    }
}

#[test]
fn token_matrix_top_k_and_screening_match_brute_force() {
    let dim = 16;
    let lens = [3usize, 1, 7, 12, 5, 9, 2, 13, 6, 4];
    let mut offsets = vec![0u64];
    for l in lens {
        offsets.push(offsets.last().unwrap() + l as u64);
    }
    let n = *offsets.last().unwrap() as usize;
    let values = halves(&rng_vec(5, n * dim));
    let qv = rng_vec(6, 4 * dim);
    let q = Query::new(&qv, dim);
    let cq = CodeQuery::new(&qv, dim);
    for t in TokenType::ALL {
        let tables = Tables::new(t, &values, dim);
        let e = tables.encode(t, Screening::Binary, &values, dim);
        let m = TokenMatrix {
            repr: tables.repr(t, dim),
            screening: Screening::Binary,
            dim,
            rows: &e.rows,
            scales: &e.scales,
            codes: &e.codes,
            offsets: &offsets,
        };
        let docs: Vec<u32> = (0..lens.len() as u32).collect();
        let deq = |i: u32| m.decode(i);
        let mut want: Vec<(f64, u32)> = docs.iter().map(|&d| (maxsim_f64(&qv, &deq(d), dim), d)).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let got: Vec<u32> = m.top_k(&q, &docs, 4).iter().map(|h| h.key).collect();
        assert_eq!(got, want[..4].iter().map(|w| w.1).collect::<Vec<_>>(), "{t:?}");
        let f32_values: Vec<f32> = values.iter().map(|x| x.to_f32()).collect();
        let doc_vals = |d: u32| &f32_values[offsets[d as usize] as usize * dim..offsets[d as usize + 1] as usize * dim];
        let mut want: Vec<(f32, u32)> = docs.iter().map(|&d| (naive_screen(&qv, doc_vals(d), dim), d)).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let got: Vec<(f32, u32)> = m.screen_top_k(&cq, &docs, 5).iter().map(|h| (h.score, h.key)).collect();
        assert_eq!(got, want[..5].to_vec(), "{t:?}");
    }
}

/// Batched int8 scoring with every int8 kernel equals each query alone, and
/// a matrix's batched top-k and scores equal its one-query ones.
#[test]
fn batched_int8_and_matrix_scoring_equal_one_query_at_a_time() {
    for dim in [16usize, 96, 128, 30] {
        let lens = [3usize, 1, 7, 40, 5, 9, 2, 13, 6, 25, 4, 300, 12];
        let mut offsets = vec![0u64];
        for l in lens {
            offsets.push(offsets.last().unwrap() + l as u64);
        }
        let n = *offsets.last().unwrap() as usize;
        let values = halves(&rng_vec(dim as u64, n * dim));
        let qvs: Vec<Vec<f32>> = [11usize, 32, 1, 17, 5].iter().map(|&t| rng_vec(t as u64 + 9, t * dim)).collect();
        let qs: Vec<Query> = qvs.iter().map(|v| Query::new(v, dim)).collect();
        let b = QueryBatch::new(&qs.iter().collect::<Vec<_>>());
        let docs: Vec<u32> = (0..lens.len() as u32).rev().collect();
        for t in TokenType::ALL {
            let tables = Tables::new(t, &values, dim);
            let e = tables.encode(t, Screening::None, &values, dim);
            let m = TokenMatrix {
                repr: tables.repr(t, dim),
                screening: Screening::None,
                dim,
                rows: &e.rows,
                scales: &e.scales,
                codes: &e.codes,
                offsets: &offsets,
            };
            if t == TokenType::Int8 {
                for k in Int8Kernel::available(dim) {
                    for &d in &docs {
                        let doc = m.doc(d);
                        let codes: &[i8] = bytemuck::cast_slice(doc.rows);
                        let mut out = vec![0f32; qs.len()];
                        maxsim_int8_batch_with(&b, codes, doc.scales, k, &mut out);
                        for (q, got) in qs.iter().zip(&out) {
                            assert_eq!(*got, maxsim_int8_with(q, codes, doc.scales, k), "{k:?} dim {dim} doc {d}");
                        }
                    }
                }
            }
            let mut scores = vec![0f32; docs.len() * qs.len()];
            m.score_batch(&b, &docs, &mut scores);
            for (i, &d) in docs.iter().enumerate() {
                for (j, q) in qs.iter().enumerate() {
                    assert_eq!(scores[i * qs.len() + j], maxsim_stored(m.repr, q, m.doc(d)), "{t:?} dim {dim}");
                }
            }
            for k in [1usize, 5, 12, 20] {
                let got = m.top_k_batch(&b, &docs, k);
                for (q, g) in qs.iter().zip(&got) {
                    assert_eq!(*g, m.top_k(q, &docs, k), "{t:?} dim {dim} k {k}");
                }
            }
        }
    }
}
