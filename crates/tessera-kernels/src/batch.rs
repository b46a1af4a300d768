//! Scoring many documents of one token matrix: the form a segment reader
//! needs. Documents are scored in parallel with rayon; top-k keeps a bounded
//! heap per worker and merges them.

use crate::{Element, Hit, Query, maxsim};
use rayon::prelude::*;

/// Token matrix of many documents: row-major `rows × dim`, document `i` is rows
/// `offsets[i] .. offsets[i + 1]`.
#[derive(Debug, Clone, Copy)]
pub struct DocMatrix<'a, T> {
    pub tokens: &'a [T],
    pub offsets: &'a [u64],
    pub dim: usize,
}

impl<'a, T: Element> DocMatrix<'a, T> {
    pub fn n_docs(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The tokens of document `i`.
    #[inline]
    pub fn doc(&self, i: u32) -> &'a [T] {
        let (a, b) = (self.offsets[i as usize] as usize, self.offsets[i as usize + 1] as usize);
        &self.tokens[a * self.dim..b * self.dim]
    }
}

/// Documents per rayon task: enough work to amortise scheduling.
const CHUNK: usize = 64;

/// Scores each of `docs` into `out` (`out.len() == docs.len()`), in parallel.
pub fn score_docs<T: Element>(q: &Query, m: &DocMatrix<'_, T>, docs: &[u32], out: &mut [f32]) {
    assert_eq!(q.dim(), m.dim, "query and matrix dims differ");
    assert_eq!(docs.len(), out.len());
    out.par_chunks_mut(CHUNK).zip(docs.par_chunks(CHUNK)).for_each(|(o, d)| {
        for (o, &d) in o.iter_mut().zip(d) {
            *o = maxsim(q, m.doc(d));
        }
    });
}

/// The `k` best of `docs` by MaxSim, best first (ties: smaller document index first).
pub fn top_k<T: Element>(q: &Query, m: &DocMatrix<'_, T>, docs: &[u32], k: usize) -> Vec<Hit<u32>> {
    assert_eq!(q.dim(), m.dim, "query and matrix dims differ");
    crate::repr::top_k_by(docs, k, |d| maxsim(q, m.doc(d)))
}
