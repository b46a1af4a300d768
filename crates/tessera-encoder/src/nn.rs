//! The layers both architectures share: linear maps (optionally fused; our
//! packed GEMM, [`crate::gemm`]), LayerNorm with or without bias,
//! activations, and attention over a fused `q, k, v` projection with an
//! additive key mask and optional RoPE.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use rayon::prelude::*;

use crate::fastmath;
use crate::gemm::Packed;

/// `y = x · Wᵀ + b` over the last dimension, `W` packed at load.
pub(crate) struct Linear(Packed);

impl Linear {
    /// From `weight` `(out, in)` and an optional `bias` `(out)`.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Linear> {
        let (n, k) = weight.dims2()?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let b = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
        Ok(Linear(Packed::new(&w, n, k, b.as_deref())))
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_then(x, |_, _| {})
    }

    /// `act(x · Wᵀ + b)`.
    pub fn forward_act(&self, x: &Tensor, act: Act) -> candle_core::Result<Tensor> {
        self.forward_then(x, |y, _| act.apply(y))
    }

    /// GeGLU: `act(a) · g` where `a, g` are the first and second halves of
    /// each row of `x · Wᵀ + b` (the output has half the columns).
    pub fn forward_glu(&self, x: &Tensor, act: Act) -> candle_core::Result<Tensor> {
        let half = self.0.n / 2;
        let y = self.forward_then(x, |y, n| {
            for row in y.chunks_exact_mut(n) {
                let (a, g) = row.split_at_mut(half);
                act.apply(a);
                for (a, g) in a.iter_mut().zip(g.iter()) {
                    *a *= g;
                }
            }
        })?;
        y.narrow(candle_core::D::Minus1, 0, half)?.contiguous()
    }

    fn forward_then(&self, x: &Tensor, then: impl Fn(&mut [f32], usize) + Sync) -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let last = dims.last_mut().ok_or_else(|| candle_core::Error::Msg("a linear layer needs a tensor".into()))?;
        if *last != self.0.k {
            candle_core::bail!("a linear layer of {} inputs got {}", self.0.k, last);
        }
        *last = self.0.n;
        let x = x.contiguous()?;
        let y = {
            let (storage, layout) = x.storage_and_layout();
            let candle_core::Storage::Cpu(cpu) = &*storage else {
                candle_core::bail!("the encoder runs on the CPU");
            };
            let (start, end) = layout.contiguous_offsets().expect("contiguous");
            let mut y = self.0.apply(&cpu.as_slice::<f32>()?[start..end]);
            let n = self.0.n;
            y.par_chunks_mut(n * 64).for_each(|rows| then(rows, n));
            y
        };
        Tensor::from_vec(y, dims, &Device::Cpu)
    }
}

/// An activation inside the transformer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Act {
    /// Exact GELU, `x · Φ(x)` (transformers' `gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl Act {
    /// transformers' name of an activation (`key` names the config key).
    pub fn parse(key: &str, name: &str) -> Result<Act, String> {
        match name {
            "gelu" => Ok(Act::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Act::GeluTanh),
            "relu" => Ok(Act::Relu),
            other => Err(format!("{key} {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu are)")),
        }
    }

    /// In place.
    pub fn apply(self, values: &mut [f32]) {
        match self {
            Act::Gelu => fastmath::gelu(values),
            Act::GeluTanh => {
                for v in values {
                    let x = *v;
                    *v = 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh());
                }
            }
            Act::Relu => {
                for v in values {
                    *v = v.max(0.0);
                }
            }
        }
    }
}

/// LayerNorm over the last dimension; a missing bias is a zero bias (one
/// fused kernel either way).
pub(crate) struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    pub fn load(size: usize, eps: f64, bias: bool, vb: VarBuilder) -> candle_core::Result<Norm> {
        let weight = vb.get(size, "weight")?;
        let bias = if bias { vb.get(size, "bias")? } else { weight.zeros_like()? };
        Ok(Norm { weight, bias, eps: eps as f32 })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

pub(crate) fn linear(input: usize, output: usize, bias: bool, vb: VarBuilder) -> candle_core::Result<Linear> {
    let weight = vb.get((output, input), "weight")?;
    let bias = if bias { Some(vb.get(output, "bias")?) } else { None };
    Linear::new(&weight, bias.as_ref())
}

/// Several `input → output` projections stacked into one `input → n·output`
/// matrix, in the order of `names`.
pub(crate) fn fused_linear(
    input: usize,
    output: usize,
    names: &[&str],
    bias: bool,
    vb: &VarBuilder,
) -> candle_core::Result<Linear> {
    let weights =
        names.iter().map(|n| vb.pp(*n).get((output, input), "weight")).collect::<candle_core::Result<Vec<_>>>()?;
    let bias = if bias {
        let b = names.iter().map(|n| vb.pp(*n).get(output, "bias")).collect::<candle_core::Result<Vec<_>>>()?;
        Some(Tensor::cat(&b, 0)?)
    } else {
        None
    };
    Linear::new(&Tensor::cat(&weights, 0)?, bias.as_ref())
}

/// The additive mask on keys, `(batch, 1, 1, len)`: 0 where `mask` is 1,
/// `f32::MIN` where it is 0 (transformers' `(1 − mask) · finfo.min`).
pub(crate) fn key_bias(mask: &Tensor) -> candle_core::Result<Tensor> {
    let (batch, len) = mask.dims2()?;
    let m = mask.to_dtype(DType::F32)?;
    ((1.0 - m)? * f32::MIN as f64)?.reshape((batch, 1, 1, len))
}

/// Scaled dot-product attention over `qkv` `(batch, len, 3·hidden)` laid out
/// `q | k | v`, each split into `heads`; `bias` is added to the scores
/// (`(batch, 1, 1, len)` or `(batch, 1, len, len)`); `rope` is `(cos, sin)`,
/// `(len, head_dim / 2)`, applied rotate-half style to `q` and `k`.
/// Returns `(batch, len, hidden)`.
pub(crate) fn attention(
    qkv: &Tensor,
    heads: usize,
    bias: &Tensor,
    rope: Option<(&Tensor, &Tensor)>,
) -> candle_core::Result<Tensor> {
    let (batch, len, width) = qkv.dims3()?;
    let hidden = width / 3;
    let head = hidden / heads;
    let qkv = qkv.reshape((batch, len, 3, heads, head))?.permute((2, 0, 3, 1, 4))?;
    let (mut q, mut k) = (qkv.get(0)?.contiguous()?, qkv.get(1)?.contiguous()?);
    let v = qkv.get(2)?.contiguous()?;
    if let Some((cos, sin)) = rope {
        q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
    }
    let scores = (q.matmul(&k.t()?)? * (head as f64).powf(-0.5))?.broadcast_add(bias)?;
    let shape = scores.shape().clone();
    let mut values = scores.flatten_all()?.to_vec1::<f32>()?;
    values.par_chunks_mut(len * 64).for_each(|rows| fastmath::softmax_rows(rows, len));
    let p = Tensor::from_vec(values, shape, &Device::Cpu)?;
    p.matmul(&v)?.transpose(1, 2)?.reshape((batch, len, hidden))
}

/// `(cos, sin)` of rotary position embeddings for positions `0..len`.
pub(crate) fn rope_tables(len: usize, head: usize, theta: f64) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head / 2;
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for pos in 0..len {
        for i in 0..half {
            let inv = 1.0 / theta.powf((2 * i) as f64 / head as f64);
            let angle = (pos as f64 * inv) as f32;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let dev = &candle_core::Device::Cpu;
    Ok((Tensor::from_vec(cos, (len, half), dev)?, Tensor::from_vec(sin, (len, half), dev)?))
}
