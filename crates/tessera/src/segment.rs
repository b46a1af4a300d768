//! An open, verified, memory-mapped segment, and its per-snapshot view with
//! a deletion vector.

use crate::codebook::{CentroidIndex, Codebook};
use crate::error::{Error, Result};
use crate::fsutil::map;
use memmap2::Mmap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tessera_format::deletes::DeletionVector;
use tessera_format::keep::KeepLayout;
use tessera_format::segment::{SegmentDoc, SegmentLayout};
use tessera_index::HnswLayout;
use tessera_kernels::{Repr, StoredRows, TokenMatrix};

pub(crate) struct Segment {
    pub id: u64,
    mmap: Mmap,
    layout: SegmentLayout,
    /// Residual rows: the codebook they are coded with.
    codebook: Option<Arc<Codebook>>,
    /// Residual rows with `keep`: their full-precision copy.
    pub kept: Option<Kept>,
    /// The candidate index over the segment's documents (row i = node i).
    pub index: Option<CoarseIndex>,
    /// The BM25 index over the segment's texts (keyed by row).
    pub text: Option<tessera_text::TextIndex>,
}

/// A segment's candidate index, of the collection's kind.
pub(crate) enum CoarseIndex {
    /// One vector per document in an HNSW graph.
    Vector(VectorIndex),
    /// Token centroid codes and inverted lists.
    Centroids(CentroidIndex),
}

impl CoarseIndex {
    pub fn file_len(&self) -> u64 {
        match self {
            CoarseIndex::Vector(v) => v.file_len(),
            CoarseIndex::Centroids(c) => c.file_len(),
        }
    }
}

/// A memory-mapped, verified HNSW index file of one segment.
pub(crate) struct VectorIndex {
    mmap: Mmap,
    layout: HnswLayout,
}

impl VectorIndex {
    pub fn open(path: &Path, n_docs: usize, dim: usize) -> Result<Self> {
        let mmap = map(path)?;
        let layout = HnswLayout::parse(&mmap).map_err(Error::format(path))?;
        if layout.len() != n_docs || layout.dim() != dim {
            return Err(Error::Corrupted {
                file: path.into(),
                offset: 0,
                reason: format!(
                    "index has {} vectors of dim {}, segment has {n_docs} documents and the encoder dim {dim}",
                    layout.len(),
                    layout.dim()
                ),
            });
        }
        Ok(Self { mmap, layout })
    }

    /// The best `k` accepted rows by coarse score, best first.
    pub fn search(&self, query: &[f32], k: usize, ef: usize, accept: impl Fn(u32) -> bool) -> Vec<(u32, f32)> {
        self.layout.search(&self.mmap, query, k, ef, accept)
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }
}

/// A residual segment's kept copy (`keep-N.tkeep`): memory-mapped, never
/// warmed (the kernel is told reads are random), each document verified
/// against its checksum the first time it is read.
pub(crate) struct Kept {
    path: std::path::PathBuf,
    mmap: Mmap,
    layout: KeepLayout,
    /// One bit per document: verified already.
    verified: Vec<AtomicU64>,
}

impl Kept {
    /// Opens the copy at `path` of `seg`'s rows, of `token_type`: its header,
    /// table and checksums' checksum, and that it follows the segment's documents.
    pub fn open(path: &Path, seg: &Segment, token_type: tessera_kernels::TokenType) -> Result<Self> {
        let mmap = map(path)?;
        let _ = mmap.advise(memmap2::Advice::Random);
        let layout = KeepLayout::parse(&mmap).map_err(Error::format(path))?;
        let bad = |offset: u64, reason: String| Error::Corrupted { file: path.into(), offset, reason };
        if layout.token_type != token_type || layout.dim != seg.layout.dim {
            let (t, d) = (layout.token_type.name(), layout.dim);
            return Err(bad(
                48,
                format!("copy of {t} rows of dim {d}; the collection keeps {token_type} of dim {}", seg.layout.dim),
            ));
        }
        if layout.segment_crc != seg.layout.tokens_crc {
            let (have, want) = (layout.segment_crc, seg.layout.tokens_crc);
            return Err(bad(56, format!("copy of segment rows {have:08x}; its segment's are {want:08x}")));
        }
        if !tessera_format::keep::offsets_match(&layout, seg.layout.doc_offsets(&seg.mmap)) {
            let (n, t) = (layout.n_docs, layout.n_tokens);
            return Err(bad(
                52,
                format!("copy of {n} documents and {t} tokens does not follow its segment's documents"),
            ));
        }
        let verified = (0..layout.n_docs.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(Self { path: path.into(), mmap, layout, verified })
    }

    /// Verifies the documents of `rows` not verified yet.
    pub fn check(&self, offsets: &[u64], rows: &[u32]) -> Result<()> {
        for &r in rows {
            let (w, bit) = (&self.verified[r as usize / 64], 1u64 << (r % 64));
            if w.load(Ordering::Relaxed) & bit == 0 {
                self.layout.verify_doc(&self.mmap, offsets, r as usize).map_err(Error::format(&self.path))?;
                w.fetch_or(bit, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }
}

impl Segment {
    /// Maps and fully verifies a segment file (every checksum and table),
    /// and checks that it stores tokens as the collection does (a residual
    /// collection's segments sealed before its codebook: f16). Residual rows
    /// are read with `codebook`, the one its manifest entry names: it must be
    /// the one the header names, with their tables, and hold every code.
    pub fn open(
        path: &Path,
        id: u64,
        config: &crate::CollectionConfig,
        codebook: Option<&Arc<Codebook>>,
    ) -> Result<Self> {
        let mmap = map(path)?;
        let layout = SegmentLayout::parse(&mmap).map_err(Error::format(path))?;
        let mismatch = |offset: u64, reason: String| Err(Error::Corrupted { file: path.into(), offset, reason });
        if layout.dim != config.dim {
            return mismatch(12, format!("segment has dim {}, collection has {}", layout.dim, config.dim));
        }
        let staged = layout.token_type == config.staged_storage();
        if (layout.token_type != config.storage && !staged) || layout.screening != config.screening {
            return mismatch(
                48,
                format!(
                    "segment stores {} tokens with screening {}, the collection {} with {}",
                    layout.token_type.name(),
                    layout.screening.name(),
                    config.storage.name(),
                    config.screening.name()
                ),
            );
        }
        let codebook = match layout.codebook {
            None => None,
            Some(identity) => Some(Self::check_codes(path, &mmap, &layout, identity, codebook)?),
        };
        Ok(Self { id, mmap, layout, codebook, kept: None, index: None, text: None })
    }

    /// The codebook of residual rows (the header names it by `identity`):
    /// `codebook`, which must be it, with tables of their bits and a
    /// centroid for every row's code.
    fn check_codes(
        path: &Path,
        bytes: &[u8],
        layout: &SegmentLayout,
        identity: u32,
        codebook: Option<&Arc<Codebook>>,
    ) -> Result<Arc<Codebook>> {
        let bad = |offset: usize, reason: String| Error::Corrupted { file: path.into(), offset: offset as u64, reason };
        let cb = match codebook {
            Some(cb) if cb.identity == identity => cb,
            other => {
                let named = other.map_or("none".to_string(), |cb| format!("{:08x}", cb.identity));
                return Err(bad(
                    52,
                    format!("rows are coded with codebook {identity:08x}; the manifest names {named}"),
                ));
            }
        };
        let bits = layout.token_type.residual_bits();
        if cb.residual.as_ref().is_none_or(|t| t.bits != bits) {
            let file = path.with_file_name(crate::manifest::codebook_file(cb.id));
            let reason = format!("codebook has no {bits}-bit residual tables, which its segment's rows need");
            return Err(Error::Corrupted { file, offset: 68, reason });
        }
        let rb = layout.token_type.row_bytes(layout.dim);
        let at = layout.section_range(tessera_format::segment::Section::Tokens).start;
        let k = cb.info.k;
        let rows = layout.token_rows(bytes).chunks_exact(rb);
        if let Some(t) = rows.map(|r| u16::from_le_bytes([r[0], r[1]]) as usize).position(|c| c >= k) {
            return Err(bad(at + t * rb, format!("token {t}'s centroid code is not in its codebook of {k}")));
        }
        Ok(cb.clone())
    }

    /// Whether its rows are residual (read through their codebook).
    pub fn is_residual(&self) -> bool {
        self.codebook.is_some()
    }

    /// The codebook residual rows are coded with.
    pub fn codebook(&self) -> Option<&Arc<Codebook>> {
        self.codebook.as_ref()
    }

    /// How its rows are read.
    pub fn repr(&self) -> Repr<'_> {
        match &self.codebook {
            Some(cb) => cb.repr(),
            None => Repr::plain(self.layout.token_type),
        }
    }

    pub fn n_docs(&self) -> usize {
        self.layout.n_docs
    }

    /// The segment's centroid index, if it has one.
    pub fn centroid_index(&self) -> Option<&CentroidIndex> {
        match &self.index {
            Some(CoarseIndex::Centroids(c)) => Some(c),
            _ => None,
        }
    }

    pub fn n_tokens(&self) -> usize {
        self.layout.n_tokens
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// The segment's token data, typed by its token type.
    pub fn matrix(&self) -> TokenMatrix<'_> {
        let b = &self.mmap[..];
        TokenMatrix {
            repr: self.repr(),
            screening: self.layout.screening,
            dim: self.layout.dim,
            rows: self.layout.token_rows(b),
            scales: self.layout.scales(b),
            codes: self.layout.codes(b),
            offsets: self.layout.doc_offsets(b),
        }
    }

    /// The token data exact scores read: the kept copy's when there is one
    /// (its rows must be [`check_exact`](Self::check_exact)ed first), else [`matrix`](Self::matrix).
    pub fn exact_matrix(&self) -> TokenMatrix<'_> {
        let Some(k) = &self.kept else { return self.matrix() };
        let b = &k.mmap[..];
        TokenMatrix {
            repr: Repr::plain(k.layout.token_type),
            screening: tessera_kernels::Screening::None,
            dim: self.layout.dim,
            rows: k.layout.rows(b),
            scales: k.layout.scales(b),
            codes: &[],
            offsets: self.layout.doc_offsets(&self.mmap),
        }
    }

    /// Verifies the kept rows of `rows` before they are scored exactly (nothing without a copy).
    pub fn check_exact(&self, rows: &[u32]) -> Result<()> {
        match &self.kept {
            Some(k) => k.check(self.layout.doc_offsets(&self.mmap), rows),
            None => Ok(()),
        }
    }

    /// A row's kept rows (`None` without a copy), as [`check_exact`](Self::check_exact) verifies them.
    pub fn kept_doc(&self, row: usize) -> Option<StoredRows<'_>> {
        let k = self.kept.as_ref()?;
        Some(k.layout.doc_rows(&k.mmap, self.layout.doc_offsets(&self.mmap), row))
    }

    pub fn id_of(&self, row: usize) -> &str {
        self.layout.id(&self.mmap, row)
    }

    /// The rows in the byte order of their ids.
    pub fn rows_by_id(&self) -> &[u32] {
        self.layout.id_order(&self.mmap)
    }

    pub fn text(&self, row: usize) -> Option<&str> {
        self.layout.text(&self.mmap, row)
    }

    pub fn payload(&self, row: usize) -> Option<&str> {
        self.layout.payload(&self.mmap, row)
    }

    /// The stored tokens of a row.
    pub fn tokens(&self, row: usize) -> StoredRows<'_> {
        self.layout.doc_rows(&self.mmap, row)
    }

    /// Asks the kernel to start reading the token data of `rows` (a candidate
    /// set) from disk, all at once, so that scoring them waits for one round
    /// of parallel reads instead of a page fault per document — and reads
    /// only their bytes, not the fault's read-around window (which can be
    /// megabytes) around each. Nearby rows are requested as one range.
    /// Advisory: nothing changes when the pages are resident, or on failure.
    /// With a kept copy, the copy's rows (what an exact score reads).
    pub fn will_need(&self, rows: &[u32]) {
        const GAP: usize = 16 << 10;
        let (mmap, m) = match &self.kept {
            Some(k) => (&k.mmap, self.exact_matrix()),
            None => (&self.mmap, self.matrix()),
        };
        let base = mmap.as_ptr() as usize;
        let mut ranges: Vec<(usize, usize)> = rows
            .iter()
            .map(|&r| {
                let t = m.doc(r).rows;
                let start = t.as_ptr() as usize - base;
                (start, start + t.len())
            })
            .collect();
        ranges.sort_unstable();
        let mut run: Option<(usize, usize)> = None;
        for (a, b) in ranges.into_iter().chain([(usize::MAX, usize::MAX)]) {
            match &mut run {
                Some((_, end)) if a <= end.saturating_add(GAP) => *end = (*end).max(b),
                _ => {
                    if let Some((s, e)) = run.filter(|(s, e)| e > s) {
                        let _ = mmap.advise_range(memmap2::Advice::WillNeed, s, e - s);
                    }
                    run = Some((a, b));
                }
            }
        }
    }

    /// The tokens a row was given, before any pooling.
    pub fn given_tokens_of(&self, row: usize) -> usize {
        self.layout.given_tokens(&self.mmap, row)
    }

    /// Row `row` as a segment writer takes it (a merge copies it so).
    pub fn doc(&self, row: usize) -> SegmentDoc<'_> {
        SegmentDoc {
            id: self.id_of(row),
            tokens: self.tokens(row),
            text: self.text(row),
            payload: self.payload(row),
            given_tokens: self.given_tokens_of(row),
        }
    }

    /// Tokens of a row.
    pub fn n_tokens_of(&self, row: usize) -> usize {
        let o = self.layout.doc_offsets(&self.mmap);
        (o[row + 1] - o[row]) as usize
    }

    pub fn find(&self, id: &str) -> Option<usize> {
        self.layout.find_id(&self.mmap, id)
    }
}

/// A segment as one snapshot sees it: the immutable file plus the deletions
/// made so far, and the live rows derived from them.
#[derive(Clone)]
pub(crate) struct SegmentView {
    pub seg: Arc<Segment>,
    pub deletes: Arc<DeletionVector>,
    pub live: Arc<Vec<u32>>,
}

impl SegmentView {
    pub fn new(seg: Arc<Segment>, deletes: DeletionVector) -> Self {
        let mut v = Self { seg, deletes: Arc::new(deletes), live: Arc::new(Vec::new()) };
        v.refresh_live();
        v
    }

    /// Rebuilds the live-row list from the deletion vector.
    pub fn refresh_live(&mut self) {
        let d = &self.deletes;
        self.live = Arc::new((0..self.seg.n_docs() as u32).filter(|&r| !d.is_deleted(r)).collect());
    }

    /// The live row holding `id`, if any.
    pub fn find_live(&self, id: &str) -> Option<u32> {
        self.seg.find(id).map(|r| r as u32).filter(|&r| !self.deletes.is_deleted(r))
    }

    pub fn live_tokens(&self) -> usize {
        self.live.iter().map(|&r| self.seg.n_tokens_of(r as usize)).sum()
    }

    /// Tokens the live documents were given, before any pooling.
    pub fn live_given_tokens(&self) -> usize {
        self.live.iter().map(|&r| self.seg.given_tokens_of(r as usize)).sum()
    }
}
