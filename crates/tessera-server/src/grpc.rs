//! The gRPC adapter (tonic). The service definition is `proto/tessera.proto`,
//! compiled at build time by protox (no system `protoc`).

use crate::auth::{Access, credential};
use crate::error::ApiError;
use crate::pb;
use crate::service::{
    self, BatchResult, CollectionInfo, CollectionSpec, DType, SearchRequest, SearchResponse, Service, Tensor,
    decode_tensor, f16_bytes,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tessera::{Document, SearchOptions, SourceRank, Tokens};
use tonic::{Request, Response, Status};

/// The gRPC service over the shared service layer.
pub struct Grpc {
    s: Arc<Service>,
}

impl Grpc {
    pub fn new(s: Arc<Service>) -> Self {
        Self { s }
    }

    /// The tonic server for this service, with the message size limit.
    pub fn server(s: Arc<Service>) -> pb::tessera_server::TesseraServer<Grpc> {
        let max = s.limits.max_body_bytes;
        pb::tessera_server::TesseraServer::new(Grpc::new(s))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX)
    }
}

/// Checks the API key from the request headers before tonic reads and
/// decodes the message, so that an unauthenticated client cannot make the
/// server buffer messages. (Each rpc checks again: defence in depth.)
#[derive(Clone)]
pub struct AuthLayer(pub Arc<Service>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, s: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    s: Arc<Service>,
}

/// Each rpc's bounds from its connection's side: it counts as in flight on
/// its connection (which is not idle meanwhile), and its message is read
/// under `body_timeout_ms`, `max_receiving_bytes` and its per-address share (`conn::Metered`).
#[derive(Clone)]
pub struct ConnLayer(pub Arc<Service>);

impl<S> tower::Layer<S> for ConnLayer {
    type Service = Conn<S>;

    fn layer(&self, inner: S) -> Conn<S> {
        Conn { inner, s: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Conn<S> {
    inner: S,
    s: Arc<Service>,
}

impl<S> tower::Service<axum::http::Request<tonic::body::Body>> for Conn<S>
where
    S: tower::Service<axum::http::Request<tonic::body::Body>, Response = axum::http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<tonic::body::Body>) -> Self::Future {
        let info = req.extensions().get::<crate::conn::GrpcConnInfo>();
        let in_flight = info.map(|c| c.activity.begin());
        let ip = info.map(|c| c.remote.ip());
        let timeout = std::time::Duration::from_millis(self.s.limits.body_timeout_ms as u64);
        let budget = self.s.receiving.clone();
        let refuse = |e: ApiError| -> Box<dyn std::error::Error + Send + Sync> { Box::new(Status::from(e)) };
        let req = req.map(|b| tonic::body::Body::new(crate::conn::Metered::new(b, budget, ip, Some(timeout), refuse)));
        let fut = self.inner.call(req);
        Box::pin(async move {
            // In flight until the answer has been sent whole.
            let resp = fut.await?;
            Ok(resp.map(|b| tonic::body::Body::new(crate::conn::Guarded::new(b, in_flight))))
        })
    }
}

/// The access an rpc needs, from its path `/tessera.v1.Tessera/Method`.
fn access_of(path: &str) -> Option<Access> {
    match path.rsplit('/').next().unwrap_or("") {
        "Health" => None,
        "ListCollections" | "GetCollection" | "Get" | "Scan" | "Count" | "Search" | "SearchBatch" | "Rerank"
        | "Encode" | "GetReindex" | "RecallCurve" => Some(Access::Read),
        _ => Some(Access::Write),
    }
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<axum::http::Request<B>> for Auth<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let header = |name| req.headers().get(name).map(|v| v.to_str().unwrap_or(""));
        let key = credential(header("authorization"), header("x-api-key"));
        let denied = access_of(req.uri().path()).and_then(|need| self.s.authorize(key, need).err());
        match denied {
            Some(e) => {
                // Metrics labels only from the service's own rpc names.
                let name = req.uri().path().rsplit('/').next().unwrap_or("");
                let rpc = KNOWN_RPCS.iter().find(|r| **r == name).copied().unwrap_or("unknown");
                self.s.metrics.observe("grpc", rpc, &format!("{:?}", e.grpc_code()), std::time::Duration::ZERO);
                Box::pin(std::future::ready(Ok(Status::from(e).into_http())))
            }
            None => {
                let (s, path, start) = (self.s.clone(), req.uri().path().to_string(), Instant::now());
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let mut resp = fut.await?;
                    bad_message_status(&s, &path, start, &mut resp);
                    Ok(resp)
                })
            }
        }
    }
}

/// tonic answers a request whose bytes are not a valid message of the rpc's
/// type (random bytes, a truncated message, a bad varint, a string that is
/// not UTF-8, nesting past the recursion limit) with INTERNAL, before any
/// rpc runs. Bad input is INVALID_ARGUMENT here, counted in `/metrics` and
/// logged like every other bad request.
fn bad_message_status(s: &Service, path: &str, start: Instant, resp: &mut axum::http::Response<tonic::body::Body>) {
    let Some(st) = Status::from_header_map(resp.headers()) else { return };
    if st.code() != tonic::Code::Internal || !st.message().starts_with("failed to decode Protobuf message") {
        return;
    }
    let name = path.rsplit('/').next().unwrap_or("");
    let rpc = KNOWN_RPCS.iter().find(|r| **r == name).copied().unwrap_or("unknown");
    let reason = st.message().trim_start_matches("failed to decode Protobuf message: ");
    let bad = Status::invalid_argument(format!("the {rpc} request is not a valid protobuf message: {reason}"));
    let (code, elapsed) = (tonic::Code::InvalidArgument, start.elapsed());
    s.metrics.observe("grpc", rpc, &format!("{code:?}"), elapsed);
    tracing::debug!(rpc, ?code, ms = elapsed.as_secs_f64() * 1e3, error = bad.message(), "request");
    let h = resp.headers_mut();
    h.remove("grpc-status");
    h.remove("grpc-message");
    let _ = bad.add_header(h);
}

const KNOWN_RPCS: [&str; 20] = [
    "Health",
    "ListCollections",
    "CreateCollection",
    "DropCollection",
    "GetCollection",
    "Upsert",
    "Delete",
    "Get",
    "Scan",
    "Count",
    "Search",
    "SearchBatch",
    "Rerank",
    "Flush",
    "Compact",
    "UpdateSettings",
    "RecallCurve",
    "Encode",
    "Reindex",
    "GetReindex",
];

/// tonic rejects a message over the size limit with OUT_OF_RANGE and its own
/// wording; this maps that answer to RESOURCE_EXHAUSTED naming our limit,
/// like every other size limit.
pub fn body_limit_status(
    max: usize,
) -> impl Fn(axum::http::Response<tonic::body::Body>) -> axum::http::Response<tonic::body::Body> + Clone {
    move |mut resp| {
        if let Some(st) = Status::from_header_map(resp.headers())
            && st.code() == tonic::Code::OutOfRange
            && st.message().contains("message length too large")
        {
            let found = st.message().split("found ").nth(1).and_then(|s| s.split(' ').next()).unwrap_or("?");
            let named = Status::resource_exhausted(format!(
                "the request message is {found} bytes, over the limit max_body_bytes = {max} [limit max_body_bytes]"
            ));
            let h = resp.headers_mut();
            h.remove("grpc-status");
            h.remove("grpc-message");
            let _ = named.add_header(h);
        }
        resp
    }
}

impl Grpc {
    /// Authorises, runs, and records metrics for one call.
    async fn call<Q, R, F, Fut>(
        &self,
        rpc: &'static str,
        need: Option<Access>,
        req: Request<Q>,
        f: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(Arc<Service>, Q) -> Fut,
        Fut: Future<Output = Result<R, ApiError>>,
    {
        let start = Instant::now();
        let _in_flight = self.s.metrics.start();
        let md = req.metadata();
        let header = |name| md.get(name).map(|v: &tonic::metadata::MetadataValue<_>| v.to_str().unwrap_or(""));
        let key = credential(header("authorization"), header("x-api-key"));
        let authorized = match need {
            Some(need) => self.s.authorize(key, need),
            None => Ok(()),
        };
        let result = match authorized {
            Ok(()) => f(self.s.clone(), req.into_inner()).await,
            Err(e) => Err(e),
        };
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.grpc_code(),
        };
        let elapsed = start.elapsed();
        self.s.metrics.observe("grpc", rpc, &format!("{code:?}"), elapsed);
        if let Err(e) = &result {
            e.log_if_internal(rpc);
        }
        tracing::debug!(rpc, ?code, ms = elapsed.as_secs_f64() * 1e3, "request");
        result.map(Response::new).map_err(Status::from)
    }
}

fn tensor(t: Option<pb::Tensor>, what: &str) -> Result<Tokens, ApiError> {
    let t = t.ok_or_else(|| ApiError::bad_request(format!("{what} is required")))?;
    let dtype = match pb::Dtype::try_from(t.dtype) {
        Ok(pb::Dtype::F32) => DType::F32,
        Ok(pb::Dtype::F16) => DType::F16,
        _ => return Err(ApiError::bad_request(format!("{what}: dtype must be DTYPE_F32 or DTYPE_F16"))),
    };
    decode_tensor(dtype, &t.shape, &t.data).map_err(|e| ApiError { message: format!("{what}: {}", e.message), ..e })
}

/// JSON text of a filter or payload, read with the same bound on its size as over HTTP.
fn json(s: &str, what: &str) -> Result<serde_json::Value, ApiError> {
    serde_json::from_str::<service::Bounded>(s)
        .map(|b| b.0)
        .map_err(|e| ApiError::bad_request(format!("{what} is not valid JSON: {e}")))
}

/// A setting named in a string field: empty means its default.
fn setting<T: std::str::FromStr<Err = tessera::UnknownName> + Default>(s: &str) -> Result<T, ApiError> {
    if s.is_empty() { Ok(T::default()) } else { Ok(s.parse()?) }
}

/// A `filter_json` field as JSON (unset or "null": no filter, as the service reads it).
fn filter_of(f: Option<&str>) -> Result<Option<serde_json::Value>, ApiError> {
    f.map(|f| json(f, "filter_json")).transpose()
}

/// A stored document as the wire's, with its tokens (f16, as stored) when asked for.
fn document(d: tessera::StoredDocument, tokens: bool) -> pb::Document {
    pb::Document {
        tokens: tokens.then(|| pb::Tensor {
            dtype: pb::Dtype::F16.into(),
            shape: vec![d.n_tokens as u64, d.dim as u64],
            data: f16_bytes(&d.tokens),
        }),
        id: d.id,
        text: d.text,
        payload_json: d.payload.as_ref().map(ToString::to_string),
    }
}

/// The engine's settings from their message (field for field).
fn settings_of(p: pb::CollectionSettings) -> tessera::Settings {
    tessera::Settings {
        memtable_bytes: p.memtable_bytes,
        max_segments: p.max_segments,
        max_batch_bytes: p.max_batch_bytes,
        pool_factor: p.pool_factor,
        hnsw_m: p.hnsw_m,
        hnsw_ef_construction: p.hnsw_ef_construction,
        centroids_k: p.centroids_k,
        default_nprobe: p.default_nprobe,
        min_train_tokens: p.min_train_tokens,
        train_iterations: p.train_iterations,
        drift: p.drift,
        expected_tokens: p.expected_tokens,
    }
}

fn pb_settings(s: tessera::Settings) -> pb::CollectionSettings {
    pb::CollectionSettings {
        memtable_bytes: s.memtable_bytes,
        max_segments: s.max_segments,
        max_batch_bytes: s.max_batch_bytes,
        pool_factor: s.pool_factor,
        hnsw_m: s.hnsw_m,
        hnsw_ef_construction: s.hnsw_ef_construction,
        centroids_k: s.centroids_k,
        default_nprobe: s.default_nprobe,
        min_train_tokens: s.min_train_tokens,
        train_iterations: s.train_iterations,
        drift: s.drift,
        expected_tokens: s.expected_tokens,
    }
}

fn info(c: CollectionInfo) -> pb::CollectionInfo {
    let s = c.stats;
    pb::CollectionInfo {
        name: s.name,
        dim: s.dim as u32,
        index: s.index.into(),
        text: c.text.to_string(),
        durability: c.durability.to_string(),
        documents: s.documents as u64,
        tokens: s.tokens as u64,
        given_tokens: s.given_tokens as u64,
        keep: s.keep.into(),
        kept_bytes_per_token: s.kept_bytes_per_token,
        segments: s.segments as u64,
        memtable_documents: s.memtable_documents as u64,
        deleted_in_segments: s.deleted_in_segments as u64,
        bytes_on_disk: s.bytes_on_disk,
        last_flush_error: s.last_flush_error,
        storage: s.storage.into(),
        screening: s.screening.into(),
        bytes_per_token: s.bytes_per_token as u32,
        index_bytes_per_token: s.index_bytes_per_token,
        centroids: s.centroids.map(|k| k as u32),
        ranking_json: serde_json::to_string(&s.ranking).expect("a ranking serialises"),
        model_json: c.model.map(|m| serde_json::to_string(&m).expect("an identity serialises")),
        wal_tails_cut: s.wal_tails_cut,
        quarantine: s.quarantine,
        settings: Some(pb_settings(c.settings)),
    }
}

fn reindex_status(r: service::ReindexStatus) -> pb::ReindexStatus {
    pb::ReindexStatus {
        state: r.state.into(),
        model: r.model,
        done: r.done as u64,
        total: r.total as u64,
        documents: r.documents.map(|n| n as u64),
        caught_up: r.caught_up.map(|n| n as u64),
        truncated: r.truncated.map(|n| n as u64),
        seconds: r.seconds,
        error: r.error,
    }
}

fn hit(h: service::Hit) -> pb::Hit {
    pb::Hit {
        id: h.id,
        score: h.score,
        text: h.text,
        payload_json: h.payload.as_ref().map(ToString::to_string),
        fused: h.fused,
        sources: h
            .sources
            .into_iter()
            .map(|SourceRank { source, rank, score }| pb::SourceRank {
                source: source.to_string(),
                rank: rank as u32,
                score,
            })
            .collect(),
        components: h
            .components
            .into_iter()
            .map(|c| pb::Component {
                signal: c.signal.to_string(),
                raw: c.raw,
                value: c.value,
                normalized: c.normalized,
                weight: c.weight,
            })
            .collect(),
    }
}

/// The service's request for a gRPC search (its tokens, if any, are the query).
/// The client's deadline from the standard `grpc-timeout` header, if sent:
/// 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(md: &tonic::metadata::MetadataMap) -> Result<Option<std::time::Duration>, ApiError> {
    use std::time::Duration;
    let Some(v) = md.get("grpc-timeout") else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request(format!("grpc-timeout {v:?}: expected 1 to 8 digits and a unit (H M S m u n)"));
    let s = v.to_str().map_err(|_| bad())?;
    let digits = s.get(..s.len().saturating_sub(1)).ok_or_else(bad)?;
    if !(1..=8).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(Some(match &s[digits.len()..] {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    }))
}

/// Stops the search at the client's deadline when it comes before the
/// request's `timeout_ms` (or the server's default). A deadline past the
/// server's most (`search_timeout_ms`) is cut to it: the header states when
/// the client stops waiting, not a request for more time.
fn with_client_deadline(mut r: SearchRequest, deadline: Option<std::time::Duration>, most: usize) -> SearchRequest {
    if let Some(d) = deadline {
        let ms = usize::try_from(d.as_millis()).unwrap_or(usize::MAX).clamp(1, most);
        r.options.timeout_ms = Some(match r.options.timeout_ms {
            // A `timeout_ms` beyond the limit is still refused as out of range.
            Some(t) if t > most => t,
            Some(t) => t.min(ms),
            None => ms,
        });
    }
    r
}

/// The one conversion of a gRPC search: its query, if any, and its options
/// (the proto's fields are [`SearchOptions`]' names; `k` 0 means the default,
/// `omit_*` are the include flags inverted).
fn search_request(r: pb::SearchRequest) -> Result<SearchRequest, ApiError> {
    let fusion = match pb::Fusion::try_from(r.fusion) {
        Ok(pb::Fusion::Unspecified) => None,
        Ok(pb::Fusion::Rrf) => Some(tessera::FusionKind::Rrf),
        Ok(pb::Fusion::Weighted) => Some(tessera::FusionKind::Weighted),
        Err(_) => return Err(ApiError::bad_request(format!("unknown fusion {}", r.fusion))),
    };
    let mut o = SearchOptions::default();
    o.weights =
        r.weights.into_iter().map(|(k, w)| Ok((k.parse::<tessera::Source>()?, w))).collect::<Result<_, ApiError>>()?;
    o.rank_weights = r
        .rank_weights
        .into_iter()
        .map(|(k, w)| Ok((k.parse::<tessera::Signal>()?, w)))
        .collect::<Result<_, ApiError>>()?;
    o.k = (r.k != 0).then_some(r.k as usize);
    (o.candidates, o.ef) = (r.candidates.map(|c| c as usize), r.ef.map(|c| c as usize));
    (o.nprobe, o.rerank) = (r.nprobe.map(|c| c as usize), r.rerank.map(|c| c as usize));
    o.timeout_ms = r.timeout_ms.map(|t| t as usize);
    o.exact = r.exact;
    o.filter = r.filter_json.as_deref().map(|f| json(f, "filter_json")).transpose()?;
    (o.text, o.ids, o.vector, o.rerank_only) = (r.text, r.ids, r.vector, r.rerank_only);
    o.query_text = r.query_text;
    (o.fusion, o.rrf_k0) = (fusion, r.rrf_k0);
    o.rank = r.rank.as_deref().map(str::parse).transpose()?;
    o.rank_norm = r.rank_norm.as_deref().map(str::parse).transpose()?;
    (o.include_text, o.include_payload) = (!r.omit_text, !r.omit_payload);
    Ok(SearchRequest {
        tokens: r.query.map(|q| tensor(Some(q), "query").map(Tensor)).transpose()?,
        queries: None,
        query_texts: None,
        texts: None,
        options: o,
    })
}

fn response(out: SearchResponse) -> pb::SearchResponse {
    pb::SearchResponse {
        mode: out.mode.into(),
        hits: out.hits.into_iter().map(hit).collect(),
        candidates: out.candidates.map(|n| n as u32),
    }
}

#[tonic::async_trait]
impl pb::tessera_server::Tessera for Grpc {
    async fn health(&self, req: Request<pb::HealthRequest>) -> Result<Response<pb::HealthResponse>, Status> {
        self.call("Health", None, req, |s, _| async move {
            let h = s.health();
            Ok(pb::HealthResponse {
                status: h.status.into(),
                version: h.version.into(),
                collections: h.collections as u64,
            })
        })
        .await
    }

    async fn list_collections(
        &self,
        req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        self.call("ListCollections", Some(Access::Read), req, |s, _| async move {
            let collections = s.list_collections().await?.into_iter().map(info).collect();
            Ok(pb::ListCollectionsResponse { collections })
        })
        .await
    }

    async fn create_collection(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        self.call("CreateCollection", Some(Access::Write), req, |s, r| async move {
            let spec = CollectionSpec {
                name: r.name,
                dim: Some(r.dim as usize).filter(|&d| d > 0 || r.model.is_none()),
                model: r.model,
                index: setting(&r.index)?,
                text: setting(&r.text)?,
                durability: setting(&r.durability)?,
                storage: setting(&r.storage)?,
                screening: setting(&r.screening)?,
                keep: setting(&r.keep)?,
                settings: r.settings.map(settings_of),
                if_not_exists: r.if_not_exists,
            };
            Ok(info(s.create_collection(spec).await?.0))
        })
        .await
    }

    async fn drop_collection(
        &self,
        req: Request<pb::CollectionRequest>,
    ) -> Result<Response<pb::DropCollectionResponse>, Status> {
        self.call("DropCollection", Some(Access::Write), req, |s, r| async move {
            s.drop_collection(&r.collection).await?;
            Ok(pb::DropCollectionResponse {})
        })
        .await
    }

    async fn get_collection(
        &self,
        req: Request<pb::CollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        self.call("GetCollection", Some(Access::Read), req, |s, r| async move {
            Ok(info(s.collection_info(&r.collection).await?))
        })
        .await
    }

    async fn upsert(&self, req: Request<pb::UpsertRequest>) -> Result<Response<pb::UpsertResponse>, Status> {
        self.call("Upsert", Some(Access::Write), req, |s, r| async move {
            let mut docs = Vec::with_capacity(r.documents.len());
            for d in r.documents {
                let what = format!("document {:?} tokens", d.id);
                // No tokens: the collection's model encodes the text.
                let tokens = match d.tokens {
                    None => Tokens::F32 { data: Vec::new(), dim: 0 },
                    t => tensor(t, &what)?,
                };
                let payload = match d.payload_json {
                    Some(p) => Some(json(&p, &format!("document {:?} payload_json", d.id))?).filter(|p| !p.is_null()),
                    None => None,
                };
                docs.push(Document { id: d.id, tokens, text: d.text, payload });
            }
            let options = tessera::UpsertOptions { pool_factor: r.pool_factor };
            Ok(pb::UpsertResponse { upserted: s.upsert(&r.collection, docs, options).await? as u64 })
        })
        .await
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        self.call("Delete", Some(Access::Write), req, |s, r| async move {
            Ok(pb::DeleteResponse { deleted: s.delete(&r.collection, r.ids).await? as u64 })
        })
        .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.call("Get", Some(Access::Read), req, |s, r| async move {
            let g = s.get(&r.collection, r.ids, if r.omit_tokens { 0 } else { 2 }).await?;
            let documents = g.documents.into_iter().map(|d| document(d, !r.omit_tokens)).collect();
            Ok(pb::GetResponse { documents, missing: g.missing })
        })
        .await
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        self.call("Scan", Some(Access::Read), req, |s, r| async move {
            let filter = filter_of(r.filter_json.as_deref())?;
            let limit = r.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            let p = s.scan(&r.collection, filter, r.after, limit, if r.with_tokens { 2 } else { 0 }).await?;
            let documents = p.documents.into_iter().map(|d| document(d, r.with_tokens)).collect();
            Ok(pb::ScanResponse { documents, next: p.next })
        })
        .await
    }

    async fn count(&self, req: Request<pb::CountRequest>) -> Result<Response<pb::CountResponse>, Status> {
        self.call("Count", Some(Access::Read), req, |s, r| async move {
            let n = s.count(&r.collection, filter_of(r.filter_json.as_deref())?).await?;
            Ok(pb::CountResponse { count: n as u64 })
        })
        .await
    }

    async fn search(&self, req: Request<pb::SearchRequest>) -> Result<Response<pb::SearchResponse>, Status> {
        let deadline = grpc_timeout(req.metadata());
        self.call("Search", Some(Access::Read), req, |s, r| async move {
            let name = r.collection.clone();
            let req = with_client_deadline(search_request(r)?, deadline?, s.limits.search_timeout_ms);
            Ok(response(s.search(&name, req).await?))
        })
        .await
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let deadline = grpc_timeout(req.metadata());
        self.call("SearchBatch", Some(Access::Read), req, |s, r| async move {
            let deadline = deadline?;
            let search = r.search.unwrap_or_default();
            if search.query.is_some() {
                return Err(ApiError::bad_request("search.query must be unset in a batch: give the queries"));
            }
            let name = search.collection.clone();
            let mut req = with_client_deadline(search_request(search)?, deadline, s.limits.search_timeout_ms);
            if r.query_texts.is_empty() || !r.queries.is_empty() {
                req.queries = Some(
                    r.queries
                        .into_iter()
                        .enumerate()
                        .map(|(i, q)| tensor(Some(q), &format!("queries[{i}]")).map(Tensor))
                        .collect::<Result<_, _>>()?,
                );
            }
            req.query_texts = Some(r.query_texts).filter(|t| !t.is_empty());
            req.texts = Some(r.texts).filter(|t| !t.is_empty());
            let out = s.search_batch(&name, req).await?;
            let results = out
                .results
                .into_iter()
                .map(|r| pb::SearchResult {
                    result: Some(match r {
                        BatchResult::Ok(r) => pb::search_result::Result::Response(response(r)),
                        BatchResult::Err { error } => pb::search_result::Result::Error(pb::QueryError {
                            code: ApiError::new(error.code, "").grpc_code() as u32,
                            message: error.message,
                            limit: error.limit.map(String::from),
                        }),
                    }),
                })
                .collect();
            Ok(pb::SearchBatchResponse { results })
        })
        .await
    }

    async fn rerank(&self, req: Request<pb::RerankRequest>) -> Result<Response<pb::RerankResponse>, Status> {
        self.call("Rerank", Some(Access::Read), req, |s, r| async move {
            let tokens = r.query.map(|q| tensor(Some(q), "query")).transpose()?;
            let query = crate::service::Query::of(tokens, r.query_text)?;
            let out = s.rerank(&r.collection, query, r.ids, !r.omit_text, !r.omit_payload).await?;
            Ok(pb::RerankResponse { hits: out.hits.into_iter().map(hit).collect(), missing: out.missing })
        })
        .await
    }

    async fn flush(&self, req: Request<pb::CollectionRequest>) -> Result<Response<pb::CollectionInfo>, Status> {
        self.call("Flush", Some(Access::Write), req, |s, r| async move { Ok(info(s.flush(&r.collection).await?)) })
            .await
    }

    async fn compact(&self, req: Request<pb::CollectionRequest>) -> Result<Response<pb::CollectionInfo>, Status> {
        self.call("Compact", Some(Access::Write), req, |s, r| async move { Ok(info(s.compact(&r.collection).await?)) })
            .await
    }

    async fn update_settings(
        &self,
        req: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        self.call("UpdateSettings", Some(Access::Write), req, |s, r| async move {
            let settings = r.settings.map(settings_of).unwrap_or_default();
            Ok(info(s.update_settings(&r.collection, settings).await?))
        })
        .await
    }

    async fn recall_curve(&self, req: Request<pb::RecallRequest>) -> Result<Response<pb::RecallCurveResponse>, Status> {
        self.call("RecallCurve", Some(Access::Read), req, |s, r| async move {
            let d = tessera::CurveRequest::default();
            let or = |v: u32, default: usize| if v == 0 { default } else { v as usize };
            let list = |v: Vec<u64>| v.into_iter().map(|x| x as usize).collect();
            let req = tessera::CurveRequest {
                sample: or(r.sample, d.sample),
                k: or(r.k, d.k),
                candidates: list(r.candidates),
                nprobe: list(r.nprobe),
                rerank: list(r.rerank),
                query_tokens: or(r.query_tokens, d.query_tokens),
                seed: r.seed,
                ..d
            };
            let c = s.recall_curve(&r.collection, req).await?;
            Ok(pb::RecallCurveResponse {
                k: c.k as u32,
                queries: c.queries,
                query_tokens: c.query_tokens as u32,
                documents: c.documents as u64,
                exact_p50_ms: c.exact_p50_ms,
                exact_mean_ms: c.exact_mean_ms,
                points: c
                    .points
                    .into_iter()
                    .map(|p| pb::RecallPoint {
                        candidates: p.candidates as u64,
                        nprobe: p.nprobe.map(|n| n as u64),
                        rerank: p.rerank.map(|n| n as u64),
                        recall: p.recall,
                        p50_ms: p.p50_ms,
                        mean_ms: p.mean_ms,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn encode(&self, req: Request<pb::EncodeRequest>) -> Result<Response<pb::EncodeResponse>, Status> {
        self.call("Encode", Some(Access::Read), req, |s, r| async move {
            let model = match r.model {
                Some(pb::encode_request::Model::ModelName(m)) => service::ModelRef::Named(m),
                Some(pb::encode_request::Model::Collection(c)) => service::ModelRef::Collection(c),
                None => return Err(ApiError::bad_request("model_name or collection is required")),
            };
            let vectors = s
                .encode(model, r.texts, r.is_query)
                .await?
                .into_iter()
                .map(|(values, dim)| pb::Tensor {
                    dtype: pb::Dtype::F16 as i32,
                    shape: vec![(values.len() / dim.max(1)) as u64, dim as u64],
                    data: service::f16_bytes(&values),
                })
                .collect();
            Ok(pb::EncodeResponse { vectors })
        })
        .await
    }

    async fn reindex(&self, req: Request<pb::ReindexRequest>) -> Result<Response<pb::ReindexStatus>, Status> {
        self.call("Reindex", Some(Access::Write), req, |s, r| async move {
            Ok(reindex_status(s.start_reindex(&r.collection, &r.model)?))
        })
        .await
    }

    async fn get_reindex(&self, req: Request<pb::CollectionRequest>) -> Result<Response<pb::ReindexStatus>, Status> {
        self.call("GetReindex", Some(Access::Read), req, |s, r| async move {
            Ok(reindex_status(s.reindex_status(&r.collection)?))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parsed(v: &str) -> Result<Option<Duration>, ApiError> {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("grpc-timeout", v.parse().unwrap());
        grpc_timeout(&md)
    }

    #[test]
    fn grpc_timeout_headers_follow_the_grpc_http2_spec() {
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()).unwrap(), None);
        for (v, d) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("7n", Duration::from_nanos(7)),
        ] {
            assert_eq!(parsed(v).unwrap(), Some(d), "{v}");
        }
        for v in ["", "m", "5", "5x", "123456789m", "-5m", "5 m", "1.5S"] {
            assert!(parsed(v).is_err(), "{v:?} is refused");
        }
        let cut = with_client_deadline(SearchRequest::default(), Some(Duration::from_secs(3600)), 60_000);
        assert_eq!(cut.options.timeout_ms, Some(60_000), "cut to the server's most");
        let mut req = SearchRequest::default();
        req.options.timeout_ms = Some(20);
        assert_eq!(
            with_client_deadline(req.clone(), Some(Duration::from_micros(10)), 60_000).options.timeout_ms,
            Some(1)
        );
        assert_eq!(with_client_deadline(req, Some(Duration::from_secs(1)), 60_000).options.timeout_ms, Some(20));
    }

    #[test]
    fn every_rpc_needs_the_access_its_http_route_needs() {
        let reads = [
            "ListCollections",
            "GetCollection",
            "Get",
            "Scan",
            "Count",
            "Search",
            "SearchBatch",
            "Rerank",
            "Encode",
            "GetReindex",
            "RecallCurve",
        ];
        for rpc in KNOWN_RPCS {
            let want = match rpc {
                "Health" => None,
                r if reads.contains(&r) => Some(Access::Read),
                _ => Some(Access::Write),
            };
            assert_eq!(access_of(&format!("/tessera.v1.Tessera/{rpc}")), want, "{rpc}");
        }
        assert_eq!(access_of("/tessera.v1.Tessera/Unknown"), Some(Access::Write));
        // The list is the service's: the generated server has these methods.
        let proto = include_str!("../proto/tessera.proto");
        let rpcs = proto.lines().filter(|l| l.trim_start().starts_with("rpc ")).count();
        assert_eq!(rpcs, KNOWN_RPCS.len());
        for rpc in KNOWN_RPCS {
            assert!(proto.contains(&format!("rpc {rpc}(")), "{rpc}");
        }
    }
}
