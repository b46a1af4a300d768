//! `tessera bench search`: two-stage search against exact search on one
//! collection, measured in the same run — recall@k of the exact top-k,
//! MRR@10 and nDCG@10 against relevance judgments, latency percentiles, and
//! throughput at 1 and 2 threads.

use crate::bulk::{BulkReader, Result};
use crate::eval::{self, Run};
use rayon::prelude::*;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tessera::{Collection, Database, SearchParams, Tokens};

pub struct SearchBench {
    pub collection: String,
    pub queries: PathBuf,
    pub k: usize,
    pub candidates: Vec<usize>,
    /// Rerank counts measured with each candidate count (empty: the default).
    pub rerank: Vec<usize>,
    pub ef: Option<usize>,
    pub qrels: Option<PathBuf>,
}

/// One measured setting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub setting: String,
    /// The MaxSim kernel of the run (`tessera::kernel_info`).
    pub kernel: &'static str,
    pub candidates: Option<usize>,
    /// Candidates scored exactly after the screening (`None`: the default, or no screening).
    pub rerank: Option<usize>,
    pub recall_at_k: f64,
    pub mrr_at_10: Option<f64>,
    pub ndcg_at_10: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub qps_1_thread: f64,
    pub qps_2_threads: f64,
    pub speedup_vs_exact: f64,
    pub rss_mb: f64,
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new().num_threads(threads).build()?)
}

/// Runs every query with `params` in a 1-thread pool (latencies, run) and
/// again with queries spread over a 2-thread pool (throughput).
fn measure(
    c: &Collection,
    queries: &[(String, Tokens)],
    params: &SearchParams,
) -> Result<(Run, Vec<Duration>, f64, f64)> {
    let one = pool(1)?;
    let mut run = Run::new();
    let mut lat = Vec::with_capacity(queries.len());
    let t1 = Instant::now();
    for (qid, q) in queries {
        let t = Instant::now();
        let hits = one.install(|| c.search_with(q, params))?;
        lat.push(t.elapsed());
        run.insert(qid.clone(), hits.into_iter().map(|h| h.id).collect());
    }
    let qps1 = queries.len() as f64 / t1.elapsed().as_secs_f64();
    let two = pool(2)?;
    let t2 = Instant::now();
    two.install(|| queries.par_iter().try_for_each(|(_, q)| c.search_with(q, params).map(|_| ())))?;
    let qps2 = queries.len() as f64 / t2.elapsed().as_secs_f64();
    lat.sort();
    Ok((run, lat, qps1, qps2))
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(String::from))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn search(db: &Database, o: &SearchBench, json: bool, out: &mut dyn Write) -> Result<Vec<Row>> {
    let c = db.collection(&o.collection)?;
    let mut reader = BulkReader::open(&o.queries, "queries.jsonl")?;
    let mut queries = Vec::new();
    while let Some(q) = reader.next_doc()? {
        queries.push((q.id, q.tokens));
    }
    let qrels = o.qrels.as_deref().map(eval::read_qrels).transpose()?;
    let pct = |l: &[Duration], p: f64| l[((l.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
    let (exact_run, exact_lat, q1, q2) = measure(&c, &queries, &SearchParams::exact(o.k))?;
    let exact_p50 = pct(&exact_lat, 0.5);
    type Measured = (String, Option<usize>, Option<usize>, Run, Vec<Duration>, f64, f64);
    let mut settings: Vec<Measured> = vec![("exact".into(), None, None, exact_run.clone(), exact_lat, q1, q2)];
    let reranks: Vec<Option<usize>> =
        if o.rerank.is_empty() { vec![None] } else { o.rerank.iter().copied().map(Some).collect() };
    let screened = c.config().screening != tessera::Screening::None;
    for &n in &o.candidates {
        for &r in &reranks {
            let mut p = SearchParams::new(o.k).with_candidates(n);
            if let Some(ef) = o.ef {
                p = p.with_ef(ef);
            }
            if let Some(r) = r {
                p = p.with_rerank(r);
            }
            let (run, lat, q1, q2) = measure(&c, &queries, &p)?;
            let setting = match r {
                Some(r) if r < n => format!("screened c={n} rerank={r}"),
                None if screened => format!("screened c={n} rerank={}", tessera::DEFAULT_RERANK),
                _ => format!("two-stage candidates={n}"),
            };
            settings.push((setting, Some(n), r, run, lat, q1, q2));
        }
    }
    let mut rows = Vec::new();
    if !json {
        writeln!(
            out,
            "{} queries, {} documents ({} tokens, screening {}), k={}, kernel {}; recall@{} is against the exact top-{} of the same run",
            queries.len(),
            c.len(),
            c.config().storage.name(),
            c.config().screening.name(),
            o.k,
            tessera::kernel_info().kernel,
            o.k,
            o.k
        )?;
        writeln!(
            out,
            "{:<28} {:>9} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>7}",
            "setting", "recall@k", "MRR@10", "nDCG@10", "p50 ms", "p99 ms", "QPS 1t", "QPS 2t", "speedup", "RSS MB"
        )?;
    }
    for (setting, candidates, rerank, run, lat, qps1, qps2) in settings {
        let m10 = qrels.as_ref().map(|q| eval::evaluate(&run, q, 10));
        let row = Row {
            setting,
            kernel: tessera::kernel_info().kernel,
            candidates,
            rerank,
            recall_at_k: eval::recall_against(&run, &exact_run, o.k),
            mrr_at_10: m10.map(|m| m.mrr),
            ndcg_at_10: m10.map(|m| m.ndcg),
            p50_ms: pct(&lat, 0.5),
            p99_ms: pct(&lat, 0.99),
            qps_1_thread: qps1,
            qps_2_threads: qps2,
            speedup_vs_exact: exact_p50 / pct(&lat, 0.5),
            rss_mb: rss_mb(),
        };
        if json {
            writeln!(out, "{}", serde_json::to_string(&row)?)?;
        } else {
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
            writeln!(
                out,
                "{:<28} {:>9.3} {:>7} {:>8} {:>8.2} {:>8.2} {:>9.0} {:>9.0} {:>7.1}x {:>7.0}",
                row.setting,
                row.recall_at_k,
                opt(row.mrr_at_10),
                opt(row.ndcg_at_10),
                row.p50_ms,
                row.p99_ms,
                row.qps_1_thread,
                row.qps_2_threads,
                row.speedup_vs_exact,
                row.rss_mb
            )?;
        }
        rows.push(row);
    }
    Ok(rows)
}
