//! The server's request limits (`tessera serve --max-*`), each named in the
//! errors that report it.

use serde::Serialize;

/// Configurable request limits. Each has a name (the field's) that errors report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest request body (HTTP) or message (gRPC), in bytes.
    pub max_body_bytes: usize,
    /// Most tokens in a query tensor.
    pub max_query_tokens: usize,
    /// Most tokens in one document.
    pub max_doc_tokens: usize,
    /// Most documents in one upsert.
    pub max_batch_docs: usize,
    /// Largest `k`.
    pub max_k: usize,
    /// Largest `candidates`.
    pub max_candidates: usize,
    /// Most ids in a delete, get, rerank or search-by-ids request.
    pub max_ids: usize,
    /// Most queries in one batch search.
    pub max_batch_queries: usize,
    /// Most query tokens, over all its queries, in one batch search.
    pub max_batch_tokens: usize,
    /// Largest `get` answer, in bytes (estimated as it is assembled, so that
    /// it is refused before it is built).
    pub max_response_bytes: usize,
    /// Largest payload of one document, in bytes of compact JSON.
    pub max_payload_bytes: usize,
    /// Longest time, in milliseconds, an HTTP request body or a gRPC message
    /// may take to arrive after its headers (a client trickling it holds a
    /// connection and the bytes sent so far).
    pub body_timeout_ms: usize,
    /// Bytes of request bodies and messages being received at once, over
    /// every connection of both protocols: a request whose bytes would pass
    /// it is refused (503 / UNAVAILABLE) and may be retried. At least `max_body_bytes`.
    pub max_receiving_bytes: usize,
    /// The most of `max_receiving_bytes` one client address may hold (over
    /// all its connections): a request from an address past it is refused
    /// (503 / UNAVAILABLE), so one client cannot take the budget from the
    /// others. At least `max_body_bytes` (so a `max_body_bytes` above the
    /// default 128 MiB needs this raised too; `tessera serve` raises its
    /// default with it); above `max_receiving_bytes` it changes nothing. A
    /// gRPC message's 5-byte prefix is not counted against either bound.
    pub max_receiving_bytes_per_address: usize,
    /// Time, in milliseconds, a search may take from its arrival (waiting for
    /// a search slot included) before it is stopped and answered 504 /
    /// DEADLINE_EXCEEDED, its slot freed; the default and the most a
    /// request's `timeout_ms` may ask for.
    pub search_timeout_ms: usize,
}

impl Limits {
    /// Every limit must be at least 1, and `k`, `candidates` and ids within
    /// what the engine accepts.
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_query_tokens", self.max_query_tokens),
            ("max_doc_tokens", self.max_doc_tokens),
            ("max_batch_docs", self.max_batch_docs),
            ("max_k", self.max_k),
            ("max_candidates", self.max_candidates),
            ("max_ids", self.max_ids),
            ("max_batch_queries", self.max_batch_queries),
            ("max_batch_tokens", self.max_batch_tokens),
            ("max_response_bytes", self.max_response_bytes),
            ("max_payload_bytes", self.max_payload_bytes),
            ("body_timeout_ms", self.body_timeout_ms),
            ("max_receiving_bytes", self.max_receiving_bytes),
            ("max_receiving_bytes_per_address", self.max_receiving_bytes_per_address),
            ("search_timeout_ms", self.search_timeout_ms),
        ];
        if let Some((name, _)) = all.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.max_receiving_bytes < self.max_body_bytes {
            return Err(format!(
                "max_receiving_bytes ({}) must be at least max_body_bytes ({}): no request that large could be received",
                self.max_receiving_bytes, self.max_body_bytes
            ));
        }
        if self.max_receiving_bytes_per_address < self.max_body_bytes {
            return Err(format!(
                "max_receiving_bytes_per_address ({}) must be at least max_body_bytes ({}): no request that large \
                 could be received",
                self.max_receiving_bytes_per_address, self.max_body_bytes
            ));
        }
        let engine = [
            ("max_k", self.max_k, tessera::MAX_K),
            ("max_candidates", self.max_candidates, tessera::MAX_K),
            ("max_ids", self.max_ids, tessera::MAX_K),
            ("max_batch_queries", self.max_batch_queries, tessera::MAX_BATCH),
            ("max_batch_tokens", self.max_batch_tokens, tessera::MAX_BATCH_TOKENS),
        ];
        for (name, v, most) in engine {
            if v > most {
                return Err(format!("{name} is {v}; the engine's most is {most}"));
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 << 20,
            max_query_tokens: 1024,
            max_doc_tokens: 16_384,
            max_batch_docs: 10_000,
            max_k: 1000,
            max_candidates: 10_000,
            max_ids: 10_000,
            max_batch_queries: 256,
            max_batch_tokens: 65_536,
            max_response_bytes: 64 << 20,
            max_payload_bytes: 1 << 20,
            body_timeout_ms: 60_000,
            max_receiving_bytes: 512 << 20,
            max_receiving_bytes_per_address: 128 << 20,
            search_timeout_ms: 60_000,
        }
    }
}
