//! Residual tokens (issue #28; storage-format/SPEC.md "Residual tokens"): a
//! token stored as the centroid it is coded with plus, per dimension, the
//! bucket its residual falls in, 2 or 4 bits each. A token's value `k` is
//! `centroid[code][k] + weights[k][bucket_k]`.
//!
//! This module owns the arithmetic: learning the per-dimension bucket
//! tables from residual samples, coding a token's residual, decoding rows
//! to f32 (portable, AVX2 and AVX-512 paths — for 2 bits the SIMD ones pick
//! each weight by a tree of blends on the bucket's bits, for 4 bits they
//! gather it, whichever measured faster — each equal to the portable one bit
//! for bit: a decode is one f32 addition per value),
//! and MaxSim over
//! the decoded values (the f32 kernel on rows decoded a block at a time).

use crate::Query;

/// Bits per dimension of the residual types.
pub const BITS: [u32; 2] = [2, 4];

/// TOKENS bytes of one residual row: the u16 centroid code, then the
/// buckets packed little-end first.
pub fn row_bytes(bits: u32, dim: usize) -> usize {
    2 + (dim * bits as usize).div_ceil(8)
}

/// What decoding needs: the codebook's centroids and the residual tables.
#[derive(Debug, Clone, Copy)]
pub struct Codec<'a> {
    pub bits: u32,
    pub dim: usize,
    /// `k × dim` f32, row-major.
    pub centroids: &'a [f32],
    /// `dim × (2^bits − 1)` f32, increasing within each dimension.
    pub cutoffs: &'a [f32],
    /// `dim × 2^bits` f32: the value each bucket stands for.
    pub weights: &'a [f32],
    /// The same weights bucket-major (`2^bits × dim`, [`by_bucket`]): what
    /// the SIMD decodes load as vectors.
    pub weights_by_bucket: &'a [f32],
}

/// `weights` (`dim × 2^bits`) bucket-major: bucket `b`'s weights of
/// consecutive dimensions consecutive (`2^bits × dim`).
pub fn by_bucket(weights: &[f32], dim: usize, bits: u32) -> Vec<f32> {
    let nb = 1usize << bits;
    assert_eq!(weights.len(), dim * nb);
    let mut t = vec![0f32; nb * dim];
    for k in 0..dim {
        for b in 0..nb {
            t[b * dim + k] = weights[k * nb + b];
        }
    }
    t
}

/// Per-dimension bucket tables learned from `residuals` (`m × dim`,
/// row-major, m ≥ 1): cutoffs at the quantiles `i / 2^bits` of each
/// dimension's sorted values (index `⌊i·m / 2^bits⌋`), and each bucket's
/// weight the mean of the values in it (its midpoint quantile when none
/// is). Deterministic: sorting by `total_cmp`, sums in f64 in order.
pub fn train_tables(residuals: &[f32], dim: usize, bits: u32) -> (Vec<f32>, Vec<f32>) {
    assert!(BITS.contains(&bits) && dim > 0 && !residuals.is_empty() && residuals.len().is_multiple_of(dim));
    let m = residuals.len() / dim;
    let nb = 1usize << bits;
    let mut cutoffs = Vec::with_capacity(dim * (nb - 1));
    let mut weights = Vec::with_capacity(dim * nb);
    let mut col = vec![0f32; m];
    for k in 0..dim {
        for (i, c) in col.iter_mut().enumerate() {
            *c = residuals[i * dim + k];
        }
        col.sort_by(f32::total_cmp);
        let cut: Vec<f32> = (1..nb).map(|i| col[(i * m / nb).min(m - 1)]).collect();
        for b in 0..nb {
            // Bucket b holds the values v with (cuts ≤ v) == b: sorted, a run.
            let lo = if b == 0 { 0 } else { col.partition_point(|&v| v < cut[b - 1]) };
            let hi = if b == nb - 1 { m } else { col.partition_point(|&v| v < cut[b]) };
            let w = if hi > lo {
                (col[lo..hi].iter().map(|&v| v as f64).sum::<f64>() / (hi - lo) as f64) as f32
            } else {
                col[((2 * b + 1) * m / (2 * nb)).min(m - 1)]
            };
            weights.push(w);
        }
        cutoffs.extend(cut);
    }
    (cutoffs, weights)
}

impl Codec<'_> {
    fn buckets(&self) -> usize {
        1 << self.bits
    }

    /// Appends the stored row of token `x` (dim values) coded with centroid `code`.
    pub fn encode_row(&self, x: &[f32], code: u16, out: &mut Vec<u8>) {
        self.check();
        let (dim, bits, nb) = (self.dim, self.bits as usize, self.buckets());
        assert_eq!(x.len(), dim);
        let c = &self.centroids[code as usize * dim..(code as usize + 1) * dim];
        out.extend_from_slice(&code.to_le_bytes());
        let start = out.len();
        out.resize(start + (dim * bits).div_ceil(8), 0);
        for k in 0..dim {
            let r = x[k] - c[k];
            let cuts = &self.cutoffs[k * (nb - 1)..(k + 1) * (nb - 1)];
            let b = cuts.iter().filter(|&&t| t <= r).count() as u8;
            out[start + k * bits / 8] |= b << (k * bits % 8);
        }
    }

    /// The tables' sizes agree with `bits` and `dim` (what the SIMD paths'
    /// unchecked gathers rely on).
    fn check(&self) {
        assert!(BITS.contains(&self.bits) && self.dim > 0, "bits must be 2 or 4 and dim positive");
        assert_eq!(self.weights.len(), self.dim << self.bits, "weights: dim × 2^bits");
        assert_eq!(self.weights_by_bucket.len(), self.weights.len(), "weights_by_bucket: 2^bits × dim");
        assert_eq!(self.cutoffs.len(), self.dim * ((1 << self.bits) - 1), "cutoffs: dim × (2^bits − 1)");
        assert!(!self.centroids.is_empty() && self.centroids.len().is_multiple_of(self.dim), "centroids: k × dim");
    }

    /// Decodes `rows` (whole stored rows) into `out` (`rows × dim` f32).
    ///
    /// # Panics
    /// If the tables do not fit `bits` and `dim`, a row's code has no
    /// centroid, or the lengths do not match.
    pub fn decode(&self, rows: &[u8], out: &mut [f32]) {
        self.check();
        let rb = row_bytes(self.bits, self.dim);
        assert!(rows.len().is_multiple_of(rb) && out.len() == rows.len() / rb * self.dim);
        #[cfg(target_arch = "x86_64")]
        if self.dim.is_multiple_of(16) && crate::x86::has_avx512() && is_x86_feature_detected!("bmi2") {
            // SAFETY: AVX-512F and BMI2 are available (checked above).
            return unsafe {
                match self.bits {
                    2 => self.decode2_avx512(rows, out),
                    _ => self.decode4_avx512(rows, out),
                }
            };
        }
        #[cfg(target_arch = "x86_64")]
        if self.dim.is_multiple_of(8) && crate::x86::has_avx2() {
            // SAFETY: AVX2 is available (checked above).
            return unsafe {
                match self.bits {
                    2 => self.decode2_avx2(rows, out),
                    _ => self.decode4_avx2(rows, out),
                }
            };
        }
        self.decode_portable(rows, out)
    }

    /// Each stored row with its centroid (`dim` values), its packed buckets
    /// and the `dim` output values it decodes into.
    fn rows<'r>(
        &'r self,
        rows: &'r [u8],
        out: &'r mut [f32],
    ) -> impl Iterator<Item = (&'r [f32], &'r [u8], &'r mut [f32])> + 'r {
        let dim = self.dim;
        rows.chunks_exact(row_bytes(self.bits, dim)).zip(out.chunks_exact_mut(dim)).map(move |(row, o)| {
            let code = u16::from_le_bytes([row[0], row[1]]) as usize;
            (&self.centroids[code * dim..(code + 1) * dim], &row[2..], o)
        })
    }

    /// The portable decode, the reference of the others.
    pub fn decode_portable(&self, rows: &[u8], out: &mut [f32]) {
        self.check();
        let (bits, nb) = (self.bits as usize, self.buckets());
        let mask = (1u8 << bits) - 1;
        for (c, packed, o) in self.rows(rows, out) {
            for (k, v) in o.iter_mut().enumerate() {
                let b = (packed[k * bits / 8] >> (k * bits % 8)) & mask;
                *v = c[k] + self.weights[k * nb + b as usize];
            }
        }
    }

    /// 2 bits, 8 dimensions at a time: each bucket widened to an i32 lane,
    /// the weight picked among the 4 bucket vectors by blends on its two
    /// bits (measured faster than gathers for 2 bits).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn decode2_avx2(&self, rows: &[u8], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let (dim, t) = (self.dim, self.weights_by_bucket);
        // Lane j of 8 dimensions: its field's shift within their 16 bits.
        let shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        let (one, two) = (_mm256_set1_epi32(1), _mm256_set1_epi32(2));
        for (c, packed, o) in self.rows(rows, out) {
            for k0 in (0..dim).step_by(8) {
                let at = k0 / 4;
                let word = u16::from_le_bytes([packed[at], packed[at + 1]]) as i32;
                let b = _mm256_srlv_epi32(_mm256_set1_epi32(word), shifts);
                let set = |m| _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, m), m));
                // SAFETY: bucket i's row of `t` has dim ≥ k0 + 8 values.
                let w = |i: usize| unsafe { _mm256_loadu_ps(t.as_ptr().add(i * dim + k0)) };
                let (low, high) = (set(one), set(two));
                let v = _mm256_blendv_ps(_mm256_blendv_ps(w(0), w(1), low), _mm256_blendv_ps(w(2), w(3), low), high);
                // SAFETY: k0 + 8 ≤ dim for the centroid row and the output row.
                unsafe {
                    _mm256_storeu_ps(o.as_mut_ptr().add(k0), _mm256_add_ps(_mm256_loadu_ps(c.as_ptr().add(k0)), v))
                };
            }
        }
    }

    /// 2 bits, 16 dimensions at a time, as the AVX2 path, each of the two
    /// bits of the 16 buckets gathered into a mask register (BMI2 `pext`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,bmi2")]
    unsafe fn decode2_avx512(&self, rows: &[u8], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let (dim, t) = (self.dim, self.weights_by_bucket);
        for (c, packed, o) in self.rows(rows, out) {
            for k0 in (0..dim).step_by(16) {
                let at = k0 / 4;
                let word = u32::from_le_bytes([packed[at], packed[at + 1], packed[at + 2], packed[at + 3]]);
                let (low, high) =
                    (_pext_u32(word, 0x5555_5555) as __mmask16, _pext_u32(word, 0xAAAA_AAAA) as __mmask16);
                // SAFETY: bucket i's row of `t` has dim ≥ k0 + 16 values.
                let w = |i: usize| unsafe { _mm512_loadu_ps(t.as_ptr().add(i * dim + k0)) };
                let v = _mm512_mask_blend_ps(
                    high,
                    _mm512_mask_blend_ps(low, w(0), w(1)),
                    _mm512_mask_blend_ps(low, w(2), w(3)),
                );
                // SAFETY: k0 + 16 ≤ dim for the centroid row and the output row.
                unsafe {
                    _mm512_storeu_ps(o.as_mut_ptr().add(k0), _mm512_add_ps(_mm512_loadu_ps(c.as_ptr().add(k0)), v))
                };
            }
        }
    }

    /// 4 bits, 8 dimensions at a time: each bucket widened to an i32 lane,
    /// the weight gathered from the dimension-major table (measured faster
    /// than a tree of 15 blends over 16 bucket vectors).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn decode4_avx2(&self, rows: &[u8], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let dim = self.dim;
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let shifts = _mm256_slli_epi32::<2>(lanes);
        let mask = _mm256_set1_epi32(15);
        for (c, packed, o) in self.rows(rows, out) {
            for k0 in (0..dim).step_by(8) {
                let at = k0 / 2;
                let word = i32::from_le_bytes([packed[at], packed[at + 1], packed[at + 2], packed[at + 3]]);
                let b = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word), shifts), mask);
                let k = _mm256_add_epi32(lanes, _mm256_set1_epi32(k0 as i32));
                let idx = _mm256_add_epi32(_mm256_slli_epi32::<4>(k), b);
                // SAFETY: every index is k·16 + b < dim·16, the weights' length (checked).
                let w = unsafe { _mm256_i32gather_ps::<4>(self.weights.as_ptr(), idx) };
                // SAFETY: k0 + 8 ≤ dim for the centroid row and the output row.
                unsafe {
                    _mm256_storeu_ps(o.as_mut_ptr().add(k0), _mm256_add_ps(_mm256_loadu_ps(c.as_ptr().add(k0)), w))
                };
            }
        }
    }

    /// 4 bits, 16 dimensions at a time, as the AVX2 path; lanes 8..16 read
    /// the upper 32 bits of the 64 that hold the 16 fields.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2")]
    unsafe fn decode4_avx512(&self, rows: &[u8], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let dim = self.dim;
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let shifts = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
        let mask = _mm512_set1_epi32(15);
        for (c, packed, o) in self.rows(rows, out) {
            for k0 in (0..dim).step_by(16) {
                let at = k0 / 2;
                let half = |i: usize| i32::from_le_bytes(packed[at + i..at + i + 4].try_into().expect("4 bytes"));
                let words = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(half(0)), _mm512_set1_epi32(half(4)));
                let b = _mm512_and_si512(_mm512_srlv_epi32(words, shifts), mask);
                let k = _mm512_add_epi32(lanes, _mm512_set1_epi32(k0 as i32));
                let idx = _mm512_add_epi32(_mm512_slli_epi32::<4>(k), b);
                // SAFETY: every index is k·16 + b < dim·16, the weights' length (checked).
                let w = unsafe { _mm512_i32gather_ps::<4>(idx, self.weights.as_ptr()) };
                // SAFETY: k0 + 16 ≤ dim for the centroid row and the output row.
                unsafe {
                    _mm512_storeu_ps(o.as_mut_ptr().add(k0), _mm512_add_ps(_mm512_loadu_ps(c.as_ptr().add(k0)), w))
                };
            }
        }
    }

    /// MaxSim of `q` against one document's stored rows: decoded a block of
    /// rows at a time into a scratch buffer and scored by the f32 kernel.
    pub fn maxsim(&self, q: &Query, rows: &[u8]) -> f32 {
        const BLOCK: usize = 256;
        let rb = row_bytes(self.bits, self.dim);
        let n = rows.len() / rb;
        SCRATCH.with_borrow_mut(|buf| {
            buf.resize(n.min(BLOCK) * self.dim, 0.0);
            if n <= BLOCK {
                self.decode(rows, &mut buf[..n * self.dim]);
                return crate::maxsim(q, &buf[..n * self.dim]);
            }
            // A long document: the kernel's maxima over blocks, combined per query token.
            let mut best = vec![f32::NEG_INFINITY; q.n_tokens()];
            for block in rows.chunks(BLOCK * rb) {
                let m = block.len() / rb;
                self.decode(block, &mut buf[..m * self.dim]);
                crate::kernel::maxima(q, &buf[..m * self.dim], &mut best);
            }
            best.iter().sum()
        })
    }
}

impl Codec<'_> {
    /// MaxSim of every query of `b` against one document's stored rows, into
    /// `out`: the rows decoded once, then the f32 multi-query kernel.
    pub fn maxsim_batch(&self, b: &crate::QueryBatch, rows: &[u8], out: &mut [f32]) {
        let n = rows.len() / row_bytes(self.bits, self.dim);
        SCRATCH.with_borrow_mut(|buf| {
            buf.resize(n * self.dim, 0.0);
            self.decode(rows, &mut buf[..n * self.dim]);
            crate::maxsim_batch(b, &buf[..n * self.dim], out)
        })
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::maxsim_f64;

    use crate::bench::SplitMix64 as Rng;

    impl Rng {
        fn f(&mut self) -> f32 {
            self.next_f32()
        }
    }

    /// A codec over `k` random centroids with tables trained on random residuals.
    fn codec_parts(bits: u32, dim: usize, k: usize, rng: &mut Rng) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let centroids: Vec<f32> = (0..k * dim).map(|_| rng.f()).collect();
        // Residuals of spread growing with the dimension (as a PCA's do, in reverse).
        let res: Vec<f32> = (0..500 * dim).map(|i| rng.f() * 0.05 * (1 + i % dim) as f32 / dim as f32).collect();
        let (cutoffs, weights) = train_tables(&res, dim, bits);
        (centroids, cutoffs, weights)
    }

    #[test]
    fn tables_are_quantiles_and_bucket_means() {
        // One dimension, values 0..100: 4 buckets cut at 25, 50, 75; means 12, 37, 62, 87.
        let v: Vec<f32> = (0..100).rev().map(|i| i as f32).collect();
        let (c, w) = train_tables(&v, 1, 2);
        assert_eq!(c, [25.0, 50.0, 75.0]);
        assert_eq!(w, [12.0, 37.0, 62.0, 87.0]);
    }

    #[test]
    fn encoding_picks_the_bucket_by_cutoffs_and_decoding_gives_its_weight() {
        let mut rng = Rng(3);
        for bits in BITS {
            for dim in [3, 8, 16, 24, 128] {
                let (centroids, cutoffs, weights) = codec_parts(bits, dim, 5, &mut rng);
                let t = by_bucket(&weights, dim, bits);
                let codec = Codec {
                    bits,
                    dim,
                    centroids: &centroids,
                    cutoffs: &cutoffs,
                    weights: &weights,
                    weights_by_bucket: &t,
                };
                let nb = 1usize << bits;
                let tokens: Vec<f32> = (0..7 * dim).map(|_| rng.f()).collect();
                let mut rows = Vec::new();
                for (t, x) in tokens.chunks(dim).enumerate() {
                    codec.encode_row(x, (t % 5) as u16, &mut rows);
                }
                assert_eq!(rows.len(), 7 * row_bytes(bits, dim));
                let mut got = vec![0f32; 7 * dim];
                codec.decode(&rows, &mut got);
                let mut portable = vec![0f32; 7 * dim];
                codec.decode_portable(&rows, &mut portable);
                assert_eq!(got, portable, "bits {bits}, dim {dim}: the SIMD decode is the portable one");
                // Naively: the bucket is the count of cutoffs ≤ the residual, the value its weight.
                for (t, x) in tokens.chunks(dim).enumerate() {
                    let c = t % 5;
                    for k in 0..dim {
                        let r = x[k] - centroids[c * dim + k];
                        let b = (0..nb - 1).filter(|&i| cutoffs[k * (nb - 1) + i] <= r).count();
                        let want = centroids[c * dim + k] + weights[k * nb + b];
                        assert_eq!(got[t * dim + k], want, "bits {bits}, dim {dim}, token {t}, k {k}");
                    }
                }
            }
        }
    }

    /// Each SIMD decode this CPU runs (whichever `decode` would not pick too)
    /// equals the portable one, bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_simd_decode_is_the_portable_one() {
        let mut rng = Rng(5);
        let (avx2, avx512) = (crate::x86::has_avx2(), crate::x86::has_avx512() && is_x86_feature_detected!("bmi2"));
        if !avx2 {
            eprintln!("skipped: this CPU has no AVX2 (nor AVX-512)");
            return;
        }
        if !avx512 {
            eprintln!("the AVX-512 decode is not tested: this CPU lacks AVX-512F or BMI2");
        }
        for bits in BITS {
            for dim in [16, 32, 48, 128, 256] {
                let (centroids, cutoffs, weights) = codec_parts(bits, dim, 7, &mut rng);
                let t = by_bucket(&weights, dim, bits);
                let codec = Codec {
                    bits,
                    dim,
                    centroids: &centroids,
                    cutoffs: &cutoffs,
                    weights: &weights,
                    weights_by_bucket: &t,
                };
                let tokens: Vec<f32> = (0..40 * dim).map(|_| rng.f() * 1.5).collect();
                let mut rows = Vec::new();
                for (t, x) in tokens.chunks(dim).enumerate() {
                    codec.encode_row(x, (t % 7) as u16, &mut rows);
                }
                let mut want = vec![0f32; 40 * dim];
                codec.decode_portable(&rows, &mut want);
                let mut got = vec![0f32; 40 * dim];
                // SAFETY: AVX2 checked above.
                unsafe {
                    match bits {
                        2 => codec.decode2_avx2(&rows, &mut got),
                        _ => codec.decode4_avx2(&rows, &mut got),
                    }
                };
                assert_eq!(got, want, "avx2, bits {bits}, dim {dim}");
                if avx512 {
                    got.fill(0.0);
                    // SAFETY: AVX-512F and BMI2 checked above.
                    unsafe {
                        match bits {
                            2 => codec.decode2_avx512(&rows, &mut got),
                            _ => codec.decode4_avx512(&rows, &mut got),
                        }
                    };
                    assert_eq!(got, want, "avx512, bits {bits}, dim {dim}");
                }
            }
        }
    }

    #[test]
    fn maxsim_is_the_reference_over_the_decoded_values() {
        let mut rng = Rng(11);
        for bits in BITS {
            for (dim, n) in [(16, 1), (128, 37), (128, 300), (24, 600), (96, 9)] {
                let (centroids, cutoffs, weights) = codec_parts(bits, dim, 9, &mut rng);
                let t = by_bucket(&weights, dim, bits);
                let codec = Codec {
                    bits,
                    dim,
                    centroids: &centroids,
                    cutoffs: &cutoffs,
                    weights: &weights,
                    weights_by_bucket: &t,
                };
                let tokens: Vec<f32> = (0..n * dim).map(|_| rng.f()).collect();
                let mut rows = Vec::new();
                for (t, x) in tokens.chunks(dim).enumerate() {
                    codec.encode_row(x, (t * 7 % 9) as u16, &mut rows);
                }
                let mut decoded = vec![0f32; n * dim];
                codec.decode_portable(&rows, &mut decoded);
                for nq in [1, 5, 32] {
                    let qv: Vec<f32> = (0..nq * dim).map(|_| rng.f()).collect();
                    let q = Query::new(&qv, dim);
                    let want = maxsim_f64(&qv, &decoded, dim);
                    let got = codec.maxsim(&q, &rows) as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "bits {bits} dim {dim} n {n} nq {nq}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
