//! The single-vector coarse stage of Tessera's two-stage search.
//!
//! A late-interaction document is a matrix of token vectors; exact MaxSim over
//! every document is what the engine wants to avoid. This crate turns each
//! document into **one** vector whose inner product with an encoded query
//! approximates MaxSim, and indexes those vectors with an HNSW graph whose
//! file is verified once and then searched in place from a memory map. The
//! engine reranks the coarse candidates with exact MaxSim. Similarity is the
//! inner product (higher is better) everywhere.
//!
//! It knows nothing of segments, WALs or collections: bytes in, bytes out.
//!
//! | module | owns |
//! |---|---|
//! | [`encoder`] | `EncoderConfig` / `Encoder`: mean pooling and MUVERA fixed-dimensional encodings |
//! | [`hnsw`] | graph construction, the index file layout and in-place search |
//! | `dot` | the f32 and f16×f32 inner products used by both |
//! | `rng` | the deterministic splitmix64 generator behind every random draw |

mod dot;
pub mod encoder;
pub mod hnsw;
mod rng;

pub use encoder::{Encoder, EncoderConfig};
pub use hnsw::{HnswLayout, HnswParams, M_RANGE, build_index};
