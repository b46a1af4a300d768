//! Re-encoding a collection with another model (after fine-tuning): every
//! stored text is encoded again into a new version of the collection, built
//! beside the old one while the old one keeps serving searches and writes,
//! then put in its place.
//!
//! 1. The old collection starts recording the ids its writes change.
//! 2. Its documents, as of one snapshot, are encoded by the new model and
//!    written (with their texts and payloads) into `collections/.reindex-NAME-N`,
//!    a collection bound to the new model, with the old one's configuration
//!    and file ids going on from its own.
//! 3. The ids written meanwhile are copied again from the old collection's
//!    latest state, in rounds, until few are left.
//! 4. With the old collection's writes held back: the last changed ids are
//!    copied (and the ranking, if it changed), the new version is flushed,
//!    its batch sequence carried on from the old one's, and the swap
//!    commits — the folder is renamed `.swap-NAME` (the commit point), the old folder goes to
//!    `.drop-NAME-N` and the new one takes its name.
//!
//! A crash before the commit point leaves the old version (the `.reindex-`
//! folder is removed on open); a crash after it, the new one (the open
//! finishes the renames). Handles to the old collection answer searches
//! from their last snapshot and refuse writes ([`Error::Replaced`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::collection::Collection;
use crate::database::{Database, REINDEX, SWAP};
use crate::doc::{Document, Tokens};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::model::{Encoder, ModelBinding, TextKindOf, encode_missing, remember};
use crate::snapshot::Snapshot;

/// Documents encoded and written per step.
const CHUNK: usize = 256;
/// Rounds of copying the documents written meanwhile before the swap takes
/// the rest with writes held back.
const CATCH_UP_ROUNDS: usize = 8;
/// Changed ids few enough to copy with writes held back.
const HELD_BACK: usize = CHUNK;

/// How far a reindex is: documents of the starting snapshot copied, of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReindexProgress {
    pub done: usize,
    pub total: usize,
}

/// What a reindex did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReindexReport {
    /// The model the collection is now bound to.
    pub model: ModelBinding,
    /// Documents of the new version.
    pub documents: usize,
    /// Documents copied again (or deleted) because they were written during the reindex.
    pub caught_up: usize,
    /// Texts cut at the model's document length.
    pub truncated: usize,
    pub seconds: f64,
}

impl Database {
    /// Re-encodes every document of collection `name` with the model in
    /// `model` into a new version that then replaces the old one (see the
    /// module's documentation); `progress` hears of each step, and stops the
    /// reindex (nothing changed) by returning an error. The model's
    /// dimension must be the collection's, and every document must have a
    /// text (tokens given without text cannot be encoded again).
    pub fn reindex(
        &self,
        name: &str,
        model: &Path,
        progress: &(dyn Fn(ReindexProgress) -> Result<()> + Sync),
    ) -> Result<ReindexReport> {
        self.writable()?;
        let start = Instant::now();
        let old = self.collection(name)?;
        let (binding, encoder) = old.fresh_model(model)?;
        old.start_change_log()?;
        let _log = StopLog(&old);
        let build = self.cdir().join(format!("{REINDEX}{name}-{}", nonce()));
        let mut draft = Draft::create(&build, &old)?;
        let new = draft.collection.clone().expect("opened");
        new.store_model(Some(binding.clone()))?;
        let mut copy = Copy { old: &old, new: &new, encoder: &encoder, caught_up: 0, truncated: 0 };

        let snap = old.snapshot();
        let ids = live_ids(&snap);
        let total = ids.len();
        progress(ReindexProgress { done: 0, total })?;
        for (i, chunk) in ids.chunks(CHUNK).enumerate() {
            copy.ids(&snap, chunk)?;
            progress(ReindexProgress { done: (i * CHUNK + chunk.len()).min(total), total })?;
        }
        drop(snap);
        // Written meanwhile: copied again in rounds while writes go on, so
        // that few are left for the step that holds them back (after the
        // rounds, whatever is left is copied there).
        for _ in 0..CATCH_UP_ROUNDS {
            let changed = old.take_changes();
            let few = changed.len() <= HELD_BACK;
            copy.changed(changed)?;
            if few {
                break;
            }
        }
        // Sealed now, so that the step that holds writes back seals only its own.
        new.flush()?;

        let cdir = self.cdir();
        let place = cdir.join(name);
        let swap = cdir.join(format!("{SWAP}{name}"));
        let documents = old.replace(|rest| {
            let before = |e| (e, false);
            let after = |e| (e, true);
            copy.changed(rest).map_err(before)?;
            // Settings changed meanwhile come along; the sequence of batches
            // goes on from the old version's (replicas compare it).
            let ranking = old.ranking();
            if ranking != new.ranking() {
                new.set_ranking(ranking).map_err(before)?;
            }
            let (was, now) = (crate::Settings::of(&old.config()), crate::Settings::of(&new.config()));
            if was != now {
                // Those that may change (the others were copied at the start).
                new.update_settings(&was.updatable()).map_err(before)?;
            }
            new.flush().map_err(before)?;
            new.advance_seq(old.last_seq()).map_err(before)?;
            let documents = new.len();
            std::fs::rename(&build, &swap).map_err(|e| before(Error::io(&swap)(e)))?;
            draft.close();
            // The commit point: from here the new version is the collection's.
            fsutil::sync_dir(&cdir).map_err(after)?;
            let gone = cdir.join(format!(".drop-{name}-{}", nonce()));
            std::fs::rename(&place, &gone).map_err(|e| after(Error::io(&place)(e)))?;
            std::fs::rename(&swap, &place).map_err(|e| after(Error::io(&place)(e)))?;
            fsutil::sync_dir(&cdir).map_err(after)?;
            remember(&binding, encoder.clone());
            let fresh = Collection::open(&place, false).map_err(after)?.shared();
            fresh.set_seal_idle(old.seal_idle());
            // In the map before writes are let through: a drop waiting for
            // them finds the new version.
            old.set_successor(fresh.clone());
            if !self.install(name, &old, fresh) {
                return Err(after(Error::UnknownCollection(name.into())));
            }
            let _ = std::fs::remove_dir_all(&gone);
            Ok(documents)
        });
        let documents = documents.map_err(|e| match e {
            e @ (Error::Replaced(_) | Error::Poisoned(_)) => e,
            e if old.is_replaced() => Error::InvalidArgument(format!(
                "the reindex of {name:?} committed, but finishing it failed ({e}): reopen the database to finish the swap"
            )),
            e => e,
        })?;
        Ok(ReindexReport {
            model: binding,
            documents,
            caught_up: copy.caught_up,
            truncated: copy.truncated,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// A number no other folder name of this process has used.
fn nonce() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// The ids of a snapshot's live documents: segments in order, then the memtable.
fn live_ids(snap: &Snapshot) -> Vec<String> {
    let mut ids = Vec::with_capacity(snap.len());
    for sv in &snap.segments {
        ids.extend(sv.live.iter().map(|&r| sv.seg.id_of(r as usize).to_string()));
    }
    ids.extend(snap.mem.docs().map(|d| d.id.clone()));
    ids
}

/// Copies documents from the old collection into the new version, encoded by the new model.
struct Copy<'a> {
    old: &'a Collection,
    new: &'a Collection,
    encoder: &'a Encoder,
    caught_up: usize,
    truncated: usize,
}

impl Copy<'_> {
    /// Copies `ids` as `snap` has them (an id it does not have is deleted from the new version).
    fn ids(&mut self, snap: &Snapshot, ids: &[String]) -> Result<()> {
        let mut docs = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for id in ids {
            match self.old.get_in(snap, id, false)? {
                Some(d) => {
                    let Some(text) = d.text.filter(|t| !t.trim().is_empty()) else {
                        return Err(Error::InvalidArgument(format!(
                            "document {id:?} of collection {:?} has no text: a reindex encodes stored texts, so every document needs one (re-upsert it with its text, or delete it)",
                            self.old.name()
                        )));
                    };
                    let no_tokens = Tokens::F32 { dim: self.old.dim(), data: Vec::new() };
                    docs.push(Document { id: d.id, tokens: no_tokens, text: Some(text), payload: d.payload });
                }
                None => gone.push(id.as_str()),
            }
        }
        if !docs.is_empty() {
            self.truncated += encode_missing(self.encoder, &mut docs, TextKindOf::Document)?.truncated;
            self.new.upsert(&docs)?;
        }
        if !gone.is_empty() {
            self.new.delete(&gone)?;
        }
        Ok(())
    }

    /// Copies the ids changed since the reindex began from the old collection's latest state.
    fn changed(&mut self, ids: BTreeSet<String>) -> Result<()> {
        let ids: Vec<String> = ids.into_iter().collect();
        let snap = self.old.snapshot();
        for chunk in ids.chunks(CHUNK) {
            self.ids(&snap, chunk)?;
        }
        self.caught_up += ids.len();
        Ok(())
    }
}

/// The new version being built; removed unless [`close`](Draft::close)d.
struct Draft {
    dir: std::path::PathBuf,
    collection: Option<Arc<Collection>>,
    closed: bool,
}

impl Draft {
    fn create(dir: &Path, like: &Collection) -> Result<Self> {
        fsutil::remove_if_exists(dir)?;
        std::fs::create_dir(dir).map_err(Error::io(dir))?;
        let mut draft = Draft { dir: dir.into(), collection: None, closed: false };
        Collection::create_files(dir, like.name(), &like.config())?;
        // File ids go on from the old version's, so that no name is reused
        // for other bytes (a backup relies on it).
        let mut m = crate::manifest::Manifest::load(dir)?;
        m.next_file_id = m.next_file_id.max(like.next_file_id());
        m.store(dir)?;
        fsutil::sync_dir(dir)?;
        draft.collection = Some(Collection::open(dir, false)?.shared());
        Ok(draft)
    }

    /// Stops the draft's background work and lets go of it (it is complete).
    fn close(&mut self) {
        if let Some(c) = self.collection.take() {
            c.close_maintenance();
        }
        self.closed = true;
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        if !self.closed {
            if let Some(c) = self.collection.take() {
                c.close_maintenance();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Stops the old collection's change log when the reindex ends, however it ends.
struct StopLog<'a>(&'a Collection);

impl Drop for StopLog<'_> {
    fn drop(&mut self) {
        self.0.stop_change_log();
    }
}
