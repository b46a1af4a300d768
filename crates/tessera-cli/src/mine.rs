//! `tessera mine-negatives`: hard negatives for reranker / embedding
//! fine-tuning. For each query of a bulk-format folder: retrieve the top
//! `END` documents, drop the known positives (qrels judgment > 0), keep the
//! candidates ranked `START..=END`, optionally drop those scoring above a
//! fraction of the best positive's score (likely unjudged positives), sample
//! `per_query` of them with a seeded generator, and write one JSON line
//! `{"query", "pos", "neg", "query_id", "pos_ids", "neg_ids"}` — the training
//! format of FlagEmbedding and sentence-transformers, with ids alongside.

use crate::bulk::{BulkReader, Result};
use crate::eval;
use crate::synth::Rng;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use tessera::{Collection, Database, SearchHit, SearchParams};

/// The command line of `tessera mine-negatives`.
#[derive(clap::Args, Debug, Clone)]
pub struct MineArgs {
    #[arg(long)]
    pub db: PathBuf,
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
    /// Negatives sampled per query (uniformly, without replacement; fewer if
    /// fewer candidates remain).
    #[arg(long, default_value_t = 7)]
    pub per_query: usize,
    /// False-negative guard: drop candidates scoring above X × the best
    /// retrieved positive's score (X a fraction, e.g. 0.95). When no positive
    /// was retrieved, X × the top score is used instead.
    #[arg(long, value_name = "X")]
    pub exclude_above_score: Option<f32>,
    /// Seed of the sampling; each query draws from its own generator seeded
    /// with this and its id, so a query's negatives do not depend on the others.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Candidates of the two-stage search (at least END are used).
    #[arg(long, default_value_t = tessera::DEFAULT_CANDIDATES)]
    pub candidates: usize,
    /// Retrieve with exact MaxSim over every document (no coarse stage).
    #[arg(long)]
    pub exact: bool,
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
}

/// The candidates of one query, in rank order: hits ranked within `range`
/// (1-based, counted before positives are dropped), not positive, with a
/// text, and not above the guard. Returns them and how many the guard dropped.
pub fn candidates<'a>(
    hits: &'a [SearchHit],
    positives: &HashSet<&str>,
    range: (usize, usize),
    exclude_above: Option<f32>,
) -> (Vec<&'a SearchHit>, usize) {
    let best_pos = hits.iter().filter(|h| positives.contains(h.id.as_str())).map(|h| h.score).reduce(f32::max);
    let reference = best_pos.or(hits.first().map(|h| h.score));
    let limit = exclude_above.zip(reference).map(|(x, r)| x * r);
    let mut guarded = 0;
    let mut out = Vec::new();
    for (i, h) in hits.iter().enumerate() {
        if !(range.0..=range.1).contains(&(i + 1)) || positives.contains(h.id.as_str()) || h.text.is_none() {
            continue;
        }
        if limit.is_some_and(|l| h.score > l) {
            guarded += 1;
            continue;
        }
        out.push(h);
    }
    (out, guarded)
}

/// FNV-1a of a query id: mixed into the seed so each query has its own stream.
fn id_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// `n` of `pool` uniformly without replacement (partial Fisher–Yates), returned in rank order.
fn sample<'a>(pool: &[&'a SearchHit], n: usize, seed: u64, qid: &str) -> Vec<&'a SearchHit> {
    let mut idx: Vec<usize> = (0..pool.len()).collect();
    let mut rng = Rng::new(seed ^ id_hash(qid));
    let n = n.min(idx.len());
    for i in 0..n {
        let j = i + rng.below(idx.len() - i);
        idx.swap(i, j);
    }
    let mut picked = idx[..n].to_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| pool[i]).collect()
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
    let params = if a.exact { SearchParams::exact(a.range.1) } else { SearchParams::new(a.range.1) }
        .with_candidates(a.candidates.max(a.range.1));
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
        let hits = c.search_with(&q.tokens, &params).map_err(|e| format!("query {:?}: {e}", q.id))?;
        let judged: HashSet<&str> =
            qrels[&q.id].iter().filter(|(_, rel)| **rel > 0.0).map(|(d, _)| d.as_str()).collect();
        let (pool, guarded) = candidates(&hits, &judged, a.range, a.exclude_above_score);
        r.guarded += guarded;
        let neg = sample(&pool, a.per_query, a.seed, &q.id);
        if neg.is_empty() {
            r.skipped_no_candidates += 1;
            continue;
        }
        r.short += (neg.len() < a.per_query) as usize;
        r.negatives += neg.len();
        r.written += 1;
        let line = Line {
            query: text,
            pos: pos.iter().map(|p| p.1.as_str()).collect(),
            neg: neg.iter().map(|h| h.text.as_deref().unwrap_or_default()).collect(),
            query_id: &q.id,
            pos_ids: pos.iter().map(|p| p.0.as_str()).collect(),
            neg_ids: neg.iter().map(|h| h.id.as_str()).collect(),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(r)
}

/// `tessera mine-negatives`: mines into `--out` and prints a summary to
/// `summary` (to stderr when the lines go to stdout).
pub fn run(a: &MineArgs, summary: &mut dyn Write) -> Result<()> {
    let db = Database::open(&a.db)?;
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
        "{} queries: {} written to {}, skipped {} without a positive in the qrels, {} whose positives have no stored text, \
         {} without query text, {} without a negative candidate",
        r.queries,
        r.written,
        a.out.display(),
        r.skipped_no_positive,
        r.skipped_no_positive_text,
        r.skipped_no_query_text,
        r.skipped_no_candidates
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
