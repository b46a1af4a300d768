//! How well does each single-vector encoder find the exact MaxSim top-10?
//!
//! For pooled and several MUVERA settings, on a bulk-format data set with an
//! exact MaxSim run (default `../shared/evaldata/debdocs`), reports the encoded
//! dimension, encode and HNSW build times, and the recall of each query's exact
//! top-10 within the coarse top-N (N ∈ {50, 100, 200, 300, 500}), both by
//! brute-force coarse scoring and through the HNSW (ef = max(N, 64)).
//!
//! ```sh
//! cargo run --release -p tessera-index --example coarse_recall -- [DATA_DIR] [ENCODER_JSON ...]
//! # e.g. '{"kind":"muvera","k_sim":4,"d_proj":16,"reps":10,"final_dim":null,"seed":42}'
//! ```

use half::f16;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use tessera_index::{Encoder, EncoderConfig, HnswLayout, HnswParams, build_index};

const NS: [usize; 5] = [50, 100, 200, 300, 500];

struct Set {
    tokens: Vec<f16>,
    offsets: Vec<u64>,
    ids: Vec<String>,
    dim: usize,
}

fn npy(path: &Path) -> (Vec<u8>, Vec<u64>, String) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rest = &bytes[..];
    let h = npyz::NpyHeader::from_reader(&mut rest).expect("npy header");
    let at = bytes.len() - rest.len();
    (bytes[at..].to_vec(), h.shape().to_vec(), h.dtype().descr().trim_matches('\'').to_string())
}

fn load(dir: &Path, jsonl: &str) -> Set {
    let (tb, shape, dt) = npy(&dir.join("tokens.npy"));
    assert_eq!(dt, "<f2", "tokens must be float16");
    let (ob, _, _) = npy(&dir.join("offsets.npy"));
    let ids = std::fs::read_to_string(dir.join(jsonl))
        .expect("jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["id"].as_str().expect("id").to_string())
        .collect();
    Set {
        tokens: bytemuck::pod_collect_to_vec(&tb),
        offsets: bytemuck::pod_collect_to_vec(&ob),
        ids,
        dim: shape[1] as usize,
    }
}

impl Set {
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    fn rows(&self, i: usize) -> &[f16] {
        &self.tokens[self.offsets[i] as usize * self.dim..self.offsets[i + 1] as usize * self.dim]
    }
}

/// Exact top-10 of each query (document indices), from the TREC run.
fn exact_top10(run: &Path, docs: &Set, queries: &Set) -> Vec<Vec<u32>> {
    let doc_at: HashMap<&str, u32> = docs.ids.iter().enumerate().map(|(i, d)| (d.as_str(), i as u32)).collect();
    let mut by_q: HashMap<String, Vec<(usize, u32)>> = HashMap::new();
    for line in std::fs::read_to_string(run).expect("run file").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let rank: usize = f[3].parse().expect("rank");
        if rank <= 10 {
            by_q.entry(f[0].to_string()).or_default().push((rank, doc_at[f[2]]));
        }
    }
    queries
        .ids
        .iter()
        .map(|q| {
            let mut v = by_q.remove(q).unwrap_or_default();
            v.sort_unstable();
            v.into_iter().map(|x| x.1).collect()
        })
        .collect()
}

fn recall(got: &[u32], want: &[u32]) -> f64 {
    want.iter().filter(|w| got.contains(w)).count() as f64 / want.len().max(1) as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().map_or("../shared/evaldata/debdocs", |s| s.as_str());
    let dir = Path::new(dir);
    let docs = load(&dir.join("corpus"), "docs.jsonl");
    let queries = load(&dir.join("queries"), "queries.jsonl");
    let exact = exact_top10(&dir.join("exact_top100.run"), &docs, &queries);
    let mut configs: Vec<EncoderConfig> =
        args[1.min(args.len())..].iter().map(|s| serde_json::from_str(s).expect("encoder config JSON")).collect();
    if configs.is_empty() {
        configs = default_configs();
    }
    println!(
        "{} docs, {} queries, dim {}, {} threads, HNSW {:?}\n",
        docs.len(),
        queries.len(),
        docs.dim,
        rayon::current_num_threads(),
        HnswParams::default()
    );
    println!("| encoder | dim | encode docs s | HNSW build s | search | {} | µs/query at N=100 |", header());
    println!("|---|---|---|---|---|{}---|", "---|".repeat(NS.len()));
    for cfg in &configs {
        measure(cfg, &docs, &queries, &exact);
    }
}

fn header() -> String {
    NS.iter().map(|n| format!("R@{n}")).collect::<Vec<_>>().join(" | ")
}

fn default_configs() -> Vec<EncoderConfig> {
    let mv = |k_sim, d_proj, reps, final_dim| EncoderConfig::Muvera { k_sim, d_proj, reps, final_dim, seed: 42 };
    vec![
        EncoderConfig::Pooled,
        mv(3, 8, 10, None),
        mv(3, 16, 10, None),
        mv(4, 8, 10, None),
        mv(4, 16, 10, None),
        mv(4, 16, 20, None),
        mv(5, 16, 20, None),
        mv(4, 32, 20, None),
        mv(5, 16, 20, Some(2048)),
        mv(4, 16, 20, Some(1024)),
    ]
}

fn describe(cfg: &EncoderConfig) -> String {
    match cfg {
        EncoderConfig::Pooled => "pooled".into(),
        EncoderConfig::Muvera { k_sim, d_proj, reps, final_dim, .. } => {
            let f = final_dim.map_or(String::new(), |f| format!(", final {f}"));
            format!("muvera k{k_sim} d{d_proj} r{reps}{f}")
        }
    }
}

fn measure(cfg: &EncoderConfig, docs: &Set, queries: &Set, exact: &[Vec<u32>]) {
    let enc = Encoder::new(cfg, docs.dim);
    let d = enc.dim();
    let t = Instant::now();
    let mut dv = vec![0f32; docs.len() * d];
    dv.par_chunks_mut(d).enumerate().for_each(|(i, out)| enc.encode_doc(docs.rows(i), out));
    let encode_s = t.elapsed().as_secs_f64();
    let mut qv = vec![0f32; queries.len() * d];
    qv.par_chunks_mut(d).enumerate().for_each(|(i, out)| {
        let q: Vec<f32> = queries.rows(i).iter().map(|h| h.to_f32()).collect();
        enc.encode_query(&q, out);
    });
    let t = Instant::now();
    let bytes = build_index(&dv, d, &HnswParams::default());
    let build_s = t.elapsed().as_secs_f64();
    let store: Vec<u64> = {
        let mut v = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut v)[..bytes.len()].copy_from_slice(&bytes);
        v
    };
    let file = &bytemuck::cast_slice::<u64, u8>(&store)[..bytes.len()];
    let idx = HnswLayout::parse(file).expect("index parses");
    let qs: Vec<usize> = (0..queries.len()).filter(|&q| !exact[q].is_empty()).collect();
    // Brute force: full coarse ranking per query.
    let t = Instant::now();
    let ranked: Vec<Vec<u32>> = qs
        .par_iter()
        .map(|&q| {
            let qq = &qv[q * d..(q + 1) * d];
            let mut s: Vec<(f32, u32)> = dv
                .chunks_exact(d)
                .enumerate()
                .map(|(i, v)| (v.iter().zip(qq).map(|(a, b)| a * b).sum(), i as u32))
                .collect();
            s.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            s.into_iter().take(NS[NS.len() - 1]).map(|x| x.1).collect()
        })
        .collect();
    let brute_us = t.elapsed().as_secs_f64() * 1e6 / qs.len() as f64;
    let brute: Vec<f64> = NS
        .iter()
        .map(|&n| qs.iter().zip(&ranked).map(|(&q, r)| recall(&r[..n], &exact[q])).sum::<f64>() / qs.len() as f64)
        .collect();
    let mut hnsw = Vec::new();
    let mut hnsw_us = 0.0;
    for &n in &NS {
        let t = Instant::now();
        let r: f64 = qs
            .par_iter()
            .map(|&q| {
                let got: Vec<u32> =
                    idx.search(file, &qv[q * d..(q + 1) * d], n, n.max(64), |_| true).iter().map(|x| x.0).collect();
                recall(&got, &exact[q])
            })
            .sum();
        if n == 100 {
            hnsw_us = t.elapsed().as_secs_f64() * 1e6 / qs.len() as f64;
        }
        hnsw.push(r / qs.len() as f64);
    }
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(" | ");
    let name = describe(cfg);
    println!("| {name} | {d} | {encode_s:.2} | {build_s:.2} | brute | {} | {brute_us:.0} (full scan) |", fmt(&brute));
    println!("| {name} | {d} | | | hnsw | {} | {hnsw_us:.0} |", fmt(&hnsw));
}
