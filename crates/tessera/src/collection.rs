//! A collection: one folder holding its manifest, WAL, segments and deletion
//! vectors. Writes are serialised by one writer lock and acknowledged after the
//! WAL append; each write publishes a new immutable [`Snapshot`] that readers
//! pick up without waiting for writers.
//!
//! | file in the folder | what |
//! |---|---|
//! | `MANIFEST` | live segments, deletion vectors, current WAL, config |
//! | `wal-N.log` | batches since the last flush |
//! | `seg-N.tseg` | immutable segments |
//! | `del-N.tdel` | deletion vector of a segment |
//! | `hnsw-N.tidx` / `ivf-N.tivf` | a segment's vector (HNSW) or centroid index |
//! | `cbk-N.tcbk` | a centroid collection's codebook |
//! | `keep-N.tkeep` | a residual segment's kept copy |
//! | `text-N/` | a segment's full-text index |
//!
//! Parts in their own files: `recovery` (opening: segments verified, WALs
//! replayed, leftovers removed), `maintenance` (seals and merges on the build
//! pool, the quiet period's seal, coding segments again), `seal` (writing a
//! segment — its rows coded, its kept copy — and building its indexes),
//! `merge_policy` (when segments merge, and which), `model` (the bound model)
//! and `stats` (what [`Collection::stats`] reports). This file keeps the
//! writer: upserts, deletes, reads, snapshots, commits.

mod maintenance;
mod merge_policy;
mod model;
mod recovery;
mod seal;
mod stats;

pub use stats::{CollectionStats, SegmentSize};

use merge_policy::{merge_due, merge_pick};
use recovery::{open_segment_view, quarantine_files};
use seal::{sources_of, write_segment};

use crate::centroids::{self, Coder, RowsFrom, Source};
use crate::codebook::{CentroidIndex, Codebook};
use crate::config::{CollectionConfig, IndexConfig, check_pool_factor};
use crate::doc::{Document, MemDoc, StoredDocument, UpsertOptions, WalDoc, check_id, parse_payload, prepare_batch};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::manifest::{self, BuildTimes, Manifest, SegmentEntry};
use crate::memtable::MemTable;
use crate::segment::{CoarseIndex, Kept, Segment, SegmentView, VectorIndex};
pub(crate) use crate::snapshot::Snapshot;
use crate::snapshot::{Loc, locate_in};
use crate::wal::{self, Replayed, Wal};
use std::collections::BTreeSet;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};
use tessera_format::deletes::DeletionVector;
use tessera_format::segment::{SegmentDoc, SegmentWriter, StoredRows};
use tessera_index::Encoder;

struct Writer {
    manifest: Manifest,
    wal: Wal,
    /// Sequence number of the last batch written.
    seq: u64,
    segments: Vec<SegmentView>,
    mem: Arc<MemTable>,
    /// Segment ids whose deletion vector changed since the manifest was written.
    dirty: BTreeSet<u64>,
    /// Indices of segments whose live-row list is stale within the current batch.
    touched: BTreeSet<usize>,
    poisoned: bool,
    /// Centroid collections: the codebook new segments are coded with.
    codebook: Option<Arc<Codebook>>,
    /// Centroid collections: (segment, codebook) pairs where the codebook
    /// served the segment's tokens worse than its own: not coded again.
    kept_codes: BTreeSet<(u64, u64)>,
    /// The memtable being sealed into a segment, if one is.
    sealing: Option<Sealing>,
    /// While a reindex copies the collection: the ids every write changed
    /// since it started ([`Collection::start_change_log`]).
    changes: Option<BTreeSet<String>>,
}

/// A memtable frozen for sealing. Its documents stay in the writer's
/// memtable (readers see them there) until the segment is committed; writes
/// meanwhile go on into the memtable and a new WAL.
#[derive(Clone)]
struct Sealing {
    /// The memtable as frozen: its documents become the segment's rows, in order.
    mem: Arc<MemTable>,
    /// Sequence number of the last batch it holds.
    seq: u64,
    /// The WALs holding only batches up to `seq`: dropped by the commit.
    wals: Vec<u64>,
    ctx: SealCtx,
}

/// What building a segment's indexes needs from the collection.
#[derive(Clone)]
struct SealCtx {
    /// Tokens in the collection (centroid collections: sizes a codebook).
    tokens: usize,
    /// Centroid collections: the codebook to code tokens with.
    codebook: Option<Arc<Codebook>>,
    /// Centroid collections: the collection's other segments (not built
    /// into this one), whose tokens a codebook trained now is sampled from too.
    others: Vec<SegmentView>,
}

/// Segments picked for a merge: their views (live rows) as picked.
struct MergePick {
    views: Vec<SegmentView>,
    ctx: SealCtx,
}

/// A segment written with its indexes, and a codebook trained for it (centroids).
type Built = (Segment, Option<Arc<Codebook>>);

/// File ids one segment's build may take: segment, candidate index,
/// codebook, full-text folder (and spare).
const RESERVED_FILE_IDS: u64 = 16;

/// A segment whose deleted share reaches this is rewritten without them.
pub(crate) const MERGE_DELETED_SHARE: f64 = 0.25;

/// Maintenance of one collection: at most one task (a background seal or
/// merge, or a flush or compaction called) runs at a time.
#[derive(Default)]
struct Maint {
    /// A background task is queued on the build pool and has not started.
    scheduled: bool,
    /// A task runs.
    running: bool,
    /// Work became due while a task ran: queue another when it ends.
    again: bool,
    /// The collection is being dropped: no task starts.
    closed: bool,
    /// The next task starts with a flush: everything written is sealed (a
    /// quiet collection, [`crate::idle`]).
    flush: bool,
}

/// The running maintenance task; dropping it lets the next one run.
struct Task<'a>(&'a Collection);

impl Drop for Task<'_> {
    fn drop(&mut self) {
        let c = self.0;
        let again = {
            let mut m = c.maint.lock().unwrap_or_else(|p| p.into_inner());
            m.running = false;
            c.maint_cv.notify_all();
            std::mem::take(&mut m.again)
        };
        if again {
            c.schedule();
        }
    }
}

/// A segment of a centroid collection whose index was coded with an older
/// codebook than the collection's current one (the oldest such segment, not
/// tried with it yet), and that codebook: the maintenance task codes it
/// again. Segments sealed before the first codebook have no index and stay
/// exact; residual segments keep the codebook their rows are coded with
/// until they are merged.
fn recode_pick(w: &Writer) -> Option<(SegmentView, Arc<Codebook>)> {
    let cb = w.codebook.as_ref()?;
    let stale = |sv: &&SegmentView| {
        !sv.seg.is_residual()
            && sv.seg.centroid_index().is_some_and(|ci| ci.codebook.identity != cb.identity)
            && !w.kept_codes.contains(&(sv.seg.id, cb.id))
    };
    w.segments.iter().find(stale).map(|sv| (sv.clone(), cb.clone()))
}

/// The pool background seals and merges run on, made on first use.
static BUILD_POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();

fn make_build_pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("tessera-build-{i}"))
        .build()
        .expect("the build pool starts")
}

/// The pool background seals and merges run on: half the cores (at least
/// one), so index builds never take every core from searches, unless
/// [`set_build_threads`] made it first.
fn build_pool() -> &'static rayon::ThreadPool {
    BUILD_POOL.get_or_init(|| make_build_pool(std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))))
}

/// Makes the pool this process's background seals and merges run on, of `n`
/// threads (by default half the cores, at least one, leaving the rest to
/// searches): a process that only loads data gives them every core. The
/// pool is made when the first seal or merge is queued (a write that fills
/// the memtable, or a merge due when a collection opens); after that, only
/// the number it runs on is taken. 0 is refused.
pub fn set_build_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidArgument("build threads must be at least 1".into()));
    }
    let pool = BUILD_POOL.get_or_init(|| make_build_pool(n));
    match pool.current_num_threads() {
        m if m == n => Ok(()),
        m => Err(Error::InvalidArgument(format!(
            "the build pool already runs on {m} threads (set them before the first seal)"
        ))),
    }
}

pub struct Collection {
    name: String,
    dir: PathBuf,
    /// Fixed at creation but for the settings `update_settings` changes,
    /// which replace it whole.
    config: RwLock<Arc<CollectionConfig>>,
    /// The single-vector encoder of the coarse stage, if the collection has one.
    pub(crate) encoder: Option<Arc<Encoder>>,
    snapshot: RwLock<Arc<Snapshot>>,
    writer: Mutex<Writer>,
    /// Why the last automatic flush failed, if it did (the WAL still holds
    /// everything). Apart from the writer so that `stats` never waits on it.
    flush_error: Mutex<Option<String>>,
    build: Mutex<BuildTimes>,
    /// Opened read-only: every write is refused.
    read_only: bool,
    /// The default ranking of hybrid queries (a copy of the manifest's).
    pub(crate) ranking: RwLock<crate::rank::Ranking>,
    /// The model that encodes this collection's texts (a copy of the manifest's).
    pub(crate) model: RwLock<Option<crate::model::ModelBinding>>,
    /// The bound model once loaded, with the binding it was checked against.
    pub(crate) text_encoder: RwLock<Option<(crate::model::ModelBinding, Arc<crate::model::Encoder>)>>,
    maint: Mutex<Maint>,
    maint_cv: Condvar,
    /// Signalled when a sealing memtable is committed (or given up): writes
    /// held back while it sealed wait on it with the writer lock.
    sealed: Condvar,
    /// This collection's own handle, for background tasks (set by the database).
    me: OnceLock<Weak<Collection>>,
    /// A reindex put a new version in this one's place: writes are refused
    /// ([`Error::Replaced`]); searches answer from the last snapshot.
    replaced: std::sync::atomic::AtomicBool,
    /// The version that replaced this one: writes that waited through the
    /// swap go on there.
    successor: OnceLock<Arc<Collection>>,
    /// Seal the memtable once no write came for this many milliseconds (0: never).
    seal_idle_ms: std::sync::atomic::AtomicU64,
    /// When the last write batch was applied, while the quiet watcher waits on it.
    last_write: Mutex<Option<Instant>>,
    /// Torn WAL tails cut when this collection was opened (0 or 1).
    wal_tails_cut: u64,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection").field("name", &self.name).field("dir", &self.dir).finish()
    }
}

impl Collection {
    /// Makes this collection shared, able to run its maintenance in the background.
    pub(crate) fn shared(self) -> Arc<Self> {
        let c = Arc::new(self);
        let _ = c.me.set(Arc::downgrade(&c));
        // Work left by an earlier process (segments on an older codebook, as
        // a build before recoding existed left them) is taken up at once.
        if !c.read_only && c.writer.lock().is_ok_and(|w| recode_pick(&w).is_some()) {
            c.schedule();
        }
        c
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration (as of now: `update_settings` replaces it).
    pub fn config(&self) -> Arc<CollectionConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn dim(&self) -> usize {
        self.config().dim
    }

    /// Sequence number of the last write batch applied (0 before the first):
    /// every batch gets the next number, in the order writes are acknowledged.
    pub fn last_seq(&self) -> u64 {
        self.snapshot().seq
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    /// Refuses every later write (the collection is being dropped); returns
    /// whether it refused writes already, for [`unretire`](Self::unretire).
    pub(crate) fn retire(&self) -> bool {
        std::mem::replace(&mut self.writer.lock().unwrap_or_else(|p| p.into_inner()).poisoned, true)
    }

    /// Undoes [`retire`](Self::retire) when the drop failed.
    pub(crate) fn unretire(&self, was_poisoned: bool) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).poisoned = was_poisoned;
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = match self.writer.lock() {
            Ok(w) => w,
            // A panic while writing may have left the writer half-updated.
            Err(p) => {
                let mut w = p.into_inner();
                w.poisoned = true;
                w
            }
        };
        if self.read_only {
            return Err(Error::ReadOnly(self.dir.clone()));
        }
        if w.poisoned {
            return Err(self.refusal());
        }
        Ok(w)
    }

    /// Why a poisoned writer refuses writes.
    fn refusal(&self) -> Error {
        if self.is_replaced() { Error::Replaced(self.name.clone()) } else { Error::Poisoned(self.name.clone()) }
    }

    /// Whether a reindex replaced this collection by a new version (this
    /// handle takes no more writes; the database has the new one).
    pub fn is_replaced(&self) -> bool {
        self.replaced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Names the version that replaced this one (before the swap lets
    /// writes through): writes that waited for the swap go on there.
    pub(crate) fn set_successor(&self, next: Arc<Collection>) {
        let _ = self.successor.set(next);
    }

    /// The next unused file id of the collection's folder.
    pub(crate) fn next_file_id(&self) -> u64 {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).manifest.next_file_id
    }

    /// Makes the sequence number of the last batch at least `to` (a
    /// reindexed version goes on from its predecessor's), once every write
    /// is in segments (after a flush with no write since).
    pub(crate) fn advance_seq(&self, to: u64) -> Result<()> {
        let mut w = self.lock_writer()?;
        if w.seq >= to {
            return Ok(());
        }
        if !w.mem.is_empty() || w.sealing.is_some() || !w.manifest.older_wals.is_empty() || w.manifest.last_seq != w.seq
        {
            return Err(Error::InvalidArgument("the batch sequence moves only with every write flushed".into()));
        }
        let mut m = w.manifest.clone();
        m.last_seq = to;
        m.store(&self.dir)?;
        w.manifest = m;
        w.seq = to;
        self.publish(&w);
        Ok(())
    }

    /// Starts recording the ids that writes change (a reindex copies them
    /// again before it swaps); refused while one records already.
    pub(crate) fn start_change_log(&self) -> Result<()> {
        let mut w = self.lock_writer()?;
        if w.changes.is_some() {
            return Err(Error::Reindexing(self.name.clone()));
        }
        w.changes = Some(BTreeSet::new());
        Ok(())
    }

    /// The ids changed since the last call (or the log's start).
    pub(crate) fn take_changes(&self) -> BTreeSet<String> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.changes.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Stops recording changes.
    pub(crate) fn stop_change_log(&self) {
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).changes = None;
    }

    /// Runs `swap` with this collection's writes held back and its
    /// maintenance stopped, handing it the ids changed since the last
    /// [`take_changes`](Self::take_changes). When `swap` succeeds — or
    /// fails past its commit point (`Err((_, true))`) — this collection is
    /// retired as [replaced](Self::is_replaced); otherwise it goes on as before.
    pub(crate) fn replace<T: Send>(
        &self,
        swap: impl FnOnce(BTreeSet<String>) -> std::result::Result<T, (Error, bool)> + Send,
    ) -> Result<T> {
        self.close_maintenance();
        let mut w = match self.lock_writer() {
            Ok(w) => w,
            Err(e) => {
                self.reopen_maintenance();
                return Err(e);
            }
        };
        let changes = w.changes.as_mut().map(std::mem::take).unwrap_or_default();
        // The writes held back wait on the writer lock, some of them as jobs
        // of the engine's pool: work `swap` does in parallel must not run on
        // that pool, whose threads would steal those jobs and wait on the
        // lock this thread holds. It runs on a pool of its own, which this
        // thread (blocked in a plain join) does not serve.
        // A panic there is taken as past the commit point (this collection
        // then refuses writes until the database is opened again, which
        // settles the swap either way): never a write lost.
        let out = match rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("tessera-swap-{i}"))
            .build()
        {
            Ok(pool) => std::thread::scope(|s| {
                s.spawn(|| pool.install(|| swap(changes))).join().unwrap_or_else(|_| {
                    let e = "the swap panicked (a bug: please report it); reopen the database";
                    Err((Error::InvalidArgument(e.into()), true))
                })
            }),
            Err(e) => Err((Error::InvalidArgument(format!("no threads for the swap: {e}")), false)),
        };
        if matches!(out, Ok(_) | Err((_, true))) {
            self.replaced.store(true, std::sync::atomic::Ordering::Release);
            w.poisoned = true;
        } else {
            drop(w);
            self.reopen_maintenance();
        }
        out.map_err(|(e, _)| e)
    }

    fn publish(&self, w: &Writer) {
        let new = Arc::new(w.snapshot());
        let old = std::mem::replace(&mut *self.snapshot.write().expect("snapshot lock"), new);
        // Freeing the old snapshot (after a flush, a whole memtable) happens
        // outside the lock, so readers do not wait for it.
        drop(old);
    }

    /// Inserts or replaces documents. The batch is validated as a whole, then
    /// written to the WAL (and fsynced, by default) before this returns: either
    /// every document is applied or none is.
    pub fn upsert(&self, docs: &[Document]) -> Result<()> {
        self.upsert_with(docs, &UpsertOptions::default())
    }

    /// [`upsert`](Self::upsert) with options: a `pool_factor` for this batch
    /// instead of the collection's.
    pub fn upsert_with(&self, docs: &[Document], options: &UpsertOptions) -> Result<()> {
        let config = self.config();
        let pool_factor = options.pool_factor.unwrap_or(config.pool_factor);
        check_pool_factor(pool_factor)?;
        // Documents without tokens are encoded from their text by the bound
        // model first: the whole batch is checked before anything is written.
        let filled = self.fill_tokens(docs)?;
        let prepared = prepare_batch(&filled, &config, pool_factor)?;
        match self.write(prepared, Vec::new()) {
            // Replaced while this waited: the new version takes the batch
            // (its texts encoded by its own model).
            Err(Error::Replaced(_)) if self.successor.get().is_some() => {
                self.successor.get().unwrap().upsert_with(docs, options)
            }
            r => r.map(|_| ()),
        }
    }

    /// Deletes documents by id; returns how many existed. Unknown ids are ignored.
    pub fn delete<S: AsRef<str>>(&self, ids: &[S]) -> Result<usize> {
        let mut seen = std::collections::HashSet::new();
        let mut del = Vec::with_capacity(ids.len());
        for id in ids {
            let id = id.as_ref();
            check_id(id)?;
            if !seen.insert(id) {
                return Err(Error::DuplicateId(id.into()));
            }
            del.push(id.to_string());
        }
        match self.write(Vec::new(), del) {
            Err(Error::Replaced(_)) if self.successor.get().is_some() => self.successor.get().unwrap().delete(ids),
            r => r,
        }
    }

    /// Writes a batch: upserts (each as the WAL records it and in stored
    /// form) and deletes.
    fn write(&self, upserts: Vec<(WalDoc, tessera_kernels::EncodedTokens)>, deletes: Vec<String>) -> Result<usize> {
        if upserts.is_empty() && deletes.is_empty() {
            return Ok(0);
        }
        let mut w = self.lock_writer()?;
        // Read under the writer's lock: `update_settings` takes it to change them.
        let config = self.config();
        // While a memtable seals, writes go on into the next one until it
        // holds `memtable_bytes` more; then they wait for the seal.
        while w.sealing.is_some() && w.mem.bytes() >= config.memtable_bytes.saturating_mul(2) {
            w = self.sealed.wait(w).unwrap_or_else(|p| p.into_inner());
            if w.poisoned {
                return Err(self.refusal());
            }
        }
        let seq = w.seq + 1;
        let payload = wal::encode(seq, upserts.iter().map(|u| &u.0), &deletes, config.dim);
        if payload.len() > config.max_batch_bytes {
            return Err(Error::BatchTooLarge { bytes: payload.len(), max: config.max_batch_bytes });
        }
        if let Err(e) = w.wal.append(&tessera_format::wal::encode_frame(&payload)) {
            // The WAL's state on disk is uncertain: accept no further writes
            // until a reopen replays what is really there.
            w.poisoned = true;
            return Err(e);
        }
        w.seq = seq;
        let mut existed = 0;
        if let Some(log) = w.changes.as_mut() {
            log.extend(upserts.iter().map(|u| u.0.id.clone()).chain(deletes.iter().cloned()));
        }
        for (d, tokens) in upserts {
            w.upsert(d.into_mem(tokens, config.dim));
        }
        for id in &deletes {
            existed += w.delete(id) as usize;
        }
        w.finish_batch();
        self.publish(&w);
        // Sealing and merging run on the build pool, off this path. The batch
        // is durable and applied whatever happens there: a failed seal leaves
        // the WAL in charge and is retried after the next write.
        let due = w.sealing.is_none() && w.mem.bytes() >= config.memtable_bytes
            || merge_due(&w.segments, config.max_segments);
        drop(w);
        if due {
            self.schedule();
        }
        self.written();
        Ok(existed)
    }

    /// The stored document with this id.
    pub fn get(&self, id: &str) -> Result<Option<StoredDocument>> {
        check_id(id)?;
        self.get_in(&self.snapshot(), id, true)
    }

    /// Several documents from one snapshot (so a batch written meanwhile is
    /// seen whole or not at all); without `tokens`, their tokens are left empty.
    pub fn get_many<S: AsRef<str>>(&self, ids: &[S], tokens: bool) -> Result<Vec<Option<StoredDocument>>> {
        for id in ids {
            check_id(id.as_ref())?;
        }
        let snap = self.snapshot();
        ids.iter().map(|id| self.get_in(&snap, id.as_ref(), tokens)).collect()
    }

    /// Document `id` as `snap` holds it: its tokens as exact scores read them
    /// (a residual collection's kept copy, verified, when it keeps one; else
    /// the stored values), left empty without `tokens`.
    pub(crate) fn get_in(&self, snap: &Snapshot, id: &str, tokens: bool) -> Result<Option<StoredDocument>> {
        let dim = self.config().dim;
        let values = |r: tessera_kernels::Repr<'_>, rows: StoredRows<'_>| -> Vec<half::f16> {
            if !tokens {
                return Vec::new();
            }
            if r.token_type == tessera_kernels::TokenType::F16 {
                return bytemuck::pod_collect_to_vec(rows.rows);
            }
            tessera_kernels::decode_stored(r, rows, dim).into_iter().map(half::f16::from_f32).collect()
        };
        if let Some(d) = snap.mem.get(id) {
            return Ok(Some(StoredDocument {
                id: d.id.clone(),
                tokens: values(tessera_kernels::Repr::plain(self.config().staged_storage()), d.tokens.view()),
                n_tokens: d.n_tokens,
                given_tokens: d.given_tokens,
                dim,
                text: d.text.clone(),
                payload: d.payload.as_deref().and_then(parse_payload),
            }));
        }
        for sv in snap.segments.iter().rev() {
            if let Some(row) = sv.find_live(id) {
                let (s, r) = (&sv.seg, row as usize);
                if tokens {
                    s.check_exact(&[row])?;
                }
                let m = s.exact_matrix();
                return Ok(Some(StoredDocument {
                    id: id.into(),
                    tokens: values(m.repr, m.doc(row)),
                    n_tokens: s.n_tokens_of(r),
                    given_tokens: s.given_tokens_of(r),
                    dim,
                    text: s.text(r).map(Into::into),
                    payload: s.payload(r).and_then(parse_payload),
                }));
            }
        }
        Ok(None)
    }

    /// Verifies every document of every kept copy, which opening does not
    /// read (a search verifies those it reads): what a backup or a restore checks.
    pub fn verify_kept(&self) -> Result<()> {
        for sv in &self.snapshot().segments {
            let rows: Vec<u32> = (0..sv.seg.n_docs() as u32).collect();
            sv.seg.check_exact(&rows)?;
        }
        Ok(())
    }

    /// Number of live documents.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seals the memtable into a segment and persists pending deletions; then
    /// merges segments if there are more than `max_segments`.
    /// Everything written before the call is in segments when it returns;
    /// writes go on meanwhile (into the next memtable).
    pub fn flush(&self) -> Result<()> {
        drop(self.lock_writer()?);
        let _task = self.begin_task()?;
        self.maintain(true)?;
        *self.flush_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Makes `ranking` the default of hybrid queries (stored in the
    /// manifest: it survives a restart).
    pub fn set_ranking(&self, ranking: crate::rank::Ranking) -> Result<()> {
        ranking.rank.validate()?;
        if ranking.candidates.is_some_and(|n| !(1..=crate::MAX_K).contains(&n)) {
            return Err(Error::InvalidArgument(format!("ranking candidates must be in 1..={}", crate::MAX_K)));
        }
        let mut w = self.lock_writer()?;
        let mut m = w.manifest.clone();
        m.ranking = Some(ranking.clone()).filter(|r| *r != crate::rank::Ranking::default());
        m.store(&self.dir)?;
        w.manifest = m;
        *self.ranking.write().expect("ranking lock") = ranking;
        Ok(())
    }

    /// Changes the settings given (those in [`Settings::UPDATABLE`]; the rest
    /// are refused by name), checked as at creation, stored in the manifest
    /// (the commit point) and in effect for the next write, seal, merge or
    /// search. Returns every setting as it now is. A smaller `memtable_bytes`
    /// or `max_segments` than the collection now holds starts a seal or a
    /// merge in the background.
    pub fn update_settings(&self, settings: &crate::config::Settings) -> Result<crate::config::Settings> {
        let mut w = match self.lock_writer() {
            // Replaced by a reindex while this waited: the new version takes the change.
            Err(Error::Replaced(_)) if self.successor.get().is_some() => {
                return self.successor.get().unwrap().update_settings(settings);
            }
            r => r?,
        };
        let config = settings.apply(&self.config(), false)?;
        let mut m = w.manifest.clone();
        m.config = config.clone();
        m.store(&self.dir)?;
        w.manifest = m;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config.clone());
        let due = w.sealing.is_none() && w.mem.bytes() >= config.memtable_bytes
            || merge_due(&w.segments, config.max_segments);
        drop(w);
        if due {
            self.schedule();
        }
        Ok(crate::config::Settings::of(&config))
    }

    /// Stores `model` as the collection's binding (in the manifest).
    pub(crate) fn store_model(&self, model: Option<crate::model::ModelBinding>) -> Result<()> {
        let mut w = self.lock_writer()?;
        let mut m = w.manifest.clone();
        m.model = model.clone();
        m.store(&self.dir)?;
        w.manifest = m;
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = model;
        *self.text_encoder.write().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Merges all segments into one, dropping deleted documents.
    /// (Writes go on meanwhile; what they add after the flush stays out of the merge.)
    pub fn compact(&self) -> Result<()> {
        drop(self.lock_writer()?);
        let _task = self.begin_task()?;
        self.maintain(true)?;
        let pick = {
            let mut w = self.lock_writer()?;
            let all: Vec<usize> = (0..w.segments.len()).collect();
            let needed = all.len() > 1 || w.segments.iter().any(|s| s.live.len() < s.seg.n_docs());
            needed.then(|| self.pick(&mut w, &all))
        };
        if let Some(p) = pick {
            self.merge(p)?;
        }
        *self.flush_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// Replaces the manifest (the commit point), then removes the files the
    /// old manifest referenced and the new one does not. A failure while
    /// replacing it leaves the on-disk state uncertain, so the writer is poisoned.
    fn commit_manifest(&self, w: &mut Writer, mut m: Manifest) -> Result<()> {
        m.build = *self.build.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = m.store(&self.dir) {
            w.poisoned = true;
            return Err(e);
        }
        let old = std::mem::replace(&mut w.manifest, m);
        let keep: BTreeSet<String> = w.manifest.referenced_files().into_iter().collect();
        for f in old.referenced_files() {
            if !keep.contains(&f) {
                // Past the commit point: a file that cannot be removed now is
                // unreferenced and is removed when the collection next opens.
                let _ = fsutil::remove_if_exists(&self.dir.join(f));
            }
        }
        Ok(())
    }

    /// Records the seconds since `start` in the build times.
    fn add_time(&self, f: impl FnOnce(&mut BuildTimes, f64), start: Instant) {
        f(&mut self.build.lock().unwrap_or_else(|p| p.into_inner()), start.elapsed().as_secs_f64());
    }
}

impl Writer {
    /// Adds a segment just committed; a codebook trained for it becomes the current one.
    fn add_segment(&mut self, seg: Segment, dv: DeletionVector, trained: Option<Arc<Codebook>>) {
        self.codebook = trained.or(self.codebook.take());
        self.segments.push(SegmentView::new(Arc::new(seg), dv));
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            segments: self.segments.clone(),
            mem: self.mem.clone(),
            wal_bytes: self.wal.len(),
            delete_files: self.manifest.segments.iter().filter_map(|e| e.deletes).collect(),
            seq: self.seq,
        }
    }

    fn locate(&self, id: &str) -> Option<Loc> {
        locate_in(&self.mem, &self.segments, id)
    }

    /// Marks a segment row deleted. The deletion vector is copied only if a
    /// snapshot shares it (once per batch); live-row lists are rebuilt by
    /// [`finish_batch`](Self::finish_batch).
    fn delete_row(&mut self, seg: usize, row: u32) {
        let sv = &mut self.segments[seg];
        Arc::make_mut(&mut sv.deletes).delete(row);
        self.dirty.insert(sv.seg.id);
        self.touched.insert(seg);
    }

    /// Brings derived state up to date after a batch has been applied.
    fn finish_batch(&mut self) {
        for i in std::mem::take(&mut self.touched) {
            self.segments[i].refresh_live();
        }
    }

    fn upsert(&mut self, d: MemDoc) {
        if let Some(Loc::Seg(s, r)) = self.locate(&d.id) {
            self.delete_row(s, r);
        }
        Arc::make_mut(&mut self.mem).upsert(d);
    }

    fn delete(&mut self, id: &str) -> bool {
        match self.locate(id) {
            Some(Loc::Mem) => Arc::make_mut(&mut self.mem).remove(id),
            Some(Loc::Seg(s, r)) => {
                self.delete_row(s, r);
                true
            }
            None => false,
        }
    }
}

/// On failure, removes the files a seal or merge created (none once its
/// manifest may have landed: the commit then empties `created`).
fn remove_on_error(res: Result<()>, created: &[PathBuf]) -> Result<()> {
    if res.is_err() {
        remove_files(created);
    }
    res
}

fn remove_files(created: &[PathBuf]) {
    for p in created {
        let _ = fsutil::remove_if_exists(p);
    }
}

/// A full-text index that cannot be built or opened is reported as corruption of its directory.
fn text_error(dir: &Path) -> impl FnOnce(tessera_text::TextError) -> Error {
    let file = dir.to_path_buf();
    move |e| Error::Corrupted { file, offset: 0, reason: format!("full-text index: {e}") }
}
