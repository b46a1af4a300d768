//! Synthetic corpora for the demo, tests and benchmarks: clustered, unit-norm
//! token embeddings that behave like late-interaction output (documents on a
//! topic share token clusters), and queries made from a source document's
//! tokens plus noise, so the source is the expected top hit.

use tessera::{Document, Tokens};

/// The engine's SplitMix64, with the draws the generator needs.
#[derive(Debug, Clone)]
pub struct Rng(tessera::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(tessera::SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Approximately standard normal (sum of uniforms).
    pub fn gauss(&mut self) -> f32 {
        (0..4).map(|_| self.unit()).sum::<f32>() * 0.866
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// A generated corpus and queries.
pub struct Corpus {
    pub dim: usize,
    pub docs: Vec<Document>,
    /// Query tokens and the index of the document each was made from.
    pub queries: Vec<(Tokens, usize)>,
}

/// `n_docs` documents of 1..=2·avg_tokens tokens over `n_topics` topics, and
/// `n_queries` queries of `query_tokens` tokens.
pub fn corpus(
    n_docs: usize,
    avg_tokens: usize,
    dim: usize,
    n_queries: usize,
    query_tokens: usize,
    seed: u64,
) -> Corpus {
    let mut rng = Rng::new(seed);
    let n_centroids = 256;
    let centroids: Vec<Vec<f32>> = (0..n_centroids)
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| rng.gauss()).collect();
            normalize(&mut c);
            c
        })
        .collect();
    let token = |rng: &mut Rng, c: usize, noise: f32| {
        let mut t: Vec<f32> = centroids[c].iter().map(|x| x + noise * rng.gauss() / (dim as f32).sqrt()).collect();
        normalize(&mut t);
        t
    };
    let mut doc_tokens = Vec::with_capacity(n_docs);
    let docs = (0..n_docs)
        .map(|i| {
            let n = 1 + rng.below(2 * avg_tokens);
            // A topic: a handful of centroids this document's tokens come from.
            let topic: Vec<usize> = (0..6).map(|_| rng.below(n_centroids)).collect();
            let data: Vec<f32> = (0..n)
                .flat_map(|_| {
                    let c = topic[rng.below(topic.len())];
                    token(&mut rng, c, 0.8)
                })
                .collect();
            doc_tokens.push(data.clone());
            Document::new(format!("doc-{i:06}"), Tokens::F32 { data, dim })
                .with_text(format!("synthetic document {i} with {n} tokens"))
                .with_payload(serde_json::json!({ "n_tokens": n, "shard": i % 4 }))
        })
        .collect();
    let queries = (0..n_queries)
        .map(|_| {
            let src = rng.below(n_docs);
            let d = &doc_tokens[src];
            let rows = d.len() / dim;
            let data: Vec<f32> = (0..query_tokens)
                .flat_map(|_| {
                    let r = rng.below(rows);
                    let mut t: Vec<f32> =
                        d[r * dim..(r + 1) * dim].iter().map(|x| x + 0.3 * rng.gauss() / (dim as f32).sqrt()).collect();
                    normalize(&mut t);
                    t
                })
                .collect();
            (Tokens::F32 { data, dim }, src)
        })
        .collect();
    Corpus { dim, docs, queries }
}

/// Writes a 1-D or 2-D little-endian .npy file (`descr` is e.g. `<f2`, `<f4`, `<u8`).
pub fn write_npy(path: &std::path::Path, descr: &str, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    let mut out = crate::text::npy_header(descr, shape, 0);
    out.extend_from_slice(data);
    std::fs::write(path, out)
}

/// Writes documents as a bulk-format folder (`jsonl_name`, tokens.npy as f16, offsets.npy as uint64).
pub fn write_bulk(dir: &std::path::Path, jsonl_name: &str, docs: &[Document]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let dim = docs.first().map_or(1, |d| d.tokens.dim());
    let mut lines = String::new();
    let mut tokens: Vec<tessera::f16> = Vec::new();
    let mut offsets = vec![0u64];
    for d in docs {
        let mut rec = serde_json::json!({ "id": d.id });
        if let Some(t) = &d.text {
            rec["text"] = t.clone().into();
        }
        if let Some(p) = &d.payload {
            rec["payload"] = p.clone();
        }
        lines.push_str(&rec.to_string());
        lines.push('\n');
        match &d.tokens {
            Tokens::F32 { data, .. } => tokens.extend(data.iter().map(|&x| tessera::f16::from_f32(x))),
            Tokens::F16 { data, .. } => tokens.extend_from_slice(data),
        }
        offsets.push((tokens.len() / dim) as u64);
    }
    std::fs::write(dir.join(jsonl_name), lines)?;
    write_npy(&dir.join("tokens.npy"), "<f2", &[tokens.len() / dim, dim], bytemuck::cast_slice(&tokens))?;
    write_npy(&dir.join("offsets.npy"), "<u8", &[offsets.len()], bytemuck::cast_slice(&offsets))
}
