//! Full-text (BM25) search over one snapshot: every segment's text index and
//! the memtable, scored with statistics summed over all of them so the scores
//! are comparable, deleted and filtered-out documents skipped inside each
//! index's collector.

use crate::collection::{Collection, Snapshot};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::search::MAX_K;
use crate::snapshot::{Loc, Ranked, SearchHit, allowed_rows, materialize};
use tessera_kernels::TopK;
use tessera_text::Stats;

impl Collection {
    /// The `n` best live documents for the text `query` by BM25 (matching
    /// `filter` if given), best first, ties by id. Documents without text
    /// never match.
    pub fn search_text(&self, query: &str, n: usize, filter: Option<&Filter>) -> Result<Vec<SearchHit>> {
        let snap = self.snapshot();
        Ok(materialize(&snap, self.search_text_ranked(&snap, query, n, filter)?))
    }

    /// [`search_text`](Self::search_text) on a given snapshot, without fetching texts and payloads.
    pub(crate) fn search_text_ranked(
        &self,
        snap: &Snapshot,
        query: &str,
        n: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<Ranked>> {
        let tc =
            self.config().text.ok_or_else(|| Error::InvalidArgument("the collection has no full-text index".into()))?;
        if !(1..=MAX_K).contains(&n) {
            return Err(Error::InvalidArgument(format!("n must be in 1..={MAX_K}, got {n}")));
        }
        let terms = tessera_text::analyze(tc.language, query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        bm25(snap, tc.language, &terms, n, filter)
    }
}

fn bm25(
    snap: &Snapshot,
    lang: tessera_text::Language,
    terms: &[String],
    n: usize,
    f: Option<&Filter>,
) -> Result<Vec<Ranked>> {
    // Statistics count every document with text, as the segment indexes do
    // (whatever the filter); the filter only decides which may be returned.
    let mem: Vec<(&crate::doc::MemDoc, Vec<String>)> =
        snap.mem.docs().filter_map(|d| d.text.as_deref().map(|t| (&**d, tessera_text::analyze(lang, t)))).collect();
    let mut global = Stats::of_docs(mem.iter().map(|(_, t)| t.as_slice()), terms);
    for sv in &snap.segments {
        if let Some(ti) = &sv.seg.text {
            global.add(&ti.try_stats(terms).map_err(text_err)?);
        }
    }
    let allowed = f.map(|f| allowed_rows(snap, f));
    let mut top: TopK<(String, usize, u32)> = TopK::new(n);
    for (si, sv) in snap.segments.iter().enumerate() {
        let Some(ti) = &sv.seg.text else { continue };
        let ok = allowed.as_ref().map(|a| &a[si]);
        // A row beyond the segment (an index that disagrees with its segment
        // despite valid checksums) is never returned, rather than panicking.
        let rows = sv.seg.n_docs();
        let accept = |r: u32| (r as usize) < rows && !sv.deletes.is_deleted(r) && ok.is_none_or(|ok| ok[r as usize]);
        for (r, score) in ti.try_search(terms, n, &global, &accept).map_err(text_err)? {
            top.push(score, (sv.seg.id_of(r as usize).to_string(), si, r));
        }
    }
    for (i, (d, toks)) in mem.iter().enumerate() {
        if !f.is_none_or(|f| f.matches_text(d.payload.as_deref())) {
            continue;
        }
        let score = tessera_text::bm25_doc(toks, terms, &global);
        if score > 0.0 {
            top.push(score, (d.id.clone(), usize::MAX, i as u32));
        }
    }
    Ok(top
        .into_sorted_vec()
        .into_iter()
        .map(|h| {
            let (id, si, r) = h.key;
            let at = if si == usize::MAX { Loc::Mem } else { Loc::Seg(si, r) };
            Ranked { id, score: h.score, at }
        })
        .collect())
}

fn text_err(e: tessera_text::TextError) -> Error {
    Error::Text(e.to_string())
}
