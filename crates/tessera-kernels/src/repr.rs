//! Stored token representations: one sealed [`TokenRepr`] impl per token type
//! of the format, carrying that type's encoding and its MaxSim kernel. Code
//! that scores stored tokens takes a [`TokenMatrix`] (a segment's whole token
//! data) or a [`StoredRows`] (one document), whose [`TokenType`] is chosen once
//! when the segment opens; [`TokenMatrix`] matches on it once per call and
//! runs the type's monomorphised loop.
//!
//! Adding a token type: a variant in `tessera_format::TokenType` (its id, name
//! and sizes), one `TokenRepr` impl here, and one arm in [`with_repr!`].

use crate::codes::{CodeQuery, hamming_maxsim, sign_codes};
use crate::{Hit, Query, QueryBatch, TopK};
use half::f16;
use rayon::prelude::*;
pub use tessera_format::segment::StoredRows;
pub use tessera_format::{Screening, TokenType};

mod sealed {
    pub trait Sealed {}
}

/// One element type of stored tokens.
pub trait TokenRepr: sealed::Sealed + Send + Sync + 'static {
    const TYPE: TokenType;

    /// Appends the stored form of `src` (`n × dim` f16 values) to `rows`
    /// (TOKENS bytes) and `scales`. Deterministic: the same input always
    /// gives the same bytes (WAL replay relies on it).
    fn encode(src: &[f16], dim: usize, rows: &mut Vec<u8>, scales: &mut Vec<f32>);

    /// The f32 values the stored rows stand for (`out.len() == n × dim`).
    fn decode(doc: StoredRows<'_>, dim: usize, out: &mut [f32]);

    /// MaxSim of `q` against one document.
    fn maxsim(q: &Query, doc: StoredRows<'_>) -> f32;

    /// MaxSim of every query of `b` against one document in one pass, into
    /// `out` (one score per query, each equal to [`maxsim`](Self::maxsim) alone).
    fn maxsim_batch(b: &QueryBatch, doc: StoredRows<'_>, out: &mut [f32]);
}

/// f16 tokens, stored as given.
pub enum F16 {}
/// Per-token symmetric int8 tokens: `scale = max |x| / 127`, `code = round(x / scale)`.
pub enum Int8 {}

impl sealed::Sealed for F16 {}
impl sealed::Sealed for Int8 {}

/// f16 rows of a stored document. Segment rows are aligned (64-byte
/// sections); an owned buffer that happens not to be is copied.
fn f16_rows(rows: &[u8]) -> std::borrow::Cow<'_, [f16]> {
    match bytemuck::try_cast_slice(rows) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(bytemuck::pod_collect_to_vec(rows)),
    }
}

impl TokenRepr for F16 {
    const TYPE: TokenType = TokenType::F16;

    fn encode(src: &[f16], _dim: usize, rows: &mut Vec<u8>, _scales: &mut Vec<f32>) {
        rows.extend_from_slice(bytemuck::cast_slice(src));
    }

    fn decode(doc: StoredRows<'_>, _dim: usize, out: &mut [f32]) {
        <f16 as crate::Element>::to_f32_slice(&f16_rows(doc.rows), out);
    }

    #[inline]
    fn maxsim(q: &Query, doc: StoredRows<'_>) -> f32 {
        crate::maxsim(q, &f16_rows(doc.rows))
    }

    #[inline]
    fn maxsim_batch(b: &QueryBatch, doc: StoredRows<'_>, out: &mut [f32]) {
        crate::maxsim_batch(b, &f16_rows(doc.rows), out)
    }
}

impl TokenRepr for Int8 {
    const TYPE: TokenType = TokenType::Int8;

    fn encode(src: &[f16], dim: usize, rows: &mut Vec<u8>, scales: &mut Vec<f32>) {
        for t in src.chunks_exact(dim) {
            let max = t.iter().fold(0f32, |m, x| m.max(x.to_f32().abs()));
            let scale = max / 127.0;
            let code = |x: f32| if max > 0.0 { (x / scale).round().clamp(-127.0, 127.0) } else { 0.0 };
            rows.extend(t.iter().map(|x| code(x.to_f32()) as i8 as u8));
            scales.push(scale);
        }
    }

    fn decode(doc: StoredRows<'_>, dim: usize, out: &mut [f32]) {
        let n = doc.scales.len();
        crate::kernel::dequantize_rows(bytemuck::cast_slice(doc.rows), doc.scales, 0, n, dim, out);
    }

    #[inline]
    fn maxsim(q: &Query, doc: StoredRows<'_>) -> f32 {
        crate::maxsim_int8(q, bytemuck::cast_slice(doc.rows), doc.scales)
    }

    #[inline]
    fn maxsim_batch(b: &QueryBatch, doc: StoredRows<'_>, out: &mut [f32]) {
        crate::maxsim_int8_batch(b, bytemuck::cast_slice(doc.rows), doc.scales, out)
    }
}

/// Runs `$body` with `$R` bound to the [`TokenRepr`] of token type `$t`.
#[macro_export]
macro_rules! with_repr {
    ($t:expr, $R:ident => $body:expr) => {
        match $t {
            $crate::TokenType::F16 => {
                type $R = $crate::repr::F16;
                $body
            }
            $crate::TokenType::Int8 => {
                type $R = $crate::repr::Int8;
                $body
            }
        }
    };
}

/// A document's tokens in stored form, owned (the memtable's copy).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncodedTokens {
    pub rows: Vec<u8>,
    pub scales: Vec<f32>,
    pub codes: Vec<u64>,
}

impl EncodedTokens {
    /// Encodes `src` (`n × dim` f16 values) as `t`, with codes if `s` asks for them.
    pub fn encode(t: TokenType, s: Screening, src: &[f16], dim: usize) -> Self {
        let mut e = Self::default();
        with_repr!(t, R => R::encode(src, dim, &mut e.rows, &mut e.scales));
        if s == Screening::Binary {
            sign_codes(src, dim, &mut e.codes);
        }
        e
    }

    pub fn view(&self) -> StoredRows<'_> {
        StoredRows { rows: &self.rows, scales: &self.scales, codes: &self.codes }
    }

    /// Bytes held: rows, scales and codes.
    pub fn bytes(&self) -> usize {
        self.rows.len() + self.scales.len() * 4 + self.codes.len() * 8
    }
}

/// MaxSim of `q` against one stored document of type `t`.
pub fn maxsim_stored(t: TokenType, q: &Query, doc: StoredRows<'_>) -> f32 {
    with_repr!(t, R => R::maxsim(q, doc))
}

/// MaxSim of every query of `b` against one stored document of type `t`, into `out`.
pub fn maxsim_stored_batch(t: TokenType, b: &QueryBatch, doc: StoredRows<'_>, out: &mut [f32]) {
    with_repr!(t, R => R::maxsim_batch(b, doc, out))
}

/// The f32 values of one stored document of type `t` (`n × dim`).
pub fn decode_stored(t: TokenType, doc: StoredRows<'_>, dim: usize) -> Vec<f32> {
    let n = doc.rows.len() / t.row_bytes(dim);
    let mut out = vec![0f32; n * dim];
    with_repr!(t, R => R::decode(doc, dim, &mut out));
    out
}

/// The token data of many documents of one type: what a segment holds.
/// Document `i` is token rows `offsets[i] .. offsets[i + 1]`.
#[derive(Debug, Clone, Copy)]
pub struct TokenMatrix<'a> {
    pub token_type: TokenType,
    pub screening: Screening,
    pub dim: usize,
    pub rows: &'a [u8],
    pub scales: &'a [f32],
    pub codes: &'a [u64],
    pub offsets: &'a [u64],
}

/// Documents per rayon task: enough work to amortise scheduling.
const CHUNK: usize = 64;

impl<'a> TokenMatrix<'a> {
    pub fn n_docs(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Tokens of document `i`.
    pub fn n_tokens(&self, i: u32) -> usize {
        (self.offsets[i as usize + 1] - self.offsets[i as usize]) as usize
    }

    /// The stored tokens of document `i`.
    #[inline]
    pub fn doc(&self, i: u32) -> StoredRows<'a> {
        let (a, b) = (self.offsets[i as usize] as usize, self.offsets[i as usize + 1] as usize);
        let row = self.token_type.row_bytes(self.dim);
        let w = self.screening.code_words(self.dim);
        StoredRows {
            rows: &self.rows[a * row..b * row],
            scales: if self.scales.is_empty() { &[] } else { &self.scales[a..b] },
            codes: &self.codes[a * w..b * w],
        }
    }

    /// The f32 values of document `i`.
    pub fn decode(&self, i: u32) -> Vec<f32> {
        decode_stored(self.token_type, self.doc(i), self.dim)
    }

    /// The `k` best of `docs` by exact MaxSim, best first (ties: smaller index first).
    pub fn top_k(&self, q: &Query, docs: &[u32], k: usize) -> Vec<Hit<u32>> {
        assert_eq!(q.dim(), self.dim, "query and matrix dims differ");
        with_repr!(self.token_type, R => top_k_by(docs, k, |d| R::maxsim(q, self.doc(d))))
    }

    /// For every query of `b`, the `k` best of `docs` by exact MaxSim, best
    /// first: one pass over each document serves the whole batch.
    pub fn top_k_batch(&self, b: &QueryBatch, docs: &[u32], k: usize) -> Vec<Vec<Hit<u32>>> {
        assert_eq!(b.dim(), self.dim, "query and matrix dims differ");
        let n = b.len();
        let fresh = || (0..n).map(|_| TopK::new(k)).collect::<Vec<_>>();
        with_repr!(self.token_type, R => docs
        .par_chunks(CHUNK)
        .fold(
            || (fresh(), vec![0f32; n]),
            |(mut tops, mut scores), chunk| {
                for &d in chunk {
                    R::maxsim_batch(b, self.doc(d), &mut scores);
                    for (t, &s) in tops.iter_mut().zip(&scores) {
                        t.push(s, d);
                    }
                }
                (tops, scores)
            },
        )
        .map(|(tops, _)| tops)
        .reduce(fresh, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                x.merge(y);
            }
            a
        }))
        .into_iter()
        .map(TopK::into_sorted_vec)
        .collect()
    }

    /// The exact MaxSim of every query of `b` against each of `docs`, in
    /// parallel: `out[i * b.len() + q]` is query `q`'s score of `docs[i]`.
    pub fn score_batch(&self, b: &QueryBatch, docs: &[u32], out: &mut [f32]) {
        assert_eq!(b.dim(), self.dim, "query and matrix dims differ");
        assert_eq!(out.len(), docs.len() * b.len(), "one score per query and document");
        let n = b.len();
        with_repr!(self.token_type, R => out
        .par_chunks_mut(CHUNK * n)
        .zip(docs.par_chunks(CHUNK))
        .for_each(|(o, d)| {
            for (o, &d) in o.chunks_exact_mut(n).zip(d) {
                R::maxsim_batch(b, self.doc(d), o);
            }
        }))
    }

    /// The `k` best of `docs` by the screening score over their codes, best first.
    ///
    /// # Panics
    /// If the matrix has no codes.
    pub fn screen_top_k(&self, q: &CodeQuery, docs: &[u32], k: usize) -> Vec<Hit<u32>> {
        assert_eq!(self.screening, Screening::Binary, "the matrix has no screening codes");
        assert_eq!(q.dim(), self.dim, "query and matrix dims differ");
        top_k_by(docs, k, |d| hamming_maxsim(q, self.doc(d).codes))
    }
}

/// The `k` best of `docs` by `score`, scored in parallel, best first (ties:
/// smaller key first).
pub fn top_k_by(docs: &[u32], k: usize, score: impl Fn(u32) -> f32 + Sync) -> Vec<Hit<u32>> {
    docs.par_chunks(CHUNK)
        .fold(
            || TopK::new(k),
            |mut t, chunk| {
                for &d in chunk {
                    t.push(score(d), d);
                }
                t
            },
        )
        .reduce(
            || TopK::new(k),
            |mut a, b| {
                a.merge(b);
                a
            },
        )
        .into_sorted_vec()
}
