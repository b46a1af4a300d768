//! Collection configuration, stored in the manifest when a collection is created.

use serde::{Deserialize, Serialize};
pub use tessera_format::{Screening, TokenType};
pub use tessera_index::{CentroidParams, EncoderConfig, HnswParams};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every batch is fsynced to the WAL before `upsert`/`delete` return:
    /// nothing acknowledged is lost, even on power failure.
    #[default]
    Sync,
    /// Batches are written to the WAL but not fsynced: a killed process loses
    /// nothing, an OS crash or power failure may lose the latest batches.
    Buffered,
}

tessera_format::named!(Durability, "durability", [Durability::Sync => "sync", Durability::Buffered => "buffered"]);

/// The candidate stage of two-stage search, built when a segment is sealed.
///
/// Stored in the manifest as `{"encoder": …, "hnsw": …}` (a vector index, as
/// every manifest before centroids has it) or `{"centroids": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IndexConfig {
    /// One vector per document (the encoder) in an HNSW graph per segment.
    Vector {
        encoder: EncoderConfig,
        #[serde(default)]
        hnsw: HnswParams,
    },
    /// Token-level centroids (PLAID/WARP-style): a codebook trained by
    /// k-means on the collection's tokens, a centroid code per token and
    /// inverted lists centroid → documents per segment.
    Centroids { centroids: CentroidParams },
}

impl IndexConfig {
    /// Mean-pooled, normalised tokens.
    pub fn pooled() -> Self {
        Self::Vector { encoder: EncoderConfig::Pooled, hnsw: HnswParams::default() }
    }

    /// MUVERA fixed-dimensional encoding with the default parameters.
    pub fn muvera() -> Self {
        Self::Vector { encoder: EncoderConfig::muvera_default(), hnsw: HnswParams::default() }
    }

    /// Token centroids with the default parameters.
    pub fn centroids() -> Self {
        Self::Centroids { centroids: CentroidParams::default() }
    }

    /// The single-vector encoder, for a vector index.
    pub fn encoder(&self) -> Option<&EncoderConfig> {
        match self {
            Self::Vector { encoder, .. } => Some(encoder),
            Self::Centroids { .. } => None,
        }
    }

    /// The centroid settings, for a centroid index.
    pub fn centroid_params(&self) -> Option<&CentroidParams> {
        match self {
            Self::Centroids { centroids } => Some(centroids),
            Self::Vector { .. } => None,
        }
    }
}

/// The candidate stages the interfaces name: `pooled`, `muvera`,
/// `centroids`, or `none` (no index: every search is exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexKind {
    #[default]
    Pooled,
    Muvera,
    Centroids,
    None,
}

tessera_format::named!(IndexKind, "index", [IndexKind::Pooled => "pooled", IndexKind::Muvera => "muvera", IndexKind::Centroids => "centroids", IndexKind::None => "none"]);

impl IndexKind {
    /// The preset's index (default parameters).
    pub fn config(self) -> Option<IndexConfig> {
        match self {
            IndexKind::Pooled => Some(IndexConfig::pooled()),
            IndexKind::Muvera => Some(IndexConfig::muvera()),
            IndexKind::Centroids => Some(IndexConfig::centroids()),
            IndexKind::None => None,
        }
    }

    /// The kind of a collection's index (`muvera` whatever its MUVERA parameters).
    pub fn of(index: Option<&IndexConfig>) -> Self {
        match index {
            None => IndexKind::None,
            Some(IndexConfig::Vector { encoder: EncoderConfig::Pooled, .. }) => IndexKind::Pooled,
            Some(IndexConfig::Vector { encoder: EncoderConfig::Muvera { .. }, .. }) => IndexKind::Muvera,
            Some(IndexConfig::Centroids { .. }) => IndexKind::Centroids,
        }
    }
}

/// The full-text settings the interfaces name: a language, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextKind {
    #[default]
    English,
    Plain,
    Cjk,
    None,
}

tessera_format::named!(TextKind, "text", [TextKind::English => "english", TextKind::Plain => "plain", TextKind::Cjk => "cjk", TextKind::None => "none"]);

impl TextKind {
    pub fn config(self) -> Option<TextConfig> {
        let language = match self {
            TextKind::English => Language::English,
            TextKind::Plain => Language::Plain,
            TextKind::Cjk => Language::Cjk,
            TextKind::None => return None,
        };
        Some(TextConfig { language })
    }

    pub fn of(text: Option<&TextConfig>) -> Self {
        match text.map(|t| t.language) {
            None => TextKind::None,
            Some(Language::English) => TextKind::English,
            Some(Language::Plain) => TextKind::Plain,
            Some(Language::Cjk) => TextKind::Cjk,
        }
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
    /// How token values are stored: `f16` (as given) or `int8` (per-token
    /// scale, ~half the bytes). A manifest written before int8 existed is f16.
    pub storage: TokenType,
    /// Codes stored beside the tokens to screen candidates before the exact
    /// rerank: `none` or `binary` (one sign bit per dimension).
    pub screening: Screening,
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
            storage: TokenType::F16,
            screening: Screening::None,
        }
    }
}

impl CollectionConfig {
    /// The default configuration for `dim`-dimensional tokens.
    pub fn new(dim: usize) -> Self {
        Self { dim, ..Self::default() }
    }

    /// The first setting an interface can choose (dim, index, text,
    /// durability, storage, screening) in which `self` and `other` differ.
    pub fn differs_from(&self, other: &CollectionConfig) -> Option<&'static str> {
        [
            (self.dim != other.dim, "dim"),
            (self.index != other.index, "index"),
            (self.text != other.text, "text"),
            (self.durability != other.durability, "durability"),
            (self.storage != other.storage, "storage"),
            (self.screening != other.screening, "screening"),
        ]
        .into_iter()
        .find_map(|(d, what)| d.then_some(what))
    }

    /// Bytes one token costs in this collection's segments (tokens, scales, codes).
    pub fn bytes_per_token(&self) -> usize {
        tessera_format::tokens::bytes_per_token(self.storage, self.screening, self.dim)
    }

    /// Checks a configuration for a new collection.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        if let Some(IndexConfig::Vector { hnsw, .. }) = &self.index
            && !tessera_index::M_RANGE.contains(&hnsw.m)
        {
            let r = tessera_index::M_RANGE;
            return Err(crate::Error::InvalidArgument(format!(
                "hnsw.m must be in {}..={}, got {}",
                r.start(),
                r.end(),
                hnsw.m
            )));
        }
        self.validate_stored()
    }

    /// The HNSW parameters segments are built with: a stored `m` above what
    /// the builder takes (accepted at creation before that was checked, and
    /// never flushed since: the build panicked) is built at the largest `m`.
    pub(crate) fn hnsw_build_params(hnsw: &HnswParams) -> HnswParams {
        HnswParams { m: hnsw.m.min(*tessera_index::M_RANGE.end()), ..*hnsw }
    }

    /// Checks a configuration read from a manifest (what older versions accepted).
    pub(crate) fn validate_stored(&self) -> crate::Result<()> {
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
        match &self.index {
            Some(IndexConfig::Vector { encoder, hnsw }) => {
                encoder.validate(self.dim).map_err(|e| crate::Error::InvalidArgument(format!("index encoder: {e}")))?;
                if !(2..=256).contains(&hnsw.m) || !(1..=10_000).contains(&hnsw.ef_construction) {
                    return bad("hnsw.m must be in 2..=256 and hnsw.ef_construction in 1..=10000".into());
                }
            }
            Some(IndexConfig::Centroids { centroids }) => centroids.validate().or_else(bad)?,
            None => {}
        }
        Ok(())
    }
}
