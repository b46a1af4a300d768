//! An open, verified, memory-mapped segment, and its per-snapshot view with
//! a deletion vector.

use crate::centroids::{CentroidIndex, Codebook};
use crate::error::{Error, Result};
use memmap2::Mmap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use tessera_format::deletes::DeletionVector;
use tessera_format::segment::{SegmentDoc, SegmentLayout};
use tessera_index::HnswLayout;
use tessera_kernels::{Repr, StoredRows, TokenMatrix};

pub(crate) struct Segment {
    pub id: u64,
    mmap: Mmap,
    layout: SegmentLayout,
    /// Residual rows: the codebook they are coded with.
    codebook: Option<Arc<Codebook>>,
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

pub(crate) fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(Error::io(path))?;
    // SAFETY: segment, index and codebook files are immutable once written and renamed
    // into place; Tessera never modifies or truncates one while it is mapped.
    unsafe { Mmap::map(&file) }.map_err(Error::io(path))
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
        Ok(Self { id, mmap, layout, codebook, index: None, text: None })
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
    pub fn will_need(&self, rows: &[u32]) {
        const GAP: usize = 16 << 10;
        let base = self.mmap.as_ptr() as usize;
        let mut ranges: Vec<(usize, usize)> = rows
            .iter()
            .map(|&r| {
                let t = self.tokens(r as usize).rows;
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
                        let _ = self.mmap.advise_range(memmap2::Advice::WillNeed, s, e - s);
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
