//! The centroid index file of one segment: every token's centroid code and
//! the inverted lists centroid → documents, verified once and searched in
//! place. Specified in `storage-format/SPEC.md` ("Centroid index file"); the
//! same table follows.
//!
//! A 384-byte header, then three sections, each at a multiple of 64.
//! Little-endian throughout.
//! ```text
//! offset size field
//!      0    8 magic "TESSIVF\0"
//!      8    2 major version (1)
//!     10    2 minor version (0)
//!     12    4 dim                    (of the codebook; recorded)
//!     16    8 n_docs                 (< 2^32)
//!     24    8 file length            (bytes, header included)
//!     32    8 n_tokens               (the segment's token rows)
//!     40    4 k                      (centroids of the codebook, 1..=65536)
//!     44    4 section count          (3 in version 1.0; a newer minor may have up to 8)
//!     48    8 n_pairs                (entries of LIST_DOCS)
//!     56    4 codebook identity      (CRC-32 of the codebook's CENTROIDS section)
//!     60    4 header CRC-32          (of bytes 0..384 with this field zeroed)
//!     64    4 mean similarity        (f32: the tokens' mean cosine to their centroid)
//!     68   60 reserved               (zero)
//!    128  256 section table (8 × 32 bytes)
//! ```
//! Sections (kind, content):
//! ```text
//! 1 CODES         n_tokens u16: token row t's centroid (< k)
//! 2 LIST_OFFSETS  (k + 1) u64 o: centroid c's documents are LIST_DOCS[o[c] .. o[c+1]];
//!                 o[0] = 0, non-decreasing, o[k] = n_pairs
//! 3 LIST_DOCS     n_pairs u32: each list strictly ascending document rows < n_docs
//! ```
//! The lists are exactly what the codes say: document d is in list c iff one
//! of its token rows (`doc_offsets[d] .. doc_offsets[d+1]` of the segment)
//! has code c. [`IvfLayout::parse`] checks that against the segment's offsets.
//!
//! # Candidates
//!
//! A query probes, per query token `i`, its `nprobe` best centroids by dot
//! product (`s_i1 ≥ … ≥ s_iP`). A document's approximate score is
//!
//! ```text
//! approx(d) = Σ_i ( max { s_ic : c probed for i, c ∈ codes(d) }   if d holds a probed centroid
//!                 | s_iP                                           otherwise )
//! ```
//!
//! — centroid interaction (PLAID) restricted to the probed centroids, with a
//! missing token's score imputed by the last probed one (WARP). It is
//! accumulated straight from the probed lists, best centroid first, so a
//! search touches only the documents of `nq × nprobe` lists.

use super::CentroidError;
use bytemuck::{Pod, Zeroable};
use std::cell::RefCell;
use std::ops::Range;
use tessera_format::sections::{self, SectionEntry};
use tessera_format::{FormatError, corrupted, crc32};
use tessera_kernels::CentroidPanels;

pub const MAGIC: &[u8; 8] = b"TESSIVF\0";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 0;
pub const HEADER_LEN: usize = 384;
const MAX_SECTIONS: usize = 8;
const SECTION_COUNT: usize = 3;
const HEADER_CRC_AT: usize = 60;
const TABLE_AT: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Section {
    Codes = 0,
    ListOffsets,
    ListDocs,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Header {
    magic: [u8; 8],
    major: u16,
    minor: u16,
    dim: u32,
    n_docs: u64,
    file_len: u64,
    n_tokens: u64,
    k: u32,
    section_count: u32,
    n_pairs: u64,
    codebook: u32,
    header_crc: u32,
    mean_similarity: f32,
    reserved: [u32; 15],
    sections: [SectionEntry; MAX_SECTIONS],
}

const _: () = assert!(size_of::<Header>() == HEADER_LEN);

fn header_crc(mut h: Header) -> u32 {
    h.header_crc = 0;
    crc32(bytemuck::bytes_of(&h))
}

/// What a centroid index is built from.
#[derive(Debug, Clone, Copy)]
pub struct IvfSource<'a> {
    /// The codebook's dim, size and identity ([`super::codebook::identity`]).
    pub dim: usize,
    pub k: usize,
    pub codebook: u32,
    /// Every token row's code (`< k`).
    pub codes: &'a [u16],
    /// Document `d` is token rows `doc_offsets[d] .. doc_offsets[d+1]`.
    pub doc_offsets: &'a [u64],
    /// The tokens' mean cosine to their centroid.
    pub mean_similarity: f32,
}

/// Builds a complete centroid index file.
///
/// # Errors
/// If the offsets do not cover the codes, a code is `≥ k`, or a size is out of range.
pub fn build(src: &IvfSource<'_>) -> Result<Vec<u8>, CentroidError> {
    let (k, codes, off) = (src.k, src.codes, src.doc_offsets);
    let bad = |m: String| Err(CentroidError(m));
    if !(1..=super::codebook::MAX_K).contains(&k) {
        return bad(format!("k = {k} is out of range"));
    }
    let n_docs = off.len().saturating_sub(1);
    if off.is_empty() || off[0] != 0 || off[n_docs] as usize != codes.len() || off.windows(2).any(|w| w[0] > w[1]) {
        return bad("document offsets must run from 0 to the number of tokens".into());
    }
    if n_docs >= u32::MAX as usize {
        return bad(format!("{n_docs} documents: rows must fit in u32"));
    }
    if codes.iter().any(|&c| c as usize >= k) {
        return bad(format!("a code is ≥ k = {k}"));
    }
    let (offsets, docs) = lists(codes, off, k);
    let mut out = vec![0u8; HEADER_LEN];
    let mut entries = [SectionEntry::zeroed(); MAX_SECTIONS];
    let parts: [&[u8]; SECTION_COUNT] =
        [bytemuck::cast_slice(codes), bytemuck::cast_slice(&offsets), bytemuck::cast_slice(&docs)];
    for (i, bytes) in parts.iter().enumerate() {
        entries[i] = sections::append(&mut out, i, bytes);
    }
    let mut h = Header {
        magic: *MAGIC,
        major: MAJOR,
        minor: MINOR,
        dim: src.dim as u32,
        n_docs: n_docs as u64,
        file_len: out.len() as u64,
        n_tokens: codes.len() as u64,
        k: k as u32,
        section_count: SECTION_COUNT as u32,
        n_pairs: docs.len() as u64,
        codebook: src.codebook,
        header_crc: 0,
        mean_similarity: src.mean_similarity,
        reserved: [0; 15],
        sections: entries,
    };
    h.header_crc = header_crc(h);
    out[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
    Ok(out)
}

/// The inverted lists of `codes`: offsets (`k + 1`) and ascending documents.
fn lists(codes: &[u16], off: &[u64], k: usize) -> (Vec<u64>, Vec<u32>) {
    let n_docs = off.len() - 1;
    // `seen[c]` = 1 + the last document counted for centroid c.
    let mut seen = vec![0u32; k];
    let mut count = vec![0u64; k + 1];
    let mut each_pair = |f: &mut dyn FnMut(usize, u32)| {
        seen.iter_mut().for_each(|s| *s = 0);
        for d in 0..n_docs {
            for &c in &codes[off[d] as usize..off[d + 1] as usize] {
                if seen[c as usize] != d as u32 + 1 {
                    seen[c as usize] = d as u32 + 1;
                    f(c as usize, d as u32);
                }
            }
        }
    };
    each_pair(&mut |c, _| count[c + 1] += 1);
    for c in 0..k {
        count[c + 1] += count[c];
    }
    let mut fill = count.clone();
    let mut docs = vec![0u32; count[k] as usize];
    each_pair(&mut |c, d| {
        docs[fill[c] as usize] = d;
        fill[c] += 1;
    });
    (count, docs)
}

/// A verified centroid index file. Accessors take the same bytes that were verified.
#[derive(Debug, Clone)]
pub struct IvfLayout {
    pub minor: u16,
    pub dim: usize,
    pub n_docs: usize,
    pub n_tokens: usize,
    pub k: usize,
    pub n_pairs: usize,
    /// Identity of the codebook the codes refer to.
    pub codebook: u32,
    pub mean_similarity: f32,
    sections: [Range<usize>; SECTION_COUNT],
}

impl IvfLayout {
    /// Verifies magic, version, checksums and sizes, that every code is
    /// `< k`, and that the lists are exactly those of the codes over the
    /// segment's documents (`doc_offsets`, `n_docs + 1` token offsets).
    /// `bytes` must start 8-byte aligned. Never panics on bad input.
    pub fn parse(bytes: &[u8], doc_offsets: &[u64]) -> Result<Self, FormatError> {
        let h: Header = sections::read_header(bytes, "centroid index")?;
        sections::Prelude {
            what: "centroid index",
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
            sections: SECTION_COUNT..=MAX_SECTIONS,
        }
        .check(bytes)?;
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let (n_docs, n_tokens, k, n_pairs) = (size(h.n_docs), size(h.n_tokens), h.k as usize, size(h.n_pairs));
        if !(1..=super::codebook::MAX_K).contains(&k) {
            return Err(corrupted(40, format!("k = {k} is out of range")));
        }
        if doc_offsets.len() != n_docs.saturating_add(1) || doc_offsets.last().map(|&t| size(t)) != Some(n_tokens) {
            return Err(corrupted(
                16,
                format!(
                    "index has {n_docs} documents of {n_tokens} tokens, the segment {} of {}",
                    doc_offsets.len().saturating_sub(1),
                    doc_offsets.last().copied().unwrap_or(0)
                ),
            ));
        }
        let entries = &h.sections[..h.section_count as usize];
        let ranges = sections::verify::<SECTION_COUNT>(bytes, entries, TABLE_AT, HEADER_LEN)?;
        let want = [n_tokens.checked_mul(2), k.checked_add(1).map(|x| x * 8), n_pairs.checked_mul(4)];
        for (i, (r, w)) in ranges.iter().zip(want).enumerate() {
            if Some(r.len()) != w {
                return Err(corrupted(r.start, format!("section {i} is {} bytes, expected {w:?}", r.len())));
            }
        }
        let layout = Self {
            minor: h.minor,
            dim: h.dim as usize,
            n_docs,
            n_tokens,
            k,
            n_pairs,
            codebook: h.codebook,
            mean_similarity: h.mean_similarity,
            sections: ranges,
        };
        layout.check_lists(bytes, doc_offsets)?;
        Ok(layout)
    }

    fn check_lists(&self, bytes: &[u8], doc_offsets: &[u64]) -> Result<(), FormatError> {
        let codes = self.codes(bytes);
        let at = |s: Section| self.sections[s as usize].start;
        if let Some(t) = codes.iter().position(|&c| c as usize >= self.k) {
            return Err(corrupted(at(Section::Codes) + 2 * t, format!("code {} ≥ k = {}", codes[t], self.k)));
        }
        if doc_offsets[0] != 0 || doc_offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(corrupted(16, "the segment's document offsets are not ascending from 0"));
        }
        let (offsets, docs) = lists(codes, doc_offsets, self.k);
        let stored_off: &[u64] = self.section(bytes, Section::ListOffsets);
        if let Some(c) = (0..=self.k).find(|&c| stored_off[c] != offsets[c]) {
            return Err(corrupted(
                at(Section::ListOffsets) + 8 * c,
                format!("list offset {c} disagrees with the codes"),
            ));
        }
        let stored_docs: &[u32] = self.section(bytes, Section::ListDocs);
        if let Some(i) = (0..self.n_pairs).find(|&i| stored_docs[i] != docs[i]) {
            return Err(corrupted(at(Section::ListDocs) + 4 * i, format!("list entry {i} disagrees with the codes")));
        }
        Ok(())
    }

    fn section<'a, T: Pod>(&self, bytes: &'a [u8], s: Section) -> &'a [T] {
        bytemuck::cast_slice(&bytes[self.sections[s as usize].clone()])
    }

    /// Every token row's code.
    pub fn codes<'a>(&self, bytes: &'a [u8]) -> &'a [u16] {
        self.section(bytes, Section::Codes)
    }

    /// The documents holding a token of centroid `c`, ascending.
    pub fn list<'a>(&self, bytes: &'a [u8], c: usize) -> &'a [u32] {
        let o: &[u64] = self.section(bytes, Section::ListOffsets);
        &self.section::<u32>(bytes, Section::ListDocs)[o[c] as usize..o[c + 1] as usize]
    }

    /// The best `n` accepted documents by approximate score (see the module
    /// docs), best first, ties by row. When fewer than `n` accepted
    /// documents hold a probed centroid, the rest are filled with accepted
    /// untouched documents (all at the floor score) in row order, so that
    /// `n ≥ n_docs` returns every accepted document.
    ///
    /// # Panics
    /// If `probe` was made with a codebook of another size.
    pub fn candidates(&self, bytes: &[u8], probe: &Probe, n: usize, accept: impl Fn(u32) -> bool) -> Vec<(u32, f32)> {
        assert_eq!(probe.k, self.k, "the probe's codebook has {} centroids, the index {}", probe.k, self.k);
        if n == 0 || self.n_docs == 0 {
            return Vec::new();
        }
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            s.reset(self.n_docs);
            // Split borrows: the hot loop keeps the slices' pointers in registers.
            let Scratch { acc, touched, lists } = s;
            let acc = &mut acc[..self.n_docs];
            // Where every probed list starts and ends, read before the walk
            // and prefetched: each is a random read (two, with the list's
            // first entries), and a segment's share of a list is short, so
            // one after another they would cost a cache miss each per segment.
            let offsets: &[u64] = self.section(bytes, Section::ListOffsets);
            let docs: &[u32] = self.section(bytes, Section::ListDocs);
            for &(c, _) in probe.probed.iter().flatten() {
                tessera_kernels::prefetch(&offsets[c as usize]);
            }
            lists.clear();
            for &(c, _) in probe.probed.iter().flatten() {
                let (a, b) = (offsets[c as usize] as usize, offsets[c as usize + 1] as usize);
                if a < b {
                    tessera_kernels::prefetch(&docs[a]);
                }
                lists.push((a, b));
            }
            let mut lists = lists.iter();
            for (i, (probed, &floor)) in probe.probed.iter().zip(&probe.floor).enumerate() {
                let stamp = i as u32 + 1;
                for (&(_, score), &(a, b)) in probed.iter().zip(lists.by_ref()) {
                    for &d in &docs[a..b] {
                        let a = &mut acc[d as usize];
                        if a.stamp != stamp {
                            if a.stamp == 0 {
                                touched.push(d);
                            }
                            a.stamp = stamp;
                            a.delta += score - floor;
                        }
                    }
                }
            }
            let base: f32 = probe.floor.iter().sum();
            let mut scored: Vec<(f32, u32)> =
                touched.iter().filter(|&&d| accept(d)).map(|&d| (base + acc[d as usize].delta, d)).collect();
            let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
            if scored.len() > n {
                scored.select_nth_unstable_by(n - 1, order);
                scored.truncate(n);
            }
            scored.sort_unstable_by(order);
            if scored.len() < n {
                let extra = (0..self.n_docs as u32).filter(|&d| s.acc[d as usize].stamp == 0 && accept(d));
                scored.extend(extra.take(n - scored.len()).map(|d| (base, d)));
            }
            s.clear_touched();
            scored.into_iter().map(|(score, d)| (d, score)).collect()
        })
    }
}

/// A query prepared against one codebook: each query token's probed
/// centroids (best first, with their scores) and its floor (the last probed score).
#[derive(Debug, Clone)]
pub struct Probe {
    k: usize,
    probed: Vec<Vec<(u32, f32)>>,
    floor: Vec<f32>,
}

impl Probe {
    /// Scores every query token (row-major `nq × dim`) against the codebook
    /// and keeps each one's best `nprobe` centroids (ties by index).
    ///
    /// # Panics
    /// If `query` is empty or not a multiple of the codebook's dim, or `nprobe == 0`.
    pub fn new(codebook: &CentroidPanels, query: &[f32], nprobe: usize) -> Self {
        let (k, dim) = (codebook.k(), codebook.dim());
        assert!(!query.is_empty() && query.len().is_multiple_of(dim), "query must be n × dim");
        assert!(nprobe > 0, "nprobe must be positive");
        let nq = query.len() / dim;
        let mut scores = vec![0f32; nq * k];
        codebook.scores(query, &mut scores);
        let probed: Vec<Vec<(u32, f32)>> = scores.chunks_exact(k).map(|row| best_centroids(row, nprobe)).collect();
        let floor = probed.iter().map(|v| v.last().map_or(0.0, |x| x.1)).collect();
        Self { k, probed, floor }
    }

    /// Number of query tokens.
    pub fn n_tokens(&self) -> usize {
        self.probed.len()
    }
}

/// The best `p` of one query token's centroid scores as `(centroid, score)`,
/// best first, ties by index — those a full sort would put first. One pass
/// with a running threshold: a score enters a buffer only if it beats the
/// `p`-th best kept so far (a later centroid that merely equals it loses the
/// tie by index), and the buffer is cut back to `p` whenever it holds `4p`.
fn best_centroids(row: &[f32], p: usize) -> Vec<(u32, f32)> {
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let p = p.min(row.len());
    let mut kept: Vec<(u32, f32)> = Vec::with_capacity(4 * p);
    let mut threshold = f32::NEG_INFINITY;
    let cut = |kept: &mut Vec<(u32, f32)>| {
        kept.select_nth_unstable_by(p - 1, order);
        kept.truncate(p);
    };
    for (c, &s) in row.iter().enumerate() {
        // `total_cmp` so that the order is the sort's, NaN included.
        if kept.len() < p || s.total_cmp(&threshold).is_gt() {
            kept.push((c as u32, s));
            if kept.len() == 4 * p {
                cut(&mut kept);
                threshold = kept.iter().map(|x| x.1).min_by(f32::total_cmp).unwrap_or(f32::NEG_INFINITY);
            }
        }
    }
    if kept.len() > p {
        cut(&mut kept);
    }
    kept.sort_unstable_by(order);
    kept
}

/// Per-thread accumulators of [`IvfLayout::candidates`], reused across searches.
#[derive(Default)]
struct Scratch {
    /// Per document (stamp and score side by side: one cache line per visit).
    acc: Vec<Acc>,
    touched: Vec<u32>,
    /// The probed lists' ranges in `LIST_DOCS`, in probing order.
    lists: Vec<(usize, usize)>,
}

#[derive(Default, Clone, Copy)]
struct Acc {
    /// 1 + the last query token that reached the document (0: untouched).
    stamp: u32,
    /// Σ over the query tokens that reached it of (score − floor).
    delta: f32,
}

impl Scratch {
    fn reset(&mut self, n_docs: usize) {
        // (Left over only if an `accept` panicked mid-search.)
        self.clear_touched();
        if self.acc.len() < n_docs {
            self.acc.resize(n_docs, Acc::default());
        }
    }

    fn clear_touched(&mut self) {
        for &d in &self.touched {
            self.acc[d as usize] = Acc::default();
        }
        self.touched.clear();
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[cfg(test)]
mod tests {
    use super::best_centroids;
    use crate::rng::SplitMix64;

    /// The selection equals a full sort (score descending, index ascending)
    /// for rows with many equal scores, every `p` from 1 past the row's length.
    #[test]
    fn best_centroids_equal_a_full_sort() {
        let mut rng = SplitMix64::new(20_261_205);
        for len in [1, 2, 7, 64, 300, 4096] {
            for levels in [2, 16, 1 << 20] {
                let row: Vec<f32> = (0..len).map(|_| (rng.below(levels) as f32) / levels as f32 - 0.5).collect();
                let mut sorted: Vec<(u32, f32)> = row.iter().enumerate().map(|(c, &s)| (c as u32, s)).collect();
                sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                for p in [1, 2, 3, 16, 63, 64, 65, 1000, len, len + 1] {
                    let want = &sorted[..p.min(len)];
                    assert_eq!(best_centroids(&row, p), want, "len {len}, {levels} levels, p {p}");
                }
            }
        }
    }
}
