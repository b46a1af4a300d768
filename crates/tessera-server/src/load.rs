//! A closed-loop load generator for `tessera bench serve`, over HTTP or
//! gRPC: `clients` concurrent keep-alive connections each send the next
//! request as soon as the previous answer is read, for a fixed time. Reports
//! throughput and latency percentiles; any non-2xx answer (non-OK status) or
//! transport error is counted.

use crate::pb;
use crate::tls::ClientFiles;
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub clients: usize,
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub qps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// POSTs `bodies` (round robin; client `i` starts at body `i`) to `url` from
/// `clients` concurrent connections for `duration`; an `https://` URL over
/// TLS with `tls`.
pub async fn run(
    url: &str,
    key: Option<&str>,
    bodies: Arc<Vec<Bytes>>,
    clients: usize,
    duration: Duration,
    tls: &ClientFiles,
) -> Result<LoadReport, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if bodies.is_empty() || clients == 0 {
        return Err("need at least one request body and one client".into());
    }
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_max_idle_per_host(clients);
    if uri.scheme_str() == Some("https") {
        let client: Client<_, Full<Bytes>> = builder.build(crate::tls::https_connector(tls)?);
        return run_with(client, uri, key, bodies, clients, duration).await;
    }
    run_with(builder.build_http(), uri, key, bodies, clients, duration).await
}

async fn run_with<C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static>(
    client: Client<C, Full<Bytes>>,
    uri: hyper::Uri,
    key: Option<&str>,
    bodies: Arc<Vec<Bytes>>,
    clients: usize,
    duration: Duration,
) -> Result<LoadReport, String> {
    let auth = key.map(|k| format!("Bearer {k}"));
    closed_loop(clients, duration, move |_, i| {
        let mut req = hyper::Request::post(uri.clone()).header("content-type", "application/json");
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let req = req.body(Full::new(bodies[i % bodies.len()].clone())).expect("request");
        let client = client.clone();
        async move {
            match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    resp.into_body().collect().await.is_ok() && status.is_success()
                }
                Err(_) => false,
            }
        }
    })
    .await
}

/// The closed loop: client `c` awaits `send(c, i)` for `i` = c, c + 1, …
/// (each call `true` when answered without an error) until `duration` is
/// over, timing each call.
async fn closed_loop<Fut: Future<Output = bool> + Send + 'static>(
    clients: usize,
    duration: Duration,
    send: impl Fn(usize, usize) -> Fut + Send + Sync + 'static,
) -> Result<LoadReport, String> {
    let send = Arc::new(send);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let send = send.clone();
        tasks.spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            let mut i = c;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = send(c, i).await;
                i += 1;
                if ok {
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        });
    }
    report(clients, start, tasks).await
}

/// Gathers the clients' latencies (ms) and error counts into a report.
async fn report(
    clients: usize,
    start: Instant,
    mut tasks: tokio::task::JoinSet<(Vec<f64>, usize)>,
) -> Result<LoadReport, String> {
    let (mut lat, mut errors) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (l, e) = r.map_err(|e| e.to_string())?;
        lat.extend(l);
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| if lat.is_empty() { f64::NAN } else { lat[((lat.len() - 1) as f64 * p).round() as usize] };
    Ok(LoadReport {
        clients,
        requests: lat.len(),
        errors,
        seconds,
        qps: lat.len() as f64 / seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
    })
}

/// The gRPC twin of [`run`]: `clients` connections (one channel each) send
/// `requests` (round robin; client `i` starts at request `i`) to the server at
/// `url` (`http://host:port`) for `duration`, as `Search` calls, or as
/// `SearchBatch` calls where a request holds several queries.
pub async fn run_grpc(
    url: &str,
    key: Option<&str>,
    requests: Arc<Vec<GrpcSearch>>,
    clients: usize,
    duration: Duration,
    tls: &ClientFiles,
) -> Result<LoadReport, String> {
    use crate::pb::tessera_client::TesseraClient;
    if requests.is_empty() || clients == 0 {
        return Err("need at least one request and one client".into());
    }
    let auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = match key {
        Some(k) => Some(format!("Bearer {k}").parse().map_err(|_| "the API key is not valid in a header".to_string())?),
        None => None,
    };
    let mut channels = Vec::with_capacity(clients);
    for _ in 0..clients {
        let channel = crate::tls::grpc_channel(url, tls).await?;
        channels.push(TesseraClient::new(channel).max_decoding_message_size(usize::MAX));
    }
    closed_loop(clients, duration, move |c, i| {
        let (mut client, auth) = (channels[c].clone(), auth.clone());
        let request = requests[i % requests.len()].clone();
        async move {
            match request {
                GrpcSearch::One(r) => client.search(authorized(r, auth.as_ref())).await.is_ok(),
                GrpcSearch::Batch(r) => client.search_batch(authorized(r, auth.as_ref())).await.is_ok_and(|a| {
                    a.get_ref().results.iter().all(|r| matches!(r.result, Some(pb::search_result::Result::Response(_))))
                }),
            }
        }
    })
    .await
}

/// `message` as a request, with the API key's metadata if there is one.
fn authorized<T>(
    message: T,
    auth: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(a) = auth {
        r.metadata_mut().insert("authorization", a.clone());
    }
    r
}

/// One request of a gRPC load: a single query or a batch.
#[derive(Debug, Clone)]
pub enum GrpcSearch {
    One(pb::SearchRequest),
    Batch(pb::SearchBatchRequest),
}

/// The gRPC twin of [`search_body`]: the same searches as `Search` or
/// `SearchBatch` messages (f32 tensors).
pub fn search_message(
    collection: &str,
    queries: &[tessera::Tokens],
    k: usize,
    candidates: Option<usize>,
    exact: bool,
) -> GrpcSearch {
    let tensor = |tokens: &tessera::Tokens| {
        let (data, n, dim) = f32_le(tokens);
        pb::Tensor { dtype: pb::Dtype::F32.into(), shape: vec![n as u64, dim as u64], data }
    };
    let search = pb::SearchRequest {
        collection: collection.to_string(),
        k: k as u32,
        candidates: candidates.map(|c| c as u32),
        exact,
        omit_text: true,
        omit_payload: true,
        ..Default::default()
    };
    match queries {
        [one] => GrpcSearch::One(pb::SearchRequest { query: Some(tensor(one)), ..search }),
        many => GrpcSearch::Batch(pb::SearchBatchRequest {
            search: Some(search),
            queries: many.iter().map(tensor).collect(),
            query_texts: Vec::new(),
            texts: Vec::new(),
        }),
    }
}

/// A query's tokens as little-endian f32 bytes, with its token count and dim.
fn f32_le(tokens: &tessera::Tokens) -> (Vec<u8>, usize, usize) {
    let (data, dim): (Vec<u8>, usize) = match tokens {
        tessera::Tokens::F32 { data, dim } => (data.iter().flat_map(|x| x.to_le_bytes()).collect(), *dim),
        tessera::Tokens::F16 { data, dim } => (data.iter().flat_map(|x| x.to_f32().to_le_bytes()).collect(), *dim),
    };
    let n = data.len() / 4 / dim.max(1);
    (data, n, dim)
}

/// A search request body: one query (`tokens`) or, given several, a batch
/// (`queries`), each packed as base64 little-endian f32.
pub fn search_body(queries: &[tessera::Tokens], k: usize, candidates: Option<usize>, exact: bool) -> Bytes {
    use base64::Engine as _;
    let packed = |tokens: &tessera::Tokens| {
        let (data, n, dim) = f32_le(tokens);
        serde_json::json!({"dtype": "f32", "shape": [n, dim], "data": base64::engine::general_purpose::STANDARD.encode(data)})
    };
    let mut body = serde_json::json!({
        "k": k,
        "exact": exact,
        "include_text": false,
        "include_payload": false,
    });
    match queries {
        [one] => body["tokens"] = packed(one),
        many => body["queries"] = many.iter().map(packed).collect(),
    }
    if let Some(c) = candidates {
        body["candidates"] = c.into();
    }
    Bytes::from(body.to_string())
}

/// A load ([`run`] or [`run_grpc`]) on a fresh runtime.
pub fn blocking(load: impl Future<Output = Result<LoadReport, String>>) -> Result<LoadReport, String> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(load)
}

/// The kernel labels of a server's `tessera_build_info` metric (`kernel="…",chosen_by="…",…`),
/// or `None` if `/metrics` cannot be read (auth, an older server).
pub fn server_kernel(base_url: &str, key: Option<&str>, tls: &ClientFiles) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(async {
        let uri: hyper::Uri = format!("{}/metrics", base_url.trim_end_matches('/')).parse().ok()?;
        let mut req = hyper::Request::get(uri.clone());
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = req.body(Full::new(Bytes::new())).ok()?;
        let builder = Client::builder(TokioExecutor::new());
        let resp = if uri.scheme_str() == Some("https") {
            let client: Client<_, Full<Bytes>> = builder.build(crate::tls::https_connector(tls).ok()?);
            client.request(req).await.ok()?
        } else {
            builder.build_http().request(req).await.ok()?
        };
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        let text = String::from_utf8_lossy(&body);
        let line = text.lines().find(|l| l.starts_with("tessera_build_info{"))?;
        let labels = line.split_once('{')?.1.rsplit_once('}')?.0;
        Some(labels.split(',').filter(|l| !l.starts_with("version=")).collect::<Vec<_>>().join(","))
    })
}
