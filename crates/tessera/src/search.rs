//! The search pipeline over one snapshot, in one place: a [`Searcher`].
//!
//! Two-stage search: the coarse stage (per-segment HNSW over one vector per
//! document) picks `candidates`; on a collection with screening codes, their
//! Hamming MaxSim keeps the best `rerank`; exact MaxSim ranks what is left
//! (segments through their token type's kernel, straight from the memory map;
//! the memtable document by document), and everything merges into one top-k.
//! Exact search skips the coarse stage and the screening. A payload
//! [`Filter`] applies in every stage: inside the graph traversal, to the rows
//! screened and scored, and to the memtable. [`Collection::rerank`] scores
//! caller-chosen ids exactly.

use crate::collection::Collection;
use crate::config::{CentroidParams, IndexConfig, IndexKind};
use crate::doc::Tokens;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::segment::CoarseIndex;
use crate::snapshot::{Loc, Ranked, SearchHit, Snapshot, allowed_rows, materialize};
use rayon::prelude::*;
use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tessera_index::Encoder;
use tessera_index::centroids::Probe;
use tessera_kernels::{
    CodeQuery, Hit, Query, QueryBatch, Repr, Screening, TopK, decode_stored, maxsim_stored, maxsim_stored_batch,
};

/// Largest `k`, `candidates`, `rerank` and `ef` a search accepts.
pub const MAX_K: usize = 100_000;
/// Fewest candidates the coarse stage hands on unless told otherwise.
pub const DEFAULT_CANDIDATES: usize = 256;
/// Unless told otherwise, a vector index hands on at least this many
/// candidates per result wanted (see [`default_candidates`]).
pub const CANDIDATES_PER_K: usize = 8;
/// The same for a token-centroid index, whose candidates hold more of the
/// exact top-k (see [`default_candidates`]).
pub const CENTROID_CANDIDATES_PER_K: usize = 6;
/// Largest `nprobe` a search accepts.
pub const MAX_NPROBE: usize = 4096;
/// Candidates the screening stage hands to the exact rerank unless told
/// otherwise: at least this many, and [`RERANK_PER_K`]·k ([`default_rerank`]).
pub const DEFAULT_RERANK: usize = 64;
/// The screened rerank's multiple of `k` ([`default_rerank`]).
pub const RERANK_PER_K: usize = 4;
/// Most queries one [`Collection::search_batch`] takes.
pub const MAX_BATCH: usize = 1024;
/// Most query tokens, over all its queries, one [`Collection::search_batch`] takes.
pub const MAX_BATCH_TOKENS: usize = 1 << 18;
/// Queries scored together in one pass of the multi-query kernel (its packed
/// queries then stay in L2).
const KERNEL_BATCH: usize = 32;
/// Shared candidates scored per step of a batch (bounds the score buffer).
const SHARED_CHUNK: usize = 4096;

/// How to search.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SearchParams {
    /// Number of results.
    pub k: usize,
    /// Two-stage search: how many documents the candidate stage (the HNSW
    /// of single vectors, or the token centroids) retrieves for the exact
    /// MaxSim rerank, over all segments (at least `k` are used); `None`:
    /// [`default_candidates`] of the index, `k` and the collection's size. The memtable and segments without a
    /// candidate index are always scored exactly.
    pub candidates: Option<usize>,
    /// HNSW beam width (vector indexes); `None`: the candidates (it is never below that).
    pub ef: Option<usize>,
    /// Centroids probed per query token (centroid indexes); `None`: the collection's `nprobe`.
    pub nprobe: Option<usize>,
    /// Score every live document exactly, skipping the coarse stage.
    pub exact: bool,
    /// Only documents whose payload matches are returned.
    pub filter: Option<Filter>,
    /// Screened two-stage search (collections with `screening: binary`): how
    /// many of the coarse candidates, ranked by their screening codes, are
    /// scored by exact MaxSim (at least `k`; one of at least `candidates`
    /// skips the screening); `None`: [`default_rerank`] of `k`. Refused on exact
    /// search and on collections without screening codes.
    pub rerank: Option<usize>,
    /// Stop scoring at this instant and answer [`Error::DeadlineExceeded`]
    /// (checked between segments and every [`DEADLINE_ROWS`] rows).
    pub deadline: Option<Instant>,
}

/// Rows scored between two looks at a search's deadline.
pub const DEADLINE_ROWS: usize = 1024;

/// Whether `deadline` has passed.
pub(crate) fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// `Err(DeadlineExceeded)` once `deadline` has passed.
pub(crate) fn check_deadline(deadline: Option<Instant>) -> Result<()> {
    if expired(deadline) { Err(Error::DeadlineExceeded) } else { Ok(()) }
}

impl SearchParams {
    /// Two-stage search for `k` results with the default candidates.
    pub fn new(k: usize) -> Self {
        Self { k, candidates: None, ef: None, nprobe: None, exact: false, filter: None, rerank: None, deadline: None }
    }

    /// Exact search for `k` results.
    pub fn exact(k: usize) -> Self {
        Self { exact: true, ..Self::new(k) }
    }

    pub fn with_candidates(mut self, candidates: usize) -> Self {
        self.candidates = Some(candidates);
        self
    }

    pub fn with_nprobe(mut self, nprobe: usize) -> Self {
        self.nprobe = Some(nprobe);
        self
    }

    /// The candidates the coarse stage hands on in a collection of `docs`
    /// live documents with this index: as given, or the default; never fewer than `k`.
    pub fn effective_candidates(&self, index: IndexKind, docs: usize) -> usize {
        self.candidates.unwrap_or_else(|| default_candidates(index, self.k, docs)).max(self.k)
    }

    pub fn with_ef(mut self, ef: usize) -> Self {
        self.ef = Some(ef);
        self
    }

    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    pub fn with_rerank(mut self, rerank: usize) -> Self {
        self.rerank = Some(rerank);
        self
    }

    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    fn validate(&self) -> Result<()> {
        let check = |name: &str, v: usize| {
            if (1..=MAX_K).contains(&v) {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!("{name} must be in 1..={MAX_K}, got {v}")))
            }
        };
        check("k", self.k)?;
        self.candidates.map_or(Ok(()), |c| check("candidates", c))?;
        if let Some(n) = self.nprobe
            && !(1..=MAX_NPROBE).contains(&n)
        {
            return Err(Error::InvalidArgument(format!("nprobe must be in 1..={MAX_NPROBE}, got {n}")));
        }
        self.rerank.map_or(Ok(()), |r| check("rerank", r))?;
        if self.exact && self.rerank.is_some() {
            return Err(Error::InvalidArgument("rerank applies to two-stage search, not to exact search".into()));
        }
        self.ef.map_or(Ok(()), |ef| check("ef", ef))
    }
}

/// The candidates a two-stage search for `k` results in a collection of
/// `docs` live documents with this index hands to the exact stage unless
/// told otherwise: `max(256, m·k, 2.5·√docs)` (at most [`MAX_K`]), `m` = 8
/// ([`CANDIDATES_PER_K`]) for vector indexes, 6
/// ([`CENTROID_CANDIDATES_PER_K`]) for token centroids. Measured
/// (docs/PERFORMANCE.md), as shares of the exact top-k: on the real data
/// (2,600 documents) 256 keep 0.97 (pooled vectors) to 0.99 (centroids) of
/// the top-10; pooled vectors keep 0.95 of the top-100 at 8·k, centroids
/// 0.98 at 6·k (0.99 at 8·k). On its 20× noisy copy (52,000; all 824
/// queries) 2.5·√docs (571) keep 0.995 of the top-10 with centroids (0.94
/// with pooled vectors) at 1.7× the p50 of pooled 256, and 6·k 0.97 of the
/// top-100 at 1.7× (8·k: 0.985 at 2.15×).
pub fn default_candidates(index: IndexKind, k: usize, docs: usize) -> usize {
    let by_size = (2.5 * (docs as f64).sqrt()).ceil() as usize;
    let per_k = if index == IndexKind::Centroids { CENTROID_CANDIDATES_PER_K } else { CANDIDATES_PER_K };
    DEFAULT_CANDIDATES.max(per_k.saturating_mul(k)).max(by_size).min(MAX_K)
}

/// The rows a screened two-stage search scores exactly when it does not say:
/// `max(64, 4·k)`. Measured (docs/PERFORMANCE.md): 64 keep 0.96 of the exact
/// top-10 at 256 candidates on the real data; for k = 100 at its 800
/// candidates, `k` itself kept only 0.72 of the top-100, 4·k 0.95 (pooled
/// vectors) to 0.98 (centroids) at 70–80 % of the unscreened latency.
pub fn default_rerank(k: usize) -> usize {
    DEFAULT_RERANK.max(RERANK_PER_K.saturating_mul(k))
}

/// A candidate in the global merge; ordered by id so ties break the same way
/// whatever segment a document lives in.
#[derive(PartialEq, Eq)]
struct Cand<'a> {
    id: &'a str,
    at: Loc,
}

impl Ord for Cand<'_> {
    fn cmp(&self, o: &Self) -> Ordering {
        self.id.cmp(o.id)
    }
}
impl PartialOrd for Cand<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The rows of one segment that a stage considers.
#[derive(Debug, Clone)]
pub(crate) enum RowSet {
    /// Every live row.
    Live,
    /// These rows (live ones only).
    Rows(Vec<u32>),
}

impl RowSet {
    fn rows<'a>(&'a self, live: &'a [u32]) -> &'a [u32] {
        match self {
            RowSet::Live => live,
            RowSet::Rows(r) => r,
        }
    }
}

/// Which memtable documents a ranking considers.
#[derive(Clone, Copy)]
enum MemSel<'a> {
    /// Every live document (that passes the filter).
    All,
    /// Only these ids.
    Only(&'a [&'a str]),
}

/// A collection's candidate stage, as a search sees it.
#[derive(Clone, Copy)]
enum Stage<'a> {
    /// No index: exact, or screening over every row.
    None,
    /// One vector per document in an HNSW per segment.
    Vector(&'a Encoder),
    /// Token centroids.
    Centroids(CentroidParams),
}

/// One query against one snapshot: the prepared query, the filter's verdict
/// per row, and every stage of the pipeline.
pub(crate) struct Searcher<'a> {
    snap: &'a Snapshot,
    stage: Stage<'a>,
    screening: Screening,
    /// A residual collection with a kept copy: its residual rows screen the
    /// candidates, the copy scores the rest exactly.
    kept: bool,
    index_kind: IndexKind,
    /// How the memtable's rows are read (the collection's staged storage).
    mem_repr: Repr<'static>,
    q: Query,
    filter: Option<&'a Filter>,
    /// Per segment, whether each row's payload matches the filter (shared by a batch).
    allowed: Option<Arc<Vec<Vec<bool>>>>,
}

impl<'a> Searcher<'a> {
    pub fn new(col: &'a Collection, snap: &'a Snapshot, query: &Tokens, filter: Option<&'a Filter>) -> Result<Self> {
        let allowed = filter.map(|f| Arc::new(allowed_rows(snap, f)));
        Self::with_allowed(col, snap, query, filter, allowed)
    }

    /// [`new`](Self::new) with the filter's verdicts already computed (one
    /// computation for a whole batch).
    fn with_allowed(
        col: &'a Collection,
        snap: &'a Snapshot,
        query: &Tokens,
        filter: Option<&'a Filter>,
        allowed: Option<Arc<Vec<Vec<bool>>>>,
    ) -> Result<Self> {
        let q = Query::new(&query.to_f32_checked(col.dim())?, col.dim());
        let config = col.config();
        let stage = match (&col.encoder, config.index.as_ref().and_then(IndexConfig::centroid_params)) {
            (Some(enc), _) => Stage::Vector(enc),
            (None, Some(cp)) => Stage::Centroids(*cp),
            (None, None) => Stage::None,
        };
        Ok(Self {
            snap,
            stage,
            screening: config.screening,
            kept: config.keep != crate::config::Keep::None,
            index_kind: IndexKind::of(config.index.as_ref()),
            mem_repr: Repr::plain(config.staged_storage()),
            q,
            filter,
            allowed,
        })
    }

    /// Whether row `r` of segment `si` is live and passes the filter.
    fn accept(&self, si: usize, r: u32) -> bool {
        !self.snap.segments[si].deletes.is_deleted(r) && self.allowed.as_ref().is_none_or(|a| a[si][r as usize])
    }

    /// Every live row of segment `si` that passes the filter.
    fn all_of(&self, si: usize) -> RowSet {
        match &self.allowed {
            None => RowSet::Live,
            Some(a) => {
                RowSet::Rows(self.snap.segments[si].live.iter().copied().filter(|&r| a[si][r as usize]).collect())
            }
        }
    }

    fn all(&self) -> Vec<RowSet> {
        (0..self.snap.segments.len()).map(|si| self.all_of(si)).collect()
    }

    fn mem_passes(&self, payload: Option<&str>) -> bool {
        self.filter.is_none_or(|f| f.matches_text(payload))
    }

    /// Live documents that pass the filter.
    fn available(&self) -> usize {
        let segs: usize = match &self.allowed {
            None => self.snap.segments.iter().map(|s| s.live.len()).sum(),
            Some(_) => self.all().iter().zip(&self.snap.segments).map(|(s, sv)| s.rows(&sv.live).len()).sum(),
        };
        segs + self.snap.mem.docs().filter(|d| self.mem_passes(d.payload.as_deref())).count()
    }

    /// The query's vector in the coarse encoder's space.
    fn coarse_query(&self, enc: &Encoder) -> Vec<f32> {
        let mut qv = vec![0f32; enc.dim()];
        enc.encode_query(self.q.tokens(), &mut qv);
        qv
    }

    /// The coarse stage: per segment with an index, its rows among the global
    /// best `n` by coarse score (deleted and filtered-out rows are skipped
    /// inside the graph search or the candidate selection); every accepted
    /// row of a segment without one.
    fn coarse(&self, n: usize, p: &SearchParams) -> Vec<RowSet> {
        let accept = |si: usize| move |r: u32| self.accept(si, r);
        let segs = &self.snap.segments;
        let per_segment: Vec<Option<Vec<(u32, f32)>>> = match self.stage {
            Stage::None => vec![None; segs.len()],
            Stage::Vector(enc) => {
                let qv = self.coarse_query(enc);
                let ef = p.ef.unwrap_or(n).max(n);
                (0..segs.len())
                    .into_par_iter()
                    .map(|si| match &segs[si].seg.index {
                        Some(CoarseIndex::Vector(ix)) => Some(ix.search(&qv, n, ef, accept(si))),
                        _ => None,
                    })
                    .collect()
            }
            Stage::Centroids(cp) => {
                let probes = self.probes(|k| p.nprobe.unwrap_or_else(|| cp.nprobe_for(k)));
                (0..segs.len())
                    .into_par_iter()
                    .map(|si| {
                        let ci = segs[si].seg.centroid_index()?;
                        let probe = &probes.iter().find(|(id, _)| *id == ci.codebook.id)?.1;
                        Some(ci.candidates(probe, n, accept(si)))
                    })
                    .collect()
            }
        };
        let all = self.best_of(&per_segment, n);
        let mut sets: Vec<RowSet> = per_segment
            .iter()
            .enumerate()
            .map(|(si, h)| if h.is_some() { RowSet::Rows(Vec::new()) } else { self.all_of(si) })
            .collect();
        for (_, si, r) in all {
            if let RowSet::Rows(v) = &mut sets[si] {
                v.push(r);
            }
        }
        sets
    }

    /// The global best `n` of the segments' coarse hits, as `(score, segment,
    /// row)`. Scores from different codebooks (segments coded before and
    /// after a retraining) are not on one scale, so each codebook's segments
    /// get a share of `n` in proportion to their live documents, filled with
    /// their best; one scale (a vector index, or one codebook): the best `n`.
    fn best_of(&self, per_segment: &[Option<Vec<(u32, f32)>>], n: usize) -> Vec<(f32, usize, u32)> {
        let order =
            |a: &(f32, usize, u32), b: &(f32, usize, u32)| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2)));
        let scale = |si: usize| self.snap.segments[si].seg.centroid_index().map(|ci| ci.codebook.id);
        let mut scales: Vec<(Option<u64>, usize)> = Vec::new();
        for (si, _) in per_segment.iter().enumerate().filter(|(_, h)| h.is_some()) {
            let live = self.snap.segments[si].live.len();
            match scales.iter_mut().find(|(id, _)| *id == scale(si)) {
                Some((_, d)) => *d += live,
                None => scales.push((scale(si), live)),
            }
        }
        let total: usize = scales.iter().map(|s| s.1).sum::<usize>().max(1);
        let mut out = Vec::new();
        for &(id, docs) in &scales {
            let share = if scales.len() == 1 { n } else { (n * docs).div_ceil(total) };
            let mut group: Vec<(f32, usize, u32)> = per_segment
                .iter()
                .enumerate()
                .filter(|(si, _)| scale(*si) == id)
                .flat_map(|(si, hits)| hits.iter().flatten().map(move |&(r, s)| (s, si, r)))
                .collect();
            group.sort_unstable_by(order);
            group.truncate(share);
            out.extend(group);
        }
        out
    }

    /// The query probed against each codebook the snapshot's segments use
    /// (by codebook id), `nprobe(k)` centroids per query token of a codebook of `k`.
    fn probes(&self, nprobe: impl Fn(usize) -> usize) -> Vec<(u64, Probe)> {
        let mut out: Vec<(u64, Probe)> = Vec::new();
        for sv in &self.snap.segments {
            if let Some(ci) = sv.seg.centroid_index()
                && !out.iter().any(|(id, _)| *id == ci.codebook.id)
            {
                let cb = &ci.codebook;
                out.push((cb.id, Probe::new(&cb.panels, self.q.tokens(), nprobe(cb.info.k))));
            }
        }
        out
    }

    /// The screening stage: of the given rows, the global best `n` by the
    /// Hamming MaxSim of their codes, or — with a kept copy — by the MaxSim
    /// of their residual rows (segments without codes or copy keep theirs).
    fn screen(&self, sets: Vec<RowSet>, n: usize) -> Vec<RowSet> {
        let cq = CodeQuery::new(self.q.tokens(), self.q.dim());
        let screened: Vec<Option<Vec<(f32, u32)>>> = sets
            .par_iter()
            .enumerate()
            .map(|(si, set)| {
                let sv = &self.snap.segments[si];
                let (m, rows) = (sv.seg.matrix(), set.rows(&sv.live));
                let hits = if sv.seg.kept.is_some() {
                    m.top_k(&self.q, rows, n)
                } else if m.screening == Screening::Binary {
                    m.screen_top_k(&cq, rows, n)
                } else {
                    return None;
                };
                Some(hits.into_iter().map(|h| (h.score, h.key)).collect())
            })
            .collect();
        let mut all: Vec<(f32, usize, u32)> =
            screened.iter().enumerate().flat_map(|(si, h)| h.iter().flatten().map(move |&(s, r)| (s, si, r))).collect();
        all.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        all.truncate(n);
        let mut out: Vec<RowSet> = sets
            .into_iter()
            .zip(&screened)
            .map(|(set, s)| if s.is_some() { RowSet::Rows(Vec::new()) } else { set })
            .collect();
        for (_, si, r) in all {
            if let RowSet::Rows(v) = &mut out[si] {
                v.push(r);
            }
        }
        out
    }

    /// The pipeline: exact, or coarse → (screen) → exact rerank. With a
    /// filter, should the stages find fewer than `k` of the matching
    /// documents (a very selective filter), those are scored exactly instead.
    pub fn search(&self, p: &SearchParams) -> Result<Vec<Ranked>> {
        check_params(self.index_kind, self.screens(), p)?;
        let hits = search_group(std::slice::from_ref(self), p)?.pop().unwrap_or_default();
        check_deadline(p.deadline)?;
        Ok(hits)
    }

    /// The rows the exact stage scores: the coarse candidates (`n` of them),
    /// screened down to the rerank count on a screened collection.
    fn candidate_sets(&self, p: &SearchParams, n: usize) -> Vec<RowSet> {
        let screened = self.screens();
        let indexed = !matches!(self.stage, Stage::None);
        let mut sets = if indexed { self.coarse(n, p) } else { self.all() };
        let rerank = p.rerank.unwrap_or_else(|| default_rerank(p.k)).max(p.k);
        // A rerank of at least the candidates keeps them all: nothing to screen.
        if screened && (rerank < n || !indexed) {
            sets = self.screen(sets, rerank);
        }
        sets
    }

    /// Whether a screening stage keeps the best `rerank` of the candidates:
    /// their codes, or a residual collection's rows before its kept copy.
    fn screens(&self) -> bool {
        self.screening != Screening::None || self.kept
    }

    /// Exact MaxSim of the live documents among `ids`, and the ids that are not live.
    pub fn rerank_ids<S: AsRef<str>>(&self, ids: &[S]) -> Result<(Vec<Ranked>, Vec<String>)> {
        let mut seen = std::collections::HashSet::new();
        let mut sets = vec![RowSet::Rows(Vec::new()); self.snap.segments.len()];
        let (mut mem_ids, mut missing) = (Vec::new(), Vec::new());
        for id in ids.iter().map(AsRef::as_ref).filter(|id| seen.insert(*id)) {
            match self.snap.locate(id) {
                Some(Loc::Mem) => mem_ids.push(id),
                Some(Loc::Seg(si, r)) => {
                    if let RowSet::Rows(v) = &mut sets[si] {
                        v.push(r)
                    }
                }
                None => missing.push(id.to_string()),
            }
        }
        let n = sets.iter().map(|s| s.rows(&[]).len()).sum::<usize>() + mem_ids.len();
        let hits = if n == 0 {
            Vec::new()
        } else {
            rank_group(std::slice::from_ref(self), &[&sets], n, MemSel::Only(&mem_ids), None)?.pop().unwrap_or_default()
        };
        Ok((hits, missing))
    }

    /// The coarse stage alone: the `n` best live documents (passing the
    /// filter) by the inner product of encoded query and encoded document,
    /// best first. Documents without an index (memtable, unindexed segments)
    /// are encoded on the fly.
    pub fn coarse_list(&self, enc: &Encoder, n: usize) -> Vec<(String, f32)> {
        let qv = self.coarse_query(enc);
        let storage = self.mem_repr;
        let dim = self.q.dim();
        let coarse_score = |tokens: &[f32]| {
            let mut v = vec![0f32; enc.dim()];
            enc.encode_doc(tokens, &mut v);
            qv.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>()
        };
        let mut all: Vec<(f32, String)> = Vec::new();
        for (si, sv) in self.snap.segments.iter().enumerate() {
            match &sv.seg.index {
                Some(CoarseIndex::Vector(ix)) => all.extend(
                    ix.search(&qv, n, n, |r| self.accept(si, r))
                        .into_iter()
                        .map(|(r, s)| (s, sv.seg.id_of(r as usize).to_string())),
                ),
                _ => {
                    let m = sv.seg.matrix();
                    all.extend(
                        self.all_of(si)
                            .rows(&sv.live)
                            .iter()
                            .map(|&r| (coarse_score(&m.decode(r)), sv.seg.id_of(r as usize).into())),
                    )
                }
            }
        }
        for d in self.snap.mem.docs().filter(|d| self.mem_passes(d.payload.as_deref())) {
            all.push((coarse_score(&decode_stored(storage, d.tokens.view(), dim)), d.id.clone()));
        }
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        all.truncate(n);
        all.into_iter().map(|(s, id)| (id, s)).collect()
    }
}

/// Refuses parameters that are out of range or do not apply to a collection
/// with this index and (`screens`) a screening stage.
pub(crate) fn check_params(index: IndexKind, screens: bool, p: &SearchParams) -> Result<()> {
    p.validate()?;
    if p.nprobe.is_some() && (p.exact || index != IndexKind::Centroids) {
        return Err(Error::InvalidArgument(format!(
            "nprobe applies to two-stage search on a collection with a centroids index; this search is {} on index {}",
            if p.exact { "exact" } else { "two-stage" },
            index
        )));
    }
    if p.ef.is_some() && (p.exact || !matches!(index, IndexKind::Pooled | IndexKind::Muvera)) {
        return Err(Error::InvalidArgument(format!(
            "ef applies to two-stage search on a collection with an HNSW index (pooled or muvera); this search is {} on index {}",
            if p.exact { "exact" } else { "two-stage" },
            index
        )));
    }
    if p.rerank.is_some() && !screens {
        return Err(Error::InvalidArgument(
            "rerank applies to collections with screening codes (screening: binary) or a residual collection's kept copy (keep); this one has neither".into(),
        ));
    }
    Ok(())
}

/// Searches of a group of queries (at most [`KERNEL_BATCH`]) with the same
/// parameters (checked) and filter, over one snapshot: the exact stage scores
/// the documents they share in one pass of the multi-query kernel.
fn search_group(group: &[Searcher<'_>], p: &SearchParams) -> Result<Vec<Vec<Ranked>>> {
    let Some(s0) = group.first() else { return Ok(Vec::new()) };
    if p.exact || (matches!(s0.stage, Stage::None) && !s0.screens()) {
        let all = s0.all();
        return rank_group(group, &vec![&all[..]; group.len()], p.k, MemSel::All, p.deadline);
    }
    let n = p.effective_candidates(s0.index_kind, s0.snap.len());
    let sets: Vec<Vec<RowSet>> = group.par_iter().map(|s| s.candidate_sets(p, n)).collect();
    let refs: Vec<&[RowSet]> = sets.iter().map(Vec::as_slice).collect();
    let mut hits = rank_group(group, &refs, p.k, MemSel::All, p.deadline)?;
    if hits.iter().any(|h| h.len() < p.k) && !expired(p.deadline) {
        let available = s0.available();
        let all = s0.all();
        for (s, h) in group.iter().zip(&mut hits) {
            if h.len() < p.k.min(available) {
                *h = rank_group(std::slice::from_ref(s), &[&all], p.k, MemSel::All, p.deadline)?
                    .pop()
                    .unwrap_or_default();
            }
        }
    }
    Ok(hits)
}

/// Exact MaxSim, for each query of `group`, of its rows of each segment
/// (`sets[query][segment]`) and of the memtable documents chosen (that pass
/// the filter, which the group shares), merged into one top-k per query.
/// Rows that every query (or at least half of them) wants are scored for
/// all at once by the multi-query kernel; the rest query by query, in parallel.
/// Past `deadline` it stops scoring: the caller must then discard the result.
fn rank_group<'a>(
    group: &[Searcher<'a>],
    sets: &[&[RowSet]],
    k: usize,
    mem: MemSel<'_>,
    deadline: Option<Instant>,
) -> Result<Vec<Vec<Ranked>>> {
    let Some(s0) = group.first() else { return Ok(Vec::new()) };
    let snap = s0.snap;
    let nq = group.len();
    let batch = (nq > 1).then(|| QueryBatch::new(&group.iter().map(|s| &s.q).collect::<Vec<_>>()));
    let mut tops: Vec<TopK<Cand<'a>>> = (0..nq).map(|_| TopK::new(k)).collect();
    // Candidate rows are read from disk in one round, before any is scored
    // (whole-segment scans keep the kernel's sequential read-ahead); kept
    // rows are verified as they are read, before they are scored.
    for (si, sv) in snap.segments.iter().enumerate() {
        let mut last: Option<*const u32> = None;
        for set in sets.iter().map(|s| &s[si]) {
            let rows = set.rows(&sv.live);
            if last.replace(rows.as_ptr()) != Some(rows.as_ptr()) {
                if matches!(set, RowSet::Rows(_)) {
                    sv.seg.will_need(rows);
                }
                sv.seg.check_exact(rows)?;
            }
        }
    }
    'segments: for (si, sv) in snap.segments.iter().enumerate() {
        if expired(deadline) {
            break;
        }
        let m = sv.seg.exact_matrix();
        let rows = |qi: usize| sets[qi][si].rows(&sv.live);
        let cand = |r: u32| Cand { id: sv.seg.id_of(r as usize), at: Loc::Seg(si, r) };
        let push = |top: &mut TopK<Cand<'a>>, hits: Vec<Hit<u32>>| {
            for h in hits {
                top.push(h.score, cand(h.key));
            }
        };
        let Some(b) = &batch else {
            for chunk in rows(0).chunks(DEADLINE_ROWS) {
                if expired(deadline) {
                    break 'segments;
                }
                push(&mut tops[0], m.top_k(&s0.q, chunk, k));
            }
            continue;
        };
        // (The same slice for every query, as exact search passes, is found
        // without comparing a million rows per query.)
        if (1..nq).all(|qi| std::ptr::eq(rows(qi), rows(0)) || rows(qi) == rows(0)) {
            for chunk in rows(0).chunks(DEADLINE_ROWS) {
                if expired(deadline) {
                    break 'segments;
                }
                for (top, hits) in tops.iter_mut().zip(m.top_k_batch(b, chunk, k)) {
                    push(top, hits);
                }
            }
            continue;
        }
        // Which queries want each row.
        let mut wants: Vec<(u32, usize)> = (0..nq).flat_map(|qi| rows(qi).iter().map(move |&r| (r, qi))).collect();
        wants.sort_unstable();
        let mut shared: Vec<(u32, u64)> = Vec::new();
        let mut alone: Vec<Vec<u32>> = vec![Vec::new(); nq];
        for run in wants.chunk_by(|a, b| a.0 == b.0) {
            if 2 * run.len() >= nq {
                shared.push((run[0].0, run.iter().fold(0u64, |m, &(_, qi)| m | 1 << qi)));
            } else {
                run.iter().for_each(|&(r, qi)| alone[qi].push(r));
            }
        }
        let mut scores = Vec::new();
        for chunk in shared.chunks(SHARED_CHUNK) {
            if expired(deadline) {
                break 'segments;
            }
            let rows: Vec<u32> = chunk.iter().map(|c| c.0).collect();
            scores.resize(rows.len() * nq, 0.0);
            m.score_batch(b, &rows, &mut scores);
            for (&(r, mask), s) in chunk.iter().zip(scores.chunks_exact(nq)) {
                for (qi, top) in tops.iter_mut().enumerate().filter(|(qi, _)| mask >> qi & 1 == 1) {
                    top.push(s[qi], cand(r));
                }
            }
        }
        let rest: Vec<Vec<Hit<u32>>> = group.par_iter().zip(&alone).map(|(s, rows)| m.top_k(&s.q, rows, k)).collect();
        for (top, hits) in tops.iter_mut().zip(rest) {
            push(top, hits);
        }
    }
    let storage = s0.mem_repr;
    match mem {
        _ if expired(deadline) => {}
        MemSel::All => {
            let docs: Vec<_> = snap.mem.live().into_iter().filter(|d| s0.mem_passes(d.payload.as_deref())).collect();
            let scored: Vec<(Vec<f32>, &str)> = docs
                .par_iter()
                .map(|d| {
                    let mut out = vec![0f32; nq];
                    match &batch {
                        Some(b) => maxsim_stored_batch(storage, b, d.tokens.view(), &mut out),
                        None => out[0] = maxsim_stored(storage, &s0.q, d.tokens.view()),
                    }
                    (out, d.id.as_str())
                })
                .collect();
            for (scores, id) in scored {
                for (top, s) in tops.iter_mut().zip(scores) {
                    top.push(s, Cand { id, at: Loc::Mem });
                }
            }
        }
        MemSel::Only(ids) => {
            for (s, top) in group.iter().zip(&mut tops) {
                let docs: Vec<_> = ids.iter().filter_map(|id| snap.mem.get(id)).collect();
                let scored: Vec<(f32, &str)> = docs
                    .par_iter()
                    .filter(|d| s.mem_passes(d.payload.as_deref()))
                    .map(|d| (maxsim_stored(storage, &s.q, d.tokens.view()), d.id.as_str()))
                    .collect();
                for (score, id) in scored {
                    top.push(score, Cand { id, at: Loc::Mem });
                }
            }
        }
    }
    Ok(tops
        .into_iter()
        .map(|t| {
            t.into_sorted_vec()
                .into_iter()
                .map(|h| Ranked { id: h.key.id.to_string(), score: h.score, at: h.key.at })
                .collect()
        })
        .collect())
}

impl Collection {
    /// The candidates a two-stage search for `k` results hands on when it
    /// does not say: [`default_candidates`] of its index, `k` and its size.
    pub fn default_candidates(&self, k: usize) -> usize {
        default_candidates(IndexKind::of(self.config().index.as_ref()), k, self.len())
    }

    /// The `k` best documents for `query` (`n × dim` tokens) by MaxSim, best
    /// first, ties broken by id: two-stage search with the default candidates
    /// when the collection has a coarse index or screening codes, exact otherwise.
    pub fn search(&self, query: &Tokens, k: usize) -> Result<Vec<SearchHit>> {
        self.search_with(query, &SearchParams::new(k))
    }

    /// Search with every option. With a filter, the result holds `k`
    /// documents whenever `k` live documents match: should the coarse stage
    /// find fewer (a very selective filter), the matching documents are
    /// scored exactly instead.
    pub fn search_with(&self, query: &Tokens, params: &SearchParams) -> Result<Vec<SearchHit>> {
        let snap = self.snapshot();
        let hits = self.search_ranked(&snap, query, params)?;
        Ok(materialize(&snap, hits))
    }

    /// [`search_with`](Self::search_with) for each of `queries`, over one
    /// snapshot, in order. Queries are scored in groups of up to 32 by the
    /// multi-query kernel — one pass over each document they share, in the
    /// exact stage and (for the candidates several queries share) in the
    /// rerank — and the rest runs in parallel on the pool. Each result is
    /// what `search_with` gives that query alone.
    ///
    /// Errors: the outer one when the parameters are bad or the batch is
    /// too large (more than [`MAX_BATCH`] queries or [`MAX_BATCH_TOKENS`]
    /// tokens in all); an inner one for a bad query (wrong dim, NaN, empty),
    /// which does not stop the others.
    pub fn search_batch(&self, queries: &[Tokens], params: &SearchParams) -> Result<Vec<Result<Vec<SearchHit>>>> {
        let snap = self.snapshot();
        let ranked = self.search_batch_ranked(&snap, queries, params)?;
        Ok(ranked.into_iter().map(|r| r.map(|h| materialize(&snap, h))).collect())
    }

    /// [`search_batch`](Self::search_batch) on a given snapshot, without texts and payloads.
    pub(crate) fn search_batch_ranked(
        &self,
        snap: &Snapshot,
        queries: &[Tokens],
        params: &SearchParams,
    ) -> Result<Vec<Result<Vec<Ranked>>>> {
        check_params(IndexKind::of(self.config().index.as_ref()), self.config().screens(), params)?;
        check_batch_size(queries.len(), queries.iter().map(Tokens::n_tokens).sum())?;
        let allowed = params.filter.as_ref().map(|f| Arc::new(allowed_rows(snap, f)));
        let prepared: Vec<Result<Searcher<'_>>> = queries
            .par_iter()
            .map(|t| Searcher::with_allowed(self, snap, t, params.filter.as_ref(), allowed.clone()))
            .collect();
        let mut out: Vec<Option<Result<Vec<Ranked>>>> = Vec::with_capacity(queries.len());
        let mut ready: Vec<(usize, Searcher<'_>)> = Vec::new();
        for (i, s) in prepared.into_iter().enumerate() {
            match s {
                Ok(s) => {
                    ready.push((i, s));
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let (at, searchers): (Vec<usize>, Vec<Searcher<'_>>) = ready.into_iter().unzip();
        let mut groups: Vec<Vec<Searcher<'_>>> = Vec::new();
        let mut rest = searchers.into_iter();
        loop {
            let g: Vec<_> = rest.by_ref().take(KERNEL_BATCH).collect();
            if g.is_empty() {
                break;
            }
            groups.push(g);
        }
        let hits: Vec<Vec<Vec<Ranked>>> = groups.par_iter().map(|g| search_group(g, params)).collect::<Result<_>>()?;
        check_deadline(params.deadline)?;
        for (i, h) in at.into_iter().zip(hits.into_iter().flatten()) {
            out[i] = Some(Ok(h));
        }
        Ok(out.into_iter().map(|r| r.expect("every query answered")).collect())
    }

    /// [`search_with`](Self::search_with) on a given snapshot, without fetching texts and payloads.
    pub(crate) fn search_ranked(&self, snap: &Snapshot, query: &Tokens, params: &SearchParams) -> Result<Vec<Ranked>> {
        Searcher::new(self, snap, query, params.filter.as_ref())?.search(params)
    }

    /// Exact MaxSim scores of the live documents among `ids`, best first
    /// (ties by id), and the ids that are not live documents of the
    /// collection (unknown or deleted), in the order given.
    pub fn rerank<S: AsRef<str>>(&self, query: &Tokens, ids: &[S]) -> Result<Reranked> {
        let snap = self.snapshot();
        let (hits, missing) = self.rerank_ranked(&snap, query, ids)?;
        Ok(Reranked { hits: materialize(&snap, hits), missing })
    }

    /// [`rerank`](Self::rerank) on a given snapshot: `(ranked hits, missing ids)`.
    pub(crate) fn rerank_ranked<S: AsRef<str>>(
        &self,
        snap: &Snapshot,
        query: &Tokens,
        ids: &[S],
    ) -> Result<(Vec<Ranked>, Vec<String>)> {
        if ids.len() > MAX_K {
            return Err(Error::InvalidArgument(format!("at most {MAX_K} ids can be reranked, got {}", ids.len())));
        }
        for id in ids {
            crate::doc::check_id(id.as_ref())?;
        }
        Searcher::new(self, snap, query, None)?.rerank_ids(ids)
    }

    /// The coarse stage alone: the `n` best live documents (passing `f`) by
    /// the coarse score, best first.
    pub(crate) fn coarse_candidates(
        &self,
        snap: &Snapshot,
        query: &Tokens,
        n: usize,
        f: Option<&Filter>,
    ) -> Result<Vec<(String, f32)>> {
        let enc = self.encoder.as_ref().ok_or_else(|| {
            Error::InvalidArgument(
                "the vector source needs a collection with a single-vector index (pooled or muvera)".into(),
            )
        })?;
        Ok(Searcher::new(self, snap, query, f)?.coarse_list(enc, n))
    }

    /// The ids among `ids` (in order, once each) that are live documents of
    /// the snapshot whose payload matches `f`.
    pub(crate) fn live_matching(&self, snap: &Snapshot, ids: &[String], f: &Filter) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        ids.iter()
            .filter(|id| seen.insert(id.as_str()))
            .filter(|id| snap.locate(id).is_some_and(|at| f.matches_text(snap.payload(at, id))))
            .cloned()
            .collect()
    }
}

/// Refuses a batch of more than [`MAX_BATCH`] queries or [`MAX_BATCH_TOKENS`] tokens.
pub(crate) fn check_batch_size(queries: usize, tokens: usize) -> Result<()> {
    if queries > MAX_BATCH {
        return Err(Error::InvalidArgument(format!("a batch takes at most {MAX_BATCH} queries, got {queries}")));
    }
    if tokens > MAX_BATCH_TOKENS {
        return Err(Error::InvalidArgument(format!(
            "a batch takes at most {MAX_BATCH_TOKENS} query tokens in all, got {tokens}"
        )));
    }
    Ok(())
}

/// The result of [`Collection::rerank`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reranked {
    pub hits: Vec<SearchHit>,
    /// Requested ids that are not live documents (never written, or deleted).
    pub missing: Vec<String>,
}
