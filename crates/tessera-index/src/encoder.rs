//! Single-vector encoders: one vector per document from its token matrix,
//! such that ⟨encode_query(Q), encode_doc(D)⟩ approximates MaxSim(Q, D).
//!
//! - **Pooled**: the mean of the tokens, L2-normalised (queries likewise).
//!   Cheap and small (`token_dim`), but a blurred summary of the document.
//! - **MUVERA** fixed-dimensional encoding (Dhulipala et al., "MUVERA:
//!   Multi-Vector Retrieval via Fixed Dimensional Encodings", NeurIPS 2024).
//!   For each repetition `r < reps`:
//!   1. SimHash: `k_sim` Gaussian vectors `g_1..g_k`; a token `x` falls in
//!      partition `p(x) = Σ_i [⟨g_i, x⟩ > 0]·2^i` (plain binary order,
//!      `2^k_sim` partitions);
//!   2. projection `ψ(x) = S x`, `S` a `d_proj × token_dim` matrix of ±1/√d_proj
//!      (the identity when `d_proj == token_dim`);
//!   3. document block `(r, p)` = **mean** of `ψ(x)` over the document's tokens
//!      in `p`; an empty block takes `ψ(x)` of the token whose SimHash code is
//!      nearest to `p` in Hamming distance (empty-partition filling; first
//!      such token on ties). Query block `(r, p)` = **sum** of `ψ(q)` over the
//!      query's tokens in `p`, with no filling.
//!
//!   Blocks are concatenated in `(r, p)` order: `reps · 2^k_sim · d_proj` values.
//!   With `final_dim`, that vector is reduced by a **count-sketch** (each input
//!   coordinate `j` is added, with sign `σ(j) = ±1`, to output coordinate `h(j)`),
//!   which preserves inner products in expectation and needs O(input) memory,
//!   where a dense `final_dim × input` matrix would need hundreds of megabytes
//!   (the authors' reference implementation does the same).
//!
//! Every random draw comes from [`SplitMix64`](crate::rng) seeded by `seed`, in
//! a fixed order, so a config always yields the same encoder.

use crate::rng::SplitMix64;
use tessera_kernels::Element;

/// Largest output (and count-sketch input) dimension an encoder may have.
pub const MAX_DIM: usize = 65536;
/// Largest intermediate MUVERA dimension before a final projection.
pub const MAX_FDE_DIM: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EncoderConfig {
    /// Mean of the document's tokens, L2-normalised (queries likewise).
    Pooled,
    /// MUVERA fixed-dimensional encoding (Dhulipala et al., 2024).
    Muvera { k_sim: u32, d_proj: u32, reps: u32, final_dim: Option<u32>, seed: u64 },
}

impl EncoderConfig {
    /// The MUVERA setting chosen on the debdocs evaluation set
    /// (`examples/coarse_recall.rs`; table in docs/PERFORMANCE.md): the
    /// smallest measured encoding whose coarse top-200 holds ≥ 0.95 of the
    /// exact top-10 — 4 partitions, no projection for 128-dim tokens, 4
    /// repetitions, 2048 dims. Random projections (d_proj 8–32) and final
    /// count-sketches need 2.5–5× the dimensions for the same recall there.
    pub fn muvera_default() -> Self {
        Self::Muvera { k_sim: 2, d_proj: 128, reps: 4, final_dim: None, seed: 42 }
    }

    /// Checks the bounds: `token_dim` 1..=65536; MUVERA `k_sim` 1..=8,
    /// `d_proj` 1..=4096, `reps` 1..=256, concatenated dim ≤ 2^20, output dim
    /// ≤ 65536, `final_dim` ≥ 1 and ≤ the concatenated dim.
    pub fn validate(&self, token_dim: usize) -> Result<(), String> {
        if !(1..=MAX_DIM).contains(&token_dim) {
            return Err(format!("token dim {token_dim} must be in 1..={MAX_DIM}"));
        }
        let &Self::Muvera { k_sim, d_proj, reps, final_dim, .. } = self else { return Ok(()) };
        if !(1..=8).contains(&k_sim) {
            return Err(format!("muvera k_sim {k_sim} must be in 1..=8"));
        }
        if !(1..=4096).contains(&d_proj) {
            return Err(format!("muvera d_proj {d_proj} must be in 1..=4096"));
        }
        if !(1..=256).contains(&reps) {
            return Err(format!("muvera reps {reps} must be in 1..=256"));
        }
        let fde = reps as usize * (1usize << k_sim) * d_proj as usize;
        if fde > MAX_FDE_DIM {
            return Err(format!("muvera dimension reps·2^k_sim·d_proj = {fde} exceeds {MAX_FDE_DIM}"));
        }
        match final_dim {
            None if fde > MAX_DIM => {
                Err(format!("muvera dimension {fde} exceeds {MAX_DIM}; set final_dim to project it down"))
            }
            Some(f) if f == 0 || f as usize > fde.min(MAX_DIM) => {
                Err(format!("muvera final_dim {f} must be in 1..={}", fde.min(MAX_DIM)))
            }
            _ => Ok(()),
        }
    }
}

/// A built encoder: the config's random matrices, drawn once. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Encoder {
    token_dim: usize,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Pooled,
    Muvera(Muvera),
}

#[derive(Debug, Clone)]
struct Muvera {
    k_sim: usize,
    d_proj: usize,
    reps: usize,
    /// Per repetition, `k_sim` SimHash rows then (unless identity) `d_proj`
    /// projection rows, each `token_dim` long, row-major.
    rows: Vec<Vec<f32>>,
    identity: bool,
    /// Count-sketch of the final projection: (bucket, sign) per FDE coordinate.
    sketch: Option<(usize, Vec<(u32, f32)>)>,
}

impl Encoder {
    /// Draws the encoder's matrices. Panics if `cfg.validate(token_dim)` fails.
    pub fn new(cfg: &EncoderConfig, token_dim: usize) -> Self {
        if let Err(e) = cfg.validate(token_dim) {
            panic!("invalid encoder config {cfg:?}: {e}");
        }
        let kind = match *cfg {
            EncoderConfig::Pooled => Kind::Pooled,
            EncoderConfig::Muvera { k_sim, d_proj, reps, final_dim, seed } => {
                Kind::Muvera(Muvera::new(k_sim as usize, d_proj as usize, reps as usize, final_dim, seed, token_dim))
            }
        };
        Self { token_dim, kind }
    }

    /// Output vector dimension.
    pub fn dim(&self) -> usize {
        match &self.kind {
            Kind::Pooled => self.token_dim,
            Kind::Muvera(m) => m.sketch.as_ref().map_or(m.fde_dim(), |s| s.0),
        }
    }

    pub fn token_dim(&self) -> usize {
        self.token_dim
    }

    /// Encodes a document: `tokens` is `n × token_dim` (n ≥ 1), `out` is `dim()` long.
    pub fn encode_doc<T: Element>(&self, tokens: &[T], out: &mut [f32]) {
        let mut f = vec![0f32; tokens.len()];
        T::to_f32_slice(tokens, &mut f);
        self.encode(&f, out, true);
    }

    /// Encodes a query: `tokens` is `n × token_dim` (n ≥ 1), `out` is `dim()` long.
    pub fn encode_query(&self, tokens: &[f32], out: &mut [f32]) {
        self.encode(tokens, out, false);
    }

    fn encode(&self, tokens: &[f32], out: &mut [f32], doc: bool) {
        assert!(
            !tokens.is_empty() && tokens.len().is_multiple_of(self.token_dim),
            "tokens must be a non-empty n × {} matrix",
            self.token_dim
        );
        assert_eq!(out.len(), self.dim(), "output length must equal the encoder's dim");
        match &self.kind {
            Kind::Pooled => pooled(tokens, self.token_dim, out),
            Kind::Muvera(m) => m.encode(tokens, self.token_dim, out, doc),
        }
    }
}

fn pooled(tokens: &[f32], dim: usize, out: &mut [f32]) {
    out.fill(0.0);
    for t in tokens.chunks_exact(dim) {
        out.iter_mut().zip(t).for_each(|(o, x)| *o += x);
    }
    let norm = crate::dot::dot(out, out).sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|o| *o /= norm);
    }
}

impl Muvera {
    fn new(k_sim: usize, d_proj: usize, reps: usize, final_dim: Option<u32>, seed: u64, token_dim: usize) -> Self {
        let mut rng = SplitMix64::new(seed);
        let identity = d_proj == token_dim;
        let scale = 1.0 / (d_proj as f32).sqrt();
        let rows = (0..reps)
            .map(|_| {
                let mut m: Vec<f32> = (0..k_sim * token_dim).map(|_| rng.gaussian()).collect();
                if !identity {
                    m.extend((0..d_proj * token_dim).map(|_| rng.sign() * scale));
                }
                m
            })
            .collect();
        let mut me = Self { k_sim, d_proj, reps, rows, identity, sketch: None };
        if let Some(f) = final_dim {
            let f = f as usize;
            let map = (0..me.fde_dim()).map(|_| (rng.below(f) as u32, rng.sign())).collect();
            me.sketch = Some((f, map));
        }
        me
    }

    fn fde_dim(&self) -> usize {
        self.reps * (1 << self.k_sim) * self.d_proj
    }

    fn encode(&self, tokens: &[f32], token_dim: usize, out: &mut [f32], doc: bool) {
        match &self.sketch {
            None => self.fde(tokens, token_dim, out, doc),
            Some((_, map)) => {
                let mut fde = vec![0f32; self.fde_dim()];
                self.fde(tokens, token_dim, &mut fde, doc);
                out.fill(0.0);
                for (x, &(b, s)) in fde.iter().zip(map) {
                    out[b as usize] += s * x;
                }
            }
        }
    }

    /// The concatenated blocks, before any final projection.
    fn fde(&self, tokens: &[f32], token_dim: usize, fde: &mut [f32], doc: bool) {
        let n = tokens.len() / token_dim;
        let parts = 1usize << self.k_sim;
        let block = parts * self.d_proj;
        fde.fill(0.0);
        let mut codes = vec![0u32; n];
        let mut projected = vec![0f32; n * self.d_proj];
        let mut counts = vec![0u32; parts];
        for (r, rows) in self.rows.iter().enumerate() {
            self.hash_and_project(rows, tokens, token_dim, &mut codes, &mut projected);
            let rep = &mut fde[r * block..(r + 1) * block];
            counts.fill(0);
            for (t, &c) in codes.iter().enumerate() {
                counts[c as usize] += 1;
                let dst = &mut rep[c as usize * self.d_proj..(c as usize + 1) * self.d_proj];
                dst.iter_mut().zip(&projected[t * self.d_proj..]).for_each(|(o, x)| *o += x);
            }
            if doc {
                self.mean_and_fill(rep, &counts, &codes, &projected);
            }
        }
    }

    /// SimHash code and projection of every token for one repetition.
    fn hash_and_project(&self, rows: &[f32], tokens: &[f32], dim: usize, codes: &mut [u32], proj: &mut [f32]) {
        for (t, x) in tokens.chunks_exact(dim).enumerate() {
            let mut code = 0u32;
            for (i, g) in rows[..self.k_sim * dim].chunks_exact(dim).enumerate() {
                code |= u32::from(crate::dot::dot(g, x) > 0.0) << i;
            }
            codes[t] = code;
            let dst = &mut proj[t * self.d_proj..(t + 1) * self.d_proj];
            if self.identity {
                dst.copy_from_slice(x);
            } else {
                for (o, s) in dst.iter_mut().zip(rows[self.k_sim * dim..].chunks_exact(dim)) {
                    *o = crate::dot::dot(s, x);
                }
            }
        }
    }

    /// Documents: sums → means; empty partitions take the Hamming-nearest token.
    fn mean_and_fill(&self, rep: &mut [f32], counts: &[u32], codes: &[u32], projected: &[f32]) {
        for (p, (blk, &c)) in rep.chunks_exact_mut(self.d_proj).zip(counts).enumerate() {
            if c > 0 {
                blk.iter_mut().for_each(|v| *v /= c as f32);
            } else {
                let t = (0..codes.len()).min_by_key(|&t| (codes[t] ^ p as u32).count_ones()).expect("n ≥ 1");
                blk.copy_from_slice(&projected[t * self.d_proj..(t + 1) * self.d_proj]);
            }
        }
    }
}
