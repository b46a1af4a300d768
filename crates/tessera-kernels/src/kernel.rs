//! The single-document MaxSim kernel and its run-time dispatch.
//!
//! # Layout
//!
//! A [`Query`] is packed once, in [`Query::new`], into *panels* of
//! [`PANEL`] = 16 query tokens: panel `p` holds, for every dimension `k`, the 16
//! values `Q[16p + l][k]` (`l < 16`) in one 64-byte aligned row, zero-padded past
//! the last token. The query tokens therefore sit in the SIMD lanes.
//!
//! A document is walked in *tiles* of a few tokens (6 on AVX2, 12 on AVX-512),
//! converted f16 → f32 into a thread-local scratch tile that stays in L1 (f32
//! documents are read in place). For each tile and each query panel a
//! register-blocked micro-kernel runs the whole `k` loop: load the query lanes of
//! dimension `k`, broadcast `D[j][k]` for each tile token `j`, and FMA into one
//! accumulator per (query register, tile token). After the `k` loop the
//! accumulators hold the full dot products `⟨Q_i, D_j⟩`, and the running maximum
//! per query lane is updated with a vertical `max` — no horizontal reduction
//! per pair. The score is the sum of the first `n_tokens` lanes of the running
//! maxima; padded lanes are ignored.
//!
//! # Paths
//!
//! | [`Kernel`] | where |
//! |---|---|
//! | `Avx2` | x86-64 with AVX2 + FMA + F16C (2 ymm × 6 tokens register block); the default |
//! | `Avx512` | x86-64 with AVX-512F (2 zmm × 12 tokens register block); opt-in, see [`Kernel::available`] |
//! | `Portable` | everywhere: the same blocking in plain Rust, left to the auto-vectoriser |
//!
//! The path is chosen once per process ([`Kernel::detect`]) and stored in the
//! query, so `maxsim` only matches on an enum.

use crate::Element;
use half::f16;
use std::any::TypeId;
use std::cell::RefCell;
use std::sync::OnceLock;

/// Query tokens per packed panel (one zmm, two ymm).
pub(crate) const PANEL: usize = 16;

/// One 64-byte aligned row of a packed query panel: 16 lanes of dimension `k`.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Row(pub(crate) [f32; PANEL]);

/// Which MaxSim implementation a [`Query`] is scored with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Blocked kernel in plain Rust (auto-vectorised for the compile target).
    Portable,
    /// x86-64 AVX2 + FMA + F16C blocked kernel.
    Avx2,
    /// x86-64 AVX-512F blocked kernel.
    Avx512,
}

impl Kernel {
    /// The default kernel for this CPU (detected once, then cached).
    pub fn detect() -> Kernel {
        static K: OnceLock<Kernel> = OnceLock::new();
        *K.get_or_init(|| {
            let all = Kernel::available();
            // `available` lists the default first.
            all[0]
        })
    }

    /// Every kernel this CPU can run, the default first; `Portable` is always last.
    pub fn available() -> Vec<Kernel> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            // AVX2 first: on Zen 4 (512-bit FMAs double-pumped) the AVX-512
            // kernel measured no faster — equal with the documents in cache,
            // ~15% slower streaming them from memory — so it is only used
            // when asked for explicitly.
            if crate::x86::has_avx2() {
                v.push(Kernel::Avx2);
            }
            if crate::x86::has_avx512() {
                v.push(Kernel::Avx512);
            }
        }
        v.push(Kernel::Portable);
        v
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        Kernel::available().contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable-blocked",
            Kernel::Avx2 => "avx2-fma-f16c-blocked-16x6",
            Kernel::Avx512 => "avx512f-blocked-32x12",
        }
    }
}

/// Name of the kernel that [`Query::new`] selects on this machine.
pub fn kernel_name() -> &'static str {
    Kernel::detect().name()
}

/// Which implementation scores int8 documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// The query's f32 [`Kernel`] on tiles widened to f32 (`code × scale`): exact
    /// f32 arithmetic on the stored values.
    Widen,
    /// x86-64 AVX-512 VNNI integer dot products with the query in two int8
    /// limbs (see `vnni.rs`: a query rounding of at most 1/65278 of each token's
    /// largest value). Needs `dim % 4 == 0`.
    Avx512Vnni,
    /// The same on AVX-VNNI (256-bit).
    AvxVnni,
}

impl Int8Kernel {
    /// Every int8 kernel this CPU can run at `dim`, the default first; `Widen` is always available.
    pub fn available(dim: usize) -> Vec<Int8Kernel> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if dim.is_multiple_of(4) {
            if crate::vnni::has_avx512_vnni() {
                v.push(Int8Kernel::Avx512Vnni);
            }
            if crate::vnni::has_avx_vnni() {
                v.push(Int8Kernel::AvxVnni);
            }
        }
        let _ = dim;
        v.push(Int8Kernel::Widen);
        v
    }

    /// The default int8 kernel at `dim` (CPU features detected once).
    pub fn detect(dim: usize) -> Int8Kernel {
        static FEATURES: OnceLock<(bool, bool)> = OnceLock::new();
        #[cfg(target_arch = "x86_64")]
        let (wide, narrow) = *FEATURES.get_or_init(|| (crate::vnni::has_avx512_vnni(), crate::vnni::has_avx_vnni()));
        #[cfg(not(target_arch = "x86_64"))]
        let (wide, narrow) = *FEATURES.get_or_init(|| (false, false));
        match (dim.is_multiple_of(4), wide, narrow) {
            (true, true, _) => Int8Kernel::Avx512Vnni,
            (true, false, true) => Int8Kernel::AvxVnni,
            _ => Int8Kernel::Widen,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Widen => "int8-widen-f32",
            Int8Kernel::Avx512Vnni => "int8-avx512-vnni-2limb-16x12",
            Int8Kernel::AvxVnni => "int8-avx-vnni-2limb-8x6",
        }
    }
}

/// A query prepared for scoring: row-major f32 tokens (`n_tokens × dim`) plus
/// the packed, lane-major copy the kernels read.
#[derive(Debug, Clone)]
pub struct Query {
    dim: usize,
    tokens: Vec<f32>,
    /// `n_panels × dim` rows; row `p * dim + k` holds `Q[16p + l][k]` for `l < 16`.
    packed: Vec<Row>,
    kernel: Kernel,
    /// The two-limb int8 form for the VNNI kernels, made at first use.
    #[cfg(target_arch = "x86_64")]
    vnni: OnceLock<crate::vnni::VnniQuery>,
}

impl Query {
    /// # Panics
    /// If `dim == 0`, `tokens` is empty, or its length is not a multiple of `dim`.
    pub fn new(tokens: &[f32], dim: usize) -> Self {
        Self::with_kernel(tokens, dim, Kernel::detect())
    }

    /// Like [`Query::new`] but scored with a given kernel (tests, benchmarks).
    ///
    /// # Panics
    /// As [`Query::new`], and if the CPU cannot run `kernel`.
    pub fn with_kernel(tokens: &[f32], dim: usize, kernel: Kernel) -> Self {
        assert!(dim > 0, "dim must be positive");
        assert!(!tokens.is_empty() && tokens.len().is_multiple_of(dim), "query must be n × dim with n ≥ 1");
        assert!(kernel.is_available(), "kernel {kernel:?} is not supported on this CPU");
        let n = tokens.len() / dim;
        let panels = n.div_ceil(PANEL);
        let mut packed = vec![Row([0.0; PANEL]); panels * dim];
        for (i, t) in tokens.chunks_exact(dim).enumerate() {
            let (p, l) = (i / PANEL, i % PANEL);
            for (k, &v) in t.iter().enumerate() {
                packed[p * dim + k].0[l] = v;
            }
        }
        Self {
            dim,
            tokens: tokens.to_vec(),
            packed,
            kernel,
            #[cfg(target_arch = "x86_64")]
            vnni: OnceLock::new(),
        }
    }

    /// Builds a query from tokens of any element type (f16 queries are widened exactly).
    pub fn from_elements<T: Element>(tokens: &[T], dim: usize) -> Self {
        let mut f = vec![0f32; tokens.len()];
        T::to_f32_slice(tokens, &mut f);
        Self::new(&f, dim)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len() / self.dim
    }

    /// Row-major f32 tokens.
    pub fn tokens(&self) -> &[f32] {
        &self.tokens
    }

    /// The kernel this query is scored with.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Number of 16-token panels in the packed layout.
    pub(crate) fn n_panels(&self) -> usize {
        self.packed.len() / self.dim
    }

    /// The packed rows of panel `p` (`dim` rows of 16 lanes).
    pub(crate) fn panel(&self, p: usize) -> &[Row] {
        &self.packed[p * self.dim..(p + 1) * self.dim]
    }
}

/// A document's tokens, by element type.
#[derive(Clone, Copy)]
pub(crate) enum Doc<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    /// Row-major codes and one scale per token: value = code × scale.
    I8(&'a [i8], &'a [f32]),
}

impl<'a> Doc<'a> {
    #[inline]
    fn of<T: Element>(doc: &'a [T]) -> Doc<'a> {
        if TypeId::of::<T>() == TypeId::of::<f32>() {
            Doc::F32(bytemuck::cast_slice(doc))
        } else if TypeId::of::<T>() == TypeId::of::<f16>() {
            Doc::F16(bytemuck::cast_slice(doc))
        } else {
            unreachable!("Element is implemented for f32 and f16 only")
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Doc::F32(s) => s.len(),
            Doc::F16(s) => s.len(),
            Doc::I8(s, _) => s.len(),
        }
    }
}

/// Writes the f32 values of int8 rows `j0 .. j0 + t` (codes × their token's scale) into `dst`.
#[inline]
pub(crate) fn dequantize_rows(codes: &[i8], scales: &[f32], j0: usize, t: usize, dim: usize, dst: &mut [f32]) {
    for j in 0..t {
        let s = scales[j0 + j];
        let src = &codes[(j0 + j) * dim..(j0 + j + 1) * dim];
        for (d, &c) in dst[j * dim..(j + 1) * dim].iter_mut().zip(src) {
            *d = c as f32 * s;
        }
    }
}

/// Per-thread buffers reused across documents: the converted tile and the
/// running maxima (one per padded query lane).
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) tile: Vec<f32>,
    pub(crate) max: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// MaxSim of `q` against one document given as row-major `n × q.dim()` tokens.
///
/// # Panics
/// If `doc` is empty or its length is not a multiple of `q.dim()`.
#[inline]
pub fn maxsim<T: Element>(q: &Query, doc: &[T]) -> f32 {
    let dim = q.dim;
    assert!(!doc.is_empty() && doc.len().is_multiple_of(dim), "document must be n × dim with n ≥ 1");
    maxsim_doc(q, Doc::of(doc))
}

/// MaxSim of `q` against one int8 document: row-major `n × q.dim()` codes and
/// `n` per-token scales (token `j` is `codes[j] × scales[j]`). The document is
/// widened to f32 tile by tile, so the arithmetic is the f32 kernel's.
///
/// # Panics
/// If `codes` is empty, not a multiple of `q.dim()`, or `scales` is not one per row.
/// Scored with [`Int8Kernel::detect`].
#[inline]
pub fn maxsim_int8(q: &Query, codes: &[i8], scales: &[f32]) -> f32 {
    maxsim_int8_with(q, codes, scales, Int8Kernel::detect(q.dim))
}

/// [`maxsim_int8`] with a given int8 kernel (tests, benchmarks).
///
/// # Panics
/// As [`maxsim_int8`], and if the CPU cannot run `kernel` at this dim.
pub fn maxsim_int8_with(q: &Query, codes: &[i8], scales: &[f32], kernel: Int8Kernel) -> f32 {
    let dim = q.dim;
    assert!(!codes.is_empty() && codes.len().is_multiple_of(dim), "document must be n × dim with n ≥ 1");
    assert_eq!(codes.len() / dim, scales.len(), "one scale per token");
    match kernel {
        Int8Kernel::Widen => maxsim_doc(q, Doc::I8(codes, scales)),
        #[cfg(target_arch = "x86_64")]
        k => {
            assert!(Int8Kernel::available(dim).contains(&k), "{k:?} is not available at dim {dim}");
            let vq = q.vnni.get_or_init(|| crate::vnni::VnniQuery::new(q));
            // SAFETY: the kernel's features were just checked, and with them `dim % 4 == 0`.
            unsafe {
                if k == Int8Kernel::Avx512Vnni {
                    crate::vnni::maxsim_avx512_vnni(q, vq, codes, scales)
                } else {
                    crate::vnni::maxsim_avx_vnni(q, vq, codes, scales)
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        k => panic!("{k:?} is not available on this CPU"),
    }
}

#[inline]
fn maxsim_doc(q: &Query, doc: Doc<'_>) -> f32 {
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        match q.kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a query only carries Avx512 if `with_kernel` checked that
            // the CPU supports it.
            Kernel::Avx512 => unsafe { crate::x86::maxsim_avx512(q, doc, s) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above, Avx2 was checked available in `with_kernel`.
            Kernel::Avx2 => unsafe { crate::x86::maxsim_avx2(q, doc, s) },
            _ => maxsim_portable(q, doc, s),
        }
    })
}

/// Sum of the first `n` running maxima.
#[inline]
pub(crate) fn sum_lanes(max: &[f32], n: usize) -> f32 {
    max[..n].iter().sum()
}

/// Doc tokens per tile in the portable kernel.
const ND_PORTABLE: usize = 4;
/// Query lanes per portable micro-kernel call: 16 where the target has 32
/// vector registers (aarch64 NEON: 16 accumulators of 4 lanes), 8 elsewhere
/// (SSE2 has 16 registers: 8 accumulators of 4 lanes plus query and broadcast).
#[cfg(target_arch = "aarch64")]
const LW_PORTABLE: usize = 16;
#[cfg(not(target_arch = "aarch64"))]
const LW_PORTABLE: usize = 8;

/// The blocked kernel in plain Rust: a `LW_PORTABLE`-lane × 4-token
/// accumulator block, left to the auto-vectoriser.
fn maxsim_portable(q: &Query, doc: Doc<'_>, s: &mut Scratch) -> f32 {
    let dim = q.dim;
    let nd = doc.len() / dim;
    let nq = q.n_tokens();
    s.max.clear();
    s.max.resize(q.n_panels() * PANEL, f32::NEG_INFINITY);
    if s.tile.len() < ND_PORTABLE * dim {
        s.tile.resize(ND_PORTABLE * dim, 0.0);
    }
    let mut j0 = 0;
    while j0 < nd {
        let t = ND_PORTABLE.min(nd - j0);
        let d: &[f32] = match doc {
            Doc::F32(x) => &x[j0 * dim..(j0 + t) * dim],
            Doc::F16(x) => {
                <f16 as Element>::to_f32_slice(&x[j0 * dim..(j0 + t) * dim], &mut s.tile[..t * dim]);
                &s.tile[..t * dim]
            }
            Doc::I8(c, sc) => {
                dequantize_rows(c, sc, j0, t, dim, &mut s.tile[..t * dim]);
                &s.tile[..t * dim]
            }
        };
        for p in 0..q.n_panels() {
            let panel = q.panel(p);
            for h in (0..PANEL).step_by(LW_PORTABLE) {
                if p * PANEL + h >= nq {
                    break;
                }
                let m: &mut [f32; LW_PORTABLE] =
                    (&mut s.max[p * PANEL + h..p * PANEL + h + LW_PORTABLE]).try_into().unwrap();
                match t {
                    4 => tile_portable::<4>(panel, h, d, dim, m),
                    3 => tile_portable::<3>(panel, h, d, dim, m),
                    2 => tile_portable::<2>(panel, h, d, dim, m),
                    _ => tile_portable::<1>(panel, h, d, dim, m),
                }
            }
        }
        j0 += t;
    }
    sum_lanes(&s.max, nq)
}

#[inline(always)]
fn tile_portable<const ND: usize>(panel: &[Row], h: usize, d: &[f32], dim: usize, m: &mut [f32; LW_PORTABLE]) {
    let mut acc = [[0f32; LW_PORTABLE]; ND];
    let panel = &panel[..dim];
    let rows: [&[f32]; ND] = std::array::from_fn(|j| &d[j * dim..][..dim]);
    for k in 0..dim {
        let qv: &[f32; LW_PORTABLE] = panel[k].0[h..h + LW_PORTABLE].try_into().unwrap();
        for j in 0..ND {
            let b = rows[j][k];
            for l in 0..LW_PORTABLE {
                acc[j][l] += qv[l] * b;
            }
        }
    }
    for a in &acc {
        for l in 0..LW_PORTABLE {
            m[l] = m[l].max(a[l]);
        }
    }
}

/// The naive pairwise MaxSim: the document is converted to f32 once, then one
/// dot product per (query token, document token) pair, reduced horizontally
/// each time. This is what most engines do; it is the benchmark baseline. The
/// dot is a straightforward lane-split loop the compiler vectorises (with
/// AVX2 + FMA when the CPU has them).
///
/// # Panics
/// If `doc` is empty or its length is not a multiple of `q.dim()`.
pub fn maxsim_pairwise<T: Element>(q: &Query, doc: &[T]) -> f32 {
    let dim = q.dim;
    assert!(!doc.is_empty() && doc.len().is_multiple_of(dim), "document must be n × dim with n ≥ 1");
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        s.tile.resize(doc.len(), 0.0);
        T::to_f32_slice(doc, &mut s.tile);
        #[cfg(target_arch = "x86_64")]
        if crate::x86::has_avx2() {
            // SAFETY: AVX2 and FMA were just detected.
            return unsafe { crate::x86::pairwise_avx2(&q.tokens, &s.tile, dim) };
        }
        pairwise_generic(&q.tokens, &s.tile, dim)
    })
}

pub(crate) fn pairwise_generic(q: &[f32], d: &[f32], dim: usize) -> f32 {
    q.chunks_exact(dim).map(|qi| d.chunks_exact(dim).map(|dj| dot(qi, dj)).fold(f32::NEG_INFINITY, f32::max)).sum()
}

/// Dot product with 16 independent lanes so that the loop vectorises.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
