//! The memtable: documents written since the last flush, searched exactly.
//! Snapshots share it through an `Arc`; the writer copies it on write
//! (`Arc::make_mut`), so readers never see a half-applied batch.

use crate::doc::MemDoc;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Default)]
pub(crate) struct MemTable {
    /// In arrival order; `None` where a document was deleted or replaced.
    docs: Vec<Option<Arc<MemDoc>>>,
    index: HashMap<Arc<str>, usize>,
    /// Stored token bytes (rows, scales, codes) of the live documents.
    token_bytes: usize,
    /// Text and payload bytes of the live documents.
    other_bytes: usize,
}

impl MemTable {
    pub fn get(&self, id: &str) -> Option<&Arc<MemDoc>> {
        self.index.get(id).and_then(|&i| self.docs[i].as_ref())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Inserts or replaces `doc`.
    pub fn upsert(&mut self, doc: MemDoc) {
        self.insert_shared(Arc::new(doc));
    }

    /// Inserts a document another memtable holds (sharing it), replacing any with its id.
    pub fn insert_shared(&mut self, doc: Arc<MemDoc>) {
        self.remove(&doc.id);
        self.token_bytes += doc.tokens.bytes();
        self.other_bytes += extra_bytes(&doc);
        self.index.insert(doc.id.as_str().into(), self.docs.len());
        self.docs.push(Some(doc));
    }

    /// Removes `id`; returns whether it was present.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(i) = self.index.remove(id) else {
            return false;
        };
        let old = self.docs[i].take().expect("indexed documents are present");
        self.token_bytes -= old.tokens.bytes();
        self.other_bytes -= extra_bytes(&old);
        true
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Tokens of the live documents.
    pub fn n_tokens(&self) -> usize {
        self.docs().map(|d| d.n_tokens).sum()
    }

    /// Tokens the live documents were given, before any pooling.
    pub fn given_tokens(&self) -> usize {
        self.docs().map(|d| d.given_tokens).sum()
    }

    /// Bytes held for the live documents: tokens, texts and payloads.
    pub fn bytes(&self) -> usize {
        self.token_bytes + self.other_bytes
    }

    /// Live documents in arrival order.
    pub fn docs(&self) -> impl Iterator<Item = &Arc<MemDoc>> {
        self.docs.iter().flatten()
    }

    /// Live documents, for parallel iteration.
    pub fn live(&self) -> Vec<&Arc<MemDoc>> {
        self.docs().collect()
    }
}

fn extra_bytes(d: &MemDoc) -> usize {
    d.text.as_ref().map_or(0, String::len) + d.payload.as_ref().map_or(0, String::len)
}
