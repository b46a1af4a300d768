//! 1-bit screening codes and the Hamming MaxSim over them.
//!
//! A token's code is its sign pattern: bit `k % 64` of word `k / 64` is set iff
//! value `k > 0`; bits past `dim` are zero (`⌈dim/64⌉` words per token, as the
//! segment's CODES section stores them). Reading a code as the ±1 vector
//! `b ↦ 2b − 1`, the dot product of two codes is `dim − 2·hamming(a, b)`, so the
//! screening score of a query against a document is the MaxSim of the ±1 vectors:
//!
//! ```text
//! screen(Q, D) = Σ_i (dim − 2 · min_j hamming(code(Q_i), code(D_j)))
//! ```
//!
//! It costs `⌈dim/64⌉` XOR + popcounts per token pair (2 at dim 128) instead
//! of `dim` multiply-adds, and only ranks candidates: the survivors are scored
//! by the exact kernel.
//!
//! | [`CodeKernel`] | where |
//! |---|---|
//! | `Avx512Vpopcntdq` | x86-64 with AVX-512F + VPOPCNTDQ and `⌈dim/64⌉` ∈ {1, 2, 4, 8}: 8 / w query tokens per zmm, one broadcast per document token |
//! | `Popcnt` | x86-64 with POPCNT: the portable loop compiled with the instruction |
//! | `Portable` | everywhere |

use std::sync::OnceLock;

/// u64 words per token code at `dim`.
pub fn code_words(dim: usize) -> usize {
    dim.div_ceil(64)
}

/// Appends the sign codes of `src` (`n × dim` values) to `out`.
pub fn sign_codes<T: crate::Element>(src: &[T], dim: usize, out: &mut Vec<u64>) {
    let w = code_words(dim);
    let mut row = vec![0f32; dim];
    for t in src.chunks_exact(dim) {
        T::to_f32_slice(t, &mut row);
        let at = out.len();
        out.resize(at + w, 0);
        for (k, &x) in row.iter().enumerate() {
            out[at + k / 64] |= ((x > 0.0) as u64) << (k % 64);
        }
    }
}

/// Which screening implementation a [`CodeQuery`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeKernel {
    Portable,
    Popcnt,
    Avx512Vpopcntdq,
}

impl CodeKernel {
    /// Every screening kernel this CPU can run for `dim`, fastest first.
    pub fn available(dim: usize) -> Vec<CodeKernel> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if crate::x86::has_avx512_vpopcntdq() && matches!(code_words(dim), 1 | 2 | 4 | 8) {
                v.push(CodeKernel::Avx512Vpopcntdq);
            }
            if is_x86_feature_detected!("popcnt") {
                v.push(CodeKernel::Popcnt);
            }
        }
        let _ = dim;
        v.push(CodeKernel::Portable);
        v
    }

    /// The fastest screening kernel for `dim` on this CPU.
    pub fn detect(dim: usize) -> CodeKernel {
        static FEATURES: OnceLock<(bool, bool)> = OnceLock::new();
        let (wide, popcnt) = *FEATURES.get_or_init(|| {
            let all = CodeKernel::available(64);
            (all.contains(&CodeKernel::Avx512Vpopcntdq), all.contains(&CodeKernel::Popcnt))
        });
        if wide && matches!(code_words(dim), 1 | 2 | 4 | 8) {
            CodeKernel::Avx512Vpopcntdq
        } else if popcnt {
            CodeKernel::Popcnt
        } else {
            CodeKernel::Portable
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CodeKernel::Portable => "hamming-portable",
            CodeKernel::Popcnt => "hamming-popcnt",
            CodeKernel::Avx512Vpopcntdq => "hamming-avx512-vpopcntdq",
        }
    }
}

/// A query's sign codes, prepared for screening.
#[derive(Debug, Clone)]
pub struct CodeQuery {
    dim: usize,
    n: usize,
    words: Vec<u64>,
    kernel: CodeKernel,
}

impl CodeQuery {
    /// # Panics
    /// If `tokens` is empty or not a multiple of `dim`.
    pub fn new(tokens: &[f32], dim: usize) -> Self {
        Self::with_kernel(tokens, dim, CodeKernel::detect(dim))
    }

    /// # Panics
    /// As [`CodeQuery::new`], and if the CPU cannot run `kernel` at this dim.
    pub fn with_kernel(tokens: &[f32], dim: usize, kernel: CodeKernel) -> Self {
        assert!(dim > 0 && !tokens.is_empty() && tokens.len().is_multiple_of(dim), "query must be n × dim with n ≥ 1");
        assert!(CodeKernel::available(dim).contains(&kernel), "{kernel:?} is not available at dim {dim}");
        let mut words = Vec::new();
        sign_codes(tokens, dim, &mut words);
        Self { dim, n: tokens.len() / dim, words, kernel }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn n_tokens(&self) -> usize {
        self.n
    }

    pub fn kernel(&self) -> CodeKernel {
        self.kernel
    }

    /// The query's codes, `n × ⌈dim/64⌉` words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }
}

/// The screening score of `q` against a document's codes (`n ≥ 1` tokens of
/// `⌈dim/64⌉` words): `Σ_i (dim − 2·min_j hamming)`.
///
/// # Panics
/// If `doc` is empty or not a whole number of codes.
#[inline]
pub fn hamming_maxsim(q: &CodeQuery, doc: &[u64]) -> f32 {
    let w = code_words(q.dim);
    assert!(!doc.is_empty() && doc.len().is_multiple_of(w), "document codes must be n × {w} words with n ≥ 1");
    let min_sum = match q.kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel was checked available for this dim in `with_kernel`.
        CodeKernel::Avx512Vpopcntdq => unsafe { crate::x86::sum_min_hamming_avx512(&q.words, doc, w) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above (POPCNT detected).
        CodeKernel::Popcnt => unsafe { sum_min_popcnt(&q.words, doc, w) },
        _ => sum_min_hamming(&q.words, doc, w),
    };
    (q.n * q.dim) as f32 - 2.0 * min_sum as f32
}

/// `Σ_i min_j hamming(q_i, d_j)` over codes of `w` words.
#[inline(always)]
pub(crate) fn sum_min_hamming(q: &[u64], doc: &[u64], w: usize) -> u64 {
    match w {
        1 => sum_min_w::<1>(q, doc),
        2 => sum_min_w::<2>(q, doc),
        4 => sum_min_w::<4>(q, doc),
        _ => {
            let ham = |a: &[u64], b: &[u64]| a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum::<u32>();
            q.chunks_exact(w).map(|qi| doc.chunks_exact(w).map(|d| ham(qi, d)).min().unwrap_or(0) as u64).sum()
        }
    }
}

#[inline(always)]
fn sum_min_w<const W: usize>(q: &[u64], doc: &[u64]) -> u64 {
    let mut total = 0u64;
    for qi in q.chunks_exact(W) {
        let qi: &[u64; W] = qi.try_into().expect("W words");
        let mut m = u32::MAX;
        for d in doc.chunks_exact(W) {
            let mut h = 0;
            for k in 0..W {
                h += (qi[k] ^ d[k]).count_ones();
            }
            m = m.min(h);
        }
        total += m as u64;
    }
    total
}

/// [`sum_min_hamming`] compiled with the POPCNT instruction.
///
/// # Safety
/// The CPU supports POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn sum_min_popcnt(q: &[u64], doc: &[u64], w: usize) -> u64 {
    sum_min_hamming(q, doc, w)
}
