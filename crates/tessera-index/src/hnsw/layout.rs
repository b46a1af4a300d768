//! The HNSW index file: layout, writing and verification, and the in-place
//! search over verified bytes. Specified in `storage-format/SPEC.md`
//! ("HNSW index file"); the same tables follow.
//!
//! A 384-byte header, then five sections, each at an offset that is a
//! multiple of 64 (zero bytes pad the gaps). Little-endian throughout.
//! ```text
//! offset size field
//!      0    8 magic "TESSHNW\0"
//!      8    2 major version (1)
//!     10    2 minor version (0)
//!     12    4 dim                    (1..=65536)
//!     16    8 n: nodes               (0..2^32 − 1; node ids are u32, u32::MAX is padding)
//!     24    8 file length            (bytes, header included)
//!     32    4 m: links per node and level ≥ 1 (2..=128)
//!     36    4 m0: links per node on level 0 (m..=256; 2·m when written)
//!     40    4 ef_construction        (recorded, not used by search)
//!     44    4 max_level              (≤ 32; 0 when n = 0)
//!     48    4 entry point            (a node with level = max_level; u32::MAX when n = 0)
//!     52    4 section count          (5 in version 1.0; a newer minor may have up to 8)
//!     56    8 n_upper: Σ levels      (number of level-≥1 link lists)
//!     64    8 seed of the level draw (recorded)
//!     72    4 header CRC-32          (of bytes 0..384 with this field zeroed)
//!     76   52 reserved               (zero)
//!    128  256 section table: 8 entries × 32 bytes; entry i (i < count):
//!              +0 u64 offset, +8 u64 length, +16 u32 CRC-32 of the section's bytes,
//!              +20 u32 kind (= i + 1), +24 u64 reserved (zero); unused entries are zero.
//! ```
//! Sections (kind, content):
//! ```text
//! 1 VECTORS        n × dim f16, row-major: node i's vector is row i
//! 2 LEVELS         n u8: node i lives on levels 0..=levels[i] (≤ max_level)
//! 3 LAYER0         n × m0 u32: node i's level-0 links, then u32::MAX padding to m0
//! 4 UPPER_OFFSETS  (n + 1) u64 o: node i's lists for levels 1..=levels[i] are lists
//!                  o[i] .. o[i+1] of UPPER_LINKS (level l is list o[i] + l − 1);
//!                  o[0] = 0, o[i+1] − o[i] = levels[i], o[n] = n_upper
//! 5 UPPER_LINKS    n_upper × m u32: one list per (node, level ≥ 1), u32::MAX-padded
//! ```
//! A link list holds distinct node ids other than its own node, each `< n`
//! and, on level l, of a node whose level is ≥ l; padding only follows links.

use super::HnswParams;
use super::build::Graph;
use super::graph::{Cand, NONE, View, greedy, search_level, with_scratch};
use crate::dot::dot_f16;
use bytemuck::{Pod, Zeroable};
use half::f16;
use std::ops::Range;
use tessera_format::sections::{self, SectionEntry};
use tessera_format::{FormatError, corrupted, crc32};

pub const MAGIC: &[u8; 8] = b"TESSHNW\0";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 0;
pub const HEADER_LEN: usize = 384;
pub const MAX_SECTIONS: usize = 8;
pub const SECTION_COUNT: usize = 5;
const MAX_DIM: usize = 65536;
const MAX_LEVEL: u32 = 32;
const HEADER_CRC_AT: usize = 72;
const TABLE_AT: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Section {
    Vectors = 0,
    Levels,
    Layer0,
    UpperOffsets,
    UpperLinks,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Header {
    magic: [u8; 8],
    major: u16,
    minor: u16,
    dim: u32,
    n: u64,
    file_len: u64,
    m: u32,
    m0: u32,
    ef_construction: u32,
    max_level: u32,
    entry: u32,
    section_count: u32,
    n_upper: u64,
    seed: u64,
    header_crc: u32,
    reserved0: u32,
    reserved: [u8; 48],
    sections: [SectionEntry; MAX_SECTIONS],
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN);

fn header_crc(mut h: Header) -> u32 {
    h.header_crc = 0;
    crc32(bytemuck::bytes_of(&h))
}

/// Serialises a built graph and its (f16) vectors into a complete file.
pub(crate) fn write(vectors: &[f16], dim: usize, p: &HnswParams, g: &Graph) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    let mut entries = [SectionEntry::zeroed(); MAX_SECTIONS];
    let parts: [&[u8]; SECTION_COUNT] = [
        bytemuck::cast_slice(vectors),
        &g.levels,
        bytemuck::cast_slice(&g.layer0),
        bytemuck::cast_slice(&g.upper_off),
        bytemuck::cast_slice(&g.upper),
    ];
    for (i, bytes) in parts.iter().enumerate() {
        entries[i] = sections::append(&mut out, i, bytes);
    }
    let mut h = Header {
        magic: *MAGIC,
        major: MAJOR,
        minor: MINOR,
        dim: dim as u32,
        n: g.levels.len() as u64,
        file_len: out.len() as u64,
        m: g.m as u32,
        m0: g.m0 as u32,
        ef_construction: p.ef_construction.min(u32::MAX as usize) as u32,
        max_level: g.max_level as u32,
        entry: g.entry,
        section_count: SECTION_COUNT as u32,
        n_upper: g.upper_off.last().copied().unwrap_or(0),
        seed: p.seed,
        header_crc: 0,
        reserved0: 0,
        reserved: [0; 48],
        sections: entries,
    };
    h.header_crc = header_crc(h);
    out[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
    out
}

/// A verified index file: sizes, parameters and the byte range of each
/// section. Accessors take the same bytes that were verified (e.g. a memory map).
#[derive(Debug, Clone)]
pub struct HnswLayout {
    pub minor: u16,
    dim: usize,
    n: usize,
    pub m: usize,
    pub m0: usize,
    pub ef_construction: usize,
    pub max_level: usize,
    entry: u32,
    n_upper: usize,
    sections: [Range<usize>; SECTION_COUNT],
}

impl HnswLayout {
    /// Verifies magic, version, header and section checksums, section sizes
    /// and the graph's structure. `bytes` must start at an 8-byte-aligned
    /// address (a memory map does). Never panics on bad input.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let h = parse_header(bytes)?;
        let layout = Self::from_header(&h, bytes)?;
        layout.check_sizes()?;
        layout.check_structure(bytes)?;
        Ok(layout)
    }

    fn from_header(h: &Header, bytes: &[u8]) -> Result<Self, FormatError> {
        let (dim, n, m, m0) = (h.dim as usize, h.n as usize, h.m as usize, h.m0 as usize);
        if !(1..=MAX_DIM).contains(&dim) {
            return Err(corrupted(12, format!("dim {dim} out of range")));
        }
        if h.n >= NONE as u64 {
            return Err(corrupted(16, format!("{n} nodes: ids must fit below u32::MAX")));
        }
        if !(2..=128).contains(&m) || !(m..=256).contains(&m0) {
            return Err(corrupted(32, format!("m {m} / m0 {m0} out of range")));
        }
        let empty_ok = n > 0 || (h.entry == NONE && h.max_level == 0 && h.n_upper == 0);
        if h.max_level > MAX_LEVEL || !empty_ok || (n > 0 && h.entry as usize >= n) {
            return Err(corrupted(44, format!("max level {} / entry point {} invalid", h.max_level, h.entry)));
        }
        let entries = &h.sections[..h.section_count as usize];
        let sections = sections::verify::<SECTION_COUNT>(bytes, entries, TABLE_AT, HEADER_LEN)?;
        Ok(Self {
            minor: h.minor,
            dim,
            n,
            m,
            m0,
            ef_construction: h.ef_construction as usize,
            max_level: h.max_level as usize,
            entry: h.entry,
            n_upper: usize::try_from(h.n_upper).unwrap_or(usize::MAX),
            sections,
        })
    }

    fn check_sizes(&self) -> Result<(), FormatError> {
        let expect = [
            (Section::Vectors, self.n.checked_mul(self.dim).and_then(|x| x.checked_mul(2))),
            (Section::Levels, Some(self.n)),
            (Section::Layer0, self.n.checked_mul(self.m0).and_then(|x| x.checked_mul(4))),
            (Section::UpperOffsets, self.n.checked_add(1).and_then(|x| x.checked_mul(8))),
            (Section::UpperLinks, self.n_upper.checked_mul(self.m).and_then(|x| x.checked_mul(4))),
        ];
        for (s, want) in expect {
            let r = &self.sections[s as usize];
            if Some(r.len()) != want {
                return Err(corrupted(r.start, format!("section {s:?} is {} bytes, expected {want:?}", r.len())));
            }
        }
        Ok(())
    }

    fn check_structure(&self, bytes: &[u8]) -> Result<(), FormatError> {
        let levels = self.levels(bytes);
        let at = self.sections[Section::Levels as usize].start;
        if let Some(i) = levels.iter().position(|&l| l as usize > self.max_level) {
            return Err(corrupted(at + i, format!("node {i} has level {} > max level", levels[i])));
        }
        if self.n > 0 && levels[self.entry as usize] as usize != self.max_level {
            return Err(corrupted(48, "entry point is not on the top level"));
        }
        let off = self.upper_offsets(bytes);
        let at = self.sections[Section::UpperOffsets as usize].start;
        if off[0] != 0 || off[self.n] != self.n_upper as u64 {
            return Err(corrupted(at, format!("upper offsets must run from 0 to {}", self.n_upper)));
        }
        if let Some(i) = (0..self.n).find(|&i| off[i + 1].checked_sub(off[i]) != Some(levels[i] as u64)) {
            return Err(corrupted(at + 8 * (i + 1), format!("upper offsets disagree with node {i}'s level")));
        }
        for node in 0..self.n {
            for level in 0..=levels[node] as usize {
                self.check_list(bytes, node, level, levels)?;
            }
        }
        Ok(())
    }

    fn check_list(&self, bytes: &[u8], node: usize, level: usize, levels: &[u8]) -> Result<(), FormatError> {
        let list = self.links(bytes, node as u32, level);
        let len = list.iter().position(|&x| x == NONE).unwrap_or(list.len());
        let bad = |why: String| {
            let (s, base) = match level {
                0 => (Section::Layer0, node * self.m0),
                _ => (Section::UpperLinks, (self.upper_offsets(bytes)[node] as usize + level - 1) * self.m),
            };
            Err(corrupted(self.sections[s as usize].start + 4 * base, format!("node {node} level {level}: {why}")))
        };
        if list[len..].iter().any(|&x| x != NONE) {
            return bad("link after padding".into());
        }
        for (j, &x) in list[..len].iter().enumerate() {
            if x as usize >= self.n || x as usize == node || (levels[x as usize] as usize) < level {
                return bad(format!("invalid link {x}"));
            }
            if list[..j].contains(&x) {
                return bad(format!("duplicate link {x}"));
            }
        }
        Ok(())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    fn section<'a, T: Pod>(&self, bytes: &'a [u8], s: Section) -> &'a [T] {
        bytemuck::cast_slice(&bytes[self.sections[s as usize].clone()])
    }

    /// Node `i`'s stored vector.
    pub fn vector<'a>(&self, bytes: &'a [u8], i: u32) -> &'a [f16] {
        let v: &[f16] = self.section(bytes, Section::Vectors);
        &v[i as usize * self.dim..(i as usize + 1) * self.dim]
    }

    pub fn levels<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.sections[Section::Levels as usize].clone()]
    }

    fn upper_offsets<'a>(&self, bytes: &'a [u8]) -> &'a [u64] {
        self.section(bytes, Section::UpperOffsets)
    }

    /// Node's links on `level` (≤ its level), padded with `u32::MAX`.
    pub fn links<'a>(&self, bytes: &'a [u8], node: u32, level: usize) -> &'a [u32] {
        let i = node as usize;
        if level == 0 {
            &self.section::<u32>(bytes, Section::Layer0)[i * self.m0..(i + 1) * self.m0]
        } else {
            let j = self.upper_offsets(bytes)[i] as usize + level - 1;
            &self.section::<u32>(bytes, Section::UpperLinks)[j * self.m..(j + 1) * self.m]
        }
    }

    /// The best `k` nodes by inner product with `query` (dim f32), best
    /// first, visiting with beam width `ef` (raised to `k` if smaller). Nodes
    /// for which `accept` is false are traversed but never returned.
    pub fn search(
        &self,
        bytes: &[u8],
        query: &[f32],
        k: usize,
        ef: usize,
        accept: impl Fn(u32) -> bool,
    ) -> Vec<(u32, f32)> {
        assert_eq!(query.len(), self.dim, "query must have the index's dimension");
        if self.n == 0 || k == 0 {
            return Vec::new();
        }
        let view = FileView {
            layout: self,
            vectors: self.section(bytes, Section::Vectors),
            layer0: self.section(bytes, Section::Layer0),
            upper_off: self.upper_offsets(bytes),
            upper: self.section(bytes, Section::UpperLinks),
        };
        let mut at = Cand { sim: view.sim(self.entry, query), node: self.entry };
        for level in (1..=self.max_level).rev() {
            at = greedy(&view, query, at, level);
        }
        let mut out = with_scratch(|s| search_level(&view, query, &[at], ef.max(k), 0, &accept, s));
        out.truncate(k);
        out.into_iter().map(|c| (c.node, c.sim)).collect()
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header, FormatError> {
    let h: Header = sections::read_header(bytes, "HNSW index")?;
    sections::Prelude {
        what: "HNSW index",
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
        section_count_at: 52,
        sections: SECTION_COUNT..=MAX_SECTIONS,
    }
    .check(bytes)?;
    Ok(h)
}

/// The verified sections, cast once per search.
struct FileView<'a> {
    layout: &'a HnswLayout,
    vectors: &'a [f16],
    layer0: &'a [u32],
    upper_off: &'a [u64],
    upper: &'a [u32],
}

impl View for FileView<'_> {
    fn n(&self) -> usize {
        self.layout.n
    }
    fn links(&self, node: u32, level: usize) -> &[u32] {
        let (i, m0, m) = (node as usize, self.layout.m0, self.layout.m);
        if level == 0 {
            &self.layer0[i * m0..(i + 1) * m0]
        } else {
            let j = self.upper_off[i] as usize + level - 1;
            &self.upper[j * m..(j + 1) * m]
        }
    }
    fn sim(&self, node: u32, q: &[f32]) -> f32 {
        let d = self.layout.dim;
        dot_f16(&self.vectors[node as usize * d..(node as usize + 1) * d], q)
    }
}
