//! Collections bound to a model: the model folder that turns the
//! collection's texts into tokens, with the identity it had when bound
//! (name, architecture, dimension, checksum of the files that decide its
//! vectors, the late-interaction settings), kept in the manifest.
//!
//! A bound collection takes documents as text without tokens (encoded as
//! documents before anything is written) and queries as text
//! (`SearchOptions::query_text`, encoded as a query). The model is loaded on
//! first use, once per process and folder, and checked against the bound
//! identity: a model folder whose files changed since is refused until the
//! caller binds it again ([`Collection::bind_model`](crate::Collection::bind_model)), because the stored
//! tokens were made by the old one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
pub use tessera_encoder::{Encoder, Identity as ModelIdentity, Kind as TextKindOf};

use crate::doc::{Document, Tokens};
use crate::error::{Error, Result};

/// Which model encodes a collection's texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBinding {
    /// The model folder (absolute).
    pub path: PathBuf,
    /// What the model was when bound.
    pub identity: ModelIdentity,
}

pub(crate) fn model_error(e: tessera_encoder::Error) -> Error {
    Error::InvalidArgument(e.to_string())
}

/// The model in `dir`, loaded once per process (keyed by its canonical
/// path; concurrent first uses wait for one load). Its weights are
/// memory-mapped, and replacing a model folder's files under a running
/// process is not supported; a process started later computes the checksum
/// afresh, so a changed model is then refused by the collections bound to
/// the old one. [`Collection::bind_model`](crate::Collection::bind_model)
/// loads the folder afresh.
pub fn load_model(dir: &Path) -> Result<Arc<Encoder>> {
    let key = canonical(dir)?;
    // Held while loading: two first uses of a model load it once.
    let mut loaded = loaded().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = loaded.get(&key) {
        return Ok(e.clone());
    }
    let encoder = Arc::new(Encoder::open(&key).map_err(model_error)?);
    loaded.insert(key, encoder.clone());
    Ok(encoder)
}

/// Makes `encoder` the process's model for its binding's folder (a later
/// [`load_model`] of the folder answers with it).
pub(crate) fn remember(binding: &ModelBinding, encoder: Arc<Encoder>) {
    loaded().lock().unwrap_or_else(|p| p.into_inner()).insert(binding.path.clone(), encoder);
}

fn loaded() -> &'static Mutex<HashMap<PathBuf, Arc<Encoder>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Encoder>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

pub(crate) fn canonical(dir: &Path) -> Result<PathBuf> {
    dir.canonicalize().map_err(|e| Error::InvalidArgument(format!("model {}: {e}", dir.display())))
}

/// A new collection's dimension: `dim` given, or the model's (both given:
/// they must agree).
pub fn collection_dim(dim: Option<usize>, model: Option<&Encoder>) -> Result<usize> {
    match (dim, model) {
        (Some(d), Some(m)) if d != m.dim() => Err(Error::InvalidArgument(format!(
            "dim {d} differs from the model's output dimension {} ({})",
            m.dim(),
            m.identity().name
        ))),
        (Some(d), _) => Ok(d),
        (None, Some(m)) => Ok(m.dim()),
        (None, None) => Err(Error::InvalidArgument(
            "dim is required: give dim, or a model (whose output dimension the collection takes)".into(),
        )),
    }
}

/// Whether a document came without tokens (its text is to be encoded).
pub fn needs_tokens(d: &Document) -> bool {
    match &d.tokens {
        Tokens::F32 { data, .. } => data.is_empty(),
        Tokens::F16 { data, .. } => data.is_empty(),
    }
}

/// Whether a document has neither tokens nor text to encode.
pub(crate) fn unencodable(d: &Document) -> bool {
    needs_tokens(d) && d.text.as_deref().is_none_or(|t| t.trim().is_empty())
}

fn tokens_of(e: tessera_encoder::Encoded) -> Tokens {
    Tokens::F32 { dim: e.dim, data: e.vectors }
}

/// Encodes `texts` with `encoder` as queries or documents, as tokens.
pub fn encode_texts<S: AsRef<str> + Sync>(encoder: &Encoder, texts: &[S], kind: TextKindOf) -> Result<Vec<Tokens>> {
    Ok(encoder.encode(texts, kind).map_err(model_error)?.into_iter().map(tokens_of).collect())
}

/// What [`encode_missing`] did.
#[derive(Debug, Default)]
pub struct TokensFilled {
    /// Documents with neither tokens nor text: `(index, reason)`, left as they are.
    pub bad: Vec<(usize, String)>,
    /// Texts encoded, and of those, cut at the model's length.
    pub encoded: usize,
    pub truncated: usize,
}

/// Gives every document of `docs` that came without tokens the vectors of
/// its text by `encoder` (one batched call); one with neither is reported.
pub fn encode_missing(encoder: &Encoder, docs: &mut [Document], kind: TextKindOf) -> Result<TokensFilled> {
    let mut filled = TokensFilled::default();
    let mut todo = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        if unencodable(d) {
            filled.bad.push((i, "no \"tokens\" and no \"text\" to encode".into()));
        } else if needs_tokens(d) {
            todo.push(i);
        }
    }
    let texts: Vec<&str> = todo.iter().map(|&i| docs[i].text.as_deref().unwrap_or_default()).collect();
    let encoded = encoder.encode(&texts, kind).map_err(model_error)?;
    filled.encoded = todo.len();
    for (&i, e) in todo.iter().zip(encoded) {
        filled.truncated += usize::from(e.truncated);
        docs[i].tokens = tokens_of(e);
    }
    Ok(filled)
}
