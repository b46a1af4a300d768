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
    /// Centroids indexes: nprobe values measured with each candidate count (empty: the default).
    pub nprobe: Vec<usize>,
    pub qrels: Option<PathBuf>,
    /// The exact run to measure recall against (a TREC run of `tessera
    /// search --exact`), instead of running exact search in the bench:
    /// for collections too large to scan query by query in memory.
    pub exact_run: Option<PathBuf>,
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
    /// Centroids probed per query token (`None`: the default, or not a centroids index).
    pub nprobe: Option<usize>,
    /// Documents the exact MaxSim scores per query from segments (all live ones for exact search).
    pub scored: usize,
    pub recall_at_k: f64,
    pub mrr_at_10: Option<f64>,
    pub ndcg_at_10: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub qps_1_thread: f64,
    pub qps_2_threads: f64,
    /// Exact p50 over this setting's p50 (`None` when recall is measured
    /// against a given exact run, so exact search did not run).
    pub speedup_vs_exact: Option<f64>,
    pub rss_mb: f64,
    /// The collection's candidate index, its size and the seconds spent
    /// building it (codebook training included) since the collection was created.
    pub index: &'static str,
    pub index_bytes_per_token: f64,
    pub index_build_s: f64,
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

/// One setting as measured.
struct Measured {
    setting: String,
    params: SearchParams,
    scored: usize,
    run: Run,
    lat: Vec<Duration>,
    qps: (f64, f64),
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
    let stats = c.stats();
    let mut settings = Vec::new();
    let exact_run = match &o.exact_run {
        Some(path) => eval::read_run(path)?,
        None => {
            let (run, lat, q1, q2) = measure(&c, &queries, &SearchParams::exact(o.k))?;
            let params = SearchParams::exact(o.k);
            settings.push(Measured {
                setting: "exact".into(),
                params,
                scored: c.len(),
                run: run.clone(),
                lat,
                qps: (q1, q2),
            });
            run
        }
    };
    if let Some(q) = queries.iter().find(|(qid, _)| !exact_run.contains_key(qid)) {
        return Err(format!("the exact run has no ranking for query {:?}", q.0).into());
    }
    let exact_p50 = settings.first().map(|m| pct(&m.lat, 0.5));
    let reranks: Vec<Option<usize>> =
        if o.rerank.is_empty() { vec![None] } else { o.rerank.iter().copied().map(Some).collect() };
    let nprobes: Vec<Option<usize>> =
        if o.nprobe.is_empty() { vec![None] } else { o.nprobe.iter().copied().map(Some).collect() };
    let screened = c.config().screens();
    for &n in &o.candidates {
        for &r in &reranks {
            for &np in &nprobes {
                let mut p = SearchParams::new(o.k).with_candidates(n);
                (p.ef, p.rerank, p.nprobe) = (o.ef, r, np);
                let (run, lat, q1, q2) = measure(&c, &queries, &p)?;
                let mut setting = match r {
                    Some(r) if r < n => format!("screened c={n} rerank={r}"),
                    None if screened => format!("screened c={n} rerank={}", tessera::default_rerank(o.k)),
                    _ => format!("two-stage candidates={n}"),
                };
                if let Some(np) = np {
                    setting += &format!(" nprobe={np}");
                }
                let scored = match r {
                    _ if !screened => n.max(o.k),
                    Some(r) => r.max(o.k).min(n.max(o.k)),
                    None => tessera::default_rerank(o.k).min(n.max(o.k)),
                };
                settings.push(Measured { setting, params: p, scored, run, lat, qps: (q1, q2) });
            }
        }
    }
    let mut rows = Vec::new();
    if !json {
        writeln!(
            out,
            "{} queries, {} documents ({} tokens, screening {}, index {} at {:.1} bytes/token{}, {}), k={}, kernel {}; recall@{} is against the exact top-{} {}",
            queries.len(),
            c.len(),
            c.config().storage.name(),
            c.config().screening.name(),
            stats.index,
            stats.index_bytes_per_token,
            stats.centroids.map_or(String::new(), |k| format!(", {k} centroids")),
            match stats.build.flushes + stats.build.merges {
                0 => "build time not recorded".to_string(),
                _ => format!("built in {:.1} s", stats.build.index_s),
            },
            o.k,
            tessera::kernel_info().kernel,
            o.k,
            o.k,
            match &o.exact_run {
                Some(path) => format!("of {}", path.display()),
                None => "of the same run".into(),
            }
        )?;
        writeln!(
            out,
            "{:<38} {:>7} {:>9} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>7}",
            "setting",
            "scored",
            "recall@k",
            "MRR@10",
            "nDCG@10",
            "p50 ms",
            "p99 ms",
            "QPS 1t",
            "QPS 2t",
            "speedup",
            "RSS MB"
        )?;
    }
    for m in settings {
        let m10 = qrels.as_ref().map(|q| eval::evaluate(&m.run, q, 10));
        let lat = &m.lat;
        let row = Row {
            setting: m.setting,
            kernel: tessera::kernel_info().kernel,
            candidates: m.params.candidates,
            rerank: m.params.rerank,
            nprobe: m.params.nprobe,
            scored: m.scored,
            recall_at_k: eval::recall_against(&m.run, &exact_run, o.k),
            mrr_at_10: m10.map(|m| m.mrr),
            ndcg_at_10: m10.map(|m| m.ndcg),
            p50_ms: pct(lat, 0.5),
            p99_ms: pct(lat, 0.99),
            qps_1_thread: m.qps.0,
            qps_2_threads: m.qps.1,
            speedup_vs_exact: exact_p50.map(|e| e / pct(lat, 0.5)),
            rss_mb: rss_mb(),
            index: stats.index,
            index_bytes_per_token: stats.index_bytes_per_token,
            index_build_s: stats.build.index_s,
        };
        if json {
            writeln!(out, "{}", serde_json::to_string(&row)?)?;
        } else {
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
            writeln!(
                out,
                "{:<38} {:>7} {:>9.3} {:>7} {:>8} {:>8.2} {:>8.2} {:>9.0} {:>9.0} {:>8} {:>7.0}",
                row.setting,
                row.scored,
                row.recall_at_k,
                opt(row.mrr_at_10),
                opt(row.ndcg_at_10),
                row.p50_ms,
                row.p99_ms,
                row.qps_1_thread,
                row.qps_2_threads,
                row.speedup_vs_exact.map_or("-".to_string(), |x| format!("{x:.1}x")),
                row.rss_mb
            )?;
        }
        rows.push(row);
    }
    Ok(rows)
}
