//! Collection configuration, stored in the manifest when a collection is created.

use serde::{Deserialize, Serialize};
pub use tessera_format::{Screening, TokenType};
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

/// The presets the interfaces name: `pooled`, `muvera`, or `none` (no
/// coarse index: every search is exact).
impl IndexConfig {
    pub fn from_name(name: &str) -> crate::Result<Option<Self>> {
        match name {
            "pooled" => Ok(Some(Self::pooled())),
            "muvera" => Ok(Some(Self::muvera())),
            "none" => Ok(None),
            s => Err(crate::Error::InvalidArgument(format!("unknown index {s:?}: use pooled, muvera or none"))),
        }
    }

    /// The name of a collection's index (`muvera` for any MUVERA parameters).
    pub fn name_of(index: Option<&Self>) -> &'static str {
        match index.map(|i| &i.encoder) {
            None => "none",
            Some(EncoderConfig::Pooled) => "pooled",
            Some(EncoderConfig::Muvera { .. }) => "muvera",
        }
    }
}

/// The names of full-text settings: a language, or `none`.
impl TextConfig {
    pub fn from_name(name: &str) -> crate::Result<Option<Self>> {
        let language = match name {
            "english" => Language::English,
            "plain" => Language::Plain,
            "cjk" => Language::Cjk,
            "none" => return Ok(None),
            s => {
                return Err(crate::Error::InvalidArgument(format!(
                    "unknown text {s:?}: use english, plain, cjk or none"
                )));
            }
        };
        Ok(Some(Self { language }))
    }

    pub fn name_of(text: Option<&Self>) -> &'static str {
        match text.map(|t| t.language) {
            None => "none",
            Some(Language::English) => "english",
            Some(Language::Plain) => "plain",
            Some(Language::Cjk) => "cjk",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "sync" => Ok(Durability::Sync),
            "buffered" => Ok(Durability::Buffered),
            s => Err(crate::Error::InvalidArgument(format!("unknown durability {s:?}: use sync or buffered"))),
        }
    }
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Buffered => "buffered",
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
    #[serde(with = "names::token_type")]
    pub storage: TokenType,
    /// Codes stored beside the tokens to screen candidates before the exact
    /// rerank: `none` or `binary` (one sign bit per dimension).
    #[serde(with = "names::screening")]
    pub screening: Screening,
}

/// Token types and screening modes are stored in the manifest by name.
mod names {
    macro_rules! by_name {
        ($m:ident, $t:ty, $what:literal) => {
            pub mod $m {
                use serde::{Deserialize, Deserializer, Serializer, de::Error};
                pub fn serialize<S: Serializer>(v: &$t, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_str(v.name())
                }
                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                    let name = String::deserialize(d)?;
                    <$t>::from_name(&name).ok_or_else(|| D::Error::custom(format!("unknown {} {name:?}", $what)))
                }
            }
        };
    }
    by_name!(token_type, tessera_format::TokenType, "storage");
    by_name!(screening, tessera_format::Screening, "screening");
}

/// The names the interfaces use for storage and screening settings.
pub fn storage_from_name(name: &str) -> crate::Result<TokenType> {
    TokenType::from_name(name)
        .ok_or_else(|| crate::Error::InvalidArgument(format!("unknown storage {name:?}: use f16 or int8")))
}

pub fn screening_from_name(name: &str) -> crate::Result<Screening> {
    Screening::from_name(name)
        .ok_or_else(|| crate::Error::InvalidArgument(format!("unknown screening {name:?}: use none or binary")))
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
        if let Some(ix) = &self.index
            && !tessera_index::M_RANGE.contains(&ix.hnsw.m)
        {
            let r = tessera_index::M_RANGE;
            return Err(crate::Error::InvalidArgument(format!(
                "hnsw.m must be in {}..={}, got {}",
                r.start(),
                r.end(),
                ix.hnsw.m
            )));
        }
        self.validate_stored()
    }

    /// The HNSW parameters segments are built with: a stored `m` above what
    /// the builder takes (accepted at creation before that was checked, and
    /// never flushed since: the build panicked) is built at the largest `m`.
    pub(crate) fn hnsw_build_params(ix: &IndexConfig) -> HnswParams {
        HnswParams { m: ix.hnsw.m.min(*tessera_index::M_RANGE.end()), ..ix.hnsw }
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
        if let Some(ix) = &self.index {
            ix.encoder.validate(self.dim).map_err(|e| crate::Error::InvalidArgument(format!("index encoder: {e}")))?;
            if !(2..=256).contains(&ix.hnsw.m) || !(1..=10_000).contains(&ix.hnsw.ef_construction) {
                return bad("hnsw.m must be in 2..=256 and hnsw.ef_construction in 1..=10000".into());
            }
        }
        Ok(())
    }
}
