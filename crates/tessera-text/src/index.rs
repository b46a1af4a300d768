//! One immutable tantivy index per sealed segment: [`build`] writes it once
//! into an empty directory, [`TextIndex`] opens it read-only (verifying every
//! file's checksum) and answers statistics and BM25 top-n queries scored with
//! caller-supplied global statistics.
//!
//! Schema: `text` (indexed with the language's analyzer, term frequencies and
//! field norms, no positions, not stored) and `row` (u64 fast field: the
//! document's row in its segment). The analyzer's name is the schema's
//! tokenizer name, which is how [`TextIndex::open`] checks the language.

use std::collections::BinaryHeap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::query::{Bm25StatisticsProvider, BooleanQuery, EnableScoring, Occur, Query, TermQuery, Weight};
use tantivy::schema::{FAST, Field, FieldType, IndexRecordOption, Schema, TextFieldIndexing, TextOptions};
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, Searcher, SegmentReader, TantivyDocument, Term,
};

use crate::analyzer::{analyzer, tokenizer_name};
use crate::{Language, Stats, TextError, global_df, unique};

const TEXT_FIELD: &str = "text";
const ROW_FIELD: &str = "row";
/// Indexing memory of the single writer thread; beyond it tantivy flushes a
/// segment, and [`build`] merges all segments into one at the end.
const DEFAULT_MEMORY: usize = 64 << 20;

fn schema(lang: Language) -> (Schema, Field, Field) {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(tokenizer_name(lang))
        .set_index_option(IndexRecordOption::WithFreqs)
        .set_fieldnorms(true);
    let text = builder.add_text_field(TEXT_FIELD, TextOptions::default().set_indexing_options(indexing));
    let row = builder.add_u64_field(ROW_FIELD, FAST);
    (builder.build(), text, row)
}

/// Builds an index in the empty directory `dir` over `(row, text)` pairs.
///
/// Written by one indexing thread; if it flushed more than one tantivy
/// segment they are merged into one before returning. Durability: tantivy's
/// `MmapDirectory` fsyncs every segment file when it is finished and writes
/// `meta.json` atomically (temp file, fsync, rename, fsync of the directory);
/// after the writer has finished (merges done, obsolete files deleted, lock
/// released) we open `dir` and `fsync` it once more so every directory entry
/// change — including those deletions — is durable when this returns.
pub fn build(dir: &Path, lang: Language, docs: impl Iterator<Item = (u32, String)>) -> Result<(), TextError> {
    build_with_memory(dir, lang, docs, DEFAULT_MEMORY)
}

/// [`build`] with an explicit indexing memory budget in bytes (at least
/// 15 MB, tantivy's minimum; smaller values are raised to it).
pub fn build_with_memory(
    dir: &Path,
    lang: Language,
    docs: impl Iterator<Item = (u32, String)>,
    memory: usize,
) -> Result<(), TextError> {
    if std::fs::read_dir(dir)?.next().is_some() {
        return Err(TextError::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{}: text index directory is not empty", dir.display()),
        )));
    }
    let (schema, text, row) = schema(lang);
    let index = Index::create_in_dir(dir, schema)?;
    index.tokenizers().register(tokenizer_name(lang), analyzer(lang));
    let mut writer: IndexWriter = index.writer_with_num_threads(1, memory.max(15_000_000))?;
    writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
    for (r, t) in docs {
        let mut doc = TantivyDocument::new();
        doc.add_u64(row, u64::from(r));
        doc.add_text(text, &t);
        writer.add_document(doc)?;
    }
    writer.commit()?;
    let segments = index.searchable_segment_ids()?;
    if segments.len() > 1 {
        writer.merge(&segments).wait()?;
    }
    writer.garbage_collect_files().wait()?;
    writer.wait_merging_threads()?;
    sync_dir(dir)?;
    Ok(())
}

/// The files of an index that tantivy does not checksum itself: its
/// metadata (`meta.json`: segments, schema) and the list of files it manages.
pub const UNCHECKED_FILES: [&str; 2] = ["meta.json", ".managed.json"];

/// CRC-32 of [`UNCHECKED_FILES`] in order (a missing one counts as empty),
/// so that whoever built the index can record it and later detect a change
/// that tantivy would not.
pub fn meta_checksum(dir: &Path) -> std::io::Result<u32> {
    let mut h = crc32fast::Hasher::new();
    for name in UNCHECKED_FILES {
        match std::fs::read(dir.join(name)) {
            Ok(b) => {
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(&b);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => h.update(&u64::MAX.to_le_bytes()),
            Err(e) => return Err(e),
        }
    }
    Ok(h.finalize())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    // Directory entries cannot be fsynced portably off Unix; NTFS journals them.
    Ok(())
}

/// A read-only BM25 index over one sealed segment's texts. `Send + Sync`.
pub struct TextIndex {
    searcher: Searcher,
    text: Field,
    lang: Language,
    // Keeps the index (and its memory maps) alive with the searcher.
    _reader: IndexReader,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex").field("lang", &self.lang).field("docs", &self.searcher.num_docs()).finish()
    }
}

fn corrupted(dir: &Path, what: impl std::fmt::Display) -> TextError {
    TextError::Corrupted(format!("{}: {what}", dir.display()))
}

impl TextIndex {
    /// Opens the index in `dir`, built with `lang`. Every file of the index
    /// is checked (present, checksum of its footer matches), and the schema
    /// must be the one [`build`] writes for `lang`; anything else is
    /// [`TextError::Corrupted`]. Never panics (a panic inside tantivy while
    /// opening is caught and reported as corruption).
    pub fn open(dir: &Path, lang: Language) -> Result<Self, TextError> {
        if !dir.is_dir() {
            return Err(corrupted(dir, "missing text index directory"));
        }
        match catch_unwind(AssertUnwindSafe(|| Self::open_inner(dir, lang))) {
            Ok(result) => result,
            Err(panic) => Err(corrupted(dir, format!("tantivy panicked: {}", panic_message(&panic)))),
        }
    }

    fn open_inner(dir: &Path, lang: Language) -> Result<Self, TextError> {
        let directory = MmapDirectory::open(dir).map_err(|e| corrupted(dir, e))?;
        let index = Index::open(directory).map_err(|e| corrupted(dir, e))?;
        let schema = index.schema();
        let (Ok(text), Ok(row)) = (schema.get_field(TEXT_FIELD), schema.get_field(ROW_FIELD)) else {
            return Err(corrupted(dir, "schema lacks the text or row field"));
        };
        match schema.get_field_entry(text).field_type() {
            FieldType::Str(options) => {
                let name = options.get_indexing_options().map(|o| o.tokenizer());
                if name != Some(tokenizer_name(lang)) {
                    return Err(corrupted(
                        dir,
                        format!(
                            "index was built with tokenizer {name:?}, opened as {lang:?} ({})",
                            tokenizer_name(lang)
                        ),
                    ));
                }
            }
            other => return Err(corrupted(dir, format!("text field has type {other:?}"))),
        }
        if !schema.get_field_entry(row).is_fast() {
            return Err(corrupted(dir, "row field is not a fast field"));
        }
        let damaged = index.validate_checksum().map_err(|e| corrupted(dir, e))?;
        if !damaged.is_empty() {
            let mut names: Vec<_> = damaged.iter().map(|p| p.display().to_string()).collect();
            names.sort();
            return Err(corrupted(dir, format!("checksum mismatch in {}", names.join(", "))));
        }
        index.tokenizers().register(tokenizer_name(lang), analyzer(lang));
        // Opening the reader opens every segment component: a missing file
        // (which `validate_checksum` silently skips) fails here.
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e: tantivy::TantivyError| corrupted(dir, e))?;
        let searcher = reader.searcher();
        for segment in searcher.segment_readers() {
            segment.inverted_index(text).map_err(|e| corrupted(dir, e))?;
            segment.fast_fields().u64(ROW_FIELD).map_err(|e| corrupted(dir, e))?;
            segment.get_fieldnorms_reader(text).map_err(|e| corrupted(dir, e))?;
        }
        Ok(TextIndex { searcher, text, lang, _reader: reader })
    }

    /// Number of tantivy segments inside (1 for any non-empty index from
    /// [`build`], 0 for an empty one).
    pub fn num_segments(&self) -> usize {
        self.searcher.segment_readers().len()
    }

    /// The language the index was built (and opened) with.
    pub fn language(&self) -> Language {
        self.lang
    }

    /// Number of documents, total tokens, and the doc freq of each of `terms`
    /// (analyzed tokens) in this index. Infallible in practice (the files were
    /// verified at open and are memory-mapped); on an internal error returns
    /// what it could gather — use [`TextIndex::try_stats`] to see errors.
    pub fn stats(&self, terms: &[String]) -> Stats {
        self.try_stats(terms).unwrap_or_default()
    }

    /// [`TextIndex::stats`], reporting tantivy errors.
    pub fn try_stats(&self, terms: &[String]) -> Result<Stats, TextError> {
        guard(|| {
            let mut stats = Stats { docs: self.searcher.num_docs(), ..Stats::default() };
            for segment in self.searcher.segment_readers() {
                stats.tokens += segment.inverted_index(self.text)?.total_num_tokens();
            }
            for term in unique(terms) {
                let df = self.searcher.doc_freq(&Term::from_field_text(self.text, term))?;
                stats.doc_freq.insert(term.to_string(), df);
            }
            Ok(stats)
        })
    }

    /// BM25 top-`n` rows for the analyzed query `terms` (OR of the distinct
    /// terms), scored with the global statistics `global`, skipping rows for
    /// which `accept(row)` is false inside the collection, best first (ties:
    /// lower row first).
    ///
    /// `global` should be the sum of [`TextIndex::stats`] over all indexes
    /// plus the memtable's, for these terms. If `global.docs == 0` this
    /// index's own statistics are used; a term missing from `global.doc_freq`
    /// uses this index's own doc freq. Infallible in practice; on an internal
    /// error returns no hits — use [`TextIndex::try_search`] to see errors.
    pub fn search(
        &self,
        terms: &[String],
        n: usize,
        global: &Stats,
        accept: &(dyn Fn(u32) -> bool + Sync),
    ) -> Vec<(u32, f32)> {
        self.try_search(terms, n, global, accept).unwrap_or_default()
    }

    /// [`TextIndex::search`], reporting tantivy errors.
    pub fn try_search(
        &self,
        terms: &[String],
        n: usize,
        global: &Stats,
        accept: &(dyn Fn(u32) -> bool + Sync),
    ) -> Result<Vec<(u32, f32)>, TextError> {
        let terms = unique(terms);
        if n == 0 || terms.is_empty() {
            return Ok(Vec::new());
        }
        guard(|| {
            let clauses: Vec<(Occur, Box<dyn Query>)> = terms
                .iter()
                .map(|t| {
                    let term = Term::from_field_text(self.text, t);
                    let query: Box<dyn Query> = Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                    (Occur::Should, query)
                })
                .collect();
            let query = BooleanQuery::new(clauses);
            let provider = GlobalStats { global, searcher: &self.searcher };
            let statistics: &dyn Bm25StatisticsProvider = if global.docs == 0 { &self.searcher } else { &provider };
            let collector = TopRows { n, accept };
            self.searcher.search_with_executor(
                &query,
                &collector,
                &tantivy::Executor::single_thread(),
                EnableScoring::enabled_from_statistics_provider(statistics, &self.searcher),
            )
        })
    }
}

/// Runs `f`, turning tantivy errors and panics into [`TextError`].
fn guard<T>(f: impl FnOnce() -> tantivy::Result<T>) -> Result<T, TextError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(TextError::from),
        Err(panic) => Err(TextError::Corrupted(format!("tantivy panicked: {}", panic_message(&panic)))),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// The caller's global statistics, as tantivy's BM25 wants them.
struct GlobalStats<'a> {
    global: &'a Stats,
    searcher: &'a Searcher,
}

impl Bm25StatisticsProvider for GlobalStats<'_> {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.global.tokens)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.global.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let value = term.value();
        let text = value.as_str().unwrap_or_default();
        match self.global.doc_freq.get(text) {
            Some(_) => Ok(global_df(self.global, text, 0)),
            None => Ok(self.searcher.doc_freq(term)?.min(self.global.docs)),
        }
    }
}

/// A hit in the top-n heap, ordered so the heap's top is the *worst* hit
/// (lowest score; among equal scores, highest row).
#[derive(Clone, Copy, Debug)]
struct Hit {
    score: Score,
    row: u32,
}

impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Hit {}
impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.score.total_cmp(&self.score).then(self.row.cmp(&other.row))
    }
}

/// Top-`n` accepted rows by score. Filtering happens inside collection, in
/// [`Collector::collect_segment`] (overridden because tantivy's segment
/// collectors must be `'static` and `accept` is borrowed): each matching
/// document's row is read from the fast field and offered to `accept`
/// before it may enter the heap, and the pruning threshold handed back to
/// tantivy (block-max WAND) is the worst *accepted* score once `n` are held.
struct TopRows<'a> {
    n: usize,
    accept: &'a (dyn Fn(u32) -> bool + Sync),
}

/// Unused placeholder: collection goes through [`TopRows::collect_segment`].
struct NoSegmentCollector;

impl SegmentCollector for NoSegmentCollector {
    type Fruit = Vec<(u32, f32)>;
    fn collect(&mut self, _doc: DocId, _score: Score) {}
    fn harvest(self) -> Self::Fruit {
        Vec::new()
    }
}

impl Collector for TopRows<'_> {
    type Fruit = Vec<(u32, f32)>;
    type Child = NoSegmentCollector;

    fn for_segment(&self, _ord: u32, _segment: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(NoSegmentCollector)
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        _ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<Vec<(u32, f32)>> {
        let rows: Column<u64> = reader.fast_fields().u64(ROW_FIELD)?;
        let alive = reader.alive_bitset();
        let mut heap: BinaryHeap<Hit> = BinaryHeap::with_capacity(self.n + 1);
        weight.for_each_pruning(Score::MIN, reader, &mut |doc, score| {
            let worst = |heap: &BinaryHeap<Hit>| {
                if heap.len() >= self.n { heap.peek().map_or(Score::MIN, |h| h.score) } else { Score::MIN }
            };
            if alive.is_some_and(|a| !a.is_alive(doc)) {
                return worst(&heap);
            }
            let Some(row) = rows.first(doc).and_then(|r| u32::try_from(r).ok()) else {
                return worst(&heap);
            };
            if (self.accept)(row) {
                heap.push(Hit { score, row });
                if heap.len() > self.n {
                    heap.pop();
                }
            }
            worst(&heap)
        })?;
        Ok(heap.into_iter().map(|h| (h.row, h.score)).collect())
    }

    fn merge_fruits(&self, fruits: Vec<Vec<(u32, f32)>>) -> tantivy::Result<Vec<(u32, f32)>> {
        let mut all: Vec<(u32, f32)> = fruits.into_iter().flatten().collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(self.n);
        Ok(all)
    }
}

// Compile-time check of the promise in the docs.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TextIndex>();
};
