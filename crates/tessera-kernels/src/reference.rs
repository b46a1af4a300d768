//! The scalar reference MaxSim, accumulated in f64. Used by tests as the oracle
//! for every fast path; never on a query path.

/// `Σ_i max_j ⟨q_i, d_j⟩` over row-major `q` (`nq × dim`) and `doc` (`nd × dim`), in f64.
///
/// # Panics
/// If `dim == 0`, either matrix is empty, or a length is not a multiple of `dim`.
pub fn maxsim_f64(q: &[f32], doc: &[f32], dim: usize) -> f64 {
    assert!(dim > 0 && !q.is_empty() && !doc.is_empty());
    assert!(q.len().is_multiple_of(dim) && doc.len().is_multiple_of(dim));
    q.chunks_exact(dim)
        .map(|qi| {
            doc.chunks_exact(dim)
                .map(|dj| qi.iter().zip(dj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>())
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum()
}
