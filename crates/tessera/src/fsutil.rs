//! File-system steps that crash safety rests on: fsync of files and
//! directories, and atomic replacement (write temp, fsync, rename, fsync dir).

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))
}

/// Writes `bytes` to `path` so that after a crash the file holds either its
/// old content or all of `bytes`, never a mix.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(Error::io(&tmp))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))?;
    sync_dir(path.parent().expect("file in a directory"))
}

/// Writes a new file that must not exist yet, fsynced (the caller syncs the directory).
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path).map_err(Error::io(path))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(Error::io(path))
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(path))
}

/// Removes a file, or a directory with its contents; absent is fine.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    let res = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path)(e)),
        _ => Ok(()),
    }
}

/// Maps an immutable file (a segment, index, codebook or kept copy) read-only.
pub(crate) fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(Error::io(path))?;
    // SAFETY: segment, index and codebook files are immutable once written and renamed
    // into place; Tessera never modifies or truncates one while it is mapped.
    unsafe { Mmap::map(&file) }.map_err(Error::io(path))
}
