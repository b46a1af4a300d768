//! What a collection reports about itself: counts, sizes on disk, bytes per
//! token, build times ([`Collection::stats`]).

use super::{Collection, Snapshot, quarantine_files};
use crate::manifest::{self, BuildTimes};
use crate::segment::CoarseIndex;

/// Sizes of a collection, as `info` reports them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CollectionStats {
    pub name: String,
    pub dim: usize,
    pub documents: usize,
    /// Tokens stored for the live documents.
    pub tokens: usize,
    /// Tokens the live documents were given: more than `tokens` when some
    /// were pooled (`pool_factor`), else equal.
    pub given_tokens: usize,
    pub segments: usize,
    pub memtable_documents: usize,
    pub deleted_in_segments: usize,
    pub bytes_on_disk: u64,
    /// How token values are stored (`f16`, `int8`, `residual2`, `residual4`)
    /// and the screening codes beside them.
    pub storage: &'static str,
    pub screening: &'static str,
    /// A residual collection's kept copy (`none`, `int8`, `f16`): what exact
    /// scores read. `none`: exact search, `rerank` of ids and `get` read the
    /// residual values.
    pub keep: &'static str,
    /// The kept copies' bytes per token in segments (0 without them).
    pub kept_bytes_per_token: f64,
    /// Bytes one token costs in a segment: its row, scale and code.
    pub bytes_per_token: usize,
    /// Segment and coarse-index bytes per token in segments, tables and ids included
    /// (0 without segments).
    pub segment_bytes_per_token: f64,
    /// The candidate index: `pooled`, `muvera`, `centroids` or `none`.
    pub index: &'static str,
    /// Candidate-index bytes per token in segments (index files, and each
    /// codebook in use once); 0 without segments.
    pub index_bytes_per_token: f64,
    /// Centroids indexes: centroids in the newest codebook in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub centroids: Option<usize>,
    /// Where sealing time went since the collection was created.
    pub build: BuildTimes,
    /// The default ranking of hybrid queries with tokens.
    pub ranking: crate::rank::Ranking,
    /// Why the last automatic flush failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_flush_error: Option<String>,
    /// Torn WAL tails cut since this process opened the collection (0 or 1:
    /// only opening finds one).
    pub wal_tails_cut: u64,
    /// Quarantine files in the collection's folder (`torn-<WAL id>-<offset>.log`):
    /// bytes cut from a WAL's tail, kept until an operator removes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantine: Vec<String>,
    /// Each segment, oldest first: its live documents and tokens and its file's bytes.
    pub segment_sizes: Vec<SegmentSize>,
}

/// One segment of [`CollectionStats::segment_sizes`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SegmentSize {
    /// Live documents (rows not deleted).
    pub documents: usize,
    /// Tokens of the live documents.
    pub tokens: usize,
    /// The segment file's bytes (deleted rows included, until a merge drops them).
    pub bytes: u64,
}

impl Collection {
    /// Counts and sizes from the latest snapshot: never waits for a write,
    /// flush or compaction in progress.
    pub fn stats(&self) -> CollectionStats {
        let snap = self.snapshot();
        let del_bytes: u64 = snap
            .delete_files
            .iter()
            .filter_map(|&f| std::fs::metadata(self.dir.join(manifest::deletes_file(f))).ok())
            .map(|m| m.len())
            .sum();
        let seg_bytes: u64 = snap.segments.iter().map(|s| s.seg.file_len()).sum::<u64>() + index_bytes(&snap);
        let kept_bytes: u64 = snap.segments.iter().filter_map(|s| s.seg.kept.as_ref()).map(|k| k.file_len()).sum();
        let seg_tokens: usize = snap.segments.iter().map(|s| s.seg.n_tokens()).sum();
        let manifest_bytes = std::fs::metadata(self.dir.join(manifest::FILE)).map_or(0, |m| m.len());
        CollectionStats {
            name: self.name.clone(),
            dim: self.config().dim,
            documents: snap.len(),
            tokens: snap.mem.n_tokens() + snap.segments.iter().map(|s| s.live_tokens()).sum::<usize>(),
            given_tokens: snap.mem.given_tokens() + snap.segments.iter().map(|s| s.live_given_tokens()).sum::<usize>(),
            segments: snap.segments.len(),
            memtable_documents: snap.mem.len(),
            deleted_in_segments: snap.segments.iter().map(|s| s.seg.n_docs() - s.live.len()).sum(),
            bytes_on_disk: seg_bytes + kept_bytes + del_bytes + snap.wal_bytes + manifest_bytes,
            storage: self.config().storage.name(),
            screening: self.config().screening.name(),
            keep: self.config().keep.name(),
            kept_bytes_per_token: if seg_tokens == 0 { 0.0 } else { kept_bytes as f64 / seg_tokens as f64 },
            bytes_per_token: self.config().bytes_per_token(),
            segment_bytes_per_token: match seg_tokens {
                0 => 0.0,
                n => seg_bytes as f64 / n as f64,
            },
            index: crate::IndexKind::of(self.config().index.as_ref()).name(),
            index_bytes_per_token: match seg_tokens {
                0 => 0.0,
                n => index_bytes(&snap) as f64 / n as f64,
            },
            centroids: snap
                .segments
                .iter()
                .filter_map(|s| s.seg.centroid_index())
                .max_by_key(|ci| ci.codebook.id)
                .map(|ci| ci.codebook.info.k),
            build: *self.build.lock().unwrap_or_else(|p| p.into_inner()),
            ranking: self.ranking(),
            last_flush_error: self.flush_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            wal_tails_cut: self.wal_tails_cut,
            // Listed now: an operator removes the files once looked at.
            quarantine: quarantine_files(&self.dir).unwrap_or_default(),
            segment_sizes: snap
                .segments
                .iter()
                .map(|s| SegmentSize { documents: s.live.len(), tokens: s.live_tokens(), bytes: s.seg.file_len() })
                .collect(),
        }
    }
}

/// Bytes of the segments' candidate-index files, and of each codebook in use once.
fn index_bytes(snap: &Snapshot) -> u64 {
    let mut codebooks = std::collections::BTreeMap::new();
    let mut total = 0;
    for sv in &snap.segments {
        total += sv.seg.index.as_ref().map_or(0, CoarseIndex::file_len);
        if let Some(ci) = sv.seg.centroid_index() {
            codebooks.insert(ci.codebook.id, ci.codebook.file_len);
        }
    }
    total + codebooks.values().sum::<u64>()
}
