//! The kept copy (`keep-N.tkeep`): beside a residual segment, the same
//! documents' tokens in full precision (f16 or int8 rows, as a segment of
//! that type holds them), read only for the rows a search scores exactly
//! and verified document by document as they are read: opening checks the
//! header, the section table and the per-document checksums' own checksum,
//! never the rows (that would read the whole copy, which stays cold).
//!
//! A 384-byte header, then three sections, each at a multiple of 64. Little-endian.
//! ```text
//! offset size field
//!      0    8 magic "TESSKEP\0"
//!      8    2 major version (1)
//!     10    2 minor version (0)
//!     12    4 dim                    (1..=4096)
//!     16    8 n_docs                 (≥ 1: the segment's)
//!     24    8 n_tokens               (the segment's)
//!     32    8 file length            (bytes, header included)
//!     40    4 section count          (3; a newer minor may have up to 8)
//!     44    4 header CRC-32          (of bytes 0..384 with this field zeroed)
//!     48    2 token type             (1 = f16, 2 = int8)
//!     50    2 reserved               (zero)
//!     52    4 offsets CRC            (CRC-32 of the segment's DOC_OFFSETS bytes: the
//!                                     document boundaries the rows follow)
//!     56    4 segment CRC            (CRC-32 of the segment's TOKENS: which segment
//!                                     these are the rows of)
//!     60   68 reserved               (zero)
//!    128  256 section table (8 × 32 bytes, as in every sectioned file)
//! ```
//! Sections (kind, content):
//! ```text
//! 1 TOKENS    n_tokens rows of the token type, the segment's documents in order
//! 2 SCALES    int8: n_tokens f32 (finite, ≥ 0, checked as a document is read); f16: empty
//! 3 DOC_CRCS  n_docs u32: CRC-32 of a document's TOKENS bytes followed by its SCALES bytes
//! ```
//! TOKENS and SCALES carry section checksums too, which `inspect` (a full
//! verification, [`KeepLayout::verify_all`]) checks; opening does not.

use crate::sections::{self, SectionEntry};
use crate::segment::StoredRows;
use crate::tokens::TokenType;
use crate::{Result, corrupted, crc32};
use bytemuck::{Pod, Zeroable};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;

pub const MAGIC: &[u8; 8] = b"TESSKEP\0";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 0;
pub const HEADER_LEN: usize = 384;
const TABLE_AT: usize = 128;
const MAX_SECTIONS: usize = 8;
const SECTION_COUNT: usize = 3;
const HEADER_CRC_AT: usize = 44;

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
    reserved0: u16,
    offsets_crc: u32,
    segment_crc: u32,
    reserved0b: u32,
    reserved: [u64; 8],
    sections: [SectionEntry; MAX_SECTIONS],
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN);

fn header_crc(mut h: Header) -> u32 {
    h.header_crc = 0;
    crc32(bytemuck::bytes_of(&h))
}

/// The checksum of one document's rows: its TOKENS bytes, then its SCALES bytes.
fn doc_crc(rows: &[u8], scales: &[f32]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(rows);
    h.update(bytemuck::cast_slice(scales));
    h.finalize()
}

/// Streams documents' rows into a kept copy: TOKENS as documents arrive,
/// the rest by [`finish`](Self::finish).
pub struct KeepWriter<W: Write + Seek> {
    w: W,
    dim: usize,
    token_type: TokenType,
    pos: u64,
    tokens_crc: crc32fast::Hasher,
    offsets: Vec<u64>,
    scales: Vec<f32>,
    doc_crcs: Vec<u32>,
}

impl<W: Write + Seek> KeepWriter<W> {
    /// A copy of tokens of `token_type` (f16 or int8).
    pub fn new(mut w: W, dim: usize, token_type: TokenType) -> io::Result<Self> {
        assert!(matches!(token_type, TokenType::F16 | TokenType::Int8), "a kept copy holds f16 or int8 rows");
        w.seek(SeekFrom::Start(0))?;
        w.write_all(&[0u8; HEADER_LEN])?;
        Ok(Self {
            w,
            dim,
            token_type,
            pos: HEADER_LEN as u64,
            tokens_crc: crc32fast::Hasher::new(),
            offsets: vec![0],
            scales: Vec::new(),
            doc_crcs: Vec::new(),
        })
    }

    /// Appends the next document's rows (`n ≥ 1` rows of the type, and `n`
    /// scales for int8), in the segment's document order.
    pub fn add(&mut self, t: StoredRows<'_>) -> io::Result<()> {
        let row = self.token_type.row_bytes(self.dim);
        let n = t.rows.len() / row;
        assert!(n > 0 && t.rows.len() == n * row && t.scales.len() * 4 == n * self.token_type.scale_bytes());
        self.w.write_all(t.rows)?;
        self.tokens_crc.update(t.rows);
        self.pos += t.rows.len() as u64;
        self.scales.extend_from_slice(t.scales);
        self.doc_crcs.push(doc_crc(t.rows, t.scales));
        self.offsets.push(self.offsets.last().copied().unwrap_or(0) + n as u64);
        Ok(())
    }

    /// Writes SCALES, DOC_CRCS and the header naming the segment whose rows
    /// these are (`segment_crc`: the CRC-32 of its TOKENS); returns the
    /// writer (not synced) and the file length.
    pub fn finish(mut self, segment_crc: u32) -> io::Result<(W, u64)> {
        assert!(!self.doc_crcs.is_empty(), "a kept copy holds at least one document");
        let mut entries = [SectionEntry::zeroed(); MAX_SECTIONS];
        entries[0] = SectionEntry {
            offset: HEADER_LEN as u64,
            len: self.pos - HEADER_LEN as u64,
            crc: self.tokens_crc.clone().finalize(),
            kind: 1,
            reserved: 0,
        };
        let scales = std::mem::take(&mut self.scales);
        let crcs = std::mem::take(&mut self.doc_crcs);
        for (i, bytes) in [(1, bytemuck::cast_slice::<f32, u8>(&scales)), (2, bytemuck::cast_slice(&crcs))] {
            let pad = (sections::ALIGN - (self.pos as usize % sections::ALIGN)) % sections::ALIGN;
            self.w.write_all(&[0u8; sections::ALIGN][..pad])?;
            self.pos += pad as u64;
            entries[i] = SectionEntry::new(i, self.pos, bytes);
            self.w.write_all(bytes)?;
            self.pos += bytes.len() as u64;
        }
        let mut h = Header {
            magic: *MAGIC,
            major: MAJOR,
            minor: MINOR,
            dim: self.dim as u32,
            n_docs: crcs.len() as u64,
            n_tokens: *self.offsets.last().expect("offsets start at 0"),
            file_len: self.pos,
            section_count: SECTION_COUNT as u32,
            header_crc: 0,
            token_type: self.token_type.id(),
            reserved0: 0,
            offsets_crc: crc32(bytemuck::cast_slice(&self.offsets)),
            segment_crc,
            reserved0b: 0,
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

/// An opened kept copy: sizes and section ranges (its rows not yet verified).
#[derive(Debug, Clone)]
pub struct KeepLayout {
    pub dim: usize,
    pub n_docs: usize,
    pub n_tokens: usize,
    pub token_type: TokenType,
    /// CRC-32 of the DOC_OFFSETS of the segment it copies.
    pub offsets_crc: u32,
    /// CRC-32 of the TOKENS of the segment it copies.
    pub segment_crc: u32,
    tokens: Range<usize>,
    scales: Range<usize>,
    doc_crcs: Range<usize>,
    tokens_crc: u32,
    scales_crc: u32,
}

impl KeepLayout {
    /// Verifies the header, the section table (bounds, order, padding), the
    /// sizes and DOC_CRCS' checksum — not the rows. `bytes` must start
    /// 8-byte aligned. Never panics on bad input.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let h: Header = sections::read_header(bytes, "kept copy")?;
        sections::Prelude {
            what: "kept copy",
            magic: h.magic,
            expected_magic: MAGIC,
            crc_ok: header_crc(h) == h.header_crc,
            crc_at: HEADER_CRC_AT,
            major: h.major,
            minor: h.minor,
            oldest_major: MAJOR,
            supported_major: MAJOR,
            file_len: h.file_len,
            file_len_at: 32,
            section_count: h.section_count,
            section_count_at: 40,
            sections: SECTION_COUNT..=MAX_SECTIONS,
        }
        .check(bytes)?;
        let (dim, n_docs, n_tokens) = (h.dim as usize, h.n_docs as usize, h.n_tokens as usize);
        if !(1..=4096).contains(&dim) || n_docs == 0 {
            return Err(corrupted(12, format!("dim {dim} / n_docs {n_docs} out of range")));
        }
        let token_type = TokenType::from_id(h.token_type)
            .filter(|t| matches!(t, TokenType::F16 | TokenType::Int8))
            .ok_or_else(|| corrupted(48, format!("token type {}: a kept copy holds f16 or int8", h.token_type)))?;
        let entries = &h.sections[..h.section_count as usize];
        let [tokens, scales, doc_crcs] =
            sections::verify_some::<SECTION_COUNT>(bytes, entries, TABLE_AT, HEADER_LEN, |i| i == 2)?;
        let want = [
            n_tokens.checked_mul(token_type.row_bytes(dim)),
            n_tokens.checked_mul(token_type.scale_bytes()),
            n_docs.checked_mul(4),
        ];
        for (r, want) in [&tokens, &scales, &doc_crcs].into_iter().zip(want) {
            if Some(r.len()) != want {
                return Err(corrupted(r.start, format!("section is {} bytes, expected {want:?}", r.len())));
            }
        }
        Ok(Self {
            dim,
            n_docs,
            n_tokens,
            token_type,
            offsets_crc: h.offsets_crc,
            segment_crc: h.segment_crc,
            tokens,
            scales,
            doc_crcs,
            tokens_crc: h.sections[0].crc,
            scales_crc: h.sections[1].crc,
        })
    }

    /// Document `i`'s rows, as the segment's `offsets` (DOC_OFFSETS, whose
    /// checksum is [`offsets_crc`](Self::offsets_crc)) bound them. Not verified:
    /// see [`verify_doc`](Self::verify_doc).
    pub fn doc_rows<'a>(&self, bytes: &'a [u8], offsets: &[u64], i: usize) -> StoredRows<'a> {
        let (a, b) = (offsets[i] as usize, offsets[i + 1] as usize);
        let row = self.token_type.row_bytes(self.dim);
        let scales = self.scales(bytes);
        StoredRows {
            rows: &bytes[self.tokens.start + a * row..self.tokens.start + b * row],
            scales: if scales.is_empty() { &[] } else { &scales[a..b] },
            codes: &[],
        }
    }

    /// Document `i`'s rows against its DOC_CRCS entry (and its scales finite
    /// and non-negative): `Corrupted` at the start of its rows otherwise.
    pub fn verify_doc(&self, bytes: &[u8], offsets: &[u64], i: usize) -> Result<()> {
        let d = self.doc_rows(bytes, offsets, i);
        let at = d.rows.as_ptr() as usize - bytes.as_ptr() as usize;
        let want = u32::from_le_bytes(bytes[self.doc_crcs.start + 4 * i..][..4].try_into().expect("4 bytes"));
        if doc_crc(d.rows, d.scales) != want {
            return Err(corrupted(at, format!("kept rows of document {i} fail their checksum")));
        }
        if d.scales.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(corrupted(at, format!("a kept scale of document {i} is not a finite non-negative number")));
        }
        Ok(())
    }

    /// Every section's checksum and every document (what `inspect` runs).
    pub fn verify_all(&self, bytes: &[u8], offsets: &[u64]) -> Result<()> {
        for (r, crc) in [(&self.tokens, self.tokens_crc), (&self.scales, self.scales_crc)] {
            if crc32(&bytes[r.clone()]) != crc {
                return Err(corrupted(r.start, "section checksum mismatch"));
            }
        }
        (0..self.n_docs).try_for_each(|i| self.verify_doc(bytes, offsets, i))
    }

    /// Every document's rows (TOKENS), unverified.
    pub fn rows<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.tokens.clone()]
    }

    /// Every token's scale (SCALES; empty for f16), unverified.
    pub fn scales<'a>(&self, bytes: &'a [u8]) -> &'a [f32] {
        bytemuck::cast_slice(&bytes[self.scales.clone()])
    }
}

/// The offsets a kept copy reads with, against the checksum it recorded.
pub fn offsets_match(layout: &KeepLayout, offsets: &[u64]) -> bool {
    offsets.len() == layout.n_docs + 1
        && offsets.last().copied() == Some(layout.n_tokens as u64)
        && crc32(bytemuck::cast_slice(offsets)) == layout.offsets_crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn aligned(bytes: &[u8]) -> Vec<u64> {
        let mut v = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
        v
    }

    /// Two int8 documents of dim 3 (2 and 1 rows).
    fn sample() -> (Vec<u8>, Vec<u64>) {
        let mut w = KeepWriter::new(Cursor::new(Vec::new()), 3, TokenType::Int8).unwrap();
        w.add(StoredRows { rows: &[1, 2, 3, 4, 5, 6], scales: &[0.5, 0.25], codes: &[] }).unwrap();
        w.add(StoredRows { rows: &[7, 8, 9], scales: &[2.0], codes: &[] }).unwrap();
        (w.finish(0x5E6_C4C).unwrap().0.into_inner(), vec![0, 2, 3])
    }

    #[test]
    fn rows_round_trip_and_each_document_is_verified_as_read() {
        let (raw, offsets) = sample();
        let store = aligned(&raw);
        let b = &bytemuck::cast_slice::<u64, u8>(&store)[..raw.len()];
        let l = KeepLayout::parse(b).unwrap();
        assert_eq!((l.dim, l.n_docs, l.n_tokens, l.token_type, l.segment_crc), (3, 2, 3, TokenType::Int8, 0x5E6_C4C));
        assert!(offsets_match(&l, &offsets) && !offsets_match(&l, &[0, 1, 3]));
        let d = l.doc_rows(b, &offsets, 1);
        assert_eq!((d.rows, d.scales), (&[7u8, 8, 9][..], &[2.0f32][..]));
        l.verify_all(b, &offsets).unwrap();
        // A flipped row byte: opening still succeeds (rows are not read); its document fails when read.
        let mut bad = raw.clone();
        bad[HEADER_LEN + 4] ^= 1;
        let store = aligned(&bad);
        let b = &bytemuck::cast_slice::<u64, u8>(&store)[..bad.len()];
        let l = KeepLayout::parse(b).unwrap();
        l.verify_doc(b, &offsets, 1).unwrap();
        let e = l.verify_doc(b, &offsets, 0).unwrap_err();
        assert!(matches!(e, crate::FormatError::Corrupted { offset, .. } if offset == HEADER_LEN as u64), "{e}");
        assert!(l.verify_all(b, &offsets).is_err());
    }

    #[test]
    fn damaged_headers_tables_and_document_checksums_are_refused_on_open() {
        let (raw, _) = sample();
        let parse = |bytes: &[u8]| {
            let store = aligned(bytes);
            KeepLayout::parse(&bytemuck::cast_slice::<u64, u8>(&store)[..bytes.len()]).is_ok()
        };
        assert!(parse(&raw));
        let store = aligned(&raw);
        let l = KeepLayout::parse(&bytemuck::cast_slice::<u64, u8>(&store)[..raw.len()]).unwrap();
        // Any byte of the header, the table or DOC_CRCS; any truncation.
        for at in (0..HEADER_LEN).chain(l.doc_crcs.clone()) {
            let mut bad = raw.clone();
            bad[at] ^= 0x10;
            assert!(!parse(&bad), "byte {at} flipped");
        }
        for cut in 0..raw.len() {
            assert!(!parse(&raw[..cut]), "cut at {cut}");
        }
    }
}
