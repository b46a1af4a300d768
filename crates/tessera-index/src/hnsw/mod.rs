//! HNSW (Malkov & Yashunin, 2016) over single vectors, by inner product.
//!
//! [`build_index`] builds the graph in memory and returns the complete index
//! file; [`HnswLayout::parse`] verifies such a file (every checksum and the
//! graph's structure) and [`HnswLayout::search`] then searches it in place,
//! typically from a memory map. Vectors are stored as f16, scored in f32.
//!
//! | file | owns |
//! |---|---|
//! | `layout.rs` | the byte layout (table above the constants, as in SPEC.md), writing and verification |
//! | `build.rs` | level draw, batch-parallel deterministic insertion, neighbour selection |
//! | `graph.rs` | the beam search shared by construction and queries, with its reusable scratch |

mod build;
mod graph;
mod layout;

pub use build::build_index;
pub use layout::{HnswLayout, MAGIC, MAJOR, MINOR};

/// The range of `m` that [`build_index`] accepts.
pub const M_RANGE: std::ops::RangeInclusive<usize> = 2..=128;

/// Construction parameters, recorded in the file header.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HnswParams {
    /// Links per node on levels ≥ 1 (2..=128); level 0 has `2·m`.
    pub m: usize,
    /// Beam width while inserting (≥ 1); larger builds slower and searches better.
    pub ef_construction: usize,
    /// Seed of the level draw: the same vectors and params give the same file.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self { m: 16, ef_construction: 200, seed: 0x07E5_5E7A }
    }
}
