//! A search as every interface takes it: [`SearchOptions`], spelled as the
//! HTTP body spells it (the Python keyword arguments, the proto's fields and
//! the CLI's flags carry the same names), and [`SearchOptions::plan`], the
//! one place that reads them — every default and every refusal of a
//! combination — into a [`SearchPlan`] that [`Collection::execute`] runs.
//! Without `text`, `ids`, `vector`, `rerank_only`, `fusion`, `rrf_k0`,
//! `weights` or `rank` a search is a two-stage (or, with `exact`, exhaustive)
//! MaxSim search of the query tokens; otherwise a hybrid query fusing the
//! chosen sources. Limits of an interface (the server's `max_k`, …) stay
//! with the interface; the engine's own bounds are checked when the plan runs.

use crate::collection::Collection;
use crate::doc::Tokens;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::hybrid::{Fusion, FusionKind, HybridHit, HybridQuery, Source};
use crate::rank::{Norm, Rank, RankKind, Signal};
use crate::search::{MAX_K, SearchParams};
use crate::snapshot::SearchHit;
use crate::wire::{self, Bounded, int};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A search's options, as the interfaces name them (the query tokens travel
/// beside them). Read with serde: unknown fields are refused, a field left
/// out takes its default, and so does JSON `null` for the optional ones.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SearchOptions {
    /// Results. Default: the interface's ([`PlanDefaults::k`], 10).
    #[serde(deserialize_with = "int::opt")]
    pub k: Option<usize>,
    /// Candidates handed to the exact stage (per source, for a hybrid query).
    /// Default: [`Collection::default_candidates`] of `k` (hybrid:
    /// [`Collection::hybrid_candidates`]), at most [`PlanDefaults::max_candidates`].
    #[serde(deserialize_with = "int::opt")]
    pub candidates: Option<usize>,
    /// HNSW beam width (collections with a pooled or muvera index).
    #[serde(deserialize_with = "int::opt")]
    pub ef: Option<usize>,
    /// Centroids probed per query token (collections with a centroids index).
    #[serde(deserialize_with = "int::opt")]
    pub nprobe: Option<usize>,
    /// Screened collections: candidates scored exactly after the screening.
    #[serde(deserialize_with = "int::opt")]
    pub rerank: Option<usize>,
    /// Exhaustive MaxSim over every live document instead of two-stage.
    #[serde(deserialize_with = "wire::boolean")]
    pub exact: bool,
    /// A payload filter (docs/FILTERS.md); JSON `null` means none.
    #[serde(deserialize_with = "filter_json")]
    pub filter: Option<serde_json::Value>,
    /// The query as text, encoded by the collection's model (a collection
    /// bound to one) instead of query tokens. Unless `text` is given, or
    /// the search is tensor-only (`exact`, `ef`, `nprobe` or `rerank`), or
    /// the collection has no full-text index, the same text is also its
    /// BM25 source (hybrid).
    pub query_text: Option<String>,
    /// A BM25 query string (hybrid).
    pub text: Option<String>,
    /// Caller-supplied candidate ids (hybrid).
    pub ids: Vec<String>,
    /// The coarse vector stage as a source (hybrid).
    #[serde(deserialize_with = "wire::boolean")]
    pub vector: bool,
    /// Use the query tokens only for the final rerank, not as a source (hybrid).
    #[serde(deserialize_with = "wire::boolean")]
    pub rerank_only: bool,
    /// How sources are fused (hybrid): `rrf` (default) or `weighted`.
    pub fusion: Option<FusionKind>,
    /// The RRF constant (default 60).
    pub rrf_k0: Option<f64>,
    /// Per-source weights (hybrid; default 1).
    pub weights: BTreeMap<Source, f64>,
    /// The final order (hybrid): `maxsim` or `linear`. Default: the
    /// collection's [`Ranking`](crate::Ranking) when query tokens are given.
    pub rank: Option<RankKind>,
    /// `linear`: `zscore` (default) or `minmax`.
    pub rank_norm: Option<Norm>,
    /// `linear`: weights of `maxsim` (default 1), `bm25` and `vector` (default 0).
    pub rank_weights: BTreeMap<Signal, f64>,
    /// Stop the search after this many milliseconds
    /// ([`Error::DeadlineExceeded`]). Default: [`PlanDefaults::timeout`].
    #[serde(deserialize_with = "int::opt")]
    pub timeout_ms: Option<usize>,
    /// Whether hits carry their text (default true).
    #[serde(deserialize_with = "wire::boolean")]
    pub include_text: bool,
    /// Whether hits carry their payload (default true).
    #[serde(deserialize_with = "wire::boolean")]
    pub include_payload: bool,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            k: None,
            candidates: None,
            ef: None,
            nprobe: None,
            rerank: None,
            exact: false,
            filter: None,
            query_text: None,
            text: None,
            ids: Vec::new(),
            vector: false,
            rerank_only: false,
            fusion: None,
            rrf_k0: None,
            weights: BTreeMap::new(),
            rank: None,
            rank_norm: None,
            rank_weights: BTreeMap::new(),
            timeout_ms: None,
            include_text: true,
            include_payload: true,
        }
    }
}

/// A filter as JSON, bounded in size as it is read ([`Bounded`]).
fn filter_json<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<serde_json::Value>, D::Error> {
    Ok(Option::<Bounded>::deserialize(d)?.map(|b| b.0))
}

impl SearchOptions {
    /// Options for `k` results, the rest at their defaults.
    pub fn new(k: usize) -> Self {
        Self { k: Some(k), ..Self::default() }
    }

    /// The field names, as the wire spells them.
    pub fn fields() -> &'static [&'static str] {
        static FIELDS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
        FIELDS.get_or_init(crate::wire::struct_fields::<SearchOptions>)
    }
}

/// What [`SearchOptions::plan`] fills in where a search leaves an option
/// out: each interface's defaults (the server's come from its limits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanDefaults {
    /// Results when `k` is not given (10).
    pub k: usize,
    /// The deadline when `timeout_ms` is not given (none).
    pub timeout: Option<Duration>,
    /// The most default candidates ([`MAX_K`]); given candidates are the
    /// interface's to bound.
    pub max_candidates: usize,
}

impl Default for PlanDefaults {
    fn default() -> Self {
        Self { k: 10, timeout: None, max_candidates: MAX_K }
    }
}

/// A search ready to run on its collection ([`Collection::execute`]), made
/// by [`SearchOptions::plan`] only: its options are read, defaulted and
/// checked against each other.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan {
    k: usize,
    candidates: usize,
    exact: bool,
    ef: Option<usize>,
    nprobe: Option<usize>,
    rerank: Option<usize>,
    filter: Option<Filter>,
    /// Encoded by the collection's model when the plan runs.
    query_text: Option<String>,
    /// Made by [`SearchOptions::plan_texts`]: each query of the batch is a text.
    texts: bool,
    /// Planned by [`SearchOptions::plan_bm25_texts`]: token queries, each with its BM25 text.
    bm25_texts: bool,
    /// The BM25 source is the query's own text (a text query without `text`).
    text_is_query: bool,
    text: Option<String>,
    ids: Vec<String>,
    vector: bool,
    rerank_only: bool,
    fusion: Option<Fusion>,
    weights: Vec<(Source, f64)>,
    rank: Option<Rank>,
    deadline: Option<Instant>,
    hybrid: bool,
    tokens: bool,
    /// Whether hits carry their text.
    pub include_text: bool,
    /// Whether hits carry their payload.
    pub include_payload: bool,
}

impl SearchOptions {
    /// Reads the options of a search on `c` — with query tokens or not
    /// (`tokens`; a batch has them) — into the search it runs: defaults
    /// from `d` and the collection, and every refusal of options that do not
    /// go together. The engine's bounds on single values (k, candidates, …)
    /// are checked when the plan runs.
    pub fn plan(&self, c: &Collection, tokens: bool, d: &PlanDefaults) -> Result<SearchPlan> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        let k = self.k.unwrap_or(d.k);
        let deadline = match self.timeout_ms {
            Some(0) => return bad("timeout_ms must be at least 1"),
            // A timeout past what the clock can count is no deadline.
            Some(ms) => Instant::now().checked_add(Duration::from_millis(ms as u64)),
            None => d.timeout.and_then(|t| Instant::now().checked_add(t)),
        };
        let filter = self.filter.as_ref().filter(|f| !f.is_null()).map(Filter::from_json).transpose()?;
        let fusion = Fusion::from_parts(self.fusion, self.rrf_k0)?;
        let rank_weights: Vec<(Signal, f64)> = self.rank_weights.iter().map(|(s, w)| (*s, *w)).collect();
        let rank = Rank::from_parts(self.rank, self.rank_norm, &rank_weights)?;
        let query_text = match &self.query_text {
            Some(_) if tokens => return bad("give query tokens or query_text, not both"),
            Some(t) if t.trim().is_empty() => return bad("query_text is empty"),
            // The model is loaded when the search runs (on the search's
            // thread, not the caller's): here only its binding is checked.
            Some(t) => {
                c.bound_model()?;
                Some(t.clone())
            }
            None => None,
        };
        let tensor_only = self.exact || self.ef.is_some() || self.nprobe.is_some() || self.rerank.is_some();
        // A text query also finds candidates by BM25 of the same text.
        let text_is_query = self.text.is_none() && query_text.is_some() && !tensor_only && c.config().text.is_some();
        let text = self.text.clone();
        let tokens = tokens || query_text.is_some();
        let hybrid = text.is_some()
            || text_is_query
            || !self.ids.is_empty()
            || self.vector
            || self.rerank_only
            || fusion.is_some()
            || !self.weights.is_empty()
            || rank.is_some();
        if !hybrid && !tokens {
            return bad("a search needs query tokens, text or ids");
        }
        if hybrid {
            if self.exact || self.ef.is_some() || self.nprobe.is_some() || self.rerank.is_some() {
                return bad(
                    "exact, ef, nprobe and rerank apply to a tensor-only search; a hybrid query (text, ids, vector, rerank_only, fusion, rrf_k0, weights or rank) takes candidates",
                );
            }
            if self.vector && self.rerank_only {
                return bad("rerank_only drops the tensor and vector sources; do not combine it with vector");
            }
            if self.rerank_only && !tokens {
                return bad("rerank_only needs query tokens");
            }
        }
        let candidates = self.candidates.unwrap_or_else(|| {
            let default = if hybrid { c.hybrid_candidates(k) } else { c.default_candidates(k) };
            default.min(d.max_candidates)
        });
        Ok(SearchPlan {
            k,
            candidates,
            exact: self.exact,
            ef: self.ef,
            nprobe: self.nprobe,
            rerank: self.rerank,
            filter,
            query_text,
            texts: false,
            text_is_query,
            bm25_texts: false,
            text,
            ids: self.ids.clone(),
            vector: self.vector,
            rerank_only: self.rerank_only,
            fusion,
            weights: self.weights.iter().map(|(s, w)| (*s, *w)).collect(),
            rank,
            deadline,
            hybrid,
            tokens,
            include_text: self.include_text,
            include_payload: self.include_payload,
        })
    }
}

impl SearchOptions {
    /// [`plan`](Self::plan) for a batch whose queries are texts (encoded by
    /// the collection's model when the plan runs, each also its own BM25
    /// source unless `text` is given or the search is tensor-only), for
    /// [`Collection::execute_batch_texts`].
    pub fn plan_texts(&self, c: &Collection, d: &PlanDefaults) -> Result<SearchPlan> {
        if self.query_text.is_some() {
            return Err(Error::InvalidArgument(
                "a batch of texts gives each query's text: leave query_text out".into(),
            ));
        }
        // Planned as one text query; each query's text takes its place.
        let one = SearchOptions { query_text: Some("a batch of texts".into()), ..self.clone() };
        let mut plan = one.plan(c, false, d)?;
        (plan.query_text, plan.texts) = (None, true);
        Ok(plan)
    }

    /// [`plan`](Self::plan) for a batch of token queries each with a BM25
    /// text of its own (a hybrid query per query), for
    /// [`Collection::execute_batch_bm25`]; `text` is then left out.
    pub fn plan_bm25_texts(&self, c: &Collection, d: &PlanDefaults) -> Result<SearchPlan> {
        if self.text.is_some() || self.query_text.is_some() {
            return Err(Error::InvalidArgument(
                "a batch with one BM25 text per query gives each query's text: leave text and query_text out".into(),
            ));
        }
        // Planned as one hybrid query with a text; each query's text takes its place.
        let one = SearchOptions { text: Some("a BM25 text per query".into()), ..self.clone() };
        let mut plan = one.plan(c, true, d)?;
        (plan.text, plan.text_is_query, plan.bm25_texts) = (None, true, true);
        Ok(plan)
    }
}

impl SearchPlan {
    /// Results asked for.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The payload filter, if the search has one.
    pub fn filter(&self) -> Option<&Filter> {
        self.filter.as_ref()
    }

    /// When the search gives up ([`Error::DeadlineExceeded`]).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether this is a hybrid query.
    pub fn is_hybrid(&self) -> bool {
        self.hybrid
    }

    /// The final order a hybrid query asked for (`None`: the collection's ranking).
    pub fn rank(&self) -> Option<&Rank> {
        self.rank.as_ref()
    }

    /// The candidates handed to the exact stage (per source, for a hybrid
    /// query); `None` for an exact search, which has no candidate stage.
    pub fn candidates(&self) -> Option<usize> {
        (!self.exact).then_some(self.candidates)
    }

    /// The parameters of a tensor-only search.
    fn tensor_params(&self) -> SearchParams {
        let mut params = if self.exact { SearchParams::exact(self.k) } else { SearchParams::new(self.k) };
        params.candidates = Some(self.candidates);
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

    /// `hit` as the plan shows it: without its text or payload unless included.
    fn shown(&self, hit: &mut SearchHit) {
        if !self.include_text {
            hit.text = None;
        }
        if !self.include_payload {
            hit.payload = None;
        }
    }

    /// `out` with every hit as the plan shows it.
    fn show(&self, mut out: SearchResults) -> SearchResults {
        if !(self.include_text && self.include_payload) {
            match &mut out {
                SearchResults::TwoStage(hits) | SearchResults::Exact(hits) => {
                    hits.iter_mut().for_each(|h| self.shown(h))
                }
                SearchResults::Hybrid(hits) => hits.iter_mut().for_each(|h| self.shown(&mut h.hit)),
            }
        }
        out
    }

    /// Refuses running the plan with query tokens it was not made for.
    fn check_tokens(&self, given: bool) -> Result<()> {
        if self.texts {
            return Err(Error::InvalidArgument(
                "this search was planned for a batch of texts: run it with them".into(),
            ));
        }
        match (self.tokens, given) {
            (true, false) => Err(Error::InvalidArgument("this search was planned with query tokens: give them".into())),
            (false, true) => {
                Err(Error::InvalidArgument("this search was planned without query tokens: plan it with them".into()))
            }
            _ => Ok(()),
        }
    }
}

/// What [`Collection::execute`] ran, and its hits.
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

impl Collection {
    /// Runs `plan` (made by [`SearchOptions::plan`] on this collection) with
    /// its query tokens, if it was planned with them.
    pub fn execute(&self, plan: &SearchPlan, tokens: Option<&Tokens>) -> Result<SearchResults> {
        if let Some(text) = &plan.query_text {
            if tokens.is_some() {
                return Err(Error::InvalidArgument("this search was planned with query_text: give no tokens".into()));
            }
            let encoded = self.encode_texts(&[text], crate::model::TextKindOf::Query)?.pop().expect("one query");
            return self.run(plan, Some(&encoded), Some(text)).map(|out| plan.show(out));
        }
        plan.check_tokens(tokens.is_some())?;
        self.run(plan, tokens, None).map(|out| plan.show(out))
    }

    /// Runs `plan` (made by [`SearchOptions::plan_texts`]) for each of
    /// `texts`, encoded as queries by the collection's model in one call:
    /// a tensor-only search as one [`search_batch`](Collection::search_batch),
    /// a hybrid one query by query, in parallel. Results in order; the outer
    /// error refuses the whole batch, an inner one a single query (an empty text).
    pub fn execute_batch_texts<S: AsRef<str> + Sync>(
        &self,
        plan: &SearchPlan,
        texts: &[S],
    ) -> Result<Vec<Result<SearchResults>>> {
        use rayon::prelude::*;
        if !plan.texts {
            return Err(Error::InvalidArgument("this search was not planned for a batch of texts (plan_texts)".into()));
        }
        crate::search::check_batch_size(texts.len(), 0)?;
        let good: Vec<usize> = (0..texts.len()).filter(|&i| !texts[i].as_ref().trim().is_empty()).collect();
        let chosen: Vec<&str> = good.iter().map(|&i| texts[i].as_ref()).collect();
        let encoded = self.encode_texts(&chosen, crate::model::TextKindOf::Query)?;
        crate::search::check_batch_size(texts.len(), encoded.iter().map(Tokens::n_tokens).sum())?;
        let answers: Vec<Result<SearchResults>> = if plan.hybrid {
            encoded.par_iter().zip(&chosen).map(|(t, q)| self.run(plan, Some(t), Some(q))).collect()
        } else {
            self.search_batch(&encoded, &plan.tensor_params())?
                .into_iter()
                .map(|h| h.map(|h| plan.results(h)))
                .collect()
        };
        let mut out: Vec<Result<SearchResults>> =
            (0..texts.len()).map(|i| Err(Error::InvalidArgument(format!("query text {i} is empty")))).collect();
        for (i, a) in good.into_iter().zip(answers) {
            out[i] = a.map(|o| plan.show(o));
        }
        Ok(out)
    }

    /// `tokens`: the query's (given or encoded); `query_text`: its text,
    /// when it came as one.
    fn run(&self, plan: &SearchPlan, tokens: Option<&Tokens>, query_text: Option<&str>) -> Result<SearchResults> {
        if !plan.hybrid {
            let tokens = tokens.expect("a tensor-only plan has query tokens");
            return Ok(plan.results(self.search_with(tokens, &plan.tensor_params())?));
        }
        let mut q = HybridQuery::new(plan.k).with_candidates(plan.candidates);
        if let Some(t) = tokens {
            q = q.with_tensor(t.clone());
        }
        if plan.vector {
            q = q.with_vector_source();
        }
        if plan.rerank_only {
            q = q.rerank_only();
        }
        if !plan.ids.is_empty() {
            q = q.with_ids(plan.ids.clone());
        }
        let text = plan.text.as_deref().or(query_text.filter(|_| plan.text_is_query));
        if let Some(t) = text {
            q = q.with_text(t.to_string());
        }
        if let Some(f) = &plan.fusion {
            q = q.with_fusion(f.clone());
        }
        for (source, w) in &plan.weights {
            q = q.with_weight(*source, *w);
        }
        q.filter = plan.filter.clone();
        (q.rank, q.deadline) = (plan.rank.clone(), plan.deadline);
        Ok(SearchResults::Hybrid(self.query(&q)?))
    }

    /// Runs `plan` (planned with query tokens) for each of `queries`:
    /// a tensor-only search as one [`search_batch`](Collection::search_batch);
    /// a hybrid one query by query, in parallel. Results in order; the outer
    /// error refuses the whole batch (too many queries or tokens), an inner
    /// one a single query.
    /// Runs `plan` (made by [`SearchOptions::plan_bm25_texts`]) for each
    /// token query with its own BM25 text: one answer per query, in order,
    /// each what a hybrid search of that query with `text` gives.
    pub fn execute_batch_bm25<S: AsRef<str> + Sync>(
        &self,
        plan: &SearchPlan,
        queries: &[Tokens],
        texts: &[S],
    ) -> Result<Vec<Result<SearchResults>>> {
        use rayon::prelude::*;
        if !plan.bm25_texts {
            return Err(Error::InvalidArgument(
                "this search was not planned for one BM25 text per query (plan_bm25_texts)".into(),
            ));
        }
        if queries.len() != texts.len() {
            return Err(Error::InvalidArgument(format!(
                "{} queries and {} texts: give one BM25 text per query",
                queries.len(),
                texts.len()
            )));
        }
        crate::search::check_batch_size(queries.len(), queries.iter().map(Tokens::n_tokens).sum())?;
        Ok(queries
            .par_iter()
            .zip(texts)
            .map(|(q, t)| self.run(plan, Some(q), Some(t.as_ref())).map(|out| plan.show(out)))
            .collect())
    }

    pub fn execute_batch(&self, plan: &SearchPlan, queries: &[Tokens]) -> Result<Vec<Result<SearchResults>>> {
        use rayon::prelude::*;
        if plan.query_text.is_some() {
            return Err(Error::InvalidArgument(
                "query_text is one query's text: a batch of texts is planned with plan_texts".into(),
            ));
        }
        if plan.bm25_texts {
            return Err(Error::InvalidArgument(
                "this search was planned for one BM25 text per query: execute_batch_bm25".into(),
            ));
        }
        plan.check_tokens(true)?;
        if !plan.hybrid {
            let hits = self.search_batch(queries, &plan.tensor_params())?;
            return Ok(hits.into_iter().map(|h| h.map(|h| plan.show(plan.results(h)))).collect());
        }
        crate::search::check_batch_size(queries.len(), queries.iter().map(Tokens::n_tokens).sum())?;
        Ok(queries.par_iter().map(|q| self.execute(plan, Some(q))).collect())
    }
}
