//! MaxSim on Intel AMX (Sapphire Rapids and later): the dot products of 16
//! document tokens × 16 query tokens × 32 dimensions in one `tdpbf16ps`,
//! with f32 accumulation, at several times the f32 FMA rate.
//!
//! # Precision: bf16 in limbs
//!
//! `tdpbf16ps` multiplies bf16 values (8 significant bits) exactly and adds
//! the products into f32. One bf16 per value would round each to 2⁻⁹ of
//! itself, far coarser than f32, so both sides are split in two limbs and all
//! four products are accumulated:
//!
//! ```text
//! d = d_hi + d_lo     d_hi: d truncated to 16 bits; exact for an f16 value (11 significant bits = 8 + at most 3)
//! q = q_hi + q_lo + r    q_hi = bf16(q), q_lo = bf16(q − q_hi), |r| ≤ 2⁻¹⁸·|q|
//! ⟨q, d⟩ ≈ Σ_k (q_hi + q_lo)·(d_hi + d_lo)
//! ```
//!
//! Against the exact dot product of the stored (f16) values the error is at
//! most `2⁻¹⁸ · Σ_k |q_k d_k|` for the query's split, plus f32 rounding of
//! `4·dim` exact products. (An f32 document's `d_lo` is rounded too, adding
//! up to `2⁻¹⁶` of the same sum; the engine stores f16, and int8 documents are
//! never scored here: they take the exact f32 widening path.) The kernel
//! tests check `((4·dim + nq + 1)·u + 2⁻¹⁸ + 2⁻¹⁶)·S` with `u = 2⁻²⁴` and `S`
//! as for the f32 kernels — about 5× the f32 kernels' bound at dim 128, and
//! two orders of magnitude below the 1e-3 within which an exact search must
//! reproduce the reference ranking.
//!
//! # Layout
//!
//! Tiles (8 registers of 16 rows × 64 bytes): `tmm0`/`tmm1` accumulate two
//! query panels of 16 tokens against one document tile of 16 tokens (rows:
//! document tokens, columns: query lanes, so the max over document tokens is
//! a vertical max of the stored rows); `tmm2`/`tmm3` hold the document tile's
//! hi and lo limbs for 32 dimensions, `tmm4`–`tmm7` the two panels' query
//! limbs for the same dimensions, in the pair layout `tdpbf16ps` takes
//! (row `k`, column `n`: dims `2k, 2k+1` of query token `n`), made once per
//! query. Dims are zero-padded to a multiple of 32.

use crate::kernel::{Doc, PANEL, Query, Scratch};
use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

/// Document tokens per tile (the tile's rows).
const ROWS: usize = 16;
/// Dimensions per `tdpbf16ps` (64 bytes of bf16).
const KSTEP: usize = 32;

/// Whether the CPU has AMX-TILE and AMX-BF16, AVX-512F and AVX-512 BF16, and
/// the OS let this process use the tile registers (asked once).
pub(crate) fn has_amx() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let edx = __cpuid_count(7, 0).edx;
        let (tile, bf16) = (edx >> 24 & 1 == 1, edx >> 22 & 1 == 1);
        tile && bf16 && crate::x86::has_avx512() && is_x86_feature_detected!("avx512bf16") && request_tile_data()
    })
}

/// Linux: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, which a
/// process must make before its first tile instruction.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with these arguments only changes the
    // process's permission to use a CPU feature; it touches no memory of ours.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// bf16 of a finite f32, rounded to nearest even.
pub fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + (b >> 16 & 1)) >> 16) as u16
}

fn f32_of(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// One 1 KiB tile of query limbs: 16 rows (dimension pairs) × 16 lanes × 2.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct BTile([u16; 512]);

/// A query split into bf16 limbs in the tile layout.
#[derive(Clone)]
pub(crate) struct AmxQuery {
    /// Dimension padded to a multiple of [`KSTEP`].
    dim_pad: usize,
    /// Per panel, per 32-dimension step: the hi tile, then the lo tile.
    tiles: Vec<BTile>,
}

impl std::fmt::Debug for AmxQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmxQuery").field("dim_pad", &self.dim_pad).field("tiles", &self.tiles.len()).finish()
    }
}

impl AmxQuery {
    pub(crate) fn new(q: &Query) -> Self {
        let dim = q.dim();
        let dim_pad = dim.div_ceil(KSTEP) * KSTEP;
        let steps = dim_pad / KSTEP;
        let np = q.n_panels();
        let mut tiles = vec![BTile([0; 512]); np * steps * 2];
        for (i, t) in q.tokens().chunks_exact(dim).enumerate() {
            let (p, lane) = (i / PANEL, i % PANEL);
            for (k, &x) in t.iter().enumerate() {
                let hi = bf16(x);
                let lo = bf16(x - f32_of(hi));
                let (s, kk) = (k / KSTEP, k % KSTEP);
                let at = (kk / 2) * 32 + 2 * lane + kk % 2;
                tiles[(p * steps + s) * 2].0[at] = hi;
                tiles[(p * steps + s) * 2 + 1].0[at] = lo;
            }
        }
        Self { dim_pad, tiles }
    }

    fn tile(&self, panel: usize, step: usize, lo: bool) -> *const u16 {
        let steps = self.dim_pad / KSTEP;
        self.tiles[(panel * steps + step) * 2 + lo as usize].0.as_ptr()
    }
}

/// The palette-1 configuration: eight tiles of 16 rows × 64 bytes (load it
/// with `ldtilecfg [&CONFIG]`).
#[repr(C, align(64))]
pub struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

pub const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Splits rows `0..t` of `src` (`t × dim` f32, row-major) into bf16 limbs,
/// rows of `dim_pad` (zero past `dim`): `hi` the value truncated to its top
/// 16 bits, `lo = bf16(x − hi)` rounded to nearest — exact for values an f16
/// can hold (so f16 and f32 copies of them split alike), within 2⁻¹⁶·|x| otherwise.
#[target_feature(enable = "avx512f,avx512bf16")]
fn split_rows(src: &[f32], t: usize, dim: usize, dim_pad: usize, hi: &mut [u16], lo: &mut [u16]) {
    let mask = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    for j in 0..t {
        let row = &src[j * dim..(j + 1) * dim];
        let (h, l) = (&mut hi[j * dim_pad..(j + 1) * dim_pad], &mut lo[j * dim_pad..(j + 1) * dim_pad]);
        let mut k = 0;
        while k + 16 <= dim {
            // SAFETY: `k + 16 <= dim <= dim_pad`: 16 floats are read from `row`
            // and 16 u16 written to `h` and `l`, all unaligned.
            unsafe {
                let x = _mm512_loadu_ps(row.as_ptr().add(k));
                let xh = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), mask));
                let (vh, vl) = (_mm512_cvtneps_pbh(xh), _mm512_cvtneps_pbh(_mm512_sub_ps(x, xh)));
                _mm256_storeu_si256(h.as_mut_ptr().add(k).cast(), std::mem::transmute::<__m256bh, __m256i>(vh));
                _mm256_storeu_si256(l.as_mut_ptr().add(k).cast(), std::mem::transmute::<__m256bh, __m256i>(vl));
            }
            k += 16;
        }
        for k in k..dim {
            let x = row[k];
            h[k] = (x.to_bits() >> 16) as u16;
            l[k] = bf16(x - f32_of(h[k]));
        }
        h[dim..].fill(0);
        l[dim..].fill(0);
    }
}

/// Splits rows `0..t` of f16 `src` (`t × dim`, `dim` a multiple of 32) into
/// bf16 limbs exactly: an f16 value has 11 significant bits, so its f32 form
/// truncated to its top 16 bits is `hi` and the rest, at most 3 significant
/// bits, is `lo`. With every cache line of `src` read, the line at the same
/// offset of `next` (the rows after them) is prefetched.
#[target_feature(enable = "avx512f,avx512bf16,f16c")]
fn split_f16_rows(
    src: &[half::f16],
    next: &[half::f16],
    t: usize,
    dim: usize,
    dim_pad: usize,
    hi: &mut [u16],
    lo: &mut [u16],
) {
    debug_assert!(dim.is_multiple_of(32));
    let mask = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
    for j in 0..t {
        let row = &src[j * dim..(j + 1) * dim];
        let (h, l) = (&mut hi[j * dim_pad..(j + 1) * dim_pad], &mut lo[j * dim_pad..(j + 1) * dim_pad]);
        let mut k = 0;
        while k < dim {
            if let Some(x) = next.get(j * dim + k) {
                crate::prefetch(x);
            }
            // SAFETY: `k + 32 <= dim`: 32 f16 are read from `row` and 32 u16
            // written to `h` and `l`, all unaligned.
            unsafe {
                let a = _mm512_cvtph_ps(_mm256_loadu_si256(row.as_ptr().add(k).cast()));
                let b = _mm512_cvtph_ps(_mm256_loadu_si256(row.as_ptr().add(k + 16).cast()));
                let (ah, bh) = (
                    _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), mask)),
                    _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(b), mask)),
                );
                // Both halves are exact bf16 values: the conversions do not round.
                let hv = _mm512_cvtne2ps_pbh(bh, ah);
                let lv = _mm512_cvtne2ps_pbh(_mm512_sub_ps(b, bh), _mm512_sub_ps(a, ah));
                _mm512_storeu_si512(h.as_mut_ptr().add(k).cast(), std::mem::transmute::<__m512bh, __m512i>(hv));
                _mm512_storeu_si512(l.as_mut_ptr().add(k).cast(), std::mem::transmute::<__m512bh, __m512i>(lv));
            }
            k += 32;
        }
    }
}

/// Splits document rows `j0 .. j0 + t` into the limbs of `buf` (hi rows,
/// then lo rows), asking for the rows of the tile after it meanwhile.
///
/// f16 rows ask for the next tile one cache line per line converted: asked
/// for all at once (64 lines at dim 128), the core stalled at the prefetches
/// until enough of them had arrived, and searches at 20× were 12–18 % slower
/// (docs/PERFORMANCE.md, "Prefetching alongside the conversion").
#[target_feature(enable = "avx512f,avx512bf16,f16c")]
fn convert_tile(doc: Doc<'_>, j0: usize, t: usize, dim: usize, dim_pad: usize, buf: &mut [u16], scratch: &mut [f32]) {
    let (hi, lo) = buf.split_at_mut(ROWS * dim_pad);
    // Rows past `t` keep stale finite values: their dot products are ignored.
    match doc {
        Doc::F16(x) => {
            let src = &x[j0 * dim..(j0 + t) * dim];
            let next = crate::x86::rows_within(x, j0 + t, j0 + t + ROWS, dim);
            if dim.is_multiple_of(32) {
                split_f16_rows(src, next, t, dim, dim_pad, hi, lo)
            } else {
                let f = &mut scratch[..src.len()];
                crate::x86::convert_f16_512(src, next, f);
                split_rows(f, t, dim, dim_pad, hi, lo)
            }
        }
        Doc::F32(x) => {
            crate::x86::prefetch_rows(doc, j0 + t, j0 + t + ROWS, dim);
            split_rows(&x[j0 * dim..(j0 + t) * dim], t, dim, dim_pad, hi, lo)
        }
        Doc::I8(..) => unreachable!("int8 documents take the AVX-512 path"),
    }
}

/// MaxSim on AMX: the running maximum of every query lane over the
/// document's tokens, into `s.max`. Int8 documents go to the AVX-512 kernel
/// (exact f32 widening), as documented for `Int8Kernel::Widen`.
///
/// # Safety
/// [`has_amx`] returned true.
#[target_feature(enable = "avx512f,avx512bf16,avx2,f16c")]
pub(crate) unsafe fn maxsim_amx(q: &Query, aq: &AmxQuery, doc: Doc<'_>, s: &mut Scratch) {
    if let Doc::I8(..) = doc {
        // SAFETY: AMX implies AVX-512F, AVX2 and F16C (checked in `has_amx`).
        return unsafe { crate::x86::maxsim_avx512(q, doc, s) };
    }
    let dim = q.dim();
    let dim_pad = aq.dim_pad;
    let steps = dim_pad / KSTEP;
    let nd = doc.len() / dim;
    let np = q.n_panels();
    s.max.clear();
    s.max.resize(np * PANEL, f32::NEG_INFINITY);
    if s.tile.len() < ROWS * dim {
        s.tile.resize(ROWS * dim, 0.0);
    }
    // Two tile buffers, alternated, so that converting the next tile never
    // waits for the tile loads of this one.
    let buf = 2 * ROWS * dim_pad;
    if s.limbs.len() < 2 * buf {
        s.limbs.resize(2 * buf, 0);
    }
    let mut c = Ctile::new();
    let stride = dim_pad * 2;
    // SAFETY: the configuration is a valid palette-1 layout of eight 16 × 64-byte tiles.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
    let (buf0, buf1) = s.limbs[..2 * buf].split_at_mut(buf);
    let bufs = [buf0, buf1];
    // Software pipelining: the next tile is converted (its rows loaded from
    // memory) while the tile unit works on this one.
    convert_tile(doc, 0, ROWS.min(nd), dim, dim_pad, bufs[0], &mut s.tile);
    let mut j0 = 0;
    let mut cur = 0;
    while j0 < nd {
        let t = ROWS.min(nd - j0);
        let next = j0 + t;
        let mut converted = next >= nd;
        let (hi, lo) = bufs[cur].split_at(ROWS * dim_pad);
        let (a_hi, a_lo) = (hi.as_ptr(), lo.as_ptr());
        let mut p = 0;
        while p < np {
            let two = p + 1 < np;
            // SAFETY: every tile load reads 16 rows of 64 bytes: `a_hi`/`a_lo` +
            // 64·step with row stride `2·dim_pad` (16 rows of `dim_pad` u16 each),
            // and the query tiles (1 KiB each); the stores write 16 rows of 64
            // bytes into `c` (2 KiB). The tile registers are not used by
            // compiled code.
            unsafe {
                asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
                for step in 0..steps {
                    let (ah, al) = (a_hi.add(step * KSTEP), a_lo.add(step * KSTEP));
                    asm!(
                        "tileloadd tmm2, [{ah} + {st}*1]",
                        "tileloadd tmm3, [{al} + {st}*1]",
                        "tileloadd tmm4, [{bh} + {b}*1]",
                        "tileloadd tmm5, [{bl} + {b}*1]",
                        "tdpbf16ps tmm0, tmm2, tmm4",
                        "tdpbf16ps tmm0, tmm2, tmm5",
                        "tdpbf16ps tmm0, tmm3, tmm4",
                        "tdpbf16ps tmm0, tmm3, tmm5",
                        ah = in(reg) ah,
                        al = in(reg) al,
                        st = in(reg) stride,
                        bh = in(reg) aq.tile(p, step, false),
                        bl = in(reg) aq.tile(p, step, true),
                        b = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                    if two {
                        asm!(
                            "tileloadd tmm6, [{bh} + {b}*1]",
                            "tileloadd tmm7, [{bl} + {b}*1]",
                            "tdpbf16ps tmm1, tmm2, tmm6",
                            "tdpbf16ps tmm1, tmm2, tmm7",
                            "tdpbf16ps tmm1, tmm3, tmm6",
                            "tdpbf16ps tmm1, tmm3, tmm7",
                            bh = in(reg) aq.tile(p + 1, step, false),
                            bl = in(reg) aq.tile(p + 1, step, true),
                            b = in(reg) 64usize,
                            options(nostack, readonly),
                        );
                    }
                }
            }
            if !converted {
                let t_next = ROWS.min(nd - next);
                convert_tile(doc, next, t_next, dim, dim_pad, bufs[cur ^ 1], &mut s.tile);
                converted = true;
            }
            // SAFETY: configured above, on a CPU with AMX.
            unsafe { c.store() };
            for (h, base) in [(0usize, 0usize), (1, 256)].into_iter().take(if two { 2 } else { 1 }) {
                let m = &mut s.max[(p + h) * PANEL..(p + h + 1) * PANEL];
                // SAFETY: `m` and each row of `c` are 16 floats.
                unsafe {
                    let mut mx = _mm512_loadu_ps(m.as_ptr());
                    for j in 0..t {
                        mx = _mm512_max_ps(mx, _mm512_loadu_ps(c.0.as_ptr().add(base + j * 16)));
                    }
                    _mm512_storeu_ps(m.as_mut_ptr(), mx);
                }
            }
            p += if two { 2 } else { 1 };
        }
        j0 = next;
        cur ^= 1;
    }
    // SAFETY: releases the tile state this function configured.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// Two 16 × 16 f32 result tiles: `tmm0` in values `0..256`, `tmm1` in `256..512`.
#[repr(C, align(64))]
pub struct Ctile(pub [f32; 512]);

impl Ctile {
    pub fn new() -> Self {
        Ctile([0.0; 512])
    }

    /// Stores the accumulator tiles `tmm0` and `tmm1`.
    ///
    /// # Safety
    /// The tiles are configured ([`CONFIG`]) and the CPU runs AMX.
    #[inline(always)]
    pub unsafe fn store(&mut self) {
        // SAFETY: the stores write 16 rows of 64 bytes per tile: 2 KiB into `self`.
        unsafe {
            asm!(
                "tilestored [{c0} + {b}*1], tmm0",
                "tilestored [{c1} + {b}*1], tmm1",
                c0 = in(reg) self.0.as_mut_ptr(),
                c1 = in(reg) self.0.as_mut_ptr().add(256),
                b = in(reg) 64usize,
                options(nostack),
            )
        };
    }
}

impl Default for Ctile {
    fn default() -> Self {
        Self::new()
    }
}
