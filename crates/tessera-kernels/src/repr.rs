//! Stored token representations: one sealed [`TokenRepr`] impl per token type
//! of the format, carrying that type's encoding and its MaxSim kernel. Code
//! that scores stored tokens takes a [`TokenMatrix`] (a segment's whole token
//! data) or a [`StoredRows`] (one document) with its [`Repr`] (the token type
//! and what the type needs to be read: for residual types the codebook's
//! centroids and tables, a [`Codec`]), chosen once when the segment opens;
//! [`TokenMatrix`] matches on it once per call and runs the type's
//! monomorphised loop.
//!
//! Adding a token type: a variant in `tessera_format::TokenType` (its id, name
//! and sizes), one `TokenRepr` impl here, and one arm in [`with_repr!`]; a type
//! that needs more than its rows to be read carries it in [`Repr`].

use crate::codes::{CodeQuery, hamming_maxsim, sign_codes};
pub use crate::residual::Codec;
use crate::{Hit, Query, QueryBatch, TopK};
use half::f16;
use rayon::prelude::*;
pub use tessera_format::segment::StoredRows;
pub use tessera_format::{Screening, TokenType};

mod sealed {
    pub trait Sealed {}
}

/// How stored rows are read: their token type and, for a residual type,
/// the codebook they are coded with.
#[derive(Debug, Clone, Copy)]
pub struct Repr<'a> {
    pub token_type: TokenType,
    /// Residual types' codebook (centroids and tables); `None` for the others.
    pub codec: Option<Codec<'a>>,
}

impl<'a> Repr<'a> {
    /// A type read from its rows alone (f16, int8).
    ///
    /// # Panics
    /// For a residual type.
    pub fn plain(token_type: TokenType) -> Self {
        assert!(!token_type.is_residual(), "{} rows are read through a codebook", token_type.name());
        Self { token_type, codec: None }
    }

    /// Residual rows coded with `codec`'s codebook (its bits give the type).
    pub fn residual(codec: Codec<'a>) -> Self {
        let token_type = if codec.bits == 2 { TokenType::Residual2 } else { TokenType::Residual4 };
        Self { token_type, codec: Some(codec) }
    }

    /// Bytes of one stored row.
    pub fn row_bytes(&self, dim: usize) -> usize {
        self.token_type.row_bytes(dim)
    }
}

/// One element type of stored tokens. `codec` is the [`Repr`]'s: the
/// codebook residual types are read (and coded) with, `None` for the others.
pub trait TokenRepr: sealed::Sealed + Send + Sync + 'static {
    const TYPE: TokenType;

    /// Appends the stored form of `src` (`n × dim` values) to `rows`
    /// (TOKENS bytes) and `scales`; residual types code token `i` with
    /// centroid `codes[i]` (the others ignore `codes`). Deterministic: the
    /// same input always gives the same bytes (WAL replay relies on it).
    fn encode(
        src: &[f32],
        dim: usize,
        codec: Option<&Codec<'_>>,
        codes: &[u16],
        rows: &mut Vec<u8>,
        scales: &mut Vec<f32>,
    );

    /// The f32 values the stored rows stand for (`out.len() == n × dim`).
    fn decode(doc: StoredRows<'_>, dim: usize, codec: Option<&Codec<'_>>, out: &mut [f32]);

    /// MaxSim of `q` against one document.
    fn maxsim(q: &Query, doc: StoredRows<'_>, codec: Option<&Codec<'_>>) -> f32;

    /// MaxSim of every query of `b` against one document in one pass, into
    /// `out` (one score per query, each equal to [`maxsim`](Self::maxsim) alone).
    fn maxsim_batch(b: &QueryBatch, doc: StoredRows<'_>, codec: Option<&Codec<'_>>, out: &mut [f32]);
}

/// f16 tokens, stored as given.
pub enum F16 {}
/// Per-token symmetric int8 tokens: `scale = max |x| / 127`, `code = round(x / scale)`.
pub enum Int8 {}
/// Residual tokens of `BITS` (2 or 4) bits per dimension: a centroid code
/// and a bucket per dimension ([`crate::residual`]).
pub enum Residual<const BITS: u32> {}
pub type Residual2 = Residual<2>;
pub type Residual4 = Residual<4>;

impl sealed::Sealed for F16 {}
impl sealed::Sealed for Int8 {}
impl<const BITS: u32> sealed::Sealed for Residual<BITS> {}

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

    fn encode(src: &[f32], _: usize, _: Option<&Codec<'_>>, _: &[u16], rows: &mut Vec<u8>, _: &mut Vec<f32>) {
        rows.reserve(src.len() * 2);
        rows.extend(src.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()));
    }

    fn decode(doc: StoredRows<'_>, _dim: usize, _: Option<&Codec<'_>>, out: &mut [f32]) {
        <f16 as crate::Element>::to_f32_slice(&f16_rows(doc.rows), out);
    }

    #[inline]
    fn maxsim(q: &Query, doc: StoredRows<'_>, _: Option<&Codec<'_>>) -> f32 {
        crate::maxsim(q, &f16_rows(doc.rows))
    }

    #[inline]
    fn maxsim_batch(b: &QueryBatch, doc: StoredRows<'_>, _: Option<&Codec<'_>>, out: &mut [f32]) {
        crate::maxsim_batch(b, &f16_rows(doc.rows), out)
    }
}

impl TokenRepr for Int8 {
    const TYPE: TokenType = TokenType::Int8;

    fn encode(src: &[f32], dim: usize, _: Option<&Codec<'_>>, _: &[u16], rows: &mut Vec<u8>, scales: &mut Vec<f32>) {
        for t in src.chunks_exact(dim) {
            let max = t.iter().fold(0f32, |m, x| m.max(x.abs()));
            let scale = max / 127.0;
            let code = |x: f32| if max > 0.0 { (x / scale).round().clamp(-127.0, 127.0) } else { 0.0 };
            rows.extend(t.iter().map(|&x| code(x) as i8 as u8));
            scales.push(scale);
        }
    }

    fn decode(doc: StoredRows<'_>, dim: usize, _: Option<&Codec<'_>>, out: &mut [f32]) {
        let n = doc.scales.len();
        crate::kernel::dequantize_rows(bytemuck::cast_slice(doc.rows), doc.scales, 0, n, dim, out);
    }

    #[inline]
    fn maxsim(q: &Query, doc: StoredRows<'_>, _: Option<&Codec<'_>>) -> f32 {
        crate::maxsim_int8(q, bytemuck::cast_slice(doc.rows), doc.scales)
    }

    #[inline]
    fn maxsim_batch(b: &QueryBatch, doc: StoredRows<'_>, _: Option<&Codec<'_>>, out: &mut [f32]) {
        crate::maxsim_int8_batch(b, bytemuck::cast_slice(doc.rows), doc.scales, out)
    }
}

/// The codec residual rows of `BITS` bits are read with.
///
/// # Panics
/// Without one, or with one of other bits or dim (a caller's bug: a
/// segment's [`Repr`] carries its codebook).
fn codec_of<'c, 'a, const BITS: u32>(codec: Option<&'c Codec<'a>>, dim: usize) -> &'c Codec<'a> {
    let c = codec.expect("residual rows are read through their codebook");
    assert_eq!((c.bits, c.dim), (BITS, dim), "the codec's bits and dim are the rows'");
    c
}

impl<const BITS: u32> TokenRepr for Residual<BITS> {
    const TYPE: TokenType = if BITS == 2 { TokenType::Residual2 } else { TokenType::Residual4 };

    fn encode(src: &[f32], dim: usize, codec: Option<&Codec<'_>>, codes: &[u16], rows: &mut Vec<u8>, _: &mut Vec<f32>) {
        let c = codec_of::<BITS>(codec, dim);
        assert_eq!(codes.len() * dim, src.len(), "one centroid code per token");
        for (x, &code) in src.chunks_exact(dim).zip(codes) {
            c.encode_row(x, code, rows);
        }
    }

    fn decode(doc: StoredRows<'_>, dim: usize, codec: Option<&Codec<'_>>, out: &mut [f32]) {
        codec_of::<BITS>(codec, dim).decode(doc.rows, out)
    }

    #[inline]
    fn maxsim(q: &Query, doc: StoredRows<'_>, codec: Option<&Codec<'_>>) -> f32 {
        codec_of::<BITS>(codec, q.dim()).maxsim(q, doc.rows)
    }

    #[inline]
    fn maxsim_batch(b: &QueryBatch, doc: StoredRows<'_>, codec: Option<&Codec<'_>>, out: &mut [f32]) {
        codec_of::<BITS>(codec, b.dim()).maxsim_batch(b, doc.rows, out)
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
            $crate::TokenType::Residual2 => {
                type $R = $crate::repr::Residual2;
                $body
            }
            $crate::TokenType::Residual4 => {
                type $R = $crate::repr::Residual4;
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
    /// Encodes `src` (`n × dim` f16 values) as `t` (f16 or int8), with codes
    /// if `s` asks for them.
    ///
    /// # Panics
    /// For a residual type (coded by [`encode_coded`](Self::encode_coded)).
    pub fn encode(t: TokenType, s: Screening, src: &[f16], dim: usize) -> Self {
        let values: Vec<f32> = src.iter().map(|x| x.to_f32()).collect();
        Self::encode_coded(Repr::plain(t), s, &values, &[], dim)
    }

    /// Encodes `src` (`n × dim` values) as `repr`'s type; a residual type
    /// codes token `i` with its codec's centroid `codes[i]`. Screening codes
    /// are the values' signs.
    pub fn encode_coded(repr: Repr<'_>, s: Screening, src: &[f32], codes: &[u16], dim: usize) -> Self {
        let mut e = Self::default();
        let codec = repr.codec.as_ref();
        with_repr!(repr.token_type, R => R::encode(src, dim, codec, codes, &mut e.rows, &mut e.scales));
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

/// MaxSim of `q` against one stored document read as `r`.
pub fn maxsim_stored(r: Repr<'_>, q: &Query, doc: StoredRows<'_>) -> f32 {
    with_repr!(r.token_type, R => R::maxsim(q, doc, r.codec.as_ref()))
}

/// MaxSim of every query of `b` against one stored document read as `r`, into `out`.
pub fn maxsim_stored_batch(r: Repr<'_>, b: &QueryBatch, doc: StoredRows<'_>, out: &mut [f32]) {
    with_repr!(r.token_type, R => R::maxsim_batch(b, doc, r.codec.as_ref(), out))
}

/// The f32 values of one stored document read as `r` (`n × dim`).
pub fn decode_stored(r: Repr<'_>, doc: StoredRows<'_>, dim: usize) -> Vec<f32> {
    let n = doc.rows.len() / r.row_bytes(dim);
    let mut out = vec![0f32; n * dim];
    with_repr!(r.token_type, R => R::decode(doc, dim, r.codec.as_ref(), &mut out));
    out
}

/// The token data of many documents of one type: what a segment holds.
/// Document `i` is token rows `offsets[i] .. offsets[i + 1]`.
#[derive(Debug, Clone, Copy)]
pub struct TokenMatrix<'a> {
    pub repr: Repr<'a>,
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
        let row = self.repr.row_bytes(self.dim);
        let w = self.screening.code_words(self.dim);
        StoredRows {
            rows: &self.rows[a * row..b * row],
            scales: if self.scales.is_empty() { &[] } else { &self.scales[a..b] },
            codes: &self.codes[a * w..b * w],
        }
    }

    /// The f32 values of document `i`.
    pub fn decode(&self, i: u32) -> Vec<f32> {
        decode_stored(self.repr, self.doc(i), self.dim)
    }

    /// The `k` best of `docs` by exact MaxSim, best first (ties: smaller index first).
    pub fn top_k(&self, q: &Query, docs: &[u32], k: usize) -> Vec<Hit<u32>> {
        assert_eq!(q.dim(), self.dim, "query and matrix dims differ");
        let codec = self.repr.codec.as_ref();
        with_repr!(self.repr.token_type, R => top_k_by(docs, k, |d| R::maxsim(q, self.doc(d), codec)))
    }

    /// For every query of `b`, the `k` best of `docs` by exact MaxSim, best
    /// first: one pass over each document serves the whole batch.
    pub fn top_k_batch(&self, b: &QueryBatch, docs: &[u32], k: usize) -> Vec<Vec<Hit<u32>>> {
        assert_eq!(b.dim(), self.dim, "query and matrix dims differ");
        let n = b.len();
        let fresh = || (0..n).map(|_| TopK::new(k)).collect::<Vec<_>>();
        let codec = self.repr.codec.as_ref();
        with_repr!(self.repr.token_type, R => docs
        .par_chunks(CHUNK)
        .fold(
            || (fresh(), vec![0f32; n]),
            |(mut tops, mut scores), chunk| {
                for &d in chunk {
                    R::maxsim_batch(b, self.doc(d), codec, &mut scores);
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
        let codec = self.repr.codec.as_ref();
        with_repr!(self.repr.token_type, R => out
        .par_chunks_mut(CHUNK * n)
        .zip(docs.par_chunks(CHUNK))
        .for_each(|(o, d)| {
            for (o, &d) in o.chunks_exact_mut(n).zip(d) {
                R::maxsim_batch(b, self.doc(d), codec, o);
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
