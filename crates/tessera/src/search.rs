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
use tessera_kernels::{Query, TopK};

/// Largest `k` a search accepts.
pub const MAX_K: usize = 100_000;

/// How to search.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SearchParams {
    /// Number of results.
    pub k: usize,
}

impl SearchParams {
    pub fn new(k: usize) -> Self {
        Self { k }
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
    /// The `k` documents with the highest MaxSim score against `query`
    /// (`n × dim` tokens), best first; ties are broken by id.
    pub fn search(&self, query: &Tokens, k: usize) -> Result<Vec<SearchHit>> {
        self.search_with(query, &SearchParams::new(k))
    }

    pub fn search_with(&self, query: &Tokens, params: &SearchParams) -> Result<Vec<SearchHit>> {
        if !(1..=MAX_K).contains(&params.k) {
            return Err(Error::InvalidArgument(format!(
                "k must be in 1..={MAX_K}, got {}",
                params.k
            )));
        }
        let q = Query::new(&query.to_f32_checked(self.dim())?, self.dim());
        let snap = self.snapshot();
        Ok(exact(&snap, &q, params.k))
    }
}

fn exact(snap: &Snapshot, q: &Query, k: usize) -> Vec<SearchHit> {
    let mut top: TopK<Cand<'_>> = TopK::new(k);
    for (si, sv) in snap.segments.iter().enumerate() {
        for h in tessera_kernels::top_k(q, &sv.seg.matrix(), &sv.live, k) {
            top.push(
                h.score,
                Cand {
                    id: sv.seg.id_of(h.key as usize),
                    src: Src::Seg(si, h.key),
                },
            );
        }
    }
    for (score, id) in score_memtable(&snap.mem, q) {
        top.push(score, Cand { id, src: Src::Mem });
    }
    top.into_sorted_vec()
        .into_iter()
        .map(|h| match h.key.src {
            Src::Mem => {
                let d = snap
                    .mem
                    .get(h.key.id)
                    .expect("memtable document of this snapshot");
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
    mem.live()
        .par_iter()
        .map(|d| (tessera_kernels::maxsim(q, &d.tokens), d.id.as_str()))
        .collect()
}
