//! Centroid arithmetic for the token-centroid index: the dot product of
//! tokens with every centroid of a codebook, and the nearest centroid of each
//! token (the k-means assignment, and the code every stored token gets).
//!
//! The centroids are packed once, in [`CentroidPanels::new`], into panels of
//! 16 centroids with the centroids in the SIMD lanes (panel `p`, row `k`
//! holds dimension `k` of centroids `16p .. 16p + 16`, zero-padded), as a
//! [`Query`](crate::Query) packs its tokens. A tile of 6 tokens (12 on AVX-512) is
//! scored against one panel by a register-blocked micro-kernel — broadcast
//! `t_j[k]`, FMA into one accumulator pair per token — so that each token
//! value is loaded once per panel and every FMA fills its lanes. Nearest
//! centroids take the running maximum and the panel it came from per lane
//! (vertical operations only), and reduce over the lanes once per token.
//!
//! | path | where |
//! |---|---|
//! | AVX-512F | x86-64 with AVX-512F: one zmm of 16 lanes per token (half the FMAs of AVX2) |
//! | AVX2 + FMA | x86-64 with AVX2 (every kernel but `portable` implies it) |
//! | portable | everywhere: the same blocking in plain Rust |
//!
//! Arithmetic is f32 with f32 accumulation. A token's nearest centroid is the
//! one with the highest dot product, the lowest index among equal ones.

use crate::kernel::{PANEL, Row};
use rayon::prelude::*;

/// Tokens per tile: 2 ymm × 6 = 12 accumulators (+2 centroid rows, +1
/// broadcast) on AVX2 and the portable path; 12 zmm on AVX-512, so that a
/// short query (the real data's are 11 tokens) streams the codebook once.
const ND: usize = 12;
const ND_AVX2: usize = 6;
/// Panels scored against each token tile before moving to the next tile
/// (16 × 16 centroids × dim 128 × 4 bytes = 128 KiB: they stay in L2).
const PANEL_BLOCK: usize = 16;
/// Tokens a parallel task assigns.
const TASK_TOKENS: usize = 1024;

/// A codebook of `k` centroids of one dim, packed for the kernels.
#[derive(Debug, Clone)]
pub struct CentroidPanels {
    k: usize,
    dim: usize,
    /// `n_panels × dim` rows; row `p * dim + k` holds `C[16p + l][k]` for `l < 16`.
    packed: Vec<Row>,
    path: Path,
}

/// Which micro-kernel scores a tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Portable,
    Avx2,
    Avx512,
}

/// Calls the micro-kernel `f` specialised for the `nt` tokens of a tile:
/// `f::<n>` for each listed `n`, `f::<1>` otherwise.
macro_rules! by_tokens {
    ($f:ident, $nt:expr, $args:tt, [$($n:literal),*]) => {
        match $nt {
            $($n => $f::<$n> $args,)*
            _ => $f::<1> $args,
        }
    };
}

impl CentroidPanels {
    /// Packs row-major centroids (`k × dim`, `k ≥ 1`).
    ///
    /// # Panics
    /// If `dim == 0`, `centroids` is empty or not a multiple of `dim`.
    pub fn new(centroids: &[f32], dim: usize) -> Self {
        assert!(dim > 0, "dim must be positive");
        assert!(!centroids.is_empty() && centroids.len().is_multiple_of(dim), "centroids must be k × dim with k ≥ 1");
        let k = centroids.len() / dim;
        let mut packed = vec![Row([0.0; PANEL]); k.div_ceil(PANEL) * dim];
        for (c, row) in centroids.chunks_exact(dim).enumerate() {
            let (p, l) = (c / PANEL, c % PANEL);
            for (d, &v) in row.iter().enumerate() {
                packed[p * dim + d].0[l] = v;
            }
        }
        Self { k, dim, packed, path: best_path() }
    }

    /// The same codebook scored by the portable kernel (tests, benchmarks).
    pub fn portable(mut self) -> Self {
        self.path = Path::Portable;
        self
    }

    /// The same codebook scored by the AVX2 kernel, if this CPU has AVX2
    /// and FMA (tests, benchmarks: on an AVX-512 CPU the default is AVX-512).
    pub fn avx2(mut self) -> Option<Self> {
        (best_path() != Path::Portable).then(|| {
            self.path = Path::Avx2;
            self
        })
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// The kernel path this codebook is scored with: `avx512`, `avx2-fma` or `portable`.
    pub fn path(&self) -> &'static str {
        match self.path {
            Path::Avx512 => "avx512",
            Path::Avx2 => "avx2-fma",
            Path::Portable => "portable",
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn n_panels(&self) -> usize {
        self.packed.len() / self.dim
    }

    /// Dot products of every token (row-major `n × dim`) with every
    /// centroid, into `out` (`n × k`, row-major: token `i`, centroid `c` at `i·k + c`).
    ///
    /// # Panics
    /// If `tokens` is not a multiple of `dim` or `out.len() != n · k`.
    pub fn scores(&self, tokens: &[f32], out: &mut [f32]) {
        let n = self.check(tokens);
        assert_eq!(out.len(), n * self.k, "one score per token and centroid");
        let mut acc = [[0f32; PANEL]; ND];
        let nd = self.tile_tokens();
        for (t0, tile) in tokens.chunks(nd * self.dim).enumerate() {
            let nt = tile.len() / self.dim;
            for p in 0..self.n_panels() {
                self.tile(p, tile, &mut acc);
                let lanes = PANEL.min(self.k - p * PANEL);
                for (j, a) in acc.iter().take(nt).enumerate() {
                    let at = (t0 * nd + j) * self.k + p * PANEL;
                    out[at..at + lanes].copy_from_slice(&a[..lanes]);
                }
            }
        }
    }

    /// The nearest centroid (highest dot product, lowest index among equal
    /// ones) of every token (row-major `n × dim`) and its dot product, into
    /// `codes` and `sims` (`n` each). Runs in parallel on the rayon pool.
    ///
    /// # Panics
    /// If `tokens` is not a multiple of `dim` or the outputs are not `n` long.
    pub fn nearest(&self, tokens: &[f32], codes: &mut [u32], sims: &mut [f32]) {
        let n = self.check(tokens);
        assert!(codes.len() == n && sims.len() == n, "one code and one similarity per token");
        let dim = self.dim;
        tokens
            .par_chunks(TASK_TOKENS * dim)
            .zip(codes.par_chunks_mut(TASK_TOKENS))
            .zip(sims.par_chunks_mut(TASK_TOKENS))
            .for_each(|((t, c), s)| self.nearest_serial(t, c, s));
    }

    /// [`nearest`](Self::nearest) on the calling thread.
    pub fn nearest_serial(&self, tokens: &[f32], codes: &mut [u32], sims: &mut [f32]) {
        let n = self.check(tokens);
        assert!(codes.len() == n && sims.len() == n, "one code and one similarity per token");
        let dim = self.dim;
        // Per token of the task, per lane: the best dot so far and its panel.
        let mut best = vec![[f32::NEG_INFINITY; PANEL]; n];
        let mut from = vec![[0u32; PANEL]; n];
        let mut acc = [[0f32; PANEL]; ND];
        let nd = self.tile_tokens();
        for p0 in (0..self.n_panels()).step_by(PANEL_BLOCK) {
            let p1 = (p0 + PANEL_BLOCK).min(self.n_panels());
            for (t0, tile) in tokens.chunks(nd * dim).enumerate() {
                let nt = tile.len() / dim;
                for p in p0..p1 {
                    self.tile(p, tile, &mut acc);
                    // Lanes past `k` (the last panel's padding) are left out.
                    let lanes = PANEL.min(self.k - p * PANEL);
                    for j in 0..nt {
                        let (b, f) = (&mut best[t0 * nd + j], &mut from[t0 * nd + j]);
                        if lanes == PANEL {
                            update(&acc[j], b, f, p as u32);
                        } else {
                            for l in 0..lanes {
                                if acc[j][l] > b[l] {
                                    (b[l], f[l]) = (acc[j][l], p as u32);
                                }
                            }
                        }
                    }
                }
            }
        }
        for (i, (b, f)) in best.iter().zip(&from).enumerate() {
            let (mut code, mut sim) = (u32::MAX, f32::NEG_INFINITY);
            for l in 0..PANEL.min(self.k) {
                let c = f[l] * PANEL as u32 + l as u32;
                // Equal dots keep the lowest index (within a lane, the first panel already).
                if b[l] > sim || (b[l] == sim && c < code) {
                    (code, sim) = (c, b[l]);
                }
            }
            codes[i] = code;
            sims[i] = sim;
        }
    }

    /// Tokens per tile on this codebook's path.
    fn tile_tokens(&self) -> usize {
        if self.path == Path::Avx512 { ND } else { ND_AVX2 }
    }

    fn check(&self, tokens: &[f32]) -> usize {
        assert!(tokens.len().is_multiple_of(self.dim), "tokens must be n × dim");
        tokens.len() / self.dim
    }

    /// Dots of up to [`tile_tokens`](Self::tile_tokens) tokens (`tile`, row-major) with panel `p`, into `acc[j]`.
    #[inline]
    fn tile(&self, p: usize, tile: &[f32], acc: &mut [[f32; PANEL]; ND]) {
        let dim = self.dim;
        let panel = &self.packed[p * dim..(p + 1) * dim];
        let nt = tile.len() / dim;
        #[cfg(target_arch = "x86_64")]
        if self.path == Path::Avx512 {
            // SAFETY: `Avx512` is only chosen where AVX-512F was detected;
            // `panel` holds `dim` aligned rows and `tile` `nt ≤ ND` rows of `dim`.
            unsafe { by_tokens!(tile_avx512, nt, (panel, tile, dim, acc), [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2]) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.path == Path::Avx2 {
            // SAFETY: `Avx2` is only chosen where AVX2 and FMA were detected;
            // `panel` holds `dim` aligned rows and `tile` `nt ≤ ND` rows of `dim`.
            unsafe { by_tokens!(tile_avx2, nt, (panel, tile, dim, acc), [6, 5, 4, 3, 2]) };
            return;
        }
        by_tokens!(tile_portable, nt, (panel, tile, dim, acc), [6, 5, 4, 3, 2]);
    }
}

/// Keeps, per lane, the larger dot and the panel it came from (the first on ties).
#[inline(always)]
fn update(acc: &[f32; PANEL], best: &mut [f32; PANEL], from: &mut [u32; PANEL], p: u32) {
    for l in 0..PANEL {
        let gt = acc[l] > best[l];
        best[l] = if gt { acc[l] } else { best[l] };
        from[l] = if gt { p } else { from[l] };
    }
}

/// The widest path this CPU runs, or the one `TESSERA_KERNEL` names
/// (`portable` or `avx2`: the MaxSim kernel forced narrower keeps the
/// centroid kernel to the same instructions).
fn best_path() -> Path {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::Kernel;
        if !(crate::x86::has_avx2() && Kernel::detect() != Kernel::Portable) {
            Path::Portable
        } else if crate::x86::has_avx512() && Kernel::from_env() != Ok(Some(Kernel::Avx2)) {
            Path::Avx512
        } else {
            Path::Avx2
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    Path::Portable
}

#[inline(always)]
fn tile_portable<const T: usize>(panel: &[Row], tile: &[f32], dim: usize, acc: &mut [[f32; PANEL]; ND]) {
    let mut a = [[0f32; PANEL]; T];
    let rows: [&[f32]; T] = std::array::from_fn(|j| &tile[j * dim..][..dim]);
    for (k, row) in panel.iter().enumerate() {
        for (aj, r) in a.iter_mut().zip(&rows) {
            let b = r[k];
            for (x, &c) in aj.iter_mut().zip(&row.0) {
                *x += c * b;
            }
        }
    }
    acc[..T].copy_from_slice(&a);
}

/// AVX2 micro-kernel: 2 ymm (16 centroid lanes) × `T` tokens.
///
/// # Safety
/// AVX2 and FMA available; `panel` holds `dim` rows, `tile` at least `T · dim` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // `j` indexes the accumulators and the token rows
unsafe fn tile_avx2<const T: usize>(panel: &[Row], tile: &[f32], dim: usize, acc: &mut [[f32; PANEL]; ND]) {
    use std::arch::x86_64::*;
    assert!(panel.len() >= dim && tile.len() >= T * dim);
    // SAFETY: every access is `panel[k]` (64-byte aligned rows of 16 floats),
    // `tile[j·dim + k]` with `j < T`, `k < dim`, or `acc[j]` (16 floats).
    unsafe {
        let mut a = [[_mm256_setzero_ps(); 2]; T];
        let mut c = panel.as_ptr().cast::<f32>();
        let t = tile.as_ptr();
        for k in 0..dim {
            let c0 = _mm256_load_ps(c);
            let c1 = _mm256_load_ps(c.add(8));
            for j in 0..T {
                let b = _mm256_set1_ps(*t.add(j * dim + k));
                a[j][0] = _mm256_fmadd_ps(c0, b, a[j][0]);
                a[j][1] = _mm256_fmadd_ps(c1, b, a[j][1]);
            }
            c = c.add(PANEL);
        }
        for j in 0..T {
            _mm256_storeu_ps(acc[j].as_mut_ptr(), a[j][0]);
            _mm256_storeu_ps(acc[j].as_mut_ptr().add(8), a[j][1]);
        }
    }
}

/// AVX-512 micro-kernel: 1 zmm (16 centroid lanes) × `T` tokens, the same
/// sums as [`tile_avx2`] in the same order per lane.
///
/// # Safety
/// AVX-512F available; `panel` holds `dim` rows, `tile` at least `T · dim` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // `j` indexes the accumulators and the token rows
unsafe fn tile_avx512<const T: usize>(panel: &[Row], tile: &[f32], dim: usize, acc: &mut [[f32; PANEL]; ND]) {
    use std::arch::x86_64::*;
    assert!(panel.len() >= dim && tile.len() >= T * dim);
    // SAFETY: every access is `panel[k]` (64-byte aligned rows of 16 floats),
    // `tile[j·dim + k]` with `j < T`, `k < dim`, or `acc[j]` (16 floats).
    unsafe {
        let mut a = [_mm512_setzero_ps(); T];
        let mut c = panel.as_ptr().cast::<f32>();
        let t = tile.as_ptr();
        for k in 0..dim {
            let cv = _mm512_load_ps(c);
            for j in 0..T {
                a[j] = _mm512_fmadd_ps(cv, _mm512_set1_ps(*t.add(j * dim + k)), a[j]);
            }
            c = c.add(PANEL);
        }
        for j in 0..T {
            _mm512_storeu_ps(acc[j].as_mut_ptr(), a[j]);
        }
    }
}
