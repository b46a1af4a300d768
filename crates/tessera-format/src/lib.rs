//! Byte layouts of Tessera's files, as specified in `storage-format/SPEC.md`.
//!
//! Everything here is little-endian and versioned; every file carries a magic
//! number, a format version and CRC-32 checksums. This crate knows bytes, not
//! policy: it encodes, decodes and verifies, and reports what it finds.
//!
//! | module | owns |
//! |---|---|
//! | [`envelope`] | the 32-byte header of small whole-file blobs (manifest, deletion vectors) |
//! | [`sections`] | section tables (offset, length, CRC, kind) of sectioned files, verified alike |
//! | [`segment`] | immutable segment files: header, section table, token matrix, tables |
//! | [`tokens`] | the token types (f16, int8, residual2/4) and screening codes a segment stores, and their sizes |
//! | [`keep`] | the kept copy beside a residual segment: its rows in f16 or int8, verified per document as read |
//! | [`wal`] | write-ahead-log file header, frames and batch records |
//! | [`deletes`] | per-segment deletion bitmaps |
//! | [`names`] | settings named by a word (`named!`): one list of names gives parsing, printing and serde |
//! | [`inspect`] | non-failing reports of headers, section tables and stored vs computed checksums |

#[cfg(target_endian = "big")]
compile_error!("Tessera's files are little-endian and read in place; big-endian hosts are not supported");

pub mod deletes;
pub mod envelope;
pub mod inspect;
pub mod keep;
pub mod names;
pub mod sections;
pub mod segment;
pub mod tokens;
pub mod wal;

pub use half::f16;
pub use tokens::{Screening, TokenType};

/// Why bytes could not be decoded. `offset` is relative to the start of the
/// buffer that was handed in (the file, for whole-file decoders).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("corrupted at byte {offset}: {reason}")]
    Corrupted { offset: u64, reason: String },
    #[error("unsupported format version {major}.{minor} (this build reads {supported}.x)")]
    UnsupportedVersion { major: u16, minor: u16, supported: u16 },
}

pub type Result<T> = std::result::Result<T, FormatError>;

/// A `Corrupted` error at byte `offset` of a file (for every file format's parser).
pub fn corrupted(offset: usize, reason: impl Into<String>) -> FormatError {
    FormatError::Corrupted { offset: offset as u64, reason: reason.into() }
}

/// CRC-32 (IEEE, as computed by `crc32fast`) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Little-endian cursor over a byte slice; every read is bounds-checked and
/// reports the offset it failed at.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(corrupted(self.base + self.pos, format!("truncated {what}: need {n} bytes")));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.bytes(N, what)?.try_into().expect("length checked"))
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn str(&mut self, n: usize, what: &str) -> Result<&'a str> {
        let at = self.base + self.pos;
        std::str::from_utf8(self.bytes(n, what)?).map_err(|_| corrupted(at, format!("{what} is not UTF-8")))
    }
}
