//! `tessera._tessera`: the embedded engine for Python. It sits on the engine
//! as the server does: Python values in, engine calls out, with the GIL
//! released around every engine call so Python threads search in parallel.
//!
//! Input is checked here, under the GIL, into owned engine types (tokens are
//! read straight from numpy buffers of float16/float32); the engine call
//! then runs detached from the interpreter. Exceptions are the classes of
//! `tessera.errors`, chosen exhaustively from the engine's `Error`.

//!
//! | module | owns |
//! |---|---|
//! | `errors` | the `tessera.errors` class of each engine error |
//! | `threads` | the pool engine calls run on, the GIL released |
//! | `input` | Python values read into engine types (token arrays, ids, JSON, filters) |
//! | `results` | `Hit`, `Document`, `Reranked` |
//! | `database` | `tessera.Database` |
//! | `collection` | `tessera.Collection` |
//! | `encoder` | `tessera.Encoder` |

use pyo3::prelude::*;

mod collection;
mod database;
mod encoder;
mod errors;
mod input;
mod results;
mod threads;

pub(crate) use collection::*;
pub(crate) use database::*;
pub(crate) use errors::*;
pub(crate) use input::*;
pub(crate) use results::*;
pub(crate) use threads::*;

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

/// Sets how many threads this process's background seals and merges run on
/// (default: half the cores, leaving the rest to searches); a process that
/// only loads data can give them every core. Only before the process's
/// first background seal: refused after (unless it is the number they run
/// on), and for 0.
#[pyfunction]
fn set_build_threads(py: Python<'_>, n: i64) -> PyResult<()> {
    // A negative count is refused as bad input, as every count is (not an OverflowError).
    let n = usize::try_from(n).map_err(|_| invalid(py, format!("build threads must be at least 1, got {n}")))?;
    tessera::set_build_threads(n).or_py(py)
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
    m.add_function(wrap_pyfunction!(set_build_threads, m)?)?;
    m.add("MAX_K", tessera::MAX_K)?;
    // The search options' names (`search(**options)`), as the engine reads them.
    m.add("SEARCH_OPTIONS", tessera::SearchOptions::fields().to_vec())?;
    m.add("SETTINGS", tessera::Settings::names().to_vec())?;
    m.add("DEFAULT_CANDIDATES", tessera::DEFAULT_CANDIDATES)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
