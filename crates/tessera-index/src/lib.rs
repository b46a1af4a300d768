//! The candidate stage of Tessera's two-stage search.
//!
//! A late-interaction document is a matrix of token vectors; exact MaxSim over
//! every document is what the engine wants to avoid. This crate finds the
//! candidates the engine reranks with exact MaxSim, in one of two ways:
//! single-vector indexes turn each document into **one** vector whose inner
//! product with an encoded query approximates MaxSim and index those vectors
//! with an HNSW graph; token-centroid indexes code every token with a k-means
//! centroid and probe inverted lists centroid → documents. Every file is
//! verified once and then searched in place from a memory map. Similarity is
//! the inner product (higher is better) everywhere.
//!
//! It knows nothing of segments, WALs or collections: bytes in, bytes out.
//!
//! | module | owns |
//! |---|---|
//! | [`encoder`] | `EncoderConfig` / `Encoder`: mean pooling and MUVERA fixed-dimensional encodings |
//! | [`hnsw`] | graph construction, the index file layout and in-place search |
//! | [`centroids`] | the token-centroid stage: k-means codebooks, per-segment codes and inverted lists, probing |
//! | `dot` | the f32 and f16×f32 inner products used by both |
//! | `rng` | the deterministic splitmix64 generator behind every random draw |

pub mod centroids;
mod dot;
pub mod encoder;
pub mod hnsw;
mod rng;

pub use centroids::CentroidParams;
pub use encoder::{Encoder, EncoderConfig};
pub use hnsw::{HnswLayout, HnswParams, M_RANGE, build_index};
