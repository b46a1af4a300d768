//! `tessera tune`: fits the default ranking of a collection's hybrid queries
//! (MaxSim and BM25 fused in the final order, [`tessera::Rank::Linear`]) on
//! relevance judgments.
//!
//! Every query with text and a relevant document runs once per candidate
//! count as a hybrid query (two-stage MaxSim and BM25 of its text, RRF
//! fusion); the engine hands back each candidate's MaxSim and BM25 score
//! ([`tessera::Collection::query_signals`]), so that every setting of the
//! grid — normalisation × BM25 weight (MaxSim weighs 1) × candidates — is
//! ranked by the engine's own arithmetic without searching again. The
//! setting with the best mean metric is chosen by k-fold cross-validation:
//! each fold's setting is fitted on the other folds and measured on it, and
//! the report sets that held-out figure beside MaxSim order (today's hybrid
//! ranking, at the collection's default candidates) on the same queries, so
//! a gain that does not generalise shows. The setting fitted on all queries
//! is written as the collection's ranking, unless the cross-validated gain is
//! not positive (MaxSim order is written then) or `--dry-run`.

use crate::args::named;
use crate::bulk::{BulkReader, Result};
use crate::eval;
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use tessera::{Database, HybridQuery, Norm, Rank, Ranking, Signal, Signals};

/// The metric `tessera tune` maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Ndcg(usize),
    Mrr(usize),
    HitRate(usize),
    Recall(usize),
}

impl Metric {
    /// Its cutoff K.
    pub fn k(self) -> usize {
        match self {
            Metric::Ndcg(k) | Metric::Mrr(k) | Metric::HitRate(k) | Metric::Recall(k) => k,
        }
    }

    /// One query's value for a ranked list.
    pub fn of(self, ranked: &[String], rels: &HashMap<String, f64>) -> f64 {
        let (hit, rr, ndcg, recall) = eval::query_metrics(ranked, rels, self.k());
        match self {
            Metric::Ndcg(_) => ndcg,
            Metric::Mrr(_) => rr,
            Metric::HitRate(_) => hit,
            Metric::Recall(_) => recall,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Metric::Ndcg(_) => "ndcg",
            Metric::Mrr(_) => "mrr",
            Metric::HitRate(_) => "hr",
            Metric::Recall(_) => "recall",
        };
        write!(f, "{name}@{}", self.k())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("expected ndcg@K, mrr@K, hr@K or recall@K (K in 1..={}), got {s:?}", tessera::MAX_K);
        let (name, k) = s.split_once('@').ok_or_else(bad)?;
        let k: usize = k.parse().map_err(|_| bad())?;
        if !(1..=tessera::MAX_K).contains(&k) {
            return Err(bad());
        }
        match name.to_ascii_lowercase().as_str() {
            "ndcg" => Ok(Metric::Ndcg(k)),
            "mrr" => Ok(Metric::Mrr(k)),
            "hr" | "hit_rate" => Ok(Metric::HitRate(k)),
            "recall" => Ok(Metric::Recall(k)),
            _ => Err(bad()),
        }
    }
}

/// BM25 weights tried by default, relative to MaxSim's 1 (0: MaxSim order).
pub const DEFAULT_BM25_WEIGHTS: [f64; 15] =
    [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0];

/// The command line of `tessera tune`.
#[derive(clap::Args, Debug, Clone)]
pub struct TuneArgs {
    /// Database folder.
    #[arg(long)]
    pub db: PathBuf,
    /// Collection whose ranking to fit (it needs a full-text index).
    #[arg(long)]
    pub collection: String,
    /// Folder with queries.jsonl (`id`, `text`), tokens.npy, offsets.npy.
    #[arg(long)]
    pub queries: PathBuf,
    /// Relevance judgments (TREC qrels or BEIR tsv); judgment > 0 marks a relevant document.
    #[arg(long)]
    pub qrels: PathBuf,
    /// The metric to maximise: ndcg@K, mrr@K, hr@K or recall@K.
    #[arg(long, default_value = "ndcg@10")]
    pub metric: Metric,
    /// Folds of the cross-validation (at least 2; queries are assigned by a seeded shuffle).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Candidates per source to try (comma-separated; the collection's default for the
    /// metric's K is always tried, as MaxSim order's baseline). Default: that default and half
    /// of it, so that the fit never costs more than today's hybrid query (latency grows with
    /// the candidates).
    #[arg(long, value_delimiter = ',')]
    pub candidates: Vec<usize>,
    /// BM25 weights to try, relative to MaxSim's 1 (comma-separated; 0 is MaxSim order).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_BM25_WEIGHTS)]
    pub bm25_weights: Vec<f64>,
    /// Normalisations to try (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = named::<Norm>(), default_values_t = Norm::ALL)]
    pub norms: Vec<Norm>,
    /// Print the fit without writing it into the collection.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One setting of the grid.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Setting {
    pub candidates: usize,
    /// `maxsim`, or the normalisation of a linear rank.
    pub rank: String,
    pub bm25_weight: f64,
    #[serde(skip)]
    pub ranking: Ranking,
}

/// One fold of the cross-validation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fold {
    pub queries: usize,
    /// Fitted on the other folds.
    pub setting: Setting,
    pub train: f64,
    /// On this fold: MaxSim order at the default candidates, and the fitted setting.
    pub maxsim: f64,
    pub fused: f64,
}

/// What `tessera tune` found (and wrote).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TuneReport {
    pub metric: String,
    pub queries: usize,
    pub skipped_no_text: usize,
    pub skipped_unjudged: usize,
    pub settings: usize,
    pub folds: Vec<Fold>,
    /// Means over the folds' held-out queries (each query counted once).
    pub held_out_maxsim: f64,
    pub held_out_fused: f64,
    /// Fitted on every query; its metric over them (in-sample).
    pub fitted: Setting,
    pub fitted_metric: f64,
    /// What was written into the collection (or would be, with `--dry-run`).
    pub ranking: Ranking,
    pub written: bool,
}

/// A query of the tuning set.
struct Query {
    id: String,
    text: String,
    tokens: tessera::Tokens,
}

/// The grid: for each candidate count, MaxSim order, then each normalisation × nonzero weight.
fn grid(candidates: &[usize], norms: &[Norm], weights: &[f64]) -> Vec<Setting> {
    let mut out = Vec::new();
    for &c in candidates {
        out.push(Setting { candidates: c, rank: "maxsim".into(), bm25_weight: 0.0, ranking: ranking(c, Rank::MaxSim) });
        for &norm in norms {
            for &w in weights.iter().filter(|w| **w != 0.0) {
                let rank = Rank::linear(norm, [(Signal::MaxSim, 1.0), (Signal::Bm25, w)]);
                out.push(Setting { candidates: c, rank: norm.to_string(), bm25_weight: w, ranking: ranking(c, rank) });
            }
        }
    }
    out
}

fn ranking(candidates: usize, rank: Rank) -> Ranking {
    Ranking { rank, candidates: Some(candidates) }
}

/// Each setting's metric for each query: `values[setting][query]`.
fn evaluate(
    settings: &[Setting],
    signals: &HashMap<usize, Vec<Signals>>,
    queries: &[Query],
    qrels: &eval::Qrels,
    metric: Metric,
) -> Vec<Vec<f64>> {
    settings
        .par_iter()
        .map(|s| {
            signals[&s.candidates]
                .iter()
                .zip(queries)
                .map(|(sig, q)| {
                    let scores = sig.scores(&s.ranking.rank);
                    let top: Vec<String> =
                        sig.order(&scores).into_iter().take(metric.k()).map(|i| sig.ids[i].clone()).collect();
                    metric.of(&top, &qrels[&q.id])
                })
                .collect()
        })
        .collect()
}

/// The best setting over `members` (ties: the earlier in the grid, the simpler).
fn best(values: &[Vec<f64>], members: &[usize]) -> (usize, f64) {
    let mean = |s: usize| members.iter().map(|&q| values[s][q]).sum::<f64>() / members.len().max(1) as f64;
    (0..values.len()).map(|s| (s, mean(s))).fold((0, f64::NEG_INFINITY), |b, x| if x.1 > b.1 { x } else { b })
}

/// Fits, cross-validates and (unless `dry_run`) writes the ranking.
pub fn tune(db: &Database, a: &TuneArgs) -> Result<TuneReport> {
    if a.folds < 2 {
        return Err("--folds must be at least 2".into());
    }
    if a.bm25_weights.iter().any(|w| !w.is_finite() || *w < 0.0) || a.norms.is_empty() {
        return Err("--bm25-weights must be finite and ≥ 0, and --norms not empty".into());
    }
    let c = db.collection(&a.collection)?;
    if c.config().text.is_none() {
        return Err(format!("collection {:?} has no full-text index: there is no BM25 to fuse", a.collection).into());
    }
    let qrels = eval::read_qrels(&a.qrels)?;
    let mut reader = BulkReader::open(&a.queries, "queries.jsonl")?;
    let (mut queries, mut no_text, mut unjudged) = (Vec::new(), 0, 0);
    while let Some(q) = reader.next_doc()? {
        if !qrels.get(&q.id).is_some_and(|r| r.values().any(|&x| x > 0.0)) {
            unjudged += 1;
        } else if let Some(text) = q.text.filter(|t| !t.trim().is_empty()) {
            queries.push(Query { id: q.id, text, tokens: q.tokens });
        } else {
            no_text += 1;
        }
    }
    if queries.len() < a.folds {
        return Err(format!(
            "{} queries have text and a relevant document: fewer than the {} folds",
            queries.len(),
            a.folds
        )
        .into());
    }
    let k = a.metric.k();
    let default = c.default_candidates(k);
    let mut cands = if a.candidates.is_empty() { vec![default / 2, default] } else { a.candidates.clone() };
    if cands.iter().any(|n| !(1..=tessera::MAX_K).contains(n)) {
        return Err(format!("--candidates must be in 1..={}", tessera::MAX_K).into());
    }
    cands.push(default);
    cands.iter_mut().for_each(|n| *n = (*n).max(k));
    cands.sort_unstable();
    cands.dedup();
    let mut signals = HashMap::new();
    for &n in &cands {
        let per_query = queries
            .par_iter()
            .map(|q| {
                let h = HybridQuery::new(k)
                    .with_tensor(q.tokens.clone())
                    .with_text(q.text.clone())
                    .with_candidates(n)
                    .with_rank(Rank::MaxSim);
                c.query_signals(&h).map_err(|e| format!("query {:?}: {e}", q.id))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        signals.insert(n, per_query);
    }
    let settings = grid(&cands, &a.norms, &a.bm25_weights);
    let values = evaluate(&settings, &signals, &queries, &qrels, a.metric);
    let baseline = settings.iter().position(|s| s.candidates == default && s.bm25_weight == 0.0).expect("in the grid");
    // Folds by a seeded shuffle of the queries.
    let mut order: Vec<usize> = (0..queries.len()).collect();
    let mut rng = tessera::SplitMix64::new(a.seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let fold_of: Vec<usize> = {
        let mut f = vec![0; queries.len()];
        for (pos, &q) in order.iter().enumerate() {
            f[q] = pos % a.folds;
        }
        f
    };
    let (mut folds, mut sum_maxsim, mut sum_fused) = (Vec::new(), 0.0, 0.0);
    for f in 0..a.folds {
        let (test, train): (Vec<usize>, Vec<usize>) = (0..queries.len()).partition(|&q| fold_of[q] == f);
        let (s, train_metric) = best(&values, &train);
        let on = |s: usize| test.iter().map(|&q| values[s][q]).sum::<f64>();
        sum_maxsim += on(baseline);
        sum_fused += on(s);
        let n = test.len() as f64;
        folds.push(Fold {
            queries: test.len(),
            setting: settings[s].clone(),
            train: train_metric,
            maxsim: on(baseline) / n,
            fused: on(s) / n,
        });
    }
    let all: Vec<usize> = (0..queries.len()).collect();
    let (s, fitted_metric) = best(&values, &all);
    let n = queries.len() as f64;
    let (held_out_maxsim, held_out_fused) = (sum_maxsim / n, sum_fused / n);
    // A fit that does not beat MaxSim order on held-out queries is not made the default.
    let ranking = if held_out_fused > held_out_maxsim { settings[s].ranking.clone() } else { Ranking::default() };
    if !a.dry_run {
        c.set_ranking(ranking.clone())?;
    }
    Ok(TuneReport {
        metric: a.metric.to_string(),
        queries: queries.len(),
        skipped_no_text: no_text,
        skipped_unjudged: unjudged,
        settings: settings.len(),
        folds,
        held_out_maxsim,
        held_out_fused,
        fitted: settings[s].clone(),
        fitted_metric,
        ranking,
        written: !a.dry_run,
    })
}

fn describe(s: &Setting) -> String {
    match s.rank.as_str() {
        "maxsim" => format!("maxsim order, {} candidates", s.candidates),
        norm => format!("{norm}, bm25 weight {}, {} candidates", s.bm25_weight, s.candidates),
    }
}

/// Runs `tessera tune` and prints its report.
pub fn run(a: &TuneArgs, out: &mut dyn Write) -> Result<()> {
    let db = if a.dry_run { Database::open_read_only(&a.db)? } else { Database::open(&a.db)? };
    let r = tune(&db, a)?;
    if a.json {
        writeln!(out, "{}", serde_json::to_string(&r)?)?;
        return Ok(());
    }
    let m = &r.metric;
    writeln!(
        out,
        "{} queries ({} without text, {} without a relevant document left out), {} settings, {} folds",
        r.queries,
        r.skipped_no_text,
        r.skipped_unjudged,
        r.settings,
        r.folds.len()
    )?;
    writeln!(
        out,
        "{:>4} {:>7}  {:<44} {:>9} {:>14} {:>13} {:>8}",
        "fold",
        "queries",
        "fitted on the other folds",
        format!("train {m}"),
        "held-out maxsim",
        "held-out fused",
        "gain"
    )?;
    for (i, f) in r.folds.iter().enumerate() {
        writeln!(
            out,
            "{:>4} {:>7}  {:<44} {:>9.4} {:>14.4} {:>13.4} {:>+8.4}",
            i + 1,
            f.queries,
            describe(&f.setting),
            f.train,
            f.maxsim,
            f.fused,
            f.fused - f.maxsim
        )?;
    }
    writeln!(
        out,
        "held out, all queries: {m} {:.4} with MaxSim order, {:.4} fused ({:+.4})",
        r.held_out_maxsim,
        r.held_out_fused,
        r.held_out_fused - r.held_out_maxsim
    )?;
    writeln!(out, "fitted on all queries: {} ({m} {:.4} in sample)", describe(&r.fitted), r.fitted_metric)?;
    let what = serde_json::to_string(&r.ranking)?;
    if r.ranking.rank == Rank::MaxSim {
        writeln!(out, "the fused ranking does not beat MaxSim order on held-out queries: keeping MaxSim order")?;
    }
    if r.written {
        writeln!(out, "written as the default ranking of {:?}: {what}", a.collection)?;
    } else {
        writeln!(out, "dry run, nothing written; would set {what}")?;
    }
    Ok(())
}
