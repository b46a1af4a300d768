//! The token-centroid candidate stage (PLAID/WARP-style): a codebook of
//! centroids trained by k-means on a sample of a collection's tokens, a
//! centroid code per stored token, and per segment the inverted lists
//! centroid → documents, from which a query's probed centroids yield
//! candidates scored by centroid interaction.
//!
//! | file | owns |
//! |---|---|
//! | `kmeans.rs` | spherical k-means: training a codebook from a token sample (hierarchical beyond 1,024 centroids) |
//! | `quantize.rs` | coding tokens: routed to their nearest groups, then the nearest centroid among those |
//! | `codebook.rs` | the codebook file (`TESSCBK`): layout, writing, verification |
//! | `ivf.rs` | the per-segment centroid index file (`TESSIVF`): codes, inverted lists, verification, probing and candidates |
//!
//! The arithmetic (every centroid's dot with a token, the nearest centroid)
//! is `tessera_kernels::CentroidPanels`.

pub mod codebook;
pub mod ivf;
pub mod kmeans;
mod quantize;

pub use codebook::{CodebookInfo, CodebookLayout, ResidualTables};
pub use ivf::{IvfLayout, IvfSource, Probe};
pub use kmeans::{FLAT_MAX, Trained, cosine_sum, train};
pub use quantize::{GROUP_PROBE, Quantizer};

/// A codebook or centroid index that cannot be built from what was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CentroidError(pub String);

impl std::fmt::Display for CentroidError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CentroidError {}

/// Settings of a collection's centroid index (stored in its manifest).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CentroidParams {
    /// Centroids in the codebook; 0 (the default): [`auto_k`] of the
    /// collection's tokens when the codebook is trained.
    pub k: u32,
    /// Centroids probed per query token when a search does not say; 0 (the
    /// default): [`auto_nprobe`] of the codebook's size.
    pub nprobe: u32,
    /// A codebook is trained when a segment of at least this many tokens is
    /// sealed; smaller segments before it have no centroid index (they are
    /// scored exactly, as the memtable is).
    pub min_train_tokens: u64,
    /// Lloyd iterations of the training.
    pub iterations: u32,
    /// Seed of the sample and of the initial centroids.
    pub seed: u64,
    /// A merge retrains the codebook (and codes its output with the new one)
    /// when the merged tokens' mean cosine to their centroids is lower than
    /// the codebook's training sample's by more than this, or — with an
    /// automatic `k` — when the collection has grown to where [`auto_k`] is
    /// twice the codebook's.
    pub drift: f32,
    /// With an automatic `k`: the tokens the collection is expected to hold
    /// (0: none said). A codebook is sized for at least this many, so growing
    /// to them retrains nothing — which matters most to residual storage,
    /// whose rows a retraining codes again (`tessera ingest` says how many
    /// tokens its input holds).
    pub expected_tokens: u64,
}

impl Default for CentroidParams {
    fn default() -> Self {
        Self { k: 0, nprobe: 0, min_train_tokens: 1 << 16, iterations: 8, seed: 42, drift: 0.05, expected_tokens: 0 }
    }
}

/// The centroids probed per query token when neither the search nor the
/// collection says: `√k / 2` (rounded), 8..=256. Measured on the 20× noisy
/// copy of the real data (docs/PERFORMANCE.md): at k = 16384, 64 probes keep
/// 0.996 of the exact top-10 in 512 candidates where 8 keep 0.954.
pub fn auto_nprobe(k: usize) -> usize {
    ((k as f64).sqrt() / 2.0).round().clamp(8.0, 256.0) as usize
}
/// Fewest sample tokens per centroid a training uses (fewer centroids are
/// trained from a smaller segment), and most.
pub const SAMPLE_PER_CENTROID: (usize, usize) = (16, 64);

impl CentroidParams {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.k != 0 && !(16..=codebook::MAX_K as u32).contains(&self.k) {
            return Err(format!("centroids.k must be 0 (automatic) or in 16..={}, got {}", codebook::MAX_K, self.k));
        }
        if self.nprobe > 4096 {
            return Err(format!("centroids.nprobe must be 0 (automatic) or in 1..=4096, got {}", self.nprobe));
        }
        if !(1..=100).contains(&self.iterations) {
            return Err(format!("centroids.iterations must be in 1..=100, got {}", self.iterations));
        }
        if self.min_train_tokens < 256 {
            return Err(format!("centroids.min_train_tokens must be at least 256, got {}", self.min_train_tokens));
        }
        if !(self.drift.is_finite() && self.drift > 0.0) {
            return Err(format!("centroids.drift must be positive, got {}", self.drift));
        }
        Ok(())
    }

    /// The number of centroids to train from a segment of `sample` tokens
    /// in a collection of `collection` tokens: the configured `k` or
    /// [`auto_k`] of the collection, never more than the segment allows at
    /// the minimum sample per centroid.
    pub fn k_for(&self, sample: usize, collection: usize) -> usize {
        let want = if self.k == 0 { auto_k(self.sized_for(collection.max(sample))) } else { self.k as usize };
        want.min(sample / SAMPLE_PER_CENTROID.0).max(1)
    }

    /// With an automatic `k`, whether a codebook of `k` centroids is
    /// outgrown by a collection of `collection` tokens: the collection (or
    /// what it is expected to hold) wants twice as many, and a codebook
    /// trained now from `sampled` tokens would have more.
    pub fn outgrown(&self, k: usize, sampled: usize, collection: usize) -> bool {
        self.k == 0 && auto_k(self.sized_for(collection)) >= 2 * k && self.k_for(sampled, collection) > k
    }

    /// The tokens an automatic `k` is sized for in a collection of `tokens`:
    /// those, or the [`expected_tokens`](Self::expected_tokens) when more.
    pub fn sized_for(&self, tokens: usize) -> usize {
        tokens.max(usize::try_from(self.expected_tokens).unwrap_or(usize::MAX))
    }

    /// Centroids probed per query token of a codebook of `k`: the configured `nprobe` or [`auto_nprobe`].
    pub fn nprobe_for(&self, k: usize) -> usize {
        if self.nprobe == 0 { auto_nprobe(k) } else { self.nprobe as usize }
    }

    /// How many sample tokens train `k` centroids out of `tokens`.
    pub fn sample_for(k: usize, tokens: usize) -> usize {
        (k * SAMPLE_PER_CENTROID.1).min(tokens)
    }
}

/// The automatic codebook size for a collection of `tokens` tokens: a power
/// of two near 4·√tokens, at least 256 and at most 2^16 (measured on the
/// real data and its 20× copy: docs/PERFORMANCE.md).
pub fn auto_k(tokens: usize) -> usize {
    let target = 4.0 * (tokens as f64).sqrt();
    let p = target.log2().round().clamp(8.0, 16.0) as u32;
    1 << p
}

/// `n` distinct token rows out of `tokens` to train on, ascending (a
/// function of the seed).
pub fn sample_rows(tokens: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut v = kmeans::distinct_indices(tokens, n.min(tokens), seed);
    v.sort_unstable();
    v
}
