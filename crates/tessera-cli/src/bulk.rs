//! Reading documents and queries from the input formats (docs/BULK_FORMAT.md):
//!
//! - a **bulk folder**: a JSONL file of records plus the token rows of all
//!   documents in `tokens.npy` + `offsets.npy`, or in `tokens.safetensors`
//!   (tensors `tokens` and `offsets`); the token matrix is read through a
//!   memory map, so inputs larger than RAM stream;
//! - **JSONL with inline tokens** (`{"id", "text", "payload", "tokens": [[…], …]}`),
//!   from a file or standard input, parsed in parallel chunks.
//!
//! Every source yields [`Record`]s that carry their position (`file:line`); a
//! record that cannot be used is a [`ReadError::Bad`] (the loader may skip
//! it), a broken container is [`ReadError::Fatal`].

use memmap2::Mmap;
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use tessera::{Document, Tokens, f16};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(msg.into().into())
}

/// Why a record could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// This record is unusable (`at` = `file:line`); the others may be fine.
    Bad { at: String, reason: String },
    /// The input itself is broken or unreadable.
    Fatal(Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Bad { at, reason } => write!(f, "{at}: {reason}"),
            ReadError::Fatal(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<Error> for ReadError {
    fn from(e: Error) -> Self {
        ReadError::Fatal(e)
    }
}

fn bad(at: &str, reason: impl Into<String>) -> ReadError {
    ReadError::Bad { at: at.into(), reason: reason.into() }
}

/// A document and where it came from.
#[derive(Debug)]
pub struct Record {
    pub doc: Document,
    /// `file:line`.
    pub at: String,
}

/// Anything documents can be read from.
pub trait RecordSource: Send {
    /// Token dim, when the source knows it before reading records.
    fn dim(&self) -> Option<usize>;
    /// Number of records, when known in advance.
    fn total(&self) -> Option<usize>;
    /// Number of tokens of all records, when known in advance.
    fn total_tokens(&self) -> Option<u64> {
        None
    }
    /// The next record; `Ok(None)` after the last.
    fn next_record(&mut self) -> std::result::Result<Option<Record>, ReadError>;
    /// Skips `n` records without parsing them (resuming an interrupted ingest).
    fn skip(&mut self, n: usize) -> Result<()>;
    /// Identifies the input (files, sizes, modification times), for checkpoints.
    fn fingerprint(&self) -> String;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
    F16,
    F32,
}

/// A memory-mapped, row-major 2-D float matrix (f16 or f32) inside a file.
pub struct TokenMatrix {
    mmap: Mmap,
    data_at: usize,
    pub rows: usize,
    pub cols: usize,
    dtype: Dtype,
}

fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: input files are only read; if another process truncated one
    // while we read it, the access could fault, which is why inputs must not
    // be modified during an ingest (stated in docs/BULK_FORMAT.md).
    Ok(unsafe { Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?)
}

fn npy_header(path: &Path, bytes: &[u8]) -> Result<(npyz::NpyHeader, usize)> {
    let mut rest = bytes;
    let h = npyz::NpyHeader::from_reader(&mut rest)
        .map_err(|e| format!("{}: not a valid .npy file: {e}", path.display()))?;
    if h.order() != npyz::Order::C {
        return err(format!("{}: Fortran-order arrays are not supported; save with C order", path.display()));
    }
    Ok((h, bytes.len() - rest.len()))
}

fn npy_descr(h: &npyz::NpyHeader) -> String {
    h.dtype().descr().trim_matches('\'').to_string()
}

impl TokenMatrix {
    fn checked(path: &Path, mmap: Mmap, data_at: usize, len: usize, shape: &[usize], dtype: Dtype) -> Result<Self> {
        let &[rows, cols] = shape else {
            return err(format!("{}: tokens must be a 2-D array, got shape {shape:?}", path.display()));
        };
        let width = if dtype == Dtype::F16 { 2 } else { 4 };
        if cols == 0 || Some(len) != rows.checked_mul(cols).and_then(|x| x.checked_mul(width)) {
            return err(format!(
                "{}: tokens data is {len} bytes, shape {rows}×{cols} needs {}",
                path.display(),
                rows * cols * width
            ));
        }
        Ok(Self { mmap, data_at, rows, cols, dtype })
    }

    /// A 2-D little-endian float16/float32 .npy file.
    pub fn open_npy(path: &Path) -> Result<Self> {
        let mmap = map(path)?;
        let (h, data_at) = npy_header(path, &mmap)?;
        let dtype = match npy_descr(&h).as_str() {
            "<f2" => Dtype::F16,
            "<f4" => Dtype::F32,
            d => {
                return err(format!("{}: dtype {d} unsupported; use little-endian float16 or float32", path.display()));
            }
        };
        let shape: Vec<usize> = h.shape().iter().map(|&x| x as usize).collect();
        let len = mmap.len() - data_at;
        Self::checked(path, mmap, data_at, len, &shape, dtype)
    }

    /// Tensors `tokens` (2-D F16/F32) and `offsets` (1-D I64/U64) of a safetensors file.
    pub fn open_safetensors(path: &Path) -> Result<(Self, Vec<u64>)> {
        use safetensors::{Dtype as St, SafeTensors};
        let mmap = map(path)?;
        let (n, meta) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| format!("{}: not a valid safetensors file: {e}", path.display()))?;
        let base = 8 + n;
        let info = |name: &str| meta.info(name).ok_or_else(|| format!("{}: no tensor named {name:?}", path.display()));
        let t = info("tokens")?;
        let dtype = match t.dtype {
            St::F16 => Dtype::F16,
            St::F32 => Dtype::F32,
            d => return err(format!("{}: tokens dtype {d:?} unsupported; use F16 or F32", path.display())),
        };
        let (ta, tb) = t.data_offsets;
        let o = info("offsets")?;
        let (oa, ob) = o.data_offsets;
        let raw = mmap.get(base + oa..base + ob).ok_or_else(|| format!("{}: offsets out of bounds", path.display()))?;
        let offsets = offsets_from_le(path, raw, o.dtype == St::I64, &o.shape, matches!(o.dtype, St::I64 | St::U64))?;
        let (shape, len) = (t.shape.clone(), tb - ta);
        if base + tb > mmap.len() {
            return err(format!("{}: tokens out of bounds", path.display()));
        }
        Ok((Self::checked(path, mmap, base + ta, len, &shape, dtype)?, offsets))
    }

    /// Rows `a..b` as a token tensor (copied: the engine takes ownership).
    pub fn tokens(&self, a: usize, b: usize) -> Tokens {
        let bytes = &self.mmap[self.data_at..];
        match self.dtype {
            Dtype::F16 => {
                let raw = &bytes[a * self.cols * 2..b * self.cols * 2];
                Tokens::F16 { data: bytemuck::pod_collect_to_vec::<u8, f16>(raw), dim: self.cols }
            }
            Dtype::F32 => {
                let raw = &bytes[a * self.cols * 4..b * self.cols * 4];
                Tokens::F32 { data: bytemuck::pod_collect_to_vec::<u8, f32>(raw), dim: self.cols }
            }
        }
    }
}

/// Decodes and checks an offsets array: 1-D, 8-byte integers, starting at 0, never decreasing.
fn offsets_from_le(path: &Path, raw: &[u8], signed: bool, shape: &[usize], eight_bytes: bool) -> Result<Vec<u64>> {
    if !eight_bytes || shape.len() != 1 || raw.len() != shape[0] * 8 || shape[0] == 0 {
        return err(format!("{}: offsets must be a non-empty 1-D int64 or uint64 array", path.display()));
    }
    let words = raw.chunks_exact(8).map(|c| <[u8; 8]>::try_from(c).expect("8 bytes"));
    let v: Vec<u64> = if signed {
        let v: Vec<i64> = words.map(i64::from_le_bytes).collect();
        if let Some(p) = v.iter().position(|&x| x < 0) {
            return err(format!("{}: negative offset at index {p}", path.display()));
        }
        v.into_iter().map(|x| x as u64).collect()
    } else {
        words.map(u64::from_le_bytes).collect()
    };
    if v[0] != 0 {
        return err(format!("{}: offsets must start at 0", path.display()));
    }
    if let Some(p) = v.windows(2).position(|w| w[1] < w[0]) {
        return err(format!("{}: offsets decrease at index {}", path.display(), p + 1));
    }
    Ok(v)
}

/// Reads a 1-D int64/uint64 offsets .npy file.
pub fn read_offsets(path: &Path) -> Result<Vec<u64>> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (h, at) = npy_header(path, &bytes)?;
    let shape: Vec<usize> = h.shape().iter().map(|&x| x as usize).collect();
    let descr = npy_descr(&h);
    offsets_from_le(path, &bytes[at..], descr == "<i8", &shape, descr == "<i8" || descr == "<u8")
}

#[derive(Deserialize)]
struct RawRecord {
    id: serde_json::Value,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    /// Inline tokens (JSONL input); absent in bulk folders.
    #[serde(default)]
    tokens: Option<Vec<Vec<f32>>>,
    /// Other top-level fields are kept as payload fields.
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// Parses one JSONL record; `tokens` is filled from the line (inline) or by the caller.
/// Where a record's tokens come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokensFrom {
    /// The bulk folder's token file (inline tokens refused).
    File,
    /// Inline `tokens`, required.
    Inline,
    /// Inline `tokens`, or none: the text is encoded later (`--model`).
    InlineOrText,
}

fn parse_record(line: &str, at: &str, from: TokensFrom) -> std::result::Result<(Document, bool), ReadError> {
    let r: RawRecord = serde_json::from_str(line).map_err(|e| bad(at, e.to_string()))?;
    let id = match r.id {
        serde_json::Value::String(s) => s,
        // An integer of up to 64 bits keeps its exact decimal text; any other
        // number was read as a float (1.2345678901234568e22), and distinct
        // ids would collide, so it is refused.
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        serde_json::Value::Number(n) => {
            return Err(bad(
                at,
                format!(
                    "numeric id {n} is not an integer within 64 bits, so its exact text is lost: give it as a string"
                ),
            ));
        }
        other => return Err(bad(at, format!("id must be a string or number, got {other}"))),
    };
    let payload = match (r.payload, r.extra.is_empty()) {
        (p, true) => p,
        (None, false) => Some(serde_json::Value::Object(r.extra)),
        (Some(serde_json::Value::Object(mut p)), false) => {
            for (k, v) in r.extra {
                if p.contains_key(&k) {
                    return Err(bad(at, format!("field {k:?} is both a top-level field and a payload field")));
                }
                p.insert(k, v);
            }
            Some(serde_json::Value::Object(p))
        }
        (Some(_), false) => return Err(bad(at, "payload must be an object when the record has other fields")),
    };
    let has_tokens = r.tokens.is_some();
    let tokens = match (r.tokens, from) {
        (Some(_), TokensFrom::File) => {
            return Err(bad(at, "inline \"tokens\" in a bulk folder: tokens come from the token file"));
        }
        (Some(rows), _) => Tokens::from_rows(&rows).map_err(|e| bad(at, format!("tokens: {e}")))?,
        (None, TokensFrom::Inline) => {
            return Err(bad(at, "missing \"tokens\" (a list of token rows; or give --model to encode the text)"));
        }
        (None, _) => Tokens::F32 { data: Vec::new(), dim: 0 },
    };
    Ok((Document { id, tokens, text: r.text, payload }, has_tokens))
}

/// The absolute path of a file and, if `with_size`, its length. Record files
/// are identified by path only, so that a bad line can be repaired before a resume.
fn file_fingerprint(path: &Path, with_size: bool) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
    match std::fs::metadata(path) {
        Ok(m) if with_size => format!("{} ({} bytes)", abs.display(), m.len()),
        _ => abs.display().to_string(),
    }
}

/// A bulk-format folder, read record by record.
pub struct BulkReader {
    jsonl: PathBuf,
    token_file: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line_no: usize,
    pub tokens: TokenMatrix,
    pub offsets: Vec<u64>,
}

impl BulkReader {
    /// Opens `dir` with records in `jsonl_name` (`docs.jsonl` or `queries.jsonl`)
    /// and tokens in `tokens.npy` + `offsets.npy` or in `tokens.safetensors`.
    pub fn open(dir: &Path, jsonl_name: &str) -> Result<Self> {
        let jsonl = dir.join(jsonl_name);
        let f = File::open(&jsonl).map_err(|e| format!("{}: {e}", jsonl.display()))?;
        let st = dir.join("tokens.safetensors");
        let (token_file, tokens, offsets) = if st.exists() {
            let (t, o) = TokenMatrix::open_safetensors(&st)?;
            (st, t, o)
        } else {
            let tf = dir.join("tokens.npy");
            let t = TokenMatrix::open_npy(&tf)?;
            (tf, t, read_offsets(&dir.join("offsets.npy"))?)
        };
        let last = *offsets.last().expect("non-empty");
        if last != tokens.rows as u64 {
            return err(format!(
                "{}: last offset {last} but the token matrix has {} rows",
                token_file.display(),
                tokens.rows
            ));
        }
        Ok(Self { jsonl, token_file, lines: BufReader::new(f).lines(), line_no: 0, tokens, offsets })
    }

    pub fn n_docs(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn dim(&self) -> usize {
        self.tokens.cols
    }

    /// The next record as a document; `None` after the last. Errors name file:line.
    pub fn next_doc(&mut self) -> Result<Option<Document>> {
        Ok(self.next_record()?.map(|r| r.doc))
    }

    fn next_line(&mut self) -> std::result::Result<Option<(String, String)>, ReadError> {
        let Some(line) = self.lines.next() else {
            if self.line_no != self.n_docs() {
                let (f, n, d) = (self.jsonl.display(), self.line_no, self.n_docs());
                return Err(ReadError::Fatal(
                    format!("{f}: {n} records but the offsets describe {d} documents").into(),
                ));
            }
            return Ok(None);
        };
        self.line_no += 1;
        let at = format!("{}:{}", self.jsonl.display(), self.line_no);
        let line = line.map_err(|e| ReadError::Fatal(format!("{at}: {e}").into()))?;
        if self.line_no > self.n_docs() {
            return Err(ReadError::Fatal(
                format!("{at}: more records than the offsets describe ({})", self.n_docs()).into(),
            ));
        }
        Ok(Some((line, at)))
    }
}

impl RecordSource for BulkReader {
    fn dim(&self) -> Option<usize> {
        Some(self.tokens.cols)
    }

    fn total(&self) -> Option<usize> {
        Some(self.n_docs())
    }

    fn total_tokens(&self) -> Option<u64> {
        self.offsets.last().copied()
    }

    fn next_record(&mut self) -> std::result::Result<Option<Record>, ReadError> {
        let Some((line, at)) = self.next_line()? else { return Ok(None) };
        let i = self.line_no - 1;
        let (mut doc, _) = parse_record(&line, &at, TokensFrom::File)?;
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        if a == b {
            return Err(bad(&at, format!("document {:?} has no tokens", doc.id)));
        }
        doc.tokens = self.tokens.tokens(a, b);
        Ok(Some(Record { doc, at }))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            if self.next_line().map_err(|e| e.to_string())?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn fingerprint(&self) -> String {
        format!("bulk {} {}", file_fingerprint(&self.jsonl, false), file_fingerprint(&self.token_file, true))
    }
}

/// Lines parsed per parallel chunk.
const JSONL_CHUNK: usize = 256;

/// JSONL records with inline tokens, from a file or standard input.
pub struct JsonlReader {
    name: String,
    fingerprint: String,
    lines: std::io::Lines<BufReader<Box<dyn Read + Send>>>,
    line_no: usize,
    ready: VecDeque<std::result::Result<Record, ReadError>>,
    dim: Option<usize>,
    from: TokensFrom,
}

impl JsonlReader {
    /// `path` = `-` reads standard input. With `texts`, a record may come
    /// without tokens (its text is encoded by the caller).
    pub fn open(path: &Path, texts: bool) -> Result<Self> {
        let (name, input, fingerprint): (String, Box<dyn Read + Send>, String) = if path.as_os_str() == "-" {
            ("<stdin>".into(), Box::new(std::io::stdin()), "stdin".into())
        } else {
            let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            (path.display().to_string(), Box::new(f), format!("jsonl {}", file_fingerprint(path, false)))
        };
        let lines = BufReader::with_capacity(1 << 20, input).lines();
        let from = if texts { TokensFrom::InlineOrText } else { TokensFrom::Inline };
        let mut r = Self { name, fingerprint, lines, line_no: 0, ready: VecDeque::new(), dim: None, from };
        r.fill()?;
        r.dim = r.ready.iter().find_map(|x| x.as_ref().ok()).map(|rec| rec.doc.tokens.dim()).filter(|&d| d > 0);
        Ok(r)
    }

    /// Reads and parses the next chunk of lines, in parallel.
    fn fill(&mut self) -> Result<()> {
        let mut chunk = Vec::with_capacity(JSONL_CHUNK);
        while chunk.len() < JSONL_CHUNK {
            let Some(line) = self.lines.next() else { break };
            self.line_no += 1;
            let at = format!("{}:{}", self.name, self.line_no);
            let line = line.map_err(|e| format!("{at}: {e}"))?;
            if !line.trim().is_empty() {
                chunk.push((line, at));
            }
        }
        let from = self.from;
        let parsed: Vec<_> = chunk
            .into_par_iter()
            .map(|(line, at)| parse_record(&line, &at, from).map(|(doc, _)| Record { doc, at }))
            .collect();
        self.ready.extend(parsed);
        Ok(())
    }
}

impl RecordSource for JsonlReader {
    fn dim(&self) -> Option<usize> {
        self.dim
    }

    fn total(&self) -> Option<usize> {
        None
    }

    fn next_record(&mut self) -> std::result::Result<Option<Record>, ReadError> {
        if self.ready.is_empty() {
            self.fill()?;
        }
        self.ready.pop_front().transpose()
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            match self.next_record() {
                Ok(None) => break,
                Ok(Some(_)) | Err(ReadError::Bad { .. }) => {}
                Err(ReadError::Fatal(e)) => return Err(e),
            }
        }
        Ok(())
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// Opens an ingest input: a bulk folder, a `.jsonl` file, or `-` (JSONL on
/// stdin); with `texts`, JSONL records may come without tokens.
pub fn open_source(path: &Path, texts: bool) -> Result<Box<dyn RecordSource>> {
    if path.is_dir() {
        Ok(Box::new(BulkReader::open(path, "docs.jsonl")?))
    } else if path.as_os_str() == "-" || path.is_file() {
        Ok(Box::new(JsonlReader::open(path, texts)?))
    } else {
        err(format!("{}: no such file or folder", path.display()))
    }
}
