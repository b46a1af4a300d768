//! The transformer ([`Backbone`]: BERT or ModernBERT) and the head after it
//! (Dense and Normalize modules, in `modules.json` order).
//!
//! Weights load from safetensors files in f32 (memory-mapped, converted from
//! whatever the file stores), named as sentence-transformers saves them, or
//! with the `bert.` / `model.` prefix of a task model's checkpoint.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::bert::Bert;
use crate::error::{Error, Result};
use crate::layout::{Activation, Head, Layout};
use crate::modernbert::ModernBert;
use crate::nn::{Linear, linear};

pub(crate) enum Backbone {
    Bert(Bert),
    ModernBert(ModernBert),
}

// A model has a handful of stages, built once: their size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Stage {
    Normalize,
    Dense { linear: Linear, activation: Activation, residual: Option<Residual> },
}

pub(crate) enum Residual {
    Identity,
    Project(Linear),
}

fn weights(path: &Path) -> Result<VarBuilder<'static>> {
    // SAFETY: the file is mapped read-only and never written by us; replacing
    // a model directory's files under a running encoder is unsupported (the
    // contract of every memory-mapped model loader).
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }
        .map_err(|e| Error::model(path, format!("is not a readable safetensors file: {e}")))
}

/// Loads the transformer and checks that the layout's lengths fit it.
pub(crate) fn load(layout: &Layout) -> Result<Backbone> {
    let path = layout.dir.join("model.safetensors");
    let vb = weights(&path)?;
    let config_path = layout.dir.join("config.json");
    let (backbone, max) = match layout.architecture.as_str() {
        "bert" => {
            let m = Bert::load(&layout.config, vb).map_err(|e| Error::model(&path, e))?;
            let max = m.max_positions;
            (Backbone::Bert(m), max)
        }
        "modernbert" => {
            let m = ModernBert::load(&layout.config, vb).map_err(|e| Error::model(&path, e))?;
            let max = m.max_positions;
            (Backbone::ModernBert(m), max)
        }
        other => return Err(Error::model(&config_path, format!("model_type {other:?} is not supported"))),
    };
    let longest = layout.settings.query_length.max(layout.settings.document_length);
    if longest > max {
        return Err(Error::model(
            layout.dir.join("config_sentence_transformers.json"),
            format!("a length of {longest} tokens exceeds the model's max_position_embeddings ({max})"),
        ));
    }
    Ok(backbone)
}

impl Backbone {
    /// Last hidden states `(batch, len, hidden)` of `ids` `(batch, len)` with
    /// `mask` `(batch, len)`: 1 where a token may be attended to, 0 where not.
    pub(crate) fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Backbone::Bert(m) => m.forward(ids, mask)?,
            Backbone::ModernBert(m) => m.forward(ids, mask)?,
        })
    }
}

/// Loads the head modules' weights.
pub(crate) fn stages(layout: &Layout) -> Result<Vec<Stage>> {
    layout
        .heads
        .iter()
        .map(|head| match head {
            Head::Normalize => Ok(Stage::Normalize),
            Head::Dense { dir, in_features, out_features, bias, activation, residual } => {
                let path = dir.join("model.safetensors");
                let vb = weights(&path)?;
                let err = |e: candle_core::Error| Error::model(&path, format!("does not fit its config.json: {e}"));
                let (i, o) = (*in_features, *out_features);
                let residual = match (*residual, i == o) {
                    (false, _) => None,
                    (true, true) => Some(Residual::Identity),
                    (true, false) => Some(Residual::Project(linear(i, o, false, vb.pp("residual")).map_err(err)?)),
                };
                let linear = linear(i, o, *bias, vb.pp("linear")).map_err(err)?;
                Ok(Stage::Dense { linear, activation: *activation, residual })
            }
        })
        .collect()
}

/// Applies the head to rows `(n, hidden)`.
pub(crate) fn apply(stages: &[Stage], mut x: Tensor) -> Result<Tensor> {
    for stage in stages {
        x = match stage {
            Stage::Normalize => normalize(&x)?,
            Stage::Dense { linear, activation, residual } => {
                let y = linear.forward(&x)?;
                let y = match activation {
                    Activation::Identity => y,
                    Activation::Tanh => y.tanh()?,
                    Activation::Relu => y.relu()?,
                    Activation::Gelu => y.gelu_erf()?,
                    Activation::Sigmoid => candle_nn::ops::sigmoid(&y)?,
                };
                match residual {
                    None => y,
                    Some(Residual::Identity) => (y + &x)?,
                    Some(Residual::Project(r)) => (y + r.forward(&x)?)?,
                }
            }
        };
    }
    Ok(x)
}

/// Rows scaled to unit L2 norm, `x / max(‖x‖, 1e-12)` (torch's `normalize`).
pub(crate) fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}
