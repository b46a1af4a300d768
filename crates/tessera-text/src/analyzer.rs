//! Analyzers: the token chains that turn text into index terms, one per
//! [`Language`], shared by the indexes (registered under [`tokenizer_name`])
//! and by [`analyze`](crate::analyze) so memtable documents and queries see
//! exactly the tokens the index saw.
//!
//! - `English`: tantivy's `en_stem` chain — `SimpleTokenizer` (runs of
//!   alphanumeric characters) → `RemoveLongFilter(40 bytes)` → `LowerCaser` →
//!   snowball English `Stemmer`.
//! - `Plain`: the same without the stemmer.
//! - `Cjk`: [`CjkTokenizer`] → `RemoveLongFilter(40)` → `LowerCaser`. Runs of
//!   CJK characters (Han, Hiragana, Katakana, Hangul) become character
//!   **unigrams and bigrams** ("東京都" → 東, 東京, 京, 京都, 都), so text
//!   written without spaces is searchable by any substring of one or two
//!   characters; other alphanumeric runs stay whole words (no stemming).

use std::sync::OnceLock;

use tantivy::tokenizer::{
    Language as StemLanguage, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer, Token, TokenStream,
    Tokenizer,
};

use crate::Language;

/// Longest token kept, in bytes (tantivy's default chains use the same limit).
pub const MAX_TOKEN_BYTES: usize = 40;

/// Name under which the analyzer of `lang` is registered in an index's
/// tokenizer manager and recorded in its schema. Opening an index with a
/// different language is refused because these names differ.
pub(crate) fn tokenizer_name(lang: Language) -> &'static str {
    match lang {
        Language::English => "tessera_english",
        Language::Plain => "tessera_plain",
        Language::Cjk => "tessera_cjk",
    }
}

/// A fresh analyzer for `lang` (cheap: clones a cached prototype).
pub(crate) fn analyzer(lang: Language) -> TextAnalyzer {
    static PROTOS: [OnceLock<TextAnalyzer>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = match lang {
        Language::English => 0,
        Language::Plain => 1,
        Language::Cjk => 2,
    };
    PROTOS[slot].get_or_init(|| build_analyzer(lang)).clone()
}

fn build_analyzer(lang: Language) -> TextAnalyzer {
    match lang {
        Language::English => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .filter(Stemmer::new(StemLanguage::English))
            .build(),
        Language::Plain => TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .build(),
        Language::Cjk => TextAnalyzer::builder(CjkTokenizer)
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .build(),
    }
}

/// Runs `analyzer` over `text` and collects the token texts, in order.
pub(crate) fn tokens_with(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// True for characters written without spaces between words: CJK unified
/// ideographs (and extensions / compatibility forms), Hiragana, Katakana
/// (full and half width), Hangul syllables and jamo, CJK symbols' iteration
/// marks.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3005..=0x3007          // 々 〆 〇
        | 0x3040..=0x309F        // Hiragana
        | 0x30A0..=0x30FF        // Katakana
        | 0x31F0..=0x31FF        // Katakana phonetic extensions
        | 0x3400..=0x4DBF        // CJK extension A
        | 0x4E00..=0x9FFF        // CJK unified ideographs
        | 0xF900..=0xFAFF        // CJK compatibility ideographs
        | 0xFF66..=0xFF9F        // half-width Katakana
        | 0x1100..=0x11FF        // Hangul jamo
        | 0x3130..=0x318F        // Hangul compatibility jamo
        | 0xAC00..=0xD7AF        // Hangul syllables
        | 0x20000..=0x3FFFF      // CJK extensions B.. (planes 2 and 3)
    )
}

/// Splits text into alphanumeric runs; CJK runs are emitted as overlapping
/// character unigrams and bigrams, other runs as whole words.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CjkTokenizer;

/// The token stream of [`CjkTokenizer`]: tokens are computed up front (texts
/// are document-sized, and this keeps the n-gram logic plain).
#[derive(Debug)]
pub(crate) struct CjkTokenStream {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for CjkTokenizer {
    type TokenStream<'a> = CjkTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CjkTokenStream {
        CjkTokenStream { tokens: cjk_tokens(text), next: 0 }
    }
}

impl TokenStream for CjkTokenStream {
    fn advance(&mut self) -> bool {
        if self.next < self.tokens.len() {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

fn cjk_tokens(text: &str) -> Vec<Token> {
    fn push(text: &str, from: usize, to: usize, tokens: &mut Vec<Token>) {
        let position = tokens.len();
        tokens.push(Token {
            offset_from: from,
            offset_to: to,
            position,
            text: text[from..to].to_string(),
            position_length: 1,
        });
    }
    /// Emits the unigrams and bigrams of a CJK run given its characters'
    /// byte offsets and the run's end offset.
    fn flush_cjk(text: &str, run: &mut Vec<usize>, end: usize, tokens: &mut Vec<Token>) {
        for i in 0..run.len() {
            let next = run.get(i + 1).copied().unwrap_or(end);
            push(text, run[i], next, tokens);
            if i + 1 < run.len() {
                let after = run.get(i + 2).copied().unwrap_or(end);
                push(text, run[i], after, tokens);
            }
        }
        run.clear();
    }

    let mut tokens = Vec::new();
    let mut word_start: Option<usize> = None;
    let mut run: Vec<usize> = Vec::new();
    for (at, c) in text.char_indices() {
        let cjk = is_cjk(c);
        let word = !cjk && c.is_alphanumeric();
        if !word && let Some(start) = word_start.take() {
            push(text, start, at, &mut tokens);
        }
        if !cjk && !run.is_empty() {
            flush_cjk(text, &mut run, at, &mut tokens);
        }
        if cjk {
            run.push(at);
        } else if word {
            word_start.get_or_insert(at);
        }
    }
    if let Some(start) = word_start {
        push(text, start, text.len(), &mut tokens);
    }
    flush_cjk(text, &mut run, text.len(), &mut tokens);
    tokens
}
