//! Texts through the built-in encoder (`--model DIR`): `tessera encode`
//! (JSONL texts to a bulk folder), and the texts without tokens that
//! `tessera ingest` and `tessera search` encode on the way in.

use std::io::{BufRead, BufReader, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use tessera::f16;
pub use tessera_encoder::{Encoder, Kind};

use crate::bulk::Result;

/// Refuses `model` for collection `name` (of dimension `dim`, existing or
/// not) when its vectors have another dimension, or when the collection is
/// bound to another model (vectors of two models would be mixed).
pub fn check_model(model: &Encoder, name: &str, dim: usize, existing: Option<&tessera::Collection>) -> Result<()> {
    if model.dim() != dim {
        return Err(format!(
            "--model {} outputs {}-dimensional vectors but collection {name:?} holds {dim}-dimensional tokens",
            model.identity().name,
            model.dim(),
        )
        .into());
    }
    if let Some(bound) = existing.and_then(|c| c.model())
        && (bound.identity.checksum != model.identity().checksum
            || bound.identity.settings != model.identity().settings)
    {
        return Err(format!(
            "collection {name:?} is bound to the model at {} (checksum {}); --model {} (checksum {}) is another model",
            bound.path.display(),
            bound.identity.checksum,
            model.identity().name,
            model.identity().checksum
        )
        .into());
    }
    Ok(())
}

/// What `tessera encode` wrote.
#[derive(Debug, Default)]
pub struct EncodeReport {
    pub texts: usize,
    pub tokens: usize,
    pub truncated: usize,
    pub elapsed: Duration,
}

/// Texts encoded per call.
const CHUNK: usize = 1024;

/// Encodes the `text` of every record of a JSONL file (`-`: standard input)
/// into a bulk folder `out` (created; must not exist or be empty):
/// `docs.jsonl` or `queries.jsonl` (each record as given, without any
/// `tokens`), `tokens.npy` (f16) and `offsets.npy`. Tokens stream to disk,
/// so the corpus need not fit in memory.
pub fn encode_file(encoder: &Encoder, input: &Path, out: &Path, kind: Kind) -> Result<EncodeReport> {
    let start = Instant::now();
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        return Err(format!("{}: exists and is not empty (encode writes a new bulk folder)", out.display()).into());
    }
    std::fs::create_dir_all(out)?;
    let reader: Box<dyn BufRead> = if input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(std::fs::File::open(input).map_err(|e| format!("{}: {e}", input.display()))?))
    };
    let name = if kind == Kind::Query { "queries.jsonl" } else { "docs.jsonl" };
    let mut records = std::io::BufWriter::new(std::fs::File::create(out.join(name))?);
    let mut tokens = std::io::BufWriter::new(std::fs::File::create(out.join("tokens.npy"))?);
    tokens.write_all(&[0; NPY_HEADER])?;
    let mut offsets: Vec<u64> = vec![0];
    let mut report = EncodeReport::default();
    let mut chunk: Vec<(serde_json::Map<String, serde_json::Value>, String)> = Vec::with_capacity(CHUNK);
    let mut lines = reader.lines().enumerate();
    loop {
        let next = lines.next();
        let last = next.is_none();
        if let Some((n, line)) = next {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("{}:{}", input.display(), n + 1);
            let mut record: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&line).map_err(|e| format!("{at}: {e}"))?;
            record.remove("tokens");
            let text = match record.get("text") {
                Some(serde_json::Value::String(t)) if !t.trim().is_empty() => t.clone(),
                _ => return Err(format!("{at}: no \"text\" to encode (a non-empty string)").into()),
            };
            chunk.push((record, text));
            if chunk.len() < CHUNK {
                continue;
            }
        }
        if !chunk.is_empty() {
            let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
            for ((record, _), e) in chunk.iter().zip(encoder.encode(&texts, kind)?) {
                serde_json::to_writer(&mut records, record)?;
                records.write_all(b"\n")?;
                let halves: Vec<f16> = e.vectors.iter().map(|&v| f16::from_f32(v)).collect();
                tokens.write_all(bytemuck::cast_slice(&halves))?;
                report.tokens += e.len();
                report.truncated += usize::from(e.truncated);
                offsets.push(report.tokens as u64);
            }
            report.texts += chunk.len();
            chunk.clear();
        }
        if last {
            break;
        }
    }
    records.flush()?;
    let mut tokens = tokens.into_inner().map_err(|e| e.into_error())?;
    tokens.seek(std::io::SeekFrom::Start(0))?;
    tokens.write_all(&npy_header("<f2", &[report.tokens, encoder.dim()], NPY_HEADER))?;
    tokens.sync_all()?;
    crate::synth::write_npy(&out.join("offsets.npy"), "<u8", &[offsets.len()], bytemuck::cast_slice(&offsets))?;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// The header length of a streamed .npy file: room for any row count.
const NPY_HEADER: usize = 128;

/// A .npy (version 1) header for `shape`, padded with spaces to the first
/// multiple of 64 bytes that is at least `len` (`descr`: `<f2`, `<u8`, …).
pub fn npy_header(descr: &str, shape: &[usize], len: usize) -> Vec<u8> {
    let shape_s = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
    while 10 + dict.len() + 1 < len || !(10 + dict.len() + 1).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// `tessera bench encode`.
#[derive(clap::Args, Debug)]
pub struct EncodeBench {
    /// The model directory.
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// JSONL with a "text" per record, encoded as documents (all of them, in one call per round).
    #[arg(long)]
    pub docs: std::path::PathBuf,
    /// JSONL of query texts, each encoded alone (latency).
    #[arg(long)]
    pub queries: Option<std::path::PathBuf>,
    /// Documents to take from --docs (default: all).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Thread counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub threads: Vec<usize>,
}

fn jsonl_texts(path: &Path, limit: Option<usize>) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        out.push(v["text"].as_str().ok_or_else(|| format!("{}:{}: no \"text\"", path.display(), n + 1))?.to_string());
    }
    Ok(out)
}

/// One JSON line per thread count: documents encoded per second, tokens per
/// second, and (with queries) the p50/p99 latency of one query text.
pub fn bench(args: &EncodeBench) -> Result<Vec<serde_json::Value>> {
    let encoder = tessera::load_model(&args.model)?;
    let docs = jsonl_texts(&args.docs, args.limit)?;
    let queries = args.queries.as_deref().map(|q| jsonl_texts(q, None)).transpose()?;
    let mut lines = Vec::new();
    for &threads in &args.threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build()?;
        let (elapsed, tokens) = pool.install(|| -> Result<(f64, usize)> {
            let t = Instant::now();
            let out = encoder.encode(&docs, Kind::Document)?;
            Ok((t.elapsed().as_secs_f64(), out.iter().map(|e| e.len()).sum()))
        })?;
        let mut line = serde_json::json!({
            "bench": "encode", "model": encoder.identity().name, "threads": threads,
            "docs": docs.len(), "tokens": tokens,
            "docs_per_s": (docs.len() as f64 / elapsed).round(), "tokens_per_s": (tokens as f64 / elapsed).round(),
        });
        if let Some(queries) = &queries {
            let mut ms = pool.install(|| -> Result<Vec<f64>> {
                queries
                    .iter()
                    .map(|q| {
                        let t = Instant::now();
                        encoder.encode(&[q], Kind::Query)?;
                        Ok(t.elapsed().as_secs_f64() * 1e3)
                    })
                    .collect()
            })?;
            ms.sort_by(f64::total_cmp);
            let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
            line["queries"] = queries.len().into();
            line["query_p50_ms"] = ((at(0.5) * 1000.0).round() / 1000.0).into();
            line["query_p99_ms"] = ((at(0.99) * 1000.0).round() / 1000.0).into();
        }
        lines.push(line);
    }
    Ok(lines)
}

/// `tessera reindex`: re-encodes every document of `collection` with the
/// model in `model` into a new version of the collection, swapped in when
/// complete (`Database::reindex`); progress on standard error, the report on `out`.
pub fn reindex(db: &Path, collection: &str, model: &Path, out: &mut dyn Write, json: bool) -> Result<()> {
    let db = tessera::Database::open(db)?;
    let start = Instant::now();
    let progress: std::sync::Mutex<Option<crate::ingest::Progress>> = std::sync::Mutex::new(None);
    let tell = |p: tessera::ReindexProgress| {
        let mut bar = progress.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bar.get_or_insert_with(|| crate::ingest::Progress::new(Some(p.total), "reindex"));
        bar.update(p.done, None, Some(p.total), start, &mut std::io::stderr());
        Ok(())
    };
    let r = db.reindex(collection, model, &tell);
    if let Some(bar) = progress.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        bar.finish();
    }
    let r = r?;
    if json {
        let v = serde_json::json!({
            "collection": collection,
            "model": r.model,
            "documents": r.documents,
            "caught_up": r.caught_up,
            "truncated": r.truncated,
            "seconds": r.seconds,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "reindexed {collection:?}: {} documents encoded by {} ({}, checksum {}) in {:.2} s; {} written meanwhile and copied again; {} texts cut at the model's document length",
            r.documents,
            r.model.path.display(),
            r.model.identity.name,
            r.model.identity.checksum,
            r.seconds,
            r.caught_up,
            r.truncated,
        )?;
    }
    Ok(())
}
