//! Documents and token tensors as the API takes and returns them, and their
//! validation: everything a batch must pass before anything is written.

use crate::config::{CollectionConfig, MAX_ID_BYTES};
use crate::error::{Error, Result};
use half::f16;
use tessera_kernels::EncodedTokens;

/// A token tensor: `rows × dim` values, row-major, as f32 or f16.
#[derive(Debug, Clone, PartialEq)]
pub enum Tokens {
    F32 { data: Vec<f32>, dim: usize },
    F16 { data: Vec<f16>, dim: usize },
}

impl Tokens {
    /// From rows of equal length; the row length is the dim.
    pub fn from_rows<R: AsRef<[f32]>>(rows: &[R]) -> Result<Self> {
        let dim = rows.first().map_or(0, |r| r.as_ref().len());
        let mut data = Vec::with_capacity(rows.len() * dim);
        for r in rows {
            let r = r.as_ref();
            if r.len() != dim {
                return Err(Error::RaggedTensor { id: None, len: data.len() + r.len(), dim });
            }
            data.extend_from_slice(r);
        }
        Ok(Tokens::F32 { data, dim })
    }

    pub fn dim(&self) -> usize {
        match self {
            Tokens::F32 { dim, .. } | Tokens::F16 { dim, .. } => *dim,
        }
    }

    fn len(&self) -> usize {
        match self {
            Tokens::F32 { data, .. } => data.len(),
            Tokens::F16 { data, .. } => data.len(),
        }
    }

    /// Number of rows (0 for a tensor of dim 0).
    pub fn n_tokens(&self) -> usize {
        self.len().checked_div(self.dim()).unwrap_or(0)
    }

    /// Checks shape and values against a collection of dimension `dim`
    /// and converts to the stored f16 form.
    pub(crate) fn to_f16_checked(&self, dim: usize, id: Option<&str>) -> Result<Vec<f16>> {
        let out = match self {
            Tokens::F32 { data, .. } => {
                let mut v = vec![f16::ZERO; data.len()];
                half::slice::HalfFloatSliceExt::convert_from_f32_slice(&mut v[..], data);
                v
            }
            Tokens::F16 { data, .. } => data.clone(),
        };
        self.check_shape(dim, id)?;
        if let Some(p) = out.iter().position(|x| !x.is_finite()) {
            let value = match self {
                Tokens::F32 { data, .. } => data[p],
                Tokens::F16 { data, .. } => data[p].to_f32(),
            };
            return Err(Error::InvalidValue { id: id.map(Into::into), row: p / dim, col: p % dim, value });
        }
        Ok(out)
    }

    /// Checks shape and values of a query and returns it as f32.
    pub(crate) fn to_f32_checked(&self, dim: usize) -> Result<Vec<f32>> {
        self.check_shape(dim, None)?;
        let out = match self {
            Tokens::F32 { data, .. } => data.clone(),
            Tokens::F16 { data, .. } => data.iter().map(|x| x.to_f32()).collect(),
        };
        // The same bound as documents: beyond it products can overflow f32.
        if let Some(p) = out.iter().position(|x| !x.is_finite() || x.abs() >= 65520.0) {
            return Err(Error::InvalidValue { id: None, row: p / dim, col: p % dim, value: out[p] });
        }
        Ok(out)
    }

    fn check_shape(&self, dim: usize, id: Option<&str>) -> Result<()> {
        let id = || id.map(String::from);
        if self.dim() != dim {
            return Err(Error::DimensionMismatch { id: id(), expected: dim, got: self.dim() });
        }
        if self.len() == 0 {
            return Err(Error::EmptyTensor { id: id() });
        }
        if !self.len().is_multiple_of(dim) {
            return Err(Error::RaggedTensor { id: id(), len: self.len(), dim });
        }
        Ok(())
    }
}

/// Options of one upsert ([`Collection::upsert_with`](crate::Collection::upsert_with)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertOptions {
    /// Pool each document's tokens by this factor (1..=64; 1: as given)
    /// instead of the collection's `pool_factor`.
    pub pool_factor: Option<u32>,
}

/// A document to upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// External id: 1..=512 bytes of UTF-8, unique in its collection.
    pub id: String,
    pub tokens: Tokens,
    pub text: Option<String>,
    pub payload: Option<serde_json::Value>,
}

impl Document {
    pub fn new(id: impl Into<String>, tokens: Tokens) -> Self {
        Self { id: id.into(), tokens, text: None, payload: None }
    }

    /// Checks this document as `upsert` would for a collection of dimension
    /// `dim` (id, shape, finite values within f16 range), without converting
    /// it. Lets a bulk loader report a bad record by its position.
    pub fn validate(&self, dim: usize) -> Result<()> {
        check_id(&self.id)?;
        self.tokens.check_shape(dim, Some(&self.id))?;
        // f32 values at or beyond 65520 round to infinity in f16.
        let bad = match &self.tokens {
            Tokens::F32 { data, .. } => {
                data.iter().position(|x| x.is_nan() || x.abs() >= 65520.0).map(|p| (p, data[p]))
            }
            Tokens::F16 { data, .. } => data.iter().position(|x| !x.is_finite()).map(|p| (p, data[p].to_f32())),
        };
        match bad {
            Some((p, value)) => {
                Err(Error::InvalidValue { id: Some(self.id.clone()), row: p / dim, col: p % dim, value })
            }
            None => Ok(()),
        }
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn with_payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = Some(payload);
        self
    }
}

/// A stored document, as `get` returns it (tokens as f16: as stored in an
/// f16 collection, the dequantised values `code × scale` rounded to f16 in an int8 one).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    pub id: String,
    /// `n_tokens × dim` values, row-major (empty when not asked for).
    pub tokens: Vec<f16>,
    /// Number of tokens (also when `tokens` was not asked for).
    pub n_tokens: usize,
    /// Tokens it was given: more than `n_tokens` when they were pooled.
    pub given_tokens: usize,
    pub dim: usize,
    pub text: Option<String>,
    pub payload: Option<serde_json::Value>,
}

/// A validated document as the WAL records it: tokens in f16, as given.
#[derive(Debug, Clone)]
pub(crate) struct WalDoc {
    pub id: String,
    pub tokens: Vec<f16>,
    pub text: Option<String>,
    /// Compact JSON.
    pub payload: Option<String>,
    /// The rows the document was given, when pooling kept fewer (`tokens`).
    pub given: Option<u32>,
}

/// A document as the memtable holds it: tokens in the collection's stored form.
#[derive(Debug, Clone)]
pub(crate) struct MemDoc {
    pub id: String,
    pub tokens: EncodedTokens,
    pub n_tokens: usize,
    /// The tokens it was given (more than `n_tokens` when it was pooled).
    pub given_tokens: usize,
    pub text: Option<String>,
    pub payload: Option<String>,
}

impl MemDoc {
    /// The document as a segment writer takes it.
    pub fn segment_doc(&self) -> tessera_format::segment::SegmentDoc<'_> {
        tessera_format::segment::SegmentDoc {
            id: &self.id,
            tokens: self.tokens.view(),
            text: self.text.as_deref(),
            payload: self.payload.as_deref(),
            given_tokens: self.given_tokens,
        }
    }
}

impl WalDoc {
    /// The stored form of the tokens (`encode` is deterministic, so a WAL
    /// replay rebuilds exactly what was acknowledged).
    pub fn encode(&self, config: &CollectionConfig) -> EncodedTokens {
        EncodedTokens::encode(config.staged_storage(), config.screening, &self.tokens, config.dim)
    }

    /// Pools the tokens by `factor` (nothing to do for 1 or a single token),
    /// keeping the count given.
    fn pool(&mut self, dim: usize, factor: u32) {
        let n = self.tokens.len() / dim;
        if factor <= 1 || n <= 1 {
            return;
        }
        let x: Vec<f32> = self.tokens.iter().map(|v| v.to_f32()).collect();
        let pooled = crate::pool::pool_tokens(&x, dim, factor);
        if pooled.len() < x.len() {
            self.tokens = pooled.iter().map(|&v| f16::from_f32(v)).collect();
            self.given = Some(n as u32);
        }
    }

    pub fn into_mem(self, tokens: EncodedTokens, dim: usize) -> MemDoc {
        let n_tokens = self.tokens.len() / dim;
        let given_tokens = self.given.map_or(n_tokens, |g| g as usize);
        MemDoc { id: self.id, tokens, n_tokens, given_tokens, text: self.text, payload: self.payload }
    }
}

pub(crate) fn check_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::EmptyId);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::IdTooLong { len: id.len(), max: MAX_ID_BYTES });
    }
    Ok(())
}

/// Validates a whole batch (the first problem rejects all of it) and encodes
/// each document's tokens in the collection's stored form, in parallel.
/// With `pool_factor` > 1 each document's tokens are pooled first ([`crate::pool_tokens`]).
pub(crate) fn prepare_batch(
    docs: &[Document],
    config: &CollectionConfig,
    pool_factor: u32,
) -> Result<Vec<(WalDoc, EncodedTokens)>> {
    use rayon::prelude::*;
    let mut seen = std::collections::HashSet::with_capacity(docs.len());
    let wal: Vec<WalDoc> = docs
        .iter()
        .map(|d| {
            check_id(&d.id)?;
            if !seen.insert(d.id.as_str()) {
                return Err(Error::DuplicateId(d.id.clone()));
            }
            let tokens = d.tokens.to_f16_checked(config.dim, Some(&d.id))?;
            let payload = d.payload.as_ref().map(|p| p.to_string());
            if let Some(t) = &d.text
                && t.len() > u32::MAX as usize
            {
                return Err(Error::InvalidArgument(format!("text of {:?} exceeds 4 GiB", d.id)));
            }
            Ok(WalDoc { id: d.id.clone(), tokens, text: d.text.clone(), payload, given: None })
        })
        .collect::<Result<_>>()?;
    Ok(wal
        .into_par_iter()
        .map(|mut d| {
            d.pool(config.dim, pool_factor);
            let e = d.encode(config);
            (d, e)
        })
        .collect())
}

/// Parses a stored payload (verified JSON when it was written).
pub(crate) fn parse_payload(s: &str) -> Option<serde_json::Value> {
    serde_json::from_str(s).ok()
}
