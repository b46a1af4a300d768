//! `tessera eval` (and `tessera search --qrels`): read a TREC run and
//! relevance judgments, print Hit-Rate@K, MRR@K, nDCG@K and Recall@K for each
//! cutoff as a table or one JSON object, and with a reference run (exact
//! MaxSim) the run's recall of the reference's top-K. The metrics themselves
//! are in [`crate::eval`].

use crate::bulk::Result;
use crate::eval::{self, Coverage, Metrics, Qrels, Run};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Cutoffs used when none are given.
pub const DEFAULT_KS: [usize; 4] = [1, 5, 10, 100];

/// The command line of `tessera eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// TREC run file (`qid Q0 docid rank score tag`), e.g. from `tessera search`.
    #[arg(long)]
    pub run: PathBuf,
    /// Relevance judgments: TREC qrels (`qid 0 docid rel`) or BEIR tsv
    /// (`query-id corpus-id score`, with a header). Judgment > 0 is relevant;
    /// nDCG uses it as the gain.
    #[arg(long)]
    pub qrels: PathBuf,
    /// Cutoffs (comma-separated).
    #[arg(long = "k", value_delimiter = ',', default_values_t = DEFAULT_KS)]
    pub ks: Vec<usize>,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Reference run (exact MaxSim) to also report the run's recall of its top-K:
    /// the coarse stage's recall against exact search.
    #[arg(long)]
    pub exact_run: Option<PathBuf>,
}

/// Everything `tessera eval` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    #[serde(flatten)]
    pub coverage: Coverage,
    pub metrics: Vec<Metrics>,
    /// Recall of the run against the reference run at each cutoff (same order as `metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall_vs_exact: Option<Vec<f64>>,
    /// The most documents the run ranks for one query: a cutoff beyond it
    /// counts only that many (a 10-deep run's "Recall@100" is its Recall@10).
    pub run_depth: usize,
}

impl EvalReport {
    /// The warning a report deserves when a cutoff is deeper than the run.
    pub fn depth_warning(&self) -> Option<String> {
        let deeper: Vec<String> =
            self.metrics.iter().filter(|m| m.k > self.run_depth).map(|m| m.k.to_string()).collect();
        (!deeper.is_empty()).then(|| {
            format!(
                "warning: the run ranks at most {} documents per query, so the metrics at K = {} count only its top {}",
                self.run_depth,
                deeper.join(", "),
                self.run_depth
            )
        })
    }
}

fn check_ks(ks: &[usize]) -> Result<()> {
    if ks.is_empty() || ks.contains(&0) {
        return Err("--k needs one or more cutoffs ≥ 1".into());
    }
    Ok(())
}

/// Computes the report from parsed inputs.
pub fn report(run: &Run, qrels: &Qrels, ks: &[usize], exact: Option<&Run>) -> EvalReport {
    EvalReport {
        coverage: eval::coverage(run, qrels),
        metrics: eval::evaluate_at(run, qrels, ks),
        recall_vs_exact: exact.map(|e| ks.iter().map(|&k| eval::recall_against(run, e, k)).collect()),
        run_depth: run.values().map(Vec::len).max().unwrap_or(0),
    }
}

/// Prints a report as a table, or as one JSON object.
pub fn print(r: &EvalReport, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
        return Ok(());
    }
    let c = &r.coverage;
    writeln!(
        out,
        "{} judged queries ({} missing from the run, scored 0); {} run queries without judgments ignored",
        c.judged, c.missing_from_run, c.unjudged_in_run
    )?;
    let exact = r.recall_vs_exact.as_ref();
    write!(out, "{:>6} {:>8} {:>8} {:>8} {:>9}", "K", "HR@K", "MRR@K", "nDCG@K", "Recall@K")?;
    if exact.is_some() {
        write!(out, " {:>14}", "vs-exact@K")?;
    }
    writeln!(out)?;
    for (i, m) in r.metrics.iter().enumerate() {
        write!(out, "{:>6} {:>8.4} {:>8.4} {:>8.4} {:>9.4}", m.k, m.hit_rate, m.mrr, m.ndcg, m.recall)?;
        if let Some(e) = exact {
            write!(out, " {:>14.4}", e[i])?;
        }
        writeln!(out)?;
    }
    if exact.is_some() {
        writeln!(out, "vs-exact@K: share of the reference run's top-K that the run's top-K contains")?;
    }
    if let Some(w) = r.depth_warning() {
        writeln!(out, "{w}")?;
    }
    Ok(())
}

/// `tessera eval`.
pub fn eval(o: &EvalArgs, out: &mut dyn Write) -> Result<()> {
    check_ks(&o.ks)?;
    let qrels = eval::read_qrels(&o.qrels)?;
    let run = eval::read_run(&o.run)?;
    let exact = o.exact_run.as_deref().map(eval::read_run).transpose()?;
    let r = report(&run, &qrels, &o.ks, exact.as_ref());
    if let Some(w) = r.depth_warning().filter(|_| o.json) {
        eprintln!("{w}");
    }
    print(&r, o.json, out)
}

/// The cutoffs `tessera search --k K --qrels Q` evaluates at: the defaults up to K, and K.
pub fn search_ks(k: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = DEFAULT_KS.iter().copied().filter(|&x| x < k).collect();
    ks.push(k);
    ks
}

/// Refuses `search --run - --qrels Q` before searching: the run is read back to be evaluated.
pub fn check_search_run(run: &Path, qrels: Option<&Path>) -> Result<()> {
    if qrels.is_some() && run.as_os_str() == "-" {
        return Err("--qrels needs --run FILE (the run is read back to evaluate it)".into());
    }
    Ok(())
}

/// `tessera search ... --qrels`: evaluates the run file just written.
pub fn after_search(run: &Path, qrels: &Path, k: usize, out: &mut dyn Write) -> Result<()> {
    check_search_run(run, Some(qrels))?;
    let o = EvalArgs { run: run.into(), qrels: qrels.into(), ks: search_ks(k), json: false, exact_run: None };
    eval(&o, out)
}
