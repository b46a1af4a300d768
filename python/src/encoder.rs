//! `tessera.Encoder`: the built-in late-interaction encoder from Python.
//! Texts in, one float32 `(tokens, dim)` array per text out; the forward
//! passes run on the engine's pool with the GIL released.

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;

use crate::{engine, py_error};

/// The `tessera.errors` class for an encoder error.
pub(crate) fn encoder_error(py: Python<'_>, e: tessera_encoder::Error) -> PyErr {
    let class = match e {
        tessera_encoder::Error::Model { .. } | tessera_encoder::Error::Input(_) => "InvalidInputError",
        tessera_encoder::Error::Compute(_) => "TesseraError",
    };
    py_error(py, class, e.to_string())
}

/// A late-interaction model loaded from a sentence-transformers / PyLate
/// model directory.
#[pyclass(frozen, module = "tessera")]
pub(crate) struct Encoder {
    inner: tessera_encoder::Encoder,
}

#[pymethods]
impl Encoder {
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Encoder> {
        let inner = engine(py, || tessera_encoder::Encoder::open(&path)).map_err(|e| encoder_error(py, e))?;
        Ok(Encoder { inner })
    }

    /// The output vectors' dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// What identifies the model's outputs: name, architecture, dim, the
    /// weights' checksum and the late-interaction settings.
    #[getter]
    fn identity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::to_value(self.inner.identity()).expect("an identity serialises");
        pythonize::pythonize(py, &value).map_err(PyErr::from)
    }

    /// Encodes `texts` as queries (`is_query=True`) or documents: one
    /// float32 array `(tokens, dim)` per text, rows of unit norm.
    #[pyo3(signature = (texts, is_query = false))]
    fn encode<'py>(&self, py: Python<'py>, texts: Vec<String>, is_query: bool) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let kind = if is_query { tessera_encoder::Kind::Query } else { tessera_encoder::Kind::Document };
        let encoded = engine(py, || self.inner.encode(&texts, kind)).map_err(|e| encoder_error(py, e))?;
        encoded
            .into_iter()
            .map(|e| {
                let rows = e.len();
                let dim = e.dim;
                Ok(PyArray1::from_vec(py, e.vectors).reshape([rows, dim])?.into_any())
            })
            .collect()
    }

    fn __repr__(&self) -> String {
        let id = self.inner.identity();
        format!("Encoder(name={:?}, architecture={:?}, dim={})", id.name, id.architecture, id.dim)
    }
}
