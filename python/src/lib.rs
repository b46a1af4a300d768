//! `tessera._tessera`: the embedded engine for Python. It sits on the engine
//! as the server does: Python values in, engine calls out, with the GIL
//! released around every engine call so Python threads search in parallel.
//!
//! Input is checked here, under the GIL, into owned engine types (tokens are
//! read straight from numpy buffers of float16/float32); the engine call
//! then runs detached from the interpreter. Exceptions are the classes of
//! `tessera.errors`, chosen exhaustively from the engine's `Error`.

use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, OnceLock, RwLock};
mod encoder;

use tessera::{CollectionConfig, IndexKind, PlanDefaults, SearchOptions, SearchResults, TextKind, Tokens, f16};

// ---------------------------------------------------------------- errors

/// The `tessera.errors` class for an engine error.
fn error_class(e: &tessera::Error) -> &'static str {
    use tessera::ErrorKind as K;
    match e.kind() {
        K::InvalidInput | K::TooLarge => "InvalidInputError",
        K::NotFound => "NotFoundError",
        K::AlreadyExists => "AlreadyExistsError",
        K::Corruption => "CorruptionError",
        K::Io => "TesseraIOError",
        K::Unavailable => "UnavailableError",
        K::Timeout => "DeadlineExceededError",
    }
}

/// A `tessera.errors` exception of class `class` with `message`.
fn py_error(py: Python<'_>, class: &str, message: String) -> PyErr {
    let made = py.import("tessera.errors").and_then(|m| m.getattr(class)).and_then(|c| c.call1((message.clone(),)));
    match made {
        Ok(v) => PyErr::from_value(v),
        Err(e) => e,
    }
}

fn engine_error(py: Python<'_>, e: tessera::Error) -> PyErr {
    py_error(py, error_class(&e), e.to_string())
}

fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    py_error(py, "InvalidInputError", message.into())
}

trait OrPy<T> {
    fn or_py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrPy<T> for tessera::Result<T> {
    fn or_py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| engine_error(py, e))
    }
}

// ---------------------------------------------------------------- threads

/// The engine's thread pool: one thread per core (or `RAYON_NUM_THREADS`).
fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("tessera-{i}"))
            .build()
            .expect("the engine's thread pool")
    })
}

/// Runs an engine call with the GIL released, on the engine's pool: the
/// whole call is handed to a pool thread once, so the engine's own parallel
/// steps run inside the pool instead of each being handed over from the
/// calling Python thread.
fn engine<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(|| pool().install(f))
}

// ---------------------------------------------------------------- input

/// The values of a numpy `[tokens, dim]` array: borrowed from a C-contiguous
/// buffer, or read out element by element in row-major order from any other
/// layout (Fortran order, strided views).
enum Rows<'a> {
    F32(Cow<'a, [f32]>),
    F16(Cow<'a, [f16]>),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::F32(d) => d.len(),
            Rows::F16(d) => d.len(),
        }
    }

    /// Values `span` (a range of values, not rows) as engine tokens: one copy.
    fn tokens(&self, span: Range<usize>, dim: usize) -> Tokens {
        match self {
            Rows::F32(d) => Tokens::F32 { data: d[span].to_vec(), dim },
            Rows::F16(d) => Tokens::F16 { data: d[span].to_vec(), dim },
        }
    }
}

fn values<'a, T: numpy::Element + Copy>(a: &'a PyReadonlyArray2<'_, T>, c_contiguous: bool) -> Cow<'a, [T]> {
    match a.as_slice() {
        Ok(s) if c_contiguous => Cow::Borrowed(s),
        _ => Cow::Owned(a.as_array().iter().copied().collect()),
    }
}

/// Calls `f` with the values and dim of `obj`, which must be a 2-d numpy
/// array of float16 or float32 (no other dtype is converted).
fn with_rows<R>(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &dyn Fn() -> String,
    f: impl FnOnce(Rows<'_>, usize) -> PyResult<R>,
) -> PyResult<R> {
    let Ok(arr) = obj.cast::<PyUntypedArray>() else {
        let ty = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        return Err(invalid(py, format!("{} must be a numpy array of float16 or float32, got {ty}", what())));
    };
    if arr.ndim() != 2 {
        return Err(invalid(py, format!("{} must be 2-d [tokens, dim], got shape {:?}", what(), arr.shape())));
    }
    let (dim, c) = (arr.shape()[1], arr.is_c_contiguous());
    let dtype = arr.dtype();
    if dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
        let a = arr.cast::<PyArray2<f32>>()?.readonly();
        f(Rows::F32(values(&a, c)), dim)
    } else if dtype.is_equiv_to(&numpy::dtype::<f16>(py)) {
        let a = arr.cast::<PyArray2<f16>>()?.readonly();
        f(Rows::F16(values(&a, c)), dim)
    } else {
        Err(invalid(py, format!("{} has dtype {dtype}; use float16 or float32 (e.g. arr.astype(np.float32))", what())))
    }
}

/// A numpy `[tokens, dim]` float16/float32 array as engine tokens.
fn tokens_of(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<Tokens> {
    with_rows(py, obj, what, |rows, dim| Ok(rows.tokens(0..rows.len(), dim)))
}

/// A sequence argument (list, tuple, …; not a str, not a numpy array) as its items.
fn items<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if obj.is_instance_of::<PyString>() || obj.cast::<PyUntypedArray>().is_ok() {
        return Err(invalid(py, format!("{name} must be a list, got {}", obj.get_type().name()?)));
    }
    match obj.try_iter() {
        Ok(it) => it.collect(),
        Err(_) => Err(invalid(py, format!("{name} must be a list, got {}", obj.get_type().name()?))),
    }
}

fn ids_of(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    // A one-dimensional numpy array of ids, as a list.
    let obj = &py.import("tessera.helpers")?.getattr("_id_list")?.call1((obj,))?;
    items(py, obj, "ids")?
        .iter()
        .enumerate()
        .map(|(i, x)| match x.cast::<PyString>() {
            Ok(s) => s.extract::<String>(),
            Err(_) => Err(invalid(py, format!("ids[{i}] must be a str, got {}", x.get_type().name()?))),
        })
        .collect()
}

/// Compact JSON of a Python value, by `json.dumps` (NaN and Infinity refused).
fn json_text(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<String> {
    let kwargs = PyDict::new(py);
    kwargs.set_item("allow_nan", false)?;
    kwargs.set_item("separators", (",", ":"))?;
    // numpy scalars and arrays as their Python values.
    kwargs.set_item("default", py.import("tessera.helpers")?.getattr("_json_default")?)?;
    match py.import("json")?.getattr("dumps")?.call((obj,), Some(&kwargs)) {
        Ok(s) => s.extract(),
        Err(e) => Err(invalid(py, format!("{} is not JSON: {}", what(), e.value(py)))),
    }
}

fn json_value(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<serde_json::Value> {
    let text = json_text(py, obj, what)?;
    serde_json::from_str(&text).map_err(|e| invalid(py, format!("{}: {e}", what())))
}

/// A filter given as a dict (or list, …) or as JSON text, as JSON (text is
/// checked as a filter, in the engine's words: the string "null" is not one).
fn filter_json(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    match obj.cast::<PyString>() {
        Ok(s) => tessera::Filter::checked_json(&s.extract::<String>()?).or_py(py),
        Err(_) => json_value(py, obj, &|| "filter".into()),
    }
}

fn to_python<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, v).map_err(PyErr::from)
}

/// An optional filter argument (None: no filter) as the engine's filter.
fn filter_of(py: Python<'_>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<tessera::Filter>> {
    match obj.filter(|f| !f.is_none()) {
        Some(f) => Ok(Some(tessera::Filter::from_json(&filter_json(py, f)?).or_py(py)?)),
        None => Ok(None),
    }
}

/// A stored document as Python's `Document` (tokens as `[n, dim]` float16 when asked for).
fn document(py: Python<'_>, d: tessera::StoredDocument, tokens: bool) -> PyResult<Document> {
    let toks = match tokens {
        true => PyArray1::from_vec(py, d.tokens).reshape([d.n_tokens, d.dim])?.into_any().unbind(),
        false => py.None(),
    };
    let payload = match &d.payload {
        Some(p) => to_python(py, p)?.unbind(),
        None => py.None(),
    };
    Ok(Document { id: d.id, tokens: toks, n_tokens: d.n_tokens, text: d.text, payload })
}

// ---------------------------------------------------------------- results

/// One search result.
#[pyclass(frozen, module = "tessera")]
pub struct Hit {
    /// The document's id.
    #[pyo3(get)]
    id: String,
    /// MaxSim score when query tokens were given; otherwise the fused (or BM25) score.
    #[pyo3(get)]
    score: f32,
    /// The document's text, if it has one.
    #[pyo3(get)]
    text: Option<String>,
    /// The document's payload (a JSON value), if it has one.
    #[pyo3(get)]
    payload: Py<PyAny>,
    /// Hybrid queries: the fused score.
    #[pyo3(get)]
    fused: Option<f64>,
    /// Hybrid queries: how each source ranked the document, as dicts
    /// `{"source", "rank", "score"}`.
    #[pyo3(get)]
    sources: Py<PyAny>,
    /// Hybrid queries ranked "linear": each signal's part in `score`, as
    /// dicts `{"signal", "raw", "value", "normalized", "weight"}`.
    #[pyo3(get)]
    components: Py<PyAny>,
}

#[pymethods]
impl Hit {
    #[new]
    #[pyo3(signature = (id, score, text=None, payload=None, fused=None, sources=None, components=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        id: String,
        score: f32,
        text: Option<String>,
        payload: Option<Py<PyAny>>,
        fused: Option<f64>,
        sources: Option<Py<PyAny>>,
        components: Option<Py<PyAny>>,
    ) -> Self {
        let list = |v: Option<Py<PyAny>>| v.unwrap_or_else(|| PyList::empty(py).into_any().unbind());
        let (sources, components) = (list(sources), list(components));
        Hit { id, score, text, payload: payload.unwrap_or_else(|| py.None()), fused, sources, components }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let (id, text) = (self.id.as_str().into_pyobject(py)?.repr()?, self.text.as_deref().into_pyobject(py)?.repr()?);
        let payload = self.payload.bind(py).repr()?;
        Ok(format!("Hit(id={id}, score={}, text={text}, payload={payload})", self.score))
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(o) = other.cast::<Hit>() else { return Ok(false) };
        let o = o.get();
        Ok(self.id == o.id
            && self.score == o.score
            && self.text == o.text
            && self.fused == o.fused
            && self.payload.bind(py).eq(o.payload.bind(py))?
            && self.sources.bind(py).eq(o.sources.bind(py))?
            && self.components.bind(py).eq(o.components.bind(py))?)
    }
}

impl Hit {
    fn of(py: Python<'_>, h: tessera::SearchHit) -> PyResult<Self> {
        let payload = match &h.payload {
            Some(p) => to_python(py, p)?.unbind(),
            None => py.None(),
        };
        Ok(Hit {
            id: h.id,
            score: h.score,
            text: h.text,
            payload,
            fused: None,
            sources: PyList::empty(py).into_any().unbind(),
            components: PyList::empty(py).into_any().unbind(),
        })
    }

    fn list(py: Python<'_>, results: SearchResults) -> PyResult<Vec<Hit>> {
        match results {
            SearchResults::TwoStage(hits) | SearchResults::Exact(hits) => {
                hits.into_iter().map(|h| Hit::of(py, h)).collect()
            }
            SearchResults::Hybrid(hits) => hits
                .into_iter()
                .map(|h| {
                    let sources = pythonize::pythonize(py, &h.sources)?.unbind();
                    let components = pythonize::pythonize(py, &h.components)?.unbind();
                    Ok(Hit { fused: Some(h.fused), sources, components, ..Hit::of(py, h.hit)? })
                })
                .collect(),
        }
    }
}

/// A stored document, as `Collection.get` returns it.
#[pyclass(frozen, module = "tessera")]
pub struct Document {
    #[pyo3(get)]
    id: String,
    /// `[n_tokens, dim]` float16 array, or None when tokens were not asked for.
    #[pyo3(get)]
    tokens: Py<PyAny>,
    #[pyo3(get)]
    n_tokens: usize,
    #[pyo3(get)]
    text: Option<String>,
    #[pyo3(get)]
    payload: Py<PyAny>,
}

#[pymethods]
impl Document {
    #[new]
    #[pyo3(signature = (id, n_tokens, tokens=None, text=None, payload=None))]
    fn new(
        py: Python<'_>,
        id: String,
        n_tokens: usize,
        tokens: Option<Py<PyAny>>,
        text: Option<String>,
        payload: Option<Py<PyAny>>,
    ) -> Self {
        Document {
            id,
            tokens: tokens.unwrap_or_else(|| py.None()),
            n_tokens,
            text,
            payload: payload.unwrap_or_else(|| py.None()),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let (id, text) = (self.id.as_str().into_pyobject(py)?.repr()?, self.text.as_deref().into_pyobject(py)?.repr()?);
        Ok(format!("Document(id={id}, n_tokens={}, text={text})", self.n_tokens))
    }
}

/// The result of `Collection.rerank`: hits best first, and the requested ids
/// that are not live documents.
#[pyclass(frozen, module = "tessera")]
pub struct Reranked {
    #[pyo3(get)]
    hits: Py<PyAny>,
    #[pyo3(get)]
    missing: Vec<String>,
}

#[pymethods]
impl Reranked {
    #[new]
    fn new(hits: Py<PyAny>, missing: Vec<String>) -> Self {
        Reranked { hits, missing }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let missing = self.missing.clone().into_pyobject(py)?.repr()?;
        Ok(format!("Reranked(hits={}, missing={missing})", self.hits.bind(py).repr()?))
    }
}

// ---------------------------------------------------------------- database

/// The open engine database, shared by a `Database` and its collections;
/// `None` once closed. Taken for reading by every call, for writing by close.
type Shared = Arc<RwLock<Option<Arc<tessera::Database>>>>;

fn open_db(py: Python<'_>, shared: &Shared) -> PyResult<Arc<tessera::Database>> {
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
    shared: Shared,
    path: String,
}

/// The keyword settings of a collection, as Python passes them; `None`: not given.
/// A setting from its name (`pooled`, `int8`, …), or InvalidInputError naming the choices.
fn named<T: std::str::FromStr<Err = tessera::UnknownName>>(py: Python<'_>, name: &str) -> PyResult<T> {
    name.parse().map_err(|e: tessera::UnknownName| invalid(py, e.to_string()))
}

#[derive(Clone, Copy)]
struct Settings<'a> {
    index: Option<&'a str>,
    text: Option<&'a str>,
    durability: Option<&'a str>,
    storage: Option<&'a str>,
    screening: Option<&'a str>,
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
        Ok(c)
    }
}

/// A torn WAL tail cut on open is logged by the engine (which Python does
/// not see): say it as a `RuntimeWarning`, with where the bytes are kept.
fn warn_of_cut_tails(py: Python<'_>, db: &tessera::Database) -> PyResult<()> {
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
    /// (default) or "int8" (per-token scale, about half the bytes);
    /// screening: "none" (default) or "binary" (sign codes that screen
    /// candidates before the exact rerank); model: a model folder
    /// (docs/ENCODER.md) that encodes the collection's texts — documents
    /// upserted as texts without tokens, and text queries — whose output
    /// dimension is the collection's (`dim` may then be left out);
    /// settings: a dict of tunable settings (memtable_bytes, max_segments,
    /// max_batch_bytes, pool_factor; hnsw_m, hnsw_ef_construction for pooled/muvera;
    /// centroids_k, default_nprobe, min_train_tokens, train_iterations,
    /// drift for centroids), those left out at their defaults.
    #[pyo3(signature = (name, dim=None, *, index=None, text=None, durability=None, storage=None, screening=None, model=None, settings=None))]
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
        model: Option<std::path::PathBuf>,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Collection> {
        let tunables = settings_of(py, settings, "create_collection")?;
        let settings = Settings { index, text, durability, storage, screening };
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
    #[pyo3(signature = (name, dim=None, *, index=None, text=None, durability=None, storage=None, screening=None, model=None, settings=None))]
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
        model: Option<std::path::PathBuf>,
        settings: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Collection> {
        let tunables = settings_of(py, settings, "open_or_create_collection")?;
        let named = Settings { index, text, durability, storage, screening };
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
            Err(tessera::Error::UnknownCollection(_)) => {
                self.create_collection(py, name, dim, index, text, durability, storage, screening, model, settings)
            }
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

// ---------------------------------------------------------------- collection

/// A collection of documents: an id, a token tensor, optional text and a
/// JSON payload each, ranked against a query tensor by MaxSim.
#[pyclass(frozen, module = "tessera")]
pub struct Collection {
    shared: Shared,
    inner: Arc<tessera::Collection>,
}

/// A model binding as a dict (`path`, `identity`).
fn binding_to_python<'py>(py: Python<'py>, m: &tessera::ModelBinding) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(m).expect("a binding serialises");
    pythonize::pythonize(py, &value).map_err(PyErr::from)
}

/// A dict of named weights (`{"text": 0.5}`) as the engine's pairs.
fn weights_of<T: std::str::FromStr<Err = tessera::UnknownName>>(
    py: Python<'_>,
    w: Option<&Bound<'_, PyDict>>,
    what: &str,
) -> PyResult<Vec<(T, f64)>> {
    let Some(w) = w else { return Ok(Vec::new()) };
    w.iter()
        .map(|(key, weight)| {
            let key: String = key.extract().map_err(|_| invalid(py, format!("{what}: keys must be str")))?;
            let weight: f64 = weight.extract().map_err(|_| invalid(py, format!("{what}: values must be numbers")))?;
            Ok((named(py, &key)?, weight))
        })
        .collect()
}

/// A rank from Python's `rank`, `rank_norm` and rank weights (names as `search` takes them).
fn rank_of(
    py: Python<'_>,
    rank: Option<&str>,
    norm: Option<&str>,
    weights: Option<&Bound<'_, PyDict>>,
    what: &str,
) -> PyResult<Option<tessera::Rank>> {
    let kind = rank.map(|r| named::<tessera::RankKind>(py, r)).transpose()?;
    let norm = norm.map(|n| named::<tessera::Norm>(py, n)).transpose()?;
    tessera::Rank::from_parts(kind, norm, &weights_of(py, weights, what)?).or_py(py)
}

/// A numpy integer (anything Python indexes with, but bool) as an int; other values as they are.
fn integer(v: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    if v.is_instance_of::<pyo3::types::PyInt>() || !v.hasattr("__index__")? {
        return Ok(v);
    }
    Ok(v.call_method0("__index__").unwrap_or(v))
}

/// A dict read by serde into `T`; a bad value raises InvalidInputError
/// naming where it is (`candidates[2]: …`).
fn from_dict<T: serde::de::DeserializeOwned>(py: Python<'_>, d: &Bound<'_, PyDict>) -> PyResult<T> {
    let mut reader = pythonize::Depythonizer::from_object(d.as_any());
    serde_path_to_error::deserialize(&mut reader).map_err(|e| invalid(py, format!("{}: {}", e.path(), e.inner())))
}

/// Keyword arguments read into `T` as [`from_dict`] reads a dict: None is a
/// keyword left out, and numpy integers are integers.
fn from_kwargs<T: serde::de::DeserializeOwned>(py: Python<'_>, d: Option<&Bound<'_, PyDict>>) -> PyResult<T> {
    let given = PyDict::new(py);
    for (key, v) in d.map(|o| o.iter().collect::<Vec<_>>()).unwrap_or_default() {
        if !v.is_none() {
            given.set_item(key, integer(v)?)?;
        }
    }
    from_dict(py, &given)
}

/// A collection's tunable settings from a dict (or keywords) of them: an
/// unknown name raises TypeError, a bad value InvalidInputError naming it;
/// None leaves a setting as it is.
fn settings_of(py: Python<'_>, d: Option<&Bound<'_, PyDict>>, call: &str) -> PyResult<tessera::Settings> {
    for key in d.map(|o| o.keys().into_iter().collect::<Vec<_>>()).unwrap_or_default() {
        let name: String = key.extract()?;
        if !tessera::Settings::names().contains(&name.as_str()) {
            let known = tessera::Settings::names().join(", ");
            let e = format!("{call}() got an unknown setting '{name}' (settings: {known})");
            return Err(pyo3::exceptions::PyTypeError::new_err(e));
        }
    }
    from_kwargs(py, d)
}

/// The options of `search` and `search_batch` (`k` and the keyword
/// arguments) as the engine's [`SearchOptions`], read by serde from the
/// Python values: an unknown option raises TypeError as Python does, a bad
/// value InvalidInputError, None leaves an option at its default. `filter`
/// (a dict or JSON text) and `ids` (any sequence of str) have readers of
/// their own.
fn options_of(
    py: Python<'_>,
    k: Option<&Bound<'_, PyAny>>,
    options: Option<&Bound<'_, PyDict>>,
    call: &str,
) -> PyResult<SearchOptions> {
    let unexpected = |name: &str| {
        pyo3::exceptions::PyTypeError::new_err(format!("{call}() got an unexpected keyword argument '{name}'"))
    };
    let d = PyDict::new(py);
    let (mut filter, mut ids) = (None, None);
    for (key, v) in options.map(|o| o.iter().collect::<Vec<_>>()).unwrap_or_default() {
        let name: String = key.extract()?;
        if !SearchOptions::fields().contains(&name.as_str()) {
            return Err(unexpected(&name));
        }
        // None is the option left at its default, as in a Python signature.
        match name.as_str() {
            _ if v.is_none() => {}
            "filter" => filter = Some(v),
            "ids" => ids = Some(v),
            _ => d.set_item(key, integer(v)?)?,
        }
    }
    if let Some(k) = k {
        d.set_item("k", integer(k.clone())?)?;
    }
    let mut o: SearchOptions = from_dict(py, &d)?;
    o.filter = filter.map(|f| filter_json(py, &f)).transpose()?;
    if let Some(ids) = ids {
        o.ids = ids_of(py, &ids)?;
    }
    Ok(o)
}

impl Collection {
    /// The database and the collection, as it is now: a handle to a
    /// collection that a reindex replaced answers with the new version.
    fn live(&self, py: Python<'_>) -> PyResult<(Arc<tessera::Database>, Arc<tessera::Collection>)> {
        let db = open_db(py, &self.shared)?;
        let c = match self.inner.is_replaced() {
            true => db.collection(self.inner.name()).or_py(py)?,
            false => self.inner.clone(),
        };
        Ok((db, c))
    }

    fn query_of(&self, py: Python<'_>, query: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Tokens>> {
        match query.filter(|q| !q.is_none()) {
            None => Ok(None),
            Some(q) => tokens_of(py, q, &|| what.to_string()).map(Some),
        }
    }

    /// The batch as engine documents, each checked as the engine will check
    /// it, so that an error names the document's position.
    fn documents<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        tokens: Option<&Bound<'py, PyAny>>,
        texts: Option<&Bound<'py, PyAny>>,
        payloads: Option<&Bound<'py, PyAny>>,
        offsets: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Document_>> {
        let ids = ids_of(py, ids)?;
        let n = ids.len();
        let column = |obj: Option<&Bound<'py, PyAny>>, name: &str| -> PyResult<Option<Vec<Bound<'py, PyAny>>>> {
            let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(None) };
            let v = items(py, obj, name)?;
            if v.len() != n {
                return Err(invalid(py, format!("{name} has {} entries for {n} ids", v.len())));
            }
            Ok(Some(v))
        };
        let tokens: Vec<Tokens> = match (tokens.filter(|t| !t.is_none()), offsets.filter(|o| !o.is_none())) {
            // Texts alone: the collection's model encodes them.
            (None, Some(_)) => return Err(invalid(py, "offsets cut a flat tokens array: give tokens with them")),
            (None, None) => {
                if texts.is_none_or(|t| t.is_none()) {
                    return Err(invalid(py, "give tokens, or texts (for a collection bound to a model)"));
                }
                (0..n).map(|_| Tokens::F32 { data: Vec::new(), dim: 0 }).collect()
            }
            (Some(tokens), None) => {
                if tokens.cast::<PyUntypedArray>().is_ok() {
                    return Err(invalid(
                        py,
                        "tokens is one array: pass a list of [n_i, dim] arrays, or a flat [N, dim] array with offsets",
                    ));
                }
                let t = column(Some(tokens), "tokens")?.unwrap_or_default();
                t.iter()
                    .enumerate()
                    .map(|(i, x)| tokens_of(py, x, &|| format!("tokens[{i}]")))
                    .collect::<PyResult<_>>()?
            }
            (Some(tokens), Some(off)) => {
                let offs: Vec<i64> =
                    off.extract().map_err(|_| invalid(py, "offsets must be a sequence of n + 1 integers"))?;
                with_rows(py, tokens, &|| "tokens".to_string(), |rows, dim| split_flat(py, &rows, dim, &offs, n))?
            }
        };
        let texts = column(texts, "texts")?;
        let payloads = column(payloads, "payloads")?;
        let mut seen = HashSet::with_capacity(n);
        let mut docs = Vec::with_capacity(n);
        for (i, (id, tokens)) in ids.into_iter().zip(tokens).enumerate() {
            let at = |e: String| invalid(py, format!("documents[{i}] (id {id:?}): {e}"));
            if !seen.insert(id.clone()) {
                return Err(at(format!(
                    "the id appears twice in the batch (first at documents[{}])",
                    first(&docs, &id)
                )));
            }
            let mut d = Document_::new(id.clone(), tokens);
            if let Some(t) = texts.as_ref().map(|t| &t[i]).filter(|t| !t.is_none()) {
                d.text = Some(t.extract().map_err(|_| at("texts: must be a str or None".into()))?);
            }
            if let Some(p) = payloads.as_ref().map(|p| &p[i]).filter(|p| !p.is_none()) {
                d.payload = Some(json_value(py, p, &|| "payload".into()).map_err(|e| at(e.value(py).to_string()))?);
            }
            // The values are checked by the engine, once; ids here, for the position.
            if d.id.is_empty() {
                return Err(at("id is empty".into()));
            }
            if d.id.len() > tessera::MAX_ID_BYTES {
                return Err(at(format!("id is {} bytes; the limit is {}", d.id.len(), tessera::MAX_ID_BYTES)));
            }
            docs.push(d);
        }
        Ok(docs)
    }
}

type Document_ = tessera::Document;

fn first(docs: &[Document_], id: &str) -> usize {
    docs.iter().position(|d| d.id == id).unwrap_or_default()
}

/// A flat `[N, dim]` tensor cut at `offsets` (n + 1 of them, 0 first, N
/// last): each document's tokens copied once, straight from the array.
fn split_flat(py: Python<'_>, all: &Rows<'_>, dim: usize, offs: &[i64], n: usize) -> PyResult<Vec<Tokens>> {
    let rows = all.len() / dim.max(1);
    if offs.len() != n + 1 {
        return Err(invalid(py, format!("offsets has {} entries; {n} documents need {}", offs.len(), n + 1)));
    }
    if offs[0] != 0 || offs[n] != rows as i64 {
        return Err(invalid(py, format!("offsets must start at 0 and end at the {rows} rows of tokens")));
    }
    if let Some(i) = (0..n).find(|&i| offs[i + 1] < offs[i]) {
        return Err(invalid(py, format!("offsets decrease at documents[{i}]: {} > {}", offs[i], offs[i + 1])));
    }
    Ok((0..n).map(|i| all.tokens(offs[i] as usize * dim..offs[i + 1] as usize * dim, dim)).collect())
}

#[pymethods]
impl Collection {
    /// The collection's name.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// The model that encodes this collection's texts (a dict: path and
    /// identity), or None.
    #[getter]
    fn model<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let (_db, c) = self.live(py)?;
        c.model().map(|m| binding_to_python(py, &m)).transpose()
    }

    /// Binds the collection to the model in `path` (replacing any binding;
    /// its output dimension must be the collection's). Tokens already stored
    /// are not re-encoded. Returns the binding, as `model` does.
    fn bind_model<'py>(&self, py: Python<'py>, path: std::path::PathBuf) -> PyResult<Bound<'py, PyAny>> {
        let (_db, c) = self.live(py)?;
        let m = engine(py, || c.bind_model(&path)).or_py(py)?;
        binding_to_python(py, &m)
    }

    /// The vectors of `texts` by the collection's bound model, as queries
    /// (`is_query=True`) or documents: one float32 `(tokens, dim)` array each.
    #[pyo3(signature = (texts, is_query = false))]
    fn encode<'py>(&self, py: Python<'py>, texts: Vec<String>, is_query: bool) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let (_db, c) = self.live(py)?;
        let kind = if is_query { tessera::TextKindOf::Query } else { tessera::TextKindOf::Document };
        let out = engine(py, || c.encode_texts(&texts, kind)).or_py(py)?;
        out.into_iter()
            .map(|t| {
                let (data, dim) = match t {
                    Tokens::F32 { data, dim } => (data, dim),
                    Tokens::F16 { data, dim } => (data.into_iter().map(f16::to_f32).collect(), dim),
                };
                let rows = data.len() / dim.max(1);
                Ok(PyArray1::from_vec(py, data).reshape([rows, dim])?.into_any())
            })
            .collect()
    }

    /// The token dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Inserts or replaces documents, durably (WAL fsync) before returning.
    ///
    /// `tokens` is a list of `[n_i, dim]` float16/float32 arrays, or one flat
    /// `[N, dim]` array with `offsets` (n + 1 integers: document i is rows
    /// `offsets[i]:offsets[i+1]`). `texts` and `payloads` (JSON values) are
    /// optional lists of the same length, None entries allowed. The batch is
    /// checked whole: on any error nothing is written, and the message names
    /// the offending document's index. `pool_factor` pools each document's
    /// n tokens into 1 + ⌈(n − 1) / f⌉ instead of the collection's `pool_factor`.
    /// Returns the number of documents.
    #[pyo3(signature = (ids, tokens=None, texts=None, payloads=None, *, offsets=None, pool_factor=None))]
    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        tokens: Option<&Bound<'_, PyAny>>,
        texts: Option<&Bound<'_, PyAny>>,
        payloads: Option<&Bound<'_, PyAny>>,
        offsets: Option<&Bound<'_, PyAny>>,
        pool_factor: Option<i64>,
    ) -> PyResult<usize> {
        let (_db, c) = self.live(py)?;
        let pool_factor = match pool_factor.map(u32::try_from) {
            Some(Err(_)) => {
                let most = tessera::MAX_POOL_FACTOR;
                return Err(invalid(py, format!("pool_factor must be in 1..={most}, got {}", pool_factor.unwrap())));
            }
            f => f.map(Result::unwrap),
        };
        let docs = self.documents(py, ids, tokens, texts, payloads, offsets)?;
        let n = docs.len();
        if n == 0 {
            return Ok(0);
        }
        let options = tessera::UpsertOptions { pool_factor };
        match engine(py, || c.upsert_with(&docs, &options)) {
            Ok(()) => Ok(n),
            // An error about one document names its position in the batch.
            Err(e) => match e.document_id().and_then(|id| docs.iter().position(|d| d.id == id)) {
                Some(i) => Err(py_error(py, error_class(&e), format!("documents[{i}] (id {:?}): {e}", docs[i].id))),
                None => Err(engine_error(py, e)),
            },
        }
    }

    /// Deletes documents by id; returns how many existed.
    fn delete(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<usize> {
        let (_db, c) = self.live(py)?;
        let ids = ids_of(py, ids)?;
        engine(py, || c.delete(&ids)).or_py(py)
    }

    /// Documents by id, from one consistent snapshot: a list aligned with
    /// `ids`, None where an id is not a live document. With `tokens=True`
    /// each document's tokens come back as a `[n, dim]` float16 array.
    #[pyo3(signature = (ids, tokens=false))]
    fn get(&self, py: Python<'_>, ids: &Bound<'_, PyAny>, tokens: bool) -> PyResult<Vec<Option<Document>>> {
        let (_db, c) = self.live(py)?;
        let ids = ids_of(py, ids)?;
        let found = engine(py, || c.get_many(&ids, tokens)).or_py(py)?;
        found.into_iter().map(|d| d.map(|d| document(py, d, tokens)).transpose()).collect()
    }

    /// The live documents whose payload matches `filter` (a dict or its JSON
    /// text; every document without one) with ids after `after`, in id
    /// order, at most `limit` (≤ 100,000), from one snapshot: `(documents,
    /// next)`, where `next` is the `after` of the next page (None on the
    /// last). A page reads the ids and payloads of its documents and of those
    /// the filter skips on the way.
    #[pyo3(signature = (filter=None, *, after=None, limit=1000, tokens=false))]
    fn scan(
        &self,
        py: Python<'_>,
        filter: Option<&Bound<'_, PyAny>>,
        after: Option<String>,
        limit: i64,
        tokens: bool,
    ) -> PyResult<(Vec<Document>, Option<String>)> {
        let (_db, c) = self.live(py)?;
        let limit = usize::try_from(limit).map_err(|_| invalid(py, format!("limit must be >= 0, got {limit}")))?;
        let filter = filter_of(py, filter)?;
        let page = engine(py, || c.scan(filter.as_ref(), after.as_deref(), limit, tokens)).or_py(py)?;
        let docs = page.documents.into_iter().map(|d| document(py, d, tokens)).collect::<PyResult<_>>()?;
        Ok((docs, page.next))
    }

    /// How many live documents match `filter` (all of them without one):
    /// one pass over the payloads.
    #[pyo3(signature = (filter=None))]
    fn count(&self, py: Python<'_>, filter: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
        let (_db, c) = self.live(py)?;
        let filter = filter_of(py, filter)?;
        engine(py, || c.count(filter.as_ref())).or_py(py)
    }

    /// The `k` best documents for `query` (a `[n, dim]` float16/float32
    /// array), best first.
    ///
    /// Two-stage by default: the candidate index recalls `candidates`
    /// documents (default max(256, 8·k, 2.5·√documents), with 6·k instead of 8·k for
    /// token centroids) that exact MaxSim reranks (`ef`:
    /// the HNSW beam of a pooled or muvera index; `nprobe`: centroids probed
    /// per query token of a centroids index); on a collection with
    /// `screening="binary"` their sign codes first keep the best `rerank`
    /// (default max(64, 4·k)); `exact=True` scores every document. `filter` is a payload filter (a dict or its JSON text, see
    /// docs/FILTERS.md). Any of `text` (BM25 query), `ids` (candidate ids),
    /// `vector`, `rerank_only`, `fusion` ("rrf" or "weighted"), `rrf_k0`,
    /// `weights` ({"tensor"|"vector"|"text"|"ids": w}) or `rank` makes it a
    /// hybrid query: the sources' candidates fused, then, when a query is
    /// given, scored by MaxSim and ordered by `rank`: "maxsim", or "linear"
    /// (Σ w·normalised score over the candidates; `rank_norm` "zscore" or
    /// "minmax", `rank_weights` {"maxsim" (default 1)|"bm25"|"vector": w}).
    /// Without `rank`, the collection's `ranking()` (see `tessera tune`).
    /// `timeout_ms`: stop the search after that long and raise
    /// `DeadlineExceededError`. `include_text=False` / `include_payload=False`
    /// leave hits without them. The options are the engine's
    /// `tessera::SearchOptions`, named as in the HTTP API (typed in
    /// `_tessera.pyi`); an unknown one raises TypeError.
    #[pyo3(signature = (query=None, k=None, **options))]
    fn search(
        &self,
        py: Python<'_>,
        query: Option<&Bound<'_, PyAny>>,
        k: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<Hit>> {
        let (_db, c) = self.live(py)?;
        let mut opts = options_of(py, k, options, "search")?;
        // A str is the query's text, for the collection's model.
        let tokens = match query {
            Some(q) if q.is_instance_of::<PyString>() => {
                if opts.query_text.is_some() {
                    return Err(invalid(py, "the query is a text and query_text is given: give one"));
                }
                opts.query_text = Some(q.extract()?);
                None
            }
            _ => self.query_of(py, query, "query")?,
        };
        let plan = opts.plan(&c, tokens.is_some(), &PlanDefaults::default()).or_py(py)?;
        let out = engine(py, || c.execute(&plan, tokens.as_ref())).or_py(py)?;
        Hit::list(py, out)
    }

    /// `search` for each of `queries` (a list of arrays, or of texts for the
    /// collection's model, encoded in one batch); one list of hits
    /// per query, in order, each what `search` gives that query alone. The
    /// options are `search`'s and apply to every query. A tensor search
    /// scores the queries in groups of up to 32 with the multi-query kernel
    /// (one pass over each document they share); a hybrid one runs query by
    /// query in parallel. A bad query raises, naming its index. At most
    /// 1024 queries and 262144 query tokens in all.
    #[pyo3(signature = (queries, k=None, **options))]
    fn search_batch(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Vec<Vec<Hit>>> {
        let (_db, c) = self.live(py)?;
        // `text` as a list: one BM25 text per (token) query.
        let mut bm25: Option<Vec<String>> = None;
        let options = match options {
            Some(o) => match o.get_item("text")? {
                Some(t) if !t.is_none() && !t.is_instance_of::<PyString>() => {
                    let list = items(py, &t, "text")?;
                    let texts = list
                        .iter()
                        .enumerate()
                        .map(|(i, x)| {
                            x.extract::<String>().map_err(|_| invalid(py, format!("text[{i}] must be a str")))
                        })
                        .collect::<PyResult<Vec<_>>>()?;
                    bm25 = Some(texts);
                    let rest = o.copy()?;
                    rest.del_item("text")?;
                    Some(rest)
                }
                _ => Some(o.clone()),
            },
            None => None,
        };
        let opts = options_of(py, k, options.as_ref(), "search_batch")?;
        let items = items(py, queries, "queries")?;
        let texts = items.iter().filter(|q| q.is_instance_of::<PyString>()).count();
        let outs = if texts > 0 {
            // Texts, for the collection's model: all of them.
            if texts < items.len() {
                return Err(invalid(py, "queries: give all texts or all token arrays, not a mix"));
            }
            if bm25.is_some() {
                return Err(invalid(py, "text: queries given as texts are their own BM25 texts"));
            }
            let qs = items.iter().map(|q| q.extract::<String>()).collect::<PyResult<Vec<_>>>()?;
            let plan = opts.plan_texts(&c, &PlanDefaults::default()).or_py(py)?;
            engine(py, || c.execute_batch_texts(&plan, &qs)).or_py(py)?
        } else {
            let qs = items
                .iter()
                .enumerate()
                .map(|(i, q)| tokens_of(py, q, &|| format!("queries[{i}]")))
                .collect::<PyResult<Vec<_>>>()?;
            match &bm25 {
                Some(t) => {
                    let plan = opts.plan_bm25_texts(&c, &PlanDefaults::default()).or_py(py)?;
                    engine(py, || c.execute_batch_bm25(&plan, &qs, t)).or_py(py)?
                }
                None => {
                    let plan = opts.plan(&c, true, &PlanDefaults::default()).or_py(py)?;
                    engine(py, || c.execute_batch(&plan, &qs)).or_py(py)?
                }
            }
        };
        outs.into_iter()
            .enumerate()
            .map(|(i, o)| match o {
                Ok(o) => Hit::list(py, o),
                Err(e) => Err(py_error(py, error_class(&e), format!("queries[{i}]: {e}"))),
            })
            .collect()
    }

    /// Exact MaxSim of `query` (an array, or a text for the collection's
    /// model) against the documents `ids`, best first, and the ids that are
    /// not live documents.
    fn rerank(&self, py: Python<'_>, query: &Bound<'_, PyAny>, ids: &Bound<'_, PyAny>) -> PyResult<Reranked> {
        let (_db, c) = self.live(py)?;
        let ids = ids_of(py, ids)?;
        let r = if query.is_instance_of::<PyString>() {
            let text: String = query.extract()?;
            engine(py, || c.rerank_text(&text, &ids)).or_py(py)?
        } else {
            let tokens = tokens_of(py, query, &|| "query".to_string())?;
            engine(py, || c.rerank(&tokens, &ids)).or_py(py)?
        };
        let hits = r.hits.into_iter().map(|h| Hit::of(py, h)).collect::<PyResult<Vec<_>>>()?;
        Ok(Reranked { hits: hits.into_pyobject(py)?.into_any().unbind(), missing: r.missing })
    }

    /// Hard negatives of one query for training: the top `range[1]`
    /// documents, without the `positives` (ids), ranked within `range`
    /// (1-based, counted before positives are dropped), not above
    /// `exclude_above_score` × the best positive's score, nor above
    /// `max_score`, nor within `margin` below the best positive's exact
    /// score; `per_query` of them, the best ranked (`sampling="top"`) or
    /// sampled with a generator seeded by `seed` and `query_id`. Returns
    /// `(negatives, positives)`: hits in rank order, and the live positives
    /// with their exact MaxSim scores, best first. With `text` (the query's
    /// text) the retrieval is hybrid (MaxSim and BM25 candidates) ordered by
    /// `rank`/`rank_norm`/`rank_weights` as `search` takes them (default: the
    /// collection's ranking); scores stay MaxSim. As `tessera mine-negatives`.
    #[pyo3(signature = (query_id, query, positives, *, range=(10, 100), per_query=7, exclude_above_score=None, max_score=None, margin=None, sampling="random", seed=42, candidates=None, exact=false, require_text=true, text=None, rank=None, rank_norm=None, rank_weights=None))]
    #[allow(clippy::too_many_arguments)]
    fn mine_negatives(
        &self,
        py: Python<'_>,
        query_id: &str,
        query: &Bound<'_, PyAny>,
        positives: &Bound<'_, PyAny>,
        range: (usize, usize),
        per_query: usize,
        exclude_above_score: Option<f32>,
        max_score: Option<f32>,
        margin: Option<f32>,
        sampling: &str,
        seed: u64,
        candidates: Option<usize>,
        exact: bool,
        require_text: bool,
        text: Option<&str>,
        rank: Option<&str>,
        rank_norm: Option<&str>,
        rank_weights: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(Vec<Hit>, Vec<Hit>)> {
        let (_db, c) = self.live(py)?;
        let tokens = tokens_of(py, query, &|| "query".to_string())?;
        let positives = ids_of(py, positives)?;
        let rank = rank_of(py, rank, rank_norm, rank_weights, "rank_weights")?;
        let p = tessera::MineParams {
            range,
            per_query,
            exclude_above_score,
            max_score,
            margin,
            sampling: named(py, sampling)?,
            seed,
            candidates: candidates.unwrap_or(tessera::DEFAULT_CANDIDATES),
            exact,
            require_text,
            rank,
        };
        let m = engine(py, || c.mine_negatives_with(query_id, &tokens, text, &positives, &p)).or_py(py)?;
        let hits = |v: Vec<tessera::SearchHit>| v.into_iter().map(|h| Hit::of(py, h)).collect::<PyResult<Vec<_>>>();
        Ok((hits(m.negatives)?, hits(m.positives)?))
    }

    /// Seals the memtable into a segment (building its indexes) and persists deletions.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let (_db, c) = self.live(py)?;
        engine(py, || c.flush()).or_py(py)
    }

    /// The recall curve of two-stage search against exact, measured on
    /// `sample` of the collection's own documents used as queries (their
    /// first `query_tokens` tokens): for each candidate count (and nprobe,
    /// rerank) the mean share of the exact top-k kept, with latencies. Keywords:
    /// sample, k, candidates, nprobe, rerank, query_tokens, seed (docs/SERVER.md).
    #[pyo3(signature = (**options))]
    fn recall_curve<'py>(&self, py: Python<'py>, options: Option<&Bound<'py, PyDict>>) -> PyResult<Bound<'py, PyAny>> {
        let req: tessera::CurveRequest = from_kwargs(py, options)?;
        let (_db, c) = self.live(py)?;
        let curve = engine(py, || c.recall_curve(&req)).or_py(py)?;
        to_python(py, &serde_json::to_value(curve).map_err(|e| invalid(py, e.to_string()))?)
    }

    /// Changes the collection's tunable settings given as keywords
    /// (memtable_bytes, max_segments, max_batch_bytes, pool_factor,
    /// default_nprobe, min_train_tokens, drift; the others are fixed at creation), checked
    /// and stored with the collection; returns every setting as it now is.
    #[pyo3(signature = (**settings))]
    fn update_settings<'py>(
        &self,
        py: Python<'py>,
        settings: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = settings_of(py, settings, "update_settings")?;
        let (_db, c) = self.live(py)?;
        let now = engine(py, || c.update_settings(&s)).or_py(py)?;
        to_python(py, &serde_json::to_value(now).map_err(|e| invalid(py, e.to_string()))?)
    }

    /// Merges all segments into one, dropping deleted documents.
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        let (_db, c) = self.live(py)?;
        engine(py, || c.compact()).or_py(py)
    }

    /// Configuration and counts: name, dim, index, text, durability,
    /// storage, screening, documents, tokens, segments, memtable_documents,
    /// deleted_in_segments, bytes_on_disk, bytes_per_token (a token's row,
    /// scale and code), segment_bytes_per_token (segment bytes on disk per
    /// token), index_bytes_per_token (candidate-index bytes per token),
    /// centroids (a centroids index's codebook size, once trained), build
    /// (seconds spent sealing segments since opened), ranking (the default
    /// ranking of hybrid queries), last_flush_error when the last
    /// automatic flush failed, settings (every tunable setting as it now
    /// is: `update_settings` changes them), wal_tails_cut (torn WAL tails cut when the
    /// database was opened: 0 or 1) and quarantine (the files keeping such
    /// cut bytes, when there are any).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (_db, c) = self.live(py)?;
        let stats = engine(py, || c.stats());
        let cfg = c.config();
        let mut v = serde_json::to_value(&stats).map_err(|e| invalid(py, e.to_string()))?;
        v["text"] = TextKind::of(cfg.text.as_ref()).name().into();
        v["durability"] = cfg.durability.name().into();
        v["settings"] = serde_json::to_value(tessera::Settings::of(&cfg)).map_err(|e| invalid(py, e.to_string()))?;
        to_python(py, &v)
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let (_db, c) = self.live(py)?;
        Ok(c.len())
    }

    /// The sequence number of the last write batch applied (0 before the
    /// first): every acknowledged upsert or delete call takes the next one.
    /// Two replicas that applied the same writes in the same order have the
    /// same number (`tessera.distributed` compares them to find a replica
    /// that missed writes).
    fn last_seq(&self, py: Python<'_>) -> PyResult<u64> {
        let (_db, c) = self.live(py)?;
        Ok(c.last_seq())
    }

    /// The default ranking of hybrid queries that give query tokens and no
    /// `rank`, as a dict: {"rank": "maxsim"} or {"rank": "linear", "norm",
    /// "weights", "candidates"?}.
    fn ranking<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (_db, c) = self.live(py)?;
        let v = serde_json::to_value(c.ranking()).map_err(|e| invalid(py, e.to_string()))?;
        to_python(py, &v)
    }

    /// Sets the default ranking (stored with the collection): `rank`
    /// "maxsim" or "linear" with `norm` and `weights` as `search` takes
    /// them, and `candidates` per source of hybrid queries that do not say.
    #[pyo3(signature = (rank, *, norm=None, weights=None, candidates=None))]
    fn set_ranking(
        &self,
        py: Python<'_>,
        rank: &str,
        norm: Option<&str>,
        weights: Option<&Bound<'_, PyDict>>,
        candidates: Option<usize>,
    ) -> PyResult<()> {
        let (_db, c) = self.live(py)?;
        let rank = rank_of(py, Some(rank), norm, weights, "weights")?.expect("a rank kind was given");
        engine(py, || c.set_ranking(tessera::Ranking { rank, candidates })).or_py(py)
    }

    /// The candidates a two-stage search for `k` results hands to the exact
    /// MaxSim when `candidates` is not given: max(256, 8·k, 2.5·√documents),
    /// with 6·k instead of 8·k for token centroids.
    fn default_candidates(&self, py: Python<'_>, k: usize) -> PyResult<usize> {
        let (_db, c) = self.live(py)?;
        Ok(c.default_candidates(k))
    }

    fn __repr__(&self) -> String {
        format!("Collection({:?}, dim={})", self.inner.name(), self.inner.dim())
    }
}

fn report_to_python<'py>(py: Python<'py>, r: &tessera::BackupReport) -> PyResult<Bound<'py, PyAny>> {
    to_python(py, &serde_json::to_value(r).map_err(|e| invalid(py, e.to_string()))?)
}

/// Makes a new database in the folder `db` (which must not exist, or be
/// empty) from the backup in `source`, verified first; the backup is not
/// changed. Returns what was written, as `Database.backup` does.
#[pyfunction]
fn restore<'py>(py: Python<'py>, source: std::path::PathBuf, db: std::path::PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let report = engine(py, || tessera::restore(&source, &db)).or_py(py)?;
    report_to_python(py, &report)
}

/// The extension module `tessera._tessera` (re-exported by `tessera`).
#[pymodule]
fn _tessera(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Database>()?;
    m.add_class::<Collection>()?;
    m.add_class::<Hit>()?;
    m.add_class::<Document>()?;
    m.add_class::<Reranked>()?;
    m.add_class::<encoder::Encoder>()?;
    m.add_function(wrap_pyfunction!(restore, m)?)?;
    m.add("MAX_K", tessera::MAX_K)?;
    // The search options' names (`search(**options)`), as the engine reads them.
    m.add("SEARCH_OPTIONS", tessera::SearchOptions::fields().to_vec())?;
    m.add("SETTINGS", tessera::Settings::names().to_vec())?;
    m.add("DEFAULT_CANDIDATES", tessera::DEFAULT_CANDIDATES)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
