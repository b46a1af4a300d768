//! The refusal table (`tests/refusals/search_options.json`) over HTTP and
//! gRPC: every row gets the same outcome through both, and a refused row the
//! same message, the one the table gives. python/tests/test_refusals.py runs
//! the same table through the embedded engine and `tessera.Client`.

mod common;

use common::*;
use serde_json::{Value, json};
use tessera_server::pb;

const DIM: usize = 4;

/// The table's options as the proto's fields (`filter` as `filter_json`).
fn grpc_request(options: &Value, tokens: Option<&[Vec<f32>]>) -> pb::SearchRequest {
    let o = options.as_object().unwrap();
    let int = |k: &str| o.get(k).map(|v| v.as_u64().unwrap() as u32);
    let map = |k: &str| -> std::collections::HashMap<String, f64> {
        o.get(k).map_or_else(Default::default, |m| {
            m.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap())).collect()
        })
    };
    let flag = |k: &str| o.get(k).is_some_and(|v| v.as_bool().unwrap());
    let string = |k: &str| o.get(k).map(|v| v.as_str().unwrap().to_string());
    for key in o.keys() {
        assert!(
            [
                "exact",
                "query_text",
                "text",
                "rank",
                "rank_weights",
                "rank_norm",
                "ids",
                "fusion",
                "weights",
                "rerank_only",
                "ef",
                "filter",
                "candidates",
                "rerank",
                "vector",
                "rrf_k0",
                "timeout_ms",
                "nprobe"
            ]
            .contains(&key.as_str()),
            "the test maps no gRPC field for {key}"
        );
    }
    pb::SearchRequest {
        collection: "c".into(),
        query: tokens.map(|t| pb::Tensor {
            dtype: pb::Dtype::F32.into(),
            shape: vec![t.len() as u64, DIM as u64],
            data: t.iter().flatten().flat_map(|x| x.to_le_bytes()).collect(),
        }),
        k: 3,
        candidates: int("candidates"),
        ef: int("ef"),
        nprobe: int("nprobe"),
        rerank: int("rerank"),
        timeout_ms: int("timeout_ms"),
        exact: flag("exact"),
        filter_json: o.get("filter").map(Value::to_string),
        text: string("text"),
        query_text: string("query_text"),
        ids: o
            .get("ids")
            .map_or_else(Vec::new, |v| v.as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect()),
        vector: flag("vector"),
        rerank_only: flag("rerank_only"),
        fusion: match o.get("fusion").and_then(Value::as_str) {
            None => pb::Fusion::Unspecified,
            Some("rrf") => pb::Fusion::Rrf,
            Some("weighted") => pb::Fusion::Weighted,
            Some(f) => panic!("fusion {f}"),
        }
        .into(),
        rrf_k0: o.get("rrf_k0").map(|v| v.as_f64().unwrap()),
        weights: map("weights"),
        rank: string("rank"),
        rank_norm: string("rank_norm"),
        rank_weights: map("rank_weights"),
        ..Default::default()
    }
}

#[test]
fn every_row_of_the_refusal_table_gets_one_answer_over_http_and_grpc() {
    let table: Value = serde_json::from_str(include_str!("../../../tests/refusals/search_options.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::default(dir.path());
    let mut g = s.grpc_client();
    ok(s.http, "/v1/collections", &json!({"name": "c", "dim": DIM}));
    let mut rng = Rng::new(5);
    let docs: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("d{i}"), "tokens": rng.tokens(3, DIM), "text": format!("apple pie {i}"), "payload": {"n": i % 3}}))
        .collect();
    ok(s.http, "/v1/collections/c/upsert", &json!({ "documents": docs }));
    ok(s.http, "/v1/collections/c/flush", &json!({}));
    let query = rng.tokens(2, DIM);
    let rows = table["rows"].as_array().unwrap();
    assert!(rows.len() >= 20);
    for row in rows {
        let (options, with_tokens) = (&row["options"], row["tokens"].as_bool().unwrap());
        let mut body = options.clone();
        body["k"] = 3.into();
        if with_tokens {
            body["tokens"] = json!(query);
        }
        let h = post(s.http, "/v1/collections/c/search", &body);
        let r = grpc_request(options, with_tokens.then_some(&query[..]));
        let gr = s.rt.block_on(g.search(r));
        match row["refused"].as_str() {
            None => {
                assert_eq!(h.status, 200, "{row}: HTTP {}", h.body);
                let hits = gr.unwrap_or_else(|e| panic!("{row}: gRPC {e:?}")).into_inner().hits;
                let answer = h.json();
                let http_ids: Vec<&str> =
                    answer["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect();
                let grpc_ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                assert_eq!(http_ids, grpc_ids, "{row}: the same hits");
            }
            Some(says) => {
                assert_eq!(h.status, 400, "{row}: HTTP {}", h.body);
                let message = h.json()["error"]["message"].as_str().unwrap().to_string();
                let status = gr.expect_err(&format!("{row}: gRPC answered"));
                assert_eq!(status.code(), tonic::Code::InvalidArgument, "{row}");
                assert_eq!(status.message(), message, "{row}: HTTP and gRPC say the same");
                assert!(message.contains(says), "{row}: {message}");
            }
        }
    }
}
