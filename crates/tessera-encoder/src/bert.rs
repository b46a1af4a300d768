//! BERT (`model_type: "bert"`): MiniLM, ColBERTv2, answerai-colbert-small.
//!
//! transformers' `BertModel` in eval mode, without the pooler: word +
//! absolute position + token-type-0 embeddings, LayerNorm, then post-LN
//! layers `x = LN(x + Wo·attn(x))`, `x = LN(x + W2·act(W1·x))`. The
//! attention mask is additive, `(1 − mask) · f32::MIN` on the keys. Query,
//! key and value projections are fused into one matrix at load (one GEMM).

use candle_core::{D, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

use crate::nn::{Act, Linear, Norm, attention, fused_linear, key_bias, linear};

#[derive(Deserialize)]
struct Config {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "gelu")]
    hidden_act: String,
    max_position_embeddings: usize,
    #[serde(default = "two")]
    type_vocab_size: usize,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    #[serde(default = "absolute")]
    position_embedding_type: String,
}

fn absolute() -> String {
    "absolute".into()
}

fn gelu() -> String {
    "gelu".into()
}
fn two() -> usize {
    2
}
fn eps() -> f64 {
    1e-12
}

struct Layer {
    qkv: Linear,
    out: Linear,
    norm1: Norm,
    up: Linear,
    down: Linear,
    norm2: Norm,
}

pub(crate) struct Bert {
    words: Embedding,
    positions: Tensor,
    type0: Tensor,
    norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    act: Act,
    pub max_positions: usize,
}

impl Bert {
    pub fn load(config: &serde_json::Value, vb: VarBuilder) -> Result<Bert, String> {
        let c: Config = serde_json::from_value(config.clone()).map_err(|e| format!("does not describe a BERT: {e}"))?;
        let act = Act::parse("hidden_act", &c.hidden_act)?;
        if c.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type {:?} is not supported (absolute is)",
                c.position_embedding_type
            ));
        }
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err("hidden_size is not a multiple of num_attention_heads".into());
        }
        Self::weights(&c, act, vb).map_err(|e| format!("weights do not fit config.json: {e}"))
    }

    fn weights(c: &Config, act: Act, vb: VarBuilder) -> candle_core::Result<Bert> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") { vb } else { vb.pp("bert") };
        let h = c.hidden_size;
        let e = vb.pp("embeddings");
        let words = candle_nn::embedding(c.vocab_size, h, e.pp("word_embeddings"))?;
        let positions = e.pp("position_embeddings").get((c.max_position_embeddings, h), "weight")?;
        let type0 = e.pp("token_type_embeddings").get((c.type_vocab_size, h), "weight")?.get(0)?;
        let norm = Norm::load(h, c.layer_norm_eps, true, e.pp("LayerNorm"))?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention");
                Ok(Layer {
                    qkv: fused_linear(h, h, &["query", "key", "value"], true, &a.pp("self"))?,
                    out: linear(h, h, true, a.pp("output.dense"))?,
                    norm1: Norm::load(h, c.layer_norm_eps, true, a.pp("output.LayerNorm"))?,
                    up: linear(h, c.intermediate_size, true, l.pp("intermediate.dense"))?,
                    down: linear(c.intermediate_size, h, true, l.pp("output.dense"))?,
                    norm2: Norm::load(h, c.layer_norm_eps, true, l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Bert {
            words,
            positions,
            type0,
            norm,
            layers,
            heads: c.num_attention_heads,
            act,
            max_positions: c.max_position_embeddings,
        })
    }

    /// Last hidden states `(batch, len, hidden)`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let x = self.words.forward(ids)?;
        let x = x.broadcast_add(&self.positions.narrow(0, 0, len)?)?.broadcast_add(&self.type0)?;
        let mut x = self.norm.forward(&x)?;
        let bias = key_bias(mask)?;
        for layer in &self.layers {
            let a = attention(&layer.qkv.forward(&x)?, self.heads, &bias, None)?;
            x = layer.norm1.forward(&(layer.out.forward(&a)? + &x)?)?;
            let f = layer.down.forward(&layer.up.forward_act(&x, self.act)?)?;
            x = layer.norm2.forward(&(f + &x)?)?;
        }
        debug_assert_eq!(x.dim(D::Minus1)?, self.type0.dim(0)?);
        Ok(x)
    }
}
