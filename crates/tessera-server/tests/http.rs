//! The HTTP API against a real server on a loopback port: every route, auth,
//! every limit, a table of malformed requests, concurrent readers and
//! writers, and graceful shutdown.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tessera_server::{ApiKeys, Limits, pb};

const DIM: usize = 16;

/// Documents with random tokens; even ones carry text and a payload.
fn corpus(rng: &mut Rng, n: usize) -> Vec<(String, Vec<Vec<f32>>)> {
    (0..n)
        .map(|i| {
            let len = 3 + rng.below(10);
            (format!("doc-{i}"), rng.tokens(len, DIM))
        })
        .collect()
}

fn doc_json(i: usize, id: &str, rows: &[Vec<f32>]) -> Value {
    // Alternate the three tensor encodings.
    let tokens = match i % 3 {
        0 => json!(rows),
        1 => packed(rows, true),
        _ => packed(rows, false),
    };
    if i.is_multiple_of(2) {
        json!({"id": id, "tokens": tokens, "text": format!("alpha word{i} common"), "payload": {"n": i, "even": true}})
    } else {
        json!({"id": id, "tokens": tokens})
    }
}

fn upsert_all(addr: std::net::SocketAddr, coll: &str, docs: &[(String, Vec<Vec<f32>>)]) {
    let batch: Vec<Value> = docs.iter().enumerate().map(|(i, (id, rows))| doc_json(i, id, rows)).collect();
    let r = ok(addr, &format!("/v1/collections/{coll}/upsert"), &json!({ "documents": batch }));
    assert_eq!(r["upserted"], docs.len());
}

/// Expected ranking by the naive reference (score desc, id asc on ties).
fn reference_top(q: &[Vec<f32>], docs: &[(String, Vec<Vec<f32>>)], k: usize) -> Vec<(String, f64)> {
    let mut all: Vec<(String, f64)> = docs.iter().map(|(id, rows)| (id.clone(), maxsim(q, &f16_round(rows)))).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

fn assert_hits_match(hits: &Value, expected: &[(String, f64)]) {
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), expected.len(), "{hits:?}");
    for (h, (id, score)) in hits.iter().zip(expected) {
        let got = h["score"].as_f64().unwrap();
        assert!((got - score).abs() < 1e-3, "score of {}: {got} vs reference {score} ({id})", h["id"]);
    }
    // Ids must match as sets of equal scores (ties may order either way).
    let got: BTreeSet<&str> = hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
    let want: BTreeSet<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    if got != want {
        let last = expected.last().unwrap().1;
        for h in hits {
            let id = h["id"].as_str().unwrap();
            assert!(want.contains(id) || (h["score"].as_f64().unwrap() - last).abs() < 1e-3, "unexpected hit {id}");
        }
    }
}

#[test]
fn every_route_against_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    assert_eq!(get(a, "/health").json()["status"], "ok");

    // Collections: create, conflict, if_not_exists, list, info.
    let r = post(a, "/v1/collections", &json!({"name": "c", "dim": DIM}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["index"], "pooled");
    assert_eq!(post(a, "/v1/collections", &json!({"name": "c", "dim": DIM})).status, 409);
    let r = post(a, "/v1/collections", &json!({"name": "c", "dim": DIM, "if_not_exists": true}));
    assert_eq!(r.status, 200, "exists already: not created");
    let r = post(a, "/v1/collections", &json!({"name": "c", "dim": DIM, "index": "none", "if_not_exists": true}));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("index differs"));
    ok(
        a,
        "/v1/collections",
        &json!({"name": "exact_only", "dim": DIM, "index": "none", "text": "none", "durability": "buffered"}),
    );
    let list = get(a, "/v1/collections").json();
    let names: Vec<&str> =
        list["collections"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c", "exact_only"]);
    assert_eq!(get(a, "/v1/collections/exact_only").json()["durability"], "buffered");

    // Upsert in all three encodings; get returns them exactly (f16-rounded).
    let mut rng = Rng::new(7);
    let docs = corpus(&mut rng, 120);
    upsert_all(a, "c", &docs[..60]);
    ok(a, "/v1/collections/c/flush", &json!({}));
    upsert_all(a, "c", &docs[60..]);
    let info = get(a, "/v1/collections/c").json();
    assert_eq!(info["documents"], 120);
    assert_eq!(info["segments"], 1);
    assert_eq!(info["tokens"], docs.iter().map(|d| d.1.len()).sum::<usize>());
    for fmt in ["json", "f16"] {
        let r = ok(a, "/v1/collections/c/get", &json!({"ids": ["doc-0", "doc-61", "nope"], "tokens": fmt}));
        assert_eq!(r["missing"], json!(["nope"]));
        for d in r["documents"].as_array().unwrap() {
            let i: usize = d["id"].as_str().unwrap()[4..].parse().unwrap();
            let rows = if fmt == "json" {
                rows_of(&d["tokens"])
            } else {
                use base64::Engine as _;
                let bytes =
                    base64::engine::general_purpose::STANDARD.decode(d["tokens"]["data"].as_str().unwrap()).unwrap();
                let flat: Vec<f32> = bytes.chunks(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
                flat.chunks(DIM).map(<[f32]>::to_vec).collect()
            };
            assert_eq!(rows, f16_round(&docs[i].1), "tokens of doc-{i} ({fmt})");
            assert_eq!(d["text"].is_string(), i.is_multiple_of(2));
        }
    }
    let r = ok(a, "/v1/collections/c/get", &json!({"ids": ["doc-0"], "tokens": "none"}));
    assert!(r["documents"][0].get("tokens").is_none());

    // Scan: every live document (segment and memtable) in id order, a page
    // at a time; a filter's matches counted on every page.
    for (filter, keep) in [
        (Value::Null, &(|_: usize| true) as &dyn Fn(usize) -> bool),
        // (`upsert_all` numbers the payloads within each half: n = i mod 60.)
        (json!({"field": "n", "range": {"gte": 50}}), &|i: usize| i.is_multiple_of(2) && i % 60 >= 50),
        (json!({"not": {"field": "even", "eq": true}}), &|i: usize| !i.is_multiple_of(2)),
    ] {
        let mut want: Vec<String> = (0..120).filter(|&i| keep(i)).map(|i| format!("doc-{i}")).collect();
        want.sort_unstable();
        let (mut seen, mut after) = (Vec::<String>::new(), Value::Null);
        loop {
            let r = ok(a, "/v1/collections/c/scan", &json!({"filter": filter, "after": after, "limit": 25}));
            seen.extend(r["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()));
            after = r["next"].clone();
            if after.is_null() {
                break;
            }
        }
        assert_eq!(seen, want, "{filter}");
        assert_eq!(ok(a, "/v1/collections/c/count", &json!({"filter": filter}))["count"], want.len());
    }
    let r = ok(a, "/v1/collections/c/scan", &json!({"limit": 3, "after": "doc-60", "tokens": "json"}));
    let ids: Vec<&str> = r["documents"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["doc-61", "doc-62", "doc-63"]);
    assert_eq!(rows_of(&r["documents"][0]["tokens"]), f16_round(&docs[61].1));
    assert_eq!(r["next"], "doc-63");
    let r = ok(a, "/v1/collections/c/scan", &json!({"limit": 0}));
    assert_eq!((r["documents"].as_array().map(Vec::len), r["next"].is_null()), (Some(0), true));
    assert_eq!(ok(a, "/v1/collections/c/count", &json!({}))["count"], 120);
    let even = json!({"filter": {"field": "even", "exists": true}});
    assert_eq!(ok(a, "/v1/collections/c/count", &even)["count"], 60);
    assert_eq!(post(a, "/v1/collections/c/count", &json!({"filter": {"field": "n"}})).status, 400);
    assert_eq!(post(a, "/v1/collections/c/scan", &json!({"filter": {"field": "n"}})).status, 400);
    assert_eq!(post(a, "/v1/collections/c/scan", &json!({"limit": 10_001})).status, 413);
    assert_eq!(post(a, "/v1/collections/nope/scan", &json!({})).status, 404);

    // Exact search equals the naive reference; two-stage agrees on this easy set.
    for qi in [3usize, 64, 99] {
        let q: Vec<Vec<f32>> =
            docs[qi].1.iter().take(4).map(|r| r.iter().map(|x| x + 0.05 * rng.f32()).collect()).collect();
        let expected = reference_top(&q, &docs, 10);
        let r = ok(a, "/v1/collections/c/search", &json!({"tokens": q, "k": 10, "exact": true}));
        assert_eq!(r["mode"], "exact");
        assert_hits_match(&r["hits"], &expected);
        let r = ok(a, "/v1/collections/c/search", &json!({"tokens": packed(&q, false), "k": 10, "candidates": 120}));
        assert_eq!(r["mode"], "two_stage");
        assert_hits_match(&r["hits"], &expected);
        assert_eq!(r["hits"][0]["id"], format!("doc-{qi}"));
    }

    // Filters, include flags, hybrid with text, ids, weighted fusion, rerank_only.
    let q = docs[10].1.clone();
    let r = ok(
        a,
        "/v1/collections/c/search",
        &json!({"tokens": q, "k": 5, "filter": {"field": "even", "eq": true}, "exact": true}),
    );
    for h in r["hits"].as_array().unwrap() {
        assert_eq!(h["payload"]["even"], true);
    }
    let r = ok(
        a,
        "/v1/collections/c/search",
        &json!({"tokens": q, "k": 5, "include_text": false, "include_payload": false}),
    );
    assert!(r["hits"][0].get("text").is_none() && r["hits"][0].get("payload").is_none());
    let r = ok(a, "/v1/collections/c/search", &json!({"text": "word10", "k": 3}));
    assert_eq!(r["mode"], "hybrid");
    assert_eq!(r["hits"][0]["id"], "doc-10");
    assert_eq!(r["hits"][0]["sources"][0]["source"], "text");
    let r = ok(
        a,
        "/v1/collections/c/search",
        &json!({"tokens": q, "text": "word10", "k": 3, "fusion": "weighted", "weights": {"text": 2.0, "tensor": 1.0}, "vector": true}),
    );
    assert_eq!(r["hits"][0]["id"], "doc-10");
    let want = maxsim(&q, &f16_round(&docs[10].1));
    assert!((r["hits"][0]["score"].as_f64().unwrap() - want).abs() < 1e-3);
    let ids = ["doc-1", "doc-2", "doc-3"];
    let r = ok(a, "/v1/collections/c/search", &json!({"tokens": q, "ids": ids, "rerank_only": true, "k": 3}));
    let expected = reference_top(&q, &docs[1..4], 3);
    assert_hits_match(&r["hits"], &expected);

    // Rerank reports missing ids and scores exactly.
    let r = ok(a, "/v1/collections/c/rerank", &json!({"tokens": q, "ids": ["doc-5", "doc-6", "ghost"]}));
    assert_eq!(r["missing"], json!(["ghost"]));
    assert_hits_match(&r["hits"], &reference_top(&q, &docs[5..7], 2));

    // Delete, compact, info.
    let r = ok(a, "/v1/collections/c/delete", &json!({"ids": ["doc-0", "doc-70", "ghost"]}));
    assert_eq!(r["deleted"], 2);
    let info = ok(a, "/v1/collections/c/compact", &json!({}));
    assert_eq!(info["documents"], 118);
    assert_eq!(info["segments"], 1);
    assert_eq!(info["memtable_documents"], 0);
    let r = ok(a, "/v1/collections/c/search", &json!({"tokens": docs[0].1, "k": 1, "exact": true}));
    assert_ne!(r["hits"][0]["id"], "doc-0");

    // Metrics: request counters by route and status, collection gauges.
    let m = get(a, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.headers.contains("text/plain; version=0.0.4"));
    assert!(m.body.contains(
        r#"tessera_requests_total{protocol="http",route="POST /v1/collections/{name}/search",status="200"}"#
    ));
    assert!(m.body.contains(r#"tessera_collection_documents{collection="c"} 118"#), "{}", m.body);
    assert!(m.body.contains("tessera_request_duration_seconds_bucket"));
    // The kernel in use, as `tessera info` reports it.
    let k = tessera::kernel_info();
    let info_line = format!(r#"kernel="{}",chosen_by="{}",int8_kernel="{}"}} 1"#, k.kernel, k.chosen_by, k.int8_kernel);
    assert!(m.body.contains("tessera_build_info{version=") && m.body.contains(&info_line), "{}", m.body);

    // OpenAPI: valid JSON describing every route this test called.
    let spec = get(a, "/openapi.json").json();
    let paths = spec["paths"].as_object().unwrap();
    for (path, method) in [
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/collections", "get"),
        ("/v1/collections", "post"),
        ("/v1/collections/{name}", "get"),
        ("/v1/collections/{name}", "delete"),
        ("/v1/collections/{name}/upsert", "post"),
        ("/v1/collections/{name}/delete", "post"),
        ("/v1/collections/{name}/get", "post"),
        ("/v1/collections/{name}/scan", "post"),
        ("/v1/collections/{name}/count", "post"),
        ("/v1/collections/{name}/search", "post"),
        ("/v1/collections/{name}/rerank", "post"),
        // Encoding and reindexing need models: tested in tests/grpc.rs (texts_models_and_reindex)
        // and python/tests/test_text_collection.py / test_reindex.py.
        ("/v1/collections/{name}/encode", "post"),
        ("/v1/collections/{name}/reindex", "post"),
        ("/v1/collections/{name}/reindex", "get"),
        ("/v1/encode", "post"),
        ("/v1/models", "get"),
        ("/v1/limits", "get"),
        ("/v1/access", "get"),
        ("/v1/collections/{name}/mine_negatives", "post"),
        ("/v1/collections/{name}/flush", "post"),
        ("/v1/collections/{name}/compact", "post"),
        ("/v1/collections/{name}/settings", "post"),
        ("/v1/collections/{name}/recall", "post"),
        ("/v1/backup", "post"),
        ("/v1/backups", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "openapi.json lacks {method} {path}");
    }
    assert_eq!(
        paths
            .values()
            .flat_map(|p| p.as_object().unwrap().keys())
            .filter(|k| ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&k.as_str()))
            .count(),
        28,
        "routes not served are documented"
    );

    // Drop.
    assert_eq!(http(a, "DELETE", "/v1/collections/exact_only", None, None).status, 200);
    assert_eq!(get(a, "/v1/collections/exact_only").status, 404);
    s.stop().unwrap();
}

#[test]
fn keys_gate_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (rw, ro) = ("rw-key-0123456789abcdef", "ro-key-0123456789abcdef");
    let keys = ApiKeys::parse(&format!("rw:{rw}\nro:{ro}")).unwrap();
    let s = TestServer::start(dir.path(), Limits::default(), keys);
    let a = s.http;
    let create = json!({"name": "c", "dim": 2}).to_string();
    // Open routes.
    assert_eq!(http(a, "GET", "/health", None, None).status, 200);
    assert_eq!(http(a, "GET", "/openapi.json", None, None).status, 200);
    // No key, wrong key, wrong scheme: 401.
    for key in [None, Some("wrong-key-0123456789abc")] {
        let r = http(a, "POST", "/v1/collections", key, Some(&create));
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "unauthenticated");
        assert!(r.headers.to_ascii_lowercase().contains("www-authenticate: bearer"), "{}", r.headers);
        assert_eq!(http(a, "GET", "/v1/collections", key, None).status, 401);
        assert_eq!(http(a, "GET", "/metrics", key, None).status, 401);
    }
    let basic = format!(
        "POST /v1/collections HTTP/1.1\r\nAuthorization: Basic {rw}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{create}",
        create.len()
    );
    assert_eq!(raw(a, basic.as_bytes()).status, 401);
    // Read-only key: reads yes, writes 403.
    let r = http(a, "POST", "/v1/collections", Some(ro), Some(&create));
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "permission_denied");
    // Backups take the write key, and a server started without a backup folder refuses them.
    assert_eq!(http(a, "POST", "/v1/backup", Some(ro), Some("{}")).status, 403);
    let r = http(a, "POST", "/v1/backup", Some(rw), Some("{}"));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("--backup-dir"), "{}", r.body);
    assert_eq!(http(a, "POST", "/v1/collections", Some(rw), Some(&create)).status, 201);
    let up = json!({"documents": [{"id": "x", "tokens": [[1.0, 0.0]]}]}).to_string();
    assert_eq!(http(a, "POST", "/v1/collections/c/upsert", Some(ro), Some(&up)).status, 403);
    assert_eq!(http(a, "POST", "/v1/collections/c/upsert", Some(rw), Some(&up)).status, 200);
    for (method, path, body) in [
        ("GET", "/v1/collections", None),
        ("GET", "/v1/collections/c", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/collections/c/search", Some(r#"{"tokens": [[1, 0]]}"#)),
        ("POST", "/v1/collections/c/rerank", Some(r#"{"tokens": [[1, 0]], "ids": ["x"]}"#)),
        ("POST", "/v1/collections/c/get", Some(r#"{"ids": ["x"]}"#)),
    ] {
        assert_eq!(http(a, method, path, Some(ro), body).status, 200, "{method} {path} with the read-only key");
    }
    for (method, path, body) in [
        ("POST", "/v1/collections/c/delete", Some(r#"{"ids": ["x"]}"#)),
        ("POST", "/v1/collections/c/flush", None),
        ("POST", "/v1/collections/c/compact", None),
        ("DELETE", "/v1/collections/c", None),
    ] {
        assert_eq!(http(a, method, path, Some(ro), body).status, 403, "{method} {path} with the read-only key");
    }
    // x-api-key works too; the key is never in the metrics or errors.
    let r = raw(a, format!("GET /v1/collections HTTP/1.1\r\nx-api-key: {ro}\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200);
    let r = raw(
        a,
        format!(
            "GET /v1/collections HTTP/1.1\r\nAuthorization: Basic eDp5\r\nx-api-key: {ro}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "a non-Bearer Authorization does not hide x-api-key");
    let m = http(a, "GET", "/metrics", Some(ro), None).body;
    assert!(!m.contains(ro) && !m.contains(rw));
    // Auth is checked before the body is parsed.
    assert_eq!(http(a, "POST", "/v1/collections/c/upsert", None, Some("{not json")).status, 401);
}

#[test]
fn every_limit_is_enforced_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let limits = small_limits();
    let s = TestServer::start(dir.path(), limits, ApiKeys::default());
    let a = s.http;
    ok(a, "/v1/collections", &json!({"name": "c", "dim": 2}));
    let row = json!([1.0, 0.0]);
    let tok = |n: usize| json!(vec![row.clone(); n]);
    let doc = |id: &str, n: usize| json!({"id": id, "tokens": tok(n)});
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("upsert", json!({"documents": [doc("a", 6)]}), 413, "max_doc_tokens"),
        ("upsert", json!({"documents": [doc("a", 1), doc("b", 1), doc("c", 1), doc("d", 1)]}), 413, "max_batch_docs"),
        ("search", json!({"tokens": tok(5), "k": 3}), 413, "max_query_tokens"),
        ("search", json!({"tokens": tok(1), "k": 8}), 400, "max_k"),
        ("search", json!({"tokens": tok(1), "k": 3, "candidates": 51}), 400, "max_candidates"),
        ("search", json!({"tokens": tok(1), "k": 3, "ef": 51}), 400, "max_candidates"),
        ("search", json!({"text": "x", "k": 3, "ids": ["1", "2", "3", "4", "5"]}), 413, "max_ids"),
        ("rerank", json!({"tokens": tok(5), "ids": ["a"]}), 413, "max_query_tokens"),
        ("rerank", json!({"tokens": tok(1), "ids": ["1", "2", "3", "4", "5"]}), 413, "max_ids"),
        ("delete", json!({"ids": ["1", "2", "3", "4", "5"]}), 413, "max_ids"),
        ("get", json!({"ids": ["1", "2", "3", "4", "5"]}), 413, "max_ids"),
        (
            "upsert",
            json!({"documents": [{"id": "big", "tokens": tok(1), "text": "x".repeat(5000)}]}),
            413,
            "max_body_bytes",
        ),
    ];
    for (route, body, status, limit) in cases {
        let r = post(a, &format!("/v1/collections/c/{route}"), &body);
        assert_eq!(r.status, status, "{route} {limit}: {}", r.body);
        let e = r.json();
        assert_eq!(e["error"]["limit"], limit, "{}", r.body);
        assert!(e["error"]["message"].as_str().unwrap().contains(limit));
    }
    // Omitted k and candidates default to at most the limits (10 > max_k = 7, 256 > 50).
    let r = ok(a, "/v1/collections/c/search", &json!({"tokens": tok(1)}));
    assert_eq!(r["mode"], "two_stage");
    // The size of a get's answer is checked before it is built; repeated ids count once.
    let big: Vec<Value> = (0..4).map(|i| doc(&format!("g{i}"), 5)).collect();
    for chunk in big.chunks(2) {
        ok(a, "/v1/collections/c/upsert", &json!({ "documents": chunk }));
    }
    let ids = json!(["g0", "g1", "g2", "g3"]);
    let r = post(a, "/v1/collections/c/get", &json!({"ids": ids, "tokens": "json"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut big_rows = Vec::new();
    for i in 0..4 {
        big_rows.push(json!({"id": format!("h{i}"), "tokens": tok(5), "text": "y".repeat(600)}));
    }
    ok(a, "/v1/collections/c/upsert", &json!({ "documents": big_rows[..2] }));
    ok(a, "/v1/collections/c/upsert", &json!({ "documents": big_rows[2..] }));
    let r = post(a, "/v1/collections/c/get", &json!({"ids": ["h0", "h1", "h2", "h3"], "tokens": "none"}));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["limit"], "max_response_bytes");
    let r = ok(a, "/v1/collections/c/get", &json!({"ids": ["h0", "h0", "h0", "h0"], "tokens": "json"}));
    assert_eq!(r["documents"].as_array().unwrap().len(), 1);
    ok(a, "/v1/collections/c/delete", &json!({"ids": ["g0", "g1", "g2", "g3"]}));
    ok(a, "/v1/collections/c/delete", &json!({"ids": ["h0", "h1", "h2", "h3"]}));
    // At the limits everything passes.
    ok(a, "/v1/collections/c/upsert", &json!({"documents": [doc("a", 5), doc("b", 1), doc("c", 2)]}));
    ok(a, "/v1/collections/c/search", &json!({"tokens": tok(4), "k": 7, "candidates": 50}));
    assert_eq!(get(a, "/v1/collections/c").json()["documents"], 3);
}

/// At least 30 malformed requests: each gets a 4xx with a JSON error (never a
/// 500, never a dropped connection), and nothing is half-applied.
#[test]
fn malformed_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    ok(a, "/v1/collections", &json!({"name": "c", "dim": 2}));
    ok(a, "/v1/collections/c/upsert", &json!({"documents": [{"id": "keep", "tokens": [[0.5, 0.5]]}]}));
    let good = r#"{"id": "g1", "tokens": [[1, 0]]}"#;
    let b64_short = r#"{"dtype": "f32", "shape": [1, 2], "data": "AAAAAA=="}"#;
    let long_name = format!("/v1/collections/{}", "x".repeat(65));
    #[rustfmt::skip]
    let table: Vec<(&str, &str, String, u16, &str)> = vec![
        ("POST", "/v1/collections/c/upsert", "{".into(), 400, "invalid request body"),
        ("POST", "/v1/collections/c/upsert", "".into(), 400, "body is empty"),
        ("POST", "/v1/collections/c/upsert", "[]".into(), 400, "must be a JSON object"),
        (
            "POST",
            "/v1/collections",
            r#"["positional", 2, null, null, null, false]"#.into(),
            400,
            "must be a JSON object",
        ),
        ("POST", "/v1/collections/c/upsert", r#"{"docs": []}"#.into(), 400, "unknown field"),
        ("POST", "/v1/collections/c/upsert", r#"{"documents": []}"#.into(), 400, "at least one document"),
        ("POST", "/v1/collections/c/upsert", r#"{"documents": {}}"#.into(), 400, "invalid type"),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "bad", "tokens": [[1, 0, 0]]}}]}}"#),
            400,
            "wrong dimension",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "bad", "tokens": []}}]}}"#),
            400,
            "empty tensor",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "bad", "tokens": [[1, 0], [1]]}}]}}"#),
            400,
            "row 1 has 1 values",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "bad", "tokens": [[1, "x"]]}}]}}"#),
            400,
            "invalid type",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "bad", "tokens": [[1e39, 0]]}}]}}"#),
            400,
            "number out of range",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "bad", "tokens": [[70000, 0]]}}]}}"#),
            400,
            "f16 range",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(
                r#"{{"documents": [{good}, {{"id": "bad", "tokens": {{"dtype": "f32", "shape": [1, 2], "data": "AADAfwAAAAA="}}}}]}}"#
            ),
            400,
            "invalid value",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "bad", "tokens": {b64_short}}}]}}"#),
            400,
            "needs 8",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(
                r#"{{"documents": [{good}, {{"id": "bad", "tokens": {{"dtype": "f64", "shape": [1, 2], "data": ""}}}}]}}"#
            ),
            400,
            "unknown dtype",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(
                r#"{{"documents": [{good}, {{"id": "bad", "tokens": {{"dtype": "f16", "shape": [2], "data": ""}}}}]}}"#
            ),
            400,
            "shape must be",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(
                r#"{{"documents": [{good}, {{"id": "bad", "tokens": {{"dtype": "f16", "shape": [1, 2], "data": "!!!"}}}}]}}"#
            ),
            400,
            "base64",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(
                r#"{{"documents": [{good}, {{"id": "bad", "tokens": {{"dtype": "f16", "shape": [4294967296, 4294967296], "data": ""}}}}]}}"#
            ),
            400,
            "needs",
        ),
        ("POST", "/v1/collections/c/upsert", format!(r#"{{"documents": [{good}, {good}]}}"#), 400, "duplicate id"),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "", "tokens": [[1, 0]]}}]}}"#),
            400,
            "id is empty",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "{}", "tokens": [[1, 0]]}}]}}"#, "x".repeat(600)),
            400,
            "the limit is 512",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": "bad", "tokens": [[1, 0]], "extra": 1}}]}}"#),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/v1/collections/c/upsert",
            format!(r#"{{"documents": [{good}, {{"id": 5, "tokens": [[1, 0]]}}]}}"#),
            400,
            "invalid type",
        ),
        ("POST", "/v1/collections/c/search", r#"{"tokens": [[1, 0]], "k": 0}"#.into(), 400, "k must be at least 1"),
        ("POST", "/v1/collections/c/search", r#"{"tokens": [[1, 0]], "k": -1}"#.into(), 400, "invalid value"),
        ("POST", "/v1/collections/c/search", r#"{"tokens": [[1, 0]], "k": "ten"}"#.into(), 400, "invalid type"),
        ("POST", "/v1/collections/c/search", r#"{"k": 3}"#.into(), 400, "needs query tokens"),
        ("POST", "/v1/collections/c/search", r#"{"tokens": [[1, 0, 1]]}"#.into(), 400, "wrong dimension"),
        ("POST", "/v1/collections/c/search", r#"{"tokens": [[3e38, 3e38]], "exact": true}"#.into(), 400, "f16 range"),
        ("POST", "/v1/collections/c/search", r#"{"tokens": [[1, 0]], "filter": {"$bogus": 1}}"#.into(), 400, ""),
        ("POST", "/v1/collections/c/search", r#"{"tokens": [[1, 0]], "fusion": "max"}"#.into(), 400, "unknown fusion"),
        (
            "POST",
            "/v1/collections/c/search",
            r#"{"tokens": [[1, 0]], "text": "x", "exact": true}"#.into(),
            400,
            "tensor-only",
        ),
        (
            "POST",
            "/v1/collections/c/search",
            r#"{"tokens": [[1, 0]], "weights": {"bm25": 1}}"#.into(),
            400,
            "unknown source",
        ),
        (
            "POST",
            "/v1/collections/c/search",
            r#"{"tokens": [[1, 0]], "candidates": 0}"#.into(),
            400,
            "candidates must be",
        ),
        ("POST", "/v1/collections/c/search", r#"{"text": "x", "rerank_only": true}"#.into(), 400, "rerank_only needs"),
        ("POST", "/v1/collections/c/rerank", r#"{"ids": ["keep"]}"#.into(), 400, "the query is required: tokens or query_text"),
        ("POST", "/v1/collections/c/rerank", r#"{"tokens": [[1, 0]], "ids": [""]}"#.into(), 400, "id is empty"),
        ("POST", "/v1/collections/c/get", r#"{"ids": ["keep"], "tokens": "yaml"}"#.into(), 400, "unknown variant"),
        ("POST", "/v1/collections/c/delete", r#"{"ids": "keep"}"#.into(), 400, "invalid type"),
        ("POST", "/v1/collections", r#"{"name": "bad name!", "dim": 2}"#.into(), 400, "invalid collection name"),
        ("POST", "/v1/collections", r#"{"name": "d", "dim": 0}"#.into(), 400, "dim must be"),
        ("POST", "/v1/collections", r#"{"name": "d", "dim": 2, "index": "ivf"}"#.into(), 400, "unknown index"),
        (
            "POST",
            "/v1/collections",
            r#"{"name": "c", "dim": 3, "if_not_exists": true}"#.into(),
            409,
            "different configuration",
        ),
        ("POST", "/v1/collections/missing/search", r#"{"tokens": [[1, 0]]}"#.into(), 404, "unknown collection"),
        ("GET", "/v1/collections/missing", String::new(), 404, "unknown collection"),
        ("GET", "/v1/collections/bad.name", String::new(), 400, "invalid collection name"),
        ("POST", "/v1/collections/bad.name/search", r#"{"tokens": [[1, 0]]}"#.into(), 400, "invalid collection name"),
        ("DELETE", long_name.as_str(), String::new(), 400, "invalid collection name"),
        ("GET", "/v2/whatever", String::new(), 404, "no route"),
        ("PUT", "/v1/collections/c/upsert", String::new(), 405, "not served"),
        ("DELETE", "/v1/collections/c/search", String::new(), 405, "not served"),
    ];
    assert!(table.len() >= 30);
    for (method, path, body, status, needle) in &table {
        let r = http(a, method, path, None, (!body.is_empty() || *method == "POST").then_some(body.as_str()));
        assert_eq!(r.status, *status, "{method} {path} {body}: {}", r.body);
        let e = r.json();
        let msg = e["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message: {}", r.body));
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "{method} {path} {body}: {msg:?} lacks {needle:?}"
        );
    }
    // Broken HTTP itself: the server answers 4xx or closes, and keeps serving.
    for bad in [
        "POST /v1/collections/c/search HTTP/1.1\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"tokens\"",
        "GARBAGE\r\n\r\n",
        "POST /v1/collections/c/search HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    ] {
        let mut st = std::net::TcpStream::connect(a).unwrap();
        use std::io::{Read, Write};
        st.write_all(bad.as_bytes()).unwrap();
        st.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        let _ = st.read_to_string(&mut out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 4"), "{bad:?} -> {out:?}");
    }
    // Nothing of a rejected batch was applied; the server still serves.
    let r = ok(a, "/v1/collections/c/get", &json!({"ids": ["keep", "g1", "bad"], "tokens": "none"}));
    assert_eq!(r["missing"], json!(["g1", "bad"]));
    assert_eq!(get(a, "/v1/collections/c").json()["documents"], 1);
    let m = get(a, "/metrics").body;
    assert!(!m.contains("status=\"500\""), "{m}");
}

/// Writers and readers at once over HTTP: every search succeeds and every
/// acknowledged document is there afterwards, bit for bit.
#[test]
fn concurrent_readers_and_writers() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    // A small memtable so that flushes and merges run under the load.
    ok(a, "/v1/collections", &json!({"name": "c", "dim": DIM}));
    ok(a, "/v1/collections/c/upsert", &json!({"documents": [{"id": "seed", "tokens": Rng::new(1).tokens(4, DIM)}]}));
    let acked: Arc<Mutex<BTreeMap<String, Vec<Vec<f32>>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let acked = acked.clone();
        writers.push(std::thread::spawn(move || {
            let mut rng = Rng::new(100 + w);
            for b in 0..25 {
                let docs: Vec<(String, Vec<Vec<f32>>)> = (0..8)
                    .map(|i| {
                        let len = 2 + rng.below(20);
                        (format!("w{w}-b{b}-{i}"), rng.tokens(len, DIM))
                    })
                    .collect();
                let batch: Vec<Value> = docs.iter().enumerate().map(|(i, (id, t))| doc_json(i, id, t)).collect();
                let r = post(a, "/v1/collections/c/upsert", &json!({ "documents": batch }));
                assert_eq!(r.status, 200, "{}", r.body);
                acked.lock().unwrap().extend(docs);
                if b % 10 == 9 {
                    ok(a, "/v1/collections/c/flush", &json!({}));
                }
            }
        }));
    }
    let mut readers = Vec::new();
    for r in 0..3u64 {
        let stop = stop.clone();
        readers.push(std::thread::spawn(move || {
            let mut rng = Rng::new(900 + r);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 20 {
                let q = rng.tokens(4, DIM);
                let body = match n % 3 {
                    0 => json!({"tokens": q, "k": 5}),
                    1 => json!({"tokens": q, "k": 5, "exact": true}),
                    _ => json!({"tokens": q, "k": 5, "text": "common"}),
                };
                let resp = post(a, "/v1/collections/c/search", &body);
                assert_eq!(resp.status, 200, "{}", resp.body);
                let hits = resp.json()["hits"].as_array().unwrap().len();
                assert!(hits >= 1);
                n += 1;
            }
            n
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let searches: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(searches >= 60);
    let acked = acked.lock().unwrap();
    assert_eq!(acked.len(), 3 * 25 * 8);
    let ids: Vec<&String> = acked.keys().collect();
    for chunk in ids.chunks(200) {
        let r = ok(a, "/v1/collections/c/get", &json!({"ids": chunk, "tokens": "json"}));
        assert_eq!(r["missing"], json!([]));
        for d in r["documents"].as_array().unwrap() {
            assert_eq!(rows_of(&d["tokens"]), f16_round(&acked[d["id"].as_str().unwrap()]));
        }
    }
    assert_eq!(get(a, "/v1/collections/c").json()["documents"], acked.len() + 1);
}

/// Shutdown drains requests in flight, then flushes: the WAL is empty on
/// the next open and every document is in a segment.
#[test]
fn graceful_shutdown_drains_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    ok(a, "/v1/collections", &json!({"name": "c", "dim": DIM}));
    let mut rng = Rng::new(3);
    let docs = corpus(&mut rng, 300);
    upsert_all(a, "c", &docs[..100]);
    // Requests racing the shutdown: each is either answered 200 (and then
    // durable) or never got in (refused or closed unread), never half-applied.
    let racing: Vec<_> = (0..4)
        .map(|t| {
            let docs = docs[100 + t * 50..150 + t * 50].to_vec();
            std::thread::spawn(move || {
                let batch: Vec<Value> = docs.iter().enumerate().map(|(i, (id, r))| doc_json(i, id, r)).collect();
                let body = json!({ "documents": batch }).to_string();
                let req = format!(
                    "POST /v1/collections/c/upsert HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                try_raw(a, req.as_bytes()).ok().map(|r| r.status)
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.stop().unwrap();
    let answered: Vec<Option<u16>> = racing.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(answered.iter().flatten().all(|&s| s == 200), "{answered:?}");
    let acked = answered.iter().filter(|s| s.is_some()).count();
    let db = tessera::Database::open(dir.path()).unwrap();
    let c = db.collection("c").unwrap();
    let st = c.stats();
    assert_eq!(st.documents, 100 + 50 * acked, "{answered:?}");
    assert_eq!(st.memtable_documents, 0, "shutdown flushed the memtable");
    assert!(st.segments >= 1);
}

/// A request that never finishes (its body never arrives) holds the drain
/// only until the drain timeout: then its connection is closed and the
/// server stops, flushed. Connections beyond the cap wait, then are served.
#[test]
fn drain_timeout_closes_stuck_connections_and_the_cap_queues() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), |c| {
        c.drain_timeout = std::time::Duration::from_millis(500);
        c.max_connections = 2;
    });
    let a = s.http;
    ok(a, "/v1/collections", &json!({"name": "c", "dim": 2}));
    ok(a, "/v1/collections/c/upsert", &json!({"documents": [{"id": "x", "tokens": [[1, 0]]}]}));
    let stuck = |a| {
        let mut st = std::net::TcpStream::connect(a).unwrap();
        st.write_all(b"POST /v1/collections/c/upsert HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{\"documents\"").unwrap();
        st
    };
    // Two stuck connections fill the cap; a third request waits, then gets
    // served once one of them goes away.
    let (s1, s2) = (stuck(a), stuck(a));
    let waiting = std::thread::spawn(move || get(a, "/health").status);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!waiting.is_finished(), "served beyond the connection cap");
    drop(s1);
    assert_eq!(waiting.join().unwrap(), 200);
    let mut s2 = s2;
    let t = std::time::Instant::now();
    s.stop().unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "shutdown waited {:?}", t.elapsed());
    s2.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    if let Err(e) = s2.read_to_end(&mut rest) {
        let timed_out = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
        assert!(!timed_out, "the stuck connection is still open");
    }
    let db = tessera::Database::open(dir.path()).unwrap();
    assert_eq!(db.collection("c").unwrap().stats().memtable_documents, 0);
}

#[test]
fn storage_screening_and_rerank_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    let spec = json!({"name": "q", "dim": DIM, "storage": "int8", "screening": "binary"});
    let r = post(a, "/v1/collections", &spec);
    assert_eq!(r.status, 201, "{}", r.body);
    let info = r.json();
    assert_eq!((info["storage"].as_str(), info["screening"].as_str()), (Some("int8"), Some("binary")));
    assert_eq!(info["bytes_per_token"], DIM + 4 + 8);
    ok(a, "/v1/collections", &json!({"name": "plain", "dim": DIM}));
    assert_eq!(get(a, "/v1/collections/plain").json()["storage"], "f16");
    let r = post(a, "/v1/collections", &json!({"name": "q", "dim": DIM, "storage": "f16", "if_not_exists": true}));
    assert!(r.status == 409 && r.body.contains("storage differs"), "{}", r.body);
    for (field, value) in [("storage", "int4"), ("screening", "pq")] {
        let r = post(a, "/v1/collections", &json!({"name": "x", "dim": DIM, field: value}));
        assert!(r.status == 400 && r.body.contains(&format!("unknown {field}")), "{}", r.body);
    }
    // Residual storage: with a centroids index only.
    let r = post(a, "/v1/collections", &json!({"name": "x", "dim": DIM, "storage": "residual4"}));
    assert!(r.status == 400 && r.body.contains("centroids"), "{}", r.body);
    let spec = json!({"name": "r", "dim": DIM, "storage": "residual4", "index": "centroids"});
    let r = post(a, "/v1/collections", &spec);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        (r.json()["storage"].as_str(), r.json()["bytes_per_token"].as_u64()),
        (Some("residual4"), Some(2 + DIM as u64 / 2))
    );
    let spec = json!({"name": "rk", "dim": DIM, "storage": "residual4", "index": "centroids", "keep": "f16"});
    let r = post(a, "/v1/collections", &spec);
    assert_eq!((r.status, r.json()["keep"].as_str()), (201, Some("f16")), "{}", r.body);
    let r = post(a, "/v1/collections", &json!({"name": "x", "dim": DIM, "keep": "f16"}));
    assert!(r.status == 400 && r.body.contains("keep f16 applies to residual storage"), "{}", r.body);
    let mut rng = Rng::new(5);
    let docs = corpus(&mut rng, 90);
    for coll in ["q", "plain"] {
        upsert_all(a, coll, &docs[..60]);
        ok(a, &format!("/v1/collections/{coll}/flush"), &json!({}));
        upsert_all(a, coll, &docs[60..]);
    }
    let q = rng.tokens(3, DIM);
    let search = |coll: &str, extra: Value| {
        let mut body = json!({"tokens": q, "k": 8});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post(a, &format!("/v1/collections/{coll}/search"), &body)
    };
    // A rerank covering the collection is the exact ranking; hits are true MaxSim
    // scores of the stored (int8) values, which `get` returns.
    let exact = search("q", json!({"exact": true})).json();
    let all = search("q", json!({"rerank": 1000})).json();
    assert_eq!(exact["hits"], all["hits"]);
    let few = search("q", json!({"rerank": 10, "candidates": 80}));
    assert_eq!(few.status, 200, "{}", few.body);
    for h in few.json()["hits"].as_array().unwrap() {
        let d = ok(a, "/v1/collections/q/get", &json!({"ids": [h["id"]], "tokens": "json"}));
        let rows = rows_of(&d["documents"][0]["tokens"]);
        assert!((h["score"].as_f64().unwrap() - maxsim(&q, &rows)).abs() < 2e-2, "{h}");
    }
    for (coll, extra, words) in [
        ("plain", json!({"rerank": 10}), "screening"),
        ("q", json!({"rerank": 10, "exact": true}), "exact"),
        ("q", json!({"rerank": 10, "text": "alpha"}), "tensor-only"),
        ("q", json!({"rerank": 0}), "rerank"),
        ("q", json!({"rerank": 20_000}), "max_candidates"),
    ] {
        let r = search(coll, extra.clone());
        assert!(r.status == 400 && r.body.contains(words), "{extra}: {} {}", r.status, r.body);
    }
}

/// A batch (`queries`) answers each query as a one-query request does, in
/// order, in every mode; a bad query gets its own error and the rest are
/// answered; the batch limits refuse the whole request, and `tokens` with
/// `queries` is refused.
#[test]
fn batch_search_answers_each_query_as_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(
        dir.path(),
        Limits { max_batch_queries: 40, max_batch_tokens: 200, ..Limits::default() },
        ApiKeys::default(),
    );
    let a = s.http;
    ok(a, "/v1/collections", &json!({"name": "b", "dim": DIM}));
    let mut rng = Rng::new(11);
    let docs = corpus(&mut rng, 120);
    upsert_all(a, "b", &docs[..80]);
    ok(a, "/v1/collections/b/flush", &json!({}));
    upsert_all(a, "b", &docs[80..]);
    let queries: Vec<Vec<Vec<f32>>> = (0..35).map(|i| rng.tokens(1 + i % 5, DIM)).collect();
    for extra in [
        json!({}),
        json!({"exact": true, "k": 7}),
        json!({"candidates": 20, "k": 3}),
        json!({"filter": {"field": "n", "range": {"gte": 10}}, "k": 5}),
        json!({"text": "alpha", "k": 4}),
    ] {
        let mut body = json!({"queries": queries});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let batch = ok(a, "/v1/collections/b/search", &body);
        let results = batch["results"].as_array().unwrap();
        assert_eq!(results.len(), queries.len(), "{extra}");
        for (q, r) in queries.iter().zip(results) {
            let mut one = json!({"tokens": q});
            one.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            assert_eq!(r, &ok(a, "/v1/collections/b/search", &one), "{extra}");
        }
    }
    // One BM25 text per query: each answer is that query's hybrid search with its text.
    let texts: Vec<String> = (0..queries.len()).map(|i| format!("word{} common", (i * 2) % 120)).collect();
    for extra in [json!({"k": 4}), json!({"k": 3, "rank": "linear", "rank_weights": {"bm25": 0.5}})] {
        let mut body = json!({"queries": queries, "texts": texts});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let batch = ok(a, "/v1/collections/b/search", &body);
        for ((q, t), r) in queries.iter().zip(&texts).zip(batch["results"].as_array().unwrap()) {
            let mut one = json!({"tokens": q, "text": t});
            one.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            assert_eq!(r, &ok(a, "/v1/collections/b/search", &one), "{extra}");
        }
    }
    for (body, says) in [
        (json!({"queries": [queries[0]], "texts": ["a", "b"]}), "one BM25 text per query"),
        (json!({"queries": [queries[0]], "texts": ["a"], "text": "b"}), "leave text and query_text out"),
        (json!({"query_texts": ["a"], "texts": ["a"]}), "their own BM25 texts"),
        (json!({"tokens": queries[0], "texts": ["a"]}), "batch search"),
    ] {
        let r = post(a, "/v1/collections/b/search", &body);
        assert!(r.status == 400 && r.body.contains(says), "{body}: {} {}", r.status, r.body);
    }
    // One bad query (wrong dim), one too long (max_query_tokens 1024 is not hit;
    // use a packed tensor with a NaN): each answered with its own error.
    let nan = packed(&[vec![f32::NAN; DIM]], false);
    let body = json!({"queries": [queries[0], rng.tokens(2, DIM + 1), nan, queries[1]], "k": 3});
    let r = ok(a, "/v1/collections/b/search", &body);
    let res = r["results"].as_array().unwrap();
    assert_eq!(res.len(), 4);
    assert_eq!(res[0], ok(a, "/v1/collections/b/search", &json!({"tokens": queries[0], "k": 3})));
    assert_eq!(res[3], ok(a, "/v1/collections/b/search", &json!({"tokens": queries[1], "k": 3})));
    assert_eq!(res[1]["error"]["code"], "bad_request", "{}", res[1]);
    assert!(res[1]["error"]["message"].as_str().unwrap().contains("dimension"), "{}", res[1]);
    assert_eq!(res[2]["error"]["code"], "bad_request", "{}", res[2]);
    // Refused as a whole.
    let many = vec![queries[0].clone(); 41];
    let r = post(a, "/v1/collections/b/search", &json!({"queries": many}));
    assert!(r.status == 413 && r.body.contains("max_batch_queries"), "{} {}", r.status, r.body);
    let long = vec![rng.tokens(101, DIM); 2];
    let r = post(a, "/v1/collections/b/search", &json!({"queries": long}));
    assert!(r.status == 413 && r.body.contains("max_batch_tokens"), "{} {}", r.status, r.body);
    let r = post(a, "/v1/collections/b/search", &json!({"queries": [queries[0]], "tokens": queries[0]}));
    assert!(r.status == 400 && r.body.contains("not both"), "{} {}", r.status, r.body);
    let r = post(a, "/v1/collections/b/search", &json!({"queries": [queries[0]], "k": 0}));
    assert!(r.status == 400 && r.body.contains("k must be"), "{} {}", r.status, r.body);
    let r = post(a, "/v1/collections/nope/search", &json!({"queries": [queries[0]]}));
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(ok(a, "/v1/collections/b/search", &json!({"queries": []}))["results"], json!([]));
}

/// A collection with a centroids index: created by name, its codebook trained
/// when the first segment of 65,536 tokens is sealed (info reports it),
/// searched with `nprobe` (every document a candidate: the exact ranking),
/// and `nprobe`/`ef` refused where they do not apply.
#[test]
fn centroids_index_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    let r = post(a, "/v1/collections", &json!({"name": "c", "dim": DIM, "index": "centroids", "text": "none"}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["index"], "centroids");
    ok(a, "/v1/collections", &json!({"name": "p", "dim": DIM}));
    let mut rng = Rng::new(8);
    // 1,040 documents of 64 tokens: 66,560 tokens, enough to train the codebook.
    let docs: Vec<(String, Vec<Vec<f32>>)> = (0..1040).map(|i| (format!("d{i}"), rng.tokens(64, DIM))).collect();
    for chunk in docs.chunks(260) {
        upsert_all(a, "c", chunk);
    }
    let info = ok(a, "/v1/collections/c/flush", &json!({}));
    assert_eq!(info["centroids"], 1024, "{info}");
    assert!(info["index_bytes_per_token"].as_f64().unwrap() > 0.0, "{info}");
    upsert_all(a, "c", &corpus(&mut rng, 20)); // and a memtable
    upsert_all(a, "p", &corpus(&mut rng, 20));
    let q = rng.tokens(3, DIM);
    let search = |coll: &str, extra: Value| {
        let mut body = json!({"tokens": q, "k": 10});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post(a, &format!("/v1/collections/{coll}/search"), &body)
    };
    let exact = search("c", json!({"exact": true})).json();
    let all = search("c", json!({"candidates": 10_000, "nprobe": 4})).json();
    assert_eq!(exact["hits"], all["hits"]);
    assert_eq!((&exact["candidates"], &all["candidates"]), (&Value::Null, &json!(10_000)), "how many were scored");
    let few = search("c", json!({"candidates": 30, "nprobe": 8}));
    assert_eq!(few.status, 200, "{}", few.body);
    assert_eq!((few.json()["hits"].as_array().unwrap().len(), &few.json()["candidates"]), (10, &json!(30)));
    // Unset, the candidates grow with k: max(256, 6·k, 2.5·√documents) for token centroids.
    for k in [10usize, 100] {
        let want = 256usize.max(6 * k).max((2.5 * 1060f64.sqrt()).ceil() as usize);
        assert_eq!(search("c", json!({"k": k})).json()["candidates"], want, "k = {k}");
    }
    for (coll, extra, words) in [
        ("p", json!({"nprobe": 4}), "nprobe"),
        ("c", json!({"ef": 40}), "ef applies"),
        ("c", json!({"nprobe": 4, "exact": true}), "nprobe"),
        ("c", json!({"nprobe": 4, "ids": ["d1"]}), "tensor-only"),
        ("c", json!({"nprobe": 0}), "nprobe"),
        ("c", json!({"nprobe": 5000}), "nprobe"),
    ] {
        let r = search(coll, extra.clone());
        assert!(r.status == 400 && r.body.contains(words), "{extra}: {} {}", r.status, r.body);
    }
}

/// Issue #16, fault 9: a create with `if_not_exists` racing a drop of the
/// same name answers created (201) or exists (200), never 404.
#[test]
fn create_if_not_exists_racing_a_drop_never_answers_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dropper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut drops = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http(a, "DELETE", "/v1/collections/r", None, None);
                assert!(r.status == 200 || r.status == 204 || r.status == 404, "drop: {} {}", r.status, r.body);
                drops += usize::from(r.status != 404);
            }
            drops
        })
    };
    for i in 0..600 {
        let r = post(a, "/v1/collections", &json!({"name": "r", "dim": DIM, "if_not_exists": true}));
        assert!(r.status == 200 || r.status == 201, "create #{i}: {} {}", r.status, r.body);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(dropper.join().unwrap() > 0, "the drops raced the creates");
}

/// Final-rank fusion over HTTP: the collection's ranking (set in the engine,
/// as `tessera tune` does) orders a hybrid query that says no rank, with its
/// candidates; an explicit rank overrides it; components add up to the score;
/// bad rank options answer 400.
#[test]
fn hybrid_queries_take_the_collection_ranking_and_explicit_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(17);
    let docs = corpus(&mut rng, 80);
    {
        let db = tessera::Database::open(dir.path()).unwrap();
        let c = db.create_collection("c", tessera::CollectionConfig::new(DIM)).unwrap();
        let batch: Vec<tessera::Document> = docs
            .iter()
            .enumerate()
            .map(|(i, (id, rows))| {
                let t = tessera::Tokens::F32 { data: rows.concat(), dim: DIM };
                tessera::Document::new(id, t).with_text(format!("alpha word{} common{}", i % 7, "x".repeat(i % 5)))
            })
            .collect();
        c.upsert(&batch).unwrap();
        let rank = tessera::Rank::linear(
            tessera::Norm::MinMax,
            [(tessera::Signal::MaxSim, 1.0), (tessera::Signal::Bm25, 0.8)],
        );
        c.set_ranking(tessera::Ranking { rank, candidates: Some(30) }).unwrap();
    }
    let s = TestServer::default(dir.path());
    let a = s.http;
    let info = get(a, "/v1/collections/c").json();
    assert_eq!(
        info["ranking"],
        json!({"rank": "linear", "norm": "minmax", "weights": {"maxsim": 1.0, "bm25": 0.8}, "candidates": 30})
    );
    let q = docs[3].1.clone();
    let base = json!({"tokens": q, "text": "word3 alpha", "k": 8});
    let default = ok(a, "/v1/collections/c/search", &base);
    let mut explicit = base.clone();
    explicit["rank"] = "linear".into();
    explicit["rank_norm"] = "minmax".into();
    explicit["rank_weights"] = json!({"bm25": 0.8});
    explicit["candidates"] = 30.into();
    assert_eq!(default, ok(a, "/v1/collections/c/search", &explicit), "the default is the collection's ranking");
    assert_eq!(default["candidates"], 30);
    for h in default["hits"].as_array().unwrap() {
        let parts: f64 = h["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["weight"].as_f64().unwrap() * c["normalized"].as_f64().unwrap())
            .sum();
        assert!((parts - h["score"].as_f64().unwrap()).abs() < 1e-4, "{h}");
        let m = &h["components"][0];
        assert_eq!(m["signal"], "maxsim");
        let id: usize = h["id"].as_str().unwrap()[4..].parse().unwrap();
        assert!((m["raw"].as_f64().unwrap() - maxsim(&q, &f16_round(&docs[id].1))).abs() < 1e-3);
    }
    let mut maxsim_order = base.clone();
    maxsim_order["rank"] = "maxsim".into();
    let r = ok(a, "/v1/collections/c/search", &maxsim_order);
    let scores: Vec<f64> = r["hits"].as_array().unwrap().iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]) && r["hits"][0].get("components").is_none());
    for (body, want) in [
        (json!({"tokens": q, "text": "alpha", "rank_weights": {"bm25": 1}}), "give rank too"),
        (json!({"tokens": q, "text": "alpha", "rank": "best"}), "unknown rank"),
        (json!({"tokens": q, "text": "alpha", "rank": "maxsim", "rank_norm": "zscore"}), "not maxsim"),
        (json!({"tokens": q, "text": "alpha", "rank": "linear", "rank_weights": {"vector": 1}}), "vector source"),
        (json!({"tokens": q, "rank": "linear", "rank_weights": {"bm25": 1}}), "needs a text query"),
        (json!({"text": "alpha", "rank": "linear"}), "needs query tokens"),
        (json!({"tokens": q, "text": "alpha", "rank": "linear", "rank_weights": {"maxsim": 0}}), "not 0"),
        (json!({"tokens": q, "text": "alpha", "rank": "linear", "rank_weights": {"title": 1}}), "unknown rank signal"),
    ] {
        let r = post(a, "/v1/collections/c/search", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(want), "{body}: {}", r.body);
    }
    s.stop().unwrap();
}

/// Issue #16, fault 9: the OpenAPI says `integer`, and JSON Schema counts a
/// number with no fractional part (`132.0`) as one; a fraction or a negative
/// stays refused.
#[test]
fn integer_valued_numbers_are_integers() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    let c = ok(a, "/v1/collections", &json!({"name": "c", "dim": 2.0, "index": "none"}));
    assert_eq!(c["dim"], 2);
    ok(
        a,
        "/v1/collections/c/upsert",
        &json!({"documents": [{"id": "a", "tokens": [[1, 0]]}, {"id": "b", "tokens": [[0, 1]]}]}),
    );
    let packed = json!({"dtype": "f32", "shape": [1.0, 2.0], "data": "AACAPwAAAAA="});
    let r = ok(a, "/v1/collections/c/search", &json!({"tokens": packed, "k": 1.0, "candidates": 2e0}));
    assert_eq!(r["hits"].as_array().unwrap().len(), 1);
    assert_eq!(r["hits"][0]["id"], "a");
    for (body, want) in [
        (json!({"tokens": [[1, 0]], "k": 1.5}), "invalid value: floating point `1.5`"),
        (json!({"tokens": [[1, 0]], "k": -1.0}), "invalid value"),
        (json!({"tokens": [[1, 0]], "k": 1e300}), "invalid value"),
        (json!({"tokens": [[1, 0]], "k": "1"}), "invalid type"),
    ] {
        let r = post(a, "/v1/collections/c/search", &body);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(want), "{body}: {}", r.body);
    }
    let r = post(a, "/v1/collections", &json!({"name": "d", "dim": 2.5}));
    assert_eq!(r.status, 400, "{}", r.body);
    s.stop().unwrap();
}

/// Issue #16, fault 5: a body trickled after the headers is answered 408 once
/// `body_timeout_ms` has passed (its connection slot freed), and one address
/// holding `max_connections_per_address` connections gets 429 for more while
/// other addresses are served.
#[test]
fn slow_bodies_time_out_and_one_address_cannot_take_every_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), |c| {
        c.limits.body_timeout_ms = 400;
        c.max_connections_per_address = 3;
        c.max_connections = 8;
    });
    let a = s.http;
    ok(a, "/v1/collections", &json!({"name": "c", "dim": 2}));
    let trickle = || {
        let mut sock = std::net::TcpStream::connect(a).unwrap();
        sock.write_all(b"POST /v1/collections/c/upsert HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{\"documents\"")
            .unwrap();
        sock
    };
    let t = std::time::Instant::now();
    let mut slow = trickle();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = slow.read(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#""code":"request_timeout""#) && reply.contains("body_timeout_ms"), "{reply}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "answered after {:?}", t.elapsed());
    // Three connections from 127.0.0.1 are the most it gets; 127.0.0.2 is still served.
    let held: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(a).unwrap()).collect();
    // The server counts a connection once it has accepted it: on a loaded
    // machine that can take longer than a fixed pause, so ask until it does.
    let since = std::time::Instant::now();
    let r = loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let r = raw(a, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if r.status != 200 || since.elapsed() > std::time::Duration::from_secs(10) {
            break r;
        }
    };
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("max_connections_per_address"), "{}", r.body);
    let from_other = s.rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut st = sock.connect(a).await.unwrap();
        st.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        st.read_to_string(&mut out).await.unwrap();
        out
    });
    assert!(from_other.starts_with("HTTP/1.1 200"), "{from_other}");
    drop(held);
    let since = std::time::Instant::now();
    let status = loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let status = get(a, "/health").status;
        if status == 200 || since.elapsed() > std::time::Duration::from_secs(10) {
            break status;
        }
    };
    assert_eq!(status, 200, "the address's connections were given back");
    s.stop().unwrap();
}

/// Issue #16, deadlines: a search past its `timeout_ms` answers 504
/// `deadline_exceeded` long before the whole search would have finished, and
/// its search slot is free at once (one search thread here); a search
/// waiting for a busy slot past its deadline answers 504 too.
#[test]
fn a_deadline_stops_the_search_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (dim, n_docs, n_tok) = (64, 20_000, 32);
    {
        let db = tessera::Database::open(dir.path()).unwrap();
        let cfg = tessera::CollectionConfig { index: None, text: None, ..tessera::CollectionConfig::new(dim) };
        let c = db.create_collection("big", cfg).unwrap();
        let mut rng = Rng::new(3);
        for chunk in (0..n_docs).collect::<Vec<_>>().chunks(2000) {
            let docs: Vec<tessera::Document> = chunk
                .iter()
                .map(|i| {
                    let rows = rng.tokens(n_tok, dim);
                    tessera::Document::new(format!("d{i}"), tessera::Tokens::F32 { data: rows.concat(), dim })
                })
                .collect();
            c.upsert(&docs).unwrap();
        }
        c.flush().unwrap();
        let small = db.create_collection("small", tessera::CollectionConfig::new(dim)).unwrap();
        small
            .upsert(&[tessera::Document::new("s", tessera::Tokens::F32 { data: rng.tokens(1, dim).concat(), dim })])
            .unwrap();
    }
    let s = TestServer::start_with(dir.path(), |c| c.threads = 1);
    let a = s.http;
    let q = Rng::new(4).tokens(1024, dim);
    let timed = |body: &Value| {
        let t = std::time::Instant::now();
        let r = post(a, "/v1/collections/big/search", body);
        (r, t.elapsed())
    };
    let (full, t_full) = timed(&json!({"tokens": q, "k": 5, "exact": true}));
    assert_eq!(full.status, 200, "{}", full.body);
    let (r, t_stopped) = timed(&json!({"tokens": q, "k": 5, "exact": true, "timeout_ms": 5}));
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "deadline_exceeded");
    let t = std::time::Instant::now();
    let small = post(a, "/v1/collections/small/search", &json!({"tokens": [q[0].clone()], "k": 1}));
    let t_next = t.elapsed();
    assert_eq!(small.status, 200, "{}", small.body);
    eprintln!("exact search {t_full:?}; stopped after {t_stopped:?}; the next search took {t_next:?}");
    if t_full < std::time::Duration::from_millis(150) {
        eprintln!("skipping the timing assertions: the whole search takes only {t_full:?} on this machine");
    } else {
        assert!(t_stopped < t_full / 2, "stopped after {t_stopped:?}; the whole search takes {t_full:?}");
        assert!(t_next < t_full / 2, "the slot was not freed: the next search took {t_next:?}");
        // A search queued behind a busy slot gives up at its deadline.
        let busy = std::thread::spawn(move || {
            post(a, "/v1/collections/big/search", &json!({"tokens": q, "exact": true})).status
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        let q1 = Rng::new(9).tokens(1, dim);
        let (r, t_queued) = timed(&json!({"tokens": q1, "k": 1, "exact": true, "timeout_ms": 30}));
        assert_eq!(r.status, 504, "{}", r.body);
        assert!(t_queued < t_full, "queued {t_queued:?}");
        assert_eq!(busy.join().unwrap(), 200);
    }
    let zero = vec![vec![0.0f32; dim]];
    let r = post(a, "/v1/collections/big/search", &json!({"tokens": zero, "timeout_ms": 0}));
    assert_eq!(r.status, 400, "{}", r.body);

    // gRPC: the client's own deadline (the grpc-timeout header) stops the
    // search and frees its slot as `timeout_ms` does.
    let mut g = s.grpc_client();
    let q = Rng::new(4).tokens(1024, dim);
    let query = tessera_server::pb::Tensor {
        dtype: tessera_server::pb::Dtype::F32.into(),
        shape: vec![q.len() as u64, dim as u64],
        data: q.iter().flatten().flat_map(|x| x.to_le_bytes()).collect(),
    };
    let search = tessera_server::pb::SearchRequest {
        collection: "big".into(),
        query: Some(query),
        k: 5,
        exact: true,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    s.rt.block_on(g.search(search.clone())).unwrap();
    let t_full = t.elapsed();
    let mut req = tonic::Request::new(search.clone());
    req.set_timeout(std::time::Duration::from_millis(5));
    let t = std::time::Instant::now();
    let code = s.rt.block_on(g.search(req)).unwrap_err().code();
    let t_grpc = t.elapsed();
    assert!(matches!(code, tonic::Code::DeadlineExceeded | tonic::Code::Cancelled), "{code:?}");
    let t = std::time::Instant::now();
    let small = post(a, "/v1/collections/small/search", &json!({"tokens": [q[0].clone()], "k": 1}));
    let t_next = t.elapsed();
    assert_eq!(small.status, 200, "{}", small.body);
    eprintln!(
        "gRPC exact search {t_full:?}; with a 5 ms deadline it answered {code:?} after {t_grpc:?}; the next search took {t_next:?}"
    );
    if t_full < std::time::Duration::from_millis(150) {
        eprintln!("skipping the gRPC timing assertion: the whole search takes only {t_full:?} on this machine");
    } else {
        assert!(t_next < t_full / 2, "the gRPC deadline did not free the slot: the next search took {t_next:?}");
    }
    let mut req = tonic::Request::new(search);
    req.metadata_mut().insert("grpc-timeout", "soon".parse().unwrap());
    let err = s.rt.block_on(g.search(req)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let r = post(a, "/v1/collections/big/search", &json!({"tokens": zero, "timeout_ms": 60001}));
    assert_eq!((r.status, r.json()["error"]["limit"].as_str()), (400, Some("search_timeout_ms")), "{}", r.body);
    s.stop().unwrap();
}

/// Issue #16, fault 4 (in part): a filter or a payload is read with a bound
/// of MAX_FILTER_VALUES JSON values, checked while the body is parsed, so a
/// huge `in` list is refused before it becomes a huge tree in memory.
#[test]
fn huge_filters_and_payloads_are_refused_while_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    ok(a, "/v1/collections", &json!({"name": "c", "dim": 2}));
    ok(a, "/v1/collections/c/upsert", &json!({"documents": [{"id": "x", "tokens": [[1, 0]], "payload": {"n": 7}}]}));
    let most = tessera::MAX_FILTER_VALUES;
    // `in` with most − 3 values: the whole filter (object, field, array, values) holds most.
    let fits: Vec<usize> = (0..most - 3).collect();
    let r = ok(a, "/v1/collections/c/search", &json!({"tokens": [[1, 0]], "filter": {"field": "n", "in": fits}}));
    assert_eq!(r["hits"][0]["id"], "x");
    let over: Vec<usize> = (0..most).collect();
    for body in [
        json!({"tokens": [[1, 0]], "filter": {"field": "n", "in": over}}),
        json!({"documents": [{"id": "y", "tokens": [[1, 0]], "payload": {"list": over}}]}),
    ] {
        let path = if body.get("filter").is_some() { "/v1/collections/c/search" } else { "/v1/collections/c/upsert" };
        let r = post(a, path, &body);
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains(&format!("more than {most} JSON values")), "{}", &r.body[..r.body.len().min(300)]);
    }
    // A payload over max_payload_bytes (1 MiB by default): 413, naming the document.
    let big = "x".repeat((1 << 20) + 1);
    let r = post(
        a,
        "/v1/collections/c/upsert",
        &json!({"documents": [{"id": "z", "tokens": [[1, 0]], "payload": {"s": big}}]}),
    );
    assert_eq!(r.status, 413, "{}", &r.body[..r.body.len().min(300)]);
    assert_eq!(r.json()["error"]["limit"], "max_payload_bytes");
    assert!(
        r.json()["error"]["message"].as_str().unwrap().starts_with("document \"z\": the payload's size"),
        "{}",
        r.body
    );
    assert_eq!(get(a, "/v1/collections/c").json()["documents"], 1, "nothing of the refused upserts was written");
    let engine = tessera::Filter::from_json(&json!({"field": "n", "in": (0..most).collect::<Vec<_>>()})).unwrap_err();
    assert!(engine.to_string().contains(&format!("more than {most} values")), "{engine}");
    s.stop().unwrap();
}

/// The OpenAPI document says what the server answers: 429 on every route (the
/// per-address connection bound), 408 where a body is read, 504 on search, the
/// collection-name rule on `{name}`, and API keys required only by a server
/// that has them.
#[test]
fn openapi_describes_every_status_and_this_servers_auth() {
    let dir = tempfile::tempdir().unwrap();
    let open = TestServer::default(&dir.path().join("open"));
    let spec = get(open.http, "/openapi.json").json();
    assert!(spec.get("security").is_none(), "a server without keys requires none");
    let keyed = TestServer::start(
        &dir.path().join("keyed"),
        Limits::default(),
        ApiKeys::parse("rw:0123456789abcdef-key").unwrap(),
    );
    let r = http(keyed.http, "GET", "/openapi.json", None, None);
    assert_eq!(r.json()["security"], serde_json::json!([{"bearer": []}, {"apiKey": []}]));
    let pattern = "^[A-Za-z0-9_-]{1,64}$";
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let statuses = op["responses"].as_object().unwrap();
            assert!(statuses.contains_key("429"), "{method} {path}: 429");
            if op.get("requestBody").is_some() {
                assert!(statuses.contains_key("408"), "{method} {path}: 408");
            }
            if path.ends_with("/search") {
                assert!(statuses.contains_key("504"), "{method} {path}: 504");
            }
            for p in op.get("parameters").and_then(|p| p.as_array()).into_iter().flatten() {
                if p["name"] == "name" {
                    assert_eq!(p["schema"]["pattern"], pattern, "{method} {path}");
                }
            }
        }
    }
    // The pattern is the engine's rule for names.
    let long = "a".repeat(64);
    for (name, ok) in [("a", true), ("A_b-9", true), (long.as_str(), true), ("", false), ("a/b", false), ("é", false)]
    {
        assert_eq!(tessera::valid_name(name), ok, "{name:?}");
    }
    assert!(!tessera::valid_name(&"a".repeat(65)));
    for r in spec["components"]["responses"].as_object().unwrap().values() {
        assert!(r["content"]["application/json"]["schema"]["$ref"].is_string());
    }
}

/// Issue #30 item 15: a torn WAL tail cut when the server opened the
/// database is counted in `/metrics` and reported by the collection's info
/// (HTTP and gRPC), with the quarantine file that keeps its bytes.
#[test]
fn a_torn_wal_tail_cut_on_open_is_in_the_metrics_and_the_info() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(30);
    {
        let db = tessera::Database::open(dir.path()).unwrap();
        db.set_seal_idle(None);
        let c = db.create_collection("c", tessera::CollectionConfig::new(8)).unwrap();
        for i in 0..2 {
            let tokens = tessera::Tokens::F32 { data: rng.tokens(2, 8).concat(), dim: 8 };
            c.upsert(&[tessera::Document::new(format!("d{i}"), tokens)]).unwrap();
        }
    }
    let folder = dir.path().join("collections/c");
    let wal = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-"))
        .unwrap();
    let mut bytes = std::fs::read(&wal).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&wal, &bytes).unwrap();

    let server = TestServer::start_with(dir.path(), |c| c.seal_idle = None);
    let info = get(server.http, "/v1/collections/c").json();
    assert_eq!((info["documents"].as_u64(), info["wal_tails_cut"].as_u64()), (Some(1), Some(1)), "{info}");
    let kept: Vec<String> = serde_json::from_value(info["quarantine"].clone()).unwrap();
    assert_eq!(kept.len(), 1, "{info}");
    assert!(folder.join(&kept[0]).is_file());
    let m = get(server.http, "/metrics").body;
    assert!(m.contains(r#"tessera_wal_tails_cut_total{collection="c"} 1"#), "{m}");
    assert!(m.contains(r#"tessera_collection_quarantine_files{collection="c"} 1"#), "{m}");
    let mut g = server.grpc_client();
    let i = server.rt.block_on(g.get_collection(pb::CollectionRequest { collection: "c".into() })).unwrap();
    let i = i.into_inner();
    assert_eq!((i.wal_tails_cut, i.quarantine), (1, kept));
    server.stop().unwrap();
}

/// Issue #30 item 17: collection settings at creation, in the info, changed
/// by `POST .../settings` (write key), refused by name when fixed at
/// creation, of another index kind or out of bounds; `if_not_exists`
/// compares the settings it gives; gRPC does the same.
#[test]
fn collection_settings_at_creation_and_changed_later() {
    let dir = tempfile::tempdir().unwrap();
    let (rw, ro) = ("rw-key-0123456789abcdef", "ro-key-0123456789abcdef");
    let keys = ApiKeys::parse(&format!("rw:{rw}\nro:{ro}")).unwrap();
    let s = TestServer::start(dir.path(), Limits::default(), keys);
    let a = s.http;
    let call = |method: &str, path: &str, body: Value| http(a, method, path, Some(rw), Some(&body.to_string()));
    let create = json!({"name": "c", "dim": 8, "index": "centroids",
                        "settings": {"memtable_bytes": 1 << 20, "min_train_tokens": 100_000, "centroids_k": 64}});
    let r = call("POST", "/v1/collections", create.clone());
    assert_eq!(r.status, 201, "{}", r.body);
    let info = r.json();
    let want = json!({"memtable_bytes": 1 << 20, "max_segments": 16, "max_batch_bytes": 256 << 20, "pool_factor": 1,
                      "centroids_k": 64, "default_nprobe": 0, "min_train_tokens": 100_000,
                      "train_iterations": 8, "drift": 0.05, "expected_tokens": 0});
    assert_eq!(info["settings"], want);
    // The engine stored what the info says.
    let r = call("POST", "/v1/collections/c/settings", json!({"min_train_tokens": 256, "max_segments": 4}));
    assert_eq!(r.status, 200, "{}", r.body);
    let mut now = want.clone();
    (now["min_train_tokens"], now["max_segments"]) = (json!(256), json!(4));
    assert_eq!(r.json()["settings"], now);
    assert_eq!(http(a, "GET", "/v1/collections/c", Some(ro), None).json()["settings"], now);
    // Refusals: status 400 naming the setting; nothing changes.
    for (body, says) in [
        (json!({"centroids_k": 128}), "centroids_k is fixed when the collection is created"),
        (json!({"hnsw_m": 8}), "hnsw_m is fixed"),
        (json!({"memtable_bytes": 5}), "memtable_bytes must be in 4096..="),
        (json!({"default_nprobe": 9999}), "default_nprobe"),
        (json!({"memtable_bytes": -1}), "memtable_bytes"),
        (json!({"memtable_bytes": "big"}), "memtable_bytes"),
        (json!({"drift": 0}), "drift must be positive"),
        (json!({"max_segmnts": 3}), "unknown field `max_segmnts`"),
    ] {
        let r = call("POST", "/v1/collections/c/settings", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    assert_eq!(http(a, "GET", "/v1/collections/c", Some(rw), None).json()["settings"], now);
    let r = http(a, "POST", "/v1/collections/c/settings", Some(ro), Some(r#"{"max_segments": 3}"#));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(call("POST", "/v1/collections/nope/settings", json!({"max_segments": 3})).status, 404);
    // Creation refuses another kind's settings; if_not_exists compares the settings given.
    let r = call("POST", "/v1/collections", json!({"name": "p", "dim": 8, "settings": {"default_nprobe": 4}}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("default_nprobe does not apply to a collection with index pooled"), "{}", r.body);
    let again = json!({"name": "c", "dim": 8, "index": "centroids", "if_not_exists": true,
                       "settings": {"min_train_tokens": 256, "centroids_k": 64}});
    assert_eq!(call("POST", "/v1/collections", again).status, 200);
    let other = json!({"name": "c", "dim": 8, "index": "centroids", "if_not_exists": true,
                       "settings": {"memtable_bytes": 2 << 20}});
    let r = call("POST", "/v1/collections", other);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("memtable_bytes differs"), "{}", r.body);

    // gRPC: the same settings, field for field.
    let mut g = s.grpc_client();
    fn with_key<M>(m: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut().insert("authorization", "Bearer rw-key-0123456789abcdef".parse().unwrap());
        r
    }
    let i = s.rt.block_on(g.get_collection(with_key(pb::CollectionRequest { collection: "c".into() }))).unwrap();
    let st = i.into_inner().settings.unwrap();
    assert_eq!((st.min_train_tokens, st.max_segments, st.centroids_k, st.hnsw_m), (Some(256), Some(4), Some(64), None));
    let upd = pb::UpdateSettingsRequest {
        collection: "c".into(),
        settings: Some(pb::CollectionSettings { drift: Some(0.1), ..Default::default() }),
    };
    let i = s.rt.block_on(g.update_settings(with_key(upd))).unwrap().into_inner();
    assert_eq!(i.settings.unwrap().drift, Some(0.1));
    let bad = pb::UpdateSettingsRequest {
        collection: "c".into(),
        settings: Some(pb::CollectionSettings { train_iterations: Some(3), ..Default::default() }),
    };
    let e = s.rt.block_on(g.update_settings(with_key(bad))).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("train_iterations is fixed"), "{}", e.message());
    let create = pb::CreateCollectionRequest {
        name: "g".into(),
        dim: 8,
        settings: Some(pb::CollectionSettings { hnsw_m: Some(8), max_batch_bytes: Some(4096), ..Default::default() }),
        ..Default::default()
    };
    let st = s.rt.block_on(g.create_collection(with_key(create))).unwrap().into_inner().settings.unwrap();
    assert_eq!((st.hnsw_m, st.max_batch_bytes, st.min_train_tokens), (Some(8), Some(4096), None));
    // Token pooling: the setting over gRPC, an upsert's own factor over gRPC
    // and HTTP; the info counts the tokens given beside those stored.
    let upd = pb::UpdateSettingsRequest {
        collection: "g".into(),
        settings: Some(pb::CollectionSettings { pool_factor: Some(2), ..Default::default() }),
    };
    assert_eq!(
        s.rt.block_on(g.update_settings(with_key(upd))).unwrap().into_inner().settings.unwrap().pool_factor,
        Some(2)
    );
    let doc = |id: &str, n: usize| pb::Document {
        id: id.into(),
        tokens: Some(pb::Tensor {
            dtype: pb::Dtype::F32.into(),
            shape: vec![n as u64, 8],
            data: (0..n * 8).flat_map(|i| ((i % 7) as f32 - 3.0).to_le_bytes()).collect(),
        }),
        ..Default::default()
    };
    let up = |docs, pool_factor| pb::UpsertRequest { collection: "g".into(), documents: docs, pool_factor };
    s.rt.block_on(g.upsert(with_key(up(vec![doc("a", 9)], None)))).unwrap();
    s.rt.block_on(g.upsert(with_key(up(vec![doc("b", 9)], Some(3))))).unwrap();
    let e = s.rt.block_on(g.upsert(with_key(up(vec![doc("c", 9)], Some(0))))).unwrap_err();
    assert!(e.message().contains("pool_factor must be in 1..=64"), "{}", e.message());
    let body = json!({"documents": [{"id": "h", "tokens": vec![vec![1.0; 8]; 9]}], "pool_factor": 9});
    let r = http(s.http, "POST", "/v1/collections/g/upsert", Some(rw), Some(&body.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let info = s.rt.block_on(g.get_collection(with_key(pb::CollectionRequest { collection: "g".into() }))).unwrap();
    let info = info.into_inner();
    let want = [(9, 2), (9, 3), (9, 9)].map(|(n, f)| tessera::pooled_len(n, f)).iter().sum::<usize>();
    assert_eq!((info.tokens, info.given_tokens), (want as u64, 27));
    s.stop().unwrap();
}

/// The value of one sample line of a Prometheus exposition.
fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(line_start))?.rsplit(' ').next()?.parse().ok()
}

/// Issue #29: live recall — with every two-stage answer sampled, the server
/// searches each again exactly in the background and `/metrics` counts them
/// and the sum of their recall@k; the mean equals what this test computes
/// from the answers it got and exact searches of the same queries. Exact
/// searches are not sampled; a server without live recall exports nothing.
#[test]
fn live_recall_counts_the_recall_of_the_answers_given() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir.path(), |c| c.live_recall = Some((1.0, 1.0)));
    let a = s.http;
    ok(a, "/v1/collections", &json!({"name": "c", "dim": 8}));
    let mut rng = Rng::new(29);
    let docs: Vec<Value> =
        (0..300).map(|i| json!({"id": format!("d{i}"), "tokens": rng.tokens(2 + i % 5, 8)})).collect();
    ok(a, "/v1/collections/c/upsert", &json!({ "documents": docs }));
    ok(a, "/v1/collections/c/flush", &json!({}));
    let (n, k) = (20, 5);
    let mut expected = 0.0;
    for _ in 0..n {
        let q = rng.tokens(3, 8);
        let ids = |r: &Value| -> Vec<String> {
            r["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_string()).collect()
        };
        let answered = ids(&ok(a, "/v1/collections/c/search", &json!({"tokens": q, "k": k, "candidates": k})));
        let exact = ids(&ok(a, "/v1/collections/c/search", &json!({"tokens": q, "k": k, "exact": true})));
        expected += exact.iter().filter(|d| answered.contains(d)).count() as f64 / exact.len() as f64;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = get(a, "/metrics").body;
        if metric(&text, r#"tessera_live_recall_queries_total{collection="c"}"#) == Some(n as f64) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "not all checked: {text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let sum = metric(&text, r#"tessera_live_recall_sum_total{collection="c"}"#).unwrap();
    assert!((sum - expected).abs() < 1e-9, "live recall sum {sum}, from the answers {expected}");
    assert!(expected < n as f64, "some answers missed part of the exact top-k: a test that shows something");
    assert_eq!(metric(&text, r#"tessera_live_recall_skipped_total{collection="c"}"#), Some(0.0));
    s.stop().unwrap();

    let off = TestServer::default(&dir.path().join("off"));
    ok(off.http, "/v1/collections", &json!({"name": "c", "dim": 8}));
    ok(off.http, "/v1/collections/c/search", &json!({"tokens": rng.tokens(1, 8), "k": 1}));
    assert!(!get(off.http, "/metrics").body.contains("tessera_live_recall"));
    off.stop().unwrap();
}

/// A write a browser sends from another site's page (its `Origin` is not
/// this server) is refused — a page could otherwise write to a server on
/// loopback without keys; the same request without `Origin` (curl, the
/// clients) or from this server's own pages (the console) is served.
#[test]
fn browser_writes_from_another_origin_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    let body = r#"{"name": "c", "dim": 4}"#;
    let with_origin = |origin: &str| {
        let req = format!(
            "POST /v1/collections HTTP/1.1\r\nHost: {a}\r\nOrigin: {origin}\r\nConnection: close\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        raw(a, req.as_bytes())
    };
    let r = with_origin("http://evil.example");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("another origin"), "{}", r.body);
    assert_eq!(with_origin("null").status, 403);
    assert_eq!(get(a, "/v1/collections").json()["collections"], json!([]), "nothing was created");
    assert_eq!(with_origin(&format!("http://{a}")).status, 201, "the console's own origin");
    assert_eq!(post(a, "/v1/collections", &json!({"name": "d", "dim": 4})).status, 201, "no Origin: not a browser");
    s.stop().unwrap();
}
