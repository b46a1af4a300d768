//! Listing a collection's documents without a query: the live documents whose
//! payload matches a filter, in id order, a page at a time — what a document
//! store's "filter documents" and "count" calls need (the framework
//! integrations, `POST /v1/collections/{name}/scan`).

use crate::collection::Collection;
use crate::doc::StoredDocument;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::snapshot::Loc;
use rayon::prelude::*;

/// Most documents one [`Collection::scan`] call returns.
pub const MAX_SCAN_LIMIT: usize = 10_000;

/// One page of a [`Collection::scan`].
#[derive(Debug, Clone)]
pub struct ScanPage {
    /// The page's documents, in id order (byte order of the ids).
    pub documents: Vec<StoredDocument>,
    /// How many live documents match the filter, on every page (`after`
    /// does not change it): `scan` with `limit` 0 counts.
    pub matched: usize,
    /// The id to pass as `after` for the next page; None on the last one.
    pub next: Option<String>,
}

impl Collection {
    /// The live documents whose payload matches `filter` (every one without),
    /// with ids after `after` in byte order, at most `limit` of them, all
    /// from one snapshot; without `tokens`, their tokens are left empty.
    /// Costs one pass over the collection's ids and payloads per call.
    pub fn scan(&self, filter: Option<&Filter>, after: Option<&str>, limit: usize, tokens: bool) -> Result<ScanPage> {
        if limit > MAX_SCAN_LIMIT {
            return Err(Error::InvalidArgument(format!("limit {limit} is over {MAX_SCAN_LIMIT}: page with `after`")));
        }
        let snap = self.snapshot();
        let keep = |payload: Option<&str>| filter.is_none_or(|f| f.matches_text(payload));
        let mut matched: Vec<(&str, Loc)> = Vec::new();
        for (si, sv) in snap.segments.iter().enumerate() {
            let rows: Vec<(&str, Loc)> = sv
                .live
                .par_iter()
                .filter(|&&r| keep(sv.seg.payload(r as usize)))
                .map(|&r| (sv.seg.id_of(r as usize), Loc::Seg(si, r)))
                .collect();
            matched.extend(rows);
        }
        matched.extend(snap.mem.docs().filter(|d| keep(d.payload.as_deref())).map(|d| (d.id.as_str(), Loc::Mem)));
        let total = matched.len();
        if let Some(a) = after {
            matched.retain(|(id, _)| *id > a);
        }
        let more = matched.len() > limit;
        if more {
            matched.select_nth_unstable_by(limit, |a, b| a.0.cmp(b.0));
            matched.truncate(limit);
        }
        matched.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let next = if more { matched.last().map(|(id, _)| id.to_string()) } else { None };
        // A limit of 0 with documents left names no page to go on from.
        let next = if limit == 0 { None } else { next };
        let documents = matched.iter().filter_map(|(id, _)| self.get_in(&snap, id, tokens)).collect();
        Ok(ScanPage { documents, matched: total, next })
    }
}
