//! Deletion vectors: which rows of a sealed segment are deleted, as a bitmap,
//! in an [`envelope`](crate::envelope) with magic `TESSDEL\0`.
//!
//! ```text
//! body offset size field
//!           0    8 segment id          (u64 LE)
//!           8    8 rows in segment     (u64 LE) = n
//!          16    8 deleted rows        (u64 LE) = number of set bits
//!          24  8·⌈n/64⌉ bitmap words   (u64 LE each; row r is bit r%64 of word r/64)
//! ```
//! Bits at positions ≥ n must be zero.

use crate::{Reader, Result, corrupted, envelope};

pub const MAGIC: &[u8; 8] = b"TESSDEL\0";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 0;

/// A decoded deletion vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionVector {
    pub segment_id: u64,
    pub n_rows: u64,
    pub words: Vec<u64>,
}

impl DeletionVector {
    pub fn new(segment_id: u64, n_rows: u64) -> Self {
        Self { segment_id, n_rows, words: vec![0; n_rows.div_ceil(64) as usize] }
    }

    #[inline]
    pub fn is_deleted(&self, row: u32) -> bool {
        self.words[row as usize / 64] >> (row % 64) & 1 == 1
    }

    /// Marks `row` deleted; returns whether it was live.
    pub fn delete(&mut self, row: u32) -> bool {
        let w = &mut self.words[row as usize / 64];
        let bit = 1u64 << (row % 64);
        let was_live = *w & bit == 0;
        *w |= bit;
        was_live
    }

    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(24 + self.words.len() * 8);
        body.extend_from_slice(&self.segment_id.to_le_bytes());
        body.extend_from_slice(&self.n_rows.to_le_bytes());
        body.extend_from_slice(&self.count().to_le_bytes());
        for w in &self.words {
            body.extend_from_slice(&w.to_le_bytes());
        }
        envelope::encode(MAGIC, MAJOR, MINOR, &body)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (_, body) = envelope::decode(bytes, MAGIC, MAJOR)?;
        let base = envelope::HEADER_LEN;
        let mut r = Reader::new(body, base);
        let segment_id = r.u64("segment id")?;
        let n_rows = r.u64("row count")?;
        let n_deleted = r.u64("deleted count")?;
        let n_words = n_rows.div_ceil(64);
        if r.remaining() as u64 != n_words * 8 {
            return Err(corrupted(base + r.pos(), format!("bitmap must hold {n_words} words")));
        }
        let words: Vec<u64> = (0..n_words).map(|_| r.u64("bitmap word")).collect::<Result<_>>()?;
        let dv = Self { segment_id, n_rows, words };
        if n_rows % 64 != 0 && dv.words.last().is_some_and(|w| w >> (n_rows % 64) != 0) {
            return Err(corrupted(bytes.len() - 8, "bits set past the last row"));
        }
        if dv.count() != n_deleted {
            return Err(corrupted(base + 16, "deleted count does not match the bitmap"));
        }
        Ok(dv)
    }
}

/// What [`inspect`] found in a deletion-vector file.
#[derive(Debug, Clone)]
pub struct DeletesReport {
    /// The envelope header; `None` if the file is shorter than it.
    pub envelope: Option<envelope::EnvelopeReport>,
    /// The complete verification, [`DeletionVector::decode`].
    pub verdict: Result<DeletionVector>,
}

/// Reports a deletion vector's envelope and checksums, and decodes it. Never panics.
pub fn inspect(bytes: &[u8]) -> DeletesReport {
    DeletesReport { envelope: envelope::inspect(bytes), verdict: DeletionVector::decode(bytes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut dv = DeletionVector::new(7, 130);
        assert!(dv.delete(0));
        assert!(dv.delete(129));
        assert!(!dv.delete(129));
        let back = DeletionVector::decode(&dv.encode()).unwrap();
        assert_eq!(back, dv);
        assert!(back.is_deleted(129) && !back.is_deleted(128));
        assert_eq!(back.count(), 2);
    }
}
