//! The commands behind `tessera demo|ingest|search|info`.

use crate::bulk::{BulkReader, Result};
use crate::synth;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use tessera::{CollectionConfig, Database, Document, SearchParams};

/// Documents per write batch of the demo.
const BATCH_DOCS: usize = 512;

fn doc_values(d: &Document) -> usize {
    match &d.tokens {
        tessera::Tokens::F32 { data, .. } => data.len(),
        tessera::Tokens::F16 { data, .. } => data.len(),
    }
}

pub struct SearchReport {
    pub queries: usize,
    /// Queries per engine call (1: one by one).
    pub batch: usize,
    /// One per engine call.
    pub latencies: Vec<Duration>,
    /// How the queries were ranked, and how many candidates went to the exact stage.
    pub stage: String,
}

/// Queries `tessera search` sends to the engine at once unless told otherwise.
pub const DEFAULT_SEARCH_BATCH: usize = 32;

impl SearchReport {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
    }
}

/// A file created (truncated) when the first bytes are written to it, or
/// when it is flushed: a command refused before it writes leaves the file
/// as it was.
pub struct CreatedOnWrite {
    path: std::path::PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl CreatedOnWrite {
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_path_buf(), file: None }
    }

    fn file(&mut self) -> std::io::Result<&mut std::io::BufWriter<std::fs::File>> {
        if self.file.is_none() {
            let f = std::fs::File::create(&self.path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
            self.file = Some(std::io::BufWriter::new(f));
        }
        Ok(self.file.as_mut().expect("created above"))
    }
}

impl Write for CreatedOnWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file()?.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file()?.flush()
    }
}

/// Where `tessera search` takes its queries from.
pub enum Queries<'a> {
    /// A bulk-format query folder (queries.jsonl + tokens.npy + offsets.npy).
    Folder(&'a Path),
    /// The texts of a queries.jsonl (a folder without tokens.npy), encoded
    /// by the model as they are read.
    Texts(&'a Path, &'a crate::text::Encoder),
    /// One text, encoded by the model (its id is `q`).
    One(&'a str, &'a crate::text::Encoder),
}

enum QueryReader<'a> {
    Bulk(BulkReader),
    Texts(crate::bulk::JsonlReader, &'a crate::text::Encoder),
    One(Option<Document>),
}

impl<'a> Queries<'a> {
    fn open(&self) -> Result<QueryReader<'a>> {
        Ok(match *self {
            Queries::Folder(dir) => QueryReader::Bulk(BulkReader::open(dir, "queries.jsonl")?),
            Queries::Texts(dir, model) => {
                QueryReader::Texts(crate::bulk::JsonlReader::open(&dir.join("queries.jsonl"), true)?, model)
            }
            Queries::One(text, model) => {
                let mut q = vec![Document {
                    id: "q".into(),
                    tokens: tessera::Tokens::F32 { data: Vec::new(), dim: 0 },
                    text: Some(text.to_string()),
                    payload: None,
                }];
                encode_queries(model, &mut q)?;
                QueryReader::One(q.pop())
            }
        })
    }
}

/// Encodes the queries that have no tokens; a query with neither is refused.
fn encode_queries(model: &crate::text::Encoder, qs: &mut [Document]) -> Result<()> {
    let filled = tessera::encode_missing(model, qs, tessera::TextKindOf::Query)?;
    if let Some((i, reason)) = filled.bad.first() {
        return Err(format!("query {:?}: {reason}", qs[*i].id).into());
    }
    Ok(())
}

impl QueryReader<'_> {
    /// Up to `n` more queries (empty at the end).
    fn next_batch(&mut self, n: usize) -> Result<Vec<Document>> {
        let mut qs = Vec::with_capacity(n);
        match self {
            QueryReader::Bulk(r) => {
                while qs.len() < n {
                    match r.next_doc()? {
                        Some(q) => qs.push(q),
                        None => break,
                    }
                }
            }
            QueryReader::Texts(r, model) => {
                use crate::bulk::RecordSource;
                while qs.len() < n {
                    match r.next_record()? {
                        Some(rec) => qs.push(rec.doc),
                        None => break,
                    }
                }
                encode_queries(model, &mut qs)?;
            }
            QueryReader::One(q) => qs.extend(q.take()),
        }
        Ok(qs)
    }
}

/// Runs every query and writes a TREC run (`qid Q0 docid rank score
/// tessera`) to `run`. A tensor search sends the queries to the engine
/// `batch` at a time ([`tessera::Collection::execute_batch`]); text and
/// hybrid searches run one by one (each query has its own text).
pub fn search(
    db: &Database,
    collection: &str,
    queries: &Queries,
    mode: &SearchMode,
    batch: usize,
    run: &mut dyn Write,
) -> Result<SearchReport> {
    let c = db.collection(collection)?;
    if let Queries::Texts(_, m) | Queries::One(_, m) = queries {
        crate::text::check_model(m, collection, c.dim(), Some(&c))?;
    }
    let mut reader = queries.open()?;
    let batch = if matches!(mode, SearchMode::Options { bm25: false, .. }) { batch.max(1) } else { 1 };
    let mut latencies = Vec::new();
    let mut n = 0;
    loop {
        // Timed from reading: a text query's latency includes its encoding.
        let t = Instant::now();
        let qs = reader.next_batch(batch)?;
        if qs.is_empty() {
            break;
        }
        let results: Vec<std::result::Result<Vec<tessera::SearchHit>, tessera::Error>> = match mode {
            SearchMode::Options { options, bm25: false } if batch > 1 => {
                let tokens: Vec<tessera::Tokens> = qs.iter().map(|q| q.tokens.clone()).collect();
                let plan = options.plan(&c, true, &tessera::PlanDefaults::default())?;
                c.execute_batch(&plan, &tokens)?.into_iter().map(|r| r.map(hits_of)).collect()
            }
            _ => qs.iter().map(|q| mode.run(&c, q)).collect(),
        };
        latencies.push(t.elapsed());
        for (q, hits) in qs.iter().zip(results) {
            let hits = hits.map_err(|e| format!("query {:?}: {e}", q.id))?;
            for (rank, h) in hits.iter().enumerate() {
                writeln!(run, "{} Q0 {} {} {:.6} tessera", q.id, h.id, rank + 1, h.score)?;
            }
        }
        n += qs.len();
    }
    run.flush()?;
    Ok(SearchReport { queries: n, batch, latencies, stage: mode.describe(&c) })
}

/// The hits of a search, in order (a hybrid query's with their MaxSim or rank scores).
fn hits_of(out: tessera::SearchResults) -> Vec<tessera::SearchHit> {
    match out {
        tessera::SearchResults::TwoStage(hits) | tessera::SearchResults::Exact(hits) => hits,
        tessera::SearchResults::Hybrid(hits) => hits.into_iter().map(|h| h.hit).collect(),
    }
}

/// How `tessera search` ranks.
#[derive(Debug, Clone)]
pub enum SearchMode {
    /// The engine's search with these options: two-stage or exact MaxSim of
    /// the query tokens or, with `bm25`, a hybrid query that adds BM25 of
    /// each query's text as a source (fused, scored by exact MaxSim, ordered
    /// by the rank).
    Options { options: tessera::SearchOptions, bm25: bool },
    /// BM25 over the query's text alone (BM25 scores).
    Text { k: usize, filter: Option<tessera::Filter> },
}

impl SearchMode {
    /// The options of query `q`'s search (with --bm25, its text).
    fn options_for(options: &tessera::SearchOptions, bm25: bool, q: Option<&Document>) -> tessera::SearchOptions {
        let mut o = options.clone();
        if bm25 {
            o.text = Some(q.and_then(|q| q.text.clone()).unwrap_or_default());
        }
        o
    }

    /// Refuses options that do not go together (on `c`), before any query runs.
    pub fn check(&self, c: &tessera::Collection) -> Result<()> {
        if let SearchMode::Options { options, bm25 } = self {
            Self::options_for(options, *bm25, None).plan(c, true, &tessera::PlanDefaults::default())?;
        }
        Ok(())
    }

    /// How this mode ranks on `c`: exact, BM25, or two-stage / hybrid with
    /// the candidates it hands to the exact MaxSim.
    pub fn describe(&self, c: &tessera::Collection) -> String {
        let staged = c.config().index.is_some() || c.config().screening != tessera::Screening::None;
        let (options, bm25) = match self {
            SearchMode::Text { .. } => return "BM25".into(),
            SearchMode::Options { options, bm25 } => (options, *bm25),
        };
        let Ok(plan) = Self::options_for(options, bm25, None).plan(c, true, &tessera::PlanDefaults::default()) else {
            return "refused".into(); // `check` refuses it before a search runs
        };
        if !plan.is_hybrid() {
            return match plan.candidates() {
                Some(n) if staged => format!("two-stage, {} candidates", n.max(plan.k())),
                _ => "exact".into(),
            };
        }
        let rank = plan.rank().cloned().unwrap_or_else(|| c.ranking().rank);
        let order = match &rank {
            tessera::Rank::MaxSim => "MaxSim".to_string(),
            tessera::Rank::Linear { norm, weights } => {
                let w: Vec<String> = weights.iter().map(|(s, w)| format!("{s} {w}")).collect();
                format!("linear {norm} ({})", w.join(", "))
            }
        };
        format!("hybrid, {} candidates per source, ordered by {order}", plan.candidates().unwrap_or_default())
    }

    pub fn run(
        &self,
        c: &tessera::Collection,
        q: &Document,
    ) -> std::result::Result<Vec<tessera::SearchHit>, tessera::Error> {
        match self {
            SearchMode::Options { options, bm25 } => {
                let plan =
                    Self::options_for(options, *bm25, Some(q)).plan(c, true, &tessera::PlanDefaults::default())?;
                c.execute(&plan, Some(&q.tokens)).map(hits_of)
            }
            SearchMode::Text { k, filter } => c.search_text(q.text.as_deref().unwrap_or(""), *k, filter.as_ref()),
        }
    }
}

/// Prints the hits of one query's TREC run lines: rank, id, score and the
/// start of the document's text.
pub fn print_hits(c: &tessera::Collection, run: &[u8], out: &mut dyn Write) -> Result<()> {
    for line in String::from_utf8_lossy(run).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (id, rank, score) = (f[2], f[3], f[4]);
        let text = c.get(id)?.and_then(|d| d.text).unwrap_or_default();
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut snippet: String = flat.chars().take(100).collect();
        if flat.chars().count() > 100 {
            snippet.push('…');
        }
        writeln!(out, "{rank:>3}  {score}  {id}  {snippet}")?;
    }
    Ok(())
}

/// Prints what `tessera backup` or `tessera restore` wrote.
pub fn backup_report(r: &tessera::BackupReport, what: &str, out: &mut dyn Write, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
        return Ok(());
    }
    writeln!(out, "{what} {} in {:.2} s (verified)", r.path.display(), r.seconds)?;
    for c in &r.collections {
        writeln!(
            out,
            "  {:<24} {:>10} documents  up to write batch {:<8} {} files ({} hard-linked), {:.1} MB",
            c.name,
            c.documents,
            c.seq,
            c.files,
            c.linked,
            c.bytes as f64 / 1e6
        )?;
    }
    Ok(())
}

/// Prints every collection's sizes.
pub fn info(db: &Database, out: &mut dyn Write, json: bool) -> Result<()> {
    let stats: Vec<_> = db
        .list_collections()
        .iter()
        .map(|n| db.collection(n).map(|c| c.stats()))
        .collect::<std::result::Result<_, _>>()?;
    if json {
        let v: Vec<_> = stats
            .iter()
            .map(|s| {
                // Stored tokens per token given (1: nothing pooled).
                let pooled_ratio = if s.given_tokens == 0 { 1.0 } else { s.tokens as f64 / s.given_tokens as f64 };
                // Every byte of the collection per live token (WAL, manifest, deletions, copies).
                let disk_bytes_per_token = if s.tokens == 0 { 0.0 } else { s.bytes_on_disk as f64 / s.tokens as f64 };
                serde_json::json!({
                    "name": s.name, "dim": s.dim, "documents": s.documents, "tokens": s.tokens,
                    "given_tokens": s.given_tokens, "pooled_ratio": pooled_ratio,
                    "segments": s.segments, "memtable_documents": s.memtable_documents,
                    "deleted_in_segments": s.deleted_in_segments, "bytes_on_disk": s.bytes_on_disk,
                    "storage": s.storage, "screening": s.screening, "keep": s.keep,
                    "bytes_per_token": s.bytes_per_token, "disk_bytes_per_token": disk_bytes_per_token,
                    "segment_bytes_per_token": s.segment_bytes_per_token, "kept_bytes_per_token": s.kept_bytes_per_token,
                    "index": s.index,
                    "index_bytes_per_token": s.index_bytes_per_token, "centroids": s.centroids,
                    "ranking": s.ranking,
                })
            })
            .collect();
        let kernel = tessera::kernel_info();
        writeln!(out, "{}", serde_json::json!({ "path": db.path(), "kernel": kernel, "collections": v }))?;
        return Ok(());
    }
    writeln!(out, "database {}", db.path().display())?;
    let k = tessera::kernel_info();
    writeln!(
        out,
        "kernel   {} (chosen by {}; this CPU runs {}), int8 {}",
        k.kernel,
        k.chosen_by,
        k.available.join(", "),
        k.int8_kernel
    )?;
    writeln!(
        out,
        "{:<24} {:>5} {:>10} {:>12} {:>8} {:>14} {:>9} {:>9} {:>9} {:>18}",
        "collection",
        "dim",
        "documents",
        "tokens",
        "segments",
        "bytes on disk",
        "storage",
        "screening",
        "B/token",
        "index (B/token)"
    )?;
    for s in &stats {
        writeln!(
            out,
            "{:<24} {:>5} {:>10} {:>12} {:>8} {:>14} {:>9} {:>9} {:>9} {:>18}",
            s.name,
            s.dim,
            s.documents,
            s.tokens,
            s.segments,
            s.bytes_on_disk,
            s.storage,
            s.screening,
            s.bytes_per_token,
            format!("{} ({:.1})", s.index, s.index_bytes_per_token)
        )?;
    }
    if stats.is_empty() {
        writeln!(out, "(no collections)")?;
    }
    for s in stats.iter().filter(|s| s.ranking != tessera::Ranking::default()) {
        writeln!(out, "{}: hybrid queries ranked by {}", s.name, serde_json::to_string(&s.ranking)?)?;
    }
    Ok(())
}

/// Options of the demo.
pub struct DemoOptions {
    pub docs: usize,
    pub avg_tokens: usize,
    pub dim: usize,
    pub queries: usize,
    pub query_tokens: usize,
    pub k: usize,
    pub seed: u64,
    /// A model folder: the demo then also ingests texts and answers text queries.
    pub model: Option<std::path::PathBuf>,
}

/// Builds a collection from a generated corpus, searches it, prints the hits
/// and the time taken. Returns how many queries ranked their source first.
pub fn demo(db: &Database, o: &DemoOptions, out: &mut dyn Write) -> Result<usize> {
    let t = Instant::now();
    let corpus = synth::corpus(o.docs, o.avg_tokens, o.dim, o.queries, o.query_tokens, o.seed);
    let n_tokens: usize = corpus.docs.iter().map(|d| doc_values(d) / o.dim).sum();
    writeln!(
        out,
        "generated {} documents ({} tokens, dim {}) and {} queries in {:.2} s",
        o.docs,
        n_tokens,
        o.dim,
        o.queries,
        t.elapsed().as_secs_f64()
    )?;
    let c = db.create_collection("demo", CollectionConfig::new(o.dim))?;
    let t = Instant::now();
    for chunk in corpus.docs.chunks(BATCH_DOCS) {
        c.upsert(chunk)?;
    }
    c.flush()?;
    let secs = t.elapsed().as_secs_f64();
    writeln!(
        out,
        "ingested in {secs:.2} s: {:.0} docs/s, {:.0} tokens/s (WAL fsync per batch of {BATCH_DOCS}, then flushed to a segment)",
        o.docs as f64 / secs,
        n_tokens as f64 / secs
    )?;
    // Exact search (every document scored), then two-stage (coarse HNSW
    // candidates, exact MaxSim rerank), over the same queries.
    let mut first = 0;
    let (mut exact_lat, mut two_lat, mut overlap) = (Vec::new(), Vec::new(), 0usize);
    let two_stage = SearchParams::new(o.k);
    for (qi, (q, src)) in corpus.queries.iter().enumerate() {
        let t = Instant::now();
        let exact = c.search_with(q, &SearchParams::exact(o.k))?;
        exact_lat.push(t.elapsed());
        let t = Instant::now();
        let hits = c.search_with(q, &two_stage)?;
        two_lat.push(t.elapsed());
        overlap += hits.iter().filter(|h| exact.iter().any(|e| e.id == h.id)).count();
        let want = &corpus.docs[*src].id;
        first += (hits.first().map(|h| &h.id) == Some(want)) as usize;
        if qi < 3 {
            writeln!(out, "\nquery {qi} ({} tokens, made from {want}):", o.query_tokens)?;
            for (r, h) in hits.iter().take(5).enumerate() {
                writeln!(out, "  {}. {}  score {:.4}  {}", r + 1, h.id, h.score, h.text.as_deref().unwrap_or(""))?;
            }
        }
    }
    let n = corpus.queries.len();
    let ms = |l: &mut Vec<Duration>, p: usize| {
        l.sort();
        l[(l.len() - 1) * p / 100].as_secs_f64() * 1e3
    };
    writeln!(out)?;
    for (name, lat) in
        [("exact MaxSim over all documents", &mut exact_lat), ("two-stage (HNSW + exact rerank)", &mut two_lat)]
    {
        let qps = lat.len() as f64 / lat.iter().sum::<Duration>().as_secs_f64();
        let (p50, p99) = (ms(lat, 50), ms(lat, 99));
        writeln!(out, "{name:<33} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  {qps:>7.0} queries/s")?;
    }
    writeln!(
        out,
        "two-stage recall@{} against exact: {:.3} ({} candidates reranked of {} documents)",
        o.k,
        overlap as f64 / (n * o.k.min(o.docs)) as f64,
        two_stage.effective_candidates(tessera::IndexKind::of(c.config().index.as_ref()), o.docs),
        o.docs
    )?;
    writeln!(out, "source document ranked first for {first}/{n} queries")?;
    if let Some(model) = &o.model {
        demo_texts(db, model, o.k, out)?;
    }
    Ok(first)
}

/// Passages of the text part of the demo: what Tessera is, in its own words.
const DEMO_PASSAGES: &[&str] = &[
    "Late interaction keeps one embedding per token of a passage instead of one per passage.",
    "MaxSim scores a passage: for each query token, the best dot product over the passage's tokens, summed.",
    "Segments are immutable, checksummed files whose token matrix is read in place through memory mapping.",
    "Every write is appended to a write-ahead log and synced before it is acknowledged.",
    "A two-stage search finds candidates with an approximate index, then scores them exactly.",
    "BM25 full-text search can be fused with MaxSim in a hybrid query.",
    "The encoder turns text into token vectors with a BERT or ModernBERT model read from a local folder.",
    "A reindex re-encodes every stored text with a fine-tuned model and swaps the new version in atomically.",
    "Hard negatives mined from the ranking help fine-tune a retrieval model.",
    "The server answers HTTP and gRPC requests, with API keys for reading and writing.",
    "A backup is a consistent copy of the database taken while it keeps serving.",
    "Int8 storage keeps a scale per token and halves the bytes of f16.",
];

/// The text part of the demo (with a model folder): a collection bound to the
/// model, built from [`DEMO_PASSAGES`] as texts, and text queries answered.
fn demo_texts(db: &Database, model: &std::path::Path, k: usize, out: &mut dyn Write) -> Result<()> {
    let t = Instant::now();
    let encoder = tessera::load_model(model)?;
    let c = db.create_collection("demo_text", CollectionConfig::new(encoder.dim()))?;
    c.bind_model(model)?;
    let docs: Vec<Document> = DEMO_PASSAGES
        .iter()
        .enumerate()
        .map(|(i, p)| Document {
            id: format!("p{i}"),
            tokens: tessera::Tokens::F32 { dim: encoder.dim(), data: Vec::new() },
            text: Some(p.to_string()),
            payload: None,
        })
        .collect();
    c.upsert(&docs)?;
    writeln!(
        out,
        "
texts: collection demo_text bound to {} ({}, dim {}); {} passages encoded and written in {:.2} s",
        model.display(),
        encoder.identity().architecture,
        encoder.dim(),
        docs.len(),
        t.elapsed().as_secs_f64()
    )?;
    for q in ["how is a passage scored?", "what happens after fine-tuning the model?", "is a write durable?"] {
        let t = Instant::now();
        let mut opts = tessera::SearchOptions::new(k.min(3));
        opts.query_text = Some(q.into());
        let plan = opts.plan(&c, false, &tessera::PlanDefaults::default())?;
        let hits = match c.execute(&plan, None)? {
            tessera::SearchResults::Hybrid(h) => h.into_iter().map(|h| h.hit).collect(),
            tessera::SearchResults::TwoStage(h) | tessera::SearchResults::Exact(h) => h,
        };
        writeln!(
            out,
            "
text query {q:?} ({:.1} ms, encoding included):",
            t.elapsed().as_secs_f64() * 1e3
        )?;
        for (r, h) in hits.iter().enumerate() {
            writeln!(out, "  {}. {}  score {:.4}  {}", r + 1, h.id, h.score, h.text.as_deref().unwrap_or(""))?;
        }
    }
    Ok(())
}
