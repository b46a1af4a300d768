//! Immutable segment files (`seg-NNNNNNNNNNNNNNNN.tseg`).
//!
//! A segment is one file: a 512-byte header, then its sections, each starting
//! at a 64-byte-aligned offset (zero padding between), in this order.
//! Version 2 names the token type and screening codes in the header and adds
//! two sections (SCALES, CODES); 2.1 adds GIVEN_TOKENS (what a pooled document
//! was given), which a 2.0 reader ignores; version 1 (f16 tokens, ten
//! sections) is still read. Version 3.0 is 2.1 for residual tokens (token
//! types 3 and 4), whose header names the codebook they are coded with;
//! f16 and int8 segments are still written as 2.1.
//!
//! Header (all little-endian):
//! ```text
//! offset size field
//!      0    8 magic "TESSSEG\0"
//!      8    2 major version (3 for residual tokens, else 2; 1 is read)
//!     10    2 minor version (3.0, 2.1; 2.0 is read)
//!     12    4 dim                    (1..=4096)
//!     16    8 n_docs
//!     24    8 n_tokens               (rows of the token matrix)
//!     32    8 file length            (bytes, header included)
//!     40    4 section count          (13 in version 2.1, 12 in 2.0, 10 in 1.0)
//!     44    4 header CRC-32          (of bytes 0..512 with this field zeroed)
//!     48    2 token type             (v2: 1 = f16, 2 = int8; v3: 3 = residual2, 4 = residual4;
//!                                     v1: reserved zero, tokens are f16)
//!     50    2 screening              (v2, v3: 0 = none, 1 = binary; v1: reserved zero)
//!     52    4 codebook               (v3: identity, CRC-32 of its CENTROIDS, of the codebook
//!                                     the tokens are coded with; earlier: reserved zero)
//!     56    8 reserved               (zero)
//!     64  448 section table: 14 entries × 32 bytes; entry i (i < count):
//!              +0 u64 offset, +8 u64 length, +16 u32 CRC-32 of the section's bytes,
//!              +20 u32 kind (= i + 1), +24 u64 reserved (zero); unused entries are zero.
//! ```
//! Sections (kind, content):
//! ```text
//! 1 TOKENS           n_tokens rows of the token type (f16: dim × f16; int8: dim × i8;
//!                    residual: u16 centroid code, then the buckets packed little-end first,
//!                    bits past dim zero), row-major
//! 2 DOC_OFFSETS      (n_docs + 1) u64: doc i = token rows [o[i], o[i+1]); o[0] = 0, strictly increasing, o[n] = n_tokens
//! 3 ID_OFFSETS       (n_docs + 1) u64 byte offsets into IDS; strictly increasing (ids are non-empty)
//! 4 IDS              UTF-8 external ids, concatenated
//! 5 TEXT_OFFSETS     (n_docs + 1) u64 byte offsets into TEXTS; non-decreasing
//! 6 TEXTS            UTF-8 texts, concatenated
//! 7 PAYLOAD_OFFSETS  (n_docs + 1) u64 byte offsets into PAYLOADS; non-decreasing
//! 8 PAYLOADS         JSON payloads (UTF-8), concatenated
//! 9 DOC_FLAGS        n_docs bytes: bit 0 = has text, bit 1 = has payload, other bits zero
//! 10 ID_ORDER        n_docs u32: document indices sorted by id (bytewise); ids are unique,
//!                    so the ids in this order are strictly increasing — lookup by binary search
//! 11 SCALES          (v2) int8: n_tokens f32 per-token scales (finite, ≥ 0); f16: empty
//! 12 CODES           (v2) binary: n_tokens × ⌈dim/64⌉ u64 sign codes (bits ≥ dim zero); none: empty
//! 13 GIVEN_TOKENS    (v2.1) n_docs u32: the tokens each document was given before pooling
//!                    (≥ its stored rows); empty when no document of the segment was pooled
//! ```

use crate::sections::{self, SectionEntry};
use crate::tokens::{Screening, TokenType};
use crate::{Result, corrupted, crc32};
use bytemuck::{Pod, Zeroable};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;

pub const MAGIC: &[u8; 8] = b"TESSSEG\0";
/// The newest major version this build reads (and writes for residual tokens).
pub const MAJOR: u16 = 3;
/// The version f16 and int8 segments are written as.
pub const MAJOR_PLAIN: u16 = 2;
/// The oldest major version this build reads.
pub const OLDEST_MAJOR: u16 = 1;
/// The minor version of [`MAJOR_PLAIN`] written.
pub const MINOR: u16 = 1;
pub const HEADER_LEN: usize = 512;
/// Alignment of every section's start.
pub use crate::sections::ALIGN;
pub const MAX_SECTIONS: usize = 14;
/// Sections of a version 2.1 or 3.0 segment (2.0 has 12).
pub const SECTION_COUNT: usize = 13;
/// Sections of a version 2.0 segment.
pub const SECTION_COUNT_V2_0: usize = 12;
/// Sections of a version 1 segment.
pub const SECTION_COUNT_V1: usize = 10;

pub const FLAG_TEXT: u8 = 1;
pub const FLAG_PAYLOAD: u8 = 2;

/// Section kinds, in file order (kind = index + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Section {
    Tokens = 0,
    DocOffsets,
    IdOffsets,
    Ids,
    TextOffsets,
    Texts,
    PayloadOffsets,
    Payloads,
    DocFlags,
    IdOrder,
    Scales,
    Codes,
    GivenTokens,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Header {
    magic: [u8; 8],
    major: u16,
    minor: u16,
    dim: u32,
    n_docs: u64,
    n_tokens: u64,
    file_len: u64,
    section_count: u32,
    header_crc: u32,
    token_type: u16,
    screening: u16,
    codebook: u32,
    reserved: [u8; 8],
    sections: [SectionEntry; MAX_SECTIONS],
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN);
const HEADER_CRC_AT: usize = 44;

fn header_crc(mut h: Header) -> u32 {
    h.header_crc = 0;
    crc32(bytemuck::bytes_of(&h))
}

/// One document's tokens in a segment's stored form: `rows` are TOKENS bytes
/// of the token type, `scales` its per-token scales (empty for f16), `codes`
/// its screening codes (empty without screening).
#[derive(Debug, Clone, Copy)]
pub struct StoredRows<'a> {
    pub rows: &'a [u8],
    pub scales: &'a [f32],
    pub codes: &'a [u64],
}

/// One document for [`SegmentWriter::add`]. The caller has validated it:
/// `tokens` holds `n ≥ 1` rows of the segment's token type (and `n` scales,
/// `n` codes where the type and screening have them), `id` is non-empty,
/// `payload` is JSON, and `given_tokens` (the rows it was given, before any
/// pooling) is at least `n`.
#[derive(Debug, Clone, Copy)]
pub struct SegmentDoc<'a> {
    pub id: &'a str,
    pub tokens: StoredRows<'a>,
    pub text: Option<&'a str>,
    pub payload: Option<&'a str>,
    pub given_tokens: usize,
}

/// Streams documents into a segment file: the token matrix is written as
/// documents arrive; the (small) tables, scales and codes are kept in memory
/// and written by [`finish`](Self::finish), which then fills in the header.
pub struct SegmentWriter<W: Write + Seek> {
    w: W,
    dim: usize,
    token_type: TokenType,
    screening: Screening,
    /// Residual tokens: the identity of the codebook they are coded with.
    codebook: Option<u32>,
    pos: u64,
    tokens_crc: crc32fast::Hasher,
    n_tokens: u64,
    doc_offsets: Vec<u64>,
    id_offsets: Vec<u64>,
    ids: Vec<u8>,
    text_offsets: Vec<u64>,
    texts: Vec<u8>,
    payload_offsets: Vec<u64>,
    payloads: Vec<u8>,
    flags: Vec<u8>,
    scales: Vec<f32>,
    codes: Vec<u64>,
    given: Vec<u32>,
    /// Whether a document was given more tokens than it stores.
    pooled: bool,
}

impl<W: Write + Seek> SegmentWriter<W> {
    /// Starts a segment at the writer's position 0.
    pub fn new(mut w: W, dim: usize, token_type: TokenType, screening: Screening) -> io::Result<Self> {
        w.seek(SeekFrom::Start(0))?;
        w.write_all(&[0u8; HEADER_LEN])?;
        Ok(Self {
            w,
            dim,
            token_type,
            screening,
            codebook: None,
            pos: HEADER_LEN as u64,
            tokens_crc: crc32fast::Hasher::new(),
            n_tokens: 0,
            doc_offsets: vec![0],
            id_offsets: vec![0],
            ids: Vec::new(),
            text_offsets: vec![0],
            texts: Vec::new(),
            payload_offsets: vec![0],
            payloads: Vec::new(),
            flags: Vec::new(),
            scales: Vec::new(),
            codes: Vec::new(),
            given: Vec::new(),
            pooled: false,
        })
    }

    pub fn n_docs(&self) -> usize {
        self.flags.len()
    }

    /// CRC-32 of the TOKENS written so far (all of them once the last
    /// document is added): what a kept copy records to name its segment.
    pub fn tokens_crc(&self) -> u32 {
        self.tokens_crc.clone().finalize()
    }

    /// Names the codebook residual tokens are coded with (by its identity);
    /// a residual segment must have one.
    pub fn coded_with(&mut self, identity: u32) {
        assert!(self.token_type.is_residual(), "only residual tokens are coded with a codebook");
        self.codebook = Some(identity);
    }

    /// Appends one document.
    pub fn add(&mut self, d: SegmentDoc<'_>) -> io::Result<()> {
        let SegmentDoc { id, tokens: t, text, payload, given_tokens } = d;
        let row = self.token_type.row_bytes(self.dim);
        let n = t.rows.len() / row;
        assert!(!id.is_empty() && n > 0 && t.rows.len() == n * row);
        assert!(given_tokens >= n && given_tokens <= u32::MAX as usize);
        self.given.push(given_tokens as u32);
        self.pooled |= given_tokens != n;
        assert_eq!(t.scales.len() * 4, n * self.token_type.scale_bytes());
        assert_eq!(t.codes.len(), n * self.screening.code_words(self.dim));
        self.w.write_all(t.rows)?;
        self.tokens_crc.update(t.rows);
        self.pos += t.rows.len() as u64;
        self.scales.extend_from_slice(t.scales);
        self.codes.extend_from_slice(t.codes);
        self.n_tokens += n as u64;
        self.doc_offsets.push(self.n_tokens);
        self.ids.extend_from_slice(id.as_bytes());
        self.id_offsets.push(self.ids.len() as u64);
        self.texts.extend_from_slice(text.unwrap_or("").as_bytes());
        self.text_offsets.push(self.texts.len() as u64);
        self.payloads.extend_from_slice(payload.unwrap_or("").as_bytes());
        self.payload_offsets.push(self.payloads.len() as u64);
        let flags = if text.is_some() { FLAG_TEXT } else { 0 } | if payload.is_some() { FLAG_PAYLOAD } else { 0 };
        self.flags.push(flags);
        Ok(())
    }

    fn pad_to_align(&mut self) -> io::Result<()> {
        let pad = (ALIGN - (self.pos as usize % ALIGN)) % ALIGN;
        self.w.write_all(&[0u8; ALIGN][..pad])?;
        self.pos += pad as u64;
        Ok(())
    }

    fn section(&mut self, kind: usize, bytes: &[u8], entries: &mut [SectionEntry]) -> io::Result<()> {
        self.pad_to_align()?;
        entries[kind] = SectionEntry::new(kind, self.pos, bytes);
        self.w.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Writes the tables and the header; returns the writer (not synced) and the file length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        assert!(!self.flags.is_empty(), "a segment holds at least one document");
        assert_eq!(self.codebook.is_some(), self.token_type.is_residual(), "residual tokens name their codebook");
        let mut entries = [SectionEntry::zeroed(); MAX_SECTIONS];
        entries[0] = SectionEntry {
            offset: HEADER_LEN as u64,
            len: self.pos - HEADER_LEN as u64,
            crc: self.tokens_crc.clone().finalize(),
            kind: 1,
            reserved: 0,
        };
        let tables = [std::mem::take(&mut self.doc_offsets), std::mem::take(&mut self.id_offsets)];
        self.section(1, bytemuck::cast_slice(&tables[0]), &mut entries)?;
        self.section(2, bytemuck::cast_slice(&tables[1]), &mut entries)?;
        let ids = std::mem::take(&mut self.ids);
        self.section(3, &ids, &mut entries)?;
        let text_offsets = std::mem::take(&mut self.text_offsets);
        self.section(4, bytemuck::cast_slice(&text_offsets), &mut entries)?;
        let texts = std::mem::take(&mut self.texts);
        self.section(5, &texts, &mut entries)?;
        let payload_offsets = std::mem::take(&mut self.payload_offsets);
        self.section(6, bytemuck::cast_slice(&payload_offsets), &mut entries)?;
        let payloads = std::mem::take(&mut self.payloads);
        self.section(7, &payloads, &mut entries)?;
        let flags = std::mem::take(&mut self.flags);
        self.section(8, &flags, &mut entries)?;
        let id_at = |i: u32| &ids[tables[1][i as usize] as usize..tables[1][i as usize + 1] as usize];
        let mut order: Vec<u32> = (0..flags.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| id_at(a).cmp(id_at(b)));
        self.section(9, bytemuck::cast_slice(&order), &mut entries)?;
        let scales = std::mem::take(&mut self.scales);
        self.section(10, bytemuck::cast_slice(&scales), &mut entries)?;
        let codes = std::mem::take(&mut self.codes);
        self.section(11, bytemuck::cast_slice(&codes), &mut entries)?;
        let given = if self.pooled { std::mem::take(&mut self.given) } else { Vec::new() };
        self.section(12, bytemuck::cast_slice(&given), &mut entries)?;
        let (major, minor) = if self.token_type.is_residual() { (MAJOR, 0) } else { (MAJOR_PLAIN, MINOR) };
        let mut h = Header {
            magic: *MAGIC,
            major,
            minor,
            dim: self.dim as u32,
            n_docs: flags.len() as u64,
            n_tokens: self.n_tokens,
            file_len: self.pos,
            section_count: SECTION_COUNT as u32,
            header_crc: 0,
            token_type: self.token_type.id(),
            screening: self.screening.id(),
            codebook: self.codebook.unwrap_or(0),
            reserved: [0; 8],
            sections: entries,
        };
        h.header_crc = header_crc(h);
        self.w.seek(SeekFrom::Start(0))?;
        self.w.write_all(bytemuck::bytes_of(&h))?;
        self.w.flush()?;
        Ok((self.w, self.pos))
    }
}

/// A verified segment: sizes and the byte range of each section. Accessors
/// take the same bytes that were verified (typically the memory map).
#[derive(Debug, Clone)]
pub struct SegmentLayout {
    /// Format version of the file (1, 2 or 3).
    pub major: u16,
    pub minor: u16,
    pub dim: usize,
    pub n_docs: usize,
    pub n_tokens: usize,
    pub token_type: TokenType,
    pub screening: Screening,
    /// Residual tokens: the identity of the codebook they are coded with.
    pub codebook: Option<u32>,
    /// CRC-32 of the TOKENS section (verified): the rows' identity.
    pub tokens_crc: u32,
    sections: [Range<usize>; SECTION_COUNT],
}

fn table_len(n_docs: usize) -> Option<usize> {
    n_docs.checked_add(1)?.checked_mul(8)
}

impl SegmentLayout {
    /// Verifies the header, every section's checksum and every table's
    /// structure. `bytes` must start at an 8-byte-aligned address (a memory map does).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let h: Header = sections::read_header(bytes, "segment")?;
        let known = match (h.major, h.minor) {
            (1, _) => SECTION_COUNT_V1,
            (2, 0) => SECTION_COUNT_V2_0,
            _ => SECTION_COUNT,
        };
        sections::Prelude {
            what: "segment",
            magic: h.magic,
            expected_magic: MAGIC,
            crc_ok: header_crc(h) == h.header_crc,
            crc_at: HEADER_CRC_AT,
            major: h.major,
            minor: h.minor,
            oldest_major: OLDEST_MAJOR,
            supported_major: MAJOR,
            file_len: h.file_len,
            file_len_at: 32,
            section_count: h.section_count,
            section_count_at: 40,
            sections: known..=MAX_SECTIONS,
        }
        .check(bytes)?;
        let (dim, n_docs, n_tokens) = (h.dim as usize, h.n_docs as usize, h.n_tokens as usize);
        if !(1..=4096).contains(&dim) || n_docs == 0 {
            return Err(corrupted(12, format!("dim {dim} / n_docs {n_docs} out of range")));
        }
        let (token_type, screening) = if h.major == 1 {
            (TokenType::F16, Screening::None)
        } else {
            let t = TokenType::from_id(h.token_type)
                .ok_or_else(|| corrupted(48, format!("unknown token type {}", h.token_type)))?;
            let s = Screening::from_id(h.screening)
                .ok_or_else(|| corrupted(50, format!("unknown screening {}", h.screening)))?;
            (t, s)
        };
        // Residual tokens are version 3's and only its.
        if (h.major == MAJOR) != token_type.is_residual() {
            let v = format!("{}.{}", h.major, h.minor);
            return Err(corrupted(48, format!("token type {} in a version {v} segment", token_type.name())));
        }
        let codebook = token_type.is_residual().then_some(h.codebook);
        let entries = &h.sections[..h.section_count as usize];
        let sections = sections::verify::<SECTION_COUNT>(bytes, entries, 64, HEADER_LEN)?;
        let tokens_crc = h.sections[0].crc;
        let layout = Self {
            major: h.major,
            minor: h.minor,
            dim,
            n_docs,
            n_tokens,
            token_type,
            screening,
            codebook,
            tokens_crc,
            sections,
        };
        layout.check_sizes()?;
        layout.check_tables(bytes)?;
        layout.check_scales_and_codes(bytes)?;
        Ok(layout)
    }

    fn check_sizes(&self) -> Result<()> {
        let tl = table_len(self.n_docs);
        let per_token = |b: usize| self.n_tokens.checked_mul(b);
        let expect = [
            (Section::Tokens, per_token(self.token_type.row_bytes(self.dim))),
            (Section::DocOffsets, tl),
            (Section::IdOffsets, tl),
            (Section::TextOffsets, tl),
            (Section::PayloadOffsets, tl),
            (Section::DocFlags, Some(self.n_docs)),
            (Section::IdOrder, self.n_docs.checked_mul(4)),
            (Section::Scales, per_token(self.token_type.scale_bytes())),
            (Section::Codes, per_token(self.screening.code_words(self.dim) * 8)),
        ];
        for (s, want) in expect {
            let r = &self.sections[s as usize];
            if Some(r.len()) != want {
                return Err(corrupted(r.start, format!("section {s:?} is {} bytes, expected {want:?}", r.len())));
            }
        }
        let r = &self.sections[Section::GivenTokens as usize];
        if !r.is_empty() && Some(r.len()) != self.n_docs.checked_mul(4) {
            return Err(corrupted(
                r.start,
                format!("section GivenTokens is {} bytes, expected 0 or {}", r.len(), 4 * self.n_docs),
            ));
        }
        Ok(())
    }

    /// Scales are finite and non-negative; code bits past `dim` are zero,
    /// and so are the bucket bits past `dim` of residual rows. (Whether a
    /// residual row's centroid code is in its codebook is the reader's check:
    /// the segment does not hold the codebook.)
    fn check_scales_and_codes(&self, bytes: &[u8]) -> Result<()> {
        let bits = self.token_type.residual_bits() as usize;
        if bits > 0 && !(self.dim * bits).is_multiple_of(8) {
            let row = self.token_type.row_bytes(self.dim);
            let mask = !0u8 << (self.dim * bits % 8);
            let at = self.sections[Section::Tokens as usize].start;
            if let Some(t) = self.token_rows(bytes).chunks_exact(row).position(|r| r[row - 1] & mask != 0) {
                return Err(corrupted(at + t * row + row - 1, "residual bucket bits past dim are set"));
            }
        }
        let at = self.sections[Section::Scales as usize].start;
        if let Some(p) = self.scales(bytes).iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(corrupted(at + 4 * p, "scale is not a finite non-negative number"));
        }
        let w = self.screening.code_words(self.dim);
        if w > 0 && !self.dim.is_multiple_of(64) {
            let mask = !0u64 << (self.dim % 64);
            let at = self.sections[Section::Codes as usize].start;
            if let Some(t) = self.codes(bytes).chunks_exact(w).position(|c| c[w - 1] & mask != 0) {
                return Err(corrupted(at + 8 * (t * w + w - 1), "code bits past dim are set"));
            }
        }
        Ok(())
    }

    fn check_offsets(&self, bytes: &[u8], table: Section, last: usize, strict: bool) -> Result<()> {
        let o = self.u64s(bytes, table);
        let at = self.sections[table as usize].start;
        if o[0] != 0 || o[self.n_docs] != last as u64 {
            return Err(corrupted(at, format!("{table:?} must run from 0 to {last}")));
        }
        if let Some(i) = o.windows(2).position(|w| if strict { w[1] <= w[0] } else { w[1] < w[0] }) {
            return Err(corrupted(at + 8 * (i + 1), format!("{table:?} not increasing at entry {}", i + 1)));
        }
        Ok(())
    }

    fn check_tables(&self, bytes: &[u8]) -> Result<()> {
        self.check_offsets(bytes, Section::DocOffsets, self.n_tokens, true)?;
        self.check_offsets(bytes, Section::IdOffsets, self.sections[Section::Ids as usize].len(), true)?;
        self.check_offsets(bytes, Section::TextOffsets, self.sections[Section::Texts as usize].len(), false)?;
        self.check_offsets(bytes, Section::PayloadOffsets, self.sections[Section::Payloads as usize].len(), false)?;
        let flags = &bytes[self.sections[Section::DocFlags as usize].clone()];
        for (i, &f) in flags.iter().enumerate() {
            let at = self.sections[Section::DocFlags as usize].start + i;
            if f & !(FLAG_TEXT | FLAG_PAYLOAD) != 0 {
                return Err(corrupted(at, format!("unknown flag bits {f:#x}")));
            }
            for (sec, off_table, flag) in [
                (Section::Ids, Section::IdOffsets, None),
                (Section::Texts, Section::TextOffsets, Some(FLAG_TEXT)),
                (Section::Payloads, Section::PayloadOffsets, Some(FLAG_PAYLOAD)),
            ] {
                let r = self.range(bytes, off_table, i);
                if flag.is_some_and(|fl| f & fl == 0) && !r.is_empty() {
                    return Err(corrupted(at, format!("doc {i} has {sec:?} bytes but no flag")));
                }
                let base = self.sections[sec as usize].start;
                if std::str::from_utf8(&bytes[base + r.start..base + r.end]).is_err() {
                    return Err(corrupted(base + r.start, format!("{sec:?} of doc {i} is not UTF-8")));
                }
            }
        }
        self.check_given(bytes)?;
        self.check_id_order(bytes)
    }

    /// A document was given at least the tokens it stores.
    fn check_given(&self, bytes: &[u8]) -> Result<()> {
        let r = self.sections[Section::GivenTokens as usize].clone();
        if r.is_empty() {
            return Ok(());
        }
        let given: &[u32] = bytemuck::cast_slice(&bytes[r.clone()]);
        let o = self.doc_offsets(bytes);
        if let Some(i) = (0..self.n_docs).find(|&i| (given[i] as u64) < o[i + 1] - o[i]) {
            return Err(corrupted(r.start + 4 * i, format!("doc {i} was given fewer tokens than it stores")));
        }
        Ok(())
    }

    fn check_id_order(&self, bytes: &[u8]) -> Result<()> {
        let order = self.id_order(bytes);
        let at = self.sections[Section::IdOrder as usize].start;
        if let Some(p) = order.iter().position(|&r| r as usize >= self.n_docs) {
            return Err(corrupted(at + 4 * p, "ID_ORDER entry out of range"));
        }
        if let Some(p) = order.windows(2).position(|w| self.id(bytes, w[0] as usize) >= self.id(bytes, w[1] as usize)) {
            return Err(corrupted(at + 4 * (p + 1), "ids not strictly increasing in ID_ORDER (duplicate or unsorted)"));
        }
        // Strictly increasing ids over n in-range entries: a permutation of all rows.
        Ok(())
    }

    /// The rows in the byte order of their ids (the ID_ORDER section).
    pub fn id_order<'a>(&self, bytes: &'a [u8]) -> &'a [u32] {
        bytemuck::cast_slice(&bytes[self.sections[Section::IdOrder as usize].clone()])
    }

    /// The document index holding external id `id`, by binary search over ID_ORDER.
    pub fn find_id(&self, bytes: &[u8], id: &str) -> Option<usize> {
        let order = self.id_order(bytes);
        order
            .binary_search_by(|&r| self.id(bytes, r as usize).as_bytes().cmp(id.as_bytes()))
            .ok()
            .map(|p| order[p] as usize)
    }

    fn u64s<'a>(&self, bytes: &'a [u8], s: Section) -> &'a [u64] {
        bytemuck::cast_slice(&bytes[self.sections[s as usize].clone()])
    }

    fn range(&self, bytes: &[u8], table: Section, i: usize) -> Range<usize> {
        let o = self.u64s(bytes, table);
        o[i] as usize..o[i + 1] as usize
    }

    fn str_of<'a>(&self, bytes: &'a [u8], table: Section, data: Section, i: usize) -> &'a str {
        let r = self.range(bytes, table, i);
        let base = self.sections[data as usize].start;
        // Verified to be UTF-8 by `parse`.
        std::str::from_utf8(&bytes[base + r.start..base + r.end]).expect("verified at open")
    }

    /// Byte range of a section within the file.
    pub fn section_range(&self, s: Section) -> Range<usize> {
        self.sections[s as usize].clone()
    }

    /// The whole token matrix: `n_tokens` rows of the token type.
    pub fn token_rows<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.sections[Section::Tokens as usize].clone()]
    }

    /// Per-token scales (`n_tokens`; empty unless the token type has them).
    pub fn scales<'a>(&self, bytes: &'a [u8]) -> &'a [f32] {
        bytemuck::cast_slice(&bytes[self.sections[Section::Scales as usize].clone()])
    }

    /// Screening codes (`n_tokens × code words`; empty without screening).
    pub fn codes<'a>(&self, bytes: &'a [u8]) -> &'a [u64] {
        bytemuck::cast_slice(&bytes[self.sections[Section::Codes as usize].clone()])
    }

    /// The tokens document `i` was given before pooling (its stored rows
    /// when it was not pooled).
    pub fn given_tokens(&self, bytes: &[u8], i: usize) -> usize {
        let r = self.sections[Section::GivenTokens as usize].clone();
        if r.is_empty() {
            let o = self.doc_offsets(bytes);
            return (o[i + 1] - o[i]) as usize;
        }
        bytemuck::cast_slice::<u8, u32>(&bytes[r])[i] as usize
    }

    /// Token row offsets (`n_docs + 1`).
    pub fn doc_offsets<'a>(&self, bytes: &'a [u8]) -> &'a [u64] {
        self.u64s(bytes, Section::DocOffsets)
    }

    pub fn id<'a>(&self, bytes: &'a [u8], i: usize) -> &'a str {
        self.str_of(bytes, Section::IdOffsets, Section::Ids, i)
    }

    fn flags(&self, bytes: &[u8], i: usize) -> u8 {
        bytes[self.sections[Section::DocFlags as usize].start + i]
    }

    pub fn text<'a>(&self, bytes: &'a [u8], i: usize) -> Option<&'a str> {
        (self.flags(bytes, i) & FLAG_TEXT != 0).then(|| self.str_of(bytes, Section::TextOffsets, Section::Texts, i))
    }

    pub fn payload<'a>(&self, bytes: &'a [u8], i: usize) -> Option<&'a str> {
        (self.flags(bytes, i) & FLAG_PAYLOAD != 0)
            .then(|| self.str_of(bytes, Section::PayloadOffsets, Section::Payloads, i))
    }

    /// The stored tokens of document `i`.
    pub fn doc_rows<'a>(&self, bytes: &'a [u8], i: usize) -> StoredRows<'a> {
        let o = self.doc_offsets(bytes);
        let (a, b) = (o[i] as usize, o[i + 1] as usize);
        let (row, w) = (self.token_type.row_bytes(self.dim), self.screening.code_words(self.dim));
        let scales = self.scales(bytes);
        StoredRows {
            rows: &self.token_rows(bytes)[a * row..b * row],
            scales: if scales.is_empty() { &[] } else { &scales[a..b] },
            codes: &self.codes(bytes)[a * w..b * w],
        }
    }
}

/// Name of a section kind (1-based, as stored), for reports.
pub fn section_name(kind: u32) -> &'static str {
    const NAMES: [&str; SECTION_COUNT] = [
        "TOKENS",
        "DOC_OFFSETS",
        "ID_OFFSETS",
        "IDS",
        "TEXT_OFFSETS",
        "TEXTS",
        "PAYLOAD_OFFSETS",
        "PAYLOADS",
        "DOC_FLAGS",
        "ID_ORDER",
        "SCALES",
        "CODES",
        "GIVEN_TOKENS",
    ];
    (kind as usize).checked_sub(1).and_then(|i| NAMES.get(i)).copied().unwrap_or("?")
}

/// The header fields of a segment as stored, with the header checksum its bytes have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeaderReport {
    pub magic: [u8; 8],
    pub major: u16,
    pub minor: u16,
    pub dim: u32,
    pub n_docs: u64,
    pub n_tokens: u64,
    pub file_len: u64,
    pub section_count: u32,
    /// As stored (zero in version 1).
    pub token_type: u16,
    pub screening: u16,
    /// As stored: the codebook's identity in version 3, zero before.
    pub codebook: u32,
    pub stored_crc: u32,
    pub computed_crc: u32,
}

/// What [`inspect`] found in a segment file.
#[derive(Debug, Clone)]
pub struct SegmentReport {
    /// Bytes actually present.
    pub len: u64,
    /// `None` when the file is shorter than the header.
    pub header: Option<SegmentHeaderReport>,
    /// The section table's entries (up to the stored count, at most [`MAX_SECTIONS`]).
    pub sections: Vec<crate::inspect::SectionReport>,
    /// The result of the complete verification, [`SegmentLayout::parse`].
    pub verdict: Result<()>,
}

/// Where a segment's section table is.
pub const TABLE_SPEC: crate::inspect::TableSpec =
    crate::inspect::TableSpec { table_at: 64, max_sections: MAX_SECTIONS };

/// Reports a segment's header, section table and checksums, and runs the
/// full verification. Never fails or panics, whatever the bytes.
pub fn inspect(bytes: &[u8]) -> SegmentReport {
    let verdict = crate::inspect::with_aligned(bytes, |b| SegmentLayout::parse(b).map(|_| ()));
    let header = (bytes.len() >= HEADER_LEN).then(|| {
        let h: Header = bytemuck::pod_read_unaligned(&bytes[..HEADER_LEN]);
        SegmentHeaderReport {
            magic: h.magic,
            major: h.major,
            minor: h.minor,
            dim: h.dim,
            n_docs: h.n_docs,
            n_tokens: h.n_tokens,
            file_len: h.file_len,
            section_count: h.section_count,
            token_type: h.token_type,
            screening: h.screening,
            codebook: h.codebook,
            stored_crc: h.header_crc,
            computed_crc: header_crc(h),
        }
    });
    let count = header.as_ref().map_or(0, |h| h.section_count as usize);
    let sections = crate::inspect::section_table(bytes, &TABLE_SPEC, count);
    SegmentReport { len: bytes.len() as u64, header, sections, verdict }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Copies bytes into 8-byte-aligned storage, as a memory map would be.
    fn aligned(bytes: &[u8]) -> Vec<u64> {
        let mut v = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
        v
    }

    fn f16_rows(xs: &[f32]) -> Vec<u8> {
        let v: Vec<half::f16> = xs.iter().map(|&x| half::f16::from_f32(x)).collect();
        bytemuck::cast_slice(&v).to_vec()
    }

    fn sample() -> Vec<u8> {
        sample_of(TokenType::F16, Screening::None)
    }

    /// Three documents of dim 3; int8 rows are the values themselves (scale 1)
    /// and codes their sign bits.
    fn sample_of(t: TokenType, s: Screening) -> Vec<u8> {
        let mut w = SegmentWriter::new(Cursor::new(Vec::new()), 3, t, s).unwrap();
        type Doc<'a> = (&'a str, &'a [f32], Option<&'a str>, Option<&'a str>);
        let docs: [Doc<'_>; 3] = [
            ("zeta", &[1., 2., 3.], Some("hello"), None),
            ("alpha", &[4., 5., 6., 7., 8., 9.], None, Some("{\"a\":1}")),
            ("mid", &[0.5, -1., 2.], Some(""), Some("null")),
        ];
        for (id, xs, text, payload) in docs {
            let n = xs.len() / 3;
            let rows = match t {
                TokenType::F16 => f16_rows(xs),
                TokenType::Int8 => xs.iter().map(|&x| x as i8 as u8).collect(),
                // Code = the first value, the buckets of dimensions 1 and 2 the others' low bits.
                _ => xs.chunks(3).flat_map(|r| residual_row(t, r)).collect(),
            };
            let scales = vec![1.0f32; if t == TokenType::Int8 { n } else { 0 }];
            let codes: Vec<u64> = match s {
                Screening::None => Vec::new(),
                Screening::Binary => xs
                    .chunks(3)
                    .map(|r| r.iter().enumerate().fold(0, |c, (k, &x)| c | (((x > 0.0) as u64) << k)))
                    .collect(),
            };
            let tokens = StoredRows { rows: &rows, scales: &scales, codes: &codes };
            w.add(SegmentDoc { id, tokens, text, payload, given_tokens: n }).unwrap();
        }
        if t.is_residual() {
            w.coded_with(0xC0DE_B00C);
        }
        let (c, len) = w.finish().unwrap();
        let v = c.into_inner();
        assert_eq!(v.len() as u64, len);
        v
    }

    #[test]
    fn round_trip() {
        let raw = sample();
        let store = aligned(&raw);
        let b = &bytemuck::cast_slice::<u64, u8>(&store)[..raw.len()];
        let l = SegmentLayout::parse(b).unwrap();
        assert_eq!((l.dim, l.n_docs, l.n_tokens), (3, 3, 4));
        assert_eq!(l.doc_offsets(b), &[0, 1, 3, 4]);
        assert_eq!((l.id(b, 0), l.id(b, 1), l.id(b, 2)), ("zeta", "alpha", "mid"));
        assert_eq!((l.text(b, 0), l.text(b, 1), l.text(b, 2)), (Some("hello"), None, Some("")));
        assert_eq!((l.payload(b, 0), l.payload(b, 1)), (None, Some("{\"a\":1}")));
        let rows: &[half::f16] = bytemuck::cast_slice(l.doc_rows(b, 1).rows);
        assert_eq!(rows[3].to_f32(), 7.0);
        assert_eq!(
            (l.token_type, l.screening, l.major, l.codebook),
            (TokenType::F16, Screening::None, MAJOR_PLAIN, None)
        );
        for (i, id) in ["zeta", "alpha", "mid"].iter().enumerate() {
            assert_eq!(l.find_id(b, id), Some(i));
        }
        assert_eq!(l.find_id(b, "nope"), None);
        for s in 0..SECTION_COUNT {
            assert_eq!(l.sections[s].start % ALIGN, 0);
        }
    }

    /// A pooled document's given count is kept (GIVEN_TOKENS); a segment of
    /// unpooled documents has the section empty; a count below the stored
    /// rows is refused at its offset.
    #[test]
    fn given_token_counts_round_trip_and_are_verified() {
        let write = |given: [usize; 2]| {
            let mut w = SegmentWriter::new(Cursor::new(Vec::new()), 3, TokenType::F16, Screening::None).unwrap();
            for (i, id) in ["a", "b"].into_iter().enumerate() {
                let rows = f16_rows(&[1., 2., 3., 4., 5., 6.][..3 * (i + 1)]);
                let tokens = StoredRows { rows: &rows, scales: &[], codes: &[] };
                w.add(SegmentDoc { id, tokens, text: None, payload: None, given_tokens: given[i] }).unwrap();
            }
            w.finish().unwrap().0.into_inner()
        };
        for (given, section_len) in [([1, 2], 0), ([4, 2], 8), ([1, 7], 8)] {
            let raw = write(given);
            let store = aligned(&raw);
            let b = &bytemuck::cast_slice::<u64, u8>(&store)[..raw.len()];
            let l = SegmentLayout::parse(b).unwrap();
            assert_eq!((l.major, l.minor), (2, 1));
            assert_eq!(l.section_range(Section::GivenTokens).len(), section_len);
            assert_eq!([l.given_tokens(b, 0), l.given_tokens(b, 1)], given);
        }
        // Damaged: doc b given 1 while it stores 2 (CRCs fixed, so only the check can tell).
        let mut raw = write([4, 2]);
        let r = {
            let store = aligned(&raw);
            let b = &bytemuck::cast_slice::<u64, u8>(&store)[..raw.len()];
            SegmentLayout::parse(b).unwrap().section_range(Section::GivenTokens)
        };
        raw[r.start + 4..r.start + 8].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32(&raw[r.clone()]);
        let entry = 64 + 32 * Section::GivenTokens as usize;
        raw[entry + 16..entry + 20].copy_from_slice(&crc.to_le_bytes());
        let mut h: Header = bytemuck::pod_read_unaligned(&raw[..HEADER_LEN]);
        h.header_crc = header_crc(h);
        raw[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
        let store = aligned(&raw);
        let b = &bytemuck::cast_slice::<u64, u8>(&store)[..raw.len()];
        let e = SegmentLayout::parse(b).unwrap_err();
        assert!(matches!(&e, crate::FormatError::Corrupted { offset, .. } if *offset == (r.start + 4) as u64), "{e:?}");
    }

    #[test]
    fn int8_and_binary_sections_round_trip_and_are_verified() {
        let raw = sample_of(TokenType::Int8, Screening::Binary);
        let store = aligned(&raw);
        let b = &bytemuck::cast_slice::<u64, u8>(&store)[..raw.len()];
        let l = SegmentLayout::parse(b).unwrap();
        assert_eq!((l.token_type, l.screening), (TokenType::Int8, Screening::Binary));
        let d = l.doc_rows(b, 1);
        assert_eq!(d.rows, &[4, 5, 6, 7, 8, 9]);
        assert_eq!((d.scales, d.codes), (&[1.0f32, 1.0][..], &[0b111u64, 0b111][..]));
        assert_eq!(l.doc_rows(b, 2).codes, &[0b101]);
        assert_eq!(section_name(12), "CODES");
        // A code bit past dim, and a negative scale, are refused even with a
        // valid checksum.
        for (sec, value) in [(Section::Codes, 1u64 << 3), (Section::Scales, (-1.0f32).to_bits() as u64)] {
            let mut bad = raw.clone();
            let at = l.section_range(sec).start;
            let width = if sec == Section::Codes { 8 } else { 4 };
            bad[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            let r = &l.section_range(sec);
            let crc = crc32(&bad[r.clone()]);
            let entry = 64 + 32 * sec as usize + 16;
            bad[entry..entry + 4].copy_from_slice(&crc.to_le_bytes());
            let mut h: Header = bytemuck::pod_read_unaligned(&bad[..HEADER_LEN]);
            h.header_crc = header_crc(h);
            bad[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
            let store = aligned(&bad);
            let err = SegmentLayout::parse(&bytemuck::cast_slice::<u64, u8>(&store)[..bad.len()]).unwrap_err();
            assert!(matches!(err, crate::FormatError::Corrupted { offset, .. } if offset == at as u64), "{err}");
        }
    }

    fn residual_row(t: TokenType, r: &[f32]) -> Vec<u8> {
        let bits = t.residual_bits() as usize;
        let mut row = vec![0u8; t.row_bytes(3)];
        row[0] = r[0] as u8;
        for k in 1..3 {
            row[2 + k * bits / 8] |= (r[k] as u8 & 3) << (k * bits % 8);
        }
        row
    }

    /// Rewrites the CRCs of section `sec` and of the header after a change.
    fn fix_crcs(bad: &mut [u8], sec: Option<Section>, r: Range<usize>) {
        if let Some(sec) = sec {
            let crc = crc32(&bad[r]);
            let entry = 64 + 32 * sec as usize + 16;
            bad[entry..entry + 4].copy_from_slice(&crc.to_le_bytes());
        }
        let mut h: Header = bytemuck::pod_read_unaligned(&bad[..HEADER_LEN]);
        h.header_crc = header_crc(h);
        bad[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
    }

    fn parse_copy(raw: &[u8]) -> Result<SegmentLayout> {
        let store = aligned(raw);
        SegmentLayout::parse(&bytemuck::cast_slice::<u64, u8>(&store)[..raw.len()])
    }

    /// Residual segments are version 3.0 and name their codebook; their rows
    /// are `2 + ⌈dim·bits/8⌉` bytes; bucket bits past dim, a residual type in
    /// a version 2 header or a plain one in version 3 are refused at their offset.
    #[test]
    fn residual_segments_are_version_3_and_verified() {
        for t in [TokenType::Residual2, TokenType::Residual4] {
            let raw = sample_of(t, Screening::Binary);
            let l = parse_copy(&raw).unwrap();
            assert_eq!((l.major, l.minor, l.token_type, l.codebook), (3, 0, t, Some(0xC0DE_B00C)));
            let store = aligned(&raw);
            let b = &bytemuck::cast_slice::<u64, u8>(&store)[..raw.len()];
            let want = [residual_row(t, &[4., 5., 6.]), residual_row(t, &[7., 8., 9.])].concat();
            assert_eq!(l.doc_rows(b, 1).rows, want);
            assert_eq!(inspect(&raw).header.unwrap().codebook, 0xC0DE_B00C);
            // The row's last bit is past dim 3 (bit 7 of 6 used, or 15 of 12).
            let tokens = l.section_range(Section::Tokens);
            let last = tokens.start + t.row_bytes(3) - 1;
            let mut bad = raw.clone();
            bad[last] |= 0x80;
            fix_crcs(&mut bad, Some(Section::Tokens), tokens.clone());
            let e = parse_copy(&bad).unwrap_err();
            assert!(matches!(&e, crate::FormatError::Corrupted { offset, .. } if *offset == last as u64), "{e}");
            let mut bad = raw.clone();
            bad[8..10].copy_from_slice(&2u16.to_le_bytes());
            fix_crcs(&mut bad, None, 0..0);
            let e = parse_copy(&bad).unwrap_err();
            assert!(matches!(&e, crate::FormatError::Corrupted { offset: 48, .. }), "{e}");
        }
        let mut bad = sample();
        bad[8..12].copy_from_slice(&[3, 0, 0, 0]);
        fix_crcs(&mut bad, None, 0..0);
        let e = parse_copy(&bad).unwrap_err();
        assert!(matches!(&e, crate::FormatError::Corrupted { offset: 48, .. }), "{e}");
    }

    #[test]
    fn inspect_reports_checksums_and_never_panics() {
        let raw = sample();
        let r = inspect(&raw[1..].iter().copied().chain([0]).collect::<Vec<_>>());
        assert!(r.verdict.is_err());
        let r = inspect(&raw);
        assert!(r.verdict.is_ok());
        let h = r.header.unwrap();
        assert_eq!((h.dim, h.n_docs, h.n_tokens, h.stored_crc), (3, 3, 4, h.computed_crc));
        assert_eq!(r.sections.len(), SECTION_COUNT);
        assert!(r.sections.iter().all(|s| s.ok()));
        assert_eq!(section_name(r.sections[9].kind), "ID_ORDER");
        let mut bad = raw.clone();
        bad[r.sections[5].offset as usize] ^= 1;
        let r = inspect(&bad);
        assert!(r.verdict.is_err() && !r.sections[5].ok() && r.sections[4].ok());
        for cut in 0..raw.len() {
            assert!(inspect(&raw[..cut]).verdict.is_err());
        }
    }

    #[test]
    fn every_flipped_byte_is_detected_and_truncation_too() {
        for (t, s) in [(TokenType::F16, Screening::None), (TokenType::Int8, Screening::Binary)] {
            every_flip_detected(&sample_of(t, s));
        }
    }

    fn every_flip_detected(raw: &[u8]) {
        let raw = raw.to_vec();
        let good = aligned(&raw);
        let layout = SegmentLayout::parse(&bytemuck::cast_slice::<u64, u8>(&good)[..raw.len()]).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x10;
            let store = aligned(&bad);
            let b = &bytemuck::cast_slice::<u64, u8>(&store)[..bad.len()];
            // Alignment padding between sections is covered by no checksum: a
            // flip there changes nothing that is read.
            let in_padding = i >= HEADER_LEN && !layout.sections.iter().any(|r| r.contains(&i));
            if !in_padding {
                assert!(SegmentLayout::parse(b).is_err(), "flip at byte {i} not detected");
            }
        }
        for cut in [0, 10, HEADER_LEN, raw.len() - 1] {
            let store = aligned(&raw[..cut]);
            let b = &bytemuck::cast_slice::<u64, u8>(&store)[..cut];
            assert!(SegmentLayout::parse(b).is_err());
        }
    }
}
