//! A collection's bound model (see [`crate::model`]): binding one, loading
//! it on first use (checked against the bound identity), and encoding the
//! texts of upserts and queries with it.

use super::Collection;
use crate::doc::{Document, Tokens};
use crate::error::{Error, Result};
use crate::model::{
    Encoder, ModelBinding, TextKindOf, canonical, encode_missing, encode_texts, load_model, model_error, needs_tokens,
    remember, unencodable,
};
use std::path::Path;
use std::sync::Arc;

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
