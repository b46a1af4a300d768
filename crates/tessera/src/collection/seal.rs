//! Building a segment: writing its file from documents (residual storage:
//! their rows coded with the codebook, and the kept copy beside them), then
//! opening it and building its candidate and full-text indexes — what a
//! seal and a merge share.

use super::*;

impl Collection {
    /// Opens a freshly written segment, builds and writes its candidate index
    /// (if the collection has one) and its full-text index, and adds its
    /// manifest entry. `ctx`: a centroid collection's codebook and size;
    /// `sources`, for a merge, the segments
    /// whose live rows it holds, in order. Returns the segment and a codebook
    /// trained for it, if one was.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seal(
        &self,
        ctx: &SealCtx,
        w: Written,
        id: u64,
        sources: &[SegmentView],
        m: &mut Manifest,
        created: &mut Vec<PathBuf>,
    ) -> Result<Built> {
        let config = self.config();
        let Written { path, coded, mut keep } = w;
        let rows_codebook = coded.as_ref().and(ctx.codebook.as_ref());
        let mut seg = self.open_written(&path, id, rows_codebook, keep.as_ref())?;
        let (mut index, mut codebook, mut trained) = (None, None, None);
        let t = Instant::now();
        match &config.index {
            Some(IndexConfig::Vector { hnsw, .. }) => {
                let enc = self.encoder.as_ref().expect("a vector index has an encoder");
                let fid = m.alloc_file_id();
                let ipath = self.dir.join(manifest::index_file(fid));
                created.push(ipath.clone());
                let vectors = encode_segment(&seg, enc);
                let params = CollectionConfig::hnsw_build_params(hnsw);
                fsutil::write_new(&ipath, &tessera_index::build_index(&vectors, enc.dim(), &params))?;
                seg.index = Some(CoarseIndex::Vector(VectorIndex::open(&ipath, seg.n_docs(), enc.dim())?));
                index = Some(fid);
            }
            Some(IndexConfig::Centroids { centroids: params }) => {
                let target = centroids::Target {
                    dir: &self.dir,
                    config: &config,
                    params,
                    tokens: ctx.tokens,
                    others: &ctx.others,
                };
                let mut built = centroids::build(&target, &seg, ctx.codebook.as_ref(), sources, coded, m, created)?;
                if let Some(cb) = built.recode.take() {
                    // Residual storage and a codebook just trained: the
                    // segment is written again, coded with it: from a
                    // merge's sources (f16 rows are then coded once, not
                    // twice), or from the f16 segment just sealed.
                    let (new_id, keep_id) = (m.alloc_file_id(), m.alloc_file_id());
                    let coder = Coder::new(&cb, config.screening, config.keep.token_type());
                    let coding = Some((&coder, keep_id));
                    let w = if sources.is_empty() {
                        let docs = sources_of(&seg, 0..seg.n_docs() as u32);
                        write_segment(&self.dir, new_id, &config, coding, docs, created)?
                    } else {
                        let docs = sources.iter().flat_map(|sv| sources_of(&sv.seg, sv.live.iter().copied()));
                        write_segment(&self.dir, new_id, &config, coding, docs, created)?
                    };
                    seg = self.open_written(&w.path, new_id, Some(&cb), w.keep.as_ref())?;
                    for old in std::iter::once(&path).chain(keep.as_ref().map(|k| &k.1)) {
                        created.retain(|p| p != old);
                        fsutil::remove_if_exists(old)?;
                    }
                    keep = w.keep;
                    let again = centroids::build(&target, &seg, Some(&cb), &[], w.coded, m, created)?;
                    built.index = again.index;
                }
                if let Some((ci, fid)) = built.index {
                    codebook = Some(ci.codebook.id);
                    seg.index = Some(CoarseIndex::Centroids(ci));
                    index = Some(fid);
                }
                trained = built.trained;
                self.add_time(|b, _| b.codebook_s += built.train_s, t);
            }
            None => {}
        }
        self.add_time(|b, s| b.index_s += s, t);
        let t = Instant::now();
        let (mut text, mut text_crc) = (None, None);
        if let Some(tc) = &config.text {
            let fid = m.alloc_file_id();
            let tdir = self.dir.join(manifest::text_dir(fid));
            created.push(tdir.clone());
            std::fs::create_dir(&tdir).map_err(Error::io(&tdir))?;
            let docs = (0..seg.n_docs()).filter_map(|r| seg.text(r).map(|t| (r as u32, t.to_string())));
            tessera_text::build(&tdir, tc.language, docs).map_err(text_error(&tdir))?;
            fsutil::sync_dir(&tdir)?;
            seg.text = Some(tessera_text::TextIndex::open(&tdir, tc.language).map_err(text_error(&tdir))?);
            text_crc = Some(tessera_text::meta_checksum(&tdir).map_err(Error::io(&tdir))?);
            text = Some(fid);
        }
        self.add_time(|b, s| b.text_s += s, t);
        m.segments.push(SegmentEntry {
            id: seg.id,
            n_docs: seg.n_docs() as u64,
            n_tokens: seg.n_tokens() as u64,
            deletes: None,
            index,
            text,
            text_crc,
            codebook,
            keep: keep.map(|k| k.0),
        });
        Ok((seg, trained))
    }

    /// Opens a segment just written, with the codebook its residual rows are
    /// coded with and its kept copy.
    fn open_written(
        &self,
        path: &Path,
        id: u64,
        codebook: Option<&Arc<Codebook>>,
        keep: Option<&(u64, PathBuf)>,
    ) -> Result<Segment> {
        let config = self.config();
        let mut seg = Segment::open(path, id, &config, codebook)?;
        if let (Some((_, kp)), Some(t)) = (keep, config.keep.token_type()) {
            seg.kept = Some(Kept::open(kp, &seg, t)?);
        }
        Ok(seg)
    }
}

/// Documents a segment writer codes as residual rows in one parallel step.
const CODE_DOCS: usize = 512;

/// How a segment's rows were coded as residual rows: each token's code and
/// the tokens' mean cosine to their centroid.
pub(crate) type CodedRows = (Vec<u16>, f32);

/// A segment file written (and its kept copy, when it has one).
pub(crate) struct Written {
    pub path: PathBuf,
    /// Residual rows: how they were coded.
    pub coded: Option<CodedRows>,
    /// Its kept copy: file id and path.
    pub keep: Option<(u64, PathBuf)>,
}

/// A file being written under a temporary name: created (new), buffered.
fn create_tmp(path: &Path, created: &mut Vec<PathBuf>) -> Result<(PathBuf, BufWriter<std::fs::File>)> {
    let tmp = path.with_extension("tmp");
    created.push(tmp.clone());
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&tmp).map_err(Error::io(&tmp))?;
    Ok((tmp, BufWriter::with_capacity(1 << 20, file)))
}

/// Syncs a finished temporary file and renames it into place.
fn finish_tmp(tmp: &Path, path: &Path, w: BufWriter<std::fs::File>, created: &mut Vec<PathBuf>) -> Result<()> {
    let file = w.into_inner().map_err(|e| e.into_error()).map_err(Error::io(tmp))?;
    file.sync_all().map_err(Error::io(tmp))?;
    created.push(path.to_path_buf());
    std::fs::rename(tmp, path).map_err(Error::io(path))
}

/// Writes a segment file under a temporary name, fsyncs it and renames it
/// into place (the caller syncs the directory before referencing it). Each
/// document's rows are read as its [`Source`] says: with a `coder`
/// (residual storage once a codebook exists) they are coded with its
/// codebook (whose codes are returned) and, when it keeps a copy, the copy
/// is written as `keep-<keep_id>`; otherwise they are written as they are
/// (they are of the collection's staged storage).
pub(super) fn write_segment<'a>(
    dir: &Path,
    id: u64,
    config: &CollectionConfig,
    coder: Option<(&Coder<'_>, u64)>,
    docs: impl Iterator<Item = Source<'a>>,
    created: &mut Vec<PathBuf>,
) -> Result<Written> {
    use rayon::prelude::*;
    let path = dir.join(manifest::segment_file(id));
    let (tmp, out) = create_tmp(&path, created)?;
    let token_type = coder.map_or(config.staged_storage(), |(c, _)| c.token_type());
    let mut sw = SegmentWriter::new(out, config.dim, token_type, config.screening).map_err(Error::io(&tmp))?;
    let Some((coder, keep_id)) = coder else {
        for s in docs {
            assert_eq!(s.from.repr.token_type, token_type, "rows written as they are are of the staged storage");
            sw.add(s.doc).map_err(Error::io(&tmp))?;
        }
        let (w, _) = sw.finish().map_err(Error::io(&tmp))?;
        finish_tmp(&tmp, &path, w, created)?;
        return Ok(Written { path, coded: None, keep: None });
    };
    sw.coded_with(coder.codebook().identity);
    let keep_path = coder.keep().map(|_| dir.join(manifest::keep_file(keep_id)));
    let mut kw = match (&keep_path, coder.keep()) {
        (Some(p), Some(t)) => {
            let (ktmp, out) = create_tmp(p, created)?;
            let w = tessera_format::keep::KeepWriter::new(out, config.dim, t).map_err(Error::io(&ktmp))?;
            Some((ktmp, w))
        }
        _ => None,
    };
    let (mut codes, mut cos_sum, mut count) = (Vec::new(), 0f64, 0usize);
    let mut docs = docs.peekable();
    while docs.peek().is_some() {
        let batch: Vec<Source<'_>> = docs.by_ref().take(CODE_DOCS).collect();
        let coded: Vec<_> = batch.par_iter().map(|s| coder.code(s)).collect();
        for (s, c) in batch.iter().zip(coded) {
            sw.add(SegmentDoc { tokens: c.tokens.view(), ..s.doc }).map_err(Error::io(&tmp))?;
            if let (Some((ktmp, w)), Some(k)) = (&mut kw, &c.kept) {
                w.add(k.view()).map_err(Error::io(&*ktmp))?;
            }
            codes.extend_from_slice(&c.codes);
            (cos_sum, count) = (cos_sum + c.cos_sum, count + c.count);
        }
    }
    let segment_crc = sw.tokens_crc();
    let (w, _) = sw.finish().map_err(Error::io(&tmp))?;
    finish_tmp(&tmp, &path, w, created)?;
    if let (Some((ktmp, w)), Some(p)) = (kw, &keep_path) {
        let (w, _) = w.finish(segment_crc).map_err(Error::io(&ktmp))?;
        finish_tmp(&ktmp, p, w, created)?;
    }
    let coded = (codes, if count == 0 { 0.0 } else { (cos_sum / count as f64) as f32 });
    Ok(Written { path, coded: Some(coded), keep: keep_path.map(|p| (keep_id, p)) })
}

/// Rows `rows` of `seg` as sources of another segment (their kept rows must
/// have been verified: [`Segment::check_exact`]).
pub(super) fn sources_of<'a>(
    seg: &'a Segment,
    rows: impl IntoIterator<Item = u32> + 'a,
) -> impl Iterator<Item = Source<'a>> + 'a {
    let from = RowsFrom { repr: seg.repr(), codebook: seg.codebook().map(|cb| cb.identity) };
    rows.into_iter().map(move |r| Source { doc: seg.doc(r as usize), from, kept: seg.kept_doc(r as usize) })
}

/// One coarse vector per document of `seg` (row-major, `n_docs × enc.dim()`), in parallel.
fn encode_segment(seg: &Segment, enc: &Encoder) -> Vec<f32> {
    use rayon::prelude::*;
    let d = enc.dim();
    let mut out = vec![0f32; seg.n_docs() * d];
    let m = seg.matrix();
    out.par_chunks_mut(d).enumerate().for_each(|(r, v)| enc.encode_doc(&m.decode(r as u32), v));
    out
}
