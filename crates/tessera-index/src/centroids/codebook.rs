//! The codebook file: a collection's trained centroids. Specified in
//! `storage-format/SPEC.md` ("Codebook file"); the same table follows.
//!
//! A 384-byte header, then five sections (three in version 1.0), each at a
//! multiple of 64. Little-endian.
//! ```text
//! offset size field
//!      0    8 magic "TESSCBK\0"
//!      8    2 major version (1)
//!     10    2 minor version (1; 0 is read)
//!     12    4 dim                    (1..=65536)
//!     16    8 k: centroids           (1..=65536: codes are u16)
//!     24    8 file length            (bytes, header included)
//!     32    8 tokens in the training sample
//!     40    4 k-means iterations     (recorded)
//!     44    4 section count          (5 in version 1.1, 3 in 1.0; a newer minor may have up to 8)
//!     48    8 seed                   (recorded)
//!     56    4 mean similarity        (f32: the sample's mean cosine to its nearest centroid)
//!     60    4 header CRC-32          (of bytes 0..384 with this field zeroed)
//!     64    4 g: groups              (1..=k)
//!     68    1 bits                   (1.1: residual bits per dimension, 2 or 4; 0: no residual tables)
//!     69   59 reserved               (zero)
//!    128  256 section table (8 × 32 bytes, as in every sectioned file)
//! ```
//! Sections (kind, content):
//! ```text
//! 1 CENTROIDS      k × dim f32, row-major, every value finite; token codes index these rows
//! 2 GROUPS         g × dim f32: the group centroids that route a token to its groups
//! 3 GROUP_OFFSETS  (g + 1) u32 o: group j holds centroids o[j] .. o[j+1];
//!                  o[0] = 0, strictly increasing, o[g] = k
//! 4 CUTOFFS        (1.1) dim × (2^bits − 1) f32, finite, non-decreasing within each
//!                  dimension: a residual's bucket is how many of its dimension's are ≤ it
//! 5 WEIGHTS        (1.1) dim × 2^bits f32, finite: the value each bucket stands for
//! ```
//! Sections 4 and 5 are empty when `bits` is 0.
//! The CRC-32 of CENTROIDS identifies the codebook: a segment's centroid
//! index records it.

use super::CentroidError;
use bytemuck::{Pod, Zeroable};
use std::ops::Range;
use tessera_format::sections::{self, SectionEntry};
use tessera_format::{FormatError, corrupted, crc32};

pub const MAGIC: &[u8; 8] = b"TESSCBK\0";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 1;
pub const HEADER_LEN: usize = 384;
const MAX_SECTIONS: usize = 8;
const SECTION_COUNT: usize = 5;
/// Sections of a version 1.0 codebook.
const SECTION_COUNT_V1_0: usize = 3;
const HEADER_CRC_AT: usize = 60;
const TABLE_AT: usize = 128;
/// Most centroids a codebook may have (codes are u16).
pub const MAX_K: usize = 1 << 16;
const MAX_DIM: usize = 65536;

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Header {
    magic: [u8; 8],
    major: u16,
    minor: u16,
    dim: u32,
    k: u64,
    file_len: u64,
    sample_tokens: u64,
    iterations: u32,
    section_count: u32,
    seed: u64,
    mean_similarity: f32,
    header_crc: u32,
    g: u32,
    bits: u8,
    reserved0: [u8; 3],
    reserved: [u32; 14],
    sections: [SectionEntry; MAX_SECTIONS],
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN);

fn header_crc(mut h: Header) -> u32 {
    h.header_crc = 0;
    crc32(bytemuck::bytes_of(&h))
}

/// What a codebook file records besides its centroids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodebookInfo {
    pub dim: usize,
    pub k: usize,
    pub sample_tokens: u64,
    pub iterations: u32,
    pub seed: u64,
    pub mean_similarity: f32,
}

/// A codebook's residual tables (version 1.1): what residual tokens coded
/// with it need besides the centroids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidualTables<'a> {
    /// Bits per dimension: 2 or 4.
    pub bits: u32,
    /// `dim × (2^bits − 1)`, non-decreasing within each dimension.
    pub cutoffs: &'a [f32],
    /// `dim × 2^bits`: the value each bucket stands for.
    pub weights: &'a [f32],
}

impl ResidualTables<'_> {
    /// Whether the tables fit `dim` and hold finite values with cutoffs in
    /// order; the message says what is wrong, and where, when they do not.
    fn check(&self, dim: usize) -> Result<(), (usize, String)> {
        if ![2, 4].contains(&self.bits) {
            return Err((0, format!("residual tables of {} bits: 2 or 4", self.bits)));
        }
        let nb = 1usize << self.bits;
        if self.cutoffs.len() != dim * (nb - 1) || self.weights.len() != dim * nb {
            return Err((0, format!("residual tables of {} bits and dim {dim} have the wrong sizes", self.bits)));
        }
        if let Some(i) = self.cutoffs.iter().chain(self.weights).position(|x| !x.is_finite()) {
            return Err((i, "residual table value is not finite".into()));
        }
        match self.cutoffs.chunks_exact(nb - 1).position(|c| c.windows(2).any(|w| w[1] < w[0])) {
            Some(k) => Err((k * (nb - 1), format!("cutoffs of dimension {k} are not in order"))),
            None => Ok(()),
        }
    }
}

/// Serialises a trained codebook (with the residual tables of a residual
/// collection's) into a complete file.
///
/// # Errors
/// If `k` or `dim` is out of range, a value is not finite, the groups do
/// not partition the centroids, or the tables do not fit.
pub fn write(
    t: &super::Trained,
    info: &CodebookInfo,
    tables: Option<&ResidualTables<'_>>,
) -> Result<Vec<u8>, CentroidError> {
    let CodebookInfo { dim, k, .. } = *info;
    if !(1..=MAX_DIM).contains(&dim) || !(1..=MAX_K).contains(&k) || t.centroids.len() != k * dim {
        return Err(CentroidError(format!("a codebook holds 1..={MAX_K} centroids of dim 1..={MAX_DIM}")));
    }
    if t.centroids.iter().chain(&t.groups).any(|x| !x.is_finite()) {
        return Err(CentroidError("centroids must be finite".into()));
    }
    let g = t.groups.len() / dim;
    if let Err(e) = check_groups(&t.group_offsets, g, k) {
        return Err(CentroidError(e));
    }
    if let Some(Err((_, e))) = tables.map(|r| r.check(dim)) {
        return Err(CentroidError(e));
    }
    let mut out = vec![0u8; HEADER_LEN];
    let mut entries = [SectionEntry::zeroed(); MAX_SECTIONS];
    let parts: [&[u8]; SECTION_COUNT] = [
        bytemuck::cast_slice(&t.centroids),
        bytemuck::cast_slice(&t.groups),
        bytemuck::cast_slice(&t.group_offsets),
        bytemuck::cast_slice(tables.map_or(&[][..], |r| r.cutoffs)),
        bytemuck::cast_slice(tables.map_or(&[][..], |r| r.weights)),
    ];
    for (i, bytes) in parts.iter().enumerate() {
        entries[i] = sections::append(&mut out, i, bytes);
    }
    let mut h = Header {
        magic: *MAGIC,
        major: MAJOR,
        minor: MINOR,
        dim: dim as u32,
        k: k as u64,
        file_len: out.len() as u64,
        sample_tokens: info.sample_tokens,
        iterations: info.iterations,
        section_count: SECTION_COUNT as u32,
        seed: info.seed,
        mean_similarity: info.mean_similarity,
        header_crc: 0,
        g: g as u32,
        bits: tables.map_or(0, |r| r.bits as u8),
        reserved0: [0; 3],
        reserved: [0; 14],
        sections: entries,
    };
    h.header_crc = header_crc(h);
    out[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
    Ok(out)
}

/// `g ≥ 1` groups whose offsets run from 0 to `k`, strictly increasing.
fn check_groups(offsets: &[u32], g: usize, k: usize) -> Result<(), String> {
    if g == 0 || offsets.len() != g + 1 || offsets[0] != 0 || offsets[g] as usize != k {
        return Err(format!("{g} groups need {} offsets from 0 to k = {k}", g + 1));
    }
    match offsets.windows(2).position(|w| w[0] >= w[1]) {
        Some(j) => Err(format!("group {j} is empty or out of order")),
        None => Ok(()),
    }
}

/// A verified codebook file. Accessors take the same bytes that were verified.
#[derive(Debug, Clone)]
pub struct CodebookLayout {
    pub minor: u16,
    pub info: CodebookInfo,
    /// CRC-32 of the CENTROIDS section: the codebook's identity.
    pub crc: u32,
    /// Residual bits per dimension of its tables (0: it has none).
    pub bits: u32,
    centroids: Range<usize>,
    groups: Range<usize>,
    offsets: Range<usize>,
    cutoffs: Range<usize>,
    weights: Range<usize>,
}

impl CodebookLayout {
    /// Verifies magic, version, checksums, sizes and that every value is
    /// finite. `bytes` must start 8-byte aligned. Never panics on bad input.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let h: Header = sections::read_header(bytes, "codebook")?;
        let known = if h.minor == 0 { SECTION_COUNT_V1_0 } else { SECTION_COUNT };
        sections::Prelude {
            what: "codebook",
            magic: h.magic,
            expected_magic: MAGIC,
            crc_ok: header_crc(h) == h.header_crc,
            crc_at: HEADER_CRC_AT,
            major: h.major,
            minor: h.minor,
            oldest_major: MAJOR,
            supported_major: MAJOR,
            file_len: h.file_len,
            file_len_at: 24,
            section_count: h.section_count,
            section_count_at: 44,
            sections: known..=MAX_SECTIONS,
        }
        .check(bytes)?;
        let (dim, k) = (h.dim as usize, usize::try_from(h.k).unwrap_or(usize::MAX));
        if !(1..=MAX_DIM).contains(&dim) {
            return Err(corrupted(12, format!("dim {dim} out of range")));
        }
        if !(1..=MAX_K).contains(&k) {
            return Err(corrupted(16, format!("{k} centroids: a codebook holds 1..={MAX_K}")));
        }
        let g = h.g as usize;
        if !(1..=k).contains(&g) {
            return Err(corrupted(64, format!("{g} groups for {k} centroids")));
        }
        let entries = &h.sections[..h.section_count as usize];
        let ranges = sections::verify::<SECTION_COUNT>(bytes, entries, TABLE_AT, HEADER_LEN)?;
        let bits = h.bits as u32;
        if !matches!(bits, 0 | 2 | 4) || (h.minor == 0 && bits != 0) {
            return Err(corrupted(68, format!("{bits} residual bits: 0, 2 or 4 (0 in version 1.0)")));
        }
        let nb = (1usize << bits) * (bits > 0) as usize;
        let sizes = [k * dim * 4, g * dim * 4, (g + 1) * 4, dim * nb.saturating_sub(1) * 4, dim * nb * 4];
        for (r, want) in ranges.iter().zip(sizes) {
            if r.len() != want {
                return Err(corrupted(r.start, format!("section is {} bytes, expected {want}", r.len())));
            }
        }
        let [centroids, groups, offsets, cutoffs, weights] = ranges;
        for r in [&centroids, &groups] {
            let values: &[f32] = bytemuck::cast_slice(&bytes[r.clone()]);
            if let Some(i) = values.iter().position(|x| !x.is_finite()) {
                return Err(corrupted(r.start + 4 * i, "centroid value is not finite"));
            }
        }
        let o: &[u32] = bytemuck::cast_slice(&bytes[offsets.clone()]);
        check_groups(o, g, k).map_err(|e| corrupted(offsets.start, e))?;
        let tables = ResidualTables {
            bits,
            cutoffs: bytemuck::cast_slice(&bytes[cutoffs.clone()]),
            weights: bytemuck::cast_slice(&bytes[weights.clone()]),
        };
        if bits > 0
            && let Err((i, e)) = tables.check(dim)
        {
            let n_cut = tables.cutoffs.len();
            let at = if i < n_cut { cutoffs.start + 4 * i } else { weights.start + 4 * (i - n_cut) };
            return Err(corrupted(at, e));
        }
        Ok(Self {
            minor: h.minor,
            bits,
            info: CodebookInfo {
                dim,
                k,
                sample_tokens: h.sample_tokens,
                iterations: h.iterations,
                seed: h.seed,
                mean_similarity: h.mean_similarity,
            },
            crc: h.sections[0].crc,
            centroids,
            groups,
            offsets,
            cutoffs,
            weights,
        })
    }

    /// The centroids, `k × dim` row-major.
    pub fn centroids<'a>(&self, bytes: &'a [u8]) -> &'a [f32] {
        bytemuck::cast_slice(&bytes[self.centroids.clone()])
    }

    /// The group centroids, `g × dim` row-major.
    pub fn groups<'a>(&self, bytes: &'a [u8]) -> &'a [f32] {
        bytemuck::cast_slice(&bytes[self.groups.clone()])
    }

    /// The `g + 1` group offsets.
    pub fn group_offsets<'a>(&self, bytes: &'a [u8]) -> &'a [u32] {
        bytemuck::cast_slice(&bytes[self.offsets.clone()])
    }

    /// Its residual tables, if it has them.
    pub fn residual_tables<'a>(&self, bytes: &'a [u8]) -> Option<ResidualTables<'a>> {
        (self.bits > 0).then(|| ResidualTables {
            bits: self.bits,
            cutoffs: bytemuck::cast_slice(&bytes[self.cutoffs.clone()]),
            weights: bytemuck::cast_slice(&bytes[self.weights.clone()]),
        })
    }

    /// The codebook packed for coding tokens.
    pub fn quantizer(&self, bytes: &[u8]) -> super::Quantizer {
        super::Quantizer::new(self.centroids(bytes), self.groups(bytes), self.group_offsets(bytes), self.info.dim)
    }
}

/// The identity a codebook's file will have: the CRC-32 of its CENTROIDS section.
pub fn identity(centroids: &[f32]) -> u32 {
    crc32(bytemuck::cast_slice(centroids))
}
