//! What a read sees: the segments with their deletions and the memtable as of
//! one moment, where a document lives in it, and the ranked results of a
//! search before their texts and payloads are fetched.

use crate::doc::parse_payload;
use crate::filter::Filter;
use crate::memtable::MemTable;
use crate::segment::SegmentView;
use rayon::prelude::*;
use std::sync::Arc;

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: String,
    /// MaxSim score: Σ over query tokens of the max dot product over the document's tokens.
    pub score: f32,
    pub text: Option<String>,
    pub payload: Option<serde_json::Value>,
}

/// The segments with their deletions and the memtable, as of one moment.
#[derive(Clone)]
pub(crate) struct Snapshot {
    pub segments: Vec<SegmentView>,
    pub mem: Arc<MemTable>,
    /// WAL length when the snapshot was published.
    pub wal_bytes: u64,
    /// The manifest's deletion-vector files.
    pub delete_files: Vec<u64>,
    /// Sequence number of the last write batch the snapshot holds.
    pub seq: u64,
}

/// Where a document of a snapshot lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loc {
    Mem,
    /// Segment index in the snapshot, row in the segment.
    Seg(usize, u32),
}

/// Where the live version of `id` is among a memtable and segments (the
/// memtable holds the newest version; a segment row is live unless deleted).
pub(crate) fn locate_in(mem: &MemTable, segments: &[SegmentView], id: &str) -> Option<Loc> {
    if mem.contains(id) {
        return Some(Loc::Mem);
    }
    segments.iter().enumerate().find_map(|(si, sv)| sv.find_live(id).map(|r| Loc::Seg(si, r)))
}

impl Snapshot {
    /// Where the live version of `id` is.
    pub fn locate(&self, id: &str) -> Option<Loc> {
        locate_in(&self.mem, &self.segments, id)
    }

    /// Live documents.
    pub fn len(&self) -> usize {
        self.mem.len() + self.segments.iter().map(|s| s.live.len()).sum::<usize>()
    }

    /// The stored payload of a located document.
    pub fn payload(&self, at: Loc, id: &str) -> Option<&str> {
        match at {
            Loc::Mem => self.mem.get(id).and_then(|d| d.payload.as_deref()),
            Loc::Seg(si, r) => self.segments[si].seg.payload(r as usize),
        }
    }
}

/// Per segment, whether each row's payload matches `f` (deleted rows included).
pub(crate) fn allowed_rows(snap: &Snapshot, f: &Filter) -> Vec<Vec<bool>> {
    snap.segments
        .iter()
        .map(|sv| (0..sv.seg.n_docs()).into_par_iter().map(|r| f.matches_text(sv.seg.payload(r))).collect())
        .collect()
}

/// A ranked document of one snapshot, before its text and payload are fetched.
#[derive(Debug, Clone)]
pub(crate) struct Ranked {
    pub id: String,
    pub score: f32,
    pub at: Loc,
}

/// Fetches text and payload of ranked documents from the snapshot they were ranked in.
pub(crate) fn materialize(snap: &Snapshot, ranked: Vec<Ranked>) -> Vec<SearchHit> {
    ranked
        .into_iter()
        .map(|r| {
            let (text, payload) = match r.at {
                Loc::Mem => {
                    let d = snap.mem.get(&r.id).expect("memtable document of this snapshot");
                    (d.text.clone(), d.payload.as_deref().and_then(parse_payload))
                }
                Loc::Seg(si, row) => {
                    let s = &snap.segments[si].seg;
                    (s.text(row as usize).map(Into::into), s.payload(row as usize).and_then(parse_payload))
                }
            };
            SearchHit { id: r.id, score: r.score, text, payload }
        })
        .collect()
}
