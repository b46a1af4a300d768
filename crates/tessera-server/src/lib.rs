//! The Tessera query server: one service layer ([`service`]) with two thin
//! adapters, JSON over HTTP ([`http`], axum) and gRPC ([`grpc`], tonic).
//!
//! ```no_run
//! # async fn run() -> Result<(), tessera_server::ServeError> {
//! use tessera_server::{Server, ServerConfig};
//! let config = ServerConfig::new("data/db");
//! let server = Server::bind(config).await?;
//! println!("http on {:?}", server.http_addr());
//! server.run(tessera_server::shutdown_signal()).await
//! # }
//! ```
//!
//! Shutdown: when the signal future resolves the listeners stop accepting,
//! requests in flight complete (for up to the drain timeout), later writes
//! are refused, every collection is flushed, and [`Server::run`] returns.
//!
//! | module | owns |
//! |---|---|
//! | [`service`] | every operation with the server's limits (`service/limits.rs`) and validation; its requests and answers (`service/types.rs`); searches read into `tessera::SearchOptions` |
//! | [`http`] | the JSON-over-HTTP adapter (axum) and `openapi.json` |
//! | [`grpc`] | the gRPC adapter (tonic) and its one conversion of each message |
//! | [`auth`] | API keys and the access each route or rpc needs |
//! | [`error`] | the error kinds and how each interface reports them |
//! | [`metrics`] | Prometheus metrics |
//! | [`load`] | the closed-loop load generator of `tessera bench serve` (HTTP and gRPC) |
//! | [`pb`] | the types generated from `proto/tessera.proto` |
//! | [`conn`] | the bounds on connections: caps, the descriptor reserve, idle gRPC connections, metered request bodies |
//! | [`tls`] | TLS (rustls) for both listeners, mutual TLS, and the clients' side |
//! | [`live`] | live recall: sampled answers searched again exactly in the background |
//! | (this file) | binding, the accept loops, graceful shutdown |

pub mod auth;
pub mod conn;
pub mod error;
pub mod grpc;
pub mod http;
pub mod live;
pub mod load;
pub mod metrics;
pub mod service;
pub mod tls;

/// Types generated from `proto/tessera.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("tessera.v1");
}

pub use auth::{Access, ApiKeys};
pub use error::{ApiError, ErrorKind};
pub use service::{Limits, Service};

use conn::{Caps, Held};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera::Database;
use tokio::net::TcpListener;

/// Concurrent gRPC streams (requests) one connection may have open.
const GRPC_STREAMS_PER_CONNECTION: u32 = 64;

/// How long a gRPC connection may stay open with no rpc in flight.
pub const DEFAULT_GRPC_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub db: PathBuf,
    /// HTTP address; `None`: no HTTP. Port 0 picks a free port.
    pub http: Option<SocketAddr>,
    /// gRPC address; `None`: no gRPC.
    pub grpc: Option<SocketAddr>,
    pub limits: Limits,
    pub keys: ApiKeys,
    /// Search threads (0: one per core).
    pub threads: usize,
    /// How long shutdown waits for requests in flight. After it, HTTP
    /// connections are closed, writes are refused (503 / UNAVAILABLE), the
    /// writes running complete, everything is flushed and `run` returns; gRPC
    /// connections still open end with the runtime.
    pub drain_timeout: Duration,
    /// Open connections at most, per listener (HTTP, gRPC); more wait in
    /// the listen backlog. Lowered at start if the descriptor limit would
    /// leave the engine too few (`conn::fit_descriptors`).
    pub max_connections: usize,
    /// Open connections one client address may hold, per listener; a
    /// connection beyond it is answered 429 and closed (HTTP) or closed at
    /// once (gRPC), so one client cannot take every connection.
    pub max_connections_per_address: usize,
    /// A gRPC connection with no rpc in flight for this long is closed.
    pub grpc_idle_timeout: Duration,
    /// Serve both listeners over TLS (and with a client CA, mutual TLS).
    pub tls: Option<tls::TlsFiles>,
    /// Live recall: `(rate, cpu_share)` — the share of two-stage searches
    /// searched again exactly in the background, and the share of one core
    /// that may take (`None`: off).
    pub live_recall: Option<(f64, f64)>,
    /// Where `POST /v1/backup` writes backups; `None`: it is refused.
    pub backup_dir: Option<PathBuf>,
    /// Models requests may name (creating a bound collection, `/v1/encode`,
    /// a reindex), loaded at start: `(NAME, folder)`.
    pub models: Vec<(String, PathBuf)>,
    /// Seal a collection's memtable once no write came for this long
    /// (`None`: only when full or flushed); see `Database::set_seal_idle`.
    pub seal_idle: Option<Duration>,
}

impl ServerConfig {
    /// Loopback HTTP on 7700 and gRPC on 7701, default limits, no keys.
    pub fn new(db: impl Into<PathBuf>) -> Self {
        Self {
            db: db.into(),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 7700))),
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 7701))),
            limits: Limits::default(),
            keys: ApiKeys::default(),
            threads: 0,
            drain_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_address: 256,
            grpc_idle_timeout: DEFAULT_GRPC_IDLE_TIMEOUT,
            tls: None,
            live_recall: None,
            backup_dir: None,
            models: Vec::new(),
            seal_idle: Some(tessera::DEFAULT_SEAL_IDLE),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Database(#[from] tessera::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Setup(String),
    #[error("server: {0}")]
    Serve(String),
    #[error("flushing {collection} at shutdown: {error}")]
    Flush { collection: String, error: tessera::Error },
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    service: Arc<Service>,
    drain_timeout: Duration,
    http: Option<(TcpListener, Caps)>,
    grpc: Option<(TcpListener, Caps)>,
    grpc_idle_timeout: Duration,
    tls: Option<tls::Tls>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("http", &self.http_addr()).field("grpc", &self.grpc_addr()).finish()
    }
}

async fn listen(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, ServeError> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr).await.map(Some).map_err(|source| ServeError::Bind { addr, source }),
    }
}

impl Server {
    /// Opens (or creates) the database and binds the listeners.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServeError> {
        if config.http.is_none() && config.grpc.is_none() {
            return Err(ServeError::Setup("nothing to serve: give an HTTP or a gRPC address".into()));
        }
        let exposed = [config.http, config.grpc].into_iter().flatten().any(|a| !a.ip().is_loopback());
        if exposed && config.keys.is_empty() {
            tracing::warn!("listening beyond loopback without API keys: anyone who can connect may read and write");
        }
        if exposed && config.tls.is_none() {
            tracing::warn!("listening beyond loopback without TLS: keys and data cross the network in the clear");
        }
        let tls = config.tls.as_ref().map(tls::Tls::load).transpose().map_err(ServeError::Setup)?;
        if let Some(dir) = &config.backup_dir {
            // Backups written into the database's folder would break it.
            tessera::refuse_inside(dir, &config.db, "the backup folder")
                .map_err(|e| ServeError::Setup(e.to_string()))?;
            // What backups killed mid-flight left there.
            let stale = tessera::remove_stale_stages(dir).map_err(|e| ServeError::Setup(e.to_string()))?;
            if stale > 0 {
                tracing::info!(stale, dir = %dir.display(), "removed the staging folders of interrupted backups");
            }
        }
        let path = config.db.clone();
        let db = tokio::task::spawn_blocking(move || Database::open(path))
            .await
            .map_err(|e| ServeError::Setup(format!("opening the database: {e}")))??;
        db.set_seal_idle(config.seal_idle);
        let service = Service::new(Arc::new(db), config.limits, config.keys, config.threads)
            .map_err(|e| ServeError::Setup(e.message))?
            .with_backup_dir(config.backup_dir);
        if let Some((rate, share)) = config.live_recall {
            service.live.start(rate, share).map_err(ServeError::Setup)?;
        }
        let models = config.models;
        let service = tokio::task::spawn_blocking(move || service.with_models(&models))
            .await
            .map_err(|e| ServeError::Setup(format!("loading the models: {e}")))?
            .map_err(|e| ServeError::Setup(e.message))?;
        let (http, grpc) = (listen(config.http).await?, listen(config.grpc).await?);
        let wanted: Vec<usize> =
            [&http, &grpc].iter().filter(|l| l.is_some()).map(|_| config.max_connections).collect();
        let mut fitted = conn::fit_descriptors(&wanted).into_iter();
        let per_address = config.max_connections_per_address;
        let mut capped =
            |l: Option<TcpListener>| l.map(|l| (l, Caps::new(fitted.next().expect("one each"), per_address)));
        let server = Self {
            service: Arc::new(service),
            drain_timeout: config.drain_timeout,
            http: capped(http),
            grpc: capped(grpc),
            grpc_idle_timeout: config.grpc_idle_timeout,
            tls,
        };
        tracing::info!(db = %config.db.display(), http = ?server.http_addr(), grpc = ?server.grpc_addr(), "serving");
        Ok(server)
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Serves until `shutdown` resolves; then drains requests in flight
    /// (up to the drain timeout), refuses later writes, flushes every
    /// collection and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let service = self.service.clone();
        tokio::spawn(async move {
            shutdown.await;
            service.begin_drain();
            tracing::info!("shutting down: no new connections; draining requests in flight");
            let _ = tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move { until_stop(&mut rx).await };
        let mut tasks = tokio::task::JoinSet::new();
        if let Some((listener, caps)) = self.http {
            let app = http::router(self.service.clone());
            let stop = rx.clone();
            let tls = self.tls.as_ref().map(|t| t.http.clone());
            tasks.spawn(async move {
                serve_http(listener, app, stop, caps, tls).await;
                Ok(())
            });
        }
        if let Some((listener, caps)) = self.grpc {
            let svc = grpc::Grpc::server(self.service.clone());
            let max_body = self.service.limits.max_body_bytes;
            let (auth_service, conn_service) = (self.service.clone(), self.service.clone());
            let signal = stopped(rx.clone());
            let idle = self.grpc_idle_timeout;
            let tls = self.tls.as_ref().map(|t| t.grpc.clone());
            tasks.spawn(async move {
                tonic::transport::Server::builder()
                    .max_concurrent_streams(GRPC_STREAMS_PER_CONNECTION)
                    .concurrency_limit_per_connection(GRPC_STREAMS_PER_CONNECTION as usize)
                    .layer(grpc::AuthLayer(auth_service))
                    .layer(grpc::ConnLayer(conn_service))
                    .layer(tower::util::MapResponseLayer::new(grpc::body_limit_status(max_body)))
                    .add_service(svc)
                    .serve_with_incoming_shutdown(grpc_incoming(listener, caps, idle, tls), signal)
                    .await
                    .map_err(|e| ServeError::Serve(e.to_string()))
            });
        }
        let mut result = Ok(());
        let mut deadline = None;
        loop {
            let finished = match deadline {
                None => tokio::select! {
                    r = tasks.join_next() => r,
                    _ = stopped(rx.clone()) => {
                        deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
                        continue;
                    }
                },
                Some(d) => match tokio::time::timeout_at(d, tasks.join_next()).await {
                    Ok(r) => r,
                    Err(_) => {
                        // Aborting the HTTP server closes its connections
                        // (they are its tasks). gRPC connections are tonic's:
                        // their writes are refused from here on, and they end
                        // with the runtime.
                        tracing::warn!(
                            "requests still in flight after the drain timeout: closing HTTP connections, refusing writes, flushing"
                        );
                        tasks.abort_all();
                        while tasks.join_next().await.is_some() {}
                        break;
                    }
                },
            };
            let Some(r) = finished else { break };
            let r = r.map_err(|e| ServeError::Serve(e.to_string())).and_then(|r| r);
            if r.is_err() && result.is_ok() {
                result = r;
            }
        }
        // No write may land after the flush: refuse new ones, wait for those running.
        self.service.close_writes().await;
        let service = self.service.clone();
        let failed = tokio::task::spawn_blocking(move || service.flush_all())
            .await
            .map_err(|e| ServeError::Serve(format!("flush at shutdown: {e}")))?;
        for (collection, error) in &failed {
            tracing::error!(%collection, %error, "flush at shutdown failed; the WAL keeps every write");
        }
        if let Some((collection, error)) = failed.into_iter().next() {
            return Err(ServeError::Flush { collection, error });
        }
        tracing::info!("shut down cleanly");
        result
    }
}

/// The gRPC listener's connections, under its caps: the next is accepted
/// once one of `max_connections` is free, and one beyond an address's
/// `per_address` is closed at once. Each is answered with TCP_NODELAY, as the
/// HTTP ones are: with Nagle's algorithm on, a small answer written in two
/// pieces (headers, then data) waits for the client's delayed ACK, which added
/// about 40 ms to every gRPC search. With `tls`, each completes its handshake
/// in a task of its own before it is handed over. Each closes after `idle`
/// with no rpc in flight. The accept loop ends when tonic drops the stream.
fn grpc_incoming(
    listener: TcpListener,
    caps: Caps,
    idle: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> impl futures_util::Stream<Item = std::io::Result<conn::GrpcConn<tls::Stream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let slot = tokio::select! {
                slot = caps.slot() => slot,
                _ = tx.closed() => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = conn::accept(&listener) => accepted,
                _ = tx.closed() => break,
            };
            let Some(address) = caps.address(peer.ip()) else {
                let per_address = caps.per_address;
                tracing::warn!(%peer, per_address, "gRPC connection closed: the address holds max_connections_per_address");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                let held = Held::new(slot, address);
                let Some(io) = tls::accept(tls.as_ref(), stream, peer, None).await else { return };
                let _ = tx.send(Ok(conn::GrpcConn::new(io, peer, held, idle))).await;
            });
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// How long a client may take to send a request's headers (also the idle
/// time of a kept-alive connection before its next request).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP accept loop: at most `max` connections (more wait in the
/// backlog) and `per_address` from one client address (more are answered
/// 429 and closed), a header read timeout, and on `stop` a graceful close:
/// requests in flight finish, idle connections close, no new ones are
/// accepted. The connections are tasks of this future: dropping it closes them all.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    caps: Caps,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let per_address = caps.per_address;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = caps.slot() => slot,
            _ = until_stop(&mut stop) => break,
        };
        let stream = loop {
            tokio::select! {
                accepted = conn::accept(&listener) => break Some(accepted),
                _ = until_stop(&mut stop) => break None,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        };
        let Some((mut stream, peer)) = stream else { break };
        let Some(held) = caps.address(peer.ip()) else {
            tracing::warn!(%peer, per_address, "connection refused: the address holds max_connections_per_address");
            if tls.is_some() {
                continue; // closed: a plaintext answer would be noise to a TLS client
            }
            // The refusal holds its connection slot until it is done, so that
            // refused connections count against max_connections too.
            conns.spawn(async move {
                let _slot = slot;
                conn::answer_and_close(&mut stream, &too_many(per_address), 1 << 20).await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for its share of max_receiving_bytes.
        let address = conn::ClientAddress(peer.ip());
        let svc = hyper_util::service::TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(address);
                req
            },
        ));
        let (watcher, tls) = (graceful.watcher(), tls.clone());
        conns.spawn(async move {
            let _held = Held::new(slot, held);
            let refusal = tls::plaintext_refusal();
            let Some(io) = tls::accept(tls.as_ref(), stream, peer, Some(&refusal)).await else { return };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(io), svc);
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    while conns.join_next().await.is_some() {}
}

/// The 429 answer (and close) of a connection beyond `max_connections_per_address`.
fn too_many(most: usize) -> Vec<u8> {
    let e = ApiError {
        kind: ErrorKind::TooManyConnections,
        message: format!("this address holds {most} connections already, the limit max_connections_per_address"),
        limit: Some("max_connections_per_address"),
    };
    let detail = error::ErrorDetail { code: e.kind, message: &e.message, limit: e.limit };
    let body = serde_json::to_string(&error::ErrorBody { error: detail }).expect("an error body serialises");
    format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn until_stop(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, never held across an await.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Resolves on ctrl-c (SIGINT) or SIGTERM. The handlers are installed when
/// this is called (inside a runtime), not when the future is first polled,
/// so a signal that arrives before the server runs is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok());
        async move {
            tokio::select! {
                _ = recv(term.as_mut()) => {},
                _ = recv(int.as_mut()) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(unix)]
async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Logs to stderr: human-readable, or one JSON object per line. The level
/// comes from `TESSERA_LOG` (e.g. `info`, `tessera_server=debug`), default `info`.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Runs a server on its own tokio runtime until ctrl-c or SIGTERM. `ready`
/// is called once the listeners are bound, with their addresses.
pub fn serve_blocking(
    config: ServerConfig,
    ready: impl FnOnce(Option<SocketAddr>, Option<SocketAddr>),
) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tessera-io")
        .build()
        .map_err(|e| ServeError::Setup(format!("tokio runtime: {e}")))?;
    rt.block_on(async move {
        let signal = shutdown_signal();
        let server = Server::bind(config).await?;
        ready(server.http_addr(), server.grpc_addr());
        server.run(signal).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;

    /// Regression: a backup folder inside the database's was accepted, and the
    /// database no longer opened after one backup. It is refused at start.
    #[tokio::test]
    async fn a_backup_folder_inside_the_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("db"));
        config.http = Some("127.0.0.1:0".parse().unwrap());
        config.backup_dir = Some(dir.path().join("db").join("backups"));
        let e = Server::bind(config.clone()).await.unwrap_err().to_string();
        assert!(e.contains("inside the database"), "{e}");
        config.backup_dir = Some(dir.path().join("backups"));
        Server::bind(config).await.expect("a backup folder beside the database");
    }

    /// Regression: gRPC connections were accepted with Nagle's algorithm on
    /// (about 40 ms added to every search); they must have TCP_NODELAY, as HTTP's do.
    #[tokio::test]
    async fn grpc_connections_are_accepted_with_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(grpc_incoming(listener, Caps::new(4, 4), Duration::from_secs(60), None));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.expect("a connection").expect("accepted");
        let tls::Stream::Plain(s) = accepted.io() else { panic!("plaintext") };
        assert!(s.nodelay().unwrap(), "the server's side of a gRPC connection has TCP_NODELAY off");
    }
}
