//! TLS for both listeners (rustls, on ring), and for the clients this crate
//! has (`tessera bench serve`, the tests).
//!
//! A server given a certificate chain and its key (`serve --tls-cert FILE
//! --tls-key FILE`, PEM) speaks TLS on both ports: HTTP/1.1 on the HTTP one
//! (ALPN `http/1.1`), HTTP/2 on the gRPC one (ALPN `h2`). With a CA
//! (`--tls-client-ca FILE`) every client must present a certificate that CA
//! issued and that is valid now (mutual TLS). A TLS port refuses plaintext:
//! an HTTP client that did not start a TLS handshake is answered `400 …
//! this port serves HTTPS` in plaintext and closed; any other is closed. A
//! handshake must complete within [`HANDSHAKE_TIMEOUT`], and runs in the
//! connection's own task, so a slow one holds up no other.

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Time a client has to complete the TLS handshake after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of a TLS server (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With it, clients must present a certificate this CA issued (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A TLS server's acceptors, one per listener (their ALPN differs).
#[derive(Clone)]
pub struct Tls {
    pub http: TlsAcceptor,
    pub grpc: TlsAcceptor,
    /// Clients must present a certificate (mutual TLS).
    pub mutual: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("mutual", &self.mutual).finish()
    }
}

/// rustls on ring: classical key exchange (X25519, P-256/384) and ciphers,
/// with nothing to build but ring's own small C and assembly. rustls marks
/// ring's provider deprecated because it lacks post-quantum hybrid key
/// exchange, which its aws-lc-rs provider has at the cost of building
/// AWS-LC (a large C library) with every server build.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; an error names the file and the flag.
fn certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{flag} {}: {e}", path.display());
    let certs: Vec<_> =
        CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))?.collect::<Result<_, _>>().map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no PEM certificate (-----BEGIN CERTIFICATE-----) in it"));
    }
    Ok(certs)
}

/// The CAs of a PEM file as trust roots.
fn roots(path: &Path, flag: &str) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for c in certificates(path, flag)? {
        roots.add(c).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

impl Tls {
    /// Loads and checks the files; an error names the flag and the file.
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        let certs = certificates(&files.cert, "--tls-cert")?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                format!("--tls-key {}: no PEM private key in it", files.key.display())
            }
            e => format!("--tls-key {}: {e}", files.key.display()),
        })?;
        let verifier = match &files.client_ca {
            None => WebPkiClientVerifier::no_client_auth(),
            Some(ca) => WebPkiClientVerifier::builder_with_provider(roots(ca, "--tls-client-ca")?, provider())
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?,
        };
        let config = |alpn: &[u8]| -> Result<TlsAcceptor, String> {
            let mut c = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_client_cert_verifier(verifier.clone())
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsAcceptor::from(Arc::new(c)))
        };
        Ok(Self { http: config(b"http/1.1")?, grpc: config(b"h2")?, mutual: files.client_ca.is_some() })
    }
}

/// A connection's stream: plaintext, or TLS over TCP.
#[allow(clippy::large_enum_variant)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// A new connection's stream: as it is without `tls`; with it, once the
/// client's handshake completed within [`HANDSHAKE_TIMEOUT`]. A client that
/// did not start a handshake is sent `plaintext_answer` (if any) and closed,
/// as is one whose handshake fails (a certificate the server does not take,
/// say); `None` then.
pub async fn accept(
    tls: Option<&TlsAcceptor>,
    mut stream: TcpStream,
    peer: SocketAddr,
    plaintext_answer: Option<&[u8]>,
) -> Option<Stream> {
    let Some(acceptor) = tls else { return Some(Stream::Plain(stream)) };
    let handshake = async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != TLS_HANDSHAKE {
            tracing::debug!(%peer, "plaintext on a TLS port: refused");
            crate::conn::answer_and_close(&mut stream, plaintext_answer.unwrap_or_default(), 1 << 16).await;
            return None;
        }
        match acceptor.accept(stream).await {
            Ok(s) => Some(Stream::Tls(Box::new(s))),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await.ok().flatten()
}

/// What an HTTP client that spoke plaintext to a TLS port is told.
pub fn plaintext_refusal() -> Vec<u8> {
    let body = r#"{"error":{"code":"bad_request","message":"this port serves HTTPS: use https:// (TLS)"}}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A client's TLS settings: the CA its server's certificate must chain to
/// and, for mutual TLS, its own certificate and key (PEM files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A TLS client configuration offering `alpn` (`h2` for gRPC, `http/1.1`).
pub fn client_config(files: &ClientFiles, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let Some(ca) = &files.ca else {
        return Err("https:// needs --ca-file (the CA that issued the server's certificate)".into());
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca, "--ca-file")?);
    let mut c = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--key-file {}: {e}", key.display()))?;
            builder.with_client_auth_cert(certificates(cert, "--cert-file")?, key).map_err(|e| e.to_string())?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--cert-file and --key-file go together".into()),
    };
    c.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(c))
}

/// Connects to `addr` over TLS, checking the certificate against `host`
/// (a name or an IP address in its subject alternative names).
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    addr: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(config).connect(name, tcp).await
}

/// A client's TLS stream in hyper's pooled client (`hyper_util`'s legacy
/// `Client`), which needs its connections to say how they connected.
pub struct ClientIo(hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

impl hyper::rt::Read for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ClientIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for ClientIo {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// The host and `host:port` of a URI (the port defaulting to 443).
fn host_of(uri: &hyper::Uri) -> std::io::Result<(String, String)> {
    let host = uri.host().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let addr = format!("{}:{}", uri.host().unwrap_or_default(), uri.port_u16().unwrap_or(443));
    Ok((host, addr))
}

/// A TLS connection being made.
type Connecting = Pin<Box<dyn std::future::Future<Output = std::io::Result<ClientIo>> + Send>>;

/// A connector for hyper's pooled client that speaks TLS to every URI's host.
pub fn https_connector(
    files: &ClientFiles,
) -> Result<
    impl tower::Service<hyper::Uri, Response = ClientIo, Error = std::io::Error, Future = Connecting>
    + Clone
    + Send
    + Sync
    + 'static,
    String,
> {
    let config = client_config(files, b"http/1.1")?;
    Ok(tower::service_fn(move |uri: hyper::Uri| -> Connecting {
        let config = config.clone();
        Box::pin(async move {
            let (host, addr) = host_of(&uri)?;
            Ok(ClientIo(hyper_util::rt::TokioIo::new(connect(config, &host, &addr).await?)))
        })
    }))
}

/// A gRPC channel to `url`: `https://host:port` over TLS with `files`, or
/// `http://host:port` in plaintext.
pub async fn grpc_channel(url: &str, files: &ClientFiles) -> Result<tonic::transport::Channel, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string()).map_err(|e| format!("{url}: {e}"))?;
        return endpoint.connect().await.map_err(|e| format!("{url}: {e}"));
    }
    let config = client_config(files, b"h2")?;
    let (host, addr) = host_of(&uri).map_err(|e| format!("{url}: {e}"))?;
    let connector = tower::service_fn(move |_: hyper::Uri| {
        let (config, host, addr) = (config.clone(), host.clone(), addr.clone());
        async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connect(config, &host, &addr).await?)) }
    });
    // The channel's own URI only names the authority: TLS is the connector's.
    let plain = url.replacen("https://", "http://", 1);
    let endpoint = tonic::transport::Endpoint::from_shared(plain).map_err(|e| format!("{url}: {e}"))?;
    endpoint.connect_with_connector(connector).await.map_err(|e| format!("{url}: {e:?}"))
}
