//! Issue #30 item 8: TLS on both ports, and mutual TLS, with certificates
//! made here (rcgen): a right and a wrong CA, an expired certificate, a
//! missing client certificate; plaintext refused on a TLS port.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use tessera_server::pb;
use tessera_server::pb::tessera_client::TesseraClient;
use tessera_server::tls::{self, ClientFiles, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> ClientFiles {
    ClientFiles { ca: Some(ca.into()), cert: cert.map(|c| c.0.clone()), key: cert.map(|c| c.1.clone()) }
}

/// `GET /health` over HTTPS: the status line, or the error that stopped it.
async fn https_health(addr: std::net::SocketAddr, files: &ClientFiles) -> Result<String, String> {
    let config = tls::client_config(files, b"http/1.1")?;
    let mut s = tls::connect(config, "localhost", &addr.to_string()).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    text.lines().next().map(str::to_string).filter(|l| !l.is_empty()).ok_or_else(|| "no answer".to_string())
}

/// A gRPC health call over TLS.
async fn grpc_health(addr: std::net::SocketAddr, files: &ClientFiles) -> Result<(), String> {
    let channel = tls::grpc_channel(&format!("https://localhost:{}", addr.port()), files).await?;
    TesseraClient::new(channel).health(pb::HealthRequest {}).await.map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn tls_on_both_ports_refuses_plaintext_a_wrong_ca_and_an_expired_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, other) = (Ca::new(d, "ca"), Ca::new(d, "other-ca"));
    let server_cert = ca.issue(d, "server", &["localhost", "127.0.0.1"], false);
    let s = TestServer::start_with(&d.join("db"), |c| {
        c.tls = Some(TlsFiles { cert: server_cert.0.clone(), key: server_cert.1.clone(), client_ca: None });
    });
    let (http, grpc) = (s.http, s.grpc);
    s.rt.block_on(async {
        let good = client(&ca.pem, None);
        assert_eq!(https_health(http, &good).await.unwrap(), "HTTP/1.1 200 OK");
        grpc_health(grpc, &good).await.expect("gRPC over TLS");
        // A client that trusts another CA refuses the server.
        let e = https_health(http, &client(&other.pem, None)).await.unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
        assert!(grpc_health(grpc, &client(&other.pem, None)).await.is_err());
    });
    // Plaintext on the TLS ports: HTTP is told to use HTTPS; gRPC is closed.
    let r = get(http, "/health");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("this port serves HTTPS"), "{}", r.body);
    let plain = s.rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await;
        match ch {
            Ok(ch) => TesseraClient::new(ch).health(pb::HealthRequest {}).await.map(|_| ()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        }
    });
    assert!(plain.is_err(), "plaintext gRPC on a TLS port");
    s.stop().unwrap();

    // A server whose certificate expired: clients refuse it.
    let expired = ca.issue(d, "expired-server", &["localhost"], true);
    let s = TestServer::start_with(&d.join("db2"), |c| {
        c.tls = Some(TlsFiles { cert: expired.0.clone(), key: expired.1.clone(), client_ca: None });
    });
    let e = s.rt.block_on(https_health(s.http, &client(&ca.pem, None))).unwrap_err();
    assert!(e.contains("certificate expired"), "{e}");
    s.stop().unwrap();
}

#[test]
fn mutual_tls_takes_only_valid_client_certificates_of_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, clients_ca, other) = (Ca::new(d, "ca"), Ca::new(d, "clients-ca"), Ca::new(d, "other-ca"));
    let server_cert = ca.issue(d, "server", &["localhost"], false);
    let s = TestServer::start_with(&d.join("db"), |c| {
        c.tls = Some(TlsFiles {
            cert: server_cert.0.clone(),
            key: server_cert.1.clone(),
            client_ca: Some(clients_ca.pem.clone()),
        });
    });
    let (http, grpc) = (s.http, s.grpc);
    let valid = clients_ca.issue(d, "client", &["client.example"], false);
    let expired = clients_ca.issue(d, "old-client", &["client.example"], true);
    let foreign = other.issue(d, "foreign-client", &["client.example"], false);
    s.rt.block_on(async {
        let with = |c: &(PathBuf, PathBuf)| client(&ca.pem, Some(c));
        assert_eq!(https_health(http, &with(&valid)).await.unwrap(), "HTTP/1.1 200 OK");
        grpc_health(grpc, &with(&valid)).await.expect("gRPC with a valid client certificate");
        for (what, files) in
            [("none", client(&ca.pem, None)), ("expired", with(&expired)), ("another CA's", with(&foreign))]
        {
            let e = https_health(http, &files).await.expect_err(what);
            assert!(!e.contains("200"), "{what}: {e}");
            assert!(grpc_health(grpc, &files).await.is_err(), "{what} over gRPC");
        }
    });
    s.stop().unwrap();
}

#[test]
fn bad_tls_files_are_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let (cert, key) = ca.issue(d, "server", &["localhost"], false);
    std::fs::write(d.join("empty.pem"), "").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (files, says) in [
        (TlsFiles { cert: d.join("missing.pem"), key: key.clone(), client_ca: None }, "--tls-cert"),
        (TlsFiles { cert: d.join("empty.pem"), key: key.clone(), client_ca: None }, "no PEM certificate"),
        (TlsFiles { cert: cert.clone(), key: d.join("empty.pem"), client_ca: None }, "--tls-key"),
        (TlsFiles { cert: cert.clone(), key: ca.pem.clone(), client_ca: None }, "--tls-key"),
        (TlsFiles { cert: cert.clone(), key: key.clone(), client_ca: Some(d.join("empty.pem")) }, "--tls-client-ca"),
    ] {
        let mut config = tessera_server::ServerConfig::new(d.join("db"));
        (config.http, config.grpc) = (Some("127.0.0.1:0".parse().unwrap()), None);
        config.tls = Some(files);
        let e = rt.block_on(tessera_server::Server::bind(config)).unwrap_err().to_string();
        assert!(e.contains(says), "{says}: {e}");
    }
}
