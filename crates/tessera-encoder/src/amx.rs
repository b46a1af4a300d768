//! The linear layers on Intel AMX (Sapphire Rapids and later): `Y = X · Wᵀ`
//! in `tdpbf16ps` tiles — 16 rows of `X` × 16 columns of `W` × 32 inputs per
//! instruction, accumulated in f32 — at several times the AVX-512 f32 rate.
//!
//! # Precision: bf16 in limbs
//!
//! One bf16 per value would round each to 2⁻⁹ of itself. Both sides are split
//! in two limbs instead (`hi` = the value's top 16 bits, `lo` = bf16 of the
//! rest, so `|lo| < 2⁻⁸·|x|` and `|x − hi − lo| ≤ 2⁻¹⁷·|x|`), and three of the
//! four products are accumulated: `x_hi·w_hi + x_hi·w_lo + x_lo·w_hi`. The
//! dropped `x_lo·w_lo` is below 2⁻¹⁶ of the product, so each product is
//! within about 2⁻¹⁵ of the f32 one, and the sums are f32 as in the other
//! kernels: the outputs agree with the f32 kernels to a few parts in 10⁵ of
//! `Σ|x·w|` (tested against an f64 reference), far inside what an f16-stored
//! token loses (2⁻¹¹ of each value). The encoder's end-to-end difference is
//! measured in docs/PERFORMANCE.md.
//!
//! # Layout
//!
//! Tiles (palette 1: eight registers of 16 rows × 64 bytes): `tmm0`/`tmm1`
//! accumulate 16 rows × 32 output columns (two column blocks of 16); `tmm2`/
//! `tmm3` hold the rows' hi and lo limbs for 32 inputs; `tmm4`–`tmm7` the two
//! column blocks' weight limbs for the same inputs, in the pair layout
//! `tdpbf16ps` takes (row `r`, lane `c`: inputs `2r, 2r + 1` of column `c`),
//! packed once when the model loads.

use std::arch::asm;

use tessera_kernels::amx_tiles::{CONFIG, Ctile, bf16};

/// Rows of `X` per tile.
pub(crate) const ROWS: usize = 16;
/// Inputs per `tdpbf16ps` (64 bytes of bf16).
pub(crate) const KSTEP: usize = 32;
/// Output columns per pass: two column blocks of 16 (= the f32 kernels' panel).
pub(crate) const COLS: usize = 32;

/// Whether this CPU and OS run AMX-BF16 tiles (and AVX-512 BF16 for the splits).
pub(crate) fn available() -> bool {
    tessera_kernels::amx_available()
}

/// The (hi, lo) limbs of `x`: hi its top 16 bits, lo the rest rounded.
fn limbs(x: f32) -> (u16, u16) {
    let hi = (x.to_bits() >> 16) as u16;
    (hi, bf16(x - f32::from_bits((hi as u32) << 16)))
}

/// `W` (`n × k`) in tiles: per column block of 16 and step of 32 inputs, a hi
/// tile then a lo tile of 512 u16 each; zero past `n` and `k`.
pub(crate) struct Weights {
    k_pad: usize,
    tiles: Vec<u16>,
}

impl Weights {
    pub fn new(w: &[f32], n: usize, k: usize) -> Self {
        let k_pad = k.div_ceil(KSTEP) * KSTEP;
        let steps = k_pad / KSTEP;
        let blocks = n.div_ceil(COLS) * 2;
        let mut tiles = vec![0u16; blocks * steps * 2 * 512];
        for (j, row) in w.chunks_exact(k).enumerate() {
            let (cb, c) = (j / 16, j % 16);
            for (kk, &v) in row.iter().enumerate() {
                let (s, r) = (kk / KSTEP, kk % KSTEP);
                let at = (r / 2) * 32 + 2 * c + r % 2;
                let base = (cb * steps + s) * 2 * 512;
                let (hi, lo) = limbs(v);
                tiles[base + at] = hi;
                tiles[base + 512 + at] = lo;
            }
        }
        Weights { k_pad, tiles }
    }

    fn tile(&self, block: usize, step: usize) -> *const u16 {
        let steps = self.k_pad / KSTEP;
        self.tiles[(block * steps + step) * 2 * 512..].as_ptr()
    }
}

/// Rows of `X` split into limbs: `m_pad × k_pad` hi values, then as many lo
/// values (rows past `m` and inputs past `k` zero).
pub(crate) struct Rows {
    k_pad: usize,
    hi: Vec<u16>,
    lo: Vec<u16>,
}

impl Rows {
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        use rayon::prelude::*;
        let k_pad = k.div_ceil(KSTEP) * KSTEP;
        let m_pad = m.div_ceil(ROWS) * ROWS;
        let mut hi = vec![0u16; m_pad * k_pad];
        let mut lo = vec![0u16; m_pad * k_pad];
        hi.par_chunks_mut(k_pad).zip(lo.par_chunks_mut(k_pad)).zip(x.par_chunks(k)).for_each(|((h, l), row)| {
            for ((h, l), &v) in h.iter_mut().zip(l.iter_mut()).zip(row) {
                (*h, *l) = limbs(v);
            }
        });
        Rows { k_pad, hi, lo }
    }
}

/// `X · Wᵀ + b` for rows `rows` of `x` and column passes `passes` (of
/// [`COLS`] columns) into `out`: `rows.len() × cols`, row-major, where `cols`
/// are the passes' valid columns of `n`.
///
/// # Safety
/// [`available`] returned true; `x` and `w` have the same `k`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn block(
    x: &Rows,
    w: &Weights,
    bias: &[f32],
    n: usize,
    rows: std::ops::Range<usize>,
    passes: std::ops::Range<usize>,
    out: &mut [f32],
) {
    debug_assert_eq!(x.k_pad, w.k_pad);
    let first = passes.start * COLS;
    let cols = n.min(passes.end * COLS) - first;
    assert_eq!(out.len(), rows.len() * cols);
    let steps = x.k_pad / KSTEP;
    let stride = x.k_pad * 2;
    let mut c = Ctile::new();
    // SAFETY: the configuration is a valid palette-1 layout of eight 16 × 64-byte tiles.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
    debug_assert!(rows.start.is_multiple_of(ROWS), "row ranges start at a tile");
    // Column passes outside, row tiles inside: a pass's weight tiles (4 KiB
    // per 32 inputs) stay in cache while every row tile of the range uses them.
    for pass in passes.clone() {
        let width = (n - pass * COLS).min(COLS);
        for tile_row in rows.clone().step_by(ROWS) {
            let (xh, xl) = (x.hi[tile_row * x.k_pad..].as_ptr(), x.lo[tile_row * x.k_pad..].as_ptr());
            // SAFETY: each tile load reads 16 rows of 64 bytes: the row limbs at
            // `tile_row` (16 rows of `k_pad` u16 exist: `m_pad` is a multiple of
            // 16), 64 bytes per step with row stride `2·k_pad`; the weight tiles
            // are 1 KiB each, in bounds for every block and step. The stores
            // write 2 KiB into `c`. The tile registers are not used by compiled code.
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
                for s in 0..steps {
                    asm!(
                        "tileloadd tmm2, [{ah} + {st}*1]",
                        "tileloadd tmm3, [{al} + {st}*1]",
                        "tileloadd tmm4, [{b0} + {b}*1]",
                        "tileloadd tmm5, [{b0l} + {b}*1]",
                        "tileloadd tmm6, [{b1} + {b}*1]",
                        "tileloadd tmm7, [{b1l} + {b}*1]",
                        "tdpbf16ps tmm0, tmm2, tmm4",
                        "tdpbf16ps tmm0, tmm2, tmm5",
                        "tdpbf16ps tmm0, tmm3, tmm4",
                        "tdpbf16ps tmm1, tmm2, tmm6",
                        "tdpbf16ps tmm1, tmm2, tmm7",
                        "tdpbf16ps tmm1, tmm3, tmm6",
                        ah = in(reg) xh.add(s * KSTEP),
                        al = in(reg) xl.add(s * KSTEP),
                        st = in(reg) stride,
                        b0 = in(reg) w.tile(2 * pass, s),
                        b0l = in(reg) w.tile(2 * pass, s).add(512),
                        b1 = in(reg) w.tile(2 * pass + 1, s),
                        b1l = in(reg) w.tile(2 * pass + 1, s).add(512),
                        b = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                }
                c.store();
            }
            let b = &bias[pass * COLS..pass * COLS + width];
            for r in tile_row..rows.end.min(tile_row + ROWS) {
                let i = r - tile_row;
                let dst = &mut out[(r - rows.start) * cols + pass * COLS - first..][..width];
                // Columns 0..16 from the first tile, 16..32 from the second.
                let (d0, d1) = dst.split_at_mut(width.min(16));
                for ((d, &v), &b) in d0.iter_mut().zip(&c.0[i * 16..i * 16 + 16]).zip(b) {
                    *d = v + b;
                }
                for ((d, &v), &b) in d1.iter_mut().zip(&c.0[256 + i * 16..256 + i * 16 + 16]).zip(&b[16.min(width)..]) {
                    *d = v + b;
                }
            }
        }
    }
    // SAFETY: releases the tile state this function configured.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}
