//! Hybrid queries: candidates from several sources, fused, then reranked
//! with exact MaxSim when query tokens are given.
//!
//! Sources: the single-vector coarse stage (`vector`), the two-stage MaxSim
//! ranking (`tensor`), BM25 over the documents' text (`text`), and
//! caller-supplied candidate ids (`ids`, ranked in the order given).
//!
//! Fusion of the sources' ranked lists, for a document `d`:
//! - reciprocal rank fusion: `Σ_s w_s / (k0 + rank_s(d))`, ranks from 1;
//! - weighted score fusion: `Σ_s w_s · (score_s(d) − min_s) / (max_s − min_s)`
//!   (min-max over source `s`'s list; a list whose scores are all equal gives 1).
//!
//! A document absent from a source's list contributes nothing for it. The
//! best `candidates` by fused score are scored by exact MaxSim when a tensor
//! is given and ordered by the query's [`Rank`](crate::Rank): exact MaxSim,
//! or a linear combination of normalised MaxSim, BM25 and vector scores
//! ([`crate::rank`]); a query with tokens that says no rank takes the
//! collection's default [`Ranking`]. The result's score is the one that
//! ordered it. Without a tensor the fused score orders and is the score.

use crate::collection::Collection;
use crate::doc::Tokens;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::rank::{Component, Rank, Ranking, Signal, Signals};
use crate::search::{MAX_K, SearchParams, check_deadline};
use crate::snapshot::{Ranked, SearchHit, Snapshot, materialize};
use std::collections::HashMap;

/// A candidate source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Two-stage MaxSim ranking of the query tokens.
    Tensor,
    /// The coarse stage alone: one vector per document, HNSW.
    Vector,
    /// Candidate ids supplied by the caller.
    Ids,
    /// BM25 over the documents' text.
    Text,
}

tessera_format::named!(Source, "source", [Source::Tensor => "tensor", Source::Vector => "vector", Source::Text => "text", Source::Ids => "ids"]);

/// How the interfaces name a fusion: `rrf` (with its constant, default 60)
/// or `weighted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FusionKind {
    #[default]
    Rrf,
    Weighted,
}

tessera_format::named!(FusionKind, "fusion", [FusionKind::Rrf => "rrf", FusionKind::Weighted => "weighted"]);

/// How ranked lists are combined.
#[derive(Debug, Clone, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion with constant `k0` (60 is customary).
    Rrf { k0: f64 },
    /// Weighted sum of min-max normalised scores.
    Weighted,
}

/// A hybrid query. At least one source must be chosen.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HybridQuery {
    pub k: usize,
    /// Query tokens: the `tensor` source when `use_tensor`, the encoded query
    /// of the `vector` source, and the final exact rerank.
    pub tensor: Option<Tokens>,
    pub use_tensor: bool,
    pub use_vector: bool,
    pub ids: Option<Vec<String>>,
    /// A BM25 query string.
    pub text: Option<String>,
    pub fusion: Fusion,
    /// Per-source weights (default 1).
    pub weights: HashMap<Source, f64>,
    /// How many documents each source contributes, and how many fused
    /// candidates the final rerank sees (default: `max(256, 8·k)`; a search
    /// planned from [`crate::SearchOptions`] defaults to the collection's
    /// [`hybrid_candidates`](crate::Collection::hybrid_candidates)).
    pub candidates: usize,
    pub filter: Option<Filter>,
    /// The final order; `None`: the collection's default [`Ranking`] when
    /// the query has tokens, the fused score otherwise.
    pub rank: Option<Rank>,
    /// Stop and answer [`Error::DeadlineExceeded`] past this instant.
    pub deadline: Option<std::time::Instant>,
}

impl HybridQuery {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            tensor: None,
            use_tensor: false,
            use_vector: false,
            ids: None,
            text: None,
            fusion: Fusion::Rrf { k0: 60.0 },
            weights: HashMap::new(),
            candidates: crate::search::default_candidates(crate::IndexKind::Pooled, k, 0),
            filter: None,
            rank: None,
            deadline: None,
        }
    }

    /// Query tokens: the `tensor` source (two-stage MaxSim) and the final rerank.
    pub fn with_tensor(mut self, tokens: Tokens) -> Self {
        (self.tensor, self.use_tensor) = (Some(tokens), true);
        self
    }

    /// Adds the `vector` source: the coarse stage alone, from the query tokens
    /// (the collection needs a coarse index).
    pub fn with_vector_source(mut self) -> Self {
        self.use_vector = true;
        self
    }

    pub fn with_ids(mut self, ids: Vec<String>) -> Self {
        self.ids = Some(ids);
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Drops the tensor and vector sources, keeping the tokens for the final rerank.
    pub fn rerank_only(mut self) -> Self {
        (self.use_tensor, self.use_vector) = (false, false);
        self
    }

    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    pub fn with_weight(mut self, source: Source, w: f64) -> Self {
        self.weights.insert(source, w);
        self
    }

    pub fn with_candidates(mut self, n: usize) -> Self {
        self.candidates = n;
        self
    }

    pub fn with_filter(mut self, f: Filter) -> Self {
        self.filter = Some(f);
        self
    }

    pub fn with_rank(mut self, rank: Rank) -> Self {
        self.rank = Some(rank);
        self
    }
}

/// One source's view of a result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceRank {
    pub source: Source,
    /// 1-based rank in the source's list.
    pub rank: usize,
    pub score: f32,
}

/// A hybrid result: the hit, its fused score, how each source ranked it,
/// and under a linear rank each signal's part in its score.
#[derive(Debug, Clone, PartialEq)]
pub struct HybridHit {
    pub hit: SearchHit,
    pub fused: f64,
    pub sources: Vec<SourceRank>,
    pub components: Vec<Component>,
}

/// Fuses ranked lists (`(source, [(id, score)])`, best first) into
/// `(id, fused score, per-source ranks)`, best first, ties by id.
pub fn fuse(
    lists: &[(Source, Vec<(String, f32)>)],
    fusion: &Fusion,
    weights: &HashMap<Source, f64>,
) -> Vec<(String, f64, Vec<SourceRank>)> {
    let mut acc: HashMap<&str, (f64, Vec<SourceRank>)> = HashMap::new();
    for (source, list) in lists {
        let w = weights.get(source).copied().unwrap_or(1.0);
        let (lo, hi) =
            list.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (_, s)| (lo.min(*s), hi.max(*s)));
        for (i, (id, score)) in list.iter().enumerate() {
            let part = match fusion {
                Fusion::Rrf { k0 } => w / (k0 + (i + 1) as f64),
                Fusion::Weighted if hi > lo => w * ((score - lo) / (hi - lo)) as f64,
                Fusion::Weighted => w,
            };
            let e = acc.entry(id.as_str()).or_default();
            e.0 += part;
            e.1.push(SourceRank { source: *source, rank: i + 1, score: *score });
        }
    }
    let mut out: Vec<(String, f64, Vec<SourceRank>)> =
        acc.into_iter().map(|(id, (f, r))| (id.to_string(), f, r)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// What the sources of one hybrid query returned and the fused candidates,
/// scored: by exact MaxSim with a tensor, by the fused score without.
struct Gathered {
    lists: Vec<(Source, Vec<(String, f32)>)>,
    fused: Vec<(String, f64, Vec<SourceRank>)>,
    ranked: Vec<Ranked>,
}

impl Gathered {
    /// The candidates' signals: MaxSim as ranked, BM25 and vector from their sources' lists.
    fn signals(&self) -> Signals {
        let mut s = Signals {
            ids: self.ranked.iter().map(|r| r.id.clone()).collect(),
            raw: self.ranked.iter().map(|r| [Some(r.score), None, None]).collect(),
            floor: [self.ranked.iter().map(|r| r.score).reduce(f32::min), None, None],
        };
        for (source, list) in &self.lists {
            let signal = match source {
                Source::Text => Signal::Bm25,
                Source::Vector => Signal::Vector,
                Source::Tensor | Source::Ids => continue,
            } as usize;
            s.floor[signal] = list.iter().map(|x| x.1).reduce(f32::min);
            let by_id: HashMap<&str, f32> = list.iter().map(|(id, score)| (id.as_str(), *score)).collect();
            for (raw, id) in s.raw.iter_mut().zip(&s.ids) {
                raw[signal] = by_id.get(id.as_str()).copied();
            }
        }
        s
    }
}

impl Collection {
    /// Runs a hybrid query: each chosen source's candidates, fused, scored
    /// by exact MaxSim when tokens are given and ordered by the query's rank.
    pub fn query(&self, q: &HybridQuery) -> Result<Vec<HybridHit>> {
        let rank = self.rank_of(q)?;
        let snap = self.snapshot();
        let g = self.gather(&snap, q)?;
        let mut components: HashMap<String, Vec<Component>> = HashMap::new();
        let mut ranked = match rank {
            Rank::MaxSim => g.ranked,
            Rank::Linear { .. } => {
                let signals = g.signals();
                let scores = signals.scores(&rank);
                let mut parts = signals.components(&rank);
                let mut slots: Vec<Option<Ranked>> = g.ranked.into_iter().map(Some).collect();
                signals
                    .order(&scores)
                    .into_iter()
                    .map(|i| {
                        components.insert(signals.ids[i].clone(), std::mem::take(&mut parts[i]));
                        Ranked { score: scores[i] as f32, ..slots[i].take().expect("each candidate once") }
                    })
                    .collect()
            }
        };
        ranked.truncate(q.k);
        let by_id: HashMap<&str, &(String, f64, Vec<SourceRank>)> = g.fused.iter().map(|x| (x.0.as_str(), x)).collect();
        Ok(materialize(&snap, ranked)
            .into_iter()
            .map(|hit| {
                let x = by_id[hit.id.as_str()];
                let components = components.remove(&hit.id).unwrap_or_default();
                HybridHit { fused: x.1, sources: x.2.clone(), components, hit }
            })
            .collect())
    }

    /// The candidates of a hybrid query with tokens and their raw signals,
    /// as the query's rank sees them (what `tessera tune` fits weights on).
    pub fn query_signals(&self, q: &HybridQuery) -> Result<Signals> {
        if q.tensor.is_none() {
            return Err(Error::InvalidArgument("the signals of a hybrid query need query tokens".into()));
        }
        self.rank_of(q)?;
        Ok(self.gather(&self.snapshot(), q)?.signals())
    }

    /// The rank a query is ordered by: its own (checked against its
    /// sources), else the collection's default when it has tokens, else the
    /// fused score (`MaxSim`, which without tokens keeps the fused order).
    fn rank_of(&self, q: &HybridQuery) -> Result<Rank> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        let Some(rank) = &q.rank else {
            return Ok(if q.tensor.is_some() { self.ranking().rank } else { Rank::MaxSim });
        };
        rank.validate()?;
        if let Rank::Linear { .. } = rank {
            if q.tensor.is_none() {
                return bad("rank linear needs query tokens (it scores every candidate by MaxSim)");
            }
            if rank.weight(Signal::Bm25) != 0.0 && q.text.is_none() {
                return bad("a bm25 rank weight needs a text query");
            }
            if rank.weight(Signal::Vector) != 0.0 && !q.use_vector {
                return bad("a vector rank weight needs the vector source");
            }
        }
        Ok(rank.clone())
    }

    /// Each chosen source's candidates, fused, the best `candidates` scored.
    fn gather(&self, snap: &Snapshot, q: &HybridQuery) -> Result<Gathered> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        if !(1..=MAX_K).contains(&q.k) || !(1..=MAX_K).contains(&q.candidates) {
            return bad("k and candidates must be in 1..=100000");
        }
        if matches!(q.fusion, Fusion::Rrf { k0 } if !(k0.is_finite() && k0 >= 0.0)) {
            return bad("the RRF constant k0 must be finite and ≥ 0");
        }
        if q.weights.values().any(|w| !w.is_finite()) {
            return bad("fusion weights must be finite");
        }
        if (q.use_tensor || q.use_vector) && q.tensor.is_none() {
            return bad("the tensor and vector sources need query tokens");
        }
        if !q.use_tensor && !q.use_vector && q.ids.is_none() && q.text.is_none() {
            return bad("a hybrid query needs at least one source: tensor, vector, text or ids");
        }
        let n = q.candidates.max(q.k);
        let f = q.filter.as_ref();
        let mut lists = Vec::new();
        // Tensor-source scores are exact MaxSim already: the final rerank reuses them.
        let mut known: HashMap<String, Ranked> = HashMap::new();
        if let (true, Some(t)) = (q.use_tensor, &q.tensor) {
            let mut p = SearchParams::new(n).with_candidates(n);
            (p.filter, p.deadline) = (q.filter.clone(), q.deadline);
            let ranked = self.search_ranked(snap, t, &p)?;
            lists.push((Source::Tensor, ranked.iter().map(|r| (r.id.clone(), r.score)).collect()));
            known.extend(ranked.into_iter().map(|r| (r.id.clone(), r)));
        }
        if let (true, Some(t)) = (q.use_vector, &q.tensor) {
            lists.push((Source::Vector, self.coarse_candidates(snap, t, n, f)?));
        }
        if let Some(text) = &q.text {
            let ranked = self.search_text_ranked(snap, text, n, f)?;
            lists.push((Source::Text, ranked.into_iter().map(|r| (r.id, r.score)).collect()));
        }
        if let Some(ids) = &q.ids {
            // Only live documents (that pass the filter) are candidates; an empty `and` matches all.
            let list = self.live_matching(snap, ids, f.unwrap_or(&Filter::And(Vec::new())));
            let len = list.len();
            lists.push((Source::Ids, list.into_iter().enumerate().map(|(i, id)| (id, (len - i) as f32)).collect()));
        }
        check_deadline(q.deadline)?;
        let mut fused = fuse(&lists, &q.fusion, &q.weights);
        fused.truncate(n);
        let ranked: Vec<Ranked> = match &q.tensor {
            Some(t) => {
                let todo: Vec<&str> =
                    fused.iter().map(|x| x.0.as_str()).filter(|id| !known.contains_key(*id)).collect();
                let (mut r, _) = self.rerank_ranked(snap, t, &todo)?;
                r.extend(fused.iter().filter_map(|x| known.remove(&x.0)));
                r.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
                r
            }
            None => fused
                .iter()
                .filter_map(|(id, fscore, _)| {
                    snap.locate(id).map(|at| Ranked { id: id.clone(), score: *fscore as f32, at })
                })
                .collect(),
        };
        check_deadline(q.deadline)?;
        Ok(Gathered { lists, fused, ranked })
    }

    /// The default ranking of this collection's hybrid queries.
    pub fn ranking(&self) -> Ranking {
        self.ranking.read().expect("ranking lock").clone()
    }

    /// Candidates per source of a hybrid query for `k` results that does
    /// not say: the default ranking's, else [`default_candidates`](Collection::default_candidates).
    pub fn hybrid_candidates(&self, k: usize) -> usize {
        self.ranking().candidates.unwrap_or_else(|| self.default_candidates(k)).max(k).min(MAX_K)
    }
}
