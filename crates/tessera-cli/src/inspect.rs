//! `tessera inspect`: dump the headers, counts and checksums of a
//! collection's files and verify every checksum, without opening the
//! database (no lock is taken, nothing is written).
//!
//! Each file is told apart by its name (`seg-*.tseg`, `del-*.tdel`,
//! `wal-*.log`, `hnsw-*.tidx`, `cbk-*.tcbk`, `ivf-*.tivf`, `MANIFEST`), else
//! by its magic. The reports come from `tessera_format` (`segment::inspect`,
//! `deletes::inspect`, `wal::inspect`, `envelope::inspect`) and, for index
//! files, from `tessera_index` (`HnswLayout::parse` plus the shared
//! section-table walk, `CodebookLayout::parse`). A segment's full-text
//! folder (`text-*`) is opened by `tessera_text` (tantivy's checksum of
//! every file) and its `meta.json` and `.managed.json` checked against the
//! checksum the manifest recorded. With `--db`, each collection is then
//! opened read-only as the engine opens it, so that `inspect` refuses what
//! opening refuses (a centroid index is checked against its segment there).
//! A torn WAL tail is damage, reported with what its bytes say of the batch
//! it held (the engine cuts it on open and keeps the bytes in a quarantine
//! file, `torn-<WAL id>-<offset>.log`, which is reported as damage too): the
//! database opens, but a batch is gone, so the summary lists it. Anything
//! else that fails is corruption and makes the command exit with 1. Beside a writer (a server
//! sealing and merging) a collection is inspected again while its manifest
//! changes under the pass, so that files replaced meanwhile are not called
//! missing or damaged: a healthy database is never reported corrupt.

use crate::bulk::Result;
use std::io::Write;
use std::path::{Path, PathBuf};
use tessera_format::inspect::{SectionReport, TableSpec, crc_with_field_zeroed, section_table, with_aligned};
use tessera_format::{FormatError, deletes, envelope, segment, wal};

/// The command line of `tessera inspect`.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["files", "db"])))]
pub struct InspectArgs {
    /// Files to inspect: segments, deletion vectors, WALs, HNSW indexes, codebooks, MANIFEST.
    pub files: Vec<PathBuf>,
    /// Inspect every file of every collection of this database (read only).
    #[arg(long, conflicts_with = "files")]
    pub db: Option<PathBuf>,
    /// Only this collection of --db.
    #[arg(long, requires = "db")]
    pub collection: Option<String>,
}

/// Magic of the manifest envelope (SPEC.md, "Manifest").
const MANIFEST_MAGIC: &[u8; 8] = b"TESSMAN\0";
/// The HNSW index file's header and section table (SPEC.md, "HNSW index file").
const HNSW_HEADER_LEN: usize = 384;
const HNSW_TABLE: TableSpec = TableSpec { table_at: 128, max_sections: 8 };
const HNSW_NAMES: [&str; 5] = ["VECTORS", "LEVELS", "LAYER0", "UPPER_OFFSETS", "UPPER_LINKS"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Segment,
    Deletes,
    Wal,
    /// `torn-*.log`: a WAL header and the bytes cut from that WAL's torn tail.
    Quarantine,
    Hnsw,
    Codebook,
    CentroidIndex,
    /// `keep-*.tkeep`: a residual segment's kept copy.
    Kept,
    Manifest,
}

fn kind_of(path: &Path, bytes: &[u8]) -> Option<Kind> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let by_name = [
        ("seg-", ".tseg", Kind::Segment),
        ("del-", ".tdel", Kind::Deletes),
        ("wal-", ".log", Kind::Wal),
        ("hnsw-", ".tidx", Kind::Hnsw),
        ("cbk-", ".tcbk", Kind::Codebook),
        ("ivf-", ".tivf", Kind::CentroidIndex),
        ("keep-", ".tkeep", Kind::Kept),
    ];
    if name == "MANIFEST" {
        return Some(Kind::Manifest);
    }
    if name.starts_with("torn-") && name.ends_with(".log") {
        return Some(Kind::Quarantine);
    }
    if let Some(&(_, _, k)) = by_name.iter().find(|(p, s, _)| name.starts_with(p) && name.ends_with(s)) {
        return Some(k);
    }
    match bytes.get(..8)? {
        m if m == segment::MAGIC => Some(Kind::Segment),
        m if m == deletes::MAGIC => Some(Kind::Deletes),
        m if m == wal::MAGIC => Some(Kind::Wal),
        m if m == tessera_index::hnsw::MAGIC => Some(Kind::Hnsw),
        m if m == tessera_index::centroids::codebook::MAGIC => Some(Kind::Codebook),
        m if m == tessera_index::centroids::ivf::MAGIC => Some(Kind::CentroidIndex),
        m if m == tessera_format::keep::MAGIC => Some(Kind::Kept),
        m if m == MANIFEST_MAGIC => Some(Kind::Manifest),
        _ => None,
    }
}

/// A file's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Ok,
    /// Opens, but data was lost: a torn WAL tail, cut or to be cut on open.
    Damaged(String),
    Corrupt(String),
}

fn ok_or_mismatch(stored: u32, computed: Option<u32>) -> String {
    match computed {
        Some(c) if c == stored => format!("stored {stored:#010x}  computed {c:#010x}  OK"),
        Some(c) => format!("stored {stored:#010x}  computed {c:#010x}  MISMATCH"),
        None => format!("stored {stored:#010x}  computed (bytes outside the file)  MISMATCH"),
    }
}

fn verdict_of<T>(r: &std::result::Result<T, FormatError>) -> Verdict {
    match r {
        Ok(_) => Verdict::Ok,
        Err(e) => Verdict::Corrupt(e.to_string()),
    }
}

fn print_sections(out: &mut dyn Write, sections: &[SectionReport], name: impl Fn(u32) -> &'static str) -> Result<()> {
    writeln!(out, "  {:>2} {:>4} {:<16} {:>12} {:>12}  checksum", "#", "kind", "section", "offset", "length")?;
    for s in sections {
        writeln!(
            out,
            "  {:>2} {:>4} {:<16} {:>12} {:>12}  {}",
            s.index,
            s.kind,
            name(s.kind),
            s.offset,
            s.len,
            ok_or_mismatch(s.stored_crc, s.computed_crc)
        )?;
    }
    Ok(())
}

fn segment_report(bytes: &[u8], out: &mut dyn Write) -> Result<Verdict> {
    let r = segment::inspect(bytes);
    match &r.header {
        None => writeln!(out, "  file is {} bytes, shorter than the {}-byte header", r.len, segment::HEADER_LEN)?,
        Some(h) => {
            writeln!(
                out,
                "  magic \"{}\"  version {}.{}  dim {}  documents {}  tokens {}  length {} (file has {})  sections {}",
                h.magic.escape_ascii(),
                h.major,
                h.minor,
                h.dim,
                h.n_docs,
                h.n_tokens,
                h.file_len,
                r.len,
                h.section_count
            )?;
            if h.major >= 2 {
                let name = |known: Option<&'static str>, id: u16| known.map_or(format!("unknown ({id})"), String::from);
                writeln!(
                    out,
                    "  token type {}  screening {}",
                    name(tessera_format::TokenType::from_id(h.token_type).map(|t| t.name()), h.token_type),
                    name(tessera_format::Screening::from_id(h.screening).map(|s| s.name()), h.screening)
                )?;
                if h.major >= 3 {
                    writeln!(out, "  rows coded with codebook {:08x}", h.codebook)?;
                }
            } else {
                writeln!(out, "  token type f16  screening none  (version 1)")?;
            }
            writeln!(out, "  header checksum  {}", ok_or_mismatch(h.stored_crc, Some(h.computed_crc)))?;
            print_sections(out, &r.sections, segment::section_name)?;
        }
    }
    Ok(verdict_of(&r.verdict))
}

fn envelope_lines(bytes: &[u8], out: &mut dyn Write) -> Result<()> {
    let Some(e) = envelope::inspect(bytes) else {
        writeln!(out, "  file is {} bytes, shorter than the {}-byte header", bytes.len(), envelope::HEADER_LEN)?;
        return Ok(());
    };
    writeln!(
        out,
        "  magic \"{}\"  version {}.{}  body length {} (file holds {})",
        e.magic.escape_ascii(),
        e.major,
        e.minor,
        e.body_len,
        e.actual_body_len
    )?;
    writeln!(out, "  header checksum  {}", ok_or_mismatch(e.header_crc_stored, Some(e.header_crc_computed)))?;
    writeln!(out, "  body checksum    {}", ok_or_mismatch(e.body_crc_stored, Some(e.body_crc_computed)))?;
    Ok(())
}

fn deletes_report(bytes: &[u8], out: &mut dyn Write) -> Result<Verdict> {
    envelope_lines(bytes, out)?;
    let r = deletes::inspect(bytes);
    if let Ok(dv) = &r.verdict {
        writeln!(out, "  segment {}  rows {}  deleted {}", dv.segment_id, dv.n_rows, dv.count())?;
    }
    Ok(verdict_of(&r.verdict))
}

/// File ids the manifest names, by kind prefix ("seg", "del", "hnsw",
/// "ivf", "cbk", "text", "wal").
type Named = Vec<(&'static str, u64)>;

fn manifest_report(bytes: &[u8], out: &mut dyn Write) -> Result<(Verdict, Option<Named>)> {
    envelope_lines(bytes, out)?;
    // 2.0: a manifest naming the WALs of a memtable being sealed (`older_wals`).
    let major = if bytes.get(8..10) == Some(&2u16.to_le_bytes()[..]) { 2 } else { 1 };
    let body = match envelope::decode(bytes, MANIFEST_MAGIC, major) {
        Ok((_, body)) => body,
        Err(e) => return Ok((Verdict::Corrupt(e.to_string()), None)),
    };
    let m: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Ok((Verdict::Corrupt(format!("body is not JSON: {e}")), None)),
    };
    let segs = m["segments"].as_array().cloned().unwrap_or_default();
    writeln!(
        out,
        "  collection {}  dim {}  storage {}  screening {}  generation {}  last_seq {}  wal {}  next_file_id {}  segments {}",
        m["name"],
        m["config"]["dim"],
        m["config"].get("storage").and_then(|v| v.as_str()).unwrap_or("f16"),
        m["config"].get("screening").and_then(|v| v.as_str()).unwrap_or("none"),
        m["generation"],
        m["last_seq"],
        m["wal"],
        m["next_file_id"],
        segs.len()
    )?;
    let older: Vec<u64> = m["older_wals"].as_array().into_iter().flatten().filter_map(|v| v.as_u64()).collect();
    if !older.is_empty() {
        writeln!(out, "    older WALs (a memtable being sealed; replayed before wal) {older:?}")?;
    }
    let mut named: Named = m["wal"].as_u64().map(|w| ("wal", w)).into_iter().collect();
    named.extend(older.iter().map(|&w| ("wal", w)));
    named.extend(m["codebook"].as_u64().map(|id| ("cbk", id)));
    let index = if m["config"]["index"].get("centroids").is_some() { "ivf" } else { "hnsw" };
    for s in &segs {
        writeln!(
            out,
            "    segment {}  documents {}  tokens {}  deletes {}  index {}  text {}",
            s["id"], s["n_docs"], s["n_tokens"], s["deletes"], s["index"], s["text"]
        )?;
        for (key, kind) in [
            ("id", "seg"),
            ("deletes", "del"),
            ("index", index),
            ("text", "text"),
            ("codebook", "cbk"),
            ("keep", "keep"),
        ] {
            named.extend(s[key].as_u64().map(|id| (kind, id)));
        }
    }
    named.sort();
    named.dedup();
    Ok((Verdict::Ok, Some(named)))
}

/// A WAL, or with `quarantine` the bytes the engine cut from one.
fn wal_report(bytes: &[u8], quarantine: bool, out: &mut dyn Write) -> Result<Verdict> {
    let r = wal::inspect(bytes);
    let Some(h) = &r.header else {
        writeln!(out, "  file is {} bytes, shorter than the {}-byte header", r.len, wal::HEADER_LEN)?;
        return Ok(verdict_of(&r.header_check));
    };
    writeln!(
        out,
        "  magic \"{}\"  version {}.{}  dim {}  wal id {}",
        h.magic.escape_ascii(),
        h.major,
        h.minor,
        h.dim,
        h.wal_id
    )?;
    writeln!(out, "  header checksum  {}", ok_or_mismatch(h.stored_crc, Some(h.computed_crc)))?;
    if r.header_check.is_err() {
        return Ok(verdict_of(&r.header_check));
    }
    let seqs = r.seqs.map_or("none".into(), |(a, b)| format!("{a}..={b}"));
    writeln!(
        out,
        "  frames {}  sequence numbers {seqs}  upserts {}  deletes {}  valid end {} of {} bytes",
        r.frames, r.upserts, r.deletes, r.valid_end, r.len
    )?;
    let tail = match &r.tail {
        wal::Tail::Clean => Verdict::Ok,
        wal::Tail::Torn { offset, reason } => {
            let cut = &bytes[*offset as usize..];
            let batch = wal::read_torn(cut, h.dim as usize);
            let after =
                r.seqs.map_or("the manifest's last sequence number".into(), |(_, last)| format!("sequence {last}"));
            Verdict::Damaged(if quarantine {
                format!("{} bytes cut from a WAL's torn tail when it was opened: {batch}", cut.len())
            } else {
                format!(
                    "torn tail at byte {offset} ({reason}), {} bytes: {batch}; the batch after {after} is cut on \
                     open and its bytes kept in a quarantine file",
                    cut.len()
                )
            })
        }
        wal::Tail::Corrupt { offset, reason } => Verdict::Corrupt(format!("at byte {offset}: {reason}")),
    };
    Ok(match (&r.batch_error, tail) {
        (_, Verdict::Corrupt(e)) => Verdict::Corrupt(e),
        (Some(e), _) => Verdict::Corrupt(e.to_string()),
        (None, t) => t,
    })
}

fn codebook_report(bytes: &[u8], out: &mut dyn Write) -> Result<Verdict> {
    let parsed = with_aligned(bytes, tessera_index::centroids::CodebookLayout::parse);
    if let Ok(l) = &parsed {
        writeln!(out, "  codebook {:08x}: centroids {}  dim {}  version 1.{}", l.crc, l.info.k, l.info.dim, l.minor)?;
        if l.bits > 0 {
            writeln!(out, "  residual tables: {} bits per dimension", l.bits)?;
        }
    }
    Ok(verdict_of(&parsed))
}

/// A segment's full-text folder: opened as the engine opens it (tantivy's
/// checksums, the schema of `language`), and its metadata files against
/// the checksum the manifest recorded (`text_crc`, when it has one).
fn text_report(
    dir: &Path,
    language: Option<tessera_text::Language>,
    crc: Option<u32>,
    out: &mut dyn Write,
) -> Result<Verdict> {
    let files = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    writeln!(out, "{} (full-text index, {files} files)", dir.display())?;
    let mut verdict = Verdict::Ok;
    match tessera_text::meta_checksum(dir) {
        Ok(got) => {
            let names = tessera_text::UNCHECKED_FILES.join(" and ");
            match crc {
                Some(want) => writeln!(out, "  checksum of {names}  {}", ok_or_mismatch(want, Some(got)))?,
                None => writeln!(out, "  checksum of {names}  {got:08x} (the manifest recorded none)")?,
            }
            if crc.is_some_and(|want| want != got) {
                verdict = Verdict::Corrupt(format!("checksum of {names} does not match the manifest"));
            }
        }
        Err(e) => verdict = Verdict::Corrupt(format!("cannot read: {e}")),
    }
    if let (Verdict::Ok, Some(lang)) = (&verdict, language) {
        match tessera_text::TextIndex::open(dir, lang) {
            Ok(ix) => writeln!(out, "  tantivy: every file's checksum OK, segments {}", ix.num_segments())?,
            Err(e) => verdict = Verdict::Corrupt(e.to_string()),
        }
    }
    print_verdict(&verdict, out)?;
    Ok(verdict)
}

fn print_verdict(v: &Verdict, out: &mut dyn Write) -> Result<()> {
    match v {
        Verdict::Ok => writeln!(out, "  verdict: OK")?,
        Verdict::Damaged(w) => writeln!(out, "  verdict: DAMAGED (opens; a batch is lost): {w}")?,
        Verdict::Corrupt(e) => writeln!(out, "  verdict: CORRUPT: {e}")?,
    }
    writeln!(out)?;
    Ok(())
}

fn le(bytes: &[u8], at: usize, n: usize) -> u64 {
    bytes[at..at + n].iter().rev().fold(0, |acc, &b| acc << 8 | b as u64)
}

fn hnsw_report(bytes: &[u8], out: &mut dyn Write) -> Result<Verdict> {
    if bytes.len() < HNSW_HEADER_LEN {
        writeln!(out, "  file is {} bytes, shorter than the {HNSW_HEADER_LEN}-byte header", bytes.len())?;
    } else {
        writeln!(
            out,
            "  magic \"{}\"  version {}.{}  dim {}  nodes {}  length {} (file has {})  sections {}",
            bytes[..8].escape_ascii(),
            le(bytes, 8, 2),
            le(bytes, 10, 2),
            le(bytes, 12, 4),
            le(bytes, 16, 8),
            le(bytes, 24, 8),
            bytes.len(),
            le(bytes, 52, 4)
        )?;
        let computed = crc_with_field_zeroed(bytes, HNSW_HEADER_LEN, 72);
        writeln!(out, "  header checksum  {}", ok_or_mismatch(le(bytes, 72, 4) as u32, computed))?;
        let sections = section_table(bytes, &HNSW_TABLE, le(bytes, 52, 4) as usize);
        let name = |k: u32| (k as usize).checked_sub(1).and_then(|i| HNSW_NAMES.get(i)).copied().unwrap_or("?");
        print_sections(out, &sections, name)?;
    }
    let parsed = with_aligned(bytes, tessera_index::HnswLayout::parse);
    if let Ok(l) = &parsed {
        writeln!(
            out,
            "  graph: nodes {}  dim {}  m {}  m0 {}  ef_construction {}  max level {}  (minor {})",
            l.len(),
            l.dim(),
            l.m,
            l.m0,
            l.ef_construction,
            l.max_level,
            l.minor
        )?;
    }
    Ok(verdict_of(&parsed))
}

/// Reads a file, through a memory map when possible (page-aligned, not copied).
fn read(path: &Path) -> std::io::Result<Bytes> {
    let f = std::fs::File::open(path)?;
    // SAFETY: the map is only read; a file truncated concurrently by another
    // process could fault, which inspecting a database in use accepts.
    match unsafe { memmap2::Mmap::map(&f) } {
        Ok(m) => Ok(Bytes::Map(m)),
        Err(_) => std::fs::read(path).map(Bytes::Heap),
    }
}

enum Bytes {
    Map(memmap2::Mmap),
    Heap(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Heap(v) => v,
        }
    }
}

/// Inspects one file; prints its report; returns its verdict and, for a
/// manifest, the files it names.
fn inspect_file(path: &Path, out: &mut dyn Write) -> Result<(Verdict, Option<Named>)> {
    let bytes = match read(path) {
        Ok(b) => b,
        Err(e) => {
            writeln!(out, "{}: cannot read: {e}", path.display())?;
            return Ok((Verdict::Corrupt(format!("cannot read: {e}")), None));
        }
    };
    let kind = kind_of(path, &bytes);
    let label = kind.map_or("unknown".into(), |k| format!("{k:?}").to_lowercase());
    writeln!(out, "{} ({label}, {} bytes)", path.display(), bytes.len())?;
    let (v, named) = match kind {
        Some(Kind::Segment) => (segment_report(&bytes, out)?, None),
        Some(Kind::Deletes) => (deletes_report(&bytes, out)?, None),
        Some(Kind::Wal) => (wal_report(&bytes, false, out)?, None),
        Some(Kind::Quarantine) => (wal_report(&bytes, true, out)?, None),
        Some(Kind::Hnsw) => (hnsw_report(&bytes, out)?, None),
        Some(Kind::Codebook) => (codebook_report(&bytes, out)?, None),
        Some(Kind::CentroidIndex) => {
            writeln!(out, "  a centroid index: checked against its segment when the collection is opened")?;
            (Verdict::Ok, None)
        }
        Some(Kind::Kept) => (kept_report(&bytes, out)?, None),
        Some(Kind::Manifest) => manifest_report(&bytes, out)?,
        None => (Verdict::Corrupt("not a Tessera file (unknown name and magic)".into()), None),
    };
    print_verdict(&v, out)?;
    Ok((v, named))
}

/// Tallies of a run.
#[derive(Default)]
struct Tally {
    files: usize,
    damaged: Vec<String>,
    corrupt: Vec<String>,
}

impl Tally {
    fn add(&mut self, path: &Path, v: &Verdict) {
        self.files += 1;
        match v {
            Verdict::Ok => {}
            Verdict::Damaged(_) => self.damaged.push(path.display().to_string()),
            Verdict::Corrupt(_) => self.corrupt.push(path.display().to_string()),
        }
    }
}

fn file_name_of(kind: &str, id: u64) -> String {
    match kind {
        "seg" => format!("seg-{id:016}.tseg"),
        "del" => format!("del-{id:016}.tdel"),
        "hnsw" => format!("hnsw-{id:016}.tidx"),
        "ivf" => format!("ivf-{id:016}.tivf"),
        "cbk" => format!("cbk-{id:016}.tcbk"),
        "keep" => format!("keep-{id:016}.tkeep"),
        "text" => format!("text-{id:016}"),
        _ => format!("wal-{id:016}.log"),
    }
}

/// Passes over a collection a writer keeps changing before inspect reports
/// what it saw (each pass is one manifest's files).
const COLLECTION_TRIES: usize = 8;

/// Inspects a collection folder as of one manifest: [`inspect_pass`], again
/// while the manifest changed under it — a writer beside inspect (a server
/// sealing and merging) replaces the manifest and then removes the files the
/// old one named, which a pass over the old one would call missing. The
/// report is that of the last pass; if the manifest never held still, it says so.
fn inspect_collection(dir: &Path, t: &mut Tally, out: &mut dyn Write) -> Result<()> {
    let manifest = dir.join("MANIFEST");
    for tries in 1..=COLLECTION_TRIES {
        let before = std::fs::read(&manifest).ok();
        let (mut report, mut tally) = (Vec::new(), Tally::default());
        inspect_pass(dir, &mut tally, &mut report)?;
        let held = std::fs::read(&manifest).ok() == before;
        if held || tries == COLLECTION_TRIES {
            if !held {
                writeln!(
                    out,
                    "{}: the manifest changed during each of {tries} passes; the last is reported",
                    dir.display()
                )?;
            }
            out.write_all(&report)?;
            t.files += tally.files;
            t.damaged.extend(tally.damaged);
            t.corrupt.extend(tally.corrupt);
            break;
        }
    }
    Ok(())
}

/// One pass over a collection folder: the manifest, then every file it names
/// (a missing one is corruption); files it does not name are listed as
/// leftovers of an interrupted flush (deleted on open) and not verified.
fn inspect_pass(dir: &Path, t: &mut Tally, out: &mut dyn Write) -> Result<()> {
    let manifest = dir.join("MANIFEST");
    let (v, named) = inspect_file(&manifest, out)?;
    t.add(&manifest, &v);
    // The full-text settings and checksums, when the manifest reads.
    let m: serde_json::Value = std::fs::read(&manifest)
        .ok()
        .and_then(|b| {
            envelope::decode(&b, MANIFEST_MAGIC, 1).ok().and_then(|(_, body)| serde_json::from_slice(body).ok())
        })
        .unwrap_or_default();
    let language: Option<tessera_text::Language> = serde_json::from_value(m["config"]["text"]["language"].clone()).ok();
    let text_crc = |id: u64| {
        m["segments"].as_array().into_iter().flatten().find(|s| s["text"].as_u64() == Some(id))?["text_crc"].as_u64()
    };
    let text_ids: Vec<u64> = named.iter().flatten().filter(|(k, _)| *k == "text").map(|(_, id)| *id).collect();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "MANIFEST")
        .collect();
    names.sort();
    let named: Vec<String> = named.unwrap_or_default().iter().map(|(k, id)| file_name_of(k, *id)).collect();
    for n in &named {
        let p = dir.join(n);
        if !names.contains(n) {
            writeln!(out, "{}: named by the manifest but missing\n  verdict: CORRUPT\n", p.display())?;
            t.add(&p, &Verdict::Corrupt("missing".into()));
        } else if let Some(&id) = text_ids.iter().find(|id| file_name_of("text", **id) == *n) {
            let v = text_report(&p, language, text_crc(id).map(|c| c as u32), out)?;
            t.add(&p, &v);
        } else {
            let (v, _) = inspect_file(&p, out)?;
            t.add(&p, &v);
        }
    }
    for s in m["segments"].as_array().into_iter().flatten() {
        let Some(seg) = s["id"].as_u64().map(|id| dir.join(file_name_of("seg", id))) else { continue };
        if let Some(cbk) = s["codebook"].as_u64()
            && let Some(v) = residual_report(&seg, &dir.join(file_name_of("cbk", cbk)), out)?
        {
            t.add(&seg, &v);
        }
        if let Some(keep) = s["keep"].as_u64().map(|id| dir.join(file_name_of("keep", id)))
            && let Some(v) = kept_rows_report(&seg, &keep, out)?
        {
            t.add(&keep, &v);
        }
    }
    for n in names.iter().filter(|n| !named.contains(n)) {
        let p = dir.join(n);
        if kind_of(&p, &[]) == Some(Kind::Quarantine) {
            let (v, _) = inspect_file(&p, out)?;
            t.add(&p, &v);
            continue;
        }
        writeln!(
            out,
            "{}: not named by the manifest (a leftover, deleted on open); not verified\n",
            dir.join(n).display()
        )?;
    }
    Ok(())
}

/// A kept copy on its own: header, table and the documents' checksums'
/// checksum (its rows are checked against its segment's documents with the
/// collection, [`residual_report`]).
fn kept_report(bytes: &[u8], out: &mut dyn Write) -> Result<Verdict> {
    let parsed = with_aligned(bytes, tessera_format::keep::KeepLayout::parse);
    if let Ok(l) = &parsed {
        writeln!(
            out,
            "  kept copy: {} rows  dim {}  documents {}  tokens {}",
            l.token_type, l.dim, l.n_docs, l.n_tokens
        )?;
    }
    Ok(verdict_of(&parsed))
}

/// A residual segment against the codebook its manifest entry names (what
/// the engine checks when it opens the collection): the header names that
/// codebook, which has residual tables of the rows' bits and a centroid for
/// every row's code. `None` for a segment that is not residual or a file
/// that does not parse (already reported).
fn residual_report(seg: &Path, cbk: &Path, out: &mut dyn Write) -> Result<Option<Verdict>> {
    let (Ok(sb), Ok(cb)) = (read(seg), read(cbk)) else { return Ok(None) };
    let Ok(Some((identity, t, codes))) = with_aligned(&sb, |b| {
        let l = segment::SegmentLayout::parse(b)?;
        let rb = l.token_type.row_bytes(l.dim);
        let codes: Vec<u16> = l.token_rows(b).chunks_exact(rb).map(|r| u16::from_le_bytes([r[0], r[1]])).collect();
        Ok::<_, FormatError>(l.codebook.map(|id| (id, l.token_type, codes)))
    }) else {
        return Ok(None);
    };
    let Ok((crc, bits, k)) =
        with_aligned(&cb, |b| tessera_index::centroids::CodebookLayout::parse(b).map(|l| (l.crc, l.bits, l.info.k)))
    else {
        return Ok(None);
    };
    let v = if crc != identity {
        Verdict::Corrupt(format!("rows are coded with codebook {identity:08x}; the manifest names {crc:08x}"))
    } else if bits != t.residual_bits() {
        Verdict::Corrupt(format!("its codebook has {bits}-bit residual tables; the rows are {}", t.name()))
    } else if let Some(i) = codes.iter().position(|&c| c as usize >= k) {
        Verdict::Corrupt(format!("token {i}'s centroid code {} is not in its codebook of {k}", codes[i]))
    } else {
        Verdict::Ok
    };
    writeln!(out, "{}: {} rows against {}", seg.display(), t.name(), cbk.display())?;
    writeln!(out, "  codebook identity, residual bits and {} centroid codes checked", codes.len())?;
    print_verdict(&v, out)?;
    Ok(Some(v))
}

/// A kept copy's rows, every document, against its segment's documents
/// (which a search verifies as it reads them). `None` when either file does
/// not parse (already reported).
fn kept_rows_report(seg: &Path, keep: &Path, out: &mut dyn Write) -> Result<Option<Verdict>> {
    let (Ok(sb), Ok(kb)) = (read(seg), read(keep)) else { return Ok(None) };
    let parsed =
        with_aligned(&sb, |b| segment::SegmentLayout::parse(b).map(|l| (l.doc_offsets(b).to_vec(), l.tokens_crc)));
    let Ok((offsets, tokens_crc)) = parsed else {
        return Ok(None);
    };
    let Ok(v) = with_aligned(&kb, |b| {
        let l = tessera_format::keep::KeepLayout::parse(b)?;
        if l.segment_crc != tokens_crc {
            return Ok(Verdict::Corrupt("the copy names another segment's rows".into()));
        }
        if !tessera_format::keep::offsets_match(&l, &offsets) {
            return Ok(Verdict::Corrupt("the copy does not follow its segment's documents".into()));
        }
        Ok::<_, FormatError>(
            l.verify_all(b, &offsets).map_or_else(|e| Verdict::Corrupt(e.to_string()), |_| Verdict::Ok),
        )
    }) else {
        return Ok(None);
    };
    writeln!(out, "{}: kept rows of {}", keep.display(), seg.display())?;
    writeln!(out, "  every document's rows against its checksum")?;
    print_verdict(&v, out)?;
    Ok(Some(v))
}

/// `tessera inspect`: prints every report and a summary; an error (exit code
/// 1) when anything failed verification.
pub fn run(a: &InspectArgs, out: &mut dyn Write) -> Result<()> {
    let mut t = Tally::default();
    if let Some(db) = &a.db {
        let root = db.join("collections");
        let mut cols: Vec<String> = match &a.collection {
            Some(c) => vec![c.clone()],
            None => std::fs::read_dir(&root)
                .map_err(|e| format!("{}: {e}", root.display()))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect(),
        };
        cols.sort();
        if cols.is_empty() {
            writeln!(out, "{}: no collections", db.display())?;
        }
        for c in &cols {
            let dir = root.join(c);
            if !dir.is_dir() {
                return Err(format!("{}: no such collection folder", dir.display()).into());
            }
            inspect_collection(&dir, &mut t, out)?;
        }
        // What opening refuses, inspect refuses: each collection opened
        // read-only (no lock, nothing written) as the engine opens it.
        let opened = tessera::Database::open_read_only(db);
        for c in &cols {
            let dir = root.join(c);
            writeln!(out, "{} (collection {c}, opened as the engine opens it, read-only)", dir.display())?;
            let v = match opened
                .as_ref()
                .map_err(|e| e.to_string())
                .and_then(|d| d.collection(c).map_err(|e| e.to_string()))
            {
                Ok(col) => {
                    writeln!(out, "  documents {}  segments {}", col.len(), col.stats().segments)?;
                    Verdict::Ok
                }
                Err(e) => Verdict::Corrupt(format!("the engine refuses to open it: {e}")),
            };
            print_verdict(&v, out)?;
            t.add(&dir, &v);
        }
    }
    for f in &a.files {
        let (v, _) = inspect_file(f, out)?;
        t.add(f, &v);
    }
    let damaged = match t.damaged.len() {
        0 => String::new(),
        n => format!("; {n} DAMAGED (the database opens, but a WAL batch was cut): {}", t.damaged.join(", ")),
    };
    if t.corrupt.is_empty() {
        writeln!(out, "{} file(s) inspected: all verified{damaged}", t.files)?;
        return Ok(());
    }
    writeln!(out, "{} file(s) inspected: {} CORRUPT: {}{damaged}", t.files, t.corrupt.len(), t.corrupt.join(", "))?;
    out.flush()?;
    Err(format!("{} of {} file(s) failed verification", t.corrupt.len(), t.files).into())
}
