//! Opening a collection: its manifest and codebooks, every segment verified
//! with its indexes, kept copy and deletion vector, the WALs replayed into
//! the memtable (a torn tail cut and its bytes quarantined, or skipped when
//! read-only), and the files an interrupted seal or merge left removed.

use super::*;

impl Collection {
    /// Creates the files of a new collection in `dir` (which must exist and be empty).
    pub(crate) fn create_files(dir: &Path, name: &str, config: &CollectionConfig) -> Result<()> {
        let mut m = Manifest::new(name, config.clone());
        Wal::create(&dir.join(manifest::wal_file(m.wal)), m.wal, config.dim, config.durability)?;
        m.store(dir)
    }

    /// Opens the collection in `dir`: verifies every segment, replays the WAL
    /// and removes files left over by an interrupted flush or compaction.
    /// `read_only`: changes no file (a torn WAL tail is skipped, not cut;
    /// leftovers stay) and refuses every write.
    pub(crate) fn open(dir: &Path, read_only: bool) -> Result<Self> {
        let manifest = Manifest::load(dir)?;
        let config = manifest.config.clone();
        config.validate_stored().map_err(|e| Error::Corrupted {
            file: dir.join(manifest::FILE),
            offset: 0,
            reason: format!("invalid config: {e}"),
        })?;
        let encoder =
            config.index.as_ref().and_then(IndexConfig::encoder).map(|e| Arc::new(Encoder::new(e, config.dim)));
        let enc_dim = encoder.as_ref().map_or(0, |e| e.dim());
        let mut codebooks = std::collections::BTreeMap::new();
        for id in manifest.codebook.iter().chain(manifest.segments.iter().filter_map(|e| e.codebook.as_ref())) {
            if !codebooks.contains_key(id) {
                let cb = Codebook::open(&dir.join(manifest::codebook_file(*id)), *id, config.dim)?;
                codebooks.insert(*id, Arc::new(cb));
            }
        }
        let codebook = manifest.codebook.and_then(|id| codebooks.get(&id).cloned());
        // Residual storage codes every later seal with the current codebook: it must have their tables.
        if let Some(cb) = &codebook
            && config.storage.is_residual()
            && cb.residual.as_ref().map(|t| t.bits) != Some(config.storage.residual_bits())
        {
            return Err(Error::Corrupted {
                file: dir.join(manifest::codebook_file(cb.id)),
                offset: 68,
                reason: format!("the current codebook has no residual tables for {} storage", config.storage),
            });
        }
        let mut segments = Vec::with_capacity(manifest.segments.len());
        for e in &manifest.segments {
            let cb = e.codebook.and_then(|id| codebooks.get(&id).cloned());
            segments.push(open_segment_view(dir, e, &config, enc_dim, cb)?);
        }
        // WALs of a memtable that was being sealed (whole: each was synced
        // before the next began), then the current one.
        let mut logs = Vec::with_capacity(1 + manifest.older_wals.len());
        for &old in &manifest.older_wals {
            let path = dir.join(manifest::wal_file(old));
            let (older, batches) = Wal::open(&path, old, config.dim, config.durability, true)?;
            if older.torn.is_some() {
                return Err(Error::Corrupted {
                    file: path,
                    offset: older.len(),
                    reason: "a WAL before the current one ends in a torn batch (it was whole when the next began)"
                        .into(),
                });
            }
            logs.push((path, batches));
        }
        let wal_path = dir.join(manifest::wal_file(manifest.wal));
        let (wal, batches) = Wal::open(&wal_path, manifest.wal, config.dim, config.durability, read_only)?;
        if let Some(t) = &wal.torn {
            let kept = batches.last().map_or(manifest.last_seq, |b| b.1);
            report_torn_tail(&manifest.name, &wal_path, t, kept, read_only);
        }
        let wal_tails_cut = u64::from(wal.torn.is_some() && !read_only);
        logs.push((wal_path, batches));
        let mut w = Writer {
            seq: manifest.last_seq,
            manifest,
            wal,
            segments,
            mem: Arc::new(MemTable::default()),
            dirty: BTreeSet::new(),
            touched: BTreeSet::new(),
            poisoned: false,
            codebook,
            kept_codes: BTreeSet::new(),
            sealing: None,
            changes: None,
        };
        for (wal_path, batches) in logs {
            for (offset, seq, ops) in batches {
                if seq <= w.seq {
                    return Err(Error::Corrupted {
                        file: wal_path,
                        offset,
                        reason: format!("batch sequence {seq} does not follow {}", w.seq),
                    });
                }
                w.seq = seq;
                for op in ops {
                    match op {
                        Replayed::Upsert(d) => {
                            let tokens = d.encode(&config);
                            w.upsert(d.into_mem(tokens, config.dim))
                        }
                        Replayed::Delete(id) => {
                            w.delete(&id);
                        }
                    }
                }
            }
        }
        w.finish_batch();
        if !read_only {
            remove_unreferenced(dir, &w.manifest)?;
        }
        let (name, build) = (w.manifest.name.clone(), w.manifest.build);
        let ranking = RwLock::new(w.manifest.ranking.clone().unwrap_or_default());
        let model = RwLock::new(w.manifest.model.clone());
        let snapshot = RwLock::new(Arc::new(w.snapshot()));
        Ok(Self {
            name,
            dir: dir.into(),
            config: RwLock::new(Arc::new(config)),
            encoder,
            snapshot,
            writer: Mutex::new(w),
            flush_error: Mutex::new(None),
            build: Mutex::new(build),
            read_only,
            ranking,
            model,
            text_encoder: RwLock::new(None),
            maint: Mutex::default(),
            maint_cv: Condvar::new(),
            sealed: Condvar::new(),
            me: OnceLock::new(),
            seal_idle_ms: std::sync::atomic::AtomicU64::new(0),
            last_write: Mutex::new(None),
            replaced: Default::default(),
            successor: OnceLock::new(),
            wal_tails_cut,
        })
    }
}

/// Opens a segment, its coarse index (if any) and its deletion vector.
/// `enc_dim` is the collection encoder's output dim (0: no encoder).
/// `codebook` is the codebook its centroid index was coded with.
pub(super) fn open_segment_view(
    dir: &Path,
    e: &SegmentEntry,
    config: &CollectionConfig,
    enc_dim: usize,
    codebook: Option<Arc<Codebook>>,
) -> Result<SegmentView> {
    let mut seg = Segment::open(&dir.join(manifest::segment_file(e.id)), e.id, config, codebook.as_ref())?;
    if seg.is_residual() && e.keep.is_none() && config.keep != crate::config::Keep::None {
        return Err(Error::Corrupted {
            file: dir.join(manifest::FILE),
            offset: 0,
            reason: format!("residual segment {} names no kept copy; the collection keeps {}", e.id, config.keep),
        });
    }
    if let Some(fid) = e.keep {
        let t = config.keep.token_type().ok_or_else(|| Error::Corrupted {
            file: dir.join(manifest::FILE),
            offset: 0,
            reason: format!("segment {} names a kept copy; the collection keeps none", e.id),
        })?;
        seg.kept = Some(Kept::open(&dir.join(manifest::keep_file(fid)), &seg, t)?);
    }
    if let (Some(fid), Some(tc)) = (e.text, &config.text) {
        let tdir = dir.join(manifest::text_dir(fid));
        if let Some(want) = e.text_crc {
            let got = tessera_text::meta_checksum(&tdir).map_err(Error::io(&tdir))?;
            if got != want {
                return Err(Error::Corrupted {
                    file: tdir.join(tessera_text::UNCHECKED_FILES[0]),
                    offset: 0,
                    reason: format!(
                        "full-text index: checksum of {} is {got:08x}, the manifest recorded {want:08x}",
                        tessera_text::UNCHECKED_FILES.join(" and ")
                    ),
                });
            }
        }
        seg.text = Some(tessera_text::TextIndex::open(&tdir, tc.language).map_err(text_error(&tdir))?);
    }
    match (e.index, &config.index) {
        (Some(fid), Some(IndexConfig::Vector { .. })) => {
            let ix = VectorIndex::open(&dir.join(manifest::index_file(fid)), seg.n_docs(), enc_dim)?;
            seg.index = Some(CoarseIndex::Vector(ix));
        }
        (Some(fid), Some(IndexConfig::Centroids { .. })) => {
            let path = dir.join(manifest::ivf_file(fid));
            let cb = codebook.ok_or_else(|| Error::Corrupted {
                file: dir.join(manifest::FILE),
                offset: 0,
                reason: format!("segment {} has a centroid index but names no codebook", e.id),
            })?;
            seg.index = Some(CoarseIndex::Centroids(CentroidIndex::open(&path, seg.matrix().offsets, cb)?));
        }
        _ => {}
    }
    let dv = match e.deletes {
        None => DeletionVector::new(e.id, seg.n_docs() as u64),
        Some(f) => {
            let path = dir.join(manifest::deletes_file(f));
            let dv = DeletionVector::decode(&fsutil::read(&path)?).map_err(Error::format(&path))?;
            if dv.segment_id != e.id || dv.n_rows != seg.n_docs() as u64 {
                return Err(Error::Corrupted {
                    file: path,
                    offset: tessera_format::envelope::HEADER_LEN as u64,
                    reason: format!("deletion vector is for segment {} with {} rows", dv.segment_id, dv.n_rows),
                });
            }
            dv
        }
    };
    Ok(SegmentView::new(Arc::new(seg), dv))
}

/// Says what a torn WAL tail found on open held: an error in the log (the
/// last batch of an append that crashed was never acknowledged, but a flipped
/// bit in an acknowledged one looks the same), with where its bytes are kept.
fn report_torn_tail(name: &str, wal: &Path, t: &wal::TornTail, kept_seq: u64, read_only: bool) {
    let what = t.batch.to_string();
    let wal = wal.display();
    let (offset, bytes, reason) = (t.offset, t.bytes, &t.reason);
    if read_only {
        tracing::warn!(
            collection = name,
            "{wal}: torn tail of {bytes} bytes at offset {offset} ({reason}) skipped, read-only: {what}; \
             batches after sequence {kept_seq} are not replayed"
        );
        return;
    }
    let kept = match &t.quarantine {
        Some(q) => format!("the cut bytes are kept in {}", q.display()),
        None => "nothing kept".into(),
    };
    tracing::error!(
        collection = name,
        "{wal}: cut a torn tail of {bytes} bytes at offset {offset} ({reason}): {what}; \
         batches after sequence {kept_seq} are lost; {kept}"
    );
}

/// The quarantine files (`torn-*.log`) in a collection's folder, by name.
pub(super) fn quarantine_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let name = entry.map_err(Error::io(dir))?.file_name().to_string_lossy().into_owned();
        if name.starts_with(wal::QUARANTINE_PREFIX) && name.ends_with(".log") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Removes segment, WAL, deletion-vector and temporary files that the
/// manifest does not reference: leftovers of an interrupted flush or merge.
fn remove_unreferenced(dir: &Path, m: &Manifest) -> Result<()> {
    let keep: BTreeSet<String> = m.referenced_files().into_iter().collect();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.ends_with(".tmp")
            || ["seg-", "wal-", "del-", "hnsw-", "ivf-", "cbk-", "keep-", "text-"].iter().any(|p| name.starts_with(p));
        if ours && !keep.contains(&name) {
            fsutil::remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}
