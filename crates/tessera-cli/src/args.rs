//! Command-line arguments more than one command takes.

use tessera::{Norm, Rank, RankKind, Signal};

/// A parser of one of the engine's named settings: the names come from the
/// setting's own list (and show in `--help`), so a new value needs no edit here.
pub fn named<T: tessera::Named>() -> impl clap::builder::TypedValueParser<Value = T> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(T::all().iter().map(|t| t.name()))
        .map(|s| *T::all().iter().find(|t| t.name() == s).expect("a listed name"))
}

/// The final order of a hybrid (`--bm25`) search or mining.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RankArgs {
    /// Final order of a hybrid (--bm25) search: maxsim (exact MaxSim) or linear (weighted sum
    /// of normalised MaxSim and BM25 scores over the candidates). Default: the collection's
    /// ranking (`tessera tune` fits one; `tessera info` shows it).
    #[arg(long, value_parser = named::<RankKind>())]
    pub rank: Option<RankKind>,
    /// With --rank linear: how each signal is normalised over the candidates, zscore (the
    /// default) or minmax.
    #[arg(long, value_parser = named::<Norm>(), requires = "rank")]
    pub rank_norm: Option<Norm>,
    /// With --rank linear: a signal's weight as SIGNAL=W, repeatable; signals maxsim
    /// (default 1) and bm25 (default 0). A document BM25 did not return gets BM25's lowest
    /// returned score.
    #[arg(long = "rank-weight", value_name = "SIGNAL=W", value_parser = parse_weight, requires = "rank")]
    pub rank_weights: Vec<(Signal, f64)>,
}

impl RankArgs {
    /// The rank asked for; `None`: the collection's default.
    pub fn rank(&self) -> tessera::Result<Option<Rank>> {
        Rank::from_parts(self.rank, self.rank_norm, &self.rank_weights)
    }

    /// Whether any rank flag was given.
    pub fn given(&self) -> bool {
        self.rank.is_some() || self.rank_norm.is_some() || !self.rank_weights.is_empty()
    }
}

/// Parses `SIGNAL=W`.
fn parse_weight(s: &str) -> Result<(Signal, f64), String> {
    let (name, w) = s.split_once('=').ok_or_else(|| format!("expected SIGNAL=W, got {s:?}"))?;
    let signal: Signal = name.trim().parse().map_err(|e: tessera::UnknownName| e.to_string())?;
    let w: f64 = w.trim().parse().map_err(|_| format!("weight {w:?} is not a number"))?;
    if !w.is_finite() {
        return Err(format!("weight {w} is not finite"));
    }
    Ok((signal, w))
}

/// A collection's tunable settings as flags (`tessera::Settings`, named as
/// everywhere): given to `ingest` for a collection it creates, to
/// `settings` to change an existing one.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SettingsArgs {
    /// Seal the memtable into a segment once its data exceeds this many bytes
    /// (4096..=17179869184; default 64 MiB).
    #[arg(long)]
    pub memtable_bytes: Option<u64>,
    /// Merge segments while there are more than this many (1..=1024; default 16).
    #[arg(long)]
    pub max_segments: Option<u64>,
    /// The largest write batch accepted, encoded (1024..=1073741824; default 256 MiB).
    #[arg(long)]
    pub max_batch_bytes: Option<u64>,
    /// Pool each upserted document's n tokens into 1 + ⌈(n − 1) / F⌉ (the first kept, the rest
    /// clustered by Ward's linkage),
    /// each group stored as its renormalised mean (1..=64; default 1: stored as given).
    /// Applies to documents written after it is set.
    #[arg(long, value_name = "F")]
    pub pool_factor: Option<u64>,
    /// pooled/muvera: HNSW links per node (2..=128; default 16). At creation only.
    #[arg(long)]
    pub hnsw_m: Option<u64>,
    /// pooled/muvera: HNSW beam while building (1..=10000; default 200). At creation only.
    #[arg(long)]
    pub hnsw_ef_construction: Option<u64>,
    /// centroids: the codebook's centroids (16..=65536; default 0: a power of two near
    /// 4·√tokens of the segment it is trained from). At creation only.
    #[arg(long, visible_alias = "centroids")]
    pub centroids_k: Option<u64>,
    /// centroids: centroids probed per query token when a search does not say
    /// (1..=4096; default 0: from the codebook's size).
    #[arg(long)]
    pub default_nprobe: Option<u64>,
    /// centroids: a seal of at least this many tokens trains the codebook (≥ 256; default 65536).
    #[arg(long)]
    pub min_train_tokens: Option<u64>,
    /// centroids: Lloyd iterations of a training (1..=100; default 8). At creation only.
    #[arg(long)]
    pub train_iterations: Option<u64>,
    /// centroids: a merge retrains the codebook when its tokens' mean cosine to their
    /// centroids fell by more than this (> 0; default 0.05).
    #[arg(long)]
    pub drift: Option<f32>,
    /// centroids with an automatic k: the tokens the collection is expected to hold; its
    /// codebook is sized for them, so growing to them retrains nothing (default 0: none
    /// said; `tessera ingest` creating a collection says how many its input holds).
    #[arg(long)]
    pub expected_tokens: Option<u64>,
}

impl SettingsArgs {
    pub fn settings(&self) -> tessera::Settings {
        tessera::Settings {
            memtable_bytes: self.memtable_bytes,
            max_segments: self.max_segments,
            max_batch_bytes: self.max_batch_bytes,
            pool_factor: self.pool_factor,
            hnsw_m: self.hnsw_m,
            hnsw_ef_construction: self.hnsw_ef_construction,
            centroids_k: self.centroids_k,
            default_nprobe: self.default_nprobe,
            min_train_tokens: self.min_train_tokens,
            train_iterations: self.train_iterations,
            drift: self.drift,
            expected_tokens: self.expected_tokens,
        }
    }
}
