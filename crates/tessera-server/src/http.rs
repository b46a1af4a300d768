//! The JSON HTTP adapter (axum). Routes are listed in [`router`] and
//! documented in `openapi.json` (served at `/openapi.json`).
//!
//! Every error is JSON, `{"error": {"code", "message", "limit"?}}`, with the
//! status of its [`ErrorKind`](crate::error::ErrorKind): bodies are parsed by
//! our own extractor so that malformed JSON, wrong types and oversize bodies
//! get the same shape as every other error.

use crate::auth::{Access, credential};
use crate::error::{ApiError, ErrorBody, ErrorDetail, ErrorKind};
use crate::service::{BackupRequest, CollectionSpec, ModelRef, SearchRequest, Service, Tensor, f16_bytes};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera::{Document, StoredDocument};

/// The OpenAPI 3 description of this adapter.
pub const OPENAPI: &str = include_str!("../openapi.json");

type AppState = Arc<Service>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_if_internal("http");
        let message = self.short_message();
        let body = ErrorBody { error: ErrorDetail { code: self.kind, message: &message, limit: self.limit } };
        let mut r = (self.http_status(), axum::Json(body)).into_response();
        if self.kind == ErrorKind::Unauthenticated {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// The HTTP router over a service.
pub fn router(service: Arc<Service>) -> Router {
    let limit = service.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/", get(|| async { axum::response::Redirect::to("/console") }))
        .route("/console", get(console_page))
        .route("/console/{asset}", get(console_asset))
        .route("/v1/access", get(access))
        .route("/v1/collections", get(list_collections).post(create_collection))
        .route("/v1/collections/{name}", get(collection_info).delete(drop_collection))
        .route("/v1/collections/{name}/upsert", post(upsert))
        .route("/v1/collections/{name}/delete", post(delete))
        .route("/v1/collections/{name}/get", post(get_documents))
        .route("/v1/collections/{name}/scan", post(scan))
        .route("/v1/collections/{name}/count", post(count))
        .route("/v1/collections/{name}/search", post(search))
        .route("/v1/collections/{name}/rerank", post(rerank))
        .route("/v1/collections/{name}/encode", post(encode))
        .route("/v1/collections/{name}/reindex", get(reindex_status).post(reindex))
        .route("/v1/collections/{name}/mine_negatives", post(mine_negatives))
        .route("/v1/encode", post(encode_by_model))
        .route("/v1/models", get(models))
        .route("/v1/limits", get(limits))
        .route("/v1/collections/{name}/flush", post(flush))
        .route("/v1/collections/{name}/compact", post(compact))
        .route("/v1/collections/{name}/settings", post(update_settings))
        .route("/v1/collections/{name}/recall", post(recall_curve))
        .route("/v1/backup", post(backup))
        .route("/v1/backups", get(list_backups))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(service.clone(), observe))
        .layer(middleware::map_request_with_state(service.clone(), metered))
        .layer(middleware::from_fn(same_origin))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(service)
}

/// Refuses a request a browser sent from another site's page (its `Origin`
/// is not this server): a web page could otherwise write to a server on
/// loopback without keys. Clients that are not browsers send no `Origin`;
/// the console's own requests carry this server's. Reads (GET, HEAD) pass.
async fn same_origin(req: Request, next: Next) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let authority = origin.to_str().unwrap_or("").split_once("://").map_or("", |(_, a)| a);
        if authority != host {
            let e = ApiError::new(
                ErrorKind::PermissionDenied,
                format!("a browser request from another origin ({}) is refused", origin.to_str().unwrap_or("?")),
            );
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Counts a request body's bytes against `max_receiving_bytes` and the
/// client address's share while it is received (its time is bounded where it
/// is read: `Json`).
async fn metered(State(s): State<AppState>, req: Request) -> Request {
    let refuse = |e: ApiError| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) };
    let ip = req.extensions().get::<crate::conn::ClientAddress>().map(|a| a.0);
    req.map(|b| axum::body::Body::new(crate::conn::Metered::new(b, s.receiving.clone(), ip, None, refuse)))
}

/// Records metrics and a log line for every request (never its headers).
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let _in_flight = s.metrics.start();
    let method = req.method().clone();
    // Labels come only from our routes and the standard methods, so clients
    // cannot grow the metrics without bound.
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) => {
            let m = match method {
                Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::PATCH | Method::HEAD => {
                    method.as_str()
                }
                _ => "OTHER",
            };
            format!("{m} {}", p.as_str())
        }
        None => "unmatched".to_string(),
    };
    let response = next.run(req).await;
    let status = response.status();
    let elapsed = start.elapsed();
    s.metrics.observe("http", &route, status.as_str(), elapsed);
    if status.is_server_error() {
        tracing::warn!(%route, status = status.as_u16(), ms = elapsed.as_secs_f64() * 1e3, "request failed");
    } else {
        tracing::debug!(%route, status = status.as_u16(), ms = elapsed.as_secs_f64() * 1e3, "request");
    }
    response
}

/// Checks the request's API key: `Authorization: Bearer KEY` or `x-api-key: KEY`.
struct Authorized<const WRITE: bool>;

impl<const WRITE: bool> FromRequestParts<AppState> for Authorized<WRITE> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let header = |name: &str| parts.headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap_or(""));
        let key = credential(header("authorization"), header("x-api-key"));
        s.authorize(key, if WRITE { Access::Write } else { Access::Read })?;
        Ok(Self)
    }
}

type Read = Authorized<false>;
type Write = Authorized<true>;

/// The `{name}` path parameter.
struct Name(String);

impl FromRequestParts<AppState> for Name {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, s).await {
            Ok(Path(name)) => Ok(Self(name)),
            Err(e) => Err(ApiError::bad_request(format!("collection name in the path: {}", e.body_text()))),
        }
    }
}

/// Bodies up to this size are parsed where they arrive.
const INLINE_PARSE_BYTES: usize = 64 << 10;

/// A JSON body, within `max_body_bytes`, with serde's message on failure.
struct Json<T>(T);

impl<T: DeserializeOwned + Send + 'static> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &AppState) -> Result<Self, ApiError> {
        let ms = s.limits.body_timeout_ms;
        let read = tokio::time::timeout(Duration::from_millis(ms as u64), Bytes::from_request(req, s)).await;
        let Ok(read) = read else {
            return Err(ApiError {
                kind: ErrorKind::RequestTimeout,
                message: format!("the request body did not arrive within {ms} ms, the limit body_timeout_ms"),
                limit: Some("body_timeout_ms"),
            });
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                let max = s.limits.max_body_bytes;
                return Err(ApiError {
                    kind: ErrorKind::TooLarge,
                    message: format!("the request body is over the limit max_body_bytes = {max}"),
                    limit: Some("max_body_bytes"),
                });
            }
            Err(e) => {
                // A bound of the server's (`max_receiving_bytes`) is its own answer.
                let mut source = std::error::Error::source(&e);
                while let Some(err) = source {
                    if let Some(refused) = err.downcast_ref::<ApiError>() {
                        return Err(refused.clone());
                    }
                    source = err.source();
                }
                return Err(ApiError::bad_request(format!("could not read the request body: {}", e.body_text())));
            }
        };
        // serde would also take a struct as a positional array: only objects are accepted.
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return Err(ApiError::bad_request("the request body is empty; a JSON object is expected")),
            Some(b'{') => {}
            Some(_) => return Err(ApiError::bad_request("the request body must be a JSON object")),
        }
        // An error names the field it is in (`settings.memtable_bytes: …`).
        let parse = |bytes: &[u8]| {
            let de = &mut serde_json::Deserializer::from_slice(bytes);
            let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
                let path = e.path().to_string();
                let at = if path == "." { String::new() } else { format!("{path}: ") };
                ApiError::bad_request(format!("invalid request body: {at}{}", e.into_inner()))
            })?;
            de.end().map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
            Ok(Json(value))
        };
        // A large body (a write batch) is parsed on the blocking pool, not on
        // the threads that serve every connection.
        if bytes.len() <= INLINE_PARSE_BYTES {
            return parse(&bytes);
        }
        tokio::task::spawn_blocking(move || parse(&bytes))
            .await
            .unwrap_or_else(|_| Err(ApiError::internal("parsing the request body panicked (a bug: please report it)")))
    }
}

/// A successful JSON response.
fn ok<T: Serialize>(status: StatusCode, v: &T) -> Response {
    (status, axum::Json(v)).into_response()
}

/// The console (docs/SERVER.md "Console"): one page and its script and
/// style, compiled into the binary. It holds no data: it calls the API like
/// any client (with the key the user gives it), and its Content-Security-Policy
/// lets it load and call nothing but this server.
const CONSOLE_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// What the console's pages may load and call: this origin only.
const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                           connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn console_response(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONSOLE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn console_page() -> Response {
    console_response("text/html; charset=utf-8", CONSOLE_HTML)
}

async fn console_asset(Path(asset): Path<String>) -> Response {
    match asset.as_str() {
        "console.js" => console_response("text/javascript; charset=utf-8", CONSOLE_JS),
        "console.css" => console_response("text/css; charset=utf-8", CONSOLE_CSS),
        _ => ApiError::new(ErrorKind::NotFound, format!("no console asset {asset:?}")).into_response(),
    }
}

/// What the request's key may do: `{"access": "write" | "read", "keys": bool}`
/// (`keys`: whether the server has any). The console hides write controls
/// from a read key.
async fn access(State(s): State<AppState>, _: Read, headers: axum::http::HeaderMap) -> Response {
    let header = |name: &str| headers.get(name).map(|v: &HeaderValue| v.to_str().unwrap_or(""));
    let key = credential(header("authorization"), header("x-api-key"));
    let access = if s.authorize(key, Access::Write).is_ok() { "write" } else { "read" };
    ok(StatusCode::OK, &serde_json::json!({ "access": access, "keys": !s.keys.is_empty() }))
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorKind::MethodNotAllowed, format!("{method} is not served on {}", uri.path()))
}

async fn health(State(s): State<AppState>) -> Response {
    let h = s.health();
    let status = if s.is_draining() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    ok(status, &h)
}

async fn metrics(State(s): State<AppState>, _: Read) -> Response {
    // Collection gauges read file sizes: off the async threads.
    let body = tokio::task::spawn_blocking(move || s.metrics.render()).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// The OpenAPI document as this server answers: without API keys, no
/// operation requires one (the document's `security` is dropped).
async fn openapi(State(s): State<AppState>) -> Response {
    if !s.keys.is_empty() {
        return ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response();
    }
    let mut spec: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON (a test reads it)");
    if let Some(o) = spec.as_object_mut() {
        o.remove("security");
    }
    ([(header::CONTENT_TYPE, "application/json")], spec.to_string()).into_response()
}

async fn list_collections(State(s): State<AppState>, _: Read) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Out<T> {
        collections: T,
    }
    Ok(ok(StatusCode::OK, &Out { collections: s.list_collections().await? }))
}

async fn create_collection(
    State(s): State<AppState>,
    _: Write,
    Json(spec): Json<CollectionSpec>,
) -> Result<Response, ApiError> {
    let (info, created) = s.create_collection(spec).await?;
    Ok(ok(if created { StatusCode::CREATED } else { StatusCode::OK }, &info))
}

async fn collection_info(State(s): State<AppState>, _: Read, Name(name): Name) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, &s.collection_info(&name).await?))
}

async fn drop_collection(State(s): State<AppState>, _: Write, Name(name): Name) -> Result<Response, ApiError> {
    s.drop_collection(&name).await?;
    Ok(ok(StatusCode::OK, &serde_json::json!({ "dropped": name })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocBody {
    id: String,
    /// None: the collection's model encodes `text`.
    tokens: Option<Tensor>,
    text: Option<String>,
    payload: Option<crate::service::Bounded>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertBody {
    documents: Vec<DocBody>,
    /// Pool each document's tokens by this factor instead of the collection's.
    #[serde(default, deserialize_with = "tessera::wire::int::opt")]
    pool_factor: Option<usize>,
}

async fn upsert(
    State(s): State<AppState>,
    _: Write,
    Name(name): Name,
    Json(b): Json<UpsertBody>,
) -> Result<Response, ApiError> {
    let docs = b
        .documents
        .into_iter()
        .map(|d| Document {
            id: d.id,
            tokens: d.tokens.map_or(tessera::Tokens::F32 { data: Vec::new(), dim: 0 }, |t| t.0),
            text: d.text,
            payload: d.payload.map(|p| p.0).filter(|p| !p.is_null()),
        })
        .collect();
    let pool_factor = match b.pool_factor.map(u32::try_from) {
        Some(Err(_)) => {
            let (most, f) = (tessera::MAX_POOL_FACTOR, b.pool_factor.unwrap_or_default());
            return Err(ApiError::bad_request(format!("pool_factor must be in 1..={most}, got {f}")));
        }
        f => f.map(Result::unwrap),
    };
    let n = s.upsert(&name, docs, tessera::UpsertOptions { pool_factor }).await?;
    Ok(ok(StatusCode::OK, &serde_json::json!({ "upserted": n })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsBody {
    ids: Vec<String>,
}

async fn delete(
    State(s): State<AppState>,
    _: Write,
    Name(name): Name,
    Json(b): Json<IdsBody>,
) -> Result<Response, ApiError> {
    let n = s.delete(&name, b.ids).await?;
    Ok(ok(StatusCode::OK, &serde_json::json!({ "deleted": n })))
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "snake_case")]
enum TokensFormat {
    /// Nested rows of numbers (the f16 values, exactly).
    #[default]
    Json,
    /// `{"dtype": "f16", "shape", "data": base64}`.
    F16,
    /// No tokens.
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBody {
    ids: Vec<String>,
    #[serde(default)]
    tokens: TokensFormat,
}

/// A stored document's tokens as the client asked for them, serialised
/// straight from the f16 values (no intermediate JSON tree).
enum TokensOut {
    Rows(Vec<half::f16>, usize),
    Packed { shape: [usize; 2], data: String },
}

impl TokensOut {
    /// `dim`-wide token values in `format` (none for `none`).
    fn new(format: TokensFormat, values: Vec<half::f16>, dim: usize) -> Option<TokensOut> {
        match format {
            TokensFormat::None => None,
            TokensFormat::Json => Some(TokensOut::Rows(values, dim)),
            TokensFormat::F16 => Some(TokensOut::Packed {
                shape: [values.len() / dim.max(1), dim],
                data: B64.encode(f16_bytes(&values)),
            }),
        }
    }
}

impl Serialize for TokensOut {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            TokensOut::Rows(values, dim) => {
                struct Row<'a>(&'a [half::f16]);
                impl Serialize for Row<'_> {
                    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                        ser.collect_seq(self.0.iter().map(|x| x.to_f32()))
                    }
                }
                let mut seq = ser.serialize_seq(Some(values.len() / dim))?;
                for row in values.chunks(*dim) {
                    seq.serialize_element(&Row(row))?;
                }
                seq.end()
            }
            TokensOut::Packed { shape, data } => {
                let mut m = ser.serialize_map(Some(3))?;
                m.serialize_entry("dtype", "f16")?;
                m.serialize_entry("shape", shape)?;
                m.serialize_entry("data", data)?;
                m.end()
            }
        }
    }
}

#[derive(Serialize)]
struct DocOut {
    id: String,
    n_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<TokensOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
}

/// Bytes per token value in an answer, for max_response_bytes.
fn value_bytes(f: TokensFormat) -> usize {
    match f {
        TokensFormat::None => 0,
        TokensFormat::Json => 12,
        TokensFormat::F16 => 3,
    }
}

impl DocOut {
    fn new(d: StoredDocument, tokens: TokensFormat) -> Self {
        let t = TokensOut::new(tokens, d.tokens, d.dim);
        DocOut { id: d.id, n_tokens: d.n_tokens, tokens: t, text: d.text, payload: d.payload }
    }
}
#[derive(Serialize)]
struct GetOut {
    documents: Vec<DocOut>,
    missing: Vec<String>,
}

async fn get_documents(
    State(s): State<AppState>,
    _: Read,
    Name(name): Name,
    Json(b): Json<GetBody>,
) -> Result<Response, ApiError> {
    let r = s.get(&name, b.ids, value_bytes(b.tokens)).await?;
    let documents = r.documents.into_iter().map(|d| DocOut::new(d, b.tokens)).collect();
    Ok(ok(StatusCode::OK, &GetOut { documents, missing: r.missing }))
}

fn no_tokens() -> TokensFormat {
    TokensFormat::None
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanBody {
    /// Bounded in size as it is read, as a search's filter is.
    #[serde(default)]
    filter: Option<tessera::wire::Bounded>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default = "no_tokens")]
    tokens: TokensFormat,
}

#[derive(Serialize)]
struct ScanOut {
    documents: Vec<DocOut>,
    next: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountBody {
    #[serde(default)]
    filter: Option<tessera::wire::Bounded>,
}

/// The documents whose payload matches a filter, in id order, a page at a time.
async fn scan(
    State(s): State<AppState>,
    _: Read,
    Name(name): Name,
    Json(b): Json<ScanBody>,
) -> Result<Response, ApiError> {
    let p = s.scan(&name, b.filter.map(|f| f.0), b.after, b.limit, value_bytes(b.tokens)).await?;
    let documents = p.documents.into_iter().map(|d| DocOut::new(d, b.tokens)).collect();
    Ok(ok(StatusCode::OK, &ScanOut { documents, next: p.next }))
}

/// How many documents match a filter.
async fn count(
    State(s): State<AppState>,
    _: Read,
    Name(name): Name,
    Json(b): Json<CountBody>,
) -> Result<Response, ApiError> {
    let n = s.count(&name, b.filter.map(|f| f.0)).await?;
    Ok(ok(StatusCode::OK, &serde_json::json!({ "count": n })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncodeBody {
    texts: Vec<String>,
    #[serde(default)]
    is_query: bool,
    /// `f16` (packed, the default) or `json`.
    #[serde(default = "packed")]
    tokens: TokensFormat,
}

fn packed() -> TokensFormat {
    TokensFormat::F16
}

/// The vectors of `texts` by the collection's bound model.
async fn encode(
    State(s): State<AppState>,
    _: Read,
    Name(name): Name,
    Json(b): Json<EncodeBody>,
) -> Result<Response, ApiError> {
    encoded(&s, ModelRef::Collection(name), b).await
}

/// `POST /v1/encode`: [`EncodeBody`] and the `model` to encode with.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncodeByModelBody {
    /// A model the server was started with (`--model NAME=DIR`).
    model: String,
    texts: Vec<String>,
    #[serde(default)]
    is_query: bool,
    #[serde(default = "packed")]
    tokens: TokensFormat,
}

/// The vectors of `texts` by a model the server was started with.
async fn encode_by_model(
    State(s): State<AppState>,
    _: Read,
    Json(b): Json<EncodeByModelBody>,
) -> Result<Response, ApiError> {
    let body = EncodeBody { texts: b.texts, is_query: b.is_query, tokens: b.tokens };
    encoded(&s, ModelRef::Named(b.model), body).await
}

async fn encoded(s: &AppState, model: ModelRef, b: EncodeBody) -> Result<Response, ApiError> {
    if b.tokens == TokensFormat::None {
        return Err(ApiError::bad_request("tokens: \"none\" would answer nothing; ask for \"f16\" or \"json\""));
    }
    let vectors: Vec<TokensOut> = s
        .encode(model, b.texts, b.is_query)
        .await?
        .into_iter()
        .filter_map(|(values, dim)| TokensOut::new(b.tokens, values, dim))
        .collect();
    Ok(ok(StatusCode::OK, &serde_json::json!({ "vectors": vectors })))
}

/// Hard negatives of one query.
async fn mine_negatives(
    State(s): State<AppState>,
    _: Read,
    Name(name): Name,
    Json(b): Json<crate::service::MineRequest>,
) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, &s.mine_negatives(&name, b).await?))
}

/// The server's request limits (what a client splits its calls under).
async fn limits(State(s): State<AppState>, _: Read) -> Response {
    ok(StatusCode::OK, &s.limits)
}

/// The models requests may name, with their identities.
async fn models(State(s): State<AppState>, _: Read) -> Result<Response, ApiError> {
    let models: Vec<serde_json::Value> = s
        .models()
        .into_iter()
        .map(|(name, identity)| serde_json::json!({ "name": name, "identity": identity }))
        .collect();
    Ok(ok(StatusCode::OK, &serde_json::json!({ "models": models })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReindexBody {
    /// A model the server was started with (`--model NAME=DIR`).
    model: String,
}

/// Starts re-encoding the collection with a model (202; `GET` the same path for its progress).
async fn reindex(
    State(s): State<AppState>,
    _: Write,
    Name(name): Name,
    Json(b): Json<ReindexBody>,
) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::ACCEPTED, &s.start_reindex(&name, &b.model)?))
}

async fn reindex_status(State(s): State<AppState>, _: Read, Name(name): Name) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, &s.reindex_status(&name)?))
}

/// One search (`tokens`) or a batch (`queries`: one result per query, in order).
async fn search(
    State(s): State<AppState>,
    _: Read,
    Name(name): Name,
    Json(req): Json<SearchRequest>,
) -> Result<Response, ApiError> {
    if req.queries.is_some() || req.query_texts.is_some() {
        return Ok(ok(StatusCode::OK, &s.search_batch(&name, req).await?));
    }
    Ok(ok(StatusCode::OK, &s.search(&name, req).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerankBody {
    tokens: Option<Tensor>,
    /// The query as text, for the collection's model (instead of `tokens`).
    query_text: Option<String>,
    ids: Vec<String>,
    #[serde(default = "yes")]
    include_text: bool,
    #[serde(default = "yes")]
    include_payload: bool,
}

fn yes() -> bool {
    true
}

async fn rerank(
    State(s): State<AppState>,
    _: Read,
    Name(name): Name,
    Json(b): Json<RerankBody>,
) -> Result<Response, ApiError> {
    let query = crate::service::Query::of(b.tokens.map(|t| t.0), b.query_text)?;
    let r = s.rerank(&name, query, b.ids, b.include_text, b.include_payload).await?;
    Ok(ok(StatusCode::OK, &r))
}

async fn flush(State(s): State<AppState>, _: Write, Name(name): Name) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, &s.flush(&name).await?))
}

async fn recall_curve(
    State(s): State<AppState>,
    _: Read,
    Name(name): Name,
    Json(req): Json<tessera::CurveRequest>,
) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, &s.recall_curve(&name, req).await?))
}

async fn update_settings(
    State(s): State<AppState>,
    _: Write,
    Name(name): Name,
    Json(settings): Json<tessera::Settings>,
) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, &s.update_settings(&name, settings).await?))
}

async fn compact(State(s): State<AppState>, _: Write, Name(name): Name) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, &s.compact(&name).await?))
}

async fn list_backups(State(s): State<AppState>, _: Read) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::OK, &s.list_backups().await?))
}

async fn backup(State(s): State<AppState>, _: Write, Json(req): Json<BackupRequest>) -> Result<Response, ApiError> {
    Ok(ok(StatusCode::CREATED, &s.backup(req).await?))
}
