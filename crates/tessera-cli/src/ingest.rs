//! `tessera ingest`: streams any input format into a collection.
//!
//! A reader thread parses and validates records (JSONL chunks in parallel)
//! into batches and hands them over a bounded channel, so at most a few
//! batches are in memory whatever the input size; the main thread upserts
//! each batch (one WAL append + fsync) and then records the number of input
//! records consumed in a checkpoint file, so an interrupted ingest can
//! `--resume` where its last acknowledged batch ended. Re-running from the
//! start is also safe: upserts are idempotent.
//!
//! A bad record (unparsable, wrong dim, NaN, missing tokens, …) is reported
//! with `file:line`; `--on-error skip` skips it, `abort` (the default) stops
//! before anything of its batch is written.

use crate::bulk::{ReadError, Record, RecordSource, Result, open_source};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};
use tessera::{CollectionConfig, Database, IndexConfig, IndexKind, Screening, TokenType};

/// What to do with a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Report it and go on without it.
    Skip,
    /// Stop; nothing of the batch holding it is written.
    Abort,
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Settings of a collection this ingest creates. A setting given
    /// (`Some`) must agree with an existing collection's; one left out
    /// (`None`) takes the default at creation and is not compared.
    pub index: Option<Option<IndexConfig>>,
    pub storage: Option<TokenType>,
    pub screening: Option<Screening>,
    pub keep: Option<tessera::Keep>,
    /// Tunable settings, given ones compared like the above.
    pub settings: tessera::Settings,
    pub on_error: OnError,
    /// Continue after the last batch an interrupted run acknowledged.
    pub resume: bool,
    /// Documents per write batch (cut earlier at 16 MiB of tokens).
    pub batch_docs: usize,
    /// The model folder that encodes the text of JSONL records without
    /// tokens (a collection this ingest creates is bound to it); without
    /// one, an existing collection's bound model does.
    pub model: Option<PathBuf>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            index: None,
            storage: None,
            screening: None,
            keep: None,
            settings: tessera::Settings::default(),
            on_error: OnError::Abort,
            resume: false,
            batch_docs: 512,
            model: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    /// Documents written by this run.
    pub docs: usize,
    pub tokens: usize,
    /// Bad records skipped (`--on-error skip`).
    pub skipped: usize,
    /// Records passed over because an earlier run had written them (`--resume`).
    pub resumed_after: usize,
    pub elapsed: Duration,
    /// Where the collection's sealing time went during the run.
    pub build: tessera::BuildTimes,
    /// Documents whose text was encoded (`--model`), and of those, cut at
    /// the model's document length.
    pub encoded: usize,
    pub truncated: usize,
}

const BATCH_BYTES: usize = 16 << 20;

/// One batch from the reader thread.
struct Batch {
    records: Vec<Record>,
    /// Bad records of this batch, in input order: `(file:line, reason)`.
    bad: Vec<(String, String)>,
    /// Input records consumed up to the end of this batch (this run's count).
    consumed: usize,
    fatal: Option<String>,
    /// Records whose text was encoded, and of those, truncated.
    encoded: usize,
    truncated: usize,
}

/// Encodes the texts of the records that came without tokens; a record
/// with neither becomes a bad record.
fn encode(model: &crate::text::Encoder, read: &mut Vec<Record>, b: &mut Batch) {
    let (ats, mut docs): (Vec<String>, Vec<tessera::Document>) =
        std::mem::take(read).into_iter().map(|r| (r.at, r.doc)).unzip();
    match tessera::encode_missing(model, &mut docs, tessera::TextKindOf::Document) {
        Ok(filled) => {
            let bad: std::collections::HashMap<usize, String> = filled.bad.into_iter().collect();
            b.encoded += filled.encoded;
            b.truncated += filled.truncated;
            for (i, (at, doc)) in ats.into_iter().zip(docs).enumerate() {
                match bad.get(&i) {
                    Some(reason) => b.bad.push((at, reason.clone())),
                    None => read.push(Record { doc, at }),
                }
            }
        }
        Err(e) => b.fatal = Some(format!("encoding the batch's texts: {e}")),
    }
}

fn token_values(r: &Record) -> usize {
    match &r.doc.tokens {
        tessera::Tokens::F32 { data, .. } => data.len(),
        tessera::Tokens::F16 { data, .. } => data.len(),
    }
}

/// Reads, encodes (texts without tokens, with a model), validates and
/// batches records on its own thread.
fn spawn_reader(
    mut src: Box<dyn RecordSource>,
    dim: usize,
    batch_docs: usize,
    model: Option<std::sync::Arc<crate::text::Encoder>>,
) -> Receiver<Batch> {
    let (tx, rx) = sync_channel::<Batch>(2);
    std::thread::spawn(move || {
        let mut consumed = 0;
        loop {
            let mut b = Batch { records: Vec::new(), bad: Vec::new(), consumed, fatal: None, encoded: 0, truncated: 0 };
            let mut read = Vec::new();
            let mut bytes = 0;
            let mut done = false;
            while read.len() < batch_docs && bytes < BATCH_BYTES {
                match src.next_record() {
                    Ok(None) => {
                        done = true;
                        break;
                    }
                    Ok(Some(r)) => {
                        consumed += 1;
                        bytes += token_values(&r) * 2 + r.doc.text.as_ref().map_or(0, |t| t.len() * 64);
                        read.push(r);
                    }
                    Err(ReadError::Bad { at, reason }) => {
                        consumed += 1;
                        b.bad.push((at, reason));
                    }
                    Err(ReadError::Fatal(e)) => {
                        b.fatal = Some(e.to_string());
                        done = true;
                        break;
                    }
                }
            }
            if let Some(model) = &model {
                encode(model, &mut read, &mut b);
            }
            for r in read {
                match r.doc.validate(dim) {
                    Ok(()) => b.records.push(r),
                    Err(e) => b.bad.push((r.at, e.to_string())),
                }
            }
            b.consumed = consumed;
            if tx.send(b).is_err() || done {
                return;
            }
        }
    });
    rx
}

/// A later record of an id replaces an earlier one (docs/BULK_FORMAT.md) —
/// also inside one batch, so that the result never depends on where batch
/// boundaries fall: keeps each id's last document, in input order.
fn last_of_each_id(docs: Vec<tessera::Document>) -> Vec<tessera::Document> {
    let mut last = std::collections::HashMap::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        last.insert(d.id.clone(), i);
    }
    if last.len() == docs.len() {
        return docs;
    }
    docs.into_iter().enumerate().filter(|(i, d)| last[&d.id] == *i).map(|(_, d)| d).collect()
}

/// The checkpoint of an ingest into one collection: which input, how far.
struct Checkpoint {
    path: PathBuf,
    source: String,
}

impl Checkpoint {
    fn new(db: &Database, collection: &str, source: String) -> Self {
        Self { path: db.path().join("ingest-checkpoints").join(format!("{collection}.json")), source }
    }

    /// Records an earlier run of the same input consumed, if any.
    fn load(&self) -> Result<Option<usize>> {
        let Ok(text) = std::fs::read_to_string(&self.path) else { return Ok(None) };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: unreadable checkpoint ({e}); delete it", self.path.display()))?;
        if v["source"].as_str() != Some(&self.source) {
            return Err(format!(
                "{}: the checkpoint is for another input (or the input changed): {}; delete it or run without --resume",
                self.path.display(),
                v["source"]
            )
            .into());
        }
        Ok(v["records"].as_u64().map(|n| n as usize))
    }

    fn save(&self, records: usize) -> Result<()> {
        std::fs::create_dir_all(self.path.parent().expect("has a parent"))?;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::json!({ "source": self.source, "records": records }).to_string())?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Progress on a terminal (a bar with documents/s, tokens/s, ETA), plain
/// periodic lines otherwise.
pub(crate) enum Progress {
    Bar(ProgressBar),
    /// `what` names the command in each line.
    Lines {
        last: Instant,
        what: &'static str,
    },
}

impl Progress {
    pub(crate) fn new(total: Option<usize>, what: &'static str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { last: Instant::now(), what };
        }
        let bar = match total {
            Some(n) => ProgressBar::new(n as u64),
            None => ProgressBar::new_spinner(),
        };
        let template = if total.is_some() {
            "{elapsed_precise} [{wide_bar}] {pos}/{len} docs, {per_sec}, ETA {eta} {msg}"
        } else {
            "{spinner} {elapsed_precise} {pos} docs, {per_sec} {msg}"
        };
        bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
        Progress::Bar(bar)
    }

    /// Records done (and tokens: none when `tokens` is `None`).
    pub(crate) fn update(
        &mut self,
        records: usize,
        tokens: Option<usize>,
        total: Option<usize>,
        start: Instant,
        log: &mut dyn Write,
    ) {
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        match self {
            Progress::Bar(b) => {
                b.set_position(records as u64);
                if let Some(tokens) = tokens {
                    b.set_message(format!("{:.0} tokens/s", tokens as f64 / secs));
                }
            }
            Progress::Lines { last, what } if last.elapsed() >= Duration::from_secs(2) => {
                let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                let tokens = tokens.map(|t| format!(", {:.0} tokens/s", t as f64 / secs)).unwrap_or_default();
                let _ = writeln!(log, "{what}: {records}{of} records, {:.0} docs/s{tokens}", records as f64 / secs);
                *last = Instant::now();
            }
            Progress::Lines { .. } => {}
        }
    }

    pub(crate) fn finish(&self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

impl IngestOptions {
    /// The configuration of a collection this ingest creates.
    pub fn config(&self, dim: usize) -> tessera::Result<CollectionConfig> {
        let d = CollectionConfig::new(dim);
        let c = CollectionConfig {
            index: self.index.clone().unwrap_or(d.index.clone()),
            storage: self.storage.unwrap_or(d.storage),
            screening: self.screening.unwrap_or(d.screening),
            keep: self.keep.unwrap_or(d.keep),
            ..d
        };
        self.settings.apply(&c, true)
    }
}

/// Refuses explicit settings that disagree with an existing collection.
fn check_settings(c: &tessera::Collection, opts: &IngestOptions) -> Result<()> {
    let have = c.config();
    let mismatch = [
        opts.index
            .as_ref()
            .map(|i| IndexKind::of(i.as_ref()))
            .filter(|i| *i != IndexKind::of(have.index.as_ref()))
            .map(|i| ("--index", i.name(), IndexKind::of(have.index.as_ref()).name())),
        opts.storage.filter(|s| *s != have.storage).map(|s| ("--storage", s.name(), have.storage.name())),
        opts.screening.filter(|s| *s != have.screening).map(|s| ("--screening", s.name(), have.screening.name())),
        opts.keep.filter(|k| *k != have.keep).map(|k| ("--keep", k.name(), have.keep.name())),
    ];
    if let Some((flag, want, have)) = mismatch.into_iter().flatten().next() {
        return Err(format!(
            "collection {:?} exists with {} {have}; {flag} {want} applies only when the collection is created",
            c.name(),
            &flag[2..]
        )
        .into());
    }
    // A setting of another index kind is refused as such, not as a difference.
    opts.settings.apply(&have, true)?;
    match opts.settings.differs(&have) {
        Some(what) => Err(format!(
            "collection {:?} exists with another {what}; --{} applies when the collection is created \
             (`tessera settings` changes the settings of an existing one)",
            c.name(),
            what.replace('_', "-")
        )
        .into()),
        None => Ok(()),
    }
}

/// Streams `input` (a bulk folder, a JSONL file, or `-` for JSONL on stdin)
/// into `collection`, creating it (with the input's dim and `opts.index`) if needed.
pub fn ingest(
    db: &Database,
    collection: &str,
    input: &Path,
    opts: &IngestOptions,
    log: &mut dyn Write,
) -> Result<IngestReport> {
    let start = Instant::now();
    let existing = db.collection(collection).ok();
    // The model of texts without tokens: --model, else the one an existing
    // collection is bound to (a bulk folder's tokens come from its file).
    let model = match (&opts.model, existing.as_ref().and_then(|c| c.model())) {
        (Some(_), _) if input.is_dir() => {
            return Err(
                "--model encodes the texts of JSONL records; a bulk folder's tokens come from its token file".into()
            );
        }
        (Some(dir), _) => Some(tessera::load_model(dir)?),
        // Records with tokens need no model: one that cannot be used is said,
        // and only records without tokens are refused then.
        (None, Some(_)) if !input.is_dir() => match existing.as_ref().map(|c| c.text_model()).transpose() {
            Ok(m) => m,
            Err(e) => {
                writeln!(log, "records without tokens cannot be encoded: {e}")?;
                None
            }
        },
        (None, _) => None,
    };
    let mut src = open_source(input, model.is_some())?;
    let dim = match (src.dim(), &existing, &model) {
        (Some(d), _, _) => d,
        (None, Some(c), _) => c.dim(),
        (None, None, Some(m)) => m.dim(),
        (None, None, None) => return Err(format!(
                "{}: no valid record to learn the token dim from (a record needs \"tokens\", or give --model DIR to encode its \"text\")",
                input.display()
            ).into()),
    };
    if let Some(m) = &model {
        // Refused before anything is created or read.
        crate::text::check_model(m, collection, dim, existing.as_deref())?;
    }
    let c = match existing {
        Some(c) => {
            check_settings(&c, opts)?;
            c
        }
        None => {
            let mut config = opts.config(dim)?;
            // A codebook sized for the input from the start: growing to it
            // retrains nothing (which would code residual rows again).
            if let (Some(IndexConfig::Centroids { centroids: p }), Some(n)) = (&mut config.index, src.total_tokens())
                && p.k == 0
                && opts.settings.expected_tokens.is_none()
            {
                p.expected_tokens = n.div_ceil(config.pool_factor.into());
            }
            let c = db.open_or_create_collection(collection, config)?;
            // A collection made from texts is bound to their model.
            if let Some(dir) = &opts.model
                && let Err(e) = c.bind_model(dir)
            {
                drop(c);
                let _ = db.drop_collection(collection);
                return Err(e.into());
            }
            c
        }
    };
    let checkpoint = Checkpoint::new(db, collection, src.fingerprint());
    let mut report = IngestReport::default();
    if let Some(n) = if opts.resume { checkpoint.load()? } else { None } {
        src.skip(n)?;
        report.resumed_after = n;
        writeln!(log, "resuming after {n} records acknowledged by an earlier run")?;
    }
    let total = src.total().map(|t| t.saturating_sub(report.resumed_after));
    let mut progress = Progress::new(total, "ingest");
    let rx = spawn_reader(src, c.dim(), opts.batch_docs.max(1), model);
    let mut consumed = 0;
    for batch in rx {
        if let Some(e) = batch.fatal {
            progress.finish();
            return Err(aborted(&e, &report, report.resumed_after + consumed).into());
        }
        report.encoded += batch.encoded;
        report.truncated += batch.truncated;
        if let Some((at, reason)) = batch.bad.first() {
            if opts.on_error == OnError::Abort {
                progress.finish();
                return Err(aborted(&format!("{at}: {reason}"), &report, report.resumed_after + consumed).into());
            }
            for (at, reason) in &batch.bad {
                writeln!(log, "skipped {at}: {reason}")?;
            }
            report.skipped += batch.bad.len();
        }
        if !batch.records.is_empty() {
            let docs = last_of_each_id(batch.records.into_iter().map(|r| r.doc).collect());
            c.upsert(&docs)?;
            report.docs += docs.len();
            report.tokens += docs
                .iter()
                .map(|d| match &d.tokens {
                    tessera::Tokens::F32 { data, .. } => data.len(),
                    tessera::Tokens::F16 { data, .. } => data.len(),
                })
                .sum::<usize>()
                / dim;
        }
        consumed = batch.consumed;
        checkpoint.save(report.resumed_after + consumed)?;
        progress.update(consumed, Some(report.tokens), total, start, log);
    }
    progress.finish();
    c.flush()?;
    checkpoint.remove();
    report.elapsed = start.elapsed();
    report.build = c.stats().build;
    Ok(report)
}

fn aborted(what: &str, r: &IngestReport, acknowledged: usize) -> String {
    format!(
        "{what}\ningest aborted: nothing of this record's batch was written; {} documents written by this run, \
         {acknowledged} input records acknowledged in all. Fix the record and re-run with --resume, or use --on-error skip.",
        r.docs
    )
}
