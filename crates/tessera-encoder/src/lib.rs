//! The built-in late-interaction encoder: texts in, L2-normalised token
//! vectors out, from a sentence-transformers / PyLate model directory.
//!
//! | file | owns |
//! |---|---|
//! | `layout.rs` | reading and checking the model directory ([`Layout`], [`Settings`], [`Identity`]) |
//! | `rules.rs` | PyLate's tokenization rules: prefix token, lengths, `[MASK]` expansion, skiplist |
//! | `backbone.rs` | loading the transformer, and the Dense / Normalize head after it |
//! | `bert.rs`, `modernbert.rs` | the two architectures' forward passes |
//! | `nn.rs` | the layers they share: fused linear maps, LayerNorm, attention, RoPE |
//! | `fastmath.rs` | vectorizable `exp` and `erf`: GELU and the attention softmax |
//! | `gemm.rs` | the linear maps' kernel: weights packed at load, AVX-512 / AVX2 / portable |
//!
//! [`Encoder::encode`] tokenizes every text, sorts them by length and cuts
//! batches of similar lengths (little padding), runs the batches in parallel
//! on the caller's rayon pool, and returns one matrix per text in the
//! caller's order. Nothing is downloaded: every file comes from the directory.

#[cfg(target_arch = "x86_64")]
mod amx;
mod backbone;
mod bert;
mod error;
mod fastmath;
mod gemm;
mod layout;
mod modernbert;
mod nn;
mod rules;
#[doc(hidden)]
pub mod testing;

use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

pub use error::{Error, Result};
pub use layout::{ARCHITECTURES, Identity, Layout, Settings};
pub use rules::Kind;

use backbone::{Backbone, Stage};
use rules::{Rules, Tokens};

/// Padded tokens per forward pass: enough rows for the GEMMs to run at
/// speed, few enough that a batch's largest buffers (attention scores,
/// `12 heads × len` floats per token) stay under the allocator's mapping
/// threshold (measured on MiniLM: 2,048 encodes 1.3× as fast as 4,096,
/// whose buffers were mapped and faulted in afresh by every operation).
const BATCH_TOKENS: usize = 2048;
/// Texts per forward pass at most.
const BATCH_TEXTS: usize = 64;

/// A loaded model.
pub struct Encoder {
    rules: Rules,
    backbone: Backbone,
    head: Vec<Stage>,
    identity: Identity,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// One text's vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// `len × dim` values, row-major, each row of unit L2 norm.
    pub vectors: Vec<f32>,
    pub dim: usize,
    /// Whether the text was cut at the query or document length.
    pub truncated: bool,
}

impl Encoded {
    /// The number of vectors.
    pub fn len(&self) -> usize {
        self.vectors.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }
}

impl Encoder {
    /// Loads the model in `dir`, refusing a missing, damaged or unsupported
    /// file by name.
    pub fn open(dir: &Path) -> Result<Encoder> {
        gemm::Kernel::chosen().map_err(Error::Input)?;
        let layout = Layout::read(dir)?;
        let dim = layout.output_dim()?;
        let rules = Rules::new(&layout)?;
        let backbone = backbone::load(&layout)?;
        let head = backbone::stages(&layout)?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        let identity = Identity {
            name,
            architecture: layout.architecture.clone(),
            dim,
            checksum: layout::checksum(&layout.weight_files())?,
            settings: layout.settings.clone(),
        };
        Ok(Encoder { rules, backbone, head, identity })
    }

    /// What identifies this model's outputs.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The output vectors' dimension.
    pub fn dim(&self) -> usize {
        self.identity.dim
    }

    /// The late-interaction settings.
    pub fn settings(&self) -> &Settings {
        &self.identity.settings
    }

    /// Encodes `texts` as queries or documents: one [`Encoded`] per text, in
    /// order. An empty (or all-whitespace) text is refused.
    pub fn encode<S: AsRef<str> + Sync>(&self, texts: &[S], kind: Kind) -> Result<Vec<Encoded>> {
        if let Some(i) = texts.iter().position(|t| t.as_ref().trim().is_empty()) {
            return Err(Error::Input(format!("text {i} is empty: there is nothing to encode")));
        }
        let tokens = self.rules.tokenize(texts, kind)?;
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].ids.len()));
        let batches = batches(&order, &tokens);
        let done: Vec<Vec<(usize, Encoded)>> =
            batches.par_iter().map(|batch| self.run(batch, &tokens)).collect::<Result<_>>()?;
        let mut out: Vec<Option<Encoded>> = vec![None; tokens.len()];
        for (i, encoded) in done.into_iter().flatten() {
            out[i] = Some(encoded);
        }
        Ok(out.into_iter().map(|e| e.expect("every text is in one batch")).collect())
    }

    /// One forward pass over texts of similar lengths.
    fn run(&self, batch: &[usize], tokens: &[Tokens]) -> Result<Vec<(usize, Encoded)>> {
        let len = batch.iter().map(|&i| tokens[i].ids.len()).max().unwrap_or(0);
        let mut ids = vec![self.rules.pad_id; batch.len() * len];
        let mut mask = vec![0u32; batch.len() * len];
        for (row, &i) in batch.iter().enumerate() {
            let t = &tokens[i];
            ids[row * len..row * len + t.ids.len()].copy_from_slice(&t.ids);
            for (m, &a) in mask[row * len..].iter_mut().zip(&t.attend) {
                *m = a as u32;
            }
        }
        let ids = Tensor::from_vec(ids, (batch.len(), len), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (batch.len(), len), &Device::Cpu)?;
        let hidden = self.backbone.forward(&ids, &mask)?;
        let (_, _, width) = hidden.dims3()?;
        let rows = hidden.reshape((batch.len() * len, width))?;
        let rows = backbone::normalize(&backbone::apply(&self.head, rows)?)?;
        let dim = rows.dim(1)?;
        let values = rows.flatten_all()?.to_vec1::<f32>()?;
        Ok(batch
            .iter()
            .enumerate()
            .map(|(row, &i)| {
                let t = &tokens[i];
                let mut vectors = Vec::with_capacity(t.keep.iter().filter(|&&k| k).count() * dim);
                for (pos, _) in t.keep.iter().enumerate().filter(|(_, k)| **k) {
                    let at = (row * len + pos) * dim;
                    vectors.extend_from_slice(&values[at..at + dim]);
                }
                (i, Encoded { vectors, dim, truncated: t.truncated })
            })
            .collect())
    }
}

/// Cuts `order` (texts by decreasing length) into batches within the budgets.
fn batches(order: &[usize], tokens: &[Tokens]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut width = 0;
    for &i in order {
        let len = tokens[i].ids.len();
        let w = width.max(len);
        if !current.is_empty() && (w * (current.len() + 1) > BATCH_TOKENS || current.len() == BATCH_TEXTS) {
            out.push(std::mem::take(&mut current));
            width = len;
        } else {
            width = w;
        }
        current.push(i);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
