//! BM25 full text for Tessera — the only crate that uses tantivy.
//!
//! Each sealed segment gets one immutable tantivy index ([`build`], then
//! [`TextIndex::open`]) over the texts of its documents, keyed by the
//! document's row in the segment (a `u64` fast field; the text itself is not
//! stored — the segment file keeps it). Documents still in the memtable are
//! scored in memory by [`bm25_doc`] over the tokens of [`analyze`], with the
//! same analyzer and exactly tantivy's BM25 (k1 = 1.2, b = 0.75, tantivy's idf
//! and its quantized document lengths), so that, given the same global
//! [`Stats`] (summed over every index and the memtable), scores from all
//! sources are directly comparable.
//!
//! Scoring: for query terms `t` (deduplicated), a document `d` scores
//! `Σ_t idf(t) · (k1 + 1) · tf / (tf + k1 · (1 − b + b · |d| / avgdl))` with
//! `idf(t) = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))`, `N = Stats::docs`,
//! `avgdl = Stats::tokens / N`, and `|d|` the document's token count rounded
//! down to one of tantivy's 256 field-norm levels (exact up to 40 tokens).

mod analyzer;
mod index;

use std::collections::HashMap;

use tantivy::fieldnorm::FieldNormReader;
use tantivy::query::Bm25Weight;

use analyzer::analyzer;
pub use analyzer::{MAX_TOKEN_BYTES, is_cjk};
pub use index::{TextIndex, UNCHECKED_FILES, build, build_with_memory, meta_checksum};

/// How texts are split into terms. Chosen per collection, recorded in each
/// index's schema, and checked when an index is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// Words, lowercased, English snowball stemming (tantivy's `en_stem`).
    #[default]
    English,
    /// Words, lowercased, no stemming.
    Plain,
    /// Character unigrams + bigrams over runs of CJK characters (lowercased
    /// words elsewhere), for Chinese / Japanese / Korean text without spaces.
    Cjk,
}

/// Errors from building or opening a text index.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The file system failed.
    #[error("text index I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// tantivy reported an error.
    #[error("tantivy: {0}")]
    Tantivy(String),
    /// The index is damaged, incomplete, or not what the caller expects.
    #[error("corrupted text index: {0}")]
    Corrupted(String),
}

impl From<tantivy::TantivyError> for TextError {
    fn from(e: tantivy::TantivyError) -> Self {
        TextError::Tantivy(e.to_string())
    }
}

/// Corpus statistics that make BM25 scores comparable across several indexes
/// and the memtable: sum them (see [`Stats::add`]) over every source, then
/// pass the sum to [`TextIndex::search`] and [`bm25_doc`].
///
/// A "document" is anything that was given text: every `(row, text)` passed
/// to [`build`] counts, even if its text yields no tokens; the memtable must
/// count its documents with text the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Number of documents.
    pub docs: u64,
    /// Total number of tokens over all documents.
    pub tokens: u64,
    /// Number of documents containing each term (only the terms asked about).
    pub doc_freq: HashMap<String, u64>,
}

impl Stats {
    /// Adds `other` into `self` (documents, tokens, and each term's doc freq).
    pub fn add(&mut self, other: &Stats) {
        self.docs += other.docs;
        self.tokens += other.tokens;
        for (term, df) in &other.doc_freq {
            *self.doc_freq.entry(term.clone()).or_default() += df;
        }
    }

    /// Statistics of in-memory documents given as their token lists (e.g. the
    /// memtable's), for `terms`.
    pub fn of_docs<'a>(docs: impl IntoIterator<Item = &'a [String]>, terms: &[String]) -> Stats {
        let terms = unique(terms);
        let mut stats = Stats { doc_freq: terms.iter().map(|t| (t.to_string(), 0)).collect(), ..Stats::default() };
        for doc in docs {
            stats.docs += 1;
            stats.tokens += doc.len() as u64;
            for term in &terms {
                if doc.iter().any(|tok| tok == term) {
                    *stats.doc_freq.get_mut(*term).expect("inserted above") += 1;
                }
            }
        }
        stats
    }
}

/// Tokens of `text` as the index sees them (for memtable scoring and query
/// analysis).
pub fn analyze(lang: Language, text: &str) -> Vec<String> {
    analyzer::tokens_with(&mut analyzer(lang), text)
}

/// Query terms without duplicates, first occurrence first: a query is the OR
/// of its distinct terms, each counted once (in [`bm25_doc`] and in
/// [`TextIndex::search`] alike).
pub(crate) fn unique(terms: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::with_capacity(terms.len());
    for t in terms {
        if !out.contains(&t.as_str()) {
            out.push(t);
        }
    }
    out
}

/// The doc freq used for `term` under `global`, clamped to `[floor, docs]` so
/// tantivy's idf never sees df > N.
pub(crate) fn global_df(global: &Stats, term: &str, missing: u64) -> u64 {
    global.doc_freq.get(term).copied().unwrap_or(missing).min(global.docs)
}

/// BM25 of one in-memory document (its analyzed tokens) for the query `terms`
/// under `global` statistics, computed by tantivy's own [`Bm25Weight`] so it is
/// bit-for-bit the per-term score an index would give the same document
/// (summation order aside).
///
/// Document length: tantivy does not store a document's token count but a u8
/// *field-norm id* (`FieldNormReader::fieldnorm_to_id`: exact up to 40,
/// then ~log-spaced levels, rounded down), and scores with that id. We
/// quantize `doc_tokens.len()` through the same public function and pass the
/// id to `Bm25Weight::score`, so long memtable documents get exactly the
/// length an index would give them. `avgdl` is `global.tokens / global.docs`
/// in f32, as tantivy computes it.
///
/// A term missing from `global.doc_freq` is taken to occur in this document
/// only (df = 1); `global.docs == 0` scores 0.
pub fn bm25_doc(doc_tokens: &[String], terms: &[String], global: &Stats) -> f32 {
    if global.docs == 0 {
        return 0.0;
    }
    let len = u32::try_from(doc_tokens.len()).unwrap_or(u32::MAX);
    let fieldnorm_id = FieldNormReader::fieldnorm_to_id(len);
    let avg_fieldnorm = global.tokens as f32 / global.docs as f32;
    let mut score = 0.0f32;
    for term in unique(terms) {
        let tf = doc_tokens.iter().filter(|t| *t == term).count();
        if tf == 0 {
            continue;
        }
        let df = global_df(global, term, 1).max(1);
        let weight = Bm25Weight::for_one_term_without_explain(df, global.docs, avg_fieldnorm);
        score += weight.score(fieldnorm_id, u32::try_from(tf).unwrap_or(u32::MAX));
    }
    score
}
