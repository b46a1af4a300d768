//! `tessera bench writes`: the latency of each write batch while the
//! collection flushes (seals memtables into segments) and merges, as one
//! client writing as fast as it can sees it.

use crate::bulk::Result;
use crate::synth;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use tessera::{CollectionConfig, Database, Document};

#[derive(clap::Args)]
pub struct WritesArgs {
    /// Database folder (must not exist); a temporary one, removed afterwards, if omitted.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Write batches to send.
    #[arg(long, default_value_t = 1500)]
    pub batches: usize,
    /// Documents per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_docs: usize,
    /// Mean tokens per document (1..=2·mean, clustered random tokens).
    #[arg(long, default_value_t = 64)]
    pub avg_tokens: usize,
    /// Token dimension.
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// The collection's memtable size in MiB (a flush each time it fills).
    #[arg(long, default_value_t = 16)]
    pub memtable_mib: usize,
    /// Batches per second to send at most (0: as fast as the collection takes them). Below the
    /// collection's sustained rate, this measures what a write costs while a flush runs rather
    /// than the back-pressure of a writer that outruns sealing.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Candidate index: pooled, muvera, centroids or none.
    #[arg(long, default_value = "pooled", value_parser = crate::args::named::<tessera::IndexKind>())]
    pub index: tessera::IndexKind,
}

/// Writes `batches` batches of new documents and prints one JSON object:
/// per-batch latency percentiles, the slowest batch, and what sealing did.
pub fn run(a: &WritesArgs, out: &mut dyn Write) -> Result<()> {
    if a.batches == 0 || a.batch_docs == 0 || a.avg_tokens == 0 || a.dim == 0 || a.memtable_mib == 0 {
        return Err("every size must be at least 1".into());
    }
    if !(a.rate.is_finite() && a.rate >= 0.0) {
        return Err("--rate must be a number ≥ 0".into());
    }
    let (dir, _remove) = match &a.db {
        Some(d) if d.exists() => {
            return Err(format!("{} exists: bench writes makes a new database", d.display()).into());
        }
        Some(d) => (d.clone(), None),
        None => {
            let d = std::env::temp_dir().join(format!("tessera-bench-writes-{}", std::process::id()));
            (d.clone(), Some(RemoveOnDrop(d)))
        }
    };
    let db = Database::open(&dir)?;
    let config = CollectionConfig {
        memtable_bytes: a.memtable_mib << 20,
        index: a.index.config(),
        ..CollectionConfig::new(a.dim)
    };
    let c = db.create_collection("w", config)?;
    // A pool of generated documents, reused under new ids.
    let pool = synth::corpus(4096.min(a.batches * a.batch_docs), a.avg_tokens, a.dim, 0, 1, 7).docs;
    let mut lat = Vec::with_capacity(a.batches);
    let start = Instant::now();
    let mut tokens = 0usize;
    for b in 0..a.batches {
        let docs: Vec<Document> = (0..a.batch_docs)
            .map(|i| {
                let d = &pool[(b * a.batch_docs + i) % pool.len()];
                Document { id: format!("b{b}-{i}"), ..d.clone() }
            })
            .collect();
        tokens += docs
            .iter()
            .map(|d| match &d.tokens {
                tessera::Tokens::F32 { data, .. } => data.len(),
                tessera::Tokens::F16 { data, .. } => data.len(),
            })
            .sum::<usize>()
            / a.dim;
        if a.rate > 0.0 {
            let due = start + std::time::Duration::from_secs_f64(b as f64 / a.rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let t = Instant::now();
        c.upsert(&docs)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let seconds = start.elapsed().as_secs_f64();
    c.flush()?;
    let st = c.stats();
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let v = serde_json::json!({
        "bench": "writes", "index": a.index.name(), "memtable_mib": a.memtable_mib,
        "batches": a.batches, "batch_docs": a.batch_docs, "dim": a.dim, "tokens": tokens,
        "seconds": round(seconds), "docs_per_s": (a.batches * a.batch_docs) as f64 / seconds,
        "tokens_per_s": (tokens as f64 / seconds).round(),
        "p50_ms": round(pct(0.5)), "p99_ms": round(pct(0.99)), "p999_ms": round(pct(0.999)),
        "max_ms": round(sorted[sorted.len() - 1]),
        "rate": a.rate, "batches_over_10ms": lat.iter().filter(|&&x| x > 10.0).count(),
        "batches_over_100ms": lat.iter().filter(|&&x| x > 100.0).count(),
        "flushes": st.build.flushes, "merges": st.build.merges,
        "flush_s": round(st.build.flush_s), "merge_s": round(st.build.merge_s),
        "segments": st.segments, "documents": st.documents,
    });
    writeln!(out, "{v}")?;
    Ok(())
}

/// Removes the temporary database when the bench ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
