//! The token-centroid index in the engine: a collection's codebooks (one
//! file each, loaded once), training a codebook from a sealed segment, and
//! building a segment's centroid index — codes by assignment to the current
//! codebook, or copied from the segments a merge reads when they were coded
//! with it. The formats and the probing are `tessera_index::centroids`.
//!
//! The codebook policy:
//! - the first segment of at least `min_train_tokens` tokens trains the
//!   codebook (`k` centroids: the configured number, or `auto_k` of the
//!   collection's tokens — or of its `expected_tokens` when more —, at most
//!   one per 16 tokens of that segment);
//!   smaller segments sealed before it get no centroid index and are scored
//!   exactly, as the memtable is;
//! - every later segment is coded with the current codebook, which a
//!   segment's index names (by its file and the CRC of its centroids);
//! - a merge retrains the codebook from its output when the output's tokens
//!   are served worse than the codebook's training sample by more than
//!   `drift` (mean cosine to their centroid), or — with an automatic `k` —
//!   when the collection (or what it is expected to hold) has grown to where
//!   `auto_k` is twice the codebook's `k` (a 4× growth in tokens).
//!   Older segments are then coded again with the new codebook by the
//!   maintenance task ([`recode`]: their tokens are not rewritten, only their
//!   centroid index), oldest first, unless it serves their tokens worse than
//!   their own (a codebook retrained on drifted tokens): those keep theirs.
//!   A search probes each codebook in use once. Without this, a collection
//!   that grew past its first codebook kept most of its segments on it — at
//!   20× the real data, 14 of 16 segments on 2,048 centroids instead of
//!   16,384, and recall@10 at 571 candidates fell from 0.992 to 0.945.
//!
//! Residual storage (`residual2`, `residual4`) stores each token as its code
//! in a codebook plus its residual's buckets ([`Coder`]), so the codebook also
//! learns the bucket tables when it is trained, and a segment's rows are tied
//! to the codebook they were coded with:
//! - segments sealed before the first codebook are f16 (the memtable's form);
//!   the seal that trains the codebook writes its segment again as residual;
//! - a merge copies the rows of segments coded with the current codebook and
//!   codes the others' (decoded) values again; should it retrain the
//!   codebook, its output is coded once more with the new one;
//! - [`recode`] leaves residual segments alone (their rows need their own
//!   codebook): they move to a newer codebook when they are merged.

use crate::codebook::{CentroidIndex, Codebook};
use crate::config::CollectionConfig;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::manifest::{self, Manifest};
use crate::segment::{Segment, SegmentView};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_format::segment::{SegmentDoc, StoredRows};
use tessera_index::centroids::{self as cx, CentroidParams, CodebookInfo, IvfSource, Quantizer, ResidualTables};
use tessera_kernels::residual;
use tessera_kernels::{EncodedTokens, Repr, Screening, TokenType};

/// Documents per parallel assignment task.
const ASSIGN_DOCS: usize = 16;

/// Codes tokens as residual rows with a codebook, for a seal or merge of a
/// residual collection: each token gets its centroid by routing (as the
/// centroid index codes tokens) and its residual's buckets. Rows already
/// coded with this codebook are copied as they are, so a token is coded
/// again only when its codebook changes — from its kept copy when it has
/// one (then nothing is lost to coding twice), else from its decoded
/// values. Screening codes are kept as given (the signs of the values first
/// stored). With `keep`, each document's kept copy is made too: copied from
/// its source's, or from the f16 rows it had before it was first coded.
pub(crate) struct Coder<'a> {
    cb: &'a Codebook,
    screening: Screening,
    keep: Option<TokenType>,
}

/// A document's rows as a [`Coder`] coded them.
pub(crate) struct Coded {
    pub tokens: EncodedTokens,
    /// Its kept copy's rows (with `keep`).
    pub kept: Option<EncodedTokens>,
    /// Each token's centroid.
    pub codes: Vec<u16>,
    /// Sum of the tokens' cosines to their centroid, over `count` nonzero tokens.
    pub cos_sum: f64,
    pub count: usize,
}

/// Where a document's rows come from: how they are read, and for residual
/// rows the identity of their codebook.
#[derive(Clone, Copy)]
pub(crate) struct RowsFrom<'a> {
    pub repr: Repr<'a>,
    pub codebook: Option<u32>,
}

impl<'a> RowsFrom<'a> {
    /// The memtable's (and pre-codebook segments') f16 rows.
    pub fn plain(t: TokenType) -> Self {
        Self { repr: Repr::plain(t), codebook: None }
    }
}

/// One document to write into a segment: the segment writer's view of it,
/// how its rows are read, and its kept rows (verified) if its source has
/// them — of the collection's `keep` type, which the [`Coder`] knows.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub doc: SegmentDoc<'a>,
    pub from: RowsFrom<'a>,
    pub kept: Option<StoredRows<'a>>,
}

impl<'a> Coder<'a> {
    /// A coder with `cb`, which must have residual tables; `keep`: the kept
    /// copy's token type, if the collection keeps one.
    pub fn new(cb: &'a Codebook, screening: Screening, keep: Option<TokenType>) -> Self {
        assert!(cb.residual.is_some(), "residual rows are coded with a codebook with tables");
        Self { cb, screening, keep }
    }

    pub fn codebook(&self) -> &'a Codebook {
        self.cb
    }

    pub fn token_type(&self) -> TokenType {
        self.cb.repr().token_type
    }

    pub fn keep(&self) -> Option<TokenType> {
        self.keep
    }

    /// Codes one document.
    pub fn code(&self, s: &Source<'_>) -> Coded {
        let dim = self.cb.info.dim;
        let repr = self.cb.repr();
        let doc = s.doc.tokens;
        // The most precise values the source has: its kept copy's, else its rows'.
        let values = match (s.kept, self.keep) {
            (Some(k), Some(t)) => tessera_kernels::decode_stored(Repr::plain(t), k, dim),
            _ => tessera_kernels::decode_stored(s.from.repr, doc, dim),
        };
        let (tokens, codes, dots) =
            if s.from.codebook == Some(self.cb.identity) && s.from.repr.token_type == repr.token_type {
                // Coded with this codebook already: the rows as they are.
                let rb = repr.row_bytes(dim);
                let codes: Vec<u16> = doc.rows.chunks_exact(rb).map(|r| u16::from_le_bytes([r[0], r[1]])).collect();
                let centroids = repr.codec.expect("a residual codec").centroids;
                let dots: Vec<f32> = values
                    .chunks_exact(dim)
                    .zip(&codes)
                    .map(|(x, &c)| x.iter().zip(&centroids[c as usize * dim..][..dim]).map(|(a, b)| a * b).sum())
                    .collect();
                (EncodedTokens { rows: doc.rows.to_vec(), scales: Vec::new(), codes: doc.codes.to_vec() }, codes, dots)
            } else {
                let n = values.len() / dim;
                let (mut c, mut dots) = (vec![0u32; n], vec![0f32; n]);
                self.cb.quantizer.nearest_serial(&values, &mut c, &mut dots);
                let codes: Vec<u16> = c.into_iter().map(|c| c as u16).collect();
                let mut tokens = EncodedTokens::encode_coded(repr, Screening::None, &values, &codes, dim);
                if self.screening != Screening::None {
                    tokens.codes = doc.codes.to_vec();
                }
                (tokens, codes, dots)
            };
        let kept = self.keep.map(|t| match s.kept {
            Some(k) => EncodedTokens { rows: k.rows.to_vec(), scales: k.scales.to_vec(), codes: Vec::new() },
            None => EncodedTokens::encode_coded(Repr::plain(t), Screening::None, &values, &[], dim),
        });
        let (cos_sum, count) = cx::cosine_sum(&values, dim, &dots);
        Coded { tokens, kept, codes, cos_sum, count }
    }
}

/// What sealing a segment of a centroid collection produced.
pub(crate) struct Built {
    /// The segment's index and its file id (none: the segment is scored exactly).
    pub index: Option<(CentroidIndex, u64)>,
    /// A codebook trained for this segment, which becomes the current one.
    pub trained: Option<Arc<Codebook>>,
    /// Seconds spent training it.
    pub train_s: f64,
    /// Residual storage: the segment is to be written again coded with
    /// this codebook (just trained), and its index built then (`index` is none).
    pub recode: Option<Arc<Codebook>>,
}

/// Where and how a collection's centroid indexes are built.
pub(crate) struct Target<'a> {
    /// The collection's folder.
    pub dir: &'a Path,
    pub config: &'a CollectionConfig,
    pub params: &'a CentroidParams,
    /// Tokens in the collection (its segments and memtable) as this segment is sealed.
    pub tokens: usize,
    /// The collection's other segments: a codebook trained now samples
    /// their tokens with this segment's, so that it serves the whole
    /// collection (not a merge's share of it) when they are coded again.
    pub others: &'a [SegmentView],
}

/// Builds the centroid index of `seg`, just written into `t.dir`. `current`
/// is the collection's codebook; `sources` are the segment views a merge
/// read, in the order their live rows were written (empty for a flush);
/// `coded`: a residual segment's codes in `current` and their mean cosine,
/// as its rows were coded. New files are added to `created` and named in
/// `m` (the caller commits).
pub(crate) fn build(
    t: &Target<'_>,
    seg: &Segment,
    current: Option<&Arc<Codebook>>,
    sources: &[SegmentView],
    coded: Option<(Vec<u16>, f32)>,
    m: &mut Manifest,
    created: &mut Vec<PathBuf>,
) -> Result<Built> {
    let Target { dir, config, params, tokens, .. } = *t;
    let n_tokens = seg.n_tokens();
    let (mut trained, mut train_s) = (None, 0.0);
    let start = std::time::Instant::now();
    let codebook = match current {
        Some(cb) => cb.clone(),
        None if n_tokens as u64 >= params.min_train_tokens && n_tokens > 0 => {
            let cb = train(t, seg, m, created)?;
            train_s = start.elapsed().as_secs_f64();
            trained = Some(cb.clone());
            cb
        }
        None => return Ok(Built { index: None, trained: None, train_s, recode: None }),
    };
    let residual = config.storage.is_residual();
    let (mut codes, mut similarity) = match coded {
        Some(c) => c,
        None if residual => {
            // An f16 segment sealed as the codebook was trained.
            assert!(trained.is_some(), "residual segments are coded when a codebook exists");
            return Ok(Built { index: None, trained, train_s, recode: Some(codebook) });
        }
        None => copied_codes(sources, &codebook).unwrap_or_else(|| assign(seg, &codebook)),
    };
    let sampled = n_tokens + t.others.iter().map(|sv| sv.seg.n_tokens()).sum::<usize>();
    if trained.is_none() && !sources.is_empty() && needs_retraining(params, &codebook, sampled, tokens, similarity) {
        let start = std::time::Instant::now();
        let cb = train(t, seg, m, created)?;
        train_s = start.elapsed().as_secs_f64();
        if residual {
            return Ok(Built { index: None, trained: Some(cb.clone()), train_s, recode: Some(cb) });
        }
        (codes, similarity) = assign(seg, &cb);
        trained = Some(cb);
    }
    let cb = trained.as_ref().unwrap_or(&codebook);
    let fid = write_index(dir, config, seg, cb, &codes, similarity, m, created)?;
    let index = CentroidIndex::open(&dir.join(manifest::ivf_file(fid)), seg.matrix().offsets, cb.clone())?;
    Ok(Built { index: Some((index, fid)), trained, train_s, recode: None })
}

/// Codes every token of `seg` (a sealed segment of the collection in `dir`,
/// with a centroid index) with `cb` and writes its new centroid index;
/// returns the file id (named in `m`, added to `created`: the caller commits
/// it as the segment's index) — or `None`, writing nothing, when `cb`
/// serves the tokens worse (mean cosine to their centroid) than the
/// segment's codebook does.
pub(crate) fn recode(
    dir: &Path,
    config: &CollectionConfig,
    seg: &Segment,
    cb: &Arc<Codebook>,
    m: &mut Manifest,
    created: &mut Vec<PathBuf>,
) -> Result<Option<u64>> {
    let (codes, similarity) = assign(seg, cb);
    if seg.centroid_index().is_some_and(|ci| similarity < ci.mean_similarity()) {
        return Ok(None);
    }
    write_index(dir, config, seg, cb, &codes, similarity, m, created).map(Some)
}

/// Writes the centroid index file of `seg` from its tokens' `codes` in `cb`.
#[allow(clippy::too_many_arguments)]
fn write_index(
    dir: &Path,
    config: &CollectionConfig,
    seg: &Segment,
    cb: &Codebook,
    codes: &[u16],
    similarity: f32,
    m: &mut Manifest,
    created: &mut Vec<PathBuf>,
) -> Result<u64> {
    let bytes = cx::ivf::build(&IvfSource {
        dim: config.dim,
        k: cb.info.k,
        codebook: cb.identity,
        codes,
        doc_offsets: seg.matrix().offsets,
        mean_similarity: similarity,
    })
    .map_err(|e| Error::InvalidArgument(format!("centroid index: {e}")))?;
    let fid = m.alloc_file_id();
    let path = dir.join(manifest::ivf_file(fid));
    created.push(path.clone());
    fsutil::write_new(&path, &bytes)?;
    Ok(fid)
}

/// Whether a merge's output, of a collection of `collection` tokens, should
/// get a new codebook (see the module docs); `sampled`: the tokens a new
/// codebook would be trained from (the output's and the other segments').
fn needs_retraining(p: &CentroidParams, cb: &Codebook, sampled: usize, collection: usize, similarity: f32) -> bool {
    let drifted = cb.info.mean_similarity - similarity > p.drift;
    drifted || p.outgrown(cb.info.k, sampled, collection)
}

/// Trains a codebook on a sample of the tokens of `seg` and of the
/// collection's other segments (`t.others`), and writes its file. (Trained
/// on a merge's output alone, a codebook sized for the whole collection
/// learnt a slice of it: at 20× the real data, 16,384 centroids from 525k
/// tokens of 2,228 documents.)
fn train(t: &Target<'_>, seg: &Segment, m: &mut Manifest, created: &mut Vec<PathBuf>) -> Result<Arc<Codebook>> {
    let Target { dir, config, params, tokens, others } = *t;
    let segments: Vec<&Segment> = std::iter::once(seg).chain(others.iter().map(|sv| &*sv.seg)).collect();
    let n_tokens: usize = segments.iter().map(|s| s.n_tokens()).sum();
    let k = params.k_for(n_tokens, tokens);
    let rows = cx::sample_rows(n_tokens, CentroidParams::sample_for(k, n_tokens), params.seed);
    let mut sample = Vec::with_capacity(rows.len() * config.dim);
    let (mut start, mut at) = (0, 0);
    for s in &segments {
        let end = start + s.n_tokens();
        let take = rows[at..].partition_point(|&r| r < end);
        let local: Vec<usize> = rows[at..at + take].iter().map(|&r| r - start).collect();
        sample.extend(sample_tokens(s, &local, config.dim)?);
        (start, at) = (end, at + take);
    }
    let trained = cx::train(&sample, config.dim, k, params.iterations as usize, params.seed);
    let bits = config.storage.residual_bits();
    let tables = (bits > 0).then(|| residual_tables(&trained, &sample, config.dim, bits));
    let info = CodebookInfo {
        dim: config.dim,
        k,
        sample_tokens: rows.len() as u64,
        iterations: params.iterations,
        seed: params.seed,
        mean_similarity: trained.mean_similarity,
    };
    let tables = tables.as_ref().map(|(cutoffs, weights)| ResidualTables { bits, cutoffs, weights });
    let bytes = cx::codebook::write(&trained, &info, tables.as_ref())
        .map_err(|e| Error::InvalidArgument(format!("codebook: {e}")))?;
    let fid = m.alloc_file_id();
    let path = dir.join(manifest::codebook_file(fid));
    created.push(path.clone());
    fsutil::write_new(&path, &bytes)?;
    m.codebook = Some(fid);
    Ok(Arc::new(Codebook::open(&path, fid, config.dim)?))
}

/// The residual tables of a codebook of `bits`, learned from its training
/// sample: each token's residual to the centroid it is coded with (by
/// routing, as stored tokens are), per dimension.
fn residual_tables(t: &cx::Trained, sample: &[f32], dim: usize, bits: u32) -> (Vec<f32>, Vec<f32>) {
    let q = Quantizer::new(&t.centroids, &t.groups, &t.group_offsets, dim);
    let n = sample.len() / dim;
    let (mut codes, mut dots) = (vec![0u32; n], vec![0f32; n]);
    q.nearest(sample, &mut codes, &mut dots);
    let residuals: Vec<f32> =
        sample.iter().enumerate().map(|(i, x)| x - t.centroids[codes[i / dim] as usize * dim + i % dim]).collect();
    residual::train_tables(&residuals, dim, bits)
}

/// The f32 values of the token rows `rows` (ascending) of a segment, as
/// exact scores read them (a residual segment's kept copy, verified, when
/// it has one: a codebook learns the values given, not coded ones).
fn sample_tokens(seg: &Segment, rows: &[usize], dim: usize) -> Result<Vec<f32>> {
    let mtx = seg.exact_matrix();
    let mut out = Vec::with_capacity(rows.len() * dim);
    let mut at = 0;
    for d in 0..mtx.n_docs() {
        let (a, b) = (mtx.offsets[d] as usize, mtx.offsets[d + 1] as usize);
        if at < rows.len() && rows[at] < b {
            seg.check_exact(&[d as u32])?;
            let values = mtx.decode(d as u32);
            while at < rows.len() && rows[at] < b {
                let t = rows[at] - a;
                out.extend_from_slice(&values[t * dim..(t + 1) * dim]);
                at += 1;
            }
        }
    }
    Ok(out)
}

/// Codes every token of `seg` with its nearest centroid, in parallel; and
/// the tokens' mean cosine to their centroid.
fn assign(seg: &Segment, cb: &Codebook) -> (Vec<u16>, f32) {
    let mtx = seg.matrix();
    let docs: Vec<u32> = (0..mtx.n_docs() as u32).collect();
    let parts: Vec<(Vec<u16>, f64, usize)> = docs
        .par_chunks(ASSIGN_DOCS)
        .map(|chunk| {
            let values: Vec<f32> = chunk.iter().flat_map(|&d| mtx.decode(d)).collect();
            let n = values.len() / mtx.dim;
            let (mut c, mut s) = (vec![0u32; n], vec![0f32; n]);
            cb.quantizer.nearest_serial(&values, &mut c, &mut s);
            let (sum, count) = cx::cosine_sum(&values, mtx.dim, &s);
            (c.into_iter().map(|x| x as u16).collect(), sum, count)
        })
        .collect();
    let mut codes = Vec::with_capacity(seg.n_tokens());
    let (mut sum, mut count) = (0f64, 0usize);
    for (c, s, n) in parts {
        codes.extend(c);
        (sum, count) = (sum + s, count + n);
    }
    let mean = if count == 0 { 0.0 } else { (sum / count as f64) as f32 };
    (codes, mean)
}

/// The codes of a merge's output copied from its sources, when every source
/// was coded with `cb` (and the tokens' mean similarity, weighted from the
/// sources'); `None` when one was not.
fn copied_codes(sources: &[SegmentView], cb: &Codebook) -> Option<(Vec<u16>, f32)> {
    if sources.is_empty() {
        return None;
    }
    let indexes: Vec<&CentroidIndex> = sources
        .iter()
        .map(|sv| sv.seg.centroid_index().filter(|ci| ci.codebook.identity == cb.identity))
        .collect::<Option<_>>()?;
    let mut codes = Vec::new();
    let mut weighted = 0f64;
    for (sv, ci) in sources.iter().zip(indexes) {
        let all = ci.codes();
        let off = sv.seg.matrix().offsets;
        let before = codes.len();
        for &r in sv.live.iter() {
            codes.extend_from_slice(&all[off[r as usize] as usize..off[r as usize + 1] as usize]);
        }
        weighted += ci.mean_similarity() as f64 * (codes.len() - before) as f64;
    }
    let mean = if codes.is_empty() { 0.0 } else { (weighted / codes.len() as f64) as f32 };
    Some((codes, mean))
}
