//! Reports for `tessera inspect`: what a file's header and section table say,
//! the checksum each structure stores next to the one its bytes have, and the
//! verdict of the full verification. Nothing here fails or panics on damaged
//! or truncated input: a field that cannot be read is reported as absent.
//!
//! The per-kind reports live beside their layouts ([`segment::inspect`](crate::segment::inspect),
//! [`envelope::inspect`](crate::envelope::inspect), [`deletes::inspect`](crate::deletes::inspect),
//! [`wal::inspect`](crate::wal::inspect)); this module holds what they share:
//! the section-table walk (also usable for any file with the same 32-byte
//! entry shape, such as the HNSW index file) and an aligned copy for
//! verifiers that read tables in place.

use crate::crc32;

/// Where a section table sits in a file. Entry `i` is at `table_at + 32·i`:
/// `u64 offset, u64 length, u32 CRC-32, u32 kind, u64 reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    pub table_at: usize,
    pub max_sections: usize,
}

/// One section-table entry and the checksum its bytes actually have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionReport {
    pub index: usize,
    pub kind: u32,
    pub offset: u64,
    pub len: u64,
    pub stored_crc: u32,
    /// CRC-32 of `offset..offset+len`; `None` when that range is not inside the file.
    pub computed_crc: Option<u32>,
}

impl SectionReport {
    /// The stored checksum matches the bytes.
    pub fn ok(&self) -> bool {
        self.computed_crc == Some(self.stored_crc)
    }
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Reads the first `count` entries of the table (at most `spec.max_sections`,
/// and only those wholly inside `bytes`) and checksums each section's bytes.
pub fn section_table(bytes: &[u8], spec: &TableSpec, count: usize) -> Vec<SectionReport> {
    let mut out = Vec::new();
    for i in 0..count.min(spec.max_sections) {
        let at = spec.table_at + 32 * i;
        let (Some(offset), Some(len), Some(stored_crc), Some(kind)) =
            (le_u64(bytes, at), le_u64(bytes, at + 8), le_u32(bytes, at + 16), le_u32(bytes, at + 20))
        else {
            break;
        };
        let range = usize::try_from(offset).ok().zip(usize::try_from(len).ok());
        let computed_crc = range.and_then(|(o, l)| bytes.get(o..o.checked_add(l)?)).map(crc32);
        out.push(SectionReport { index: i, kind, offset, len, stored_crc, computed_crc });
    }
    out
}

/// CRC-32 of `bytes[..len]` with the 4 bytes at `crc_at` taken as zero (the
/// header checksums of segments and index files); `None` if too short.
pub fn crc_with_field_zeroed(bytes: &[u8], len: usize, crc_at: usize) -> Option<u32> {
    let mut h = bytes.get(..len)?.to_vec();
    h.get_mut(crc_at..crc_at + 4)?.fill(0);
    Some(crc32(&h))
}

/// Runs `f` over `bytes` at an 8-byte-aligned address (copying only when
/// they are not): verifiers that cast tables in place require it.
pub fn with_aligned<R>(bytes: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    if (bytes.as_ptr() as usize).is_multiple_of(8) {
        return f(bytes);
    }
    let mut store = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut store)[..bytes.len()].copy_from_slice(bytes);
    f(&bytemuck::cast_slice::<u64, u8>(&store)[..bytes.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_walk_never_reads_out_of_bounds() {
        let spec = TableSpec { table_at: 8, max_sections: 4 };
        let mut b = vec![0u8; 8 + 32 * 2 + 16];
        b[8..16].copy_from_slice(&72u64.to_le_bytes());
        b[16..24].copy_from_slice(&16u64.to_le_bytes());
        b[24..28].copy_from_slice(&crc32(&[0u8; 16]).to_le_bytes());
        b[28..32].copy_from_slice(&1u32.to_le_bytes());
        let r = section_table(&b, &spec, 9);
        assert_eq!(r.len(), 2);
        assert!(r[0].ok());
        assert_eq!(r[1].computed_crc, Some(crc32(&[])));
        b[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        b[48..56].copy_from_slice(&5u64.to_le_bytes());
        assert_eq!(section_table(&b, &spec, 2)[1].computed_crc, None);
        assert!(section_table(&b[..20], &spec, 2).is_empty());
        assert_eq!(crc_with_field_zeroed(&b, 200, 0), None);
    }
}
