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
//! Where the CPU has AMX-BF16, the layers run on its tiles instead, with the
//! values split into bf16 limbs ([`crate::amx`]): weights packed in tile
//! layout once at load, rows split per call. `TESSERA_ENCODER_GEMM`
//! (`amx`, `avx512`, `avx2`, `portable`) picks a kernel by hand.
//!
//! Tested against an f64 reference on random shapes, remainders included.

use rayon::prelude::*;

/// Output columns per panel: two AVX-512 registers.
pub(crate) const NR: usize = 32;
/// Rows of `X` per parallel block.
const MB: usize = 48;
/// Rows of `X` per parallel block on AMX (a multiple of its 16-row tiles).
#[cfg(target_arch = "x86_64")]
const MB_AMX: usize = 256;

/// A weight matrix `W` `(n, k)` packed for one kernel, and its bias.
pub(crate) struct Packed {
    pub n: usize,
    pub k: usize,
    kernel: Kernel,
    /// The f32 kernels' panels (empty for AMX).
    panels: Vec<f32>,
    /// AMX: the weights in tiles.
    #[cfg(target_arch = "x86_64")]
    tiles: Option<crate::amx::Weights>,
    bias: Vec<f32>,
}

impl Packed {
    /// Packs `w` (`n × k`, row-major) and `bias` (`n` values, or none: zero)
    /// for the kernel this process uses ([`Kernel::chosen`]).
    pub fn new(w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Packed {
        Self::for_kernel(w, n, k, bias, Kernel::chosen().unwrap_or_else(|_| Kernel::detect()))
    }

    /// [`new`](Self::new) for `kernel`.
    pub fn for_kernel(w: &[f32], n: usize, k: usize, bias: Option<&[f32]>, kernel: Kernel) -> Packed {
        assert_eq!(w.len(), n * k);
        let bias = bias.map_or_else(|| vec![0f32; n], <[f32]>::to_vec);
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Amx {
            let tiles = Some(crate::amx::Weights::new(w, n, k));
            return Packed { n, k, kernel, panels: Vec::new(), tiles, bias };
        }
        let count = n.div_ceil(NR);
        let mut panels = vec![0f32; count * k * NR];
        for (j, row) in w.chunks_exact(k).enumerate() {
            let panel = &mut panels[(j / NR) * k * NR..];
            for (kk, &v) in row.iter().enumerate() {
                panel[kk * NR + j % NR] = v;
            }
        }
        #[cfg(target_arch = "x86_64")]
        return Packed { n, k, kernel, panels, tiles: None, bias };
        #[cfg(not(target_arch = "x86_64"))]
        Packed { n, k, kernel, panels, bias }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.panels[p * self.k * NR..(p + 1) * self.k * NR]
    }

    /// `X · Wᵀ + b` for `x` (`m × k`, row-major): `m × n`, row-major.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len() % self.k.max(1), 0);
        let m = x.len() / self.k.max(1);
        #[cfg(target_arch = "x86_64")]
        if let Some(w) = &self.tiles {
            return self.apply_amx(w, x, m);
        }
        let kernel = self.kernel;
        if m <= MB {
            // Few rows (a query): the panels are the parallel work.
            return self.by_panels(m, |p, c| self.block(kernel, x, m, p..p + 1, c));
        }
        let mut y = vec![0f32; m * self.n];
        y.par_chunks_mut(MB * self.n).zip(x.par_chunks(MB * self.k)).for_each(|(yb, xb)| {
            let rows = xb.len() / self.k;
            self.block(kernel, xb, rows, 0..self.n.div_ceil(NR), yb);
        });
        y
    }

    /// The `m × n` outputs of a few rows, each panel of [`NR`] columns
    /// computed by `panel(p, out)` (`m ×` its width) in parallel, then assembled.
    fn by_panels(&self, m: usize, panel: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
        let width = |p: usize| (self.n - p * NR).min(NR);
        let cols: Vec<Vec<f32>> = (0..self.n.div_ceil(NR))
            .into_par_iter()
            .map(|p| {
                let mut c = vec![0f32; m * width(p)];
                panel(p, &mut c);
                c
            })
            .collect();
        let mut y = vec![0f32; m * self.n];
        for (p, c) in cols.iter().enumerate() {
            let w = width(p);
            for r in 0..m {
                y[r * self.n + p * NR..r * self.n + p * NR + w].copy_from_slice(&c[r * w..(r + 1) * w]);
            }
        }
        y
    }

    /// [`apply`](Self::apply) on AMX tiles: the rows split into limbs once,
    /// then blocks of rows (or, for a few rows, column passes) in parallel.
    #[cfg(target_arch = "x86_64")]
    fn apply_amx(&self, w: &crate::amx::Weights, x: &[f32], m: usize) -> Vec<f32> {
        let rows = crate::amx::Rows::new(x, m, self.k);
        if m <= MB {
            return self.by_panels(m, |p, c| {
                // SAFETY: tiles are packed only for the Amx kernel, chosen only where
                // `amx::available()` said so; `rows` and `w` were made with this `k`.
                unsafe { crate::amx::block(&rows, w, &self.bias, self.n, 0..m, p..p + 1, c) }
            });
        }
        // Larger row blocks than the f32 kernels': each pass's weight tiles
        // are loaded into cache once per block.
        let mut y = vec![0f32; m * self.n];
        y.par_chunks_mut(MB_AMX * self.n).enumerate().for_each(|(i, yb)| {
            let r0 = i * MB_AMX;
            let r1 = r0 + yb.len() / self.n;
            // SAFETY: as above.
            unsafe { crate::amx::block(&rows, w, &self.bias, self.n, r0..r1, 0..self.n.div_ceil(NR), yb) };
        });
        y
    }

    /// Rows `x` (`m × k`) against panels `panels` into `out`: `m × cols`,
    /// row-major, where `cols` are the panels' valid columns.
    fn block(&self, kernel: Kernel, x: &[f32], m: usize, panels: std::ops::Range<usize>, out: &mut [f32]) {
        let first = panels.start * NR;
        let cols = (self.n.min(panels.end * NR)) - first;
        assert_eq!(out.len(), m * cols);
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
    /// AMX-BF16 tiles with the values in bf16 limbs ([`crate::amx`]).
    #[cfg(target_arch = "x86_64")]
    Amx,
}

impl Kernel {
    /// The kernel this process uses: `TESSERA_ENCODER_GEMM` when set (one
    /// this CPU runs, else an error naming the ones it does), else the fastest.
    pub fn chosen() -> Result<Kernel, String> {
        static CHOSEN: std::sync::OnceLock<Result<Kernel, String>> = std::sync::OnceLock::new();
        CHOSEN
            .get_or_init(|| match std::env::var("TESSERA_ENCODER_GEMM") {
                Err(_) => Ok(Kernel::detect()),
                Ok(name) => {
                    let runs = Kernel::runnable();
                    runs.iter().copied().find(|k| k.name() == name).ok_or_else(|| {
                        let names: Vec<&str> = runs.iter().map(|k| k.name()).collect();
                        format!("TESSERA_ENCODER_GEMM={name:?}: this CPU runs {}", names.join(", "))
                    })
                }
            })
            .clone()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => "amx",
        }
    }

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::amx::available() {
                return Kernel::Amx;
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// Every kernel this CPU runs.
    pub fn runnable() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                all.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Kernel::Avx512);
            }
            if crate::amx::available() {
                all.push(Kernel::Amx);
            }
        }
        all
    }

    /// Rows per microkernel call (the f32 kernels).
    fn mr(self) -> usize {
        match self {
            Kernel::Portable => 4,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => 3,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 | Kernel::Amx => 6,
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
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => unreachable!("AMX layers are packed in tiles, not panels"),
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
            [(1, 1, 1), (5, 7, 3), (6, 32, 16), (7, 33, 17), (49, 40, 24), (100, 96, 64), (13, 384, 130), (70, 50, 384)]
                .iter()
                .enumerate()
        {
            let (x, w, b) =
                (random(m * k, seed as u64), random(n * k, 100 + seed as u64), random(n, 200 + seed as u64));
            for kernel in Kernel::runnable() {
                let got = Packed::for_kernel(&w, n, k, Some(&b), kernel).apply(&x);
                for i in 0..m {
                    for j in 0..n {
                        let products = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64);
                        let want: f64 = products.clone().sum::<f64>() + b[j] as f64;
                        let size: f64 = products.map(f64::abs).sum();
                        // f32 sums; AMX adds its limbs' error, within 2⁻¹⁵ of each product (crate::amx).
                        let limbs = if kernel.name() == "amx" { size * 2f64.powi(-15) } else { 0.0 };
                        let err = (got[i * n + j] as f64 - want).abs();
                        assert!(
                            err <= 1e-5 * k as f64 + limbs,
                            "{kernel:?} {m}x{n}x{k} [{i},{j}]: {} vs {want}",
                            got[i * n + j]
                        );
                    }
                }
            }
        }
    }
}
