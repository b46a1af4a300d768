//! The final order of a hybrid query.
//!
//! Fusion ([`crate::Fusion`]) chooses which documents are candidates; the
//! rank orders them. [`Rank::MaxSim`] orders by exact MaxSim (as every
//! hybrid query did before ranks existed). [`Rank::Linear`] orders by a
//! weighted sum of per-signal normalised scores over the candidate set:
//!
//! `score(d) = Σ_s w_s · norm_s(x_s(d))`
//!
//! with signals `maxsim` (exact MaxSim, known for every candidate), `bm25`
//! (the text source's score) and `vector` (the coarse stage's similarity).
//! A candidate a source did not return gets that source's *floor*, the
//! lowest score the source returned (its true score is at most that); a
//! source that was not queried or returned nothing contributes 0 to every
//! candidate. `norm_s` is the z-score (`(x − mean) / std`, population std)
//! or min-max (`(x − min) / (max − min)`) over the candidate set, and 0 for
//! every candidate when the values are all equal. Ties break by id.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A score a linear rank combines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Exact MaxSim of the query tokens.
    MaxSim,
    /// BM25 of the query text (the `text` source).
    Bm25,
    /// Similarity in the coarse stage (the `vector` source).
    Vector,
}

tessera_format::named!(Signal, "rank signal", [Signal::MaxSim => "maxsim", Signal::Bm25 => "bm25", Signal::Vector => "vector"]);

/// How a signal is normalised over the candidate set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Norm {
    /// `(x − mean) / std`.
    #[default]
    ZScore,
    /// `(x − min) / (max − min)`.
    MinMax,
}

tessera_format::named!(Norm, "rank_norm", [Norm::ZScore => "zscore", Norm::MinMax => "minmax"]);

/// How the interfaces name a rank: `maxsim` or `linear`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankKind {
    MaxSim,
    Linear,
}

tessera_format::named!(RankKind, "rank", [RankKind::MaxSim => "maxsim", RankKind::Linear => "linear"]);

/// The final order of a hybrid query's candidates (see the module documentation).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rank", rename_all = "lowercase")]
pub enum Rank {
    /// Exact MaxSim (the fused score when the query has no tokens).
    #[default]
    MaxSim,
    /// Weighted sum of normalised signals; an absent weight is 0.
    Linear { norm: Norm, weights: BTreeMap<Signal, f64> },
}

impl Rank {
    /// A linear rank; signals not given weigh 0.
    pub fn linear(norm: Norm, weights: impl IntoIterator<Item = (Signal, f64)>) -> Self {
        Rank::Linear { norm, weights: weights.into_iter().collect() }
    }

    /// A rank from the interfaces' parts: its kind, and for `linear` the
    /// normalisation (default z-score) and weights (`maxsim` defaults to 1,
    /// the others to 0). `None` when nothing is given.
    pub fn from_parts(kind: Option<RankKind>, norm: Option<Norm>, weights: &[(Signal, f64)]) -> Result<Option<Rank>> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        match kind {
            None if norm.is_none() && weights.is_empty() => Ok(None),
            None => bad("rank_norm and rank_weights apply to rank linear: give rank too"),
            Some(RankKind::MaxSim) if norm.is_some() || !weights.is_empty() => {
                bad("rank_norm and rank_weights apply to rank linear, not maxsim")
            }
            Some(RankKind::MaxSim) => Ok(Some(Rank::MaxSim)),
            Some(RankKind::Linear) => {
                let mut w = BTreeMap::from([(Signal::MaxSim, 1.0)]);
                w.extend(weights.iter().copied());
                let r = Rank::Linear { norm: norm.unwrap_or_default(), weights: w };
                r.validate()?;
                Ok(Some(r))
            }
        }
    }

    /// `maxsim` or `linear`.
    pub fn kind(&self) -> RankKind {
        match self {
            Rank::MaxSim => RankKind::MaxSim,
            Rank::Linear { .. } => RankKind::Linear,
        }
    }

    /// A signal's weight (0 when absent; MaxSim ranks weigh MaxSim alone).
    pub fn weight(&self, s: Signal) -> f64 {
        match self {
            Rank::MaxSim => (s == Signal::MaxSim) as u8 as f64,
            Rank::Linear { weights, .. } => weights.get(&s).copied().unwrap_or(0.0),
        }
    }

    /// Weights are finite and at least one is not 0.
    pub(crate) fn validate(&self) -> Result<()> {
        if let Rank::Linear { weights, .. } = self {
            if weights.values().any(|w| !w.is_finite()) {
                return Err(Error::InvalidArgument("rank weights must be finite".into()));
            }
            if weights.values().all(|w| *w == 0.0) {
                return Err(Error::InvalidArgument("a linear rank needs a weight that is not 0".into()));
            }
        }
        Ok(())
    }
}

/// A collection's default ranking of hybrid queries that carry query tokens
/// and say no `rank` (stored in its manifest; `tessera tune` fits it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Ranking {
    #[serde(flatten)]
    pub rank: Rank,
    /// Candidates per source of such queries when they do not say
    /// (default: the collection's [`default_candidates`](crate::Collection::default_candidates)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
}

/// One signal's part in a candidate's linear score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    pub signal: Signal,
    /// The source's score, absent when the source did not return the candidate.
    pub raw: Option<f32>,
    /// The value normalised: `raw`, or the source's floor when absent.
    pub value: Option<f32>,
    pub normalized: f64,
    pub weight: f64,
}

const N_SIGNALS: usize = Signal::ALL.len();

/// The candidates of one hybrid query and each signal's raw score.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signals {
    pub ids: Vec<String>,
    /// Per candidate, per signal (in [`Signal::ALL`] order): the source's
    /// score, `None` where the source did not return the candidate.
    pub raw: Vec<[Option<f32>; N_SIGNALS]>,
    /// Per signal: the lowest score its source returned; `None` when the
    /// source was not queried or returned nothing.
    pub floor: [Option<f32>; N_SIGNALS],
}

impl Signals {
    /// A signal's normalised value for every candidate.
    pub fn normalized(&self, s: Signal, norm: Norm) -> Vec<f64> {
        let i = s as usize;
        let floor = self.floor[i];
        let values: Vec<f64> = self.raw.iter().map(|r| r[i].or(floor).map_or(f64::NAN, f64::from)).collect();
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return vec![0.0; values.len()];
        }
        let n = values.len() as f64;
        let (shift, scale) = match norm {
            Norm::ZScore => {
                let mean = values.iter().sum::<f64>() / n;
                let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                (mean, var.sqrt())
            }
            Norm::MinMax => {
                let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (lo, hi - lo)
            }
        };
        if !(scale > 0.0 && scale.is_finite()) {
            return vec![0.0; values.len()];
        }
        values.iter().map(|v| (v - shift) / scale).collect()
    }

    /// The score `rank` gives every candidate: MaxSim for [`Rank::MaxSim`]
    /// (−∞ where unknown), the linear score otherwise.
    pub fn scores(&self, rank: &Rank) -> Vec<f64> {
        match rank {
            Rank::MaxSim => {
                self.raw.iter().map(|r| r[Signal::MaxSim as usize].map_or(f64::NEG_INFINITY, f64::from)).collect()
            }
            Rank::Linear { norm, weights } => {
                let mut out = vec![0.0; self.ids.len()];
                for (s, w) in weights.iter().filter(|(_, w)| **w != 0.0) {
                    for (o, v) in out.iter_mut().zip(self.normalized(*s, *norm)) {
                        *o += w * v;
                    }
                }
                out
            }
        }
    }

    /// Candidate indexes best first by `scores`, ties by id.
    pub fn order(&self, scores: &[f64]) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.ids.len()).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then_with(|| self.ids[a].cmp(&self.ids[b])));
        idx
    }

    /// Each signal's part in every candidate's linear score (empty lists for a MaxSim rank).
    pub fn components(&self, rank: &Rank) -> Vec<Vec<Component>> {
        let Rank::Linear { norm, .. } = rank else { return vec![Vec::new(); self.ids.len()] };
        let mut out = vec![Vec::new(); self.ids.len()];
        for s in Signal::ALL {
            let (w, i) = (rank.weight(s), s as usize);
            if w == 0.0 {
                continue;
            }
            for (c, (o, r)) in self.normalized(s, *norm).into_iter().zip(out.iter_mut().zip(&self.raw)) {
                o.push(Component { signal: s, raw: r[i], value: r[i].or(self.floor[i]), normalized: c, weight: w });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two candidates' hand-computed linear scores: z-scores and min-max by
    /// hand, the BM25 floor where the text source did not return one.
    #[test]
    fn linear_scores_match_a_hand_computation() {
        let s = Signals {
            ids: vec!["a".into(), "b".into(), "c".into()],
            raw: vec![[Some(3.0), Some(10.0), None], [Some(2.0), None, None], [Some(1.0), Some(4.0), None]],
            floor: [Some(1.0), Some(4.0), None],
        };
        // MaxSim 3, 2, 1: mean 2, population std √(2/3). BM25 10, floor 4, 4: mean 6, std √8.
        let (sd_m, sd_b) = ((2.0f64 / 3.0).sqrt(), 8f64.sqrt());
        let z = s.scores(&Rank::linear(Norm::ZScore, [(Signal::MaxSim, 1.0), (Signal::Bm25, 0.5)]));
        let want = [1.0 / sd_m + 0.5 * 4.0 / sd_b, 0.0 + 0.5 * -2.0 / sd_b, -1.0 / sd_m + 0.5 * -2.0 / sd_b];
        for (g, w) in z.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{z:?} vs {want:?}");
        }
        // Min-max: MaxSim 1, 0.5, 0; BM25 1, 0, 0. The vector source was not queried: 0.
        let m =
            s.scores(&Rank::linear(Norm::MinMax, [(Signal::MaxSim, 2.0), (Signal::Bm25, 1.0), (Signal::Vector, 5.0)]));
        assert_eq!(m, vec![3.0, 1.0, 0.0]);
        assert_eq!(s.order(&m), vec![0, 1, 2]);
        // A heavy BM25 weight: b (not returned, at the floor) ties c on BM25 and stays ahead on MaxSim.
        let h = s.scores(&Rank::linear(Norm::MinMax, [(Signal::MaxSim, 0.1), (Signal::Bm25, 1.0)]));
        assert_eq!(s.order(&h), vec![0, 1, 2]);
        assert!((h[1] - 0.05).abs() < 1e-12 && h[2] == 0.0, "{h:?}");
        let comps = s.components(&Rank::linear(Norm::MinMax, [(Signal::Bm25, 1.0)]));
        assert_eq!(
            comps[1],
            vec![Component { signal: Signal::Bm25, raw: None, value: Some(4.0), normalized: 0.0, weight: 1.0 }]
        );
    }

    #[test]
    fn equal_values_and_ties_are_zero_and_by_id() {
        let s = Signals {
            ids: vec!["b".into(), "a".into()],
            raw: vec![[Some(1.0), None, None], [Some(1.0), None, None]],
            floor: [Some(1.0), None, None],
        };
        for norm in Norm::ALL {
            let sc = s.scores(&Rank::linear(norm, [(Signal::MaxSim, 1.0)]));
            assert_eq!(sc, vec![0.0, 0.0]);
            assert_eq!(s.order(&sc), vec![1, 0]);
        }
    }

    #[test]
    fn parts_are_checked() {
        assert_eq!(Rank::from_parts(None, None, &[]).unwrap(), None);
        assert!(Rank::from_parts(None, Some(Norm::MinMax), &[]).is_err());
        assert!(Rank::from_parts(Some(RankKind::MaxSim), None, &[(Signal::Bm25, 1.0)]).is_err());
        assert!(Rank::from_parts(Some(RankKind::Linear), None, &[(Signal::Bm25, f64::NAN)]).is_err());
        assert!(Rank::from_parts(Some(RankKind::Linear), None, &[(Signal::MaxSim, 0.0)]).is_err());
        let r = Rank::from_parts(Some(RankKind::Linear), None, &[(Signal::Bm25, 0.4)]).unwrap().unwrap();
        assert_eq!(r, Rank::linear(Norm::ZScore, [(Signal::MaxSim, 1.0), (Signal::Bm25, 0.4)]));
        // The stored form reads back, and a MaxSim ranking is the default.
        let stored = Ranking { rank: r, candidates: Some(128) };
        let json = serde_json::to_string(&stored).unwrap();
        assert_eq!(serde_json::from_str::<Ranking>(&json).unwrap(), stored, "{json}");
        assert_eq!(serde_json::from_str::<Ranking>(r#"{"rank":"maxsim"}"#).unwrap(), Ranking::default());
    }
}
