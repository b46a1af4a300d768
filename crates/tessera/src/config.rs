//! Collection configuration, stored in the manifest when a collection is created.

use serde::{Deserialize, Serialize};
pub use tessera_index::{EncoderConfig, HnswParams};
pub use tessera_text::Language;

/// Full-text (BM25) indexing of documents' `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(default)]
    pub language: Language,
}

/// Largest supported token dimension.
pub const MAX_DIM: usize = 4096;
/// Longest external id, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// When an acknowledged write is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every batch is fsynced to the WAL before `upsert`/`delete` return:
    /// nothing acknowledged is lost, even on power failure.
    #[default]
    Sync,
    /// Batches are written to the WAL but not fsynced: a killed process loses
    /// nothing, an OS crash or power failure may lose the latest batches.
    Buffered,
}

/// The coarse stage of two-stage search: one vector per document (the
/// encoder) in an HNSW graph per segment, built when the segment is sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexConfig {
    pub encoder: EncoderConfig,
    #[serde(default)]
    pub hnsw: HnswParams,
}

impl IndexConfig {
    /// Mean-pooled, normalised tokens.
    pub fn pooled() -> Self {
        Self { encoder: EncoderConfig::Pooled, hnsw: HnswParams::default() }
    }

    /// MUVERA fixed-dimensional encoding with the default parameters.
    pub fn muvera() -> Self {
        Self { encoder: EncoderConfig::muvera_default(), hnsw: HnswParams::default() }
    }
}

/// Pooled by default: on the real evaluation data it recalls the exact top-10
/// as well as the best MUVERA settings measured, with 1/16 of their dims
/// (docs/PERFORMANCE.md).
impl Default for IndexConfig {
    fn default() -> Self {
        Self::pooled()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectionConfig {
    /// Token embedding dimension (1..=4096).
    pub dim: usize,
    pub durability: Durability,
    /// The memtable is sealed into a segment once its data (tokens, texts,
    /// payloads) exceeds this many bytes.
    pub memtable_bytes: usize,
    /// After a flush, segments are merged while there are more than this many.
    pub max_segments: usize,
    /// Largest encoded write batch accepted.
    pub max_batch_bytes: usize,
    /// The coarse index for two-stage search; `None`: every search is exact.
    /// (A manifest written before indexes existed has none.)
    #[serde(default)]
    pub index: Option<IndexConfig>,
    /// BM25 over documents' text, one index per segment; `None`: no full text.
    /// (A manifest written before full text existed has none.)
    #[serde(default)]
    pub text: Option<TextConfig>,
}

impl Default for CollectionConfig {
    fn default() -> Self {
        Self {
            dim: 128,
            durability: Durability::Sync,
            memtable_bytes: 64 << 20,
            max_segments: 16,
            max_batch_bytes: 256 << 20,
            index: Some(IndexConfig::default()),
            text: Some(TextConfig::default()),
        }
    }
}

impl CollectionConfig {
    /// The default configuration for `dim`-dimensional tokens.
    pub fn new(dim: usize) -> Self {
        Self { dim, ..Self::default() }
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidArgument(m));
        if !(1..=MAX_DIM).contains(&self.dim) {
            return bad(format!("dim must be in 1..={MAX_DIM}, got {}", self.dim));
        }
        if self.max_segments < 1 {
            return bad("max_segments must be at least 1".into());
        }
        if !(1024..=tessera_format::wal::MAX_FRAME).contains(&self.max_batch_bytes) {
            return bad(format!("max_batch_bytes must be in 1024..={}", tessera_format::wal::MAX_FRAME));
        }
        if let Some(ix) = &self.index {
            ix.encoder.validate(self.dim).map_err(|e| crate::Error::InvalidArgument(format!("index encoder: {e}")))?;
            if !(2..=256).contains(&ix.hnsw.m) || !(1..=10_000).contains(&ix.hnsw.ef_construction) {
                return bad("hnsw.m must be in 2..=256 and hnsw.ef_construction in 1..=10000".into());
            }
        }
        Ok(())
    }
}
