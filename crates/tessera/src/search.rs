//! The search pipeline over one snapshot. Today: exact MaxSim over every live
//! document (segments through the batch kernel, straight from the memory map;
//! the memtable document by document), merged into one top-k. The two-stage
//! search (coarse candidates, then exact rerank) slots in behind
//! [`SearchParams`].

use crate::collection::{Collection, Snapshot};
use crate::doc::{Tokens, parse_payload};
use crate::error::{Error, Result};
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
}

impl SearchParams {
    /// Two-stage search for `k` results with the default candidates.
    pub fn new(k: usize) -> Self {
        Self { k, candidates: DEFAULT_CANDIDATES, ef: None, exact: false }
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

    pub fn search_with(&self, query: &Tokens, params: &SearchParams) -> Result<Vec<SearchHit>> {
        params.validate()?;
        let q = Query::new(&query.to_f32_checked(self.dim())?, self.dim());
        let snap = self.snapshot();
        let picks = match (&self.encoder, params.exact) {
            (Some(enc), false) => coarse(&snap, enc, &q, params),
            _ => vec![None; snap.segments.len()],
        };
        Ok(rank(&snap, &q, params.k, &picks))
    }
}

/// The coarse stage: per segment with an index, the rows to rerank (the
/// global best `candidates` by coarse score, deleted rows filtered inside the
/// graph search); `None` for a segment without an index (scored exactly).
fn coarse(snap: &Snapshot, enc: &Encoder, q: &Query, p: &SearchParams) -> Vec<Option<Vec<u32>>> {
    let n = p.candidates.max(p.k);
    let ef = p.ef.unwrap_or(n).max(n);
    let mut qv = vec![0f32; enc.dim()];
    enc.encode_query(q.tokens(), &mut qv);
    let per_segment: Vec<Option<Vec<(u32, f32)>>> = snap
        .segments
        .par_iter()
        .map(|sv| sv.seg.index.as_ref().map(|ix| ix.search(&qv, n, ef, |r| !sv.deletes.is_deleted(r))))
        .collect();
    let mut all: Vec<(f32, usize, u32)> = per_segment
        .iter()
        .enumerate()
        .flat_map(|(si, hits)| hits.iter().flatten().map(move |&(r, s)| (s, si, r)))
        .collect();
    all.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    all.truncate(n);
    let mut picks: Vec<Option<Vec<u32>>> = per_segment.iter().map(|h| h.as_ref().map(|_| Vec::new())).collect();
    for (_, si, r) in all {
        picks[si].as_mut().expect("indexed segment").push(r);
    }
    picks
}

/// Exact MaxSim of the picked rows of each segment (`None`: every live row)
/// and of the memtable, merged into one top-k.
fn rank(snap: &Snapshot, q: &Query, k: usize, picks: &[Option<Vec<u32>>]) -> Vec<SearchHit> {
    let mut top: TopK<Cand<'_>> = TopK::new(k);
    for (si, sv) in snap.segments.iter().enumerate() {
        let rows = picks[si].as_deref().unwrap_or(&sv.live);
        for h in tessera_kernels::top_k(q, &sv.seg.matrix(), rows, k) {
            top.push(h.score, Cand { id: sv.seg.id_of(h.key as usize), src: Src::Seg(si, h.key) });
        }
    }
    for (score, id) in score_memtable(&snap.mem, q) {
        top.push(score, Cand { id, src: Src::Mem });
    }
    top.into_sorted_vec()
        .into_iter()
        .map(|h| match h.key.src {
            Src::Mem => {
                let d = snap.mem.get(h.key.id).expect("memtable document of this snapshot");
                SearchHit {
                    id: d.id.clone(),
                    score: h.score,
                    text: d.text.clone(),
                    payload: d.payload.as_deref().and_then(parse_payload),
                }
            }
            Src::Seg(si, row) => {
                let s = &snap.segments[si].seg;
                SearchHit {
                    id: h.key.id.to_string(),
                    score: h.score,
                    text: s.text(row as usize).map(Into::into),
                    payload: s.payload(row as usize).and_then(parse_payload),
                }
            }
        })
        .collect()
}

fn score_memtable<'a>(mem: &'a MemTable, q: &Query) -> Vec<(f32, &'a str)> {
    mem.live().par_iter().map(|d| (tessera_kernels::maxsim(q, &d.tokens), d.id.as_str())).collect()
}
