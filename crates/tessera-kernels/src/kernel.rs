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
//! | `Amx` | x86-64 with AMX-BF16 (+ AVX-512 BF16): 16 × 16 tiles, values in two bf16 limbs (`amx.rs`) |
//! | `Avx512` | x86-64 with AVX-512F (2 zmm × 12 tokens register block) |
//! | `Avx2` | x86-64 with AVX2 + FMA + F16C (2 ymm × 6 tokens register block) |
//! | `Portable` | everywhere: the same blocking in plain Rust, left to the auto-vectoriser |
//!
//! The AVX-512 and AVX2 tiles are compiled for dims 128, 96 and 64 (a row at
//! a constant offset) and for any other dim. The path is chosen once per
//! process ([`Kernel::detect`]: `TESSERA_KERNEL`, or [`calibrate`]) and
//! stored in the query, so `maxsim` only matches on an enum. A
//! [`QueryBatch`] packs several queries into one query's panels.

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
    /// x86-64 AMX-BF16 tiles with the values in bf16 limbs (see `amx.rs`: a
    /// split that adds at most 2⁻¹⁷ of `Σ|q·d|` to the f32 rounding).
    Amx,
}

impl Kernel {
    /// Every kernel this build knows, whether or not this CPU can run it.
    pub const ALL: [Kernel; 4] = [Kernel::Amx, Kernel::Avx512, Kernel::Avx2, Kernel::Portable];

    /// The default kernel for this process: `TESSERA_KERNEL` if set (see
    /// [`Kernel::from_env`]), else the one [`calibrate`] chooses at first use
    /// (a few milliseconds); decided once, then cached.
    ///
    /// # Panics
    /// If `TESSERA_KERNEL` names no kernel this CPU can run (the engine checks
    /// it when a database opens, with [`Kernel::from_env`], so that a bad
    /// value is a clear error there).
    pub fn detect() -> Kernel {
        static K: OnceLock<Kernel> = OnceLock::new();
        *K.get_or_init(|| match Kernel::from_env() {
            Ok(Some(k)) => k,
            Ok(None) => calibrate().chosen,
            Err(e) => panic!("{e}"),
        })
    }

    /// The kernel `TESSERA_KERNEL` asks for: `None` when unset or empty, an
    /// error when it names no kernel or one this CPU cannot run.
    pub fn from_env() -> Result<Option<Kernel>, String> {
        match std::env::var(KERNEL_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{KERNEL_ENV} is not valid UTF-8")),
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Kernel::from_name(v.trim()).map(Some).map_err(|e| format!("{KERNEL_ENV}: {e}")),
        }
    }

    /// The kernel called `name` (its short name, e.g. `avx512`, or its full
    /// [`name`](Self::name)), if this CPU can run it.
    pub fn from_name(name: &str) -> Result<Kernel, String> {
        let k = Kernel::ALL.into_iter().find(|k| k.short_name() == name || k.name() == name).ok_or_else(|| {
            let names: Vec<_> = Kernel::ALL.iter().map(|k| k.short_name()).collect();
            format!("unknown kernel {name:?}; kernels are {}", names.join(", "))
        })?;
        if !k.is_available() {
            let names: Vec<_> = Kernel::available().iter().map(|k| k.short_name()).collect();
            return Err(format!("kernel {name:?} cannot run on this CPU; it can run {}", names.join(", ")));
        }
        Ok(k)
    }

    /// Every kernel this CPU can run, widest first; `Portable` is always last.
    pub fn available() -> Vec<Kernel> {
        static V: OnceLock<Vec<Kernel>> = OnceLock::new();
        V.get_or_init(|| {
            let mut v = Vec::new();
            #[cfg(target_arch = "x86_64")]
            {
                if crate::amx::has_amx() {
                    v.push(Kernel::Amx);
                }
                if crate::x86::has_avx512() {
                    v.push(Kernel::Avx512);
                }
                if crate::x86::has_avx2() {
                    v.push(Kernel::Avx2);
                }
            }
            v.push(Kernel::Portable);
            v
        })
        .clone()
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        Kernel::available().contains(&self)
    }

    /// The name `TESSERA_KERNEL` and `--kernel` take.
    pub fn short_name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Amx => "amx",
        }
    }

    /// The descriptive name benches and `tessera info` report.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable-blocked",
            Kernel::Avx2 => "avx2-fma-f16c-blocked-16x6",
            Kernel::Avx512 => "avx512f-blocked-32x12",
            Kernel::Amx => "amx-bf16x3-16x16",
        }
    }
}

/// The environment variable that overrides the calibrated kernel choice.
pub const KERNEL_ENV: &str = "TESSERA_KERNEL";

/// What [`calibrate`] measured: seconds per round of each available kernel
/// (best of several rounds) and the fastest.
#[derive(Debug, Clone)]
pub struct Calibration {
    pub chosen: Kernel,
    pub seconds: Vec<(Kernel, f64)>,
}

/// Times every available SIMD kernel (the portable one only where there is
/// none: it is never the fastest where one exists) on the same small f16
/// data that stays in cache — 32- and 11-token queries (the long and the
/// short shapes search sees) against 8 documents of 200 tokens at dim 128 —
/// on the calling thread, after 2 ms of warm-up, alternating kernels round
/// by round and keeping each one's best round, so that a moment of noise
/// cannot pick a slow kernel; chooses the fastest, except that AMX is kept
/// unless 1.5× slower than it (see the code for why). Takes about 5 milliseconds.
pub fn calibrate() -> Calibration {
    const DIM: usize = 128;
    const DOC_TOKENS: usize = 200;
    const DOCS: usize = 8;
    const ROUNDS: usize = 9;
    const WARMUP: std::time::Duration = std::time::Duration::from_millis(2);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let docs: Vec<f16> = (0..DOCS * DOC_TOKENS * DIM).map(|_| f16::from_f32(next())).collect();
    let long: Vec<f32> = (0..32 * DIM).map(|_| next()).collect();
    let short: Vec<f32> = (0..11 * DIM).map(|_| next()).collect();
    let mut kernels = Kernel::available();
    if kernels.len() > 1 {
        kernels.retain(|&k| k != Kernel::Portable);
    }
    let queries: Vec<[Query; 2]> =
        kernels.iter().map(|&k| [Query::with_kernel(&long, DIM, k), Query::with_kernel(&short, DIM, k)]).collect();
    let score = |qs: &[Query; 2]| {
        let mut acc = 0f32;
        for q in qs {
            for d in docs.chunks_exact(DOC_TOKENS * DIM) {
                acc += maxsim(q, d);
            }
        }
        std::hint::black_box(acc);
    };
    // Warm up for a fixed time first: a unit's first use in a thread may
    // cost a trap, and a wide unit may take a moment to reach its clock.
    let t = std::time::Instant::now();
    while t.elapsed() < WARMUP {
        queries.iter().for_each(score);
    }
    let mut best = vec![f64::INFINITY; kernels.len()];
    for _ in 0..ROUNDS {
        for (b, qs) in best.iter_mut().zip(&queries) {
            let t = std::time::Instant::now();
            score(qs);
            *b = b.min(t.elapsed().as_secs_f64());
        }
    }
    let seconds: Vec<(Kernel, f64)> = kernels.into_iter().zip(best).collect();
    let (fastest, t_fastest) =
        seconds.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((Kernel::Portable, 0.0));
    // The tile unit needs tens of milliseconds of work to reach its speed,
    // longer than a calibration may take: measured in a warm process it is
    // 1.3–1.6× the AVX-512 kernel on one thread at every shape of
    // docs/PERFORMANCE.md, while a few milliseconds at process start see
    // them anywhere from equal to AMX 1.3× slower. So AMX is kept unless it
    // is clearly slower even then (1.5×).
    let chosen = match seconds.iter().find(|s| s.0 == Kernel::Amx) {
        Some(&(_, t)) if t <= 1.5 * t_fastest => Kernel::Amx,
        _ => fastest,
    };
    Calibration { chosen, seconds }
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
    /// The bf16 limbs in tile layout for the AMX kernel, made at first use.
    #[cfg(target_arch = "x86_64")]
    amx: OnceLock<crate::amx::AmxQuery>,
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
            #[cfg(target_arch = "x86_64")]
            amx: OnceLock::new(),
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
    /// The AMX kernel's bf16 limbs of a document tile.
    pub(crate) limbs: Vec<u16>,
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
    check_doc(q, doc.len());
    with_maxima(q, Doc::of(doc), None, |max| sum_lanes(max, q.n_tokens()))
}

/// MaxSim of each query of `b` against one document (`n × dim` tokens) in one
/// pass over it, into `out` (`out.len() == b.len()`). Each score is
/// bit-identical to [`maxsim`] of that query alone with the same kernel.
///
/// # Panics
/// As [`maxsim`], and if `out.len() != b.len()`.
#[inline]
pub fn maxsim_batch<T: Element>(b: &QueryBatch, doc: &[T], out: &mut [f32]) {
    check_doc(&b.q, doc.len());
    with_maxima(&b.q, Doc::of(doc), None, |max| b.sums(max, out))
}

/// MaxSim of `q` against one int8 document: row-major `n × q.dim()` codes and
/// `n` per-token scales (token `j` is `codes[j] × scales[j]`).
/// Scored with [`Int8Kernel::detect`].
///
/// # Panics
/// If `codes` is empty, not a multiple of `q.dim()`, or `scales` is not one per row.
#[inline]
pub fn maxsim_int8(q: &Query, codes: &[i8], scales: &[f32]) -> f32 {
    maxsim_int8_with(q, codes, scales, Int8Kernel::detect(q.dim))
}

/// [`maxsim_int8`] with a given int8 kernel (tests, benchmarks).
///
/// # Panics
/// As [`maxsim_int8`], and if the CPU cannot run `kernel` at this dim.
pub fn maxsim_int8_with(q: &Query, codes: &[i8], scales: &[f32], kernel: Int8Kernel) -> f32 {
    check_int8(q, codes, scales);
    with_maxima(q, Doc::I8(codes, scales), Some(kernel), |max| sum_lanes(max, q.n_tokens()))
}

/// [`maxsim_batch`] for an int8 document, with [`Int8Kernel::detect`].
///
/// # Panics
/// As [`maxsim_int8`], and if `out.len() != b.len()`.
pub fn maxsim_int8_batch(b: &QueryBatch, codes: &[i8], scales: &[f32], out: &mut [f32]) {
    maxsim_int8_batch_with(b, codes, scales, Int8Kernel::detect(b.q.dim), out)
}

/// [`maxsim_int8_batch`] with a given int8 kernel.
///
/// # Panics
/// As [`maxsim_int8_with`], and if `out.len() != b.len()`.
pub fn maxsim_int8_batch_with(b: &QueryBatch, codes: &[i8], scales: &[f32], kernel: Int8Kernel, out: &mut [f32]) {
    check_int8(&b.q, codes, scales);
    with_maxima(&b.q, Doc::I8(codes, scales), Some(kernel), |max| b.sums(max, out))
}

fn check_doc(q: &Query, len: usize) {
    assert!(len > 0 && len.is_multiple_of(q.dim), "document must be n × dim with n ≥ 1");
}

fn check_int8(q: &Query, codes: &[i8], scales: &[f32]) {
    check_doc(q, codes.len());
    assert_eq!(codes.len() / q.dim, scales.len(), "one scale per token");
}

/// Runs the kernel over `doc` — the query's f32 kernel, or for an int8
/// document the `int8` kernel — and hands `f` the running maximum of every
/// padded query lane.
#[inline]
fn with_maxima<R>(q: &Query, doc: Doc<'_>, int8: Option<Int8Kernel>, f: impl FnOnce(&[f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        match int8 {
            None | Some(Int8Kernel::Widen) => lane_maxima(q, doc, s),
            #[cfg(target_arch = "x86_64")]
            Some(k) => {
                let dim = q.dim;
                assert!(Int8Kernel::available(dim).contains(&k), "{k:?} is not available at dim {dim}");
                let Doc::I8(codes, scales) = doc else { unreachable!("int8 kernels take int8 documents") };
                let vq = q.vnni.get_or_init(|| crate::vnni::VnniQuery::new(q));
                // SAFETY: the kernel's features were just checked, and with them `dim % 4 == 0`.
                unsafe {
                    if k == Int8Kernel::Avx512Vnni {
                        crate::vnni::maxsim_avx512_vnni(q, vq, codes, scales, &mut s.max)
                    } else {
                        crate::vnni::maxsim_avx_vnni(q, vq, codes, scales, &mut s.max)
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Some(k) => panic!("{k:?} is not available on this CPU"),
        }
        f(&s.max)
    })
}

/// The running maximum over the document's tokens of every padded query
/// lane, into `s.max`, with the query's f32 kernel.
#[inline]
fn lane_maxima(q: &Query, doc: Doc<'_>, s: &mut Scratch) {
    match q.kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Amx => {
            let aq = q.amx.get_or_init(|| crate::amx::AmxQuery::new(q));
            // SAFETY: a query only carries Amx if `with_kernel` checked that
            // the CPU (and the OS) support it.
            unsafe { crate::amx::maxsim_amx(q, aq, doc, s) }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a query only carries Avx512 if `with_kernel` checked that
        // the CPU supports it.
        Kernel::Avx512 => unsafe { crate::x86::maxsim_avx512(q, doc, s) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, Avx2 was checked available in `with_kernel`.
        Kernel::Avx2 => unsafe { crate::x86::maxsim_avx2(q, doc, s) },
        _ => maxsim_portable(q, doc, s),
    }
}

/// Raises `best[i]` (one per query token) to the best dot product of query
/// token `i` with any row of the f32 document `doc`: MaxSim over a document
/// scored a part at a time.
pub(crate) fn maxima(q: &Query, doc: &[f32], best: &mut [f32]) {
    check_doc(q, doc.len());
    with_maxima(q, Doc::of(doc), None, |max| {
        for (b, m) in best.iter_mut().zip(&max[..q.n_tokens()]) {
            *b = b.max(*m);
        }
    })
}

/// Sum of the first `n` running maxima.
#[inline]
pub(crate) fn sum_lanes(max: &[f32], n: usize) -> f32 {
    max[..n].iter().sum()
}

/// Several queries of one dim scored together: their tokens packed one after
/// another into one set of panels, so that a pass over a document (one
/// conversion of each tile, one stream from memory) serves them all, and
/// short queries fill the lanes that one alone leaves empty. Query `b`'s
/// score is the sum of its own lanes' maxima, in the same order as alone.
#[derive(Debug, Clone)]
pub struct QueryBatch {
    q: Query,
    /// Query `b` is lanes `bounds[b] .. bounds[b + 1]`.
    bounds: Vec<usize>,
}

impl QueryBatch {
    /// # Panics
    /// If `queries` is empty, or their dims or kernels differ.
    pub fn new(queries: &[&Query]) -> Self {
        assert!(!queries.is_empty(), "a batch needs at least one query");
        let (dim, kernel) = (queries[0].dim, queries[0].kernel);
        let mut tokens = Vec::with_capacity(queries.iter().map(|q| q.tokens.len()).sum());
        let mut bounds = vec![0];
        for q in queries {
            assert!(q.dim == dim && q.kernel == kernel, "queries of a batch share their dim and kernel");
            tokens.extend_from_slice(&q.tokens);
            bounds.push(tokens.len() / dim);
        }
        Self { q: Query::with_kernel(&tokens, dim, kernel), bounds }
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dim(&self) -> usize {
        self.q.dim
    }

    pub fn kernel(&self) -> Kernel {
        self.q.kernel
    }

    fn sums(&self, max: &[f32], out: &mut [f32]) {
        assert_eq!(out.len(), self.len(), "one output per query");
        for (o, w) in out.iter_mut().zip(self.bounds.windows(2)) {
            *o = max[w[0]..w[1]].iter().sum();
        }
    }
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
fn maxsim_portable(q: &Query, doc: Doc<'_>, s: &mut Scratch) {
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
