//! The single-document MaxSim kernel.
//!
//! Portable version: the document is converted to f32 once, then every
//! (query token, document token) dot product is taken. The blocked SIMD kernels
//! replace this behind the same signature.

use crate::Element;
use std::cell::RefCell;

/// A query prepared for scoring: row-major f32 tokens (`n_tokens × dim`).
#[derive(Debug, Clone)]
pub struct Query {
    dim: usize,
    tokens: Vec<f32>,
}

impl Query {
    /// # Panics
    /// If `dim == 0`, `tokens` is empty, or its length is not a multiple of `dim`.
    pub fn new(tokens: &[f32], dim: usize) -> Self {
        assert!(dim > 0, "dim must be positive");
        assert!(!tokens.is_empty() && tokens.len() % dim == 0, "query must be n × dim with n ≥ 1");
        Self { dim, tokens: tokens.to_vec() }
    }

    /// Builds a query from tokens of any element type (f16 queries are widened exactly).
    pub fn from_elements<T: Element>(tokens: &[T], dim: usize) -> Self {
        let mut f = vec![0f32; tokens.len()];
        T::to_f32_slice(tokens, &mut f);
        Self::new(&f, dim)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len() / self.dim
    }

    /// Row-major f32 tokens.
    pub fn tokens(&self) -> &[f32] {
        &self.tokens
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// MaxSim of `q` against one document given as row-major `n × q.dim()` tokens.
///
/// # Panics
/// If `doc` is empty or its length is not a multiple of `q.dim()`.
pub fn maxsim<T: Element>(q: &Query, doc: &[T]) -> f32 {
    let dim = q.dim;
    assert!(!doc.is_empty() && doc.len() % dim == 0, "document must be n × dim with n ≥ 1");
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        s.resize(doc.len(), 0.0);
        T::to_f32_slice(doc, &mut s);
        let d = &s[..];
        q.tokens
            .chunks_exact(dim)
            .map(|qi| {
                d.chunks_exact(dim)
                    .map(|dj| qi.iter().zip(dj).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .sum()
    })
}
