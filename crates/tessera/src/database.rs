//! A database: a folder of collections, locked against a second process.
//!
//! ```text
//! DIR/LOCK                      advisory lock held while open
//! DIR/collections/NAME/         one collection (see `collection`)
//! DIR/collections/.tmp-NAME     a collection being created (removed on open)
//! DIR/collections/.drop-NAME-N  a collection being dropped (removed on open)
//! DIR/collections/.reindex-NAME-N a new version being built by a reindex (removed on open)
//! DIR/collections/.swap-NAME    a reindexed version, complete: it replaces NAME
//!                               (a writer's open finishes the swap; a reader reads it)
//! ```

use crate::collection::Collection;
use crate::config::CollectionConfig;
use crate::error::{Error, Result};
use crate::fsutil;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub struct Database {
    dir: PathBuf,
    /// The writer's exclusive lock; `None` when opened read-only.
    _lock: Option<File>,
    /// The folder's canonical path while this writer holds it ([`open_here`]).
    here: Option<PathBuf>,
    collections: RwLock<BTreeMap<String, Arc<Collection>>>,
    /// Names whose files are being written by `create_collection`.
    creating: Mutex<BTreeSet<String>>,
    /// The quiet period after which a collection's memtable is sealed.
    seal_idle: Mutex<Option<std::time::Duration>>,
}

/// How long a collection stays unwritten before its memtable is sealed in
/// the background, unless [`Database::set_seal_idle`] says otherwise.
pub const DEFAULT_SEAL_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("dir", &self.dir).finish()
    }
}

/// The databases this process holds open to write (canonical folders), so
/// that a second writer in the same process is told so rather than blamed on
/// another process (the file lock cannot tell the two apart).
fn open_here() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    static OPEN: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    OPEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `name` may name a collection (or a backup): 1-64 characters from A-Z a-z 0-9 _ -.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Database {
    /// Opens the database in `dir`, creating it if needed. Every collection is
    /// opened: segments verified, WALs replayed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        crate::kernels::check_kernel_env()?;
        let dir = dir.as_ref().to_path_buf();
        let cdir = dir.join("collections");
        let fresh = !cdir.exists();
        std::fs::create_dir_all(&cdir).map_err(Error::io(&cdir))?;
        if fresh {
            // Make the new folders' entries durable before anything is acknowledged in them.
            fsutil::sync_dir(&dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsutil::sync_dir(parent)?;
            }
        }
        let lock_path = dir.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io(&lock_path))?;
        let here = std::fs::canonicalize(&dir).map_err(Error::io(&dir))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = if open_here().contains(&here) {
                    "in this process: use that Database, or drop it before opening again"
                } else {
                    "in another process"
                };
                return Err(Error::Locked(dir, holder));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path)(e)),
        }
        let collections = open_collections(&cdir, false)?;
        for c in collections.values() {
            c.set_seal_idle(Some(DEFAULT_SEAL_IDLE));
            // Documents replayed from the WAL are sealed once the period passes.
            c.watch_if_unsealed();
        }
        open_here().insert(here.clone());
        Ok(Self {
            dir,
            here: Some(here),
            _lock: Some(lock),
            collections: RwLock::new(collections),
            creating: Mutex::default(),
            seal_idle: Mutex::new(Some(DEFAULT_SEAL_IDLE)),
        })
    }

    /// Opens an existing database to read, beside the process that may have it
    /// open to write (`tessera serve`, an ingest): no lock is taken and no
    /// file is changed — a torn WAL tail is skipped, not cut, and leftovers
    /// stay for the writer to remove. It sees the state of the moment it
    /// opens; every write (and create or drop) is refused with `ReadOnly`.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self> {
        crate::kernels::check_kernel_env()?;
        let dir = dir.as_ref().to_path_buf();
        let cdir = dir.join("collections");
        if !cdir.is_dir() {
            return Err(Error::NoDatabase(dir));
        }
        // A writer may replace a manifest and remove the files it no longer
        // names while this reads them, or be midway through appending a WAL
        // frame: such an open is retried (real damage fails every try).
        let mut tries = 0;
        let collections = loop {
            match open_collections(&cdir, true) {
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound && tries < 10 => {}
                Err(Error::Corrupted { .. }) if tries < 3 => {}
                other => break other?,
            }
            tries += 1;
            std::thread::sleep(std::time::Duration::from_millis(10 << tries.min(4)));
        };
        Ok(Self {
            dir,
            here: None,
            _lock: None,
            collections: RwLock::new(collections),
            creating: Mutex::default(),
            seal_idle: Mutex::new(None),
        })
    }

    /// Refuses a change to a database opened read-only.
    pub(crate) fn writable(&self) -> Result<()> {
        match self._lock {
            Some(_) => Ok(()),
            None => Err(Error::ReadOnly(self.dir.clone())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn cdir(&self) -> PathBuf {
        self.dir.join("collections")
    }

    /// Creates a collection; fails if one with this name exists. The files
    /// are written without holding the collection map's lock, so searches and
    /// writes of other collections never wait for a create.
    pub fn create_collection(&self, name: &str, config: CollectionConfig) -> Result<Arc<Collection>> {
        self.writable()?;
        if !valid_name(name) {
            return Err(Error::InvalidCollectionName(name.into()));
        }
        config.validate()?;
        let _creating = {
            // Creators serialise here; a name leaves `creating` only after it
            // entered the map, so a second creator sees one or the other.
            let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
            if self.collections.read().expect("collections lock").contains_key(name) || !creating.insert(name.into()) {
                return Err(Error::CollectionExists(name.into()));
            }
            Creating { set: &self.creating, name }
        };
        let tmp = self.cdir().join(format!(".tmp-{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(Error::io(&tmp))?;
        Collection::create_files(&tmp, name, &config)?;
        fsutil::sync_dir(&tmp)?;
        let path = self.cdir().join(name);
        std::fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        let opened =
            fsutil::sync_dir(&self.cdir()).and_then(|()| Collection::open(&path, false).map(Collection::shared));
        match opened {
            Ok(c) => {
                // Held across the insert: a concurrent set_seal_idle sees the new collection.
                let idle = self.seal_idle.lock().unwrap_or_else(|p| p.into_inner());
                c.set_seal_idle(*idle);
                self.collections.write().expect("collections lock").insert(name.into(), c.clone());
                drop(idle);
                Ok(c)
            }
            Err(e) => {
                // The create failed: the folder must not turn up as a
                // collection on the next open, nor block a retry.
                let _ = std::fs::remove_dir_all(&path);
                let _ = fsutil::sync_dir(&self.cdir());
                Err(e)
            }
        }
    }

    /// Opens `name` if it exists with the same dim, else creates it with `config`.
    pub fn open_or_create_collection(&self, name: &str, config: CollectionConfig) -> Result<Arc<Collection>> {
        match self.collection(name) {
            Ok(c) if c.dim() == config.dim => Ok(c),
            Ok(c) => Err(Error::ConfigMismatch {
                name: name.into(),
                reason: format!("it has dim {}, requested dim {}", c.dim(), config.dim),
            }),
            Err(Error::UnknownCollection(_)) => self.create_collection(name, config),
            Err(e) => Err(e),
        }
    }

    /// Seals a collection's memtable in the background once no write came
    /// for `idle` (None: only when it is full or flushed), for every
    /// collection of this database, those created later included. Default:
    /// [`DEFAULT_SEAL_IDLE`]; a read-only database never seals.
    pub fn set_seal_idle(&self, idle: Option<std::time::Duration>) {
        if self._lock.is_none() {
            return;
        }
        let mut s = self.seal_idle.lock().unwrap_or_else(|p| p.into_inner());
        *s = idle;
        for c in self.collections.read().unwrap_or_else(|p| p.into_inner()).values() {
            c.set_seal_idle(idle);
            c.watch_if_unsealed();
        }
    }

    /// The open collection `name`: `InvalidCollectionName` for a name no
    /// collection can have, `UnknownCollection` for one that does not exist.
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        if !valid_name(name) {
            return Err(Error::InvalidCollectionName(name.into()));
        }
        self.collections
            .read()
            .expect("collections lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownCollection(name.into()))
    }

    /// Puts `new` in the place of `old` (as `name`) unless `old` is no
    /// longer the collection of that name; returns whether it did.
    pub(crate) fn install(&self, name: &str, old: &Arc<Collection>, new: Arc<Collection>) -> bool {
        let mut map = self.collections.write().expect("collections lock");
        match map.get_mut(name) {
            Some(c) if Arc::ptr_eq(c, old) => {
                *c = new;
                true
            }
            _ => false,
        }
    }

    pub fn list_collections(&self) -> Vec<String> {
        self.collections.read().expect("collections lock").keys().cloned().collect()
    }

    /// Drops a collection and deletes its files. Handles to it that are still
    /// held keep answering searches from their last snapshot.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        self.writable()?;
        let c = self.collection(name)?;
        // Handles still held elsewhere must not write into a folder that is
        // going away. This waits for the collection's own write in progress
        // (a flush, a compaction), not holding the map's lock meanwhile.
        let was_retired = c.retire();
        if c.is_replaced() {
            // A reindex swapped in a new version while this waited: drop that.
            return self.drop_collection(name);
        }
        // Its background seal or merge (if one runs) ends before the folder goes.
        c.close_maintenance();
        let mut map = self.collections.write().expect("collections lock");
        if !map.get(name).is_some_and(|m| Arc::ptr_eq(m, &c)) {
            // Dropped (and perhaps re-created) by someone else meanwhile.
            return Err(Error::UnknownCollection(name.into()));
        }
        let path = self.cdir().join(name);
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let gone = self.cdir().join(format!(".drop-{name}-{nonce}"));
        if let Err(e) = std::fs::rename(&path, &gone) {
            c.unretire(was_retired);
            c.reopen_maintenance();
            return Err(Error::io(&path)(e));
        }
        map.remove(name);
        drop(map);
        // Dropped whatever happens next: the rename is made durable here, and
        // a leftover `.drop-*` folder is removed on open.
        fsutil::sync_dir(&self.cdir())?;
        let _ = std::fs::remove_dir_all(&gone);
        Ok(())
    }
}

impl Drop for Database {
    /// Waits for the background seals and merges running or queued, so that
    /// none writes after the lock is released. (What they had not done yet,
    /// the WAL holds.)
    fn drop(&mut self) {
        if self._lock.is_some() {
            let map = self.collections.read().unwrap_or_else(|p| p.into_inner());
            for c in map.values() {
                // No quiet-period flush may be queued from here on.
                c.set_seal_idle(None);
                c.wait_idle();
            }
        }
        // Release the lock, then say this process no longer holds it.
        drop(self._lock.take());
        if let Some(here) = self.here.take() {
            open_here().remove(&here);
        }
    }
}

/// Opens every collection in `cdir`. A writer (not `read_only`) removes the
/// folders of interrupted creates and drops; a reader skips them.
fn open_collections(cdir: &Path, read_only: bool) -> Result<BTreeMap<String, Arc<Collection>>> {
    let mut folders = BTreeMap::new();
    let mut swapped = Vec::new();
    for entry in std::fs::read_dir(cdir).map_err(Error::io(cdir))? {
        let entry = entry.map_err(Error::io(cdir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if let Some(of) = name.strip_prefix(SWAP).filter(|n| valid_name(n)) {
            swapped.push((of.to_string(), path));
        } else if name.starts_with(".tmp-") || name.starts_with(".drop-") || name.starts_with(REINDEX) {
            if !read_only {
                std::fs::remove_dir_all(&path).map_err(Error::io(&path))?;
            }
        } else if valid_name(&name) && path.is_dir() {
            folders.insert(name, path);
        }
    }
    // A reindexed version whose swap was cut short: it wins over the old.
    for (name, path) in swapped {
        if read_only {
            folders.insert(name, path);
            continue;
        }
        let place = cdir.join(&name);
        if place.exists() {
            let gone = cdir.join(format!(".drop-{name}-swapped"));
            fsutil::remove_if_exists(&gone)?;
            std::fs::rename(&place, &gone).map_err(Error::io(&place))?;
        }
        std::fs::rename(&path, &place).map_err(Error::io(&path))?;
        fsutil::sync_dir(cdir)?;
        let _ = std::fs::remove_dir_all(cdir.join(format!(".drop-{name}-swapped")));
        folders.insert(name, place);
    }
    let mut collections = BTreeMap::new();
    for (name, path) in folders {
        collections.insert(name, Collection::open(&path, read_only)?.shared());
    }
    Ok(collections)
}

/// Folder prefix of a collection's new version being built by a reindex.
pub(crate) const REINDEX: &str = ".reindex-";
/// Folder prefix of a reindexed version that is complete (the commit point of the swap).
pub(crate) const SWAP: &str = ".swap-";

/// Removes a name from the set of collections being created when dropped.
struct Creating<'a> {
    set: &'a Mutex<BTreeSet<String>>,
    name: &'a str,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(self.name);
    }
}
