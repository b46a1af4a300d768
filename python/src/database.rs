//! `tessera.Database`: opening, creating, listing and dropping collections, backups.

use crate::*;
use pyo3::types::PyDict;
use std::sync::{Arc, RwLock};

use tessera::{CollectionConfig, IndexKind, TextKind};

/// The open engine database, shared by a `Database` and its collections;
/// `None` once closed. Taken for reading by every call, for writing by close.
pub(crate) type Shared = Arc<RwLock<Option<Arc<tessera::Database>>>>;

pub(crate) fn open_db(py: Python<'_>, shared: &Shared) -> PyResult<Arc<tessera::Database>> {
    let db = shared.read().unwrap_or_else(|p| p.into_inner()).clone();
    db.ok_or_else(|| py_error(py, "UnavailableError", "the database is closed".into()))
}

/// A Tessera database: a folder of collections, opened in this process.
///
/// `Database(path)` opens the folder (creating it if needed), verifies every
/// segment and replays the write-ahead logs. Only one process may have a
/// database open; `close()` (or leaving a `with` block) releases it.
#[pyclass(frozen, weakref, module = "tessera")]
pub struct Database {
    pub(crate) shared: Shared,
    pub(crate) path: String,
}

/// The keyword settings of a collection, as Python passes them; `None`: not given.
/// A setting from its name (`pooled`, `int8`, …), or InvalidInputError naming the choices.
pub(crate) fn named<T: std::str::FromStr<Err = tessera::UnknownName>>(py: Python<'_>, name: &str) -> PyResult<T> {
    name.parse().map_err(|e: tessera::UnknownName| invalid(py, e.to_string()))
}

#[derive(Clone, Copy)]
pub(crate) struct Settings<'a> {
    pub(crate) index: Option<&'a str>,
    pub(crate) text: Option<&'a str>,
    pub(crate) durability: Option<&'a str>,
    pub(crate) storage: Option<&'a str>,
    pub(crate) screening: Option<&'a str>,
    pub(crate) keep: Option<&'a str>,
}

impl Settings<'_> {
    /// `base` with the given settings applied.
    fn apply(&self, py: Python<'_>, mut c: CollectionConfig) -> PyResult<CollectionConfig> {
        if let Some(i) = self.index {
            c.index = named::<IndexKind>(py, i)?.config();
        }
        if let Some(t) = self.text {
            c.text = named::<TextKind>(py, t)?.config();
        }
        if let Some(d) = self.durability {
            c.durability = named(py, d)?;
        }
        if let Some(s) = self.storage {
            c.storage = named(py, s)?;
        }
        if let Some(s) = self.screening {
            c.screening = named(py, s)?;
        }
        if let Some(k) = self.keep {
            c.keep = named(py, k)?;
        }
        Ok(c)
    }
}

/// A torn WAL tail cut on open is logged by the engine (which Python does
/// not see): say it as a `RuntimeWarning`, with where the bytes are kept.
pub(crate) fn warn_of_cut_tails(py: Python<'_>, db: &tessera::Database) -> PyResult<()> {
    let mut names = db.list_collections();
    names.sort();
    for name in names {
        let Ok(c) = db.collection(&name) else { continue };
        let st = c.stats();
        if st.wal_tails_cut > 0 {
            let kept = match st.quarantine.is_empty() {
                true => "its bytes were all zero, so nothing was kept".to_string(),
                false => format!("quarantine files in the collection's folder: {}", st.quarantine.join(", ")),
            };
            let msg = format!(
                "collection '{name}': a torn WAL tail was cut when the database was opened (a crash mid-write, or \
                 damage to the last batch written; see `tessera inspect`); {kept}"
            );
            let msg = std::ffi::CString::new(msg).expect("no NUL in a message");
            PyErr::warn(py, &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(), &msg, 1)?;
        }
    }
    Ok(())
}

#[pymethods]
impl Database {
    /// Opens (creating if needed) the database in `path`; with
    /// `read_only=True`, opens an existing one beside the process that may
    /// hold it to write (a server), changing no file and refusing writes.
    #[new]
    #[pyo3(signature = (path, *, read_only=false, seal_idle_ms=None))]
    fn new(py: Python<'_>, path: std::path::PathBuf, read_only: bool, seal_idle_ms: Option<i64>) -> PyResult<Self> {
        let shown = path.display().to_string();
        let idle = match seal_idle_ms {
            Some(ms) if read_only && ms != 0 => {
                return Err(invalid(py, "seal_idle_ms: a read-only database never seals"));
            }
            Some(_) if read_only => None,
            Some(ms) if ms < 0 => return Err(invalid(py, format!("seal_idle_ms must be >= 0, got {ms}"))),
            Some(0) => Some(None),
            Some(ms) => Some(Some(std::time::Duration::from_millis(ms as u64))),
            None => None,
        };
        let open = || if read_only { tessera::Database::open_read_only(&path) } else { tessera::Database::open(&path) };
        let db = engine(py, open).or_py(py)?;
        if let Some(idle) = idle {
            db.set_seal_idle(idle);
        }
        warn_of_cut_tails(py, &db)?;
        Ok(Database { shared: Arc::new(RwLock::new(Some(Arc::new(db)))), path: shown })
    }

    /// The database folder.
    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// Creates a collection of `dim`-dimensional tokens.
    ///
    /// index: "pooled" (default), "muvera", "centroids" (token-level
    /// centroids with inverted lists) or "none"; text: "english"
    /// (default), "plain", "cjk" or "none"; durability: "sync" (default:
    /// fsync before every acknowledgement) or "buffered"; storage: "f16"
    /// (default), "int8" (per-token scale, about half the bytes), or
    /// "residual2" / "residual4" (index "centroids" only: a centroid code
    /// and 2- or 4-bit residuals per dimension, 34 / 66 bytes a token at dim 128);
    /// keep (residual storage): "none" (default), "int8" or "f16" — a
    /// full-precision copy kept cold beside the residual rows, which exact
    /// scores (the final candidates, exact search, rerank, get) read;
    /// screening: "none" (default) or "binary" (sign codes that screen
    /// candidates before the exact rerank); model: a model folder
    /// (docs/ENCODER.md) that encodes the collection's texts — documents
    /// upserted as texts without tokens, and text queries — whose output
    /// dimension is the collection's (`dim` may then be left out);
    /// settings: a dict of tunable settings (memtable_bytes, max_segments,
    /// max_batch_bytes, pool_factor; hnsw_m, hnsw_ef_construction for pooled/muvera;
    /// centroids_k, default_nprobe, min_train_tokens, train_iterations,
    /// drift, expected_tokens for centroids), those left out at their defaults.
    #[pyo3(signature = (name, dim=None, *, index=None, text=None, durability=None, storage=None, screening=None, keep=None, model=None, settings=None))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn create_collection(
        &self,
        py: Python<'_>,
        name: &str,
        dim: Option<usize>,
        index: Option<&str>,
        text: Option<&str>,
        durability: Option<&str>,
        storage: Option<&str>,
        screening: Option<&str>,
        keep: Option<&str>,
        model: Option<std::path::PathBuf>,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Collection> {
        let tunables = settings_of(py, settings, "create_collection")?;
        let settings = Settings { index, text, durability, storage, screening, keep };
        // The model is loaded and checked before anything is created.
        let encoder = model.as_deref().map(|m| engine(py, || tessera::load_model(m))).transpose().or_py(py)?;
        let dim = tessera::collection_dim(dim, encoder.as_deref()).or_py(py)?;
        let config = tunables.apply(&settings.apply(py, CollectionConfig::new(dim))?, true).or_py(py)?;
        let db = open_db(py, &self.shared)?;
        let c = engine(py, || db.create_collection(name, config)).or_py(py)?;
        if let Some(m) = &model
            && let Err(e) = engine(py, || c.bind_model(m))
        {
            // Nothing half-made stays behind.
            let _ = engine(py, || db.drop_collection(name));
            return Err(engine_error(py, e));
        }
        Ok(Collection { shared: self.shared.clone(), inner: c })
    }

    /// Opens the collection `name`; raises NotFoundError if there is none.
    fn collection(&self, py: Python<'_>, name: &str) -> PyResult<Collection> {
        let c = open_db(py, &self.shared)?.collection(name).or_py(py)?;
        Ok(Collection { shared: self.shared.clone(), inner: c })
    }

    /// Opens `name`, or creates it as `create_collection` would. The settings
    /// given must match an existing collection's (AlreadyExistsError if not);
    /// settings left out are not compared.
    #[pyo3(signature = (name, dim=None, *, index=None, text=None, durability=None, storage=None, screening=None, keep=None, model=None, settings=None))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn open_or_create_collection(
        &self,
        py: Python<'_>,
        name: &str,
        dim: Option<usize>,
        index: Option<&str>,
        text: Option<&str>,
        durability: Option<&str>,
        storage: Option<&str>,
        screening: Option<&str>,
        keep: Option<&str>,
        model: Option<std::path::PathBuf>,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Collection> {
        let tunables = settings_of(py, settings, "open_or_create_collection")?;
        let named = Settings { index, text, durability, storage, screening, keep };
        let db = open_db(py, &self.shared)?;
        match db.collection(name) {
            Ok(c) => {
                let have = c.config();
                // A setting of another index kind is refused as such, not as a difference.
                tunables.apply(&have, true).or_py(py)?;
                let mut asked = named.apply(py, (*have).clone())?;
                asked.dim = dim.unwrap_or(have.dim);
                let mut differs = have.differs_from(&asked).or_else(|| tunables.differs(&have)).map(str::to_string);
                if let Some(m) = &model {
                    let asked = m.canonicalize().map_err(|e| invalid(py, format!("model {}: {e}", m.display())))?;
                    if c.model().map(|b| b.path) != Some(asked) {
                        differs = Some("model".into());
                    }
                }
                if let Some(what) = differs {
                    let reason = format!("its {what} differs from the request");
                    return Err(engine_error(py, tessera::Error::ConfigMismatch { name: name.into(), reason }));
                }
                Ok(Collection { shared: self.shared.clone(), inner: c })
            }
            Err(tessera::Error::UnknownCollection(_)) => self
                .create_collection(py, name, dim, index, text, durability, storage, screening, keep, model, settings),
            Err(e) => Err(engine_error(py, e)),
        }
    }

    /// The names of the collections, sorted.
    fn list_collections(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let mut names = open_db(py, &self.shared)?.list_collections();
        names.sort();
        Ok(names)
    }

    /// Drops a collection and deletes its files.
    fn drop_collection(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        let db = open_db(py, &self.shared)?;
        engine(py, || db.drop_collection(name)).or_py(py)
    }

    /// Writes a consistent copy of the database to the new folder `out` while
    /// it stays open and written (each collection as of one write batch;
    /// immutable files hard-linked on the same file system), verified before
    /// this returns. Returns what was written: `path`, `seconds` and per
    /// collection `name`, `seq`, `documents`, `files`, `linked`, `bytes`, `tries`.
    fn backup<'py>(&self, py: Python<'py>, out: std::path::PathBuf) -> PyResult<Bound<'py, PyAny>> {
        let db = open_db(py, &self.shared)?;
        let report = engine(py, || db.backup(&out)).or_py(py)?;
        report_to_python(py, &report)
    }

    /// Re-encodes every document of collection `name` with the model in the
    /// folder `model` (a fine-tuned one, say) into a new version of the
    /// collection, built while the old one keeps serving searches and
    /// writes, then swapped in atomically (a crash at any point leaves one
    /// consistent version). The model's dimension must be the collection's
    /// and every document needs its text. `progress(done, total)` is called
    /// as documents are copied; an exception it raises stops the reindex
    /// (nothing changed) and is raised. Returns `model` (the new binding),
    /// `documents`, `caught_up` (documents written during the reindex and
    /// copied again), `truncated` and `seconds`.
    #[pyo3(signature = (name, model, *, progress=None))]
    fn reindex<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        model: std::path::PathBuf,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let db = open_db(py, &self.shared)?;
        let failed: std::sync::Mutex<Option<PyErr>> = std::sync::Mutex::new(None);
        // An exception in `progress` (a KeyboardInterrupt, say) stops the
        // reindex before its swap, changing nothing, and is raised.
        let tell = |p: tessera::ReindexProgress| {
            let Some(cb) = &progress else { return Ok(()) };
            Python::attach(|py| match cb.call1(py, (p.done, p.total)) {
                Ok(_) => Ok(()),
                Err(e) => {
                    failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                    Err(tessera::Error::InvalidArgument("the reindex was stopped by its progress callback".into()))
                }
            })
        };
        let report = engine(py, || db.reindex(name, &model, &tell));
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let report = report.or_py(py)?;
        let d = PyDict::new(py);
        d.set_item("model", binding_to_python(py, &report.model)?)?;
        d.set_item("documents", report.documents)?;
        d.set_item("caught_up", report.caught_up)?;
        d.set_item("truncated", report.truncated)?;
        d.set_item("seconds", report.seconds)?;
        Ok(d.into_any())
    }

    /// Closes the database: it and its collections refuse every later call,
    /// and the lock is released once calls already running have finished.
    /// Closing twice is fine.
    fn close(&self, py: Python<'_>) {
        let db = py.detach(|| self.shared.write().unwrap_or_else(|p| p.into_inner()).take());
        // The engine database is freed (and its lock released) once calls
        // holding it finish.
        drop(db);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.close(py);
    }

    fn __repr__(&self) -> String {
        format!("Database({:?})", self.path)
    }
}
