//! Section tables, shared by every file made of a fixed header and aligned
//! sections (segments, HNSW index files).
//!
//! Entry `i` of a table (32 bytes, little-endian):
//! ```text
//! offset size field
//!      0    8 section offset in the file (multiple of ALIGN, ≥ end of the header and of section i−1)
//!      8    8 section length in bytes
//!     16    4 CRC-32 of the section's bytes
//!     20    4 kind = i + 1
//!     24    8 reserved (zero)
//! ```

use crate::{Result, corrupted, crc32};
use bytemuck::{Pod, Zeroable};
use std::ops::Range;

/// Alignment of every section's start.
pub const ALIGN: usize = 64;

/// One entry of a section table.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct SectionEntry {
    pub offset: u64,
    pub len: u64,
    pub crc: u32,
    pub kind: u32,
    pub reserved: u64,
}

const _: () = assert!(size_of::<SectionEntry>() == 32);

impl SectionEntry {
    /// The entry of section `index` holding `bytes` at `offset`.
    pub fn new(index: usize, offset: u64, bytes: &[u8]) -> Self {
        Self { offset, len: bytes.len() as u64, crc: crc32(bytes), kind: index as u32 + 1, reserved: 0 }
    }
}

/// Appends `bytes` to `out` as section `index`, after zero padding to [`ALIGN`].
pub fn append(out: &mut Vec<u8>, index: usize, bytes: &[u8]) -> SectionEntry {
    out.resize(out.len().next_multiple_of(ALIGN), 0);
    let e = SectionEntry::new(index, out.len() as u64, bytes);
    out.extend_from_slice(bytes);
    e
}

/// Verifies the first `entries.len()` entries of a table stored at `table_at`
/// against `bytes` (the whole file, whose header is `header_len` bytes): kinds,
/// alignment, order, bounds, checksums, and that the padding before each
/// section is zero (so that no byte of the file goes unchecked). Returns the
/// byte ranges of the first `N` sections (those this version knows; later
/// ones are verified and ignored).
pub fn verify<const N: usize>(
    bytes: &[u8],
    entries: &[SectionEntry],
    table_at: usize,
    header_len: usize,
) -> Result<[Range<usize>; N]> {
    verify_some(bytes, entries, table_at, header_len, |_| true)
}

/// [`verify`], checksumming only the sections `checksummed` says (by index):
/// for files whose large sections are verified piece by piece as they are read.
pub fn verify_some<const N: usize>(
    bytes: &[u8],
    entries: &[SectionEntry],
    table_at: usize,
    header_len: usize,
    checksummed: impl Fn(usize) -> bool,
) -> Result<[Range<usize>; N]> {
    let mut ranges: [Range<usize>; N] = std::array::from_fn(|_| 0..0);
    let mut prev_end = header_len;
    for (i, e) in entries.iter().enumerate() {
        let at = table_at + i * size_of::<SectionEntry>();
        if e.kind as usize != i + 1 {
            return Err(corrupted(at + 20, format!("section {i} has kind {}", e.kind)));
        }
        let start = usize::try_from(e.offset).unwrap_or(usize::MAX);
        let end = usize::try_from(e.len).ok().and_then(|l| start.checked_add(l)).filter(|&x| x <= bytes.len());
        let Some(end) = end.filter(|_| start.is_multiple_of(ALIGN) && start >= prev_end) else {
            return Err(corrupted(at, format!("section {i} range {}+{} is invalid", e.offset, e.len)));
        };
        if let Some(p) = bytes[prev_end..start].iter().position(|&b| b != 0) {
            return Err(corrupted(prev_end + p, format!("padding before section {i} is not zero")));
        }
        if checksummed(i) && crc32(&bytes[start..end]) != e.crc {
            return Err(corrupted(start, format!("section {i} checksum mismatch")));
        }
        if i < N {
            ranges[i] = start..end;
        }
        prev_end = end;
    }
    Ok(ranges)
}

/// Reads the fixed header (a plain-old-data struct of `size_of::<H>()`
/// bytes) at the start of a sectioned file, after checking that the file is
/// long enough and starts 8-byte aligned in memory (tables are read in place).
/// `what` names the file kind in errors.
pub fn read_header<H: Pod>(bytes: &[u8], what: &str) -> Result<H> {
    let len = size_of::<H>();
    if bytes.len() < len {
        return Err(corrupted(0, format!("file is {} bytes, shorter than the {what} header", bytes.len())));
    }
    if !(bytes.as_ptr() as usize).is_multiple_of(8) {
        return Err(corrupted(0, format!("{what} bytes are not 8-byte aligned in memory")));
    }
    Ok(bytemuck::pod_read_unaligned(&bytes[..len]))
}

/// The checks every sectioned file's header passes, in this order: magic,
/// header checksum, major version, file length, section count. Offsets name
/// the fields in error reports.
#[derive(Debug, Clone)]
pub struct Prelude<'a> {
    pub what: &'a str,
    pub magic: [u8; 8],
    pub expected_magic: &'a [u8; 8],
    pub crc_ok: bool,
    pub crc_at: usize,
    pub major: u16,
    pub minor: u16,
    /// Major versions this build reads: `oldest_major..=supported_major`.
    pub oldest_major: u16,
    pub supported_major: u16,
    pub file_len: u64,
    pub file_len_at: usize,
    pub section_count: u32,
    pub section_count_at: usize,
    /// Section counts this version reads (newer minors may add sections).
    pub sections: std::ops::RangeInclusive<usize>,
}

impl Prelude<'_> {
    pub fn check(&self, bytes: &[u8]) -> Result<()> {
        if &self.magic != self.expected_magic {
            return Err(corrupted(0, format!("bad magic: not a Tessera {}", self.what)));
        }
        if !self.crc_ok {
            return Err(corrupted(self.crc_at, "header checksum mismatch"));
        }
        if !(self.oldest_major..=self.supported_major).contains(&self.major) {
            return Err(crate::FormatError::UnsupportedVersion {
                major: self.major,
                minor: self.minor,
                supported: self.supported_major,
            });
        }
        if self.file_len != bytes.len() as u64 {
            let msg = format!("header says {} bytes, file has {}", self.file_len, bytes.len());
            return Err(corrupted(self.file_len_at, msg));
        }
        if !self.sections.contains(&(self.section_count as usize)) {
            return Err(corrupted(self.section_count_at, format!("section count {} unsupported", self.section_count)));
        }
        Ok(())
    }
}
