//! Write-ahead-log files (`wal-NNNNNNNNNNNNNNNN.log`).
//!
//! File header (32 bytes, little-endian):
//! ```text
//! offset size field
//!      0    8 magic "TESSWAL\0"
//!      8    2 major version (1)
//!     10    2 minor version (1; 0 is read)
//!     12    4 dim of the collection
//!     16    8 WAL id (the number in the file name)
//!     24    4 reserved (zero)
//!     28    4 header CRC-32 (of bytes 0..28)
//! ```
//! Then frames, back to back; each is one acknowledged batch:
//! ```text
//!      0    4 payload length L (u32, 1..=MAX_FRAME)
//!      4    4 CRC-32 of bytes 0..4 followed by the payload
//!      8    L payload (a batch record)
//! ```
//! Batch record:
//! ```text
//! u64 sequence number (strictly increasing within a collection)
//! u32 op count
//! per op: u8 kind
//!   kind 1 (upsert): u16 id length, id (UTF-8), u8 flags (bit 0 text, bit 1 payload,
//!                    bit 2 pooled (1.1)), u32 token rows n, [u32 given rows, > n] if bit 2,
//!                    [u32 text length, text] if bit 0,
//!                    [u32 payload length, payload JSON] if bit 1, n × dim f16 tokens
//!   kind 2 (delete): u16 id length, id (UTF-8)
//! ```
//! A frame is written with a single append and fsynced before the batch is
//! acknowledged. [`scan`] classifies what follows the last good frame:
//! a torn tail (a crash mid-append: an incomplete frame, or a bad final frame
//! ending exactly at end of file, or zero fill) versus corruption (a bad frame
//! with more bytes after it).

use crate::{FormatError, Reader, Result, corrupted, crc32};

pub const MAGIC: &[u8; 8] = b"TESSWAL\0";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 1;
pub const HEADER_LEN: usize = 32;
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload of one frame (1 GiB).
pub const MAX_FRAME: usize = 1 << 30;

const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;
const FLAG_TEXT: u8 = 1;
const FLAG_PAYLOAD: u8 = 2;
const FLAG_POOLED: u8 = 4;

pub fn encode_header(dim: u32, wal_id: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&MAJOR.to_le_bytes());
    h[10..12].copy_from_slice(&MINOR.to_le_bytes());
    h[12..16].copy_from_slice(&dim.to_le_bytes());
    h[16..24].copy_from_slice(&wal_id.to_le_bytes());
    let c = crc32(&h[..28]);
    h[28..32].copy_from_slice(&c.to_le_bytes());
    h
}

/// Decodes the file header: `(dim, wal_id)`.
pub fn decode_header(bytes: &[u8]) -> Result<(u32, u64)> {
    let mut r = Reader::new(bytes, 0);
    if &r.array::<8>("WAL magic")? != MAGIC {
        return Err(corrupted(0, "bad magic: not a Tessera WAL"));
    }
    let (major, minor) = (r.u16("major")?, r.u16("minor")?);
    let dim = r.u32("dim")?;
    let id = r.u64("WAL id")?;
    r.u32("reserved")?;
    if crc32(&bytes[..28]) != r.u32("header checksum")? {
        return Err(corrupted(28, "WAL header checksum mismatch"));
    }
    if major != MAJOR {
        return Err(FormatError::UnsupportedVersion { major, minor, supported: MAJOR });
    }
    Ok((dim, id))
}

/// Wraps a batch payload in a frame.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    assert!(!payload.is_empty() && payload.len() <= MAX_FRAME);
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What follows the last good frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The file ends exactly after the last good frame.
    Clean,
    /// A crash left an incomplete or unchecksummed final append at this offset; cut it.
    Torn { offset: u64, reason: String },
    /// A bad frame with data after it: real corruption.
    Corrupt { offset: u64, reason: String },
}

/// Frames found in a WAL file (`bytes` = the whole file, header included).
#[derive(Debug)]
pub struct Scan<'a> {
    /// `(file offset of the frame, payload)` of every good frame, in order.
    pub frames: Vec<(u64, &'a [u8])>,
    /// End of the last good frame.
    pub valid_end: u64,
    pub tail: Tail,
}

/// Walks the frames of a WAL file whose header has been verified.
pub fn scan(bytes: &[u8]) -> Scan<'_> {
    let mut frames = Vec::new();
    let mut pos = HEADER_LEN;
    let tail = loop {
        let rest = &bytes[pos..];
        if rest.is_empty() {
            break Tail::Clean;
        }
        let torn = |reason: &str| Tail::Torn { offset: pos as u64, reason: reason.into() };
        if rest.iter().all(|&b| b == 0) {
            break torn("zero fill after the last frame");
        }
        if rest.len() < FRAME_HEADER_LEN {
            break torn("incomplete frame header");
        }
        // A real frame is never zero after its length field (its CRC and its
        // payload's sequence number ≥ 1 are not): zeros from there to the end
        // of the file are a length written in part, then zero fill.
        if rest[4..].iter().all(|&b| b == 0) {
            break torn("partly written frame header followed by zero fill");
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_FRAME {
            break Tail::Corrupt { offset: pos as u64, reason: format!("frame length {len} out of range") };
        }
        let end = FRAME_HEADER_LEN + len;
        if rest.len() < end {
            break torn("incomplete frame");
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&rest[..4]);
        h.update(&rest[FRAME_HEADER_LEN..end]);
        if h.finalize() != crc {
            if rest.len() == end {
                break torn("checksum mismatch in the final frame");
            }
            break Tail::Corrupt { offset: pos as u64, reason: "frame checksum mismatch".into() };
        }
        frames.push((pos as u64, &rest[FRAME_HEADER_LEN..end]));
        pos += end;
    };
    let valid_end = frames.last().map_or(HEADER_LEN as u64, |(o, p)| o + (FRAME_HEADER_LEN + p.len()) as u64);
    Scan { frames, valid_end, tail }
}

/// What the bytes of a torn tail say about the batch they held. Nothing in
/// them is verified (that is why they were cut): each field is what the
/// bytes read as, where they are long enough to hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TornBatch {
    /// The frame's payload length, from its first 4 bytes.
    pub frame_len: Option<u32>,
    /// The batch's sequence number, from the payload's first 8 bytes.
    pub seq: Option<u64>,
    /// Upserts and deletes, when the whole frame is present and its batch decodes.
    pub ops: Option<(usize, usize)>,
    /// Every byte of the tail is zero (a crash left the file extended but unwritten).
    pub zero: bool,
}

/// Reads what can be read of the batch in `tail` (the bytes a [`Tail::Torn`]
/// cut, from its offset to the end of the file) of a WAL with `dim` dimensions.
pub fn read_torn(tail: &[u8], dim: usize) -> TornBatch {
    let zero = tail.iter().all(|&b| b == 0);
    let le = |at: usize, n: usize| tail.get(at..at + n).map(|b| b.iter().rev().fold(0u64, |a, &x| a << 8 | x as u64));
    let frame_len = le(0, 4).map(|l| l as u32).filter(|_| !zero);
    let seq = le(FRAME_HEADER_LEN, 8).filter(|_| !zero);
    let ops = frame_len
        .and_then(|l| tail.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + l as usize))
        .and_then(|payload| decode_batch(payload, dim, 0).ok())
        .map(|(_, ops)| {
            let upserts = ops.iter().filter(|o| matches!(o, Op::Upsert { .. })).count();
            (upserts, ops.len() - upserts)
        });
    TornBatch { frame_len, seq, ops, zero }
}

impl std::fmt::Display for TornBatch {
    /// E.g. "a frame of 120 bytes, sequence 7, 2 upserts and 0 deletes (unverified)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.zero {
            return f.write_str("zero bytes only (no batch)");
        }
        match self.frame_len {
            Some(l) => write!(f, "a frame of {l} bytes")?,
            None => f.write_str("part of a frame header")?,
        }
        if let Some(s) = self.seq {
            write!(f, ", sequence {s}")?;
        }
        if let Some((u, d)) = self.ops {
            write!(f, ", {u} upsert(s) and {d} delete(s)")?;
        }
        f.write_str(" (unverified)")
    }
}

/// One operation of a batch, borrowing its data.
#[derive(Debug, Clone, PartialEq)]
pub enum Op<'a> {
    Upsert {
        id: &'a str,
        /// Row-major f16 tokens as little-endian bytes (`rows × dim × 2`).
        tokens: &'a [u8],
        rows: u32,
        text: Option<&'a str>,
        payload: Option<&'a str>,
        /// The rows the document was given, when it was pooled to `rows` (more than `rows`).
        given: Option<u32>,
    },
    Delete {
        id: &'a str,
    },
}

/// Encodes a batch record. Ids must be at most `u16::MAX` bytes, texts and
/// payloads at most `u32::MAX` (the engine enforces tighter limits).
pub fn encode_batch(seq: u64, ops: &[Op<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    let put_str16 = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&u16::try_from(s.len()).expect("id length checked").to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let put_str32 = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&u32::try_from(s.len()).expect("length checked").to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for op in ops {
        match op {
            Op::Upsert { id, tokens, rows, text, payload, given } => {
                out.push(OP_UPSERT);
                put_str16(&mut out, id);
                let flags = if text.is_some() { FLAG_TEXT } else { 0 }
                    | if payload.is_some() { FLAG_PAYLOAD } else { 0 }
                    | if given.is_some() { FLAG_POOLED } else { 0 };
                out.push(flags);
                out.extend_from_slice(&rows.to_le_bytes());
                if let Some(g) = given {
                    assert!(g > rows, "a pooled document was given more rows than it keeps");
                    out.extend_from_slice(&g.to_le_bytes());
                }
                if let Some(t) = text {
                    put_str32(&mut out, t);
                }
                if let Some(p) = payload {
                    put_str32(&mut out, p);
                }
                out.extend_from_slice(tokens);
            }
            Op::Delete { id } => {
                out.push(OP_DELETE);
                put_str16(&mut out, id);
            }
        }
    }
    out
}

/// Decodes a batch record of a collection with `dim` dimensions. `base` is
/// the payload's file offset, for error reports.
pub fn decode_batch(payload: &[u8], dim: usize, base: u64) -> Result<(u64, Vec<Op<'_>>)> {
    let mut r = Reader::new(payload, base as usize);
    let seq = r.u64("sequence number")?;
    let n = r.u32("op count")? as usize;
    // An op takes at least 3 bytes: do not trust a crafted count for the allocation.
    let mut ops = Vec::with_capacity(n.min(payload.len() / 3));
    for _ in 0..n {
        let at = base as usize + r.pos();
        match r.u8("op kind")? {
            OP_UPSERT => {
                let id_len = r.u16("id length")? as usize;
                let id = r.str(id_len, "id")?;
                let flags = r.u8("flags")?;
                if flags & !(FLAG_TEXT | FLAG_PAYLOAD | FLAG_POOLED) != 0 {
                    return Err(corrupted(at, format!("unknown upsert flags {flags:#x}")));
                }
                let rows = r.u32("token rows")?;
                if id.is_empty() || rows == 0 {
                    return Err(corrupted(at, "upsert with an empty id or no tokens"));
                }
                let given = if flags & FLAG_POOLED != 0 {
                    let g = r.u32("given rows")?;
                    if g <= rows {
                        return Err(corrupted(at, format!("a pooled upsert given {g} rows keeps {rows}")));
                    }
                    Some(g)
                } else {
                    None
                };
                let text = if flags & FLAG_TEXT != 0 {
                    let l = r.u32("text length")? as usize;
                    Some(r.str(l, "text")?)
                } else {
                    None
                };
                let payload = if flags & FLAG_PAYLOAD != 0 {
                    let l = r.u32("payload length")? as usize;
                    Some(r.str(l, "payload")?)
                } else {
                    None
                };
                let n_bytes =
                    (rows as usize).checked_mul(dim * 2).ok_or_else(|| corrupted(at, "token size overflows"))?;
                let tokens = r.bytes(n_bytes, "tokens")?;
                ops.push(Op::Upsert { id, tokens, rows, text, payload, given });
            }
            OP_DELETE => {
                let id_len = r.u16("id length")? as usize;
                let id = r.str(id_len, "id")?;
                if id.is_empty() {
                    return Err(corrupted(at, "delete with an empty id"));
                }
                ops.push(Op::Delete { id });
            }
            k => return Err(corrupted(at, format!("unknown op kind {k}"))),
        }
    }
    if r.remaining() != 0 {
        return Err(corrupted(base as usize + r.pos(), "trailing bytes after the last op"));
    }
    Ok((seq, ops))
}

/// The WAL file header as stored, with the checksum its bytes have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalHeaderReport {
    pub magic: [u8; 8],
    pub major: u16,
    pub minor: u16,
    pub dim: u32,
    pub wal_id: u64,
    pub stored_crc: u32,
    pub computed_crc: u32,
}

/// What [`inspect`] found in a WAL file.
#[derive(Debug, Clone)]
pub struct WalReport {
    pub len: u64,
    /// `None` if the file is shorter than the header.
    pub header: Option<WalHeaderReport>,
    /// [`decode_header`]'s verdict; frames are only scanned when it is `Ok`.
    pub header_check: Result<()>,
    /// Good frames (length and checksum verified).
    pub frames: usize,
    /// End of the last good frame.
    pub valid_end: u64,
    /// What follows it.
    pub tail: Tail,
    /// Sequence numbers of the first and last batch, and the op counts of all good frames.
    pub seqs: Option<(u64, u64)>,
    pub upserts: usize,
    pub deletes: usize,
    /// The first good frame whose batch does not decode (with the header's
    /// dim), or whose sequence number does not increase: corruption.
    pub batch_error: Option<FormatError>,
}

/// Reports a WAL's header, frames and tail, decoding every batch. Never panics.
pub fn inspect(bytes: &[u8]) -> WalReport {
    let header = bytes.get(..HEADER_LEN).map(|h| {
        let le = |a: usize, b: usize| h[a..b].iter().rev().fold(0u64, |acc, &x| acc << 8 | x as u64);
        WalHeaderReport {
            magic: h[..8].try_into().expect("8 bytes"),
            major: le(8, 10) as u16,
            minor: le(10, 12) as u16,
            dim: le(12, 16) as u32,
            wal_id: le(16, 24),
            stored_crc: le(28, 32) as u32,
            computed_crc: crc32(&h[..28]),
        }
    });
    let mut r = WalReport {
        len: bytes.len() as u64,
        header,
        header_check: decode_header(bytes).map(|_| ()),
        frames: 0,
        valid_end: HEADER_LEN.min(bytes.len()) as u64,
        tail: Tail::Clean,
        seqs: None,
        upserts: 0,
        deletes: 0,
        batch_error: None,
    };
    let Ok((dim, _)) = decode_header(bytes) else { return r };
    let s = scan(bytes);
    (r.frames, r.valid_end, r.tail) = (s.frames.len(), s.valid_end, s.tail);
    for &(at, payload) in &s.frames {
        let base = at + FRAME_HEADER_LEN as u64;
        match decode_batch(payload, dim as usize, base) {
            Ok((seq, _)) if r.seqs.is_some_and(|(_, last)| seq <= last) => {
                r.batch_error = Some(corrupted(base as usize, format!("sequence number {seq} does not increase")));
            }
            Ok((seq, ops)) => {
                r.seqs = Some((r.seqs.map_or(seq, |(first, _)| first), seq));
                r.upserts += ops.iter().filter(|o| matches!(o, Op::Upsert { .. })).count();
                r.deletes += ops.iter().filter(|o| matches!(o, Op::Delete { .. })).count();
                continue;
            }
            Err(e) => r.batch_error = Some(e),
        }
        break;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(batches: &[Vec<u8>]) -> Vec<u8> {
        let mut f = encode_header(2, 9).to_vec();
        for b in batches {
            f.extend(encode_frame(b));
        }
        f
    }

    #[test]
    fn batch_round_trip() {
        let tok = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let ops = vec![
            Op::Upsert { id: "a", tokens: &tok, rows: 2, text: Some("hi"), payload: None, given: None },
            Op::Upsert { id: "b", tokens: &tok[..4], rows: 1, text: None, payload: Some("{\"x\":1}"), given: None },
            Op::Upsert { id: "p", tokens: &tok[..4], rows: 1, text: Some("t"), payload: None, given: Some(3) },
            Op::Delete { id: "c" },
        ];
        let enc = encode_batch(42, &ops);
        let (seq, back) = decode_batch(&enc, 2, 0).unwrap();
        assert_eq!((seq, back), (42, ops));
    }

    #[test]
    fn torn_tail_versus_corruption() {
        let b1 = encode_batch(1, &[Op::Delete { id: "x" }]);
        let b2 = encode_batch(2, &[Op::Delete { id: "y" }]);
        let f = file_with(&[b1.clone(), b2.clone()]);
        assert_eq!(decode_header(&f).unwrap(), (2, 9));
        let s = scan(&f);
        assert_eq!((s.frames.len(), s.tail.clone()), (2, Tail::Clean));
        // Every proper prefix inside the second frame is a torn tail with one frame kept.
        let first_end = HEADER_LEN + FRAME_HEADER_LEN + b1.len();
        for cut in first_end + 1..f.len() {
            let s = scan(&f[..cut]);
            assert_eq!(s.frames.len(), 1);
            assert!(matches!(s.tail, Tail::Torn { .. }), "cut {cut}: {:?}", s.tail);
            assert_eq!(s.valid_end, first_end as u64);
        }
        // A flipped byte in the last frame: torn; in the first frame: corrupt.
        let mut g = f.clone();
        *g.last_mut().unwrap() ^= 1;
        assert!(matches!(scan(&g).tail, Tail::Torn { .. }));
        // What the cut bytes say: the whole bad frame decodes to its batch;
        // a cut one gives what its bytes hold.
        let t = read_torn(&g[first_end..], 2);
        assert_eq!((t.frame_len, t.seq, t.ops, t.zero), (Some(b2.len() as u32), Some(2), Some((0, 1)), false));
        let t = read_torn(&f[first_end..first_end + 12], 2);
        assert_eq!((t.frame_len, t.seq, t.ops), (Some(b2.len() as u32), None, None));
        assert!(read_torn(&[0; 9], 2).zero && read_torn(&[0; 9], 2).seq.is_none());
        let mut g = f.clone();
        g[HEADER_LEN + FRAME_HEADER_LEN] ^= 1;
        assert!(matches!(scan(&g).tail, Tail::Corrupt { .. }));
        let r = inspect(&f);
        assert_eq!((r.frames, r.seqs, r.deletes, r.tail.clone()), (2, Some((1, 2)), 2, Tail::Clean));
        assert!(r.header_check.is_ok() && r.batch_error.is_none());
        assert!(inspect(&f[..20]).header_check.is_err());
        let mut g = f.clone();
        g[HEADER_LEN + FRAME_HEADER_LEN] ^= 1;
        assert!(matches!(inspect(&g).tail, Tail::Corrupt { .. }));
        // A length field torn after 2 of its 4 bytes, then zero fill: torn, not corrupt.
        let mut g = file_with(std::slice::from_ref(&b1));
        let at = g.len();
        g.extend_from_slice(&[0x70, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let s = scan(&g);
        assert_eq!((s.frames.len(), s.valid_end), (1, at as u64));
        assert!(matches!(s.tail, Tail::Torn { .. }), "{:?}", s.tail);
        // Zero fill after good frames is torn.
        let mut g = f.clone();
        g.extend([0u8; 100]);
        let s = scan(&g);
        assert_eq!(s.frames.len(), 2);
        assert!(matches!(s.tail, Tail::Torn { .. }));
    }
}
