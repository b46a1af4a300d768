//! The write-ahead log of one collection: append + fsync before a batch is
//! acknowledged; on open, replay, cutting a torn tail and refusing corruption.

use crate::config::Durability;
use crate::doc::WalDoc;
use crate::error::{Error, Result};
use half::f16;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use tessera_format::wal::{self, Op, Tail, TornBatch};

pub(crate) struct Wal {
    id: u64,
    file: File,
    pub path: PathBuf,
    len: u64,
    durability: Durability,
    /// Opened with a torn tail (cut, unless opened read-only).
    pub torn: Option<TornTail>,
}

/// A torn tail found when a WAL was opened: the bytes after its last good
/// frame, cut (unless opened read-only) and kept in a quarantine file.
#[derive(Debug, Clone)]
pub(crate) struct TornTail {
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
    pub batch: TornBatch,
    /// The quarantine file that keeps the cut bytes (`None` when read-only
    /// or when they were all zero).
    pub quarantine: Option<PathBuf>,
}

/// Prefix of a quarantine file's name: `torn-<WAL id>-<offset>.log`, a WAL
/// header followed by the bytes cut from that WAL at that offset.
pub(crate) const QUARANTINE_PREFIX: &str = "torn-";

/// The batches a WAL holds: `(file offset of the frame, sequence number, ops)`, in order.
pub(crate) type Batches = Vec<(u64, u64, Vec<Replayed>)>;

/// One replayed operation, owning its data.
pub(crate) enum Replayed {
    Upsert(WalDoc),
    Delete(String),
}

impl Wal {
    /// Creates a new, empty WAL file (fsynced; the caller syncs the directory).
    pub fn create(path: &Path, id: u64, dim: usize, durability: Durability) -> Result<Self> {
        crate::fsutil::write_new(path, &wal::encode_header(dim as u32, id))?;
        let file = OpenOptions::new().append(true).open(path).map_err(Error::io(path))?;
        Ok(Self { id, file, path: path.into(), len: wal::HEADER_LEN as u64, durability, torn: None })
    }

    /// Opens an existing WAL: verifies it, cuts a torn tail (unless
    /// `read_only`: then the file is not changed, and not written), and
    /// returns the batches `(sequence number, ops)` it holds, in order.
    pub fn open(path: &Path, id: u64, dim: usize, durability: Durability, read_only: bool) -> Result<(Self, Batches)> {
        let bytes = crate::fsutil::read(path)?;
        let (wdim, wid) = wal::decode_header(&bytes).map_err(Error::format(path))?;
        if wdim as usize != dim || wid != id {
            return Err(Error::Corrupted {
                file: path.into(),
                offset: 12,
                reason: format!("WAL header says dim {wdim}, id {wid}; expected dim {dim}, id {id}"),
            });
        }
        let scan = wal::scan(&bytes);
        if let Tail::Corrupt { offset, reason } = scan.tail {
            return Err(Error::Corrupted { file: path.into(), offset, reason });
        }
        let mut batches = Vec::with_capacity(scan.frames.len());
        for (offset, payload) in &scan.frames {
            let base = offset + wal::FRAME_HEADER_LEN as u64;
            let (seq, ops) = wal::decode_batch(payload, dim, base).map_err(Error::format(path))?;
            batches.push((*offset, seq, ops.into_iter().map(owned).collect()));
        }
        let file = OpenOptions::new().read(true).append(!read_only).open(path).map_err(Error::io(path))?;
        let mut torn = None;
        if let Tail::Torn { offset, reason } = scan.tail {
            let cut = &bytes[offset as usize..];
            let batch = wal::read_torn(cut, dim);
            let mut quarantine = None;
            if !read_only {
                // The cut bytes are kept (durably) before the WAL loses them.
                if !batch.zero {
                    quarantine = Some(quarantine_file(path, &bytes[..wal::HEADER_LEN], id, offset, cut)?);
                }
                file.set_len(scan.valid_end).and_then(|_| file.sync_all()).map_err(Error::io(path))?;
            }
            torn = Some(TornTail { offset, bytes: cut.len() as u64, reason, batch, quarantine });
        }
        Ok((Self { id, file, path: path.into(), len: scan.valid_end, durability, torn }, batches))
    }

    /// Appends one framed batch and makes it durable per the durability
    /// setting. On failure the file is cut back to its previous length.
    pub fn append(&mut self, frame: &[u8]) -> Result<()> {
        let res = self.file.write_all(frame).and_then(|_| match self.durability {
            Durability::Sync => self.file.sync_data(),
            Durability::Buffered => Ok(()),
        });
        match res {
            Ok(()) => {
                self.len += frame.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Best effort: a frame that did reach the disk would be replayed
                // although the caller was told it failed, so remove it.
                let _ = self.file.set_len(self.len).and_then(|_| self.file.sync_all());
                Err(Error::io(&self.path)(e))
            }
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Makes everything appended durable (with buffered durability, appends are not synced).
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(Error::io(&self.path))
    }

    pub fn is_empty(&self) -> bool {
        self.len == wal::HEADER_LEN as u64
    }
}

/// Writes `torn-<id>-<offset>.log` beside the WAL at `path`: its header,
/// then the `cut` bytes, fsynced with the folder. A file of that name that
/// holds other bytes (a later tail cut at the same offset) is kept, and the
/// new one is numbered `.2`, `.3`, …
fn quarantine_file(path: &Path, header: &[u8], id: u64, offset: u64, cut: &[u8]) -> Result<PathBuf> {
    let dir = path.parent().expect("a WAL lives in its collection's folder");
    let content = [header, cut].concat();
    for n in 1u32.. {
        let suffix = if n == 1 { String::new() } else { format!(".{n}") };
        let q = dir.join(format!("{QUARANTINE_PREFIX}{id:016}-{offset:016}{suffix}.log"));
        match std::fs::read(&q) {
            Ok(old) if old == content => return Ok(q),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::fsutil::atomic_write(&q, &content)?;
                return Ok(q);
            }
            Err(e) => return Err(Error::io(&q)(e)),
        }
    }
    unreachable!("a free quarantine file name")
}

fn owned(op: Op<'_>) -> Replayed {
    match op {
        Op::Upsert { id, tokens, rows: _, text, payload, given } => {
            let tokens: Vec<f16> = bytemuck::pod_collect_to_vec(tokens);
            Replayed::Upsert(WalDoc {
                id: id.into(),
                tokens,
                text: text.map(Into::into),
                payload: payload.map(Into::into),
                given,
            })
        }
        Op::Delete { id } => Replayed::Delete(id.into()),
    }
}

/// The WAL form of a batch.
pub(crate) fn encode<'a>(
    seq: u64,
    upserts: impl Iterator<Item = &'a WalDoc>,
    deletes: &[String],
    dim: usize,
) -> Vec<u8> {
    let ops: Vec<Op<'_>> = upserts
        .map(|d| Op::Upsert {
            id: &d.id,
            tokens: bytemuck::cast_slice(&d.tokens),
            rows: (d.tokens.len() / dim) as u32,
            text: d.text.as_deref(),
            payload: d.payload.as_deref(),
            given: d.given,
        })
        .chain(deletes.iter().map(|id| Op::Delete { id }))
        .collect();
    wal::encode_batch(seq, &ops)
}
