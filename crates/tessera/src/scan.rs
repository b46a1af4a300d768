//! Listing a collection's documents without a query: the live documents whose
//! payload matches a filter, in id order, a page at a time, and how many
//! match — what a document store's "filter documents" and "count" calls need
//! (the framework integrations, `POST /v1/collections/{name}/scan`).
//!
//! A page is a merge of the segments' id orders (each segment file keeps its
//! rows sorted by id, the ID_ORDER section) and the memtable's ids, from the
//! first id after `after`: it reads the ids and payloads of the page and of
//! the documents the filter skips on the way, not the whole collection, so
//! listing every document page by page costs one pass.

use crate::collection::Collection;
use crate::doc::StoredDocument;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::snapshot::Snapshot;
use rayon::prelude::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Most documents one [`Collection::scan`] call returns (the most ids a
/// server's `max_ids` may allow).
pub const MAX_SCAN_LIMIT: usize = crate::MAX_K;

/// One page of a [`Collection::scan`].
#[derive(Debug, Clone)]
pub struct ScanPage {
    /// The page's documents, in id order (byte order of the ids).
    pub documents: Vec<StoredDocument>,
    /// The id to pass as `after` for the next page; None on the last one.
    pub next: Option<String>,
}

/// Where the merge reads the next id from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// Segment `index` of the snapshot, at position `pos` of its id order.
    Segment { index: usize, pos: usize },
    /// Position `pos` of the memtable's ids after `after`, sorted.
    Mem { pos: usize },
}

impl Collection {
    /// The live documents whose payload matches `filter` (every one without),
    /// with ids after `after` in byte order, at most `limit` of them, all
    /// from one snapshot; without `tokens`, their tokens are left empty.
    pub fn scan(&self, filter: Option<&Filter>, after: Option<&str>, limit: usize, tokens: bool) -> Result<ScanPage> {
        if limit > MAX_SCAN_LIMIT {
            return Err(Error::InvalidArgument(format!("limit {limit} is over {MAX_SCAN_LIMIT}: page with `after`")));
        }
        let snap = self.snapshot();
        let ids = page_ids(&snap, filter, after, limit);
        let next = if ids.len() > limit { ids.get(limit.wrapping_sub(1)).map(|s| s.to_string()) } else { None };
        let documents = ids
            .iter()
            .take(limit)
            .filter_map(|id| self.get_in(&snap, id, tokens).transpose())
            .collect::<Result<_>>()?;
        Ok(ScanPage { documents, next })
    }

    /// How many live documents match `filter` (all of them without one): one
    /// pass over the payloads, in parallel.
    pub fn count(&self, filter: Option<&Filter>) -> Result<usize> {
        let snap = self.snapshot();
        let Some(f) = filter else { return Ok(snap.len()) };
        let in_segments: usize = snap
            .segments
            .iter()
            .map(|sv| sv.live.par_iter().filter(|&&r| f.matches_text(sv.seg.payload(r as usize))).count())
            .sum();
        Ok(in_segments + snap.mem.docs().filter(|d| f.matches_text(d.payload.as_deref())).count())
    }
}

/// The ids of the first `limit + 1` live documents after `after` that match
/// `filter`, in byte order (one more than the page, to know whether another
/// page follows). Every live id is in exactly one source: a segment row whose
/// id was written again is deleted in that segment.
fn page_ids<'s>(snap: &'s Snapshot, filter: Option<&Filter>, after: Option<&str>, limit: usize) -> Vec<&'s str> {
    let keep = |payload: Option<&str>| filter.is_none_or(|f| f.matches_text(payload));
    let mut mem: Vec<&crate::doc::MemDoc> =
        snap.mem.docs().map(|d| &**d).filter(|d| after.is_none_or(|a| d.id.as_str() > a)).collect();
    mem.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    let id_at = |s: Source| -> Option<&'s str> {
        match s {
            Source::Segment { index, pos } => {
                let seg = &snap.segments[index].seg;
                seg.rows_by_id().get(pos).map(|&r| seg.id_of(r as usize))
            }
            Source::Mem { pos } => mem.get(pos).map(|d| d.id.as_str()),
        }
    };
    let mut heap: BinaryHeap<Reverse<(&str, Source)>> = BinaryHeap::new();
    for (index, sv) in snap.segments.iter().enumerate() {
        let order = sv.seg.rows_by_id();
        let pos = match after {
            Some(a) => order.partition_point(|&r| sv.seg.id_of(r as usize) <= a),
            None => 0,
        };
        let s = Source::Segment { index, pos };
        if let Some(id) = id_at(s) {
            heap.push(Reverse((id, s)));
        }
    }
    if let Some(id) = id_at(Source::Mem { pos: 0 }) {
        heap.push(Reverse((id, Source::Mem { pos: 0 })));
    }
    let mut out = Vec::new();
    while let Some(Reverse((id, s))) = heap.pop() {
        if out.len() > limit {
            break;
        }
        let (taken, next) = match s {
            Source::Segment { index, pos } => {
                let sv = &snap.segments[index];
                let row = sv.seg.rows_by_id()[pos];
                let live = !sv.deletes.is_deleted(row);
                (live && keep(sv.seg.payload(row as usize)), Source::Segment { index, pos: pos + 1 })
            }
            Source::Mem { pos } => (keep(mem[pos].payload.as_deref()), Source::Mem { pos: pos + 1 }),
        };
        if taken {
            out.push(id);
        }
        if let Some(id) = id_at(next) {
            heap.push(Reverse((id, next)));
        }
    }
    out.truncate(limit + 1);
    out
}
