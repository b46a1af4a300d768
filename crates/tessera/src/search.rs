//! The search pipeline over one snapshot: the coarse stage (per-segment HNSW
//! over one vector per document) picks candidates, exact MaxSim ranks them
//! (segments through the batch kernel, straight from the memory map; the
//! memtable document by document), and everything merges into one top-k.
//! Exact search skips the coarse stage. A payload [`Filter`] applies in every
//! stage: inside the graph traversal, to the rows scored exactly, and to the
//! memtable. [`Collection::rerank`] scores caller-chosen ids.

use crate::collection::{Collection, Snapshot};
use crate::doc::{Tokens, parse_payload};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::memtable::MemTable;
use rayon::prelude::*;
use std::cmp::Ordering;
use tessera_index::Encoder;
use tessera_kernels::{Query, TopK};

/// Largest `k`, `candidates` and `ef` a search accepts.
pub const MAX_K: usize = 100_000;
/// Candidates the coarse stage hands to the exact rerank unless told otherwise.
pub const DEFAULT_CANDIDATES: usize = 256;

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
}

impl SearchParams {
    /// Two-stage search for `k` results with the default candidates.
    pub fn new(k: usize) -> Self {
        Self { k, candidates: DEFAULT_CANDIDATES, ef: None, exact: false, filter: None }
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
    src: Src,
}

#[derive(PartialEq, Eq)]
enum Src {
    Mem,
    Seg(usize, u32),
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

impl Collection {
    /// The `k` best documents for `query` (`n × dim` tokens) by MaxSim, best
    /// first, ties broken by id: two-stage search with the default candidates
    /// when the collection has a coarse index, exact otherwise.
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
        params.validate()?;
        let q = Query::new(&query.to_f32_checked(self.dim())?, self.dim());
        let f = params.filter.as_ref();
        let allowed = f.map(|f| allowed_rows(snap, f));
        let exact_picks = || -> Vec<Option<Vec<u32>>> {
            match &allowed {
                None => vec![None; snap.segments.len()],
                Some(a) => snap
                    .segments
                    .iter()
                    .zip(a)
                    .map(|(sv, ok)| Some(sv.live.iter().copied().filter(|&r| ok[r as usize]).collect()))
                    .collect(),
            }
        };
        let hits = match (&self.encoder, params.exact) {
            (Some(enc), false) => {
                let hits = rank(snap, &q, params.k, &coarse(snap, enc, &q, params, allowed.as_deref()), f);
                let available = match &allowed {
                    None => snap.mem.len() + snap.segments.iter().map(|s| s.live.len()).sum::<usize>(),
                    Some(_) => {
                        let mem = snap.mem.docs().filter(|d| f.is_none_or(|f| f.matches_text(d.payload.as_deref())));
                        exact_picks().iter().flatten().map(Vec::len).sum::<usize>() + mem.count()
                    }
                };
                if hits.len() < params.k.min(available) { rank(snap, &q, params.k, &exact_picks(), f) } else { hits }
            }
            _ => rank(snap, &q, params.k, &exact_picks(), f),
        };
        Ok(hits)
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
        let q = Query::new(&query.to_f32_checked(self.dim())?, self.dim());
        let mut seen = std::collections::HashSet::new();
        let (mut picks, mut mem_ids, mut missing) =
            (vec![Some(Vec::new()); snap.segments.len()], Vec::new(), Vec::new());
        for id in ids.iter().map(AsRef::as_ref).filter(|id| seen.insert(*id)) {
            match locate(snap, id) {
                Some(Loc::Mem) => mem_ids.push(id),
                Some(Loc::Seg(si, r)) => picks[si].as_mut().expect("some").push(r),
                None => missing.push(id.to_string()),
            }
        }
        let n = picks.iter().flatten().map(Vec::len).sum::<usize>() + mem_ids.len();
        let mem = MemSel::Only(&mem_ids);
        let hits = if n == 0 { Vec::new() } else { rank_sel(snap, &q, n, &picks, None, mem) };
        Ok((hits, missing))
    }
}

impl Collection {
    /// The coarse stage alone: the `n` best live documents (passing `f`) by
    /// the inner product of encoded query and encoded document, best first.
    /// Documents without an index (memtable, unindexed segments) are encoded
    /// on the fly.
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
        let q = Query::new(&query.to_f32_checked(self.dim())?, self.dim());

        let allowed = f.map(|f| allowed_rows(snap, f));
        let mut qv = vec![0f32; enc.dim()];
        enc.encode_query(q.tokens(), &mut qv);
        let coarse_score = |tokens: &[half::f16]| {
            let mut v = vec![0f32; enc.dim()];
            enc.encode_doc(tokens, &mut v);
            qv.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>()
        };
        let mut all: Vec<(f32, String)> = Vec::new();
        for (si, sv) in snap.segments.iter().enumerate() {
            let ok = |r: u32| !sv.deletes.is_deleted(r) && allowed.as_ref().is_none_or(|a| a[si][r as usize]);
            match &sv.seg.index {
                Some(ix) => all.extend(
                    ix.search(&qv, n, n, ok).into_iter().map(|(r, s)| (s, sv.seg.id_of(r as usize).to_string())),
                ),
                None => all.extend(
                    sv.live
                        .iter()
                        .filter(|&&r| ok(r))
                        .map(|&r| (coarse_score(sv.seg.tokens(r as usize)), sv.seg.id_of(r as usize).into())),
                ),
            }
        }
        for d in snap.mem.docs().filter(|d| f.is_none_or(|f| f.matches_text(d.payload.as_deref()))) {
            all.push((coarse_score(&d.tokens), d.id.clone()));
        }
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        all.truncate(n);
        Ok(all.into_iter().map(|(s, id)| (id, s)).collect())
    }

    /// The ids among `ids` (in order, once each) that are live documents of
    /// the snapshot whose payload matches `f`.
    pub(crate) fn live_matching(&self, snap: &Snapshot, ids: &[String], f: &Filter) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        ids.iter()
            .filter(|id| seen.insert(id.as_str()))
            .filter(|id| {
                let payload = match locate(snap, id) {
                    None => return false,
                    Some(Loc::Mem) => snap.mem.get(id).and_then(|d| d.payload.as_deref()),
                    Some(Loc::Seg(si, r)) => snap.segments[si].seg.payload(r as usize),
                };
                f.matches_text(payload)
            })
            .cloned()
            .collect()
    }
}

/// Where the live version of `id` is in the snapshot.
pub(crate) fn locate(snap: &Snapshot, id: &str) -> Option<Loc> {
    if snap.mem.get(id).is_some() {
        return Some(Loc::Mem);
    }
    snap.segments.iter().enumerate().find_map(|(si, sv)| sv.find_live(id).map(|r| Loc::Seg(si, r)))
}

/// The result of [`Collection::rerank`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reranked {
    pub hits: Vec<SearchHit>,
    /// Requested ids that are not live documents (never written, or deleted).
    pub missing: Vec<String>,
}

/// Per segment, whether each row's payload matches `f` (deleted rows included).
pub(crate) fn allowed_rows(snap: &Snapshot, f: &Filter) -> Vec<Vec<bool>> {
    snap.segments
        .iter()
        .map(|sv| (0..sv.seg.n_docs()).into_par_iter().map(|r| f.matches_text(sv.seg.payload(r))).collect())
        .collect()
}

/// The coarse stage: per segment with an index, the rows to rerank (the
/// global best `candidates` by coarse score; deleted and filtered-out rows are
/// skipped inside the graph search); `None` for a segment without an index
/// (scored exactly).
fn coarse(
    snap: &Snapshot,
    enc: &Encoder,
    q: &Query,
    p: &SearchParams,
    allowed: Option<&[Vec<bool>]>,
) -> Vec<Option<Vec<u32>>> {
    let n = p.candidates.max(p.k);
    let ef = p.ef.unwrap_or(n).max(n);
    let mut qv = vec![0f32; enc.dim()];
    enc.encode_query(q.tokens(), &mut qv);
    let per_segment: Vec<Option<Vec<(u32, f32)>>> = snap
        .segments
        .par_iter()
        .enumerate()
        .map(|(si, sv)| {
            let ok = allowed.map(|a| &a[si]);
            let accept = |r: u32| !sv.deletes.is_deleted(r) && ok.is_none_or(|ok| ok[r as usize]);
            sv.seg.index.as_ref().map(|ix| ix.search(&qv, n, ef, accept))
        })
        .collect();
    let mut all: Vec<(f32, usize, u32)> = per_segment
        .iter()
        .enumerate()
        .flat_map(|(si, hits)| hits.iter().flatten().map(move |&(r, s)| (s, si, r)))
        .collect();
    all.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    all.truncate(n);
    let mut picks: Vec<Option<Vec<u32>>> = per_segment
        .iter()
        .enumerate()
        .map(|(si, h)| match h {
            Some(_) => Some(Vec::new()),
            // No index: every live row that passes the filter is scored exactly.
            None => allowed.map(|a| snap.segments[si].live.iter().copied().filter(|&r| a[si][r as usize]).collect()),
        })
        .collect();
    for (_, si, r) in all {
        picks[si].as_mut().expect("indexed segment").push(r);
    }
    picks
}

/// Which memtable documents a ranking considers.
#[derive(Clone, Copy)]
enum MemSel<'a> {
    /// Every live document (that passes the filter).
    All,
    /// Only these ids.
    Only(&'a [&'a str]),
}

/// Exact MaxSim of the picked rows of each segment (`None`: every live row)
/// and of the memtable documents that pass the filter, merged into one top-k.
fn rank(snap: &Snapshot, q: &Query, k: usize, picks: &[Option<Vec<u32>>], f: Option<&Filter>) -> Vec<Ranked> {
    rank_sel(snap, q, k, picks, f, MemSel::All)
}

fn rank_sel(
    snap: &Snapshot,
    q: &Query,
    k: usize,
    picks: &[Option<Vec<u32>>],
    f: Option<&Filter>,
    mem: MemSel<'_>,
) -> Vec<Ranked> {
    let mut top: TopK<Cand<'_>> = TopK::new(k);
    for (si, sv) in snap.segments.iter().enumerate() {
        let rows = picks[si].as_deref().unwrap_or(&sv.live);
        for h in tessera_kernels::top_k(q, &sv.seg.matrix(), rows, k) {
            top.push(h.score, Cand { id: sv.seg.id_of(h.key as usize), src: Src::Seg(si, h.key) });
        }
    }
    for (score, id) in score_memtable(&snap.mem, q, f, mem) {
        top.push(score, Cand { id, src: Src::Mem });
    }
    top.into_sorted_vec()
        .into_iter()
        .map(|h| Ranked {
            id: h.key.id.to_string(),
            score: h.score,
            at: match h.key.src {
                Src::Mem => Loc::Mem,
                Src::Seg(si, row) => Loc::Seg(si, row),
            },
        })
        .collect()
}

/// A ranked document of one snapshot, before its text and payload are fetched.
#[derive(Debug, Clone)]
pub(crate) struct Ranked {
    pub id: String,
    pub score: f32,
    pub at: Loc,
}

/// Where a document of a snapshot lives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loc {
    Mem,
    Seg(usize, u32),
}

/// Fetches text and payload of ranked documents from the snapshot they were ranked in.
pub(crate) fn materialize(snap: &Snapshot, ranked: Vec<Ranked>) -> Vec<SearchHit> {
    ranked
        .into_iter()
        .map(|r| match r.at {
            Loc::Mem => {
                let d = snap.mem.get(&r.id).expect("memtable document of this snapshot");
                SearchHit {
                    id: r.id,
                    score: r.score,
                    text: d.text.clone(),
                    payload: d.payload.as_deref().and_then(parse_payload),
                }
            }
            Loc::Seg(si, row) => {
                let s = &snap.segments[si].seg;
                SearchHit {
                    id: r.id,
                    score: r.score,
                    text: s.text(row as usize).map(Into::into),
                    payload: s.payload(row as usize).and_then(parse_payload),
                }
            }
        })
        .collect()
}

fn score_memtable<'a>(mem: &'a MemTable, q: &Query, f: Option<&Filter>, sel: MemSel<'_>) -> Vec<(f32, &'a str)> {
    let docs: Vec<_> = match sel {
        MemSel::All => mem.live(),
        MemSel::Only(ids) => ids.iter().filter_map(|id| mem.get(id)).collect(),
    };
    docs.par_iter()
        .filter(|d| f.is_none_or(|f| f.matches_text(d.payload.as_deref())))
        .map(|d| (tessera_kernels::maxsim(q, &d.tokens), d.id.as_str()))
        .collect()
}
