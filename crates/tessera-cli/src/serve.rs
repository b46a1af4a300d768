//! `tessera serve` (the query server) and `tessera bench serve` (a load test
//! of a running server).

use crate::bulk::{BulkReader, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera_server::{ApiKeys, Limits, ServerConfig, load};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Database folder (created if missing).
    #[arg(long)]
    pub db: PathBuf,
    /// HTTP (JSON) address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub http: SocketAddr,
    /// gRPC address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub grpc: SocketAddr,
    /// Serve no HTTP.
    #[arg(long)]
    pub no_http: bool,
    /// Serve no gRPC.
    #[arg(long)]
    pub no_grpc: bool,
    /// API keys file: lines `rw:KEY` (read-write) or `ro:KEY` (read-only).
    /// Keys are also read from the environment variable TESSERA_API_KEYS
    /// (same syntax, comma-separated). With any key, every request but
    /// /health and /openapi.json needs one.
    #[arg(long)]
    pub api_keys: Option<PathBuf>,
    /// Search threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// At shutdown, how long to wait for requests in flight; after it, writes
    /// are refused, running writes complete, collections are flushed and the
    /// server exits (connections still open end with it).
    #[arg(long, default_value_t = 30.0)]
    pub drain_seconds: f64,
    /// Open connections at most, for each of HTTP and gRPC; more wait in the listen backlog.
    /// Lowered at start (and logged) if the descriptor limit would leave the engine too few.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Open connections one client address may hold, for each of HTTP and gRPC; more are
    /// answered 429 and closed (HTTP) or closed at once (gRPC).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_address: u32,
    /// Serve HTTPS and gRPC over TLS with this certificate chain (PEM, the server's own
    /// certificate first). Plaintext is refused on both ports.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: every client must present a certificate this CA (PEM) issued and that is
    /// valid now; others are refused during the handshake.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Live recall: this share of the two-stage searches answered (0 to 1; 0, the default:
    /// off) is searched again exactly in the background, and the recall@k of each answer
    /// given is counted per collection in /metrics (tessera_live_recall_*). Never delays
    /// the answer.
    #[arg(long, default_value_t = 0.0)]
    pub live_recall_rate: f64,
    /// Live recall: the share of one core the background exact searches may use (0 to 1].
    #[arg(long, default_value_t = 0.1)]
    pub live_recall_cpu: f64,
    /// A gRPC connection with no rpc in flight for this many milliseconds is closed (clients
    /// reconnect on their next call).
    #[arg(long, default_value_t = tessera_server::DEFAULT_GRPC_IDLE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub grpc_idle_timeout_ms: u64,
    /// Seal a collection's memtable in the background once no write came for
    /// this many milliseconds (0: only when full or flushed). A two-stage
    /// search scores the memtable exactly, so a freshly written collection
    /// searches faster once it is sealed.
    #[arg(long, default_value_t = tessera::DEFAULT_SEAL_IDLE.as_millis() as u64)]
    pub seal_idle_ms: u64,
    /// Folder where `POST /v1/backup` writes backups (each into a new sub-folder); without it
    /// that endpoint is refused.
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// A model requests may name, as NAME=DIR (repeatable): loaded at start, it can bind a
    /// collection created over the API (`"model": NAME`), encode texts (`POST /v1/encode`) and
    /// re-encode a collection (`POST .../reindex`). Collections bound to a model load their
    /// own whether it is named here or not.
    #[arg(long = "model", value_name = "NAME=DIR", value_parser = model_arg)]
    pub models: Vec<(String, PathBuf)>,
    /// Log one JSON object per line (stderr) instead of text. The level is
    /// set by TESSERA_LOG (default info).
    #[arg(long)]
    pub log_json: bool,
    /// Largest request body (HTTP) or message (gRPC), in bytes (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most tokens in a query tensor (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_query_tokens)]
    pub max_query_tokens: usize,
    /// Most tokens in one upserted document (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_doc_tokens)]
    pub max_doc_tokens: usize,
    /// Most documents in one upsert (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_batch_docs)]
    pub max_batch_docs: usize,
    /// Largest `k` of a search (at most 100000; 400 beyond).
    #[arg(long, default_value_t = Limits::default().max_k)]
    pub max_k: usize,
    /// Largest `candidates`, `ef` or `rerank` of a search (at most 100000; 400 beyond).
    #[arg(long, default_value_t = Limits::default().max_candidates)]
    pub max_candidates: usize,
    /// Most ids in a delete, get, rerank or search by ids (at most 100000; 413 beyond).
    #[arg(long, default_value_t = Limits::default().max_ids)]
    pub max_ids: usize,
    /// Most queries in one batch search.
    #[arg(long, default_value_t = Limits::default().max_batch_queries)]
    pub max_batch_queries: usize,
    /// Most query tokens, over all its queries, in one batch search.
    #[arg(long, default_value_t = Limits::default().max_batch_tokens)]
    pub max_batch_tokens: usize,
    /// Largest `get` answer, in bytes, estimated before it is built (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_response_bytes)]
    pub max_response_bytes: usize,
    /// Largest payload of one upserted document, in bytes of compact JSON (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_payload_bytes)]
    pub max_payload_bytes: usize,
    /// Longest time an HTTP request body or a gRPC message may take to arrive after its
    /// headers, in milliseconds (408 / DEADLINE_EXCEEDED after it; its bytes are freed).
    #[arg(long, default_value_t = Limits::default().body_timeout_ms)]
    pub body_timeout_ms: usize,
    /// Bytes of request bodies and gRPC messages being received at once over every
    /// connection: a request that would pass it is refused (503 / UNAVAILABLE; retry).
    /// At least --max-body-bytes.
    #[arg(long, default_value_t = Limits::default().max_receiving_bytes)]
    pub max_receiving_bytes: usize,
    /// The most of --max-receiving-bytes one client address may hold over all its
    /// connections (503 / UNAVAILABLE beyond; retry), so that one client cannot take the
    /// budget from the others. At least --max-body-bytes. [default: 134217728 (128 MiB),
    /// or --max-body-bytes when larger]
    #[arg(long)]
    pub max_receiving_bytes_per_address: Option<usize>,
    /// Time a search may take from its arrival (waiting for a search slot included), in
    /// milliseconds: then it is stopped, its slot freed, and answered 504 / DEADLINE_EXCEEDED.
    /// The default of a request's `timeout_ms` and the most it may ask for.
    #[arg(long, default_value_t = Limits::default().search_timeout_ms)]
    pub search_timeout_ms: usize,
}

/// `NAME=DIR` of `--model`.
fn model_arg(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => Ok((name.into(), dir.into())),
        _ => Err(format!("{s:?}: give NAME=DIR (a name requests use, and the model's folder)")),
    }
}

fn keys(file: Option<&PathBuf>) -> Result<ApiKeys> {
    let mut text = String::new();
    if let Some(f) = file {
        text += &std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        text.push('\n');
    }
    if let Ok(env) = std::env::var("TESSERA_API_KEYS") {
        text += &env;
    }
    let keys = ApiKeys::parse(&text).map_err(|e| format!("API keys: {e}"))?;
    if let Some(f) = file
        && keys.is_empty()
    {
        return Err(
            format!("{}: no keys (lines rw:KEY or ro:KEY); without --api-keys, auth is off", f.display()).into()
        );
    }
    Ok(keys)
}

/// Serves until ctrl-c or SIGTERM; prints one line with the bound addresses
/// to stdout when ready.
pub fn serve(a: &ServeArgs) -> Result<()> {
    if !(a.drain_seconds >= 0.0 && a.drain_seconds <= 86_400.0) {
        return Err("--drain-seconds must be in [0, 86400]".into());
    }
    tessera_server::init_logging(a.log_json);
    let limits = Limits {
        max_body_bytes: a.max_body_bytes,
        max_query_tokens: a.max_query_tokens,
        max_doc_tokens: a.max_doc_tokens,
        max_batch_docs: a.max_batch_docs,
        max_k: a.max_k,
        max_candidates: a.max_candidates,
        max_ids: a.max_ids,
        max_batch_queries: a.max_batch_queries,
        max_batch_tokens: a.max_batch_tokens,
        max_response_bytes: a.max_response_bytes,
        max_payload_bytes: a.max_payload_bytes,
        body_timeout_ms: a.body_timeout_ms,
        max_receiving_bytes: a.max_receiving_bytes,
        max_receiving_bytes_per_address: a
            .max_receiving_bytes_per_address
            .unwrap_or(Limits::default().max_receiving_bytes_per_address.max(a.max_body_bytes)),
        search_timeout_ms: a.search_timeout_ms,
    };
    let config = ServerConfig {
        db: a.db.clone(),
        http: (!a.no_http).then_some(a.http),
        grpc: (!a.no_grpc).then_some(a.grpc),
        limits,
        keys: keys(a.api_keys.as_ref())?,
        threads: a.threads,
        drain_timeout: Duration::from_secs_f64(a.drain_seconds),
        max_connections: a.max_connections as usize,
        max_connections_per_address: a.max_connections_per_address as usize,
        grpc_idle_timeout: Duration::from_millis(a.grpc_idle_timeout_ms),
        live_recall: match a.live_recall_rate {
            0.0 if a.live_recall_cpu > 0.0 && a.live_recall_cpu <= 1.0 => None,
            0.0 => return Err(format!("--live-recall-cpu must be in (0, 1], got {}", a.live_recall_cpu).into()),
            rate => Some((rate, a.live_recall_cpu)),
        },
        tls: match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(tessera_server::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: a.tls_client_ca.clone(),
            }),
            _ => None,
        },
        backup_dir: a.backup_dir.clone(),
        models: a.models.clone(),
        seal_idle: (a.seal_idle_ms > 0).then(|| Duration::from_millis(a.seal_idle_ms)),
    };
    let auth = if config.keys.is_empty() { "off" } else { "on" };
    let tls = match &config.tls {
        None => "off",
        Some(t) if t.client_ca.is_some() => "mutual",
        Some(_) => "on",
    };
    tessera_server::serve_blocking(config, |http, grpc| {
        let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "tessera serve: http={} grpc={} auth={auth} tls={tls}", show(http), show(grpc));
        let _ = out.flush();
    })?;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:7700")]
    pub url: String,
    /// Collection to search.
    #[arg(long)]
    pub collection: String,
    /// Queries in the bulk format (queries.jsonl + tokens).
    #[arg(long)]
    pub queries: PathBuf,
    /// Results per query.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Candidates of the two-stage search (default: the server's).
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Exact (exhaustive) search instead of two-stage.
    #[arg(long)]
    pub exact: bool,
    /// Queries per request: 1 sends `tokens`, more send a batch (`queries`).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Concurrent clients to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4, 8, 16])]
    pub clients: Vec<usize>,
    /// Seconds per setting.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Also send the same searches over gRPC to this server (`http://host:port`
    /// of its gRPC listener, `https://` with TLS): each setting is measured over HTTP, then gRPC.
    #[arg(long, value_name = "URL")]
    pub grpc: Option<String>,
    /// For https:// URLs: the CA (PEM) that issued the server's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// For a server that asks for client certificates (mutual TLS): this client's
    /// certificate (PEM), with --key-file.
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM).
    #[arg(long, value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// One JSON object per setting instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Closed-loop load on a running server's search route. The API key, if the
/// server needs one, comes from TESSERA_API_KEY.
pub fn load(a: &LoadArgs, out: &mut dyn Write) -> Result<()> {
    if !(a.seconds > 0.0 && a.seconds <= 3600.0) {
        return Err("--seconds must be in (0, 3600]".into());
    }
    if a.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let mut reader = BulkReader::open(&a.queries, "queries.jsonl")?;
    let mut queries = Vec::new();
    while let Some(q) = reader.next_doc()? {
        queries.push(q.tokens);
    }
    // Batches wrap around the query list so that every request holds `batch` queries.
    let requests: Vec<Vec<_>> = (0..queries.len().div_ceil(a.batch))
        .map(|b| (0..a.batch).map(|i| queries[(b * a.batch + i) % queries.len()].clone()).collect())
        .collect();
    let bodies: Arc<Vec<_>> =
        Arc::new(requests.iter().map(|qs| load::search_body(qs, a.k, a.candidates, a.exact)).collect());
    let messages: Arc<Vec<_>> = Arc::new(match a.grpc {
        None => Vec::new(),
        Some(_) => {
            requests.iter().map(|qs| load::search_message(&a.collection, qs, a.k, a.candidates, a.exact)).collect()
        }
    });
    let url = format!("{}/v1/collections/{}/search", a.url.trim_end_matches('/'), a.collection);
    let key = std::env::var("TESSERA_API_KEY").ok();
    let tls =
        tessera_server::tls::ClientFiles { ca: a.ca_file.clone(), cert: a.cert_file.clone(), key: a.key_file.clone() };
    let https = [Some(&a.url), a.grpc.as_ref()].into_iter().flatten().any(|u| u.starts_with("https://"));
    if !https && (a.ca_file.is_some() || a.cert_file.is_some()) {
        return Err("--ca-file, --cert-file and --key-file need an https:// URL".into());
    }
    let kernel = load::server_kernel(&a.url, key.as_deref(), &tls).unwrap_or_else(|| "unknown".into());
    if !a.json {
        writeln!(out, "server kernel: {kernel}")?;
        writeln!(
            out,
            "{} queries, {} per request, k={}, {}; {} s per setting\n\n| protocol | clients | requests/s | queries/s | p50 ms | p99 ms | max ms | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|",
            queries.len(),
            a.batch,
            a.k,
            if a.exact { "exact".to_string() } else { format!("two-stage, candidates {:?}", a.candidates) },
            a.seconds
        )?;
    }
    let seconds = Duration::from_secs_f64(a.seconds);
    for &c in &a.clients {
        let mut runs =
            vec![("http", load::blocking(load::run(&url, key.as_deref(), bodies.clone(), c, seconds, &tls))?)];
        if let Some(grpc) = &a.grpc {
            let r = load::blocking(load::run_grpc(grpc, key.as_deref(), messages.clone(), c, seconds, &tls))?;
            runs.push(("grpc", r));
        }
        for (protocol, r) in runs {
            print_load(out, a, protocol, &r, &kernel)?;
        }
    }
    Ok(())
}

/// One setting's line of `tessera bench serve`: a JSON object or a table row.
fn print_load(out: &mut dyn Write, a: &LoadArgs, protocol: &str, r: &load::LoadReport, kernel: &str) -> Result<()> {
    if a.json {
        let mut v = serde_json::to_value(r)?;
        v["protocol"] = protocol.into();
        v["batch"] = a.batch.into();
        v["queries_per_s"] = (r.qps * a.batch as f64).round().into();
        v["server_kernel"] = kernel.into();
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "| {protocol} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            r.clients,
            r.qps,
            r.qps * a.batch as f64,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors
        )?;
    }
    Ok(())
}
