//! A search as the interfaces (server, Python) take it: one flat request
//! that is a two-stage or exact MaxSim search, or a hybrid query as soon as
//! any hybrid option is set. Its interpretation lives here, once, so that
//! every interface accepts and refuses the same requests with the same words.

use crate::collection::Collection;
use crate::doc::Tokens;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::hybrid::{Fusion, FusionKind, HybridHit, HybridQuery, Source};
use crate::rank::Rank;
use crate::search::{SearchHit, SearchParams};

/// A search. Without `text`, `ids`, `vector`, `rerank_only`, `fusion`,
/// `weights` or `rank` it is a two-stage (or, with `exact`, exhaustive) MaxSim search
/// of `tokens`; otherwise a hybrid query fusing the chosen sources.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SearchRequest {
    pub tokens: Option<Tokens>,
    pub k: usize,
    /// Default: [`Collection::default_candidates`] of `k`.
    pub candidates: Option<usize>,
    /// HNSW beam width (collections with a pooled or muvera index).
    pub ef: Option<usize>,
    /// Centroids probed per query token (collections with a centroids index).
    pub nprobe: Option<usize>,
    /// Screened collections: candidates scored exactly after the screening.
    pub rerank: Option<usize>,
    pub exact: bool,
    pub filter: Option<Filter>,
    /// A BM25 query string (hybrid).
    pub text: Option<String>,
    /// Caller-supplied candidate ids (hybrid).
    pub ids: Vec<String>,
    /// The coarse vector stage as a source (hybrid).
    pub vector: bool,
    /// Use the tokens only for the final rerank, not as a source (hybrid).
    pub rerank_only: bool,
    /// How sources are fused (hybrid); see [`Fusion::from_parts`].
    pub fusion: Option<Fusion>,
    /// Per-source weights (hybrid).
    pub weights: Vec<(Source, f64)>,
    /// The final order (hybrid); see [`Rank::from_parts`]. Default: the
    /// collection's [`Ranking`](crate::Ranking) when tokens are given.
    pub rank: Option<Rank>,
    /// Stop and answer [`Error::DeadlineExceeded`] past this instant.
    pub deadline: Option<std::time::Instant>,
}

impl SearchRequest {
    /// A two-stage search of `tokens` for `k` results.
    pub fn new(tokens: Tokens, k: usize) -> Self {
        Self { tokens: Some(tokens), ..Self::empty(k) }
    }

    /// A request with no source yet (set `tokens`, `text` or `ids`).
    pub fn empty(k: usize) -> Self {
        Self {
            tokens: None,
            k,
            candidates: None,
            ef: None,
            nprobe: None,
            rerank: None,
            exact: false,
            filter: None,
            text: None,
            ids: Vec::new(),
            vector: false,
            rerank_only: false,
            fusion: None,
            weights: Vec::new(),
            rank: None,
            deadline: None,
        }
    }

    /// Whether this is a hybrid query.
    pub fn is_hybrid(&self) -> bool {
        self.text.is_some()
            || !self.ids.is_empty()
            || self.vector
            || self.rerank_only
            || self.fusion.is_some()
            || !self.weights.is_empty()
            || self.rank.is_some()
    }
}

/// What [`Collection::search_request`] ran, and its hits.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchResults {
    TwoStage(Vec<SearchHit>),
    Exact(Vec<SearchHit>),
    Hybrid(Vec<HybridHit>),
}

impl SearchResults {
    /// `two_stage`, `exact` or `hybrid`.
    pub fn mode(&self) -> &'static str {
        match self {
            SearchResults::TwoStage(_) => "two_stage",
            SearchResults::Exact(_) => "exact",
            SearchResults::Hybrid(_) => "hybrid",
        }
    }
}

impl Fusion {
    /// A fusion from its kind (none: RRF) and the RRF constant (default 60);
    /// `None` when neither is given.
    pub fn from_parts(kind: Option<FusionKind>, rrf_k0: Option<f64>) -> Result<Option<Fusion>> {
        match (kind, rrf_k0) {
            (None, None) => Ok(None),
            (None | Some(FusionKind::Rrf), k0) => Ok(Some(Fusion::Rrf { k0: k0.unwrap_or(60.0) })),
            (Some(FusionKind::Weighted), None) => Ok(Some(Fusion::Weighted)),
            (Some(FusionKind::Weighted), Some(_)) => {
                Err(Error::InvalidArgument("rrf_k0 applies to rrf fusion only".into()))
            }
        }
    }
}

impl SearchRequest {
    /// The parameters of a tensor-only search.
    fn tensor_params(&self) -> SearchParams {
        let mut params = if self.exact { SearchParams::exact(self.k) } else { SearchParams::new(self.k) };
        params.candidates = self.candidates;
        params.ef = self.ef;
        params.nprobe = self.nprobe;
        params.rerank = self.rerank;
        params.filter = self.filter.clone();
        params.deadline = self.deadline;
        params
    }

    fn results(&self, hits: Vec<SearchHit>) -> SearchResults {
        if self.exact { SearchResults::Exact(hits) } else { SearchResults::TwoStage(hits) }
    }
}

impl Collection {
    /// Runs the search `req` describes for each of `queries` (`req.tokens`
    /// must be unset): a tensor-only search runs as one
    /// [`search_batch`](Collection::search_batch); a hybrid one query by
    /// query, in parallel. Results in order; the outer error refuses the
    /// whole batch (bad options, too many queries or tokens), an inner one a
    /// single query.
    pub fn search_request_batch(&self, req: &SearchRequest, queries: &[Tokens]) -> Result<Vec<Result<SearchResults>>> {
        use rayon::prelude::*;
        if req.tokens.is_some() {
            return Err(Error::InvalidArgument("a batch takes its queries in a list, not a single query".into()));
        }
        if !req.is_hybrid() {
            let hits = self.search_batch(queries, &req.tensor_params())?;
            return Ok(hits.into_iter().map(|h| h.map(|h| req.results(h))).collect());
        }
        crate::search::check_batch_size(queries.len(), queries.iter().map(Tokens::n_tokens).sum())?;
        Ok(queries
            .par_iter()
            .map(|q| self.search_request(&SearchRequest { tokens: Some(q.clone()), ..req.clone() }))
            .collect())
    }

    /// The candidates `req` runs with when it does not say: per source of a
    /// hybrid query [`hybrid_candidates`](Collection::hybrid_candidates),
    /// else [`default_candidates`](Collection::default_candidates).
    pub fn request_candidates(&self, req: &SearchRequest) -> usize {
        if req.is_hybrid() { self.hybrid_candidates(req.k) } else { self.default_candidates(req.k) }
    }

    /// Runs a [`SearchRequest`]: refuses options that do not apply to its
    /// kind of search, then searches.
    pub fn search_request(&self, req: &SearchRequest) -> Result<SearchResults> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        let candidates = req.candidates.unwrap_or_else(|| self.request_candidates(req));
        if !req.is_hybrid() {
            let Some(tokens) = &req.tokens else {
                return bad("a search needs query tokens, text or ids");
            };
            let hits = self.search_with(tokens, &req.tensor_params())?;
            return Ok(req.results(hits));
        }
        if req.exact || req.ef.is_some() || req.nprobe.is_some() || req.rerank.is_some() {
            return bad(
                "exact, ef, nprobe and rerank apply to a tensor-only search; a hybrid query (text, ids, vector, rerank_only, fusion, rrf_k0, weights or rank) takes candidates",
            );
        }
        if req.vector && req.rerank_only {
            return bad("rerank_only drops the tensor and vector sources; do not combine it with vector");
        }
        let mut q = HybridQuery::new(req.k).with_candidates(candidates);
        if let Some(t) = &req.tokens {
            q = q.with_tensor(t.clone());
        }
        if req.vector {
            q = q.with_vector_source();
        }
        if req.rerank_only {
            if q.tensor.is_none() {
                return bad("rerank_only needs query tokens");
            }
            q = q.rerank_only();
        }
        if !req.ids.is_empty() {
            q = q.with_ids(req.ids.clone());
        }
        if let Some(t) = &req.text {
            q = q.with_text(t.clone());
        }
        if let Some(f) = &req.fusion {
            q = q.with_fusion(f.clone());
        }
        for (source, w) in &req.weights {
            q = q.with_weight(*source, *w);
        }
        q.filter = req.filter.clone();
        (q.rank, q.deadline) = (req.rank.clone(), req.deadline);
        Ok(SearchResults::Hybrid(self.query(&q)?))
    }
}
