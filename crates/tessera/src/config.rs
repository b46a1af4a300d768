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

/// A residual collection's full-precision copy of its tokens, kept cold
/// beside each residual segment (`keep-N.tkeep`): the residual rows serve
/// the candidate and screening stages, the copy the exact scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// No copy: exact scores are of the residual values.
    #[default]
    None,
    /// int8 rows (per-token scale), as `storage: int8` stores them.
    Int8,
    /// f16 rows, as given.
    F16,
}

tessera_format::named!(Keep, "keep", [Keep::None => "none", Keep::Int8 => "int8", Keep::F16 => "f16"]);

impl Keep {
    /// The token type of the copy's rows.
    pub fn token_type(self) -> Option<TokenType> {
        match self {
            Keep::None => None,
            Keep::Int8 => Some(TokenType::Int8),
            Keep::F16 => Some(TokenType::F16),
        }
    }
}

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
    /// Each upserted document's tokens are pooled into 1 + ⌈(n − 1) / pool_factor⌉
    /// (`crate::pool_tokens`); 1 (the default, and what a manifest without
    /// it means): stored as given.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub pool_factor: u32,
    /// Residual storage: a full-precision copy of every residual segment's
    /// tokens, read only to score the final candidates exactly (and by exact
    /// search, `rerank` of ids and `get`): `none` (the default, and what a
    /// manifest without it means), `int8` or `f16`.
    #[serde(default, skip_serializing_if = "is_none")]
    pub keep: Keep,
}

fn is_none(k: &Keep) -> bool {
    *k == Keep::None
}

fn one() -> u32 {
    1
}

fn is_one(f: &u32) -> bool {
    *f == 1
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
            pool_factor: 1,
            keep: Keep::None,
        }
    }
}

impl CollectionConfig {
    /// The default configuration for `dim`-dimensional tokens.
    pub fn new(dim: usize) -> Self {
        Self { dim, ..Self::default() }
    }

    /// The first of the settings an interface chooses by name (dim, index
    /// kind, text, durability, storage, screening) in which `self` and
    /// `other` differ. ([`Settings::differs`] compares the tunable ones.)
    pub fn differs_from(&self, other: &CollectionConfig) -> Option<&'static str> {
        [
            (self.dim != other.dim, "dim"),
            (IndexKind::of(self.index.as_ref()) != IndexKind::of(other.index.as_ref()), "index"),
            (self.text != other.text, "text"),
            (self.durability != other.durability, "durability"),
            (self.storage != other.storage, "storage"),
            (self.screening != other.screening, "screening"),
            (self.keep != other.keep, "keep"),
        ]
        .into_iter()
        .find_map(|(d, what)| d.then_some(what))
    }

    /// Whether two-stage search screens its candidates before the exact
    /// stage (`rerank` applies): by codes (`screening`), or by the residual
    /// rows before the kept copy (`keep`).
    pub fn screens(&self) -> bool {
        self.screening != Screening::None || self.keep != Keep::None
    }

    /// Bytes one token costs in this collection's segments (tokens, scales, codes).
    pub fn bytes_per_token(&self) -> usize {
        tessera_format::tokens::bytes_per_token(self.storage, self.screening, self.dim)
    }

    /// How the memtable (and, in a residual collection, a segment sealed
    /// before the codebook is trained) stores tokens: the storage, but f16
    /// for residual storage (residuals need the codebook; the WAL's values
    /// are f16).
    pub fn staged_storage(&self) -> TokenType {
        if self.storage.is_residual() { TokenType::F16 } else { self.storage }
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
        check_pool_factor(self.pool_factor)?;
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
        if self.keep != Keep::None && !self.storage.is_residual() {
            return bad(format!(
                "keep {} applies to residual storage (residual2, residual4), not {}",
                self.keep, self.storage
            ));
        }
        if self.keep != Keep::None && self.screening != Screening::None {
            return bad(format!(
                "keep {}: the residual rows screen candidates for the kept copy; screening {} would add nothing",
                self.keep, self.screening
            ));
        }
        if self.storage.is_residual() && !matches!(self.index, Some(IndexConfig::Centroids { .. })) {
            return bad(format!(
                "storage {} codes tokens against the collection's codebook: it needs index centroids, not {}",
                self.storage,
                IndexKind::of(self.index.as_ref())
            ));
        }
        Ok(())
    }
}

/// Bounds of [`Settings::memtable_bytes`]: 4 KiB ..= 16 GiB.
pub const MEMTABLE_BYTES: std::ops::RangeInclusive<u64> = 4 << 10..=16 << 30;
/// Bounds of [`Settings::max_segments`].
pub const MAX_SEGMENTS: std::ops::RangeInclusive<u64> = 1..=1024;

/// A collection's tunable settings, spelled as every interface spells them
/// (HTTP's and gRPC's `settings`, Python's `settings=` and
/// `update_settings`, the CLI's flags). Each is optional: at creation an
/// unset one keeps its default; in [`Collection::update_settings`] it keeps
/// its current value. Some are fixed at creation (they shape files already
/// written), some apply only to one index kind; [`Settings::apply`] refuses
/// the rest by name.
///
/// [`Collection::update_settings`]: crate::Collection::update_settings
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Seal the memtable into a segment once its data (tokens, texts,
    /// payloads) exceeds this many bytes (default 64 MiB). Updatable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memtable_bytes: Option<u64>,
    /// After a seal, merge segments while there are more than this many (default 16). Updatable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_segments: Option<u64>,
    /// The largest write batch accepted, encoded (default 256 MiB). Updatable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_bytes: Option<u64>,
    /// Pool each upserted document's n tokens into 1 + ⌈(n − 1) / pool_factor⌉ (1..=64;
    /// default 1: stored as given). Updatable: applies to later upserts; an
    /// upsert may ask for its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_factor: Option<u64>,
    /// `pooled`/`muvera` indexes: HNSW links per node (default 16). At creation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw_m: Option<u64>,
    /// `pooled`/`muvera` indexes: HNSW beam while building (default 200). At creation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw_ef_construction: Option<u64>,
    /// `centroids` index: centroids in the codebook (0, the default: chosen
    /// from the collection's size when it is trained). At creation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centroids_k: Option<u64>,
    /// `centroids` index: centroids probed per query token when a search
    /// does not say (0, the default: from the codebook's size). Updatable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_nprobe: Option<u64>,
    /// `centroids` index: the codebook is trained when a segment of at least
    /// this many tokens is sealed (default 65,536; smaller segments before it
    /// are scored exactly). Updatable: applies from the next seal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_train_tokens: Option<u64>,
    /// `centroids` index: Lloyd iterations of a training (default 8). At creation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_iterations: Option<u64>,
    /// `centroids` index: a merge retrains the codebook when its tokens'
    /// mean cosine to their centroids fell by more than this (default 0.05).
    /// Updatable: applies from the next merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<f32>,
    /// `centroids` index with an automatic `centroids_k`: the tokens the
    /// collection is expected to hold (0, the default: none said); its
    /// codebook is sized for at least them, so growing to them retrains
    /// nothing. Updatable: applies from the next training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_tokens: Option<u64>,
}

impl Settings {
    /// The settings that [`Collection::update_settings`](crate::Collection::update_settings) may change.
    pub const UPDATABLE: [&'static str; 8] = [
        "memtable_bytes",
        "max_segments",
        "max_batch_bytes",
        "pool_factor",
        "default_nprobe",
        "min_train_tokens",
        "drift",
        "expected_tokens",
    ];

    /// These settings with only those that may change after creation kept.
    pub fn updatable(&self) -> Self {
        Settings {
            memtable_bytes: self.memtable_bytes,
            max_segments: self.max_segments,
            max_batch_bytes: self.max_batch_bytes,
            pool_factor: self.pool_factor,
            default_nprobe: self.default_nprobe,
            min_train_tokens: self.min_train_tokens,
            drift: self.drift,
            expected_tokens: self.expected_tokens,
            ..Settings::default()
        }
    }

    /// Every setting of `config`, those of other index kinds left out.
    pub fn of(config: &CollectionConfig) -> Self {
        let mut s = Settings {
            memtable_bytes: Some(config.memtable_bytes as u64),
            max_segments: Some(config.max_segments as u64),
            max_batch_bytes: Some(config.max_batch_bytes as u64),
            pool_factor: Some(config.pool_factor.into()),
            ..Settings::default()
        };
        match &config.index {
            Some(IndexConfig::Vector { hnsw, .. }) => {
                (s.hnsw_m, s.hnsw_ef_construction) = (Some(hnsw.m as u64), Some(hnsw.ef_construction as u64));
            }
            Some(IndexConfig::Centroids { centroids: p }) => {
                s.centroids_k = Some(p.k.into());
                s.default_nprobe = Some(p.nprobe.into());
                s.min_train_tokens = Some(p.min_train_tokens);
                s.train_iterations = Some(p.iterations.into());
                s.drift = Some(p.drift);
                s.expected_tokens = Some(p.expected_tokens);
            }
            None => {}
        }
        s
    }

    /// Every setting by name, with its value (as f64: each is exact there).
    fn fields(&self) -> [(&'static str, Option<f64>); 12] {
        let f = |v: Option<u64>| v.map(|x| x as f64);
        [
            ("memtable_bytes", f(self.memtable_bytes)),
            ("max_segments", f(self.max_segments)),
            ("max_batch_bytes", f(self.max_batch_bytes)),
            ("pool_factor", f(self.pool_factor)),
            ("hnsw_m", f(self.hnsw_m)),
            ("hnsw_ef_construction", f(self.hnsw_ef_construction)),
            ("centroids_k", f(self.centroids_k)),
            ("default_nprobe", f(self.default_nprobe)),
            ("min_train_tokens", f(self.min_train_tokens)),
            ("train_iterations", f(self.train_iterations)),
            ("drift", self.drift.map(f64::from)),
            ("expected_tokens", f(self.expected_tokens)),
        ]
    }

    /// Every setting's name.
    pub fn names() -> [&'static str; 12] {
        Self::default().fields().map(|(name, _)| name)
    }

    /// The first setting given here whose value `config` does not have.
    pub fn differs(&self, config: &CollectionConfig) -> Option<&'static str> {
        let have = Self::of(config).fields();
        self.fields().into_iter().zip(have).find_map(|((name, v), (_, h))| (v.is_some() && v != h).then_some(name))
    }

    /// The settings given, by name.
    pub fn given(&self) -> Vec<&'static str> {
        self.fields().into_iter().filter_map(|(name, v)| v.map(|_| name)).collect()
    }

    /// `config` with these settings applied and checked: at creation
    /// (`creating`) any of them, later only [`UPDATABLE`](Self::UPDATABLE)
    /// ones; a setting of another index kind is refused by name, as is a
    /// value out of bounds.
    pub fn apply(&self, config: &CollectionConfig, creating: bool) -> crate::Result<CollectionConfig> {
        fn bad<T>(m: String) -> crate::Result<T> {
            Err(crate::Error::InvalidArgument(m))
        }
        let given = self.given();
        if !creating && let Some(fixed) = given.iter().find(|n| !Self::UPDATABLE.contains(n)) {
            return bad(format!(
                "{fixed} is fixed when the collection is created; these can change: {}",
                Self::UPDATABLE.join(", ")
            ));
        }
        let kind = IndexKind::of(config.index.as_ref());
        let of_kind: &[&str] = match kind {
            IndexKind::Pooled | IndexKind::Muvera => &["hnsw_m", "hnsw_ef_construction"],
            IndexKind::Centroids => {
                &["centroids_k", "default_nprobe", "min_train_tokens", "train_iterations", "drift", "expected_tokens"]
            }
            IndexKind::None => &[],
        };
        let general = ["memtable_bytes", "max_segments", "max_batch_bytes", "pool_factor"];
        if let Some(other) = given.iter().find(|n| !general.contains(n) && !of_kind.contains(n)) {
            return bad(format!("{other} does not apply to a collection with index {kind}"));
        }
        let within = |name: &str, v: Option<u64>, r: std::ops::RangeInclusive<u64>| -> crate::Result<Option<u64>> {
            match v {
                Some(x) if !r.contains(&x) => bad(format!("{name} must be in {}..={}, got {x}", r.start(), r.end())),
                _ => Ok(v),
            }
        };
        let mut c = config.clone();
        if let Some(v) = within("memtable_bytes", self.memtable_bytes, MEMTABLE_BYTES)? {
            c.memtable_bytes = v as usize;
        }
        if let Some(v) = within("max_segments", self.max_segments, MAX_SEGMENTS)? {
            c.max_segments = v as usize;
        }
        let frame = 1024..=tessera_format::wal::MAX_FRAME as u64;
        if let Some(v) = within("max_batch_bytes", self.max_batch_bytes, frame)? {
            c.max_batch_bytes = v as usize;
        }
        let pool = 1..=crate::pool::MAX_POOL_FACTOR as u64;
        if let Some(v) = within("pool_factor", self.pool_factor, pool)? {
            c.pool_factor = v as u32;
        }
        let m = *tessera_index::M_RANGE.start() as u64..=*tessera_index::M_RANGE.end() as u64;
        match &mut c.index {
            Some(IndexConfig::Vector { hnsw, .. }) => {
                if let Some(v) = within("hnsw_m", self.hnsw_m, m)? {
                    hnsw.m = v as usize;
                }
                if let Some(v) = within("hnsw_ef_construction", self.hnsw_ef_construction, 1..=10_000)? {
                    hnsw.ef_construction = v as usize;
                }
            }
            Some(IndexConfig::Centroids { centroids: p }) => {
                // CentroidParams::validate checks the values; here only that they fit.
                let small = |name: &str, v: Option<u64>| within(name, v, 0..=u32::MAX as u64);
                if let Some(v) = small("centroids_k", self.centroids_k)? {
                    p.k = v as u32;
                }
                if let Some(v) = small("default_nprobe", self.default_nprobe)? {
                    p.nprobe = v as u32;
                }
                if let Some(v) = self.min_train_tokens {
                    p.min_train_tokens = v;
                }
                if let Some(v) = small("train_iterations", self.train_iterations)? {
                    p.iterations = v as u32;
                }
                if let Some(v) = self.drift {
                    p.drift = v;
                }
                if let Some(v) = self.expected_tokens {
                    p.expected_tokens = v;
                }
                p.validate().map_err(|e| {
                    // Named as the settings are, not as the manifest stores them.
                    let e = e
                        .replace("centroids.k", "centroids_k")
                        .replace("centroids.nprobe", "default_nprobe")
                        .replace("centroids.min_train_tokens", "min_train_tokens")
                        .replace("centroids.iterations", "train_iterations")
                        .replace("centroids.drift", "drift");
                    crate::Error::InvalidArgument(e)
                })?;
            }
            None => {}
        }
        Ok(c)
    }
}

/// A pool factor must be in `1..=MAX_POOL_FACTOR`.
pub(crate) fn check_pool_factor(f: u32) -> crate::Result<()> {
    let most = crate::pool::MAX_POOL_FACTOR;
    if !(1..=most).contains(&f) {
        return Err(crate::Error::InvalidArgument(format!("pool_factor must be in 1..={most}, got {f}")));
    }
    Ok(())
}
