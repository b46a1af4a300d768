//! How much of the exact top-k a two-stage search keeps, measured on the
//! collection's own documents used as queries: the recall curve against the
//! candidate count (and `nprobe` or `rerank` where they apply), with the
//! latencies of each setting and of exact search, in one run
//! ([`Collection::recall_curve`]; the server's `POST …/recall`, which the
//! console plots). `tessera bench search` measures the same on a queries
//! folder: given the same queries it gives the same recall.

use crate::collection::Collection;
use crate::doc::Tokens;
use crate::error::{Error, Result};
use crate::mine::SplitMix64;
use crate::search::SearchParams;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Most sample queries of one curve.
pub const MAX_CURVE_SAMPLE: usize = 1000;
/// Most settings (candidate counts × nprobe or rerank values) of one curve.
pub const MAX_CURVE_SETTINGS: usize = 32;
/// Most tokens of one sample query.
pub const MAX_CURVE_QUERY_TOKENS: usize = 1024;

/// What a recall curve measures. Unset fields take their defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CurveRequest {
    /// Documents of the collection used as queries (1..=1000; default 100,
    /// or every document of a smaller collection).
    pub sample: usize,
    /// Results per query (default 10).
    pub k: usize,
    /// Candidate counts (default: k·2^i from k up to 4× the default for k).
    pub candidates: Vec<usize>,
    /// Centroids probed per query token, each measured with each candidate
    /// count (centroids indexes; default: the collection's).
    pub nprobe: Vec<usize>,
    /// Candidates scored exactly after the screening, each measured with
    /// each candidate count (binary screening; default: the collection's).
    pub rerank: Vec<usize>,
    /// A query is the first this many tokens of its document (default 32).
    pub query_tokens: usize,
    /// Seed of the sample (default 0): the same seed, the same documents.
    pub seed: u64,
    /// The largest candidate count the default ladder may reach (a server's
    /// `max_candidates`); not part of the request's JSON.
    #[serde(skip)]
    pub max_candidates: Option<usize>,
    /// Give up at this instant ([`Error::DeadlineExceeded`]); not part of the request's JSON.
    #[serde(skip)]
    pub deadline: Option<Instant>,
}

impl Default for CurveRequest {
    fn default() -> Self {
        Self {
            sample: 100,
            k: 10,
            candidates: Vec::new(),
            nprobe: Vec::new(),
            rerank: Vec::new(),
            query_tokens: 32,
            seed: 0,
            max_candidates: None,
            deadline: None,
        }
    }
}

/// One setting of the curve.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CurvePoint {
    pub candidates: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nprobe: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank: Option<usize>,
    /// Mean over the queries of the share of the exact top-k this setting returned.
    pub recall: f64,
    pub p50_ms: f64,
    pub mean_ms: f64,
}

/// A measured recall curve.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Curve {
    pub k: usize,
    /// The documents used as queries, in the order measured.
    pub queries: Vec<String>,
    /// Tokens of each query (the first `query_tokens` of its document).
    pub query_tokens: usize,
    /// Live documents when the curve was measured.
    pub documents: usize,
    pub exact_p50_ms: f64,
    pub exact_mean_ms: f64,
    pub points: Vec<CurvePoint>,
}

/// The share of `exact` (a reference top-k) that `answered` holds: recall@k
/// of an answer; `None` when the reference is empty (nothing to recall).
pub fn share_kept<A: AsRef<str>, E: AsRef<str>>(answered: &[A], exact: &[E]) -> Option<f64> {
    if exact.is_empty() {
        return None;
    }
    let got: HashSet<&str> = answered.iter().map(AsRef::as_ref).collect();
    Some(exact.iter().filter(|d| got.contains(d.as_ref())).count() as f64 / exact.len() as f64)
}

fn p50_and_mean(mut lat: Vec<Duration>) -> (f64, f64) {
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = lat.iter().map(|&d| ms(d)).sum::<f64>() / lat.len().max(1) as f64;
    (lat.get(lat.len().saturating_sub(1) / 2).map_or(0.0, |&d| ms(d)), mean)
}

impl Collection {
    /// Measures the recall curve `req` asks for: `sample` documents chosen by
    /// `seed` (uniformly, without repeats, from the live ones in id order) are
    /// each searched exactly and then with every setting, one at a time in
    /// the calling thread; recall@k is against the exact top-k.
    pub fn recall_curve(&self, req: &CurveRequest) -> Result<Curve> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if !(1..=crate::MAX_K).contains(&req.k) {
            return bad(format!("k must be in 1..={}", crate::MAX_K));
        }
        if !(1..=MAX_CURVE_SAMPLE).contains(&req.sample) {
            return bad(format!("sample must be in 1..={MAX_CURVE_SAMPLE}"));
        }
        if !(1..=MAX_CURVE_QUERY_TOKENS).contains(&req.query_tokens) {
            return bad(format!("query_tokens must be in 1..={MAX_CURVE_QUERY_TOKENS}"));
        }
        // The settings are counted before any is built: a request may list many.
        let count = [req.candidates.len(), req.nprobe.len(), req.rerank.len()]
            .iter()
            .fold(1usize, |n, &l| n.saturating_mul(l.max(1)));
        if count > MAX_CURVE_SETTINGS {
            return bad(format!("{count} settings (candidates × nprobe × rerank): at most {MAX_CURVE_SETTINGS}"));
        }
        let documents = self.len();
        if documents == 0 {
            return bad("the collection has no documents to use as queries".into());
        }
        let candidates = match req.candidates.is_empty() {
            true => default_ladder(self, req.k, req.max_candidates),
            false => req.candidates.clone(),
        };
        let (nprobe, rerank): (Vec<Option<usize>>, Vec<Option<usize>>) = (
            if req.nprobe.is_empty() { vec![None] } else { req.nprobe.iter().copied().map(Some).collect() },
            if req.rerank.is_empty() { vec![None] } else { req.rerank.iter().copied().map(Some).collect() },
        );
        let mut settings = Vec::new();
        for &c in &candidates {
            for &n in &nprobe {
                for &r in &rerank {
                    let mut p = SearchParams::new(req.k).with_candidates(c);
                    (p.nprobe, p.rerank, p.deadline) = (n, r, req.deadline);
                    settings.push(p);
                }
            }
        }
        let config = self.config();
        let kind = crate::IndexKind::of(config.index.as_ref());
        for p in &settings {
            crate::search::check_params(kind, config.screens(), p)?;
        }
        let queries = self.sample_queries(req.sample.min(documents), req.seed, req.query_tokens)?;
        let mut exact_lat = Vec::with_capacity(queries.len());
        let mut exact = Vec::with_capacity(queries.len());
        let mut exact_params = SearchParams::exact(req.k);
        exact_params.deadline = req.deadline;
        for (_, q) in &queries {
            let t = Instant::now();
            let hits = self.search_with(q, &exact_params)?;
            exact_lat.push(t.elapsed());
            exact.push(hits.into_iter().map(|h| h.id).collect::<Vec<_>>());
        }
        let mut points = Vec::with_capacity(settings.len());
        for p in &settings {
            let (mut lat, mut recall) = (Vec::with_capacity(queries.len()), 0.0);
            for ((_, q), want) in queries.iter().zip(&exact) {
                let t = Instant::now();
                let hits = self.search_with(q, p)?;
                lat.push(t.elapsed());
                let answered: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                recall += share_kept(&answered, want).unwrap_or(0.0);
            }
            let judged = exact.iter().filter(|w| !w.is_empty()).count().max(1);
            let (p50_ms, mean_ms) = p50_and_mean(lat);
            let candidates = p.candidates.expect("each setting has its candidates");
            points.push(CurvePoint {
                candidates,
                nprobe: p.nprobe,
                rerank: p.rerank,
                recall: recall / judged as f64,
                p50_ms,
                mean_ms,
            });
        }
        let (exact_p50_ms, exact_mean_ms) = p50_and_mean(exact_lat);
        let queries = queries.into_iter().map(|(id, _)| id).collect();
        Ok(Curve { k: req.k, queries, query_tokens: req.query_tokens, documents, exact_p50_ms, exact_mean_ms, points })
    }

    /// `n` live documents chosen by `seed`, each as a query of its first
    /// `tokens` tokens: a partial Fisher-Yates shuffle of the live ids in id
    /// order (read from one snapshot, ids only: no text or payload is read).
    fn sample_queries(&self, n: usize, seed: u64, tokens: usize) -> Result<Vec<(String, Tokens)>> {
        let snap = self.snapshot();
        let mut all: Vec<&str> = Vec::with_capacity(snap.len());
        for sv in &snap.segments {
            all.extend(sv.live.iter().map(|&r| sv.seg.id_of(r as usize)));
        }
        all.extend(snap.mem.docs().map(|d| d.id.as_str()));
        all.sort_unstable();
        let mut rng = SplitMix64::new(seed);
        let n = n.min(all.len());
        for i in 0..n {
            let j = i + rng.below(all.len() - i);
            all.swap(i, j);
        }
        let ids: Vec<String> = all[..n].iter().map(|s| s.to_string()).collect();
        drop(all);
        let docs = self.get_many(&ids, true)?;
        let dim = self.dim();
        Ok(docs
            .into_iter()
            .flatten()
            .map(|d| {
                let rows = d.n_tokens.min(tokens);
                (d.id, Tokens::F16 { data: d.tokens[..rows * dim].to_vec(), dim })
            })
            .collect())
    }
}

/// Candidate counts from `k` doubling up to 4× the default for `k` (at most
/// the collection's size and `most`, and at most [`MAX_CURVE_SETTINGS`] of them).
fn default_ladder(c: &Collection, k: usize, most: Option<usize>) -> Vec<usize> {
    let top = (c.default_candidates(k) * 4).min(c.len().max(k)).min(most.unwrap_or(usize::MAX)).max(k);
    let mut v: Vec<usize> = std::iter::successors(Some(k), |&x| Some(x * 2)).take_while(|&x| x < top).collect();
    v.push(top);
    v.truncate(MAX_CURVE_SETTINGS);
    v
}
