//! What searches and gets return to Python: `Hit`, `Document`, `Reranked`.

use crate::*;
use pyo3::types::PyList;

use tessera::SearchResults;

/// One search result.
#[pyclass(frozen, module = "tessera")]
pub struct Hit {
    /// The document's id.
    #[pyo3(get)]
    pub(crate) id: String,
    /// MaxSim score when query tokens were given; otherwise the fused (or BM25) score.
    #[pyo3(get)]
    pub(crate) score: f32,
    /// The document's text, if it has one.
    #[pyo3(get)]
    pub(crate) text: Option<String>,
    /// The document's payload (a JSON value), if it has one.
    #[pyo3(get)]
    pub(crate) payload: Py<PyAny>,
    /// Hybrid queries: the fused score.
    #[pyo3(get)]
    pub(crate) fused: Option<f64>,
    /// Hybrid queries: how each source ranked the document, as dicts
    /// `{"source", "rank", "score"}`.
    #[pyo3(get)]
    pub(crate) sources: Py<PyAny>,
    /// Hybrid queries ranked "linear": each signal's part in `score`, as
    /// dicts `{"signal", "raw", "value", "normalized", "weight"}`.
    #[pyo3(get)]
    pub(crate) components: Py<PyAny>,
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
    pub(crate) fn of(py: Python<'_>, h: tessera::SearchHit) -> PyResult<Self> {
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

    pub(crate) fn list(py: Python<'_>, results: SearchResults) -> PyResult<Vec<Hit>> {
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
    pub(crate) id: String,
    /// `[n_tokens, dim]` float16 array, or None when tokens were not asked for.
    #[pyo3(get)]
    pub(crate) tokens: Py<PyAny>,
    #[pyo3(get)]
    pub(crate) n_tokens: usize,
    #[pyo3(get)]
    pub(crate) text: Option<String>,
    #[pyo3(get)]
    pub(crate) payload: Py<PyAny>,
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
    pub(crate) hits: Py<PyAny>,
    #[pyo3(get)]
    pub(crate) missing: Vec<String>,
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
