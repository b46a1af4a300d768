//! Retrieval metrics over TREC runs and relevance judgments: Hit-Rate@K,
//! MRR@K, nDCG@K and Recall@K, and the recall of one run against another
//! (e.g. two-stage against exact).
//!
//! Conventions (those of trec_eval / pytrec_eval / ranx): a document is
//! relevant when its judgment is > 0; nDCG uses the judgment as the gain,
//! `DCG = Σ_i rel_i / log2(i + 2)` over ranks `i = 0..K`, normalised by the
//! ideal ordering of the judged documents. Averages are over the queries that
//! have at least one relevant document; such a query missing from the run
//! scores 0.

use crate::bulk::Result;
use std::collections::HashMap;
use std::path::Path;

/// qid → (docid → judgment).
pub type Qrels = HashMap<String, HashMap<String, f64>>;
/// qid → ranked docids (best first).
pub type Run = HashMap<String, Vec<String>>;

/// Reads TREC qrels (`qid iter docid rel`) or BEIR tsv (`query-id corpus-id
/// score`, tab-separated, with a header line), told apart by the field count.
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut q: Qrels = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (qid, doc, rel) = match f.as_slice() {
            [] => continue,
            [a, b, c] if n == 0 && c.parse::<f64>().is_err() => {
                let _ = (a, b); // BEIR header
                continue;
            }
            [qid, doc, rel] => (qid, doc, rel),
            [qid, _, doc, rel] => (qid, doc, rel),
            _ => return Err(format!("{}:{}: expected 3 (BEIR) or 4 (TREC) fields", path.display(), n + 1).into()),
        };
        let rel: f64 =
            rel.parse().map_err(|_| format!("{}:{}: judgment {rel:?} is not a number", path.display(), n + 1))?;
        q.entry(qid.to_string()).or_default().insert(doc.to_string(), rel);
    }
    Ok(q)
}

/// Reads a TREC run (`qid Q0 docid rank score tag`), ordered by score (rank breaks ties).
pub fn read_run(path: &Path) -> Result<Run> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows: HashMap<String, Vec<(f64, u64, String)>> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let bad = || format!("{}:{}: expected `qid Q0 docid rank score tag`", path.display(), n + 1);
        if f.len() != 6 {
            return Err(bad().into());
        }
        let rank: u64 = f[3].parse().map_err(|_| bad())?;
        let score: f64 = f[4].parse().map_err(|_| bad())?;
        rows.entry(f[0].into()).or_default().push((score, rank, f[2].into()));
    }
    Ok(rows
        .into_iter()
        .map(|(q, mut v)| {
            v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            (q, v.into_iter().map(|x| x.2).collect())
        })
        .collect())
}

/// Metric values at one cutoff, averaged over judged queries.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Metrics {
    pub k: usize,
    pub hit_rate: f64,
    pub mrr: f64,
    pub ndcg: f64,
    pub recall: f64,
    pub queries: usize,
}

/// Per-query metrics of one ranked list at cutoff `k`.
pub fn query_metrics(ranked: &[String], rels: &HashMap<String, f64>, k: usize) -> (f64, f64, f64, f64) {
    let top = &ranked[..ranked.len().min(k)];
    let rel = |d: &String| rels.get(d).copied().unwrap_or(0.0);
    let first = top.iter().position(|d| rel(d) > 0.0);
    let hit = first.is_some() as u8 as f64;
    let rr = first.map_or(0.0, |p| 1.0 / (p + 1) as f64);
    let dcg: f64 = top.iter().enumerate().map(|(i, d)| rel(d) / (i as f64 + 2.0).log2()).sum();
    let mut ideal: Vec<f64> = rels.values().copied().filter(|&r| r > 0.0).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, r)| r / (i as f64 + 2.0).log2()).sum();
    let n_rel = ideal.len();
    let found = top.iter().filter(|d| rel(d) > 0.0).count();
    let ndcg = if idcg > 0.0 { dcg / idcg } else { 0.0 };
    (hit, rr, ndcg, found as f64 / n_rel.max(1) as f64)
}

/// Averages over the queries of `qrels` that have a relevant document.
pub fn evaluate(run: &Run, qrels: &Qrels, k: usize) -> Metrics {
    let empty = Vec::new();
    let mut sum = (0.0, 0.0, 0.0, 0.0);
    let mut n = 0;
    for (qid, rels) in qrels {
        if !rels.values().any(|&r| r > 0.0) {
            continue;
        }
        let (h, r, d, c) = query_metrics(run.get(qid).unwrap_or(&empty), rels, k);
        sum = (sum.0 + h, sum.1 + r, sum.2 + d, sum.3 + c);
        n += 1;
    }
    let avg = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
    Metrics { k, hit_rate: avg(sum.0), mrr: avg(sum.1), ndcg: avg(sum.2), recall: avg(sum.3), queries: n }
}

/// Mean over the queries of `reference` of |top-k(run) ∩ top-k(reference)| / k'
/// where k' = min(k, |top-k(reference)|): how much of the reference's top-k
/// the run recovered (e.g. two-stage against exact).
pub fn recall_against(run: &Run, reference: &Run, k: usize) -> f64 {
    let mut total = 0.0;
    let mut n = 0;
    for (qid, want) in reference {
        let got = run.get(qid).map_or(&[][..], |v| &v[..v.len().min(k)]);
        if let Some(r) = tessera::share_kept(got, &want[..want.len().min(k)]) {
            total += r;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { total / n as f64 }
}

/// How a run and the judgments line up: judged queries (with a relevant
/// document), those of them absent from the run (scored 0), and run queries
/// without any relevant judgment (ignored by the averages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Coverage {
    pub judged: usize,
    pub missing_from_run: usize,
    pub unjudged_in_run: usize,
}

pub fn coverage(run: &Run, qrels: &Qrels) -> Coverage {
    let judged = |q: &String| qrels.get(q).is_some_and(|r| r.values().any(|&x| x > 0.0));
    let judged_ids: Vec<&String> = qrels.keys().filter(|q| judged(q)).collect();
    Coverage {
        judged: judged_ids.len(),
        missing_from_run: judged_ids.iter().filter(|q| !run.contains_key(**q)).count(),
        unjudged_in_run: run.keys().filter(|q| !judged(q)).count(),
    }
}

/// [`evaluate`] at every cutoff of `ks`, in order.
pub fn evaluate_at(run: &Run, qrels: &Qrels, ks: &[usize]) -> Vec<Metrics> {
    ks.iter().map(|&k| evaluate(run, qrels, k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn hand_computed_example() {
        // Relevant: b (2), d (1). Ranking: a b c d.
        let rels: HashMap<String, f64> = [("b".into(), 2.0), ("d".into(), 1.0)].into();
        let ranked = s(&["a", "b", "c", "d"]);
        let (h, rr, ndcg, rec) = query_metrics(&ranked, &rels, 3);
        assert_eq!((h, rr, rec), (1.0, 0.5, 0.5));
        // DCG@3 = 2/log2(3); IDCG@3 = 2/log2(2) + 1/log2(3).
        let want = (2.0 / 3f64.log2()) / (2.0 + 1.0 / 3f64.log2());
        assert!((ndcg - want).abs() < 1e-12);
        let (h, rr, _, rec) = query_metrics(&ranked, &rels, 1);
        assert_eq!((h, rr, rec), (0.0, 0.0, 0.0));
        let (_, _, ndcg, rec) = query_metrics(&ranked, &rels, 10);
        assert_eq!(rec, 1.0);
        let want = (2.0 / 3f64.log2() + 1.0 / 5f64.log2()) / (2.0 + 1.0 / 3f64.log2());
        assert!((ndcg - want).abs() < 1e-12);
    }

    #[test]
    fn recall_against_reference() {
        let reference: Run = [("q".to_string(), s(&["a", "b", "c", "d"]))].into();
        let run: Run = [("q".to_string(), s(&["b", "x", "a", "d"]))].into();
        assert_eq!(recall_against(&run, &reference, 2), 0.5);
        assert_eq!(recall_against(&run, &reference, 4), 0.75);
    }
}
