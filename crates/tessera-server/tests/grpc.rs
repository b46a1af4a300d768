//! The gRPC API against a real server on a loopback port: every rpc, the
//! status codes of errors and limits, auth metadata, and that gRPC and HTTP
//! see the same data.

mod common;

use common::*;
use serde_json::json;
use tessera_server::pb;
use tessera_server::{ApiKeys, Limits};
use tonic::Code;

const DIM: usize = 8;

fn tensor(rows: &[Vec<f32>], f16: bool) -> pb::Tensor {
    let data = if f16 {
        rows.iter().flatten().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect()
    } else {
        rows.iter().flatten().flat_map(|&x| x.to_le_bytes()).collect()
    };
    pb::Tensor {
        dtype: if f16 { pb::Dtype::F16 } else { pb::Dtype::F32 }.into(),
        shape: vec![rows.len() as u64, rows[0].len() as u64],
        data,
    }
}

fn rows_of_tensor(t: &pb::Tensor) -> Vec<Vec<f32>> {
    assert_eq!(t.dtype, i32::from(pb::Dtype::F16));
    let flat: Vec<f32> = t.data.chunks(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
    flat.chunks(t.shape[1] as usize).map(<[f32]>::to_vec).collect()
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let e = r.expect_err("expected an error");
    (e.code(), e.message().to_string())
}

#[test]
fn every_rpc_against_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let mut c = s.grpc_client();
    let rt = &s.rt;
    let h = rt.block_on(c.health(pb::HealthRequest {})).unwrap().into_inner();
    assert_eq!(h.status, "ok");

    let info = rt
        .block_on(c.create_collection(pb::CreateCollectionRequest {
            name: "g".into(),
            dim: DIM as u32,
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!((info.index.as_str(), info.text.as_str(), info.durability.as_str()), ("pooled", "english", "sync"));
    let again = pb::CreateCollectionRequest { name: "g".into(), dim: DIM as u32, ..Default::default() };
    assert_eq!(code(rt.block_on(c.create_collection(again))).0, Code::AlreadyExists);

    let mut rng = Rng::new(11);
    let docs: Vec<(String, Vec<Vec<f32>>)> = (0..80)
        .map(|i| {
            let n = 2 + rng.below(12);
            (format!("d{i}"), rng.tokens(n, DIM))
        })
        .collect();
    let documents = docs
        .iter()
        .enumerate()
        .map(|(i, (id, rows))| pb::Document {
            id: id.clone(),
            tokens: Some(tensor(rows, i % 2 == 0)),
            text: Some(format!("gamma term{i}")),
            payload_json: Some(json!({"i": i}).to_string()),
        })
        .collect();
    let up = rt
        .block_on(c.upsert(pb::UpsertRequest { collection: "g".into(), documents, pool_factor: None }))
        .unwrap()
        .into_inner();
    assert_eq!(up.upserted, 80);

    // Get: f16 tokens exactly as stored; text and payload.
    let got = rt
        .block_on(c.get(pb::GetRequest {
            collection: "g".into(),
            ids: vec!["d3".into(), "zz".into()],
            omit_tokens: false,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(got.missing, ["zz"]);
    assert_eq!(rows_of_tensor(got.documents[0].tokens.as_ref().unwrap()), f16_round(&docs[3].1));
    assert_eq!(got.documents[0].payload_json.as_deref(), Some(r#"{"i":3}"#));

    // Scan: pages in id order, the filter's matches counted on each.
    let mut want: Vec<&str> =
        docs.iter().map(|d| d.0.as_str()).filter(|id| id[1..].parse::<usize>().unwrap() >= 30).collect();
    want.sort_unstable();
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let p = rt
            .block_on(c.scan(pb::ScanRequest {
                collection: "g".into(),
                filter_json: Some(r#"{"field": "i", "range": {"gte": 30}}"#.into()),
                after: after.clone(),
                limit: Some(7),
                with_tokens: seen.is_empty(),
            }))
            .unwrap()
            .into_inner();
        for d in &p.documents {
            let i: usize = d.id[1..].parse().unwrap();
            assert_eq!(d.payload_json.as_deref(), Some(json!({"i": i}).to_string().as_str()));
            match &d.tokens {
                Some(t) => assert_eq!(rows_of_tensor(t), f16_round(&docs[i].1)),
                None => assert!(!seen.is_empty()),
            }
        }
        seen.extend(p.documents.into_iter().map(|d| d.id));
        after = p.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, want);
    let count = |f: Option<&str>| {
        let r = pb::CountRequest { collection: "g".into(), filter_json: f.map(Into::into) };
        rt.block_on(c.clone().count(r)).unwrap().into_inner().count
    };
    assert_eq!((count(Some("null")), count(None)), (80, 80));
    assert_eq!(count(Some(r#"{"field": "i", "range": {"gte": 30}}"#)), want.len() as u64);
    let bad =
        pb::ScanRequest { collection: "g".into(), filter_json: Some(r#"{"field": "i"}"#.into()), ..Default::default() };
    assert_eq!(code(rt.block_on(c.scan(bad))).0, Code::InvalidArgument);
    let bad = pb::CountRequest { collection: "g".into(), filter_json: Some("{".into()) };
    assert_eq!(code(rt.block_on(c.count(bad))).0, Code::InvalidArgument);

    // Exact and two-stage search equal the reference.
    let q: Vec<Vec<f32>> = docs[40].1.iter().take(3).cloned().collect();
    let mut want: Vec<(String, f64)> = docs.iter().map(|(id, r)| (id.clone(), maxsim(&q, &f16_round(r)))).collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for exact in [true, false] {
        let r = rt
            .block_on(c.search(pb::SearchRequest {
                collection: "g".into(),
                query: Some(tensor(&q, false)),
                k: 5,
                exact,
                candidates: Some(80),
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        assert_eq!(r.mode, if exact { "exact" } else { "two_stage" });
        assert_eq!(r.hits.len(), 5);
        for (h, (_, score)) in r.hits.iter().zip(&want) {
            assert!((h.score as f64 - score).abs() < 1e-3, "{} {score}", h.score);
        }
        assert_eq!(r.hits[0].id, "d40");
    }
    // Hybrid with text, filter and sources.
    let r = rt
        .block_on(c.search(pb::SearchRequest {
            collection: "g".into(),
            query: Some(tensor(&q, true)),
            text: Some("term40".into()),
            filter_json: Some(r#"{"field": "i", "range": {"gte": 40}}"#.into()),
            fusion: pb::Fusion::Rrf.into(),
            k: 3,
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!(r.mode, "hybrid");
    assert_eq!(r.hits[0].id, "d40");
    let sources: Vec<&str> = r.hits[0].sources.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(sources, ["tensor", "text"]);
    // A linear rank: each hit's components add up to its score; a bad rank is INVALID_ARGUMENT.
    let linear = pb::SearchRequest {
        collection: "g".into(),
        query: Some(tensor(&q, true)),
        text: Some("term40".into()),
        rank: Some("linear".into()),
        rank_weights: [("bm25".to_string(), 0.5)].into(),
        k: 3,
        ..Default::default()
    };
    let lr = rt.block_on(c.search(linear.clone())).unwrap().into_inner();
    for h in &lr.hits {
        let parts: f64 = h.components.iter().map(|c| c.weight * c.normalized).sum();
        assert!((parts - h.score as f64).abs() < 1e-4 && h.components.len() == 2, "{h:?}");
    }
    let bad = pb::SearchRequest { rank_norm: Some("l2".into()), ..linear };
    assert_eq!(rt.block_on(c.search(bad)).unwrap_err().code(), tonic::Code::InvalidArgument);
    assert!(
        r.hits
            .iter()
            .all(
                |h| h.payload_json.as_ref().unwrap().parse::<serde_json::Value>().unwrap()["i"].as_u64().unwrap() >= 40
            )
    );

    // Rerank.
    let r = rt
        .block_on(c.rerank(pb::RerankRequest {
            collection: "g".into(),
            query: Some(tensor(&q, false)),
            ids: vec!["d1".into(), "d2".into(), "nope".into()],
            omit_text: true,
            omit_payload: true,
            query_text: None,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(r.missing, ["nope"]);
    assert_eq!(r.hits.len(), 2);
    assert!(r.hits.iter().all(|h| h.text.is_none() && h.payload_json.is_none()));
    for h in &r.hits {
        let i: usize = h.id[1..].parse().unwrap();
        assert!((h.score as f64 - maxsim(&q, &f16_round(&docs[i].1))).abs() < 1e-3);
    }

    // Delete, flush, compact, info, list; HTTP sees the same collection.
    let d = rt
        .block_on(c.delete(pb::DeleteRequest { collection: "g".into(), ids: vec!["d0".into(), "d0x".into()] }))
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted, 1);
    let i = rt.block_on(c.flush(pb::CollectionRequest { collection: "g".into() })).unwrap().into_inner();
    assert_eq!((i.documents, i.segments, i.memtable_documents), (79, 1, 0));
    let i = rt.block_on(c.compact(pb::CollectionRequest { collection: "g".into() })).unwrap().into_inner();
    assert_eq!((i.documents, i.deleted_in_segments), (79, 0));
    let i = rt.block_on(c.get_collection(pb::CollectionRequest { collection: "g".into() })).unwrap().into_inner();
    assert_eq!(i.tokens as usize, docs[1..].iter().map(|d| d.1.len()).sum::<usize>());
    assert_eq!(i.ranking_json, r#"{"rank":"maxsim"}"#);
    assert_eq!(get(s.http, "/v1/collections/g").json()["documents"], 79);
    let l = rt.block_on(c.list_collections(pb::ListCollectionsRequest {})).unwrap().into_inner();
    assert_eq!(l.collections.len(), 1);
    let m = get(s.http, "/metrics").body;
    assert!(m.contains(r#"tessera_requests_total{protocol="grpc",route="Search",status="Ok"}"#), "{m}");
    rt.block_on(c.drop_collection(pb::CollectionRequest { collection: "g".into() })).unwrap();
    assert_eq!(code(rt.block_on(c.get_collection(pb::CollectionRequest { collection: "g".into() }))).0, Code::NotFound);
}

#[test]
fn errors_and_limits_map_to_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let limits = small_limits();
    let s = TestServer::start(dir.path(), limits, ApiKeys::default());
    let mut c = s.grpc_client();
    let rt = &s.rt;
    rt.block_on(c.create_collection(pb::CreateCollectionRequest { name: "g".into(), dim: 2, ..Default::default() }))
        .unwrap();
    let row = vec![1.0f32, 0.0];
    let t = |n: usize| Some(tensor(&vec![row.clone(); n], false));
    let doc = |id: &str, n: usize| pb::Document { id: id.into(), tokens: t(n), text: None, payload_json: None };
    let up = |docs: Vec<pb::Document>| pb::UpsertRequest { collection: "g".into(), documents: docs, pool_factor: None };
    let search = |f: &dyn Fn(&mut pb::SearchRequest)| {
        let mut r = pb::SearchRequest { collection: "g".into(), query: t(1), k: 3, ..Default::default() };
        f(&mut r);
        r
    };
    let five: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    let cases: Vec<(Code, &str, (Code, String))> = vec![
        (Code::ResourceExhausted, "max_doc_tokens", code(rt.block_on(c.upsert(up(vec![doc("a", 6)]))))),
        (
            Code::ResourceExhausted,
            "max_batch_docs",
            code(rt.block_on(c.upsert(up(vec![doc("a", 1), doc("b", 1), doc("c", 1), doc("d", 1)])))),
        ),
        (Code::ResourceExhausted, "max_query_tokens", code(rt.block_on(c.search(search(&|r| r.query = t(5)))))),
        (Code::OutOfRange, "max_k", code(rt.block_on(c.search(search(&|r| r.k = 8))))),
        (Code::OutOfRange, "max_candidates", code(rt.block_on(c.search(search(&|r| r.candidates = Some(51)))))),
        (
            Code::ResourceExhausted,
            "max_ids",
            code(rt.block_on(c.delete(pb::DeleteRequest { collection: "g".into(), ids: five.clone() }))),
        ),
        (
            Code::ResourceExhausted,
            "max_body_bytes",
            code(rt.block_on(c.upsert(up(vec![pb::Document { text: Some("x".repeat(5000)), ..doc("big", 1) }])))),
        ),
        (
            Code::InvalidArgument,
            "wrong dimension",
            code(rt.block_on(c.search(search(&|r| r.query = Some(tensor(&[vec![1.0; 3]], false)))))),
        ),
        (Code::InvalidArgument, "dtype", code(rt.block_on(c.search(search(&|r| r.query.as_mut().unwrap().dtype = 0))))),
        (
            Code::InvalidArgument,
            "needs 8",
            code(rt.block_on(c.search(search(&|r| r.query.as_mut().unwrap().data.pop().map(|_| ()).unwrap())))),
        ),
        (
            Code::InvalidArgument,
            "shape",
            code(rt.block_on(c.search(search(&|r| r.query.as_mut().unwrap().shape = vec![2])))),
        ),
        (
            Code::InvalidArgument,
            "invalid value",
            code(rt.block_on(c.search(search(&|r| r.query = Some(tensor(&[vec![f32::NAN, 0.0]], false)))))),
        ),
        (
            Code::InvalidArgument,
            "filter_json",
            code(rt.block_on(c.search(search(&|r| r.filter_json = Some("{".into()))))),
        ),
        (
            Code::InvalidArgument,
            "query is required",
            code(rt.block_on(c.rerank(pb::RerankRequest {
                collection: "g".into(),
                ids: vec!["a".into()],
                ..Default::default()
            }))),
        ),
        (
            Code::InvalidArgument,
            "payload_json",
            code(rt.block_on(c.upsert(up(vec![pb::Document { payload_json: Some("nope".into()), ..doc("p", 1) }])))),
        ),
        (
            Code::NotFound,
            "unknown collection",
            code(rt.block_on(c.search(pb::SearchRequest {
                collection: "zz".into(),
                query: t(1),
                ..Default::default()
            }))),
        ),
        (
            Code::InvalidArgument,
            "dim must be",
            code(rt.block_on(c.create_collection(pb::CreateCollectionRequest {
                name: "x".into(),
                dim: 0,
                ..Default::default()
            }))),
        ),
    ];
    for (want, needle, (got, msg)) in cases {
        assert_eq!(got, want, "{needle}: {msg}");
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    // Nothing was applied.
    let i = rt.block_on(c.get_collection(pb::CollectionRequest { collection: "g".into() })).unwrap().into_inner();
    assert_eq!(i.documents, 0);
}

#[test]
fn grpc_keys_in_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (rw, ro) = ("grpc-rw-0123456789abcdef", "grpc-ro-0123456789abcdef");
    let s = TestServer::start(dir.path(), Limits::default(), ApiKeys::parse(&format!("rw:{rw},ro:{ro}")).unwrap());
    let mut c = s.grpc_client();
    let rt = &s.rt;
    let with = |key: Option<&str>, m: pb::CreateCollectionRequest| {
        let mut r = tonic::Request::new(m);
        if let Some(k) = key {
            r.metadata_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        r
    };
    let create = || pb::CreateCollectionRequest { name: "g".into(), dim: 2, ..Default::default() };
    assert!(rt.block_on(c.health(pb::HealthRequest {})).is_ok(), "health needs no key");
    assert_eq!(code(rt.block_on(c.create_collection(with(None, create())))).0, Code::Unauthenticated);
    assert_eq!(
        code(rt.block_on(c.create_collection(with(Some("bad-key-0123456789abc"), create())))).0,
        Code::Unauthenticated
    );
    assert_eq!(code(rt.block_on(c.create_collection(with(Some(ro), create())))).0, Code::PermissionDenied);
    rt.block_on(c.create_collection(with(Some(rw), create()))).unwrap();
    let mut list = tonic::Request::new(pb::ListCollectionsRequest {});
    list.metadata_mut().insert("x-api-key", ro.parse().unwrap());
    assert_eq!(rt.block_on(c.list_collections(list)).unwrap().into_inner().collections.len(), 1);
    assert_eq!(code(rt.block_on(c.list_collections(pb::ListCollectionsRequest {}))).0, Code::Unauthenticated);
    // The key is checked before the message is read: an oversize message
    // without a key is refused as unauthenticated, not decoded.
    let big = pb::UpsertRequest {
        collection: "g".into(),
        documents: vec![pb::Document { id: "x".into(), text: Some("z".repeat(70 << 20)), ..Default::default() }],
        pool_factor: None,
    };
    let (got, msg) = code(rt.block_on(c.upsert(big)));
    assert_eq!(got, Code::Unauthenticated, "{msg}");
}

#[test]
fn storage_screening_and_rerank_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let mut c = s.grpc_client();
    let rt = &s.rt;
    let create = pb::CreateCollectionRequest {
        name: "q".into(),
        dim: DIM as u32,
        storage: "int8".into(),
        screening: "binary".into(),
        ..Default::default()
    };
    let info = rt.block_on(c.create_collection(create)).unwrap().into_inner();
    assert_eq!((info.storage.as_str(), info.screening.as_str(), info.bytes_per_token), ("int8", "binary", 8 + 4 + 8));
    let bad =
        pb::CreateCollectionRequest { name: "x".into(), dim: DIM as u32, storage: "f8".into(), ..Default::default() };
    assert_eq!(code(rt.block_on(c.create_collection(bad))).0, Code::InvalidArgument);
    let residual = |index: &str| pb::CreateCollectionRequest {
        name: "r".into(),
        dim: DIM as u32,
        storage: "residual2".into(),
        index: index.into(),
        ..Default::default()
    };
    let (status, message) = code(rt.block_on(c.create_collection(residual(""))));
    assert!(status == Code::InvalidArgument && message.contains("centroids"), "{message}");
    let info = rt.block_on(c.create_collection(residual("centroids"))).unwrap().into_inner();
    assert_eq!((info.storage.as_str(), info.bytes_per_token), ("residual2", 2 + DIM as u32 / 4));
    let kept = pb::CreateCollectionRequest { name: "rk".into(), keep: "int8".into(), ..residual("centroids") };
    let info = rt.block_on(c.create_collection(kept)).unwrap().into_inner();
    assert_eq!((info.keep.as_str(), info.kept_bytes_per_token), ("int8", 0.0));
    let mut rng = Rng::new(3);
    let documents = (0..40)
        .map(|i| {
            let n = 1 + rng.below(9);
            pb::Document { id: format!("d{i}"), tokens: Some(tensor(&rng.tokens(n, DIM), false)), ..Default::default() }
        })
        .collect();
    rt.block_on(c.upsert(pb::UpsertRequest { collection: "q".into(), documents, pool_factor: None })).unwrap();
    let query = Some(tensor(&rng.tokens(2, DIM), false));
    let search = |rerank: Option<u32>, exact: bool| pb::SearchRequest {
        collection: "q".into(),
        query: query.clone(),
        k: 5,
        rerank,
        exact,
        ..Default::default()
    };
    let ids = |r: pb::SearchResponse| r.hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    let exact = ids(rt.block_on(c.search(search(None, true))).unwrap().into_inner());
    let all = ids(rt.block_on(c.search(search(Some(1000), false))).unwrap().into_inner());
    assert_eq!(exact, all);
    let (code_, msg) = code(rt.block_on(c.search(search(Some(10), true))));
    assert!(code_ == Code::InvalidArgument && msg.contains("exact"), "{msg}");
    // A centroids index: created by name; nprobe applies to it and only to it.
    let create = pb::CreateCollectionRequest {
        name: "cen".into(),
        dim: DIM as u32,
        index: "centroids".into(),
        ..Default::default()
    };
    assert_eq!(rt.block_on(c.create_collection(create)).unwrap().into_inner().index, "centroids");
    let documents = (0..20)
        .map(|i| pb::Document {
            id: format!("d{i}"),
            tokens: Some(tensor(&rng.tokens(3, DIM), false)),
            ..Default::default()
        })
        .collect();
    rt.block_on(c.upsert(pb::UpsertRequest { collection: "cen".into(), documents, pool_factor: None })).unwrap();
    let with_nprobe = |coll: &str| pb::SearchRequest {
        collection: coll.into(),
        query: query.clone(),
        k: 5,
        nprobe: Some(4),
        ..Default::default()
    };
    let r = rt.block_on(c.search(with_nprobe("cen"))).unwrap().into_inner();
    // 5 results from the default candidates, max(256, 8·k, 2.5·√documents).
    let docs = rt
        .block_on(c.get_collection(pb::CollectionRequest { collection: "cen".into() }))
        .unwrap()
        .into_inner()
        .documents;
    let want = (2.5 * (docs as f64).sqrt()).ceil().max(256.0) as u32; // max(256, 8·5, 2.5·√documents)
    assert_eq!((r.hits.len(), r.candidates), (5, Some(want)));
    let (code_, msg) = code(rt.block_on(c.search(with_nprobe("q"))));
    assert!(code_ == Code::InvalidArgument && msg.contains("nprobe"), "{msg}");
}

/// SearchBatch answers each query as Search does alone, in order; a bad query
/// gets its own error; the batch limits refuse the whole call.
#[test]
fn search_batch_over_grpc_equals_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let mut c = s.grpc_client();
    let rt = &s.rt;
    let create = pb::CreateCollectionRequest { name: "b".into(), dim: DIM as u32, ..Default::default() };
    rt.block_on(c.create_collection(create)).unwrap();
    let mut rng = Rng::new(8);
    let documents = (0..60)
        .map(|i| {
            let n = 1 + rng.below(9);
            pb::Document {
                id: format!("d{i}"),
                tokens: Some(tensor(&rng.tokens(n, DIM), i % 2 == 0)),
                ..Default::default()
            }
        })
        .collect();
    rt.block_on(c.upsert(pb::UpsertRequest { collection: "b".into(), documents, pool_factor: None })).unwrap();
    let queries: Vec<pb::Tensor> = (0..20).map(|i| tensor(&rng.tokens(1 + i % 4, DIM), i % 3 == 0)).collect();
    for exact in [false, true] {
        let options = pb::SearchRequest { collection: "b".into(), k: 6, exact, ..Default::default() };
        let batch = pb::SearchBatchRequest {
            search: Some(options.clone()),
            queries: queries.clone(),
            query_texts: vec![],
            texts: vec![],
        };
        let out = rt.block_on(c.search_batch(batch)).unwrap().into_inner();
        assert_eq!(out.results.len(), queries.len());
        for (q, r) in queries.iter().zip(out.results) {
            let alone = rt
                .block_on(c.search(pb::SearchRequest { query: Some(q.clone()), ..options.clone() }))
                .unwrap()
                .into_inner();
            assert_eq!(r.result, Some(pb::search_result::Result::Response(alone)));
        }
    }
    // Documents with texts, then one BM25 text per query: each a hybrid query with its own.
    let documents = (0..60)
        .map(|i| pb::Document {
            id: format!("t{i}"),
            tokens: Some(tensor(&rng.tokens(3, DIM), true)),
            text: Some(format!("term{} shared", i % 7)),
            ..Default::default()
        })
        .collect();
    rt.block_on(c.upsert(pb::UpsertRequest { collection: "b".into(), documents, pool_factor: None })).unwrap();
    let texts: Vec<String> = (0..queries.len()).map(|i| format!("term{}", i % 7)).collect();
    let options = pb::SearchRequest { collection: "b".into(), k: 5, ..Default::default() };
    let batch = pb::SearchBatchRequest {
        search: Some(options.clone()),
        queries: queries.clone(),
        query_texts: vec![],
        texts: texts.clone(),
    };
    let out = rt.block_on(c.search_batch(batch)).unwrap().into_inner();
    for ((q, t), r) in queries.iter().zip(&texts).zip(out.results) {
        let one = pb::SearchRequest { query: Some(q.clone()), text: Some(t.clone()), ..options.clone() };
        let alone = rt.block_on(c.search(one)).unwrap().into_inner();
        assert_eq!(r.result, Some(pb::search_result::Result::Response(alone)));
    }
    let mut bad = queries[..2].to_vec();
    bad.insert(1, tensor(&rng.tokens(2, DIM + 2), false));
    let options = pb::SearchRequest { collection: "b".into(), k: 3, ..Default::default() };
    let out = rt
        .block_on(c.search_batch(pb::SearchBatchRequest {
            search: Some(options),
            queries: bad,
            query_texts: vec![],
            texts: vec![],
        }))
        .unwrap();
    let results = out.into_inner().results;
    match &results[1].result {
        Some(pb::search_result::Result::Error(e)) => {
            assert_eq!(e.code, Code::InvalidArgument as u32);
            assert!(e.message.contains("dimension"), "{}", e.message);
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(matches!(results[0].result, Some(pb::search_result::Result::Response(_))));
    assert!(matches!(results[2].result, Some(pb::search_result::Result::Response(_))));
    // The query belongs in `queries`; too many queries are refused as a whole.
    let with_query =
        pb::SearchRequest { collection: "b".into(), query: Some(queries[0].clone()), ..Default::default() };
    let r = rt.block_on(c.search_batch(pb::SearchBatchRequest {
        search: Some(with_query),
        queries: vec![],
        query_texts: vec![],
        texts: vec![],
    }));
    assert_eq!(code(r).0, Code::InvalidArgument);
    let many = vec![queries[0].clone(); Limits::default().max_batch_queries + 1];
    let options = pb::SearchRequest { collection: "b".into(), ..Default::default() };
    let r = rt.block_on(c.search_batch(pb::SearchBatchRequest {
        search: Some(options),
        queries: many,
        query_texts: vec![],
        texts: vec![],
    }));
    let (code_, msg) = code(r);
    assert!(code_ == Code::ResourceExhausted && msg.contains("max_batch_queries"), "{msg}");
}

/// Sends request bytes as they are (no protobuf encoding on the client).
#[derive(Clone, Copy)]
struct RawCodec;
struct RawBytes;

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let v = buf.chunk().to_vec();
        buf.advance(v.len());
        Ok(Some(v))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// Issue #16, fault 1: request bytes that are not a valid protobuf message
/// are INVALID_ARGUMENT (not INTERNAL), and counted in /metrics.
#[test]
fn invalid_protobuf_is_invalid_argument_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    use prost::Message;
    let valid = pb::SearchRequest { collection: "abcdef".into(), ..Default::default() }.encode_to_vec();
    let mut nested = Vec::new();
    for _ in 0..200 {
        nested.extend_from_slice(&[0x9b, 0x06]); // start group, field 99
    }
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", vec![0xff; 16]),
        ("truncated", valid[..valid.len() - 2].to_vec()),
        ("bad varint", [&[0x18u8][..], &[0xff; 11]].concat()),
        ("non-UTF-8 string", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("deep nesting", nested),
    ];
    let url = format!("http://{}", s.grpc);
    let channel = s.rt.block_on(tonic::transport::Endpoint::from_shared(url).unwrap().connect()).unwrap();
    for (what, bytes) in &bad {
        let mut g = tonic::client::Grpc::new(channel.clone());
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tessera.v1.Tessera/Search");
        let r = s.rt.block_on(async {
            g.ready().await.unwrap();
            g.unary(tonic::Request::new(bytes.clone()), path, RawCodec).await
        });
        let st = r.expect_err(what);
        assert_eq!(st.code(), Code::InvalidArgument, "{what}: {st:?}");
        assert!(st.message().contains("not a valid protobuf message"), "{what}: {}", st.message());
    }
    let m = get(s.http, "/metrics").body;
    let line = m
        .lines()
        .find(|l| l.contains(r#"protocol="grpc""#) && l.contains(r#"route="Search""#) && l.contains("InvalidArgument"))
        .unwrap_or_else(|| panic!("counted: {m}"));
    assert!(line.ends_with(&format!(" {}", bad.len())), "{line}");
}

/// Texts over gRPC with models named at start: a collection created bound to
/// one, Encode (by model name and by collection), text documents, a batch of
/// text queries, a text rerank and a reindex to another model — each answer
/// the encoder's own vectors and the naive f64 MaxSim of them.
#[test]
fn texts_models_and_reindex() {
    use tessera_encoder::testing::write_tiny_model;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_tiny_model(&a, 1, DIM).unwrap();
    write_tiny_model(&b, 2, DIM).unwrap();
    let models = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    let s = TestServer::start_with(&dir.path().join("db"), |c| c.models = models);
    let mut c = s.grpc_client();
    let rt = &s.rt;
    let enc_b = tessera::load_model(&b).unwrap();
    let enc_a = tessera::load_model(&a).unwrap();
    let vectors = |e: &tessera::Encoder, texts: &[&str], kind| -> Vec<Vec<Vec<f32>>> {
        e.encode(texts, kind)
            .unwrap()
            .into_iter()
            .map(|v| v.vectors.chunks(DIM).map(<[f32]>::to_vec).collect())
            .collect()
    };

    // Encode by model name: the model's vectors, as f16.
    let texts = ["the quick fox", "river bank money"];
    let r = rt
        .block_on(c.encode(pb::EncodeRequest {
            model: Some(pb::encode_request::Model::ModelName("b".into())),
            texts: texts.iter().map(|t| t.to_string()).collect(),
            is_query: true,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(
        r.vectors.iter().map(rows_of_tensor).collect::<Vec<_>>(),
        vectors(&enc_b, &texts, tessera::TextKindOf::Query).iter().map(|v| f16_round(v)).collect::<Vec<_>>()
    );
    let bad = pb::EncodeRequest {
        model: Some(pb::encode_request::Model::ModelName("z".into())),
        texts: vec!["x".into()],
        is_query: false,
    };
    assert_eq!(code(rt.block_on(c.encode(bad))).0, Code::NotFound);

    // A collection bound to model a, its dim the model's.
    let info = rt
        .block_on(c.create_collection(pb::CreateCollectionRequest {
            name: "t".into(),
            model: Some("a".into()),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!(info.dim as usize, DIM);
    let identity: serde_json::Value = serde_json::from_str(info.model_json.as_deref().unwrap()).unwrap();
    assert_eq!(identity["checksum"], json!(enc_a.identity().checksum));
    let docs =
        ["the quick brown fox", "a cat sat on the mat", "river bank and money bank", "late interaction search engine"];
    let documents = docs
        .iter()
        .enumerate()
        .map(|(i, t)| pb::Document { id: format!("d{i}"), tokens: None, text: Some(t.to_string()), payload_json: None })
        .collect();
    rt.block_on(c.upsert(pb::UpsertRequest { collection: "t".into(), documents, pool_factor: None })).unwrap();

    // A batch of text queries (exact) and a text rerank: the f64 MaxSim of the model's vectors.
    let check = |enc: &tessera::Encoder, c: &mut pb::tessera_client::TesseraClient<tonic::transport::Channel>| {
        let doc_vecs: Vec<Vec<Vec<f32>>> =
            vectors(enc, &docs, tessera::TextKindOf::Document).iter().map(|v| f16_round(v)).collect();
        let queries = ["quick fox", "money bank"];
        let q_vecs = vectors(enc, &queries, tessera::TextKindOf::Query);
        let search = pb::SearchRequest { collection: "t".into(), k: 4, exact: true, ..Default::default() };
        let out = rt
            .block_on(c.search_batch(pb::SearchBatchRequest {
                search: Some(search),
                queries: vec![],
                query_texts: queries.iter().map(|q| q.to_string()).collect(),
                texts: vec![],
            }))
            .unwrap()
            .into_inner();
        for (r, q) in out.results.iter().zip(&q_vecs) {
            let Some(pb::search_result::Result::Response(r)) = &r.result else { panic!("{r:?}") };
            let mut want: Vec<(f64, String)> =
                doc_vecs.iter().enumerate().map(|(i, d)| (maxsim(q, d), format!("d{i}"))).collect();
            want.sort_by(|x, y| y.0.total_cmp(&x.0));
            assert_eq!(
                r.hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
                want.iter().map(|w| w.1.clone()).collect::<Vec<_>>()
            );
            for (h, w) in r.hits.iter().zip(&want) {
                assert!((h.score as f64 - w.0).abs() < 1e-3, "{} vs {}", h.score, w.0);
            }
        }
        let rr = rt
            .block_on(c.rerank(pb::RerankRequest {
                collection: "t".into(),
                query: None,
                query_text: Some(queries[0].into()),
                ids: vec!["d2".into(), "d0".into()],
                ..Default::default()
            }))
            .unwrap()
            .into_inner();
        for h in rr.hits {
            let i: usize = h.id[1..].parse().unwrap();
            assert!((h.score as f64 - maxsim(&q_vecs[0], &doc_vecs[i])).abs() < 1e-3);
        }
    };
    check(&enc_a, &mut c);
    let both = pb::RerankRequest {
        collection: "t".into(),
        query: Some(tensor(&[vec![0.5; DIM]], false)),
        query_text: Some("fox".into()),
        ids: vec!["d0".into()],
        ..Default::default()
    };
    assert_eq!(code(rt.block_on(c.rerank(both))).0, Code::InvalidArgument);

    // Reindex to b over gRPC; then every answer is b's.
    let started =
        rt.block_on(c.reindex(pb::ReindexRequest { collection: "t".into(), model: "b".into() })).unwrap().into_inner();
    assert_eq!((started.model.as_str(), started.total), ("b", docs.len() as u64));
    let mut status = started;
    for _ in 0..600 {
        if status.state != "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        status = rt.block_on(c.get_reindex(pb::CollectionRequest { collection: "t".into() })).unwrap().into_inner();
    }
    assert_eq!(status.state, "done", "{status:?}");
    assert_eq!(status.documents, Some(docs.len() as u64));
    check(&enc_b, &mut c);
    let bad = pb::ReindexRequest { collection: "t".into(), model: "nope".into() };
    assert_eq!(code(rt.block_on(c.reindex(bad))).0, Code::NotFound);
}

/// Issue #29: the recall curve over gRPC is HTTP's: the same sample (ids)
/// and the same recall at each candidate count; a read is enough; limits and
/// bad values map to their codes.
#[test]
fn the_recall_curve_over_grpc_is_https() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let a = s.http;
    ok(a, "/v1/collections", &json!({"name": "r", "dim": DIM}));
    let mut rng = Rng::new(41);
    let docs: Vec<serde_json::Value> =
        (0..150).map(|i| json!({"id": format!("d{i}"), "tokens": rng.tokens(2 + i % 6, DIM)})).collect();
    ok(a, "/v1/collections/r/upsert", &json!({ "documents": docs }));
    ok(a, "/v1/collections/r/flush", &json!({}));
    let body = json!({"sample": 20, "k": 4, "candidates": [4, 8, 32], "query_tokens": 3, "seed": 5});
    let http = ok(a, "/v1/collections/r/recall", &body);
    let mut c = s.grpc_client();
    let req = pb::RecallRequest {
        collection: "r".into(),
        sample: 20,
        k: 4,
        candidates: vec![4, 8, 32],
        query_tokens: 3,
        seed: 5,
        ..Default::default()
    };
    let g = s.rt.block_on(c.recall_curve(req.clone())).unwrap().into_inner();
    assert_eq!(serde_json::to_value(&g.queries).unwrap(), http["queries"]);
    let recalls: Vec<f64> = g.points.iter().map(|p| p.recall).collect();
    let want: Vec<f64> = http["points"].as_array().unwrap().iter().map(|p| p["recall"].as_f64().unwrap()).collect();
    assert_eq!(recalls, want);
    assert_eq!(g.points.iter().map(|p| p.candidates).collect::<Vec<_>>(), [4, 8, 32]);
    let (status, msg) = code(s.rt.block_on(c.recall_curve(pb::RecallRequest { k: 5000, ..req.clone() })));
    assert_eq!(status, Code::OutOfRange, "{msg}");
    let (status, msg) = code(s.rt.block_on(c.recall_curve(pb::RecallRequest { collection: "nope".into(), ..req })));
    assert_eq!(status, Code::NotFound, "{msg}");
}
