//! What the service takes and answers, independent of the wire: tensors as
//! the interfaces send them, collection specs and infos, search, mining,
//! batch, rerank, get and reindex requests and responses.

use crate::error::{ApiError, ErrorKind};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use tessera::{
    CollectionConfig, Component, Durability, IndexKind, Screening, SearchOptions, SearchPlan, SearchResults,
    SourceRank, StoredDocument, TextKind, TokenType, Tokens, f16,
};

/// Element type of a packed tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F16,
    F32,
}

impl DType {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "f16" | "float16" => Ok(DType::F16),
            "f32" | "float32" => Ok(DType::F32),
            _ => Err(ApiError::bad_request(format!("unknown dtype {s:?}: use \"f16\" or \"f32\""))),
        }
    }
}

/// A packed little-endian row-major `[tokens, dim]` tensor (base64 over HTTP,
/// bytes over gRPC) as engine tokens.
pub fn decode_tensor(dtype: DType, shape: &[u64], data: &[u8]) -> Result<Tokens, ApiError> {
    let [n, dim] = shape else {
        return Err(ApiError::bad_request(format!(
            "tensor shape must be [tokens, dim], got {} dimensions",
            shape.len()
        )));
    };
    if *dim == 0 {
        return Err(ApiError::bad_request("tensor shape: dim must be at least 1"));
    }
    if *n == 0 {
        return Err(ApiError::bad_request("empty tensor: at least one token is required"));
    }
    let width = match dtype {
        DType::F16 => 2u64,
        DType::F32 => 4,
    };
    let expected = n.checked_mul(*dim).and_then(|v| v.checked_mul(width));
    if expected != Some(data.len() as u64) {
        return Err(ApiError::bad_request(format!(
            "tensor data is {} bytes; shape [{n}, {dim}] of {dtype:?} needs {}",
            data.len(),
            expected.map_or("more than 2^64".to_string(), |e| e.to_string())
        )));
    }
    let dim = *dim as usize;
    Ok(match dtype {
        DType::F16 => {
            Tokens::F16 { data: data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])).collect(), dim }
        }
        DType::F32 => Tokens::F32 {
            data: data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            dim,
        },
    })
}

/// A query or document tensor as the service takes it. In JSON: nested rows
/// `[[f32; dim]; tokens]`, or packed `{"dtype": "f16"|"f32", "shape":
/// [tokens, dim], "data": base64 little-endian}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor(pub Tokens);

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TensorVisitor)
    }
}

struct TensorVisitor;

impl<'de> Visitor<'de> for TensorVisitor {
    type Value = Tensor;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#"a tensor: [[numbers]] or {"dtype", "shape", "data"}"#)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tensor, A::Error> {
        let mut data: Vec<f32> = Vec::new();
        let mut dim = 0;
        let mut row_index = 0usize;
        while let Some(row) = seq.next_element::<Vec<f32>>()? {
            if row_index == 0 {
                dim = row.len();
                if dim == 0 {
                    return Err(de::Error::custom("tensor row 0 is empty"));
                }
            } else if row.len() != dim {
                return Err(de::Error::custom(format!(
                    "tensor row {row_index} has {} values; row 0 has {dim}",
                    row.len()
                )));
            }
            data.extend_from_slice(&row);
            row_index += 1;
        }
        if row_index == 0 {
            return Err(de::Error::custom("empty tensor: at least one token is required"));
        }
        Ok(Tensor(Tokens::F32 { data, dim }))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Tensor, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Packed {
            dtype: String,
            #[serde(deserialize_with = "int::list")]
            shape: Vec<u64>,
            data: String,
        }
        let p = Packed::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let dtype = DType::parse(&p.dtype).map_err(de::Error::custom)?;
        let bytes = B64
            .decode(p.data.as_bytes())
            .map_err(|e| de::Error::custom(format!("tensor data: invalid base64: {e}")))?;
        decode_tensor(dtype, &p.shape, &bytes).map(Tensor).map_err(de::Error::custom)
    }
}

/// f16 tokens as little-endian bytes.
pub fn f16_bytes(tokens: &[f16]) -> Vec<u8> {
    tokens.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What to create (also the HTTP body of `POST /v1/collections`). Each
/// setting is the engine's own type, named as everywhere (`pooled`, `int8`, …).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    pub name: String,
    /// Token dimension; may be left out with `model` (the model's).
    #[serde(default, deserialize_with = "int::opt")]
    pub dim: Option<usize>,
    /// A model the server was started with (`tessera serve --model NAME=DIR`),
    /// by name: the collection is bound to it (texts in, text queries).
    #[serde(default)]
    pub model: Option<String>,
    /// `pooled` (default), `muvera`, `centroids` or `none`.
    #[serde(default, deserialize_with = "or_default")]
    pub index: IndexKind,
    /// `english` (default), `plain`, `cjk` or `none`.
    #[serde(default, deserialize_with = "or_default")]
    pub text: TextKind,
    /// `sync` (default) or `buffered`.
    #[serde(default, deserialize_with = "or_default")]
    pub durability: Durability,
    /// `f16` (default), `int8`, `residual2` or `residual4`.
    #[serde(default, deserialize_with = "or_default")]
    pub storage: TokenType,
    /// `none` (default) or `binary`.
    #[serde(default, deserialize_with = "or_default")]
    pub screening: Screening,
    /// Residual storage's kept copy: `none` (default), `int8` or `f16`.
    #[serde(default, deserialize_with = "or_default")]
    pub keep: tessera::Keep,
    /// Tunable settings (memtable_bytes, max_segments, min_train_tokens, …):
    /// those left out keep their defaults.
    #[serde(default)]
    pub settings: Option<tessera::Settings>,
    /// Return the existing collection if its configuration matches.
    #[serde(default)]
    pub if_not_exists: bool,
}

pub use tessera::wire::Bounded;
use tessera::wire::int;

/// A setting that JSON `null` (or absence) leaves at its default.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl CollectionSpec {
    pub(super) fn config(&self, dim: usize) -> Result<CollectionConfig, tessera::Error> {
        let mut c = CollectionConfig::new(dim);
        c.index = self.index.config();
        c.text = self.text.config();
        (c.durability, c.storage, c.screening, c.keep) = (self.durability, self.storage, self.screening, self.keep);
        self.settings.unwrap_or_default().apply(&c, true)
    }
}

/// A collection's configuration and counts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CollectionInfo {
    pub text: TextKind,
    pub durability: Durability,
    /// The bound model's identity (name, architecture, dim, checksum, settings), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<tessera::ModelIdentity>,
    /// The tunable settings, each as it now is (those of the collection's index kind).
    pub settings: tessera::Settings,
    /// Name, dim, index and the engine's counts.
    #[serde(flatten)]
    pub stats: tessera::CollectionStats,
}

impl CollectionInfo {
    pub(super) fn of(c: &tessera::Collection) -> Self {
        let cfg = c.config();
        Self {
            text: TextKind::of(cfg.text.as_ref()),
            durability: cfg.durability,
            model: c.model().map(|m| m.identity),
            settings: tessera::Settings::of(&cfg),
            stats: c.stats(),
        }
    }
}

/// A search (also the HTTP body of `POST .../search`): the query tokens —
/// `tokens`, or `queries` for a batch, the same search for each query — and
/// the engine's [`SearchOptions`], side by side in one JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchRequest {
    pub tokens: Option<Tensor>,
    /// A batch: one search per query, answered in order.
    pub queries: Option<Vec<Tensor>>,
    /// A batch of texts, encoded by the collection's model (instead of `queries`).
    pub query_texts: Option<Vec<String>>,
    /// Beside `queries`: one BM25 text per query (each a hybrid query).
    pub texts: Option<Vec<String>>,
    pub options: SearchOptions,
}

/// What a search plan is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Planned {
    /// One query, with tokens or not; a batch of token queries.
    Tokens(bool),
    /// A batch of texts for the collection's model.
    QueryTexts,
    /// A batch of token queries, each with its BM25 text.
    Bm25Texts,
}

/// Reads the body's `tokens` and `queries` aside and streams every other
/// field to [`SearchOptions`]' own deserialiser, as it comes (serde's
/// `flatten` would not refuse unknown fields): an unknown field is refused
/// at once, and each option is read as the type reads it.
impl<'de> Deserialize<'de> for SearchRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SearchRequest;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a search request (a JSON object)")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SearchRequest, A::Error> {
                let mut aside = Aside { map, tokens: None, queries: None, query_texts: None, texts: None };
                let options = SearchOptions::deserialize(de::value::MapAccessDeserializer::new(&mut aside))?;
                let (tokens, queries) = (aside.tokens.flatten(), aside.queries.flatten());
                let (query_texts, texts) = (aside.query_texts.flatten(), aside.texts.flatten());
                Ok(SearchRequest { tokens, queries, query_texts, texts, options })
            }
        }
        d.deserialize_map(V)
    }
}

/// A search body's fields, `tokens` and `queries` read into their slots and
/// the others handed on.
struct Aside<A> {
    map: A,
    tokens: Option<Option<Tensor>>,
    queries: Option<Option<Vec<Tensor>>>,
    query_texts: Option<Option<Vec<String>>>,
    texts: Option<Option<Vec<String>>>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for &mut Aside<A> {
    type Error = A::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.map.next_key::<String>()? else { return Ok(None) };
            let seen = match key.as_str() {
                "tokens" => self.tokens.replace(self.map.next_value()?).is_some(),
                "queries" => self.queries.replace(self.map.next_value()?).is_some(),
                "query_texts" => self.query_texts.replace(self.map.next_value()?).is_some(),
                "texts" => self.texts.replace(self.map.next_value()?).is_some(),
                _ => return seed.deserialize(de::value::StringDeserializer::new(key)).map(Some),
            };
            if seen {
                let field = ["tokens", "queries", "query_texts", "texts"].into_iter().find(|f| *f == key);
                return Err(de::Error::duplicate_field(field.expect("a field read aside")));
            }
        }
    }

    fn next_value_seed<T: de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// One query's hard-negative mining (`POST .../mine_negatives`), with the
/// defaults of `tessera mine-negatives`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MineRequest {
    /// Seeds the sampling (with `seed`): the same id samples the same negatives.
    pub query_id: String,
    pub tokens: Tensor,
    /// Relevant document ids (never negatives).
    #[serde(default)]
    pub positives: Vec<String>,
    /// Ranks START..=END (1-based) to sample from.
    #[serde(default = "mine_range")]
    pub range: (usize, usize),
    #[serde(default = "mine_per_query")]
    pub per_query: usize,
    #[serde(default)]
    pub exclude_above_score: Option<f32>,
    #[serde(default)]
    pub max_score: Option<f32>,
    #[serde(default)]
    pub margin: Option<f32>,
    #[serde(default)]
    pub sampling: tessera::Sampling,
    #[serde(default = "mine_seed")]
    pub seed: u64,
    #[serde(default)]
    pub candidates: Option<usize>,
    #[serde(default)]
    pub exact: bool,
    #[serde(default = "yes")]
    pub require_text: bool,
    /// The query's text: hybrid retrieval (MaxSim and BM25), ordered by `rank`.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub rank: Option<tessera::RankKind>,
    #[serde(default)]
    pub rank_norm: Option<tessera::Norm>,
    #[serde(default)]
    pub rank_weights: std::collections::BTreeMap<tessera::Signal, f64>,
}

fn mine_range() -> (usize, usize) {
    tessera::MineParams::default().range
}

fn mine_per_query() -> usize {
    tessera::MineParams::default().per_query
}

fn mine_seed() -> u64 {
    tessera::MineParams::default().seed
}

fn yes() -> bool {
    true
}

/// The answer to [`MineRequest`]: negatives in rank order, positives best first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MineResponse {
    pub negatives: Vec<Hit>,
    pub positives: Vec<Hit>,
}

/// A query: tokens, or a text for the collection's model.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Tokens(Tokens),
    Text(String),
}

impl Query {
    /// The query of a request that may give `tokens` or `query_text`: exactly one.
    pub fn of(tokens: Option<Tokens>, text: Option<String>) -> Result<Self, ApiError> {
        match (tokens, text) {
            (Some(t), None) => Ok(Query::Tokens(t)),
            (None, Some(t)) => Ok(Query::Text(t)),
            (Some(_), Some(_)) => Err(ApiError::bad_request("give query tokens or query_text, not both")),
            (None, None) => Err(ApiError::bad_request("the query is required: tokens or query_text")),
        }
    }
}

/// One result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    pub id: String,
    /// MaxSim when query tokens were given; otherwise the fused (or BM25) score.
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// Hybrid queries: the fused score and each source's rank and score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fused: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRank>,
    /// Hybrid queries ranked `linear`: each signal's part in `score`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
}

impl Hit {
    pub(super) fn of(h: tessera::SearchHit, text: bool, payload: bool) -> Self {
        Hit {
            id: h.id,
            score: h.score,
            text: h.text.filter(|_| text),
            payload: h.payload.filter(|_| payload),
            fused: None,
            sources: Vec::new(),
            components: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchResponse {
    /// `two_stage`, `exact` or `hybrid`.
    pub mode: &'static str,
    pub hits: Vec<Hit>,
    /// Two-stage and hybrid: the candidates the search handed to the exact
    /// stage (per source, for hybrid) — the request's, or the default for
    /// its `k` and the collection's size. Absent for exact search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
}

impl SearchResponse {
    pub(super) fn of(out: SearchResults, plan: &SearchPlan) -> Self {
        let (text, payload) = (plan.include_text, plan.include_payload);
        let mode = out.mode();
        let candidates = plan.candidates();
        let hits = match out {
            SearchResults::TwoStage(hits) | SearchResults::Exact(hits) => {
                hits.into_iter().map(|h| Hit::of(h, text, payload)).collect()
            }
            SearchResults::Hybrid(hits) => hits
                .into_iter()
                .map(|h| Hit {
                    fused: Some(h.fused),
                    sources: h.sources,
                    components: h.components,
                    ..Hit::of(h.hit, text, payload)
                })
                .collect(),
        };
        Self { mode, hits, candidates }
    }
}

/// The answer to a batch search: one result per query, in order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
}

/// One query's answer in a batch: its hits, or why it was refused.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum BatchResult {
    Ok(SearchResponse),
    Err { error: QueryError },
}

/// A refused query of a batch (the others are answered).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueryError {
    pub code: ErrorKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
}

impl BatchResult {
    pub(super) fn of(r: Result<SearchResponse, ApiError>) -> Self {
        match r {
            Ok(r) => BatchResult::Ok(r),
            Err(e) => BatchResult::Err {
                error: QueryError { code: e.kind, message: e.short_message().into_owned(), limit: e.limit },
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RerankResponse {
    pub hits: Vec<Hit>,
    /// Requested ids that are not in the collection.
    pub missing: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GetResponse {
    pub documents: Vec<StoredDocument>,
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    /// `ok`, or `draining` once shutdown started.
    pub status: &'static str,
    pub version: &'static str,
    pub collections: usize,
}

/// A reindex started over the API (`POST .../reindex`), as `GET .../reindex` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReindexStatus {
    /// `running`, `done` or `failed`.
    pub state: &'static str,
    /// The model's name (as the server was started with it).
    pub model: String,
    /// Documents copied so far, of `total` (as of the reindex's start).
    pub done: usize,
    pub total: usize,
    /// When done: documents of the new version, documents written meanwhile
    /// and copied again, texts cut at the model's length, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caught_up: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// When failed: why (the collection is as it was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a text is encoded: by a model the server was started with, or by a collection's.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelRef {
    Named(String),
    Collection(String),
}

/// `POST /v1/backup`: a backup of the whole database, written to a new folder
/// `name` in the server's backup folder.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Folder name (1-64 characters from A-Z a-z 0-9 _ -); default
    /// `backup-<unix seconds>-<milliseconds>`.
    #[serde(default)]
    pub name: Option<String>,
}
