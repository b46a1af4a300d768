//! The encoder's linear layers, `Y = X · Wᵀ + b`, with `W` packed once at
//! load (so no call re-packs the weights, which for a short query cost more
//! than the arithmetic) and AVX-512, AVX2 + FMA and portable paths chosen at
//! run time.
//!
//! Packing: the `N` output columns are cut into panels of [`NR`] (the last
//! zero-padded); a panel stores `W[j][k]` for its columns at
//! `panel[k · NR + j]`, so the microkernel reads one contiguous row of `NR`
//! weights per step of `k` and broadcasts one value of each of its `MR` rows
//! of `X`. Rows of `X` are processed in blocks of [`MB`] (in parallel on the
//! caller's rayon pool); each block sweeps every panel, so a block of `X`
//! stays in cache while the panels stream. Each output is one f32 FMA chain
//! over `k` in order, then the bias.
//!
//! Tested against an f64 reference on random shapes, remainders included.

use rayon::prelude::*;

/// Output columns per panel: two AVX-512 registers.
pub(crate) const NR: usize = 32;
/// Rows of `X` per parallel block.
const MB: usize = 48;

/// A weight matrix `W` `(n, k)` packed in panels, and its bias.
pub(crate) struct Packed {
    pub n: usize,
    pub k: usize,
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl Packed {
    /// Packs `w` (`n × k`, row-major) and `bias` (`n` values, or none: zero).
    pub fn new(w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Packed {
        assert_eq!(w.len(), n * k);
        let count = n.div_ceil(NR);
        let mut panels = vec![0f32; count * k * NR];
        for (j, row) in w.chunks_exact(k).enumerate() {
            let panel = &mut panels[(j / NR) * k * NR..];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * NR + j % NR] = v;
            }
        }
        let bias = bias.map_or_else(|| vec![0f32; n], <[f32]>::to_vec);
        Packed { n, k, panels, bias }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.panels[p * self.k * NR..(p + 1) * self.k * NR]
    }

    /// `X · Wᵀ + b` for `x` (`m × k`, row-major): `m × n`, row-major.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len() % self.k.max(1), 0);
        let m = x.len() / self.k.max(1);
        let mut y = vec![0f32; m * self.n];
        let kernel = Kernel::detect();
        if m <= MB {
            // Few rows (a query): the panels are the parallel work.
            let panels = self.n.div_ceil(NR);
            let cols: Vec<Vec<f32>> = (0..panels).into_par_iter().map(|p| self.block(kernel, x, m, p..p + 1)).collect();
            for (p, c) in cols.iter().enumerate() {
                let w = (self.n - p * NR).min(NR);
                for r in 0..m {
                    y[r * self.n + p * NR..r * self.n + p * NR + w].copy_from_slice(&c[r * w..(r + 1) * w]);
                }
            }
        } else {
            y.par_chunks_mut(MB * self.n).zip(x.par_chunks(MB * self.k)).for_each(|(yb, xb)| {
                let rows = xb.len() / self.k;
                yb.copy_from_slice(&self.block(kernel, xb, rows, 0..self.n.div_ceil(NR)));
            });
        }
        y
    }

    /// Rows `x` (`m × k`) against panels `panels`: `m × cols`, row-major,
    /// where `cols` are the panels' valid columns.
    fn block(&self, kernel: Kernel, x: &[f32], m: usize, panels: std::ops::Range<usize>) -> Vec<f32> {
        let first = panels.start * NR;
        let cols = (self.n.min(panels.end * NR)) - first;
        let mut out = vec![0f32; m * cols];
        let mut tile = [0f32; MR_MAX * NR];
        for p in panels {
            let panel = self.panel(p);
            let width = (self.n - p * NR).min(NR);
            let mut r = 0;
            while r < m {
                let rows = (m - r).min(kernel.mr());
                kernel.tile(&x[r * self.k..(r + rows) * self.k], rows, self.k, panel, &mut tile);
                for i in 0..rows {
                    let dst = &mut out[(r + i) * cols + p * NR - first..][..width];
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = tile[i * NR + j] + self.bias[p * NR + j];
                    }
                }
                r += rows;
            }
        }
        out
    }
}

/// The most rows any kernel computes at once.
const MR_MAX: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// Every kernel this CPU runs (for tests).
    #[cfg(test)]
    pub fn available() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                all.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Kernel::Avx512);
            }
        }
        all
    }

    fn mr(self) -> usize {
        match self {
            Kernel::Portable => 4,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 3,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => 6,
        }
    }

    /// `tile[i · NR + j] = Σ_k x[i · k_len + k] · panel[k · NR + j]` for
    /// `rows ≤ self.mr()` rows.
    fn tile(self, x: &[f32], rows: usize, k_len: usize, panel: &[f32], tile: &mut [f32; MR_MAX * NR]) {
        assert!(rows <= self.mr() && x.len() == rows * k_len && panel.len() == k_len * NR);
        match self {
            Kernel::Portable => portable(x, rows, k_len, panel, tile),
            // SAFETY: detect() chose this kernel only where the CPU has the
            // features it is compiled for; the slices' lengths are checked above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::avx2(x, rows, k_len, panel, tile) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { x86::avx512(x, rows, k_len, panel, tile) },
        }
    }
}

fn portable(x: &[f32], rows: usize, k_len: usize, panel: &[f32], tile: &mut [f32; MR_MAX * NR]) {
    for i in 0..rows {
        let acc = &mut tile[i * NR..(i + 1) * NR];
        acc.fill(0.0);
        for (k, w) in panel.chunks_exact(NR).enumerate() {
            let v = x[i * k_len + k];
            for (a, &w) in acc.iter_mut().zip(w) {
                *a = v.mul_add(w, *a);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR_MAX, NR};
    use std::arch::x86_64::*;

    /// Up to 6 rows × 32 columns in 12 zmm accumulators.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(x: &[f32], rows: usize, k_len: usize, panel: &[f32], tile: &mut [f32; MR_MAX * NR]) {
        // SAFETY: each arm passes on the caller's contract, with R = rows.
        unsafe {
            match rows {
                1 => avx512_rows::<1>(x, k_len, panel, tile),
                2 => avx512_rows::<2>(x, k_len, panel, tile),
                3 => avx512_rows::<3>(x, k_len, panel, tile),
                4 => avx512_rows::<4>(x, k_len, panel, tile),
                5 => avx512_rows::<5>(x, k_len, panel, tile),
                _ => avx512_rows::<6>(x, k_len, panel, tile),
            }
        }
    }

    /// `R` rows, a constant: the accumulators stay in registers.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_rows<const R: usize>(x: &[f32], k_len: usize, panel: &[f32], tile: &mut [f32; MR_MAX * NR]) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let xp = x.as_ptr();
        let wp = panel.as_ptr();
        for k in 0..k_len {
            // SAFETY: k < k_len, and panel holds k_len rows of NR values.
            let (w0, w1) = unsafe { (_mm512_loadu_ps(wp.add(k * NR)), _mm512_loadu_ps(wp.add(k * NR + 16))) };
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: i < R and x holds R × k_len values.
                let v = _mm512_set1_ps(unsafe { *xp.add(i * k_len + k) });
                a[0] = _mm512_fmadd_ps(v, w0, a[0]);
                a[1] = _mm512_fmadd_ps(v, w1, a[1]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: the tile holds MR_MAX ≥ R rows of NR values.
            unsafe {
                _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR), a[0]);
                _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR + 16), a[1]);
            }
        }
    }

    /// Up to 3 rows × 32 columns in 12 ymm accumulators.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(x: &[f32], rows: usize, k_len: usize, panel: &[f32], tile: &mut [f32; MR_MAX * NR]) {
        // SAFETY: each arm passes on the caller's contract, with R = rows.
        unsafe {
            match rows {
                1 => avx2_rows::<1>(x, k_len, panel, tile),
                2 => avx2_rows::<2>(x, k_len, panel, tile),
                _ => avx2_rows::<3>(x, k_len, panel, tile),
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_rows<const R: usize>(x: &[f32], k_len: usize, panel: &[f32], tile: &mut [f32; MR_MAX * NR]) {
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let xp = x.as_ptr();
        let wp = panel.as_ptr();
        for k in 0..k_len {
            // SAFETY: k < k_len, and panel holds k_len rows of NR values.
            let w = unsafe { [0, 8, 16, 24].map(|o| _mm256_loadu_ps(wp.add(k * NR + o))) };
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: i < R and x holds R × k_len values.
                let v = _mm256_set1_ps(unsafe { *xp.add(i * k_len + k) });
                for c in 0..4 {
                    a[c] = _mm256_fmadd_ps(v, w[c], a[c]);
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            for (c, v) in a.iter().enumerate() {
                // SAFETY: the tile holds MR_MAX ≥ R rows of NR values.
                unsafe { _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR + c * 8), *v) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_kernel_matches_an_f64_reference_on_ragged_shapes() {
        for (seed, &(m, n, k)) in
            [(1, 1, 1), (5, 7, 3), (6, 32, 16), (7, 33, 17), (49, 40, 24), (100, 96, 64), (13, 384, 130)]
                .iter()
                .enumerate()
        {
            let (x, w, b) =
                (random(m * k, seed as u64), random(n * k, 100 + seed as u64), random(n, 200 + seed as u64));
            let packed = Packed::new(&w, n, k, Some(&b));
            for kernel in Kernel::available() {
                let mut got = vec![0f32; m * n];
                // The chosen kernel through apply(); the others block by block.
                if kernel == Kernel::detect() {
                    got = packed.apply(&x);
                } else {
                    got.copy_from_slice(&packed.block(kernel, &x, m, 0..n.div_ceil(NR)));
                }
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 =
                            (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum::<f64>() + b[j] as f64;
                        let err = (got[i * n + j] as f64 - want).abs();
                        assert!(
                            err <= 1e-5 * k as f64,
                            "{kernel:?} {m}x{n}x{k} [{i},{j}]: {} vs {want}",
                            got[i * n + j]
                        );
                    }
                }
            }
        }
    }
}
