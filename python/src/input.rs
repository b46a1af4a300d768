//! Python values read into engine types: token arrays, ids, JSON, filters, documents.

use crate::*;
use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::types::{PyDict, PyString};
use std::borrow::Cow;
use std::ops::Range;

use tessera::{Tokens, f16};

/// The values of a numpy `[tokens, dim]` array: borrowed from a C-contiguous
/// buffer, or read out element by element in row-major order from any other
/// layout (Fortran order, strided views).
pub(crate) enum Rows<'a> {
    F32(Cow<'a, [f32]>),
    F16(Cow<'a, [f16]>),
}

impl Rows<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Rows::F32(d) => d.len(),
            Rows::F16(d) => d.len(),
        }
    }

    /// Values `span` (a range of values, not rows) as engine tokens: one copy.
    pub(crate) fn tokens(&self, span: Range<usize>, dim: usize) -> Tokens {
        match self {
            Rows::F32(d) => Tokens::F32 { data: d[span].to_vec(), dim },
            Rows::F16(d) => Tokens::F16 { data: d[span].to_vec(), dim },
        }
    }
}

pub(crate) fn values<'a, T: numpy::Element + Copy>(a: &'a PyReadonlyArray2<'_, T>, c_contiguous: bool) -> Cow<'a, [T]> {
    match a.as_slice() {
        Ok(s) if c_contiguous => Cow::Borrowed(s),
        _ => Cow::Owned(a.as_array().iter().copied().collect()),
    }
}

/// Calls `f` with the values and dim of `obj`, which must be a 2-d numpy
/// array of float16 or float32 (no other dtype is converted).
pub(crate) fn with_rows<R>(
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
pub(crate) fn tokens_of(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<Tokens> {
    with_rows(py, obj, what, |rows, dim| Ok(rows.tokens(0..rows.len(), dim)))
}

/// A sequence argument (list, tuple, …; not a str, not a numpy array) as its items.
pub(crate) fn items<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if obj.is_instance_of::<PyString>() || obj.cast::<PyUntypedArray>().is_ok() {
        return Err(invalid(py, format!("{name} must be a list, got {}", obj.get_type().name()?)));
    }
    match obj.try_iter() {
        Ok(it) => it.collect(),
        Err(_) => Err(invalid(py, format!("{name} must be a list, got {}", obj.get_type().name()?))),
    }
}

pub(crate) fn ids_of(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
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
pub(crate) fn json_text(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &dyn Fn() -> String) -> PyResult<String> {
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

pub(crate) fn json_value(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &dyn Fn() -> String,
) -> PyResult<serde_json::Value> {
    let text = json_text(py, obj, what)?;
    serde_json::from_str(&text).map_err(|e| invalid(py, format!("{}: {e}", what())))
}

/// A filter given as a dict (or list, …) or as JSON text, as JSON (text is
/// checked as a filter, in the engine's words: the string "null" is not one).
pub(crate) fn filter_json(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    match obj.cast::<PyString>() {
        Ok(s) => tessera::Filter::checked_json(&s.extract::<String>()?).or_py(py),
        Err(_) => json_value(py, obj, &|| "filter".into()),
    }
}

pub(crate) fn to_python<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, v).map_err(PyErr::from)
}

/// An optional filter argument (None: no filter) as the engine's filter.
pub(crate) fn filter_of(py: Python<'_>, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<tessera::Filter>> {
    match obj.filter(|f| !f.is_none()) {
        Some(f) => Ok(Some(tessera::Filter::from_json(&filter_json(py, f)?).or_py(py)?)),
        None => Ok(None),
    }
}

/// A stored document as Python's `Document` (tokens as `[n, dim]` float16 when asked for).
pub(crate) fn document(py: Python<'_>, d: tessera::StoredDocument, tokens: bool) -> PyResult<Document> {
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
