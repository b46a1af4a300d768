//! Maintenance: sealing the memtable and merging segments on the build
//! pool, off the write path (one task per collection at a time), the quiet
//! period's seal, coding segments again with a newer codebook, and waiting
//! for all of it (`flush`, `compact`, closing).

use super::*;

impl Collection {
    /// Seals the memtable once no write came for `idle` (None: never), in
    /// the background ([`crate::idle`]); set for every collection by
    /// [`Database::set_seal_idle`](crate::Database::set_seal_idle).
    pub(crate) fn set_seal_idle(&self, idle: Option<Duration>) {
        let ms = idle.map_or(0, |d| d.as_millis().clamp(1, u64::MAX as u128) as u64);
        self.seal_idle_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// The quiet period after which the memtable is sealed, if one is set.
    pub fn seal_idle(&self) -> Option<Duration> {
        match self.seal_idle_ms.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// An opened collection with documents in its memtable (replayed from its
    /// WAL) is watched as if just written.
    pub(crate) fn watch_if_unsealed(&self) {
        if !self.snapshot().mem.is_empty() {
            self.written();
        }
    }

    /// A write batch was applied: the quiet watcher waits for the next quiet period.
    pub(super) fn written(&self) {
        if self.read_only || self.seal_idle().is_none() {
            return;
        }
        *self.last_write.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if let Some(me) = self.me.get().and_then(Weak::upgrade) {
            crate::idle::watch_after_write(&me);
        }
    }

    /// Whether the collection has been quiet for its period with a memtable to seal.
    pub(crate) fn quiet_for(&self, now: Instant) -> crate::idle::Quiet {
        use crate::idle::Quiet;
        let (Some(idle), Some(last)) = (self.seal_idle(), *self.last_write.lock().unwrap_or_else(|p| p.into_inner()))
        else {
            return Quiet::Nothing;
        };
        let since = now.saturating_duration_since(last);
        if since < idle {
            return Quiet::Not(idle - since);
        }
        if self.snapshot().mem.is_empty() { Quiet::Nothing } else { Quiet::Yes }
    }

    /// Queues a flush: the quiet period passed ([`crate::idle`]). Checked
    /// and queued under the maintenance lock, so a database closing (which
    /// turns the period off, then waits for queued tasks) never has one
    /// start after it.
    pub(crate) fn seal_when_idle(&self) {
        *self.last_write.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.queue(true);
    }

    /// Queues a maintenance task on the build pool (if none is queued; if
    /// one runs, it goes on once it is done).
    pub(super) fn schedule(&self) {
        self.queue(false);
    }

    /// [`schedule`](Self::schedule); with `flush` (queued only while the
    /// quiet period is on), the task seals everything written.
    fn queue(&self, flush: bool) {
        if self.read_only {
            return;
        }
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let mut m = self.maint.lock().unwrap_or_else(|p| p.into_inner());
        if m.closed || (flush && self.seal_idle().is_none()) {
            return;
        }
        m.flush |= flush;
        if m.scheduled {
            return;
        }
        if m.running {
            m.again = true;
            return;
        }
        m.scheduled = true;
        drop(m);
        build_pool().spawn(move || me.background_task());
    }

    /// A queued maintenance task: seals and merges until nothing is due.
    fn background_task(&self) {
        let flush;
        {
            let mut m = self.maint.lock().unwrap_or_else(|p| p.into_inner());
            m.scheduled = false;
            if m.closed || m.running {
                m.again |= m.running;
                self.maint_cv.notify_all();
                return;
            }
            m.running = true;
            flush = std::mem::take(&mut m.flush);
        }
        let task = Task(self);
        let error = self.maintain(flush).err().map(|e| e.to_string());
        if !matches!(error.as_deref(), Some(e) if e == Error::Poisoned(self.name.clone()).to_string()) {
            *self.flush_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
        }
        drop(task);
    }

    /// Waits for the maintenance task running (if any) and runs in its place
    /// until the returned guard is dropped.
    pub(super) fn begin_task(&self) -> Result<Task<'_>> {
        let mut m = self.maint.lock().unwrap_or_else(|p| p.into_inner());
        while m.running {
            m = self.maint_cv.wait(m).unwrap_or_else(|p| p.into_inner());
        }
        if m.closed {
            return Err(Error::Poisoned(self.name.clone()));
        }
        m.running = true;
        Ok(Task(self))
    }

    /// Lets no new maintenance task start, and waits for the one running
    /// (the collection is being dropped).
    pub(crate) fn close_maintenance(&self) {
        let mut m = self.maint.lock().unwrap_or_else(|p| p.into_inner());
        m.closed = true;
        while m.running || m.scheduled {
            m = self.maint_cv.wait(m).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits until no maintenance task runs or is queued (the database is
    /// closing: a task must not write after its lock is released).
    pub(crate) fn wait_idle(&self) {
        let mut m = self.maint.lock().unwrap_or_else(|p| p.into_inner());
        while m.running || m.scheduled {
            m = self.maint_cv.wait(m).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Undoes [`close_maintenance`](Self::close_maintenance) (a drop failed).
    pub(crate) fn reopen_maintenance(&self) {
        self.maint.lock().unwrap_or_else(|p| p.into_inner()).closed = false;
    }

    /// Seals memtables and merges segments until nothing is due; with
    /// `flush_now`, first seals everything written so far (and persists the
    /// pending deletions) even below `memtable_bytes`.
    pub(super) fn maintain(&self, flush_now: bool) -> Result<()> {
        let mut flush_now = flush_now;
        loop {
            let due = |w: &Writer| {
                w.sealing.is_none()
                    && (w.mem.bytes() >= self.config().memtable_bytes
                        || flush_now
                            && !(w.mem.is_empty()
                                && w.dirty.is_empty()
                                && w.wal.is_empty()
                                && w.manifest.older_wals.is_empty()))
            };
            // The next WAL is made before the writer lock is taken to switch to it.
            let next_wal = if due(&*self.lock_writer()?) { Some(self.new_wal()?) } else { None };
            let sealing = {
                let mut w = self.lock_writer()?;
                if let Some(wal) = next_wal {
                    // Only this task freezes memtables: still due.
                    self.rotate(&mut w, wal)?;
                }
                w.sealing.clone()
            };
            flush_now = false;
            if let Some(s) = sealing {
                self.seal_memtable(&s)?;
                continue;
            }
            let (pick, recode) = {
                let mut w = self.lock_writer()?;
                match merge_pick(&w.segments, self.config().max_segments) {
                    Some(which) => (Some(self.pick(&mut w, &which)), None),
                    None => match recode_pick(&w) {
                        Some(r) => (None, Some(r)),
                        None => return Ok(()),
                    },
                }
            };
            if let Some(p) = pick {
                self.merge(p)?;
            }
            if let Some((sv, cb)) = recode {
                self.recode(&sv, cb)?;
            }
        }
    }

    /// Codes a segment's tokens again with the collection's current codebook
    /// (see [`recode_pick`]) and commits its new centroid index; the segment
    /// file, its deletions and its full-text index stay as they are.
    fn recode(&self, sv: &SegmentView, cb: Arc<Codebook>) -> Result<()> {
        let t = Instant::now();
        let mut scratch = self.reserve_ids()?;
        let mut created = Vec::new();
        let res = (|| {
            let Some(fid) = centroids::recode(&self.dir, &self.config(), &sv.seg, &cb, &mut scratch, &mut created)?
            else {
                self.lock_writer()?.kept_codes.insert((sv.seg.id, cb.id));
                return Ok(false);
            };
            fsutil::sync_dir(&self.dir)?;
            let entry = {
                let w = self.lock_writer()?;
                w.manifest.segments.iter().find(|e| e.id == sv.seg.id).cloned()
            };
            let Some(mut entry) = entry else { return Ok(false) };
            (entry.index, entry.codebook) = (Some(fid), Some(cb.id));
            // Opened (and verified) before the writer lock; its deletions are
            // taken from the writer's view at the commit.
            let fresh = open_segment_view(
                &self.dir,
                &SegmentEntry { deletes: None, ..entry.clone() },
                &self.config(),
                0,
                Some(cb.clone()),
            )?;
            let mut w = self.lock_writer()?;
            let Some(i) = w.segments.iter().position(|s| s.seg.id == sv.seg.id) else { return Ok(false) };
            if w.codebook.as_ref().is_none_or(|c| c.id != cb.id) {
                return Ok(false);
            }
            let mut m = w.manifest.clone();
            let e =
                m.segments.iter_mut().find(|e| e.id == sv.seg.id).expect("a segment in the writer is in its manifest");
            (e.index, e.codebook) = (entry.index, entry.codebook);
            self.commit_built(&mut w, m, &mut created)?;
            let now = &w.segments[i];
            w.segments[i] = SegmentView { seg: fresh.seg, deletes: now.deletes.clone(), live: now.live.clone() };
            self.publish(&w);
            Ok(true)
        })();
        self.add_time(|b, x| b.index_s += x, t);
        match res {
            Ok(true) => Ok(()),
            Ok(false) => {
                // Merged or superseded meanwhile: the new index is not needed.
                remove_files(&created);
                Ok(())
            }
            Err(e) => remove_on_error(Err(e), &created),
        }
    }

    /// Freezes the memtable for sealing: later writes go to `wal` (new,
    /// empty), which the manifest names after the frozen memtable's WALs (so
    /// a crash before the segment is committed replays them all).
    fn rotate(&self, w: &mut Writer, wal: Wal) -> Result<()> {
        // Whole before anything follows it (appends are synced already with sync durability).
        if self.config().durability == crate::config::Durability::Buffered {
            w.wal.sync()?;
        }
        let mut m = w.manifest.clone();
        m.older_wals.push(m.wal);
        m.wal = wal.id();
        // On failure the writer is poisoned; the new WAL, if the manifest on
        // disk does not name it, is removed as a leftover on the next open.
        self.commit_manifest(w, m)?;
        w.wal = wal;
        w.sealing = Some(Sealing {
            mem: w.mem.clone(),
            seq: w.seq,
            wals: w.manifest.older_wals.clone(),
            ctx: self.seal_ctx(w, &[]),
        });
        Ok(())
    }

    /// Creates an empty WAL with a new file id (synced, the folder too),
    /// holding the writer lock only to take the id.
    fn new_wal(&self) -> Result<Wal> {
        let id = self.lock_writer()?.manifest.alloc_file_id();
        let path = self.dir.join(manifest::wal_file(id));
        let wal = Wal::create(&path, id, self.config().dim, self.config().durability)
            .and_then(|wal| fsutil::sync_dir(&self.dir).map(|_| wal));
        if wal.is_err() {
            let _ = fsutil::remove_if_exists(&path);
        }
        wal
    }

    /// Writes the frozen memtable as a segment with its indexes (no lock
    /// held), then commits it: the manifest names it, the WALs that held its
    /// batches go, and the documents replaced or deleted since the freeze are
    /// deleted in it. On failure nothing changes: the memtable and its WALs
    /// stay in charge, to be sealed again.
    fn seal_memtable(&self, s: &Sealing) -> Result<()> {
        let t = Instant::now();
        let mut scratch = self.reserve_ids()?;
        let mut created = Vec::new();
        let built = if s.mem.is_empty() {
            Ok(None)
        } else {
            let from = RowsFrom::plain(self.config().staged_storage());
            let docs = s.mem.docs().map(|d| Source { doc: d.segment_doc(), from, kept: None });
            self.build_segment(&s.ctx, docs, &[], &mut scratch, &mut created).map(Some)
        };
        // Counted before the commit, which records the build times.
        if !s.mem.is_empty() {
            self.add_time(|b, x| (b.flushes, b.flush_s) = (b.flushes + 1, b.flush_s + x), t);
        }
        let res = built.and_then(|built| {
            let mut w = self.lock_writer()?;
            self.commit_sealed(&mut w, s, built, &scratch, &mut created)?;
            self.publish(&w);
            Ok(())
        });
        // Sealed, or to be sealed again from the memtable (still in charge).
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).sealing = None;
        self.sealed.notify_all();
        remove_on_error(res, &created)
    }

    /// Writes a segment of `docs` and builds its indexes (file ids from
    /// `scratch`, which gets its manifest entry); syncs the folder. Residual
    /// storage with a codebook: the rows are coded with it.
    fn build_segment<'a>(
        &self,
        ctx: &SealCtx,
        docs: impl Iterator<Item = Source<'a>>,
        sources: &[SegmentView],
        scratch: &mut Manifest,
        created: &mut Vec<PathBuf>,
    ) -> Result<Built> {
        let (id, keep_id) = (scratch.alloc_file_id(), scratch.alloc_file_id());
        let config = self.config();
        let coder = ctx.codebook.as_deref().filter(|_| config.storage.is_residual());
        let coder = coder.map(|cb| Coder::new(cb, config.screening, config.keep.token_type()));
        let w = write_segment(&self.dir, id, &config, coder.as_ref().map(|c| (c, keep_id)), docs, created)?;
        let built = self.seal(ctx, w, id, sources, scratch, created)?;
        fsutil::sync_dir(&self.dir)?;
        Ok(built)
    }

    /// The manifest entry of a segment just built (the last of `scratch`),
    /// with its deletion vector written if it has deletions; a codebook
    /// trained for it becomes `m`'s current one.
    fn built_entry(
        &self,
        m: &mut Manifest,
        scratch: &Manifest,
        dv: &DeletionVector,
        trained: bool,
        created: &mut Vec<PathBuf>,
    ) -> Result<SegmentEntry> {
        let mut entry = scratch.segments.last().expect("the built segment's entry").clone();
        if dv.count() > 0 {
            entry.deletes = Some(self.write_deletes(m, dv, created)?);
        }
        if trained {
            m.codebook = scratch.codebook;
        }
        Ok(entry)
    }

    /// Replaces the manifest with `m`. On failure the manifest on disk may
    /// name the new files already, so they are kept (`created` is emptied):
    /// the next open removes them if it does not.
    fn commit_built(&self, w: &mut Writer, m: Manifest, created: &mut Vec<PathBuf>) -> Result<()> {
        self.commit_manifest(w, m).inspect_err(|_| created.clear())
    }

    /// The commit of [`seal_memtable`](Self::seal_memtable), under the writer lock.
    fn commit_sealed(
        &self,
        w: &mut Writer,
        s: &Sealing,
        built: Option<Built>,
        scratch: &Manifest,
        created: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let mut m = w.manifest.clone();
        let mut new_seg = None;
        if let Some((seg, trained)) = built {
            // Rows whose document was replaced or deleted since the freeze.
            let mut dv = DeletionVector::new(seg.id, seg.n_docs() as u64);
            for (r, d) in s.mem.docs().enumerate() {
                if !w.mem.get(&d.id).is_some_and(|cur| Arc::ptr_eq(cur, d)) {
                    dv.delete(r as u32);
                }
            }
            let entry = self.built_entry(&mut m, scratch, &dv, trained.is_some(), created)?;
            m.segments.push(entry);
            new_seg = Some((seg, dv, trained));
        }
        self.write_dirty_deletes(w, &mut m, created)?;
        m.last_seq = s.seq;
        m.older_wals.retain(|id| !s.wals.contains(id));
        self.commit_built(w, m, created)?;
        // Past the commit point: the writer's state follows the manifest.
        let mut rest = MemTable::default();
        for d in w.mem.docs() {
            if !s.mem.get(&d.id).is_some_and(|f| Arc::ptr_eq(f, d)) {
                rest.insert_shared(d.clone());
            }
        }
        w.mem = Arc::new(rest);
        w.dirty.clear();
        if let Some((seg, dv, trained)) = new_seg {
            w.add_segment(seg, dv, trained);
        }
        Ok(())
    }

    /// Writes the deletion vector of every segment whose deletions changed
    /// since the manifest was written, and names them in `m`.
    fn write_dirty_deletes(&self, w: &Writer, m: &mut Manifest, created: &mut Vec<PathBuf>) -> Result<()> {
        for sv in w.segments.iter().filter(|sv| w.dirty.contains(&sv.seg.id)) {
            let fid = self.write_deletes(m, &sv.deletes, created)?;
            let e = m.segments.iter_mut().find(|e| e.id == sv.seg.id).expect("segment in manifest");
            e.deletes = Some(fid);
        }
        Ok(())
    }

    /// Writes a deletion vector file; returns its file id.
    fn write_deletes(&self, m: &mut Manifest, dv: &DeletionVector, created: &mut Vec<PathBuf>) -> Result<u64> {
        let fid = m.alloc_file_id();
        let path = self.dir.join(manifest::deletes_file(fid));
        created.push(path.clone());
        fsutil::write_new(&path, &dv.encode())?;
        Ok(fid)
    }

    /// A scratch manifest whose file ids are a block reserved for one
    /// segment's files (written without the writer lock).
    fn reserve_ids(&self) -> Result<Manifest> {
        let mut w = self.lock_writer()?;
        let mut scratch = w.manifest.clone();
        scratch.segments.clear();
        w.manifest.next_file_id += RESERVED_FILE_IDS;
        Ok(scratch)
    }

    /// Chooses segments to merge (`which`: indices into `w.segments`).
    pub(super) fn pick(&self, w: &mut Writer, which: &[usize]) -> MergePick {
        MergePick { views: which.iter().map(|&i| w.segments[i].clone()).collect(), ctx: self.seal_ctx(w, which) }
    }

    /// What building a segment needs from the collection as it is now;
    /// `merged`: the indices of the segments the build reads.
    fn seal_ctx(&self, w: &Writer, merged: &[usize]) -> SealCtx {
        if !matches!(self.config().index, Some(IndexConfig::Centroids { .. })) {
            return SealCtx { tokens: 0, codebook: None, others: Vec::new() };
        }
        let tokens = w.mem.n_tokens() + w.segments.iter().map(SegmentView::live_tokens).sum::<usize>();
        let others = w.segments.iter().enumerate().filter(|(i, _)| !merged.contains(i)).map(|(_, sv)| sv.clone());
        SealCtx { tokens, codebook: w.codebook.clone(), others: others.collect() }
    }

    /// Merges the picked segments into one without the writer lock (their
    /// live rows as picked), then commits: rows deleted since the pick are
    /// deleted in the merged segment.
    pub(super) fn merge(&self, p: MergePick) -> Result<()> {
        let t = Instant::now();
        let mut scratch = self.reserve_ids()?;
        let live: usize = p.views.iter().map(|s| s.live.len()).sum();
        let mut created = Vec::new();
        let built = match live {
            0 => Ok(None),
            _ => {
                // Kept rows are read (and so verified) by the merge.
                let checked = p.views.iter().try_for_each(|sv| sv.seg.check_exact(&sv.live));
                let docs = p.views.iter().flat_map(|sv| sources_of(&sv.seg, sv.live.iter().copied()));
                checked.and_then(|_| self.build_segment(&p.ctx, docs, &p.views, &mut scratch, &mut created).map(Some))
            }
        };
        self.add_time(|b, x| (b.merges, b.merge_s) = (b.merges + 1, b.merge_s + x), t);
        let res = built.and_then(|built| {
            let mut w = self.lock_writer()?;
            self.commit_merge(&mut w, &p, built, &scratch, &mut created)?;
            self.publish(&w);
            Ok(())
        });
        remove_on_error(res, &created)
    }

    /// The commit of [`merge`](Self::merge), under the writer lock.
    fn commit_merge(
        &self,
        w: &mut Writer,
        p: &MergePick,
        built: Option<Built>,
        scratch: &Manifest,
        created: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let mut m = w.manifest.clone();
        let gone: BTreeSet<u64> = p.views.iter().map(|s| s.seg.id).collect();
        m.segments.retain(|e| !gone.contains(&e.id));
        let mut new_seg = None;
        if let Some((seg, trained)) = built {
            let mut dv = DeletionVector::new(seg.id, seg.n_docs() as u64);
            let mut row = 0u32;
            for picked in &p.views {
                let now =
                    w.segments.iter().find(|s| s.seg.id == picked.seg.id).expect("merged segments stay until merged");
                for &r in picked.live.iter() {
                    if now.deletes.is_deleted(r) {
                        dv.delete(row);
                    }
                    row += 1;
                }
            }
            let entry = self.built_entry(&mut m, scratch, &dv, trained.is_some(), created)?;
            m.segments.push(entry);
            new_seg = Some((seg, dv, trained));
        }
        self.commit_built(w, m, created)?;
        w.segments.retain(|s| !gone.contains(&s.seg.id));
        w.dirty.retain(|id| !gone.contains(id));
        if let Some((seg, dv, trained)) = new_seg {
            w.add_segment(seg, dv, trained);
        }
        Ok(())
    }
}
