//! Hard-negative mining for reranker and embedding fine-tuning: for one
//! query, retrieve the top `END` documents, drop the known positives, keep
//! the candidates ranked `START..=END`, optionally drop those that score too
//! close to a positive to be trusted as negatives (likely unjudged positives:
//! above a fraction of the best positive's score, within a margin below the
//! best positive's exact score, or above an absolute ceiling), and take
//! `per_query` of the rest — the best ones (`Sampling::Top`) or a sample
//! drawn with a generator seeded by the seed and the query's id
//! (`Sampling::Random`), so a query's negatives do not depend on the other
//! queries. These follow the guards and modes of sentence-transformers'
//! `mine_hard_negatives` (`relative_margin`, `absolute_margin`, `max_score`,
//! `sampling_strategy`), measured from the query's best positive where it
//! measures from each pair's own. The positives come back with their exact
//! MaxSim scores, for distillation.
//!
//! Retrieval is two-stage (or exact) MaxSim, or, given the query's text, a
//! hybrid query (MaxSim and BM25 candidates fused) ordered by a [`Rank`] —
//! the collection's default ranking unless told — so negatives can be mined
//! with the fused ranking. Scores (the guard's and the returned ones) are
//! exact MaxSim either way.

use crate::collection::Collection;
use crate::doc::Tokens;
use crate::error::{Error, Result};
use crate::hybrid::HybridQuery;
use crate::rank::Rank;
use crate::search::{MAX_K, SearchParams};
use crate::snapshot::SearchHit;
use std::collections::{HashMap, HashSet};

/// SplitMix64: small, fast, deterministic across platforms.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Which of the candidates left after the guards become negatives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sampling {
    /// `per_query` drawn uniformly (seeded by the seed and the query's id), in rank order.
    #[default]
    Random,
    /// The `per_query` best ranked.
    Top,
}

tessera_format::named!(Sampling, "sampling", [Sampling::Random => "random", Sampling::Top => "top"]);

/// How to mine.
#[derive(Debug, Clone, PartialEq)]
pub struct MineParams {
    /// Ranks START..=END (1-based) to sample from, counted in the retrieved
    /// list before the positives are dropped; END documents are retrieved.
    pub range: (usize, usize),
    /// Negatives per query (fewer when fewer candidates remain).
    pub per_query: usize,
    /// Drop candidates scoring above this fraction of the best retrieved
    /// positive's score (of the top score when no positive was retrieved).
    pub exclude_above_score: Option<f32>,
    /// Drop candidates scoring above this MaxSim score (an absolute ceiling).
    pub max_score: Option<f32>,
    /// Drop candidates scoring above the best positive's exact MaxSim score
    /// minus this margin; a query none of whose positives is a live document
    /// gets no negatives under a margin (there is nothing to measure it from).
    pub margin: Option<f32>,
    /// Random sample or the best ranked.
    pub sampling: Sampling,
    pub seed: u64,
    /// Candidates of the two-stage search (at least END are used).
    pub candidates: usize,
    /// Retrieve by exact MaxSim over every document.
    pub exact: bool,
    /// Only documents with a stored text are negatives (for text training sets).
    pub require_text: bool,
    /// Hybrid retrieval (a query text given): the final order; `None`: the
    /// collection's default ranking.
    pub rank: Option<Rank>,
}

impl Default for MineParams {
    fn default() -> Self {
        Self {
            range: (10, 100),
            per_query: 7,
            exclude_above_score: None,
            max_score: None,
            margin: None,
            sampling: Sampling::Random,
            seed: 42,
            candidates: crate::search::DEFAULT_CANDIDATES,
            exact: false,
            require_text: true,
            rank: None,
        }
    }
}

/// One query's mining result.
#[derive(Debug, Clone, PartialEq)]
pub struct Mined {
    /// The sampled negatives in rank order, with their MaxSim scores.
    pub negatives: Vec<SearchHit>,
    /// The positives that are live documents, best first, with exact MaxSim scores.
    pub positives: Vec<SearchHit>,
    /// Candidates in range dropped by the score guard.
    pub guarded: usize,
}

/// FNV-1a of a query id: mixed into the seed so each query has its own stream.
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl Collection {
    /// Mines hard negatives of one query by MaxSim retrieval (see the module documentation).
    pub fn mine_negatives<S: AsRef<str>>(
        &self,
        query_id: &str,
        query: &Tokens,
        positives: &[S],
        p: &MineParams,
    ) -> Result<Mined> {
        self.mine_negatives_with(query_id, query, None, positives, p)
    }

    /// Mines hard negatives of one query; with `text`, by a hybrid query
    /// (MaxSim and BM25 of `text`) ordered by `p.rank`.
    pub fn mine_negatives_with<S: AsRef<str>>(
        &self,
        query_id: &str,
        query: &Tokens,
        text: Option<&str>,
        positives: &[S],
        p: &MineParams,
    ) -> Result<Mined> {
        let (start, end) = p.range;
        if start == 0 || start > end || end > MAX_K {
            return Err(Error::InvalidArgument(format!(
                "range must be 1 <= START <= END <= {MAX_K}, got {start}:{end}"
            )));
        }
        for (name, v) in
            [("exclude_above_score", p.exclude_above_score), ("max_score", p.max_score), ("margin", p.margin)]
        {
            if v.is_some_and(|x| !x.is_finite()) {
                return Err(Error::InvalidArgument(format!("{name} must be finite")));
            }
        }
        if p.margin.is_some_and(|m| m < 0.0) {
            return Err(Error::InvalidArgument("margin must be >= 0".into()));
        }
        let hits = match text {
            None if p.rank.is_some() => {
                return Err(Error::InvalidArgument("rank applies to hybrid mining: give the query's text".into()));
            }
            None => {
                let params = if p.exact { SearchParams::exact(end) } else { SearchParams::new(end) }
                    .with_candidates(p.candidates.max(end));
                self.search_with(query, &params)?
            }
            Some(_) if p.exact => {
                return Err(Error::InvalidArgument("exact applies to MaxSim mining, not hybrid (with text)".into()));
            }
            Some(text) => {
                let mut q = HybridQuery::new(end)
                    .with_tensor(query.clone())
                    .with_text(text)
                    .with_candidates(p.candidates.max(end));
                q.rank = p.rank.clone();
                let hits: Vec<SearchHit> = self.query(&q)?.into_iter().map(|h| h.hit).collect();
                // The order is the rank's; the scores, MaxSim.
                let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                let maxsim: HashMap<String, f32> =
                    self.rerank(query, &ids)?.hits.into_iter().map(|h| (h.id, h.score)).collect();
                hits.into_iter().filter_map(|h| Some(SearchHit { score: *maxsim.get(&h.id)?, ..h })).collect()
            }
        };
        let judged: HashSet<&str> = positives.iter().map(AsRef::as_ref).collect();
        let positives = self.rerank(query, positives)?.hits;
        let best_pos = hits.iter().filter(|h| judged.contains(h.id.as_str())).map(|h| h.score).reduce(f32::max);
        let relative = p.exclude_above_score.zip(best_pos.or(hits.first().map(|h| h.score))).map(|(x, r)| x * r);
        // The positives come back best first.
        let below_positive = p.margin.map(|m| positives.first().map_or(f32::NEG_INFINITY, |b| b.score - m));
        let ceiling = [relative, below_positive, p.max_score].into_iter().flatten().reduce(f32::min);
        let mut guarded = 0;
        let mut pool = Vec::new();
        for (i, h) in hits.into_iter().enumerate() {
            if !(start..=end).contains(&(i + 1))
                || judged.contains(h.id.as_str())
                || (p.require_text && h.text.is_none())
            {
                continue;
            }
            if ceiling.is_some_and(|c| h.score > c) {
                guarded += 1;
                continue;
            }
            pool.push(h);
        }
        let n = p.per_query.min(pool.len());
        let negatives = match p.sampling {
            Sampling::Top => pool.into_iter().take(n).collect(),
            Sampling::Random => {
                // n of the pool uniformly without replacement (partial Fisher–Yates), kept in rank order.
                let mut idx: Vec<usize> = (0..pool.len()).collect();
                let mut rng = SplitMix64::new(p.seed ^ id_hash(query_id));
                for i in 0..n {
                    let j = i + rng.below(idx.len() - i);
                    idx.swap(i, j);
                }
                let mut picked = idx[..n].to_vec();
                picked.sort_unstable();
                let mut pool: Vec<Option<SearchHit>> = pool.into_iter().map(Some).collect();
                picked.into_iter().filter_map(|i| pool[i].take()).collect()
            }
        };
        Ok(Mined { negatives, positives, guarded })
    }
}
