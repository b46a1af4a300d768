//! A centroid collection's files as loaded: a codebook (`cbk-N.tcbk`, with
//! its residual tables when the collection stores residual rows) and a
//! segment's centroid index (`ivf-N.tivf`), each memory-mapped and verified.
//! How codebooks are trained and tokens coded is [`crate::centroids`]; the
//! formats and the probing are `tessera_index::centroids`.

use crate::error::{Error, Result};
use crate::fsutil;
use memmap2::Mmap;
use std::path::Path;
use std::sync::Arc;
use tessera_index::centroids::{CodebookInfo, CodebookLayout, IvfLayout, Probe, Quantizer};
use tessera_kernels::residual::{self, Codec};
use tessera_kernels::{CentroidPanels, Repr};

/// A loaded codebook.
pub(crate) struct Codebook {
    /// File id (`cbk-N.tcbk`).
    pub id: u64,
    /// Every centroid, packed for scoring query tokens against them all.
    pub panels: CentroidPanels,
    /// The grouped codebook, for coding stored tokens.
    pub quantizer: Quantizer,
    /// CRC-32 of its centroids: what a segment's index records.
    pub identity: u32,
    pub info: CodebookInfo,
    pub file_len: u64,
    /// Residual collections: what residual rows coded with it are read with.
    pub residual: Option<Tables>,
}

/// A codebook's centroids and residual tables, owned: what a [`Codec`] views.
pub(crate) struct Tables {
    pub bits: u32,
    centroids: Vec<f32>,
    cutoffs: Vec<f32>,
    weights: Vec<f32>,
    by_bucket: Vec<f32>,
}

impl Tables {
    pub fn codec(&self, dim: usize) -> Codec<'_> {
        Codec {
            bits: self.bits,
            dim,
            centroids: &self.centroids,
            cutoffs: &self.cutoffs,
            weights: &self.weights,
            weights_by_bucket: &self.by_bucket,
        }
    }
}

impl Codebook {
    /// Reads and verifies a codebook file of a collection of `dim`-dimensional tokens.
    pub fn open(path: &Path, id: u64, dim: usize) -> Result<Self> {
        let bytes = fsutil::map(path)?;
        let layout = CodebookLayout::parse(&bytes).map_err(Error::format(path))?;
        if layout.info.dim != dim {
            return Err(Error::Corrupted {
                file: path.into(),
                offset: 12,
                reason: format!("codebook has dim {}, the collection {dim}", layout.info.dim),
            });
        }
        let residual = layout.residual_tables(&bytes).map(|t| Tables {
            bits: t.bits,
            centroids: layout.centroids(&bytes).to_vec(),
            cutoffs: t.cutoffs.to_vec(),
            weights: t.weights.to_vec(),
            by_bucket: residual::by_bucket(t.weights, dim, t.bits),
        });
        Ok(Self {
            id,
            panels: CentroidPanels::new(layout.centroids(&bytes), dim),
            quantizer: layout.quantizer(&bytes),
            identity: layout.crc,
            info: layout.info,
            file_len: bytes.len() as u64,
            residual,
        })
    }

    /// How residual rows coded with this codebook are read.
    ///
    /// # Panics
    /// If it has no residual tables (a residual segment's codebook is
    /// checked to have them when the segment opens).
    pub fn repr(&self) -> Repr<'_> {
        Repr::residual(self.residual.as_ref().expect("a residual codebook has tables").codec(self.info.dim))
    }
}

/// A segment's memory-mapped, verified centroid index and the codebook its codes refer to.
pub(crate) struct CentroidIndex {
    mmap: Mmap,
    layout: IvfLayout,
    pub codebook: Arc<Codebook>,
}

impl CentroidIndex {
    pub fn open(path: &Path, doc_offsets: &[u64], codebook: Arc<Codebook>) -> Result<Self> {
        let mmap = fsutil::map(path)?;
        let layout = IvfLayout::parse(&mmap, doc_offsets).map_err(Error::format(path))?;
        if layout.codebook != codebook.identity || layout.k != codebook.info.k {
            return Err(Error::Corrupted {
                file: path.into(),
                offset: 56,
                reason: format!(
                    "centroid index was coded with codebook {:08x} ({} centroids); its manifest entry names {:08x} ({})",
                    layout.codebook, layout.k, codebook.identity, codebook.info.k
                ),
            });
        }
        Ok(Self { mmap, layout, codebook })
    }

    /// The best `n` accepted rows by approximate (centroid) score, best first.
    pub fn candidates(&self, probe: &Probe, n: usize, accept: impl Fn(u32) -> bool) -> Vec<(u32, f32)> {
        self.layout.candidates(&self.mmap, probe, n, accept)
    }

    pub fn codes(&self) -> &[u16] {
        self.layout.codes(&self.mmap)
    }

    pub fn mean_similarity(&self) -> f32 {
        self.layout.mean_similarity
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }
}
