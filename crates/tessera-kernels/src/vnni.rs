//! Int8 MaxSim with VNNI dot-product instructions (x86-64 AVX-512 VNNI and
//! AVX-VNNI): the document's int8 codes are multiplied in place, never
//! widened to f32.
//!
//! # The query in two int8 limbs
//!
//! `vpdpbusd` multiplies unsigned by signed bytes and adds groups of four
//! products into i32 lanes. The query cannot be a single int8 without losing
//! precision, so each query token `i` is rounded to 16 bits and split:
//!
//! ```text
//! s_i = max_k |q_ik| / 32639,   n_ik = round(q_ik / s_i) ∈ [-32639, 32639]
//! hi_ik = ⌊(n_ik + 128) / 256⌋ ∈ [-127, 127],   lo_ik = n_ik − 256·hi_ik ∈ [-128, 127]
//! ```
//!
//! so `q_ik = s_i·(256·hi_ik + lo_ik) + e_ik` with `|e_ik| ≤ s_i / 2` — a
//! relative rounding of at most 1/65278 of the token's largest value, 30×
//! finer than f16's. The document's codes `c` are the unsigned operand,
//! offset by 128 (an XOR of the sign bit), and the limbs the signed one:
//!
//! ```text
//! Σ_k (c_jk + 128)·hi_ik = Σ_k c_jk·hi_ik + 128·Σ_k hi_ik     (the last term is the query's, precomputed)
//! ⟨q_i, d_j⟩ ≈ s_i · t_j · (256·Σ_k c_jk·hi_ik + Σ_k c_jk·lo_ik)   (t_j the token's scale)
//! ```
//!
//! Error against the exact MaxSim of the stored values (`c × t`): per query
//! token at most `s_i/2 · max_j t_j·Σ_k |c_jk|`, plus f32 rounding of the
//! final products (the integer sums are exact). The kernel tests check exactly
//! this bound against the f64 reference.
//!
//! # Layout
//!
//! Query panels of 16 tokens (AVX-512) or 8 (AVX-VNNI): for every group of 4
//! dimensions one register row holds each lane's 4 limb bytes. A document
//! token's 4 bytes of the group are broadcast to all lanes; a register block
//! of tile tokens × 2 limbs accumulates the whole `k` loop, then the lanes'
//! running maxima are updated, as in the f32 kernel. Requires `dim % 4 == 0`.

use crate::kernel::{PANEL, Query};
use std::arch::x86_64::*;

/// Query tokens per VNNI panel (one zmm of i32 lanes).
const LANES: usize = PANEL;

/// One panel of the query in two limbs.
#[derive(Debug, Clone)]
pub(crate) struct VnniPanel {
    /// `dim / 4` rows: lane `l` holds the hi bytes of dims `4g..4g+4` of token `l`.
    hi: Vec<[i32; LANES]>,
    lo: Vec<[i32; LANES]>,
    /// `128 · Σ_k hi` and `128 · Σ_k lo` per lane.
    corr_hi: [i32; LANES],
    corr_lo: [i32; LANES],
    /// `s_i` per lane (0 for padding lanes).
    scale: [f32; LANES],
}

/// A query prepared for the VNNI kernels.
#[derive(Debug, Clone)]
pub(crate) struct VnniQuery {
    panels: Vec<VnniPanel>,
}

impl VnniQuery {
    pub(crate) fn new(q: &Query) -> Self {
        let dim = q.dim();
        debug_assert!(dim.is_multiple_of(4));
        let groups = dim / 4;
        let n = q.n_tokens();
        let mut panels = Vec::with_capacity(n.div_ceil(LANES));
        for p in 0..n.div_ceil(LANES) {
            let mut panel = VnniPanel {
                hi: vec![[0; LANES]; groups],
                lo: vec![[0; LANES]; groups],
                corr_hi: [0; LANES],
                corr_lo: [0; LANES],
                scale: [0.0; LANES],
            };
            for l in 0..LANES.min(n - p * LANES) {
                let t = &q.tokens()[(p * LANES + l) * dim..(p * LANES + l + 1) * dim];
                let max = t.iter().fold(0f32, |m, x| m.max(x.abs()));
                let s = max / 32639.0;
                panel.scale[l] = s;
                let (mut sh, mut sl) = (0i32, 0i32);
                for g in 0..groups {
                    let (mut h4, mut l4) = ([0u8; 4], [0u8; 4]);
                    for b in 0..4 {
                        let nk = if max > 0.0 { (t[4 * g + b] / s).round().clamp(-32639.0, 32639.0) as i32 } else { 0 };
                        let hi = (nk + 128).div_euclid(256);
                        let lo = nk - 256 * hi;
                        (h4[b], l4[b]) = (hi as i8 as u8, lo as i8 as u8);
                        (sh, sl) = (sh + hi, sl + lo);
                    }
                    panel.hi[g][l] = i32::from_le_bytes(h4);
                    panel.lo[g][l] = i32::from_le_bytes(l4);
                }
                (panel.corr_hi[l], panel.corr_lo[l]) = (128 * sh, 128 * sl);
            }
            panels.push(panel);
        }
        Self { panels }
    }
}

pub(crate) fn has_avx512_vnni() -> bool {
    crate::x86::has_avx512() && is_x86_feature_detected!("avx512vnni")
}

pub(crate) fn has_avx_vnni() -> bool {
    crate::x86::has_avx2() && is_x86_feature_detected!("avxvnni")
}

/// Doc tokens per tile: AVX-512 keeps 2 limbs × 12 accumulators (+2 query, +1 broadcast of 32 zmm).
const ND512: usize = 12;
/// AVX-VNNI: half a panel (8 lanes) × 2 limbs × 6 accumulators (+2 query, +1 broadcast of 16 ymm).
const ND256: usize = 6;

/// Expands `$go!(N)` for the runtime tile height `$t`.
macro_rules! by_nd {
    ($t:expr, $go:ident, [$($n:literal),*]) => {
        match $t {
            $($n => $go!($n),)*
            _ => unreachable!(),
        }
    };
}

/// # Safety
/// AVX-512F + VNNI available; `hi`/`lo` point at `dim/4` rows of 16 i32, `d`
/// at `ND` rows of `dim` codes, `scales` at `ND` floats, `m` at 16 floats.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile512<const ND: usize>(
    hi: *const i32,
    lo: *const i32,
    d: *const i8,
    dim: usize,
    corr: (__m512i, __m512i),
    sq: __m512,
    scales: *const f32,
    m: *mut f32,
) {
    // SAFETY: per the contract above, every read is `hi/lo + 16g`, `d + j·dim + 4g`
    // (4 bytes, `4g + 4 <= dim`) or `scales + j` with `g < dim/4`, `j < ND`.
    unsafe {
        let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
        let mut ah = [_mm512_setzero_si512(); ND];
        let mut al = [_mm512_setzero_si512(); ND];
        for g in 0..dim / 4 {
            let vh = _mm512_loadu_si512(hi.add(16 * g).cast());
            let vl = _mm512_loadu_si512(lo.add(16 * g).cast());
            for j in 0..ND {
                let b =
                    _mm512_xor_si512(_mm512_set1_epi32(d.add(j * dim + 4 * g).cast::<i32>().read_unaligned()), flip);
                ah[j] = _mm512_dpbusd_epi32(ah[j], b, vh);
                al[j] = _mm512_dpbusd_epi32(al[j], b, vl);
            }
        }
        let mut mx = _mm512_loadu_ps(m);
        for j in 0..ND {
            let h = _mm512_cvtepi32_ps(_mm512_sub_epi32(ah[j], corr.0));
            let l = _mm512_cvtepi32_ps(_mm512_sub_epi32(al[j], corr.1));
            let dot = _mm512_fmadd_ps(h, _mm512_set1_ps(256.0), l);
            mx = _mm512_max_ps(mx, _mm512_mul_ps(dot, _mm512_mul_ps(sq, _mm512_set1_ps(*scales.add(j)))));
        }
        _mm512_storeu_ps(m, mx);
    }
}

/// # Safety
/// AVX2 + AVX-VNNI available; `hi`/`lo` point at `dim/4` rows of 16 i32 (the
/// 8 lanes used start there), `d` at `ND` rows of `dim` codes, `scales` at `ND`
/// floats, `m` at 8 floats.
#[target_feature(enable = "avx2,fma,avxvnni")]
#[inline]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile256<const ND: usize>(
    hi: *const i32,
    lo: *const i32,
    d: *const i8,
    dim: usize,
    corr: (__m256i, __m256i),
    sq: __m256,
    scales: *const f32,
    m: *mut f32,
) {
    // SAFETY: as `tile512`, with 8-lane loads at `hi/lo + 16g`.
    unsafe {
        let flip = _mm256_set1_epi32(0x8080_8080u32 as i32);
        let mut ah = [_mm256_setzero_si256(); ND];
        let mut al = [_mm256_setzero_si256(); ND];
        for g in 0..dim / 4 {
            let vh = _mm256_loadu_si256(hi.add(16 * g).cast());
            let vl = _mm256_loadu_si256(lo.add(16 * g).cast());
            for j in 0..ND {
                let b =
                    _mm256_xor_si256(_mm256_set1_epi32(d.add(j * dim + 4 * g).cast::<i32>().read_unaligned()), flip);
                ah[j] = _mm256_dpbusd_avx_epi32(ah[j], b, vh);
                al[j] = _mm256_dpbusd_avx_epi32(al[j], b, vl);
            }
        }
        let mut mx = _mm256_loadu_ps(m);
        for j in 0..ND {
            let h = _mm256_cvtepi32_ps(_mm256_sub_epi32(ah[j], corr.0));
            let l = _mm256_cvtepi32_ps(_mm256_sub_epi32(al[j], corr.1));
            let dot = _mm256_fmadd_ps(h, _mm256_set1_ps(256.0), l);
            mx = _mm256_max_ps(mx, _mm256_mul_ps(dot, _mm256_mul_ps(sq, _mm256_set1_ps(*scales.add(j)))));
        }
        _mm256_storeu_ps(m, mx);
    }
}

/// Asks for the next tile's rows while this one is computed.
#[inline(always)]
fn prefetch_next(codes: &[i8], from: usize, to: usize) {
    let mut off = from;
    while off < to.min(codes.len()) {
        // SAFETY: `off < codes.len()`; a prefetch never faults anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(codes.as_ptr().add(off)) };
        off += 64;
    }
}

/// Int8 MaxSim on AVX-512 VNNI: the running maximum of every query lane
/// over the document's tokens, into `max`.
///
/// # Safety
/// The CPU supports AVX-512F and AVX-512 VNNI; `q.dim() % 4 == 0`; `codes` is
/// `n × dim` with `n = scales.len() ≥ 1`.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(crate) unsafe fn maxsim_avx512_vnni(q: &Query, vq: &VnniQuery, codes: &[i8], scales: &[f32], max: &mut Vec<f32>) {
    let dim = q.dim();
    let nd = scales.len();
    max.clear();
    max.resize(vq.panels.len() * LANES, f32::NEG_INFINITY);
    let mut j0 = 0;
    while j0 < nd {
        let t = ND512.min(nd - j0);
        prefetch_next(codes, (j0 + t) * dim, (j0 + 2 * t) * dim);
        let d = codes[j0 * dim..].as_ptr();
        let sc = scales[j0..].as_ptr();
        for (p, panel) in vq.panels.iter().enumerate() {
            // SAFETY: the panel's rows and corrections are 16 lanes wide; `d` has `t`
            // rows of `dim` codes and `sc` `t` scales; `max` has 16 floats at `16p`.
            unsafe {
                let corr = (
                    _mm512_loadu_si512(panel.corr_hi.as_ptr().cast()),
                    _mm512_loadu_si512(panel.corr_lo.as_ptr().cast()),
                );
                let sq = _mm512_loadu_ps(panel.scale.as_ptr());
                let (hi, lo) = (panel.hi.as_ptr().cast::<i32>(), panel.lo.as_ptr().cast::<i32>());
                let m = max[p * LANES..].as_mut_ptr();
                macro_rules! go {
                    ($n:literal) => {
                        tile512::<$n>(hi, lo, d, dim, corr, sq, sc, m)
                    };
                }
                by_nd!(t, go, [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
            }
        }
        j0 += t;
    }
}

/// Int8 MaxSim on AVX-VNNI (256-bit), into `max` as [`maxsim_avx512_vnni`].
///
/// # Safety
/// The CPU supports AVX2, FMA and AVX-VNNI; `q.dim() % 4 == 0`; `codes` is
/// `n × dim` with `n = scales.len() ≥ 1`.
#[target_feature(enable = "avx2,fma,avxvnni")]
pub(crate) unsafe fn maxsim_avx_vnni(q: &Query, vq: &VnniQuery, codes: &[i8], scales: &[f32], max: &mut Vec<f32>) {
    let dim = q.dim();
    let nd = scales.len();
    let nq = q.n_tokens();
    max.clear();
    max.resize(vq.panels.len() * LANES, f32::NEG_INFINITY);
    let mut j0 = 0;
    while j0 < nd {
        let t = ND256.min(nd - j0);
        prefetch_next(codes, (j0 + t) * dim, (j0 + 2 * t) * dim);
        let d = codes[j0 * dim..].as_ptr();
        let sc = scales[j0..].as_ptr();
        for (p, panel) in vq.panels.iter().enumerate() {
            for half in 0..2 {
                if p * LANES + half * 8 >= nq {
                    break;
                }
                let off = half * 8;
                // SAFETY: as in `maxsim_avx512_vnni`, for the 8 lanes at `off`.
                unsafe {
                    let corr = (
                        _mm256_loadu_si256(panel.corr_hi.as_ptr().add(off).cast()),
                        _mm256_loadu_si256(panel.corr_lo.as_ptr().add(off).cast()),
                    );
                    let sq = _mm256_loadu_ps(panel.scale.as_ptr().add(off));
                    let hi = panel.hi.as_ptr().cast::<i32>().add(off);
                    let lo = panel.lo.as_ptr().cast::<i32>().add(off);
                    let m = max[p * LANES + off..].as_mut_ptr();
                    macro_rules! go {
                        ($n:literal) => {
                            tile256::<$n>(hi, lo, d, dim, corr, sq, sc, m)
                        };
                    }
                    by_nd!(t, go, [6, 5, 4, 3, 2, 1]);
                }
            }
        }
        j0 += t;
    }
}
