//! x86-64 kernels: AVX2 + FMA + F16C and AVX-512F register-blocked MaxSim, and
//! the FMA peak probe. See `kernel.rs` for the layout.

use crate::kernel::{Doc, PANEL, Query, Scratch};
use half::f16;
use std::arch::x86_64::*;
use std::time::{Duration, Instant};

/// Doc tokens per tile on AVX2: 2 ymm × 6 = 12 accumulators (+2 query, +1 broadcast of 16 ymm).
pub(crate) const ND_AVX2: usize = 6;
/// Doc tokens per tile on AVX-512: 2 zmm × 12 = 24 accumulators (+2 query of 32 zmm).
pub(crate) const ND_AVX512: usize = 12;

pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

pub(crate) fn has_avx512() -> bool {
    has_avx2() && is_x86_feature_detected!("avx512f")
}

/// Widens `src` into `dst` (same length) with F16C.
#[target_feature(enable = "avx2,f16c")]
fn convert_f16(src: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let n = src.len();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n` and both slices have length `n`; the loads and
        // stores are unaligned.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for (d, s) in dst[i..].iter_mut().zip(&src[i..]) {
        *d = s.to_f32();
    }
}

/// Widens `src` into `dst` (same length) 16 values at a time with AVX-512F,
/// prefetching the line at the same offset of `ahead` with every cache line
/// of `src` (see [`tile_rows_with`]).
#[target_feature(enable = "avx512f,avx2,f16c")]
pub(crate) fn convert_f16_512(src: &[f16], ahead: &[f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let n = src.len();
    let mut i = 0;
    while i + 16 <= n {
        if i.is_multiple_of(32)
            && let Some(x) = ahead.get(i)
        {
            crate::prefetch(x);
        }
        // SAFETY: `i + 16 <= n` and both slices have length `n`; the loads and
        // stores are unaligned.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr().add(i).cast::<__m256i>());
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
        }
        i += 16;
    }
    convert_f16(&src[i..], &mut dst[i..]);
}

/// AVX2 micro-kernel: `NR` ymm (8 query lanes each) × `ND` doc tokens.
///
/// # Safety
/// `qp` points at `dim` packed rows of 16 floats (64-byte aligned), `d` at
/// `ND` rows of `dim` floats, `m` at `8 * NR` floats; AVX2 + FMA available.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::needless_range_loop)] // `j` indexes the accumulators and the doc rows
unsafe fn tile_avx2<const NR: usize, const ND: usize, const DIM: usize>(
    qp: *const f32,
    d: *const f32,
    dim: usize,
    m: *mut f32,
) {
    // A known dim puts every row at a constant offset from `d`.
    let dim = if DIM > 0 { DIM } else { dim };
    // SAFETY: the caller guarantees the extents above; every access below is
    // `qp + 16k + {0, 8}` or `d + j·dim + k` with `k < dim`, `j < ND`, or `m + 8r`.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); ND]; NR];
        let mut q = qp;
        let mut dk = d;
        for _ in 0..dim {
            let q0 = _mm256_load_ps(q);
            let q1 = if NR == 2 { _mm256_load_ps(q.add(8)) } else { q0 };
            for j in 0..ND {
                let b = _mm256_set1_ps(*dk.add(j * dim));
                acc[0][j] = _mm256_fmadd_ps(q0, b, acc[0][j]);
                if NR == 2 {
                    acc[NR - 1][j] = _mm256_fmadd_ps(q1, b, acc[NR - 1][j]);
                }
            }
            q = q.add(PANEL);
            dk = dk.add(1);
        }
        for (r, a) in acc.iter().enumerate() {
            let mut mx = _mm256_loadu_ps(m.add(8 * r));
            for v in a {
                mx = _mm256_max_ps(mx, *v);
            }
            _mm256_storeu_ps(m.add(8 * r), mx);
        }
    }
}

/// AVX-512 micro-kernel: `NR` zmm (one 16-lane panel each) × `ND` doc tokens.
///
/// # Safety
/// `q0` (and `q1` if `NR == 2`) point at `dim` packed rows of 16 floats
/// (64-byte aligned), `d` at `ND` rows of `dim` floats, `m` at `16 * NR`
/// floats; AVX-512F available.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
#[allow(clippy::needless_range_loop)] // `j` indexes the accumulators and the doc rows
unsafe fn tile_avx512<const NR: usize, const ND: usize, const DIM: usize>(
    q0: *const f32,
    q1: *const f32,
    d: *const f32,
    dim: usize,
    m: *mut f32,
) {
    // A known dim puts every row at a constant offset from `d`.
    let dim = if DIM > 0 { DIM } else { dim };
    // SAFETY: the caller guarantees the extents above; every access below is
    // `q{0,1} + 16k`, `d + j·dim + k` with `k < dim`, `j < ND`, or `m + 16r`.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); ND]; NR];
        let (mut a, mut b) = (q0, q1);
        let mut dk = d;
        for _ in 0..dim {
            let va = _mm512_load_ps(a);
            let vb = if NR == 2 { _mm512_load_ps(b) } else { va };
            for j in 0..ND {
                let x = _mm512_set1_ps(*dk.add(j * dim));
                acc[0][j] = _mm512_fmadd_ps(va, x, acc[0][j]);
                if NR == 2 {
                    acc[NR - 1][j] = _mm512_fmadd_ps(vb, x, acc[NR - 1][j]);
                }
            }
            a = a.add(PANEL);
            if NR == 2 {
                b = b.add(PANEL);
            }
            dk = dk.add(1);
        }
        for (r, acc) in acc.iter().enumerate() {
            let mut mx = _mm512_loadu_ps(m.add(16 * r));
            for v in acc {
                mx = _mm512_max_ps(mx, *v);
            }
            _mm512_storeu_ps(m.add(16 * r), mx);
        }
    }
}

/// Widens int8 rows `j0 .. j0 + t` times their scales into `dst` with AVX2.
#[target_feature(enable = "avx2")]
fn convert_i8(codes: &[i8], scales: &[f32], j0: usize, t: usize, dim: usize, dst: &mut [f32]) {
    if !dim.is_multiple_of(8) {
        return crate::kernel::dequantize_rows(codes, scales, j0, t, dim, dst);
    }
    let src = &codes[j0 * dim..(j0 + t) * dim];
    let dst = &mut dst[..t * dim];
    for j in 0..t {
        let s = _mm256_set1_ps(scales[j0 + j]);
        let mut k = j * dim;
        while k < (j + 1) * dim {
            // SAFETY: `k + 8 <= (j + 1) * dim <= t * dim`, the length of both
            // `src` and `dst`; the loads and stores are unaligned.
            unsafe {
                let c = _mm_loadl_epi64(src.as_ptr().add(k).cast::<__m128i>());
                let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c));
                _mm256_storeu_ps(dst.as_mut_ptr().add(k), _mm256_mul_ps(v, s));
            }
            k += 8;
        }
    }
}

/// Rows `from .. to` of the `dim`-wide rows in `x`, cut at its end (empty
/// past it).
#[inline(always)]
pub(crate) fn rows_within<T>(x: &[T], from: usize, to: usize, dim: usize) -> &[T] {
    &x[(from * dim).min(x.len())..(to * dim).min(x.len())]
}

/// Asks for document rows `from .. to` (cut at the document's end) to be
/// brought into L1.
#[inline(always)]
pub(crate) fn prefetch_rows(doc: Doc<'_>, from: usize, to: usize, dim: usize) {
    let (bytes, elem, base) = match doc {
        Doc::F32(x) => (std::mem::size_of_val(x), 4, x.as_ptr().cast::<u8>()),
        Doc::F16(x) => (std::mem::size_of_val(x), 2, x.as_ptr().cast::<u8>()),
        Doc::I8(x, _) => (x.len(), 1, x.as_ptr().cast::<u8>()),
    };
    let mut off = from * dim * elem;
    while off < (to * dim * elem).min(bytes) {
        // SAFETY: `off < bytes`, so the address is inside the document; a
        // prefetch never faults anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(off).cast::<i8>()) };
        off += 64;
    }
}

/// Points at the f32 rows `j0 .. j0 + t` of the document, converting f16 or
/// int8 into `tile` first.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn tile_rows(doc: Doc<'_>, j0: usize, t: usize, dim: usize, tile: &mut [f32]) -> *const f32 {
    // SAFETY: the features `tile_rows_with::<false>` needs are enabled here.
    unsafe { tile_rows_with::<false>(doc, j0, t, dim, tile) }
}

/// [`tile_rows`] widening f16 with AVX-512F.
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
fn tile_rows_512(doc: Doc<'_>, j0: usize, t: usize, dim: usize, tile: &mut [f32]) -> *const f32 {
    // SAFETY: the features `tile_rows_with::<true>` needs are enabled here.
    unsafe { tile_rows_with::<true>(doc, j0, t, dim, tile) }
}

/// # Safety
/// The CPU supports AVX2 and F16C, and AVX-512F if `WIDE`.
#[inline(always)]
unsafe fn tile_rows_with<const WIDE: bool>(
    doc: Doc<'_>,
    j0: usize,
    t: usize,
    dim: usize,
    tile: &mut [f32],
) -> *const f32 {
    // Documents stream from memory once per query: the next tile is asked for
    // while this one is converted and computed. AVX-512's f16 tiles (12 rows,
    // 48 cache lines at dim 128) ask for it a line per line converted, 3 %
    // faster at 20× than all at once (docs/PERFORMANCE.md, "Prefetching
    // alongside the conversion"); AVX2's 6 rows spread out were 3 % slower.
    if !(WIDE && matches!(doc, Doc::F16(_))) {
        prefetch_rows(doc, j0 + t, j0 + 2 * t, dim);
    }
    match doc {
        Doc::F32(x) => x[j0 * dim..(j0 + t) * dim].as_ptr(),
        Doc::F16(x) => {
            let (src, dst) = (&x[j0 * dim..(j0 + t) * dim], &mut tile[..t * dim]);
            // SAFETY: the caller guarantees the features.
            unsafe {
                if WIDE {
                    convert_f16_512(src, rows_within(x, j0 + t, j0 + 2 * t, dim), dst)
                } else {
                    convert_f16(src, dst)
                }
            }
            tile.as_ptr()
        }
        Doc::I8(c, s) => {
            // SAFETY: the caller guarantees AVX2.
            unsafe { convert_i8(c, s, j0, t, dim, tile) };
            tile.as_ptr()
        }
    }
}

fn prepare(q: &Query, s: &mut Scratch, nd_tile: usize) {
    s.max.clear();
    s.max.resize(q.n_panels() * PANEL, f32::NEG_INFINITY);
    if s.tile.len() < nd_tile * q.dim() {
        s.tile.resize(nd_tile * q.dim(), 0.0);
    }
}

/// Expands `$m!(ND)` for the runtime tile height `$t` in `1..=$max`.
macro_rules! by_nd {
    ($t:expr, $call:ident, [$($n:literal),*]) => {
        match $t {
            $($n => $call!($n),)*
            _ => unreachable!(),
        }
    };
}

/// MaxSim on AVX2: the running maximum of every query lane over the
/// document's tokens, into `s.max`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn maxsim_avx2(q: &Query, doc: Doc<'_>, s: &mut Scratch) {
    // SAFETY: the caller's contract is this function's.
    unsafe {
        match q.dim() {
            128 => maxsim_avx2_dim::<128>(q, doc, s),
            96 => maxsim_avx2_dim::<96>(q, doc, s),
            64 => maxsim_avx2_dim::<64>(q, doc, s),
            _ => maxsim_avx2_dim::<0>(q, doc, s),
        }
    }
}

/// [`maxsim_avx2`] for `q.dim() == DIM` (`DIM == 0`: any dim).
///
/// # Safety
/// As [`maxsim_avx2`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn maxsim_avx2_dim<const DIM: usize>(q: &Query, doc: Doc<'_>, s: &mut Scratch) {
    let dim = q.dim();
    let nd = doc.len() / dim;
    let nq = q.n_tokens();
    prepare(q, s, ND_AVX2);
    let mut j0 = 0;
    while j0 < nd {
        let t = ND_AVX2.min(nd - j0);
        let d = tile_rows(doc, j0, t, dim, &mut s.tile);
        for p in 0..q.n_panels() {
            let qp = q.panel(p).as_ptr().cast::<f32>();
            let m = s.max[p * PANEL..].as_mut_ptr();
            let two = nq - p * PANEL > 8;
            macro_rules! go {
                ($n:literal) => {
                    // SAFETY: `qp` is panel `p` (dim aligned rows of 16), `d` has
                    // `t = $n` rows of `dim` floats, `m` has 16 floats left in
                    // `s.max`; the features are enabled on this function.
                    unsafe {
                        if two {
                            tile_avx2::<2, $n, DIM>(qp, d, dim, m)
                        } else {
                            tile_avx2::<1, $n, DIM>(qp, d, dim, m)
                        }
                    }
                };
            }
            by_nd!(t, go, [6, 5, 4, 3, 2, 1]);
        }
        j0 += t;
    }
}

/// MaxSim on AVX-512F: the running maximum of every query lane over the
/// document's tokens, into `s.max`.
///
/// # Safety
/// The CPU supports AVX-512F, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(crate) unsafe fn maxsim_avx512(q: &Query, doc: Doc<'_>, s: &mut Scratch) {
    // SAFETY: the caller's contract is this function's.
    unsafe {
        match q.dim() {
            128 => maxsim_avx512_dim::<128>(q, doc, s),
            96 => maxsim_avx512_dim::<96>(q, doc, s),
            64 => maxsim_avx512_dim::<64>(q, doc, s),
            _ => maxsim_avx512_dim::<0>(q, doc, s),
        }
    }
}

/// [`maxsim_avx512`] for `q.dim() == DIM` (`DIM == 0`: any dim).
///
/// # Safety
/// As [`maxsim_avx512`].
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn maxsim_avx512_dim<const DIM: usize>(q: &Query, doc: Doc<'_>, s: &mut Scratch) {
    let dim = q.dim();
    let nd = doc.len() / dim;
    let np = q.n_panels();
    prepare(q, s, ND_AVX512);
    let mut j0 = 0;
    while j0 < nd {
        let t = ND_AVX512.min(nd - j0);
        let d = tile_rows_512(doc, j0, t, dim, &mut s.tile);
        let mut p = 0;
        while p < np {
            let two = p + 1 < np;
            let q0 = q.panel(p).as_ptr().cast::<f32>();
            let q1 = if two { q.panel(p + 1).as_ptr().cast::<f32>() } else { q0 };
            let m = s.max[p * PANEL..].as_mut_ptr();
            macro_rules! go {
                ($n:literal) => {
                    // SAFETY: `q0`/`q1` are panels `p`/`p + 1` (dim aligned rows
                    // of 16), `d` has `t = $n` rows of `dim` floats, `m` has 16
                    // (32 if `two`) floats left in `s.max`; the features are
                    // enabled on this function.
                    unsafe {
                        if two {
                            tile_avx512::<2, $n, DIM>(q0, q1, d, dim, m)
                        } else {
                            tile_avx512::<1, $n, DIM>(q0, q1, d, dim, m)
                        }
                    }
                };
            }
            by_nd!(t, go, [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
            p += if two { 2 } else { 1 };
        }
        j0 += t;
    }
}

/// The pairwise baseline compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn pairwise_avx2(q: &[f32], d: &[f32], dim: usize) -> f32 {
    crate::kernel::pairwise_generic(q, d, dim)
}

/// Independent FMA chains in the peak probe: 2 pipes × 4 cycles latency needs
/// ≥ 8; 12 leaves headroom.
const CHAINS: usize = 12;
const PROBE_ITERS: usize = 1 << 14;

/// GFLOP/s of `CHAINS` independent ymm FMA chains on this thread.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn fma_peak_avx2(duration: Duration) -> f64 {
    let mul = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let add = _mm256_set1_ps(std::hint::black_box(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    let start = Instant::now();
    let mut rounds = 0u64;
    loop {
        for _ in 0..PROBE_ITERS {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, mul, add);
            }
        }
        rounds += 1;
        if start.elapsed() >= duration {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    (rounds * (PROBE_ITERS * CHAINS * 8 * 2) as u64) as f64 / secs / 1e9
}

/// GFLOP/s of `CHAINS` independent zmm FMA chains on this thread.
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn fma_peak_avx512(duration: Duration) -> f64 {
    let mul = _mm512_set1_ps(std::hint::black_box(0.999_999));
    let add = _mm512_set1_ps(std::hint::black_box(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    let start = Instant::now();
    let mut rounds = 0u64;
    loop {
        for _ in 0..PROBE_ITERS {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, mul, add);
            }
        }
        rounds += 1;
        if start.elapsed() >= duration {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    (rounds * (PROBE_ITERS * CHAINS * 16 * 2) as u64) as f64 / secs / 1e9
}

pub(crate) fn has_avx512_vpopcntdq() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vpopcntdq")
}

/// Query blocks (zmm of `8 / w` query codes) kept in registers per pass over a document.
const CODE_BLOCKS: usize = 4;

/// `Σ_i min_j hamming(q_i, d_j)` with AVX-512 VPOPCNTDQ, for codes of `w` ∈
/// {1, 2, 4, 8} words: each zmm holds `8 / w` query codes, every document code
/// is broadcast to all of them, XOR + popcount per word, the `w` word counts of
/// a code are summed by lane shuffles, and a running minimum is kept per lane.
///
/// # Safety
/// The CPU supports AVX-512F and VPOPCNTDQ; `w` ∈ {1, 2, 4, 8}; `q` and `doc`
/// are whole numbers of `w`-word codes.
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
pub(crate) unsafe fn sum_min_hamming_avx512(q: &[u64], doc: &[u64], w: usize) -> u64 {
    debug_assert!(matches!(w, 1 | 2 | 4 | 8) && q.len().is_multiple_of(w) && doc.len().is_multiple_of(w));
    let per = 8 / w;
    let nq = q.len() / w;
    let nd = doc.len() / w;
    // Query codes padded to whole zmm blocks; padded lanes are never summed.
    let blocks = nq.div_ceil(per);
    let mut qp = vec![0u64; blocks * 8];
    qp[..q.len()].copy_from_slice(q);
    let mut total = 0u64;
    let mut b0 = 0;
    while b0 < blocks {
        let nb = CODE_BLOCKS.min(blocks - b0);
        // SAFETY: `b0 + nb <= blocks`, so every block read is inside `qp`; the
        // document reads are `doc[j·w .. (j+1)·w]` with `j < nd`.
        let mins = unsafe {
            let mut qv = [_mm512_setzero_si512(); CODE_BLOCKS];
            let mut mv = [_mm512_set1_epi64(i64::MAX); CODE_BLOCKS];
            for (b, v) in qv.iter_mut().enumerate().take(nb) {
                *v = _mm512_loadu_si512(qp.as_ptr().add((b0 + b) * 8).cast());
            }
            for j in 0..nd {
                let p = doc.as_ptr().add(j * w);
                let d = match w {
                    1 => _mm512_set1_epi64(*p as i64),
                    2 => _mm512_broadcast_i32x4(_mm_loadu_si128(p.cast())),
                    4 => _mm512_broadcast_i64x4(_mm256_loadu_si256(p.cast())),
                    _ => _mm512_loadu_si512(p.cast()),
                };
                for b in 0..nb {
                    let mut c = _mm512_popcnt_epi64(_mm512_xor_si512(qv[b], d));
                    if w >= 2 {
                        c = _mm512_add_epi64(c, _mm512_shuffle_epi32::<0x4E>(c));
                    }
                    if w >= 4 {
                        c = _mm512_add_epi64(c, _mm512_shuffle_i64x2::<0xB1>(c, c));
                    }
                    if w >= 8 {
                        c = _mm512_add_epi64(c, _mm512_shuffle_i64x2::<0x4E>(c, c));
                    }
                    mv[b] = _mm512_min_epu64(mv[b], c);
                }
            }
            let mut out = [[0u64; 8]; CODE_BLOCKS];
            for b in 0..nb {
                _mm512_storeu_si512(out[b].as_mut_ptr().cast(), mv[b]);
            }
            out
        };
        for (b, m) in mins.iter().enumerate().take(nb) {
            for l in 0..per {
                if (b0 + b) * per + l < nq {
                    total += m[l * w];
                }
            }
        }
        b0 += nb;
    }
    total
}
