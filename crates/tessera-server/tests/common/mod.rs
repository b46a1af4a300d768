//! A real server on ephemeral loopback ports, a raw HTTP/1.1 client (so tests
//! can send anything, malformed requests included), a gRPC client, and an
//! independent MaxSim reference.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;
use tessera_server::pb::tessera_client::TesseraClient;
use tessera_server::{ApiKeys, Limits, Server, ServerConfig};

pub struct TestServer {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<Result<(), tessera_server::ServeError>>>,
}

impl TestServer {
    pub fn start(db: &Path, limits: Limits, keys: ApiKeys) -> Self {
        Self::start_with(db, |c| {
            c.limits = limits;
            c.keys = keys;
        })
    }

    /// A server with the test defaults changed by `edit`.
    pub fn start_with(db: &Path, edit: impl FnOnce(&mut ServerConfig)) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config = ServerConfig {
            db: db.to_path_buf(),
            http: Some("127.0.0.1:0".parse().unwrap()),
            grpc: Some("127.0.0.1:0".parse().unwrap()),
            limits: Limits::default(),
            keys: ApiKeys::default(),
            threads: 2,
            drain_timeout: Duration::from_secs(30),
            max_connections: 1024,
            backup_dir: None,
            max_connections_per_address: 1024,
            grpc_idle_timeout: tessera_server::DEFAULT_GRPC_IDLE_TIMEOUT,
            tls: None,
            live_recall: None,
            models: Vec::new(),
            seal_idle: Some(tessera::DEFAULT_SEAL_IDLE),
        };
        let mut config = config;
        edit(&mut config);
        let server = rt.block_on(Server::bind(config)).unwrap();
        let (http, grpc) = (server.http_addr().unwrap(), server.grpc_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = rt.spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self { http, grpc, rt, stop: Some(tx), done: Some(done) }
    }

    pub fn default(db: &Path) -> Self {
        Self::start(db, Limits::default(), ApiKeys::default())
    }

    /// Graceful shutdown; returns what `Server::run` returned.
    pub fn stop(mut self) -> Result<(), tessera_server::ServeError> {
        self.stop.take().unwrap().send(()).ok();
        let done = self.done.take().unwrap();
        self.rt.block_on(done).unwrap()
    }

    pub fn grpc_client(&self) -> TesseraClient<tonic::transport::Channel> {
        let url = format!("http://{}", self.grpc);
        self.rt.block_on(TesseraClient::connect(url)).unwrap().max_decoding_message_size(usize::MAX)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            tx.send(()).ok();
            if let Some(done) = self.done.take() {
                let _ = self.rt.block_on(done);
            }
        }
    }
}

/// Small limits, so that tests can reach each of them.
pub fn small_limits() -> Limits {
    Limits {
        max_body_bytes: 4096,
        max_query_tokens: 4,
        max_doc_tokens: 5,
        max_batch_docs: 3,
        max_k: 7,
        max_candidates: 50,
        max_ids: 4,
        max_batch_queries: 3,
        max_batch_tokens: 8,
        max_response_bytes: 2000,
        ..Limits::default()
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends raw bytes as one request (the connection is closed after it).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    try_raw(addr, request).unwrap_or_else(|e| panic!("no HTTP response: {e}"))
}

/// [`raw`], or why no response came (refused, closed early).
pub fn try_raw(addr: SocketAddr, request: &[u8]) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP response: {text:?}"))?;
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    Ok(Reply { status, headers: head.to_string(), body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (len, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(len.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// One HTTP request with an optional API key and body.
pub fn http(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(k) = key {
        req += &format!("Authorization: Bearer {k}\r\n");
    }
    if let Some(b) = body {
        req += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len());
    } else {
        req += "\r\n";
    }
    raw(addr, req.as_bytes())
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    http(addr, "GET", path, None, None)
}

pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    http(addr, "POST", path, None, Some(&body.to_string()))
}

/// Posts and asserts a 2xx, returning the JSON.
pub fn ok(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let r = post(addr, path, body);
    assert!((200..300).contains(&r.status), "POST {path}: {} {}", r.status, r.body);
    r.json()
}

/// Deterministic pseudo-random numbers (the engine's splitmix64).
pub struct Rng(tessera::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(tessera::SplitMix64::new(seed))
    }

    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `n` rows of `dim` values, each row unit length.
    pub fn tokens(&mut self, n: usize, dim: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| self.f32()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }
}

/// Rounds to f16 and back: what the database stores.
pub fn f16_round(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    rows.iter().map(|r| r.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()).collect()
}

/// Naive MaxSim in f64: Σ over query tokens of the max dot product.
pub fn maxsim(q: &[Vec<f32>], d: &[Vec<f32>]) -> f64 {
    q.iter()
        .map(|qt| {
            d.iter()
                .map(|dt| qt.iter().zip(dt).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>())
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum()
}

/// Packs rows as `{"dtype": "f32"|"f16", "shape", "data": base64}`.
pub fn packed(rows: &[Vec<f32>], f16: bool) -> Value {
    use base64::Engine as _;
    let bytes: Vec<u8> = if f16 {
        rows.iter().flatten().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect()
    } else {
        rows.iter().flatten().flat_map(|&x| x.to_le_bytes()).collect()
    };
    serde_json::json!({
        "dtype": if f16 { "f16" } else { "f32" },
        "shape": [rows.len(), rows[0].len()],
        "data": base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// Rows from a JSON nested array.
pub fn rows_of(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

/// A certificate authority for TLS tests: it signs certificates into a folder.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// Its certificate (PEM).
    pub pem: std::path::PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        Self { issuer: rcgen::Issuer::new(p, key), pem }
    }

    /// A certificate for `names` (its key beside it), valid now or expired
    /// in 2021: `(cert, key)` files.
    pub fn issue(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
        expired: bool,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        use rcgen::{CertificateParams, DnType, KeyPair, date_time_ymd};
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, file);
        if expired {
            (p.not_before, p.not_after) = (date_time_ymd(2020, 1, 1), date_time_ymd(2021, 1, 1));
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}
