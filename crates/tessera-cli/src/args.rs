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
