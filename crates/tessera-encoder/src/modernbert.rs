//! ModernBERT (`model_type: "modernbert"`): GTE-ModernColBERT, LateOn.
//!
//! transformers' `ModernBertModel` on its CPU (padded, eager) path:
//! `x = LN(tok_embeddings[ids])`; per layer, pre-norm attention (layer 0 has
//! no `attn_norm`) over a fused `Wqkv` with rotary embeddings, then a GeGLU
//! MLP (`Wi` → input and gate halves → `Wo(act(input) · gate)`); finally
//! `final_norm`. Layers with `i % global_attn_every_n_layers != 0` (or
//! `layer_types[i] == "sliding_attention"` in transformers 5's configs) are
//! local: `local_rope_theta`, and a key `j` is visible from `i` only when
//! `|i − j| ≤ local_attention / 2`. Masked scores are set to `f32::MIN`
//! (not `−∞`), as transformers does, so a row with every key masked
//! averages over all positions exactly as transformers' does.

use candle_core::{Module, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

use crate::nn::{Act, Linear, Norm, attention, key_bias, linear, rope_tables};

#[derive(Deserialize)]
struct Config {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "eps")]
    norm_eps: f64,
    #[serde(default = "three")]
    global_attn_every_n_layers: usize,
    #[serde(default = "window")]
    local_attention: usize,
    global_rope_theta: Option<f64>,
    local_rope_theta: Option<f64>,
    rope_parameters: Option<serde_json::Value>,
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    norm_bias: bool,
    #[serde(default = "gelu")]
    hidden_activation: String,
    #[serde(default = "positions")]
    max_position_embeddings: usize,
}

fn eps() -> f64 {
    1e-5
}
fn three() -> usize {
    3
}
fn window() -> usize {
    128
}
fn gelu() -> String {
    "gelu".into()
}
fn positions() -> usize {
    8192
}

impl Config {
    /// `(global, local)` rotary bases: transformers 5's `rope_parameters`,
    /// else the flat keys, else transformers' defaults.
    fn thetas(&self) -> (f64, f64) {
        let nested = |kind: &str| self.rope_parameters.as_ref()?.get(kind)?.get("rope_theta")?.as_f64();
        let global = nested("full_attention").or(self.global_rope_theta).unwrap_or(160_000.0);
        let local = nested("sliding_attention").or(self.local_rope_theta).unwrap_or(10_000.0);
        (global, local)
    }

    fn is_local(&self, layer: usize) -> bool {
        match &self.layer_types {
            Some(types) => types.get(layer).is_some_and(|t| t == "sliding_attention"),
            None => !layer.is_multiple_of(self.global_attn_every_n_layers),
        }
    }
}

struct Layer {
    attn_norm: Option<Norm>,
    qkv: Linear,
    out: Linear,
    mlp_norm: Norm,
    wi: Linear,
    wo: Linear,
    local: bool,
}

pub(crate) struct ModernBert {
    words: Embedding,
    norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
    heads: usize,
    head_dim: usize,
    act: Act,
    half_window: usize,
    thetas: (f64, f64),
    pub max_positions: usize,
}

impl ModernBert {
    pub fn load(config: &serde_json::Value, vb: VarBuilder) -> Result<ModernBert, String> {
        let c: Config =
            serde_json::from_value(config.clone()).map_err(|e| format!("does not describe a ModernBERT: {e}"))?;
        let act = Act::parse("hidden_activation", &c.hidden_activation)?;
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) || c.global_attn_every_n_layers == 0 {
            return Err("hidden_size must be a multiple of num_attention_heads, global_attn_every_n_layers > 0".into());
        }
        if let Some(types) = &c.layer_types
            && types.len() != c.num_hidden_layers
        {
            return Err(format!(
                "layer_types lists {} layers, num_hidden_layers is {}",
                types.len(),
                c.num_hidden_layers
            ));
        }
        Self::weights(&c, act, vb).map_err(|e| format!("weights do not fit config.json: {e}"))
    }

    fn weights(c: &Config, act: Act, vb: VarBuilder) -> candle_core::Result<ModernBert> {
        let vb = if vb.contains_tensor("embeddings.tok_embeddings.weight") { vb } else { vb.pp("model") };
        let h = c.hidden_size;
        let words = candle_nn::embedding(c.vocab_size, h, vb.pp("embeddings.tok_embeddings"))?;
        let norm = Norm::load(h, c.norm_eps, c.norm_bias, vb.pp("embeddings.norm"))?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("layers.{i}"));
                Ok(Layer {
                    attn_norm: if i == 0 {
                        None
                    } else {
                        Some(Norm::load(h, c.norm_eps, c.norm_bias, l.pp("attn_norm"))?)
                    },
                    qkv: linear(h, 3 * h, c.attention_bias, l.pp("attn.Wqkv"))?,
                    out: linear(h, h, c.attention_bias, l.pp("attn.Wo"))?,
                    mlp_norm: Norm::load(h, c.norm_eps, c.norm_bias, l.pp("mlp_norm"))?,
                    wi: linear(h, 2 * c.intermediate_size, c.mlp_bias, l.pp("mlp.Wi"))?,
                    wo: linear(c.intermediate_size, h, c.mlp_bias, l.pp("mlp.Wo"))?,
                    local: c.is_local(i),
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_norm = Norm::load(h, c.norm_eps, c.norm_bias, vb.pp("final_norm"))?;
        Ok(ModernBert {
            words,
            norm,
            layers,
            final_norm,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
            act,
            half_window: c.local_attention / 2,
            thetas: c.thetas(),
            max_positions: c.max_position_embeddings,
        })
    }

    /// Last hidden states `(batch, len, hidden)`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let global = key_bias(mask)?;
        let local = if self.layers.iter().any(|l| l.local) { Some(self.window_bias(&global)?) } else { None };
        let rope_global = rope_tables(len, self.head_dim, self.thetas.0)?;
        let rope_local = rope_tables(len, self.head_dim, self.thetas.1)?;
        let mut x = self.norm.forward(&self.words.forward(ids)?)?;
        for layer in &self.layers {
            let h = match &layer.attn_norm {
                Some(n) => n.forward(&x)?,
                None => x.clone(),
            };
            let (bias, rope) = match (&local, layer.local) {
                (Some(local), true) => (local, &rope_local),
                _ => (&global, &rope_global),
            };
            let a = attention(&layer.qkv.forward(&h)?, self.heads, bias, Some((&rope.0, &rope.1)))?;
            x = (layer.out.forward(&a)? + x)?;
            let g = layer.wi.forward_glu(&layer.mlp_norm.forward(&x)?, self.act)?;
            x = (layer.wo.forward(&g)? + x)?;
        }
        self.final_norm.forward(&x)
    }

    /// The sliding-window mask `(batch, 1, len, len)`: the key mask inside
    /// the window, `f32::MIN` outside it.
    fn window_bias(&self, global: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, _, _, len) = global.dims4()?;
        let keys = global.flatten_all()?.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(batch * len * len);
        for b in 0..batch {
            for i in 0..len {
                for j in 0..len {
                    out.push(if i.abs_diff(j) > self.half_window { f32::MIN } else { keys[b * len + j] });
                }
            }
        }
        Tensor::from_vec(out, (batch, 1, len, len), global.device())
    }
}
