//! PyLate's rules for turning a text into the token ids the transformer sees
//! and choosing which outputs are kept (see docs/ENCODER.md for the rules
//! and where in PyLate each comes from):
//!
//! 1. The text is stripped of surrounding whitespace (and lowercased when
//!    `sentence_bert_config.json` says `do_lower_case`). The tokenizer adds `[CLS]` … `[SEP]` and truncates to the length
//!    (`query_length` / `document_length`), minus one when a prefix token
//!    follows; the tokenizer file's own padding and truncation are ignored.
//! 2. A non-empty prefix (`query_prefix` / `document_prefix`) is one token
//!    inserted right after `[CLS]`, attended to.
//! 3. With `do_query_expansion`, a query is padded to `query_length` with
//!    `[MASK]`; the expansion tokens are attended to only with
//!    `attend_to_expansion_tokens`, and every query position gives a vector.
//! 4. A document keeps the vectors of its attended tokens whose ids are not
//!    in the skiplist (each skiplist word looked up as one token; a word
//!    that is no token stands for the unknown token, as in transformers).

use std::collections::HashSet;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};
use crate::layout::{Layout, Settings};

/// Whether a text is encoded as a query or as a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Query,
    Document,
}

/// A text as the transformer sees it.
pub(crate) struct Tokens {
    pub ids: Vec<u32>,
    /// 1 where other tokens attend to this one.
    pub attend: Vec<u8>,
    /// Whether this position's vector is output.
    pub keep: Vec<bool>,
    pub truncated: bool,
}

pub(crate) struct Rules {
    query: Tokenizer,
    document: Tokenizer,
    query_prefix: Option<u32>,
    document_prefix: Option<u32>,
    mask_id: u32,
    pub pad_id: u32,
    skiplist: HashSet<u32>,
    settings: Settings,
    lowercase: bool,
}

impl Rules {
    pub fn new(layout: &Layout) -> Result<Rules> {
        let path = layout.dir.join("tokenizer.json");
        let base = Tokenizer::from_file(&path).map_err(|e| Error::model(&path, format!("is not a tokenizer: {e}")))?;
        let settings = layout.settings.clone();
        let id = |token: &str| base.token_to_id(token);
        let prefix = |text: &str, key: &str| -> Result<Option<u32>> {
            if text.is_empty() {
                return Ok(None);
            }
            id(text).map(Some).ok_or_else(|| {
                Error::model(
                    &path,
                    format!("has no token {text:?}, the {key} of config_sentence_transformers.json (PyLate would add one with a random embedding)"),
                )
            })
        };
        let query_prefix = prefix(&settings.query_prefix, "query_prefix")?;
        let document_prefix = prefix(&settings.document_prefix, "document_prefix")?;
        let mask_id = match id("[MASK]").or_else(|| id("<mask>")) {
            Some(m) => m,
            None if settings.do_query_expansion => {
                return Err(Error::model(&path, "has no [MASK] token, which do_query_expansion pads queries with"));
            }
            None => 0,
        };
        let pad_id = base.get_padding().map(|p| p.pad_id).or_else(|| id("[PAD]")).or_else(|| id("<pad>")).unwrap_or(0);
        // As transformers' convert_tokens_to_ids: a word that is no token
        // stands for the unknown token, whose outputs are then dropped too.
        let unknown = id("[UNK]").or_else(|| id("<unk>"));
        let skiplist = settings.skiplist_words.iter().filter_map(|w| id(w).or(unknown)).collect();
        let cut = |length: usize, prefix: Option<u32>| -> Result<Tokenizer> {
            let mut t = base.clone();
            t.with_padding(None);
            t.with_truncation(Some(TruncationParams {
                max_length: length - usize::from(prefix.is_some()),
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::model(&path, format!("cannot truncate at {length}: {e}")))?;
            Ok(t)
        };
        Ok(Rules {
            query: cut(settings.query_length, query_prefix)?,
            document: cut(settings.document_length, document_prefix)?,
            query_prefix,
            document_prefix,
            mask_id,
            pad_id,
            skiplist,
            settings,
            lowercase: layout.lowercase,
        })
    }

    /// Applies the rules to every text.
    pub fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S], kind: Kind) -> Result<Vec<Tokens>> {
        let (tokenizer, prefix) = match kind {
            Kind::Query => (&self.query, self.query_prefix),
            Kind::Document => (&self.document, self.document_prefix),
        };
        // sentence-transformers strips each text (and lowercases it with do_lower_case).
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| if self.lowercase { t.as_ref().trim().to_lowercase() } else { t.as_ref().trim().to_string() })
            .collect();
        let encodings = tokenizer.encode_batch(inputs, true).map_err(|e| Error::Input(format!("tokenizer: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| {
                let mut ids = e.get_ids().to_vec();
                let mut attend: Vec<u8> = e.get_attention_mask().iter().map(|&a| a as u8).collect();
                if let Some(p) = prefix {
                    ids.insert(1.min(ids.len()), p);
                    attend.insert(1.min(attend.len()), 1);
                }
                let truncated = !e.get_overflowing().is_empty();
                match kind {
                    Kind::Query => self.expand(ids, attend, truncated),
                    Kind::Document => {
                        let keep =
                            ids.iter().zip(&attend).map(|(id, &a)| a == 1 && !self.skiplist.contains(id)).collect();
                        Tokens { ids, attend, keep, truncated }
                    }
                }
            })
            .collect())
    }

    fn expand(&self, mut ids: Vec<u32>, mut attend: Vec<u8>, truncated: bool) -> Tokens {
        if self.settings.do_query_expansion {
            let extra = self.settings.query_length.saturating_sub(ids.len());
            ids.extend(std::iter::repeat_n(self.mask_id, extra));
            attend.extend(std::iter::repeat_n(u8::from(self.settings.attend_to_expansion_tokens), extra));
            let keep = vec![true; ids.len()];
            Tokens { ids, attend, keep, truncated }
        } else {
            let keep = attend.iter().map(|&a| a == 1).collect();
            Tokens { ids, attend, keep, truncated }
        }
    }
}
