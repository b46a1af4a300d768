//! Collection configuration, stored in the manifest when a collection is created.

use serde::{Deserialize, Serialize};

/// Largest supported token dimension.
pub const MAX_DIM: usize = 4096;
/// Longest external id, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// When an acknowledged write is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every batch is fsynced to the WAL before `upsert`/`delete` return:
    /// nothing acknowledged is lost, even on power failure.
    #[default]
    Sync,
    /// Batches are written to the WAL but not fsynced: a killed process loses
    /// nothing, an OS crash or power failure may lose the latest batches.
    Buffered,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectionConfig {
    /// Token embedding dimension (1..=4096).
    pub dim: usize,
    pub durability: Durability,
    /// The memtable is sealed into a segment once its token data exceeds this.
    pub memtable_bytes: usize,
    /// After a flush, segments are merged while there are more than this many.
    pub max_segments: usize,
    /// Largest encoded write batch accepted.
    pub max_batch_bytes: usize,
}

impl Default for CollectionConfig {
    fn default() -> Self {
        Self {
            dim: 128,
            durability: Durability::Sync,
            memtable_bytes: 64 << 20,
            max_segments: 16,
            max_batch_bytes: 256 << 20,
        }
    }
}

impl CollectionConfig {
    /// The default configuration for `dim`-dimensional tokens.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidArgument(m));
        if !(1..=MAX_DIM).contains(&self.dim) {
            return bad(format!("dim must be in 1..={MAX_DIM}, got {}", self.dim));
        }
        if self.max_segments < 1 {
            return bad("max_segments must be at least 1".into());
        }
        if !(1024..=tessera_format::wal::MAX_FRAME).contains(&self.max_batch_bytes) {
            return bad(format!(
                "max_batch_bytes must be in 1024..={}",
                tessera_format::wal::MAX_FRAME
            ));
        }
        Ok(())
    }
}
