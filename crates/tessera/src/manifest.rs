//! The manifest: which segments (and deletion vectors) are live, which WAL
//! file continues them, and the collection's configuration. It is a JSON body
//! in an envelope (`TESSMAN\0`), replaced atomically as a whole.

use crate::config::{CollectionConfig, IndexConfig};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::rank::Ranking;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tessera_format::envelope;

pub(crate) const FILE: &str = "MANIFEST";
const MAGIC: &[u8; 8] = b"TESSMAN\0";
const MAJOR: u16 = 1;
const MINOR: u16 = 0;
/// The version of a manifest that names `older_wals`.
const MAJOR_OLDER_WALS: u16 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SegmentEntry {
    pub id: u64,
    pub n_docs: u64,
    pub n_tokens: u64,
    /// File id of the deletion vector, if any row is deleted.
    pub deletes: Option<u64>,
    /// File id of the segment's candidate index, if it has one: an HNSW
    /// (`hnsw-N.tidx`, pooled or muvera) or token-centroid codes and lists
    /// (`ivf-N.tivf`), as the collection's index kind says.
    #[serde(default)]
    pub index: Option<u64>,
    /// File id of the segment's full-text (BM25) index directory, if it has one.
    #[serde(default)]
    pub text: Option<u64>,
    /// CRC-32 of the text index's `meta.json` and `.managed.json`
    /// ([`tessera_text::meta_checksum`]), which tantivy does not checksum;
    /// absent in manifests written before it was kept (not checked then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_crc: Option<u32>,
    /// Centroid collections: file id of the codebook the segment's centroid
    /// index (`index`, an `ivf-N.tivf` file) was coded with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codebook: Option<u64>,
    /// Residual collections with `keep`: file id of the segment's kept copy
    /// (`keep-N.tkeep`); absent for its f16 segments (sealed before the codebook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub name: String,
    pub config: CollectionConfig,
    /// Incremented on every replacement.
    pub generation: u64,
    /// Sequence number of the last batch contained in the segments.
    pub last_seq: u64,
    /// File id of the WAL that holds every batch after `last_seq` (and after
    /// those of `older_wals`).
    pub wal: u64,
    /// WALs of a memtable being sealed into a segment, oldest first: their
    /// batches follow `last_seq` and come before `wal`'s. Empty except while
    /// a seal runs (or after a crash during one). A manifest naming any is
    /// written as version 2.0, which builds that do not know this field
    /// refuse instead of deleting those WALs as leftovers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub older_wals: Vec<u64>,
    /// Next unused file id (segments, WALs and deletion vectors share the counter).
    pub next_file_id: u64,
    pub segments: Vec<SegmentEntry>,
    /// Centroid collections: file id of the current codebook (new segments
    /// are coded with it), once one has been trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codebook: Option<u64>,
    /// Seconds spent building the collection's segments and indexes since it
    /// was created (absent in manifests written before they were kept).
    #[serde(default)]
    pub build: BuildTimes,
    /// The default ranking of hybrid queries, once one was set (`tessera tune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranking: Option<Ranking>,
    /// The model that encodes the collection's texts, once one is bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::model::ModelBinding>,
}

impl Manifest {
    pub fn new(name: &str, config: CollectionConfig) -> Self {
        Self {
            name: name.into(),
            config,
            generation: 0,
            last_seq: 0,
            wal: 1,
            older_wals: vec![],
            next_file_id: 2,
            segments: vec![],
            codebook: None,
            build: BuildTimes::default(),
            ranking: None,
            model: None,
        }
    }

    pub fn alloc_file_id(&mut self) -> u64 {
        self.next_file_id += 1;
        self.next_file_id - 1
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        Self::decode(&path, &fsutil::read(&path)?)
    }

    /// Decodes the bytes of the manifest file at `path`.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self> {
        // Version 2.0 differs from 1.0 only by `older_wals`, which it may name.
        let major = match bytes.get(8..10) {
            Some(&[lo, hi]) if u16::from_le_bytes([lo, hi]) == MAJOR_OLDER_WALS => MAJOR_OLDER_WALS,
            _ => MAJOR,
        };
        let (_, body) = envelope::decode(bytes, MAGIC, major).map_err(Error::format(path))?;
        serde_json::from_slice(body).map_err(|e| Error::Corrupted {
            file: path.into(),
            offset: envelope::HEADER_LEN as u64 + e.column() as u64,
            reason: format!("manifest body: {e}"),
        })
    }

    /// Replaces the manifest in `dir` atomically, with the generation bumped.
    pub fn store(&mut self, dir: &Path) -> Result<()> {
        self.generation += 1;
        let body = serde_json::to_vec_pretty(self).expect("manifest serialises");
        let major = if self.older_wals.is_empty() { MAJOR } else { MAJOR_OLDER_WALS };
        fsutil::atomic_write(&dir.join(FILE), &envelope::encode(MAGIC, major, MINOR, &body))
    }

    /// Every file and folder this manifest names (WALs, segments and what
    /// belongs to them, codebooks), sorted, each once.
    pub fn referenced_files(&self) -> Vec<String> {
        let mut v = vec![wal_file(self.wal)];
        v.extend(self.older_wals.iter().map(|&id| wal_file(id)));
        let index_file = match self.config.index {
            Some(IndexConfig::Centroids { .. }) => ivf_file,
            _ => index_file,
        };
        v.extend(self.codebook.map(codebook_file));
        for e in &self.segments {
            v.push(segment_file(e.id));
            v.extend(e.deletes.map(deletes_file));
            v.extend(e.index.map(index_file));
            v.extend(e.text.map(text_dir));
            v.extend(e.codebook.map(codebook_file));
            v.extend(e.keep.map(keep_file));
        }
        v.sort();
        v.dedup();
        v
    }
}

pub(crate) fn segment_file(id: u64) -> String {
    format!("seg-{id:016}.tseg")
}

pub(crate) fn wal_file(id: u64) -> String {
    format!("wal-{id:016}.log")
}

pub(crate) fn deletes_file(id: u64) -> String {
    format!("del-{id:016}.tdel")
}

pub(crate) fn index_file(id: u64) -> String {
    format!("hnsw-{id:016}.tidx")
}

/// A segment's centroid index.
pub(crate) fn ivf_file(id: u64) -> String {
    format!("ivf-{id:016}.tivf")
}

/// A centroid collection's codebook.
pub(crate) fn codebook_file(id: u64) -> String {
    format!("cbk-{id:016}.tcbk")
}

/// A residual segment's kept copy.
pub(crate) fn keep_file(id: u64) -> String {
    format!("keep-{id:016}.tkeep")
}

pub(crate) fn text_dir(id: u64) -> String {
    format!("text-{id:016}")
}

/// Seconds spent sealing segments since the collection was created, by part
/// (kept in the manifest; a flush or merge that failed counts too).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BuildTimes {
    /// Segments written by flushes, and the seconds those flushes took in all.
    pub flushes: u64,
    pub flush_s: f64,
    /// Merges (automatic and `compact`), and the seconds they took in all
    /// (their own writing and indexing included).
    pub merges: u64,
    pub merge_s: f64,
    /// Of the above: building candidate indexes (HNSW, or coding tokens with
    /// centroids), training codebooks, and building full-text indexes.
    pub index_s: f64,
    pub codebook_s: f64,
    pub text_s: f64,
}
