//! The service layer: every operation the server offers, with limits and
//! validation, independent of the wire protocol. The HTTP and gRPC adapters
//! only translate their requests into these calls and the results back.
//!
//! Threads: searches, reranks and reads run on a rayon pool sized to the
//! machine (the engine's MaxSim scoring parallelises inside it); writes run
//! on tokio's blocking pool and return only after the engine acknowledged
//! them (WAL fsync with the default durability). The engine serialises
//! writes per collection and readers never wait on writers: a search reads
//! the latest published snapshot.

mod limits;
mod types;

pub use limits::Limits;
use types::Planned;
pub use types::*;

use crate::auth::{Access, ApiKeys};
use crate::error::{ApiError, ErrorKind};
use crate::metrics::Metrics;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tessera::{Database, Document, SearchOptions, SearchPlan, StoredDocument, Tokens};

/// A filter as a request gives it (JSON `null` or none: no filter), as the engine's.
fn payload_filter(f: Option<serde_json::Value>) -> Result<Option<tessera::Filter>, ApiError> {
    Ok(f.filter(|f| !f.is_null()).map(|f| tessera::Filter::from_json(&f)).transpose()?)
}

/// Refuses an answer of `docs` that would be over `max` bytes with their
/// tokens at `value_bytes` per value (0: without tokens).
fn check_answer_bytes<'a>(
    docs: impl Iterator<Item = &'a StoredDocument>,
    dim: usize,
    value_bytes: usize,
    max: usize,
) -> Result<(), ApiError> {
    let mut bytes = 0usize;
    for d in docs {
        bytes += d.id.len() + d.text.as_ref().map_or(0, String::len) + 64;
        bytes += d.payload.as_ref().map_or(0, |p| p.to_string().len());
        bytes += d.n_tokens * dim * value_bytes;
        if bytes > max {
            return Err(ApiError {
                kind: ErrorKind::TooLarge,
                message: format!(
                    "the answer would be over {max} bytes, the limit max_response_bytes; ask for fewer documents or no tokens"
                ),
                limit: Some("max_response_bytes"),
            });
        }
    }
    Ok(())
}
#[derive(Default)]
struct WriteGate {
    closed: AtomicBool,
    in_flight: AtomicUsize,
    done: tokio::sync::Notify,
}

/// Counts a write finished when dropped (with the blocking work, not the request).
struct WriteDone(Arc<WriteGate>);

impl Drop for WriteDone {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.done.notify_waiters();
    }
}

/// The service: the database, limits, keys, the search pool and metrics.
pub struct Service {
    db: Arc<Database>,
    pub limits: Limits,
    pub keys: ApiKeys,
    pool: rayon::ThreadPool,
    /// Reads admitted to the pool at once: one per thread. The rest wait
    /// here in arrival order; inside rayon a waiting thread may steal a whole
    /// other search, which costs the tail latency dearly under load.
    read_slots: Arc<tokio::sync::Semaphore>,
    pub metrics: Metrics,
    draining: AtomicBool,
    /// Writes running, and whether shutdown still takes writes; see
    /// [`close_writes`](Self::close_writes).
    writes: Arc<WriteGate>,
    /// Where `POST /v1/backup` writes backups; `None`: backups over the API are refused.
    backup_dir: Option<PathBuf>,
    /// The models requests may name (`tessera serve --model NAME=DIR`), loaded at start.
    models: std::collections::BTreeMap<String, (PathBuf, Arc<tessera::Encoder>)>,
    /// The reindexes started over the API, by collection: the last of each.
    reindexes: Arc<std::sync::Mutex<std::collections::BTreeMap<String, ReindexStatus>>>,
    /// Bytes of request bodies being received, under `max_receiving_bytes`.
    pub receiving: Arc<crate::conn::Receiving>,
    /// Answered two-stage searches searched again exactly in the background (off until started).
    pub live: Arc<crate::live::LiveRecall>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("db", &self.db.path()).field("limits", &self.limits).finish()
    }
}

impl Service {
    /// `threads`: size of the search pool (0: one per core).
    pub fn new(db: Arc<Database>, limits: Limits, keys: ApiKeys, threads: usize) -> Result<Self, ApiError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tessera-search-{i}"))
            .build()
            .map_err(|e| ApiError::internal(format!("search pool: {e}")))?;
        let live = Arc::new(crate::live::LiveRecall::default());
        let metrics = Metrics::new(db.clone(), live.clone());
        let read_slots = Arc::new(tokio::sync::Semaphore::new(pool.current_num_threads()));
        limits.validate().map_err(|e| ApiError::bad_request(format!("limits: {e}")))?;
        let receiving = crate::conn::Receiving::new(limits.max_receiving_bytes, limits.max_receiving_bytes_per_address);
        Ok(Self {
            db,
            limits,
            keys,
            pool,
            read_slots,
            metrics,
            draining: AtomicBool::new(false),
            writes: Arc::default(),
            backup_dir: None,
            models: Default::default(),
            reindexes: Default::default(),
            receiving,
            live,
        })
    }

    /// Loads the models requests may name (`NAME`, its folder), refusing one
    /// that does not load; they stay loaded while the server runs.
    pub fn with_models(mut self, models: &[(String, PathBuf)]) -> Result<Self, ApiError> {
        for (name, dir) in models {
            if !tessera::valid_name(name) {
                return Err(ApiError::bad_request(format!(
                    "model name {name:?}: 1-64 characters from A-Z a-z 0-9 _ -"
                )));
            }
            let encoder = tessera::load_model(dir).map_err(|e| ApiError::bad_request(format!("model {name}: {e}")))?;
            if self.models.insert(name.clone(), (dir.clone(), encoder)).is_some() {
                return Err(ApiError::bad_request(format!("model {name:?} is named twice")));
            }
        }
        Ok(self)
    }

    /// The model named `name` (its folder and itself), or NOT_FOUND naming the ones there are.
    fn named_model(&self, name: &str) -> Result<(PathBuf, Arc<tessera::Encoder>), ApiError> {
        self.models.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            ApiError::new(
                ErrorKind::NotFound,
                match known.is_empty() {
                    true => format!("no model {name:?}: the server was started without models (--model NAME=DIR)"),
                    false => format!("no model {name:?}; the server has {}", known.join(", ")),
                },
            )
        })
    }

    /// The names of the models requests may name, with their identities.
    pub fn models(&self) -> Vec<(String, tessera::ModelIdentity)> {
        self.models.iter().map(|(n, (_, e))| (n.clone(), e.identity().clone())).collect()
    }

    /// Lets `POST /v1/backup` write backups into folders under `dir`.
    pub fn with_backup_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.backup_dir = dir;
        self
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn authorize(&self, presented: Option<&str>, need: Access) -> Result<(), ApiError> {
        self.keys.check(presented, need)
    }

    /// Runs a read on the search pool; a panic becomes an internal error.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.read_until(None, f).await
    }

    /// [`read`](Self::read), answering DEADLINE_EXCEEDED when no search slot
    /// is free before `deadline` (the work itself checks it as it runs).
    async fn read_until<T: Send + 'static>(
        &self,
        deadline: Option<std::time::Instant>,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let acquire = self.read_slots.clone().acquire_owned();
        let slot = match deadline {
            None => acquire.await,
            Some(d) => tokio::time::timeout_at(d.into(), acquire)
                .await
                .map_err(|_| ApiError::from(tessera::Error::DeadlineExceeded))?,
        };
        let slot = slot.map_err(|_| ApiError::internal("the search pool is closed"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            // The slot is held until the work is done, even if the client
            // went away and nobody awaits the answer.
            let _slot = slot;
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
        });
        match rx.await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ApiError::internal("the request panicked (a bug: please report it)")),
            Err(_) => Err(ApiError::internal("the search pool dropped the request")),
        }
    }

    /// Runs a write on the blocking pool; it completes even if the client goes away.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        // Count first, then check: `close_writes` sets the flag, then waits
        // for the count, so no write it did not wait for gets in.
        self.writes.in_flight.fetch_add(1, Ordering::SeqCst);
        let done = WriteDone(self.writes.clone());
        if self.writes.closed.load(Ordering::SeqCst) {
            return Err(ApiError::new(ErrorKind::Unavailable, "the server is shutting down and takes no more writes"));
        }
        let run = move || {
            let _done = done;
            f()
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::internal("the write panicked (a bug: please report it)")),
        }
    }

    /// Refuses every later write (503), then waits for the writes running:
    /// after this, a flush is the last word.
    pub async fn close_writes(&self) {
        self.writes.closed.store(true, Ordering::SeqCst);
        loop {
            let notified = self.writes.done.notified();
            if self.writes.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn collection(&self, name: &str) -> Result<Arc<tessera::Collection>, ApiError> {
        Ok(self.db.collection(name)?)
    }

    fn check_ids(&self, n: usize) -> Result<(), ApiError> {
        if n > self.limits.max_ids {
            return Err(ApiError::too_large("max_ids", "the number of ids", n, self.limits.max_ids));
        }
        Ok(())
    }

    fn check_query(&self, t: &Tokens) -> Result<(), ApiError> {
        let n = t.n_tokens();
        if n > self.limits.max_query_tokens {
            return Err(ApiError::too_large(
                "max_query_tokens",
                "the query's token count",
                n,
                self.limits.max_query_tokens,
            ));
        }
        Ok(())
    }

    fn check_k(&self, k: usize) -> Result<(), ApiError> {
        if k == 0 {
            return Err(ApiError::bad_request("k must be at least 1"));
        }
        if k > self.limits.max_k {
            return Err(ApiError::out_of_range("max_k", "k", k, self.limits.max_k));
        }
        Ok(())
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn health(&self) -> Health {
        Health {
            status: if self.is_draining() { "draining" } else { "ok" },
            version: env!("CARGO_PKG_VERSION"),
            collections: self.db.list_collections().len(),
        }
    }

    pub async fn list_collections(&self) -> Result<Vec<CollectionInfo>, ApiError> {
        let db = self.db.clone();
        self.read(move || {
            let mut names = db.list_collections();
            names.sort();
            // A collection dropped meanwhile is skipped.
            Ok(names.iter().filter_map(|n| db.collection(n).ok()).map(|c| CollectionInfo::of(&c)).collect())
        })
        .await
    }

    /// Creates a collection; with `if_not_exists`, an existing collection of
    /// the same configuration is returned instead. The flag tells whether it
    /// was created.
    pub async fn create_collection(&self, spec: CollectionSpec) -> Result<(CollectionInfo, bool), ApiError> {
        let model = spec.model.as_deref().map(|m| self.named_model(m)).transpose()?;
        if spec.dim == Some(0) {
            return Err(ApiError::bad_request("dim must be at least 1"));
        }
        let dim = tessera::collection_dim(spec.dim, model.as_ref().map(|(_, m)| &**m))?;
        let config = spec.config(dim)?;
        let db = self.db.clone();
        let dir = model.map(|(dir, _)| dir.canonicalize().unwrap_or(dir));
        self.write(move || {
            // With `if_not_exists`, the name may be between states: created by
            // a concurrent request that has not finished, or dropped after this
            // one saw it. Either settles within a create or a drop: try again.
            for _ in 0..1000 {
                match db.create_collection(&spec.name, config.clone()) {
                    Ok(c) => {
                        if let Some(dir) = &dir
                            && let Err(e) = c.bind_model(dir)
                        {
                            // Nothing half-made stays behind.
                            let _ = db.drop_collection(&spec.name);
                            return Err(e.into());
                        }
                        return Ok((CollectionInfo::of(&c), true));
                    }
                    Err(tessera::Error::CollectionExists(_)) if spec.if_not_exists => match db.collection(&spec.name) {
                        Ok(c) => {
                            let bound = c.model().map(|m| m.path);
                            let differs = c
                                .config()
                                .differs_from(&config)
                                .or_else(|| spec.settings.and_then(|s| s.differs(&c.config())))
                                .or_else(|| (dir.is_some() && bound != dir).then_some("model"));
                            return match differs {
                                None => Ok((CollectionInfo::of(&c), false)),
                                Some(what) => Err(tessera::Error::ConfigMismatch {
                                    name: spec.name.clone(),
                                    reason: format!("its {what} differs from the request"),
                                }
                                .into()),
                            };
                        }
                        Err(tessera::Error::UnknownCollection(_)) => {
                            std::thread::sleep(std::time::Duration::from_millis(1))
                        }
                        Err(e) => return Err(e.into()),
                    },
                    Err(e) => return Err(e.into()),
                }
            }
            Err(ApiError::new(ErrorKind::Unavailable, format!("collection {:?} kept changing; try again", spec.name)))
        })
        .await
    }

    pub async fn drop_collection(&self, name: &str) -> Result<(), ApiError> {
        let (db, name) = (self.db.clone(), name.to_string());
        self.write(move || Ok(db.drop_collection(&name)?)).await
    }

    pub async fn collection_info(&self, name: &str) -> Result<CollectionInfo, ApiError> {
        let c = self.collection(name)?;
        self.read(move || Ok(CollectionInfo::of(&c))).await
    }

    /// Inserts or replaces documents; returns once the batch is durable.
    pub async fn upsert(
        &self,
        name: &str,
        docs: Vec<Document>,
        options: tessera::UpsertOptions,
    ) -> Result<usize, ApiError> {
        let c = self.collection(name)?;
        let l = &self.limits;
        if docs.is_empty() {
            return Err(ApiError::bad_request("documents: at least one document is required"));
        }
        if docs.len() > l.max_batch_docs {
            return Err(ApiError::too_large(
                "max_batch_docs",
                "the batch's document count",
                docs.len(),
                l.max_batch_docs,
            ));
        }
        for d in &docs {
            let n = d.tokens.n_tokens();
            if n > l.max_doc_tokens {
                let mut e = ApiError::too_large("max_doc_tokens", "the token count", n, l.max_doc_tokens);
                e.message = format!("document {:?}: {}", d.id, e.message);
                return Err(e);
            }
            let payload = d.payload.as_ref().map_or(0, |p| p.to_string().len());
            if payload > l.max_payload_bytes {
                let mut e = ApiError::too_large(
                    "max_payload_bytes",
                    "the payload's size in bytes",
                    payload,
                    l.max_payload_bytes,
                );
                e.message = format!("document {:?}: {}", d.id, e.message);
                return Err(e);
            }
        }
        let n = docs.len();
        self.write(move || Ok(c.upsert_with(&docs, &options).map(|_| n)?)).await
    }

    /// Deletes documents; returns how many existed.
    pub async fn delete(&self, name: &str, ids: Vec<String>) -> Result<usize, ApiError> {
        let c = self.collection(name)?;
        self.check_ids(ids.len())?;
        self.write(move || Ok(c.delete(&ids)?)).await
    }

    /// Documents by id, from one snapshot; repeated ids are answered once.
    /// `value_bytes`: the answer's bytes per token value (the encoding's), for
    /// the `max_response_bytes` limit; 0 leaves the tokens out.
    pub async fn get(&self, name: &str, ids: Vec<String>, value_bytes: usize) -> Result<GetResponse, ApiError> {
        let c = self.collection(name)?;
        self.check_ids(ids.len())?;
        let mut seen = std::collections::HashSet::new();
        let ids: Vec<String> = ids.into_iter().filter(|id| seen.insert(id.clone())).collect();
        let max = self.limits.max_response_bytes;
        self.read(move || {
            let found = c.get_many(&ids, false)?;
            // Sizes first, from the documents without tokens: the limit is
            // checked before any token is copied. (The answer itself comes
            // from one snapshot; the estimate may be from an older one.)
            check_answer_bytes(found.iter().flatten(), c.dim(), value_bytes, max)?;
            let found = if value_bytes == 0 { found } else { c.get_many(&ids, true)? };
            let (mut documents, mut missing) = (Vec::new(), Vec::new());
            for (id, d) in ids.into_iter().zip(found) {
                match d {
                    Some(d) => documents.push(d),
                    None => missing.push(id),
                }
            }
            Ok(GetResponse { documents, missing })
        })
        .await
    }

    /// The live documents whose payload matches `filter` with ids after
    /// `after`, in id order, at most `limit` (≤ `max_ids`; without one, 1000
    /// or `max_ids` if lower). With tokens (`value_bytes` > 0) the page is
    /// sized without them first, then read again with them from one
    /// snapshot (the estimate may be from an older one, as in `get`).
    pub async fn scan(
        &self,
        name: &str,
        filter: Option<serde_json::Value>,
        after: Option<String>,
        limit: Option<usize>,
        value_bytes: usize,
    ) -> Result<tessera::ScanPage, ApiError> {
        let c = self.collection(name)?;
        let limit = limit.unwrap_or(self.limits.max_ids.min(1000));
        self.check_ids(limit)?;
        let filter = payload_filter(filter)?;
        let max = self.limits.max_response_bytes;
        self.read(move || {
            let page = c.scan(filter.as_ref(), after.as_deref(), limit, false)?;
            check_answer_bytes(page.documents.iter(), c.dim(), value_bytes, max)?;
            if value_bytes == 0 {
                return Ok(page);
            }
            Ok(c.scan(filter.as_ref(), after.as_deref(), limit, true)?)
        })
        .await
    }

    /// How many live documents match `filter` (all of them without one).
    pub async fn count(&self, name: &str, filter: Option<serde_json::Value>) -> Result<usize, ApiError> {
        let c = self.collection(name)?;
        let filter = payload_filter(filter)?;
        self.read(move || Ok(c.count(filter.as_ref())?)).await
    }

    /// Texts encoded by a model the server was started with or by a
    /// collection's bound model (as queries or documents), each as f16
    /// values and its dimension; at most `max_batch_docs` texts.
    pub async fn encode(
        &self,
        model: ModelRef,
        texts: Vec<String>,
        is_query: bool,
    ) -> Result<Vec<(Vec<half::f16>, usize)>, ApiError> {
        let by: Result<Arc<tessera::Encoder>, Arc<tessera::Collection>> = match &model {
            ModelRef::Named(m) => Ok(self.named_model(m)?.1),
            ModelRef::Collection(c) => Err(self.collection(c)?),
        };
        if texts.is_empty() {
            return Err(ApiError::bad_request("texts: at least one text is required"));
        }
        let l = &self.limits;
        if texts.len() > l.max_batch_docs {
            return Err(ApiError::too_large("max_batch_docs", "the number of texts", texts.len(), l.max_batch_docs));
        }
        self.read(move || {
            let kind = if is_query { tessera::TextKindOf::Query } else { tessera::TextKindOf::Document };
            let encoded = match by {
                Ok(e) => tessera::encode_texts(&e, &texts, kind)?,
                Err(c) => c.encode_texts(&texts, kind)?,
            };
            Ok(encoded
                .into_iter()
                .map(|t| match t {
                    Tokens::F32 { data, dim } => (data.into_iter().map(half::f16::from_f32).collect(), dim),
                    Tokens::F16 { data, dim } => (data, dim),
                })
                .collect())
        })
        .await
    }

    pub async fn search(&self, name: &str, req: SearchRequest) -> Result<SearchResponse, ApiError> {
        if req.queries.is_some() || req.query_texts.is_some() || req.texts.is_some() {
            return Err(ApiError::bad_request("a batch (queries, with texts) is answered by the batch search"));
        }
        let c = self.collection(name)?;
        if let Some(t) = &req.tokens {
            self.check_query(&t.0)?;
        }
        let plan = self.plan(&c, &req.options, req.tokens.is_some())?;
        let tokens = req.tokens.map(|t| t.0);
        let live = self.live.clone();
        self.read_until(plan.deadline(), move || {
            let results = c.execute(&plan, tokens.as_ref())?;
            // A sampled two-stage answer is checked against exact search in the background.
            if let (tessera::SearchResults::TwoStage(hits), Some(query)) = (&results, tokens)
                && live.sample()
            {
                let answered = hits.iter().map(|h| h.id.clone()).collect();
                let (k, filter) = (plan.k(), plan.filter().cloned());
                live.offer(crate::live::Sample { collection: c, query, k, filter, answered });
            }
            Ok(SearchResponse::of(results, &plan))
        })
        .await
    }

    /// The same search for each of `req.queries`, answered in order; a bad
    /// query gets its own error and the others are answered. Tensor searches
    /// run as one engine batch (the multi-query kernel over the documents
    /// the queries share). Limits: `max_batch_queries`, `max_batch_tokens`
    /// (the whole batch), `max_query_tokens` (each query).
    pub async fn search_batch(&self, name: &str, mut req: SearchRequest) -> Result<BatchResponse, ApiError> {
        if req.tokens.is_some() {
            return Err(ApiError::bad_request(
                "give either tokens (one query) or queries / query_texts (a batch), not both",
            ));
        }
        let queries = match (req.queries.take(), req.query_texts.take()) {
            (Some(_), Some(_)) => return Err(ApiError::bad_request("give queries (tokens) or query_texts, not both")),
            (None, None) => return Err(ApiError::bad_request("a batch search needs queries or query_texts")),
            (None, Some(_)) if req.texts.is_some() => {
                return Err(ApiError::bad_request(
                    "texts go with queries (tokens): query_texts are their own BM25 texts",
                ));
            }
            (None, Some(texts)) => return self.search_batch_texts(name, texts, &req.options).await,
            (Some(q), None) => q,
        };
        let bm25 = req.texts.take();
        if let Some(t) = &bm25
            && t.len() != queries.len()
        {
            return Err(ApiError::bad_request(format!(
                "{} queries and {} texts: give one BM25 text per query",
                queries.len(),
                t.len()
            )));
        }
        let c = self.collection(name)?;
        if queries.len() > self.limits.max_batch_queries {
            let max = self.limits.max_batch_queries;
            return Err(ApiError::too_large("max_batch_queries", "the number of queries", queries.len(), max));
        }
        let total: usize = queries.iter().map(|t| t.0.n_tokens()).sum();
        if total > self.limits.max_batch_tokens {
            let max = self.limits.max_batch_tokens;
            return Err(ApiError::too_large("max_batch_tokens", "the batch's token count", total, max));
        }
        let kind = if bm25.is_some() { Planned::Bm25Texts } else { Planned::Tokens(true) };
        let plan = Arc::new(self.plan_with(&c, &req.options, kind)?);
        let mut results: Vec<Option<Result<SearchResponse, ApiError>>> = Vec::with_capacity(queries.len());
        let (mut at, mut good, mut good_texts) = (Vec::new(), Vec::new(), Vec::new());
        let mut texts = bm25.map(Vec::into_iter);
        for (i, t) in queries.into_iter().enumerate() {
            let text = texts.as_mut().and_then(Iterator::next);
            match self.check_query(&t.0) {
                Ok(()) => {
                    at.push(i);
                    good.push(t.0);
                    good_texts.extend(text);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let run = plan.clone();
        let outs = self
            .read_until(plan.deadline(), move || match kind {
                Planned::Bm25Texts => Ok(c.execute_batch_bm25(&run, &good, &good_texts)?),
                _ => Ok(c.execute_batch(&run, &good)?),
            })
            .await?;
        for (i, out) in at.into_iter().zip(outs) {
            results[i] = Some(out.map(|o| SearchResponse::of(o, &plan)).map_err(ApiError::from));
        }
        let results = results.into_iter().map(|r| BatchResult::of(r.expect("every query answered"))).collect();
        Ok(BatchResponse { results })
    }

    /// [`search_batch`](Self::search_batch) of texts, encoded by the
    /// collection's model (each at most its query length, so
    /// `max_query_tokens` is the model's to keep). Limits: `max_batch_queries`.
    async fn search_batch_texts(
        &self,
        name: &str,
        texts: Vec<String>,
        options: &SearchOptions,
    ) -> Result<BatchResponse, ApiError> {
        let c = self.collection(name)?;
        if texts.len() > self.limits.max_batch_queries {
            let max = self.limits.max_batch_queries;
            return Err(ApiError::too_large("max_batch_queries", "the number of queries", texts.len(), max));
        }
        let plan = Arc::new(self.plan_with(&c, options, Planned::QueryTexts)?);
        let run = plan.clone();
        let outs = self.read_until(plan.deadline(), move || Ok(c.execute_batch_texts(&run, &texts)?)).await?;
        let results = outs
            .into_iter()
            .map(|o| BatchResult::of(o.map(|o| SearchResponse::of(o, &plan)).map_err(ApiError::from)))
            .collect();
        Ok(BatchResponse { results })
    }

    /// The plan of a search with `options` (with query tokens or not), after
    /// the server's limits; what a search leaves out comes from them too (k
    /// 10 or `max_k` if lower, `search_timeout_ms`, at most `max_candidates`).
    fn plan(&self, c: &tessera::Collection, options: &SearchOptions, tokens: bool) -> Result<SearchPlan, ApiError> {
        self.plan_with(c, options, Planned::Tokens(tokens))
    }

    /// [`plan`](Self::plan) of a query (with tokens or not) or of a batch's kind.
    fn plan_with(
        &self,
        c: &tessera::Collection,
        options: &SearchOptions,
        kind: Planned,
    ) -> Result<SearchPlan, ApiError> {
        let l = &self.limits;
        let defaults = tessera::PlanDefaults {
            k: 10.min(l.max_k),
            timeout: Some(std::time::Duration::from_millis(l.search_timeout_ms as u64)),
            max_candidates: l.max_candidates,
        };
        self.check_k(options.k.unwrap_or(defaults.k))?;
        if let Some(t) = options.timeout_ms
            && t > l.search_timeout_ms
        {
            return Err(ApiError::out_of_range("search_timeout_ms", "timeout_ms", t, l.search_timeout_ms));
        }
        if let Some(n) = options.candidates {
            if n == 0 {
                return Err(ApiError::bad_request("candidates must be at least 1"));
            }
            if n > l.max_candidates {
                return Err(ApiError::out_of_range("max_candidates", "candidates", n, l.max_candidates));
            }
        }
        for (what, v) in [("ef", options.ef), ("rerank", options.rerank)] {
            if let Some(v) = v
                && v > l.max_candidates
            {
                return Err(ApiError::out_of_range("max_candidates", what, v, l.max_candidates));
            }
        }
        self.check_ids(options.ids.len())?;
        Ok(match kind {
            Planned::Tokens(tokens) => options.plan(c, tokens, &defaults)?,
            Planned::QueryTexts => options.plan_texts(c, &defaults)?,
            Planned::Bm25Texts => options.plan_bm25_texts(c, &defaults)?,
        })
    }

    /// Exact MaxSim of the query against the given documents, best first.
    pub async fn rerank(
        &self,
        name: &str,
        query: Query,
        ids: Vec<String>,
        include_text: bool,
        include_payload: bool,
    ) -> Result<RerankResponse, ApiError> {
        let c = self.collection(name)?;
        if let Query::Tokens(t) = &query {
            self.check_query(t)?;
        }
        self.check_ids(ids.len())?;
        self.read(move || {
            let r = match &query {
                Query::Tokens(t) => c.rerank(t, &ids)?,
                Query::Text(text) => c.rerank_text(text, &ids)?,
            };
            let hits = r.hits.into_iter().map(|h| Hit::of(h, include_text, include_payload)).collect();
            Ok(RerankResponse { hits, missing: r.missing })
        })
        .await
    }

    /// Hard negatives of one query (as `tessera mine-negatives` and the
    /// embedded `mine_negatives`): the negatives sampled from the ranks of
    /// `mine.range`, and the live positives with their exact scores. Limits:
    /// `max_query_tokens`, `max_ids` (positives), `max_k` (the range's end),
    /// `max_candidates`.
    pub async fn mine_negatives(&self, name: &str, mine: MineRequest) -> Result<MineResponse, ApiError> {
        let c = self.collection(name)?;
        self.check_query(&mine.tokens.0)?;
        self.check_ids(mine.positives.len())?;
        if mine.range.1 > self.limits.max_k {
            return Err(ApiError::out_of_range("max_k", "the range's end", mine.range.1, self.limits.max_k));
        }
        if let Some(n) = mine.candidates
            && n > self.limits.max_candidates
        {
            return Err(ApiError::out_of_range("max_candidates", "candidates", n, self.limits.max_candidates));
        }
        let weights: Vec<(tessera::Signal, f64)> = mine.rank_weights.iter().map(|(s, w)| (*s, *w)).collect();
        let rank = tessera::Rank::from_parts(mine.rank, mine.rank_norm, &weights)?;
        let p = tessera::MineParams {
            range: mine.range,
            per_query: mine.per_query,
            exclude_above_score: mine.exclude_above_score,
            max_score: mine.max_score,
            margin: mine.margin,
            sampling: mine.sampling,
            seed: mine.seed,
            candidates: mine.candidates.unwrap_or(tessera::DEFAULT_CANDIDATES),
            exact: mine.exact,
            require_text: mine.require_text,
            rank,
        };
        self.read(move || {
            let m = c.mine_negatives_with(&mine.query_id, &mine.tokens.0, mine.text.as_deref(), &mine.positives, &p)?;
            let hits = |v: Vec<tessera::SearchHit>| v.into_iter().map(|h| Hit::of(h, true, true)).collect();
            Ok(MineResponse { negatives: hits(m.negatives), positives: hits(m.positives) })
        })
        .await
    }

    /// Starts re-encoding collection `name` with the model named `model`
    /// (in the background: the collection keeps serving; see
    /// [`Database::reindex`]); refused while one runs for it.
    pub fn start_reindex(&self, name: &str, model: &str) -> Result<ReindexStatus, ApiError> {
        let (dir, encoder) = self.named_model(model)?;
        let c = self.collection(name)?;
        if encoder.dim() != c.dim() {
            return Err(ApiError::bad_request(format!(
                "model {model:?} outputs {}-dimensional vectors; collection {name:?} has dim {}",
                encoder.dim(),
                c.dim()
            )));
        }
        if self.writes.closed.load(Ordering::SeqCst) {
            return Err(ApiError::new(ErrorKind::Unavailable, "the server is shutting down and takes no more writes"));
        }
        let mut all = self.reindexes.lock().unwrap_or_else(|p| p.into_inner());
        if all.get(name).is_some_and(|r| r.state == "running") {
            return Err(ApiError::from(tessera::Error::Reindexing(name.into())));
        }
        let status = ReindexStatus {
            state: "running",
            model: model.into(),
            done: 0,
            total: c.len(),
            documents: None,
            caught_up: None,
            truncated: None,
            seconds: None,
            error: None,
        };
        all.insert(name.into(), status.clone());
        drop(all);
        let (db, table, name, key) = (self.db.clone(), self.reindexes.clone(), name.to_string(), name.to_string());
        let update = move |f: &dyn Fn(&mut ReindexStatus)| {
            if let Some(r) = table.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key) {
                f(r);
            }
        };
        let run = move || {
            let reindex = || {
                db.reindex(&name, &dir, &|p| {
                    update(&|r| (r.done, r.total) = (p.done, p.total));
                    Ok(())
                })
            };
            let report = std::panic::catch_unwind(AssertUnwindSafe(reindex)).unwrap_or_else(|_| {
                Err(tessera::Error::InvalidArgument("the reindex panicked (a bug: please report it)".into()))
            });
            update(&|r| match &report {
                Ok(rep) => {
                    r.state = "done";
                    (r.documents, r.caught_up) = (Some(rep.documents), Some(rep.caught_up));
                    (r.truncated, r.seconds) = (Some(rep.truncated), Some(rep.seconds));
                }
                Err(e) => {
                    r.state = "failed";
                    r.error = Some(e.to_string());
                }
            });
        };
        std::thread::Builder::new()
            .name("tessera-reindex".into())
            .spawn(run)
            .map_err(|e| ApiError::internal(format!("starting the reindex: {e}")))?;
        Ok(status)
    }

    /// The last reindex started over the API for collection `name`.
    pub fn reindex_status(&self, name: &str) -> Result<ReindexStatus, ApiError> {
        self.collection(name)?;
        self.reindexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no reindex of collection {name:?} was started")))
    }

    pub async fn flush(&self, name: &str) -> Result<CollectionInfo, ApiError> {
        let c = self.collection(name)?;
        self.write(move || {
            c.flush()?;
            Ok(CollectionInfo::of(&c))
        })
        .await
    }

    /// The recall curve of two-stage search against exact on the collection's
    /// own documents (`tessera::Collection::recall_curve`), under the limits
    /// of a search (`max_k`, `max_candidates`).
    pub async fn recall_curve(&self, name: &str, mut req: tessera::CurveRequest) -> Result<tessera::Curve, ApiError> {
        let c = self.collection(name)?;
        let l = &self.limits;
        if req.k > l.max_k {
            return Err(ApiError::out_of_range("max_k", "k", req.k, l.max_k));
        }
        for (what, values) in [("candidates", &req.candidates), ("rerank", &req.rerank)] {
            if let Some(&n) = values.iter().find(|&&n| n > l.max_candidates) {
                return Err(ApiError::out_of_range("max_candidates", what, n, l.max_candidates));
            }
        }
        if req.query_tokens > l.max_query_tokens {
            return Err(ApiError::too_large("max_query_tokens", "query_tokens", req.query_tokens, l.max_query_tokens));
        }
        // Like a search: within search_timeout_ms, its slot freed when it passes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(l.search_timeout_ms as u64);
        (req.max_candidates, req.deadline) = (Some(l.max_candidates), Some(deadline));
        self.read_until(Some(deadline), move || Ok(c.recall_curve(&req)?)).await
    }

    /// Changes a collection's tunable settings (`tessera::Settings::UPDATABLE`).
    pub async fn update_settings(&self, name: &str, settings: tessera::Settings) -> Result<CollectionInfo, ApiError> {
        let c = self.collection(name)?;
        self.write(move || {
            c.update_settings(&settings)?;
            Ok(CollectionInfo::of(&c))
        })
        .await
    }

    pub async fn compact(&self, name: &str) -> Result<CollectionInfo, ApiError> {
        let c = self.collection(name)?;
        self.write(move || {
            c.compact()?;
            Ok(CollectionInfo::of(&c))
        })
        .await
    }

    /// Writes a backup of the database to `<backup dir>/<name>` while writes
    /// go on (see `tessera::backup`). Shutdown waits for it like for a write.
    pub async fn backup(&self, req: BackupRequest) -> Result<tessera::BackupReport, ApiError> {
        let Some(dir) = self.backup_dir.clone() else {
            return Err(ApiError::bad_request(
                "this server takes no backups over the API: start it with --backup-dir DIR (or run `tessera backup`)",
            ));
        };
        let name = match req.name {
            Some(n) => n,
            None => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                format!("backup-{}-{:03}", now.as_secs(), now.subsec_millis())
            }
        };
        if !tessera::valid_name(&name) {
            return Err(ApiError::bad_request(format!(
                "invalid backup name {name:?}: use 1-64 characters from A-Z a-z 0-9 _ -"
            )));
        }
        let db = self.db.clone();
        self.write(move || Ok(db.backup(&dir.join(name))?)).await
    }

    /// The backups in `--backup-dir`, newest first (staging folders of
    /// backups in progress, hidden, are left out).
    pub async fn list_backups(&self) -> Result<serde_json::Value, ApiError> {
        let Some(dir) = self.backup_dir.clone() else {
            return Err(ApiError::bad_request(
                "this server takes no backups over the API: start it with --backup-dir DIR",
            ));
        };
        self.read(move || {
            let mut backups = Vec::new();
            let entries = match std::fs::read_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(serde_json::json!({ "backups": [] })),
                r => r.map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?,
            };
            for entry in entries {
                let Ok(entry) = entry else { continue };
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if name.starts_with('.') || !path.join("collections").is_dir() {
                    continue;
                }
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let mut collections: Vec<String> = std::fs::read_dir(path.join("collections"))
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.'))
                    .collect();
                collections.sort();
                backups.push(serde_json::json!({
                    "name": name, "modified": modified, "collections": collections, "bytes": folder_bytes(&path),
                }));
            }
            backups.sort_by_key(|b| std::cmp::Reverse(b["modified"].as_u64()));
            Ok(serde_json::json!({ "backups": backups }))
        })
        .await
    }

    /// Flushes every collection (at shutdown): the next start replays no WAL.
    pub fn flush_all(&self) -> Vec<(String, tessera::Error)> {
        let mut failed = Vec::new();
        for name in self.db.list_collections() {
            if let Ok(c) = self.db.collection(&name)
                && let Err(e) = c.flush()
            {
                failed.push((name, e));
            }
        }
        failed
    }
}

/// The bytes of every file under `dir`.
fn folder_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI's search body lists exactly the engine's options and the
    /// query fields; the proto's search message has a field for each option.
    #[test]
    fn every_interface_schema_has_the_engine_options() {
        let spec: serde_json::Value = serde_json::from_str(crate::http::OPENAPI).unwrap();
        let schema = &spec["components"]["schemas"]["SearchRequest"];
        let mut listed: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut want: Vec<&str> =
            SearchOptions::fields().iter().copied().chain(["tokens", "queries", "query_texts", "texts"]).collect();
        listed.sort();
        want.sort();
        assert_eq!(listed, want, "openapi.json's SearchRequest against tessera::SearchOptions");
        assert_eq!(schema["additionalProperties"], false);
        let proto = include_str!("../proto/tessera.proto");
        let message = proto.split("message SearchRequest {").nth(1).unwrap().split('}').next().unwrap();
        let proto_fields: Vec<&str> = message
            .lines()
            .filter_map(|l| l.split('=').next()?.split_whitespace().last())
            .filter(|f| !f.is_empty() && !f.starts_with("//"))
            .collect();
        for option in SearchOptions::fields() {
            let field = match *option {
                "filter" => "filter_json",
                "include_text" => "omit_text",
                "include_payload" => "omit_payload",
                o => o,
            };
            assert!(proto_fields.contains(&field), "tessera.proto's SearchRequest has no field for {option}");
        }
    }

    /// The OpenAPI's and the proto's settings are the engine's, name for name.
    #[test]
    fn every_interface_schema_has_the_engine_settings() {
        let spec: serde_json::Value = serde_json::from_str(crate::http::OPENAPI).unwrap();
        let schema = &spec["components"]["schemas"]["Settings"];
        let mut listed: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = tessera::Settings::names().to_vec();
        listed.sort();
        want.sort();
        assert_eq!(listed, want, "openapi.json's Settings against tessera::Settings");
        let proto = include_str!("../proto/tessera.proto");
        let message = proto.split("message CollectionSettings {").nth(1).unwrap().split('}').next().unwrap();
        let mut fields: Vec<&str> = message
            .lines()
            .filter_map(|l| l.split('=').next()?.split_whitespace().last())
            .filter(|f| !f.is_empty() && !f.starts_with("//"))
            .collect();
        fields.sort();
        assert_eq!(fields, want, "tessera.proto's CollectionSettings against tessera::Settings");
    }

    /// The body's own fields beside the options: unknown and repeated
    /// fields are refused as serde refuses them.
    #[test]
    fn a_search_body_reads_tokens_queries_and_the_options() {
        let r: SearchRequest = serde_json::from_str(r#"{"tokens": [[1, 0]], "k": 3, "filter": null}"#).unwrap();
        assert_eq!((r.tokens.map(|t| t.0.n_tokens()), r.options.k, r.options.filter), (Some(1), Some(3), None));
        let r: SearchRequest = serde_json::from_str(r#"{"queries": [[[1]], [[2]]], "text": "x"}"#).unwrap();
        assert_eq!((r.queries.map(|q| q.len()), r.options.text.as_deref()), (Some(2), Some("x")));
        // ids are read as ids (max_ids bounds them), not under the filter's bound on JSON values.
        let ids: Vec<String> = (0..tessera::MAX_FILTER_VALUES + 10).map(|i| format!("d{i}")).collect();
        let r: SearchRequest = serde_json::from_value(serde_json::json!({ "ids": ids, "k": 1 })).unwrap();
        assert_eq!(r.options.ids.len(), tessera::MAX_FILTER_VALUES + 10);
        for (body, says) in [
            (r#"{"tokens": [[1]], "kk": 3}"#, "unknown field `kk`"),
            (r#"{"k": 3, "k": 4}"#, "duplicate field `k`"),
            (r#"{"tokens": [[1]], "tokens": [[1]]}"#, "duplicate field `tokens`"),
            (r#"{"k": -1}"#, "invalid value"),
            (r#"{"k": 1.5}"#, "invalid value"),
            (r#"{"exact": 1}"#, "invalid type"),
            (r#"{"exact": "true"}"#, "invalid type"),
            (r#"{"queries": null, "queries": [[[1]]]}"#, "duplicate field `queries`"),
            (r#"[]"#, "invalid type"),
        ] {
            let e = serde_json::from_str::<SearchRequest>(body).unwrap_err().to_string();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn limits_are_validated() {
        assert!(Limits::default().validate().is_ok());
        let e = Limits { max_k: 0, ..Limits::default() }.validate().unwrap_err();
        assert!(e.contains("max_k"), "{e}");
        let e = Limits { max_candidates: tessera::MAX_K + 1, ..Limits::default() }.validate().unwrap_err();
        assert!(e.contains("max_candidates"), "{e}");
    }

    #[test]
    fn packed_tensors_are_checked_before_allocation() {
        let e = decode_tensor(DType::F16, &[u64::MAX, 2], &[]).unwrap_err();
        assert!(e.message.contains("more than 2^64"), "{}", e.message);
        let e = decode_tensor(DType::F32, &[1, 2], &[0; 7]).unwrap_err();
        assert!(e.message.contains("needs 8"), "{}", e.message);
        let t = decode_tensor(DType::F32, &[1, 2], &[0, 0, 128, 63, 0, 0, 0, 64]).unwrap();
        assert_eq!(t, Tokens::F32 { data: vec![1.0, 2.0], dim: 2 });
        assert_eq!(t.n_tokens(), 1);
    }
}
