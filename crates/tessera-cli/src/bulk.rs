//! The bulk data format (docs/BULK_FORMAT.md): a folder with a JSONL file of
//! records, `tokens.npy` (2-D f16/f32, every document's token rows in order)
//! and `offsets.npy` (1-D int64/uint64, `n + 1` entries). The token matrix is
//! read through a memory map, so inputs larger than RAM stream.

use memmap2::Mmap;
use serde::Deserialize;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use tessera::{Document, Tokens, f16};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(msg.into().into())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
    F16,
    F32,
}

/// A memory-mapped 2-D float matrix in a .npy file.
pub struct NpyMatrix {
    mmap: Mmap,
    data_at: usize,
    pub rows: usize,
    pub cols: usize,
    dtype: Dtype,
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

impl NpyMatrix {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: input files are read-only for the duration of the command;
        // a concurrent writer could change the bytes we read, never memory safety
        // of the program beyond the mapped region, which we bound-check.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
        let (h, data_at) = npy_header(path, &mmap)?;
        let descr = h.dtype().descr().trim_matches('\'').to_string();
        let dtype = match descr.as_str() {
            "<f2" => Dtype::F16,
            "<f4" => Dtype::F32,
            d => {
                return err(format!("{}: dtype {d} unsupported; use little-endian float16 or float32", path.display()));
            }
        };
        let &[rows, cols] = h.shape() else {
            return err(format!("{}: expected a 2-D array, got shape {:?}", path.display(), h.shape()));
        };
        let (rows, cols) = (rows as usize, cols as usize);
        let width = if dtype == Dtype::F16 { 2 } else { 4 };
        if mmap.len() - data_at != rows * cols * width {
            return err(format!(
                "{}: data is {} bytes, shape {rows}×{cols} needs {}",
                path.display(),
                mmap.len() - data_at,
                rows * cols * width
            ));
        }
        Ok(Self { mmap, data_at, rows, cols, dtype })
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

/// Reads a 1-D int64/uint64 offsets array.
pub fn read_offsets(path: &Path) -> Result<Vec<u64>> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (h, at) = npy_header(path, &bytes)?;
    let &[n] = h.shape() else {
        return err(format!("{}: expected a 1-D array, got shape {:?}", path.display(), h.shape()));
    };
    let data = &bytes[at..];
    if data.len() != n as usize * 8 {
        return err(format!("{}: data size does not match shape", path.display()));
    }
    let words = data.chunks_exact(8).map(|c| <[u8; 8]>::try_from(c).expect("8 bytes"));
    let v: Vec<u64> = match h.dtype().descr().trim_matches('\'') {
        "<u8" => words.map(u64::from_le_bytes).collect(),
        "<i8" => {
            let v: Vec<i64> = words.map(i64::from_le_bytes).collect();
            if let Some(p) = v.iter().position(|&x| x < 0) {
                return err(format!("{}: negative offset at index {p}", path.display()));
            }
            v.into_iter().map(|x| x as u64).collect()
        }
        d => {
            return err(format!("{}: dtype {d} unsupported; use int64 or uint64", path.display()));
        }
    };
    if v.first() != Some(&0) {
        return err(format!("{}: offsets must start at 0", path.display()));
    }
    if let Some(p) = v.windows(2).position(|w| w[1] < w[0]) {
        return err(format!("{}: offsets decrease at index {}", path.display(), p + 1));
    }
    Ok(v)
}

#[derive(Deserialize)]
struct Record {
    id: serde_json::Value,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    /// Other top-level fields are kept as payload fields.
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// A bulk-format folder, read record by record.
pub struct BulkReader {
    jsonl: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    line_no: usize,
    pub tokens: NpyMatrix,
    pub offsets: Vec<u64>,
}

impl BulkReader {
    /// Opens `dir` with records in `jsonl_name` (`docs.jsonl` or `queries.jsonl`).
    pub fn open(dir: &Path, jsonl_name: &str) -> Result<Self> {
        let jsonl = dir.join(jsonl_name);
        let f = File::open(&jsonl).map_err(|e| format!("{}: {e}", jsonl.display()))?;
        let tokens = NpyMatrix::open(&dir.join("tokens.npy"))?;
        let offsets = read_offsets(&dir.join("offsets.npy"))?;
        if *offsets.last().expect("non-empty") != tokens.rows as u64 {
            return err(format!(
                "{}: last offset {} but tokens.npy has {} rows",
                dir.join("offsets.npy").display(),
                offsets.last().expect("non-empty"),
                tokens.rows
            ));
        }
        Ok(Self { jsonl, lines: BufReader::new(f).lines(), line_no: 0, tokens, offsets })
    }

    pub fn n_docs(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn dim(&self) -> usize {
        self.tokens.cols
    }

    /// The next record as a document; `None` after the last. Errors name file:line.
    pub fn next_doc(&mut self) -> Result<Option<Document>> {
        let Some(line) = self.lines.next() else {
            if self.line_no != self.n_docs() {
                return err(format!(
                    "{}: {} records but offsets.npy describes {} documents",
                    self.jsonl.display(),
                    self.line_no,
                    self.n_docs()
                ));
            }
            return Ok(None);
        };
        self.line_no += 1;
        let at = format!("{}:{}", self.jsonl.display(), self.line_no);
        let line = line.map_err(|e| format!("{at}: {e}"))?;
        let i = self.line_no - 1;
        if i >= self.n_docs() {
            return err(format!("{at}: more records than offsets.npy describes ({})", self.n_docs()));
        }
        let r: Record = serde_json::from_str(&line).map_err(|e| format!("{at}: {e}"))?;
        let id = match r.id {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => return err(format!("{at}: id must be a string or number, got {other}")),
        };
        let payload = match (r.payload, r.extra.is_empty()) {
            (p, true) => p,
            (None, false) => Some(serde_json::Value::Object(r.extra)),
            (Some(serde_json::Value::Object(mut p)), false) => {
                for (k, v) in r.extra {
                    if p.contains_key(&k) {
                        return err(format!("{at}: field {k:?} is both a top-level field and a payload field"));
                    }
                    p.insert(k, v);
                }
                Some(serde_json::Value::Object(p))
            }
            (Some(_), false) => {
                return err(format!("{at}: payload must be an object when the record has other fields"));
            }
        };
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        if a == b {
            return err(format!("{at}: document {id:?} has no tokens"));
        }
        Ok(Some(Document { id, tokens: self.tokens.tokens(a, b), text: r.text, payload }))
    }
}
