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
use crate::doc::Tokens;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::snapshot::{Loc, Ranked, Snapshot, allowed_rows, materialize};
use rayon::prelude::*;
use std::cmp::Ordering;
use tessera_index::Encoder;
use tessera_kernels::{CodeQuery, Query, Screening, TokenType, TopK, decode_stored, maxsim_stored};

/// Largest `k`, `candidates`, `rerank` and `ef` a search accepts.
pub const MAX_K: usize = 100_000;
/// Candidates the coarse stage hands on unless told otherwise.
pub const DEFAULT_CANDIDATES: usize = 256;
/// Candidates the screening stage hands to the exact rerank unless told
/// otherwise (never fewer than `k`).
pub const DEFAULT_RERANK: usize = 64;

/// How to search.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SearchParams {
    /// Number of results.
    pub k: usize,
    /// Two-stage search: how many documents the coarse stage (one vector per
    /// document, HNSW) retrieves for the exact MaxSim rerank, over all
    /// segments (at least `k` are used). The memtable and segments without a
    /// coarse index are always scored exactly.
    pub candidates: usize,
    /// HNSW beam width; `None`: `candidates` (it is never below that).
    pub ef: Option<usize>,
    /// Score every live document exactly, skipping the coarse stage.
    pub exact: bool,
    /// Only documents whose payload matches are returned.
    pub filter: Option<Filter>,
    /// Screened two-stage search (collections with `screening: binary`): how
    /// many of the coarse candidates, ranked by their screening codes, are
    /// scored by exact MaxSim (at least `k`; one of at least `candidates`
    /// skips the screening); `None`: [`DEFAULT_RERANK`]. Refused on exact
    /// search and on collections without screening codes.
    pub rerank: Option<usize>,
}

impl SearchParams {
    /// Two-stage search for `k` results with the default candidates.
    pub fn new(k: usize) -> Self {
        Self { k, candidates: DEFAULT_CANDIDATES, ef: None, exact: false, filter: None, rerank: None }
    }

    /// Exact search for `k` results.
    pub fn exact(k: usize) -> Self {
        Self { exact: true, ..Self::new(k) }
    }

    pub fn with_candidates(mut self, candidates: usize) -> Self {
        self.candidates = candidates;
        self
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

    fn validate(&self) -> Result<()> {
        let check = |name: &str, v: usize| {
            if (1..=MAX_K).contains(&v) {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!("{name} must be in 1..={MAX_K}, got {v}")))
            }
        };
        check("k", self.k)?;
        check("candidates", self.candidates)?;
        self.rerank.map_or(Ok(()), |r| check("rerank", r))?;
        if self.exact && self.rerank.is_some() {
            return Err(Error::InvalidArgument("rerank applies to two-stage search, not to exact search".into()));
        }
        self.ef.map_or(Ok(()), |ef| check("ef", ef))
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: String,
    /// MaxSim score: Σ over query tokens of the max dot product over the document's tokens.
    pub score: f32,
    pub text: Option<String>,
    pub payload: Option<serde_json::Value>,
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

/// One query against one snapshot: the prepared query, the filter's verdict
/// per row, and every stage of the pipeline.
pub(crate) struct Searcher<'a> {
    snap: &'a Snapshot,
    encoder: Option<&'a Encoder>,
    screening: Screening,
    /// The memtable's token type (the collection's).
    storage: TokenType,
    q: Query,
    filter: Option<&'a Filter>,
    /// Per segment, whether each row's payload matches the filter.
    allowed: Option<Vec<Vec<bool>>>,
}

impl<'a> Searcher<'a> {
    pub fn new(col: &'a Collection, snap: &'a Snapshot, query: &Tokens, filter: Option<&'a Filter>) -> Result<Self> {
        let q = Query::new(&query.to_f32_checked(col.dim())?, col.dim());
        Ok(Self {
            snap,
            encoder: col.encoder.as_deref(),
            screening: col.config().screening,
            storage: col.config().storage,
            q,
            filter,
            allowed: filter.map(|f| allowed_rows(snap, f)),
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
    /// inside the graph search); every accepted row of a segment without one.
    fn coarse(&self, enc: &Encoder, n: usize, ef: usize) -> Vec<RowSet> {
        let qv = self.coarse_query(enc);
        let per_segment: Vec<Option<Vec<(u32, f32)>>> = (0..self.snap.segments.len())
            .into_par_iter()
            .map(|si| self.snap.segments[si].seg.index.as_ref().map(|ix| ix.search(&qv, n, ef, |r| self.accept(si, r))))
            .collect();
        let mut all: Vec<(f32, usize, u32)> = per_segment
            .iter()
            .enumerate()
            .flat_map(|(si, hits)| hits.iter().flatten().map(move |&(r, s)| (s, si, r)))
            .collect();
        all.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        all.truncate(n);
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

    /// The screening stage: of the given rows, the global best `n` by the
    /// Hamming MaxSim of their codes (segments without codes keep theirs).
    fn screen(&self, sets: Vec<RowSet>, n: usize) -> Vec<RowSet> {
        let cq = CodeQuery::new(self.q.tokens(), self.q.dim());
        let screened: Vec<Option<Vec<(f32, u32)>>> = sets
            .par_iter()
            .enumerate()
            .map(|(si, set)| {
                let sv = &self.snap.segments[si];
                let m = sv.seg.matrix();
                (m.screening == Screening::Binary)
                    .then(|| m.screen_top_k(&cq, set.rows(&sv.live), n).into_iter().map(|h| (h.score, h.key)).collect())
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

    /// Exact MaxSim of the given rows of each segment and of the memtable
    /// documents chosen (that pass the filter), merged into one top-k.
    fn rank(&self, sets: &[RowSet], k: usize, mem: MemSel<'_>) -> Vec<Ranked> {
        let mut top: TopK<Cand<'_>> = TopK::new(k);
        for (si, sv) in self.snap.segments.iter().enumerate() {
            for h in sv.seg.matrix().top_k(&self.q, sets[si].rows(&sv.live), k) {
                top.push(h.score, Cand { id: sv.seg.id_of(h.key as usize), at: Loc::Seg(si, h.key) });
            }
        }
        let mem_docs: Vec<_> = match mem {
            MemSel::All => self.snap.mem.live(),
            MemSel::Only(ids) => ids.iter().filter_map(|id| self.snap.mem.get(id)).collect(),
        };
        let storage = self.storage;
        let scored: Vec<(f32, &str)> = mem_docs
            .par_iter()
            .filter(|d| self.mem_passes(d.payload.as_deref()))
            .map(|d| (maxsim_stored(storage, &self.q, d.tokens.view()), d.id.as_str()))
            .collect();
        for (score, id) in scored {
            top.push(score, Cand { id, at: Loc::Mem });
        }
        top.into_sorted_vec()
            .into_iter()
            .map(|h| Ranked { id: h.key.id.to_string(), score: h.score, at: h.key.at })
            .collect()
    }

    /// The pipeline: exact, or coarse → (screen) → exact rerank. With a
    /// filter, should the stages find fewer than `k` of the matching
    /// documents (a very selective filter), those are scored exactly instead.
    pub fn search(&self, p: &SearchParams) -> Result<Vec<Ranked>> {
        p.validate()?;
        let screened = self.screening != Screening::None;
        if p.rerank.is_some() && !screened {
            return Err(Error::InvalidArgument(
                "rerank applies to collections with screening codes (screening: binary); this one has none".into(),
            ));
        }
        if p.exact || (self.encoder.is_none() && !screened) {
            return Ok(self.rank(&self.all(), p.k, MemSel::All));
        }
        let n = p.candidates.max(p.k);
        let mut sets = match self.encoder {
            Some(enc) => self.coarse(enc, n, p.ef.unwrap_or(n).max(n)),
            None => self.all(),
        };
        let rerank = p.rerank.unwrap_or(DEFAULT_RERANK).max(p.k);
        // A rerank of at least the candidates keeps them all: nothing to screen.
        if screened && (rerank < n || self.encoder.is_none()) {
            sets = self.screen(sets, rerank);
        }
        let hits = self.rank(&sets, p.k, MemSel::All);
        if hits.len() < p.k.min(self.available()) {
            return Ok(self.rank(&self.all(), p.k, MemSel::All));
        }
        Ok(hits)
    }

    /// Exact MaxSim of the live documents among `ids`, and the ids that are not live.
    pub fn rerank_ids<S: AsRef<str>>(&self, ids: &[S]) -> (Vec<Ranked>, Vec<String>) {
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
        let hits = if n == 0 { Vec::new() } else { self.rank(&sets, n, MemSel::Only(&mem_ids)) };
        (hits, missing)
    }

    /// The coarse stage alone: the `n` best live documents (passing the
    /// filter) by the inner product of encoded query and encoded document,
    /// best first. Documents without an index (memtable, unindexed segments)
    /// are encoded on the fly.
    pub fn coarse_list(&self, enc: &Encoder, n: usize) -> Vec<(String, f32)> {
        let qv = self.coarse_query(enc);
        let storage = self.storage;
        let dim = self.q.dim();
        let coarse_score = |tokens: &[f32]| {
            let mut v = vec![0f32; enc.dim()];
            enc.encode_doc(tokens, &mut v);
            qv.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>()
        };
        let mut all: Vec<(f32, String)> = Vec::new();
        for (si, sv) in self.snap.segments.iter().enumerate() {
            match &sv.seg.index {
                Some(ix) => all.extend(
                    ix.search(&qv, n, n, |r| self.accept(si, r))
                        .into_iter()
                        .map(|(r, s)| (s, sv.seg.id_of(r as usize).to_string())),
                ),
                None => {
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

impl Collection {
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
        Ok(Searcher::new(self, snap, query, None)?.rerank_ids(ids))
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
        let enc = self
            .encoder
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("the vector source needs a collection with a coarse index".into()))?;
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

/// The result of [`Collection::rerank`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reranked {
    pub hits: Vec<SearchHit>,
    /// Requested ids that are not live documents (never written, or deleted).
    pub missing: Vec<String>,
}
