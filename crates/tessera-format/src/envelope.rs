//! The envelope of small whole-file blobs (the manifest, deletion vectors):
//! a fixed 32-byte header followed by the body.
//!
//! ```text
//! offset size field
//!      0    8 magic            (per file kind)
//!      8    2 major version    (u16 LE)
//!     10    2 minor version    (u16 LE)
//!     12    4 reserved         (zero)
//!     16    8 body length      (u64 LE)
//!     24    4 body CRC-32      (u32 LE)
//!     28    4 header CRC-32    (u32 LE, of bytes 0..28)
//!     32    … body
//! ```
//!
//! The file must be exactly `32 + body length` bytes long.

use crate::{FormatError, Reader, Result, corrupted, crc32};

pub const HEADER_LEN: usize = 32;

/// Wraps `body` in an envelope.
pub fn encode(magic: &[u8; 8], major: u16, minor: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&major.to_le_bytes());
    out.extend_from_slice(&minor.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32(body).to_le_bytes());
    let hcrc = crc32(&out[..28]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Verifies an envelope and returns `(minor version, body)`. A newer minor
/// version is accepted; another major version is refused.
pub fn decode<'a>(bytes: &'a [u8], magic: &[u8; 8], major: u16) -> Result<(u16, &'a [u8])> {
    let mut r = Reader::new(bytes, 0);
    if &r.array::<8>("magic")? != magic {
        return Err(corrupted(0, format!("bad magic (expected {:?})", String::from_utf8_lossy(magic))));
    }
    let (maj, min) = (r.u16("major version")?, r.u16("minor version")?);
    r.u32("reserved")?;
    let body_len = r.u64("body length")?;
    let body_crc = r.u32("body checksum")?;
    let header_crc = r.u32("header checksum")?;
    if crc32(&bytes[..28]) != header_crc {
        return Err(corrupted(28, "header checksum mismatch"));
    }
    if maj != major {
        return Err(FormatError::UnsupportedVersion { major: maj, minor: min, supported: major });
    }
    if body_len != (bytes.len() - HEADER_LEN) as u64 {
        return Err(corrupted(
            16,
            format!("body length {body_len} but file holds {} body bytes", bytes.len() - HEADER_LEN),
        ));
    }
    let body = &bytes[HEADER_LEN..];
    if crc32(body) != body_crc {
        return Err(corrupted(HEADER_LEN, "body checksum mismatch"));
    }
    Ok((min, body))
}

/// The header fields of an envelope as stored, with the checksums its bytes have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeReport {
    pub magic: [u8; 8],
    pub major: u16,
    pub minor: u16,
    pub body_len: u64,
    /// Body bytes actually present (`file length − 32`).
    pub actual_body_len: u64,
    pub body_crc_stored: u32,
    /// CRC-32 of the bytes after the header.
    pub body_crc_computed: u32,
    pub header_crc_stored: u32,
    pub header_crc_computed: u32,
}

/// Reads an envelope's header without verifying it; `None` if the file is
/// shorter than the header. Verification is [`decode`].
pub fn inspect(bytes: &[u8]) -> Option<EnvelopeReport> {
    let h = bytes.get(..HEADER_LEN)?;
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
    Some(EnvelopeReport {
        magic: h[..8].try_into().expect("8 bytes"),
        major: u16_at(8),
        minor: u16_at(10),
        body_len: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
        actual_body_len: (bytes.len() - HEADER_LEN) as u64,
        body_crc_stored: u32_at(24),
        body_crc_computed: crc32(&bytes[HEADER_LEN..]),
        header_crc_stored: u32_at(28),
        header_crc_computed: crc32(&h[..28]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_byte_is_caught() {
        let enc = encode(b"TESTMAGC", 1, 3, b"hello body");
        assert_eq!(decode(&enc, b"TESTMAGC", 1).unwrap(), (3, &b"hello body"[..]));
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad, b"TESTMAGC", 1).is_err(), "flip at {i} not detected");
        }
        assert!(decode(&enc[..enc.len() - 1], b"TESTMAGC", 1).is_err());
        let r = inspect(&enc).unwrap();
        assert_eq!((r.minor, r.body_len, r.body_crc_stored), (3, 10, r.body_crc_computed));
        assert_eq!(r.header_crc_stored, r.header_crc_computed);
        assert!(inspect(&enc[..31]).is_none());
        assert!(matches!(
            decode(&encode(b"TESTMAGC", 2, 0, b"x"), b"TESTMAGC", 1),
            Err(FormatError::UnsupportedVersion { major: 2, .. })
        ));
    }
}
