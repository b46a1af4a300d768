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
/// alignment, order, bounds and checksums. Returns the byte ranges of the
/// first `N` sections (those this version knows; later ones are verified and ignored).
pub fn verify<const N: usize>(
    bytes: &[u8],
    entries: &[SectionEntry],
    table_at: usize,
    header_len: usize,
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
        if crc32(&bytes[start..end]) != e.crc {
            return Err(corrupted(start, format!("section {i} checksum mismatch")));
        }
        if i < N {
            ranges[i] = start..end;
        }
        prev_end = end;
    }
    Ok(ranges)
}
