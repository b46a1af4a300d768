//! `tessera.Collection`: writes, reads, searches, settings, models.

use crate::*;
use numpy::{PyArray1, PyArrayMethods, PyUntypedArray};
use pyo3::types::{PyDict, PyString};
use std::collections::HashSet;
use std::sync::Arc;

use tessera::{PlanDefaults, SearchOptions, TextKind, Tokens, f16};

/// A collection of documents: an id, a token tensor, optional text and a
/// JSON payload each, ranked against a query tensor by MaxSim.
#[pyclass(frozen, module = "tessera")]
pub struct Collection {
    pub(crate) shared: Shared,
    pub(crate) inner: Arc<tessera::Collection>,
}

/// A model binding as a dict (`path`, `identity`).
pub(crate) fn binding_to_python<'py>(py: Python<'py>, m: &tessera::ModelBinding) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(m).expect("a binding serialises");
    pythonize::pythonize(py, &value).map_err(PyErr::from)
}

/// A dict of named weights (`{"text": 0.5}`) as the engine's pairs.
pub(crate) fn weights_of<T: std::str::FromStr<Err = tessera::UnknownName>>(
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
pub(crate) fn rank_of(
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
pub(crate) fn integer(v: Bound<'_, PyAny>) -> PyResult<Bound<'_, PyAny>> {
    if v.is_instance_of::<pyo3::types::PyInt>() || !v.hasattr("__index__")? {
        return Ok(v);
    }
    Ok(v.call_method0("__index__").unwrap_or(v))
}

/// A dict read by serde into `T`; a bad value raises InvalidInputError
/// naming where it is (`candidates[2]: …`).
pub(crate) fn from_dict<T: serde::de::DeserializeOwned>(py: Python<'_>, d: &Bound<'_, PyDict>) -> PyResult<T> {
    let mut reader = pythonize::Depythonizer::from_object(d.as_any());
    serde_path_to_error::deserialize(&mut reader).map_err(|e| invalid(py, format!("{}: {}", e.path(), e.inner())))
}

/// Keyword arguments read into `T` as [`from_dict`] reads a dict: None is a
/// keyword left out, and numpy integers are integers.
pub(crate) fn from_kwargs<T: serde::de::DeserializeOwned>(
    py: Python<'_>,
    d: Option<&Bound<'_, PyDict>>,
) -> PyResult<T> {
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
pub(crate) fn settings_of(py: Python<'_>, d: Option<&Bound<'_, PyDict>>, call: &str) -> PyResult<tessera::Settings> {
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
pub(crate) fn options_of(
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

pub(crate) type Document_ = tessera::Document;

pub(crate) fn first(docs: &[Document_], id: &str) -> usize {
    docs.iter().position(|d| d.id == id).unwrap_or_default()
}

/// A flat `[N, dim]` tensor cut at `offsets` (n + 1 of them, 0 first, N
/// last): each document's tokens copied once, straight from the array.
pub(crate) fn split_flat(py: Python<'_>, all: &Rows<'_>, dim: usize, offs: &[i64], n: usize) -> PyResult<Vec<Tokens>> {
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
    /// default_nprobe, min_train_tokens, drift, expected_tokens; the others are fixed at creation), checked
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
