//! Online backup and restore of a whole database.
//!
//! A backup copies each collection as of one point — its manifest and a
//! prefix of its WAL that ends at a batch boundary — while writers go on, in
//! this process or in another one (`tessera serve`): no lock is taken. Every
//! other file a manifest names (segments, deletion vectors, indexes,
//! codebooks, full-text folders) is immutable and its name is never reused,
//! so it is hard-linked when the destination is on the same file system and
//! copied otherwise. If the writer replaces the manifest meanwhile (a flush,
//! a merge), the collection is taken again; files already taken are kept, so
//! each retry only adds what the writer made since.
//!
//! The backup is assembled in a sibling folder and renamed into place when
//! complete, then opened read-only, which verifies every checksum: a folder
//! at the destination is a whole, verified backup. A backup is itself a
//! database; [`restore`] copies one into a new folder (so that the restored
//! database shares no file with the backup) after verifying it.

use crate::database::{Database, valid_name};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::manifest::{self, Manifest};
use std::collections::BTreeSet;
use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How many times a collection is taken again when its writer keeps replacing
/// the manifest or appending to the WAL mid-copy.
const MAX_TRIES: usize = 100;

/// What a backup or restore wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BackupReport {
    /// The folder written.
    pub path: PathBuf,
    pub collections: Vec<CollectionBackup>,
    pub seconds: f64,
}

/// One collection of a backup: the point it was taken at, and its files.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CollectionBackup {
    pub name: String,
    /// Sequence number of the last write batch included (every batch up to it
    /// is, none after it); 0 when the collection has had none.
    pub seq: u64,
    pub documents: usize,
    /// Files written (a full-text folder counts its files), and how many of
    /// them are hard links to the source's files rather than copies.
    pub files: usize,
    pub linked: usize,
    /// Bytes of the files written, links included.
    pub bytes: u64,
    /// How many times the collection was taken (1 unless its writer replaced
    /// the manifest meanwhile).
    pub tries: usize,
}

/// Files written into a collection's backup folder.
#[derive(Default)]
struct Taken {
    files: usize,
    linked: usize,
    bytes: u64,
}

impl Database {
    /// Writes a consistent copy of this database to `out` while writes go on:
    /// see [`backup`](crate::backup()).
    pub fn backup(&self, out: &Path) -> Result<BackupReport> {
        backup(self.path(), out)
    }
}

/// Writes a consistent copy of the database in `db` to `out`, which must not
/// exist. Safe while the database is open and written, by this process or
/// another: each collection is copied as of one point between write batches.
/// Collections created or dropped during the backup may be included or not.
pub fn backup(db: &Path, out: &Path) -> Result<BackupReport> {
    let start = Instant::now();
    let cdir = db.join("collections");
    if !cdir.is_dir() {
        return Err(Error::NoDatabase(db.into()));
    }
    refuse_inside(out, db, "the backup")?;
    write_new_folder(out, |stage| {
        let sdir = stage.join("collections");
        std::fs::create_dir(&sdir).map_err(Error::io(&sdir))?;
        let mut taken = Vec::new();
        for name in collection_names(&cdir)? {
            let dst = sdir.join(&name);
            std::fs::create_dir(&dst).map_err(Error::io(&dst))?;
            match backup_collection(&cdir.join(&name), &dst)? {
                Some((t, tries)) => {
                    fsutil::sync_dir(&dst)?;
                    taken.push((name, t, tries));
                }
                // Dropped while the backup ran: left out, as it would be a moment later.
                None => std::fs::remove_dir_all(&dst).map_err(Error::io(&dst))?,
            }
        }
        fsutil::sync_dir(&sdir)?;
        report(stage, taken, start)
    })
}

/// Copies the backup in `from` to a new database folder `db`, which must not
/// exist (or be an empty folder). The backup is verified first (every
/// checksum, as an open does) and not changed; the new database shares no
/// file with it.
pub fn restore(from: &Path, db: &Path) -> Result<BackupReport> {
    let start = Instant::now();
    // Verifies the backup, and refuses a folder that is not a database.
    let opened = Database::open_read_only(from)?;
    for name in opened.list_collections() {
        opened.collection(&name)?.verify_kept()?;
    }
    drop(opened);
    refuse_inside(db, from, "the restored database")?;
    if held_by_a_writer(from)? {
        return Err(Error::InvalidArgument(format!(
            "{} is open for writing: a copy of it would not be consistent; take a backup of it (tessera backup) and restore that",
            from.display()
        )));
    }
    let cdir = from.join("collections");
    write_new_folder(db, |stage| {
        let sdir = stage.join("collections");
        std::fs::create_dir(&sdir).map_err(Error::io(&sdir))?;
        let mut taken = Vec::new();
        for name in collection_names(&cdir)? {
            let (src, dst) = (cdir.join(&name), sdir.join(&name));
            let mut t = Taken::default();
            copy_tree(&src, &dst, &mut t)?;
            taken.push((name, t, 1));
        }
        fsutil::sync_dir(&sdir)?;
        report(stage, taken, start)
    })
}

/// Where `path` is (or would be) on disk: each existing part canonical
/// (symbolic links followed), `.` and `..` of the parts that do not exist
/// yet applied as written.
fn resolved(path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(Error::io(Path::new(".")))?.join(path)
    };
    let mut at = PathBuf::new();
    for part in abs.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop();
            }
            other => {
                at.push(other);
                if let Ok(real) = std::fs::canonicalize(&at) {
                    at = real;
                }
            }
        }
    }
    Ok(at)
}

/// Refuses writing `what` at `dest` inside the database `db`: the database
/// would take it for its own files (and a backup would copy itself).
pub fn refuse_inside(dest: &Path, db: &Path, what: &str) -> Result<()> {
    let (dest_at, db_at) = (resolved(dest)?, resolved(db)?);
    if dest_at.starts_with(&db_at) {
        return Err(Error::InvalidArgument(format!(
            "{what} {} would be inside the database {}: give a folder outside it",
            dest.display(),
            db.display()
        )));
    }
    Ok(())
}

/// Whether a writer holds the database in `db` open (its `LOCK`), found by
/// asking for the lock shared for a moment.
fn held_by_a_writer(db: &Path) -> Result<bool> {
    let path = db.join("LOCK");
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path)(e)),
    }
}

/// Opens the written folder read-only (verifying it) and reports on it, as
/// found at `path` (the staging folder, before it is renamed into place).
fn report(path: &Path, taken: Vec<(String, Taken, usize)>, start: Instant) -> Result<BackupReport> {
    let opened = Database::open_read_only(path)?;
    let mut collections = Vec::with_capacity(taken.len());
    for (name, t, tries) in taken {
        let c = opened.collection(&name)?;
        c.verify_kept()?;
        collections.push(CollectionBackup {
            seq: c.last_seq(),
            documents: c.len(),
            name,
            files: t.files,
            linked: t.linked,
            bytes: t.bytes,
            tries,
        });
    }
    Ok(BackupReport { path: path.into(), collections, seconds: start.elapsed().as_secs_f64() })
}

/// The collections of a `collections` folder, by name (folders being created
/// or dropped are not collections).
fn collection_names(cdir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(cdir).map_err(Error::io(cdir))? {
        let entry = entry.map_err(Error::io(cdir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if valid_name(&name) && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Runs `fill` on a fresh sibling folder of `dest` and renames it to `dest`
/// when it succeeds (removing it when it fails): `dest` either does not
/// exist or holds everything. An empty folder at `dest` is replaced.
fn write_new_folder(dest: &Path, fill: impl FnOnce(&Path) -> Result<BackupReport>) -> Result<BackupReport> {
    if dest.is_dir() && std::fs::read_dir(dest).map_err(Error::io(dest))?.next().is_none() {
        std::fs::remove_dir(dest).map_err(Error::io(dest))?;
    }
    if dest.exists() {
        return Err(Error::DestinationExists(dest.into()));
    }
    let name = dest.file_name().ok_or_else(|| Error::InvalidArgument(format!("{} names no folder", dest.display())))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(Error::io(&parent))?;
    remove_stale_stages(&parent)?;
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let stage = parent.join(format!(".{}.partial-{}-{nonce}", name.to_string_lossy(), std::process::id()));
    std::fs::create_dir(&stage).map_err(Error::io(&stage))?;
    // Filled and verified before it takes the destination's name.
    let res = fill(&stage).and_then(|r| fsutil::sync_dir(&stage).map(|_| r)).and_then(|r| {
        // `rename` would replace an empty folder made meanwhile; refuse that too.
        if dest.exists() {
            return Err(Error::DestinationExists(dest.into()));
        }
        std::fs::rename(&stage, dest).map_err(Error::io(dest))?;
        Ok(r)
    });
    match res {
        Ok(r) => {
            fsutil::sync_dir(&parent)?;
            Ok(BackupReport { path: dest.into(), ..r })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            Err(e)
        }
    }
}

/// Removes the staging folders (`.NAME.partial-PID-N`) that backups and
/// restores of processes no longer running left in `parent` — killed before
/// they could remove them, they would pin disk through their hard links.
/// Those of running processes (a backup in flight) are left alone; where the
/// system cannot tell (no `/proc`), nothing is removed. Returns how many went.
pub fn remove_stale_stages(parent: &Path) -> Result<usize> {
    if !Path::new("/proc/self").exists() {
        return Ok(0);
    }
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(parent) else { return Ok(0) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".partial-")).and_then(|(_, rest)| {
            rest.split_once('-').and_then(|(pid, nonce)| nonce.parse::<u128>().ok().and(pid.parse::<u32>().ok()))
        }) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == IoKind::NotFound => {}
            Err(e) => return Err(Error::io(&path)(e)),
        }
    }
    Ok(removed)
}

/// Takes one collection: its manifest, every file the manifest names, and
/// the WAL up to its last whole batch, all as of one manifest. `None` when
/// the collection is gone (dropped).
fn backup_collection(src: &Path, dst: &Path) -> Result<Option<(Taken, usize)>> {
    let mut taken = Taken::default();
    for tries in 1..=MAX_TRIES {
        let mpath = src.join(manifest::FILE);
        let before = match std::fs::read(&mpath) {
            Ok(b) => b,
            Err(e) if e.kind() == IoKind::NotFound && !src.exists() => return Ok(None),
            Err(e) => return Err(Error::io(&mpath)(e)),
        };
        let m = Manifest::decode(&mpath, &before)?;
        let files = m.referenced_files();
        let wal_name = manifest::wal_file(m.wal);
        let mut gone = false;
        for f in files.iter().filter(|f| **f != wal_name) {
            if !take_immutable(&src.join(f), &dst.join(f), &mut taken)? {
                gone = true;
                break;
            }
        }
        // The WAL as it is now, cut after its last whole frame: a frame
        // being appended is left out (that batch is not acknowledged yet).
        let wal_src = src.join(&wal_name);
        let wal = if gone { None } else { read_if_exists(&wal_src)? };
        let after = read_if_exists(&mpath)?;
        if gone || wal.is_none() || after.as_deref() != Some(&before[..]) {
            // The writer replaced the manifest meanwhile: take it again.
            continue;
        }
        let wal = wal.expect("checked");
        let end = match whole_frames(&wal) {
            Some(end) => end,
            // Looks damaged mid-append, or is: read it again (real damage
            // is reported by the verifying open at the end).
            None if tries < MAX_TRIES => continue,
            None => wal.len() as u64,
        };
        let wal_dst = dst.join(&wal_name);
        fsutil::remove_if_exists(&wal_dst)?;
        fsutil::write_new(&wal_dst, &wal[..end as usize])?;
        fsutil::atomic_write(&dst.join(manifest::FILE), &before)?;
        taken.files += 2;
        taken.bytes += end + before.len() as u64;
        // Files taken on an earlier try that this manifest no longer names.
        let keep: BTreeSet<&str> = files.iter().map(String::as_str).chain([manifest::FILE]).collect();
        for entry in std::fs::read_dir(dst).map_err(Error::io(dst))? {
            let entry = entry.map_err(Error::io(dst))?;
            if !keep.contains(entry.file_name().to_string_lossy().as_ref()) {
                fsutil::remove_if_exists(&entry.path())?;
            }
        }
        return Ok(Some((taken, tries)));
    }
    Err(Error::Changing(src.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), MAX_TRIES))
}

/// Where the last whole frame of a WAL ends; `None` if it looks damaged.
fn whole_frames(bytes: &[u8]) -> Option<u64> {
    use tessera_format::wal;
    wal::decode_header(bytes).ok()?;
    let scan = wal::scan(bytes);
    (!matches!(scan.tail, wal::Tail::Corrupt { .. })).then_some(scan.valid_end)
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == IoKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

/// Takes an immutable file or full-text folder unless taken already (a
/// name is never reused for other content). `false` when the source is gone
/// (the writer removed it after replacing the manifest).
fn take_immutable(src: &Path, dst: &Path, taken: &mut Taken) -> Result<bool> {
    if dst.exists() {
        return Ok(true);
    }
    let tmp = dst.with_extension("partial");
    fsutil::remove_if_exists(&tmp)?;
    let meta = match std::fs::metadata(src) {
        Ok(m) => m,
        Err(e) if e.kind() == IoKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(src)(e)),
    };
    let mut t = Taken::default();
    let res = if meta.is_dir() {
        std::fs::create_dir(&tmp).map_err(Error::io(&tmp))?;
        let mut ok = true;
        let entries = std::fs::read_dir(src).and_then(|d| d.collect::<std::io::Result<Vec<_>>>());
        match entries {
            Ok(entries) => {
                for entry in entries {
                    if !link_or_copy(&entry.path(), &tmp.join(entry.file_name()), &mut t)? {
                        ok = false;
                        break;
                    }
                }
            }
            Err(e) if e.kind() == IoKind::NotFound => ok = false,
            Err(e) => return Err(Error::io(src)(e)),
        }
        if ok {
            fsutil::sync_dir(&tmp)?;
        }
        ok
    } else {
        link_or_copy(src, &tmp, &mut t)?
    };
    if !res {
        fsutil::remove_if_exists(&tmp)?;
        return Ok(false);
    }
    std::fs::rename(&tmp, dst).map_err(Error::io(dst))?;
    taken.files += t.files;
    taken.linked += t.linked;
    taken.bytes += t.bytes;
    Ok(true)
}

/// Hard-links `src` at `dst`, or copies it (fsynced) where links cannot be
/// made (another file system). `false` when `src` is gone.
fn link_or_copy(src: &Path, dst: &Path, t: &mut Taken) -> Result<bool> {
    match std::fs::hard_link(src, dst) {
        Ok(()) => {
            t.linked += 1;
        }
        Err(e) if e.kind() == IoKind::NotFound && !src.exists() => return Ok(false),
        Err(_) => match copy_file(src, dst) {
            Ok(()) => {}
            Err(Error::Io { source, .. }) if source.kind() == IoKind::NotFound && !src.exists() => return Ok(false),
            Err(e) => return Err(e),
        },
    }
    t.files += 1;
    t.bytes += std::fs::metadata(dst).map_err(Error::io(dst))?.len();
    Ok(true)
}

fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    std::fs::copy(src, dst).map_err(Error::io(src))?;
    std::fs::File::open(dst).and_then(|f| f.sync_all()).map_err(Error::io(dst))
}

/// Copies a folder and everything in it (fsynced).
fn copy_tree(src: &Path, dst: &Path, t: &mut Taken) -> Result<()> {
    std::fs::create_dir(dst).map_err(Error::io(dst))?;
    for entry in std::fs::read_dir(src).map_err(Error::io(src))? {
        let entry = entry.map_err(Error::io(src))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if entry.file_type().map_err(Error::io(&from))?.is_dir() {
            copy_tree(&from, &to, t)?;
        } else {
            copy_file(&from, &to)?;
            t.files += 1;
            t.bytes += std::fs::metadata(&to).map_err(Error::io(&to))?.len();
        }
    }
    fsutil::sync_dir(dst)
}
