//! Issue #30 item 9: the gRPC port's bounds, each against 127.0.0.1 (and
//! 127.0.0.2/3 as other client addresses), bounded in count and time:
//! connections per address and in all, idle connections closed, a message
//! that trickles in timed out, and the bytes being received bounded over
//! every connection and per client address.

mod common;

use common::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tessera_server::pb;
use tessera_server::pb::tessera_client::TesseraClient;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A raw TCP connection from `from` (a loopback address), sending nothing.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server closes `s` (end of stream or reset) within `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 64];
    loop {
        match tokio::time::timeout(wait, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // the server's HTTP/2 settings frame
        }
    }
}

/// A health call from `from`, with a deadline: whether it was answered.
async fn health_from(from: IpAddr, to: SocketAddr) -> Result<(), tonic::Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{to}"))
        .unwrap()
        .local_address(Some(from))
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_millis(500));
    let channel = match tokio::time::timeout(Duration::from_secs(2), endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(tonic::Status::unavailable(e.to_string())),
        Err(_) => return Err(tonic::Status::deadline_exceeded("connect")),
    };
    let mut c = TesseraClient::new(channel);
    match tokio::time::timeout(Duration::from_secs(2), c.health(pb::HealthRequest {})).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(tonic::Status::deadline_exceeded("health")),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn grpc_connections_are_capped_per_address_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), |c| {
        c.max_connections = 4;
        c.max_connections_per_address = 3;
    });
    let (grpc, http) = (s.grpc, s.http);
    s.rt.block_on(async {
        // One address holds 3; its 4th connection is closed at once, and a call over it fails.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(connect_from(ip("127.0.0.1"), grpc).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fourth = connect_from(ip("127.0.0.1"), grpc).await;
        assert!(
            closed_within(&mut fourth, Duration::from_secs(2)).await,
            "the 4th connection of one address is closed"
        );
        assert!(health_from(ip("127.0.0.1"), grpc).await.is_err(), "a client beyond its address's share is refused");
        // Another address still gets in: the 4th connection in all.
        held.push(connect_from(ip("127.0.0.2"), grpc).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The 5th in all waits in the backlog: not closed, not answered, while HTTP answers.
        let mut waiting = connect_from(ip("127.0.0.3"), grpc).await;
        assert!(!closed_within(&mut waiting, Duration::from_millis(300)).await, "waits, is not refused");
        assert!(health_from(ip("127.0.0.3"), grpc).await.is_err(), "no gRPC slot is free");
        let h = tokio::task::spawn_blocking(move || get(http, "/health").status).await.unwrap();
        assert_eq!(h, 200, "HTTP is not starved by gRPC connections");
        drop(waiting);
        // Closing the held connections frees the slots.
        held.clear();
        tokio::time::sleep(Duration::from_millis(200)).await;
        health_from(ip("127.0.0.1"), grpc).await.expect("a slot is free again");
        health_from(ip("127.0.0.3"), grpc).await.expect("and for another address");
    });
}

#[test]
fn idle_grpc_connections_are_closed_and_clients_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), |c| {
        c.grpc_idle_timeout = Duration::from_millis(300);
        c.max_connections = 2;
    });
    let grpc = s.grpc;
    s.rt.block_on(async {
        // A connection that never sends a request, and one that sent a
        // request and then went quiet, are both closed; the slots come back.
        let mut silent = connect_from(ip("127.0.0.1"), grpc).await;
        let started = Instant::now();
        assert!(closed_within(&mut silent, Duration::from_secs(3)).await, "a silent connection is closed");
        assert!(started.elapsed() >= Duration::from_millis(250), "not before its idle timeout");
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
        let mut c = TesseraClient::new(channel);
        c.health(pb::HealthRequest {}).await.expect("answered");
        tokio::time::sleep(Duration::from_millis(900)).await;
        // The channel's connection was closed while idle; the next call reconnects.
        let mut ok = false;
        for _ in 0..3 {
            if c.health(pb::HealthRequest {}).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "a client reconnects after its idle connection was closed");
        // Both slots free again: two fresh connections are accepted.
        for _ in 0..2 {
            health_from(ip("127.0.0.1"), grpc).await.expect("a free slot");
        }
    });
}

/// A raw HTTP/2 stream to an rpc that announces a `len`-byte message and
/// sends `sent` bytes of it, then waits: the gRPC status it ends with, and after how long.
async fn partial_message(grpc: SocketAddr, len: usize, sent: usize) -> (Option<String>, String, Duration) {
    partial_message_from(ip("127.0.0.1"), grpc, len, sent).await
}

/// [`partial_message`] from the client address `from`.
async fn partial_message_from(
    from: IpAddr,
    grpc: SocketAddr,
    len: usize,
    sent: usize,
) -> (Option<String>, String, Duration) {
    let tcp = connect_from(from, grpc).await;
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(format!("http://{grpc}/tessera.v1.Tessera/Upsert"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let start = Instant::now();
    let (response, mut stream) = client.send_request(req, false).unwrap();
    let mut data = vec![0u8];
    data.extend_from_slice(&(len as u32).to_be_bytes());
    data.resize(5 + sent, 7);
    stream.reserve_capacity(data.len());
    stream.send_data(data.into(), false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer").unwrap();
    let status_of = |h: &axum::http::HeaderMap| {
        let code = h.get("grpc-status").map(|v| v.to_str().unwrap().to_string());
        let message = h.get("grpc-message").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (code, message)
    };
    let (mut code, mut message) = status_of(response.headers());
    if code.is_none() {
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            if chunk.is_err() {
                break;
            }
        }
        if let Ok(Some(t)) = body.trailers().await {
            (code, message) = status_of(&t);
        }
    }
    let message = percent_decode(&message);
    (code, message, start.elapsed())
}

/// gRPC messages are percent-encoded in the `grpc-message` header.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_trickled_message_times_out_and_bytes_being_received_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), |c| {
        c.limits.max_body_bytes = 8 << 20;
        c.limits.max_receiving_bytes = 8 << 20;
        c.limits.body_timeout_ms = 600;
    });
    let grpc = s.grpc;
    s.rt.block_on(async {
        // One message stops 1 byte short: DEADLINE_EXCEEDED once body_timeout_ms passed.
        let first = tokio::spawn(partial_message(grpc, 5 << 20, (5 << 20) - 1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Meanwhile another connection's message would pass max_receiving_bytes: UNAVAILABLE, at once.
        let (code, message, took) = partial_message(grpc, 5 << 20, 5 << 20).await;
        assert_eq!(code.as_deref(), Some("14"), "UNAVAILABLE: {message}");
        assert!(message.contains("max_receiving_bytes"), "{message}");
        assert!(took < Duration::from_millis(500), "refused at once, not timed out: {took:?}");
        let (code, message, took) = first.await.unwrap();
        assert_eq!(code.as_deref(), Some("4"), "DEADLINE_EXCEEDED: {message}");
        assert!(message.contains("body_timeout_ms"), "{message}");
        assert!(took >= Duration::from_millis(550) && took < Duration::from_secs(5), "{took:?}");
    });
    // The bytes were given back: a whole 5 MiB upsert is received and applied.
    let mut c = s.grpc_client();
    let create = pb::CreateCollectionRequest { name: "c".into(), dim: 256, ..Default::default() };
    s.rt.block_on(c.create_collection(create)).unwrap();
    let rows = 5 << 20 >> 10; // 5,120 f32 rows of dim 256: 5 MiB
    let documents: Vec<pb::Document> = (0..10)
        .map(|i| pb::Document {
            id: format!("d{i}"),
            tokens: Some(pb::Tensor {
                dtype: pb::Dtype::F32.into(),
                shape: vec![(rows / 10) as u64, 256],
                data: vec![0x3f; rows / 10 * 1024],
            }),
            ..Default::default()
        })
        .collect();
    let r = s.rt.block_on(c.upsert(pb::UpsertRequest { collection: "c".into(), documents, pool_factor: None }));
    assert_eq!(r.expect("received within the bounds").into_inner().upserted, 10);
}

/// HTTP bodies count against the same bound: while one connection holds
/// 5 MiB of an unfinished body, another's 5 MiB body is refused with 503.
#[test]
fn http_bodies_being_received_share_the_bound() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), |c| {
        c.limits.max_body_bytes = 8 << 20;
        c.limits.max_receiving_bytes = 8 << 20;
    });
    let http = s.http;
    let head = |len: usize| {
        format!(
            "POST /v1/collections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        )
    };
    let mut first = std::net::TcpStream::connect(http).unwrap();
    first.write_all(head(6 << 20).as_bytes()).unwrap();
    first.write_all(&vec![b' '; 5 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut second = std::net::TcpStream::connect(http).unwrap();
    second.write_all(head(5 << 20).as_bytes()).unwrap();
    let _ = second.write_all(&vec![b' '; 5 << 20]);
    second.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = second.read(&mut buf) {
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}}") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("max_receiving_bytes"), "{answer}");
    drop(first);
    // Given back once the first connection is gone.
    std::thread::sleep(Duration::from_millis(200));
    let r = post(http, "/v1/collections", &serde_json::json!({"name": "c", "dim": 4}));
    assert_eq!(r.status, 201, "{}", r.body);
}

/// One address holds at most `max_receiving_bytes_per_address` of the bytes
/// being received, over gRPC and HTTP alike: a second large request from it
/// is refused at once while another address's is received.
#[test]
fn one_address_cannot_hold_the_whole_receiving_budget() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), |c| {
        c.limits.max_body_bytes = 4 << 20;
        c.limits.max_receiving_bytes = 32 << 20;
        c.limits.max_receiving_bytes_per_address = 6 << 20;
        c.limits.body_timeout_ms = 1500;
    });
    let (grpc, http) = (s.grpc, s.http);
    s.rt.block_on(async {
        // 127.0.0.1 holds 4 MiB of an unfinished gRPC message.
        let first = tokio::spawn(partial_message_from(ip("127.0.0.1"), grpc, 4 << 20, (4 << 20) - 1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Its second one passes its share: UNAVAILABLE at once, naming the per-address bound.
        let (code, message, took) = partial_message_from(ip("127.0.0.1"), grpc, 3 << 20, 3 << 20).await;
        assert_eq!(code.as_deref(), Some("14"), "UNAVAILABLE: {message}");
        assert!(message.contains("max_receiving_bytes_per_address"), "{message}");
        assert!(took < Duration::from_millis(1000), "refused at once: {took:?}");
        // So does an HTTP body from the same address (the share spans both ports).
        let mut h = TcpStream::connect(http).await.unwrap();
        let head = format!(
            "POST /v1/collections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            3 << 20
        );
        h.write_all(head.as_bytes()).await.unwrap();
        let _ = h.write_all(&vec![b' '; 3 << 20]).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), h.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("max_receiving_bytes_per_address"), "{answer}");
        // Another address is received meanwhile: a whole 3 MiB message is read
        // (and refused only as the nonsense it is), over gRPC and over HTTP.
        let (code, message, _) = partial_message_from(ip("127.0.0.2"), grpc, 3 << 20, 3 << 20).await;
        assert!(!message.contains("max_receiving"), "{code:?} {message}");
        assert_ne!(code.as_deref(), Some("14"), "{message}");
        let mut h = connect_from(ip("127.0.0.2"), http).await;
        h.write_all(head.as_bytes()).await.unwrap();
        h.write_all(&vec![b' '; 3 << 20]).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), h.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "read whole, then refused as empty JSON: {answer}");
        let (code, message, _) = first.await.unwrap();
        assert_eq!(code.as_deref(), Some("4"), "DEADLINE_EXCEEDED: {message}");
    });
    // The address's bytes were given back: its whole 3 MiB message is received.
    s.rt.block_on(async {
        let (code, message, _) = partial_message_from(ip("127.0.0.1"), grpc, 3 << 20, 3 << 20).await;
        assert!(!message.contains("max_receiving"), "{code:?} {message}");
    });
}

#[test]
fn the_share_of_one_address_is_at_least_the_largest_body() {
    let limits = tessera_server::Limits {
        max_body_bytes: 8 << 20,
        max_receiving_bytes_per_address: 4 << 20,
        ..Default::default()
    };
    let e = limits.validate().unwrap_err();
    assert!(e.contains("max_receiving_bytes_per_address") && e.contains("max_body_bytes"), "{e}");
}
