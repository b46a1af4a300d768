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
//! caller binds it again ([`Collection::bind_model`]), because the stored
//! tokens were made by the old one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
pub use tessera_encoder::{Encoder, Identity as ModelIdentity, Kind as TextKindOf};

use crate::collection::Collection;
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
/// the old one. [`Collection::bind_model`] loads the folder afresh.
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

fn canonical(dir: &Path) -> Result<PathBuf> {
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
fn unencodable(d: &Document) -> bool {
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

impl Collection {
    /// The model this collection is bound to, if any.
    pub fn model(&self) -> Option<ModelBinding> {
        self.model.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Binds the collection to the model in `dir` (replacing any binding):
    /// its output dimension must be the collection's. Stored in the
    /// manifest; the tokens already stored are not re-encoded (that is a
    /// reindex).
    pub fn bind_model(&self, dir: &Path) -> Result<ModelBinding> {
        let (binding, encoder) = self.fresh_model(dir)?;
        remember(&binding, encoder);
        self.store_model(Some(binding.clone()))?;
        Ok(binding)
    }

    /// The model in `dir` loaded afresh (the files may have changed since
    /// the process loaded them: a fine-tuned model written over the old),
    /// with its binding; refused unless it outputs this collection's dim.
    pub(crate) fn fresh_model(&self, dir: &Path) -> Result<(ModelBinding, Arc<Encoder>)> {
        let path = canonical(dir)?;
        let encoder = Arc::new(Encoder::open(&path).map_err(model_error)?);
        if encoder.dim() != self.dim() {
            return Err(Error::InvalidArgument(format!(
                "model {} outputs {}-dimensional vectors; collection {:?} has dim {}",
                dir.display(),
                encoder.dim(),
                self.name(),
                self.dim()
            )));
        }
        Ok((ModelBinding { path, identity: encoder.identity().clone() }, encoder))
    }

    /// The binding, or the refusal of text by a collection without a model.
    pub(crate) fn bound_model(&self) -> Result<ModelBinding> {
        self.model().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "collection {:?} has no model, so it takes tokens, not text: bind one (create it with a model, or bind_model)",
                self.name()
            ))
        })
    }

    /// The bound model, loaded and checked against the bound identity (once
    /// per binding: the checked model is kept with the binding it was
    /// checked against, so a re-binding is never answered by the old one).
    pub fn text_model(&self) -> Result<Arc<Encoder>> {
        let binding = self.bound_model()?;
        if let Some((checked, e)) = self.text_encoder.read().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *checked == binding
        {
            return Ok(e.clone());
        }
        let encoder = load_model(&binding.path)?;
        let now = encoder.identity();
        let was = &binding.identity;
        if now.checksum != was.checksum
            || now.dim != was.dim
            || now.architecture != was.architecture
            || now.settings != was.settings
        {
            return Err(Error::InvalidArgument(format!(
                "the model at {} is not the one collection {:?} was bound to (checksum {} then, {} now): its stored tokens came from the old one; bind the new one explicitly (bind_model) to use it",
                binding.path.display(),
                self.name(),
                was.checksum,
                now.checksum
            )));
        }
        *self.text_encoder.write().unwrap_or_else(|p| p.into_inner()) = Some((binding, encoder.clone()));
        Ok(encoder)
    }

    /// Encodes `texts` with the bound model as queries or documents.
    pub fn encode_texts<S: AsRef<str> + Sync>(&self, texts: &[S], kind: TextKindOf) -> Result<Vec<Tokens>> {
        encode_texts(&*self.text_model()?, texts, kind)
    }

    /// [`rerank`](Collection::rerank) with the query as text, encoded by the bound model.
    pub fn rerank_text<S: AsRef<str>>(&self, text: &str, ids: &[S]) -> Result<crate::Reranked> {
        if text.trim().is_empty() {
            return Err(Error::InvalidArgument("the query text is empty".into()));
        }
        let query = self.encode_texts(&[text], TextKindOf::Query)?.pop().expect("one query");
        self.rerank(&query, ids)
    }

    /// The documents of `docs` that came without tokens get them from their
    /// text (one batched call); a document with neither is refused by id.
    /// Without a model, a document with text but no tokens is refused as
    /// such, and one with neither is left to the batch's checks (an empty
    /// tensor). The texts are encoded before the writer lock is taken: a
    /// batch encoded while the collection is re-bound keeps the vectors of
    /// the model bound when it started.
    pub(crate) fn fill_tokens<'a>(&self, docs: &'a [Document]) -> Result<std::borrow::Cow<'a, [Document]>> {
        if !docs.iter().any(needs_tokens)
            || (self.model().is_none() && docs.iter().all(|d| !needs_tokens(d) || unencodable(d)))
        {
            return Ok(std::borrow::Cow::Borrowed(docs));
        }
        if let Some(d) = docs.iter().find(|d| unencodable(d)) {
            return Err(Error::InvalidArgument(format!("document {:?} has no tokens and no text to encode", d.id)));
        }
        let encoder = self.text_model()?;
        let mut out = docs.to_vec();
        encode_missing(&encoder, &mut out, TextKindOf::Document)?;
        Ok(std::borrow::Cow::Owned(out))
    }
}
