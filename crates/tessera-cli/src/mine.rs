//! `tessera mine-negatives`: hard negatives for reranker / embedding
//! fine-tuning. For each query of a bulk-format folder the engine's
//! [`Collection::mine_negatives`] retrieves the top `END` documents, drops
//! the known positives (qrels judgment > 0), keeps the candidates ranked
//! `START..=END`, optionally drops those scoring too close to a positive to
//! be trusted (likely unjudged positives: `--exclude-above-score`,
//! `--max-score`, `--margin`), and takes `per_query` of the rest — sampled
//! with a seeded generator, or the best ranked (`--sampling top`). Written as
//! JSON lines in one of two layouts:
//!
//! - `flag-embedding` (default): one line per query,
//!   `{"query", "pos", "neg", "query_id", "pos_ids", "neg_ids"}` (FlagEmbedding's
//!   fine-tuning format, with ids alongside);
//! - `sentence-transformers`: one row per positive, with its columns in the
//!   order sentence-transformers reads them as inputs —
//!   `{"anchor", "positive", "negative_1", …, "negative_N"}` (a Hugging Face
//!   dataset for MultipleNegativesRankingLoss; every row has all N negatives,
//!   so queries with fewer are left out and counted).
//!
//! With `--scores`, the MaxSim scores for distillation: `pos_scores` and
//! `neg_scores` (lists, FlagEmbedding's keys), or per row one last column,
//! `label`: `[pos, neg_1, …, neg_N]`, the column sentence-transformers' trainer
//! hands its loss as labels (any other column would be read as one more text),
//! in the shape both its distillation losses read — DistillKLDivLoss as the
//! teacher's scores, MarginMSELoss as the margins `pos − neg_i` it derives
//! from them.

use crate::bulk::{BulkReader, Result};
use crate::eval;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use tessera::{Collection, Database, MineParams};

/// The training-set layout of `tessera mine-negatives`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// One line per query: query, pos, neg (+ ids).
    #[default]
    FlagEmbedding,
    /// One row per positive: anchor, positive, negative_1..N.
    SentenceTransformers,
}

/// The command line of `tessera mine-negatives`.
#[derive(clap::Args, Debug, Clone)]
pub struct MineArgs {
    /// Database folder.
    #[arg(long)]
    pub db: PathBuf,
    /// Collection to retrieve from.
    #[arg(long)]
    pub collection: String,
    /// Folder with queries.jsonl (`id`, `text`), tokens.npy, offsets.npy.
    #[arg(long)]
    pub queries: PathBuf,
    /// Relevance judgments (TREC qrels or BEIR tsv); judgment > 0 marks a positive.
    #[arg(long)]
    pub qrels: PathBuf,
    /// Output JSONL (`-` for stdout; the summary then goes to stderr).
    #[arg(long)]
    pub out: PathBuf,
    /// Ranks START:END (1-based, both included) to sample negatives from.
    /// Ranks are counted in the retrieved list *before* the positives are
    /// dropped, so a candidate's rank is its rank in the search results; END
    /// is how many documents are retrieved.
    #[arg(long, default_value = "10:100", value_parser = parse_range)]
    pub range: (usize, usize),
    /// Negatives per query (fewer if fewer candidates remain), chosen by --sampling.
    #[arg(long, default_value_t = 7)]
    pub per_query: usize,
    /// `random`: sample the negatives uniformly without replacement (seeded by
    /// --seed and the query's id); `top`: take the best ranked.
    #[arg(long, default_value = "random", value_parser = crate::args::named::<tessera::Sampling>())]
    pub sampling: tessera::Sampling,
    /// False-negative guard: drop candidates scoring above X × the best
    /// retrieved positive's score (X a fraction, e.g. 0.95). When no positive
    /// was retrieved, X × the top score is used instead.
    #[arg(long, value_name = "X")]
    pub exclude_above_score: Option<f32>,
    /// False-negative guard: drop candidates scoring above this MaxSim score.
    #[arg(long, value_name = "SCORE")]
    pub max_score: Option<f32>,
    /// False-negative guard: drop candidates scoring above the best positive's
    /// MaxSim score minus M (a query whose positives are all missing from the
    /// collection then gets no negatives).
    #[arg(long, value_name = "M")]
    pub margin: Option<f32>,
    /// Seed of the sampling; each query draws from its own generator seeded
    /// with this and its id, so a query's negatives do not depend on the others.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Candidates of the two-stage search (at least END are used).
    #[arg(long, default_value_t = tessera::DEFAULT_CANDIDATES)]
    pub candidates: usize,
    /// Retrieve with exact MaxSim over every document (no coarse stage).
    #[arg(long, conflicts_with = "bm25")]
    pub exact: bool,
    /// Retrieve with a hybrid query: two-stage MaxSim and BM25 of the query's text fused,
    /// ordered by the collection's ranking (or --rank). Scores stay MaxSim.
    #[arg(long)]
    pub bm25: bool,
    #[command(flatten)]
    pub rank: crate::args::RankArgs,
    /// Output layout.
    #[arg(long, value_enum, default_value_t = Layout::FlagEmbedding)]
    pub layout: Layout,
    /// Also write the MaxSim scores of positives and negatives (for distillation;
    /// sentence-transformers layout: a `label` column, [positive, negative_1..N]).
    #[arg(long)]
    pub scores: bool,
}

/// Parses `START:END` (1 ≤ START ≤ END ≤ tessera::MAX_K).
pub fn parse_range(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("expected START:END with 1 ≤ START ≤ END ≤ {}, got {s:?}", tessera::MAX_K);
    let (a, b) = s.split_once(':').ok_or_else(bad)?;
    let (a, b): (usize, usize) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a == 0 || a > b || b > tessera::MAX_K {
        return Err(bad());
    }
    Ok((a, b))
}

/// Counts of a mining run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MineReport {
    pub queries: usize,
    pub written: usize,
    pub skipped_no_positive: usize,
    pub skipped_no_positive_text: usize,
    pub skipped_no_query_text: usize,
    pub skipped_no_candidates: usize,
    /// Written queries with fewer than `per_query` negatives.
    pub short: usize,
    /// sentence-transformers layout: queries left out for having fewer than `per_query` negatives.
    pub skipped_short: usize,
    /// Rows written (queries, or positives in the sentence-transformers layout).
    pub rows: usize,
    pub negatives: usize,
    /// Candidates in range dropped by the score guard.
    pub guarded: usize,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    query: &'a str,
    pos: Vec<&'a str>,
    neg: Vec<&'a str>,
    query_id: &'a str,
    pos_ids: Vec<&'a str>,
    neg_ids: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pos_scores: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    neg_scores: Option<Vec<f32>>,
}

/// A JSON object whose keys keep the order they were pushed in.
struct Row(Vec<(String, serde_json::Value)>);

impl serde::Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Positives of a query that are stored with a text, as `(id, text)`, by id.
fn positive_texts(c: &Collection, qrels: &eval::Qrels, qid: &str) -> Result<Option<Vec<(String, String)>>> {
    let Some(rels) = qrels.get(qid) else { return Ok(None) };
    let mut ids: Vec<&String> = rels.iter().filter(|(_, r)| **r > 0.0).map(|(d, _)| d).collect();
    if ids.is_empty() {
        return Ok(None);
    }
    ids.sort();
    let mut out = Vec::new();
    for id in ids {
        if let Some(text) = c.get(id).ok().flatten().and_then(|d| d.text) {
            out.push((id.clone(), text));
        }
    }
    Ok(Some(out))
}

/// Mines every query, writing JSON lines to `out`.
pub fn mine(db: &Database, a: &MineArgs, out: &mut dyn Write) -> Result<MineReport> {
    let c = db.collection(&a.collection)?;
    let qrels = eval::read_qrels(&a.qrels)?;
    let params = MineParams {
        range: a.range,
        per_query: a.per_query,
        exclude_above_score: a.exclude_above_score,
        max_score: a.max_score,
        margin: a.margin,
        sampling: a.sampling,
        seed: a.seed,
        candidates: a.candidates,
        exact: a.exact,
        require_text: true,
        rank: a.rank.rank()?,
    };
    if a.rank.given() && !a.bm25 {
        return Err("--rank, --rank-norm and --rank-weight order hybrid mining: give them with --bm25".into());
    }
    let mut reader = BulkReader::open(&a.queries, "queries.jsonl")?;
    let mut r = MineReport::default();
    while let Some(q) = reader.next_doc()? {
        r.queries += 1;
        let Some(pos) = positive_texts(&c, &qrels, &q.id)? else {
            r.skipped_no_positive += 1;
            continue;
        };
        if pos.is_empty() {
            r.skipped_no_positive_text += 1;
            continue;
        }
        let Some(text) = q.text.as_deref() else {
            r.skipped_no_query_text += 1;
            continue;
        };
        let judged: Vec<&str> = qrels[&q.id].iter().filter(|(_, rel)| **rel > 0.0).map(|(d, _)| d.as_str()).collect();
        let m = c
            .mine_negatives_with(&q.id, &q.tokens, a.bm25.then_some(text), &judged, &params)
            .map_err(|e| format!("query {:?}: {e}", q.id))?;
        r.guarded += m.guarded;
        let neg = &m.negatives;
        if neg.is_empty() {
            r.skipped_no_candidates += 1;
            continue;
        }
        let short = neg.len() < a.per_query;
        r.short += short as usize;
        if a.layout == Layout::SentenceTransformers && short {
            r.skipped_short += 1;
            continue;
        }
        r.negatives += neg.len();
        r.written += 1;
        let pos_score: HashMap<&str, f32> = m.positives.iter().map(|h| (h.id.as_str(), h.score)).collect();
        let neg_scores = || neg.iter().map(|h| h.score).collect::<Vec<f32>>();
        match a.layout {
            Layout::FlagEmbedding => {
                let line = Line {
                    query: text,
                    pos: pos.iter().map(|p| p.1.as_str()).collect(),
                    neg: neg.iter().map(|h| h.text.as_deref().unwrap_or_default()).collect(),
                    query_id: &q.id,
                    pos_ids: pos.iter().map(|p| p.0.as_str()).collect(),
                    neg_ids: neg.iter().map(|h| h.id.as_str()).collect(),
                    pos_scores: a.scores.then(|| pos.iter().map(|p| pos_score[p.0.as_str()]).collect()),
                    neg_scores: a.scores.then(neg_scores),
                };
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
                r.rows += 1;
            }
            Layout::SentenceTransformers => {
                for (id, pos_text) in &pos {
                    // sentence-transformers takes the columns in order as the
                    // loss's inputs (anchor, positive, negatives), except `label`.
                    let mut row = Row(Vec::with_capacity(3 + neg.len()));
                    row.0.push(("anchor".into(), text.into()));
                    row.0.push(("positive".into(), pos_text.as_str().into()));
                    for (i, h) in neg.iter().enumerate() {
                        row.0.push((format!("negative_{}", i + 1), h.text.as_deref().unwrap_or_default().into()));
                    }
                    if a.scores {
                        let label: Vec<f32> = std::iter::once(pos_score[id.as_str()]).chain(neg_scores()).collect();
                        row.0.push(("label".into(), label.into()));
                    }
                    serde_json::to_writer(&mut *out, &row)?;
                    out.write_all(b"\n")?;
                    r.rows += 1;
                }
            }
        }
    }
    out.flush()?;
    Ok(r)
}

/// `tessera mine-negatives`: mines into `--out` and prints a summary to
/// `summary` (to stderr when the lines go to stdout).
pub fn run(a: &MineArgs, summary: &mut dyn Write) -> Result<()> {
    let db = Database::open_read_only(&a.db)?;
    if a.out.as_os_str() == "-" {
        let r = mine(&db, a, &mut std::io::stdout().lock())?;
        return print_summary(&r, a, &mut std::io::stderr());
    }
    let f = std::fs::File::create(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let r = mine(&db, a, &mut std::io::BufWriter::new(f))?;
    print_summary(&r, a, summary)
}

fn print_summary(r: &MineReport, a: &MineArgs, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "{} queries: {} written to {} ({} rows), skipped {} without a positive in the qrels, {} whose positives have no stored text, \
         {} without query text, {} without a negative candidate{}",
        r.queries,
        r.written,
        a.out.display(),
        r.rows,
        r.skipped_no_positive,
        r.skipped_no_positive_text,
        r.skipped_no_query_text,
        r.skipped_no_candidates,
        if a.layout == Layout::SentenceTransformers {
            format!(", {} with fewer than {} negatives (every row needs all of them)", r.skipped_short, a.per_query)
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "negatives: {} ({:.2} per written query; {} queries had fewer than {}), ranks {}..={}, {} candidates dropped by the score guard",
        r.negatives,
        r.negatives as f64 / r.written.max(1) as f64,
        r.short,
        a.per_query,
        a.range.0,
        a.range.1,
        r.guarded
    )?;
    Ok(())
}
